//! The allowlist: which scheme, host, port, path prefix and method an action may request.
//!
//! Nothing is allowed until the operator grants it in `action.toml`:
//!
//! ```toml
//! [http]
//! methods = ["GET"]                       # default for entries without their own
//! allow = [
//!     "https://api.example.com/v1/orders/",
//!     { url = "https://hooks.example.com", methods = ["POST"] },
//! ]
//! ```
//!
//! The manifest layer deserializes that and calls [`AllowEntry::parse`] per entry. Request URLs
//! are parsed into a [`Target`] with the same normalisation as the grants (dot-segments,
//! percent-encoding), then [`AllowList::check`] decides. `--dev-loopback host:port` entries
//! ([`DevLoopback`]) lift the network block for granted loopback destinations and grant nothing.

use std::fmt;
use std::net::IpAddr;

use url::{Host, Url};

use super::{Decision, Denial, Method, Route, ip};

/// The fix given when a grant uses a bare `*`.
const INSECURE: &str = "list each origin the action needs, e.g. \"https://api.example.com\"; \
    only the exact entry \"*://*:*\" can grant everything, and only when the operator sets \
    http.insecure_allow_any_host = true in callout.toml";

/// The one entry that grants any scheme, host and port, behind the operator's insecure flag.
pub const ANY_HOST: &str = "*://*:*";

/// Longest piece of a user-supplied URL quoted in a message, in characters.
const QUOTE_LIMIT: usize = 120;

/// Which hosts an allowlist entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// One domain name: lower case, IDNA ASCII form, no trailing dot.
    Exact(String),
    /// One IP address literal, matched exactly (`127.0.0.1` does not cover `::ffff:127.0.0.1`).
    Ip(IpAddr),
    /// Every subdomain of this domain at any depth, not the domain itself: `*.example.com` is
    /// stored as `example.com` and covers `a.example.com` and `a.b.example.com`.
    Subdomains(String),
    /// Any host (only in the [`ANY_HOST`] entry, behind the operator's insecure flag). The
    /// blocked-network guard still applies.
    Any,
}

