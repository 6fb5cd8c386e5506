//! One call of an action, in host terms (no wasmtime types): what goes in, what comes out.

use serde::Serialize;
use serde_json::{Map, Value};

/// Why an action is being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Called as a tool by an agent, a platform or the CLI.
    #[default]
    ToolCall,
    /// Fired by a conversation message.
    OnPrompt,
    /// Fired by the end of a conversation.
    ChatEnd,
    /// Called by Test.
    Test,
}

impl Trigger {
    /// `tool-call`, `on-prompt`, `chat-end` or `test`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ToolCall => "tool-call",
            Self::OnPrompt => "on-prompt",
            Self::ChatEnd => "chat-end",
            Self::Test => "test",
        }
    }
}

/// Who said a line of a transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The user.
    User,
    /// The AI agent.
    Agent,
    /// The platform.
    System,
}

/// A line of a transcript.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TranscriptLine {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub text: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// One call of an action.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// Why.
    pub trigger: Trigger,
    /// The inputs (a JSON object).
    pub inputs: Map<String, Value>,
    /// The conversation, if any.
    pub conversation_id: Option<String>,
    /// The conversation's variables.
    pub variables: Map<String, Value>,
    /// The transcript, at chat-end.
    pub transcript: Option<Vec<TranscriptLine>>,
    /// The idempotency key; a fresh random one is made when empty.
    pub idempotency_key: Option<String>,
    /// Attempt number, from 1 (0 is taken as 1).
    pub attempt: u32,
    /// Record outbound requests instead of sending them.
    pub dry_run: bool,
    /// Answer every outbound request that passes the policy from this recorded response
    /// instead of sending it (`callout test --mock`).
    pub mock: Option<std::sync::Arc<MockResponse>>,
    /// Keep what a live call sent (secrets as placeholders, in [`CallReport::recorded`]) and
    /// the responses it got ([`CallReport::responses`]): a live Test in the console shows
    /// them and may keep them as a test case. Off by default: ordinary calls keep nothing.
    pub capture: bool,
}

/// A recorded upstream answer for `callout test --mock` (and stored test cases): a response,
/// or a failure. As a file (JSON, or TOML when the name ends in `.toml`):
/// `{"status": 200, "headers": {"content-type": "application/json"}, "body": {"id": 1}}`, or
/// `{"failure": "timeout"}` (`timeout`, `connect` or `protocol`). A body that is not a string
/// is sent as JSON.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MockResponse {
    /// HTTP status (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Response headers.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body: a string as it is, anything else as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// A transport failure instead of a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<MockFailure>,
}

fn default_status() -> u16 {
    200
}

/// Transport failures a mock can stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MockFailure {
    /// No answer in time.
    Timeout,
    /// The connection failed.
    Connect,
    /// A broken answer.
    Protocol,
}

impl MockResponse {
    /// Reads a mock file.
    ///
    /// # Errors
    /// An unreadable file or one not of this shape, naming the file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let parsed = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| crate::config::one_line(&e.to_string()))
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| {
            format!(
                "{} is not a mock response ({e}); write {{\"status\": 200, \"headers\": {{}}, \"body\": ...}} or {{\"failure\": \"timeout\"}}",
                path.display()
            )
        })
    }

    /// The body's bytes.
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(other) => other.to_string().into_bytes(),
        }
    }
}

impl Call {
    /// A tool call with these inputs.
    pub fn tool(inputs: Map<String, Value>) -> Self {
        Self {
            inputs,
            ..Self::default()
        }
    }
}

/// A successful result.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    /// Structured data for the agent.
    pub data: Value,
    /// A reply for the user, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Variables to merge into the conversation.
    pub variables: Map<String, Value>,
}

/// A field the plugin found invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The input field.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// The class of an upstream failure, as the plugin reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamKind {
    /// No answer in time.
    Timeout,
    /// No connection.
    Connect,
    /// 5xx.
    ServerError,
    /// 429.
    RateLimited,
    /// Another 4xx.
    ClientError,
    /// An unusable answer.
    Protocol,
}

impl std::fmt::Display for UpstreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::ServerError => "server-error",
            Self::RateLimited => "rate-limited",
            Self::ClientError => "client-error",
            Self::Protocol => "protocol",
        })
    }
}

