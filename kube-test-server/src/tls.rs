//! A throwaway certificate authority and serving certificate for loopback, and the
//! kubeconfig that trusts them.
//!
//! Everything is generated in memory at start (ECDSA P-256 via rcgen) and never
//! written anywhere except the kubeconfig the caller asks for. rustls uses the ring
//! provider.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

/// The CA and the server's certificate and key.
pub struct Certificates {
    pub ca_pem: String,
    pub server_cert: CertificateDer<'static>,
    pub server_key: Vec<u8>,
}

/// Generates a CA and a server certificate for `localhost`, `127.0.0.1` and `::1`.
pub fn generate() -> Result<Certificates, Error> {
    let tls = |e: rcgen::Error| Error::Tls(e.to_string());
    let ca_key = KeyPair::generate().map_err(tls)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "flotilla kube test server CA");
    ca_params.distinguished_name = dn;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(tls)?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(tls)?;
    for ip in ["127.0.0.1", "::1"] {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "flotilla-kube-test-server");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer).map_err(tls)?;
    Ok(Certificates {
        ca_pem: ca_cert.pem(),
        server_cert: server_cert.der().clone(),
        server_key: server_key.serialize_der(),
    })
}

/// A rustls server config speaking HTTP/1.1 with the generated certificate.
pub fn server_config(c: &Certificates) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.server_key.clone()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![c.server_cert.clone()], key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A kubeconfig with one cluster, user and context, all named `flotilla-kube-test-server`.
pub fn kubeconfig(server_url: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    [
        "# Written by flotilla-kube-test-server, a Kubernetes API TEST SERVER (not for production).",
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: flotilla-kube-test-server",
        "  cluster:",
        &format!("    server: {server_url}"),
        &format!("    certificate-authority-data: {ca}"),
        "users:",
        "- name: flotilla-kube-test-server",
        "  user:",
        &format!("    token: {token}"),
        "contexts:",
        "- name: flotilla-kube-test-server",
        "  context:",
        "    cluster: flotilla-kube-test-server",
        "    user: flotilla-kube-test-server",
        "    namespace: default",
        "current-context: flotilla-kube-test-server",
        "",
    ]
    .join("\n")
}
