//! Conversations: on-prompt actions fire when their conditions hold and their inputs are
//! complete; chat-end actions run when the conversation ends.
//!
//! The flow of one user message ([`Chat::message`]):
//! 1. the message is stored, and values are extracted from it with every on-prompt action's
//!    `extract` patterns; values the agent supplies win over extracted ones; both are merged
//!    into the conversation's variables;
//! 2. the eligible actions are found ([`crate::triggers::eligible`]): conditions met, in priority
//!    order, plus any action still waiting for input from an earlier message;
//! 3. each fires at most once per message. Its inputs are the conversation variables named
//!    like its inputs, and they pass the input gate first: a missing or invalid required input
//!    means `needs-input` (with the questions to ask), never a call. The action then waits for
//!    the next message;
//! 4. an outcome's variables are merged into the conversation, and its reply (or the fallback
//!    message of its error policy) is stored as the agent's line.
//!
//! Ending a conversation ([`Chat::end`]) writes one durable outbox delivery per chat-end action
//! (its inputs, the transcript and the variables), in the same transaction that ends it; the
//! delivery workers ([`crate::delivery`]) call the actions, retrying until they succeed.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::call::{Call, Failure, Outcome, Role, TranscriptLine, Trigger};
use crate::conversations::{ConversationStore, StoreError, check_id};
use crate::delivery::{Deliverer, Payload};
use crate::manifest::TriggerKind;
use crate::outbox::{ConversationSnapshot, EndOutcome, NewDelivery, OutboxError, Plan};
use crate::registry::Actions;

/// The conversation variable that lists actions waiting for input.
pub const PENDING: &str = "callout.pending";

/// What the agent sends with a user message.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct UserMessage {
    /// The user's words.
    pub text: String,
    /// Intents the agent recognised.
    #[serde(default)]
    pub intents: Vec<String>,
    /// Values the agent extracted itself (they win over `extract` patterns).
    #[serde(default)]
    pub values: Map<String, Value>,
}

/// What one action did for a message or at chat-end.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Turn {
    /// The action.
    pub action: String,
    /// `ok`, `needs-input` or `failed`.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
    /// The outcome, when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The failure, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// What the agent may say: the reply, the fallback message, or the first question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub say: Option<String>,
    /// Attempts made.
    pub attempts: u32,
}

/// The answer to one user message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageResult {
    /// The conversation.
    pub conversation_id: String,
    /// What each fired action did, in firing order.
    pub turns: Vec<Turn>,
    /// The conversation's variables after the message.
    pub variables: Map<String, Value>,
}

/// Conversations over a registry of actions.
pub struct Chat {
    store: ConversationStore,
    actions: Arc<Actions>,
    deliverer: Arc<Deliverer>,
}

