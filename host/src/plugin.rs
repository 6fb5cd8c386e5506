//! Loading a component with its manifest, and calling it.
//!
//! [`Runtime`] holds what is shared by the process (engine, linker, HTTP clients, compile
//! cache, epoch ticker); [`Plugin`] is one loaded action: its resolved manifest, its
//! `describe()`, and an `InstancePre` from which every call instantiates a fresh store (or,
//! for an action with `[limits] reuse = "conversation"`, reuses the instance of its
//! conversation). Nothing compiles on the call path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use wasmtime::component::{Component, Linker};
use wasmtime::{Store, UpdateDeadline};

use crate::audit::AuditLog;
use crate::bindings::{self, ActionPluginPre};
use crate::cache::{CacheStatus, CompileCache};
use crate::call::{Call, CallReport, Failure, FieldError, Outcome, Trigger, UpstreamKind};
use crate::config::HostConfig;
use crate::engine::{EpochTicker, build_engine, deadline_ticks};
use crate::error::{LoadError, LoadErrorKind};
use crate::error_policy::Handling;
use crate::inputs::InputGate;
use crate::manifest::{HostLimits, Limits, Manifest};
use crate::outbound_http::{
    ActionHttp, CallSecrets, Lookup, OutboundHttp, Secrets, SystemLookup, default_secrets_file,
};
use crate::phases::{Phase, Timer};
use crate::policy::DevLoopback;
use crate::state::{CallScope, InstanceState};
use crate::triggers::{Conditions, Extractor};

/// Extra time the tokio timeout around a call allows beyond the epoch deadline. Epochs stop a
/// running guest; the timeout stops a guest parked in a host call (a slow upstream, say).
const WALL_CLOCK_GRACE: Duration = Duration::from_millis(250);

/// How a [`Runtime`] is set up.
#[derive(Clone)]
pub struct RuntimeOptions {
    /// `callout.toml`.
    pub config: HostConfig,
    /// The data dir (`--data-dir`, default `./.callout`): compile cache key, later the database.
    pub data_dir: PathBuf,
    /// The compile cache (default `<data-dir>/cache`).
    pub cache_dir: Option<PathBuf>,
    /// Extra dev-loopback entries (the `--dev-loopback` flag), joined with callout.toml's.
    pub dev_loopback: Vec<String>,
    /// Secret values supplied by the embedder (otherwise read from the environment).
    pub secrets: Secrets,
    /// How names are resolved (default: the system resolver). Tests inject fake answers.
    pub lookup: Option<Arc<dyn Lookup>>,
    /// Keep the audit log in `<data-dir>/callout.db` (default true). When false, audit events
    /// only go to tracing.
    pub audit: bool,
}

impl RuntimeOptions {
    /// Defaults: no config file, data in `./.callout`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            config: HostConfig::default(),
            data_dir: data_dir.into(),
            cache_dir: None,
            dev_loopback: Vec::new(),
            secrets: Secrets::default(),
            lookup: None,
            audit: true,
        }
    }
}

/// What the process shares between actions.
pub struct Runtime {
    linker: Linker<InstanceState>,
    http: Arc<OutboundHttp>,
    cache: CompileCache,
    config: HostConfig,
    /// Tears down finished calls' stores and makes spare instances, off the calls' path.
    background: Background,
    _ticker: EpochTicker,
}

impl Drop for Runtime {
    /// Lets the background thread finish what is queued (see [`Background::drain`]).
    fn drop(&mut self) {
        self.background.drain();
    }
}

