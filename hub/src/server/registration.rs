//! `Registration.Register`: a join token buys a cluster certificate for a CSR.

use std::sync::Arc;

use flotilla_model::{ClusterName, Labels, labels};
use flotilla_proto::v1::{RegisterRequest, RegisterResponse, registration_server::Registration};
use tonic::{Request, Response, Status};

use crate::fleet::{Fleet, Trigger};
use crate::records::{ClusterRecord, now_unix};
use crate::store::{Op, Table};
use crate::tokens;

pub struct RegistrationService {
    fleet: Arc<Fleet>,
}

impl RegistrationService {
    pub fn new(fleet: Arc<Fleet>) -> Self {
        RegistrationService { fleet }
    }
}

fn validate_labels(input: &std::collections::BTreeMap<String, String>) -> Result<Labels, Status> {
    for (k, v) in input {
        labels::validate_key(k)
            .and_then(|_| labels::validate_value(v))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    Ok(input.clone())
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let req = request.into_inner();
        let name = ClusterName::new(&req.requested_name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let spoke_labels = validate_labels(&req.labels)?;
        let (token_id, secret) =
            tokens::parse(&req.token).map_err(|e| Status::unauthenticated(e.to_string()))?;

        // Check and consume the token under one lock so two spokes cannot both take the
        // last use.
        let token_record = {
            let mut tokens = self
                .fleet
                .tokens
                .lock()
                .map_err(|_| Status::internal("token table poisoned"))?;
            let rec = tokens
                .get_mut(token_id)
                .ok_or_else(|| Status::unauthenticated(tokens::TokenError::Unknown.to_string()))?;
            tokens::check(rec, secret, now_unix())
                .map_err(|e| Status::unauthenticated(e.to_string()))?;
            if self.fleet.clusters.contains_key(&name) {
                return Err(Status::already_exists(format!(
                    "cluster {name} is already registered; pick another --name"
                )));
            }
            rec.uses += 1;
            rec.clone()
        };

        let issued = self
            .fleet
            .issue_cluster_cert(&name, &req.csr_pem)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = now_unix();
        let mut record = ClusterRecord {
            name: name.clone(),
            spoke_labels,
            hub_labels: Labels::new(),
            registered_at: now,
            agent_version: req.agent_version,
            last_seen: now,
            serials: Vec::new(),
            cert_expires: 0,
            revoked: false,
            issuer: String::new(),
        };
        record.add_serial(issued.serial, issued.expires, issued.issuer);
        // Durable before we answer: a spoke holding a certificate must exist after a crash.
        self.fleet
            .store
            .commit(vec![
                Op::put_json(Table::Tokens, token_record.id.clone(), &token_record),
                Op::put_json(Table::Clusters, name.as_str(), &record),
            ])
            .await?;
        self.fleet.clusters.insert(name.clone(), record);
        tracing::info!(cluster = %name, token = %token_record.id, "cluster registered");
        self.fleet.trigger(Trigger::Cluster(name.clone()));
        Ok(Response::new(RegisterResponse {
            cluster_id: name.to_string(),
            cert_chain_pem: issued.chain,
            ca_pem: self.fleet.trust_pem.clone(),
        }))
    }
}
