//! The action's configuration (the reserved config keys `inputs`, `request` and `response`,
//! each JSON text) and the two pure halves of a call: the request to send, and what the
//! response means. Nothing here touches the host, so all of it runs in native tests.

use std::collections::BTreeMap;

use callout_guest::ActionError;
use callout_guest::http::{Method, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::template::{self, Scope};

/// The component's name.
pub const NAME: &str = "send-api-request";

/// The component's description.
pub const DESCRIPTION: &str = "Sends one configured API request (no-code)";

/// The config key holding the manifest's `[inputs]`.
pub const INPUTS_KEY: &str = "inputs";
/// The config key holding the request to send.
pub const REQUEST_KEY: &str = "request";
/// The config key holding what to make of the response.
pub const RESPONSE_KEY: &str = "response";

/// A read-only view of the action's config (`config.get` in the component).
pub type Config<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `[inputs.<field>]` keys copied into the input schema, and their JSON Schema names.
const COPIED: [(&str, &str); 7] = [
    ("pattern", "pattern"),
    ("format", "format"),
    ("enum", "enum"),
    ("minimum", "minimum"),
    ("maximum", "maximum"),
    ("min_length", "minLength"),
    ("max_length", "maxLength"),
];

/// The input schema of an action with no inputs.
pub fn empty_input_schema() -> Value {
    json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false})
}

/// The input schema built from the `inputs` config value (the manifest's `[inputs]` as a JSON
/// object): each field's `type` (default `"string"`) and constraints copied through, `prompt`
/// as its `description`, `required = true` fields listed in `required`. No `inputs`: no
/// inputs.
///
/// # Errors
/// A sentence when `inputs` is not a JSON object of objects.
pub fn input_schema(inputs: Option<&str>) -> Result<Value, String> {
    let Some(text) = inputs else {
        return Ok(empty_input_schema());
    };
    let fields: Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| format!("the config key `inputs` is not a JSON object: {e}"))?;
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (field, spec) in &fields {
        let spec = spec
            .as_object()
            .ok_or_else(|| format!("inputs.{field} is not a table"))?;
        let kind = match spec.get("type") {
            None => Value::String("string".into()),
            Some(t @ Value::String(_)) => t.clone(),
            Some(other) => return Err(format!("inputs.{field}.type = {other} is not a string")),
        };
        let mut prop = Map::new();
        prop.insert("type".into(), kind);
        for (from, to) in COPIED {
            if let Some(v) = spec.get(from).filter(|v| !v.is_null()) {
                prop.insert(to.into(), v.clone());
            }
        }
        if let Some(prompt) = spec.get("prompt").filter(|v| !v.is_null()) {
            prop.insert("description".into(), prompt.clone());
        }
        match spec.get("required") {
            Some(Value::Bool(true)) => required.push(Value::String(field.clone())),
            None | Some(Value::Bool(false) | Value::Null) => {}
            Some(other) => {
                return Err(format!(
                    "inputs.{field}.required = {other} is not a boolean"
                ));
            }
        }
        properties.insert(field.clone(), Value::Object(prop));
    }
    Ok(json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    }))
}

/// The output schema: the response body, whatever it is.
pub fn output_schema() -> Value {
    json!({"type": "object"})
}

/// The `request` config value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// `GET` (default), `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` or `OPTIONS`, any case.
    #[serde(default = "default_method")]
    pub method: String,
    /// The URL template.
    pub url: String,
    /// Header name → value template.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The JSON body template, if any.
    #[serde(default)]
    pub body: Option<Value>,
    /// The request's timeout; the host clamps it to `http.timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

fn default_method() -> String {
    "GET".into()
}

/// The `response` config value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// Variable name → JSON Pointer into the response body.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// The reply template, if any.
    #[serde(default)]
    pub reply: Option<String>,
    /// Statuses that mean "not found" (default `[404]`).
    #[serde(default = "default_not_found")]
    pub not_found: Vec<u16>,
}

fn default_not_found() -> Vec<u16> {
    vec![404]
}

impl Default for ResponseSpec {
    fn default() -> Self {
        Self {
            variables: BTreeMap::new(),
            reply: None,
            not_found: default_not_found(),
        }
    }
}

