//! The `outbound-http` import: policy first, then a guarded reqwest client, typed errors back.
//!
//! The order of a `send`:
//! 1. parse and normalise the URL; check headers (no CR/LF, no hop-by-hop) and the body size;
//! 2. the action's allowlist decides (scheme, host, port, path prefix, method), and literal
//!    addresses in blocked networks are refused ([`crate::policy`], pure);
//! 3. `{{secret.NAME}}` placeholders are checked: declared, bound to this destination, in a
//!    header value;
//! 4. in dry-run the rendered request is recorded (secrets left as placeholders) and `dry-run`
//!    returned;
//! 5. otherwise the secrets are filled in and the request goes out through one of two clients:
//!    the guarded client, whose resolver drops every non-global address (so a name that
//!    resolves to 127.0.0.1 or 10.x is refused, and the connection goes to the address that was
//!    checked), or, only for `--dev-loopback` entries, a client that may reach exactly those
//!    loopback names;
//! 6. the response body is read under the action's cap, and every failure becomes a typed
//!    `http-error`.
//!
//! Both clients keep connections alive, never follow redirects and never use a proxy from the
//! environment.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::bindings::callout::plugin::outbound_http as wit;
use crate::call::{RecordedRequest, SentRequest};
use crate::config::HttpSettings;
use crate::manifest::{HttpGrants, SecretGrant, SecretSource};
use crate::policy::{self, Decision, DevLoopback, Method, Route, Target};
use crate::state::InstanceState;

/// Secret values the host can fill in.
///
/// `env:NAME` sources read the process environment at send time (so a rotated value is picked up
/// without a reload), unless the embedder supplied a value under that name with
/// [`Secrets::insert`] (the demo and tests do, instead of touching the process environment).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: HashMap<String, String>,
}

impl Secrets {
    /// Supplies the value of `env:NAME` for this process without setting an environment
    /// variable.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
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
        }
    }
}

/// The process-wide outbound HTTP machinery: clients, the dev-loopback list, secret values.
pub struct OutboundHttp {
    guarded: reqwest::Client,
    dev: Option<reqwest::Client>,
    dev_loopback: DevLoopback,
    secrets: Secrets,
}

impl OutboundHttp {
    /// Builds the clients. `dev_loopback` lifts the network block for exactly its entries.
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new(
        settings: &HttpSettings,
        dev_loopback: DevLoopback,
        secrets: Secrets,
    ) -> anyhow::Result<Self> {
        let guarded = client(settings, Arc::new(GuardedResolver::new(SystemLookup)))?;
        let dev = if dev_loopback.is_empty() {
            None
        } else {
            Some(client(
                settings,
                Arc::new(DevLoopbackResolver {
                    names: dev_loopback.names(),
                }),
            )?)
        };
        Ok(Self {
            guarded,
            dev,
            dev_loopback,
            secrets,
        })
    }

    /// The dev-loopback entries in force.
    pub fn dev_loopback(&self) -> &DevLoopback {
        &self.dev_loopback
    }
}

fn client(
    settings: &HttpSettings,
    resolver: Arc<dyn reqwest::dns::Resolve>,
) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .pool_max_idle_per_host(settings.max_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("callout/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(resolver)
        .build()?)
}

/// One action's network grants and secrets, shared by all its calls.
#[derive(Debug)]
pub struct ActionHttp {
    grants: HttpGrants,
    secrets: BTreeMap<String, SecretGrant>,
    bindings: Vec<policy::SecretBinding>,
}

impl ActionHttp {
    /// The grants and secrets of one action's manifest.
    pub fn new(grants: HttpGrants, secrets: BTreeMap<String, SecretGrant>) -> Self {
        let bindings = secrets.values().map(|g| g.binding.clone()).collect();
        Self {
            grants,
            secrets,
            bindings,
        }
    }
}

