//! `ssrf-probe`: sends one request per URL of a corpus and reports what became of each.
//!
//! Used by the host's SSRF tests (tests/integration/ssrf.rs). Request failures are data, never an
//! action error, so one call can test a whole corpus: every URL gets a result
//! `{"url", "outcome", "message"}` where `outcome` is one of `denied:<code>`, `status:<NNN>`,
//! `invalid-request`, `timeout`, `connect`, `response-too-large`, `protocol` or `dry-run`.

use callout_guest::bindings::callout::plugin::outbound_http as http;
use callout_guest::bindings::exports::callout::plugin::action::{
    ActionError, Descriptor, FieldError, Guest, Invocation, Outcome,
};
use serde_json::{Map, Value, json};

const INPUT_SCHEMA: &str = r#"{"type":"object","properties":{"urls":{"type":"array","items":{"type":"string"}},"method":{"type":"string"},"headers":{"type":"object"}},"required":["urls"]}"#;
const OUTPUT_SCHEMA: &str = r#"{"type":"object"}"#;

/// Longest piece of a response body quoted in a result message, in characters.
const BODY_QUOTE: usize = 200;

struct Probe;

impl Guest for Probe {
    fn describe() -> Descriptor {
        Descriptor {
            name: "ssrf-probe".into(),
            description: "Sends one request per URL and reports each outcome".into(),
            input_schema: INPUT_SCHEMA.into(),
            output_schema: OUTPUT_SCHEMA.into(),
        }
    }

    fn invoke(call: Invocation) -> Result<Outcome, ActionError> {
        let inputs: Map<String, Value> = serde_json::from_str(&call.inputs)
            .map_err(|e| ActionError::Internal(format!("inputs are not a JSON object: {e}")))?;
        let urls: Vec<String> = match inputs.get("urls") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|u| {
                    u.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| invalid("urls", "items must be strings"))
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(invalid(
                    "urls",
                    "is required and must be an array of strings",
                ));
            }
        };
        let method = match inputs.get("method") {
            None | Some(Value::Null) => http::Method::Get,
            Some(Value::String(m)) => {
                method_of(m).ok_or_else(|| invalid("method", "is not a supported HTTP method"))?
            }
            Some(_) => return Err(invalid("method", "must be a string")),
        };
        let headers: Vec<(String, String)> = match inputs.get("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(h)) => h
                .iter()
                .map(|(name, value)| match value {
                    Value::String(v) => Ok((name.clone(), v.clone())),
                    _ => Err(invalid("headers", "values must be strings")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("headers", "must be an object")),
        };

        let results: Vec<Value> = urls
            .iter()
            .map(|url| {
                let (outcome, message) = probe(method, url, &headers);
                json!({"url": url, "outcome": outcome, "message": message})
            })
            .collect();
        Ok(Outcome {
            data: json!({ "results": results }).to_string(),
            reply: None,
            variables: "{}".into(),
        })
    }
}

/// Sends one request and classifies what came back.
fn probe(method: http::Method, url: &str, headers: &[(String, String)]) -> (String, String) {
    let result = http::send(&http::Request {
        method,
        url: url.into(),
        headers: headers.to_vec(),
        body: None,
        timeout_ms: None,
    });
    match result {
        Ok(response) => {
            let location = response
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("location"))
                .map(|(_, v)| format!(" (location: {v})"))
                .unwrap_or_default();
            let body: String = String::from_utf8_lossy(&response.body)
                .chars()
                .take(BODY_QUOTE)
                .collect();
            (
                format!("status:{}", response.status),
                format!("{body}{location}"),
            )
        }
        Err(http::HttpError::Denied(d)) => (format!("denied:{}", d.code), d.message),
        Err(http::HttpError::InvalidRequest(m)) => ("invalid-request".into(), m),
        Err(http::HttpError::Timeout) => ("timeout".into(), String::new()),
        Err(http::HttpError::Connect(m)) => ("connect".into(), m),
        Err(http::HttpError::ResponseTooLarge(n)) => {
            ("response-too-large".into(), format!("over {n} bytes"))
        }
        Err(http::HttpError::Protocol(m)) => ("protocol".into(), m),
        Err(http::HttpError::DryRun) => ("dry-run".into(), String::new()),
    }
}

fn method_of(name: &str) -> Option<http::Method> {
    Some(match name.to_ascii_lowercase().as_str() {
        "get" => http::Method::Get,
        "head" => http::Method::Head,
        "post" => http::Method::Post,
        "put" => http::Method::Put,
        "patch" => http::Method::Patch,
        "delete" => http::Method::Delete,
        "options" => http::Method::Options,
        _ => return None,
    })
}

fn invalid(field: &str, reason: &str) -> ActionError {
    ActionError::InvalidInput(vec![FieldError {
        field: field.into(),
        reason: reason.into(),
    }])
}

callout_guest::export!(Probe);
