//! Spoke policy: what this spoke refuses to apply whatever the hub sends
//! (`--allow-namespaces`, `--deny-kinds`). A bundle that breaks it is refused whole,
//! before anything is applied. Pure.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use super::manifest::ObjectRef;

/// A kind in a group, written `Kind.group` (`ClusterRoleBinding.rbac.authorization.k8s.io`);
/// a bare `Kind` is the core group (`Secret`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKind {
    pub kind: String,
    pub group: String,
}

impl FromStr for GroupKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (kind, group) = s.split_once('.').unwrap_or((s, ""));
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("{s:?} is not Kind or Kind.group"));
        }
        Ok(GroupKind {
            kind: kind.to_string(),
            group: group.to_string(),
        })
    }
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

/// What this spoke accepts. The default accepts everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// When set, namespaced objects must live in one of these namespaces, Namespace
    /// objects must be named in it, and other cluster-scoped objects are refused (they
    /// would reach beyond the allowed namespaces).
    pub allow_namespaces: Option<BTreeSet<String>>,
    pub deny_kinds: BTreeSet<GroupKind>,
}

impl Policy {
    /// Parses the comma-separated flag values; empty strings mean "not set".
    pub fn parse(allow_namespaces: &str, deny_kinds: &str) -> Result<Self, String> {
        let list = |s: &str| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect::<BTreeSet<_>>()
        };
        let allow = list(allow_namespaces);
        let deny = list(deny_kinds)
            .iter()
            .map(|k| k.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--deny-kinds: {e}"))?;
        Ok(Policy {
            allow_namespaces: (!allow.is_empty()).then_some(allow),
            deny_kinds: deny,
        })
    }

    /// Why `r` is refused, if it is.
    pub fn refusal(&self, r: &ObjectRef, namespaced: bool) -> Option<String> {
        let gk = GroupKind {
            kind: r.kind.clone(),
            group: r.group().to_string(),
        };
        if self.deny_kinds.contains(&gk) {
            return Some(format!(
                "{r}: kind {gk} is denied by this spoke's --deny-kinds"
            ));
        }
        let allowed = self.allow_namespaces.as_ref()?;
        let list = || allowed.iter().cloned().collect::<Vec<_>>().join(",");
        if namespaced {
            (!allowed.contains(&r.namespace)).then(|| {
                format!(
                    "{r}: namespace {:?} is not in this spoke's --allow-namespaces ({})",
                    r.namespace,
                    list()
                )
            })
        } else if r.group().is_empty() && r.kind == "Namespace" {
            (!allowed.contains(&r.name)).then(|| {
                format!(
                    "{r}: namespace {:?} is not in this spoke's --allow-namespaces ({})",
                    r.name,
                    list()
                )
            })
        } else {
            Some(format!(
                "{r}: cluster-scoped objects are refused when --allow-namespaces is set"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(api_version: &str, kind: &str, ns: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_default_policy_accepts_everything() {
        let p = Policy::default();
        assert_eq!(
            p.refusal(
                &r(
                    "rbac.authorization.k8s.io/v1",
                    "ClusterRoleBinding",
                    "",
                    "x"
                ),
                false
            ),
            None
        );
    }

    #[test]
    fn denied_kinds_match_kind_and_group_exactly() {
        let p = Policy::parse("", "ClusterRoleBinding.rbac.authorization.k8s.io, Secret")
            .expect("parses");
        let crb = r(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "",
            "admin",
        );
        let why = p.refusal(&crb, false).expect("refused");
        assert!(
            why.contains("ClusterRoleBinding admin") && why.contains("--deny-kinds"),
            "{why}"
        );
        assert!(p.refusal(&r("v1", "Secret", "a", "s"), true).is_some());
        assert!(
            p.refusal(&r("example.com/v1", "Secret", "a", "s"), true)
                .is_none()
        );
        assert!(p.refusal(&r("v1", "ConfigMap", "a", "c"), true).is_none());
        assert!(Policy::parse("", "a/b").is_err());
    }

    #[test]
    fn allowed_namespaces_confine_namespaced_objects_and_refuse_other_cluster_objects() {
        let p = Policy::parse("team-a, team-b", "").expect("parses");
        assert!(
            p.refusal(&r("v1", "ConfigMap", "team-a", "c"), true)
                .is_none()
        );
        let why = p
            .refusal(&r("v1", "ConfigMap", "kube-system", "c"), true)
            .expect("refused");
        assert!(
            why.contains("kube-system") && why.contains("team-a,team-b"),
            "{why}"
        );
        assert!(
            p.refusal(&r("v1", "Namespace", "", "team-b"), false)
                .is_none()
        );
        assert!(
            p.refusal(&r("v1", "Namespace", "", "other"), false)
                .is_some()
        );
        assert!(
            p.refusal(
                &r("rbac.authorization.k8s.io/v1", "ClusterRole", "", "x"),
                false
            )
            .is_some()
        );
    }
}
