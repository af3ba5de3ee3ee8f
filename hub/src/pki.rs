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
//! A rotation and a retirement run on the running hub (`Admin.RotateCa`/`RetireCa` →
//! [`rotate_live`]/[`retire_live`]) or, with the hub stopped, on the files alone
//! ([`rotate`]/[`retire`]); each builds the new material in memory, then writes it,
//! restoring the old files if a write fails.
//! The running hub then swaps one [`HubPki`] (signing CA, trust bundle, TLS config) for
//! the next, so a handshake or a signature sees either the old state or the new one.
//!
//! **Architecture Invariant:** no spoke is stranded by a rotation. `retire` refuses while
//! any registered cluster's newest certificate still comes from the previous CA, because
//! such a spoke has not yet received the new trust bundle.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flotilla_identity::{Ca, ClientConfig, Role, files};

use crate::layout::DataDir;
use crate::records::ClusterRecord;

/// Everything `run` needs to serve TLS and sign certificates. The running hub holds one
/// and replaces it whole on a live rotation (`Fleet::pki`).
pub struct HubPki {
    pub signing: Ca,
    pub trust_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// SHA-256 of the CA that issued the serving certificate: what join strings pin.
    pub pin: String,
    /// The TLS server config: the serving chain, and every CA in `trust_pem` as a root
    /// for client certificates. Each handshake reads the current one.
    pub tls: Arc<rustls::ServerConfig>,
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
        let pin = flotilla_identity::fingerprint(issuer);
        let trust_pem = trust_bundle(dir, &signing)?;
        HubPki::new(
            signing,
            trust_pem,
            serving_cert_pem,
            files::read_secret(&dir.server_key())?,
            pin,
        )
    }

    fn new(
        signing: Ca,
        trust_pem: String,
        serving_cert_pem: String,
        serving_key_pem: String,
        pin: String,
    ) -> Result<HubPki> {
        let tls = crate::server::server_config(&serving_cert_pem, &serving_key_pem, &trust_pem)?;
        Ok(HubPki {
            signing,
            trust_pem,
            serving_cert_pem,
            serving_key_pem,
            pin,
            tls: Arc::new(tls),
        })
    }

    /// Whether a rotation is under way: the hub trusts more than its signing CA.
    pub fn rotating(&self) -> bool {
        flotilla_identity::pem_to_ders(&self.trust_pem).is_ok_and(|cas| cas.len() > 1)
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

/// The hosts of every advertised address (`A1,A2,…`): the serving certificate names
/// each, so it is valid whichever replica or address a client dials.
fn advertise_hosts(advertise: &str) -> Result<Vec<String>> {
    let mut hosts: Vec<String> = flotilla_identity::addrs::hub_addresses(advertise)
        .context("--advertise")?
        .iter()
        .map(|a| flotilla_identity::addrs::host(a).to_string())
        .collect();
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}

fn write_serving(dir: &DataDir, ca: &Ca, advertise: &str) -> Result<()> {
    let server = ca.issue_server(&advertise_hosts(advertise)?)?;
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

/// Starts a rotation with the hub stopped; see [`rotate_live`]. Returns the new CA's
/// SHA-256.
pub fn rotate(dir: &DataDir, advertise: &str) -> Result<String> {
    let current = HubPki::load(dir)?;
    Ok(rotate_live(dir, &current, advertise)?.signing.fingerprint())
}

/// Starts a rotation from `current`, the state the hub runs with: a new signing CA, a
/// trust bundle of new + old, a TLS config that accepts client certificates from both
/// and still serves the chain from the old CA (spokes that have not renewed yet trust
/// only the old CA; a renewal delivers the bundle), and a new `admin.conf`. Everything
/// is built before the first file is written; if a write fails, the files written so
/// far are restored, so the old CA keeps working. The caller swaps in the result.
pub fn rotate_live(dir: &DataDir, current: &HubPki, advertise: &str) -> Result<HubPki> {
    if dir.ca_previous().exists() || current.rotating() {
        bail!(
            "a CA rotation is already in progress ({} exists); finish it with `flotilla-hub ca retire`",
            dir.ca_previous().display()
        );
    }
    let (ca, key) = Ca::generate("flotilla hub CA")?;
    let old_pem = current.signing.cert_pem().to_string();
    // The bundle starts with the signing CA, as `trust_bundle` writes it.
    let trust_pem = format!("{}{old_pem}", ca.cert_pem());
    let next = HubPki::new(
        ca,
        trust_pem,
        current.serving_cert_pem.clone(),
        current.serving_key_pem.clone(),
        current.pin.clone(),
    )?;
    let mut undo = Undo::default();
    let written = (|| -> Result<()> {
        undo.write(&dir.ca_previous(), old_pem.as_bytes(), false)?;
        undo.write(&dir.ca_key(), key.as_bytes(), true)?;
        undo.write(&dir.ca_cert(), next.signing.cert_pem().as_bytes(), false)?;
        undo.write(&dir.trust(), next.trust_pem.as_bytes(), false)?;
        undo.keep(&dir.admin_conf(), false)?;
        undo.keep(&dir.root().join("admin.pem"), false)?;
        undo.keep(&dir.root().join("admin-key.pem"), true)?;
        write_admin_conf(dir, &next.signing, advertise)
    })();
    if let Err(e) = written {
        return Err(undone(e, undo.restore(), dir));
    }
    Ok(next)
}

/// Files a rotation replaced, with what they held before (`None`: they did not exist),
/// so a failed rotation can put them back.
#[derive(Default)]
struct Undo(Vec<(PathBuf, Option<Vec<u8>>, bool)>);

impl Undo {
    /// Remembers `path` as it is now (`secret`: restored 0600).
    fn keep(&mut self, path: &Path, secret: bool) -> Result<()> {
        let before = match std::fs::read(path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        self.0.push((path.to_path_buf(), before, secret));
        Ok(())
    }

    fn write(&mut self, path: &Path, contents: &[u8], secret: bool) -> Result<()> {
        self.keep(path, secret)?;
        if secret {
            files::write_secret(path, contents)?;
        } else {
            files::write_public(path, contents)?;
        }
        Ok(())
    }

    /// Puts every remembered file back, newest first; tries them all. A file that still
    /// holds what it held is left alone (writes are atomic: a failed one changed nothing).
    fn restore(self) -> Result<()> {
        let mut failed = Vec::new();
        for (path, before, secret) in self.0.into_iter().rev() {
            if std::fs::read(&path).ok() == before {
                continue;
            }
            let r = match before {
                Some(b) if secret => files::write_secret(&path, &b).map_err(anyhow::Error::from),
                Some(b) => files::write_public(&path, &b).map_err(anyhow::Error::from),
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(anyhow::Error::from(e))
                    }
                    _ => Ok(()),
                },
            };
            if let Err(e) = r {
                failed.push(format!("{}: {e:#}", path.display()));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("{}", failed.join("; "))
        }
    }
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

/// Ends a rotation with the hub stopped; see [`retire_live`].
pub fn retire(
    dir: &DataDir,
    clusters: &[ClusterRecord],
    force: bool,
    advertise: &str,
) -> Result<()> {
    let current = HubPki::load(dir)?;
    retire_live(dir, &current, clusters, force, advertise).map(drop)
}

/// Ends a rotation from `current`: the serving certificate moves to the signing CA and
/// the previous CA is no longer trusted. Refuses while a cluster would be stranded,
/// unless forced. Like [`rotate_live`], it builds everything first and restores the
/// files if a write fails; the caller swaps in the result.
pub fn retire_live(
    dir: &DataDir,
    current: &HubPki,
    clusters: &[ClusterRecord],
    force: bool,
    advertise: &str,
) -> Result<HubPki> {
    if !dir.ca_previous().exists() {
        bail!("no CA rotation in progress: nothing to retire");
    }
    let waiting = depending_on_previous(dir, clusters)?;
    if !waiting.is_empty() && !force {
        bail!(
            "{} cluster(s) still hold certificates from the previous CA and would be stranded: {}; \
             wait for them to connect and renew (`flotilla-hub ca status` says when), \
             or delete them, or pass --force",
            waiting.len(),
            waiting.join(", ")
        );
    }
    let ca = load_ca(dir)?;
    if ca.fingerprint() != current.signing.fingerprint() {
        bail!(
            "{} is not the CA the hub signs with; restart the hub before retiring",
            dir.ca_cert().display()
        );
    }
    let server = ca.issue_server(&advertise_hosts(advertise)?)?;
    let trust_pem = ca.cert_pem().to_string();
    let pin = ca.fingerprint();
    let next = HubPki::new(ca, trust_pem, server.cert_pem, server.key_pem, pin)?;
    let mut undo = Undo::default();
    let written = (|| -> Result<()> {
        undo.write(&dir.server_cert(), next.serving_cert_pem.as_bytes(), false)?;
        undo.write(&dir.server_key(), next.serving_key_pem.as_bytes(), true)?;
        undo.write(&dir.trust(), next.trust_pem.as_bytes(), false)?;
        undo.keep(&dir.ca_previous(), false)?;
        std::fs::remove_file(dir.ca_previous())
            .with_context(|| format!("removing {}", dir.ca_previous().display()))
    })();
    if let Err(e) = written {
        return Err(undone(e, undo.restore(), dir));
    }
    Ok(next)
}

/// The error of a failed rotation or retirement, after its files were restored (or not).
fn undone(e: anyhow::Error, restored: Result<()>, dir: &DataDir) -> anyhow::Error {
    match restored {
        Ok(()) => e.context("the change was undone; the hub's CA files are as they were"),
        Err(u) => e.context(format!(
            "restoring the previous files failed too ({u:#}); check {} before restarting the hub",
            dir.root().display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADVERTISE: &str = "127.0.0.1:1";

    /// Every file of the data dir a rotation may change, with its bytes (None: absent).
    fn snapshot(dir: &DataDir) -> Vec<(String, Option<Vec<u8>>)> {
        [
            "ca.pem",
            "ca-key.pem",
            "ca-previous.pem",
            "trust.pem",
            "admin.conf",
            "admin.pem",
            "admin-key.pem",
            "hub.pem",
            "hub-key.pem",
        ]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.root().join(f)).ok()))
        .collect()
    }

    #[test]
    fn a_live_rotation_trusts_both_cas_signs_with_the_new_one_and_keeps_serving_the_old_chain_until_retired()
     {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path());
        let old = init(&dir, ADVERTISE).expect("init");
        let current = HubPki::load(&dir).expect("load");
        let admin_before = files::read_public(&dir.root().join("admin.pem")).expect("admin.pem");
        let next = rotate_live(&dir, &current, ADVERTISE).expect("rotate");
        assert_ne!(next.signing.fingerprint(), old.fingerprint());
        assert!(next.rotating() && !current.rotating());
        assert_eq!(
            next.pin, current.pin,
            "join strings keep pinning the serving CA"
        );
        assert_eq!(next.serving_cert_pem, current.serving_cert_pem);
        // What a restarted hub would load is what the running one swapped in.
        let reloaded = HubPki::load(&dir).expect("reload");
        assert_eq!(reloaded.signing.fingerprint(), next.signing.fingerprint());
        assert_eq!(reloaded.trust_pem, next.trust_pem);
        assert_ne!(
            files::read_public(&dir.root().join("admin.pem")).expect("admin.pem"),
            admin_before,
            "admin.conf names a certificate from the new CA"
        );
        let again = rotate_live(&dir, &next, ADVERTISE).err().expect("refused");
        assert!(
            format!("{again:#}").contains("already in progress"),
            "{again:#}"
        );

        // Retiring serves from the new CA and trusts only it.
        let retired = retire_live(&dir, &next, &[], false, ADVERTISE).expect("retire");
        assert_eq!(retired.pin, next.signing.fingerprint());
        assert_eq!(retired.trust_pem, next.signing.cert_pem());
        assert_ne!(retired.serving_cert_pem, next.serving_cert_pem);
        assert!(!retired.rotating() && !dir.ca_previous().exists());
        let reloaded = HubPki::load(&dir).expect("reload");
        assert_eq!(reloaded.pin, retired.pin);
    }

    #[test]
    fn the_serving_certificate_names_every_advertised_host() {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path());
        init(&dir, "10.0.0.1:7443,hub-b.example.com:7443,[::1]:7443").expect("init");
        let chain = files::read_public(&dir.server_cert()).expect("hub.pem");
        let leaf = flotilla_identity::pem_to_ders(&chain).expect("pem")[0].clone();
        let (_, cert) = X509Certificate::from_der(&leaf).expect("a certificate");
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .expect("parses")
            .expect("has SANs")
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) => format!("{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert!(sans.contains(&"hub-b.example.com".to_string()), "{sans:?}");
        assert!(sans.contains(&"[10, 0, 0, 1]".to_string()), "{sans:?}");
        assert_eq!(
            sans.len(),
            5,
            "flotilla-hub, localhost and the three: {sans:?}"
        );
        let conf = flotilla_identity::ClientConfig::load(&dir.admin_conf()).expect("admin.conf");
        assert_eq!(
            conf.servers().expect("addresses"),
            ["10.0.0.1:7443", "hub-b.example.com:7443", "[::1]:7443"]
        );
    }

    #[test]
    fn a_rotation_that_fails_halfway_leaves_every_file_as_it_was() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path());
        let old = init(&dir, ADVERTISE).expect("init");
        let before = snapshot(&dir);
        // A directory where the admin config's temporary file goes: the last write of
        // the rotation fails, after the CA files and admin.pem were replaced.
        std::fs::create_dir(tmp.path().join(".admin.conf.tmp")).expect("blocker");
        let current = HubPki::load(&dir).expect("load");
        let err = rotate_live(&dir, &current, ADVERTISE).err().expect("fails");
        assert!(format!("{err:#}").contains("undone"), "{err:#}");
        assert_eq!(snapshot(&dir), before);
        let reloaded = HubPki::load(&dir).expect("the old CA still loads");
        assert_eq!(reloaded.signing.fingerprint(), old.fingerprint());
        assert!(!reloaded.rotating());
    }
}
