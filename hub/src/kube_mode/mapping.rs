//! Kubernetes objects → the hub's configuration. Pure: no client, no clock.
//!
//! Every spec field of Fleet's `GitRepo` and `ClusterGroup` is either mapped here or
//! listed as [`Unsupported`] with the reason, and that list is what the object's
//! `Unsupported` condition says. Secret references come out as [`SecretUse`]s; the
//! controller reads the Secrets and [`resolve`] turns them into a [`SourceConfig`], so a
//! changed Secret is a changed config.

use std::borrow::Cow;
use std::collections::BTreeMap;

use flotilla_kube_types::{fleet, flotilla, meta};
use flotilla_model::{LabelSelector, Labels, labels, names};

use super::{ClusterLabels, CredentialKind, HelmAuthSpec, HelmSecrets, SourceConfig};
use crate::credentials::MAX_CREDENTIAL_BYTES;
use crate::records::SourceSpec;
use crate::targeting::{GroupSpec, TargetSpec};

/// Fleet's branch when a GitRepo names none.
pub const FLEET_DEFAULT_BRANCH: &str = "master";
/// flotilla's branch when a Source names none (as `flotilla source add`).
pub const DEFAULT_BRANCH: &str = "main";
/// The polling interval when none is given, in Fleet and in flotilla.
pub const DEFAULT_INTERVAL_SECS: u64 = 15;

/// Why an object cannot be applied at all; it is `Stalled` until it changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("Secret {secret} not found in the namespace")]
    MissingSecret { secret: String },
    #[error("Secret {secret} has no key {key:?} (for {field})")]
    MissingKey {
        secret: String,
        key: String,
        field: String,
    },
    #[error("Secret {secret} key {key:?} is {len} bytes, over the limit of {MAX_CREDENTIAL_BYTES}")]
    TooLarge {
        secret: String,
        key: String,
        len: usize,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> MapError {
    MapError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A spec field that is set but not honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The field's path, e.g. `spec.serviceAccount`.
    pub field: Cow<'static, str>,
    pub reason: &'static str,
}

/// At most this many unknown fields are named one by one; the rest are counted.
const UNKNOWN_LISTED: usize = 20;

/// A `GitRepo`'s spec fields that no flotilla type knows, as `Unsupported` entries.
fn unknown_fields<'a>(keys: impl ExactSizeIterator<Item = &'a String>) -> Vec<Unsupported> {
    const REASON: &str = "not a field this flotilla knows (a newer Fleet's?); ignored";
    let total = keys.len();
    let mut out: Vec<Unsupported> = keys
        .take(UNKNOWN_LISTED)
        .map(|k| Unsupported {
            field: Cow::Owned(format!("spec.{}", k.chars().take(100).collect::<String>())),
            reason: REASON,
        })
        .collect();
    if total > UNKNOWN_LISTED {
        out.push(Unsupported {
            field: Cow::Owned(format!("{} more spec fields", total - UNKNOWN_LISTED)),
            reason: REASON,
        });
    }
    out
}

