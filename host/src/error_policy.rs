//! `[on_error]`: what happens when a call fails.
//!
//! A failed call is retried, answered as needs-input (the agent asks the user again), answered
//! with a fallback message for the user, or reported as a failure. The operator chooses per
//! failure class in `action.toml`:
//!
//! ```toml
//! [on_error]
//! fallback = "Sorry, I can't reach the order system right now."
//! ask_again = ["invalid-input"]
//! [on_error.retry]
//! max = 2
//! backoff_ms = 200
//! max_backoff_ms = 10000
//! on = ["timeout", "connect", "server-error", "rate-limited"]
//! [on_error.messages]
//! not-found = "I couldn't find that order. Could you check the number?"
//! ```
//!
//! [`OnErrorSpec`] is the section as written, [`ErrorPolicy`] the section checked and resolved
//! (defaults filled), and [`ErrorPolicy::decide`] the decision for one failed attempt. Everything
//! here is pure: the caller supplies the attempt number and the jitter, and does the waiting.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::call::{Failure, UpstreamKind};

/// Retries after the first attempt when `on_error.retry.max` is not set: 0 (no retries).
pub const DEFAULT_RETRY_MAX: u32 = 0;
/// The most retries an action may ask for: 10.
pub const MAX_RETRY_MAX: u32 = 10;
/// The first retry delay when `on_error.retry.backoff_ms` is not set: 200 ms.
pub const DEFAULT_BACKOFF_MS: u64 = 200;
/// The cap on the doubling backoff when `on_error.retry.max_backoff_ms` is not set: 10 s.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 10_000;
/// The longest any retry waits, backoff or `Retry-After`: 60 s. Also the most `backoff_ms` and
/// `max_backoff_ms` may be.
pub const MAX_RETRY_DELAY_MS: u64 = 60_000;
/// The classes retried when `on_error.retry.on` is not set: the transient ones.
pub const DEFAULT_RETRY_ON: [ErrorClass; 4] = [
    ErrorClass::Timeout,
    ErrorClass::Connect,
    ErrorClass::ServerError,
    ErrorClass::RateLimited,
];
/// The classes answered as needs-input when `on_error.ask_again` is not set.
pub const DEFAULT_ASK_AGAIN: [ErrorClass; 1] = [ErrorClass::InvalidInput];

/// A failure class the policy knows, kebab-case in TOML (`server-error`).
///
/// Coarser than [`Failure`]: upstream failures are split by their kind, and every way the plugin
/// itself was stopped or misbehaved (deadline, memory limit, trap, contract) is one class,
/// `trap`, since the policy treats them alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// An upstream request got no answer in time.
    Timeout,
    /// An upstream request got no connection.
    Connect,
    /// An upstream answered 5xx.
    ServerError,
    /// An upstream answered 429.
    RateLimited,
    /// An upstream answered another 4xx.
    ClientError,
    /// An upstream answered something unusable.
    Protocol,
    /// The thing asked for does not exist.
    NotFound,
    /// The plugin found the inputs invalid.
    InvalidInput,
    /// Policy refused an outbound request.
    Denied,
    /// The plugin reported a bug.
    Internal,
    /// The plugin was stopped or broke the contract: deadline, memory limit, trap, contract.
    Trap,
    /// The host had no instance slot free; the plugin never ran.
    Busy,
}

impl ErrorClass {
    /// Every class, in the order error messages list them.
    pub const ALL: [ErrorClass; 12] = [
        Self::Timeout,
        Self::Connect,
        Self::ServerError,
        Self::RateLimited,
        Self::ClientError,
        Self::Protocol,
        Self::NotFound,
        Self::InvalidInput,
        Self::Denied,
        Self::Internal,
        Self::Trap,
        Self::Busy,
    ];

