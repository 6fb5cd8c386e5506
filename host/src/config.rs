//! `callout.toml`: settings of one deployment of the host.
//!
//! Everything here is optional; a missing file means the documented defaults. The file is read
//! from `--config <path>`, or from `./callout.toml` when that exists. Unknown keys are errors, so a
//! typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;

/// The whole of `callout.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Loopback `host:port` pairs that actions may reach, for local development, the demo and
    /// tests (same as the global `--dev-loopback` flag; the two lists are joined). Default: none,
    /// and loopback and private addresses are refused.
    pub dev_loopback: Vec<String>,
    /// Limits of the engine's pooling allocator, shared by every action in the process.
    pub pool: PoolLimits,
    /// Host-wide outbound HTTP settings.
    pub http: HttpSettings,
    /// Per-deployment overrides of each action, by action name: `[actions.<name>.config]`.
    pub actions: BTreeMap<String, ActionOverrides>,
    /// The secrets file (`file:KEY` secrets): a TOML table of string values, readable by its
    /// owner only. Default: `<data-dir>/secrets.toml`, used when it exists.
    pub secrets_file: Option<PathBuf>,
    /// `callout serve` and `callout mcp`: listen address, API keys, reload and shutdown.
    pub server: ServerSettings,
    /// The durable outbox of chat-end deliveries.
    pub outbox: OutboxSettings,
}

/// `[outbox]`: how chat-end deliveries are stored and retried.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSettings {
    /// `normal`: an accepted delivery survives a crash (SIGKILL) of the host (SQLite WAL with
    /// synchronous=NORMAL). `full`: it also survives a power loss or an OS crash (every commit
    /// is synced to disk; slower). Default: `normal`.
    pub durability: String,
    /// Delivery workers (attempts in flight at once). Default: 4.
    pub workers: usize,
    /// How long a worker owns a claimed delivery, in milliseconds; an attempt not recorded by
    /// then (its host crashed) is made again. Keep it above the actions' deadlines.
    /// Default: 60 000.
    pub lease_ms: u64,
    /// How often idle workers look for due deliveries, in milliseconds (new deliveries wake
    /// them at once). Default: 1 000.
    pub poll_ms: u64,
    /// The first retry delay, in milliseconds; it doubles per failure, with jitter.
    /// Default: 1 000.
    pub retry_base_ms: u64,
    /// The longest retry delay (unless Retry-After asks for more), in milliseconds.
    /// Default: 3 600 000 (1 h).
    pub retry_max_delay_ms: u64,
    /// How long after it was accepted a delivery is still retried, in milliseconds; then it is
    /// dead-lettered. Default: 86 400 000 (24 h).
    pub retry_max_age_ms: u64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            durability: "normal".into(),
            workers: 4,
            lease_ms: 60_000,
            poll_ms: 1_000,
            retry_base_ms: 1_000,
            retry_max_delay_ms: 3_600_000,
            retry_max_age_ms: 86_400_000,
        }
    }
}

/// `[server]`: settings of `callout serve`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Where to listen. Default: `127.0.0.1:8080` (loopback only). A non-loopback address is
    /// refused unless `public = true`.
    pub listen: String,
    /// Allows a listen address other than loopback (put TLS in front). Default: false.
    pub public: bool,
    /// The API keys. Without any, `callout serve` refuses to start.
    pub api_keys: Vec<ApiKeySetting>,
    /// How often the actions directory is scanned for changes, in milliseconds; 0 turns
    /// watching off. Default: 1 000.
    pub watch_interval_ms: u64,
    /// How long a graceful shutdown waits for in-flight requests, in milliseconds.
    /// Default: 10 000.
    pub shutdown_grace_ms: u64,
    /// The largest upload (component plus manifest) the admin API takes, in MiB. Default: 64.
    pub max_upload_mb: u64,
    /// `enforce` (default): an action version is served only after it passed its test cases
    /// and the lints (see `crate::gate`). `skip`: every version that loads is served, each
    /// logged as a warning and recorded as overridden (`--skip-publish-gate` does the same).
    pub publish_gate: crate::gate::GateMode,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public: false,
            api_keys: Vec::new(),
            watch_interval_ms: 1_000,
            shutdown_grace_ms: 10_000,
            max_upload_mb: 64,
            publish_gate: crate::gate::GateMode::Enforce,
        }
    }
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum KeyScope {
    /// List and invoke actions, conversations, tests, MCP.
    Agent,
    /// Everything, the admin API included.
    Admin,
}

