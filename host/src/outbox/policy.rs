//! When to attempt a failed delivery again, and when to give up.
//!
//! Exponential backoff with "equal jitter": after attempt `n` fails, the nominal delay is
//! `d = min(max_delay, base * 2^(n-1))` and the actual delay is `d/2 + jitter * d/2`, so it lies
//! in `[d/2, d]`. Defaults: base 1 s, cap 1 h, and retries continue until at least 24 h have
//! passed since the delivery was created; then it is dead-lettered.
//!
//! Why equal jitter rather than "full" jitter (`jitter * d`): full jitter spreads retries best,
//! but any single delay can be close to 0, so a delivery can be retried in a tight burst against
//! a back end that is down, and the number of attempts needed to cover 24 h is unbounded. Equal
//! jitter still spreads a herd of deliveries that failed together over half of each interval,
//! while every delay is at least half the nominal one (30 min once at the cap), so the schedule
//! always backs off and a day of retries costs at most ~60 attempts.
//!
//! A `Retry-After` from the receiver is a floor: the delay is at least that long, even past the
//! cap. Nothing is scheduled after the deadline (`created + max_age`): a delay that would pass
//! it is shortened to end on it, so the last attempt happens at the deadline and a delivery is
//! never dead-lettered before `max_age` has passed.

use serde::{Deserialize, Serialize};

/// The default first delay: 1 s.
pub const DEFAULT_BASE_MS: u64 = 1_000;
/// The default cap on one delay: 1 h.
pub const DEFAULT_MAX_DELAY_MS: u64 = 60 * 60 * 1_000;
/// The default time to keep retrying, from creation: 24 h.
pub const DEFAULT_MAX_AGE_MS: u64 = 24 * 60 * 60 * 1_000;

/// The retry schedule (see the module docs). `Default` is base 1 s, cap 1 h, 24 h.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// The nominal delay after the first failure, in ms; it doubles with each further failure.
    /// Default 1 000 (1 s).
    pub base_ms: u64,
    /// The largest nominal delay, in ms (a `Retry-After` may ask for more). Default 3 600 000
    /// (1 h).
    pub max_delay_ms: u64,
    /// How long after its creation a delivery is still retried, in ms; the first failure at or
    /// after that dead-letters it. Default 86 400 000 (24 h).
    pub max_age_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_ms: DEFAULT_BASE_MS,
            max_delay_ms: DEFAULT_MAX_DELAY_MS,
            max_age_ms: DEFAULT_MAX_AGE_MS,
        }
    }
}

impl RetryPolicy {
    /// The nominal delay after attempt `attempt` (from 1; 0 counts as 1) fails:
    /// `min(max_delay_ms, base_ms * 2^(attempt-1))`, without overflow.
    pub fn nominal_delay_ms(&self, attempt: u32) -> u64 {
        let doublings = attempt.max(1) - 1;
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.max_delay_ms)
    }

    /// The jittered delay after attempt `attempt` fails: `d/2 + jitter * d/2` for the nominal
    /// delay `d`. `jitter` is taken in `[0, 1]` (outside values and NaN are clamped; NaN as 0):
    /// 0 gives `d/2` (rounded up), 1 gives `d`.
    pub fn delay_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let d = self.nominal_delay_ms(attempt);
        let floor = d - d / 2;
        let spread = d / 2;
        let j = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        // `spread` is at most 2^63 and j <= 1, so the product is in 0..=spread (`as` would
        // saturate anyway).
        let extra = ((spread as f64) * j) as u64;
        floor.saturating_add(extra.min(spread))
    }

    /// When to attempt again after attempt `attempt` of a delivery created at `created_at_ms`
    /// failed at `now_ms`, or `None` to dead-letter it.
    ///
    /// - `None` once `now_ms >= created_at_ms + max_age_ms`.
    /// - Otherwise `now_ms + max(delay_ms(attempt, jitter), retry_after_ms)`, but no later than
    ///   the deadline `created_at_ms + max_age_ms`.
    ///
    /// `retry_after_ms` is the receiver's `Retry-After`, converted to a delay in ms. `jitter`
    /// should be uniform in `[0, 1)` ([`random_jitter`]); passing it in keeps this function
    /// deterministic for tests.
    pub fn next(
        &self,
        attempt: u32,
        created_at_ms: u64,
        now_ms: u64,
        retry_after_ms: Option<u64>,
        jitter: f64,
    ) -> Option<u64> {
        let deadline = created_at_ms.saturating_add(self.max_age_ms);
        if now_ms >= deadline {
            return None;
        }
        let delay = self
            .delay_ms(attempt, jitter)
            .max(retry_after_ms.unwrap_or(0));
        Some(now_ms.saturating_add(delay).min(deadline))
    }
}

