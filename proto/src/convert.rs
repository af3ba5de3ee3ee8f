//! Conversions between wire messages and `flotilla-model` types that both the hub and
//! the spoke need: the deployment options an `Assign` carries and the object states a
//! `Status` carries. One home, so both ends encode and decode them alike.
//!
//! Decoding checks what a type promises (a state is one of the known states, a patch
//! value is JSON) and refuses the message otherwise; bounding sizes is the receiver's
//! business (the hub clips what it stores, the whole message is bounded by gRPC).

use flotilla_model::{
    ComparePatch, DeployOptions, IgnoreCondition, PatchOperation, ResourceStatus, State,
};

use crate::v1;

/// A wire message that does not hold what its type says.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("comparePatches[{patch}].operations[{operation}]: the value is not JSON ({source})")]
    PatchValue {
        patch: usize,
        operation: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("resource {kind} {name}: {reason}")]
    ResourceState {
        kind: String,
        name: String,
        reason: String,
    },
}

impl From<&DeployOptions> for v1::BundleOptions {
    fn from(o: &DeployOptions) -> Self {
        v1::BundleOptions {
            correct_drift: o.correct_drift,
            keep_resources: o.keep_resources,
            force: o.force,
            compare_patches: o.compare_patches.iter().map(Into::into).collect(),
            ignore_conditions: o
                .ignore_conditions
                .iter()
                .map(|c| v1::IgnoreCondition {
                    fields: c.0.clone(),
                })
                .collect(),
        }
    }
}

impl From<&ComparePatch> for v1::ComparePatch {
    fn from(p: &ComparePatch) -> Self {
        v1::ComparePatch {
            api_version: p.api_version.clone(),
            kind: p.kind.clone(),
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            operations: p
                .operations
                .iter()
                .map(|op| v1::PatchOperation {
                    op: op.op.clone(),
                    path: op.path.clone(),
                    value_json: op.value.as_ref().map(|v| v.to_string()),
                    from: op.from.clone(),
                })
                .collect(),
            json_pointers: p.json_pointers.clone(),
        }
    }
}

impl TryFrom<v1::BundleOptions> for DeployOptions {
    type Error = ConvertError;
    fn try_from(o: v1::BundleOptions) -> Result<Self, ConvertError> {
        let compare_patches = o
            .compare_patches
            .into_iter()
            .enumerate()
            .map(|(i, p)| compare_patch(i, p))
            .collect::<Result<_, _>>()?;
        Ok(DeployOptions {
            correct_drift: o.correct_drift,
            keep_resources: o.keep_resources,
            force: o.force,
            compare_patches,
            ignore_conditions: o
                .ignore_conditions
                .into_iter()
                .map(|c| IgnoreCondition(c.fields))
                .collect(),
        })
    }
}

