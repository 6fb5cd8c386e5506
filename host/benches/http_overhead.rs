//! An action call against the same HTTP request made natively, side by side in one run:
//! `cargo bench -p callout --bench http_overhead -- [calls]`.
//!
//! The upstream is the demo back end on a loopback keep-alive port. Each action makes one
//! request and parses the answer; the native baseline is a `reqwest` client in the same
//! process sending the same request (same headers and body) and parsing the answer as JSON.
//! The host runs as in production: the audit log on (SQLite in a temporary data dir), the
//! network guard and secret filling on, a fresh instance per call.
//!
//! - **Concurrency 1**: `calls` (default 2 000) sequential calls each, native and action
//!   alternating, with a 1 ms pause (spinning) after each action call; the added latency is
//!   the difference of the medians.
//! - **Concurrency 16**: 16 tasks share `calls * 4` calls; the throughput ratio is action calls
//!   per second over native requests per second.
//!
//! Build the example actions first (`./dev plugins`). A second argument measures one action
//! only (for profiling it).
//!
//! `--action-only` leaves out the native requests and the calls at concurrency 1 (one each), so
//! that `perf record` of the run profiles the action's calls at concurrency 16.
//!
//! `--rounds N` measures the c=16 pair (native requests, then the action's calls) N times,
//! alternating, prints each round's ratio on stderr, and reports the round with the median
//! ratio (the upper middle one for an even N; use an odd N): on a noisy machine the ratio of one
//! pair can move by a fifth.
//!
//! `--no-prewarm` loads the actions with `[pool] prewarm = false` (every call instantiates on
//! its own path and drops its instance itself).
//!
//! `--reuse` measures the opt-in instance reuse instead (`[limits] reuse = "conversation"`):
//! the actions are loaded with it set, and every call carries a conversation id, one per task
//! (16 conversations at concurrency 16, one at concurrency 1).
//!
//! With `--features phase-timers` it also prints, on stderr, the mean time per call of each
//! phase of the action's calls at concurrency 1 (`callout::phases`).

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callout::demo::backend::{DemoBackend, new_token};
use callout::{Call, HostConfig, Registry, Runtime, RuntimeOptions, Secrets};
use serde_json::{Value, json};

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

struct Case {
    action: &'static str,
    method: reqwest::Method,
    path: &'static str,
    inputs: Value,
    body: Option<Value>,
}