impl HostPattern {
    /// Whether this pattern covers `host`.
    pub fn matches(&self, host: &TargetHost) -> bool {
        match (self, host) {
            (HostPattern::Exact(want), TargetHost::Domain(got)) => want == got,
            (HostPattern::Ip(want), TargetHost::Ip(got)) => want == got,
            (HostPattern::Any, _) => true,
            (HostPattern::Subdomains(parent), TargetHost::Domain(got)) => got
                .strip_suffix(parent.as_str())
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            _ => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(domain) => f.write_str(domain),
            HostPattern::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            HostPattern::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            HostPattern::Subdomains(parent) => write!(f, "*.{parent}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

/// One parsed `http.allow` grant: scheme, host pattern, port, optional path prefix and methods.
///
/// Built only through [`AllowEntry::parse`], so every entry is valid and normalised the same way
/// as request URLs; the fields are read through accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    scheme: String,
    host: HostPattern,
    /// Sorted, without duplicates; empty only in the [`ANY_HOST`] entry (any port).
    ports: Vec<u16>,
    path_prefix: Option<String>,
    methods: Vec<Method>,
}

impl AllowEntry {
    /// Parses one grant `scheme://host[:port][/path/prefix]` with the methods it allows.
    ///
    /// `methods` is the entry's own list, or `http.methods` (default `["GET"]`) when the entry
    /// has none; it must not be empty. The scheme is required and must be `http` or `https`; the
    /// port defaults to 80 or 443. `*.example.com` covers subdomains only (not `example.com`
    /// itself) and needs at least two labels after the `*.`. A bare `*` host, scheme or port
    /// would need an explicit insecure flag, which does not exist yet, so it is refused, as are
    /// userinfo, queries and fragments. IP literals are allowed (IPv6 in brackets). A path of `/`
    /// or nothing means the whole origin; otherwise it is a segment-aware prefix, normalised like
    /// request paths. The error is a sentence quoting `spec` and saying how to fix it.
    pub fn parse(spec: &str, methods: &[Method]) -> Result<AllowEntry, String> {
        Self::parse_with(spec, methods, false)
    }

    /// Like [`AllowEntry::parse`], and when `allow_any_host` is true (the operator's
    /// `http.insecure_allow_any_host`) also accepts the exact entry [`ANY_HOST`], `*://*:*`:
    /// http and https to any host and port. The blocked-network guard still applies to it.
    /// Ports may be listed: `https://api.example.com:443,8443`.
    pub fn parse_with(
        spec: &str,
        methods: &[Method],
        allow_any_host: bool,
    ) -> Result<AllowEntry, String> {
        let spec = spec.trim();
        if spec == ANY_HOST && allow_any_host && !methods.is_empty() {
            let mut methods = methods.to_vec();
            methods.sort_unstable();
            methods.dedup();
            return Ok(AllowEntry {
                scheme: "*".into(),
                host: HostPattern::Any,
                ports: Vec::new(),
                path_prefix: None,
                methods,
            });
        }
        if spec == "*" {
            return Err(format!("{spec:?} grants any host; {INSECURE}"));
        }
        if spec.is_empty() {
            return Err(
                "an http.allow entry is empty; write a URL such as \"https://api.example.com\""
                    .into(),
            );
        }
        if spec.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{spec:?} contains whitespace or a control character; remove it (percent-encode \
                 a space in a path as %20)"
            ));
        }
        if methods.is_empty() {
            return Err(format!(
                "{spec:?} has an empty methods list; list at least one, e.g. methods = [\"GET\"]"
            ));
        }
        let Some((scheme, rest)) = spec.split_once("://") else {
            let bare = spec.trim_start_matches('/');
            let bare = match bare.split_once(':') {
                Some((scheme, tail))
                    if scheme.eq_ignore_ascii_case("http")
                        || scheme.eq_ignore_ascii_case("https") =>
                {
                    tail.trim_start_matches('/')
                }
                _ => bare,
            };
            return Err(format!("{spec:?} has no scheme; write \"https://{bare}\""));
        };
        if let Some(at) = rest.find(['?', '#']) {
            let what = if rest[at..].starts_with('?') {
                "a query"
            } else {
                "a fragment"
            };
            let cut = &spec[..spec.len() - rest.len() + at];
            return Err(format!(
                "{spec:?} has {what}; a grant covers scheme, host, port and path prefix only, \
                 so write \"{cut}\""
            ));
        }
        if rest.contains('\\') {
            return Err(format!(
                "{spec:?} contains a backslash; separate path segments with \"/\""
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        if let Some((_, host_port)) = authority.rsplit_once('@') {
            // Quote the entry with the credentials masked: they must not reach logs.
            return Err(format!(
                "\"{scheme}://***@{host_port}{path}\" holds a user name or password; a grant \
                 names a host only, so write \"{scheme}://{host_port}{path}\" and put credentials \
                 in [secrets]"
            ));
        }
        let (host, port) = split_host_port(spec, authority)?;
        if let Some(star) = path.find('*') {
            return Err(format!(
                "{spec:?} has a \"*\" in its path; a path is already a prefix, so write \"{}\"",
                &spec[..spec.len() - path.len() + star]
            ));
        }

        let wildcard_part = if scheme == "*" {
            Some("scheme")
        } else if host == "*" {
            Some("host")
        } else if port == Some("*") {
            Some("port")
        } else {
            None
        };
        if let Some(part) = wildcard_part {
            return Err(format!("{spec:?} grants any {part}; {INSECURE}"));
        }

        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => {
                return Err(format!(
                    "{spec:?} uses scheme {scheme:?}; only http and https can be granted, e.g. \
                     \"https://{rest}\""
                ));
            }
        };
        if host.is_empty() {
            return Err(format!(
                "{spec:?} has no host; write one, e.g. \"{scheme}://api.example.com\""
            ));
        }
        let (wildcard, host_body) = match host.strip_prefix("*.") {
            Some(parent) => (true, parent),
            None => (false, host),
        };
        if host_body.contains('*') {
            return Err(format!(
                "{spec:?} has a \"*\" inside the host; only a leading \"*.\" is supported, as in \
                 \"{scheme}://*.example.com\""
            ));
        }
        let mut ports = match port {
            None => vec![default_port],
            Some("") => {
                return Err(format!(
                    "{spec:?} has an empty port; drop the \":\" or give a port number"
                ));
            }
            Some(text) => text
                .split(',')
                .map(|one| {
                    parse_port(one).ok_or_else(|| {
                        format!(
                            "{spec:?} has port {one:?}; a port is a number from 1 to 65535, and \
                             several are separated by commas, as in \":443,8443\""
                        )
                    })
                })
                .collect::<Result<Vec<u16>, String>>()?,
        };
        ports.sort_unstable();
        ports.dedup();
        let port = ports[0];

        let url = Url::parse(&format!("{scheme}://{host_body}:{port}{path}")).map_err(|e| {
            format!(
                "{spec:?} is not a valid URL ({e}); write scheme://host[:port][/path/prefix], \
                 e.g. \"https://api.example.com/v1/\""
            )
        })?;
        let host = match url.host() {
            Some(Host::Domain(domain)) => {
                let domain = canonical_domain(domain).ok_or_else(|| {
                    format!("{spec:?} has an empty label in its host name; remove the extra \".\"")
                })?;
                if !wildcard {
                    HostPattern::Exact(domain)
                } else if domain.contains('.') {
                    HostPattern::Subdomains(domain)
                } else {
                    return Err(format!(
                        "{spec:?} covers every name under the top-level domain {domain:?}; name \
                         a registered domain instead, e.g. \"{scheme}://*.example.{domain}\""
                    ));
                }
            }
            Some(Host::Ipv4(v4)) if !wildcard => HostPattern::Ip(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) if !wildcard => HostPattern::Ip(IpAddr::V6(v6)),
            Some(_) => {
                return Err(format!(
                    "{spec:?} puts \"*.\" before an IP address; grant the address itself, e.g. \
                     \"{scheme}://{host_body}\""
                ));
            }
            None => {
                return Err(format!(
                    "{spec:?} has no host; write one, e.g. \"{scheme}://api.example.com\""
                ));
            }
        };
        let path = normalize_path(url.path());
        check_hidden_dot_segments(&path).map_err(|why| format!("{spec:?}: {why}"))?;
        let path_prefix = (path != "/" && !path.is_empty()).then_some(path);

        let mut methods = methods.to_vec();
        methods.sort_unstable();
        methods.dedup();
        Ok(AllowEntry {
            scheme,
            host,
            ports,
            path_prefix,
            methods,
        })
    }

    /// The scheme, `http` or `https`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host pattern.
    pub fn host(&self) -> &HostPattern {
        &self.host
    }

    /// The ports, explicit or the scheme's default; empty means any (the [`ANY_HOST`] entry).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    fn ports_text(&self) -> String {
        if self.ports.is_empty() {
            return "*".into();
        }
        self.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The normalised path prefix, or `None` when the entry covers every path of its origin.
    pub fn path_prefix(&self) -> Option<&str> {
        self.path_prefix.as_deref()
    }

    /// The methods granted, deduplicated, in [`Method::ALL`] order.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// The entry's origin with an explicit port, e.g. `https://api.example.com:443`.
    ///
    /// Used in messages and when printing grants, where an explicit port avoids ambiguity.
    pub fn origin(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.ports_text())
    }

    /// The entry as it would be written in `http.allow`: default port omitted, prefix kept.
    pub fn spec(&self) -> String {
        format!(
            "{}{}",
            match self.ports.as_slice() {
                [one] => short_origin(&self.scheme, &self.host.to_string(), *one),
                _ => format!("{}://{}:{}", self.scheme, self.host, self.ports_text()),
            },
            self.path_prefix.as_deref().unwrap_or("")
        )
    }

    /// Whether the target's scheme, host and port are covered (the path is not looked at).
    pub fn matches_origin(&self, target: &Target) -> bool {
        (self.scheme == target.scheme || self.scheme == "*")
            && (self.ports.is_empty() || self.ports.contains(&target.port))
            && self.host.matches(&target.host)
    }

    /// Whether the target's path lies under this entry's prefix, segment-aware.
    ///
    /// A prefix ending in `/` covers what starts with it (`/v1/orders/` covers `/v1/orders/123`
    /// but not `/v1/orders`); any other prefix covers itself and what lies below it
    /// (`/v1/orders` covers `/v1/orders` and `/v1/orders/x`, not `/v1/ordersX`). An encoded
    /// slash `%2F` is an ordinary character here, so it cannot stand in for a segment boundary.
    pub fn matches_path(&self, target: &Target) -> bool {
        match &self.path_prefix {
            None => true,
            Some(prefix) if prefix.ends_with('/') => target.path.starts_with(prefix.as_str()),
            Some(prefix) => target
                .path
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }

    /// Whether the target's scheme, host, port and path are all covered; methods are ignored.
    pub fn covers(&self, target: &Target) -> bool {
        self.matches_origin(target) && self.matches_path(target)
    }

    /// Whether this entry grants `method`.
    pub fn allows_method(&self, method: Method) -> bool {
        self.methods.contains(&method)
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} [{}]",
            self.origin(),
            self.path_prefix.as_deref().unwrap_or(""),
            method_list(&self.methods)
        )
    }
}

/// The host of a request URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetHost {
    /// A domain name: lower case, IDNA ASCII form, one trailing dot removed.
    Domain(String),
    /// An IP address literal (IPv4 forms such as `0x7f.1` are already decoded).
    Ip(IpAddr),
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Domain(domain) => f.write_str(domain),
            TargetHost::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            TargetHost::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
        }
    }
}

/// Why a request URL could not become a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// The URL is malformed: unparseable, relative, with userinfo, without a host, or with a
    /// dot-segment hidden behind an encoded slash. Maps to the WIT `invalid-request`.
    Invalid(String),
    /// The URL is well-formed but can never be granted (scheme other than http or https).
    Denied(Denial),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Invalid(why) => f.write_str(why),
            TargetError::Denied(denial) => denial.fmt(f),
        }
    }
}

impl std::error::Error for TargetError {}

/// A request URL, parsed and normalised the same way as the grants it is checked against.
///
/// Send [`Target::url`], not the plugin's original string, so the request that leaves the host is
/// exactly the one that was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: String,
    /// The host, normalised.
    pub host: TargetHost,
    /// The port, explicit or the scheme's default.
    pub port: u16,
    /// The normalised path (dot-segments resolved, percent-encoding normalised), without query.
    pub path: String,
    /// The URL to send: normalised path, query kept, fragment removed.
    pub url: Url,
}

