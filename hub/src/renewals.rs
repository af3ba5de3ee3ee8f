//! The certificate lifecycle after issue: how long an expired certificate may still be
//! recovered (`--recovery-grace`), and asking connected spokes to renew *now*, each at a
//! random moment within a window, so a CA rotation finishes in minutes instead of at
//! every spoke's natural renewal (two thirds of its lifetime).
//!
//! A session owns the asking: it reads its cluster's due time from [`Renewals`] when it
//! starts and whenever its `notify` fires, sends `RenewNow` when the time comes, and
//! clears the entry when the spoke renews or the stream ends. During a rotation
//! (`ca rotate`, which `Admin.RotateCa` runs in the hub: [`rotate_ca`]) every connected
//! spoke still on the previous CA is scheduled at once, and every other one as it
//! connects; `Admin.RenewCertificates` schedules the connected ones on demand.

use std::time::Duration;

use dashmap::DashMap;
use flotilla_model::ClusterName;
use rand::Rng;

use crate::fleet::Fleet;
use crate::records::{now_unix, rfc3339};

/// What `flotilla-hub run` sets for the certificate lifecycle.
#[derive(Debug, Clone, Copy)]
pub struct RenewalPolicy {
    /// How long after expiry a cluster certificate may still be recovered.
    pub recovery_grace: Duration,
    /// The window over which spokes are asked to renew during a rotation.
    pub rotation_window: Duration,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        RenewalPolicy {
            recovery_grace: Duration::from_secs(30 * 24 * 3600),
            rotation_window: Duration::from_secs(300),
        }
    }
}

