//! The publish gate: an action version is served (by `callout serve`, `callout mcp`, hot
//! reloads and the admin API) only once it has passed `check`'s lints and its own test cases.
//!
//! - A version is identified by its content hash ([`version`]): the manifest, `tests.toml`, the
//!   component's bytes, the deployment's config for it, and the host's version. Each verdict is
//!   recorded in the host's database (`publish_gate` table of `callout.db`) with that hash, so
//!   a version that passed once is not tested again at the next start.
//! - It passes when it has at least one test case, every case passes, and no lint is an error.
//!   Warnings are recorded and shown but do not block.
//! - A version that fails is not published: the loader keeps the previous version serving and
//!   records the reason as the action's load failure (`/healthz` says degraded, the admin API
//!   answers 422 with it).
//! - An operator may skip the gate (`--skip-publish-gate`, or `[server] publish_gate = "skip"`):
//!   every version published that way is logged as a warning and recorded as overridden.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::cases::{self, CaseResult};
use crate::lint::{self, Finding, Severity};
use crate::plugin::Plugin;

/// Whether the gate is enforced.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum GateMode {
    /// Only versions that passed are served (the default).
    #[default]
    Enforce,
    /// Every version that loads is served; each is logged and recorded as overridden.
    Skip,
}

/// The verdict on one version.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Verdict {
    /// The action.
    pub action: String,
    /// The version's content hash (hex SHA-256).
    pub version: String,
    /// Whether it may be served.
    pub passed: bool,
    /// Served although it did not pass (or was not tested), by the operator's override.
    pub overridden: bool,
    /// Cases that passed.
    pub cases_passed: usize,
    /// Cases that failed.
    pub cases_failed: usize,
    /// Why it did not pass, one sentence each (empty when it passed).
    pub reasons: Vec<String>,
    /// Lint warnings, as text.
    pub warnings: Vec<String>,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

impl Verdict {
    /// The reasons as one message, with the fix.
    pub fn message(&self) -> String {
        format!(
            "not published: version {} did not pass the publish gate: {}; run `callout test {}` and `callout check` to see each failure, fix them and save again (the previous version, if any, keeps serving)",
            short(&self.version),
            self.reasons.join("; "),
            self.action
        )
    }
}

