//! A repo given as a git tree instead of a folder, so that the hub renders straight from
//! the git object database and never writes a commit to disk.
//!
//! [`RepoTree`] is an in-memory index of a tree's entries (folders, file sizes, symlink
//! targets). Its builder methods check every entry as it comes in: the name (no `/`, `\`,
//! NUL, `.`, `..`, empty or `.git`), the entry count, the depth, and the size of blobs under
//! the source's paths. Any of these is a [`TreeError`] for the whole tree: a name with `/`
//! only exists in a corrupt or forged tree. `TreeFs` serves the index to the renderer:
//! symlinks resolve inside the tree only (an absolute or escaping one is a diagnostic on
//! the bundle that reads through it), and a blob is read through [`ReadBlob`] only when a
//! bundle reads that file, after the renderer checked its size.
//!
//! **Architecture Invariant:** no git library here; the hub fills the tree from gix.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Limits;
use crate::diagnostic::Diagnostic;
use crate::repo_fs::{Backend, ESCAPES_THROUGH_SYMLINK, Entry, Kind, join};

/// Longest symlink target a tree may hold (Linux's `PATH_MAX`). Callers check a link's
/// size from its object header before they read it.
pub const MAX_LINK_TARGET_BYTES: u64 = 4096;
/// Longest entry name (`NAME_MAX` on common file systems).
const MAX_NAME_BYTES: usize = 255;
/// Symlinks followed while resolving one path (Linux's `ELOOP` limit).
const MAX_LINK_HOPS: usize = 40;

/// Reads a blob's bytes by the key its file was added with.
pub trait ReadBlob<K> {
    fn read_blob(&self, key: &K) -> Result<Vec<u8>, String>;
}

