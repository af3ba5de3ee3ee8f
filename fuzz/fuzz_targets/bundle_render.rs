//! A bundle whose base YAML and overlay patch come from the fuzzer: loading and
//! rendering (YAML parsing, strategic merge, JSON merge and JSON patch) never panic.
#![no_main]

use flotilla_render::{ClusterInfo, Limits, load_bundle_dir};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (base, patch) = data.split_at(split);
    let patch = patch.get(1..).unwrap_or_default();
    let root = dir.path();
    let ok = std::fs::write(
        root.join("fleet.yaml"),
        "targetCustomizations:\n  - name: fuzz\n    clusterSelector:\n      matchLabels:\n        env: fuzz\n    yaml:\n      overlays:\n        - fuzz\n",
    )
    .and_then(|_| std::fs::write(root.join("app.yaml"), base))
    .and_then(|_| std::fs::create_dir_all(root.join("overlays/fuzz")))
    .and_then(|_| std::fs::write(root.join("overlays/fuzz/app_patch.yaml"), patch));
    if ok.is_err() {
        return;
    }
    let Ok(bundle) = load_bundle_dir(root, "fuzz", &Limits::default()) else {
        return;
    };
    let mut labels = flotilla_model::Labels::new();
    labels.insert("env".into(), "fuzz".into());
    let info = ClusterInfo {
        name: "fuzz".into(),
        labels,
        groups: Vec::new(),
        capabilities: None,
    };
    let _ = bundle.render(&info);
});
