//! Secret placeholders: `{{secret.NAME}}` in header values, filled in by the host.
//!
//! The plugin never sees a secret's value. It writes a placeholder; after the policy check the
//! host substitutes the value, but only when the secret is bound to the request's destination in
//! `[secrets]` of `action.toml`. Logs and dry runs show the template, and anything echoed back is
//! passed through [`mask_values`].

use super::Denial;
use super::allow::{AllowEntry, Target};

/// What opens a placeholder.
const OPEN: &str = "{{secret.";

/// Secret values shorter than this are not masked: they would match ordinary text everywhere.
const MIN_MASK_CHARS: usize = 4;

/// Longest piece of a malformed placeholder quoted in an error, in characters.
const QUOTE_LIMIT: usize = 40;

/// A declared secret and the destinations it may be sent to.
///
/// The manifest layer builds `hosts` with [`AllowEntry::parse`]; their methods are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretBinding {
    /// The secret's name, as used in `{{secret.NAME}}`.
    pub name: String,
    /// Where the secret may go: scheme, host pattern, port and path prefix.
    pub hosts: Vec<AllowEntry>,
}

impl SecretBinding {
    /// Whether some bound entry covers the target's scheme, host, port and path.
    pub fn may_go_to(&self, target: &Target) -> bool {
        self.hosts.iter().any(|entry| entry.covers(target))
    }
}

/// One piece of a template.
enum Piece<'a> {
    Text(&'a str),
    Secret(&'a str),
}

/// Splits a template into text and placeholders; a single pass, so substituted values are never
/// scanned again.
fn pieces(value: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut search = 0;
    while let Some(found) = value[search..].find("{{") {
        let open = search + found;
        let after = &value[open + 2..];
        let trimmed = after.trim_start();
        let Some(name_part) = trimmed.strip_prefix("secret.") else {
            search = open + 1;
            continue;
        };
        if trimmed.len() != after.len() {
            let name = snippet(name_part.split("}}").next().unwrap_or(""));
            return Err(format!(
                "placeholder \"{{{{ secret.{name}\" has a space after \"{{{{\"; write \
                 \"{OPEN}{name}}}}}\""
            ));
        }
        let Some(close) = name_part.find("}}") else {
            let name = snippet(name_part);
            return Err(format!(
                "placeholder \"{OPEN}{name}\" is not closed; end it with \"}}}}\", as in \
                 \"{OPEN}API_TOKEN}}}}\""
            ));
        };
        let name = &name_part[..close];
        if !is_secret_name(name) {
            let name = snippet(name);
            return Err(format!(
                "placeholder \"{OPEN}{name}}}}}\" has a bad name; a secret name is letters, \
                 digits and \"_\" and does not start with a digit, as in \"{OPEN}API_TOKEN}}}}\""
            ));
        }
        if text_start < open {
            pieces.push(Piece::Text(&value[text_start..open]));
        }
        pieces.push(Piece::Secret(name));
        text_start = open + OPEN.len() + close + 2;
        search = text_start;
    }
    if text_start < value.len() {
        pieces.push(Piece::Text(&value[text_start..]));
    }
    Ok(pieces)
}

/// Whether `name` matches `[A-Za-z_][A-Za-z0-9_]*`.
fn is_secret_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A bounded prefix of malformed placeholder text, for quoting in errors.
fn snippet(text: &str) -> String {
    let cut: String = text
        .chars()
        .take_while(|c| !c.is_whitespace())
        .take(QUOTE_LIMIT)
        .collect();
    if cut.len() < text.len() && !text[cut.len()..].starts_with(char::is_whitespace) {
        cut + "..."
    } else {
        cut
    }
}

/// Lists the secret names used in `value`, once each, in order of first use.
///
/// NAME is `[A-Za-z_][A-Za-z0-9_]*`. A `{{secret.` that is not closed by `}}`, has a bad name or
/// is written `{{ secret.` is an error: silently sending it as text would hide the mistake.
/// Other `{{...}}` text is left alone.
pub fn placeholders(value: &str) -> Result<Vec<&str>, String> {
    let mut names: Vec<&str> = Vec::new();
    for piece in pieces(value)? {
        if let Piece::Secret(name) = piece
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    Ok(names)
}

/// Checks the placeholders of a header value against the secrets bound to `target`.
///
/// Returns the names used. A malformed placeholder is `bad-header`, an undeclared name
/// `secret-unknown` and a secret not bound to the destination `secret-not-allowed`. Run it after
/// [`AllowList::check`](super::AllowList::check) allowed the request and before [`render`].
pub fn check_secrets<'a>(
    value: &'a str,
    bindings: &[SecretBinding],
    target: &Target,
) -> Result<Vec<&'a str>, Denial> {
    let names = placeholders(value).map_err(|why| Denial::new(Denial::BAD_HEADER, why))?;
    for name in &names {
        let Some(binding) = bindings.iter().find(|b| b.name == *name) else {
            return Err(Denial::new(
                Denial::SECRET_UNKNOWN,
                format!(
                    "secret {name:?} is not declared; add it to [secrets] in action.toml with \
                     the hosts it may be sent to"
                ),
            ));
        };
        if !binding.may_go_to(target) {
            let bound: Vec<String> = binding
                .hosts
                .iter()
                .map(|h| format!("{:?}", h.spec()))
                .collect();
            let bound = if bound.is_empty() {
                "no destination".to_string()
            } else {
                bound.join(", ")
            };
            return Err(Denial::new(
                Denial::SECRET_NOT_ALLOWED,
                format!(
                    "secret {name:?} may not be sent to {}; it is bound to {bound}; if it \
                     should go there, add the destination to its hosts in [secrets] in \
                     action.toml",
                    target.redacted()
                ),
            ));
        }
    }
    Ok(names)
}

