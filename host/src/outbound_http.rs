//! The `outbound-http` import: policy first, then a guarded reqwest client, typed errors back.
//!
//! The order of a `send`:
//! 1. parse and normalise the URL; check headers (no control characters, no hop-by-hop or
//!    host-controlled headers) and the body size;
//! 2. the action's allowlist decides (scheme, host, port, path prefix, method), and literal
//!    addresses in blocked networks are refused ([`crate::policy`], pure);
//! 3. `{{secret.NAME}}` placeholders are checked: declared, bound to this destination, in a
//!    place the secret may fill (header values by default; the query or body only where listed),
//!    and not brought in by the user's own words (a placeholder that appears in the call's
//!    inputs, variables or transcript is refused);
//! 4. in dry-run the rendered request is recorded (secrets left as placeholders) and `dry-run`
//!    returned;
//! 5. otherwise, within the action's concurrency limit, the secrets are filled in and the
//!    request goes out through the one client, whose resolver drops every non-global address
//!    (so a name that resolves to 127.0.0.1 or 10.x is refused, and the connection goes to an
//!    address that was checked) and answers `--dev-loopback` names with loopback addresses only;
//! 6. redirects are off unless the action sets `http.redirects`; then the host follows each hop
//!    itself, checking it again (grants, guard, secrets) and refusing an https→http downgrade;
//! 7. the response is read under the action's caps (headers, body), every secret value the
//!    upstream echoes is replaced by `[redacted]`, and every failure becomes a typed
//!    `http-error`. Each attempt, allowed or not, is written to the audit log.
//!
//! The client keeps connections alive, never follows redirects by itself and never uses a proxy
//! from the environment. Per-action settings (timeouts, caps) are applied per request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::audit::{AuditEvent, AuditLog, Decision as AuditDecision};
use crate::bindings::callout::plugin::outbound_http as wit;
use crate::call::{RecordedRequest, SentRequest};
use crate::config::HttpSettings;
use crate::manifest::{HttpGrants, SecretGrant, SecretPlace, SecretSource};
use crate::phases::{Phase, Timer};
use crate::policy::{self, Decision, DevLoopback, Method, Target};
use crate::state::InstanceState;

/// Secret values the host can fill in.
///
/// `env:NAME` sources read the process environment at send time (so a rotated value is picked
/// up without a reload), unless the embedder supplied a value under that name with
/// [`Secrets::insert`] (the demo and tests do, instead of touching the process environment).
/// `file:KEY` sources read the secrets file loaded at start-up ([`Secrets::load_file`]).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: HashMap<String, String>,
    file: HashMap<String, String>,
}

impl Secrets {
    /// Supplies the value of `env:NAME` for this process without setting an environment
    /// variable.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// Loads the secrets file: a TOML table of string values, which must be readable and
    /// writable by its owner only (mode 0600 or stricter).
    ///
    /// # Errors
    /// A file that cannot be read, is readable by others, or is not a table of strings; each
    /// message names the file and the fix.
    pub fn load_file(&mut self, path: &Path) -> anyhow::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| {
                    anyhow::anyhow!("cannot read the secrets file {}: {e}", path.display())
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                anyhow::bail!(
                    "the secrets file {} is readable by other users (mode {:o}); run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                );
            }
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the secrets file {}: {e}", path.display()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "the secrets file {} is not valid TOML: {}",
                path.display(),
                crate::config::one_line(&e.to_string())
            )
        })?;
        for (key, value) in table {
            let toml::Value::String(value) = value else {
                anyhow::bail!(
                    "the secrets file {}: {key} is not a string; write {key} = \"...\"",
                    path.display()
                );
            };
            self.file.insert(key, value);
        }
        Ok(())
    }

    /// The current value of `source`, if it has one.
    pub fn get(&self, source: &SecretSource) -> Option<String> {
        match source {
            SecretSource::Env(var) => self
                .values
                .get(var)
                .cloned()
                .or_else(|| std::env::var(var).ok())
                .filter(|v| !v.is_empty()),
            SecretSource::File(key) => self.file.get(key).cloned().filter(|v| !v.is_empty()),
        }
    }
}

/// The default secrets file of a data dir, used when it exists.
pub fn default_secrets_file(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets.toml")
}

