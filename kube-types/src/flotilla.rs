//! `flotilla.dev/v1alpha1`: the hub's own configuration as Kubernetes objects. A `Source`
//! carries every field of `flotilla source set` (credentials as Secret references), a
//! `ClusterGroup` a selector, a `Cluster` the hub-side labels and label trust of one
//! registered cluster, and a `BundleStatus` is a read-only view the hub writes.
//!
//! All of them are namespaced: a hub in Kubernetes mode reads one namespace.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{Condition, LabelSelector, SecretKeyRef};

/// A git repository whose bundles the hub deploys (`flotilla source add/set`).
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Source",
    namespaced,
    status = "ConfigStatus",
    printcolumn = r#"{"name":"Repo","type":"string","jsonPath":".spec.repo"}"#,
    printcolumn = r#"{"name":"Commit","type":"string","jsonPath":".status.commit"}"#,
    printcolumn = r#"{"name":"BundleDeployments-Ready","type":"string","jsonPath":".status.display.readyBundleDeployments"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// git URL: file://, git://, https://, ssh:// or git@host:path.
    pub repo: String,
    /// The branch to follow (default `main`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A commit id or tag deployed instead of the branch's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Folders in the repo to read bundles from (default: the repo's root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Polling interval as a Go duration (`15s`, `1m30s`); `0s` turns polling off
    /// (webhook only). Default `15s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<String>,
    /// Nothing new is fetched or deployed while set; the last revision stays deployed.
    #[serde(default)]
    pub paused: bool,
    /// Deploy only commits signed by a key from `auth.allowedSignersSecretRef` or
    /// `auth.gpgKeysSecretRef`.
    #[serde(default)]
    pub verify_commits: bool,
    /// Where the bundles go; targets are ORed, and none means the group `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// How the hub fetches the repository and which commits it trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SourceAuth>,
    /// Credentials for the Helm repositories and OCI registries the bundles name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmAuth>,
}

/// One target: its fields are ANDed (as in Fleet's GitRepo targets).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// A name for the target, used by fleet.yaml's `targetCustomizations`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Clusters whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    /// Clusters in this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_group: Option<String>,
    /// Clusters in the groups whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_group_selector: Option<LabelSelector>,
    /// The cluster of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
}

/// The repository's credentials and commit trust; each secret is a key of a Secret in
/// the Source's namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceAuth {
    /// HTTP(S) user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The HTTP(S) password or token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// SSH private key for ssh:// and git@host:path repos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_secret_ref: Option<SecretKeyRef>,
    /// The host keys SSH accepts (known_hosts format); any other host is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_secret_ref: Option<SecretKeyRef>,
    /// PEM CA certificates an https:// server must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// The secret this source's webhooks are signed with, instead of the hub's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_ref: Option<SecretKeyRef>,
    /// SSH keys trusted to sign commits (git's allowedSignersFile format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_signers_secret_ref: Option<SecretKeyRef>,
    /// OpenPGP public keys trusted to sign commits (armored or binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpg_keys_secret_ref: Option<SecretKeyRef>,
}

/// Chart repository credentials (`flotilla source set --helm-*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmAuth {
    /// User for basic auth and OCI token requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// PEM CA bundle: the only roots trusted for the repositories' TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A bearer token for an OCI registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// Send the credentials only to chart URLs this regex matches.
    #[serde(
        default,
        rename = "repoURLRegex",
        skip_serializing_if = "Option::is_none"
    )]
    pub repo_url_regex: Option<String>,
    /// Speak plain HTTP to OCI registries (Helm's --plain-http).
    #[serde(default, rename = "plainHTTP")]
    pub plain_http: bool,
}

/// What the hub reports on a configuration object it read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// The `metadata.generation` the hub last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The commit deployed (sources only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// `Ready`, and `Unsupported` when fields were not applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Sources only: clusters on which every bundle of the source is Ready (Fleet's
    /// GitRepo `readyClusters`). Written by the hub's bundle status writer, at most every
    /// few seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_clusters: Option<u32>,
    /// Sources only: clusters that some bundle of the source targets (Fleet's
    /// `desiredReadyClusters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_ready_clusters: Option<u32>,
    /// Sources only: the source's (cluster, bundle) pairs per state, in the shape of
    /// Fleet's `status.summary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<BundleSummary>,
    /// Sources only: the same counts for a table, as Fleet shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<StatusDisplay>,
}

