//! The durable outbox: chat-end deliveries that must reach their action even when the back end is
//! down for hours or the host is killed.
//!
//! Modelled on webhook services (Svix, Stripe): a delivery is written once, committed before
//! anyone is told it was accepted, then attempted until it succeeds or its retry schedule runs
//! out, at which point it is dead-lettered for an operator to inspect and retry.
//!
//! - [`OutboxStore`]: the storage contract (SQLite now, Postgres later). Ending a conversation and
//!   writing its deliveries commit together or not at all ([`OutboxStore::end_and_enqueue`]).
//! - [`sqlite::SqliteOutbox`]: the implementation in the host's `callout.db`, with group commit
//!   (one writer thread; writes that arrive together share one transaction).
//! - [`policy::RetryPolicy`]: when to try again (exponential backoff with equal jitter, 24 h by
//!   default, `Retry-After` honoured).
//! - [`signing`]: Standard Webhooks signatures (`webhook-signature: v1,<base64>`).
//! - [`bench::bench_enqueue`]: the enqueue throughput benchmark.
//!
//! # Life of a delivery
//!
//! ```text
//! enqueue ──▶ pending ──claim──▶ in_flight ──record(Done)──▶ done
//!                ▲                 │  │
//!                │   lease expires │  └──record(Dead)──▶ dead ──retry()──┐
//!                │  (claim again)  │                                      │
//!                │                 └──record(RetryAt)──▶ retrying ◀──────┘
//!                │                                          │
//!                └────────────── (due again: claim) ◀───────┘
//! ```
//!
//! Every delivery gets one idempotency key when it is enqueued (128 random bits, 32 lower-case
//! hex digits). It never changes across retries, so the receiver can drop repeats: delivery is
//! at-least-once, and the key makes it effectively once.
//!
//! A worker loop (not here) calls [`OutboxStore::claim`], attempts each claimed delivery, asks
//! the [`policy::RetryPolicy`] what to do after a failure, and calls [`OutboxStore::record`]
//! with the attempt number it was given as its claim token. A worker that crashes mid-attempt
//! leaves the entry in flight; when its lease expires, `claim` hands it out again with the next
//! attempt number, and anything the lost worker records later is ignored.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

pub mod bench;
pub mod policy;
pub mod signing;
pub mod sqlite;

pub use policy::RetryPolicy;
pub use sqlite::{Durability, SqliteOutbox, WriterStats};

/// The id of a delivery: assigned at enqueue, increasing, never reused (also after a purge).
pub type DeliveryId = i64;

/// The longest action name accepted, in bytes.
pub const MAX_ACTION_LEN: usize = 128;

/// The largest payload accepted, serialized as JSON: 1 MiB. Keeps one runaway transcript from
/// bloating the database; the Standard Webhooks spec recommends far smaller payloads.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The longest attempt message kept, in characters; longer messages are cut.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// What [`ListFilter::limit`] 0 means: 100 entries.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// The most entries one [`OutboxStore::list`] returns: 1 000.
pub const MAX_LIST_LIMIT: usize = 1000;

/// What [`PurgeFilter::limit`] 0 means: 10 000 entries per call, so a large purge does not hold
/// the write lock for long; call again while it returns the limit.
pub const DEFAULT_PURGE_LIMIT: usize = 10_000;

/// A delivery to write: which action, for which conversation, with what payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDelivery {
    /// The action to call, e.g. `lead-capture`: 1 to [`MAX_ACTION_LEN`] bytes, no control
    /// characters.
    pub action: String,
    /// The conversation it comes from; `None` for deliveries that belong to none.
    /// [`OutboxStore::end_and_enqueue`] sets it to the conversation being ended.
    pub conversation_id: Option<String>,
    /// What the action is called with (inputs, variables, transcript: the worker's choice), at
    /// most [`MAX_PAYLOAD_BYTES`] as JSON.
    pub payload: Value,
}

/// A delivery as written: its id and the idempotency key every attempt sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Enqueued {
    /// The delivery's id (for the operator commands).
    pub id: DeliveryId,
    /// 32 lower-case hex digits (128 random bits); the same for every attempt.
    pub idempotency_key: String,
    /// The action it calls.
    pub action: String,
}

/// Where a delivery is in its life (see the module docs for the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Written, never attempted; due at once.
    Pending,
    /// Claimed by a worker, whose lease runs until [`Delivery::due_at_ms`].
    InFlight,
    /// Failed at least once; attempted again at [`Delivery::due_at_ms`].
    Retrying,
    /// Delivered.
    Done,
    /// Given up on (its retry schedule ran out, or the failure was permanent); kept with its
    /// last error until an operator retries or purges it.
    Dead,
}

