//! `callout chat`: a conversation in the terminal, driven by the actions' on-prompt rules and
//! `extract` patterns, so a person can try the actions without an LLM.
//!
//! Each line is a user message. Lines starting with `/` are commands: `/intent NAME` (an intent
//! for the next message, as an agent would send), `/set KEY VALUE` (a value the agent
//! extracted), `/vars`, `/end` (ends the conversation: chat-end actions run) and `/quit`.

use std::io::BufRead;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::GlobalArgs;
use crate::chat::{Chat, Turn, UserMessage};
use crate::config::HostConfig;
use crate::demo::Demo;
use crate::registry::{Actions, Registry};

/// Arguments of `callout chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Run against the demo back end, started in-process (as `callout demo` does).
    #[arg(long)]
    pub demo: bool,
    /// Continue (or start) the conversation with this id.
    #[arg(long)]
    pub conversation: Option<String>,
}

/// Prints an action's turn the way the agent would answer.
pub fn print_turn(t: &Turn) {
    let say = t.say.clone().unwrap_or_else(|| match &t.error {
        Some(e) => e.to_string(),
        None => t
            .outcome
            .as_ref()
            .map(|o| o.data.to_string())
            .unwrap_or_default(),
    });
    println!("agent [{} {}]: {say}", t.action, t.status);
}

impl ChatArgs {
    /// Reads messages from stdin until `/quit` or end of input.
    ///
    /// # Errors
    /// When the runtime, the actions or the database cannot be set up.
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let (config, _) = HostConfig::load(global.config.as_deref())?;
        let (_demo, _runtime, registry): (Option<Demo>, _, Arc<Registry>) = if self.demo {
            let demo = Demo::start(&global.actions, &global.data_dir, config).await?;
            println!("(demo back end on {})", demo.backend.url());
            let registry = demo.registry.clone();
            (Some(demo), None, registry)
        } else {
            let (runtime, registry) = global.registry().await?;
            (None, Some(runtime), Arc::new(registry))
        };
        let db = global.data_dir.join(crate::audit::DB_FILE);
        let actions = Arc::new(Actions::new(registry));
        let runtime = match (&_demo, &_runtime) {
            (Some(d), _) => &d.runtime,
            (None, Some(r)) => r,
            (None, None) => unreachable!("one of the two is set above"),
        };
        let deliverer = Arc::new(crate::delivery::Deliverer::open(
            runtime,
            &db,
            actions.clone(),
        )?);
        let stop = tokio_util::sync::CancellationToken::new();
        let _stop_workers = stop.clone().drop_guard();
        tokio::spawn(deliverer.clone().run(stop));
        let chat = Chat::open(&db, actions, deliverer)?;
        let id = chat.store().start(self.conversation.as_deref())?;
        println!(
            "conversation {id}: type a message; /intent NAME, /set KEY VALUE, /vars, /end, /quit"
        );
        let mut intents = Vec::new();
        let mut values = Map::new();
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line?;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(cmd) = line.strip_prefix('/') {
                let mut parts = cmd.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("quit"), ..) => break,
                    (Some("intent"), Some(name), _) => intents.push(name.to_string()),
                    (Some("set"), Some(key), Some(value)) => {
                        values.insert(key.to_string(), Value::String(value.to_string()));
                    }
                    (Some("vars"), ..) => {
                        let conv = chat.store().get(&id)?;
                        let vars = conv.map(|c| c.variables).unwrap_or_default();
                        println!("{}", serde_json::to_string_pretty(&vars)?);
                    }
                    (Some("end"), ..) => {
                        if !values.is_empty() {
                            chat.store()
                                .merge_variables(&id, &std::mem::take(&mut values))?;
                        }
                        let done = chat
                            .end_and_wait(&id, std::time::Duration::from_secs(30))
                            .await?;
                        println!(
                            "(conversation ended; {} chat-end delivery(ies) in the outbox)",
                            done.len()
                        );
                        for d in &done {
                            println!(
                                "outbox [{} {}]: {}",
                                d.delivery.action,
                                d.delivery.state,
                                crate::chat::describe_delivery(d)
                            );
                        }
                        break;
                    }
                    _ => println!("commands: /intent NAME, /set KEY VALUE, /vars, /end, /quit"),
                }
                continue;
            }
            let msg = UserMessage {
                text: line.to_string(),
                intents: std::mem::take(&mut intents),
                values: std::mem::take(&mut values),
            };
            let result = chat.message(Some(&id), msg).await?;
            if result.turns.is_empty() {
                println!("agent: (no action fired)");
            }
            result.turns.iter().for_each(print_turn);
        }
        Ok(())
    }
}
