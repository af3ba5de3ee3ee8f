//! Differential tests against the real kustomize: for every `tests/fixtures/kustomize-*`
//! fixture, our render of `repo/` and `kustomize build repo/` must be the same set of
//! objects. The oracle is the pinned `kustomize` that `tests/k8s/tools/build` makes from
//! its Go module (`$KUSTOMIZE` names another).

use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla_render::{ClusterInfo, Limits, load_bundle_dir};
use serde_json::Value;

/// `$KUSTOMIZE`, else the pinned build from `tests/k8s/tools/build` (built on first use).
fn kustomize() -> PathBuf {
    if let Some(bin) = std::env::var_os("KUSTOMIZE") {
        return PathBuf::from(bin);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/k8s/tools/build");
    let out = Command::new(&script)
        .arg("kustomize")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("tests/k8s/tools/build runs (it needs Go to build kustomize once)");
    assert!(
        out.status.success(),
        "tests/k8s/tools/build kustomize failed; see its output above"
    );
    let dir = String::from_utf8(out.stdout).expect("a path");
    Path::new(dir.trim()).join("kustomize")
}

/// Canonical JSON of each object (sorted keys), sorted: a set to compare.
fn canonical_set(values: impl IntoIterator<Item = Value>) -> Vec<String> {
    fn sort(v: Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: std::collections::BTreeMap<String, Value> =
                    m.into_iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().collect())
            }
            Value::Array(a) => Value::Array(a.into_iter().map(sort).collect()),
            other => other,
        }
    }
    let mut out: Vec<String> = values
        .into_iter()
        .map(|v| serde_json::to_string_pretty(&sort(v)).unwrap_or_default())
        .collect();
    out.sort();
    out
}

fn ours(repo: &Path) -> Vec<String> {
    let bundle = load_bundle_dir(repo, "diff", &Limits::default())
        .unwrap_or_else(|e| panic!("{}: {e:?}", repo.display()));
    let rendered = bundle
        .render(&ClusterInfo::default())
        .unwrap_or_else(|e| panic!("{}: {e:?}", repo.display()));
    canonical_set(rendered.objects.iter().map(|o| o.value.clone()))
}

fn theirs(kustomize: &Path, repo: &Path) -> Vec<String> {
    let out = Command::new(kustomize)
        .arg("build")
        .arg(repo)
        .output()
        .expect("kustomize runs");
    assert!(
        out.status.success(),
        "kustomize build {} failed: {}",
        repo.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut opts = serde_saphyr::Options::default();
    opts.legacy_octal_numbers = true;
    opts.strict_booleans = true;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(&text, opts).expect("kustomize output parses");
    canonical_set(docs.into_iter().filter(|d| !d.is_null()))
}

#[test]
fn our_kustomize_subset_matches_kustomize_build_on_every_fixture() {
    let kustomize = kustomize();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut repos: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kustomize-"))
        })
        .map(|p| p.join("repo"))
        .collect();
    repos.sort();
    assert!(!repos.is_empty(), "no kustomize fixtures");
    let mut failures = Vec::new();
    for repo in &repos {
        let (a, b) = (ours(repo), theirs(&kustomize, repo));
        assert!(
            !b.is_empty(),
            "{}: kustomize rendered nothing",
            repo.display()
        );
        if a != b {
            let only_ours: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
            let only_theirs: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
            failures.push(format!(
                "{}:\n--- only in flotilla ---\n{}\n--- only in kustomize ---\n{}",
                repo.display(),
                only_ours
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                only_theirs
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("{} kustomize fixtures match kustomize build", repos.len());
}