    /// The name used in TOML and reports: `timeout`, `server-error`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::ServerError => "server-error",
            Self::RateLimited => "rate-limited",
            Self::ClientError => "client-error",
            Self::Protocol => "protocol",
            Self::NotFound => "not-found",
            Self::InvalidInput => "invalid-input",
            Self::Denied => "denied",
            Self::Internal => "internal",
            Self::Trap => "trap",
            Self::Busy => "busy",
        }
    }

    /// Why retrying this class is refused in `on_error.retry.on`, for the classes where a retry
    /// can only repeat the failure (and may repeat a side effect).
    fn never_retried(self) -> Option<&'static str> {
        match self {
            Self::InvalidInput => Some(
                "the same inputs would be refused again; the user has to give new ones \
                 (on_error.ask_again)",
            ),
            Self::NotFound => Some("asking again for something that does not exist finds nothing"),
            Self::Denied => Some("policy refuses the same request every time"),
            _ => None,
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorClass {
    type Err = String;

    /// Parses a kebab-case name; the error lists the valid names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a failure class; use one of {}",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

/// The class of a failure, for the policy.
///
/// `Upstream { kind }` is that kind's class; deadline, memory limit, trap and contract failures
/// are all `trap`; a full instance pool is `busy`; a `NeedsInput` failure (the input gate
/// refused the inputs before the plugin ran) is `invalid-input`.
pub fn classify(f: &Failure) -> ErrorClass {
    match f {
        Failure::Upstream { kind, .. } => match kind {
            UpstreamKind::Timeout => ErrorClass::Timeout,
            UpstreamKind::Connect => ErrorClass::Connect,
            UpstreamKind::ServerError => ErrorClass::ServerError,
            UpstreamKind::RateLimited => ErrorClass::RateLimited,
            UpstreamKind::ClientError => ErrorClass::ClientError,
            UpstreamKind::Protocol => ErrorClass::Protocol,
        },
        Failure::InvalidInput { .. } | Failure::NeedsInput { .. } => ErrorClass::InvalidInput,
        Failure::NotFound { .. } => ErrorClass::NotFound,
        Failure::Denied { .. } => ErrorClass::Denied,
        Failure::Internal { .. } => ErrorClass::Internal,
        Failure::Deadline { .. }
        | Failure::MemoryLimit { .. }
        | Failure::Trap { .. }
        | Failure::Contract { .. } => ErrorClass::Trap,
        Failure::Busy { .. } => ErrorClass::Busy,
    }
}

/// `[on_error]` exactly as written. Every field is optional; [`ErrorPolicy::from_spec`] checks
/// it and fills the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnErrorSpec {
    /// The message for the user when a failure ends in a fallback and `messages` has none for
    /// its class. Default: none (such failures are reported as failures).
    #[serde(default)]
    pub fallback: Option<String>,
    /// Classes answered as needs-input: the agent asks the user again. Default
    /// `["invalid-input"]`.
    #[serde(default)]
    pub ask_again: Option<Vec<String>>,
    /// `[on_error.retry]`: when and how often to retry. Default: no retries.
    #[serde(default)]
    pub retry: RetrySpec,
    /// `[on_error.messages]`: per-class fallback messages, overriding `fallback`. Default: none.
    #[serde(default)]
    pub messages: BTreeMap<String, String>,
}

/// `[on_error.retry]` exactly as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Retries after the first attempt. Default 0 (none), at most 10.
    #[serde(default)]
    pub max: Option<u32>,
    /// The first delay in ms; it doubles each retry. Default 200, 1 to 60 000.
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    /// The cap on the doubled delay in ms. Default 10 000 (or `backoff_ms` if that is larger),
    /// from `backoff_ms` to 60 000.
    #[serde(default)]
    pub max_backoff_ms: Option<u64>,
    /// The classes retried. Default `["timeout", "connect", "server-error", "rate-limited"]`;
    /// `invalid-input`, `not-found` and `denied` are refused.
    #[serde(default)]
    pub on: Option<Vec<String>>,
}

/// `[on_error]` checked and resolved, defaults filled in.
///
/// The default (no `[on_error]` section) asks again on invalid input and reports every other
/// failure as it is: no retries, no fallback messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorPolicy {
    /// The message for fallbacks without a per-class message.
    pub fallback: Option<String>,
    /// Classes answered as needs-input, without duplicates.
    pub ask_again: Vec<ErrorClass>,
    /// When and how often to retry.
    pub retry: RetryPolicy,
    /// Per-class fallback messages.
    pub messages: BTreeMap<ErrorClass, String>,
}

