//! Delivering the outbox: workers claim due chat-end deliveries, call their action, and record
//! each attempt, so a delivery ends as done, retried later, or dead-lettered.
//!
//! - **One key per delivery.** The idempotency key is made when the delivery is enqueued and
//!   handed to the action on every attempt (`Call::idempotency_key`); the SDK's helpers and the
//!   built-in plugin send it as `Idempotency-Key`, and signed requests use it as `webhook-id`.
//! - **What is retried** is what the action's `[on_error.retry] on` lists (default: timeout,
//!   connect, server-error, rate-limited), on the outbox's own schedule
//!   ([`crate::outbox::RetryPolicy`]: exponential backoff with jitter over 24 h by default,
//!   honouring `Retry-After`). Everything else (not-found, denied, invalid input, a trap, ...)
//!   is dead-lettered at once with its error: repeating it would fail the same way.
//! - **Inputs are checked once**, before the first call: a chat-end action whose required
//!   inputs the conversation never collected is dead-lettered as `needs-input`, never called.
//! - **Crashes**: a claimed delivery carries a lease (`outbox.lease_ms`). If the host dies
//!   during an attempt, nothing is recorded, the lease runs out, and the next host claims it
//!   again with the same key. An action that is not loaded (a reload in progress) is retried.
//! - **Shutdown**: [`Deliverer::run`] stops claiming when told, and finishes the attempts it
//!   has in hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::call::{Call, Failure, TranscriptLine, Trigger};
use crate::config::OutboxSettings;
use crate::db::now_ms;
use crate::metrics::Metrics;
use crate::outbox::policy::random_jitter;
use crate::outbox::{Attempt, Delivery, Next, OutboxStore, Recorded, RetryPolicy};
use crate::registry::Actions;

/// What a chat-end delivery calls its action with, as stored in the outbox at enqueue time:
/// the conversation as it was when it ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Payload {
    /// The action's inputs (the conversation variables named like them).
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// The conversation's variables (without the host's own).
    #[serde(default)]
    pub variables: Map<String, Value>,
    /// The transcript.
    #[serde(default)]
    pub transcript: Vec<TranscriptLine>,
}

/// The delivery workers of one host.
pub struct Deliverer {
    store: Arc<dyn OutboxStore>,
    actions: Arc<Actions>,
    metrics: Arc<Metrics>,
    settings: OutboxSettings,
    retry: RetryPolicy,
    wake: tokio::sync::Notify,
}

