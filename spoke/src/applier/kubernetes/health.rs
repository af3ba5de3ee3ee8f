//! Health of a live object, read from its `status` the way `kubectl rollout status` does.
//! Pure: it looks at one JSON object and says Ready or why not. fleet.yaml's
//! `ignore.conditions` take matching status conditions out before it looks.

use std::borrow::Cow;

use flotilla_model::IgnoreCondition;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    NotReady(String),
}

fn int(v: &Value, path: &str) -> Option<i64> {
    v.pointer(path).and_then(Value::as_i64)
}

fn condition<'a>(v: &'a Value, kind: &str) -> Option<&'a Value> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn is_true(c: Option<&Value>) -> Option<bool> {
    c.and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        .map(|s| s == "True")
}

fn reason_of(c: &Value) -> String {
    let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    match (text("reason"), text("message")) {
        (r, m) if r.is_empty() && m.is_empty() => String::new(),
        (r, m) if m.is_empty() => r,
        (r, m) if r.is_empty() => m,
        (r, m) => format!("{r}: {m}"),
    }
}

/// `observedGeneration` has caught up with `generation`: the controller has seen the
/// latest spec.
fn observed(v: &Value) -> Option<Health> {
    let generation = int(v, "/metadata/generation")?;
    match int(v, "/status/observedGeneration") {
        Some(o) if o >= generation => None,
        _ => Some(Health::NotReady(format!(
            "waiting for the controller to observe generation {generation}"
        ))),
    }
}

/// `v` without the status conditions that `ignore` matches: a condition is dropped when
/// it has every key of one entry with that entry's (string) value, as in Fleet.
pub fn without_ignored_conditions<'a>(v: &'a Value, ignore: &[IgnoreCondition]) -> Cow<'a, Value> {
    let matches = |c: &Value| {
        ignore
            .iter()
            .any(|want| want.matches(|k| c.get(k).and_then(Value::as_str)))
    };
    let has_ignored = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(matches));
    if !has_ignored {
        return Cow::Borrowed(v);
    }
    let mut out = v.clone();
    if let Some(cs) = out
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        cs.retain(|c| !matches(c));
    }
    Cow::Owned(out)
}

