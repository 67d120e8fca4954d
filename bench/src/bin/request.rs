//! A whole request through Bantam's trigger without the network: routing,
//! Spin's headers, a fresh instance, the guest, its response body read to
//! the end and the store dropped, one request at a time on one thread.
//! With native hyper's own cost per request added, this is the least a
//! request can cost a Bantam server (BENCHMARKS.md, "The floor").
//!
//! `request <component.wasm> [path] [iterations]`; prints one JSON object.

use std::time::Instant;

use bantam_bench::{micros, percentile};
use bantam_capabilities::{AppCapabilities, CapabilityConfig};
use bantam_engine::{AppLimits, Engine, EngineConfig, LogConfig};
use bantam_trigger_http::HttpTrigger;
use bantam_trigger_http::metrics::AppMetrics;
use http_body_util::{BodyExt, Empty};

/// The allocator the `bantam` binary uses, so that the comparison is of
/// the work done, not of the allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Requests in flight at once in the second measurement: wrk's `-c64`.
const CONCURRENCY: usize = 64;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().expect("a component path"));
    let uri = args.next().unwrap_or_else(|| "/".into());
    let iterations: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(20_000);

    let engine = std::sync::Arc::new(Engine::new(&EngineConfig {
        cache_dir: None,
        ..EngineConfig::default()
    }));
    let app = bantam_app::from_wasm_file(&path)?;
    let capabilities = AppCapabilities::new(&app, CapabilityConfig::default())?;
    let logs =
        LogConfig { log_dir: None, terminal_rate: None, truncate: false, max_file_size: u64::MAX };
    let trigger = HttpTrigger::prepare(
        &engine,
        &app,
        &capabilities,
        &logs,
        AppLimits::default(),
        &AppMetrics::default(),
        |_| {},
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    let url = format!("http://bench.local{uri}");
    let request = move || {
        let (trigger, url) = (trigger.clone(), url.clone());
        async move {
            let request = hyper::Request::builder()
                .uri(url)
                .header("host", "bench.local")
                .body(Empty::new().map_err(|never| match never {}).boxed_unsync())?;
            let response = trigger.handle_chained(None, request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::ensure!(status == 200, "status {status}: {}", String::from_utf8_lossy(&body));
            anyhow::Ok(())
        }
    };

    // One at a time: each request's own time, from the request to the
    // end of its body.
    let (times, one_total) = runtime.block_on(async {
        let mut times = Vec::with_capacity(iterations);
        let mut started_all = Instant::now();
        // Warm the pool's slots first, as a server that has served a while.
        for round in 0..iterations + 1000 {
            if round == 1000 {
                started_all = Instant::now();
            }
            let started = Instant::now();
            request().await?;
            if round >= 1000 {
                times.push(started.elapsed());
            }
            // Let the finished request's task drop its store before the
            // next one, as a server's idle moment would; its time counts
            // in the total.
            tokio::task::yield_now().await;
        }
        anyhow::Ok((times, started_all.elapsed()))
    })?;

    // Many at once, as under load: the thread works through a burst of
    // requests phase by phase, which keeps each phase's code and data in
    // the caches (BENCHMARKS.md). The cost per request is the elapsed
    // time over the requests served, the thread being busy throughout.
    let many_total = runtime.block_on(async {
        let each = iterations / CONCURRENCY;
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let request = request.clone();
            set.spawn(async move {
                for _ in 0..each {
                    request().await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = set.join_next().await {
            done??;
        }
        anyhow::Ok(started.elapsed() / (each * CONCURRENCY) as u32)
    });
    let report = serde_json::json!({
        "component": path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "path": uri,
        "iterations": iterations,
        "response_median_us": micros(percentile(&times, 50.0)),
        "response_p99_us": micros(percentile(&times, 99.0)),
        "per_request_us": micros(one_total / iterations as u32),
        "per_request_us_64_at_once": micros(many_total?),
    });
    println!("{report}");
    engine.shutdown();
    Ok(())
}
