//! `callout demo`: the three use cases of the product, end to end, against a demo back end.
//!
//! The back end ([`backend::DemoBackend`]) starts in-process on an ephemeral loopback port with a
//! fresh bearer token. The actions in `plugins/` are pointed at it the documented way, never by
//! editing their `action.toml`: `[actions.<name>.config] base_url` overrides, a `--dev-loopback`
//! entry for exactly that port, and the token supplied as the value of each action's secret.
//! Several demos (and tests) can run at once: nothing is shared but the compile cache.

pub mod backend;

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

use crate::call::{Call, Failure};
use crate::config::HostConfig;
use crate::outbound_http::Secrets;
use crate::plugin::{Runtime, RuntimeOptions};
use crate::registry::Registry;

use self::backend::DemoBackend;

/// The environment variables the plugins' manifests read their tokens from (`[secrets.*] from`);
/// the demo supplies the back end's token under each name, in-process.
pub const TOKEN_VARIABLES: [&str; 3] =
    ["ORDERS_API_TOKEN", "MEMBERSHIP_API_TOKEN", "CRM_API_TOKEN"];

/// The actions the demo runs, by name.
pub const ACTIONS: [&str; 3] = ["order-status", "membership-verify", "crm-lead"];

/// One step of the demo.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// What it shows.
    pub title: &'static str,
    /// The action called.
    pub action: &'static str,
    /// Its inputs.
    pub inputs: Value,
    /// `None` when success is expected, or the failure class expected (`not-found`).
    pub expect_failure: Option<&'static str>,
}

/// One line of the scripted conversation: who spoke and what.
#[derive(Debug, Clone)]
pub struct Line {
    /// `user`, or `agent [action status]`.
    pub speaker: String,
    /// What was said.
    pub text: String,
}

impl Demo {
    /// The scripted conversation: an order asked about before its number is known, a membership
    /// check while the membership API fails (the fallback message), and a CRM lead delivered
    /// when the chat ends.
    ///
    /// # Errors
    /// A database error.
    pub async fn conversation(&self, db: &Path) -> anyhow::Result<Vec<Line>> {
        use crate::chat::{Chat, UserMessage};
        let actions = std::sync::Arc::new(crate::registry::Actions::new(self.registry.clone()));
        let deliverer = std::sync::Arc::new(crate::delivery::Deliverer::open(
            &self.runtime,
            db,
            actions.clone(),
        )?);
        let stop = tokio_util::sync::CancellationToken::new();
        let _stop_workers = stop.clone().drop_guard();
        tokio::spawn(deliverer.clone().run(stop));
        let chat = Chat::open(db, actions, deliverer)?;
        let id = chat.store().start(None)?;
        let mut lines = Vec::new();
        let say = |lines: &mut Vec<Line>, turns: &[crate::chat::Turn]| {
            for t in turns {
                lines.push(Line {
                    speaker: format!("agent [{} {}]", t.action, t.status),
                    text: t.say.clone().unwrap_or_default(),
                });
            }
        };
        let script: [(&str, Vec<&str>, Value); 4] = [
            ("Hi! Where is my order?", vec![], json!({})),
            ("It's 123456.", vec![], json!({})),
            (
                "Can you check that my membership is active? I'm M-1001, born 1990-04-12.",
                vec!["verify_membership"],
                json!({}),
            ),
            (
                "Thanks. Could your sales team send me a quote for 50 seats?",
                vec![],
                json!({"name": "Ada Lovelace", "email": "ada@example.com",
                       "company": "Analytical Engines Ltd", "inquiry": "Quote for 50 seats"}),
            ),
        ];
        for (i, (text, intents, values)) in script.into_iter().enumerate() {
            if i == 2 {
                self.backend.set_mode(
                    backend::Api::Memberships,
                    backend::Mode::Fail { status: 503 },
                );
                lines.push(Line {
                    speaker: "(demo)".into(),
                    text: "the membership API now answers 503".into(),
                });
            }
            lines.push(Line {
                speaker: "user".into(),
                text: text.to_string(),
            });
            let msg = UserMessage {
                text: text.to_string(),
                intents: intents.into_iter().map(str::to_string).collect(),
                values: values.as_object().cloned().unwrap_or_default(),
            };
            let result = chat.message(Some(&id), msg).await?;
            if result.turns.is_empty() {
                lines.push(Line {
                    speaker: "agent".into(),
                    text: "(no action fired; the agent answers from its own knowledge)".into(),
                });
            }
            say(&mut lines, &result.turns);
        }
        self.backend
            .set_mode(backend::Api::Memberships, backend::Mode::Normal);
        lines.push(Line {
            speaker: "(chat ends)".into(),
            text: "chat-end actions go to the durable outbox and are delivered".into(),
        });
        for d in chat
            .end_and_wait(&id, std::time::Duration::from_secs(30))
            .await?
        {
            lines.push(Line {
                speaker: format!("outbox [{} {}]", d.delivery.action, d.delivery.state),
                text: crate::chat::describe_delivery(&d),
            });
        }
        Ok(lines)
    }
}