/// Parses config value `key` as JSON into `T`.
fn parse_config<T: DeserializeOwned>(key: &str, text: &str) -> Result<T, ActionError> {
    serde_json::from_str(text).map_err(|e| {
        ActionError::internal(format!(
            "the config key `{key}` is not a valid {key} table: {e}"
        ))
    })
}

/// A JSON object from the host (`{}` when empty); `what` names it in errors.
fn object(what: &str, text: &str) -> Result<Map<String, Value>, ActionError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    serde_json::from_str(text)
        .map_err(|e| ActionError::internal(format!("the host's {what} are not a JSON object: {e}")))
}

/// The method named `name`.
fn method_of(name: &str) -> Result<Method, ActionError> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        _ => {
            return Err(ActionError::internal(format!(
                "request.method = {name:?} is not one of GET, HEAD, POST, PUT, PATCH, DELETE, \
                 OPTIONS"
            )));
        }
    })
}

fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// The request to send, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: String,
    /// Headers, `{{secret.NAME}}` placeholders left for the host.
    pub headers: Vec<(String, String)>,
    /// The serialized JSON body, if any.
    pub body: Option<Vec<u8>>,
    /// The timeout, if configured.
    pub timeout_ms: Option<u32>,
}

/// What a successful call returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The parsed response body.
    pub data: Value,
    /// The rendered reply, if configured.
    pub reply: Option<String>,
    /// The variables mapped from the body.
    pub variables: Map<String, Value>,
    /// `(name, pointer)` of mapped variables the body lacked (set to `null`).
    pub missing: Vec<(String, String)>,
}

/// One call: its values and the action's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    inputs: Map<String, Value>,
    variables: Map<String, Value>,
    idempotency_key: String,
    declared: Vec<String>,
    request: RequestSpec,
    response: ResponseSpec,
}

impl Job {
    /// Reads the call (inputs and variables as JSON object text) and the configuration.
    ///
    /// # Errors
    /// `invalid-input` for every input holding `{{`; `internal` for a missing or malformed
    /// configuration, or inputs or variables that are not JSON objects.
    pub fn load(
        inputs: &str,
        variables: &str,
        idempotency_key: &str,
        config: Config<'_>,
    ) -> Result<Self, ActionError> {
        let inputs = object("inputs", inputs)?;
        let variables = object("variables", variables)?;
        let declared = match config(INPUTS_KEY) {
            Some(text) => parse_config::<Map<String, Value>>(INPUTS_KEY, &text)?
                .keys()
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let request: RequestSpec = match config(REQUEST_KEY) {
            Some(text) => parse_config(REQUEST_KEY, &text)?,
            None => {
                return Err(ActionError::internal(
                    "the config key `request` is not set: configure the request to send \
                     (method, url, headers, body)",
                ));
            }
        };
        let response: ResponseSpec = match config(RESPONSE_KEY) {
            Some(text) => parse_config(RESPONSE_KEY, &text)?,
            None => ResponseSpec::default(),
        };
        for (name, pointer) in &response.variables {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(ActionError::internal(format!(
                    "response.variables.{name} = {pointer:?} is not a JSON Pointer: write \"\" \
                     for the whole body or start it with \"/\", as in \"/order/status\""
                )));
            }
        }
        template::check_all_braces(&inputs)?;
        Ok(Self {
            inputs,
            variables,
            idempotency_key: idempotency_key.to_owned(),
            declared,
            request,
            response,
        })
    }

