//! `dependsOn` on one cluster: a bundle waits until every bundle it depends on (by name,
//! or by a selector over bundle labels) is in one of the entry's `acceptedStates` there
//! (Ready by default). A cycle is an error for every bundle on it; a name no bundle of the
//! fleet has is said to be missing, not waited for in silence. Pure logic: the caller
//! says each bundle's state and which names exist.

use std::collections::BTreeMap;

use flotilla_model::{Labels, State};
use flotilla_render::DependsOn;

/// What dependsOn says about one bundle on one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Do not roll forward yet; the message says what it waits for.
    Waiting(String),
    /// The bundle is on a dependency cycle.
    Cycle(String),
}

/// One bundle assigned to the cluster.
pub struct Node<'a> {
    pub name: &'a str,
    pub labels: &'a Labels,
    pub depends_on: &'a [DependsOn],
}

/// A dependency of one bundle: the bundle it names, and the entry that named it.
type Edge<'a> = (&'a str, &'a DependsOn);

/// A dependency not among the cluster's bundles.
enum Missing<'a> {
    Name(&'a str),
    /// A selector that matches none of them.
    Selector(String),
}

fn edges<'a>(node: &Node<'a>, all: &[Node<'a>]) -> (Vec<Edge<'a>>, Vec<Missing<'a>>) {
    let mut deps: BTreeMap<&'a str, &'a DependsOn> = BTreeMap::new();
    let mut missing = Vec::new();
    for d in node.depends_on {
        if let Some(name) = &d.name {
            match all.iter().find(|n| n.name == name) {
                Some(n) => {
                    deps.entry(n.name).or_insert(d);
                }
                None => missing.push(Missing::Name(name)),
            }
        }
        if let Some(sel) = &d.selector {
            let before = deps.len();
            for n in all
                .iter()
                .filter(|n| n.name != node.name && sel.matches(n.labels))
            {
                deps.entry(n.name).or_insert(d);
            }
            if deps.len() == before {
                missing.push(Missing::Selector(format!("bundles matching {sel}")));
            }
        }
    }
    (deps.into_iter().collect(), missing)
}

