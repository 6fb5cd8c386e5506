//! Test cases that live with an action: `[[case]]` tables in `action.toml` or in a `tests.toml`
//! beside it, run through the real component with recorded upstream responses.
//!
//! A case gives the inputs and conversation variables, the recorded response (the format of
//! `callout test --mock`), and what must come out of it:
//!
//! ```toml
//! [[case]]
//! name = "found"
//! inputs = { order_id = "123456" }
//! response = { status = 200, body = { order_id = "123456", status = "shipped" } }
//!
//! [case.expect]
//! outcome = "ok"                       # or a failure class: not-found, timeout, needs-input, ...
//! request = { method = "GET", url = "{{config.base_url}}/orders/123456", headers = { authorization = "Bearer {{secret.ORDERS_TOKEN}}" } }
//! variables = { order_status = "shipped" }
//! reply = "Order 123456 is shipped."
//! ```
//!
//! Nothing leaves the machine: every request the action makes is answered from `response`
//! (a case without one runs as a dry run, where requests are only rendered). Retries happen
//! as configured, without their waits.
//!
//! # How expectations compare
//!
//! - `outcome`: `ok`, `needs-input`, or a failure class, coarse (`upstream`) or fine
//!   (`timeout`, `server-error`, ...; see [`crate::error_policy::ErrorClass`]).
//! - `request`: the first request of the last attempt. `method` and `url` exactly; `headers`
//!   each named header must be present with that value (names case-insensitive, other headers
//!   allowed, `"*"` for any value); `body` as JSON when both sides are JSON, else as text.
//!   Secrets appear as their `{{secret.NAME}}` placeholders; `{{config.KEY}}` and
//!   `{{idempotency_key}}` in expected strings are replaced by the action's effective config
//!   value and by the case's key (`test-<case name>`).
//! - `requests`: how many requests the last attempt made (0 for a call refused before any).
//! - `attempts`: how many attempts ran (retries included).
//! - `data`: every key given must match, recursively (other keys are allowed); arrays and
//!   scalars compare exactly.
//! - `variables`: exactly the variables the outcome set.
//! - `reply`: what the user would see: the outcome's reply, the fallback message of a failure,
//!   or for needs-input the questions asked, one per line.
//! - `message`: text the failure's message must contain (the call must have failed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::call::{Call, CallReport, Failure, MockResponse, Trigger};
use crate::error_policy::{ErrorClass, classify};
use crate::plugin::Plugin;

/// The file beside `action.toml` that may hold more cases.
pub const TESTS_FILE: &str = "tests.toml";

/// One stored test case.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// A short name, unique among the action's cases (`found`, `upstream-down`).
    pub name: String,
    /// The inputs (a JSON object).
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// The conversation's variables.
    #[serde(default)]
    pub variables: Map<String, Value>,
    /// The recorded upstream answer to every request; none: a dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<MockResponse>,
    /// What must come out.
    #[serde(default)]
    pub expect: Expect,
}

/// The expectations of a case; each one left out is not checked.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `ok`, `needs-input`, or a failure class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The request that must be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ExpectedRequest>,
    /// How many requests the last attempt made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<usize>,
    /// How many attempts ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Keys the outcome's data must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The variables the outcome sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<Map<String, Value>>,
    /// What the user would see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Text the failure must say: a part of its message as reported (`not found: there is no
    /// order 999999`), placeholders filled as in `request`. The call must have failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The request a case expects.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The full URL.
    pub url: String,
    /// Headers that must be present, with their values (`"*"`: any value).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body: JSON (any TOML value) or text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestsFile {
    #[serde(default)]
    case: Vec<Case>,
}

