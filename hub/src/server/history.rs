//! `Admin.History` and `Admin.Where`: the deployment history over the wire. Converts
//! the request into a `history::Filter` at the edge and the entries into proto rows;
//! the logic is in `crate::history`.

use std::sync::Arc;

use flotilla_identity::Role;
use flotilla_model::ClusterName;
use flotilla_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::fleet::Fleet;
use crate::history::{Entry, Filter};
use crate::records::{now_unix, rfc3339};
use crate::server::peer;

/// `since_seconds` (an age by the hub's clock) as a Unix time; `None` for 0.
pub fn since(seconds: u64) -> Option<i64> {
    (seconds > 0).then(|| now_unix().saturating_sub(i64::try_from(seconds).unwrap_or(i64::MAX)))
}

fn opt_time(t: Option<i64>) -> String {
    t.map(rfc3339).unwrap_or_default()
}

pub async fn history(
    fleet: &Arc<Fleet>,
    request: Request<pb::HistoryRequest>,
) -> Result<Response<pb::HistoryResponse>, Status> {
    peer::require_operator(&request, Role::Viewer)?;
    let r = request.into_inner();
    let cluster = (!r.cluster.is_empty())
        .then(|| ClusterName::new(&r.cluster))
        .transpose()
        .map_err(|e| Status::invalid_argument(format!("cluster {:?}: {e}", r.cluster)))?;
    let filter = Filter {
        cluster,
        bundle: (!r.bundle.is_empty()).then_some(r.bundle),
        since: since(r.since_seconds),
        commit: (!r.commit.is_empty()).then_some(r.commit),
        limit: r.limit as usize,
        after: (!r.continue_token.is_empty()).then_some(r.continue_token),
    };
    let mut page = fleet.history.query(&filter).await?;
    // The page is a run of keys (by cluster, bundle, time); people read it by time.
    page.rows.sort_by_key(|r| r.entry.at());
    let entries = page
        .rows
        .into_iter()
        .map(|row| {
            let mut e = pb::HistoryEntry {
                cluster: row.cluster.to_string(),
                bundle: row.bundle,
                time: rfc3339(row.entry.at()),
                ..Default::default()
            };
            match row.entry {
                Entry::Deployment(d) => {
                    e.kind = "Deployment".into();
                    e.deployment_id = d.deployment_id;
                    e.commit = d.commit;
                    e.source = d.source;
                    e.applied = opt_time(d.applied_at);
                    e.ready = opt_time(d.ready_at);
                    e.failed = opt_time(d.failed_at);
                    e.failure = d.failure;
                }
                Entry::StateChange(s) => {
                    e.kind = "StateChange".into();
                    e.deployment_id = s.deployment_id;
                    e.from_state = s.from.to_string();
                    e.to_state = s.to.to_string();
                    e.message = s.message;
                }
            }
            e
        })
        .collect();
    Ok(Response::new(pb::HistoryResponse {
        entries,
        next: page.next.unwrap_or_default(),
    }))
}

pub async fn where_running(
    fleet: &Arc<Fleet>,
    request: Request<pb::WhereRequest>,
) -> Result<Response<pb::WhereResponse>, Status> {
    peer::require_operator(&request, Role::Viewer)?;
    let wanted = request.into_inner().commit;
    let (commit, rows) = fleet.history.where_running(&wanted).await?.ok_or_else(|| {
        Status::not_found(format!(
            "no deployment in the history was made at commit {wanted:?} (give 7 or more characters of one commit; the history keeps what --history-max-age and --history-max-per-bundle allow)"
        ))
    })?;
    let rows = rows
        .into_iter()
        .map(|r| pb::WhereRow {
            cluster: r.cluster.to_string(),
            bundle: r.bundle,
            verdict: r.verdict.to_string(),
            deployment_id: r.current.deployment_id,
            commit: r.current.commit,
            assigned: rfc3339(r.current.assigned_at),
            failure: if r.verdict == crate::history::WhereVerdict::Failed {
                r.current.failure
            } else {
                String::new()
            },
        })
        .collect();
    Ok(Response::new(pb::WhereResponse { commit, rows }))
}
