//! Kubernetes label selectors: `matchLabels` plus `matchExpressions` with
//! In / NotIn / Exists / DoesNotExist, and the `kubectl -l` string form.
//!
//! Semantics follow `k8s.io/apimachinery/pkg/labels`: all requirements are ANDed, and an
//! empty selector matches every set of labels.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::labels::{Labels, validate_key, validate_value};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid selector {input:?}: {reason}")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
}

impl SelectorError {
    pub(crate) fn new(input: &str, reason: impl Into<String>) -> Self {
        SelectorError {
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            // NotIn matches when the key is absent, as in Kubernetes.
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }

    fn validate(&self) -> Result<(), SelectorError> {
        validate_key(&self.key)?;
        match self.operator {
            Operator::In | Operator::NotIn if self.values.is_empty() => Err(SelectorError::new(
                &self.key,
                format!("operator {} needs at least one value", self.operator),
            )),
            Operator::Exists | Operator::DoesNotExist if !self.values.is_empty() => {
                Err(SelectorError::new(
                    &self.key,
                    format!("operator {} takes no values", self.operator),
                ))
            }
            _ => self
                .values
                .iter()
                .try_for_each(|v| validate_value(v))
                .map_err(Into::into),
        }
    }
}

/// A `metav1.LabelSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Checks keys, values and operator arity; call it on selectors read from input.
    pub fn validate(&self) -> Result<(), SelectorError> {
        for (k, v) in &self.match_labels {
            validate_key(k)?;
            validate_value(v)?;
        }
        self.match_expressions
            .iter()
            .try_for_each(Requirement::validate)
    }
}

/// Parses the `kubectl -l` form: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`,
/// `k`, `!k`, joined by commas.
impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(input: &str) -> Result<Self, SelectorError> {
        let mut sel = LabelSelector::default();
        for term in split_terms(input)? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            parse_term(term, &mut sel).map_err(|reason| SelectorError::new(input, reason))?;
        }
        sel.validate()?;
        Ok(sel)
    }
}

/// Splits on commas that are not inside parentheses.
fn split_terms(input: &str) -> Result<Vec<&str>, SelectorError> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(SelectorError::new(input, "unbalanced parentheses"));
        }
    }
    if depth != 0 {
        return Err(SelectorError::new(input, "unbalanced parentheses"));
    }
    terms.push(&input[start..]);
    Ok(terms)
}

fn parse_term(term: &str, sel: &mut LabelSelector) -> Result<(), String> {
    let push = |sel: &mut LabelSelector, key: &str, operator, values: Vec<String>| {
        sel.match_expressions.push(Requirement {
            key: key.trim().to_string(),
            operator,
            values,
        });
    };
    if let Some(key) = term.strip_prefix('!') {
        push(sel, key, Operator::DoesNotExist, vec![]);
    } else if let Some((k, v)) = term.split_once("!=") {
        push(sel, k, Operator::NotIn, vec![v.trim().to_string()]);
    } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        sel.match_labels
            .insert(k.trim().to_string(), v.trim().to_string());
    } else if let Some((k, rest)) = split_set_op(term, " notin ") {
        push(sel, k, Operator::NotIn, parse_set(rest)?);
    } else if let Some((k, rest)) = split_set_op(term, " in ") {
        push(sel, k, Operator::In, parse_set(rest)?);
    } else if term.contains(['(', ')', ' ']) {
        return Err(format!("cannot parse term {term:?}"));
    } else {
        push(sel, term, Operator::Exists, vec![]);
    }
    Ok(())
}

fn split_set_op<'a>(term: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    term.find(op).map(|i| (&term[..i], &term[i + op.len()..]))
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected (v1,v2) after set operator, got {rest:?}"))?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err("a set needs at least one value".into());
    }
    Ok(values)
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                // `k!=v` is the only way to say "not the empty value" (`k!=`).
                Operator::NotIn if r.values.len() == 1 => format!("{}!={}", r.key, r.values[0]),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::everything().matches(&labels(&[])));
        assert!(LabelSelector::everything().matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel: LabelSelector = "env=prod,region in (eu,us),!canary".parse().expect("valid");
        assert!(sel.matches(&labels(&[("env", "prod"), ("region", "eu")])));
        assert!(!sel.matches(&labels(&[("env", "prod"), ("region", "ap")])));
        assert!(!sel.matches(&labels(&[("env", "dev"), ("region", "eu")])));
        assert!(!sel.matches(&labels(&[
            ("env", "prod"),
            ("region", "eu"),
            ("canary", "")
        ])));
    }

    #[test]
    fn not_in_matches_absent_key_like_kubernetes() {
        let sel: LabelSelector = "env notin (prod)".parse().expect("valid");
        assert!(sel.matches(&labels(&[])));
        assert!(sel.matches(&labels(&[("env", "dev")])));
        assert!(!sel.matches(&labels(&[("env", "prod")])));
        let ne: LabelSelector = "env!=prod".parse().expect("valid");
        assert!(ne.matches(&labels(&[])));
    }

    #[test]
    fn exists_and_does_not_exist() {
        let sel: LabelSelector = "gpu".parse().expect("valid");
        assert!(sel.matches(&labels(&[("gpu", "")])));
        assert!(!sel.matches(&labels(&[])));
    }

    #[test]
    fn parses_yaml_shape_with_camel_case_fields() {
        let sel: LabelSelector = serde_json::from_str(
            r#"{"matchLabels":{"env":"prod"},"matchExpressions":[{"key":"tier","operator":"In","values":["web"]}]}"#,
        )
        .expect("valid json");
        assert!(sel.matches(&labels(&[("env", "prod"), ("tier", "web")])));
        assert!(
            serde_json::from_str::<LabelSelector>(r#"{"matchLabel":{"env":"prod"}}"#).is_err(),
            "a misspelled field must not silently match everything"
        );
    }

    #[test]
    fn rejects_malformed_selectors() {
        for bad in [
            "env in (a",
            "env in ()",
            "env in a,b",
            "env)(",
            "bad key=x",
            "-x=y",
        ] {
            assert!(bad.parse::<LabelSelector>().is_err(), "{bad:?} should fail");
        }
        let wrong_arity = LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![Requirement {
                key: "a".into(),
                operator: Operator::Exists,
                values: vec!["x".into()],
            }],
        };
        assert!(wrong_arity.validate().is_err());
    }

    #[test]
    fn not_equal_to_the_empty_value_round_trips() {
        // Found by the selector_parse fuzz target: `n!=` printed as `n notin ()`.
        let sel: LabelSelector = "n!=".parse().expect("valid");
        assert_eq!(sel.to_string().parse::<LabelSelector>(), Ok(sel));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_input_never_panics(s in ".{0,64}") {
            let _ = s.parse::<LabelSelector>();
        }

        #[test]
        fn display_then_parse_is_the_same_selector(
            k in "[a-z]{1,8}", v in "[a-z0-9]{1,8}", k2 in "[a-z]{1,8}", vs in proptest::collection::vec("[a-z]{1,5}", 1..4)
        ) {
            let text = format!("{k}={v},{k2} in ({})", vs.join(","));
            let sel: LabelSelector = text.parse().expect("generated selector is valid");
            let again: LabelSelector = sel.to_string().parse().expect("display output parses");
            prop_assert_eq!(sel, again);
        }
    }
}
