//! The data of one call's `Store`: a locked-down WASI context, limits, and what the call may do.
//!
//! A fresh [`InstanceState`] is made for every call and dropped with its store, so nothing a
//! plugin keeps in memory survives into the next call.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::callout::plugin::{config, log};
use crate::call::{OutputStats, RecordedRequest, SentRequest};
use crate::manifest::Limits;
use crate::outbound_http::{ActionHttp, CallSecrets, OutboundHttp};

/// The longest single log line a plugin can write: 4 KiB; longer ones are cut.
pub const MAX_LOG_LINE: usize = 4 << 10;

/// What is particular to one call, beyond its action.
#[derive(Debug, Clone, Default)]
pub struct CallScope {
    /// Record requests instead of sending them.
    pub dry_run: bool,
    /// The conversation, if any.
    pub conversation_id: Option<String>,
    /// Secrets named by the call's own user text.
    pub secrets: CallSecrets,
    /// Answer requests from this mock instead of sending them.
    pub mock: Option<Arc<crate::call::MockResponse>>,
    /// The call's idempotency key (the `webhook-id` of signed requests).
    pub idempotency_key: String,
    /// Keep live requests and responses ([`crate::call::Call::capture`]).
    pub capture: bool,
}

/// Per-call state: the `T` of `Store<T>`.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory, table and instance limits of this call.
    pub limits: CallLimits,
    /// The action's name, for logs.
    pub action: Arc<str>,
    /// The action's `[config]`, deployment overrides applied.
    pub config: Arc<toml::Table>,
    /// The process-wide HTTP clients.
    pub http: Arc<OutboundHttp>,
    /// The action's grants and counters.
    pub grants: Arc<ActionHttp>,
    /// Whether `send` records instead of sending.
    pub dry_run: bool,
    /// The conversation of this call, for the audit log.
    pub conversation_id: Option<String>,
    /// Which secrets this call's own user text names (refused in requests).
    pub call_secrets: CallSecrets,
    /// The mock answering this call's requests, if any.
    pub mock: Option<Arc<crate::call::MockResponse>>,
    /// The call's idempotency key.
    pub idempotency_key: String,
    /// Requests recorded in dry-run and mock calls (and live ones when capturing).
    pub recorded: Vec<RecordedRequest>,
    /// Whether live requests and their responses are kept.
    pub capture: bool,
    /// Responses kept when capturing.
    pub responses: Vec<crate::call::MockResponse>,
    /// Requests made in this call.
    pub requests: Vec<SentRequest>,
    /// Captured stdout.
    pub stdout: CapturedOutput,
    /// Captured stderr.
    pub stderr: CapturedOutput,
    log_budget: usize,
    log_dropped: usize,
}

impl InstanceState {
    /// A fresh state for one call.
    pub fn new(
        action: Arc<str>,
        limits: &Limits,
        config: Arc<toml::Table>,
        http: Arc<OutboundHttp>,
        grants: Arc<ActionHttp>,
        call: CallScope,
    ) -> Self {
        let cap = limits.output_bytes as usize;
        let stdout = CapturedOutput::new(cap);
        let stderr = CapturedOutput::new(cap);
        // No preopens, env, args or sockets: the builder starts empty and we only add the two
        // captured streams. stdin is empty by default.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits: CallLimits::new(limits),
            action,
            config,
            http,
            grants,
            dry_run: call.dry_run,
            conversation_id: call.conversation_id,
            call_secrets: call.secrets,
            mock: call.mock,
            idempotency_key: call.idempotency_key,
            recorded: Vec::new(),
            capture: call.capture,
            responses: Vec::new(),
            requests: Vec::new(),
            stdout,
            stderr,
            log_budget: cap,
            log_dropped: 0,
        }
    }

    /// Makes a reused instance's state ready for the next call: the call's own settings from
    /// `call`, and empty records, output budgets and limit flags (the instance keeps its memory,
    /// which is the point of reusing it).
    pub fn begin_call(&mut self, call: CallScope) {
        self.dry_run = call.dry_run;
        self.conversation_id = call.conversation_id;
        self.call_secrets = call.secrets;
        self.mock = call.mock;
        self.idempotency_key = call.idempotency_key;
        self.capture = call.capture;
        self.recorded.clear();
        self.responses.clear();
        self.requests.clear();
        self.log_budget = self.stdout.cap;
        self.log_dropped = 0;
        self.limits.memory_exceeded = false;
    }

    /// Takes the call's scope back out, for a new store that will hold the same call (when the
    /// first store could not be instantiated).
    pub fn take_scope(&mut self) -> CallScope {
        CallScope {
            dry_run: self.dry_run,
            conversation_id: self.conversation_id.take(),
            secrets: std::mem::take(&mut self.call_secrets),
            mock: self.mock.take(),
            idempotency_key: std::mem::take(&mut self.idempotency_key),
            capture: self.capture,
        }
    }

    /// Forwards what the plugin printed to tracing, escaped, says how much was cut, and
    /// returns the counts.
    pub fn flush_output(&self) -> OutputStats {
        let mut stats = OutputStats {
            log_dropped: self.log_dropped as u64,
            ..OutputStats::default()
        };
        for (stream, out) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let (bytes, dropped) = out.take();
            if stream == "stdout" {
                (stats.stdout_kept, stats.stdout_dropped) = (bytes.len() as u64, dropped as u64);
            } else {
                (stats.stderr_kept, stats.stderr_dropped) = (bytes.len() as u64, dropped as u64);
            }
            if !bytes.is_empty() {
                for line in String::from_utf8_lossy(&bytes).lines() {
                    tracing::info!(target: "callout::plugin", action = %self.action, stream, "{}", line.escape_debug());
                }
            }
            if dropped > 0 {
                tracing::warn!(target: "callout::plugin", action = %self.action, stream,
                    "plugin {stream} truncated: {dropped} bytes over the cap of {} were dropped (limits.output_kb)", out.cap);
            }
        }
        if self.log_dropped > 0 {
            tracing::warn!(target: "callout::plugin", action = %self.action,
                "plugin log truncated: {} bytes over the cap were dropped (limits.output_kb)", self.log_dropped);
        }
        stats
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl log::Host for InstanceState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let mut msg = message.as_str();
        if msg.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            msg = &msg[..end];
        }
        if msg.len() > self.log_budget {
            self.log_dropped += message.len();
            return Ok(());
        }
        self.log_budget -= msg.len();
        let action = &*self.action;
        let text = msg.escape_debug();
        match level {
            log::Level::Trace => tracing::trace!(target: "callout::plugin", action, "{text}"),
            log::Level::Debug => tracing::debug!(target: "callout::plugin", action, "{text}"),
            log::Level::Info => tracing::info!(target: "callout::plugin", action, "{text}"),
            log::Level::Warn => tracing::warn!(target: "callout::plugin", action, "{text}"),
            log::Level::Error => tracing::error!(target: "callout::plugin", action, "{text}"),
        }
        Ok(())
    }
}

