//! `Registration.Register` and `Registration.Recover` on the wire: requests become
//! `commands::Registration` and `commands::Recovery`; the rules are the commands'.

use std::sync::Arc;

use flotilla_model::ClusterName;
use flotilla_proto::v1::{
    RecoverRequest, RegisterRequest, RegisterResponse, registration_server::Registration,
};
use tonic::{Request, Response, Status};

use crate::commands::{self, Registered};
use crate::fleet::Fleet;

pub struct RegistrationService {
    fleet: Arc<Fleet>,
}

impl RegistrationService {
    pub fn new(fleet: Arc<Fleet>) -> Self {
        RegistrationService { fleet }
    }
}

fn response(r: Registered) -> Response<RegisterResponse> {
    Response::new(RegisterResponse {
        cluster_id: r.name.to_string(),
        cert_chain_pem: r.cert_chain_pem,
        ca_pem: r.ca_pem,
    })
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
        let registered = self
            .fleet
            .register(commands::Registration {
                token: req.token,
                csr_pem: req.csr_pem,
                name,
                labels: req.labels,
                agent_version: req.agent_version,
            })
            .await?;
        Ok(response(registered))
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let req = request.into_inner();
        let recovered = self
            .fleet
            .recover_cluster(commands::Recovery {
                cert_pem: req.cert_pem,
                csr_pem: req.csr_pem,
                agent_version: req.agent_version,
            })
            .await?;
        Ok(response(recovered))
    }
}