impl State {
    /// Every state, in life order.
    pub const ALL: [State; 5] = [
        State::Pending,
        State::InFlight,
        State::Retrying,
        State::Done,
        State::Dead,
    ];

    /// The name as stored and serialized: `pending`, `in_flight`, `retrying`, `done`, `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::InFlight => "in_flight",
            State::Retrying => "retrying",
            State::Done => "done",
            State::Dead => "dead",
        }
    }

    /// The state named `s` (as by [`State::as_str`]), if any.
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One delivery as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Its id.
    pub id: DeliveryId,
    /// The idempotency key every attempt sends (32 lower-case hex digits).
    pub idempotency_key: String,
    /// The action it calls.
    pub action: String,
    /// The conversation it comes from, if any.
    pub conversation_id: Option<String>,
    /// What the action is called with.
    pub payload: Value,
    /// Where it is in its life.
    pub state: State,
    /// Attempts started so far (claims); while in flight, the number of the current attempt,
    /// which is the claim token [`OutboxStore::record`] checks.
    pub attempts: u32,
    /// When it was enqueued, in ms since the Unix epoch; the retry schedule counts from here.
    pub created_at_ms: u64,
    /// When its state last changed, in ms since the Unix epoch (for done and dead entries: when
    /// the last attempt finished, which [`PurgeFilter::finished_before_ms`] compares with).
    pub updated_at_ms: u64,
    /// Pending or retrying: when the next attempt is due. In flight: when the lease expires
    /// (and the entry is claimed again if its worker has not recorded by then). Done or dead:
    /// `None`.
    pub due_at_ms: Option<u64>,
    /// The last failure (class, HTTP status, message) of a retrying or dead entry.
    pub last_error: Option<String>,
}

/// One attempt: what the worker reports to [`OutboxStore::record`], and what
/// [`OutboxStore::get`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// The attempt number, from 1: the [`Delivery::attempts`] that [`OutboxStore::claim`]
    /// returned (the claim token).
    pub attempt: u32,
    /// When the attempt started, in ms since the Unix epoch.
    pub started_at_ms: u64,
    /// How long it took, in ms.
    pub duration_ms: u64,
    /// Why it failed, as a short class name (`timeout`, `connect`, `http_5xx`, ...); `None` when
    /// it succeeded.
    pub error_class: Option<String>,
    /// The HTTP status of the response, if one came.
    pub http_status: Option<u16>,
    /// A short human-readable message; cut to [`MAX_MESSAGE_CHARS`] characters when stored.
    pub message: Option<String>,
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Next {
    /// It was delivered.
    Done,
    /// Try again at this time (ms since the Unix epoch), usually from
    /// [`RetryPolicy::next`](policy::RetryPolicy::next).
    RetryAt(u64),
    /// Give up: dead-letter it, keeping the attempt's error.
    Dead,
}

/// Whether [`OutboxStore::record`] changed the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Recorded {
    /// The attempt was stored and the delivery moved on.
    Applied,
    /// Nothing was stored: the delivery is no longer in flight under this attempt number (its
    /// lease expired and another worker claimed it, or it was finished or purged meanwhile).
    /// The caller should log it and move on; the newer claim decides.
    Stale,
}

/// A delivery with its attempts, oldest first. As JSON: `{"delivery": {...}, "attempts": [...]}`
/// (not flattened: the delivery's own `attempts` is its attempt count).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeliveryDetail {
    /// The delivery.
    pub delivery: Delivery,
    /// Its recorded attempts, by attempt number.
    pub attempts: Vec<Attempt>,
}

/// What [`OutboxStore::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    /// Only these states; empty means all.
    pub states: Vec<State>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this conversation.
    pub conversation_id: Option<String>,
    /// Only ids below this one (the last id of the previous page), for paging.
    pub before_id: Option<DeliveryId>,
    /// At most this many, newest first; 0 means [`DEFAULT_LIST_LIMIT`], and more than
    /// [`MAX_LIST_LIMIT`] is taken as that.
    pub limit: usize,
}

