//! Staged rollouts of one bundle across the clusters it targets, as in Fleet's
//! `rolloutStrategy`: clusters fall into partitions (explicit by selector, or automatic
//! by size, and only above `autoPartitionThreshold` clusters); within a partition at most
//! `maxUnavailable` clusters are down at once; across the rollout at most `maxNew`
//! clusters are on the new deployment and not Ready yet; a partition starts only while
//! the partitions before it are within their limits (`maxUnavailablePartitions`); a
//! cluster failing on the new deployment halts the rollout.
//!
//! Pure: the caller supplies each cluster's live and staged deployment and its status, and
//! receives the set of clusters allowed onto the staged deployment now, plus a report.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_model::{Labels, State};
use flotilla_render::{IntOrString, Partition, RolloutStrategy};
use serde::Serialize;

/// One cluster targeted by the bundle.
pub struct ClusterState<'a> {
    pub name: &'a str,
    pub labels: &'a Labels,
    /// Names and labels of the cluster's groups.
    pub groups: &'a [(String, Labels)],
    /// The deployment the cluster runs now (what it was last sent).
    pub live: Option<&'a str>,
    /// The deployment the current revision wants for it.
    pub staged: &'a str,
    /// The state the cluster reported for its live deployment.
    pub state: Option<State>,
    pub message: &'a str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    pub name: String,
    pub clusters: usize,
    /// On the staged deployment and Ready.
    pub done: usize,
    /// On the staged deployment, not Ready yet.
    pub updating: usize,
    /// Still on the old deployment.
    pub waiting: usize,
    pub max_unavailable: usize,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum RolloutPhase {
    /// Every targeted cluster runs the staged deployment and is Ready.
    #[default]
    Done,
    InProgress,
    /// A cluster failed on the new deployment; nothing else moves.
    Halted,
    /// An admin or the bundle's `paused` holds it.
    Paused,
}

impl RolloutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Done => "Done",
            RolloutPhase::InProgress => "InProgress",
            RolloutPhase::Halted => "Halted",
            RolloutPhase::Paused => "Paused",
        }
    }
}

impl std::fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RolloutReport {
    pub phase: RolloutPhase,
    pub message: String,
    pub partitions: Vec<PartitionReport>,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Clusters that may run the staged deployment now.
    pub allowed: BTreeSet<String>,
    /// Why each held cluster waits.
    pub held: BTreeMap<String, String>,
    pub report: RolloutReport,
}

/// Resolves a count or percentage against `total` (percentages round up, as Fleet does
/// for maxUnavailable), never below `floor`.
pub fn resolve(v: Option<&IntOrString>, total: usize, default_percent: u32, floor: usize) -> usize {
    let n = match v {
        Some(IntOrString::Int(i)) => usize::try_from(*i).unwrap_or(0),
        Some(IntOrString::String(s)) => match s
            .trim()
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            Some(p) => (total * p.min(100) as usize).div_ceil(100),
            None => s.trim().parse().unwrap_or(0),
        },
        None => (total * default_percent as usize).div_ceil(100),
    };
    n.max(floor)
}

fn in_partition(p: &Partition, c: &ClusterState<'_>) -> bool {
    let any = p.cluster_name.is_some()
        || p.cluster_selector.is_some()
        || p.cluster_group.is_some()
        || p.cluster_group_selector.is_some();
    any && p.cluster_name.as_ref().is_none_or(|n| n == c.name)
        && p.cluster_selector
            .as_ref()
            .is_none_or(|s| s.matches(c.labels))
        && p.cluster_group
            .as_ref()
            .is_none_or(|g| c.groups.iter().any(|(n, _)| n == g))
        && p.cluster_group_selector
            .as_ref()
            .is_none_or(|s| c.groups.iter().any(|(_, l)| s.matches(l)))
}

/// Fleet's default `autoPartitionThreshold`.
pub const DEFAULT_AUTO_PARTITION_THRESHOLD: usize = 200;

