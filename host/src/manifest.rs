//! `action.toml`: what the operator grants one action.
//!
//! The component's `describe()` says what the plugin *is*; the manifest says what it *may do*
//! (network grants, secrets, limits) and adds to each input the question to ask and how to
//! extract it. It may narrow an input's schema, never widen it (see [`crate::inputs`]). A plugin
//! can never grant itself anything: every grant is here, read by the host.
//!
//! Parsing is strict (`deny_unknown_fields`); every error names the file, the field and the fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::one_line;
use crate::error::{LoadError, LoadErrorKind};
use crate::policy::{AllowEntry, AllowList, Method, SecretBinding};

/// Memory limit of one call when `limits.memory_mb` is not set: 64 MiB.
pub const DEFAULT_MEMORY_MB: u64 = 64;
/// Deadline of one call when `limits.deadline_ms` is not set: 10 s.
pub const DEFAULT_DEADLINE_MS: u64 = 10_000;
/// The longest deadline an action may ask for: 5 minutes.
pub const MAX_DEADLINE_MS: u64 = 300_000;
/// Total timeout of one outbound request when `http.timeout_ms` is not set: 10 s.
pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 10_000;
/// The cap on `http.timeout_ms`: 30 s.
pub const MAX_HTTP_TIMEOUT_MS: u64 = 30_000;
/// Response body cap when `http.max_response_bytes` is not set: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1 << 20;
/// Request body cap when `http.max_request_bytes` is not set: 1 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Captured stdout and stderr (each) and log volume of one call: 64 KiB.
pub const DEFAULT_OUTPUT_KB: u64 = 64;
/// Table elements one call may grow its tables to: 100 000.
pub const DEFAULT_TABLE_ELEMENTS: u64 = 100_000;
/// Core instances one call may create: 32.
pub const DEFAULT_INSTANCES: u64 = 32;
/// Redirect hops followed when `http.redirects` is not set: 0 (redirects off).
pub const DEFAULT_REDIRECTS: u32 = 0;
/// The most redirect hops an action may ask for: 10.
pub const MAX_REDIRECTS: u32 = 10;
/// Response headers accepted when `http.max_response_headers` is not set: 100.
pub const DEFAULT_MAX_RESPONSE_HEADERS: u32 = 100;
/// Concurrent outbound requests of one action (across its calls) when `http.max_concurrent` is
/// not set: 16.
pub const DEFAULT_MAX_CONCURRENT: u32 = 16;

/// What the host allows manifests to ask for: the pool's ceilings and the operator's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// `pool.max_memory_mb`.
    pub max_memory_mb: u64,
    /// `pool.table_elements`.
    pub max_table_elements: u64,
    /// `http.insecure_allow_any_host`: whether `"*://*:*"` may be granted.
    pub allow_any_host: bool,
}

impl Default for HostLimits {
    fn default() -> Self {
        let pool = crate::config::PoolLimits::default();
        Self {
            max_memory_mb: pool.max_memory_mb,
            max_table_elements: pool.table_elements as u64,
            allow_any_host: false,
        }
    }
}

/// `action.toml` exactly as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    /// The action's name: lower-case letters, digits and `-`, at most 64 characters.
    pub name: String,
    /// The component file, relative to the manifest's folder (or absolute).
    pub component: String,
    /// Replaces the component's own description when set.
    #[serde(default)]
    pub description: Option<String>,
    /// When the action fires besides tool calls.
    #[serde(default)]
    pub trigger: Trigger,
    /// Per-field additions to the component's input schema.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Non-secret settings the plugin reads through the `config` import.
    #[serde(default)]
    pub config: toml::Table,
    /// Network grants.
    #[serde(default)]
    pub http: HttpSpec,
    /// Secrets the host may fill into requests, by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSpec>,
    /// Per-call resource limits.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// How failures are handled: retries, fallback messages, asking again.
    #[serde(default)]
    pub on_error: Option<crate::error_policy::OnErrorSpec>,
    /// Standard Webhooks signing of every outbound request: `[signing] secret = "NAME"`.
    #[serde(default)]
    pub signing: Option<SigningSpec>,
    /// How `callout build` builds the component. The host ignores it.
    #[serde(default)]
    pub build: BuildSpec,
    /// The built-in "Send API Request" only: method, URL, headers and body templates.
    #[serde(default)]
    pub request: Option<toml::Table>,
    /// The built-in "Send API Request" only: response mapping and reply template.
    #[serde(default)]
    pub response: Option<toml::Table>,
    /// Test cases stored with the action (more may sit in `tests.toml`; see [`crate::cases`]).
    #[serde(default)]
    pub case: Vec<crate::cases::Case>,
}

