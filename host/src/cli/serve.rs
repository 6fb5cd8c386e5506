//! `callout serve`: the REST API, the OpenAPI document, MCP at `/mcp` and the admin API in one
//! process (see [`crate::server`]).

use std::sync::Arc;

use super::GlobalArgs;
use crate::server::Server;
use crate::server::auth::Keys;

/// Arguments of `callout serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where to listen (default: callout.toml's server.listen, else 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve action versions that did not pass their test cases and lints (the publish gate).
    /// Every such version is logged as a warning and recorded as overridden. For emergencies.
    #[arg(long)]
    pub skip_publish_gate: bool,
}

impl ServeArgs {
    /// Loads the actions, binds, and serves until SIGINT or SIGTERM.
    ///
    /// # Errors
    /// A bad config (no API key, say), an unreadable actions directory, an address that
    /// cannot be bound.
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let runtime = Arc::new(global.runtime_with(|c| {
            if self.skip_publish_gate {
                c.server.publish_gate = crate::gate::GateMode::Skip;
            }
        })?);
        let keys =
            Keys::from_settings(&runtime.config().server.api_keys, |v| std::env::var(v).ok())
                .map_err(|e| anyhow::anyhow!("callout.toml: {e}"))?;
        let server = Server::start(runtime, global.actions.clone(), &global.data_dir, keys).await?;
        let listener = server.bind(self.listen.as_deref()).await?;
        let addr = listener.local_addr()?;
        let state = server.state();
        let reg = state.actions.snapshot();
        eprintln!(
            "callout serve: {} action(s) loaded, {} failed; listening on http://{addr} (OpenAPI at /openapi.json, MCP at /mcp)",
            reg.plugins().count(),
            reg.failures().len()
        );
        for f in reg.failures() {
            eprintln!("  not loaded: {f}");
        }
        server
            .serve(listener, tokio_util::sync::CancellationToken::new(), true)
            .await
    }
}
