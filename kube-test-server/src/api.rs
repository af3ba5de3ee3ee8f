//! API semantics over the store: create, get, list, update, patch, apply and
//! delete, with the server-owned metadata (uid, generation, resourceVersion,
//! creationTimestamp, managedFields), subresource rules, namespace checks,
//! finalizers, namespace and CRD cascades and owner-reference garbage collection.
//!
//! Transport-free: the `http` module parses requests into these calls. Each call
//! takes the store lock once and never awaits while holding it.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::events;
use crate::fieldpath::display_path;
use crate::managed_fields::{self, Managers, Scope, Who};
use crate::meta::{new_uid, now_rfc3339};
use crate::patch;
use crate::resources::{ResourceType, types_from_crd};
use crate::schema::Schema;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, Subject};
use crate::store::{Event, Key, Store};

pub type ApiResult<T> = Result<T, ApiError>;

/// Options every write accepts (`fieldManager`, `force`, `dryRun`).
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// The `fieldManager` query parameter, or the User-Agent prefix when absent.
    pub field_manager: Option<String>,
    pub user_agent: String,
    pub force: bool,
    pub dry_run: bool,
}

impl WriteOptions {
    fn manager(&self) -> String {
        match &self.field_manager {
            Some(m) if !m.is_empty() => m.clone(),
            _ => {
                let prefix = self.user_agent.split('/').next().unwrap_or_default();
                if prefix.is_empty() {
                    "unknown".to_string()
                } else {
                    prefix.to_string()
                }
            }
        }
    }
}

/// The PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// List parameters.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// Which object a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub rt: ResourceType,
    pub namespace: Option<String>,
    pub name: String,
    /// `None` for the main resource, `Some("status")` for the status subresource.
    pub subresource: Option<String>,
}

impl Target {
    fn key(&self) -> Key {
        Key {
            group: self.rt.storage_group().to_string(),
            resource: self.rt.plural.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.name.clone(),
        }
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            group: &self.rt.group,
            resource: &self.rt.plural,
            name: &self.name,
        }
    }

    fn scope(&self) -> Scope {
        if self.subresource.is_some() {
            Scope::Status
        } else {
            Scope::Main {
                status_subresource: self.rt.status_subresource,
            }
        }
    }

    fn schema(&self) -> Schema {
        Schema::root(&self.rt.kind, self.rt.schema.clone())
    }
}

/// The cluster state shared by all connections.
pub struct Cluster {
    store: Mutex<Store>,
}

impl Cluster {
    pub fn new(history_limit: usize) -> Arc<Cluster> {
        Arc::new(Cluster {
            store: Mutex::new(Store::new(history_limit)),
        })
    }

