//! The outbox in SQLite: tables `outbox` and `outbox_attempts` in the host's `callout.db`
//! (component `outbox` in `schema_migrations`), next to the conversation tables, so a
//! conversation's end and its deliveries can commit in one transaction.
//!
//! - Group commit: one writer thread owns the write connection and takes every write from a
//!   channel. It blocks for the first, then takes whatever else is already queued (up to
//!   [`MAX_BATCH`]) and runs them all in ONE immediate transaction, each inside its own
//!   savepoint: a write that fails is rolled back alone, its batch-mates commit. Results are
//!   handed out only after the commit, so nothing is acknowledged that a crash could lose.
//!   There is no timer: under load the queue fills while a batch commits, which is what makes
//!   the next batch big; a lone write commits at once.
//! - Reads (`list`, `get`, `counts`) use a second connection; in WAL they never wait for the
//!   writer.
//! - Durability: WAL, with `synchronous` per [`Durability`]: `NORMAL` (default: an accepted
//!   delivery survives a crash or SIGKILL of the process; a power loss may lose the last
//!   commits) or `FULL` (fsync on every commit: survives power loss, slower).
//! - Several processes may share the file: every write transaction is `BEGIN IMMEDIATE`, and
//!   waits up to the 5 s busy timeout for another process's writer.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Attempt, Completer, ConversationSnapshot, Counts, DEFAULT_LIST_LIMIT, DEFAULT_PURGE_LIMIT,
    Delivery, DeliveryDetail, DeliveryId, EndOutcome, Enqueued, ListFilter, MAX_LIST_LIMIT,
    MAX_MESSAGE_CHARS, NewDelivery, Next, OutboxError, OutboxStore, Pending, Plan, PurgeFilter,
    Recorded, SnapshotMessage, State, check_delivery, cut, new_key, payload_json,
};
use crate::db::{DbProblem, now_ms, to_i64, to_u64};

/// The most writes committed in one transaction.
pub const MAX_BATCH: usize = 256;

/// The name of this component's row in `schema_migrations`.
const COMPONENT: &str = "outbox";

/// The schema, one step per version: step `i` takes the outbox tables from version `i` to
/// `i + 1`. Append steps; never edit one that has shipped.
///
/// `due_at_ms` is the one column `claim` looks at: the next attempt's time for pending and
/// retrying entries, the lease's end for in-flight ones, NULL for finished ones; so "due" is one
/// range scan of a partial index whatever the state. `conversation_id` has no foreign key: a
/// delivery outlives its conversation, and the conversation tables belong to another component.
const MIGRATIONS: &[&str] = &["CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key TEXT    NOT NULL UNIQUE,
        action          TEXT    NOT NULL,
        conversation_id TEXT,
        payload         TEXT    NOT NULL,
        state           TEXT    NOT NULL
            CHECK (state IN ('pending', 'in_flight', 'retrying', 'done', 'dead')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        created_at_ms   INTEGER NOT NULL,
        updated_at_ms   INTEGER NOT NULL,
        due_at_ms       INTEGER,
        last_error      TEXT,
        CHECK ((due_at_ms IS NULL) = (state IN ('done', 'dead')))
    );
    CREATE INDEX outbox_due ON outbox (due_at_ms) WHERE due_at_ms IS NOT NULL;
    CREATE INDEX outbox_state ON outbox (state, updated_at_ms);
    CREATE INDEX outbox_action ON outbox (action);
    CREATE INDEX outbox_conversation ON outbox (conversation_id)
        WHERE conversation_id IS NOT NULL;
    CREATE TABLE outbox_attempts (
        delivery_id   INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
        attempt       INTEGER NOT NULL,
        started_at_ms INTEGER NOT NULL,
        duration_ms   INTEGER NOT NULL,
        error_class   TEXT,
        http_status   INTEGER,
        message       TEXT,
        PRIMARY KEY (delivery_id, attempt)
    ) WITHOUT ROWID;"];

/// The columns of a [`Delivery`], in [`row_to_delivery`]'s order.
const COLUMNS: &str = "id, idempotency_key, action, conversation_id, payload, state, attempts, \
                       created_at_ms, updated_at_ms, due_at_ms, last_error";

/// Takes the due entries: `?1` now, `?2` the lease's end, `?3` the limit.
const CLAIM: &str = "UPDATE outbox
    SET state = 'in_flight', attempts = attempts + 1, due_at_ms = ?2, updated_at_ms = ?1
    WHERE id IN (SELECT id FROM outbox WHERE due_at_ms <= ?1 ORDER BY due_at_ms, id LIMIT ?3)
    RETURNING id, idempotency_key, action, conversation_id, payload, state, attempts,
              created_at_ms, updated_at_ms, due_at_ms, last_error";

const INSERT: &str = "INSERT INTO outbox (idempotency_key, action, conversation_id, payload,
        state, attempts, created_at_ms, updated_at_ms, due_at_ms)
    VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5, ?5)";

/// How hard a commit is pushed to disk (SQLite's `synchronous`, with WAL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `synchronous=NORMAL`, the default: the WAL is synced at checkpoints only. A committed
    /// delivery survives a crash or SIGKILL of the process (the OS has the data); a power loss
    /// or OS crash may lose the last commits.
    #[default]
    Normal,
    /// `synchronous=FULL`: the WAL is synced on every commit (group commit shares that cost
    /// among a batch). A committed delivery survives power loss.
    Full,
}

impl Durability {
    /// The `synchronous` value.
    pub fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// What the writer has committed since the store was opened: shows how well writes are grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: u64,
    /// Calls carried out in them (failed ones, rolled back to their savepoint, included).
    pub writes: u64,
    /// The most calls in one committed transaction.
    pub largest_batch: u64,
}

#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
}

/// The outbox in the SQLite file of one data dir.
///
/// Share it (in an `Arc`, or as `Arc<dyn OutboxStore>`) between everything that enqueues or
/// delivers. Dropping it commits what is queued and stops the writer thread; that waits for
/// the writer, so drop it where blocking briefly is fine.
pub struct SqliteOutbox {
    path: PathBuf,
    durability: Durability,
    jobs: Option<Sender<Box<dyn Work>>>,
    reader: Mutex<Connection>,
    stats: Arc<Stats>,
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for SqliteOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOutbox")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl SqliteOutbox {
    /// Opens the database at `db_path` (creating it, mode 0600, and its directory, 0700, when
    /// missing), brings the outbox tables to the current schema, and starts the writer thread.
    ///
    /// `end_and_enqueue` also needs the conversation tables, which the conversation store
    /// creates; the outbox itself works without them.
    ///
    /// # Errors
    /// [`OutboxError::Db`] when the directory or the file cannot be created, the file is not a
    /// usable SQLite database, its outbox schema is newer than this build knows, or the writer
    /// thread cannot start.
    pub fn open(db_path: &Path, durability: Durability) -> Result<Self, OutboxError> {
        let problem = |p: DbProblem| db_err(db_path, &p.what, p.cause, p.fix);
        let mut conn = crate::db::open(db_path, "outbox").map_err(problem)?;
        let setup = |conn: &Connection| -> rusqlite::Result<()> {
            // Per connection: makes purging an entry delete its attempts.
            conn.pragma_update(None, "foreign_keys", "ON")?;
            conn.pragma_update(None, "synchronous", durability.pragma())
        };
        setup(&conn).map_err(|e| sql_err(db_path, "cannot set up the connection", &e))?;
        crate::db::migrate(
            &mut conn,
            COMPONENT,
            "outbox tables",
            MIGRATIONS,
            "check that the file is writable, or move it aside to start over",
        )
        .map_err(problem)?;
        let reader = crate::db::open(db_path, "outbox").map_err(problem)?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let writer = Writer {
            conn,
            rx,
            stats: Arc::clone(&stats),
            path: db_path.to_path_buf(),
        };
        let handle = std::thread::Builder::new()
            .name("callout-outbox".into())
            .spawn(move || writer.run())
            .map_err(|e| {
                db_err(
                    db_path,
                    "cannot start the writer thread",
                    e,
                    "check the process's thread limit",
                )
            })?;
        Ok(Self {
            path: db_path.to_path_buf(),
            durability,
            jobs: Some(tx),
            reader: Mutex::new(reader),
            stats,
            writer: Some(handle),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability it was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// What the writer has committed so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            writes: self.stats.writes.load(Ordering::Relaxed),
            largest_batch: self.stats.largest_batch.load(Ordering::Relaxed),
        }
    }

    /// Queues `f` for the writer: it runs inside the batch transaction, in its own savepoint
    /// (rolled back when it fails or panics), and its result is handed out after the commit.
    fn submit<T, F>(&self, what: &'static str, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&Ctx<'_>) -> Result<T, OutboxError> + Send + 'static,
    {
        let Some(jobs) = &self.jobs else {
            return Pending::ready(Err(stopped(&self.path)));
        };
        let (done, pending) = Pending::channel();
        let task = Box::new(Task {
            what,
            f: Some(f),
            result: None,
            done: Some(done),
        });
        if jobs.send(task).is_err() {
            return Pending::ready(Err(stopped(&self.path)));
        }
        pending
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        // A panic elsewhere cannot leave the read connection mid-transaction (an open
        // transaction rolls back when dropped), so a poisoned lock is taken over.
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SqliteOutbox {
    /// Commits what is queued and waits for the writer thread to finish.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the outbox writer thread panicked");
        }
    }
}

impl OutboxStore for SqliteOutbox {
    fn end_and_enqueue(&self, conversation_id: &str, plan: Plan) -> Pending<EndOutcome> {
        let id = conversation_id.to_owned();
        self.submit("ending a conversation", move |ctx| end(ctx, &id, plan))
    }

    fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Pending<Vec<Enqueued>> {
        if deliveries.is_empty() {
            return Pending::ready(Ok(Vec::new()));
        }
        // Checked, serialized and keyed here, in the caller's thread: the writer only inserts.
        let prepared: Result<Vec<Prepared>, OutboxError> =
            deliveries.into_iter().map(Prepared::new).collect();
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => return Pending::ready(Err(e)),
        };
        self.submit("enqueueing", move |ctx| {
            let now = now_ms();
            prepared.iter().map(|p| insert(ctx, p, now)).collect()
        })
    }

    fn claim(&self, now_ms: u64, lease_ms: u64, limit: usize) -> Pending<Vec<Delivery>> {
        if limit == 0 {
            return Pending::ready(Ok(Vec::new()));
        }
        let until = now_ms.saturating_add(lease_ms.max(1));
        self.submit("claiming", move |ctx| {
            let err = |e| ctx.err("cannot claim due deliveries", &e);
            let mut stmt = ctx.conn.prepare_cached(CLAIM).map_err(err)?;
            let rows = stmt
                .query_map(
                    params![to_i64(now_ms), to_i64(until), to_i64(limit as u64)],
                    row_to_delivery,
                )
                .map_err(err)?;
            let mut claimed = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)?;
            claimed.sort_by_key(|d| d.id);
            Ok(claimed)
        })
    }

    fn record(&self, id: DeliveryId, attempt: Attempt, next: Next) -> Pending<Recorded> {
        self.submit("recording an attempt", move |ctx| {
            record(ctx, id, &attempt, next)
        })
    }

    fn retry(&self, id: DeliveryId) -> Pending<bool> {
        self.submit("retrying", move |ctx| {
            let now = to_i64(now_ms());
            let n = ctx
                .conn
                .execute(
                    "UPDATE outbox SET state = 'retrying', due_at_ms = ?2, updated_at_ms = ?2
                     WHERE id = ?1 AND state IN ('dead', 'retrying')",
                    params![id, now],
                )
                .map_err(|e| ctx.err(&format!("cannot retry delivery {id}"), &e))?;
            Ok(n == 1)
        })
    }

    fn purge(&self, filter: &PurgeFilter) -> Pending<u64> {
        let states: Vec<&str> = [(filter.done, "'done'"), (filter.dead, "'dead'")]
            .into_iter()
            .filter_map(|(on, s)| on.then_some(s))
            .collect();
        if states.is_empty() {
            return Pending::ready(Ok(0));
        }
        let sql = format!(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
             WHERE state IN ({}) AND updated_at_ms < ?1 LIMIT ?2)",
            states.join(", ")
        );
        let before = filter.finished_before_ms.map_or(i64::MAX, to_i64);
        let limit = if filter.limit == 0 {
            DEFAULT_PURGE_LIMIT
        } else {
            filter.limit
        };
        self.submit("purging", move |ctx| {
            let n = ctx
                .conn
                .execute(&sql, params![before, to_i64(limit as u64)])
                .map_err(|e| ctx.err("cannot purge finished deliveries", &e))?;
            Ok(n as u64)
        })
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Delivery>, OutboxError> {
        use rusqlite::types::Value as Sql;
        let mut sql = format!("SELECT {COLUMNS} FROM outbox WHERE 1 = 1");
        let mut args: Vec<Sql> = Vec::new();
        if !filter.states.is_empty() {
            let marks = vec!["?"; filter.states.len()].join(", ");
            sql.push_str(&format!(" AND state IN ({marks})"));
            args.extend(filter.states.iter().map(|s| Sql::Text(s.as_str().into())));
        }
        if let Some(action) = &filter.action {
            sql.push_str(" AND action = ?");
            args.push(Sql::Text(action.clone()));
        }
        if let Some(conv) = &filter.conversation_id {
            sql.push_str(" AND conversation_id = ?");
            args.push(Sql::Text(conv.clone()));
        }
        if let Some(before) = filter.before_id {
            sql.push_str(" AND id < ?");
            args.push(Sql::Integer(before));
        }
        let limit = match filter.limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        args.push(Sql::Integer(to_i64(limit as u64)));
        let conn = self.reader();
        let err = |e| sql_err(&self.path, "cannot list deliveries", &e);
        let mut stmt = conn.prepare(&sql).map_err(err)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), row_to_delivery)
            .map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
    }

    fn get(&self, id: DeliveryId) -> Result<Option<DeliveryDetail>, OutboxError> {
        let mut conn = self.reader();
        let err = |e| sql_err(&self.path, &format!("cannot read delivery {id}"), &e);
        // One read transaction: the entry and its attempts come from the same snapshot.
        let tx = conn.transaction().map_err(err)?;
        let delivery = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"),
                [id],
                row_to_delivery,
            )
            .optional()
            .map_err(err)?;
        let Some(delivery) = delivery else {
            return Ok(None);
        };
        let attempts = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT attempt, started_at_ms, duration_ms, error_class, http_status, message
                     FROM outbox_attempts WHERE delivery_id = ?1 ORDER BY attempt",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok(Attempt {
                        attempt: u32::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        started_at_ms: to_u64(r.get(1)?),
                        duration_ms: to_u64(r.get(2)?),
                        error_class: r.get(3)?,
                        http_status: r.get(4)?,
                        message: r.get(5)?,
                    })
                })
                .map_err(err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)?
        };
        tx.commit().map_err(err)?;
        Ok(Some(DeliveryDetail { delivery, attempts }))
    }

    fn counts(&self) -> Result<Counts, OutboxError> {
        let conn = self.reader();
        let err = |e| sql_err(&self.path, "cannot count deliveries", &e);
        let mut stmt = conn
            .prepare_cached("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(err)?;
        let mut counts = Counts::default();
        for row in rows {
            let (state, n) = row.map_err(err)?;
            let state = State::parse(&state).ok_or_else(|| {
                corrupt(
                    &self.path,
                    "cannot count deliveries",
                    format!("unknown state {state:?}"),
                )
            })?;
            *counts.slot(state) = to_u64(n);
        }
        Ok(counts)
    }
}

