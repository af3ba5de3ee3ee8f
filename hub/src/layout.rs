//! Where things live in the hub's `--data-dir`.

use std::path::{Path, PathBuf};

pub struct DataDir(PathBuf);

impl DataDir {
    pub fn new(p: &Path) -> Self {
        DataDir(p.to_path_buf())
    }
    pub fn root(&self) -> &Path {
        &self.0
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca-key.pem")
    }
    pub fn ca_previous(&self) -> PathBuf {
        self.0.join("ca-previous.pem")
    }
    pub fn trust(&self) -> PathBuf {
        self.0.join("trust.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.0.join("hub.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.0.join("hub-key.pem")
    }
    pub fn admin_conf(&self) -> PathBuf {
        self.0.join("admin.conf")
    }
    pub fn hub_conf(&self) -> PathBuf {
        self.0.join("hub.conf")
    }
    pub fn state(&self) -> PathBuf {
        self.0.join("state.redb")
    }
}
