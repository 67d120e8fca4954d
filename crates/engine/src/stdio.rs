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
//!
//! The terminal (and whatever collects `bantam up`'s output, such as
//! journald) gets at most `terminal_rate` bytes a second of each
//! component's stream, with a burst of one second's worth: past it, lines
//! are dropped there, never in the log file, and one line a second says
//! how much was.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bantam_manifest::units::human_size;
use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Where guest output goes.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Directory for the per-component log files; `None` writes no files.
    pub log_dir: Option<PathBuf>,
    /// Whether guest output is also shown on the terminal, and at most how
    /// many bytes a second of each component's stdout, and of its stderr:
    /// past that, output is dropped there (never in the log files) and a
    /// line a second says how much. `None`: not shown.
    pub terminal_rate: Option<u64>,
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

impl Terminal {
    fn write(self, bytes: &[u8]) {
        let _ = match self {
            Terminal::Stdout => std::io::stdout().lock().write_all(bytes),
            Terminal::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    }
}

/// One guest output stream (stdout or stderr) of one component, shared by
/// all its instances.
#[derive(Debug)]
pub(crate) struct GuestOutput {
    terminal: Option<Arc<TerminalOutput>>,
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

/// Nanoseconds in the terminal budget's burst, and between notices.
const SECOND_NANOS: u64 = 1_000_000_000;

/// A component's stream on the terminal: tagged lines within a budget of
/// `rate` bytes a second, kept without a lock on the write path (GCRA: one
/// atomic holds the time at which the bucket is full again).
#[derive(Debug)]
struct TerminalOutput {
    stream: Terminal,
    /// `[id] `, before every line.
    prefix: String,
    /// Bytes a second; the bucket holds one second's worth.
    rate: u64,
    /// The origin of `full_at`.
    origin: Instant,
    /// Nanoseconds after `origin` at which the bucket is full again: each
    /// byte shown moves it 1/rate s later, to at most a second after now.
    full_at: AtomicU64,
    /// Bytes dropped and not yet reported.
    suppressed: AtomicU64,
    /// Whether a notice is already scheduled.
    notice_scheduled: AtomicBool,
    /// Where all the output is, for the notice.
    log: Option<PathBuf>,
}

impl TerminalOutput {
    fn new(id: &str, stream: Terminal, rate: u64, log: Option<PathBuf>) -> Self {
        Self {
            stream,
            prefix: format!("[{id}] "),
            rate: rate.max(1),
            origin: Instant::now(),
            full_at: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            notice_scheduled: AtomicBool::new(false),
            log,
        }
    }

    /// Show the whole lines of `lines` the budget has room for; report the
    /// rest as suppressed.
    fn write_lines(self: &Arc<Self>, lines: &[u8]) {
        let shown = &lines[..self.take(lines)];
        if shown.len() < lines.len() {
            self.suppress((lines.len() - shown.len()) as u64);
        }
        if shown.is_empty() {
            return;
        }
        let mut tagged = Vec::with_capacity(shown.len() + 16);
        for line in shown.split_inclusive(|b| *b == b'\n') {
            tagged.extend_from_slice(self.prefix.as_bytes());
            tagged.extend_from_slice(line);
        }
        if tagged.last() != Some(&b'\n') {
            tagged.push(b'\n');
        }
        self.stream.write(&tagged);
    }

    /// Take from the budget what `lines` may show: all of them, or as many
    /// whole lines as there is room for. Returns the length taken.
    fn take(&self, lines: &[u8]) -> usize {
        let now = self.origin.elapsed().as_nanos() as u64;
        let (rate, second) = (u128::from(self.rate), u128::from(SECOND_NANOS));
        let mut taken = 0;
        let _ = self.full_at.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |full_at| {
            let backlog = u128::from(full_at.saturating_sub(now).min(SECOND_NANOS));
            let room = usize::try_from((second - backlog) * rate / second).unwrap_or(usize::MAX);
            taken = if room >= lines.len() {
                lines.len()
            } else {
                lines[..room].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
            };
            (taken > 0).then(|| now.max(full_at) + (taken as u128 * second / rate) as u64)
        });
        taken
    }

    /// Count `bytes` as dropped; a notice follows within a second.
    fn suppress(self: &Arc<Self>, bytes: u64) {
        self.suppressed.fetch_add(bytes, Ordering::Relaxed);
        if self.notice_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let terminal = Arc::clone(self);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                tokio::time::sleep(Duration::from_nanos(SECOND_NANOS)).await;
                terminal.notify();
            })),
            Err(_) => terminal.notify(),
        }
    }

    /// Say how much was dropped since the last notice.
    fn notify(&self) {
        // Cleared first: what is dropped from here on schedules the next.
        self.notice_scheduled.store(false, Ordering::Release);
        let bytes = self.suppressed.swap(0, Ordering::AcqRel);
        if bytes == 0 {
            return;
        }
        let mut line = format!(
            "{}{} of output suppressed (over {}/s)",
            self.prefix,
            human_size(bytes),
            human_size(self.rate)
        );
        if let Some(log) = &self.log {
            line.push_str(&format!("; all of it is in {}", log.display()));
        }
        line.push('\n');
        self.stream.write(line.as_bytes());
    }
}

impl GuestOutput {
    /// The stdout and stderr sinks of component `id`.
    pub(crate) fn for_component(id: &str, config: &LogConfig) -> (Arc<Self>, Arc<Self>) {
        let sink = |suffix, stream| {
            let path = config.log_dir.as_ref().map(|dir| dir.join(format!("{id}_{suffix}.txt")));
            let file = path.clone().and_then(|path| open_log(path, config));
            let log = path.filter(|_| file.is_some());
            let terminal = config
                .terminal_rate
                .map(|rate| Arc::new(TerminalOutput::new(id, stream, rate, log)));
            Arc::new(Self { terminal, file })
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
        if let Some(terminal) = &self.terminal {
            terminal.write_lines(lines);
        }
    }
}

fn open_log(path: PathBuf, config: &LogConfig) -> Option<Mutex<LogFile>> {
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
