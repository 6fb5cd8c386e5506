//! `callout test`: try an action before publishing it.
//!
//! Without `--input`, it runs the stored test cases ([`crate::cases`]) of one action or of all,
//! through the real components with their recorded responses (nothing leaves the machine),
//! prints `ok` or `FAIL` with a diff per case, ends with `N passed, N failed`, and exits
//! non-zero on any failure. An action without cases, or one that does not load, counts as a
//! failure: it could not be published. `--junit FILE` also writes a JUnit XML report.
//!
//! With `--input`, it runs the action once in a mode: `--dry-run` validates the inputs and renders the exact requests, secrets redacted, nothing
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
#[command(group(clap::ArgGroup::new("mode").args(["dry_run", "mock", "live"]).requires("input")))]
pub struct TestArgs {
    /// The action's name; without it (and without --input), every action's cases run.
    pub action: Option<String>,
    /// The inputs, a JSON object: run the action once in the mode given (--dry-run, --mock or
    /// --live) instead of its stored cases.
    #[arg(long, requires = "mode")]
    pub input: Option<String>,
    /// With the stored cases: also write a JUnit XML report to this file.
    #[arg(long, value_name = "FILE", conflicts_with = "input")]
    pub junit: Option<PathBuf>,
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
        let Some(input) = &self.input else {
            return self.run_cases(global).await;
        };
        let Some(action) = self.action.clone() else {
            return Err(CliError::Usage(
                "--input needs the action's name: callout test <action> --input '{...}' --dry-run"
                    .into(),
            )
            .into());
        };
        let inputs = object("--input", input)?;
        let variables = object("--variables", &self.variables)?;
        let mock = match &self.mock {
            Some(path) => Some(Arc::new(MockResponse::load(path).map_err(CliError::Usage)?)),
            None => None,
        };
        let (_runtime, registry) = global.registry().await?;
        let plugin = super::find_action(&registry, &action, &global.actions)?;
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
        println!("test {action} ({mode})");
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
                    action,
                    message: failure.to_string(),
                }
                .into())
            }
        }
    }
}

impl TestArgs {
    /// Runs the stored cases of one action or of all.
    async fn run_cases(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let (_runtime, registry) = global.registry().await?;
        let plugins: Vec<Arc<crate::plugin::Plugin>> = match &self.action {
            Some(name) => vec![super::find_action(&registry, name, &global.actions)?],
            None => registry.plugins().cloned().collect(),
        };
        let mut passed = 0usize;
        let mut failed = 0usize;
        let mut junit = Junit::default();
        if self.action.is_none() {
            for f in registry.failures() {
                println!("FAIL {} (does not load)\n  {f}", f.file.display());
                junit.failure("load", &f.file.display().to_string(), &f.to_string());
                failed += 1;
            }
        }
        for plugin in &plugins {
            match crate::cases::run_all(plugin).await {
                Err(e) => {
                    println!("FAIL {} (cases unreadable)\n  {e}", plugin.name());
                    junit.failure(plugin.name(), "cases", &e);
                    failed += 1;
                }
                Ok(suite) if suite.results.is_empty() => {
                    let path = crate::cases::tests_path(&plugin.manifest().path);
                    println!(
                        "FAIL {} (no test cases: it cannot be published; add [[case]] tables to {})",
                        plugin.name(),
                        path.display()
                    );
                    junit.failure(plugin.name(), "cases", "no test cases");
                    failed += 1;
                }
                Ok(suite) => {
                    for r in &suite.results {
                        print!("{}", crate::cases::render(&suite.action, r));
                        if r.passed() {
                            junit.pass(&suite.action, &r.case);
                        } else {
                            junit.failure(
                                &suite.action,
                                &r.case,
                                &crate::cases::render(&suite.action, r),
                            );
                        }
                    }
                    passed += suite.passed();
                    failed += suite.failed();
                }
            }
        }
        println!("{passed} passed, {failed} failed");
        if let Some(path) = &self.junit {
            std::fs::write(path, junit.xml()).map_err(|e| {
                CliError::Usage(format!("cannot write --junit {}: {e}", path.display()))
            })?;
        }
        if failed > 0 {
            return Err(
                CliError::Failed(format!("{failed} test case(s) failed (listed above)")).into(),
            );
        }
        Ok(())
    }
}

/// A JUnit XML report: one test suite per action, one test case per case.
#[derive(Default)]
struct Junit {
    cases: Vec<(String, String, Option<String>)>,
}

impl Junit {
    fn pass(&mut self, suite: &str, case: &str) {
        self.cases.push((suite.into(), case.into(), None));
    }

    fn failure(&mut self, suite: &str, case: &str, message: &str) {
        self.cases
            .push((suite.into(), case.into(), Some(message.into())));
    }

    fn xml(&self) -> String {
        use std::fmt::Write as _;
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let failures = self.cases.iter().filter(|c| c.2.is_some()).count();
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            x,
            "<testsuites name=\"callout test\" tests=\"{}\" failures=\"{failures}\">",
            self.cases.len()
        );
        for (suite, case, failure) in &self.cases {
            let _ = write!(
                x,
                "  <testcase classname=\"{}\" name=\"{}\"",
                esc(suite),
                esc(case)
            );
            match failure {
                None => x.push_str("/>\n"),
                Some(m) => {
                    let _ = writeln!(
                        x,
                        ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>",
                        esc(m.lines().next().unwrap_or_default()),
                        esc(m)
                    );
                }
            }
        }
        x.push_str("</testsuites>\n");
        x
    }
}
