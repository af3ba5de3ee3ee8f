//! `Fleet`: the hub's in-memory state and the reconcile that turns sources, bundles and
//! cluster labels into per-cluster assignments.
//!
//! Who writes what:
//! - `clusters`: registration (insert), Hello (reported labels, last seen), admin (hub
//!   labels, accepted labels). Which labels count is `label_trust`'s rule.
//! - `sources`: admin add/set/remove (`replace_source` for an edit); each source's poller
//!   publishes new revisions into it.
//! - `assignments`: only `reconcile_cluster`.
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
use dashmap::DashMap;
use flotilla_model::{ClusterName, ContentDigest, DeployOptions, DeploymentId, State, Summary};
use flotilla_render as render;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::charts::{ChartLimits, Charts};
use crate::depends;
use crate::metrics::HubMetrics;
use crate::records::{ClusterRecord, Desired, SourceSpec, StatusRecord, TokenRecord, status_key};
use crate::rollout;
use crate::store::{Op, Snapshot, Store, StoreError, Table};
use crate::targeting::{self, GroupSpec};

/// What one cluster should run for one bundle, or why it cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Shared with every other cluster's assignment from the same source.
    pub source: Arc<str>,
    /// The deployment to enforce: the current render, or the last good one.
    pub desired: Option<Desired>,
    /// Load or render error of the current revision for this cluster.
    pub error: Option<String>,
    /// Why the current revision is held back (dependsOn, rollout); `desired` is then the
    /// last deployed one, if any.
    #[serde(default)]
    pub waiting: Option<String>,
    /// The deployment the current revision wants, when it is held back.
    #[serde(default)]
    pub staged: Option<DeploymentId>,
}

/// Keyed by bundle name, shared with the source's `BundleEntry::name`: a fleet holds one
/// of these per cluster, so per-pair copies of the same strings add up.
pub type Assignments = BTreeMap<Arc<str>, Assignment>;

/// One bundle of a source's published revision.
pub struct BundleEntry {
    pub name: Arc<str>,
    pub path: String,
    /// The bundle to deploy: this revision's, or the last good one if this one is broken.
    pub bundle: Option<Arc<render::Bundle>>,
    /// Errors of this revision (file:line: message), empty when it loaded.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// The deployment of each distinct customization, computed once (render, digest,
    /// options, deployment id); the bytes live in `Fleet::contents`.
    renders: Mutex<HashMap<render::RenderKey, Result<Desired, String>>>,
}

impl BundleEntry {
    pub fn new(
        name: String,
        path: String,
        bundle: Option<Arc<render::Bundle>>,
        errors: Vec<String>,
        warnings: Vec<String>,
    ) -> Self {
        BundleEntry {
            name: name.into(),
            path,
            bundle,
            errors,
            warnings,
            renders: Mutex::new(HashMap::new()),
        }
    }

