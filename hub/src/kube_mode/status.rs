//! The status Kubernetes mode writes back: `observedGeneration` and conditions in
//! Kubernetes' shape. Pure: the clock comes in as a string, and [`merge`] keeps a
//! condition's `lastTransitionTime` while its status stays, so an unchanged outcome
//! writes an unchanged status, and the controller skips the write (no watch loop).
//!
//! Conditions written:
//! - `Ready`: `True` with reason `Deployed` (sources) or `Applied`; `False` with
//!   `Pending`, `Stalled` (the object cannot be applied as written; the message says
//!   why) or `Failed` (the hub applied it, and fetching or rendering fails).
//! - `Unsupported`: `True` with reason `FieldsIgnored` while fields are set that flotilla
//!   does not honour, one `field: reason` per entry in the message.
//!
//! A `BundleStatus` ([`bundle_status`]) gets one `Ready` condition: `True` with reason
//! `Ready` when every targeted cluster is Ready (`NoTargets` when there is none), else
//! `False` with the worst state as the reason, or `LoadFailed` when the revision's bundle
//! does not load (the last good revision stays deployed).

use std::collections::HashMap;

use flotilla_kube_types::flotilla::{
    BundleStatusStatus, BundleSummary, ClusterBundleState, ClusterStatus, ConfigStatus,
};
use flotilla_kube_types::meta::{Condition, ConditionStatus};
use flotilla_model::State;

use super::mapping::{Unsupported, unsupported_message};
use super::{BundleView, ClusterView, SourceBundles, SourceState};
use crate::records::rfc3339;

pub const READY: &str = "Ready";
pub const UNSUPPORTED: &str = "Unsupported";

/// What became of one object, before it is written as conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ready: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
    pub commit: Option<String>,
    pub unsupported: Vec<Unsupported>,
}

impl Outcome {
    pub fn applied() -> Outcome {
        Outcome::new(ConditionStatus::True, "Applied", "applied to the hub")
    }

    /// The object cannot be applied as written.
    pub fn stalled(message: String) -> Outcome {
        Outcome::new(ConditionStatus::False, "Stalled", message)
    }

    pub fn of_source(state: Option<SourceState>) -> Outcome {
        match state {
            None => Outcome::new(
                ConditionStatus::False,
                "Pending",
                "not known to the hub yet",
            ),
            Some(SourceState::Pending { message }) => {
                Outcome::new(ConditionStatus::False, "Pending", message)
            }
            Some(SourceState::Failed { message }) => {
                Outcome::new(ConditionStatus::False, "Failed", message)
            }
            Some(SourceState::Ready { commit, message }) => Outcome {
                commit: Some(commit),
                ..Outcome::new(ConditionStatus::True, "Deployed", message)
            },
        }
    }

    pub fn of_cluster(view: Option<&ClusterView>) -> Outcome {
        match view {
            None => Outcome::new(
                ConditionStatus::False,
                "NotRegistered",
                "no spoke of this name has registered; the labels apply once it does",
            ),
            Some(v) if v.connected => Outcome::new(ConditionStatus::True, "Connected", "connected"),
            Some(_) => Outcome::new(
                ConditionStatus::False,
                "Offline",
                "registered, not connected",
            ),
        }
    }

    fn new(ready: ConditionStatus, reason: &'static str, message: impl Into<String>) -> Outcome {
        Outcome {
            ready,
            reason,
            message: message.into(),
            commit: None,
            unsupported: Vec::new(),
        }
    }

    pub fn with_unsupported(self, unsupported: Vec<Unsupported>) -> Outcome {
        Outcome {
            unsupported,
            ..self
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready == ConditionStatus::True
    }

    fn conditions(&self, generation: Option<i64>, now: &str) -> Vec<Condition> {
        let condition = |type_: &str, status, reason: &str, message: String| Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: Some(now.to_string()),
        };
        let mut out = vec![condition(
            READY,
            self.ready,
            self.reason,
            self.message.clone(),
        )];
        if !self.unsupported.is_empty() {
            out.push(condition(
                UNSUPPORTED,
                ConditionStatus::True,
                "FieldsIgnored",
                unsupported_message(&self.unsupported),
            ));
        }
        out
    }
}

