//! `bantam watch`: rebuild on change and swap the running app in place.
//!
//! A change to a file matching a component's `build.watch` globs (relative
//! to its `workdir`) rebuilds that component; a change to the manifest, the
//! runtime config, or a component's Wasm or `files` reloads the app. The new
//! version is compiled and linked before it takes any request, then
//! replaces the old one atomically on the same listener: requests in flight
//! finish on the old version, none is dropped. A failed build or an
//! invalid manifest leaves the last good version serving.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bantam_trigger_http::HttpTrigger;
use bantam_trigger_http::server::LiveTrigger;
use clap::Args;
use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::Watcher as _;

use super::up::{Host, LoadedApp, UpArgs, load_runtime_config};

/// Flags of `bantam watch`, as `spin watch` has them, then `bantam up`'s.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    bantam watch\n  \
    bantam watch --skip-build --listen 127.0.0.1:8080\n  \
    bantam watch -d 500 -f apps/shop")]
pub struct WatchArgs {
    /// Clear the screen before each rebuild.
    #[arg(short = 'c', long)]
    pub clear: bool,
    /// How long changes must settle before a rebuild, in milliseconds.
    #[arg(short = 'd', long, default_value_t = 100, value_name = "MS")]
    pub debounce: u64,
    /// Do not run build commands: reload when components' Wasm or files
    /// change.
    #[arg(long)]
    pub skip_build: bool,
    #[command(flatten)]
    pub up: UpArgs,
}

/// What a batch of changes calls for.
#[derive(Debug, Default)]
struct Change {
    /// Components to rebuild.
    rebuild: BTreeSet<String>,
    /// Whether to reload the app (always, after a rebuild).
    reload: bool,
}

