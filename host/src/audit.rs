//! The audit log: every outbound HTTP attempt of an action, allowed or denied, in SQLite.
//!
//! - Where: `<data dir>/callout.db` ([`DB_FILE`]), table `audit_events`. The file is created with
//!   mode 0600 (its parent directory with 0700) and may hold other components' tables; each
//!   component versions its own tables in `schema_migrations`.
//! - Never in the way: [`AuditLog::record`] only queues the event (it never blocks a request);
//!   one writer thread commits queued events in batches, one transaction per batch, so a burst
//!   costs a few commits instead of one per request. When the queue is full the event is
//!   dropped and counted ([`AuditLog::dropped`]), never waited for.
//! - Also a log line: every recorded event is emitted through `tracing` (target
//!   `callout::audit`, level info, one field per column), so a log pipeline sees it even when
//!   the database is unavailable.
//! - Durability: WAL with `synchronous=NORMAL`: a committed event survives a crash of the
//!   process; a power loss may lose the last commits. [`AuditLog::flush`] waits until every
//!   event recorded so far is committed.
//! - What is stored is the caller's choice: events carry no query strings, headers or bodies,
//!   and must never carry secrets (see [`AuditEvent`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::db::{BUSY_TIMEOUT, to_i64, to_u64};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params_from_iter};
use serde::{Deserialize, Serialize};

/// The database file in the data dir that holds the audit log (and other host tables).
pub const DB_FILE: &str = "callout.db";

/// How many events may wait for the writer before [`AuditLog::record`] drops them.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The most events the writer commits in one transaction.
const MAX_BATCH: usize = 513;

/// How long the writer waits after the first event of a batch before committing it: 10 ms.
/// Events reach the database at most this much later (plus the commit); in exchange a steady
/// stream of calls costs one commit per 10 ms instead of one per request (measured in
/// docs/performance.md).
const LINGER: Duration = Duration::from_millis(10);

/// At most one "events dropped" warning per this interval.
const DROP_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// What a query returns when [`AuditQuery::limit`] is 0.
const DEFAULT_LIMIT: usize = 100;

/// The name of this component's row in `schema_migrations`.
const COMPONENT: &str = "audit";

/// The schema, one step per version: step `i` takes the audit tables from version `i` to
/// `i + 1`. Append steps; never edit one that has shipped.
const MIGRATIONS: &[&str] = &["CREATE TABLE audit_events (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms           INTEGER NOT NULL,
        action          TEXT    NOT NULL,
        conversation_id TEXT,
        method          TEXT    NOT NULL,
        origin          TEXT    NOT NULL,
        path            TEXT    NOT NULL,
        decision        TEXT    NOT NULL,
        reason          TEXT,
        status          INTEGER,
        duration_us     INTEGER NOT NULL,
        bytes_out       INTEGER NOT NULL,
        bytes_in        INTEGER NOT NULL
    );
    CREATE INDEX audit_events_action_at ON audit_events (action, at_ms);
    CREATE INDEX audit_events_at ON audit_events (at_ms);"];

const INSERT: &str = "INSERT INTO audit_events (at_ms, action, conversation_id, method, origin, \
     path, decision, reason, status, duration_us, bytes_out, bytes_in) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

const SELECT: &str = "SELECT at_ms, action, conversation_id, method, origin, path, decision, \
     reason, status, duration_us, bytes_out, bytes_in FROM audit_events";