/// `[on_error.retry]` resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 to 10).
    pub max: u32,
    /// The first delay in ms.
    pub backoff_ms: u64,
    /// The cap on the doubled delay in ms.
    pub max_backoff_ms: u64,
    /// The classes retried, without duplicates; none of them is in `ask_again`.
    pub on: Vec<ErrorClass>,
}

/// What to do about one failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handling {
    /// Call the action again, with the same inputs and idempotency key, after this many ms.
    Retry {
        /// How long to wait first.
        delay_ms: u64,
    },
    /// Answer as needs-input: the agent asks the user for the inputs again.
    AskAgain,
    /// Give up and answer the user with this message.
    Fallback {
        /// The operator's message.
        message: String,
    },
    /// Give up and report the failure as it is.
    Fail,
}

impl Default for ErrorPolicy {
    /// The policy of an action without `[on_error]`.
    fn default() -> Self {
        Self {
            fallback: None,
            ask_again: DEFAULT_ASK_AGAIN.to_vec(),
            retry: RetryPolicy {
                max: DEFAULT_RETRY_MAX,
                backoff_ms: DEFAULT_BACKOFF_MS,
                max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
                on: DEFAULT_RETRY_ON.to_vec(),
            },
            messages: BTreeMap::new(),
        }
    }
}

impl ErrorPolicy {
    /// Checks `[on_error]` and fills the defaults; `None` (no section) gives
    /// [`ErrorPolicy::default`].
    ///
    /// # Errors
    /// A one-line sentence naming the field and the fix, e.g.
    /// `on_error.retry.on: "5xx" is not a failure class; use one of timeout, ...`: unknown class
    /// names, numbers out of range, `invalid-input`, `not-found` or `denied` in `retry.on`, a
    /// class both asked again and retried, empty messages, and a message for a class that is
    /// asked again (it would never be shown).
    pub fn from_spec(spec: Option<&OnErrorSpec>) -> Result<Self, String> {
        let Some(spec) = spec else {
            return Ok(Self::default());
        };
        let r = &spec.retry;

        let max = r.max.unwrap_or(DEFAULT_RETRY_MAX);
        if max > MAX_RETRY_MAX {
            return Err(format!(
                "on_error.retry.max = {max} is out of range; use 0 to {MAX_RETRY_MAX} \
                 (retries after the first attempt)"
            ));
        }
        let backoff_ms = r.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS);
        if backoff_ms == 0 || backoff_ms > MAX_RETRY_DELAY_MS {
            return Err(format!(
                "on_error.retry.backoff_ms = {backoff_ms} is out of range; use 1 to \
                 {MAX_RETRY_DELAY_MS}"
            ));
        }
        let max_backoff_ms = r
            .max_backoff_ms
            .unwrap_or(DEFAULT_MAX_BACKOFF_MS.max(backoff_ms));
        if max_backoff_ms < backoff_ms || max_backoff_ms > MAX_RETRY_DELAY_MS {
            return Err(format!(
                "on_error.retry.max_backoff_ms = {max_backoff_ms} is out of range; use \
                 on_error.retry.backoff_ms ({backoff_ms}) to {MAX_RETRY_DELAY_MS}"
            ));
        }
        let on = match &r.on {
            None => DEFAULT_RETRY_ON.to_vec(),
            Some(names) => {
                let on = parse_classes(names, "on_error.retry.on")?;
                if let Some((c, why)) = on.iter().find_map(|c| Some((c, c.never_retried()?))) {
                    return Err(format!(
                        "on_error.retry.on: \"{c}\" is never retried: {why}; remove it"
                    ));
                }
                on
            }
        };

        let ask_again = match &spec.ask_again {
            None => DEFAULT_ASK_AGAIN.to_vec(),
            Some(names) => parse_classes(names, "on_error.ask_again")?,
        };
        if let Some(c) = ask_again.iter().find(|c| on.contains(c)) {
            let default = if r.on.is_none() { " (its default)" } else { "" };
            return Err(format!(
                "on_error.ask_again lists \"{c}\", which on_error.retry.on{default} lists too; \
                 a failure is either retried or asked again, so remove it from one of them"
            ));
        }

