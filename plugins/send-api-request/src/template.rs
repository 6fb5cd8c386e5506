//! Templates: `{{name}}` placeholders in the configured request and reply, filled so that a
//! value can only ever be data where it lands.
//!
//! # Syntax
//!
//! A placeholder is `{{name}}` (spaces inside the braces are ignored); a name is made of ASCII
//! letters, digits, `_`, `-` and `.`:
//!
//! | placeholder | value |
//! | --- | --- |
//! | `{{idempotency_key}}` | the call's idempotency key |
//! | `{{config.KEY}}` | the action's config value `KEY`, inserted **raw** (the operator's) |
//! | `{{secret.NAME}}` | left in place as `{{secret.NAME}}`, for the host to fill |
//! | `{{name}}` | the input `name`, else the conversation variable `name`; an input the manifest declares but the call lacks is `null` |
//!
//! In the reply, the variables mapped from the response come first, and secrets are refused.
//! A name found nowhere is an `internal` error naming the template and the name. A template is
//! read in one pass: a substituted value is never scanned for placeholders again.
//!
//! # Safety
//!
//! - An input or conversation variable holding `{{` anywhere (in a string or a key, at any
//!   depth) is refused as `invalid-input` on its field, so a user's words never become a
//!   placeholder.
//! - URL: the template is split at its first `?`. In the path a value is percent-encoded as a
//!   path segment (everything but `A-Za-z0-9-._~`), and a segment holding a value may not end
//!   up empty, `.` or `..`, nor hide a `..` behind an encoded `/` or `\` or a `;` (the host
//!   refuses such paths; here the field is named, as `invalid-input`). In the query it is
//!   percent-encoded as a query component (same set: `&`, `=`, `+`, `#`, space included).
//!   Config values go in raw.
//! - Header values: a value holding a control character (CR, LF, ...) is refused.
//! - Body: the template is JSON. A string that is exactly one placeholder becomes the value
//!   itself (a number stays a number, an object an object); other strings get the values' text.
//!   Keys are not templated. The result is a JSON value serialized as a whole, so a value
//!   cannot break out of its string.

use std::borrow::Cow;
use std::collections::BTreeMap;

use callout_guest::ActionError;
use serde_json::{Map, Value};

/// The placeholder for the call's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency_key";

/// What an input or variable holding `{{` is told.
pub const BRACES_REASON: &str = "must not contain \"{{\"";

/// What a header value holding a control character is told.
pub const CONTROL_REASON: &str = "must not contain line breaks or other control characters";

/// One piece of a parsed template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// A placeholder's name, trimmed.
    Placeholder(&'a str),
}

/// Splits `template` into literal text and placeholders.
///
/// # Errors
/// A sentence saying what is malformed: an unclosed `{{`, an empty or badly formed name.
pub fn parse(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err("a \"{{\" is not closed by \"}}\"".into());
        };
        let name = after[..close].trim();
        if name.is_empty() {
            return Err("a placeholder has no name".into());
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!(
                "the placeholder \"{{{{{name}}}}}\" has a bad name (letters, digits, \"_\", \"-\" \
                 and \".\" only)"
            ));
        }
        pieces.push(Piece::Placeholder(name));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// Where placeholders get their values.
pub struct Scope<'a> {
    /// The call's inputs.
    pub inputs: &'a Map<String, Value>,
    /// The inputs the manifest declares: one the call lacks is `null`.
    pub declared: &'a [String],
    /// Variables mapped from the response (the reply only); they come first.
    pub mapped: Option<&'a Map<String, Value>>,
    /// The conversation's variables.
    pub variables: &'a Map<String, Value>,
    /// The action's config values.
    pub config: &'a dyn Fn(&str) -> Option<String>,
    /// The call's idempotency key.
    pub idempotency_key: &'a str,
}

/// What a placeholder stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved<'a> {
    /// A value of the call (input, variable, mapped variable, idempotency key): encoded for
    /// where it goes.
    Value {
        /// The field it came from, for errors.
        field: String,
        /// The value.
        value: Cow<'a, Value>,
    },
    /// An operator's config value, inserted raw.
    Config(String),
    /// A secret's name: the placeholder stays for the host.
    Secret(String),
}