/// The process-wide outbound HTTP machinery: the one client, the dev-loopback list, secret
/// values, the audit log and the process's metrics.
pub struct OutboundHttp {
    client: reqwest::Client,
    dev_loopback: DevLoopback,
    secrets: Secrets,
    audit: Option<Arc<AuditLog>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl OutboundHttp {
    /// Builds the client. `dev_loopback` lifts the network block for exactly its entries;
    /// `lookup` resolves names (the system resolver in production, a fake one in tests).
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new(
        settings: &HttpSettings,
        dev_loopback: DevLoopback,
        secrets: Secrets,
        lookup: Arc<dyn Lookup>,
        audit: Option<Arc<AuditLog>>,
    ) -> anyhow::Result<Self> {
        let resolver = GuardedResolver {
            lookup,
            dev_names: dev_loopback.names().into_iter().collect(),
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .pool_max_idle_per_host(settings.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("callout/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(resolver))
            .build()?;
        Ok(Self {
            client,
            dev_loopback,
            secrets,
            audit,
            metrics: Arc::default(),
        })
    }

    /// The process's metrics (calls and outbound decisions are counted here).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The dev-loopback entries in force.
    pub fn dev_loopback(&self) -> &DevLoopback {
        &self.dev_loopback
    }

    /// The audit log, if the host keeps one.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_deref()
    }
}

/// One action's network grants and secrets, shared by all its calls.
#[derive(Debug)]
pub struct ActionHttp {
    grants: HttpGrants,
    secrets: BTreeMap<String, SecretGrant>,
    bindings: Vec<policy::SecretBinding>,
    in_flight: Arc<tokio::sync::Semaphore>,
    signing: Option<String>,
    /// The action's metrics series, where each attempt is counted by its decision.
    metrics: Arc<crate::metrics::ActionMetrics>,
}

impl ActionHttp {
    /// The grants and secrets of one action's manifest, and its metrics series.
    pub fn new(
        grants: HttpGrants,
        secrets: BTreeMap<String, SecretGrant>,
        metrics: Arc<crate::metrics::ActionMetrics>,
    ) -> Self {
        let bindings = secrets.values().map(|g| g.binding.clone()).collect();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(grants.max_concurrent as usize));
        Self {
            grants,
            secrets,
            bindings,
            in_flight,
            signing: None,
            metrics,
        }
    }

    /// Signs every request with the key held by the secret `name` (`[signing] secret`).
    pub fn with_signing(mut self, name: Option<String>) -> Self {
        self.signing = name;
        self
    }
}

/// What one call may and may not do with secrets, beyond its action's grants.
#[derive(Debug, Clone, Default)]
pub struct CallSecrets {
    /// Secret names whose placeholder appears in the call's inputs, variables or transcript:
    /// the user's own words. A request holding such a placeholder is refused, so a user can
    /// never call up a secret by typing its placeholder.
    pub tainted: BTreeSet<String>,
}

impl CallSecrets {
    /// Scans every string the user could have written (inputs, variables, transcript).
    pub fn from_user_text<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut tainted = BTreeSet::new();
        for text in texts {
            let mut rest = text;
            while let Some(i) = rest.find("{{") {
                rest = &rest[i + 2..];
                let inner = rest.split("}}").next().unwrap_or("");
                if let Some(name) = inner.trim().strip_prefix("secret.") {
                    tainted.insert(name.trim().to_string());
                }
            }
        }
        Self { tainted }
    }
}

/// A request that passed the policy, ready to render and send.
struct Prepared {
    method: Method,
    target: Target,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Duration,
    /// The call's idempotency key: the `webhook-id` when the action signs its requests.
    webhook_id: String,
}

impl Prepared {
    fn recorded(&self) -> RecordedRequest {
        RecordedRequest {
            method: self.method.as_str().to_string(),
            url: self.target.url.to_string(),
            headers: self.headers.clone(),
            body: self
                .body
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
        }
    }

    fn repeatable(&self) -> bool {
        self.method.is_idempotent()
            || self
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("idempotency-key"))
    }
}

fn denied(code: &str, message: String) -> wit::HttpError {
    wit::HttpError::Denied(wit::Denial {
        code: code.to_string(),
        message,
    })
}

fn from_denial(d: policy::Denial) -> wit::HttpError {
    denied(d.code, d.message)
}

fn wit_method(m: Method) -> wit::Method {
    match m {
        Method::Get => wit::Method::Get,
        Method::Head => wit::Method::Head,
        Method::Post => wit::Method::Post,
        Method::Put => wit::Method::Put,
        Method::Patch => wit::Method::Patch,
        Method::Delete => wit::Method::Delete,
        Method::Options => wit::Method::Options,
    }
}

fn method_of(m: wit::Method) -> Method {
    match m {
        wit::Method::Get => Method::Get,
        wit::Method::Head => Method::Head,
        wit::Method::Post => Method::Post,
        wit::Method::Put => Method::Put,
        wit::Method::Patch => Method::Patch,
        wit::Method::Delete => Method::Delete,
        wit::Method::Options => Method::Options,
    }
}

