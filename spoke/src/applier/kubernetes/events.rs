//! Kubernetes Events about bundles, for whoever runs `kubectl get events -n
//! flotilla-system` or `kubectl describe configmap bundle-<bundle>`: `Applied`,
//! `ApplyFailed`, `PolicyRefused`, `DriftDetected`, `DriftCorrected` and `Pruned`. Each one regards the
//! bundle's inventory ConfigMap (`flotilla-system/bundle-<bundle>`), so the events of
//! one bundle are found together, with the reporting controller `flotilla.dev/spoke`.
//!
//! **Best-effort.** [`Events::record`] neither waits nor fails: it queues the event for
//! one background task (a bounded queue; when it is full the event is dropped), which
//! publishes through kube-runtime's [`Recorder`] (`events.k8s.io/v1`) and logs what it
//! cannot publish. An Event that cannot be recorded is dropped, never retried, and never
//! reaches the apply that caused it.
//!
//! **Only on change.** The task remembers the last event of each bundle. The same
//! failure again (the agent retries a failed bundle at every tick) is not news and is
//! not published again. The same success again (drift corrected once more in the same
//! way) is counted in the first Event's `series`, which is how the Recorder aggregates.
//! Anything else is a new Event. That is also why each distinct event gets a Recorder of
//! its own: a Recorder aggregates by reason and object but not by note, so a second
//! `Applied` within its six-minute window would otherwise be counted into the first one
//! and keep the first deployment's note.

use std::collections::HashMap;
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use super::api_error;
use super::inventory;
use super::manifest::ObjectRef;
use flotilla_model::ResourceStatus;

/// The `reportingController` of every Event the spoke records.
pub const REPORTING_CONTROLLER: &str = "flotilla.dev/spoke";
/// Events waiting for the publisher; more than this in flight means the API server is
/// not keeping up, and dropping is better than holding an apply.
const QUEUE: usize = 256;
/// The API server refuses a note over 1024 bytes.
const NOTE_LIMIT: usize = 1024;
/// The API server refuses a reportingInstance over 128 bytes.
const INSTANCE_LIMIT: usize = 128;

/// Why an Event is recorded: its `reason`, as `kubectl get events` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Applied,
    ApplyFailed,
    PolicyRefused,
    /// Drift in a bundle without `correctDrift`: reported, left alone.
    DriftDetected,
    DriftCorrected,
    Pruned,
}

impl Reason {
    fn event_type(self) -> EventType {
        match self {
            Reason::Applied | Reason::Pruned => EventType::Normal,
            // DriftCorrected is a Warning although the cluster is right again: someone or
            // something changed a managed object outside git, which is worth a look.
            Reason::ApplyFailed
            | Reason::PolicyRefused
            | Reason::DriftDetected
            | Reason::DriftCorrected => EventType::Warning,
        }
    }

    /// The `action`: what the spoke did (or tried to do) to the bundle's objects.
    fn action(self) -> &'static str {
        match self {
            Reason::Pruned => "Prune",
            Reason::DriftDetected => "Check",
            _ => "Apply",
        }
    }

    /// A failure (or uncorrected drift) seen again is the same condition, not a new
    /// occurrence.
    fn is_condition(self) -> bool {
        matches!(
            self,
            Reason::ApplyFailed | Reason::PolicyRefused | Reason::DriftDetected
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Applied => "Applied",
            Reason::ApplyFailed => "ApplyFailed",
            Reason::PolicyRefused => "PolicyRefused",
            Reason::DriftDetected => "DriftDetected",
            Reason::DriftCorrected => "DriftCorrected",
            Reason::Pruned => "Pruned",
        })
    }
}

/// One Event about one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEvent {
    pub bundle: String,
    pub reason: Reason,
    /// Clipped to what the API server accepts.
    pub note: String,
    /// The inventory ConfigMap's uid when the caller knows it (`kubectl describe` finds
    /// events by uid); otherwise the publisher looks it up.
    pub inventory_uid: Option<String>,
}

impl BundleEvent {
    fn new(bundle: &str, reason: Reason, note: String) -> Self {
        BundleEvent {
            bundle: bundle.to_string(),
            reason,
            note: clip(note, NOTE_LIMIT),
            inventory_uid: None,
        }
    }

    pub fn applied(bundle: &str, deployment_id: &str, objects: usize) -> Self {
        Self::new(
            bundle,
            Reason::Applied,
            format!(
                "Applied deployment {deployment_id} of bundle {bundle}: {}",
                count(objects, "object")
            ),
        )
    }

    /// `error` is the apply's error, which names the bundle and the object.
    pub fn apply_failed(bundle: &str, deployment_id: &str, error: &anyhow::Error) -> Self {
        Self::new(
            bundle,
            Reason::ApplyFailed,
            format!("Applying deployment {deployment_id} failed: {error:#}"),
        )
    }

    /// `error` is the refusal, which lists every offending object.
    pub fn policy_refused(bundle: &str, deployment_id: &str, error: &anyhow::Error) -> Self {
        Self::new(
            bundle,
            Reason::PolicyRefused,
            format!("Deployment {deployment_id} refused: {error:#}"),
        )
    }

