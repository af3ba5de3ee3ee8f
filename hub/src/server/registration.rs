//! `Registration.Register`: a join token buys a cluster certificate for a CSR.
//! `Registration.Recover`: a spoke whose certificate expired while the hub was away
//! proves it holds the certificate's key and gets a new certificate for that key.
//!
//! The name is reserved under the token lock before anything is awaited, so two joins of
//! one name cannot both pass the check. The labels a spoke asks for are *reported*; only
//! the token's labels and the keys it (or the hub) lets the spoke choose are trusted
//! (`label_trust`).

use std::collections::BTreeSet;
use std::sync::Arc;

use flotilla_identity::Refusal;
use flotilla_model::ClusterName;
use flotilla_proto::v1::{
    RecoverRequest, RegisterRequest, RegisterResponse, registration_server::Registration,
};
use tonic::{Request, Response, Status};

use crate::fleet::{EventKind, Fleet, Trigger};
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
        let token_refused =
            |e: tokens::TokenError| Refusal::Token.tag(Status::unauthenticated(e.to_string()));
        let (token_id, secret) = tokens::parse(&req.token).map_err(token_refused)?;

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
                .ok_or_else(|| token_refused(tokens::TokenError::Unknown))?;
            tokens::check(rec, secret, now_unix()).map_err(token_refused)?;
            let mut registering = self
                .fleet
                .registering
                .lock()
                .map_err(|_| Status::internal("registration table poisoned"))?;
            if self.fleet.clusters.contains_key(&name) || registering.contains(&name) {
                return Err(Refusal::NameTaken.tag(Status::already_exists(format!(
                    "cluster {name} is already registered; pick another --name"
                ))));
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
            token_labels: token_record.labels.clone(),
            agent_version: req.agent_version,
            ..ClusterRecord::new(name.clone(), now)
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
            ca_pem: self.fleet.trust_pem(),
        }))
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let req = request.into_inner();
        if req.cert_pem.len() > MAX_RECOVERY_PEM || req.csr_pem.len() > MAX_RECOVERY_PEM {
            return Err(Status::invalid_argument(format!(
                "a recovery certificate or CSR is at most {MAX_RECOVERY_PEM} bytes"
            )));
        }
        let claim = flotilla_identity::verify_recovery(
            &req.cert_pem,
            &req.csr_pem,
            &self.fleet.trust_pem(),
        )
        .map_err(|e| e.refusal.status(format!("recovery refused: {}", e.message)))?;
        let name = claim.cluster.clone();
        let refuse = |r: Refusal, why: String| {
            tracing::warn!(cluster = %name, refusal = %r, "recovery refused: {why}");
            r.status(format!("recovery of cluster {name} refused: {why}"))
        };
        let grace = self.fleet.renewals.policy.recovery_grace;
        if !within_grace(claim.not_after, now_unix(), grace) {
            return Err(refuse(
                Refusal::BeyondGrace,
                format!(
                    "its certificate expired at {}, longer ago than the hub's recovery grace \
                     ({} s); to re-join, ask an admin to run `flotilla cluster delete {name}` \
                     and `flotilla token create`, then start the spoke with --rejoin and the \
                     new join string",
                    crate::records::rfc3339(claim.not_after),
                    grace.as_secs()
                ),
            ));
        }
        let issued = {
            let rec = self.fleet.clusters.get(&name).ok_or_else(|| {
                refuse(
                    Refusal::NotRegistered,
                    "it is not registered with this hub (deleted?)".into(),
                )
            })?;
            if rec.revoked {
                return Err(refuse(
                    Refusal::Revoked,
                    "it has been revoked; an admin must delete it before it can join again".into(),
                ));
            }
            // Only a certificate the hub still honours: a copy of an older one (stolen
            // from a backup, say) cannot buy a new certificate.
            if !rec.serials.contains(&claim.serial) {
                return Err(refuse(
                    Refusal::Superseded,
                    format!(
                        "certificate {} is not its current one (superseded or revoked)",
                        claim.serial
                    ),
                ));
            }
            drop(rec);
            self.fleet
                .issue_cluster_cert(&name, &req.csr_pem)
                .map_err(|e| Status::invalid_argument(e.to_string()))?
        };
        let record = {
            let mut rec = self
                .fleet
                .clusters
                .get_mut(&name)
                .ok_or_else(|| refuse(Refusal::NotRegistered, "it was deleted".into()))?;
            rec.add_serial(issued.serial.clone(), issued.expires, issued.issuer);
            rec.agent_version = req.agent_version.chars().take(64).collect();
            rec.clone()
        };
        // Durable before we answer, as at registration and renewal.
        self.fleet
            .store
            .commit(vec![Op::put_json(Table::Clusters, name.as_str(), &record)])
            .await?;
        tracing::info!(
            cluster = %name,
            expired = %crate::records::rfc3339(claim.not_after),
            serial = %issued.serial,
            "expired certificate recovered"
        );
        self.fleet.emit_cluster(
            EventKind::ClusterRecovered,
            &name,
            "expired certificate recovered",
        );
        Ok(Response::new(RegisterResponse {
            cluster_id: name.to_string(),
            cert_chain_pem: issued.chain,
            ca_pem: self.fleet.trust_pem(),
        }))
    }
}

