//! The kustomize transformers flotilla supports, each as kustomize applies it: namespace,
//! name prefix/suffix, labels (`commonLabels` reach selectors and templates), annotations,
//! images, replicas, and the final pass that points references (env, volumes,
//! serviceAccountName, roleRef, subjects ...) at renamed objects.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::Res;
use crate::scope::{Scope, group_of};

/// One place a transformer writes: for objects of `kind` (any when `None`) in `group`
/// (any when `None`), the map at `path` (`/`-separated; lists are walked element-wise).
struct FieldSpec {
    group: Option<&'static str>,
    kind: Option<&'static str>,
    path: &'static str,
    create: bool,
}

const fn fs(
    group: Option<&'static str>,
    kind: &'static str,
    path: &'static str,
    create: bool,
) -> FieldSpec {
    FieldSpec {
        group,
        kind: Some(kind),
        path,
        create,
    }
}

const METADATA_LABELS: FieldSpec = FieldSpec {
    group: None,
    kind: None,
    path: "metadata/labels",
    create: true,
};

const APPS: Option<&str> = Some("apps");
const BATCH: Option<&str> = Some("batch");

/// Where kustomize puts `commonLabels` beyond metadata.labels: selectors and templates.
const SELECTOR_SPECS: &[FieldSpec] = &[
    fs(None, "Service", "spec/selector", true),
    fs(None, "ReplicationController", "spec/selector", true),
    fs(None, "Deployment", "spec/selector/matchLabels", true),
    fs(None, "ReplicaSet", "spec/selector/matchLabels", true),
    fs(None, "DaemonSet", "spec/selector/matchLabels", true),
    fs(APPS, "StatefulSet", "spec/selector/matchLabels", true),
    fs(BATCH, "Job", "spec/selector/matchLabels", false),
    fs(
        BATCH,
        "CronJob",
        "spec/jobTemplate/spec/selector/matchLabels",
        false,
    ),
    fs(
        Some("policy"),
        "PodDisruptionBudget",
        "spec/selector/matchLabels",
        false,
    ),
    fs(
        Some("networking.k8s.io"),
        "NetworkPolicy",
        "spec/podSelector/matchLabels",
        false,
    ),
    fs(
        Some("networking.k8s.io"),
        "NetworkPolicy",
        "spec/ingress/from/podSelector/matchLabels",
        false,
    ),
    fs(
        Some("networking.k8s.io"),
        "NetworkPolicy",
        "spec/egress/to/podSelector/matchLabels",
        false,
    ),
    fs(
        APPS,
        "Deployment",
        "spec/template/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    fs(
        APPS,
        "Deployment",
        "spec/template/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    fs(
        APPS,
        "Deployment",
        "spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    fs(
        APPS,
        "Deployment",
        "spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    fs(
        APPS,
        "Deployment",
        "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
        false,
    ),
    fs(
        APPS,
        "StatefulSet",
        "spec/template/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    fs(
        APPS,
        "StatefulSet",
        "spec/template/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    fs(
        APPS,
        "StatefulSet",
        "spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    fs(
        APPS,
        "StatefulSet",
        "spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    fs(
        APPS,
        "StatefulSet",
        "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
        false,
    ),
];

/// Pod template labels (`labels[].includeTemplates`, and part of `commonLabels`).
const TEMPLATE_LABEL_SPECS: &[FieldSpec] = &[
    fs(
        None,
        "ReplicationController",
        "spec/template/metadata/labels",
        true,
    ),
    fs(None, "Deployment", "spec/template/metadata/labels", true),
    fs(None, "ReplicaSet", "spec/template/metadata/labels", true),
    fs(None, "DaemonSet", "spec/template/metadata/labels", true),
    fs(APPS, "StatefulSet", "spec/template/metadata/labels", true),
    fs(
        APPS,
        "StatefulSet",
        "spec/volumeClaimTemplates/metadata/labels",
        true,
    ),
    fs(BATCH, "Job", "spec/template/metadata/labels", true),
    fs(BATCH, "CronJob", "spec/jobTemplate/metadata/labels", true),
    fs(
        BATCH,
        "CronJob",
        "spec/jobTemplate/spec/template/metadata/labels",
        true,
    ),
];

