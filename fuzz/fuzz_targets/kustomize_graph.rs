//! A kustomize graph shaped by the fuzzer: up to eight folders, each a kustomization
//! whose resources point at later folders (a DAG, so diamonds and deep chains), with
//! name prefixes, patches (targets are regular expressions from the input), generators
//! and images chosen by the input bytes. Loading and rendering never panic, and a render
//! that succeeds stays within the object limit.
#![no_main]

use std::fmt::Write as _;
use std::path::Path;

use flotilla_render::{ClusterInfo, Limits, load_bundle_dir};
use libfuzzer_sys::fuzz_target;

/// Reads the input one byte at a time, zero once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        let Some((first, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        *first
    }

    /// Up to `max` printable bytes, for a target pattern.
    fn text(&mut self, max: usize) -> String {
        let len = usize::from(self.next()) % (max + 1);
        (0..len)
            .map(|_| char::from(b' ' + self.next() % 95))
            .filter(|c| *c != '"' && *c != '\\')
            .collect()
    }
}

fn write(root: &Path, rel: &str, text: &str) -> bool {
    let path = root.join(rel);
    path.parent()
        .is_none_or(|p| std::fs::create_dir_all(p).is_ok())
        && std::fs::write(path, text).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let root = dir.path();
    let mut b = Bytes(data);
    let nodes = 1 + usize::from(b.next() % 8);
    let folder = |i: usize| if i == 0 { String::new() } else { format!("n{i}/") };
    for i in 0..nodes {
        let up = if i == 0 { "" } else { "../" };
        let mut k = String::from("resources:\n");
        for _ in 0..b.next() % 4 {
            let child = i + 1 + usize::from(b.next()) % 8;
            if child < nodes {
                let _ = writeln!(k, "  - {up}n{child}");
            }
        }
        let flags = b.next();
        if flags & 1 != 0 {
            let _ = writeln!(k, "  - objects.yaml");
            let docs: Vec<String> = (0..1 + b.next() % 3)
                .map(|j| format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d{i}-{j}\nspec:\n  template:\n    spec:\n      containers:\n        - name: c\n          image: nginx:1\n"))
                .collect();
            if !write(root, &format!("{}objects.yaml", folder(i)), &docs.join("---\n")) {
                return;
            }
        }
        if flags & 2 != 0 {
            let _ = writeln!(k, "namePrefix: p{i}-");
        }
        if flags & 4 != 0 {
            let _ = writeln!(k, "images:\n  - name: nginx\n    newTag: \"2\"");
        }
        if flags & 8 != 0 {
            let _ = writeln!(
                k,
                "configMapGenerator:\n  - name: g{i}\n    literals:\n      - a=b"
            );
        }
        if flags & 16 != 0 {
            let name = b.text(24);
            let _ = writeln!(
                k,
                "patches:\n  - target:\n      name: \"{name}\"\n    patch: |\n      - op: copy\n        from: /spec\n        path: /spec{i}"
            );
        }
        if !write(root, &format!("{}kustomization.yaml", folder(i)), &k) {
            return;
        }
    }
    let limits = Limits {
        max_objects: 200,
        max_render_bytes: 1 << 20,
        max_render_work: 20_000,
        ..Limits::default()
    };
    let Ok(bundle) = load_bundle_dir(root, "fuzz", &limits) else {
        return;
    };
    if let Ok(rendered) = bundle.render(&ClusterInfo::default()) {
        assert!(rendered.objects.len() <= limits.max_objects);
    }
});
