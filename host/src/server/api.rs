//! The REST routes and the OpenAPI document generated from them.
//!
//! Action results are answers, not HTTP errors: a call that ran answers 200 with `status`
//! `ok`, `needs-input` or `failed` (and the failure's class), so an agent handles all three
//! the same way. HTTP errors (`{code, message}`) are for requests the server could not take:
//! no key, an unknown action, a malformed body.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::OpenApi;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ErrorBody};
use super::loader::{ChangeError, ScanReport};
use crate::call::{Call, Failure, MockResponse, RecordedRequest, SentRequest, Trigger};
use crate::chat::{MessageResult, Turn, UserMessage};
use crate::outbox::{
    Counts, Delivery as OutboxDelivery, DeliveryDetail as OutboxDeliveryDetail, Enqueued,
    ListFilter, PurgeFilter, State as DeliveryState,
};
use crate::plugin::Plugin;

/// The `{id}` of the conversation routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ConversationPath {
    /// The conversation id, chosen by the caller: 1 to 128 of `A-Z a-z 0-9 . _ : -`.
    #[param(
        pattern = r"^[A-Za-z0-9._:-]{1,128}$",
        min_length = 1,
        max_length = 128,
        example = "chat-42"
    )]
    pub id: String,
}

/// The `{name}` of the action routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ActionPath {
    /// The action's name.
    #[param(example = "order-status")]
    pub name: String,
}

/// An action as agents see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActionInfo {
    /// The action's name: the tool name.
    #[schema(example = "order-status")]
    pub name: String,
    /// What it does, for the agent.
    pub description: String,
    /// `tool`, `on-prompt` or `chat-end`.
    #[schema(example = "tool")]
    pub trigger: String,
    /// The inputs, a JSON Schema (draft 2020-12); `x-prompt` holds the question to ask.
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// The outcome's `data`, a JSON Schema.
    #[schema(value_type = Object)]
    pub output_schema: Value,
}

impl ActionInfo {
    /// The public view of a loaded action.
    pub fn of(p: &Plugin) -> Self {
        let d = p.descriptor();
        Self {
            name: d.name.clone(),
            description: d.description.clone(),
            trigger: p.manifest().raw.trigger.kind.as_str().to_string(),
            input_schema: d.input_schema.clone(),
            output_schema: d.output_schema.clone(),
        }
    }
}

/// The loaded actions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActionList {
    /// In name order.
    pub actions: Vec<ActionInfo>,
}

/// An action that did not load (admin view).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LoadFailure {
    /// The kind of problem.
    pub kind: String,
    /// The file at fault, relative to the actions directory.
    pub file: String,
    /// The field, the problem and the fix.
    pub detail: String,
}

/// Actions and load failures (admin view).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminActionList {
    /// Loaded actions.
    pub actions: Vec<ActionInfo>,
    /// Folders whose action did not load (an older version may still be serving).
    pub failures: Vec<LoadFailure>,
}

/// A tool call.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    /// The inputs, a JSON object.
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"order_id": "123456"}))]
    pub inputs: Map<String, Value>,
    /// The conversation this call belongs to, if any (for the audit log).
    #[serde(default)]
    #[schema(
        pattern = r"^[A-Za-z0-9._:-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub conversation_id: Option<String>,
    /// Conversation variables the action may read.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// A key that makes a repeated call safe: a write sends it as `Idempotency-Key`. Default:
    /// a fresh one per call.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// What a call did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InvokeResponse {
    /// The status, outcome or failure, and what to say.
    #[serde(flatten)]
    pub turn: Turn,
    /// The idempotency key the call used (retries included).
    pub idempotency_key: String,
    /// Wall time in microseconds.
    pub elapsed_us: u64,
}

/// How a test sends requests.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TestMode {
    /// Render the requests, send nothing.
    DryRun,
    /// Answer every request from `mock`.
    Mock,
    /// Send the requests.
    Live,
}

/// A test of an action.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// dry-run, mock or live.
    pub mode: TestMode,
    /// The inputs.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inputs: Map<String, Value>,
    /// Conversation variables.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// The recorded upstream response (mode `mock` only).
    #[serde(default)]
    pub mock: Option<MockResponse>,
}

