//! `callout tools`: the loaded actions as tool definitions for an agent framework (see
//! [`crate::tools`]).

use super::{CliError, GlobalArgs};
use crate::tools::{ToolFormat, ToolSpec, export, problems};

/// Arguments of `callout tools`.
#[derive(Debug, clap::Args)]
pub struct ToolsArgs {
    /// openai (Chat Completions function tools, strict mode), anthropic (Messages API tools)
    /// or mcp (MCP Tool objects).
    #[arg(long, default_value = "mcp")]
    pub format: String,
}

impl ToolsArgs {
    /// Prints the tool definitions of every loaded action as a JSON array.
    ///
    /// # Errors
    /// An unknown format, actions that failed to load, or tools the framework would reject
    /// (each problem named).
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let format: ToolFormat = self.format.parse().map_err(CliError::Usage)?;
        let (_runtime, registry) = global.registry().await?;
        if !registry.failures().is_empty() {
            return Err(CliError::LoadFailures(
                registry.failures().iter().map(|e| e.to_string()).collect(),
            )
            .into());
        }
        let specs: Vec<ToolSpec<'_>> = registry
            .plugins()
            .map(|p| {
                let d = p.descriptor();
                ToolSpec {
                    name: &d.name,
                    description: &d.description,
                    input_schema: &d.input_schema,
                    output_schema: &d.output_schema,
                }
            })
            .collect();
        let found = problems(format, &specs);
        if !found.is_empty() {
            return Err(CliError::Usage(format!(
                "the {format} export would be rejected:\n{}",
                found.join("\n")
            ))
            .into());
        }
        println!("{}", serde_json::to_string_pretty(&export(format, &specs))?);
        Ok(())
    }
}
