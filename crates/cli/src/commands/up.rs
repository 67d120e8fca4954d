//! `bantam up`: load an app, prepare its components, serve HTTP.
//!
//! Flags follow `spin up` wherever Spin has the same thing, so Spin users'
//! habits carry over: `-f/--from`, `--listen`, `--build`, `-L/--log-dir`,
//! `--truncate-logs`, `-q/--quiet`, `-e/--env`, `--disable-cache`,
//! `--disable-pooling`, `--runtime-config-file`, `--variable`, `--sqlite`,
//! `--key-value`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bantam_capabilities::runtime_config::Limits;
use bantam_capabilities::{AppCapabilities, CapabilityConfig, RuntimeConfig, VariableSources};
use bantam_engine::{AppLimits, CompileWorker, Engine, EngineConfig, LogConfig, size_limit};
use bantam_manifest::units::{parse_duration, parse_size};
use bantam_trigger_http::HttpTrigger;
use bantam_trigger_http::metrics::AppMetrics;
use bantam_trigger_http::server::{self, Shutdown};
use clap::Args;
use clap::builder::TypedValueParser;

/// Flags of `bantam up`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  \
    bantam up                                   ./spin.toml on 127.0.0.1:3000\n  \
    bantam up -f apps/shop --listen 0.0.0.0:8080\n  \
    bantam up --from ghcr.io/me/shop:v1         pull and serve\n  \
    bantam up --variable api_key=@key.txt --max-memory 64MiB\n\n\
    Exit codes: 0 after a clean shutdown, 1 on an error, 2 on a bad command line.")]
pub struct UpArgs {
    /// The application to run: a spin.toml, a directory holding one, a
    /// bare `.wasm` component (served on every route), or a registry
    /// reference (`ghcr.io/me/app:v1`). Without it, spin.toml is looked
    /// for here and in parent directories.
    #[arg(short = 'f', long = "from", alias = "file", value_name = "APP")]
    pub from: Option<PathBuf>,
    /// Run this registry reference (when `--from` could be read as a path).
    #[arg(long, value_name = "REFERENCE", conflicts_with = "from")]
    pub from_registry: Option<String>,
    /// Talk plain HTTP to the registry of `--from` (a local registry).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// The address to listen on. Port 0 picks a free port.
    #[arg(
        long,
        env = "SPIN_HTTP_LISTEN_ADDR",
        default_value = "127.0.0.1:3000",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// Run the components' build commands first.
    #[arg(long, env = "SPIN_ALWAYS_BUILD")]
    pub build: bool,
    /// Where component stdout/stderr logs go (default `.spin/logs` next to
    /// the manifest); an empty value writes no log files.
    // Clap's default path parser refuses an empty value; the OS-string
    // parser lets `-L ""` through to mean "no log files", as in Spin.
    #[arg(
        short = 'L',
        long = "log-dir",
        env = "SPIN_LOG_DIR",
        value_name = "DIR",
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from)
    )]
    pub log_dir: Option<PathBuf>,
    /// Truncate the log files at start-up instead of appending.
    #[arg(long)]
    pub truncate_logs: bool,
    /// Do not show component output on the terminal.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The most output of each component's stdout, and of its stderr,
    /// shown on the terminal per second (a burst of one second's worth);
    /// past it, lines are dropped there with a line a second saying how
    /// much, while the log files keep everything.
    #[arg(long, default_value = "1MiB", value_parser = parse_rate, value_name = "SIZE")]
    pub max_terminal_output_rate: u64,
    /// Pass an environment variable (KEY=VALUE) to all components.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    pub env: Vec<(String, String)>,
    /// The runtime config file (Spin's format): where key-value stores
    /// and SQLite databases other than `default` live.
    #[arg(long, env = "RUNTIME_CONFIG_FILE", value_name = "FILE")]
    pub runtime_config_file: Option<PathBuf>,
    /// Set an application variable: `name=value`, `name=@file` (the
    /// file's contents), or `@vars.json` / `@vars.toml` (many at once).
    /// Overrides the environment (`SPIN_VARIABLE_<NAME>`) and defaults.
    #[arg(long = "variable", value_name = "VARIABLE")]
    pub variables: Vec<String>,
    /// Run a SQL statement against the default SQLite database before
    /// serving; `@file.sql` runs a file. Repeatable.
    #[arg(long = "sqlite", value_name = "STATEMENT")]
    pub sqlite: Vec<String>,
    /// Set a key in the default key-value store before serving (KEY=VALUE).
    /// Repeatable.
    #[arg(long = "key-value", value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    pub key_values: Vec<(String, String)>,
    /// How the host serves: threads, compile cache, limits.
    #[command(flatten)]
    pub serving: ServingArgs,
}

