//! Spoke-side key generation: a P-256 key that never leaves the spoke, and a CSR for it.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::Error;

/// Returns (private key PEM, CSR PEM). The CSR's subject is only a hint; the hub decides
/// the certificate's identity.
pub fn generate_csr(name_hint: &str) -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    let csr = csr_for_key(&key, name_hint)?;
    Ok((key.serialize_pem(), csr))
}

/// A CSR for an existing key (PEM).
pub fn csr_for_key_pem(key_pem: &str, name_hint: &str) -> Result<String, Error> {
    csr_for_key(&KeyPair::from_pem(key_pem)?, name_hint)
}

fn csr_for_key(key: &KeyPair, name_hint: &str) -> Result<String, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name_hint);
    params.distinguished_name = dn;
    Ok(params.serialize_request(key)?.pem()?)
}
