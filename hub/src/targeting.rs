//! Which clusters a source targets, as in Fleet: a source has targets; each target's
//! fields (`clusterSelector`, `clusterGroup`, `clusterGroupSelector`, `clusterName`) are
//! ANDed, targets are ORed, and a source with no targets goes to the group `default`.
//! A bundle whose fleet.yaml has `overrideTargets` goes where those say instead.
//! Pure logic: no I/O, no locks; the reconcile and the `targets` dry run both call it.

use flotilla_model::{LabelSelector, Labels};
use flotilla_render as render;
use serde::{Deserialize, Serialize};

/// The group a source with no targets goes to. `flotilla-hub init` creates it matching
/// every cluster.
pub const DEFAULT_GROUP: &str = "default";

/// A named label selector over clusters, with labels of its own for
/// `clusterGroupSelector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub name: String,
    pub selector: LabelSelector,
    #[serde(default)]
    pub labels: Labels,
}

impl GroupSpec {
    pub fn contains(&self, cluster_labels: &Labels) -> bool {
        self.selector.matches(cluster_labels)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub cluster_selector: Option<LabelSelector>,
    #[serde(default)]
    pub cluster_group: Option<String>,
    #[serde(default)]
    pub cluster_group_selector: Option<LabelSelector>,
    #[serde(default)]
    pub cluster_name: Option<String>,
}

impl TargetSpec {
    fn is_empty(&self) -> bool {
        self.cluster_selector.is_none()
            && self.cluster_group.is_none()
            && self.cluster_group_selector.is_none()
            && self.cluster_name.is_none()
    }

    fn describe(&self, index: usize) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.cluster_selector {
            parts.push(format!("clusterSelector {s:?}", s = s.to_string()));
        }
        if let Some(g) = &self.cluster_group {
            parts.push(format!("clusterGroup {g}"));
        }
        if let Some(s) = &self.cluster_group_selector {
            parts.push(format!("clusterGroupSelector {:?}", s.to_string()));
        }
        if let Some(n) = &self.cluster_name {
            parts.push(format!("clusterName {n}"));
        }
        let name = if self.name.is_empty() {
            format!("targets[{index}]")
        } else {
            format!("target {}", self.name)
        };
        format!("{name} ({})", parts.join(" and "))
    }
}

/// A cluster as targeting sees it.
pub struct ClusterFacts<'a> {
    pub name: &'a str,
    pub labels: &'a Labels,
    /// The groups whose selector matches the cluster.
    pub groups: &'a [&'a GroupSpec],
}

/// The groups a cluster belongs to, by name order.
pub fn groups_of<'g>(labels: &Labels, all: &'g [GroupSpec]) -> Vec<&'g GroupSpec> {
    all.iter().filter(|g| g.contains(labels)).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Targeted; the reason names the target that matched.
    Yes(String),
    /// Not targeted; the reason says why.
    No(String),
}

impl Match {
    pub fn is_yes(&self) -> bool {
        matches!(self, Match::Yes(_))
    }
}

fn target_matches(t: &TargetSpec, c: &ClusterFacts<'_>) -> bool {
    !t.is_empty()
        && t.cluster_selector
            .as_ref()
            .is_none_or(|s| s.matches(c.labels))
        && t.cluster_group
            .as_ref()
            .is_none_or(|g| c.groups.iter().any(|cg| cg.name == *g))
        && t.cluster_group_selector
            .as_ref()
            .is_none_or(|s| c.groups.iter().any(|cg| s.matches(&cg.labels)))
        && t.cluster_name.as_ref().is_none_or(|n| n == c.name)
}

/// Whether a source with `targets` goes to the cluster, and why.
pub fn match_source(targets: &[TargetSpec], c: &ClusterFacts<'_>) -> Match {
    if targets.is_empty() {
        return if c.groups.iter().any(|g| g.name == DEFAULT_GROUP) {
            Match::Yes(format!("no targets: cluster group {DEFAULT_GROUP}"))
        } else {
            Match::No(format!(
                "no targets, and the cluster is not in group {DEFAULT_GROUP}"
            ))
        };
    }
    match targets.iter().position(|t| target_matches(t, c)) {
        Some(i) => Match::Yes(targets[i].describe(i)),
        None => Match::No(format!("none of {} target(s) matched", targets.len())),
    }
}

/// Whether one bundle goes to the cluster, and why: by its fleet.yaml's
/// `overrideTargets` when it has them (they replace the source's, as in Fleet), else by
/// its source's targets. A bundle with no good revision (`None`) follows its source.
pub fn match_bundle(
    source_targets: &[TargetSpec],
    bundle: Option<&render::Bundle>,
    c: &ClusterFacts<'_>,
) -> Match {
    let Some(over) = bundle.and_then(render::Bundle::override_targets) else {
        return match_source(source_targets, c);
    };
    let targets: Vec<TargetSpec> = over
        .iter()
        .map(|t| TargetSpec {
            name: t.name.clone().unwrap_or_default(),
            cluster_selector: t.cluster_selector.clone(),
            cluster_group: t.cluster_group.clone(),
            cluster_group_selector: t.cluster_group_selector.clone(),
            cluster_name: t.cluster_name.clone(),
        })
        .collect();
    match match_source(&targets, c) {
        Match::Yes(why) => Match::Yes(format!("fleet.yaml overrideTargets: {why}")),
        Match::No(why) => Match::No(format!("fleet.yaml overrideTargets: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn group(name: &str, sel: &str, group_labels: &[(&str, &str)]) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            selector: sel.parse().expect("selector"),
            labels: labels(group_labels),
        }
    }

    #[test]
    fn fields_are_anded_within_a_target_and_targets_are_ored() {
        let all = vec![group("eu", "region=eu", &[("tier", "gold")])];
        let l = labels(&[("env", "prod"), ("region", "eu")]);
        let gs = groups_of(&l, &all);
        let c = ClusterFacts {
            name: "p1",
            labels: &l,
            groups: &gs,
        };
        let both = TargetSpec {
            cluster_selector: Some("env=prod".parse().expect("sel")),
            cluster_group: Some("eu".into()),
            ..Default::default()
        };
        assert!(match_source(std::slice::from_ref(&both), &c).is_yes());
        let wrong_group = TargetSpec {
            cluster_group: Some("us".into()),
            ..both.clone()
        };
        assert!(!match_source(std::slice::from_ref(&wrong_group), &c).is_yes());
        let by_name = TargetSpec {
            cluster_name: Some("p1".into()),
            ..Default::default()
        };
        let m = match_source(&[wrong_group, by_name], &c);
        assert_eq!(m, Match::Yes("targets[1] (clusterName p1)".into()));
        let by_group_labels = TargetSpec {
            cluster_group_selector: Some("tier=gold".parse().expect("sel")),
            ..Default::default()
        };
        assert!(match_source(&[by_group_labels], &c).is_yes());
    }

    #[test]
    fn no_targets_means_the_default_group_and_an_empty_target_matches_nothing() {
        let all = vec![group(DEFAULT_GROUP, "", &[])];
        let l = labels(&[]);
        let gs = groups_of(&l, &all);
        let c = ClusterFacts {
            name: "x",
            labels: &l,
            groups: &gs,
        };
        assert!(match_source(&[], &c).is_yes());
        assert!(!match_source(&[TargetSpec::default()], &c).is_yes());
        let none: Vec<&GroupSpec> = Vec::new();
        let c2 = ClusterFacts {
            name: "x",
            labels: &l,
            groups: &none,
        };
        assert!(!match_source(&[], &c2).is_yes());
    }
}
