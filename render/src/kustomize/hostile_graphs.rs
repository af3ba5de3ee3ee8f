//! Tests of the render budget against hostile kustomize graphs: the diamond that grows
//! exponentially, chains deeper than the limit, generators that repeat a big file,
//! ReDoS patterns in patch targets, and a proptest over random graphs (DAGs of
//! kustomization folders with resources, bases, prefixes, patches and generators) that
//! checks a render never panics, never spends past its budget, and either succeeds within
//! it or fails with a diagnostic.

use std::path::Path;

use proptest::prelude::*;

use super::build;
use crate::Limits;
use crate::budget::{Budget, Spent};
use crate::diagnostic::Diagnostic;
use crate::output::Object;
use crate::repo_fs::{DiskFs, Recorder};
use crate::sources::Sources;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// The diamond: each level lists `resources: [x, y]`, and `x` and `y` each add a
/// name prefix over the level below, so level `depth` is built `2^depth` times. The
/// bottom level holds `leaf` (a resource file's text) when given, else nothing.
fn diamond(root: &Path, depth: usize, leaf: Option<&str>) {
    let level = |k: usize| {
        if k == 0 {
            String::new()
        } else {
            format!("l{k}/")
        }
    };
    for k in 0..depth {
        write(
            root,
            &format!("{}kustomization.yaml", level(k)),
            "resources:\n  - x\n  - y\n",
        );
        for side in ["x", "y"] {
            let below = if k == 0 { "../" } else { "../../" };
            write(
                root,
                &format!("{}{side}/kustomization.yaml", level(k)),
                &format!("namePrefix: {side}-\nresources:\n  - {below}l{}\n", k + 1),
            );
        }
    }
    let bottom = level(depth);
    match leaf {
        Some(text) => {
            write(root, &format!("{bottom}cm.yaml"), text);
            write(
                root,
                &format!("{bottom}kustomization.yaml"),
                "resources:\n  - cm.yaml\n",
            );
        }
        None => write(root, &format!("{bottom}kustomization.yaml"), "{}\n"),
    }
}

const CONFIG_MAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leaf\ndata:\n  k: v\n";

/// Builds the kustomization at the root of `root` under `limits`: the result and what
/// the render spent.
fn build_root(root: &Path, limits: &Limits) -> (Result<Vec<Object>, Vec<Diagnostic>>, Spent) {
    let fs = Recorder::new(DiskFs::new(root), limits);
    let budget = Budget::new(limits);
    let sources = Sources::new(&fs, None, &budget);
    let result = build(&sources, "");
    (result, budget.spent())
}

fn only_error(result: Result<Vec<Object>, Vec<Diagnostic>>) -> Diagnostic {
    let errors = result.expect_err("the render fails");
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.into_iter().next().expect("one error")
}

#[test]
fn a_depth_20_diamond_fails_on_its_budget_having_built_no_more_than_the_object_limit() {
    let repo = tempfile::tempdir().expect("tmp");
    diamond(repo.path(), 20, Some(CONFIG_MAP));
    let limits = Limits::default();
    let (result, spent) = build_root(repo.path(), &limits);
    let e = only_error(result);
    assert!(e.message.contains("render budget exceeded"), "{e}");
    assert!(e.file.ends_with("kustomization.yaml"), "{e}");
    assert!(e.line.is_some(), "{e}");
    assert!(spent.objects <= limits.max_objects as u64, "{spent:?}");
    assert!(spent.work <= limits.max_render_work, "{spent:?}");
}

#[test]
fn a_diamond_within_the_depth_limit_stops_at_the_object_limit() {
    let repo = tempfile::tempdir().expect("tmp");
    diamond(repo.path(), 20, Some(CONFIG_MAP));
    let limits = Limits {
        max_kustomize_depth: 64,
        ..Limits::default()
    };
    let (result, spent) = build_root(repo.path(), &limits);
    let e = only_error(result);
    assert!(e.message.contains("Limits::max_objects"), "{e}");
    // Named at the entry of the bottom kustomization that read one object too many.
    assert_eq!(e.file, "l20/kustomization.yaml");
    assert_eq!(e.line, Some(2));
    assert_eq!(spent.objects, limits.max_objects as u64);
}

