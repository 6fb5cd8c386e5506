//! The conversation store: each conversation's transcript, variables and fired actions, in
//! SQLite.
//!
//! - Where: the host's shared database `<data dir>/callout.db` ([`crate::audit::DB_FILE`]),
//!   tables `conversations`, `messages` and `fired`, versioned as component `conversations` in
//!   `schema_migrations`. Other components' tables in the same file (the audit log's, say) are
//!   never touched. A new file gets mode 0600 (a new directory 0700): transcripts are private.
//! - Synchronous and short: every call is one small transaction on one connection behind a
//!   mutex. Call it directly for single calls, or from `spawn_blocking` on a busy async runtime
//!   (a write may wait up to the 5 s busy timeout while another process holds the database).
//! - Durability: WAL with `synchronous=NORMAL`, like the audit log: a committed write survives a
//!   crash or restart of the process; a power loss may lose the last commits.
//! - Rules: messages are numbered from 1 per conversation, in order of arrival
//!   ([`Conversation::last_seq`]); an action fires at most once per message
//!   ([`ConversationStore::mark_fired`]); an ended conversation takes no more messages or
//!   variables ([`StoreError::Ended`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::db::{now_ms, to_i64, to_u64};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::call::{Role, TranscriptLine};

/// The longest conversation id, in bytes (ids are ASCII).
pub const MAX_ID_LEN: usize = 128;

/// The prefix of ids made by [`ConversationStore::start`] (followed by 24 hex digits).
pub const RANDOM_ID_PREFIX: &str = "conv_";

/// The name of this component's row in `schema_migrations`.
const COMPONENT: &str = "conversations";

/// The schema, one step per version: step `i` takes the conversation tables from version `i` to
/// `i + 1`. Append steps; never edit one that has shipped.
const MIGRATIONS: &[&str] = &["CREATE TABLE conversations (
        id            TEXT    PRIMARY KEY NOT NULL,
        started_at_ms INTEGER NOT NULL,
        ended_at_ms   INTEGER,
        variables     TEXT    NOT NULL DEFAULT '{}'
    );
    CREATE TABLE messages (
        conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq             INTEGER NOT NULL,
        role            TEXT    NOT NULL,
        text            TEXT    NOT NULL,
        at_ms           INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE TABLE fired (
        conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq             INTEGER NOT NULL,
        action          TEXT    NOT NULL,
        at_ms           INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, seq, action)
    );"];

/// One conversation as stored: its state and its whole transcript.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    /// The conversation id.
    pub id: String,
    /// When [`ConversationStore::start`] created it, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When [`ConversationStore::end`] ended it; `None` while it is open.
    pub ended_at_ms: Option<u64>,
    /// Its variables, as merged by [`ConversationStore::merge_variables`].
    pub variables: Map<String, Value>,
    /// The transcript, oldest first.
    pub messages: Vec<TranscriptLine>,
    /// The number of the last message (messages are numbered from 1); 0 when there is none.
    pub last_seq: u64,
}

impl Conversation {
    /// Whether [`ConversationStore::end`] has ended it.
    pub fn is_ended(&self) -> bool {
        self.ended_at_ms.is_some()
    }
}

/// Why a conversation store call failed. Every message names the conversation or the database
/// file, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The id is not 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
    #[error(
        "invalid conversation id {id:?}: {reason}; use 1 to {MAX_ID_LEN} characters of \
         A-Z a-z 0-9 . _ : -"
    )]
    InvalidId {
        /// The id as given (cut to its first 64 characters).
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No conversation has this id.
    #[error("conversation {0:?} not found; start it first")]
    NotFound(String),
    /// The conversation has ended and takes no more messages or variables.
    #[error(
        "conversation {0:?} has ended and takes no more messages or variables; start a new \
         conversation"
    )]
    Ended(String),
    /// The database could not be opened, migrated, read or written.
    #[error("conversation store {}: {message}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// What failed, why, and how to fix it.
        message: String,
    },
    /// The operating system's random source failed while making a conversation id.
    #[error("cannot make a conversation id: {0}; pass an id, or check the OS random source")]
    Random(String),
}