impl Runtime {
    /// Builds the engine, the linker (WASI p2 locked down, plus Callout's imports), the HTTP
    /// clients and the compile cache, and starts the epoch ticker.
    ///
    /// # Errors
    /// An invalid dev-loopback entry, a pool the platform cannot reserve, an unusable data dir.
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Self> {
        let mut entries = options.config.dev_loopback.clone();
        entries.extend(options.dev_loopback.iter().cloned());
        let dev = DevLoopback::from_entries(&entries)
            .map_err(|e| anyhow::anyhow!("--dev-loopback: {e}"))?;
        if !dev.is_empty() {
            let list: Vec<String> = dev.entries().iter().map(ToString::to_string).collect();
            tracing::warn!(
                "dev-loopback is on: actions may reach {} (development only)",
                list.join(", ")
            );
        }
        let engine = build_engine(&options.config.pool)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::ActionPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        let mut secrets = options.secrets;
        let secrets_file = options
            .config
            .secrets_file
            .clone()
            .unwrap_or_else(|| default_secrets_file(&options.data_dir));
        if options.config.secrets_file.is_some() || secrets_file.exists() {
            secrets.load_file(&secrets_file)?;
        }
        let audit = if options.audit {
            let db = options.data_dir.join(crate::audit::DB_FILE);
            Some(Arc::new(AuditLog::open(
                &db,
                crate::audit::DEFAULT_CAPACITY,
            )?))
        } else {
            None
        };
        let lookup = options
            .lookup
            .clone()
            .unwrap_or_else(|| Arc::new(SystemLookup));
        let http = Arc::new(OutboundHttp::new(
            &options.config.http,
            dev,
            secrets,
            lookup,
            audit,
        )?);
        let cache_dir = options
            .cache_dir
            .clone()
            .unwrap_or_else(|| options.data_dir.join("cache"));
        let cache = CompileCache::open(&engine, &options.data_dir, &cache_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot use the data dir {} or cache dir {}: {e}",
                options.data_dir.display(),
                cache_dir.display()
            )
        })?;
        let ticker = EpochTicker::start(&engine);
        Ok(Self {
            linker,
            http,
            cache,
            background: Background::start(&options.config.pool),
            config: options.config,
            _ticker: ticker,
        })
    }

    /// The host settings in force.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// What manifests may ask for in this deployment.
    pub fn host_limits(&self) -> HostLimits {
        HostLimits {
            max_memory_mb: self.config.pool.max_memory_mb,
            max_table_elements: self.config.pool.table_elements as u64,
            allow_any_host: self.config.http.insecure_allow_any_host,
        }
    }

    /// Blocks until every audit event recorded so far is in the database (the writer batches
    /// them for up to 10 ms). For readers in the same process, such as the console.
    pub fn flush_audit(&self) {
        if let Some(a) = self.http.audit() {
            a.flush();
        }
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.http.metrics()
    }

    /// The dev-loopback entries in force (empty unless the operator asked).
    pub fn dev_loopback(&self) -> &DevLoopback {
        self.http.dev_loopback()
    }

    /// Loads one action from its `action.toml`: manifest, component (through the compile
    /// cache), linking, `describe()`, and the cross-check of the two.
    ///
    /// # Errors
    /// A [`LoadError`] naming the file, the field and the fix.
    pub async fn load(&self, manifest_path: &Path) -> Result<Plugin, LoadError> {
        self.load_action(manifest_path)
            .await
            .map_err(|e| e.for_manifest(manifest_path))
    }

    async fn load_action(&self, manifest_path: &Path) -> Result<Plugin, LoadError> {
        let t0 = Instant::now();
        let host = self.host_limits();
        let overrides = self
            .config
            .actions
            .get(&manifest_name_hint(manifest_path))
            .map(|o| &o.config);
        // The name is only known after parsing; parse once to learn it, then again with its
        // overrides if the folder name guessed wrong.
        let mut manifest = Manifest::load(manifest_path, overrides, &host)?;
        if let Some(o) = self.config.actions.get(manifest.name())
            && Some(&o.config) != overrides
        {
            manifest = Manifest::load(manifest_path, Some(&o.config), &host)?;
        }

        let path = &manifest.component_path;
        let wasm: std::borrow::Cow<'static, [u8]> = match manifest.builtin {
            Some(b) => std::borrow::Cow::Borrowed(b.wasm),
            None => std::borrow::Cow::Owned(std::fs::read(path).map_err(|e| {
                LoadError::new(
                    LoadErrorKind::MissingComponent,
                    path,
                    format!(
                        "cannot read it ({e}), named by component in {}; {}",
                        manifest.path.display(),
                        build_hint(&manifest)
                    ),
                )
            })?),
        };
        let t_read = t0.elapsed();
        check_wasm_header(&wasm).map_err(|m| LoadError::new(LoadErrorKind::Component, path, m))?;
        let (component, cache_status, component_digest) = self
            .cache
            .load_or_compile(self.linker.engine(), &wasm)
            .map_err(|e| {
                LoadError::new(
                    LoadErrorKind::Component,
                    path,
                    format!("it does not compile: {}", first_line(&e)),
                )
            })?;
        let t_compiled = t0.elapsed();
        let pre = self.instantiate_pre(&component, path)?;
        let t_pre = t0.elapsed();

        // Lazily compiled patterns name their manifest when they fail.
        let owner = manifest.path.display().to_string();
        let t = &manifest.raw.trigger;
        let conditions = match t.kind {
            crate::manifest::TriggerKind::OnPrompt => Some(
                Conditions::compile(&t.intents, &t.patterns, &t.requires, t.priority)
                    .map_err(|m| LoadError::new(LoadErrorKind::Manifest, &manifest.path, m))?
                    .owned_by(&owner),
            ),
            _ => None,
        };
        let extract: Vec<(String, String)> = manifest
            .raw
            .inputs
            .iter()
            .filter_map(|(f, spec)| spec.extract.clone().map(|x| (f.clone(), x)))
            .collect();
        let extractor = Extractor::compile(&extract)
            .map_err(|m| LoadError::new(LoadErrorKind::Manifest, &manifest.path, m))?
            .owned_by(&owner);
        let name: Arc<str> = Arc::from(manifest.name());
        let config = Arc::new(manifest.config.clone());
        let metrics = Arc::new(self.http.metrics().action_metrics(manifest.name()));
        let http = Arc::new(
            ActionHttp::new(
                manifest.http.clone(),
                manifest.secrets.clone(),
                metrics.clone(),
            )
            .with_signing(manifest.raw.signing.as_ref().map(|s| s.secret.clone())),
        );
        let maker = Arc::new(Maker {
            pre,
            name,
            limits: manifest.limits.clone(),
            config,
            http,
            shared: self.http.clone(),
            spare: std::sync::Mutex::new(None),
            warm: (manifest.limits.reuse == crate::manifest::Reuse::Conversation).then(|| {
                WarmPool::new(Duration::from_millis(
                    self.background.shared.pool.reuse_idle_ms,
                ))
            }),
            metrics,
            background: self.background.clone(),
        });
        self.background.register(&maker);
        let mut plugin = Plugin {
            maker,
            descriptor: ActionDescriptor::default(),
            gate: None,
            conditions,
            extractor,
            cache_status,
            component_digest,
            manifest,
        };
        let t_built = t0.elapsed();
        plugin.descriptor = plugin.describe().await?;
        let t_described = t0.elapsed();
        let gate = InputGate::new(&plugin.descriptor.input_schema).map_err(|e| {
            LoadError::new(
                LoadErrorKind::Component,
                &plugin.manifest.component_path,
                format!("describe() returned an input schema the host cannot use: {e}"),
            )
        })?;
        plugin.gate = Some(gate);
        tracing::debug!(
            action = %plugin.name(),
            cache = plugin.cache_status.as_str(),
            manifest_and_read_us = t_read.as_micros() as u64,
            cache_or_compile_us = (t_compiled - t_read).as_micros() as u64,
            instantiate_pre_us = (t_pre - t_compiled).as_micros() as u64,
            triggers_us = (t_built - t_pre).as_micros() as u64,
            describe_us = (t_described - t_built).as_micros() as u64,
            input_schema_us = (t0.elapsed() - t_described).as_micros() as u64,
            "load timings"
        );
        Ok(plugin)
    }

    fn instantiate_pre(
        &self,
        component: &Component,
        path: &Path,
    ) -> Result<ActionPluginPre<InstanceState>, LoadError> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            LoadError::new(
                LoadErrorKind::Component,
                path,
                format!(
                    "it needs an import the host does not provide ({}); an action may import only \
                     callout:plugin/outbound-http, log and config and WASI 0.2 (cli, clocks, random, io); \
                     build it against the action-plugin world in wit/ (the callout-guest crate does)",
                    first_line(&e)
                ),
            )
        })?;
        ActionPluginPre::new(pre).map_err(|e| {
            LoadError::new(
                LoadErrorKind::Component,
                path,
                format!(
                    "it does not implement the callout:plugin/action-plugin world (no export \
                     callout:plugin/action@0.1.0 with describe and invoke: {}); build it against \
                     wit/ (for Rust, with the callout-guest crate and its export! macro)",
                    first_line(&e)
                ),
            )
        })
    }
}

