//! `docs/crds.md`: what each field of each CRD does, written from the CRDs' own schemas
//! (whose descriptions are the Rust doc comments), so the reference cannot say something
//! the types do not. `crdgen` writes it; `tests/crds_match.rs` fails when it is stale.

use kube::CustomResourceExt;
use serde_json::Value;

use crate::{fleet, flotilla};

/// The first line of the generated reference.
pub const REFERENCE_HEADER: &str = "<!-- Generated from flotilla-kube-types by `cargo run -p flotilla-kube-types --bin crdgen -- crds/ docs/crds.md`; do not edit. -->\n";

/// Nesting deeper than this is not listed (the schemas are far shallower; a bound keeps
/// a recursive schema from looping).
const MAX_DEPTH: usize = 12;

/// The whole reference, as Markdown.
pub fn reference() -> String {
    let mut out = String::from(REFERENCE_HEADER);
    out.push_str(
        "# CRD reference\n\n\
         Every field of the custom resources in [`crds/`](../crds/README.md), with its type \
         and what it does. How the hub uses them: [Kubernetes mode](operations.md#kubernetes-mode). \
         The descriptions are the doc comments of the Rust types in `kube-types/src/`, which also \
         feed `kubectl explain`. Fleet's kinds carry every field of Fleet's own types; which of \
         them flotilla honours, and why not the others, is in \
         [Fleet `GitRepo` fields](operations.md#fleet-gitrepo-fields) (an unsupported field that \
         is set shows in the object's `Unsupported` condition).\n",
    );
    let crds = [
        flotilla::Source::crd(),
        flotilla::ClusterGroup::crd(),
        flotilla::Cluster::crd(),
        flotilla::BundleStatus::crd(),
        fleet::GitRepo::crd(),
        fleet::ClusterGroup::crd(),
    ];
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let kind = crd.spec.names.kind.clone();
        let group = crd.spec.group.clone();
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(Value::Null);
            out.push_str(&format!(
                "\n## {kind} (`{group}/{}`)\n\n`{name}`, namespaced.",
                version.name
            ));
            if let Some(d) = schema.pointer("/properties/spec/description") {
                out.push(' ');
                out.push_str(&one_line(d.as_str().unwrap_or_default()));
            }
            out.push_str("\n\n| field | type | what it does |\n|---|---|---|\n");
            for part in ["spec", "status"] {
                if let Some(s) = schema.pointer(&format!("/properties/{part}")) {
                    fields(part, s, false, 0, &mut out);
                }
            }
        }
    }
    out
}

/// One row per field under `schema`, depth first, in the schema's (sorted) order.
fn fields(path: &str, schema: &Value, required: bool, depth: usize, out: &mut String) {
    if depth > 0 {
        let description = schema
            .get("description")
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        let req = if required { ", required" } else { "" };
        out.push_str(&format!(
            "| `{path}` | {}{req} | {description} |\n",
            type_of(schema)
        ));
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let (inner, inner_path) = match schema.get("items") {
        Some(items) => (items, format!("{path}[]")),
        None => (schema, path.to_string()),
    };
    let required: Vec<&str> = inner
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = inner.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            fields(
                &format!("{inner_path}.{name}"),
                sub,
                required.contains(&name.as_str()),
                depth + 1,
                out,
            );
        }
    }
}

fn type_of(schema: &Value) -> String {
    let t = schema.get("type").and_then(Value::as_str).unwrap_or("any");
    match t {
        "array" => format!(
            "list of {}",
            schema.get("items").map_or("any".to_string(), type_of)
        ),
        "object" if schema.get("additionalProperties").is_some() => format!(
            "map of {}",
            schema
                .get("additionalProperties")
                .map_or("any".to_string(), type_of)
        ),
        _ => match schema.get("enum").and_then(Value::as_array) {
            Some(values) => {
                let names: Vec<String> = values
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|v| format!("`{v}`"))
                    .collect();
                format!("{t} ({})", names.join(", "))
            }
            None => t.to_string(),
        },
    }
}

/// A description as one table cell: one line, pipes escaped.
fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_lists_nested_fields_with_their_doc_comments() {
        let r = reference();
        assert!(r.starts_with(REFERENCE_HEADER));
        assert!(r.contains("## GitRepo (`fleet.cattle.io/v1alpha1`)"));
        assert!(
            r.contains("| `spec.repo` | string, required | git URL: file://, git://, https://, ssh:// or git@host:path. |"),
            "{r}"
        );
        assert!(r.contains("| `spec.targets[].clusterSelector.matchExpressions[].operator` |"));
        assert!(r.contains(
            "| `status.conditions[].status` | string (`True`, `False`, `Unknown`), required |"
        ));
        assert!(r.contains("| `spec.labels` | map of string |"));
    }
}
