//! Getting a certificate from the hub without a Sync stream, over server-authenticated
//! TLS only: the first start (pin the hub CA from the join string, generate a key
//! locally, trade a CSR plus the join token for a certificate) and recovery (the
//! certificate expired while the hub was away: prove possession of the enrolled key and
//! get a new certificate for it).
//!
//! A refusal that retrying cannot change comes back as [`Refused`], so the caller can
//! stop with a distinct exit code instead of dialling forever.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use flotilla_identity::{Credentials, JoinString, Refusal, csr, pin};
use flotilla_proto::v1::{
    RecoverRequest, RegisterRequest, registration_client::RegistrationClient,
};

use crate::state_dir::{IdentityFile, StateDir};

/// The hub refused this spoke for good (revoked, deleted, expired beyond the grace,
/// token used up, ...); see `docs/operations.md` for the exit codes.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub refusal: Refusal,
    pub message: String,
}

/// An error from a call to the hub: a [`Refused`] when permanent, else a plain error.
pub(crate) fn call_error(what: &str, status: tonic::Status) -> anyhow::Error {
    let message = format!("{what}: {}", status.message());
    match Refusal::of(&status) {
        Some(refusal) => Refused { refusal, message }.into(),
        None => anyhow::anyhow!(message),
    }
}

/// Registers with the hub at the first of the join string's addresses that answers
/// with the pinned CA, and saves the identity (with every address) in `state`.
pub async fn enroll(
    state: &StateDir,
    join: &JoinString,
    join_text: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    let hubs = join.hubs()?;
    let (hub, ca_der, channel) = reach_pinned(&hubs, &join.ca_sha256).await?;
    let ca_pem = flotilla_identity::der_to_pem(&ca_der);
    let (key_pem, csr_pem) = csr::generate_csr(name)?;
    let resp = RegistrationClient::new(channel)
        .register(RegisterRequest {
            token: join.token.clone(),
            csr_pem,
            requested_name: name.to_string(),
            labels: labels.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .await
        .map_err(|s| call_error("registration refused", s))?
        .into_inner();
    if resp.cluster_id != name {
        bail!("hub registered us as {:?}, not {name:?}", resp.cluster_id);
    }
    let ca_pem = registered_trust(&ca_der, ca_pem, &resp.ca_pem);
    state.save_enrollment(
        &IdentityFile::new(resp.cluster_id, hubs, join_text),
        &key_pem,
        &resp.cert_chain_pem,
        &ca_pem,
    )?;
    tracing::info!(cluster = name, %hub, "enrolled with the hub");
    Ok(())
}

/// The first of `hubs` that presents the CA `ca_sha256` pins, with that CA (DER) and a
/// server-authenticated channel to it. With several addresses, the error names each.
async fn reach_pinned(
    hubs: &[String],
    ca_sha256: &str,
) -> Result<(String, Vec<u8>, tonic::transport::Channel)> {
    let mut failures = Vec::new();
    for hub in hubs {
        let reached = async {
            let ca_der = pin::fetch_pinned_ca(hub, ca_sha256)
                .await
                .context("pinning the hub CA from the join string")?;
            let creds = Credentials {
                ca_pem: flotilla_identity::der_to_pem(&ca_der),
                cert_pem: None,
                key_pem: None,
            };
            let channel = flotilla_identity::connect(hub, &creds).await?;
            anyhow::Ok((ca_der, channel))
        }
        .await;
        match reached {
            Ok((ca_der, channel)) => return Ok((hub.clone(), ca_der, channel)),
            Err(e) if hubs.len() == 1 => return Err(e),
            Err(e) => {
                tracing::warn!(%hub, error = %format!("{e:#}"), "cannot enroll at this hub address; trying the next");
                failures.push(format!("{hub}: {e:#}"));
            }
        }
    }
    bail!(
        "no hub address answered with the pinned CA: {}",
        failures.join("; ")
    )
}

/// What to trust from now on: the hub's whole CA bundle, when it holds the CA the join
/// string pinned (it came over a channel that CA authenticated). A cluster that joins
/// during a CA rotation thus trusts the new CA too, which serves the hub once the old
/// one is retired. Anything else keeps the pinned CA alone.
fn registered_trust(pinned_der: &[u8], pinned_pem: String, bundle_pem: &str) -> String {
    match flotilla_identity::pem_to_ders(bundle_pem) {
        Ok(cas) if cas.iter().any(|c| c.as_slice() == pinned_der) => bundle_pem.to_string(),
        _ => {
            if !bundle_pem.is_empty() {
                tracing::warn!(
                    "the hub's CA bundle does not hold the pinned CA; trusting the pinned CA only"
                );
            }
            pinned_pem
        }
    }
}

/// Trades the expired certificate in `state` for a new one for the same key. The proof
/// is a CSR for the enrolled key, signed by it; the hub checks it against the
/// certificate (`flotilla_identity::recovery`). The hub is authenticated by the CA
/// bundle pinned at enrolment.
pub async fn recover(state: &StateDir, cluster: &str, hub: &str) -> Result<()> {
    let creds = state.credentials()?;
    let (Some(cert_pem), Some(key_pem)) = (creds.cert_pem, creds.key_pem) else {
        bail!("{} holds no certificate to recover", state.path().display());
    };
    let csr_pem = csr::csr_for_key_pem(&key_pem, cluster)?;
    let channel = flotilla_identity::connect(
        hub,
        &Credentials {
            ca_pem: creds.ca_pem,
            cert_pem: None,
            key_pem: None,
        },
    )
    .await?;
    tracing::info!(cluster, %hub, "the client certificate expired; recovering it");
    let resp = RegistrationClient::new(channel)
        .recover(RecoverRequest {
            cert_pem,
            csr_pem,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .await
        .map_err(|s| call_error("certificate recovery refused", s))?
        .into_inner();
    let ders = flotilla_identity::pem_to_ders(&resp.cert_chain_pem)?;
    let leaf = ders.first().context("empty certificate chain")?;
    match flotilla_identity::Identity::from_cert_der(leaf)? {
        flotilla_identity::Identity::Cluster(c) if c.as_str() == cluster => {}
        other => bail!("hub recovered a certificate for {other}, not cluster {cluster}"),
    }
    // The hub's answer, not the old file, is what we trust from now on (a rotation may
    // have happened while we were away).
    flotilla_identity::pem_to_ders(&resp.ca_pem).context("the hub's CA bundle")?;
    state.save_trust(&resp.ca_pem)?;
    state.save_renewed(&key_pem, &resp.cert_chain_pem)?;
    tracing::info!(cluster, "client certificate recovered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_joining_during_a_rotation_trusts_the_hubs_bundle_only_if_it_holds_the_pinned_ca() {
        let (old, _) = flotilla_identity::Ca::generate("old").expect("CA");
        let (new, _) = flotilla_identity::Ca::generate("new").expect("CA");
        let pinned_der = flotilla_identity::pem_to_ders(old.cert_pem()).expect("pem")[0].clone();
        let pinned = || old.cert_pem().to_string();
        let bundle = format!("{}{}", new.cert_pem(), old.cert_pem());
        assert_eq!(registered_trust(&pinned_der, pinned(), &bundle), bundle);
        assert_eq!(
            registered_trust(&pinned_der, pinned(), new.cert_pem()),
            pinned()
        );
        assert_eq!(registered_trust(&pinned_der, pinned(), ""), pinned());
        assert_eq!(
            registered_trust(
                &pinned_der,
                pinned(),
                "-----BEGIN CERTIFICATE-----\ngarbage"
            ),
            pinned()
        );
    }
}
