//! `Admin.Audit`: the audit trail over the wire, for viewers and admins alike. It only
//! reads; there is no RPC that changes the trail (`crate::audit`).

use std::sync::Arc;

use flotilla_identity::Role;
use flotilla_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::fleet::Fleet;
use crate::records::rfc3339;
use crate::server::peer;

pub fn audit(
    fleet: &Arc<Fleet>,
    request: Request<pb::AuditRequest>,
) -> Result<Response<pb::AuditResponse>, Status> {
    peer::require_operator(&request, Role::Viewer)?;
    let r = request.into_inner();
    let since = super::history::since(r.since_seconds).unwrap_or(i64::MIN);
    let entries = fleet
        .audit
        .since(since, r.limit as usize)
        .into_iter()
        .map(|a| pb::AuditEntry {
            seq: a.seq,
            time: rfc3339(a.time),
            who: a.who,
            method: a.method,
            fields: a.fields.into_iter().collect(),
            peer: a.peer,
            result: a.result,
            message: a.message,
        })
        .collect();
    Ok(Response::new(pb::AuditResponse { entries }))
}