/// The status of a Source, GitRepo or ClusterGroup after `outcome`.
pub fn config_status(
    old: Option<&ConfigStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    now: &str,
) -> ConfigStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    ConfigStatus {
        observed_generation: generation,
        // A failing fetch leaves the last published commit deployed: keep showing it.
        commit: outcome
            .commit
            .clone()
            .or_else(|| old.and_then(|s| s.commit.clone())),
        conditions: merge(old_conditions, outcome.conditions(generation, now)),
        // The bundle status writer's (`bundle_status`), kept as they are.
        ready_clusters: old.and_then(|s| s.ready_clusters),
        desired_ready_clusters: old.and_then(|s| s.desired_ready_clusters),
        summary: old.and_then(|s| s.summary.clone()),
        display: old.and_then(|s| s.display.clone()),
    }
}

/// The status of a Cluster after `outcome`, with what the hub knows of it.
pub fn cluster_status(
    old: Option<&ClusterStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    view: Option<&ClusterView>,
    now: &str,
) -> ClusterStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let view = view.cloned().unwrap_or_default();
    ClusterStatus {
        observed_generation: generation,
        labels: view.labels,
        reported_labels: view.reported_labels,
        agent_version: view.agent_version,
        last_seen: rfc3339(view.last_seen),
        conditions: merge(old_conditions, outcome.conditions(generation, now)),
    }
}

/// A `BundleStatus` lists at most this many clusters that are not Ready ...
pub const NON_READY_MAX: usize = 50;
/// ... and at most this many deployment ids ...
pub const DEPLOYMENT_IDS_MAX: usize = 10;
/// ... and cuts each message to this many bytes, so that one object stays small
/// whatever the fleet's size.
pub const MESSAGE_MAX: usize = 512;

/// The status of the `BundleStatus` of `view`, a bundle of a source at `commit`.
pub fn bundle_status(
    view: &BundleView,
    commit: &str,
    old: Option<&BundleStatusStatus>,
    generation: Option<i64>,
    now: &str,
) -> BundleStatusStatus {
    let summary = summarize(view.clusters.iter().map(|p| p.state));
    let worst = view
        .clusters
        .iter()
        .map(|p| p.state)
        .max_by_key(|s| s.severity());
    let mut non_ready: Vec<_> = view
        .clusters
        .iter()
        .filter(|p| p.state != State::Ready)
        .collect();
    non_ready.sort_by(|a, b| {
        b.state
            .severity()
            .cmp(&a.state.severity())
            .then_with(|| a.cluster.cmp(&b.cluster))
    });
    let (ready, reason, message) = if let Some(e) = view.errors.first() {
        (
            ConditionStatus::False,
            "LoadFailed",
            format!("the revision at {commit} does not load: {e}"),
        )
    } else if view.clusters.is_empty() {
        (
            ConditionStatus::True,
            "NoTargets",
            "the bundle targets no cluster".to_string(),
        )
    } else if summary.ready == summary.desired_ready {
        (
            ConditionStatus::True,
            "Ready",
            format!("{0}/{0} clusters ready", summary.ready),
        )
    } else {
        let first = non_ready.first().map_or(String::new(), |p| {
            format!("; {} is {}: {}", p.cluster, p.state, p.message)
        });
        (
            ConditionStatus::False,
            worst.map_or("NotReady", State::as_str),
            format!(
                "{}/{} clusters ready{first}",
                summary.ready, summary.desired_ready
            ),
        )
    };
    let condition = Condition {
        type_: READY.to_string(),
        status: ready,
        reason: reason.to_string(),
        message: bounded(&message),
        observed_generation: generation,
        last_transition_time: Some(now.to_string()),
    };
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    BundleStatusStatus {
        observed_generation: generation,
        commit: commit.to_string(),
        deployment_ids: view
            .deployment_ids
            .iter()
            .take(DEPLOYMENT_IDS_MAX)
            .cloned()
            .collect(),
        deployments: count(view.deployment_ids.len()),
        state: worst.map(|s| s.to_string()).unwrap_or_default(),
        ready_clusters: summary.ready,
        desired_ready_clusters: summary.desired_ready,
        non_ready: non_ready
            .into_iter()
            .take(NON_READY_MAX)
            .map(|p| ClusterBundleState {
                cluster: p.cluster.clone(),
                state: p.state.to_string(),
                message: bounded(&p.message),
            })
            .collect(),
        summary,
        conditions: merge(old_conditions, vec![condition]),
    }
}

