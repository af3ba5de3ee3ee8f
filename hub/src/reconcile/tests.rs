//! The reconcile in process, as tables: real bundles (loaded from fleet.yaml folders),
//! rendered directly, and reports given as data. Then property tests: a second pass
//! over its own answer changes nothing, and the order of the inputs does not matter.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use proptest::prelude::*;

use super::*;
use crate::invariants::source_of;

/// Renders every time; the hub's `Renders` caches, which must not change any answer.
struct RenderEveryTime;

impl Renders for RenderEveryTime {
    fn render(
        &self,
        _entry: &BundleEntry,
        bundle: &render::Bundle,
        key: render::RenderKey,
        cluster: &render::ClusterInfo,
    ) -> RenderResult {
        bundle
            .render(cluster)
            .map(|r| Arc::new(desired_for(bundle, &key, r.digest.clone())))
            .map_err(|d| {
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    }
}

/// The spokes' reports as data: (cluster, bundle) → state, about the deployment named,
/// or about whatever the cluster runs when `None`.
#[derive(Default)]
struct Reports(BTreeMap<(String, String), (Option<DeploymentId>, State)>);

impl Reports {
    fn ready_on_anything(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Reports(
            pairs
                .into_iter()
                .map(|k| (k, (None, State::Ready)))
                .collect(),
        )
    }

    fn set(&mut self, cluster: &str, bundle: &str, d: &Desired, state: State) {
        self.0.insert(
            (cluster.into(), bundle.into()),
            (Some(d.deployment_id.clone()), state),
        );
    }
}

impl StatusView for Reports {
    fn reported(
        &self,
        cluster: &ClusterName,
        bundle: &str,
        deployment: &DeploymentId,
    ) -> Option<(State, String)> {
        let (about, state) = self.0.get(&(cluster.to_string(), bundle.to_string()))?;
        about
            .as_ref()
            .is_none_or(|a| a == deployment)
            .then(|| (*state, String::new()))
    }
}

/// A bundle folder with one ConfigMap and the given fleet.yaml, loaded as the hub would.
fn bundle(root: &std::path::Path, name: &str, fleet_yaml: &str) -> Arc<render::Bundle> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("bundle dir");
    std::fs::write(dir.join("fleet.yaml"), fleet_yaml).expect("fleet.yaml");
    std::fs::write(
        dir.join("cm.yaml"),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n"),
    )
    .expect("cm.yaml");
    Arc::new(
        render::load_bundle_dir(&dir, name, &render::Limits::default())
            .unwrap_or_else(|e| panic!("{name} loads: {e:?}")),
    )
}

/// The bundles every test draws from, loaded once.
struct Pool {
    _dir: tempfile::TempDir,
    web: Arc<render::Bundle>,
    db: Arc<render::Bundle>,
    app: Arc<render::Bundle>,
    gated: Arc<render::Bundle>,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    Pool {
        web: bundle(
            root,
            "web",
            "defaultNamespace: web\ntargetCustomizations:\n- name: prod\n  clusterSelector:\n    matchLabels: {env: prod}\n  defaultNamespace: web-prod\n- name: lab\n  clusterSelector:\n    matchLabels: {env: lab}\n  doNotDeploy: true\n",
        ),
        db: bundle(root, "db", "defaultNamespace: db\nlabels: {tier: data}\n"),
        app: bundle(
            root,
            "app",
            "defaultNamespace: app\ndependsOn:\n- name: db\n",
        ),
        gated: bundle(
            root,
            "gated",
            "defaultNamespace: gated\nrolloutStrategy:\n  maxUnavailable: 1\n  partitions:\n  - name: canary\n    clusterSelector:\n      matchLabels: {env: canary}\n  - name: rest\n    clusterSelector:\n      matchExpressions:\n      - {key: env, operator: NotIn, values: [canary]}\n",
        ),
        _dir: dir,
    }
});

