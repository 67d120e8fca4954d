//! Compiling a component in a process of its own, under limits (the
//! reference's T29: a component built to take the compiler's time or
//! memory). The worker is the host's own executable run with
//! [`WORKER_COMMAND`]: it reads the component's bytes on stdin, compiles
//! them for an engine configured as the host's, and writes the compiled
//! artifact on stdout, which the host writes to the compile cache as it is
//! and loads from there (from memory without a cache). The worker limits
//! itself before it reads a byte: its address space and CPU time
//! (`setrlimit`), and its priority, ten steps below the host's, as
//! compiling in the host does. A worker that runs out of either is
//! stopped by the kernel, and the host says which limit it was; the host
//! itself never holds the compiler's memory.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use wasmtime::component::Component;

use crate::{EngineConfig, describe, lower_this_thread, wasmtime_config};

/// The first argument that makes the host's executable a compile worker
/// (see [`worker_main`]).
pub const WORKER_COMMAND: &str = "__compile-component";

/// Where and under which limits components are compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileWorker {
    /// The executable that compiles when run with [`WORKER_COMMAND`]:
    /// the host's own.
    pub program: PathBuf,
    /// The most address space a compile may take, in bytes.
    pub max_memory: u64,
    /// The most CPU time a compile may take, over all its threads;
    /// counted in whole seconds.
    pub max_cpu_time: Duration,
}

impl CompileWorker {
    /// Compile with the host's own executable, if it can be found.
    pub fn this_executable(max_memory: u64, max_cpu_time: Duration) -> Option<Self> {
        let program = std::env::current_exe().ok()?;
        Some(Self { program, max_memory, max_cpu_time })
    }

    /// `bytes` compiled by a worker for an engine configured as
    /// `wasmtime_config` does, with `max_stack_size` and with the component
    /// model's concurrency if `concurrent`: the artifact, to [`load`], or
    /// why not.
    pub(crate) fn compile(
        &self,
        max_stack_size: usize,
        concurrent: bool,
        bytes: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let mut child = Command::new(&self.program)
            .arg(WORKER_COMMAND)
            .arg(if concurrent { "concurrent" } else { "sync" })
            .arg(max_stack_size.to_string())
            .arg(self.max_memory.to_string())
            .arg(self.max_cpu_time.as_secs().max(1).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                tracing::warn!(
                    "cannot start a compile worker ({}): {error}; compiling in the host",
                    self.program.display()
                );
                Failure::NoWorker
            })?;
        // The pipes are filled and drained at once: a large component
        // fills stdin's pipe before the worker writes its artifact.
        let (mut stdin, mut stdout, mut stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let (artifact, message) = std::thread::scope(|scope| {
            scope.spawn(move || {
                // A worker that stopped early closes its end: its status
                // says why.
                let _ = stdin.write_all(bytes);
            });
            let message = scope.spawn(move || {
                let mut message = String::new();
                let _ = stderr.read_to_string(&mut message);
                message
            });
            let mut artifact = Vec::new();
            let _ = stdout.read_to_end(&mut artifact);
            (artifact, message.join().unwrap_or_default())
        });
        let status = child.wait().map_err(|error| Failure::Stopped(error.to_string()))?;
        if status.success() {
            return Ok(artifact);
        }
        let message = message.trim();
        if status.code() == Some(WORKER_INVALID) {
            return Err(Failure::Invalid(message.to_string()));
        }
        Err(Failure::Stopped(self.stopped(status, message)))
    }

    /// Why a worker stopped without an answer: a limit it reached.
    fn stopped(&self, status: std::process::ExitStatus, message: &str) -> String {
        use std::os::unix::process::ExitStatusExt;
        let limits = format!(
            "compiling may take at most {} of memory and {} of CPU time \
             (--max-compile-memory, --max-compile-time)",
            bantam_manifest::units::format_size(self.max_memory),
            bantam_manifest::units::format_duration(self.max_cpu_time),
        );
        // The worker's panic or abort message, on its last line.
        let last_line: String =
            message.lines().last().unwrap_or_default().chars().take(200).collect();
        match status.signal() {
            Some(signal) if signal == rustix::process::Signal::XCPU.as_raw() => {
                format!("the compiler ran out of CPU time; {limits}")
            }
            _ if last_line.is_empty() => format!("the compiler stopped ({status}); {limits}"),
            _ => format!("the compiler stopped ({last_line}); {limits}"),
        }
    }
}

