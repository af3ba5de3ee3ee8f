//! Who is calling: the identity in the caller's verified client certificate, and nothing
//! else. tonic has already verified the chain against the hub CA during the handshake.

use flotilla_identity::Identity;
use flotilla_model::ClusterName;
use tonic::{Request, Status};

fn identity<T>(req: &Request<T>) -> Result<Identity, Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated("a client certificate is required; join the fleet first")
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    Identity::from_cert_der(leaf).map_err(|e| Status::unauthenticated(e.to_string()))
}

pub fn require_cluster<T>(req: &Request<T>) -> Result<ClusterName, Status> {
    match identity(req)? {
        Identity::Cluster(c) => Ok(c),
        other => Err(Status::permission_denied(format!(
            "{other} may not open a spoke stream"
        ))),
    }
}

pub fn require_admin<T>(req: &Request<T>) -> Result<String, Status> {
    match identity(req)? {
        Identity::Admin(a) => Ok(a),
        other => Err(Status::permission_denied(format!(
            "{other} may not call the admin API"
        ))),
    }
}
