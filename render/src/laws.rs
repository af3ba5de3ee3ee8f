//! Property tests (proptest) for the laws the patch engines must keep: an empty patch is
//! the identity, merging and patching are deterministic, and a JSON merge patch of a
//! document with itself gives the document back.

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::strategic_merge::{self, Outcome, Schema};
use crate::{json_patch, output, yaml};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        "[a-z0-9 :#'\"\\n-]{0,12}".prop_map(Value::String),
    ]
}

/// Kubernetes-shaped JSON: maps with a few familiar keys so merge keys come into play.
fn document() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("name".to_string()),
        Just("containers".to_string()),
        Just("env".to_string()),
        Just("value".to_string()),
        Just("ports".to_string()),
        "[a-z]{1,6}",
    ];
    leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A document without nulls: RFC 7386 cannot express a null value in a patch.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

fn object() -> impl Strategy<Value = Value> {
    document().prop_map(|d| {
        strip_nulls(match d {
            Value::Object(m) => Value::Object(m),
            other => serde_json::json!({ "spec": other }),
        })
    })
}

proptest! {
    #[test]
    fn an_empty_json_patch_is_the_identity(doc in document()) {
        let mut patched = doc.clone();
        let budget = crate::budget::Budget::new(&crate::Limits::default());
        prop_assert!(json_patch::apply(&mut patched, &[], &budget).is_ok());
        prop_assert_eq!(patched, doc);
    }

    #[test]
    fn an_empty_merge_patch_is_the_identity(doc in object()) {
        let mut patched = doc.clone();
        json_patch::merge_patch(&mut patched, &Value::Object(Map::new()));
        prop_assert_eq!(patched, doc);
    }

    #[test]
    fn an_empty_strategic_merge_is_the_identity(doc in object()) {
        for schema in [Schema::Builtin, Schema::Kustomize, Schema::KustomizeUnknownKind] {
            let mut patched = doc.clone();
            let outcome = strategic_merge::apply_with(&mut patched, &Value::Object(Map::new()), "Deployment", schema);
            prop_assert_eq!(outcome, Ok(Outcome::Kept));
            prop_assert_eq!(&patched, &doc);
        }
    }

    #[test]
    fn a_merge_patch_of_a_document_with_itself_is_the_identity(doc in object()) {
        let mut patched = doc.clone();
        json_patch::merge_patch(&mut patched, &doc);
        prop_assert_eq!(patched, doc);
    }

    #[test]
    fn merging_and_patching_are_deterministic(doc in object(), patch in object()) {
        let run = |schema| {
            let mut d = doc.clone();
            let r = strategic_merge::apply_with(&mut d, &patch, "Deployment", schema);
            (r, d)
        };
        for schema in [Schema::Builtin, Schema::Kustomize, Schema::KustomizeUnknownKind] {
            prop_assert_eq!(run(schema), run(schema));
        }
        let mut a = doc.clone();
        let mut b = doc.clone();
        json_patch::merge_patch(&mut a, &patch);
        json_patch::merge_patch(&mut b, &patch);
        prop_assert_eq!(output::canonical_json(&a), output::canonical_json(&b));
    }

    #[test]
    fn the_yaml_writer_round_trips(doc in object()) {
        let text = yaml::to_yaml(&doc);
        let back = yaml::parse_single("t.yaml", &text);
        prop_assert_eq!(back, Ok(doc), "{}", text);
    }
}