/// One outbound HTTP attempt of an action: allowed and sent, denied by policy, or recorded in
/// dry-run.
///
/// The caller builds it and must keep secrets out: `origin` and `path` come from the parsed URL
/// with the query string and fragment removed (they often carry tokens), no header or body is
/// stored, and `reason` is a fixed code, never an error message that may quote the URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When the attempt started, in milliseconds since the Unix epoch ([`now_ms`]).
    pub at_ms: u64,
    /// The action that made the request.
    pub action: String,
    /// The conversation the call belonged to, when the trigger named one.
    pub conversation_id: Option<String>,
    /// The HTTP method, upper case (`GET`).
    pub method: String,
    /// Scheme, host and port (`https://api.example.com:443`); empty when the URL did not parse.
    pub origin: String,
    /// The path, without query string or fragment.
    pub path: String,
    /// What the policy decided.
    pub decision: Decision,
    /// Why it was denied (`host-not-allowed`, `blocked-network`, ...) or how an allowed request
    /// failed (`timeout`, `connect`, ...); `None` for a request that got a response.
    pub reason: Option<String>,
    /// The response status, when a response arrived.
    pub status: Option<u16>,
    /// From the start of the attempt to its end (response read or failure), in microseconds.
    pub duration_us: u64,
    /// Request body bytes sent.
    pub bytes_out: u64,
    /// Response body bytes received.
    pub bytes_in: u64,
}

/// What the policy decided for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// The request was allowed (and sent, unless it failed on the way).
    Allowed,
    /// The policy refused it; nothing was sent.
    Denied,
    /// Allowed, but the call ran in dry-run: recorded, not sent.
    DryRun,
}

impl Decision {
    /// `allowed`, `denied` or `dry-run`, as stored and as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::DryRun => "dry-run",
        }
    }

    /// The decision named by [`Decision::as_str`], or `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allowed" => Some(Self::Allowed),
            "denied" => Some(Self::Denied),
            "dry-run" => Some(Self::DryRun),
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which events [`AuditLog::query`] returns. The default is the newest 100 of all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this action's events.
    pub action: Option<String>,
    /// Only events with this decision.
    pub decision: Option<Decision>,
    /// At most this many events; 0 means 100.
    pub limit: usize,
    /// Only events at or after this time (Unix milliseconds).
    pub since_ms: Option<u64>,
}

/// The audit database could not be opened, migrated or read.
#[derive(Debug, thiserror::Error)]
#[error("audit log {}: {message}", path.display())]
pub struct AuditError {
    /// The database file.
    pub path: PathBuf,
    /// What failed, why, and how to fix it.
    pub message: String,
}

impl AuditError {
    fn new(path: &Path, what: &str, cause: impl fmt::Display, fix: &str) -> Self {
        Self {
            path: path.to_path_buf(),
            message: format!("{what}: {cause}; {fix}"),
        }
    }
}

/// What travels to the writer thread.
enum Msg {
    Event(Box<AuditEvent>),
    /// Answered once every message sent before it is committed (or dropped).
    Flush(SyncSender<()>),
}

/// State shared by the handle and the writer thread.
struct Shared {
    dropped: AtomicU64,
    /// Transactions committed; lets tests check that bursts are grouped.
    commits: AtomicU64,
    /// When the last "dropped" warning was logged, in ms since `started`, plus one (0: never).
    last_drop_warn: AtomicU64,
    started: Instant,
}

