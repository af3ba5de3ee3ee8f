//! What the renderer knows about Kubernetes kinds without asking a cluster: which built-in
//! kinds are cluster-scoped, which API groups are built in (so a map patch is a strategic
//! merge rather than an RFC 7386 merge), and how a bundle declares the scope of its own
//! CRD kinds (a CustomResourceDefinition in the bundle, or `clusterScopedKinds`).

use std::collections::BTreeSet;

use serde_json::Value;

const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "MutatingAdmissionPolicyBinding",
    ),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttributesClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("policy", "PodSecurityPolicy"),
    ("apiregistration.k8s.io", "APIService"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("resource.k8s.io", "DeviceClass"),
    ("resource.k8s.io", "ResourceSlice"),
    ("authentication.k8s.io", "TokenReview"),
    ("authentication.k8s.io", "SelfSubjectReview"),
    ("authorization.k8s.io", "SubjectAccessReview"),
    ("authorization.k8s.io", "SelfSubjectAccessReview"),
    ("authorization.k8s.io", "SelfSubjectRulesReview"),
    ("internal.apiserver.k8s.io", "StorageVersion"),
];

const BUILTIN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "certificates.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "events.k8s.io",
    "resource.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "internal.apiserver.k8s.io",
];

/// The group of an `apiVersion` ("" for the core group `v1`).
pub(crate) fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// True when objects of this apiVersion are Kubernetes built-ins with a known schema.
pub(crate) fn is_builtin(api_version: &str) -> bool {
    BUILTIN_GROUPS.contains(&group_of(api_version))
}

/// The cluster-scoped kinds of one bundle: the built-ins plus what the bundle declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scope {
    extra: BTreeSet<(String, String)>,
    extra_any_group: BTreeSet<String>,
}

impl Scope {
    /// `declared` holds `Kind` (any group) or `group/Kind`.
    pub(crate) fn new(declared: &[String]) -> Self {
        let mut scope = Scope::default();
        for d in declared {
            match d.rsplit_once('/') {
                Some((g, k)) => {
                    scope.extra.insert((g.to_string(), k.to_string()));
                }
                None => {
                    scope.extra_any_group.insert(d.clone());
                }
            }
        }
        scope
    }

    /// Learns the scope of CRD kinds from the CustomResourceDefinitions among `objects`.
    pub(crate) fn learn_crds<'a>(&mut self, objects: impl IntoIterator<Item = &'a Value>) {
        for o in objects {
            let is_crd = o.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
                && o.get("apiVersion")
                    .and_then(Value::as_str)
                    .is_some_and(|a| group_of(a) == "apiextensions.k8s.io");
            if !is_crd {
                continue;
            }
            let spec = o.get("spec");
            let scope = spec.and_then(|s| s.get("scope")).and_then(Value::as_str);
            let group = spec.and_then(|s| s.get("group")).and_then(Value::as_str);
            let kind = spec
                .and_then(|s| s.get("names"))
                .and_then(|n| n.get("kind"))
                .and_then(Value::as_str);
            if let (Some("Cluster"), Some(g), Some(k)) = (scope, group, kind) {
                self.extra.insert((g.to_string(), k.to_string()));
            }
        }
    }

    pub(crate) fn is_cluster_scoped(&self, api_version: &str, kind: &str) -> bool {
        let group = group_of(api_version);
        CLUSTER_SCOPED
            .iter()
            .any(|(g, k)| *g == group && *k == kind)
            || self.extra.contains(&(group.to_string(), kind.to_string()))
            || self.extra_any_group.contains(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn knows_builtin_cluster_scoped_kinds() {
        let s = Scope::default();
        assert!(s.is_cluster_scoped("v1", "Namespace"));
        assert!(s.is_cluster_scoped("rbac.authorization.k8s.io/v1", "ClusterRole"));
        assert!(!s.is_cluster_scoped("v1", "ConfigMap"));
        assert!(!s.is_cluster_scoped("example.com/v1", "Namespace"));
    }

    #[test]
    fn learns_crd_scope_from_the_bundle_and_from_declarations() {
        let mut s = Scope::new(&["cert-manager.io/ClusterIssuer".into(), "Tenant".into()]);
        s.learn_crds([&json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "spec": {"group": "example.com", "scope": "Cluster", "names": {"kind": "Widget"}}
        })]);
        assert!(s.is_cluster_scoped("example.com/v1", "Widget"));
        assert!(s.is_cluster_scoped("cert-manager.io/v1", "ClusterIssuer"));
        assert!(s.is_cluster_scoped("acme.io/v2", "Tenant"));
        assert!(!s.is_cluster_scoped("cert-manager.io/v1", "Issuer"));
    }
}