/// The cases of an action: those of its `action.toml`, then those of `tests.toml` beside it.
///
/// # Errors
/// A sentence naming the file and the case: an unreadable or malformed `tests.toml`, a
/// duplicate or empty name, an unknown outcome.
pub fn load(plugin: &Plugin) -> Result<Vec<Case>, String> {
    let manifest = plugin.manifest();
    let mut cases: Vec<(PathBuf, Case)> = manifest
        .raw
        .case
        .iter()
        .map(|c| (manifest.path.clone(), c.clone()))
        .collect();
    let tests = tests_path(&manifest.path);
    if tests.is_file() {
        let text = std::fs::read_to_string(&tests)
            .map_err(|e| format!("cannot read {}: {e}", tests.display()))?;
        let file: TestsFile = toml::from_str(&text).map_err(|e| {
            format!(
                "{} is not valid: {}; each case is a [[case]] table with name, inputs, variables, response and [case.expect] (see docs/testing.md)",
                tests.display(),
                crate::config::one_line(&e.to_string())
            )
        })?;
        cases.extend(file.case.into_iter().map(|c| (tests.clone(), c)));
    }
    let mut names = BTreeSet::new();
    for (file, case) in &cases {
        if case.name.trim().is_empty() {
            return Err(format!(
                "{}: a [[case]] has an empty name; give each case a short name such as \"found\"",
                file.display()
            ));
        }
        if !names.insert(case.name.as_str()) {
            return Err(format!(
                "{}: case {:?} is defined twice; give each case its own name",
                file.display(),
                case.name
            ));
        }
        if let Some(outcome) = &case.expect.outcome {
            check_outcome(outcome).map_err(|e| {
                format!(
                    "{}: case {:?}: expect.outcome {e}",
                    file.display(),
                    case.name
                )
            })?;
        }
    }
    Ok(cases.into_iter().map(|(_, c)| c).collect())
}

/// `tests.toml` beside `manifest`.
pub fn tests_path(manifest: &Path) -> PathBuf {
    manifest.parent().unwrap_or(Path::new(".")).join(TESTS_FILE)
}

fn check_outcome(outcome: &str) -> Result<(), String> {
    const COARSE: [&str; 12] = [
        "ok",
        "needs-input",
        "invalid-input",
        "not-found",
        "upstream",
        "denied",
        "internal",
        "deadline",
        "memory-limit",
        "trap",
        "contract",
        "busy",
    ];
    if COARSE.contains(&outcome) || outcome.parse::<ErrorClass>().is_ok() {
        return Ok(());
    }
    let mut all: Vec<&str> = COARSE.to_vec();
    all.extend(ErrorClass::ALL.iter().map(|c| c.as_str()));
    all.sort_unstable();
    all.dedup();
    Err(format!(
        "= {outcome:?} is not an outcome; use one of {}",
        all.join(", ")
    ))
}

/// Whether the case stands for the upstream misbehaving: a transport failure or a 5xx/429.
pub fn is_upstream_failure(case: &Case) -> bool {
    case.response
        .as_ref()
        .is_some_and(|r| r.failure.is_some() || r.status >= 500 || r.status == 429)
}

/// One field that did not come out as expected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    /// Which expectation (`request.url`, `variables`, `data/status`, ...).
    pub field: String,
    /// What the case expects.
    pub expected: String,
    /// What happened.
    pub actual: String,
}

/// How one case went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    /// The case's name.
    pub case: String,
    /// Every expectation that failed; empty when the case passed.
    pub mismatches: Vec<Mismatch>,
    /// The call.
    pub report: CallReport,
}

