//! The console's "Add new API request" form as data: a [`Draft`] read from the submitted
//! fields, checked field by field, turned into the `action.toml` of a built-in
//! "Send API Request" (plus `tests.toml` from the exchanges the builder kept), and back.
//!
//! Nothing here touches the network or the actions directory; the console's handlers test and
//! save what this builds.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::call::{CallReport, Failure, MockResponse};
use crate::cases::{Case, Expect, ExpectedRequest};
use crate::manifest::Manifest;

/// Rows shown for each repeated group when the draft has fewer.
pub const MIN_ROWS: usize = 3;

/// HTTP methods offered.
pub const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Input types offered.
pub const TYPES: [&str; 4] = ["string", "integer", "number", "boolean"];

/// One header row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderRow {
    /// The header's name.
    pub name: String,
    /// Its value (a template); a chosen secret is appended.
    pub value: String,
    /// A declared secret's name, or empty.
    pub secret: String,
}

/// One input row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputRow {
    /// The input's name.
    pub name: String,
    /// Its JSON Schema type.
    pub kind: String,
    /// A regular expression it must match (strings).
    pub pattern: String,
    /// The question the agent asks.
    pub prompt: String,
    /// Whether the action needs it.
    pub required: bool,
    /// A value used by Test.
    pub sample: String,
}

/// One response-mapping row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VarRow {
    /// The conversation variable set.
    pub name: String,
    /// The JSON Pointer into the response.
    pub pointer: String,
}

/// The form's content.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    /// The action's name.
    pub name: String,
    /// What the agent reads.
    pub description: String,
    /// `on-prompt` or `chat-end`.
    pub trigger: String,
    /// On-prompt intents, comma-separated.
    pub intents: String,
    /// On-prompt message patterns, one per line.
    pub patterns: String,
    /// The method.
    pub method: String,
    /// The endpoint (a template).
    pub url: String,
    /// Headers.
    pub headers: Vec<HeaderRow>,
    /// The body template (JSON text).
    pub body: String,
    /// Inputs.
    pub inputs: Vec<InputRow>,
    /// Response mapping.
    pub vars: Vec<VarRow>,
    /// The reply template.
    pub reply: String,
    /// The message when the call fails.
    pub fallback: String,
    /// Test: the mocked status.
    pub mock_status: String,
    /// Test: the mocked body.
    pub mock_body: String,
    /// The exchanges kept as test cases (JSON of [`Case`] each).
    pub cases: Vec<Case>,
    /// The exchange of the last test, offered for keeping.
    pub pending: Option<Case>,
    /// The button pressed.
    pub op: String,
}

/// A problem with one field: its element id and the message.
pub type FieldErrors = Vec<(String, String)>;

fn indexed<'a>(
    fields: &'a [(String, String)],
    prefix: &str,
) -> BTreeMap<usize, Vec<(&'a str, &'a str)>> {
    let mut rows: BTreeMap<usize, Vec<(&str, &str)>> = BTreeMap::new();
    for (k, v) in fields {
        if let Some(rest) = k.strip_prefix(prefix)
            && let Some((col, idx)) = rest.rsplit_once('-')
            && let Ok(i) = idx.parse::<usize>()
            && (1..=50).contains(&i)
        {
            rows.entry(i).or_default().push((col, v.as_str()));
        }
    }
    rows
}

fn get<'a>(row: &[(&str, &'a str)], col: &str) -> &'a str {
    row.iter()
        .find(|(c, _)| *c == col)
        .map(|(_, v)| *v)
        .unwrap_or("")
}

impl Draft {
    /// A new draft with the form's defaults.
    pub fn new() -> Self {
        Self {
            trigger: "on-prompt".into(),
            method: "GET".into(),
            mock_status: "200".into(),
            ..Self::default()
        }
    }