    /// `drift`: as for [`BundleEvent::drift_corrected`]; the bundle has no `correctDrift`,
    /// so the cluster keeps the change until the next deployment.
    pub fn drift_detected(bundle: &str, deployment_id: &str, drift: &str) -> Self {
        Self::new(
            bundle,
            Reason::DriftDetected,
            format!(
                "Deployment {deployment_id} of bundle {bundle} drifted (correctDrift is off, left as is): {drift}"
            ),
        )
    }

    /// `drift`: the objects that `check` found Modified, with their changed fields.
    pub fn drift_corrected(bundle: &str, deployment_id: &str, drift: &str) -> Self {
        Self::new(
            bundle,
            Reason::DriftCorrected,
            format!("Re-applied deployment {deployment_id} of bundle {bundle} over drift: {drift}"),
        )
    }

    /// Objects deleted because deployment `deployment_id` no longer holds them, or (None)
    /// because the bundle was unassigned.
    pub fn pruned(bundle: &str, deployment_id: Option<&str>, objects: &[ObjectRef]) -> Self {
        let list = objects
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let n = count(objects.len(), "object");
        let note = match deployment_id {
            Some(id) => format!(
                "Pruned {n} of bundle {bundle} that deployment {id} no longer holds: {list}"
            ),
            None => format!("Pruned {n} of bundle {bundle}, which is no longer assigned: {list}"),
        };
        Self::new(bundle, Reason::Pruned, note)
    }

    /// Anchors the event on the inventory ConfigMap with this uid.
    pub fn on(mut self, inventory_uid: Option<String>) -> Self {
        self.inventory_uid = inventory_uid;
        self
    }
}

