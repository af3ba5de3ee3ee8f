//! The spoke's client certificate, owned by one task beside the Sync stream (in the
//! style of linkerd2-proxy's identity client). The task holds the current certificate,
//! renews it at a jittered fraction of its lifetime (or at once when the hub sends
//! `RenewNow`), recovers one that expired while no hub was reachable, and publishes the
//! current credentials through a `watch`: a stream reads the latest when it dials, and
//! nothing else reads key files.
//!
//! Renewal travels on the open Sync stream (the protocol's `Renew` out, `Certificate`
//! back); the stream only forwards those two messages here ([`Certificates::hub_sent`]).
//! A new key is generated here for each renewal and only its CSR leaves the process.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use flotilla_identity::{Credentials, Identity};
use flotilla_proto::v1::{Renew, SpokeMsg, spoke_msg};
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::state_dir::StateDir;

/// A certificate is renewed at a random point in this fraction of its lifetime, so the
/// spokes enrolled together do not all renew together.
const RENEW_AT: (f64, f64) = (0.6, 2.0 / 3.0);
/// A renewal the hub has not answered in this long is asked again (with a new key).
const UNANSWERED: Duration = Duration::from_secs(60);
/// After a certificate the hub sent could not be installed, the next try waits this long.
const AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The credentials in use, as published to the streams.
pub struct Current {
    pub creds: Credentials,
    /// When the leaf certificate expires (unix seconds).
    pub not_after: i64,
}

impl Current {
    fn load(state: &StateDir) -> Result<Current> {
        Ok(Current {
            creds: state.credentials()?,
            not_after: state.leaf_expiry()?,
        })
    }

    pub fn expired(&self) -> bool {
        self.not_after <= unix_now()
    }
}

/// The handle the agent keeps: the latest credentials, and the way into the task.
pub struct Certificates {
    current: watch::Receiver<Arc<Current>>,
    inbox: mpsc::Sender<Event>,
}

/// What the task is told.
enum Event {
    /// The hub answered a renewal (`Certificate`).
    Certificate {
        chain_pem: String,
        ca_bundle_pem: String,
    },
    /// The hub asks for a renewal now (`RenewNow`, a CA rotation).
    RenewNow,
    /// The certificate expired: trade it for a new one at this hub address.
    Recover {
        hub: String,
        done: oneshot::Sender<Result<()>>,
    },
}

impl Certificates {
    /// Loads the certificate from `state` and starts the task that owns it. Renewal
    /// requests go out on whichever stream `outbound` holds (None while disconnected).
    pub fn start(
        state: StateDir,
        cluster: String,
        outbound: watch::Receiver<Option<mpsc::Sender<SpokeMsg>>>,
    ) -> Result<Certificates> {
        let first = Current::load(&state)?;
        let due = renewal_due(&state)?;
        let (publish, current) = watch::channel(Arc::new(first));
        let (inbox, events) = mpsc::channel(8);
        let task = Renewer {
            state,
            cluster,
            outbound,
            events,
            publish,
            due,
            pending: None,
        };
        tokio::spawn(task.run());
        Ok(Certificates { current, inbox })
    }

    /// The credentials to dial with now.
    pub fn current(&self) -> Arc<Current> {
        self.current.borrow().clone()
    }

    /// Hands the task a renewal message the hub sent on the stream; other messages are
    /// not its business and are ignored.
    pub async fn hub_sent(&self, msg: &flotilla_proto::v1::hub_msg::Msg) {
        use flotilla_proto::v1::hub_msg::Msg;
        let event = match msg {
            Msg::Certificate(c) => Event::Certificate {
                chain_pem: c.cert_chain_pem.clone(),
                ca_bundle_pem: c.ca_bundle_pem.clone(),
            },
            Msg::RenewNow(_) => Event::RenewNow,
            _ => return,
        };
        let _ = self.inbox.send(event).await;
    }

    /// Recovers the expired certificate at `hub` (`enroll::recover`), and publishes the
    /// new one before returning. A permanent refusal comes back as `enroll::Refused`.
    pub async fn recover(&self, hub: &str) -> Result<()> {
        let (done, answer) = oneshot::channel();
        self.inbox
            .send(Event::Recover {
                hub: hub.to_string(),
                done,
            })
            .await
            .map_err(|_| anyhow!("the certificate task stopped"))?;
        answer
            .await
            .map_err(|_| anyhow!("the certificate task stopped"))?
    }
}

/// Why the task woke up.
enum Woken {
    /// A renewal is due, or the pending one went unanswered.
    Due,
    /// A stream opened or ended.
    StreamChanged,
    Event(Event),
}

/// The task's own state: only it writes the key and certificate files.
struct Renewer {
    state: StateDir,
    cluster: String,
    outbound: watch::Receiver<Option<mpsc::Sender<SpokeMsg>>>,
    events: mpsc::Receiver<Event>,
    publish: watch::Sender<Arc<Current>>,
    /// When the next renewal is due.
    due: Instant,
    /// The new key while its certificate is on the way, and when it was asked for.
    pending: Option<(String, Instant)>,
}