/// What a test did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TestResponse {
    /// The mode.
    pub mode: TestMode,
    /// The status, outcome or failure, and what the user would see.
    #[serde(flatten)]
    pub turn: Turn,
    /// The requests as rendered (dry-run), secrets as placeholders.
    pub recorded: Vec<RecordedRequest>,
    /// The requests the action made, and what became of each.
    pub requests: Vec<SentRequest>,
}

/// The answer of `POST .../end`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EndResponse {
    /// The conversation.
    pub conversation_id: String,
    /// True when it had ended before: nothing was enqueued this time.
    pub already_ended: bool,
    /// The deliveries accepted into the durable outbox, one per chat-end action: committed
    /// before this answer, delivered by the workers (retried until they succeed). Each is
    /// `{"id", "idempotency_key", "action"}`.
    pub deliveries: Vec<Enqueued>,
}

/// Outbox entries and the count in each state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OutboxList {
    /// Newest first: id, idempotency_key, action, conversation_id, payload, state, attempts,
    /// created_at_ms, updated_at_ms, due_at_ms, last_error.
    pub deliveries: Vec<OutboxDelivery>,
    /// How many entries are in each state: pending, in_flight, retrying, done, dead.
    pub counts: Counts,
}

/// Which outbox entries to list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// Only this state: pending, in_flight, retrying, done or dead.
    pub state: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this conversation.
    pub conversation_id: Option<String>,
    /// Only ids below this (paging: the last id of the previous page).
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// What to purge.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// Delete delivered entries.
    #[serde(default)]
    pub done: bool,
    /// Delete dead letters.
    #[serde(default)]
    pub dead: bool,
    /// Only entries that finished more than this many ms ago.
    #[serde(default)]
    pub older_than_ms: Option<u64>,
}

/// How many entries were purged.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PurgeResponse {
    /// The number deleted.
    pub purged: u64,
}

/// A conversation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    /// Its id.
    pub id: String,
    /// When it started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// When it ended, if it did.
    pub ended_at_ms: Option<u64>,
    /// Its variables.
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// The transcript.
    pub messages: Vec<crate::call::TranscriptLine>,
}

/// Liveness and what is loaded.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when some action failed to load.
    pub status: String,
    /// Loaded actions.
    pub actions: usize,
    /// Actions that failed to load.
    pub failed: usize,
    /// The host's version.
    pub version: String,
}

/// The multipart form of an upload.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The action.toml text.
    #[schema(value_type = String, format = Binary)]
    manifest: Vec<u8>,
    /// The component (.wasm), named by the manifest's `component`; absent for `builtin:`.
    #[schema(value_type = Option<String>, format = Binary)]
    component: Option<Vec<u8>>,
    /// The test cases (tests.toml), unless the manifest holds them as `[[case]]` tables.
    #[schema(value_type = Option<String>, format = Binary)]
    tests: Option<Vec<u8>>,
}

fn plugin(state: &AppState, name: &str) -> Result<Arc<Plugin>, ApiError> {
    state
        .actions
        .snapshot()
        .get(name)
        .ok_or_else(|| ApiError::unknown_action(name))
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "The server is up", body = Health)))]
pub async fn health(State(state): State<AppState>) -> axum::Json<Health> {
    let reg = state.actions.snapshot();
    let failed = reg.failures().len();
    axum::Json(Health {
        status: if failed == 0 { "ok" } else { "degraded" }.into(),
        actions: reg.plugins().count(),
        failed,
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], ApiDoc::json()).into_response()
}

/// Prometheus metrics: calls, latency, outcomes by class, outbound requests by decision.
#[utoipa::path(get, path = "/metrics", tag = "meta", security(("bearer" = [])),
    responses(
        (status = 200, description = "The OpenMetrics text format (Prometheus scrapes it)", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "No valid API key", body = ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.runtime.metrics().render(),
    )
        .into_response()
}

