//! The in-memory object store: objects by (group, resource, namespace, name), one
//! global monotonic resourceVersion, and a bounded history of watch events.
//!
//! Storage knows nothing about HTTP or API semantics (validation, ownership,
//! subresources); the `api` module decides what to write. Every write bumps the
//! resourceVersion, records one event and wakes the watchers. Objects are kept
//! per group and resource, not per version: a CRD's versions share one store and
//! no conversion happens.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use crate::resources::Registry;

/// Where an object lives. `namespace` is empty for cluster-scoped objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub group: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

/// The watch event types that the store records (`BOOKMARK` and `ERROR` are made
/// by the watch module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as watchers see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub key: Key,
    /// The object after the change (for `Deleted`: its last state, with the deletion's RV).
    pub object: Value,
    /// The object before the change, to turn selector transitions into ADDED/DELETED.
    pub prev: Option<Value>,
}

/// Objects, resourceVersion counter and event history. Callers hold it behind a mutex.
pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Highest resourceVersion whose event was dropped from the history.
    compacted_through: u64,
    registry: Arc<Registry>,
    notify: watch::Sender<u64>,
}

impl Store {
    pub fn new(history_limit: usize) -> Store {
        Store {
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_through: 0,
            registry: Arc::new(Registry::default()),
            notify: watch::channel(1).0,
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// A receiver that changes whenever the resourceVersion does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of one resource, in one namespace or all, in key order.
    pub fn list<'a>(
        &'a self,
        group: &'a str,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        let start = Key {
            group: group.to_string(),
            resource: resource.to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
            name: String::new(),
        };
        self.objects.range(start..).take_while(move |(k, _)| {
            k.group == group
                && k.resource == resource
                && namespace.is_none_or(|ns| k.namespace == ns)
        })
    }

    /// Every key in a namespace, across resources.
    pub fn keys_in_namespace(&self, namespace: &str) -> Vec<Key> {
        self.objects
            .keys()
            .filter(|k| k.namespace == namespace)
            .cloned()
            .collect()
    }

    /// Keys of objects whose `metadata.ownerReferences` name `uid`.
    pub fn dependents_of(&self, uid: &str) -> Vec<Key> {
        self.objects
            .iter()
            .filter(|(_, v)| {
                v["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The resourceVersion the next write will get.
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `obj` under `key` with a new resourceVersion and returns what was stored.
    pub fn put(&mut self, key: Key, mut obj: Value) -> Value {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let prev = self.objects.insert(key.clone(), obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let crd_changed = key.resource == "customresourcedefinitions";
        self.record(Event {
            rv,
            kind,
            key,
            object: obj.clone(),
            prev,
        });
        if crd_changed {
            self.rebuild_registry();
        }
        obj
    }

    /// Removes the object at `key`; the DELETED event carries a new resourceVersion.
    pub fn delete(&mut self, key: &Key) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        let rv = self.next_rv();
        let prev = obj.clone();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.record(Event {
            rv,
            kind: EventType::Deleted,
            key: key.clone(),
            object: obj.clone(),
            prev: Some(prev),
        });
        if key.resource == "customresourcedefinitions" {
            self.rebuild_registry();
        }
        Some(obj)
    }

    fn record(&mut self, event: Event) {
        let rv = event.rv;
        self.history.push_back(Arc::new(event));
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted_through = old.rv;
            }
        }
        self.notify.send_replace(rv);
    }

    fn rebuild_registry(&mut self) {
        let crds = self
            .list("apiextensions.k8s.io", "customresourcedefinitions", None)
            .map(|(_, v)| v);
        self.registry = Arc::new(Registry::with_crds(crds));
    }

    /// Events with a resourceVersion above `rv`, or `Err(oldest)` when some were
    /// already dropped from the bounded history (the caller answers 410 Gone).
    pub fn events_since(&self, rv: u64) -> Result<Vec<Arc<Event>>, u64> {
        if rv < self.compacted_through {
            return Err(self.compacted_through + 1);
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok(self.history.iter().skip(start).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> Key {
        Key {
            group: String::new(),
            resource: "configmaps".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn every_write_gets_a_higher_resource_version() {
        let mut s = Store::new(10);
        let a = s.put(key("a"), json!({"metadata": {"name": "a"}}));
        let b = s.put(key("a"), json!({"metadata": {"name": "a"}}));
        let rv = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .parse::<u64>()
                .unwrap_or_default()
        };
        assert!(rv(&b) > rv(&a));
        let d = s.delete(&key("a")).expect("exists");
        assert!(rv(&d) > rv(&b));
    }

    #[test]
    fn history_is_bounded_and_old_versions_expire() {
        let mut s = Store::new(2);
        for n in ["a", "b", "c", "d"] {
            s.put(key(n), json!({"metadata": {"name": n}}));
        }
        assert!(s.events_since(1).is_err());
        let recent = s.events_since(s.current_rv() - 1).expect("retained");
        assert_eq!(recent.len(), 1);
    }
}
