//! The enqueue benchmark: how many chat-end deliveries per second the outbox accepts, each
//! caller waiting for its commit, as a bench binary or `callout` subcommand reports it.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::{Durability, NewDelivery, OutboxError, OutboxStore, SqliteOutbox, WriterStats};

/// What [`bench_enqueue`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// The durability used.
    pub durability: Durability,
    /// Deliveries enqueued (and committed).
    pub total: usize,
    /// Concurrent producer threads.
    pub producers: usize,
    /// The serialized size of each payload, in bytes.
    pub payload_bytes: usize,
    /// Wall time from the first enqueue to the last commit.
    pub elapsed: Duration,
    /// Committed deliveries per second.
    pub per_sec: f64,
    /// Median time from a call to its committed result.
    pub p50: Duration,
    /// 99th percentile of the same.
    pub p99: Duration,
    /// The writer's batches during the run (committed transactions, their sizes).
    pub writer: WriterStats,
}

/// Opens (or creates) the outbox at `db_path` with `durability` and enqueues `total`
/// deliveries of about 1 KB (a chat-end: inputs, variables, a 10-line transcript), one per
/// call, from `producers` threads (0 is taken as 1) that each wait for their commit before the
/// next call. Use a fresh file on the disk to be measured; the rows are left in it.
///
/// # Errors
/// When the outbox cannot be opened or an enqueue fails.
pub fn bench_enqueue(
    db_path: &Path,
    durability: Durability,
    total: usize,
    producers: usize,
) -> Result<BenchResult, OutboxError> {
    let producers = producers.max(1);
    let store = Arc::new(SqliteOutbox::open(db_path, durability)?);
    let payload = sample_payload();
    let payload_bytes = serde_json::to_string(&payload).map_or(0, |s| s.len());
    let before = store.stats();
    let start_line = Arc::new(Barrier::new(producers + 1));
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            // An even share, the first ones taking the remainder.
            let n = total / producers + usize::from(p < total % producers);
            let store = Arc::clone(&store);
            let payload = payload.clone();
            let start_line = Arc::clone(&start_line);
            std::thread::spawn(move || -> Result<Vec<Duration>, OutboxError> {
                let mut latencies = Vec::with_capacity(n);
                start_line.wait();
                for i in 0..n {
                    let t = Instant::now();
                    store
                        .enqueue(vec![NewDelivery {
                            action: "lead-capture".into(),
                            conversation_id: Some(format!("bench-{p}-{i}")),
                            payload: payload.clone(),
                        }])
                        .wait()?;
                    latencies.push(t.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    start_line.wait();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(total);
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => {
                first_err = first_err.or(Some(OutboxError::Panicked("a bench producer".into())));
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = first_err {
        return Err(e);
    }
    let after = store.stats();
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(BenchResult {
        durability,
        total,
        producers,
        payload_bytes,
        elapsed,
        per_sec: total as f64 / elapsed.as_secs_f64().max(1e-9),
        p50: pct(50),
        p99: pct(99),
        writer: WriterStats {
            batches: after.batches - before.batches,
            writes: after.writes - before.writes,
            largest_batch: after.largest_batch,
        },
    })
}

/// A chat-end payload of about 1 KB.
fn sample_payload() -> Value {
    let lines = [
        (
            "user",
            "Hi, I'd like a quote for 40 seats of the team plan.",
        ),
        ("agent", "Happy to help! Which company is this for?"),
        ("user", "Acme Logistics, we're based in Rotterdam."),
        (
            "agent",
            "Thanks. What's the best email to send the quote to?",
        ),
        ("user", "ada.lovelace@acme-logistics.example"),
        ("agent", "Got it. Do you need SSO and audit logs?"),
        ("user", "Yes, SSO is a must. Audit logs would be nice."),
        ("agent", "Both are in the enterprise tier; I'll include it."),
        ("user", "Great, and a phone number: +31 10 123 4567."),
        ("agent", "Perfect, a colleague will follow up within a day."),
    ];
    let transcript: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, (role, text))| {
            let at_ms = 1_700_000_000_000u64 + i as u64 * 15_000;
            json!({"role": role, "text": text, "at_ms": at_ms})
        })
        .collect();
    json!({
        "inputs": {
            "name": "Ada Lovelace",
            "email": "ada.lovelace@acme-logistics.example",
            "company": "Acme Logistics",
            "phone": "+31 10 123 4567",
            "seats": 40
        },
        "variables": {"plan": "enterprise", "sso": true, "locale": "nl-NL"},
        "transcript": transcript
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_enqueues_everything_and_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bench.db");
        let r = bench_enqueue(&db, Durability::Normal, 203, 4).unwrap();
        assert_eq!(r.total, 203);
        assert_eq!(r.writer.writes, 203);
        assert!(r.writer.batches >= 1 && r.writer.batches <= 203, "{r:?}");
        assert!(r.per_sec > 0.0 && r.p50 <= r.p99, "{r:?}");
        assert!(
            (900..=1300).contains(&r.payload_bytes),
            "{}",
            r.payload_bytes
        );
        let store = SqliteOutbox::open(&db, Durability::Normal).unwrap();
        assert_eq!(store.counts().unwrap().pending, 203);
    }
}
