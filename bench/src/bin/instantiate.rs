//! Per-request instantiation, measured inside the engine: a fresh store
//! and instance of a component, as Bantam makes for every request, timed
//! one by one; then the resident memory added per live instance.
//!
//! `instantiate <component.wasm> [iterations]`; prints one JSON object.

use std::time::Instant;

use bantam_bench::{micros, percentile};
use bantam_engine::{Engine, EngineConfig, LogConfig};

/// The allocator the `bantam` binary uses, so that the comparison is of
/// the work done, not of the allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().expect("a component path"));
    let iterations: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(10_000);

    let engine = Engine::new(&EngineConfig { cache_dir: None, ..EngineConfig::default() });
    let app = bantam_app::from_wasm_file(&path)?;
    let component = &app.components[0];
    // No log files, so no size at which to rotate them.
    let logs =
        LogConfig { log_dir: None, terminal_rate: None, truncate: false, max_file_size: u64::MAX };
    let pre = engine.prepare(
        component,
        &logs,
        bantam_capabilities::ComponentCapabilities::none(&component.id),
        bantam_engine::AppLimits::default(),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    let (store_times, instance_times) = runtime.block_on(async {
        let mut store_times = Vec::with_capacity(iterations);
        let mut instance_times = Vec::with_capacity(iterations);
        // Warm the pool's slots first, as a server that has served a while.
        for round in 0..iterations + 1000 {
            let started = Instant::now();
            let mut store = engine.new_store(&pre)?;
            let stored = started.elapsed();
            let _instance = pre.instance_pre.instantiate_async(&mut store).await?;
            let total = started.elapsed();
            if round >= 1000 {
                store_times.push(stored);
                instance_times.push(total);
            }
        }
        anyhow::Ok((store_times, instance_times))
    })?;

    // Memory per live instance: hold many, compare resident memory.
    let live = 200;
    let before = resident_kib();
    let held = runtime.block_on(async {
        let mut held = Vec::with_capacity(live);
        for _ in 0..live {
            let mut store = engine.new_store(&pre)?;
            let instance = pre.instance_pre.instantiate_async(&mut store).await?;
            held.push((store, instance));
        }
        anyhow::Ok(held)
    })?;
    let after = resident_kib();
    drop(held);

    let report = serde_json::json!({
        "component": path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "iterations": iterations,
        "new_store_median_us": micros(percentile(&store_times, 50.0)),
        "instantiate_median_us": micros(percentile(&instance_times, 50.0)),
        "instantiate_p99_us": micros(percentile(&instance_times, 99.0)),
        "resident_kib_per_instance": (after.saturating_sub(before)) as f64 / live as f64,
    });
    println!("{report}");
    engine.shutdown();
    Ok(())
}

/// This process's resident memory (Linux), in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