pub fn health(group: &str, kind: &str, v: &Value) -> Health {
    match (group, kind) {
        ("apps", "Deployment") => deployment(v),
        ("apps", "StatefulSet") => statefulset(v),
        ("apps", "DaemonSet") => daemonset(v),
        ("batch", "Job") => job(v),
        ("", "PersistentVolumeClaim") => match v.pointer("/status/phase").and_then(Value::as_str) {
            Some("Bound") => Health::Ready,
            phase => Health::NotReady(format!("PVC is {}, not Bound", phase.unwrap_or("Pending"))),
        },
        ("", "Service")
            if v.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer") =>
        {
            match v
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
            {
                Some(i) if !i.is_empty() => Health::Ready,
                _ => Health::NotReady("waiting for a load balancer ingress".into()),
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            match is_true(condition(v, "Established")) {
                Some(true) => Health::Ready,
                _ => Health::NotReady("CRD is not Established".into()),
            }
        }
        _ => generic(v),
    }
}

/// Why an object that runs to an end (a Job, a Pod) failed, if it did; None for
/// anything still running, succeeded, or of another kind.
pub fn failed(group: &str, kind: &str, v: &Value) -> Option<String> {
    match (group, kind) {
        ("batch", "Job") => condition(v, "Failed")
            .filter(|c| is_true(Some(c)) == Some(true))
            .map(|c| format!("job failed: {}", reason_of(c))),
        ("", "Pod") if v.pointer("/status/phase").and_then(Value::as_str) == Some("Failed") => {
            Some(format!(
                "pod failed: {}",
                v.pointer("/status/message")
                    .or_else(|| v.pointer("/status/reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ))
        }
        _ => None,
    }
}

/// Any kind with `status.conditions`: a `Ready` (or else `Available`) condition that is
/// not True makes it NotReady.
fn generic(v: &Value) -> Health {
    for kind in ["Ready", "Available"] {
        if let Some(c) = condition(v, kind) {
            return match is_true(Some(c)) {
                Some(true) => Health::Ready,
                _ => Health::NotReady(format!("{kind} is not True: {}", reason_of(c))),
            };
        }
    }
    Health::Ready
}

fn deployment(v: &Value) -> Health {
    if let Some(h) = observed(v) {
        return h;
    }
    if let Some(c) = condition(v, "Progressing")
        && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
    {
        return Health::NotReady(format!("rollout failed: {}", reason_of(c)));
    }
    let want = int(v, "/spec/replicas").unwrap_or(1);
    let updated = int(v, "/status/updatedReplicas").unwrap_or(0);
    let total = int(v, "/status/replicas").unwrap_or(0);
    let available = int(v, "/status/availableReplicas").unwrap_or(0);
    if updated < want {
        Health::NotReady(format!("{updated} of {want} replicas updated"))
    } else if total > updated {
        Health::NotReady(format!(
            "{} old replicas pending termination",
            total - updated
        ))
    } else if available < updated {
        Health::NotReady(format!(
            "{available} of {updated} updated replicas available"
        ))
    } else {
        Health::Ready
    }
}

fn statefulset(v: &Value) -> Health {
    if let Some(h) = observed(v) {
        return h;
    }
    let want = int(v, "/spec/replicas").unwrap_or(1);
    let ready = int(v, "/status/readyReplicas").unwrap_or(0);
    let updated = int(v, "/status/updatedReplicas").unwrap_or(0);
    let partition = int(v, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
    let rev = |k: &str| v.pointer(&format!("/status/{k}")).and_then(Value::as_str);
    if ready < want {
        Health::NotReady(format!("{ready} of {want} replicas ready"))
    } else if updated < want - partition {
        Health::NotReady(format!(
            "{updated} of {} replicas updated",
            want - partition
        ))
    } else if partition == 0
        && rev("updateRevision").is_some()
        && rev("currentRevision") != rev("updateRevision")
    {
        Health::NotReady("rolling update in progress".into())
    } else {
        Health::Ready
    }
}

fn daemonset(v: &Value) -> Health {
    if let Some(h) = observed(v) {
        return h;
    }
    let want = int(v, "/status/desiredNumberScheduled").unwrap_or(0);
    let updated = int(v, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = int(v, "/status/numberAvailable").unwrap_or(0);
    if updated < want {
        Health::NotReady(format!("{updated} of {want} pods updated"))
    } else if available < want {
        Health::NotReady(format!("{available} of {want} pods available"))
    } else {
        Health::Ready
    }
}

fn job(v: &Value) -> Health {
    if let Some(why) = failed("batch", "Job", v) {
        return Health::NotReady(why);
    }
    match is_true(condition(v, "Complete")) {
        Some(true) => Health::Ready,
        _ => Health::NotReady("job has not completed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_conditions_do_not_count_against_readiness() {
        let v = serde_json::json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "Flaky"},
            {"type": "Synced", "status": "True"}]}});
        assert!(matches!(health("x.io", "Thing", &v), Health::NotReady(_)));
        let ignore = vec![IgnoreCondition(
            [
                ("type".into(), "Ready".into()),
                ("status".into(), "False".into()),
            ]
            .into(),
        )];
        let kept = without_ignored_conditions(&v, &ignore);
        assert_eq!(health("x.io", "Thing", &kept), Health::Ready);
        // Every key must match: a True Ready is not the ignored one.
        let other = vec![IgnoreCondition(
            [
                ("type".into(), "Ready".into()),
                ("status".into(), "Unknown".into()),
            ]
            .into(),
        )];
        assert!(matches!(
            without_ignored_conditions(&v, &other),
            Cow::Borrowed(_)
        ));
    }
    use serde_json::json;

    fn not_ready(h: Health) -> String {
        match h {
            Health::NotReady(r) => r,
            Health::Ready => panic!("expected NotReady"),
        }
    }

    #[test]
    fn a_deployment_is_ready_once_its_rollout_completes() {
        let mut d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2}});
        assert!(not_ready(health("apps", "Deployment", &d)).contains("generation 2"));
        d["status"] = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1});
        assert_eq!(
            not_ready(health("apps", "Deployment", &d)),
            "1 of 2 replicas updated"
        );
        d["status"] = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1});
        assert_eq!(
            not_ready(health("apps", "Deployment", &d)),
            "1 of 2 updated replicas available"
        );
        d["status"]["availableReplicas"] = json!(2);
        assert_eq!(health("apps", "Deployment", &d), Health::Ready);
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        assert!(not_ready(health("apps", "Deployment", &d)).contains("ProgressDeadlineExceeded"));
    }

    #[test]
    fn statefulsets_and_daemonsets_wait_for_their_pods() {
        let s = json!({"metadata": {"generation": 1}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 3}});
        assert_eq!(
            not_ready(health("apps", "StatefulSet", &s)),
            "2 of 3 replicas ready"
        );
        let s = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "a"}});
        assert_eq!(health("apps", "StatefulSet", &s), Health::Ready);
        let d = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1,
            "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 1}});
        assert_eq!(
            not_ready(health("apps", "DaemonSet", &d)),
            "1 of 3 pods available"
        );
    }

    #[test]
    fn jobs_pvcs_load_balancers_and_conditions() {
        assert!(not_ready(health("batch", "Job", &json!({}))).contains("not completed"));
        let done = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(health("batch", "Job", &done), Health::Ready);
        let failed = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert!(not_ready(health("batch", "Job", &failed)).contains("BackoffLimitExceeded"));
        assert!(
            not_ready(health(
                "",
                "PersistentVolumeClaim",
                &json!({"status": {"phase": "Pending"}})
            ))
            .contains("Pending")
        );
        assert_eq!(
            health(
                "",
                "PersistentVolumeClaim",
                &json!({"status": {"phase": "Bound"}})
            ),
            Health::Ready
        );
        let lb = json!({"spec": {"type": "LoadBalancer"}});
        assert!(not_ready(health("", "Service", &lb)).contains("load balancer"));
        assert_eq!(
            health("", "Service", &json!({"spec": {"type": "ClusterIP"}})),
            Health::Ready
        );
        let cr = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Waiting", "message": "db down"}]}});
        assert_eq!(
            not_ready(health("example.com", "Gadget", &cr)),
            "Ready is not True: Waiting: db down"
        );
        assert_eq!(health("", "ConfigMap", &json!({"data": {}})), Health::Ready);
    }
}