impl CaseResult {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Runs `case` through `plugin`: the real component, the recorded response, no network.
pub async fn run(plugin: &Plugin, case: &Case) -> CaseResult {
    let key = format!("test-{}", case.name);
    let call = Call {
        trigger: Trigger::Test,
        inputs: case.inputs.clone(),
        variables: case.variables.clone(),
        idempotency_key: Some(key.clone()),
        dry_run: case.response.is_none(),
        mock: case.response.clone().map(Arc::new),
        ..Call::default()
    };
    let report = plugin.invoke(call).await;
    let fill = |s: &str| fill_placeholders(s, plugin, &key);
    let mismatches = compare(&case.expect, &report, &fill);
    CaseResult {
        case: case.name.clone(),
        mismatches,
        report,
    }
}

/// Replaces `{{config.KEY}}` and `{{idempotency_key}}` in an expected string.
fn fill_placeholders(s: &str, plugin: &Plugin, key: &str) -> String {
    if !s.contains("{{") {
        return s.to_string();
    }
    let mut out = s.replace("{{idempotency_key}}", key);
    for (k, _) in plugin.manifest().config.iter() {
        let placeholder = format!("{{{{config.{k}}}}}");
        if out.contains(&placeholder)
            && let Some(v) = plugin.manifest().config_value(k)
        {
            out = out.replace(&placeholder, &v);
        }
    }
    out
}

/// What the user would see after `report`.
pub fn reply_of(report: &CallReport) -> Option<String> {
    match &report.result {
        Ok(o) => o.reply.clone(),
        Err(Failure::NeedsInput { fields }) => Some(
            fields
                .iter()
                .map(|f| {
                    f.prompt
                        .clone()
                        .unwrap_or_else(|| format!("{} {}", f.field, f.reason))
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Err(_) => report.fallback.clone(),
    }
}

fn outcome_matches(expected: &str, result: &Result<crate::call::Outcome, Failure>) -> bool {
    match result {
        Ok(_) => expected == "ok",
        Err(f) => {
            expected == f.class()
                || (!matches!(f, Failure::NeedsInput { .. }) && expected == classify(f).as_str())
        }
    }
}

fn describe_outcome(result: &Result<crate::call::Outcome, Failure>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(f @ Failure::Upstream { .. }) => format!("{} ({f})", classify(f).as_str()),
        Err(f) => format!("{} ({f})", f.class()),
    }
}

fn show(v: Option<&str>) -> String {
    v.map_or_else(|| "(none)".to_string(), |s| format!("{s:?}"))
}

fn compare(expect: &Expect, report: &CallReport, fill: &dyn Fn(&str) -> String) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut miss = |field: &str, expected: String, actual: String| {
        out.push(Mismatch {
            field: field.to_string(),
            expected,
            actual,
        });
    };
    if let Some(o) = &expect.outcome
        && !outcome_matches(o, &report.result)
    {
        miss("outcome", o.clone(), describe_outcome(&report.result));
    }
    let requests = report.recorded.len();
    if let Some(n) = expect.requests
        && n != requests
    {
        miss("requests", n.to_string(), requests.to_string());
    }
    if let Some(n) = expect.attempts
        && n != report.attempts
    {
        miss("attempts", n.to_string(), report.attempts.to_string());
    }
    if let Some(want) = &expect.request {
        match report.recorded.first() {
            None => miss(
                "request",
                format!("{} {}", want.method, fill(&want.url)),
                "no request was made".into(),
            ),
            Some(got) => {
                if !want.method.eq_ignore_ascii_case(&got.method) {
                    miss("request.method", want.method.clone(), got.method.clone());
                }
                let url = fill(&want.url);
                if url != got.url {
                    miss("request.url", url, got.url.clone());
                }
                for (name, value) in &want.headers {
                    let actual = got
                        .headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.as_str());
                    let value = fill(value);
                    let ok = match actual {
                        Some(a) => value == "*" || a == value,
                        None => false,
                    };
                    if !ok {
                        miss(
                            &format!("request.headers.{}", name.to_ascii_lowercase()),
                            format!("{value:?}"),
                            show(actual),
                        );
                    }
                }
                if let Some(body) = &want.body {
                    compare_body(body, got.body.as_deref(), fill, &mut miss);
                }
            }
        }
    }
    let outcome = report.result.as_ref().ok();
    if let Some(want) = &expect.data {
        match outcome {
            None => miss("data", want.to_string(), "no data (the call failed)".into()),
            Some(o) => {
                let mut diffs = Vec::new();
                contains("", want, &o.data, &mut diffs);
                for (path, e, a) in diffs {
                    miss(&format!("data{path}"), e, a);
                }
            }
        }
    }
    if let Some(want) = &expect.variables {
        let got = outcome.map(|o| o.variables.clone()).unwrap_or_default();
        if *want != got {
            miss(
                "variables",
                Value::Object(want.clone()).to_string(),
                Value::Object(got).to_string(),
            );
        }
    }
    if let Some(want) = &expect.reply {
        let got = reply_of(report);
        if got.as_deref() != Some(want.as_str()) {
            miss("reply", format!("{want:?}"), show(got.as_deref()));
        }
    }
    if let Some(want) = &expect.message {
        let want = fill(want);
        match &report.result {
            Err(f) if f.to_string().contains(&want) => {}
            Err(f) => miss(
                "message",
                format!("a failure saying {want:?}"),
                format!("{:?}", f.to_string()),
            ),
            Ok(_) => miss(
                "message",
                format!("a failure saying {want:?}"),
                "ok (the call did not fail)".into(),
            ),
        }
    }
    out
}

fn fill_value(v: &Value, fill: &dyn Fn(&str) -> String) -> Value {
    match v {
        Value::String(s) => Value::String(fill(s)),
        Value::Array(a) => Value::Array(a.iter().map(|x| fill_value(x, fill)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), fill_value(x, fill)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn compare_body(
    want: &Value,
    got: Option<&str>,
    fill: &dyn Fn(&str) -> String,
    miss: &mut dyn FnMut(&str, String, String),
) {
    let Some(got) = got else {
        miss("request.body", want.to_string(), "no body was sent".into());
        return;
    };
    match want {
        Value::String(text) => {
            let text = fill(text);
            let as_json = (
                serde_json::from_str::<Value>(&text),
                serde_json::from_str::<Value>(got),
            );
            let same = match as_json {
                (Ok(a), Ok(b)) => a == b,
                _ => text == got,
            };
            if !same {
                miss("request.body", format!("{text:?}"), format!("{got:?}"));
            }
        }
        json => {
            let want = fill_value(json, fill);
            match serde_json::from_str::<Value>(got) {
                Ok(actual) => {
                    let mut diffs = Vec::new();
                    equal("", &want, &actual, &mut diffs);
                    for (path, e, a) in diffs {
                        miss(&format!("request.body{path}"), e, a);
                    }
                }
                Err(e) => miss(
                    "request.body",
                    want.to_string(),
                    format!("{got:?} (not JSON: {e})"),
                ),
            }
        }
    }
}

type Diffs = Vec<(String, String, String)>;

fn pointer(path: &str, key: &str) -> String {
    format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Exact equality, reported per JSON Pointer.
fn equal(path: &str, want: &Value, got: &Value, out: &mut Diffs) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => equal(&pointer(path, k), wv, gv, out),
                    None => out.push((pointer(path, k), wv.to_string(), "(missing)".into())),
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) {
                    out.push((pointer(path, k), "(absent)".into(), gv.to_string()));
                }
            }
        }
        _ if want == got => {}
        _ => out.push((path.to_string(), want.to_string(), got.to_string())),
    }
}