/// One `[[server.api_keys]]` entry. The key itself is never written in callout.toml: it comes
/// from an environment variable, or only its SHA-256 is given.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySetting {
    /// A name for logs (which key was used), never the key.
    pub name: String,
    /// `agent` or `admin`.
    pub scope: KeyScope,
    /// The environment variable that holds the key.
    #[serde(default)]
    pub env: Option<String>,
    /// The key's SHA-256, as 64 hex digits (`printf %s "$KEY" | sha256sum`).
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Deployment overrides of one action. Overrides live here, never in edits of `action.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionOverrides {
    /// Keys replacing (or adding to) the action's `[config]`.
    pub config: toml::Table,
}

/// Limits of the pooling allocator (`[pool]`).
///
/// The pool reserves its slots up front, so these bound the whole process. The defaults admit
/// components of 20 MB and more (interpreters built with componentize-py or componentize-js use
/// several core instances, memories and large tables).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolLimits {
    /// The largest linear memory any action may have, in MiB. An action's `limits.memory_mb` may
    /// not exceed it (`callout check` says so). Default: 512.
    pub max_memory_mb: u64,
    /// The most table elements of one table. Default: 200 000.
    pub table_elements: usize,
    /// Component instances alive at once in the process (each in-flight call holds one).
    /// Default: 1 000.
    pub total_component_instances: u32,
    /// Core instances alive at once in the process. Default: 4 000.
    pub total_core_instances: u32,
    /// Linear memories alive at once in the process. Default: 1 000.
    pub total_memories: u32,
    /// Tables alive at once in the process. Default: 2 000.
    pub total_tables: u32,
    /// Core instances in one component instance. Default: 64.
    pub max_core_instances_per_component: u32,
    /// Memories in one component instance. Default: 16.
    pub max_memories_per_component: u32,
    /// Tables in one component instance. Default: 64.
    pub max_tables_per_component: u32,
    /// Size of one core instance's VM context in KiB (grows with the number of functions,
    /// globals and tables of a module). Default: 4 096.
    pub max_core_instance_size_kb: usize,
    /// Size of one component instance's VM context in KiB. Default: 1 024.
    pub max_component_instance_size_kb: usize,
    /// How many freed instances' memory and tables are reset together, in one
    /// `process_madvise` call (Linux 6.13+; one `madvise` per region before that). Resetting
    /// dirty pages interrupts every other CPU running the process to flush its TLB, so one reset
    /// per 16 calls instead of one per call is what lets fresh-instance calls scale across
    /// cores; a freed slot is reused only after its reset. 1 resets each at once. Default: 16.
    pub decommit_batch_size: usize,
    /// How much of each linear memory, in KiB, is reset in place when a slot is freed (written
    /// pages copied back from the component's image, or zeroed) instead of being returned to
    /// the kernel: the next instance in that slot writes those pages without page faults, and
    /// no TLB shootdown is needed for them. With [`PoolLimits::pagemap_scan`] only the pages
    /// the call wrote are reset, wherever they are; without it, the lowest addresses. Costs up
    /// to this much resident memory per pool slot in use (slots are reused, so about the peak
    /// number of calls in flight). Default: 1 024.
    pub memory_keep_resident_kb: usize,
    /// The same for each table, in KiB. Default: 16.
    pub table_keep_resident_kb: usize,
    /// Find the pages a call wrote with Linux's `PAGEMAP_SCAN` (6.7+; ignored where the kernel
    /// lacks it), so a freed slot's reset touches only those. Ignored, with a warning, while swap
    /// is active: wasmtime's scan does not reset a written page that is swapped out
    /// ([`crate::engine::pagemap_scan_is_safe`]). Default: true.
    pub pagemap_scan: bool,
    /// Keep one spare instance per action that has been called, made in the background after
    /// each call, so calls do not wait for instantiation (a Rust action's 5–15 µs, a Python
    /// one's 0.6 ms) or for the teardown of the previous one. A spare is instantiated and never
    /// called before its call, so isolation is that of a fresh instance. Costs one pool slot
    /// and the spare's resident memory per recently called action; spares are made only while
    /// the pool is under half full, and dropped when a call finds it full. Default: true.
    pub prewarm: bool,
    /// A spare unused for this long is dropped, so actions that are no longer called hold no
    /// memory for it. Default: 60 000 (one minute).
    pub prewarm_idle_ms: u64,
    /// An instance kept for a conversation's next call (an action's `[limits] reuse =
    /// "conversation"`) that has had no call for this long is dropped, and its memory slot
    /// freed, whether or not the action is called again. Default: 60 000 (one minute).
    pub reuse_idle_ms: u64,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            max_memory_mb: 512,
            table_elements: 200_000,
            total_component_instances: 1_000,
            total_core_instances: 4_000,
            total_memories: 1_000,
            total_tables: 2_000,
            max_core_instances_per_component: 64,
            max_memories_per_component: 16,
            max_tables_per_component: 64,
            max_core_instance_size_kb: 4_096,
            max_component_instance_size_kb: 1_024,
            decommit_batch_size: 16,
            memory_keep_resident_kb: 1_024,
            table_keep_resident_kb: 16,
            pagemap_scan: true,
            prewarm: true,
            prewarm_idle_ms: 60_000,
            reuse_idle_ms: 60_000,
        }
    }
}

