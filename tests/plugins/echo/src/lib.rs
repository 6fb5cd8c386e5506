//! `echo`: a well-behaved action used by most host tests.
//!
//! It echoes its inputs and the invocation's context back as `data`, and, when `url` is given,
//! makes exactly one request through `outbound-http`, mapping each outcome to the contract's
//! errors. `calls_in_this_instance` counts invocations in this instance: the host gives every
//! call a fresh instance, so tests expect it to always be 1.

use std::sync::atomic::{AtomicU32, Ordering};

use callout_guest::bindings::callout::plugin::{config, log, outbound_http as http};
use callout_guest::bindings::exports::callout::plugin::action::{
    ActionError, Descriptor, FieldError, Guest, Invocation, Outcome, TriggerKind, UpstreamError,
    UpstreamKind,
};
use serde_json::{Map, Value, json};

static CALLS: AtomicU32 = AtomicU32::new(0);

const INPUT_SCHEMA: &str = r#"{"type":"object","properties":{"message":{"type":"string","maxLength":200},"count":{"type":"integer","minimum":0,"maximum":10},"color":{"type":"string","enum":["red","green","blue"]},"url":{"type":"string"},"method":{"type":"string"},"headers":{"type":"object","additionalProperties":{"type":"string"}},"body":{"type":"string"},"bearer_secret":{"type":"string"},"query_secret":{"type":"string"},"body_secret":{"type":"string"},"timeout_ms":{"type":"integer","minimum":1}},"required":["message"],"additionalProperties":false}"#;
const OUTPUT_SCHEMA: &str = r#"{"type":"object"}"#;

struct Echo;

impl Guest for Echo {
    fn describe() -> Descriptor {
        Descriptor {
            name: "echo".into(),
            description: "Echoes its inputs and can make one HTTP request".into(),
            input_schema: INPUT_SCHEMA.into(),
            output_schema: OUTPUT_SCHEMA.into(),
        }
    }

    fn invoke(call: Invocation) -> Result<Outcome, ActionError> {
        let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        println!("echo: invoked");
        log::log(
            log::Level::Info,
            &format!("echo invoked as {} (attempt {})", call.action, call.attempt),
        );

        let inputs: Map<String, Value> = serde_json::from_str(&call.inputs)
            .map_err(|e| ActionError::Internal(format!("inputs are not a JSON object: {e}")))?;
        let message = match inputs.get("message") {
            Some(Value::String(m)) => m.clone(),
            _ => return Err(invalid("message", "is required and must be a string")),
        };
        if message == "fail-validation" {
            return Err(invalid("message", "must not be fail-validation"));
        }
        let variables: Value = serde_json::from_str(&call.variables)
            .map_err(|e| ActionError::Internal(format!("variables are not JSON: {e}")))?;

        let mut data = json!({
            "message": message,
            "count": inputs.get("count").cloned().unwrap_or(Value::Null),
            "color": inputs.get("color").cloned().unwrap_or(Value::Null),
            "calls_in_this_instance": calls,
            "trigger": trigger_name(call.trigger),
            "idempotency_key": call.idempotency_key,
            "attempt": call.attempt,
            "dry_run": call.dry_run,
            "conversation_id": call.conversation_id,
            "greeting": config::get("greeting"),
            "variables": variables,
        });

        if let Some(url) = inputs.get("url") {
            let url = url
                .as_str()
                .ok_or_else(|| invalid("url", "must be a string"))?;
            data["http"] = request(url, &inputs)?;
        }

        Ok(Outcome {
            data: data.to_string(),
            reply: Some(format!("echo: {message}")),
            variables: json!({ "last_message": message }).to_string(),
        })
    }
}

fn invalid(field: &str, reason: &str) -> ActionError {
    ActionError::InvalidInput(vec![FieldError {
        field: field.into(),
        reason: reason.into(),
    }])
}

fn trigger_name(trigger: TriggerKind) -> &'static str {
    match trigger {
        TriggerKind::ToolCall => "tool-call",
        TriggerKind::OnPrompt => "on-prompt",
        TriggerKind::ChatEnd => "chat-end",
        TriggerKind::Test => "test",
    }
}