/// Fleet's `status.display` of a GitRepo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusDisplay {
    /// `READY/DESIRED` (cluster, bundle) pairs, e.g. `3/4`.
    #[serde(default)]
    pub ready_bundle_deployments: String,
}

/// Deployments per state, in the shape of Fleet's `BundleSummary`: one count per
/// (cluster, bundle) pair, and `desiredReady` the number of pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleSummary {
    /// Pairs that should be Ready: every targeted (cluster, bundle).
    pub desired_ready: u32,
    /// Applied, and every resource healthy.
    pub ready: u32,
    /// Applied; some resource is not healthy yet (a rollout in progress, a Job running).
    #[serde(default)]
    pub not_ready: u32,
    /// Sent to the spoke, not applied yet.
    #[serde(default)]
    pub wait_applied: u32,
    /// Applying failed, or the revision does not render for that cluster.
    #[serde(default)]
    pub err_applied: u32,
    /// The cluster runs a deployment other than the one it should.
    #[serde(default)]
    pub out_of_sync: u32,
    /// Someone changed a deployed resource outside git (drift).
    #[serde(default)]
    pub modified: u32,
    /// Held back: by `dependsOn` or a staged rollout.
    #[serde(default)]
    pub pending: u32,
    /// flotilla only: the cluster's spoke is not connected.
    #[serde(default)]
    pub offline: u32,
}

/// A named label selector over clusters. The group's own labels (for a target's
/// `clusterGroupSelector`) are its `metadata.labels`.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "ClusterGroup",
    namespaced,
    status = "ConfigStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterGroupSpec {
    /// The clusters in the group; `{}` matches every cluster.
    pub selector: LabelSelector,
}

/// One registered cluster as the hub sees it. The object's name is the cluster's name;
/// the spec holds what an admin decides on the hub, the status what the hub knows.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Agent","type":"string","jsonPath":".status.agentVersion"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Hub-side labels: they win over the join token's and the spoke's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Keys of labels the spoke reports that the hub trusts (`flotilla cluster accept-labels`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accept_labels: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The `metadata.generation` the hub last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The labels targeting uses: trusted spoke labels, then the token's, then the hub's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What the spoke last said about itself; never used for targeting on its own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reported_labels: BTreeMap<String, String>,
    /// The version of the cluster's spoke, from its last Hello.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// When the spoke was last connected (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_seen: String,
    /// `Ready`: registered and connected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A read-only view of one bundle's deployment, written by the hub in Kubernetes mode
/// (one object per bundle, named after it, owned by its `Source` or `GitRepo`): users read
/// it with `kubectl get bundlestatuses` and `kubectl wait --for=condition=Ready`, and
/// nothing the hub does depends on its content. Edits are overwritten.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "BundleStatus",
    namespaced,
    status = "BundleStatusStatus",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source"}"#,
    printcolumn = r#"{"name":"Commit","type":"string","jsonPath":".status.commit"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyClusters"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReadyClusters"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BundleStatusSpec {
    /// The source the bundle comes from.
    pub source: String,
    /// The bundle's folder in the source's repository.
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleStatusStatus {
    /// The `metadata.generation` this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The commit the bundle was rendered from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    /// The deployment ids the targeted clusters should run (one per distinct
    /// customization), sorted; at most 10, `deployments` counts them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployment_ids: Vec<String>,
    /// How many distinct deployments the bundle has.
    #[serde(default)]
    pub deployments: u32,
    /// The worst state over its clusters (ErrApplied > Offline > WaitApplied > Modified >
    /// OutOfSync > Pending > NotReady > Ready); empty when it targets no cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Targeted clusters on which the bundle is Ready.
    #[serde(default)]
    pub ready_clusters: u32,
    /// Clusters the bundle targets.
    #[serde(default)]
    pub desired_ready_clusters: u32,
    /// Clusters per state.
    #[serde(default)]
    pub summary: BundleSummary,
    /// Targeted clusters that are not Ready, worst first, then by name; at most 50, each
    /// message at most 512 bytes. `flotilla status NAME --not-ready` lists all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_ready: Vec<ClusterBundleState>,
    /// `Ready`: `True` when every targeted cluster is Ready (reason `Ready`, or
    /// `NoTargets` when it targets none); else `False` with the worst state as the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One cluster on which a bundle is not Ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterBundleState {
    /// The cluster's name.
    pub cluster: String,
    /// Its state: `NotReady`, `WaitApplied`, `ErrApplied`, ...
    pub state: String,
    /// Why, as the spoke or the hub reports it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
