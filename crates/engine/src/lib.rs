//! The wasmtime engine behind Bantam.
//!
//! One [`Engine`] per process. It owns two wasmtime engines (pooling
//! allocator, copy-on-write memory images, epoch interruption), each with
//! the [`Linker`] holding the host interfaces a guest may import, and the
//! compile cache. One engine has the component model's concurrency
//! (`wasi:http` 0.3, Spin's version 3 interfaces, whose functions are
//! `async`); the other has none, and serves components that import only
//! synchronous interfaces (WASI and `wasi:http` 0.2, Spin's version 2
//! interfaces): their stores skip the concurrency machinery's set-up and
//! every call skips its task bookkeeping. [`Engine::prepare`] picks the
//! engine from the component's imports and turns it into a
//! [`ComponentPre`]: compiled (or loaded from the cache), linked, and
//! pre-instantiated once at start-up, so that serving a request only has to
//! create a fresh [`Store`] and instantiate. The wasmtime engines are built
//! on a thread of their own from [`Engine::new`] on, while the caller reads
//! its app and the first [`Engine::prepare`] hashes its component.
//!
//! The engine never touches the network and knows nothing about HTTP
//! routing; triggers decide when to instantiate and what to call.

mod cache;
pub mod compile;
mod limits;
mod sandbox;
mod stdio;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

pub use cache::CompileCache;
pub use compile::CompileWorker;
pub use limits::{AppLimits, LimitError, size_limit};
pub use sandbox::{HostState, RequestClock, Sandbox};
pub use stdio::LogConfig;

/// How often the epoch ticks. Guests yield to the scheduler on every tick,
/// so a guest stuck in a loop cannot hold a worker thread for longer than
/// this. 1 ms: with 10 ms, a neighbour of two busy loops on two cores
/// waited several ticks per request.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// After this many ticks of computing, a guest is a long runner and gives
/// way to others (see `Engine::new_store`): 20 ms.
const LONG_RUNNER_TICKS: u32 = 20;

/// How much of a pooled linear memory stays resident between instances
/// when the kernel can tell which pages were dirtied (see
/// `wasmtime_config`).
const KEEP_RESIDENT: usize = 4 << 20;

/// Settings for the [`Engine`], chosen once per process.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Use the pooling instance allocator (fast instantiation, memory
    /// reserved up front). Falls back to on-demand allocation when the
    /// reservation fails.
    pub pooling: bool,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The largest linear memory any instance may grow to, in bytes: the
    /// size of a pooled memory slot. Each app's own limit
    /// ([`AppLimits::max_memory`]) is at most this.
    pub max_instance_memory: usize,
    /// The most WebAssembly stack one instance may use, in bytes; deeper
    /// recursion traps.
    pub max_stack_size: usize,
    /// The most instances alive at once, across all components.
    pub max_instances: u32,
    /// Compile in a worker process under limits; `None` to compile in
    /// this process (at lower priority, without limits).
    pub compile_worker: Option<CompileWorker>,
    /// Called when a compile is over and what it allocated is freed, to
    /// give that memory back to the operating system: a compile frees
    /// tens to hundreds of MiB at once (the artifact; in process, the
    /// compiler's working memory), which an allocator such as mimalloc
    /// otherwise keeps for as long as the host runs. The binary chooses
    /// the allocator, so it supplies this.
    pub after_compile: Option<fn()>,
}

impl EngineConfig {
    /// The default cache location: `<user cache dir>/bantam/components`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .map(|dir| dir.join("bantam").join("components"))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            pooling: true,
            cache_dir: Self::default_cache_dir(),
            max_instance_memory: AppLimits::default().max_memory,
            max_stack_size: 1 << 20,
            max_instances: 1000,
            compile_worker: None,
            after_compile: None,
        }
    }
}

/// Why the engine could not be set up or a component prepared.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The wasmtime configuration was rejected.
    #[error("cannot configure the WebAssembly engine: {0}")]
    Config(String),
    /// A component file could not be read.
    #[error("component `{component}`: cannot read {}: {source}", .path.display())]
    Read {
        /// The component id.
        component: String,
        /// The file that was read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A component failed to compile (not a valid component, ...).
    #[error("component `{component}` ({}) is not a valid WebAssembly component: {message}", .path.display())]
    Compile {
        /// The component id.
        component: String,
        /// The file that was compiled.
        path: PathBuf,
        /// wasmtime's explanation.
        message: String,
    },
    /// Compiling a component took more than its limits allow (see
    /// [`CompileWorker`]).
    #[error("component `{component}` ({}) could not be compiled: {message}", .path.display())]
    CompileStopped {
        /// The component id.
        component: String,
        /// The file that was compiled.
        path: PathBuf,
        /// Which limit it reached, most likely.
        message: String,
    },
    /// A component imports something Bantam does not provide.
    #[error("component `{component}` cannot start: {message}")]
    Link {
        /// The component id.
        component: String,
        /// Which import is missing, in wasmtime's words.
        message: String,
    },
}

