//! A real headless browser driven as a user would drive it: Debian's
//! `chromium-headless-shell`, spoken to over the Chrome DevTools Protocol
//! (JSON-RPC on a websocket). Clicks and typing are input events at the
//! element's place on the page, not scripts setting values.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The viewport every page is shown in, and so the size of screenshots.
pub const VIEWPORT: (u32, u32) = (1280, 900);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, Value>>>>>;

/// A running headless Chromium with one page open; killed on drop, with
/// the processes it started.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    outgoing: mpsc::UnboundedSender<String>,
    pending: Pending,
    next_id: AtomicU64,
    dialogs: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// Start the browser on a blank page and connect to that page.
    pub async fn start() -> Self {
        let binary = crate::services::require("chromium-headless-shell", "chromium-headless-shell");
        let profile = tempfile::tempdir().unwrap();
        // In a process group of its own: the browser starts a zygote, a
        // renderer, a GPU and a network process, which outlive it if only
        // it is killed.
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(binary)
            .process_group(0)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--disable-background-networking", "--no-first-run", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chromium-headless-shell");
        // The browser says where it listens on stderr; the rest of its
        // stderr is drained so that it never blocks on a full pipe.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (found, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = String::new();
            let mut found = Some(found);
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(found) = found.take() {
                        let _ = found.send(Ok(url.trim().to_string()));
                    }
                } else if found.is_some() {
                    seen.push_str(&line);
                    seen.push('\n');
                }
            }
            if let Some(found) = found {
                let _ = found.send(Err(seen));
            }
        });
        let browser_url = tokio::task::block_in_place(|| {
            listening.recv_timeout(Duration::from_secs(60)).expect("the browser said nothing")
        })
        .unwrap_or_else(|stderr| panic!("the browser did not start:\n{stderr}"));
        // ws://127.0.0.1:<port>/devtools/browser/<id>: the page's own
        // socket is listed at http://127.0.0.1:<port>/json/list.
        let address = browser_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap_or_else(|| panic!("no address in {browser_url}"));
        let targets = crate::support::get_json(&format!("http://{address}/json/list")).await;
        let page_url = targets
            .as_array()
            .and_then(|targets| targets.iter().find(|t| t["type"] == "page"))
            .and_then(|page| page["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page among the browser's targets: {targets}"))
            .to_string();
        let (socket, _) = tokio_tungstenite::connect_async(page_url.as_str()).await.unwrap();
        let (mut sink, mut stream) = socket.split();

        let (outgoing, mut to_send) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = to_send.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let dialogs: Arc<Mutex<Vec<String>>> = Arc::default();
        let (replies, recorded, answer) = (pending.clone(), dialogs.clone(), outgoing.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Ok(text) = message.to_text() else { continue };
                let Ok(message) = serde_json::from_str::<Value>(text) else { continue };
                if let Some(id) = message["id"].as_u64() {
                    let reply = match message.get("error") {
                        Some(error) => Err(error.clone()),
                        None => Ok(message["result"].clone()),
                    };
                    if let Some(waiting) = replies.lock().unwrap().remove(&id) {
                        let _ = waiting.send(reply);
                    }
                } else if message["method"] == "Page.javascriptDialogOpening" {
                    // A `confirm()` blocks the page until answered: the
                    // user reads it and clicks OK.
                    let text = message["params"]["message"].as_str().unwrap_or_default();
                    recorded.lock().unwrap().push(text.to_string());
                    let accept = json!({
                        "id": 0,
                        "method": "Page.handleJavaScriptDialog",
                        "params": { "accept": true }
                    });
                    let _ = answer.send(accept.to_string());
                }
            }
        });
        let browser = Self {
            child,
            _profile: profile,
            outgoing,
            pending,
            next_id: AtomicU64::new(1),
            dialogs,
        };
        browser.call("Page.enable", json!({})).await;
        let (width, height) = VIEWPORT;
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
        browser
    }

    /// Call a DevTools method on the page; its result.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, replied) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, reply);
        let request = json!({ "id": id, "method": method, "params": params });
        self.outgoing.send(request.to_string()).expect("the browser connection is open");
        let reply = tokio::time::timeout(Duration::from_secs(60), replied)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer from the browser"))
            .unwrap_or_else(|_| panic!("{method}: the browser connection closed"));
        reply.unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// Open `url` and wait until it has loaded.
    pub async fn open(&self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for("document.readyState === 'complete'", &format!("{url} to load")).await;
    }

    /// The value of a JavaScript expression on the page.
    pub async fn eval(&self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("`{expression}` threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Wait until `expression` is true on the page; `what` says what is
    /// awaited, with the page's text, if it never is.
    pub async fn wait_for(&self, expression: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.eval(&format!("!!({expression})")).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                panic!("waited in vain for {what}; the page shows:\n{}", self.text().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of the page.
    pub async fn text(&self) -> String {
        self.eval("document.body.innerText").await.as_str().unwrap_or_default().to_string()
    }

    /// Click the middle of the element `selector` picks, with the mouse.
    pub async fn click(&self, selector: &str) {
        let selector_json = serde_json::to_string(selector).unwrap();
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({selector_json}); if (!e) return null; \
                 e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        let (Some(x), Some(y)) = (at[0].as_f64(), at[1].as_f64()) else {
            panic!("nothing to click at `{selector}`; the page shows:\n{}", self.text().await);
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            let params = json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 });
            self.call("Input.dispatchMouseEvent", params).await;
        }
    }

    /// Click the field `selector` picks and type `text` into it.
    pub async fn type_into(&self, selector: &str, text: &str) {
        self.click(selector).await;
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    /// The messages of the dialogs (`confirm()`, ...) the page opened, each
    /// answered OK.
    pub fn dialogs(&self) -> Vec<String> {
        self.dialogs.lock().unwrap().clone()
    }

    /// A PNG of the viewport, checked to be one of [`VIEWPORT`]'s size
    /// with something drawn on it.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("the screenshot is base64");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        // The IHDR chunk: width and height.
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((width, height), VIEWPORT);
        // A blank page compresses to almost nothing; a drawn table does not.
        assert!(png.len() > 20_000, "the screenshot looks blank ({} bytes)", png.len());
        png
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group's id is the browser's own process id.
        let _ = crate::support::signal("KILL", &format!("-{}", self.child.id()));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