fn entry(name: &str, bundle: Option<&Arc<render::Bundle>>, errors: &[&str]) -> Arc<BundleEntry> {
    Arc::new(BundleEntry::new(
        name.into(),
        name.into(),
        bundle.cloned(),
        errors.iter().map(|e| e.to_string()).collect(),
        Vec::new(),
    ))
}

fn source(name: &str, targets: Vec<TargetSpec>, bundles: Vec<Arc<BundleEntry>>) -> SourceView {
    SourceView {
        name: name.into(),
        targets,
        bundles: Some(bundles),
    }
}

fn selector_target(sel: &str) -> TargetSpec {
    TargetSpec {
        cluster_selector: Some(sel.parse().expect("selector")),
        ..Default::default()
    }
}

fn cluster(name: &str, labels: &[(&str, &str)]) -> ClusterView {
    ClusterView {
        name: ClusterName::new(name).expect("name"),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        capabilities: None,
    }
}

fn default_group() -> GroupSpec {
    GroupSpec {
        name: targeting::DEFAULT_GROUP.into(),
        selector: Default::default(),
        labels: Default::default(),
    }
}

fn snapshot<'a>(
    sources: Vec<SourceView>,
    clusters: Vec<ClusterView>,
    previous: HashMap<ClusterName, Arc<Assignments>>,
    status: &'a Reports,
) -> Snapshot<'a> {
    Snapshot {
        sources,
        clusters,
        groups: vec![default_group()],
        previous,
        paused: BTreeSet::new(),
        status,
        renders: &RenderEveryTime,
    }
}

fn name(n: &str) -> ClusterName {
    ClusterName::new(n).expect("name")
}

/// Every cluster's assignments from one batch.
fn all(batch: &Batch<'_>) -> BTreeMap<ClusterName, Assignments> {
    let names: Vec<ClusterName> = batch.cluster_names().cloned().collect();
    names
        .into_iter()
        .filter_map(|c| Some((c.clone(), batch.assignments(&c)?)))
        .collect()
}

fn bundles_of(a: &Assignments) -> Vec<&str> {
    a.keys().map(|k| &**k).collect()
}

fn deployed(a: &Assignments, bundle: &str) -> Option<DeploymentId> {
    a.get(bundle)?
        .desired
        .as_ref()
        .map(|d| d.deployment_id.clone())
}

#[test]
fn targeting_and_customizations_decide_who_gets_what() {
    let p = &*POOL;
    let reports = Reports::default();
    let batch = Batch::new(snapshot(
        vec![
            source("everyone", vec![], vec![entry("web", Some(&p.web), &[])]),
            source(
                "prod-only",
                vec![selector_target("env=prod")],
                vec![entry("db", Some(&p.db), &[])],
            ),
        ],
        vec![
            cluster("dev1", &[("env", "dev")]),
            cluster("prod1", &[("env", "prod")]),
            cluster("prod2", &[("env", "prod")]),
            cluster("lab1", &[("env", "lab")]),
        ],
        HashMap::new(),
        &reports,
    ));
    let got = all(&batch);
    // (cluster, bundles it gets)
    let table: [(&str, &[&str]); 4] = [
        ("dev1", &["web"]),
        ("prod1", &["db", "web"]),
        ("prod2", &["db", "web"]),
        // doNotDeploy for env=lab.
        ("lab1", &[]),
    ];
    for (c, want) in table {
        assert_eq!(bundles_of(&got[&name(c)]), want, "{c}");
    }
    let web = |c: &str| deployed(&got[&name(c)], "web").expect("web deployed");
    assert_eq!(
        web("prod1"),
        web("prod2"),
        "one customization, one deployment"
    );
    assert_ne!(
        web("prod1"),
        web("dev1"),
        "the prod customization renders differently"
    );
    assert_eq!(*got[&name("prod1")]["db"].source, *"prod-only");
}

