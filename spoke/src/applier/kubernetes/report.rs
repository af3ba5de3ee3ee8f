//! Per-object verdicts folded into a bundle's [`Outcome`]: Modified beats NotReady beats
//! Ready; every object that is not Ready is listed with its reason. Pure.

use flotilla_model::State;

use super::drift::Change;
use super::manifest::ObjectRef;
use flotilla_model::ResourceStatus;

use crate::applier::Outcome;

/// The hub keeps 4096 characters of a message; leave room and say what was cut.
const MESSAGE_BUDGET: usize = 3000;

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ready,
    NotReady(String),
    Modified(Vec<Change>),
    Deleted,
}

pub fn summarize(verdicts: Vec<(ObjectRef, Verdict)>) -> Outcome {
    let mut modified = Vec::new();
    let mut not_ready = Vec::new();
    let mut resources = Vec::new();
    for (r, v) in verdicts {
        let (state, message) = match v {
            Verdict::Ready => continue,
            Verdict::NotReady(why) => (State::NotReady, why),
            Verdict::Modified(changes) => (
                State::Modified,
                changes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Verdict::Deleted => (State::Modified, "deleted".to_string()),
        };
        let line = format!("{r}: {message}");
        match state {
            State::Modified => modified.push(line),
            _ => not_ready.push(line),
        }
        resources.push(ResourceStatus {
            api_version: r.api_version,
            kind: r.kind,
            namespace: r.namespace,
            name: r.name,
            state,
            message,
        });
    }
    let state = if !modified.is_empty() {
        State::Modified
    } else if !not_ready.is_empty() {
        State::NotReady
    } else {
        State::Ready
    };
    let mut parts = Vec::new();
    if !modified.is_empty() {
        parts.push(format!("modified: {}", modified.join("; ")));
    }
    if !not_ready.is_empty() {
        parts.push(format!("not ready: {}", not_ready.join("; ")));
    }
    Outcome {
        state,
        message: clip(parts.join("; ")),
        resources,
    }
}

fn clip(s: String) -> String {
    if s.len() <= MESSAGE_BUDGET {
        return s;
    }
    let mut end = MESSAGE_BUDGET;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … (cut; every object is listed in resources)", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn modified_wins_and_every_object_that_is_not_ready_is_listed() {
        let out = summarize(vec![
            (r("a"), Verdict::Ready),
            (r("b"), Verdict::NotReady("1 of 2 replicas updated".into())),
            (
                r("c"),
                Verdict::Modified(vec![Change {
                    path: "/spec/replicas".into(),
                    old: json!(2),
                    new: json!(5),
                }]),
            ),
            (r("d"), Verdict::Deleted),
        ]);
        assert_eq!(out.state, State::Modified);
        assert_eq!(
            out.message,
            "modified: apps/v1 Deployment default/c: /spec/replicas: 2 -> 5; \
             apps/v1 Deployment default/d: deleted; \
             not ready: apps/v1 Deployment default/b: 1 of 2 replicas updated"
        );
        assert_eq!(out.resources.len(), 3);
        assert_eq!(out.resources[0].state, State::NotReady);
        assert_eq!(out.resources[0].name, "b");
    }

    #[test]
    fn all_ready_is_ready_with_no_message() {
        let out = summarize(vec![(r("a"), Verdict::Ready)]);
        assert_eq!(
            (out.state, out.message.as_str(), out.resources.len()),
            (State::Ready, "", 0)
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let many = (0..500)
            .map(|i| (r(&format!("é{i}")), Verdict::NotReady("waiting".into())))
            .collect();
        let out = summarize(many);
        assert!(out.message.len() < 3100 && out.message.ends_with("resources)"));
        assert_eq!(out.resources.len(), 500);
    }
}
