//! Serializable views of Admin API replies: what `-o json|yaml` print and tables show.
//! Field names are a contract that scripts rely on.

use std::collections::BTreeMap;

use flotilla_proto::convert::LabelOrigin;
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
    /// Where each effective label comes from: `hub`, `token` or `spoke` (accepted).
    pub label_origins: BTreeMap<String, &'static str>,
    /// Keys removed on the hub (`cluster label NAME KEY-`), whatever set them.
    pub removed_labels: Vec<String>,
    /// The Kubernetes version the spoke reported; empty for a directory target.
    pub kube_version: String,
}

/// Each effective label's origin by name (`flotilla_proto::convert::LabelOrigin`).
fn label_origins(c: &pb::Cluster) -> BTreeMap<String, &'static str> {
    c.labels
        .keys()
        .map(|k| (k.clone(), LabelOrigin::of(c, k).name()))
        .collect()
}

impl From<pb::Cluster> for ClusterView {
    fn from(c: pb::Cluster) -> Self {
        ClusterView {
            label_origins: label_origins(&c),
            removed_labels: c.removed_labels,
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
    const KIND: &'static str = "cluster";
    fn name(&self) -> String {
        self.name.clone()
    }
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
    /// Pinned commit or tag; empty when the branch's head is deployed.
    pub revision: String,
    pub polling_disabled: bool,
    pub paused: bool,
    pub username: String,
    /// Names of the credential files the hub holds, never their contents.
    pub credentials: Vec<String>,
    pub verify_commits: bool,
    pub verified_commit: String,
    /// Chart repository credentials: who, where, and which secrets the hub holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm_auth: Option<HelmAuthView>,
}

impl SourceView {
    fn poll(&self) -> String {
        if self.paused {
            "paused".into()
        } else if self.polling_disabled {
            "webhook".into()
        } else {
            format!("{}s", self.interval_seconds)
        }
    }
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
            revision: s.revision,
            polling_disabled: s.polling_disabled,
            paused: s.paused,
            username: s.auth.map(|a| a.username).unwrap_or_default(),
            credentials: s.credentials,
            verify_commits: s.verify_commits,
            verified_commit: s.verified_commit,
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
    const KIND: &'static str = "source";
    fn name(&self) -> String {
        self.name.clone()
    }
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "NAME", "REPO", "BRANCH", "COMMIT", "POLL", "BUNDLES", "ERROR",
        ];
        if wide {
            h.extend(["PATHS", "TARGETS", "AUTH", "VERIFY", "LAST-POLL"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.name.clone(),
            self.repo.clone(),
            if self.revision.is_empty() {
                self.branch.clone()
            } else {
                format!("{}@{}", self.branch, self.revision)
            },
            self.commit.chars().take(12).collect(),
            self.poll(),
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
                {
                    let mut auth = self.credentials.clone();
                    if !self.username.is_empty() {
                        auth.insert(0, format!("user={}", self.username));
                    }
                    auth.join(",")
                },
                match (self.verify_commits, self.verified_commit.is_empty()) {
                    (false, _) => String::new(),
                    (true, true) => "on".into(),
                    (true, false) => "verified".into(),
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
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
    const KIND: &'static str = "bundle";
    fn name(&self) -> String {
        self.name.clone()
    }
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "SOURCE", "READY", "STATE", "WARNINGS", "ERROR"];
        if wide {
            h.extend(["PATH", "COMMIT"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.name.clone(),
            self.source.clone(),
            format!("{}/{}", self.ready, self.clusters),
            self.state.clone(),
            self.warnings.len().to_string(),
            short(&self.error, 80),
        ];
        if wide {
            c.extend([self.path.clone(), self.commit.chars().take(12).collect()]);
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
    /// The bundle's fleet.yaml warnings (file:line: message).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
            warnings: r.warnings,
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

impl ResourceView {
    /// `Deployment web/frontend: NotReady: 0/3 replicas available`.
    pub fn line(&self) -> String {
        let mut out = format!("{} ", self.kind);
        if !self.namespace.is_empty() {
            out.push_str(&format!("{}/", self.namespace));
        }
        out.push_str(&format!("{}: {}", self.name, self.state));
        if !self.message.is_empty() {
            out.push_str(&format!(": {}", short(&self.message, 200)));
        }
        out
    }
}

impl StatusView {
    /// Under a `status --not-ready` row: the whole message when the MESSAGE cell cuts
    /// it, then every non-ready resource.
    pub fn not_ready_details(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if short(&self.message, MESSAGE_CELL) != self.message {
            lines.push(format!("message: {}", self.message.replace('\n', " ")));
        }
        lines.extend(self.resources.iter().map(ResourceView::line));
        lines
    }
}

/// Characters of a status message shown in the MESSAGE column.
const MESSAGE_CELL: usize = 80;

impl Row for StatusView {
    const KIND: &'static str = "status";
    fn name(&self) -> String {
        format!("{}/{}", self.cluster, self.bundle)
    }
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["CLUSTER", "BUNDLE", "STATE", "WARNINGS", "MESSAGE"];
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
            self.warnings.len().to_string(),
            short(&self.message, MESSAGE_CELL),
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

/// A token just created: the only time its join string (its secret) is shown.
#[derive(Debug, Serialize)]
pub struct TokenCreatedView {
    pub id: String,
    pub join: String,
    pub expires: String,
}

impl From<pb::CreateTokenResponse> for TokenCreatedView {
    fn from(t: pb::CreateTokenResponse) -> Self {
        TokenCreatedView {
            id: t.id,
            join: t.join,
            expires: t.expires,
        }
    }
}

impl Row for TokenCreatedView {
    const KIND: &'static str = "token";
    fn name(&self) -> String {
        self.id.clone()
    }
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["ID", "EXPIRES", "JOIN"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        vec![self.id.clone(), self.expires.clone(), self.join.clone()]
    }
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
    const KIND: &'static str = "token";
    fn name(&self) -> String {
        self.id.clone()
    }
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
    const KIND: &'static str = "group";
    fn name(&self) -> String {
        self.name.clone()
    }
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
    const KIND: &'static str = "target";
    fn name(&self) -> String {
        format!("{}/{}", self.cluster, self.bundle)
    }
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
    const KIND: &'static str = "rollout";
    fn name(&self) -> String {
        self.bundle.clone()
    }
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
