//! Recovering an expired cluster certificate without a person: what the spoke proves
//! and what the hub checks before it issues a new certificate.
//!
//! The spoke sends its certificate (expired or not) and a CSR for the certificate's own
//! public key, signed by that key. [`verify_recovery`] checks that the certificate was
//! issued by one of the hub's trusted CAs, names a cluster, and that the CSR's key is the
//! certificate's key and the CSR's signature verifies with it. The hub then checks the
//! cluster's record (revoked, deleted, current serial) and the grace period; see
//! `docs/security.md` for the threat model.
//!
//! **Architecture Invariant:** a recovered certificate is issued for the key the old one
//! was issued for. Whoever replays a recovery request gets a certificate that only the
//! holder of that private key can use.

use flotilla_model::ClusterName;
use x509_parser::prelude::*;

use crate::{Identity, Refusal};

/// What a verified recovery request says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryClaim {
    pub cluster: ClusterName,
    /// Serial (lowercase hex) of the presented certificate.
    pub serial: String,
    /// Its expiry, unix seconds.
    pub not_after: i64,
    /// SHA-256 of the trusted CA that issued it.
    pub issuer: String,
}

/// A recovery request that no retry can make acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RecoveryRefused {
    pub refusal: Refusal,
    pub message: String,
}

fn refused(refusal: Refusal, message: impl Into<String>) -> RecoveryRefused {
    RecoveryRefused {
        refusal,
        message: message.into(),
    }
}

/// Checks a recovery request against the CAs in `trusted_cas_pem` (the signing CA and,
/// during a rotation, the previous one). Neither the certificate's validity period nor
/// the fleet's records are looked at here: the caller owns those rules.
pub fn verify_recovery(
    cert_pem: &str,
    csr_pem: &str,
    trusted_cas_pem: &str,
) -> Result<RecoveryClaim, RecoveryRefused> {
    let ders = crate::pem_to_ders(cert_pem)
        .map_err(|e| refused(Refusal::UnknownIssuer, format!("the certificate: {e}")))?;
    let leaf_der = &ders[0];
    let (_, leaf) = parse_x509_certificate(leaf_der).map_err(|e| {
        refused(
            Refusal::UnknownIssuer,
            format!("unparseable certificate: {e}"),
        )
    })?;
    let cas = crate::pem_to_ders(trusted_cas_pem).map_err(|e| {
        refused(
            Refusal::UnknownIssuer,
            format!("the hub's trust bundle: {e}"),
        )
    })?;
    let issuer = cas
        .iter()
        .find(|ca_der| {
            parse_x509_certificate(ca_der).is_ok_and(|(_, ca)| {
                ca.subject() == leaf.issuer()
                    && leaf.verify_signature(Some(ca.public_key())).is_ok()
            })
        })
        .map(|ca_der| crate::fingerprint(ca_der))
        .ok_or_else(|| {
            refused(
                Refusal::UnknownIssuer,
                "the certificate was not issued by a CA this hub trusts",
            )
        })?;
    let cluster = match Identity::from_cert_der(leaf_der) {
        Ok(Identity::Cluster(c)) => c,
        Ok(other) => {
            return Err(refused(
                Refusal::UnknownIssuer,
                format!("{other} is not a cluster; only cluster certificates are recovered"),
            ));
        }
        Err(e) => return Err(refused(Refusal::UnknownIssuer, e.to_string())),
    };
    check_csr(csr_pem, leaf.public_key().raw)?;
    Ok(RecoveryClaim {
        cluster,
        serial: hex::encode(leaf.tbs_certificate.raw_serial()),
        not_after: leaf.validity().not_after.timestamp(),
        issuer,
    })
}

/// The CSR must be for `public_key` (DER SubjectPublicKeyInfo) and signed by it.
fn check_csr(csr_pem: &str, public_key: &[u8]) -> Result<(), RecoveryRefused> {
    let block = ::pem::parse(csr_pem)
        .map_err(|e| refused(Refusal::WrongKey, format!("the CSR is not PEM: {e}")))?;
    if block.tag() != "CERTIFICATE REQUEST" {
        return Err(refused(
            Refusal::WrongKey,
            format!("expected a CERTIFICATE REQUEST, got {:?}", block.tag()),
        ));
    }
    let (_, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| refused(Refusal::WrongKey, format!("unparseable CSR: {e}")))?;
    if csr.certification_request_info.subject_pki.raw != public_key {
        return Err(refused(
            Refusal::WrongKey,
            "the CSR is for another key than the certificate",
        ));
    }
    csr.verify_signature().map_err(|e| {
        refused(
            Refusal::WrongKey,
            format!("the CSR's signature does not verify with the certificate's key: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Ca;
    use crate::csr::{csr_for_key_pem, generate_csr};

    fn cluster(name: &str) -> Identity {
        Identity::Cluster(ClusterName::new(name).expect("name"))
    }

    #[test]
    fn the_holder_of_the_certificates_key_is_recognised_and_nobody_else() {
        let (ca, _) = Ca::generate("hub").expect("ca");
        let (key, csr) = generate_csr("edge").expect("csr");
        let chain = ca
            .sign_csr(&csr, &cluster("edge"), Duration::from_secs(1))
            .expect("cert");
        let proof = csr_for_key_pem(&key, "edge").expect("proof");

        let claim = verify_recovery(&chain, &proof, ca.cert_pem()).expect("recognised");
        assert_eq!(claim.cluster.as_str(), "edge");
        assert_eq!(claim.issuer, ca.fingerprint());

        // Someone holding only the certificate signs with a key of their own.
        let (_, other) = generate_csr("edge").expect("csr");
        let err = verify_recovery(&chain, &other, ca.cert_pem()).expect_err("refused");
        assert_eq!(err.refusal, Refusal::WrongKey, "{err}");

        // A certificate from a CA this hub does not trust.
        let (stranger, _) = Ca::generate("hub").expect("ca");
        let err = verify_recovery(&chain, &proof, stranger.cert_pem()).expect_err("refused");
        assert_eq!(err.refusal, Refusal::UnknownIssuer, "{err}");
        // ...but both CAs of a rotation are trusted.
        let both = format!("{}{}", stranger.cert_pem(), ca.cert_pem());
        assert!(verify_recovery(&chain, &proof, &both).is_ok());
    }

    #[test]
    fn an_operator_certificate_or_garbage_is_not_recovered() {
        let (ca, _) = Ca::generate("hub").expect("ca");
        let admin = ca
            .issue_operator("ops", crate::Role::Admin, Duration::from_secs(60))
            .expect("admin");
        let proof = csr_for_key_pem(&admin.key_pem, "ops").expect("proof");
        let err = verify_recovery(&admin.cert_pem, &proof, ca.cert_pem()).expect_err("refused");
        assert!(err.message.contains("not a cluster"), "{err}");
        let err = verify_recovery("garbage", &proof, ca.cert_pem()).expect_err("refused");
        assert_eq!(err.refusal, Refusal::UnknownIssuer);
        let (key, csr) = generate_csr("edge").expect("csr");
        let chain = ca
            .sign_csr(&csr, &cluster("edge"), Duration::from_secs(60))
            .expect("cert");
        let err = verify_recovery(&chain, &chain, ca.cert_pem()).expect_err("refused");
        assert!(err.message.contains("CERTIFICATE REQUEST"), "{err}");
        drop(key);
    }
}
