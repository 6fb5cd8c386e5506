//! What a call costs before and around the guest's own work: `cargo bench --bench instantiate`.
//!
//! For each example action (Rust: `plugins/`, Python: `plugins/python/`, JavaScript:
//! `plugins/js/`; build them first with `./dev plugins`), it measures
//! - **instantiate**: a fresh store and instance from the `InstancePre`, nothing called; and
//!   its **teardown**, timed apart: dropping them, the pool resetting the slot;
//! - **fresh instance + first call**: a whole `invoke_once` (a fresh instance, the guest's
//!   `invoke`, its one HTTP request answered by a recorded response, the result parsed), so
//!   no network is involved. The calls are 1 ms apart; with `[pool] prewarm` (the default)
//!   each takes the spare instance made in the background after the previous call, and its
//!   teardown happens there too. `--no-prewarm` measures calls that instantiate themselves.
//!   `--config=<callout.toml>` uses that file's `[pool]` settings instead of the defaults.
//!
//! and the load time of each action from a warm compile cache (median of 21). The same for
//! `echo` from `tests/plugins` (built by `cargo test`), an action that makes no request: the
//! fresh-instance invocation of a no-op action. Prints Markdown rows with the
//! median and p99 over `iterations` (default 2 000) after a warm-up.
//!
//! `cargo bench --bench instantiate -- [iterations] [action] [instantiate]`: a second argument
//! measures only that action (for profiling it with `perf record`), a third (`instantiate`)
//! skips its calls. The compile cache lives in the target
//! dir's `instantiate-bench/`, so only the first run compiles.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callout::call::MockResponse;
use callout::{Call, Registry, Runtime, RuntimeOptions};
use serde_json::{Value, json};

/// The mean: with the pool resetting freed slots in batches, one instantiation in
/// `decommit_batch_size` pays for the batch's reset, which the median does not show.
fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / samples.len().max(1) as u32
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn main() {
    // SAFETY: single-threaded at this point, before any other thread starts.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    // `CALLOUT_LOG=callout::plugin=debug` prints each load's phases ("load timings").
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("CALLOUT_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let iterations: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let only: Option<String> = args.get(1).cloned();
    // `--no-prewarm`: `[pool] prewarm = false`, every call instantiates on its own path.
    let prewarm = !std::env::args().any(|a| a == "--no-prewarm");
    // `--config=<callout.toml>`: its `[pool]` instead of the defaults (to try other settings).
    let pool = std::env::args()
        .find_map(|a| a.strip_prefix("--config=").map(String::from))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read the --config file");
            callout::HostConfig::parse(&text)
                .expect("a valid callout.toml")
                .pool
        });
    // A third argument `instantiate` skips the calls (to profile instantiation alone).
    let skip_calls = args.get(2).is_some_and(|a| a == "instantiate");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs: Vec<PathBuf> = ["plugins", "plugins/python", "plugins/js"]
        .iter()
        .map(|d| repo.join(d))
        .collect();
    // The no-op action: the test suite's echo plugin, when it has been built.
    let noop = tempfile::tempdir().unwrap();
    let echo = repo.join("tests/plugins/target/wasm32-wasip2/release/echo.wasm");
    if echo.is_file() {
        let folder = noop.path().join("echo");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join("action.toml"),
            format!(
                "name = \"echo\"\ncomponent = {:?}\n",
                echo.display().to_string()
            ),
        )
        .unwrap();
        dirs.push(noop.path().to_path_buf());
    } else {
        eprintln!(
            "{} is not built (cargo test builds it): no no-op row",
            echo.display()
        );
    }
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("instantiate-bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut options = RuntimeOptions::new(&data);
        options.audit = false;
        if let Some(pool) = pool {
            options.config.pool = pool;
        }
        options.config.pool.prewarm = prewarm;
        let runtime = Runtime::new(options).unwrap();
        // A first load compiles and fills the cache; the timed load below reads it.
        let mut cold = Vec::new();
        let mut registry = Registry::default();
        for dir in &dirs {
            let started = Instant::now();
            let reg = Registry::load_dir(&runtime, dir).await.unwrap();
            cold.push((dir.clone(), started.elapsed()));
            assert!(reg.failures().is_empty(), "{:#?}", reg.failures());
            for p in reg.plugins() {
                registry = registry.with(p.clone());
            }
        }
        println!("| action | load (warm cache) | instantiate p50 | p99 | mean | teardown p50 | mean | fresh instance + first call p50 | p99 | mean |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let mut cases: Vec<(&str, Value, Arc<MockResponse>)> = support::examples()
            .into_iter()
            .map(|e| (e.name, e.inputs, support::mock(e.status, e.body)))
            .collect();
        // No request: the recorded response is never asked for.
        cases.push(("echo", json!({"message": "ok"}), support::mock(200, json!(null))));
        for (name, inputs, response) in cases {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let Some(plugin) = registry.get(name) else {
                assert_eq!(name, "echo", "{name} is loaded");
                continue;
            };
            let manifest = plugin.manifest().path.clone();
            // The median of 21 loads from the warm cache (one sample is too noisy here).
            let mut loads = Vec::with_capacity(21);
            for _ in 0..21 {
                let started = Instant::now();
                runtime.load(&manifest).await.unwrap();
                loads.push(started.elapsed());
            }
            let warm_load = percentile(&mut loads, 0.5);
            let call = Call {
                inputs: inputs.as_object().unwrap().clone(),
                mock: Some(response),
                ..Call::default()
            };
            for _ in 0..50 {
                plugin.instantiate_probe().await.unwrap();
                assert!(plugin.invoke_once(call.clone()).await.result.is_ok());
            }
            let (mut inst, mut teardown) = (Vec::with_capacity(iterations), Vec::new());
            for _ in 0..iterations {
                let (made, dropped) = plugin.instantiate_probe().await.unwrap();
                inst.push(made);
                teardown.push(dropped);
            }
            let mut calls = Vec::with_capacity(iterations);
            for _ in 0..if skip_calls { 1 } else { iterations } {
                let t = Instant::now();
                let r = plugin.invoke_once(call.clone()).await;
                calls.push(t.elapsed());
                assert!(r.result.is_ok(), "{name}: {:?}", r.result);
                support::pause_between_calls();
            }
            println!(
                "| {name} | {warm_load:.2?} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {:.2?} |",
                percentile(&mut inst, 0.5),
                percentile(&mut inst, 0.99),
                mean(&inst),
                percentile(&mut teardown, 0.5),
                mean(&teardown),
                percentile(&mut calls, 0.5),
                percentile(&mut calls, 0.99),
                mean(&calls),
            );
        }
        for (dir, t) in cold {
            println!(
                "first load of {} in this run (compiles when the cache is cold): {t:.2?}",
                dir.display()
            );
        }
    });
}