/// The conversations of one data dir, in its SQLite database.
///
/// Share it (in an `Arc`) between everything that handles conversations. Several processes may
/// open the same file: each call is one transaction, and writers wait for each other (up to 5 s).
pub struct ConversationStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for ConversationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConversationStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ConversationStore {
    /// Opens the database at `db_path`, creating it (and its parent directory) when missing, and
    /// brings the conversation tables to the current schema.
    ///
    /// The connection uses WAL, `synchronous=NORMAL` and a 5 s busy timeout. A new file gets
    /// mode 0600 and a new directory 0700.
    ///
    /// # Errors
    /// [`StoreError::Db`] when the directory or the file cannot be created, the file is not a
    /// usable SQLite database, or its conversation schema is newer than this build knows.
    pub fn open(db_path: &Path) -> Result<Self, StoreError> {
        let problem = |p: crate::db::DbProblem| db_err(db_path, &p.what, p.cause, p.fix);
        let mut conn = crate::db::open(db_path, "conversations").map_err(problem)?;
        // Per connection: holds this store to its own REFERENCES; other components'
        // connections are unaffected.
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| {
                db_err(
                    db_path,
                    "cannot set up the connection",
                    e,
                    "move a damaged file aside",
                )
            })?;
        crate::db::migrate(
            &mut conn,
            COMPONENT,
            "conversation tables",
            MIGRATIONS,
            "check that the file is writable, or move it aside to start over",
        )
        .map_err(problem)?;
        Ok(Self {
            path: db_path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the conversation unless it exists, and returns its id: `id` when given, else a
    /// new random one (`conv_` and 24 hex digits).
    ///
    /// Starting an existing conversation changes nothing (not even an ended one: it stays
    /// ended), so a platform may call this before every message.
    ///
    /// # Errors
    /// [`StoreError::InvalidId`], [`StoreError::Random`] or [`StoreError::Db`].
    pub fn start(&self, id: Option<&str>) -> Result<String, StoreError> {
        if let Some(id) = id {
            check_id(id)?;
        }
        let conn = self.lock();
        let insert = |id: &str| {
            conn.execute(
                "INSERT INTO conversations (id, started_at_ms, variables) VALUES (?1, ?2, '{}')
                 ON CONFLICT (id) DO NOTHING",
                rusqlite::params![id, to_i64(now_ms())],
            )
            .map_err(|e| self.err(&format!("cannot start conversation {id:?}"), e))
        };
        if let Some(id) = id {
            insert(id)?;
            return Ok(id.to_owned());
        }
        // A random id that exists already (odds about 2^-96 per stored conversation) is drawn
        // again, never reused.
        for _ in 0..3 {
            let id = random_id()?;
            if insert(&id)? == 1 {
                return Ok(id);
            }
        }
        Err(StoreError::Random(
            "three random ids in a row were taken".into(),
        ))
    }

    /// The conversation with its whole transcript, or `None` when it does not exist.
    ///
    /// # Errors
    /// [`StoreError::InvalidId`] or [`StoreError::Db`] (also when stored rows are unreadable).
    pub fn get(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        check_id(id)?;
        let mut conn = self.lock();
        let what = format!("cannot read conversation {id:?}");
        let err = |e| self.err(&what, e);
        // One read transaction: the row and the transcript come from the same snapshot.
        let tx = conn.transaction().map_err(err)?;
        let Some(row) = read_row(&tx, id).map_err(err)? else {
            return Ok(None);
        };
        let variables = parse_variables(&row.variables).map_err(|e| self.corrupt(&what, e))?;
        let mut messages = Vec::new();
        let mut last_seq = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, role, text, at_ms FROM messages
                     WHERE conversation_id = ?1 ORDER BY seq",
                )
                .map_err(err)?;
            let mut rows = stmt.query([id]).map_err(err)?;
            while let Some(r) = rows.next().map_err(err)? {
                let seq: i64 = r.get(0).map_err(err)?;
                let role: String = r.get(1).map_err(err)?;
                let role = parse_role(&role)
                    .ok_or_else(|| self.corrupt(&what, format!("unknown role {role:?}")))?;
                messages.push(TranscriptLine {
                    role,
                    text: r.get(2).map_err(err)?,
                    at_ms: to_u64(r.get(3).map_err(err)?),
                });
                last_seq = to_u64(seq);
            }
        }
        tx.commit().map_err(err)?;
        Ok(Some(Conversation {
            id: id.to_owned(),
            started_at_ms: to_u64(row.started_at_ms),
            ended_at_ms: row.ended_at_ms.map(to_u64),
            variables,
            messages,
            last_seq,
        }))
    }

