//! The kinds this test server serves: a fixed built-in table plus the kinds that
//! CustomResourceDefinitions add.
//!
//! A [`Registry`] answers "which resource is `/apis/apps/v1/deployments`?" and
//! "what does discovery list?". It holds no objects; the storage rebuilds it from
//! the stored CRDs whenever one changes.

use std::sync::Arc;

use serde_json::Value;

/// One served resource at one group/version.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    /// Lower-case plural, the URL segment (`deployments`).
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource; then writes to the main resource
    /// ignore `.status` and writes to `/status` change only `.status`.
    pub status_subresource: bool,
    /// Whether `metadata.generation` is maintained (bumped on spec changes).
    pub tracks_generation: bool,
    /// The CRD's `openAPIV3Schema` for this version (None for built-ins).
    pub schema: Option<Arc<Value>>,
    /// The CRD's `additionalPrinterColumns` for this version.
    pub printer_columns: Vec<Value>,
    pub is_crd: bool,
}

impl ResourceType {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether this is `events.k8s.io/v1` Event, a view of the core v1 Events (see
    /// `events.rs`).
    pub fn is_events_view(&self) -> bool {
        !self.is_crd && self.group == "events.k8s.io" && self.plural == "events"
    }

    /// The group its objects are stored under: the core group for the
    /// `events.k8s.io/v1` view of Events, its own group for everything else.
    pub fn storage_group(&self) -> &str {
        if self.is_events_view() {
            ""
        } else {
            &self.group
        }
    }

    /// Whether `/scale` (autoscaling/v1 Scale) is served: the built-in scalable workloads.
    pub fn has_scale(&self) -> bool {
        self.group == "apps"
            && matches!(
                self.kind.as_str(),
                "Deployment" | "StatefulSet" | "ReplicaSet"
            )
    }
}

/// `v1` for the core group, `group/version` otherwise.
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Splits an `apiVersion` into `(group, version)`.
pub fn split_api_version(av: &str) -> (&str, &str) {
    match av.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", av),
    }
}

/// Flags for a built-in row.
const NS: u8 = 1;
const STATUS: u8 = 2;
const GEN: u8 = 4;

/// (group, version, kind, plural, short names, flags)
type BuiltinRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    u8,
);

const BUILTINS: &[BuiltinRow] = &[
    ("", "v1", "Namespace", "namespaces", &["ns"], STATUS),
    ("", "v1", "ConfigMap", "configmaps", &["cm"], NS),
    ("", "v1", "Secret", "secrets", &[], NS),
    ("", "v1", "Service", "services", &["svc"], NS | STATUS),
    ("", "v1", "ServiceAccount", "serviceaccounts", &["sa"], NS),
    ("", "v1", "Pod", "pods", &["po"], NS | STATUS),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        &["pvc"],
        NS | STATUS,
    ),
    (
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        &["pv"],
        STATUS,
    ),
    ("", "v1", "Event", "events", &["ev"], NS),
    ("events.k8s.io", "v1", "Event", "events", &["ev"], NS),
    ("", "v1", "Endpoints", "endpoints", &["ep"], NS),
    ("", "v1", "LimitRange", "limitranges", &["limits"], NS),
    (
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        &["quota"],
        NS | STATUS,
    ),
    (
        "apps",
        "v1",
        "Deployment",
        "deployments",
        &["deploy"],
        NS | STATUS | GEN,
    ),
    (
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        &["sts"],
        NS | STATUS | GEN,
    ),
    (
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        &["ds"],
        NS | STATUS | GEN,
    ),
    (
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        &["rs"],
        NS | STATUS | GEN,
    ),
    ("batch", "v1", "Job", "jobs", &[], NS | STATUS | GEN),
    (
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        &["cj"],
        NS | STATUS | GEN,
    ),
    (
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        &["ing"],
        NS | STATUS | GEN,
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        &["netpol"],
        NS | GEN,
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        &["pdb"],
        NS | STATUS | GEN,
    ),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        &["hpa"],
        NS | STATUS,
    ),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", &[], NS),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        &[],
        NS,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        &[],
        0,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        &[],
        0,
    ),
    (
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        &["sc"],
        0,
    ),
    (
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        &["pc"],
        0,
    ),
    ("coordination.k8s.io", "v1", "Lease", "leases", &[], NS),
    // Served (stored, never called): spoke policies name them.
    (
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        &[],
        GEN,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        &[],
        GEN,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        &["crd", "crds"],
        STATUS | GEN,
    ),
];