/// `[signing]`: sign every outbound request of the action the Standard Webhooks way
/// (`webhook-id` = the call's idempotency key, `webhook-timestamp`, `webhook-signature` =
/// `v1,` + base64 HMAC-SHA256), so the receiver can check that it came from this host and was
/// not replayed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SigningSpec {
    /// A secret of `[secrets]` whose value is the signing key, `whsec_` + base64 (as Standard
    /// Webhooks libraries print it). The key is the host's: the plugin never sees it.
    pub secret: String,
}

/// `[build]`: how `callout build` builds the component (the host itself never reads it).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// The JavaScript engine of a JavaScript action (`action.js`). Default: `spidermonkey`.
    #[serde(default)]
    pub js_engine: JsEngine,
}

/// The engine a JavaScript action is built with (`[build] js_engine`).
///
/// Both run the same source when it follows the conventions in docs/plugins-js.md. QuickJS makes
/// a component about 7 times smaller (1.7 MB against 12 MB) that compiles in under a second,
/// loads from the cache in ~2 ms and answers a fresh-instance call about 3 times sooner; its
/// interpreter is slower on long computations, and it has no `TextEncoder`, `fetch` or `Intl`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JsEngine {
    /// SpiderMonkey, through the componentize-js CLI.
    #[default]
    Spidermonkey,
    /// QuickJS, through componentize-qjs.
    Quickjs,
}

/// `[trigger]`: when the action fires besides tool calls (always possible).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// `tool` (default: only when called as a tool), `on-prompt` or `chat-end`.
    #[serde(default)]
    pub kind: TriggerKind,
    /// On-prompt: intents supplied by the agent that fire the action.
    #[serde(default)]
    pub intents: Vec<String>,
    /// On-prompt: regular expressions over the user's message that fire the action.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// On-prompt: order among actions matching the same message (higher first; default 0, ties
    /// broken by name).
    #[serde(default)]
    pub priority: i32,
    /// On-prompt: conversation variables that must be present for the action to fire.
    #[serde(default)]
    pub requires: Vec<String>,
}

/// The kinds of `[trigger]`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerKind {
    /// Called only as a tool.
    #[default]
    Tool,
    /// Fired during a conversation once its conditions hold and every required input is valid.
    OnPrompt,
    /// Fired when a conversation ends, through the durable outbox.
    ChatEnd,
}

impl TriggerKind {
    /// `tool`, `on-prompt` or `chat-end`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::OnPrompt => "on-prompt",
            Self::ChatEnd => "chat-end",
        }
    }
}

/// `[inputs.<field>]`: what the manifest adds to one input of the component.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The question the agent asks when the value is missing or invalid.
    #[serde(default)]
    pub prompt: Option<String>,
    /// A regular expression whose first capture group pulls the value out of a user message.
    #[serde(default)]
    pub extract: Option<String>,
    /// Makes an optional field required (a required field cannot be made optional).
    #[serde(default)]
    pub required: Option<bool>,
    /// Must equal the component's JSON Schema type when given.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// A pattern the value must match; only allowed where the component has none (or the same).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Allowed values: a subset of the component's enum, if it has one.
    #[serde(default, rename = "enum")]
    pub allowed: Option<Vec<serde_json::Value>>,
    /// Smallest number allowed: the component's or higher.
    #[serde(default)]
    pub minimum: Option<f64>,
    /// Largest number allowed: the component's or lower.
    #[serde(default)]
    pub maximum: Option<f64>,
    /// Shortest string allowed: the component's or longer.
    #[serde(default)]
    pub min_length: Option<u64>,
    /// Longest string allowed: the component's or shorter.
    #[serde(default)]
    pub max_length: Option<u64>,
    /// A JSON Schema format (`email`, `date`, ...): only where the component has none or the same.
    #[serde(default)]
    pub format: Option<String>,
}

