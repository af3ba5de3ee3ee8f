//! The spokes' last reports, one per (cluster, bundle), as the hub holds them in memory.
//!
//! A fleet of 10,000 clusters × 50 bundles keeps 500,000 of these for as long as it runs,
//! so they are stored compactly (issue 18: at most 256 bytes per pair for everything the
//! hub holds) and turned back into a [`StatusRecord`] only where one is read whole (the
//! Admin API, history). The store and the API see exactly the `StatusRecord` the spoke
//! sent; only the in-memory layout differs:
//!
//! - one sorted `Vec` per cluster instead of one hash entry per pair, so the cluster name
//!   is held once and no per-pair key is allocated;
//! - the bundle name and the deployment id are `Arc`s shared with the cluster's
//!   assignments (a report about the assigned deployment allocates nothing);
//! - what a Ready report leaves empty (the message, the non-ready resources, an id that
//!   is not one the hub made) sits behind one `Option<Box<_>>`.

use std::sync::Arc;

use dashmap::DashMap;
use flotilla_model::{ClusterName, DeploymentId, ResourceStatus, State};

use crate::reconcile::{Assignments, StatusView};
use crate::records::StatusRecord;

/// Every cluster's reports, by cluster, each cluster's sorted by bundle name.
#[derive(Default)]
pub struct Statuses {
    by_cluster: DashMap<ClusterName, Vec<Slot>>,
}

/// One pair's report, compact.
struct Slot {
    bundle: Arc<str>,
    /// `None` when the spoke reported an id the hub never makes (it is then in `rare`).
    deployment_id: Option<DeploymentId>,
    updated_at: i64,
    state: State,
    rare: Option<Box<Rare>>,
}

/// The parts of a report that are empty when all is well.
#[derive(Default)]
struct Rare {
    message: String,
    resources: Vec<ResourceStatus>,
    /// The reported deployment id when it does not parse as a [`DeploymentId`].
    raw_deployment_id: String,
}

/// A borrowed view of one report, for readers that need no copy.
pub struct StatusRef<'a> {
    pub deployment_id: &'a str,
    pub state: State,
    pub message: &'a str,
    pub resources: &'a [ResourceStatus],
    pub updated_at: i64,
}

/// What an insert replaced, enough to tell whether the pair's state moved.
pub struct Replaced {
    pub state: State,
    pub same_deployment: bool,
}

impl Slot {
    fn view(&self) -> StatusRef<'_> {
        let rare = self.rare.as_deref();
        StatusRef {
            deployment_id: match &self.deployment_id {
                Some(id) => id.as_str(),
                None => rare.map_or("", |r| r.raw_deployment_id.as_str()),
            },
            state: self.state,
            message: rare.map_or("", |r| r.message.as_str()),
            resources: rare.map_or(&[], |r| r.resources.as_slice()),
            updated_at: self.updated_at,
        }
    }

    /// `st` as a slot, sharing `bundle` and, when it is the one reported, `known_id`.
    fn new(bundle: Arc<str>, st: StatusRecord, known_id: Option<&DeploymentId>) -> Self {
        let deployment_id = match known_id {
            Some(id) if id.as_str() == st.deployment_id => Some(id.clone()),
            _ => DeploymentId::parse(&st.deployment_id),
        };
        let raw_deployment_id = if deployment_id.is_some() {
            String::new()
        } else {
            st.deployment_id
        };
        let rare =
            (!st.message.is_empty() || !st.resources.is_empty() || !raw_deployment_id.is_empty())
                .then(|| {
                    Box::new(Rare {
                        message: st.message,
                        resources: st.resources,
                        raw_deployment_id,
                    })
                });
        Slot {
            bundle,
            deployment_id,
            updated_at: st.updated_at,
            state: st.state,
            rare,
        }
    }
}

impl StatusRef<'_> {
    pub fn to_record(&self) -> StatusRecord {
        StatusRecord {
            deployment_id: self.deployment_id.to_string(),
            state: self.state,
            message: self.message.to_string(),
            resources: self.resources.to_vec(),
            updated_at: self.updated_at,
        }
    }
}