/// Why a worker did not compile a component.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No worker could be started: the host compiles instead.
    NoWorker,
    /// The component is not valid: wasmtime's explanation.
    Invalid(String),
    /// The worker stopped before it was done: which limit, most likely.
    Stopped(String),
}

/// A compile stopped at one of its limits, as the engine's error carries
/// it (see [`crate::EngineError::CompileStopped`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Stopped(pub String);

/// Load a compiled artifact: what a worker wrote, or what
/// `Engine::precompile_component` gave in the host.
#[expect(unsafe_code, reason = "deserializing precompiled code we compiled ourselves")]
pub(crate) fn load(engine: &wasmtime::Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: the artifact is what `Engine::precompile_component` wrote,
    // in this process or in a worker of this same executable, for an
    // engine configured as `engine` is; wasmtime checks the header,
    // version and configuration it was compiled for against `engine`'s
    // before using it.
    unsafe { Component::deserialize(engine, artifact) }
}

/// The worker's exit code for a component that is not valid (wasmtime's
/// explanation on stderr); any other failure is a limit or a crash.
const WORKER_INVALID: i32 = 3;

/// The compile worker's `main`: `<host> __compile-component
/// <concurrent|sync> <max stack size> <max memory> <max CPU seconds>`,
/// the component on stdin, the artifact on stdout.
pub fn worker_main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [engine, stack, memory, cpu] = args.as_slice() else {
        eprintln!("usage: {WORKER_COMMAND} <concurrent|sync> <stack> <memory> <cpu seconds>");
        return ExitCode::from(2);
    };
    let (Ok(max_stack_size), Ok(max_memory), Ok(max_cpu)) =
        (stack.parse::<usize>(), memory.parse::<u64>(), cpu.parse::<u64>())
    else {
        eprintln!("{WORKER_COMMAND}: the limits must be numbers");
        return ExitCode::from(2);
    };
    // A panic (a thread the limit did not leave room for, ...) is one line
    // for the host's message, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        eprintln!("{}", message.replace('\n', " "));
    }));
    if let Err(error) = limit_this_process(max_memory, max_cpu) {
        eprintln!("{WORKER_COMMAND}: cannot limit the compile: {error}");
        return ExitCode::from(2);
    }
    lower_this_thread();
    let mut bytes = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("{WORKER_COMMAND}: reading the component: {error}");
        return ExitCode::from(2);
    }
    let config = EngineConfig { max_stack_size, ..EngineConfig::default() };
    // No pooling: the artifact does not depend on how instances are
    // allocated, and the pool's reservation would not fit the limit.
    let engine =
        match wasmtime::Engine::new(&wasmtime_config(&config, false, engine == "concurrent")) {
            Ok(engine) => engine,
            Err(error) => {
                eprintln!("{WORKER_COMMAND}: {}", describe(&error));
                return ExitCode::from(2);
            }
        };
    match engine.precompile_component(&bytes) {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(2),
        },
        Err(error) => {
            eprintln!("{}", describe(&error));
            ExitCode::from(WORKER_INVALID as u8)
        }
    }
}

/// Hold this process to `max_memory` bytes of address space and
/// `max_cpu_seconds` of CPU time: past the first, allocations fail; past
/// the second, the kernel stops it with SIGXCPU.
fn limit_this_process(max_memory: u64, max_cpu_seconds: u64) -> rustix::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    setrlimit(Resource::As, Rlimit { current: Some(max_memory), maximum: Some(max_memory) })?;
    let cpu = Rlimit { current: Some(max_cpu_seconds), maximum: Some(max_cpu_seconds + 1) };
    setrlimit(Resource::Cpu, cpu)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn a_stopped_worker_is_explained_by_its_limits() {
        let worker = CompileWorker {
            program: PathBuf::from("bantam"),
            max_memory: 1 << 30,
            max_cpu_time: Duration::from_secs(90),
        };
        let limits = "compiling may take at most 1GiB of memory and 90s of CPU time \
                      (--max-compile-memory, --max-compile-time)";
        // Killed by the kernel at its CPU time limit.
        let xcpu = std::process::ExitStatus::from_raw(rustix::process::Signal::XCPU.as_raw());
        assert_eq!(worker.stopped(xcpu, ""), format!("the compiler ran out of CPU time; {limits}"));
        // Out of memory: its last words.
        let abort = std::process::ExitStatus::from_raw(rustix::process::Signal::ABORT.as_raw());
        assert_eq!(
            worker.stopped(abort, "memory allocation of 4096 bytes failed"),
            format!("the compiler stopped (memory allocation of 4096 bytes failed); {limits}")
        );
    }
}
