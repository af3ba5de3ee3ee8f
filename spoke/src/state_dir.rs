//! The spoke's `--state-dir`: its identity (key 0600, certificate, pinned CA, the hub's
//! addresses)
//! and its cache of assignments, which lets it keep enforcing while the hub is away and
//! tell the hub on reconnect what it already runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flotilla_identity::{Credentials, files};
use flotilla_model::{ContentDigest, DeployOptions, ResourceStatus, State};
use serde::{Deserialize, Serialize};

use crate::applier::{Desired, Outcome};

#[derive(Clone)]
pub struct StateDir(PathBuf);

/// Who this spoke is, as enrolled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityFile {
    pub cluster: String,
    /// The hub's first address; all that state dirs from before `hubs` hold, and what an
    /// older spoke binary reads.
    pub hub: String,
    /// Every address of the hub (its replicas), in the order of the join string.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hubs: Vec<String>,
    /// SHA-256 of the join string this identity was enrolled with, so a restart with
    /// the same string is told apart from a new one (which needs `--rejoin`). State dirs
    /// from before it have none.
    #[serde(default)]
    pub join_sha256: String,
}

impl IdentityFile {
    /// The identity of a spoke enrolled with `join_text` at `hubs` (not empty).
    pub fn new(cluster: String, hubs: Vec<String>, join_text: &str) -> Self {
        IdentityFile {
            cluster,
            hub: hubs.first().cloned().unwrap_or_default(),
            hubs,
            join_sha256: Self::join_digest(join_text),
        }
    }

    /// The hub's addresses to dial, in order; one for a state dir from before lists.
    pub fn hub_addresses(&self) -> Vec<String> {
        if self.hubs.is_empty() {
            vec![self.hub.clone()]
        } else {
            self.hubs.clone()
        }
    }

    pub fn join_digest(join_text: &str) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(join_text.trim().as_bytes()))
    }

    /// Whether `join_text` (for the hub at `hubs`) is the join string this identity came
    /// from. Without a recorded digest, the same hub addresses count as the same join.
    pub fn enrolled_with(&self, join_text: &str, hubs: &[String]) -> bool {
        if self.join_sha256.is_empty() {
            self.hub_addresses() == hubs
        } else {
            self.join_sha256 == Self::join_digest(join_text)
        }
    }
}

/// One bundle this spoke enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedAssignment {
    pub bundle: String,
    pub deployment_id: String,
    pub digest: ContentDigest,
    /// The options the hub sent (older state dirs stored the comparePatches and
    /// ignore.conditions as JSON text; `DeployOptions` reads both forms).
    #[serde(flatten)]
    pub options: DeployOptions,
    pub state: State,
    pub message: String,
    /// The objects that are not Ready, as last reported.
    #[serde(default)]
    pub resources: Vec<ResourceStatus>,
}

impl CachedAssignment {
    /// The bundle as the target needs it, with its content.
    pub fn desired(&self, content: Vec<u8>) -> Desired {
        Desired {
            bundle: self.bundle.clone(),
            deployment_id: self.deployment_id.clone(),
            content,
            options: self.options.clone(),
        }
    }

    /// Takes over a target's verdict.
    pub fn set(&mut self, outcome: Outcome) {
        self.state = outcome.state;
        self.message = outcome.message;
        self.resources = outcome.resources;
    }
}