/// A delivery ready to insert: checked, serialized and keyed.
struct Prepared {
    key: String,
    action: String,
    conversation_id: Option<String>,
    payload: String,
}

impl Prepared {
    fn new(d: NewDelivery) -> Result<Self, OutboxError> {
        check_delivery(&d)?;
        let payload = payload_json(&d)?;
        Ok(Self {
            key: new_key()?,
            action: d.action,
            conversation_id: d.conversation_id,
            payload,
        })
    }
}

fn insert(ctx: &Ctx<'_>, p: &Prepared, now: u64) -> Result<Enqueued, OutboxError> {
    let err = |e| ctx.err(&format!("cannot enqueue a delivery for {:?}", p.action), &e);
    ctx.conn
        .prepare_cached(INSERT)
        .and_then(|mut s| {
            s.execute(params![
                p.key,
                p.action,
                p.conversation_id,
                p.payload,
                to_i64(now)
            ])
        })
        .map_err(err)?;
    Ok(Enqueued {
        id: ctx.conn.last_insert_rowid(),
        idempotency_key: p.key.clone(),
        action: p.action.clone(),
    })
}

/// `end_and_enqueue`, inside the batch transaction.
fn end(ctx: &Ctx<'_>, id: &str, plan: Plan) -> Result<EndOutcome, OutboxError> {
    let what = format!("cannot end conversation {id:?}");
    let err = |e| ctx.err(&what, &e);
    let row = ctx
        .conn
        .query_row(
            "SELECT started_at_ms, ended_at_ms, variables FROM conversations WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
        )
        .optional()
        .map_err(err)?;
    let Some((started_at_ms, ended_at_ms, variables)) = row else {
        return Err(OutboxError::ConversationNotFound(id.to_owned()));
    };
    if let Some(ended) = ended_at_ms {
        return Ok(EndOutcome::AlreadyEnded {
            ended_at_ms: to_u64(ended),
        });
    }
    let variables = match serde_json::from_str::<Value>(&variables) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(corrupt(ctx.path, &what, "variables are not a JSON object")),
        Err(e) => {
            return Err(corrupt(
                ctx.path,
                &what,
                format!("variables are not JSON: {e}"),
            ));
        }
    };
    let messages = {
        let mut stmt = ctx
            .conn
            .prepare_cached(
                "SELECT seq, role, text, at_ms FROM messages
                 WHERE conversation_id = ?1 ORDER BY seq",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(SnapshotMessage {
                    seq: to_u64(r.get(0)?),
                    role: r.get(1)?,
                    text: r.get(2)?,
                    at_ms: to_u64(r.get(3)?),
                })
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)?
    };
    let now = now_ms();
    ctx.conn
        .execute(
            "UPDATE conversations SET ended_at_ms = ?2 WHERE id = ?1",
            params![id, to_i64(now)],
        )
        .map_err(err)?;
    let snapshot = ConversationSnapshot {
        id: id.to_owned(),
        started_at_ms: to_u64(started_at_ms),
        ended_at_ms: now,
        variables,
        messages,
    };
    let planned = catch_unwind(AssertUnwindSafe(|| plan(&snapshot)))
        .map_err(|_| OutboxError::Panicked(format!("the chat-end plan for conversation {id:?}")))?;
    let mut deliveries = Vec::with_capacity(planned.len());
    for mut d in planned {
        d.conversation_id = Some(id.to_owned());
        let p = Prepared::new(d)?;
        deliveries.push(insert(ctx, &p, now)?);
    }
    Ok(EndOutcome::Ended {
        ended_at_ms: now,
        deliveries,
    })
}

/// `record`, inside the batch transaction.
fn record(ctx: &Ctx<'_>, id: DeliveryId, a: &Attempt, next: Next) -> Result<Recorded, OutboxError> {
    let err = |e| {
        ctx.err(
            &format!("cannot record attempt {} of delivery {id}", a.attempt),
            &e,
        )
    };
    let finished = a.started_at_ms.saturating_add(a.duration_ms);
    let message = a.message.as_deref().map(|m| cut(m, MAX_MESSAGE_CHARS));
    let (state, due, last_error) = match next {
        Next::Done => (State::Done, None, None),
        Next::RetryAt(at) => (
            State::Retrying,
            Some(to_i64(at)),
            describe(a, message.as_deref()),
        ),
        Next::Dead => (State::Dead, None, describe(a, message.as_deref())),
    };
    let changed = ctx
        .conn
        .prepare_cached(
            "UPDATE outbox SET state = ?3, due_at_ms = ?4, last_error = ?5, updated_at_ms = ?6
             WHERE id = ?1 AND state = 'in_flight' AND attempts = ?2",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                i64::from(a.attempt),
                state.as_str(),
                due,
                last_error,
                to_i64(finished)
            ])
        })
        .map_err(err)?;
    if changed == 0 {
        return Ok(Recorded::Stale);
    }
    ctx.conn
        .prepare_cached(
            "INSERT INTO outbox_attempts (delivery_id, attempt, started_at_ms, duration_ms,
                 error_class, http_status, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                i64::from(a.attempt),
                to_i64(a.started_at_ms),
                to_i64(a.duration_ms),
                a.error_class,
                a.http_status,
                message
            ])
        })
        .map_err(err)?;
    Ok(Recorded::Applied)
}

/// An attempt's failure in one line, e.g. `http_5xx (HTTP 503): upstream unavailable`.
fn describe(a: &Attempt, message: Option<&str>) -> Option<String> {
    let mut s = a.error_class.clone().unwrap_or_default();
    if let Some(status) = a.http_status {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&format!("(HTTP {status})"));
    }
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(m);
    }
    (!s.is_empty()).then_some(s)
}

fn row_to_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    let bad = |col: usize, why: String| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, why.into())
    };
    let payload: String = r.get(4)?;
    let payload = serde_json::from_str(&payload)
        .map_err(|e| bad(4, format!("the payload is not JSON ({e})")))?;
    let state: String = r.get(5)?;
    let state = State::parse(&state).ok_or_else(|| bad(5, format!("unknown state {state:?}")))?;
    Ok(Delivery {
        id: r.get(0)?,
        idempotency_key: r.get(1)?,
        action: r.get(2)?,
        conversation_id: r.get(3)?,
        payload,
        state,
        attempts: u32::try_from(r.get::<_, i64>(6)?).unwrap_or(u32::MAX),
        created_at_ms: to_u64(r.get(7)?),
        updated_at_ms: to_u64(r.get(8)?),
        due_at_ms: r.get::<_, Option<i64>>(9)?.map(to_u64),
        last_error: r.get(10)?,
    })
}

/// What a job sees: the connection, inside its savepoint, and the file (for error messages).
struct Ctx<'a> {
    conn: &'a Connection,
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, what: &str, e: &rusqlite::Error) -> OutboxError {
        sql_err(self.path, what, e)
    }
}

