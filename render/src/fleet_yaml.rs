//! `fleet.yaml` / `flotilla.yaml`: the typed bundle spec, read as Rancher Fleet writes it.
//! Owns the field list, the options carried to later stages (`BundleOptions`), and the
//! warnings for fields that are unknown or known but not supported. It does not render.

use flotilla_model::{LabelSelector, Labels};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::helm::spec::{HELM_FIELDS, HelmSpec};
use crate::output::canonical_json;

/// Options carried from `fleet.yaml` to the hub and spoke. Parsed and validated here; the
/// renderer gives them no behaviour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BundleOptions {
    pub depends_on: Vec<DependsOn>,
    pub rollout_strategy: Option<RolloutStrategy>,
    pub correct_drift: CorrectDrift,
    pub keep_resources: bool,
    pub paused: bool,
    pub diff: Diff,
    pub labels: Labels,
    /// Helm bundles only: the release name and Fleet's Helm deploy options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm: Option<crate::helm::spec::HelmDeployOptions>,
}

impl BundleOptions {
    /// Deterministic JSON (sorted keys, no whitespace); the hub hashes it with the content
    /// digest into the deployment id.
    pub fn canonical_json(&self) -> String {
        serde_json::to_value(self)
            .map(|v| canonical_json(&v))
            .unwrap_or_default()
    }
}

/// `dependsOn[]`: a bundle by name, or the bundles matching a label selector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DependsOn {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A count or a percentage, as in Kubernetes' `IntOrString`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutStrategy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable_partitions: Option<IntOrString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_partition_size: Option<IntOrString>,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Partition {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_group_selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CorrectDrift {
    pub enabled: bool,
    pub force: bool,
    pub keep_fail_history: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Diff {
    pub compare_patches: Vec<ComparePatch>,
}

/// `diff.comparePatches[]`: fields of one object to ignore when comparing for drift.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ComparePatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub operations: Vec<PatchOperation>,
    pub json_pointers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PatchOperation {
    pub op: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// The parts of `fleet.yaml` that decide what is rendered.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RenderSpec {
    pub namespace: Option<String>,
    pub default_namespace: Option<String>,
    pub overlays: Vec<String>,
    pub kustomize_dir: Option<String>,
    pub customizations: Vec<Customization>,
    /// flotilla extension: substitute `${cluster.*}` in this bundle's YAML.
    pub cluster_values: bool,
    /// flotilla extension: extra cluster-scoped kinds, as `Kind` or `group/Kind`.
    pub cluster_scoped_kinds: Vec<String>,
    /// `helm:`; a bundle with it (or with `Chart.yaml` in its folder) is a Helm bundle.
    pub helm: Option<HelmSpec>,
}