/// The audit log of one process: a queue in front of a batching SQLite writer thread.
///
/// Share it (in an `Arc`) between everything that makes outbound requests. Dropping the last
/// handle commits what is queued and stops the writer; that waits for the writer, so drop it
/// where blocking briefly is fine (not inside a latency-sensitive async task).
pub struct AuditLog {
    path: PathBuf,
    tx: Option<SyncSender<Msg>>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the database at `db_path`, creating it (and its parent directory) when missing,
    /// brings the audit tables to the current schema, and starts the writer thread.
    ///
    /// The connection uses WAL (readers such as `callout audit` never block the writer),
    /// `synchronous=NORMAL` (no fsync per commit) and a 5 s busy timeout, so several processes
    /// may share one data dir. A new file gets mode 0600 and a new directory 0700: events name
    /// the hosts and paths actions reach. `capacity` bounds the queue in front of the writer
    /// (usually [`DEFAULT_CAPACITY`]; 0 is taken as 1).
    ///
    /// # Errors
    /// When the directory or the file cannot be created, the file is not a usable SQLite
    /// database, or its audit schema is newer than this build knows.
    pub fn open(db_path: &Path, capacity: usize) -> Result<Self, AuditError> {
        let problem = |p: crate::db::DbProblem| AuditError::new(db_path, &p.what, p.cause, p.fix);
        let mut conn = crate::db::open(db_path, "audit log").map_err(problem)?;
        crate::db::migrate(
            &mut conn,
            COMPONENT,
            "audit tables",
            MIGRATIONS,
            "check that the file is writable, or move it aside to start a new log",
        )
        .map_err(problem)?;
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let shared = Arc::new(Shared {
            dropped: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            last_drop_warn: AtomicU64::new(0),
            started: Instant::now(),
        });
        let writer = Writer {
            conn,
            rx,
            shared: Arc::clone(&shared),
            path: db_path.to_path_buf(),
        };
        let handle = std::thread::Builder::new()
            .name("callout-audit".into())
            .spawn(move || writer.run())
            .map_err(|e| {
                AuditError::new(
                    db_path,
                    "cannot start the writer thread",
                    e,
                    "check the process's thread limit",
                )
            })?;
        Ok(Self {
            path: db_path.to_path_buf(),
            tx: Some(tx),
            shared,
            writer: Some(handle),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `event` for the database and emits it through `tracing`; never blocks.
    ///
    /// When the queue is full (the writer is behind, or another process holds the database
    /// locked) the event is dropped and counted in [`AuditLog::dropped`], and a warning says so
    /// (at most once every 10 s). The `tracing` line is emitted either way.
    pub fn record(&self, event: AuditEvent) {
        trace_event(&event);
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Msg::Event(Box::new(event))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.count_dropped("the audit queue is full"),
            Err(TrySendError::Disconnected(_)) => {
                self.count_dropped("the audit writer has stopped");
            }
        }
    }

    /// Events recorded but never committed: dropped on a full queue, or lost to a database
    /// error.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Blocks until every event recorded before this call is committed (or counted as
    /// dropped).
    ///
    /// For a process about to exit, and for tests that read right after recording. It waits
    /// for room in the queue, so it may block while the database is locked (up to the busy
    /// timeout per batch).
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if tx.send(Msg::Flush(ack_tx)).is_ok() {
            // An error means the writer is gone; nothing more will be committed either way.
            let _ = ack_rx.recv();
        }
    }

    /// Reads events back, newest first, from the database at `db_path`.
    ///
    /// Opens its own read-only connection, so it works in a process that has no [`AuditLog`]
    /// (`callout audit`) while another process writes. A database without audit tables yet
    /// gives an empty list.
    ///
    /// # Errors
    /// When the file does not exist, cannot be opened, or holds rows this build cannot read.
    pub fn query(db_path: &Path, q: &AuditQuery) -> Result<Vec<AuditEvent>, AuditError> {
        let read_err = |e: rusqlite::Error| {
            AuditError::new(
                db_path,
                "cannot read",
                e,
                "check the file's permissions, or move a damaged file aside",
            )
        };
        if !db_path.exists() {
            return Err(AuditError::new(
                db_path,
                "cannot read",
                "the file does not exist",
                "record some events first, or pass the right --data-dir",
            ));
        }
        let conn = Connection::open_with_flags(
            db_path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(read_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(read_err)?;
        let exists: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master \
                 WHERE type = 'table' AND name = 'audit_events')",
                [],
                |r| r.get(0),
            )
            .map_err(read_err)?;
        if !exists {
            return Ok(Vec::new());
        }

        let mut sql = String::from(SELECT);
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut conds: Vec<&str> = Vec::new();
        if let Some(action) = &q.action {
            conds.push("action = ?");
            args.push(action.clone().into());
        }
        if let Some(decision) = q.decision {
            conds.push("decision = ?");
            args.push(decision.as_str().to_owned().into());
        }
        if let Some(since) = q.since_ms {
            conds.push("at_ms >= ?");
            args.push(to_i64(since).into());
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(" ORDER BY at_ms DESC, id DESC LIMIT ?");
        let limit = if q.limit == 0 { DEFAULT_LIMIT } else { q.limit };
        args.push(i64::try_from(limit).unwrap_or(i64::MAX).into());

        let mut stmt = conn.prepare(&sql).map_err(read_err)?;
        let rows = stmt
            .query_map(params_from_iter(args), row_to_event)
            .map_err(read_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
    }

    fn count_dropped(&self, why: &str) {
        let total = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Rate limit: one warning per interval, whichever thread gets there first.
        let now = u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let stamp = now.saturating_add(1);
        let last = self.shared.last_drop_warn.load(Ordering::Relaxed);
        let interval = u64::try_from(DROP_WARN_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || stamp.saturating_sub(last) >= interval;
        if due
            && self
                .shared
                .last_drop_warn
                .compare_exchange(last, stamp, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                target: "callout::audit",
                dropped_total = total,
                path = %self.path.display(),
                "{why}: audit events are being dropped (the tracing log still has them)"
            );
        }
    }
}

impl Drop for AuditLog {
    /// Commits what is queued and waits for the writer thread to finish.
    fn drop(&mut self) {
        // Closing the queue makes the writer commit what is left in it and return.
        drop(self.tx.take());
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!(target: "callout::audit", "the audit writer thread panicked");
        }
    }
}

/// Emits `event` as one structured `tracing` line.
fn trace_event(e: &AuditEvent) {
    tracing::info!(
        target: "callout::audit",
        at_ms = e.at_ms,
        action = %e.action,
        conversation_id = e.conversation_id.as_deref(),
        method = %e.method,
        origin = %e.origin,
        path = %e.path,
        decision = e.decision.as_str(),
        reason = e.reason.as_deref(),
        status = e.status,
        duration_us = e.duration_us,
        bytes_out = e.bytes_out,
        bytes_in = e.bytes_in,
        "outbound request"
    );
}

/// The writer thread: owns the connection, commits batches until the queue is closed.
struct Writer {
    conn: Connection,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    path: PathBuf,
}

impl Writer {
    fn run(mut self) {
        let mut batch: Vec<AuditEvent> = Vec::with_capacity(MAX_BATCH);
        let mut acks: Vec<SyncSender<()>> = Vec::new();
        loop {
            // Block for the first message, then take what is already queued, without waiting:
            // under load the queue fills while a batch commits, which groups the next commit.
            let first = match self.rx.recv() {
                Ok(m) => m,
                Err(RecvError) => return,
            };
            // Linger before committing an event: events recorded meanwhile join its batch
            // without waking this thread (nobody waits on the queue while it sleeps), so a
            // steady trickle costs one wake-up and one commit per LINGER, not one per event.
            // A flush is answered without lingering.
            if matches!(first, Msg::Event(_)) {
                std::thread::sleep(LINGER);
            }
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Event(e) => batch.push(*e),
                    Msg::Flush(ack) => acks.push(ack),
                }
                // A flush marker ends the batch, so it is answered as soon as possible.
                if batch.len() < MAX_BATCH && acks.is_empty() {
                    next = self.rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(&batch);
                batch.clear();
            }
            for ack in acks.drain(..) {
                // The flusher may have given up waiting; nothing to do then.
                let _ = ack.send(());
            }
        }
    }

    /// Inserts `batch` in one transaction; on failure logs and counts the events as dropped.
    fn commit(&mut self, batch: &[AuditEvent]) {
        match insert_batch(&mut self.conn, batch) {
            Ok(()) => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
                let total = self.shared.dropped.fetch_add(n, Ordering::Relaxed) + n;
                tracing::error!(
                    target: "callout::audit",
                    path = %self.path.display(),
                    lost = n,
                    dropped_total = total,
                    "cannot write audit events: {e}"
                );
            }
        }
    }
}