/// Renders a wasmtime error with its chain of causes on one line. The
/// guest's wasm backtrace is left out (it spans many lines); it is logged
/// at debug level.
pub fn describe(error: &wasmtime::Error) -> String {
    if let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        tracing::debug!("guest backtrace:\n{backtrace}");
        // A trap: the backtrace is the outer context, the trap the cause.
        return error.root_cause().to_string();
    }
    error.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

/// The process-wide WebAssembly engine: wasmtime, the host interfaces and
/// the compile cache.
pub struct Engine {
    /// The wasmtime engines, built on a thread of their own from
    /// [`Engine::new`] on and waited for when first needed: reading the
    /// app and hashing its components overlap with building them.
    engines: LazyLock<Result<Engines, String>, JoinBuild>,
    cache: Option<CompileCache>,
    /// Compiled components by the digest of their bytes and whether they
    /// were compiled for the concurrent engine, while any prepared
    /// component uses them: apps deploying the same bytes share one copy
    /// of the code (a host of many tenants often runs one component many
    /// times over).
    compiled: Mutex<HashMap<CodeKey, Weak<Component>>>,
    max_instance_memory: usize,
    /// The stack size compiled code checks for, which a compile worker's
    /// engine must be configured with too.
    max_stack_size: usize,
    compile_worker: Option<CompileWorker>,
    after_compile: Option<fn()>,
    epoch_ticker: EpochTicker,
}

/// Waits for the thread building the engines, once.
type JoinBuild = Box<dyn FnOnce() -> Result<Engines, String> + Send>;

/// The two wasmtime engines, each with its linker.
struct Engines {
    /// With the component model's concurrency: serves any component.
    concurrent: LinkedEngine,
    /// Without it: components that import only synchronous interfaces.
    sync: LinkedEngine,
}

impl Engines {
    /// Build both engines and start ticking their epochs. Each reserves
    /// its pools (a guard page per fiber stack: a thousand `mprotect`s)
    /// and links a few thousand host functions: milliseconds, so the two
    /// are built side by side.
    fn build(config: &EngineConfig, epoch_stop: Arc<AtomicBool>) -> Result<Self, String> {
        let (concurrent, sync) = std::thread::scope(|scope| {
            let sync = scope.spawn(|| LinkedEngine::new(config, false));
            let concurrent = LinkedEngine::new(config, true);
            (concurrent, sync.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        });
        let engines = Self { concurrent: concurrent?, sync: sync? };
        let ticked = [engines.concurrent.engine.clone(), engines.sync.engine.clone()];
        EpochTicker::tick(ticked, epoch_stop);
        Ok(engines)
    }
}

/// The BLAKE3 digest of a component's bytes.
type Digest = [u8; 32];

/// What compiled code is shared by: the digest of the component's bytes,
/// and whether it was compiled for the concurrent engine.
type CodeKey = (Digest, bool);

/// The BLAKE3 digest of the file at `path`, read in small pieces.
fn file_digest(path: &Path) -> std::io::Result<Digest> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(*hasher.finalize().as_bytes())
}

/// A component's code linked for one of the engines.
struct Linked {
    compiled: Arc<Component>,
    /// Whether the code was not compiled now.
    from_cache: bool,
    instance_pre: InstancePre<HostState>,
    /// Whether for the engine with the component model's concurrency.
    concurrent: bool,
}

/// A wasmtime engine and the host interfaces linked for it.
struct LinkedEngine {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    /// Whether with the component model's concurrency.
    concurrent: bool,
}

impl LinkedEngine {
    /// The engine, pooling if asked and possible, and its linker; with the
    /// component model's concurrency if `concurrent`.
    fn new(config: &EngineConfig, concurrent: bool) -> Result<Self, String> {
        let engine = match config.pooling {
            true => match wasmtime::Engine::new(&wasmtime_config(config, true, concurrent)) {
                Ok(engine) => engine,
                Err(error) => {
                    tracing::warn!(
                        "pooling allocator unavailable ({}); using on-demand allocation",
                        describe(&error)
                    );
                    new_wasmtime_engine(config, false, concurrent)?
                }
            },
            false => new_wasmtime_engine(config, false, concurrent)?,
        };
        let linker = host_linker(&engine, concurrent).map_err(|e| describe(&e))?;
        Ok(Self { engine, linker, concurrent })
    }