/// Splits clusters into named partitions, in rollout order.
fn partition<'c, 'a>(
    s: &'c RolloutStrategy,
    clusters: &'c [ClusterState<'a>],
) -> Vec<(String, Option<&'c Partition>, Vec<&'c ClusterState<'a>>)> {
    let mut sorted: Vec<&ClusterState<'_>> = clusters.iter().collect();
    sorted.sort_by_key(|c| c.name);
    if !s.partitions.is_empty() {
        let mut parts: Vec<(String, Option<&Partition>, Vec<&ClusterState<'_>>)> = s
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.name.clone().unwrap_or_else(|| format!("partition-{i}")),
                    Some(p),
                    Vec::new(),
                )
            })
            .collect();
        let mut rest = Vec::new();
        for c in sorted {
            match s.partitions.iter().position(|p| in_partition(p, c)) {
                Some(i) => parts[i].2.push(c),
                None => rest.push(c),
            }
        }
        if !rest.is_empty() {
            parts.push(("unpartitioned".into(), None, rest));
        }
        return parts;
    }
    // As in Fleet: a fleet of up to this many clusters is one partition.
    let threshold = s
        .auto_partition_threshold
        .map_or(DEFAULT_AUTO_PARTITION_THRESHOLD, |t| t as usize);
    let size = if sorted.len() <= threshold {
        sorted.len().max(1)
    } else {
        resolve(s.auto_partition_size.as_ref(), sorted.len(), 25, 1)
    };
    sorted
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| (format!("auto-{i}"), None, chunk.to_vec()))
        .collect()
}

