//! The dashboard's pages: the fleet overview, a cluster and a bundle. Each is rendered
//! whole on every request from the same read functions the Admin API answers with
//! (`AdminService::{clusters, sources, bundles, status_rows, rollout_view}`) and from
//! the deployment history's query, so a page and `flotilla ... -o json` cannot disagree.
//! Nothing here writes to the fleet.

use std::collections::BTreeMap;
use std::fmt::Write;

use flotilla_model::ClusterName;
use flotilla_proto::v1 as pb;

use super::chart;
use super::html::{Page, bundle_link, cluster_link, commit, esc, state_badge};
use crate::history::{Entry, Filter};
use crate::records::{now_unix, rfc3339};
use crate::server::AdminService;

/// History rows shown on a cluster or bundle page (the newest).
const HISTORY_ROWS: usize = 50;

/// Counts of `states` as badges, worst first as `Summary` orders them, then the rest.
fn state_counts<'a>(states: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in states {
        *counts
            .entry(if s.is_empty() { "untargeted" } else { s })
            .or_default() += 1;
    }
    let mut out = String::from("<ul class=\"counts\">");
    for (state, n) in counts {
        let _ = write!(
            out,
            "<li data-state=\"{}\">{} <b>{n}</b></li>",
            esc(state),
            state_badge(state)
        );
    }
    out.push_str("</ul>\n");
    out
}

fn text_or_dash(s: &str) -> String {
    if s.is_empty() {
        "—".to_string()
    } else {
        esc(s).to_string()
    }
}

/// An error or message block: kept verbatim (file:line lines), escaped.
fn pre(class: &str, s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("<pre class=\"{}\">{}</pre>", esc(class), esc(s))
    }
}

fn rollout_table(r: &pb::Rollout) -> String {
    let mut out = format!(
        "<div class=\"rollout\" data-bundle=\"{}\" data-phase=\"{}\"><p>{} {} <span class=\"phase\">{}</span>{} {}</p>\
         <table><thead><tr><th>partition</th><th>clusters</th><th>done</th><th>updating</th>\
         <th>waiting</th><th>max unavailable</th></tr></thead><tbody>",
        esc(&r.bundle),
        esc(&r.phase),
        bundle_link(&r.bundle),
        "rollout",
        esc(&r.phase),
        if r.paused { " (paused)" } else { "" },
        esc(&r.message),
    );
    for p in &r.partitions {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            p.clusters,
            p.done,
            p.updating,
            p.waiting,
            p.max_unavailable
        );
    }
    out.push_str("</tbody></table></div>\n");
    out
}

/// `/`: clusters and bundles by state, sources with their commit and errors, and the
/// rollouts in progress with their partitions.
pub fn overview(admin: &AdminService) -> String {
    let clusters = admin.clusters();
    let bundles = admin.bundles();
    let sources = admin.sources();
    let mut page = Page::new("Fleet");

    page.h2("Clusters");
    page.raw(state_counts(clusters.iter().map(|c| c.state.as_str())));
    page.raw(
        "<table id=\"clusters\"><thead><tr><th>cluster</th><th>state</th><th>bundles Ready</th>\
         <th>connected</th><th>last seen</th><th>agent</th></tr></thead><tbody>\n",
    );
    for c in &clusters {
        page.raw(format_args!(
            "<tr data-cluster=\"{}\" data-state=\"{}\"><td>{}</td><td>{}</td><td>{}/{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&c.name),
            esc(&c.state),
            cluster_link(&c.name),
            state_badge(&c.state),
            c.bundles_ready,
            c.bundles,
            if c.connected { "yes" } else { "no" },
            esc(&c.last_seen),
            text_or_dash(&c.agent_version),
        ));
    }
    page.raw("</tbody></table>\n");

    page.h2("Bundles");
    page.raw(state_counts(bundles.iter().map(|b| b.state.as_str())));
    page.raw(bundles_table(&bundles));

    page.h2("Sources");
    page.raw(
        "<table id=\"sources\"><thead><tr><th>source</th><th>repository</th><th>branch</th>\
         <th>commit</th><th>bundles</th><th>last poll</th><th>error</th></tr></thead><tbody>\n",
    );
    for s in &sources {
        page.raw(format_args!(
            "<tr data-source=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>\n",
            esc(&s.name),
            esc(&s.name),
            esc(&s.repo),
            text_or_dash(if s.revision.is_empty() {
                &s.branch
            } else {
                &s.revision
            }),
            commit(&s.commit),
            s.bundles,
            text_or_dash(&s.last_poll),
            pre("error", &s.error),
        ));
    }
    page.raw("</tbody></table>\n");

    page.h2("Rollouts in progress");
    let in_progress: Vec<pb::Rollout> = bundles
        .iter()
        .filter_map(|b| admin.rollout_view(&b.name).ok())
        .filter(|r| r.phase != "Done")
        .collect();
    if in_progress.is_empty() {
        page.p("muted", "No rollout in progress.");
    }
    for r in &in_progress {
        page.raw(rollout_table(r));
    }
    page.finish()
}

