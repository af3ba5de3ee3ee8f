//! `Registration.Register`: a join token buys a cluster certificate for a CSR.
//!
//! The name is reserved under the token lock before anything is awaited, so two joins of
//! one name cannot both pass the check. The labels a spoke asks for are *reported*; only
//! the token's labels and the keys it (or the hub) lets the spoke choose are trusted
//! (`label_trust`).

use std::collections::BTreeSet;
use std::sync::Arc;

use flotilla_model::{ClusterName, Labels};
use flotilla_proto::v1::{RegisterRequest, RegisterResponse, registration_server::Registration};
use tonic::{Request, Response, Status};

use crate::fleet::{Fleet, Trigger};
use crate::label_trust;
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

/// A name taken for a registration in flight, with the token use it consumed. Dropped
/// without `registered()` (a bad CSR, a failed commit, a cancelled call), it frees the
/// name and gives the use back, so memory matches what the store holds.
struct Reservation<'a> {
    fleet: &'a Fleet,
    name: ClusterName,
    token_id: String,
    registered: bool,
}

impl Reservation<'_> {
    fn registered(mut self) {
        self.registered = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        // Lock order as in `register`: tokens, then registering.
        if !self.registered
            && let Ok(mut tokens) = self.fleet.tokens.lock()
            && let Some(rec) = tokens.get_mut(&self.token_id)
        {
            rec.uses = rec.uses.saturating_sub(1);
        }
        if let Ok(mut names) = self.fleet.registering.lock() {
            names.remove(&self.name);
        }
    }
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
        label_trust::validate_report(&req.labels).map_err(Status::invalid_argument)?;
        let requested_labels = req.labels;
        let (token_id, secret) =
            tokens::parse(&req.token).map_err(|e| Status::unauthenticated(e.to_string()))?;

        // Check the token, check and reserve the name, and consume a use, all under one
        // lock: two spokes can neither both take the last use nor both take one name.
        let (token_record, reservation) = {
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
            let mut registering = self
                .fleet
                .registering
                .lock()
                .map_err(|_| Status::internal("registration table poisoned"))?;
            if self.fleet.clusters.contains_key(&name) || registering.contains(&name) {
                return Err(Status::already_exists(format!(
                    "cluster {name} is already registered; pick another --name"
                )));
            }
            registering.insert(name.clone());
            rec.uses += 1;
            let reservation = Reservation {
                fleet: &self.fleet,
                name: name.clone(),
                token_id: rec.id.clone(),
                registered: false,
            };
            (rec.clone(), reservation)
        };

        let issued = self
            .fleet
            .issue_cluster_cert(&name, &req.csr_pem)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = now_unix();
        let mut record = ClusterRecord {
            name: name.clone(),
            accepted_labels: Labels::new(),
            reported_labels: Labels::new(),
            token_labels: token_record.labels.clone(),
            hub_labels: Labels::new(),
            registered_at: now,
            agent_version: req.agent_version,
            last_seen: now,
            serials: Vec::new(),
            cert_expires: 0,
            revoked: false,
            issuer: String::new(),
            capabilities: None,
        };
        // At registration the spoke may choose the keys its token names, besides the
        // hub's self-label keys; later Hellos get only the hub's.
        let self_keys: BTreeSet<String> = self
            .fleet
            .self_label_keys
            .iter()
            .chain(&token_record.spoke_label_keys)
            .cloned()
            .collect();
        label_trust::report(&mut record, &requested_labels, &self_keys);
        record.add_serial(issued.serial, issued.expires, issued.issuer);
        // Durable before we answer: a spoke holding a certificate must exist after a crash.
        self.fleet
            .store
            .commit(vec![
                Op::put_json(Table::Tokens, token_record.id.clone(), &token_record),
                Op::put_json(Table::Clusters, name.as_str(), &record),
            ])
            .await?;
        // In the map before the reservation goes, so the name is never free in between.
        self.fleet.clusters.insert(name.clone(), record);
        reservation.registered();
        tracing::info!(cluster = %name, token = %token_record.id, "cluster registered");
        self.fleet.trigger(Trigger::Cluster(name.clone()));
        Ok(Response::new(RegisterResponse {
            cluster_id: name.to_string(),
            cert_chain_pem: issued.chain,
            ca_pem: self.fleet.trust_pem.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const ROUNDS: usize = 40;

    fn fleet(dir: &std::path::Path) -> Arc<Fleet> {
        Fleet::for_tests(dir).0
    }

    /// A fresh token with uses to spare, so only the name can stop a registration.
    fn token(fleet: &Fleet) -> (String, String) {
        let (rec, token) = tokens::generate(3600, 5, "race", now_unix());
        let id = rec.id.clone();
        fleet
            .tokens
            .lock()
            .expect("tokens lock")
            .insert(id.clone(), rec);
        (id, token)
    }

    fn uses(fleet: &Fleet, id: &str) -> u32 {
        fleet.tokens.lock().expect("tokens lock")[id].uses
    }

    fn request(token: &str, name: &str, csr: &str) -> Request<RegisterRequest> {
        Request::new(RegisterRequest {
            token: token.to_string(),
            csr_pem: csr.to_string(),
            requested_name: name.to_string(),
            labels: Labels::new(),
            agent_version: "test".into(),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_spokes_racing_for_one_name_with_different_tokens_register_it_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fleet = fleet(tmp.path());
        let service = Arc::new(RegistrationService::new(fleet.clone()));
        let (_key, csr) = flotilla_identity::csr::generate_csr("racer").expect("CSR");
        for round in 0..ROUNDS {
            let name = format!("race-{round}");
            let tokens = [token(&fleet), token(&fleet)];
            let barrier = Arc::new(tokio::sync::Barrier::new(tokens.len()));
            let calls: Vec<_> = tokens
                .iter()
                .map(|(_, token)| {
                    let (service, barrier) = (service.clone(), barrier.clone());
                    let req = request(token, &name, &csr);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        service.register(req).await
                    })
                })
                .collect();
            let mut codes = Vec::new();
            for call in calls {
                let result = call.await.expect("registration task");
                codes.push(result.map(|_| Code::Ok).unwrap_or_else(|s| s.code()));
            }
            codes.sort_by_key(|c| *c as i32);
            assert_eq!(codes, [Code::Ok, Code::AlreadyExists], "round {round}");
            let consumed: u32 = tokens.iter().map(|(id, _)| uses(&fleet, id)).sum();
            assert_eq!(consumed, 1, "round {round}: one use for one name");
        }
        assert_eq!(fleet.clusters.len(), ROUNDS);
        assert!(fleet.registering.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn a_failed_registration_frees_the_name_and_gives_the_token_use_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fleet = fleet(tmp.path());
        let service = RegistrationService::new(fleet.clone());
        let (id, token) = token(&fleet);
        let err = service
            .register(request(&token, "edge", "not a CSR"))
            .await
            .expect_err("a bad CSR is refused");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(uses(&fleet, &id), 0);
        assert!(fleet.registering.lock().expect("lock").is_empty());

        let (_key, csr) = flotilla_identity::csr::generate_csr("edge").expect("CSR");
        service
            .register(request(&token, "edge", &csr))
            .await
            .expect("the name is free again");
        assert_eq!(uses(&fleet, &id), 1);
    }
}
