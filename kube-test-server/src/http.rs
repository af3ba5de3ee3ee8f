//! HTTP routing: turns `/api/...`, `/apis/...` and the discovery paths into calls
//! on [`Cluster`], and results into JSON responses or streamed watch bodies.
//!
//! URL layout per <https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-uris>.
//! The only transport concerns here: bearer-token check on HTTPS (and the
//! `forbid_writes` stand-in for RBAC), content types, query parameters, body size
//! limit. Never panics on request input.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::api::{Cluster, ListOptions, PatchType, Target, WriteOptions, parse_yaml_or_json};
use crate::discovery;
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, Subject};
use crate::table;
use crate::watch::{Start, WatchSpec};

/// Response body: a full JSON document or a stream of watch lines.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted (the API server's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Shared by every connection.
pub struct ServerState {
    pub cluster: Arc<Cluster>,
    /// The bearer token HTTPS requests must carry.
    pub token: String,
    pub bookmark_interval: Duration,
    pub shutdown: watch::Receiver<bool>,
    /// `host:port` of the HTTPS listener, for `/api`'s serverAddressByClientCIDRs.
    pub address: String,
    pub forbidden: Forbidden,
}

/// The user the bearer token stands for (the kubeconfig's user name).
const USER: &str = "flotilla-kube-test-server";

/// A stand-in for RBAC, which this server does not have: resources whose writes are
/// refused on the HTTPS listener, as for a user whose role grants only get, list and
/// watch on them. Set through `RunningServer::forbid_writes`, so that tests can see how
/// a client copes with missing permissions.
#[derive(Default)]
pub struct Forbidden {
    /// `(group, plural)`.
    resources: Mutex<BTreeSet<(String, String)>>,
    refused: AtomicU64,
}

impl Forbidden {
    fn resources(&self) -> std::sync::MutexGuard<'_, BTreeSet<(String, String)>> {
        self.resources.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn forbid(&self, group: &str, plural: &str) {
        self.resources()
            .insert((group.to_string(), plural.to_string()));
    }

    pub fn allow(&self, group: &str, plural: &str) {
        self.resources()
            .remove(&(group.to_string(), plural.to_string()));
    }

