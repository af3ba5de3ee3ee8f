//! Which cluster labels the hub trusts, and how a spoke's claims about itself become
//! trusted. Targeting reads only `ClusterRecord::labels()`: hub labels, then the join
//! token's labels, then accepted spoke labels. What a spoke reports (at registration and
//! in every Hello) is stored as `reported_labels` and moves nothing until an admin
//! accepts it (`accept`), or its key is one the spoke may set itself (`report` with
//! `self_keys`: the hub's `--self-label-keys`, plus the token's `spoke_label_keys` at
//! registration). This is what stops a compromised spoke from relabelling itself into
//! another environment's bundles. An admin's `relabel` sets hub labels, and removes a key
//! wherever it came from with a hub-side tombstone (`removed_labels`).

use std::collections::BTreeSet;

use flotilla_model::{Labels, labels};

use crate::records::ClusterRecord;

/// Most labels a spoke may report; a real cluster has a handful. Bounds what one Hello
/// can make the hub store and persist.
pub const MAX_REPORTED_LABELS: usize = 64;

/// Checks a spoke's report before anything is stored: count, then every key and value.
pub fn validate_report(reported: &Labels) -> Result<(), String> {
    if reported.len() > MAX_REPORTED_LABELS {
        return Err(format!(
            "{} labels reported; at most {MAX_REPORTED_LABELS} are accepted",
            reported.len()
        ));
    }
    for (k, v) in reported {
        labels::validate_key(k)
            .and_then(|_| labels::validate_value(v))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcceptError {
    #[error(
        "label {key} of cluster {cluster} is fixed by its join token or set (or removed) \
         on the hub; change it with `flotilla cluster label {cluster} {key}=VALUE`"
    )]
    FixedByHub { cluster: String, key: String },
}

/// Records what a spoke says about itself. Keys in `self_keys` are trusted as reported
/// (set when present, removed when absent); the rest only update `reported_labels`.
/// Returns whether the effective labels changed.
pub fn report(rec: &mut ClusterRecord, reported: &Labels, self_keys: &BTreeSet<String>) -> bool {
    let before = rec.labels();
    rec.reported_labels = reported.clone();
    for key in self_keys {
        take_reported(rec, key);
    }
    rec.labels() != before
}