/// Host-wide outbound HTTP settings (`[http]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Connect timeout for every outbound connection, in milliseconds. Default: 5 000.
    pub connect_timeout_ms: u64,
    /// Idle keep-alive connections kept per upstream host. Default: 32.
    pub max_idle_per_host: usize,
    /// Lets an action grant `"*://*:*"` (every host). Insecure: only the blocked-network guard
    /// then limits it, and a warning is logged for each such grant. Default: false.
    pub insecure_allow_any_host: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            max_idle_per_host: 32,
            insecure_allow_any_host: false,
        }
    }
}

impl HostConfig {
    /// Reads `callout.toml` from `explicit`, or from `./callout.toml` if it exists, or returns the
    /// defaults.
    ///
    /// # Errors
    /// An explicit path that cannot be read, or a file that is not valid TOML of this shape.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let default = PathBuf::from("callout.toml");
                if !default.exists() {
                    return Ok((Self::default(), None));
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            path: path.clone(),
            message: format!("cannot read it ({e}); check the --config path"),
        })?;
        let config = Self::parse(&text).map_err(|message| ConfigError {
            path: path.clone(),
            message,
        })?;
        Ok((config, Some(path)))
    }

    /// Parses the text of a `callout.toml`.
    ///
    /// # Errors
    /// The TOML error, with the offending key and line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        if config.pool.max_memory_mb == 0 || config.pool.max_memory_mb > 4096 {
            return Err(format!(
                "pool.max_memory_mb = {} is out of range; use 1 to 4096",
                config.pool.max_memory_mb
            ));
        }
        if config.pool.decommit_batch_size == 0 || config.pool.decommit_batch_size > 1024 {
            return Err(format!(
                "pool.decommit_batch_size = {} is out of range; use 1 (reset each slot at once) \
                 to 1024",
                config.pool.decommit_batch_size
            ));
        }
        if config.pool.prewarm_idle_ms == 0 {
            return Err(
                "pool.prewarm_idle_ms = 0 would drop every spare at once; use at least 1 \
                 (60000 is the default), or prewarm = false to make none"
                    .into(),
            );
        }
        if config.pool.reuse_idle_ms == 0 {
            return Err(
                "pool.reuse_idle_ms = 0 would drop every reused instance before its next call; \
                 use at least 1 (60000 is the default), or reuse = \"none\" in the action's \
                 [limits]"
                    .into(),
            );
        }
        let max_kb = (config.pool.max_memory_mb as usize) << 10;
        if config.pool.memory_keep_resident_kb > max_kb {
            return Err(format!(
                "pool.memory_keep_resident_kb = {} exceeds pool.max_memory_mb ({max_kb} KiB); \
                 use at most that (1024 is the default)",
                config.pool.memory_keep_resident_kb
            ));
        }
        if !matches!(config.outbox.durability.as_str(), "normal" | "full") {
            return Err(format!(
                "outbox.durability = {:?}; use \"normal\" (survives a crash of the host) or \"full\" (also a power loss)",
                config.outbox.durability
            ));
        }
        if config.outbox.workers == 0 || config.outbox.workers > 256 {
            return Err(format!(
                "outbox.workers = {} is out of range; use 1 to 256",
                config.outbox.workers
            ));
        }
        if config.outbox.lease_ms < 100
            || config.outbox.poll_ms == 0
            || config.outbox.retry_base_ms == 0
        {
            return Err(
                "outbox.lease_ms must be at least 100, and outbox.poll_ms and outbox.retry_base_ms at least 1".into(),
            );
        }
        if config.http.connect_timeout_ms == 0 || config.http.connect_timeout_ms > 30_000 {
            return Err(format!(
                "http.connect_timeout_ms = {} is out of range; use 1 to 30000",
                config.http.connect_timeout_ms
            ));
        }
        Ok(config)
    }
}

