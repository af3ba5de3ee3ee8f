//! The leader election and the presence records of one replica, both bound to the
//! replica's etcd lease (see the module doc of `ha`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flotilla_model::ClusterName;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fleet::{EventKind, Fleet, Trigger};
use crate::store::{Backend, CasOutcome, Cond, EtcdBackend, Op, StoreError, Table};

/// The leader record's key in [`Table::Ha`].
pub(crate) const LEADER_KEY: &str = "leader";
/// Presence records: `presence/<cluster>/<replica id>` in [`Table::Ha`].
pub(crate) const PRESENCE_PREFIX: &str = "presence/";

/// What the leader record holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct LeaderRecord {
    /// The leader's `--listen` address.
    name: String,
    /// Its lease, so a replica whose campaign landed but whose answer was lost knows
    /// the record for its own.
    lease: i64,
}

impl LeaderRecord {
    fn parse(value: &[u8]) -> LeaderRecord {
        serde_json::from_slice(value).unwrap_or_else(|_| LeaderRecord {
            name: String::from_utf8_lossy(value).to_string(),
            lease: 0,
        })
    }
}

/// Who this replica is and how long its lease lasts.
pub struct Replica {
    /// A random id of this process, naming its presence records.
    pub id: String,
    /// Its `--listen` address, shown to the others as the leader's.
    pub name: String,
    /// `--leader-lease`: how long the lease outlives the last renewal. A dead leader is
    /// replaced within it.
    pub ttl: Duration,
}

impl Replica {
    pub fn new(name: String, ttl: Duration) -> Replica {
        Replica {
            id: format!("{:016x}", rand::random::<u64>()),
            name,
            ttl,
        }
    }
}

/// Campaigns, leads, follows, and publishes presence until `stop`; on `stop` revokes the
/// lease, so another replica takes over at once instead of after the TTL.
pub async fn run_election(
    fleet: Arc<Fleet>,
    etcd: EtcdBackend,
    replica: Arc<Replica>,
    stop: CancellationToken,
) {
    let mut retry = Duration::from_millis(200);
    loop {
        let lease = match etcd.grant_lease(replica.ttl).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "no etcd lease: this replica cannot lead; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stop.cancelled() => return,
                }
                retry = (retry * 2).min(replica.ttl / 2);
                continue;
            }
        };
        retry = Duration::from_millis(200);
        tracing::debug!(lease = format!("{lease:x}"), "etcd lease granted");
        let lost = tokio::select! {
            why = keep_alive(&etcd, lease, replica.ttl) => Some(why),
            () = campaign(&fleet, &etcd, &replica, lease) => None,
            () = publish_presence(&fleet, &etcd, &replica, lease) => None,
            () = stop.cancelled() => None,
        };
        // Whatever ended the term, leader-only work stops before anything else.
        let led = fleet.leadership.is_leader();
        fleet.leadership.follow(None);
        match lost {
            Some(why) => {
                if led {
                    tracing::error!(%why, "lost the etcd lease: stopped leading");
                } else {
                    tracing::warn!(%why, "lost the etcd lease");
                }
                // If etcd is back, the records of the lease we gave up go now rather than
                // when etcd expires it.
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), etcd.revoke_lease(lease)).await;
                // A deposed leader's memory may hold assignments it could not publish.
                if let Err(e) = super::mirror::reload(&fleet, &replica, Table::Desired).await {
                    tracing::warn!(error = %e, "reloading assignments after losing the lead");
                }
            }
            None => {
                // Stopping: hand over now rather than after the TTL.
                match tokio::time::timeout(Duration::from_secs(2), etcd.revoke_lease(lease)).await {
                    Ok(Ok(())) => tracing::info!("released the etcd lease"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "releasing the etcd lease"),
                    Err(_) => tracing::warn!("releasing the etcd lease: no answer"),
                }
                return;
            }
        }
    }
}

/// Renews the lease at a third of its TTL until a renewal fails to land before the
/// lease would have expired (or etcd says it is gone); returns why.
async fn keep_alive(etcd: &EtcdBackend, lease: i64, ttl: Duration) -> String {
    // etcd counts the TTL from when it handled the renewal, after we sent it.
    let mut expires = Instant::now() + ttl;
    let mut last_error = String::new();
    loop {
        let sent = Instant::now();
        tokio::select! {
            r = etcd.keep_alive(lease) => match r {
                Ok(0) => return "etcd says the lease has expired".into(),
                Ok(secs) => {
                    expires = sent + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
                    last_error.clear();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the etcd lease failed; retrying");
                    last_error = e.to_string();
                }
            },
            () = tokio::time::sleep_until(expires) => {
                return format!("no renewal landed within the lease's TTL ({ttl:?}): {last_error}");
            }
        }
        let pause = if last_error.is_empty() {
            ttl / 3
        } else {
            Duration::from_millis(500)
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = tokio::time::sleep_until(expires) => {
                return format!("no renewal landed within the lease's TTL ({ttl:?}): {last_error}");
            }
        }
    }
}

