//! Lints for the classic mistakes of API actions, run by `callout check` and by the publish gate.
//!
//! Each finding has a stable code, a severity, the file and field at fault, and the fix:
//!
//! | code | severity | finds |
//! | --- | --- | --- |
//! | `CL001` | error | a URL, header, body or reply template names a variable that is neither a declared input nor a known conversation variable (nor a declared secret or config key) |
//! | `CL002` | error | an on-prompt action that writes (POST, PUT, PATCH, DELETE) and requires no input |
//! | `CL101` | warning | no error handling: no fallback message, no per-class message, no retry |
//! | `CL102` | warning | a write sent without an `Idempotency-Key` while retries are on |
//! | `CL103` | warning | no test cases |
//! | `CL104` | warning | no test case covers an upstream failure (a transport failure, 5xx or 429) |
//! | `CL105` | warning | a response mapping points (JSON Pointer) at something no test case's response contains |
//! | `CL106` | warning | a request body declared JSON that is not, for a test case's inputs |
//! | `CL107` | warning | an on-prompt GET that takes no inputs and no variables: static information, not a live call |
//!
//! *Known conversation variables* are those some action is known to set, the variables of the
//! built-in's `[response] variables` and of every test case's `expect.variables`, plus those the
//! action's own `[trigger] requires` lists. Templates are only visible for the built-in
//! "Send API Request"; for other plugins CL001, CL105 and CL107 have nothing to read, and the
//! findings that need requests come from running the test cases.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde_json::Value;

use crate::cases::{Case, CaseResult};
use crate::manifest::TriggerKind;
use crate::plugin::Plugin;
use crate::policy::Method;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Blocks publishing.
    Error,
    /// Reported; blocks only under `--deny-warnings`.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The stable code (`CL001`, ...).
    pub code: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// The file at fault.
    pub file: PathBuf,
    /// The field (`request.url`, `on_error`, ...).
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}] {}: {}: {}; fix: {}",
            self.severity.as_str(),
            self.code,
            self.file.display(),
            self.field,
            self.message,
            self.fix
        )
    }
}

/// The variables known to be set in conversations: those the built-in actions of `plugins`
/// map from responses, and those their test cases expect to be set.
pub fn known_variables<'a>(
    plugins: impl IntoIterator<Item = (&'a Plugin, &'a [Case])>,
) -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    for (plugin, cases) in plugins {
        if let Some(vars) = plugin
            .manifest()
            .raw
            .response
            .as_ref()
            .and_then(|r| r.get("variables"))
            .and_then(toml::Value::as_table)
        {
            known.extend(vars.keys().cloned());
        }
        for case in cases {
            if let Some(v) = &case.expect.variables {
                known.extend(v.keys().cloned());
            }
        }
    }
    known
}

/// Every `{{name}}` in `template`, trimmed.
fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        out.push(after[..close].trim().to_string());
        rest = &after[close + 2..];
    }
    out
}

/// Every template string of a JSON body, with its pointer.
fn body_strings(path: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::String(s) => out.push((path.to_string(), s.clone())),
        toml::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                body_strings(&format!("{path}/{i}"), x, out);
            }
        }
        toml::Value::Table(t) => {
            for (k, x) in t {
                body_strings(&format!("{path}/{k}"), x, out);
            }
        }
        _ => {}
    }
}

/// The built-in's templates: (field, template), in a stable order.
fn templates(plugin: &Plugin) -> Vec<(String, String)> {
    let raw = &plugin.manifest().raw;
    let mut out = Vec::new();
    if let Some(req) = &raw.request {
        if let Some(url) = req.get("url").and_then(toml::Value::as_str) {
            out.push(("request.url".into(), url.to_string()));
        }
        if let Some(h) = req.get("headers").and_then(toml::Value::as_table) {
            for (k, v) in h {
                if let Some(s) = v.as_str() {
                    out.push((format!("request.headers.{k}"), s.to_string()));
                }
            }
        }
        if let Some(body) = req.get("body") {
            let mut strings = Vec::new();
            body_strings("", body, &mut strings);
            for (p, s) in strings {
                let field = if p.is_empty() {
                    "request.body".to_string()
                } else {
                    format!("request.body{p}")
                };
                out.push((field, s));
            }
        }
    }
    if let Some(reply) = raw
        .response
        .as_ref()
        .and_then(|r| r.get("reply"))
        .and_then(toml::Value::as_str)
    {
        out.push(("response.reply".into(), reply.to_string()));
    }
    out
}