async fn native(client: &reqwest::Client, base: &str, token: &str, case: &Case) {
    let mut req = client
        .request(case.method.clone(), format!("{base}{}", case.path))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/json");
    if let Some(b) = &case.body {
        req = req
            .header("content-type", "application/json")
            .header("idempotency-key", "bench-key")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("native request");
    assert!(resp.status().is_success());
    let bytes = resp.bytes().await.expect("native body");
    let _: Value = serde_json::from_slice(&bytes).expect("native json");
}

fn main() {
    // SAFETY: single-threaded at this point, before any other thread starts.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    // The positional arguments: neither a flag nor the value after `--rounds`.
    let all: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with('-') && (*i == 0 || all[i - 1] != "--rounds"))
        .map(|(_, a)| a.clone())
        .collect();
    let calls: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let only: Option<String> = args.get(1).cloned();
    let reuse = std::env::args().any(|a| a == "--reuse");
    // `--action-only`: one call at concurrency 1 and one native request per task, so a
    // profile of the run is the action's calls at concurrency 16 (and the loading).
    let action_only = std::env::args().any(|a| a == "--action-only");
    // `--rounds N`: the c=16 pair (native, then action) N times, alternating.
    let rounds: usize = all
        .iter()
        .skip_while(|a| *a != "--rounds")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let backend = DemoBackend::start(SocketAddr::from(([127, 0, 0, 1], 0)), new_token())
            .await
            .unwrap();
        let base = backend.url();
        let token = backend.token().to_string();
        let names = ["order-status", "membership-verify", "membership-verify-py", "crm-lead", "crm-lead-js"];
        let mut config = HostConfig::parse(
            &names
                .iter()
                .map(|n| format!("[actions.{n}.config]\nbase_url = \"{base}\"\n"))
                .collect::<String>(),
        )
        .unwrap();
        config.pool = HostConfig::default().pool;
        config.pool.prewarm = !std::env::args().any(|a| a == "--no-prewarm");
        let mut secrets = Secrets::default();
        for var in callout::demo::TOKEN_VARIABLES {
            secrets.insert(var, &token);
        }
        let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http-overhead-bench");
        let _ = std::fs::remove_file(data.join(callout::audit::DB_FILE));
        let mut options = RuntimeOptions::new(&data);
        options.config = config;
        options.dev_loopback = vec![backend.addr.to_string()];
        options.secrets = secrets;
        let runtime = Runtime::new(options).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut registry = Registry::default();
        let copies = tempfile::tempdir().unwrap();
        for dir in ["plugins", "plugins/python", "plugins/js"] {
            let dir = if reuse {
                with_reuse(&repo.join(dir), &copies.path().join(dir.replace('/', "-")))
            } else {
                repo.join(dir)
            };
            let reg = Registry::load_dir(&runtime, &dir).await.unwrap();
            assert!(reg.failures().is_empty(), "{:#?}", reg.failures());
            for p in reg.plugins() {
                registry = registry.with(p.clone());
            }
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(32)
            .build()
            .unwrap();
        let member = json!({"member_id": "M-1001", "date_of_birth": "1990-04-12"});
        let lead = json!({"name": "Ada", "email": "ada@example.com"});
        let cases = [
            Case { action: "order-status", method: reqwest::Method::GET, path: "/orders/123456",
                   inputs: json!({"order_id": "123456"}), body: None },
            Case { action: "membership-verify", method: reqwest::Method::POST, path: "/memberships/verify",
                   inputs: member.clone(), body: Some(member.clone()) },
            Case { action: "membership-verify-py", method: reqwest::Method::POST, path: "/memberships/verify",
                   inputs: member.clone(), body: Some(member.clone()) },
            Case { action: "crm-lead", method: reqwest::Method::POST, path: "/crm/leads",
                   inputs: lead.clone(), body: Some(lead.clone()) },
            Case { action: "crm-lead-js", method: reqwest::Method::POST, path: "/crm/leads",
                   inputs: lead.clone(), body: Some(lead.clone()) },
        ];
        let mode = if reuse { "reused per conversation" } else { "fresh per call" };
        println!("| action | instance | native p50 (c=1) | action p50 (c=1) | added latency | native req/s (c=16) | action calls/s (c=16) | ratio | CPU per native request (c=16) | CPU per action call (c=16) |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for case in &cases {
            if only.as_deref().is_some_and(|o| o != case.action) {
                continue;
            }
            let plugin = registry.get(case.action).unwrap();
            let call = Call {
                inputs: case.inputs.as_object().unwrap().clone(),
                idempotency_key: Some("bench-key".into()),
                conversation_id: reuse.then(|| "bench-conversation".to_string()),
                ..Call::default()
            };
            for _ in 0..100 {
                native(&client, &base, &token, case).await;
                assert!(plugin.invoke_once(call.clone()).await.result.is_ok());
            }
            let _ = callout::phases::take_means(1);
            let mut n = Vec::with_capacity(calls);
            let mut a = Vec::with_capacity(calls);
            for _ in 0..if action_only { 1 } else { calls } {
                let t = Instant::now();
                native(&client, &base, &token, case).await;
                n.push(t.elapsed());
                let t = Instant::now();
                let r = plugin.invoke_once(call.clone()).await;
                a.push(t.elapsed());
                assert!(r.result.is_ok(), "{}: {:?}", case.action, r.result);
                support::pause_between_calls();
            }
            // With `--features phase-timers`: where the action's calls at c=1 spent their time.
            for (phase, mean) in callout::phases::take_means(calls as u64) {
                eprintln!("{}: {} mean per call: {mean:.1?}", case.action, phase.name());
            }
            let (nm, am) = (median(&mut n), median(&mut a));
            let total = calls * 4;
            // Each round measures the native requests, then the action's calls, at c=16; with
            // `--rounds N` the pairs alternate N times and the medians are reported.
            let mut measured = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let native_round = at_c16(total, |_| {
                    let client = client.clone();
                    let base = base.clone();
                    let token = token.clone();
                    let case = Case { action: case.action, method: case.method.clone(), path: case.path,
                                      inputs: case.inputs.clone(), body: case.body.clone() };
                    tokio::spawn(async move {
                        for _ in 0..if action_only { 1 } else { total / 16 } {
                            native(&client, &base, &token, &case).await;
                        }
                    })
                })
                .await;
                let action_round = at_c16(total, |i| {
                    let plugin = Arc::clone(&plugin);
                    let mut call = call.clone();
                    if reuse {
                        call.conversation_id = Some(format!("bench-conversation-{i}"));
                    }
                    tokio::spawn(async move {
                        for _ in 0..total / 16 {
                            assert!(plugin.invoke_once(call.clone()).await.result.is_ok());
                        }
                    })
                })
                .await;
                measured.push((native_round, action_round));
            }
            if rounds > 1 {
                let ratios: Vec<String> = measured
                    .iter()
                    .map(|((n, _), (a, _))| format!("{:.2}", a / n))
                    .collect();
                eprintln!("{}: ratio per round at c=16: {}", case.action, ratios.join(" "));
            }
            // The round whose ratio is the median (the other columns are that round's).
            measured.sort_by(|((n1, _), (a1, _)), ((n2, _), (a2, _))| (a1 / n1).total_cmp(&(a2 / n2)));
            let ((native_rate, native_cpu), (action_rate, action_cpu)) = measured[measured.len() / 2];
            println!(
                "| {} | {mode} | {nm:.1?} | {am:.1?} | {:.1?} | {native_rate:.0} | {action_rate:.0} | {:.2} | {native_cpu:.1?} | {action_cpu:.1?} |",
                case.action,
                am.saturating_sub(nm),
                action_rate / native_rate
            );
        }
    });
}

/// Runs the 16 tasks `task(0..16)` to their end; returns `total` over the wall time (calls or
/// requests per second) and the CPU of all the process's threads per call.
async fn at_c16(
    total: usize,
    task: impl FnMut(usize) -> tokio::task::JoinHandle<()>,
) -> (f64, Duration) {
    let cpu = support::cpu_time();
    let t = Instant::now();
    let tasks: Vec<_> = (0..16).map(task).collect();
    for task in tasks {
        task.await.unwrap();
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    (rate, (support::cpu_time() - cpu) / total as u32)
}

/// Copies the actions of `from` into `to` with `[limits] reuse = "conversation"` and their
/// components' paths made absolute; returns `to`.
fn with_reuse(from: &Path, to: &Path) -> std::path::PathBuf {
    for folder in callout::registry::action_folders(from).unwrap() {
        let table = support::manifest_copy(&folder, true);
        let dest = to.join(folder.file_name().unwrap());
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("action.toml"), toml::to_string(&table).unwrap()).unwrap();
    }
    to.to_path_buf()
}