/// Substitutes every `{{secret.NAME}}` in `value` with `lookup(NAME)`.
///
/// Substituted values are not scanned again, so a value containing a placeholder stays literal.
/// A malformed placeholder, or `lookup` returning `None`, is an error naming the secret (never
/// holding a value).
pub fn render(
    value: &str,
    mut lookup: impl FnMut(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    for piece in pieces(value)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Secret(name) => {
                let secret = lookup(name).ok_or_else(|| {
                    format!(
                        "secret {name:?} has no value; provide it to the host as [secrets] in \
                         action.toml describes"
                    )
                })?;
                out.push_str(&secret);
            }
        }
    }
    Ok(out)
}

/// The form of a header value fit for logs and dry runs: the template, placeholders untouched.
///
/// Templates hold no secret values, only their names, so this returns `value` unchanged; it
/// exists so call sites say what they mean and always log the template, never the rendered
/// string.
pub fn redact(value: &str) -> String {
    value.to_string()
}

/// Replaces every occurrence of any of `secrets` in `text` with `[redacted]`.
///
/// For response echoes and logs. Values shorter than 4 characters, empty ones included, are
/// skipped, as masking them would shred ordinary text. Overlapping occurrences of different
/// secrets are masked as one span.
pub fn mask_values(text: &str, secrets: &[&str]) -> String {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for secret in secrets
        .iter()
        .filter(|s| s.chars().count() >= MIN_MASK_CHARS)
    {
        let mut from = 0;
        while let Some(found) = text[from..].find(secret) {
            let start = from + found;
            spans.push((start, start + secret.len()));
            // Step one character, so overlapping occurrences are found too.
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    if spans.is_empty() {
        return text.to_string();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut current: Option<(usize, usize)> = None;
    for (start, end) in spans {
        match current {
            Some((_, cur_end)) if start <= cur_end => {
                current = current.map(|(s, e)| (s, e.max(end)));
            }
            _ => {
                if let Some((s, e)) = current {
                    out.push_str(&text[copied..s]);
                    out.push_str("[redacted]");
                    copied = e;
                }
                current = Some((start, end));
            }
        }
    }
    if let Some((s, e)) = current {
        out.push_str(&text[copied..s]);
        out.push_str("[redacted]");
        copied = e;
    }
    out.push_str(&text[copied..]);
    out
}

/// Replaces every occurrence of each secret value (of at least four characters) in `bytes`
/// with `[redacted]`: the byte-level twin of [`mask_values`], for response bodies that need not
/// be UTF-8.
pub fn mask_bytes(bytes: &[u8], secrets: &[&str]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for secret in secrets
        .iter()
        .filter(|s| s.chars().count() >= MIN_MASK_CHARS)
    {
        let needle = secret.as_bytes();
        if !out.windows(needle.len()).any(|w| w == needle) {
            continue;
        }
        let mut masked = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(needle) {
                masked.extend_from_slice(b"[redacted]");
                i += needle.len();
            } else {
                masked.push(out[i]);
                i += 1;
            }
        }
        out = masked;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_bytes_redacts_every_echo_of_a_secret_in_binary_data() {
        let body = b"\xff token=s3cr3t-value; again s3cr3t-value \x00";
        let masked = super::mask_bytes(body, &["s3cr3t-value", "abc"]);
        assert_eq!(
            masked,
            b"\xff token=[redacted]; again [redacted] \x00".to_vec()
        );
        assert_eq!(
            super::mask_bytes(b"nothing here", &["s3cr3t-value"]),
            b"nothing here"
        );
    }

    use super::*;
    use crate::policy::Method;

    fn binding(name: &str, hosts: &[&str]) -> SecretBinding {
        SecretBinding {
            name: name.into(),
            hosts: hosts
                .iter()
                .map(|h| AllowEntry::parse(h, &[Method::Get]).unwrap())
                .collect(),
        }
    }

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[test]
    fn placeholders_are_listed_once_in_order_of_first_use() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("plain text", &[]),
            ("Bearer {{secret.API_TOKEN}}", &["API_TOKEN"]),
            ("{{secret.a}}:{{secret._b1}}", &["a", "_b1"]),
            ("{{secret.X}}{{secret.Y}}{{secret.X}}", &["X", "Y"]),
            ("{{other}} {{secret.K}}", &["K"]),
            ("{{{secret.K}}}", &["K"]),
            ("{{ not a secret }}", &[]),
            ("{{secretX}}", &[]),
            ("{secret.K}", &[]),
        ];
        for (value, want) in cases {
            assert_eq!(placeholders(value).unwrap(), *want, "{value:?}");
        }
    }

    #[test]
    fn malformed_placeholders_are_errors_that_say_how_to_write_them() {
        let cases = [
            ("Bearer {{secret.API_TOKEN", "is not closed"),
            ("{{secret.}}", "bad name"),
            ("{{secret.1ABC}}", "bad name"),
            ("{{secret.API-TOKEN}}", "bad name"),
            ("{{secret.API TOKEN}}", "bad name"),
            ("{{secret.K}", "is not closed"),
            ("{{ secret.K}}", "space"),
            ("{{\tsecret.K}}", "space"),
            ("ok {{secret.A}} then {{secret.b.c}}", "bad name"),
        ];
        for (value, want) in cases {
            let err = placeholders(value).unwrap_err();
            assert!(err.contains(want), "{value:?}: {err}");
            assert!(err.contains("{{secret."), "{value:?}: {err}");
        }
    }

    #[test]
    fn long_malformed_placeholders_are_quoted_only_in_part() {
        let value = format!("{{{{secret.{}", "A".repeat(500));
        let err = placeholders(&value).unwrap_err();
        assert!(err.len() < 200, "{err}");
        assert!(err.contains("..."), "{err}");
    }

    #[test]
    fn render_substitutes_each_placeholder_and_never_rescans_values() {
        let lookup = |name: &str| match name {
            "TOKEN" => Some("t0k3n".to_string()),
            "USER" => Some("ada".to_string()),
            "TRICK" => Some("{{secret.TOKEN}}".to_string()),
            _ => None,
        };
        let cases = [
            ("Bearer {{secret.TOKEN}}", "Bearer t0k3n"),
            ("{{secret.USER}}:{{secret.TOKEN}}", "ada:t0k3n"),
            ("{{secret.TOKEN}}{{secret.TOKEN}}", "t0k3nt0k3n"),
            ("no placeholders {{x}}", "no placeholders {{x}}"),
            ("{{secret.TRICK}}", "{{secret.TOKEN}}"),
            ("", ""),
        ];
        for (value, want) in cases {
            assert_eq!(render(value, lookup).unwrap(), want, "{value:?}");
        }
    }

    #[test]
    fn render_fails_naming_a_secret_without_value() {
        let err = render("a {{secret.MISSING}} b", |_| None).unwrap_err();
        assert!(err.contains("\"MISSING\""), "{err}");
        let err = render("{{secret.BAD", |_| Some("v".into())).unwrap_err();
        assert!(err.contains("not closed"), "{err}");
    }

    #[test]
    fn redact_leaves_templates_as_they_are() {
        for value in ["Bearer {{secret.TOKEN}}", "plain", ""] {
            assert_eq!(redact(value), value);
        }
    }

    #[test]
    fn mask_values_hides_every_occurrence_of_long_enough_secrets() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("token=abcd1234&x=1", &["abcd1234"], "token=[redacted]&x=1"),
            ("abcd abcd", &["abcd"], "[redacted] [redacted]"),
            ("short abc", &["abc"], "short abc"),
            ("empty", &[""], "empty"),
            ("nothing here", &["s3cr3t"], "nothing here"),
            ("xx0123456789yy", &["012345", "456789"], "xx[redacted]yy"),
            ("aaaaa", &["aaaa"], "[redacted]"),
            (
                "key: sekrit-value",
                &["sekrit", "sekrit-value"],
                "key: [redacted]",
            ),
            ("a redacted b", &["dact"], "a re[redacted]ed b"),
            (
                "préfixe-clé-secrète",
                &["clé-secrète"],
                "préfixe-[redacted]",
            ),
        ];
        for (text, secrets, want) in cases {
            assert_eq!(mask_values(text, secrets), *want, "{text:?}");
        }
    }

    #[test]
    fn a_secret_goes_only_where_it_is_bound_whatever_the_method() {
        let b = binding(
            "TOKEN",
            &["https://api.example.com/v1/", "https://*.hooks.example.com"],
        );
        let cases = [
            ("https://api.example.com/v1/orders", true),
            ("https://api.example.com/v1/", true),
            ("https://api.example.com/v2/orders", false),
            ("https://api.example.com/v1", false),
            ("http://api.example.com/v1/orders", false),
            ("https://api.example.com:8443/v1/orders", false),
            ("https://a.hooks.example.com/x", true),
            ("https://hooks.example.com/x", false),
            ("https://evil.example.com/v1/", false),
            ("https://api.example.com.evil.com/v1/", false),
        ];
        for (url, want) in cases {
            assert_eq!(b.may_go_to(&target(url)), want, "{url}");
        }
    }

    #[test]
    fn check_secrets_reports_unknown_unbound_and_malformed_placeholders() {
        let bindings = [
            binding("TOKEN", &["https://api.example.com"]),
            binding("NOWHERE", &[]),
        ];
        let api = target("https://api.example.com/v1/x?key=hidden");
        let other = target("https://other.example.com/x?key=hidden");
        assert_eq!(
            check_secrets("Bearer {{secret.TOKEN}}", &bindings, &api),
            Ok(vec!["TOKEN"])
        );
        assert_eq!(check_secrets("no secrets", &bindings, &other), Ok(vec![]));
        let cases = [
            ("{{secret.OTHER}}", &api, Denial::SECRET_UNKNOWN),
            ("{{secret.TOKEN}}", &other, Denial::SECRET_NOT_ALLOWED),
            ("{{secret.NOWHERE}}", &api, Denial::SECRET_NOT_ALLOWED),
            ("{{secret.TOKEN", &api, Denial::BAD_HEADER),
        ];
        for (value, target, code) in cases {
            let denial = check_secrets(value, &bindings, target).unwrap_err();
            assert_eq!(denial.code, code, "{value}: {denial}");
            assert!(!denial.message.contains("hidden"), "{denial}");
        }
    }
}
