//! Memory: the resident set (RSS) a loaded action costs, and what one call's instance costs
//! while it lives: `cargo bench -p callout --bench memory`.
//!
//! - **Per loaded action**: `N` (default 50) copies of each example action are loaded from a
//!   warm compile cache (distinct names, one component file); the RSS growth divided by `N`.
//!   Copies of one component share its compiled code (one mapping of the cached artifact), as
//!   versions of one action do; what each copy adds is its own metadata, `InstancePre`,
//!   descriptor and schemas.
//! - **Per live instance**: `K` calls of one action are made in `K` different conversations
//!   with `[limits] reuse = "conversation"`, so each call's instance stays alive afterwards,
//!   as an in-flight call's would; the RSS growth divided by `K`. The call's one request is
//!   answered by a recorded response (no network).
//! - **Loading the N**: the wall time of loading those `N` copies from the warm cache, the
//!   start-up cost of `N` actions.
//!
//! RSS is read from `/proc/self/statm` (Linux), and split into its private part (anonymous
//! pages: what the process alone costs) and its file-backed part (pages of mapped files, such
//! as a component's compiled code and memory image: page cache, shared with every other mapping
//! of the same file). Build the example actions first
//! (`./dev plugins`). `cargo bench -p callout --bench memory -- [N] [K]`.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use callout::{Call, Registry, Runtime, RuntimeOptions};

/// Resident bytes, and of them the private (anonymous) ones: `/proc/self/statm`'s resident
/// and shared (file-backed) page counts.
fn rss_bytes() -> (i64, i64) {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (Linux)");
    let field = |i: usize| -> i64 { statm.split_whitespace().nth(i).unwrap().parse().unwrap() };
    let (resident, shared) = (field(1), field(2));
    (resident * 4096, (resident - shared) * 4096)
}

/// The growth since `before`, divided by `n`: "RSS (private)".
fn per(before: (i64, i64), n: usize) -> String {
    let now = rss_bytes();
    let mib = |b: i64| b as f64 / n as f64 / (1 << 20) as f64;
    format!(
        "{:.2} MiB ({:.2})",
        mib(now.0 - before.0),
        mib(now.1 - before.1)
    )
}

/// `n` copies of the action in `folder` under `to`, named `<name>-copy-<i>`, with `reuse`
/// set as asked and the component's path made absolute.
fn copies(folder: &Path, to: &Path, n: usize, reuse: bool) -> PathBuf {
    let base = support::manifest_copy(folder, reuse);
    let name = base["name"].as_str().unwrap().to_string();
    let dir = to.join(format!("{name}-{}", if reuse { "reuse" } else { "copies" }));
    for i in 0..n {
        let mut t = base.clone();
        t.insert("name".into(), format!("{name}-copy-{i}").into());
        let d = dir.join(format!("{name}-copy-{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("action.toml"), toml::to_string(&t).unwrap()).unwrap();
    }
    dir
}

fn main() {
    // SAFETY: single-threaded at this point, before any other thread starts.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(50);
    let k = args.get(1).copied().unwrap_or(50);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("memory-bench");
    let work = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut options = RuntimeOptions::new(&data);
        options.audit = false;
        let runtime = Runtime::new(options).unwrap();
        println!("| action | RSS (private) per loaded action (N = {n}) | RSS (private) per live instance (K = {k}) | loading the {n} (warm cache) |");
        println!("|---|---|---|---|");
        for support::Example { folder, name, inputs, status, body } in support::examples() {
            let folder = repo.join(folder);
            // Warm the compile cache (and the code mapping) with one load first.
            runtime.load(&folder.join("action.toml")).await.unwrap();
            let dir = copies(&folder, work.path(), n, false);
            let before = rss_bytes();
            let started = std::time::Instant::now();
            let reg = Registry::load_dir(&runtime, &dir).await.unwrap();
            let load_all = started.elapsed();
            assert!(reg.failures().is_empty(), "{:#?}", reg.failures());
            let per_action = per(before, n);
            drop(reg);

            let dir = copies(&folder, work.path(), 1, true);
            let reg = Registry::load_dir(&runtime, &dir).await.unwrap();
            let plugin = reg.plugins().next().unwrap().clone();
            let response = support::mock(status, body);
            let call = |i: usize| Call {
                inputs: inputs.as_object().unwrap().clone(),
                mock: Some(response.clone()),
                conversation_id: Some(format!("memory-{i}")),
                ..Call::default()
            };
            // One call first, so lazily built host state is not counted.
            assert!(plugin.invoke_once(call(usize::MAX)).await.result.is_ok());
            let before = rss_bytes();
            for i in 0..k {
                let r = plugin.invoke_once(call(i)).await;
                assert!(r.result.is_ok(), "{name}: {:?}", r.result);
            }
            let per_instance = per(before, k);
            println!("| {name} | {per_action} | {per_instance} | {load_all:.1?} |");
            drop(plugin);
            drop(reg);
        }
    });
}
