//! `bantam registry push|pull|login`: apps as OCI artifacts in Spin's
//! layout, so that Spin and Bantam run each other's pushes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use bantam_registry::{Cache, ClientOptions, PulledApp, TransferEvent};
use clap::{Args, Subcommand};

/// `bantam registry ...`.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Push an app to a registry.
    #[command(after_help = "Examples:\n  \
        bantam registry push ghcr.io/me/hello:v1\n  \
        bantam registry push --build -k localhost:5000/hello:latest")]
    Push(PushArgs),
    /// Pull an app from a registry into the local cache.
    #[command(after_help = "Examples:\n  \
        bantam registry pull ghcr.io/me/hello:v1\n  \
        bantam up --from ghcr.io/me/hello:v1      pulls and serves in one step")]
    Pull(PullArgs),
    /// Store credentials for a registry.
    #[command(after_help = "Examples:\n  \
        bantam registry login ghcr.io -u me --password-stdin < token.txt")]
    Login(LoginArgs),
}

/// Flags every registry command takes.
#[derive(Debug, Args, Clone)]
pub struct RegistryOptions {
    /// Talk plain HTTP to the registry (for a local registry).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Where pulled artifacts are cached (default: $BANTAM_REGISTRY_CACHE_DIR,
    /// else the user cache directory).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl RegistryOptions {
    fn client(&self) -> ClientOptions {
        ClientOptions { insecure: self.insecure }
    }

    /// The pull cache these options name.
    pub fn cache(&self) -> anyhow::Result<Cache> {
        let from_env = std::env::var_os("BANTAM_REGISTRY_CACHE_DIR").map(PathBuf::from);
        match self.cache_dir.clone().or(from_env) {
            Some(dir) => Ok(Cache::new(dir)),
            None => Cache::user_default().context("no cache directory: pass --cache-dir"),
        }
    }
}

/// Flags of `bantam registry push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Where to push: `registry/repository[:tag]`.
    pub reference: String,
    /// The app to push: a spin.toml or a directory holding one.
    #[arg(short = 'f', long = "from", alias = "file", value_name = "APP")]
    pub from: Option<PathBuf>,
    /// Build the app first.
    #[arg(long)]
    pub build: bool,
    /// Add an OCI annotation (repeatable); it overrides an inferred one.
    #[arg(long = "annotation", value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    pub annotations: Vec<(String, String)>,
    #[command(flatten)]
    pub options: RegistryOptions,
}

/// Flags of `bantam registry pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// What to pull: `registry/repository[:tag|@digest]`.
    pub reference: String,
    #[command(flatten)]
    pub options: RegistryOptions,
}

/// Flags of `bantam registry login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry server, e.g. `ghcr.io`.
    pub server: String,
    /// The user name.
    #[arg(short = 'u', long)]
    pub username: String,
    /// The password (prefer --password-stdin: arguments show in `ps`).
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Talk plain HTTP to the registry.
    #[arg(short = 'k', long)]
    pub insecure: bool,
}

/// Run `bantam registry ...`.
pub fn run(command: RegistryCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match command {
        RegistryCommand::Push(args) => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            let manifest_path = bantam_app::find_manifest(args.from.as_deref(), &cwd)?;
            if args.build {
                super::build::build(&manifest_path, &[])?;
            }
            let app = bantam_app::load(&manifest_path)?;
            let annotations: BTreeMap<String, String> = args.annotations.into_iter().collect();
            let bar = TransferBar::new("Pushing");
            let digest = runtime.block_on(bantam_registry::push(
                &app,
                &args.reference,
                &args.options.client(),
                annotations,
                &|event| bar.update(event),
            ))?;
            bar.finish();
            println!("Pushed with digest {digest}");
            Ok(())
        }
        RegistryCommand::Pull(args) => {
            let pulled = pull(&runtime, &args.reference, &args.options)?;
            println!("Pulled {} with digest {}", args.reference, pulled.digest);
            Ok(())
        }
        RegistryCommand::Login(args) => {
            let password = match (args.password, args.password_stdin) {
                (Some(password), _) => password,
                (None, true) => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("cannot read the password")?;
                    text.trim_end_matches(['\r', '\n']).to_owned()
                }
                (None, false) => bail!("give the password with --password-stdin (or -p)"),
            };
            let options = ClientOptions { insecure: args.insecure };
            let file = runtime.block_on(bantam_registry::credentials::login(
                &args.server,
                &args.username,
                &password,
                &options,
            ))?;
            println!("Logged in to {} (credentials in {})", args.server, file.display());
            Ok(())
        }
    }
}

/// Pull `reference` with a progress bar.
pub fn pull(
    runtime: &tokio::runtime::Runtime,
    reference: &str,
    options: &RegistryOptions,
) -> anyhow::Result<PulledApp> {
    let cache = options.cache()?;
    let bar = TransferBar::new("Pulling");
    let pulled = runtime.block_on(bantam_registry::pull(
        reference,
        &cache,
        &options.client(),
        &|event| bar.update(event),
    ))?;
    bar.finish();
    Ok(pulled)
}

/// A byte-counting progress bar over the layers of a push or pull: drawn
/// on a terminal, a one-line summary otherwise.
struct TransferBar {
    verb: &'static str,
    bar: indicatif::ProgressBar,
    cached: std::sync::atomic::AtomicUsize,
}

impl TransferBar {
    fn new(verb: &'static str) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(None, crate::terminal::draw_target());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(verb);
        Self { verb, bar, cached: 0.into() }
    }

    fn update(&self, event: TransferEvent) {
        match event {
            TransferEvent::Start { count, bytes } => {
                self.bar.set_length(bytes);
                self.bar.set_message(format!("{} {count} layers", self.verb));
                if self.bar.is_hidden() {
                    eprintln!("{} {count} layers ({})", self.verb, indicatif::HumanBytes(bytes));
                }
            }
            TransferEvent::Layer { bytes, cached } => {
                if cached {
                    self.cached.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                self.bar.inc(bytes);
            }
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
        let cached = self.cached.load(std::sync::atomic::Ordering::Relaxed);
        match cached {
            0 => {}
            1 => eprintln!("1 layer was already in the cache"),
            n => eprintln!("{n} layers were already in the cache"),
        }
    }
}
