//! The MCP protocol layer (`callout::mcp`) with a fake backend: end to end tests of the MCP server with rmcp's own client, over an in-process byte stream
//! (what `callout mcp` serves on stdio) and over Streamable HTTP on a loopback socket.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use callout::mcp::{
    self, META_ERROR, META_NEEDS_INPUT, NeededField, ToolBackend, ToolInfo, ToolOutcome,
};
use futures::{FutureExt, future::BoxFuture};
use rmcp::{
    ClientHandler, ErrorData, RoleClient, ServiceError,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
        ElicitRequestParams, ElicitResult, ElicitationAction, ErrorCode, Implementation,
        ProtocolVersion,
    },
    service::{
        ClientLifecycleMode, ClientServiceExt, NotificationContext, RequestContext, RunningService,
    },
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// A fake backend
// ---------------------------------------------------------------------------------------------

fn order_status() -> ToolInfo {
    ToolInfo {
        name: "order-status".into(),
        description: "Look up an order".into(),
        input_schema: json!({
            "type": "object",
            "properties": {"order_id": {"type": "string", "x-prompt": "What is your order number?"}},
            "required": ["order_id"],
        }),
        output_schema: json!({
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "status": {"type": "string"}},
            "required": ["order_id", "status"],
        }),
    }
}

fn crm_lead() -> ToolInfo {
    ToolInfo {
        name: "crm-lead".into(),
        description: "Create a sales lead".into(),
        input_schema: json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 1, "x-prompt": "What is your name?"},
                "email": {"type": "string", "format": "email", "x-prompt": "What email address should we use?"},
                "company": {"type": ["string", "null"]},
            },
            "required": ["name", "email"],
        }),
        output_schema: json!({
            "type": "object",
            "properties": {"id": {"type": "string"}},
            "required": ["id"],
        }),
    }
}

fn shipping_quote() -> ToolInfo {
    ToolInfo {
        name: "shipping-quote".into(),
        description: "Quote a parcel".into(),
        input_schema: json!({
            "type": "object",
            "properties": {"parcel": {"type": "object", "properties": {"kg": {"type": "number"}}}},
            "required": ["parcel"],
        }),
        output_schema: json!({"type": "object", "properties": {"price": {"type": "number"}}}),
    }
}

#[derive(Default)]
struct Fake {
    tools: Mutex<Vec<ToolInfo>>,
    calls: Mutex<Vec<(String, Map<String, Value>)>>,
    changes: Mutex<Option<watch::Sender<()>>>,
}

impl Fake {
    fn new() -> Arc<Self> {
        let fake = Self::default();
        *fake.tools.lock().unwrap() = vec![order_status(), crm_lead(), shipping_quote()];
        *fake.changes.lock().unwrap() = Some(watch::channel(()).0);
        Arc::new(fake)
    }

    fn calls(&self) -> Vec<(String, Map<String, Value>)> {
        self.calls.lock().unwrap().clone()
    }

    fn set_tools(&self, tools: Vec<ToolInfo>) {
        *self.tools.lock().unwrap() = tools;
        if let Some(changes) = self.changes.lock().unwrap().as_ref() {
            changes.send_replace(());
        }
    }

    fn needs(field: &str, reason: &str, prompt: &str, schema: Value) -> NeededField {
        NeededField {
            field: field.into(),
            reason: reason.into(),
            prompt: Some(prompt.into()),
            schema,
        }
    }

