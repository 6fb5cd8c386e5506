//! Whole flows against the demo back end on loopback: the built-in no-code action from manifest
//! to CRM record, user text trying to break out of its templates, the error policy's retries and
//! fallbacks, and conversations firing on-prompt actions and delivering chat-end ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use callout::call::UpstreamKind;
use callout::chat::{Chat, MessageResult, UserMessage};
use callout::demo::backend::{Api, DemoBackend, Mode, ReceivedRequest, new_token};
use callout::{Call, CallReport, Failure, HostConfig, Registry, Runtime, RuntimeOptions, Secrets};
use serde_json::{Map, Value, json};

use crate::support::*;

/// What the demo back end records in place of its token wherever a client put it.
const REDACTED: &str = "[redacted]";

/// A no-code lead form: the built-in "Send API Request" posting to the CRM.
const LEAD_FORM: &str = r#"
name = "lead-form"
component = "builtin:send-api-request"
description = "Send a sales lead to the CRM"

[inputs.name]
type = "string"
required = true
prompt = "What is your name?"

[inputs.email]
type = "string"
format = "email"
required = true
prompt = "What email address can our sales team use?"

[inputs.company]
type = "string"

[request]
method = "POST"
url = "{{config.base_url}}/crm/leads"
headers = { authorization = "Bearer {{secret.CRM_TOKEN}}" }
body = { name = "{{name}}", email = "{{email}}", company = "{{company}}", source = "chat" }

[response]
variables = { lead_id = "/id" }
reply = "Thanks {{name}}, your reference is {{lead_id}}."

[config]
base_url = "https://crm.example.com"

[http]
allow = [{ url = "{{config.base_url}}/crm/leads", methods = ["POST"] }]

[secrets.CRM_TOKEN]
from = "env:CRM_API_TOKEN"
hosts = ["{{config.base_url}}"]
"#;

/// A no-code order lookup: the order number goes into the URL path.
const ORDER_LOOKUP: &str = r#"
name = "order-lookup"
component = "builtin:send-api-request"

[inputs.order_id]
type = "string"
required = true
prompt = "What is your order number?"

[request]
method = "GET"
url = "{{config.base_url}}/orders/{{order_id}}"
headers = { authorization = "Bearer {{secret.ORDERS_TOKEN}}" }

[response]
variables = { status = "/status" }
reply = "Order {{order_id}} is {{status}}."

[config]
base_url = "https://orders.example.com"

[http]
allow = ["{{config.base_url}}/orders/"]
methods = ["GET"]

[secrets.ORDERS_TOKEN]
from = "env:ORDERS_API_TOKEN"
hosts = ["{{config.base_url}}"]
"#;

/// A no-code order lookup fired in a conversation, its order number an integer pulled out of the
/// user's message.
const ORDER_BY_NUMBER: &str = r#"
name = "order-by-number"
component = "builtin:send-api-request"

[trigger]
kind = "on-prompt"
patterns = ["(?i)\\border\\b"]

[inputs.order_id]
type = "integer"
required = true
prompt = "What is your order number?"
extract = "\\b(\\d{6})\\b"

[request]
method = "GET"
url = "{{config.base_url}}/orders/{{order_id}}"
headers = { authorization = "Bearer {{secret.ORDERS_TOKEN}}" }

[response]
variables = { status = "/status" }
reply = "Order {{order_id}} is {{status}}."

[config]
base_url = "https://orders.example.com"

[http]
allow = ["{{config.base_url}}/orders/"]

[secrets.ORDERS_TOKEN]
from = "env:ORDERS_API_TOKEN"
hosts = ["{{config.base_url}}"]
"#;

/// Retries of server errors: two after the first attempt, 1 ms apart.
const RETRY_SERVER_ERRORS: &str =
    "[on_error.retry]\nmax = 2\nbackoff_ms = 1\non = [\"server-error\"]\n";

/// A demo back end, and actions loaded from a folder and pointed at it the documented way:
/// `[actions.<name>.config] base_url` overrides, dev-loopback for its port, and its token as
/// the value of every token variable the actions read.
struct Wired {
    backend: DemoBackend,
    registry: Arc<Registry>,
    data: tempfile::TempDir,
    _runtime: Runtime,
}

impl Wired {
    /// Wires the actions in `dir`, pointing those named in `names` at a fresh back end.
    async fn start(dir: &Path, names: &[&str]) -> Self {
        Self::start_with(dir, names, |_| {}).await
    }