impl config::Host for InstanceState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(crate::manifest::config_value(&self.config, &key))
    }
}

/// Memory, table and instance limits of one call.
///
/// Unlike wasmtime's `StoreLimits`, it remembers *why* growth was refused, so the caller is told
/// "memory limit of 64 MiB reached" rather than a bare trap.
pub struct CallLimits {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    /// Set when a memory growth past `memory_bytes` was refused.
    pub memory_exceeded: bool,
}

impl CallLimits {
    fn new(limits: &Limits) -> Self {
        Self {
            memory_bytes: limits.memory_bytes as usize,
            table_elements: limits.table_elements as usize,
            instances: limits.instances as usize,
            memory_exceeded: false,
        }
    }
}

impl wasmtime::ResourceLimiter for CallLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes || maximum.is_some_and(|m| desired > m) {
            self.memory_exceeded = true;
            wasmtime::bail!(
                "memory limit reached: growing to {desired} bytes is over the limit of {} bytes",
                self.memory_bytes
            );
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("memory growth failed"))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements || maximum.is_some_and(|m| desired > m) {
            wasmtime::bail!(
                "table limit reached: growing to {desired} elements is over the limit of {} (limits.table_elements)",
                self.table_elements
            );
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.instances
    }

    fn memories(&self) -> usize {
        self.instances
    }
}

/// A stdout or stderr that keeps the first `cap` bytes and drops (and counts) the rest.
///
/// Writes never fail, so a chatty plugin is not broken by its own logging; it only loses the
/// excess.
#[derive(Clone)]
pub struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
    cap: usize,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

impl CapturedOutput {
    /// Keeps up to `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Arc::default(),
            cap,
        }
    }

    fn push(&self, data: &[u8]) {
        let mut c = self.inner.lock().expect("captured output lock");
        let room = self.cap.saturating_sub(c.bytes.len());
        let keep = room.min(data.len());
        c.bytes.extend_from_slice(&data[..keep]);
        c.dropped += data.len() - keep;
    }

    /// What was kept, and how many bytes were dropped.
    pub fn take(&self) -> (Vec<u8>, usize) {
        let mut c = self.inner.lock().expect("captured output lock");
        (std::mem::take(&mut c.bytes), std::mem::take(&mut c.dropped))
    }

    /// What was kept so far, without taking it.
    pub fn contents(&self) -> (Vec<u8>, usize) {
        let c = self.inner.lock().expect("captured output lock");
        (c.bytes.clone(), c.dropped)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_output_keeps_the_cap_and_counts_the_rest() {
        let out = CapturedOutput::new(10);
        out.push(b"hello ");
        out.push(b"world, and more");
        let (kept, dropped) = out.take();
        assert_eq!(kept, b"hello worl");
        assert_eq!(dropped, 21 - 10);
    }
}
