//! The example actions in plugins/ against the real demo back end on loopback, and
//! `callout demo` run as a process.

use std::net::SocketAddr;
use std::process::Command;

use callout::call::UpstreamKind;
use callout::demo::backend::{Api, DemoBackend, Mode, new_token};
use callout::{Call, Failure, HostConfig, Registry, Runtime, RuntimeOptions, Secrets};
use serde_json::{Value, json};

use crate::support::*;

/// A runtime wired to a fresh demo back end the documented way (config overrides,
/// dev-loopback, secrets), with the example actions loaded.
async fn wired() -> (DemoBackend, Registry, Runtime, tempfile::TempDir) {
    wired_with(None).await
}

/// As [`wired`], but the actions get `token` instead of the back end's, when given.
async fn wired_with(token: Option<&str>) -> (DemoBackend, Registry, Runtime, tempfile::TempDir) {
    let backend = DemoBackend::start(SocketAddr::from(([127, 0, 0, 1], 0)), new_token())
        .await
        .unwrap();
    let mut config = small_pool_config();
    let over = HostConfig::parse(
        &[
            "order-status",
            "membership-verify",
            "crm-lead",
            "membership-verify-py",
            "crm-lead-js",
        ]
        .iter()
        .map(|n| format!("[actions.{n}.config]\nbase_url = \"{}\"\n", backend.url()))
        .collect::<String>(),
    )
    .unwrap();
    config.actions = over.actions;
    let mut secrets = Secrets::default();
    for var in callout::demo::TOKEN_VARIABLES {
        secrets.insert(var, token.unwrap_or(backend.token()));
    }
    let data = tempfile::tempdir().unwrap();
    let mut options = RuntimeOptions::new(data.path());
    options.config = config;
    options.dev_loopback = vec![backend.addr.to_string()];
    options.secrets = secrets;
    // The Python and JavaScript siblings are large components: one compile per test run.
    share_compile_cache(&mut options);
    let runtime = Runtime::new(options).unwrap();
    let mut registry = Registry::load_dir(&runtime, example_actions())
        .await
        .unwrap();
    for parent in polyglot_actions() {
        for entry in std::fs::read_dir(parent).unwrap() {
            let manifest = entry.unwrap().path().join("action.toml");
            if manifest.is_file() {
                registry.load_one(&runtime, &manifest).await;
            }
        }
    }
    assert!(registry.failures().is_empty(), "{:#?}", registry.failures());
    (backend, registry, runtime, data)
}

async fn run(reg: &Registry, action: &str, inputs: Value) -> Result<callout::Outcome, Failure> {
    reg.get(action)
        .unwrap()
        .invoke(Call::tool(obj(inputs)))
        .await
        .result
}

#[tokio::test]
async fn order_status_finds_an_order_and_reports_an_unknown_one_as_not_found() {
    let (backend, reg, ..) = wired().await;
    let out = run(&reg, "order-status", json!({"order_id": "123456"}))
        .await
        .unwrap();
    assert_eq!(out.data["status"], "shipped");
    assert_eq!(out.data["eta"], "2026-12-02");
    assert_eq!(out.data["items"][0]["sku"], "MUG-01");
    assert!(out.reply.unwrap().contains("123456"));
    let missing = run(&reg, "order-status", json!({"order_id": "999999"})).await;
    assert!(
        matches!(missing, Err(Failure::NotFound { .. })),
        "{missing:?}"
    );
    let got = backend.received();
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|r| r.authorized),
        "every request carried the token"
    );
    assert_eq!(got[0].path, "/orders/123456");
}

#[tokio::test]
async fn a_malformed_order_number_is_asked_for_again_before_any_request() {
    let (backend, reg, ..) = wired().await;
    let r = run(&reg, "order-status", json!({"order_id": "12ab"})).await;
    assert!(
        matches!(&r, Err(Failure::NeedsInput { fields }) if fields[0].field == "order_id" && fields[0].prompt.is_some()),
        "{r:?}"
    );
    assert!(backend.received().is_empty());
}

/// The membership check, in Rust and in Python: the same behaviour.
const MEMBERSHIP: [&str; 2] = ["membership-verify", "membership-verify-py"];
/// The CRM lead, in Rust and in JavaScript: the same behaviour.
const CRM: [&str; 2] = ["crm-lead", "crm-lead-js"];

#[tokio::test]
async fn membership_verify_reports_active_inactive_and_unknown_members() {
    let (_backend, reg, ..) = wired().await;
    for action in MEMBERSHIP {
        membership_cases(&reg, action).await;
    }
}

async fn membership_cases(reg: &Registry, action: &str) {
    let active = run(
        reg,
        action,
        json!({"member_id": "M-1001", "date_of_birth": "1990-04-12"}),
    )
    .await
    .unwrap();
    assert_eq!(
        (active.data["active"].clone(), active.data["plan"].clone()),
        (json!(true), json!("gold"))
    );
    let inactive = run(
        reg,
        action,
        json!({"member_id": "M-2002", "date_of_birth": "1985-09-30"}),
    )
    .await
    .unwrap();
    assert_eq!(inactive.data["active"], false);
    let unknown = run(
        reg,
        action,
        json!({"member_id": "M-9999", "date_of_birth": "1990-01-01"}),
    )
    .await;
    assert!(
        matches!(unknown, Err(Failure::NotFound { .. })),
        "{action}: {unknown:?}"
    );
    let bad = run(
        reg,
        action,
        json!({"member_id": "M-1001", "date_of_birth": "12/04/1990"}),
    )
    .await;
    assert!(
        matches!(&bad, Err(Failure::NeedsInput { fields }) if fields[0].field == "date_of_birth" && fields[0].prompt.is_some()),
        "{action}: {bad:?}"
    );
}

