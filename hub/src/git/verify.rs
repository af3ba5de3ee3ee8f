//! Commit signature verification, in pure Rust: the `gpgsig` header of a commit checked
//! against a source's trusted keys, SSH signatures (git's `gpg.format=ssh`, sshsig with
//! namespace "git") with RustCrypto's `ssh-key`, OpenPGP signatures with rPGP.
//!
//! No `gpg` or `ssh-keygen` runs on the hub and no keyring outside the source's own files
//! is read. Pure: bytes in, a decision out; the poller (`crate::sources`) reads the commit
//! and the trust files.
//!
//! Supported in an allowed-signers file: `principals [namespaces="..."] keytype key`.
//! A line with `cert-authority`, `valid-after` or `valid-before` is refused when the
//! file is read (silently ignoring a constraint would trust a key more than meant).
//! OpenPGP keys: expiry and revocation are not evaluated; remove a key from the file to
//! stop trusting it.

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use ssh_key::{PublicKey, SshSig};

/// The sshsig namespace git signs commits in.
const GIT_NAMESPACE: &str = "git";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("commit {commit} is not signed")]
    Unsigned { commit: String },
    #[error("commit {commit} is signed by a key that is not trusted ({key})")]
    UnknownKey { commit: String, key: String },
    #[error("commit {commit} has a bad signature: {message}")]
    BadSignature { commit: String, message: String },
    #[error("{file}:{line}: {message}")]
    Trust {
        file: &'static str,
        line: usize,
        message: String,
    },
}

/// One line of an allowed-signers file.
struct AllowedSigner {
    principals: String,
    key: PublicKey,
}

/// The keys a source trusts to sign its commits.
#[derive(Default)]
pub struct Trust {
    ssh: Vec<AllowedSigner>,
    pgp: Vec<SignedPublicKey>,
}

impl Trust {
    /// Reads git's allowed-signers format and OpenPGP public keys (armored or binary).
    /// A key that does not parse, or whose self-signatures do not verify, is an error
    /// naming the file and line (or key), not a key silently left out.
    pub fn parse(
        allowed_signers: Option<&[u8]>,
        gpg_keys: Option<&[u8]>,
    ) -> Result<Trust, VerifyError> {
        let mut trust = Trust::default();
        if let Some(text) = allowed_signers {
            trust.ssh = parse_allowed_signers(&String::from_utf8_lossy(text))?;
        }
        if let Some(data) = gpg_keys {
            trust.pgp = parse_pgp_keys(data)?;
        }
        Ok(trust)
    }

    pub fn is_empty(&self) -> bool {
        self.ssh.is_empty() && self.pgp.is_empty()
    }

    /// Checks the signature of the raw commit object `data` (its id is `commit`) and
    /// returns who signed it: the allowed signer's principals or the OpenPGP user id.
    pub fn verify_commit(&self, commit: &str, data: &[u8]) -> Result<String, VerifyError> {
        let bad = |message: String| VerifyError::BadSignature {
            commit: commit.to_string(),
            message,
        };
        // The hub reads SHA-1 repositories only (gix's `sha1` feature).
        let (signature, signed) = gix::objs::CommitRefIter::signature(data, gix::hash::Kind::Sha1)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| VerifyError::Unsigned {
                commit: commit.to_string(),
            })?;
        let signed = signed.to_bstring();
        let signature: &[u8] = signature.as_ref();
        if signature.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
            self.verify_ssh(commit, signature, &signed)
        } else if signature.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
            self.verify_pgp(commit, signature, &signed)
        } else {
            Err(bad(
                "unsupported signature format (not SSH or OpenPGP)".to_string()
            ))
        }
    }

    fn verify_ssh(
        &self,
        commit: &str,
        armored: &[u8],
        signed: &[u8],
    ) -> Result<String, VerifyError> {
        let bad = |message: String| VerifyError::BadSignature {
            commit: commit.to_string(),
            message,
        };
        let sig = SshSig::from_pem(armored).map_err(|e| bad(format!("SSH signature: {e}")))?;
        if sig.namespace() != GIT_NAMESPACE {
            return Err(bad(format!(
                "SSH signature is for namespace {:?}, not \"git\"",
                sig.namespace()
            )));
        }
        let Some(signer) = self
            .ssh
            .iter()
            .find(|s| s.key.key_data() == sig.public_key())
        else {
            let key = PublicKey::from(sig.public_key().clone())
                .fingerprint(ssh_key::HashAlg::Sha256)
                .to_string();
            return Err(VerifyError::UnknownKey {
                commit: commit.to_string(),
                key,
            });
        };
        signer
            .key
            .verify(GIT_NAMESPACE, signed, &sig)
            .map_err(|e| bad(format!("SSH signature does not verify: {e}")))?;
        Ok(signer.principals.clone())
    }

    fn verify_pgp(
        &self,
        commit: &str,
        armored: &[u8],
        signed: &[u8],
    ) -> Result<String, VerifyError> {
        let bad = |message: String| VerifyError::BadSignature {
            commit: commit.to_string(),
            message,
        };
        let (sig, _) = DetachedSignature::from_armor_single(armored)
            .map_err(|e| bad(format!("OpenPGP signature: {e}")))?;
        for key in &self.pgp {
            let user = key
                .details
                .users
                .first()
                .map(|u| String::from_utf8_lossy(u.id.id()).to_string())
                .unwrap_or_default();
            if sig.verify(&key.primary_key, signed).is_ok() {
                return Ok(user);
            }
            for sub in &key.public_subkeys {
                if sig.verify(&sub.key, signed).is_ok() {
                    return Ok(user);
                }
            }
        }
        let issuers: Vec<String> = sig
            .signature
            .issuer_fingerprint()
            .iter()
            .map(|f| format!("{f:X}"))
            .chain(sig.signature.issuer_key_id().iter().map(hex::encode_upper))
            .collect();
        Err(VerifyError::UnknownKey {
            commit: commit.to_string(),
            key: if issuers.is_empty() {
                "OpenPGP key without an issuer".to_string()
            } else {
                format!("OpenPGP {}", issuers.join(", "))
            },
        })
    }
}