impl StateDir {
    pub fn new(p: &Path) -> Self {
        StateDir(p.to_path_buf())
    }
    fn key(&self) -> PathBuf {
        self.0.join("key.pem")
    }
    fn cert(&self) -> PathBuf {
        self.0.join("cert.pem")
    }
    fn ca(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    fn identity(&self) -> PathBuf {
        self.0.join("identity.json")
    }
    fn assignments(&self) -> PathBuf {
        self.0.join("assignments.json")
    }
    fn content(&self, digest: &ContentDigest) -> PathBuf {
        let hex = digest.as_str().trim_start_matches("sha256:");
        self.0.join("content").join(format!("{hex}.yaml"))
    }

    pub fn is_enrolled(&self) -> bool {
        self.cert().exists() && self.identity().exists()
    }

    pub fn save_enrollment(
        &self,
        id: &IdentityFile,
        key_pem: &str,
        cert_pem: &str,
        ca_pem: &str,
    ) -> Result<()> {
        files::write_secret(&self.key(), key_pem.as_bytes())?;
        files::write_public(&self.cert(), cert_pem.as_bytes())?;
        files::write_public(&self.ca(), ca_pem.as_bytes())?;
        files::write_public(&self.identity(), &serde_json::to_vec_pretty(id)?)?;
        Ok(())
    }

    /// Stores a renewed key and certificate. Both are written beside the current ones
    /// first, then renamed key-then-certificate; `recover` finishes an interrupted swap,
    /// so a crash never leaves a key that does not match its certificate.
    pub fn save_renewed(&self, key_pem: &str, cert_pem: &str) -> Result<()> {
        let (key_next, cert_next) = (self.next(&self.key()), self.next(&self.cert()));
        files::write_secret(&key_next, key_pem.as_bytes())?;
        files::write_public(&cert_next, cert_pem.as_bytes())?;
        self.recover()
    }

    /// Replaces the trusted CA bundle (the hub's, delivered with a renewed certificate).
    pub fn save_trust(&self, ca_bundle_pem: &str) -> Result<()> {
        files::write_public(&self.ca(), ca_bundle_pem.as_bytes())?;
        Ok(())
    }

    /// Completes a renewal interrupted between its two renames.
    pub fn recover(&self) -> Result<()> {
        let (key_next, cert_next) = (self.next(&self.key()), self.next(&self.cert()));
        if !cert_next.exists() {
            // No renewal in flight; a lone key.next is from a write that never finished.
            let _ = std::fs::remove_file(&key_next);
            return Ok(());
        }
        if key_next.exists() {
            std::fs::rename(&key_next, self.key())
                .with_context(|| format!("installing {}", key_next.display()))?;
        }
        std::fs::rename(&cert_next, self.cert())
            .with_context(|| format!("installing {}", cert_next.display()))?;
        Ok(())
    }

    fn next(&self, p: &Path) -> PathBuf {
        p.with_extension("pem.next")
    }

    /// DER of our current leaf certificate.
    pub fn leaf_der(&self) -> Result<Vec<u8>> {
        let pem = files::read_public(&self.cert())?;
        flotilla_identity::pem_to_ders(&pem)?
            .into_iter()
            .next()
            .context("cert.pem holds no certificate")
    }

    /// Expiry (unix seconds) of our current leaf certificate.
    pub fn leaf_expiry(&self) -> Result<i64> {
        Ok(flotilla_identity::Identity::validity(&self.leaf_der()?)?.1)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn load_identity(&self) -> Result<IdentityFile> {
        let text = files::read_public(&self.identity())?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt", self.identity().display()))
    }

    pub fn credentials(&self) -> Result<Credentials> {
        Ok(Credentials {
            ca_pem: files::read_public(&self.ca())?,
            cert_pem: Some(files::read_public(&self.cert())?),
            key_pem: Some(files::read_secret(&self.key())?),
        })
    }

    pub fn load_assignments(&self) -> Result<BTreeMap<String, CachedAssignment>> {
        let path = self.assignments();
        if !path.exists() {
            return Ok(BTreeMap::new());
        }
        let text = files::read_public(&path)?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is corrupt; remove it and the spoke will resync from the hub",
                path.display()
            )
        })
    }

    pub fn save_assignments(&self, a: &BTreeMap<String, CachedAssignment>) -> Result<()> {
        files::write_secret(&self.assignments(), &serde_json::to_vec_pretty(a)?)?;
        Ok(())
    }

    /// Content from the cache, only if it still hashes to its digest. The empty
    /// content (a bundle that renders nothing) is known by its digest alone and is
    /// always held, cache file or not.
    pub fn load_content(&self, digest: &ContentDigest) -> Option<Vec<u8>> {
        if *digest == ContentDigest::of(b"") {
            return Some(Vec::new());
        }
        let bytes = std::fs::read(self.content(digest)).ok()?;
        (ContentDigest::of(&bytes) == *digest).then_some(bytes)
    }

    pub fn save_content(&self, digest: &ContentDigest, bytes: &[u8]) -> Result<()> {
        files::write_secret(&self.content(digest), bytes)?;
        Ok(())
    }

    /// Cached digests that are intact.
    pub fn digests(&self, assignments: &BTreeMap<String, CachedAssignment>) -> Vec<ContentDigest> {
        assignments
            .values()
            .map(|a| a.digest.clone())
            .filter(|d| self.load_content(d).is_some())
            .collect()
    }

    /// Removes cached content no assignment refers to.
    pub fn prune_content(&self, assignments: &BTreeMap<String, CachedAssignment>) {
        let Ok(entries) = std::fs::read_dir(self.0.join("content")) else {
            return;
        };
        let keep: Vec<PathBuf> = assignments
            .values()
            .map(|a| self.content(&a.digest))
            .collect();
        for e in entries.flatten() {
            if !keep.contains(&e.path()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_cached_by_an_earlier_spoke_keep_their_compare_patches() {
        // assignments.json as spokes before typed options wrote it.
        let old = serde_json::json!({
            "bundle": "web",
            "deployment_id": "d-0123456789abcdef0123",
            "digest": ContentDigest::of(b"x").to_string(),
            "keep_resources": true,
            "correct_drift": true,
            "state": "Ready",
            "message": "",
            "compare_patches_json": r#"[{"kind":"Deployment","jsonPointers":["/spec/replicas"]}]"#,
            "ignore_conditions_json": r#"[{"type":"Progressing"}]"#,
        });
        let a: CachedAssignment = serde_json::from_value(old).expect("the old form loads");
        assert!(a.options.keep_resources && a.options.correct_drift && !a.options.force);
        assert_eq!(
            a.options.compare_patches[0].json_pointers,
            ["/spec/replicas"]
        );
        assert_eq!(a.options.ignore_conditions.len(), 1);
        let desired = a.desired(Vec::new());
        assert_eq!(
            desired.options.compare_patches[0].kind.as_deref(),
            Some("Deployment")
        );
        // And it is written back in the typed form, which reads the same.
        let text = serde_json::to_string(&a).expect("serialises");
        assert!(!text.contains("_json"), "{text}");
        let again: CachedAssignment = serde_json::from_str(&text).expect("reads back");
        assert_eq!(again, a);
    }

    #[test]
    fn an_interrupted_renewal_is_completed_on_recover() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StateDir::new(dir.path());
        files::write_secret(&dir.path().join("key.pem"), b"old-key").expect("write");
        files::write_public(&dir.path().join("cert.pem"), b"old-cert").expect("write");
        // Crash after the key rename, before the certificate rename.
        files::write_public(&dir.path().join("cert.pem.next"), b"new-cert").expect("write");
        files::write_secret(&dir.path().join("key.pem"), b"new-key").expect("write");
        s.recover().expect("recover");
        assert_eq!(
            std::fs::read(dir.path().join("cert.pem")).expect("cert"),
            b"new-cert"
        );
        assert_eq!(
            files::read_secret(&dir.path().join("key.pem")).expect("key"),
            "new-key"
        );
        s.save_renewed("k2", "c2").expect("renew");
        assert_eq!(
            files::read_secret(&dir.path().join("key.pem")).expect("key"),
            "k2"
        );
        assert!(!dir.path().join("key.pem.next").exists());
    }

    #[test]
    fn the_join_string_an_identity_came_from_is_recognised_and_another_is_not() {
        let hub = || vec!["hub:7443".to_string()];
        let id = IdentityFile::new(
            "edge".into(),
            hub(),
            "flotilla://a.b@hub:7443?ca-sha256=00\n",
        );
        assert!(id.enrolled_with("flotilla://a.b@hub:7443?ca-sha256=00", &hub()));
        assert!(!id.enrolled_with("flotilla://c.d@hub:7443?ca-sha256=00", &hub()));
        let old = IdentityFile {
            join_sha256: String::new(),
            ..id
        };
        assert!(old.enrolled_with("anything", &hub()), "same hub, no digest");
        assert!(!old.enrolled_with("anything", &["other:7443".to_string()]));
    }

    #[test]
    fn the_hub_addresses_are_kept_in_order_and_an_old_identity_file_has_its_one() {
        let both = vec!["10.0.0.1:7443".to_string(), "10.0.0.2:7443".to_string()];
        let id = IdentityFile::new("edge".into(), both.clone(), "join");
        let text = serde_json::to_string(&id).expect("json");
        let back: IdentityFile = serde_json::from_str(&text).expect("parses");
        assert_eq!(back.hub_addresses(), both);
        assert_eq!(back.hub, "10.0.0.1:7443", "what an older spoke dials");
        let old: IdentityFile =
            serde_json::from_str(r#"{"cluster":"edge","hub":"hub:7443"}"#).expect("old file");
        assert_eq!(old.hub_addresses(), ["hub:7443"]);
    }

    #[test]
    fn the_empty_content_is_held_without_a_file_and_lost_or_corrupt_content_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StateDir::new(dir.path());
        assert_eq!(s.load_content(&ContentDigest::of(b"")), Some(Vec::new()));

        let content = b"kind: ConfigMap\n";
        let digest = ContentDigest::of(content);
        assert_eq!(s.load_content(&digest), None, "never saved");
        s.save_content(&digest, content).expect("save");
        assert_eq!(s.load_content(&digest).as_deref(), Some(&content[..]));
        std::fs::write(s.content(&digest), b"tampered").expect("corrupt");
        assert_eq!(s.load_content(&digest), None, "corrupt content is not held");
    }
}