    /// A linker for `component` in which its imports of release-candidate
    /// interfaces (`...@0.3.0-rc-...`) that Bantam serves in their final
    /// version are stubbed: calling one traps, saying which. `None` when
    /// it imports no such interface.
    fn with_prerelease_stubs(&self, component: &Component) -> Option<Linker<HostState>> {
        use wasmtime::component::types::ComponentItem;
        let engine = &self.engine;
        let ty = component.component_type();
        let stubbed: Vec<(String, wasmtime::component::types::ComponentInstance)> = ty
            .imports(engine)
            .filter_map(|(name, import)| match import.ty {
                ComponentItem::ComponentInstance(instance) if is_release_candidate(name) => {
                    Some((name.to_owned(), instance))
                }
                _ => None,
            })
            .collect();
        if stubbed.is_empty() {
            return None;
        }
        let mut linker = self.linker.clone();
        for (name, instance) in stubbed {
            tracing::debug!(import = %name, "stubbing a release-candidate import");
            let mut root = linker.root();
            let Ok(mut stub) = root.instance(&name) else { continue };
            for (export, item) in instance.exports(engine) {
                let what = format!("{name}#{export}");
                let defined = match item.ty {
                    ComponentItem::ComponentFunc(func) if func.async_() => stub
                        .func_new_concurrent(export, move |_, _, _, _| {
                            let what = what.clone();
                            Box::pin(async move { Err(unsupported_prerelease(&what)) })
                        }),
                    ComponentItem::ComponentFunc(_) => {
                        stub.func_new(export, move |_, _, _, _| Err(unsupported_prerelease(&what)))
                    }
                    ComponentItem::Resource(_) => stub.resource(
                        export,
                        wasmtime::component::ResourceType::host::<PrereleaseStub>(),
                        |_, _| Ok(()),
                    ),
                    _ => Ok(()),
                };
                if defined.is_err() {
                    return None;
                }
            }
        }
        Some(linker)
    }
}

/// A component ready to serve: compiled, linked against the host
/// interfaces, and pre-instantiated. Cheap to instantiate many times.
pub struct ComponentPre {
    /// The component id.
    pub id: String,
    /// The compiled component, shared with every other prepared
    /// component of the same bytes.
    pub component: Arc<Component>,
    /// The pre-instance: imports resolved once, instantiation is a copy.
    pub instance_pre: InstancePre<HostState>,
    /// What each instance's sandbox holds (env, files, stdio).
    pub sandbox: Arc<Sandbox>,
    /// What each instance and request may use: its app's limits.
    pub limits: AppLimits,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
}

impl Engine {
    /// Start building the engine. The wasmtime engines are built on a
    /// thread of their own meanwhile; if wasmtime rejects their
    /// configuration, [`Engine::prepare`] says so.
    pub fn new(config: &EngineConfig) -> Self {
        let epoch_ticker = EpochTicker::new();
        let building = {
            let (config, epoch_stop) = (config.clone(), epoch_ticker.stop.clone());
            std::thread::Builder::new()
                .name("bantam-engine".into())
                .spawn(move || Engines::build(&config, epoch_stop))
                .expect("spawning the engine's build thread")
        };
        let join: JoinBuild = Box::new(move || match building.join() {
            Ok(built) => built,
            Err(panic) => std::panic::resume_unwind(panic),
        });
        Self {
            engines: LazyLock::new(join),
            cache: config.cache_dir.clone().map(CompileCache::new),
            compiled: Mutex::default(),
            max_instance_memory: config.max_instance_memory,
            max_stack_size: config.max_stack_size,
            compile_worker: config.compile_worker.clone(),
            after_compile: config.after_compile,
            epoch_ticker,
        }
    }

    /// The wasmtime engines, waiting for their build if it has not ended.
    fn engines(&self) -> Result<&Engines, EngineError> {
        LazyLock::force(&self.engines)
            .as_ref()
            .map_err(|message| EngineError::Config(message.clone()))
    }

    /// The largest linear memory any instance may grow to: no app's
    /// [`AppLimits::max_memory`] can be more.
    pub fn max_instance_memory(&self) -> usize {
        self.max_instance_memory
    }

    /// Compile (or load from the cache), link and pre-instantiate a
    /// component, whose instances are held to `limits`. Fails if the
    /// component is invalid or imports something the host does not
    /// provide, naming the component and the import.
    ///
    /// A component that needs no concurrency goes to the engine without
    /// it; one the name check misjudges (it does not compile or link
    /// there) goes to the other.
    pub fn prepare(
        &self,
        component: &bantam_app::Component,
        logs: &LogConfig,
        capabilities: Arc<bantam_capabilities::ComponentCapabilities>,
        limits: AppLimits,
    ) -> Result<ComponentPre, EngineError> {
        let started = Instant::now();
        let Linked { compiled, from_cache, instance_pre, concurrent } = self.linked(component)?;
        tracing::debug!(
            component = %component.id,
            from_cache,
            concurrent,
            elapsed = ?started.elapsed(),
            "component ready"
        );
        Ok(ComponentPre {
            id: component.id.clone(),
            component: compiled,
            instance_pre,
            sandbox: Arc::new(Sandbox::new(component, logs, capabilities)),
            limits,
            from_cache,
        })
    }