    /// Reads the submitted fields (`header-name-1`, `input-type-2`, `case` ...).
    pub fn from_fields(fields: &[(String, String)]) -> Self {
        let one = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.trim_end_matches(['\r', '\n']).to_string())
                .unwrap_or_default()
        };
        let headers = indexed(fields, "header-")
            .into_values()
            .map(|r| HeaderRow {
                name: get(&r, "name").trim().to_string(),
                value: get(&r, "value").to_string(),
                secret: get(&r, "secret").to_string(),
            })
            .filter(|h| !(h.name.is_empty() && h.value.is_empty() && h.secret.is_empty()))
            .collect();
        let inputs = indexed(fields, "input-")
            .into_values()
            .map(|r| InputRow {
                name: get(&r, "name").trim().to_string(),
                kind: get(&r, "type").to_string(),
                pattern: get(&r, "pattern").to_string(),
                prompt: get(&r, "prompt").to_string(),
                required: !get(&r, "required").is_empty(),
                sample: get(&r, "sample").to_string(),
            })
            .filter(|i| {
                !(i.name.is_empty()
                    && i.pattern.is_empty()
                    && i.prompt.is_empty()
                    && i.sample.is_empty())
            })
            .collect();
        let vars = indexed(fields, "var-")
            .into_values()
            .map(|r| VarRow {
                name: get(&r, "name").trim().to_string(),
                pointer: get(&r, "pointer").trim().to_string(),
            })
            .filter(|v| !(v.name.is_empty() && v.pointer.is_empty()))
            .collect();
        let cases = fields
            .iter()
            .filter(|(k, _)| k == "case")
            .filter_map(|(_, v)| serde_json::from_str(v).ok())
            .collect();
        let pending = fields
            .iter()
            .find(|(k, _)| k == "pending")
            .and_then(|(_, v)| serde_json::from_str(v).ok());
        let mut d = Self {
            name: one("name").trim().to_string(),
            description: one("description"),
            trigger: one("trigger"),
            intents: one("intents"),
            patterns: one("patterns"),
            method: one("method"),
            url: one("url").trim().to_string(),
            headers,
            body: one("body"),
            inputs,
            vars,
            reply: one("reply"),
            fallback: one("fallback"),
            mock_status: one("mock-status"),
            mock_body: one("mock-body"),
            cases,
            pending,
            op: one("op"),
        };
        if d.trigger.is_empty() {
            d.trigger = "on-prompt".into();
        }
        if d.method.is_empty() {
            d.method = "GET".into();
        }
        d
    }

    /// Checks every field; `secrets` are the declared secrets' names.
    pub fn check(&self, secrets: &[String]) -> FieldErrors {
        let mut e: FieldErrors = Vec::new();
        if self.name.is_empty() {
            e.push(("name".into(), "Give the action a name.".into()));
        } else if let Err(m) = crate::manifest::check_name(&self.name) {
            e.push((
                "name".into(),
                format!("The name {m}; use lower-case letters, digits and -."),
            ));
        }
        if !["on-prompt", "chat-end"].contains(&self.trigger.as_str()) {
            e.push((
                "trigger-on-prompt".into(),
                "Choose when the request is sent.".into(),
            ));
        }
        if self.trigger == "on-prompt" {
            if self.intents.trim().is_empty() && self.patterns.trim().is_empty() {
                e.push((
                    "patterns".into(),
                    "A request based on the prompt needs at least one intent or message pattern, or it never fires.".into(),
                ));
            }
            for p in self.pattern_list() {
                if let Err(err) = regex::Regex::new(&p) {
                    e.push((
                        "patterns".into(),
                        format!(
                            "The pattern {p:?} is not a valid regular expression: {}",
                            first_line(&err.to_string())
                        ),
                    ));
                }
            }
        }
        if !METHODS.contains(&self.method.as_str()) {
            e.push((
                "method".into(),
                format!("Choose one of {}.", METHODS.join(", ")),
            ));
        }
        match self.allow_prefix() {
            Ok(_) => {}
            Err(m) => e.push(("url".into(), m)),
        }
        for (i, h) in self.headers.iter().enumerate() {
            let id = format!("header-name-{}", i + 1);
            if h.name.is_empty()
                || !h
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                e.push((
                    id,
                    "A header name is letters, digits and - (like X-Api-Key).".into(),
                ));
            }
            if h.value.contains(['\r', '\n']) {
                e.push((
                    format!("header-value-{}", i + 1),
                    "A header value must be one line.".into(),
                ));
            }
            if !h.secret.is_empty() && !secrets.contains(&h.secret) {
                e.push((
                    format!("header-secret-{}", i + 1),
                    "Choose a declared secret.".into(),
                ));
            }
        }
        if !self.body.trim().is_empty() {
            match serde_json::from_str::<Value>(&self.body) {
                Err(err) => e.push(("body".into(), format!("The body template must be JSON ({err}); put variables inside strings, like \"{{{{email}}}}\"."))),
                Ok(v) if has_null(&v) => e.push(("body".into(), "The body template may not contain null; leave the field out instead.".into())),
                Ok(_) => {}
            }
        }
        let mut names = Vec::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let n = i + 1;
            let ok_name = !input.name.is_empty()
                && input
                    .name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && input
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok_name {
                e.push((
                    format!("input-name-{n}"),
                    "An input name is lower-case letters, digits and _ (like order_id).".into(),
                ));
            } else if names.contains(&input.name) {
                e.push((
                    format!("input-name-{n}"),
                    "Each input needs its own name.".into(),
                ));
            }
            names.push(input.name.clone());
            if !TYPES.contains(&input.kind.as_str()) {
                e.push((
                    format!("input-type-{n}"),
                    format!("Choose one of {}.", TYPES.join(", ")),
                ));
            }
            if !input.pattern.is_empty() {
                if input.kind != "string" {
                    e.push((
                        format!("input-pattern-{n}"),
                        "Only text inputs take a pattern.".into(),
                    ));
                } else if let Err(err) = regex::Regex::new(&input.pattern) {
                    e.push((
                        format!("input-pattern-{n}"),
                        format!(
                            "Not a valid regular expression: {}",
                            first_line(&err.to_string())
                        ),
                    ));
                }
            }
            if input.required && input.prompt.trim().is_empty() {
                e.push((
                    format!("input-prompt-{n}"),
                    "A required input needs the question the agent asks for it.".into(),
                ));
            }
            if !input.sample.is_empty() && sample_value(input).is_err() {
                e.push((
                    format!("input-sample-{n}"),
                    format!("The sample is not a valid {}.", input.kind),
                ));
            }
        }
        for (i, v) in self.vars.iter().enumerate() {
            let n = i + 1;
            if v.name.is_empty()
                || !v
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                e.push((
                    format!("var-name-{n}"),
                    "A variable name is letters, digits and _.".into(),
                ));
            }
            if !v.pointer.starts_with('/') {
                e.push((
                    format!("var-pointer-{n}"),
                    "A JSON Pointer starts with / (like /status or /items/0/name).".into(),
                ));
            }
        }
        if self.fallback.trim().is_empty() {
            e.push((
                "fallback".into(),
                "Say what the user is told when the request fails.".into(),
            ));
        }
        e
    }

    /// Checks the Test fields: the mocked status.
    pub fn check_mock(&self) -> FieldErrors {
        match self.mock_status.trim().parse::<u16>() {
            Ok(s) if (100..600).contains(&s) => Vec::new(),
            _ => vec![(
                "mock-status".into(),
                "A status is a number from 100 to 599.".into(),
            )],
        }
    }

    fn pattern_list(&self) -> Vec<String> {
        self.patterns
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    fn intent_list(&self) -> Vec<String> {
        self.intents
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// The grant the endpoint needs: its origin and the fixed part of its path.
    ///
    /// # Errors
    /// A sentence for the URL field.
    pub fn allow_prefix(&self) -> Result<(String, String), String> {
        if self.url.is_empty() {
            return Err(
                "Give the endpoint's URL, like https://api.example.com/orders/{{order_id}}.".into(),
            );
        }
        let fixed = self.url.split("{{").next().unwrap_or_default();
        let probe = self.url.replace("{{", "x").replace("}}", "x");
        let parsed = url::Url::parse(&probe).map_err(|_| {
            "That is not a URL; write it in full, like https://api.example.com/orders/{{order_id}}.".to_string()
        })?;
        if !["http", "https"].contains(&parsed.scheme()) {
            return Err(
                "The URL must start with https:// (or http:// for a local test server).".into(),
            );
        }
        let Some(host) = parsed.host_str() else {
            return Err("The URL needs a host.".into());
        };
        let fixed_url = url::Url::parse(fixed).ok();
        let Some(fixed_url) = fixed_url.filter(|u| u.host_str() == Some(host)) else {
            return Err("The host (and port) must be written out; variables may only come after it, in the path or the query.".into());
        };
        let origin = fixed_url.origin().ascii_serialization();
        let path = fixed_url.path();
        // A variable in the path: grant the fixed folder before it. None (or only in the
        // query): grant exactly the path.
        let in_path = self.url.contains("{{") && !fixed.contains('?');
        let prefix = match path.rfind('/') {
            Some(i) if in_path => &path[..=i],
            _ => path,
        };
        Ok((origin, prefix.to_string()))
    }

    /// The sample inputs, typed.
    pub fn samples(&self) -> Map<String, Value> {
        self.inputs
            .iter()
            .filter(|i| !i.sample.is_empty())
            .filter_map(|i| sample_value(i).ok().map(|v| (i.name.clone(), v)))
            .collect()
    }

    /// The `action.toml` text; `declared` maps each declared secret to its source
    /// (`env:VAR`, `file:KEY`). Call after [`Draft::check`] found nothing.
    ///
    /// # Errors
    /// A sentence, when a value cannot be written as TOML.
    pub fn manifest(&self, declared: &BTreeMap<String, String>) -> Result<String, String> {
        use toml::Value as T;
        let (origin, prefix) = self.allow_prefix()?;
        let mut m = toml::Table::new();
        m.insert("name".into(), T::String(self.name.clone()));
        m.insert(
            "component".into(),
            T::String("builtin:send-api-request".into()),
        );
        if !self.description.trim().is_empty() {
            m.insert(
                "description".into(),
                T::String(self.description.trim().to_string()),
            );
        }
        let mut trigger = toml::Table::new();
        trigger.insert("kind".into(), T::String(self.trigger.clone()));
        if self.trigger == "on-prompt" {
            let intents = self.intent_list();
            if !intents.is_empty() {
                trigger.insert(
                    "intents".into(),
                    T::Array(intents.into_iter().map(T::String).collect()),
                );
            }
            let patterns = self.pattern_list();
            if !patterns.is_empty() {
                trigger.insert(
                    "patterns".into(),
                    T::Array(patterns.into_iter().map(T::String).collect()),
                );
            }
        }
        m.insert("trigger".into(), T::Table(trigger));
        let mut inputs = toml::Table::new();
        for i in &self.inputs {
            let mut t = toml::Table::new();
            t.insert("type".into(), T::String(i.kind.clone()));
            t.insert("required".into(), T::Boolean(i.required));
            if !i.pattern.is_empty() {
                t.insert("pattern".into(), T::String(i.pattern.clone()));
            }
            if !i.prompt.trim().is_empty() {
                t.insert("prompt".into(), T::String(i.prompt.trim().to_string()));
            }
            inputs.insert(i.name.clone(), T::Table(t));
        }
        if !inputs.is_empty() {
            m.insert("inputs".into(), T::Table(inputs));
        }
        let mut request = toml::Table::new();
        request.insert("method".into(), T::String(self.method.clone()));
        request.insert("url".into(), T::String(self.url.clone()));
        let mut headers = toml::Table::new();
        let mut secrets = toml::Table::new();
        for h in &self.headers {
            let mut value = h.value.clone();
            if !h.secret.is_empty() {
                value.push_str(&format!("{{{{secret.{}}}}}", h.secret));
                let source = declared
                    .get(&h.secret)
                    .ok_or_else(|| format!("the secret {} is not declared", h.secret))?;
                let mut s = toml::Table::new();
                s.insert("from".into(), T::String(source.clone()));
                s.insert("hosts".into(), T::Array(vec![T::String(origin.clone())]));
                secrets.insert(h.secret.clone(), T::Table(s));
            }
            headers.insert(h.name.clone(), T::String(value));
        }
        if !headers.is_empty() {
            request.insert("headers".into(), T::Table(headers));
        }
        if !self.body.trim().is_empty() {
            let json: Value = serde_json::from_str(&self.body).map_err(|e| e.to_string())?;
            request.insert(
                "body".into(),
                T::try_from(json).map_err(|e| format!("the body cannot be stored: {e}"))?,
            );
        }
        m.insert("request".into(), T::Table(request));
        let mut response = toml::Table::new();
        if !self.vars.is_empty() {
            let vars: toml::Table = self
                .vars
                .iter()
                .map(|v| (v.name.clone(), T::String(v.pointer.clone())))
                .collect();
            response.insert("variables".into(), T::Table(vars));
        }
        if !self.reply.trim().is_empty() {
            response.insert("reply".into(), T::String(self.reply.trim().to_string()));
        }
        if !response.is_empty() {
            m.insert("response".into(), T::Table(response));
        }
        let mut http = toml::Table::new();
        let mut entry = toml::Table::new();
        entry.insert("url".into(), T::String(format!("{origin}{prefix}")));
        entry.insert(
            "methods".into(),
            T::Array(vec![T::String(self.method.clone())]),
        );
        http.insert("allow".into(), T::Array(vec![T::Table(entry)]));
        m.insert("http".into(), T::Table(http));
        if !secrets.is_empty() {
            m.insert("secrets".into(), T::Table(secrets));
        }
        let mut on_error = toml::Table::new();
        on_error.insert(
            "fallback".into(),
            T::String(self.fallback.trim().to_string()),
        );
        m.insert("on_error".into(), T::Table(on_error));
        let text = toml::to_string(&m).map_err(|e| e.to_string())?;
        Ok(format!(
            "# Written by the Callout console (\"Add new API request\"). Editing it by hand is fine;\n# the console reads it back.\n{text}"
        ))
    }

    /// The kept exchanges as `tests.toml` text.
    ///
    /// # Errors
    /// A sentence, when a case cannot be written as TOML.
    pub fn tests_toml(&self) -> Result<String, String> {
        #[derive(serde::Serialize)]
        struct File<'a> {
            case: &'a [Case],
        }
        let text = toml::to_string(&File { case: &self.cases }).map_err(|e| e.to_string())?;
        Ok(format!(
            "# Test exchanges kept in the Callout console; `callout test {}` runs them.\n{text}",
            self.name
        ))
    }

    /// A draft that edits `manifest` (a built-in "Send API Request") and its `cases`.
    pub fn from_manifest(manifest: &Manifest, cases: Vec<Case>) -> Self {
        let raw = &manifest.raw;
        let s = |t: Option<&toml::Value>| {
            t.and_then(toml::Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let request = raw.request.clone().unwrap_or_default();
        let response = raw.response.clone().unwrap_or_default();
        let mut headers = Vec::new();
        if let Some(h) = request.get("headers").and_then(toml::Value::as_table) {
            for (name, v) in h {
                let v = v.as_str().unwrap_or_default();
                let (value, secret) = match v.rfind("{{secret.") {
                    Some(i) if v.ends_with("}}") => {
                        (v[..i].to_string(), v[i + 9..v.len() - 2].to_string())
                    }
                    _ => (v.to_string(), String::new()),
                };
                headers.push(HeaderRow {
                    name: name.clone(),
                    value,
                    secret,
                });
            }
        }
        let inputs = raw
            .inputs
            .iter()
            .map(|(name, spec)| InputRow {
                name: name.clone(),
                kind: spec.kind.clone().unwrap_or_else(|| "string".into()),
                pattern: spec.pattern.clone().unwrap_or_default(),
                prompt: spec.prompt.clone().unwrap_or_default(),
                required: spec.required.unwrap_or(false),
                sample: String::new(),
            })
            .collect();
        let vars = response
            .get("variables")
            .and_then(toml::Value::as_table)
            .map(|t| {
                t.iter()
                    .map(|(k, v)| VarRow {
                        name: k.clone(),
                        pointer: v.as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = request
            .get("body")
            .and_then(|b| serde_json::to_string_pretty(b).ok())
            .unwrap_or_default();
        Self {
            name: raw.name.clone(),
            description: raw.description.clone().unwrap_or_default(),
            trigger: match raw.trigger.kind {
                crate::manifest::TriggerKind::ChatEnd => "chat-end".into(),
                _ => "on-prompt".into(),
            },
            intents: raw.trigger.intents.join(", "),
            patterns: raw.trigger.patterns.join("\n"),
            method: s(request.get("method")).to_ascii_uppercase(),
            url: s(request.get("url")),
            headers,
            body,
            inputs,
            vars,
            reply: s(response.get("reply")),
            fallback: manifest.on_error.fallback.clone().unwrap_or_default(),
            mock_status: "200".into(),
            mock_body: String::new(),
            cases,
            pending: None,
            op: String::new(),
        }
    }
}

/// The settings of a built-in manifest that [`Draft`] does not carry (so a save from the form
/// would drop them), as `table.key` names.
pub fn unshown_settings(manifest: &Manifest) -> Vec<String> {
    let raw = &manifest.raw;
    let mut out = Vec::new();
    let extra =
        |table: Option<&toml::Table>, known: &[&str], prefix: &str, out: &mut Vec<String>| {
            if let Some(t) = table {
                out.extend(
                    t.keys()
                        .filter(|k| !known.contains(&k.as_str()))
                        .map(|k| format!("{prefix}.{k}")),
                );
            }
        };
    extra(
        raw.request.as_ref(),
        &["method", "url", "headers", "body"],
        "request",
        &mut out,
    );
    extra(
        raw.response.as_ref(),
        &["variables", "reply"],
        "response",
        &mut out,
    );
    let policy = &manifest.on_error;
    if !policy.messages.is_empty() {
        out.push("on_error.messages".into());
    }
    if policy.retry.max > 0 {
        out.push("on_error.retry".into());
    }
    if raw.on_error.as_ref().is_some_and(|o| o.ask_again.is_some()) {
        out.push("on_error.ask_again".into());
    }
    if !raw.trigger.requires.is_empty() {
        out.push("trigger.requires".into());
    }
    if raw.trigger.priority != 0 {
        out.push("trigger.priority".into());
    }
    for (name, spec) in &raw.inputs {
        if spec.extract.is_some() {
            out.push(format!("inputs.{name}.extract"));
        }
        let narrowed = spec.allowed.is_some()
            || spec.minimum.is_some()
            || spec.maximum.is_some()
            || spec.min_length.is_some()
            || spec.max_length.is_some()
            || spec.format.is_some();
        if narrowed {
            out.push(format!("inputs.{name} (enum, bounds or format)"));
        }
    }
    if !raw.config.is_empty() {
        out.push("config".into());
    }
    if raw.signing.is_some() {
        out.push("signing".into());
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s).trim()
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(m) => m.values().any(has_null),
        _ => false,
    }
}

fn sample_value(i: &InputRow) -> Result<Value, ()> {
    let s = i.sample.trim();
    match i.kind.as_str() {
        "integer" => s.parse::<i64>().map(Value::from).map_err(|_| ()),
        "number" => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or(()),
        "boolean" => match s {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(()),
        },
        _ => Ok(Value::String(i.sample.clone())),
    }
}

/// The exchange of a test as a case the builder may keep: the inputs, the response it got
/// (none for a dry run), and what came out as the expectation.
pub fn case_of(
    name: String,
    inputs: Map<String, Value>,
    response: Option<MockResponse>,
    report: &CallReport,
) -> Case {
    let request = report.recorded.first().map(|r| ExpectedRequest {
        method: r.method.clone(),
        url: r.url.clone(),
        headers: r
            .headers
            .iter()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("idempotency-key") {
                    "*".to_string()
                } else {
                    v.clone()
                };
                (k.to_ascii_lowercase(), v)
            })
            .collect(),
        body: r
            .body
            .as_ref()
            .map(|b| serde_json::from_str::<Value>(b).unwrap_or_else(|_| Value::String(b.clone()))),
    });
    let outcome = match &report.result {
        Ok(_) => "ok".to_string(),
        Err(f @ Failure::Upstream { .. }) => crate::error_policy::classify(f).as_str().to_string(),
        Err(f) => f.class().to_string(),
    };
    Case {
        name,
        inputs,
        variables: Map::new(),
        response,
        expect: Expect {
            outcome: Some(outcome),
            request,
            requests: None,
            attempts: None,
            data: None,
            variables: report.result.as_ref().ok().map(|o| o.variables.clone()),
            reply: crate::cases::reply_of(report),
            // A failure's whole message often holds details that change between runs.
            message: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn good() -> Draft {
        Draft::from_fields(&fields(&[
            ("name", "track-order"),
            ("trigger", "on-prompt"),
            ("patterns", "(?i)track"),
            ("method", "GET"),
            ("url", "https://api.example.com/orders/{{order_id}}?x={{q}}"),
            ("header-name-1", "Authorization"),
            ("header-value-1", "Bearer "),
            ("header-secret-1", "ORDERS_TOKEN"),
            ("header-name-2", ""),
            ("header-value-2", ""),
            ("header-secret-2", ""),
            ("input-name-1", "order_id"),
            ("input-type-1", "string"),
            ("input-pattern-1", "^[0-9]{6}$"),
            ("input-prompt-1", "Which order?"),
            ("input-required-1", "on"),
            ("input-sample-1", "123456"),
            ("var-name-1", "status"),
            ("var-pointer-1", "/status"),
            ("reply", "Your order is {{status}}."),
            ("fallback", "Sorry."),
        ]))
    }

    #[test]
    fn a_good_draft_becomes_a_manifest_with_a_narrow_grant() {
        let d = good();
        assert_eq!(d.headers.len(), 1, "empty rows are dropped");
        assert!(d.check(&["ORDERS_TOKEN".into()]).is_empty());
        let declared = BTreeMap::from([(
            "ORDERS_TOKEN".to_string(),
            "env:ORDERS_API_TOKEN".to_string(),
        )]);
        let text = d.manifest(&declared).unwrap();
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            t["http"]["allow"][0]["url"].as_str(),
            Some("https://api.example.com/orders/")
        );
        assert_eq!(
            t["request"]["headers"]["Authorization"].as_str(),
            Some("Bearer {{secret.ORDERS_TOKEN}}")
        );
        assert_eq!(
            t["secrets"]["ORDERS_TOKEN"]["hosts"][0].as_str(),
            Some("https://api.example.com")
        );
        assert_eq!(t["inputs"]["order_id"]["required"].as_bool(), Some(true));
        assert_eq!(d.samples()["order_id"], "123456");
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut d = good();
        d.name = "Bad Name!".into();
        d.url = "https://{{host}}/x".into();
        d.body = "{not json".into();
        d.inputs[0].pattern = "(".into();
        d.vars[0].pointer = "status".into();
        d.headers[0].secret = "NOPE".into();
        let ids: Vec<String> = d.check(&[]).into_iter().map(|(f, _)| f).collect();
        for want in [
            "name",
            "url",
            "body",
            "input-pattern-1",
            "var-pointer-1",
            "header-secret-1",
        ] {
            assert!(ids.contains(&want.to_string()), "{want}: {ids:?}");
        }
        d = good();
        d.url = "not a url".into();
        assert_eq!(d.check(&["ORDERS_TOKEN".into()])[0].0, "url");
    }
}