/// Why a tree was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("tree entry {path:?} is refused: {reason}")]
    BadName { path: String, reason: &'static str },
    #[error("tree entry {path:?} appears twice")]
    Duplicate { path: String },
    #[error("tree has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("{path:?} is nested more than {limit} folders deep")]
    TooDeep { path: String, limit: usize },
    #[error("{path} is {size} bytes, over the limit of {limit} bytes per file")]
    BlobTooLarge { path: String, size: u64, limit: u64 },
    #[error("files under the source's paths add up to more than {limit} bytes (at {path})")]
    TooManyBytes { path: String, limit: u64 },
    #[error("symlink {path:?} is refused: {reason}")]
    BadLink { path: String, reason: &'static str },
    #[error("{parent:?} is not a folder of the tree")]
    NoSuchFolder { parent: String },
}

#[derive(Debug, Clone)]
enum Node<K> {
    Dir(Vec<String>),
    File { size: u64, key: K },
    Link(String),
}

/// The entries of one git tree, checked against [`Limits`] as they are added. `K` is the
/// caller's key for reading a blob (the hub uses the object id).
#[derive(Debug, Clone)]
pub struct RepoTree<K> {
    nodes: BTreeMap<String, Node<K>>,
    limits: Limits,
    /// The source's paths, normalised; `""` is the whole tree.
    paths: Vec<String>,
    entries: usize,
    bytes_under_paths: u64,
}

impl<K> RepoTree<K> {
    /// An empty root folder. Blob budgets count files under `paths` (relative to the root,
    /// empty means everything); entry and depth budgets count the whole tree.
    pub fn new(limits: &Limits, paths: &[String]) -> Self {
        let mut norm: Vec<String> = paths.iter().filter_map(|p| join("", p).ok()).collect();
        if paths.is_empty() {
            norm.push(String::new());
        }
        let mut nodes = BTreeMap::new();
        nodes.insert(String::new(), Node::Dir(Vec::new()));
        RepoTree {
            nodes,
            limits: limits.clone(),
            paths: norm,
            entries: 0,
            bytes_under_paths: 0,
        }
    }

    /// Adds the folder `name` to the folder `parent` (`""` is the root) and returns its path.
    pub fn add_dir(&mut self, parent: &str, name: &[u8]) -> Result<String, TreeError> {
        let (path, name) = self.admit(parent, name)?;
        self.insert(parent, name, path.clone(), Node::Dir(Vec::new()));
        Ok(path)
    }

    /// Adds a file of `size` bytes (from the blob's header), read later through `key`.
    pub fn add_file(
        &mut self,
        parent: &str,
        name: &[u8],
        size: u64,
        key: K,
    ) -> Result<(), TreeError> {
        let (path, name) = self.admit(parent, name)?;
        if self.under_paths(&path) {
            if size > self.limits.max_tree_blob_bytes {
                return Err(TreeError::BlobTooLarge {
                    path,
                    size,
                    limit: self.limits.max_tree_blob_bytes,
                });
            }
            self.bytes_under_paths = self.bytes_under_paths.saturating_add(size);
            if self.bytes_under_paths > self.limits.max_tree_total_bytes {
                return Err(TreeError::TooManyBytes {
                    path,
                    limit: self.limits.max_tree_total_bytes,
                });
            }
        }
        self.insert(parent, name, path, Node::File { size, key });
        Ok(())
    }

    /// Adds a symlink. Its target is only checked for form here; where it points is
    /// resolved (inside the tree only) when a bundle reads through it.
    pub fn add_symlink(
        &mut self,
        parent: &str,
        name: &[u8],
        target: &[u8],
    ) -> Result<(), TreeError> {
        let (path, name) = self.admit(parent, name)?;
        let bad = |reason| TreeError::BadLink {
            path: path.clone(),
            reason,
        };
        if target.len() as u64 > MAX_LINK_TARGET_BYTES {
            return Err(bad("its target is longer than 4096 bytes"));
        }
        if target.is_empty() || target.contains(&0) {
            return Err(bad("its target is empty or holds NUL"));
        }
        let target = std::str::from_utf8(target)
            .map_err(|_| bad("its target is not UTF-8"))?
            .to_string();
        self.insert(parent, name, path, Node::Link(target));
        Ok(())
    }

    /// Checks a new entry's name and the tree's budgets; returns its path and name.
    fn admit(&mut self, parent: &str, name: &[u8]) -> Result<(String, String), TreeError> {
        let shown = String::from_utf8_lossy(name);
        let path = if parent.is_empty() {
            shown.to_string()
        } else {
            format!("{parent}/{shown}")
        };
        let name = check_name(name).map_err(|reason| TreeError::BadName {
            path: path.clone(),
            reason,
        })?;
        if !matches!(self.nodes.get(parent), Some(Node::Dir(_))) {
            return Err(TreeError::NoSuchFolder {
                parent: parent.to_string(),
            });
        }
        if self.nodes.contains_key(&path) {
            return Err(TreeError::Duplicate { path });
        }
        if path.split('/').count() > self.limits.max_tree_depth {
            return Err(TreeError::TooDeep {
                path,
                limit: self.limits.max_tree_depth,
            });
        }
        self.entries += 1;
        if self.entries > self.limits.max_tree_entries {
            return Err(TreeError::TooManyEntries {
                limit: self.limits.max_tree_entries,
            });
        }
        Ok((path, name.to_string()))
    }

    fn insert(&mut self, parent: &str, name: String, path: String, node: Node<K>) {
        if let Some(Node::Dir(children)) = self.nodes.get_mut(parent) {
            children.push(name);
        }
        self.nodes.insert(path, node);
    }

    fn under_paths(&self, path: &str) -> bool {
        self.paths.iter().any(|p| {
            p.is_empty()
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// A tree entry name as a file name, or why it is refused.
fn check_name(name: &[u8]) -> Result<&str, &'static str> {
    if name.is_empty() || name == b"." || name == b".." {
        return Err("a name that is empty, '.' or '..'");
    }
    if name.contains(&b'/') {
        return Err("a name that holds '/' (a corrupt tree)");
    }
    if name.contains(&b'\\') || name.contains(&0) {
        return Err("a name that holds '\\' or NUL");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err("a name longer than 255 bytes");
    }
    let name = std::str::from_utf8(name).map_err(|_| "a name that is not UTF-8")?;
    // Windows and macOS file systems drop trailing dots and spaces and fold case.
    if name
        .trim_end_matches(['.', ' '])
        .eq_ignore_ascii_case(".git")
    {
        return Err("a '.git' entry");
    }
    Ok(name)
}

/// Serves a [`RepoTree`] to the renderer, reading blobs through `blobs` on demand.
pub(crate) struct TreeFs<'a, K> {
    tree: &'a RepoTree<K>,
    blobs: &'a dyn ReadBlob<K>,
}

impl<K> Clone for TreeFs<'_, K> {
    fn clone(&self) -> Self {
        TreeFs {
            tree: self.tree,
            blobs: self.blobs,
        }
    }
}

impl<'a, K> TreeFs<'a, K> {
    pub(crate) fn new(tree: &'a RepoTree<K>, blobs: &'a dyn ReadBlob<K>) -> Self {
        TreeFs { tree, blobs }
    }

    /// The path of the entry `rel` names once every symlink on the way is followed
    /// (`None`: there is none), or why it cannot be followed.
    fn resolve(&self, rel: &str) -> Result<Option<(String, &'a Node<K>)>, String> {
        let mut pending: Vec<&str> = rel.split('/').rev().collect();
        let mut cur: Vec<&str> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part {
                "" | "." => continue,
                ".." => {
                    if cur.pop().is_none() {
                        return Err(ESCAPES_THROUGH_SYMLINK.to_string());
                    }
                    continue;
                }
                _ => {}
            }
            let path = if cur.is_empty() {
                part.to_string()
            } else {
                format!("{}/{part}", cur.join("/"))
            };
            match self.tree.nodes.get(&path) {
                None => return Ok(None),
                Some(Node::Link(target)) => {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(format!("too many levels of symlinks at {path} (a loop?)"));
                    }
                    if target.starts_with('/') {
                        return Err(format!(
                            "symlink {path} points to the absolute path {target:?}; only targets inside the repo are allowed"
                        ));
                    }
                    pending.extend(target.split('/').rev());
                }
                Some(Node::File { .. }) if pending.iter().any(|p| !p.is_empty() && *p != ".") => {
                    return Ok(None);
                }
                Some(_) => cur.push(part),
            }
        }
        let path = cur.join("/");
        Ok(self.tree.nodes.get(&path).map(|n| (path, n)))
    }

    fn resolve_or_diag(&self, rel: &str) -> Result<(String, &'a Node<K>), Diagnostic> {
        match self.resolve(rel) {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(Diagnostic::new(
                rel,
                "cannot read: no such file or directory",
            )),
            Err(reason) => Err(Diagnostic::new(rel, reason)),
        }
    }
}