    /// `component` compiled (or its code found compiled before) and linked.
    fn linked(&self, component: &bantam_app::Component) -> Result<Linked, EngineError> {
        let read_error = |source| EngineError::Read {
            component: component.id.clone(),
            path: component.source.clone(),
            source,
        };
        let may_go_without_concurrency = component.instance_reuse.is_none();
        // The file is hashed as it streams in: when its code was compiled
        // before (shared, or in the cache) the whole file is never held in
        // memory, which for a 24 MiB componentize-py app saves the page
        // faults of reading it into fresh memory at every start.
        let digest = file_digest(&component.source).map_err(read_error)?;
        let engines = self.engines()?;
        let mut tried_without_concurrency = false;
        if may_go_without_concurrency
            && let Some(compiled) = self.precompiled(&engines.sync, &digest)
        {
            tried_without_concurrency = true;
            if let Some(linked) =
                Self::linked_without_concurrency(&engines.sync, component, Ok(compiled), true)
            {
                return Ok(linked);
            }
        }
        if let Some(compiled) = self.precompiled(&engines.concurrent, &digest) {
            return Self::linked_concurrent(&engines.concurrent, component, compiled, true);
        }
        // Not compiled before: compiled now, keyed by the bytes compiled
        // (the file may have changed since it was streamed).
        let bytes = std::fs::read(&component.source).map_err(read_error)?;
        let digest = *blake3::hash(&bytes).as_bytes();
        let compile_error = |error: wasmtime::Error| match error.downcast_ref::<compile::Stopped>()
        {
            Some(compile::Stopped(message)) => EngineError::CompileStopped {
                component: component.id.clone(),
                path: component.source.clone(),
                message: message.clone(),
            },
            None => EngineError::Compile {
                component: component.id.clone(),
                path: component.source.clone(),
                message: describe(&error),
            },
        };
        if may_go_without_concurrency && !tried_without_concurrency && needs_no_concurrency(&bytes)
        {
            let compiled = match self.compile(&engines.sync, &digest, &bytes) {
                // Stopped at its limits, it would only be stopped again.
                Err(error) if error.is::<compile::Stopped>() => return Err(compile_error(error)),
                compiled => compiled,
            };
            if let Some(linked) =
                Self::linked_without_concurrency(&engines.sync, component, compiled, false)
            {
                return Ok(linked);
            }
        }
        let compiled = self.compile(&engines.concurrent, &digest, &bytes).map_err(compile_error)?;
        Self::linked_concurrent(&engines.concurrent, component, compiled, false)
    }

    /// `component`'s `compiled` code (`from_cache` if not compiled now)
    /// linked for `sync`, the engine without concurrency; `None` (logged at
    /// debug level) if it did not compile or does not link there.
    fn linked_without_concurrency(
        sync: &LinkedEngine,
        component: &bantam_app::Component,
        compiled: wasmtime::Result<Arc<Component>>,
        from_cache: bool,
    ) -> Option<Linked> {
        let linked = compiled.and_then(|compiled| {
            let instance_pre = sync.linker.instantiate_pre(&compiled)?;
            Ok(Linked { compiled, from_cache, instance_pre, concurrent: false })
        });
        match linked {
            Ok(linked) => Some(linked),
            Err(error) => {
                tracing::debug!(
                    component = %component.id,
                    "not prepared without concurrency: {}",
                    describe(&error)
                );
                None
            }
        }
    }

    /// `component`'s `compiled` code linked for `concurrent`, the engine
    /// with concurrency.
    fn linked_concurrent(
        concurrent: &LinkedEngine,
        component: &bantam_app::Component,
        compiled: Arc<Component>,
        from_cache: bool,
    ) -> Result<Linked, EngineError> {
        let instance_pre = match concurrent.linker.instantiate_pre(&compiled) {
            Ok(pre) => pre,
            // Guests built against a release candidate of an interface whose
            // final version Bantam serves (componentize-py's spin-sdk 5
            // imports `wasi:http@0.3.0-rc-2026-03-15` beside `@0.3.0`, and
            // calls only the latter) link with those imports stubbed.
            Err(error) => match concurrent.with_prerelease_stubs(&compiled) {
                Some(linker) => linker.instantiate_pre(&compiled),
                None => Err(error),
            }
            .map_err(|error| EngineError::Link {
                component: component.id.clone(),
                message: describe(&error),
            })?,
        };
        Ok(Linked { compiled, from_cache, instance_pre, concurrent: true })
    }

