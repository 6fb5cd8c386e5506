//! A small HTTP service the demo's actions call: order tracking, membership checks and a CRM.
//!
//! The demo needs a real API on the other end of an action's outbound request, one whose answers
//! look like a production service's (JSON errors with field lists, 401/404/422, idempotent
//! creation) and whose failures can be switched on at run time, so an audience can watch an
//! action cope with a slow, failing or rate-limited service. [`DemoBackend::start`] runs it on a
//! socket of the caller's choice (the demo uses loopback) and every request is recorded for the
//! demo to show ([`DemoBackend::received`]).
//!
//! Routes (all but `/health` need `Authorization: Bearer <token>`, else 401):
//!
//! | route | what it does |
//! |-------|--------------|
//! | `GET /orders/{order_id}` | an order by its 6-digit id: `123456` shipped, `234567` processing, `345678` delivered |
//! | `POST /memberships/verify` | `{"member_id","date_of_birth"}`: `M-1001` (1990-04-12) active, `M-2002` (1985-09-30) inactive |
//! | `POST /crm/leads` | creates a lead (`lead_000001`, …); a repeated `Idempotency-Key` replays the first answer |
//! | `GET`/`POST /_demo/mode` | reads or sets the [`Mode`] of one [`Api`] or of `"all"` |
//! | `GET`/`DELETE /_demo/requests` | lists or clears the recorded requests |
//! | `GET /health` | `{"ok":true}`, no token, not recorded |
//!
//! Unknown routes answer 404 and known routes with another method 405, both as JSON. Everything
//! except `/health` and `/_demo/…` is recorded, with the status it got; the bearer token is never
//! part of a record (it is replaced by `[redacted]` wherever a client put it).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The largest request body read; larger ones are answered 413 (and recorded without the body).
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long [`DemoBackend::shutdown`] waits for requests in flight before it stops the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The longest delay the control endpoint accepts for slow mode, in milliseconds.
const MAX_DELAY_MS: u64 = 60_000;
/// The longest `Retry-After` the control endpoint accepts for rate-limited mode, in seconds.
const MAX_RETRY_AFTER_S: u64 = 86_400;
/// What replaces the bearer token wherever it shows up in a recorded request.
const REDACTED: &str = "[redacted]";
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// One of the three demo APIs, the unit a [`Mode`] applies to.
///
/// In JSON it is `"orders"`, `"memberships"` or `"crm"`; the control endpoint also accepts
/// `"all"`, which is not an `Api` but a shorthand for the three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `GET /orders/{order_id}`.
    Orders,
    /// `POST /memberships/verify`.
    Memberships,
    /// `POST /crm/leads`.
    Crm,
}

impl Api {
    /// The three APIs, in the order the control endpoint lists them.
    pub const ALL: [Api; 3] = [Api::Orders, Api::Memberships, Api::Crm];

    /// The API's name as in JSON and in error messages, e.g. `"orders"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Orders => "orders",
            Api::Memberships => "memberships",
            Api::Crm => "crm",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an [`Api`] behaves, switchable at run time to show an action coping with trouble.
///
/// A mode applies to the API's routes after the token check, before validation. In JSON it is
/// tagged by `mode`, e.g. `{"mode":"slow","delay_ms":3000}`; a missing parameter takes its
/// default (slow 3000 ms, fail 503, rate-limited `Retry-After: 30`). The default mode is
/// [`Mode::Normal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Mode {
    /// Answers at once.
    #[default]
    Normal,
    /// Waits `delay_ms`, then answers normally.
    Slow {
        /// How long to wait before answering, in milliseconds (default 3000).
        #[serde(default = "default_delay_ms")]
        delay_ms: u64,
    },
    /// Answers `status` with an `unavailable` JSON error.
    Fail {
        /// The status to answer (default 503); one outside 400–599 is answered as 503.
        #[serde(default = "default_fail_status")]
        status: u16,
    },
    /// Answers 429 with `Retry-After: <retry_after_s>` and a `rate_limited` JSON error.
    RateLimited {
        /// The `Retry-After` value, in seconds (default 30).
        #[serde(default = "default_retry_after_s")]
        retry_after_s: u64,
    },
}

fn default_delay_ms() -> u64 {
    3000
}

fn default_fail_status() -> u16 {
    503
}

fn default_retry_after_s() -> u64 {
    30
}

/// One request the back end answered, as the demo shows it.
///
/// Only what an audience needs to see is kept: no headers besides `Idempotency-Key` and
/// `Content-Type`, and never the bearer token (replaced by `[redacted]` wherever it appears).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedRequest {
    /// The HTTP method, e.g. `"GET"`.
    pub method: String,
    /// The path as sent (still percent-encoded), without the query.
    pub path: String,
    /// The raw query string, if the URL had one.
    pub query: Option<String>,
    /// Whether the request carried the right bearer token.
    pub authorized: bool,
    /// The `Idempotency-Key` header, if sent.
    pub idempotency_key: Option<String>,
    /// The `Content-Type` header, if sent.
    pub content_type: Option<String>,
    /// The body as text (invalid UTF-8 replaced); empty if there was none or it was too large.
    pub body: String,
    /// The status the back end answered.
    pub status: u16,
}