impl Deliverer {
    /// Workers over `store`, calling the actions current at each attempt.
    pub fn new(
        store: Arc<dyn OutboxStore>,
        actions: Arc<Actions>,
        metrics: Arc<Metrics>,
        settings: OutboxSettings,
    ) -> Self {
        let retry = RetryPolicy {
            base_ms: settings.retry_base_ms,
            max_delay_ms: settings.retry_max_delay_ms,
            max_age_ms: settings.retry_max_age_ms,
        };
        Self {
            store,
            actions,
            metrics,
            settings,
            retry,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Opens the outbox in the database `db` (the data dir's `callout.db`) with the runtime's
    /// `[outbox]` settings, and builds its workers (not started: spawn [`Deliverer::run`]).
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub fn open(
        runtime: &crate::plugin::Runtime,
        db: &std::path::Path,
        actions: Arc<Actions>,
    ) -> anyhow::Result<Self> {
        let settings = runtime.config().outbox.clone();
        let durability = if settings.durability == "full" {
            crate::outbox::Durability::Full
        } else {
            crate::outbox::Durability::Normal
        };
        let store = crate::outbox::SqliteOutbox::open(db, durability)?;
        Ok(Self::new(
            Arc::new(store),
            actions,
            runtime.metrics().clone(),
            settings,
        ))
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn OutboxStore> {
        &self.store
    }

    /// Tells idle workers that deliveries are due now (after an enqueue or a retry).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Runs `outbox.workers` workers until `stop` is cancelled; returns when every worker has
    /// finished the attempt it had in hand.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut set = tokio::task::JoinSet::new();
        for n in 0..self.settings.workers {
            set.spawn(self.clone().worker(n, stop.clone()));
        }
        while set.join_next().await.is_some() {}
    }

    async fn worker(self: Arc<Self>, n: usize, stop: CancellationToken) {
        let lease = self.settings.lease_ms;
        let poll = Duration::from_millis(self.settings.poll_ms);
        loop {
            if stop.is_cancelled() {
                return;
            }
            // Registered before the claim, so a wake between an empty claim and the wait is not
            // missed.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let claimed = match self.store.claim(now_ms(), lease, 1).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(worker = n, "cannot claim deliveries: {e}");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = &mut woken => {}
                    () = tokio::time::sleep(poll) => {}
                }
                continue;
            }
            for delivery in claimed {
                self.attempt(delivery).await;
            }
        }
    }

    /// One attempt of `d`, recorded.
    async fn attempt(&self, d: Delivery) {
        let started_at_ms = now_ms();
        let started = Instant::now();
        let (outcome, next) = self.call(&d).await;
        let attempt = Attempt {
            attempt: d.attempts,
            started_at_ms,
            duration_ms: started.elapsed().as_millis() as u64,
            error_class: outcome.class.clone(),
            http_status: outcome.status,
            message: outcome.message.clone(),
        };
        self.metrics.record_call(
            &d.action,
            Trigger::ChatEnd.as_str(),
            outcome.metric_class.unwrap_or("ok"),
            started.elapsed().as_micros() as u64,
        );
        match self.store.record(d.id, attempt, next).await {
            Ok(Recorded::Applied) => match next {
                Next::Done => {
                    tracing::info!(id = d.id, action = %d.action, attempt = d.attempts, "delivered")
                }
                Next::RetryAt(at) => {
                    tracing::info!(id = d.id, action = %d.action, attempt = d.attempts, class = ?outcome.class, in_ms = at.saturating_sub(now_ms()), "delivery failed; retrying later")
                }
                Next::Dead => {
                    tracing::warn!(id = d.id, action = %d.action, attempt = d.attempts, class = ?outcome.class, message = ?outcome.message, "delivery dead-lettered")
                }
            },
            Ok(Recorded::Stale) => tracing::warn!(
                id = d.id,
                "the lease ran out before this attempt was recorded; the newer attempt decides"
            ),
            Err(e) => tracing::error!(
                id = d.id,
                "cannot record the attempt ({e}); it is made again when its lease runs out"
            ),
        }
    }

    async fn call(&self, d: &Delivery) -> (AttemptOutcome, Next) {
        let retry_later = |outcome: AttemptOutcome, retry_after_ms: Option<u64>| {
            let next = self
                .retry
                .next(
                    d.attempts,
                    d.created_at_ms,
                    now_ms(),
                    retry_after_ms,
                    random_jitter(),
                )
                .map_or(Next::Dead, Next::RetryAt);
            (outcome, next)
        };
        let Some(plugin) = self.actions.snapshot().get(&d.action) else {
            return retry_later(
                AttemptOutcome::failed(
                    "not-loaded",
                    format!(
                        "action {:?} is not loaded; retried in case it comes back",
                        d.action
                    ),
                ),
                None,
            );
        };
        let payload: Payload = match serde_json::from_value(d.payload.clone()) {
            Ok(p) => p,
            Err(e) => {
                return (
                    AttemptOutcome::failed(
                        "contract",
                        format!("the stored payload is not a chat-end payload: {e}"),
                    ),
                    Next::Dead,
                );
            }
        };
        if let Err(fields) = plugin.check_inputs(&payload.inputs) {
            let failure = Failure::NeedsInput { fields };
            return (
                AttemptOutcome::failed("needs-input", failure.to_string()),
                Next::Dead,
            );
        }
        let call = Call {
            trigger: Trigger::ChatEnd,
            inputs: payload.inputs,
            conversation_id: d.conversation_id.clone(),
            variables: payload.variables,
            transcript: Some(payload.transcript),
            idempotency_key: Some(d.idempotency_key.clone()),
            attempt: d.attempts,
            ..Call::default()
        };
        let report = plugin.invoke_once(call).await;
        match report.result {
            Ok(_) => (AttemptOutcome::default(), Next::Done),
            Err(failure) => {
                let (status, retry_after_ms) = match &failure {
                    Failure::Upstream {
                        status,
                        retry_after_ms,
                        ..
                    } => (*status, *retry_after_ms),
                    _ => (None, None),
                };
                let outcome = AttemptOutcome {
                    class: Some(class_of(&failure)),
                    metric_class: Some(failure.class()),
                    status,
                    message: Some(failure.to_string()),
                };
                if plugin.retries(&failure) {
                    retry_later(outcome, retry_after_ms)
                } else {
                    (outcome, Next::Dead)
                }
            }
        }
    }
}

/// What an attempt came to, for the record.
#[derive(Debug, Clone, Default)]
struct AttemptOutcome {
    /// The error policy's class (`server-error`, `timeout`, ...): what the operator reads.
    class: Option<String>,
    /// [`Failure::class`] (`upstream`, `not-found`, ...): the `outcome` label of the call
    /// metrics, the same vocabulary as tool calls.
    metric_class: Option<&'static str>,
    status: Option<u16>,
    message: Option<String>,
}

impl AttemptOutcome {
    fn failed(class: &'static str, message: String) -> Self {
        Self {
            class: Some(class.to_string()),
            metric_class: Some(class),
            status: None,
            message: Some(message),
        }
    }
}

/// The failure's class as the error policy names it (`server-error`, `timeout`, `not-found`,
/// ...), with `needs-input` kept apart.
fn class_of(f: &Failure) -> String {
    match f {
        Failure::NeedsInput { .. } => "needs-input".into(),
        other => crate::error_policy::classify(other).as_str().to_string(),
    }
}