    /// The code compiled before for `linked` of the component of
    /// `digest`: shared with a component already prepared from the same
    /// bytes, else loaded from the compile cache.
    fn precompiled(&self, linked: &LinkedEngine, digest: &Digest) -> Option<Arc<Component>> {
        let key = (*digest, linked.concurrent);
        if let Some(shared) = self.lock_compiled().get(&key).and_then(Weak::upgrade) {
            return Some(shared);
        }
        let loaded = self.cache.as_ref()?.load(&linked.engine, digest)?;
        Some(self.share(key, loaded))
    }

    /// `bytes`, of `digest`, compiled now for `linked`, cached and shared.
    fn compile(
        &self,
        linked: &LinkedEngine,
        digest: &Digest,
        bytes: &[u8],
    ) -> wasmtime::Result<Arc<Component>> {
        let component = self.compile_and_load(linked, digest, bytes);
        // The artifact (and, in process, the compiler's memory) is freed now.
        if let Some(after_compile) = self.after_compile {
            after_compile();
        }
        Ok(self.share((*digest, linked.concurrent), component?))
    }

    /// `bytes`, of `digest`, compiled now for `linked`, cached and loaded.
    fn compile_and_load(
        &self,
        linked: &LinkedEngine,
        digest: &Digest,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        // Compiling can take seconds: not under the lock. Two apps
        // deploying the same new bytes at once may both compile; the
        // second copy simply replaces the first in the map.
        let engine = &linked.engine;
        let in_worker = self
            .compile_worker
            .as_ref()
            .map(|worker| worker.compile(self.max_stack_size, linked.concurrent, bytes));
        // Both ways give the artifact, which the cache keeps as it is: the
        // compiled component is never serialized a second time.
        let artifact = match in_worker {
            Some(Ok(artifact)) => artifact,
            Some(Err(compile::Failure::Invalid(message))) => {
                return Err(wasmtime::Error::msg(message));
            }
            Some(Err(compile::Failure::Stopped(message))) => {
                return Err(wasmtime::Error::new(compile::Stopped(message)));
            }
            Some(Err(compile::Failure::NoWorker)) | None => {
                at_compile_priority(|| engine.precompile_component(bytes))?
            }
        };
        // Loaded from the cache's file where it could be written, as a warm
        // start loads it: the code's pages are then the file's, shared with
        // the page cache and reclaimable, not a private copy of tens of MiB
        // for as long as the app runs.
        let from_file =
            self.cache.as_ref().and_then(|cache| cache.store(engine, digest, &artifact));
        match from_file {
            Some(component) => Ok(component),
            None => compile::load(engine, &artifact),
        }
    }

    /// Keep `component` for other components of the same bytes while any
    /// uses it.
    fn share(&self, key: CodeKey, component: Component) -> Arc<Component> {
        let component = Arc::new(component);
        let mut compiled = self.lock_compiled();
        compiled.retain(|_, weak| weak.strong_count() > 0);
        compiled.insert(key, Arc::downgrade(&component));
        component
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashMap<CodeKey, Weak<Component>>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh store for one instance of `pre`: its own memory, its own
    /// WASI context holding only what the manifest grants.
    pub fn new_store(&self, pre: &ComponentPre) -> wasmtime::Result<Store<HostState>> {
        let mut state = pre.sandbox.new_host_state(pre.limits.max_memory)?;
        state.clock = RequestClock::start(pre.limits.request_timeout);
        let mut store = Store::new(pre.instance_pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        // Yield to the async scheduler on every epoch tick, so a guest that
        // computes without pause cannot starve other requests on its thread;
        // past the request's deadline, stop it: a guest in a loop is
        // interrupted even if it never calls the host.
        //
        // The yield is tokio's own `yield_now`, which puts the task at the
        // back of the run queue. A plain self-wake (wasmtime's `Yield`)
        // lands in the worker's LIFO slot and is polled again at once, so
        // guests in busy loops on every worker kept a neighbour waiting
        // hundreds of milliseconds (measured by `adversarial.rs`).
        //
        // A guest that has computed for more than `LONG_RUNNER_TICKS` ticks
        // of its current request also sleeps a tick each time: a runaway
        // loop then takes at most half a core, and short requests beside it
        // keep their latency.
        //
        // The first check is due one tick from now. wasmtime's initial
        // deadline is the current epoch, so without this every instance
        // went through the callback (and back through the scheduler) at its
        // very first check: a task switch per request for nothing.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut store| {
            let clock = &mut store.data_mut().clock;
            if clock.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            clock.ticks = clock.ticks.saturating_add(1);
            let pause: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> =
                if clock.ticks > LONG_RUNNER_TICKS {
                    Box::pin(tokio::time::sleep(EPOCH_TICK))
                } else {
                    Box::pin(tokio::task::yield_now())
                };
            Ok(wasmtime::UpdateDeadline::YieldCustom(1, pause))
        });
        Ok(store)
    }

