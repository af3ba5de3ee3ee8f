//! Serializable views of Admin API replies: what `-o json|yaml` print and tables show.
//! Field names are a contract that scripts rely on.

use std::collections::BTreeMap;

use flotilla_proto::v1 as pb;
use serde::Serialize;

use crate::output::{Row, labels_cell, short};

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub connected: bool,
    pub state: String,
    pub bundles: u32,
    pub bundles_ready: u32,
    pub agent_version: String,
    pub last_seen: String,
    pub registered: String,
    pub revoked: bool,
    pub cert_expires: String,
    /// What the spoke says about itself; not used for targeting.
    pub reported_labels: BTreeMap<String, String>,
    /// Reported labels `flotilla cluster accept-labels` would apply.
    pub pending_labels: BTreeMap<String, String>,
    /// Where `labels` come from: accepted spoke labels < token labels < hub labels.
    pub accepted_labels: BTreeMap<String, String>,
    pub token_labels: BTreeMap<String, String>,
    pub hub_labels: BTreeMap<String, String>,
    /// The Kubernetes version the spoke reported; empty for a directory target.
    pub kube_version: String,
}

impl From<pb::Cluster> for ClusterView {
    fn from(c: pb::Cluster) -> Self {
        ClusterView {
            name: c.name,
            labels: c.labels,
            connected: c.connected,
            state: c.state,
            bundles: c.bundles,
            bundles_ready: c.bundles_ready,
            agent_version: c.agent_version,
            last_seen: c.last_seen,
            registered: c.registered,
            revoked: c.revoked,
            cert_expires: c.cert_expires,
            reported_labels: c.reported_labels,
            pending_labels: c.pending_labels,
            accepted_labels: c.accepted_labels,
            token_labels: c.token_labels,
            hub_labels: c.hub_labels,
            kube_version: c.kube_version,
        }
    }
}

impl Row for ClusterView {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "CONNECTED", "STATE", "READY", "LABELS"];
        if wide {
            h.extend([
                "PENDING-LABELS",
                "AGENT",
                "KUBERNETES",
                "LAST-SEEN",
                "CERT-EXPIRES",
                "REVOKED",
            ]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.name.clone(),
            self.connected.to_string(),
            self.state.clone(),
            format!("{}/{}", self.bundles_ready, self.bundles),
            labels_cell(&self.labels),
        ];
        if wide {
            c.extend([
                labels_cell(&self.pending_labels),
                self.agent_version.clone(),
                self.kube_version.clone(),
                self.last_seen.clone(),
                self.cert_expires.clone(),
                self.revoked.to_string(),
            ]);
        }
        c
    }
}

#[derive(Debug, Serialize)]
pub struct SourceView {
    pub name: String,
    pub repo: String,
    pub branch: String,
    pub paths: Vec<String>,
    pub interval_seconds: u64,
    pub targets: Vec<TargetSpecView>,
    pub commit: String,
    pub bundles: u32,
    pub error: String,
    pub error_since: String,
    pub last_poll: String,
    /// Chart repository credentials: who, where, and which secrets the hub holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm_auth: Option<HelmAuthView>,
}

#[derive(Debug, Serialize)]
pub struct HelmAuthView {
    pub username: String,
    pub url_regex: String,
    pub plain_http: bool,
    /// Names only ("password", "ca", "token"); the hub never sends a secret back.
    pub stored: Vec<String>,
}

impl From<pb::Source> for SourceView {
    fn from(s: pb::Source) -> Self {
        SourceView {
            name: s.name,
            repo: s.repo,
            branch: s.branch,
            paths: s.paths,
            interval_seconds: s.interval_seconds,
            targets: s.targets.into_iter().map(Into::into).collect(),
            commit: s.commit,
            bundles: s.bundles,
            error: s.error,
            error_since: s.error_since,
            last_poll: s.last_poll,
            helm_auth: s.helm_auth.map(|h| HelmAuthView {
                username: h.username,
                url_regex: h.url_regex,
                plain_http: h.plain_http,
                stored: h.stored,
            }),
        }
    }
}

