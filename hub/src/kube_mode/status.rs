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

use flotilla_kube_types::flotilla::{ClusterStatus, ConfigStatus};
use flotilla_kube_types::meta::{Condition, ConditionStatus};

use super::mapping::{Unsupported, unsupported_message};
use super::{ClusterView, SourceState};
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
            field: "spec.serviceAccount",
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