/// `got` holds every key of `want` (recursively in objects); the rest must be equal.
fn contains(path: &str, want: &Value, got: &Value, out: &mut Diffs) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => contains(&pointer(path, k), wv, gv, out),
                    None => out.push((pointer(path, k), wv.to_string(), "(missing)".into())),
                }
            }
        }
        _ if want == got => {}
        _ => out.push((path.to_string(), want.to_string(), got.to_string())),
    }
}

/// One action's cases, run in order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Suite {
    /// The action.
    pub action: String,
    /// Each case's result, in file order.
    pub results: Vec<CaseResult>,
}

impl Suite {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

/// Runs every case of `plugin`.
///
/// # Errors
/// As [`load`].
pub async fn run_all(plugin: &Plugin) -> Result<Suite, String> {
    let cases = load(plugin)?;
    let mut results = Vec::with_capacity(cases.len());
    for case in &cases {
        results.push(run(plugin, case).await);
    }
    Ok(Suite {
        action: plugin.name().to_string(),
        results,
    })
}

/// A case's result as text: `ok <action> / <case>`, or `FAIL` with one block per mismatch.
pub fn render(action: &str, result: &CaseResult) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if result.passed() {
        let _ = writeln!(s, "ok   {action} / {}", result.case);
        return s;
    }
    let _ = writeln!(s, "FAIL {action} / {}", result.case);
    for m in &result.mismatches {
        let _ = writeln!(s, "  {}", m.field);
        let _ = writeln!(s, "    - expected: {}", m.expected);
        let _ = writeln!(s, "    + actual:   {}", m.actual);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_differences_are_reported_by_pointer() {
        let mut d = Vec::new();
        equal(
            "",
            &json!({"a": 1, "b": {"c": "x"}, "gone": true}),
            &json!({"a": 2, "b": {"c": "x"}, "extra": 1}),
            &mut d,
        );
        let paths: Vec<&str> = d.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(paths, ["/a", "/gone", "/extra"]);
        let mut d = Vec::new();
        contains(
            "",
            &json!({"b": {"c": "x"}}),
            &json!({"a": 2, "b": {"c": "y", "d": 1}}),
            &mut d,
        );
        assert_eq!(
            d,
            vec![("/b/c".to_string(), "\"x\"".to_string(), "\"y\"".to_string())]
        );
    }

    #[test]
    fn outcomes_are_checked_against_the_known_classes() {
        for ok in ["ok", "needs-input", "upstream", "timeout", "server-error"] {
            assert!(check_outcome(ok).is_ok(), "{ok}");
        }
        let e = check_outcome("fine").unwrap_err();
        assert!(e.contains("not-found") && e.contains("timeout"), "{e}");
    }

    fn report(result: Result<crate::call::Outcome, Failure>) -> CallReport {
        CallReport {
            result,
            idempotency_key: "test-case".into(),
            recorded: Vec::new(),
            responses: Vec::new(),
            requests: Vec::new(),
            output: Default::default(),
            attempts: 1,
            fallback: None,
            elapsed_us: 0,
        }
    }

    #[test]
    fn a_message_expectation_checks_the_failures_words() {
        let expect = Expect {
            message: Some("no order {{order}}".into()),
            ..Expect::default()
        };
        let fill = |s: &str| s.replace("{{order}}", "999999");
        let not_found = report(Err(Failure::NotFound {
            message: "there is no order 999999".into(),
        }));
        assert!(compare(&expect, &not_found, &fill).is_empty());
        let other = report(Err(Failure::NotFound {
            message: "there is no order 123456".into(),
        }));
        let m = compare(&expect, &other, &fill);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].field, "message");
        assert_eq!(m[0].expected, "a failure saying \"no order 999999\"");
        assert_eq!(m[0].actual, "\"not found: there is no order 123456\"");
        let ok = report(Ok(crate::call::Outcome {
            data: json!({}),
            reply: None,
            variables: Map::new(),
        }));
        let m = compare(&expect, &ok, &fill);
        assert_eq!(m[0].actual, "ok (the call did not fail)");
    }

    #[test]
    fn a_timeout_matches_its_coarse_and_its_fine_class() {
        let r: Result<crate::call::Outcome, Failure> = Err(Failure::Upstream {
            kind: crate::call::UpstreamKind::Timeout,
            status: None,
            retry_after_ms: None,
            message: "x".into(),
        });
        assert!(outcome_matches("upstream", &r));
        assert!(outcome_matches("timeout", &r));
        assert!(!outcome_matches("ok", &r));
        assert!(!outcome_matches("connect", &r));
    }
}