/// Flags of the serving host, shared by `bantam up` and `bantam serve`.
#[derive(Debug, Clone, Args)]
pub struct ServingArgs {
    /// The size at which a component's log file is rotated to
    /// `<name>.1`, so guest output holds at most twice it on disk per
    /// stream.
    #[arg(long, default_value = "100MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_log_file_size: u64,
    /// Do not use the compile cache.
    #[arg(long)]
    pub disable_cache: bool,
    /// Where compiled components are cached (default: the user cache
    /// directory).
    #[arg(long, env = "BANTAM_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not use the pooling instance allocator.
    #[arg(long)]
    pub disable_pooling: bool,
    /// The most memory (address space) compiling one component may take;
    /// each compile runs in a process of its own, stopped past it.
    #[arg(long, default_value = "8GiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_compile_memory: u64,
    /// The most CPU time compiling one component may take, over all its
    /// threads, in whole seconds; the compile is stopped past it.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub max_compile_time: Duration,
    /// How long in-flight requests may run after a shutdown signal.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Duration,
    /// Threads serving requests: each accepts connections and runs their
    /// instances on its own runtime [one per CPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Limits on each request and instance; each may also be set in the
    /// runtime config's `[limits]` table (a flag wins).
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The limit flags of `bantam up` (defaults in brackets).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// The limits `bantam serve` also takes per app.
    #[command(flatten)]
    pub app: AppLimitArgs,
    /// WebAssembly stack one instance may use; deeper recursion traps:
    /// 500 [1MiB].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_stack_size: Option<u64>,
}

/// The limit flags an app may have its own of: `bantam up`'s, and
/// `bantam deploy`'s for one app of `bantam serve` (defaults in
/// brackets: `bantam up`'s, and those of a host that sets none).
#[derive(Debug, Clone, Args)]
pub struct AppLimitArgs {
    /// How long one request may take before it is answered 504 and its
    /// instance stopped, even a guest in a busy loop; 0 for no limit [60s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Option<Duration>,
    /// Linear memory one instance may grow to; a guest that needs more
    /// fails its request with 500 [256MiB].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_memory: Option<u64>,
    /// The largest request body a component is given: larger declared
    /// bodies get 413, a streamed body past it fails the guest's read
    /// [100MiB].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_request_body_size: Option<u64>,
    /// The largest response body a component may send: a larger declared
    /// body is answered 500, a streamed one is cut off [1GiB].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_response_body_size: Option<u64>,
    /// The most instances of one component serving at once; requests
    /// beyond it are answered 503 with Retry-After, not queued [1000].
    #[arg(long, value_name = "N")]
    pub max_instances_per_component: Option<usize>,
    /// The most outbound HTTP requests one instance may have in flight;
    /// more fail with connection-limit-reached [32].
    #[arg(long, value_name = "N")]
    pub max_outbound_connections: Option<usize>,
    /// The most each key-value store's or SQLite database's file (or
    /// database in memory) may hold: writes past it fail with "database or
    /// disk is full", naming this limit; 0 for no limit [1GiB].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_store_size: Option<u64>,
}

impl AppLimitArgs {
    /// The limits these flags set, as the `[limits]` table would.
    pub fn to_table(&self) -> Limits {
        Limits {
            request_timeout: self.request_timeout,
            max_memory: self.max_memory,
            max_stack_size: None,
            max_request_body_size: self.max_request_body_size,
            max_response_body_size: self.max_response_body_size,
            max_instances_per_component: self.max_instances_per_component,
            max_outbound_connections: self.max_outbound_connections,
            max_store_size: self.max_store_size,
        }
    }
}