    /// The store, even if a panicking thread poisoned the lock (state stays usable).
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.lock().subscribe()
    }

    pub fn registry(&self) -> Arc<crate::resources::Registry> {
        self.lock().registry()
    }

    /// GET one object.
    pub fn get(&self, t: &Target) -> ApiResult<Value> {
        let store = self.lock();
        let obj = store
            .get(&t.key())
            .ok_or_else(|| ApiError::not_found(t.subject()))?;
        Ok(present(obj, &t.rt))
    }

    /// LIST with selectors and `limit`/`continue` pagination.
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        o: &ListOptions,
    ) -> ApiResult<Value> {
        let store = self.lock();
        let rv = store.current_rv();
        if o.resource_version_match.as_deref() == Some("Exact") {
            let want = o.resource_version.as_deref().unwrap_or_default();
            if want != rv.to_string() {
                return Err(ApiError::expired(format!(
                    "too old resource version: {want} ({rv}); this test server keeps no snapshots"
                )));
            }
        }
        let start_after = match &o.continue_token {
            Some(tok) => Some(decode_continue(tok)?),
            None => None,
        };
        let mut items = Vec::new();
        let mut more = None;
        for (k, v) in store.list(rt.storage_group(), &rt.plural, namespace) {
            let pos = format!("{}/{}", k.namespace, k.name);
            if start_after.as_ref().is_some_and(|s| pos <= *s) {
                continue;
            }
            if !matches(v, &o.labels, &o.fields) {
                continue;
            }
            if o.limit.is_some_and(|l| l > 0 && items.len() >= l) {
                more = items.last().map(|last: &Value| {
                    format!(
                        "{}/{}",
                        last["metadata"]["namespace"].as_str().unwrap_or_default(),
                        last["metadata"]["name"].as_str().unwrap_or_default()
                    )
                });
                break;
            }
            items.push(present(v, rt));
        }
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let Some(pos) = more {
            metadata["continue"] = json!(encode_continue(&pos));
        }
        Ok(json!({
            "kind": rt.list_kind(),
            "apiVersion": rt.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// POST to a collection.
    pub fn create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        body: Value,
        o: &WriteOptions,
    ) -> ApiResult<Value> {
        let mut obj = body;
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body must be a JSON or YAML object",
            ));
        }
        check_type_meta(&mut obj, rt)?;
        let name = match obj["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match obj["metadata"]["generateName"].as_str() {
                Some(prefix) if !prefix.is_empty() => format!("{prefix}{}", random_suffix()),
                _ => {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        &rt.group,
                        "",
                        &[(
                            "metadata.name",
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            },
        };
        obj["metadata"]["name"] = json!(name);
        let t = Target {
            rt: rt.clone(),
            namespace: namespace.map(str::to_string),
            name,
            subresource: None,
        };
        let mut store = self.lock();
        self.prepare_create(&store, &t, &mut obj)?;
        if store.get(&t.key()).is_some() {
            return Err(ApiError::already_exists(t.subject()));
        }
        let mut managers = Managers::default();
        let manager = o.manager();
        managed_fields::record_update(
            &mut managers,
            None,
            &obj,
            &t.schema(),
            t.scope(),
            &Who {
                manager: &manager,
                subresource: "",
                api_version: &rt.api_version(),
            },
        );
        set_managers(&mut obj, &managers);
        self.commit(&mut store, &t, None, obj, o.dry_run)
    }

    /// PUT: replace the object (or its status) with optimistic concurrency.
    pub fn update(&self, t: &Target, body: Value, o: &WriteOptions) -> ApiResult<Value> {
        let mut store = self.lock();
        let old = load(&store, t).ok_or_else(|| ApiError::not_found(t.subject()))?;
        let mut new = body;
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body must be a JSON or YAML object",
            ));
        }
        check_type_meta(&mut new, &t.rt)?;
        check_identity(&new, t)?;
        let sent_rv = new["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if !sent_rv.is_empty() && old["metadata"]["resourceVersion"] != sent_rv {
            return Err(ApiError::conflict_modified(t.subject()));
        }
        self.finish_update(&mut store, t, old, new, o)
    }

    /// PATCH in any of the four formats. Returns the HTTP code (201 when an apply created).
    pub fn patch(
        &self,
        t: &Target,
        kind: PatchType,
        body: &[u8],
        o: &WriteOptions,
    ) -> ApiResult<(u16, Value)> {
        if kind == PatchType::Apply {
            return self.apply(t, body, o);
        }
        let patch_doc: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let mut store = self.lock();
        let old = load(&store, t).ok_or_else(|| ApiError::not_found(t.subject()))?;
        let mut new = match kind {
            PatchType::Merge => patch::merge_patch(&old, &patch_doc),
            PatchType::Json => patch::json_patch(&old, &patch_doc).map_err(|e| {
                if e.contains("test failed") {
                    ApiError::invalid(&t.rt.kind, &t.rt.group, &t.name, &[("", e)])
                } else {
                    ApiError::bad_request(e)
                }
            })?,
            PatchType::Strategic => {
                if t.rt.is_crd {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json (strategic merge patch is not supported for custom resources)",
                    ));
                }
                patch::strategic_merge_patch(&old, &patch_doc, &t.schema())
                    .map_err(ApiError::bad_request)?
            }
            PatchType::Apply => return Err(ApiError::internal("apply handled above")),
        };
        if !new.is_object() {
            return Err(ApiError::bad_request("the patch produced a non-object"));
        }
        check_type_meta(&mut new, &t.rt)?;
        check_identity(&new, t)?;
        let sent_rv = patch_doc["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if !sent_rv.is_empty() && old["metadata"]["resourceVersion"] != sent_rv {
            return Err(ApiError::conflict_modified(t.subject()));
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        self.finish_update(&mut store, t, old, new, o)
            .map(|v| (200, v))
    }

    /// GET `/scale`: the autoscaling/v1 Scale view of a workload (`t` names the main resource).
    pub fn get_scale(&self, t: &Target) -> ApiResult<Value> {
        self.get(t).map(|obj| scale_of(&obj))
    }

    /// PUT (`kind` None) or PATCH `/scale`: only `spec.replicas` reaches the workload.
    pub fn write_scale(
        &self,
        t: &Target,
        kind: Option<PatchType>,
        body: &[u8],
        o: &WriteOptions,
    ) -> ApiResult<Value> {
        let doc = || {
            serde_json::from_slice::<Value>(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding Scale: {e}")))
        };
        let mut store = self.lock();
        let old = store
            .get(&t.key())
            .cloned()
            .ok_or_else(|| ApiError::not_found(t.subject()))?;
        let current = scale_of(&old);
        let wanted = match kind {
            None => doc()?,
            Some(PatchType::Merge | PatchType::Strategic) => patch::merge_patch(&current, &doc()?),
            Some(PatchType::Json) => {
                patch::json_patch(&current, &doc()?).map_err(ApiError::bad_request)?
            }
            Some(PatchType::Apply) => {
                return Err(ApiError::unsupported_media_type(
                    "application/apply-patch+yaml (apply to /scale is not supported by this test server)",
                ));
            }
        };
        let sent_rv = wanted["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if !sent_rv.is_empty() && old["metadata"]["resourceVersion"] != sent_rv {
            return Err(ApiError::conflict_modified(t.subject()));
        }
        let replicas = wanted["spec"]["replicas"]
            .as_i64()
            .filter(|r| *r >= 0)
            .ok_or_else(|| {
                ApiError::invalid(
                    "Scale",
                    "autoscaling",
                    &t.name,
                    &[("spec.replicas", "must be a non-negative integer".into())],
                )
            })?;
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        let stored = self.finish_update(&mut store, t, old, new, o)?;
        Ok(scale_of(&stored))
    }

    /// Server-side apply (`application/apply-patch+yaml`).
    fn apply(&self, t: &Target, body: &[u8], o: &WriteOptions) -> ApiResult<(u16, Value)> {
        let manager = match &o.field_manager {
            Some(m) if !m.is_empty() => m.clone(),
            _ => {
                return Err(ApiError::bad_request(
                    "PATCH, fieldManager: Required value: is required for apply patch",
                ));
            }
        };
        let mut config = parse_yaml_or_json(body)?;
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "the applied configuration must be an object",
            ));
        }
        let (av, kind) = (
            config["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            config["kind"].as_str().unwrap_or_default().to_string(),
        );
        if av.is_empty() || kind.is_empty() {
            return Err(ApiError::bad_request(
                "invalid object type: apiVersion and kind must be set in an applied configuration",
            ));
        }
        check_type_meta(&mut config, &t.rt)?;
        check_identity(&config, t)?;
        if config["metadata"]["name"].as_str().is_none() {
            return Err(ApiError::bad_request(
                "metadata.name must be set in an applied configuration",
            ));
        }
        if config["metadata"]["managedFields"].is_array() {
            return Err(ApiError::bad_request(
                "metadata.managedFields must be nil in an applied configuration",
            ));
        }
        match t.scope() {
            Scope::Main {
                status_subresource: true,
            } => {
                if let Some(m) = config.as_object_mut() {
                    m.remove("status");
                }
            }
            Scope::Status => {
                let status = config.get("status").cloned();
                let mut only = json!({"apiVersion": config["apiVersion"], "kind": config["kind"],
                    "metadata": {"name": t.name}});
                if let Some(s) = status {
                    only["status"] = s;
                }
                config = only;
            }
            Scope::Main { .. } => {}
        }
        let mut store = self.lock();
        let live = load(&store, t);
        let sent_rv = config["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !sent_rv.is_empty() {
            match &live {
                Some(l) if l["metadata"]["resourceVersion"] == sent_rv.as_str() => {}
                Some(_) => return Err(ApiError::conflict_modified(t.subject())),
                None => return Err(ApiError::not_found(t.subject())),
            }
        }
        if live.is_none() && t.subresource.is_some() {
            return Err(ApiError::not_found(t.subject()));
        }
        let managers = live.as_ref().map(Managers::from_object).unwrap_or_default();
        let api_version = t.rt.api_version();
        let who = Who {
            manager: &manager,
            subresource: t.subresource.as_deref().unwrap_or_default(),
            api_version: &api_version,
        };
        let (mut new, managers) = managed_fields::apply(
            live.as_ref(),
            &config,
            &managers,
            &t.schema(),
            t.scope(),
            &who,
            o.force,
        )
        .map_err(|conflicts| {
            let list: Vec<(String, String, String)> = conflicts
                .into_iter()
                .map(|(m, v, p)| (m, v, display_path(&p)))
                .collect();
            ApiError::apply_conflicts(t.subject(), &list)
        })?;
        set_managers(&mut new, &managers);
        match live {
            None => {
                self.prepare_create(&store, t, &mut new)?;
                set_managers(&mut new, &managers);
                self.commit(&mut store, t, None, new, o.dry_run)
                    .map(|v| (201, v))
            }
            Some(old) => {
                let new = self.prepare_update(t, &old, new)?;
                self.commit(&mut store, t, Some(old), new, o.dry_run)
                    .map(|v| (200, v))
            }
        }
    }

    /// The common tail of PUT and non-apply PATCH: subresource rules, Update manager, commit.
    fn finish_update(
        &self,
        store: &mut Store,
        t: &Target,
        old: Value,
        new: Value,
        o: &WriteOptions,
    ) -> ApiResult<Value> {
        let mut new = self.prepare_update(t, &old, new)?;
        let mut managers = if new["metadata"]["managedFields"] != old["metadata"]["managedFields"]
            && new["metadata"]["managedFields"].is_array()
        {
            Managers::from_object(&new)
        } else {
            Managers::from_object(&old)
        };
        let manager = o.manager();
        managed_fields::record_update(
            &mut managers,
            Some(&old),
            &new,
            &t.schema(),
            t.scope(),
            &Who {
                manager: &manager,
                subresource: t.subresource.as_deref().unwrap_or_default(),
                api_version: &t.rt.api_version(),
            },
        );
        set_managers(&mut new, &managers);
        self.commit(store, t, Some(old), new, o.dry_run)
    }

    /// Server-set fields for a new object, and the namespace existence check.
    fn prepare_create(&self, store: &Store, t: &Target, obj: &mut Value) -> ApiResult<()> {
        let rt = &t.rt;
        validate_name(rt, &t.name)?;
        if rt.namespaced {
            let ns = t.namespace.clone().unwrap_or_default();
            let ns_key = Key {
                group: String::new(),
                resource: "namespaces".into(),
                namespace: String::new(),
                name: ns.clone(),
            };
            match store.get(&ns_key) {
                None => {
                    return Err(ApiError::not_found(Subject {
                        group: "",
                        resource: "namespaces",
                        name: &ns,
                    }));
                }
                Some(n) if n["metadata"]["deletionTimestamp"].is_string() => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        rt.plural, t.name
                    )));
                }
                Some(_) => {}
            }
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(k);
        }
        if rt.tracks_generation {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        if rt.status_subresource
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        match (rt.group.as_str(), rt.kind.as_str()) {
            ("", "Namespace") => {
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(t.name);
                if obj["spec"]["finalizers"].is_null() {
                    obj["spec"]["finalizers"] = json!(["kubernetes"]);
                }
                obj["status"] = json!({"phase": "Active"});
            }
            ("", "Service") => {
                let spec = &mut obj["spec"];
                if spec["type"].is_null() {
                    spec["type"] = json!("ClusterIP");
                }
                if spec["type"] != "ExternalName" && spec["clusterIP"].is_null() {
                    let ip = format!(
                        "10.96.{}.{}",
                        rand::random::<u8>(),
                        rand::random::<u8>().max(1)
                    );
                    spec["clusterIP"] = json!(ip);
                    spec["clusterIPs"] = json!([ip]);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Keeps identity and server-set metadata from `old`, and applies the
    /// subresource rule (main writes keep the old status, status writes keep the rest).
    fn prepare_update(&self, t: &Target, old: &Value, mut new: Value) -> ApiResult<Value> {
        if t.subresource.is_some() {
            let mut merged = old.clone();
            merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            if merged["status"].is_null()
                && let Some(m) = merged.as_object_mut()
            {
                m.remove("status");
            }
            merged["metadata"]["managedFields"] = new["metadata"]["managedFields"].clone();
            merged["metadata"]["resourceVersion"] = new["metadata"]["resourceVersion"].clone();
            new = merged;
        } else if t.rt.status_subresource {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        for k in [
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
        ] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        if old["metadata"]["deletionTimestamp"].is_string() {
            let added = new["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| {
                    !old["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|o| o.contains(f))
                });
            if added {
                return Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: no new finalizers can be added if the object is being deleted",
                    t.rt.plural, t.name
                )));
            }
        }
        if t.rt.tracks_generation && spec_changed(old, &new, t.rt.status_subresource) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        Ok(new)
    }

    /// Validates kind-specific rules, skips no-ops, stores, and runs cascades.
    fn commit(
        &self,
        store: &mut Store,
        t: &Target,
        old: Option<Value>,
        mut new: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        if t.rt.group == "apiextensions.k8s.io" && t.rt.plural == "customresourcedefinitions" {
            crd_status(&mut new, t, old.as_ref())?;
        }
        if t.rt.is_events_view() {
            let errors = match &old {
                None => events::validate_create(&new),
                Some(old) => events::validate_update(
                    &events::to_storage(old.clone()),
                    &events::to_storage(new.clone()),
                ),
            };
            if !errors.is_empty() {
                return Err(ApiError::invalid(&t.rt.kind, &t.rt.group, &t.name, &errors));
            }
        }
        if t.rt.group.is_empty() && t.rt.kind == "Secret" {
            fold_string_data(&mut new);
            if new["type"].is_null() {
                new["type"] = json!("Opaque");
            }
        }
        if let Some(old) = &old
            && same_ignoring_times(old, &new)
        {
            return Ok(served(old, &t.rt));
        }
        if dry_run {
            if old.is_none()
                && let Some(m) = new["metadata"].as_object_mut()
            {
                m.remove("resourceVersion");
            }
            return Ok(served(&new, &t.rt));
        }
        let finalized = new["metadata"]["deletionTimestamp"].is_string()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        let new = if t.rt.is_events_view() {
            events::to_storage(new)
        } else {
            new
        };
        let stored = store.put(t.key(), new);
        if finalized {
            self.remove_now(store, &t.key(), true);
        }
        Ok(present(&stored, &t.rt))
    }

    /// DELETE one object. Returns the HTTP code (202 when finalizers delay it) and body.
    pub fn delete(&self, t: &Target, body: &Value, o: &WriteOptions) -> ApiResult<(u16, Value)> {
        let mut store = self.lock();
        let key = t.key();
        let obj = store
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(t.subject()))?;
        let pre = &body["preconditions"];
        if pre["uid"].is_string() && pre["uid"] != obj["metadata"]["uid"] {
            return Err(ApiError::conflict_modified(t.subject()));
        }
        if pre["resourceVersion"].is_string()
            && pre["resourceVersion"] != obj["metadata"]["resourceVersion"]
        {
            return Err(ApiError::conflict_modified(t.subject()));
        }
        let orphan = body["propagationPolicy"] == "Orphan" || body["orphanDependents"] == true;
        if o.dry_run {
            return Ok((200, present(&obj, &t.rt)));
        }
        let has_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if obj["metadata"]["deletionTimestamp"].is_string() {
                return Ok((202, present(&obj, &t.rt)));
            }
            let mut marked = obj;
            marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let stored = store.put(key, marked);
            return Ok((202, present(&stored, &t.rt)));
        }
        let mut gone = self
            .remove_now(&mut store, &key, !orphan)
            .ok_or_else(|| ApiError::not_found(t.subject()))?;
        if t.rt.kind == "Namespace" && t.rt.group.is_empty() {
            gone["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            gone["status"]["phase"] = json!("Terminating");
        }
        Ok((200, present(&gone, &t.rt)))
    }

    /// DELETE on a collection, with selectors.
    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        lo: &ListOptions,
        o: &WriteOptions,
    ) -> ApiResult<Value> {
        let list = self.list(rt, namespace, lo)?;
        let mut deleted = Vec::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let t = Target {
                rt: rt.clone(),
                namespace: item["metadata"]["namespace"].as_str().map(str::to_string),
                name: item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                subresource: None,
            };
            if let Ok((_, v)) = self.delete(&t, &Value::Null, o) {
                deleted.push(v);
            }
        }
        Ok(
            json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": self.lock().current_rv().to_string()}, "items": deleted}),
        )
    }

    /// Removes an object now, with its namespace contents, CRD instances and
    /// (when `cascade`) owner-referenced dependents.
    fn remove_now(&self, store: &mut Store, key: &Key, cascade: bool) -> Option<Value> {
        let uid = store.get(key)?["metadata"]["uid"]
            .as_str()
            .map(str::to_string);
        if key.group.is_empty() && key.resource == "namespaces" {
            for k in store.keys_in_namespace(&key.name) {
                store.delete(&k);
            }
        }
        if key.group == "apiextensions.k8s.io"
            && key.resource == "customresourcedefinitions"
            && let Some(crd) = store.get(key)
            && let (Some(group), Some(plural)) = (
                crd["spec"]["group"].as_str().map(str::to_string),
                crd["spec"]["names"]["plural"].as_str().map(str::to_string),
            )
        {
            let keys: Vec<Key> = store
                .list(&group, &plural, None)
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                store.delete(&k);
            }
        }
        let gone = store.delete(key);
        if cascade && let Some(uid) = uid {
            for dep in store.dependents_of(&uid) {
                self.remove_now(store, &dep, true);
            }
        }
        gone
    }

    /// Events after `rv` for one resource (see [`Store::events_since`]).
    pub fn events_since(&self, rv: u64) -> Result<Vec<Arc<Event>>, u64> {
        self.lock().events_since(rv)
    }

    /// Creates the namespaces a fresh cluster has.
    pub fn seed_namespaces(&self) {
        let registry = self.registry();
        let Some(rt) = registry.lookup("", "v1", "namespaces").cloned() else {
            return;
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let o = WriteOptions {
                field_manager: Some("flotilla-kube-test-server".into()),
                ..Default::default()
            };
            if let Err(e) = self.create(&rt, None, body, &o) {
                tracing::warn!("kube test server: seeding namespace {ns}: {e}");
            }
        }
    }
}