#[test]
fn a_label_change_moves_a_bundle_and_a_deleted_cluster_has_no_assignments() {
    let p = &*POOL;
    let reports = Reports::default();
    let sources = || {
        vec![source(
            "prod-only",
            vec![selector_target("env=prod")],
            vec![entry("db", Some(&p.db), &[])],
        )]
    };
    let before = Batch::new(snapshot(
        sources(),
        vec![
            cluster("c1", &[("env", "dev")]),
            cluster("gone", &[("env", "prod")]),
        ],
        HashMap::new(),
        &reports,
    ));
    assert!(before.assignments(&name("c1")).expect("c1").is_empty());
    let previous: HashMap<ClusterName, Arc<Assignments>> = all(&before)
        .into_iter()
        .map(|(c, a)| (c, Arc::new(a)))
        .collect();
    let after = Batch::new(snapshot(
        sources(),
        vec![cluster("c1", &[("env", "prod")])],
        previous,
        &reports,
    ));
    assert_eq!(
        bundles_of(&after.assignments(&name("c1")).expect("c1")),
        ["db"]
    );
    assert_eq!(after.assignments(&name("gone")), None);
}

#[test]
fn a_broken_revision_keeps_the_last_good_deployment_and_says_why() {
    let p = &*POOL;
    let reports = Reports::default();
    let good = Batch::new(snapshot(
        vec![source("s", vec![], vec![entry("db", Some(&p.db), &[])])],
        vec![cluster("c1", &[])],
        HashMap::new(),
        &reports,
    ));
    let first = good.assignments(&name("c1")).expect("c1");
    let last_good = deployed(&first, "db").expect("deployed");
    let previous = HashMap::from([(name("c1"), Arc::new(first))]);
    // The poller publishes a broken bundle with no good revision of its own...
    let broken = Batch::new(snapshot(
        vec![source(
            "s",
            vec![],
            vec![entry("db", None, &["fleet.yaml:3:1: bad"])],
        )],
        vec![cluster("c1", &[])],
        previous.clone(),
        &reports,
    ));
    let a = broken.assignments(&name("c1")).expect("c1");
    assert_eq!(deployed(&a, "db"), Some(last_good.clone()));
    assert_eq!(a["db"].error.as_deref(), Some("fleet.yaml:3:1: bad"));
    // ... or with the last good bundle it kept: the same deployment, and the error.
    let kept = Batch::new(snapshot(
        vec![source(
            "s",
            vec![],
            vec![entry("db", Some(&p.db), &["db.yaml:1:1: bad"])],
        )],
        vec![cluster("c1", &[])],
        previous,
        &reports,
    ));
    let a = kept.assignments(&name("c1")).expect("c1");
    assert_eq!(deployed(&a, "db"), Some(last_good));
    assert!(a["db"].error.is_some());
}

#[test]
fn a_removed_bundle_is_unassigned_but_a_source_not_loaded_yet_keeps_its_own() {
    let p = &*POOL;
    let reports = Reports::default();
    let first = Batch::new(snapshot(
        vec![
            source("a", vec![], vec![entry("db", Some(&p.db), &[])]),
            source("b", vec![], vec![entry("web", Some(&p.web), &[])]),
        ],
        vec![cluster("c1", &[])],
        HashMap::new(),
        &reports,
    ))
    .assignments(&name("c1"))
    .expect("c1");
    let previous = HashMap::from([(name("c1"), Arc::new(first.clone()))]);
    let mut b_unloaded = source("b", vec![], vec![]);
    b_unloaded.bundles = None;
    let next = Batch::new(snapshot(
        vec![source("a", vec![], vec![]), b_unloaded],
        vec![cluster("c1", &[])],
        previous,
        &reports,
    ))
    .assignments(&name("c1"))
    .expect("c1");
    assert_eq!(bundles_of(&next), ["web"]);
    assert_eq!(next["web"], first["web"]);
}

