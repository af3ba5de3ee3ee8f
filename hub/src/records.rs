//! The records the hub persists, one per store table. Plain data with serde; no logic
//! beyond what a record can say about itself.

use flotilla_model::{
    ClusterName, ContentDigest, DeployOptions, DeploymentId, Labels, ResourceStatus, State,
};
use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch; all persisted times use it.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 for the API; empty for "never".
pub fn rfc3339(unix: i64) -> String {
    if unix <= 0 {
        return String::new();
    }
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub name: ClusterName,
    /// Spoke labels the hub trusts: accepted by an admin, allowed by the join token at
    /// registration, or named by `--self-label-keys`. Hubs before label trust stored the
    /// spoke's registration labels here as `spoke_labels`; they were trusted then and
    /// stay trusted.
    #[serde(default, alias = "spoke_labels")]
    pub accepted_labels: Labels,
    /// What the spoke last said about itself (registration, then each Hello). Never used
    /// for targeting on its own; see `label_trust`.
    #[serde(default)]
    pub reported_labels: Labels,
    /// Labels the join token fixed at registration; they win over the spoke's.
    #[serde(default)]
    pub token_labels: Labels,
    /// Labels an admin set on the hub; they win over everything else.
    #[serde(default)]
    pub hub_labels: Labels,
    /// Keys an admin removed (`flotilla cluster label NAME KEY-`): tombstones that hide
    /// the key from `labels()` whatever it came from, until an admin sets it again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub removed_labels: std::collections::BTreeSet<String>,
    pub registered_at: i64,
    #[serde(default)]
    pub agent_version: String,
    #[serde(default)]
    pub last_seen: i64,
    /// Serials (hex) of the certificates this cluster may connect with: the newest and,
    /// during a renewal, the one before it. Anything else is refused.
    #[serde(default)]
    pub serials: Vec<String>,
    /// Expiry of the newest certificate (unix seconds).
    #[serde(default)]
    pub cert_expires: i64,
    /// Set by `flotilla cluster revoke`: every certificate of this cluster is refused.
    #[serde(default)]
    pub revoked: bool,
    /// SHA-256 of the CA that issued the newest certificate; tells a CA rotation which
    /// clusters have moved to the new CA.
    #[serde(default)]
    pub issuer: String,
    /// The Kubernetes API the spoke last reported in its Hello, kept across restarts so
    /// charts that read `.Capabilities` render the same before it reconnects. `None` for
    /// a target that is no cluster.
    #[serde(default)]
    pub capabilities: Option<CapabilitiesRecord>,
}

/// `Hello.capabilities`. Stored only once `checked`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesRecord {
    pub kube_version: String,
    /// Sorted and without duplicates.
    pub api_versions: Vec<String>,
}

/// Most API versions a Hello may report; a real cluster serves a few hundred.
const MAX_API_VERSIONS: usize = 10_000;
/// Longest API version entry: a DNS subdomain group, a version and a kind.
const MAX_API_VERSION_LEN: usize = 400;
const MAX_KUBE_VERSION_LEN: usize = 64;

impl CapabilitiesRecord {
    /// Checks what a spoke reports of its cluster: bounded, printable, and sorted without
    /// duplicates so that equal clusters render alike. The values reach templates only
    /// as strings, but they are stored, listed and compared, so they are bounded here.
    pub fn checked(mut self) -> Result<Self, String> {
        let token = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
        };
        if !token(&self.kube_version, MAX_KUBE_VERSION_LEN) {
            return Err(format!(
                "kube_version must be 1 to {MAX_KUBE_VERSION_LEN} printable ASCII characters"
            ));
        }
        if self.api_versions.len() > MAX_API_VERSIONS {
            return Err(format!(
                "{} API versions reported, at most {MAX_API_VERSIONS} are accepted",
                self.api_versions.len()
            ));
        }
        if let Some(bad) = self
            .api_versions
            .iter()
            .find(|v| !token(v, MAX_API_VERSION_LEN))
        {
            let shown: String = bad.chars().take(40).collect();
            return Err(format!(
                "API version {shown:?} is not 1 to {MAX_API_VERSION_LEN} printable ASCII characters"
            ));
        }
        self.api_versions.sort();
        self.api_versions.dedup();
        Ok(self)
    }
}

impl ClusterRecord {
    /// A cluster registered at `now`, with no labels, certificates or capabilities yet.
    pub fn new(name: ClusterName, now: i64) -> Self {
        ClusterRecord {
            name,
            accepted_labels: Labels::new(),
            reported_labels: Labels::new(),
            token_labels: Labels::new(),
            hub_labels: Labels::new(),
            removed_labels: Default::default(),
            registered_at: now,
            agent_version: String::new(),
            last_seen: now,
            serials: Vec::new(),
            cert_expires: 0,
            revoked: false,
            issuer: String::new(),
            capabilities: None,
        }
    }