/// `[http]`: where the action may send requests. Nothing is allowed unless listed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// `scheme://host[:port][/path-prefix]` strings, or `{ url = "...", methods = [...] }` tables.
    /// Values may use `{{config.KEY}}`.
    #[serde(default)]
    pub allow: Vec<AllowSpec>,
    /// Methods of the entries that do not list their own. Default: `["GET"]`.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Total timeout of one request in ms. Default 10 000, at most 30 000.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Response body cap in bytes, enforced while reading. Default 1 MiB.
    #[serde(default)]
    pub max_response_bytes: Option<u64>,
    /// Request body cap in bytes. Default 1 MiB.
    #[serde(default)]
    pub max_request_bytes: Option<u64>,
    /// Redirect hops the host follows for the plugin, each re-checked against the grants and
    /// the guard. Default 0 (off: the plugin sees the 3xx); at most 10.
    #[serde(default)]
    pub redirects: Option<u32>,
    /// Response headers accepted. Default 100.
    #[serde(default)]
    pub max_response_headers: Option<u32>,
    /// Outbound requests in flight at once for this action, across its calls. Default 16.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
}

/// One `http.allow` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AllowSpec {
    /// `"https://api.example.com"`: the action-wide methods apply.
    Plain(String),
    /// `{ url = "https://api.example.com/v1/leads/", methods = ["POST"] }`.
    Table {
        /// The URL (scheme, host, optional port and path prefix).
        url: String,
        /// Methods for this entry only.
        #[serde(default)]
        methods: Option<Vec<String>>,
    },
}

/// `[secrets.<NAME>]`: a secret the host may fill into `{{secret.NAME}}` placeholders.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// Where the value comes from: `env:VARIABLE`, or `file:KEY` (a key of the host's secrets
    /// file, `secrets_file` in callout.toml, default `<data-dir>/secrets.toml`).
    pub from: String,
    /// Destinations it may be sent to (`scheme://host[:port][/prefix]`, `{{config.KEY}}`
    /// allowed). Required: a secret bound to nothing can go nowhere.
    pub hosts: Vec<String>,
    /// Where it may be filled in: `header` (values), `query`, `body`. Default `["header"]`.
    #[serde(default, rename = "in")]
    pub places: Option<Vec<String>>,
}

/// Where a secret may be filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretPlace {
    /// Header values (the default).
    Header,
    /// The URL's query string.
    Query,
    /// The request body.
    Body,
}

impl SecretPlace {
    /// `header`, `query` or `body`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Query => "query",
            Self::Body => "body",
        }
    }
}

/// `[limits]`: what one call may use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Linear memory in MiB. Default 64; at most the pool's `max_memory_mb` (callout.toml).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Wall-clock deadline of one call in ms. Default 10 000, at most 300 000.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Captured stdout and stderr (each), and log volume, in KiB. Default 64.
    #[serde(default)]
    pub output_kb: Option<u64>,
    /// Elements of all tables. Default 100 000; at most the pool's `table_elements`.
    #[serde(default)]
    pub table_elements: Option<u64>,
    /// Core instances per call. Default 32.
    #[serde(default)]
    pub instances: Option<u64>,
    /// `"none"` (default): a fresh instance for every call. `"conversation"`: calls of one
    /// conversation reuse one instance (see [`Reuse`]).
    #[serde(default)]
    pub reuse: Reuse,
}

/// Whether calls share an instance.
///
/// With `conversation`, the calls of one conversation (same conversation id) run in the same
/// instance, one at a time, so instantiation and the reset of its memory are paid once per
/// conversation instead of once per call. What the plugin keeps in memory between calls stays
/// within that conversation: an instance is never used for another conversation, nor for a
/// call without one. The trade-off: the plugin's globals persist across that conversation's
/// calls (a plugin written for fresh instances may see state it did not expect), and an idle
/// instance holds its memory slot until it is dropped: after `[pool] reuse_idle_ms` in
/// callout.toml (default one minute) without a call, after [`REUSE_MAX_CALLS`] calls, when the
/// call traps or runs out of time or memory, or when more than [`REUSE_MAX_IDLE`] instances of
/// the action are idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reuse {
    /// A fresh instance per call.
    #[default]
    None,
    /// One instance per conversation.
    Conversation,
}