/// The methods the action may use: the built-in's configured method, else every method its
/// grants allow.
fn methods(plugin: &Plugin) -> Vec<Method> {
    let m = plugin.manifest();
    if let Some(req) = &m.raw.request {
        let name = req
            .get("method")
            .and_then(toml::Value::as_str)
            .unwrap_or("GET")
            .to_ascii_uppercase();
        return Method::ALL
            .iter()
            .copied()
            .filter(|x| x.as_str() == name)
            .collect();
    }
    let mut out: Vec<Method> = m
        .http
        .allow
        .entries()
        .iter()
        .flat_map(|e| e.methods().iter().copied())
        .collect();
    out.sort_by_key(|x| x.as_str());
    out.dedup();
    out
}

fn is_write(m: Method) -> bool {
    matches!(
        m,
        Method::Post | Method::Put | Method::Patch | Method::Delete
    )
}

/// Lints `plugin`, given its cases and their results (run them first with
/// [`crate::cases::run`]) and the conversation variables known across the deployment.
pub fn lint(
    plugin: &Plugin,
    cases: &[Case],
    results: &[CaseResult],
    known: &BTreeSet<String>,
) -> Vec<Finding> {
    let m = plugin.manifest();
    let file = m.path.clone();
    let tests_file = crate::cases::tests_path(&m.path);
    let mut out = Vec::new();
    let mut add = |code, severity, file: &PathBuf, field: &str, message: String, fix: String| {
        out.push(Finding {
            code,
            severity,
            file: file.clone(),
            field: field.to_string(),
            message,
            fix,
        });
    };
    let inputs: BTreeSet<String> = plugin
        .descriptor()
        .input_schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let required: Vec<String> = plugin
        .descriptor()
        .input_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let requires = &m.raw.trigger.requires;
    let mapped: BTreeSet<String> = m
        .raw
        .response
        .as_ref()
        .and_then(|r| r.get("variables"))
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();

    // CL001: templates naming what nothing provides. Each placeholder resolves to a config
    // key, a secret, or an input/variable; the first that is missing is the finding.
    let mut uses_values = false;
    for (field, template) in templates(plugin) {
        for name in placeholders(&template) {
            let unresolved = if name == "idempotency_key" {
                None
            } else if let Some(key) = name.strip_prefix("config.") {
                (!m.config.contains_key(key)).then(|| {
                    (
                        format!("names the config key {key:?}, which [config] does not set"),
                        format!("add {key} to [config], or fix the name"),
                    )
                })
            } else if let Some(secret) = name.strip_prefix("secret.") {
                (!m.secrets.contains_key(secret)).then(|| {
                    (
                        format!("names the secret {secret:?}, which [secrets] does not declare"),
                        format!(
                            "declare [secrets.{secret}] with its source and hosts, or fix the name"
                        ),
                    )
                })
            } else {
                uses_values = true;
                let in_reply = field == "response.reply" && mapped.contains(&name);
                let provided = inputs.contains(&name)
                    || requires.contains(&name)
                    || known.contains(&name)
                    || in_reply;
                (!provided).then(|| {
                    (
                        "is neither a declared input nor a known conversation variable, so the request cannot be filled".to_string(),
                        format!("declare it under [inputs.{name}] (with a prompt), list it in [trigger] requires if another action sets it, or fix the name"),
                    )
                })
            };
            if let Some((message, fix)) = unresolved {
                add(
                    "CL001",
                    Severity::Error,
                    &file,
                    &field,
                    format!("{{{{{name}}}}} {message}"),
                    fix,
                );
            }
        }
    }
    uses_values |= !requires.is_empty();

    let methods = methods(plugin);
    let on_prompt = m.raw.trigger.kind == TriggerKind::OnPrompt;
    // CL002: an on-prompt write that nothing gates.
    if on_prompt && methods.iter().any(|x| is_write(*x)) && required.is_empty() {
        let writes: Vec<&str> = methods
            .iter()
            .filter(|x| is_write(**x))
            .map(|x| x.as_str())
            .collect();
        add(
            "CL002",
            Severity::Error,
            &file,
            "trigger.kind",
            format!(
                "this on-prompt action may send {} but requires no input, so it would fire on a matching message before anything was collected",
                writes.join(", ")
            ),
            "mark the values it needs required ([inputs.<name>] required = true, with a prompt), or make it a tool or chat-end action".into(),
        );
    }

    // CL101: nothing said about failures.
    let policy = &m.on_error;
    if policy.fallback.is_none() && policy.messages.is_empty() && policy.retry.max == 0 {
        add(
            "CL101",
            Severity::Warning,
            &file,
            "on_error",
            "no error handling is configured: when the API misbehaves the user gets no message and nothing is retried".into(),
            "add [on_error] fallback = \"...\" (and [on_error.retry] for transient failures)".into(),
        );
    }

    // CL102: retried writes without a key, as the cases show them.
    if policy.retry.max > 0 {
        let mut seen = BTreeSet::new();
        for r in results {
            for req in &r.report.recorded {
                let method = req.method.to_ascii_uppercase();
                let write = ["POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str());
                let keyed = req
                    .headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("idempotency-key"));
                if write && !keyed && seen.insert(method.clone()) {
                    add(
                        "CL102",
                        Severity::Warning,
                        &file,
                        "on_error.retry",
                        format!(
                            "retries are on but the {method} of case {:?} carries no Idempotency-Key, so a retry may repeat the write (and the host will not retry it)",
                            r.case
                        ),
                        "send the call's idempotency key as an Idempotency-Key header (the SDK's http helpers and the built-in do), or turn retries off".into(),
                    );
                }
            }
        }
    }

    // CL103, CL104: cases.
    if cases.is_empty() {
        add(
            "CL103",
            Severity::Warning,
            &tests_file,
            "case",
            "the action has no test cases, so nothing shows that its request is right or that its answer is handled".into(),
            format!(
                "add [[case]] tables to {} (success, not-found or invalid input, upstream failure; see docs/testing.md)",
                tests_file.display()
            ),
        );
    } else if !cases.iter().any(crate::cases::is_upstream_failure) && !methods.is_empty() {
        add(
            "CL104",
            Severity::Warning,
            &tests_file,
            "case",
            "no test case covers an upstream failure, so what the user sees when the API is down is untested".into(),
            "add a case whose response is { failure = \"timeout\" } or { status = 503 }, and expect its reply".into(),
        );
    }

    // CL105: response mappings no recorded response contains.
    if let Some(vars) = m
        .raw
        .response
        .as_ref()
        .and_then(|r| r.get("variables"))
        .and_then(toml::Value::as_table)
    {
        let bodies: Vec<Value> = cases
            .iter()
            .filter_map(|c| c.response.as_ref())
            .filter(|r| r.failure.is_none() && (200..300).contains(&r.status))
            .filter_map(|r| match &r.body {
                Some(Value::String(s)) => serde_json::from_str(s).ok(),
                Some(v) => Some(v.clone()),
                None => None,
            })
            .collect();
        for (name, ptr) in vars {
            let Some(ptr) = ptr.as_str() else { continue };
            if !bodies.iter().any(|b| b.pointer(ptr).is_some()) {
                add(
                    "CL105",
                    Severity::Warning,
                    &file,
                    &format!("response.variables.{name}"),
                    format!(
                        "{ptr:?} is in no test case's successful response, so {name} may always be null"
                    ),
                    "fix the pointer, or add a case with the response the API really sends".into(),
                );
            }
        }
    }

    // CL106: bodies that say JSON and are not (reported once, for the first case).
    'cl106: for r in results {
        for req in &r.report.recorded {
            let json_type = req.headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("content-type") && v.to_ascii_lowercase().contains("json")
            });
            if let (true, Some(body)) = (json_type, &req.body)
                && let Err(e) = serde_json::from_str::<Value>(body)
            {
                add(
                    "CL106",
                    Severity::Warning,
                    &file,
                    "request.body",
                    format!(
                        "for case {:?} the body sent as JSON is not JSON ({e}): {body:?}",
                        r.case
                    ),
                    "build the body as a JSON value (a [request] body table, or serde_json in code) instead of pasting text".into(),
                );
                break 'cl106;
            }
        }
    }

    // CL107: a live call for what never changes.
    let reads_only = !methods.is_empty() && methods.iter().all(|x| *x == Method::Get);
    if on_prompt && reads_only && inputs.is_empty() && !uses_values {
        add(
            "CL107",
            Severity::Warning,
            &file,
            "trigger.kind",
            "an on-prompt GET that takes no inputs and no variables fetches the same thing every time: static information the agent should already know".into(),
            "put the information in the agent's instructions, or give the action the inputs that make the call specific".into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_and_trimmed() {
        assert_eq!(
            placeholders("{{config.base_url}}/x/{{ id }}?q={{q}}&z={{"),
            ["config.base_url", "id", "q"]
        );
        assert!(placeholders("no braces").is_empty());
    }
}