#[test]
fn depends_on_holds_a_bundle_until_its_dependency_from_another_source_is_ready() {
    let p = &*POOL;
    let sources = || {
        vec![
            source("apps", vec![], vec![entry("app", Some(&p.app), &[])]),
            source("data", vec![], vec![entry("db", Some(&p.db), &[])]),
        ]
    };
    let none = Reports::default();
    let a = Batch::new(snapshot(
        sources(),
        vec![cluster("c1", &[])],
        HashMap::new(),
        &none,
    ))
    .assignments(&name("c1"))
    .expect("c1");
    let db = a["db"].desired.clone().expect("db goes first");
    assert_eq!(a["app"].desired, None);
    assert!(a["app"].staged.is_some());
    assert_eq!(
        a["app"].waiting.as_deref(),
        Some("waiting for dependencies: db")
    );

    // NotReady on db's deployment: still waiting. Ready: app goes.
    let previous = HashMap::from([(name("c1"), Arc::new(a))]);
    for (state, goes) in [(State::NotReady, false), (State::Ready, true)] {
        let mut reports = Reports::default();
        reports.set("c1", "db", &db, state);
        let a = Batch::new(snapshot(
            sources(),
            vec![cluster("c1", &[])],
            previous.clone(),
            &reports,
        ))
        .assignments(&name("c1"))
        .expect("c1");
        assert_eq!(a["app"].desired.is_some(), goes, "db {state}");
        assert_eq!(a["app"].waiting.is_none(), goes, "db {state}");
    }

    // A dependency no source has is named as missing.
    let alone = Batch::new(snapshot(
        vec![source(
            "apps",
            vec![],
            vec![entry("app", Some(&p.app), &[])],
        )],
        vec![cluster("c1", &[])],
        HashMap::new(),
        &none,
    ))
    .assignments(&name("c1"))
    .expect("c1");
    assert!(
        alone["app"]
            .waiting
            .as_deref()
            .is_some_and(|w| w.contains("no bundle named db")),
        "{:?}",
        alone["app"]
    );
}

/// Clusters that all run `old` of `gated`, Ready.
fn on_old(clusters: &[ClusterView], old: &Arc<Desired>) -> HashMap<ClusterName, Arc<Assignments>> {
    clusters
        .iter()
        .map(|c| {
            let a = Assignment {
                source: "s".into(),
                desired: Some(old.clone()),
                error: None,
                waiting: None,
                staged: None,
            };
            (
                c.name.clone(),
                Arc::new(Assignments::from([("gated".into(), a)])),
            )
        })
        .collect()
}

#[test]
fn partitions_go_in_order_and_max_unavailable_bounds_each() {
    let p = &*POOL;
    let old = Arc::new(Desired {
        deployment_id: DeploymentId::compute(&ContentDigest::of(b"old"), "{}"),
        digest: ContentDigest::of(b"old"),
        options: DeployOptions::default(),
    });
    let clusters = vec![
        cluster("canary1", &[("env", "canary")]),
        cluster("canary2", &[("env", "canary")]),
        cluster("prod1", &[("env", "prod")]),
    ];
    let mut reports = Reports::default();
    for c in &clusters {
        reports.set(c.name.as_str(), "gated", &old, State::Ready);
    }
    let batch = Batch::new(snapshot(
        vec![source(
            "s",
            vec![],
            vec![entry("gated", Some(&p.gated), &[])],
        )],
        clusters.clone(),
        on_old(&clusters, &old),
        &reports,
    ));
    let got = all(&batch);
    let moved: Vec<&str> = got
        .iter()
        .filter(|(_, a)| a["gated"].desired.as_ref() != Some(&old))
        .map(|(c, _)| c.as_str())
        .collect();
    assert_eq!(
        moved,
        ["canary1"],
        "one canary at a time (maxUnavailable 1)"
    );
    let held = &got[&name("prod1")]["gated"];
    assert_eq!(held.desired.as_ref(), Some(&old), "prod keeps running old");
    assert!(held.staged.is_some());
    assert!(
        held.waiting
            .as_deref()
            .is_some_and(|w| w.contains("canary")),
        "{held:?}"
    );
    let plan = batch.plan("gated").expect("planned");
    assert_eq!(plan.report.phase, RolloutPhase::InProgress);
    assert_eq!(
        batch.rollouts(),
        [("gated".into(), RolloutPhase::InProgress)]
    );
}

