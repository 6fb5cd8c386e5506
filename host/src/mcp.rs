//! The MCP server: every loaded action served as a Model Context Protocol tool, over stdio
//! (`callout mcp`, [`serve_stdio`]) and Streamable HTTP (mounted at `/mcp`, [`http_service`]).
//!
//! The server is built on `rmcp` 3 and speaks every revision it implements: `2024-11-05`,
//! `2025-03-26`, `2025-06-18` and `2025-11-25` over the `initialize` handshake (the server echoes
//! the client's version; a client asking for a revision without a handshake gets `2025-11-25`,
//! the newest one with it), and `2026-07-28`, which has no handshake: each request carries its
//! version and the client's capabilities in `_meta`.
//!
//! How an action maps to MCP:
//! - **Tool**: the action's name, description, input schema (`inputSchema`) and output schema
//!   (`outputSchema`). `tools/list` asks the [`ToolBackend`] on every call, so a hot reload shows
//!   at the next list. When the backend can say that its list changed
//!   ([`ToolBackend::watch_tools`]), the server advertises `tools.listChanged` and sends
//!   `notifications/tools/list_changed` (on `2026-07-28`, to `subscriptions/listen` subscribers).
//! - **Outcome** → a result with `structuredContent` = the action's data (which conforms to the
//!   output schema) and `content` = the reply for the user, if any, then the data as JSON text
//!   (the spec's advice for clients that read no structured content).
//! - **Failure** → a result with `isError: true`, one text block (class, message and, when the
//!   action has one, what to tell the user), and the details under `_meta["callout/error"]`.
//! - **Needs input** → the user is asked through elicitation (`elicitation/create` before
//!   `2026-07-28`, an `input_required` result from `2026-07-28` on) when the client declared the
//!   elicitation capability; otherwise an `isError: true` result whose text lists the questions to
//!   ask, with the fields under `_meta["callout/needs-input"]`. The user's answers are added to
//!   the arguments and the action runs again, up to [`MAX_ELICITATION_ROUNDS`] times. A user who
//!   declines or cancels gets an `isError: true` result too (status `declined` / `cancelled`):
//!   nothing ran, and a result that is not an error must carry conforming structured content.
//! - **Unknown tool** → the JSON-RPC error `-32602` (invalid params), as the spec's tools page says.
//!
//! No error result carries `structuredContent`: the spec says a tool with an output schema MUST
//! return structured content that conforms to it, and clients validate any structured content
//! they get (the TypeScript SDK does so even on `isError: true` results and throws on a mismatch,
//! losing the whole result). The error object and the missing fields would not conform, so they
//! travel in the text and in `_meta`, which no schema governs.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, ServiceExt,
    model::{
        BooleanSchema, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
        ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationSchema,
        EnumSchema, InputRequest, InputRequiredResult, IntegerSchema, JsonObject, ListToolsResult,
        MetaObject, NumberSchema, PaginatedRequestParams, PrimitiveSchemaDefinition,
        ServerCapabilities, ServerConfig, StringFormat, StringSchema, SubscriptionFilter, Tool,
    },
    service::{NotificationContext, RequestContext, SubscriptionContext},
    transport::{
        StreamableHttpServerConfig, StreamableHttpService,
        streamable_http_server::session::local::LocalSessionManager,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};

/// One action as a tool.
#[derive(Clone, Debug)]
pub struct ToolInfo {
    /// The tool's name: the action's kebab-case name.
    pub name: String,
    /// What the action does, shown to the model choosing a tool.
    pub description: String,
    /// The JSON Schema of the action's inputs; an object schema (anything else is served as
    /// `{"type": "object"}`, since MCP requires an object schema).
    pub input_schema: Value,
    /// The JSON Schema of the action's `data`; an object schema (anything else is left out of
    /// the tool, since MCP output schemas are object schemas).
    pub output_schema: Value,
}

/// One input still to collect.
#[derive(Clone, Debug)]
pub struct NeededField {
    /// The input's name (a top-level property of the input schema).
    pub field: String,
    /// Why it is needed: missing, or why the given value was rejected.
    pub reason: String,
    /// The question to ask the user, when the action has one (`x-prompt`).
    pub prompt: Option<String>,
    /// The property's schema from the input schema, `{}` if unknown; it shapes the elicitation
    /// form field.
    pub schema: Value,
}