impl<K> Backend for TreeFs<'_, K> {
    fn file_size(&self, rel: &str) -> Result<u64, Diagnostic> {
        match self.resolve_or_diag(rel)? {
            (_, Node::File { size, .. }) => Ok(*size),
            _ => Err(Diagnostic::new(rel, "is not a regular file")),
        }
    }

    fn read_bytes(&self, rel: &str, max: u64) -> Result<Vec<u8>, Diagnostic> {
        let (_, Node::File { key, .. }) = self.resolve_or_diag(rel)? else {
            return Err(Diagnostic::new(rel, "is not a regular file"));
        };
        let bytes = self
            .blobs
            .read_blob(key)
            .map_err(|e| Diagnostic::new(rel, format!("cannot read: {e}")))?;
        if bytes.len() as u64 > max {
            return Err(Diagnostic::new(rel, "blob is larger than its header said"));
        }
        Ok(bytes)
    }

    fn list(&self, rel: &str) -> Result<Arc<Vec<Entry>>, Diagnostic> {
        let (dir, Node::Dir(children)) = self.resolve_or_diag(rel)? else {
            return Err(Diagnostic::new(rel, "cannot list: not a directory"));
        };
        let mut entries: Vec<Entry> = children
            .iter()
            .map(|name| {
                let path = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                let is_symlink = matches!(self.tree.nodes.get(&path), Some(Node::Link(_)));
                let is_dir = matches!(self.resolve(&path), Ok(Some((_, Node::Dir(_)))));
                Entry {
                    name: name.clone(),
                    is_dir,
                    is_symlink,
                }
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Arc::new(entries))
    }

    fn kind(&self, rel: &str) -> Kind {
        match self.resolve(rel) {
            Ok(Some((_, Node::Dir(_)))) => Kind::Dir,
            Ok(Some(_)) => Kind::File,
            Ok(None) => Kind::Missing,
            // An unresolvable link reports as a file so that reading it gives the error.
            Err(_) => Kind::File,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;
    use crate::discover_tree;

    /// Blobs in memory, remembering which were read.
    #[derive(Default)]
    struct Blobs {
        data: HashMap<u32, Vec<u8>>,
        read: RefCell<Vec<u32>>,
    }

    impl ReadBlob<u32> for Blobs {
        fn read_blob(&self, key: &u32) -> Result<Vec<u8>, String> {
            self.read.borrow_mut().push(*key);
            self.data.get(key).cloned().ok_or("missing blob".into())
        }
    }

    impl Blobs {
        fn file(&mut self, tree: &mut RepoTree<u32>, parent: &str, name: &str, text: &str) {
            let key = self.data.len() as u32;
            self.data.insert(key, text.as_bytes().to_vec());
            tree.add_file(parent, name.as_bytes(), text.len() as u64, key)
                .expect("file admitted");
        }
    }

    fn cm(name: &str) -> String {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")
    }

    #[test]
    fn names_that_no_checkout_could_hold_are_refused() {
        let mut tree = RepoTree::<u32>::new(&Limits::default(), &[]);
        for name in [
            &b"a/pwned"[..],
            b"",
            b".",
            b"..",
            b"a\0b",
            b"a\\b",
            b".git",
            b".GIT",
            b".Git. ",
            &[b'x'; 256],
            b"\xff",
        ] {
            let err = tree.add_file("", name, 1, 0).expect_err("refused");
            assert!(matches!(err, TreeError::BadName { .. }), "{err}");
        }
        tree.add_file("", b".gitignore", 1, 0).expect("not .git");
        assert!(matches!(
            tree.add_file("", b".gitignore", 1, 0),
            Err(TreeError::Duplicate { .. })
        ));
        tree.add_file("", b".github", 1, 0).expect("not .git");
    }

    #[test]
    fn entries_depth_and_blob_sizes_are_budgeted() {
        let limits = Limits {
            max_tree_entries: 3,
            max_tree_depth: 2,
            max_tree_blob_bytes: 10,
            max_tree_total_bytes: 15,
            ..Limits::default()
        };
        let sizes = Limits {
            max_tree_entries: 100,
            ..limits.clone()
        };
        let mut tree = RepoTree::<u32>::new(&sizes, &["app".to_string()]);
        let app = tree.add_dir("", b"app").expect("dir");
        assert!(matches!(
            tree.add_file(&app, b"big", 11, 0),
            Err(TreeError::BlobTooLarge { size: 11, .. })
        ));
        tree.add_file(&app, b"a", 10, 0).expect("at the limit");
        assert!(matches!(
            tree.add_file(&app, b"b", 6, 0),
            Err(TreeError::TooManyBytes { .. })
        ));
        // Outside the paths, sizes are left to the renderer's per-file limit.
        let mut tree = RepoTree::<u32>::new(&limits, &["app".to_string()]);
        tree.add_file("", b"docs.pdf", 1 << 30, 0).expect("outside");
        let d = tree.add_dir("", b"d").expect("dir");
        tree.add_dir(&d, b"e").expect("two deep");
        assert!(matches!(
            tree.add_dir("d/e", b"f"),
            Err(TreeError::TooDeep { .. })
        ));
        assert!(matches!(
            tree.add_file("", b"x", 1, 0),
            Err(TreeError::TooManyEntries { limit: 3 })
        ));
    }

    #[test]
    fn symlinks_resolve_inside_the_tree_and_nowhere_else() {
        let mut tree = RepoTree::<u32>::new(&Limits::default(), &[]);
        let mut blobs = Blobs::default();
        let base = tree.add_dir("", b"base").expect("dir");
        blobs.file(&mut tree, &base, "cm.yaml", &cm("shared"));
        for (bundle, link) in [
            ("good", "../base/cm.yaml"),
            ("absolute", "/etc/passwd"),
            ("escape", "../../../etc/passwd"),
            ("loop", "link.yaml"),
        ] {
            let dir = tree.add_dir("", bundle.as_bytes()).expect("dir");
            blobs.file(&mut tree, &dir, "fleet.yaml", "{}\n");
            tree.add_symlink(&dir, b"link.yaml", link.as_bytes())
                .expect("link");
        }
        // A linked folder is listed but not walked into, as on disk.
        tree.add_symlink("good", b"linked-dir", b"../base")
            .expect("dir link");
        let paths = vec![
            "good".to_string(),
            "absolute".to_string(),
            "escape".to_string(),
            "loop".to_string(),
        ];
        let loaded = discover_tree(&tree, &blobs, "s", &paths, &Limits::default());
        let by_path: HashMap<&str, _> = loaded.iter().map(|b| (b.path.as_str(), b)).collect();
        let good = by_path["good"].result.as_ref().expect("good loads");
        let rendered = good
            .render(&crate::ClusterInfo::default())
            .expect("renders");
        assert_eq!(
            rendered.objects.len(),
            1,
            "one object through the file link"
        );
        let err = |p: &str| match &by_path[p].result {
            Err(d) => d
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            Ok(_) => panic!("{p} must fail"),
        };
        assert!(
            err("absolute").contains("absolute path \"/etc/passwd\""),
            "{}",
            err("absolute")
        );
        assert!(
            err("escape").contains("escapes the repo"),
            "{}",
            err("escape")
        );
        assert!(
            err("loop").contains("too many levels of symlinks"),
            "{}",
            err("loop")
        );
    }

    #[test]
    fn a_blob_is_read_only_when_a_bundle_reads_it_and_after_its_size_is_checked() {
        let limits = Limits {
            max_tree_blob_bytes: 2 << 30,
            max_tree_total_bytes: 4 << 30,
            ..Limits::default()
        };
        let mut tree = RepoTree::<u32>::new(&limits, &[]);
        let mut blobs = Blobs::default();
        let app = tree.add_dir("", b"app").expect("dir");
        blobs.file(&mut tree, &app, "fleet.yaml", "{}\n");
        blobs.file(&mut tree, &app, "cm.yaml", &cm("a"));
        // Claims 1 GiB in its header: the renderer refuses it without reading it.
        tree.add_file(&app, b"huge.yaml", 1 << 30, 99)
            .expect("file");
        blobs.file(&mut tree, "", "README.md", "not read");
        let loaded = discover_tree(&tree, &blobs, "s", &["app".to_string()], &limits);
        let Err(diags) = &loaded[0].result else {
            panic!("huge.yaml fails the bundle");
        };
        assert!(diags[0].to_string().contains("over the limit"), "{diags:?}");
        let read = blobs.read.borrow();
        assert!(
            !read.contains(&99),
            "the huge blob was never read: {read:?}"
        );
        assert!(!read.contains(&3), "README.md was never read: {read:?}");
    }
}