/// The autoscaling/v1 Scale view of a Deployment, StatefulSet or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let selector: Vec<String> = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector.join(",")},
    })
}

/// Secret `stringData` is write-only: the API server folds it into base64 `data`.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(string_data) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    if let Value::Object(entries) = string_data {
        for (k, v) in entries {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
}

/// A stored object as served at `rt`'s version (an Event converted for the
/// `events.k8s.io/v1` view).
pub fn present(obj: &Value, rt: &ResourceType) -> Value {
    if rt.is_events_view() {
        served(&events::to_view(obj), rt)
    } else {
        served(obj, rt)
    }
}

/// An object already in the shape `rt` serves, with `rt`'s apiVersion and kind.
fn served(obj: &Value, rt: &ResourceType) -> Value {
    let mut v = obj.clone();
    v["apiVersion"] = json!(rt.api_version());
    v["kind"] = json!(rt.kind);
    v
}

/// The object `t` addresses, in the shape `t.rt` serves, so that writes through the
/// `events.k8s.io/v1` view patch and compare what that view shows.
fn load(store: &Store, t: &Target) -> Option<Value> {
    let obj = store.get(&t.key())?;
    Some(if t.rt.is_events_view() {
        present(obj, &t.rt)
    } else {
        obj.clone()
    })
}