impl<'a> Scope<'a> {
    /// The value of placeholder `name` in the template called `place`.
    ///
    /// # Errors
    /// `invalid-input` when an input or variable holds `{{`; `internal` when the name is found
    /// nowhere or names an unset config key.
    pub fn resolve(&self, place: &str, name: &str) -> Result<Resolved<'a>, ActionError> {
        if let Some(secret) = name.strip_prefix("secret.") {
            if secret.is_empty() {
                return Err(ActionError::internal(format!(
                    "{place}: \"{{{{secret.}}}}\" names no secret"
                )));
            }
            return Ok(Resolved::Secret(secret.to_owned()));
        }
        if let Some(key) = name.strip_prefix("config.") {
            return (self.config)(key).map(Resolved::Config).ok_or_else(|| {
                ActionError::internal(format!(
                    "{place}: {{{{config.{key}}}}} names the config key `{key}`, which is not \
                     set; set it in the [config] table of action.toml"
                ))
            });
        }
        let value = |field: &str, value: Cow<'a, Value>| Resolved::Value {
            field: field.to_owned(),
            value,
        };
        if name == IDEMPOTENCY_KEY {
            return Ok(value(
                name,
                Cow::Owned(Value::String(self.idempotency_key.to_owned())),
            ));
        }
        if let Some(v) = self.mapped.and_then(|m| m.get(name)) {
            return Ok(value(name, Cow::Borrowed(v)));
        }
        if let Some(v) = self.inputs.get(name).or_else(|| self.variables.get(name)) {
            check_braces(name, v)?;
            return Ok(value(name, Cow::Borrowed(v)));
        }
        if self.declared.iter().any(|d| d == name) {
            return Ok(value(name, Cow::Owned(Value::Null)));
        }
        Err(ActionError::internal(format!(
            "{place}: {{{{{name}}}}} is not an input, a conversation variable, a mapped response \
             variable, `idempotency_key`, `config.KEY` or `secret.NAME`"
        )))
    }
}

/// The text a value stands for: a string as it is, `null` as nothing, anything else as JSON.
pub fn text_of(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

/// The path (`a.b`, `a[0]`) of the first string or key in `value` holding `{{`.
fn braces_at(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(s) => s.contains("{{").then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| braces_at(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let child = format!("{path}.{k}");
            if k.contains("{{") {
                Some(child)
            } else {
                braces_at(v, &child)
            }
        }),
        _ => None,
    }
}

/// Refuses a value holding `{{` anywhere, as `invalid-input` on `field` (or the nested path).
///
/// # Errors
/// `invalid-input` with [`BRACES_REASON`].
pub fn check_braces(field: &str, value: &Value) -> Result<(), ActionError> {
    match braces_at(value, field) {
        Some(path) => Err(ActionError::invalid_input(path, BRACES_REASON)),
        None => Ok(()),
    }
}

/// Refuses every field of `values` that holds `{{` anywhere, all at once.
///
/// # Errors
/// `invalid-input` listing each such field with [`BRACES_REASON`].
pub fn check_all_braces(values: &Map<String, Value>) -> Result<(), ActionError> {
    let bad: Vec<(String, &str)> = values
        .iter()
        .filter_map(|(k, v)| braces_at(v, k))
        .map(|path| (path, BRACES_REASON))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ActionError::invalid_inputs(bad))
    }
}

/// Percent-encodes everything but the unreserved characters `A-Za-z0-9-._~`.
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// `text` encoded as one path segment: `/`, `?`, `#`, `%` and the rest cannot change the route.
pub fn encode_path_segment(text: &str) -> String {
    percent_encode(text)
}

/// `text` encoded as a query component: `&`, `=`, `+`, `#` cannot add or end a parameter.
/// A space is `%20`, which form and RFC 3986 decoders both read as a space.
pub fn encode_query_value(text: &str) -> String {
    percent_encode(text)
}

/// The canonical placeholder of secret `name`, as the host expects it.
fn secret_placeholder(name: &str) -> String {
    format!("{{{{secret.{name}}}}}")
}

fn parsed<'t>(place: &str, template: &'t str) -> Result<Vec<Piece<'t>>, ActionError> {
    parse(template).map_err(|e| ActionError::internal(format!("{place}: {e}")))
}