#[test]
fn a_paused_rollout_holds_every_cluster_until_it_is_resumed() {
    let p = &*POOL;
    let old = Arc::new(Desired {
        deployment_id: DeploymentId::compute(&ContentDigest::of(b"old"), "{}"),
        digest: ContentDigest::of(b"old"),
        options: DeployOptions::default(),
    });
    let clusters = vec![cluster("c1", &[("env", "canary")])];
    let mut reports = Reports::default();
    reports.set("c1", "gated", &old, State::Ready);
    let run = |paused: bool| {
        let mut snap = snapshot(
            vec![source(
                "s",
                vec![],
                vec![entry("gated", Some(&p.gated), &[])],
            )],
            clusters.clone(),
            on_old(&clusters, &old),
            &reports,
        );
        if paused {
            snap.paused.insert("gated".into());
        }
        let batch = Batch::new(snap);
        let a = batch.assignments(&name("c1")).expect("c1");
        (a, batch.rollouts())
    };
    let (a, phases) = run(true);
    assert_eq!(a["gated"].desired.as_ref(), Some(&old));
    assert_eq!(a["gated"].waiting.as_deref(), Some("rollout paused"));
    assert_eq!(phases, [("gated".into(), RolloutPhase::Paused)]);
    let (a, _) = run(false);
    assert_ne!(a["gated"].desired.as_ref(), Some(&old));
}

// Properties over generated fleets: which cluster has which labels, what each source
// targets and publishes, which reports say Ready, and the order of every input.

const ENVS: [&str; 4] = ["dev", "prod", "lab", "canary"];

#[derive(Debug, Clone)]
struct Fleet {
    /// env index per cluster.
    clusters: Vec<usize>,
    /// Per source: target choice and which pool bundles it publishes.
    sources: Vec<(usize, Vec<bool>)>,
    ready: Vec<bool>,
    paused: bool,
}

fn fleets() -> impl Strategy<Value = Fleet> {
    (
        prop::collection::vec(0..ENVS.len(), 1..7),
        prop::collection::vec((0..3usize, prop::collection::vec(any::<bool>(), 4)), 1..3),
        prop::collection::vec(any::<bool>(), 28),
        any::<bool>(),
    )
        .prop_map(|(clusters, sources, ready, paused)| Fleet {
            clusters,
            sources,
            ready,
            paused,
        })
}

impl Fleet {
    fn clusters(&self) -> Vec<ClusterView> {
        self.clusters
            .iter()
            .enumerate()
            .map(|(i, e)| cluster(&format!("c{i}"), &[("env", ENVS[*e])]))
            .collect()
    }

    fn sources(&self, gated: bool) -> Vec<SourceView> {
        let p = &*POOL;
        let pool = [
            ("web", &p.web),
            ("db", &p.db),
            ("app", &p.app),
            ("gated", &p.gated),
        ];
        self.sources
            .iter()
            .enumerate()
            .map(|(i, (target, publishes))| {
                let targets = match target {
                    0 => vec![],
                    1 => vec![selector_target("env in (prod,canary)")],
                    _ => vec![selector_target("env!=lab")],
                };
                let bundles = pool
                    .iter()
                    .zip(publishes)
                    .filter(|((n, _), on)| **on && (gated || *n != "gated"))
                    .map(|((n, b), _)| entry(n, Some(b), &[]))
                    .collect();
                source(&format!("s{i}"), targets, bundles)
            })
            .collect()
    }

    fn reports(&self) -> Reports {
        let bundles = ["web", "db", "app", "gated"];
        Reports::ready_on_anything(
            (0..self.clusters.len())
                .flat_map(|c| bundles.iter().map(move |b| (c, *b)))
                .zip(&self.ready)
                .filter(|(_, r)| **r)
                .map(|((c, b), _)| (format!("c{c}"), b.to_string())),
        )
    }
}

