//! `callout test`: try an action before publishing it.
//!
//! `--dry-run` validates the inputs and renders the exact requests, secrets redacted, nothing
//! sent; `--mock <file>` answers every request from a recorded response, so writes are safe to
//! test; `--live` sends them. Each mode prints the requests, the responses (mock and live), the
//! outcome and the reply the user would see. The exit code is 0 when the action succeeded.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{CliError, GlobalArgs};
use crate::call::{Call, Failure, MockResponse, Trigger};

/// Arguments of `callout test`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["dry_run", "mock", "live"])))]
pub struct TestArgs {
    /// The action's name.
    pub action: String,
    /// The inputs, a JSON object.
    #[arg(long)]
    pub input: String,
    /// Conversation variables, a JSON object.
    #[arg(long, default_value = "{}")]
    pub variables: String,
    /// Render the requests without sending anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Answer every request from this recorded response (JSON, or TOML when it ends in .toml).
    #[arg(long, value_name = "FILE")]
    pub mock: Option<PathBuf>,
    /// Send the requests for real.
    #[arg(long)]
    pub live: bool,
}

fn object(flag: &str, text: &str) -> Result<Map<String, Value>, CliError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(CliError::Usage(format!(
            "{flag} must be a JSON object, e.g. '{{\"order_id\": \"123456\"}}'"
        ))),
    }
}

impl TestArgs {
    /// Runs the action once in the chosen mode and prints what happened.
    ///
    /// # Errors
    /// [`CliError::ActionFailed`] when the action did not succeed (needs-input included),
    /// [`CliError::Usage`] for bad flags, an unreadable mock or an unknown action.
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let inputs = object("--input", &self.input)?;
        let variables = object("--variables", &self.variables)?;
        let mock = match &self.mock {
            Some(path) => Some(Arc::new(MockResponse::load(path).map_err(CliError::Usage)?)),
            None => None,
        };
        let (_runtime, registry) = global.registry().await?;
        let plugin = super::find_action(&registry, &self.action, &global.actions)?;
        let mode = if self.dry_run {
            "dry-run"
        } else if mock.is_some() {
            "mock"
        } else {
            "live"
        };
        let call = Call {
            trigger: Trigger::Test,
            inputs,
            variables,
            dry_run: self.dry_run,
            mock: mock.clone(),
            ..Call::default()
        };
        let report = plugin.invoke(call).await;
        println!("test {} ({mode})", self.action);
        if let Err(Failure::NeedsInput { fields }) = &report.result {
            println!("inputs: not complete, nothing was called:");
            for f in fields {
                println!(
                    "  {} {}{}",
                    f.field,
                    f.reason,
                    f.prompt
                        .as_ref()
                        .map(|p| format!(" (ask: {p})"))
                        .unwrap_or_default()
                );
            }
        } else {
            println!("inputs: valid");
        }
        for (i, r) in report.recorded.iter().enumerate() {
            println!(
                "--- request {} (secrets shown as placeholders; not sent) ---",
                i + 1
            );
            print!("{r}");
        }
        if let Some(m) = &mock {
            match m.failure {
                Some(f) => println!("--- mocked failure: {f:?} ---"),
                None => println!(
                    "--- mocked response: {} ---\n{}",
                    m.status,
                    String::from_utf8_lossy(&m.body_bytes())
                ),
            }
        }
        for r in &report.requests {
            if mode == "live" {
                println!("--- sent {} {} -> {} ---", r.method, r.target, r.result);
            }
        }
        match &report.result {
            Ok(outcome) => {
                println!("outcome: {}", serde_json::to_string_pretty(outcome)?);
                if let Some(reply) = &outcome.reply {
                    println!("the user would see: {reply}");
                }
                println!("attempts: {}", report.attempts);
                Ok(())
            }
            Err(failure) => {
                println!("failure: {}", serde_json::to_string_pretty(failure)?);
                if let Some(fallback) = &report.fallback {
                    println!("the user would see: {fallback}");
                }
                println!("attempts: {}", report.attempts);
                Err(CliError::ActionFailed {
                    action: self.action,
                    message: failure.to_string(),
                }
                .into())
            }
        }
    }
}