/// The limits in force: flags, then the runtime config, then defaults.
#[derive(Debug)]
struct EffectiveLimits {
    /// The app's (or, for `bantam serve`, every app's default).
    app: AppLimits,
    /// The engine's, for every instance.
    max_stack_size: usize,
}

impl LimitArgs {
    fn resolve(&self, file: Option<&RuntimeConfig>) -> anyhow::Result<EffectiveLimits> {
        let flags = Limits { max_stack_size: self.max_stack_size, ..self.app.to_table() };
        let limits = flags.or(file.map(|f| f.limits.clone()).unwrap_or_default());
        Ok(EffectiveLimits {
            app: AppLimits::default().with(&limits)?,
            max_stack_size: size_limit(
                limits.max_stack_size,
                EngineConfig::default().max_stack_size,
                "max-stack-size",
            )?,
        })
    }
}

/// Run `bantam up`.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let loaded = load_app(&args, &cwd)?;
    let host = Host::new(&args.serving, load_runtime_config(&args, &cwd)?.as_ref(), &cwd)?;
    let trigger = host.prepare(&args, &loaded, true)?;
    let listener = host.bind(&args)?;
    print_routes(&loaded.app, &trigger, listener.local_addr()?);
    let live = Arc::new(server::LiveTrigger::from(trigger));
    host.runtime.block_on(host.serve(&args.serving, live, listener, shutdown_signal()))
}

/// An app loaded for serving.
pub struct LoadedApp {
    /// The app.
    pub app: bantam_app::App,
    /// For an app pulled from a registry, the directory it is laid out in
    /// for this run: like Spin, such an app keeps no state (default
    /// stores, logs) after the run.
    pulled_dir: Option<tempfile::TempDir>,
}

/// Load the app `args` name: a manifest (built first with `--build`), a
/// bare component, or a registry reference (pulled).
pub fn load_app(args: &UpArgs, cwd: &Path) -> anyhow::Result<LoadedApp> {
    let reference = args.from_registry.clone().or_else(|| {
        let from = args.from.as_ref()?.to_str()?;
        (!cwd.join(from).exists() && bantam_registry::looks_like_reference(from))
            .then(|| from.to_owned())
    });
    let mut pulled_dir = None;
    let mut app = match (&reference, args.from.as_deref()) {
        (Some(reference), _) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let options =
                super::registry::RegistryOptions { insecure: args.insecure, cache_dir: None };
            let pulled = super::registry::pull(&runtime, reference, &options)?;
            eprintln!("Pulled {reference} with digest {}", pulled.digest);
            let dir = tempfile::Builder::new()
                .prefix("bantam-app-")
                .tempdir()
                .context("cannot create a directory for the pulled app")?;
            let manifest_path = pulled.write_app_dir(dir.path())?;
            let app = bantam_app::load(&manifest_path)?;
            pulled_dir = Some(dir);
            app
        }
        // A bare component serves every route, as `spin up -f app.wasm`.
        (None, Some(path)) if path.extension().is_some_and(|ext| ext == "wasm") => {
            bantam_app::from_wasm_file(&cwd.join(path))?
        }
        (None, from) => {
            let manifest_path = bantam_app::find_manifest(from, cwd)?;
            if args.build {
                super::build::build(&manifest_path, &[])?;
            }
            bantam_app::load(&manifest_path)?
        }
    };
    for warning in &app.warnings {
        crate::terminal::print_warning(warning);
    }
    for component in &mut app.components {
        component.environment.extend(args.env.iter().cloned());
    }
    Ok(LoadedApp { app, pulled_dir })
}

/// What serving keeps across app reloads: the engine (its compile cache
/// and instance pool), the async runtime and the limits.
pub struct Host {
    engine: Arc<Engine>,
    /// The runtime serving requests.
    pub runtime: tokio::runtime::Runtime,
    limits: EffectiveLimits,
    cwd: PathBuf,
}