/// Starts the call's deadline on `store`. Every epoch tick the guest checks in: past the
/// deadline it traps, before it yields to the async executor, so a looping plugin shares its
/// worker thread instead of holding it for its whole deadline.
fn arm_deadline(store: &mut Store<InstanceState>, deadline_ms: u64) {
    let mut ticks_left = deadline_ticks(deadline_ms);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        ticks_left = ticks_left.saturating_sub(1);
        if ticks_left == 0 {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// The folder name, used to find `[actions.<name>]` before the manifest is parsed.
fn manifest_name_hint(manifest_path: &Path) -> String {
    manifest_path
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn build_hint(manifest: &Manifest) -> String {
    let dir = manifest.path.parent().unwrap_or(Path::new("."));
    if dir.join("Cargo.toml").exists()
        || dir.parent().is_some_and(|p| p.join("Cargo.toml").exists())
    {
        format!(
            "build it with `rustup target add wasm32-wasip2 && cargo build --release --target wasm32-wasip2` \
             in {} (see plugins/README.md)",
            dir.display()
        )
    } else {
        "build the plugin for wasm32-wasip2 first, or fix the path in component (see plugins/README.md)".to_string()
    }
}

/// Refuses files that are not components before wasmtime is asked, with a fix for each case.
fn check_wasm_header(wasm: &[u8]) -> Result<(), String> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        let head: String = wasm
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(format!(
            "it is not a WebAssembly file (it starts with [{head}], not 00 61 73 6d); point component \
             at the .wasm your build produced for wasm32-wasip2"
        ));
    }
    match &wasm[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(
            "it is a core WebAssembly module, not a component; build for --target wasm32-wasip2 \
             (not wasm32-unknown-unknown or wasm32-wasip1), or wrap it with `wasm-tools component new`"
                .to_string(),
        ),
        v => Err(format!("it has an unknown WebAssembly version or layer {v:02x?}; rebuild it for wasm32-wasip2")),
    }
}

fn first_line(e: &wasmtime::Error) -> String {
    let mut msg = e.to_string();
    if let Some(cause) = e.chain().nth(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg = format!("{msg}: {c}");
        }
    }
    msg.lines().next().unwrap_or_default().to_string()
}

/// What an action is, as the agent sees it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ActionDescriptor {
    /// The action's name (the manifest's).
    pub name: String,
    /// The manifest's description, or the component's.
    pub description: String,
    /// The effective input schema: the component's, narrowed by the manifest.
    pub input_schema: Value,
    /// The output schema, as the component declares it.
    pub output_schema: Value,
}

/// One loaded action.
pub struct Plugin {
    /// Makes the action's stores and instances (it holds the name, `InstancePre`, config and
    /// grants), and keeps its spare one.
    maker: Arc<Maker>,
    descriptor: ActionDescriptor,
    gate: Option<InputGate>,
    conditions: Option<Conditions>,
    extractor: Extractor,
    cache_status: CacheStatus,
    /// The loaded component's [`CompileCache::digest`].
    component_digest: [u8; 32],
    manifest: Manifest,
}

/// An instance kept for the next call of its conversation.
struct Warm {
    store: Store<InstanceState>,
    instance: bindings::ActionPlugin,
    calls: u32,
    idle_since: Instant,
}

/// The idle instances of one action, by conversation id. A call takes its conversation's
/// instance out (so two calls of one conversation never share it at once) and puts it back
/// when it ended cleanly. An instance idle for `[pool] reuse_idle_ms` is dropped by the
/// background thread's sweep (or by the next `put`, whichever comes first).
struct WarmPool {
    idle: std::sync::Mutex<std::collections::HashMap<String, Warm>>,
    /// `[pool] reuse_idle_ms`.
    idle_for: Duration,
}

impl WarmPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Warm>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn new(idle_for: Duration) -> Self {
        Self {
            idle: std::sync::Mutex::default(),
            idle_for,
        }
    }

    /// The conversation's idle instance, unless it has expired (then it is dropped, outside
    /// the lock).
    fn take(&self, conversation: &str) -> Option<Warm> {
        let w = self.lock().remove(conversation)?;
        (w.idle_since.elapsed() < self.idle_for).then_some(w)
    }

    /// Takes out the instances idle for `idle_for` or longer, for the caller to drop outside
    /// the lock (a store's drop returns its slot to the pool).
    fn take_expired(&self, idle: &mut std::collections::HashMap<String, Warm>) -> Vec<Warm> {
        idle.extract_if(|_, w| w.idle_since.elapsed() >= self.idle_for)
            .map(|(_, w)| w)
            .collect()
    }

    /// Drops the instances idle for `idle_for` or longer (the background thread's sweep).
    fn sweep(&self) {
        let expired = self.take_expired(&mut self.lock());
        drop(expired);
    }

    fn put(&self, conversation: String, w: Warm) {
        if w.calls >= crate::manifest::REUSE_MAX_CALLS {
            return;
        }
        // Dropped outside the lock: a store's drop returns its slot to the pool.
        let mut dropped;
        {
            let mut idle = self.lock();
            dropped = self.take_expired(&mut idle);
            if idle.len() >= crate::manifest::REUSE_MAX_IDLE
                && let Some(oldest) = idle
                    .iter()
                    .min_by_key(|(_, w)| w.idle_since)
                    .map(|(k, _)| k.clone())
            {
                dropped.extend(idle.remove(&oldest));
            }
            if let Some(previous) = idle.insert(conversation, w) {
                dropped.push(previous);
            }
        }
        drop(dropped);
    }
}

/// A fresh instance made ahead of its call: instantiated, never called.
struct Spare {
    store: Store<InstanceState>,
    instance: bindings::ActionPlugin,
    /// When it was made; it is dropped after `[pool] prewarm_idle_ms` unused.
    made: Instant,
}