        let fallback = match &spec.fallback {
            Some(m) if m.trim().is_empty() => {
                return Err(
                    "on_error.fallback is empty; write the sentence the user should \
                            see, or remove it"
                        .to_string(),
                );
            }
            other => other.clone(),
        };

        let mut messages = BTreeMap::new();
        for (name, message) in &spec.messages {
            let class: ErrorClass = name
                .parse()
                .map_err(|e| format!("on_error.messages: {e}"))?;
            if message.trim().is_empty() {
                return Err(format!(
                    "on_error.messages.{class} is empty; write the sentence the user should \
                     see, or remove it"
                ));
            }
            if ask_again.contains(&class) {
                return Err(format!(
                    "on_error.messages.{class} is never shown: \"{class}\" is in \
                     on_error.ask_again, so the user is asked again instead; remove the message \
                     or the class from ask_again"
                ));
            }
            messages.insert(class, message.clone());
        }

        Ok(Self {
            fallback,
            ask_again,
            retry: RetryPolicy {
                max,
                backoff_ms,
                max_backoff_ms,
                on,
            },
            messages,
        })
    }

    /// What to do about a failed attempt.
    ///
    /// `attempt` is the attempt that just failed, from 1 (0 is taken as 1). `repeatable` is
    /// whether every request of that attempt was idempotent or carried the idempotency key: a
    /// retry re-invokes the whole action with the same key, so otherwise it must not happen.
    /// `jitter` is a number in [0, 1) supplied by the caller, so that tests are deterministic
    /// (values outside are clamped; NaN is 0).
    ///
    /// The rules, in order:
    /// 1. A `NeedsInput` failure (nothing was called) and any class in `ask_again`:
    ///    [`Handling::AskAgain`].
    /// 2. A class in `retry.on`, with `attempt <= retry.max` and `repeatable`:
    ///    [`Handling::Retry`]. The backoff is `min(max_backoff_ms, backoff_ms * 2^(attempt-1))`,
    ///    jittered as "equal jitter": half of it fixed, the other half scaled by `jitter`
    ///    (`backoff - backoff/2 + floor(backoff/2 * jitter)`, so 200 ms waits 100 to 199 ms).
    ///    The delay is the larger of that and the failure's `Retry-After`, which is honoured
    ///    even above `max_backoff_ms` but capped at 60 000 ms ([`MAX_RETRY_DELAY_MS`]) so that
    ///    an upstream cannot park a call; the caller still has to fit the wait in its deadline.
    /// 3. A message for the class in `messages`, else `fallback`: [`Handling::Fallback`].
    /// 4. Otherwise [`Handling::Fail`].
    pub fn decide(
        &self,
        failure: &Failure,
        attempt: u32,
        repeatable: bool,
        jitter: f64,
    ) -> Handling {
        let class = classify(failure);
        if matches!(failure, Failure::NeedsInput { .. }) || self.ask_again.contains(&class) {
            return Handling::AskAgain;
        }
        let attempt = attempt.max(1);
        if repeatable && attempt <= self.retry.max && self.retry.on.contains(&class) {
            let retry_after = match failure {
                Failure::Upstream { retry_after_ms, .. } => retry_after_ms.unwrap_or(0),
                _ => 0,
            };
            let delay_ms = self
                .backoff_ms(attempt, jitter)
                .max(retry_after.min(MAX_RETRY_DELAY_MS));
            return Handling::Retry { delay_ms };
        }
        match self.messages.get(&class).or(self.fallback.as_ref()) {
            Some(message) => Handling::Fallback {
                message: message.clone(),
            },
            None => Handling::Fail,
        }
    }

    /// The most attempts one call may take: the first plus `retry.max`, or 1 when no class is
    /// retried. For sizing deadlines and reports.
    pub fn max_attempts(&self) -> u32 {
        if self.retry.on.is_empty() {
            1
        } else {
            1 + self.retry.max
        }
    }

    /// The jittered backoff after failed attempt `attempt` (from 1).
    fn backoff_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let doubling = 1u64.checked_shl(attempt - 1).unwrap_or(u64::MAX);
        let backoff = self
            .retry
            .backoff_ms
            .saturating_mul(doubling)
            .min(self.retry.max_backoff_ms);
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0 - f64::EPSILON)
        };
        let half = backoff / 2;
        // `half` is at most 30 000, exact in f64; the product is below `half`.
        backoff - half + (half as f64 * jitter).floor() as u64
    }
}

