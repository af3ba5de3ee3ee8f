//! How a cluster gets and keeps a certificate: `register` (a join token buys one),
//! `recover` (the holder of an expired certificate's key gets a new one within the
//! grace), and `renew_cluster_cert` (a new key over the open stream).
//!
//! `register` is safe when several hub replicas share one store: the token's use and
//! the cluster's name are taken in one compare-and-swap (the token record at the
//! revision that was checked, the cluster key absent), so two replicas can neither both
//! register one name nor both spend a token's last use. Memory is not consulted for
//! either; it is only told once the store has the cluster.
//!
//! The labels a spoke asks for are *reported*; only the token's labels and the keys it
//! (or the hub) lets the spoke choose are trusted (`label_trust`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use flotilla_identity::Refusal;
use flotilla_model::{ClusterName, Labels};

use super::{CommandError, invalid};
use crate::fleet::{EventKind, Fleet, IssuedClusterCert, Trigger};
use crate::label_trust;
use crate::records::{ClusterRecord, TokenRecord, now_unix, rfc3339};
use crate::store::{CasOutcome, Cond, Op, Revision, StoreError, Table};
use crate::tokens::{self, TokenError};
use tokio::sync::oneshot;

/// A spoke's request to join.
#[derive(Debug, Clone)]
pub struct Registration {
    /// `ID.SECRET`, as the join string carries it.
    pub token: String,
    pub csr_pem: String,
    pub name: ClusterName,
    /// What the spoke says about itself: reported, trusted only as `label_trust` says.
    pub labels: Labels,
    pub agent_version: String,
}

/// A spoke's request for a new certificate after its own expired.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub cert_pem: String,
    pub csr_pem: String,
    pub agent_version: String,
}

impl RegistrationQueue {
    fn push(&self, p: PendingRegistration) {
        match self.0.lock() {
            Ok(mut q) => q.push(p),
            Err(poisoned) => poisoned.into_inner().push(p),
        }
    }

    /// Up to `n` of the oldest waiting registrations.
    fn take(&self, n: usize) -> Vec<PendingRegistration> {
        let mut q = match self.0.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        let n = n.min(q.len());
        q.drain(..n).collect()
    }
}

/// What a spoke takes away from `register` or `recover`.
#[derive(Debug, Clone)]
pub struct Registered {
    pub name: ClusterName,
    pub cert_chain_pem: String,
    /// Every CA the hub trusts now.
    pub ca_pem: String,
}

/// How many times `register` reads a token again after another registration spent a use
/// of it first; each retry means another spoke made progress.
const MAX_TOKEN_RACES: usize = 16;

/// A cluster certificate chain or a CSR is about a kilobyte; anything far larger is not one.
const MAX_RECOVERY_PEM: usize = 16 * 1024;

/// An agent version is shown, not parsed: bounded, not checked.
fn agent_version(v: &str) -> String {
    v.chars().take(64).collect()
}

fn token_refused(e: TokenError) -> CommandError {
    CommandError::Refused(Refusal::Token, e.to_string())
}

fn name_taken(name: &ClusterName) -> CommandError {
    CommandError::Refused(
        Refusal::NameTaken,
        format!("cluster {name} is already registered; pick another --name"),
    )
}

/// A registration whose token, name and certificate are checked and ready, waiting to
/// be committed by whichever registration holds the order lock next.
pub(crate) struct PendingRegistration {
    token_id: String,
    secret: String,
    record: ClusterRecord,
    done: oneshot::Sender<Result<(), CommandError>>,
}

/// Registrations waiting for the order lock (`Fleet::registrations`). The holder commits
/// up to [`MAX_BATCH`] of them in one compare-and-swap: a storm of spokes joining with
/// one token costs one durable write per batch, not one per spoke.
#[derive(Default)]
pub(crate) struct RegistrationQueue(Mutex<Vec<PendingRegistration>>);

/// Registrations per compare-and-swap: two conditions and two writes each at most,
/// well inside etcd's 128 operations per transaction.
const MAX_BATCH: usize = 32;