/// Whether a path segment is, or hides, `.` or `..`: `%2e` counts as a dot (URL parsers treat
/// it so), and, as the host's policy reads paths, `%2F` and `%5C` as separators and `;` (or
/// `%3B`) as the start of a parameter, because some servers decode or drop them.
fn hides_dot_segment(segment: &str) -> bool {
    let decoded = segment
        .to_ascii_lowercase()
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/");
    decoded.split('/').any(|part| {
        let core = part.split(';').next().unwrap_or("");
        let core = core.split("%3b").next().unwrap_or("");
        core == "." || core == ".."
    })
}

/// The URL path being rendered, segment by segment.
struct PathWriter {
    out: String,
    start: usize,
    fields: Vec<String>,
}

impl PathWriter {
    /// Literal text (the template's or a config value): may hold `/`.
    fn literal(&mut self, text: &str) -> Result<(), ActionError> {
        for c in text.chars() {
            if c == '/' {
                self.end_segment()?;
                self.out.push('/');
                self.start = self.out.len();
            } else {
                self.out.push(c);
            }
        }
        Ok(())
    }

    /// A value of the call, encoded into the current segment.
    fn value(&mut self, field: String, text: &str) {
        self.out.push_str(&encode_path_segment(text));
        self.fields.push(field);
    }

    /// Refuses a segment made of values that ended up empty, `.` or `..`.
    fn end_segment(&mut self) -> Result<(), ActionError> {
        let fields = std::mem::take(&mut self.fields);
        if fields.is_empty() {
            return Ok(());
        }
        let segment = &self.out[self.start..];
        let reason = if segment.is_empty() {
            "must not be empty: it is part of the request's URL path"
        } else if hides_dot_segment(segment) {
            "must not be or hold \".\" or \"..\" path segments: it is part of the request's URL \
             path"
        } else {
            return Ok(());
        };
        let mut fields = fields;
        fields.dedup();
        Err(ActionError::invalid_inputs(
            fields.into_iter().map(|f| (f, reason)),
        ))
    }
}

/// Renders the request's URL template called `place`.
///
/// # Errors
/// `invalid-input` for a value holding `{{` or making a path segment empty, `.` or `..`;
/// `internal` for a malformed template or an unknown name.
pub fn render_url(place: &str, template: &str, scope: &Scope<'_>) -> Result<String, ActionError> {
    let (path, query) = match template.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (template, None),
    };
    let mut w = PathWriter {
        out: String::with_capacity(template.len()),
        start: 0,
        fields: Vec::new(),
    };
    for piece in parsed(place, path)? {
        match piece {
            Piece::Text(t) => w.literal(t)?,
            Piece::Placeholder(name) => match scope.resolve(place, name)? {
                Resolved::Value { field, value } => w.value(field, &text_of(&value)),
                Resolved::Config(raw) => w.literal(&raw)?,
                Resolved::Secret(s) => w.literal(&secret_placeholder(&s))?,
            },
        }
    }
    w.end_segment()?;
    let mut out = w.out;
    if let Some(query) = query {
        out.push('?');
        for piece in parsed(place, query)? {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Placeholder(name) => match scope.resolve(place, name)? {
                    Resolved::Value { value, .. } => {
                        out.push_str(&encode_query_value(&text_of(&value)));
                    }
                    Resolved::Config(raw) => out.push_str(&raw),
                    Resolved::Secret(s) => out.push_str(&secret_placeholder(&s)),
                },
            }
        }
    }
    Ok(out)
}

/// Renders a header value template called `place`; `{{secret.NAME}}` stays for the host.
///
/// # Errors
/// `invalid-input` for a value holding a control character or `{{`; `internal` for a
/// malformed template, an unknown name, or a config value holding a control character.
pub fn render_header(
    place: &str,
    template: &str,
    scope: &Scope<'_>,
) -> Result<String, ActionError> {
    let mut out = String::with_capacity(template.len());
    for piece in parsed(place, template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(name) => match scope.resolve(place, name)? {
                Resolved::Value { field, value } => {
                    let text = text_of(&value);
                    if text.chars().any(char::is_control) {
                        return Err(ActionError::invalid_input(field, CONTROL_REASON));
                    }
                    out.push_str(&text);
                }
                Resolved::Config(raw) => {
                    if raw.chars().any(char::is_control) {
                        return Err(ActionError::internal(format!(
                            "{place}: the config value {{{{{name}}}}} holds a control character"
                        )));
                    }
                    out.push_str(&raw);
                }
                Resolved::Secret(s) => out.push_str(&secret_placeholder(&s)),
            },
        }
    }
    Ok(out)
}

