//! The host's Prometheus metrics: action calls, their latency and outcome class, where each
//! call's instance came from, outbound requests by policy decision, and the server's HTTP
//! requests.
//!
//! One [`Metrics`] lives in each [`crate::Runtime`]; every call and every outbound attempt
//! updates it, and `GET /metrics` of `callout serve` renders it in the Prometheus text format.
//! The series a call updates every time (its instance's source, its latency, an `ok` outcome,
//! an allowed request) are resolved once per action ([`ActionMetrics`]), so the call pays a few
//! atomic operations and no label lookup or allocation; rarer outcomes and decisions look
//! their series up by label.
//!
//! Label values come from the host (action names, trigger and class names, decisions), never
//! from users, so the number of series stays bounded by the number of actions.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::call::Trigger;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    action: String,
    trigger: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    action: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundLabels {
    action: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    route: String,
    status: String,
}

type LatencyFamily = Family<ActionLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to ~6.5 s in 17 doubling buckets: a no-op call, a loopback GET and a slow
    // upstream all land in distinct buckets.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// The `callout_action_calls_total` series of one action, trigger and outcome.
fn call_counter(
    calls: &Family<CallLabels, Counter>,
    action: &str,
    trigger: &str,
    outcome: &str,
) -> Counter {
    calls
        .get_or_create(&CallLabels {
            action: action.to_string(),
            trigger: trigger.to_string(),
            outcome: outcome.to_string(),
        })
        .clone()
}

/// The `callout_action_call_duration_seconds` histogram of one action.
fn latency_of(latency: &LatencyFamily, action: &str) -> Histogram {
    latency
        .get_or_create(&ActionLabel {
            action: action.to_string(),
        })
        .clone()
}

/// Where one action's calls got their instances: `callout_action_instances_total{action,
/// source}`. Many `fresh` beside `spare` means the spares stand aside (every core busy, the
/// pool half full, or `[pool] prewarm = false`), so calls wait for their instantiation.
#[derive(Debug, Clone)]
pub struct InstanceCounters {
    /// A spare instance, made in the background before the call.
    pub spare: Counter,
    /// The conversation's instance, kept from its previous call (`[limits] reuse`).
    pub reused: Counter,
    /// Instantiated on the call's path.
    pub fresh: Counter,
}

/// One action's series, resolved when it is loaded ([`Metrics::action_metrics`]): what each
/// call of the action updates without a label lookup. The `ok` counters, the latency and the
/// allowed-request counter are made on first use, so `/metrics` shows the same series as
/// before a call.
#[derive(Debug, Clone)]
pub struct ActionMetrics {
    /// Where the action's calls got their instances (every series exists from the load on).
    pub instances: InstanceCounters,
    action: String,
    /// By [`Trigger`]: tool-call, on-prompt, chat-end, test.
    ok: [std::sync::OnceLock<Counter>; 4],
    latency: std::sync::OnceLock<Histogram>,
    allowed: std::sync::OnceLock<Counter>,
    calls: Family<CallLabels, Counter>,
    latency_family: LatencyFamily,
    outbound: Family<OutboundLabels, Counter>,
}

impl ActionMetrics {
    /// Counts one finished call of the action: `outcome` is `ok` or the failure's class.
    /// The same series as [`Metrics::record_call`].
    pub fn record_call(&self, trigger: Trigger, outcome: &str, elapsed_us: u64) {
        if outcome == "ok" {
            let slot = match trigger {
                Trigger::ToolCall => 0,
                Trigger::OnPrompt => 1,
                Trigger::ChatEnd => 2,
                Trigger::Test => 3,
            };
            self.ok[slot]
                .get_or_init(|| call_counter(&self.calls, &self.action, trigger.as_str(), "ok"))
                .inc();
        } else {
            call_counter(&self.calls, &self.action, trigger.as_str(), outcome).inc();
        }
        self.latency
            .get_or_init(|| latency_of(&self.latency_family, &self.action))
            .observe(elapsed_us as f64 / 1e6);
    }

    /// Counts one outbound attempt of the action by its policy decision
    /// (`callout_outbound_requests_total{action,decision}`).
    pub fn record_outbound(&self, decision: &str) {
        let lookup = || {
            self.outbound
                .get_or_create(&OutboundLabels {
                    action: self.action.clone(),
                    decision: decision.to_string(),
                })
                .clone()
        };
        if decision == "allowed" {
            self.allowed.get_or_init(lookup).inc();
        } else {
            lookup().inc();
        }
    }
}

