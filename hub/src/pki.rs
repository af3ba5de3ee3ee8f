//! The hub's certificate material on disk, and its lifecycle: `init`, `ca rotate`,
//! `ca retire`, and issuing operator certificates.
//!
//! Files in the data dir:
//! - `ca.pem` / `ca-key.pem`: the signing CA; every new certificate comes from it.
//! - `ca-previous.pem`: during a rotation, the CA being retired (trusted, never used to
//!   sign; its key is gone).
//! - `trust.pem`: every CA the hub and its clients trust (signing + previous). Spokes
//!   receive it at registration and renewal; client configs point at it.
//! - `hub.pem` / `hub-key.pem`: the serving chain. It stays issued by the old CA until
//!   retirement, so spokes that have not renewed yet still trust the hub.
//!
//! **Architecture Invariant:** no spoke is stranded by a rotation. `retire` refuses while
//! any registered cluster's newest certificate still comes from the previous CA, because
//! such a spoke has not yet received the new trust bundle.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flotilla_identity::{Ca, ClientConfig, Role, files};

use crate::layout::DataDir;
use crate::records::ClusterRecord;

/// Everything `run` needs to serve TLS and sign certificates.
pub struct HubPki {
    pub signing: Ca,
    pub trust_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// SHA-256 of the CA that issued the serving certificate: what join strings pin.
    pub pin: String,
}

impl HubPki {
    pub fn load(dir: &DataDir) -> Result<HubPki> {
        let signing = load_ca(dir)?;
        let serving_cert_pem = files::read_public(&dir.server_cert())?;
        let chain = flotilla_identity::pem_to_ders(&serving_cert_pem)?;
        let issuer = chain.last().filter(|_| chain.len() >= 2).with_context(|| {
            format!(
                "{} must hold the leaf and its CA",
                dir.server_cert().display()
            )
        })?;
        Ok(HubPki {
            trust_pem: trust_bundle(dir, &signing)?,
            serving_key_pem: files::read_secret(&dir.server_key())?,
            pin: flotilla_identity::fingerprint(issuer),
            serving_cert_pem,
            signing,
        })
    }
}

fn load_ca(dir: &DataDir) -> Result<Ca> {
    let ca_pem = files::read_public(&dir.ca_cert())?;
    Ok(Ca::load(&ca_pem, &files::read_secret(&dir.ca_key())?)?)
}

fn trust_bundle(dir: &DataDir, signing: &Ca) -> Result<String> {
    let mut bundle = signing.cert_pem().to_string();
    if dir.ca_previous().exists() {
        bundle.push_str(&files::read_public(&dir.ca_previous())?);
    }
    Ok(bundle)
}

fn advertise_host(advertise: &str) -> Result<String> {
    advertise
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        .context("--advertise must be host:port")
}

fn write_serving(dir: &DataDir, ca: &Ca, advertise: &str) -> Result<()> {
    let server = ca.issue_server(&[advertise_host(advertise)?])?;
    files::write_public(&dir.server_cert(), server.cert_pem.as_bytes())?;
    files::write_secret(&dir.server_key(), server.key_pem.as_bytes())?;
    Ok(())
}

/// Creates the CA, serving certificate, trust bundle and the admin client config.
pub fn init(dir: &DataDir, advertise: &str) -> Result<Ca> {
    let (ca, ca_key) = Ca::generate("flotilla hub CA")?;
    files::write_public(&dir.ca_cert(), ca.cert_pem().as_bytes())?;
    files::write_secret(&dir.ca_key(), ca_key.as_bytes())?;
    files::write_public(&dir.trust(), ca.cert_pem().as_bytes())?;
    write_serving(dir, &ca, advertise)?;
    write_admin_conf(dir, &ca, advertise)?;
    Ok(ca)
}

fn write_admin_conf(dir: &DataDir, ca: &Ca, advertise: &str) -> Result<()> {
    write_operator(
        ca,
        advertise,
        "admin",
        Role::Admin,
        Duration::from_secs(365 * 24 * 3600),
        &dir.admin_conf(),
        // admin.conf sits beside trust.pem; config paths are relative to their file.
        Some(Path::new("trust.pem")),
    )
}

