//! Trust on first use, done safely: the join string carries the SHA-256 of the hub CA,
//! and the spoke accepts a CA only if the hub presents one with exactly that digest
//! (like `kubeadm join --discovery-token-ca-cert-hash`).
//!
//! The handshake here only *collects* the chain the hub presents; trust comes from the
//! digest comparison. The registration call that follows uses the pinned CA as its only
//! root and verifies the hub's serving certificate properly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use crate::{Error, HUB_SERVER_NAME, fingerprint};

#[derive(Debug)]
struct ChainRecorder {
    chain: Mutex<Vec<Vec<u8>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self
            .chain
            .lock()
            .map_err(|_| rustls::Error::General("poisoned".into()))?;
        chain.push(end_entity.to_vec());
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Connects to `addr`, and returns the DER of the presented certificate whose SHA-256
/// is `expected_sha256`, or `PinMismatch` naming what was presented instead.
pub async fn fetch_pinned_ca(addr: &str, expected_sha256: &str) -> Result<Vec<u8>, Error> {
    let connect_err = |message: String| Error::Connect {
        addr: addr.to_string(),
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(ChainRecorder {
        chain: Mutex::new(Vec::new()),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| connect_err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    let server_name = ServerName::try_from(HUB_SERVER_NAME)
        .map_err(|e| connect_err(e.to_string()))?
        .to_owned();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, tcp),
    )
    .await
    .map_err(|_| connect_err("TLS handshake timed out".into()))?
    .map_err(|e| connect_err(format!("TLS handshake: {e}")))?;
    let chain = recorder
        .chain
        .lock()
        .map_err(|_| connect_err("internal lock poisoned".into()))?
        .clone();
    let expected = expected_sha256.to_ascii_lowercase();
    let presented: Vec<String> = chain.iter().map(|c| fingerprint(c)).collect();
    chain
        .into_iter()
        .zip(&presented)
        .find(|(_, fp)| **fp == expected)
        .map(|(der, _)| der)
        .ok_or(Error::PinMismatch {
            expected,
            presented,
        })
}
