//! Hub replicas on etcd (issue 20): several `flotilla-hub run --store etcd://…` processes
//! share one fleet. This module owns who leads and how the others keep up.
//!
//! - `election`: each replica holds an etcd lease (`--leader-lease`, kept alive at a
//!   third of its TTL). The replica whose `Txn` creates `/flotilla/ha/leader` (only if
//!   absent, bound to its lease) leads: it alone runs the source pollers, rendering and
//!   the reconcile, which publishes assignments. The others watch that key and campaign
//!   when it goes (the leader stopped and revoked its lease, or its lease expired). A
//!   leader that cannot renew its lease within the TTL stops its leader-only work at once
//!   ([`Leadership::follow`] cancels the token those tasks run under), and its store
//!   writes of assignments carry a fence on the leader key's revision
//!   (`Store::set_fence`), so a deposed leader never overwrites the new one.
//!   Each replica also publishes which spokes it serves (`/flotilla/ha/presence/…`, bound
//!   to its lease, so a dead replica's spokes stop counting as connected when its lease
//!   expires).
//! - `mirror`: every replica watches the tables from the revision of the snapshot it
//!   started from and applies what other replicas wrote to its in-memory `Fleet`:
//!   assignments and their content (waking its own spokes' sessions), clusters, tokens,
//!   sources, groups, paused rollouts, kept bundles, statuses (so the leader's rollouts
//!   and dependsOn see every replica's reports), presence. A watch that lost its history
//!   (`Compacted`, `Lagged`) reloads its table whole.
//!
//! Every replica serves `Sync` streams, registration and the Admin API. An admin change
//! is written to the store by whichever replica received it; the others, the leader
//! included, pick it up by watch (no forwarding, no `Unavailable`).
//!
//! **Architecture Invariant:** with the redb store there is no election: the hub always
//! leads ([`Leadership::always`]) and nothing here runs.

mod election;
pub mod mirror;

pub use election::{Replica, run_election};

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// This replica's part, as the election last decided.
#[derive(Debug, Clone)]
pub enum Role {
    /// Leads; leader-only work runs under this token, cancelled when the lead is lost.
    Leader(CancellationToken),
    /// Follows `leader` (its `--listen` address), when one is known.
    Follower { leader: Option<String> },
}

/// Shared handle to this replica's [`Role`]; the election writes it, leader-only tasks
/// (source pollers, the reconciler) wait on it.
#[derive(Clone)]
pub struct Leadership {
    tx: Arc<watch::Sender<Role>>,
}

impl Leadership {
    /// A hub that is alone (redb): it leads for good.
    pub fn always() -> Leadership {
        Leadership {
            tx: Arc::new(watch::Sender::new(Role::Leader(CancellationToken::new()))),
        }
    }

    /// Stops leading (if it did): the leader-only work is cancelled now.
    pub fn follow(&self, leader: Option<String>) {
        let old = self.tx.send_replace(Role::Follower { leader });
        if let Role::Leader(term) = old {
            term.cancel();
        }
    }

    /// Starts leading; returns the token of this term.
    pub fn lead(&self) -> CancellationToken {
        let term = CancellationToken::new();
        let old = self.tx.send_replace(Role::Leader(term.clone()));
        if let Role::Leader(previous) = old {
            previous.cancel();
        }
        term
    }

    pub fn is_leader(&self) -> bool {
        matches!(&*self.tx.borrow(), Role::Leader(_))
    }

    /// The leader's address, if this replica follows a known one.
    pub fn leader(&self) -> Option<String> {
        match &*self.tx.borrow() {
            Role::Follower { leader } => leader.clone(),
            Role::Leader(_) => None,
        }
    }

    /// Waits until this replica leads; the token is cancelled when that term ends.
    pub async fn leading(&self) -> CancellationToken {
        let mut rx = self.tx.subscribe();
        loop {
            if let Role::Leader(term) = &*rx.borrow_and_update() {
                return term.clone();
            }
            // The sender lives in the fleet: it outlives every waiter.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Runs `work()` for each term this replica leads, dropping it (and so stopping it)
/// when the term ends. Returns what `work` returns if it ends by itself. On redb the hub
/// always leads, so this is `work().await`.
pub async fn each_term<F: Future>(
    leadership: &Leadership,
    mut work: impl FnMut() -> F,
) -> F::Output {
    loop {
        let term = leadership.leading().await;
        tokio::select! {
            biased;
            () = term.cancelled() => {}
            out = work() => return out,
        }
    }
}

/// Runs `job` when a term starts and then every `period` while it lasts. For the
/// periodic jobs that prune records every replica shares (history sweeper, audit
/// retention).
pub async fn while_leading(leadership: &Leadership, period: std::time::Duration, job: impl Fn()) {
    let job = &job;
    each_term(leadership, || async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            job();
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn periodic_leader_work_runs_when_a_term_starts_and_not_while_following() {
        let l = Leadership::always();
        l.follow(None);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let job = tokio::spawn({
            let l = l.clone();
            async move {
                while_leading(&l, std::time::Duration::from_secs(3600), || {
                    let _ = tx.send(());
                })
                .await;
            }
        });
        // The job's task runs up to its wait for a term.
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "a follower does not run it");
        l.lead();
        rx.recv().await.expect("runs when the term starts");
        l.follow(None);
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "nothing more while following");
        // An hour has not passed: a run now can only come from the new term's start.
        l.lead();
        rx.recv().await.expect("runs again in the next term");
        job.abort();
    }

    /// Sends on drop: the work of a term was stopped.
    struct Stopped(tokio::sync::mpsc::UnboundedSender<&'static str>);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = self.0.send("stopped");
        }
    }

    #[tokio::test]
    async fn each_term_starts_the_work_with_the_term_and_drops_it_when_the_term_ends() {
        let l = Leadership::always();
        l.follow(None);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn({
            let l = l.clone();
            async move {
                each_term(&l, || {
                    let tx = tx.clone();
                    async move {
                        let _guard = Stopped(tx.clone());
                        let _ = tx.send("started");
                        std::future::pending::<()>().await;
                    }
                })
                .await;
            }
        });
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "nothing runs while following");
        l.lead();
        assert_eq!(rx.recv().await, Some("started"));
        l.follow(None);
        assert_eq!(rx.recv().await, Some("stopped"), "the term's end stops it");
        l.lead();
        assert_eq!(
            rx.recv().await,
            Some("started"),
            "the next term starts it again"
        );
        task.abort();
    }

    #[tokio::test]
    async fn losing_the_lead_cancels_the_term_and_leader_only_work_waits_for_the_next() {
        let l = Leadership::always();
        let first = l.leading().await;
        l.follow(Some("127.0.0.1:2".into()));
        assert!(first.is_cancelled(), "leader-only work stops at once");
        assert!(!l.is_leader());
        assert_eq!(l.leader().as_deref(), Some("127.0.0.1:2"));

        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.leading().await }
        });
        let term = l.lead();
        let seen = waiting.await.expect("the waiter wakes");
        assert!(!seen.is_cancelled());
        l.follow(None);
        assert!(term.is_cancelled() && seen.is_cancelled());
    }
}