const ANNOTATION_SPECS: &[FieldSpec] = &[
    FieldSpec {
        group: None,
        kind: None,
        path: "metadata/annotations",
        create: true,
    },
    fs(
        None,
        "ReplicationController",
        "spec/template/metadata/annotations",
        true,
    ),
    fs(
        None,
        "Deployment",
        "spec/template/metadata/annotations",
        true,
    ),
    fs(
        None,
        "ReplicaSet",
        "spec/template/metadata/annotations",
        true,
    ),
    fs(
        None,
        "DaemonSet",
        "spec/template/metadata/annotations",
        true,
    ),
    fs(
        APPS,
        "StatefulSet",
        "spec/template/metadata/annotations",
        true,
    ),
    fs(BATCH, "Job", "spec/template/metadata/annotations", true),
    fs(
        BATCH,
        "CronJob",
        "spec/jobTemplate/metadata/annotations",
        true,
    ),
    fs(
        BATCH,
        "CronJob",
        "spec/jobTemplate/spec/template/metadata/annotations",
        true,
    ),
];

fn applies(spec: &FieldSpec, r: &Res) -> bool {
    spec.kind.is_none_or(|k| k == r.obj.kind())
        && spec
            .group
            .is_none_or(|g| g == group_of(r.obj.api_version()))
}

/// Calls `f` on the map at `path` of `v`, walking lists element-wise and creating missing
/// maps when `create`.
fn at_path(v: &mut Value, path: &[&str], create: bool, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Array(items) => {
            for item in items {
                at_path(item, path, create, f);
            }
        }
        Value::Object(m) => match path.split_first() {
            None => f(m),
            Some((head, rest)) => {
                if !m.contains_key(*head) {
                    if !create {
                        return;
                    }
                    m.insert(head.to_string(), Value::Object(Map::new()));
                }
                if let Some(next) = m.get_mut(*head) {
                    if next.is_null() && create {
                        *next = Value::Object(Map::new());
                    }
                    at_path(next, rest, create, f);
                }
            }
        },
        _ => {}
    }
}

fn put_all(r: &mut Res, specs: &[&FieldSpec], pairs: &BTreeMap<String, String>) {
    for spec in specs {
        if !applies(spec, r) {
            continue;
        }
        let path: Vec<&str> = spec.path.split('/').collect();
        at_path(&mut r.obj.value, &path, spec.create, &mut |m| {
            for (k, v) in pairs {
                m.insert(k.clone(), Value::String(v.clone()));
            }
        });
    }
}

/// `labels[]` entries.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct LabelSpec {
    pub pairs: BTreeMap<String, String>,
    pub include_selectors: bool,
    pub include_templates: bool,
}

fn label_specs(labels: &LabelSpec) -> Vec<&'static FieldSpec> {
    let mut specs: Vec<&FieldSpec> = vec![&METADATA_LABELS];
    if labels.include_selectors || labels.include_templates {
        specs.extend(TEMPLATE_LABEL_SPECS.iter());
    }
    if labels.include_selectors {
        specs.extend(SELECTOR_SPECS.iter());
    }
    specs
}

/// How many places of one object `labels` can be written to: the most copies of its
/// pairs one object gains (lists of selector terms aside).
pub(crate) fn label_places(labels: &LabelSpec) -> usize {
    label_specs(labels).len()
}

pub(crate) fn add_labels(resources: &mut [Res], labels: &LabelSpec) {
    if labels.pairs.is_empty() {
        return;
    }
    let specs = label_specs(labels);
    for r in resources {
        put_all(r, &specs, &labels.pairs);
    }
}

/// How many places of one object annotations can be written to.
pub(crate) fn annotation_places() -> usize {
    ANNOTATION_SPECS.len()
}

pub(crate) fn add_annotations(resources: &mut [Res], pairs: &BTreeMap<String, String>) {
    if pairs.is_empty() {
        return;
    }
    let specs: Vec<&FieldSpec> = ANNOTATION_SPECS.iter().collect();
    for r in resources {
        put_all(r, &specs, pairs);
    }
}

/// Sets the namespace of namespaced objects; a Namespace object takes the new name, as
/// kustomize does.
pub(crate) fn set_namespace(resources: &mut [Res], ns: &str, scope: &Scope) {
    for r in resources {
        let (api_version, kind) = (r.obj.api_version().to_string(), r.obj.kind().to_string());
        if kind == "Namespace" && group_of(&api_version).is_empty() {
            r.set_name(ns);
            continue;
        }
        if scope.is_cluster_scoped(&api_version, &kind) {
            continue;
        }
        r.set_namespace(ns);
    }
}