    /// [`Wired::start`] with the host config changed by `tweak` first.
    async fn start_with(dir: &Path, names: &[&str], tweak: impl FnOnce(&mut HostConfig)) -> Self {
        let backend = DemoBackend::start(SocketAddr::from(([127, 0, 0, 1], 0)), new_token())
            .await
            .unwrap();
        let overrides: String = names
            .iter()
            .map(|n| format!("[actions.{n}.config]\nbase_url = \"{}\"\n", backend.url()))
            .collect();
        let mut config = small_pool_config();
        config.actions = HostConfig::parse(&overrides).unwrap().actions;
        tweak(&mut config);
        let mut secrets = Secrets::default();
        for var in callout::demo::TOKEN_VARIABLES {
            secrets.insert(var, backend.token());
        }
        let data = tempfile::tempdir().unwrap();
        let mut options = RuntimeOptions::new(data.path());
        options.config = config;
        options.dev_loopback = vec![backend.addr.to_string()];
        options.secrets = secrets;
        let runtime = Runtime::new(options).unwrap();
        let registry = Registry::load_dir(&runtime, dir).await.unwrap();
        assert!(registry.failures().is_empty(), "{:#?}", registry.failures());
        Self {
            backend,
            registry: Arc::new(registry),
            data,
            _runtime: runtime,
        }
    }

    /// The example actions in plugins/, as built.
    async fn examples() -> Self {
        Self::start(example_actions(), &callout::demo::ACTIONS).await
    }

    /// Calls `action` as a tool with `inputs`.
    async fn call(&self, action: &str, inputs: Value) -> CallReport {
        self.registry
            .get(action)
            .unwrap_or_else(|| panic!("{action} is loaded"))
            .invoke(Call::tool(obj(inputs)))
            .await
    }

    /// Conversations over these actions, stored in the data dir's database, with the outbox's
    /// delivery workers running until the test ends.
    fn chat(&self) -> Chat {
        let db = self.data.path().join(callout::audit::DB_FILE);
        let actions = Arc::new(callout::registry::Actions::new(self.registry.clone()));
        let deliverer = Arc::new(
            callout::delivery::Deliverer::open(&self._runtime, &db, actions.clone()).unwrap(),
        );
        tokio::spawn(
            deliverer
                .clone()
                .run(tokio_util::sync::CancellationToken::new()),
        );
        Chat::open(&db, actions, deliverer).unwrap()
    }

    /// What the back end has received so far.
    fn received(&self) -> Vec<ReceivedRequest> {
        self.backend.received()
    }

    /// Asserts the token never went anywhere but the authorization header: the back end
    /// replaces it with `[redacted]` in what it records, so neither may show up.
    fn assert_token_only_in_authorization(&self) {
        let token = self.backend.token();
        for r in self.received() {
            let recorded = [
                Some(&r.path),
                r.query.as_ref(),
                Some(&r.body),
                r.idempotency_key.as_ref(),
                r.content_type.as_ref(),
            ];
            for text in recorded.into_iter().flatten() {
                assert!(
                    !text.contains(token) && !text.contains(REDACTED),
                    "the token was sent outside the authorization header: {r:?}"
                );
            }
        }
    }
}

/// A temporary actions folder holding each `(folder, manifest)` as `<folder>/action.toml`.
fn actions_with(manifests: &[(&str, &str)]) -> Actions {
    let actions = Actions::new();
    for (folder, manifest) in manifests {
        actions.add(folder, manifest);
    }
    actions
}

/// The example manifest `plugins/<name>/action.toml` with its component made absolute (so it
/// loads from anywhere) and its `[on_error]` replaced by `on_error` (TOML).
fn example_manifest(name: &str, on_error: &str) -> String {
    let folder = example_actions().join(name);
    let text = std::fs::read_to_string(folder.join("action.toml")).unwrap();
    let mut manifest: toml::Table = toml::from_str(&text).unwrap();
    let component = manifest["component"].as_str().unwrap();
    let wasm: PathBuf = folder.join(component).canonicalize().unwrap();
    manifest.insert("component".into(), wasm.display().to_string().into());
    manifest.remove("on_error");
    format!("{}\n{on_error}", toml::to_string(&manifest).unwrap())
}

/// The failure of a report that should have failed.
fn failure(report: &CallReport) -> &Failure {
    match &report.result {
        Err(f) => f,
        Ok(o) => panic!("expected a failure, got {o:?}"),
    }
}

/// The `(field, prompt, reason)` of each input a needs-input failure asks for.
fn needed(f: &Failure) -> Vec<(String, Option<String>, String)> {
    match f {
        Failure::NeedsInput { fields } => fields
            .iter()
            .map(|n| (n.field.clone(), n.prompt.clone(), n.reason.clone()))
            .collect(),
        other => panic!("expected needs-input, got {other:?}"),
    }
}