fn bundles_table(bundles: &[pb::Bundle]) -> String {
    let mut out = String::from(
        "<table id=\"bundles\"><thead><tr><th>bundle</th><th>source</th><th>commit</th>\
         <th>state</th><th>Ready</th><th>error</th></tr></thead><tbody>\n",
    );
    for b in bundles {
        let _ = writeln!(
            out,
            "<tr data-bundle=\"{}\" data-state=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}/{}</td><td>{}</td></tr>",
            esc(&b.name),
            esc(&b.state),
            bundle_link(&b.name),
            esc(&b.source),
            commit(&b.commit),
            state_badge(&b.state),
            b.ready,
            b.clusters,
            pre("error", &b.error),
        );
    }
    out.push_str("</tbody></table>\n");
    out
}

/// Where a cluster's effective label comes from, as the page words it.
fn label_origin(c: &pb::Cluster, key: &str) -> &'static str {
    match flotilla_proto::convert::LabelOrigin::of(c, key) {
        flotilla_proto::convert::LabelOrigin::Hub => "hub",
        flotilla_proto::convert::LabelOrigin::Token => "join token",
        flotilla_proto::convert::LabelOrigin::Spoke => "spoke (accepted)",
    }
}

/// `/clusters/NAME`: the cluster, its labels with their origins, its bundles and its
/// history. `None` when there is no such cluster.
pub async fn cluster(
    admin: &AdminService,
    history: &crate::history::History,
    name: &str,
) -> Option<String> {
    let cluster_name = ClusterName::new(name).ok()?;
    let c = admin.cluster_view(&cluster_name)?;
    let mut page = Page::new(&format!("Cluster {name}"));
    page.raw(format_args!(
        "<dl class=\"facts\" data-cluster=\"{}\" data-state=\"{}\"><dt>state</dt><dd>{}</dd>\
         <dt>connected</dt><dd>{}</dd><dt>agent</dt><dd>{}</dd><dt>Kubernetes</dt><dd>{}</dd>\
         <dt>last seen</dt><dd>{}</dd><dt>registered</dt><dd>{}</dd>\
         <dt>certificate expires</dt><dd>{}</dd>{}</dl>\n",
        esc(&c.name),
        esc(&c.state),
        state_badge(&c.state),
        if c.connected { "yes" } else { "no" },
        text_or_dash(&c.agent_version),
        text_or_dash(&c.kube_version),
        esc(&c.last_seen),
        esc(&c.registered),
        esc(&c.cert_expires),
        if c.revoked {
            "<dt>revoked</dt><dd>yes</dd>"
        } else {
            ""
        },
    ));

    page.h2("Labels");
    page.raw("<table id=\"labels\"><thead><tr><th>key</th><th>value</th><th>origin</th></tr></thead><tbody>\n");
    for (k, v) in &c.labels {
        page.raw(format_args!(
            "<tr data-label=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(k),
            esc(k),
            esc(v),
            label_origin(&c, k)
        ));
    }
    page.raw("</tbody></table>\n");
    if !c.pending_labels.is_empty() {
        page.p(
            "muted",
            "Reported by the spoke and not trusted until an admin accepts them \
             (flotilla cluster accept-labels):",
        );
        page.raw("<table id=\"pending-labels\"><tbody>\n");
        for (k, v) in &c.pending_labels {
            page.raw(format_args!(
                "<tr><td>{}</td><td>{}</td></tr>\n",
                esc(k),
                esc(v)
            ));
        }
        page.raw("</tbody></table>\n");
    }
    if !c.removed_labels.is_empty() {
        page.p(
            "muted",
            &format!("Removed on the hub: {}", c.removed_labels.join(", ")),
        );
    }

    page.h2("Bundles");
    let rows = admin
        .status_rows(&pb::GetStatusRequest {
            cluster: c.name.clone(),
            ..Default::default()
        })
        .map(|r| r.rows)
        .unwrap_or_default();
    page.raw(status_table(&rows, Column::Bundle));

    page.h2("History");
    page.raw(
        history_table(
            history,
            Filter {
                cluster: Some(cluster_name),
                ..Default::default()
            },
            Column::Bundle,
        )
        .await,
    );
    Some(page.finish())
}