/// A write queued for the writer thread.
trait Work: Send {
    /// Runs it inside the batch transaction; returns whether it succeeded (else its savepoint
    /// is rolled back).
    fn run(&mut self, ctx: &Ctx<'_>) -> bool;
    /// Marks it failed without running it (its savepoint could not be set up).
    fn fail(&mut self, e: OutboxError);
    /// Hands out its result once the batch is over: its own error if it failed, else the
    /// batch's commit error if any, else its value.
    fn finish(self: Box<Self>, commit: Result<(), &OutboxError>);
}

struct Task<T, F> {
    what: &'static str,
    f: Option<F>,
    result: Option<Result<T, OutboxError>>,
    done: Option<Completer<T>>,
}

impl<T, F> Work for Task<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Ctx<'_>) -> Result<T, OutboxError> + Send + 'static,
{
    fn run(&mut self, ctx: &Ctx<'_>) -> bool {
        let Some(f) = self.f.take() else { return false };
        let result = catch_unwind(AssertUnwindSafe(|| f(ctx)))
            .unwrap_or_else(|_| Err(OutboxError::Panicked(format!("the outbox's {}", self.what))));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn fail(&mut self, e: OutboxError) {
        self.f = None;
        self.result = Some(Err(e));
    }

    fn finish(mut self: Box<Self>, commit: Result<(), &OutboxError>) {
        let result = match (self.result.take(), commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(e.clone()),
            (None, Ok(())) => Err(OutboxError::Panicked(format!(
                "the outbox's {} (it never ran)",
                self.what
            ))),
        };
        if let Some(done) = self.done.take() {
            done.complete(result);
        }
    }
}

/// The writer thread: owns the write connection, commits batches until the channel closes.
struct Writer {
    conn: Connection,
    rx: Receiver<Box<dyn Work>>,
    stats: Arc<Stats>,
    path: PathBuf,
}

impl Writer {
    fn run(mut self) {
        // Block for the first write, then take what is already queued without waiting.
        while let Ok(first) = self.rx.recv() {
            let mut batch = Vec::with_capacity(16);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            let outcome = self.run_batch(&mut batch);
            match &outcome {
                Ok(()) => {
                    let n = batch.len() as u64;
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.stats.writes.fetch_add(n, Ordering::Relaxed);
                    self.stats.largest_batch.fetch_max(n, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(
                    path = %self.path.display(),
                    writes = batch.len(),
                    "outbox batch not committed: {e}"
                ),
            }
            for w in batch {
                w.finish(outcome.as_ref().map(|_| ()));
            }
        }
    }

    /// Runs `batch` in one immediate transaction, each write in its own savepoint, and commits.
    fn run_batch(&mut self, batch: &mut [Box<dyn Work>]) -> Result<(), OutboxError> {
        let path = self.path.as_path();
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(path, "cannot start a write transaction", &e))?;
        for w in batch.iter_mut() {
            // Some errors (disk full, I/O) make SQLite roll back the whole transaction; then
            // nothing of this batch can commit, and the rest must not run outside it.
            if tx.is_autocommit() {
                return Err(db_err(
                    path,
                    "cannot write",
                    "the database rolled the batch back after an error",
                    "check the disk (space, errors), then try again",
                ));
            }
            let sp = match tx.savepoint() {
                Ok(sp) => sp,
                Err(e) => {
                    w.fail(sql_err(path, "cannot start a savepoint", &e));
                    continue;
                }
            };
            let ctx = Ctx { conn: &sp, path };
            if w.run(&ctx) {
                if let Err(e) = sp.commit() {
                    w.fail(sql_err(path, "cannot release a savepoint", &e));
                }
            } else {
                // Dropping the savepoint rolls back to it and releases it.
                drop(sp);
            }
        }
        tx.commit().map_err(|e| sql_err(path, "cannot commit", &e))
    }
}

fn stopped(path: &Path) -> OutboxError {
    OutboxError::WriterStopped(format!("{} is closed", path.display()))
}

fn db_err(path: &Path, what: &str, cause: impl fmt::Display, fix: &str) -> OutboxError {
    OutboxError::Db {
        location: path.display().to_string(),
        message: format!("{what}: {cause}; {fix}"),
    }
}

fn sql_err(path: &Path, what: &str, e: &rusqlite::Error) -> OutboxError {
    let text = e.to_string();
    let fix = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "another process held the database for too long; try again"
        }
        Some(ErrorCode::DiskFull) => "free some disk space",
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
            "check that the data dir and the file are writable"
        }
        _ if text.contains("no such table: conversations")
            || text.contains("no such table: messages") =>
        {
            "the conversation tables are missing: open the conversation store on this file first"
        }
        _ if matches!(e, rusqlite::Error::FromSqlConversionFailure(..)) => {
            "the file was changed outside callout; restore it, or move it aside"
        }
        _ => "check that the file is a healthy SQLite database, or move it aside",
    };
    db_err(path, what, text, fix)
}