impl Renewer {
    async fn run(mut self) {
        loop {
            let connected = self.outbound.borrow().is_some();
            let wake = match &self.pending {
                Some((_, asked)) => *asked + UNANSWERED,
                None => self.due,
            };
            let woken = tokio::select! {
                _ = tokio::time::sleep_until(wake), if connected => Woken::Due,
                changed = self.outbound.changed() => match changed {
                    Ok(()) => Woken::StreamChanged,
                    Err(_) => return,
                },
                event = self.events.recv() => match event {
                    Some(e) => Woken::Event(e),
                    None => return,
                },
            };
            match woken {
                Woken::Due => self.ask(),
                Woken::StreamChanged => {
                    // A renewal asked on a stream that ended is never answered: ask
                    // again on the next one.
                    if self.pending.take().is_some() {
                        self.due = Instant::now();
                    }
                }
                Woken::Event(Event::Certificate {
                    chain_pem,
                    ca_bundle_pem,
                }) => {
                    if let Err(e) = self.install(&chain_pem, &ca_bundle_pem) {
                        tracing::warn!(cluster = %self.cluster, error = %format!("{e:#}"), "could not install the renewed certificate; renewing again later");
                        self.due = Instant::now() + AFTER_FAILURE;
                    }
                }
                Woken::Event(Event::RenewNow) => {
                    if self.pending.is_none() {
                        tracing::info!(cluster = %self.cluster, "the hub asked for a renewal now");
                        self.due = Instant::now();
                    }
                }
                Woken::Event(Event::Recover { hub, done }) => {
                    let _ = done.send(self.recover(&hub).await);
                }
            }
        }
    }

    /// Sends a renewal request on the open stream.
    fn ask(&mut self) {
        let csr = flotilla_identity::csr::generate_csr(&self.cluster);
        let (key_pem, csr_pem) = match csr {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!(cluster = %self.cluster, error = %e, "cannot generate a key for the renewal");
                self.due = Instant::now() + AFTER_FAILURE;
                return;
            }
        };
        let sent = self.outbound.borrow().as_ref().is_some_and(|tx| {
            tx.try_send(SpokeMsg {
                msg: Some(spoke_msg::Msg::Renew(Renew { csr_pem })),
            })
            .is_ok()
        });
        if sent {
            tracing::info!(cluster = %self.cluster, "renewing the client certificate");
            self.pending = Some((key_pem, Instant::now()));
        } else {
            // The stream is full or gone; its end (or the next tick) tries again.
            self.due = Instant::now() + AFTER_FAILURE;
        }
    }

    /// Installs the certificate the hub returned for the pending key, and publishes it.
    fn install(&mut self, chain_pem: &str, ca_bundle_pem: &str) -> Result<()> {
        let Some((key_pem, _)) = self.pending.take() else {
            bail!("hub sent a certificate we did not ask for");
        };
        let ders = flotilla_identity::pem_to_ders(chain_pem)?;
        let leaf = ders.first().context("empty certificate chain")?;
        match Identity::from_cert_der(leaf)? {
            Identity::Cluster(c) if c.as_str() == self.cluster => {}
            other => bail!(
                "hub sent a certificate for {other}, not cluster {}",
                self.cluster
            ),
        }
        if !ca_bundle_pem.is_empty() {
            // During a CA rotation this adds the new CA before the hub starts serving
            // with it; it never removes the CA the current connection relies on.
            flotilla_identity::pem_to_ders(ca_bundle_pem)?;
            self.state.save_trust(ca_bundle_pem)?;
        }
        self.state.save_renewed(&key_pem, chain_pem)?;
        self.reload()?;
        tracing::info!(cluster = %self.cluster, "client certificate renewed; the stream stays up");
        Ok(())
    }

    async fn recover(&mut self, hub: &str) -> Result<()> {
        // A certificate that another path already renewed needs no recovery.
        if !self.publish.borrow().expired() {
            return Ok(());
        }
        crate::enroll::recover(&self.state, &self.cluster, hub).await?;
        self.reload()
    }

    /// Reads the installed certificate back, publishes it and schedules its renewal.
    fn reload(&mut self) -> Result<()> {
        let current = Current::load(&self.state)?;
        self.due = renewal_due(&self.state)?;
        self.publish.send_replace(Arc::new(current));
        Ok(())
    }
}

/// When to renew the certificate in `state`: at a random point of [`RENEW_AT`] of its
/// lifetime (at once if that has passed).
fn renewal_due(state: &StateDir) -> Result<Instant> {
    let (not_before, not_after) = Identity::validity(&state.leaf_der()?)?;
    let fraction = rand::rng().random_range(RENEW_AT.0..RENEW_AT.1);
    Ok(due_at(not_before, not_after, fraction, unix_now()))
}

/// The instant `fraction` of the way through [not_before, not_after] (unix seconds),
/// seen from `now`.
fn due_at(not_before: i64, not_after: i64, fraction: f64, now: i64) -> Instant {
    let lifetime = (not_after - not_before).max(0) as f64;
    let due = not_before as f64 + lifetime * fraction;
    let wait = (due - now as f64).max(0.0);
    Instant::now() + Duration::from_secs_f64(wait)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_within_the_jittered_fraction_of_the_lifetime() {
        let start = Instant::now();
        // A 90 s certificate issued 30 s ago: due 54-60 s after issue, 24-30 s from now.
        let due = due_at(1_000, 1_090, RENEW_AT.0, 1_030);
        assert!(due >= start + Duration::from_secs(24), "{:?}", due - start);
        let due = due_at(1_000, 1_090, RENEW_AT.1, 1_030);
        assert!(due <= Instant::now() + Duration::from_secs(30));
        // Past the point already (a spoke that was down): at once.
        assert!(due_at(1_000, 1_090, 0.6, 1_080) <= Instant::now());
    }
}