pub(crate) fn add_prefix_suffix(resources: &mut [Res], prefix: &str, suffix: &str) {
    if prefix.is_empty() && suffix.is_empty() {
        return;
    }
    for r in resources {
        let group = group_of(r.obj.api_version());
        let skip = matches!(
            (group, r.obj.kind()),
            ("", "Namespace")
                | ("apiextensions.k8s.io", "CustomResourceDefinition")
                | ("apiregistration.k8s.io", "APIService")
        );
        if !skip {
            let name = format!("{prefix}{}{suffix}", r.obj.name());
            r.set_name(&name);
        }
    }
}

/// `images[]` entries.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct ImageSpec {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
    pub digest: Option<String>,
    #[serde(rename = "tagSuffix")]
    pub tag_suffix: Option<String>,
}

/// Splits `registry:5000/app:1.0@sha256:..` into (name, tag, digest).
fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

fn retag(image: &str, spec: &ImageSpec) -> Option<String> {
    let (name, tag, digest) = split_image(image);
    if name != spec.name {
        return None;
    }
    let name = spec.new_name.as_deref().unwrap_or(name);
    let mut out = name.to_string();
    if let Some(d) = spec.digest.as_deref().filter(|d| !d.is_empty()) {
        out.push('@');
        out.push_str(d);
    } else if let Some(t) = spec.new_tag.as_deref().filter(|t| !t.is_empty()) {
        out.push(':');
        out.push_str(t);
    } else {
        if let Some(t) = tag {
            out.push(':');
            out.push_str(t);
            if let Some(s) = &spec.tag_suffix {
                out.push_str(s);
            }
        }
        if let Some(d) = digest {
            out.push('@');
            out.push_str(d);
        }
    }
    Some(out)
}