fn as_previous(a: &BTreeMap<ClusterName, Assignments>) -> HashMap<ClusterName, Arc<Assignments>> {
    a.iter()
        .map(|(c, a)| (c.clone(), Arc::new(a.clone())))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Without a rollout to advance, reconciling the fleet's own answer changes nothing.
    #[test]
    fn reconcile_is_idempotent(f in fleets()) {
        let reports = f.reports();
        let first = all(&Batch::new(snapshot(f.sources(false), f.clusters(), HashMap::new(), &reports)));
        let second = all(&Batch::new(snapshot(f.sources(false), f.clusters(), as_previous(&first), &reports)));
        prop_assert_eq!(first, second);
    }

    /// Sources, clusters, groups and the clusters of a batch in any order: same answer.
    #[test]
    fn the_order_of_inputs_does_not_matter(
        f in fleets(),
        seed in any::<u64>(),
    ) {
        let reports = f.reports();
        let build = |shuffle: bool| {
            let mut sources = f.sources(true);
            let mut clusters = f.clusters();
            let mut groups = vec![
                default_group(),
                GroupSpec { name: "prod".into(), selector: "env=prod".parse().expect("sel"), labels: Default::default() },
            ];
            if shuffle {
                let rot = |n: usize| usize::try_from(seed % (n.max(1) as u64)).unwrap_or(0);
                let (s, c, g) = (rot(sources.len()), rot(clusters.len()), rot(groups.len()));
                sources.rotate_left(s);
                sources.reverse();
                clusters.rotate_left(c);
                clusters.reverse();
                groups.rotate_left(g);
            }
            let mut snap = snapshot(sources, clusters, HashMap::new(), &reports);
            snap.groups = groups;
            if f.paused {
                snap.paused.insert("gated".into());
            }
            snap
        };
        let plain = Batch::new(build(false));
        let shuffled = Batch::new(build(true));
        // The shuffled batch decides its clusters in reverse order.
        let mut names: Vec<ClusterName> = shuffled.cluster_names().cloned().collect();
        names.reverse();
        let reversed: BTreeMap<ClusterName, Assignments> = names
            .into_iter()
            .filter_map(|c| Some((c.clone(), shuffled.assignments(&c)?)))
            .collect();
        prop_assert_eq!(all(&plain), reversed);
        prop_assert_eq!(plain.rollouts(), shuffled.rollouts());
    }
}

/// Renders once per (bundle, customization), as the hub does: what a fleet holds per
/// pair is then what the reconcile shares, not one render per cluster.
#[derive(Default)]
struct RenderOnce(Mutex<HashMap<(Arc<str>, render::RenderKey), RenderResult>>);

impl Renders for RenderOnce {
    fn render(
        &self,
        entry: &BundleEntry,
        bundle: &render::Bundle,
        key: render::RenderKey,
        cluster: &render::ClusterInfo,
    ) -> RenderResult {
        let slot = (entry.name.clone(), key.clone());
        if let Some(hit) = self.0.lock().ok().and_then(|c| c.get(&slot).cloned()) {
            return hit;
        }
        let r = RenderEveryTime.render(entry, bundle, key, cluster);
        if let Ok(mut c) = self.0.lock() {
            c.insert(slot, r.clone());
        }
        r
    }
}