/// A running demo back end; dropping it stops the server too, without waiting.
pub struct DemoBackend {
    /// The address it listens on (with the real port when started on port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl fmt::Debug for DemoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoBackend")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl DemoBackend {
    /// Starts on `listen` (e.g. `127.0.0.1:0` for an ephemeral port) with this bearer token.
    ///
    /// The server runs on a task of the current tokio runtime until [`DemoBackend::shutdown`]
    /// or drop. The token must be non-empty and made of the characters RFC 6750 allows
    /// (letters, digits and `-._~+/`, then optional `=`), as [`new_token`]'s are.
    pub async fn start(listen: SocketAddr, token: String) -> io::Result<DemoBackend> {
        if !is_b64token(&token) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the bearer token must be non-empty and use only letters, digits and -._~+/ (then =)",
            ));
        }
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token,
            state: Mutex::new(Inner::default()),
        });
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A send or a dropped sender both mean stop.
                let _ = stopped.await;
            });
            if let Err(err) = serve.await {
                tracing::warn!(%err, "demo back end stopped with an error");
            }
        });
        tracing::debug!(%addr, "demo back end listening");
        Ok(DemoBackend {
            addr,
            shared,
            stop,
            task,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:8080`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Every recorded request, in the order they were answered.
    ///
    /// `/health` and `/_demo/…` calls are not recorded; `DELETE /_demo/requests` clears the list.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared.lock().received.clone()
    }

    /// Sets the mode of one API, as `POST /_demo/mode` does.
    pub fn set_mode(&self, api: Api, mode: Mode) {
        self.shared.lock().modes.set(api, mode);
    }

    /// Stops accepting connections and waits (up to 5 s) for requests in flight to finish.
    pub async fn shutdown(self) {
        let DemoBackend { stop, mut task, .. } = self;
        let _ = stop.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}

/// A fresh random bearer token: `"demo-"` and 32 hex digits (128 bits from the OS).
///
/// # Panics
///
/// If the operating system's random source fails, which on supported platforms it does not.
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    let mut token = String::with_capacity(5 + 32);
    token.push_str("demo-");
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    token
}

// ---------------------------------------------------------------------------------------------
// Shared state

struct Shared {
    token: String,
    state: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    modes: Modes,
    received: Vec<ReceivedRequest>,
    leads: Vec<Lead>,
    /// Idempotency key → index into `leads`.
    replays: HashMap<String, usize>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Modes {
    orders: Mode,
    memberships: Mode,
    crm: Mode,
}

impl Modes {
    fn get(&self, api: Api) -> Mode {
        match api {
            Api::Orders => self.orders,
            Api::Memberships => self.memberships,
            Api::Crm => self.crm,
        }
    }

    fn set(&mut self, api: Api, mode: Mode) {
        match api {
            Api::Orders => self.orders = mode,
            Api::Memberships => self.memberships = mode,
            Api::Crm => self.crm = mode,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; if something did, the data is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn authorizes(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, credentials)) = value.trim().split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer")
            && constant_time_eq(credentials.trim().as_bytes(), self.token.as_bytes())
    }

    fn redact(&self, text: &str) -> String {
        text.replace(&self.token, REDACTED)
    }
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

// ---------------------------------------------------------------------------------------------
// Router, recording and the token check

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/orders/{order_id}", get(get_order))
        .route("/memberships/verify", post(verify_membership))
        .route("/crm/leads", post(create_lead))
        .route("/_demo/mode", get(get_modes).post(set_modes))
        .route("/_demo/requests", get(list_requests).delete(clear_requests))
        .route("/health", get(health))
        // After the routes: it only applies to the routes already added.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

fn is_control(path: &str) -> bool {
    path == "/_demo" || path.starts_with("/_demo/")
}

/// Checks the token, reads the body (so it can be recorded) and records the answer.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/health" {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let authorized = shared.authorizes(&parts.headers);
    let header_text = |name: &HeaderName| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut record = ReceivedRequest {
        method: parts.method.to_string(),
        path: shared.redact(&path),
        query: parts.uri.query().map(|q| shared.redact(q)),
        authorized,
        idempotency_key: header_text(&IDEMPOTENCY_KEY).map(|k| shared.redact(&k)),
        content_type: header_text(&header::CONTENT_TYPE).map(|c| shared.redact(&c)),
        body: String::new(),
        status: 0,
    };
    let declared_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());

    let response = if declared_len.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        too_large()
    } else {
        match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Err(_) => too_large(),
            Ok(bytes) => {
                record.body = shared.redact(&String::from_utf8_lossy(&bytes));
                if authorized {
                    next.run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                } else {
                    unauthorized()
                }
            }
        }
    };

    record.status = response.status().as_u16();
    tracing::debug!(
        method = %record.method,
        path = %record.path,
        status = record.status,
        authorized,
        "demo back end answered"
    );
    if !is_control(&path) {
        shared.lock().received.push(record);
    }
    response
}

/// Applies the API's mode: `Some` is the answer to give instead of the normal one.
async fn mode_gate(shared: &Shared, api: Api) -> Option<Response> {
    let mode = shared.lock().modes.get(api);
    match mode {
        Mode::Normal => None,
        Mode::Slow { delay_ms } => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            None
        }
        Mode::Fail { status } => {
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Some(error(
                status,
                "unavailable",
                format!("the {api} service is failing (demo mode)"),
            ))
        }
        Mode::RateLimited { retry_after_s } => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests to the {api} service; retry after {retry_after_s} s (demo mode)"
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            Some(response)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

#[derive(Debug, Serialize)]
struct FieldError {
    field: &'static str,
    message: &'static str,
}

#[derive(Serialize)]
struct ValidationBody {
    error: &'static str,
    errors: Vec<FieldError>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: code,
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

fn validation(status: StatusCode, errors: Vec<FieldError>) -> Response {
    let body = ValidationBody {
        error: "validation",
        errors,
    };
    (status, Json(body)).into_response()
}

fn unauthorized() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than 1 MiB",
    )
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn health() -> Response {
    Json(serde_json::json!({"ok": true})).into_response()
}

/// A body parsed as a JSON object, or `None` if it is not one.
fn json_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// The 422 for a body that is not a JSON object.
fn not_a_json_object() -> Response {
    validation(
        StatusCode::UNPROCESSABLE_ENTITY,
        vec![FieldError {
            field: "body",
            message: "must be a JSON object",
        }],
    )
}

/// A required string field; records an error and gives `None` if it is missing or not a string.
fn required_str<'a>(
    map: &'a Map<String, Value>,
    field: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match map.get(field) {
        Some(Value::String(s)) => Some(s),
        None | Some(Value::Null) => {
            errors.push(FieldError {
                field,
                message: "is required",
            });
            None
        }
        Some(_) => {
            errors.push(FieldError {
                field,
                message: "must be a string",
            });
            None
        }
    }
}

/// An optional string field (absent or null is `None`); records an error if it is another type.
fn optional_str<'a>(
    map: &'a Map<String, Value>,
    field: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match map.get(field) {
        Some(Value::String(s)) => Some(s),
        None | Some(Value::Null) => None,
        Some(_) => {
            errors.push(FieldError {
                field,
                message: "must be a string",
            });
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Orders

#[derive(Serialize)]
struct Order {
    order_id: &'static str,
    status: &'static str,
    carrier: Option<&'static str>,
    tracking_number: Option<&'static str>,
    items: Vec<OrderItem>,
    eta: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_at: Option<&'static str>,
    updated_at: &'static str,
}

#[derive(Serialize)]
struct OrderItem {
    sku: &'static str,
    name: &'static str,
    quantity: u32,
}

fn seed_order(order_id: &str) -> Option<Order> {
    let item = |sku, name, quantity| OrderItem {
        sku,
        name,
        quantity,
    };
    match order_id {
        "123456" => Some(Order {
            order_id: "123456",
            status: "shipped",
            carrier: Some("UPS"),
            tracking_number: Some("1Z999AA10123456784"),
            items: vec![
                item("MUG-01", "Ceramic mug", 2),
                item("TEA-12", "Green tea, 12 bags", 1),
            ],
            eta: Some("2026-12-02"),
            delivered_at: None,
            updated_at: "2026-11-26T14:03:00Z",
        }),
        "234567" => Some(Order {
            order_id: "234567",
            status: "processing",
            carrier: None,
            tracking_number: None,
            items: vec![item("KTL-03", "Electric kettle", 1)],
            eta: Some("2026-12-09"),
            delivered_at: None,
            updated_at: "2026-11-27T09:15:00Z",
        }),
        "345678" => Some(Order {
            order_id: "345678",
            status: "delivered",
            carrier: Some("DHL"),
            tracking_number: Some("JD014600006281234567"),
            items: vec![
                item("BTL-07", "Steel water bottle", 1),
                item("SCK-22", "Wool socks", 3),
            ],
            eta: None,
            delivered_at: Some("2026-11-20T11:42:00Z"),
            updated_at: "2026-11-20T11:42:00Z",
        }),
        _ => None,
    }
}

async fn get_order(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(response) = mode_gate(&shared, Api::Orders).await {
        return response;
    }
    let order_id = path.map(|Path(id)| id).unwrap_or_default();
    if order_id.len() != 6 || !order_id.bytes().all(|b| b.is_ascii_digit()) {
        return validation(
            StatusCode::BAD_REQUEST,
            vec![FieldError {
                field: "order_id",
                message: "must be 6 digits",
            }],
        );
    }
    match seed_order(&order_id) {
        Some(order) => Json(order).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("order {order_id} not found"),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Memberships

struct Member {
    member_id: &'static str,
    date_of_birth: &'static str,
    active: bool,
    plan: &'static str,
    /// `valid_until` when active, `expired_on` when not.
    until: &'static str,
}

/// `M-1001` is Ada Lovelace's (gold, active); `M-2002` is a lapsed basic membership.
const MEMBERS: [Member; 2] = [
    Member {
        member_id: "M-1001",
        date_of_birth: "1990-04-12",
        active: true,
        plan: "gold",
        until: "2027-01-31",
    },
    Member {
        member_id: "M-2002",
        date_of_birth: "1985-09-30",
        active: false,
        plan: "basic",
        until: "2026-06-30",
    },
];

#[derive(Serialize)]
struct Membership {
    member_id: &'static str,
    status: &'static str,
    plan: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_until: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired_on: Option<&'static str>,
}

fn is_member_id(id: &str) -> bool {
    id.strip_prefix("M-")
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

async fn verify_membership(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    if let Some(response) = mode_gate(&shared, Api::Memberships).await {
        return response;
    }
    let Some(map) = json_object(&body) else {
        return not_a_json_object();
    };
    let mut errors = Vec::new();
    let member_id = required_str(&map, "member_id", &mut errors);
    if let Some(id) = member_id
        && !is_member_id(id)
    {
        errors.push(FieldError {
            field: "member_id",
            message: "must be \"M-\" followed by digits",
        });
    }
    let date_of_birth = required_str(&map, "date_of_birth", &mut errors);
    if let Some(dob) = date_of_birth {
        match parse_date(dob) {
            None => errors.push(FieldError {
                field: "date_of_birth",
                message: "must be a date as YYYY-MM-DD",
            }),
            Some(date) if !is_plausible_birth_date(date, today()) => errors.push(FieldError {
                field: "date_of_birth",
                message: "must be a real date of birth, from 1900 to today",
            }),
            Some(_) => {}
        }
    }
    let (Some(member_id), Some(date_of_birth), true) =
        (member_id, date_of_birth, errors.is_empty())
    else {
        return validation(StatusCode::UNPROCESSABLE_ENTITY, errors);
    };
    // An unknown id and a wrong date of birth look the same, so neither can be probed.
    let Some(member) = MEMBERS
        .iter()
        .find(|m| m.member_id == member_id && m.date_of_birth == date_of_birth)
    else {
        return error(StatusCode::NOT_FOUND, "not_found", "no member matches");
    };
    Json(Membership {
        member_id: member.member_id,
        status: if member.active { "active" } else { "inactive" },
        plan: member.plan,
        valid_until: member.active.then_some(member.until),
        expired_on: (!member.active).then_some(member.until),
    })
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// CRM

#[derive(Debug, Clone, Serialize)]
struct Lead {
    id: String,
    name: String,
    email: String,
    company: Option<String>,
    inquiry: Option<String>,
    created_at: String,
}

const MAX_NAME_CHARS: usize = 200;
const MAX_TEXT_CHARS: usize = 2000;

/// One `@`, a non-empty local part, a dotted domain without empty labels, no whitespace.
fn is_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
        && !email.chars().any(char::is_whitespace)
}

async fn create_lead(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = mode_gate(&shared, Api::Crm).await {
        return response;
    }
    let Some(map) = json_object(&body) else {
        return not_a_json_object();
    };
    let mut errors = Vec::new();
    let name = required_str(&map, "name", &mut errors).map(str::trim);
    if let Some(name) = name {
        if name.is_empty() {
            errors.push(FieldError {
                field: "name",
                message: "must not be empty",
            });
        } else if name.chars().count() > MAX_NAME_CHARS {
            errors.push(FieldError {
                field: "name",
                message: "must be at most 200 characters",
            });
        }
    }
    let email = required_str(&map, "email", &mut errors);
    if let Some(email) = email
        && !is_email(email)
    {
        errors.push(FieldError {
            field: "email",
            message: "must be an email address",
        });
    }
    let mut text = |field: &'static str| {
        let value = optional_str(&map, field, &mut errors);
        if value.is_some_and(|v| v.chars().count() > MAX_TEXT_CHARS) {
            errors.push(FieldError {
                field,
                message: "must be at most 2000 characters",
            });
        }
        value
    };
    let company = text("company");
    let inquiry = text("inquiry");
    let (Some(name), Some(email), true) = (name, email, errors.is_empty()) else {
        return validation(StatusCode::UNPROCESSABLE_ENTITY, errors);
    };

    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let mut inner = shared.lock();
    if let Some(&index) = key.and_then(|k| inner.replays.get(k)) {
        let lead = inner.leads[index].clone();
        drop(inner);
        let mut response = Json(lead).into_response();
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        return response;
    }
    let lead = Lead {
        id: format!("lead_{:06}", inner.leads.len() + 1),
        name: name.to_owned(),
        email: email.to_owned(),
        company: company.map(str::to_owned),
        inquiry: inquiry.map(str::to_owned),
        created_at: now_rfc3339(),
    };
    if let Some(key) = key {
        let index = inner.leads.len();
        inner.replays.insert(key.to_owned(), index);
    }
    inner.leads.push(lead.clone());
    drop(inner);
    (StatusCode::CREATED, Json(lead)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Control

async fn get_modes(State(shared): State<Arc<Shared>>) -> Response {
    let modes = shared.lock().modes;
    Json(modes).into_response()
}

/// An optional whole-number field within `range`; records `message` otherwise.
fn optional_u64(
    map: &Map<String, Value>,
    field: &'static str,
    range: std::ops::RangeInclusive<u64>,
    message: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<u64> {
    match map.get(field) {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64().filter(|n| range.contains(n)) {
            Some(n) => Some(n),
            None => {
                errors.push(FieldError { field, message });
                None
            }
        },
    }
}

async fn set_modes(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Some(map) = json_object(&body) else {
        return not_a_json_object();
    };
    let mut errors = Vec::new();
    let apis: Option<&[Api]> = match required_str(&map, "api", &mut errors) {
        None => None,
        Some("orders") => Some(&[Api::Orders]),
        Some("memberships") => Some(&[Api::Memberships]),
        Some("crm") => Some(&[Api::Crm]),
        Some("all") => Some(&Api::ALL),
        Some(_) => {
            errors.push(FieldError {
                field: "api",
                message: "must be one of orders, memberships, crm, all",
            });
            None
        }
    };
    let delay_ms = optional_u64(
        &map,
        "delay_ms",
        0..=MAX_DELAY_MS,
        "must be a whole number of milliseconds from 0 to 60000",
        &mut errors,
    );
    let status = optional_u64(
        &map,
        "status",
        400..=599,
        "must be an HTTP status from 400 to 599",
        &mut errors,
    );
    let retry_after_s = optional_u64(
        &map,
        "retry_after_s",
        0..=MAX_RETRY_AFTER_S,
        "must be a whole number of seconds from 0 to 86400",
        &mut errors,
    );
    let mode = match required_str(&map, "mode", &mut errors) {
        None => None,
        Some("normal") => Some(Mode::Normal),
        Some("slow") => Some(Mode::Slow {
            delay_ms: delay_ms.unwrap_or_else(default_delay_ms),
        }),
        Some("fail") => Some(Mode::Fail {
            // In range: checked above.
            status: status.map_or_else(default_fail_status, |s| s as u16),
        }),
        Some("rate-limited") => Some(Mode::RateLimited {
            retry_after_s: retry_after_s.unwrap_or_else(default_retry_after_s),
        }),
        Some(_) => {
            errors.push(FieldError {
                field: "mode",
                message: "must be one of normal, slow, fail, rate-limited",
            });
            None
        }
    };
    let (Some(apis), Some(mode), true) = (apis, mode, errors.is_empty()) else {
        return validation(StatusCode::UNPROCESSABLE_ENTITY, errors);
    };
    let modes = {
        let mut inner = shared.lock();
        for &api in apis {
            inner.modes.set(api, mode);
        }
        inner.modes
    };
    tracing::info!(?apis, ?mode, "demo back end mode changed");
    Json(modes).into_response()
}

async fn list_requests(State(shared): State<Arc<Shared>>) -> Response {
    let received = shared.lock().received.clone();
    Json(received).into_response()
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> Response {
    let cleared = std::mem::take(&mut shared.lock().received).len();
    Json(serde_json::json!({ "cleared": cleared })).into_response()
}

// ---------------------------------------------------------------------------------------------
// Dates, without a date crate

/// A calendar date as (year, month, day).
type Date = (i64, u32, u32);

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD` with a real month and day, else `None`.
fn parse_date(text: &str) -> Option<Date> {
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shape_ok {
        return None;
    }
    let year: i64 = text[0..4].parse().ok()?;
    let month: u32 = text[5..7].parse().ok()?;
    let day: u32 = text[8..10].parse().ok()?;
    ((1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day))
        .then_some((year, month, day))
}

fn is_plausible_birth_date(date: Date, today: Date) -> bool {
    date.0 >= 1900 && date <= today
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn today() -> Date {
    civil_from_days(unix_now().div_euclid(86_400))
}

/// RFC 3339 in UTC with seconds, e.g. `2026-11-26T14:03:00Z`.
fn rfc3339(unix_secs: i64) -> String {
    let (year, month, day) = civil_from_days(unix_secs.div_euclid(86_400));
    let secs = unix_secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn now_rfc3339() -> String {
    rfc3339(unix_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    use reqwest::header::{CONTENT_TYPE, HeaderMap as ReqwestHeaders};
    use serde_json::json;
    use std::time::Instant;

    async fn start() -> DemoBackend {
        DemoBackend::start("127.0.0.1:0".parse().unwrap(), new_token())
            .await
            .expect("the demo back end starts on loopback")
    }

    struct Answer {
        status: u16,
        headers: ReqwestHeaders,
        json: Value,
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a plain http client")
    }

    /// A request with the right token.
    fn authed(
        backend: &DemoBackend,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        client()
            .request(method, format!("{}{path}", backend.url()))
            .bearer_auth(backend.token())
    }

    fn with_json(request: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
        request
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).unwrap())
    }

    async fn send(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the demo back end answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a whole body");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        Answer {
            status,
            headers,
            json,
        }
    }

    async fn get(backend: &DemoBackend, path: &str) -> Answer {
        send(authed(backend, reqwest::Method::GET, path)).await
    }

    async fn post(backend: &DemoBackend, path: &str, body: Value) -> Answer {
        send(with_json(
            authed(backend, reqwest::Method::POST, path),
            &body,
        ))
        .await
    }

    #[tokio::test]
    async fn a_known_order_is_returned_with_its_status_and_items() {
        let backend = start().await;
        let answer = get(&backend, "/orders/123456").await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.json,
            json!({
                "order_id": "123456", "status": "shipped", "carrier": "UPS",
                "tracking_number": "1Z999AA10123456784",
                "items": [
                    {"sku": "MUG-01", "name": "Ceramic mug", "quantity": 2},
                    {"sku": "TEA-12", "name": "Green tea, 12 bags", "quantity": 1}
                ],
                "eta": "2026-12-02", "updated_at": "2026-11-26T14:03:00Z"
            })
        );
        let processing = get(&backend, "/orders/234567").await;
        assert_eq!(processing.json["status"], "processing");
        assert_eq!(processing.json["items"].as_array().unwrap().len(), 1);
        assert!(processing.json["eta"].as_str().unwrap() > "2026-12-02");
        let delivered = get(&backend, "/orders/345678").await;
        assert_eq!(delivered.json["status"], "delivered");
        assert_eq!(delivered.json["eta"], Value::Null);
        assert!(delivered.json["delivered_at"].is_string());
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn an_unknown_order_is_404_naming_the_order() {
        let backend = start().await;
        let answer = get(&backend, "/orders/999999").await;
        assert_eq!(answer.status, 404);
        assert_eq!(
            answer.json,
            json!({"error": "not_found", "message": "order 999999 not found"})
        );
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn an_order_id_that_is_not_six_digits_is_400() {
        let backend = start().await;
        for id in ["12345", "1234567", "12345a", "%31%32%33%34%35%FF"] {
            let answer = get(&backend, &format!("/orders/{id}")).await;
            assert_eq!(answer.status, 400, "order id {id}");
            assert_eq!(
                answer.json,
                json!({"error": "validation", "errors": [{"field": "order_id", "message": "must be 6 digits"}]}),
                "order id {id}"
            );
        }
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn a_request_without_the_right_token_is_401_and_recorded_as_unauthorized() {
        let backend = start().await;
        let url = format!("{}/orders/123456", backend.url());
        let missing = send(client().get(&url)).await;
        let wrong = send(client().get(&url).bearer_auth("demo-wrong")).await;
        let other_scheme = send(client().get(&url).basic_auth("user", Some(backend.token()))).await;
        for answer in [&missing, &wrong, &other_scheme] {
            assert_eq!(answer.status, 401);
            assert_eq!(
                answer.json,
                json!({"error": "unauthorized", "message": "missing or wrong bearer token"})
            );
            assert_eq!(answer.headers["www-authenticate"], "Bearer");
        }
        // The right token, in a lower-case scheme, is accepted.
        let lower = send(
            client()
                .get(&url)
                .header("authorization", format!("bearer {}", backend.token())),
        )
        .await;
        assert_eq!(lower.status, 200);

        let received = backend.received();
        assert_eq!(received.len(), 4);
        assert!(
            received[..3]
                .iter()
                .all(|r| !r.authorized && r.status == 401)
        );
        assert!(received[3].authorized && received[3].status == 200);
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn an_active_member_is_verified_with_plan_and_validity() {
        let backend = start().await;
        let answer = post(
            &backend,
            "/memberships/verify",
            json!({"member_id": "M-1001", "date_of_birth": "1990-04-12"}),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.json,
            json!({"member_id": "M-1001", "status": "active", "plan": "gold", "valid_until": "2027-01-31"})
        );
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn an_inactive_member_is_reported_with_the_expiry_date() {
        let backend = start().await;
        let answer = post(
            &backend,
            "/memberships/verify",
            json!({"member_id": "M-2002", "date_of_birth": "1985-09-30"}),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.json,
            json!({"member_id": "M-2002", "status": "inactive", "plan": "basic", "expired_on": "2026-06-30"})
        );
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn an_unknown_member_and_a_wrong_birth_date_get_the_same_404() {
        let backend = start().await;
        let unknown = post(
            &backend,
            "/memberships/verify",
            json!({"member_id": "M-9999", "date_of_birth": "1990-04-12"}),
        )
        .await;
        let wrong_dob = post(
            &backend,
            "/memberships/verify",
            json!({"member_id": "M-1001", "date_of_birth": "1990-04-13"}),
        )
        .await;
        for answer in [unknown, wrong_dob] {
            assert_eq!(answer.status, 404);
            assert_eq!(
                answer.json,
                json!({"error": "not_found", "message": "no member matches"})
            );
        }
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn membership_validation_errors_are_422_and_list_every_field() {
        let backend = start().await;
        let cases = [
            (
                json!({}),
                vec![
                    ("member_id", "is required"),
                    ("date_of_birth", "is required"),
                ],
            ),
            (
                json!({"member_id": "1001", "date_of_birth": "12/04/1990"}),
                vec![
                    ("member_id", "must be \"M-\" followed by digits"),
                    ("date_of_birth", "must be a date as YYYY-MM-DD"),
                ],
            ),
            (
                json!({"member_id": 1001, "date_of_birth": "1990-02-30"}),
                vec![
                    ("member_id", "must be a string"),
                    ("date_of_birth", "must be a date as YYYY-MM-DD"),
                ],
            ),
            (
                json!({"member_id": "M-1001", "date_of_birth": "1850-01-01"}),
                vec![(
                    "date_of_birth",
                    "must be a real date of birth, from 1900 to today",
                )],
            ),
            (json!(["M-1001"]), vec![("body", "must be a JSON object")]),
        ];
        for (body, want) in cases {
            let answer = post(&backend, "/memberships/verify", body.clone()).await;
            assert_eq!(answer.status, 422, "body {body}");
            let want: Vec<Value> = want
                .iter()
                .map(|(field, message)| json!({"field": field, "message": message}))
                .collect();
            assert_eq!(
                answer.json,
                json!({"error": "validation", "errors": want}),
                "body {body}"
            );
        }
        let not_json = send(
            authed(&backend, reqwest::Method::POST, "/memberships/verify")
                .header(CONTENT_TYPE, "application/json")
                .body("member_id=M-1001"),
        )
        .await;
        assert_eq!(not_json.status, 422);
        assert_eq!(not_json.json["errors"][0]["field"], "body");
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn a_lead_is_created_once_and_replayed_for_the_same_idempotency_key() {
        let backend = start().await;
        let lead = json!({"name": "Grace Hopper", "email": "grace@example.com", "company": "Navy", "inquiry": "Compilers"});
        let create = |key: &str| {
            with_json(authed(&backend, reqwest::Method::POST, "/crm/leads"), &lead)
                .header("idempotency-key", key)
        };
        let first = send(create("key-1")).await;
        assert_eq!(first.status, 201);
        assert_eq!(first.json["id"], "lead_000001");
        assert_eq!(first.json["name"], "Grace Hopper");
        assert_eq!(first.json["email"], "grace@example.com");
        assert_eq!(first.json["company"], "Navy");
        assert_eq!(first.json["inquiry"], "Compilers");
        let created_at = first.json["created_at"].as_str().unwrap();
        assert!(parse_date(&created_at[..10]).is_some(), "{created_at}");
        assert!(
            created_at.ends_with('Z') && created_at.len() == 20,
            "{created_at}"
        );
        assert!(!first.headers.contains_key("idempotent-replayed"));

        let replay = send(create("key-1")).await;
        assert_eq!(replay.status, 200);
        assert_eq!(replay.json, first.json);
        assert_eq!(replay.headers["idempotent-replayed"], "true");

        let other_key = send(create("key-2")).await;
        assert_eq!(other_key.status, 201);
        assert_eq!(other_key.json["id"], "lead_000002");
        let no_key = post(
            &backend,
            "/crm/leads",
            json!({"name": "Ada", "email": "ada@example.org"}),
        )
        .await;
        assert_eq!(no_key.status, 201);
        assert_eq!(no_key.json["id"], "lead_000003");
        assert_eq!(no_key.json["company"], Value::Null);

        let keys: Vec<_> = backend
            .received()
            .into_iter()
            .map(|r| r.idempotency_key)
            .collect();
        assert_eq!(
            keys,
            [
                Some("key-1".into()),
                Some("key-1".into()),
                Some("key-2".into()),
                None
            ]
        );
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn a_lead_with_an_invalid_email_or_field_is_422() {
        let backend = start().await;
        for email in [
            "grace",
            "@example.com",
            "grace@example",
            "grace@@example.com",
            "grace hopper@example.com",
            "grace@example..com",
        ] {
            let answer = post(
                &backend,
                "/crm/leads",
                json!({"name": "Grace", "email": email}),
            )
            .await;
            assert_eq!(answer.status, 422, "email {email}");
            assert_eq!(
                answer.json,
                json!({"error": "validation", "errors": [{"field": "email", "message": "must be an email address"}]}),
                "email {email}"
            );
        }
        let answer = post(
            &backend,
            "/crm/leads",
            json!({"name": " ", "company": "x".repeat(2001), "inquiry": 7}),
        )
        .await;
        assert_eq!(answer.status, 422);
        let fields: Vec<_> = answer.json["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["field"].as_str().unwrap(), e["message"].as_str().unwrap()))
            .collect();
        assert_eq!(
            fields,
            [
                ("name", "must not be empty"),
                ("email", "is required"),
                ("company", "must be at most 2000 characters"),
                ("inquiry", "must be a string"),
            ]
        );
        let long_name = post(
            &backend,
            "/crm/leads",
            json!({"name": "n".repeat(201), "email": "a@b.co"}),
        )
        .await;
        assert_eq!(
            long_name.json["errors"][0]["message"],
            "must be at most 200 characters"
        );
        // Nothing was created, so the next lead is the first.
        let ok = post(
            &backend,
            "/crm/leads",
            json!({"name": "Grace", "email": "grace@example.com"}),
        )
        .await;
        assert_eq!(ok.json["id"], "lead_000001");
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn slow_mode_delays_the_answer_but_still_answers_normally() {
        let backend = start().await;
        backend.set_mode(Api::Orders, Mode::Slow { delay_ms: 300 });
        let started = Instant::now();
        let answer = get(&backend, "/orders/123456").await;
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json["order_id"], "123456");
        let modes = get(&backend, "/_demo/mode").await;
        assert_eq!(
            modes.json["orders"],
            json!({"mode": "slow", "delay_ms": 300})
        );
        assert_eq!(modes.json["crm"], json!({"mode": "normal"}));
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn fail_mode_answers_the_configured_status_with_an_unavailable_error() {
        let backend = start().await;
        backend.set_mode(Api::Orders, Mode::Fail { status: 503 });
        let answer = get(&backend, "/orders/123456").await;
        assert_eq!(answer.status, 503);
        assert_eq!(
            answer.json,
            json!({"error": "unavailable", "message": "the orders service is failing (demo mode)"})
        );
        backend.set_mode(Api::Crm, Mode::Fail { status: 500 });
        let crm = post(
            &backend,
            "/crm/leads",
            json!({"name": "A", "email": "a@b.co"}),
        )
        .await;
        assert_eq!(crm.status, 500);
        assert_eq!(
            crm.json["message"],
            "the crm service is failing (demo mode)"
        );
        // A status that is not an error is answered as 503.
        backend.set_mode(Api::Memberships, Mode::Fail { status: 200 });
        let members = post(&backend, "/memberships/verify", json!({})).await;
        assert_eq!(members.status, 503);
        // The mode applies after the token check.
        let no_token = send(client().get(format!("{}/orders/123456", backend.url()))).await;
        assert_eq!(no_token.status, 401);
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn rate_limited_mode_answers_429_with_retry_after() {
        let backend = start().await;
        backend.set_mode(Api::Memberships, Mode::RateLimited { retry_after_s: 30 });
        let answer = post(
            &backend,
            "/memberships/verify",
            json!({"member_id": "M-1001", "date_of_birth": "1990-04-12"}),
        )
        .await;
        assert_eq!(answer.status, 429);
        assert_eq!(answer.headers["retry-after"], "30");
        assert_eq!(answer.json["error"], "rate_limited");
        assert!(
            answer.json["message"]
                .as_str()
                .unwrap()
                .contains("retry after 30 s")
        );
        backend.set_mode(Api::Memberships, Mode::Normal);
        let again = post(
            &backend,
            "/memberships/verify",
            json!({"member_id": "M-1001", "date_of_birth": "1990-04-12"}),
        )
        .await;
        assert_eq!(again.status, 200);
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn the_control_endpoint_sets_and_reads_modes_over_http() {
        let backend = start().await;
        let initial = get(&backend, "/_demo/mode").await;
        assert_eq!(
            initial.json,
            json!({"orders": {"mode": "normal"}, "memberships": {"mode": "normal"}, "crm": {"mode": "normal"}})
        );
        let set = post(
            &backend,
            "/_demo/mode",
            json!({"api": "all", "mode": "slow"}),
        )
        .await;
        assert_eq!(set.status, 200);
        assert_eq!(set.json["crm"], json!({"mode": "slow", "delay_ms": 3000}));
        let set = post(
            &backend,
            "/_demo/mode",
            json!({"api": "orders", "mode": "fail"}),
        )
        .await;
        assert_eq!(set.json["orders"], json!({"mode": "fail", "status": 503}));
        let set = post(
            &backend,
            "/_demo/mode",
            json!({"api": "crm", "mode": "rate-limited", "retry_after_s": 5}),
        )
        .await;
        assert_eq!(
            set.json,
            json!({
                "orders": {"mode": "fail", "status": 503},
                "memberships": {"mode": "slow", "delay_ms": 3000},
                "crm": {"mode": "rate-limited", "retry_after_s": 5}
            })
        );
        let crm = post(
            &backend,
            "/crm/leads",
            json!({"name": "A", "email": "a@b.co"}),
        )
        .await;
        assert_eq!(
            (crm.status, crm.headers["retry-after"].to_str().unwrap()),
            (429, "5")
        );
        let set = post(
            &backend,
            "/_demo/mode",
            json!({"api": "all", "mode": "normal"}),
        )
        .await;
        assert_eq!(set.json, initial.json);

        let bad = post(
            &backend,
            "/_demo/mode",
            json!({"api": "billing", "mode": "slow", "delay_ms": -1, "status": 200}),
        )
        .await;
        assert_eq!(bad.status, 422);
        let fields: Vec<_> = bad.json["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["api", "delay_ms", "status"]);
        let bad_mode = post(
            &backend,
            "/_demo/mode",
            json!({"api": "crm", "mode": "broken"}),
        )
        .await;
        assert_eq!(bad_mode.json["errors"][0]["field"], "mode");

        // The control endpoint needs the token too.
        let no_token = send(client().get(format!("{}/_demo/mode", backend.url()))).await;
        assert_eq!(no_token.status, 401);
        // Only the /crm/leads call above was recorded.
        let paths: Vec<_> = backend.received().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/crm/leads"]);
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn the_control_endpoint_lists_and_clears_recorded_requests() {
        let backend = start().await;
        get(&backend, "/orders/123456").await;
        post(
            &backend,
            "/crm/leads",
            json!({"name": "A", "email": "a@b.co"}),
        )
        .await;
        let listed = get(&backend, "/_demo/requests").await;
        assert_eq!(listed.status, 200);
        let listed: Vec<ReceivedRequest> = serde_json::from_value(listed.json).unwrap();
        assert_eq!(listed, backend.received());
        assert_eq!(listed.len(), 2);
        let cleared = send(authed(&backend, reqwest::Method::DELETE, "/_demo/requests")).await;
        assert_eq!(cleared.json, json!({"cleared": 2}));
        assert!(backend.received().is_empty());
        assert_eq!(get(&backend, "/_demo/requests").await.json, json!([]));
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn received_requests_record_what_was_sent_and_never_the_token() {
        let backend = start().await;
        let token = backend.token().to_owned();
        get(&backend, "/orders/123456?expand=items").await;
        send(
            with_json(
                authed(&backend, reqwest::Method::POST, "/crm/leads"),
                &json!({"name": "Leaky", "email": "leaky@example.com", "inquiry": format!("my key is {token}")}),
            )
            .header("idempotency-key", "lead-42"),
        )
        .await;
        // A careless client puts the token in the query string as well.
        send(client().get(format!(
            "{}/orders/234567?access_token={token}",
            backend.url()
        )))
        .await;

        let received = backend.received();
        assert_eq!(
            received[0],
            ReceivedRequest {
                method: "GET".into(),
                path: "/orders/123456".into(),
                query: Some("expand=items".into()),
                authorized: true,
                idempotency_key: None,
                content_type: None,
                body: String::new(),
                status: 200,
            }
        );
        assert_eq!(received[1].method, "POST");
        assert_eq!(received[1].path, "/crm/leads");
        assert_eq!(received[1].idempotency_key.as_deref(), Some("lead-42"));
        assert_eq!(
            received[1].content_type.as_deref(),
            Some("application/json")
        );
        assert_eq!(received[1].status, 201);
        let body: Value = serde_json::from_str(&received[1].body).unwrap();
        assert_eq!(body["inquiry"], "my key is [redacted]");
        assert_eq!(
            received[2].query.as_deref(),
            Some("access_token=[redacted]")
        );
        assert!(!received[2].authorized);

        let everything = serde_json::to_string(&received).unwrap();
        assert!(!everything.contains(&token), "{everything}");
        // Nor does the Debug form of the back end show it.
        assert!(!format!("{backend:?}").contains(&token));
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn health_needs_no_token_and_is_not_recorded() {
        let backend = start().await;
        let answer = send(client().get(format!("{}/health", backend.url()))).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json, json!({"ok": true}));
        assert!(backend.received().is_empty());
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_routes_are_404_and_wrong_methods_405_as_json() {
        let backend = start().await;
        let unknown = get(&backend, "/invoices/1").await;
        assert_eq!(unknown.status, 404);
        assert_eq!(
            unknown.json,
            json!({"error": "not_found", "message": "no route for GET /invoices/1"})
        );
        let wrong = send(authed(&backend, reqwest::Method::DELETE, "/orders/123456")).await;
        assert_eq!(wrong.status, 405);
        assert_eq!(wrong.json["error"], "method_not_allowed");
        assert!(wrong.headers["allow"].to_str().unwrap().contains("GET"));
        let wrong = send(authed(&backend, reqwest::Method::GET, "/crm/leads")).await;
        assert_eq!(wrong.status, 405);
        let statuses: Vec<_> = backend.received().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [404, 405, 405]);
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn a_body_over_one_mebibyte_is_413() {
        let backend = start().await;
        let answer = send(
            authed(&backend, reqwest::Method::POST, "/crm/leads")
                .header(CONTENT_TYPE, "application/json")
                .body(vec![b' '; MAX_BODY_BYTES + 1]),
        )
        .await;
        assert_eq!(answer.status, 413);
        assert_eq!(backend.received()[0].body, "");
        backend.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_stops_listening() {
        let backend = start().await;
        let url = format!("{}/health", backend.url());
        assert_eq!(send(client().get(&url)).await.status, 200);
        backend.shutdown().await;
        assert!(client().get(&url).send().await.is_err());
    }

    #[tokio::test]
    async fn a_token_with_characters_a_header_cannot_carry_is_refused() {
        for token in ["", "a b", "tok\nen", "=", "ab=c"] {
            let err = DemoBackend::start("127.0.0.1:0".parse().unwrap(), token.into())
                .await
                .expect_err(token);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn new_tokens_are_demo_and_32_hex_digits_and_differ() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        let hex = a.strip_prefix("demo-").expect("a demo- prefix");
        assert_eq!(hex.len(), 32);
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(is_b64token(&a));
    }

    #[test]
    fn modes_serialize_tagged_and_fill_in_defaults() {
        let slow = Mode::Slow { delay_ms: 3000 };
        assert_eq!(
            serde_json::to_value(slow).unwrap(),
            json!({"mode": "slow", "delay_ms": 3000})
        );
        let parse = |v: Value| serde_json::from_value::<Mode>(v).unwrap();
        assert_eq!(parse(json!({"mode": "slow"})), slow);
        assert_eq!(parse(json!({"mode": "fail"})), Mode::Fail { status: 503 });
        assert_eq!(
            parse(json!({"mode": "rate-limited"})),
            Mode::RateLimited { retry_after_s: 30 }
        );
        assert_eq!(parse(json!({"mode": "normal"})), Mode::Normal);
        assert_eq!(
            serde_json::to_value(Api::Memberships).unwrap(),
            "memberships"
        );
        assert_eq!(
            serde_json::from_value::<Api>(json!("crm")).unwrap(),
            Api::Crm
        );
    }

    #[test]
    fn dates_are_parsed_strictly_and_converted_from_day_counts() {
        assert_eq!(parse_date("2024-02-29"), Some((2024, 2, 29)));
        for bad in [
            "2023-02-29",
            "1900-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-4-12",
            "2024-04-12 ",
            "２０２４-04-12",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_783), (2026, 11, 26));
        assert_eq!(rfc3339(1_795_701_780), "2026-11-26T14:03:00Z");
        let today = (2026, 11, 26);
        assert!(is_plausible_birth_date((1990, 4, 12), today));
        assert!(is_plausible_birth_date(today, today));
        assert!(!is_plausible_birth_date((2026, 11, 27), today));
        assert!(!is_plausible_birth_date((1899, 12, 31), today));
    }

    #[test]
    fn emails_need_one_at_a_local_part_and_a_dotted_domain() {
        for good in ["a@b.co", "grace.hopper+crm@mail.example.com"] {
            assert!(is_email(good), "{good}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@@b.co", "a@b@c.co", "a b@c.co", "a@.co", "a@b.", "a@b.co\n",
        ] {
            assert!(!is_email(bad), "{bad:?}");
        }
    }
}