fn parse_classes(names: &[String], field: &str) -> Result<Vec<ErrorClass>, String> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let class: ErrorClass = name.parse().map_err(|e| format!("{field}: {e}"))?;
        if !out.contains(&class) {
            out.push(class);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::FieldError;
    use crate::inputs::NeededInput;

    fn upstream(kind: UpstreamKind, retry_after_ms: Option<u64>) -> Failure {
        Failure::Upstream {
            kind,
            status: None,
            retry_after_ms,
            message: "x".into(),
        }
    }

    fn timeout() -> Failure {
        upstream(UpstreamKind::Timeout, None)
    }

    fn not_found() -> Failure {
        Failure::NotFound {
            message: "no such order".into(),
        }
    }

    fn invalid_input() -> Failure {
        Failure::InvalidInput {
            fields: vec![FieldError {
                field: "order_id".into(),
                reason: "too short".into(),
            }],
        }
    }

    fn policy(toml_text: &str) -> Result<ErrorPolicy, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            on_error: OnErrorSpec,
        }
        let doc: Doc = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        ErrorPolicy::from_spec(Some(&doc.on_error))
    }

    /// A policy retrying twice from 200 ms, capped at 10 s, with a fallback.
    fn retrying() -> ErrorPolicy {
        policy("[on_error]\nfallback = \"sorry\"\n[on_error.retry]\nmax = 2\n").unwrap()
    }

    #[test]
    fn every_failure_variant_has_its_class() {
        let cases = [
            (invalid_input(), ErrorClass::InvalidInput),
            (
                Failure::NeedsInput {
                    fields: vec![NeededInput {
                        field: "order_id".into(),
                        prompt: None,
                        reason: "is required".into(),
                    }],
                },
                ErrorClass::InvalidInput,
            ),
            (not_found(), ErrorClass::NotFound),
            (upstream(UpstreamKind::Timeout, None), ErrorClass::Timeout),
            (upstream(UpstreamKind::Connect, None), ErrorClass::Connect),
            (
                upstream(UpstreamKind::ServerError, None),
                ErrorClass::ServerError,
            ),
            (
                upstream(UpstreamKind::RateLimited, Some(1)),
                ErrorClass::RateLimited,
            ),
            (
                upstream(UpstreamKind::ClientError, None),
                ErrorClass::ClientError,
            ),
            (upstream(UpstreamKind::Protocol, None), ErrorClass::Protocol),
            (
                Failure::Denied {
                    code: "host-not-allowed".into(),
                    message: "x".into(),
                },
                ErrorClass::Denied,
            ),
            (
                Failure::Internal {
                    message: "x".into(),
                },
                ErrorClass::Internal,
            ),
            (Failure::Deadline { deadline_ms: 10 }, ErrorClass::Trap),
            (Failure::MemoryLimit { limit_mb: 64 }, ErrorClass::Trap),
            (
                Failure::Trap {
                    message: "unreachable".into(),
                },
                ErrorClass::Trap,
            ),
            (
                Failure::Contract {
                    message: "bad JSON".into(),
                },
                ErrorClass::Trap,
            ),
            (
                Failure::Busy {
                    message: "maximum concurrent limit of 1 for component instances reached".into(),
                },
                ErrorClass::Busy,
            ),
        ];
        for (failure, want) in cases {
            assert_eq!(classify(&failure), want, "{failure:?}");
        }
    }

    #[test]
    fn class_names_round_trip_and_unknown_names_list_the_valid_ones() {
        for class in ErrorClass::ALL {
            assert_eq!(class.as_str().parse::<ErrorClass>(), Ok(class));
            assert_eq!(class.to_string(), class.as_str());
            assert_eq!(
                serde_json::to_value(class).unwrap(),
                serde_json::Value::String(class.as_str().into())
            );
        }
        let err = "5xx".parse::<ErrorClass>().unwrap_err();
        assert_eq!(
            err,
            "\"5xx\" is not a failure class; use one of timeout, connect, server-error, \
             rate-limited, client-error, protocol, not-found, invalid-input, denied, internal, \
             trap, busy"
        );
    }

    #[test]
    fn no_section_and_an_empty_section_give_the_documented_defaults() {
        let want = ErrorPolicy {
            fallback: None,
            ask_again: vec![ErrorClass::InvalidInput],
            retry: RetryPolicy {
                max: 0,
                backoff_ms: 200,
                max_backoff_ms: 10_000,
                on: vec![
                    ErrorClass::Timeout,
                    ErrorClass::Connect,
                    ErrorClass::ServerError,
                    ErrorClass::RateLimited,
                ],
            },
            messages: BTreeMap::new(),
        };
        assert_eq!(ErrorPolicy::from_spec(None).unwrap(), want);
        assert_eq!(ErrorPolicy::default(), want);
        assert_eq!(policy("[on_error]\n").unwrap(), want);
        assert_eq!(want.max_attempts(), 1);
    }

    #[test]
    fn the_documented_example_parses_as_written() {
        let p = policy(
            "[on_error]\n\
             fallback = \"Sorry, I can't reach the order system right now.\"\n\
             ask_again = [\"invalid-input\"]\n\
             [on_error.retry]\n\
             max = 2\nbackoff_ms = 200\nmax_backoff_ms = 10000\n\
             on = [\"timeout\", \"connect\", \"server-error\", \"rate-limited\"]\n\
             [on_error.messages]\n\
             not-found = \"I couldn't find that order. Could you check the number?\"\n",
        )
        .unwrap();
        assert_eq!(p.retry.max, 2);
        assert_eq!(p.max_attempts(), 3);
        assert_eq!(
            p.messages.get(&ErrorClass::NotFound).map(String::as_str),
            Some("I couldn't find that order. Could you check the number?")
        );
        assert_eq!(
            p.fallback.as_deref(),
            Some("Sorry, I can't reach the order system right now.")
        );
    }

    #[test]
    fn a_larger_backoff_raises_the_default_cap_with_it() {
        let p = policy("[on_error.retry]\nbackoff_ms = 20000\n").unwrap();
        assert_eq!(p.retry.max_backoff_ms, 20_000);
    }

    #[test]
    fn each_rule_gives_its_handling() {
        let messages = policy(
            "[on_error]\nfallback = \"general\"\n[on_error.retry]\nmax = 1\n\
             [on_error.messages]\nnot-found = \"check the number\"\n",
        )
        .unwrap();
        let no_fallback = policy("[on_error.retry]\nmax = 1\n").unwrap();
        let ask_not_found =
            policy("[on_error]\nask_again = [\"invalid-input\", \"not-found\"]\n").unwrap();
        let nothing_asked = policy("[on_error]\nask_again = []\nfallback = \"general\"\n").unwrap();
        let retry_client = policy("[on_error.retry]\nmax = 1\non = [\"client-error\"]\n").unwrap();
        let fallback = |m: &str| Handling::Fallback { message: m.into() };
        let first_retry = Handling::Retry { delay_ms: 100 };
        let needs_input = Failure::NeedsInput { fields: vec![] };
        let defaults = ErrorPolicy::default();
        let cases: Vec<(&str, &ErrorPolicy, Failure, u32, bool, Handling)> = vec![
            (
                "invalid input is asked again by default",
                &messages,
                invalid_input(),
                1,
                true,
                Handling::AskAgain,
            ),
            (
                "a class added to ask_again is asked again",
                &ask_not_found,
                not_found(),
                1,
                true,
                Handling::AskAgain,
            ),
            (
                "invalid input not asked again falls back",
                &nothing_asked,
                invalid_input(),
                1,
                true,
                fallback("general"),
            ),
            (
                "needs-input is always asked again: nothing was called",
                &nothing_asked,
                needs_input,
                1,
                true,
                Handling::AskAgain,
            ),
            (
                "a retried class within max is retried",
                &messages,
                timeout(),
                1,
                true,
                first_retry.clone(),
            ),
            (
                "attempt 0 counts as the first",
                &messages,
                timeout(),
                0,
                true,
                first_retry.clone(),
            ),
            (
                "past max the fallback answers",
                &messages,
                timeout(),
                2,
                true,
                fallback("general"),
            ),
            (
                "past max without a fallback the call fails",
                &no_fallback,
                timeout(),
                2,
                true,
                Handling::Fail,
            ),
            (
                "not repeatable is not retried but falls back",
                &messages,
                timeout(),
                1,
                false,
                fallback("general"),
            ),
            (
                "not repeatable without a fallback fails",
                &no_fallback,
                timeout(),
                1,
                false,
                Handling::Fail,
            ),
            (
                "the class's message overrides the fallback",
                &messages,
                not_found(),
                1,
                true,
                fallback("check the number"),
            ),
            (
                "a class not retried by default falls back",
                &messages,
                upstream(UpstreamKind::ClientError, None),
                1,
                true,
                fallback("general"),
            ),
            (
                "client-error is retried when listed",
                &retry_client,
                upstream(UpstreamKind::ClientError, None),
                1,
                true,
                first_retry.clone(),
            ),
            (
                "no retries by default",
                &defaults,
                timeout(),
                1,
                true,
                Handling::Fail,
            ),
        ];
        for (name, p, failure, attempt, repeatable, want) in cases {
            assert_eq!(p.decide(&failure, attempt, repeatable, 0.0), want, "{name}");
        }
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_up_to_its_cap() {
        let p = policy("[on_error.retry]\nmax = 10\n").unwrap();
        let cases: &[(u32, f64, u64)] = &[
            (1, 0.0, 100),
            (1, 0.999, 199),
            (2, 0.0, 200),
            (2, 0.999, 399),
            (3, 0.0, 400),
            (3, 0.999, 799),
            (6, 0.0, 3_200),
            (6, 0.999, 6_396),
            // 200 * 2^6 = 12 800, capped at 10 000.
            (7, 0.0, 5_000),
            (7, 0.999, 9_995),
            (10, 0.0, 5_000),
            (10, 0.999, 9_995),
            // Out-of-range jitter is clamped, NaN is 0.
            (1, -1.0, 100),
            (1, 5.0, 199),
            (1, f64::NAN, 100),
        ];
        for &(attempt, jitter, delay_ms) in cases {
            assert_eq!(
                p.decide(&timeout(), attempt, true, jitter),
                Handling::Retry { delay_ms },
                "attempt {attempt}, jitter {jitter}"
            );
        }
        assert_eq!(
            p.decide(&timeout(), 11, true, 0.0),
            Handling::Fail,
            "past the tenth retry"
        );
    }

    #[test]
    fn odd_backoffs_keep_the_larger_half_fixed() {
        let p = policy("[on_error.retry]\nmax = 1\nbackoff_ms = 1\n").unwrap();
        assert_eq!(
            p.decide(&timeout(), 1, true, 0.999),
            Handling::Retry { delay_ms: 1 }
        );
        let p = policy("[on_error.retry]\nmax = 1\nbackoff_ms = 201\n").unwrap();
        for (jitter, delay_ms) in [(0.0, 101), (0.999, 200)] {
            assert_eq!(
                p.decide(&timeout(), 1, true, jitter),
                Handling::Retry { delay_ms }
            );
        }
    }

    #[test]
    fn retry_after_wins_when_larger_and_is_capped_at_a_minute() {
        let p = retrying();
        let cases: &[(Option<u64>, f64, u64)] = &[
            (None, 0.0, 100),
            (Some(50), 0.0, 100),
            (Some(150), 0.0, 150),
            (Some(150), 0.999, 199),
            (Some(30_000), 0.0, 30_000),
            (Some(60_000), 0.0, 60_000),
            (Some(3_600_000), 0.0, 60_000),
        ];
        for &(retry_after, jitter, delay_ms) in cases {
            let f = upstream(UpstreamKind::RateLimited, retry_after);
            assert_eq!(
                p.decide(&f, 1, true, jitter),
                Handling::Retry { delay_ms },
                "Retry-After {retry_after:?}, jitter {jitter}"
            );
        }
    }

    #[test]
    fn bad_sections_are_rejected_naming_the_field_and_the_fix() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[on_error.retry]\non = [\"timeout\", \"5xx\"]\n",
                &[
                    "on_error.retry.on: \"5xx\" is not a failure class; use one of timeout, \
                     connect,",
                ],
            ),
            (
                "[on_error]\nask_again = [\"oops\"]\n",
                &["on_error.ask_again: \"oops\" is not a failure class"],
            ),
            (
                "[on_error.messages]\nnot_found = \"x\"\n",
                &[
                    "on_error.messages: \"not_found\" is not a failure class",
                    "not-found",
                ],
            ),
            (
                "[on_error.retry]\nmax = 11\n",
                &["on_error.retry.max = 11 is out of range; use 0 to 10"],
            ),
            (
                "[on_error.retry]\non = [\"not-found\"]\n",
                &[
                    "on_error.retry.on: \"not-found\" is never retried",
                    "remove it",
                ],
            ),
            (
                "[on_error.retry]\non = [\"invalid-input\"]\n",
                &[
                    "on_error.retry.on: \"invalid-input\" is never retried",
                    "ask_again",
                ],
            ),
            (
                "[on_error.retry]\non = [\"denied\"]\n",
                &["on_error.retry.on: \"denied\" is never retried", "policy"],
            ),
            (
                "[on_error.retry]\nbackoff_ms = 0\n",
                &["on_error.retry.backoff_ms = 0 is out of range; use 1 to 60000"],
            ),
            (
                "[on_error.retry]\nbackoff_ms = 500\nmax_backoff_ms = 100\n",
                &[
                    "on_error.retry.max_backoff_ms = 100 is out of range",
                    "(500) to 60000",
                ],
            ),
            (
                "[on_error.retry]\nmax_backoff_ms = 120000\n",
                &["on_error.retry.max_backoff_ms = 120000 is out of range"],
            ),
            (
                "[on_error]\nask_again = [\"timeout\"]\n",
                &[
                    "on_error.ask_again lists \"timeout\"",
                    "on_error.retry.on (its default)",
                ],
            ),
            (
                "[on_error]\nfallback = \" \"\n",
                &["on_error.fallback is empty"],
            ),
            (
                "[on_error.messages]\ntimeout = \"\"\n",
                &["on_error.messages.timeout is empty"],
            ),
            (
                "[on_error.messages]\ninvalid-input = \"try again\"\n",
                &[
                    "on_error.messages.invalid-input is never shown",
                    "ask_again",
                ],
            ),
            ("[on_error]\nretries = 3\n", &["unknown field", "retries"]),
            ("[on_error.retry]\ndelay = 3\n", &["unknown field", "delay"]),
        ];
        for (text, wants) in cases {
            let err = policy(text).expect_err(text);
            for want in *wants {
                assert!(
                    err.contains(want),
                    "error for {text:?}\n  was: {err}\n  lacks: {want}"
                );
            }
        }
    }

    #[test]
    fn client_error_may_be_retried_when_the_operator_lists_it() {
        let p = policy("[on_error.retry]\nmax = 1\non = [\"client-error\", \"client-error\"]\n")
            .unwrap();
        assert_eq!(
            p.retry.on,
            vec![ErrorClass::ClientError],
            "duplicates dropped"
        );
        assert_eq!(p.max_attempts(), 2);
    }

    #[test]
    fn an_empty_retry_list_means_one_attempt() {
        let p = policy("[on_error.retry]\nmax = 3\non = []\n").unwrap();
        assert_eq!(p.max_attempts(), 1);
        assert_eq!(p.decide(&timeout(), 1, true, 0.0), Handling::Fail);
    }
}
