//! Drift watches: one kube-runtime reflector per kind that flotilla applied, selecting
//! the objects that carry flotilla's managed-by label. Each reflector keeps a [`Store`]
//! (a cache of those objects, fed by one LIST and then one WATCH) that `live` reads
//! instead of asking the API server at every check, notes which bundle's object changed
//! (its `flotilla.dev/bundle` annotation) and wakes the agent (a `Notify`). What changed
//! is worked out by `KubeApplier::check`, so a missed or duplicated event costs one extra
//! comparison and nothing else.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::manifest::{BUNDLE_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Bundles whose objects changed since the agent last asked. Written by the watcher
/// tasks, drained by `KubeApplier::changed_bundles`.
pub type Dirty = Arc<Mutex<BTreeSet<String>>>;

/// One kind's reflector: the task that feeds the cache, and the cache.
struct Reflected {
    task: JoinHandle<()>,
    store: Store<DynamicObject>,
}

pub struct Watches {
    client: Client,
    notify: Arc<Notify>,
    dirty: Dirty,
    /// `group/version/plural` → its reflector. Written by `ensure` only.
    running: Mutex<HashMap<String, Reflected>>,
}

fn key_of(ar: &ApiResource) -> String {
    format!("{}/{}", ar.api_version, ar.plural)
}

impl Watches {
    pub fn new(client: Client, notify: Arc<Notify>, dirty: Dirty) -> Self {
        Watches {
            client,
            notify,
            dirty,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The cache of `ar`'s flotilla objects, once its first LIST has filled it; None
    /// while it is filling (or was never started), when only the API server knows.
    pub fn ready_store(&self, ar: &ApiResource) -> Option<Store<DynamicObject>> {
        let running = self.running.lock().ok()?;
        let reflected = running.get(&key_of(ar))?;
        if reflected.task.is_finished() {
            return None;
        }
        // `wait_until_ready` resolves at once for a store that is ready; never block a
        // check on one that is not.
        matches!(
            reflected.store.wait_until_ready().now_or_never(),
            Some(Ok(()))
        )
        .then(|| reflected.store.clone())
    }

    /// Starts watching `ar` unless it is watched already. Needs a tokio runtime.
    pub fn ensure(&self, ar: &ApiResource) {
        let key = key_of(ar);
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        if running.get(&key).is_some_and(|r| !r.task.is_finished()) {
            return;
        }
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), ar);
        let cfg =
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
        let writer = reflector::store::Writer::new(ar.clone());
        let store = writer.as_reader();
        let (notify, dirty, name) = (self.notify.clone(), self.dirty.clone(), key.clone());
        let task = tokio::spawn(async move {
            let mut events = watcher(api, cfg)
                .default_backoff()
                // Drift never compares managedFields; the cache need not hold them.
                .modify(|o: &mut DynamicObject| o.metadata.managed_fields = None)
                .reflect(writer)
                .boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => {
                        let bundle = obj
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(BUNDLE_ANNOTATION));
                        if let (Some(b), Ok(mut d)) = (bundle, dirty.lock()) {
                            d.insert(b.clone());
                        }
                        notify.notify_one();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(kind = %name, error = %e, "drift watch error; retrying")
                    }
                }
            }
        });
        tracing::debug!(kind = %key, "watching for drift");
        running.insert(key, Reflected { task, store });
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        if let Ok(running) = self.running.lock() {
            for r in running.values() {
                r.task.abort();
            }
        }
    }
}
