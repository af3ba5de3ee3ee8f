//! Rancher Fleet's `fleet.cattle.io/v1alpha1` `GitRepo` and `ClusterGroup`, with every
//! spec field of Fleet's Go types (`pkg/apis/fleet.cattle.io/v1alpha1`), so a hub can
//! read a namespace of existing Fleet objects as they are. Which fields flotilla honours
//! is decided where they are mapped (`flotilla_hub::kube_mode::mapping`), not here.
//!
//! The status carries only what flotilla writes (`observedGeneration`, `commit`,
//! `conditions`); on a cluster where Fleet's own CRDs are installed, those fields exist
//! there too.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::flotilla::{ConfigStatus, Target};
use crate::meta::LabelSelector;

/// A git repository of bundles, as Fleet describes it.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "fleet.cattle.io",
    version = "v1alpha1",
    kind = "GitRepo",
    namespaced,
    status = "ConfigStatus",
    printcolumn = r#"{"name":"Repo","type":"string","jsonPath":".spec.repo"}"#,
    printcolumn = r#"{"name":"Commit","type":"string","jsonPath":".status.commit"}"#,
    printcolumn = r#"{"name":"BundleDeployments-Ready","type":"string","jsonPath":".status.display.readyBundleDeployments"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GitRepoSpec {
    /// The git URL.
    #[serde(default)]
    pub repo: String,
    /// The branch to follow (Fleet's default: `master`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub branch: String,
    /// A commit or tag to deploy instead of the branch's head.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// Namespace every resource of every bundle is forced into.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_namespace: String,
    /// Folders to read bundles from (default: the repo's root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// A Secret of type `kubernetes.io/basic-auth` (`username`, `password`) or
    /// `kubernetes.io/ssh-auth` (`ssh-privatekey`, optional `known_hosts`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_secret_name: String,
    /// A Secret with `username`, `password` and optional `cacerts` for Helm repositories.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub helm_secret_name: String,
    /// A Secret with per-path Helm credentials.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub helm_secret_name_for_paths: String,
    /// Helm credentials go only to chart URLs this regex matches.
    #[serde(
        default,
        rename = "helmRepoURLRegex",
        skip_serializing_if = "String::is_empty"
    )]
    pub helm_repo_url_regex: String,
    /// PEM CA certificates for the git server, base64 (a Go `[]byte`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_bundle: String,
    /// Skip TLS verification of the git server.
    #[serde(default, rename = "insecureSkipTLSVerify")]
    pub insecure_skip_tls_verify: bool,
    /// Where the bundles go; none means the group `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// Polling interval (a Go duration; Fleet's default `15s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<String>,
    /// Webhook only: never poll.
    #[serde(default)]
    pub disable_polling: bool,
    /// Bundles are updated but not deployed while set.
    #[serde(default)]
    pub paused: bool,
    /// The ServiceAccount the agent deploys as.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
    /// Bumping it forces a redeploy.
    #[serde(default)]
    pub force_sync_generation: i64,
    /// How often container image scans run (a Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_scan_interval: Option<String>,
    /// The commit image scans push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_scan_commit: Option<CommitSpec>,
    /// Keep the deployed resources when the GitRepo or a bundle is removed.
    #[serde(default)]
    pub keep_resources: bool,
    /// Delete the target namespace when the GitRepo is removed.
    #[serde(default)]
    pub delete_namespace: bool,
    /// Undo changes made to deployed resources outside git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_drift: Option<CorrectDrift>,
    /// Store bundles in an OCI registry instead of the Kubernetes API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_registry: Option<OciRegistrySpec>,
    /// Spec fields this type does not know (a newer Fleet's, read through Fleet's own
    /// CRD), kept so that the hub reports them as unsupported instead of dropping them
    /// unseen. Not in the schema: flotilla's copy of the CRD prunes unknown fields.
    #[serde(flatten, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitSpec {
    /// Author of the commits image scans push (unsupported by flotilla).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author_name: String,
    /// The author's e-mail (unsupported by flotilla).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author_email: String,
    /// Template of the commit message (unsupported by flotilla).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message_template: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorrectDrift {
    /// Re-apply a resource changed outside git (flotilla reads this from fleet.yaml, not
    /// from the GitRepo).
    #[serde(default)]
    pub enabled: bool,
    /// Delete and recreate a resource whose correction fails.
    #[serde(default)]
    pub force: bool,
    /// Keep the errors of failed corrections in the status (unsupported by flotilla).
    #[serde(default)]
    pub keep_fail_history: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OciRegistrySpec {
    /// The registry and repository bundles are stored in (unsupported by flotilla).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reference: String,
    /// A Secret with the registry's credentials (unsupported by flotilla).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_secret_name: String,
    /// Speak plain HTTP to the registry (unsupported by flotilla).
    #[serde(default, rename = "basicHTTP")]
    pub basic_http: bool,
    /// Skip TLS verification of the registry (unsupported by flotilla).
    #[serde(default, rename = "insecureSkipTLS")]
    pub insecure_skip_tls: bool,
}

/// Fleet's named cluster selector; its own labels are its `metadata.labels`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "fleet.cattle.io",
    version = "v1alpha1",
    kind = "ClusterGroup",
    namespaced,
    status = "ConfigStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterGroupSpec {
    /// The clusters in the group. `{}` matches every cluster; Fleet matches none
    /// without a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}
