//! Outbound HTTP through the host (`callout:plugin/outbound-http`), the plugin's only door to
//! the network.
//!
//! ```no_run
//! # use callout_guest::prelude::*;
//! # fn f() -> Result<(), ActionError> {
//! let resp = http::post("https://api.example.com/v1/tickets")
//!     .header("authorization", "Bearer {{secret.TICKETS_TOKEN}}")
//!     .json(&serde_json::json!({ "subject": "Broken widget" }))
//!     .send()?
//!     .error_for_status()?;
//! let ticket: serde_json::Value = resp.json()?;
//! # Ok(()) }
//! ```
//!
//! Every request is checked by the host against the grants of the action's `action.toml`
//! (`[http]`, `[secrets]`); a header value may hold `{{secret.NAME}}` placeholders, filled in by
//! the host after the check. Redirects are not followed: a 3xx is an ordinary response.
//!
//! **Idempotency.** Writes (POST, PUT, PATCH, DELETE) carry the call's idempotency key as an
//! `Idempotency-Key` header by default, the same key on every retry of a logical call, so an
//! upstream that honours it applies a retried write once. Setting the header yourself wins;
//! [`RequestBuilder::idempotency_key`] overrides the key (`Some`) or disables it (`None`).
//!
//! **Dry runs.** In a dry run the host records each request instead of sending it and
//! [`RequestBuilder::send`] returns [`Error::DryRun`]. Propagate it with `?` out of
//! [`Action::run`](crate::Action::run): the call then finishes successfully with `data` = `null`
//! and no reply.

use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::callout::plugin::outbound_http as wit;
use crate::error::{ActionError, UpstreamKind};

/// The header carrying the call's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The longest body excerpt quoted in a client-error message, in characters.
const SNIPPET_CHARS: usize = 200;

thread_local! {
    static CALL_KEY: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Sets the idempotency key of the call being run, until the guard is dropped.
pub(crate) struct CallKeyGuard(());

impl CallKeyGuard {
    pub(crate) fn set(key: &str) -> Self {
        CALL_KEY.with(|k| *k.borrow_mut() = Some(key.to_owned()).filter(|k| !k.is_empty()));
        CallKeyGuard(())
    }
}

impl Drop for CallKeyGuard {
    fn drop(&mut self) {
        CALL_KEY.with(|k| *k.borrow_mut() = None);
    }
}

/// The idempotency key of the call being run, if any.
pub(crate) fn call_key() -> Option<String> {
    CALL_KEY.with(|k| k.borrow().clone())
}

/// An HTTP method a plugin may use (CONNECT and TRACE do not exist on purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
}

impl Method {
    /// Whether the method changes state upstream (POST, PUT, PATCH, DELETE): those carry the
    /// call's idempotency key by default.
    pub fn is_write(self) -> bool {
        matches!(self, Self::Post | Self::Put | Self::Patch | Self::Delete)
    }

    fn to_wit(self) -> wit::Method {
        match self {
            Self::Get => wit::Method::Get,
            Self::Head => wit::Method::Head,
            Self::Post => wit::Method::Post,
            Self::Put => wit::Method::Put,
            Self::Patch => wit::Method::Patch,
            Self::Delete => wit::Method::Delete,
            Self::Options => wit::Method::Options,
        }
    }
}

/// Why a request produced no response. Convert it into an [`ActionError`] with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request broke the action's grants; it was not sent.
    Denied {
        /// A stable code, e.g. `host-not-allowed`, `secret-not-allowed`.
        code: String,
        /// What was refused and what grant would allow it.
        message: String,
    },
    /// The request itself is malformed (bad URL, bad header, unserializable body); not sent.
    InvalidRequest(String),
    /// No complete response within the timeout.
    Timeout,
    /// The connection could not be made (refused, reset, TLS, DNS).
    Connect(String),
    /// The response body exceeded the cap, given in bytes.
    ResponseTooLarge(u64),
    /// The upstream sent something that is not valid HTTP, or the connection broke mid-body.
    Protocol(String),
    /// Dry run: the host recorded the request instead of sending it. Propagate it with `?`:
    /// the call then finishes successfully with `data` = `null`.
    DryRun,
}