impl Statuses {
    /// Runs `f` on the pair's report, if there is one.
    pub fn with<R>(
        &self,
        cluster: &ClusterName,
        bundle: &str,
        f: impl FnOnce(StatusRef<'_>) -> R,
    ) -> Option<R> {
        let slots = self.by_cluster.get(cluster)?;
        let i = find(&slots, bundle).ok()?;
        Some(f(slots[i].view()))
    }

    /// The pair's report, copied out.
    pub fn get(&self, cluster: &ClusterName, bundle: &str) -> Option<StatusRecord> {
        self.with(cluster, bundle, |s| s.to_record())
    }

    /// Replaces the pair's report. Names and ids are shared with the slot it replaces or
    /// with `assigned` (the cluster's assignments), so the common report allocates nothing.
    pub fn insert(
        &self,
        cluster: &ClusterName,
        bundle: &str,
        st: StatusRecord,
        assigned: &Assignments,
    ) -> Option<Replaced> {
        let assignment = assigned.get_key_value(bundle);
        let mut slots = self.by_cluster.entry(cluster.clone()).or_default();
        match find(&slots, bundle) {
            Ok(i) => {
                let old = &mut slots[i];
                let known = old
                    .deployment_id
                    .as_ref()
                    .filter(|id| id.as_str() == st.deployment_id)
                    .cloned()
                    .or_else(|| assigned_id(assignment.map(|(_, a)| a), &st.deployment_id));
                let replaced = Replaced {
                    state: old.state,
                    same_deployment: old.view().deployment_id == st.deployment_id,
                };
                *old = Slot::new(old.bundle.clone(), st, known.as_ref());
                Some(replaced)
            }
            Err(i) => {
                let (name, known) = match assignment {
                    Some((name, a)) => (name.clone(), assigned_id(Some(a), &st.deployment_id)),
                    None => (Arc::from(bundle), None),
                };
                // Exact growth: a cluster's bundles arrive once each and then stay, so
                // doubling would leave up to half of every cluster's vector unused.
                slots.reserve_exact(1);
                slots.insert(i, Slot::new(name, st, known.as_ref()));
                None
            }
        }
    }

    /// Forgets every report of `cluster`; returns the bundles it had reported on.
    pub fn remove_cluster(&self, cluster: &ClusterName) -> Vec<Arc<str>> {
        self.by_cluster
            .remove(cluster)
            .map(|(_, slots)| slots.into_iter().map(|s| s.bundle).collect())
            .unwrap_or_default()
    }

    /// The store keys (`status_key`) of every report held.
    pub fn keys(&self) -> Vec<String> {
        self.by_cluster
            .iter()
            .flat_map(|e| {
                let cluster = e.key().clone();
                e.value()
                    .iter()
                    .map(|s| crate::records::status_key(&cluster, &s.bundle))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Forgets the pair's report (another replica's store delete).
    pub fn remove(&self, cluster: &ClusterName, bundle: &str) {
        if let Some(mut slots) = self.by_cluster.get_mut(cluster)
            && let Ok(i) = find(&slots, bundle)
        {
            slots.remove(i);
        }
    }
}

fn find(slots: &[Slot], bundle: &str) -> Result<usize, usize> {
    slots.binary_search_by(|s| (*s.bundle).cmp(bundle))
}

/// The assignment's deployment (current or staged) when it is the one `reported`.
fn assigned_id(a: Option<&crate::reconcile::Assignment>, reported: &str) -> Option<DeploymentId> {
    let a = a?;
    a.desired
        .as_ref()
        .map(|d| &d.deployment_id)
        .into_iter()
        .chain(a.staged.as_ref())
        .find(|id| id.as_str() == reported)
        .cloned()
}

/// The reconcile reads the live reports (see `reconcile`'s module doc).
impl StatusView for Statuses {
    fn reported(
        &self,
        cluster: &ClusterName,
        bundle: &str,
        deployment: &DeploymentId,
    ) -> Option<(State, String)> {
        self.with(cluster, bundle, |s| {
            (s.deployment_id == deployment.as_str()).then(|| (s.state, s.message.to_string()))
        })
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, state: State, message: &str) -> StatusRecord {
        StatusRecord {
            deployment_id: id.to_string(),
            state,
            message: message.to_string(),
            resources: Vec::new(),
            updated_at: 7,
        }
    }

    const ID: &str = "d-0123456789abcdef0123";

    #[test]
    fn what_goes_in_comes_out_as_the_spoke_sent_it() {
        let s = Statuses::default();
        let c = ClusterName::new("c").expect("name");
        let none = Assignments::new();
        let mut failing = record(ID, State::NotReady, "1 object not ready");
        failing.resources.push(ResourceStatus {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "app".into(),
            name: "cm".into(),
            state: State::NotReady,
            message: "waiting".into(),
        });
        // An id the hub never makes, a Ready report, and one with details.
        for (bundle, st) in [
            ("b", record("not/an/id", State::ErrApplied, "")),
            ("a", record(ID, State::Ready, "")),
            ("c", failing),
            ("d", record("", State::WaitApplied, "")),
        ] {
            assert!(s.insert(&c, bundle, st.clone(), &none).is_none());
            assert_eq!(s.get(&c, bundle), Some(st));
        }
        let replaced = s
            .insert(&c, "a", record(ID, State::Modified, "drift"), &none)
            .expect("replaced");
        assert_eq!(replaced.state, State::Ready);
        assert!(replaced.same_deployment);
        assert_eq!(s.get(&c, "a"), Some(record(ID, State::Modified, "drift")));
        assert_eq!(s.get(&c, "e"), None);
        let mut gone: Vec<String> = s.remove_cluster(&c).iter().map(|b| b.to_string()).collect();
        gone.sort();
        assert_eq!(gone, ["a", "b", "c", "d"]);
        assert_eq!(s.get(&c, "a"), None);
    }

    #[test]
    fn a_report_about_the_assigned_deployment_shares_its_name_and_id() {
        let s = Statuses::default();
        let c = ClusterName::new("c").expect("name");
        let id = DeploymentId::parse(ID).expect("id");
        let name: Arc<str> = Arc::from("web");
        let mut assigned = Assignments::new();
        assigned.insert(
            name.clone(),
            crate::reconcile::Assignment {
                source: Arc::from("apps"),
                desired: Some(Arc::new(crate::records::Desired {
                    deployment_id: id.clone(),
                    digest: flotilla_model::ContentDigest::of(b"x"),
                    options: Default::default(),
                })),
                error: None,
                waiting: None,
                staged: None,
            },
        );
        s.insert(&c, "web", record(ID, State::Ready, ""), &assigned);
        let slots = s.by_cluster.get(&c).expect("cluster");
        assert!(Arc::ptr_eq(&slots[0].bundle, &name));
        assert!(slots[0].rare.is_none());
        assert_eq!(slots[0].deployment_id.as_ref(), Some(&id));
    }
}