/// Whether a certificate that expired at `not_after` may still be recovered at `now`
/// (unix seconds). A certificate that has not expired yet always may.
fn within_grace(not_after: i64, now: i64, grace: std::time::Duration) -> bool {
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    now.saturating_sub(not_after) <= grace
}

/// A cluster certificate chain or a CSR is about a kilobyte; anything far larger is not one.
const MAX_RECOVERY_PEM: usize = 16 * 1024;

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
            labels: flotilla_model::Labels::new(),
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

    fn recover_request(cert: &str, key: &str) -> Request<RecoverRequest> {
        Request::new(RecoverRequest {
            cert_pem: cert.to_string(),
            csr_pem: flotilla_identity::csr::csr_for_key_pem(key, "edge").expect("CSR"),
            agent_version: "test".into(),
        })
    }

    fn refusal_of(result: Result<Response<RegisterResponse>, Status>) -> Refusal {
        let status = result.expect_err("refused");
        Refusal::of(&status).unwrap_or_else(|| panic!("not a named refusal: {status:?}"))
    }

    #[tokio::test]
    async fn a_certificate_is_recovered_by_the_holder_of_its_key_only_while_it_is_current() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fleet = fleet(tmp.path());
        let service = RegistrationService::new(fleet.clone());
        let (_, token) = token(&fleet);
        let (key, csr) = flotilla_identity::csr::generate_csr("edge").expect("CSR");
        let first = service
            .register(request(&token, "edge", &csr))
            .await
            .expect("registered")
            .into_inner()
            .cert_chain_pem;

        let second = service
            .recover(recover_request(&first, &key))
            .await
            .expect("recovered")
            .into_inner();
        assert_eq!(second.cluster_id, "edge");
        let name = ClusterName::new("edge").expect("name");
        assert_eq!(fleet.clusters.get(&name).expect("record").serials.len(), 2);

        // Whoever holds the certificate but not its key.
        let (other_key, _) = flotilla_identity::csr::generate_csr("edge").expect("CSR");
        let wrong = service
            .recover(recover_request(&second.cert_chain_pem, &other_key))
            .await;
        assert_eq!(refusal_of(wrong), Refusal::WrongKey);

        // Two issues later, the first certificate is no longer honoured.
        let third = service
            .recover(recover_request(&second.cert_chain_pem, &key))
            .await
            .expect("recovered again")
            .into_inner();
        let stale = service.recover(recover_request(&first, &key)).await;
        assert_eq!(refusal_of(stale), Refusal::Superseded);

        if let Some(mut rec) = fleet.clusters.get_mut(&name) {
            rec.revoked = true;
        }
        let revoked = service
            .recover(recover_request(&third.cert_chain_pem, &key))
            .await;
        assert_eq!(refusal_of(revoked), Refusal::Revoked);

        fleet.clusters.remove(&name);
        let deleted = service
            .recover(recover_request(&third.cert_chain_pem, &key))
            .await;
        assert_eq!(refusal_of(deleted), Refusal::NotRegistered);

        // A certificate from another hub's CA.
        let (stranger, _) = flotilla_identity::Ca::generate("other hub").expect("CA");
        let (key, csr) = flotilla_identity::csr::generate_csr("edge").expect("CSR");
        let foreign = stranger
            .sign_csr(
                &csr,
                &flotilla_identity::Identity::Cluster(name),
                std::time::Duration::from_secs(60),
            )
            .expect("signed");
        let foreign = service.recover(recover_request(&foreign, &key)).await;
        assert_eq!(refusal_of(foreign), Refusal::UnknownIssuer);
    }

    #[test]
    fn the_recovery_grace_counts_from_expiry() {
        let day = std::time::Duration::from_secs(24 * 3600);
        let expired = 1_000_000;
        assert!(within_grace(expired, expired - 10, day), "not expired yet");
        assert!(within_grace(expired, expired + 24 * 3600, day));
        assert!(!within_grace(expired, expired + 24 * 3600 + 1, day));
        assert!(!within_grace(
            expired,
            expired + 1,
            std::time::Duration::ZERO
        ));
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