fn insert_batch(conn: &mut Connection, batch: &[AuditEvent]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(INSERT)?;
        for e in batch {
            stmt.execute(rusqlite::params![
                to_i64(e.at_ms),
                e.action,
                e.conversation_id,
                e.method,
                e.origin,
                e.path,
                e.decision.as_str(),
                e.reason,
                e.status,
                to_i64(e.duration_us),
                to_i64(e.bytes_out),
                to_i64(e.bytes_in),
            ])?;
        }
    }
    tx.commit()
}

fn row_to_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEvent> {
    let decision: String = r.get(6)?;
    let decision = Decision::parse(&decision).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            6,
            rusqlite::types::Type::Text,
            format!("unknown decision {decision:?}").into(),
        )
    })?;
    Ok(AuditEvent {
        at_ms: to_u64(r.get(0)?),
        action: r.get(1)?,
        conversation_id: r.get(2)?,
        method: r.get(3)?,
        origin: r.get(4)?,
        path: r.get(5)?,
        decision,
        reason: r.get(7)?,
        status: r.get(8)?,
        duration_us: to_u64(r.get(9)?),
        bytes_out: to_u64(r.get(10)?),
        bytes_in: to_u64(r.get(11)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, at_ms: u64, decision: Decision) -> AuditEvent {
        AuditEvent {
            at_ms,
            action: action.into(),
            conversation_id: Some("conv-1".into()),
            method: "GET".into(),
            origin: "https://api.example.com:443".into(),
            path: "/orders/1".into(),
            decision,
            reason: (decision == Decision::Denied).then(|| "host-not-allowed".into()),
            status: (decision == Decision::Allowed).then_some(200),
            duration_us: 1234,
            bytes_out: 10,
            bytes_in: 512,
        }
    }

    fn count(db: &Path) -> i64 {
        Connection::open(db)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM audit_events", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn records_are_committed_and_queried_newest_first_with_filters() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data").join(DB_FILE);
        let log = AuditLog::open(&db, DEFAULT_CAPACITY).unwrap();
        let a1 = event("order-status", 1_000, Decision::Allowed);
        let d2 = event("order-status", 2_000, Decision::Denied);
        let b3 = event("crm-lead", 3_000, Decision::DryRun);
        let mut a4 = event("order-status", 4_000, Decision::Allowed);
        a4.conversation_id = None;
        a4.status = None;
        a4.reason = Some("timeout".into());
        a4.bytes_in = u64::MAX; // saturates to i64::MAX, read back as such
        for e in [&a1, &d2, &b3, &a4] {
            log.record(e.clone());
        }
        log.flush();
        assert_eq!(log.dropped(), 0);

        let all = AuditLog::query(&db, &AuditQuery::default()).unwrap();
        let mut a4_read = a4.clone();
        a4_read.bytes_in = i64::MAX as u64;
        assert_eq!(
            all,
            vec![a4_read.clone(), b3.clone(), d2.clone(), a1.clone()]
        );

        let q = AuditQuery {
            action: Some("order-status".into()),
            ..AuditQuery::default()
        };
        assert_eq!(
            AuditLog::query(&db, &q).unwrap(),
            vec![a4_read.clone(), d2.clone(), a1.clone()]
        );
        let q = AuditQuery {
            decision: Some(Decision::Denied),
            ..AuditQuery::default()
        };
        assert_eq!(AuditLog::query(&db, &q).unwrap(), vec![d2.clone()]);
        let q = AuditQuery {
            action: Some("order-status".into()),
            decision: Some(Decision::Allowed),
            since_ms: Some(1_500),
            limit: 0,
        };
        assert_eq!(AuditLog::query(&db, &q).unwrap(), vec![a4_read.clone()]);
        let q = AuditQuery {
            limit: 2,
            ..AuditQuery::default()
        };
        assert_eq!(AuditLog::query(&db, &q).unwrap(), vec![a4_read, b3]);
        let q = AuditQuery {
            action: Some("nope".into()),
            ..AuditQuery::default()
        };
        assert!(AuditLog::query(&db, &q).unwrap().is_empty());
    }

    #[test]
    fn a_burst_is_committed_in_few_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        let log = AuditLog::open(&db, 16_384).unwrap();
        // Hold the write lock while recording, so the whole burst is queued before the writer
        // can commit anything; then the batches are full.
        let blocker = Connection::open(&db).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        for i in 0..10_000 {
            log.record(event("burst", i, Decision::Allowed));
        }
        blocker.execute_batch("COMMIT").unwrap();
        log.flush();
        assert_eq!(log.dropped(), 0);
        assert_eq!(count(&db), 10_000);
        let commits = log.shared.commits.load(Ordering::Relaxed);
        // 10 000 / 513 rounds up to 20, plus the batch the writer may have started first.
        assert!(commits <= 21, "{commits} commits for 10 000 events");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        let log = AuditLog::open(&db, 4).unwrap();
        // Another connection holds the write lock: the writer stalls in its busy wait.
        let blocker = Connection::open(&db).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let start = Instant::now();
        for i in 0..2_000 {
            log.record(event("flood", i, Decision::Denied));
        }
        let took = start.elapsed();
        blocker.execute_batch("COMMIT").unwrap();
        // The writer takes at most one batch before it blocks, and the queue holds 4.
        assert!(
            log.dropped() >= 2_000 - 4 - MAX_BATCH as u64,
            "{}",
            log.dropped()
        );
        assert!(
            took < Duration::from_secs(1),
            "record() blocked for {took:?}"
        );
        log.flush();
        let stored = u64::try_from(count(&db)).unwrap();
        assert_eq!(stored + log.dropped(), 2_000);
    }

    #[test]
    fn flush_waits_even_when_the_queue_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        let log = AuditLog::open(&db, 1).unwrap();
        for i in 0..100 {
            log.record(event("tiny", i, Decision::Allowed));
            if i % 10 == 0 {
                log.flush();
            }
        }
        log.flush();
        let stored = u64::try_from(count(&db)).unwrap();
        assert_eq!(stored + log.dropped(), 100);
        assert!(stored >= 10);
    }

    #[test]
    fn reopening_keeps_rows_and_migration_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        {
            let log = AuditLog::open(&db, DEFAULT_CAPACITY).unwrap();
            log.record(event("first", 1, Decision::Allowed));
            // No flush: dropping the log commits what is queued.
        }
        // Another component's table in the same file is left alone.
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE outbox (id INTEGER PRIMARY KEY)")
            .unwrap();
        {
            let log = AuditLog::open(&db, DEFAULT_CAPACITY).unwrap();
            log.record(event("second", 2, Decision::Allowed));
        }
        let got = AuditLog::query(&db, &AuditQuery::default()).unwrap();
        let actions: Vec<_> = got.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["second", "first"]);
        let conn = Connection::open(&db).unwrap();
        let version: i64 = conn
            .query_row(
                "SELECT version FROM schema_migrations WHERE component = 'audit'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let outbox: i64 = conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(outbox, 0);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_newer_schema_is_refused_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        drop(AuditLog::open(&db, DEFAULT_CAPACITY).unwrap());
        Connection::open(&db)
            .unwrap()
            .execute_batch("UPDATE schema_migrations SET version = 99 WHERE component = 'audit'")
            .unwrap();
        let err = AuditLog::open(&db, DEFAULT_CAPACITY).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&db.display().to_string()), "{msg}");
        assert!(msg.contains("newer callout"), "{msg}");
    }

    #[test]
    fn query_of_a_missing_db_or_one_without_audit_tables() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        let err = AuditLog::query(&db, &AuditQuery::default()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE outbox (id INTEGER PRIMARY KEY)")
            .unwrap();
        assert!(
            AuditLog::query(&db, &AuditQuery::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        std::fs::write(&db, vec![b'x'; 4096]).unwrap();
        let err = AuditLog::open(&db, DEFAULT_CAPACITY).unwrap_err();
        assert_eq!(err.path, db);
        assert!(err.message.contains("move it aside"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn db_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("new-data-dir");
        let db = data.join(DB_FILE);
        let log = AuditLog::open(&db, DEFAULT_CAPACITY).unwrap();
        log.record(event("x", 1, Decision::Allowed));
        log.flush();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&data), 0o700);
        // SQLite gives the WAL file the database file's permissions.
        assert_eq!(mode(&data.join(format!("{DB_FILE}-wal"))), 0o600);
    }

    #[test]
    fn decision_strings_round_trip() {
        for d in [Decision::Allowed, Decision::Denied, Decision::DryRun] {
            assert_eq!(Decision::parse(d.as_str()), Some(d));
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.as_str())
            );
        }
        assert_eq!(Decision::parse("maybe"), None);
    }
}
