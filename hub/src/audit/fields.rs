//! The key fields of an audited request: what an auditor needs to tell one call from
//! another (names, selectors, label changes), never a secret (join tokens' secrets,
//! passwords, keys, CSRs). A method not named here is recorded with no fields.

use std::collections::BTreeMap;

use flotilla_proto::v1 as pb;
use prost::Message;

/// Longest value kept for one field.
const MAX_FIELD_BYTES: usize = 512;

pub fn cut(s: &str) -> String {
    if s.len() <= MAX_FIELD_BYTES {
        return s.to_string();
    }
    let mut end = MAX_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The message of one uncompressed gRPC frame (flag, 4-byte length, message).
fn message(frame: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = frame.split_first()?;
    let (len, body) = rest.split_at_checked(4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    (flag == 0 && body.len() == len).then_some(body)
}

fn decode<M: Message + Default>(frame: &[u8]) -> Option<M> {
    M::decode(message(frame)?).ok()
}

fn map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `method` is `Service/Method`; `frame` the request body as received.
pub fn key_fields(method: &str, frame: &[u8]) -> BTreeMap<String, String> {
    let pairs: Option<Vec<(&str, String)>> = match method {
        "Admin/LabelCluster" => decode::<pb::LabelClusterRequest>(frame).map(|r| {
            vec![
                ("name", r.name),
                ("set", map(&r.set)),
                ("remove", r.remove.join(",")),
            ]
        }),
        "Admin/AcceptClusterLabels" => decode::<pb::AcceptClusterLabelsRequest>(frame)
            .map(|r| vec![("name", r.name), ("keys", r.keys.join(","))]),
        "Admin/RevokeCluster" => {
            decode::<pb::RevokeClusterRequest>(frame).map(|r| vec![("name", r.name)])
        }
        "Admin/DeleteCluster" => {
            decode::<pb::DeleteClusterRequest>(frame).map(|r| vec![("name", r.name)])
        }
        "Admin/AddSource" => decode::<pb::AddSourceRequest>(frame).map(|r| {
            let s = r.source.unwrap_or_default();
            vec![
                ("name", s.name),
                // The URL may carry a password.
                ("repo", flotilla_model::redact_url(&s.repo)),
                ("branch", s.branch),
                ("paths", s.paths.join(",")),
            ]
        }),
        "Admin/SetSource" => decode::<pb::SetSourceRequest>(frame).map(|r| {
            let mut v = vec![("name", r.name)];
            if let Some(repo) = r.repo {
                v.push(("repo", flotilla_model::redact_url(&repo)));
            }
            if let Some(b) = r.branch {
                v.push(("branch", b));
            }
            if let Some(rev) = r.revision {
                v.push(("revision", rev));
            }
            if let Some(p) = r.paused {
                v.push(("paused", p.to_string()));
            }
            if r.set_targets {
                v.push(("targets", r.targets.len().to_string()));
            }
            if !r.clear_credentials.is_empty() {
                v.push(("clear_credentials", r.clear_credentials.join(",")));
            }
            v
        }),
        "Admin/RemoveSource" => decode::<pb::RemoveSourceRequest>(frame).map(|r| {
            vec![
                ("name", r.name),
                ("keep_resources", r.keep_resources.to_string()),
            ]
        }),
        "Admin/CreateToken" => decode::<pb::CreateTokenRequest>(frame).map(|r| {
            vec![
                ("ttl_seconds", r.ttl_seconds.to_string()),
                ("max_uses", r.max_uses.to_string()),
                ("description", r.description),
                ("labels", map(&r.labels)),
            ]
        }),
        "Admin/RevokeToken" => decode::<pb::RevokeTokenRequest>(frame).map(|r| vec![("id", r.id)]),
        "Admin/AddGroup" => {
            decode::<pb::Group>(frame).map(|r| vec![("name", r.name), ("selector", r.selector)])
        }
        "Admin/RemoveGroup" => {
            decode::<pb::RemoveGroupRequest>(frame).map(|r| vec![("name", r.name)])
        }
        "Admin/PauseRollout" | "Admin/ResumeRollout" => {
            decode::<pb::RolloutRequest>(frame).map(|r| vec![("bundle", r.bundle)])
        }
        "Admin/RenewCertificates" => decode::<pb::RenewCertificatesRequest>(frame).map(|r| {
            vec![
                ("window_seconds", r.window_seconds.to_string()),
                ("all", r.all.to_string()),
            ]
        }),
        "Admin/RetireCa" => {
            decode::<pb::RetireCaRequest>(frame).map(|r| vec![("force", r.force.to_string())])
        }
        "Registration/Register" => decode::<pb::RegisterRequest>(frame).map(|r| {
            vec![
                ("requested_name", r.requested_name),
                // The id half of ID.SECRET only.
                (
                    "token_id",
                    crate::tokens::parse(&r.token)
                        .map(|(id, _)| id.to_string())
                        .unwrap_or_else(|_| "(malformed)".into()),
                ),
                ("labels", map(&r.labels)),
                ("agent_version", r.agent_version),
            ]
        }),
        "Registration/Recover" => decode::<pb::RecoverRequest>(frame).map(|r| {
            let who = pem_identity(&r.cert_pem).unwrap_or_else(|| "(unreadable)".into());
            vec![("certificate", who), ("agent_version", r.agent_version)]
        }),
        _ => Some(Vec::new()),
    };
    match pairs {
        Some(p) => p
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), cut(&v)))
            .collect(),
        None => BTreeMap::from([("request".to_string(), "unreadable".to_string())]),
    }
}

/// The identity in the first certificate of a PEM chain (what Recover claims to be).
fn pem_identity(pem: &str) -> Option<String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    flotilla_identity::Identity::from_cert_der(&p.contents)
        .ok()
        .map(|i| i.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(m: &impl Message) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut f = vec![0];
        f.extend(u32::try_from(body.len()).expect("small").to_be_bytes());
        f.extend(body);
        f
    }

    #[test]
    fn a_join_token_is_recorded_by_its_id_never_its_secret() {
        let req = pb::RegisterRequest {
            token: format!("{}.{}", "ab12cd34", "0".repeat(32)),
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
            requested_name: "web-1".into(),
            ..Default::default()
        };
        let f = key_fields("Registration/Register", &frame(&req));
        assert_eq!(f.get("token_id").map(String::as_str), Some("ab12cd34"));
        assert_eq!(f.get("requested_name").map(String::as_str), Some("web-1"));
        let all = format!("{f:?}");
        assert!(
            !all.contains(&"0".repeat(32)) && !all.contains("REQUEST"),
            "{all}"
        );
    }

    #[test]
    fn a_repo_password_is_redacted_and_a_broken_body_is_named() {
        let req = pb::AddSourceRequest {
            source: Some(pb::Source {
                name: "apps".into(),
                repo: "https://user:hunter2@git.example/fleet".into(),
                ..Default::default()
            }),
        };
        let f = key_fields("Admin/AddSource", &frame(&req));
        assert!(!format!("{f:?}").contains("hunter2"), "{f:?}");
        assert_eq!(f.get("name").map(String::as_str), Some("apps"));
        let broken = key_fields("Admin/AddSource", &[0, 0, 0, 0, 9, 1]);
        assert_eq!(
            broken.get("request").map(String::as_str),
            Some("unreadable")
        );
        assert!(key_fields("Admin/RotateCa", &frame(&pb::RotateCaRequest {})).is_empty());
    }
}