/// What a call produced.
#[derive(Clone, Debug)]
pub enum ToolOutcome {
    /// The action ran.
    Ok {
        /// The action's structured result; conforms to the tool's output schema.
        data: Value,
        /// Text for the user, if the action wrote one.
        reply: Option<String>,
    },
    /// Required inputs are missing or invalid: nothing was called.
    NeedsInput {
        /// The inputs to collect, in the order to ask for them.
        fields: Vec<NeededField>,
    },
    /// The action failed.
    Failed {
        /// The stable failure class: `not-found`, `upstream`, `denied`, `deadline`,
        /// `invalid-input`, ...
        class: String,
        /// What went wrong, for the agent.
        message: String,
        /// The structured error object.
        error: Value,
        /// What to tell the user instead, if the action has a fallback message.
        say: Option<String>,
    },
}

/// What the MCP server serves. Implemented by the host over its hot-reloadable registry, so
/// `tools()` may change between calls.
pub trait ToolBackend: Send + Sync + 'static {
    /// The tools now; asked on every `tools/list`, so keep it cheap.
    fn tools(&self) -> Vec<ToolInfo>;
    /// Runs the tool `name` with `inputs`. `None` when no such tool.
    fn call(
        &self,
        name: &str,
        inputs: Map<String, Value>,
    ) -> BoxFuture<'static, Option<ToolOutcome>>;
    /// A receiver that is marked changed whenever `tools()` may have changed (a reload). With it
    /// the server advertises `tools.listChanged` and notifies its clients; without it (the
    /// default, `None`) clients see changes at their next `tools/list`. Each call should return a
    /// fresh receiver (`watch::Sender::subscribe`).
    fn watch_tools(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        None
    }
}

/// How many times one `tools/call` asks the user for inputs before it returns the needs-input
/// result instead (the user keeps giving values the action rejects).
pub const MAX_ELICITATION_ROUNDS: u32 = 3;

/// How long the server waits for the user to answer one elicitation before it gives up and
/// returns the needs-input result: 10 minutes, time for a person to find a member id.
pub const ELICITATION_TIMEOUT: Duration = Duration::from_secs(600);

/// The `_meta` key of a failure's details on an `isError` result:
/// `{"class", "message", "error", "say"?}` (`error` is the action's structured error object).
pub const META_ERROR: &str = "callout/error";

/// The `_meta` key of the inputs still needed on an `isError` result:
/// `{"status": "needs-input" | "declined" | "cancelled", "tool", "fields": [{"field", "reason"?,
/// "prompt"?}]}` (`reason` and `prompt` only with `needs-input`).
pub const META_NEEDS_INPUT: &str = "callout/needs-input";

/// The key of the elicitation in an `input_required` result (`2026-07-28`).
const INPUT_KEY: &str = "inputs";

const INSTRUCTIONS: &str = "Callout runs API actions for you as tools: each looks something up \
or changes something in a business system (an order's status, a membership, a CRM lead). A tool's \
input schema says what to collect from the user. When an input is missing or invalid the server \
asks the user itself if your client supports elicitation; otherwise the result (isError) lists \
the questions to ask: ask them, then call the tool again with the answers added. When a tool \
fails, the result gives the error class and, when there is one, what to tell the user.";

/// The MCP server handler over a [`ToolBackend`]. One value serves one connection or HTTP
/// session; [`serve_stdio`], [`serve_io`] and [`http_service`] build it, so the host needs it
/// only to serve another transport.
#[derive(Clone)]
pub struct McpServer {
    backend: Arc<dyn ToolBackend>,
    list_changed: bool,
    /// Cancelled when the last clone of this session's handler is dropped: ends the task that
    /// forwards list changes to the client.
    session_ended: CancellationToken,
    _session: Arc<DropGuard>,
    /// Set once the forwarding task runs, so a repeated `initialized` starts no second one.
    watching: Arc<AtomicBool>,
}

impl McpServer {
    /// A handler for one connection. Whether it advertises `tools.listChanged` is decided here,
    /// from [`ToolBackend::watch_tools`].
    pub fn new(backend: Arc<dyn ToolBackend>) -> Self {
        let list_changed = backend.watch_tools().is_some();
        Self::session(backend, list_changed)
    }

    fn session(backend: Arc<dyn ToolBackend>, list_changed: bool) -> Self {
        let session_ended = CancellationToken::new();
        Self {
            backend,
            list_changed,
            _session: Arc::new(session_ended.clone().drop_guard()),
            session_ended,
            watching: Arc::default(),
        }
    }

