//! [`ActionError`]: what a plugin reports when an action fails.

use std::fmt;

use crate::bindings::callout::plugin::outbound_http::Denial;
use crate::bindings::exports::callout::plugin::action as wit;

/// Why a call of an action failed.
///
/// Build one with its constructors ([`ActionError::not_found`], [`ActionError::upstream`], ...),
/// or let `?` convert an [`http::Error`](crate::http::Error). The glue of
/// [`export_action!`](crate::export_action) turns it into the WIT `action-error` the host reads;
/// the action's error policy decides on retries from it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActionError {
    /// Some inputs are invalid: the agent should ask the user again.
    InvalidInput(Vec<FieldError>),
    /// The thing asked for does not exist: a business answer, not a fault.
    NotFound(String),
    /// An upstream call failed.
    Upstream(UpstreamError),
    /// An outbound request was refused by the host's policy.
    Denied {
        /// The host's stable code, e.g. `host-not-allowed`.
        code: String,
        /// What was refused and what grant would allow it.
        message: String,
    },
    /// A bug or an unexpected state in the plugin.
    Internal(String),
    /// Not a failure: the call is a dry run and the host recorded a request instead of sending
    /// it ([`http::Error::DryRun`](crate::http::Error::DryRun)).
    ///
    /// Returned from [`Action::run`](crate::Action::run) (usually by `?` on
    /// [`RequestBuilder::send`](crate::http::RequestBuilder::send)), it makes the call finish
    /// **successfully** with `data` = `null`, no reply and no variables.
    DryRun,
}

/// One invalid or missing input field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name, as in the input schema (`a.b` or `a[0]` for nested fields).
    pub field: String,
    /// What is wrong with it, in words the agent can turn into a question.
    pub reason: String,
}

/// How an upstream call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// No answer in time.
    Timeout,
    /// No connection could be made.
    Connect,
    /// The upstream answered 5xx.
    ServerError,
    /// The upstream answered 429 (see [`UpstreamError::retry_after_ms`]).
    RateLimited,
    /// The upstream answered another 4xx: a retry will not help.
    ClientError,
    /// The upstream answered something unusable (bad JSON, too large, broken connection).
    Protocol,
}

/// An upstream failure with what the error policy needs to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    /// The class of failure.
    pub kind: UpstreamKind,
    /// The HTTP status, when there was one.
    pub status: Option<u16>,
    /// The upstream's Retry-After, in milliseconds, when it sent one.
    pub retry_after_ms: Option<u64>,
    /// A sentence for logs and operators; must never hold a secret.
    pub message: String,
}

impl ActionError {
    /// One invalid input `field`, with the `reason` in words the agent can ask the user about.
    pub fn invalid_input(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput(vec![FieldError {
            field: field.into(),
            reason: reason.into(),
        }])
    }

    /// Several invalid inputs at once, as `(field, reason)` pairs.
    pub fn invalid_inputs<F, R>(fields: impl IntoIterator<Item = (F, R)>) -> Self
    where
        F: Into<String>,
        R: Into<String>,
    {
        Self::InvalidInput(
            fields
                .into_iter()
                .map(|(field, reason)| FieldError {
                    field: field.into(),
                    reason: reason.into(),
                })
                .collect(),
        )
    }

    /// The thing asked for does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// An upstream failure. Usually made for you by
    /// [`Response::error_for_status`](crate::http::Response::error_for_status) or by `?` on an
    /// [`http::Error`](crate::http::Error).
    pub fn upstream(
        kind: UpstreamKind,
        status: Option<u16>,
        retry_after_ms: Option<u64>,
        message: impl Into<String>,
    ) -> Self {
        Self::Upstream(UpstreamError {
            kind,
            status,
            retry_after_ms,
            message: message.into(),
        })
    }

    /// A bug or an unexpected state in the plugin.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// A refusal by policy, with the host's `code` (e.g. `host-not-allowed`).
    pub fn denied(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Denied {
            code: code.into(),
            message: message.into(),
        }
    }

    /// Whether this is the dry-run marker rather than a failure.
    pub fn is_dry_run(&self) -> bool {
        matches!(self, Self::DryRun)
    }