/// A source's cluster counts, as Fleet's GitRepo status has them: clusters some bundle
/// targets, those on which every one is Ready, and the pairs per state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSummary {
    pub ready_clusters: u32,
    pub desired_ready_clusters: u32,
    pub summary: BundleSummary,
}

pub fn source_summary(source: &SourceBundles) -> SourceSummary {
    let pairs = || source.bundles.iter().flat_map(|b| b.clusters.iter());
    let mut all_ready: HashMap<&str, bool> = HashMap::new();
    for p in pairs() {
        *all_ready.entry(p.cluster.as_str()).or_insert(true) &= p.state == State::Ready;
    }
    SourceSummary {
        ready_clusters: count(all_ready.values().filter(|r| **r).count()),
        desired_ready_clusters: count(all_ready.len()),
        summary: summarize(pairs().map(|p| p.state)),
    }
}

fn summarize(states: impl Iterator<Item = State>) -> BundleSummary {
    let mut s = BundleSummary::default();
    for state in states {
        s.desired_ready = s.desired_ready.saturating_add(1);
        let n = match state {
            State::Ready => &mut s.ready,
            State::NotReady => &mut s.not_ready,
            State::WaitApplied => &mut s.wait_applied,
            State::ErrApplied => &mut s.err_applied,
            State::OutOfSync => &mut s.out_of_sync,
            State::Modified => &mut s.modified,
            State::Pending => &mut s.pending,
            State::Offline => &mut s.offline,
        };
        *n = n.saturating_add(1);
    }
    s
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `text` cut to at most [`MESSAGE_MAX`] bytes, on a character boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MESSAGE_MAX {
        return text.to_string();
    }
    let mut end = MESSAGE_MAX - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `new`, with each condition's `lastTransitionTime` taken from `old` when its status
/// did not change.
pub fn merge(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(prev) = old
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
            {
                c.last_transition_time = prev.last_transition_time.clone();
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-01-01T00:05:00Z";

    #[test]
    fn an_unchanged_outcome_writes_an_unchanged_status() {
        let o = Outcome::of_source(Some(SourceState::Ready {
            commit: "abc".into(),
            message: "published".into(),
        }));
        let first = config_status(None, Some(3), &o, T1);
        let again = config_status(Some(&first), Some(3), &o, T2);
        assert_eq!(first, again);
        assert_eq!(first.commit.as_deref(), Some("abc"));
        let ready = &first.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status,
                ready.reason.as_str(),
                ready.observed_generation
            ),
            ("Ready", ConditionStatus::True, "Deployed", Some(3))
        );
    }

    #[test]
    fn a_status_change_moves_the_transition_time_and_keeps_the_last_commit() {
        let ready = Outcome::of_source(Some(SourceState::Ready {
            commit: "abc".into(),
            message: String::new(),
        }));
        let first = config_status(None, Some(1), &ready, T1);
        let failed = Outcome::of_source(Some(SourceState::Failed {
            message: "fetch: connection refused".into(),
        }));
        let second = config_status(Some(&first), Some(2), &failed, T2);
        assert_eq!(
            second.conditions[0].last_transition_time.as_deref(),
            Some(T2)
        );
        assert_eq!(second.conditions[0].reason, "Failed");
        assert_eq!(second.commit.as_deref(), Some("abc"));
        assert_eq!(second.observed_generation, Some(2));
    }

    #[test]
    fn unsupported_fields_add_a_condition_beside_ready() {
        let o = Outcome::applied().with_unsupported(vec![Unsupported {
            field: "spec.serviceAccount".into(),
            reason: "spokes apply with their own credentials",
        }]);
        let s = config_status(None, None, &o, T1);
        let types: Vec<(&str, ConditionStatus)> = s
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status))
            .collect();
        assert_eq!(
            types,
            [
                ("Ready", ConditionStatus::True),
                ("Unsupported", ConditionStatus::True)
            ]
        );
        assert!(s.conditions[1].message.contains("spec.serviceAccount"));
    }

    fn pair(cluster: &str, state: State, message: &str) -> super::super::PairState {
        super::super::PairState {
            cluster: cluster.into(),
            state,
            message: message.into(),
        }
    }

    #[test]
    fn a_bundle_is_ready_when_every_targeted_cluster_is() {
        let mut view = BundleView {
            name: "web".into(),
            clusters: vec![pair("a", State::Ready, ""), pair("b", State::Ready, "")],
            deployment_ids: ["d1".to_string()].into(),
            ..BundleView::default()
        };
        let s = bundle_status(&view, "abc", None, Some(1), T1);
        assert_eq!(
            (s.ready_clusters, s.desired_ready_clusters, s.state.as_str()),
            (2, 2, "Ready")
        );
        assert_eq!(s.conditions[0].status, ConditionStatus::True);
        assert_eq!(s.conditions[0].observed_generation, Some(1));
        assert_eq!(s.deployment_ids, ["d1"]);

        view.clusters[1] = pair("b", State::ErrApplied, "bad patch");
        view.clusters.push(pair("c", State::WaitApplied, ""));
        let s2 = bundle_status(&view, "abc", Some(&s), Some(1), T2);
        let c = &s2.conditions[0];
        assert_eq!(
            (
                c.status,
                c.reason.as_str(),
                c.last_transition_time.as_deref()
            ),
            (ConditionStatus::False, "ErrApplied", Some(T2))
        );
        assert_eq!(c.message, "1/3 clusters ready; b is ErrApplied: bad patch");
        let listed: Vec<_> = s2.non_ready.iter().map(|p| p.cluster.as_str()).collect();
        assert_eq!(listed, ["b", "c"], "worst first");
        assert_eq!((s2.summary.err_applied, s2.summary.wait_applied), (1, 1));
        // Nothing changed: nothing to write.
        assert_eq!(bundle_status(&view, "abc", Some(&s2), Some(1), T1), s2);
    }

    #[test]
    fn a_bundle_status_stays_bounded_on_a_large_fleet() {
        let view = BundleView {
            clusters: (0..10_000)
                .map(|i| pair(&format!("c{i:05}"), State::NotReady, &"x".repeat(4096)))
                .collect(),
            deployment_ids: (0..100).map(|i| format!("d{i:03}")).collect(),
            ..BundleView::default()
        };
        let s = bundle_status(&view, "abc", None, None, T1);
        assert_eq!(s.non_ready.len(), NON_READY_MAX);
        assert!(s.non_ready.iter().all(|p| p.message.len() <= MESSAGE_MAX));
        assert!(s.conditions[0].message.len() <= MESSAGE_MAX);
        assert_eq!(
            (s.deployment_ids.len(), s.deployments),
            (DEPLOYMENT_IDS_MAX, 100)
        );
        assert_eq!(s.summary.not_ready, 10_000);
    }

    #[test]
    fn a_bundle_that_does_not_load_or_targets_nothing_says_so() {
        let view = BundleView {
            errors: vec!["fleet.yaml:3: bad".into()],
            ..BundleView::default()
        };
        let s = bundle_status(&view, "abc", None, None, T1);
        assert_eq!(
            (s.conditions[0].status, s.conditions[0].reason.as_str()),
            (ConditionStatus::False, "LoadFailed")
        );
        let s = bundle_status(&BundleView::default(), "abc", None, None, T1);
        assert_eq!(
            (s.conditions[0].status, s.conditions[0].reason.as_str()),
            (ConditionStatus::True, "NoTargets")
        );
    }

    #[test]
    fn a_source_counts_the_clusters_on_which_all_its_bundles_are_ready() {
        let source = SourceBundles {
            bundles: vec![
                BundleView {
                    clusters: vec![pair("a", State::Ready, ""), pair("b", State::Ready, "")],
                    ..BundleView::default()
                },
                BundleView {
                    clusters: vec![pair("a", State::Modified, "")],
                    ..BundleView::default()
                },
            ],
            ..SourceBundles::default()
        };
        let s = source_summary(&source);
        assert_eq!((s.ready_clusters, s.desired_ready_clusters), (1, 2));
        assert_eq!(
            (s.summary.desired_ready, s.summary.ready, s.summary.modified),
            (3, 2, 1)
        );
    }

    #[test]
    fn a_cluster_is_ready_while_connected() {
        let view = ClusterView {
            connected: true,
            agent_version: "0.1.0".into(),
            ..ClusterView::default()
        };
        let s = cluster_status(
            None,
            Some(1),
            &Outcome::of_cluster(Some(&view)),
            Some(&view),
            T1,
        );
        assert_eq!(s.conditions[0].reason, "Connected");
        assert_eq!(s.agent_version, "0.1.0");
        let o = Outcome::of_cluster(None);
        assert_eq!(
            (o.ready, o.reason),
            (ConditionStatus::False, "NotRegistered")
        );
    }
}