    fn outcome(name: &str, inputs: &Map<String, Value>) -> Option<ToolOutcome> {
        let text = |key: &str| inputs.get(key).and_then(Value::as_str).map(str::to_owned);
        match name {
            "order-status" => Some(match text("order_id") {
                None => ToolOutcome::NeedsInput {
                    fields: vec![Self::needs(
                        "order_id",
                        "missing",
                        "What is your order number?",
                        json!({"type": "string"}),
                    )],
                },
                Some(id) if id == "404" => ToolOutcome::Failed {
                    class: "not-found".into(),
                    message: "no order 404".into(),
                    error: json!({"code": "ORDER_NOT_FOUND"}),
                    say: Some("I couldn't find that order.".into()),
                },
                Some(id) => ToolOutcome::Ok {
                    data: json!({"order_id": id, "status": "shipped"}),
                    reply: Some(format!("Order {id} has shipped.")),
                },
            }),
            "crm-lead" => {
                let mut fields = Vec::new();
                if text("name").is_none_or(|n| n.is_empty()) {
                    fields.push(Self::needs(
                        "name",
                        "missing",
                        "What is your name?",
                        json!({"type": "string", "minLength": 1}),
                    ));
                }
                match text("email") {
                    None => fields.push(Self::needs(
                        "email",
                        "missing",
                        "What email address should we use?",
                        json!({"type": "string", "format": "email"}),
                    )),
                    Some(email) if !email.contains('@') => fields.push(Self::needs(
                        "email",
                        "not an email address",
                        "What email address should we use?",
                        json!({"type": "string", "format": "email"}),
                    )),
                    Some(_) => {}
                }
                Some(if fields.is_empty() {
                    ToolOutcome::Ok {
                        data: json!({"id": "L-1"}),
                        reply: None,
                    }
                } else {
                    ToolOutcome::NeedsInput { fields }
                })
            }
            "shipping-quote" => Some(match inputs.get("parcel") {
                Some(_) => ToolOutcome::Ok {
                    data: json!({"price": 4.5}),
                    reply: None,
                },
                None => ToolOutcome::NeedsInput {
                    fields: vec![Self::needs(
                        "parcel",
                        "missing",
                        "How heavy is the parcel?",
                        json!({"type": "object", "properties": {"kg": {"type": "number"}}}),
                    )],
                },
            }),
            _ => None,
        }
    }
}

impl ToolBackend for Fake {
    fn tools(&self) -> Vec<ToolInfo> {
        self.tools.lock().unwrap().clone()
    }

    fn call(
        &self,
        name: &str,
        inputs: Map<String, Value>,
    ) -> BoxFuture<'static, Option<ToolOutcome>> {
        let outcome = Self::outcome(name, &inputs);
        if outcome.is_some() {
            self.calls.lock().unwrap().push((name.to_owned(), inputs));
        }
        async move { outcome }.boxed()
    }

    fn watch_tools(&self) -> Option<watch::Receiver<()>> {
        self.changes
            .lock()
            .unwrap()
            .as_ref()
            .map(watch::Sender::subscribe)
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// A client that can elicit: answers each elicitation with the next scripted answer (the last
/// one repeats) and records what it was asked. `None` declines.
#[derive(Clone, Default)]
struct User {
    answers: Arc<Mutex<Vec<Option<Value>>>>,
    asked: Arc<Mutex<Vec<ElicitRequestParams>>>,
    cancel: bool,
}

impl User {
    fn answering(answers: Vec<Option<Value>>) -> Self {
        Self {
            answers: Arc::new(Mutex::new(answers)),
            ..Self::default()
        }
    }

    fn asked(&self) -> Vec<(String, Value)> {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .map(|request| match request {
                ElicitRequestParams::FormElicitationParams {
                    message,
                    requested_schema,
                    ..
                } => (
                    message.clone(),
                    serde_json::to_value(requested_schema).unwrap(),
                ),
                other => panic!("not a form: {other:?}"),
            })
            .collect()
    }
}

impl ClientHandler for User {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_elicitation().build(),
            Implementation::new("test-user", "0"),
        )
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.asked.lock().unwrap().push(request);
        let mut answers = self.answers.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.remove(0)
        } else {
            answers[0].clone()
        };
        Ok(match answer {
            Some(content) => ElicitResult::new(ElicitationAction::Accept).with_content(content),
            None if self.cancel => ElicitResult::new(ElicitationAction::Cancel),
            None => ElicitResult::new(ElicitationAction::Decline),
        })
    }
}

/// A client without elicitation that counts `tools/list_changed` notifications.
#[derive(Clone, Default)]
struct Agent {
    version: Option<ProtocolVersion>,
    list_changed: Arc<Notify>,
}

impl ClientHandler for Agent {
    fn get_info(&self) -> ClientConfig {
        let config = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("test-agent", "0"),
        );
        match &self.version {
            Some(version) => config.with_protocol_version(version.clone()),
            None => config,
        }
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed.notify_one();
    }
}

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

