//! `callout serve` in-process, over real loopback sockets: auth and scopes, the REST routes
//! against the demo back end, JSON errors, metrics, the OpenAPI document, the admin API and
//! the watcher (a bad version never replaces a good one; hot reload under concurrent calls
//! fails no call), and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callout::config::{ApiKeySetting, KeyScope};
use callout::demo::backend::{Api, DemoBackend, Mode, new_token};
use callout::server::Server;
use callout::server::auth::Keys;
use callout::{HostConfig, Runtime, RuntimeOptions, Secrets};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::*;

pub const AGENT_KEY: &str = "agent-key-for-tests-0123456789";
pub const ADMIN_KEY: &str = "admin-key-for-tests-0123456789";

/// The example action `name`'s manifest, its component path made absolute so the manifest
/// works from any folder.
pub fn example_manifest(name: &str) -> String {
    let dir = example_actions().join(name);
    let text = std::fs::read_to_string(dir.join("action.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let component = table["component"].as_str().unwrap();
    let abs = dir.join(component).canonicalize().unwrap();
    text.replace(
        &format!("component = \"{component}\""),
        &format!("component = \"{}\"", abs.display()),
    )
}

/// The built component of example action `name`.
pub fn example_wasm(name: &str) -> PathBuf {
    let text = example_manifest(name);
    let table: toml::Table = toml::from_str(&text).unwrap();
    PathBuf::from(table["component"].as_str().unwrap())
}

/// A running server over a copy of the example actions, wired to a demo back end.
pub struct Served {
    pub url: String,
    pub backend: DemoBackend,
    pub actions: tempfile::TempDir,
    pub client: reqwest::Client,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl Served {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts with extra callout.toml text (e.g. `[server]` settings).
    pub async fn start_with(extra_config: &str) -> Self {
        let backend = DemoBackend::start(SocketAddr::from(([127, 0, 0, 1], 0)), new_token())
            .await
            .unwrap();
        let actions = tempfile::tempdir().unwrap();
        for name in callout::demo::ACTIONS {
            let d = actions.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("action.toml"), example_manifest(name)).unwrap();
            std::fs::copy(
                example_actions().join(name).join("tests.toml"),
                d.join("tests.toml"),
            )
            .unwrap();
        }
        let mut overrides: String = callout::demo::ACTIONS
            .iter()
            .chain(["order-status-2"].iter())
            .map(|n| format!("[actions.{n}.config]\nbase_url = \"{}\"\n", backend.url()))
            .collect();
        overrides.push_str(extra_config);
        let mut config = small_pool_config();
        let parsed = HostConfig::parse(&overrides).unwrap();
        config.actions = parsed.actions;
        config.server = parsed.server;
        config.outbox = parsed.outbox;
        let mut secrets = Secrets::default();
        for var in callout::demo::TOKEN_VARIABLES {
            secrets.insert(var, backend.token());
        }
        let data = tempfile::tempdir().unwrap();
        let mut options = RuntimeOptions::new(data.path());
        options.config = config;
        options.dev_loopback = vec![backend.addr.to_string()];
        options.secrets = secrets;
        let runtime = Arc::new(Runtime::new(options).unwrap());
        let keys = test_keys();
        let server = Server::start(runtime, actions.path().to_path_buf(), data.path(), keys)
            .await
            .unwrap();
        let listener = server.bind(Some("127.0.0.1:0")).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.serve(listener, stop.clone(), false));
        Self {
            url,
            backend,
            actions,
            client: reqwest::Client::new(),
            stop,
            task,
            _data: data,
        }
    }

    pub fn get(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(key)
    }

    pub fn post(&self, path: &str, key: &str, body: Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
            .json(&body)
    }

    /// GET `path` with `key`, the answer as JSON.
    pub async fn get_json(&self, path: &str, key: &str) -> Value {
        self.get(path, key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POST `body` to `path` with `key`, the answer as JSON.
    pub async fn post_json(&self, path: &str, key: &str, body: Value) -> Value {
        self.post(path, key, body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn invoke(&self, action: &str, inputs: Value) -> (StatusCode, Value) {
        let r = self
            .post(
                &format!("/v1/actions/{action}/invoke"),
                AGENT_KEY,
                json!({ "inputs": inputs }),
            )
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    pub async fn upload(
        &self,
        name: &str,
        manifest: &str,
        wasm: Option<&Path>,
    ) -> reqwest::Response {
        self.upload_with_tests(name, manifest, wasm, None).await
    }

    /// As [`Served::upload`], with a `tests` part (tests.toml) when given.
    pub async fn upload_with_tests(
        &self,
        name: &str,
        manifest: &str,
        wasm: Option<&Path>,
        tests: Option<&str>,
    ) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new().part(
            "manifest",
            reqwest::multipart::Part::bytes(manifest.as_bytes().to_vec()).file_name("action.toml"),
        );
        if let Some(w) = wasm {
            form = form.part(
                "component",
                reqwest::multipart::Part::bytes(std::fs::read(w).unwrap()).file_name("action.wasm"),
            );
        }
        if let Some(t) = tests {
            form = form.part(
                "tests",
                reqwest::multipart::Part::bytes(t.as_bytes().to_vec()).file_name("tests.toml"),
            );
        }
        self.client
            .put(format!("{}/v1/admin/actions/{name}", self.url))
            .bearer_auth(ADMIN_KEY)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn names(&self) -> Vec<String> {
        let list: Value = self.get_json("/v1/actions", AGENT_KEY).await;
        list["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Stops the server and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub fn test_keys() -> Keys {
    Keys::from_settings(
        &[
            ApiKeySetting {
                name: "agent".into(),
                scope: KeyScope::Agent,
                env: Some("AGENT".into()),
                sha256: None,
            },
            ApiKeySetting {
                name: "ops".into(),
                scope: KeyScope::Admin,
                env: Some("ADMIN".into()),
                sha256: None,
            },
        ],
        |v| match v {
            "AGENT" => Some(AGENT_KEY.into()),
            "ADMIN" => Some(ADMIN_KEY.into()),
            _ => None,
        },
    )
    .unwrap()
}

/// The order-status manifest renamed to `name`, its component as `action.wasm` in its folder.
/// Its test cases ride along as `[[case]]` tables, so the version passes the publish gate.
pub fn uploadable_order_status(name: &str, description: &str) -> String {
    let mut table: toml::Table = toml::from_str(&example_manifest("order-status")).unwrap();
    let tests: toml::Table = toml::from_str(
        &std::fs::read_to_string(example_actions().join("order-status/tests.toml")).unwrap(),
    )
    .unwrap();
    table.insert("case".into(), tests["case"].clone());
    table.insert("name".into(), name.into());
    table.insert("description".into(), description.into());
    table.insert("component".into(), "action.wasm".into());
    toml::to_string(&table).unwrap()
}

#[tokio::test]
async fn keys_and_scopes_guard_every_route_but_health_and_the_document() {
    let s = Served::start().await;
    // Public.
    let health: Value = s
        .client
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["actions"], 3);
    let doc = s
        .client
        .get(format!("{}/openapi.json", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(doc.status(), StatusCode::OK);

    // No key, a wrong key, a malformed header: 401 with the JSON error and a challenge.
    for req in [
        s.client.get(format!("{}/v1/actions", s.url)),
        s.client
            .get(format!("{}/v1/actions", s.url))
            .bearer_auth("agent-key-for-tests-012345678"),
        s.client
            .get(format!("{}/v1/actions", s.url))
            .header("authorization", AGENT_KEY),
        s.client.get(format!("{}/metrics", s.url)),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
    }
    // An agent key cannot use the admin API; an admin key can use everything.
    let r = s.get("/v1/admin/actions", AGENT_KEY).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "forbidden");
    assert_eq!(
        s.get("/v1/admin/actions", ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        s.get("/v1/actions", ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    s.stop().await;
}

#[tokio::test]
async fn actions_are_listed_with_schemas_and_invoked_as_tools() {
    let s = Served::start().await;
    assert_eq!(
        s.names().await,
        ["crm-lead", "membership-verify", "order-status"]
    );
    let one: Value = s.get_json("/v1/actions/order-status", AGENT_KEY).await;
    assert_eq!(one["trigger"], "on-prompt");
    assert_eq!(one["input_schema"]["required"], json!(["order_id"]));
    assert_eq!(one["output_schema"]["type"], "object");

    // An outcome.
    let (status, body) = s
        .invoke("order-status", json!({"order_id": "123456"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["outcome"]["data"]["order_id"], "123456", "{body}");
    assert!(body["idempotency_key"].as_str().unwrap().len() >= 16);
    // Needs-input: nothing was called.
    let before = s.backend.received().len();
    let (_, body) = s.invoke("order-status", json!({})).await;
    assert_eq!(body["status"], "needs-input");
    assert_eq!(body["error"]["fields"][0]["field"], "order_id");
    assert_eq!(body["say"], "What is your 6-digit order number?");
    assert_eq!(s.backend.received().len(), before);
    // A failure with its class, and the fallback the manifest configures.
    s.backend.set_mode(Api::Orders, Mode::Fail { status: 503 });
    let (_, body) = s
        .invoke("order-status", json!({"order_id": "123456"}))
        .await;
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["error"]["class"], "upstream");
    s.backend.set_mode(Api::Orders, Mode::Normal);

    // HTTP errors are {code, message}.
    let (status, body) = s.invoke("no-such-action", json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown-action"))
    );
    let r = s
        .client
        .post(format!("{}/v1/actions/order-status/invoke", s.url))
        .bearer_auth(AGENT_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "bad-request");
    let r = s
        .client
        .post(format!("{}/v1/actions/order-status/invoke", s.url))
        .bearer_auth(AGENT_KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = s
        .post(
            "/v1/actions/order-status/invoke",
            AGENT_KEY,
            json!({"inputz": {}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s
        .client
        .delete(format!("{}/v1/actions", s.url))
        .bearer_auth(AGENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "method-not-allowed"
    );
    let r = s.get("/v2/nothing", AGENT_KEY).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not-found");

    // Metrics count the calls by outcome class and the outbound requests by decision.
    let text = s
        .get("/metrics", AGENT_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"callout_action_calls_total{action="order-status",trigger="tool-call",outcome="ok"} 1"#,
        r#"callout_action_calls_total{action="order-status",trigger="tool-call",outcome="needs-input"} 1"#,
        r#"callout_action_calls_total{action="order-status",trigger="tool-call",outcome="upstream"} 1"#,
        r#"callout_outbound_requests_total{action="order-status",decision="allowed"}"#,
        r#"callout_api_requests_total{route="/v1/actions/{name}/invoke",status="200"}"#,
        "callout_action_call_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    // Loading makes no spare: the action's first call instantiates on its own path.
    let fresh = crate::support::instances_counted(&text, "order-status", "fresh");
    assert!(fresh.is_some_and(|n| n >= 1), "{fresh:?} in\n{text}");
    s.stop().await;
}

#[tokio::test]
async fn tests_run_dry_mock_and_live() {
    let s = Served::start().await;
    let path = "/v1/actions/order-status/test";
    let before = s.backend.received().len();
    let dry: Value = s
        .post_json(
            path,
            AGENT_KEY,
            json!({"mode": "dry-run", "inputs": {"order_id": "123456"}}),
        )
        .await;
    assert_eq!(dry["recorded"][0]["method"], "GET");
    assert!(
        dry["recorded"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/orders/123456"),
        "{dry}"
    );
    let auth = dry["recorded"][0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "authorization")
        .unwrap()[1]
        .clone();
    assert_eq!(auth, "Bearer {{secret.ORDERS_TOKEN}}");
    let mock: Value = s.post_json(path, AGENT_KEY, json!({"mode": "mock", "inputs": {"order_id": "123456"},
            "mock": {"status": 200, "headers": {"content-type": "application/json"},
                     "body": {"order_id": "123456", "status": "lost at sea", "items": [], "eta": null}}})).await;
    assert_eq!(mock["status"], "ok", "{mock}");
    assert_eq!(mock["outcome"]["data"]["status"], "lost at sea", "{mock}");
    assert_eq!(
        s.backend.received().len(),
        before,
        "dry-run and mock send nothing"
    );
    let live: Value = s
        .post_json(
            path,
            AGENT_KEY,
            json!({"mode": "live", "inputs": {"order_id": "123456"}}),
        )
        .await;
    assert_eq!(live["status"], "ok", "{live}");
    assert_eq!(s.backend.received().len(), before + 1);
    let r = s
        .post(path, AGENT_KEY, json!({"mode": "mock", "inputs": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn conversations_fire_on_prompt_actions_and_deliver_chat_end_ones() {
    let s = Served::start().await;
    // membership-verify is on-prompt; crm-lead is chat-end.
    let msg = |text: &str, values: Value| json!({"text": text, "values": values});
    let r: Value = s
        .post(
            "/v1/conversations/c-1/messages",
            AGENT_KEY,
            msg("is my membership active?", json!({})),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let turn = &r["turns"][0];
    assert_eq!(turn["action"], "membership-verify", "{r}");
    assert_eq!(turn["status"], "needs-input", "{r}");
    let r: Value = s
        .post(
            "/v1/conversations/c-1/messages",
            AGENT_KEY,
            msg(
                "it's M-1001, born 1990-04-12",
                json!({"name": "Ada", "email": "ada@example.com"}),
            ),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["turns"][0]["status"], "ok", "{r}");
    assert_eq!(r["variables"]["name"], "Ada");

    let end: Value = s
        .post_json("/v1/conversations/c-1/end", AGENT_KEY, json!({}))
        .await;
    let deliveries = end["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{end}");
    assert_eq!(end["already_ended"], false);
    assert_eq!(deliveries[0]["action"], "crm-lead");
    let key = deliveries[0]["idempotency_key"]
        .as_str()
        .unwrap()
        .to_string();
    let id = deliveries[0]["id"].as_i64().unwrap();
    // Accepted into the outbox; the workers deliver it with its key.
    wait_until("the lead is delivered", || async {
        s.backend
            .received()
            .iter()
            .any(|r| r.path == "/crm/leads" && r.idempotency_key.as_deref() == Some(key.as_str()))
    })
    .await;
    let lead = s
        .backend
        .received()
        .into_iter()
        .find(|r| r.path == "/crm/leads")
        .unwrap();
    assert!(lead.authorized);
    wait_until("the delivery is recorded as done", || async {
        let d: Value = s
            .get_json(&format!("/v1/admin/outbox/{id}"), ADMIN_KEY)
            .await;
        d["delivery"]["state"] == "done"
    })
    .await;
    let d: Value = s
        .get_json(&format!("/v1/admin/outbox/{id}"), ADMIN_KEY)
        .await;
    assert_eq!(d["attempts"][0]["attempt"], 1, "{d}");
    assert_eq!(d["delivery"]["idempotency_key"], key.as_str());
    let list: Value = s.get_json("/v1/admin/outbox?state=done", ADMIN_KEY).await;
    assert_eq!(list["counts"]["done"], 1, "{list}");
    assert_eq!(list["deliveries"][0]["id"], id);
    let r = s
        .get("/v1/admin/outbox?state=lost", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The conversation is readable; ended ones take no more messages; ending twice delivers once.
    let conv: Value = s.get_json("/v1/conversations/c-1", AGENT_KEY).await;
    assert!(conv["ended_at_ms"].is_u64());
    assert_eq!(conv["messages"][0]["text"], "is my membership active?");
    let r = s
        .post(
            "/v1/conversations/c-1/messages",
            AGENT_KEY,
            msg("hi", json!({})),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "conversation-ended"
    );
    let again: Value = s
        .post_json("/v1/conversations/c-1/end", AGENT_KEY, json!({}))
        .await;
    assert_eq!(again["deliveries"], json!([]));
    let r = s
        .post("/v1/conversations/nope/end", AGENT_KEY, json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s
        .post(
            "/v1/conversations/bad%20id/messages",
            AGENT_KEY,
            msg("x", json!({})),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn uploads_are_checked_before_they_replace_and_removals_take_effect() {
    let s = Served::start().await;
    let wasm = example_wasm("order-status");
    // A new action.
    let r = s
        .upload(
            "order-status-2",
            &uploadable_order_status("order-status-2", "v1"),
            Some(&wasm),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let (_, body) = s
        .invoke("order-status-2", json!({"order_id": "123456"}))
        .await;
    assert_eq!(body["status"], "ok", "{body}");
    assert!(
        s.actions
            .path()
            .join("order-status-2/action.wasm")
            .is_file()
    );

    // Bad versions are rejected with the reason; v1 keeps serving.
    let bad_toml = s.upload("order-status-2", "name = \"order-status-2\"\ncomponent = \"action.wasm\"\n[limits]\nmemory_mb = \"lots\"\n", Some(&wasm)).await;
    assert_eq!(bad_toml.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = bad_toml.json().await.unwrap();
    assert_eq!(body["code"], "rejected");
    assert!(
        body["message"].as_str().unwrap().contains("memory_mb"),
        "{body}"
    );
    let garbage = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(garbage.path(), b"\0asm not really").unwrap();
    let bad_wasm = s
        .upload(
            "order-status-2",
            &uploadable_order_status("order-status-2", "v2"),
            Some(garbage.path()),
        )
        .await;
    assert_eq!(bad_wasm.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let wrong_world = s
        .upload(
            "order-status-2",
            &uploadable_order_status("order-status-2", "v2"),
            Some(&crate::support::wasm("wrong_world")),
        )
        .await;
    assert_eq!(wrong_world.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let escape = s
        .upload(
            "order-status-2",
            &uploadable_order_status("order-status-2", "v2")
                .replace("\"action.wasm\"", "\"../x.wasm\""),
            Some(&wasm),
        )
        .await;
    assert_eq!(escape.status(), StatusCode::BAD_REQUEST);
    let misnamed = s
        .upload(
            "other-name",
            &uploadable_order_status("order-status-2", "v2"),
            Some(&wasm),
        )
        .await;
    assert_eq!(misnamed.status(), StatusCode::BAD_REQUEST);
    let no_component = s
        .upload(
            "order-status-2",
            &uploadable_order_status("order-status-2", "v2"),
            None,
        )
        .await;
    assert_eq!(no_component.status(), StatusCode::BAD_REQUEST);
    let info: Value = s.get_json("/v1/actions/order-status-2", AGENT_KEY).await;
    assert_eq!(info["description"], "v1");
    let (_, body) = s
        .invoke("order-status-2", json!({"order_id": "123456"}))
        .await;
    assert_eq!(body["status"], "ok", "v1 still serves: {body}");
    let leftovers: Vec<_> = std::fs::read_dir(s.actions.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging folders left behind: {leftovers:?}"
    );

    // A good new version replaces it.
    let r = s
        .upload(
            "order-status-2",
            &uploadable_order_status("order-status-2", "v2"),
            Some(&wasm),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let info: Value = s.get_json("/v1/actions/order-status-2", AGENT_KEY).await;
    assert_eq!(info["description"], "v2");

    // Removal.
    let r = s
        .client
        .delete(format!("{}/v1/admin/actions/order-status-2", s.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!s.names().await.contains(&"order-status-2".to_string()));
    assert!(!s.actions.path().join("order-status-2").exists());
    let r = s
        .client
        .delete(format!("{}/v1/admin/actions/order-status-2", s.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn hot_reload_under_concurrent_calls_fails_no_call() {
    let s = Arc::new(Served::start().await);
    let wasm = example_wasm("order-status");
    let r = s
        .upload(
            "order-status-2",
            &uploadable_order_status("order-status-2", "v0"),
            Some(&wasm),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let stop = CancellationToken::new();
    let mut callers = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        let stop = stop.clone();
        callers.push(tokio::spawn(async move {
            let mut calls = 0u32;
            while !stop.is_cancelled() {
                let (status, body) = s
                    .invoke("order-status-2", json!({"order_id": "123456"}))
                    .await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body["status"], "ok", "a call failed during reload: {body}");
                calls += 1;
            }
            calls
        }));
    }
    for v in 1..=5 {
        let r = s
            .upload(
                "order-status-2",
                &uploadable_order_status("order-status-2", &format!("v{v}")),
                Some(&wasm),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        // A bad version in between: rejected, nothing fails.
        let r = s
            .upload(
                "order-status-2",
                "name = \"order-status-2\"\ncomponent = \"action.wasm\"\nbogus = 1\n",
                Some(&wasm),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    stop.cancel();
    let mut total = 0;
    for c in callers {
        total += c.await.unwrap();
    }
    assert!(total >= 8, "the callers ran ({total} calls)");
    let info: Value = s.get_json("/v1/actions/order-status-2", AGENT_KEY).await;
    assert_eq!(info["description"], "v5");
    Arc::into_inner(s).expect("callers done").stop().await;
}

#[tokio::test]
async fn the_watcher_loads_new_versions_keeps_good_ones_over_bad_and_drops_removed() {
    let s = Served::start_with("[server]\nwatch_interval_ms = 50\n").await;
    let folder = s.actions.path().join("order-status-2");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(example_wasm("order-status"), folder.join("action.wasm")).unwrap();
    std::fs::write(
        folder.join("action.toml"),
        uploadable_order_status("order-status-2", "w1"),
    )
    .unwrap();
    wait_until("the new folder is loaded", || async {
        s.names().await.contains(&"order-status-2".to_string())
    })
    .await;
    let (_, body) = s
        .invoke("order-status-2", json!({"order_id": "123456"}))
        .await;
    assert_eq!(body["status"], "ok");

    // A broken edit: recorded as a failure; w1 keeps serving.
    std::fs::write(
        folder.join("action.toml"),
        "name = \"order-status-2\"\ncomponent = \"action.wasm\"\n[http]\nallow = 5\n",
    )
    .unwrap();
    wait_until("the broken version is reported", || async {
        let admin: Value = s.get_json("/v1/admin/actions", ADMIN_KEY).await;
        admin["failures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["file"] == "order-status-2/action.toml")
    })
    .await;
    let admin: Value = s.get_json("/v1/admin/actions", ADMIN_KEY).await;
    let failure = admin["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "order-status-2/action.toml")
        .unwrap();
    assert!(
        failure["detail"].as_str().unwrap().contains("allow"),
        "{failure}"
    );
    assert!(
        !failure["detail"]
            .as_str()
            .unwrap()
            .contains(&*s.actions.path().to_string_lossy()),
        "no internal paths: {failure}"
    );
    let info: Value = s.get_json("/v1/actions/order-status-2", AGENT_KEY).await;
    assert_eq!(info["description"], "w1");
    let health: Value = s
        .client
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded");

    // Fixed: w2 replaces w1 and the failure is gone.
    std::fs::write(
        folder.join("action.toml"),
        uploadable_order_status("order-status-2", "w2"),
    )
    .unwrap();
    wait_until("w2 serves", || async {
        let info: Value = s.get_json("/v1/actions/order-status-2", AGENT_KEY).await;
        info["description"] == "w2"
    })
    .await;
    let admin: Value = s.get_json("/v1/admin/actions", ADMIN_KEY).await;
    assert_eq!(admin["failures"], json!([]));

    // Removed folder: the action goes.
    std::fs::remove_dir_all(&folder).unwrap();
    wait_until("the removed action is gone", || async {
        !s.names().await.contains(&"order-status-2".to_string())
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_calls_in_flight() {
    let s = Served::start().await;
    s.backend
        .set_mode(Api::Orders, Mode::Slow { delay_ms: 700 });
    let url = format!("{}/v1/actions/order-status/invoke", s.url);
    let client = s.client.clone();
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(AGENT_KEY)
            .json(&json!({"inputs": {"order_id": "123456"}}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = s.url.clone();
    let started = Instant::now();
    s.stop().await;
    let body = in_flight.await.unwrap();
    assert_eq!(body["status"], "ok", "the call in flight finished: {body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // And nothing is accepted any more.
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());
}

#[tokio::test]
async fn the_server_binds_loopback_only_unless_told_and_needs_a_key() {
    let s = Served::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut options = RuntimeOptions::new(data.path());
    options.config = small_pool_config();
    let runtime = Arc::new(Runtime::new(options).unwrap());
    let err = Server::start(
        runtime.clone(),
        s.actions.path().to_path_buf(),
        data.path(),
        Keys::default(),
    )
    .await
    .err()
    .expect("no keys, no server");
    assert!(err.to_string().contains("[[server.api_keys]]"), "{err}");
    let server = Server::start(
        runtime,
        s.actions.path().to_path_buf(),
        data.path(),
        test_keys(),
    )
    .await
    .unwrap();
    // Only the decision is tested: binding is refused before any socket is opened.
    let err = server.bind(Some("0.0.0.0:0")).await.err().unwrap();
    assert!(err.to_string().contains("public = true"), "{err}");
    s.stop().await;
}

/// rmcp's own client over streamable HTTP at `/mcp` of the real server, with the real actions:
/// the agent key is required, the tools carry both schemas, a call runs the action against the
/// demo back end, and a missing input without elicitation support gets the fallback.
#[tokio::test]
async fn mcp_over_http_serves_the_real_actions_behind_the_agent_key() {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let s = Served::start().await;
    let url = format!("{}/mcp", s.url);
    // Without the key: 401 before any MCP is spoken.
    let r = s
        .client
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(url).auth_header(AGENT_KEY),
    );
    let client = ().serve(transport).await.expect("MCP session starts");
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["crm-lead", "membership-verify", "order-status"]);
    let order = tools.iter().find(|t| t.name == "order-status").unwrap();
    assert_eq!(order.input_schema["required"], json!(["order_id"]));
    assert_eq!(
        order.output_schema.as_ref().unwrap()["type"],
        json!("object")
    );

    let mut args = serde_json::Map::new();
    args.insert("order_id".into(), json!("123456"));
    let result = client
        .call_tool(CallToolRequestParams::new("order-status").with_arguments(args))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let data = result
        .structured_content
        .clone()
        .expect("structured content");
    assert_eq!(data["order_id"], "123456");
    assert!(
        s.backend
            .received()
            .iter()
            .any(|r| r.path == "/orders/123456")
    );

    // No elicitation capability: the structured fallback, and nothing was called.
    let before = s.backend.received().len();
    let result = client
        .call_tool(
            CallToolRequestParams::new("order-status").with_arguments(serde_json::Map::new()),
        )
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    let meta = result
        .meta
        .as_ref()
        .unwrap()
        .0
        .get(callout::mcp::META_NEEDS_INPUT)
        .cloned()
        .unwrap();
    assert_eq!(meta["fields"][0]["field"], "order_id", "{meta}");
    assert_eq!(s.backend.received().len(), before);
    client.cancel().await.unwrap();
    s.stop().await;
}

/// Ends a conversation whose chat-end action is crm-lead; returns the delivery id and key.
async fn end_with_a_lead(s: &Served, conv: &str) -> (i64, String) {
    let r = s
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            AGENT_KEY,
            json!({"text": "call me", "values": {"name": "Ada", "email": "ada@example.com"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let end: Value = s
        .post_json(
            &format!("/v1/conversations/{conv}/end"),
            AGENT_KEY,
            json!({}),
        )
        .await;
    let d = &end["deliveries"][0];
    (
        d["id"].as_i64().unwrap(),
        d["idempotency_key"].as_str().unwrap().to_string(),
    )
}

async fn delivery(s: &Served, id: i64) -> Value {
    s.get_json(&format!("/v1/admin/outbox/{id}"), ADMIN_KEY)
        .await
}

#[tokio::test]
async fn the_outbox_retries_transient_failures_dead_letters_the_rest_and_operators_retry_and_purge()
{
    let s = Served::start_with(
        "[outbox]\nretry_base_ms = 20\nretry_max_delay_ms = 100\npoll_ms = 20\n",
    )
    .await;

    // A CRM answering 503: retried with the same key until it comes back.
    s.backend.set_mode(Api::Crm, Mode::Fail { status: 503 });
    let (id, key) = end_with_a_lead(&s, "flaky").await;
    wait_until("a few failed attempts", || async {
        delivery(&s, id).await["delivery"]["attempts"]
            .as_u64()
            .unwrap()
            >= 3
    })
    .await;
    let d = delivery(&s, id).await;
    assert_eq!(d["delivery"]["state"], "retrying", "{d}");
    assert_eq!(d["attempts"][0]["error_class"], "server-error", "{d}");
    assert_eq!(d["attempts"][0]["http_status"], 503, "{d}");
    s.backend.set_mode(Api::Crm, Mode::Normal);
    wait_until("delivered once the CRM is back", || async {
        delivery(&s, id).await["delivery"]["state"] == "done"
    })
    .await;
    let keys: std::collections::BTreeSet<String> = s
        .backend
        .received()
        .into_iter()
        .filter(|r| r.path == "/crm/leads")
        .filter_map(|r| r.idempotency_key)
        .collect();
    assert_eq!(
        keys,
        [key].into_iter().collect(),
        "every attempt sent the one key"
    );

    // A 400 is not retried: a dead letter with its error, until an operator retries it.
    s.backend.set_mode(Api::Crm, Mode::Fail { status: 400 });
    let (dead, _) = end_with_a_lead(&s, "rejected").await;
    wait_until("dead-lettered", || async {
        delivery(&s, dead).await["delivery"]["state"] == "dead"
    })
    .await;
    let d = delivery(&s, dead).await;
    assert_eq!(d["delivery"]["attempts"], 1, "not retried: {d}");
    assert!(
        d["delivery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("client-error"),
        "{d}"
    );
    let list: Value = s.get_json("/v1/admin/outbox?state=dead", ADMIN_KEY).await;
    assert_eq!(list["counts"]["dead"], 1, "{list}");
    // Only dead or retrying entries can be retried.
    let r = s
        .post(
            &format!("/v1/admin/outbox/{id}/retry"),
            ADMIN_KEY,
            json!({}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = s
        .post("/v1/admin/outbox/999999/retry", ADMIN_KEY, json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.backend.set_mode(Api::Crm, Mode::Normal);
    let r = s
        .post(
            &format!("/v1/admin/outbox/{dead}/retry"),
            ADMIN_KEY,
            json!({}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_until("the retried dead letter is delivered", || async {
        delivery(&s, dead).await["delivery"]["state"] == "done"
    })
    .await;

    // Purge: finished entries go; an agent key may not.
    let r = s
        .post("/v1/admin/outbox/purge", AGENT_KEY, json!({"done": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = s
        .post("/v1/admin/outbox/purge", ADMIN_KEY, json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let purged: Value = s
        .post_json("/v1/admin/outbox/purge", ADMIN_KEY, json!({"done": true}))
        .await;
    assert_eq!(purged["purged"], 2, "{purged}");
    let r = s
        .get(&format!("/v1/admin/outbox/{id}"), ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}
