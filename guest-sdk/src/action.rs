//! The [`Action`] trait and what it sees and returns: [`Context`] and [`Outcome`].

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ActionError;

/// One action: typed inputs in, a typed outcome out.
///
/// The input and output schemas that `describe()` reports are derived from [`Action::Input`]
/// and [`Action::Output`] with `schemars`, so they are never written by hand. Export the type
/// with [`export_action!`](crate::export_action).
pub trait Action {
    /// The inputs, deserialized from the call's JSON object. Must be a struct (its schema must
    /// be a JSON object schema); doc comments on fields become their descriptions.
    type Input: DeserializeOwned + JsonSchema;
    /// The structured data returned to the agent as the outcome's `data`.
    type Output: Serialize + JsonSchema;
    /// A short kebab-case name, e.g. `order-status`.
    const NAME: &'static str;
    /// One sentence an agent can read to decide when to use the action.
    const DESCRIPTION: &'static str;

    /// Runs the action once.
    ///
    /// # Errors
    /// The [`ActionError`] the host reports. [`ActionError::DryRun`] (what `?` makes of a
    /// dry-run answer to [`send`](crate::http::RequestBuilder::send)) is not a failure: the
    /// call finishes successfully with `data` = `null`.
    fn run(input: Self::Input, ctx: &Context) -> Result<Outcome<Self::Output>, ActionError>;
}

/// Why the action is being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trigger {
    /// An agent or platform called the action as a tool (REST, MCP, CLI, library).
    #[default]
    ToolCall,
    /// A conversation message met the action's on-prompt conditions.
    OnPrompt,
    /// The conversation ended; delivered from the durable outbox, possibly retried.
    ChatEnd,
    /// A builder pressed Test (or `callout test`): usually together with dry-run or mocks.
    Test,
}

/// Who said a line of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end user.
    User,
    /// The agent.
    Agent,
    /// The system.
    System,
}

/// One line of the conversation's transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub text: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Everything about the call except its inputs.
///
/// `Context::default()` is a tool call on attempt 1 with no key, for tests of
/// [`Action::run`]; set its public fields as needed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Context {
    /// The configured action's name (one component may serve several actions).
    pub action: String,
    /// Why it is being called.
    pub trigger: Trigger,
    /// The conversation this call belongs to, if any.
    pub conversation_id: Option<String>,
    /// The conversation's collected variables.
    pub variables: Map<String, Value>,
    /// The whole conversation, given only at chat-end.
    pub transcript: Option<Vec<Message>>,
    /// One key per logical call, the same on every retry of it. [`http`](crate::http) sends it
    /// as `Idempotency-Key` on writes by default.
    pub idempotency_key: String,
    /// Which attempt of this logical call this is, starting at 1.
    pub attempt: u32,
    /// When true, every request is recorded by the host instead of sent.
    pub dry_run: bool,
}

impl Default for Context {
    fn default() -> Self {
        Self {
            action: String::new(),
            trigger: Trigger::default(),
            conversation_id: None,
            variables: Map::new(),
            transcript: None,
            idempotency_key: String::new(),
            attempt: 1,
            dry_run: false,
        }
    }
}

impl Context {
    /// The conversation variable `name` as a `T`; `None` if it is not set or is `null`.
    ///
    /// # Errors
    /// An internal error naming the variable when its value does not fit `T`.
    pub fn variable<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ActionError> {
        match self.variables.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|e| {
                ActionError::internal(format!(
                    "the conversation variable `{name}` has an unexpected value: {e}"
                ))
            }),
        }
    }
}

/// A successful result: structured `data` for the agent, an optional ready-made reply for the
/// user, and variables to merge into the conversation.
///
/// `Ok(output.into())` is `Ok(Outcome::new(output))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    /// Structured data for the agent (serialized as the outcome's `data`).
    pub data: T,
    /// A ready-made reply for the user.
    pub reply: Option<String>,
    /// Variables to merge into the conversation.
    pub variables: Map<String, Value>,
    /// A variable that could not be serialized: reported as an internal error.
    pub(crate) bad_variable: Option<String>,
}

impl<T> Outcome<T> {
    /// An outcome with `data`, no reply and no variables.
    pub fn new(data: T) -> Self {
        Self {
            data,
            reply: None,
            variables: Map::new(),
            bad_variable: None,
        }
    }

    /// Sets the ready-made reply for the user.
    #[must_use]
    pub fn reply(mut self, reply: impl Into<String>) -> Self {
        self.reply = Some(reply.into());
        self
    }

    /// Sets the conversation variable `key` to `value`. A value that cannot be serialized to
    /// JSON makes the call fail with an internal error naming the variable.
    #[must_use]
    pub fn variable(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        let key = key.into();
        match serde_json::to_value(value) {
            Ok(v) => {
                self.variables.insert(key, v);
            }
            Err(e) => {
                self.bad_variable.get_or_insert_with(|| {
                    format!("the variable `{key}` could not be serialized: {e}")
                });
            }
        }
        self
    }
}

impl<T> From<T> for Outcome<T> {
    fn from(data: T) -> Self {
        Self::new(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_outcome_collects_reply_and_variables() {
        let o = Outcome::new(1)
            .reply("done")
            .variable("n", 2)
            .variable("s", "x");
        assert_eq!(o.data, 1);
        assert_eq!(o.reply.as_deref(), Some("done"));
        assert_eq!(Value::Object(o.variables), json!({"n": 2, "s": "x"}));
        let o: Outcome<&str> = "data".into();
        assert_eq!((o.data, o.reply), ("data", None));
    }

    #[test]
    fn a_variable_that_cannot_be_serialized_is_remembered_as_an_error() {
        let mut bad = std::collections::HashMap::new();
        bad.insert((1, 2), 3);
        let o = Outcome::new(()).variable("bad", bad).variable("good", 1);
        assert!(o.bad_variable.unwrap().contains("`bad`"));
        assert_eq!(Value::Object(o.variables), json!({"good": 1}));
    }

    #[test]
    fn context_variables_read_as_typed_values() {
        let ctx = Context {
            variables: json!({"name": "Ada", "age": 36, "gone": null})
                .as_object()
                .unwrap()
                .clone(),
            ..Context::default()
        };
        assert_eq!(
            ctx.variable::<String>("name").unwrap().as_deref(),
            Some("Ada")
        );
        assert_eq!(ctx.variable::<u8>("age").unwrap(), Some(36));
        assert_eq!(ctx.variable::<String>("gone").unwrap(), None);
        assert_eq!(ctx.variable::<String>("missing").unwrap(), None);
        let e = ctx.variable::<u8>("name").unwrap_err();
        assert!(
            matches!(&e, ActionError::Internal(m) if m.contains("`name`")),
            "{e}"
        );
    }

    #[test]
    fn the_default_context_is_a_first_attempt_tool_call() {
        let ctx = Context::default();
        assert_eq!(
            (ctx.trigger, ctx.attempt, ctx.dry_run),
            (Trigger::ToolCall, 1, false)
        );
    }
}
