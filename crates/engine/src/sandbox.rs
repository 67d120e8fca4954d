//! The per-instance sandbox: what one guest instance can see and do.
//!
//! A [`Sandbox`] is built once per component from its manifest entry and is
//! immutable; [`Sandbox::new_host_state`] makes the [`HostState`] of one
//! fresh instance from it. A guest sees only its declared environment
//! variables, its declared files (read-only, at the paths the manifest
//! gives), clocks and random. It has no sockets; its outbound HTTP goes
//! only where its `allowed_outbound_hosts` grant (see
//! `bantam_capabilities::outbound_http`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use bantam_capabilities::outbound_http::OutboundHttp;
use bantam_capabilities::{CapabilitiesView, CapabilityState, ComponentCapabilities};

use crate::LogConfig;
use crate::stdio::{GuestOutput, GuestOutputStream};

/// The most host resources (streams, fields, open stores, connections,
/// ...) one instance may hold at once; past it, creating one fails with
/// the interface's error (`store-table-full`, a trap for WASI's own).
pub const MAX_RESOURCES: usize = 16_384;

/// What every instance of one component gets.
#[derive(Debug)]
pub struct Sandbox {
    environment: Vec<(String, String)>,
    files_root: Option<PathBuf>,
    stdout: Arc<GuestOutput>,
    stderr: Arc<GuestOutput>,
    capabilities: Arc<ComponentCapabilities>,
}

impl Sandbox {
    /// The sandbox of `component`, with its output going where `logs` says
    /// and the host capabilities its manifest grants.
    pub fn new(
        component: &bantam_app::Component,
        logs: &LogConfig,
        capabilities: Arc<ComponentCapabilities>,
    ) -> Self {
        let (stdout, stderr) = GuestOutput::for_component(&component.id, logs);
        Self {
            environment: component.environment.clone(),
            files_root: component.files_root.clone(),
            stdout,
            stderr,
            capabilities,
        }
    }

    /// The host state of one fresh instance.
    pub fn new_host_state(&self, max_memory: usize) -> wasmtime::Result<HostState> {
        let mut wasi = WasiCtxBuilder::new();
        // No network of any kind until a capability grants it: name lookups
        // could leak data as surely as connections.
        wasi.allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .envs(&self.environment)
            .stdout(GuestOutputStream::new(self.stdout.clone()))
            .stderr(GuestOutputStream::new(self.stderr.clone()));
        if let Some(root) = &self.files_root {
            // Read-only, and rooted at the private copy: `..` and absolute
            // paths cannot leave it (cap-std resolves every path beneath it).
            wasi.preopened_dir(root, "/", FsPerms::ReadOnly)?;
        }
        Ok(HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: {
                // wasmtime's default allows a million entries: enough for a
                // guest that never drops its handles to hold gigabytes of
                // host memory across the pool. Real guests use hundreds.
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            limits: StoreLimitsBuilder::new().memory_size(max_memory).build(),
            clock: RequestClock::default(),
            outbound_http: OutboundHttp::new(Arc::clone(&self.capabilities)),
            capabilities: CapabilityState::new(Arc::clone(&self.capabilities)),
        })
    }
}

/// The data of one instance's store: its WASI context, its resources and
/// its limits.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) clock: RequestClock,
    outbound_http: OutboundHttp,
    capabilities: CapabilityState,
}

/// The time a guest has for its current request, kept by the instance's
/// epoch callback (see `Engine::new_store`).
#[derive(Debug, Default)]
pub struct RequestClock {
    timeout: Option<Duration>,
    /// Past this instant (the timeout plus a tick, so the trigger answers
    /// the client first) the instance is interrupted.
    pub(crate) deadline: Option<Instant>,
    /// Epoch ticks the guest has computed through in this request.
    pub(crate) ticks: u32,
}

impl RequestClock {
    /// A clock for a request starting now, limited to `timeout`.
    pub(crate) fn start(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            deadline: timeout.map(|timeout| Instant::now() + timeout + crate::EPOCH_TICK),
            ticks: 0,
        }
    }
}

impl HostState {
    /// A new request begins in this instance (a reused one): its full
    /// timeout and a fresh count of computing ticks start now, and its
    /// outbound HTTP requests carry `headers` (its trace context) instead
    /// of the previous request's.
    pub fn begin_request(&mut self, headers: Option<http::HeaderMap>) {
        self.clock = RequestClock::start(self.clock.timeout);
        self.outbound_http.set_headers(headers.unwrap_or_default());
    }

    /// What the capability host functions work on.
    pub(crate) fn capabilities(&mut self) -> CapabilitiesView<'_> {
        CapabilitiesView { state: &self.capabilities, table: &mut self.table }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound_http,
        }
    }
}