impl Target {
    /// Parses and normalises an absolute request URL.
    ///
    /// The `url` crate resolves dot-segments (including `%2e%2e`) and turns `\` into `/` as
    /// browsers do; percent-escapes of unreserved characters are then decoded, other escapes
    /// upper-cased and a stray `%` encoded as `%25`. `%2F` stays opaque. A path that hides a
    /// `.`/`..` segment behind `%2F`, `%5C` or a `;` parameter is refused, since servers disagree
    /// on such paths. Schemes other than http and https are [`TargetError::Denied`]
    /// (`scheme-not-allowed`); everything else wrong is [`TargetError::Invalid`].
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let shown = quotable(url);
        let mut parsed = Url::parse(url).map_err(|e| {
            TargetError::Invalid(match e {
                url::ParseError::RelativeUrlWithoutBase => format!(
                    "{shown:?} is not an absolute URL; write the whole URL, e.g. \
                     \"https://api.example.com/v1/orders\""
                ),
                e => {
                    format!("{shown:?} is not a valid URL ({e}); write it as \"https://host/path\"")
                }
            })
        })?;
        let scheme = parsed.scheme().to_string();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => {
                return Err(TargetError::Denied(Denial::new(
                    Denial::SCHEME_NOT_ALLOWED,
                    format!(
                        "scheme {scheme:?} is not allowed; only http and https URLs can be \
                         requested, and only those granted in http.allow"
                    ),
                )));
            }
        };
        let host = match parsed.host() {
            Some(Host::Domain(domain)) => {
                TargetHost::Domain(canonical_domain(domain).ok_or_else(|| {
                    TargetError::Invalid(format!(
                        "{shown:?} has an empty label in its host name; remove the extra \".\""
                    ))
                })?)
            }
            Some(Host::Ipv4(v4)) => TargetHost::Ip(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => TargetHost::Ip(IpAddr::V6(v6)),
            None => {
                return Err(TargetError::Invalid(format!(
                    "{shown:?} has no host; write one, e.g. \"https://api.example.com/\""
                )));
            }
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            // Never quote the URL here: it holds a password.
            return Err(TargetError::Invalid(format!(
                "the URL for {scheme}://{host} holds a user name or password; remove it and send \
                 credentials in a header instead, e.g. \"Authorization: Bearer \
                 {{{{secret.NAME}}}}\""
            )));
        }
        let port = parsed.port_or_known_default().unwrap_or(default_port);
        let path = normalize_path(parsed.path());
        parsed.set_path(&path);
        parsed.set_fragment(None);
        let path = parsed.path().to_string();
        check_hidden_dot_segments(&path).map_err(|why| {
            TargetError::Invalid(format!("{scheme}://{host}:{port}{path}: {why}"))
        })?;
        Ok(Target {
            scheme,
            host,
            port,
            path,
            url: parsed,
        })
    }

    /// The target's origin with an explicit port, e.g. `https://api.example.com:443`.
    pub fn origin(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }

    /// `scheme://host:port/path` without query or fragment, safe for logs and messages.
    ///
    /// Queries often carry tokens, so they are never shown.
    pub fn redacted(&self) -> String {
        format!("{}{}", self.origin(), self.path)
    }
}

/// One `--dev-loopback` entry: a loopback host and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DevLoopbackEntry {
    /// `localhost`, or a loopback IP literal (`127.x.x.x`, `::1`).
    pub host: TargetHost,
    /// The port that may be reached.
    pub port: u16,
}

impl fmt::Display for DevLoopbackEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The operator's `--dev-loopback` exceptions: loopback `host:port` pairs a granted request may
/// reach during local development.
///
/// Empty by default, which keeps loopback blocked. An entry lifts only the network block for that
/// exact host and port; the request still needs an `http.allow` grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevLoopback {
    entries: Vec<DevLoopbackEntry>,
}

impl DevLoopback {
    /// Parses a comma-separated list such as `"127.0.0.1:8080,localhost:9000,[::1]:7000"`.
    ///
    /// Each entry is `host:port` where the host is `localhost` or a loopback IP literal (IPv6 in
    /// brackets). Blank items are skipped and duplicates dropped; an empty list is valid. The
    /// error names the offending entry and the fix.
    pub fn parse(list: &str) -> Result<DevLoopback, String> {
        let mut dev = DevLoopback::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let entry = parse_dev_entry(item)?;
            if !dev.entries.contains(&entry) {
                dev.entries.push(entry);
            }
        }
        Ok(dev)
    }

    /// Parses repeated `--dev-loopback` flags; each may itself be a comma-separated list.
    pub fn from_entries(entries: &[String]) -> Result<DevLoopback, String> {
        DevLoopback::parse(&entries.join(","))
    }

    /// Whether a request to `host` and `port` may go to loopback; hosts compare exactly.
    pub fn allows(&self, host: &TargetHost, port: u16) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.port == port && entry.host == *host)
    }

    /// Whether there are no entries, the normal case outside development.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in the order given, for printing a startup banner.
    pub fn entries(&self) -> &[DevLoopbackEntry] {
        &self.entries
    }

    /// The host names among the entries (`localhost`), deduplicated, for the dev resolver.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for entry in &self.entries {
            if let TargetHost::Domain(name) = &entry.host
                && !names.contains(name)
            {
                names.push(name.clone());
            }
        }
        names
    }
}

/// The action's grants, in `http.allow` order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<AllowEntry>,
}

impl AllowList {
    /// Wraps parsed entries; an empty list grants nothing.
    pub fn new(entries: Vec<AllowEntry>) -> Self {
        Self { entries }
    }

    /// The entries, for printing the grants.
    pub fn entries(&self) -> &[AllowEntry] {
        &self.entries
    }

    /// Decides whether `method` on `target` may be sent, and through which client.
    ///
    /// In order: some entry must match scheme, host and port (`host-not-allowed`), then the path
    /// prefix (`path-not-allowed`), then the method (`method-not-allowed`); finally the network:
    /// blocked IP literals and `localhost`/`*.localhost` are `blocked-network` unless `dev`
    /// allows that host and port, which routes the request to [`Route::DevLoopback`]. Other
    /// domains get [`Route::Guarded`], whose resolver filters the answers. A dev-loopback entry
    /// never stands in for a grant. Messages never include the URL query.
    pub fn check(&self, method: Method, target: &Target, dev: &DevLoopback) -> Decision {
        let at_origin: Vec<&AllowEntry> = self
            .entries
            .iter()
            .filter(|entry| entry.matches_origin(target))
            .collect();
        if at_origin.is_empty() {
            let spec = short_origin(&target.scheme, &target.host.to_string(), target.port);
            return Decision::Deny(Denial::new(
                Denial::HOST_NOT_ALLOWED,
                format!(
                    "{method} {} is not granted; add {} to http.allow in action.toml",
                    target.origin(),
                    suggestion(method, &spec)
                ),
            ));
        }

        let on_path: Vec<&AllowEntry> = at_origin
            .iter()
            .copied()
            .filter(|entry| entry.matches_path(target))
            .collect();
        if on_path.is_empty() {
            let prefixes: Vec<String> = at_origin
                .iter()
                .filter_map(|entry| entry.path_prefix())
                .map(|prefix| format!("{prefix:?}"))
                .collect();
            let spec = format!(
                "{}{}",
                short_origin(&target.scheme, &target.host.to_string(), target.port),
                target.path
            );
            return Decision::Deny(Denial::new(
                Denial::PATH_NOT_ALLOWED,
                format!(
                    "{method} {} is outside the paths granted for {} ({}); add {} to http.allow \
                     in action.toml",
                    target.redacted(),
                    target.origin(),
                    prefixes.join(", "),
                    suggestion(method, &spec)
                ),
            ));
        }

        if !on_path.iter().any(|entry| entry.allows_method(method)) {
            let mut allowed: Vec<Method> = on_path
                .iter()
                .flat_map(|entry| entry.methods().iter().copied())
                .collect();
            allowed.sort_unstable();
            allowed.dedup();
            // Name the most specific entry: that is where the method most likely belongs.
            let closest = on_path
                .iter()
                .max_by_key(|entry| entry.path_prefix().map_or(0, str::len))
                .map(|entry| entry.spec())
                .unwrap_or_default();
            return Decision::Deny(Denial::new(
                Denial::METHOD_NOT_ALLOWED,
                format!(
                    "{method} {} is not granted, only {}; add \"{method}\" to the methods of the \
                     {closest:?} entry in http.allow (or to http.methods for entries without \
                     their own) in action.toml",
                    target.redacted(),
                    method_list(&allowed)
                ),
            ));
        }

        if dev.allows(&target.host, target.port) {
            return Decision::Allow(Route::DevLoopback);
        }
        let blocked = match &target.host {
            TargetHost::Ip(addr) => ip::is_blocked(*addr),
            TargetHost::Domain(name) => is_localhost_name(name),
        };
        if !blocked {
            return Decision::Allow(Route::Guarded);
        }
        let loopback = match &target.host {
            TargetHost::Ip(addr) => ip::is_loopback(*addr),
            TargetHost::Domain(_) => true,
        };
        let fix = match &target.host {
            _ if !loopback => "point the action at a public address instead".to_string(),
            TargetHost::Domain(name) if name != "localhost" => {
                let localhost = TargetHost::Domain("localhost".into());
                format!(
                    "for local development, grant and use {:?} instead of {name:?} and run \
                     callout with --dev-loopback localhost:{}",
                    short_origin(&target.scheme, &localhost.to_string(), target.port),
                    target.port
                )
            }
            host => format!(
                "for local development, run callout with --dev-loopback {}",
                DevLoopbackEntry {
                    host: host.clone(),
                    port: target.port
                }
            ),
        };
        Decision::Deny(Denial::new(
            Denial::BLOCKED_NETWORK,
            format!(
                "{method} {} goes to a loopback, private or otherwise non-public address, which \
                 actions may not reach; {fix}",
                target.origin()
            ),
        ))
    }
}

