//! `send-api-request`: Callout's built-in no-code action. It sends one API request configured
//! entirely in `action.toml`, and turns the response into the outcome.
//!
//! # Configuration
//!
//! The host passes the configuration through the `config` import, each reserved key as JSON
//! text:
//!
//! - `inputs`: the manifest's `[inputs]` (`{"order_id": {"type": "string", "pattern": ...,
//!   "prompt": ..., "required": true}, ...}`). `describe()` builds the input schema from it:
//!   `type` (default `"string"`), `pattern`, `format`, `enum`, `minimum`, `maximum`,
//!   `min_length` → `minLength`, `max_length` → `maxLength`, `prompt` → `description`, and
//!   `required = true` fields in `required`; no other property is accepted.
//! - `request` (required): `{"method": "POST", "url": "...", "headers": {"name": "value"},
//!   "body": <any JSON>, "timeout_ms": 5000}`; `method` defaults to `GET`, the rest is optional.
//!   The URL, the header values and every string in the body are templates.
//! - `response` (optional): `{"variables": {"name": "/json/pointer"}, "reply": "template",
//!   "not_found": [404]}`.
//! - any other key `KEY` is `{{config.KEY}}` in templates.
//!
//! Template syntax and how each value is made safe where it lands: see [`template`].
//!
//! # A call
//!
//! 1. Inputs holding `{{` are refused (`invalid-input`); the request is rendered, and the reply
//!    template checked, before anything is sent. Writes (POST, PUT, PATCH, DELETE) carry the
//!    call's `Idempotency-Key` and a body `content-type: application/json`, unless the
//!    configured headers set them.
//! 2. The request goes out through `outbound-http`; its failures map as the SDK maps them
//!    (`denied`, `upstream` timeout/connect/protocol, `internal` for an invalid request). In a
//!    dry run the call succeeds with `data` = `null`.
//! 3. A status in `not_found` is `not-found` ("the API answered 404"); 429 is upstream
//!    rate-limited (with Retry-After), 5xx server-error, other 4xx client-error. Otherwise
//!    `data` is the body as JSON (empty: `null`; not JSON: its text), `variables` what the
//!    pointers pick out of it (a missing one is `null`, with a warning in the log), and the
//!    reply the rendered `reply` template.

pub mod spec;
pub mod template;

use std::time::Duration;

use callout_guest::bindings::exports::callout::plugin::action::{
    ActionError as WitError, Descriptor, Guest, Invocation, Outcome,
};
use callout_guest::{ActionError, config, http, log};
use serde_json::Value;

/// The component's export.
struct SendApiRequest;

impl Guest for SendApiRequest {
    fn describe() -> Descriptor {
        let inputs = config::get(spec::INPUTS_KEY);
        let input_schema = spec::input_schema(inputs.as_deref()).unwrap_or_else(|e| {
            log::error(format!("{e}; describing the action with no inputs"));
            spec::empty_input_schema()
        });
        Descriptor {
            name: spec::NAME.into(),
            description: spec::DESCRIPTION.into(),
            input_schema: input_schema.to_string(),
            output_schema: spec::output_schema().to_string(),
        }
    }

    fn invoke(call: Invocation) -> Result<Outcome, WitError> {
        run(&call).map_err(|e| {
            e.to_wit()
                .unwrap_or_else(|| WitError::Internal("unexpected dry-run marker".into()))
        })
    }
}

/// One call: plan, send, interpret.
fn run(call: &Invocation) -> Result<Outcome, ActionError> {
    let lookup = |key: &str| config::get(key);
    let job = spec::Job::load(
        &call.inputs,
        &call.variables,
        &call.idempotency_key,
        &lookup,
    )?;
    let plan = job.plan(&lookup)?;
    // The plan already carries the Idempotency-Key where one belongs.
    let mut request = http::request(plan.method, plan.url).idempotency_key(None);
    for (name, value) in plan.headers {
        request = request.header(name, value);
    }
    if let Some(body) = plan.body {
        request = request.body(body);
    }
    if let Some(ms) = plan.timeout_ms {
        request = request.timeout(Duration::from_millis(u64::from(ms)));
    }
    let response = match request.send() {
        Ok(response) => response,
        Err(e) if e.is_dry_run() => {
            return Ok(Outcome {
                data: "null".into(),
                reply: None,
                variables: "{}".into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let done = job.finish(response, &lookup)?;
    for (name, pointer) in &done.missing {
        log::warn(format!(
            "response.variables.{name}: the response has nothing at {pointer:?}; set to null"
        ));
    }
    Ok(Outcome {
        data: done.data.to_string(),
        reply: done.reply,
        variables: Value::Object(done.variables).to_string(),
    })
}

callout_guest::export!(SendApiRequest with_types_in callout_guest::bindings);