    /// The deployments this revision has rendered so far (kept by the content GC).
    pub fn rendered(&self) -> Vec<Desired> {
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

/// What a cluster runs for a render of `bundle`: the digest plus the options the spoke
/// needs (the bundle's, with the render's customization over them), and the deployment
/// id over both.
fn desired_for(bundle: &render::Bundle, key: &render::RenderKey, digest: ContentDigest) -> Desired {
    let opts = bundle.options_for(key);
    Desired {
        deployment_id: DeploymentId::compute(&digest, &opts.canonical_json()),
        digest,
        options: DeployOptions {
            correct_drift: opts.correct_drift.enabled,
            keep_resources: opts.keep_resources,
            force: opts.correct_drift.force,
            compare_patches: opts.diff.compare_patches.clone(),
            ignore_conditions: opts.ignore.conditions.clone(),
        },
    }
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

/// Something a watcher may want to redraw for.
#[derive(Debug, Clone)]
pub struct FleetEvent {
    pub kind: &'static str,
    pub cluster: String,
    pub bundle: String,
    pub source: String,
    pub state: String,
    pub message: String,
    pub time: i64,
}

impl FleetEvent {
    pub fn new(kind: &'static str) -> Self {
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
    #[error("{0}")]
    Invalid(String),
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
    /// Names whose registration is between the token check and the store commit; taken
    /// under the `tokens` lock so two registrations of one name cannot both pass.
    pub registering: Mutex<std::collections::HashSet<ClusterName>>,
    /// Label keys spokes may set themselves (`flotilla-hub run --self-label-keys`).
    pub self_label_keys: std::collections::BTreeSet<String>,
    pub tokens: Mutex<HashMap<String, TokenRecord>>,
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
    pub status: DashMap<(ClusterName, String), StatusRecord>,
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
    /// Rollout plans computed in the current reconcile batch; cleared at each batch so
    /// every cluster in a batch sees the same plan.
    rollout_plans: Mutex<HashMap<String, Arc<rollout::Plan>>>,
    /// The previous batch's plans, for a status that arrives after a batch cleared its
    /// plans and before it planned that bundle again: without them such a status looks
    /// like "no rollout", triggers nothing, and the rollout waits for another event.
    previous_rollout_plans: Mutex<HashMap<String, Arc<rollout::Plan>>>,
    /// When each cluster was handed its current deployment of a bundle, until it reports
    /// Ready: the fan-out latency histogram's start times.
    assigned_at: DashMap<(ClusterName, String), (DeploymentId, std::time::Instant)>,
    session_ids: AtomicU64,
    reconcile_tx: mpsc::UnboundedSender<Trigger>,
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
        let charts = Charts::open(&chart_dir, ChartLimits::default()).map_err(|e| {
            FleetError::Invalid(format!("the chart cache {}: {e}", chart_dir.display()))
        })?;
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
            registering: Mutex::default(),
            self_label_keys: parts.self_label_keys,
            tokens: Mutex::new(HashMap::new()),
            sources: DashMap::new(),
            groups: DashMap::new(),
            assignments: DashMap::new(),
            contents: DashMap::new(),
            gc_candidates: Mutex::default(),
            live_deployments: tokio::sync::watch::channel(Arc::default()).0,
            status: DashMap::new(),
            sessions: DashMap::new(),
            metrics: HubMetrics::default(),
            events: tokio::sync::broadcast::channel(1024).0,
            paused_rollouts: DashMap::new(),
            kept_bundles: DashMap::new(),
            rollout_plans: Mutex::new(HashMap::new()),
            previous_rollout_plans: Mutex::new(HashMap::new()),
            assigned_at: DashMap::new(),
            session_ids: AtomicU64::new(1),
            reconcile_tx,
        };
        for (_, c) in snapshot.records::<ClusterRecord>(Table::Clusters)? {
            fleet.clusters.insert(c.name.clone(), c);
        }
        if let Ok(mut tokens) = fleet.tokens.lock() {
            for (id, t) in snapshot.records::<TokenRecord>(Table::Tokens)? {
                tokens.insert(id, t);
            }
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
        for (key, st) in snapshot.records::<StatusRecord>(Table::Status)? {
            if let Some((c, b)) = key.split_once('/')
                && let Ok(c) = ClusterName::new(c)
            {
                fleet.status.insert((c, b.to_string()), st);
            }
        }
        for (key, a) in snapshot.records::<Assignments>(Table::Desired)? {
            if let Ok(c) = ClusterName::new(&key) {
                fleet.assignments.insert(c, Arc::new(a));
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
        let data = crate::layout::DataDir::new(dir);
        crate::pki::init(&data, "127.0.0.1:1").expect("test PKI");
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
            },
            &snapshot,
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
            .read(crate::credentials::Kind::WebhookSecret)
            .map_err(|e| FleetError::Invalid(e.to_string()))?
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
        let invalid = |e: flotilla_identity::Error| FleetError::Invalid(e.to_string());
        let pki = self.pki();
        let chain = pki
            .signing
            .sign_csr(
                csr_pem,
                &flotilla_identity::Identity::Cluster(name.clone()),
                self.cert_lifetime,
            )
            .map_err(invalid)?;
        let ders = flotilla_identity::pem_to_ders(&chain).map_err(invalid)?;
        let leaf = ders
            .first()
            .ok_or_else(|| FleetError::Invalid("signing produced no certificate".into()))?;
        let serial = flotilla_identity::Identity::serial_hex(leaf).map_err(invalid)?;
        let (_, expires) = flotilla_identity::Identity::validity(leaf).map_err(invalid)?;
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

    pub fn emit_cluster(&self, kind: &'static str, c: &ClusterName, message: &str) {
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

    pub fn next_session_id(&self) -> u64 {
        self.session_ids.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_connected(&self, c: &ClusterName) -> bool {
        self.sessions.contains_key(c)
    }

    pub fn assignments_of(&self, c: &ClusterName) -> Arc<Assignments> {
        self.assignments
            .get(c)
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Recomputes one cluster's assignments; persists and notifies its session on change.
    pub fn reconcile_cluster(&self, name: &ClusterName) {
        let Some(record) = self.clusters.get(name).map(|r| r.clone()) else {
            if self.assignments.remove(name).is_some() {
                self.store
                    .submit(vec![Op::delete(Table::Desired, name.as_str())]);
            }
            return;
        };
        let old = self.assignments_of(name);
        let new = self.compute_assignments(&record, &old);
        if *old != new {
            let now = std::time::Instant::now();
            for (bundle, a) in &new {
                let Some(d) = &a.desired else { continue };
                let changed = old
                    .get(bundle)
                    .and_then(|o| o.desired.as_ref())
                    .is_none_or(|o| o.deployment_id != d.deployment_id);
                if changed {
                    self.assigned_at.insert(
                        (name.clone(), bundle.to_string()),
                        (d.deployment_id.clone(), now),
                    );
                }
            }
            self.store
                .submit(vec![Op::put_json(Table::Desired, name.as_str(), &new)]);
            self.assignments.insert(name.clone(), Arc::new(new));
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
        render::ClusterInfo {
            name: cluster.name.to_string(),
            labels: cluster.labels(),
            groups: groups
                .iter()
                .map(|g| render::GroupInfo {
                    name: g.name.clone(),
                    labels: g.labels.clone(),
                })
                .collect(),
            capabilities: cluster.capabilities.as_ref().map(|c| render::Capabilities {
                kube_version: c.kube_version.clone(),
                api_versions: c.api_versions.clone(),
            }),
        }
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

    fn compute_assignments(&self, cluster: &ClusterRecord, old: &Assignments) -> Assignments {
        let labels = cluster.labels();
        let all_groups = self.group_list();
        let groups = targeting::groups_of(&labels, &all_groups);
        let info = self.cluster_info(cluster, &groups);
        let facts = targeting::ClusterFacts {
            name: cluster.name.as_str(),
            labels: &labels,
            groups: &groups,
        };
        let mut out = Assignments::new();
        let mut live: BTreeMap<Arc<str>, Arc<render::Bundle>> = BTreeMap::new();
        for src in self.sorted_sources() {
            let Ok(rt) = src.runtime.read() else { continue };
            let Some(bundles) = &rt.bundles else {
                // Not loaded since start: keep what was assigned from it (its bundles'
                // overrideTargets are not known yet, so neither is where they go).
                out.extend(
                    old.iter()
                        .filter(|(_, a)| *a.source == *src.spec.name)
                        .map(|(k, a)| (k.clone(), a.clone())),
                );
                continue;
            };
            for entry in bundles {
                // overrideTargets replace the source's targets for this bundle.
                let targeted =
                    targeting::match_bundle(&src.spec.targets, entry.bundle.as_deref(), &facts);
                if !targeted.is_yes() {
                    continue;
                }
                let last_good = old.get(&entry.name).and_then(|a| a.desired.clone());
                let mut assignment = Assignment {
                    source: src.name.clone(),
                    desired: last_good,
                    error: (!entry.errors.is_empty()).then(|| entry.errors.join("\n")),
                    waiting: None,
                    staged: None,
                };
                let Some(bundle) = &entry.bundle else {
                    out.insert(entry.name.clone(), assignment);
                    continue;
                };
                let render::Selection::Deploy(key) = bundle.select(&info) else {
                    continue;
                };
                live.insert(entry.name.clone(), bundle.clone());
                match self.render_cached(entry, bundle, key, &info) {
                    Ok(desired) => assignment.desired = Some(desired),
                    Err(e) => {
                        assignment.error = Some(match assignment.error {
                            Some(prev) => format!("{prev}\n{e}"),
                            None => e,
                        });
                    }
                }
                out.insert(entry.name.clone(), assignment);
            }
        }
        self.apply_depends_on(&cluster.name, &mut out, &live, old);
        self.apply_rollouts(&cluster.name, &mut out, &live, old);
        out
    }

    fn is_paused(&self, bundle_name: &str, bundle: &render::Bundle) -> bool {
        bundle.options().paused || self.paused_rollouts.contains_key(bundle_name)
    }

    /// Holds clusters back from a new deployment until the bundle's rollout lets them
    /// have it; they keep running their live deployment meanwhile.
    fn apply_rollouts(
        &self,
        cluster: &ClusterName,
        out: &mut Assignments,
        live: &BTreeMap<Arc<str>, Arc<render::Bundle>>,
        old: &Assignments,
    ) {
        for (name, bundle) in live {
            if bundle.options().rollout_strategy.is_none() && !self.is_paused(name, bundle) {
                continue;
            }
            let Some(a) = out.get_mut(name) else { continue };
            let (Some(staged), live_id) = (
                a.desired.as_ref(),
                old.get(name).and_then(|o| o.desired.as_ref()),
            ) else {
                continue;
            };
            if live_id.is_some_and(|l| l.deployment_id == staged.deployment_id) {
                continue;
            }
            let plan = self.rollout_plan(name);
            if let Some(why) = plan.held.get(cluster.as_str()) {
                a.staged = Some(staged.deployment_id.clone());
                a.desired = old.get(name).and_then(|o| o.desired.clone());
                a.waiting.get_or_insert_with(|| why.clone());
            }
        }
    }

    /// Forgets the plans of the previous reconcile batch.
    pub fn start_reconcile_batch(&self) {
        let previous = match self.rollout_plans.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        if let Ok(mut p) = self.previous_rollout_plans.lock() {
            *p = previous;
        }
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
                    live_digests.insert(d.digest);
                    live_deployments.insert(d.deployment_id);
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

    /// The bundle's rollout plan for this batch (computed on first use).
    fn rollout_plan(&self, bundle: &str) -> Arc<rollout::Plan> {
        if let Some(p) = self
            .rollout_plans
            .lock()
            .ok()
            .and_then(|p| p.get(bundle).cloned())
        {
            return p;
        }
        let plan = Arc::new(self.plan_rollout(bundle).unwrap_or_default());
        if let Ok(mut p) = self.rollout_plans.lock() {
            p.insert(bundle.to_string(), plan.clone());
        }
        plan
    }

    /// Computes a bundle's rollout from scratch: every cluster its source targets, with
    /// the deployment it runs and the one the current revision wants for it.
    pub fn plan_rollout(&self, bundle_name: &str) -> Option<rollout::Plan> {
        let (src, entry) = self.sorted_sources().into_iter().find_map(|s| {
            let e = s
                .runtime
                .read()
                .ok()?
                .bundles
                .as_ref()?
                .iter()
                .find(|e| *e.name == *bundle_name)
                .cloned()?;
            Some((s, e))
        })?;
        let bundle = entry.bundle.clone()?;
        let all_groups = self.group_list();
        struct Row {
            name: String,
            labels: flotilla_model::Labels,
            groups: Vec<(String, flotilla_model::Labels)>,
            live: Option<String>,
            staged: String,
            state: Option<State>,
            message: String,
        }
        let mut rows = Vec::new();
        let records: Vec<ClusterRecord> = self.clusters.iter().map(|c| c.value().clone()).collect();
        for rec in records {
            let labels = rec.labels();
            let groups = targeting::groups_of(&labels, &all_groups);
            let facts = targeting::ClusterFacts {
                name: rec.name.as_str(),
                labels: &labels,
                groups: &groups,
            };
            if !targeting::match_bundle(&src.spec.targets, Some(&bundle), &facts).is_yes() {
                continue;
            }
            let info = self.cluster_info(&rec, &groups);
            let render::Selection::Deploy(key) = bundle.select(&info) else {
                continue;
            };
            let Ok(staged) = self
                .render_cached(&entry, &bundle, key, &info)
                .map(|d| d.deployment_id)
            else {
                continue;
            };
            let live = self
                .assignments_of(&rec.name)
                .get(bundle_name)
                .and_then(|a| a.desired.as_ref())
                .map(|d| d.deployment_id.to_string());
            let status = self
                .status
                .get(&(rec.name.clone(), bundle_name.to_string()));
            let (state, message) = match (&status, &live) {
                (Some(s), Some(l)) if s.deployment_id == *l => (Some(s.state), s.message.clone()),
                _ => (None, String::new()),
            };
            rows.push(Row {
                name: rec.name.to_string(),
                groups: groups
                    .iter()
                    .map(|g| (g.name.clone(), g.labels.clone()))
                    .collect(),
                labels,
                live,
                staged: staged.to_string(),
                state,
                message,
            });
        }
        let states: Vec<rollout::ClusterState<'_>> = rows
            .iter()
            .map(|r| rollout::ClusterState {
                name: &r.name,
                labels: &r.labels,
                groups: &r.groups,
                live: r.live.as_deref(),
                staged: &r.staged,
                state: r.state,
                message: &r.message,
            })
            .collect();
        // Without a strategy every cluster is one partition (nothing is gated; this only
        // reports progress).
        let strategy = bundle
            .options()
            .rollout_strategy
            .clone()
            .unwrap_or_else(|| render::RolloutStrategy {
                auto_partition_size: Some(render::IntOrString::String("100%".into())),
                ..Default::default()
            });
        Some(rollout::plan(
            &strategy,
            self.is_paused(bundle_name, &bundle),
            &states,
        ))
    }

    /// Holds back bundles whose dependencies are not Ready on this cluster: they keep
    /// their last deployed revision (or none) and show why.
    fn apply_depends_on(
        &self,
        cluster: &ClusterName,
        out: &mut Assignments,
        live: &BTreeMap<Arc<str>, Arc<render::Bundle>>,
        old: &Assignments,
    ) {
        if live.values().all(|b| b.options().depends_on.is_empty()) {
            return;
        }
        let nodes: Vec<depends::Node<'_>> = live
            .iter()
            .map(|(n, b)| depends::Node {
                name: n,
                labels: &b.options().labels,
                depends_on: &b.options().depends_on,
            })
            .collect();
        let state = |dep: &str| {
            let d = out.get(dep).and_then(|a| a.desired.as_ref())?;
            self.status
                .get(&(cluster.clone(), dep.to_string()))
                .filter(|s| s.deployment_id == d.deployment_id.as_str())
                .map(|s| s.state)
        };
        let all_names: std::collections::HashSet<Arc<str>> = self
            .sorted_sources()
            .iter()
            .filter_map(|s| {
                s.runtime.read().ok().map(|rt| {
                    rt.bundles
                        .iter()
                        .flatten()
                        .map(|e| e.name.clone())
                        .collect::<Vec<_>>()
                })
            })
            .flatten()
            .collect();
        let holds = depends::holds(&nodes, state, |n| all_names.contains(n));
        for (name, hold) in holds {
            let Some(a) = out.get_mut(name.as_str()) else {
                continue;
            };
            a.staged = a.desired.as_ref().map(|d| d.deployment_id.clone());
            a.desired = old.get(name.as_str()).and_then(|o| o.desired.clone());
            match hold {
                depends::Hold::Waiting(why) => a.waiting = Some(why),
                depends::Hold::Cycle(why) => a.error = Some(why),
            }
        }
    }

    fn render_cached(
        &self,
        entry: &BundleEntry,
        bundle: &render::Bundle,
        key: render::RenderKey,
        info: &render::ClusterInfo,
    ) -> Result<Desired, String> {
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
                    let bytes = Bytes::from(rendered.manifest.into_bytes());
                    self.store.submit(vec![Op::Put {
                        table: Table::Content,
                        key: digest.to_string(),
                        value: bytes.to_vec(),
                    }]);
                    bytes
                });
                Ok(desired_for(bundle, &options_key, digest))
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

    /// Records a status reported by a cluster's own session.
    pub fn record_status(&self, cluster: &ClusterName, bundle: &str, st: StatusRecord) {
        self.store.submit(vec![Op::put_json(
            Table::Status,
            status_key(cluster, bundle),
            &st,
        )]);
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
        // A rollout in progress may advance when a cluster's state changes.
        let in_progress = |plans: &Mutex<HashMap<String, Arc<rollout::Plan>>>| {
            plans
                .lock()
                .ok()
                .and_then(|p| p.get(bundle).map(|plan| plan.report.phase != "Done"))
        };
        let rolling = in_progress(&self.rollout_plans)
            .or_else(|| in_progress(&self.previous_rollout_plans))
            .unwrap_or(false);
        let changed = self
            .status
            .insert((cluster.clone(), bundle.to_string()), st.clone())
            .is_none_or(|prev| prev.state != st.state || prev.deployment_id != st.deployment_id);
        if changed {
            let _ = self.events.send(FleetEvent {
                cluster: cluster.to_string(),
                bundle: bundle.to_string(),
                state: st.state.to_string(),
                message: st.message.clone(),
                ..FleetEvent::new("StatusChanged")
            });
        }
        if changed && rolling {
            self.trigger(Trigger::All);
        }
        // A bundle held by dependsOn may now go ahead.
        if changed
            && self
                .assignments_of(cluster)
                .values()
                .any(|a| a.waiting.is_some())
        {
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
        let status = self.status.get(&(cluster.clone(), bundle.to_string()));
        if !self.is_connected(cluster) {
            let msg = status
                .map(|s| format!("cluster offline; last reported {}", s.state))
                .unwrap_or_else(|| "cluster offline".into());
            return (State::Offline, msg);
        }
        match (&a.desired, status) {
            (Some(d), Some(s)) if s.deployment_id == d.deployment_id.as_str() => {
                (s.state, s.message.clone())
            }
            (Some(d), _) => (
                State::WaitApplied,
                format!("waiting for the spoke to apply {}", d.deployment_id),
            ),
            (None, _) => (State::ErrApplied, "no deployable revision".into()),
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

    #[test]
    fn a_status_between_a_batch_clearing_its_plans_and_planning_again_advances_the_rollout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fleet, mut triggers) = Fleet::for_tests(dir.path());
        let plan = rollout::Plan {
            report: rollout::RolloutReport {
                phase: "InProgress".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        fleet
            .rollout_plans
            .lock()
            .expect("plans")
            .insert("web".into(), Arc::new(plan));
        // A new batch begins: its plans are computed as its clusters are reconciled.
        fleet.start_reconcile_batch();
        let canary = ClusterName::new("canary").expect("name");
        fleet.record_status(&canary, "web", ready("d-2"));
        assert!(
            matches!(triggers.try_recv(), Ok(Trigger::All)),
            "the canary's Ready must let the rollout move on"
        );

        // A bundle without a rollout in progress triggers nothing.
        fleet.start_reconcile_batch();
        fleet.start_reconcile_batch();
        fleet.record_status(&canary, "web", ready("d-3"));
        assert!(triggers.try_recv().is_err());
    }
}
