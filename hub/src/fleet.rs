//! `Fleet`: the hub's in-memory state, and the driver that runs the pure reconcile
//! (`crate::reconcile`) over a snapshot of it and carries out what it decides.
//!
//! Who writes what:
//! - `clusters`: the commands (`commands/`: registration inserts, Hello, renewal and
//!   admin edits), and `seen` (last contact). Which labels count is `label_trust`'s rule.
//!   Join tokens are not held here: they live in the store only (`commands/tokens.rs`).
//! - `sources`: admin add/set/remove (`replace_source` for an edit); each source's poller
//!   publishes new revisions into it.
//! - `assignments`: only `reconcile` (from `reconcile::Batch::assignments`).
//! - `status`: only the cluster's own Sync session.
//! - `sessions`: the Sync handler, one entry per connected cluster.
//!
//! **Architecture Invariant:** memory mirrors the store; every change to a persisted map
//! is queued to the store in the same function that makes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::{DashMap, DashSet};
use flotilla_model::{ClusterName, ContentDigest, DeploymentId, State, Summary};
use flotilla_render as render;
use tokio::sync::{Notify, mpsc};

use crate::charts::{ChartLimits, Charts};
use crate::metrics::HubMetrics;
use crate::reconcile::{
    Assignment, Assignments, Batch, BundleEntry, ClusterView, RenderResult, Renders, SourceView,
    StatusView,
};
use crate::records::{ClusterRecord, Desired, SourceSpec, StatusRecord, status_key};
use crate::rollout::{self, RolloutPhase};
use crate::store::{Op, Snapshot, Store, StoreError, Table};
use crate::targeting::GroupSpec;

#[derive(Default)]
pub struct SourceRuntime {
    pub commit: Option<String>,
    /// The branch's head when its tree was refused as a whole (a hostile name, over its
    /// budgets): the poller does not index it again until the branch moves.
    pub refused_commit: Option<String>,
    pub error: Option<String>,
    pub error_since: i64,
    pub last_poll: i64,
    /// Some remote chart of the published revision could not be fetched: the next poll
    /// loads the revision again even if the branch has not moved.
    pub charts_failed: bool,
    /// `None` until the first revision is published since the hub started; until then
    /// reconcile keeps this source's persisted assignments untouched.
    pub bundles: Option<Vec<Arc<BundleEntry>>>,
    /// Who signed `commit`, when the source verifies commits.
    pub signed_by: Option<String>,
    /// `commit` was loaded under settings an edit changed (paths, verification, ...):
    /// the next poll loads the head again even if it is the same commit.
    pub stale: bool,
}

pub struct SourceState {
    pub spec: SourceSpec,
    /// `spec.name`, shared by every assignment from this source.
    pub name: Arc<str>,
    pub runtime: RwLock<SourceRuntime>,
    /// Wakes the poller: a forced poll, an edit, or removal.
    pub poke: Notify,
    /// The secret this source's webhooks are signed with, if it has its own (read from
    /// its credential files when the state is built).
    pub webhook_secret: Option<String>,
    /// Names of the credential files the source has (`credentials::Kind::name`), as
    /// the Admin API shows them; read when the state is built, like the secret.
    pub credential_names: Vec<String>,
    /// Held while a poll fetches into the source's mirror; shared by the states an edit
    /// replaces, so an old poller and a new one never fetch into one mirror at once.
    pub fetch_lock: Arc<tokio::sync::Mutex<()>>,
}

/// A connected Sync stream.
pub struct SessionHandle {
    pub id: u64,
    /// Tells the session its cluster's assignments changed.
    pub notify: Arc<Notify>,
    /// Tells the session to end the stream now (revocation, deletion).
    pub close: Arc<Notify>,
    pub close_reason: Arc<Mutex<Option<String>>>,
}

pub struct IssuedClusterCert {
    pub chain: String,
    pub serial: String,
    pub expires: i64,
    pub issuer: String,
}

/// What happened, for `Admin.Watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    RevisionPublished,
    StatusChanged,
    ClusterConnected,
    ClusterDisconnected,
    ClusterRecovered,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RevisionPublished => "RevisionPublished",
            EventKind::StatusChanged => "StatusChanged",
            EventKind::ClusterConnected => "ClusterConnected",
            EventKind::ClusterDisconnected => "ClusterDisconnected",
            EventKind::ClusterRecovered => "ClusterRecovered",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How old (seconds) the stored `last_seen` of a connected cluster may get before
/// `Fleet::flush_last_seen` writes it again.
pub const LAST_SEEN_PERSIST_AFTER: i64 = 300;

/// Something a watcher may want to redraw for.
#[derive(Debug, Clone)]
pub struct FleetEvent {
    pub kind: EventKind,
    pub cluster: String,
    pub bundle: String,
    pub source: String,
    pub state: String,
    pub message: String,
    pub time: i64,
}

impl FleetEvent {
    pub fn new(kind: EventKind) -> Self {
        FleetEvent {
            kind,
            cluster: String::new(),
            bundle: String::new(),
            source: String::new(),
            state: String::new(),
            message: String::new(),
            time: crate::records::now_unix(),
        }
    }
}