    /// Runs a call, asking the user for missing inputs while the client can be asked.
    async fn run_call(
        &self,
        request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let arguments = request.arguments.unwrap_or_default();
        // The user's answers so far; they win over the arguments.
        let mut answers = Map::new();
        let handshake_less = context
            .protocol_version()
            .is_some_and(|version| !version.has_initialize());
        let mut round = 0;

        // A `2026-07-28` retry: the client sends its first arguments again, the latest answers,
        // and the state of the earlier rounds.
        if let Some(state) = request.request_state.as_deref() {
            let state = RetryState::decode(state, &name)?;
            round = state.round;
            answers = state.answers;
            if let Some(response) = request
                .input_responses
                .as_ref()
                .and_then(|r| r.get(INPUT_KEY))
            {
                let response: ElicitResult =
                    serde_json::from_value(response.clone()).map_err(|e| {
                        McpError::invalid_params(
                            format!("inputResponses.{INPUT_KEY} is not an elicitation result: {e}"),
                            None,
                        )
                    })?;
                match response.action {
                    ElicitationAction::Accept => {
                        merge_answers(&mut answers, response.content, &state.asked);
                    }
                    action => return Ok(declined_result(&name, &state.asked, &action).into()),
                }
            }
        }

        loop {
            let mut inputs = arguments.clone();
            inputs.extend(answers.clone());
            let outcome = self
                .backend
                .call(&name, inputs.clone())
                .await
                .ok_or_else(|| McpError::invalid_params(format!("unknown tool: {name}"), None))?;
            let fields = match outcome {
                ToolOutcome::Ok { data, reply } => return Ok(success_result(data, reply).into()),
                ToolOutcome::Failed {
                    class,
                    message,
                    error,
                    say,
                } => return Ok(failed_result(&name, class, message, error, say).into()),
                ToolOutcome::NeedsInput { fields } => fields,
            };
            let form = (round < MAX_ELICITATION_ROUNDS && supports_form_elicitation(context))
                .then(|| elicitation_form(&name, &fields, &inputs))
                .flatten();
            let Some(form) = form else {
                return Ok(needs_input_result(&name, &fields).into());
            };
            round += 1;
            let asked: Vec<String> = fields.iter().map(|f| f.field.clone()).collect();

            if handshake_less {
                // No server-to-client requests on `2026-07-28`: the client asks the user and
                // calls again with the answer and this state.
                let state = RetryState {
                    tool: name,
                    round,
                    asked,
                    answers,
                };
                let elicit = InputRequest::Elicitation(ElicitRequest::new(form));
                let result = InputRequiredResult::new(
                    Some(BTreeMap::from([(INPUT_KEY.to_owned(), elicit)])),
                    Some(state.encode()),
                );
                return Ok(result.into());
            }

            match context
                .peer
                .create_elicitation_with_timeout(form, Some(ELICITATION_TIMEOUT))
                .await
            {
                Ok(answer) => match answer.action {
                    ElicitationAction::Accept => {
                        merge_answers(&mut answers, answer.content, &asked);
                    }
                    action => return Ok(declined_result(&name, &asked, &action).into()),
                },
                Err(error) => {
                    tracing::warn!(tool = %name, %error, "elicitation failed; returning the questions");
                    return Ok(needs_input_result(&name, &fields).into());
                }
            }
        }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::builder().enable_tools();
        if self.list_changed {
            capabilities = capabilities.enable_tool_list_changed();
        }
        let mut info = ServerConfig::new(capabilities.build()).with_instructions(INSTRUCTIONS);
        info.server_info = rmcp::model::Implementation::new("callout", env!("CARGO_PKG_VERSION"));
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools = self.backend.tools().into_iter().map(to_tool).collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.backend
            .tools()
            .into_iter()
            .find(|tool| tool.name == name)
            .map(to_tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let cancelled = context.ct.clone();
        tokio::select! {
            result = self.run_call(request, &context) => result,
            () = cancelled.cancelled() => Err(McpError::internal_error("the call was cancelled", None)),
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Sessions with a handshake: forward list changes until the session ends.
        if !self.list_changed || self.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(mut changes) = self.backend.watch_tools() else {
            return;
        };
        let peer = context.peer;
        let ended = self.session_ended.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = ended.cancelled() => break,
                    changed = changes.changed() => {
                        if changed.is_err() || peer.notify_tool_list_changed().await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }

    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        self.list_changed
            .then(|| SubscriptionFilter::builder().tools_list_changed().build())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        // `2026-07-28`: list changes go to the subscribers of `subscriptions/listen`.
        let wanted = context.accepted().tools_list_changed == Some(true);
        let Some(mut changes) = self.backend.watch_tools().filter(|_| wanted) else {
            context.cancelled().await;
            return Ok(());
        };
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() {
                        context.cancelled().await;
                        return Ok(());
                    }
                    if context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Serves MCP on stdin/stdout (for `callout mcp`) until stdin closes. Nothing else may write to
/// stdout meanwhile: log to stderr.
pub async fn serve_stdio(backend: Arc<dyn ToolBackend>) -> anyhow::Result<()> {
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    serve_io(backend, stdin, stdout).await
}

/// Serves MCP over any byte stream pair (newline-delimited JSON-RPC, as on stdio) until the
/// reader reaches its end: what [`serve_stdio`] runs, open for tests and other pipes. A stream
/// that ends before the client's first message is a clean end, not an error.
pub async fn serve_io<R, W>(
    backend: Arc<dyn ToolBackend>,
    reader: R,
    writer: W,
) -> anyhow::Result<()>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let running = match McpServer::new(backend).serve((reader, writer)).await {
        Ok(running) => running,
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    running.waiting().await?;
    Ok(())
}

/// Options of the Streamable HTTP transport.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// The `Host` header values accepted (`host` or `host:port`), against DNS rebinding: other
    /// requests get 403. Default: `localhost`, `127.0.0.1`, `::1` (any port), enough for a
    /// server bound to loopback; a server reachable under another name must list it. Empty
    /// accepts every host.
    pub allowed_hosts: Vec<String>,
    /// The browser `Origin`s accepted (`scheme://host:port`, `:*` for any port); requests without
    /// `Origin` always pass. Default: empty, which checks no origin.
    pub allowed_origins: Vec<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: Vec::new(),
        }
    }
}

/// The Streamable HTTP transport: a tower service (`Clone`, error `Infallible`) for axum 0.8.
pub type HttpService = StreamableHttpService<McpServer, LocalSessionManager>;

/// The Streamable HTTP transport with the default [`HttpOptions`] (loopback hosts only). Mount it
/// at `/mcp`: `router.route_service("/mcp", mcp::http_service(backend, shutdown.clone()))`.
/// Clients with a handshake get a session (`Mcp-Session-Id`), closed after 5 minutes idle;
/// `2026-07-28` requests are served without one. Cancelling `shutdown` ends every session and
/// its open event streams, so pass the token that starts the server's graceful shutdown (an open
/// stream would otherwise hold it up).
pub fn http_service(backend: Arc<dyn ToolBackend>, shutdown: CancellationToken) -> HttpService {
    http_service_with(backend, shutdown, HttpOptions::default())
}

/// [`http_service`] with explicit [`HttpOptions`].
pub fn http_service_with(
    backend: Arc<dyn ToolBackend>,
    shutdown: CancellationToken,
    options: HttpOptions,
) -> HttpService {
    let list_changed = backend.watch_tools().is_some();
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(options.allowed_hosts)
        .with_allowed_origins(options.allowed_origins)
        .with_cancellation_token(shutdown.child_token());
    StreamableHttpService::new(
        move || Ok(McpServer::session(backend.clone(), list_changed)),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

fn to_tool(info: ToolInfo) -> Tool {
    let input_schema = match info.input_schema {
        Value::Object(schema) => schema,
        _ => {
            tracing::warn!(tool = %info.name, "input schema is not an object; served as {{\"type\": \"object\"}}");
            JsonObject::from_iter([("type".to_owned(), json!("object"))])
        }
    };
    let tool = Tool::new(info.name, info.description, Arc::new(input_schema));
    match info.output_schema {
        Value::Object(schema) => tool.with_raw_output_schema(Arc::new(schema)),
        _ => tool,
    }
}

fn success_result(data: Value, reply: Option<String>) -> CallToolResult {
    let mut result = CallToolResult::structured(data);
    if let Some(reply) = reply {
        result.content.insert(0, ContentBlock::text(reply));
    }
    result
}

fn failed_result(
    tool: &str,
    class: String,
    message: String,
    error: Value,
    say: Option<String>,
) -> CallToolResult {
    let mut text = format!("`{tool}` failed ({class}): {message}");
    if let Some(say) = &say {
        text.push_str("\nTell the user: ");
        text.push_str(say);
    }
    let mut details = json!({ "class": class, "message": message, "error": error });
    if let Some(say) = say {
        details["say"] = Value::String(say);
    }
    with_meta(
        CallToolResult::error(vec![ContentBlock::text(text)]),
        META_ERROR,
        details,
    )
}

fn needs_input_result(tool: &str, fields: &[NeededField]) -> CallToolResult {
    let mut text = format!(
        "`{tool}` was not run: it needs input from the user. Ask the user, then call `{tool}` \
         again with the same arguments plus these:"
    );
    for field in fields {
        text.push_str(&format!("\n- `{}`", field.field));
        if let Some(prompt) = &field.prompt {
            text.push_str(&format!(": {prompt}"));
        }
        text.push_str(&format!(" ({})", field.reason));
    }
    let details = needs_input_details(
        "needs-input",
        tool,
        fields.iter().map(|f| {
            let mut entry = json!({ "field": f.field, "reason": f.reason });
            if let Some(prompt) = &f.prompt {
                entry["prompt"] = Value::String(prompt.clone());
            }
            entry
        }),
    );
    with_meta(
        CallToolResult::error(vec![ContentBlock::text(text)]),
        META_NEEDS_INPUT,
        details,
    )
}

fn declined_result(tool: &str, asked: &[String], action: &ElicitationAction) -> CallToolResult {
    let (status, verb) = match action {
        ElicitationAction::Cancel => ("cancelled", "cancelled the request for"),
        _ => ("declined", "declined to give"),
    };
    let list = asked
        .iter()
        .map(|field| format!("`{field}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!("`{tool}` was not run: the user {verb} {list}.");
    let details = needs_input_details(status, tool, asked.iter().map(|f| json!({ "field": f })));
    with_meta(
        CallToolResult::error(vec![ContentBlock::text(text)]),
        META_NEEDS_INPUT,
        details,
    )
}

fn needs_input_details(status: &str, tool: &str, fields: impl Iterator<Item = Value>) -> Value {
    json!({ "status": status, "tool": tool, "fields": fields.collect::<Vec<_>>() })
}

fn with_meta(result: CallToolResult, key: &str, value: Value) -> CallToolResult {
    let mut meta = MetaObject::new();
    meta.0.insert(key.to_owned(), value);
    result.with_meta(Some(meta))
}

/// Whether the client said it can show form elicitations. A bare `elicitation: {}` (the
/// `2025-06-18` form) means form mode.
fn supports_form_elicitation(context: &RequestContext<RoleServer>) -> bool {
    context
        .client_capabilities()
        .and_then(|capabilities| capabilities.elicitation)
        .is_some_and(|elicitation| elicitation.form.is_some() || elicitation.url.is_none())
}

/// The elicitation request for `fields`, or `None` when one of them cannot be a form field (an
/// object, an array, a union of types): then the needs-input result asks through the agent.
fn elicitation_form(
    tool: &str,
    fields: &[NeededField],
    inputs: &Map<String, Value>,
) -> Option<ElicitRequestParams> {
    let mut properties = BTreeMap::new();
    let mut message = format!("`{tool}` needs a few details:");
    for field in fields {
        properties.insert(field.field.clone(), form_field(field)?);
        let question = field
            .prompt
            .clone()
            .unwrap_or_else(|| format!("{}: {}", field.field, field.reason));
        message.push_str("\n- ");
        message.push_str(&question);
        // A given value that was rejected: say why.
        if field.prompt.is_some() && inputs.get(&field.field).is_some_and(|v| !v.is_null()) {
            message.push_str(&format!(" ({})", field.reason));
        }
    }
    let order: Vec<String> = fields.iter().map(|f| f.field.clone()).collect();
    let mut schema = ElicitationSchema::new(properties).with_required(order.clone());
    schema.property_order = Some(order);
    Some(ElicitRequestParams::FormElicitationParams {
        meta: None,
        message,
        requested_schema: schema,
    })
}

/// One form field from a property schema, within what elicitation allows: a string (lengths and
/// the formats email, uri, date, date-time), an integer or number (bounds), a boolean, or a
/// single choice of strings. Other keywords (`pattern`, ...) are dropped: the action checks the
/// answer and asks again. Nullable types (`["string", "null"]`) count as their other type; an
/// unknown schema (`{}`) becomes a string.
fn form_field(field: &NeededField) -> Option<PrimitiveSchemaDefinition> {
    let empty = Map::new();
    let schema = field.schema.as_object().unwrap_or(&empty);
    let text = |key: &str| schema.get(key).and_then(Value::as_str).map(str::to_owned);
    let title = text("title");
    let description = field.prompt.clone().or_else(|| text("description"));

    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        let choices: Vec<String> = choices
            .iter()
            .filter(|choice| !choice.is_null())
            .map(|choice| choice.as_str().map(str::to_owned))
            .collect::<Option<_>>()?;
        if choices.is_empty() {
            return None;
        }
        let mut builder = EnumSchema::builder(choices);
        if let Some(title) = title {
            builder = builder.title(title);
        }
        if let Some(description) = description {
            builder = builder.description(description);
        }
        return Some(PrimitiveSchemaDefinition::Enum(builder.build()));
    }

    let kind = match schema.get("type") {
        None if ["properties", "items", "oneOf", "anyOf", "allOf", "const"]
            .iter()
            .any(|key| schema.contains_key(*key)) =>
        {
            return None;
        }
        None => "string",
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => {
            let mut kinds = kinds.iter().filter(|kind| kind.as_str() != Some("null"));
            match (kinds.next().and_then(Value::as_str), kinds.next()) {
                (Some(kind), None) => kind,
                _ => return None,
            }
        }
        Some(_) => return None,
    };
    let unsigned = |key: &str| {
        schema
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let property = match kind {
        "string" => {
            let mut string = StringSchema::new();
            if let Some(min) = unsigned("minLength") {
                string = string.min_length(min);
            }
            if let Some(max) = unsigned("maxLength") {
                string = string.max_length(max);
            }
            let format = match schema.get("format").and_then(Value::as_str) {
                Some("email") => Some(StringFormat::Email),
                Some("uri") => Some(StringFormat::Uri),
                Some("date") => Some(StringFormat::Date),
                Some("date-time") => Some(StringFormat::DateTime),
                _ => None,
            };
            if let Some(format) = format {
                string = string.format(format);
            }
            string.title = title.map(Cow::Owned);
            string.description = description.map(Cow::Owned);
            PrimitiveSchemaDefinition::String(string)
        }
        "integer" => {
            let mut integer = IntegerSchema::new();
            if let Some(min) = schema.get("minimum").and_then(Value::as_i64) {
                integer = integer.minimum(min);
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_i64) {
                integer = integer.maximum(max);
            }
            integer.title = title.map(Cow::Owned);
            integer.description = description.map(Cow::Owned);
            PrimitiveSchemaDefinition::Integer(integer)
        }
        "number" => {
            let mut number = NumberSchema::new();
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                number = number.minimum(min);
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                number = number.maximum(max);
            }
            number.title = title.map(Cow::Owned);
            number.description = description.map(Cow::Owned);
            PrimitiveSchemaDefinition::Number(number)
        }
        "boolean" => {
            let mut boolean = BooleanSchema::new();
            boolean.title = title.map(Cow::Owned);
            boolean.description = description.map(Cow::Owned);
            PrimitiveSchemaDefinition::Boolean(boolean)
        }
        _ => return None,
    };
    Some(property)
}

/// Adds the user's answers: only the fields asked for, and no nulls.
fn merge_answers(answers: &mut Map<String, Value>, content: Option<Value>, asked: &[String]) {
    let Some(Value::Object(content)) = content else {
        return;
    };
    for (field, value) in content {
        if !value.is_null() && asked.contains(&field) {
            answers.insert(field, value);
        }
    }
}

/// What a `2026-07-28` client echoes back (`requestState`) when it calls again after an
/// elicitation: the round, the fields asked, and the answers of earlier rounds (the client sends
/// only its first arguments and the latest answers). Nothing in it needs protecting from the
/// client: it holds the client's own answers, which it could as well put in the arguments, and
/// the action checks every input.
#[derive(Serialize, Deserialize)]
struct RetryState {
    tool: String,
    round: u32,
    asked: Vec<String>,
    answers: Map<String, Value>,
}

impl RetryState {
    fn encode(&self) -> String {
        serde_json::to_string(self).expect("a map of JSON values serializes")
    }

    fn decode(state: &str, tool: &str) -> Result<Self, McpError> {
        let state: Self = serde_json::from_str(state)
            .map_err(|e| McpError::invalid_params(format!("invalid requestState: {e}"), None))?;
        if state.tool != tool {
            return Err(McpError::invalid_params(
                format!("requestState belongs to `{}`, not `{tool}`", state.tool),
                None,
            ));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(schema: Value) -> NeededField {
        NeededField {
            field: "f".into(),
            reason: "missing".into(),
            prompt: Some("What is f?".into()),
            schema,
        }
    }

    fn wire(property: Option<PrimitiveSchemaDefinition>) -> Value {
        serde_json::to_value(property.expect("a form field")).unwrap()
    }

    #[test]
    fn form_fields_keep_only_what_elicitation_allows() {
        let string = wire(form_field(&field(json!({
            "type": ["string", "null"], "format": "email", "pattern": "^.+@.+$",
            "minLength": 3, "maxLength": 200, "title": "Email", "x-prompt": "ignored"
        }))));
        assert_eq!(
            string,
            json!({"type": "string", "format": "email", "minLength": 3, "maxLength": 200,
                   "title": "Email", "description": "What is f?"})
        );
        let integer = wire(form_field(&field(
            json!({"type": "integer", "minimum": 1, "maximum": 9}),
        )));
        assert_eq!(
            integer,
            json!({"type": "integer", "minimum": 1, "maximum": 9, "description": "What is f?"})
        );
        let choice = wire(form_field(&field(json!({"enum": ["a", "b", null]}))));
        assert_eq!(
            choice,
            json!({"type": "string", "enum": ["a", "b"], "description": "What is f?"})
        );
        let unknown = wire(form_field(&field(json!({}))));
        assert_eq!(
            unknown,
            json!({"type": "string", "description": "What is f?"})
        );
        // An unsupported date-like format is dropped, not passed on.
        let time = wire(form_field(&field(
            json!({"type": "string", "format": "time"}),
        )));
        assert_eq!(time, json!({"type": "string", "description": "What is f?"}));
    }

    #[test]
    fn structured_fields_cannot_be_form_fields() {
        for schema in [
            json!({"type": "object", "properties": {}}),
            json!({"type": "array", "items": {"type": "string"}}),
            json!({"type": ["string", "integer"]}),
            json!({"anyOf": [{"type": "string"}]}),
            json!({"enum": ["a", 1]}),
        ] {
            assert!(form_field(&field(schema.clone())).is_none(), "{schema}");
        }
    }

    #[test]
    fn the_form_keeps_the_fields_order_and_requires_them() {
        let fields = vec![
            NeededField {
                field: "zeta".into(),
                ..field(json!({"type": "string"}))
            },
            NeededField {
                field: "alpha".into(),
                prompt: None,
                ..field(json!({"type": "boolean"}))
            },
        ];
        let inputs = Map::from_iter([("zeta".to_owned(), json!("bad"))]);
        let Some(ElicitRequestParams::FormElicitationParams {
            message,
            requested_schema,
            ..
        }) = elicitation_form("t", &fields, &inputs)
        else {
            panic!("a form");
        };
        assert_eq!(
            message,
            "`t` needs a few details:\n- What is f? (missing)\n- alpha: missing"
        );
        let wire = serde_json::to_string(&requested_schema).unwrap();
        assert!(
            wire.find("zeta").unwrap() < wire.find("alpha").unwrap(),
            "{wire}"
        );
        assert_eq!(
            requested_schema.required,
            Some(vec!["zeta".to_owned(), "alpha".to_owned()])
        );
    }

    #[test]
    fn answers_merge_only_asked_fields() {
        let mut inputs = Map::from_iter([("a".to_owned(), json!(1))]);
        let asked = vec!["b".to_owned(), "c".to_owned()];
        merge_answers(
            &mut inputs,
            Some(json!({"a": 9, "b": 2, "c": null, "d": 4})),
            &asked,
        );
        assert_eq!(Value::Object(inputs), json!({"a": 1, "b": 2}));
    }

    #[test]
    fn retry_state_is_bound_to_its_tool() {
        let state = RetryState {
            tool: "t".into(),
            round: 2,
            asked: vec![],
            answers: Map::new(),
        }
        .encode();
        assert_eq!(RetryState::decode(&state, "t").unwrap().round, 2);
        assert!(RetryState::decode(&state, "u").is_err());
        assert!(RetryState::decode("nope", "t").is_err());
    }
}
