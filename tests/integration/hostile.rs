//! Hostile plugins are contained, and the next call of a good action succeeds.

use std::time::Instant;

use callout::{Failure, Plugin};
use serde_json::{Value, json};

use crate::support::*;

async fn setup(
    limits: &str,
) -> (
    callout::Registry,
    callout::Runtime,
    tempfile::TempDir,
    Actions,
) {
    let actions = Actions::new();
    actions.add("echo", "name = \"echo\"\ncomponent = \"{echo}\"\n");
    actions.add(
        "hostile",
        &format!("name = \"hostile\"\ncomponent = \"{{hostile}}\"\n[limits]\n{limits}"),
    );
    let (rt, data) = runtime();
    let reg = load_all(&rt, &actions).await;
    (reg, rt, data, actions)
}

async fn good_call_still_works(echo: &Plugin) {
    let r = call(echo, json!({"message": "after"})).await;
    assert_eq!(
        r.result.expect("the next good call succeeds").data["message"],
        "after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_is_stopped_by_the_deadline_even_after_its_runtime_is_dropped() {
    // An embedder may keep its loaded actions and drop the `Runtime` that loaded them: their
    // calls must still be stopped at the deadline (the epoch ticker lives as long as the
    // engine, not as long as the `Runtime`).
    let (reg, rt, _d, _a) = setup("deadline_ms = 300\n").await;
    drop(rt);
    let hostile = reg.get("hostile").unwrap();
    let call = tokio::spawn(async move { call(&hostile, json!({"mode": "loop"})).await });
    let r = tokio::time::timeout(std::time::Duration::from_secs(20), call)
        .await
        .expect("the loop was not stopped: nothing advanced the epoch")
        .unwrap();
    assert_eq!(
        r.result.unwrap_err(),
        Failure::Deadline { deadline_ms: 300 }
    );
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_the_deadline() {
    let (reg, _rt, _d, _a) = setup("deadline_ms = 300\n").await;
    let hostile = reg.get("hostile").unwrap();
    let started = Instant::now();
    let r = call(&hostile, json!({"mode": "loop"})).await;
    assert_eq!(
        r.result.unwrap_err(),
        Failure::Deadline { deadline_ms: 300 }
    );
    // Not a timing assertion on speed, only that the loop did not run on unbounded.
    assert!(
        started.elapsed().as_secs() < 5,
        "stopped after {:?}",
        started.elapsed()
    );
    // The same action works again right after: the trapped store was thrown away.
    let ok = call(&hostile, json!({"mode": "ok"})).await;
    assert_eq!(ok.result.unwrap().data["ok"], true);
    good_call_still_works(&reg.get("echo").unwrap()).await;
}

#[tokio::test]
async fn memory_bomb_fails_exactly_at_its_memory_mb() {
    // 48 MiB is far below the pool's largest memory (128 MiB in tests): the action's own limit
    // is what stops it.
    let (reg, _rt, _d, _a) = setup("memory_mb = 48\n").await;
    let hostile = reg.get("hostile").unwrap();
    let under = call(&hostile, json!({"mode": "alloc", "mb": 40})).await;
    assert_eq!(
        under.result.expect("40 MiB fits in 48").data["allocated_mb"],
        40
    );
    let over = call(&hostile, json!({"mode": "alloc", "mb": 56})).await;
    assert_eq!(
        over.result.unwrap_err(),
        Failure::MemoryLimit { limit_mb: 48 }
    );
    good_call_still_works(&reg.get("echo").unwrap()).await;
    // A larger limit admits the same allocation: the limit is per action, not the pool's.
    let (reg, _rt, _d, _a) = setup("memory_mb = 64\n").await;
    let r = call(
        &reg.get("hostile").unwrap(),
        json!({"mode": "alloc", "mb": 56}),
    )
    .await;
    assert_eq!(
        r.result.expect("56 MiB fits in 64").data["allocated_mb"],
        56
    );
}

#[tokio::test]
async fn trap_and_panic_are_contained() {
    let (reg, _rt, _d, _a) = setup("").await;
    let hostile = reg.get("hostile").unwrap();
    match call(&hostile, json!({"mode": "trap"}))
        .await
        .result
        .unwrap_err()
    {
        Failure::Trap { message } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    match call(&hostile, json!({"mode": "panic"}))
        .await
        .result
        .unwrap_err()
    {
        Failure::Trap { message } => assert!(
            message.contains("hostile plugin panicked on purpose"),
            "{message}"
        ),
        other => panic!("expected a trap, got {other:?}"),
    }
    good_call_still_works(&reg.get("echo").unwrap()).await;
}

#[tokio::test]
async fn stdout_and_stderr_floods_are_capped() {
    let (reg, _rt, _d, _a) = setup("output_kb = 16\n").await;
    let hostile = reg.get("hostile").unwrap();
    let sixteen_mib = 16u64 << 20;
    let r = call(&hostile, json!({"mode": "flood"})).await;
    assert_eq!(
        r.result.expect("a flood is not a failure").data["flooded_mb"],
        16
    );
    assert_eq!(r.output.stdout_kept, 16 << 10);
    assert_eq!(r.output.stdout_dropped, sixteen_mib - (16 << 10));
    let r = call(&hostile, json!({"mode": "stderr-flood"})).await;
    assert!(r.result.is_ok());
    assert_eq!(r.output.stderr_kept, 16 << 10);
    assert_eq!(r.output.stderr_dropped, sixteen_mib - (16 << 10));
    let r = call(&hostile, json!({"mode": "log-flood"})).await;
    assert!(r.result.is_ok());
    assert!(
        r.output.log_dropped > 90 << 20,
        "log dropped {}",
        r.output.log_dropped
    );
    good_call_still_works(&reg.get("echo").unwrap()).await;
}

#[tokio::test]
async fn state_in_a_global_does_not_survive_into_the_next_call() {
    let (reg, _rt, _d, _a) = setup("").await;
    let echo = reg.get("echo").unwrap();
    for _ in 0..3 {
        let r = call(&echo, json!({"message": "count me"}))
            .await
            .result
            .unwrap();
        assert_eq!(
            r.data["calls_in_this_instance"], 1,
            "each call gets a fresh instance"
        );
    }
}

#[tokio::test]
async fn concurrent_calls_are_isolated_and_a_looping_one_does_not_block_others() {
    let (reg, _rt, _d, _a) = setup("deadline_ms = 1000\n").await;
    let hostile = reg.get("hostile").unwrap();
    let echo = reg.get("echo").unwrap();
    let looping = tokio::spawn({
        let h = hostile.clone();
        async move { call(&h, json!({"mode": "loop"})).await }
    });
    let mut good = Vec::new();
    for i in 0..8 {
        let e = echo.clone();
        good.push(tokio::spawn(async move {
            call(&e, json!({"message": format!("m{i}")})).await
        }));
    }
    for (i, g) in good.into_iter().enumerate() {
        let out = g.await.unwrap().result.unwrap();
        assert_eq!(out.data["message"], format!("m{i}"));
        assert_eq!(out.data["calls_in_this_instance"], 1);
    }
    assert!(matches!(
        looping.await.unwrap().result,
        Err(Failure::Deadline { .. })
    ));
}

/// A call of conversation `conversation` (none: a plain tool call).
async fn in_conversation(
    plugin: &Plugin,
    conversation: Option<&str>,
    inputs: Value,
) -> callout::CallReport {
    let mut c = callout::Call::tool(obj(inputs));
    c.conversation_id = conversation.map(String::from);
    plugin.invoke(c).await
}

#[tokio::test]
async fn reuse_keeps_one_instance_per_conversation_and_never_shares_it() {
    let actions = Actions::new();
    actions.add(
        "echo",
        "name = \"echo\"\ncomponent = \"{echo}\"\n[limits]\nreuse = \"conversation\"\n",
    );
    actions.add(
        "hostile",
        "name = \"hostile\"\ncomponent = \"{hostile}\"\n[limits]\nreuse = \"conversation\"\ndeadline_ms = 500\nmemory_mb = 16\n",
    );
    let (rt, _data) = runtime();
    let reg = load_all(&rt, &actions).await;
    let echo = reg.get("echo").unwrap();
    let count = |r: callout::CallReport| r.result.unwrap().data["calls_in_this_instance"].clone();
    for want in 1..=3 {
        let r = in_conversation(&echo, Some("conv-a"), json!({"message": "a"})).await;
        assert_eq!(count(r), want, "conv-a's calls share its instance");
    }
    let r = in_conversation(&echo, Some("conv-b"), json!({"message": "b"})).await;
    assert_eq!(count(r), 1, "another conversation gets its own instance");
    for _ in 0..2 {
        let r = in_conversation(&echo, None, json!({"message": "tool"})).await;
        assert_eq!(count(r), 1, "a call without a conversation is never reused");
    }
    let r = in_conversation(&echo, Some("conv-a"), json!({"message": "a"})).await;
    assert_eq!(count(r), 4);
    // An error the plugin returns keeps the instance; the call's own records start empty.
    let r = in_conversation(&echo, Some("conv-a"), json!({"message": "fail-validation"})).await;
    assert!(matches!(
        r.result,
        Err(Failure::InvalidInput { .. } | Failure::NeedsInput { .. })
    ));
    let r = in_conversation(&echo, Some("conv-a"), json!({"message": "a"})).await;
    assert_eq!(r.idempotency_key.len(), 32);
    assert_eq!(count(r), 6);

    // A trap, a deadline or a memory limit drops the instance: the next call of that
    // conversation runs in a fresh one (a trapped component instance cannot be entered again).
    let hostile = reg.get("hostile").unwrap();
    for bad in [
        json!({"mode": "trap"}),
        json!({"mode": "loop"}),
        json!({"mode": "alloc", "mb": 64}),
    ] {
        let r = in_conversation(&hostile, Some("conv-h"), json!({"mode": "ok"})).await;
        assert_eq!(r.result.unwrap().data["ok"], true);
        let r = in_conversation(&hostile, Some("conv-h"), bad.clone()).await;
        assert!(r.result.is_err(), "{bad}");
        let r = in_conversation(&hostile, Some("conv-h"), json!({"mode": "ok"})).await;
        assert_eq!(r.result.unwrap().data["ok"], true, "after {bad}");
    }
}