impl Fleet {
    /// `Registration.Register`: checks the token, spends one use of it, takes the name,
    /// issues the certificate and persists the cluster, or does none of it.
    ///
    /// The token is checked as stored before anything is signed. The use and the name
    /// are then taken in a compare-and-swap, with other registrations queued meanwhile
    /// (`commit_registrations`).
    pub async fn register(self: &Arc<Self>, req: Registration) -> Result<Registered, CommandError> {
        label_trust::validate_report(&req.labels).map_err(invalid)?;
        let (token_id, secret) = tokens::parse(&req.token).map_err(token_refused)?;
        let (token, _) = self
            .stored_token(token_id)
            .await?
            .ok_or_else(|| token_refused(TokenError::Unknown))?;
        tokens::check(&token, secret, now_unix()).map_err(token_refused)?;
        if self.clusters.contains_key(&req.name) {
            return Err(name_taken(&req.name));
        }
        // Signed off the order lock, so a storm signs on every core. A certificate whose
        // serial is never stored is refused everywhere, so a lost race wastes nothing.
        let cert = self
            .issue_cluster_cert(&req.name, &req.csr_pem)
            .map_err(invalid)?;
        let record = new_cluster(self, &req, &token, &cert);
        let (done, result) = oneshot::channel();
        self.registrations.push(PendingRegistration {
            token_id: token_id.to_string(),
            secret: secret.to_string(),
            record,
            done,
        });
        // A task of its own: the batch it commits holds other spokes' registrations, which
        // must be answered even if this caller goes away mid-commit.
        let fleet = self.clone();
        tokio::spawn(async move {
            let _order = fleet.order.lock().await;
            fleet.commit_registrations().await;
        });
        result
            .await
            .map_err(|_| CommandError::Internal("registration dropped unanswered".into()))??;
        tracing::info!(cluster = %req.name, token = %token_id, "cluster registered");
        Ok(Registered {
            name: req.name,
            cert_chain_pem: cert.chain,
            ca_pem: self.trust_pem(),
        })
    }