/// Reported labels that differ from the effective ones and that `accept` would apply:
/// keys fixed by the token or the hub are left out, since accepting cannot move them.
pub fn pending(rec: &ClusterRecord) -> Labels {
    let effective = rec.labels();
    rec.reported_labels
        .iter()
        .filter(|(k, v)| effective.get(*k) != Some(*v) && !fixed(rec, k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// An admin trusts the spoke's reported value of `keys` (every pending key when empty).
/// A named key the spoke no longer reports is removed from the accepted labels.
/// Returns the keys accepted.
pub fn accept(rec: &mut ClusterRecord, keys: &[String]) -> Result<Vec<String>, AcceptError> {
    let keys: Vec<String> = if keys.is_empty() {
        pending(rec).into_keys().collect()
    } else {
        keys.to_vec()
    };
    if let Some(key) = keys.iter().find(|k| fixed(rec, k)) {
        return Err(AcceptError::FixedByHub {
            cluster: rec.name.to_string(),
            key: key.clone(),
        });
    }
    for key in &keys {
        take_reported(rec, key);
    }
    Ok(keys)
}

/// An admin's `flotilla cluster label`: `set` become hub labels and lift any tombstone
/// on their keys; each key of `remove` loses its hub label and gets a tombstone, so it
/// leaves the effective labels whatever set it (the token, an accepted report, a
/// self-label key the spoke reports again) until an admin sets it. Returns whether the
/// effective labels changed.
pub fn relabel(rec: &mut ClusterRecord, set: &Labels, remove: &[String]) -> bool {
    let before = rec.labels();
    for (k, v) in set {
        rec.removed_labels.remove(k);
        rec.hub_labels.insert(k.clone(), v.clone());
    }
    for k in remove {
        rec.hub_labels.remove(k);
        rec.removed_labels.insert(k.clone());
    }
    rec.labels() != before
}

/// Keys only an admin's `relabel` moves: the token's, the hub's and the removed ones.
fn fixed(rec: &ClusterRecord, key: &str) -> bool {
    rec.token_labels.contains_key(key)
        || rec.hub_labels.contains_key(key)
        || rec.removed_labels.contains(key)
}

fn take_reported(rec: &mut ClusterRecord, key: &str) {
    match rec.reported_labels.get(key) {
        Some(v) => rec.accepted_labels.insert(key.to_string(), v.clone()),
        None => rec.accepted_labels.remove(key),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_model::ClusterName;

    fn labels(s: &str) -> Labels {
        s.split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn keys(s: &str) -> BTreeSet<String> {
        s.split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// A cluster as registration leaves it: `accepted`, `token` and `hub` labels.
    fn cluster(accepted: &str, token: &str, hub: &str) -> ClusterRecord {
        ClusterRecord {
            accepted_labels: labels(accepted),
            reported_labels: labels(accepted),
            token_labels: labels(token),
            hub_labels: labels(hub),
            ..ClusterRecord::new(ClusterName::new("c1").expect("valid name"), 0)
        }
    }

    #[test]
    fn a_report_moves_only_labels_the_hub_lets_the_spoke_set() {
        // (accepted, token, hub, self keys, reported, effective after, changed, pending)
        let cases = [
            // A spoke relabelling itself into prod moves nothing; the claim is pending.
            (
                "env=dev", "", "", "", "env=prod", "env=dev", false, "env=prod",
            ),
            // A new key is pending too.
            (
                "env=dev",
                "",
                "",
                "",
                "env=dev,tier=gold",
                "env=dev",
                false,
                "tier=gold",
            ),
            // The token's labels win whatever the spoke says, and are not pending.
            ("", "env=prod", "", "", "env=dev", "env=prod", false, ""),
            ("", "env=prod", "", "env", "env=dev", "env=prod", false, ""),
            // Hub labels win over everything.
            (
                "env=dev", "env=test", "env=prod", "env", "env=qa", "env=prod", false, "",
            ),
            // A self-label key follows the spoke; another key does not.
            (
                "env=dev",
                "",
                "",
                "region",
                "env=prod,region=eu",
                "env=dev,region=eu",
                true,
                "env=prod",
            ),
            // A self-label key the spoke stops reporting goes away.
            (
                "env=dev,region=eu",
                "",
                "",
                "region",
                "env=dev",
                "env=dev",
                true,
                "",
            ),
            // Dropping a key that is not self-labelled leaves it trusted.
            (
                "env=dev,region=eu",
                "",
                "",
                "",
                "env=dev",
                "env=dev,region=eu",
                false,
                "",
            ),
            // The same report again changes nothing.
            ("env=dev", "", "", "", "env=dev", "env=dev", false, ""),
        ];
        for (accepted, token, hub, self_keys, reported, after, changed, pend) in cases {
            let mut rec = cluster(accepted, token, hub);
            let got = report(&mut rec, &labels(reported), &keys(self_keys));
            let case = format!("{accepted}|{token}|{hub}|{self_keys} reports {reported}");
            assert_eq!(rec.labels(), labels(after), "{case}");
            assert_eq!(got, changed, "{case}");
            assert_eq!(pending(&rec), labels(pend), "{case}");
            assert_eq!(rec.reported_labels, labels(reported), "{case}");
        }
    }

    #[test]
    fn accepting_trusts_the_reported_values_of_the_named_or_pending_keys() {
        // (accepted, reported, keys to accept, effective after, still pending)
        let cases = [
            (
                "env=dev",
                "env=prod,tier=gold",
                "",
                "env=prod,tier=gold",
                "",
            ),
            (
                "env=dev",
                "env=prod,tier=gold",
                "tier",
                "env=dev,tier=gold",
                "env=prod",
            ),
            // A named key the spoke no longer reports is removed.
            ("env=dev,zone=a", "env=dev", "zone", "env=dev", ""),
            // Accepting everything does not remove keys on its own.
            ("env=dev,zone=a", "env=dev", "", "env=dev,zone=a", ""),
        ];
        for (accepted, reported, names, after, still) in cases {
            let mut rec = cluster(accepted, "", "");
            report(&mut rec, &labels(reported), &BTreeSet::new());
            let names: Vec<String> = keys(names).into_iter().collect();
            accept(&mut rec, &names).expect("accepted");
            let case = format!("{accepted} + {reported} / {names:?}");
            assert_eq!(rec.labels(), labels(after), "{case}");
            assert_eq!(pending(&rec), labels(still), "{case}");
        }
    }

    #[test]
    fn accepting_a_label_fixed_by_the_token_or_the_hub_is_refused() {
        for (token, hub) in [("env=dev", ""), ("", "env=dev")] {
            let mut rec = cluster("", token, hub);
            report(&mut rec, &labels("env=prod"), &BTreeSet::new());
            let err = accept(&mut rec, &["env".to_string()]).expect_err("refused");
            assert!(
                err.to_string().contains("flotilla cluster label c1"),
                "{err}"
            );
            assert_eq!(rec.labels(), labels("env=dev"));
            assert!(rec.accepted_labels.is_empty());
        }
    }

    #[test]
    fn removing_a_label_hides_it_whatever_its_origin_until_it_is_set_again() {
        // (accepted, token, hub, self keys, removed key, effective after removal)
        let cases = [
            ("tier=gold,env=dev", "", "", "", "tier", "env=dev"),
            ("env=dev", "tier=gold", "", "", "tier", "env=dev"),
            ("env=dev", "", "tier=gold", "", "tier", "env=dev"),
            ("env=dev", "tier=silver", "tier=gold", "", "tier", "env=dev"),
            // A self-label key the spoke keeps reporting stays removed.
            ("env=dev,tier=gold", "", "", "tier", "tier", "env=dev"),
            // Removing a key nobody set changes nothing but is remembered.
            ("env=dev", "", "", "", "tier", "env=dev"),
        ];
        for (accepted, token, hub, self_keys, key, after) in cases {
            let case = format!("{accepted}|{token}|{hub}|{self_keys} - {key}");
            let mut rec = cluster(accepted, token, hub);
            let before = rec.labels();
            let changed = relabel(&mut rec, &Labels::new(), &[key.to_string()]);
            assert_eq!(changed, before != labels(after), "{case}");
            assert_eq!(rec.labels(), labels(after), "{case}");
            // The spoke reporting it again moves nothing, and it is not pending.
            let mut reported = rec.reported_labels.clone();
            reported.insert(key.to_string(), "platinum".to_string());
            report(&mut rec, &reported, &keys(self_keys));
            assert_eq!(rec.labels(), labels(after), "{case}");
            assert!(!pending(&rec).contains_key(key), "{case}");
            assert!(accept(&mut rec, &[key.to_string()]).is_err(), "{case}");
            // Setting it again lifts the tombstone.
            relabel(&mut rec, &labels(&format!("{key}=bronze")), &[]);
            assert_eq!(
                rec.labels().get(key).map(String::as_str),
                Some("bronze"),
                "{case}"
            );
            assert!(rec.removed_labels.is_empty(), "{case}");
        }
    }

    #[test]
    fn a_report_with_too_many_or_malformed_labels_is_refused() {
        let many: Labels = (0..=MAX_REPORTED_LABELS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(validate_report(&many).is_err());
        assert!(validate_report(&labels("Bad Key=v")).is_err());
        assert!(validate_report(&labels("env=dev,region=eu")).is_ok());
    }

    #[test]
    fn a_cluster_stored_before_label_trust_keeps_its_spoke_labels_trusted() {
        let old = r#"{"name":"c1","spoke_labels":{"env":"dev"},"hub_labels":{"tier":"gold"},
                      "registered_at":1}"#;
        let rec: ClusterRecord = serde_json::from_str(old).expect("old record loads");
        assert_eq!(rec.labels(), labels("env=dev,tier=gold"));
        assert!(rec.reported_labels.is_empty() && rec.token_labels.is_empty());
    }
}
