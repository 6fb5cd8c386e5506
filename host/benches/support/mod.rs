//! Set-up shared by the benches (`#[path = "support/mod.rs"] mod support;` in each): the example
//! actions with one call each, recorded answers, and manifest copies.

// Each bench uses a part of this module.
#![allow(dead_code)]

/// With `--features mimalloc`, the allocator the `callout` binary then uses (src/main.rs).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::sync::Arc;

use callout::call::MockResponse;
use serde_json::{Value, json};

/// One example action of `plugins/` and a call of it.
pub struct Example {
    /// Its folder, from the repository's root.
    pub folder: &'static str,
    /// Its name.
    pub name: &'static str,
    /// A valid call's inputs.
    pub inputs: Value,
    /// The status its one request is answered with when recorded.
    pub status: u16,
    /// The JSON body of that answer.
    pub body: Value,
}

/// The five example actions (Rust, Python and JavaScript), each with a call that succeeds.
pub fn examples() -> Vec<Example> {
    let member = json!({"member_id": "M-1001", "date_of_birth": "1990-04-12"});
    let member_found = json!({"member_id": "M-1001", "status": "active", "plan": "gold",
        "valid_until": "2027-01-31", "expired_on": null});
    let lead = json!({"name": "Ada", "email": "ada@example.com"});
    let lead_created = json!({"id": "lead_1", "created_at": "2026-11-27T00:00:00Z"});
    let example = |folder, name, inputs: &Value, status, body: &Value| Example {
        folder,
        name,
        inputs: inputs.clone(),
        status,
        body: body.clone(),
    };
    vec![
        example(
            "plugins/order-status",
            "order-status",
            &json!({"order_id": "123456"}),
            200,
            &json!({"order_id": "123456", "status": "shipped", "carrier": "UPS",
                "tracking_number": "1Z", "items": [], "eta": "2026-12-02"}),
        ),
        example(
            "plugins/membership-verify",
            "membership-verify",
            &member,
            200,
            &member_found,
        ),
        example(
            "plugins/python/membership-verify",
            "membership-verify-py",
            &member,
            200,
            &member_found,
        ),
        example("plugins/crm-lead", "crm-lead", &lead, 201, &lead_created),
        example(
            "plugins/js/crm-lead",
            "crm-lead-js",
            &lead,
            201,
            &lead_created,
        ),
    ]
}

/// A recorded JSON answer.
pub fn mock(status: u16, body: Value) -> Arc<MockResponse> {
    Arc::new(MockResponse {
        status,
        headers: [("content-type".to_string(), "application/json".to_string())]
            .into_iter()
            .collect(),
        body: Some(body),
        failure: None,
    })
}

/// The manifest of the action in `folder`, its component's path made absolute (so a copy
/// loads from anywhere), with `[limits] reuse = "conversation"` when `reuse`.
pub fn manifest_copy(folder: &Path, reuse: bool) -> toml::Table {
    let text = std::fs::read_to_string(folder.join("action.toml")).unwrap();
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    let component = folder
        .join(table["component"].as_str().unwrap())
        .canonicalize()
        .unwrap();
    table.insert("component".into(), component.display().to_string().into());
    if reuse {
        table
            .entry("limits")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap()
            .insert("reuse".into(), "conversation".into());
    }
    table
}

/// The CPU time this process's threads have run so far (the sum of
/// `/proc/self/task/*/schedstat`'s first field, nanosecond precision). Threads that exit take
/// theirs with them, so compare two readings only over a span in which no thread exits (tokio's
/// workers and the audit writer live for the whole run).
pub fn cpu_time() -> std::time::Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    std::time::Duration::from_nanos(ns)
}

/// Waits 1 ms after a timed call, as between a conversation's calls (seconds, in fact), so the
/// background thread's teardown and the next spare instance are done before the next call.
/// Spins instead of sleeping, so the CPU stays as warm as in back-to-back calls (a sleep lets
/// it go idle, which slows whatever runs next, the native request and the action alike).
pub fn pause_between_calls() {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_millis(1) {
        std::hint::spin_loop();
    }
}
