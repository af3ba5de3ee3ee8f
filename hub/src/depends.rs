//! `dependsOn` on one cluster: a bundle waits until every bundle it depends on (by name,
//! or by a selector over bundle labels) is Ready there. A cycle is an error for every
//! bundle on it. Pure logic: the caller says which bundles are Ready.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_model::Labels;
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

fn edges<'a>(node: &Node<'a>, all: &[Node<'a>]) -> (Vec<&'a str>, Vec<String>) {
    let mut deps = BTreeSet::new();
    let mut missing = Vec::new();
    for d in node.depends_on {
        if let Some(name) = &d.name {
            match all.iter().find(|n| n.name == name) {
                Some(n) => {
                    deps.insert(n.name);
                }
                None => missing.push(name.clone()),
            }
        }
        if let Some(sel) = &d.selector {
            let matched: Vec<&str> = all
                .iter()
                .filter(|n| n.name != node.name && sel.matches(n.labels))
                .map(|n| n.name)
                .collect();
            if matched.is_empty() {
                missing.push(format!("bundles matching {sel}"));
            }
            deps.extend(matched);
        }
    }
    (deps.into_iter().collect(), missing)
}

/// Decides, for every bundle with dependencies, whether it must wait.
pub fn holds(nodes: &[Node<'_>], is_ready: impl Fn(&str) -> bool) -> BTreeMap<String, Hold> {
    let graph: BTreeMap<&str, (Vec<&str>, Vec<String>)> =
        nodes.iter().map(|n| (n.name, edges(n, nodes))).collect();
    let mut out = BTreeMap::new();
    for cycle in cycles(&graph) {
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
            .map(|m| format!("{m} (not deployed to this cluster)"))
            .collect();
        waiting.extend(deps.iter().filter(|d| !is_ready(d)).map(|d| d.to_string()));
        if !waiting.is_empty() {
            out.insert(
                name.to_string(),
                Hold::Waiting(format!("waiting for dependencies: {}", waiting.join(", "))),
            );
        }
    }
    out
}

/// Every elementary cycle found by depth-first search, each as a closed path.
fn cycles(graph: &BTreeMap<&str, (Vec<&str>, Vec<String>)>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, (Vec<&'a str>, Vec<String>)>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        found: &mut Vec<Vec<String>>,
    ) {
        marks.insert(n, Mark::Active);
        stack.push(n);
        for &d in graph.get(n).map(|(d, _)| d.as_slice()).unwrap_or(&[]) {
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
            selector: None,
        }
    }

    #[test]
    fn a_bundle_waits_until_its_dependencies_are_ready() {
        let none = Labels::new();
        let db_labels: Labels = [("role".to_string(), "db".to_string())].into();
        let app_deps = [
            by_name("config"),
            DependsOn {
                name: None,
                selector: Some("role=db".parse().expect("selector")),
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
        let h = holds(&nodes, |n| n == "config");
        assert_eq!(
            h.get("app"),
            Some(&Hold::Waiting("waiting for dependencies: db".into()))
        );
        assert!(holds(&nodes, |_| true).is_empty());
    }

    #[test]
    fn a_missing_dependency_waits_and_names_it() {
        let none = Labels::new();
        let deps = [by_name("ghost")];
        let nodes = [Node {
            name: "app",
            labels: &none,
            depends_on: &deps,
        }];
        let h = holds(&nodes, |_| true);
        assert!(
            matches!(h.get("app"), Some(Hold::Waiting(m)) if m.contains("ghost (not deployed"))
        );
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
        let h = holds(&nodes, |_| true);
        assert_eq!(
            h.get("a"),
            Some(&Hold::Cycle("dependsOn cycle: a -> b -> a".into()))
        );
        assert_eq!(h.get("b"), h.get("a"));
        assert_eq!(h.get("c"), None);
    }
}
