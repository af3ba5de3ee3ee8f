//! `flotilla render DIR` and a hub source with `--path .` find the same bundles: both go
//! through `discover` (over a folder, and over a git tree), tested here on the same trees.

use std::path::Path;

use flotilla_render::{Limits, LoadedBundle, ReadBlob, RepoTree, discover, discover_tree};

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// The blobs of a tree copied from a folder, keyed by path (a fake object database).
struct DiskBlobs<'a>(&'a Path);

impl ReadBlob<String> for DiskBlobs<'_> {
    fn read_blob(&self, key: &String) -> Result<Vec<u8>, String> {
        std::fs::read(self.0.join(key)).map_err(|e| e.to_string())
    }
}

/// The git tree a commit of `root` would have.
fn tree_of(root: &Path, limits: &Limits, paths: &[String]) -> RepoTree<String> {
    fn add(tree: &mut RepoTree<String>, root: &Path, parent: &str) {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(parent))
            .expect("read dir")
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            let rel = if parent.is_empty() {
                name.clone()
            } else {
                format!("{parent}/{name}")
            };
            if e.file_type().expect("type").is_dir() {
                let p = tree.add_dir(parent, name.as_bytes()).expect("dir");
                add(tree, root, &p);
            } else {
                let size = e.metadata().expect("meta").len();
                tree.add_file(parent, name.as_bytes(), size, rel)
                    .expect("file");
            }
        }
    }
    let mut tree = RepoTree::new(limits, paths);
    add(&mut tree, root, "");
    tree
}

fn summary(bundles: &[LoadedBundle]) -> Vec<(String, String, bool)> {
    bundles
        .iter()
        .map(|b| (b.name.clone(), b.path.clone(), b.result.is_ok()))
        .collect()
}

fn both(root: &Path, paths: &[String]) -> Vec<(String, String, bool)> {
    let limits = Limits::default();
    let on_disk = summary(&discover(root, "src", paths, &limits));
    let tree = tree_of(root, &limits, paths);
    let in_git = summary(&discover_tree(
        &tree,
        &DiskBlobs(root),
        "src",
        paths,
        &limits,
    ));
    assert_eq!(on_disk, in_git, "folder and git tree disagree");
    on_disk
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n";

#[test]
fn nested_bundles_raw_roots_and_renamed_bundles_are_found_the_same_way() {
    let repo = tempfile::tempdir().expect("tmp");
    let r = repo.path();
    // Raw YAML at the root next to bundle folders: the root is not a bundle then.
    write(r, "root.yaml", CM);
    write(r, "apps/web/fleet.yaml", "defaultNamespace: web\n");
    write(r, "apps/web/cm.yaml", CM);
    write(r, "apps/web/nested/fleet.yaml", "name: inner\n");
    write(r, "apps/web/nested/cm.yaml", CM);
    write(r, "apps/db/flotilla.yaml", "");
    write(r, "apps/db/cm.yaml", CM);
    write(r, "ignored/fleet.yaml", "");
    write(r, ".fleetignore", "ignored/\n");
    write(r, ".hidden/fleet.yaml", "");
    let expected = vec![
        ("src-apps-db".to_string(), "apps/db".to_string(), true),
        ("src-apps-web".to_string(), "apps/web".to_string(), true),
        ("src-inner".to_string(), "apps/web/nested".to_string(), true),
    ];
    assert_eq!(both(r, &[]), expected);
    assert_eq!(both(r, &[".".to_string()]), expected);
    assert_eq!(both(r, &["apps/web".to_string()]), expected[1..].to_vec());
}

#[test]
fn a_folder_without_bundle_files_is_one_raw_bundle_either_way() {
    let repo = tempfile::tempdir().expect("tmp");
    write(repo.path(), "a.yaml", CM);
    write(repo.path(), "sub/b.yaml", &CM.replace("app", "other"));
    assert_eq!(
        both(repo.path(), &[".".to_string()]),
        vec![("src".to_string(), String::new(), true)]
    );
}

#[test]
fn two_bundles_with_one_name_both_fail_and_say_where() {
    let repo = tempfile::tempdir().expect("tmp");
    write(repo.path(), "a/fleet.yaml", "name: web\n");
    write(repo.path(), "a/cm.yaml", CM);
    write(repo.path(), "b/fleet.yaml", "name: web\n");
    write(repo.path(), "b/cm.yaml", CM);
    assert_eq!(
        both(repo.path(), &[]),
        vec![
            ("src-web".to_string(), "a".to_string(), false),
            ("src-web".to_string(), "b".to_string(), false),
        ]
    );
    let loaded = discover(repo.path(), "src", &[], &Limits::default());
    let err = loaded[0].result.as_ref().expect_err("duplicate").clone();
    assert_eq!(
        err[0].to_string(),
        "a: bundle name src-web is used by several folders (a, b); give each a different `name:` in its fleet.yaml"
    );
}