impl Chat {
    /// Opens the conversation store in `db` (the data dir's `callout.db`).
    ///
    /// # Errors
    /// When the database cannot be opened.
    /// Each message and each end works on the actions current when it starts
    /// ([`Actions::snapshot`]), so a hot reload never changes the set halfway through.
    /// Chat-end deliveries go to `deliverer`'s outbox (which must use the same database).
    pub fn open(
        db: &Path,
        actions: Arc<Actions>,
        deliverer: Arc<Deliverer>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            store: ConversationStore::open(db)?,
            actions,
            deliverer,
        })
    }

    /// The delivery workers and their outbox.
    pub fn deliverer(&self) -> &Arc<Deliverer> {
        &self.deliverer
    }

    /// The store, for reading conversations.
    pub fn store(&self) -> &ConversationStore {
        &self.store
    }

    /// Handles one user message in conversation `id` (started when new; a fresh id when None).
    ///
    /// # Errors
    /// An ended conversation, an invalid id, or a database error.
    pub async fn message(
        &self,
        id: Option<&str>,
        msg: UserMessage,
    ) -> Result<MessageResult, StoreError> {
        let id = self.store.start(id)?;
        let seq = self.store.append(&id, Role::User, &msg.text)?;
        let registry = self.actions.snapshot();
        let mut found = Map::new();
        for plugin in registry.plugins() {
            if plugin.conditions().is_some() {
                for (k, v) in plugin.extractor().extract(&msg.text) {
                    found.entry(k).or_insert(v);
                }
            }
        }
        found.extend(msg.values.clone());
        let mut variables = self.store.merge_variables(&id, &found)?;

        let mut pending: Vec<String> = variables
            .get(PENDING)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let candidates = registry
            .plugins()
            .filter_map(|p| p.conditions().map(|c| (p.name(), c)));
        let mut order: Vec<String> =
            crate::triggers::eligible(candidates, &msg.text, &msg.intents, &variables)
                .into_iter()
                .map(str::to_string)
                .collect();
        for p in &pending {
            if !order.contains(p) {
                order.push(p.clone());
            }
        }

        let mut turns = Vec::new();
        for name in order {
            let Some(plugin) = registry.get(&name) else {
                continue;
            };
            if !self.store.mark_fired(&id, seq, &name)? {
                continue;
            }
            let mut inputs = pick(&variables, &plugin.input_names());
            crate::inputs::coerce(&mut inputs, &plugin.descriptor().input_schema);
            let call = Call {
                trigger: Trigger::OnPrompt,
                inputs,
                conversation_id: Some(id.clone()),
                variables: public(&variables),
                ..Call::default()
            };
            let report = plugin.invoke(call).await;
            pending.retain(|p| *p != name);
            let turn = turn(&name, report);
            if turn.status == "needs-input" {
                pending.push(name.clone());
                // Values the action refused are forgotten, so the next message can bring new
                // ones instead of firing again with the same.
                if let Some(Failure::NeedsInput { fields }) = &turn.error {
                    let forget: Map<String, Value> = fields
                        .iter()
                        .filter(|f| variables.contains_key(&f.field))
                        .map(|f| (f.field.clone(), Value::Null))
                        .collect();
                    if !forget.is_empty() {
                        variables = self.store.merge_variables(&id, &forget)?;
                    }
                }
            }
            if let Some(o) = &turn.outcome {
                variables = self.store.merge_variables(&id, &o.variables)?;
            }
            if let Some(say) = &turn.say {
                self.store.append(&id, Role::Agent, say)?;
            }
            turns.push(turn);
        }
        let mut p = Map::new();
        p.insert(PENDING.into(), Value::from(pending));
        let variables = self.store.merge_variables(&id, &p)?;
        Ok(MessageResult {
            conversation_id: id,
            turns,
            variables: public(&variables),
        })
    }

    /// Ends conversation `id` and hands every chat-end action to the durable outbox: ending
    /// the conversation and writing one delivery per chat-end action (its inputs, the
    /// variables and the transcript as they are now, and a fresh idempotency key) commit in one
    /// transaction, so a crash either loses both or neither. The workers deliver them
    /// ([`crate::delivery::Deliverer`]). Ending twice enqueues once: the second answer is
    /// `already_ended` with no deliveries.
    ///
    /// # Errors
    /// An unknown conversation, an invalid id, or a database error.
    pub async fn end(&self, id: &str) -> Result<Ended, StoreError> {
        check_id(id)?;
        let registry = self.actions.snapshot();
        let plans: Vec<(String, Vec<String>, Value)> = registry
            .plugins()
            .filter(|p| p.manifest().raw.trigger.kind == TriggerKind::ChatEnd)
            .map(|p| {
                (
                    p.name().to_string(),
                    p.input_names(),
                    p.descriptor().input_schema.clone(),
                )
            })
            .collect();
        let plan: Plan = Box::new(move |snap: &ConversationSnapshot| {
            let transcript: Vec<TranscriptLine> = snap
                .messages
                .iter()
                .map(|m| TranscriptLine {
                    role: serde_json::from_value(Value::String(m.role.clone()))
                        .unwrap_or(Role::System),
                    text: m.text.clone(),
                    at_ms: m.at_ms,
                })
                .collect();
            plans
                .iter()
                .map(|(name, input_names, schema)| {
                    let mut inputs = pick(&snap.variables, input_names);
                    crate::inputs::coerce(&mut inputs, schema);
                    let payload = Payload {
                        inputs,
                        variables: public(&snap.variables),
                        transcript: transcript.clone(),
                    };
                    NewDelivery {
                        action: name.clone(),
                        conversation_id: Some(snap.id.clone()),
                        payload: serde_json::to_value(payload).unwrap_or(Value::Null),
                    }
                })
                .collect()
        });
        let outcome = self
            .deliverer
            .store()
            .end_and_enqueue(id, plan)
            .await
            .map_err(|e| match e {
                OutboxError::ConversationNotFound(id) => StoreError::NotFound(id),
                other => StoreError::Db {
                    path: self.store.path().to_path_buf(),
                    message: other.to_string(),
                },
            })?;
        Ok(match outcome {
            EndOutcome::Ended { deliveries, .. } => {
                self.deliverer.wake();
                Ended {
                    already_ended: false,
                    deliveries,
                }
            }
            EndOutcome::AlreadyEnded { .. } => Ended {
                already_ended: true,
                deliveries: Vec::new(),
            },
        })
    }

    /// Waits until each of `ids` is done or dead-lettered, or `timeout` passes, and returns
    /// them as they are then (for the CLI, the demo and tests; a server answers at once).
    ///
    /// # Errors
    /// A database error.
    pub async fn wait_delivered(
        &self,
        ids: &[crate::outbox::DeliveryId],
        timeout: std::time::Duration,
    ) -> Result<Vec<crate::outbox::DeliveryDetail>, crate::outbox::OutboxError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut all = Vec::new();
            for id in ids {
                if let Some(d) = self.deliverer.store().get(*id)? {
                    all.push(d);
                }
            }
            let finished = all.iter().all(|d| {
                matches!(
                    d.delivery.state,
                    crate::outbox::State::Done | crate::outbox::State::Dead
                )
            });
            if finished || std::time::Instant::now() >= deadline {
                return Ok(all);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Chat {
    /// Ends the conversation and waits (up to `timeout`) until its deliveries are done or
    /// dead-lettered: for the CLI and the demo, which run the workers in-process and show the
    /// result. A server answers at once instead ([`Chat::end`]).
    ///
    /// # Errors
    /// As [`Chat::end`], or an outbox read error.
    pub async fn end_and_wait(
        &self,
        id: &str,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Vec<crate::outbox::DeliveryDetail>> {
        let ended = self.end(id).await?;
        let ids: Vec<_> = ended.deliveries.iter().map(|d| d.id).collect();
        Ok(self.wait_delivered(&ids, timeout).await?)
    }
}

/// One line for a delivery's outcome: `done (attempt 1)`, or its state and last error.
pub fn describe_delivery(d: &crate::outbox::DeliveryDetail) -> String {
    let del = &d.delivery;
    match del.state {
        crate::outbox::State::Done => format!(
            "delivered (attempt {}, Idempotency-Key {})",
            del.attempts, del.idempotency_key
        ),
        state => format!(
            "{state} after {} attempt(s){}",
            del.attempts,
            del.last_error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    }
}

/// What ending a conversation did.
#[derive(Debug, Clone, Serialize)]
pub struct Ended {
    /// The conversation had ended before; nothing was enqueued this time.
    pub already_ended: bool,
    /// The deliveries written, one per chat-end action, with their ids and idempotency keys.
    pub deliveries: Vec<crate::outbox::Enqueued>,
}

/// The variables named like the action's inputs.
fn pick(variables: &Map<String, Value>, names: &[String]) -> Map<String, Value> {
    names
        .iter()
        .filter_map(|n| {
            variables
                .get(n)
                .filter(|v| !v.is_null())
                .map(|v| (n.clone(), v.clone()))
        })
        .collect()
}

/// Variables without the host's own bookkeeping.
fn public(variables: &Map<String, Value>) -> Map<String, Value> {
    variables
        .iter()
        .filter(|(k, _)| !k.starts_with("callout."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn turn(action: &str, report: crate::call::CallReport) -> Turn {
    Turn::from_report(action, report)
}

impl Turn {
    /// What a call of `action` did, in the words the agent gets: the status, the outcome or
    /// the failure, and what to say (the reply, the fallback message or the first question).
    pub fn from_report(action: &str, report: crate::call::CallReport) -> Self {
        turn_of(action, report)
    }
}

fn turn_of(action: &str, report: crate::call::CallReport) -> Turn {
    let attempts = report.attempts;
    match report.result {
        Ok(outcome) => Turn {
            action: action.to_string(),
            status: "ok",
            say: outcome.reply.clone(),
            outcome: Some(outcome),
            error: None,
            attempts,
        },
        Err(Failure::NeedsInput { fields }) => Turn {
            action: action.to_string(),
            status: "needs-input",
            say: fields.iter().find_map(|f| f.prompt.clone()).or_else(|| {
                fields
                    .first()
                    .map(|f| format!("I need your {} ({}).", f.field.replace('_', " "), f.reason))
            }),
            outcome: None,
            error: Some(Failure::NeedsInput { fields }),
            attempts,
        },
        Err(e) => Turn {
            action: action.to_string(),
            status: "failed",
            say: report.fallback,
            outcome: None,
            error: Some(e),
            attempts,
        },
    }
}