fn corrupt(path: &Path, what: &str, cause: impl fmt::Display) -> OutboxError {
    db_err(
        path,
        what,
        format!("stored data is unreadable ({cause})"),
        "the file was changed outside callout; restore it, or move it aside",
    )
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, SqliteOutbox) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("callout.db");
        // The conversation tables, as the host creates them.
        drop(crate::conversations::ConversationStore::open(&db).unwrap());
        let store = SqliteOutbox::open(&db, Durability::Normal).unwrap();
        (dir, db, store)
    }

    fn start(db: &Path, id: &str, variables: Value, lines: &[(&str, &str)]) {
        let conn = Connection::open(db).unwrap();
        conn.execute(
            "INSERT INTO conversations (id, started_at_ms, variables) VALUES (?1, 1000, ?2)",
            params![id, variables.to_string()],
        )
        .unwrap();
        for (i, (role, text)) in lines.iter().enumerate() {
            conn.execute(
                "INSERT INTO messages (conversation_id, seq, role, text, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, i as i64 + 1, role, text, 2000 + i as i64],
            )
            .unwrap();
        }
    }

    fn ended_at(db: &Path, id: &str) -> Option<i64> {
        Connection::open(db)
            .unwrap()
            .query_row(
                "SELECT ended_at_ms FROM conversations WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
    }

    fn rows(db: &Path, table: &str) -> i64 {
        Connection::open(db)
            .unwrap()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// Makes every insert of a delivery for action `explode` fail inside SQLite.
    fn explode_on_insert(db: &Path) {
        Connection::open(db)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER explode BEFORE INSERT ON outbox WHEN NEW.action = 'explode'
                 BEGIN SELECT RAISE(ABORT, 'forced failure'); END;",
            )
            .unwrap();
    }

    fn nd(action: &str) -> NewDelivery {
        NewDelivery {
            action: action.into(),
            conversation_id: None,
            payload: json!({"for": action}),
        }
    }

    fn plan(actions: &'static [&'static str]) -> Plan {
        Box::new(move |_| actions.iter().map(|a| nd(a)).collect())
    }

    fn one(store: &SqliteOutbox, action: &str) -> Enqueued {
        store.enqueue(vec![nd(action)]).wait().unwrap().remove(0)
    }

    fn state(store: &SqliteOutbox, id: DeliveryId) -> Delivery {
        store.get(id).unwrap().unwrap().delivery
    }

    fn failure(attempt: u32, started: u64, class: &str, status: Option<u16>, msg: &str) -> Attempt {
        Attempt {
            attempt,
            started_at_ms: started,
            duration_ms: 7,
            error_class: Some(class.into()),
            http_status: status,
            message: Some(msg.into()),
        }
    }

    fn success(attempt: u32, started: u64) -> Attempt {
        Attempt {
            attempt,
            started_at_ms: started,
            duration_ms: 3,
            error_class: None,
            http_status: Some(200),
            message: None,
        }
    }

    fn is_key(k: &str) -> bool {
        k.len() == 32
            && k.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    }

    #[test]
    fn ending_writes_the_end_and_the_deliveries_together_once() {
        let (_dir, db, store) = setup();
        start(
            &db,
            "c1",
            json!({"email": "ada@example.com", "callout.turns": 2}),
            &[("user", "hi"), ("agent", "hello, your email?")],
        );
        let seen = Arc::new(Mutex::new(None));
        let seen2 = Arc::clone(&seen);
        let before = now_ms();
        let outcome = store
            .end_and_enqueue(
                "c1",
                Box::new(move |snap: &ConversationSnapshot| {
                    *seen2.lock().unwrap() = Some(snap.clone());
                    vec![
                        NewDelivery {
                            action: "crm".into(),
                            // Replaced by the conversation being ended.
                            conversation_id: Some("other".into()),
                            payload: json!({
                                "email": snap.variables["email"],
                                "lines": snap.messages.len(),
                            }),
                        },
                        nd("mail"),
                    ]
                }),
            )
            .wait()
            .unwrap();
        let EndOutcome::Ended {
            ended_at_ms,
            deliveries,
        } = outcome
        else {
            panic!("{outcome:?}");
        };
        assert!(ended_at_ms >= before && ended_at_ms <= now_ms());
        assert_eq!(ended_at(&db, "c1"), Some(ended_at_ms as i64));
        assert_eq!(
            deliveries
                .iter()
                .map(|d| d.action.as_str())
                .collect::<Vec<_>>(),
            ["crm", "mail"]
        );
        assert!(deliveries[0].id < deliveries[1].id);
        assert_ne!(deliveries[0].idempotency_key, deliveries[1].idempotency_key);
        assert!(deliveries.iter().all(|d| is_key(&d.idempotency_key)));

        let snap = seen.lock().unwrap().take().unwrap();
        assert_eq!(snap.id, "c1");
        assert_eq!(snap.started_at_ms, 1000);
        assert_eq!(snap.ended_at_ms, ended_at_ms);
        assert_eq!(
            Value::Object(snap.variables),
            json!({"email": "ada@example.com", "callout.turns": 2})
        );
        assert_eq!(
            snap.messages,
            [
                SnapshotMessage {
                    seq: 1,
                    role: "user".into(),
                    text: "hi".into(),
                    at_ms: 2000
                },
                SnapshotMessage {
                    seq: 2,
                    role: "agent".into(),
                    text: "hello, your email?".into(),
                    at_ms: 2001
                },
            ]
        );

        let crm = state(&store, deliveries[0].id);
        assert_eq!(crm.state, State::Pending);
        assert_eq!(crm.conversation_id.as_deref(), Some("c1"));
        assert_eq!(crm.payload, json!({"email": "ada@example.com", "lines": 2}));
        assert_eq!(crm.idempotency_key, deliveries[0].idempotency_key);
        assert_eq!(crm.attempts, 0);
        assert_eq!(crm.due_at_ms, Some(crm.created_at_ms));

        // Ending again enqueues nothing, and does not even ask the plan.
        let called = Arc::new(AtomicBool::new(false));
        let called2 = Arc::clone(&called);
        let again = store
            .end_and_enqueue(
                "c1",
                Box::new(move |_| {
                    called2.store(true, Ordering::SeqCst);
                    vec![nd("crm")]
                }),
            )
            .wait()
            .unwrap();
        assert_eq!(again, EndOutcome::AlreadyEnded { ended_at_ms });
        assert!(!called.load(Ordering::SeqCst));
        assert_eq!(store.counts().unwrap().pending, 2);
        assert_eq!(ended_at(&db, "c1"), Some(ended_at_ms as i64));
    }

    #[test]
    fn an_unknown_conversation_enqueues_nothing() {
        let (_dir, _db, store) = setup();
        let err = store
            .end_and_enqueue("nobody", plan(&["crm"]))
            .wait()
            .unwrap_err();
        assert_eq!(err, OutboxError::ConversationNotFound("nobody".into()));
        assert!(err.to_string().contains("start it first"), "{err}");
        assert_eq!(store.counts().unwrap(), Counts::default());
    }

    #[test]
    fn a_failing_plan_leaves_the_conversation_open_and_writes_nothing() {
        let (_dir, db, store) = setup();
        start(&db, "c", json!({}), &[("user", "bye")]);
        explode_on_insert(&db);
        // The second insert fails inside SQLite, after the end and the first insert.
        let err = store
            .end_and_enqueue("c", plan(&["crm", "explode"]))
            .wait()
            .unwrap_err();
        assert!(matches!(&err, OutboxError::Db { .. }), "{err}");
        assert!(err.to_string().contains("forced failure"), "{err}");
        assert!(err.to_string().contains("\"explode\""), "{err}");
        assert_eq!(ended_at(&db, "c"), None);
        assert_eq!(rows(&db, "outbox"), 0);

        // A delivery refused by validation.
        let err = store
            .end_and_enqueue("c", plan(&["crm", ""]))
            .wait()
            .unwrap_err();
        assert!(matches!(err, OutboxError::InvalidDelivery { .. }), "{err}");
        assert_eq!(ended_at(&db, "c"), None);

        // A plan that panics.
        let err = store
            .end_and_enqueue("c", Box::new(|_| panic!("bad mapping")))
            .wait()
            .unwrap_err();
        assert!(
            matches!(&err, OutboxError::Panicked(what) if what.contains("\"c\"")),
            "{err}"
        );
        assert_eq!(ended_at(&db, "c"), None);
        assert_eq!(rows(&db, "outbox"), 0);

        // The writer survived all that; a good plan ends it.
        let ok = store.end_and_enqueue("c", plan(&["crm"])).wait().unwrap();
        assert!(matches!(ok, EndOutcome::Ended { ref deliveries, .. } if deliveries.len() == 1));
        assert!(ended_at(&db, "c").is_some());
        assert_eq!(rows(&db, "outbox"), 1);
    }

    #[test]
    fn concurrent_ends_enqueue_exactly_once() {
        let (_dir, db, store) = setup();
        start(&db, "race", json!({}), &[]);
        let store = Arc::new(store);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&store);
                let db = db.clone();
                std::thread::spawn(move || {
                    if i % 2 == 0 {
                        store.end_and_enqueue("race", plan(&["crm", "mail"])).wait()
                    } else {
                        // Another process's outbox on the same file.
                        SqliteOutbox::open(&db, Durability::Normal)
                            .unwrap()
                            .end_and_enqueue("race", plan(&["crm", "mail"]))
                            .wait()
                    }
                })
            })
            .collect();
        let outcomes: Vec<EndOutcome> = handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        let won = outcomes
            .iter()
            .filter(|o| matches!(o, EndOutcome::Ended { .. }))
            .count();
        assert_eq!(won, 1, "{outcomes:?}");
        assert_eq!(rows(&db, "outbox"), 2);
    }

    #[test]
    fn ending_without_conversation_tables_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("callout.db");
        let store = SqliteOutbox::open(&db, Durability::Normal).unwrap();
        let err = store
            .end_and_enqueue("c", plan(&["crm"]))
            .wait()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("open the conversation store"), "{msg}");
        assert!(msg.contains(&db.display().to_string()), "{msg}");
    }

    #[test]
    fn an_invalid_delivery_fails_its_whole_enqueue() {
        let (_dir, db, store) = setup();
        let err = store.enqueue(vec![nd("ok"), nd("")]).wait().unwrap_err();
        assert!(matches!(err, OutboxError::InvalidDelivery { .. }), "{err}");
        assert_eq!(rows(&db, "outbox"), 0);
        assert_eq!(store.enqueue(Vec::new()).wait().unwrap(), []);
        let two = store.enqueue(vec![nd("a"), nd("b")]).wait().unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].id, two[0].id + 1);
    }

    #[test]
    fn a_claim_holds_until_its_lease_expires_then_the_same_key_comes_back() {
        let (_dir, _db, store) = setup();
        let e = one(&store, "crm");
        let now = now_ms();
        let first = store.claim(now, 1_000, 10).wait().unwrap();
        assert_eq!(first.len(), 1);
        let d = &first[0];
        assert_eq!((d.id, d.state, d.attempts), (e.id, State::InFlight, 1));
        assert_eq!(d.idempotency_key, e.idempotency_key);
        assert_eq!(d.due_at_ms, Some(now + 1_000));
        // Not again while the lease runs.
        assert!(store.claim(now, 1_000, 10).wait().unwrap().is_empty());
        assert!(store.claim(now + 999, 1_000, 10).wait().unwrap().is_empty());
        // The worker died: at the lease's end it is handed out again, as the next attempt.
        let second = store.claim(now + 1_000, 5_000, 10).wait().unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!((second[0].id, second[0].attempts), (e.id, 2));
        assert_eq!(second[0].idempotency_key, e.idempotency_key);
        assert_eq!(second[0].due_at_ms, Some(now + 6_000));

        // The first worker comes back: its record is stale and changes nothing.
        let stale = store
            .record(e.id, success(1, now), Next::Done)
            .wait()
            .unwrap();
        assert_eq!(stale, Recorded::Stale);
        let detail = store.get(e.id).unwrap().unwrap();
        assert_eq!(
            (detail.delivery.state, detail.delivery.attempts),
            (State::InFlight, 2)
        );
        assert!(detail.attempts.is_empty());
        // The current one counts.
        let applied = store
            .record(e.id, success(2, now + 1_000), Next::Done)
            .wait()
            .unwrap();
        assert_eq!(applied, Recorded::Applied);
        assert_eq!(state(&store, e.id).state, State::Done);
        // And a second record of the same attempt is stale too.
        let again = store
            .record(e.id, success(2, now + 1_000), Next::Done)
            .wait()
            .unwrap();
        assert_eq!(again, Recorded::Stale);
        assert_eq!(store.get(e.id).unwrap().unwrap().attempts.len(), 1);
        assert_eq!(
            store
                .record(9_999, success(1, now), Next::Done)
                .wait()
                .unwrap(),
            Recorded::Stale
        );
    }

    #[test]
    fn claim_takes_due_entries_oldest_first_up_to_the_limit() {
        let (_dir, _db, store) = setup();
        let ids: Vec<DeliveryId> = (0..5).map(|i| one(&store, &format!("a{i}")).id).collect();
        let now = now_ms();
        // Nothing is due before it was written.
        assert!(store.claim(0, 1_000, 10).wait().unwrap().is_empty());
        assert!(store.claim(now, 1_000, 0).wait().unwrap().is_empty());
        let got: Vec<DeliveryId> = store
            .claim(now, 1_000, 2)
            .wait()
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(got, ids[..2]);
        // A retry due later than the rest waits its turn.
        store
            .record(
                ids[0],
                failure(1, now, "timeout", None, "slow"),
                Next::RetryAt(now + 50_000),
            )
            .wait()
            .unwrap();
        let rest: Vec<DeliveryId> = store
            .claim(now, 1_000, 10)
            .wait()
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(rest, ids[2..]);
        // At now + 50 s: the lease of ids[1..] expired long before ids[0]'s retry is due, and
        // the oldest due comes first.
        let later: Vec<DeliveryId> = store
            .claim(now + 50_000, 1_000, 3)
            .wait()
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(later, ids[1..4]);
        let last = store.claim(now + 50_000, 1_000, 10).wait().unwrap();
        assert_eq!(
            last.iter().map(|d| d.id).collect::<Vec<_>>(),
            [ids[0], ids[4]]
        );
        assert_eq!(last[0].attempts, 2);
    }

    #[test]
    fn attempts_move_entries_through_retrying_dead_and_done() {
        let (_dir, _db, store) = setup();
        let e = one(&store, "crm");
        let t0 = now_ms();
        assert_eq!(store.claim(t0, 60_000, 1).wait().unwrap()[0].attempts, 1);
        let r = store
            .record(
                e.id,
                failure(1, t0, "timeout", None, "no answer in 15 s"),
                Next::RetryAt(t0 + 1_000),
            )
            .wait()
            .unwrap();
        assert_eq!(r, Recorded::Applied);
        let d = state(&store, e.id);
        assert_eq!(d.state, State::Retrying);
        assert_eq!(d.due_at_ms, Some(t0 + 1_000));
        assert_eq!(d.last_error.as_deref(), Some("timeout: no answer in 15 s"));
        assert_eq!(d.updated_at_ms, t0 + 7);
        assert!(store.claim(t0 + 999, 60_000, 1).wait().unwrap().is_empty());

        let c = store.claim(t0 + 1_000, 60_000, 1).wait().unwrap();
        assert_eq!(
            (c[0].attempts, &c[0].idempotency_key),
            (2, &e.idempotency_key)
        );
        let long = "x".repeat(MAX_MESSAGE_CHARS + 50);
        store
            .record(
                e.id,
                failure(2, t0 + 1_000, "http_5xx", Some(503), &long),
                Next::Dead,
            )
            .wait()
            .unwrap();
        let d = state(&store, e.id);
        assert_eq!((d.state, d.due_at_ms), (State::Dead, None));
        let last = d.last_error.unwrap();
        assert!(last.starts_with("http_5xx (HTTP 503): xxx"), "{last}");
        // A dead entry is never claimed.
        assert!(
            store
                .claim(u64::MAX / 2, 60_000, 10)
                .wait()
                .unwrap()
                .is_empty()
        );

        assert!(store.retry(e.id).wait().unwrap());
        let d = state(&store, e.id);
        assert_eq!(d.state, State::Retrying);
        assert!(d.due_at_ms.unwrap() <= now_ms());
        assert_eq!(d.last_error.as_deref().map(|s| &s[..8]), Some("http_5xx"));
        let c = store.claim(now_ms(), 60_000, 1).wait().unwrap();
        assert_eq!(c[0].attempts, 3);
        store
            .record(e.id, success(3, t0 + 9_000), Next::Done)
            .wait()
            .unwrap();

        let detail = store.get(e.id).unwrap().unwrap();
        assert_eq!(detail.delivery.state, State::Done);
        assert_eq!(detail.delivery.due_at_ms, None);
        assert_eq!(detail.delivery.last_error, None);
        assert_eq!(detail.delivery.updated_at_ms, t0 + 9_003);
        assert_eq!(detail.delivery.attempts, 3);
        let a = &detail.attempts;
        assert_eq!(a.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(a[0], failure(1, t0, "timeout", None, "no answer in 15 s"));
        assert_eq!(a[1].http_status, Some(503));
        assert_eq!(
            a[1].message.as_ref().unwrap().chars().count(),
            MAX_MESSAGE_CHARS
        );
        assert_eq!(a[2], success(3, t0 + 9_000));
        // As JSON, the count and the list do not collide.
        let v = serde_json::to_value(&detail).unwrap();
        assert_eq!(v["delivery"]["attempts"], json!(3));
        assert_eq!(v["delivery"]["state"], json!("done"));
        assert_eq!(v["attempts"].as_array().unwrap().len(), 3);
        assert_eq!(v["attempts"][1]["http_status"], json!(503));
        assert!(store.get(12_345).unwrap().is_none());
    }

    #[test]
    fn retry_applies_to_dead_and_retrying_entries_only() {
        let (_dir, _db, store) = setup();
        let in_flight = one(&store, "f").id;
        let retrying = one(&store, "r").id;
        let done = one(&store, "d").id;
        let now = now_ms();
        assert_eq!(store.claim(now, 60_000, 10).wait().unwrap().len(), 3);
        let fresh = one(&store, "p2").id;
        store
            .record(
                retrying,
                failure(1, now, "connect", None, "refused"),
                Next::RetryAt(now + 3_600_000),
            )
            .wait()
            .unwrap();
        store
            .record(done, success(1, now), Next::Done)
            .wait()
            .unwrap();
        for id in [fresh, in_flight, done, 777] {
            assert!(!store.retry(id).wait().unwrap(), "{id}");
        }
        assert_eq!(state(&store, fresh).state, State::Pending);
        assert_eq!(state(&store, in_flight).state, State::InFlight);
        assert_eq!(state(&store, done).state, State::Done);
        // A retrying one is brought forward to now.
        assert!(store.retry(retrying).wait().unwrap());
        let d = state(&store, retrying);
        assert_eq!(d.state, State::Retrying);
        assert!(d.due_at_ms.unwrap() <= now_ms());
    }

    #[test]
    fn purge_deletes_only_finished_entries_and_their_attempts() {
        let (_dir, db, store) = setup();
        let done_early = one(&store, "done-early").id;
        let done_late = one(&store, "done-late").id;
        let dead = one(&store, "dead").id;
        let retrying = one(&store, "retrying").id;
        let in_flight = one(&store, "in-flight").id;
        let now = now_ms();
        assert_eq!(store.claim(now, 60_000, 10).wait().unwrap().len(), 5);
        let pending = one(&store, "pending").id;
        store
            .record(done_early, success(1, 1_000), Next::Done)
            .wait()
            .unwrap();
        store
            .record(done_late, success(1, 5_000), Next::Done)
            .wait()
            .unwrap();
        store
            .record(
                dead,
                failure(1, 2_000, "http_4xx", Some(400), "bad"),
                Next::Dead,
            )
            .wait()
            .unwrap();
        store
            .record(
                retrying,
                failure(1, 1_000, "timeout", None, "slow"),
                Next::RetryAt(now),
            )
            .wait()
            .unwrap();
        assert_eq!(
            store.counts().unwrap(),
            Counts {
                pending: 1,
                in_flight: 1,
                retrying: 1,
                done: 2,
                dead: 1
            }
        );
        assert_eq!(rows(&db, "outbox_attempts"), 4);

        // Nothing asked for, nothing deleted.
        assert_eq!(store.purge(&PurgeFilter::default()).wait().unwrap(), 0);
        // Done, finished before 3 s: only the early one.
        let n = store
            .purge(&PurgeFilter {
                done: true,
                finished_before_ms: Some(3_000),
                ..PurgeFilter::default()
            })
            .wait()
            .unwrap();
        assert_eq!(n, 1);
        assert!(store.get(done_early).unwrap().is_none());
        assert!(store.get(done_late).unwrap().is_some());
        // Everything finished.
        let n = store
            .purge(&PurgeFilter {
                done: true,
                dead: true,
                ..PurgeFilter::default()
            })
            .wait()
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            store.counts().unwrap(),
            Counts {
                pending: 1,
                in_flight: 1,
                retrying: 1,
                done: 0,
                dead: 0
            }
        );
        // The purged entries' attempts went with them; the retrying one keeps its own.
        assert_eq!(rows(&db, "outbox_attempts"), 1);
        for id in [pending, in_flight, retrying] {
            assert!(store.get(id).unwrap().is_some());
        }
        // Ids are never reused after a purge.
        assert!(one(&store, "new").id > pending);

        // The limit.
        let more: Vec<DeliveryId> = (0..3).map(|i| one(&store, &format!("m{i}")).id).collect();
        let claimed = store.claim(now_ms(), 60_000, 10).wait().unwrap();
        for d in claimed.iter().filter(|d| more.contains(&d.id)) {
            store
                .record(d.id, success(d.attempts, 1), Next::Done)
                .wait()
                .unwrap();
        }
        let f = PurgeFilter {
            done: true,
            limit: 2,
            ..PurgeFilter::default()
        };
        assert_eq!(store.purge(&f).wait().unwrap(), 2);
        assert_eq!(store.purge(&f).wait().unwrap(), 1);
        assert_eq!(store.purge(&f).wait().unwrap(), 0);
    }

    #[test]
    fn list_filters_and_pages_newest_first() {
        let (_dir, _db, store) = setup();
        let mut ids = Vec::new();
        for i in 0..6 {
            let mut d = nd(if i % 2 == 0 { "crm" } else { "mail" });
            d.conversation_id = Some(format!("c{}", i % 3));
            ids.push(store.enqueue(vec![d]).wait().unwrap()[0].id);
        }
        let now = now_ms();
        // Claim the first two (in flight).
        assert_eq!(store.claim(now, 60_000, 2).wait().unwrap().len(), 2);
        let list = |f: ListFilter| -> Vec<DeliveryId> {
            store.list(&f).unwrap().iter().map(|d| d.id).collect()
        };
        let rev = |v: &[DeliveryId]| v.iter().rev().copied().collect::<Vec<_>>();
        assert_eq!(list(ListFilter::default()), rev(&ids));
        assert_eq!(
            list(ListFilter {
                states: vec![State::InFlight],
                ..ListFilter::default()
            }),
            rev(&ids[..2])
        );
        assert_eq!(
            list(ListFilter {
                states: vec![State::Pending, State::Dead],
                ..ListFilter::default()
            }),
            rev(&ids[2..])
        );
        assert_eq!(
            list(ListFilter {
                action: Some("crm".into()),
                ..ListFilter::default()
            }),
            [ids[4], ids[2], ids[0]]
        );
        assert_eq!(
            list(ListFilter {
                conversation_id: Some("c1".into()),
                ..ListFilter::default()
            }),
            [ids[4], ids[1]]
        );
        // Pages of 2.
        let page1 = list(ListFilter {
            limit: 2,
            ..ListFilter::default()
        });
        assert_eq!(page1, [ids[5], ids[4]]);
        let page2 = list(ListFilter {
            limit: 2,
            before_id: Some(ids[4]),
            ..ListFilter::default()
        });
        assert_eq!(page2, [ids[3], ids[2]]);
        let full = store
            .list(&ListFilter {
                limit: 1,
                ..ListFilter::default()
            })
            .unwrap();
        assert_eq!(full[0].payload, json!({"for": "mail"}));
        assert!(is_key(&full[0].idempotency_key));
    }

    #[test]
    fn a_batch_commits_together_and_a_failing_write_fails_alone() {
        let (_dir, db, store) = setup();
        explode_on_insert(&db);
        start(&db, "c", json!({}), &[]);
        // Hold the write lock, as another process would, so writes queue up behind it.
        let blocker = Connection::open(&db).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let first = store.enqueue(vec![nd("first")]);
        std::thread::sleep(Duration::from_millis(100));
        let good1 = store.enqueue(vec![nd("good-1")]);
        let bad = store.enqueue(vec![nd("rolled-back"), nd("explode")]);
        let ending = store.end_and_enqueue("c", plan(&["crm"]));
        let unknown = store.end_and_enqueue("nobody", plan(&["crm"]));
        let good2 = store.enqueue(vec![nd("good-2")]);
        blocker.execute_batch("COMMIT").unwrap();

        first.wait().unwrap();
        let good1 = good1.wait().unwrap();
        let err = bad.wait().unwrap_err();
        assert!(err.to_string().contains("forced failure"), "{err}");
        assert!(matches!(ending.wait().unwrap(), EndOutcome::Ended { .. }));
        assert!(matches!(
            unknown.wait(),
            Err(OutboxError::ConversationNotFound(_))
        ));
        let good2 = good2.wait().unwrap();

        let stats = store.stats();
        // `first` alone (or with the rest), then the five queued behind the lock together.
        assert!(stats.largest_batch >= 5, "{stats:?}");
        assert!(stats.batches <= 2, "{stats:?}");
        assert_eq!(stats.writes, 6, "{stats:?}");
        let actions: Vec<String> = store
            .list(&ListFilter::default())
            .unwrap()
            .into_iter()
            .map(|d| d.action)
            .collect();
        assert_eq!(actions, ["good-2", "crm", "good-1", "first"]);
        assert_eq!(good2[0].id, good1[0].id + 2);
        assert!(ended_at(&db, "c").is_some());
    }

    #[test]
    fn many_threads_enqueue_concurrently() {
        let (_dir, _db, store) = setup();
        let store = Arc::new(store);
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    (0..25)
                        .map(|i| one(&store, &format!("t{t}-{i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Enqueued> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let mut ids: Vec<_> = all.iter().map(|e| e.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 200);
        let mut keys: Vec<_> = all.iter().map(|e| e.idempotency_key.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 200);
        assert_eq!(store.counts().unwrap().pending, 200);
        assert_eq!(store.stats().writes, 200);
    }

    #[test]
    fn durability_sets_synchronous() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("callout.db");
        for (durability, want) in [(Durability::Normal, 1), (Durability::Full, 2)] {
            let store = SqliteOutbox::open(&db, durability).unwrap();
            assert_eq!(store.durability(), durability);
            let got: i64 = store
                .submit("test", |ctx| {
                    Ok(ctx
                        .conn
                        .pragma_query_value(None, "synchronous", |r| r.get(0))
                        .unwrap())
                })
                .wait()
                .unwrap();
            assert_eq!(got, want, "{durability:?}");
            one(&store, "x");
        }
        assert_eq!(Durability::default(), Durability::Normal);
    }

    #[test]
    fn writes_can_be_awaited_or_waited_for() {
        let (_dir, _db, store) = setup();
        let store: Arc<dyn OutboxStore> = Arc::new(store);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let e = store.enqueue(vec![nd("async")]).await.unwrap();
            let claimed = store.claim(now_ms(), 1_000, 5).await.unwrap();
            assert_eq!(claimed[0].id, e[0].id);
            let s = Arc::clone(&store);
            let blocking =
                tokio::task::spawn_blocking(move || s.enqueue(vec![nd("blocking")]).wait())
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(blocking[0].id, e[0].id + 1);
        });
    }

    #[test]
    fn dropping_the_store_commits_what_is_queued() {
        let (_dir, db, store) = setup();
        let pending: Vec<_> = (0..50)
            .map(|i| store.enqueue(vec![nd(&format!("a{i}"))]))
            .collect();
        drop(store);
        for p in pending {
            p.wait().unwrap();
        }
        assert_eq!(rows(&db, "outbox"), 50);
    }

    #[test]
    fn a_store_dropped_without_shutdown_loses_nothing() {
        let (_dir, db, store) = setup();
        let e = one(&store, "crm");
        // No drop, no flush: the writer thread and its connection are simply abandoned.
        std::mem::forget(store);
        let store = SqliteOutbox::open(&db, Durability::Normal).unwrap();
        assert_eq!(state(&store, e.id).idempotency_key, e.idempotency_key);
    }

    /// Set in the child process of [`committed_deliveries_survive_sigkill`].
    const CRASH_CHILD: &str = "CALLOUT_OUTBOX_TEST_CRASH_CHILD";

    #[cfg(unix)]
    #[test]
    fn committed_deliveries_survive_sigkill() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        if let Ok(db) = std::env::var(CRASH_CHILD) {
            // The child: enqueue, claim one, report, then wait to be killed.
            let store = SqliteOutbox::open(Path::new(&db), Durability::Normal).unwrap();
            let e = store
                .enqueue(vec![nd("a"), nd("b"), nd("c")])
                .wait()
                .unwrap();
            let c = store.claim(now_ms(), 60_000, 1).wait().unwrap();
            let mut out = std::io::stdout().lock();
            writeln!(out, "ENQUEUED {}", serde_json::to_string(&e).unwrap()).unwrap();
            writeln!(out, "CLAIMED {}", c[0].id).unwrap();
            out.flush().unwrap();
            drop(out);
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        let (_dir, db, store) = setup();
        drop(store);
        let full = concat!(module_path!(), "::committed_deliveries_survive_sigkill");
        let name = full.split_once("::").map_or(full, |(_, rest)| rest);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut enqueued: Option<Vec<(DeliveryId, String)>> = None;
        let mut claimed: Option<DeliveryId> = None;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            // libtest's "test ... " may precede the first line.
            if let Some((_, json)) = line.split_once("ENQUEUED ") {
                let v: Vec<Value> = serde_json::from_str(json).unwrap();
                enqueued = Some(
                    v.iter()
                        .map(|e| {
                            (
                                e["id"].as_i64().unwrap(),
                                e["idempotency_key"].as_str().unwrap().to_owned(),
                            )
                        })
                        .collect(),
                );
            } else if let Some((_, id)) = line.split_once("CLAIMED ") {
                claimed = Some(id.parse().unwrap());
                break;
            }
        }
        // SIGKILL: no destructor, no flush, no checkpoint.
        child.kill().unwrap();
        child.wait().unwrap();
        let enqueued = enqueued.expect("the child reported its deliveries");
        let claimed = claimed.expect("the child reported its claim");

        let store = SqliteOutbox::open(&db, Durability::Normal).unwrap();
        for (id, key) in &enqueued {
            assert_eq!(&state(&store, *id).idempotency_key, key);
        }
        assert_eq!(
            store.counts().unwrap(),
            Counts {
                pending: 2,
                in_flight: 1,
                ..Counts::default()
            }
        );
        // The interrupted attempt is retried once its lease runs out, with the same key.
        let now = now_ms();
        let again = store.claim(now + 60_000, 60_000, 10).wait().unwrap();
        let retried = again.iter().find(|d| d.id == claimed).unwrap();
        assert_eq!(retried.attempts, 2);
        assert_eq!(
            retried.idempotency_key,
            enqueued.iter().find(|e| e.0 == claimed).unwrap().1
        );
    }

    #[test]
    fn claim_uses_the_due_index() {
        let (_dir, db, _store) = setup();
        let conn = Connection::open(&db).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CLAIM}"))
            .unwrap()
            .query_map(params![1, 2, 3], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("USING INDEX outbox_due")
                || plan.contains("USING COVERING INDEX outbox_due"),
            "{plan}"
        );
        assert!(!plan.contains("USE TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn schema_is_versioned_and_a_newer_one_is_refused() {
        let (_dir, db, store) = setup();
        drop(store);
        let conn = Connection::open(&db).unwrap();
        let versions: Vec<(String, i64)> = conn
            .prepare("SELECT component, version FROM schema_migrations ORDER BY component")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            versions,
            [
                ("conversations".to_owned(), 1),
                ("outbox".to_owned(), MIGRATIONS.len() as i64)
            ]
        );
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch("UPDATE schema_migrations SET version = 99 WHERE component = 'outbox'")
            .unwrap();
        let err = SqliteOutbox::open(&db, Durability::Normal)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&db.display().to_string()), "{err}");
        assert!(err.contains("newer callout"), "{err}");
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("callout.db");
        std::fs::write(&db, vec![b'x'; 4096]).unwrap();
        let err = SqliteOutbox::open(&db, Durability::Normal).unwrap_err();
        let OutboxError::Db { location, message } = &err else {
            panic!("{err}");
        };
        assert_eq!(location, &db.display().to_string());
        assert!(message.contains("move it aside"), "{err}");
    }

    #[test]
    fn unreadable_rows_are_an_error_with_a_fix() {
        let (_dir, db, store) = setup();
        let e = one(&store, "crm");
        Connection::open(&db)
            .unwrap()
            .execute(
                "UPDATE outbox SET payload = 'not json' WHERE id = ?1",
                [e.id],
            )
            .unwrap();
        let err = store.get(e.id).unwrap_err().to_string();
        assert!(
            err.contains(&format!("cannot read delivery {}", e.id)),
            "{err}"
        );
        assert!(err.contains("changed outside callout"), "{err}");
        assert!(store.list(&ListFilter::default()).is_err());
    }

    #[test]
    fn failures_are_described_in_one_line() {
        let a = |class: Option<&str>, status: Option<u16>| Attempt {
            attempt: 1,
            started_at_ms: 0,
            duration_ms: 0,
            error_class: class.map(Into::into),
            http_status: status,
            message: None,
        };
        assert_eq!(
            describe(&a(Some("timeout"), None), Some("slow")).unwrap(),
            "timeout: slow"
        );
        assert_eq!(
            describe(&a(Some("http_5xx"), Some(502)), None).unwrap(),
            "http_5xx (HTTP 502)"
        );
        assert_eq!(
            describe(&a(None, Some(500)), Some("boom")).unwrap(),
            "(HTTP 500): boom"
        );
        assert_eq!(describe(&a(None, None), Some("")), None);
    }
}