/// A user message with these words and nothing else.
/// Starts a conversation with `text` and Ada's name and email collected, ends it, and waits for
/// its chat-end deliveries.
async fn end_with_lead(chat: &Chat, text: &str) -> Vec<callout::outbox::DeliveryDetail> {
    let mut values = Map::new();
    values.insert("name".into(), json!("Ada Lovelace"));
    values.insert("email".into(), json!("ada@example.com"));
    let r = chat
        .message(
            None,
            UserMessage {
                text: text.into(),
                intents: vec![],
                values,
            },
        )
        .await
        .unwrap();
    chat.end_and_wait(&r.conversation_id, Duration::from_secs(20))
        .await
        .unwrap()
}

fn says(text: &str) -> UserMessage {
    UserMessage {
        text: text.into(),
        ..UserMessage::default()
    }
}

/// The one turn a message produced.
fn only_turn(r: &MessageResult) -> &callout::chat::Turn {
    assert_eq!(r.turns.len(), 1, "{:#?}", r.turns);
    &r.turns[0]
}

// ---------------------------------------------------------------------------------------------
// The no-code action end to end

#[tokio::test]
async fn the_no_code_lead_form_creates_a_lead_and_replies_with_its_reference() {
    let actions = actions_with(&[("lead-form", LEAD_FORM)]);
    let w = Wired::start(actions.path(), &["lead-form"]).await;
    let report = w
        .call(
            "lead-form",
            json!({"name": "Ada Lovelace", "email": "ada@example.com", "company": "Analytical Engines Ltd"}),
        )
        .await;
    let out = report.result.clone().unwrap();
    assert_eq!(report.attempts, 1);
    assert_eq!(
        out.data["id"], "lead_000001",
        "the back end's answer is the data"
    );
    assert_eq!(out.variables["lead_id"], "lead_000001");
    assert_eq!(
        out.reply.as_deref(),
        Some("Thanks Ada Lovelace, your reference is lead_000001.")
    );

    let got = w.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    let sent = &got[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/crm/leads")
    );
    assert_eq!(sent.status, 201);
    assert!(sent.authorized, "the host filled in the CRM token");
    assert_eq!(
        sent.idempotency_key.as_deref(),
        Some(report.idempotency_key.as_str()),
        "the write carried the call's idempotency key"
    );
    assert_eq!(sent.content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(
        body,
        json!({"name": "Ada Lovelace", "email": "ada@example.com",
               "company": "Analytical Engines Ltd", "source": "chat"})
    );
    w.assert_token_only_in_authorization();
}

#[tokio::test]
async fn the_no_code_lead_form_sends_a_missing_company_as_null() {
    let actions = actions_with(&[("lead-form", LEAD_FORM)]);
    let w = Wired::start(actions.path(), &["lead-form"]).await;
    let report = w
        .call(
            "lead-form",
            json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await;
    assert!(report.result.is_ok(), "{:?}", report.result);
    let body: Value = serde_json::from_str(&w.received()[0].body).unwrap();
    assert_eq!(
        body,
        json!({"name": "Ada", "email": "ada@example.com", "company": null, "source": "chat"})
    );
}

#[tokio::test]
async fn the_no_code_lead_form_asks_for_a_missing_or_invalid_email_and_sends_nothing() {
    let actions = actions_with(&[("lead-form", LEAD_FORM)]);
    let w = Wired::start(actions.path(), &["lead-form"]).await;
    let prompt = Some("What email address can our sales team use?".to_string());

    let missing = w.call("lead-form", json!({"name": "Ada Lovelace"})).await;
    let asked = needed(failure(&missing));
    assert_eq!(
        asked,
        vec![("email".into(), prompt.clone(), "is required".into())]
    );
    assert_eq!(
        missing.attempts, 0,
        "the input gate stopped it before any call"
    );

    let invalid = w
        .call(
            "lead-form",
            json!({"name": "Ada Lovelace", "email": "ada at example dot com"}),
        )
        .await;
    let asked = needed(failure(&invalid));
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!((&asked[0].0, &asked[0].1), (&"email".to_string(), &prompt));
    assert_eq!(invalid.attempts, 0);

    let nameless = w
        .call("lead-form", json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(
        needed(failure(&nameless))[0].1.as_deref(),
        Some("What is your name?")
    );
    assert!(w.received().is_empty(), "{:#?}", w.received());
}

// ---------------------------------------------------------------------------------------------
// Injection through the built-in

#[tokio::test]
async fn a_lead_named_like_a_secret_placeholder_is_asked_for_again_and_nothing_is_sent() {
    let actions = actions_with(&[("lead-form", LEAD_FORM)]);
    let w = Wired::start(actions.path(), &["lead-form"]).await;
    let token = w.backend.token().to_string();
    let cases = [
        (
            "name",
            json!({"name": "{{secret.CRM_TOKEN}}", "email": "ada@example.com"}),
        ),
        (
            "name",
            json!({"name": "Ada {{ secret.CRM_TOKEN }}", "email": "ada@example.com"}),
        ),
        (
            "email",
            json!({"name": "Ada", "email": "{{secret.CRM_TOKEN}}@example.com"}),
        ),
        (
            "company",
            json!({"name": "Ada", "email": "ada@example.com", "company": "{{config.base_url}}"}),
        ),
    ];
    for (field, inputs) in cases {
        let report = w.call("lead-form", inputs.clone()).await;
        // The built-in refuses `{{` in any input as invalid-input; the default policy asks the
        // user again, so the caller sees needs-input on that field.
        let asked = needed(failure(&report));
        assert_eq!(asked.len(), 1, "{inputs}: {asked:?}");
        assert_eq!(asked[0].0, field, "{inputs}");
        assert!(asked[0].2.contains("{{"), "{inputs}: {asked:?}");
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains(&token), "the report holds the token: {text}");
    }
    assert!(w.received().is_empty(), "{:#?}", w.received());
}

#[tokio::test]
async fn quotes_newlines_and_backslashes_in_a_name_arrive_as_that_exact_json_string() {
    let actions = actions_with(&[("lead-form", LEAD_FORM)]);
    let w = Wired::start(actions.path(), &["lead-form"]).await;
    let name = "Ada \"the\" \n \\ Lovelace\", \"source\": \"evil";
    let report = w
        .call(
            "lead-form",
            json!({"name": name, "email": "ada@example.com"}),
        )
        .await;
    let out = report.result.clone().unwrap();
    assert_eq!(
        out.reply.as_deref(),
        Some(format!("Thanks {name}, your reference is lead_000001.").as_str())
    );
    let got = w.received();
    assert_eq!(got.len(), 1);
    let raw = &got[0].body;
    assert!(
        raw.contains(&serde_json::to_string(name).unwrap()),
        "the name is JSON-encoded in place: {raw}"
    );
    let body: Map<String, Value> = serde_json::from_str(raw).unwrap();
    assert_eq!(body["name"], name, "the name arrived exactly as typed");
    assert_eq!(
        body["source"], "chat",
        "the name could not overwrite a field"
    );
    assert_eq!(body.len(), 4, "the name could not add a field: {body:?}");
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains(w.backend.token()));
    w.assert_token_only_in_authorization();
}

#[tokio::test]
async fn a_dot_dot_order_number_never_leaves_the_orders_path_and_a_slash_stays_in_its_segment() {
    let actions = actions_with(&[("order-lookup", ORDER_LOOKUP)]);
    let w = Wired::start(actions.path(), &["order-lookup"]).await;
    let ok = w.call("order-lookup", json!({"order_id": "123456"})).await;
    assert_eq!(
        ok.result.unwrap().reply.as_deref(),
        Some("Order 123456 is shipped.")
    );

    // A value that would climb out of /orders/ is refused before anything is sent: the built-in
    // reports invalid-input on the field, asked again as needs-input.
    for climb in [
        "../crm/leads",
        "..",
        ".",
        "..\\crm\\leads",
        "x/../../crm/leads",
    ] {
        let report = w.call("order-lookup", json!({"order_id": climb})).await;
        let asked = needed(failure(&report));
        assert_eq!(asked[0].0, "order_id", "{climb}: {asked:?}");
        assert_eq!(asked[0].1.as_deref(), Some("What is your order number?"));
    }
    assert_eq!(w.received().len(), 1, "{:#?}", w.received());

    // Values that only look like paths are encoded into their one segment.
    for (value, path) in [
        ("12/34", "/orders/12%2F34"),
        ("a?b#c", "/orders/a%3Fb%23c"),
        ("%2e%2e/crm/leads", "/orders/%252e%252e%2Fcrm%2Fleads"),
    ] {
        let report = w.call("order-lookup", json!({"order_id": value})).await;
        assert!(
            report.result.is_err(),
            "{value}: the back end knows no such order"
        );
        let last = w.received().pop().unwrap();
        assert_eq!(last.path, path, "{value}");
        assert_eq!(last.query, None, "{value}");
    }
    assert!(
        w.received().iter().all(|r| r.path.starts_with("/orders/")),
        "{:#?}",
        w.received()
    );
    w.assert_token_only_in_authorization();
}

#[tokio::test]
async fn a_secret_placeholder_typed_in_the_chat_keeps_the_token_out_of_the_chat_end_delivery() {
    let w = Wired::examples().await;
    let chat = w.chat();
    let done = end_with_lead(&chat, "my company is {{secret.CRM_TOKEN}}").await;
    assert_eq!(done.len(), 1, "{done:#?}");
    let d = &done[0].delivery;
    assert_eq!(d.action, "crm-lead");
    // The host cannot tell the plugin's own placeholder from the user's copy in the
    // transcript, so it sends neither: the delivery is denied and dead-lettered at once, never
    // retried.
    assert_eq!(d.state, callout::outbox::State::Dead, "{d:#?}");
    assert!(
        d.last_error
            .as_deref()
            .is_some_and(|e| e.contains("secret-not-allowed")),
        "{d:#?}"
    );
    assert_eq!(d.attempts, 1);
    assert!(w.received().is_empty(), "{:#?}", w.received());
    let text = serde_json::to_string(&done).unwrap();
    assert!(!text.contains(w.backend.token()), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Retries and fallbacks

#[tokio::test]
async fn a_failing_crm_is_tried_three_times_with_the_same_body_and_idempotency_key() {
    let actions = actions_with(&[(
        "crm-lead",
        &example_manifest("crm-lead", RETRY_SERVER_ERRORS),
    )]);
    let w = Wired::start(actions.path(), &["crm-lead"]).await;
    w.backend.set_mode(Api::Crm, Mode::Fail { status: 503 });
    let report = w
        .call(
            "crm-lead",
            json!({"name": "Ada Lovelace", "email": "ada@example.com"}),
        )
        .await;
    assert!(
        matches!(
            failure(&report),
            Failure::Upstream {
                kind: UpstreamKind::ServerError,
                status: Some(503),
                ..
            }
        ),
        "{:?}",
        report.result
    );
    assert_eq!(report.attempts, 3);
    assert_eq!(report.fallback, None, "no fallback is configured");

    let got = w.received();
    assert_eq!(got.len(), 3, "{got:#?}");
    for r in &got {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/crm/leads"));
        assert_eq!(r.body, got[0].body, "every attempt sent the same body");
        assert_eq!(
            r.idempotency_key.as_deref(),
            Some(report.idempotency_key.as_str()),
            "every attempt carried the call's key"
        );
        assert!(r.authorized);
    }
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(
        body,
        json!({"name": "Ada Lovelace", "email": "ada@example.com"})
    );

    // Once the CRM is back, the same key creates the lead once.
    w.backend.set_mode(Api::Crm, Mode::Normal);
    let mut again = Call::tool(obj(
        json!({"name": "Ada Lovelace", "email": "ada@example.com"}),
    ));
    again.idempotency_key = Some(report.idempotency_key.clone());
    let ok = w.registry.get("crm-lead").unwrap().invoke(again).await;
    assert_eq!(ok.attempts, 1);
    assert_eq!(ok.result.unwrap().data["id"], "lead_000001");
}

#[tokio::test]
async fn a_post_without_an_idempotency_key_is_not_retried_but_one_with_a_key_is() {
    let server = TestServer::start().await;
    let actions = actions_with(&[(
        "echo",
        &format!(
            "name = \"echo\"\ncomponent = \"{{echo}}\"\n[http]\nallow = [{{ url = \"{}/status/\", \
             methods = [\"POST\"] }}]\n{RETRY_SERVER_ERRORS}",
            server.url()
        ),
    )]);
    let (runtime, _data) = runtime_with(&[server.host_port()], Secrets::default());
    let reg = load_all(&runtime, &actions).await;
    let echo = reg.get("echo").unwrap();
    let url = format!("{}/status/503", server.url());

    let unkeyed = call(
        &echo,
        json!({"message": "m", "method": "POST", "url": url, "body": "{}"}),
    )
    .await;
    assert!(
        matches!(
            failure(&unkeyed),
            Failure::Upstream {
                kind: UpstreamKind::ServerError,
                ..
            }
        ),
        "{:?}",
        unkeyed.result
    );
    assert_eq!(
        unkeyed.attempts, 1,
        "a POST without a key is not safe to repeat"
    );
    assert!(!unkeyed.requests[0].repeatable);
    assert_eq!(server.received().len(), 1);

    let keyed = call(
        &echo,
        json!({"message": "m", "method": "POST", "url": url, "body": "{}",
               "headers": {"idempotency-key": "lead-7"}}),
    )
    .await;
    assert_eq!(keyed.attempts, 3, "a POST with a key is retried");
    let got = server.received();
    assert_eq!(got.len(), 4);
    assert!(
        got[1..]
            .iter()
            .all(|r| r.headers.get("idempotency-key").map(String::as_str) == Some("lead-7"))
    );
}

#[tokio::test]
async fn a_missing_order_is_not_retried_and_ends_with_its_not_found_message() {
    let not_found = "I couldn't find that order. Could you check the number?";
    let fallback = "Sorry, I can't reach the order system right now.";
    let on_error = format!(
        "[on_error]\nfallback = \"{fallback}\"\n[on_error.messages]\nnot-found = \"{not_found}\"\n\
         {RETRY_SERVER_ERRORS}"
    );
    let actions = actions_with(&[("order-status", &example_manifest("order-status", &on_error))]);
    let w = Wired::start(actions.path(), &["order-status"]).await;

    let missing = w.call("order-status", json!({"order_id": "999999"})).await;
    assert!(
        matches!(failure(&missing), Failure::NotFound { .. }),
        "{:?}",
        missing.result
    );
    assert_eq!(missing.attempts, 1, "not-found is never retried");
    assert_eq!(missing.fallback.as_deref(), Some(not_found));
    assert_eq!(w.received().len(), 1);

    w.backend.set_mode(Api::Orders, Mode::Fail { status: 503 });
    let down = w.call("order-status", json!({"order_id": "123456"})).await;
    assert_eq!(down.attempts, 3);
    assert_eq!(
        down.fallback.as_deref(),
        Some(fallback),
        "a class without its own message gets the general fallback"
    );
    assert_eq!(w.received().len(), 4);

    w.backend.set_mode(Api::Orders, Mode::Normal);
    let found = w.call("order-status", json!({"order_id": "123456"})).await;
    assert!(found.result.is_ok());
    assert_eq!(found.fallback, None, "a success has no fallback");
}

#[tokio::test]
async fn a_not_found_listed_in_ask_again_asks_for_the_order_number_again() {
    let on_error = "[on_error]\nask_again = [\"invalid-input\", \"not-found\"]\n";
    let actions = actions_with(&[("order-status", &example_manifest("order-status", on_error))]);
    let w = Wired::start(actions.path(), &["order-status"]).await;
    let report = w.call("order-status", json!({"order_id": "999999"})).await;
    let asked = needed(failure(&report));
    assert_eq!(asked[0].0, "order_id", "{asked:?}");
    assert_eq!(
        asked[0].1.as_deref(),
        Some("What is your 6-digit order number?")
    );
    assert_eq!(report.attempts, 1);
}

// ---------------------------------------------------------------------------------------------
// Conversations

#[tokio::test]
async fn asking_where_an_order_is_asks_for_its_number_then_answers_once_given_it() {
    let w = Wired::examples().await;
    let chat = w.chat();

    let first = chat
        .message(None, says("where is my order?"))
        .await
        .unwrap();
    let turn = only_turn(&first);
    assert_eq!(
        (turn.action.as_str(), turn.status),
        ("order-status", "needs-input")
    );
    assert_eq!(
        turn.say.as_deref(),
        Some("What is your 6-digit order number?")
    );
    assert_eq!(turn.attempts, 0);
    assert!(w.received().is_empty(), "{:#?}", w.received());
    assert!(
        first.variables.keys().all(|k| !k.starts_with("callout.")),
        "the host's bookkeeping stays private: {:?}",
        first.variables
    );

    let id = first.conversation_id.clone();
    let second = chat.message(Some(&id), says("it's 123456")).await.unwrap();
    assert_eq!(second.conversation_id, id);
    let turn = only_turn(&second);
    assert_eq!((turn.action.as_str(), turn.status), ("order-status", "ok"));
    let say = turn.say.as_deref().unwrap();
    assert!(say.contains("123456"), "{say}");
    assert_eq!(second.variables["order_id"], "123456");
    let got = w.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("GET", "/orders/123456")
    );

    // Nothing pending any more: an unrelated message fires nothing.
    let third = chat.message(Some(&id), says("thanks!")).await.unwrap();
    assert!(third.turns.is_empty(), "{:#?}", third.turns);
    assert_eq!(w.received().len(), 1);

    let conv = chat.store().get(&id).unwrap().unwrap();
    let lines: Vec<&str> = conv.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        lines,
        [
            "where is my order?",
            "What is your 6-digit order number?",
            "it's 123456",
            say,
            "thanks!"
        ]
    );
}

#[tokio::test]
async fn an_action_both_pending_and_matched_by_a_message_fires_once_for_it() {
    let w = Wired::examples().await;
    let chat = w.chat();
    let first = chat.message(None, says("where's my order?")).await.unwrap();
    assert_eq!(only_turn(&first).status, "needs-input");
    let id = first.conversation_id;
    let second = chat
        .message(
            Some(&id),
            UserMessage {
                text: "where is my order? order status for 234567 please".into(),
                intents: vec!["order_status".into()],
                ..UserMessage::default()
            },
        )
        .await
        .unwrap();
    let turn = only_turn(&second);
    assert_eq!((turn.action.as_str(), turn.status), ("order-status", "ok"));
    assert_eq!(turn.attempts, 1);
    assert_eq!(w.received().len(), 1, "{:#?}", w.received());
}

#[tokio::test]
async fn a_membership_check_waits_for_a_missing_date_of_birth_before_calling() {
    let w = Wired::examples().await;
    let chat = w.chat();
    let asked = chat
        .message(
            None,
            UserMessage {
                text: "can you check my membership M-1001?".into(),
                intents: vec!["verify_membership".into()],
                ..UserMessage::default()
            },
        )
        .await
        .unwrap();
    let turn = only_turn(&asked);
    assert_eq!(
        (turn.action.as_str(), turn.status),
        ("membership-verify", "needs-input")
    );
    assert_eq!(
        turn.say.as_deref(),
        Some("To confirm it's you, what is your date of birth (YYYY-MM-DD)?")
    );
    assert_eq!(asked.variables["member_id"], "M-1001");
    assert!(w.received().is_empty(), "{:#?}", w.received());

    let answered = chat
        .message(Some(&asked.conversation_id), says("sure, 1990-04-12"))
        .await
        .unwrap();
    let turn = only_turn(&answered);
    assert_eq!(turn.status, "ok", "{turn:#?}");
    assert_eq!(
        turn.say.as_deref(),
        Some("Membership M-1001 is active on the gold plan until 2027-01-31.")
    );
    assert_eq!(answered.variables["membership_active"], true);
    let got = w.received();
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(
        body,
        json!({"member_id": "M-1001", "date_of_birth": "1990-04-12"})
    );
}

#[tokio::test]
async fn a_failing_membership_service_is_answered_with_the_fallback_message() {
    // The example's own [on_error]: a fallback, and one retry of transient failures.
    let w = Wired::examples().await;
    let policy = w
        .registry
        .get("membership-verify")
        .unwrap()
        .manifest()
        .on_error
        .clone();
    let fallback = policy.fallback.clone().expect("the example has a fallback");
    w.backend
        .set_mode(Api::Memberships, Mode::Fail { status: 503 });
    let chat = w.chat();
    let r = chat
        .message(
            None,
            UserMessage {
                text: "is my membership M-1001 active? I was born 1990-04-12".into(),
                intents: vec!["verify_membership".into()],
                ..UserMessage::default()
            },
        )
        .await
        .unwrap();
    let turn = only_turn(&r);
    assert_eq!(
        (turn.action.as_str(), turn.status),
        ("membership-verify", "failed")
    );
    assert_eq!(turn.say.as_deref(), Some(fallback.as_str()));
    assert_eq!(turn.attempts, policy.max_attempts());
    assert!(
        matches!(
            turn.error,
            Some(Failure::Upstream {
                kind: UpstreamKind::ServerError,
                status: Some(503),
                ..
            })
        ),
        "{:?}",
        turn.error
    );
    assert_eq!(w.received().len(), policy.max_attempts() as usize);
    let conv = chat.store().get(&r.conversation_id).unwrap().unwrap();
    assert_eq!(
        conv.messages.last().unwrap().text,
        fallback,
        "the agent's line is stored"
    );
}

#[tokio::test]
async fn a_rate_limited_membership_service_answers_within_the_actions_deadline() {
    let w = Wired::examples().await;
    let plugin = w.registry.get("membership-verify").unwrap();
    let deadline = std::time::Duration::from_millis(plugin.manifest().limits.deadline_ms);
    let fallback = plugin.manifest().on_error.fallback.clone().unwrap();
    w.backend
        .set_mode(Api::Memberships, Mode::RateLimited { retry_after_s: 30 });
    let chat = w.chat();
    let started = std::time::Instant::now();
    let r = chat
        .message(
            None,
            UserMessage {
                text: "is my membership M-1001 active? I was born 1990-04-12".into(),
                intents: vec!["verify_membership".into()],
                ..UserMessage::default()
            },
        )
        .await
        .unwrap();
    let took = started.elapsed();
    let turn = only_turn(&r);
    assert_eq!(turn.say.as_deref(), Some(fallback.as_str()));
    assert!(
        took < deadline,
        "the user waited {took:?}, longer than the action's deadline of {deadline:?}"
    );
}

#[tokio::test]
async fn an_order_number_extracted_from_a_message_fills_an_integer_input() {
    let actions = actions_with(&[("order-by-number", ORDER_BY_NUMBER)]);
    let w = Wired::start(actions.path(), &["order-by-number"]).await;
    let chat = w.chat();
    let r = chat
        .message(None, says("what about order 123456?"))
        .await
        .unwrap();
    let turn = only_turn(&r);
    assert_eq!(turn.status, "ok", "{turn:#?}");
    assert_eq!(turn.say.as_deref(), Some("Order 123456 is shipped."));
    assert_eq!(w.received()[0].path, "/orders/123456");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_end_delivery_that_finds_the_host_busy_waits_for_a_slot_and_is_delivered() {
    let w = Wired::start_with(example_actions(), &callout::demo::ACTIONS, |c| {
        c.pool.total_component_instances = 1;
        c.pool.prewarm = false;
        c.outbox.retry_base_ms = 50;
    })
    .await;
    // An action of the same runtime spins until its deadline, holding the pool's only slot.
    let spinner = Actions::new();
    spinner.add(
        "hostile",
        "name = \"hostile\"\ncomponent = \"{hostile}\"\n[limits]\ndeadline_ms = 1500\n",
    );
    let loaded = Registry::load_dir(&w._runtime, spinner.path())
        .await
        .unwrap();
    let hostile = loaded.get("hostile").unwrap();
    let spinning = spin_holding_a_slot(&w._runtime, hostile).await;
    let chat = w.chat();
    let done = end_with_lead(&chat, "please have sales call me").await;
    assert!(
        spinning.await.unwrap().result.is_err(),
        "the spinner hit its deadline"
    );
    assert_eq!(done.len(), 1, "{done:#?}");
    assert_eq!(
        done[0].delivery.state,
        callout::outbox::State::Done,
        "crm-lead does not list busy in its retry.on, and is retried all the same: {done:#?}"
    );
    let busy = done[0]
        .attempts
        .iter()
        .filter(|a| a.error_class.as_deref() == Some("busy"))
        .count();
    assert!(busy >= 1, "an attempt found the host busy: {done:#?}");
    assert_eq!(w.received().len(), 1, "delivered once");
}

#[tokio::test]
async fn ending_a_chat_delivers_the_collected_lead_once() {
    let w = Wired::examples().await;
    let chat = w.chat();
    let mut values = Map::new();
    values.insert("name".into(), json!("Ada Lovelace"));
    values.insert("email".into(), json!("ada@example.com"));
    values.insert("company".into(), json!("Analytical Engines Ltd"));
    let r = chat
        .message(
            None,
            UserMessage {
                text: "I'm Ada from Analytical Engines, please have sales call me".into(),
                intents: vec![],
                values,
            },
        )
        .await
        .unwrap();
    assert!(
        r.turns.is_empty(),
        "nothing fires on this message: {:#?}",
        r.turns
    );
    assert!(
        w.received().is_empty(),
        "a chat-end action waits for the end"
    );
    let id = r.conversation_id;

    let done = chat
        .end_and_wait(&id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done.len(), 1, "{done:#?}");
    let d = &done[0].delivery;
    assert_eq!(
        (d.action.as_str(), d.state),
        ("crm-lead", callout::outbox::State::Done),
        "{d:#?}"
    );
    let got = w.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("POST", "/crm/leads")
    );
    assert_eq!(got[0].status, 201);
    assert_eq!(
        got[0].idempotency_key.as_deref(),
        Some(d.idempotency_key.as_str()),
        "the delivery sends the key made when it was enqueued"
    );
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(
        body,
        json!({"name": "Ada Lovelace", "email": "ada@example.com", "company": "Analytical Engines Ltd"})
    );

    let again = chat.end(&id).await.unwrap();
    assert!(
        again.already_ended && again.deliveries.is_empty(),
        "a second end delivers nothing"
    );
    assert_eq!(w.received().len(), 1);
    assert!(
        chat.message(Some(&id), says("one more thing"))
            .await
            .is_err(),
        "an ended conversation takes no more messages"
    );
}

#[tokio::test]
async fn ending_a_chat_without_an_email_asks_for_it_instead_of_delivering() {
    let w = Wired::examples().await;
    let chat = w.chat();
    let mut values = Map::new();
    values.insert("name".into(), json!("Ada Lovelace"));
    let r = chat
        .message(
            None,
            UserMessage {
                text: "I'm Ada".into(),
                intents: vec![],
                values,
            },
        )
        .await
        .unwrap();
    let done = chat
        .end_and_wait(&r.conversation_id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    // The conversation never collected the email: nothing is called, and the operator sees
    // why in the dead letter.
    let d = &done[0].delivery;
    assert_eq!(d.state, callout::outbox::State::Dead, "{d:#?}");
    assert!(
        d.last_error.as_deref().is_some_and(|e| e.contains("email")),
        "{d:#?}"
    );
    assert!(w.received().is_empty(), "{:#?}", w.received());
}