    /// Records a newly issued certificate; keeps the previous one valid so a renewal
    /// never strands a spoke between writing its new certificate and reconnecting.
    pub fn add_serial(&mut self, serial: String, expires: i64, issuer: String) {
        self.serials.push(serial);
        let excess = self.serials.len().saturating_sub(2);
        self.serials.drain(..excess);
        self.cert_expires = expires;
        self.issuer = issuer;
    }

    /// The labels targeting uses, all of them trusted: accepted spoke labels, overridden
    /// key by key by the token's, overridden by the hub's, less the keys an admin
    /// removed. Reported labels never count.
    pub fn labels(&self) -> Labels {
        let mut l = self.accepted_labels.clone();
        l.extend(self.token_labels.clone());
        l.extend(self.hub_labels.clone());
        l.retain(|k, _| !self.removed_labels.contains(k));
        l
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// SHA-256 of the token secret; the secret itself is never stored.
    pub hash: String,
    pub expires_at: i64,
    pub max_uses: u32,
    pub uses: u32,
    #[serde(default)]
    pub description: String,
    pub created_at: i64,
    /// Fixed on every cluster that joins with this token.
    #[serde(default)]
    pub labels: Labels,
    /// Keys whose value the spoke may choose itself, at registration only.
    #[serde(default)]
    pub spoke_label_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpec {
    pub name: String,
    pub repo: String,
    pub branch: String,
    pub paths: Vec<String>,
    /// 0: polling is off, the source is fetched only when a webhook names it.
    pub interval_secs: u64,
    /// ORed; empty means the group `default`.
    #[serde(default)]
    pub targets: Vec<crate::targeting::TargetSpec>,
    /// A full commit id or a tag deployed instead of the branch's head.
    #[serde(default)]
    pub revision: Option<String>,
    /// Nothing new is fetched or published while set.
    #[serde(default)]
    pub paused: bool,
    /// Deploy only commits whose signature verifies against the source's allowed signers
    /// or OpenPGP keys (`crate::git::verify`).
    #[serde(default)]
    pub verify_commits: bool,
    /// HTTP(S) user; the password lives in the source's credential files, not here.
    #[serde(default)]
    pub username: Option<String>,
    /// The non-secret part of the source's chart repository credentials; the secrets
    /// are files (`charts::auth`).
    #[serde(default)]
    pub helm_auth: Option<HelmAuthSpec>,
}

impl SourceSpec {
    /// True when `other` fetches or checks something different, so the next poll must
    /// load its revision again instead of finding it unchanged.
    pub fn fetches_differently(&self, other: &SourceSpec) -> bool {
        self.repo != other.repo
            || self.branch != other.branch
            || self.revision != other.revision
            || self.paths != other.paths
            || self.verify_commits != other.verify_commits
    }
}

/// Who a source's bundles fetch remote charts as, and where that applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelmAuthSpec {
    #[serde(default)]
    pub username: String,
    /// Credentials go only to chart URLs this matches (Fleet's `helmRepoURLRegex`);
    /// empty: all.
    #[serde(default)]
    pub url_regex: String,
    #[serde(default)]
    pub plain_http: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub deployment_id: String,
    pub state: State,
    pub message: String,
    #[serde(default)]
    pub resources: Vec<ResourceStatus>,
    pub updated_at: i64,
}

/// What one cluster should run for one bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub deployment_id: DeploymentId,
    pub digest: ContentDigest,
    pub options: DeployOptions,
}

pub fn status_key(cluster: &ClusterName, bundle: &str) -> String {
    format!("{cluster}/{bundle}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_capabilities_are_sorted_deduplicated_and_bounded() {
        let caps = |kube: &str, apis: &[&str]| CapabilitiesRecord {
            kube_version: kube.into(),
            api_versions: apis.iter().map(|s| s.to_string()).collect(),
        };
        let ok = caps("v1.34.1", &["v1", "apps/v1", "v1"])
            .checked()
            .expect("valid");
        assert_eq!(ok.kube_version, "v1.34.1");
        assert_eq!(ok.api_versions, vec!["apps/v1", "v1"]);

        for bad in [
            caps("", &[]),
            caps("v1.34 1", &[]),
            caps(&"9".repeat(65), &[]),
            caps("v1.34.1", &["apps/v1\n"]),
            caps("v1.34.1", &[""]),
            caps("v1.34.1", &[&"a".repeat(401)]),
        ] {
            assert!(bad.clone().checked().is_err(), "{bad:?} must be refused");
        }
        let many: Vec<String> = (0..=MAX_API_VERSIONS).map(|i| format!("g{i}/v1")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(caps("v1.34.1", &many).checked().is_err());
    }
}