/// Which paths matter, derived from the manifest.
struct Rules {
    manifest: PathBuf,
    runtime_config: Option<PathBuf>,
    state_dir: PathBuf,
    /// Per component: its build-watch globs (matched relative to the
    /// build's workdir) and that workdir.
    builds: Vec<(String, PathBuf, GlobSet)>,
    /// Components' Wasm files and `files` globs, relative to the manifest
    /// directory (plus mapped directories by prefix).
    artifacts: GlobSet,
    artifact_dirs: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Rules {
    fn new(manifest_path: &Path, args: &WatchArgs, cwd: &Path) -> anyhow::Result<Self> {
        let manifest = bantam_manifest::load(manifest_path)?;
        let dir = manifest.manifest_dir.clone();
        let mut builds = Vec::new();
        let mut artifacts = GlobSetBuilder::new();
        let mut artifact_dirs = Vec::new();
        let mut dirs = vec![dir.clone()];
        for (id, component) in &manifest.components {
            if let Some(build) = component.build.as_ref().filter(|_| !args.skip_build) {
                let workdir = super::build::build_dir(&dir, build);
                let mut globs = GlobSetBuilder::new();
                for pattern in &build.watch {
                    globs.add(glob(pattern).with_context(|| {
                        format!("component `{id}`: bad build.watch glob `{pattern}`")
                    })?);
                }
                if !workdir.starts_with(&dir) {
                    dirs.push(workdir.clone());
                }
                builds.push((id.clone(), workdir, globs.build()?));
            }
            if let Ok(source) = component.source_path.strip_prefix(&dir) {
                artifacts.add(glob(&source.to_string_lossy())?);
            }
            for mount in &component.files {
                match mount {
                    bantam_manifest::FileMount::Glob(pattern) => {
                        artifacts.add(glob(pattern)?);
                    }
                    bantam_manifest::FileMount::Mapping { source, .. } => {
                        artifact_dirs.push(dir.join(source));
                    }
                }
            }
        }
        Ok(Self {
            manifest: manifest_path.to_path_buf(),
            runtime_config: args.up.runtime_config_file.as_ref().map(|p| cwd.join(p)),
            state_dir: dir.join(".spin"),
            builds,
            artifacts: artifacts.build()?,
            artifact_dirs,
            dirs,
        })
    }

    /// What `event` calls for, added to `change`; whether it mattered.
    /// Reads are not changes: a build reading its sources must not trigger
    /// another build.
    fn classify_event(&self, event: notify::Result<notify::Event>, change: &mut Change) -> bool {
        match event {
            Ok(event) if !matches!(event.kind, notify::EventKind::Access(_)) => {
                let mut relevant = false;
                for path in &event.paths {
                    relevant |= self.classify(path, change);
                }
                relevant
            }
            Ok(_) => false,
            Err(error) => {
                tracing::warn!("file watcher: {error}");
                false
            }
        }
    }

    /// What a change to `path` calls for, added to `change`; whether it
    /// called for anything.
    fn classify(&self, path: &Path, change: &mut Change) -> bool {
        if path.starts_with(&self.state_dir) {
            return false;
        }
        let mut relevant = false;
        if path == self.manifest || Some(path) == self.runtime_config.as_deref() {
            relevant = true;
        }
        for (id, workdir, globs) in &self.builds {
            if let Ok(relative) = path.strip_prefix(workdir)
                && globs.is_match(relative)
            {
                change.rebuild.insert(id.clone());
                relevant = true;
            }
        }
        let app_dir = self.manifest.parent().unwrap_or(Path::new("/"));
        let relative = path.strip_prefix(app_dir).unwrap_or(path);
        if self.artifacts.is_match(relative)
            || self.artifact_dirs.iter().any(|d| path.starts_with(d))
        {
            relevant = true;
        }
        if relevant {
            tracing::debug!(path = %path.display(), "changed");
            change.reload = true;
        }
        relevant
    }
}

fn glob(pattern: &str) -> anyhow::Result<Glob> {
    Ok(globset::GlobBuilder::new(pattern).literal_separator(true).build()?)
}

/// Run `bantam watch`.
pub fn run(args: WatchArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    if args.up.from.as_ref().is_some_and(|p| p.extension().is_some_and(|e| e == "wasm"))
        || args.up.from_registry.is_some()
    {
        bail!("bantam watch runs an app from its spin.toml; give -f a manifest or its directory");
    }
    let manifest_path = bantam_app::find_manifest(args.up.from.as_deref(), &cwd)?;
    let manifest_path = manifest_path.canonicalize().unwrap_or(manifest_path);
    let mut up_args = args.up.clone();
    up_args.from = Some(manifest_path.clone());
    up_args.build = false;

    let (events_tx, events) = std::sync::mpsc::channel();
    let mut watcher =
        notify::recommended_watcher(events_tx).context("cannot watch for file changes")?;
    let mut rules = Rules::new(&manifest_path, &args, &cwd)?;
    let mut watched = BTreeSet::new();
    watch_dirs(&mut watcher, &rules, &mut watched)?;

    let host = Host::new(&up_args.serving, load_runtime_config(&up_args, &cwd)?.as_ref(), &cwd)?;
    // Ctrl-C or SIGTERM stops watching at any point: while building,
    // while waiting, and before the first good build.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    host.runtime.spawn(async move {
        super::up::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let debounce = Duration::from_millis(args.debounce);
    let mut serving: Option<Serving> = None;
    let mut change = Some(Change {
        rebuild: rules.builds.iter().map(|(id, ..)| id.clone()).collect(),
        reload: true,
    });
    loop {
        if let Some(todo) = change.take() {
            if args.clear {
                eprint!("\x1b[2J\x1b[H");
            }
            match apply(&todo, &manifest_path, &host, &up_args, serving.is_none()) {
                Ok((loaded, trigger)) => {
                    match &mut serving {
                        None => {
                            let mut stop = stop.clone();
                            let stopped = async move {
                                let _ = stop.wait_for(|stopped| *stopped).await;
                            };
                            serving =
                                Some(Serving::start(&host, &up_args, loaded, trigger, stopped)?);
                        }
                        Some(serving) => serving.swap(loaded, trigger),
                    }
                    match Rules::new(&manifest_path, &args, &cwd) {
                        Ok(new_rules) => rules = new_rules,
                        Err(error) => crate::terminal::print_warning(format_args!("{error:#}")),
                    }
                    watch_dirs(&mut watcher, &rules, &mut watched)?;
                }
                Err(error) => {
                    crate::terminal::print_error(format_args!("{error:#}"));
                    if serving.is_some() {
                        eprintln!("The last good version is still serving; waiting for changes.");
                    } else {
                        eprintln!("Waiting for changes to try again.");
                    }
                }
            }
            // What the build itself wrote (its outputs) is not a change to
            // act on; an edit made meanwhile to a watched source is.
            let mut during = Change::default();
            while let Ok(event) = events.try_recv() {
                rules.classify_event(event, &mut during);
            }
            if !during.rebuild.is_empty() {
                change = Some(during);
                continue;
            }
        }
        if *stop.borrow() {
            break;
        }
        change = next_change(&events, &rules, debounce)?;
    }
    match serving {
        Some(serving) => host.runtime.block_on(serving.server)?,
        None => Ok(()),
    }
}

/// Watch every directory `rules` cares about (once each).
fn watch_dirs(
    watcher: &mut notify::RecommendedWatcher,
    rules: &Rules,
    watched: &mut BTreeSet<PathBuf>,
) -> anyhow::Result<()> {
    for dir in &rules.dirs {
        if watched.insert(dir.clone()) {
            watcher
                .watch(dir, notify::RecursiveMode::Recursive)
                .with_context(|| format!("cannot watch {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Wait for a relevant change, then for `debounce` of quiet; `None` after
/// a short wait with nothing relevant (so the caller can check the server).
fn next_change(
    events: &Receiver<notify::Result<notify::Event>>,
    rules: &Rules,
    debounce: Duration,
) -> anyhow::Result<Option<Change>> {
    let mut change = Change::default();
    let first = match events.recv_timeout(Duration::from_millis(200)) {
        Ok(event) => event,
        Err(RecvTimeoutError::Timeout) => return Ok(None),
        Err(RecvTimeoutError::Disconnected) => bail!("the file watcher stopped"),
    };
    rules.classify_event(first, &mut change);
    if !change.reload {
        return Ok(None);
    }
    let mut quiet_until = Instant::now() + debounce;
    loop {
        let wait = quiet_until.saturating_duration_since(Instant::now());
        match events.recv_timeout(wait) {
            // Only a relevant change restarts the quiet period: logs and
            // build outputs churning beside the sources must not hold off
            // the rebuild.
            Ok(event) => {
                if rules.classify_event(event, &mut change) {
                    quiet_until = Instant::now() + debounce;
                }
            }
            Err(RecvTimeoutError::Timeout) => return Ok(Some(change)),
            Err(RecvTimeoutError::Disconnected) => bail!("the file watcher stopped"),
        }
    }
}

/// Rebuild what `change` names, then load and prepare the app.
fn apply(
    change: &Change,
    manifest_path: &Path,
    host: &Host,
    args: &UpArgs,
    first: bool,
) -> anyhow::Result<(LoadedApp, Arc<HttpTrigger>)> {
    if !change.rebuild.is_empty() {
        let only: Vec<String> = change.rebuild.iter().cloned().collect();
        super::build::build(manifest_path, &only)?;
    }
    let loaded = super::up::load_app(args, manifest_path.parent().unwrap_or(Path::new(".")))?;
    let trigger = host.prepare(args, &loaded, first)?;
    Ok((loaded, trigger))
}

/// The server and the app versions it may still be using.
struct Serving {
    live: Arc<LiveTrigger>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    address: std::net::SocketAddr,
    current: LoadedApp,
    /// Replaced versions, kept (with their files) until their last
    /// in-flight request is done.
    retired: Vec<(Arc<HttpTrigger>, LoadedApp)>,
}

impl Serving {
    fn start(
        host: &Host,
        args: &UpArgs,
        loaded: LoadedApp,
        trigger: Arc<HttpTrigger>,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let listener = host.bind(args)?;
        let address = listener.local_addr()?;
        super::up::print_routes(&loaded.app, &trigger, address);
        let live = Arc::new(LiveTrigger::from(trigger));
        let server = host.runtime.spawn(host.serve(&args.serving, live.clone(), listener, stop));
        Ok(Self { live, server, address, current: loaded, retired: Vec::new() })
    }

    fn swap(&mut self, loaded: LoadedApp, trigger: Arc<HttpTrigger>) {
        let routes_changed = {
            let old = self.live.load();
            let old_routes: Vec<_> =
                old.routes().map(|(p, c)| (p.to_string(), c.to_owned())).collect();
            let new_routes: Vec<_> =
                trigger.routes().map(|(p, c)| (p.to_string(), c.to_owned())).collect();
            old_routes != new_routes
        };
        if routes_changed {
            super::up::print_routes(&loaded.app, &trigger, self.address);
        }
        let old_trigger = self.live.swap(trigger);
        let old_app = std::mem::replace(&mut self.current, loaded);
        self.retired.push((old_trigger, old_app));
        // Only this list holds a version nobody is serving any more.
        self.retired.retain(|(trigger, _)| Arc::strong_count(trigger) > 1);
        eprintln!("Reloaded: new requests go to the new version");
    }
}