/// Renders a plain text template called `place` (the reply): values as text, no secrets.
///
/// # Errors
/// `invalid-input` for an input or variable holding `{{`; `internal` for a malformed
/// template, an unknown name or a secret.
pub fn render_text(place: &str, template: &str, scope: &Scope<'_>) -> Result<String, ActionError> {
    let mut out = String::with_capacity(template.len());
    for piece in parsed(place, template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(name) => match scope.resolve(place, name)? {
                Resolved::Value { value, .. } => out.push_str(&text_of(&value)),
                Resolved::Config(raw) => out.push_str(&raw),
                Resolved::Secret(_) => {
                    return Err(ActionError::internal(format!(
                        "{place}: {{{{{name}}}}}: secrets are only for the request, never the \
                         reply"
                    )));
                }
            },
        }
    }
    Ok(out)
}

/// Renders the JSON body template; `place` names it in errors (`request.body`).
///
/// # Errors
/// As [`render_text`] for each string, with secrets left for the host.
pub fn render_body(place: &str, template: &Value, scope: &Scope<'_>) -> Result<Value, ActionError> {
    Ok(match template {
        Value::String(s) => render_body_string(place, s, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_body(&format!("{place}[{i}]"), v, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_body(&format!("{place}.{k}"), v, scope)?)))
                .collect::<Result<_, ActionError>>()?,
        ),
        other => other.clone(),
    })
}

fn render_body_string(
    place: &str,
    template: &str,
    scope: &Scope<'_>,
) -> Result<Value, ActionError> {
    let pieces = parsed(place, template)?;
    if let [Piece::Placeholder(name)] = pieces.as_slice() {
        return Ok(match scope.resolve(place, name)? {
            Resolved::Value { value, .. } => value.into_owned(),
            Resolved::Config(raw) => Value::String(raw),
            Resolved::Secret(s) => Value::String(secret_placeholder(&s)),
        });
    }
    let mut out = String::with_capacity(template.len());
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(name) => match scope.resolve(place, name)? {
                Resolved::Value { value, .. } => out.push_str(&text_of(&value)),
                Resolved::Config(raw) => out.push_str(&raw),
                Resolved::Secret(s) => out.push_str(&secret_placeholder(&s)),
            },
        }
    }
    Ok(Value::String(out))
}

