//! `callout invoke`: call one action and print its outcome.

use serde_json::{Map, Value};

use super::{CliError, GlobalArgs};
use crate::call::{Call, Trigger};

/// Arguments of `callout invoke`.
#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// The action's name.
    pub action: String,
    /// The inputs, a JSON object.
    #[arg(long, default_value = "{}")]
    pub input: String,
    /// Record outbound requests instead of sending them; they are printed to stderr with
    /// secrets left as placeholders.
    #[arg(long)]
    pub dry_run: bool,
    /// Why the action is called.
    #[arg(long, value_enum, default_value = "tool-call")]
    pub trigger: TriggerArg,
    /// The conversation id to pass.
    #[arg(long)]
    pub conversation: Option<String>,
    /// Conversation variables, a JSON object.
    #[arg(long, default_value = "{}")]
    pub variables: String,
    /// The idempotency key (default: a fresh random one).
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `--trigger` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TriggerArg {
    /// A tool call.
    ToolCall,
    /// An on-prompt firing.
    OnPrompt,
    /// A chat-end delivery.
    ChatEnd,
    /// A test.
    Test,
}

fn object(flag: &str, text: &str) -> Result<Map<String, Value>, CliError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(CliError::Usage(format!(
            "{flag} must be a JSON object like '{{\"order_id\": \"123456\"}}', not {other}"
        ))),
        Err(e) => Err(CliError::Usage(format!(
            "{flag} is not valid JSON ({e}); write e.g. '{{\"order_id\": \"123456\"}}'"
        ))),
    }
}

impl InvokeArgs {
    /// Calls the action. Prints the outcome (or `{"error": ...}`) as JSON on stdout.
    ///
    /// # Errors
    /// [`CliError::ActionFailed`] when the action failed, [`CliError::Usage`] for bad flags or an
    /// unknown action.
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let inputs = object("--input", &self.input)?;
        let variables = object("--variables", &self.variables)?;
        let (_runtime, registry) = global.registry().await?;
        let plugin = super::find_action(&registry, &self.action, &global.actions)?;
        let call = Call {
            trigger: match self.trigger {
                TriggerArg::ToolCall => Trigger::ToolCall,
                TriggerArg::OnPrompt => Trigger::OnPrompt,
                TriggerArg::ChatEnd => Trigger::ChatEnd,
                TriggerArg::Test => Trigger::Test,
            },
            inputs,
            conversation_id: self.conversation,
            variables,
            transcript: None,
            idempotency_key: self.idempotency_key,
            attempt: 1,
            dry_run: self.dry_run,
            mock: None,
            capture: false,
        };
        let report = plugin.invoke(call).await;
        if self.dry_run {
            let n = report.recorded.len();
            eprintln!("dry-run: {n} request(s) recorded, none sent");
            for (i, r) in report.recorded.iter().enumerate() {
                eprint!("--- request {} of {n} (not sent) ---\n{r}", i + 1);
            }
        }
        match report.result {
            Ok(outcome) => {
                println!("{}", serde_json::to_string_pretty(&outcome)?);
                Ok(())
            }
            Err(failure) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "error": &failure }))?
                );
                Err(CliError::ActionFailed {
                    action: self.action,
                    message: failure.to_string(),
                }
                .into())
            }
        }
    }
}