impl Error {
    /// Whether this is a dry run rather than a failure.
    pub fn is_dry_run(&self) -> bool {
        matches!(self, Self::DryRun)
    }

    fn from_wit(e: wit::HttpError) -> Self {
        match e {
            wit::HttpError::Denied(d) => Self::Denied {
                code: d.code,
                message: d.message,
            },
            wit::HttpError::InvalidRequest(m) => Self::InvalidRequest(m),
            wit::HttpError::Timeout => Self::Timeout,
            wit::HttpError::Connect(m) => Self::Connect(m),
            wit::HttpError::ResponseTooLarge(n) => Self::ResponseTooLarge(n),
            wit::HttpError::Protocol(m) => Self::Protocol(m),
            wit::HttpError::DryRun => Self::DryRun,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied { code, message } => write!(f, "request denied ({code}): {message}"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::Timeout => f.write_str("the upstream did not answer in time"),
            Self::Connect(m) => write!(f, "could not connect to the upstream: {m}"),
            Self::ResponseTooLarge(n) => write!(f, "response larger than {n} bytes"),
            Self::Protocol(m) => write!(f, "protocol error: {m}"),
            Self::DryRun => f.write_str("dry run: the request was recorded by the host, not sent"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for ActionError {
    fn from(e: Error) -> Self {
        match e {
            Error::Denied { code, message } => ActionError::Denied { code, message },
            Error::InvalidRequest(m) => ActionError::internal(format!("invalid request: {m}")),
            Error::Timeout => ActionError::upstream(
                UpstreamKind::Timeout,
                None,
                None,
                "the upstream did not answer in time",
            ),
            Error::Connect(m) => ActionError::upstream(UpstreamKind::Connect, None, None, m),
            Error::ResponseTooLarge(n) => ActionError::upstream(
                UpstreamKind::Protocol,
                None,
                None,
                format!("response larger than {n} bytes"),
            ),
            Error::Protocol(m) => ActionError::upstream(UpstreamKind::Protocol, None, None, m),
            Error::DryRun => ActionError::DryRun,
        }
    }
}

/// A GET request to `url`.
pub fn get(url: impl Into<String>) -> RequestBuilder {
    request(Method::Get, url)
}

/// A HEAD request to `url`.
pub fn head(url: impl Into<String>) -> RequestBuilder {
    request(Method::Head, url)
}

/// A POST request to `url` (carries the idempotency key by default).
pub fn post(url: impl Into<String>) -> RequestBuilder {
    request(Method::Post, url)
}

/// A PUT request to `url` (carries the idempotency key by default).
pub fn put(url: impl Into<String>) -> RequestBuilder {
    request(Method::Put, url)
}

/// A PATCH request to `url` (carries the idempotency key by default).
pub fn patch(url: impl Into<String>) -> RequestBuilder {
    request(Method::Patch, url)
}

/// A DELETE request to `url` (carries the idempotency key by default).
pub fn delete(url: impl Into<String>) -> RequestBuilder {
    request(Method::Delete, url)
}

/// A request with any `method` to `url`, an absolute `http://` or `https://` URL.
pub fn request(method: Method, url: impl Into<String>) -> RequestBuilder {
    RequestBuilder {
        method,
        url: url.into(),
        headers: Vec::new(),
        body: None,
        timeout: None,
        key: KeyChoice::Default,
        error: None,
    }
}

/// Which idempotency key a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyChoice {
    /// The call's key, on writes only.
    Default,
    /// This key, whatever the method.
    Set(String),
    /// None at all.
    Disabled,
}

/// A request being built; send it with [`RequestBuilder::send`].
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
    key: KeyChoice,
    error: Option<String>,
}

/// A request ready to go to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) timeout_ms: Option<u32>,
}

impl RequestBuilder {
    /// Adds a header. The value may hold `{{secret.NAME}}` placeholders.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body to `value` as JSON and, unless already set, `content-type:
    /// application/json`. A value that cannot be serialized makes [`send`](Self::send) fail with
    /// [`Error::InvalidRequest`].
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.body = Some(bytes),
            Err(e) => self.error = Some(format!("the JSON body could not be serialized: {e}")),
        }
        if !has_header(&self.headers, "content-type") {
            self.headers
                .push(("content-type".into(), "application/json".into()));
        }
        self
    }

