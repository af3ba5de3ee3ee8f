//! Kubernetes-style labels: validation and the `k=v,k2=v2` command-line form.

use std::collections::BTreeMap;

use crate::selector::SelectorError;

/// A malformed label (`key=value`, key or value). Says "label", not "selector": a user
/// who typed `flotilla cluster label c1 "bad key=v"` wrote no selector. Inside a
/// selector it becomes a [`SelectorError`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid label {input:?}: {reason}")]
pub struct LabelError {
    pub input: String,
    pub reason: String,
}

impl LabelError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        LabelError {
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<LabelError> for SelectorError {
    fn from(e: LabelError) -> Self {
        SelectorError {
            input: e.input,
            reason: e.reason,
        }
    }
}

/// Labels are kept sorted so that everything derived from them is deterministic.
pub type Labels = BTreeMap<String, String>;

/// Parses `k=v,k2=v2` (as given to `--labels`). Empty input is an empty set.
pub fn parse_labels(s: &str) -> Result<Labels, LabelError> {
    let mut out = Labels::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| LabelError::new(part, "expected key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        validate_key(k)?;
        validate_value(v)?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(LabelError::new(part, "label key given twice"));
        }
    }
    Ok(out)
}

/// A label key: optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of `[A-Za-z0-9._-]` that starts and ends alphanumeric.
pub fn validate_key(key: &str) -> Result<(), LabelError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|seg| {
                !seg.is_empty()
                    && seg.len() <= 63
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !seg.starts_with('-')
                    && !seg.ends_with('-')
            });
        if !ok {
            return Err(LabelError::new(
                key,
                "label key prefix must be a DNS subdomain",
            ));
        }
    }
    if name.is_empty() || !is_label_token(name) {
        return Err(LabelError::new(
            key,
            "label key name must be 1-63 characters of [A-Za-z0-9._-], starting and ending alphanumeric",
        ));
    }
    Ok(())
}

/// A label value: empty, or a token of at most 63 characters like a key name.
pub fn validate_value(value: &str) -> Result<(), LabelError> {
    if value.is_empty() || is_label_token(value) {
        Ok(())
    } else {
        Err(LabelError::new(
            value,
            "label value must be at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric",
        ))
    }
}

fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() <= 63
        && !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comma_separated_pairs() {
        let l = parse_labels("env=dev, region=eu-1").expect("valid labels");
        assert_eq!(l.get("env").map(String::as_str), Some("dev"));
        assert_eq!(l.get("region").map(String::as_str), Some("eu-1"));
        assert!(parse_labels("").expect("empty is fine").is_empty());
    }

    #[test]
    fn rejects_malformed_labels() {
        assert!(parse_labels("env").is_err());
        assert!(parse_labels("env=dev,env=prod").is_err());
        assert!(parse_labels("-bad=x").is_err());
        assert!(parse_labels("ok=bad value").is_err());
        assert!(parse_labels(&format!("k={}", "a".repeat(64))).is_err());
        assert!(parse_labels("example.com/tier=web").is_ok());
        assert!(parse_labels("Example.com/tier=web").is_err());
    }
}
