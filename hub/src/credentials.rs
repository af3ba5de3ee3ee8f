//! Per-source credential files on the hub: `<data-dir>/credentials/<source>/<name>`,
//! the directories 0700 and the files 0600, written atomically.
//!
//! Secrets (a password or token, an SSH key, a webhook secret) and trust material (a CA,
//! known hosts, allowed signers, OpenPGP keys) live here and nowhere else: never in the
//! state store, the Admin API's answers, status or logs. The Admin API reports only which
//! names are set ([`Credentials::names`]). Other kinds of source (a Helm repository) use
//! the same layout with names of their own.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Largest credential file accepted (a known-hosts or keyring file can be long).
pub const MAX_CREDENTIAL_BYTES: usize = 1 << 20;

/// One kind of credential file, by the name it has on disk and in the Admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Password,
    SshKey,
    KnownHosts,
    Ca,
    WebhookSecret,
    AllowedSigners,
    GpgKeys,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Password,
        Kind::SshKey,
        Kind::KnownHosts,
        Kind::Ca,
        Kind::WebhookSecret,
        Kind::AllowedSigners,
        Kind::GpgKeys,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Password => "password",
            Kind::SshKey => "ssh-key",
            Kind::KnownHosts => "known-hosts",
            Kind::Ca => "ca",
            Kind::WebhookSecret => "webhook-secret",
            Kind::AllowedSigners => "allowed-signers",
            Kind::GpgKeys => "gpg-keys",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("credential {name} of source {source_name}: {action} {path}: {error}")]
    Io {
        source_name: String,
        name: &'static str,
        action: &'static str,
        path: String,
        error: std::io::Error,
    },
    #[error(
        "credential {name} of source {source_name} is {len} bytes, over the limit of {MAX_CREDENTIAL_BYTES}"
    )]
    TooLarge {
        source_name: String,
        name: &'static str,
        len: usize,
    },
}

/// The credential folder of one source.
#[derive(Debug, Clone)]
pub struct Credentials {
    source: String,
    dir: PathBuf,
}

impl Credentials {
    /// `source` must already be a validated DNS label: it names a folder.
    pub fn of(data_dir: &Path, source: &str) -> Credentials {
        Credentials {
            source: source.to_string(),
            dir: data_dir.join("credentials").join(source),
        }
    }

    /// The file holding `kind`, if it is set.
    pub fn path(&self, kind: Kind) -> Option<PathBuf> {
        let p = self.dir.join(kind.name());
        p.is_file().then_some(p)
    }

    pub fn read(&self, kind: Kind) -> Result<Option<Vec<u8>>, CredentialError> {
        let Some(p) = self.path(kind) else {
            return Ok(None);
        };
        std::fs::read(&p)
            .map(Some)
            .map_err(|error| self.io_err(kind, "read", &p, error))
    }

    /// Names of the credentials that are set, in [`Kind::ALL`]'s order.
    pub fn names(&self) -> Vec<String> {
        Kind::ALL
            .into_iter()
            .filter(|k| self.path(*k).is_some())
            .map(|k| k.name().to_string())
            .collect()
    }

    /// Writes `kind` (0600, in a 0700 folder), replacing what was there at once.
    pub fn write(&self, kind: Kind, data: &[u8]) -> Result<(), CredentialError> {
        if data.len() > MAX_CREDENTIAL_BYTES {
            return Err(CredentialError::TooLarge {
                source_name: self.source.clone(),
                name: kind.name(),
                len: data.len(),
            });
        }
        for dir in [self.dir.parent().unwrap_or(&self.dir), &self.dir] {
            std::fs::create_dir_all(dir).map_err(|e| self.io_err(kind, "create", dir, e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| self.io_err(kind, "chmod", dir, e))?;
        }
        let target = self.dir.join(kind.name());
        let tmp = self.dir.join(format!(".{}.tmp", kind.name()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.io_err(kind, "create", &tmp, e))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .map_err(|e| self.io_err(kind, "write", &tmp, e))?;
        std::fs::rename(&tmp, &target).map_err(|e| self.io_err(kind, "rename", &target, e))
    }

    pub fn remove(&self, kind: Kind) -> Result<(), CredentialError> {
        let p = self.dir.join(kind.name());
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(self.io_err(kind, "remove", &p, e))
            }
            _ => Ok(()),
        }
    }

    /// Removes the whole folder (the source is gone).
    pub fn remove_all(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn io_err(
        &self,
        kind: Kind,
        action: &'static str,
        path: &Path,
        error: std::io::Error,
    ) -> CredentialError {
        CredentialError::Io {
            source_name: self.source.clone(),
            name: kind.name(),
            action,
            path: path.display().to_string(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_written_0600_in_a_0700_folder_and_listed_by_name_only() {
        let data = tempfile::tempdir().expect("tmp");
        let c = Credentials::of(data.path(), "fleet");
        assert!(c.names().is_empty());
        c.write(Kind::Password, b"s3cret").expect("write");
        c.write(Kind::KnownHosts, b"host key").expect("write");
        assert_eq!(c.names(), vec!["password", "known-hosts"]);
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&data.path().join("credentials")), 0o700);
        assert_eq!(mode(&data.path().join("credentials/fleet")), 0o700);
        assert_eq!(mode(&data.path().join("credentials/fleet/password")), 0o600);
        assert_eq!(
            c.read(Kind::Password).expect("read"),
            Some(b"s3cret".to_vec())
        );
        c.remove(Kind::Password).expect("remove");
        c.remove(Kind::Password).expect("removing twice is fine");
        assert_eq!(c.names(), vec!["known-hosts"]);
        let big = vec![0u8; MAX_CREDENTIAL_BYTES + 1];
        assert!(c.write(Kind::GpgKeys, &big).is_err());
    }
}