/// Tries to create the leader record; leads when that works, otherwise follows until
/// the record goes, then tries again. Leading never returns: the term ends when the
/// lease does (or the hub stops).
async fn campaign(fleet: &Arc<Fleet>, etcd: &EtcdBackend, replica: &Replica, lease: i64) {
    loop {
        let record = LeaderRecord {
            name: replica.name.clone(),
            lease,
        };
        // Serialising our own plain struct cannot fail.
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let attempt = etcd
            .put_leased(Table::Ha, LEADER_KEY, value, lease, true)
            .await;
        match attempt {
            Ok(CasOutcome::Applied(revision)) => {
                lead(fleet, replica, revision).await;
                std::future::pending::<()>().await;
            }
            Ok(CasOutcome::Refused { current }) => {
                let Some(Some(leader)) = current.into_iter().next() else {
                    // Gone between the compare and the read: try again.
                    continue;
                };
                let record = LeaderRecord::parse(&leader.value);
                if record.lease == lease {
                    // An earlier attempt landed; its answer did not.
                    lead(fleet, replica, leader.revision).await;
                    std::future::pending::<()>().await;
                }
                tracing::info!(leader = %record.name, "following the leader");
                fleet.leadership.follow(Some(record.name));
                wait_for_vacancy(fleet, etcd, leader.revision).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "campaigning for the lead failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Becomes the leader whose record was written at `revision`: fences its publishing
/// writes on that record, catches up with what the previous leader published, then
/// starts the leader-only work and a reconcile of every cluster.
async fn lead(fleet: &Arc<Fleet>, replica: &Replica, revision: u64) {
    fleet
        .store
        .set_fence(Some(Cond::at_revision(Table::Ha, LEADER_KEY, revision)));
    if let Err(e) = super::mirror::reload(fleet, replica, Table::Desired).await {
        // The watch keeps these in step too; the reconcile recomputes them anyway.
        tracing::warn!(error = %e, "reading the published assignments before leading");
    }
    fleet.leadership.lead();
    tracing::info!(
        revision,
        "elected leader: polling, rendering and publishing"
    );
    fleet.trigger(Trigger::All);
}

/// Waits until the leader record written at `revision` is deleted (or replaced, or the
/// watch fails: the caller campaigns again and finds out).
async fn wait_for_vacancy(fleet: &Arc<Fleet>, etcd: &EtcdBackend, revision: u64) {
    let mut changes = match etcd.watch(Table::Ha, LEADER_KEY, revision).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "watching the leader record");
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
    };
    while let Some(change) = changes.next().await {
        match change {
            Ok(c) if c.key == LEADER_KEY => match c.value {
                None => {
                    tracing::info!("the leader is gone: campaigning");
                    return;
                }
                Some(v) => fleet.leadership.follow(Some(LeaderRecord::parse(&v).name)),
            },
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "watching the leader record");
                return;
            }
        }
    }
}

/// Keeps `presence/<cluster>/<replica>` records, bound to the lease, for exactly the
/// spokes connected here: on each connect and disconnect event, and a full pass at every
/// TTL (after a missed event or a failed write).
async fn publish_presence(fleet: &Fleet, etcd: &EtcdBackend, replica: &Replica, lease: i64) {
    let mut events = fleet.events.subscribe();
    let mut published: HashSet<ClusterName> = HashSet::new();
    let mut tick = tokio::time::interval(replica.ttl);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let here: HashSet<ClusterName> =
                    fleet.sessions.iter().map(|s| s.key().clone()).collect();
                let stale: Vec<ClusterName> = published.difference(&here).cloned().collect();
                for c in here.iter().chain(&stale) {
                    sync_presence(fleet, etcd, replica, lease, &mut published, c).await;
                }
            }
            event = events.recv() => match event {
                Ok(e) if matches!(e.kind, EventKind::ClusterConnected | EventKind::ClusterDisconnected) => {
                    if let Ok(c) = ClusterName::new(&e.cluster) {
                        sync_presence(fleet, etcd, replica, lease, &mut published, &c).await;
                    }
                }
                Ok(_) => {}
                // Missed events: the next tick's full pass catches up.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => tick.reset_immediately(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

async fn sync_presence(
    fleet: &Fleet,
    etcd: &EtcdBackend,
    replica: &Replica,
    lease: i64,
    published: &mut HashSet<ClusterName>,
    c: &ClusterName,
) {
    // `published` starts empty with each lease (the old records went with the old
    // lease), so the first pass writes every connected spoke again.
    let here = fleet.sessions.contains_key(c);
    if here == published.contains(c) {
        return;
    }
    let key = format!("{PRESENCE_PREFIX}{c}/{}", replica.id);
    let written: Result<(), StoreError> = if here {
        etcd.put_leased(
            Table::Ha,
            &key,
            replica.name.clone().into_bytes(),
            lease,
            false,
        )
        .await
        .map(|_| ())
    } else {
        etcd.write(vec![Op::delete(Table::Ha, key)])
            .await
            .map(|_| ())
    };
    match written {
        Ok(()) if here => {
            published.insert(c.clone());
        }
        Ok(()) => {
            published.remove(c);
        }
        Err(e) => tracing::warn!(cluster = %c, error = %e, "publishing presence"),
    }
}
