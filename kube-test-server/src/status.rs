//! `kind: Status` failure bodies, as the API server returns them.
//!
//! Every request failure becomes an [`ApiError`], which renders to the exact
//! `metav1.Status` shape (`status: Failure`, `reason`, `code`, `details`) that
//! client-go and kube-rs decode. See
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/#status-codes>.

use serde_json::{Value, json};

/// A failed API request: HTTP code, `metav1.StatusReason`, message and details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// What `details` names: the resource (`configmaps`), its group and the object name.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub name: &'a str,
}

impl Subject<'_> {
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut d = json!({"name": self.name, "kind": self.resource});
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(s: Subject<'_>) -> Self {
        ApiError {
            details: Some(s.details()),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{}\" not found", s.qualified(), s.name),
            )
        }
    }

    /// The answer for a path that names no resource this server knows.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(s: Subject<'_>) -> Self {
        ApiError {
            details: Some(s.details()),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", s.qualified(), s.name),
            )
        }
    }

    /// Optimistic-concurrency failure: the `resourceVersion` sent is not the stored one.
    pub fn conflict_modified(s: Subject<'_>) -> Self {
        ApiError {
            details: Some(s.details()),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    s.qualified(),
                    s.name
                ),
            )
        }
    }

    /// Server-side apply ownership conflicts: `conflicts` is `(manager, api_version, field)`.
    pub fn apply_conflicts(s: Subject<'_>, conflicts: &[(String, String, String)]) -> Self {
        let mut causes = Vec::new();
        for (manager, version, field) in conflicts {
            causes.push(json!({
                "type": "FieldManagerConflict",
                "message": format!("conflict with \"{manager}\" using {version}"),
                "field": field,
            }));
        }
        let message = if let [(manager, version, field)] = conflicts {
            format!(
                "Apply failed with 1 conflict: conflict with \"{manager}\" using {version}: {field}"
            )
        } else {
            let mut by_manager: Vec<(String, Vec<&str>)> = Vec::new();
            for (manager, version, field) in conflicts {
                let head = format!("conflicts with \"{manager}\" using {version}");
                match by_manager.iter_mut().find(|(h, _)| *h == head) {
                    Some((_, fields)) => fields.push(field),
                    None => by_manager.push((head, vec![field])),
                }
            }
            let body: Vec<String> = by_manager
                .iter()
                .map(|(head, fields)| {
                    let list: Vec<String> = fields.iter().map(|f| format!("- {f}")).collect();
                    format!("{head}:\n{}", list.join("\n"))
                })
                .collect();
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                body.join("\n")
            )
        };
        let mut details = s.details();
        details["causes"] = Value::Array(causes);
        ApiError {
            details: Some(details),
            ..Self::new(409, "Conflict", message)
        }
    }

    /// 422 with `details.causes` naming the invalid fields.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: &[(&str, String)]) -> Self {
        let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let causes: Vec<Value> = causes
            .iter()
            .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
            .collect();
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut details = json!({"name": name, "kind": kind, "causes": causes});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError {
            details: Some(details),
            ..Self::new(
                422,
                "Invalid",
                format!("{qualified} \"{name}\" is invalid: {}", text.join(", ")),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// A write the authorizer refuses, in the words of the API server's RBAC
    /// authorizer. `user` is who asked; `namespace` None means cluster scope.
    pub fn forbidden_verb(s: Subject<'_>, user: &str, verb: &str, namespace: Option<&str>) -> Self {
        let what = if s.name.is_empty() {
            s.qualified()
        } else {
            format!("{} \"{}\"", s.qualified(), s.name)
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let mut details = s.details();
        if s.name.is_empty()
            && let Some(d) = details.as_object_mut()
        {
            d.remove("name");
        }
        ApiError {
            details: Some(details),
            ..Self::new(
                403,
                "Forbidden",
                format!(
                    "{what} is forbidden: User \"{user}\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
                    s.resource, s.group
                ),
            )
        }
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// A `resourceVersion` older than the server's retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/apply-patch+yaml, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}
