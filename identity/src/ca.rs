//! The hub's certificate authority: ECDSA P-256, issuing the hub's serving certificate,
//! admin certificates, and cluster certificates from spoke CSRs.
//!
//! A CSR contributes only its public key: subject, SANs, usages and lifetime are always
//! chosen here, so a spoke cannot ask for another cluster's name or for CA powers.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::{Error, HUB_SERVER_NAME, Identity};

/// A certificate with its private key, both PEM.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA valid for ten years.
    pub fn generate(common_name: &str) -> Result<(Ca, String), Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let ca = Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, key_pem))
    }

    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = crate::pem_to_ders(cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Certificate("empty CA PEM".into()))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate: the pin carried in join strings.
    pub fn fingerprint(&self) -> String {
        crate::fingerprint(&self.cert_der)
    }

    /// The hub's serving certificate, for `flotilla-hub` plus the advertised hosts.
    pub fn issue_server(&self, hosts: &[String]) -> Result<IssuedCert, Error> {
        let key = KeyPair::generate()?;
        let mut params = leaf_params(HUB_SERVER_NAME, Duration::from_secs(365 * 24 * 3600));
        let mut sans = vec![dns(HUB_SERVER_NAME)?, dns("localhost")?];
        for h in hosts {
            sans.push(match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => dns(h)?,
            });
        }
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// An operator client certificate with a freshly generated key (issued locally on
    /// the hub machine: `init` and `flotilla-hub admin issue`).
    pub fn issue_operator(
        &self,
        name: &str,
        role: crate::san::Role,
        lifetime: Duration,
    ) -> Result<IssuedCert, Error> {
        let key = KeyPair::generate()?;
        let identity = Identity::Operator {
            name: name.to_string(),
            role,
        };
        let cert = self.client_cert(&key, &identity, lifetime)?;
        Ok(IssuedCert {
            cert_pem: cert,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a spoke's CSR for `identity`. Only the CSR's public key is used.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        lifetime: Duration,
    ) -> Result<String, Error> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::Certificate(format!("invalid CSR: {e}")))?;
        self.client_cert(&csr.public_key, identity, lifetime)
    }

    fn client_cert(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        identity: &Identity,
        lifetime: Duration,
    ) -> Result<String, Error> {
        let cn = match identity {
            Identity::Cluster(c) => c.to_string(),
            Identity::Operator { name, role } => format!("{role}:{name}"),
        };
        let mut params = leaf_params(&cn, lifetime);
        let uri = identity
            .uri()
            .try_into()
            .map_err(|e| Error::Certificate(format!("identity URI: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(public_key, &self.issuer)?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "flotilla");
    dn.push(DnType::CommonName, cn);
    dn
}

fn dns(name: &str) -> Result<SanType, Error> {
    Ok(SanType::DnsName(name.try_into().map_err(|e| {
        Error::Certificate(format!("bad DNS name {name:?}: {e}"))
    })?))
}

fn leaf_params(cn: &str, lifetime: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    // A little backdating tolerates clock skew between hub and spoke; a tenth of the
    // lifetime at most, so renewal at two thirds of it still happens after issue.
    let backdate = (lifetime / 10).min(Duration::from_secs(300));
    params.not_before = now - time::Duration::seconds(backdate.as_secs() as i64);
    params.not_after = now + lifetime;
    let mut serial: [u8; 16] = rand::random();
    // Positive, as RFC 5280 requires of serial numbers.
    serial[0] &= 0x7f;
    params.serial_number = Some(serial.to_vec().into());
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::generate_csr;
    use flotilla_model::ClusterName;

    #[test]
    fn signed_cluster_cert_names_the_cluster_chosen_by_the_hub_not_the_csr() {
        let (ca, _) = Ca::generate("test-ca").expect("ca");
        let (_, csr) = generate_csr("evil-other-name").expect("csr");
        let id = Identity::Cluster(ClusterName::new("dev-1").expect("name"));
        let chain = ca
            .sign_csr(&csr, &id, Duration::from_secs(3600))
            .expect("signs");
        let ders = crate::pem_to_ders(&chain).expect("pem");
        assert_eq!(ders.len(), 2, "leaf + CA");
        assert_eq!(Identity::from_cert_der(&ders[0]).expect("identity"), id);
    }

    #[test]
    fn garbage_csr_is_a_clear_error() {
        let (ca, _) = Ca::generate("test-ca").expect("ca");
        let id = Identity::admin("x");
        let err = ca
            .sign_csr("not a csr", &id, Duration::from_secs(1))
            .expect_err("must fail");
        assert!(err.to_string().contains("invalid CSR"), "{err}");
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let (ca, key) = Ca::generate("test-ca").expect("ca");
        let again = Ca::load(ca.cert_pem(), &key).expect("loads");
        assert_eq!(again.fingerprint(), ca.fingerprint());
    }
}
