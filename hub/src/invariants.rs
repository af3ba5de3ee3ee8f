//! Architecture invariants that are facts about the code itself, checked by reading the
//! crate's source: which modules may write the store, which may not do I/O. Each test
//! names the rule it keeps; `docs/architecture.md` lists them.

use std::path::{Path, PathBuf};

/// A module's code, less its unit tests (`mod tests` comes last).
pub(crate) fn source_of(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text)
}

/// Every `.rs` file under `dir` (relative to this crate's `src/`), with its text.
fn sources_under(dir: &str) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir),
        &mut out,
    );
    out
}

#[test]
fn the_server_translates_and_never_writes_the_store() {
    let files = sources_under("server");
    assert!(
        files.iter().any(|(p, _)| p.ends_with("server/sync.rs")),
        "the scan found the server's files: {files:?}"
    );
    for (path, text) in &files {
        for write in [
            ".submit(",
            ".commit(",
            "commit_at(",
            "queue_commit(",
            "compare_and_swap(",
            "Op::put",
            "Op::delete",
        ] {
            assert!(
                !source_of(text).contains(write),
                "{} writes the store ({write}); a command in `commands/` should",
                path.display()
            );
        }
    }
}