    fn scope<'a>(
        &'a self,
        mapped: Option<&'a Map<String, Value>>,
        config: Config<'a>,
    ) -> Scope<'a> {
        Scope {
            inputs: &self.inputs,
            declared: &self.declared,
            mapped,
            variables: &self.variables,
            config,
            idempotency_key: &self.idempotency_key,
        }
    }

    /// The request to send. The reply template is checked too (with the mapped variables as
    /// `null`), so a configuration bug or a refused value stops the call before anything is
    /// sent.
    ///
    /// # Errors
    /// As the [`template`] renderers.
    pub fn plan(&self, config: Config<'_>) -> Result<Plan, ActionError> {
        let scope = self.scope(None, config);
        let method = method_of(&self.request.method)?;
        let url = template::render_url("request.url", &self.request.url, &scope)?;
        let mut headers = Vec::with_capacity(self.request.headers.len() + 2);
        for (name, value) in &self.request.headers {
            let place = format!("request.headers.{name}");
            headers.push((
                name.clone(),
                template::render_header(&place, value, &scope)?,
            ));
        }
        let body = match &self.request.body {
            None | Some(Value::Null) => None,
            Some(t) => {
                let value = template::render_body("request.body", t, &scope)?;
                let bytes = serde_json::to_vec(&value).map_err(|e| {
                    ActionError::internal(format!("the body could not be serialized: {e}"))
                })?;
                if !has_header(&headers, "content-type") {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                Some(bytes)
            }
        };
        if method.is_write()
            && !self.idempotency_key.is_empty()
            && !has_header(&headers, callout_guest::http::IDEMPOTENCY_KEY)
        {
            headers.push((
                callout_guest::http::IDEMPOTENCY_KEY.into(),
                self.idempotency_key.clone(),
            ));
        }
        if let Some(reply) = &self.response.reply {
            let nulls: Map<String, Value> = self
                .response
                .variables
                .keys()
                .map(|k| (k.clone(), Value::Null))
                .collect();
            template::render_text("response.reply", reply, &self.scope(Some(&nulls), config))?;
        }
        Ok(Plan {
            method,
            url,
            headers,
            body,
            timeout_ms: self.request.timeout_ms,
        })
    }

    /// What the upstream's `response` means: a configured not-found status is `not-found`;
    /// 429, 5xx and other 4xx are upstream errors (as the SDK maps them); anything else is
    /// the body, the mapped variables and the reply.
    ///
    /// # Errors
    /// The status's error, or the reply's rendering error.
    pub fn finish(&self, response: Response, config: Config<'_>) -> Result<Finished, ActionError> {
        let status = response.status();
        if self.response.not_found.contains(&status) {
            return Err(ActionError::not_found(format!("the API answered {status}")));
        }
        let response = response.error_for_status()?;
        let data = parse_body(response.body());
        let (variables, missing) = template::map_pointers(&data, &self.response.variables);
        let reply = match &self.response.reply {
            Some(t) => Some(template::render_text(
                "response.reply",
                t,
                &self.scope(Some(&variables), config),
            )?),
            None => None,
        };
        Ok(Finished {
            data,
            reply,
            variables,
            missing,
        })
    }
}