/// What [`OutboxStore::purge`] deletes: finished entries only. Pending, in-flight and retrying
/// entries are never deleted (there is no way to ask for it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeFilter {
    /// Delete done entries.
    pub done: bool,
    /// Delete dead entries.
    pub dead: bool,
    /// Only entries that finished before this time (ms since the Unix epoch, compared with
    /// [`Delivery::updated_at_ms`]); `None` means any time.
    pub finished_before_ms: Option<u64>,
    /// At most this many per call; 0 means [`DEFAULT_PURGE_LIMIT`].
    pub limit: usize,
}

/// How many deliveries are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Counts {
    /// Never attempted.
    pub pending: u64,
    /// Being attempted.
    pub in_flight: u64,
    /// Waiting for another attempt.
    pub retrying: u64,
    /// Delivered.
    pub done: u64,
    /// Given up on.
    pub dead: u64,
}

impl Counts {
    /// The count of `state`.
    pub fn get(&self, state: State) -> u64 {
        match state {
            State::Pending => self.pending,
            State::InFlight => self.in_flight,
            State::Retrying => self.retrying,
            State::Done => self.done,
            State::Dead => self.dead,
        }
    }

    fn slot(&mut self, state: State) -> &mut u64 {
        match state {
            State::Pending => &mut self.pending,
            State::InFlight => &mut self.in_flight,
            State::Retrying => &mut self.retrying,
            State::Done => &mut self.done,
            State::Dead => &mut self.dead,
        }
    }
}

/// One line of a transcript as stored in `messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotMessage {
    /// Its number in the conversation, from 1.
    pub seq: u64,
    /// Who said it: `user`, `agent` or `system` (the serde names of `crate::call::Role`).
    pub role: String,
    /// What was said.
    pub text: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// The conversation being ended, as [`OutboxStore::end_and_enqueue`] read it inside its
/// transaction: what a [`Plan`] picks each delivery's payload from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationSnapshot {
    /// The conversation id.
    pub id: String,
    /// When it started, in ms since the Unix epoch.
    pub started_at_ms: u64,
    /// The end time being written, in ms since the Unix epoch.
    pub ended_at_ms: u64,
    /// Its variables, all of them (including the host's own `callout.*` bookkeeping).
    pub variables: Map<String, Value>,
    /// The transcript, oldest first.
    pub messages: Vec<SnapshotMessage>,
}

/// Picks the chat-end deliveries of a conversation from its snapshot.
///
/// It runs inside the write transaction (on the store's writer thread, holding the database's
/// write lock), so it must be pure and quick: no I/O, no locks, no waiting. A panic in it fails
/// only its own call ([`OutboxError::Panicked`]).
pub type Plan = Box<dyn FnOnce(&ConversationSnapshot) -> Vec<NewDelivery> + Send + 'static>;

/// What [`OutboxStore::end_and_enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum EndOutcome {
    /// The conversation is now ended, and these deliveries were written with it.
    Ended {
        /// The end time written, in ms since the Unix epoch.
        ended_at_ms: u64,
        /// The deliveries the plan asked for, in its order.
        deliveries: Vec<Enqueued>,
    },
    /// The conversation had already ended; nothing was written (the first end enqueued its
    /// deliveries).
    AlreadyEnded {
        /// When it ended.
        ended_at_ms: u64,
    },
}

/// Purges with `filter` until nothing more matches (each call deletes at most its limit, so the
/// write lock is never held long) and returns how many entries were deleted.
///
/// # Errors
/// The store's error; what was deleted before it stays deleted.
pub async fn purge_all(store: &dyn OutboxStore, filter: &PurgeFilter) -> Result<u64, OutboxError> {
    let limit = if filter.limit == 0 {
        DEFAULT_PURGE_LIMIT
    } else {
        filter.limit
    } as u64;
    let mut purged = 0;
    loop {
        let n = store.purge(filter).await?;
        purged += n;
        if n < limit {
            return Ok(purged);
        }
    }
}

/// Why an outbox call failed. Every message says what failed and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// [`OutboxStore::end_and_enqueue`] was given a conversation that does not exist.
    #[error("conversation {0:?} not found; start it first")]
    ConversationNotFound(String),
    /// A delivery was refused before anything was written.
    #[error("invalid delivery for action {action:?}: {reason}; {fix}")]
    InvalidDelivery {
        /// The action named by the delivery (cut to 64 characters).
        action: String,
        /// What is wrong with it.
        reason: String,
        /// What to change.
        fix: &'static str,
    },
    /// The database could not be opened, migrated, read or written.
    #[error("outbox {location}: {message}")]
    Db {
        /// The database (for SQLite, the file).
        location: String,
        /// What failed, why, and how to fix it.
        message: String,
    },
    /// The store's writer is gone (the store was closed, or its thread died), so the call was
    /// not carried out.
    #[error("the outbox writer has stopped, so nothing was written; reopen the outbox ({0})")]
    WriterStopped(String),
    /// Code run inside the write transaction panicked; that call was rolled back, the others in
    /// its batch were not affected.
    #[error("{0} panicked, so nothing was written for it; fix the code that builds it")]
    Panicked(String),
    /// The operating system's random source failed while making an idempotency key.
    #[error("cannot make an idempotency key: {0}; check the OS random source")]
    Random(String),
}