fn parse_allowed_signers(text: &str) -> Result<Vec<AllowedSigner>, VerifyError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| VerifyError::Trust {
            file: "allowed-signers",
            line: i + 1,
            message,
        };
        let words = split_outside_quotes(line, char::is_whitespace);
        let mut rest = words.iter().map(String::as_str);
        let principals = rest
            .next()
            .ok_or_else(|| err("no principals".into()))?
            .to_string();
        let mut next = rest.next().ok_or_else(|| err("no key".into()))?;
        if !is_key_type(next) {
            for option in split_outside_quotes(next, |c| c == ',') {
                let (name, value) = option.split_once('=').unwrap_or((&option, ""));
                match name.to_ascii_lowercase().as_str() {
                    "namespaces" => {
                        let value = value.trim_matches('"');
                        if !value.split(',').any(|n| n == GIT_NAMESPACE) {
                            // The key may not sign commits: leave it out.
                            next = "";
                        }
                    }
                    other => {
                        return Err(err(format!(
                            "option {other:?} is not supported (only namespaces=)"
                        )));
                    }
                }
            }
            let key_type = rest.next().ok_or_else(|| err("no key".into()))?;
            if next.is_empty() {
                continue;
            }
            next = key_type;
        }
        let blob = rest.next().ok_or_else(|| err("no key data".into()))?;
        let key = PublicKey::from_openssh(&format!("{next} {blob}"))
            .map_err(|e| err(format!("key: {e}")))?;
        out.push(AllowedSigner { principals, key });
    }
    Ok(out)
}

fn is_key_type(word: &str) -> bool {
    word.starts_with("ssh-") || word.starts_with("ecdsa-") || word.starts_with("sk-")
}

/// Splits where `sep` matches outside double quotes, keeping quoted spans (option
/// values) whole and dropping empty parts.
fn split_outside_quotes(line: &str, sep: impl Fn(char) -> bool) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if sep(c) && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn parse_pgp_keys(data: &[u8]) -> Result<Vec<SignedPublicKey>, VerifyError> {
    let err = |line: usize, message: String| VerifyError::Trust {
        file: "gpg-keys",
        line,
        message,
    };
    let keys: Vec<_> = if data.trim_ascii_start().starts_with(b"-----BEGIN") {
        SignedPublicKey::from_armor_many(data)
            .map_err(|e| err(1, e.to_string()))?
            .0
            .collect()
    } else {
        SignedPublicKey::from_bytes_many(data)
            .map_err(|e| err(1, e.to_string()))?
            .collect()
    };
    let mut out = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        // "line" here is the key's position: a keyring has no useful line numbers.
        let key = key.map_err(|e| err(i + 1, format!("key {}: {e}", i + 1)))?;
        key.verify_bindings()
            .map_err(|e| err(i + 1, format!("key {}: self-signatures: {e}", i + 1)))?;
        out.push(key);
    }
    if out.is_empty() {
        return Err(err(1, "no OpenPGP public key found".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_signers_lines_parse_with_quoted_namespaces_and_refuse_unsupported_options() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZpsNhtdn1kh6C0lJD5sD6zGEwtdFk+DE8LuTFJB6iu";
        let text = format!(
            "# team\nalice@example.com {key}\nbob@example.com namespaces=\"git,file\" {key}\ncarol@example.com namespaces=\"file\" {key}\n"
        );
        let signers = parse_allowed_signers(&text).expect("parses");
        let names: Vec<&str> = signers.iter().map(|s| s.principals.as_str()).collect();
        assert_eq!(names, ["alice@example.com", "bob@example.com"]);
        let bad = format!("dave@example.com valid-after=\"20240101\" {key}\n");
        let err = parse_allowed_signers(&bad).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("allowed-signers:1: option \"valid-after\" is not supported (only namespaces=)")
        );
        let err = parse_allowed_signers("x ssh-ed25519 AAAAnotakey\n").err();
        assert!(
            matches!(err, Some(VerifyError::Trust { line: 1, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn an_unsigned_commit_is_refused_as_unsigned() {
        let commit = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n\nmsg\n";
        let id = "0".repeat(40);
        let got = Trust::default().verify_commit(&id, commit);
        assert_eq!(got, Err(VerifyError::Unsigned { commit: id }));
    }
}
