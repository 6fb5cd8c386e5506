//! The chat-end enqueue rate of the outbox with durable commits: `cargo bench --bench
//! outbox_enqueue [-- <deliveries>]`.
//!
//! For each durability (synchronous=NORMAL and FULL) and 1, 16 and 64 concurrent producers,
//! a fresh database in the target directory receives `deliveries` (default 20 000) chat-end
//! deliveries of about 1 KB each; every producer waits for its commit before the next
//! enqueue, as a request ending a conversation does. Prints one Markdown table row per case
//! (docs/outbox.md records them).

use callout::outbox::Durability;
use callout::outbox::bench::bench_enqueue;

fn main() {
    // Benches measure; a captured backtrace per error would be noise (see DEVELOPERS.md).
    // SAFETY: single-threaded at this point, before any other thread starts.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let total: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::Builder::new()
        .prefix("outbox-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a temporary directory in the target dir");
    println!("| durability | producers | enqueues/s | p50 | p99 | mean batch |");
    println!("|---|---|---|---|---|---|");
    for durability in [Durability::Normal, Durability::Full] {
        for producers in [1, 16, 64] {
            let db = dir
                .path()
                .join(format!("{durability:?}-{producers}.db").to_lowercase());
            let r = bench_enqueue(&db, durability, total, producers).expect("the bench runs");
            let mean_batch = r.writer.writes as f64 / r.writer.batches.max(1) as f64;
            println!(
                "| {durability:?} | {producers} | {:.0} | {:?} | {:?} | {mean_batch:.1} |",
                r.per_sec, r.p50, r.p99
            );
        }
    }
}