    /// Appends a message said by `role` now, and returns its number (the new
    /// [`Conversation::last_seq`]; the first message is 1).
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Ended`], [`StoreError::InvalidId`] or
    /// [`StoreError::Db`].
    pub fn append(&self, id: &str, role: Role, text: &str) -> Result<u64, StoreError> {
        check_id(id)?;
        let mut conn = self.lock();
        let what = format!("cannot append to conversation {id:?}");
        let err = |e| self.err(&what, e);
        let tx = write_tx(&mut conn).map_err(err)?;
        open_row(&tx, id).map_err(err)??;
        let seq: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation_id = ?1",
                [id],
                |r| r.get(0),
            )
            .map_err(err)?;
        tx.execute(
            "INSERT INTO messages (conversation_id, seq, role, text, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id, seq, role_str(role), text, to_i64(now_ms())],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(to_u64(seq))
    }

    /// Merges `vars` into the conversation's variables (a key in `vars` replaces the stored
    /// value whole, nested objects included; other keys stay) and returns the merged map.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Ended`], [`StoreError::InvalidId`] or
    /// [`StoreError::Db`] (also when the stored variables are unreadable).
    pub fn merge_variables(
        &self,
        id: &str,
        vars: &Map<String, Value>,
    ) -> Result<Map<String, Value>, StoreError> {
        check_id(id)?;
        let mut conn = self.lock();
        let what = format!("cannot merge variables into conversation {id:?}");
        let err = |e| self.err(&what, e);
        let tx = write_tx(&mut conn).map_err(err)?;
        let row = open_row(&tx, id).map_err(err)??;
        let mut merged = parse_variables(&row.variables).map_err(|e| self.corrupt(&what, e))?;
        if vars.is_empty() {
            return Ok(merged);
        }
        for (k, v) in vars {
            merged.insert(k.clone(), v.clone());
        }
        let json = serde_json::to_string(&merged).map_err(|e| self.corrupt(&what, e))?;
        tx.execute(
            "UPDATE conversations SET variables = ?2 WHERE id = ?1",
            rusqlite::params![id, json],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(merged)
    }

    /// Records that `action` fired for message number `message_seq` of the conversation, and
    /// returns `true`; returns `false` when that was already recorded, so an action fires at
    /// most once per message.
    ///
    /// Record before firing (the record commits first): a crash in between then skips the
    /// firing rather than repeating it. Works on an ended conversation too; `message_seq` is not
    /// checked against the transcript.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::InvalidId`] or [`StoreError::Db`].
    pub fn mark_fired(&self, id: &str, message_seq: u64, action: &str) -> Result<bool, StoreError> {
        check_id(id)?;
        let mut conn = self.lock();
        let what = format!("cannot record that {action:?} fired in conversation {id:?}");
        let err = |e| self.err(&what, e);
        let tx = write_tx(&mut conn).map_err(err)?;
        if read_row(&tx, id).map_err(err)?.is_none() {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        let inserted = tx
            .execute(
                "INSERT INTO fired (conversation_id, seq, action, at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (conversation_id, seq, action) DO NOTHING",
                rusqlite::params![id, to_i64(message_seq), action, to_i64(now_ms())],
            )
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(inserted == 1)
    }

    /// Ends the conversation and returns `true`, or returns `false` when it had already ended
    /// (so exactly one of several concurrent callers sees `true`: the one to run chat-end).
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::InvalidId`] or [`StoreError::Db`].
    pub fn end(&self, id: &str) -> Result<bool, StoreError> {
        check_id(id)?;
        let mut conn = self.lock();
        let what = format!("cannot end conversation {id:?}");
        let err = |e| self.err(&what, e);
        let tx = write_tx(&mut conn).map_err(err)?;
        let Some(row) = read_row(&tx, id).map_err(err)? else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        if row.ended_at_ms.is_some() {
            return Ok(false);
        }
        tx.execute(
            "UPDATE conversations SET ended_at_ms = ?2 WHERE id = ?1",
            rusqlite::params![id, to_i64(now_ms())],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(true)
    }

    /// The connection; a panic in another call cannot leave it mid-transaction (an open
    /// transaction rolls back when dropped), so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn err(&self, what: &str, e: rusqlite::Error) -> StoreError {
        let fix = match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                "another process held the database for too long; try again"
            }
            Some(ErrorCode::DiskFull) => "free some disk space",
            Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
                "check that the data dir and the file are writable"
            }
            _ => "check that the file is a healthy SQLite database, or move it aside",
        };
        db_err(&self.path, what, e, fix)
    }

    fn corrupt(&self, what: &str, cause: impl fmt::Display) -> StoreError {
        db_err(
            &self.path,
            what,
            format!("stored data is unreadable ({cause})"),
            "the file was changed outside callout; restore it, or move it aside",
        )
    }
}

/// The columns of one `conversations` row.
struct Row {
    started_at_ms: i64,
    ended_at_ms: Option<i64>,
    variables: String,
}

fn read_row(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<Row>> {
    tx.query_row(
        "SELECT started_at_ms, ended_at_ms, variables FROM conversations WHERE id = ?1",
        [id],
        |r| {
            Ok(Row {
                started_at_ms: r.get(0)?,
                ended_at_ms: r.get(1)?,
                variables: r.get(2)?,
            })
        },
    )
    .optional()
}

/// The row of a conversation that exists and has not ended; the inner error says which of the
/// two it is not.
fn open_row(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Result<Row, StoreError>> {
    Ok(match read_row(tx, id)? {
        None => Err(StoreError::NotFound(id.to_owned())),
        Some(row) if row.ended_at_ms.is_some() => Err(StoreError::Ended(id.to_owned())),
        Some(row) => Ok(row),
    })
}

/// A write transaction that takes the write lock at once, so its reads (the next `seq`, the
/// variables to merge) cannot be changed by another process before it writes.
fn write_tx(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

fn parse_variables(json: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("variables are not a JSON object".into()),
        Err(e) => Err(format!("variables are not JSON: {e}")),
    }
}

/// Checks a conversation id: 1 to [`MAX_ID_LEN`] characters of `A-Z a-z 0-9 . _ : -`.
///
/// # Errors
/// [`StoreError::InvalidId`], saying what is wrong.
pub fn check_id(id: &str) -> Result<(), StoreError> {
    let invalid = |reason: String| StoreError::InvalidId {
        id: id.chars().take(64).collect(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid(format!("it is {} bytes long", id.len())));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(invalid(format!("it contains {c:?}")));
    }
    Ok(())
}

/// `conv_` and 24 hex digits (96 bits from the OS).
fn random_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
    let mut id = String::with_capacity(RANDOM_ID_PREFIX.len() + 24);
    id.push_str(RANDOM_ID_PREFIX);
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    Ok(id)
}

/// The role as stored: its serde name.
fn role_str(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Agent => "agent",
        Role::System => "system",
    }
}

fn parse_role(s: &str) -> Option<Role> {
    match s {
        "user" => Some(Role::User),
        "agent" => Some(Role::Agent),
        "system" => Some(Role::System),
        _ => None,
    }
}

fn db_err(path: &Path, what: &str, cause: impl fmt::Display, fix: &str) -> StoreError {
    StoreError::Db {
        path: path.to_path_buf(),
        message: format!("{what}: {cause}; {fix}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn store() -> (tempfile::TempDir, PathBuf, ConversationStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("callout.db");
        let store = ConversationStore::open(&db).unwrap();
        (dir, db, store)
    }

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn texts(c: &Conversation) -> Vec<(Role, &str)> {
        c.messages
            .iter()
            .map(|m| (m.role, m.text.as_str()))
            .collect()
    }

    #[test]
    fn start_and_get_round_trip() {
        let (_dir, _db, store) = store();
        let before = now_ms();
        assert_eq!(store.start(Some("chat-1")).unwrap(), "chat-1");
        let c = store.get("chat-1").unwrap().unwrap();
        assert_eq!(c.id, "chat-1");
        assert!(c.started_at_ms >= before && c.started_at_ms <= now_ms());
        assert_eq!(c.ended_at_ms, None);
        assert!(!c.is_ended());
        assert!(c.variables.is_empty());
        assert!(c.messages.is_empty());
        assert_eq!(c.last_seq, 0);

        // Starting it again changes nothing.
        store.append("chat-1", Role::User, "hi").unwrap();
        assert_eq!(store.start(Some("chat-1")).unwrap(), "chat-1");
        let again = store.get("chat-1").unwrap().unwrap();
        assert_eq!(again.started_at_ms, c.started_at_ms);
        assert_eq!(again.last_seq, 1);

        // Random ids: conv_ and 24 hex digits, a new one each time.
        let a = store.start(None).unwrap();
        let b = store.start(None).unwrap();
        assert_ne!(a, b);
        for id in [&a, &b] {
            let hex = id.strip_prefix(RANDOM_ID_PREFIX).unwrap();
            assert_eq!(hex.len(), 24, "{id}");
            assert!(
                hex.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
            check_id(id).unwrap();
            assert!(store.get(id).unwrap().is_some());
        }

        assert!(store.get("nobody").unwrap().is_none());
    }

    #[test]
    fn append_keeps_order_and_numbers_messages_per_conversation() {
        let (_dir, _db, store) = store();
        store.start(Some("a")).unwrap();
        store.start(Some("b")).unwrap();
        assert_eq!(
            store.append("a", Role::User, "where is my order?").unwrap(),
            1
        );
        assert_eq!(store.append("a", Role::Agent, "which one?").unwrap(), 2);
        assert_eq!(store.append("b", Role::System, "other chat").unwrap(), 1);
        assert_eq!(store.append("a", Role::User, "123456").unwrap(), 3);
        assert_eq!(store.append("a", Role::User, "").unwrap(), 4);

        let a = store.get("a").unwrap().unwrap();
        assert_eq!(
            texts(&a),
            [
                (Role::User, "where is my order?"),
                (Role::Agent, "which one?"),
                (Role::User, "123456"),
                (Role::User, ""),
            ]
        );
        assert_eq!(a.last_seq, 4);
        assert!(a.messages.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        let b = store.get("b").unwrap().unwrap();
        assert_eq!(texts(&b), [(Role::System, "other chat")]);
        assert_eq!(b.last_seq, 1);

        let err = store.append("missing", Role::User, "x").unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound(id) if id == "missing"),
            "{err}"
        );
        assert!(err.to_string().contains("start it first"), "{err}");
    }

    #[test]
    fn merge_replaces_top_level_keys() {
        let (_dir, _db, store) = store();
        store.start(Some("c")).unwrap();
        let first = store
            .merge_variables(
                "c",
                &vars(json!({"name": "Ada", "order": {"id": 1, "eta": "mon"}})),
            )
            .unwrap();
        assert_eq!(
            Value::Object(first),
            json!({"name": "Ada", "order": {"id": 1, "eta": "mon"}})
        );
        let merged = store
            .merge_variables("c", &vars(json!({"order": {"id": 2}, "step": null})))
            .unwrap();
        let want = json!({"name": "Ada", "order": {"id": 2}, "step": null});
        assert_eq!(Value::Object(merged), want);
        assert_eq!(
            Value::Object(store.get("c").unwrap().unwrap().variables),
            want
        );
        // Nothing to merge: the current variables.
        assert_eq!(
            Value::Object(store.merge_variables("c", &Map::new()).unwrap()),
            want
        );

        let err = store.merge_variables("missing", &Map::new()).unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    }

    #[test]
    fn an_action_fires_at_most_once_per_message() {
        let (_dir, _db, store) = store();
        store.start(Some("f")).unwrap();
        let seq = store.append("f", Role::User, "order 123456").unwrap();
        assert!(store.mark_fired("f", seq, "order-status").unwrap());
        assert!(!store.mark_fired("f", seq, "order-status").unwrap());
        // Another action on the same message, the same action on the next message.
        assert!(store.mark_fired("f", seq, "lead-capture").unwrap());
        let next = store.append("f", Role::User, "and 654321").unwrap();
        assert!(store.mark_fired("f", next, "order-status").unwrap());
        // Per conversation.
        store.start(Some("g")).unwrap();
        assert!(store.mark_fired("g", seq, "order-status").unwrap());
        // An ended conversation still records (and refuses repeats).
        store.end("f").unwrap();
        assert!(!store.mark_fired("f", next, "order-status").unwrap());
        assert!(store.mark_fired("f", next, "late").unwrap());

        let err = store.mark_fired("missing", 1, "x").unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    }

    #[test]
    fn end_is_idempotent_and_blocks_further_writes() {
        let (_dir, _db, store) = store();
        store.start(Some("e")).unwrap();
        store.append("e", Role::User, "bye").unwrap();
        store.merge_variables("e", &vars(json!({"k": 1}))).unwrap();
        let before = now_ms();
        assert!(store.end("e").unwrap());
        assert!(!store.end("e").unwrap());
        let c = store.get("e").unwrap().unwrap();
        let ended = c.ended_at_ms.unwrap();
        assert!(ended >= before && ended <= now_ms());

        let err = store.append("e", Role::User, "one more").unwrap_err();
        assert!(matches!(&err, StoreError::Ended(id) if id == "e"), "{err}");
        assert!(err.to_string().contains("\"e\" has ended"), "{err}");
        assert!(
            err.to_string().contains("start a new conversation"),
            "{err}"
        );
        let err = store
            .merge_variables("e", &vars(json!({"k": 2})))
            .unwrap_err();
        assert!(matches!(err, StoreError::Ended(_)), "{err}");
        // Starting it again does not reopen it.
        assert_eq!(store.start(Some("e")).unwrap(), "e");
        assert!(matches!(
            store.append("e", Role::User, "x"),
            Err(StoreError::Ended(_))
        ));

        // Nothing changed.
        let after = store.get("e").unwrap().unwrap();
        assert_eq!(texts(&after), [(Role::User, "bye")]);
        assert_eq!(Value::Object(after.variables), json!({"k": 1}));
        assert_eq!(after.ended_at_ms, Some(ended));

        assert!(matches!(store.end("missing"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn concurrent_end_is_won_by_exactly_one_caller() {
        let (_dir, db, store) = store();
        store.start(Some("race")).unwrap();
        let store = Arc::new(store);
        // Half the callers share the store, half open their own connection (another process).
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&store);
                let db = db.clone();
                std::thread::spawn(move || {
                    if i % 2 == 0 {
                        store.end("race").unwrap()
                    } else {
                        ConversationStore::open(&db).unwrap().end("race").unwrap()
                    }
                })
            })
            .collect();
        let won = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&w| w)
            .count();
        assert_eq!(won, 1);
    }

    #[test]
    fn concurrent_appends_get_distinct_consecutive_numbers() {
        let (_dir, db, store) = store();
        store.start(Some("busy")).unwrap();
        let store = Arc::new(store);
        let other = Arc::new(ConversationStore::open(&db).unwrap());
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let s = Arc::clone(if t % 2 == 0 { &store } else { &other });
                std::thread::spawn(move || {
                    (0..20)
                        .map(|i| s.append("busy", Role::User, &format!("{t}-{i}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=120).collect::<Vec<_>>());
        let c = store.get("busy").unwrap().unwrap();
        assert_eq!(c.messages.len(), 120);
        assert_eq!(c.last_seq, 120);
    }

    #[test]
    fn reopening_keeps_everything() {
        let (_dir, db, store) = store();
        store.start(Some("keep")).unwrap();
        store.append("keep", Role::User, "first").unwrap();
        let seq = store.append("keep", Role::Agent, "second").unwrap();
        store
            .merge_variables("keep", &vars(json!({"a": [1, 2]})))
            .unwrap();
        store.mark_fired("keep", seq, "act").unwrap();
        store.start(Some("closed")).unwrap();
        store.end("closed").unwrap();
        let before = serde_json::to_value(store.get("keep").unwrap().unwrap()).unwrap();
        drop(store);

        let store = ConversationStore::open(&db).unwrap();
        let after = store.get("keep").unwrap().unwrap();
        assert_eq!(serde_json::to_value(&after).unwrap(), before);
        assert_eq!(
            texts(&after),
            [(Role::User, "first"), (Role::Agent, "second")]
        );
        assert!(!store.mark_fired("keep", seq, "act").unwrap());
        assert!(store.get("closed").unwrap().unwrap().is_ended());
        assert!(!store.end("closed").unwrap());
        assert_eq!(store.append("keep", Role::User, "third").unwrap(), 3);

        let conn = Connection::open(&db).unwrap();
        let version: i64 = conn
            .query_row(
                "SELECT version FROM schema_migrations WHERE component = 'conversations'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn invalid_ids_are_refused_with_a_fix() {
        let (_dir, _db, store) = store();
        let long = "x".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            "a b",
            "a/b",
            "naïve",
            "x;DROP TABLE",
            "tab\t",
            long.as_str(),
        ] {
            let errs = [
                store.start(Some(bad)).unwrap_err(),
                store.get(bad).unwrap_err(),
                store.append(bad, Role::User, "x").unwrap_err(),
                store.merge_variables(bad, &Map::new()).unwrap_err(),
                store.mark_fired(bad, 1, "x").unwrap_err(),
                store.end(bad).unwrap_err(),
            ];
            for err in errs {
                assert!(
                    matches!(err, StoreError::InvalidId { .. }),
                    "{bad:?}: {err}"
                );
                let msg = err.to_string();
                assert!(msg.contains("invalid conversation id"), "{msg}");
                assert!(msg.contains("use 1 to 128 characters"), "{msg}");
            }
        }
        let err = store.start(Some(&long)).unwrap_err();
        assert!(err.to_string().contains("129 bytes long"), "{err}");
        assert!(err.to_string().len() < 300, "{err}");
        let err = store.start(Some("a/b")).unwrap_err();
        assert!(err.to_string().contains("contains '/'"), "{err}");

        let longest = "y".repeat(MAX_ID_LEN);
        for good in ["A.b_c:d-9", "1", longest.as_str()] {
            assert_eq!(store.start(Some(good)).unwrap(), good);
            assert!(store.get(good).unwrap().is_some());
        }
    }

    #[test]
    fn shares_the_file_with_the_audit_tables() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("callout.db");
        // The audit log was here first.
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (
                     component TEXT PRIMARY KEY, version INTEGER NOT NULL);
                 INSERT INTO schema_migrations VALUES ('audit', 1);
                 CREATE TABLE audit_events (
                     id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL,
                     action TEXT NOT NULL);
                 INSERT INTO audit_events (at_ms, action) VALUES (1, 'order-status');",
            )
            .unwrap();
        }
        let store = ConversationStore::open(&db).unwrap();
        store.start(Some("s")).unwrap();
        store.append("s", Role::User, "hello").unwrap();
        drop(store);
        let store = ConversationStore::open(&db).unwrap();
        assert_eq!(store.get("s").unwrap().unwrap().last_seq, 1);

        let conn = Connection::open(&db).unwrap();
        let rows: Vec<(String, i64)> = conn
            .prepare("SELECT component, version FROM schema_migrations ORDER BY component")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("audit".to_owned(), 1),
                ("conversations".to_owned(), MIGRATIONS.len() as i64)
            ]
        );
        let action: String = conn
            .query_row("SELECT action FROM audit_events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(action, "order-status");
    }

    #[test]
    fn the_audit_log_opens_next_to_it_in_either_order() {
        use crate::audit::{AuditLog, AuditQuery, DB_FILE, DEFAULT_CAPACITY};
        let dir = tempfile::tempdir().unwrap();
        // Conversations first, then the audit log.
        let db = dir.path().join("one").join(DB_FILE);
        let store = ConversationStore::open(&db).unwrap();
        store.start(Some("x")).unwrap();
        let log = AuditLog::open(&db, DEFAULT_CAPACITY).unwrap();
        log.flush();
        assert!(
            AuditLog::query(&db, &AuditQuery::default())
                .unwrap()
                .is_empty()
        );
        store.append("x", Role::User, "still works").unwrap();
        drop(log);
        drop(store);
        // The audit log first.
        let db = dir.path().join("two").join(DB_FILE);
        drop(AuditLog::open(&db, DEFAULT_CAPACITY).unwrap());
        let store = ConversationStore::open(&db).unwrap();
        store.start(Some("y")).unwrap();
        drop(AuditLog::open(&db, DEFAULT_CAPACITY).unwrap());
        assert_eq!(store.append("y", Role::User, "ok").unwrap(), 1);
    }

    #[test]
    fn a_newer_schema_is_refused_with_a_fix() {
        let (_dir, db, store) = store();
        drop(store);
        Connection::open(&db)
            .unwrap()
            .execute_batch(
                "UPDATE schema_migrations SET version = 99 WHERE component = 'conversations'",
            )
            .unwrap();
        let err = ConversationStore::open(&db).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&db.display().to_string()), "{msg}");
        assert!(msg.contains("newer callout"), "{msg}");
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("callout.db");
        std::fs::write(&db, vec![b'x'; 4096]).unwrap();
        let err = ConversationStore::open(&db).unwrap_err();
        let StoreError::Db { path, message } = &err else {
            panic!("{err}");
        };
        assert_eq!(path, &db);
        assert!(message.contains("move it aside"), "{err}");
    }

    #[test]
    fn unreadable_stored_variables_are_an_error_naming_the_conversation() {
        let (_dir, db, store) = store();
        store.start(Some("bad")).unwrap();
        Connection::open(&db)
            .unwrap()
            .execute_batch("UPDATE conversations SET variables = '[1]' WHERE id = 'bad'")
            .unwrap();
        let err = store.get("bad").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Db { .. }), "{msg}");
        assert!(msg.contains("conversation \"bad\""), "{msg}");
        assert!(msg.contains("not a JSON object"), "{msg}");
    }

    #[cfg(unix)]
    #[test]
    fn db_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("new-data-dir");
        let db = data.join("callout.db");
        let store = ConversationStore::open(&db).unwrap();
        store.start(Some("p")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&data), 0o700);
    }

    #[test]
    fn stored_roles_are_the_serde_names() {
        for role in [Role::User, Role::Agent, Role::System] {
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                Value::String(role_str(role).into())
            );
            assert_eq!(parse_role(role_str(role)), Some(role));
        }
        assert_eq!(parse_role("bot"), None);
    }
}
