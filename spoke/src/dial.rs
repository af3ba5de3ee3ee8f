//! Which hub address the agent dials next, and how long it waits first. A hub may
//! advertise several addresses (its replicas); the agent keeps to the one that last
//! worked, fails over to the next at once when a dial fails, and backs off (jittered,
//! exponential) only after every address failed in a row, or after a stream ended.
//!
//! Pure but for the backoff's jitter: the caller reports what happened and sleeps for
//! the delay it gets back.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::backoff::Backoff;

/// A stream that lasted this long resets the backoff.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Dialer {
    addrs: Vec<String>,
    /// The address dialled next.
    current: usize,
    /// Dials that failed in a row since the last stream opened.
    failed_in_a_row: usize,
    backoff: Backoff,
}

impl Dialer {
    /// Dials `addrs` (not empty), starting at one chosen by `cluster`'s name, so the
    /// clusters of a fleet spread over the replicas, and each always starts at the same.
    pub fn new(addrs: Vec<String>, cluster: &str, backoff: Backoff) -> Self {
        let start = Sha256::digest(cluster.as_bytes())[0] as usize % addrs.len().max(1);
        Dialer {
            addrs,
            current: start,
            failed_in_a_row: 0,
            backoff,
        }
    }

    /// The address to dial now.
    pub fn current(&self) -> &str {
        self.addrs.get(self.current).map_or("", String::as_str)
    }

    /// The dial of `current` failed: the next address is tried at once, unless every
    /// address has just failed, in which case the backoff delay comes first.
    pub fn unreachable(&mut self) -> Duration {
        self.failed_in_a_row += 1;
        self.current = (self.current + 1) % self.addrs.len().max(1);
        if self.failed_in_a_row.is_multiple_of(self.addrs.len().max(1)) {
            self.backoff.next_delay()
        } else {
            Duration::ZERO
        }
    }

    /// A stream opened on `current`: it stays the address to dial first.
    pub fn connected(&mut self) {
        self.failed_in_a_row = 0;
    }

    /// The stream ended after lasting `lasted`: the delay before dialling `current`
    /// again. A stream that lasted [`STABLE_CONNECTION`] resets the backoff.
    pub fn ended(&mut self, lasted: Duration) -> Duration {
        if lasted >= STABLE_CONNECTION {
            self.backoff.reset();
        }
        self.backoff.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialer(addrs: &[&str]) -> Dialer {
        let mut d = Dialer::new(
            addrs.iter().map(ToString::to_string).collect(),
            "edge-1",
            Backoff::new(Duration::from_secs(1), Duration::from_secs(8)),
        );
        d.current = 0;
        d
    }

    #[test]
    fn a_failed_dial_moves_to_the_next_address_at_once_and_a_full_round_backs_off() {
        let mut d = dialer(&["a:1", "b:1", "c:1"]);
        assert_eq!(d.current(), "a:1");
        assert_eq!(d.unreachable(), Duration::ZERO);
        assert_eq!(d.current(), "b:1");
        assert_eq!(d.unreachable(), Duration::ZERO);
        assert_eq!(d.current(), "c:1");
        let first = d.unreachable();
        assert!(first >= Duration::from_millis(500), "{first:?}");
        assert_eq!(d.current(), "a:1", "round and round");
        // The next full round waits longer (the ceiling doubled).
        assert_eq!(d.unreachable(), Duration::ZERO);
        assert_eq!(d.unreachable(), Duration::ZERO);
        assert!(d.unreachable() >= Duration::from_secs(1));
    }

    #[test]
    fn the_address_that_worked_is_kept_and_a_stable_stream_resets_the_backoff() {
        let mut d = dialer(&["a:1", "b:1"]);
        let _ = d.unreachable();
        d.connected();
        assert_eq!(d.current(), "b:1");
        assert!(d.ended(Duration::ZERO) <= Duration::from_secs(1));
        assert_eq!(
            d.current(),
            "b:1",
            "a broken stream redials the same address"
        );
        assert!(d.ended(Duration::ZERO) >= Duration::from_secs(1));
        assert!(d.ended(STABLE_CONNECTION) <= Duration::from_secs(1));
        // Only the failures since the last stream count towards a full round.
        assert_eq!(d.unreachable(), Duration::ZERO);
        assert_eq!(d.current(), "a:1");
    }

    #[test]
    fn one_address_backs_off_after_each_failure_and_clusters_start_spread() {
        let mut d = dialer(&["a:1"]);
        assert!(d.unreachable() >= Duration::from_millis(500));
        assert_eq!(d.current(), "a:1");
        let addrs: Vec<String> = (0..4).map(|i| format!("h{i}:1")).collect();
        let starts: std::collections::BTreeSet<String> = (0..64)
            .map(|i| {
                let d = Dialer::new(
                    addrs.clone(),
                    &format!("cluster-{i}"),
                    Backoff::new(Duration::from_secs(1), Duration::from_secs(1)),
                );
                d.current().to_string()
            })
            .collect();
        assert!(starts.len() > 1, "{starts:?}");
    }
}
