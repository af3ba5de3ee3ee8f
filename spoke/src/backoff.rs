//! Jittered exponential backoff: for reconnects, so a hub restart does not bring every
//! spoke back in the same instant, and per failing bundle ([`BundleRetries`]), so a bundle
//! whose apply fails is retried after a growing delay instead of at every enforcement
//! round. Pure but for the random jitter: callers pass the time in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The upper bound of the next delay: base * 2^attempt, capped at max.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A random delay in [ceiling/2, ceiling] ("equal jitter": never less than half the
    /// ceiling, so a retry storm cannot come back early), then the ceiling doubles.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// When each failing bundle may be applied again. A bundle's delay starts at `base` and
/// doubles (jittered) up to `max` while the same deployment keeps failing; a success, a
/// new deployment or an unassign starts it afresh. Owned by the agent's enforcement.
#[derive(Debug)]
pub struct BundleRetries {
    base: Duration,
    max: Duration,
    /// Bundle → its failing deployment, backoff and when it is due again.
    failing: HashMap<String, Retry>,
}

#[derive(Debug)]
struct Retry {
    deployment_id: String,
    backoff: Backoff,
    due: Instant,
    /// `take_due` handed it out since it last failed: the agent is not woken for it
    /// again (if the retry could not run, the next tick tries it).
    taken: bool,
}

impl BundleRetries {
    pub fn new(base: Duration, max: Duration) -> Self {
        BundleRetries {
            base,
            max,
            failing: HashMap::new(),
        }
    }

    /// Records that applying `deployment_id` of `bundle` failed at `now`; returns when it
    /// may be tried again.
    pub fn failed(&mut self, bundle: &str, deployment_id: &str, now: Instant) -> Instant {
        let (base, max) = (self.base, self.max);
        let retry = self
            .failing
            .entry(bundle.to_string())
            .or_insert_with(|| Retry {
                deployment_id: deployment_id.to_string(),
                backoff: Backoff::new(base, max),
                due: now,
                taken: false,
            });
        if retry.deployment_id != deployment_id {
            retry.deployment_id = deployment_id.to_string();
            retry.backoff.reset();
        }
        retry.due = now + retry.backoff.next_delay();
        retry.taken = false;
        retry.due
    }

    /// Whether a failed `deployment_id` of `bundle` may be applied again at `now`: its
    /// delay has passed, or no failure of that deployment is recorded here (the first
    /// round after a restart tries at once).
    pub fn due(&self, bundle: &str, deployment_id: &str, now: Instant) -> bool {
        self.failing
            .get(bundle)
            .is_none_or(|r| r.deployment_id != deployment_id || r.due <= now)
    }

    /// The bundle applied, or is gone: its next failure starts from `base` again.
    pub fn forget(&mut self, bundle: &str) {
        self.failing.remove(bundle);
    }

    /// The earliest time a failing bundle is due and not yet taken, so the agent wakes
    /// for it.
    pub fn next_due(&self) -> Option<Instant> {
        self.failing
            .values()
            .filter(|r| !r.taken)
            .map(|r| r.due)
            .min()
    }

    /// The bundles due at `now` that were not taken yet, marked taken: the agent wakes
    /// once per failure, even if a retry cannot run (its content is gone, say).
    pub fn take_due(&mut self, now: Instant) -> std::collections::BTreeSet<String> {
        self.failing
            .iter_mut()
            .filter(|(_, r)| r.due <= now && !r.taken)
            .map(|(b, r)| {
                r.taken = true;
                b.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_bundle_waits_longer_after_each_failure_up_to_the_cap() {
        let mut r = BundleRetries::new(Duration::from_secs(1), Duration::from_secs(300));
        let t0 = Instant::now();
        let mut now = t0;
        let mut last_wait = Duration::ZERO;
        for attempt in 0..12u32 {
            let due = r.failed("b", "d-1", now);
            let wait = due - now;
            let ceiling = Duration::from_secs(1u64 << attempt.min(9)).min(Duration::from_secs(300));
            assert!(
                wait >= ceiling / 2 && wait <= ceiling + Duration::from_millis(1),
                "attempt {attempt}: {wait:?} vs {ceiling:?}"
            );
            assert!(!r.due("b", "d-1", now), "not retried at once");
            assert!(r.due("b", "d-1", due));
            assert_eq!(r.next_due(), Some(due));
            assert!(r.take_due(now).is_empty());
            assert_eq!(r.take_due(due).into_iter().collect::<Vec<_>>(), ["b"]);
            // Taken once: no second wake-up for the same failure, but still due.
            assert!(r.take_due(due).is_empty());
            assert_eq!(r.next_due(), None);
            assert!(r.due("b", "d-1", due));
            last_wait = wait;
            now = due;
        }
        assert!(last_wait >= Duration::from_secs(150), "{last_wait:?}");
    }

    #[test]
    fn success_a_new_deployment_or_a_restart_start_afresh() {
        let mut r = BundleRetries::new(Duration::from_secs(1), Duration::from_secs(300));
        let now = Instant::now();
        for _ in 0..8 {
            r.failed("b", "d-1", now);
        }
        // A new deployment is not held back by the old one's failures...
        assert!(r.due("b", "d-2", now));
        // ...and its own first failure waits the base delay again.
        let due = r.failed("b", "d-2", now);
        assert!(due - now <= Duration::from_secs(1) + Duration::from_millis(1));
        r.forget("b");
        assert!(r.due("b", "d-2", now));
        assert_eq!(r.next_due(), None);
        // Never seen failing (the first round after a restart): due.
        assert!(r.due("other", "d-1", now));
    }

    #[test]
    fn delays_grow_stay_capped_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut last_ceiling = Duration::ZERO;
        for _ in 0..10 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling + Duration::from_millis(1),
                "{d:?} vs {ceiling:?}"
            );
            assert!(ceiling >= last_ceiling);
            last_ceiling = ceiling;
        }
        assert_eq!(last_ceiling, Duration::from_secs(2));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }
}
