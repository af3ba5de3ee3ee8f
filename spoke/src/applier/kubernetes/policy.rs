//! Spoke policy: what this spoke refuses to apply whatever the hub sends.
//!
//! A [`PolicySpec`] is what the operator wrote (`--allow-namespaces`, `--deny-kinds`,
//! `--policy FILE`). [`PolicySpec::resolve`] turns it, with the kinds the cluster
//! serves, into the [`Policy`] that is enforced: a kind written without a group
//! (`secret`) becomes every group that serves that kind, matched case-insensitively,
//! and a kind the cluster does not serve is an error naming the nearest ones, so a
//! typo can never leave a policy silently empty. A bundle that breaks the policy is
//! refused whole, before anything is applied. Pure: no I/O.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use super::manifest::ObjectRef;

/// The RBAC group, whose bindings `denyBindingsToClusterRoles` inspects.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// A served kind in its group (`""` is the core group), with the API server's spelling.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKind {
    pub kind: String,
    pub group: String,
}

impl fmt::Display for GroupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

/// A kind as an operator writes it: `Kind` (any group that serves it) or `Kind.group`
/// (`ClusterRoleBinding.rbac.authorization.k8s.io`). Case does not matter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KindName {
    pub kind: String,
    pub group: Option<String>,
}

impl FromStr for KindName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (kind, group) = match s.split_once('.') {
            Some((k, g)) => (k, Some(g)),
            None => (s, None),
        };
        let group_ok = group.is_none_or(|g| {
            !g.is_empty()
                && g.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        });
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric()) || !group_ok {
            return Err(format!("{s:?} is not Kind or Kind.group"));
        }
        Ok(KindName {
            kind: kind.to_string(),
            group: group.map(str::to_ascii_lowercase),
        })
    }
}

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{}.{g}", self.kind),
            None => f.write_str(&self.kind),
        }
    }
}

/// Why a policy cannot be used. Every one stops the spoke at start.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("--deny-kinds: {0}")]
    Flag(String),
    #[error("policy file {path}: {message}")]
    File { path: String, message: String },
    #[error(
        "allowNamespaces is set by both --allow-namespaces and the policy file; set it in one place"
    )]
    AllowedTwice,
    #[error("spoke policy denies kind {kind}, which this cluster does not serve{}", nearest_text(.nearest))]
    UnknownKind { kind: String, nearest: Vec<String> },
}

fn nearest_text(nearest: &[String]) -> String {
    if nearest.is_empty() {
        String::new()
    } else {
        format!(" (nearest served kinds: {})", nearest.join(", "))
    }
}

/// A spoke policy as written: by flags, by a `--policy` file, or both merged.
///
/// The file is YAML with these keys only (an unknown key is an error with its line):
/// `allowNamespaces`, `denyNamespaces`, `denyKinds`, `denyBindingsToClusterRoles`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// When set, namespaced objects must live in one of these namespaces, Namespace
    /// objects must be named in it, and other cluster-scoped objects are refused.
    #[serde(default)]
    pub allow_namespaces: Option<BTreeSet<String>>,
    /// Namespaces nothing may be written into (nor a Namespace object of that name).
    #[serde(default)]
    pub deny_namespaces: BTreeSet<String>,
    #[serde(default)]
    pub deny_kinds: BTreeSet<KindName>,
    /// ClusterRoles no ClusterRoleBinding or RoleBinding may grant (`cluster-admin`).
    #[serde(default)]
    pub deny_bindings_to_cluster_roles: BTreeSet<String>,
}

