//! From rendered template text to objects, as Helm's `releaseutil.SortManifests` does it:
//! templates in name order (partials `_*` and blank output skipped), each split at `---`
//! lines, each document parsed, hooks (`helm.sh/hook`) set apart from the rest, both sorted
//! stably by Helm's `InstallOrder` of kinds. `helm template` prints CRDs, then the
//! manifests, then the hooks; `test` hooks are dropped (they are never applied), and so are
//! hooks of an unknown type, as Helm drops them.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::diagnostic::Diagnostic;

/// Helm's `releaseutil.InstallOrder`.
const INSTALL_ORDER: &[&str] = &[
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
];

const HOOK_ANNOTATION: &str = "helm.sh/hook";
const HOOK_EVENTS: &[&str] = &[
    "pre-install",
    "post-install",
    "pre-delete",
    "post-delete",
    "pre-upgrade",
    "post-upgrade",
    "pre-rollback",
    "post-rollback",
    "test",
    "test-success",
];

/// Helm's document separator: `---` after a newline (or at the start), with the
/// whitespace around it.
static SEPARATOR: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"(?:^|\s*\n)---\s*").ok());

/// One document of the output, parsed, with the template it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Doc {
    /// The template's name as Helm prints it (`chart/templates/x.yaml`).
    pub template: String,
    /// 1-based line in the template's rendered output where the document starts.
    pub line: u32,
    pub value: Value,
}

/// Splits, parses and orders rendered templates (`name -> text`). Errors name the
/// template and the line of its output.
pub(crate) fn sort_manifests(
    rendered: &BTreeMap<String, String>,
    parse: &dyn Fn(&str, &str) -> Result<Value, Diagnostic>,
) -> Result<(Vec<Doc>, Vec<Doc>), Vec<Diagnostic>> {
    let mut generic = Vec::new();
    let mut hooks = Vec::new();
    let mut errors = Vec::new();
    for (name, content) in rendered {
        if crate::repo_fs::file_name(name).starts_with('_') || content.trim().is_empty() {
            continue;
        }
        for (line, doc) in split(content) {
            let value = match parse(name, doc) {
                Ok(v) => v,
                Err(mut d) => {
                    d.file = name.clone();
                    d.line = Some(line + d.line.unwrap_or(1) - 1);
                    d.message = format!("YAML parse error in the template's output: {}", d.message);
                    errors.push(d);
                    continue;
                }
            };
            if value.is_null() {
                continue;
            }
            let doc = Doc {
                template: name.clone(),
                line,
                value,
            };
            match hook_events(&doc.value) {
                None => generic.push(doc),
                Some(events) => {
                    let known = events.iter().all(|e| HOOK_EVENTS.contains(&e.as_str()));
                    let test = events.iter().any(|e| e.starts_with("test"));
                    if known && !test {
                        hooks.push(doc);
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Stable: ties keep template order. The rank is computed once per document.
    generic.sort_by_cached_key(|d| kind_rank(kind(&d.value)));
    hooks.sort_by_cached_key(|d| kind_rank(kind(&d.value)));
    Ok((generic, hooks))
}

/// The documents of one template's output with the line each starts on (Helm's
/// `SplitManifests`: trimmed, empty ones dropped).
fn split<'a>(content: &'a str) -> Vec<(u32, &'a str)> {
    let trimmed_start = content.len() - content.trim_start().len();
    let body = content.trim();
    let mut out = Vec::new();
    let Some(sep) = SEPARATOR.as_ref() else {
        return vec![(1, body)];
    };
    let mut last = 0;
    let push = |from: usize, to: usize, out: &mut Vec<(u32, &'a str)>| {
        let piece = &body[from..to];
        let doc = piece.trim();
        if doc.is_empty() {
            return;
        }
        let offset = trimmed_start + from + (piece.len() - piece.trim_start().len());
        let line = content[..offset].matches('\n').count() as u32 + 1;
        out.push((line, doc));
    };
    for m in sep.find_iter(body) {
        push(last, m.start(), &mut out);
        last = m.end();
    }
    push(last, body.len(), &mut out);
    out
}

fn kind(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// The `helm.sh/hook` events of an object, if it is a hook.
pub(crate) fn hook_events(v: &Value) -> Option<Vec<String>> {
    let s = v
        .get("metadata")?
        .get("annotations")?
        .get(HOOK_ANNOTATION)?
        .as_str()?;
    Some(
        s.split(',')
            .map(|e| e.trim().to_ascii_lowercase())
            .collect(),
    )
}

/// Helm's `lessByKind` as a sort key: known kinds by `InstallOrder`, unknown after them
/// in alphabetical order; the sort is stable, so ties keep template order.
fn kind_rank(kind: &str) -> (usize, String) {
    match INSTALL_ORDER.iter().position(|o| *o == kind) {
        Some(i) => (i, String::new()),
        None => (INSTALL_ORDER.len(), kind.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(file: &str, text: &str) -> Result<Value, Diagnostic> {
        crate::helm::chart::parse_yaml(file, text)
    }

    #[test]
    fn splits_like_helm_with_lines() {
        // As Go's regexp does, the first separator eats the blank line, so the second
        // `---` stays at the head of the next document (where YAML reads it as a marker).
        let docs = split("\n# Source: x\n---\na: 1\n---\n\n---\nb: 2\n");
        assert_eq!(
            docs,
            vec![(2, "# Source: x"), (4, "a: 1"), (7, "---\nb: 2")]
        );
    }

    #[test]
    fn orders_by_install_order_and_keeps_hooks_apart() {
        let mut r = BTreeMap::new();
        r.insert(
            "c/templates/a.yaml".to_string(),
            "kind: Deployment\nmetadata: {name: d}\n---\nkind: Zeta\n---\nkind: Alpha\n"
                .to_string(),
        );
        r.insert(
            "c/templates/b.yaml".to_string(),
            "kind: ConfigMap\n---\nkind: Job\nmetadata:\n  annotations:\n    helm.sh/hook: pre-install\n---\nkind: Pod\nmetadata:\n  annotations:\n    helm.sh/hook: test\n---\nkind: Pod\nmetadata:\n  annotations:\n    helm.sh/hook: bogus\n".to_string(),
        );
        r.insert(
            "c/templates/_h.tpl".to_string(),
            "kind: Secret\n".to_string(),
        );
        let (generic, hooks) = sort_manifests(&r, &parse).expect("sorts");
        let kinds: Vec<&str> = generic.iter().map(|d| kind(&d.value)).collect();
        assert_eq!(kinds, vec!["ConfigMap", "Deployment", "Alpha", "Zeta"]);
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0].value["kind"], json!("Job"));
    }

    #[test]
    fn a_parse_error_names_the_template_and_line() {
        let mut r = BTreeMap::new();
        r.insert(
            "c/templates/a.yaml".to_string(),
            "a: 1\n---\nb: [\n".to_string(),
        );
        let e = sort_manifests(&r, &parse).expect_err("fails");
        assert_eq!(e[0].file, "c/templates/a.yaml");
        assert_eq!(e[0].line, Some(3), "{}", e[0]);
    }
}