/// Writes an operator certificate, its key (0600) and a client config naming them. The
/// config trusts `trust` when given (a path relative to the config's folder), or a copy
/// of the CA written beside it.
pub fn write_operator(
    ca: &Ca,
    server: &str,
    name: &str,
    role: Role,
    lifetime: Duration,
    conf_path: &Path,
    trust: Option<&Path>,
) -> Result<()> {
    if !flotilla_model::names::is_dns_label(name) {
        bail!("--name {name:?} must be a DNS label");
    }
    let dir = conf_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = conf_path
        .file_stem()
        .context("--out needs a file name")?
        .to_string_lossy()
        .to_string();
    let issued = ca.issue_operator(name, role, lifetime)?;
    let (cert, key) = (format!("{stem}.pem"), format!("{stem}-key.pem"));
    files::write_public(&dir.join(&cert), issued.cert_pem.as_bytes())?;
    files::write_secret(&dir.join(&key), issued.key_pem.as_bytes())?;
    let ca_path = match trust {
        Some(t) => t.to_path_buf(),
        None => {
            let name = format!("{stem}-ca.pem");
            files::write_public(&dir.join(&name), ca.cert_pem().as_bytes())?;
            name.into()
        }
    };
    let conf = ClientConfig {
        server: server.to_string(),
        ca: ca_path,
        cert: cert.into(),
        key: key.into(),
    };
    files::write_public(conf_path, conf.to_yaml().as_bytes())?;
    Ok(())
}

/// Issues an operator certificate from the current signing CA. During a rotation the
/// config trusts the whole bundle, so it works before and after retirement.
pub fn issue_operator(
    dir: &DataDir,
    name: &str,
    role: Role,
    lifetime: Duration,
    out: &Path,
) -> Result<()> {
    let ca = load_ca(dir)?;
    let server = crate::cli::read_advertise(dir)?;
    let trust = trust_bundle(dir, &ca)?;
    write_operator(&ca, &server, name, role, lifetime, out, None)?;
    // Replace the single-CA copy with the full bundle.
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    files::write_public(&parent.join(format!("{stem}-ca.pem")), trust.as_bytes())?;
    Ok(())
}

/// Starts a rotation: a new signing CA; the old one stays trusted until `retire`.
pub fn rotate(dir: &DataDir) -> Result<String> {
    if dir.ca_previous().exists() {
        bail!(
            "a CA rotation is already in progress ({} exists); finish it with `flotilla-hub ca retire`",
            dir.ca_previous().display()
        );
    }
    let old_pem = files::read_public(&dir.ca_cert())?;
    files::write_public(&dir.ca_previous(), old_pem.as_bytes())?;
    let (ca, key) = Ca::generate("flotilla hub CA")?;
    files::write_secret(&dir.ca_key(), key.as_bytes())?;
    files::write_public(&dir.ca_cert(), ca.cert_pem().as_bytes())?;
    files::write_public(&dir.trust(), trust_bundle(dir, &ca)?.as_bytes())?;
    let advertise = crate::cli::read_advertise(dir)?;
    write_admin_conf(dir, &ca, &advertise)?;
    Ok(ca.fingerprint())
}

/// Clusters whose newest certificate still comes from the previous CA.
pub fn depending_on_previous(dir: &DataDir, clusters: &[ClusterRecord]) -> Result<Vec<String>> {
    let signing = load_ca(dir)?.fingerprint();
    Ok(clusters
        .iter()
        .filter(|c| !c.revoked && c.issuer != signing)
        .map(|c| c.name.to_string())
        .collect())
}

/// Ends a rotation: the serving certificate moves to the new CA and the previous CA is
/// no longer trusted. Refuses while a cluster would be stranded, unless forced.
pub fn retire(dir: &DataDir, clusters: &[ClusterRecord], force: bool) -> Result<()> {
    if !dir.ca_previous().exists() {
        bail!("no CA rotation in progress: nothing to retire");
    }
    let waiting = depending_on_previous(dir, clusters)?;
    if !waiting.is_empty() && !force {
        bail!(
            "{} cluster(s) still hold certificates from the previous CA and would be stranded: {}; \
             wait for them to connect and renew (at 2/3 of their certificate lifetime), \
             or delete them, or pass --force",
            waiting.len(),
            waiting.join(", ")
        );
    }
    let ca = load_ca(dir)?;
    let advertise = crate::cli::read_advertise(dir)?;
    write_serving(dir, &ca, &advertise)?;
    std::fs::remove_file(dir.ca_previous())
        .with_context(|| format!("removing {}", dir.ca_previous().display()))?;
    files::write_public(&dir.trust(), ca.cert_pem().as_bytes())?;
    Ok(())
}