/// Normalises a URL path: decodes escapes of unreserved characters, upper-cases the other
/// escapes and encodes a `%` that starts no escape as `%25` (so decoding cannot create one).
fn normalize_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'%' {
            out.push(byte);
            i += 1;
            continue;
        }
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| Some((hex_value(hex[0])? << 4) | hex_value(hex[1])?));
        match escaped {
            Some(value) if is_unreserved(value) => {
                out.push(value);
                i += 3;
            }
            Some(value) => {
                out.extend_from_slice(format!("%{value:02X}").as_bytes());
                i += 3;
            }
            None => {
                out.extend_from_slice(b"%25");
                i += 1;
            }
        }
    }
    // Only ASCII bytes were changed, so the input's UTF-8 is intact.
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Refuses a path where `.` or `..` would appear if a server decoded `%2F`/`%5C` into a
/// separator or dropped `;` parameters (as some servlet containers do).
fn check_hidden_dot_segments(path: &str) -> Result<(), String> {
    let mut split = path.to_string();
    for sep in ["%2F", "%2f", "%5C", "%5c"] {
        split = split.replace(sep, "/");
    }
    let hidden = split.split('/').any(|segment| {
        let core = segment.split(';').next().unwrap_or("");
        let core = core.split("%3B").next().unwrap_or("");
        let core = core.split("%3b").next().unwrap_or("");
        core == "." || core == ".."
    });
    if hidden {
        Err(
            "the path hides a \".\" or \"..\" segment behind an encoded slash, an encoded \
             backslash or a \";\" parameter; servers resolve such paths differently, so remove it"
                .into(),
        )
    } else {
        Ok(())
    }
}

/// Lower-cases a domain and removes one trailing dot; `None` if a label would be empty.
fn canonical_domain(domain: &str) -> Option<String> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() || domain.split('.').any(str::is_empty) {
        return None;
    }
    Some(domain.to_ascii_lowercase())
}

fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&port| port != 0)
}

/// Splits `host[:port]` or `[v6][:port]`; the host keeps its brackets.
fn split_host_port<'a>(
    spec: &str,
    authority: &'a str,
) -> Result<(&'a str, Option<&'a str>), String> {
    if authority.starts_with('[') {
        let Some(end) = authority.find(']') else {
            return Err(format!(
                "{spec:?} has an unclosed \"[\"; write an IPv6 address as \"[2001:db8::1]\""
            ));
        };
        let (host, tail) = authority.split_at(end + 1);
        return match tail.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if tail.is_empty() => Ok((host, None)),
            None => Err(format!(
                "{spec:?} has {tail:?} after the IPv6 address; write \"[address]:port\""
            )),
        };
    }
    match authority.split_once(':') {
        None => Ok((authority, None)),
        Some((host, port)) if !port.contains(':') => Ok((host, Some(port))),
        Some(_) => Err(format!(
            "{spec:?} has an IPv6 address without brackets; write it as \
             \"https://[2001:db8::1]:8443\""
        )),
    }
}