/// Whether `obj` passes both selectors.
pub fn matches(obj: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    labels.matches(&obj["metadata"]["labels"]) && fields.matches(obj)
}

fn set_managers(obj: &mut Value, m: &Managers) {
    if m.0.is_empty() {
        if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = m.to_value();
    }
}

/// apiVersion/kind in the body must name this resource (they are filled in when absent).
fn check_type_meta(obj: &mut Value, rt: &ResourceType) -> ApiResult<()> {
    let av = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    if !kind.is_empty() && kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({}) or the kind ({kind}) does not match {}",
            rt.api_version(),
            rt.kind
        )));
    }
    if !av.is_empty() {
        let (g, _) = crate::resources::split_api_version(&av);
        if g != rt.group {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
    }
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    if !obj["metadata"].is_object() {
        if obj["metadata"].is_null() {
            obj["metadata"] = json!({});
        } else {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
    }
    Ok(())
}

/// The body's name and namespace must agree with the URL.
fn check_identity(obj: &Value, t: &Target) -> ApiResult<()> {
    if let Some(n) = obj["metadata"]["name"].as_str()
        && n != t.name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            t.name
        )));
    }
    if t.rt.namespaced
        && let Some(ns) = obj["metadata"]["namespace"].as_str()
        && !ns.is_empty()
        && Some(ns) != t.namespace.as_deref()
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