/// What makes one action's stores and instances, shared with the [`Background`] thread that
/// prepares its spare.
///
/// With `[pool] prewarm` (the default) each action that has been called keeps one spare
/// instance (until it has gone unused for `[pool] prewarm_idle_ms`): a call takes it instead
/// of instantiating, and once the call is over the background thread makes the next one. The
/// spare has been instantiated and nothing more (no export called, not even `describe()`), so
/// a call in it is exactly as isolated as one in an instance made on the spot; it only moves
/// instantiation off the call's path. Spares are made only while the pool is less than half
/// full, and a call that still finds the pool full drops them all and tries again
/// (`Plugin::instantiate_fresh`), so they never take the slots that calls need.
struct Maker {
    pre: ActionPluginPre<InstanceState>,
    name: Arc<str>,
    limits: Limits,
    config: Arc<toml::Table>,
    http: Arc<ActionHttp>,
    shared: Arc<OutboundHttp>,
    spare: std::sync::Mutex<Option<Spare>>,
    /// Idle instances by conversation, when the manifest asks for reuse.
    warm: Option<WarmPool>,
    /// The runtime's metrics series of this action, resolved at load.
    metrics: Arc<crate::metrics::ActionMetrics>,
    background: Background,
}

impl Maker {
    /// A store for one call, its limits and deadline armed.
    fn store(&self, call: CallScope) -> Store<InstanceState> {
        let state = InstanceState::new(
            self.name.clone(),
            &self.limits,
            self.config.clone(),
            self.shared.clone(),
            self.http.clone(),
            call,
        );
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        arm_deadline(&mut store, self.limits.deadline_ms);
        store
    }

    fn spare(&self) -> std::sync::MutexGuard<'_, Option<Spare>> {
        self.spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the spare if there is none and the pool has room (on the background thread).
    fn refill(&self) {
        if self.spare().is_some() || !self.background.pool_has_room(self.pre.engine()) {
            return;
        }
        let mut store = self.store(CallScope::default());
        // Instantiation does no I/O: polling it on this thread is enough.
        match futures::executor::block_on(self.pre.instantiate_async(&mut store)) {
            Ok(instance) => {
                let previous = self.spare().replace(Spare {
                    store,
                    instance,
                    made: Instant::now(),
                });
                drop(previous);
            }
            Err(e) => tracing::debug!(action = %self.name, "no spare instance: {e:#}"),
        }
    }

    /// After a call: `store` (when the call's instance is not kept) is dropped, then the next
    /// spare made, both on the background thread.
    ///
    /// Only with prewarming on, and while a core is idle (fewer calls in flight than cores):
    /// then the work runs beside the calls instead of delaying them. When every core is busy,
    /// handing work to another thread would only add a wake-up and cache misses per call, so
    /// the caller drops its store itself and the next call instantiates on the spot. Without
    /// prewarming the caller drops it too: the slot being reset elsewhere would make the next
    /// call instantiate in a cold slot, which costs more than the reset.
    fn after_call(self: &Arc<Self>, store: Option<Store<InstanceState>>) {
        if !self.background.shared.pool.prewarm || !self.background.has_idle_core() {
            drop(store);
            return;
        }
        let refill = self.spare().is_none().then(|| Arc::clone(self));
        if store.is_some() || refill.is_some() {
            self.background.run(Chore::After { store, refill });
        }
    }
}

/// What the background thread is asked to do.
enum Chore {
    /// After a call: drop its store (the pool resets its slot), then make the action's spare.
    After {
        store: Option<Store<InstanceState>>,
        refill: Option<Arc<Maker>>,
    },
    /// Answer once everything queued before is done (and dropped).
    Drain(std::sync::mpsc::SyncSender<()>),
}

/// A thread that tears finished calls down and makes spare instances, so neither is on a call's
/// path: a caller has its report before its instance's slot is reset. It also drops spares left
/// unused for `[pool] prewarm_idle_ms`, and instances kept for a conversation that have had no
/// call for `[pool] reuse_idle_ms`. One per [`Runtime`]; it ends when the runtime and its
/// plugins are gone. Its queue holds 256 chores; when it is full (the thread cannot keep up),
/// the caller does the work itself, as it would without it.
#[derive(Clone)]
struct Background {
    queue: std::sync::mpsc::SyncSender<Chore>,
    shared: Arc<BackgroundShared>,
}

/// What the runtime's actions and its background thread share.
struct BackgroundShared {
    /// The runtime's `[pool]`: `prewarm`, `prewarm_idle_ms`, `reuse_idle_ms`, and the limits
    /// of which a spare may use half.
    pool: crate::config::PoolLimits,
    /// Every action loaded in this runtime, for the sweep of idle instances.
    makers: std::sync::Mutex<Vec<std::sync::Weak<Maker>>>,
    /// Calls in flight in this runtime.
    in_flight: std::sync::atomic::AtomicUsize,
    /// The CPUs this process may use.
    cores: usize,
}

impl BackgroundShared {
    /// The actions still loaded, taken from the list (its lock is released on return).
    fn live_makers(&self) -> Vec<Arc<Maker>> {
        self.makers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }
}