/// The four scenarios: a found order, an unknown order, an active member, a lead created.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            title: "Order tracking: where is order 123456?",
            action: "order-status",
            inputs: json!({"order_id": "123456"}),
            expect_failure: None,
        },
        Scenario {
            title: "Order tracking: an order that does not exist",
            action: "order-status",
            inputs: json!({"order_id": "999999"}),
            expect_failure: Some("not-found"),
        },
        Scenario {
            title: "Membership verification: is M-1001 active?",
            action: "membership-verify",
            inputs: json!({"member_id": "M-1001", "date_of_birth": "1990-04-12"}),
            expect_failure: None,
        },
        Scenario {
            title: "CRM update: a new lead from the chat",
            action: "crm-lead",
            inputs: json!({
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "company": "Analytical Engines Ltd",
                "inquiry": "Pricing for 50 seats"
            }),
            expect_failure: None,
        },
    ]
}

/// What one scenario did.
#[derive(Debug)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: Scenario,
    /// The call's result.
    pub result: Result<crate::call::Outcome, Failure>,
    /// Whether it behaved as expected.
    pub as_expected: bool,
}

/// A running demo: the back end and a runtime wired to it.
pub struct Demo {
    /// The back end.
    pub backend: DemoBackend,
    /// The runtime.
    pub runtime: Runtime,
    /// The loaded actions.
    pub registry: std::sync::Arc<Registry>,
}

impl Demo {
    /// Starts the back end on an ephemeral loopback port and loads the actions of `actions_dir`
    /// pointed at it. `config` is the deployment's callout.toml (its other settings are kept).
    ///
    /// # Errors
    /// When the back end cannot bind, the runtime cannot start, or a demo action did not load.
    pub async fn start(
        actions_dir: &Path,
        data_dir: &Path,
        mut config: HostConfig,
    ) -> anyhow::Result<Self> {
        let backend =
            DemoBackend::start(SocketAddr::from(([127, 0, 0, 1], 0)), backend::new_token()).await?;
        for action in ACTIONS {
            let over = config.actions.entry(action.to_string()).or_default();
            over.config
                .insert("base_url".into(), toml::Value::String(backend.url()));
        }
        let mut secrets = Secrets::default();
        for var in TOKEN_VARIABLES {
            secrets.insert(var, backend.token());
        }
        let mut options = RuntimeOptions::new(data_dir);
        options.config = config;
        options.dev_loopback = vec![backend.addr.to_string()];
        options.secrets = secrets;
        let runtime = Runtime::new(options)?;
        let registry = Registry::load_dir(&runtime, actions_dir).await?;
        for action in ACTIONS {
            if registry.get(action).is_none() {
                let why = registry
                    .failures()
                    .iter()
                    .find(|f| f.action_folder().file_name().is_some_and(|n| n == action))
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| {
                        format!("no action named {action} in {}", actions_dir.display())
                    });
                anyhow::bail!(
                    "the demo needs the action {action}: {why}; build the plugins with `./dev plugins`"
                );
            }
        }
        Ok(Self {
            backend,
            runtime,
            registry: std::sync::Arc::new(registry),
        })
    }

    /// Runs every scenario in order.
    pub async fn run(&self) -> Vec<ScenarioResult> {
        let mut results = Vec::new();
        for scenario in scenarios() {
            let plugin = self
                .registry
                .get(scenario.action)
                .expect("checked in start");
            let inputs = scenario.inputs.as_object().cloned().unwrap_or_default();
            let report = plugin.invoke(Call::tool(inputs)).await;
            let as_expected = match (&report.result, scenario.expect_failure) {
                (Ok(_), None) => true,
                (Err(f), Some(class)) => f.class() == class,
                _ => false,
            };
            results.push(ScenarioResult {
                scenario,
                result: report.result,
                as_expected,
            });
        }
        results
    }
}