/// Which name a per-pair table leads with: the other one is the page's own.
#[derive(Clone, Copy)]
enum Column {
    Cluster,
    Bundle,
}

fn status_table(rows: &[pb::StatusRow], lead: Column) -> String {
    let head = match lead {
        Column::Cluster => "cluster",
        Column::Bundle => "bundle",
    };
    let mut out = format!(
        "<table id=\"status\"><thead><tr><th>{head}</th><th>state</th><th>message</th>\
         <th>deployment</th><th>updated</th><th>resources not Ready</th></tr></thead><tbody>\n"
    );
    for r in rows {
        let link = match lead {
            Column::Cluster => cluster_link(&r.cluster),
            Column::Bundle => bundle_link(&r.bundle),
        };
        let mut resources = String::new();
        for res in r.resources.iter().filter(|x| x.state != "Ready") {
            let ns = if res.namespace.is_empty() {
                String::new()
            } else {
                format!("{}/", esc(&res.namespace))
            };
            let _ = write!(
                resources,
                "<li>{} {}{} {} {}</li>",
                esc(&res.kind),
                ns,
                esc(&res.name),
                state_badge(&res.state),
                esc(&res.message)
            );
        }
        let _ = writeln!(
            out,
            "<tr data-cluster=\"{}\" data-bundle=\"{}\" data-state=\"{}\"><td>{}</td><td>{}</td>\
             <td>{}</td><td><code>{}</code></td><td>{}</td><td><ul>{}</ul></td></tr>",
            esc(&r.cluster),
            esc(&r.bundle),
            esc(&r.state),
            link,
            state_badge(&r.state),
            pre("message", &r.message),
            esc(&r.deployment_id),
            esc(&r.updated),
            resources,
        );
    }
    out.push_str("</tbody></table>\n");
    out
}

/// The newest `HISTORY_ROWS` entries of the first `MAX_LIMIT` the filter reads (all of
/// a cluster's, at the default retention), newest first.
async fn history_table(history: &crate::history::History, filter: Filter, lead: Column) -> String {
    let page = match history
        .query(&Filter {
            limit: crate::history::MAX_LIMIT,
            ..filter
        })
        .await
    {
        Ok(p) => p,
        Err(e) => {
            return format!(
                "<p class=\"error\">Reading the history: {}</p>\n",
                esc(&e.to_string())
            );
        }
    };
    let mut rows = page.rows;
    if rows.is_empty() {
        return "<p class=\"muted\">Nothing in the history yet.</p>\n".to_string();
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.entry.at()));
    rows.truncate(HISTORY_ROWS);
    let head = match lead {
        Column::Cluster => "cluster",
        Column::Bundle => "bundle",
    };
    let mut out = format!(
        "<table id=\"history\"><thead><tr><th>time</th><th>{head}</th><th>what</th>\
         <th>commit</th><th>deployment</th><th>detail</th></tr></thead><tbody>\n"
    );
    for row in rows {
        let link = match lead {
            Column::Cluster => cluster_link(row.cluster.as_str()),
            Column::Bundle => bundle_link(&row.bundle),
        };
        let time = rfc3339(row.entry.at());
        let (what, commit_id, deployment, detail) = match &row.entry {
            Entry::Deployment(d) => {
                let outcome = if d.failed() {
                    format!(
                        "failed {}: {}",
                        d.failed_at.map(rfc3339).unwrap_or_default(),
                        d.failure
                    )
                } else if let Some(r) = d.ready_at {
                    format!("Ready {}", rfc3339(r))
                } else if let Some(a) = d.applied_at {
                    format!("applied {}", rfc3339(a))
                } else {
                    "not applied yet".to_string()
                };
                (
                    "deployed".to_string(),
                    d.commit.as_str(),
                    d.deployment_id.as_str(),
                    outcome,
                )
            }
            Entry::StateChange(s) => (
                format!("{} → {}", s.from, s.to),
                "",
                s.deployment_id.as_str(),
                s.message.clone(),
            ),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&time),
            link,
            esc(&what),
            commit(commit_id),
            esc(deployment),
            pre("detail", &detail),
        );
    }
    out.push_str("</tbody></table>\n");
    out
}

