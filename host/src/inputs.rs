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
    fn repeating_the_components_pattern_is_not_widening() {
        let s = specs("[code]\npattern = \"^[A-Z]+$\"\ntype = \"string\"\n");
        assert!(narrow(&component(), &s).is_ok());
    }
}
