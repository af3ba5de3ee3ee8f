//! Live objects for checks: read from the watch caches (`watch`), with one GET where
//! the cache may lag. Owns what the spoke last knew for sure of each object it applied:
//! the resourceVersion its apply (or its last GET) returned, or that the object is gone.
//!
//! A cached object whose resourceVersion is the one we know is compared with no request.
//! One whose version differs (someone changed it, or the cache has not caught up with our
//! own apply), or one missing from a ready cache that we did not already see gone, is
//! confirmed with one GET, and what the GET showed becomes what we know. So an idle
//! spoke makes no request but its watches, and a change costs one GET per object.
//!
//! **Invariant:** the cache is trusted only for an object version the API server itself
//! answered us with; a lagging cache can cost a request, never a wrong verdict.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::reflector::{self, Store};

use super::manifest::ObjectRef;

/// What the spoke last knew for sure about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// It held this resourceVersion (our apply returned it, or a GET showed it).
    Version(String),
    /// A GET found it gone.
    Absent,
}

/// How one check reads one object.
#[derive(Debug, PartialEq)]
enum Read {
    /// From the cache, which holds the version we know.
    Cached(Arc<DynamicObject>),
    /// Gone, as a GET showed before and the cache still shows.
    Gone,
    /// Ask the API server.
    Get,
}

/// Decides how to read an object. `cached` is None while the kind has no ready cache,
/// `Some(None)` when a ready cache does not hold the object.
fn decide(cached: Option<Option<Arc<DynamicObject>>>, known: Option<&Known>) -> Read {
    match (cached, known) {
        (Some(Some(obj)), Some(Known::Version(v)))
            if obj.metadata.resource_version.as_deref() == Some(v.as_str()) =>
        {
            Read::Cached(obj)
        }
        (Some(None), Some(Known::Absent)) => Read::Gone,
        _ => Read::Get,
    }
}

fn version_of(obj: &DynamicObject) -> Option<Known> {
    obj.metadata.resource_version.clone().map(Known::Version)
}

/// Object → what the spoke last knew of it. Written by `applied`, `forget` and `read`.
#[derive(Default)]
pub struct LiveObjects {
    known: Mutex<HashMap<ObjectRef, Known>>,
}

impl LiveObjects {
    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef, Known>> {
        // Each entry is written whole; a panic elsewhere cannot leave one half-written.
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the version our apply of `r` returned.
    pub fn applied(&self, r: &ObjectRef, live: &DynamicObject) {
        match version_of(live) {
            Some(k) => self.known().insert(r.clone(), k),
            None => self.known().remove(r),
        };
    }

    /// Forgets objects the spoke no longer applies.
    pub fn forget<'a>(&self, objects: impl IntoIterator<Item = &'a ObjectRef>) {
        let mut known = self.known();
        for r in objects {
            known.remove(r);
        }
    }

    /// The live object `r` (None when it is gone): from `store` when it holds the version
    /// we know, else from one GET through `api`.
    pub async fn read(
        &self,
        r: &ObjectRef,
        ar: &ApiResource,
        store: Option<&Store<DynamicObject>>,
        api: &Api<DynamicObject>,
    ) -> Result<Option<Arc<DynamicObject>>, kube::Error> {
        let cached = store.map(|s| {
            let mut key = reflector::ObjectRef::<DynamicObject>::new_with(&r.name, ar.clone());
            if !r.namespace.is_empty() {
                key = key.within(&r.namespace);
            }
            s.get(&key)
        });
        let decision = decide(cached, self.known().get(r));
        match decision {
            Read::Cached(obj) => Ok(Some(obj)),
            Read::Gone => Ok(None),
            Read::Get => {
                let got = api.get_opt(&r.name).await?;
                let known = match &got {
                    Some(obj) => version_of(obj),
                    None => Some(Known::Absent),
                };
                match known {
                    Some(k) => self.known().insert(r.clone(), k),
                    None => self.known().remove(r),
                };
                Ok(got.map(Arc::new))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: &str) -> Arc<DynamicObject> {
        let ar = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
        let mut obj = DynamicObject::new("c", &ar);
        obj.metadata.resource_version = Some(version.into());
        Arc::new(obj)
    }

    fn v(s: &str) -> Known {
        Known::Version(s.into())
    }

    #[test]
    fn the_cache_answers_only_for_the_version_the_server_gave_us() {
        let obj = at("7");
        assert_eq!(
            decide(Some(Some(obj.clone())), Some(&v("7"))),
            Read::Cached(obj)
        );
        // Changed by someone else, or the cache lags our own apply.
        assert_eq!(decide(Some(Some(at("8"))), Some(&v("7"))), Read::Get);
        // Never seen from the server (a restarted spoke).
        assert_eq!(decide(Some(Some(at("7"))), None), Read::Get);
        // A cache still filling knows nothing.
        assert_eq!(decide(None, Some(&v("7"))), Read::Get);
    }

    #[test]
    fn a_missing_object_is_confirmed_once_then_read_as_gone_from_the_cache() {
        assert_eq!(decide(Some(None), Some(&v("7"))), Read::Get);
        assert_eq!(decide(Some(None), None), Read::Get);
        assert_eq!(decide(Some(None), Some(&Known::Absent)), Read::Gone);
        // Back in the cache after we saw it gone: someone recreated it.
        assert_eq!(decide(Some(Some(at("9"))), Some(&Known::Absent)), Read::Get);
        assert_eq!(decide(None, Some(&Known::Absent)), Read::Get);
    }
}