    /// Sets the raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets this request's timeout. The host clamps it to the action's `http.timeout_ms`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Overrides the idempotency key: `Some(key)` sends `key` whatever the method, `None`
    /// sends no key even on a write. Without this call, writes carry the call's key.
    pub fn idempotency_key(mut self, key: Option<String>) -> Self {
        self.key = match key {
            Some(k) => KeyChoice::Set(k),
            None => KeyChoice::Disabled,
        };
        self
    }

    /// Sends the request through the host and returns its response, whatever its status: use
    /// [`Response::error_for_status`] to turn 4xx and 5xx into errors.
    ///
    /// # Errors
    /// An [`Error`] when no response was produced; [`Error::DryRun`] in a dry run.
    pub fn send(self) -> Result<Response, Error> {
        let p = self.prepare(call_key().as_deref())?;
        let request = wit::Request {
            method: p.method.to_wit(),
            url: p.url,
            headers: p.headers,
            body: p.body,
            timeout_ms: p.timeout_ms,
        };
        wit::send(&request)
            .map(|r| Response::new(r.status, r.headers, r.body))
            .map_err(Error::from_wit)
    }

    /// Everything `send` does before calling the host, given the call's idempotency key.
    pub(crate) fn prepare(self, call_key: Option<&str>) -> Result<Prepared, Error> {
        if let Some(e) = self.error {
            return Err(Error::InvalidRequest(e));
        }
        Ok(Prepared {
            headers: outgoing_headers(self.method, self.headers, &self.key, call_key),
            method: self.method,
            url: self.url,
            body: self.body,
            timeout_ms: self
                .timeout
                .map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
        })
    }
}

fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// The headers a request goes out with: `headers`, plus an `Idempotency-Key` unless they have
/// one already, the builder disabled it, or (by default) the method is not a write or the call
/// has no key.
pub(crate) fn outgoing_headers(
    method: Method,
    mut headers: Vec<(String, String)>,
    choice: &KeyChoice,
    call_key: Option<&str>,
) -> Vec<(String, String)> {
    if has_header(&headers, IDEMPOTENCY_KEY) {
        return headers;
    }
    let key = match choice {
        KeyChoice::Disabled => None,
        KeyChoice::Set(k) => Some(k.as_str()),
        KeyChoice::Default if method.is_write() => call_key,
        KeyChoice::Default => None,
    };
    if let Some(k) = key.filter(|k| !k.is_empty()) {
        headers.push((IDEMPOTENCY_KEY.into(), k.into()));
    }
    headers
}

/// The upstream's answer, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// A response with these parts, e.g. to test code that reads responses.
    pub fn new(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        Self {
            status,
            headers,
            body,
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Every header, names in lower case, in the order received.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The whole body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, taken out of the response.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as UTF-8 text.
    ///
    /// # Errors
    /// An upstream protocol error if the body is not UTF-8.
    pub fn text(&self) -> Result<String, ActionError> {
        String::from_utf8(self.body.clone()).map_err(|e| {
            ActionError::upstream(
                UpstreamKind::Protocol,
                Some(self.status),
                None,
                format!("the upstream's response is not UTF-8 text: {e}"),
            )
        })
    }

    /// The body parsed as JSON into `T`.
    ///
    /// # Errors
    /// An upstream protocol error, with serde's message, if the body is not the expected JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ActionError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ActionError::upstream(
                UpstreamKind::Protocol,
                Some(self.status),
                None,
                format!("the upstream's response is not the expected JSON: {e}"),
            )
        })
    }

    /// The response if its status is 1xx to 3xx, else the error the status means: 429 →
    /// rate-limited (with `Retry-After` in delta-seconds as `retry_after_ms`), 5xx →
    /// server-error, other 4xx → client-error (quoting the start of the body).
    ///
    /// # Errors
    /// The [`ActionError::Upstream`] for a 4xx or 5xx status.
    pub fn error_for_status(self) -> Result<Response, ActionError> {
        match status_error(self.status, self.header("retry-after"), &self.body) {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }
}

