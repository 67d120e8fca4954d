//! `bantam`: run Spin applications on WebAssembly, fast.
//!
//! This crate is the command line only: it parses flags, wires the
//! library crates together and is the one place that prints to the
//! terminal. Each subcommand lives in its own module under `commands`.

// Flag docs are clap's help text, whose defaults read `[60s]`; rustdoc
// would take each for a link.
#![allow(rustdoc::broken_intra_doc_links)]

mod commands;
mod telemetry;
mod templates;
mod terminal;

use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

/// mimalloc's per-thread free lists suit the request path, which allocates
/// and frees many small objects (store, resource table, headers, body
/// chunks) on every request: measured in `BENCHMARKS.md`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Give the operating system back the memory mimalloc holds freed: it
/// returns freed memory only a second after the free, and only when it
/// allocates again past that, so the tens of MiB a compile frees at once
/// stayed resident for good (the engine calls this after each compile).
pub(crate) fn release_freed_memory() {
    // SAFETY: `mi_collect` only frees memory mimalloc itself holds unused;
    // it may be called from any thread at any time.
    #[expect(unsafe_code, reason = "mimalloc's C interface")]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

/// Whether `main` set `RUST_LIB_BACKTRACE` itself: build commands then run
/// without it, in the environment the user gave.
pub(crate) static ERROR_BACKTRACES_TURNED_OFF: AtomicBool = AtomicBool::new(false);

/// Errors are ordinary values on the request path (wasmtime makes one each
/// time it drops an instance's store), and with `RUST_BACKTRACE=1` in the
/// environment, common in development shells and images, each captured a
/// stack backtrace: 7-9% of the server's CPU under load (BENCHMARKS.md).
/// `RUST_LIB_BACKTRACE` governs error backtraces apart from panics', so
/// unless the user set it, error backtraces are off and panics keep theirs.
#[allow(unsafe_code)] // `set_var` is sound while no other thread runs.
fn turn_off_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
        ERROR_BACKTRACES_TURNED_OFF.store(true, Ordering::Relaxed);
    }
}

/// Bantam runs Spin applications: serverless WebAssembly components, a fresh
/// sandboxed instance for every request.
#[derive(Debug, Parser)]
#[command(
    name = "bantam",
    version,
    about,
    long_about = None,
    after_help = "Start here:\n  \
        bantam new -t http-rust hello && cd hello && bantam build --up\n\n\
        Exit codes: 0 on success, 1 on an error (the message says which), 2 on a bad command line."
)]
struct Cli {
    /// How host log lines are written to stderr: `text` for people, `json`
    /// (one object a line) for log collectors.
    #[arg(
        long,
        global = true,
        env = "BANTAM_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The format of host log lines.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Compact lines, coloured on a terminal.
    Text,
    /// One JSON object per line: time, level, message and fields.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve an application (spin.toml) over HTTP.
    #[command(alias = "u")]
    Up(Box<commands::up::UpArgs>),
    /// Build an application's components with their build commands.
    #[command(alias = "b")]
    Build(Box<commands::build::BuildArgs>),
    /// Serve an application and rebuild and reload it as its files change.
    #[command(alias = "w")]
    Watch(Box<commands::watch::WatchArgs>),
    /// Create a new application from a template.
    #[command(alias = "n")]
    New(commands::new::NewArgs),
    /// Add a component from a template to an existing application.
    #[command(alias = "a")]
    Add(commands::new::AddArgs),
    /// Work with the built-in templates.
    #[command(alias = "template", subcommand)]
    Templates(commands::new::TemplatesCommand),
    /// Host many apps on one server, deployed and managed through its
    /// admin API.
    Serve(Box<commands::serve::ServeArgs>),
    /// Deploy an application to a `bantam serve` host (or update it).
    Deploy(Box<commands::deploy::DeployArgs>),
    /// List, inspect and delete the apps of a `bantam serve` host.
    #[command(subcommand)]
    Apps(commands::deploy::AppsCommand),
    /// Push and pull apps to and from OCI registries.
    #[command(alias = "oci", subcommand)]
    Registry(commands::registry::RegistryCommand),
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
        bantam completions bash > ~/.local/share/bash-completion/completions/bantam\n  \
        bantam completions zsh > ~/.zfunc/_bantam\n  \
        bantam completions fish > ~/.config/fish/completions/bantam.fish")]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

fn main() -> std::process::ExitCode {
    // The engine runs this executable to compile a component in a process
    // of its own; no flags, no output but the artifact.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == bantam_engine::compile::WORKER_COMMAND) {
        return bantam_engine::compile::worker_main();
    }
    turn_off_error_backtraces();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let traces = telemetry::init_from_env();
    let result = match cli.command {
        Command::Up(args) => commands::up::run(*args),
        Command::Build(args) => commands::build::run(*args),
        Command::Watch(args) => commands::watch::run(*args),
        Command::New(args) => commands::new::new(args),
        Command::Add(args) => commands::new::add(args),
        Command::Templates(command) => commands::new::templates(command),
        Command::Registry(command) => commands::registry::run(command),
        Command::Serve(args) => commands::serve::run(*args),
        Command::Deploy(args) => commands::deploy::deploy(*args),
        Command::Apps(command) => commands::deploy::apps(command),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "bantam", &mut std::io::stdout());
            Ok(())
        }
    };
    if let Some(traces) = traces
        && let Err(error) = traces.shutdown()
    {
        tracing::warn!("the last traces were not sent: {error}");
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            crate::terminal::print_error(format_args!("{error:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Host logs go to stderr; `RUST_LOG` overrides the default level.
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,bantam=info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => subscriber.with_ansi(terminal::color()).compact().init(),
        LogFormat::Json => subscriber.with_ansi(false).json().flatten_event(true).init(),
    }
}
