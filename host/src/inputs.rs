//! Input schemas: the component's, narrowed by the manifest.
//!
//! The component's `describe()` declares its inputs as a JSON Schema object. The manifest's
//! `[inputs.<field>]` may only narrow a field: the type must be equal, `enum` a subset, bounds the
//! same or tighter, and a pattern or format may only be added (or repeated exactly). It may not
//! name a field the component does not declare, nor make a required field optional. The result
//! is the *effective* schema the host validates inputs against before any call.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::manifest::InputSpec;

/// Checks the manifest's `[inputs]` against the component's input schema and returns the
/// effective schema (the component's with the manifest's narrowing applied).
///
/// # Errors
/// Every contradiction found, each naming the field and the fix.
pub fn narrow(
    component_schema: &Value,
    specs: &BTreeMap<String, InputSpec>,
) -> Result<Value, Vec<String>> {
    let mut errors = Vec::new();
    let mut schema = component_schema.clone();
    let Some(obj) = schema.as_object_mut() else {
        return Err(vec![
            "the component's input schema is not a JSON object".into(),
        ]);
    };
    if obj.get("type").and_then(Value::as_str) != Some("object") {
        errors.push("the component's input schema must have \"type\": \"object\"".into());
    }
    let mut required: Vec<Value> = obj
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let declared: Vec<String> = obj
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let props = obj
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("properties is an object");

    for (field, spec) in specs {
        let Some(prop) = props.get_mut(field).and_then(Value::as_object_mut) else {
            errors.push(format!(
                "inputs.{field}: the component declares no input {field:?}; declared inputs are \
                 [{}]; remove [inputs.{field}] or fix its name",
                declared.join(", ")
            ));
            continue;
        };
        let is_required = required.iter().any(|r| r.as_str() == Some(field));
        match spec.required {
            Some(false) if is_required => errors.push(format!(
                "inputs.{field}.required = false would make a required input optional; \
                 remove the line"
            )),
            Some(true) if !is_required => required.push(Value::String(field.clone())),
            _ => {}
        }
        narrow_field(field, prop, spec, &mut errors);
    }
    obj.insert("required".into(), Value::Array(required));
    if errors.is_empty() {
        Ok(schema)
    } else {
        Err(errors)
    }
}

fn narrow_field(
    field: &str,
    prop: &mut Map<String, Value>,
    spec: &InputSpec,
    errors: &mut Vec<String>,
) {
    if let Some(kind) = &spec.kind {
        match prop.get("type") {
            Some(Value::String(t)) if t == kind => {}
            Some(t) => errors.push(format!(
                "inputs.{field}.type = {kind:?} differs from the component's type {t}; \
                 the type must be equal: write type = {t} or remove it"
            )),
            None => errors.push(format!(
                "inputs.{field}.type = {kind:?}: the component leaves the type open, and the \
                 manifest may not change it; remove the line"
            )),
        }
    }
    if let Some(allowed) = &spec.allowed {
        if let Some(Value::Array(theirs)) = prop.get("enum") {
            let extra: Vec<String> = allowed
                .iter()
                .filter(|v| !theirs.contains(v))
                .map(Value::to_string)
                .collect();
            if !extra.is_empty() {
                errors.push(format!(
                    "inputs.{field}.enum adds {} not in the component's enum {}; \
                     the manifest's enum must be a subset",
                    extra.join(", "),
                    Value::Array(theirs.clone())
                ));
            }
        }
        prop.insert("enum".into(), Value::Array(allowed.clone()));
    }
    bound(field, prop, "minimum", spec.minimum, true, errors);
    bound(field, prop, "maximum", spec.maximum, false, errors);
    bound(
        field,
        prop,
        "minLength",
        spec.min_length.map(|v| v as f64),
        true,
        errors,
    );
    bound(
        field,
        prop,
        "maxLength",
        spec.max_length.map(|v| v as f64),
        false,
        errors,
    );
    for (key, value) in [("pattern", &spec.pattern), ("format", &spec.format)] {
        let Some(value) = value else { continue };
        match prop.get(key) {
            Some(Value::String(theirs)) if theirs != value => errors.push(format!(
                "inputs.{field}.{key} = {value:?} replaces the component's {key} {theirs:?}; \
                 a {key} may only be added where the component has none; remove the line"
            )),
            _ => {
                prop.insert(key.into(), Value::String(value.clone()));
            }
        }
    }
    if let Some(p) = &spec.prompt {
        prop.insert("x-prompt".into(), Value::String(p.clone()));
    }
}

