//! `bantam build`: run each component's `[component.<id>.build]` command.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use clap::{Args, Parser};

/// Flags of `bantam build`, as `spin build` has them.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    bantam build\n  \
    bantam build -c api          build only the component `api`\n  \
    bantam build --up --listen 127.0.0.1:8080")]
pub struct BuildArgs {
    /// The application to build: a spin.toml or a directory holding one.
    #[arg(short = 'f', long = "from", alias = "file", value_name = "APP")]
    pub from: Option<PathBuf>,
    /// Build only these components (repeatable).
    #[arg(short = 'c', long = "component-id", value_name = "ID")]
    pub component_ids: Vec<String>,
    /// Serve the app after a successful build; the arguments after
    /// `--up` go to `bantam up`.
    #[arg(long)]
    pub up: bool,
    /// Arguments for `bantam up` (with `--up`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub up_args: Vec<String>,
}

/// `bantam up`'s flags parsed on their own, for `build --up`.
#[derive(Parser)]
#[command(name = "bantam up")]
struct UpOnly {
    #[command(flatten)]
    args: super::up::UpArgs,
}

/// Run `bantam build`.
pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    if !args.up_args.is_empty() && !args.up {
        bail!("unexpected arguments {:?}: arguments for `bantam up` follow --up", args.up_args);
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let manifest_path = bantam_app::find_manifest(args.from.as_deref(), &cwd)?;
    build(&manifest_path, &args.component_ids)?;
    if args.up {
        let mut up = UpOnly::try_parse_from(
            std::iter::once("bantam up".to_string()).chain(args.up_args.iter().cloned()),
        )
        .map_err(|e| anyhow::anyhow!("{}", e.render()))?
        .args;
        up.from.get_or_insert(manifest_path);
        return super::up::run(up);
    }
    Ok(())
}

/// Run the build command of every component of the app at `manifest_path`
/// (or only of `only`, when not empty), stopping at the first failure.
/// Output is streamed, each line prefixed with the component id.
pub fn build(manifest_path: &Path, only: &[String]) -> anyhow::Result<()> {
    let manifest = bantam_manifest::load(manifest_path)?;
    if let Some(unknown) = only.iter().find(|id| !manifest.components.contains_key(*id)) {
        let ids: Vec<&str> = manifest.components.keys().map(String::as_str).collect();
        bail!("the app has no component `{unknown}`; its components are: {}", ids.join(", "));
    }
    let mut built = 0;
    for (id, component) in &manifest.components {
        if !only.is_empty() && !only.contains(id) {
            continue;
        }
        let Some(build) = &component.build else {
            eprintln!("Component `{id}` has no build command: skipped");
            continue;
        };
        let workdir = build_dir(&manifest.manifest_dir, build);
        for command in &build.command {
            check_toolchain(command)
                .with_context(|| format!("cannot build component `{id}` with `{command}`"))?;
            eprintln!("Building component `{id}` with `{command}`");
            let status = run_prefixed(command, &workdir, id)
                .with_context(|| format!("cannot run the build command of component `{id}`"))?;
            if !status.success() {
                let code = match status.code() {
                    Some(code) => format!("exit code {code}"),
                    None => status.to_string(),
                };
                bail!(
                    "the build of component `{id}` failed: `{command}` ended with {code} (in {})",
                    workdir.display()
                );
            }
        }
        built += 1;
    }
    eprintln!("Finished building {built} component{}", if built == 1 { "" } else { "s" });
    Ok(())
}

/// Where a component's build runs: its `workdir`, relative to the manifest.
pub fn build_dir(manifest_dir: &Path, build: &bantam_manifest::BuildConfig) -> PathBuf {
    match &build.workdir {
        Some(workdir) => manifest_dir.join(workdir),
        None => manifest_dir.to_path_buf(),
    }
}

/// Run `command` with `sh -c` in `workdir`, copying its stdout and stderr
/// to ours line by line behind `[id] `.
fn run_prefixed(
    command: &str,
    workdir: &Path,
    id: &str,
) -> std::io::Result<std::process::ExitStatus> {
    let mut child = Command::new("sh");
    child.arg("-c").arg(command).current_dir(workdir);
    if crate::ERROR_BACKTRACES_TURNED_OFF.load(Ordering::Relaxed) {
        child.env_remove("RUST_LIB_BACKTRACE");
    }
    let mut child =
        child.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let prefix = format!("[{id}] ");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::scope(|scope| {
        let out_prefix = prefix.clone();
        scope.spawn(move || copy_lines(stdout, &out_prefix, std::io::stdout()));
        copy_lines(stderr, &prefix, std::io::stderr());
    });
    child.wait()
}

fn copy_lines(from: impl Read, prefix: &str, mut to: impl Write) {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    // Byte lines: a tool printing invalid UTF-8 must not cut its output.
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let mut out = Vec::with_capacity(prefix.len() + line.len() + 1);
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&line);
        if !line.ends_with(b"\n") {
            out.push(b'\n');
        }
        let _ = to.write_all(&out);
        let _ = to.flush();
        line.clear();
    }
}

/// Refuse a build command whose toolchain is missing, saying how to
/// install it, before running it: a clear hint instead of a deep error.
fn check_toolchain(command: &str) -> anyhow::Result<()> {
    let Some(program) = command.split_whitespace().find(|word| !word.contains('=')) else {
        return Ok(());
    };
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    if program.contains('/') || on_path(program) {
        if program == "cargo"
            && command.contains("wasm32-wasip2")
            && !has_rust_target("wasm32-wasip2")
        {
            bail!(
                "the Rust target wasm32-wasip2 is not installed: run `rustup target add wasm32-wasip2`"
            );
        }
        return Ok(());
    }
    let hint = match program {
        "cargo" | "rustup" => {
            "install Rust from https://rustup.rs, then run `rustup target add wasm32-wasip2`"
        }
        "npm" | "node" | "npx" => {
            "install Node.js 20 or later (https://nodejs.org, or `apt install nodejs npm`)"
        }
        "componentize-py" => {
            "install it with `pip install componentize-py` (in the app's virtual environment: `pip install -r requirements.txt`)"
        }
        "python" | "python3" | "pip" | "pip3" => {
            "install Python 3.10 or later (https://python.org, or `apt install python3 python3-pip`)"
        }
        "tinygo" => "install TinyGo from https://tinygo.org/getting-started/install/",
        _ => "install it, or fix the command in the manifest",
    };
    bail!("`{program}` is not installed or not on PATH: {hint}")
}

/// Whether rustup has `target` installed (true when rustup itself is
/// missing: cargo may then be a distribution build that has it).
fn has_rust_target(target: &str) -> bool {
    match Command::new("rustup").args(["target", "list", "--installed"]).output() {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).lines().any(|line| line.trim() == target)
        }
        _ => true,
    }
}