impl PolicySpec {
    /// From the comma-separated flag values; empty strings mean "not set".
    pub fn from_flags(allow_namespaces: &str, deny_kinds: &str) -> Result<Self, PolicyError> {
        let list = |s: &str| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect::<BTreeSet<_>>()
        };
        let allow = list(allow_namespaces);
        let deny_kinds = list(deny_kinds)
            .iter()
            .map(|k| k.parse())
            .collect::<Result<_, _>>()
            .map_err(PolicyError::Flag)?;
        Ok(PolicySpec {
            allow_namespaces: (!allow.is_empty()).then_some(allow),
            deny_kinds,
            ..PolicySpec::default()
        })
    }

    /// Parses a policy file's text; `path` names it in errors.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let file_error = |message: String| PolicyError::File {
            path: path.display().to_string(),
            message,
        };
        if text.trim().is_empty() {
            return Err(file_error("is empty".into()));
        }
        serde_saphyr::from_str(text).map_err(|e| file_error(e.to_string()))
    }

    /// Flags and file together: the deny lists add up; `allowNamespaces` may come from
    /// one of them only, since two lists would leave it unclear which one is meant.
    pub fn merge(self, other: PolicySpec) -> Result<Self, PolicyError> {
        let allow_namespaces = match (self.allow_namespaces, other.allow_namespaces) {
            (Some(_), Some(_)) => return Err(PolicyError::AllowedTwice),
            (a, b) => a.or(b),
        };
        let union = |mut a: BTreeSet<String>, b: BTreeSet<String>| {
            a.extend(b);
            a
        };
        let mut deny_kinds = self.deny_kinds;
        deny_kinds.extend(other.deny_kinds);
        Ok(PolicySpec {
            allow_namespaces,
            deny_namespaces: union(self.deny_namespaces, other.deny_namespaces),
            deny_kinds,
            deny_bindings_to_cluster_roles: union(
                self.deny_bindings_to_cluster_roles,
                other.deny_bindings_to_cluster_roles,
            ),
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == PolicySpec::default()
    }

    /// The enforced policy, with every denied kind resolved against the kinds the
    /// cluster serves (`served`, from API discovery).
    pub fn resolve(&self, served: &[GroupKind]) -> Result<Policy, PolicyError> {
        let mut deny_kinds = BTreeSet::new();
        for name in &self.deny_kinds {
            let matches: Vec<&GroupKind> = served
                .iter()
                .filter(|gk| {
                    gk.kind.eq_ignore_ascii_case(&name.kind)
                        && name.group.as_ref().is_none_or(|g| gk.group == *g)
                })
                .collect();
            if matches.is_empty() {
                return Err(PolicyError::UnknownKind {
                    kind: name.to_string(),
                    nearest: nearest(name, served),
                });
            }
            deny_kinds.extend(matches.into_iter().cloned());
        }
        Ok(Policy {
            allow_namespaces: self.allow_namespaces.clone(),
            deny_namespaces: self.deny_namespaces.clone(),
            deny_kinds,
            deny_bindings_to_cluster_roles: self.deny_bindings_to_cluster_roles.clone(),
        })
    }
}

/// Up to three served kinds closest in spelling to `name`.
fn nearest(name: &KindName, served: &[GroupKind]) -> Vec<String> {
    let wanted = name.to_string().to_ascii_lowercase();
    let mut scored: Vec<(usize, String)> = served
        .iter()
        .map(|gk| {
            let candidate = match name.group {
                Some(_) => gk.to_string(),
                None => gk.kind.clone(),
            };
            (
                strsim::levenshtein(&wanted, &candidate.to_ascii_lowercase()),
                gk.to_string(),
            )
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, s)| s).collect()
}

/// What this spoke accepts, resolved against the cluster. The default accepts
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allow_namespaces: Option<BTreeSet<String>>,
    deny_namespaces: BTreeSet<String>,
    /// In the API server's spelling; matched case-insensitively on the kind.
    deny_kinds: BTreeSet<GroupKind>,
    deny_bindings_to_cluster_roles: BTreeSet<String>,
}

impl Policy {
    /// Why `r` (whose manifest is `value`) is refused, if it is.
    pub fn refusal(&self, r: &ObjectRef, namespaced: bool, value: &Value) -> Option<String> {
        let group = r.group();
        if let Some(gk) = self
            .deny_kinds
            .iter()
            .find(|gk| gk.group == group && gk.kind.eq_ignore_ascii_case(&r.kind))
        {
            return Some(format!("{r}: kind {gk} is denied by this spoke's policy"));
        }
        if let Some(role) = self.granted_cluster_role(r, value) {
            return Some(format!(
                "{r}: binds ClusterRole {role:?}, which this spoke's policy denies"
            ));
        }
        let is_namespace = group.is_empty() && r.kind == "Namespace";
        let namespace = if namespaced {
            Some(&r.namespace)
        } else if is_namespace {
            Some(&r.name)
        } else {
            None
        };
        if let Some(ns) = namespace
            && self.deny_namespaces.contains(ns)
        {
            return Some(format!(
                "{r}: namespace {ns:?} is denied by this spoke's policy"
            ));
        }
        let allowed = self.allow_namespaces.as_ref()?;
        let list = || allowed.iter().cloned().collect::<Vec<_>>().join(",");
        match namespace {
            Some(ns) => (!allowed.contains(ns)).then(|| {
                format!(
                    "{r}: namespace {ns:?} is not in this spoke's allowed namespaces ({})",
                    list()
                )
            }),
            None => Some(format!(
                "{r}: cluster-scoped objects are refused when allowed namespaces are set"
            )),
        }
    }

