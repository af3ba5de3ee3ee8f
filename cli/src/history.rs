//! `flotilla history`, `flotilla where` and `flotilla audit`: the hub's memory of the
//! fleet (deployment history, where a commit runs) and its audit trail. Arguments,
//! the typed calls on `admin::Client`, and the rows each prints.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use flotilla_model::duration::parse_duration;
use flotilla_proto::v1 as pb;
use serde::Serialize;

use crate::admin::Client;
use crate::output::{Printer, Row};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only this bundle.
    #[arg(long)]
    pub bundle: Option<String>,
    /// Only entries at most this old, e.g. 24h or 7d.
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only deployments made at this commit (7 or more characters); `flotilla where`
    /// tells where it runs now.
    #[arg(long)]
    pub commit: Option<String>,
    /// At most this many entries in one answer (the hub's default: 500); a cut answer
    /// says how to go on. Each answer is the next run by cluster and bundle, sorted by
    /// time.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Go on after a cut answer: the token it printed.
    #[arg(long = "continue", value_name = "TOKEN")]
    pub continue_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records at most this old, e.g. 24h.
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// At most this many records, the newest.
    #[arg(long)]
    pub limit: Option<u32>,
}

/// One history entry: a deployment (with when it was applied, Ready, or failed and
/// why) or a state change (with the spoke's message: the drift diff for Modified).
#[derive(Debug, Serialize)]
pub struct HistoryView {
    pub time: String,
    pub cluster: String,
    pub bundle: String,
    pub kind: String,
    pub deployment_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub commit: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub applied: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ready: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub failed: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub failure: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl From<pb::HistoryEntry> for HistoryView {
    fn from(e: pb::HistoryEntry) -> Self {
        HistoryView {
            time: e.time,
            cluster: e.cluster,
            bundle: e.bundle,
            kind: e.kind,
            deployment_id: e.deployment_id,
            commit: e.commit,
            source: e.source,
            applied: e.applied,
            ready: e.ready,
            failed: e.failed,
            failure: e.failure,
            from: e.from_state,
            to: e.to_state,
            message: e.message,
        }
    }
}

fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

/// The first line of a message, for a table cell.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

impl HistoryView {
    /// What happened, in a few words: the outcome of a deployment, or the move.
    fn outcome(&self) -> String {
        match self.kind.as_str() {
            "Deployment" if !self.failed.is_empty() && self.ready < self.failed => {
                format!("Failed: {}", first_line(&self.failure))
            }
            "Deployment" if !self.ready.is_empty() => "Ready".into(),
            "Deployment" if !self.applied.is_empty() => "Applied".into(),
            "Deployment" => "Assigned".into(),
            _ => format!("{} -> {}", self.from, self.to),
        }
    }
}

impl Row for HistoryView {
    const KIND: &'static str = "history";
    fn name(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.bundle, self.time)
    }
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["TIME", "CLUSTER", "BUNDLE", "KIND", "COMMIT", "OUTCOME"];
        if wide {
            h.extend(["DEPLOYMENT", "APPLIED", "READY", "MESSAGE"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.time.clone(),
            self.cluster.clone(),
            self.bundle.clone(),
            self.kind.clone(),
            short(&self.commit),
            self.outcome(),
        ];
        if wide {
            c.extend([
                self.deployment_id.clone(),
                self.applied.clone(),
                self.ready.clone(),
                first_line(&self.message),
            ]);
        }
        c
    }
}

/// Where one bundle of a commit stands on one cluster.
#[derive(Debug, Serialize)]
pub struct WhereView {
    pub cluster: String,
    pub bundle: String,
    /// Running, Pending, Failed, Older or Newer.
    pub verdict: String,
    /// What the cluster has now.
    pub commit: String,
    pub deployment_id: String,
    pub assigned: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub failure: String,
}

impl Row for WhereView {
    const KIND: &'static str = "where";
    fn name(&self) -> String {
        format!("{}/{}", self.cluster, self.bundle)
    }
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["CLUSTER", "BUNDLE", "VERDICT", "RUNS", "SINCE"];
        if wide {
            h.extend(["DEPLOYMENT", "FAILURE"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.cluster.clone(),
            self.bundle.clone(),
            self.verdict.clone(),
            short(&self.commit),
            self.assigned.clone(),
        ];
        if wide {
            c.extend([self.deployment_id.clone(), first_line(&self.failure)]);
        }
        c
    }
}

/// One audit record.
#[derive(Debug, Serialize)]
pub struct AuditView {
    pub seq: u64,
    pub time: String,
    pub who: String,
    pub method: String,
    pub fields: std::collections::BTreeMap<String, String>,
    pub peer: String,
    pub result: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Row for AuditView {
    const KIND: &'static str = "audit";
    fn name(&self) -> String {
        self.seq.to_string()
    }
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["TIME", "WHO", "METHOD", "RESULT", "FIELDS"];
        if wide {
            h.extend(["PEER", "MESSAGE"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let fields = self
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={}", first_line(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let mut c = vec![
            self.time.clone(),
            self.who.clone(),
            self.method.clone(),
            self.result.clone(),
            fields,
        ];
        if wide {
            c.extend([self.peer.clone(), first_line(&self.message)]);
        }
        c
    }
}

impl Client {
    /// The entries `a` asks for, and the continue token when the hub cut the answer.
    pub async fn history(&self, a: &HistoryArgs) -> Result<(Vec<HistoryView>, Option<String>)> {
        let req = pb::HistoryRequest {
            cluster: a.cluster.clone().unwrap_or_default(),
            bundle: a.bundle.clone().unwrap_or_default(),
            since_seconds: a.since.map_or(0, |d| d.as_secs().max(1)),
            commit: a.commit.clone().unwrap_or_default(),
            limit: a.limit.unwrap_or(0),
            continue_token: a.continue_token.clone().unwrap_or_default(),
        };
        let r = self
            .call("reading the history", |mut c| async move {
                c.history(req).await
            })
            .await?;
        let next = (!r.next.is_empty()).then_some(r.next);
        Ok((r.entries.into_iter().map(Into::into).collect(), next))
    }

    pub async fn where_running(&self, commit: String) -> Result<(String, Vec<WhereView>)> {
        let r = self
            .call("finding where the commit runs", |mut c| async move {
                c.r#where(pb::WhereRequest { commit }).await
            })
            .await?;
        let rows = r
            .rows
            .into_iter()
            .map(|w| WhereView {
                cluster: w.cluster,
                bundle: w.bundle,
                verdict: w.verdict,
                commit: w.commit,
                deployment_id: w.deployment_id,
                assigned: w.assigned,
                failure: w.failure,
            })
            .collect();
        Ok((r.commit, rows))
    }

    pub async fn audit(&self, a: &AuditArgs) -> Result<Vec<AuditView>> {
        let req = pb::AuditRequest {
            since_seconds: a.since.map_or(0, |d| d.as_secs().max(1)),
            limit: a.limit.unwrap_or(0),
        };
        let r = self
            .call("reading the audit trail", |mut c| async move {
                c.audit(req).await
            })
            .await?;
        Ok(r.entries
            .into_iter()
            .map(|e| AuditView {
                seq: e.seq,
                time: e.time,
                who: e.who,
                method: e.method,
                fields: e.fields.into_iter().collect(),
                peer: e.peer,
                result: e.result,
                message: e.message,
            })
            .collect())
    }
}

pub async fn where_cmd(client: Client, commit: String, out: Printer) -> Result<()> {
    let (full, rows) = client.where_running(commit).await?;
    if out.format.is_none() {
        eprintln!("commit {full}");
    }
    out.list(&rows)
}
