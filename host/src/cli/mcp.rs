//! `callout mcp`: the actions as MCP tools over stdio, for agent hosts that launch their tools
//! as processes (Claude Desktop, IDEs, the MCP SDKs' stdio clients).
//!
//! stdout carries the protocol only; logs and warnings go to stderr. The actions directory is
//! watched as by `callout serve` (same rules, `server.watch_interval_ms`), and clients are told
//! when the tool list changes.

use std::sync::Arc;
use std::time::Duration;

use super::GlobalArgs;
use crate::gate::Gate;
use crate::registry::Actions;
use crate::server::loader::Loader;
use crate::server::mcp_backend::ActionTools;

/// Arguments of `callout mcp`.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Serve action versions that did not pass their test cases and lints (the publish gate).
    /// Every such version is logged as a warning and recorded as overridden. For emergencies.
    #[arg(long)]
    pub skip_publish_gate: bool,
}

impl McpArgs {
    /// Serves MCP on stdin/stdout until the client closes stdin.
    ///
    /// # Errors
    /// A bad config or an unreadable actions directory.
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let runtime = Arc::new(global.runtime_with(|c| {
            if self.skip_publish_gate {
                c.server.publish_gate = crate::gate::GateMode::Skip;
            }
        })?);
        let actions = Arc::new(Actions::default());
        let gate = Arc::new(Gate::open(
            &global.data_dir.join(crate::audit::DB_FILE),
            runtime.config().server.publish_gate,
        )?);
        let loader = Arc::new(Loader::new(
            runtime.clone(),
            global.actions.clone(),
            actions.clone(),
            gate,
        ));
        let report = loader.scan(false).await?;
        for f in &report.failed {
            eprintln!("callout mcp: not loaded: {f}");
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let interval = runtime.config().server.watch_interval_ms;
        if interval > 0 {
            tokio::spawn(
                loader
                    .clone()
                    .watch(Duration::from_millis(interval), stop.clone()),
            );
        }
        let result = crate::mcp::serve_stdio(Arc::new(ActionTools::new(actions))).await;
        stop.cancel();
        result
    }
}