/// The actions, with their input and output schemas.
#[utoipa::path(get, path = "/v1/actions", tag = "actions", security(("bearer" = [])),
    responses(
        (status = 200, description = "The loaded actions", body = ActionList),
        (status = 401, description = "No valid API key", body = ErrorBody)))]
pub async fn list_actions(State(state): State<AppState>) -> axum::Json<ActionList> {
    let reg = state.actions.snapshot();
    axum::Json(ActionList {
        actions: reg.plugins().map(|p| ActionInfo::of(p)).collect(),
    })
}

/// One action.
#[utoipa::path(get, path = "/v1/actions/{name}", tag = "actions", security(("bearer" = [])),
    params(ActionPath),
    responses(
        (status = 200, description = "The action", body = ActionInfo),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such action", body = ErrorBody)))]
pub async fn get_action(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<ActionInfo>, ApiError> {
    let p = plugin(&state, &name)?;
    Ok(axum::Json(ActionInfo::of(&p)))
}

/// Calls an action as a tool: an outcome, needs-input (nothing was called) or a failure.
#[utoipa::path(post, path = "/v1/actions/{name}/invoke", tag = "actions", security(("bearer" = [])),
    params(ActionPath),
    request_body = InvokeRequest,
    responses(
        (status = 200, description = "The call ran (see status)", body = InvokeResponse),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such action", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody)))]
pub async fn invoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InvokeRequest>,
) -> Result<axum::Json<InvokeResponse>, ApiError> {
    let plugin = plugin(&state, &name)?;
    if let Some(id) = &req.conversation_id {
        crate::conversations::check_id(id)?;
    }
    let mut inputs = req.inputs;
    crate::inputs::coerce(&mut inputs, &plugin.descriptor().input_schema);
    let report = plugin
        .invoke(Call {
            trigger: Trigger::ToolCall,
            inputs,
            conversation_id: req.conversation_id,
            variables: req.variables,
            idempotency_key: req.idempotency_key.filter(|k| !k.is_empty()),
            ..Call::default()
        })
        .await;
    let idempotency_key = report.idempotency_key.clone();
    let elapsed_us = report.elapsed_us;
    Ok(axum::Json(InvokeResponse {
        turn: Turn::from_report(&name, report),
        idempotency_key,
        elapsed_us,
    }))
}

/// Tries an action before publishing it: dry-run renders the requests, mock answers them from
/// a recorded response, live sends them.
#[utoipa::path(post, path = "/v1/actions/{name}/test", tag = "actions", security(("bearer" = [])),
    params(ActionPath),
    request_body = TestRequest,
    responses(
        (status = 200, description = "The test ran (see status)", body = TestResponse),
        (status = 400, description = "A malformed body, or mode mock without a mock", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such action", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody)))]
pub async fn test(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<TestRequest>,
) -> Result<axum::Json<TestResponse>, ApiError> {
    let plugin = plugin(&state, &name)?;
    let mock = match (req.mode, req.mock) {
        (TestMode::Mock, Some(m)) => Some(Arc::new(m)),
        (TestMode::Mock, None) => {
            return Err(ApiError::bad_request(
                "mode \"mock\" needs a mock: {\"status\": 200, \"headers\": {}, \"body\": ...}",
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::bad_request(
                "a mock is only used with mode \"mock\"; drop it or change the mode",
            ));
        }
        (_, None) => None,
    };
    let mut inputs = req.inputs;
    crate::inputs::coerce(&mut inputs, &plugin.descriptor().input_schema);
    let report = plugin
        .invoke(Call {
            trigger: Trigger::Test,
            inputs,
            variables: req.variables,
            dry_run: req.mode == TestMode::DryRun,
            mock,
            ..Call::default()
        })
        .await;
    let recorded = report.recorded.clone();
    let requests = report.requests.clone();
    Ok(axum::Json(TestResponse {
        mode: req.mode,
        turn: Turn::from_report(&name, report),
        recorded,
        requests,
    }))
}

/// A user message: on-prompt actions whose conditions hold fire once their inputs are
/// complete; otherwise they answer needs-input with the questions to ask. Starts the
/// conversation when the id is new.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "conversations", security(("bearer" = [])),
    params(ConversationPath),
    request_body = UserMessage,
    responses(
        (status = 200, description = "What the triggered actions did", body = MessageResult),
        (status = 400, description = "A malformed body or id", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 409, description = "The conversation has ended", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody)))]
pub async fn message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(msg): ApiJson<UserMessage>,
) -> Result<axum::Json<MessageResult>, ApiError> {
    // The id is checked by the conversation store (an invalid one is a 400).
    if let Some(bad) = msg
        .values
        .keys()
        .find(|k| k.is_empty() || k.starts_with("callout."))
    {
        return Err(ApiError::bad_request(format!(
            "values: {bad:?} is not a variable name an agent may set (empty, or in the host's reserved callout. namespace)"
        )));
    }
    Ok(axum::Json(state.chat.message(Some(&id), msg).await?))
}

/// Ends a conversation: every chat-end action is handed the transcript and the variables.
/// Ending twice delivers once (the second answer has no deliveries).
#[utoipa::path(post, path = "/v1/conversations/{id}/end", tag = "conversations", security(("bearer" = [])),
    params(ConversationPath),
    responses(
        (status = 200, description = "The chat-end deliveries", body = EndResponse),
        (status = 400, description = "A malformed id", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody)))]