fn builtins() -> Vec<ResourceType> {
    BUILTINS
        .iter()
        .map(
            |(group, version, kind, plural, short, flags)| ResourceType {
                group: group.to_string(),
                version: version.to_string(),
                kind: kind.to_string(),
                plural: plural.to_string(),
                singular: kind.to_lowercase(),
                namespaced: flags & NS != 0,
                short_names: short.iter().map(|s| s.to_string()).collect(),
                categories: if matches!(
                    *kind,
                    "Pod"
                        | "Service"
                        | "Deployment"
                        | "StatefulSet"
                        | "DaemonSet"
                        | "ReplicaSet"
                        | "Job"
                        | "CronJob"
                ) {
                    vec!["all".to_string()]
                } else {
                    vec![]
                },
                status_subresource: flags & STATUS != 0,
                tracks_generation: flags & GEN != 0,
                schema: None,
                printer_columns: vec![],
                is_crd: false,
            },
        )
        .collect()
}

/// The resource types a CRD object declares, one per served version.
/// Returns an error message naming the first invalid field.
pub fn types_from_crd(crd: &Value) -> Result<Vec<ResourceType>, (String, String)> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    if group.is_empty() {
        return Err(("spec.group".into(), "Required value".into()));
    }
    if plural.is_empty() {
        return Err(("spec.names.plural".into(), "Required value".into()));
    }
    if kind.is_empty() {
        return Err(("spec.names.kind".into(), "Required value".into()));
    }
    let expected = format!("{plural}.{group}");
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if name != expected {
        return Err((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => {
            return Err((
                "spec.scope".into(),
                "Unsupported value: must be Namespaced or Cluster".into(),
            ));
        }
    };
    let Some(versions) = spec["versions"].as_array().filter(|v| !v.is_empty()) else {
        return Err(("spec.versions".into(), "Required value".into()));
    };
    if versions
        .iter()
        .filter(|v| v["storage"] == Value::Bool(true))
        .count()
        != 1
    {
        return Err((
            "spec.versions".into(),
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for v in versions {
        let Some(version) = v["name"].as_str() else {
            return Err(("spec.versions[].name".into(), "Required value".into()));
        };
        if v["served"] != Value::Bool(true) {
            continue;
        }
        out.push(ResourceType {
            group: group.clone(),
            version: version.to_string(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: names["singular"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| kind.to_lowercase()),
            namespaced,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status_subresource: v["subresources"]["status"].is_object(),
            tracks_generation: true,
            schema: v["schema"]["openAPIV3Schema"]
                .is_object()
                .then(|| Arc::new(v["schema"]["openAPIV3Schema"].clone())),
            printer_columns: v["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            is_crd: true,
        });
    }
    Ok(out)
}

/// Every resource type currently served.
#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { types: builtins() }
    }
}

impl Registry {
    /// Built-ins plus the kinds of the given (established) CRD objects.
    pub fn with_crds<'a>(crds: impl Iterator<Item = &'a Value>) -> Self {
        let mut types = builtins();
        for crd in crds {
            if let Ok(t) = types_from_crd(crd) {
                types.extend(t);
            }
        }
        Registry { types }
    }

    pub fn all(&self) -> &[ResourceType] {
        &self.types
    }

    /// The resource served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// Groups in discovery order (core first, then built-ins, then CRD groups),
    /// each with its versions in order of appearance.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) => {
                    if !versions.contains(&t.version) {
                        versions.push(t.version.clone());
                    }
                }
                None => out.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        out
    }

    /// Resource types of one group/version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceType> + 'a {
        self.types
            .iter()
            .filter(move |t| t.group == group && t.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_crd_declares_one_type_per_served_version() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
                    {"name": "v1beta1", "served": false, "storage": false}
                ]}
        });
        let types = types_from_crd(&crd).expect("valid crd");
        assert_eq!(types.len(), 1);
        assert!(types[0].status_subresource && types[0].namespaced);
        assert_eq!(types[0].short_names, vec!["wd".to_string()]);
    }

    #[test]
    fn a_crd_whose_name_does_not_match_is_invalid() {
        let crd = json!({"metadata": {"name": "x"}, "spec": {"group": "g.io", "scope": "Cluster",
            "names": {"plural": "ws", "kind": "W"}, "versions": [{"name": "v1", "served": true, "storage": true}]}});
        assert_eq!(
            types_from_crd(&crd).expect_err("invalid name").0,
            "metadata.name"
        );
    }
}
