//! Identity for flotilla: who a peer is, and the credentials that prove it.
//!
//! This crate owns the hub's certificate authority (`ca`), the hub's advertised address
//! list (`addrs`), spoke key and CSR generation
//! (`csr`), the URI SAN that names a cluster or an admin (`san`), pinning the hub CA from
//! a join string (`pin`), building mTLS channels (`channel`), writing key files 0600
//! (`files`), checking a spoke's proof for recovering an expired certificate
//! (`recovery`) and naming the refusals no retry can change (`refusal`). Callers ask for
//! credentials; they never format SANs or touch modes themselves.
//!
//! **Architecture Invariant:** an identity is only ever derived from a certificate that
//! the TLS layer verified against the hub CA. Nothing here reads identity from a message.
#![forbid(unsafe_code)]

pub mod addrs;
pub mod ca;
pub mod channel;
pub mod client_config;
pub mod csr;
pub mod files;
pub mod join;
pub mod pin;
pub mod recovery;
pub mod refusal;
pub mod san;

pub use ca::{Ca, IssuedCert};
pub use channel::{Credentials, connect, connect_first};
pub use client_config::ClientConfig;
pub use join::JoinString;
pub use recovery::{RecoveryClaim, RecoveryRefused, verify_recovery};
pub use refusal::Refusal;
pub use san::{Identity, Role};

/// The DNS name every hub serving certificate carries; clients verify against it so the
/// hub's advertised address can be an IP, a NAT'd name, or anything else.
pub const HUB_SERVER_NAME: &str = "flotilla-hub";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("file {path}: {message}")]
    File { path: String, message: String },
    #[error(
        "hub CA pin mismatch: the join string expects sha256 {expected}, the hub presented {presented:?}"
    )]
    PinMismatch {
        expected: String,
        presented: Vec<String>,
    },
    #[error("{0}")]
    Address(String),
    #[error("connecting to {addr}: {message}")]
    Connect { addr: String, message: String },
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Certificate(e.to_string())
    }
}

/// SHA-256 (lowercase hex) of a certificate's DER: what a join string pins.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(der))
}

/// Parses every certificate in a PEM bundle into DER.
pub fn pem_to_ders(pem: &str) -> Result<Vec<Vec<u8>>, Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect();
    let certs = certs.map_err(|e| Error::Certificate(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Certificate("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// Encodes DER as a PEM certificate block.
pub fn der_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}