#[tokio::test]
async fn crm_lead_creates_a_record_with_an_idempotency_key_and_asks_again_for_a_bad_email_without_sending()
 {
    for action in CRM {
        let (backend, reg, ..) = wired().await;
        crm_cases(&backend, &reg, action).await;
    }
}

async fn crm_cases(backend: &DemoBackend, reg: &Registry, action: &str) {
    let lead = json!({"name": "Ada Lovelace", "email": "ada@example.com", "company": "AE Ltd", "inquiry": "Pricing"});
    let mut call = Call::tool(obj(lead.clone()));
    call.idempotency_key = Some("chat-42-end".into());
    let first = reg
        .get(action)
        .unwrap()
        .invoke(call.clone())
        .await
        .result
        .unwrap();
    let id = first.data["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("lead_"), "{action}: {id}");
    // A retry with the same key does not create a second lead.
    let again = reg.get(action).unwrap().invoke(call).await.result.unwrap();
    assert_eq!(again.data["id"], id.as_str());
    let got = backend.received();
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|r| r.idempotency_key.as_deref() == Some("chat-42-end"))
    );

    let bad = run(
        reg,
        action,
        json!({"name": "Bob", "email": "bob at example"}),
    )
    .await;
    assert!(
        matches!(&bad, Err(Failure::NeedsInput { fields }) if fields[0].field == "email" && fields[0].prompt.is_some()),
        "{action}: {bad:?}"
    );
    assert_eq!(
        backend.received().len(),
        2,
        "an invalid email must not reach the CRM"
    );
}

#[tokio::test]
async fn upstream_failures_are_typed_for_each_action() {
    let (backend, reg, ..) = wired().await;
    backend.set_mode(Api::Orders, Mode::Fail { status: 503 });
    let r = run(&reg, "order-status", json!({"order_id": "123456"})).await;
    assert!(
        matches!(
            r,
            Err(Failure::Upstream {
                kind: UpstreamKind::ServerError,
                status: Some(503),
                ..
            })
        ),
        "{r:?}"
    );
    backend.set_mode(Api::Memberships, Mode::RateLimited { retry_after_s: 30 });
    for action in MEMBERSHIP {
        let r = run(
            &reg,
            action,
            json!({"member_id": "M-1001", "date_of_birth": "1990-04-12"}),
        )
        .await;
        assert!(
            matches!(
                r,
                Err(Failure::Upstream {
                    kind: UpstreamKind::RateLimited,
                    retry_after_ms: Some(30_000),
                    ..
                })
            ),
            "{action}: {r:?}"
        );
    }
    // The actions allow 5 s per request; the back end answers after 8 s.
    backend.set_mode(Api::Crm, Mode::Slow { delay_ms: 8_000 });
    let slow = CRM.map(|action| {
        let reg = &reg;
        async move {
            (
                action,
                run(
                    reg,
                    action,
                    json!({"name": "Ada", "email": "ada@example.com"}),
                )
                .await,
            )
        }
    });
    for (action, r) in futures::future::join_all(slow).await {
        assert!(
            matches!(
                r,
                Err(Failure::Upstream {
                    kind: UpstreamKind::Timeout,
                    ..
                })
            ),
            "{action}: {r:?}"
        );
    }
    backend.set_mode(Api::Orders, Mode::Normal);
    assert!(
        run(&reg, "order-status", json!({"order_id": "123456"}))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_upstream_and_reported_as_a_client_error() {
    let (backend, reg, ..) = wired_with(Some("demo-not-the-right-token")).await;
    let r = run(&reg, "order-status", json!({"order_id": "123456"})).await;
    assert!(
        matches!(
            r,
            Err(Failure::Upstream {
                kind: UpstreamKind::ClientError,
                status: Some(401),
                ..
            })
        ),
        "{r:?}"
    );
    let got = backend.received();
    assert_eq!(got.len(), 1);
    assert!(!got[0].authorized);
}

#[test]
fn callout_demo_runs_the_four_scenarios_and_the_back_end_saw_each_token() {
    let actions = example_actions();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("callout.toml");
    std::fs::write(&config, "[pool]\ntotal_component_instances = 16\ntotal_core_instances = 64\ntotal_memories = 16\ntotal_tables = 32\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .arg("--actions")
        .arg(actions)
        .arg("--data-dir")
        .arg(data.path())
        .arg("--config")
        .arg(&config)
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "1. Order tracking: where is order 123456?",
        "[ok] reply: Order 123456 has shipped",
        "2. Order tracking: an order that does not exist",
        "[ok] not-found",
        "3. Membership verification: is M-1001 active?",
        "[ok] reply: Membership M-1001 is active on the gold plan",
        "4. CRM update: a new lead from the chat",
        "[ok] reply: Thanks Ada Lovelace, our team will be in touch",
        "The back end received 4 request(s), 4 with the bearer token:",
        "GET /orders/123456 -> 200",
        "GET /orders/999999 -> 404",
        "POST /memberships/verify -> 200",
        "POST /crm/leads -> 201 (Idempotency-Key ",
        "4 of 4 scenarios behaved as expected.",
        "user: Hi! Where is my order?",
        "agent [order-status needs-input]: What is your 6-digit order number?",
        "agent [order-status ok]: Order 123456 has shipped",
        "(demo): the membership API now answers 503",
        "agent [membership-verify failed]: Sorry, I can't check memberships right now.",
        "outbox [crm-lead done]: delivered (attempt 1, Idempotency-Key ",
    ] {
        assert!(
            stdout.contains(want),
            "demo output lacks {want:?}:\n{stdout}"
        );
    }
}