impl Host {
    /// Start the engine and runtime with the flags of `serving` and the
    /// `[limits]` of `runtime_config`.
    pub fn new(
        serving: &ServingArgs,
        runtime_config: Option<&RuntimeConfig>,
        cwd: &Path,
    ) -> anyhow::Result<Self> {
        let limits = serving.limits.resolve(runtime_config)?;
        let engine = Arc::new(Engine::new(&EngineConfig {
            pooling: !serving.disable_pooling,
            cache_dir: match (&serving.cache_dir, serving.disable_cache) {
                (_, true) => None,
                (Some(dir), false) => Some(dir.clone()),
                (None, false) => EngineConfig::default_cache_dir(),
            },
            max_instance_memory: limits.app.max_memory,
            max_stack_size: limits.max_stack_size,
            compile_worker: CompileWorker::this_executable(
                serving.max_compile_memory,
                serving.max_compile_time,
            ),
            after_compile: Some(crate::release_freed_memory),
            ..EngineConfig::default()
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bantam-worker")
            .build()
            .context("cannot start the async runtime")?;
        Ok(Self { engine, runtime, limits, cwd: cwd.to_path_buf() })
    }

    /// The engine every app is prepared on.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The limits of the app (`bantam up`), or the default limits of
    /// every app (`bantam serve`).
    pub fn limits(&self) -> AppLimits {
        self.limits.app
    }

    /// Open the app's capabilities, compile and link its components: a
    /// trigger ready to serve. `announce` prints where logs and stores
    /// live (once, not on every reload).
    pub fn prepare(
        &self,
        args: &UpArgs,
        loaded: &LoadedApp,
        announce: bool,
    ) -> anyhow::Result<Arc<HttpTrigger>> {
        let app = &loaded.app;
        let logs = log_config(args, &app.state_dir, loaded.pulled_dir.is_some());
        if let Some(dir) = logs.log_dir.as_ref().filter(|_| announce) {
            let shown = dir.strip_prefix(&app.dir).unwrap_or(dir);
            println!("Logging component stdio to \"{}/\"", shown.display());
        }
        let runtime_config = load_runtime_config(args, &self.cwd)?;
        let capabilities = capabilities(
            args,
            runtime_config,
            &self.limits.app,
            app,
            &self.cwd,
            &self.runtime,
            announce,
        )?;
        // Compiling a large component (a JS or Python runtime) takes
        // seconds the first time; the compile cache makes it instant.
        let mut spinner: Option<indicatif::ProgressBar> = None;
        let trigger = HttpTrigger::prepare(
            &self.engine,
            app,
            &capabilities,
            &logs,
            self.limits.app,
            &AppMetrics::default(),
            |id| {
                let next = crate::terminal::spinner(format!("Preparing component `{id}`"));
                if let Some(done) = spinner.replace(next) {
                    done.finish_and_clear();
                }
            },
        );
        if let Some(done) = spinner {
            done.finish_and_clear();
        }
        Ok(trigger?)
    }

    /// Bind the listener of `args`.
    pub fn bind(&self, args: &UpArgs) -> anyhow::Result<tokio::net::TcpListener> {
        self.runtime.block_on(async {
            tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))
        })
    }

    /// Serve `handler` on `listener` until `stop` resolves, then drain.
    pub fn serve<H: server::Handler>(
        &self,
        serving: &ServingArgs,
        handler: Arc<H>,
        listener: tokio::net::TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        let engine = self.engine.clone();
        let grace = serving.shutdown_timeout;
        let threads = match serving.threads {
            Some(threads) => usize::from(threads),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        async move {
            let shutdown = async {
                stop.await;
                eprintln!("Shutting down: finishing in-flight requests");
            };
            let outcome = server::serve(handler, listener, threads, shutdown, grace)
                .await
                .context("cannot start the serving threads");
            engine.shutdown();
            let outcome = outcome?;
            if outcome == Shutdown::TimedOut {
                bail!("in-flight requests did not finish within {grace:?}; they were stopped");
            }
            Ok(())
        }
    }
}

pub fn load_runtime_config(args: &UpArgs, cwd: &Path) -> anyhow::Result<Option<RuntimeConfig>> {
    Ok(match &args.runtime_config_file {
        Some(path) => Some(RuntimeConfig::load(&cwd.join(path))?),
        None => None,
    })
}

/// Open the app's stores and databases, resolve its variables, and apply
/// `--sqlite` and `--key-value`.
fn capabilities(
    args: &UpArgs,
    runtime_config: Option<RuntimeConfig>,
    limits: &AppLimits,
    app: &bantam_app::App,
    cwd: &Path,
    runtime: &tokio::runtime::Runtime,
    announce: bool,
) -> anyhow::Result<AppCapabilities> {
    if let (Some(config), Some(path), true) = (&runtime_config, &args.runtime_config_file, announce)
    {
        let summary = config.summary();
        if !summary.is_empty() {
            println!(
                "Using runtime config {} from {:?}",
                summary.join(" "),
                path.display().to_string()
            );
        }
    }
    let mut variable_sources = VariableSources::from_env();
    for flag in &args.variables {
        variable_sources.add_flag(flag, cwd)?;
    }
    let capabilities = AppCapabilities::new(
        app,
        CapabilityConfig {
            runtime_config,
            variable_sources,
            max_outbound_connections: limits.max_outbound_connections,
            max_store_size: limits.max_store_size,
        },
    )?;
    if announce {
        for line in capabilities.storage_summary(&app.dir) {
            println!("{line}");
        }
    }

    if !args.sqlite.is_empty() {
        let database = capabilities.sqlite("default").context(
            "--sqlite runs against the default database, which no component uses: add sqlite_databases = [\"default\"] to a component",
        )?;
        for statement in &args.sqlite {
            let sql = match statement.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(cwd.join(file))
                    .with_context(|| format!("--sqlite @{file}: cannot read the file"))?,
                None => statement.clone(),
            };
            database.execute_batch(&sql).map_err(|e| anyhow::anyhow!("--sqlite: {e}"))?;
        }
    }
    if !args.key_values.is_empty() {
        let store = capabilities.key_value("default").context(
            "--key-value sets keys in the default store, which no component uses: add key_value_stores = [\"default\"] to a component",
        )?;
        runtime.block_on(async {
            for (key, value) in &args.key_values {
                store
                    .set(key, value.clone().into_bytes())
                    .await
                    .map_err(|e| anyhow::anyhow!("--key-value {key}: {e}"))?;
            }
            anyhow::Ok(())
        })?;
    }
    Ok(capabilities)
}

/// Where component output goes. A pulled app writes log files only when
/// `--log-dir` asks, as in Spin: it has no app directory of its own.
fn log_config(args: &UpArgs, state_dir: &Path, pulled: bool) -> LogConfig {
    let log_dir = match &args.log_dir {
        Some(dir) if dir.as_os_str().is_empty() => None,
        Some(dir) => Some(dir.clone()),
        None if pulled => None,
        None => Some(state_dir.join("logs")),
    };
    LogConfig {
        log_dir,
        terminal_rate: (!args.quiet).then_some(args.max_terminal_output_rate),
        truncate: args.truncate_logs,
        max_file_size: args.serving.max_log_file_size,
    }
}

/// A size of at least one byte (a rate of nothing would be `-q`).
fn parse_rate(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("must be more than 0 (use -q to show no output)".into()),
        bytes => Ok(bytes),
    }
}

/// The start-up listing, in `spin up`'s format.
pub fn print_routes(app: &bantam_app::App, trigger: &HttpTrigger, address: SocketAddr) {
    let base = format!("http://{address}");
    let mut out = format!("\nServing {base}\nAvailable Routes:\n");
    for (pattern, component_id) in trigger.routes() {
        let wildcard = if pattern.is_wildcard() { " (wildcard)" } else { "" };
        let route = pattern.component_route();
        out.push_str(&format!("  {component_id}: {base}{route}{wildcard}\n"));
        if let Some(description) = app
            .component(component_id)
            .and_then(|c| c.description.as_deref())
            .filter(|d| !d.is_empty())
        {
            out.push_str(&format!("    {description}\n"));
        }
    }
    print!("{out}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
