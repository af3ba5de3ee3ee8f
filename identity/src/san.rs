//! The URI SAN that names a peer: `flotilla://cluster/NAME` or `flotilla://admin/NAME`.

use std::fmt;

use flotilla_model::ClusterName;
use x509_parser::extensions::GeneralName;

use crate::Error;

const CLUSTER_PREFIX: &str = "flotilla://cluster/";
const ADMIN_PREFIX: &str = "flotilla://admin/";

/// Who a verified certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Cluster(ClusterName),
    Admin(String),
}

impl Identity {
    pub fn uri(&self) -> String {
        match self {
            Identity::Cluster(c) => format!("{CLUSTER_PREFIX}{c}"),
            Identity::Admin(a) => format!("{ADMIN_PREFIX}{a}"),
        }
    }

    fn from_uri(uri: &str) -> Option<Identity> {
        if let Some(name) = uri.strip_prefix(CLUSTER_PREFIX) {
            return ClusterName::new(name).ok().map(Identity::Cluster);
        }
        let admin = uri.strip_prefix(ADMIN_PREFIX)?;
        flotilla_model::names::is_dns_label(admin).then(|| Identity::Admin(admin.to_string()))
    }

    /// Reads the identity from a leaf certificate's DER. The caller must already have had
    /// the TLS layer verify the certificate; this only parses.
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::Certificate(format!("unparseable client certificate: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| Error::Certificate(format!("bad subjectAltName: {e}")))?
            .ok_or_else(|| Error::Certificate("client certificate has no subjectAltName".into()))?;
        let mut found = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(uri) => Identity::from_uri(uri),
            _ => None,
        });
        match (found.next(), found.next()) {
            (Some(id), None) => Ok(id),
            (None, _) => Err(Error::Certificate(
                "client certificate carries no flotilla identity URI".into(),
            )),
            (Some(_), Some(_)) => Err(Error::Certificate(
                "client certificate carries more than one flotilla identity".into(),
            )),
        }
    }

    /// Not-after of a certificate, as unix seconds.
    pub fn not_after(der: &[u8]) -> Result<i64, Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::Certificate(format!("unparseable certificate: {e}")))?;
        Ok(cert.validity().not_after.timestamp())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Cluster(c) => write!(f, "cluster/{c}"),
            Identity::Admin(a) => write!(f, "admin/{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_identity_uris() {
        assert_eq!(
            Identity::from_uri("flotilla://cluster/prod-1"),
            Some(Identity::Cluster(
                ClusterName::new("prod-1").expect("valid")
            ))
        );
        assert_eq!(
            Identity::from_uri("flotilla://admin/ops"),
            Some(Identity::Admin("ops".into()))
        );
        assert_eq!(Identity::from_uri("flotilla://cluster/../x"), None);
        assert_eq!(Identity::from_uri("spiffe://cluster/x"), None);
    }
}