/// The result of a write, available once it is committed (or has failed).
///
/// Wait for it either way: `.await` it in async code (it is a [`Future`]), or call
/// [`Pending::wait`] from a plain or `spawn_blocking` thread. Dropping it does not cancel the
/// write: the write still commits, and only its result is lost.
#[must_use = "the result says whether the write was committed"]
pub struct Pending<T> {
    inner: PendingInner<T>,
}

enum PendingInner<T> {
    Ready(Option<Result<T, OutboxError>>),
    Waiting(oneshot::Receiver<Result<T, OutboxError>>),
}

/// The sending half of a [`Pending`], for implementations of [`OutboxStore`].
pub struct Completer<T> {
    tx: oneshot::Sender<Result<T, OutboxError>>,
}

impl<T> Completer<T> {
    /// Hands `result` to the [`Pending`] (dropped silently if nobody waits any more).
    pub fn complete(self, result: Result<T, OutboxError>) {
        // The waiter may have gone away (a cancelled request); the write stands regardless.
        let _ = self.tx.send(result);
    }
}

impl<T> Pending<T> {
    /// A result known at once (e.g. a call refused before reaching the database).
    pub fn ready(result: Result<T, OutboxError>) -> Self {
        Self {
            inner: PendingInner::Ready(Some(result)),
        }
    }

    /// A result to come: the [`Completer`] goes to whoever carries out the write.
    pub fn channel() -> (Completer<T>, Self) {
        let (tx, rx) = oneshot::channel();
        (
            Completer { tx },
            Self {
                inner: PendingInner::Waiting(rx),
            },
        )
    }

    /// Blocks the thread until the result is there.
    ///
    /// # Panics
    /// When called on a thread that runs async tasks (a Tokio worker); `.await` the `Pending`
    /// there instead, or wait inside `spawn_blocking`.
    ///
    /// # Errors
    /// The write's error; [`OutboxError::WriterStopped`] when the writer went away first.
    pub fn wait(self) -> Result<T, OutboxError> {
        match self.inner {
            PendingInner::Ready(r) => r.unwrap_or_else(|| Err(polled_twice())),
            PendingInner::Waiting(rx) => rx.blocking_recv().unwrap_or_else(|_| Err(gone())),
        }
    }
}

fn gone() -> OutboxError {
    OutboxError::WriterStopped("it went away before answering".into())
}

fn polled_twice() -> OutboxError {
    OutboxError::Panicked("waiting twice for the same result".into())
}

// Nothing in a `Pending` is ever pinned in place: the result is moved out whole.
impl<T> Unpin for Pending<T> {}

impl<T> Future for Pending<T> {
    type Output = Result<T, OutboxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().inner {
            PendingInner::Ready(r) => Poll::Ready(r.take().unwrap_or_else(|| Err(polled_twice()))),
            PendingInner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(gone()))),
        }
    }
}

impl<T> fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.inner {
            PendingInner::Ready(_) => "ready",
            PendingInner::Waiting(_) => "waiting",
        };
        f.debug_struct("Pending")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// The storage of the outbox: SQLite now ([`SqliteOutbox`]), Postgres later.
///
/// Object-safe (`Arc<dyn OutboxStore>`), `Send + Sync`. Writes return a [`Pending`], which an
/// async caller `.await`s and a thread [`Pending::wait`]s for; it resolves only once the write
/// is committed, so nothing is acknowledged that a crash could lose. Submitting a write never
/// blocks. Reads are plain blocking calls (short, on a WAL snapshot; call them from
/// `spawn_blocking` on a busy runtime).
///
/// Why not `async fn`: async methods are not object-safe without boxing every future, and the
/// SQLite work is blocking anyway; a `Pending` gives async callers the same ergonomics while
/// letting an implementation (one writer thread here, a connection pool in Postgres) decide
/// where the work runs.
pub trait OutboxStore: Send + Sync {
    /// Ends conversation `conversation_id` and writes its chat-end deliveries, in ONE
    /// transaction: reads the conversation (variables and transcript), sets its `ended_at_ms`,
    /// calls `plan` with the snapshot, and writes what it returns (each with a new idempotency
    /// key, and `conversation_id` set to this conversation). Either all of it commits or none.
    ///
    /// Ending an ended conversation writes nothing and gives [`EndOutcome::AlreadyEnded`], so
    /// exactly one of several concurrent callers enqueues.
    ///
    /// # Errors
    /// [`OutboxError::ConversationNotFound`]; [`OutboxError::InvalidDelivery`] or
    /// [`OutboxError::Panicked`] for a bad plan (the conversation then stays open);
    /// [`OutboxError::Db`]; [`OutboxError::WriterStopped`].
    fn end_and_enqueue(&self, conversation_id: &str, plan: Plan) -> Pending<EndOutcome>;

