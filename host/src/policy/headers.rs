//! Which request headers a plugin may set.
//!
//! A plugin could otherwise smuggle a second request (CR/LF in a value), confuse the framing
//! (`content-length`, `transfer-encoding`), redirect the request to another virtual host (`host`)
//! or tamper with the connection (`connection`, `upgrade`, proxy headers). The host's HTTP client
//! sets all of those itself, so they are refused.

use super::Denial;

/// Hop-by-hop headers (RFC 9110 7.6.1) and their relatives, managed by the HTTP client.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers the host derives from the URL and the body.
const HOST_CONTROLLED: &[&str] = &["host", "content-length"];

/// Checks one request header as the plugin sent it; refusals have code `bad-header`.
///
/// The name must be an RFC 9110 token and not a hop-by-hop or host-controlled header (compared
/// case-insensitively: `connection`, `keep-alive`, `proxy-authenticate`, `proxy-authorization`,
/// `proxy-connection`, `te`, `trailer`, `transfer-encoding`, `upgrade`, `host`,
/// `content-length`). The value must not contain CR, LF, NUL or any other control character
/// except horizontal tab, which HTTP/1.1 forbids anyway. Messages name the header, never its
/// value. Check again after rendering secrets, since a secret value could hold a line break.
pub fn check_header(name: &str, value: &str) -> Result<(), Denial> {
    let refuse = |message: String| Err(Denial::new(Denial::BAD_HEADER, message));
    if name.is_empty() {
        return refuse("a header has an empty name; give every header a name".into());
    }
    if !name.bytes().all(is_token_char) {
        return refuse(format!(
            "header name {name:?} is not a valid token; use only letters, digits and \
             !#$%&'*+-.^_`|~"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if HOP_BY_HOP.contains(&lower.as_str()) {
        return refuse(format!(
            "header {name:?} is hop-by-hop and is managed by the host's HTTP client; remove it"
        ));
    }
    if HOST_CONTROLLED.contains(&lower.as_str()) {
        return refuse(format!(
            "header {name:?} is set by the host from the URL and the body; remove it"
        ));
    }
    if value.contains(['\r', '\n', '\0']) {
        return refuse(format!(
            "header {name:?} has a CR, LF or NUL in its value, which could split the request; \
             remove it"
        ));
    }
    if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
        return refuse(format!(
            "header {name:?} has a control character in its value; remove it"
        ));
    }
    Ok(())
}

/// `tchar` of RFC 9110 5.6.2.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_headers_pass() {
        let cases = [
            ("accept", "application/json"),
            ("Authorization", "Bearer {{secret.API_TOKEN}}"),
            ("X-Request-Id", "abc-123"),
            ("content-type", "text/plain; charset=utf-8"),
            ("x-tabbed", "a\tb"),
            ("x-unicode", "café"),
            ("x-empty", ""),
            ("!#$%&'*+-.^_`|~09azAZ", "ok"),
        ];
        for (name, value) in cases {
            assert_eq!(check_header(name, value), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_that_are_not_tokens_are_refused() {
        for name in [
            "",
            "x header",
            "x:y",
            "x\r\ny",
            "caf\u{e9}",
            "(x)",
            "x/y",
            "a\"b",
        ] {
            let denial = check_header(name, "v").unwrap_err();
            assert_eq!(denial.code, Denial::BAD_HEADER, "{name:?}");
        }
    }

    #[test]
    fn hop_by_hop_and_host_controlled_headers_are_refused_in_any_case() {
        let cases = [
            "connection",
            "Keep-Alive",
            "proxy-authenticate",
            "Proxy-Authorization",
            "proxy-connection",
            "TE",
            "trailer",
            "Transfer-Encoding",
            "upgrade",
            "Host",
            "CONTENT-LENGTH",
        ];
        for name in cases {
            let denial = check_header(name, "secret-value").unwrap_err();
            assert_eq!(denial.code, Denial::BAD_HEADER, "{name}");
            assert!(denial.message.contains(&format!("{name:?}")), "{denial}");
            assert!(!denial.message.contains("secret-value"), "{denial}");
        }
    }

    #[test]
    fn values_with_line_breaks_nul_or_controls_are_refused_without_echoing_them() {
        for value in [
            "a\r\nx-evil: 1",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\u{1}b",
            "a\u{7f}b",
        ] {
            let denial = check_header("x-token", value).unwrap_err();
            assert_eq!(denial.code, Denial::BAD_HEADER, "{value:?}");
            assert!(denial.message.contains("\"x-token\""), "{denial}");
            assert!(!denial.message.contains(value), "{denial}");
        }
    }
}