fn validate_name(rt: &ResourceType, name: &str) -> ApiResult<()> {
    let dns_label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let ok = if rt.group.is_empty() && rt.kind == "Namespace" {
        dns_label(name)
    } else if rt.group == "rbac.authorization.k8s.io" {
        !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains('/')
            && !name.contains('%')
    } else {
        name.len() <= 253 && name.split('.').all(dns_label)
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &rt.kind,
            &rt.group,
            name,
            &[(
                "metadata.name",
                format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            )],
        ))
    }
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Whether anything outside metadata (and outside status, when it is a subresource) changed.
fn spec_changed(old: &Value, new: &Value, status_subresource: bool) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            if status_subresource {
                m.remove("status");
            }
        }
        v
    };
    strip(old) != strip(new)
}

fn same_ignoring_times(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(entries) = v["metadata"]["managedFields"].as_array_mut() {
            for e in entries {
                if let Some(m) = e.as_object_mut() {
                    m.remove("time");
                }
            }
        }
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        v
    };
    strip(old) == strip(new)
}

/// Validates a CRD and sets the status the apiextensions controller would:
/// NamesAccepted and Established, acceptedNames and storedVersions.
fn crd_status(crd: &mut Value, t: &Target, old: Option<&Value>) -> ApiResult<()> {
    types_from_crd(crd).map_err(|(field, msg)| {
        ApiError::invalid(&t.rt.kind, &t.rt.group, &t.name, &[(field.as_str(), msg)])
    })?;
    let now = now_rfc3339();
    let since = |ty: &str| {
        old.and_then(|o| o["status"]["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| now.clone())
    };
    let mut names = crd["spec"]["names"].clone();
    if names["singular"].is_null() {
        names["singular"] = json!(names["kind"].as_str().unwrap_or_default().to_lowercase());
    }
    if names["listKind"].is_null() {
        names["listKind"] = json!(format!(
            "{}List",
            names["kind"].as_str().unwrap_or_default()
        ));
    }
    let storage = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut stored: Vec<Value> = old
        .and_then(|o| o["status"]["storedVersions"].as_array().cloned())
        .unwrap_or_default();
    if !stored.iter().any(|v| v == storage.as_str()) {
        stored.push(json!(storage));
    }
    crd["spec"]["names"] = names.clone();
    crd["status"] = json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": since("Established")},
        ],
        "acceptedNames": names,
        "storedVersions": stored,
    });
    Ok(())
}