    /// Writes `deliveries` (all or none), due at once, and returns them in the same order.
    ///
    /// # Errors
    /// [`OutboxError::InvalidDelivery`] (nothing written), [`OutboxError::Db`],
    /// [`OutboxError::Random`], [`OutboxError::WriterStopped`].
    fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Pending<Vec<Enqueued>>;

    /// Takes up to `limit` due deliveries, the longest due first (returned in id order):
    /// pending or retrying ones due by `now_ms`, and in-flight ones whose lease ran out by then
    /// (their worker died). Each is marked in flight until `now_ms + lease_ms` (at least
    /// 1 ms), its attempt count goes up by one, and it is returned with that count (the claim
    /// token for [`OutboxStore::record`]) and its unchanged idempotency key. Atomic: two
    /// workers never get the same attempt.
    ///
    /// Pick `lease_ms` longer than an attempt can take (the request timeout plus a margin): a
    /// lease that runs out mid-attempt lets a second worker start the same delivery.
    ///
    /// # Errors
    /// [`OutboxError::Db`], [`OutboxError::WriterStopped`].
    fn claim(&self, now_ms: u64, lease_ms: u64, limit: usize) -> Pending<Vec<Delivery>>;

    /// Stores `attempt` and moves the delivery on (`next`), in one transaction; but only while
    /// it is in flight under `attempt.attempt`. Otherwise nothing changes and the answer is
    /// [`Recorded::Stale`], so a worker that lost its lease cannot overwrite a newer claim.
    ///
    /// `Done` clears the last error; `RetryAt` and `Dead` keep this attempt's error as
    /// [`Delivery::last_error`]. The entry's [`Delivery::updated_at_ms`] becomes the attempt's
    /// end (`started_at_ms + duration_ms`).
    ///
    /// # Errors
    /// [`OutboxError::Db`], [`OutboxError::WriterStopped`].
    fn record(&self, id: DeliveryId, attempt: Attempt, next: Next) -> Pending<Recorded>;

    /// Makes a dead or retrying delivery due now (an operator's "retry"), keeping its attempts
    /// and key, and returns `true`; returns `false` (changing nothing) for other states and
    /// unknown ids. A retried delivery that fails again after its retry schedule has run out
    /// goes straight back to dead: one more attempt, not a new schedule.
    ///
    /// # Errors
    /// [`OutboxError::Db`], [`OutboxError::WriterStopped`].
    fn retry(&self, id: DeliveryId) -> Pending<bool>;

    /// Deletes finished (done and/or dead) deliveries and their attempts, as `filter` says, and
    /// returns how many deliveries went. Never deletes pending, in-flight or retrying ones.
    ///
    /// # Errors
    /// [`OutboxError::Db`], [`OutboxError::WriterStopped`].
    fn purge(&self, filter: &PurgeFilter) -> Pending<u64>;

    /// Deliveries matching `filter`, newest first.
    ///
    /// # Errors
    /// [`OutboxError::Db`] (also for rows this build cannot read).
    fn list(&self, filter: &ListFilter) -> Result<Vec<Delivery>, OutboxError>;

    /// The delivery with its attempts, or `None` when there is no such id.
    ///
    /// # Errors
    /// [`OutboxError::Db`].
    fn get(&self, id: DeliveryId) -> Result<Option<DeliveryDetail>, OutboxError>;

    /// How many deliveries are in each state.
    ///
    /// # Errors
    /// [`OutboxError::Db`].
    fn counts(&self) -> Result<Counts, OutboxError>;
}

