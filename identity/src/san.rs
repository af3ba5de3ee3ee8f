//! The URI SAN that names a peer: `flotilla://cluster/NAME` or `flotilla://admin/NAME`.

use std::fmt;

use flotilla_model::ClusterName;
use x509_parser::extensions::GeneralName;

use crate::Error;

const CLUSTER_PREFIX: &str = "flotilla://cluster/";
const ADMIN_PREFIX: &str = "flotilla://admin/";
const VIEWER_PREFIX: &str = "flotilla://viewer/";

/// What an operator certificate may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read everything, change nothing.
    Viewer,
    /// Read and change everything.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?}: use viewer or admin")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        })
    }
}

/// Who a verified certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Cluster(ClusterName),
    Operator { name: String, role: Role },
}

impl Identity {
    pub fn admin(name: &str) -> Identity {
        Identity::Operator {
            name: name.to_string(),
            role: Role::Admin,
        }
    }

    pub fn uri(&self) -> String {
        match self {
            Identity::Cluster(c) => format!("{CLUSTER_PREFIX}{c}"),
            Identity::Operator {
                name,
                role: Role::Admin,
            } => format!("{ADMIN_PREFIX}{name}"),
            Identity::Operator {
                name,
                role: Role::Viewer,
            } => format!("{VIEWER_PREFIX}{name}"),
        }
    }

    fn from_uri(uri: &str) -> Option<Identity> {
        if let Some(name) = uri.strip_prefix(CLUSTER_PREFIX) {
            return ClusterName::new(name).ok().map(Identity::Cluster);
        }
        let (name, role) = if let Some(n) = uri.strip_prefix(ADMIN_PREFIX) {
            (n, Role::Admin)
        } else {
            (uri.strip_prefix(VIEWER_PREFIX)?, Role::Viewer)
        };
        flotilla_model::names::is_dns_label(name).then(|| Identity::Operator {
            name: name.to_string(),
            role,
        })
    }

    /// Serial number (lowercase hex) of a certificate: how the hub tells a cluster's
    /// current certificates from revoked or superseded ones.
    pub fn serial_hex(der: &[u8]) -> Result<String, Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::Certificate(format!("unparseable certificate: {e}")))?;
        Ok(hex::encode(cert.tbs_certificate.raw_serial()))
    }

    /// (not-before, not-after) of a certificate, as unix seconds.
    pub fn validity(der: &[u8]) -> Result<(i64, i64), Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::Certificate(format!("unparseable certificate: {e}")))?;
        Ok((
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        ))
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
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Cluster(c) => write!(f, "cluster/{c}"),
            Identity::Operator { name, role } => write!(f, "{role}/{name}"),
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
            Some(Identity::admin("ops"))
        );
        assert_eq!(
            Identity::from_uri("flotilla://viewer/ro"),
            Some(Identity::Operator {
                name: "ro".into(),
                role: Role::Viewer
            })
        );
        assert_eq!(Identity::from_uri("flotilla://cluster/../x"), None);
        assert_eq!(Identity::from_uri("spiffe://cluster/x"), None);
    }
}