/// `/bundles/NAME`: the bundle, its targets, its rollout and the chart of its progress
/// at the current commit, its state on each cluster with the resources that are not
/// Ready, its warnings and its history. `None` when there is no such bundle.
pub async fn bundle(
    admin: &AdminService,
    history: &crate::history::History,
    name: &str,
) -> Option<String> {
    let b = admin.bundles().into_iter().find(|b| b.name == name)?;
    let mut page = Page::new(&format!("Bundle {name}"));
    page.raw(format_args!(
        "<dl class=\"facts\" data-bundle=\"{}\" data-state=\"{}\"><dt>state</dt><dd>{}</dd>\
         <dt>Ready</dt><dd>{}/{}</dd><dt>source</dt><dd>{}</dd><dt>path</dt><dd>{}</dd>\
         <dt>commit</dt><dd>{}</dd></dl>\n",
        esc(&b.name),
        esc(&b.state),
        state_badge(&b.state),
        b.ready,
        b.clusters,
        esc(&b.source),
        esc(&b.path),
        commit(&b.commit),
    ));
    if !b.error.is_empty() {
        page.h2("Error");
        page.raw(pre("error bundle-error", &b.error));
    }
    if !b.warnings.is_empty() {
        page.h2("Warnings");
        page.raw("<ul id=\"warnings\">");
        for w in &b.warnings {
            page.raw(format_args!("<li>{}</li>", esc(w)));
        }
        page.raw("</ul>\n");
    }

    page.h2("Targets");
    let targets = admin
        .sources()
        .into_iter()
        .find(|s| s.name == b.source)
        .map(|s| s.targets)
        .unwrap_or_default();
    if targets.is_empty() {
        page.p(
            "muted",
            "The source has no targets of its own: its selector picks the clusters.",
        );
    } else {
        page.raw("<table id=\"targets\"><thead><tr><th>name</th><th>cluster selector</th>\
                  <th>cluster group</th><th>group selector</th><th>cluster name</th></tr></thead><tbody>\n");
        for t in &targets {
            page.raw(format_args!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                text_or_dash(&t.name),
                text_or_dash(&t.cluster_selector),
                text_or_dash(&t.cluster_group),
                text_or_dash(&t.cluster_group_selector),
                text_or_dash(&t.cluster_name),
            ));
        }
        page.raw("</tbody></table>\n");
    }

    page.h2("Rollout");
    if let Ok(r) = admin.rollout_view(name) {
        page.raw(rollout_table(&r));
    }
    // The commit the bundle was last deployed at (a broken newer commit deploys nothing),
    // and each cluster's deployment at it: the clusters' current deployments, in memory.
    let current = history.current(&b.name);
    let latest = current
        .iter()
        .max_by_key(|(_, d)| d.assigned_at)
        .map(|(_, d)| d.commit.clone());
    page.h2("Progress of the last deployed commit");
    if let Some(c) = &latest {
        page.raw(format_args!("<p>commit {}</p>\n", commit(c)));
    }
    let deployments: Vec<crate::history::Deployment> = current
        .into_iter()
        .filter(|(_, d)| Some(&d.commit) == latest.as_ref())
        .map(|(_, d)| d)
        .collect();
    page.raw(chart::svg(&chart::progress(&deployments), now_unix()));

    page.h2("Clusters");
    let rows = admin
        .status_rows(&pb::GetStatusRequest {
            bundle: b.name.clone(),
            ..Default::default()
        })
        .map(|r| r.rows)
        .unwrap_or_default();
    page.raw(status_table(&rows, Column::Cluster));

    page.h2("History");
    page.raw(
        history_table(
            history,
            Filter {
                bundle: Some(b.name.clone()),
                ..Default::default()
            },
            Column::Cluster,
        )
        .await,
    );
    Some(page.finish())
}