/// The variables `pointers` (name → JSON Pointer, RFC 6901) pick out of `body`, and the
/// `(name, pointer)` pairs that pointed at nothing (set to `null`).
pub fn map_pointers(
    body: &Value,
    pointers: &BTreeMap<String, String>,
) -> (Map<String, Value>, Vec<(String, String)>) {
    let mut mapped = Map::new();
    let mut missing = Vec::new();
    for (name, pointer) in pointers {
        let value = body.pointer(pointer).cloned().unwrap_or_else(|| {
            missing.push((name.clone(), pointer.clone()));
            Value::Null
        });
        mapped.insert(name.clone(), value);
    }
    (mapped, missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().expect("an object").clone()
    }

    fn config(key: &str) -> Option<String> {
        match key {
            "base_url" => Some("https://api.example.com/v2".into()),
            "tenant" => Some("acme".into()),
            "bad" => Some("a\r\nX-Evil: 1".into()),
            _ => None,
        }
    }

    struct Fixture {
        inputs: Map<String, Value>,
        variables: Map<String, Value>,
        declared: Vec<String>,
        mapped: Option<Map<String, Value>>,
    }

    impl Fixture {
        fn new(inputs: Value, variables: Value) -> Self {
            Self {
                inputs: obj(inputs),
                variables: obj(variables),
                declared: vec!["optional".into()],
                mapped: None,
            }
        }

        fn scope(&self) -> Scope<'_> {
            Scope {
                inputs: &self.inputs,
                declared: &self.declared,
                mapped: self.mapped.as_ref(),
                variables: &self.variables,
                config: &config,
                idempotency_key: "key-1",
            }
        }
    }

    fn invalid(err: ActionError) -> Vec<(String, String)> {
        match err {
            ActionError::InvalidInput(fields) => {
                fields.into_iter().map(|f| (f.field, f.reason)).collect()
            }
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }

    fn internal(err: ActionError) -> String {
        match err {
            ActionError::Internal(m) => m,
            other => panic!("expected internal, got {other:?}"),
        }
    }

    #[test]
    fn templates_parse_into_text_and_trimmed_names() {
        assert_eq!(
            parse("a {{ x }}b{{config.k}}").unwrap(),
            vec![
                Piece::Text("a "),
                Piece::Placeholder("x"),
                Piece::Text("b"),
                Piece::Placeholder("config.k"),
            ]
        );
        assert_eq!(parse("}} plain").unwrap(), vec![Piece::Text("}} plain")]);
        assert!(parse("").unwrap().is_empty());
        for bad in ["{{x", "{{}}", "{{ a b }}", "{{{x}}}", "{{a\"}}"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_values_are_encoded_as_one_segment() {
        let f = Fixture::new(
            json!({"id": "a/b?c#d%e f", "up": "..", "dot": ".", "n": 42}),
            json!({}),
        );
        let url = render_url(
            "request.url",
            "{{config.base_url}}/leads/{{id}}/x-{{up}}/{{n}}",
            &f.scope(),
        )
        .unwrap();
        assert_eq!(
            url,
            "https://api.example.com/v2/leads/a%2Fb%3Fc%23d%25e%20f/x-../42"
        );
        assert!(!url.contains("/.."));
        // A whole segment of `..` or `.` would climb or stay: refused on its field.
        for (template, field) in [
            ("https://h.test/leads/{{up}}/notes", "up"),
            ("https://h.test/leads/{{dot}}", "dot"),
            ("https://h.test/leads/{{dot}}{{dot}}", "dot"),
            ("https://h.test/leads/{{optional}}", "optional"),
        ] {
            let err = render_url("request.url", template, &f.scope()).unwrap_err();
            let fields = invalid(err);
            assert_eq!(fields.len(), 1, "{template}");
            assert_eq!(fields[0].0, field, "{template}");
        }
        // Even spelled with %2e, or hidden behind an encoded slash or a `;`, a dot-segment is
        // refused (the host refuses such paths; here the field is named).
        for hidden in [
            "%2E%2e",
            ".%2E",
            "a%2F..%2Fb",
            "a%5C..",
            "..%3Bx",
            "..;x",
            "x%2F.",
        ] {
            assert!(hides_dot_segment(hidden), "{hidden}");
        }
        for fine in ["...", "x-..", "a%2F...", "a%3B..", ".x"] {
            assert!(!hides_dot_segment(fine), "{fine}");
        }
        for value in ["Ann/../x", "../admin", "a\\..", "..;jsessionid=1", "./x"] {
            let f = Fixture::new(json!({ "id": value }), json!({}));
            let err = render_url("u", "https://h.test/leads/{{id}}", &f.scope()).unwrap_err();
            assert_eq!(invalid(err)[0].0, "id", "{value}");
        }
        // An empty value inside a longer segment is harmless.
        assert_eq!(
            render_url("u", "https://h.test/leads/v{{optional}}", &f.scope()).unwrap(),
            "https://h.test/leads/v"
        );
    }

    #[test]
    fn query_values_cannot_add_parameters() {
        let f = Fixture::new(json!({"q": "a&admin=true+1#frag?x y/é"}), json!({}));
        let url = render_url(
            "request.url",
            "https://h.test/search?q={{q}}&tenant={{config.tenant}}&k={{idempotency_key}}",
            &f.scope(),
        )
        .unwrap();
        assert_eq!(
            url,
            "https://h.test/search?q=a%26admin%3Dtrue%2B1%23frag%3Fx%20y%2F%C3%A9&tenant=acme&k=key-1"
        );
    }

    #[test]
    fn a_secret_in_the_query_stays_for_the_host() {
        let f = Fixture::new(json!({}), json!({}));
        let url = render_url("u", "https://h.test/a?token={{ secret.API }}", &f.scope()).unwrap();
        assert_eq!(url, "https://h.test/a?token={{secret.API}}");
    }

    #[test]
    fn config_values_go_in_raw() {
        let f = Fixture::new(json!({"id": "7"}), json!({}));
        let url = render_url("u", "{{config.base_url}}/x/{{id}}", &f.scope()).unwrap();
        assert_eq!(url, "https://api.example.com/v2/x/7");
        let body = render_body("b", &json!({"t": "{{config.tenant}}"}), &f.scope()).unwrap();
        assert_eq!(body, json!({"t": "acme"}));
    }

    #[test]
    fn header_values_with_line_breaks_are_refused_on_their_field() {
        let f = Fixture::new(
            json!({"cr": "x\r\nX-Evil: 1", "lf": "x\ny", "tab": "a\tb", "ok": "fine"}),
            json!({"v": "bad\rvar"}),
        );
        for (template, field) in [
            ("v {{cr}}", "cr"),
            ("{{lf}}", "lf"),
            ("{{tab}}", "tab"),
            ("{{v}}", "v"),
        ] {
            let err = render_header("request.headers.x", template, &f.scope()).unwrap_err();
            assert_eq!(invalid(err), vec![(field.into(), CONTROL_REASON.into())]);
        }
        assert_eq!(
            render_header("h", "id {{ok}}", &f.scope()).unwrap(),
            "id fine"
        );
        let err = render_header("request.headers.x", "{{config.bad}}", &f.scope()).unwrap_err();
        assert!(internal(err).contains("request.headers.x"));
    }

    #[test]
    fn secrets_in_headers_are_left_untouched() {
        let f = Fixture::new(json!({}), json!({}));
        assert_eq!(
            render_header(
                "h",
                "Bearer {{secret.CRM_TOKEN}} for {{config.tenant}}",
                &f.scope()
            )
            .unwrap(),
            "Bearer {{secret.CRM_TOKEN}} for acme"
        );
    }

    #[test]
    fn values_holding_braces_are_refused_even_nested() {
        let f = Fixture::new(
            json!({
                "name": "{{secret.CRM_TOKEN}}",
                "deep": {"a": [1, {"b": "x {{config.tenant}}"}]},
                "key": {"{{k}}": 1},
                "fine": "a { b } c",
            }),
            json!({"var": ["{{x}}"]}),
        );
        let s = f.scope();
        let one = |t: &str| invalid(render_header("h", t, &s).unwrap_err());
        assert_eq!(one("{{name}}"), vec![("name".into(), BRACES_REASON.into())]);
        assert_eq!(one("{{deep}}")[0].0, "deep.a[1].b");
        assert_eq!(one("{{key}}")[0].0, "key.{{k}}");
        assert_eq!(one("{{var}}")[0].0, "var[0]");
        let err = render_body("b", &json!({"x": "{{deep}}"}), &s).unwrap_err();
        assert_eq!(invalid(err)[0].0, "deep.a[1].b");
        let all = invalid(check_all_braces(&f.inputs).unwrap_err());
        let fields: Vec<&str> = all.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["deep.a[1].b", "key.{{k}}", "name"]);
        assert!(check_all_braces(&obj(json!({"fine": "a { b } c"}))).is_ok());
    }

    #[test]
    fn an_exact_placeholder_in_the_body_keeps_the_values_type() {
        let f = Fixture::new(
            json!({"n": 42, "ok": true, "addr": {"city": "Oslo", "zip": [1, 2]}, "name": "Ann"}),
            json!({"plan": "gold"}),
        );
        let template = json!({
            "count": "{{n}}",
            "flag": "{{ ok }}",
            "address": "{{addr}}",
            "missing": "{{optional}}",
            "label": "#{{n}} for {{name}} ({{ok}}) {{plan}}",
            "items": ["{{name}}", 3, null, {"{{name}}": "{{idempotency_key}}"}],
            "auth": "{{secret.TOKEN}}",
        });
        let body = render_body("request.body", &template, &f.scope()).unwrap();
        assert_eq!(
            body,
            json!({
                "count": 42,
                "flag": true,
                "address": {"city": "Oslo", "zip": [1, 2]},
                "missing": null,
                "label": "#42 for Ann (true) gold",
                "items": ["Ann", 3, null, {"{{name}}": "key-1"}],
                "auth": "{{secret.TOKEN}}",
            })
        );
    }

    #[test]
    fn body_string_values_stay_inside_their_string() {
        let evil = "\", \"admin\": true, \"x\": \"\\\n\u{0}";
        let f = Fixture::new(json!({ "name": evil }), json!({}));
        let body = render_body(
            "request.body",
            &json!({"name": "{{name}}", "greeting": "hi {{name}}"}),
            &f.scope(),
        )
        .unwrap();
        let wire = serde_json::to_string(&body).unwrap();
        let back: Value = serde_json::from_str(&wire).unwrap();
        let keys: Vec<&String> = back.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["greeting", "name"]);
        assert_eq!(back["name"], evil);
        assert_eq!(back["greeting"], format!("hi {evil}"));
        assert!(!wire.contains('\n'), "{wire}");
    }

    #[test]
    fn an_unknown_name_is_an_internal_error_naming_template_and_name() {
        let f = Fixture::new(json!({}), json!({}));
        let cases = [
            render_url("request.url", "https://h.test/{{nope}}", &f.scope()),
            render_header("request.headers.x-a", "{{nope}}", &f.scope()),
            render_text("response.reply", "hi {{nope}}", &f.scope()),
        ];
        for (case, place) in
            cases
                .into_iter()
                .zip(["request.url", "request.headers.x-a", "response.reply"])
        {
            let m = internal(case.unwrap_err());
            assert!(m.starts_with(place) && m.contains("{{nope}}"), "{m}");
        }
        let err = render_body("request.body", &json!({"a": ["{{nope}}"]}), &f.scope());
        let m = internal(err.unwrap_err());
        assert!(
            m.starts_with("request.body.a[0]") && m.contains("{{nope}}"),
            "{m}"
        );
        let m = internal(render_text("r", "{{config.unset}}", &f.scope()).unwrap_err());
        assert!(m.contains("`unset`") && m.contains("[config]"), "{m}");
        let m = internal(render_text("r", "{{broken", &f.scope()).unwrap_err());
        assert!(m.starts_with("r:") && m.contains("not closed"), "{m}");
    }

    #[test]
    fn inputs_come_before_variables_and_mapped_ones_before_both() {
        let mut f = Fixture::new(json!({"a": "input"}), json!({"a": "var", "b": "var-b"}));
        assert_eq!(
            render_text("r", "{{a}} {{b}}", &f.scope()).unwrap(),
            "input var-b"
        );
        f.mapped = Some(obj(json!({"a": "mapped", "c": null})));
        assert_eq!(
            render_text("r", "{{a}} {{b}} [{{c}}]", &f.scope()).unwrap(),
            "mapped var-b []"
        );
    }

    #[test]
    fn pointers_pick_variables_and_report_what_is_missing() {
        let body =
            json!({"id": "L-1", "order": {"status": "shipped", "lines": [{"sku": "A"}]}, "a/b": 1});
        let pointers: BTreeMap<String, String> = [
            ("lead_id", "/id"),
            ("status", "/order/status"),
            ("sku", "/order/lines/0/sku"),
            ("slash", "/a~1b"),
            ("all", ""),
            ("gone", "/order/eta"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (mapped, missing) = map_pointers(&body, &pointers);
        assert_eq!(mapped["lead_id"], "L-1");
        assert_eq!(mapped["status"], "shipped");
        assert_eq!(mapped["sku"], "A");
        assert_eq!(mapped["slash"], 1);
        assert_eq!(mapped["all"], body);
        assert_eq!(mapped["gone"], Value::Null);
        assert_eq!(missing, vec![("gone".to_owned(), "/order/eta".to_owned())]);
    }

    #[test]
    fn the_reply_renders_values_as_text_and_refuses_secrets() {
        let mut f = Fixture::new(json!({"name": "Ann", "n": 3}), json!({}));
        f.mapped = Some(obj(json!({"lead_id": "L-9", "tags": ["a"]})));
        assert_eq!(
            render_text(
                "response.reply",
                "Thanks {{name}}, your reference is {{lead_id}} ({{n}}, {{tags}}).",
                &f.scope()
            )
            .unwrap(),
            "Thanks Ann, your reference is L-9 (3, [\"a\"])."
        );
        let m = internal(render_text("response.reply", "{{secret.X}}", &f.scope()).unwrap_err());
        assert!(m.contains("secret"), "{m}");
    }
}