#[test]
fn a_diamond_of_empty_levels_stops_at_the_work_limit() {
    let repo = tempfile::tempdir().expect("tmp");
    diamond(repo.path(), 24, None);
    let limits = Limits {
        max_kustomize_depth: 64,
        ..Limits::default()
    };
    let (result, spent) = build_root(repo.path(), &limits);
    let e = only_error(result);
    assert!(e.message.contains("Limits::max_render_work"), "{e}");
    assert_eq!(spent.objects, 0);
    assert!(spent.work <= limits.max_render_work, "{spent:?}");
}

#[test]
fn a_chain_of_bases_deeper_than_the_limit_fails_at_the_kustomization_that_goes_too_deep() {
    let repo = tempfile::tempdir().expect("tmp");
    let limits = Limits::default();
    let depth = limits.max_kustomize_depth + 5;
    let mut dir = String::new();
    for _ in 0..depth {
        write(
            repo.path(),
            &format!("{dir}kustomization.yaml"),
            "# a base\nresources:\n  - d\n",
        );
        dir.push_str("d/");
    }
    write(repo.path(), &format!("{dir}kustomization.yaml"), "{}\n");
    let (result, _) = build_root(repo.path(), &limits);
    let e = only_error(result);
    assert!(e.message.contains("Limits::max_kustomize_depth"), "{e}");
    assert_eq!(
        e.file,
        format!(
            "{}kustomization.yaml",
            "d/".repeat(limits.max_kustomize_depth)
        )
    );
    assert_eq!(e.line, Some(3));
}

#[test]
fn a_generator_that_repeats_a_big_file_stops_at_the_byte_limit() {
    let repo = tempfile::tempdir().expect("tmp");
    write(repo.path(), "big.txt", &"x".repeat(1 << 20));
    let files: String = (0..200)
        .map(|i| format!("      - k{i}=big.txt\n"))
        .collect();
    write(
        repo.path(),
        "kustomization.yaml",
        &format!("configMapGenerator:\n  - name: huge\n    files:\n{files}"),
    );
    let limits = Limits::default();
    let (result, spent) = build_root(repo.path(), &limits);
    let e = only_error(result);
    assert!(e.message.contains("Limits::max_render_bytes"), "{e}");
    assert_eq!((e.file.as_str(), e.line), ("kustomization.yaml", Some(2)));
    assert!(spent.bytes <= limits.max_render_bytes, "{spent:?}");
}

#[test]
fn a_patch_target_with_nested_quantifiers_matches_a_long_name_like_re2() {
    let long = "a".repeat(200);
    let patched = |name: &str| {
        let repo = tempfile::tempdir().expect("tmp");
        write(
            repo.path(),
            "cm.yaml",
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"),
        );
        write(
            repo.path(),
            "kustomization.yaml",
            "resources:\n  - cm.yaml\npatches:\n  - target:\n      name: \"(a+)+b\"\n    patch: |\n      - op: add\n        path: /data\n        value: {hit: \"yes\"}\n",
        );
        build_root(repo.path(), &Limits::default()).0
    };
    // A backtracking engine takes 2^200 steps to say no; RE2 says no at once.
    let e = only_error(patched(&long));
    assert!(e.message.contains("patch target does not exist"), "{e}");
    let objects = patched(&format!("{long}b")).expect("renders");
    assert_eq!(objects[0].value["data"]["hit"], "yes");
}

/// One folder of a random graph.
#[derive(Debug, Clone)]
struct Node {
    /// Later folders this one lists (a DAG: edges only go forward).
    children: Vec<usize>,
    prefix: bool,
    objects: usize,
    generator_keys: usize,
    patch: Option<Patch>,
    labels: bool,
    image: bool,
}

#[derive(Debug, Clone)]
enum Patch {
    /// A JSON patch that copies the whole object into itself, by a regex target.
    CopyAll,
    /// A strategic merge of a label onto every ConfigMap.
    Label,
    /// A strategic merge naming an object that may not exist.
    Named(usize),
}