pub async fn end(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<EndResponse>, ApiError> {
    let ended = state.chat.end(&id).await?;
    Ok(axum::Json(EndResponse {
        conversation_id: id,
        already_ended: ended.already_ended,
        deliveries: ended.deliveries,
    }))
}

fn outbox_error(e: crate::outbox::OutboxError) -> ApiError {
    ApiError::internal(e)
}

/// The outbox: entries by state, action or conversation, and the counts.
#[utoipa::path(get, path = "/v1/admin/outbox", tag = "admin", security(("bearer" = [])),
    params(OutboxQuery),
    responses(
        (status = 200, description = "Entries, newest first, and counts", body = OutboxList),
        (status = 400, description = "An unknown state", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody)))]
pub async fn outbox_list(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<OutboxQuery>,
) -> Result<axum::Json<OutboxList>, ApiError> {
    let states = match &q.state {
        None => Vec::new(),
        Some(s) => vec![DeliveryState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state {s:?} is not one of pending, in_flight, retrying, done, dead"
            ))
        })?],
    };
    let filter = ListFilter {
        states,
        action: q.action,
        conversation_id: q.conversation_id,
        before_id: q.before,
        limit: q.limit.unwrap_or(0),
    };
    let store = state.deliverer.store().clone();
    let (deliveries, counts) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::outbox::OutboxError>((store.list(&filter)?, store.counts()?))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(outbox_error)?;
    Ok(axum::Json(OutboxList { deliveries, counts }))
}

/// One outbox entry with its attempts.
#[utoipa::path(get, path = "/v1/admin/outbox/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The delivery id")),
    responses(
        (status = 200, description = "The entry and its attempts", body = OutboxDeliveryDetail),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody)))]
pub async fn outbox_show(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<axum::Json<OutboxDeliveryDetail>, ApiError> {
    let store = state.deliverer.store().clone();
    tokio::task::spawn_blocking(move || store.get(id))
        .await
        .map_err(ApiError::internal)?
        .map_err(outbox_error)?
        .map(axum::Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no delivery {id}"),
            )
        })
}

/// Makes a dead or retrying entry due now (same idempotency key).
#[utoipa::path(post, path = "/v1/admin/outbox/{id}/retry", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The delivery id")),
    responses(
        (status = 204, description = "Due now"),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "Not dead or retrying (pending, in flight or done)", body = ErrorBody)))]
pub async fn outbox_retry(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let store = state.deliverer.store();
    if store.get(id).map_err(outbox_error)?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no delivery {id}"),
        ));
    }
    if store.retry(id).await.map_err(outbox_error)? {
        state.deliverer.wake();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "not-retryable",
            format!(
                "delivery {id} is pending, in flight or done; only dead or retrying ones are retried"
            ),
        ))
    }
}