/// Counts a call in flight while it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Background {
    /// How many chores may wait.
    const QUEUE: usize = 256;

    /// Counts a call in flight until the guard drops.
    fn enter(&self) -> InFlight<'_> {
        let in_flight = &self.shared.in_flight;
        in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(in_flight)
    }

    /// Whether fewer calls are in flight than there are cores (the caller's own included).
    fn has_idle_core(&self) -> bool {
        self.shared
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
            < self.shared.cores
    }

    /// Whether `engine`'s pool has room for a spare: under half of each of its limits in use.
    fn pool_has_room(&self, engine: &wasmtime::Engine) -> bool {
        let Some(m) = engine.pooling_allocator_metrics() else {
            return false;
        };
        let p = &self.shared.pool;
        m.component_instances() < u64::from(p.total_component_instances / 2)
            && m.core_instances() < u64::from(p.total_core_instances / 2)
            && m.memories() < (p.total_memories / 2) as usize
            && m.tables() < (p.total_tables / 2) as usize
    }

    /// Starts the thread; spares unused for `pool.prewarm_idle_ms` and reused instances idle
    /// for `pool.reuse_idle_ms` are dropped by a sweep every quarter of the shorter of the two
    /// (between 10 ms and 10 s).
    fn start(pool: &crate::config::PoolLimits) -> Self {
        let (queue, chores) = std::sync::mpsc::sync_channel::<Chore>(Self::QUEUE);
        let shared = Arc::new(BackgroundShared {
            pool: pool.clone(),
            makers: std::sync::Mutex::default(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        });
        let shortest = pool.prewarm_idle_ms.min(pool.reuse_idle_ms);
        let sweep_every = (Duration::from_millis(shortest) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(10));
        let swept = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("callout-background".into())
            .spawn(move || {
                let mut last_sweep = Instant::now();
                loop {
                    match chores.recv_timeout(sweep_every) {
                        Ok(Chore::After { store, refill }) => {
                            drop(store);
                            if let Some(maker) = refill {
                                maker.refill();
                            }
                        }
                        Ok(Chore::Drain(done)) => {
                            let _ = done.send(());
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    if last_sweep.elapsed() >= sweep_every {
                        last_sweep = Instant::now();
                        match swept.upgrade() {
                            Some(shared) => sweep_idle(&shared),
                            None => break,
                        }
                    }
                }
            })
            .expect("spawn the background thread");
        Self { queue, shared }
    }

    /// Adds an action to the sweep of idle spares.
    fn register(&self, maker: &Arc<Maker>) {
        let mut makers = self
            .shared
            .makers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        makers.retain(|m| m.strong_count() > 0);
        makers.push(Arc::downgrade(maker));
    }

    fn run(&self, chore: Chore) {
        if let Err(
            std::sync::mpsc::TrySendError::Full(chore)
            | std::sync::mpsc::TrySendError::Disconnected(chore),
        ) = self.queue.try_send(chore)
            && let Chore::After { store, .. } = chore
        {
            // Only the teardown: a spare made here would cost the caller what it saves.
            drop(store);
        }
    }

    /// Drops every spare instance of this runtime, outside the locks; returns how many there
    /// were. For a call that found the pool full.
    fn drop_spares(&self) -> usize {
        let live = self.shared.live_makers();
        let spares: Vec<Spare> = live.iter().filter_map(|m| m.spare().take()).collect();
        spares.len()
    }

    /// Drops the instance that has been idle longest among those kept for conversations, across
    /// the runtime's actions; returns whether there was one. For a call that found the pool full
    /// with no spares left to drop.
    fn drop_oldest_idle(&self) -> bool {
        let live = self.shared.live_makers();
        // Another call may take the chosen instance between the search and the removal; then
        // search again (each round removes one instance or finds the pools empty).
        loop {
            let oldest = live
                .iter()
                .filter_map(|m| {
                    let pool = m.warm.as_ref()?;
                    pool.lock()
                        .iter()
                        .min_by_key(|(_, w)| w.idle_since)
                        .map(|(conversation, w)| (w.idle_since, conversation.clone(), pool))
                })
                .min_by_key(|(since, ..)| *since);
            let Some((since, conversation, pool)) = oldest else {
                return false;
            };
            let taken = {
                let mut idle = pool.lock();
                match idle.get(&conversation) {
                    Some(w) if w.idle_since == since => idle.remove(&conversation),
                    _ => None,
                }
            };
            // Dropped outside the lock: a store's drop returns its slot to the pool.
            if let Some(w) = taken {
                drop(w);
                return true;
            }
        }
    }

    /// Waits until every chore queued so far is done. The chores hold stores and actions, and
    /// through them the audit log: a process that exits right after its calls (`callout
    /// invoke`) must not leave them in the queue, or their audit events would never be written.
    fn drain(&self) {
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        if self.queue.send(Chore::Drain(done)).is_ok() {
            let _ = finished.recv();
        }
    }
}

/// Drops the spares made more than `[pool] prewarm_idle_ms` ago and the reused instances idle
/// for `[pool] reuse_idle_ms` (outside the list's lock).
fn sweep_idle(shared: &BackgroundShared) {
    let spare_idle = Duration::from_millis(shared.pool.prewarm_idle_ms);
    for maker in shared.live_makers() {
        let mut spare = maker.spare();
        let expired = spare
            .as_ref()
            .is_some_and(|s| s.made.elapsed() >= spare_idle);
        let dropped = if expired { spare.take() } else { None };
        drop(spare);
        drop(dropped);
        if let Some(warm) = &maker.warm {
            warm.sweep();
        }
    }
}

impl Plugin {
    /// The action's name.
    pub fn name(&self) -> &str {
        &self.maker.name
    }

    /// Its manifest, resolved.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Its descriptor (effective input schema included).
    pub fn descriptor(&self) -> &ActionDescriptor {
        &self.descriptor
    }

    /// The on-prompt conditions, for on-prompt actions.
    pub fn conditions(&self) -> Option<&Conditions> {
        self.conditions.as_ref()
    }

    /// Pulls this action's input values out of a user message (`extract` patterns).
    pub fn extractor(&self) -> &Extractor {
        &self.extractor
    }

    /// The names of the inputs the action declares (its effective schema's properties).
    pub fn input_names(&self) -> Vec<String> {
        self.descriptor.input_schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Checks `inputs` against the input gate without calling anything: what a call with them
    /// would still need. Callers that schedule attempts themselves (the outbox) check once,
    /// then use [`Plugin::invoke_once`].
    ///
    /// # Errors
    /// Every missing or invalid field, with the question to ask.
    pub fn check_inputs(
        &self,
        inputs: &Map<String, Value>,
    ) -> Result<(), Vec<crate::inputs::NeededInput>> {
        match &self.gate {
            Some(gate) => gate.check(inputs),
            None => Ok(()),
        }
    }

    /// Whether the outbox tries a failed delivery again, on its own schedule: for the classes
    /// the action's `[on_error]` retries (default: timeout, connect, server-error,
    /// rate-limited), and always for `busy` (the host had no free instance slot; the action
    /// never ran, so the event waits for a slot whatever `[on_error]` says).
    pub fn retries(&self, failure: &Failure) -> bool {
        matches!(failure, Failure::Busy { .. })
            || self
                .manifest
                .on_error
                .retry
                .on
                .contains(&crate::error_policy::classify(failure))
    }

    /// Makes a fresh instance (a store with the action's limits, instantiated from its
    /// `InstancePre`) and drops it, calling nothing: what every call pays besides the guest's
    /// work. Returns how long each half took: making the instance (store included), and
    /// dropping it (the store, and the pool resetting the instance's slot). For benchmarks and
    /// health checks.
    ///
    /// # Errors
    /// When instantiation fails (the pool is exhausted, say).
    pub async fn instantiate_probe(&self) -> anyhow::Result<(Duration, Duration)> {
        let started = Instant::now();
        let mut store = self.maker.store(CallScope::default());
        self.maker.pre.instantiate_async(&mut store).await?;
        let made = started.elapsed();
        let started = Instant::now();
        drop(store);
        Ok((made, started.elapsed()))
    }

    /// Whether a spare instance is ready for the next call (`[pool] prewarm`): made by the
    /// runtime's background thread after a call, taken by the next one. For tests and health
    /// checks.
    pub fn spare_ready(&self) -> bool {
        self.maker.spare().is_some()
    }

    /// How many instances are kept for conversations' next calls (`[limits] reuse =
    /// "conversation"`); 0 without reuse. For tests and health checks.
    pub fn reused_idle(&self) -> usize {
        self.maker.warm.as_ref().map_or(0, |w| w.lock().len())
    }

    /// Whether the component came from the compile cache.
    pub fn cache_status(&self) -> CacheStatus {
        self.cache_status
    }

    /// BLAKE3 of the engine's id and the component's bytes as they were loaded.
    pub fn component_digest(&self) -> &[u8; 32] {
        &self.component_digest
    }

    fn wall_clock(&self) -> Duration {
        Duration::from_millis(self.manifest.limits.deadline_ms) + WALL_CLOCK_GRACE
    }

    async fn describe(&self) -> Result<ActionDescriptor, LoadError> {
        let path = &self.manifest.component_path;
        let mut store = self.maker.store(CallScope {
            dry_run: true,
            ..CallScope::default()
        });
        let call = async {
            let inst = self.maker.pre.instantiate_async(&mut store).await?;
            inst.callout_plugin_action().call_describe(&mut store).await
        };
        let result = tokio::time::timeout(self.wall_clock(), call).await;
        store.data().flush_output();
        let d = match result {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                let f = self.failure_of(&e, &store);
                return Err(LoadError::new(LoadErrorKind::Describe, path, f.to_string()));
            }
            Err(_) => {
                return Err(LoadError::new(
                    LoadErrorKind::Describe,
                    path,
                    format!(
                        "describe() did not return within {} ms",
                        self.manifest.limits.deadline_ms
                    ),
                ));
            }
        };
        let parse = |what: &str, text: &str| -> Result<Value, LoadError> {
            let v: Value = serde_json::from_str(text).map_err(|e| {
                LoadError::new(
                    LoadErrorKind::Component,
                    path,
                    format!("describe() returned an {what} that is not JSON: {e}"),
                )
            })?;
            if !v.is_object() {
                return Err(LoadError::new(
                    LoadErrorKind::Component,
                    path,
                    format!("describe() returned an {what} that is not a JSON object"),
                ));
            }
            Ok(v)
        };
        let input = parse("input-schema", &d.input_schema)?;
        let output = parse("output-schema", &d.output_schema)?;
        let effective =
            crate::inputs::narrow(&input, &self.manifest.raw.inputs).map_err(|errors| {
                LoadError::new(
                    LoadErrorKind::Contradiction,
                    &self.manifest.path,
                    format!(
                        "{} (the component {} declares its inputs in describe())",
                        errors.join("; "),
                        path.display()
                    ),
                )
            })?;
        Ok(ActionDescriptor {
            name: self.maker.name.to_string(),
            description: self
                .manifest
                .raw
                .description
                .clone()
                .unwrap_or(d.description),
            input_schema: effective,
            output_schema: output,
        })
    }

    /// Calls the action: the input gate, then a fresh instance per attempt under its limits and
    /// deadline, with the action's error policy deciding on retries and fallbacks.
    ///
    /// Never fails as a Rust error: everything that goes wrong, a trap or an exhausted limit
    /// included, is a [`Failure`] in the report, and the next call starts clean. Every call is
    /// counted in the runtime's [`crate::metrics::Metrics`].
    pub async fn invoke(&self, call: Call) -> CallReport {
        let trigger = call.trigger;
        let report = self.invoke_gated(call).await;
        let outcome = match &report.result {
            Ok(_) => "ok",
            Err(f) => f.class(),
        };
        self.maker
            .metrics
            .record_call(trigger, outcome, report.elapsed_us);
        report
    }

    async fn invoke_gated(&self, mut call: Call) -> CallReport {
        let started = Instant::now();
        if let Some(gate) = &self.gate
            && let Err(fields) = gate.check(&call.inputs)
        {
            return CallReport {
                result: Err(Failure::NeedsInput { fields }),
                idempotency_key: call.idempotency_key.unwrap_or_default(),
                recorded: Vec::new(),
                responses: Vec::new(),
                requests: Vec::new(),
                output: Default::default(),
                attempts: 0,
                fallback: None,
                elapsed_us: started.elapsed().as_micros() as u64,
            };
        }
        // One key for the logical call: every retry carries the same one.
        let key = call
            .idempotency_key
            .clone()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(new_idempotency_key);
        call.idempotency_key = Some(key);
        let policy = &self.manifest.on_error;
        let first = call.attempt.max(1);
        let mut attempt = first;
        loop {
            call.attempt = attempt;
            let mut report = self.invoke_once(call.clone()).await;
            report.attempts = attempt - first + 1;
            let Err(failure) = &report.result else {
                report.elapsed_us = started.elapsed().as_micros() as u64;
                return report;
            };
            let repeatable = report.requests.iter().all(|r| r.repeatable);
            let mut handling = policy.decide(failure, attempt, repeatable, jitter());
            // The whole logical call, retries and their waits included, stays within the
            // action's deadline: a wait that would not fit (a long Retry-After, say) ends the
            // retries here, with the handling of a failure that is out of retries.
            if let Handling::Retry { delay_ms } = handling {
                let deadline = Duration::from_millis(self.manifest.limits.deadline_ms);
                if started.elapsed() + Duration::from_millis(delay_ms) > deadline {
                    tracing::info!(action = %self.maker.name, attempt, delay_ms, "retry would pass the deadline; not retrying");
                    handling = policy.decide(failure, u32::MAX, repeatable, 0.0);
                }
            }
            match handling {
                Handling::Retry { delay_ms } => {
                    tracing::info!(action = %self.maker.name, attempt, delay_ms, class = failure.class(), "retrying");
                    // A recorded response (a test) answers at once: the retry is made, its
                    // wait is not.
                    if call.mock.is_none() {
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    }
                    attempt += 1;
                    continue;
                }
                Handling::AskAgain => {
                    // Invalid inputs name their fields; any other class asked again (not-found,
                    // say) asks again for every input the call used, with the failure as reason.
                    let prompt = |field: &str| {
                        self.gate
                            .as_ref()
                            .and_then(|g| g.prompt(field))
                            .map(str::to_string)
                    };
                    let fields = match failure {
                        Failure::InvalidInput { fields } => fields
                            .iter()
                            .map(|f| crate::inputs::NeededInput {
                                prompt: prompt(&f.field),
                                field: f.field.clone(),
                                reason: f.reason.clone(),
                            })
                            .collect(),
                        other => {
                            let reason = other.to_string();
                            let mut used: Vec<&String> = call.inputs.keys().collect();
                            used.sort();
                            used.into_iter()
                                .map(|f| crate::inputs::NeededInput {
                                    prompt: prompt(f),
                                    field: f.clone(),
                                    reason: reason.clone(),
                                })
                                .collect()
                        }
                    };
                    report.result = Err(Failure::NeedsInput { fields });
                }
                Handling::Fallback { message } => report.fallback = Some(message),
                Handling::Fail => {}
            }
            report.elapsed_us = started.elapsed().as_micros() as u64;
            return report;
        }
    }

    /// One attempt, without the input gate or the error policy: a fresh instance, its limits
    /// and deadline. Used by [`Plugin::invoke`] for every attempt, and by callers (such as a
    /// durable outbox) that schedule retries themselves.
    pub async fn invoke_once(&self, call: Call) -> CallReport {
        let started = Instant::now();
        let _in_flight = self.maker.background.enter();
        let key = call
            .idempotency_key
            .clone()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(new_idempotency_key);
        let scope = CallScope {
            dry_run: call.dry_run,
            conversation_id: call.conversation_id.clone(),
            secrets: CallSecrets::from_user_text(user_text(&call).iter().map(String::as_str)),
            mock: call.mock.clone(),
            idempotency_key: key.clone(),
            capture: call.capture,
        };
        // The conversation whose instance this call may reuse, when the action asks for reuse.
        let reuse_key = self
            .maker
            .warm
            .as_ref()
            .and_then(|_| call.conversation_id.clone())
            .filter(|c| !c.is_empty());
        let invocation = bindings::Invocation {
            action: self.maker.name.to_string(),
            trigger: match call.trigger {
                Trigger::ToolCall => bindings::TriggerKind::ToolCall,
                Trigger::OnPrompt => bindings::TriggerKind::OnPrompt,
                Trigger::ChatEnd => bindings::TriggerKind::ChatEnd,
                Trigger::Test => bindings::TriggerKind::Test,
            },
            inputs: Value::Object(call.inputs).to_string(),
            conversation_id: call.conversation_id,
            variables: Value::Object(call.variables).to_string(),
            transcript: call.transcript.map(|t| {
                t.into_iter()
                    .map(|l| bindings::Message {
                        role: match l.role {
                            crate::call::Role::User => bindings::Role::User,
                            crate::call::Role::Agent => bindings::Role::Agent,
                            crate::call::Role::System => bindings::Role::System,
                        },
                        text: l.text,
                        at_ms: l.at_ms,
                    })
                    .collect()
            }),
            idempotency_key: key.clone(),
            attempt: call.attempt.max(1),
            dry_run: call.dry_run,
        };
        // A reused instance of this conversation, if one is idle; else the spare, a fresh
        // instance made ahead of this call (the next one is made after it, in `after_call`).
        let warm = reuse_key
            .as_deref()
            .and_then(|c| self.maker.warm.as_ref().and_then(|w| w.take(c)))
            .map(|w| {
                (
                    w.store,
                    w.instance,
                    w.calls,
                    &self.maker.metrics.instances.reused,
                )
            })
            .or_else(|| {
                let spare = self.maker.spare().take();
                spare.map(|s| (s.store, s.instance, 0, &self.maker.metrics.instances.spare))
            });
        let (mut store, mut instance, calls, source) = match warm {
            Some((mut store, instance, calls, source)) => {
                store.data_mut().begin_call(scope);
                arm_deadline(&mut store, self.manifest.limits.deadline_ms);
                (store, Some(instance), calls, source)
            }
            None => (
                self.maker.store(scope),
                None,
                0,
                &self.maker.metrics.instances.fresh,
            ),
        };
        source.inc();
        let run = async {
            let timer = Timer::start();
            let inst = match instance.take() {
                Some(i) => i,
                None => self.instantiate_fresh(&mut store).await?,
            };
            timer.stop(Phase::Instantiate);
            let timer = Timer::start();
            let out = inst
                .callout_plugin_action()
                .call_invoke(&mut store, &invocation)
                .await?;
            timer.stop(Phase::GuestInvoke);
            Ok::<_, wasmtime::Error>((inst, out))
        };
        let (result, keep) = match tokio::time::timeout(self.wall_clock(), run).await {
            Ok(Ok((inst, Ok(outcome)))) => (convert_outcome(outcome), Some(inst)),
            Ok(Ok((inst, Err(error)))) => (Err(convert_error(error)), Some(inst)),
            Ok(Err(trap)) => (Err(self.failure_of(&trap, &store)), None),
            Err(_) => (
                Err(Failure::Deadline {
                    deadline_ms: self.manifest.limits.deadline_ms,
                }),
                None,
            ),
        };
        let report_timer = Timer::start();
        let state = store.data_mut();
        let output = state.flush_output();
        if let Err(f) = &result {
            tracing::info!(action = %self.maker.name, class = f.class(), "call failed: {f}");
        }
        let report = CallReport {
            result,
            idempotency_key: key,
            recorded: std::mem::take(&mut state.recorded),
            responses: std::mem::take(&mut state.responses),
            requests: std::mem::take(&mut state.requests),
            output,
            attempts: 1,
            fallback: None,
            elapsed_us: started.elapsed().as_micros() as u64,
        };
        // Only an instance that ended its call cleanly (an outcome or an error it returned)
        // serves the conversation's next call; a trap, a deadline or a memory limit drops it.
        if let (Some(pool), Some(conversation), Some(instance)) =
            (&self.maker.warm, reuse_key, keep)
            && !store.data().limits.memory_exceeded
        {
            pool.put(
                conversation,
                Warm {
                    store,
                    instance,
                    calls: calls + 1,
                    idle_since: Instant::now(),
                },
            );
            self.maker.after_call(None);
        } else {
            self.maker.after_call(Some(store));
        }
        report_timer.stop(Phase::Report);
        report
    }

    /// Instantiates the action in `store`, for a call that has no spare or reused instance.
    ///
    /// When the pool is full, the call makes room and tries again, each time in a new store
    /// holding the same call: first the runtime's spare instances are dropped (spares are made
    /// only while the pool is under half full, but calls that start after a spare was made may
    /// still need its slot, and a spare must never cost a call its instance); then, one at a
    /// time and oldest first, the idle instances kept for conversations (`[limits] reuse`),
    /// whose next call then starts in a fresh instance. Only when nothing idle is left does the
    /// call fail with the pool's error.
    async fn instantiate_fresh(
        &self,
        store: &mut Store<InstanceState>,
    ) -> wasmtime::Result<bindings::ActionPlugin> {
        let mut spares_dropped = false;
        loop {
            match self.maker.pre.instantiate_async(&mut *store).await {
                Err(e) if pool_full(&e) => {
                    let background = &self.maker.background;
                    let freed = if !spares_dropped && background.drop_spares() > 0 {
                        "the spare instances"
                    } else if background.drop_oldest_idle() {
                        "the oldest idle conversation instance"
                    } else {
                        return Err(e);
                    };
                    spares_dropped = true;
                    tracing::debug!(action = %self.maker.name, "pool full: dropped {freed}, retrying: {e}");
                    // The failed store may hold part of the instance: replace it, which frees
                    // that.
                    let scope = store.data_mut().take_scope();
                    *store = self.maker.store(scope);
                }
                result => return result,
            }
        }
    }

    /// Turns a trap (or host error) into the failure the caller sees.
    fn failure_of(&self, e: &wasmtime::Error, store: &Store<InstanceState>) -> Failure {
        if pool_full(e) {
            return Failure::Busy {
                message: format!(
                    "{}; every instance slot is in use by calls in flight, and none was idle to \
                     free. Raise the [pool] limits in callout.toml (total_component_instances, \
                     total_core_instances, total_memories, total_tables), or send fewer calls \
                     at once",
                    first_line(e)
                ),
            };
        }
        if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
            return Failure::Deadline {
                deadline_ms: self.manifest.limits.deadline_ms,
            };
        }
        if store.data().limits.memory_exceeded {
            return Failure::MemoryLimit {
                limit_mb: self.manifest.limits.memory_bytes >> 20,
            };
        }
        let mut message = match e.downcast_ref::<wasmtime::Trap>() {
            Some(t) => t.to_string(),
            None => first_line(e),
        };
        // A Rust panic prints "thread '..' panicked at file:line:col:" and the message on the
        // next line to stderr before trapping: quote those, they say what went wrong.
        let (stderr, _) = store.data().stderr.contents();
        let stderr = String::from_utf8_lossy(&stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let quoted = match lines.iter().position(|l| l.contains("panicked at")) {
            Some(i) => lines[i..]
                .iter()
                .take(2)
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
            None => lines.last().copied().unwrap_or_default().to_string(),
        };
        if !quoted.is_empty() {
            let quoted: String = quoted.chars().take(300).collect();
            message = format!("{message} (stderr: {})", quoted.escape_debug());
        }
        Failure::Trap { message }
    }
}

/// Whether `e` is the pooling allocator refusing an instance because one of its limits is in
/// use (`[pool]` in callout.toml): what a call makes room for, or reports as `busy`.
fn pool_full(e: &wasmtime::Error) -> bool {
    e.chain()
        .any(|c| c.is::<wasmtime::PoolConcurrencyLimitError>())
}

fn convert_outcome(o: bindings::Outcome) -> Result<Outcome, Failure> {
    let data: Value = serde_json::from_str(&o.data).map_err(|e| Failure::Contract {
        message: format!("outcome.data is not JSON: {e}"),
    })?;
    let variables = if o.variables.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(&o.variables) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(Failure::Contract {
                    message: "outcome.variables is not a JSON object".into(),
                });
            }
            Err(e) => {
                return Err(Failure::Contract {
                    message: format!("outcome.variables is not JSON: {e}"),
                });
            }
        }
    };
    Ok(Outcome {
        data,
        reply: o.reply,
        variables,
    })
}

