//! The operator's grants, checked: what an action's outbound request may reach.
//!
//! Everything here is pure (no I/O) so it can be tested exhaustively. The manifest layer turns
//! `action.toml` and the command line into an [`AllowList`], a [`DevLoopback`] and
//! [`SecretBinding`]s; before each request the host parses the URL into a [`Target`], checks every
//! header with [`check_header`] and asks [`AllowList::check`], which answers with a [`Decision`]:
//! either allowed, with the [`Route`] that says whether the dev-loopback exception was needed, or
//! a [`Denial`] whose code matches the `denial` record of `wit/outbound-http.wit`.

pub mod allow;
pub mod headers;
pub mod ip;
pub mod secrets;

use std::fmt;
use std::str::FromStr;

pub use allow::{
    AllowEntry, AllowList, DevLoopback, DevLoopbackEntry, HostPattern, Target, TargetError,
    TargetHost,
};
pub use headers::check_header;
pub use ip::{is_blocked, is_loopback};
pub use secrets::{SecretBinding, check_secrets, mask_values, placeholders, redact, render};

/// Why the host refused a request: a stable machine-readable code plus a sentence for people.
///
/// It mirrors the WIT `denial` record so the host can hand it to the plugin unchanged. The
/// message says what was refused and which grant would allow it; it never holds a secret value
/// or a URL query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// One of the `Denial::*` code constants, e.g. `host-not-allowed`.
    pub code: &'static str,
    /// What was refused and how to grant it, in lower case, without secrets or URL queries.
    pub message: String,
}

impl Denial {
    /// The URL's scheme is neither `http` nor `https`.
    pub const SCHEME_NOT_ALLOWED: &'static str = "scheme-not-allowed";
    /// No `http.allow` entry covers the URL's scheme, host and port.
    pub const HOST_NOT_ALLOWED: &'static str = "host-not-allowed";
    /// The origin is granted but not under any of its granted path prefixes.
    pub const PATH_NOT_ALLOWED: &'static str = "path-not-allowed";
    /// The URL is granted but not for this HTTP method.
    pub const METHOD_NOT_ALLOWED: &'static str = "method-not-allowed";
    /// The destination is a loopback, private or otherwise non-public address.
    pub const BLOCKED_NETWORK: &'static str = "blocked-network";
    /// A `{{secret.NAME}}` placeholder names a secret the action does not declare.
    pub const SECRET_UNKNOWN: &'static str = "secret-unknown";
    /// A declared secret is not bound to the request's destination.
    pub const SECRET_NOT_ALLOWED: &'static str = "secret-not-allowed";
    /// A header name or value is malformed or one the host controls itself.
    pub const BAD_HEADER: &'static str = "bad-header";

    /// Builds a denial from a code constant and a message.
    ///
    /// Use the `Denial::*` constants for `code` so codes stay stable for plugins.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Denial {}

/// An HTTP method a plugin may ask for, the same set as the WIT `method` enum.
///
/// CONNECT and TRACE are absent on purpose: they tunnel or echo and no action needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// `GET`, the default grant when an entry and `http.methods` name none.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
}

impl Method {
    /// Every method, in the order used when listing them in messages.
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
    ];

    /// The method's name in upper case, as sent on the wire (`"GET"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }

    /// Whether repeating the request has the same effect as sending it once (RFC 9110 9.2.2).
    ///
    /// True for GET, HEAD, PUT, DELETE and OPTIONS; callers use it to decide whether a retry is
    /// safe. POST and PATCH are not idempotent.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get | Method::Head | Method::Put | Method::Delete | Method::Options
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = String;

    /// Parses a method name case-insensitively (`"post"` is `Post`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let valid: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown HTTP method {s:?}; use one of {}", valid.join(", "))
            })
    }
}

/// How an allowed request may reach its destination.
///
/// The host sends every request through one client; this tells callers (and the tests and the
/// fuzz target, which assert it) whether the operator's `--dev-loopback` exception was what let a
/// request through. The policy has already checked the host:port pair; the client's resolver then
/// answers the dev-loopback names with loopback addresses only, and every other name with global
/// addresses only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The ordinary case: only addresses [`ip::is_blocked`] does not refuse may be reached.
    Guarded,
    /// The request matches a `--dev-loopback host:port` entry and may go to loopback.
    DevLoopback,
}

/// The answer of [`AllowList::check`] for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The request is granted, by way of this route.
    Allow(Route),
    /// The request is refused and must not leave the host.
    Deny(Denial),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_case_insensitively_and_print_upper_case() {
        let cases = [
            ("get", Method::Get),
            ("GET", Method::Get),
            ("Head", Method::Head),
            ("post", Method::Post),
            ("PuT", Method::Put),
            ("patch", Method::Patch),
            ("DELETE", Method::Delete),
            ("options", Method::Options),
        ];
        for (text, want) in cases {
            let got: Method = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text.to_ascii_uppercase());
        }
    }

    #[test]
    fn unknown_methods_are_refused_with_the_valid_list() {
        for text in ["CONNECT", "TRACE", "", "GETS", " get"] {
            let err = text.parse::<Method>().unwrap_err();
            assert!(err.contains(&format!("{text:?}")), "{err}");
            assert!(
                err.contains("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                "{err}"
            );
        }
    }

    #[test]
    fn only_post_and_patch_are_not_idempotent() {
        let cases = [
            (Method::Get, true),
            (Method::Head, true),
            (Method::Post, false),
            (Method::Put, true),
            (Method::Patch, false),
            (Method::Delete, true),
            (Method::Options, true),
        ];
        for (method, want) in cases {
            assert_eq!(method.is_idempotent(), want, "{method}");
        }
    }

    #[test]
    fn denial_displays_code_then_message() {
        let denial = Denial::new(Denial::BAD_HEADER, "header \"host\" is set by the host");
        assert_eq!(
            denial.to_string(),
            "bad-header: header \"host\" is set by the host"
        );
    }
}
