//! `callout demo` and `callout demo-backend`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::{CliError, GlobalArgs};
use crate::config::HostConfig;
use crate::demo::backend::{self, DemoBackend};
use crate::demo::{Demo, ScenarioResult};

/// Arguments of `callout demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

impl DemoArgs {
    /// Runs the demo and prints each scenario readably.
    ///
    /// # Errors
    /// When the demo cannot start, or a scenario did not behave as expected.
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let (config, _) = HostConfig::load(global.config.as_deref())?;
        let demo = Demo::start(&global.actions, &global.data_dir, config).await?;
        let results = demo.run().await;
        let received = demo.backend.received();
        print!("{}", render(&demo, &results, &received));
        let lines = demo
            .conversation(&global.data_dir.join(crate::audit::DB_FILE))
            .await?;
        println!("\nA conversation (on-prompt rules, extract patterns, error policy, chat-end):");
        for l in &lines {
            println!("   {}: {}", l.speaker, l.text);
        }
        let failed: Vec<String> = results
            .iter()
            .filter(|r| !r.as_expected)
            .map(|r| format!("{}: {}", r.scenario.title, describe_result(r)))
            .collect();
        demo.backend.shutdown().await;
        if !failed.is_empty() {
            return Err(CliError::ActionFailed {
                action: "demo".into(),
                message: format!(
                    "{} scenario(s) did not behave as expected:\n{}",
                    failed.len(),
                    failed.join("\n")
                ),
            }
            .into());
        }
        Ok(())
    }
}

fn describe_result(r: &ScenarioResult) -> String {
    match &r.result {
        Ok(o) => o.reply.clone().unwrap_or_else(|| o.data.to_string()),
        Err(f) => f.to_string(),
    }
}

/// The demo's report, as printed.
pub fn render(
    demo: &Demo,
    results: &[ScenarioResult],
    received: &[backend::ReceivedRequest],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Callout demo: three actions, each a sandboxed WebAssembly component."
    );
    let _ = writeln!(
        out,
        "Demo back end on {} (dev-loopback for exactly that port; its bearer token is passed as a secret the plugins never see).\n",
        demo.backend.url()
    );
    for (i, r) in results.iter().enumerate() {
        let _ = writeln!(out, "{}. {}", i + 1, r.scenario.title);
        let _ = writeln!(
            out,
            "   callout invoke {} --input '{}'",
            r.scenario.action, r.scenario.inputs
        );
        let mark = if r.as_expected { "ok" } else { "UNEXPECTED" };
        match &r.result {
            Ok(o) => {
                if let Some(reply) = &o.reply {
                    let _ = writeln!(out, "   [{mark}] reply: {reply}");
                }
                let _ = writeln!(out, "   data: {}", o.data);
            }
            Err(f) => {
                let _ = writeln!(out, "   [{mark}] {}: {f}", f.class());
            }
        }
        let _ = writeln!(out);
    }
    let with_token = received.iter().filter(|r| r.authorized).count();
    let _ = writeln!(
        out,
        "The back end received {} request(s), {} with the bearer token:",
        received.len(),
        with_token
    );
    for r in received {
        let _ = writeln!(
            out,
            "   {} {} -> {}{}",
            r.method,
            r.path,
            r.status,
            r.idempotency_key
                .as_ref()
                .map(|k| format!(" (Idempotency-Key {k})"))
                .unwrap_or_default()
        );
    }
    let ok = results.iter().filter(|r| r.as_expected).count();
    let _ = writeln!(
        out,
        "\n{ok} of {} scenarios behaved as expected.",
        results.len()
    );
    out
}

/// Arguments of `callout demo-backend`.
#[derive(Debug, clap::Args)]
pub struct DemoBackendArgs {
    /// Where to listen (loopback only is sensible; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The bearer token to require (default: a fresh random one, printed).
    #[arg(long, env = "CALLOUT_DEMO_TOKEN")]
    pub token: Option<String>,
}

impl DemoBackendArgs {
    /// Serves the demo APIs until Ctrl-C.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn run(self, _global: &GlobalArgs) -> anyhow::Result<()> {
        let token = self.token.unwrap_or_else(backend::new_token);
        let server = DemoBackend::start(self.listen, token).await?;
        println!("demo back end listening on {}", server.url());
        println!("bearer token: {}", server.token());
        println!("APIs: GET /orders/{{id}}, POST /memberships/verify, POST /crm/leads");
        println!("control: POST /_demo/mode, GET /_demo/requests (Ctrl-C to stop)");
        tokio::signal::ctrl_c().await?;
        server.shutdown().await;
        Ok(())
    }
}