/// A stdio-like connection: the server runs `mcp::serve_io` on one end of an in-memory pipe.
struct Pipe {
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn over_pipe<C: ClientHandler>(
    backend: Arc<Fake>,
    client: C,
    lifecycle: ClientLifecycleMode,
) -> (RunningService<RoleClient, C>, Pipe) {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let (reader, writer) = tokio::io::split(server_end);
    let server = tokio::spawn(mcp::serve_io(backend, reader, writer));
    let client = client
        .serve_with_lifecycle(client_end, lifecycle)
        .await
        .expect("client starts");
    (client, Pipe { server })
}

async fn pipe<C: ClientHandler>(
    backend: Arc<Fake>,
    client: C,
) -> (RunningService<RoleClient, C>, Pipe) {
    over_pipe(backend, client, ClientLifecycleMode::Initialize).await
}

fn discover() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    }
}

/// axum serving the MCP service at `/mcp` on 127.0.0.1, stopped by `shutdown`.
struct Http {
    url: String,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn http(backend: Arc<Fake>) -> Http {
    let shutdown = CancellationToken::new();
    let app =
        axum::Router::new().route_service("/mcp", mcp::http_service(backend, shutdown.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    Http {
        url,
        shutdown,
        server,
    }
}

async fn http_client<C: ClientHandler>(
    server: &Http,
    client: C,
    lifecycle: ClientLifecycleMode,
) -> RunningService<RoleClient, C> {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let transport = StreamableHttpClientTransport::with_client(
        http,
        StreamableHttpClientTransportConfig::with_uri(server.url.clone()),
    );
    client
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("client starts")
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

fn call(name: &str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("arguments are an object")
    };
    CallToolRequestParams::new(name.to_owned()).with_arguments(arguments)
}

fn texts(result: &CallToolResult) -> Vec<String> {
    result
        .content
        .iter()
        .map(|block| block.as_text().expect("text content").text.clone())
        .collect()
}

fn meta(result: &CallToolResult, key: &str) -> Value {
    result
        .meta
        .as_ref()
        .and_then(|meta| meta.0.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Lists the tools, calls one that succeeds, one that fails and one that does not exist.
async fn lists_and_calls<C: ClientHandler>(client: &RunningService<RoleClient, C>) {
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    assert_eq!(names, ["order-status", "crm-lead", "shipping-quote"]);
    let expected = order_status();
    assert_eq!(tools[0].description.as_deref(), Some("Look up an order"));
    assert_eq!(
        Value::Object((*tools[0].input_schema).clone()),
        expected.input_schema
    );
    assert_eq!(
        tools[0]
            .output_schema
            .as_deref()
            .cloned()
            .map(Value::Object),
        Some(expected.output_schema)
    );

    let ok = client
        .call_tool(call("order-status", json!({"order_id": "A1"})))
        .await
        .unwrap();
    assert_ne!(ok.is_error, Some(true));
    assert_eq!(
        ok.structured_content,
        Some(json!({"order_id": "A1", "status": "shipped"}))
    );
    let text = texts(&ok);
    assert_eq!(text[0], "Order A1 has shipped.");
    assert_eq!(
        serde_json::from_str::<Value>(&text[1]).unwrap(),
        json!({"order_id": "A1", "status": "shipped"})
    );

    let failed = client
        .call_tool(call("order-status", json!({"order_id": "404"})))
        .await
        .unwrap();
    assert_eq!(failed.is_error, Some(true));
    assert_eq!(
        failed.structured_content, None,
        "an error result must not break the output schema"
    );
    let text = texts(&failed).join("\n");
    assert!(
        text.contains("not-found") && text.contains("no order 404"),
        "{text}"
    );
    assert!(text.contains("I couldn't find that order."), "{text}");
    assert_eq!(
        meta(&failed, META_ERROR),
        json!({"class": "not-found", "message": "no order 404", "error": {"code": "ORDER_NOT_FOUND"}, "say": "I couldn't find that order."})
    );

    match client.call_tool(call("no-such-tool", json!({}))).await {
        Err(ServiceError::McpError(error)) => {
            assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
            assert!(error.message.contains("no-such-tool"), "{}", error.message);
        }
        other => panic!("expected an invalid-params error, got {other:?}"),
    }
}

fn assert_needs_input_fallback(result: &CallToolResult, tool: &str, fields: &[&str]) {
    assert_eq!(result.is_error, Some(true));
    assert_eq!(result.structured_content, None);
    let details = meta(result, META_NEEDS_INPUT);
    assert_eq!(details["status"], "needs-input");
    assert_eq!(details["tool"], tool);
    let named: Vec<&str> = details["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(named, fields);
    let text = texts(result).join("\n");
    for field in fields {
        assert!(text.contains(&format!("`{field}`")), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests: tools and results
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stdio_lists_and_calls_tools() {
    let backend = Fake::new();
    let (client, _pipe) = pipe(backend, Agent::default()).await;
    let info = client.peer_info().expect("initialized");
    assert_eq!(info.server_info.as_ref().unwrap().name, "callout");
    assert_eq!(
        info.server_info.as_ref().unwrap().version,
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        info.instructions
            .as_deref()
            .unwrap_or_default()
            .contains("tools")
    );
    assert_eq!(
        info.capabilities
            .tools
            .as_ref()
            .and_then(|t| t.list_changed),
        Some(true)
    );
    assert_eq!(info.protocol_version, ProtocolVersion::V_2025_11_25);
    lists_and_calls(&client).await;
}

#[tokio::test]
async fn http_lists_and_calls_tools() {
    let server = http(Fake::new()).await;
    let client = http_client(&server, Agent::default(), ClientLifecycleMode::Initialize).await;
    assert_eq!(
        client.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2025_11_25
    );
    lists_and_calls(&client).await;
}

#[tokio::test]
async fn stdio_2026_client_lists_and_calls_tools() {
    let (client, _pipe) = over_pipe(Fake::new(), Agent::default(), discover()).await;
    assert_eq!(
        client.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2026_07_28
    );
    lists_and_calls(&client).await;
}

#[tokio::test]
async fn http_2026_client_lists_and_calls_tools() {
    let server = http(Fake::new()).await;
    let client = http_client(&server, Agent::default(), discover()).await;
    assert_eq!(
        client.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2026_07_28
    );
    lists_and_calls(&client).await;
}

#[tokio::test]
async fn older_clients_get_their_version() {
    for (asked, answered) in [
        (ProtocolVersion::V_2024_11_05, ProtocolVersion::V_2024_11_05),
        (ProtocolVersion::V_2025_03_26, ProtocolVersion::V_2025_03_26),
        (ProtocolVersion::V_2025_06_18, ProtocolVersion::V_2025_06_18),
        (ProtocolVersion::V_2026_07_28, ProtocolVersion::V_2025_11_25),
    ] {
        let agent = Agent {
            version: Some(asked.clone()),
            ..Agent::default()
        };
        let (client, _pipe) = pipe(Fake::new(), agent).await;
        assert_eq!(
            client.peer_info().unwrap().protocol_version,
            answered,
            "asked {asked}"
        );
        let ok = client
            .call_tool(call("order-status", json!({"order_id": "A1"})))
            .await
            .unwrap();
        assert_eq!(texts(&ok)[0], "Order A1 has shipped.", "asked {asked}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests: missing inputs
// ---------------------------------------------------------------------------------------------

async fn elicits_and_calls_again<C: ClientHandler>(
    client: &RunningService<RoleClient, C>,
    user: &User,
    backend: &Fake,
) {
    let result = client
        .call_tool(call("crm-lead", json!({"company": "Acme"})))
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true), "{result:?}");
    assert_eq!(result.structured_content, Some(json!({"id": "L-1"})));

    let asked = user.asked();
    assert_eq!(asked.len(), 1);
    let (message, schema) = &asked[0];
    assert!(
        message.contains("What is your name?")
            && message.contains("What email address should we use?"),
        "{message}"
    );
    assert_eq!(
        schema,
        &json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "description": "What is your name?"},
                "email": {"type": "string", "format": "email", "description": "What email address should we use?"},
            },
            "required": ["name", "email"],
        })
    );
    let calls = backend.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        Value::Object(calls[0].1.clone()),
        json!({"company": "Acme"})
    );
    assert_eq!(
        Value::Object(calls[1].1.clone()),
        json!({"company": "Acme", "name": "Ada", "email": "ada@example.com"})
    );
}

fn ada() -> User {
    // `extra` was not asked for and is not passed on.
    User::answering(vec![Some(
        json!({"name": "Ada", "email": "ada@example.com", "extra": 1}),
    )])
}

#[tokio::test]
async fn stdio_elicits_missing_inputs() {
    let backend = Fake::new();
    let user = ada();
    let (client, _pipe) = pipe(backend.clone(), user.clone()).await;
    elicits_and_calls_again(&client, &user, &backend).await;
}

#[tokio::test]
async fn http_elicits_missing_inputs() {
    let backend = Fake::new();
    let server = http(backend.clone()).await;
    let user = ada();
    let client = http_client(&server, user.clone(), ClientLifecycleMode::Initialize).await;
    elicits_and_calls_again(&client, &user, &backend).await;
}

#[tokio::test]
async fn stdio_2026_elicits_through_input_required() {
    let backend = Fake::new();
    let user = ada();
    let (client, _pipe) = over_pipe(backend.clone(), user.clone(), discover()).await;
    elicits_and_calls_again(&client, &user, &backend).await;
}

#[tokio::test]
async fn http_2026_elicits_through_input_required() {
    let backend = Fake::new();
    let server = http(backend.clone()).await;
    let user = ada();
    let client = http_client(&server, user.clone(), discover()).await;
    elicits_and_calls_again(&client, &user, &backend).await;
}

/// A rejected answer is asked again with the reason; earlier answers are kept.
async fn asks_again_keeping_answers(lifecycle: ClientLifecycleMode) {
    let backend = Fake::new();
    let user = User::answering(vec![
        Some(json!({"name": "Ada", "email": "ada"})),
        Some(json!({"email": "ada@example.com"})),
    ]);
    let (client, _pipe) = over_pipe(backend.clone(), user.clone(), lifecycle).await;
    let result = client.call_tool(call("crm-lead", json!({}))).await.unwrap();
    assert_eq!(
        result.structured_content,
        Some(json!({"id": "L-1"})),
        "{result:?}"
    );
    let asked = user.asked();
    assert_eq!(asked.len(), 2);
    assert!(
        asked[1].0.contains("not an email address"),
        "{}",
        asked[1].0
    );
    assert_eq!(asked[1].1["required"], json!(["email"]));
    let last = backend.calls().pop().unwrap().1;
    assert_eq!(
        Value::Object(last),
        json!({"name": "Ada", "email": "ada@example.com"})
    );
}

#[tokio::test]
async fn stdio_asks_again_keeping_answers() {
    asks_again_keeping_answers(ClientLifecycleMode::Initialize).await;
}

#[tokio::test]
async fn stdio_2026_asks_again_keeping_answers() {
    asks_again_keeping_answers(discover()).await;
}

/// A user who keeps giving rejected values is asked `MAX_ELICITATION_ROUNDS` times, then the
/// call returns the questions.
async fn asks_a_bounded_number_of_times(lifecycle: ClientLifecycleMode) {
    let backend = Fake::new();
    let user = User::answering(vec![Some(json!({"name": "Ada", "email": "nope"}))]);
    let (client, _pipe) = over_pipe(backend.clone(), user.clone(), lifecycle).await;
    let result = client.call_tool(call("crm-lead", json!({}))).await.unwrap();
    assert_needs_input_fallback(&result, "crm-lead", &["email"]);
    assert_eq!(user.asked().len(), mcp::MAX_ELICITATION_ROUNDS as usize);
    assert_eq!(
        backend.calls().len(),
        mcp::MAX_ELICITATION_ROUNDS as usize + 1
    );
}

#[tokio::test]
async fn stdio_asks_a_bounded_number_of_times() {
    asks_a_bounded_number_of_times(ClientLifecycleMode::Initialize).await;
}

#[tokio::test]
async fn stdio_2026_asks_a_bounded_number_of_times() {
    asks_a_bounded_number_of_times(discover()).await;
}

async fn declining_runs_nothing(lifecycle: ClientLifecycleMode, cancel: bool) {
    let backend = Fake::new();
    let user = User {
        cancel,
        ..User::answering(vec![None])
    };
    let (client, _pipe) = over_pipe(backend.clone(), user.clone(), lifecycle).await;
    let result = client.call_tool(call("crm-lead", json!({}))).await.unwrap();
    assert_eq!(result.is_error, Some(true));
    assert_eq!(result.structured_content, None);
    let status = if cancel { "cancelled" } else { "declined" };
    assert_eq!(meta(&result, META_NEEDS_INPUT)["status"], status);
    assert!(texts(&result)[0].contains(status), "{:?}", texts(&result));
    assert_eq!(user.asked().len(), 1);
    assert_eq!(backend.calls().len(), 1);
}

#[tokio::test]
async fn stdio_decline_runs_nothing() {
    declining_runs_nothing(ClientLifecycleMode::Initialize, false).await;
}

#[tokio::test]
async fn stdio_cancel_runs_nothing() {
    declining_runs_nothing(ClientLifecycleMode::Initialize, true).await;
}

#[tokio::test]
async fn stdio_2026_decline_runs_nothing() {
    declining_runs_nothing(discover(), false).await;
}

#[tokio::test]
async fn without_elicitation_the_result_lists_the_questions() {
    for lifecycle in [ClientLifecycleMode::Initialize, discover()] {
        let backend = Fake::new();
        let (client, _pipe) = over_pipe(backend.clone(), Agent::default(), lifecycle).await;
        let result = client
            .call_tool(call("crm-lead", json!({"email": "ada"})))
            .await
            .unwrap();
        assert_needs_input_fallback(&result, "crm-lead", &["name", "email"]);
        let details = meta(&result, META_NEEDS_INPUT);
        assert_eq!(
            details["fields"],
            json!([
                {"field": "name", "reason": "missing", "prompt": "What is your name?"},
                {"field": "email", "reason": "not an email address", "prompt": "What email address should we use?"},
            ])
        );
        let text = texts(&result).join("\n");
        assert!(
            text.contains("What is your name?") && text.contains("not an email address"),
            "{text}"
        );
        assert_eq!(backend.calls().len(), 1);
    }
}

#[tokio::test]
async fn http_without_elicitation_the_result_lists_the_questions() {
    let server = http(Fake::new()).await;
    let client = http_client(&server, Agent::default(), ClientLifecycleMode::Initialize).await;
    let result = client
        .call_tool(call("order-status", json!({})))
        .await
        .unwrap();
    assert_needs_input_fallback(&result, "order-status", &["order_id"]);
}

#[tokio::test]
async fn a_field_no_form_can_hold_is_not_elicited() {
    let backend = Fake::new();
    let user = ada();
    let (client, _pipe) = pipe(backend.clone(), user.clone()).await;
    let result = client
        .call_tool(call("shipping-quote", json!({})))
        .await
        .unwrap();
    assert_needs_input_fallback(&result, "shipping-quote", &["parcel"]);
    assert!(user.asked().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Tests: a changing tool list, transports' ends
// ---------------------------------------------------------------------------------------------

async fn list_follows_the_backend<C: ClientHandler>(
    client: &RunningService<RoleClient, C>,
    backend: &Fake,
    notified: Option<&Notify>,
) {
    let names = |tools: Vec<rmcp::model::Tool>| {
        tools
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(client.list_all_tools().await.unwrap()),
        ["order-status", "crm-lead", "shipping-quote"]
    );
    backend.set_tools(vec![crm_lead()]);
    if let Some(notified) = notified {
        tokio::time::timeout(Duration::from_secs(5), notified.notified())
            .await
            .expect("tools/list_changed");
    }
    assert_eq!(names(client.list_all_tools().await.unwrap()), ["crm-lead"]);
}

#[tokio::test]
async fn stdio_list_follows_the_backend() {
    let backend = Fake::new();
    let agent = Agent::default();
    let (client, _pipe) = pipe(backend.clone(), agent.clone()).await;
    list_follows_the_backend(&client, &backend, Some(&agent.list_changed)).await;
}

#[tokio::test]
async fn http_list_follows_the_backend() {
    let backend = Fake::new();
    let server = http(backend.clone()).await;
    let agent = Agent::default();
    let client = http_client(&server, agent.clone(), ClientLifecycleMode::Initialize).await;
    list_follows_the_backend(&client, &backend, Some(&agent.list_changed)).await;
}

#[tokio::test]
async fn stdio_2026_list_follows_the_backend_and_subscribers_hear_of_it() {
    let backend = Fake::new();
    let (client, _pipe) = over_pipe(backend.clone(), Agent::default(), discover()).await;
    let filter = rmcp::model::SubscriptionFilter::builder()
        .tools_list_changed()
        .build();
    let mut subscription = client.peer().listen(filter).await.unwrap();
    assert_eq!(subscription.acknowledged().tools_list_changed, Some(true));
    list_follows_the_backend(&client, &backend, None).await;
    let notification = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("in time")
        .unwrap();
    assert!(
        matches!(
            notification,
            Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))
        ),
        "{notification:?}"
    );
}

#[tokio::test]
async fn without_a_watch_no_list_changed_is_advertised() {
    let backend = Fake::new();
    *backend.changes.lock().unwrap() = None;
    let (client, _pipe) = pipe(backend.clone(), Agent::default()).await;
    let tools = client
        .peer_info()
        .unwrap()
        .capabilities
        .tools
        .clone()
        .unwrap();
    assert_eq!(tools.list_changed, None);
    list_follows_the_backend(&client, &backend, None).await;
}

#[tokio::test]
async fn stdio_serving_ends_when_the_client_leaves() {
    let (client, pipe) = pipe(Fake::new(), Agent::default()).await;
    client.cancel().await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(5), pipe.server)
        .await
        .expect("server ends")
        .unwrap();
    served.unwrap();

    // A stream that ends before any message is a clean end too.
    let (client_end, server_end) = tokio::io::duplex(1024);
    drop(client_end);
    let (reader, writer) = tokio::io::split(server_end);
    mcp::serve_io(Fake::new(), reader, writer).await.unwrap();
}

#[tokio::test]
async fn http_shutdown_ends_open_sessions() {
    let server = http(Fake::new()).await;
    let client = http_client(&server, Agent::default(), ClientLifecycleMode::Initialize).await;
    client.list_all_tools().await.unwrap();
    server.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), server.server)
        .await
        .expect("graceful shutdown ends");
    stopped.unwrap().unwrap();
    assert!(client.list_all_tools().await.is_err(), "the server is gone");
}

#[tokio::test]
async fn http_rejects_other_hosts() {
    let server = http(Fake::new()).await;
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(&server.url)
        .header("host", "attacker.example")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

/// What a client built on another SDK reads: the raw JSON-RPC lines of a `2025-06-18` session.
#[tokio::test]
async fn wire_format_for_a_2025_06_18_client() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let (reader, writer) = tokio::io::split(server_end);
    let server = tokio::spawn(mcp::serve_io(Fake::new(), reader, writer));
    let (client_read, mut client_write) = tokio::io::split(client_end);
    let mut lines = BufReader::new(client_read).lines();
    let messages = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "order-status", "arguments": {"order_id": "A1"}}}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "order-status", "arguments": {"order_id": "404"}}}),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "order-status", "arguments": {}}}),
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "nope", "arguments": {}}}),
    ];
    let mut replies = std::collections::BTreeMap::new();
    for message in messages {
        client_write
            .write_all(format!("{message}\n").as_bytes())
            .await
            .unwrap();
        if message.get("id").is_none() {
            continue;
        }
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let reply: Value = serde_json::from_str(&line).unwrap();
        replies.insert(reply["id"].as_i64().unwrap(), reply);
    }
    assert_eq!(replies[&1]["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(replies[&1]["result"]["serverInfo"]["name"], "callout");
    assert_eq!(
        replies[&2]["result"],
        json!({
            "content": [
                {"type": "text", "text": "Order A1 has shipped."},
                {"type": "text", "text": r#"{"order_id":"A1","status":"shipped"}"#},
            ],
            "structuredContent": {"order_id": "A1", "status": "shipped"},
            "isError": false,
        })
    );
    let failed = &replies[&3]["result"];
    assert_eq!(failed["isError"], true);
    assert!(failed.get("structuredContent").is_none(), "{failed}");
    assert_eq!(failed["_meta"]["callout/error"]["class"], "not-found");
    let needs = &replies[&4]["result"];
    assert_eq!(needs["isError"], true);
    assert!(needs.get("structuredContent").is_none(), "{needs}");
    assert_eq!(
        needs["_meta"]["callout/needs-input"]["fields"][0]["field"],
        "order_id"
    );
    assert_eq!(replies[&5]["error"]["code"], -32602);

    drop((client_write, lines));
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
