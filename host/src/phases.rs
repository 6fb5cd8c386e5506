//! Where a call's time goes, phase by phase, for benchmarks.
//!
//! The timers are compiled in only with the `phase-timers` feature, so a normal build pays
//! nothing for them: [`Timer`] is then zero-sized and [`Timer::stop`] empty. With it,
//! `cargo bench -p callout --bench http_overhead --features phase-timers -- 2000 order-status`
//! prints the mean time of each phase per call next to the figures (docs/performance.md).
//! Sums are process-wide atomics, so concurrent calls add up; read them after sequential calls.

use std::time::Duration;

/// A timed phase of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A fresh instance from the `InstancePre` (zero when a reused one is taken).
    Instantiate,
    /// The guest's `invoke`, its requests included.
    GuestInvoke,
    /// `send`: the policy checks of a request (URL, grants, headers, secrets).
    Prepare,
    /// `send`: building the reqwest request (secrets filled, signing) before it is sent.
    BuildRequest,
    /// `send`: from sending the request to the upstream's response head.
    Upstream,
    /// `send`: the response head checked and its headers copied and masked.
    ResponseHead,
    /// `send`: the response body read and masked.
    ResponseBody,
    /// `send`: the audit event and the call's records, after the response.
    AfterResponse,
    /// After the guest returned: its output flushed, the report built, and the store kept,
    /// handed to the background thread or dropped.
    Report,
}

impl Phase {
    /// Every phase, in the order of a call.
    pub const ALL: [Phase; 9] = [
        Phase::Instantiate,
        Phase::GuestInvoke,
        Phase::Prepare,
        Phase::BuildRequest,
        Phase::Upstream,
        Phase::ResponseHead,
        Phase::ResponseBody,
        Phase::AfterResponse,
        Phase::Report,
    ];

    /// A short name, e.g. `send.upstream`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Instantiate => "instantiate",
            Phase::GuestInvoke => "guest invoke (all below included)",
            Phase::Prepare => "  send.prepare (policy checks)",
            Phase::BuildRequest => "  send.build-request",
            Phase::Upstream => "  send.upstream (to response head)",
            Phase::ResponseHead => "  send.response-head",
            Phase::ResponseBody => "  send.response-body",
            Phase::AfterResponse => "  send.after-response (audit, records)",
            Phase::Report => "report",
        }
    }
}

#[cfg(feature = "phase-timers")]
static SUMS: [std::sync::atomic::AtomicU64; 9] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 9];

/// A started phase timer; zero-sized without the `phase-timers` feature.
#[derive(Debug, Clone, Copy)]
pub struct Timer(#[cfg(feature = "phase-timers")] std::time::Instant);

impl Timer {
    /// Starts timing.
    #[inline(always)]
    pub fn start() -> Self {
        Timer(
            #[cfg(feature = "phase-timers")]
            std::time::Instant::now(),
        )
    }

    /// Adds the time since [`Timer::start`] to `phase`.
    #[inline(always)]
    pub fn stop(self, phase: Phase) {
        #[cfg(feature = "phase-timers")]
        SUMS[phase as usize].fetch_add(
            self.0.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        #[cfg(not(feature = "phase-timers"))]
        let _ = phase;
    }
}

/// Each phase's mean over `calls` calls since the last take, and resets the sums. Empty without
/// the `phase-timers` feature.
pub fn take_means(calls: u64) -> Vec<(Phase, Duration)> {
    #[cfg(feature = "phase-timers")]
    {
        Phase::ALL
            .iter()
            .map(|&p| {
                let sum = SUMS[p as usize].swap(0, std::sync::atomic::Ordering::Relaxed);
                (p, Duration::from_nanos(sum / calls.max(1)))
            })
            .collect()
    }
    #[cfg(not(feature = "phase-timers"))]
    {
        let _ = calls;
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "phase-timers"))]
    #[test]
    fn without_the_feature_timers_cost_nothing_and_report_nothing() {
        assert_eq!(std::mem::size_of::<Timer>(), 0);
        Timer::start().stop(Phase::Upstream);
        assert!(take_means(1).is_empty());
    }

    #[cfg(feature = "phase-timers")]
    #[test]
    fn with_the_feature_a_stopped_timer_adds_to_its_phase_and_take_resets() {
        let _ = take_means(1);
        let t = Timer::start();
        std::thread::sleep(Duration::from_millis(2));
        t.stop(Phase::Report);
        let means = take_means(1);
        let report = means.iter().find(|(p, _)| *p == Phase::Report).unwrap().1;
        assert!(report >= Duration::from_millis(2), "{report:?}");
        assert_eq!(means.len(), Phase::ALL.len());
        let again = take_means(1);
        assert!(again.iter().all(|(_, d)| d.is_zero()), "{again:?}");
    }
}
