//! `bantam`: run Spin applications on WebAssembly, fast.
//!
//! This crate is the command line only: it parses flags, wires the
//! library crates together and is the one place that prints to the
//! terminal. Each subcommand lives in its own module under `commands`.

mod commands;

use clap::{Parser, Subcommand};

/// Bantam runs Spin applications: serverless WebAssembly components, a fresh
/// sandboxed instance for every request.
#[derive(Debug, Parser)]
#[command(name = "bantam", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve an application (spin.toml) over HTTP.
    #[command(alias = "u")]
    Up(Box<commands::up::UpArgs>),
    /// Build an application's components with their build commands.
    #[command(alias = "b")]
    Build(commands::build::BuildArgs),
}

fn main() -> std::process::ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => commands::up::run(*args),
        Command::Build(args) => commands::build::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Host logs go to stderr; `RUST_LOG` overrides the default level.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,bantam=info"));
    let color = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(std::io::stderr)
        .with_target(false)
        .compact()
        .init();
}