/// Applies a numeric bound: `lower` bounds may only rise, upper bounds only fall.
fn bound(
    field: &str,
    prop: &mut Map<String, Value>,
    key: &str,
    ours: Option<f64>,
    lower: bool,
    errors: &mut Vec<String>,
) {
    let Some(ours) = ours else { return };
    if let Some(theirs) = prop.get(key).and_then(Value::as_f64) {
        let widens = if lower { ours < theirs } else { ours > theirs };
        if widens {
            let snake = match key {
                "minLength" => "min_length",
                "maxLength" => "max_length",
                k => k,
            };
            errors.push(format!(
                "inputs.{field}.{snake} = {ours} widens the component's {key} {theirs}; \
                 use {} {theirs}",
                if lower { "at least" } else { "at most" }
            ));
            return;
        }
    }
    let num = if ours.fract() == 0.0 && ours.abs() < 9e15 {
        Value::from(ours as i64)
    } else {
        Value::from(ours)
    };
    prop.insert(key.into(), num);
}

/// Converts string values to the type the schema declares for their field (`integer`,
/// `number`, `boolean`), where the string parses as one. Values pulled out of a message by
/// `extract` patterns, or typed by a user, are text; the gate then checks the converted value.
/// Anything that does not parse is left as it is, for the gate to report.
///
/// A `null` given for an optional field whose schema does not take null is dropped: agents
/// using OpenAI's strict tool schemas (`callout tools --format openai`) must send every field,
/// and send null for the ones they leave out.
pub fn coerce(inputs: &mut Map<String, Value>, schema: &Value) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    inputs.retain(|field, value| {
        !value.is_null()
            || required.contains(&field.as_str())
            || props.get(field).is_some_and(takes_null)
    });
    for (field, value) in inputs.iter_mut() {
        let Value::String(text) = value else { continue };
        let text = text.trim();
        let converted = match props
            .get(field)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
        {
            Some("integer") => text.parse::<i64>().ok().map(Value::from),
            Some("number") => text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number)),
            Some("boolean") => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" => Some(Value::Bool(true)),
                "false" | "no" => Some(Value::Bool(false)),
                _ => None,
            },
            _ => None,
        };
        if let Some(v) = converted {
            *value = v;
        }
    }
}

/// Whether a property schema accepts null (its `type` is or lists "null", or it has no type).
fn takes_null(prop: &Value) -> bool {
    match prop.get("type") {
        None => true,
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "null"),
        Some(_) => false,
    }
}

/// One input the agent still has to collect: missing or invalid.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct NeededInput {
    /// The field.
    pub field: String,
    /// The question to ask the user (the manifest's `prompt`), if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// What is wrong: `is required`, or why the value is not valid.
    pub reason: String,
}

/// The input gate: validates a call's inputs against the action's effective input schema
/// before the plugin is ever called.
///
/// Validation uses the `jsonschema` crate (draft 2020-12, formats such as `email` checked, no
/// `$ref` fetched from the network or disk). An action is never invoked with a missing or
/// invalid input; the caller gets every problem at once, each with the question to ask.
pub struct InputGate {
    validator: jsonschema::Validator,
    prompts: BTreeMap<String, String>,
}

impl std::fmt::Debug for InputGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputGate")
            .field("prompts", &self.prompts)
            .finish()
    }
}

