//! Drift watches: one kube-runtime watcher per kind that flotilla applied, selecting the
//! objects that carry flotilla's managed-by label. A watch only notes which bundle's
//! object changed (its `flotilla.dev/bundle` annotation) and wakes the agent (a
//! `Notify`); what changed is worked out by `KubeTarget::check`, so a missed or
//! duplicated event costs one extra comparison and nothing else.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::manifest::{BUNDLE_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Bundles whose objects changed since the agent last asked. Written by the watcher
/// tasks, drained by `KubeTarget::changed_bundles`.
pub type Dirty = Arc<Mutex<BTreeSet<String>>>;

pub struct Watches {
    client: Client,
    notify: Arc<Notify>,
    dirty: Dirty,
    /// `group/version/plural` → its watcher task. Written by `ensure` only.
    running: Mutex<HashMap<String, JoinHandle<()>>>,
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

    /// Starts watching `ar` unless it is watched already. Needs a tokio runtime.
    pub fn ensure(&self, ar: &ApiResource) {
        let key = format!("{}/{}", ar.api_version, ar.plural);
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        if running.get(&key).is_some_and(|t| !t.is_finished()) {
            return;
        }
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), ar);
        let cfg =
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
        let (notify, dirty, name) = (self.notify.clone(), self.dirty.clone(), key.clone());
        let task = tokio::spawn(async move {
            let mut events = watcher(api, cfg).default_backoff().boxed();
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
        running.insert(key, task);
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        if let Ok(running) = self.running.lock() {
            for task in running.values() {
                task.abort();
            }
        }
    }
}