/// A response body as JSON: empty is `null`, JSON is itself, anything else its text.
pub fn parse_body(body: &[u8]) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use callout_guest::UpstreamKind;

    fn config_with(pairs: Vec<(&'static str, Value)>) -> impl Fn(&str) -> Option<String> {
        move |key: &str| {
            pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        }
    }

    fn crm_config() -> impl Fn(&str) -> Option<String> {
        config_with(vec![
            (
                "inputs",
                json!({
                    "name": {"prompt": "Your name?", "required": true, "max_length": 100},
                    "email": {"format": "email", "required": true},
                    "company": {"prompt": "Company?"},
                }),
            ),
            (
                "request",
                json!({
                    "method": "post",
                    "url": "{{config.base_url}}/leads/{{name}}?src={{source}}",
                    "headers": {
                        "authorization": "Bearer {{secret.CRM_TOKEN}}",
                        "x-tenant": "{{config.tenant}}",
                    },
                    "body": {"name": "{{name}}", "email": "{{email}}", "company": "{{company}}"},
                    "timeout_ms": 5000,
                }),
            ),
            (
                "response",
                json!({
                    "variables": {"lead_id": "/id", "stage": "/pipeline/stage"},
                    "reply": "Thanks {{name}}, your reference is {{lead_id}}.",
                }),
            ),
            ("base_url", json!("https://crm.example.com/api")),
            ("tenant", json!("acme")),
        ])
    }

    fn crm_job(inputs: Value) -> (Job, impl Fn(&str) -> Option<String>) {
        let config = crm_config();
        let job = Job::load(
            &inputs.to_string(),
            r#"{"source":"chat bot"}"#,
            "idem-1",
            &config,
        )
        .unwrap();
        (job, config)
    }

    #[test]
    fn the_input_schema_copies_the_manifests_narrowing() {
        let inputs = json!({
            "order_id": {"type": "string", "pattern": "^[0-9]{6}$", "prompt": "Order number?",
                         "required": true, "extract": "(\\d{6})", "min_length": 6, "max_length": 6},
            "count": {"type": "integer", "minimum": 1, "maximum": 5.5, "required": false},
            "color": {"enum": ["red", "blue"], "format": "color"},
        });
        let schema = input_schema(Some(&inputs.to_string())).unwrap();
        assert_eq!(
            schema,
            json!({
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "pattern": "^[0-9]{6}$",
                                 "description": "Order number?", "minLength": 6, "maxLength": 6},
                    "count": {"type": "integer", "minimum": 1, "maximum": 5.5},
                    "color": {"type": "string", "enum": ["red", "blue"], "format": "color"},
                },
                "required": ["order_id"],
                "additionalProperties": false,
            })
        );
        assert_eq!(input_schema(None).unwrap(), empty_input_schema());
        assert!(input_schema(Some("[]")).is_err());
        assert!(input_schema(Some(r#"{"a": 1}"#)).is_err());
        assert!(input_schema(Some(r#"{"a": {"required": "yes"}}"#)).is_err());
    }

    #[test]
    fn a_write_is_planned_with_its_body_headers_and_key() {
        let (job, config) = crm_job(json!({"name": "Ann/B?", "email": "ann@x.test"}));
        let plan = job.plan(&config).unwrap();
        assert_eq!(plan.method, Method::Post);
        assert_eq!(
            plan.url,
            "https://crm.example.com/api/leads/Ann%2FB%3F?src=chat%20bot"
        );
        assert_eq!(
            plan.headers,
            vec![
                (
                    "authorization".to_owned(),
                    "Bearer {{secret.CRM_TOKEN}}".to_owned()
                ),
                ("x-tenant".into(), "acme".into()),
                ("content-type".into(), "application/json".into()),
                ("Idempotency-Key".into(), "idem-1".into()),
            ]
        );
        let body: Value = serde_json::from_slice(plan.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"name": "Ann/B?", "email": "ann@x.test", "company": null})
        );
        assert_eq!(plan.timeout_ms, Some(5000));
    }

    #[test]
    fn configured_headers_win_and_reads_carry_no_key() {
        let config = config_with(vec![(
            "request",
            json!({
                "method": "PUT",
                "url": "https://h.test/x",
                "headers": {"Content-Type": "application/merge-patch+json", "idempotency-key": "{{idempotency_key}}-v2"},
                "body": {"a": 1},
            }),
        )]);
        let plan = Job::load("{}", "{}", "k", &config)
            .unwrap()
            .plan(&config)
            .unwrap();
        assert_eq!(
            plan.headers,
            vec![
                (
                    "Content-Type".to_owned(),
                    "application/merge-patch+json".to_owned()
                ),
                ("idempotency-key".into(), "k-v2".into()),
            ]
        );
        let config = config_with(vec![("request", json!({"url": "https://h.test/x"}))]);
        let plan = Job::load("", "", "k", &config)
            .unwrap()
            .plan(&config)
            .unwrap();
        assert_eq!(
            (plan.method, plan.headers, plan.body),
            (Method::Get, vec![], None)
        );
    }

    #[test]
    fn bad_configuration_is_an_internal_error_naming_it() {
        let cases = [
            (vec![], "`request` is not set"),
            (vec![("request", json!({"url": 5}))], "`request`"),
            (
                vec![("request", json!({"url": "https://h.test", "verb": "GET"}))],
                "unknown field `verb`",
            ),
            (
                vec![
                    ("request", json!({"url": "https://h.test"})),
                    ("response", json!({"variables": {"id": "id"}})),
                ],
                "response.variables.id",
            ),
            (
                vec![(
                    "request",
                    json!({"url": "https://h.test", "method": "TRACE"}),
                )],
                "request.method",
            ),
            (
                vec![
                    ("request", json!({"url": "https://h.test"})),
                    ("response", json!({"reply": "{{who}}"})),
                ],
                "response.reply: {{who}}",
            ),
        ];
        for (pairs, want) in cases {
            let config = config_with(pairs);
            let err = Job::load("{}", "{}", "k", &config)
                .and_then(|job| job.plan(&config))
                .unwrap_err();
            assert!(
                matches!(&err, ActionError::Internal(m) if m.contains(want)),
                "{err:?} lacks {want:?}"
            );
        }
        let config = config_with(vec![("request", json!({"url": "https://h.test"}))]);
        assert!(matches!(
            Job::load("[]", "{}", "k", &config),
            Err(ActionError::Internal(_))
        ));
    }

    #[test]
    fn inputs_holding_braces_are_refused_before_anything_else() {
        let config = crm_config();
        let err = Job::load(
            &json!({"name": "{{secret.CRM_TOKEN}}", "email": "a@b.c"}).to_string(),
            "{}",
            "k",
            &config,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ActionError::invalid_input("name", template::BRACES_REASON)
        );
        // A variable is refused when a template uses it, the reply's included.
        let config = config_with(vec![
            ("request", json!({"url": "https://h.test/x"})),
            ("response", json!({"reply": "hi {{who}}"})),
        ]);
        let job = Job::load("{}", r#"{"who": "{{config.x}}"}"#, "k", &config).unwrap();
        assert_eq!(
            job.plan(&config).unwrap_err(),
            ActionError::invalid_input("who", template::BRACES_REASON)
        );
    }

    #[test]
    fn a_success_maps_variables_and_renders_the_reply() {
        let (job, config) = crm_job(json!({"name": "Ann", "email": "ann@x.test"}));
        let resp = Response::new(201, vec![], br#"{"id": "L-7", "pipeline": {}}"#.to_vec());
        let done = job.finish(resp, &config).unwrap();
        assert_eq!(done.data, json!({"id": "L-7", "pipeline": {}}));
        assert_eq!(
            done.variables,
            json!({"lead_id": "L-7", "stage": null})
                .as_object()
                .unwrap()
                .clone()
        );
        assert_eq!(
            done.missing,
            vec![("stage".to_owned(), "/pipeline/stage".to_owned())]
        );
        assert_eq!(
            done.reply.as_deref(),
            Some("Thanks Ann, your reference is L-7.")
        );
    }

    #[test]
    fn statuses_map_to_errors() {
        let (job, config) = crm_job(json!({"name": "Ann", "email": "a@b.c"}));
        let finish = |status: u16, headers: Vec<(String, String)>| {
            job.finish(Response::new(status, headers, b"nope".to_vec()), &config)
        };
        assert_eq!(
            finish(404, vec![]).unwrap_err(),
            ActionError::not_found("the API answered 404")
        );
        let upstream = |e: ActionError| match e {
            ActionError::Upstream(u) => (u.kind, u.status, u.retry_after_ms),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            upstream(finish(429, vec![("retry-after".into(), "3".into())]).unwrap_err()),
            (UpstreamKind::RateLimited, Some(429), Some(3000))
        );
        assert_eq!(
            upstream(finish(503, vec![]).unwrap_err()),
            (UpstreamKind::ServerError, Some(503), None)
        );
        assert_eq!(
            upstream(finish(400, vec![]).unwrap_err()),
            (UpstreamKind::ClientError, Some(400), None)
        );
        assert_eq!(
            upstream(finish(410, vec![]).unwrap_err()),
            (UpstreamKind::ClientError, Some(410), None)
        );
        // Configured not-found statuses replace the default.
        let config = config_with(vec![
            ("request", json!({"url": "https://h.test"})),
            ("response", json!({"not_found": [410, 204]})),
        ]);
        let job = Job::load("{}", "{}", "k", &config).unwrap();
        let status_of = |status: u16| job.finish(Response::new(status, vec![], vec![]), &config);
        assert!(
            matches!(status_of(410), Err(ActionError::NotFound(m)) if m == "the API answered 410")
        );
        assert!(matches!(status_of(204), Err(ActionError::NotFound(_))));
        assert!(matches!(status_of(404), Err(ActionError::Upstream(_))));
        assert_eq!(status_of(200).unwrap().data, Value::Null);
    }

    #[test]
    fn bodies_parse_as_json_text_or_nothing() {
        assert_eq!(parse_body(b""), Value::Null);
        assert_eq!(parse_body(b" \n"), Value::Null);
        assert_eq!(parse_body(b"[1,2]"), json!([1, 2]));
        assert_eq!(parse_body(b"\"s\""), json!("s"));
        assert_eq!(parse_body(b"OK thanks"), json!("OK thanks"));
        assert_eq!(parse_body(b"{broken"), json!("{broken"));
    }
}