/// Calls one reused instance serves before it is replaced: 1 000.
pub const REUSE_MAX_CALLS: u32 = 1_000;
/// Idle reused instances kept per action: 64 (the oldest goes first).
pub const REUSE_MAX_IDLE: usize = 64;

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum SecretSource {
    /// An environment variable of the host process (or a value the embedder supplied under
    /// that name, see [`crate::Secrets`]).
    Env(String),
    /// A key of the host's secrets file.
    File(String),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(v) => write!(f, "env:{v}"),
            Self::File(k) => write!(f, "file:{k}"),
        }
    }
}

/// A secret the manifest declares, resolved.
#[derive(Debug, Clone)]
pub struct SecretGrant {
    /// Where its value comes from.
    pub source: SecretSource,
    /// Where it may go.
    pub binding: SecretBinding,
    /// Where in a request it may be filled in.
    pub places: Vec<SecretPlace>,
}

/// Resolved per-call limits, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Linear memory in bytes.
    pub memory_bytes: u64,
    /// Deadline in ms.
    pub deadline_ms: u64,
    /// Captured output bytes, each of stdout, stderr and log.
    pub output_bytes: u64,
    /// Table elements.
    pub table_elements: u64,
    /// Core instances.
    pub instances: u64,
    /// Instance reuse.
    pub reuse: Reuse,
}

/// Resolved HTTP grants.
#[derive(Debug, Clone)]
pub struct HttpGrants {
    /// Where requests may go.
    pub allow: AllowList,
    /// Total timeout of one request.
    pub timeout_ms: u64,
    /// Response body cap.
    pub max_response_bytes: u64,
    /// Request body cap.
    pub max_request_bytes: u64,
    /// Redirect hops followed (0: off).
    pub redirects: u32,
    /// Response headers accepted.
    pub max_response_headers: u32,
    /// Requests in flight at once for the action.
    pub max_concurrent: u32,
}

/// A manifest checked and resolved against the deployment's settings.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `action.toml` itself.
    pub path: PathBuf,
    /// As written.
    pub raw: RawManifest,
    /// The component file, absolute or relative to the working directory.
    pub component_path: PathBuf,
    /// `[config]` with the deployment's overrides applied.
    pub config: toml::Table,
    /// Network grants, `{{config.*}}` filled in.
    pub http: HttpGrants,
    /// Secrets by name.
    pub secrets: BTreeMap<String, SecretGrant>,
    /// Per-call limits.
    pub limits: Limits,
    /// How failures are handled.
    pub on_error: crate::error_policy::ErrorPolicy,
    /// The built-in component this manifest names (`builtin:NAME`), if any.
    pub builtin: Option<&'static crate::builtin::Builtin>,
}

impl Manifest {
    /// The action's name.
    pub fn name(&self) -> &str {
        &self.raw.name
    }

