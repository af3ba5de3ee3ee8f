//! Who is calling: the identity in the caller's verified client certificate, and nothing
//! else. The TLS layer has already verified the chain against the hub's trusted CAs and
//! parsed the leaf once per connection (`tls::PeerInfo`); here we have the fleet check a
//! cluster's certificate (revocation, superseded certificates) and check the operator's
//! role.

use flotilla_identity::{Identity, Role};
use flotilla_model::ClusterName;
use tonic::{Request, Status};

use super::tls::{PeerInfo, PeerLeaf};
use crate::fleet::Fleet;

/// The caller's verified leaf certificate, as parsed at the handshake
/// (`tls::PeerInfo`).
fn leaf<T>(req: &Request<T>) -> Result<&PeerLeaf, Status> {
    req.extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.leaf.as_deref())
        .ok_or_else(|| {
            Status::unauthenticated("a client certificate is required; join the fleet first")
        })
}

fn identity(leaf: &PeerLeaf) -> Result<Identity, Status> {
    leaf.identity
        .clone()
        .map_err(|e| Status::unauthenticated(e.clone()))
}

/// The calling cluster, if its certificate is one the hub currently honours
/// (`Fleet::check_cluster_cert`).
pub fn require_cluster<T>(fleet: &Fleet, req: &Request<T>) -> Result<ClusterName, Status> {
    let leaf = leaf(req)?;
    let id = identity(leaf)?;
    let Identity::Cluster(name) = id else {
        return Err(Status::permission_denied(format!(
            "{id} may not open a spoke stream"
        )));
    };
    let serial = leaf
        .serial_hex
        .as_deref()
        .map_err(|e| Status::unauthenticated(e.clone()))?;
    fleet.check_cluster_cert(&name, serial)?;
    Ok(name)
}

/// The calling operator, if their role allows `needed`.
pub fn require_operator<T>(req: &Request<T>, needed: Role) -> Result<String, Status> {
    operator_allowed(identity(leaf(req)?)?, needed)
}

/// The operator named by a verified leaf certificate (DER), if their role allows
/// `needed`: the Admin API's rule for callers outside gRPC (the dashboard).
pub fn require_operator_der(leaf_der: &[u8], needed: Role) -> Result<String, Status> {
    let id =
        Identity::from_cert_der(leaf_der).map_err(|e| Status::unauthenticated(e.to_string()))?;
    operator_allowed(id, needed)
}

fn operator_allowed(id: Identity, needed: Role) -> Result<String, Status> {
    match id {
        Identity::Operator { name, role } => {
            if needed == Role::Admin && role != Role::Admin {
                Err(Status::permission_denied(format!(
                    "{role}/{name} may only read; this call needs the admin role"
                )))
            } else {
                Ok(name)
            }
        }
        other => Err(Status::permission_denied(format!(
            "{other} may not call the admin API"
        ))),
    }
}
