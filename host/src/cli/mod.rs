//! The `callout` command line: global flags, one file per subcommand.
//!
//! Subcommands print their normal output to stdout and return errors; `main` is the only place
//! that prints errors and picks the exit code ([`CliError::exit_code`]).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::HostConfig;
use crate::plugin::{Runtime, RuntimeOptions};
use crate::registry::Registry;

pub mod audit;
pub mod build;
pub mod chat;
pub mod check;
pub mod demo;
pub mod invoke;
pub mod list;
pub mod mcp;
pub mod new;
pub mod outbox;
pub mod serve;
pub mod test;
pub mod tools;

/// Runs the API actions of AI agents as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "callout", version, about)]
pub struct Cli {
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Directory of actions: every <dir>/*/action.toml is loaded.
    #[arg(
        long,
        global = true,
        default_value = "plugins",
        env = "CALLOUT_ACTIONS"
    )]
    pub actions: PathBuf,
    /// Data directory: compile cache and its key, the database (audit log), the secrets file
    /// (git-ignore it).
    #[arg(
        long,
        global = true,
        default_value = ".callout",
        env = "CALLOUT_DATA_DIR"
    )]
    pub data_dir: PathBuf,
    /// callout.toml to read (default: ./callout.toml when it exists).
    #[arg(long, global = true, env = "CALLOUT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Loopback host:port pairs actions may reach, comma-separated (development only).
    #[arg(long, global = true, value_delimiter = ',')]
    pub dev_loopback: Vec<String>,
    /// More logging on stderr (-v info, -vv debug); CALLOUT_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate and compile every action, cross-check manifests against describe(), print
    /// what each action is granted, and lint it (its test cases run offline first).
    Check(check::CheckArgs),
    /// List the loaded actions.
    List(list::ListArgs),
    /// Call one action and print its outcome as JSON.
    Invoke(invoke::InvokeArgs),
    /// Run the three example actions against a demo back end started in-process.
    Demo(demo::DemoArgs),
    /// Serve the demo back end's APIs (orders, memberships, CRM) on loopback.
    DemoBackend(demo::DemoBackendArgs),
    /// List recorded outbound requests (allowed and denied), newest first.
    Audit(audit::AuditArgs),
    /// Run the stored test cases of one action or all; or, with --input, try an action once (--dry-run, --mock <file> or --live).
    Test(test::TestArgs),
    /// Talk to the actions in the terminal: on-prompt rules and extract patterns, no LLM.
    Chat(chat::ChatArgs),
    /// Serve the actions: REST API with OpenAPI, MCP at /mcp, admin API, hot reload.
    Serve(serve::ServeArgs),
    /// Print the actions as tool definitions: --format openai|anthropic|mcp.
    Tools(tools::ToolsArgs),
    /// Serve the actions as MCP tools over stdio.
    Mcp(mcp::McpArgs),
    /// The durable outbox of chat-end deliveries: list, show, retry, purge.
    Outbox(outbox::OutboxArgs),
    /// Scaffold a new action: --lang rust|python|js, in the actions directory.
    New(new::NewArgs),
    /// Build an action's component with its language's tool (cargo, componentize-py,
    /// componentize-js).
    Build(build::BuildArgs),
}

/// Errors with a meaning for the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The action ran and failed (exit 1).
    #[error("action {action} failed: {message}")]
    ActionFailed {
        /// Which action.
        action: String,
        /// Why.
        message: String,
    },
    /// Some actions did not load (exit 1).
    #[error("{} action(s) failed to load:\n{}", .0.len(), .0.join("\n"))]
    LoadFailures(Vec<String>),
    /// A check or test run found failures, already printed above (exit 1).
    #[error("{0}")]
    Failed(String),
    /// The command line or the setup is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// 1 for action and load failures, 2 for usage errors.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::ActionFailed { .. } | Self::LoadFailures(_) | Self::Failed(_) => 1,
            Self::Usage(_) => 2,
        }
    }
}

/// The action `name` of `registry`; when it is missing, the reason it did not load (a failure
/// in a folder of that name), or the names that did.
///
/// # Errors
/// [`CliError::Usage`] with that reason.
pub fn find_action(
    registry: &Registry,
    name: &str,
    dir: &std::path::Path,
) -> Result<std::sync::Arc<crate::plugin::Plugin>, CliError> {
    if let Some(p) = registry.get(name) {
        return Ok(p);
    }
    if let Some(f) = registry
        .failures()
        .iter()
        .find(|f| f.action_folder().file_name().is_some_and(|n| n == name))
    {
        return Err(CliError::Usage(format!("action {name} did not load: {f}")));
    }
    let names: Vec<&str> = registry.plugins().map(|p| p.name()).collect();
    Err(CliError::Usage(format!(
        "no action named {name:?} in {}; loaded: [{}] (see `callout list`)",
        dir.display(),
        names.join(", ")
    )))
}

impl GlobalArgs {
    /// Reads callout.toml and builds the runtime.
    ///
    /// # Errors
    /// A bad config file, dev-loopback entry or data dir.
    pub fn runtime(&self) -> anyhow::Result<Runtime> {
        self.runtime_with(|_| {})
    }

    /// As [`GlobalArgs::runtime`], with `adjust` applied to the settings first (a command's
    /// flags that override callout.toml).
    ///
    /// # Errors
    /// As [`GlobalArgs::runtime`].
    pub fn runtime_with(&self, adjust: impl FnOnce(&mut HostConfig)) -> anyhow::Result<Runtime> {
        let (mut config, _) = HostConfig::load(self.config.as_deref())?;
        adjust(&mut config);
        let mut options = RuntimeOptions::new(&self.data_dir);
        options.config = config;
        options.dev_loopback = self.dev_loopback.clone();
        let runtime = Runtime::new(options)?;
        let dev = runtime.dev_loopback();
        if !dev.is_empty() {
            let list: Vec<String> = dev.entries().iter().map(ToString::to_string).collect();
            eprintln!(
                "\n*** WARNING: dev-loopback is on: actions may reach {} on this machine. ***\n\
                 *** For local development and tests only; never use it in production.   ***\n",
                list.join(", ")
            );
        }
        Ok(runtime)
    }

    /// Builds the runtime and loads every action of `--actions`.
    ///
    /// # Errors
    /// As [`GlobalArgs::runtime`], or an unreadable actions directory.
    pub async fn registry(&self) -> anyhow::Result<(Runtime, Registry)> {
        let runtime = self.runtime()?;
        let registry = Registry::load_dir(&runtime, &self.actions).await?;
        Ok((runtime, registry))
    }
}

impl Cli {
    /// Runs the chosen subcommand.
    ///
    /// # Errors
    /// Whatever the subcommand reports; `main` prints it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Check(c) => c.run(&self.global).await,
            Command::List(c) => c.run(&self.global).await,
            Command::Invoke(c) => c.run(&self.global).await,
            Command::Demo(c) => c.run(&self.global).await,
            Command::DemoBackend(c) => c.run(&self.global).await,
            Command::Audit(c) => c.run(&self.global).await,
            Command::Test(c) => c.run(&self.global).await,
            Command::Chat(c) => c.run(&self.global).await,
            Command::Serve(c) => c.run(&self.global).await,
            Command::Tools(c) => c.run(&self.global).await,
            Command::Mcp(c) => c.run(&self.global).await,
            Command::Outbox(c) => c.run(&self.global).await,
            Command::New(c) => c.run(&self.global).await,
            Command::Build(c) => c.run(&self.global).await,
        }
    }
}