/// Decides, for every bundle with dependencies, whether it must wait. `state` is a
/// bundle's state on this cluster for its current deployment (None: not reported yet);
/// `exists` says whether some source of the fleet has a bundle of that name.
pub fn holds(
    nodes: &[Node<'_>],
    state: impl Fn(&str) -> Option<State>,
    exists: impl Fn(&str) -> bool,
) -> BTreeMap<String, Hold> {
    let graph: BTreeMap<&str, (Vec<Edge<'_>>, Vec<Missing<'_>>)> =
        nodes.iter().map(|n| (n.name, edges(n, nodes))).collect();
    let mut out = BTreeMap::new();
    let names: BTreeMap<&str, Vec<&str>> = graph
        .iter()
        .map(|(n, (deps, _))| (*n, deps.iter().map(|(d, _)| *d).collect()))
        .collect();
    for cycle in cycles(&names) {
        let text = format!("dependsOn cycle: {}", cycle.join(" -> "));
        for name in &cycle {
            out.insert(name.to_string(), Hold::Cycle(text.clone()));
        }
    }
    for (name, (deps, missing)) in &graph {
        if out.contains_key(*name) {
            continue;
        }
        let mut waiting: Vec<String> = missing
            .iter()
            .map(|m| match m {
                Missing::Name(m) if exists(m) => format!("{m} (not deployed to this cluster)"),
                Missing::Name(m) => format!("{m} (no bundle named {m} exists)"),
                Missing::Selector(s) => format!("{s} (not deployed to this cluster)"),
            })
            .collect();
        for (dep, entry) in deps {
            match state(dep) {
                Some(s) if entry.accepts(s) => {}
                Some(s) if !entry.accepted_states.is_empty() => {
                    waiting.push(format!("{dep} (is {s}; accepted: {})", states_text(entry)))
                }
                _ => waiting.push(dep.to_string()),
            }
        }
        if !waiting.is_empty() {
            out.insert(
                name.to_string(),
                Hold::Waiting(format!("waiting for dependencies: {}", waiting.join(", "))),
            );
        }
    }
    out
}

fn states_text(d: &DependsOn) -> String {
    d.accepted_states
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every elementary cycle found by depth-first search, each as a closed path.
fn cycles(graph: &BTreeMap<&str, Vec<&str>>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        found: &mut Vec<Vec<String>>,
    ) {
        marks.insert(n, Mark::Active);
        stack.push(n);
        for &d in graph.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            match marks.get(d).copied().unwrap_or(Mark::New) {
                Mark::New => visit(d, graph, marks, stack, found),
                Mark::Active => {
                    let start = stack.iter().position(|s| *s == d).unwrap_or(0);
                    let mut path: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    path.push(d.to_string());
                    found.push(path);
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(n, Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut found = Vec::new();
    for &n in graph.keys() {
        if marks.get(n).copied().unwrap_or(Mark::New) == Mark::New {
            visit(n, graph, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_name(n: &str) -> DependsOn {
        DependsOn {
            name: Some(n.into()),
            ..Default::default()
        }
    }

    fn ready_if(pred: impl Fn(&str) -> bool) -> impl Fn(&str) -> Option<State> {
        move |n| {
            Some(if pred(n) {
                State::Ready
            } else {
                State::NotReady
            })
        }
    }

    #[test]
    fn a_bundle_waits_until_its_dependencies_are_ready() {
        let none = Labels::new();
        let db_labels: Labels = [("role".to_string(), "db".to_string())].into();
        let app_deps = [
            by_name("config"),
            DependsOn {
                selector: Some("role=db".parse().expect("selector")),
                ..Default::default()
            },
        ];
        let nodes = [
            Node {
                name: "app",
                labels: &none,
                depends_on: &app_deps,
            },
            Node {
                name: "config",
                labels: &none,
                depends_on: &[],
            },
            Node {
                name: "db",
                labels: &db_labels,
                depends_on: &[],
            },
        ];
        let h = holds(&nodes, ready_if(|n| n == "config"), |_| true);
        assert_eq!(
            h.get("app"),
            Some(&Hold::Waiting("waiting for dependencies: db".into()))
        );
        assert!(holds(&nodes, ready_if(|_| true), |_| true).is_empty());
    }

    #[test]
    fn a_missing_dependency_says_whether_it_exists_elsewhere_or_nowhere() {
        let none = Labels::new();
        let deps = [by_name("ghost"), by_name("elsewhere")];
        let nodes = [Node {
            name: "app",
            labels: &none,
            depends_on: &deps,
        }];
        let h = holds(&nodes, ready_if(|_| true), |n| n == "elsewhere");
        assert_eq!(
            h.get("app"),
            Some(&Hold::Waiting(
                "waiting for dependencies: ghost (no bundle named ghost exists), \
                 elsewhere (not deployed to this cluster)"
                    .into()
            ))
        );
    }

    #[test]
    fn accepted_states_let_a_dependent_go_ahead_on_other_states_than_ready() {
        let none = Labels::new();
        let deps = [DependsOn {
            name: Some("db".into()),
            accepted_states: vec![State::Ready, State::Modified],
            ..Default::default()
        }];
        let nodes = [
            Node {
                name: "app",
                labels: &none,
                depends_on: &deps,
            },
            Node {
                name: "db",
                labels: &none,
                depends_on: &[],
            },
        ];
        let is = |s: State| move |_: &str| Some(s);
        assert!(holds(&nodes, is(State::Modified), |_| true).is_empty());
        assert_eq!(
            holds(&nodes, is(State::NotReady), |_| true).get("app"),
            Some(&Hold::Waiting(
                "waiting for dependencies: db (is NotReady; accepted: Ready, Modified)".into()
            ))
        );
        // Not reported yet: waits, whatever it accepts.
        assert!(holds(&nodes, |_| None, |_| true).contains_key("app"));
    }

    #[test]
    fn a_cycle_is_reported_on_every_bundle_in_it() {
        let none = Labels::new();
        let (a, b) = ([by_name("b")], [by_name("a")]);
        let nodes = [
            Node {
                name: "a",
                labels: &none,
                depends_on: &a,
            },
            Node {
                name: "b",
                labels: &none,
                depends_on: &b,
            },
            Node {
                name: "c",
                labels: &none,
                depends_on: &[],
            },
        ];
        let h = holds(&nodes, ready_if(|_| true), |_| true);
        assert_eq!(
            h.get("a"),
            Some(&Hold::Cycle("dependsOn cycle: a -> b -> a".into()))
        );
        assert_eq!(h.get("b"), h.get("a"));
        assert_eq!(h.get("c"), None);
    }
}