fn parse_dev_entry(item: &str) -> Result<DevLoopbackEntry, String> {
    let example = "e.g. \"127.0.0.1:8080\", \"[::1]:8080\" or \"localhost:8080\"";
    let (host, port, bracketed) = if let Some(rest) = item.strip_prefix('[') {
        let Some((host, tail)) = rest.split_once(']') else {
            return Err(format!(
                "--dev-loopback entry {item:?} has an unclosed \"[\"; write host:port, {example}"
            ));
        };
        (host, tail.strip_prefix(':'), true)
    } else {
        match item.rsplit_once(':') {
            Some((host, port)) => (host, Some(port), false),
            None => (item, None, false),
        }
    };
    let Some(port) = port else {
        return Err(format!(
            "--dev-loopback entry {item:?} has no port; write host:port, {example}"
        ));
    };
    let port = parse_port(port).ok_or_else(|| {
        format!("--dev-loopback entry {item:?} has port {port:?}; use a number from 1 to 65535")
    })?;
    if !bracketed && host.contains(':') {
        return Err(format!(
            "--dev-loopback entry {item:?} has an IPv6 address without brackets; write \
             \"[::1]:{port}\""
        ));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let host = if !bracketed && name.eq_ignore_ascii_case("localhost") {
        TargetHost::Domain("localhost".into())
    } else {
        match host.parse::<IpAddr>() {
            Ok(addr @ IpAddr::V6(_)) if bracketed && ip::is_loopback(addr) => TargetHost::Ip(addr),
            Ok(addr @ IpAddr::V4(_)) if !bracketed && ip::is_loopback(addr) => TargetHost::Ip(addr),
            _ => {
                return Err(format!(
                    "--dev-loopback entry {item:?} is not a loopback host; only localhost, \
                     127.x.x.x and [::1] can be opened, {example}"
                ));
            }
        }
    };
    Ok(DevLoopbackEntry { host, port })
}

/// `scheme://host` plus `:port` when it is not the scheme's default.
fn short_origin(scheme: &str, host: &str, port: u16) -> String {
    let default = matches!((scheme, port), ("https", 443) | ("http", 80));
    if default {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// How to write a grant for `spec` in `http.allow` so it allows `method`.
fn suggestion(method: Method, spec: &str) -> String {
    if method == Method::Get {
        format!("{spec:?}")
    } else {
        format!("{{ url = {spec:?}, methods = [\"{method}\"] }}")
    }
}

fn method_list(methods: &[Method]) -> String {
    methods
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A piece of a user-supplied URL safe to quote: no userinfo, no query or fragment, bounded.
fn quotable(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let mut text = url[..end].to_string();
    if let Some(scheme_end) = text.find("://") {
        let authority_start = scheme_end + 3;
        let authority_len = text[authority_start..]
            .find(['/', '\\'])
            .unwrap_or(text.len() - authority_start);
        if let Some(at) = text[authority_start..authority_start + authority_len].rfind('@') {
            text.replace_range(authority_start..=authority_start + at, "");
        }
    }
    if text.chars().count() > QUOTE_LIMIT {
        text = text.chars().take(QUOTE_LIMIT).collect::<String>() + "...";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use Method::{Delete, Get, Head, Post, Put};

    fn entry(spec: &str) -> AllowEntry {
        AllowEntry::parse(spec, &[Get]).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn domain(name: &str) -> TargetHost {
        TargetHost::Domain(name.into())
    }

    #[test]
    fn entries_parse_into_scheme_host_port_and_prefix() {
        #[rustfmt::skip]
        let cases = [
            ("https://api.example.com", "https://api.example.com:443 [GET]"),
            ("https://api.example.com/", "https://api.example.com:443 [GET]"),
            ("http://api.example.com", "http://api.example.com:80 [GET]"),
            ("HTTPS://API.Example.COM:8443", "https://api.example.com:8443 [GET]"),
            ("https://api.example.com.:443/v1", "https://api.example.com:443/v1 [GET]"),
            ("https://a.example/v1/orders/", "https://a.example:443/v1/orders/ [GET]"),
            ("https://a.example/v1/./x/../orders", "https://a.example:443/v1/orders [GET]"),
            ("https://a.example/v1/%7euser/%2f", "https://a.example:443/v1/~user/%2F [GET]"),
            ("https://*.example.com", "https://*.example.com:443 [GET]"),
            ("https://*.Example.co.uk/api", "https://*.example.co.uk:443/api [GET]"),
            ("https://bücher.example", "https://xn--bcher-kva.example:443 [GET]"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080 [GET]"),
            ("https://[2606:4700:4700::1111]/dns", "https://[2606:4700:4700::1111]:443/dns [GET]"),
            ("http://[::1]:9000", "http://[::1]:9000 [GET]"),
            ("http://localhost:3000", "http://localhost:3000 [GET]"),
            ("  https://api.example.com  ", "https://api.example.com:443 [GET]"),
        ];
        for (spec, want) in cases {
            assert_eq!(entry(spec).to_string(), want, "{spec}");
        }
    }

    #[test]
    fn entry_hosts_are_typed_as_name_wildcard_or_address() {
        #[rustfmt::skip]
        let cases = [
            ("https://api.example.com", HostPattern::Exact("api.example.com".into())),
            ("https://*.example.com", HostPattern::Subdomains("example.com".into())),
            ("https://93.184.216.34", HostPattern::Ip(ip("93.184.216.34"))),
            ("https://0x7f.1", HostPattern::Ip(ip("127.0.0.1"))),
            ("https://[::1]", HostPattern::Ip(ip("::1"))),
        ];
        for (spec, want) in cases {
            assert_eq!(entry(spec).host(), &want, "{spec}");
        }
    }

    #[test]
    fn malformed_entries_are_refused_with_a_quoted_fix() {
        #[rustfmt::skip]
        let cases = [
            ("orders.example.com", "write \"https://orders.example.com\""),
            ("orders.example.com:8080/v1", "write \"https://orders.example.com:8080/v1\""),
            ("//orders.example.com", "write \"https://orders.example.com\""),
            ("https:orders.example.com", "write \"https://orders.example.com\""),
            ("", "is empty"),
            ("ftp://files.example.com", "only http and https can be granted"),
            ("*", "http.insecure_allow_any_host"),
            ("https://*", "http.insecure_allow_any_host"),
            ("*://*:*", "http.insecure_allow_any_host"),
            ("*://api.example.com", "http.insecure_allow_any_host"),
            ("https://api.example.com:*", "http.insecure_allow_any_host"),
            ("https://api.*.com", "only a leading \"*.\""),
            ("https://*example.com", "only a leading \"*.\""),
            ("https://*.*.example.com", "only a leading \"*.\""),
            ("https://*.com", "top-level domain"),
            ("https://*.127.0.0.1", "before an IP address"),
            ("https://user:pw@api.example.com/v1", "write \"https://api.example.com/v1\""),
            ("https://token@api.example.com", "user name or password"),
            ("https://api.example.com/v1?key=1", "write \"https://api.example.com/v1\""),
            ("https://api.example.com/#top", "has a fragment"),
            ("https://api.example.com/v1/*", "write \"https://api.example.com/v1/\""),
            ("https://api.example.com:", "empty port"),
            ("https://api.example.com:0", "from 1 to 65535"),
            ("https://api.example.com:65536", "from 1 to 65535"),
            ("https://api.example.com:+443", "from 1 to 65535"),
            ("https://api.example.com:http", "from 1 to 65535"),
            ("https://2001:db8::1/", "without brackets"),
            ("https://[2001:db8::1/", "unclosed"),
            ("https://[2001:db8::1]x/", "after the IPv6 address"),
            ("https://", "has no host"),
            ("https:///v1", "has no host"),
            ("https://api example.com", "whitespace"),
            ("https://api.example.com\\v1", "backslash"),
            ("https://a..example.com", "empty label"),
            ("https://exa<mple.com", "not a valid URL"),
            ("https://[fe80::1%25eth0]/", "not a valid URL"),
            ("https://api.example.com/a/..%2Fb", "hides"),
        ];
        for (spec, want) in cases {
            let err = AllowEntry::parse(spec, &[Get]).unwrap_err();
            assert!(err.contains(want), "{spec}: {err}");
            if spec.contains('@') {
                assert!(
                    !err.contains("pw") && !err.contains("token"),
                    "{spec}: {err}"
                );
            } else if !spec.is_empty() {
                assert!(err.contains(&format!("{:?}", spec.trim())), "{spec}: {err}");
            }
        }
    }

    #[test]
    fn entry_errors_are_sentences_that_quote_the_input_and_give_the_fix() {
        let cases = [
            (
                "orders.example.com",
                "\"orders.example.com\" has no scheme; write \"https://orders.example.com\"",
            ),
            (
                "https://api.example.com/v1?key=1",
                "\"https://api.example.com/v1?key=1\" has a query; a grant covers scheme, host, \
                 port and path prefix only, so write \"https://api.example.com/v1\"",
            ),
            (
                "https://*",
                "\"https://*\" grants any host; list each origin the action needs, e.g. \
                 \"https://api.example.com\"; only the exact entry \"*://*:*\" can grant \
                 everything, and only when the operator sets http.insecure_allow_any_host = true \
                 in callout.toml",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(AllowEntry::parse(spec, &[Get]).unwrap_err(), want);
        }
    }

    #[test]
    fn port_lists_cover_each_listed_port_and_no_other() {
        let e = AllowEntry::parse("https://api.example.com:8443,443", &[Get]).unwrap();
        assert_eq!(e.ports(), [443, 8443]);
        assert_eq!(e.origin(), "https://api.example.com:443,8443");
        for (url, covered) in [
            ("https://api.example.com/x", true),
            ("https://api.example.com:8443/x", true),
            ("https://api.example.com:8080/x", false),
            ("http://api.example.com:443/x", false),
        ] {
            assert_eq!(e.covers(&Target::parse(url).unwrap()), covered, "{url}");
        }
        let err = AllowEntry::parse("https://api.example.com:443,x", &[Get]).unwrap_err();
        assert!(err.contains("several are separated by commas"), "{err}");
    }

    #[test]
    fn any_host_needs_the_operators_insecure_flag_and_still_meets_the_guard() {
        let err = AllowEntry::parse(ANY_HOST, &[Get]).unwrap_err();
        assert!(err.contains("http.insecure_allow_any_host"), "{err}");
        let any = AllowEntry::parse_with(ANY_HOST, &[Get], true).unwrap();
        let list = AllowList::new(vec![any]);
        let dev = DevLoopback::default();
        let public = Target::parse("http://api.example.org:8080/x").unwrap();
        assert!(matches!(list.check(Get, &public, &dev), Decision::Allow(_)));
        for blocked in [
            "http://127.0.0.1/",
            "https://169.254.169.254/",
            "http://[::1]:81/",
            "http://localhost/",
        ] {
            let t = Target::parse(blocked).unwrap();
            match list.check(Get, &t, &dev) {
                Decision::Deny(d) => assert_eq!(d.code, Denial::BLOCKED_NETWORK, "{blocked}"),
                Decision::Allow(_) => panic!("{blocked} passed an any-host grant"),
            }
        }
        // Only the exact entry: other wildcards stay refused even with the flag.
        assert!(AllowEntry::parse_with("https://*:443", &[Get], true).is_err());
    }

    #[test]
    fn ipv4_literals_in_every_encoding_are_the_same_address() {
        // The URL parser turns decimal, octal, hex and short forms into one address, so the
        // guard sees 127.0.0.1 however it was written.
        for url in [
            "http://2130706433/",
            "http://017700000001/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://0177.0.0.1/",
            "http://127.0.1/",
        ] {
            let t = Target::parse(url).unwrap();
            assert_eq!(
                t.host,
                TargetHost::Ip("127.0.0.1".parse().unwrap()),
                "{url}"
            );
        }
        let t = Target::parse("http://0xa9.0xfe.0xa9.0xfe/").unwrap();
        assert_eq!(t.host, TargetHost::Ip("169.254.169.254".parse().unwrap()));
    }

    #[test]
    fn an_entry_with_no_methods_is_refused() {
        let err = AllowEntry::parse("https://api.example.com", &[]).unwrap_err();
        assert!(err.contains("methods = [\"GET\"]"), "{err}");
    }

    #[test]
    fn entry_methods_are_deduplicated_in_canonical_order() {
        let e = AllowEntry::parse("https://api.example.com", &[Post, Get, Post]).unwrap();
        assert_eq!(e.methods(), &[Get, Post]);
        assert!(e.allows_method(Post));
        assert!(!e.allows_method(Delete));
    }

    #[test]
    fn entries_print_as_origin_prefix_and_methods() {
        let cases = [
            (
                "https://api.example.com",
                "https://api.example.com:443",
                "https://api.example.com",
                "https://api.example.com:443 [GET, POST]",
            ),
            (
                "http://*.example.com:8080/v1/",
                "http://*.example.com:8080",
                "http://*.example.com:8080/v1/",
                "http://*.example.com:8080/v1/ [GET, POST]",
            ),
            (
                "https://[::1]/x",
                "https://[::1]:443",
                "https://[::1]/x",
                "https://[::1]:443/x [GET, POST]",
            ),
        ];
        for (spec, origin, canonical, display) in cases {
            let e = AllowEntry::parse(spec, &[Post, Get]).unwrap();
            assert_eq!(e.origin(), origin);
            assert_eq!(e.spec(), canonical);
            assert_eq!(e.to_string(), display);
        }
    }

    #[test]
    fn subdomain_patterns_cover_subdomains_only() {
        let pattern = HostPattern::Subdomains("example.com".into());
        let cases = [
            ("a.example.com", true),
            ("a.b.example.com", true),
            ("example.com", false),
            ("xexample.com", false),
            ("a.example.com.evil.org", false),
            ("a.example.co", false),
        ];
        for (host, want) in cases {
            assert_eq!(pattern.matches(&domain(host)), want, "{host}");
        }
        assert!(!pattern.matches(&TargetHost::Ip(ip("93.184.216.34"))));
    }

    #[test]
    fn exact_and_ip_patterns_match_only_themselves() {
        let exact = HostPattern::Exact("example.com".into());
        assert!(exact.matches(&domain("example.com")));
        assert!(!exact.matches(&domain("a.example.com")));
        let v4 = HostPattern::Ip(ip("127.0.0.1"));
        assert!(v4.matches(&TargetHost::Ip(ip("127.0.0.1"))));
        assert!(!v4.matches(&TargetHost::Ip(ip("::ffff:127.0.0.1"))));
        assert!(!v4.matches(&domain("127.0.0.1")));
    }

    #[test]
    fn targets_are_parsed_and_normalised_like_grants() {
        // (request URL, what is checked, what is sent)
        #[rustfmt::skip]
        let cases = [
            ("https://X.Example/v1?x=1#f", "https://x.example:443/v1", "https://x.example/v1?x=1"),
            ("https://x.example", "https://x.example:443/", "https://x.example/"),
            ("https://x.example.:8443/a", "https://x.example:8443/a", "https://x.example.:8443/a"),
            ("http://x.example:80/a", "http://x.example:80/a", "http://x.example/a"),
            ("https://x.example/v1/o/../admin", "https://x.example:443/v1/admin", ""),
            ("https://x.example/v1/o/%2e%2e/admin", "https://x.example:443/v1/admin", ""),
            ("https://x.example/v1/o/.%2E/admin", "https://x.example:443/v1/admin", ""),
            ("https://x.example/v1/./o", "https://x.example:443/v1/o", ""),
            ("https://x.example/v1\\..\\admin", "https://x.example:443/admin", ""),
            ("https://x.example/%7Eme/%61%62c", "https://x.example:443/~me/abc", ""),
            ("https://x.example/a%2fb%3a", "https://x.example:443/a%2Fb%3A", ""),
            ("https://x.example/100%", "https://x.example:443/100%25", ""),
            ("https://x.example/%%32%46", "https://x.example:443/%252F", ""),
            ("https://x.example/a b", "https://x.example:443/a%20b", ""),
            ("https://x.example/caf\u{e9}", "https://x.example:443/caf%C3%A9", ""),
        ];
        for (url, checked, sent) in cases {
            let t = target(url);
            assert_eq!(t.redacted(), checked, "{url}");
            // Unless the table says otherwise, what is sent is what was checked.
            let sent = if sent.is_empty() {
                checked.replace(":443", "")
            } else {
                sent.to_string()
            };
            assert_eq!(t.url.as_str(), sent, "{url}");
        }
    }

    #[test]
    fn target_normalisation_is_stable() {
        for url in [
            "https://x.example/%%32%46/%7e/a%2fb",
            "https://x.example/100%/a%zz",
        ] {
            let once = target(url);
            let twice = target(once.url.as_str());
            assert_eq!(once.path, twice.path, "{url}");
            assert_eq!(once.url, twice.url, "{url}");
        }
    }

    #[test]
    fn ip_literal_targets_are_decoded() {
        #[rustfmt::skip]
        let cases = [
            ("http://127.0.0.1:8080/", "127.0.0.1", 8080),
            ("http://2130706433/", "127.0.0.1", 80),
            ("http://0x7f.1/", "127.0.0.1", 80),
            ("http://0177.0.0.1/", "127.0.0.1", 80),
            ("https://[::ffff:7f00:1]/", "::ffff:127.0.0.1", 443),
            ("https://[2606:4700:4700::1111]:8443/", "2606:4700:4700::1111", 8443),
        ];
        for (url, want, port) in cases {
            let t = target(url);
            assert_eq!(t.host, TargetHost::Ip(ip(want)), "{url}");
            assert_eq!(t.port, port, "{url}");
        }
    }

    #[test]
    fn unusable_urls_are_invalid_and_other_schemes_are_denied() {
        let invalid = [
            ("/v1/orders", "not an absolute URL"),
            ("api.example.com/v1", "not an absolute URL"),
            ("https://", "not a valid URL"),
            ("http://exa mple.com/", "not a valid URL"),
            ("https://user:pw@api.example.com/", "user name or password"),
            ("https://user@api.example.com/", "user name or password"),
            ("https://a..example.com/", "empty label"),
            ("https://x.example/v1/orders/..%2Fadmin", "hides"),
            ("https://x.example/v1/orders/..%5Cadmin", "hides"),
            ("https://x.example/v1/orders/%2E%2E%2fadmin", "hides"),
            ("https://x.example/v1/orders/..;/admin", "hides"),
            ("https://x.example/v1/orders/.;x=1/admin", "hides"),
            ("https://x.example/v1/orders/..%3B/admin", "hides"),
        ];
        for (url, want) in invalid {
            match Target::parse(url) {
                Err(TargetError::Invalid(why)) => {
                    assert!(why.contains(want), "{url}: {why}");
                    assert!(!why.contains("pw"), "{url}: {why}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        for url in [
            "ftp://files.example.com/",
            "file:///etc/passwd",
            "data:text/plain,x",
            "mailto:a@b.c",
            "ws://x.example/",
        ] {
            match Target::parse(url) {
                Err(TargetError::Denied(denial)) => {
                    assert_eq!(denial.code, Denial::SCHEME_NOT_ALLOWED, "{url}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn unparseable_urls_are_quoted_without_query_or_userinfo() {
        let Err(TargetError::Invalid(why)) = Target::parse("http://u:pw@exa mple.com/p?token=abc")
        else {
            panic!("should be invalid");
        };
        assert!(!why.contains("token"), "{why}");
        assert!(!why.contains("pw"), "{why}");
        assert!(why.contains("exa mple.com/p"), "{why}");
        let long = format!("http://exa mple.com/{}", "a".repeat(1000));
        let Err(TargetError::Invalid(why)) = Target::parse(&long) else {
            panic!("should be invalid");
        };
        assert!(why.len() < 300, "{why}");
    }

    #[test]
    fn redacted_targets_drop_query_and_fragment() {
        #[rustfmt::skip]
        let cases = [
            ("https://api.example.com/v1?token=s3cret#x", "https://api.example.com:443/v1"),
            ("http://[::1]:8080/?a=b", "http://[::1]:8080/"),
            ("http://127.0.0.1/x", "http://127.0.0.1:80/x"),
        ];
        for (url, want) in cases {
            assert_eq!(target(url).redacted(), want, "{url}");
        }
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        #[rustfmt::skip]
        let cases = [
            ("https://x.example/v1/orders/", "/v1/orders/123", true),
            ("https://x.example/v1/orders/", "/v1/orders/", true),
            ("https://x.example/v1/orders/", "/v1/orders", false),
            ("https://x.example/v1/orders/", "/v1/ordersX", false),
            ("https://x.example/v1/orders", "/v1/orders", true),
            ("https://x.example/v1/orders", "/v1/orders/x", true),
            ("https://x.example/v1/orders", "/v1/orders/", true),
            ("https://x.example/v1/orders", "/v1/ordersX", false),
            ("https://x.example/v1/orders/", "/v1/orders%2F%2Fadmin", false),
            ("https://x.example/v1/orders", "/v1/orders%2Fx", false),
            ("https://x.example/v1/orders", "/v1/orders?x=/", true),
            ("https://x.example/v1/orders", "/v1/orders/../admin", false),
            ("https://x.example/v1/orders", "/v1/orders/%2e%2e/admin", false),
            ("https://x.example/v1/orders", "/V1/orders", false),
            ("https://x.example/v1/%7Eme", "/v1/~me/x", true),
            ("https://x.example/v1/~me", "/v1/%7eme/x", true),
            ("https://x.example/a%2fb", "/a%2Fb/c", true),
            ("https://x.example/a%2Fb", "/a/b/c", false),
            ("https://x.example", "/anything/at/all", true),
            ("https://x.example/", "/", true),
        ];
        for (spec, path, want) in cases {
            let t = target(&format!("https://x.example{path}"));
            assert_eq!(
                entry(spec).matches_path(&t),
                want,
                "{spec} vs {path} ({})",
                t.path
            );
        }
    }

    #[test]
    fn dev_loopback_lists_parse_loopback_hosts_with_ports() {
        let dev = DevLoopback::parse(
            " 127.0.0.1:8080, localhost:9000,[::1]:7000,,LOCALHOST:9000 ,127.0.0.2:1",
        )
        .unwrap();
        let printed: Vec<String> = dev.entries().iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            [
                "127.0.0.1:8080",
                "localhost:9000",
                "[::1]:7000",
                "127.0.0.2:1"
            ]
        );
        assert_eq!(dev.names(), ["localhost"]);
        assert!(!dev.is_empty());
        assert!(DevLoopback::parse("").unwrap().is_empty());
        assert!(DevLoopback::parse(" , ").unwrap().is_empty());
        assert!(DevLoopback::default().names().is_empty());
        let joined =
            DevLoopback::from_entries(&["127.0.0.1:1".into(), "localhost:2,[::1]:3".into()])
                .unwrap();
        assert_eq!(joined.entries().len(), 3);
    }

    #[test]
    fn dev_loopback_entries_that_are_not_loopback_host_port_pairs_are_refused() {
        let cases = [
            ("127.0.0.1", "has no port"),
            ("localhost", "has no port"),
            ("localhost:", "has port \"\""),
            ("localhost:0", "from 1 to 65535"),
            ("localhost:99999", "from 1 to 65535"),
            ("10.0.0.1:80", "not a loopback host"),
            ("0.0.0.0:80", "not a loopback host"),
            ("example.com:80", "not a loopback host"),
            ("foo.localhost:80", "not a loopback host"),
            ("[fe80::1]:80", "not a loopback host"),
            ("[127.0.0.1]:80", "not a loopback host"),
            ("[localhost]:80", "not a loopback host"),
            ("::1:80", "without brackets"),
            ("[::1:80", "unclosed"),
            ("[::1]", "has no port"),
        ];
        for (item, want) in cases {
            let err = DevLoopback::parse(&format!("127.0.0.1:1,{item}")).unwrap_err();
            assert!(err.contains(want), "{item}: {err}");
            assert!(err.contains(&format!("{item:?}")), "{item}: {err}");
        }
    }

    #[test]
    fn dev_loopback_allows_exact_host_and_port_only() {
        let dev = DevLoopback::parse("127.0.0.1:8080,localhost:9000,[::1]:7000").unwrap();
        let cases = [
            (TargetHost::Ip(ip("127.0.0.1")), 8080, true),
            (TargetHost::Ip(ip("127.0.0.1")), 8081, false),
            (TargetHost::Ip(ip("127.0.0.2")), 8080, false),
            (TargetHost::Ip(ip("::ffff:127.0.0.1")), 8080, false),
            (domain("localhost"), 9000, true),
            (domain("localhost"), 8080, false),
            (domain("a.localhost"), 9000, false),
            (TargetHost::Ip(ip("::1")), 7000, true),
            (TargetHost::Ip(ip("::1")), 9000, false),
        ];
        for (host, port, want) in cases {
            assert_eq!(dev.allows(&host, port), want, "{host}:{port}");
        }
    }

    fn list() -> AllowList {
        AllowList::new(vec![
            AllowEntry::parse("https://api.example.com/v1/orders/", &[Get, Post]).unwrap(),
            AllowEntry::parse("https://api.example.com/v1/items", &[Get]).unwrap(),
            AllowEntry::parse("https://*.cdn.example.com", &[Get, Head]).unwrap(),
            AllowEntry::parse("http://localhost:9000", &[Get]).unwrap(),
            AllowEntry::parse("http://127.0.0.1:8080/api", &[Put]).unwrap(),
            AllowEntry::parse("https://10.0.0.5", &[Get]).unwrap(),
            AllowEntry::parse("https://93.184.216.34", &[Get]).unwrap(),
            AllowEntry::parse("http://app.localhost:3000", &[Get]).unwrap(),
            AllowEntry::parse("http://[::1]:7000", &[Get]).unwrap(),
        ])
    }

    #[test]
    fn requests_are_decided_grant_then_path_then_method_then_network() {
        let dev = DevLoopback::parse("localhost:9000,127.0.0.1:8080,127.0.0.1:9999").unwrap();
        let none = DevLoopback::default();
        // (method, URL, with the dev-loopback entries, route or denial code)
        #[rustfmt::skip]
        let cases = [
            (Get, "https://api.example.com/v1/orders/1", false, "guarded"),
            (Post, "https://api.example.com/v1/orders/1?x=1", false, "guarded"),
            (Get, "https://api.example.com/v1/items", false, "guarded"),
            (Get, "https://api.example.com/v1/items/9", false, "guarded"),
            (Head, "https://a.b.cdn.example.com/x", false, "guarded"),
            (Get, "https://93.184.216.34/", false, "guarded"),
            (Get, "https://other.example.com/", false, Denial::HOST_NOT_ALLOWED),
            (Get, "http://api.example.com/v1/orders/1", false, Denial::HOST_NOT_ALLOWED),
            (Get, "https://api.example.com:8443/v1/orders/", false, Denial::HOST_NOT_ALLOWED),
            (Get, "https://cdn.example.com/x", false, Denial::HOST_NOT_ALLOWED),
            (Get, "https://api.example.com/v1/orders", false, Denial::PATH_NOT_ALLOWED),
            (Get, "https://api.example.com/v1/itemsX", false, Denial::PATH_NOT_ALLOWED),
            (Get, "https://api.example.com/v1/orders/../x", false, Denial::PATH_NOT_ALLOWED),
            (Get, "https://api.example.com/v2/orders/1", false, Denial::PATH_NOT_ALLOWED),
            (Delete, "https://api.example.com/v1/orders/1", false, Denial::METHOD_NOT_ALLOWED),
            (Post, "https://api.example.com/v1/items", false, Denial::METHOD_NOT_ALLOWED),
            (Post, "https://x.cdn.example.com/", false, Denial::METHOD_NOT_ALLOWED),
            // Loopback needs both a grant and a dev-loopback entry.
            (Get, "http://localhost:9000/", false, Denial::BLOCKED_NETWORK),
            (Get, "http://localhost:9000/", true, "dev-loopback"),
            (Get, "http://LOCALHOST.:9000/", true, "dev-loopback"),
            (Put, "http://127.0.0.1:8080/api/x", false, Denial::BLOCKED_NETWORK),
            (Put, "http://127.0.0.1:8080/api/x", true, "dev-loopback"),
            (Put, "http://2130706433:8080/api", true, "dev-loopback"),
            (Get, "http://127.0.0.1:8080/api/x", true, Denial::METHOD_NOT_ALLOWED),
            (Get, "http://127.0.0.1:9999/", true, Denial::HOST_NOT_ALLOWED),
            (Get, "http://localhost:9001/", true, Denial::HOST_NOT_ALLOWED),
            (Get, "http://app.localhost:3000/", false, Denial::BLOCKED_NETWORK),
            (Get, "http://app.localhost.:3000/", true, Denial::BLOCKED_NETWORK),
            (Get, "http://[::1]:7000/", false, Denial::BLOCKED_NETWORK),
            (Get, "https://10.0.0.5/", true, Denial::BLOCKED_NETWORK),
        ];
        let list = list();
        for (method, url, with_dev, want) in cases {
            let dev = if with_dev { &dev } else { &none };
            let got = match list.check(method, &target(url), dev) {
                Decision::Allow(Route::Guarded) => "guarded",
                Decision::Allow(Route::DevLoopback) => "dev-loopback",
                Decision::Deny(denial) => denial.code,
            };
            assert_eq!(got, want, "{method} {url} (dev: {with_dev})");
        }
    }

    #[test]
    fn an_empty_allowlist_grants_nothing_even_with_dev_loopback() {
        let dev = DevLoopback::parse("localhost:9000").unwrap();
        let decision = AllowList::default().check(Get, &target("http://localhost:9000/"), &dev);
        assert!(matches!(decision, Decision::Deny(d) if d.code == Denial::HOST_NOT_ALLOWED));
    }

    fn denial_message(method: Method, url: &str, dev: &DevLoopback) -> String {
        match list().check(method, &target(url), dev) {
            Decision::Deny(denial) => denial.message,
            Decision::Allow(route) => panic!("{method} {url} allowed via {route:?}"),
        }
    }

    #[test]
    fn denial_messages_say_what_to_grant_and_never_show_the_query() {
        let none = DevLoopback::default();
        let cases = [
            (
                Get,
                "https://x.example.com/a?token=s3cret",
                "GET https://x.example.com:443 is not granted; add \"https://x.example.com\" to \
                 http.allow in action.toml",
            ),
            (
                Post,
                "http://x.example.com:8080/?token=s3cret",
                "POST http://x.example.com:8080 is not granted; add { url = \
                 \"http://x.example.com:8080\", methods = [\"POST\"] } to http.allow in \
                 action.toml",
            ),
            (
                Get,
                "https://api.example.com/v2/x?token=s3cret",
                "GET https://api.example.com:443/v2/x is outside the paths granted for \
                 https://api.example.com:443 (\"/v1/orders/\", \"/v1/items\"); add \
                 \"https://api.example.com/v2/x\" to http.allow in action.toml",
            ),
            (
                Delete,
                "https://api.example.com/v1/orders/7?token=s3cret",
                "DELETE https://api.example.com:443/v1/orders/7 is not granted, only GET, POST; \
                 add \"DELETE\" to the methods of the \"https://api.example.com/v1/orders/\" \
                 entry in http.allow (or to http.methods for entries without their own) in \
                 action.toml",
            ),
            (
                Get,
                "http://localhost:9000/?token=s3cret",
                "GET http://localhost:9000 goes to a loopback, private or otherwise non-public \
                 address, which actions may not reach; for local development, run callout with \
                 --dev-loopback localhost:9000",
            ),
            (
                Get,
                "http://[::1]:7000/",
                "for local development, run callout with --dev-loopback [::1]:7000",
            ),
            (
                Get,
                "http://app.localhost:3000/",
                "for local development, grant and use \"http://localhost:3000\" instead of \
                 \"app.localhost\" and run callout with --dev-loopback localhost:3000",
            ),
            (
                Get,
                "https://10.0.0.5/?token=s3cret",
                "GET https://10.0.0.5:443 goes to a loopback, private or otherwise non-public \
                 address, which actions may not reach; point the action at a public address \
                 instead",
            ),
        ];
        for (method, url, want) in cases {
            let message = denial_message(method, url, &none);
            assert!(
                message.ends_with(want),
                "{method} {url}:\n{message}\n{want}"
            );
            assert!(!message.contains("s3cret"), "{message}");
        }
    }
}