pub enum Trigger {
    All,
    Cluster(ClusterName),
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("opening the chart cache {path}")]
    ChartCache {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),
    #[error(transparent)]
    Identity(#[from] flotilla_identity::Error),
    #[error("signing the CSR produced no certificate")]
    NoCertificate,
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

pub struct Fleet {
    pub store: Store,
    /// The signing CA, the trust bundle and the TLS config, replaced whole by a live CA
    /// rotation (`renewals::rotate_ca`); read them through `pki()`.
    pki: RwLock<Arc<crate::pki::HubPki>>,
    /// Held while a CA rotation writes its files, so two cannot interleave.
    pub ca_change: Mutex<()>,
    pub advertise: String,
    pub cert_lifetime: Duration,
    /// Recovery grace and renewals the hub asked spokes for (`renewals.rs`).
    pub renewals: crate::renewals::Renewals,
    pub data_dir: std::path::PathBuf,
    pub limits: render::Limits,
    /// `flotilla-hub run --strict-fleet-yaml`: an unknown fleet.yaml key fails its bundle.
    pub strict_fleet_yaml: bool,
    /// Remote Helm charts by digest (`DATA_DIR/charts`); the source pollers fetch
    /// through it.
    pub charts: Arc<Charts>,
    pub clusters: DashMap<ClusterName, ClusterRecord>,
    /// Registrations waiting for the order lock, committed together (`commands`).
    pub(crate) registrations: crate::commands::RegistrationQueue,
    /// Label keys spokes may set themselves (`flotilla-hub run --self-label-keys`).
    pub self_label_keys: std::collections::BTreeSet<String>,
    pub sources: DashMap<String, Arc<SourceState>>,
    /// Written by the admin API only.
    pub groups: DashMap<String, GroupSpec>,
    pub assignments: DashMap<ClusterName, Arc<Assignments>>,
    pub contents: DashMap<ContentDigest, Bytes>,
    /// Content no revision or assignment referenced at the last GC; removed if still
    /// unreferenced at the next one (two passes, so a render racing a GC is never cut).
    gc_candidates: Mutex<std::collections::HashSet<ContentDigest>>,
    /// The deployments a current revision or an assignment refers to, published by
    /// each content GC; the server's wire cache (`server::wire::WireCache`) forgets the
    /// encoded messages of the others.
    pub live_deployments: tokio::sync::watch::Sender<Arc<std::collections::HashSet<DeploymentId>>>,
    /// The spokes' last reports (`statuses`: compact, shared with the assignments).
    pub status: crate::statuses::Statuses,
    pub sessions: DashMap<ClusterName, SessionHandle>,
    pub metrics: HubMetrics,
    /// Fleet events for `Admin.Watch`; nobody listening is fine.
    pub events: tokio::sync::broadcast::Sender<FleetEvent>,
    /// Bundles whose rollout an admin paused (persisted in `Table::Rollouts`).
    pub paused_rollouts: DashMap<String, ()>,
    /// Bundles of sources removed with `--keep-resources`: their Unassign says keep.
    /// Written by the Admin API (remove) and a poller that publishes the name again
    /// (persisted in `Table::KeptBundles`).
    pub kept_bundles: DashMap<String, ()>,
    /// Bundles whose rollout the last batch that planned them found in progress: a
    /// status change of theirs may let the rollout move on. Written by `reconcile`.
    rolling: DashSet<Arc<str>>,
    /// Held by each command (`commands.rs`) from its check to its trigger, so commands
    /// never interleave.
    pub(crate) order: tokio::sync::Mutex<()>,
    /// Set in Kubernetes mode (`run --namespace NS`): sources, groups and cluster labels
    /// come from that namespace's objects, and the Admin API refuses to change them.
    pub kube_namespace: std::sync::OnceLock<String>,
    /// Clusters heard from since `flush_last_seen` last persisted their `last_seen`.
    last_seen_dirty: Mutex<std::collections::HashSet<ClusterName>>,
    /// The `last_seen` each cluster's record had when this hub last wrote or read it.
    last_seen_stored: DashMap<ClusterName, i64>,
    /// Counts status changes, so a batch can tell one landed while it ran (its plans
    /// may not have seen it).
    status_changes: AtomicU64,
    /// When each cluster was handed its current deployment of a bundle, until it reports
    /// Ready: the fan-out latency histogram's start times.
    assigned_at: DashMap<(ClusterName, String), (DeploymentId, std::time::Instant)>,
    session_ids: AtomicU64,
    reconcile_tx: mpsc::UnboundedSender<Trigger>,
    /// What each pair received and how its state moved (`history`).
    pub history: Arc<crate::history::History>,
    /// Who did what (`audit`); written by the audit layer and the webhook handler.
    pub audit: Arc<crate::audit::Audit>,
    /// Whether this hub runs the leader-only work (pollers, reconcile): always, unless
    /// it is a replica on etcd (`crate::ha`), whose election writes it.
    pub leadership: crate::ha::Leadership,
    /// Clusters whose spoke is connected to another replica, with those replicas' ids;
    /// written by `ha::mirror` from the replicas' presence records.
    pub elsewhere: DashMap<ClusterName, std::collections::HashSet<String>>,
}

pub struct FleetParts {
    pub store: Store,
    pub pki: crate::pki::HubPki,
    pub advertise: String,
    pub cert_lifetime: Duration,
    pub renewal: crate::renewals::RenewalPolicy,
    pub data_dir: std::path::PathBuf,
    pub self_label_keys: std::collections::BTreeSet<String>,
    pub limits: render::Limits,
    pub strict_fleet_yaml: bool,
    pub history: crate::history::Retention,
    /// `--audit-log`: the audit trail's JSON-lines file sink.
    pub audit_log: Option<std::path::PathBuf>,
}

impl Fleet {
    /// Builds the fleet from the store snapshot. Returns the receiver the reconciler
    /// task drains.
    pub fn restore(
        parts: FleetParts,
        snapshot: &Snapshot,
    ) -> Result<(Arc<Fleet>, mpsc::UnboundedReceiver<Trigger>), FleetError> {
        let (reconcile_tx, rx) = mpsc::unbounded_channel();
        let chart_dir = parts.data_dir.join("charts");
        let charts = Charts::open(&chart_dir, ChartLimits::default()).map_err(|source| {
            FleetError::ChartCache {
                path: chart_dir.clone(),
                source,
            }
        })?;
        let history = Arc::new(crate::history::History::restore(
            parts.store.clone(),
            parts.history,
            snapshot,
            crate::records::now_unix(),
        )?);
        let audit = crate::audit::Audit::restore(
            parts.store.clone(),
            parts.audit_log.as_deref(),
            snapshot,
        )?;
        let fleet = Fleet {
            charts: Arc::new(charts),
            store: parts.store,
            pki: RwLock::new(Arc::new(parts.pki)),
            ca_change: Mutex::default(),
            advertise: parts.advertise,
            cert_lifetime: parts.cert_lifetime,
            renewals: crate::renewals::Renewals::new(parts.renewal),
            data_dir: parts.data_dir,
            limits: parts.limits,
            strict_fleet_yaml: parts.strict_fleet_yaml,
            clusters: DashMap::new(),
            registrations: Default::default(),
            self_label_keys: parts.self_label_keys,
            sources: DashMap::new(),
            groups: DashMap::new(),
            assignments: DashMap::new(),
            contents: DashMap::new(),
            gc_candidates: Mutex::default(),
            live_deployments: tokio::sync::watch::channel(Arc::default()).0,
            status: Default::default(),
            sessions: DashMap::new(),
            metrics: HubMetrics::default(),
            events: tokio::sync::broadcast::channel(1024).0,
            paused_rollouts: DashMap::new(),
            kept_bundles: DashMap::new(),
            rolling: DashSet::new(),
            status_changes: AtomicU64::new(0),
            last_seen_dirty: Mutex::default(),
            last_seen_stored: DashMap::new(),
            order: tokio::sync::Mutex::new(()),
            kube_namespace: std::sync::OnceLock::new(),
            assigned_at: DashMap::new(),
            session_ids: AtomicU64::new(1),
            reconcile_tx,
            history,
            audit: Arc::new(audit),
            leadership: crate::ha::Leadership::always(),
            elsewhere: DashMap::new(),
        };
        for (_, c) in snapshot.records::<ClusterRecord>(Table::Clusters)? {
            fleet.last_seen_stored.insert(c.name.clone(), c.last_seen);
            fleet.clusters.insert(c.name.clone(), c);
        }
        for (bundle, _) in snapshot.records::<serde_json::Value>(Table::Rollouts)? {
            fleet.paused_rollouts.insert(bundle, ());
        }
        for (bundle, _) in snapshot.records::<serde_json::Value>(Table::KeptBundles)? {
            fleet.kept_bundles.insert(bundle, ());
        }
        for (name, g) in snapshot.records::<GroupSpec>(Table::Groups)? {
            fleet.groups.insert(name, g);
        }
        for (_, s) in snapshot.records::<SourceSpec>(Table::Sources)? {
            fleet.insert_source(s)?;
        }
        // One copy of each name and deployment, as the reconcile shares them.
        let mut names: std::collections::HashSet<Arc<str>> = Default::default();
        let mut deployments: HashMap<DeploymentId, Arc<Desired>> = HashMap::new();
        let mut intern = |s: &Arc<str>| match names.get(s) {
            Some(known) => known.clone(),
            None => {
                names.insert(s.clone());
                s.clone()
            }
        };
        for (key, a) in snapshot.records::<Assignments>(Table::Desired)? {
            let Ok(c) = ClusterName::new(&key) else {
                continue;
            };
            let a: Assignments = a
                .into_iter()
                .map(|(bundle, mut a)| {
                    a.source = intern(&a.source);
                    a.desired = a.desired.map(|d| {
                        deployments
                            .entry(d.deployment_id.clone())
                            .or_insert(d)
                            .clone()
                    });
                    (intern(&bundle), a)
                })
                .collect();
            fleet.assignments.insert(c, Arc::new(a));
        }
        // After the assignments, whose names and ids the reports share.
        for (key, st) in snapshot.records::<StatusRecord>(Table::Status)? {
            if let Some((c, b)) = key.split_once('/')
                && let Ok(c) = ClusterName::new(c)
            {
                let assigned = fleet.assignments_of(&c);
                fleet.status.insert(&c, b, st, &assigned);
            }
        }
        for (digest, bytes) in snapshot.raw(Table::Content) {
            if let Some(d) = ContentDigest::parse(digest) {
                fleet.contents.insert(d, Bytes::copy_from_slice(bytes));
            }
        }
        Ok((Arc::new(fleet), rx))
    }

    /// A fleet on a fresh store under `dir`, with a new CA and default settings, and the
    /// channel its reconcile triggers go to.
    #[cfg(test)]
    pub(crate) fn for_tests(
        dir: &std::path::Path,
    ) -> (Arc<Fleet>, mpsc::UnboundedReceiver<Trigger>) {
        let (store, snapshot) =
            crate::store::Store::open(&dir.join("state.redb")).expect("store opens");
        crate::pki::init(&crate::layout::DataDir::new(dir), "127.0.0.1:1").expect("test PKI");
        Fleet::for_tests_on(dir, store, &snapshot)
    }

    /// A fleet over `store`, with the CA already in `dir`: another hub replica of the
    /// fleet that made them, when both share the store.
    #[cfg(test)]
    pub(crate) fn for_tests_on(
        dir: &std::path::Path,
        store: Store,
        snapshot: &Snapshot,
    ) -> (Arc<Fleet>, mpsc::UnboundedReceiver<Trigger>) {
        let data = crate::layout::DataDir::new(dir);
        Fleet::restore(
            FleetParts {
                store,
                pki: crate::pki::HubPki::load(&data).expect("test PKI loads"),
                advertise: "127.0.0.1:1".into(),
                cert_lifetime: std::time::Duration::from_secs(3600),
                renewal: Default::default(),
                data_dir: dir.to_path_buf(),
                self_label_keys: Default::default(),
                limits: render::Limits::default(),
                strict_fleet_yaml: false,
                history: Default::default(),
                audit_log: None,
            },
            snapshot,
        )
        .expect("fleet restores")
    }

    pub fn trigger(&self, t: Trigger) {
        // The receiver lives as long as the hub; a send error only happens at shutdown.
        let _ = self.reconcile_tx.send(t);
    }

    /// Adds a source to memory (not the store); returns it for the caller to start polling.
    pub fn insert_source(&self, spec: SourceSpec) -> Result<Arc<SourceState>, FleetError> {
        self.replace_source(spec, None)
    }

    /// Puts `spec` in memory in place of `previous` (an edit), keeping what the previous
    /// state published so that a bundle the edit keeps keeps its deployment. An edit that
    /// fetches differently (`SourceSpec::fetches_differently`) makes the next poll load
    /// the revision again, and any edit lets the next poll try a head refused before.
    /// The previous poller sees it was replaced and stops.
    pub fn replace_source(
        &self,
        spec: SourceSpec,
        previous: Option<&SourceState>,
    ) -> Result<Arc<SourceState>, FleetError> {
        let credentials = crate::credentials::Credentials::of(&self.data_dir, &spec.name);
        let webhook_secret = credentials
            .read(crate::credentials::Kind::WebhookSecret)?
            .map(|s| String::from_utf8_lossy(&s).trim().to_string())
            .filter(|s| !s.is_empty());
        let mut runtime = SourceRuntime::default();
        let mut fetch_lock = Arc::default();
        if let Some(old) = previous {
            if let Ok(mut rt) = old.runtime.write() {
                runtime = std::mem::take(&mut *rt);
            }
            if spec.fetches_differently(&old.spec) {
                runtime.stale = true;
            }
            // New credentials or trust may let a refused head through.
            runtime.refused_commit = None;
            fetch_lock = old.fetch_lock.clone();
        }
        let state = Arc::new(SourceState {
            name: spec.name.as_str().into(),
            spec: spec.clone(),
            runtime: RwLock::new(runtime),
            poke: Notify::new(),
            webhook_secret,
            credential_names: credentials.names(),
            fetch_lock,
        });
        self.sources.insert(spec.name.clone(), state.clone());
        if let Some(old) = previous {
            old.poke.notify_one();
        }
        Ok(state)
    }

    /// Signs a cluster's CSR; returns (chain PEM, serial hex, expiry unix seconds).
    pub fn issue_cluster_cert(
        &self,
        name: &ClusterName,
        csr_pem: &str,
    ) -> Result<IssuedClusterCert, FleetError> {
        let pki = self.pki();
        let chain = pki.signing.sign_csr(
            csr_pem,
            &flotilla_identity::Identity::Cluster(name.clone()),
            self.cert_lifetime,
        )?;
        let ders = flotilla_identity::pem_to_ders(&chain)?;
        let leaf = ders.first().ok_or(FleetError::NoCertificate)?;
        let serial = flotilla_identity::Identity::serial_hex(leaf)?;
        let (_, expires) = flotilla_identity::Identity::validity(leaf)?;
        Ok(IssuedClusterCert {
            chain,
            serial,
            expires,
            issuer: pki.signing.fingerprint(),
        })
    }

    /// What the hub signs with, trusts and serves right now.
    pub fn pki(&self) -> Arc<crate::pki::HubPki> {
        // A poisoned lock still holds a whole state: swaps replace the Arc in one step.
        match self.pki.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Every CA the hub trusts (two during a rotation); handed to spokes.
    pub fn trust_pem(&self) -> String {
        self.pki().trust_pem.clone()
    }

    /// Digest of the CA that issued the serving certificate: what join strings pin.
    pub fn pin(&self) -> String {
        self.pki().pin.clone()
    }

    /// Replaces the signing CA, trust bundle and TLS config at once (a live rotation).
    pub fn set_pki(&self, next: crate::pki::HubPki) {
        let next = Arc::new(next);
        match self.pki.write() {
            Ok(mut p) => *p = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    pub fn emit_cluster(&self, kind: EventKind, c: &ClusterName, message: &str) {
        let _ = self.events.send(FleetEvent {
            cluster: c.to_string(),
            message: message.to_string(),
            ..FleetEvent::new(kind)
        });
    }

    /// Closes the cluster's Sync stream, if it has one, with `reason`.
    pub fn disconnect(&self, c: &ClusterName, reason: &str) {
        if let Some((_, s)) = self.sessions.remove(c) {
            if let Ok(mut r) = s.close_reason.lock() {
                *r = Some(reason.to_string());
            }
            s.close.notify_one();
        }
    }

    /// Notes that `c`'s spoke was heard from now. Persisted by `flush_last_seen`, so a
    /// heartbeat costs no store write of its own.
    pub fn seen(&self, c: &ClusterName) {
        if let Some(mut rec) = self.clusters.get_mut(c) {
            let now = crate::records::now_unix();
            // Every report and heartbeat lands here; within the same second nothing new
            // is to be persisted, so the shared dirty set's lock is taken once a second
            // per cluster at most, not once per message.
            if rec.last_seen == now {
                return;
            }
            rec.last_seen = now;
            if let Ok(mut dirty) = self.last_seen_dirty.lock() {
                dirty.insert(c.clone());
            }
        }
    }

    /// Persists the `last_seen` of clusters heard from since the last call, coarsely: a
    /// cluster connected here only once its stored `last_seen` is
    /// [`LAST_SEEN_PERSIST_AFTER`] old, one that disconnected at once. While a spoke is
    /// connected its hub knows it is alive (and `flotilla clusters` says so from memory
    /// and, on the other replicas, from its presence: `Fleet::cluster_overview`), so an
    /// idle fleet costs the store one write per spoke every few minutes, not one per
    /// heartbeat (issue 20: 10,000 puts per 10 s on etcd at 10,000 spokes).
    /// `all` (a hub stopping) writes every one heard from.
    pub fn flush_last_seen(&self, all: bool) {
        let dirty = match self.last_seen_dirty.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return,
        };
        let mut later = Vec::new();
        for c in dirty {
            // Queued while the record is held, so a deletion's write comes after this
            // one and a deleted cluster is never written back.
            let Some(rec) = self.clusters.get(&c) else {
                continue;
            };
            let stored = self.last_seen_stored.get(&c).map_or(i64::MIN, |s| *s);
            let connected = self.sessions.contains_key(&c);
            if !all && connected && rec.last_seen.saturating_sub(stored) < LAST_SEEN_PERSIST_AFTER {
                later.push(c);
                continue;
            }
            self.store
                .submit(vec![Op::put_json(Table::Clusters, c.as_str(), &*rec)]);
            self.last_seen_stored.insert(c.clone(), rec.last_seen);
        }
        if let Ok(mut d) = self.last_seen_dirty.lock() {
            d.extend(later);
        }
    }

    pub fn next_session_id(&self) -> u64 {
        self.session_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Connected to this hub, or (HA) to another replica.
    pub fn is_connected(&self, c: &ClusterName) -> bool {
        self.sessions.contains_key(c) || self.elsewhere.contains_key(c)
    }

    pub fn assignments_of(&self, c: &ClusterName) -> Arc<Assignments> {
        self.assignments
            .get(c)
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// The fleet as the reconcile sees it, copied out now.
    pub fn snapshot(&self) -> crate::reconcile::Snapshot<'_> {
        crate::reconcile::Snapshot {
            sources: self
                .sources
                .iter()
                .map(|s| SourceView {
                    name: s.name.clone(),
                    targets: s.spec.targets.clone(),
                    bundles: s.runtime.read().ok().and_then(|rt| rt.bundles.clone()),
                })
                .collect(),
            clusters: self.clusters.iter().map(|c| ClusterView::of(&c)).collect(),
            groups: self.group_list(),
            previous: self
                .assignments
                .iter()
                .map(|a| (a.key().clone(), a.value().clone()))
                .collect(),
            paused: self
                .paused_rollouts
                .iter()
                .map(|p| p.key().clone())
                .collect(),
            status: &self.status,
            renders: self,
        }
    }

    /// One reconcile batch: recomputes the assignments of `targets` (every cluster when
    /// `None`) over one snapshot, on every core; persists and wakes the session of each
    /// cluster whose assignments changed, and notes which rollouts are in progress.
    /// A panic in the reconcile is not caught here.
    pub fn reconcile(&self, targets: Option<Vec<ClusterName>>) {
        let status_changes = self.status_changes.load(Ordering::Acquire);
        let batch = Batch::new(self.snapshot());
        let all = targets.is_none();
        let targets: Vec<ClusterName> = match targets {
            Some(t) => t,
            // Clusters deleted since the last batch lose their assignments too.
            None => {
                let mut t: std::collections::BTreeSet<ClusterName> =
                    batch.cluster_names().cloned().collect();
                t.extend(self.assignments.iter().map(|a| a.key().clone()));
                t.into_iter().collect()
            }
        };
        // Clusters are independent, and the batch is shared read-only.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = targets.len().div_ceil(workers).max(1);
        std::thread::scope(|scope| {
            for part in targets.chunks(chunk) {
                let batch = &batch;
                scope.spawn(move || {
                    for c in part {
                        self.apply(c, batch.assignments(c));
                    }
                });
            }
        });
        let rollouts = batch.rollouts();
        if all {
            // Every cluster was decided: a bundle not planned has nothing left to roll.
            self.rolling.clear();
        }
        let mut in_progress = false;
        for (bundle, phase) in rollouts {
            if phase == RolloutPhase::Done {
                self.rolling.remove(&bundle);
            } else {
                in_progress = true;
                self.rolling.insert(bundle);
            }
        }
        // A status that landed while this batch ran may not have been seen by its plans,
        // and may have found its bundle not marked as rolling yet.
        if in_progress && self.status_changes.load(Ordering::Acquire) != status_changes {
            self.trigger(Trigger::All);
        }
    }

    /// Carries out the reconcile's decision for one cluster: persists its assignments
    /// and wakes its session when they changed.
    fn apply(&self, name: &ClusterName, new: Option<Assignments>) {
        let Some(new) = new else {
            if self.assignments.remove(name).is_some() {
                self.store
                    .submit(vec![Op::delete(Table::Desired, name.as_str())]);
            }
            return;
        };
        let old = self.assignments_of(name);
        if *old != new {
            let now = std::time::Instant::now();
            for (bundle, a) in &new {
                let Some(d) = &a.desired else { continue };
                let changed = old
                    .get(bundle)
                    .and_then(|o| o.desired.as_ref())
                    .is_none_or(|o| o.deployment_id != d.deployment_id);
                if changed {
                    self.history.deployed(name, bundle, a, &self.sources);
                    self.assigned_at.insert(
                        (name.clone(), bundle.to_string()),
                        (d.deployment_id.clone(), now),
                    );
                }
            }
            let new = Arc::new(new);
            let (key, record) = (name.to_string(), new.clone());
            self.store
                .submit_with(move || vec![Op::put_json(Table::Desired, key, &*record)]);
            self.assignments.insert(name.clone(), new);
            if let Some(s) = self.sessions.get(name) {
                s.notify.notify_one();
            }
        }
    }

    /// All groups, by name.
    pub fn group_list(&self) -> Vec<GroupSpec> {
        let mut g: Vec<GroupSpec> = self.groups.iter().map(|g| g.value().clone()).collect();
        g.sort_by(|a, b| a.name.cmp(&b.name));
        g
    }

    /// What the renderer knows of a cluster: name, effective labels, groups, and the
    /// capabilities its spoke reported.
    pub fn cluster_info(
        &self,
        cluster: &ClusterRecord,
        groups: &[&GroupSpec],
    ) -> render::ClusterInfo {
        ClusterView::of(cluster).info(groups)
    }

    /// The fleet.yaml warnings of `bundle`'s current revision in `source`.
    pub fn bundle_warnings(&self, source: &str, bundle: &str) -> Vec<String> {
        let Some(src) = self.sources.get(source).map(|s| s.value().clone()) else {
            return Vec::new();
        };
        let Ok(rt) = src.runtime.read() else {
            return Vec::new();
        };
        rt.bundles
            .iter()
            .flatten()
            .find(|e| *e.name == *bundle)
            .map(|e| e.warnings.clone())
            .unwrap_or_default()
    }

    pub fn sorted_sources(&self) -> Vec<Arc<SourceState>> {
        let mut sources: Vec<Arc<SourceState>> =
            self.sources.iter().map(|s| s.value().clone()).collect();
        sources.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        sources
    }

    /// Drops rendered content that neither a current revision nor any cluster's
    /// assignment (deployed, last good, or held back by a rollout) refers to, from memory
    /// and the store, so each commit does not add to the hub's memory for good. A digest
    /// goes on its second unreferenced pass. Returns how many were dropped.
    pub fn collect_content_garbage(&self) -> usize {
        let mut live_digests = std::collections::HashSet::new();
        let mut live_deployments = std::collections::HashSet::new();
        for src in self.sorted_sources() {
            let entries: Vec<Arc<BundleEntry>> = match src.runtime.read() {
                Ok(rt) => rt.bundles.iter().flatten().cloned().collect(),
                Err(_) => continue,
            };
            for e in entries {
                for d in e.rendered() {
                    live_digests.insert(d.digest.clone());
                    live_deployments.insert(d.deployment_id.clone());
                }
            }
        }
        for a in self.assignments.iter() {
            for d in a.value().values().filter_map(|a| a.desired.as_ref()) {
                live_digests.insert(d.digest.clone());
                live_deployments.insert(d.deployment_id.clone());
            }
        }
        self.live_deployments
            .send_replace(Arc::new(live_deployments));
        let unreferenced: Vec<ContentDigest> = self
            .contents
            .iter()
            .map(|c| c.key().clone())
            .filter(|d| !live_digests.contains(d))
            .collect();
        let Ok(mut candidates) = self.gc_candidates.lock() else {
            return 0;
        };
        let mut ops = Vec::new();
        let mut next = std::collections::HashSet::new();
        for d in unreferenced {
            if candidates.contains(&d) {
                self.contents.remove(&d);
                ops.push(Op::delete(Table::Content, d.to_string()));
            } else {
                next.insert(d);
            }
        }
        *candidates = next;
        let dropped = ops.len();
        if dropped > 0 {
            self.store.submit(ops);
            tracing::debug!(dropped, "content GC");
        }
        dropped
    }

    /// A bundle's rollout as it stands now (for the Admin API).
    pub fn plan_rollout(&self, bundle: &str) -> Option<Arc<rollout::Plan>> {
        Batch::new(self.snapshot()).plan(bundle)
    }

    /// Records a status reported by a cluster's own session.
    pub fn record_status(&self, cluster: &ClusterName, bundle: &str, st: StatusRecord) {
        self.history.reported(cluster, bundle, &self.status, &st);
        // Encoded on the writer's thread: the copy is cheaper than the JSON.
        let (key, record) = (status_key(cluster, bundle), st.clone());
        self.store
            .submit_with(move || vec![Op::put_json(Table::Status, key, &record)]);
        if st.state == State::Ready {
            let key = (cluster.clone(), bundle.to_string());
            if let Some((_, (id, since))) = self
                .assigned_at
                .remove_if(&key, |_, (id, _)| id.as_str() == st.deployment_id)
            {
                let _ = id;
                self.metrics
                    .fanout_seconds
                    .observe(since.elapsed().as_secs_f64());
            }
        }
        self.note_status(cluster, bundle, st);
    }

    /// Takes a status into memory and lets what waits on it move: an event, a rollout
    /// in progress, a bundle held by dependsOn. `record_status` for this hub's own
    /// sessions; `ha::mirror` for a report another replica stored.
    pub(crate) fn note_status(&self, cluster: &ClusterName, bundle: &str, st: StatusRecord) {
        // The event is built only for someone watching (a `Watch`, the dashboard, a
        // replica's presence): during a fan-out every report changes a state.
        let watched = self.events.receiver_count() > 0;
        let (state, message) = (st.state, watched.then(|| st.message.clone()));
        let assigned = self.assignments_of(cluster);
        let changed = self
            .status
            .insert(cluster, bundle, st, &assigned)
            .is_none_or(|prev| prev.state != state || !prev.same_deployment);
        if !changed {
            return;
        }
        if let Some(message) = message {
            let _ = self.events.send(FleetEvent {
                cluster: cluster.to_string(),
                bundle: bundle.to_string(),
                state: state.to_string(),
                message,
                ..FleetEvent::new(EventKind::StatusChanged)
            });
        }
        self.status_changes.fetch_add(1, Ordering::AcqRel);
        // A rollout in progress may advance when a cluster's state changes.
        if self.rolling.contains(bundle) {
            self.trigger(Trigger::All);
        }
        // A bundle held by dependsOn may now go ahead.
        if assigned.values().any(|a| a.waiting.is_some()) {
            self.trigger(Trigger::Cluster(cluster.clone()));
        }
    }

    /// The state a user sees for one bundle on one cluster.
    pub fn row_state(
        &self,
        cluster: &ClusterName,
        bundle: &str,
        a: &Assignment,
    ) -> (State, String) {
        if let Some(err) = &a.error {
            return (State::ErrApplied, err.clone());
        }
        if let Some(why) = &a.waiting
            && self.is_connected(cluster)
        {
            return (State::Pending, why.clone());
        }
        if !self.is_connected(cluster) {
            let msg = self
                .status
                .with(cluster, bundle, |s| {
                    format!("cluster offline; last reported {}", s.state)
                })
                .unwrap_or_else(|| "cluster offline".into());
            return (State::Offline, msg);
        }
        match &a.desired {
            Some(d) => self
                .status
                .reported(cluster, bundle, &d.deployment_id)
                .unwrap_or_else(|| {
                    (
                        State::WaitApplied,
                        format!("waiting for the spoke to apply {}", d.deployment_id),
                    )
                }),
            None => (State::ErrApplied, "no deployable revision".into()),
        }
    }

    /// Refreshes the fleet-state gauges and renders every metric.
    pub fn scrape_metrics(&self) -> String {
        use crate::metrics::StateLabel;
        let mut clusters: BTreeMap<State, i64> = BTreeMap::new();
        let mut deployments: BTreeMap<State, i64> = BTreeMap::new();
        let names: Vec<ClusterName> = self.clusters.iter().map(|c| c.key().clone()).collect();
        for c in &names {
            let summary = self.cluster_summary(c);
            for (s, n) in &summary.counts {
                *deployments.entry(*s).or_default() += i64::try_from(*n).unwrap_or(i64::MAX);
            }
            let state = if self.is_connected(c) {
                summary.worst().unwrap_or(State::Ready)
            } else {
                State::Offline
            };
            *clusters.entry(state).or_default() += 1;
        }
        for s in State::ALL {
            let label = StateLabel {
                state: s.to_string(),
            };
            self.metrics
                .clusters
                .get_or_create(&label)
                .set(clusters.get(&s).copied().unwrap_or(0));
            self.metrics
                .deployments
                .get_or_create(&label)
                .set(deployments.get(&s).copied().unwrap_or(0));
        }
        // Rebuilt whole, so a removed bundle's series goes away.
        self.metrics.bundle_warnings.clear();
        for src in self.sorted_sources() {
            let Ok(rt) = src.runtime.read() else { continue };
            for e in rt.bundles.iter().flatten() {
                self.metrics
                    .bundle_warnings
                    .get_or_create(&crate::metrics::BundleLabels {
                        source: src.spec.name.clone(),
                        bundle: e.name.to_string(),
                    })
                    .set(i64::try_from(e.warnings.len()).unwrap_or(i64::MAX));
            }
        }
        self.metrics
            .connected_spokes
            .set(i64::try_from(self.sessions.len()).unwrap_or(i64::MAX));
        self.metrics
            .leader
            .set(i64::from(self.leadership.is_leader()));
        self.metrics
            .contents
            .set(i64::try_from(self.contents.len()).unwrap_or(i64::MAX));
        self.metrics.encode()
    }

    /// Worst-state summary of one cluster's bundles.
    pub fn cluster_summary(&self, c: &ClusterName) -> Summary {
        self.assignments_of(c)
            .iter()
            .map(|(b, a)| self.row_state(c, b, a).0)
            .collect()
    }
}

impl BundleEntry {
    /// The deployments this revision has rendered so far (kept by the content GC).
    pub fn rendered(&self) -> Vec<Arc<Desired>> {
        self.renders
            .lock()
            .map(|r| {
                r.values()
                    .filter_map(|d| d.as_ref().ok().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Renders once per distinct customization of a revision (cached on its `BundleEntry`)
/// and stores each content once, by digest.
impl Renders for Fleet {
    fn render(
        &self,
        entry: &BundleEntry,
        bundle: &render::Bundle,
        key: render::RenderKey,
        info: &render::ClusterInfo,
    ) -> RenderResult {
        let Ok(mut cache) = entry.renders.lock() else {
            return Err("internal: render cache poisoned".into());
        };
        if let Some(hit) = cache.get(&key) {
            return hit.clone();
        }
        self.metrics.renders.inc();
        let result = match bundle.render(info) {
            Ok(rendered) => {
                let options_key = key.clone();
                let digest = rendered.digest.clone();
                self.contents.entry(digest.clone()).or_insert_with(|| {
                    let bytes = Bytes::from(rendered.manifest.clone().into_bytes());
                    self.store.submit(vec![Op::Put {
                        table: Table::Content,
                        key: digest.to_string(),
                        value: bytes.to_vec(),
                    }]);
                    bytes
                });
                Ok(Arc::new(crate::reconcile::desired_for(
                    bundle,
                    &options_key,
                    digest,
                )))
            }
            Err(diags) => Err(diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")),
        };
        cache.insert(key, result.clone());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(deployment: &str) -> StatusRecord {
        StatusRecord {
            deployment_id: deployment.to_string(),
            state: State::Ready,
            message: String::new(),
            resources: Vec::new(),
            updated_at: 0,
        }
    }

    /// The `last_seen` of `c`'s record in the store, once every write queued before
    /// this call has landed.
    async fn stored_last_seen(fleet: &Fleet, c: &ClusterName) -> i64 {
        fleet.store.commit(Vec::new()).await.expect("store");
        let range = fleet
            .store
            .range(Table::Clusters, c.as_str())
            .await
            .expect("range");
        let [entry] = range.entries.as_slice() else {
            panic!("one record of {c}, got {:?}", range.entries);
        };
        serde_json::from_slice::<ClusterRecord>(&entry.value)
            .expect("a cluster record")
            .last_seen
    }

    #[tokio::test]
    async fn last_seen_is_stored_once_it_moved_by_minutes_or_the_spoke_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fleet, _triggers) = Fleet::for_tests(dir.path());
        let then = crate::records::now_unix() - 10;
        let [here, gone] = ["here", "gone"].map(|n| ClusterName::new(n).expect("name"));
        for c in [&here, &gone] {
            let rec = ClusterRecord::new(c.clone(), then);
            fleet
                .store
                .commit(vec![Op::put_json(Table::Clusters, c.as_str(), &rec)])
                .await
                .expect("stored");
            fleet.last_seen_stored.insert(c.clone(), then);
            fleet.clusters.insert(c.clone(), rec);
        }
        fleet.sessions.insert(
            here.clone(),
            SessionHandle {
                id: 1,
                notify: Arc::default(),
                close: Arc::default(),
                close_reason: Arc::default(),
            },
        );

        fleet.seen(&here);
        fleet.seen(&gone);
        fleet.flush_last_seen(false);
        let now = fleet.clusters.get(&here).expect("here").last_seen;
        assert_eq!(
            stored_last_seen(&fleet, &here).await,
            then,
            "a heartbeat of a connected spoke is not worth a write"
        );
        assert!(
            stored_last_seen(&fleet, &gone).await >= now,
            "a spoke no longer connected here is stored as last heard"
        );

        // Minutes later the connected one is written, without another heartbeat.
        fleet
            .last_seen_stored
            .insert(here.clone(), now - LAST_SEEN_PERSIST_AFTER);
        fleet.flush_last_seen(false);
        assert_eq!(stored_last_seen(&fleet, &here).await, now);
    }

    #[test]
    fn a_status_of_a_bundle_rolling_out_triggers_a_reconcile_until_a_batch_finds_it_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fleet, mut triggers) = Fleet::for_tests(dir.path());
        // The last batch that planned `web` found its rollout in progress.
        fleet.rolling.insert("web".into());
        let canary = ClusterName::new("canary").expect("name");
        fleet.record_status(&canary, "web", ready("d-2"));
        assert!(
            matches!(triggers.try_recv(), Ok(Trigger::All)),
            "the canary's Ready must let the rollout move on"
        );

        // A batch over every cluster plans nothing for `web`: nothing is left to roll.
        fleet.reconcile(None);
        fleet.record_status(&canary, "web", ready("d-3"));
        assert!(triggers.try_recv().is_err());
    }

    #[test]
    fn a_status_change_is_an_event_for_whoever_watches_and_counted_either_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fleet, _triggers) = Fleet::for_tests(dir.path());
        let c = ClusterName::new("c1").expect("name");
        let counted = || fleet.status_changes.load(Ordering::Acquire);

        // Nobody watches: no event is built, but the change still counts.
        let before = counted();
        fleet.record_status(&c, "web", ready("d-1"));
        assert_eq!(counted(), before + 1);

        let mut watch = fleet.events.subscribe();
        let mut failed = ready("d-1");
        failed.state = State::ErrApplied;
        failed.message = "boom".into();
        fleet.record_status(&c, "web", failed);
        assert_eq!(counted(), before + 2);
        let e = watch.try_recv().expect("a watcher sees the change");
        assert!(matches!(e.kind, EventKind::StatusChanged));
        assert_eq!((e.cluster.as_str(), e.bundle.as_str()), ("c1", "web"));
        assert_eq!(
            (e.state.as_str(), e.message.as_str()),
            ("ErrApplied", "boom")
        );

        // The same state again is no change: no event, no count.
        let mut again = ready("d-1");
        again.state = State::ErrApplied;
        again.message = "boom".into();
        fleet.record_status(&c, "web", again);
        assert!(watch.try_recv().is_err());
        assert_eq!(counted(), before + 2);
    }
}