    /// Reads and resolves `path`, applying `overrides` (from callout.toml) to `[config]`.
    /// `max_memory_mb` and `max_table_elements` are the pool's ceilings.
    ///
    /// # Errors
    /// Any problem, as a [`LoadError`] naming the file, the field and the fix.
    pub fn load(
        path: &Path,
        overrides: Option<&toml::Table>,
        host: &HostLimits,
    ) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            LoadError::new(
                LoadErrorKind::Manifest,
                path,
                format!("cannot read it: {e}"),
            )
        })?;
        Self::parse(path, &text, overrides, host)
    }

    /// Like [`Manifest::load`] on text already read.
    ///
    /// # Errors
    /// As [`Manifest::load`].
    pub fn parse(
        path: &Path,
        text: &str,
        overrides: Option<&toml::Table>,
        host: &HostLimits,
    ) -> Result<Self, LoadError> {
        let HostLimits {
            max_memory_mb,
            max_table_elements,
            allow_any_host,
        } = *host;
        let err = |detail: String| LoadError::new(LoadErrorKind::Manifest, path, detail);
        let raw: RawManifest = toml::from_str(text).map_err(|e| err(one_line(&e.to_string())))?;
        check_name(&raw.name).map_err(err)?;

        let mut config = raw.config.clone();
        if let Some(over) = overrides {
            for (k, v) in over {
                config.insert(k.clone(), v.clone());
            }
        }

        for reserved in crate::builtin::RESERVED_CONFIG_KEYS {
            if raw.config.contains_key(reserved) {
                return Err(err(format!(
                    "config.{reserved} is reserved for the built-in plugins; rename the key"
                )));
            }
        }
        let builtin = match raw.component.strip_prefix("builtin:") {
            Some(name) => Some(crate::builtin::find(name).ok_or_else(|| {
                err(format!(
                    "component = {:?}: there is no built-in {name:?}; the built-ins are [{}]",
                    raw.component,
                    crate::builtin::names().join(", ")
                ))
            })?),
            None => None,
        };
        if builtin.is_none() && (raw.request.is_some() || raw.response.is_some()) {
            return Err(err(
                "[request] and [response] configure the built-in \"Send API Request\"; set \
                 component = \"builtin:send-api-request\" or remove them"
                    .into(),
            ));
        }
        if let Some(b) = builtin {
            if raw.request.is_none() {
                return Err(err(format!(
                    "component = \"builtin:{}\" needs a [request] table (method, url, headers, \
                     body); see docs/manifest.md",
                    b.name
                )));
            }
            for (key, value) in [
                ("request", raw.request.clone().map(toml::Value::Table)),
                ("response", raw.response.clone().map(toml::Value::Table)),
                (
                    "inputs",
                    Some(toml::Value::try_from(&raw.inputs).map_err(|e| {
                        err(format!("[inputs] cannot be handed to the built-in: {e}"))
                    })?),
                ),
            ] {
                if let Some(v) = value {
                    config.insert(key.to_string(), v);
                }
            }
        }
        let component_path = match builtin {
            Some(b) => PathBuf::from(format!("builtin:{}", b.name)),
            None => {
                let p = Path::new(&raw.component);
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    path.parent().unwrap_or(Path::new(".")).join(p)
                }
            }
        };

        let default_methods = parse_methods(raw.http.methods.as_deref(), "http.methods")
            .map_err(err)?
            .unwrap_or_else(|| vec![Method::Get]);
        let mut entries = Vec::new();
        for (i, spec) in raw.http.allow.iter().enumerate() {
            let field = format!("http.allow[{i}]");
            let (url, methods) = match spec {
                AllowSpec::Plain(u) => (u.as_str(), None),
                AllowSpec::Table { url, methods } => (url.as_str(), methods.as_deref()),
            };
            let methods = parse_methods(methods, &format!("{field}.methods"))
                .map_err(err)?
                .unwrap_or_else(|| default_methods.clone());
            let url = fill_config(url, &config, &field, &raw.name).map_err(err)?;
            let entry = AllowEntry::parse_with(&url, &methods, allow_any_host)
                .map_err(|m| err(format!("{field}: {m}")))?;
            if entry.host() == &crate::policy::HostPattern::Any {
                tracing::warn!(
                    "{}: {field} grants every host (http.insecure_allow_any_host is on); only the \
                     blocked-network guard limits this action",
                    path.display()
                );
            }
            entries.push(entry);
        }

        let timeout_ms = raw.http.timeout_ms.unwrap_or(DEFAULT_HTTP_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > MAX_HTTP_TIMEOUT_MS {
            return Err(err(format!(
                "http.timeout_ms = {timeout_ms} is out of range; use 1 to {MAX_HTTP_TIMEOUT_MS}"
            )));
        }
        let max_response_bytes = raw
            .http
            .max_response_bytes
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        let max_request_bytes = raw
            .http
            .max_request_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        let redirects = raw.http.redirects.unwrap_or(DEFAULT_REDIRECTS);
        if redirects > MAX_REDIRECTS {
            return Err(err(format!(
                "http.redirects = {redirects} is out of range; use 0 (off) to {MAX_REDIRECTS}"
            )));
        }
        let max_response_headers = raw
            .http
            .max_response_headers
            .unwrap_or(DEFAULT_MAX_RESPONSE_HEADERS);
        if max_response_headers == 0 || max_response_headers > 1_000 {
            return Err(err(format!(
                "http.max_response_headers = {max_response_headers} is out of range; use 1 to 1000"
            )));
        }
        let max_concurrent = raw.http.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT);
        if max_concurrent == 0 || max_concurrent > 10_000 {
            return Err(err(format!(
                "http.max_concurrent = {max_concurrent} is out of range; use 1 to 10000"
            )));
        }
        for (field, v) in [
            ("http.max_response_bytes", max_response_bytes),
            ("http.max_request_bytes", max_request_bytes),
        ] {
            if v == 0 || v > 64 << 20 {
                return Err(err(format!(
                    "{field} = {v} is out of range; use 1 to {} (64 MiB)",
                    64 << 20
                )));
            }
        }

        let mut secrets = BTreeMap::new();
        for (name, spec) in &raw.secrets {
            let field = format!("secrets.{name}");
            if !is_secret_name(name) {
                return Err(err(format!(
                    "{field}: {name:?} is not a valid secret name; use letters, digits and _, \
                     starting with a letter or _"
                )));
            }
            let source = match spec.from.split_once(':') {
                Some(("env", var)) if !var.is_empty() => SecretSource::Env(var.to_string()),
                Some(("file", key)) if !key.is_empty() => SecretSource::File(key.to_string()),
                _ => {
                    return Err(err(format!(
                        "{field}.from = {:?} is not a known source; write \"env:VARIABLE\" or \
                         \"file:KEY\" (a key of the host's secrets file)",
                        spec.from
                    )));
                }
            };
            let default_places = ["header".to_string()];
            let mut places = Vec::new();
            for place in spec.places.as_deref().unwrap_or(&default_places) {
                places.push(match place.as_str() {
                    "header" => SecretPlace::Header,
                    "query" => SecretPlace::Query,
                    "body" => SecretPlace::Body,
                    other => {
                        return Err(err(format!(
                            "{field}.in: {other:?} is not a place a secret can go; use \"header\", \
                             \"query\" or \"body\""
                        )));
                    }
                });
            }
            if places.is_empty() {
                return Err(err(format!(
                    "{field}.in is empty; leave it out for header values only"
                )));
            }
            places.sort_unstable();
            places.dedup();
            if spec.hosts.is_empty() {
                return Err(err(format!(
                    "{field}.hosts is empty; bind the secret to the destinations it may go to, \
                     e.g. hosts = [\"{{{{config.base_url}}}}\"]"
                )));
            }
            let mut hosts = Vec::new();
            for (i, h) in spec.hosts.iter().enumerate() {
                let hfield = format!("{field}.hosts[{i}]");
                let h = fill_config(h, &config, &hfield, &raw.name).map_err(err)?;
                hosts.push(
                    AllowEntry::parse(&h, &Method::ALL)
                        .map_err(|m| err(format!("{hfield}: {m}")))?,
                );
            }
            secrets.insert(
                name.clone(),
                SecretGrant {
                    source,
                    binding: SecretBinding {
                        name: name.clone(),
                        hosts,
                    },
                    places,
                },
            );
        }

        let l = &raw.limits;
        let memory_mb = l.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
        if memory_mb == 0 || memory_mb > max_memory_mb {
            return Err(err(format!(
                "limits.memory_mb = {memory_mb} is out of range; use 1 to {max_memory_mb} \
                 (the pool's largest memory, pool.max_memory_mb in callout.toml)"
            )));
        }
        let deadline_ms = l.deadline_ms.unwrap_or(DEFAULT_DEADLINE_MS);
        if deadline_ms == 0 || deadline_ms > MAX_DEADLINE_MS {
            return Err(err(format!(
                "limits.deadline_ms = {deadline_ms} is out of range; use 1 to {MAX_DEADLINE_MS}"
            )));
        }
        let output_kb = l.output_kb.unwrap_or(DEFAULT_OUTPUT_KB);
        if output_kb > 16 * 1024 {
            return Err(err(format!(
                "limits.output_kb = {output_kb} is out of range; use 0 to 16384"
            )));
        }
        let table_elements = l
            .table_elements
            .unwrap_or(DEFAULT_TABLE_ELEMENTS.min(max_table_elements));
        if table_elements == 0 || table_elements > max_table_elements {
            return Err(err(format!(
                "limits.table_elements = {table_elements} is out of range; use 1 to \
                 {max_table_elements} (pool.table_elements in callout.toml)"
            )));
        }
        let instances = l.instances.unwrap_or(DEFAULT_INSTANCES);
        if instances == 0 || instances > 1_000 {
            return Err(err(format!(
                "limits.instances = {instances} is out of range; use 1 to 1000"
            )));
        }

        // Regular expressions: syntax only here; each is compiled where it is used (the
        // triggers and the extractor at their first message, the input gate at load).
        for (field, spec) in &raw.inputs {
            if let Some(x) = &spec.extract {
                crate::triggers::check_syntax(x)
                    .map_err(|m| err(format!("inputs.{field}.extract: {m}")))?;
            }
            if let Some(p) = &spec.pattern {
                crate::triggers::check_syntax(p)
                    .map_err(|m| err(format!("inputs.{field}.pattern: {m}")))?;
            }
        }
        for (i, p) in raw.trigger.patterns.iter().enumerate() {
            crate::triggers::check_syntax(p)
                .map_err(|m| err(format!("trigger.patterns[{i}]: {m}")))?;
        }
        if raw.trigger.kind != TriggerKind::OnPrompt
            && (!raw.trigger.intents.is_empty()
                || !raw.trigger.patterns.is_empty()
                || !raw.trigger.requires.is_empty())
        {
            return Err(err(
                "trigger.intents and trigger.patterns apply to on-prompt actions; \
                 set trigger.kind = \"on-prompt\" or remove them"
                    .to_string(),
            ));
        }

        if let Some(signing) = &raw.signing
            && !secrets.contains_key(&signing.secret)
        {
            return Err(err(format!(
                "signing.secret = {:?} is not declared; add [secrets.{}] with from = \"env:...\" or \"file:...\" holding the whsec_ key",
                signing.secret, signing.secret
            )));
        }

        Ok(Self {
            path: path.to_path_buf(),
            component_path,
            config,
            http: HttpGrants {
                allow: AllowList::new(entries),
                timeout_ms,
                max_response_bytes,
                max_request_bytes,
                redirects,
                max_response_headers,
                max_concurrent,
            },
            secrets,
            limits: Limits {
                memory_bytes: memory_mb << 20,
                deadline_ms,
                output_bytes: output_kb << 10,
                table_elements,
                instances,
                reuse: raw.limits.reuse,
            },
            on_error: crate::error_policy::ErrorPolicy::from_spec(raw.on_error.as_ref())
                .map_err(err)?,
            builtin,
            raw,
        })
    }

    /// The value the `config` import returns for `key`: a string as it is, anything else as
    /// JSON text.
    pub fn config_value(&self, key: &str) -> Option<String> {
        config_value(&self.config, key)
    }
}