/// Folds a multi-line parser message (toml's carets and snippets) into one readable line.
pub(crate) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '|' || c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        let c = HostConfig::parse("").unwrap();
        assert_eq!(c.pool, PoolLimits::default());
        assert!(c.dev_loopback.is_empty());
        assert_eq!(c.http.connect_timeout_ms, 5_000);
    }

    #[test]
    fn unknown_key_is_an_error_that_names_it() {
        let err = HostConfig::parse("[pool]\nmax_memroy_mb = 3\n").unwrap_err();
        assert!(err.contains("max_memroy_mb"), "{err}");
    }

    #[test]
    fn action_overrides_are_read_per_action() {
        let c =
            HostConfig::parse("[actions.order-status.config]\nbase_url = \"http://127.0.0.1:9\"\n")
                .unwrap();
        let o = &c.actions["order-status"];
        assert_eq!(o.config["base_url"].as_str(), Some("http://127.0.0.1:9"));
    }

    #[test]
    fn out_of_range_pool_memory_is_refused() {
        let err = HostConfig::parse("[pool]\nmax_memory_mb = 0\n").unwrap_err();
        assert!(err.contains("pool.max_memory_mb"), "{err}");
        let err = HostConfig::parse("[pool]\ndecommit_batch_size = 0\n").unwrap_err();
        assert!(err.contains("pool.decommit_batch_size = 0"), "{err}");
        let err = HostConfig::parse("[pool]\nprewarm_idle_ms = 0\n").unwrap_err();
        assert!(err.contains("pool.prewarm_idle_ms = 0"), "{err}");
        let err = HostConfig::parse("[pool]\nreuse_idle_ms = 0\n").unwrap_err();
        assert!(err.contains("pool.reuse_idle_ms = 0"), "{err}");
        let err = HostConfig::parse("[pool]\nmax_memory_mb = 1\nmemory_keep_resident_kb = 2048\n")
            .unwrap_err();
        assert!(err.contains("pool.memory_keep_resident_kb = 2048"), "{err}");
    }
}
