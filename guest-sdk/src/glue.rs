//! What [`export_action!`](crate::export_action) expands to: the WIT `action` export of an
//! [`Action`], and the pure steps it is made of.

use std::marker::PhantomData;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::action::{Action, Context, Message, Outcome, Role, Trigger};
use crate::bindings::exports::callout::plugin::action as wit;
use crate::error::{ActionError, FieldError};
use crate::http::CallKeyGuard;

/// The type `export_action!(A)` exports: it implements the WIT `Guest` for any [`Action`].
#[doc(hidden)]
pub struct Export<A>(PhantomData<A>);

impl<A: Action> wit::Guest for Export<A> {
    fn describe() -> wit::Descriptor {
        describe_of::<A>()
    }

    fn invoke(call: wit::Invocation) -> Result<wit::Outcome, wit::ActionError> {
        invoke::<A>(call)
    }
}

/// The descriptor `describe()` returns for `A`: its name and description, and JSON Schemas
/// (draft 2020-12) derived from its input type (as deserialized) and output type (as
/// serialized).
pub fn describe_of<A: Action>() -> wit::Descriptor {
    wit::Descriptor {
        name: A::NAME.into(),
        description: A::DESCRIPTION.into(),
        input_schema: input_schema::<A::Input>().to_string(),
        output_schema: output_schema::<A::Output>().to_string(),
    }
}

/// The JSON Schema of inputs of type `T`, as they are deserialized.
pub fn input_schema<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// The JSON Schema of outputs of type `T`, as they are serialized.
pub fn output_schema<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// Runs `A` on one WIT invocation: inputs parsed, context built, the call's idempotency key
/// set for [`http`](crate::http) while it runs, the outcome serialized.
pub fn invoke<A: Action>(call: wit::Invocation) -> Result<wit::Outcome, wit::ActionError> {
    let run = || {
        let input: A::Input = parse_inputs(&call.inputs)?;
        let ctx = context_of(call)?;
        let _key = CallKeyGuard::set(&ctx.idempotency_key);
        A::run(input, &ctx)
    };
    finish(run())
}

/// The context of a WIT invocation.
pub(crate) fn context_of(call: wit::Invocation) -> Result<Context, ActionError> {
    let variables = if call.variables.trim().is_empty() {
        Map::new()
    } else {
        serde_json::from_str::<Map<String, Value>>(&call.variables).map_err(|e| {
            ActionError::internal(format!("the host's variables are not a JSON object: {e}"))
        })?
    };
    Ok(Context {
        action: call.action,
        trigger: match call.trigger {
            wit::TriggerKind::ToolCall => Trigger::ToolCall,
            wit::TriggerKind::OnPrompt => Trigger::OnPrompt,
            wit::TriggerKind::ChatEnd => Trigger::ChatEnd,
            wit::TriggerKind::Test => Trigger::Test,
        },
        conversation_id: call.conversation_id,
        variables,
        transcript: call.transcript.map(|lines| {
            lines
                .into_iter()
                .map(|m| Message {
                    role: match m.role {
                        wit::Role::User => Role::User,
                        wit::Role::Agent => Role::Agent,
                        wit::Role::System => Role::System,
                    },
                    text: m.text,
                    at_ms: m.at_ms,
                })
                .collect()
        }),
        idempotency_key: call.idempotency_key,
        attempt: call.attempt,
        dry_run: call.dry_run,
    })
}

/// Parses the call's inputs; a value that does not fit is an invalid-input error on its field
/// (`a.b`, `a[0]` when nested), a missing or unknown field one on that field.
pub fn parse_inputs<T: DeserializeOwned>(json: &str) -> Result<T, ActionError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    let err = match serde_path_to_error::deserialize(de) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let path = err.path();
    let at_root = path.iter().next().is_none();
    let parent = if at_root {
        String::new()
    } else {
        path.to_string()
    };
    let message = without_position(&err.inner().to_string());
    let child = |name: &str| {
        if at_root {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    let (field, reason) = if let Some(name) = quoted_after(&message, "missing field `") {
        (child(name), "is required".to_owned())
    } else if let Some(name) = quoted_after(&message, "unknown field `") {
        let expected = message
            .split_once(", ")
            .map(|(_, rest)| format!(" ({rest})"))
            .unwrap_or_default();
        // The path already ends with the unknown key.
        let ends_with_it = path
            .iter()
            .next_back()
            .is_some_and(|s| s.to_string() == name);
        let field = if ends_with_it { parent } else { child(name) };
        (field, format!("is not a known input{expected}"))
    } else if at_root {
        return Err(ActionError::internal(format!(
            "the inputs do not fit the input type: {message}"
        )));
    } else {
        (parent, message)
    };
    Err(ActionError::InvalidInput(vec![FieldError {
        field,
        reason,
    }]))
}

/// `name` in "...`name`..." right after `prefix` at the start of `message`.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// A serde_json message without its " at line L column C".
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The WIT result of a run: the outcome serialized, a dry run as an empty success.
pub fn finish<T: Serialize>(
    result: Result<Outcome<T>, ActionError>,
) -> Result<wit::Outcome, wit::ActionError> {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(ActionError::DryRun) => {
            return Ok(wit::Outcome {
                data: "null".into(),
                reply: None,
                variables: "{}".into(),
            });
        }
        Err(e) => return Err(wire(e)),
    };
    if let Some(bad) = outcome.bad_variable {
        return Err(wire(ActionError::internal(bad)));
    }
    let data = serde_json::to_string(&outcome.data).map_err(|e| {
        wire(ActionError::internal(format!(
            "the output could not be serialized: {e}"
        )))
    })?;
    Ok(wit::Outcome {
        data,
        reply: outcome.reply,
        variables: Value::Object(outcome.variables).to_string(),
    })
}

