//! What a spoke's `Hello` changes: its reported labels, agent version, capabilities and
//! last contact. Nothing a spoke says here is trusted for targeting on its own
//! (`label_trust`), and what is malformed is ignored with a warning, keeping the last
//! good value: a spoke is not refused a stream for a bad report.

use flotilla_model::{ClusterName, Labels};

use super::CommandError;
use crate::fleet::{Fleet, Trigger};
use crate::label_trust;
use crate::records::{CapabilitiesRecord, now_unix};

/// A `Hello` as the server read it off the wire, not checked yet.
#[derive(Debug, Clone, Default)]
pub struct HelloReport {
    pub labels: Labels,
    pub agent_version: String,
    /// `None`: the spoke sent none (a directory target, or its API server did not answer).
    pub capabilities: Option<CapabilitiesRecord>,
}

impl Fleet {
    /// Records a connecting spoke's `Hello` and reconciles its cluster: labels and
    /// capabilities may have changed while it was away (an upgraded cluster re-renders
    /// the charts that read its version). Does not wait for the disk: the record is
    /// queued under its entry (`edit_cluster`), so no later write overtakes it.
    pub fn hello(&self, cluster: &ClusterName, hello: HelloReport) -> Result<(), CommandError> {
        let labels = match label_trust::validate_report(&hello.labels) {
            Ok(()) => Some(hello.labels),
            Err(e) => {
                tracing::warn!(cluster = %cluster, error = %e, "ignoring the labels in Hello");
                None
            }
        };
        // Without capabilities, the last ones stay, so a passing outage does not re-render.
        let capabilities = match hello.capabilities.map(CapabilitiesRecord::checked) {
            Some(Ok(caps)) => Some(caps),
            Some(Err(e)) => {
                tracing::warn!(cluster = %cluster, error = %e, "ignoring the capabilities in Hello; keeping the last ones");
                None
            }
            None => None,
        };
        // Not awaited: the write is queued already, and a connect need not wait for it.
        let _queued = self.edit_cluster(cluster, |rec| {
            if let Some(labels) = &labels {
                label_trust::report(rec, labels, &self.self_label_keys);
            }
            rec.agent_version = hello.agent_version.chars().take(64).collect();
            if capabilities.is_some() {
                rec.capabilities = capabilities;
            }
            rec.last_seen = now_unix();
            Ok(())
        })?;
        self.trigger(Trigger::Cluster(cluster.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::*;

    /// A chart that prints the Kubernetes version it renders for, published as the only
    /// bundle of source `caps`, and cluster `c1` registered with no capabilities.
    fn fleet_with_a_capabilities_chart(
        dir: &std::path::Path,
    ) -> (Arc<Fleet>, ClusterName, mpsc::UnboundedReceiver<Trigger>) {
        use flotilla_render as render;
        let bundle_dir = dir.join("bundle");
        let write = |rel: &str, text: &str| {
            let p = bundle_dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        write("fleet.yaml", "helm:\n  releaseName: caps\n");
        write("Chart.yaml", "apiVersion: v2\nname: caps\nversion: 0.1.0\n");
        write(
            "templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: caps\ndata:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n",
        );
        let bundle = render::load_bundle_dir(&bundle_dir, "caps", &render::Limits::default())
            .expect("the chart loads");
        let (fleet, triggers) = Fleet::for_tests(dir);
        fleet.groups.insert(
            "default".into(),
            crate::targeting::GroupSpec {
                name: "default".into(),
                selector: flotilla_model::LabelSelector::default(),
                labels: Default::default(),
            },
        );
        let source = fleet
            .insert_source(crate::records::SourceSpec {
                name: "caps".into(),
                repo: "file:///nowhere".into(),
                branch: "main".into(),
                paths: vec![".".into()],
                interval_secs: 60,
                targets: Vec::new(),
                revision: None,
                paused: false,
                verify_commits: false,
                username: None,
                helm_auth: None,
            })
            .expect("source");
        if let Ok(mut rt) = source.runtime.write() {
            rt.bundles = Some(vec![Arc::new(crate::reconcile::BundleEntry::new(
                "caps".into(),
                String::new(),
                Some(Arc::new(bundle)),
                Vec::new(),
                Vec::new(),
            ))]);
        }
        let c1 = ClusterName::new("c1").expect("name");
        fleet.clusters.insert(
            c1.clone(),
            crate::records::ClusterRecord::new(c1.clone(), 0),
        );
        (fleet, c1, triggers)
    }

    fn rendered_for(fleet: &Fleet, c: &ClusterName) -> String {
        fleet.reconcile(Some(vec![c.clone()]));
        let a = fleet.assignments_of(c);
        let d = a
            .get("caps")
            .and_then(|a| a.desired.clone())
            .unwrap_or_else(|| panic!("caps is deployed: {a:?}"));
        let bytes = fleet.contents.get(&d.digest).expect("content held").clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn a_hello_with_new_capabilities_rerenders_the_charts_that_read_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fleet, c1, mut triggers) = fleet_with_a_capabilities_chart(dir.path());
        let hello = |kube: &str| HelloReport {
            capabilities: Some(CapabilitiesRecord {
                kube_version: kube.into(),
                api_versions: vec!["v1".into(), "apps/v1".into()],
            }),
            ..Default::default()
        };

        fleet.hello(&c1, hello("v1.33.2")).expect("hello");
        let text = rendered_for(&fleet, &c1);
        assert!(text.contains("kube: v1.33.2"), "{text}");
        // The cluster was upgraded while its spoke was away: its Hello asks for a
        // reconcile of that cluster.
        while triggers.try_recv().is_ok() {}
        fleet.hello(&c1, hello("v1.34.1")).expect("hello");
        assert!(matches!(triggers.try_recv(), Ok(Trigger::Cluster(c)) if c == c1));
        assert!(rendered_for(&fleet, &c1).contains("kube: v1.34.1"));
        // A Hello without capabilities (the API server did not answer) keeps the last.
        fleet.hello(&c1, HelloReport::default()).expect("hello");
        assert!(rendered_for(&fleet, &c1).contains("kube: v1.34.1"));
        let stored = fleet.clusters.get(&c1).and_then(|c| c.capabilities.clone());
        assert_eq!(
            stored.map(|c| c.api_versions),
            Some(vec!["apps/v1".to_string(), "v1".to_string()])
        );
    }
}