    /// Stop the epoch ticker; called on shutdown.
    pub fn shutdown(&self) {
        self.epoch_ticker.stop();
    }
}

/// How much nicer than the rest of the process compiling runs. A large
/// component (or a hostile one: the reference's T29) takes seconds of
/// every core to compile, while the serving threads answer other apps'
/// requests: ten steps of niceness give them about ten times the
/// compiler's share of a busy core. Measured in SECURITY.md (a
/// neighbour's p99 during a compile).
const COMPILE_NICENESS: i32 = 10;

/// Run `compile` on a thread of its own, [`COMPILE_NICENESS`] nicer than
/// the caller, as are the threads of rayon's global pool, where wasmtime
/// compiles functions in parallel. A thread's niceness cannot be raised
/// back without privilege, hence a thread per compile rather than
/// lowering the caller.
fn at_compile_priority<T: Send>(compile: impl FnOnce() -> T + Send) -> T {
    static POOL: std::sync::Once = std::sync::Once::new();
    POOL.call_once(|| {
        // Fails only if the pool was built already (nothing in Bantam
        // builds it before this); then compiling keeps its priority.
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("bantam-compile-{i}"))
            .start_handler(|_| lower_this_thread())
            .build_global();
    });
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().name("bantam-compile".into());
        let compiling = thread
            .spawn_scoped(scope, || {
                lower_this_thread();
                compile()
            })
            .expect("spawning the compile thread");
        compiling.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Make the calling thread [`COMPILE_NICENESS`] nicer than it was (at
/// most 19, the least priority); best effort. On Linux each thread has
/// its own niceness, set by its thread id.
fn lower_this_thread() {
    let this = rustix::thread::gettid();
    let lowered = rustix::process::getpriority_process(Some(this)).and_then(|niceness| {
        rustix::process::setpriority_process(Some(this), (niceness + COMPILE_NICENESS).min(19))
    });
    if let Err(error) = lowered {
        tracing::debug!("compiling at the serving threads' priority: {error}");
    }
}

/// A wasmtime engine, or why wasmtime rejected its configuration.
fn new_wasmtime_engine(
    config: &EngineConfig,
    pooling: bool,
    concurrent: bool,
) -> Result<wasmtime::Engine, String> {
    wasmtime::Engine::new(&wasmtime_config(config, pooling, concurrent)).map_err(|e| describe(&e))
}

fn wasmtime_config(config: &EngineConfig, pooling: bool, concurrent: bool) -> Config {
    let mut wasmtime = Config::new();
    wasmtime.wasm_component_model(true);
    wasmtime.wasm_component_model_async(concurrent);
    wasmtime.concurrency_support(concurrent);
    wasmtime.epoch_interruption(true);
    wasmtime.memory_init_cow(true);
    wasmtime.max_wasm_stack(config.max_stack_size);
    // Host calls run on the same fiber stack as the guest: leave them room
    // beyond the guest's limit.
    wasmtime.async_stack_size(config.max_stack_size + (1 << 20));
    if pooling {
        let mut pool = PoolingAllocationConfig::new();
        let instances = config.max_instances;
        // A Rust component typically holds a few core instances and one or
        // two memories; size the pools so `max_instances` components fit.
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(4))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(2))
            .total_stacks(instances)
            .max_memory_size(config.max_instance_memory)
            .table_keep_resident(16 << 10);
        // Keep the pages an instance dirtied resident for the next one in
        // its slot: resetting them with memset is cheaper than the
        // `madvise`, the TLB shootdown on the other cores and the page
        // faults the next instance would take. With the kernel's
        // PAGEMAP_SCAN (Linux 6.7+) only the dirtied pages are reset, so the
        // first 4 MiB (a Rust guest's 1 MiB stack and its heap) stay
        // resident at the cost of what was touched (measured against 1 and
        // 16 MiB in BENCHMARKS.md); without it every kept byte is memset on
        // every reuse, so keep only the first pages.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(wasmtime::Enabled::Yes).linear_memory_keep_resident(KEEP_RESIDENT);
        } else {
            pool.linear_memory_keep_resident(64 << 10);
        }
        wasmtime.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    wasmtime
}