impl Row for SourceView {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "REPO", "BRANCH", "COMMIT", "BUNDLES", "ERROR"];
        if wide {
            h.extend(["PATHS", "TARGETS", "LAST-POLL"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.name.clone(),
            self.repo.clone(),
            self.branch.clone(),
            self.commit.chars().take(12).collect(),
            self.bundles.to_string(),
            if self.error.is_empty() {
                String::new()
            } else {
                format!("{} (since {})", short(&self.error, 60), self.error_since)
            },
        ];
        if wide {
            c.extend([
                self.paths.join(","),
                if self.targets.is_empty() {
                    "group default".into()
                } else {
                    self.targets
                        .iter()
                        .map(TargetSpecView::short)
                        .collect::<Vec<_>>()
                        .join(" | ")
                },
                self.last_poll.clone(),
            ]);
        }
        c
    }
}

#[derive(Debug, Serialize)]
pub struct BundleView {
    pub name: String,
    pub source: String,
    pub path: String,
    pub commit: String,
    pub clusters: u32,
    pub ready: u32,
    pub state: String,
    pub error: String,
    pub warnings: Vec<String>,
}

impl From<pb::Bundle> for BundleView {
    fn from(b: pb::Bundle) -> Self {
        BundleView {
            name: b.name,
            source: b.source,
            path: b.path,
            commit: b.commit,
            clusters: b.clusters,
            ready: b.ready,
            state: b.state,
            error: b.error,
            warnings: b.warnings,
        }
    }
}

impl Row for BundleView {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "SOURCE", "READY", "STATE", "ERROR"];
        if wide {
            h.extend(["PATH", "COMMIT", "WARNINGS"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.name.clone(),
            self.source.clone(),
            format!("{}/{}", self.ready, self.clusters),
            self.state.clone(),
            short(&self.error, 80),
        ];
        if wide {
            c.extend([
                self.path.clone(),
                self.commit.chars().take(12).collect(),
                self.warnings.len().to_string(),
            ]);
        }
        c
    }
}

#[derive(Debug, Serialize)]
pub struct ResourceView {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub state: String,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub cluster: String,
    pub bundle: String,
    pub state: String,
    pub message: String,
    pub deployment_id: String,
    pub staged_deployment_id: String,
    pub updated: String,
    pub resources: Vec<ResourceView>,
}

impl From<pb::StatusRow> for StatusView {
    fn from(r: pb::StatusRow) -> Self {
        StatusView {
            cluster: r.cluster,
            bundle: r.bundle,
            state: r.state,
            message: r.message,
            deployment_id: r.deployment_id,
            staged_deployment_id: r.staged_deployment_id,
            updated: r.updated,
            resources: r
                .resources
                .into_iter()
                .map(|x| ResourceView {
                    api_version: x.api_version,
                    kind: x.kind,
                    namespace: x.namespace,
                    name: x.name,
                    state: x.state,
                    message: x.message,
                })
                .collect(),
        }
    }
}

impl Row for StatusView {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["CLUSTER", "BUNDLE", "STATE", "MESSAGE"];
        if wide {
            h.extend(["DEPLOYMENT", "STAGED", "UPDATED", "RESOURCES"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.cluster.clone(),
            self.bundle.clone(),
            self.state.clone(),
            short(&self.message, 80),
        ];
        if wide {
            c.extend([
                self.deployment_id.clone(),
                self.staged_deployment_id.clone(),
                self.updated.clone(),
                self.resources.len().to_string(),
            ]);
        }
        c
    }
}

#[derive(Debug, Serialize)]
pub struct TokenView {
    pub id: String,
    pub description: String,
    pub created: String,
    pub expires: String,
    pub max_uses: u32,
    pub uses: u32,
    pub expired: bool,
    pub labels: BTreeMap<String, String>,
    pub spoke_label_keys: Vec<String>,
}

impl From<pb::Token> for TokenView {
    fn from(t: pb::Token) -> Self {
        TokenView {
            id: t.id,
            description: t.description,
            created: t.created,
            expires: t.expires,
            max_uses: t.max_uses,
            uses: t.uses,
            expired: t.expired,
            labels: t.labels,
            spoke_label_keys: t.spoke_label_keys,
        }
    }
}

impl Row for TokenView {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["ID", "USES", "EXPIRES", "EXPIRED", "LABELS", "DESCRIPTION"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        vec![
            self.id.clone(),
            format!("{}/{}", self.uses, self.max_uses),
            self.expires.clone(),
            self.expired.to_string(),
            labels_cell(&self.labels),
            self.description.clone(),
        ]
    }
}

/// One source target; empty fields are left out of JSON/YAML.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpecView {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_selector: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_group_selector: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
}