/// The message of the `Unsupported` condition: one `field: reason` per line, so a
/// person sees every ignored field at once.
pub fn unsupported_message(list: &[Unsupported]) -> String {
    list.iter()
        .map(|u| format!("{}: {}", u.field, u.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where one Secret key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretTarget {
    Credential(CredentialKind),
    Username,
    HelmUsername,
    HelmPassword,
    HelmCa,
    HelmToken,
}

/// One Secret key a source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    pub secret: String,
    pub key: String,
    pub into: SecretTarget,
    /// Fleet's Secrets hold either basic-auth or ssh-auth keys: a missing optional key
    /// is skipped, a missing required one stalls the object.
    pub optional: bool,
    /// The spec field that named it, for messages.
    pub field: &'static str,
}

/// A source before its Secrets are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDraft {
    pub spec: SourceSpec,
    /// Credentials given inline (Fleet's `caBundle`).
    pub inline: Vec<(CredentialKind, Vec<u8>)>,
    pub secrets: Vec<SecretUse>,
    pub unsupported: Vec<Unsupported>,
}

impl SourceDraft {
    /// The Secrets to read, each once.
    pub fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.secrets.iter().map(|s| s.secret.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Fills a draft's secrets from Secret data (`lookup(name)` is the Secret's `data`).
pub fn resolve(
    draft: SourceDraft,
    lookup: impl Fn(&str) -> Option<BTreeMap<String, Vec<u8>>>,
) -> Result<SourceConfig, MapError> {
    let SourceDraft {
        mut spec,
        inline,
        secrets,
        ..
    } = draft;
    let mut credentials = inline;
    let mut helm = HelmSecrets::default();
    for u in secrets {
        let data = lookup(&u.secret).ok_or_else(|| MapError::MissingSecret {
            secret: u.secret.clone(),
        })?;
        let Some(value) = data.get(&u.key) else {
            if u.optional {
                continue;
            }
            return Err(MapError::MissingKey {
                secret: u.secret,
                key: u.key,
                field: u.field.to_string(),
            });
        };
        if value.len() > MAX_CREDENTIAL_BYTES {
            return Err(MapError::TooLarge {
                secret: u.secret,
                key: u.key,
                len: value.len(),
            });
        }
        let text = || {
            String::from_utf8(value.trim_ascii().to_vec()).map_err(|_| {
                invalid(
                    u.field,
                    format!("Secret {} key {:?} is not UTF-8", u.secret, u.key),
                )
            })
        };
        match u.into {
            SecretTarget::Credential(kind) => {
                credentials.retain(|(k, _)| *k != kind);
                credentials.push((kind, value.clone()));
            }
            SecretTarget::Username => spec.username = Some(text()?),
            SecretTarget::HelmUsername => {
                spec.helm_auth
                    .get_or_insert_with(HelmAuthSpec::default)
                    .username = text()?
            }
            SecretTarget::HelmPassword => helm.password = value.trim_ascii_end().to_vec(),
            SecretTarget::HelmCa => helm.ca_pem = value.clone(),
            SecretTarget::HelmToken => helm.token = value.trim_ascii_end().to_vec(),
        }
    }
    credentials.sort_by_key(|(k, _)| k.name());
    Ok(SourceConfig {
        spec,
        credentials,
        helm,
    })
}

/// A Fleet `GitRepo` as a source.
pub fn fleet_git_repo(name: &str, spec: &fleet::GitRepoSpec) -> Result<SourceDraft, MapError> {
    check_name(name)?;
    let mut unsupported = Vec::new();
    let mut flag = |set: bool, field, reason| {
        if set {
            unsupported.push(Unsupported {
                field: Cow::Borrowed(field),
                reason,
            });
        }
    };
    flag(
        !spec.target_namespace.is_empty(),
        "spec.targetNamespace",
        "flotilla has no source-wide namespace override; set namespace or defaultNamespace in fleet.yaml",
    );
    flag(
        !spec.helm_secret_name_for_paths.is_empty(),
        "spec.helmSecretNameForPaths",
        "per-path Helm credentials are not supported; use helmSecretName",
    );
    flag(
        spec.insecure_skip_tls_verify,
        "spec.insecureSkipTLSVerify",
        "the hub always verifies TLS; put the server's CA in caBundle",
    );
    flag(
        !spec.service_account.is_empty(),
        "spec.serviceAccount",
        "spokes apply with their own credentials, limited by their spoke policy",
    );
    flag(
        spec.force_sync_generation != 0,
        "spec.forceSyncGeneration",
        "a forced redeploy is not supported yet; change the revision or the content instead",
    );
    flag(
        spec.image_scan_interval.is_some() || spec.image_scan_commit.is_some(),
        "spec.imageScanInterval/imageScanCommit",
        "flotilla does not scan images or push commits",
    );
    flag(
        spec.keep_resources,
        "spec.keepResources",
        "set keepResources in each bundle's fleet.yaml",
    );
    flag(
        spec.delete_namespace,
        "spec.deleteNamespace",
        "flotilla never deletes namespaces it did not create from a bundle",
    );
    flag(
        spec.correct_drift
            .as_ref()
            .is_some_and(|c| c.enabled || c.force || c.keep_fail_history),
        "spec.correctDrift",
        "set correctDrift in each bundle's fleet.yaml",
    );
    flag(
        spec.oci_registry
            .as_ref()
            .is_some_and(|o| !o.reference.is_empty()),
        "spec.ociRegistry",
        "the hub keeps rendered bundles in its own store",
    );
    unsupported.extend(unknown_fields(spec.unknown.keys()));

    let interval_secs = if spec.disable_polling {
        0
    } else {
        interval("spec.pollingInterval", spec.polling_interval.as_deref())?
    };
    let mut inline = Vec::new();
    if !spec.ca_bundle.is_empty() {
        use base64::Engine as _;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(spec.ca_bundle.trim())
            .map_err(|e| invalid("spec.caBundle", format!("not base64: {e}")))?;
        if pem.len() > MAX_CREDENTIAL_BYTES {
            return Err(invalid("spec.caBundle", "over 1 MiB"));
        }
        inline.push((CredentialKind::Ca, pem));
    }
    let mut secrets = Vec::new();
    if !spec.client_secret_name.is_empty() {
        let s = &spec.client_secret_name;
        for (key, into) in [
            ("username", SecretTarget::Username),
            (
                "password",
                SecretTarget::Credential(CredentialKind::Password),
            ),
            (
                "ssh-privatekey",
                SecretTarget::Credential(CredentialKind::SshKey),
            ),
            (
                "known_hosts",
                SecretTarget::Credential(CredentialKind::KnownHosts),
            ),
        ] {
            secrets.push(secret_use(s, key, into, true, "spec.clientSecretName"));
        }
    }
    let mut helm_auth = None;
    if !spec.helm_secret_name.is_empty() {
        let s = &spec.helm_secret_name;
        for (key, into) in [
            ("username", SecretTarget::HelmUsername),
            ("password", SecretTarget::HelmPassword),
            ("cacerts", SecretTarget::HelmCa),
        ] {
            secrets.push(secret_use(s, key, into, true, "spec.helmSecretName"));
        }
        helm_auth = Some(HelmAuthSpec {
            url_regex: spec.helm_repo_url_regex.clone(),
            ..HelmAuthSpec::default()
        });
    } else if !spec.helm_repo_url_regex.is_empty() {
        unsupported.push(Unsupported {
            field: Cow::Borrowed("spec.helmRepoURLRegex"),
            reason: "only meaningful with helmSecretName",
        });
    }
    let source = SourceSpec {
        name: name.to_string(),
        repo: required("spec.repo", &spec.repo)?,
        branch: non_empty(&spec.branch).unwrap_or_else(|| FLEET_DEFAULT_BRANCH.to_string()),
        paths: paths(&spec.paths),
        interval_secs,
        targets: targets(&spec.targets)?,
        revision: non_empty(&spec.revision),
        paused: spec.paused,
        verify_commits: false,
        username: None,
        helm_auth,
    };
    Ok(SourceDraft {
        spec: source,
        inline,
        secrets,
        unsupported,
    })
}

/// A flotilla `Source`: every field is the hub's own, so nothing is unsupported.
pub fn source(name: &str, spec: &flotilla::SourceSpec) -> Result<SourceDraft, MapError> {
    check_name(name)?;
    let auth = spec.auth.clone().unwrap_or_default();
    let mut secrets = Vec::new();
    let mut add = |r: &Option<meta::SecretKeyRef>, into, field| {
        if let Some(r) = r {
            secrets.push(secret_use(&r.name, &r.key, into, false, field));
        }
    };
    add(
        &auth.password_secret_ref,
        SecretTarget::Credential(CredentialKind::Password),
        "spec.auth.passwordSecretRef",
    );
    add(
        &auth.ssh_key_secret_ref,
        SecretTarget::Credential(CredentialKind::SshKey),
        "spec.auth.sshKeySecretRef",
    );
    add(
        &auth.known_hosts_secret_ref,
        SecretTarget::Credential(CredentialKind::KnownHosts),
        "spec.auth.knownHostsSecretRef",
    );
    add(
        &auth.ca_secret_ref,
        SecretTarget::Credential(CredentialKind::Ca),
        "spec.auth.caSecretRef",
    );
    add(
        &auth.webhook_secret_ref,
        SecretTarget::Credential(CredentialKind::WebhookSecret),
        "spec.auth.webhookSecretRef",
    );
    add(
        &auth.allowed_signers_secret_ref,
        SecretTarget::Credential(CredentialKind::AllowedSigners),
        "spec.auth.allowedSignersSecretRef",
    );
    add(
        &auth.gpg_keys_secret_ref,
        SecretTarget::Credential(CredentialKind::GpgKeys),
        "spec.auth.gpgKeysSecretRef",
    );
    let helm_auth = spec.helm.as_ref().map(|h| {
        add(
            &h.password_secret_ref,
            SecretTarget::HelmPassword,
            "spec.helm.passwordSecretRef",
        );
        add(
            &h.ca_secret_ref,
            SecretTarget::HelmCa,
            "spec.helm.caSecretRef",
        );
        add(
            &h.token_secret_ref,
            SecretTarget::HelmToken,
            "spec.helm.tokenSecretRef",
        );
        HelmAuthSpec {
            username: h.username.clone().unwrap_or_default(),
            url_regex: h.repo_url_regex.clone().unwrap_or_default(),
            plain_http: h.plain_http,
        }
    });
    let source = SourceSpec {
        name: name.to_string(),
        repo: required("spec.repo", &spec.repo)?,
        branch: spec
            .branch
            .as_deref()
            .and_then(non_empty)
            .unwrap_or_else(|| DEFAULT_BRANCH.to_string()),
        paths: paths(&spec.paths),
        interval_secs: interval("spec.pollingInterval", spec.polling_interval.as_deref())?,
        targets: targets(&spec.targets)?,
        revision: spec.revision.as_deref().and_then(non_empty),
        paused: spec.paused,
        verify_commits: spec.verify_commits,
        username: auth.username.as_deref().and_then(non_empty),
        helm_auth,
    };
    Ok(SourceDraft {
        spec: source,
        inline: Vec::new(),
        secrets,
        unsupported: Vec::new(),
    })
}

/// A Fleet `ClusterGroup`. Fleet matches no cluster when `selector` is missing; the
/// hub has no such group, so that is refused rather than widened to every cluster.
pub fn fleet_cluster_group(
    name: &str,
    labels: &BTreeMap<String, String>,
    spec: &fleet::ClusterGroupSpec,
) -> Result<GroupSpec, MapError> {
    let selector = spec.selector.as_ref().ok_or_else(|| {
        invalid(
            "spec.selector",
            "missing: Fleet matches no cluster without a selector; give `selector: {}` to match all",
        )
    })?;
    group(name, labels, selector)
}

/// A flotilla `ClusterGroup`.
pub fn cluster_group(
    name: &str,
    labels: &BTreeMap<String, String>,
    spec: &flotilla::ClusterGroupSpec,
) -> Result<GroupSpec, MapError> {
    group(name, labels, &spec.selector)
}

fn group(
    name: &str,
    labels: &BTreeMap<String, String>,
    selector: &meta::LabelSelector,
) -> Result<GroupSpec, MapError> {
    check_name(name)?;
    Ok(GroupSpec {
        name: name.to_string(),
        selector: label_selector("spec.selector", selector)?,
        labels: labels.clone(),
    })
}

/// A flotilla `Cluster`'s hub-side labels and trusted keys.
pub fn cluster(name: &str, spec: &flotilla::ClusterSpec) -> Result<ClusterLabels, MapError> {
    check_name(name)?;
    for (k, v) in &spec.labels {
        labels::validate_key(k)
            .and_then(|_| labels::validate_value(v))
            .map_err(|e| invalid("spec.labels", e.to_string()))?;
    }
    for k in &spec.accept_labels {
        labels::validate_key(k).map_err(|e| invalid("spec.acceptLabels", e.to_string()))?;
    }
    Ok(ClusterLabels {
        labels: spec.labels.clone() as Labels,
        accept: spec.accept_labels.clone(),
    })
}

fn check_name(name: &str) -> Result<(), MapError> {
    if names::is_dns_label(name) {
        Ok(())
    } else {
        Err(invalid(
            "metadata.name",
            format!("{name:?} must be a DNS label (at most 63 lowercase letters, digits, '-')"),
        ))
    }
}

fn secret_use(
    secret: &str,
    key: &str,
    into: SecretTarget,
    optional: bool,
    field: &'static str,
) -> SecretUse {
    SecretUse {
        secret: secret.to_string(),
        key: key.to_string(),
        into,
        optional,
        field,
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn required(field: &str, s: &str) -> Result<String, MapError> {
    non_empty(s).ok_or_else(|| invalid(field, "required"))
}

/// The repo's root when none are given, as `flotilla source add`.
fn paths(given: &[String]) -> Vec<String> {
    if given.is_empty() {
        vec![".".to_string()]
    } else {
        given.to_vec()
    }
}

/// A Go duration (`15s`, `1m30s`, `2h`) in whole seconds; sub-second intervals poll
/// every second, and `0s` turns polling off.
fn interval(field: &str, given: Option<&str>) -> Result<u64, MapError> {
    let Some(text) = given.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(DEFAULT_INTERVAL_SECS);
    };
    let bad = |why: String| {
        invalid(
            field,
            format!("{text:?}: {why} (a Go duration such as 15s or 1m30s)"),
        )
    };
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| digits + i);
        let (part, tail) = rest.split_at(unit);
        if part[digits..] == *"d" {
            return Err(bad("Go durations have no unit d".into()));
        }
        let d = flotilla_model::duration::parse_duration(part).map_err(bad)?;
        total = total
            .checked_add(d)
            .ok_or_else(|| bad("too large".into()))?;
        rest = tail;
    }
    Ok(if total.is_zero() {
        0
    } else {
        total.as_secs().max(1)
    })
}

fn targets(given: &[flotilla::Target]) -> Result<Vec<TargetSpec>, MapError> {
    given
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let selector = |which: &str, s: &Option<meta::LabelSelector>| {
                s.as_ref()
                    .map(|s| label_selector(&format!("spec.targets[{i}].{which}"), s))
                    .transpose()
            };
            Ok(TargetSpec {
                name: t.name.clone(),
                cluster_selector: selector("clusterSelector", &t.cluster_selector)?,
                cluster_group: t.cluster_group.as_deref().and_then(non_empty),
                cluster_group_selector: selector(
                    "clusterGroupSelector",
                    &t.cluster_group_selector,
                )?,
                cluster_name: t.cluster_name.as_deref().and_then(non_empty),
            })
        })
        .collect()
}