    /// Commits the queued registrations, a batch at a time, and answers each. Call it
    /// under the order lock. A batch that another replica raced (its swap is refused)
    /// is committed one registration at a time.
    async fn commit_registrations(&self) {
        loop {
            let batch = self.registrations.take(MAX_BATCH);
            if batch.is_empty() {
                return;
            }
            // Whoever gave up waiting is not registered behind its back.
            let batch: Vec<_> = batch.into_iter().filter(|p| !p.done.is_closed()).collect();
            let mut accepted = Vec::new();
            let mut tokens: BTreeMap<String, Option<(TokenRecord, Revision)>> = BTreeMap::new();
            let mut names = BTreeSet::new();
            for p in batch {
                if !tokens.contains_key(&p.token_id) {
                    match self.stored_token(&p.token_id).await {
                        Ok(t) => tokens.insert(p.token_id.clone(), t),
                        Err(e) => {
                            let _ = p.done.send(Err(e));
                            continue;
                        }
                    };
                }
                let verdict = match tokens.get_mut(&p.token_id).and_then(Option::as_mut) {
                    None => Err(token_refused(TokenError::Unknown)),
                    Some((token, _)) => tokens::check(token, &p.secret, now_unix())
                        .map_err(token_refused)
                        .and_then(|()| {
                            let name = &p.record.name;
                            if self.clusters.contains_key(name) || !names.insert(name.clone()) {
                                return Err(name_taken(name));
                            }
                            token.uses = token.uses.saturating_add(1);
                            Ok(())
                        }),
                };
                match verdict {
                    Ok(()) => accepted.push(p),
                    Err(e) => {
                        let _ = p.done.send(Err(e));
                    }
                }
            }
            if accepted.is_empty() {
                continue;
            }
            let mut conds = Vec::new();
            let mut ops = Vec::new();
            for (id, (token, revision)) in
                tokens.iter().filter_map(|(id, t)| Some((id, t.as_ref()?)))
            {
                if accepted.iter().any(|p| p.token_id == *id) {
                    conds.push(Cond::at_revision(Table::Tokens, id.as_str(), *revision));
                    ops.push(Op::put_json(Table::Tokens, id.as_str(), token));
                }
            }
            for p in &accepted {
                conds.push(Cond::absent(Table::Clusters, p.record.name.as_str()));
                ops.push(Op::put_json(
                    Table::Clusters,
                    p.record.name.as_str(),
                    &p.record,
                ));
            }
            match self.store.compare_and_swap(conds, ops).await {
                Ok(CasOutcome::Applied(_)) => {
                    for p in accepted {
                        self.registered(p.record);
                        let _ = p.done.send(Ok(()));
                    }
                }
                Ok(CasOutcome::Refused { .. }) => {
                    for p in accepted {
                        let result = self.register_one(&p).await;
                        let _ = p.done.send(result);
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for p in accepted {
                        let _ = p
                            .done
                            .send(Err(CommandError::Store(StoreError::Shared(e.clone()))));
                    }
                }
            }
        }
    }

    /// One registration in a compare-and-swap of its own, checking its token again as
    /// it is now after each refusal that was not about its name.
    async fn register_one(&self, p: &PendingRegistration) -> Result<(), CommandError> {
        let name = &p.record.name;
        for _ in 0..MAX_TOKEN_RACES {
            let (token, revision) = self
                .stored_token(&p.token_id)
                .await?
                .ok_or_else(|| token_refused(TokenError::Unknown))?;
            tokens::check(&token, &p.secret, now_unix()).map_err(token_refused)?;
            if self.clusters.contains_key(name) {
                return Err(name_taken(name));
            }
            let spent = TokenRecord {
                uses: token.uses.saturating_add(1),
                ..token
            };
            let outcome = self
                .store
                .compare_and_swap(
                    vec![
                        Cond::at_revision(Table::Tokens, p.token_id.as_str(), revision),
                        Cond::absent(Table::Clusters, name.as_str()),
                    ],
                    vec![
                        Op::put_json(Table::Tokens, p.token_id.as_str(), &spent),
                        Op::put_json(Table::Clusters, name.as_str(), &p.record),
                    ],
                )
                .await?;
            match outcome {
                CasOutcome::Applied(_) => {
                    self.registered(p.record.clone());
                    return Ok(());
                }
                // Another replica took the name.
                CasOutcome::Refused { current } if current.get(1).is_some_and(Option::is_some) => {
                    return Err(name_taken(name));
                }
                // The token changed meanwhile (a use spent elsewhere, a revocation).
                CasOutcome::Refused { .. } => {}
            }
        }
        Err(CommandError::Internal(format!(
            "registering cluster {name}: token {} changed {MAX_TOKEN_RACES} times while it \
             was checked; try again",
            p.token_id
        )))
    }

    /// A cluster the store now holds joins memory and is reconciled.
    fn registered(&self, record: ClusterRecord) {
        let name = record.name.clone();
        self.clusters.insert(name.clone(), record);
        self.trigger(Trigger::Cluster(name));
    }

    /// `Registration.Recover`: a spoke whose certificate expired while the hub was away
    /// proves it holds the certificate's key and gets a new certificate for that key.
    pub async fn recover_cluster(&self, req: Recovery) -> Result<Registered, CommandError> {
        if req.cert_pem.len() > MAX_RECOVERY_PEM || req.csr_pem.len() > MAX_RECOVERY_PEM {
            return Err(invalid(format!(
                "a recovery certificate or CSR is at most {MAX_RECOVERY_PEM} bytes"
            )));
        }
        let claim =
            flotilla_identity::verify_recovery(&req.cert_pem, &req.csr_pem, &self.trust_pem())
                .map_err(|e| {
                    CommandError::Refused(e.refusal, format!("recovery refused: {}", e.message))
                })?;
        let name = claim.cluster.clone();
        let refuse = |r: Refusal, why: String| {
            tracing::warn!(cluster = %name, refusal = %r, "recovery refused: {why}");
            CommandError::Refused(r, format!("recovery of cluster {name} refused: {why}"))
        };
        let grace = self.renewals.policy.recovery_grace;
        if !within_grace(claim.not_after, now_unix(), grace) {
            return Err(refuse(
                Refusal::BeyondGrace,
                format!(
                    "its certificate expired at {}, longer ago than the hub's recovery grace \
                     ({} s); to re-join, ask an admin to run `flotilla cluster delete {name}` \
                     and `flotilla token create`, then start the spoke with --rejoin and the \
                     new join string",
                    rfc3339(claim.not_after),
                    grace.as_secs()
                ),
            ));
        }
        // Checked, signed and recorded under the record's entry: a revocation or a
        // renewal in between cannot be missed.
        let mut issued: Option<IssuedClusterCert> = None;
        let edited = self
            .edit_cluster(&name, |rec| {
                if rec.revoked {
                    return Err(refuse(
                        Refusal::Revoked,
                        "it has been revoked; an admin must delete it before it can join again"
                            .into(),
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
                let cert = self
                    .issue_cluster_cert(&name, &req.csr_pem)
                    .map_err(invalid)?;
                rec.add_serial(cert.serial.clone(), cert.expires, cert.issuer.clone());
                rec.agent_version = agent_version(&req.agent_version);
                issued = Some(cert);
                Ok(())
            })
            .map_err(|e| match e {
                CommandError::NotFound(_) => refuse(
                    Refusal::NotRegistered,
                    "it is not registered with this hub (deleted?)".into(),
                ),
                e => e,
            });
        let (_, durable) = edited?;
        let issued =
            issued.ok_or_else(|| CommandError::Internal("no certificate issued".into()))?;
        // Durable before we answer, as at registration and renewal.
        durable.await?;
        tracing::info!(
            cluster = %name,
            expired = %rfc3339(claim.not_after),
            serial = %issued.serial,
            "expired certificate recovered"
        );
        self.emit_cluster(
            EventKind::ClusterRecovered,
            &name,
            "expired certificate recovered",
        );
        Ok(Registered {
            name,
            cert_chain_pem: issued.chain,
            ca_pem: self.trust_pem(),
        })
    }

    /// A `Renew` on the open stream: a certificate for the spoke's new key. The new
    /// serial is durable before the certificate is returned, so a crash cannot strand
    /// the spoke.
    pub async fn renew_cluster_cert(
        &self,
        name: &ClusterName,
        csr_pem: &str,
    ) -> Result<IssuedClusterCert, CommandError> {
        let issued = self.issue_cluster_cert(name, csr_pem).map_err(invalid)?;
        let (_, durable) = self
            .edit_cluster(name, |rec| {
                rec.add_serial(issued.serial.clone(), issued.expires, issued.issuer.clone());
                Ok(())
            })
            .map_err(|_| {
                CommandError::Refused(
                    Refusal::NotRegistered,
                    format!("cluster {name} was deleted"),
                )
            })?;
        durable.await?;
        tracing::info!(cluster = %name, serial = %issued.serial, "certificate renewed");
        self.renewals.clear(name);
        Ok(issued)
    }
}

impl Fleet {
    /// Whether certificate `serial` of cluster `name` may connect now: the cluster is
    /// registered, not revoked, and the serial is one of its current two. Each refusal is
    /// named (`Refusal`), so the spoke stops instead of redialling.
    pub fn check_cluster_cert(&self, name: &ClusterName, serial: &str) -> Result<(), CommandError> {
        let rec = self.clusters.get(name).ok_or_else(|| {
            CommandError::Refused(
                Refusal::NotRegistered,
                format!("cluster {name} is not registered with this hub"),
            )
        })?;
        if rec.revoked {
            return Err(CommandError::Refused(
                Refusal::Revoked,
                format!(
                    "cluster {name} has been revoked; an admin must delete it before it can join again"
                ),
            ));
        }
        if !rec.serials.iter().any(|s| s == serial) {
            return Err(CommandError::Refused(
                Refusal::Superseded,
                format!("this certificate of cluster {name} has been superseded or revoked"),
            ));
        }
        Ok(())
    }
}

/// The record of a cluster joining with `token`: the token's labels, the reported ones
/// and the keys the spoke may choose (the hub's self-label keys and, at registration
/// only, the token's), and the new certificate.
fn new_cluster(
    fleet: &Fleet,
    req: &Registration,
    token: &TokenRecord,
    cert: &IssuedClusterCert,
) -> ClusterRecord {
    let mut record = ClusterRecord {
        token_labels: token.labels.clone(),
        agent_version: agent_version(&req.agent_version),
        ..ClusterRecord::new(req.name.clone(), now_unix())
    };
    let self_keys: BTreeSet<String> = fleet
        .self_label_keys
        .iter()
        .chain(&token.spoke_label_keys)
        .cloned()
        .collect();
    label_trust::report(&mut record, &req.labels, &self_keys);
    record.add_serial(cert.serial.clone(), cert.expires, cert.issuer.clone());
    record
}

/// Whether a certificate that expired at `not_after` may still be recovered at `now`
/// (unix seconds). A certificate that has not expired yet always may.
fn within_grace(not_after: i64, now: i64, grace: std::time::Duration) -> bool {
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    now.saturating_sub(not_after) <= grace
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::commands::NewToken;
    use crate::store::{Store, StoreUrl};

    const ROUNDS: usize = 20;

    /// Two hub replicas: two fleets with their own memory over one store.
    async fn replicas(dir: &std::path::Path, url: &StoreUrl) -> [Arc<Fleet>; 2] {
        crate::pki::init(&crate::layout::DataDir::new(dir), "127.0.0.1:1").expect("test PKI");
        let (store, snapshot) = Store::connect(url, dir).await.expect("store");
        let a = Fleet::for_tests_on(dir, store.clone(), &snapshot).0;
        let b = Fleet::for_tests_on(dir, store, &snapshot).0;
        [a, b]
    }

    async fn token(fleet: &Fleet, max_uses: u32) -> (String, String) {
        let created = fleet
            .create_token(NewToken {
                ttl_secs: 3600,
                max_uses,
                description: "race".into(),
                ..Default::default()
            })
            .await
            .expect("token");
        let join: flotilla_identity::JoinString = created.join.parse().expect("join string");
        (created.record.id, join.token)
    }

    async fn uses(fleet: &Fleet, id: &str) -> u32 {
        let tokens = fleet.list_tokens().await.expect("tokens");
        tokens.iter().find(|t| t.id == id).map_or(0, |t| t.uses)
    }

    fn request(token: &str, name: &str, csr: &str) -> Registration {
        Registration {
            token: token.to_string(),
            csr_pem: csr.to_string(),
            name: ClusterName::new(name).expect("name"),
            labels: Labels::new(),
            agent_version: "test".into(),
        }
    }

    /// Runs the registrations at once (one per replica) and returns their outcomes.
    async fn race(calls: Vec<(Arc<Fleet>, Registration)>) -> Vec<Result<Registered, CommandError>> {
        let barrier = Arc::new(tokio::sync::Barrier::new(calls.len()));
        let tasks: Vec<_> = calls
            .into_iter()
            .map(|(fleet, req)| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    fleet.register(req).await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("registration task"));
        }
        out
    }

    fn refusals(results: &[Result<Registered, CommandError>]) -> Vec<Option<Refusal>> {
        let mut r: Vec<Option<Refusal>> = results
            .iter()
            .map(|r| match r {
                Ok(_) => None,
                Err(CommandError::Refused(why, _)) => Some(*why),
                Err(e) => panic!("neither registered nor refused: {e}"),
            })
            .collect();
        r.sort_by_key(|r| r.map(Refusal::as_str));
        r
    }

    /// Two replicas race for one name with two tokens, then for two names with one
    /// single-use token: each time exactly one registers, and exactly one use is spent.
    async fn replicas_sharing_a_store_register_once(url: StoreUrl) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let [a, b] = replicas(tmp.path(), &url).await;
        let (_key, csr) = flotilla_identity::csr::generate_csr("racer").expect("CSR");
        for round in 0..ROUNDS {
            let name = format!("name-race-{round}");
            let (t1, t2) = (token(&a, 5).await, token(&b, 5).await);
            let results = race(vec![
                (a.clone(), request(&t1.1, &name, &csr)),
                (b.clone(), request(&t2.1, &name, &csr)),
            ])
            .await;
            assert_eq!(
                refusals(&results),
                [None, Some(Refusal::NameTaken)],
                "round {round}"
            );
            let spent = uses(&a, &t1.0).await + uses(&a, &t2.0).await;
            assert_eq!(spent, 1, "round {round}: one use for one name");

            let (id, single) = token(&a, 1).await;
            let names = [format!("left-{round}"), format!("right-{round}")];
            let results = race(vec![
                (a.clone(), request(&single, &names[0], &csr)),
                (b.clone(), request(&single, &names[1], &csr)),
            ])
            .await;
            assert_eq!(
                refusals(&results),
                [None, Some(Refusal::Token)],
                "round {round}"
            );
            assert_eq!(uses(&b, &id).await, 1, "round {round}");
            let stored = a.store.range(Table::Clusters, "").await.expect("range");
            let joined = names
                .iter()
                .filter(|n| stored.entries.iter().any(|e| e.key == **n))
                .count();
            assert_eq!(joined, 1, "round {round}: one of {names:?} is stored");
        }
        // Each replica knows the clusters it registered itself, and no more.
        assert_eq!(a.clusters.len() + b.clusters.len(), 2 * ROUNDS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_on_one_redb_store_never_register_a_name_or_spend_a_use_twice() {
        replicas_sharing_a_store_register_once(StoreUrl::Redb).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_on_one_etcd_never_register_a_name_or_spend_a_use_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(etcd) = flotilla_e2e::etcd::EtcdServer::start(dir.path()) else {
            eprintln!("skipped: no etcd binary (set ETCD or run tests/k8s/tools/build etcd)");
            return;
        };
        let url = StoreUrl::Etcd(
            crate::store::EtcdConfig::parse(&etcd.endpoint).expect("endpoint parses"),
        );
        replicas_sharing_a_store_register_once(url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_storm_on_one_hub_spends_exactly_the_uses_a_token_has_and_takes_each_name_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fleet = Fleet::for_tests(tmp.path()).0;
        let (id, token) = token(&fleet, 10).await;
        let (_key, csr) = flotilla_identity::csr::generate_csr("storm").expect("CSR");
        // 24 spokes, every name asked for twice: batches of queued registrations.
        let calls = (0..24)
            .map(|i| {
                (
                    fleet.clone(),
                    request(&token, &format!("storm-{}", i / 2), &csr),
                )
            })
            .collect();
        let results = race(calls).await;
        let joined: BTreeSet<String> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|r| r.name.to_string()))
            .collect();
        let refused = refusals(&results);
        assert_eq!(joined.len(), 10, "{refused:?}");
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            10,
            "each name once"
        );
        assert!(
            refused
                .iter()
                .flatten()
                .all(|r| matches!(r, Refusal::Token | Refusal::NameTaken)),
            "{refused:?}"
        );
        assert_eq!(uses(&fleet, &id).await, 10);
        let stored = fleet.store.range(Table::Clusters, "").await.expect("range");
        assert_eq!(stored.entries.len(), 10);
    }

    #[tokio::test]
    async fn a_failed_registration_leaves_the_name_free_and_the_token_unspent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fleet = Fleet::for_tests(tmp.path()).0;
        let (id, token) = token(&fleet, 5).await;
        let err = fleet
            .register(request(&token, "edge", "not a CSR"))
            .await
            .expect_err("a bad CSR is refused");
        assert!(matches!(err, CommandError::Invalid(_)), "{err}");
        assert_eq!(uses(&fleet, &id).await, 0);

        let (_key, csr) = flotilla_identity::csr::generate_csr("edge").expect("CSR");
        fleet
            .register(request(&token, "edge", &csr))
            .await
            .expect("the name is free");
        assert_eq!(uses(&fleet, &id).await, 1);

        fleet.revoke_token(&id).await.expect("revoked");
        let revoked = fleet.register(request(&token, "edge2", &csr)).await;
        assert!(
            matches!(revoked, Err(CommandError::Refused(Refusal::Token, _))),
            "{revoked:?}"
        );
    }

    fn recovery(cert: &str, key: &str) -> Recovery {
        Recovery {
            cert_pem: cert.to_string(),
            csr_pem: flotilla_identity::csr::csr_for_key_pem(key, "edge").expect("CSR"),
            agent_version: "test".into(),
        }
    }

    fn refusal_of(result: Result<Registered, CommandError>) -> Refusal {
        match result {
            Err(CommandError::Refused(r, _)) => r,
            other => panic!("not a named refusal: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_certificate_is_recovered_by_the_holder_of_its_key_only_while_it_is_current() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fleet = Fleet::for_tests(tmp.path()).0;
        let (_, token) = token(&fleet, 5).await;
        let (key, csr) = flotilla_identity::csr::generate_csr("edge").expect("CSR");
        let first = fleet
            .register(request(&token, "edge", &csr))
            .await
            .expect("registered")
            .cert_chain_pem;

        let second = fleet
            .recover_cluster(recovery(&first, &key))
            .await
            .expect("recovered");
        assert_eq!(second.name.as_str(), "edge");
        let name = ClusterName::new("edge").expect("name");
        assert_eq!(fleet.clusters.get(&name).expect("record").serials.len(), 2);

        // Whoever holds the certificate but not its key.
        let (other_key, _) = flotilla_identity::csr::generate_csr("edge").expect("CSR");
        let wrong = fleet
            .recover_cluster(recovery(&second.cert_chain_pem, &other_key))
            .await;
        assert_eq!(refusal_of(wrong), Refusal::WrongKey);

        // Two issues later, the first certificate is no longer honoured.
        let third = fleet
            .recover_cluster(recovery(&second.cert_chain_pem, &key))
            .await
            .expect("recovered again");
        let stale = fleet.recover_cluster(recovery(&first, &key)).await;
        assert_eq!(refusal_of(stale), Refusal::Superseded);

        fleet.revoke_cluster(&name).await.expect("revoked");
        let revoked = fleet
            .recover_cluster(recovery(&third.cert_chain_pem, &key))
            .await;
        assert_eq!(refusal_of(revoked), Refusal::Revoked);

        fleet.delete_cluster(&name).await.expect("deleted");
        let deleted = fleet
            .recover_cluster(recovery(&third.cert_chain_pem, &key))
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
        let foreign = fleet.recover_cluster(recovery(&foreign, &key)).await;
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
}