/// Why a call did not produce an outcome. Serialized with a `class` tag, the name the error
/// policy and the API use.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error, utoipa::ToSchema)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum Failure {
    /// The plugin found inputs invalid: ask the user again.
    #[error("invalid input: {}", fields.iter().map(|f| format!("{}: {}", f.field, f.reason)).collect::<Vec<_>>().join("; "))]
    InvalidInput {
        /// The fields and why.
        fields: Vec<FieldError>,
    },
    /// The thing asked for does not exist.
    #[error("not found: {message}")]
    NotFound {
        /// The plugin's words.
        message: String,
    },
    /// An upstream call failed.
    #[error("upstream {kind}{}: {message}", status.map(|s| format!(" (status {s})")).unwrap_or_default())]
    Upstream {
        /// Its class.
        kind: UpstreamKind,
        /// HTTP status, when there was one.
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// Retry-After in ms, when sent.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// A sentence.
        message: String,
    },
    /// An outbound request was refused by policy.
    #[error("denied ({code}): {message}")]
    Denied {
        /// The denial code.
        code: String,
        /// The sentence.
        message: String,
    },
    /// The plugin reported a bug.
    #[error("internal error in plugin: {message}")]
    Internal {
        /// The plugin's words.
        message: String,
    },
    /// The call ran past its deadline and was stopped.
    #[error("deadline of {deadline_ms} ms exceeded; the plugin was stopped")]
    Deadline {
        /// The deadline.
        deadline_ms: u64,
    },
    /// The plugin tried to grow its memory past its limit.
    #[error("memory limit of {limit_mb} MiB reached (limits.memory_mb); the plugin was stopped")]
    MemoryLimit {
        /// The limit.
        limit_mb: u64,
    },
    /// The plugin trapped (a panic, `unreachable`, a bad memory access, ...).
    #[error("plugin trapped: {message}")]
    Trap {
        /// What wasmtime reported, first line.
        message: String,
    },
    /// Inputs are missing or invalid: nothing was called. The agent asks the user each question.
    #[error("needs input: {}", fields.iter().map(|f| format!("{} {}", f.field, f.reason)).collect::<Vec<_>>().join("; "))]
    NeedsInput {
        /// What to collect, with the question to ask.
        fields: Vec<crate::inputs::NeededInput>,
    },
    /// The plugin returned something that breaks the contract (invalid JSON, say).
    #[error("plugin broke the contract: {message}")]
    Contract {
        /// What was wrong.
        message: String,
    },
    /// The host had no instance slot free for the call (its `[pool]` limits were all in use by
    /// calls in flight): the plugin never ran, so trying again later is always safe. Chat-end
    /// deliveries are retried after it whatever the action's `[on_error]` says.
    #[error("the host is busy: {message}")]
    Busy {
        /// Which pool limit was reached, and the setting that raises it.
        message: String,
    },
}

impl Failure {
    /// The stable class name (`not-found`, `deadline`, ...).
    pub fn class(&self) -> &'static str {
        match self {
            Self::InvalidInput { .. } => "invalid-input",
            Self::NeedsInput { .. } => "needs-input",
            Self::NotFound { .. } => "not-found",
            Self::Upstream { .. } => "upstream",
            Self::Denied { .. } => "denied",
            Self::Internal { .. } => "internal",
            Self::Deadline { .. } => "deadline",
            Self::MemoryLimit { .. } => "memory-limit",
            Self::Trap { .. } => "trap",
            Self::Contract { .. } => "contract",
            Self::Busy { .. } => "busy",
        }
    }
}

/// A request recorded in dry-run, rendered as it would have been sent, secrets left as
/// `{{secret.NAME}}` placeholders.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The full URL.
    pub url: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl std::fmt::Display for RecordedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} {}", self.method, self.url)?;
        for (k, v) in &self.headers {
            writeln!(f, "{k}: {v}")?;
        }
        if let Some(b) = &self.body {
            writeln!(f)?;
            writeln!(f, "{b}")?;
        }
        Ok(())
    }
}

/// A request the plugin made in a call, for reports and the error policy.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SentRequest {
    /// The method.
    pub method: String,
    /// scheme://host:port/path, without query.
    pub target: String,
    /// Safe to repeat: an idempotent method, or an `Idempotency-Key` header was sent.
    pub repeatable: bool,
    /// What became of it: a status code, or the error class.
    pub result: String,
}

/// Everything a call produced.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    /// The result.
    pub result: Result<Outcome, Failure>,
    /// The idempotency key used.
    pub idempotency_key: String,
    /// Requests recorded in dry-run and mock calls, and in live calls with [`Call::capture`].
    pub recorded: Vec<RecordedRequest>,
    /// Responses received by a live call with [`Call::capture`], in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub responses: Vec<MockResponse>,
    /// Requests the plugin made (sent or refused).
    pub requests: Vec<SentRequest>,
    /// What the plugin printed and logged, and how much was cut at the caps.
    pub output: OutputStats,
    /// Attempts made (retries included; 0 when the input gate stopped the call).
    pub attempts: u32,
    /// The fallback message for the user, when the action's `[on_error]` turned the failure
    /// into one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Wall time of the call in microseconds.
    pub elapsed_us: u64,
}

/// Bytes a call wrote to stdout, stderr and the log: kept (forwarded to tracing) and dropped
/// over the cap (`limits.output_kb`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutputStats {
    /// stdout bytes kept.
    pub stdout_kept: u64,
    /// stdout bytes dropped.
    pub stdout_dropped: u64,
    /// stderr bytes kept.
    pub stderr_kept: u64,
    /// stderr bytes dropped.
    pub stderr_dropped: u64,
    /// log bytes dropped.
    pub log_dropped: u64,
}
