//! Validated names. A cluster name ends up in certificate SANs, file names and object
//! names, so it is held to the DNS-1123 label rules before anything else sees it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid name {name:?}: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

/// A cluster's name: a DNS-1123 label (lowercase alphanumerics and `-`, at most 63).
/// Shared when cloned: the hub keys several per-(cluster, bundle) maps by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(Arc<str>);

impl ClusterName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        if is_dns_label(name) {
            Ok(ClusterName(name.into()))
        } else {
            Err(NameError {
                name: name.to_string(),
                reason: "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClusterName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        ClusterName::new(&s)
    }
}

impl From<ClusterName> for String {
    fn from(c: ClusterName) -> String {
        c.0.to_string()
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// DNS-1123 label: what Kubernetes requires of most object names.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels_only() {
        assert!(ClusterName::new("prod-eu-1").is_ok());
        for bad in [
            "",
            "Prod",
            "a_b",
            "-a",
            "a-",
            "a/b",
            "../x",
            &"a".repeat(64),
        ] {
            assert!(ClusterName::new(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