/// Deletes finished entries (done and/or dead); pending ones are never deleted.
#[utoipa::path(post, path = "/v1/admin/outbox/purge", tag = "admin", security(("bearer" = [])),
    request_body = PurgeRequest,
    responses(
        (status = 200, description = "How many were deleted", body = PurgeResponse),
        (status = 400, description = "A malformed body, or neither done nor dead", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody)))]
pub async fn outbox_purge(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PurgeRequest>,
) -> Result<axum::Json<PurgeResponse>, ApiError> {
    if !req.done && !req.dead {
        return Err(ApiError::bad_request(
            "say what to purge: {\"done\": true} and/or {\"dead\": true}",
        ));
    }
    let filter = PurgeFilter {
        done: req.done,
        dead: req.dead,
        finished_before_ms: req
            .older_than_ms
            .map(|ms| crate::db::now_ms().saturating_sub(ms)),
        limit: 0,
    };
    let purged = crate::outbox::purge_all(state.deliverer.store().as_ref(), &filter)
        .await
        .map_err(outbox_error)?;
    Ok(axum::Json(PurgeResponse { purged }))
}

/// A conversation: variables and transcript.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(ConversationPath),
    responses(
        (status = 200, description = "The conversation", body = ConversationView),
        (status = 400, description = "A malformed id", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody)))]
pub async fn get_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ConversationView>, ApiError> {
    crate::conversations::check_id(&id)?;
    let conv = state
        .chat
        .store()
        .get(&id)?
        .ok_or_else(|| crate::conversations::StoreError::NotFound(id.clone()))?;
    Ok(axum::Json(ConversationView {
        id: conv.id,
        started_at_ms: conv.started_at_ms,
        ended_at_ms: conv.ended_at_ms,
        variables: conv
            .variables
            .into_iter()
            .filter(|(k, _)| !k.starts_with("callout."))
            .collect(),
        messages: conv.messages,
    }))
}

/// Actions and the ones that failed to load, with why.
#[utoipa::path(get, path = "/v1/admin/actions", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Actions and load failures", body = AdminActionList),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody)))]
pub async fn admin_list(State(state): State<AppState>) -> axum::Json<AdminActionList> {
    let reg = state.actions.snapshot();
    let dir = state.loader.dir().to_path_buf();
    axum::Json(AdminActionList {
        actions: reg.plugins().map(|p| ActionInfo::of(p)).collect(),
        failures: reg
            .failures()
            .iter()
            .map(|f| LoadFailure {
                kind: f.kind.to_string(),
                file: f
                    .file
                    .strip_prefix(&dir)
                    .unwrap_or(&f.file)
                    .display()
                    .to_string(),
                detail: f.detail.replace(&*dir.to_string_lossy(), "."),
            })
            .collect(),
    })
}

/// Uploads a new action or a new version: multipart parts `manifest` (action.toml),
/// `component` (the .wasm the manifest names) and `tests` (tests.toml, optional). The version
/// is checked, compiled and run through the publish gate (its test cases and the lints) first;
/// a bad one is rejected with the reason and the old version keeps serving. Calls in flight
/// finish on the version they started with.
#[utoipa::path(put, path = "/v1/admin/actions/{name}", tag = "admin", security(("bearer" = [])),
    params(ActionPath),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Installed and serving", body = ActionInfo),
        (status = 400, description = "A malformed upload", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 413, description = "Larger than server.max_upload_mb", body = ErrorBody),
        (status = 422, description = "The version does not load or did not pass the publish gate; the old one keeps serving", body = ErrorBody)))]
pub async fn admin_put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    mut form: Multipart,
) -> Result<axum::Json<ActionInfo>, ApiError> {
    let mut manifest = None;
    let mut component = None;
    let mut tests = None;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        let part = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(multipart_error)?;
        match part.as_str() {
            "manifest" => manifest = Some(bytes),
            "component" => component = Some(bytes),
            "tests" => tests = Some(bytes),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown part {other:?}; send `manifest` (action.toml), `component` (.wasm) and `tests` (tests.toml)"
                )));
            }
        }
    }
    let manifest = manifest.ok_or_else(|| {
        ApiError::bad_request("the upload has no `manifest` part (the action.toml text)")
    })?;
    let plugin = state
        .loader
        .install(&name, &manifest, component.as_deref(), tests.as_deref())
        .await
        .map_err(change_error)?;
    tracing::info!(action = %name, key = %caller.key_name, "action uploaded");
    Ok(axum::Json(ActionInfo::of(&plugin)))
}

