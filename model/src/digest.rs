//! Content addressing: digests of rendered content and of deployments.
//!
//! A `ContentDigest` names rendered bytes; a `DeploymentId` names content plus the options
//! it is deployed with, so a spoke re-applies exactly when one of the two changed.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `sha256:<hex>` of some bytes. Shared, not copied, when cloned: the hub holds one per
/// (cluster, bundle) pair in several maps, all naming the same few renders.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentDigest(Arc<str>);

impl ContentDigest {
    pub fn of(bytes: &[u8]) -> Self {
        // Written in place: one allocation (the Arc), where format! and hex::encode
        // took three.
        const PREFIX: &[u8] = b"sha256:";
        let mut text = [0u8; PREFIX.len() + 64];
        text[..PREFIX.len()].copy_from_slice(PREFIX);
        let digest = Sha256::digest(bytes);
        // 32 bytes always fit 64 hex digits, and hex digits are ASCII.
        let hex_ok = hex::encode_to_slice(digest, &mut text[PREFIX.len()..]).is_ok();
        debug_assert!(hex_ok);
        ContentDigest(String::from_utf8_lossy(&text).into())
    }

    /// Wraps a digest received from the wire or the store. Returns `None` unless it has
    /// the `sha256:` + 64 lowercase hex shape, so malformed input never becomes a key.
    pub fn parse(s: &str) -> Option<Self> {
        let hex_part = s.strip_prefix("sha256:")?;
        let ok = hex_part.len() == 64
            && hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| ContentDigest(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Digest of (content digest + canonical options). Short enough to show in tables.
/// Shared when cloned, like [`ContentDigest`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeploymentId(Arc<str>);

impl DeploymentId {
    pub fn compute(content: &ContentDigest, options_canonical: &str) -> Self {
        let mut h = Sha256::new();
        h.update(content.as_str().as_bytes());
        h.update([0u8]);
        h.update(options_canonical.as_bytes());
        DeploymentId(format!("d-{}", &hex::encode(h.finalize())[..20]).into())
    }

    /// Wraps an id received from the wire; `None` if it is not shaped like one we made.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("d-")?;
        (rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| DeploymentId(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_digest_round_trips_through_parse() {
        let d = ContentDigest::of(b"hello");
        assert_eq!(ContentDigest::parse(d.as_str()), Some(d.clone()));
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn malformed_digests_are_rejected() {
        assert_eq!(ContentDigest::parse("sha256:xyz"), None);
        assert_eq!(ContentDigest::parse("md5:00"), None);
        assert_eq!(DeploymentId::parse("d-../../etc"), None);
    }

    #[test]
    fn deployment_id_changes_with_options() {
        let c = ContentDigest::of(b"x");
        let a = DeploymentId::compute(&c, "{}");
        let b = DeploymentId::compute(&c, "{\"correctDrift\":true}");
        assert_ne!(a, b);
        assert_eq!(DeploymentId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn stored_form_is_the_plain_string_so_existing_data_dirs_still_load() {
        let d = ContentDigest::of(b"x");
        let id = DeploymentId::compute(&d, "{}");
        let json = serde_json::to_string(&(&d, &id)).expect("serialize");
        assert_eq!(json, format!("[\"{d}\",\"{id}\"]"));
        let back: (ContentDigest, DeploymentId) = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, (d, id));
    }
}
