//! `callout list`: the loaded actions.

use super::GlobalArgs;

/// Arguments of `callout list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print the descriptors (with input and output schemas) as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ListArgs {
    /// Prints one line per action, or JSON descriptors with `--json`.
    ///
    /// # Errors
    /// When the runtime or the actions directory cannot be set up.
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let (_runtime, registry) = global.registry().await?;
        if self.json {
            let all: Vec<_> = registry.plugins().map(|p| p.descriptor()).collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
            return Ok(());
        }
        let width = registry
            .plugins()
            .map(|p| p.name().len())
            .max()
            .unwrap_or(0);
        for p in registry.plugins() {
            println!(
                "{:width$}  {:9}  {}",
                p.name(),
                p.manifest().raw.trigger.kind.as_str(),
                p.descriptor().description
            );
        }
        for f in registry.failures() {
            println!("{:width$}  not loaded: {f}", "-");
        }
        Ok(())
    }
}