/// The linker with every host interface Bantam provides: WASI 0.2 and 0.3
/// (cli, clocks, filesystem, random, sockets, io), `wasi:http` 0.2 and 0.3,
/// and the capabilities (key-value, SQLite, variables, ...); for an engine
/// without concurrency, only the synchronous ones (WASI and `wasi:http`
/// 0.2, Spin's version 2 interfaces, see [`needs_no_concurrency`]).
/// Linking an interface grants nothing by itself: each capability checks
/// the component's grants when called.
fn host_linker(engine: &wasmtime::Engine, concurrent: bool) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    if concurrent {
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    }
    bantam_capabilities::outbound_http::add_relative_urls_to_linker(&mut linker, concurrent)?;
    match concurrent {
        true => bantam_capabilities::add_to_linker(&mut linker, HostState::capabilities)?,
        false => bantam_capabilities::add_sync_to_linker(&mut linker, HostState::capabilities)?,
    }
    Ok(linker)
}

/// Whether a component, by the names of its imports and exports, needs
/// nothing of the component model's concurrency: every name is a WASI 0.2
/// interface (`wasi:http` 0.2, `wasi:keyvalue` and `wasi:config` drafts
/// included) or one of Spin's version 2 interfaces, all of which the
/// linker without concurrency provides. A component that cannot be read
/// needs the concurrent engine, whose compiler explains what is wrong.
fn needs_no_concurrency(bytes: &[u8]) -> bool {
    use wasmparser::{Parser, Payload};
    fn synchronous(name: &str) -> bool {
        match name.split_once('@') {
            Some((interface, version)) => {
                (interface.starts_with("wasi:") && version.starts_with("0.2."))
                    || (interface.starts_with("fermyon:spin/") && version == "2.0.0")
            }
            None => false,
        }
    }
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let names: Vec<&str> = match payload {
            Ok(Payload::ModuleSection { .. } | Payload::ComponentSection { .. }) => {
                depth += 1;
                continue;
            }
            Ok(Payload::End(_)) => {
                depth = depth.saturating_sub(1);
                continue;
            }
            Ok(Payload::ComponentImportSection(section)) if depth == 0 => {
                match section.into_iter().map(|i| i.map(|i| i.name.name)).collect() {
                    Ok(names) => names,
                    Err(_) => return false,
                }
            }
            Ok(Payload::ComponentExportSection(section)) if depth == 0 => {
                match section.into_iter().map(|e| e.map(|e| e.name.name)).collect() {
                    Ok(names) => names,
                    Err(_) => return false,
                }
            }
            Ok(_) => continue,
            Err(_) => return false,
        };
        if !names.into_iter().all(synchronous) {
            return false;
        }
    }
    true
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`].
/// Stops the thread when stopped or dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// A ticker whose thread [`EpochTicker::tick`] starts.
    fn new() -> Self {
        Self { stop: Arc::new(AtomicBool::new(false)) }
    }

    /// Advance `engines`' epochs on a thread of their own until `stop`
    /// (a ticker's flag) is set.
    fn tick(engines: [wasmtime::Engine; 2], stop: Arc<AtomicBool>) {
        std::thread::Builder::new()
            .name("bantam-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })
            .expect("spawning the epoch thread");
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The host type of stubbed release-candidate resources.
struct PrereleaseStub;

/// Whether an import names a release candidate (`@x.y.z-rc...`).
fn is_release_candidate(name: &str) -> bool {
    name.rsplit_once('@').is_some_and(|(_, version)| version.contains("-rc"))
}

fn unsupported_prerelease(what: &str) -> wasmtime::Error {
    wasmtime::format_err!(
        "`{what}` is a release candidate of an interface Bantam serves only in its final version"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the preamble of an empty one.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    /// Compiling, on its own thread and on rayon's pool where wasmtime
    /// compiles in parallel, runs [`COMPILE_NICENESS`] nicer than the
    /// caller (a thread that may go on to serve), which keeps its own.
    #[test]
    fn compiling_runs_below_the_callers_priority() {
        let niceness = || rustix::process::getpriority_process(Some(rustix::thread::gettid()));
        let before = niceness().unwrap();
        let (own, pool) = at_compile_priority(|| {
            (niceness().unwrap(), rayon::broadcast(|_| niceness().unwrap()))
        });
        let lowered = (before + COMPILE_NICENESS).min(19);
        assert_eq!(own, lowered);
        assert!(pool.iter().all(|&n| n == lowered), "{pool:?}");
        assert_eq!(niceness().unwrap(), before);
    }

    /// A component importing an instance named `name` (of type 0: names
    /// are read before anything is validated).
    fn importing(name: &str) -> Vec<u8> {
        let mut section = vec![1, 0x00, name.len() as u8];
        section.extend_from_slice(name.as_bytes());
        section.extend_from_slice(&[0x04, 0x00]);
        let mut bytes = EMPTY_COMPONENT.to_vec();
        bytes.extend_from_slice(&[10, section.len() as u8]);
        bytes.extend(section);
        bytes
    }

    #[test]
    fn only_components_of_synchronous_interfaces_go_without_concurrency() {
        assert!(needs_no_concurrency(EMPTY_COMPONENT));
        for synchronous in [
            "wasi:http/types@0.2.6",
            "wasi:cli/environment@0.2.0",
            "wasi:keyvalue/store@0.2.0-draft2",
            "fermyon:spin/key-value@2.0.0",
        ] {
            assert!(needs_no_concurrency(&importing(synchronous)), "{synchronous}");
        }
        for concurrent in [
            "wasi:http/types@0.3.0",
            "wasi:http/types@0.3.0-rc-2026-03-15",
            "spin:key-value/key-value@3.0.0",
            "fermyon:spin/key-value@2.1.0",
            "unversioned",
        ] {
            assert!(!needs_no_concurrency(&importing(concurrent)), "{concurrent}");
        }
        assert!(!needs_no_concurrency(b"not a component"));
    }

    #[test]
    fn a_configuration_wasmtime_rejects_is_reported_when_the_engine_is_first_needed() {
        // `Engine::new` returns at once; the build goes on in the
        // background and its failure is kept for every later use.
        let engine = Engine::new(&EngineConfig {
            pooling: false,
            cache_dir: None,
            max_stack_size: 0,
            ..EngineConfig::default()
        });
        for _ in 0..2 {
            let Err(error) = engine.engines() else { panic!("a zero stack was accepted") };
            assert_eq!(
                error.to_string(),
                "cannot configure the WebAssembly engine: max_wasm_stack size cannot be zero"
            );
        }
    }

    #[test]
    fn components_of_the_same_bytes_share_their_code_while_used() {
        let engine = Engine::new(&EngineConfig {
            pooling: false,
            cache_dir: None,
            ..EngineConfig::default()
        });
        let linked = &engine.engines().unwrap().concurrent;
        // As `Engine::linked` finds or makes the code: shared, else compiled.
        let compiled = || {
            let digest = *blake3::hash(EMPTY_COMPONENT).as_bytes();
            match engine.precompiled(linked, &digest) {
                Some(shared) => (shared, true),
                None => (engine.compile(linked, &digest, EMPTY_COMPONENT).unwrap(), false),
            }
        };
        let (first, first_reused) = compiled();
        let (second, second_reused) = compiled();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!((first_reused, second_reused), (false, true));
        drop((first, second));
        let (_third, third_reused) = compiled();
        assert!(!third_reused, "nothing used the code any more: compiled again");
        assert_eq!(engine.compiled.lock().unwrap().len(), 1, "the dead entry was dropped");
    }

    #[test]
    fn code_compiled_in_the_host_is_cached_for_the_next_engine() {
        let cache = tempfile::tempdir().unwrap();
        let config = EngineConfig {
            pooling: false,
            cache_dir: Some(cache.path().to_path_buf()),
            compile_worker: None,
            ..EngineConfig::default()
        };
        let digest = *blake3::hash(EMPTY_COMPONENT).as_bytes();
        let first = Engine::new(&config);
        let linked = &first.engines().unwrap().concurrent;
        assert!(first.precompiled(linked, &digest).is_none(), "an empty cache");
        first.compile(linked, &digest, EMPTY_COMPONENT).unwrap();
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1, "one entry");

        let second = Engine::new(&config);
        let linked = &second.engines().unwrap().concurrent;
        let loaded = second.precompiled(linked, &digest).expect("loaded from the cache");
        assert_eq!(loaded.component_type().exports(&linked.engine).count(), 0);
    }

    #[test]
    fn the_binary_is_told_when_a_compile_has_freed_its_memory() {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let engine = Engine::new(&EngineConfig {
            pooling: false,
            cache_dir: None,
            after_compile: Some(|| {
                CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }),
            ..EngineConfig::default()
        });
        let linked = &engine.engines().unwrap().concurrent;
        let digest = *blake3::hash(EMPTY_COMPONENT).as_bytes();
        engine.compile(linked, &digest, EMPTY_COMPONENT).unwrap();
        let invalid = *blake3::hash(b"not a component").as_bytes();
        assert!(engine.compile(linked, &invalid, b"not a component").is_err());
        assert_eq!(CALLS.load(std::sync::atomic::Ordering::Relaxed), 2, "after each compile");
    }
}