impl ActionHttp {
    /// Steps 1–3 of a send: everything that can be decided without I/O.
    fn prepare(
        &self,
        req: wit::Request,
        dev: &DevLoopback,
        call: &CallSecrets,
    ) -> Result<Prepared, wit::HttpError> {
        let method = method_of(req.method);
        if let Some(path_end) = req.url.find(['?', '#']).or(Some(req.url.len()))
            && req.url[..path_end].contains("{{")
        {
            return Err(denied(
                policy::Denial::SECRET_NOT_ALLOWED,
                "placeholders may not appear in the URL's host or path; a secret may fill header \
                 values, and the query or body where its manifest lists them"
                    .into(),
            ));
        }
        let target = Target::parse(&req.url).map_err(|e| match e {
            policy::TargetError::Invalid(m) => wit::HttpError::InvalidRequest(m),
            policy::TargetError::Denied(d) => from_denial(d),
        })?;
        for (name, value) in &req.headers {
            policy::check_header(name, value).map_err(from_denial)?;
        }
        if let Some(body) = &req.body
            && body.len() as u64 > self.grants.max_request_bytes
        {
            return Err(denied(
                "body-too-large",
                format!(
                    "the request body of {} bytes is over the cap of {} bytes (http.max_request_bytes)",
                    body.len(),
                    self.grants.max_request_bytes
                ),
            ));
        }
        match self.grants.allow.check(method, &target, dev) {
            Decision::Allow(_) => {}
            Decision::Deny(d) => return Err(from_denial(d)),
        }
        let prepared = Prepared {
            method,
            target,
            // The host signs; a plugin's own webhook-* headers would be confusable with it.
            headers: if self.signing.is_some() {
                req.headers
                    .into_iter()
                    .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("webhook-"))
                    .collect()
            } else {
                req.headers
            },
            webhook_id: String::new(),
            body: req.body,
            timeout: Duration::from_millis(
                req.timeout_ms
                    .map(u64::from)
                    .unwrap_or(self.grants.timeout_ms)
                    .clamp(1, self.grants.timeout_ms),
            ),
        };
        self.check_secrets(&prepared, call)?;
        Ok(prepared)
    }

    /// Every placeholder in the request: declared, bound to its destination, in a place the
    /// secret may fill, and not from the user's words.
    fn check_secrets(&self, p: &Prepared, call: &CallSecrets) -> Result<(), wit::HttpError> {
        let mut found: Vec<(SecretPlace, String, String)> = Vec::new();
        for (name, value) in &p.headers {
            let names = policy::secrets::check_secrets(value, &self.bindings, &p.target)
                .map_err(|d| denied(d.code, format!("header {name:?}: {}", d.message)))?;
            found.extend(names.into_iter().map(|n| {
                (
                    SecretPlace::Header,
                    n.to_string(),
                    format!("header {name:?}"),
                )
            }));
        }
        if let Some(query) = p.target.url.query() {
            let names = policy::secrets::check_secrets(query, &self.bindings, &p.target)
                .map_err(|d| denied(d.code, format!("the query: {}", d.message)))?;
            found.extend(
                names
                    .into_iter()
                    .map(|n| (SecretPlace::Query, n.to_string(), "the query".into())),
            );
        }
        if let Some(body) = &p.body {
            let text = String::from_utf8_lossy(body);
            let names = policy::secrets::check_secrets(&text, &self.bindings, &p.target)
                .map_err(|d| denied(d.code, format!("the body: {}", d.message)))?;
            found.extend(
                names
                    .into_iter()
                    .map(|n| (SecretPlace::Body, n.to_string(), "the body".into())),
            );
        }
        for (place, name, wherein) in found {
            if call.tainted.contains(&name) {
                return Err(denied(
                    policy::Denial::SECRET_NOT_ALLOWED,
                    format!(
                        "{wherein} holds {{{{secret.{name}}}}}, and so do this call's inputs or \
                         conversation; a user's words can never call up a secret, so the request \
                         was refused"
                    ),
                ));
            }
            let grant = &self.secrets[&name];
            if !grant.places.contains(&place) {
                return Err(denied(
                    policy::Denial::SECRET_NOT_ALLOWED,
                    format!(
                        "secret {name} may not be filled into {wherein}; it may fill {} only. If \
                         it must go there, add \"{}\" to secrets.{name}.in in action.toml",
                        grant
                            .places
                            .iter()
                            .map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        place.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The current values of every declared secret, to redact their echoes.
    fn secret_values(&self, http: &OutboundHttp) -> Vec<String> {
        self.secrets
            .values()
            .filter_map(|g| http.secrets.get(&g.source))
            .collect()
    }
}

impl wit::Host for InstanceState {
    async fn send(
        &mut self,
        req: wit::Request,
    ) -> wasmtime::Result<Result<wit::Response, wit::HttpError>> {
        let started = Instant::now();
        let method = method_of(req.method).as_str().to_string();
        let raw_url = req.url.clone();
        let bytes_out = req.body.as_ref().map_or(0, |b| b.len() as u64);
        let timer = Timer::start();
        let prepared = self
            .grants
            .prepare(req, self.http.dev_loopback(), &self.call_secrets);
        timer.stop(Phase::Prepare);
        let prepared = match prepared {
            Ok(mut p) => {
                p.webhook_id = self.idempotency_key.clone();
                p
            }
            Err(e) => {
                let target = Target::parse(&raw_url).ok();
                self.audit(
                    &method,
                    target.as_ref(),
                    AuditDecision::Denied,
                    Some(error_class(&e)),
                    None,
                    started,
                    0,
                    0,
                );
                self.requests.push(SentRequest {
                    method,
                    target: target.map(|t| t.redacted()).unwrap_or_default(),
                    repeatable: false,
                    result: error_class(&e).to_string(),
                });
                return Ok(Err(e));
            }
        };
        let repeatable = prepared.repeatable();
        if let Some(mock) = self.mock.clone() {
            // The request passed every check a live one would; it is recorded (secrets as
            // placeholders) and answered from the recording, never sent.
            self.audit(
                &method,
                Some(&prepared.target),
                AuditDecision::DryRun,
                Some("mock"),
                Some(mock.status),
                started,
                0,
                0,
            );
            self.recorded.push(prepared.recorded());
            let result = match mock.failure {
                Some(crate::call::MockFailure::Timeout) => Err(wit::HttpError::Timeout),
                Some(crate::call::MockFailure::Connect) => {
                    Err(wit::HttpError::Connect("mock: connection refused".into()))
                }
                Some(crate::call::MockFailure::Protocol) => {
                    Err(wit::HttpError::Protocol("mock: broken response".into()))
                }
                None => Ok(wit::Response {
                    status: mock.status,
                    headers: mock
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect(),
                    body: mock.body_bytes(),
                }),
            };
            self.requests.push(SentRequest {
                method,
                target: prepared.target.redacted(),
                repeatable,
                result: match &result {
                    Ok(r) => r.status.to_string(),
                    Err(e) => error_class(e).to_string(),
                },
            });
            return Ok(result);
        }
        if self.dry_run {
            self.audit(
                &method,
                Some(&prepared.target),
                AuditDecision::DryRun,
                None,
                None,
                started,
                0,
                0,
            );
            self.recorded.push(prepared.recorded());
            self.requests.push(SentRequest {
                method,
                target: prepared.target.redacted(),
                repeatable,
                result: "dry-run".into(),
            });
            return Ok(Err(wit::HttpError::DryRun));
        }
        if self.capture {
            self.recorded.push(prepared.recorded());
        }
        let mut current = prepared;
        let mut hops = 0;
        loop {
            let hop_started = Instant::now();
            let target = current.target.clone();
            let result = execute(&self.http, &self.grants, &current).await;
            let after = Timer::start();
            let (decision, reason, status, bytes_in) = match &result {
                Ok(Sent::Response(r)) => (
                    AuditDecision::Allowed,
                    None,
                    Some(r.status),
                    r.body.len() as u64,
                ),
                Ok(Sent::Redirect { status, .. }) => {
                    (AuditDecision::Allowed, None, Some(*status), 0)
                }
                Err(e @ wit::HttpError::Denied(_)) => {
                    (AuditDecision::Denied, Some(error_class(e)), None, 0)
                }
                Err(e) => (AuditDecision::Allowed, Some(error_class(e)), None, 0),
            };
            let out = if hops == 0 { bytes_out } else { 0 };
            self.audit(
                current.method.as_str(),
                Some(&target),
                decision,
                reason,
                status,
                hop_started,
                out,
                bytes_in,
            );
            self.requests.push(SentRequest {
                method: current.method.as_str().to_string(),
                target: target.redacted(),
                repeatable,
                result: match (&status, reason) {
                    (Some(s), _) => s.to_string(),
                    (None, Some(r)) => r.to_string(),
                    (None, None) => String::new(),
                },
            });
            match result {
                Ok(Sent::Response(r)) => {
                    if self.capture {
                        self.responses.push(captured(&r));
                    }
                    after.stop(Phase::AfterResponse);
                    return Ok(Ok(r));
                }
                Err(e) => return Ok(Err(e)),
                Ok(Sent::Redirect { status, location }) => {
                    hops += 1;
                    match self.follow(&current, status, &location, hops) {
                        Ok(next) => current = next,
                        Err(e) => {
                            let next = current
                                .target
                                .url
                                .join(&location)
                                .ok()
                                .and_then(|u| Target::parse(u.as_str()).ok());
                            self.audit(
                                current.method.as_str(),
                                next.as_ref(),
                                AuditDecision::Denied,
                                Some(error_class(&e)),
                                None,
                                started,
                                0,
                                0,
                            );
                            self.requests.push(SentRequest {
                                method: current.method.as_str().to_string(),
                                target: next.map(|t| t.redacted()).unwrap_or_default(),
                                repeatable,
                                result: error_class(&e).to_string(),
                            });
                            return Ok(Err(e));
                        }
                    }
                }
            }
        }
    }
}

impl InstanceState {
    /// Checks one redirect hop as a new request and returns it.
    fn follow(
        &self,
        from: &Prepared,
        status: u16,
        location: &str,
        hop: u32,
    ) -> Result<Prepared, wit::HttpError> {
        if hop > self.grants.grants.redirects {
            return Err(denied(
                "too-many-redirects",
                format!(
                    "more than {} redirect(s) from {}; raise http.redirects in action.toml if the \
                     upstream really needs them",
                    self.grants.grants.redirects,
                    from.target.redacted()
                ),
            ));
        }
        let (next, method, keep_body) = next_hop(&from.target.url, from.method, status, location)?;
        let body = if keep_body { from.body.clone() } else { None };
        let req = wit::Request {
            method: wit_method(method),
            url: next.to_string(),
            headers: from.headers.clone(),
            body,
            timeout_ms: Some(from.timeout.as_millis() as u32),
        };
        self.grants
            .prepare(req, self.http.dev_loopback(), &self.call_secrets)
            .map(|mut p| {
                p.webhook_id = from.webhook_id.clone();
                p
            })
            .map_err(|e| match e {
                wit::HttpError::Denied(d) => wit::HttpError::Denied(wit::Denial {
                    message: format!("redirect to {}: {}", next_redacted(&next), d.message),
                    code: d.code,
                }),
                other => other,
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn audit(
        &self,
        method: &str,
        target: Option<&Target>,
        decision: AuditDecision,
        reason: Option<&str>,
        status: Option<u16>,
        started: Instant,
        bytes_out: u64,
        bytes_in: u64,
    ) {
        let event = AuditEvent {
            // When the attempt started, as the audit log documents.
            at_ms: crate::db::now_ms().saturating_sub(started.elapsed().as_millis() as u64),
            action: self.action.to_string(),
            conversation_id: self.conversation_id.clone(),
            method: method.to_string(),
            origin: target.map(Target::origin).unwrap_or_default(),
            path: target.map(|t| t.path.clone()).unwrap_or_default(),
            decision,
            reason: reason.map(str::to_string),
            status,
            duration_us: started.elapsed().as_micros() as u64,
            bytes_out,
            bytes_in,
        };
        self.grants.metrics.record_outbound(event.decision.as_str());
        match self.http.audit() {
            Some(log) => log.record(event),
            None => tracing::info!(
                target: "callout::audit",
                action = %event.action,
                method = %event.method,
                origin = %event.origin,
                path = %event.path,
                decision = event.decision.as_str(),
                reason = event.reason.as_deref().unwrap_or(""),
                status = event.status.unwrap_or(0),
                "outbound request"
            ),
        }
    }
}

/// Where a redirect leads and how: the next URL, the method, and whether the body goes along.
///
/// Refuses an https→http downgrade. 303 (and 301/302 after a POST) continue as a GET without the
/// body, as browsers do; 307 and 308 keep method and body.
fn next_hop(
    from: &url::Url,
    method: Method,
    status: u16,
    location: &str,
) -> Result<(url::Url, Method, bool), wit::HttpError> {
    let next = from.join(location).map_err(|e| {
        wit::HttpError::Protocol(format!(
            "the upstream redirected to an invalid location: {e}"
        ))
    })?;
    if from.scheme() == "https" && next.scheme() == "http" {
        return Err(denied(
            "redirect-downgrade",
            format!(
                "{} redirected from https to http ({}); a downgrade is never followed",
                next_redacted(from),
                next_redacted(&next)
            ),
        ));
    }
    Ok(match (status, method) {
        (303, Method::Head) => (next, Method::Head, false),
        (303, _) | (301 | 302, Method::Post) => (next, Method::Get, false),
        _ => (next, method, true),
    })
}

fn next_redacted(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + url.path()
}

fn error_class(e: &wit::HttpError) -> &str {
    match e {
        wit::HttpError::Denied(d) => &d.code,
        wit::HttpError::InvalidRequest(_) => "invalid-request",
        wit::HttpError::Timeout => "timeout",
        wit::HttpError::Connect(_) => "connect",
        wit::HttpError::ResponseTooLarge(_) => "response-too-large",
        wit::HttpError::Protocol(_) => "protocol",
        wit::HttpError::DryRun => "dry-run",
    }
}

/// What one hop produced.
enum Sent {
    /// A final response for the plugin.
    Response(wit::Response),
    /// A redirect the host should check and follow (only when redirects are on).
    Redirect { status: u16, location: String },
}

/// Steps 5–7 for one hop: wait for a slot, render the secrets, send, read under the caps,
/// redact echoes.
async fn execute(
    http: &OutboundHttp,
    action: &ActionHttp,
    p: &Prepared,
) -> Result<Sent, wit::HttpError> {
    let started = Instant::now();
    let timer = Timer::start();
    let _permit = tokio::time::timeout(p.timeout, action.in_flight.clone().acquire_owned())
        .await
        .map_err(|_| {
            denied(
                "too-many-requests",
                format!(
                    "the action already has {} requests in flight (http.max_concurrent) and none \
                     finished within the request's timeout",
                    action.grants.max_concurrent
                ),
            )
        })?
        .expect("the semaphore is never closed");
    let lookup = |secret: &str| {
        action
            .secrets
            .get(secret)
            .and_then(|g| http.secrets.get(&g.source))
    };
    let unavailable = |wherein: &str, m: String| {
        denied(
            "secret-unavailable",
            format!("{wherein}: {m}; set it in the host's environment or secrets file"),
        )
    };
    let mut url = p.target.url.clone();
    if let Some(query) = url.query() {
        // Secrets go into the query percent-encoded, so a value cannot add parameters.
        let rendered = policy::secrets::render(query, |s| {
            lookup(s).map(|v| url::form_urlencoded::byte_serialize(v.as_bytes()).collect())
        })
        .map_err(|m| unavailable("the query", m))?;
        url.set_query(Some(&rendered));
    }
    let method =
        reqwest::Method::from_bytes(p.method.as_str().as_bytes()).expect("a standard method");
    let remaining = p
        .timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let mut builder = http.client.request(method, url).timeout(remaining);
    for (name, value) in &p.headers {
        let value = policy::secrets::render(value, lookup)
            .map_err(|m| unavailable(&format!("header {name:?}"), m))?;
        builder = builder.header(name.as_str(), value);
    }
    let body = match &p.body {
        Some(body) => Some(match std::str::from_utf8(body) {
            Ok(text) if text.contains("{{") => policy::secrets::render(text, lookup)
                .map_err(|m| unavailable("the body", m))?
                .into_bytes(),
            _ => body.clone(),
        }),
        None => None,
    };
    if let Some(name) = &action.signing {
        // Standard Webhooks: the same id on every attempt, a fresh timestamp, the signature
        // over the exact bytes sent.
        let key = lookup(name).ok_or_else(|| {
            unavailable(&format!("signing key {name:?}"), "it has no value".into())
        })?;
        let secret = crate::outbox::signing::SigningSecret::parse(&key).map_err(|e| {
            denied(
                "signing-key-invalid",
                format!("the signing key in secret {name:?} is not a whsec_ key: {e}"),
            )
        })?;
        let timestamp = crate::db::now_ms() / 1000;
        let signature = secret
            .sign(
                &p.webhook_id,
                timestamp,
                body.as_deref().unwrap_or_default(),
            )
            .map_err(|e| denied("signing-key-invalid", e.to_string()))?;
        builder = builder
            .header(crate::outbox::signing::HEADER_ID, p.webhook_id.as_str())
            .header(
                crate::outbox::signing::HEADER_TIMESTAMP,
                timestamp.to_string(),
            )
            .header(crate::outbox::signing::HEADER_SIGNATURE, signature);
    }
    if let Some(body) = body {
        builder = builder.body(body);
    }
    timer.stop(Phase::BuildRequest);
    let timer = Timer::start();
    let response = builder.send().await.map_err(map_reqwest_error)?;
    timer.stop(Phase::Upstream);
    let timer = Timer::start();
    let status = response.status().as_u16();
    if response.headers().len() > action.grants.max_response_headers as usize {
        return Err(wit::HttpError::Protocol(format!(
            "the upstream sent {} response headers, over the cap of {} (http.max_response_headers)",
            response.headers().len(),
            action.grants.max_response_headers
        )));
    }
    if action.grants.redirects > 0
        && matches!(status, 301 | 302 | 303 | 307 | 308)
        && let Some(location) = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
    {
        return Ok(Sent::Redirect {
            status,
            location: location.to_string(),
        });
    }
    let secrets = action.secret_values(http);
    let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            let value = String::from_utf8_lossy(v.as_bytes());
            (
                k.as_str().to_string(),
                policy::secrets::mask_values(&value, &secret_refs),
            )
        })
        .collect();
    timer.stop(Phase::ResponseHead);
    let timer = Timer::start();
    let cap = action.grants.max_response_bytes;
    if response.content_length().is_some_and(|len| len > cap) {
        return Err(wit::HttpError::ResponseTooLarge(cap));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(map_reqwest_error)?;
        if body.len() as u64 + chunk.len() as u64 > cap {
            return Err(wit::HttpError::ResponseTooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    let body = policy::secrets::mask_bytes(&body, &secret_refs);
    timer.stop(Phase::ResponseBody);
    Ok(Sent::Response(wit::Response {
        status,
        headers,
        body,
    }))
}

fn map_reqwest_error(e: reqwest::Error) -> wit::HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BlockedByGuard>() {
            return denied(policy::Denial::BLOCKED_NETWORK, b.to_string());
        }
        source = s.source();
    }
    if e.is_timeout() {
        return wit::HttpError::Timeout;
    }
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_connect() {
        wit::HttpError::Connect(message)
    } else {
        wit::HttpError::Protocol(message)
    }
}

/// The guard refused every address a name resolved to.
#[derive(Debug, thiserror::Error)]
#[error("{host:?} resolves only to blocked (non-global) addresses; the request was not sent")]
pub struct BlockedByGuard {
    host: String,
}

/// How names become addresses; a seam so the guard is tested with fake answers and no network,
/// and so tests in a network namespace without DNS can still resolve names.
pub trait Lookup: Send + Sync + 'static {
    /// All addresses of `host`.
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
}

/// The operating system's resolver (getaddrinfo, through tokio).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// The client's resolver: every answer in a blocked network ([`policy::ip::is_blocked`]) is
/// dropped, and a name left with none fails; a `--dev-loopback` name keeps only its loopback
/// answers. reqwest connects to exactly the addresses returned, so the connection goes to an
/// address that was checked, with no second resolution. (Which port a dev-loopback name may
/// use was already decided by the policy before the request got here.)
pub struct GuardedResolver {
    lookup: Arc<dyn Lookup>,
    dev_names: BTreeSet<String>,
}

impl GuardedResolver {
    /// Guards `lookup`; `dev_names` are the dev-loopback host names (such as `localhost`).
    pub fn new(lookup: Arc<dyn Lookup>, dev_names: BTreeSet<String>) -> Self {
        Self { lookup, dev_names }
    }

    /// The addresses of `host` that may be connected to.
    ///
    /// # Errors
    /// The lookup's error, or [`BlockedByGuard`] when no address is left.
    pub async fn allowed_addrs(
        &self,
        host: &str,
    ) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let dev = self.dev_names.contains(&host);
        let addrs = self.lookup.lookup(&host).await?;
        let allowed: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|ip| {
                if dev {
                    policy::ip::is_loopback(*ip)
                } else {
                    !policy::ip::is_blocked(*ip)
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(Box::new(BlockedByGuard { host }));
        }
        Ok(allowed)
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = GuardedResolver {
            lookup: self.lookup.clone(),
            dev_names: self.dev_names.clone(),
        };
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = this.allowed_addrs(&host).await?;
            Ok(Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0))) as reqwest::dns::Addrs)
        })
    }
}

/// A live response as a test case records it: the body as JSON when it parses, else as text.
fn captured(r: &wit::Response) -> crate::call::MockResponse {
    let text = String::from_utf8_lossy(&r.body);
    let body = if r.body.is_empty() {
        None
    } else {
        Some(
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|_| serde_json::Value::String(text.into_owned())),
        )
    };
    crate::call::MockResponse {
        status: r.status,
        headers: r.headers.iter().cloned().collect(),
        body,
        failure: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers from a script, one answer list per lookup (the last one repeats), and records
    /// every lookup.
    struct FakeLookup {
        answers: Vec<Vec<IpAddr>>,
        calls: Mutex<usize>,
    }

    impl FakeLookup {
        fn new(answers: &[&[&str]]) -> Arc<Self> {
            Arc::new(Self {
                answers: answers.iter().map(|a| ips(a)).collect(),
                calls: Mutex::new(0),
            })
        }
    }

    impl Lookup for FakeLookup {
        fn lookup(
            &self,
            _host: &str,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
            let mut calls = self.calls.lock().unwrap();
            let v = self.answers[(*calls).min(self.answers.len() - 1)].clone();
            *calls += 1;
            Box::pin(async move { Ok(v) })
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn guard(lookup: Arc<FakeLookup>, dev: &[&str]) -> GuardedResolver {
        GuardedResolver::new(lookup, dev.iter().map(|s| s.to_string()).collect())
    }

    #[tokio::test]
    async fn guard_drops_blocked_answers_and_keeps_global_ones() {
        let cases: &[(&[&str], Option<&[&str]>)] = &[
            (&["127.0.0.1"], None),
            (&["10.0.0.7", "192.168.1.1", "169.254.169.254"], None),
            (
                &["::1", "fd00::1", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe"],
                None,
            ),
            // An A record that is public with an AAAA record on loopback: only the public one.
            (&["93.184.216.34", "::1"], Some(&["93.184.216.34"])),
            (
                &["2606:4700:4700::1111", "10.1.1.1"],
                Some(&["2606:4700:4700::1111"]),
            ),
        ];
        for (answers, want) in cases {
            let got = guard(FakeLookup::new(&[answers]), &[])
                .allowed_addrs("example.test")
                .await;
            match want {
                None => {
                    let err = got.expect_err("every answer is blocked");
                    assert!(err.to_string().contains("blocked"), "{err}");
                }
                Some(want) => assert_eq!(got.unwrap(), ips(want), "answers {answers:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_rebinding_name_is_checked_again_on_every_lookup() {
        // Public on the first lookup, loopback on the second: the second is refused, never
        // handed to the connector.
        let lookup = FakeLookup::new(&[&["93.184.216.34"], &["127.0.0.1"]]);
        let g = guard(lookup.clone(), &[]);
        assert_eq!(
            g.allowed_addrs("rebind.test").await.unwrap(),
            ips(&["93.184.216.34"])
        );
        assert!(g.allowed_addrs("rebind.test").await.is_err());
        assert_eq!(*lookup.calls.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_dev_loopback_name_keeps_only_loopback_answers() {
        let g = guard(
            FakeLookup::new(&[&["127.0.0.1", "::1", "93.184.216.34", "10.0.0.1"]]),
            &["localhost"],
        );
        assert_eq!(
            g.allowed_addrs("LOCALHOST.").await.unwrap(),
            ips(&["127.0.0.1", "::1"])
        );
    }

    #[tokio::test]
    async fn the_resolver_hands_reqwest_exactly_the_checked_addresses() {
        use reqwest::dns::Resolve;
        let g = guard(
            FakeLookup::new(&[&["93.184.216.34", "127.0.0.1", "2606:4700:4700::1111"]]),
            &[],
        );
        let addrs: Vec<SocketAddr> = g
            .resolve("example.test".parse().unwrap())
            .await
            .unwrap()
            .collect();
        let got: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        assert_eq!(got, ips(&["93.184.216.34", "2606:4700:4700::1111"]));
    }

    #[test]
    fn redirect_hops_keep_or_change_the_method_and_never_downgrade() {
        let https: url::Url = "https://api.example.com/a/b?x=1".parse().unwrap();
        type Want = Result<(&'static str, Method, bool), &'static str>;
        let cases: &[(u16, Method, &str, Want)] = &[
            (
                302,
                Method::Get,
                "/c",
                Ok(("https://api.example.com/c", Method::Get, true)),
            ),
            (
                302,
                Method::Post,
                "c",
                Ok(("https://api.example.com/a/c", Method::Get, false)),
            ),
            (
                301,
                Method::Post,
                "/c",
                Ok(("https://api.example.com/c", Method::Get, false)),
            ),
            (
                303,
                Method::Put,
                "/c",
                Ok(("https://api.example.com/c", Method::Get, false)),
            ),
            (
                303,
                Method::Head,
                "/c",
                Ok(("https://api.example.com/c", Method::Head, false)),
            ),
            (
                307,
                Method::Post,
                "/c",
                Ok(("https://api.example.com/c", Method::Post, true)),
            ),
            (
                308,
                Method::Put,
                "https://other.example.com/",
                Ok(("https://other.example.com/", Method::Put, true)),
            ),
            (
                302,
                Method::Get,
                "http://api.example.com/c",
                Err("redirect-downgrade"),
            ),
            (
                307,
                Method::Post,
                "http://other.example.com/",
                Err("redirect-downgrade"),
            ),
        ];
        for (status, method, location, want) in cases {
            match (next_hop(&https, *method, *status, location), want) {
                (Ok((url, m, body)), Ok((wurl, wm, wbody))) => {
                    assert_eq!(
                        (url.as_str(), m, body),
                        (*wurl, *wm, *wbody),
                        "{status} {location}"
                    )
                }
                (Err(wit::HttpError::Denied(d)), Err(code)) => assert_eq!(d.code, *code),
                (got, want) => panic!("{status} {location}: got {got:?}, want {want:?}"),
            }
        }
        // http → https is an upgrade, not a downgrade.
        let http: url::Url = "http://api.example.com/".parse().unwrap();
        assert!(next_hop(&http, Method::Get, 301, "https://api.example.com/").is_ok());
    }

    #[test]
    fn user_words_taint_the_secrets_they_name() {
        let c = CallSecrets::from_user_text([
            "my name is {{secret.CRM_TOKEN}}",
            "{{ secret.OTHER }} and {{config.x}}",
            "plain",
        ]);
        assert_eq!(
            c.tainted.iter().map(String::as_str).collect::<Vec<_>>(),
            ["CRM_TOKEN", "OTHER"]
        );
    }
}