fn node(n: usize, i: usize) -> impl Strategy<Value = Node> {
    let later = (i + 1)..n.max(i + 2);
    (
        prop::collection::vec(later, 0..4),
        any::<bool>(),
        0..4usize,
        0..3usize,
        prop::option::of(prop_oneof![
            Just(Patch::CopyAll),
            Just(Patch::Label),
            (0..4usize).prop_map(Patch::Named),
        ]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            move |(children, prefix, objects, generator_keys, patch, labels, image)| Node {
                children: children.into_iter().filter(|c| *c < n).collect(),
                prefix,
                objects,
                generator_keys,
                patch,
                labels,
                image,
            },
        )
}

fn graph() -> impl Strategy<Value = Vec<Node>> {
    (1..9usize).prop_flat_map(|n| (0..n).map(|i| node(n, i)).collect::<Vec<_>>())
}

fn limits() -> impl Strategy<Value = Limits> {
    (1..80usize, 1..20_000u64, 1..2_000u64, 0..6usize).prop_map(
        |(max_objects, max_render_bytes, max_render_work, max_kustomize_depth)| Limits {
            max_objects,
            max_render_bytes,
            max_render_work,
            max_kustomize_depth,
            ..Limits::default()
        },
    )
}

fn write_graph(root: &Path, nodes: &[Node]) {
    let dir = |i: usize| {
        if i == 0 {
            String::new()
        } else {
            format!("n{i}/")
        }
    };
    let up = |i: usize| if i == 0 { "" } else { "../" };
    for (i, n) in nodes.iter().enumerate() {
        let mut k = String::from("resources:\n");
        for c in &n.children {
            k.push_str(&format!("  - {}n{c}\n", up(i)));
        }
        if n.objects > 0 {
            let docs: Vec<String> = (0..n.objects)
                .map(|j| {
                    format!(
                        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d{i}-{j}\nspec:\n  template:\n    spec:\n      containers:\n        - name: c\n          image: nginx:1\n"
                    )
                })
                .collect();
            write(
                root,
                &format!("{}objects.yaml", dir(i)),
                &docs.join("---\n"),
            );
            k.push_str("  - objects.yaml\n");
        }
        if n.prefix {
            k.push_str(&format!("namePrefix: p{i}-\n"));
        }
        if n.labels {
            k.push_str(&format!("commonLabels:\n  level: \"{i}\"\n"));
        }
        if n.image {
            k.push_str("images:\n  - name: nginx\n    newTag: \"2\"\n");
        }
        if n.generator_keys > 0 {
            let literals: String = (0..n.generator_keys)
                .map(|j| format!("      - k{j}=v{j}\n"))
                .collect();
            k.push_str(&format!(
                "configMapGenerator:\n  - name: g{i}\n    literals:\n{literals}"
            ));
        }
        match &n.patch {
            Some(Patch::CopyAll) => k.push_str(
                "patches:\n  - target:\n      kind: \"Dep.*\"\n    patch: |\n      - op: copy\n        from: /spec\n        path: /spec2\n",
            ),
            Some(Patch::Label) => k.push_str(
                "patches:\n  - target:\n      kind: ConfigMap\n    patch: |\n      metadata:\n        labels:\n          patched: \"yes\"\n",
            ),
            Some(Patch::Named(j)) => k.push_str(&format!(
                "patchesStrategicMerge:\n  - |\n    apiVersion: apps/v1\n    kind: Deployment\n    metadata:\n      name: d{i}-{j}\n    spec:\n      replicas: 2\n"
            )),
            None => {}
        }
        write(root, &format!("{}kustomization.yaml", dir(i)), &k);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_render_within_their_budget_or_fail_with_a_diagnostic(
        nodes in graph(),
        limits in limits(),
    ) {
        let repo = tempfile::tempdir().expect("tmp");
        write_graph(repo.path(), &nodes);
        let (result, spent) = build_root(repo.path(), &limits);
        // A refused charge adds nothing: the counters never pass their limits.
        prop_assert!(spent.objects <= limits.max_objects as u64, "{:?}", spent);
        prop_assert!(spent.bytes <= limits.max_render_bytes, "{:?}", spent);
        prop_assert!(spent.work <= limits.max_render_work, "{:?}", spent);
        match &result {
            Ok(objects) => prop_assert!(objects.len() <= limits.max_objects),
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                prop_assert!(errors.iter().all(|e| !e.message.is_empty()));
            }
        }
        // Deterministic: the same graph and limits give the same outcome.
        let (again, spent_again) = build_root(repo.path(), &limits);
        prop_assert_eq!(spent, spent_again);
        prop_assert_eq!(
            result.map(|o| o.into_iter().map(|o| o.value).collect::<Vec<_>>()),
            again.map(|o| o.into_iter().map(|o| o.value).collect::<Vec<_>>())
        );
    }
}