/// Rewrites `image` in every `containers` and `initContainers` list of every object.
pub(crate) fn set_images(resources: &mut [Res], images: &[ImageSpec]) {
    fn walk(v: &mut Value, images: &[ImageSpec]) {
        match v {
            Value::Object(m) => {
                for (k, child) in m.iter_mut() {
                    if (k == "containers" || k == "initContainers")
                        && let Value::Array(items) = child
                    {
                        for c in items.iter_mut() {
                            let Some(img) = c.get("image").and_then(Value::as_str) else {
                                continue;
                            };
                            if let Some(new) = images.iter().find_map(|s| retag(img, s))
                                && let Some(slot) = c.get_mut("image")
                            {
                                *slot = Value::String(new);
                            }
                        }
                    }
                    walk(child, images);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, images)),
            _ => {}
        }
    }
    if images.is_empty() {
        return;
    }
    for r in resources {
        walk(&mut r.obj.value, images);
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct ReplicaSpec {
    pub name: String,
    pub count: i64,
}

pub(crate) fn set_replicas(resources: &mut [Res], replicas: &[ReplicaSpec]) {
    for spec in replicas {
        for r in resources.iter_mut() {
            let scalable = matches!(
                r.obj.kind(),
                "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController"
            );
            if !scalable || !r.ids().any(|(n, _)| n == spec.name) {
                continue;
            }
            if let Some(m) = r.obj.value.as_object_mut() {
                let s = m.entry("spec").or_insert_with(|| Value::Object(Map::new()));
                if let Some(s) = s.as_object_mut() {
                    s.insert("replicas".into(), Value::from(spec.count));
                }
            }
        }
    }
}

/// A renamed object others may refer to by an earlier name.
struct Renamed {
    kind: String,
    names: Vec<String>,
    namespaces: Vec<Option<String>>,
    current: String,
    namespace: Option<String>,
}

/// The renamed objects by (kind, earlier name), so a reference is resolved with one
/// lookup instead of a scan of every renamed object (quadratic on large bundles).
struct RenamedIndex<'a> {
    /// kind -> earlier name -> the objects that had it.
    by_kind: BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a Renamed>>>,
}

impl<'a> RenamedIndex<'a> {
    fn new(renamed: &'a [Renamed]) -> Self {
        let mut by_kind: BTreeMap<&str, BTreeMap<&str, Vec<&Renamed>>> = BTreeMap::new();
        for x in renamed {
            let names = by_kind.entry(x.kind.as_str()).or_default();
            for n in &x.names {
                let hits = names.entry(n.as_str()).or_default();
                // An object can hold one name in several namespaces: list it once.
                if !hits.last().is_some_and(|h| std::ptr::eq(*h, x)) {
                    hits.push(x);
                }
            }
        }
        RenamedIndex { by_kind }
    }

    fn get(&self, kind: &str, name: &str) -> &[&'a Renamed] {
        self.by_kind
            .get(kind)
            .and_then(|names| names.get(name))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Points references at objects whose names changed (prefix, suffix, hash).
pub(crate) fn fix_references(resources: &mut [Res]) {
    let renamed: Vec<Renamed> = resources
        .iter()
        .filter(|r| r.prev.iter().any(|(n, _)| n != r.obj.name()))
        .map(|r| Renamed {
            kind: r.obj.kind().to_string(),
            names: r.prev.iter().map(|(n, _)| n.clone()).collect(),
            namespaces: r.ids().map(|(_, ns)| ns.map(str::to_string)).collect(),
            current: r.obj.name().to_string(),
            namespace: r.obj.namespace().map(str::to_string),
        })
        .collect();
    if renamed.is_empty() {
        return;
    }
    let index = RenamedIndex::new(&renamed);
    for r in resources.iter_mut() {
        let ns = r.obj.namespace().map(str::to_string);
        let kind = r.obj.kind().to_string();
        let lookup = |k: &str, name: &str| -> Option<String> {
            let cluster_scoped = matches!(k, "ClusterRole");
            let hits: Vec<&Renamed> = index
                .get(k, name)
                .iter()
                .filter(|x| cluster_scoped || x.namespace == ns)
                .copied()
                .collect();
            match hits.as_slice() {
                [one] => Some(one.current.clone()),
                _ => None,
            }
        };
        let v = &mut r.obj.value;
        for path in pod_spec_paths(&kind) {
            if let Some(spec) = get_path_mut(v, path) {
                fix_pod_spec(spec, &lookup);
            }
        }
        match kind.as_str() {
            "Ingress" => {
                if let Some(tls) = get_path_mut(v, &["spec", "tls"]).and_then(Value::as_array_mut) {
                    for t in tls {
                        set_ref(t, &["secretName"], "Secret", &lookup);
                    }
                }
                if let Some(rules) =
                    get_path_mut(v, &["spec", "rules"]).and_then(Value::as_array_mut)
                {
                    for rule in rules {
                        if let Some(paths) =
                            get_path_mut(rule, &["http", "paths"]).and_then(Value::as_array_mut)
                        {
                            for p in paths {
                                set_ref(p, &["backend", "service", "name"], "Service", &lookup);
                            }
                        }
                    }
                }
                set_ref(
                    v,
                    &["spec", "defaultBackend", "service", "name"],
                    "Service",
                    &lookup,
                );
            }
            "StatefulSet" => set_ref(v, &["spec", "serviceName"], "Service", &lookup),
            "HorizontalPodAutoscaler" => {
                let target_kind = v
                    .get("spec")
                    .and_then(|s| s.get("scaleTargetRef"))
                    .and_then(|s| s.get("kind"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                set_ref(
                    v,
                    &["spec", "scaleTargetRef", "name"],
                    &target_kind,
                    &lookup,
                );
            }
            "ServiceAccount" => {
                for field in ["secrets", "imagePullSecrets"] {
                    if let Some(items) = v.get_mut(field).and_then(Value::as_array_mut) {
                        for i in items {
                            set_ref(i, &["name"], "Secret", &lookup);
                        }
                    }
                }
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                let role_kind = v
                    .get("roleRef")
                    .and_then(|s| s.get("kind"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                set_ref(v, &["roleRef", "name"], &role_kind, &lookup);
                if let Some(subjects) = v.get_mut("subjects").and_then(Value::as_array_mut) {
                    for s in subjects {
                        fix_subject(s, &index);
                    }
                }
            }
            _ => {}
        }
    }
}

fn fix_subject(s: &mut Value, index: &RenamedIndex<'_>) {
    if s.get("kind").and_then(Value::as_str) != Some("ServiceAccount") {
        return;
    }
    let Some(name) = s.get("name").and_then(Value::as_str) else {
        return;
    };
    let ns = s
        .get("namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    let hits: Vec<&Renamed> = index
        .get("ServiceAccount", name)
        .iter()
        .filter(|x| ns.is_none() || x.namespaces.contains(&ns))
        .copied()
        .collect();
    if let [one] = hits.as_slice()
        && let Some(m) = s.as_object_mut()
    {
        m.insert("name".into(), Value::String(one.current.clone()));
        if let Some(n) = &one.namespace {
            m.insert("namespace".into(), Value::String(n.clone()));
        }
    }
}

fn pod_spec_paths(kind: &str) -> &'static [&'static [&'static str]] {
    match kind {
        "Pod" => &[&["spec"]],
        "Deployment"
        | "ReplicaSet"
        | "DaemonSet"
        | "StatefulSet"
        | "Job"
        | "ReplicationController" => &[&["spec", "template", "spec"]],
        "CronJob" => &[&["spec", "jobTemplate", "spec", "template", "spec"]],
        _ => &[],
    }
}

fn get_path_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get_mut(*p)?;
    }
    Some(cur)
}

fn set_ref(
    v: &mut Value,
    path: &[&str],
    kind: &str,
    lookup: &dyn Fn(&str, &str) -> Option<String>,
) {
    if let Some(slot) = get_path_mut(v, path)
        && let Some(name) = slot.as_str()
        && let Some(new) = lookup(kind, name)
    {
        *slot = Value::String(new);
    }
}

fn fix_pod_spec(spec: &mut Value, lookup: &dyn Fn(&str, &str) -> Option<String>) {
    set_ref(spec, &["serviceAccountName"], "ServiceAccount", lookup);
    set_ref(spec, &["serviceAccount"], "ServiceAccount", lookup);
    if let Some(items) = spec
        .get_mut("imagePullSecrets")
        .and_then(Value::as_array_mut)
    {
        for i in items {
            set_ref(i, &["name"], "Secret", lookup);
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for vol in vols {
            set_ref(vol, &["configMap", "name"], "ConfigMap", lookup);
            set_ref(vol, &["secret", "secretName"], "Secret", lookup);
            set_ref(
                vol,
                &["persistentVolumeClaim", "claimName"],
                "PersistentVolumeClaim",
                lookup,
            );
            if let Some(srcs) =
                get_path_mut(vol, &["projected", "sources"]).and_then(Value::as_array_mut)
            {
                for s in srcs {
                    set_ref(s, &["configMap", "name"], "ConfigMap", lookup);
                    set_ref(s, &["secret", "name"], "Secret", lookup);
                }
            }
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
                for e in env {
                    set_ref(
                        e,
                        &["valueFrom", "configMapKeyRef", "name"],
                        "ConfigMap",
                        lookup,
                    );
                    set_ref(e, &["valueFrom", "secretKeyRef", "name"], "Secret", lookup);
                }
            }
            if let Some(env_from) = c.get_mut("envFrom").and_then(Value::as_array_mut) {
                for e in env_from {
                    set_ref(e, &["configMapRef", "name"], "ConfigMap", lookup);
                    set_ref(e, &["secretRef", "name"], "Secret", lookup);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        name: &str,
        new_name: Option<&str>,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> ImageSpec {
        ImageSpec {
            name: name.into(),
            new_name: new_name.map(Into::into),
            new_tag: tag.map(Into::into),
            digest: digest.map(Into::into),
            tag_suffix: None,
        }
    }

    #[test]
    fn images_keep_registry_ports_and_swap_tags_or_digests() {
        assert_eq!(
            split_image("localhost:5000/app:1.0"),
            ("localhost:5000/app", Some("1.0"), None)
        );
        assert_eq!(
            retag("nginx:1.0", &spec("nginx", None, Some("2"), None)),
            Some("nginx:2".into())
        );
        assert_eq!(
            retag("nginx", &spec("nginx", Some("r/nginx"), None, None)),
            Some("r/nginx".into())
        );
        assert_eq!(
            retag("nginx:1", &spec("nginx", None, None, Some("sha256:ab"))),
            Some("nginx@sha256:ab".into())
        );
        assert_eq!(
            retag("other:1", &spec("nginx", None, Some("2"), None)),
            None
        );
    }
}
