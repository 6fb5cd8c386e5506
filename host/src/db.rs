//! The host's SQLite database, `<data-dir>/callout.db`: one file shared by several components
//! (the audit log, conversations, later the outbox), each with its own tables and its own schema
//! version in `schema_migrations`.
//!
//! Every connection is opened the same way: the directory is created with mode 0700 and the file
//! with 0600 before SQLite touches them (so the umask never decides), WAL journaling (readers
//! never block the writer), `synchronous=NORMAL` (a committed transaction survives a crash of
//! the process; see the outbox work for power-loss durability), and a busy timeout of
//! [`BUSY_TIMEOUT`].

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, TransactionBehavior};

/// How long a connection waits for another writer before giving up: 5 s.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the database could not be used: what failed, the cause, and the fix. Each component wraps
/// it in its own error type, naming the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbProblem {
    /// What failed, e.g. `cannot migrate the audit tables`.
    pub what: String,
    /// The underlying error.
    pub cause: String,
    /// What the operator can do.
    pub fix: &'static str,
}

impl DbProblem {
    fn new(what: impl Into<String>, cause: impl std::fmt::Display, fix: &'static str) -> Self {
        Self {
            what: what.into(),
            cause: cause.to_string(),
            fix,
        }
    }
}

const WRITABLE: &str = "check that the data dir (--data-dir, CALLOUT_DATA_DIR) is writable";

/// Opens a connection to `db_path` as described above; `label` (`audit log`, ...) names the
/// component in warnings.
///
/// # Errors
/// When the directory or the file cannot be created, or the file is not a usable database.
pub fn open(db_path: &Path, label: &str) -> Result<Connection, DbProblem> {
    if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)
            .map_err(|e| DbProblem::new("cannot create the directory", e, WRITABLE))?;
    }
    let mut o = std::fs::OpenOptions::new();
    // append: never truncates an existing database.
    o.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(db_path)
        .map(drop)
        .map_err(|e| DbProblem::new("cannot create the file", e, WRITABLE))?;
    let conn = Connection::open(db_path).map_err(|e| {
        DbProblem::new(
            "cannot open",
            e,
            "check the file's permissions, or move a damaged file aside",
        )
    })?;
    let err = |e: rusqlite::Error| {
        DbProblem::new(
            "cannot set up the connection",
            e,
            "check that the file is a SQLite database, or move it aside",
        )
    };
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some file systems (network mounts) cannot do WAL; everything still works, with
        // readers and the writer blocking each other.
        tracing::warn!(path = %db_path.display(), "the {label} database is in journal mode {mode}, not WAL");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    Ok(conn)
}

/// Brings `component`'s tables to `migrations.len()` (an append-only list of SQL batches), in one
/// immediate transaction so two processes opening a new database at once do not both migrate
/// it. Tables of other components are not touched. `label` names the tables in messages
/// (`audit tables`); `fix` is the advice when a step fails.
///
/// # Errors
/// A failing step, or a schema newer than this build knows.
pub fn migrate(
    conn: &mut Connection,
    component: &str,
    label: &str,
    migrations: &[&str],
    fix: &'static str,
) -> Result<(), DbProblem> {
    let err = |e: rusqlite::Error| DbProblem::new(format!("cannot migrate the {label}"), e, fix);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            component TEXT PRIMARY KEY,
            version   INTEGER NOT NULL
        )",
    )
    .map_err(err)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE((SELECT version FROM schema_migrations WHERE component = ?1), 0)",
            [component],
            |r| r.get(0),
        )
        .map_err(err)?;
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    if current > known {
        return Err(DbProblem::new(
            format!("cannot use the {label}"),
            format!("their schema version {current} is newer than this build's {known}"),
            "run a newer callout, or use another --data-dir",
        ));
    }
    if current == known {
        return Ok(());
    }
    for step in &migrations[usize::try_from(current).unwrap_or(0)..] {
        tx.execute_batch(step).map_err(err)?;
    }
    tx.execute(
        "INSERT INTO schema_migrations (component, version) VALUES (?1, ?2)
         ON CONFLICT (component) DO UPDATE SET version = excluded.version",
        rusqlite::params![component, known],
    )
    .map_err(err)?;
    tx.commit().map_err(err)
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A `u64` as SQLite's INTEGER (values past `i64::MAX` are stored as `i64::MAX`).
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An INTEGER read back as `u64` (negative values, which the host never writes, read as 0).
pub fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
