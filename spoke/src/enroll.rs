//! First start: pin the hub CA from the join string, generate a key locally, and trade a
//! CSR plus the join token for a client certificate.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use flotilla_identity::{Credentials, JoinString, csr, pin};
use flotilla_proto::v1::{RegisterRequest, registration_client::RegistrationClient};

use crate::state_dir::{IdentityFile, StateDir};

pub async fn enroll(
    state: &StateDir,
    join: &JoinString,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    let ca_der = pin::fetch_pinned_ca(&join.hub, &join.ca_sha256)
        .await
        .context("pinning the hub CA from the join string")?;
    let ca_pem = flotilla_identity::der_to_pem(&ca_der);
    let (key_pem, csr_pem) = csr::generate_csr(name)?;
    let channel = flotilla_identity::connect(
        &join.hub,
        &Credentials {
            ca_pem: ca_pem.clone(),
            cert_pem: None,
            key_pem: None,
        },
    )
    .await?;
    let resp = RegistrationClient::new(channel)
        .register(RegisterRequest {
            token: join.token.clone(),
            csr_pem,
            requested_name: name.to_string(),
            labels: labels.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("registration refused: {}", s.message()))?
        .into_inner();
    if resp.cluster_id != name {
        bail!("hub registered us as {:?}, not {name:?}", resp.cluster_id);
    }
    state.save_enrollment(
        &IdentityFile {
            cluster: resp.cluster_id,
            hub: join.hub.clone(),
        },
        &key_pem,
        &resp.cert_chain_pem,
        &ca_pem,
    )?;
    tracing::info!(cluster = name, hub = %join.hub, "enrolled with the hub");
    Ok(())
}