fn compare_patch(index: usize, p: v1::ComparePatch) -> Result<ComparePatch, ConvertError> {
    let operations = p
        .operations
        .into_iter()
        .enumerate()
        .map(|(j, op)| {
            let value = op
                .value_json
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|source| ConvertError::PatchValue {
                    patch: index,
                    operation: j,
                    source,
                })?;
            Ok(PatchOperation {
                op: op.op,
                path: op.path,
                value,
                from: op.from,
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(ComparePatch {
        api_version: p.api_version,
        kind: p.kind,
        name: p.name,
        namespace: p.namespace,
        operations,
        json_pointers: p.json_pointers,
    })
}

impl From<&ResourceStatus> for v1::ResourceStatus {
    fn from(r: &ResourceStatus) -> Self {
        v1::ResourceStatus {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            state: r.state.to_string(),
            message: r.message.clone(),
        }
    }
}

impl TryFrom<&v1::ResourceStatus> for ResourceStatus {
    type Error = ConvertError;
    fn try_from(r: &v1::ResourceStatus) -> Result<Self, ConvertError> {
        let state: State = r
            .state
            .parse()
            .map_err(|reason| ConvertError::ResourceState {
                kind: r.kind.chars().take(64).collect(),
                name: r.name.chars().take(256).collect(),
                reason,
            })?;
        Ok(ResourceStatus {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            state,
            message: r.message.clone(),
        })
    }
}

/// Which of a cluster's label sources an effective label comes from: the first of hub,
/// join token, spoke (accepted) that has the key wins, as the hub merges them. The one
/// statement of the rule for every reader of a `v1::Cluster` (the CLI's views, the
/// dashboard's cluster page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOrigin {
    Hub,
    Token,
    Spoke,
}

impl LabelOrigin {
    /// Where `c`'s label `key` comes from.
    pub fn of(c: &v1::Cluster, key: &str) -> LabelOrigin {
        if c.hub_labels.contains_key(key) {
            LabelOrigin::Hub
        } else if c.token_labels.contains_key(key) {
            LabelOrigin::Token
        } else {
            LabelOrigin::Spoke
        }
    }

    /// Its name in JSON and YAML output: `hub`, `token` or `spoke`.
    pub fn name(self) -> &'static str {
        match self {
            LabelOrigin::Hub => "hub",
            LabelOrigin::Token => "token",
            LabelOrigin::Spoke => "spoke",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn options() -> DeployOptions {
        DeployOptions {
            correct_drift: true,
            keep_resources: true,
            force: false,
            compare_patches: vec![ComparePatch {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: None,
                namespace: Some("web".into()),
                operations: vec![
                    PatchOperation {
                        op: "replace".into(),
                        path: "/spec/replicas".into(),
                        value: Some(serde_json::json!(9_007_199_254_740_993_u64)),
                        from: None,
                    },
                    PatchOperation {
                        op: "copy".into(),
                        path: "/b".into(),
                        value: None,
                        from: Some("/a".into()),
                    },
                ],
                json_pointers: vec!["/spec/template/metadata/annotations".into()],
            }],
            ignore_conditions: vec![IgnoreCondition(BTreeMap::from([
                ("status".into(), "False".into()),
                ("type".into(), "Progressing".into()),
            ]))],
        }
    }

    #[test]
    fn options_survive_the_wire_exactly_including_large_integers() {
        let wire = v1::BundleOptions::from(&options());
        let back = DeployOptions::try_from(wire).expect("decodes");
        assert_eq!(back, options());
    }

    #[test]
    fn a_patch_value_that_is_not_json_is_refused_and_named() {
        let mut wire = v1::BundleOptions::from(&options());
        wire.compare_patches[0].operations[1].value_json = Some("{not json".into());
        let err = DeployOptions::try_from(wire).expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("comparePatches[0].operations[1]: the value is not JSON"),
            "{err}"
        );
    }

    #[test]
    fn resource_states_round_trip_and_an_unknown_state_is_refused() {
        let r = ResourceStatus {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "web".into(),
            name: "frontend".into(),
            state: State::NotReady,
            message: "0/3 replicas available".into(),
        };
        let wire = v1::ResourceStatus::from(&r);
        assert_eq!(wire.state, "NotReady");
        assert_eq!(ResourceStatus::try_from(&wire).expect("decodes"), r);
        let bad = v1::ResourceStatus {
            state: "Splendid".into(),
            ..wire
        };
        let err = ResourceStatus::try_from(&bad).expect_err("refused");
        assert!(err.to_string().contains("Deployment frontend"), "{err}");
    }

    #[test]
    fn a_label_comes_from_the_hub_then_the_join_token_then_the_spoke() {
        let labels = |kv: &[&str]| {
            kv.iter()
                .map(|k| (k.to_string(), "v".to_string()))
                .collect()
        };
        let c = v1::Cluster {
            labels: labels(&["env", "team", "zone"]),
            hub_labels: labels(&["env"]),
            token_labels: labels(&["env", "team"]),
            ..Default::default()
        };
        let origins: Vec<LabelOrigin> = ["env", "team", "zone"]
            .iter()
            .map(|k| LabelOrigin::of(&c, k))
            .collect();
        assert_eq!(
            origins,
            [LabelOrigin::Hub, LabelOrigin::Token, LabelOrigin::Spoke],
            "the hub wins over the token, the token over the spoke"
        );
        assert_eq!(LabelOrigin::Token.name(), "token");
    }
}