/// A uniform random jitter in `[0, 1)` for [`RetryPolicy::next`], from the OS random source
/// (0.5 if that fails: the middle of the spread, still a valid schedule).
pub fn random_jitter() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    // The top 53 bits, scaled to [0, 1): exactly representable as f64.
    let x = (u64::from_le_bytes(b) >> 11) as f64;
    x / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 60 * 60 * 1000;

    /// Every attempt fails at once (0 ms attempts); returns (attempt times, dead-letter time).
    fn simulate(
        p: &RetryPolicy,
        created: u64,
        jitter: f64,
        retry_after: Option<u64>,
    ) -> (Vec<u64>, u64) {
        let mut now = created;
        let mut times = vec![now];
        for attempt in 1.. {
            match p.next(attempt, created, now, retry_after, jitter) {
                Some(at) => {
                    assert!(at > now, "attempt {attempt}: next {at} not after {now}");
                    now = at;
                    times.push(now);
                }
                None => return (times, now),
            }
            assert!(attempt < 10_000, "the schedule never ends");
        }
        unreachable!()
    }

    #[test]
    fn default_schedule_spans_at_least_a_day_with_capped_delays() {
        let p = RetryPolicy::default();
        let created = 1_700_000_000_000;
        for jitter in [0.0, 0.999_999, 1.0] {
            let (times, dead_at) = simulate(&p, created, jitter, None);
            assert!(
                dead_at >= created + 24 * H,
                "jitter {jitter}: dead at +{}",
                dead_at - created
            );
            // The last attempt is at the deadline, never after it.
            assert_eq!(*times.last().unwrap(), created + 24 * H, "jitter {jitter}");
            for (i, w) in times.windows(2).enumerate() {
                let delay = w[1] - w[0];
                assert!(
                    delay <= H,
                    "jitter {jitter}, delay {i}: {delay} ms over the cap"
                );
                // Equal jitter: never less than half the nominal delay (except the last one,
                // shortened to end on the deadline).
                if w[1] != created + 24 * H {
                    let n = u32::try_from(i + 1).unwrap();
                    assert!(delay >= p.nominal_delay_ms(n) / 2, "delay {i}: {delay}");
                }
            }
            // Backoff: 1 s, 2 s, 4 s ... up to the cap (then 30 to 60 min apart).
            let attempts = times.len();
            assert!(
                (25..=60).contains(&attempts),
                "jitter {jitter}: {attempts} attempts"
            );
        }
        // jitter 0 and 1 are the bounds of the spread.
        assert_eq!(p.delay_ms(1, 0.0), 500);
        assert_eq!(p.delay_ms(1, 1.0), 1000);
        assert_eq!(p.delay_ms(2, 0.0), 1000);
        assert_eq!(p.delay_ms(2, 1.0), 2000);
        assert_eq!(p.delay_ms(3, 0.5), 3000);
        assert_eq!(p.delay_ms(13, 1.0), H);
        assert_eq!(p.delay_ms(13, 0.0), H / 2);
    }

    #[test]
    fn nominal_delays_double_up_to_the_cap_without_overflow() {
        let p = RetryPolicy::default();
        let got: Vec<u64> = (0..=14).map(|n| p.nominal_delay_ms(n)).collect();
        assert_eq!(
            got,
            [
                1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600
            ]
            .map(|s| s * 1000)
        );
        for n in [63, 64, 65, 1000, u32::MAX] {
            assert_eq!(p.nominal_delay_ms(n), H);
            assert!(p.delay_ms(n, 1.0) <= H);
        }
        let huge = RetryPolicy {
            base_ms: u64::MAX,
            max_delay_ms: u64::MAX,
            max_age_ms: u64::MAX,
        };
        assert_eq!(huge.nominal_delay_ms(40), u64::MAX);
        assert_eq!(huge.delay_ms(40, 1.0), u64::MAX);
        assert_eq!(huge.next(40, 5, 10, None, 1.0), Some(u64::MAX));
    }

    #[test]
    fn retry_after_is_a_floor_that_may_pass_the_cap_but_not_the_deadline() {
        let p = RetryPolicy::default();
        let created = 1_000_000;
        // Shorter than the backoff: the backoff wins.
        assert_eq!(
            p.next(5, created, created, Some(10), 1.0),
            Some(created + 16_000)
        );
        // Longer: at least the Retry-After, even past the 1 h cap.
        assert_eq!(
            p.next(1, created, created, Some(2 * H), 0.0),
            Some(created + 2 * H)
        );
        // But never after the deadline: one last attempt on it.
        let late = created + 23 * H;
        assert_eq!(
            p.next(1, created, late, Some(5 * H), 0.0),
            Some(created + 24 * H)
        );
        // A whole schedule of 90 min Retry-After: every delay honours it, dead after 24 h.
        let (times, dead_at) = simulate(&p, created, 0.3, Some(90 * 60 * 1000));
        assert!(dead_at >= created + 24 * H);
        for w in times.windows(2) {
            assert!(w[1] - w[0] >= 90 * 60 * 1000 || w[1] == created + 24 * H);
        }
    }

    #[test]
    fn past_the_deadline_it_is_dead() {
        let p = RetryPolicy::default();
        assert_eq!(p.next(3, 0, 24 * H, None, 0.5), None);
        assert_eq!(p.next(3, 0, 24 * H + 1, Some(1), 0.5), None);
        assert_eq!(p.next(3, 0, 24 * H - 1, None, 0.5), Some(24 * H));
        // A clock behind the creation time still retries.
        assert_eq!(p.next(1, 10_000, 5_000, None, 1.0), Some(6_000));
    }

    #[test]
    fn custom_config_is_used() {
        let p = RetryPolicy {
            base_ms: 100,
            max_delay_ms: 250,
            max_age_ms: 1_000,
        };
        assert_eq!(p.next(1, 0, 0, None, 1.0), Some(100));
        assert_eq!(p.next(2, 0, 100, None, 1.0), Some(300));
        assert_eq!(p.next(3, 0, 300, None, 1.0), Some(550));
        assert_eq!(p.next(3, 0, 900, None, 1.0), Some(1_000));
        assert_eq!(p.next(9, 0, 1_000, None, 1.0), None);
        let (_, dead) = simulate(&p, 0, 0.0, None);
        assert_eq!(dead, 1_000);
        // From TOML/JSON with defaults for missing fields.
        let q: RetryPolicy = serde_json::from_str(r#"{"max_age_ms": 5}"#).unwrap();
        assert_eq!(q.max_age_ms, 5);
        assert_eq!(q.base_ms, DEFAULT_BASE_MS);
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(4, -3.0), 4_000);
        assert_eq!(p.delay_ms(4, f64::NAN), 4_000);
        assert_eq!(p.delay_ms(4, 7.0), 8_000);
        assert_eq!(p.delay_ms(4, f64::INFINITY), 8_000);
        // Odd nominal delays: the floor rounds up, the top is exact.
        let odd = RetryPolicy {
            base_ms: 3,
            ..RetryPolicy::default()
        };
        assert_eq!(odd.delay_ms(1, 0.0), 2);
        assert_eq!(odd.delay_ms(1, 1.0), 3);
    }

    #[test]
    fn random_jitter_is_in_range_and_varies() {
        let xs: Vec<f64> = (0..200).map(|_| random_jitter()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.iter().any(|&x| x < 0.5) && xs.iter().any(|&x| x >= 0.5));
    }
}