    /// The WIT `action-error` for this error; `None` for [`ActionError::DryRun`], which is not
    /// an error on the wire.
    pub fn to_wit(&self) -> Option<wit::ActionError> {
        Some(match self {
            Self::InvalidInput(fields) => wit::ActionError::InvalidInput(
                fields
                    .iter()
                    .map(|f| wit::FieldError {
                        field: f.field.clone(),
                        reason: f.reason.clone(),
                    })
                    .collect(),
            ),
            Self::NotFound(m) => wit::ActionError::NotFound(m.clone()),
            Self::Upstream(u) => wit::ActionError::Upstream(wit::UpstreamError {
                kind: u.kind.to_wit(),
                status: u.status,
                retry_after_ms: u.retry_after_ms,
                message: u.message.clone(),
            }),
            Self::Denied { code, message } => wit::ActionError::Denied(Denial {
                code: code.clone(),
                message: message.clone(),
            }),
            Self::Internal(m) => wit::ActionError::Internal(m.clone()),
            Self::DryRun => return None,
        })
    }
}

impl UpstreamKind {
    fn to_wit(self) -> wit::UpstreamKind {
        match self {
            Self::Timeout => wit::UpstreamKind::Timeout,
            Self::Connect => wit::UpstreamKind::Connect,
            Self::ServerError => wit::UpstreamKind::ServerError,
            Self::RateLimited => wit::UpstreamKind::RateLimited,
            Self::ClientError => wit::UpstreamKind::ClientError,
            Self::Protocol => wit::UpstreamKind::Protocol,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::ServerError => "server-error",
            Self::RateLimited => "rate-limited",
            Self::ClientError => "client-error",
            Self::Protocol => "protocol",
        }
    }
}

impl fmt::Display for UpstreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput(fields) => {
                f.write_str("invalid input")?;
                for (i, e) in fields.iter().enumerate() {
                    let sep = if i == 0 { ": " } else { "; " };
                    write!(f, "{sep}{} {}", e.field, e.reason)?;
                }
                Ok(())
            }
            Self::NotFound(m) => write!(f, "not found: {m}"),
            Self::Upstream(u) => {
                write!(f, "upstream {}", u.kind)?;
                if let Some(s) = u.status {
                    write!(f, " (status {s})")?;
                }
                if let Some(ms) = u.retry_after_ms {
                    write!(f, " (retry after {ms} ms)")?;
                }
                write!(f, ": {}", u.message)
            }
            Self::Denied { code, message } => write!(f, "denied ({code}): {message}"),
            Self::Internal(m) => write!(f, "internal error: {m}"),
            Self::DryRun => f.write_str("dry run: the request was recorded by the host, not sent"),
        }
    }
}

impl std::error::Error for ActionError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_converts_to_its_wit_variant_except_dry_run() {
        let cases: Vec<(ActionError, Option<wit::ActionError>)> = vec![
            (
                ActionError::invalid_inputs(vec![("a", "is required"), ("b", "is too long")]),
                Some(wit::ActionError::InvalidInput(vec![
                    wit::FieldError {
                        field: "a".into(),
                        reason: "is required".into(),
                    },
                    wit::FieldError {
                        field: "b".into(),
                        reason: "is too long".into(),
                    },
                ])),
            ),
            (
                ActionError::not_found("no order 1"),
                Some(wit::ActionError::NotFound("no order 1".into())),
            ),
            (
                ActionError::upstream(UpstreamKind::RateLimited, Some(429), Some(2000), "slow"),
                Some(wit::ActionError::Upstream(wit::UpstreamError {
                    kind: wit::UpstreamKind::RateLimited,
                    status: Some(429),
                    retry_after_ms: Some(2000),
                    message: "slow".into(),
                })),
            ),
            (
                ActionError::denied("host-not-allowed", "grant it"),
                Some(wit::ActionError::Denied(Denial {
                    code: "host-not-allowed".into(),
                    message: "grant it".into(),
                })),
            ),
            (
                ActionError::internal("bug"),
                Some(wit::ActionError::Internal("bug".into())),
            ),
            (ActionError::DryRun, None),
        ];
        for (error, expected) in cases {
            assert_eq!(
                format!("{:?}", error.to_wit()),
                format!("{expected:?}"),
                "{error}"
            );
        }
    }

    #[test]
    fn display_reads_as_a_sentence_with_every_detail() {
        let cases = [
            (
                ActionError::invalid_inputs(vec![("a", "is required"), ("b", "is too long")]),
                "invalid input: a is required; b is too long",
            ),
            (
                ActionError::not_found("no order 7"),
                "not found: no order 7",
            ),
            (
                ActionError::upstream(UpstreamKind::RateLimited, Some(429), Some(1000), "slow"),
                "upstream rate-limited (status 429) (retry after 1000 ms): slow",
            ),
            (
                ActionError::upstream(UpstreamKind::Timeout, None, None, "no answer"),
                "upstream timeout: no answer",
            ),
            (
                ActionError::denied("path-not-allowed", "grant /v2"),
                "denied (path-not-allowed): grant /v2",
            ),
            (ActionError::internal("oops"), "internal error: oops"),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
