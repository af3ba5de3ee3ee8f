//! `meta.k8s.io/v1` Table responses, which `kubectl get` asks for.
//!
//! Columns are Name and Age (plus a CRD's `additionalPrinterColumns`); the API
//! server's per-kind printers (READY, STATUS, ...) are not reproduced. See
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/#receiving-resources-as-tables>.

use serde_json::{Value, json};

use crate::meta::human_age;
use crate::resources::ResourceType;

/// Whether an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("as=Table") && p.contains("g=meta.k8s.io")
    })
}

/// A Table of `items` (a list body's items, or one object).
pub fn to_table(
    rt: &ResourceType,
    items: &[Value],
    list_meta: Value,
    include_object: &str,
) -> Value {
    let mut columns = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    for c in &rt.printer_columns {
        columns.push(json!({"name": c["name"], "type": c["type"].as_str().unwrap_or("string"),
            "format": c["format"].as_str().unwrap_or(""), "description": c["description"].as_str().unwrap_or(""),
            "priority": c["priority"].as_i64().unwrap_or(0)}));
    }
    columns.push(json!({"name": "Age", "type": "string", "format": "",
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let mut cells = vec![obj["metadata"]["name"].clone()];
            for c in &rt.printer_columns {
                let path = c["jsonPath"].as_str().unwrap_or_default();
                let mut cur = obj;
                for part in path
                    .trim_start_matches('.')
                    .split('.')
                    .filter(|p| !p.is_empty())
                {
                    cur = &cur[part];
                }
                cells.push(if c["type"] == "date" {
                    cur.as_str()
                        .map(|s| json!(human_age(s)))
                        .unwrap_or(Value::Null)
                } else {
                    cur.clone()
                });
            }
            cells.push(json!(human_age(
                obj["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
            )));
            let object = match include_object {
                "None" => Value::Null,
                "Object" => obj.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"]}),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}