fn upstream(
    kind: UpstreamKind,
    status: Option<u16>,
    retry_after_ms: Option<u64>,
    message: String,
) -> ActionError {
    ActionError::Upstream(UpstreamError {
        kind,
        status,
        retry_after_ms,
        message,
    })
}

/// Sends the one request described by `inputs` and returns what goes under `data.http`.
fn request(url: &str, inputs: &Map<String, Value>) -> Result<Value, ActionError> {
    let method = match inputs.get("method") {
        None | Some(Value::Null) => http::Method::Get,
        Some(Value::String(m)) => match m.to_ascii_lowercase().as_str() {
            "get" => http::Method::Get,
            "head" => http::Method::Head,
            "post" => http::Method::Post,
            "put" => http::Method::Put,
            "patch" => http::Method::Patch,
            "delete" => http::Method::Delete,
            "options" => http::Method::Options,
            _ => return Err(invalid("method", "is not a supported HTTP method")),
        },
        Some(_) => return Err(invalid("method", "must be a string")),
    };
    let headers = match inputs.get("headers") {
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
    let mut headers: Vec<(String, String)> = headers;
    let mut body = match inputs.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(b)) => Some(b.as_bytes().to_vec()),
        Some(_) => return Err(invalid("body", "must be a string")),
    };
    // The plugin's own use of a secret: the input names the secret, and the plugin writes the
    // placeholder itself (a placeholder copied from the inputs would be the user's words, which
    // the host refuses).
    let secret_name = |field: &str| -> Result<Option<String>, ActionError> {
        match inputs.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(name)) => Ok(Some(name.clone())),
            Some(_) => Err(invalid(field, "must be a secret's name")),
        }
    };
    if let Some(name) = secret_name("bearer_secret")? {
        headers.push((
            "authorization".into(),
            format!("Bearer {{{{secret.{name}}}}}"),
        ));
    }
    let mut url = url.to_string();
    if let Some(name) = secret_name("query_secret")? {
        let sep = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{sep}token={{{{secret.{name}}}}}");
    }
    if let Some(name) = secret_name("body_secret")? {
        body = Some(format!("{{\"token\":\"{{{{secret.{name}}}}}\"}}").into_bytes());
    }

    let response = match http::send(&http::Request {
        method,
        url,
        headers,
        body,
        timeout_ms: inputs
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .map(|t| t as u32),
    }) {
        Ok(response) => response,
        Err(http::HttpError::Denied(d)) => return Err(ActionError::Denied(d)),
        Err(http::HttpError::DryRun) => return Ok(Value::String("dry-run".into())),
        Err(http::HttpError::Timeout) => {
            return Err(upstream(
                UpstreamKind::Timeout,
                None,
                None,
                "upstream timed out".into(),
            ));
        }
        Err(http::HttpError::Connect(m)) => {
            return Err(upstream(UpstreamKind::Connect, None, None, m));
        }
        Err(http::HttpError::ResponseTooLarge(n)) => {
            return Err(upstream(
                UpstreamKind::Protocol,
                None,
                None,
                format!("response larger than {n} bytes"),
            ));
        }
        Err(http::HttpError::Protocol(m)) => {
            return Err(upstream(UpstreamKind::Protocol, None, None, m));
        }
        Err(http::HttpError::InvalidRequest(m)) => return Err(ActionError::Internal(m)),
    };

    let status = response.status;
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    match status {
        404 => {
            return Err(ActionError::NotFound(
                "the upstream answered 404 Not Found".into(),
            ));
        }
        429 => {
            let retry_after_ms = header("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|secs| secs.saturating_mul(1000));
            return Err(upstream(
                UpstreamKind::RateLimited,
                Some(status),
                retry_after_ms,
                "the upstream answered 429 Too Many Requests".into(),
            ));
        }
        500..=599 => {
            return Err(upstream(
                UpstreamKind::ServerError,
                Some(status),
                None,
                format!("the upstream answered {status}"),
            ));
        }
        _ => {}
    }

    let headers: Map<String, Value> = response
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), Value::String(v.clone())))
        .collect();
    Ok(json!({
        "status": status,
        "body": String::from_utf8_lossy(&response.body),
        "headers": headers,
    }))
}

callout_guest::export!(Echo);