    /// How many writes were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// 403 when `verb` is a write on a forbidden resource.
    fn check(&self, verb: &str, p: &ResourcePath) -> Result<(), ApiError> {
        let write = matches!(
            verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        );
        let key = (p.rt.group.clone(), p.rt.plural.clone());
        if !write || p.subresource.is_some() || !self.resources().contains(&key) {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let subject = Subject {
            group: &p.rt.group,
            resource: &p.rt.plural,
            name: p.name.as_deref().unwrap_or_default(),
        };
        Err(ApiError::forbidden_verb(
            subject,
            USER,
            verb,
            p.namespace.as_deref(),
        ))
    }
}

/// Handles one request. `secure` is true on the HTTPS listener, where a bearer
/// token is required; the plain HTTP listener is unauthenticated, like the old
/// API server's insecure port.
pub async fn handle(
    state: Arc<ServerState>,
    req: Request<Incoming>,
    secure: bool,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let resp = if secure && !authorized(&req, &state.token) {
        error_response(&ApiError::unauthorized())
    } else {
        match route(&state, req, secure).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        }
    };
    tracing::debug!(
        "kube test server: {method} {uri} -> {}",
        resp.status().as_u16()
    );
    Ok(resp)
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == token)
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn text_response(text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

/// Decodes `a=b&c=d` with percent-decoding; the last value of a repeated key wins.
pub fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn truthy(q: &BTreeMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn check_accept(accept: &str) -> Result<(), ApiError> {
    if accept.trim().is_empty()
        || accept.contains("json")
        || accept.contains("*/*")
        || accept.contains("yaml")
    {
        Ok(())
    } else {
        Err(ApiError::not_acceptable(format!(
            "only application/json is served by this test server (got Accept: {accept})"
        )))
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() {
                Err(ApiError::too_large("the request body is larger than 3 MiB"))
            } else {
                Err(ApiError::bad_request(format!(
                    "reading the request body: {e}"
                )))
            }
        }
    }
}

async fn route(
    state: &ServerState,
    req: Request<Incoming>,
    secure: bool,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let reg = state.cluster.registry();
    let get = req.method() == Method::GET;
    let only_get = |v: Option<Value>| -> Result<Response<Body>, ApiError> {
        if !get {
            return Err(ApiError::method_not_allowed(req.method().as_str()));
        }
        v.map(|v| json_response(200, &v))
            .ok_or_else(ApiError::no_route)
    };
    match segs.as_slice() {
        [] => only_get(Some(
            json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v3", "/readyz", "/version"]}),
        )),
        ["healthz" | "livez" | "readyz"] => Ok(text_response("ok")),
        ["version"] => only_get(Some(discovery::version())),
        ["api"] => only_get(Some(discovery::core_versions(&state.address))),
        ["apis"] => only_get(Some(discovery::group_list(&reg))),
        ["apis", g] => only_get(discovery::group(&reg, g)),
        ["openapi", "v3"] => only_get(Some(discovery::openapi_v3_index(&reg))),
        ["openapi", "v3", "api", v] => only_get(discovery::openapi_v3_group_version(&reg, "", v)),
        ["openapi", "v3", "apis", g, v] => {
            only_get(discovery::openapi_v3_group_version(&reg, g, v))
        }
        ["api", v] => only_get(discovery::resource_list(&reg, "", v)),
        ["apis", g, v] => only_get(discovery::resource_list(&reg, g, v)),
        ["api", v, rest @ ..] => {
            let (g, v, rest) = ("".to_string(), v.to_string(), owned(rest));
            resource(state, req, secure, &g, &v, &rest).await
        }
        ["apis", g, v, rest @ ..] => {
            let (g, v, rest) = (g.to_string(), v.to_string(), owned(rest));
            resource(state, req, secure, &g, &v, &rest).await
        }
        _ => Err(ApiError::no_route()),
    }
}

fn owned(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

/// Parsed resource path: type, namespace, name, subresource.
struct ResourcePath {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_resource_path(
    state: &ServerState,
    group: &str,
    version: &str,
    rest: &[String],
) -> Result<ResourcePath, ApiError> {
    let reg = state.cluster.registry();
    let mut rest = rest;
    let mut namespace = None;
    if rest.len() >= 3
        && rest[0] == "namespaces"
        && reg
            .lookup(group, version, &rest[2])
            .is_some_and(|t| t.namespaced)
    {
        namespace = Some(rest[1].clone());
        rest = &rest[2..];
    }
    let rt = reg
        .lookup(group, version, &rest[0])
        .cloned()
        .ok_or_else(ApiError::no_route)?;
    if rest.len() > 3 || (!rt.namespaced && namespace.is_some()) {
        return Err(ApiError::no_route());
    }
    let name = rest.get(1).cloned();
    let subresource = rest.get(2).cloned();
    if let Some(sub) = &subresource
        && !((sub == "status" && rt.status_subresource) || (sub == "scale" && rt.has_scale()))
    {
        return Err(ApiError::no_route());
    }
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::no_route());
    }
    Ok(ResourcePath {
        rt,
        namespace,
        name,
        subresource,
    })
}

async fn resource(
    state: &ServerState,
    req: Request<Incoming>,
    secure: bool,
    group: &str,
    version: &str,
    rest: &[String],
) -> Result<Response<Body>, ApiError> {
    let p = parse_resource_path(state, group, version, rest)?;
    // Like the old insecure port, the plain HTTP listener skips authorization.
    if secure {
        let verb = match (req.method().clone(), &p.name) {
            (Method::POST, _) => "create",
            (Method::PUT, _) => "update",
            (Method::PATCH, _) => "patch",
            (Method::DELETE, Some(_)) => "delete",
            (Method::DELETE, None) => "deletecollection",
            _ => "get",
        };
        state.forbidden.check(verb, &p)?;
    }
    let q = parse_query(req.uri().query());
    let accept = header_str(&req, header::ACCEPT);
    check_accept(&accept)?;
    let content_type = header_str(&req, header::CONTENT_TYPE);
    let wo = WriteOptions {
        field_manager: q.get("fieldManager").cloned(),
        user_agent: header_str(&req, header::USER_AGENT),
        force: truthy(&q, "force"),
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
    };
    let cluster = &state.cluster;
    let target = |name: &String| Target {
        rt: p.rt.clone(),
        namespace: p.namespace.clone(),
        name: name.clone(),
        subresource: p.subresource.clone(),
    };
    let method = req.method().clone();
    if let (Some("scale"), Some(name)) = (p.subresource.as_deref(), &p.name) {
        let t = Target {
            subresource: None,
            ..target(name)
        };
        return match method {
            Method::GET => Ok(json_response(200, &cluster.get_scale(&t)?)),
            Method::PUT => {
                let body = read_body(req).await?;
                Ok(json_response(
                    200,
                    &cluster.write_scale(&t, None, &body, &wo)?,
                ))
            }
            Method::PATCH => {
                let kind = PatchType::from_content_type(&content_type)
                    .ok_or_else(|| ApiError::unsupported_media_type(&content_type))?;
                let body = read_body(req).await?;
                Ok(json_response(
                    200,
                    &cluster.write_scale(&t, Some(kind), &body, &wo)?,
                ))
            }
            m => Err(ApiError::method_not_allowed(m.as_str())),
        };
    }
    match (method, &p.name) {
        (Method::GET, None) => {
            let lo = list_options(&q, &p.rt)?;
            if truthy(&q, "watch") {
                return watch(state, &p, &q, lo);
            }
            let list = cluster.list(&p.rt, p.namespace.as_deref(), &lo)?;
            if table::wants_table(&accept) {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let include = q
                    .get("includeObject")
                    .map(String::as_str)
                    .unwrap_or("Metadata");
                return Ok(json_response(
                    200,
                    &table::to_table(&p.rt, &items, list["metadata"].clone(), include),
                ));
            }
            Ok(json_response(200, &list))
        }
        (Method::GET, Some(name)) => {
            let obj = cluster.get(&target(name))?;
            if table::wants_table(&accept) {
                let include = q
                    .get("includeObject")
                    .map(String::as_str)
                    .unwrap_or("Metadata");
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                return Ok(json_response(
                    200,
                    &table::to_table(&p.rt, &[obj], meta, include),
                ));
            }
            Ok(json_response(200, &obj))
        }
        (Method::POST, None) => {
            let body = decode_body(&content_type, &read_body(req).await?)?;
            let obj = cluster.create(&p.rt, p.namespace.as_deref(), body, &wo)?;
            Ok(json_response(201, &obj))
        }
        (Method::PUT, Some(name)) => {
            let body = decode_body(&content_type, &read_body(req).await?)?;
            Ok(json_response(
                200,
                &cluster.update(&target(name), body, &wo)?,
            ))
        }
        (Method::PATCH, Some(name)) => {
            let kind = PatchType::from_content_type(&content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(&content_type))?;
            let body = read_body(req).await?;
            let (code, obj) = cluster.patch(&target(name), kind, &body, &wo)?;
            Ok(json_response(code, &obj))
        }
        (Method::DELETE, Some(name)) if p.subresource.is_none() => {
            let raw = read_body(req).await?;
            let mut opts: Value = if raw.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&raw).unwrap_or_else(|_| json!({}))
            };
            if let Some(pp) = q.get("propagationPolicy") {
                opts["propagationPolicy"] = json!(pp);
            }
            let (code, obj) = cluster.delete(&target(name), &opts, &wo)?;
            Ok(json_response(code, &obj))
        }
        (Method::DELETE, None) => {
            let lo = list_options(&q, &p.rt)?;
            Ok(json_response(
                200,
                &cluster.delete_collection(&p.rt, p.namespace.as_deref(), &lo, &wo)?,
            ))
        }
        (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

fn decode_body(content_type: &str, raw: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    match ct {
        "" | "application/json" | "application/yaml" | "text/yaml" | "application/x-yaml" => {
            parse_yaml_or_json(raw)
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn list_options(q: &BTreeMap<String, String>, rt: &ResourceType) -> Result<ListOptions, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        &rt.group,
        &rt.kind,
    )
    .map_err(ApiError::bad_request)?;
    let limit = match q.get("limit") {
        Some(l) if !l.is_empty() => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
        _ => None,
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q.get("resourceVersionMatch").cloned(),
    })
}

fn watch(
    state: &ServerState,
    p: &ResourcePath,
    q: &BTreeMap<String, String>,
    lo: ListOptions,
) -> Result<Response<Body>, ApiError> {
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let start = if truthy(q, "sendInitialEvents") {
        Start::InitialState { end_bookmark: true }
    } else if rv.is_empty() || rv == "0" {
        Start::InitialState {
            end_bookmark: false,
        }
    } else {
        Start::After(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        )
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        // Clamped so that no client value can overflow the deadline arithmetic.
        .map(|t| Duration::from_secs(t.min(86_400)))
        .unwrap_or(Duration::from_secs(1800));
    let spec = WatchSpec {
        rt: p.rt.clone(),
        namespace: p.namespace.clone(),
        labels: lo.labels,
        fields: lo.fields,
        start,
        bookmarks: truthy(q, "allowWatchBookmarks"),
        timeout,
        bookmark_interval: state.bookmark_interval,
    };
    let rx = crate::watch::spawn(state.cluster.clone(), spec, state.shutdown.clone());
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_percent_decoded() {
        let q = parse_query(Some("labelSelector=app%20in%20(a%2Cb)&watch=1&x"));
        assert_eq!(q["labelSelector"], "app in (a,b)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