/// The Modified objects of a `check`, one `object: changes` per object, for a
/// DriftCorrected note.
pub fn drift_summary(resources: &[ResourceStatus]) -> String {
    resources
        .iter()
        .filter(|r| r.state == flotilla_model::State::Modified)
        .map(|r| {
            let object = ObjectRef {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                namespace: r.namespace.clone(),
                name: r.name.clone(),
            };
            format!("{object}: {}", r.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// At most `limit` bytes, cut on a character boundary, with a mark where it was cut.
fn clip(s: String, limit: usize) -> String {
    const MARK: &str = " …";
    if s.len() <= limit {
        return s;
    }
    let mut end = limit - MARK.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &s[..end])
}

/// Who records: `flotilla.dev/spoke`, instance `<cluster>@<host>` (the host is the
/// pod's name in a cluster), so an Event leads both to the hub's view of the cluster
/// and to the spoke's logs.
pub fn reporter(cluster: &str) -> Reporter {
    let host = Reporter::from(REPORTING_CONTROLLER).instance;
    let instance = match (cluster.is_empty(), host) {
        (false, Some(h)) => format!("{cluster}@{h}"),
        (false, None) => cluster.to_string(),
        (true, Some(h)) => h,
        (true, None) => REPORTING_CONTROLLER.to_string(),
    };
    Reporter {
        controller: REPORTING_CONTROLLER.to_string(),
        instance: Some(clip(instance, INSTANCE_LIMIT)),
    }
}

enum Message {
    Record(BundleEvent),
    /// The bundle is gone: drop what the publisher remembers of it.
    Forget(String),
}

/// The handle the Kubernetes target records through; the publisher task ends when it
/// is dropped.
pub struct Events {
    tx: mpsc::Sender<Message>,
}

impl Events {
    /// Starts the publisher task (on the current tokio runtime).
    pub fn start(client: Client, reporter: Reporter) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let publisher = Publisher {
            client,
            reporter,
            last: HashMap::new(),
            failing: false,
        };
        tokio::spawn(publisher.run(rx));
        Events { tx }
    }

    /// Queues an Event; never waits.
    pub fn record(&self, event: BundleEvent) {
        let (bundle, reason) = (event.bundle.clone(), event.reason);
        if let Err(e) = self.tx.try_send(Message::Record(event)) {
            tracing::debug!(bundle, %reason, error = %e, "Kubernetes Event dropped");
        }
    }

    /// Forgets what was last recorded for a bundle: it was removed (after its last
    /// Event), or the condition it was in cleared, so the same Event again is news.
    pub fn forget(&self, bundle: &str) {
        let _ = self.tx.try_send(Message::Forget(bundle.to_string()));
    }
}

/// The last Event published for a bundle, and the Recorder that holds its series.
struct Last {
    reason: Reason,
    note: String,
    recorder: Recorder,
}

/// Owns the API calls for Events. Runs as one task, so a bundle's Events are published
/// in the order they were recorded.
struct Publisher {
    client: Client,
    reporter: Reporter,
    /// Bundle → its last Event. Written only by this task.
    last: HashMap<String, Last>,
    /// Whether the last publish failed: the first failure is a warning, the ones after
    /// it are debug, so an API server that refuses every Event does not flood the log.
    failing: bool,
}

impl Publisher {
    async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                Message::Record(ev) => self.publish(ev).await,
                Message::Forget(bundle) => {
                    self.last.remove(&bundle);
                }
            }
        }
    }

    async fn publish(&mut self, ev: BundleEvent) {
        let repeat = self
            .last
            .get(&ev.bundle)
            .filter(|l| l.reason == ev.reason && l.note == ev.note);
        let recorder = match repeat {
            Some(_) if ev.reason.is_condition() => return,
            Some(last) => last.recorder.clone(),
            None => Recorder::new(self.client.clone(), self.reporter.clone()),
        };
        let uid = match &ev.inventory_uid {
            Some(uid) => Some(uid.clone()),
            None => self.inventory_uid(&ev.bundle).await,
        };
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            namespace: Some(inventory::NAMESPACE.into()),
            name: Some(inventory::configmap_name(&ev.bundle)),
            uid,
            ..Default::default()
        };
        let event = Event {
            type_: ev.reason.event_type(),
            reason: ev.reason.to_string(),
            note: Some(ev.note.clone()),
            action: ev.reason.action().to_string(),
            secondary: None,
        };
        let mut result = recorder.publish(&event, &regarding).await;
        if matches!(&result, Err(kube::Error::Api(s)) if s.code == 404) {
            // The first bundle of a fresh cluster can fail before anything created the
            // inventory namespace, which is where its Events go.
            if inventory::ensure_namespace(&self.client).await.is_ok() {
                result = recorder.publish(&event, &regarding).await;
            }
        }
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!("recording Kubernetes Events again");
                }
                self.failing = false;
            }
            Err(e) => {
                let error = api_error(e);
                if self.failing {
                    tracing::debug!(bundle = %ev.bundle, reason = %ev.reason, %error, "cannot record a Kubernetes Event");
                } else {
                    tracing::warn!(bundle = %ev.bundle, reason = %ev.reason, %error,
                        "cannot record a Kubernetes Event (the spoke needs create and patch on events.k8s.io events in {}); applying goes on without Events",
                        inventory::NAMESPACE);
                }
                self.failing = true;
            }
        }
        // Remembered even when publishing failed: a dropped Event is not retried.
        self.last.insert(
            ev.bundle,
            Last {
                reason: ev.reason,
                note: ev.note,
                recorder,
            },
        );
    }

    /// The uid of the bundle's inventory ConfigMap, if it exists and can be read.
    async fn inventory_uid(&self, bundle: &str) -> Option<String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), inventory::NAMESPACE);
        match api.get_opt(&inventory::configmap_name(bundle)).await {
            Ok(cm) => cm.and_then(|cm| cm.metadata.uid),
            Err(e) => {
                tracing::debug!(bundle, error = %api_error(e), "cannot read the inventory an Event regards");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_clipped_to_what_the_api_server_accepts_on_a_char_boundary() {
        let long = "é".repeat(2000);
        let ev = BundleEvent::drift_corrected("web", "d-1", &long);
        assert!(ev.note.len() <= NOTE_LIMIT, "{}", ev.note.len());
        assert!(ev.note.ends_with(" …"));
        assert_eq!(clip("short".into(), 10), "short");
    }

    #[test]
    fn notes_name_the_bundle_the_deployment_and_what_happened() {
        assert_eq!(
            BundleEvent::applied("web", "d-0123", 1).note,
            "Applied deployment d-0123 of bundle web: 1 object"
        );
        let gone = ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "shop".into(),
            name: "extra".into(),
        };
        assert_eq!(
            BundleEvent::pruned("web", Some("d-2"), std::slice::from_ref(&gone)).note,
            "Pruned 1 object of bundle web that deployment d-2 no longer holds: v1 ConfigMap shop/extra"
        );
        let err = anyhow::anyhow!("bundle web: applying v1 ConfigMap shop/c: conflict");
        let failed = BundleEvent::apply_failed("web", "d-3", &err);
        assert_eq!(failed.reason, Reason::ApplyFailed);
        assert_eq!(
            failed.note,
            "Applying deployment d-3 failed: bundle web: applying v1 ConfigMap shop/c: conflict"
        );
    }

    #[test]
    fn failures_and_drift_are_warnings_and_the_rest_is_normal() {
        assert_eq!(Reason::Applied.event_type(), EventType::Normal);
        assert_eq!(Reason::Pruned.event_type(), EventType::Normal);
        for r in [
            Reason::ApplyFailed,
            Reason::PolicyRefused,
            Reason::DriftCorrected,
        ] {
            assert_eq!(r.event_type(), EventType::Warning, "{r}");
        }
    }

    #[test]
    fn the_reporting_instance_starts_with_the_cluster_and_fits_the_api_limit() {
        let r = reporter("edge-1");
        assert_eq!(r.controller, "flotilla.dev/spoke");
        let instance = r.instance.unwrap_or_default();
        assert!(instance.starts_with("edge-1"), "{instance}");
        assert!(instance.len() <= INSTANCE_LIMIT);
    }
}