    /// The denied ClusterRole a (Cluster)RoleBinding grants, if it grants one.
    fn granted_cluster_role<'v>(&self, r: &ObjectRef, value: &'v Value) -> Option<&'v str> {
        if self.deny_bindings_to_cluster_roles.is_empty()
            || r.group() != RBAC_GROUP
            || !matches!(r.kind.as_str(), "ClusterRoleBinding" | "RoleBinding")
        {
            return None;
        }
        let role_ref = value.get("roleRef")?;
        let kind = role_ref.get("kind").and_then(Value::as_str)?;
        let name = role_ref.get("name").and_then(Value::as_str)?;
        (kind == "ClusterRole" && self.deny_bindings_to_cluster_roles.contains(name))
            .then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(api_version: &str, kind: &str, ns: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn gk(kind: &str, group: &str) -> GroupKind {
        GroupKind {
            kind: kind.into(),
            group: group.into(),
        }
    }

    /// A slice of what a real cluster serves.
    fn served() -> Vec<GroupKind> {
        vec![
            gk("Secret", ""),
            gk("ConfigMap", ""),
            gk("Namespace", ""),
            gk("Event", ""),
            gk("Event", "events.k8s.io"),
            gk("ClusterRole", RBAC_GROUP),
            gk("ClusterRoleBinding", RBAC_GROUP),
            gk("RoleBinding", RBAC_GROUP),
            gk("Deployment", "apps"),
            gk(
                "ValidatingWebhookConfiguration",
                "admissionregistration.k8s.io",
            ),
        ]
    }

    fn resolved(allow: &str, deny: &str) -> Policy {
        PolicySpec::from_flags(allow, deny)
            .expect("parses")
            .resolve(&served())
            .expect("resolves")
    }

    fn refused(p: &Policy, obj: &ObjectRef, namespaced: bool) -> Option<String> {
        p.refusal(obj, namespaced, &json!({}))
    }

    #[test]
    fn the_default_policy_accepts_everything() {
        let p = Policy::default();
        let crb = r(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "",
            "x",
        );
        let binding = json!({"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}});
        assert_eq!(p.refusal(&crb, false, &binding), None);
    }

    #[test]
    fn a_kind_without_a_group_is_denied_in_every_group_that_serves_it_whatever_its_case() {
        // (flag, object apiVersion, object kind, refused?)
        let cases = [
            ("ClusterRoleBinding", RBAC_GROUP, "ClusterRoleBinding", true),
            ("clusterrolebinding", RBAC_GROUP, "ClusterRoleBinding", true),
            ("secret", "", "Secret", true),
            ("SECRET", "", "Secret", true),
            ("secret", "example.com", "Secret", false),
            ("Event", "", "Event", true),
            ("event", "events.k8s.io", "Event", true),
            ("Event.events.k8s.io", "events.k8s.io", "Event", true),
            ("Event.events.k8s.io", "", "Event", false),
            ("Secret", "", "ConfigMap", false),
            ("Deployment.APPS", "apps", "Deployment", true),
        ];
        for (flag, group, kind, want) in cases {
            let p = resolved("", flag);
            let api_version = if group.is_empty() {
                "v1".to_string()
            } else {
                format!("{group}/v1")
            };
            let why = refused(&p, &r(&api_version, kind, "a", "x"), true);
            assert_eq!(
                why.is_some(),
                want,
                "{flag} vs {api_version} {kind}: {why:?}"
            );
            if let Some(why) = why {
                assert!(why.contains("denied by this spoke's policy"), "{why}");
            }
        }
    }

    #[test]
    fn a_kind_the_cluster_does_not_serve_is_an_error_naming_the_nearest_kinds() {
        // (flag, text the error must hold)
        let cases = [
            ("Secrets", "Secret"),
            (
                "ClusterRoleBindin",
                "ClusterRoleBinding.rbac.authorization.k8s.io",
            ),
            ("Secret.example.com", "Secret.example.com"),
            ("Gadget", "denies kind Gadget"),
        ];
        for (flag, expected) in cases {
            let err = PolicySpec::from_flags("", flag)
                .expect("parses")
                .resolve(&served())
                .expect_err(flag);
            let text = err.to_string();
            assert!(
                text.contains("does not serve") && text.contains(expected),
                "{flag}: {text}"
            );
        }
        let err = PolicySpec::from_flags("", "Secrets")
            .expect("parses")
            .resolve(&served())
            .expect_err("unknown");
        assert!(
            err.to_string().contains("nearest served kinds: Secret"),
            "{err}"
        );
        for bad in ["a/b", ".apps", "Kind.", "Ki nd"] {
            assert!(PolicySpec::from_flags("", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allowed_namespaces_confine_namespaced_objects_and_refuse_other_cluster_objects() {
        let p = resolved("team-a, team-b", "");
        // (object, namespaced, refused)
        let cases = [
            (r("v1", "ConfigMap", "team-a", "c"), true, false),
            (r("v1", "ConfigMap", "kube-system", "c"), true, true),
            (r("v1", "Namespace", "", "team-b"), false, false),
            (r("v1", "Namespace", "", "other"), false, true),
            (
                r("rbac.authorization.k8s.io/v1", "ClusterRole", "", "x"),
                false,
                true,
            ),
        ];
        for (obj, namespaced, want) in cases {
            let why = refused(&p, &obj, namespaced);
            assert_eq!(why.is_some(), want, "{obj}: {why:?}");
        }
        let why = refused(&p, &r("v1", "ConfigMap", "kube-system", "c"), true).expect("refused");
        assert!(
            why.contains("kube-system") && why.contains("team-a,team-b"),
            "{why}"
        );
    }

    #[test]
    fn denied_namespaces_refuse_objects_in_them_and_the_namespace_itself() {
        let spec = PolicySpec {
            deny_namespaces: ["kube-system".to_string()].into(),
            ..PolicySpec::default()
        };
        let p = spec.resolve(&served()).expect("resolves");
        let cases = [
            (r("v1", "ConfigMap", "kube-system", "c"), true, true),
            (r("v1", "Namespace", "", "kube-system"), false, true),
            (r("v1", "ConfigMap", "app", "c"), true, false),
            (
                r(
                    "rbac.authorization.k8s.io/v1",
                    "ClusterRole",
                    "",
                    "kube-system",
                ),
                false,
                false,
            ),
        ];
        for (obj, namespaced, want) in cases {
            assert_eq!(refused(&p, &obj, namespaced).is_some(), want, "{obj}");
        }
    }

    #[test]
    fn bindings_to_a_denied_cluster_role_are_refused_and_other_bindings_pass() {
        let spec = PolicySpec {
            deny_bindings_to_cluster_roles: ["cluster-admin".to_string()].into(),
            ..PolicySpec::default()
        };
        let p = spec.resolve(&served()).expect("resolves");
        let role_ref = |kind: &str, name: &str| json!({"roleRef": {"kind": kind, "name": name}});
        let crb = r(&format!("{RBAC_GROUP}/v1"), "ClusterRoleBinding", "", "b");
        let rb = r(&format!("{RBAC_GROUP}/v1"), "RoleBinding", "app", "b");
        let cases = [
            (&crb, false, role_ref("ClusterRole", "cluster-admin"), true),
            (&rb, true, role_ref("ClusterRole", "cluster-admin"), true),
            (&crb, false, role_ref("ClusterRole", "view"), false),
            (&rb, true, role_ref("Role", "cluster-admin"), false),
            (&rb, true, json!({"roleRef": "cluster-admin"}), false),
        ];
        for (obj, namespaced, value, want) in cases {
            let why = p.refusal(obj, namespaced, &value);
            assert_eq!(why.is_some(), want, "{obj} {value}: {why:?}");
        }
    }

    #[test]
    fn a_policy_file_reads_its_keys_and_refuses_unknown_ones_with_their_line() {
        let path = Path::new("policy.yaml");
        let spec = PolicySpec::from_yaml(
            path,
            "denyNamespaces: [kube-system]\ndenyKinds: [secret, Deployment.apps]\n\
             denyBindingsToClusterRoles: [cluster-admin]\n",
        )
        .expect("parses");
        assert_eq!(spec.deny_namespaces, ["kube-system".to_string()].into());
        assert_eq!(spec.deny_kinds.len(), 2);
        assert!(spec.allow_namespaces.is_none());

        let err = PolicySpec::from_yaml(path, "denyKinds: [Secret]\ndenyKind: [ConfigMap]\n")
            .expect_err("unknown key");
        let text = err.to_string();
        assert!(
            text.starts_with("policy file policy.yaml: ")
                && text.contains("denyKind")
                && text.contains("line 2"),
            "{text}"
        );
        let err = PolicySpec::from_yaml(path, "denyKinds: [a/b]\n").expect_err("bad kind");
        assert!(err.to_string().contains("not Kind or Kind.group"), "{err}");
        assert!(
            PolicySpec::from_yaml(path, "\n").is_err(),
            "an empty file is a mistake"
        );
    }

    #[test]
    fn flags_and_file_add_up_but_allowed_namespaces_come_from_one_place() {
        let flags = PolicySpec::from_flags("", "Secret").expect("flags");
        let file = PolicySpec::from_yaml(
            Path::new("p.yaml"),
            "allowNamespaces: [app]\ndenyKinds: [ConfigMap]\n",
        )
        .expect("file");
        let merged = flags.merge(file.clone()).expect("merges");
        assert_eq!(merged.deny_kinds.len(), 2);
        assert_eq!(merged.allow_namespaces, Some(["app".to_string()].into()));
        let both = PolicySpec::from_flags("other", "").expect("flags");
        assert!(matches!(both.merge(file), Err(PolicyError::AllowedTwice)));
    }
}