/// The process's resident memory, from /proc (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Issue 18's budget: the hub holds at most 256 bytes per (cluster, bundle) pair at
/// 10,000 clusters × 50 bundles. Measured as the growth of the process's RSS while the
/// fleet's assignments are built the way `Fleet::reconcile` keeps them, then each pair's
/// report the way `Fleet::record_status` keeps it, so it must run
/// alone: `cargo test -p flotilla-hub --lib memory_per_pair -- --ignored --nocapture`.
#[test]
#[ignore = "measures the process's RSS: run alone with --ignored"]
fn memory_per_pair_at_10000_clusters_by_50_bundles_stays_within_256_bytes() {
    const CLUSTERS: usize = 10_000;
    const BUNDLES: usize = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let entries: Vec<Arc<BundleEntry>> = (0..BUNDLES)
        .map(|i| {
            let n = format!("bundle-{i:02}");
            let b = bundle(dir.path(), &n, "defaultNamespace: app\n");
            entry(&n, Some(&b), &[])
        })
        .collect();
    let clusters: Vec<ClusterView> = (0..CLUSTERS)
        .map(|i| cluster(&format!("cluster-{i:05}"), &[("env", ENVS[i % 4])]))
        .collect();
    let reports = Reports::default();
    let renders = RenderOnce::default();
    let mut snap = snapshot(
        vec![source("apps", vec![], entries)],
        clusters,
        HashMap::new(),
        &reports,
    );
    snap.renders = &renders;
    let batch = Batch::new(snap);
    let names: Vec<ClusterName> = batch.cluster_names().cloned().collect();
    // Render every bundle once before measuring: renders are per bundle, not per pair.
    let _ = batch.assignments(&names[0]);

    let before = rss_bytes().expect("RSS from /proc");
    let fleet: dashmap::DashMap<ClusterName, Arc<Assignments>> = dashmap::DashMap::new();
    for c in &names {
        let a = batch.assignments(c).expect("cluster");
        assert_eq!(a.len(), BUNDLES);
        fleet.insert(c.clone(), Arc::new(a));
    }
    let after = rss_bytes().expect("RSS from /proc");
    let pairs = (CLUSTERS * BUNDLES) as u64;
    let per_pair = after.saturating_sub(before) / pairs;
    println!("assignments: {per_pair} bytes per (cluster, bundle) pair over {pairs} pairs");

    // Each pair's last report, kept as `Fleet::record_status` keeps it (Ready, no
    // resources, the deployment id as it arrives from the wire).
    let before = rss_bytes().expect("RSS from /proc");
    let status = crate::statuses::Statuses::default();
    for e in fleet.iter() {
        for (bundle, a) in e.value().iter() {
            let d = a.desired.as_ref().expect("deployed");
            let st = crate::records::StatusRecord {
                deployment_id: d.deployment_id.to_string(),
                state: State::Ready,
                message: String::new(),
                resources: Vec::new(),
                updated_at: 0,
            };
            status.insert(e.key(), bundle, st, e.value());
        }
    }
    let after = rss_bytes().expect("RSS from /proc");
    let status_per_pair = after.saturating_sub(before) / pairs;
    println!("status reports: {status_per_pair} bytes per pair");
    let total = per_pair + status_per_pair;
    println!("everything per pair: {total} bytes");
    assert!(total <= 256, "{total} bytes per pair");
    drop((fleet, status));
}

#[test]
fn the_reconcile_does_no_io_takes_no_lock_and_reads_no_clock() {
    let code = source_of(include_str!("../reconcile.rs"));
    for banned in [
        "std::fs",
        "tokio",
        "Instant",
        "SystemTime",
        "now_unix",
        ".lock()",
        ".read()",
        ".write()",
        "crate::store",
        ".submit(",
        ".commit(",
        "DashMap",
        "RwLock",
    ] {
        assert!(!code.contains(banned), "reconcile.rs uses {banned}");
    }
}

#[test]
fn only_the_reconcile_driver_writes_assignments() {
    let writers = [
        ("server/admin.rs", include_str!("../server/admin.rs")),
        (
            "server/registration.rs",
            include_str!("../server/registration.rs"),
        ),
        ("server/sync.rs", include_str!("../server/sync.rs")),
        ("server/mod.rs", include_str!("../server/mod.rs")),
        ("sources.rs", include_str!("../sources.rs")),
        ("renewals.rs", include_str!("../renewals.rs")),
        ("cli.rs", include_str!("../cli.rs")),
    ];
    for (file, text) in writers {
        for write in [
            "assignments.insert(",
            "assignments.remove(",
            "Table::Desired",
        ] {
            assert!(
                !source_of(text).contains(write),
                "{file} writes assignments ({write})"
            );
        }
    }
    let fleet = source_of(include_str!("../fleet.rs"));
    // `apply` (inserts and removes) and `restore` (loads them back from the store).
    assert_eq!(fleet.matches("self.assignments.insert(").count(), 1);
    assert_eq!(fleet.matches("self.assignments.remove(").count(), 1);
}
