//! Apply order: Namespaces, then CRDs (which must be Established before their objects),
//! then other cluster-scoped objects, then namespaced objects. Deletion runs in reverse.
//! Pure.

/// The phase an object is applied in; `Ord` is the apply order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Namespace,
    Crd,
    ClusterScoped,
    Namespaced,
}

pub fn phase(group: &str, kind: &str, namespaced: bool) -> Phase {
    match (group, kind) {
        ("", "Namespace") => Phase::Namespace,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => Phase::Crd,
        _ if namespaced => Phase::Namespaced,
        _ => Phase::ClusterScoped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_come_first_then_crds_then_cluster_then_namespaced() {
        let mut v = vec![
            phase("apps", "Deployment", true),
            phase("rbac.authorization.k8s.io", "ClusterRole", false),
            phase("apiextensions.k8s.io", "CustomResourceDefinition", false),
            phase("", "Namespace", false),
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                Phase::Namespace,
                Phase::Crd,
                Phase::ClusterScoped,
                Phase::Namespaced
            ]
        );
        // A kind named Namespace in another group is not a Namespace.
        assert_eq!(phase("example.com", "Namespace", true), Phase::Namespaced);
    }
}
