//! Runs every runnable command block of `README.md` and `docs/*.md` against the freshly
//! built binaries and checks that each prints what the document shows (see
//! `flotilla_e2e::doctest` for the marker and the matching rules), so that the docs and
//! the behaviour cannot drift apart.

use std::path::Path;

use flotilla_e2e::{bin, doctest};

#[test]
fn every_runnable_block_in_the_docs_prints_what_the_docs_show() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin_dir = bin("flotilla")
        .parent()
        .expect("the binary is in a folder")
        .to_path_buf();
    for name in ["flotilla-hub", "flotilla-spoke"] {
        bin(name);
    }
    // One thread per document: each has its own sandbox, hub and port.
    let results: Vec<(String, Result<usize, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = doctest::documents(&root)
            .into_iter()
            .map(|doc| {
                let (root, bin_dir) = (&root, &bin_dir);
                let name = doc.strip_prefix(root).unwrap_or(&doc).display().to_string();
                (
                    name,
                    s.spawn(move || doctest::run_document(&doc, root, bin_dir)),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                let result = h
                    .join()
                    .unwrap_or_else(|_| Err("the harness panicked".to_string()));
                (name, result)
            })
            .collect()
    });
    let mut failures = Vec::new();
    let mut ran = 0;
    for (name, result) in results {
        match result {
            Ok(0) => {}
            Ok(blocks) => {
                eprintln!("{name}: {blocks} runnable blocks match");
                ran += blocks;
            }
            Err(report) => failures.push(report),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(ran > 0, "no runnable block found: the markers are gone");
}