/// The error a status means, `None` for 1xx to 3xx.
pub(crate) fn status_error(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Option<ActionError> {
    let (kind, retry_after_ms, message) = match status {
        100..=399 => return None,
        429 => (
            UpstreamKind::RateLimited,
            retry_after.and_then(retry_after_ms),
            "the upstream answered 429 Too Many Requests".to_owned(),
        ),
        400..=499 => {
            let snippet = snippet(body);
            let message = if snippet.is_empty() {
                format!("the upstream answered {status}")
            } else {
                format!("the upstream answered {status}: {snippet}")
            };
            (UpstreamKind::ClientError, None, message)
        }
        500..=599 => (
            UpstreamKind::ServerError,
            None,
            format!("the upstream answered {status}"),
        ),
        _ => (
            UpstreamKind::Protocol,
            None,
            format!("the upstream answered an invalid status {status}"),
        ),
    };
    Some(ActionError::upstream(
        kind,
        Some(status),
        retry_after_ms,
        message,
    ))
}

/// `Retry-After` in milliseconds, when it is delta-seconds (an HTTP-date gives `None`).
pub(crate) fn retry_after_ms(value: &str) -> Option<u64> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|secs| secs.saturating_mul(1000))
}

/// The start of a body for a message: whitespace collapsed, at most [`SNIPPET_CHARS`] chars.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= SNIPPET_CHARS {
        return collapsed;
    }
    let mut cut: String = collapsed.chars().take(SNIPPET_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn key_of(headers: &[(String, String)]) -> Option<&str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(IDEMPOTENCY_KEY))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn writes_carry_the_calls_idempotency_key_and_reads_do_not() {
        let cases = [
            (Method::Get, None),
            (Method::Head, None),
            (Method::Options, None),
            (Method::Post, Some("call-key")),
            (Method::Put, Some("call-key")),
            (Method::Patch, Some("call-key")),
            (Method::Delete, Some("call-key")),
        ];
        for (method, expected) in cases {
            let headers =
                outgoing_headers(method, Vec::new(), &KeyChoice::Default, Some("call-key"));
            assert_eq!(key_of(&headers), expected, "{method:?}");
        }
    }

    #[test]
    fn the_idempotency_key_follows_the_builders_choice() {
        let set = KeyChoice::Set("mine".into());
        /// Method, headers set by hand, the builder's choice, the call's key → the key sent.
        type Case<'a> = (
            Method,
            Vec<(String, String)>,
            &'a KeyChoice,
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: [Case; 7] = [
            // A header set by hand wins over everything, whatever its case.
            (
                Method::Post,
                h(&[("idempotency-key", "by-hand")]),
                &KeyChoice::Default,
                Some("k"),
                Some("by-hand"),
            ),
            (
                Method::Post,
                h(&[("IDEMPOTENCY-KEY", "by-hand")]),
                &set,
                Some("k"),
                Some("by-hand"),
            ),
            // Disabled: none, even on a write.
            (Method::Post, vec![], &KeyChoice::Disabled, Some("k"), None),
            // Overridden: this key, even on a read.
            (Method::Get, vec![], &set, Some("k"), Some("mine")),
            (Method::Post, vec![], &set, None, Some("mine")),
            // No call key (outside a call) or an empty one: nothing to send.
            (Method::Post, vec![], &KeyChoice::Default, None, None),
            (Method::Post, vec![], &KeyChoice::Default, Some(""), None),
        ];
        for (method, headers, choice, call_key, expected) in cases {
            let out = outgoing_headers(method, headers.clone(), choice, call_key);
            assert_eq!(
                key_of(&out),
                expected,
                "{method:?} {headers:?} {choice:?} {call_key:?}"
            );
            let keys = out
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(IDEMPOTENCY_KEY))
                .count();
            assert!(keys <= 1, "at most one key header: {out:?}");
        }
    }

    #[test]
    fn a_json_body_sets_the_content_type_unless_one_was_given() {
        let p = post("https://x.test/a")
            .json(&serde_json::json!({"a": 1}))
            .prepare(Some("k"))
            .unwrap();
        assert_eq!(p.body.as_deref(), Some(br#"{"a":1}"#.as_slice()));
        assert_eq!(
            p.headers,
            h(&[
                ("content-type", "application/json"),
                ("Idempotency-Key", "k")
            ])
        );

        let p = put("https://x.test/a")
            .header("Content-Type", "application/merge-patch+json")
            .json(&1)
            .idempotency_key(None)
            .prepare(Some("k"))
            .unwrap();
        assert_eq!(
            p.headers,
            h(&[("Content-Type", "application/merge-patch+json")])
        );
    }

    #[test]
    fn a_builder_becomes_the_request_the_host_gets() {
        let p = request(Method::Patch, "https://x.test/b")
            .header("authorization", "Bearer {{secret.T}}")
            .body("raw")
            .timeout(Duration::from_millis(2500))
            .prepare(None)
            .unwrap();
        assert_eq!(
            p,
            Prepared {
                method: Method::Patch,
                url: "https://x.test/b".into(),
                headers: h(&[("authorization", "Bearer {{secret.T}}")]),
                body: Some(b"raw".to_vec()),
                timeout_ms: Some(2500),
            }
        );
        let huge = get("https://x.test").timeout(Duration::from_secs(u64::MAX / 2));
        assert_eq!(huge.prepare(None).unwrap().timeout_ms, Some(u32::MAX));
    }

    #[test]
    fn a_body_that_cannot_be_serialized_fails_as_an_invalid_request() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(vec![1u8], 1);
        let err = post("https://x.test").json(&map).prepare(None).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidRequest(m) if m.contains("serialized")),
            "{err}"
        );
        assert!(matches!(ActionError::from(err), ActionError::Internal(_)));
    }

    #[test]
    fn each_status_maps_to_its_upstream_error() {
        use UpstreamKind::*;
        /// Status and Retry-After → the error's kind and retry_after_ms (`None`: no error).
        type Case = (
            u16,
            Option<&'static str>,
            Option<(UpstreamKind, Option<u64>)>,
        );
        let cases: [Case; 12] = [
            (101, None, None),
            (200, None, None),
            (204, None, None),
            (304, None, None),
            (429, Some("7"), Some((RateLimited, Some(7000)))),
            (429, Some(" 0 "), Some((RateLimited, Some(0)))),
            (
                429,
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                Some((RateLimited, None)),
            ),
            (429, None, Some((RateLimited, None))),
            (400, Some("5"), Some((ClientError, None))),
            (404, None, Some((ClientError, None))),
            (500, Some("5"), Some((ServerError, None))),
            (503, None, Some((ServerError, None))),
        ];
        for (status, retry_after, expected) in cases {
            let got = status_error(status, retry_after, b"").map(|e| match e {
                ActionError::Upstream(u) => {
                    assert_eq!(u.status, Some(status));
                    (u.kind, u.retry_after_ms)
                }
                other => panic!("{status}: not an upstream error: {other:?}"),
            });
            assert_eq!(got, expected, "{status} {retry_after:?}");
        }
    }

    #[test]
    fn error_for_status_reads_retry_after_case_insensitively() {
        let resp = Response::new(429, h(&[("Retry-After", "3")]), vec![]);
        let err = resp.error_for_status().unwrap_err();
        assert!(matches!(err, ActionError::Upstream(u) if u.retry_after_ms == Some(3000)));
        let ok = Response::new(201, vec![], b"{}".to_vec())
            .error_for_status()
            .unwrap();
        assert_eq!(ok.status(), 201);
    }

    #[test]
    fn a_client_error_quotes_at_most_200_chars_of_the_body() {
        let body = format!("{{\"error\":\n  \"{}\"}}", "x".repeat(500));
        let Some(ActionError::Upstream(u)) = status_error(422, None, body.as_bytes()) else {
            panic!("not an upstream error")
        };
        let quoted = u
            .message
            .strip_prefix("the upstream answered 422: ")
            .unwrap();
        assert_eq!(quoted.chars().count(), 200);
        assert!(quoted.starts_with("{\"error\": \"xxx"), "{quoted}");
        assert!(quoted.ends_with('…'));

        let Some(ActionError::Upstream(u)) = status_error(400, None, b"bad date") else {
            panic!()
        };
        assert_eq!(u.message, "the upstream answered 400: bad date");
        let Some(ActionError::Upstream(u)) = status_error(403, None, b"") else {
            panic!()
        };
        assert_eq!(u.message, "the upstream answered 403");
    }

    #[test]
    fn each_http_error_maps_to_its_action_error() {
        use UpstreamKind::*;
        let up = |kind, message: &str| ActionError::upstream(kind, None, None, message);
        let cases = [
            (
                Error::Denied {
                    code: "host-not-allowed".into(),
                    message: "grant it".into(),
                },
                ActionError::denied("host-not-allowed", "grant it"),
            ),
            (
                Error::Timeout,
                up(Timeout, "the upstream did not answer in time"),
            ),
            (Error::Connect("refused".into()), up(Connect, "refused")),
            (
                Error::ResponseTooLarge(1024),
                up(Protocol, "response larger than 1024 bytes"),
            ),
            (Error::Protocol("broken".into()), up(Protocol, "broken")),
            (
                Error::InvalidRequest("bad url".into()),
                ActionError::internal("invalid request: bad url"),
            ),
            (Error::DryRun, ActionError::DryRun),
        ];
        for (error, expected) in cases {
            assert_eq!(ActionError::from(error.clone()), expected, "{error}");
        }
    }

    #[test]
    fn wit_http_errors_become_sdk_errors_one_for_one() {
        let d = wit::Denial {
            code: "c".into(),
            message: "m".into(),
        };
        let cases = [
            (
                wit::HttpError::Denied(d),
                Error::Denied {
                    code: "c".into(),
                    message: "m".into(),
                },
            ),
            (
                wit::HttpError::InvalidRequest("i".into()),
                Error::InvalidRequest("i".into()),
            ),
            (wit::HttpError::Timeout, Error::Timeout),
            (
                wit::HttpError::Connect("c".into()),
                Error::Connect("c".into()),
            ),
            (
                wit::HttpError::ResponseTooLarge(9),
                Error::ResponseTooLarge(9),
            ),
            (
                wit::HttpError::Protocol("p".into()),
                Error::Protocol("p".into()),
            ),
            (wit::HttpError::DryRun, Error::DryRun),
        ];
        for (from, to) in cases {
            assert_eq!(Error::from_wit(from), to);
        }
    }

    #[test]
    fn a_body_that_is_not_the_expected_json_is_an_upstream_protocol_error() {
        let resp = Response::new(200, vec![], b"<html>".to_vec());
        let err = resp.json::<serde_json::Value>().unwrap_err();
        let ActionError::Upstream(u) = err else {
            panic!("{err:?}")
        };
        assert_eq!((u.kind, u.status), (UpstreamKind::Protocol, Some(200)));
        assert!(u.message.contains("expected value"), "{}", u.message);

        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Order {
            status: String,
        }
        let resp = Response::new(200, vec![], br#"{"state":"x"}"#.to_vec());
        let err = resp.json::<Order>().unwrap_err();
        assert!(err.to_string().contains("missing field `status`"), "{err}");
        let ok: Order = Response::new(200, vec![], br#"{"status":"shipped"}"#.to_vec())
            .json()
            .unwrap();
        assert_eq!(ok.status, "shipped");
    }

    #[test]
    fn text_and_headers_read_the_response() {
        let resp = Response::new(200, h(&[("content-type", "text/plain")]), "héllo".into());
        assert_eq!(resp.text().unwrap(), "héllo");
        assert_eq!(resp.header("Content-Type"), Some("text/plain"));
        assert_eq!(resp.header("x-missing"), None);
        assert_eq!(resp.headers().len(), 1);
        let bad = Response::new(200, vec![], vec![0xff, 0xfe]);
        assert!(
            matches!(bad.text(), Err(ActionError::Upstream(u)) if u.kind == UpstreamKind::Protocol)
        );
    }

    #[test]
    fn the_call_key_is_set_only_while_its_guard_lives() {
        let current = call_key;
        {
            let _guard = CallKeyGuard::set("abc");
            assert_eq!(current().as_deref(), Some("abc"));
        }
        assert_eq!(current(), None);
        let _guard = CallKeyGuard::set("");
        assert_eq!(current(), None);
    }
}
