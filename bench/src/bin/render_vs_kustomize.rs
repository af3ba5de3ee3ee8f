//! Benchmark: flotilla's renderer against `kubectl kustomize` on the same folders.
//!
//! For each folder it times `load_bundle_dir` + `render` (what `flotilla render DIR` does,
//! in process) and `kubectl kustomize DIR` (a child process, as users run it), takes the
//! median of N runs each, and prints a Markdown table with the ratio. Folders: the
//! renderer's kustomize fixtures plus a generated large base/overlay tree.
//!
//! Run: `cargo run --release -p flotilla-bench --bin render_vs_kustomize [-- RUNS]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_bench::render_timing::time_render;
use flotilla_bench::stats::median;

/// Times `kubectl kustomize`; also returns how many objects it printed.
fn theirs(kubectl: &str, dir: &Path, runs: usize) -> Result<(Duration, usize), String> {
    let mut times = Vec::with_capacity(runs);
    let mut objects = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let out = Command::new(kubectl)
            .arg("kustomize")
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run {kubectl}: {e}"))?;
        times.push(start.elapsed());
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        objects = text.lines().filter(|l| *l == "---").count() + usize::from(!text.is_empty());
    }
    Ok((median(times).unwrap_or_default(), objects))
}

/// A base of `n` Deployments + Services + generated ConfigMaps and an overlay that
/// prefixes, labels, patches and retags all of them.
fn generate_large(root: &Path, n: usize) -> std::io::Result<PathBuf> {
    let base = root.join("base");
    std::fs::create_dir_all(&base)?;
    let mut resources = String::from("resources:\n");
    let mut generators = String::from("configMapGenerator:\n");
    for i in 0..n {
        let file = format!("app{i}.yaml");
        resources.push_str(&format!("- {file}\n"));
        generators.push_str(&format!(
            "- name: app{i}-config\n  literals: [INDEX={i}, MODE=fast]\n"
        ));
        std::fs::write(
            base.join(&file),
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app{i}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: app{i}}}\n  template:\n    metadata:\n      labels: {{app: app{i}}}\n    spec:\n      containers:\n      - name: app\n        image: registry.example.com/app:1.0\n        envFrom:\n        - configMapRef: {{name: app{i}-config}}\n        ports: [{{containerPort: 8080}}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: app{i}\nspec:\n  selector: {{app: app{i}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
            ),
        )?;
    }
    std::fs::write(
        base.join("kustomization.yaml"),
        format!("{resources}{generators}"),
    )?;
    std::fs::write(
        root.join("kustomization.yaml"),
        "resources: [base]\nnamespace: bench\nnamePrefix: prod-\ncommonLabels: {env: prod}\n\
         commonAnnotations: {owner: bench}\nimages:\n- name: registry.example.com/app\n  newTag: \"2.0\"\n\
         patches:\n- target: {kind: Deployment}\n  patch: |-\n    - op: replace\n      path: /spec/replicas\n      value: 3\n",
    )?;
    Ok(root.to_path_buf())
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(15)
        .max(1);
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../render/tests/fixtures");
    let mut dirs: Vec<(String, PathBuf)> = std::fs::read_dir(&fixtures)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("kustomize-"))
                })
                .map(|p| {
                    let name = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("")
                        .to_string();
                    (name, p.join("repo"))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    let large_root = std::env::temp_dir().join(format!("flotilla-bench-{}", std::process::id()));
    for n in [100, 500] {
        match generate_large(&large_root.join(format!("n{n}")), n) {
            Ok(p) => dirs.push((format!("generated, {n} apps"), p)),
            Err(e) => eprintln!("cannot generate the large tree: {e}"),
        }
    }

    println!(
        "| folder | objects | flotilla (median) | kubectl kustomize (median) | kustomize / flotilla |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut failed = false;
    for (name, dir) in &dirs {
        let result = time_render(dir, runs)
            .and_then(|(a, n)| theirs(&kubectl, dir, runs).map(|(b, m)| (a, b, n, m)));
        match result {
            Ok((_, _, n, m)) if n != m => {
                failed = true;
                eprintln!("{name}: flotilla rendered {n} objects, kustomize {m}");
            }
            Ok((a, b, n, _)) => println!(
                "| {name} | {n} | {:.2} ms | {:.2} ms | {:.1}x |",
                a.as_secs_f64() * 1e3,
                b.as_secs_f64() * 1e3,
                b.as_secs_f64() / a.as_secs_f64().max(1e-9)
            ),
            Err(e) => {
                failed = true;
                eprintln!("{name}: {e}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&large_root);
    println!(
        "\n{runs} runs each; flotilla in process, kubectl as a child process (includes its start-up)."
    );
    if failed {
        std::process::exit(1);
    }
}