/// Checks a delivery before anything is written.
fn check_delivery(d: &NewDelivery) -> Result<(), OutboxError> {
    let invalid = |reason: String, fix| OutboxError::InvalidDelivery {
        action: d.action.chars().take(64).collect(),
        reason,
        fix,
    };
    const NAME_FIX: &str = "name the action as its manifest does (e.g. \"lead-capture\")";
    if d.action.is_empty() {
        return Err(invalid("the action name is empty".into(), NAME_FIX));
    }
    if d.action.len() > MAX_ACTION_LEN {
        return Err(invalid(
            format!(
                "the action name is {} bytes long (at most {MAX_ACTION_LEN})",
                d.action.len()
            ),
            NAME_FIX,
        ));
    }
    if d.action.chars().any(char::is_control) {
        return Err(invalid(
            "the action name contains a control character".into(),
            NAME_FIX,
        ));
    }
    Ok(())
}

/// The payload as stored, after checking its size.
fn payload_json(d: &NewDelivery) -> Result<String, OutboxError> {
    let json = serde_json::to_string(&d.payload).map_err(|e| OutboxError::InvalidDelivery {
        action: d.action.chars().take(64).collect(),
        reason: format!("the payload cannot be serialized ({e})"),
        fix: "pass plain JSON",
    })?;
    if json.len() > MAX_PAYLOAD_BYTES {
        return Err(OutboxError::InvalidDelivery {
            action: d.action.chars().take(64).collect(),
            reason: format!(
                "the payload is {} bytes as JSON (at most {MAX_PAYLOAD_BYTES})",
                json.len()
            ),
            fix: "send less (e.g. the last part of the transcript), or a reference to fetch",
        });
    }
    Ok(json)
}

/// A new idempotency key: 128 bits from the OS, as 32 lower-case hex digits.
fn new_key() -> Result<String, OutboxError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| OutboxError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// `s` cut to at most `max` characters.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_round_trip_through_their_names() {
        for st in State::ALL {
            assert_eq!(State::parse(st.as_str()), Some(st));
            assert_eq!(serde_json::to_value(st).unwrap(), json!(st.as_str()));
            assert_eq!(st.to_string(), st.as_str());
        }
        assert_eq!(State::parse("inflight"), None);
        assert_eq!(State::parse("Pending"), None);
    }

    #[test]
    fn deliveries_are_checked_with_a_fix() {
        let d = |action: &str| NewDelivery {
            action: action.into(),
            conversation_id: None,
            payload: json!({}),
        };
        check_delivery(&d("lead-capture")).unwrap();
        check_delivery(&d(&"a".repeat(MAX_ACTION_LEN))).unwrap();
        for (bad, why) in [
            ("", "empty"),
            ("a\nb", "control character"),
            (&"a".repeat(MAX_ACTION_LEN + 1) as &str, "129 bytes"),
        ] {
            let err = check_delivery(&d(bad)).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
            assert!(
                err.contains("name the action as its manifest does"),
                "{err}"
            );
        }
        let big = NewDelivery {
            payload: json!("x".repeat(MAX_PAYLOAD_BYTES)),
            ..d("big")
        };
        let err = payload_json(&big).unwrap_err().to_string();
        assert!(err.contains("at most 1048576"), "{err}");
        assert!(err.contains("send less"), "{err}");
        assert_eq!(payload_json(&d("a")).unwrap(), "{}");
    }

    #[test]
    fn keys_are_32_distinct_lower_hex_digits() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        for k in [&a, &b] {
            assert_eq!(k.len(), 32);
            assert!(
                k.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            );
        }
    }

    #[test]
    fn cut_counts_characters() {
        assert_eq!(cut("héllo", 2), "hé");
        assert_eq!(cut("héllo", 5), "héllo");
        assert_eq!(cut("", 3), "");
    }

    #[test]
    fn pending_resolves_ready_and_sent_results() {
        assert_eq!(Pending::ready(Ok(3)).wait(), Ok(3));
        let (c, p) = Pending::channel();
        c.complete(Ok("x"));
        assert_eq!(p.wait(), Ok("x"));
        // The completer dropped without an answer: the writer went away.
        let (c, p) = Pending::<u8>::channel();
        drop(c);
        assert!(matches!(p.wait(), Err(OutboxError::WriterStopped(_))));
    }

    #[tokio::test]
    async fn pending_can_be_awaited() {
        assert_eq!(Pending::ready(Ok(1)).await, Ok(1));
        let (c, p) = Pending::channel();
        let t = tokio::spawn(p);
        c.complete(Ok(7u32));
        assert_eq!(t.await.unwrap(), Ok(7));
    }
}