/// The counters and histograms of one host process.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: LatencyFamily,
    instances: Family<InstanceLabels, Counter>,
    outbound: Family<OutboundLabels, Counter>,
    api: Family<ApiLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("callout");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "action_calls",
            "Action calls by action, trigger and outcome class (ok, needs-input, not-found, upstream, ...)",
            calls.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "action_call_duration_seconds",
            "Wall time of action calls, retries included",
            latency.clone(),
        );
        let instances = Family::<InstanceLabels, Counter>::default();
        registry.register(
            "action_instances",
            "Where each call's instance came from: spare (made in the background before the call), \
             reused (its conversation's, [limits] reuse), fresh (instantiated on the call's path)",
            instances.clone(),
        );
        let outbound = Family::<OutboundLabels, Counter>::default();
        registry.register(
            "outbound_requests",
            "Outbound HTTP requests of actions by policy decision (allowed, denied, dry-run)",
            outbound.clone(),
        );
        let api = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests to the server by route and HTTP status",
            api.clone(),
        );
        Self {
            registry,
            calls,
            latency,
            instances,
            outbound,
            api,
        }
    }
}

impl Metrics {
    /// Counts one finished action call: `outcome` is `ok` or the failure's class. For callers
    /// without the action's [`ActionMetrics`] (a delivery whose action may be gone); calls of
    /// a loaded action go through [`ActionMetrics::record_call`], which skips the lookup.
    pub fn record_call(&self, action: &str, trigger: &str, outcome: &str, elapsed_us: u64) {
        call_counter(&self.calls, action, trigger, outcome).inc();
        latency_of(&self.latency, action).observe(elapsed_us as f64 / 1e6);
    }

    /// The counters of where `action`'s calls got their instances, made once at load so that
    /// counting a call is one atomic increment (no label lookup on the call's path). All three
    /// series exist from the load on, at 0.
    fn instance_counters(&self, action: &str) -> InstanceCounters {
        let counter = |source: &str| {
            self.instances
                .get_or_create(&InstanceLabels {
                    action: action.to_string(),
                    source: source.to_string(),
                })
                .clone()
        };
        InstanceCounters {
            spare: counter("spare"),
            reused: counter("reused"),
            fresh: counter("fresh"),
        }
    }

    /// The series `action`'s calls update, resolved once (at load) instead of on every call.
    pub fn action_metrics(&self, action: &str) -> ActionMetrics {
        ActionMetrics {
            instances: self.instance_counters(action),
            action: action.to_string(),
            ok: Default::default(),
            latency: std::sync::OnceLock::new(),
            allowed: std::sync::OnceLock::new(),
            calls: self.calls.clone(),
            latency_family: self.latency.clone(),
            outbound: self.outbound.clone(),
        }
    }

    /// Counts one request to the server (`route` is the route template, never the raw path).
    pub fn record_api(&self, route: &str, status: u16) {
        self.api
            .get_or_create(&ApiLabels {
                route: route.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Everything, in the Prometheus text exposition format (OpenMetrics flavour).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_outbound_and_latency_show_up_in_the_text_format() {
        let m = Metrics::default();
        m.record_call("order-status", "tool-call", "ok", 1500);
        m.record_call("order-status", "tool-call", "ok", 2500);
        m.record_call("order-status", "on-prompt", "not-found", 900);
        let instances = m.instance_counters("order-status");
        instances.spare.inc();
        instances.spare.inc();
        instances.fresh.inc();
        m.record_api("/v1/actions", 200);
        // The same series through an action's resolved handles.
        let cached = m.action_metrics("order-status");
        cached.record_call(Trigger::ToolCall, "ok", 1000);
        cached.record_call(Trigger::ChatEnd, "upstream", 1000);
        cached.record_outbound("allowed");
        cached.record_outbound("allowed");
        cached.record_outbound("denied");
        let text = m.render();
        for needle in [
            r#"callout_action_calls_total{action="order-status",trigger="tool-call",outcome="ok"} 3"#,
            r#"outcome="not-found"} 1"#,
            r#"callout_action_calls_total{action="order-status",trigger="chat-end",outcome="upstream"} 1"#,
            r#"callout_action_call_duration_seconds_count{action="order-status"} 5"#,
            r#"callout_outbound_requests_total{action="order-status",decision="denied"} 1"#,
            r#"callout_outbound_requests_total{action="order-status",decision="allowed"} 2"#,
            r#"callout_action_instances_total{action="order-status",source="spare"} 2"#,
            r#"callout_action_instances_total{action="order-status",source="fresh"} 1"#,
            // Every series exists from the load on.
            r#"callout_action_instances_total{action="order-status",source="reused"} 0"#,
            r#"callout_api_requests_total{route="/v1/actions",status="200"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