/// Renewals the hub asked for. Written by `schedule` (admin calls, sessions starting)
/// and cleared by the cluster's own session.
pub struct Renewals {
    pub policy: RenewalPolicy,
    /// When each connected cluster's session asks its spoke to renew, unix milliseconds.
    due: DashMap<ClusterName, i64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Renewals {
    pub fn new(policy: RenewalPolicy) -> Self {
        Renewals {
            policy,
            due: DashMap::new(),
        }
    }

    /// Schedules `cluster` at a random moment within `window` from now, unless it is
    /// already scheduled earlier. Returns the due time (unix ms).
    fn schedule(&self, cluster: &ClusterName, window: Duration) -> i64 {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let at = now_ms().saturating_add(rand::rng().random_range(0..=window_ms));
        let mut entry = self.due.entry(cluster.clone()).or_insert(at);
        *entry = (*entry).min(at);
        *entry
    }

    /// The due time of `cluster`, unix ms, if the hub wants it to renew.
    pub fn due(&self, cluster: &ClusterName) -> Option<i64> {
        self.due.get(cluster).map(|d| *d)
    }

    /// The spoke renewed, or its stream ended: nothing left to ask.
    pub fn clear(&self, cluster: &ClusterName) {
        self.due.remove(cluster);
    }

    /// How long from now until `due_ms` (zero when past).
    pub fn until(due_ms: i64) -> Duration {
        Duration::from_millis(u64::try_from(due_ms.saturating_sub(now_ms())).unwrap_or(0))
    }
}

/// Whether `cluster`'s newest certificate comes from another CA than the signing one.
fn on_previous_ca(fleet: &Fleet, cluster: &ClusterName, signing: &str) -> bool {
    fleet
        .clusters
        .get(cluster)
        .is_some_and(|c| !c.revoked && c.issuer != signing)
}

/// Called by a session as it starts: during a rotation a spoke still on the previous CA
/// is scheduled within the rotation window.
pub fn on_connect(fleet: &Fleet, cluster: &ClusterName) {
    let pki = fleet.pki();
    if pki.rotating() && on_previous_ca(fleet, cluster, &pki.signing.fingerprint()) {
        let at = fleet
            .renewals
            .schedule(cluster, fleet.renewals.policy.rotation_window);
        tracing::info!(cluster = %cluster, renew_at = %rfc3339(at / 1000), "CA rotation: the spoke will be asked to renew");
    }
}

/// Asks every connected spoke that is not on the signing CA (or every one, with `all`)
/// to renew within `window`. Returns how many were scheduled.
pub fn ask_connected(fleet: &Fleet, window: Duration, all: bool) -> usize {
    let signing = fleet.pki().signing.fingerprint();
    let mut scheduled = 0;
    for session in fleet.sessions.iter() {
        let cluster = session.key();
        if all || on_previous_ca(fleet, cluster, &signing) {
            fleet.renewals.schedule(cluster, window);
            session.notify.notify_one();
            scheduled += 1;
        }
    }
    scheduled
}

/// Rotates the CA of the running hub (`Admin.RotateCa`): writes the new CA
/// (`pki::rotate_live`), swaps the signing CA, trust bundle and TLS config in one step,
/// and asks every connected spoke on the previous CA to renew within the rotation
/// window. On an error nothing was swapped and the files are the old ones.
pub fn rotate_ca(fleet: &Fleet) -> anyhow::Result<flotilla_proto::v1::RotateCaResponse> {
    let _writing = fleet
        .ca_change
        .lock()
        .map_err(|_| anyhow::anyhow!("a previous CA change panicked; restart the hub"))?;
    let dir = crate::layout::DataDir::new(&fleet.data_dir);
    let next = crate::pki::rotate_live(&dir, &fleet.pki(), &fleet.advertise)?;
    let signing = next.signing.fingerprint();
    fleet.set_pki(next);
    let window = fleet.renewals.policy.rotation_window;
    let scheduled = ask_connected(fleet, window, false);
    Ok(flotilla_proto::v1::RotateCaResponse {
        signing_ca_sha256: signing,
        scheduled: u32::try_from(scheduled).unwrap_or(u32::MAX),
        rotation_window_seconds: window.as_secs(),
    })
}

/// Ends the rotation of the running hub (`Admin.RetireCa`): the serving certificate from
/// the signing CA, the previous CA dropped (`pki::retire_live`), swapped in one step.
/// Connections already open keep going; new ones see the new state.
pub fn retire_ca(
    fleet: &Fleet,
    force: bool,
) -> anyhow::Result<flotilla_proto::v1::RetireCaResponse> {
    let _writing = fleet
        .ca_change
        .lock()
        .map_err(|_| anyhow::anyhow!("a previous CA change panicked; restart the hub"))?;
    let dir = crate::layout::DataDir::new(&fleet.data_dir);
    let clusters: Vec<_> = fleet.clusters.iter().map(|c| c.value().clone()).collect();
    let next = crate::pki::retire_live(&dir, &fleet.pki(), &clusters, force, &fleet.advertise)?;
    let ca_sha256 = next.pin.clone();
    fleet.set_pki(next);
    Ok(flotilla_proto::v1::RetireCaResponse { ca_sha256 })
}

/// A CA rotation's progress, for `Admin.CaStatus`.
pub fn ca_status(fleet: &Fleet) -> flotilla_proto::v1::CaStatusResponse {
    let pki = fleet.pki();
    let signing = pki.signing.fingerprint();
    let mut status = flotilla_proto::v1::CaStatusResponse {
        rotating: pki.rotating(),
        signing_ca_sha256: signing.clone(),
        rotation_window_seconds: fleet.renewals.policy.rotation_window.as_secs(),
        ..Default::default()
    };
    let mut latest = Some(now_unix());
    for c in fleet.clusters.iter().filter(|c| !c.revoked) {
        status.clusters += 1;
        if c.issuer == signing {
            status.on_signing_ca += 1;
            continue;
        }
        let connected = fleet.sessions.contains_key(&c.name);
        let due = fleet.renewals.due(&c.name).map(|ms| ms / 1000);
        latest = match (latest, due, connected) {
            (Some(l), Some(d), true) => Some(l.max(d)),
            _ => None,
        };
        status.pending.push(flotilla_proto::v1::CaPendingCluster {
            name: c.name.to_string(),
            connected,
            renew_at: due.map(rfc3339).unwrap_or_default(),
        });
    }
    status.pending.sort_by(|a, b| a.name.cmp(&b.name));
    status.estimated_done = latest.map(rfc3339).unwrap_or_default();
    status
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_renewal_is_due_within_its_window_and_an_earlier_one_is_kept() {
        let r = Renewals::new(RenewalPolicy::default());
        let c = ClusterName::new("edge").expect("name");
        let before = now_ms();
        let at = r.schedule(&c, Duration::from_secs(60));
        assert!((before..=now_ms() + 60_000).contains(&at), "{at}");
        let again = r.schedule(&c, Duration::from_secs(3600));
        assert!(
            again <= at,
            "a later schedule never postpones an earlier one"
        );
        assert_eq!(r.due(&c), Some(again));
        r.clear(&c);
        assert_eq!(r.due(&c), None);
        assert_eq!(Renewals::until(now_ms() - 5), Duration::ZERO);
    }

    #[test]
    fn rotating_the_running_hub_swaps_signing_ca_trust_and_tls_config_at_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (fleet, _rx) = Fleet::for_tests(tmp.path());
        let before = fleet.pki();
        let reply = rotate_ca(&fleet).expect("rotates");
        let after = fleet.pki();
        assert_eq!(reply.signing_ca_sha256, after.signing.fingerprint());
        assert_ne!(reply.signing_ca_sha256, before.signing.fingerprint());
        assert_eq!(reply.scheduled, 0, "no spoke is connected");
        assert!(after.rotating() && ca_status(&fleet).rotating);
        assert!(
            !Arc::ptr_eq(&before.tls, &after.tls),
            "new handshakes get a config that trusts both CAs"
        );
        assert_eq!(fleet.pin(), before.pin);
        let again = rotate_ca(&fleet).expect_err("one rotation at a time");
        assert!(format!("{again:#}").contains("already in progress"));
        assert_eq!(
            fleet.pki().signing.fingerprint(),
            after.signing.fingerprint()
        );
    }
}