/// Parses an apply body: JSON, or YAML (one document).
pub fn parse_yaml_or_json(body: &[u8]) -> ApiResult<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

fn encode_continue(pos: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"start": pos}).to_string())
}

fn decode_continue(tok: &str) -> ApiResult<String> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    v["start"].as_str().map(str::to_string).ok_or_else(bad)
}

#[cfg(test)]
fn object_map(v: &Value) -> &serde_json::Map<String, Value> {
    v.as_object().expect("object")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Arc<Cluster> {
        let c = Cluster::new(100);
        c.seed_namespaces();
        c
    }

    fn rt(c: &Cluster, g: &str, v: &str, plural: &str) -> ResourceType {
        c.registry()
            .lookup(g, v, plural)
            .cloned()
            .expect("known resource")
    }

    fn opts(m: &str) -> WriteOptions {
        WriteOptions {
            field_manager: Some(m.into()),
            ..Default::default()
        }
    }

    #[test]
    fn creating_in_a_missing_namespace_is_not_found() {
        let c = cluster();
        let cm = rt(&c, "", "v1", "configmaps");
        let err = c
            .create(
                &cm,
                Some("nope"),
                json!({"metadata": {"name": "a"}}),
                &opts("t"),
            )
            .expect_err("missing namespace");
        assert_eq!((err.code, err.reason), (404, "NotFound"));
        assert_eq!(err.message, "namespaces \"nope\" not found");
    }

    #[test]
    fn status_writes_do_not_bump_generation_but_spec_writes_do() {
        let c = cluster();
        let d = rt(&c, "apps", "v1", "deployments");
        let created = c
            .create(
                &d,
                Some("default"),
                json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}, "status": {"x": 1}}),
                &opts("t"),
            )
            .expect("created");
        assert_eq!(created["metadata"]["generation"], 1);
        assert!(
            object_map(&created).get("status").is_none(),
            "status is dropped on create"
        );
        let t = Target {
            rt: d.clone(),
            namespace: Some("default".into()),
            name: "web".into(),
            subresource: Some("status".into()),
        };
        let (_, s) = c
            .patch(
                &t,
                PatchType::Merge,
                br#"{"status": {"readyReplicas": 1}}"#,
                &opts("ctl"),
            )
            .expect("status patch");
        assert_eq!(s["metadata"]["generation"], 1);
        assert_eq!(s["status"]["readyReplicas"], 1);
        let main = Target {
            subresource: None,
            ..t
        };
        let (_, m) = c
            .patch(
                &main,
                PatchType::Merge,
                br#"{"spec": {"replicas": 2}, "status": {"readyReplicas": 9}}"#,
                &opts("ctl"),
            )
            .expect("main patch");
        assert_eq!(m["metadata"]["generation"], 2);
        assert_eq!(m["status"]["readyReplicas"], 1, "main writes ignore status");
    }
}