fn convert_error(e: bindings::ActionError) -> Failure {
    use bindings::ActionError as E;
    match e {
        E::InvalidInput(fields) => Failure::InvalidInput {
            fields: fields
                .into_iter()
                .map(|f| FieldError {
                    field: f.field,
                    reason: f.reason,
                })
                .collect(),
        },
        E::NotFound(message) => Failure::NotFound { message },
        E::Upstream(u) => Failure::Upstream {
            kind: match u.kind {
                bindings::UpstreamKind::Timeout => UpstreamKind::Timeout,
                bindings::UpstreamKind::Connect => UpstreamKind::Connect,
                bindings::UpstreamKind::ServerError => UpstreamKind::ServerError,
                bindings::UpstreamKind::RateLimited => UpstreamKind::RateLimited,
                bindings::UpstreamKind::ClientError => UpstreamKind::ClientError,
                bindings::UpstreamKind::Protocol => UpstreamKind::Protocol,
            },
            status: u.status,
            retry_after_ms: u.retry_after_ms,
            message: u.message,
        },
        E::Denied(d) => Failure::Denied {
            code: d.code,
            message: d.message,
        },
        E::Internal(message) => Failure::Internal { message },
    }
}

/// Every string of a call that a user could have written: input and variable values (at any
/// depth) and the transcript.
fn user_text(call: &Call) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(m) => m.iter().for_each(|(k, x)| {
                out.push(k.clone());
                walk(x, out)
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for map in [&call.inputs, &call.variables] {
        for (k, v) in map {
            out.push(k.clone());
            walk(v, &mut out);
        }
    }
    for line in call.transcript.iter().flatten() {
        out.push(line.text.clone());
    }
    out
}

/// A uniformly random number in [0, 1), for retry jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source works");
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// A fresh random idempotency key (128 bits, hex).
pub fn new_idempotency_key() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source works");
    hex::encode(b)
}