/// The wire selector (strings) as the model's checked one.
fn label_selector(field: &str, s: &meta::LabelSelector) -> Result<LabelSelector, MapError> {
    let value = serde_json::to_value(s).map_err(|e| invalid(field, e.to_string()))?;
    let sel: LabelSelector = serde_json::from_value(value).map_err(|e| {
        invalid(
            field,
            format!("{e} (operators are In, NotIn, Exists, DoesNotExist)"),
        )
    })?;
    sel.validate().map_err(|e| invalid(field, e.to_string()))?;
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_model::{Operator, Requirement};

    fn git_repo(yaml: &str) -> fleet::GitRepoSpec {
        serde_saphyr::from_str(yaml).expect("test fixture is valid")
    }

    fn sel(yaml: &str) -> LabelSelector {
        serde_saphyr::from_str(yaml).expect("test fixture is valid")
    }

    #[test]
    fn a_minimal_git_repo_gets_fleets_defaults() {
        let d = fleet_git_repo("web", &git_repo("repo: https://example.com/r.git")).expect("maps");
        assert_eq!(
            d.spec,
            SourceSpec {
                name: "web".into(),
                repo: "https://example.com/r.git".into(),
                branch: "master".into(),
                paths: vec![".".into()],
                interval_secs: 15,
                targets: vec![],
                revision: None,
                paused: false,
                verify_commits: false,
                username: None,
                helm_auth: None,
            }
        );
        assert!(d.unsupported.is_empty());
        assert!(d.secrets.is_empty() && d.inline.is_empty());
    }

    #[test]
    fn every_supported_git_repo_field_is_mapped() {
        let d = fleet_git_repo(
            "apps",
            &git_repo(
                r#"
repo: git@github.com:org/fleet.git
branch: prod
revision: v1.2.0
paths: [apps, infra]
pollingInterval: 1m30s
paused: true
caBundle: UEVN
clientSecretName: git-auth
helmSecretName: helm-auth
helmRepoURLRegex: ^https://charts\.example\.com/
targets:
  - name: prod
    clusterSelector: {matchLabels: {env: prod}, matchExpressions: [{key: tier, operator: In, values: [a, b]}]}
  - clusterGroup: edge
  - clusterGroupSelector: {matchLabels: {region: eu}}
  - clusterName: one
"#,
            ),
        )
        .expect("maps");
        let s = &d.spec;
        assert_eq!(s.repo, "git@github.com:org/fleet.git");
        assert_eq!(
            (s.branch.as_str(), s.revision.as_deref()),
            ("prod", Some("v1.2.0"))
        );
        assert_eq!(s.paths, ["apps", "infra"]);
        assert_eq!(s.interval_secs, 90);
        assert!(s.paused);
        assert_eq!(
            s.targets,
            vec![
                TargetSpec {
                    name: "prod".into(),
                    cluster_selector: Some(LabelSelector {
                        match_labels: [("env".to_string(), "prod".to_string())].into(),
                        match_expressions: vec![Requirement {
                            key: "tier".into(),
                            operator: Operator::In,
                            values: vec!["a".into(), "b".into()],
                        }],
                    }),
                    ..TargetSpec::default()
                },
                TargetSpec {
                    cluster_group: Some("edge".into()),
                    ..TargetSpec::default()
                },
                TargetSpec {
                    cluster_group_selector: Some(sel("matchLabels: {region: eu}")),
                    ..TargetSpec::default()
                },
                TargetSpec {
                    cluster_name: Some("one".into()),
                    ..TargetSpec::default()
                },
            ]
        );
        assert_eq!(d.inline, vec![(CredentialKind::Ca, b"PEM".to_vec())]);
        assert_eq!(
            s.helm_auth,
            Some(HelmAuthSpec {
                username: String::new(),
                url_regex: r"^https://charts\.example\.com/".into(),
                plain_http: false,
            })
        );
        assert_eq!(d.secret_names(), ["git-auth", "helm-auth"]);
        assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);
    }

    #[test]
    fn every_unsupported_git_repo_field_is_reported_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("targetNamespace: apps", "spec.targetNamespace"),
            (
                "helmSecretNameForPaths: per-path",
                "spec.helmSecretNameForPaths",
            ),
            ("insecureSkipTLSVerify: true", "spec.insecureSkipTLSVerify"),
            ("serviceAccount: deployer", "spec.serviceAccount"),
            ("forceSyncGeneration: 2", "spec.forceSyncGeneration"),
            (
                "imageScanInterval: 5m",
                "spec.imageScanInterval/imageScanCommit",
            ),
            (
                "imageScanCommit: {authorName: bot}",
                "spec.imageScanInterval/imageScanCommit",
            ),
            ("keepResources: true", "spec.keepResources"),
            ("deleteNamespace: true", "spec.deleteNamespace"),
            ("correctDrift: {enabled: true}", "spec.correctDrift"),
            ("ociRegistry: {reference: oci://r/x}", "spec.ociRegistry"),
            ("helmRepoURLRegex: x", "spec.helmRepoURLRegex"),
        ];
        for (field_yaml, field) in cases {
            let yaml = format!("repo: https://e/r.git\n{field_yaml}\n");
            let d = fleet_git_repo("r", &git_repo(&yaml)).expect("still maps");
            assert_eq!(
                d.unsupported.iter().map(|u| &*u.field).collect::<Vec<_>>(),
                [*field],
                "{field_yaml}"
            );
            assert!(!d.unsupported[0].reason.is_empty());
        }
        // A field of a newer Fleet is reported, not dropped unseen.
        let d = fleet_git_repo(
            "r",
            &git_repo("repo: https://e/r.git\nbundles: [{base: x}]\n"),
        )
        .expect("still maps");
        assert_eq!(
            d.unsupported.iter().map(|u| &*u.field).collect::<Vec<_>>(),
            ["spec.bundles"]
        );
        // Set to their defaults, the same fields are not worth a word.
        let quiet = git_repo(
            "repo: https://e/r.git\ninsecureSkipTLSVerify: false\nkeepResources: false\ncorrectDrift: {enabled: false}\nforceSyncGeneration: 0\n",
        );
        assert!(
            fleet_git_repo("r", &quiet)
                .expect("maps")
                .unsupported
                .is_empty()
        );
    }

    #[test]
    fn polling_follows_go_durations_and_disable_polling() {
        for (yaml, secs) in [
            ("pollingInterval: 15s", 15),
            ("pollingInterval: 2h", 7200),
            ("pollingInterval: 1h1m1s", 3661),
            ("pollingInterval: 500ms", 1),
            ("pollingInterval: 0s", 0),
            ("pollingInterval: 1m\ndisablePolling: true", 0),
        ] {
            let d = fleet_git_repo("r", &git_repo(&format!("repo: x\n{yaml}"))).expect(yaml);
            assert_eq!(d.spec.interval_secs, secs, "{yaml}");
        }
        for bad in [
            "pollingInterval: soon",
            "pollingInterval: 1d",
            "pollingInterval: 1.5h",
        ] {
            let e = fleet_git_repo("r", &git_repo(&format!("repo: x\n{bad}")));
            assert!(
                matches!(&e, Err(MapError::Invalid { field, .. }) if field == "spec.pollingInterval"),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn objects_that_cannot_be_a_source_say_which_field() {
        for (name, yaml, field) in [
            ("r", "branch: main", "spec.repo"),
            ("Not_A_Label", "repo: x", "metadata.name"),
            ("r", "repo: x\ncaBundle: '%%%'", "spec.caBundle"),
            (
                "r",
                "repo: x\ntargets: [{clusterSelector: {matchExpressions: [{key: a, operator: Near}]}}]",
                "spec.targets[0].clusterSelector",
            ),
            (
                "r",
                "repo: x\ntargets: [{clusterSelector: {matchExpressions: [{key: a, operator: In}]}}]",
                "spec.targets[0].clusterSelector",
            ),
        ] {
            match fleet_git_repo(name, &git_repo(yaml)) {
                Err(MapError::Invalid { field: f, .. }) => assert_eq!(f, field, "{yaml}"),
                other => panic!("{yaml}: {other:?}"),
            }
        }
    }

    #[test]
    fn fleet_secrets_fill_basic_auth_ssh_auth_and_helm() {
        let d = fleet_git_repo(
            "r",
            &git_repo("repo: x\nclientSecretName: git\nhelmSecretName: helm\n"),
        )
        .expect("maps");
        let secrets: BTreeMap<&str, BTreeMap<String, Vec<u8>>> = [
            (
                "git",
                [
                    ("username".to_string(), b"bot\n".to_vec()),
                    ("password".to_string(), b"pw".to_vec()),
                ]
                .into(),
            ),
            (
                "helm",
                [
                    ("username".to_string(), b"chart".to_vec()),
                    ("password".to_string(), b"hpw\n".to_vec()),
                    ("cacerts".to_string(), b"CA".to_vec()),
                ]
                .into(),
            ),
        ]
        .into();
        let c = resolve(d, |n| secrets.get(n).cloned()).expect("resolves");
        assert_eq!(c.spec.username.as_deref(), Some("bot"));
        assert_eq!(
            c.credentials,
            vec![(CredentialKind::Password, b"pw".to_vec())]
        );
        assert_eq!(
            c.spec.helm_auth.as_ref().map(|h| h.username.as_str()),
            Some("chart")
        );
        assert_eq!(
            c.helm,
            HelmSecrets {
                password: b"hpw".to_vec(),
                ca_pem: b"CA".to_vec(),
                token: vec![],
            }
        );

        let ssh = fleet_git_repo("r", &git_repo("repo: x\nclientSecretName: git\n")).expect("maps");
        let data: BTreeMap<String, Vec<u8>> = [
            ("ssh-privatekey".to_string(), b"KEY".to_vec()),
            ("known_hosts".to_string(), b"HOSTS".to_vec()),
        ]
        .into();
        let c = resolve(ssh.clone(), |_| Some(data.clone())).expect("resolves");
        assert_eq!(
            c.credentials,
            vec![
                (CredentialKind::KnownHosts, b"HOSTS".to_vec()),
                (CredentialKind::SshKey, b"KEY".to_vec()),
            ]
        );
        assert_eq!(
            resolve(ssh, |_| None),
            Err(MapError::MissingSecret {
                secret: "git".into()
            })
        );
    }

    #[test]
    fn a_flotilla_source_maps_every_source_set_field() {
        let spec: flotilla::SourceSpec = serde_saphyr::from_str(
            r#"
repo: https://git.example.com/fleet.git
branch: release
revision: 0123456789abcdef0123456789abcdef01234567
paths: [bundles]
pollingInterval: 0s
paused: true
verifyCommits: true
targets: [{clusterGroup: prod}]
auth:
  username: bot
  passwordSecretRef: {name: git, key: token}
  sshKeySecretRef: {name: git, key: key}
  knownHostsSecretRef: {name: git, key: hosts}
  caSecretRef: {name: git, key: ca}
  webhookSecretRef: {name: hooks, key: secret}
  allowedSignersSecretRef: {name: trust, key: signers}
  gpgKeysSecretRef: {name: trust, key: gpg}
helm:
  username: charts
  passwordSecretRef: {name: helm, key: password}
  caSecretRef: {name: helm, key: ca}
  tokenSecretRef: {name: helm, key: token}
  repoURLRegex: ^oci://
  plainHTTP: true
"#,
        )
        .expect("fixture");
        let d = source("s", &spec).expect("maps");
        assert!(d.unsupported.is_empty());
        let all: BTreeMap<String, Vec<u8>> = [
            "token", "key", "hosts", "ca", "secret", "signers", "gpg", "password",
        ]
        .into_iter()
        .map(|k| (k.to_string(), k.as_bytes().to_vec()))
        .collect();
        let c = resolve(d, |_| Some(all.clone())).expect("resolves");
        let s = &c.spec;
        assert_eq!(
            (s.branch.as_str(), s.paths.as_slice()),
            ("release", &["bundles".to_string()][..])
        );
        assert_eq!(
            s.revision.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(
            (s.interval_secs, s.paused, s.verify_commits),
            (0, true, true)
        );
        assert_eq!(s.username.as_deref(), Some("bot"));
        assert_eq!(s.targets[0].cluster_group.as_deref(), Some("prod"));
        assert_eq!(
            s.helm_auth,
            Some(HelmAuthSpec {
                username: "charts".into(),
                url_regex: "^oci://".into(),
                plain_http: true,
            })
        );
        let kinds: Vec<&str> = c.credentials.iter().map(|(k, _)| k.name()).collect();
        assert_eq!(
            kinds,
            [
                "allowed-signers",
                "ca",
                "gpg-keys",
                "known-hosts",
                "password",
                "ssh-key",
                "webhook-secret"
            ]
        );
        assert_eq!(
            c.helm,
            HelmSecrets {
                password: b"password".to_vec(),
                ca_pem: b"ca".to_vec(),
                token: b"token".to_vec(),
            }
        );
        // A reference to a key that is not there stalls the Source; Fleet's optional
        // keys do not.
        let d = source("s", &spec).expect("maps");
        assert!(matches!(
            resolve(d, |_| Some(BTreeMap::new())),
            Err(MapError::MissingKey { .. })
        ));
    }

    #[test]
    fn cluster_groups_keep_their_labels_and_fleets_missing_selector_is_refused() {
        let labels: BTreeMap<String, String> = [("tier".to_string(), "edge".to_string())].into();
        let fleet_spec: fleet::ClusterGroupSpec =
            serde_saphyr::from_str("selector: {matchLabels: {env: prod}}").expect("fixture");
        let g = fleet_cluster_group("prod", &labels, &fleet_spec).expect("maps");
        assert_eq!(
            g,
            GroupSpec {
                name: "prod".into(),
                selector: sel("matchLabels: {env: prod}"),
                labels: labels.clone(),
            }
        );
        let own: flotilla::ClusterGroupSpec =
            serde_saphyr::from_str("selector: {}").expect("fixture");
        assert!(
            cluster_group("all", &labels, &own)
                .expect("maps")
                .selector
                .is_empty()
        );
        let none = fleet::ClusterGroupSpec { selector: None };
        assert!(matches!(
            fleet_cluster_group("g", &labels, &none),
            Err(MapError::Invalid { field, .. }) if field == "spec.selector"
        ));
    }

    #[test]
    fn a_cluster_object_sets_hub_labels_and_trusted_keys() {
        let spec: flotilla::ClusterSpec =
            serde_saphyr::from_str("labels: {env: prod}\nacceptLabels: [region]").expect("fixture");
        let l = cluster("edge-1", &spec).expect("maps");
        assert_eq!(
            l.labels,
            Labels::from([("env".to_string(), "prod".to_string())])
        );
        assert_eq!(l.accept, ["region"]);
        let bad: flotilla::ClusterSpec =
            serde_saphyr::from_str("labels: {'bad key!': x}").expect("fixture");
        assert!(cluster("edge-1", &bad).is_err());
    }

    #[test]
    fn unsupported_fields_read_as_one_message() {
        let d = fleet_git_repo(
            "r",
            &git_repo("repo: x\nserviceAccount: a\nkeepResources: true"),
        )
        .expect("maps");
        assert_eq!(
            unsupported_message(&d.unsupported),
            "spec.serviceAccount: spokes apply with their own credentials, limited by their spoke policy; \
             spec.keepResources: set keepResources in each bundle's fleet.yaml"
        );
    }
}