/// A `[config]` value as the `config` import returns it.
pub fn config_value(config: &toml::Table, key: &str) -> Option<String> {
    match config.get(key)? {
        toml::Value::String(s) => Some(s.clone()),
        other => serde_json::to_string(other).ok(),
    }
}

/// The rule for action names: lower-case letters, digits and `-`, 1 to 64 characters, not
/// starting or ending with `-`. Manifests, uploads and `callout new` all use it (a name is also
/// the folder an upload lives in).
///
/// # Errors
/// A sentence naming the name and the rule.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name = {name:?} is not a valid action name; use lower-case letters, digits and \
             '-', at most 64 characters, e.g. \"order-status\""
        ))
    }
}

fn is_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_methods(methods: Option<&[String]>, field: &str) -> Result<Option<Vec<Method>>, String> {
    let Some(methods) = methods else {
        return Ok(None);
    };
    if methods.is_empty() {
        return Err(format!(
            "{field} is empty; list at least one method, e.g. [\"GET\"]"
        ));
    }
    methods
        .iter()
        .map(|m| m.parse::<Method>().map_err(|e| format!("{field}: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Replaces `{{config.KEY}}` in `value` with the string value of `KEY`.
fn fill_config(
    value: &str,
    config: &toml::Table,
    field: &str,
    action: &str,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("{field}: {value:?} has an unclosed \"{{{{\""));
        };
        let inner = after[..end].trim();
        let Some(key) = inner.strip_prefix("config.") else {
            return Err(format!(
                "{field}: {{{{{inner}}}}} is not allowed here; only {{{{config.KEY}}}} is"
            ));
        };
        match config.get(key) {
            Some(toml::Value::String(s)) => out.push_str(s),
            Some(_) => {
                return Err(format!(
                    "{field} uses config.{key}, which is not a string; make it a URL string"
                ));
            }
            None => {
                return Err(format!(
                    "{field} uses config.{key}, which is not set; set it in [config] or in \
                     [actions.{action}.config] of callout.toml"
                ));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(
            Path::new("plugins/x/action.toml"),
            text,
            None,
            &HostLimits::default(),
        )
        .map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "name = \"orders\"\ncomponent = \"orders.wasm\"\n";

    #[test]
    fn minimal_manifest_gets_documented_defaults() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.limits.memory_bytes, 64 << 20);
        assert_eq!(m.limits.deadline_ms, 10_000);
        assert_eq!(m.http.timeout_ms, 10_000);
        assert_eq!(m.http.max_response_bytes, 1 << 20);
        assert!(
            m.http.allow.entries().is_empty(),
            "nothing is granted by default"
        );
        assert_eq!(m.component_path, Path::new("plugins/x/orders.wasm"));
    }

    #[test]
    fn bad_inputs_are_rejected_with_field_and_fix() {
        let cases: &[(&str, &[&str])] = &[
            (
                "name = \"x\"\ncomponent = \"x.wasm\"\ncolour = 1\n",
                &["unknown field", "colour"],
            ),
            (
                "name = \"Bad Name\"\ncomponent = \"x.wasm\"\n",
                &["name = \"Bad Name\"", "lower-case"],
            ),
            (
                "name = \"x\"\ncomponent = \"x.wasm\"\n[http]\nallow = [\"orders.example.com\"]\n",
                &["http.allow[0]", "https://orders.example.com"],
            ),
            (
                "name = \"x\"\ncomponent = \"x.wasm\"\n[http]\nallow = [\"{{config.base_url}}\"]\n",
                &[
                    "http.allow[0] uses config.base_url, which is not set",
                    "[actions.x.config]",
                ],
            ),
            (
                "name = \"x\"\ncomponent = \"x.wasm\"\n[limits]\nmemory_mb = 1024\n",
                &["limits.memory_mb = 1024", "pool.max_memory_mb"],
            ),
            (
                "name = \"x\"\ncomponent = \"x.wasm\"\n[http]\nmethods = [\"FETCH\"]\n",
                &["http.methods", "FETCH"],
            ),
            (
                "name = \"x\"\ncomponent = \"x.wasm\"\n[secrets.T]\nfrom = \"vault:x\"\nhosts = [\"https://a.example\"]\n",
                &["secrets.T.from", "env:VARIABLE"],
            ),
            (
                "name = \"x\"\ncomponent = \"x.wasm\"\n[secrets.T]\nfrom = \"env:T\"\nhosts = []\n",
                &["secrets.T.hosts is empty"],
            ),
            (
                "name = \"x\"\ncomponent = \"x.wasm\"\n[inputs.id]\nextract = \"(unclosed\"\n",
                &["inputs.id.extract", "not a valid regular expression"],
            ),
            (
                "name = \"x\"\ncomponent = \"x.wasm\"\n[trigger]\nintents = [\"a\"]\n",
                &["trigger.kind = \"on-prompt\""],
            ),
        ];
        for (text, wants) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.starts_with("invalid manifest plugins/x/action.toml: "),
                "{err}"
            );
            for want in *wants {
                assert!(
                    err.contains(want),
                    "error for {text:?}\n  was: {err}\n  lacks: {want}"
                );
            }
        }
    }

    #[test]
    fn config_override_moves_the_allowlist() {
        let text = "name = \"x\"\ncomponent = \"x.wasm\"\n[config]\nbase_url = \"https://orders.example.com\"\n\
                    [http]\nallow = [\"{{config.base_url}}\"]\n";
        let m = parse(text).unwrap();
        assert_eq!(
            m.http.allow.entries()[0].origin(),
            "https://orders.example.com:443"
        );
        let mut over = toml::Table::new();
        over.insert("base_url".into(), "http://127.0.0.1:8080".into());
        let m = Manifest::parse(
            Path::new("a/action.toml"),
            text,
            Some(&over),
            &HostLimits::default(),
        )
        .unwrap();
        assert_eq!(m.http.allow.entries()[0].origin(), "http://127.0.0.1:8080");
        assert_eq!(
            m.config_value("base_url").as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }

    #[test]
    fn config_values_are_strings_as_is_and_json_otherwise() {
        let text = format!("{MINIMAL}[config]\ns = \"plain\"\nn = 3\nt = {{ a = [1, 2] }}\n");
        let m = parse(&text).unwrap();
        assert_eq!(m.config_value("s").as_deref(), Some("plain"));
        assert_eq!(m.config_value("n").as_deref(), Some("3"));
        assert_eq!(m.config_value("t").as_deref(), Some("{\"a\":[1,2]}"));
        assert_eq!(m.config_value("missing"), None);
    }
}