impl InputGate {
    /// Compiles the gate for an effective schema (as [`narrow`] returns it; `x-prompt` holds each
    /// field's question).
    ///
    /// # Errors
    /// A schema that is not valid JSON Schema, with the validator's message.
    pub fn new(schema: &Value) -> Result<Self, String> {
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .map_err(|e| format!("the input schema is not valid JSON Schema: {e}"))?;
        let prompts = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .filter_map(|(k, v)| {
                        v.get("x-prompt")
                            .and_then(Value::as_str)
                            .map(|p| (k.clone(), p.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self { validator, prompts })
    }

    /// The question to ask for `field`, if the manifest gives one.
    pub fn prompt(&self, field: &str) -> Option<&str> {
        self.prompts.get(field).map(String::as_str)
    }

    /// Checks `inputs`; on failure returns every missing or invalid field, in field order, each
    /// once (the first reason found).
    pub fn check(&self, inputs: &Map<String, Value>) -> Result<(), Vec<NeededInput>> {
        let instance = Value::Object(inputs.clone());
        let mut needed: BTreeMap<String, NeededInput> = BTreeMap::new();
        for error in self.validator.iter_errors(&instance) {
            let (field, reason) = match error.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => (
                    property.as_str().unwrap_or_default().to_string(),
                    "is required".to_string(),
                ),
                _ => {
                    let path = error.instance_path().as_str().to_string();
                    let field = path
                        .trim_start_matches('/')
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .replace("~1", "/")
                        .replace("~0", "~");
                    let reason = error.to_string();
                    if field.is_empty() {
                        // A whole-object problem (an unknown field with additionalProperties
                        // false, say): name what the validator names.
                        ("inputs".to_string(), reason)
                    } else {
                        (field, reason)
                    }
                }
            };
            needed.entry(field.clone()).or_insert_with(|| NeededInput {
                prompt: self.prompts.get(&field).cloned(),
                field,
                reason,
            });
        }
        if needed.is_empty() {
            Ok(())
        } else {
            Err(needed.into_values().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn component() -> Value {
        json!({
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "maxLength": 12},
                "count": {"type": "integer", "minimum": 0, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "green", "blue"]},
                "code": {"type": "string", "pattern": "^[A-Z]+$"}
            },
            "required": ["order_id"]
        })
    }

    fn specs(toml_text: &str) -> BTreeMap<String, InputSpec> {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn narrowing_is_accepted_and_applied() {
        let s = specs(
            "[order_id]\npattern = \"^[0-9]{6}$\"\nmax_length = 6\nprompt = \"Your order number?\"\n\
             [count]\nminimum = 1\nmaximum = 5\nrequired = true\n[color]\nenum = [\"red\"]\n",
        );
        let eff = narrow(&component(), &s).unwrap();
        assert_eq!(eff["properties"]["order_id"]["pattern"], "^[0-9]{6}$");
        assert_eq!(eff["properties"]["order_id"]["maxLength"], 6);
        assert_eq!(eff["properties"]["count"]["minimum"], 1);
        assert_eq!(eff["properties"]["color"]["enum"], json!(["red"]));
        assert_eq!(eff["required"], json!(["order_id", "count"]));
    }

    #[test]
    fn every_widening_is_refused_with_its_field() {
        let cases = [
            (
                "[ghost]\nprompt = \"?\"\n",
                "inputs.ghost: the component declares no input \"ghost\"",
            ),
            (
                "[count]\ntype = \"string\"\n",
                "inputs.count.type = \"string\" differs",
            ),
            (
                "[color]\nenum = [\"red\", \"pink\"]\n",
                "inputs.color.enum adds \"pink\"",
            ),
            (
                "[count]\nmaximum = 11\n",
                "inputs.count.maximum = 11 widens",
            ),
            (
                "[count]\nminimum = -1\n",
                "inputs.count.minimum = -1 widens",
            ),
            (
                "[order_id]\nmax_length = 20\n",
                "inputs.order_id.max_length = 20 widens",
            ),
            (
                "[code]\npattern = \"^.*$\"\n",
                "inputs.code.pattern = \"^.*$\" replaces",
            ),
            (
                "[order_id]\nrequired = false\n",
                "inputs.order_id.required = false",
            ),
        ];
        for (text, want) in cases {
            let errs = narrow(&component(), &specs(text)).expect_err(text);
            assert!(
                errs.iter().any(|e| e.contains(want)),
                "{text:?}: {errs:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn the_gate_lists_every_missing_or_invalid_field_with_its_question() {
        let s = specs(
            "[order_id]\npattern = \"^[0-9]{6}$\"\nprompt = \"Your order number?\"\n[count]\nrequired = true\n",
        );
        let gate = InputGate::new(&narrow(&component(), &s).unwrap()).unwrap();
        assert!(
            gate.check(
                json!({"order_id": "123456", "count": 3})
                    .as_object()
                    .unwrap()
            )
            .is_ok()
        );
        let cases = [
            (
                json!({}),
                vec![("count", "is required"), ("order_id", "is required")],
            ),
            (
                json!({"order_id": "12ab", "count": 3}),
                vec![("order_id", "does not match")],
            ),
            (
                json!({"order_id": "123456", "count": 11}),
                vec![("count", "greater than the maximum")],
            ),
            (
                json!({"order_id": 123456, "count": 3}),
                vec![("order_id", "is not of type")],
            ),
            (
                json!({"order_id": "123456", "count": 1, "color": "pink"}),
                vec![("color", "is not one of")],
            ),
        ];
        for (inputs, want) in cases {
            let got = gate
                .check(inputs.as_object().unwrap())
                .expect_err(&inputs.to_string());
            assert_eq!(got.len(), want.len(), "{inputs}: {got:?}");
            for (g, (field, reason)) in got.iter().zip(want) {
                assert_eq!(g.field, field, "{inputs}: {got:?}");
                assert!(
                    g.reason.contains(reason),
                    "{inputs}: {} lacks {reason:?}",
                    g.reason
                );
            }
        }
        let missing = gate
            .check(json!({"count": 1}).as_object().unwrap())
            .unwrap_err();
        assert_eq!(missing[0].prompt.as_deref(), Some("Your order number?"));
    }

    #[test]
    fn text_is_converted_to_the_declared_type_where_it_parses() {
        let schema = json!({"type": "object", "properties": {
            "n": {"type": "integer"}, "x": {"type": "number"}, "b": {"type": "boolean"}, "s": {"type": "string"}}});
        let mut inputs = json!({"n": " 123456 ", "x": "2.5", "b": "yes", "s": "42", "other": "7"})
            .as_object()
            .unwrap()
            .clone();
        coerce(&mut inputs, &schema);
        assert_eq!(
            Value::Object(inputs),
            json!({"n": 123456, "x": 2.5, "b": true, "s": "42", "other": "7"})
        );
        let mut bad = json!({"n": "12ab"}).as_object().unwrap().clone();
        coerce(&mut bad, &schema);
        assert_eq!(bad["n"], "12ab", "left for the gate to report");
    }

    #[test]
    fn the_gate_checks_formats_such_as_email() {
        let schema = json!({"type": "object", "properties": {"email": {"type": "string", "format": "email"}}, "required": ["email"]});
        let gate = InputGate::new(&schema).unwrap();
        assert!(
            gate.check(json!({"email": "ada@example.com"}).as_object().unwrap())
                .is_ok()
        );
        let bad = gate
            .check(json!({"email": "not an email"}).as_object().unwrap())
            .unwrap_err();
        assert_eq!(bad[0].field, "email");
    }

    #[test]
    fn repeating_the_components_pattern_is_not_widening() {
        let s = specs("[code]\npattern = \"^[A-Z]+$\"\ntype = \"string\"\n");
        assert!(narrow(&component(), &s).is_ok());
    }

    #[test]
    fn nulls_for_optional_non_nullable_fields_are_dropped() {
        let schema = json!({
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "note": {"type": "string"},
                "company": {"type": ["string", "null"]}
            },
            "required": ["order_id"]
        });
        let mut inputs = json!({"order_id": null, "note": null, "company": null})
            .as_object()
            .unwrap()
            .clone();
        coerce(&mut inputs, &schema);
        // Required stays (the gate reports it); nullable stays; optional non-nullable goes.
        assert_eq!(
            Value::Object(inputs),
            json!({"order_id": null, "company": null})
        );
    }
}