fn wire(e: ActionError) -> wit::ActionError {
    e.to_wit()
        .unwrap_or_else(|| wit::ActionError::Internal("unexpected dry-run marker".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;
    use serde::Deserialize;
    use serde_json::json;

    /// Looks up an order; a stand-in for a real plugin.
    #[derive(Debug, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct OrderInput {
        /// The 6-digit order number
        order_id: String,
        /// How many lines to show
        limit: Option<u32>,
        address: Option<Address>,
    }

    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Address {
        city: String,
        lines: Vec<u32>,
    }

    #[derive(Serialize, JsonSchema)]
    struct OrderOutput {
        status: String,
        eta: Option<String>,
    }

    struct Orders;

    impl Action for Orders {
        type Input = OrderInput;
        type Output = OrderOutput;
        const NAME: &'static str = "order-status";
        const DESCRIPTION: &'static str = "Look up an order";

        fn run(input: OrderInput, ctx: &Context) -> Result<Outcome<OrderOutput>, ActionError> {
            match input.order_id.as_str() {
                "dry" => Err(http::Error::DryRun)?,
                "missing" => Err(ActionError::not_found("no order missing")),
                "key" => {
                    // The key http would send on a write is the call's.
                    let p = http::post("https://x.test").prepare(current_key().as_deref())?;
                    Ok(Outcome::new(OrderOutput {
                        status: format!("{:?}", p.headers),
                        eta: None,
                    }))
                }
                id => Ok(Outcome::new(OrderOutput {
                    status: format!("{id} via {:?} attempt {}", ctx.trigger, ctx.attempt),
                    eta: ctx.variable::<String>("eta")?,
                })
                .reply("on its way")
                .variable("last_order", id)),
            }
        }
    }

    fn current_key() -> Option<String> {
        http::call_key()
    }

    fn call(inputs: Value) -> wit::Invocation {
        wit::Invocation {
            action: "order-status".into(),
            trigger: wit::TriggerKind::OnPrompt,
            inputs: inputs.to_string(),
            conversation_id: Some("c1".into()),
            variables: json!({"eta": "tomorrow"}).to_string(),
            transcript: Some(vec![wit::Message {
                role: wit::Role::User,
                text: "where is it?".into(),
                at_ms: 5,
            }]),
            idempotency_key: "idem-1".into(),
            attempt: 2,
            dry_run: false,
        }
    }

    #[test]
    fn the_descriptor_is_derived_from_the_actions_types() {
        let d = describe_of::<Orders>();
        assert_eq!(d.name, "order-status");
        assert_eq!(d.description, "Look up an order");
        let input: Value = serde_json::from_str(&d.input_schema).unwrap();
        assert_eq!(input["type"], "object");
        assert_eq!(input["required"], json!(["order_id"]));
        assert_eq!(input["properties"]["order_id"]["type"], "string");
        assert_eq!(
            input["properties"]["order_id"]["description"],
            "The 6-digit order number"
        );
        assert_eq!(
            input["properties"]["limit"]["type"],
            json!(["integer", "null"])
        );
        assert!(input["$defs"]["Address"].is_object(), "{input}");

        let output: Value = serde_json::from_str(&d.output_schema).unwrap();
        assert_eq!(output["type"], "object");
        // Serialized, every field is always there, `null` included.
        assert_eq!(output["required"], json!(["status", "eta"]));
    }

    #[test]
    fn an_invocation_runs_the_action_and_serializes_its_outcome() {
        let out = invoke::<Orders>(call(json!({"order_id": "123456"}))).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&out.data).unwrap(),
            json!({"status": "123456 via OnPrompt attempt 2", "eta": "tomorrow"})
        );
        assert_eq!(out.reply.as_deref(), Some("on its way"));
        assert_eq!(
            serde_json::from_str::<Value>(&out.variables).unwrap(),
            json!({"last_order": "123456"})
        );
    }

    #[test]
    fn the_context_mirrors_the_invocation() {
        let ctx = context_of(call(json!({}))).unwrap();
        let expected = Context {
            action: "order-status".into(),
            trigger: Trigger::OnPrompt,
            conversation_id: Some("c1".into()),
            variables: json!({"eta": "tomorrow"}).as_object().unwrap().clone(),
            transcript: Some(vec![Message {
                role: Role::User,
                text: "where is it?".into(),
                at_ms: 5,
            }]),
            idempotency_key: "idem-1".into(),
            attempt: 2,
            dry_run: false,
        };
        assert_eq!(ctx, expected);

        let mut bad = call(json!({}));
        bad.variables = "[]".into();
        assert!(matches!(context_of(bad), Err(ActionError::Internal(_))));
        let mut empty = call(json!({}));
        empty.variables = String::new();
        assert!(context_of(empty).unwrap().variables.is_empty());
    }

    #[test]
    fn writes_during_a_call_carry_its_idempotency_key_and_only_during_it() {
        let out = invoke::<Orders>(call(json!({"order_id": "key"}))).unwrap();
        let data: Value = serde_json::from_str(&out.data).unwrap();
        assert_eq!(data["status"], r#"[("Idempotency-Key", "idem-1")]"#);
        assert_eq!(current_key(), None);
    }

    #[test]
    fn a_dry_run_propagated_with_question_mark_finishes_with_null_data() {
        let out = invoke::<Orders>(call(json!({"order_id": "dry"}))).unwrap();
        assert_eq!(
            (out.data.as_str(), out.reply, out.variables.as_str()),
            ("null", None, "{}")
        );
    }

    #[test]
    fn an_action_error_reaches_the_host_as_its_wit_variant() {
        let err = invoke::<Orders>(call(json!({"order_id": "missing"}))).unwrap_err();
        assert!(matches!(err, wit::ActionError::NotFound(m) if m == "no order missing"));
    }

    #[test]
    fn inputs_that_do_not_fit_are_reported_on_their_field() {
        let cases = [
            (json!({}), "order_id", "is required"),
            (
                json!({"order_id": 5}),
                "order_id",
                "invalid type: integer `5`, expected a string",
            ),
            (
                json!({"order_id": "1", "limit": -1}),
                "limit",
                "invalid value: integer `-1`, expected u32",
            ),
            (
                json!({"order_id": "1", "address": {"lines": []}}),
                "address.city",
                "is required",
            ),
            (
                json!({"order_id": "1", "address": {"city": "X", "lines": [1, "two"]}}),
                "address.lines[1]",
                "invalid type: string \"two\", expected u32",
            ),
            (
                json!({"order_id": "1", "address": {"city": "X", "lines": [], "zip": 1}}),
                "address.zip",
                "is not a known input (expected `city` or `lines`)",
            ),
        ];
        for (inputs, field, reason) in cases {
            let err = invoke::<Orders>(call(inputs.clone())).unwrap_err();
            let wit::ActionError::InvalidInput(fields) = err else {
                panic!("{inputs}: {err:?}")
            };
            assert_eq!(fields.len(), 1, "{inputs}");
            assert_eq!(
                (fields[0].field.as_str(), fields[0].reason.as_str()),
                (field, reason),
                "{inputs}"
            );
        }
    }

    #[test]
    fn inputs_that_are_not_an_object_are_an_internal_error() {
        let err = parse_inputs::<OrderInput>(r#""order 1""#).unwrap_err();
        assert!(
            matches!(&err, ActionError::Internal(m) if m.contains("do not fit")),
            "{err}"
        );
    }

    #[test]
    fn an_output_that_cannot_be_serialized_is_an_internal_error() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), 3);
        let err = finish(Ok(Outcome::new(map))).unwrap_err();
        assert!(matches!(err, wit::ActionError::Internal(m) if m.contains("output")));
        let mut unit_key = std::collections::HashMap::new();
        unit_key.insert((1, 2), 3);
        let err = finish(Ok(Outcome::new(()).variable("v", unit_key))).unwrap_err();
        assert!(matches!(err, wit::ActionError::Internal(m) if m.contains("`v`")));
    }
}