/// The content hash of `plugin`'s current version: its manifest and `tests.toml` as on disk,
/// the component as it was loaded ([`Plugin::component_digest`], so the bytes judged are the
/// bytes served, and they are not read and hashed again), its effective config and the host's
/// version.
///
/// # Errors
/// When the manifest or `tests.toml` cannot be read.
pub fn version(plugin: &Plugin) -> std::io::Result<String> {
    let m = plugin.manifest();
    let mut h = Sha256::new();
    let mut part = |label: &str, bytes: &[u8]| {
        h.update(label.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part("callout", env!("CARGO_PKG_VERSION").as_bytes());
    part("manifest", &std::fs::read(&m.path)?);
    let tests = cases::tests_path(&m.path);
    match std::fs::read(&tests) {
        Ok(b) => part("tests", &b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => part("tests", b""),
        Err(e) => return Err(e),
    }
    part("component", plugin.component_digest());
    part(
        "config",
        toml::to_string(&m.config).unwrap_or_default().as_bytes(),
    );
    Ok(hex::encode(h.finalize()))
}

/// The first 12 hex digits of a version hash, as messages and pages show it.
pub fn short(version: &str) -> &str {
    &version[..12.min(version.len())]
}

/// What running the gate's checks found, before any verdict is recorded.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The cases' results (empty when the cases could not be read).
    pub results: Vec<CaseResult>,
    /// The lint findings.
    pub findings: Vec<Finding>,
    /// Why the cases could not be read, if they could not.
    pub cases_error: Option<String>,
    /// How many cases there are.
    pub cases: usize,
}

impl Evaluation {
    /// Why the version may not be published (empty: it may).
    pub fn reasons(&self) -> Vec<String> {
        let mut r = Vec::new();
        if let Some(e) = &self.cases_error {
            r.push(e.clone());
        } else if self.cases == 0 {
            r.push(
                "it has no test cases; add [[case]] tables (in action.toml or tests.toml) covering success, not-found or invalid input, and an upstream failure".into(),
            );
        }
        for res in self.results.iter().filter(|x| !x.passed()) {
            let first = &res.mismatches[0];
            r.push(format!(
                "case {:?} failed ({}: expected {}, got {})",
                res.case, first.field, first.expected, first.actual
            ));
        }
        for f in self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
        {
            r.push(format!("{} {}: {}", f.code, f.field, f.message));
        }
        r
    }
}

/// Runs `plugin`'s cases and lints, given the conversation variables known across the
/// deployment (see [`lint::known_variables`]).
pub async fn evaluate(plugin: &Plugin, known: &BTreeSet<String>) -> Evaluation {
    let (cases, cases_error) = match cases::load(plugin) {
        Ok(c) => (c, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let mut results = Vec::with_capacity(cases.len());
    for case in &cases {
        results.push(cases::run(plugin, case).await);
    }
    let findings = lint::lint(plugin, &cases, &results, known);
    Evaluation {
        results,
        findings,
        cases_error,
        cases: cases.len(),
    }
}

const MIGRATIONS: &[&str] = &["CREATE TABLE publish_gate (
        id           INTEGER PRIMARY KEY,
        action       TEXT NOT NULL,
        version      TEXT NOT NULL,
        passed       INTEGER NOT NULL,
        overridden   INTEGER NOT NULL,
        cases_passed INTEGER NOT NULL,
        cases_failed INTEGER NOT NULL,
        reasons      TEXT NOT NULL,
        warnings     TEXT NOT NULL,
        at_ms        INTEGER NOT NULL
    );
    CREATE INDEX publish_gate_by_action ON publish_gate (action, version, id);"];

/// The gate of a running host: its mode and its record of verdicts.
pub struct Gate {
    mode: GateMode,
    db: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("mode", &self.mode)
            .field("path", &self.path)
            .finish()
    }
}

impl Gate {
    /// Opens the record in `db` (the data dir's `callout.db`).
    ///
    /// # Errors
    /// When the database cannot be opened or migrated, naming the file and the fix.
    pub fn open(db: &Path, mode: GateMode) -> anyhow::Result<Self> {
        let problem = |p: crate::db::DbProblem| {
            anyhow::anyhow!("{}: {} ({}); {}", db.display(), p.what, p.cause, p.fix)
        };
        let mut conn = crate::db::open(db, "publish gate").map_err(problem)?;
        crate::db::migrate(
            &mut conn,
            "publish_gate",
            "publish gate records",
            MIGRATIONS,
            "use another --data-dir",
        )
        .map_err(problem)?;
        if mode == GateMode::Skip {
            tracing::warn!(
                "the publish gate is SKIPPED (--skip-publish-gate or server.publish_gate = \"skip\"): untested action versions will be served"
            );
        }
        Ok(Self {
            mode,
            db: Mutex::new(conn),
            path: db.to_path_buf(),
        })
    }

    /// The mode.
    pub fn mode(&self) -> GateMode {
        self.mode
    }

    /// Decides whether `plugin` may be served, running its cases and lints unless this version
    /// already passed, and records the verdict.
    pub async fn check(&self, plugin: &Plugin, known: &BTreeSet<String>) -> Verdict {
        let action = plugin.name().to_string();
        let version = match version(plugin) {
            Ok(v) => v,
            Err(e) => {
                return self.record(Verdict {
                    action,
                    version: String::new(),
                    passed: false,
                    overridden: false,
                    cases_passed: 0,
                    cases_failed: 0,
                    reasons: vec![format!("its files cannot be read to hash them: {e}")],
                    warnings: Vec::new(),
                    at_ms: crate::db::now_ms(),
                });
            }
        };
        if let Some(previous) = self.passed_before(&action, &version) {
            return previous;
        }
        let eval = evaluate(plugin, known).await;
        let reasons = eval.reasons();
        let passed = reasons.is_empty();
        let overridden = !passed && self.mode == GateMode::Skip;
        if overridden {
            tracing::warn!(
                action = %action,
                version = %short(&version),
                "publish gate SKIPPED by the operator; serving a version that did not pass: {}",
                reasons.join("; ")
            );
        }
        self.record(Verdict {
            action,
            version,
            passed,
            overridden,
            cases_passed: eval.results.iter().filter(|r| r.passed()).count(),
            cases_failed: eval.results.iter().filter(|r| !r.passed()).count(),
            reasons,
            warnings: eval
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Warning)
                .map(ToString::to_string)
                .collect(),
            at_ms: crate::db::now_ms(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn passed_before(&self, action: &str, version: &str) -> Option<Verdict> {
        let conn = self.lock();
        conn.query_row(
            "SELECT cases_passed, cases_failed, warnings, at_ms FROM publish_gate
             WHERE action = ?1 AND version = ?2 AND passed = 1 ORDER BY id DESC LIMIT 1",
            rusqlite::params![action, version],
            |r| {
                Ok(Verdict {
                    action: action.to_string(),
                    version: version.to_string(),
                    passed: true,
                    overridden: false,
                    cases_passed: crate::db::to_u64(r.get(0)?) as usize,
                    cases_failed: crate::db::to_u64(r.get(1)?) as usize,
                    reasons: Vec::new(),
                    warnings: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
                    at_ms: crate::db::to_u64(r.get(3)?),
                })
            },
        )
        .optional()
        .unwrap_or_else(|e| {
            tracing::warn!(
                "cannot read the publish gate records in {}: {e}",
                self.path.display()
            );
            None
        })
    }

    fn record(&self, v: Verdict) -> Verdict {
        let conn = self.lock();
        let r = conn.execute(
            "INSERT INTO publish_gate
               (action, version, passed, overridden, cases_passed, cases_failed, reasons, warnings, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                v.action,
                v.version,
                v.passed,
                v.overridden,
                v.cases_passed as i64,
                v.cases_failed as i64,
                serde_json::to_string(&v.reasons).unwrap_or_default(),
                serde_json::to_string(&v.warnings).unwrap_or_default(),
                crate::db::to_i64(v.at_ms),
            ],
        );
        if let Err(e) = r {
            tracing::warn!(
                "cannot record the publish gate verdict in {}: {e}",
                self.path.display()
            );
        }
        v
    }

    /// The verdicts recorded for `action`, newest first (at most `limit`).
    pub fn history(&self, action: &str, limit: usize) -> Vec<Verdict> {
        let conn = self.lock();
        let mut stmt = match conn.prepare(
            "SELECT version, passed, overridden, cases_passed, cases_failed, reasons, warnings, at_ms
             FROM publish_gate WHERE action = ?1 ORDER BY id DESC LIMIT ?2",
        ) {
            Ok(s) => s,
            Err(_) => return Vec::new(),
        };
        let rows = stmt.query_map(rusqlite::params![action, limit as i64], |r| {
            Ok(Verdict {
                action: action.to_string(),
                version: r.get(0)?,
                passed: r.get(1)?,
                overridden: r.get(2)?,
                cases_passed: crate::db::to_u64(r.get(3)?) as usize,
                cases_failed: crate::db::to_u64(r.get(4)?) as usize,
                reasons: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
                warnings: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                at_ms: crate::db::to_u64(r.get(7)?),
            })
        });
        match rows {
            Ok(rows) => rows.filter_map(Result::ok).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Whether `verdict` lets the version be served.
pub fn admits(verdict: &Verdict) -> bool {
    verdict.passed || verdict.overridden
}

/// The gate's failure as a load error of `plugin`'s manifest.
pub fn load_error(plugin: &Plugin, verdict: &Verdict) -> crate::error::LoadError {
    crate::error::LoadError::new(
        crate::error::LoadErrorKind::Gate,
        &plugin.manifest().path,
        verdict.message(),
    )
}