impl TargetSpecView {
    fn short(&self) -> String {
        let mut p = Vec::new();
        if !self.cluster_selector.is_empty() {
            p.push(format!("labels {}", self.cluster_selector));
        }
        if !self.cluster_group.is_empty() {
            p.push(format!("group {}", self.cluster_group));
        }
        if !self.cluster_group_selector.is_empty() {
            p.push(format!("groups {}", self.cluster_group_selector));
        }
        if !self.cluster_name.is_empty() {
            p.push(format!("cluster {}", self.cluster_name));
        }
        p.join(" & ")
    }
}

impl From<pb::Target> for TargetSpecView {
    fn from(t: pb::Target) -> Self {
        TargetSpecView {
            name: t.name,
            cluster_selector: t.cluster_selector,
            cluster_group: t.cluster_group,
            cluster_group_selector: t.cluster_group_selector,
            cluster_name: t.cluster_name,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GroupView {
    pub name: String,
    pub selector: String,
    pub labels: BTreeMap<String, String>,
    pub clusters: u32,
    pub bundles: u32,
    pub bundles_ready: u32,
    pub state: String,
}

impl From<pb::Group> for GroupView {
    fn from(g: pb::Group) -> Self {
        GroupView {
            name: g.name,
            selector: g.selector,
            labels: g.labels,
            clusters: g.clusters,
            bundles: g.bundles,
            bundles_ready: g.bundles_ready,
            state: g.state,
        }
    }
}

impl Row for GroupView {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "CLUSTERS", "READY", "STATE", "SELECTOR"];
        if wide {
            h.push("LABELS");
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.name.clone(),
            self.clusters.to_string(),
            format!("{}/{}", self.bundles_ready, self.bundles),
            self.state.clone(),
            if self.selector.is_empty() {
                "<all>".into()
            } else {
                self.selector.clone()
            },
        ];
        if wide {
            c.push(labels_cell(&self.labels));
        }
        c
    }
}

#[derive(Debug, Serialize)]
pub struct TargetView {
    pub cluster: String,
    pub bundle: String,
    pub deployed: bool,
    pub customization: String,
    pub reason: String,
    pub deployment_id: String,
}

impl From<pb::TargetRow> for TargetView {
    fn from(r: pb::TargetRow) -> Self {
        TargetView {
            cluster: r.cluster,
            bundle: r.bundle,
            deployed: r.deployed,
            customization: r.customization,
            reason: r.reason,
            deployment_id: r.deployment_id,
        }
    }
}

impl Row for TargetView {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["CLUSTER", "BUNDLE", "DEPLOYED", "CUSTOMIZATION", "REASON"];
        if wide {
            h.push("DEPLOYMENT");
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.cluster.clone(),
            self.bundle.clone(),
            self.deployed.to_string(),
            if self.customization.is_empty() {
                "-".into()
            } else {
                self.customization.clone()
            },
            self.reason.clone(),
        ];
        if wide {
            c.push(self.deployment_id.clone());
        }
        c
    }
}

#[derive(Debug, Serialize)]
pub struct RolloutPartitionView {
    pub name: String,
    pub clusters: u32,
    pub done: u32,
    pub updating: u32,
    pub waiting: u32,
    pub max_unavailable: u32,
}

#[derive(Debug, Serialize)]
pub struct RolloutView {
    pub bundle: String,
    pub phase: String,
    pub message: String,
    pub paused: bool,
    pub partitions: Vec<RolloutPartitionView>,
}

impl From<pb::Rollout> for RolloutView {
    fn from(r: pb::Rollout) -> Self {
        RolloutView {
            bundle: r.bundle,
            phase: r.phase,
            message: r.message,
            paused: r.paused,
            partitions: r
                .partitions
                .into_iter()
                .map(|p| RolloutPartitionView {
                    name: p.name,
                    clusters: p.clusters,
                    done: p.done,
                    updating: p.updating,
                    waiting: p.waiting,
                    max_unavailable: p.max_unavailable,
                })
                .collect(),
        }
    }
}

impl Row for RolloutView {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["BUNDLE", "PHASE", "PARTITIONS", "MESSAGE"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        vec![
            self.bundle.clone(),
            if self.paused && self.phase != "Paused" {
                format!("{} (paused)", self.phase)
            } else {
                self.phase.clone()
            },
            self.partitions
                .iter()
                .map(|p| format!("{} {}/{}", p.name, p.done, p.clusters))
                .collect::<Vec<_>>()
                .join(", "),
            self.message.clone(),
        ]
    }
}
