//! The client config file (`admin.conf`) the hub writes at init and the CLI reads: where
//! the hub is and which certificate to present. Paths are relative to the file's folder.

use std::path::{Path, PathBuf};

use crate::channel::Credentials;
use crate::{Error, files};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The hub's address, or several comma-separated (its replicas), tried in order
    /// ([`ClientConfig::servers`]).
    pub server: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientConfig {
    /// Renders the file; it holds paths only, never key material.
    pub fn to_yaml(&self) -> String {
        format!(
            "# flotilla client config, written by flotilla-hub init\nserver: {}\nca: {}\ncert: {}\nkey: {}\n",
            self.server,
            self.ca.display(),
            self.cert.display(),
            self.key.display()
        )
    }

    /// Reads the simple `key: value` file written by `to_yaml`.
    pub fn load(path: &Path) -> Result<ClientConfig, Error> {
        let text = files::read_public(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let field = |name: &str| -> Result<String, Error> {
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == name).then(|| v.trim().to_string())
                })
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::File {
                    path: path.display().to_string(),
                    message: format!("missing field {name:?}"),
                })
        };
        let resolve = |p: String| {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { base.join(p) }
        };
        Ok(ClientConfig {
            server: field("server")?,
            ca: resolve(field("ca")?),
            cert: resolve(field("cert")?),
            key: resolve(field("key")?),
        })
    }

    /// Every address of the hub, in the order to try them (`connect_first`).
    pub fn servers(&self) -> Result<Vec<String>, Error> {
        crate::addrs::hub_addresses(&self.server)
    }

    pub fn credentials(&self) -> Result<Credentials, Error> {
        Ok(Credentials {
            ca_pem: files::read_public(&self.ca)?,
            cert_pem: Some(files::read_public(&self.cert)?),
            key_pem: Some(files::read_secret(&self.key)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_loads_with_paths_relative_to_its_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = ClientConfig {
            server: "127.0.0.1:7443".into(),
            ca: "ca.pem".into(),
            cert: "admin.pem".into(),
            key: "admin-key.pem".into(),
        };
        let p = dir.path().join("admin.conf");
        std::fs::write(&p, cfg.to_yaml()).expect("write");
        let loaded = ClientConfig::load(&p).expect("loads");
        assert_eq!(loaded.server, "127.0.0.1:7443");
        assert_eq!(loaded.key, dir.path().join("admin-key.pem"));
        assert_eq!(loaded.servers().expect("one"), ["127.0.0.1:7443"]);
        std::fs::write(
            &p,
            "server: 10.0.0.1:7443,10.0.0.2:7443\nca: ca.pem\ncert: a.pem\nkey: k.pem\n",
        )
        .expect("write");
        let several = ClientConfig::load(&p).expect("loads");
        assert_eq!(
            several.servers().expect("two"),
            ["10.0.0.1:7443", "10.0.0.2:7443"]
        );
        std::fs::write(&p, "server: x\n").expect("write");
        assert!(ClientConfig::load(&p).is_err());
    }
}