/// The publish gate's verdicts on an action's versions.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct GateHistory {
    /// Whether the gate is enforced (`enforce`) or skipped by the operator (`skip`).
    pub mode: crate::gate::GateMode,
    /// The verdicts, newest first (at most 50).
    pub verdicts: Vec<crate::gate::Verdict>,
}

/// The publish gate's verdicts on the versions of an action (also of one that never passed):
/// each version's content hash, whether it passed or was overridden, its cases, the reasons
/// and the lint warnings.
#[utoipa::path(get, path = "/v1/admin/actions/{name}/gate", tag = "admin", security(("bearer" = [])),
    params(ActionPath),
    responses(
        (status = 200, description = "The verdicts, newest first", body = GateHistory),
        (status = 400, description = "Not a valid action name", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody)))]
pub async fn admin_gate(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<GateHistory>, ApiError> {
    crate::manifest::check_name(&name).map_err(ApiError::bad_request)?;
    let gate = state.loader.gate().clone();
    let verdicts = tokio::task::spawn_blocking(move || gate.history(&name, 50))
        .await
        .map_err(ApiError::internal)?;
    Ok(axum::Json(GateHistory {
        mode: state.loader.gate().mode(),
        verdicts,
    }))
}

/// Removes an action. Calls in flight finish.
#[utoipa::path(delete, path = "/v1/admin/actions/{name}", tag = "admin", security(("bearer" = [])),
    params(ActionPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 404, description = "No such action", body = ErrorBody)))]
pub async fn admin_delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.loader.remove(&name).await.map_err(change_error)?;
    tracing::info!(action = %name, key = %caller.key_name, "action removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Rescans the actions directory now (the watcher does it every `server.watch_interval_ms`).
#[utoipa::path(post, path = "/v1/admin/reload", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "What changed", body = ScanReport),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody)))]
pub async fn admin_reload(
    State(state): State<AppState>,
) -> Result<axum::Json<ScanReport>, ApiError> {
    let report = state.loader.scan(false).await.map_err(ApiError::internal)?;
    Ok(axum::Json(report))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "the upload is larger than server.max_upload_mb",
        )
    } else {
        ApiError::bad_request(format!("a malformed multipart upload: {}", e.body_text()))
    }
}

fn change_error(e: ChangeError) -> ApiError {
    match e {
        ChangeError::BadRequest(m) => ApiError::bad_request(m),
        ChangeError::Rejected(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", m),
        ChangeError::NotFound(n) => ApiError::unknown_action(&n),
        ChangeError::Io(m) => ApiError::internal(m),
    }
}

/// Adds the bearer scheme the routes refer to.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from callout.toml [[server.api_keys]]: agent keys for actions, conversations and MCP; admin keys for everything",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Callout",
        description = "Real-time API actions for AI agents: list and call actions, drive conversations, manage actions at run time. MCP is served at /mcp (streamable HTTP).",
        license(name = "Apache-2.0")
    ),
    paths(
        health, openapi, metrics, list_actions, get_action, invoke, test, message, end,
        get_conversation, admin_list, admin_put, admin_delete, admin_gate, admin_reload, outbox_list,
        outbox_show, outbox_retry, outbox_purge
    ),
    components(schemas(Failure)),
    modifiers(&Security),
    tags(
        (name = "actions", description = "List, call and test actions"),
        (name = "conversations", description = "On-prompt and chat-end triggers"),
        (name = "admin", description = "Change actions at run time (admin keys)"),
        (name = "meta", description = "Health, metrics and this document")
    )
)]
pub struct ApiDoc;

impl ApiDoc {
    /// The document as JSON text (built once).
    pub fn json() -> String {
        static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        DOC.get_or_init(|| {
            ApiDoc::openapi()
                .to_pretty_json()
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        })
        .clone()
    }
}
