//! Golden tests: every folder under `tests/fixtures/` holds a `repo/`, a `test.yaml`
//! (source paths, limits, the clusters to render for) and `expected.txt`, the reviewed
//! output of discovering the repo and rendering every bundle for every cluster.
//! Run with `UPDATE_GOLDEN=1` to rewrite `expected.txt` after a deliberate change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use flotilla_render::{ClusterInfo, GroupInfo, Limits, Selection, discover};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn labels(v: Option<&Value>) -> flotilla_model::Labels {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn cluster(v: &Value) -> ClusterInfo {
    ClusterInfo {
        name: v["name"].as_str().unwrap_or_default().to_string(),
        labels: labels(v.get("labels")),
        groups: v
            .get("groups")
            .and_then(Value::as_array)
            .map(|gs| {
                gs.iter()
                    .map(|g| GroupInfo {
                        name: g["name"].as_str().unwrap_or_default().to_string(),
                        labels: labels(g.get("labels")),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        capabilities: None,
    }
}

/// The text the golden file holds for one fixture.
fn run_fixture(dir: &Path) -> String {
    let spec_text = std::fs::read_to_string(dir.join("test.yaml")).expect("test.yaml");
    let spec: Value = serde_saphyr::from_str(&spec_text).expect("test.yaml parses");
    let paths: Vec<String> = spec
        .get("paths")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut limits = Limits::default();
    if let Some(n) = spec.pointer("/limits/maxFileBytes").and_then(Value::as_u64) {
        limits.max_file_bytes = n;
    }
    if let Some(n) = spec.pointer("/limits/maxObjects").and_then(Value::as_u64) {
        limits.max_objects = n as usize;
    }
    let clusters: Vec<ClusterInfo> = spec
        .get("clusters")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(cluster).collect())
        .unwrap_or_else(|| vec![cluster(&serde_json::json!({"name": "local"}))]);

    let mut out = String::new();
    for b in discover(&dir.join("repo"), "fx", &paths, &limits) {
        let _ = writeln!(out, "# bundle {} (path {:?})", b.name, b.path);
        let bundle = match &b.result {
            Ok(bundle) => bundle,
            Err(errors) => {
                for e in errors {
                    let _ = writeln!(out, "error: {e}");
                }
                out.push('\n');
                continue;
            }
        };
        for w in bundle.warnings() {
            let _ = writeln!(out, "warning: {w}");
        }
        let _ = writeln!(out, "options: {}", bundle.options().canonical_json());
        for c in &clusters {
            let choice = match bundle.select(c) {
                Selection::DoNotDeploy => "doNotDeploy".to_string(),
                Selection::Deploy(k) => k.customization().unwrap_or("default").to_string(),
            };
            let _ = writeln!(out, "## cluster {} -> {choice}", c.name);
            match bundle.render(c) {
                Ok(r) => {
                    let _ = writeln!(out, "digest: {}", r.digest);
                    for o in &r.objects {
                        let _ = writeln!(out, "source: {} {}/{}", o.source, o.kind, o.name);
                    }
                    out.push_str(&r.manifest);
                }
                Err(errors) => {
                    for e in errors {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
        }
        out.push('\n');
    }
    out
}

#[test]
fn every_fixture_matches_its_golden_output() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("test.yaml").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixtures found");
    let mut failures = Vec::new();
    for dir in dirs {
        let actual = run_fixture(&dir);
        // Rendering twice gives the same bytes.
        assert_eq!(
            actual,
            run_fixture(&dir),
            "{} is not deterministic",
            dir.display()
        );
        let golden = dir.join("expected.txt");
        if update {
            std::fs::write(&golden, &actual).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}: output differs from expected.txt (rerun with UPDATE_GOLDEN=1 and review the diff)\n--- actual ---\n{actual}",
                dir.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
