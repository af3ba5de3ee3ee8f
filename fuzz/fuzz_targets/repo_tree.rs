//! Arbitrary git tree shapes: entry names of any bytes, symlinks to anywhere (loops,
//! `..`, absolute), folders, and file sizes that lie about their contents. Building a
//! `RepoTree`, discovering its bundles and rendering them never panics, and a blob over
//! the per-file limit is never read.
#![no_main]

use std::cell::RefCell;

use flotilla_render::{ClusterInfo, Limits, ReadBlob, RepoTree, discover_tree};
use libfuzzer_sys::fuzz_target;

/// Blob `n` is the `n`th chunk of input; the ones read are remembered.
struct Blobs {
    chunks: Vec<Vec<u8>>,
    read: RefCell<Vec<usize>>,
}

impl ReadBlob<usize> for Blobs {
    fn read_blob(&self, key: &usize) -> Result<Vec<u8>, String> {
        self.read.borrow_mut().push(*key);
        self.chunks.get(*key).cloned().ok_or("no such blob".into())
    }
}

fuzz_target!(|data: &[u8]| {
    // Records separated by 0xFF: [op, parent, size, name..., 0xFE, payload...].
    let limits = Limits {
        max_file_bytes: 64,
        max_tree_entries: 64,
        max_tree_depth: 8,
        ..Limits::default()
    };
    let mut tree = RepoTree::<usize>::new(&limits, &[]);
    let mut dirs = vec![String::new()];
    let mut chunks = Vec::new();
    let mut sizes = Vec::new();
    for record in data.split(|b| *b == 0xFF) {
        let [op, parent, size, rest @ ..] = record else {
            continue;
        };
        let (name, payload) = match rest.iter().position(|b| *b == 0xFE) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let parent = dirs[*parent as usize % dirs.len()].clone();
        let added = match op % 3 {
            0 => tree.add_dir(&parent, name).map(|p| dirs.push(p)),
            1 => {
                // The header may claim more than the blob holds: the claim is what counts.
                let claimed = payload.len() as u64 + u64::from(*size) * 8;
                chunks.push(payload.to_vec());
                sizes.push(claimed);
                tree.add_file(&parent, name, claimed, chunks.len() - 1)
            }
            _ => tree.add_symlink(&parent, name, payload),
        };
        if added.is_err() {
            return;
        }
    }
    let blobs = Blobs {
        chunks,
        read: RefCell::new(Vec::new()),
    };
    for loaded in discover_tree(&tree, &blobs, "fuzz", &[], &limits) {
        if let Ok(bundle) = loaded.result {
            let _ = bundle.render(&ClusterInfo::default());
        }
    }
    for key in blobs.read.borrow().iter() {
        assert!(sizes[*key] <= limits.max_file_bytes, "blob {key} read over the limit");
    }
});