/// Plans the next step of a rollout.
pub fn plan(strategy: &RolloutStrategy, paused: bool, clusters: &[ClusterState<'_>]) -> Plan {
    let mut out = Plan::default();
    let on_staged = |c: &ClusterState<'_>| c.live == Some(c.staged);
    let ready = |c: &ClusterState<'_>| c.state == Some(State::Ready);
    let max_bad_partitions = resolve(
        strategy.max_unavailable_partitions.as_ref(),
        usize::MAX / 200,
        0,
        0,
    );
    let mut bad_partitions = 0usize;
    // maxNew: room for more clusters on the new deployment that are not Ready yet.
    let mut new_room = strategy.max_new.map(|m| {
        let updating = clusters
            .iter()
            .filter(|c| on_staged(c) && !ready(c))
            .count();
        (m as usize).saturating_sub(updating)
    });
    let mut stop: Option<String> = None;
    let mut halted: Option<String> = None;

    for (name, spec, members) in partition(strategy, clusters) {
        let max_unavailable = resolve(
            spec.and_then(|p| p.max_unavailable.as_ref())
                .or(strategy.max_unavailable.as_ref()),
            members.len(),
            100,
            1,
        );
        let mut report = PartitionReport {
            name: name.clone(),
            clusters: members.len(),
            max_unavailable,
            ..Default::default()
        };
        // Clusters already on the staged deployment stay there.
        for c in members.iter().filter(|c| on_staged(c)) {
            out.allowed.insert(c.name.to_string());
        }
        if let Some(why) = &stop {
            for c in members.iter().filter(|c| !on_staged(c)) {
                out.held.insert(c.name.to_string(), why.clone());
            }
        } else if paused {
            for c in members.iter().filter(|c| !on_staged(c)) {
                out.held.insert(c.name.to_string(), "rollout paused".into());
            }
        } else {
            let unavailable = members.iter().filter(|c| !ready(c)).count();
            let mut room = max_unavailable.saturating_sub(unavailable);
            for c in members.iter().filter(|c| !on_staged(c)) {
                if new_room == Some(0) {
                    out.held.insert(
                        c.name.to_string(),
                        format!(
                            "rollout: maxNew {} clusters are already updating",
                            strategy.max_new.unwrap_or_default()
                        ),
                    );
                    continue;
                }
                // A cluster that is down already costs no extra availability to update.
                if !ready(c) || room > 0 {
                    if ready(c) {
                        room -= 1;
                    }
                    if let Some(n) = &mut new_room {
                        *n -= 1;
                    }
                    out.allowed.insert(c.name.to_string());
                } else {
                    out.held.insert(
                        c.name.to_string(),
                        format!("rollout: partition {name} is at maxUnavailable {max_unavailable}"),
                    );
                }
            }
        }
        for c in &members {
            match (on_staged(c), ready(c)) {
                (true, true) => report.done += 1,
                (true, false) => report.updating += 1,
                (false, _) => report.waiting += 1,
            }
        }
        if halted.is_none()
            && let Some(failed) = members
                .iter()
                .find(|c| on_staged(c) && c.state == Some(State::ErrApplied))
        {
            let why = format!(
                "rollout halted: cluster {} failed in partition {name}: {}",
                failed.name, failed.message
            );
            halted = Some(why.clone());
            stop.get_or_insert(why);
        }
        if report.done < report.clusters && stop.is_none() {
            bad_partitions += 1;
            if bad_partitions > max_bad_partitions {
                stop = Some(format!("rollout: waiting for partition {name} to be Ready"));
            }
        }
        out.report.partitions.push(report);
    }
    let all_done = out.report.partitions.iter().all(|p| p.done == p.clusters);
    (out.report.phase, out.report.message) = match (&halted, paused, all_done) {
        (_, _, true) => (RolloutPhase::Done, String::new()),
        (Some(why), _, _) => (RolloutPhase::Halted, why.clone()),
        (None, true, _) => (RolloutPhase::Paused, "rollout paused".into()),
        (None, false, false) => (RolloutPhase::InProgress, stop.unwrap_or_default()),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster<'a>(
        name: &'a str,
        labels: &'a Labels,
        live: Option<&'a str>,
        state: Option<State>,
    ) -> ClusterState<'a> {
        ClusterState {
            name,
            labels,
            groups: &[],
            live,
            staged: "new",
            state,
            message: "",
        }
    }

    fn strategy(partitions: &[(&str, &str)]) -> RolloutStrategy {
        RolloutStrategy {
            partitions: partitions
                .iter()
                .map(|(n, sel)| Partition {
                    name: Some(n.to_string()),
                    cluster_selector: Some(sel.parse().expect("selector")),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn partitions_go_one_after_another() {
        let canary: Labels = [("env".to_string(), "canary".to_string())].into();
        let prod: Labels = [("env".to_string(), "prod".to_string())].into();
        let s = strategy(&[("canary", "env=canary"), ("prod", "env=prod")]);
        let start = [
            cluster("c1", &canary, Some("old"), Some(State::Ready)),
            cluster("p1", &prod, Some("old"), Some(State::Ready)),
            cluster("p2", &prod, Some("old"), Some(State::Ready)),
        ];
        let p = plan(&s, false, &start);
        assert_eq!(p.allowed, ["c1".to_string()].into());
        assert!(p.held["p1"].contains("partition canary"), "{:?}", p.held);
        assert_eq!(p.report.phase, RolloutPhase::InProgress);

        let canary_done = [
            cluster("c1", &canary, Some("new"), Some(State::Ready)),
            cluster("p1", &prod, Some("old"), Some(State::Ready)),
            cluster("p2", &prod, Some("old"), Some(State::Ready)),
        ];
        let p = plan(&s, false, &canary_done);
        assert_eq!(p.allowed.len(), 3, "maxUnavailable defaults to 100%");
        let all_done = [
            cluster("c1", &canary, Some("new"), Some(State::Ready)),
            cluster("p1", &prod, Some("new"), Some(State::Ready)),
            cluster("p2", &prod, Some("new"), Some(State::Ready)),
        ];
        assert_eq!(plan(&s, false, &all_done).report.phase, RolloutPhase::Done);
    }

    #[test]
    fn a_failure_halts_the_rollout_and_pause_holds_it() {
        let canary: Labels = [("env".to_string(), "canary".to_string())].into();
        let prod: Labels = [("env".to_string(), "prod".to_string())].into();
        let s = strategy(&[("canary", "env=canary"), ("prod", "env=prod")]);
        let failed = [
            cluster("c1", &canary, Some("new"), Some(State::ErrApplied)),
            cluster("p1", &prod, Some("old"), Some(State::Ready)),
        ];
        let p = plan(&s, false, &failed);
        assert_eq!(p.report.phase, RolloutPhase::Halted);
        assert!(p.held["p1"].contains("halted"), "{:?}", p.held);
        let p = plan(
            &s,
            true,
            &[cluster("p1", &prod, Some("old"), Some(State::Ready))],
        );
        assert_eq!(p.report.phase, RolloutPhase::Paused);
        assert!(p.allowed.is_empty());
    }

    #[test]
    fn max_new_bounds_the_clusters_updating_at_once_across_partitions() {
        let l = Labels::new();
        let s = RolloutStrategy {
            max_new: Some(2),
            ..Default::default()
        };
        let start = [
            cluster("a", &l, Some("old"), Some(State::Ready)),
            cluster("b", &l, Some("old"), Some(State::Ready)),
            cluster("c", &l, Some("old"), Some(State::Ready)),
        ];
        let p = plan(&s, false, &start);
        assert_eq!(p.allowed, ["a".to_string(), "b".to_string()].into());
        assert_eq!(
            p.held["c"],
            "rollout: maxNew 2 clusters are already updating"
        );
        // a is still updating: one slot left.
        let later = [
            cluster("a", &l, Some("new"), Some(State::NotReady)),
            cluster("b", &l, Some("new"), Some(State::Ready)),
            cluster("c", &l, Some("old"), Some(State::Ready)),
        ];
        assert!(plan(&s, false, &later).allowed.contains("c"));
        let both_updating = [
            cluster("a", &l, Some("new"), Some(State::NotReady)),
            cluster("b", &l, Some("new"), None),
            cluster("c", &l, Some("old"), Some(State::Ready)),
        ];
        assert!(plan(&s, false, &both_updating).held.contains_key("c"));
    }

    #[test]
    fn automatic_partitions_start_above_the_threshold() {
        let l = Labels::new();
        let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        let cs: Vec<ClusterState<'_>> = names
            .iter()
            .map(|n| cluster(n, &l, Some("old"), Some(State::Ready)))
            .collect();
        let mut s = RolloutStrategy {
            auto_partition_size: Some(IntOrString::Int(2)),
            ..Default::default()
        };
        // Fleet's default threshold (200): eight clusters are one partition.
        assert_eq!(plan(&s, false, &cs).report.partitions.len(), 1);
        s.auto_partition_threshold = Some(4);
        assert_eq!(plan(&s, false, &cs).report.partitions.len(), 4);
        s.auto_partition_threshold = Some(8);
        assert_eq!(plan(&s, false, &cs).report.partitions.len(), 1);
    }

    #[test]
    fn max_unavailable_limits_updates_within_a_partition() {
        let l = Labels::new();
        let s = RolloutStrategy {
            max_unavailable: Some(IntOrString::Int(1)),
            auto_partition_size: Some(IntOrString::String("100%".into())),
            ..Default::default()
        };
        let cs = [
            cluster("a", &l, Some("old"), Some(State::Ready)),
            cluster("b", &l, Some("old"), Some(State::Ready)),
            cluster("c", &l, Some("old"), Some(State::Ready)),
        ];
        let p = plan(&s, false, &cs);
        assert_eq!(p.allowed, ["a".to_string()].into());
        assert_eq!(
            resolve(Some(&IntOrString::String("25%".into())), 10, 0, 0),
            3
        );
        assert_eq!(resolve(None, 8, 25, 1), 2);
    }
}