/// One `targetCustomizations[]` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Customization {
    /// `name`, or `#<index>` when unnamed.
    pub name: String,
    pub cluster_selector: Option<LabelSelector>,
    pub cluster_group: Option<String>,
    pub cluster_group_selector: Option<LabelSelector>,
    pub cluster_name: Option<String>,
    pub do_not_deploy: bool,
    pub namespace: Option<String>,
    pub default_namespace: Option<String>,
    pub overlays: Option<Vec<String>>,
    pub kustomize_dir: Option<String>,
    pub helm: Option<HelmSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawFile {
    namespace: Option<String>,
    default_namespace: Option<String>,
    labels: Labels,
    kustomize: Option<RawKustomize>,
    yaml: Option<RawYaml>,
    helm: Option<HelmSpec>,
    target_customizations: Vec<RawCustomization>,
    depends_on: Vec<DependsOn>,
    rollout_strategy: Option<RolloutStrategy>,
    correct_drift: Option<CorrectDrift>,
    keep_resources: bool,
    paused: bool,
    diff: Diff,
    cluster_values: bool,
    cluster_scoped_kinds: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawKustomize {
    dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawYaml {
    overlays: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawCustomization {
    name: Option<String>,
    cluster_selector: Option<LabelSelector>,
    cluster_group: Option<String>,
    cluster_group_selector: Option<LabelSelector>,
    cluster_name: Option<String>,
    do_not_deploy: bool,
    namespace: Option<String>,
    default_namespace: Option<String>,
    kustomize: Option<RawKustomize>,
    yaml: Option<RawYaml>,
    helm: Option<HelmSpec>,
}

/// Fields flotilla reads.
const TOP_FIELDS: &[&str] = &[
    "namespace",
    "defaultNamespace",
    "labels",
    "kustomize",
    "yaml",
    "helm",
    "targetCustomizations",
    "dependsOn",
    "rolloutStrategy",
    "correctDrift",
    "keepResources",
    "paused",
    "diff",
    "clusterValues",
    "clusterScopedKinds",
];
/// Fleet fields flotilla knows but does not implement yet.
const TOP_UNSUPPORTED: &[&str] = &[
    "serviceAccount",
    "forceSyncGeneration",
    "ignore",
    "namespaceLabels",
    "namespaceAnnotations",
    "deleteNamespace",
    "overrideTargets",
    "imageScans",
    "deleteCRDResources",
    "helmSecretName",
    "downstreamResources",
];
const TARGET_FIELDS: &[&str] = &[
    "name",
    "clusterSelector",
    "clusterGroup",
    "clusterGroupSelector",
    "clusterName",
    "doNotDeploy",
    "namespace",
    "defaultNamespace",
    "kustomize",
    "yaml",
    "helm",
];
const TARGET_UNSUPPORTED: &[&str] = &[
    "correctDrift",
    "keepResources",
    "diff",
    "serviceAccount",
    "forceSyncGeneration",
    "ignore",
    "namespaceLabels",
    "namespaceAnnotations",
    "deleteNamespace",
];

/// A parsed `fleet.yaml`: what to render, the options, and warnings.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub spec: RenderSpec,
    pub options: BundleOptions,
    pub warnings: Vec<Diagnostic>,
}

/// Parses `fleet.yaml` text. `file` is its repo-relative path, for diagnostics.
pub(crate) fn parse(file: &str, text: &str) -> Result<Parsed, Vec<Diagnostic>> {
    let value = crate::yaml::parse_single(file, text).map_err(|d| vec![d])?;
    if value.is_null() {
        return Ok(Parsed {
            spec: RenderSpec::default(),
            options: BundleOptions::default(),
            warnings: Vec::new(),
        });
    }
    if !value.is_object() {
        return Err(vec![Diagnostic::at(
            file,
            1,
            "fleet.yaml must be a mapping",
        )]);
    }
    let mut opts = serde_saphyr::Options::default();
    opts.legacy_octal_numbers = true;
    opts.strict_booleans = true;
    let raw: RawFile = serde_saphyr::from_str_with_options(text, opts).map_err(|e| {
        let loc = e.location();
        let msg = e.without_snippet().to_string();
        let msg = msg.rsplit_once(" at line ").map(|(m, _)| m).unwrap_or(&msg);
        vec![
            Diagnostic::at(
                file,
                loc.map(|l| l.line() as u32).unwrap_or(1),
                format!("invalid fleet.yaml: {msg}"),
            )
            .with_column(loc.map(|l| l.column() as u32)),
        ]
    })?;

    let mut warnings = Vec::new();
    check_keys(
        file,
        text,
        &value,
        TOP_FIELDS,
        TOP_UNSUPPORTED,
        "",
        &mut warnings,
    );
    if let Some(targets) = value.get("targetCustomizations").and_then(Value::as_array) {
        for (i, t) in targets.iter().enumerate() {
            let prefix = format!("targetCustomizations[{i}].");
            check_keys(
                file,
                text,
                t,
                TARGET_FIELDS,
                TARGET_UNSUPPORTED,
                &prefix,
                &mut warnings,
            );
        }
    }

    let mut errors = Vec::new();
    if let Some(helm) = &raw.helm {
        check_helm(
            file,
            text,
            &value["helm"],
            helm,
            "helm.",
            &mut errors,
            &mut warnings,
        );
    }
    let selector_error = |what: &str, s: &LabelSelector, errors: &mut Vec<Diagnostic>| {
        if let Err(e) = s.validate() {
            errors.push(Diagnostic::at(
                file,
                line_of_key(text, what),
                format!("{what}: {e}"),
            ));
        }
    };
    let mut customizations = Vec::new();
    for (i, t) in raw.target_customizations.into_iter().enumerate() {
        if let Some(s) = &t.cluster_selector {
            selector_error("clusterSelector", s, &mut errors);
        }
        if let Some(s) = &t.cluster_group_selector {
            selector_error("clusterGroupSelector", s, &mut errors);
        }
        if let Some(h) = &t.helm {
            let prefix = format!("targetCustomizations[{i}].helm.");
            let raw_helm = &value["targetCustomizations"][i]["helm"];
            check_helm(file, text, raw_helm, h, &prefix, &mut errors, &mut warnings);
        }
        let name = t.name.clone().unwrap_or_else(|| format!("#{i}"));
        if t.cluster_selector.is_none()
            && t.cluster_group.is_none()
            && t.cluster_group_selector.is_none()
            && t.cluster_name.is_none()
        {
            warnings.push(Diagnostic::at(
                file,
                line_of_key(text, "targetCustomizations"),
                format!(
                    "targetCustomizations[{i}] ({name}) has no clusterSelector, clusterGroup, \
                     clusterGroupSelector or clusterName and matches no cluster"
                ),
            ));
        }
        customizations.push(Customization {
            name,
            cluster_selector: t.cluster_selector,
            cluster_group: t.cluster_group,
            cluster_group_selector: t.cluster_group_selector,
            cluster_name: t.cluster_name,
            do_not_deploy: t.do_not_deploy,
            namespace: t.namespace,
            default_namespace: t.default_namespace,
            overlays: t.yaml.map(|y| y.overlays),
            kustomize_dir: t.kustomize.and_then(|k| k.dir),
            helm: t.helm,
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &customizations {
        if !seen.insert(c.name.clone()) {
            errors.push(Diagnostic::at(
                file,
                line_of_key(text, "targetCustomizations"),
                format!("two targetCustomizations are named {:?}", c.name),
            ));
        }
    }
    for d in &raw.depends_on {
        if let Some(s) = &d.selector {
            selector_error("dependsOn", s, &mut errors);
        }
        if d.name.is_none() && d.selector.is_none() {
            errors.push(Diagnostic::at(
                file,
                line_of_key(text, "dependsOn"),
                "dependsOn entry needs a name or a selector",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Parsed {
        spec: RenderSpec {
            namespace: raw.namespace,
            default_namespace: raw.default_namespace,
            overlays: raw.yaml.map(|y| y.overlays).unwrap_or_default(),
            kustomize_dir: raw.kustomize.and_then(|k| k.dir),
            customizations,
            cluster_values: raw.cluster_values,
            cluster_scoped_kinds: raw.cluster_scoped_kinds,
            helm: raw.helm,
        },
        options: BundleOptions {
            depends_on: raw.depends_on,
            rollout_strategy: raw.rollout_strategy,
            correct_drift: raw.correct_drift.unwrap_or_default(),
            keep_resources: raw.keep_resources,
            paused: raw.paused,
            diff: raw.diff,
            labels: raw.labels,
            helm: None,
        },
        warnings,
    })
}

fn check_helm(
    file: &str,
    text: &str,
    raw: &Value,
    helm: &HelmSpec,
    prefix: &str,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) {
    if let Err(d) = helm.check(file, line_of_key(text, "helm")) {
        errors.push(d);
    }
    check_keys(file, text, raw, HELM_FIELDS, &[], prefix, warnings);
}

fn check_keys(
    file: &str,
    text: &str,
    value: &Value,
    known: &[&str],
    unsupported: &[&str],
    prefix: &str,
    warnings: &mut Vec<Diagnostic>,
) {
    let Some(map) = value.as_object() else {
        return;
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        if known.contains(&key.as_str()) {
            continue;
        }
        let line = line_of_key(text, key);
        let message = if unsupported.contains(&key.as_str()) {
            format!("{prefix}{key} is not supported by flotilla yet and is ignored")
        } else {
            format!("unknown field {prefix}{key} is ignored")
        };
        warnings.push(Diagnostic::at(file, line, message));
    }
}

/// The first line on which `key:` starts a mapping entry (1 when not found).
pub(crate) fn line_of_key(text: &str, key: &str) -> u32 {
    let plain = format!("{key}:");
    let quoted = format!("\"{key}\":");
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start().trim_start_matches("- ").trim_start();
        if t.starts_with(&plain) || t.starts_with(&quoted) {
            return i as u32 + 1;
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fleet_fields_and_options() {
        let text = r#"
defaultNamespace: apps
namespace: forced
labels: {team: a}
dependsOn:
- name: base
- selector: {matchLabels: {tier: db}}
rolloutStrategy:
  maxUnavailable: 10%
  partitions:
  - name: canary
    clusterSelector: {matchLabels: {env: canary}}
correctDrift: {enabled: true}
keepResources: true
paused: true
diff:
  comparePatches:
  - apiVersion: apps/v1
    kind: Deployment
    name: web
    jsonPointers: [/spec/replicas]
targetCustomizations:
- name: prod
  clusterSelector:
    matchLabels: {env: prod}
  yaml: {overlays: [prod]}
- name: off
  clusterName: lab
  doNotDeploy: true
"#;
        let p = parse("fleet.yaml", text).expect("parses");
        assert_eq!(p.spec.namespace.as_deref(), Some("forced"));
        assert_eq!(p.spec.default_namespace.as_deref(), Some("apps"));
        assert_eq!(p.spec.customizations.len(), 2);
        assert_eq!(
            p.spec.customizations[0].overlays,
            Some(vec!["prod".to_string()])
        );
        assert!(p.spec.customizations[1].do_not_deploy);
        assert!(p.options.correct_drift.enabled && p.options.keep_resources && p.options.paused);
        assert_eq!(p.options.depends_on.len(), 2);
        assert_eq!(
            p.options
                .rollout_strategy
                .as_ref()
                .and_then(|r| r.max_unavailable.clone()),
            Some(IntOrString::String("10%".into()))
        );
        assert_eq!(
            p.options.diff.compare_patches[0].json_pointers,
            vec!["/spec/replicas"]
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn unknown_fields_warn_with_their_line() {
        let p = parse(
            "b/fleet.yaml",
            "namespace: x\nbogus: 1\nserviceAccount: sa\n",
        )
        .expect("ok");
        let msgs: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "b/fleet.yaml:2: unknown field bogus is ignored",
                "b/fleet.yaml:3: serviceAccount is not supported by flotilla yet and is ignored",
            ]
        );
    }

    #[test]
    fn wrong_types_are_errors_with_a_line() {
        let errs = parse("fleet.yaml", "namespace: x\npaused: [1]\n").expect_err("fails");
        assert_eq!(errs[0].line, Some(2), "{:?}", errs);
    }

    #[test]
    fn helm_blocks_are_read_per_target_and_value_from_is_refused() {
        let p = parse(
            "fleet.yaml",
            "helm:\n  chart: ./c\n  bogus: 1\ntargetCustomizations:\n- name: a\n  clusterName: x\n  helm:\n    values: {a: 1}\n",
        )
        .expect("parses");
        assert_eq!(p.spec.helm.and_then(|h| h.chart).as_deref(), Some("./c"));
        assert!(p.spec.customizations[0].helm.is_some());
        assert_eq!(p.warnings[0].message, "unknown field helm.bogus is ignored");
        let errs = parse("fleet.yaml", "helm:\n  valuesFrom: [{}]\n").expect_err("fails");
        assert!(errs[0].message.contains("valuesFrom"), "{errs:?}");
    }

    #[test]
    fn canonical_options_json_is_sorted_and_stable() {
        let p = parse("f", "paused: true\nlabels: {b: '1', a: '2'}\n").expect("ok");
        let j = p.options.canonical_json();
        assert_eq!(j, p.options.clone().canonical_json());
        assert!(j.contains(r#""labels":{"a":"2","b":"1"}"#), "{j}");
        let idx_k = j.find("keepResources").unwrap_or(0);
        let idx_p = j.find("paused").unwrap_or(0);
        assert!(idx_k < idx_p);
    }
}
