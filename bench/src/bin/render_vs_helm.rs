//! Benchmark: flotilla's native Helm rendering against `helm template` on the same charts.
//!
//! For each chart it times `load_bundle_dir` + `render` (what the hub does for a Helm
//! bundle, in process, with the hub's allocator: load, dependencies, values, templates,
//! ordering) and `helm template` (a child process, as Fleet-style tools run it, or as
//! users do), takes the median of N runs each, and prints a Markdown table with the ratio
//! and the total. Charts: the differential corpus (`tests/fixtures/helm/`), the example
//! chart, and a generated chart with many templates and a subchart.
//!
//! Run: `cargo run --release -p flotilla-bench --bin render_vs_helm [-- RUNS]` with `HELM`
//! naming the helm binary (default: `~/.cache/flotilla-tools/bin/helm`, else `helm`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_bench::render_timing::time_render;
use flotilla_bench::stats::median;

/// The hub's allocator (`hub/src/main.rs`): the hub is what renders Helm bundles, so its
/// rendering is timed with the allocator it runs on.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Times `helm template`; also returns how many documents it printed.
fn theirs(helm: &Path, dir: &Path, runs: usize) -> Result<(Duration, usize), String> {
    let mut times = Vec::with_capacity(runs);
    let mut objects = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let out = Command::new(helm)
            .args(["template", "bench"])
            .arg(dir)
            .args(["--include-crds", "--skip-tests"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", helm.display()))?;
        times.push(start.elapsed());
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        objects = text.lines().filter(|l| *l == "---").count();
    }
    Ok((median(times).unwrap_or_default(), objects))
}

/// A chart of `n` Deployment+Service+ConfigMap templates sharing helpers, with a subchart.
fn generate(root: &Path, n: usize) -> std::io::Result<PathBuf> {
    let dir = root.join(format!("generated-{n}"));
    let t = dir.join("templates");
    std::fs::create_dir_all(&t)?;
    std::fs::create_dir_all(dir.join("charts/sub/templates"))?;
    std::fs::write(
        dir.join("Chart.yaml"),
        "apiVersion: v2\nname: gen\nversion: 1.0.0\nappVersion: \"2.1\"\n",
    )?;
    let mut values = String::from("global:\n  env: bench\napps:\n");
    for i in 0..n {
        values.push_str(&format!(
            "  app{i}:\n    replicas: {}\n    port: {}\n",
            i % 5 + 1,
            8000 + i
        ));
    }
    std::fs::write(dir.join("values.yaml"), values)?;
    std::fs::write(
        t.join("_helpers.tpl"),
        "{{- define \"gen.labels\" -}}\napp.kubernetes.io/name: {{ .name }}\napp.kubernetes.io/instance: {{ .root.Release.Name }}\nhelm.sh/chart: {{ printf \"%s-%s\" .root.Chart.Name .root.Chart.Version }}\n{{- end }}\n",
    )?;
    for i in 0..n {
        std::fs::write(
            t.join(format!("app{i}.yaml")),
            format!(
                "{{{{- $app := index .Values.apps \"app{i}\" }}}}\n{{{{- $ctx := dict \"name\" \"app{i}\" \"root\" $ }}}}\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{{{ .Release.Name }}}}-app{i}\n  labels:\n    {{{{- include \"gen.labels\" $ctx | nindent 4 }}}}\nspec:\n  replicas: {{{{ $app.replicas }}}}\n  selector:\n    matchLabels: {{{{ include \"gen.labels\" $ctx | fromYaml | toJson }}}}\n  template:\n    metadata:\n      labels:\n        {{{{- include \"gen.labels\" $ctx | nindent 8 }}}}\n    spec:\n      containers:\n        - name: app\n          image: \"registry.example.com/app{i}:{{{{ .Chart.AppVersion }}}}\"\n          ports: [{{containerPort: {{{{ $app.port }}}}}}]\n          env:\n            - {{name: ENV, value: {{{{ .Values.global.env | quote }}}}}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{{{ .Release.Name }}}}-app{i}\nspec:\n  selector: {{{{ include \"gen.labels\" $ctx | fromYaml | toJson }}}}\n  ports: [{{port: 80, targetPort: {{{{ $app.port }}}}}}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-app{i}\ndata:\n  config.json: {{{{ $app | toJson | quote }}}}\n"
            ),
        )?;
    }
    std::fs::write(
        dir.join("charts/sub/Chart.yaml"),
        "apiVersion: v2\nname: sub\nversion: 0.1.0\n",
    )?;
    std::fs::write(
        dir.join("charts/sub/templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-sub\ndata:\n  env: {{ .Values.global.env }}\n",
    )?;
    Ok(dir)
}

fn helm_binary() -> PathBuf {
    if let Some(h) = std::env::var_os("HELM") {
        return PathBuf::from(h);
    }
    let cached =
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/flotilla-tools/bin/helm"));
    cached
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("helm"))
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(15)
        .max(1);
    let helm = helm_binary();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut charts: Vec<(String, PathBuf)> = ["basic", "umbrella", "caps", "legacy", "schema"]
        .iter()
        .map(|n| {
            (
                format!("fixture {n}"),
                root.join("tests/fixtures/helm").join(n),
            )
        })
        .collect();
    charts.push((
        "examples/helm-repo podinfo".to_string(),
        root.join("examples/helm-repo/podinfo/chart"),
    ));
    let tmp = std::env::temp_dir().join(format!("flotilla-bench-helm-{}", std::process::id()));
    for n in [50, 200] {
        match generate(&tmp, n) {
            Ok(dir) => charts.push((format!("generated, {n} apps"), dir)),
            Err(e) => eprintln!("cannot generate a {n}-app chart: {e}"),
        }
    }
    println!("| chart | objects | flotilla (median) | helm template (median) | ratio |");
    println!("|---|---:|---:|---:|---:|");
    let (mut total_ours, mut total_theirs) = (Duration::ZERO, Duration::ZERO);
    for (name, dir) in &charts {
        let a = time_render(dir, runs);
        let b = theirs(&helm, dir, runs);
        match (a, b) {
            (Ok((ta, na)), Ok((tb, nb))) => {
                total_ours += ta;
                total_theirs += tb;
                let objects = if na == nb {
                    na.to_string()
                } else {
                    format!("{na} / {nb}")
                };
                println!(
                    "| {name} | {objects} | {:.2} ms | {:.2} ms | {:.3}x |",
                    ta.as_secs_f64() * 1e3,
                    tb.as_secs_f64() * 1e3,
                    ta.as_secs_f64() / tb.as_secs_f64()
                );
            }
            (a, b) => println!("| {name} | failed: {:?} {:?} | | | |", a.err(), b.err()),
        }
    }
    println!(
        "| **all charts** | | {:.2} ms | {:.2} ms | **{:.3}x** |",
        total_ours.as_secs_f64() * 1e3,
        total_theirs.as_secs_f64() * 1e3,
        total_ours.as_secs_f64() / total_theirs.as_secs_f64().max(f64::MIN_POSITIVE)
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