/// A request that passed the policy, ready to render and send.
struct Prepared {
    method: Method,
    target: Target,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    route: Route,
    timeout: Duration,
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
    fn prepare(&self, req: wit::Request, dev: &DevLoopback) -> Result<Prepared, wit::HttpError> {
        let method = method_of(req.method);
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
        let route = match self.grants.allow.check(method, &target, dev) {
            Decision::Allow(route) => route,
            Decision::Deny(d) => return Err(from_denial(d)),
        };
        let in_url = policy::secrets::placeholders(target.url.as_str())
            .map(|v| !v.is_empty())
            .unwrap_or(true)
            || req.url.contains("{{");
        let in_body = req
            .body
            .as_ref()
            .is_some_and(|b| String::from_utf8_lossy(b).contains("{{secret."));
        if in_url || in_body {
            return Err(denied(
                "secret-not-allowed",
                format!(
                    "secret placeholders may fill header values only, not the {}; move the secret into a header",
                    if in_url { "URL" } else { "body" }
                ),
            ));
        }
        for (name, value) in &req.headers {
            policy::secrets::check_secrets(value, &self.bindings, &target)
                .map_err(|d| denied(d.code, format!("header {name:?}: {}", d.message)))?;
        }
        let timeout_ms = req
            .timeout_ms
            .map(u64::from)
            .unwrap_or(self.grants.timeout_ms)
            .clamp(1, self.grants.timeout_ms);
        Ok(Prepared {
            method,
            target,
            headers: req.headers,
            body: req.body,
            route,
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

impl wit::Host for InstanceState {
    async fn send(
        &mut self,
        req: wit::Request,
    ) -> wasmtime::Result<Result<wit::Response, wit::HttpError>> {
        let method = method_of(req.method).as_str().to_string();
        let prepared = match self.grants.prepare(req, self.http.dev_loopback()) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(action = %self.action, %method, outcome = %error_class(&e), "outbound request refused");
                self.requests.push(SentRequest {
                    method,
                    target: String::new(),
                    repeatable: false,
                    result: error_class(&e).to_string(),
                });
                return Ok(Err(e));
            }
        };
        let target = prepared.target.redacted();
        let repeatable = prepared.repeatable();
        if self.dry_run {
            self.recorded.push(prepared.recorded());
            self.requests.push(SentRequest {
                method,
                target,
                repeatable,
                result: "dry-run".into(),
            });
            return Ok(Err(wit::HttpError::DryRun));
        }
        let result = execute(&self.http, &self.grants, prepared).await;
        let outcome = match &result {
            Ok(r) => r.status.to_string(),
            Err(e) => error_class(e).to_string(),
        };
        tracing::debug!(action = %self.action, %method, %target, %outcome, "outbound request");
        self.requests.push(SentRequest {
            method,
            target,
            repeatable,
            result: outcome,
        });
        Ok(result)
    }
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

/// Steps 5–6: render the secrets, send, read the body under the cap.
async fn execute(
    http: &OutboundHttp,
    action: &ActionHttp,
    p: Prepared,
) -> Result<wit::Response, wit::HttpError> {
    let client = match p.route {
        Route::Guarded => &http.guarded,
        Route::DevLoopback => http.dev.as_ref().ok_or_else(|| {
            denied(
                "blocked-network",
                "dev-loopback is not enabled in this process".into(),
            )
        })?,
    };
    let method =
        reqwest::Method::from_bytes(p.method.as_str().as_bytes()).expect("a standard method");
    let mut builder = client
        .request(method, p.target.url.clone())
        .timeout(p.timeout);
    for (name, value) in &p.headers {
        let value = policy::secrets::render(value, |secret| {
            action
                .secrets
                .get(secret)
                .and_then(|g| http.secrets.get(&g.source))
        })
        .map_err(|m| {
            denied(
                "secret-unavailable",
                format!("header {name:?}: {m}; set it in the host's environment"),
            )
        })?;
        builder = builder.header(name.as_str(), value);
    }
    if let Some(body) = p.body {
        builder = builder.body(body);
    }
    let response = builder.send().await.map_err(map_reqwest_error)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
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
    Ok(wit::Response {
        status,
        headers,
        body,
    })
}

fn map_reqwest_error(e: reqwest::Error) -> wit::HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BlockedByGuard>() {
            return denied("blocked-network", b.to_string());
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

/// How names become addresses; a seam so the guard is tested with fake answers and no network.
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

/// A resolver that drops every address in a blocked network ([`policy::ip::is_blocked`]) and
/// fails when none is left. reqwest connects to exactly the addresses it returns.
pub struct GuardedResolver<L> {
    lookup: Arc<L>,
}

impl<L: Lookup> GuardedResolver<L> {
    /// Guards `lookup`.
    pub fn new(lookup: L) -> Self {
        Self {
            lookup: Arc::new(lookup),
        }
    }

    /// The addresses of `host` that may be connected to.
    ///
    /// # Errors
    /// The lookup's error, or [`BlockedByGuard`] when every address is blocked.
    pub async fn allowed_addrs(
        &self,
        host: &str,
    ) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addrs = self.lookup.lookup(host).await?;
        let allowed: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|ip| !policy::ip::is_blocked(*ip))
            .collect();
        if allowed.is_empty() {
            return Err(Box::new(BlockedByGuard {
                host: host.to_string(),
            }));
        }
        Ok(allowed)
    }
}

impl<L: Lookup> reqwest::dns::Resolve for GuardedResolver<L> {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = GuardedResolver {
            lookup: self.lookup.clone(),
        };
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = this.allowed_addrs(&host).await?;
            Ok(Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0))) as reqwest::dns::Addrs)
        })
    }
}

/// The resolver of the dev-loopback client: only the listed names, only to loopback addresses.
struct DevLoopbackResolver {
    names: Vec<String>,
}

impl reqwest::dns::Resolve for DevLoopbackResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let listed = self.names.contains(&host);
        Box::pin(async move {
            if !listed {
                return Err(
                    Box::new(BlockedByGuard { host }) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            let addrs = SystemLookup.lookup(&host).await?;
            let loopback: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|ip| policy::ip::is_loopback(*ip))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if loopback.is_empty() {
                return Err(
                    Box::new(BlockedByGuard { host }) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(loopback.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeLookup(Vec<IpAddr>);

    impl Lookup for FakeLookup {
        fn lookup(
            &self,
            _host: &str,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
            let v = self.0.clone();
            Box::pin(async move { Ok(v) })
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn guard_drops_blocked_answers_and_keeps_global_ones() {
        let cases: &[(&[&str], Option<&[&str]>)] = &[
            (&["127.0.0.1"], None),
            (&["10.0.0.7", "192.168.1.1", "169.254.169.254"], None),
            (&["::1", "fd00::1", "::ffff:127.0.0.1"], None),
            (&["93.184.216.34", "127.0.0.1"], Some(&["93.184.216.34"])),
            (&["2606:4700:4700::1111"], Some(&["2606:4700:4700::1111"])),
        ];
        for (answers, want) in cases {
            let guard = GuardedResolver::new(FakeLookup(ips(answers)));
            let got = guard.allowed_addrs("example.test").await;
            match want {
                None => {
                    let err = got.expect_err("every answer is blocked");
                    assert!(err.to_string().contains("blocked"), "{err}");
                }
                Some(want) => assert_eq!(got.unwrap(), ips(want), "answers {answers:?}"),
            }
        }
    }
}
