//! Guest standard output and error: to the terminal, tagged with the
//! component id, and appended to per-component log files.
//!
//! As with Spin, each component writes to `<log dir>/<id>_stdout.txt` and
//! `<id>_stderr.txt` (the log dir defaults to `.spin/logs` next to the
//! manifest). On the terminal each line is prefixed with `[id]` so the
//! output of several components stays readable. Lines from one instance are
//! kept whole; an unterminated last line is written when the instance ends.
//!
//! A log file that reaches its size limit is rotated: it becomes
//! `<name>.1` (replacing the one before) and a new file starts, so a guest
//! printing under a request storm holds at most twice the limit of disk
//! per stream, however long it runs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Where guest output goes.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Directory for the per-component log files; `None` writes no files.
    pub log_dir: Option<PathBuf>,
    /// Whether guest output is also shown on the terminal.
    pub terminal: bool,
    /// Truncate the log files at start-up instead of appending.
    pub truncate: bool,
    /// The size at which a log file is rotated to `<name>.1`.
    pub max_file_size: u64,
}

/// Which of the process's own streams a guest stream is echoed to.
#[derive(Debug, Clone, Copy)]
enum Terminal {
    Stdout,
    Stderr,
}

/// One guest output stream (stdout or stderr) of one component, shared by
/// all its instances.
#[derive(Debug)]
pub(crate) struct GuestOutput {
    prefix: String,
    terminal: Option<Terminal>,
    file: Option<Mutex<LogFile>>,
}

/// A per-component log file and how much it holds.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
}

impl LogFile {
    fn open(path: PathBuf, truncate: bool, max_size: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(!truncate)
            .write(true)
            .truncate(truncate)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self { path, file, size, max_size })
    }

    /// Append `bytes`, first rotating the file if they would take it past
    /// its limit.
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_size {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, &rotated)?;
            *self = Self::open(self.path.clone(), true, self.max_size)?;
        }
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }
}

impl GuestOutput {
    /// The stdout and stderr sinks of component `id`.
    pub(crate) fn for_component(id: &str, config: &LogConfig) -> (Arc<Self>, Arc<Self>) {
        let open = |suffix: &str| {
            let dir = config.log_dir.as_deref()?;
            open_log(dir, &format!("{id}_{suffix}.txt"), config)
        };
        let prefix = format!("[{id}] ");
        let sink = |suffix, terminal| {
            Arc::new(Self {
                prefix: prefix.clone(),
                terminal: config.terminal.then_some(terminal),
                file: open(suffix),
            })
        };
        (sink("stdout", Terminal::Stdout), sink("stderr", Terminal::Stderr))
    }

    fn write_lines(&self, lines: &[u8]) {
        if let Some(file) = self.file.as_ref() {
            // Logging must never fail a request; a full disk loses log lines.
            let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(error) = file.append(lines) {
                tracing::debug!("cannot write {}: {error}", file.path.display());
            }
        }
        let Some(terminal) = self.terminal else {
            return;
        };
        let mut tagged = Vec::with_capacity(lines.len() + 16);
        for line in lines.split_inclusive(|b| *b == b'\n') {
            tagged.extend_from_slice(self.prefix.as_bytes());
            tagged.extend_from_slice(line);
        }
        if tagged.last() != Some(&b'\n') {
            tagged.push(b'\n');
        }
        let _ = match terminal {
            Terminal::Stdout => std::io::stdout().lock().write_all(&tagged),
            Terminal::Stderr => std::io::stderr().lock().write_all(&tagged),
        };
    }
}

fn open_log(dir: &Path, name: &str, config: &LogConfig) -> Option<Mutex<LogFile>> {
    let path = dir.join(name);
    match LogFile::open(path.clone(), config.truncate, config.max_file_size) {
        Ok(file) => Some(Mutex::new(file)),
        Err(error) => {
            tracing::warn!("cannot open log file {}: {error}", path.display());
            None
        }
    }
}

/// The most bytes one instance may write to one stream (stdout or
/// stderr); the rest is dropped after one line saying so. A guest printing
/// in a loop must not fill the disk or hold the terminal.
pub(crate) const MAX_OUTPUT_PER_INSTANCE: usize = 1 << 20;

/// The WASI view of a [`GuestOutput`] for one instance: each stream it
/// opens gets its own [`LineWriter`] (so partial lines of concurrent
/// requests do not interleave), all drawing on the instance's budget.
#[derive(Clone)]
pub(crate) struct GuestOutputStream {
    output: Arc<GuestOutput>,
    budget: Arc<AtomicUsize>,
}

impl GuestOutputStream {
    /// A fresh instance's view of `output`, with a full budget.
    pub(crate) fn new(output: Arc<GuestOutput>) -> Self {
        Self { output, budget: Arc::new(AtomicUsize::new(MAX_OUTPUT_PER_INSTANCE)) }
    }
}

impl IsTerminal for GuestOutputStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutputStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter::new(self))
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter::new(self))
    }
}

/// Buffers an instance's output up to the end of a line.
struct LineWriter {
    output: Arc<GuestOutput>,
    budget: Arc<AtomicUsize>,
    pending: Vec<u8>,
}

/// The most bytes held back waiting for a newline before they are written
/// anyway, so a guest cannot grow host memory by never ending a line.
const MAX_PENDING: usize = 64 << 10;

impl LineWriter {
    fn new(stream: &GuestOutputStream) -> Self {
        Self {
            output: Arc::clone(&stream.output),
            budget: Arc::clone(&stream.budget),
            pending: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        // Take what the budget allows; the write that runs it out says so,
        // once, and later ones are dropped.
        let allowed = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(bytes.len()))
            })
            .unwrap_or(0);
        if allowed == 0 {
            return;
        }
        if bytes.len() > allowed {
            self.pending.extend_from_slice(&bytes[..allowed]);
            self.pending.extend_from_slice(
                format!(
                    "\n... output truncated: more than {MAX_OUTPUT_PER_INSTANCE} bytes from one request\n"
                )
                .as_bytes(),
            );
        } else {
            self.pending.extend_from_slice(bytes);
        }
        let complete = match self.pending.iter().rposition(|b| *b == b'\n') {
            Some(end) => end + 1,
            None if self.pending.len() > MAX_PENDING => self.pending.len(),
            None => return,
        };
        let rest = self.pending.split_off(complete);
        self.output.write_lines(&self.pending);
        self.pending = rest;
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.output.write_lines(&self.pending);
        }
    }
}

#[async_trait::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_PENDING)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
