//! Git access with gix: fetch one branch of a remote into a bare mirror, and read a
//! commit's tree for the renderer straight from the object database.
//!
//! Nothing from a repo is ever written to disk (no checkout): `load_tree` indexes the
//! commit's tree into a [`RepoTree`] (which refuses hostile names and enforces the tree
//! budgets), reading every object's size from its header before reading the object, and
//! `GitBlobs` reads a blob only when the renderer asks for it.
//!
//! Everything here is blocking (gix has no tokio client); callers run it in
//! `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

pub mod verify;

use flotilla_render::{Limits, MAX_LINK_TARGET_BYTES, ReadBlob, RepoTree, TreeError};
use gix::ObjectId;
use gix::object::tree::EntryKind;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {op} {url}: {message}")]
    Remote {
        op: &'static str,
        url: String,
        message: String,
    },
    #[error("branch {branch:?} not found in {url}")]
    BranchNotFound { url: String, branch: String },
    #[error(
        "revision {revision:?} not found in {url}: a pinned commit must be reachable from branch {branch:?}, or name a tag"
    )]
    RevisionNotFound {
        url: String,
        revision: String,
        branch: String,
    },
    #[error("commit {commit}: {message}")]
    Object { commit: String, message: String },
    #[error("commit {commit}: {source}")]
    Tree { commit: String, source: TreeError },
}

/// Largest commit object read (its message included).
const MAX_COMMIT_BYTES: u64 = 1 << 20;
/// Largest encoding of one tree entry: mode, space, a 255-byte name, NUL, a SHA-256 id.
const MAX_TREE_ENTRY_BYTES: u64 = 7 + 255 + 1 + 32;

/// What to fetch and how to reach it: a source's repo, branch and optional pinned
/// revision, with its credentials.
pub struct Remote<'a> {
    pub url: &'a str,
    pub branch: &'a str,
    /// A full commit id or a tag to use instead of the branch's head.
    pub revision: Option<&'a str>,
    pub access: &'a Access,
}

/// How the hub authenticates to a remote and whom it trusts. Paths point at the
/// source's credential files (`crate::credentials`); the password is held only for the
/// fetch. `Debug` is not derived so that a secret can never reach a log.
#[derive(Default, Clone)]
pub struct Access {
    /// HTTP(S) basic auth.
    pub username: Option<String>,
    pub password: Option<String>,
    /// SSH private key (`-i`); with SSH only this key is offered.
    pub ssh_key: Option<PathBuf>,
    /// The only host keys SSH accepts; without it every host is unknown and refused.
    pub known_hosts: Option<PathBuf>,
    /// PEM CA certificates an https:// server must chain to, instead of the built-in roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl Access {
    /// `text` with the password replaced, wherever an error quotes it.
    pub fn redact(&self, text: &str) -> String {
        match self.password.as_deref().filter(|p| p.len() >= 3) {
            Some(p) => text.replace(p, flotilla_model::redact::REDACTED),
            None => text.to_string(),
        }
    }

    /// `core.sshCommand` for this access: strict host keys from `known_hosts` only, only
    /// `ssh_key` offered, no agent, no user or system ssh config, never a prompt. ssh's
    /// own messages go to `log` (gix does not pass them on), to explain a failure.
    fn ssh_command(&self, log: &Path) -> String {
        let known_hosts = self
            .known_hosts
            .as_deref()
            .map_or_else(|| "/dev/null".to_string(), |p| p.display().to_string());
        let mut cmd = format!(
            "ssh -F /dev/null -E {} -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o IdentityAgent=none -o ConnectTimeout=20",
            shell_quote(&log.display().to_string()),
            shell_quote(&known_hosts)
        );
        match &self.ssh_key {
            Some(key) => {
                cmd.push_str(" -i ");
                cmd.push_str(&shell_quote(&key.display().to_string()));
            }
            // Without a key, no default identity from ~/.ssh either.
            None => cmd.push_str(" -o IdentityFile=/dev/null"),
        }
        cmd
    }
}

/// What ssh wrote to its log during a failed fetch: its last lines, at most 1 KiB.
fn ssh_said(log: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(log)
        .ok()?
        .take(64 << 10)
        .read_to_string(&mut text)
        .ok()?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let said = lines[lines.len().saturating_sub(3)..].join("; ");
    let cut = said.char_indices().nth(1024).map_or(said.len(), |(i, _)| i);
    (!said.is_empty()).then(|| said[..cut].to_string())
}

/// `s` as one single-quoted shell word (gix runs `core.sshCommand` through `sh -c`).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Fetches `branch` from `url` into the bare mirror at `mirror` with no credentials and
/// returns the commit the branch points at.
pub fn fetch_branch(
    mirror: &Path,
    url: &str,
    branch: &str,
    max_object_bytes: u64,
) -> Result<String, GitError> {
    let access = Access::default();
    let remote = Remote {
        url,
        branch,
        revision: None,
        access: &access,
    };
    fetch(mirror, &remote, max_object_bytes)
}

/// Fetches the remote's branch (and a pinned tag) into the bare mirror at `mirror` and
/// returns the commit to deploy: the pinned revision, or the branch's head. A force-push
/// is followed (the refspec is forced). The fetch refuses any object over
/// `max_object_bytes`: gix inflates each received object whole to index it, so a small
/// pack with a huge, well-compressed blob would otherwise cost that blob's size in memory.
///
/// Nothing of the user's git or ssh configuration is read: credentials come only from
/// `remote.access`.
pub fn fetch(
    mirror: &Path,
    remote: &Remote<'_>,
    max_object_bytes: u64,
) -> Result<String, GitError> {
    let (url, branch) = (remote.url, remote.branch);
    let remote_err = |op, e: &dyn std::fmt::Display| GitError::Remote {
        op,
        url: url.to_string(),
        message: e.to_string(),
    };
    if !mirror.join("HEAD").exists() {
        std::fs::create_dir_all(mirror).map_err(|e| remote_err("init", &e))?;
        gix::init_bare(mirror).map_err(|e| remote_err("init", &e))?;
    }
    let ssh_log = mirror.with_extension("ssh.log");
    let _ = std::fs::remove_file(&ssh_log);
    let options = gix::open::Options::default().config_overrides([
        format!("gitoxide.objects.allocLimit={max_object_bytes}"),
        format!("core.sshCommand={}", remote.access.ssh_command(&ssh_log)),
        "ssh.variant=ssh".to_string(),
    ]);
    let repo = gix::open_opts(mirror, options).map_err(|e| remote_err("open", &e))?;
    // gix reports a branch the remote does not have as a refspec that matched nothing;
    // say it in the user's terms.
    let fetch_err = |e: &dyn std::error::Error| {
        // The outermost message is generic ("Failed to consume the pack"); the reason,
        // such as an object over the size limit, is further down the chain.
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text = format!("{text}: {c}");
            cause = c.source();
        }
        if let Some(said) = ssh_said(&ssh_log) {
            text = format!("{text}: ssh: {said}");
        }
        if text.contains("matched any of") {
            GitError::BranchNotFound {
                url: url.to_string(),
                branch: branch.to_string(),
            }
        } else if text.contains("Host key verification failed")
            || text.contains("host key is known")
        {
            remote_err(
                "fetch",
                &format!("the server's host key is not in the source's known hosts: {text}"),
            )
        } else if text.to_ascii_lowercase().contains("credentials")
            || text.contains("Permission denied")
        {
            // The server answered 401 (or refused the key) and no credentials were
            // configured or accepted.
            remote_err("fetch", &format!("authentication failed: {text}"))
        } else if text.contains("too large to fit in memory") {
            remote_err(
                "fetch",
                &format!("{text}: an object is over the limit of {max_object_bytes} bytes"),
            )
        } else {
            remote_err("fetch", &text)
        }
    };
    let local_ref = format!("refs/flotilla/{branch}");
    let mut specs = vec![format!("+refs/heads/{branch}:{local_ref}")];
    let tag = remote.revision.filter(|r| !is_commit_id(r));
    if let Some(tag) = tag {
        specs.push(format!("+refs/tags/{tag}:refs/flotilla-tags/{tag}"));
    }
    let git_remote = repo
        .remote_at(url)
        .map_err(|e| remote_err("remote", &e))?
        .with_refspecs(
            specs.iter().map(String::as_str),
            gix::remote::Direction::Fetch,
        )
        .map_err(|e| remote_err("refspec", &e))?;
    let mut connection = git_remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| remote_err("connect", &e))?;
    if let Some(ca) = &remote.access.ca_pem {
        let certs =
            reqwest::Certificate::from_pem_bundle(ca).map_err(|e| remote_err("CA file", &e))?;
        let mut http = repo
            .transport_options(url, None)
            .map_err(|e| remote_err("transport", &e))?
            .and_then(|o| {
                o.downcast::<gix::protocol::transport::client::blocking_io::http::Options>()
                    .ok()
            })
            .map(|o| *o)
            .unwrap_or_default();
        let reqwest_options =
            gix::protocol::transport::client::blocking_io::http::reqwest::Options {
                configure_client: Some(Box::new(move |b| Ok(b.tls_certs_only(certs.clone())))),
                configure_request: None,
            };
        http.backend = Some(std::sync::Arc::new(std::sync::Mutex::new(reqwest_options)));
        connection = connection.with_transport_options(Box::new(http));
    }
    let account = remote_account(url, remote.access);
    let connection = connection.with_credentials(move |action| {
        Ok(match (action, &account) {
            (gix::credentials::helper::Action::Get(ctx), Some(identity)) => {
                Some(gix::credentials::protocol::Outcome {
                    identity: identity.clone(),
                    next: ctx.into(),
                })
            }
            // No credential helper, prompt or store: the source's own or nothing.
            _ => None,
        })
    });
    let outcome = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| fetch_err(&e))?
        .receive(gix::progress::Discard, &AtomicBool::new(false))
        .map_err(|e| fetch_err(&e))?;
    if outcome.ref_map.mappings.is_empty() {
        return Err(GitError::BranchNotFound {
            url: url.to_string(),
            branch: branch.to_string(),
        });
    }
    let resolve = |name: &str| -> Result<ObjectId, GitError> {
        repo.find_reference(name)
            .map_err(|e| remote_err("resolve", &e))?
            .peel_to_id()
            .map(|id| id.detach())
            .map_err(|e| remote_err("resolve", &e))
    };
    let id =
        match remote.revision {
            None => resolve(&local_ref)?,
            Some(tag) if !is_commit_id(tag) => resolve(&format!("refs/flotilla-tags/{tag}"))
                .map_err(|_| GitError::RevisionNotFound {
                    url: url.to_string(),
                    revision: tag.to_string(),
                    branch: branch.to_string(),
                })?,
            Some(commit) => {
                let id = ObjectId::from_hex(commit.as_bytes())
                    .map_err(|e| remote_err("revision", &e))?;
                let found = repo
                    .find_header(id)
                    .is_ok_and(|h| h.kind() == gix::object::Kind::Commit);
                if !found {
                    return Err(GitError::RevisionNotFound {
                        url: url.to_string(),
                        revision: commit.to_string(),
                        branch: branch.to_string(),
                    });
                }
                id
            }
        };
    Ok(id.to_string())
}

/// A full hex object id (a pinned commit), as opposed to a tag name.
pub fn is_commit_id(revision: &str) -> bool {
    matches!(revision.len(), 40 | 64) && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The basic-auth account for `url`: the source's username and password, else the
/// userinfo in the URL itself.
fn remote_account(url: &str, access: &Access) -> Option<gix::sec::identity::Account> {
    let from_url = gix::url::parse(url).ok();
    let username = access.username.clone().or_else(|| {
        from_url
            .as_ref()
            .and_then(|u| u.user().map(ToString::to_string))
    })?;
    let password = access.password.clone().or_else(|| {
        from_url
            .as_ref()
            .and_then(|u| u.password().map(ToString::to_string))
    })?;
    Some(gix::sec::identity::Account {
        username,
        password,
        oauth_refresh_token: None,
    })
}

/// The raw commit object `commit` in the mirror (at most 1 MiB), for signature checks.
pub fn read_commit(mirror: &Path, commit: &str) -> Result<Vec<u8>, GitError> {
    let err = |e: &dyn std::fmt::Display| GitError::Object {
        commit: commit.to_string(),
        message: e.to_string(),
    };
    let repo = gix::open(mirror).map_err(|e| err(&e))?;
    let id = ObjectId::from_hex(commit.as_bytes()).map_err(|e| err(&e))?;
    let header = repo.find_header(id).map_err(|e| err(&e))?;
    if header.kind() != gix::object::Kind::Commit || header.size() > MAX_COMMIT_BYTES {
        return Err(err(&format!(
            "not a commit of at most {MAX_COMMIT_BYTES} bytes ({} of {} bytes)",
            header.kind(),
            header.size()
        )));
    }
    Ok(repo.find_object(id).map_err(|e| err(&e))?.detach().data)
}

/// Reads the blobs of a mirror on the renderer's demand.
#[derive(Debug)]
pub struct GitBlobs {
    repo: gix::Repository,
}

impl ReadBlob<ObjectId> for GitBlobs {
    fn read_blob(&self, key: &ObjectId) -> Result<Vec<u8>, String> {
        let object = self.repo.find_object(*key).map_err(|e| e.to_string())?;
        Ok(object.detach().data)
    }
}

/// Indexes the tree of `commit` in the mirror: every entry's name and, from the object
/// headers, every blob's size, against the tree budgets in `limits` for the source's
/// `paths`. No blob is read here, except symlink targets (at most 4 KiB each).
pub fn load_tree(
    mirror: &Path,
    commit: &str,
    paths: &[String],
    limits: &Limits,
) -> Result<(RepoTree<ObjectId>, GitBlobs), GitError> {
    let err = |e: &dyn std::fmt::Display| GitError::Object {
        commit: commit.to_string(),
        message: e.to_string(),
    };
    let tree_err = |source| GitError::Tree {
        commit: commit.to_string(),
        source,
    };
    let repo = gix::open(mirror).map_err(|e| err(&e))?;
    let id = ObjectId::from_hex(commit.as_bytes()).map_err(|e| err(&e))?;
    let read = |id: ObjectId, kind: gix::object::Kind, max: u64, what: &str| {
        let header = repo.find_header(id).map_err(|e| err(&e))?;
        if header.kind() != kind {
            return Err(err(&format!("{what} {id} is a {}", header.kind())));
        }
        if header.size() > max {
            return Err(err(&format!(
                "{what} {id} is {} bytes, over the limit of {max} bytes",
                header.size()
            )));
        }
        let object = repo.find_object(id).map_err(|e| err(&e))?;
        Ok(object.detach().data)
    };
    let commit_data = read(id, gix::object::Kind::Commit, MAX_COMMIT_BYTES, "commit")?;
    let root = gix::objs::CommitRefIter::from_bytes(&commit_data, repo.object_hash())
        .tree_id()
        .map_err(|e| err(&e))?;

    let mut tree = RepoTree::new(limits, paths);
    // A tree object cannot hold more entries than the whole tree may: this bounds what
    // is read before a single entry is counted.
    let tree_bytes_budget = (limits.max_tree_entries as u64).saturating_mul(MAX_TREE_ENTRY_BYTES);
    let mut tree_bytes_read = 0u64;
    let mut pending = vec![(root, String::new())];
    while let Some((tree_id, dir)) = pending.pop() {
        let remaining = tree_bytes_budget.saturating_sub(tree_bytes_read);
        let data = read(tree_id, gix::object::Kind::Tree, remaining, "tree")?;
        tree_bytes_read += data.len() as u64;
        for entry in gix::objs::TreeRefIter::from_bytes(&data, repo.object_hash()) {
            let entry = entry.map_err(|e| err(&e))?;
            let name: &[u8] = entry.filename;
            let oid = entry.oid.to_owned();
            match entry.mode.kind() {
                EntryKind::Tree => {
                    let path = tree.add_dir(&dir, name).map_err(tree_err)?;
                    pending.push((oid, path));
                }
                EntryKind::Blob | EntryKind::BlobExecutable => {
                    let header = repo.find_header(oid).map_err(|e| err(&e))?;
                    tree.add_file(&dir, name, header.size(), oid)
                        .map_err(tree_err)?;
                }
                EntryKind::Link => {
                    let target = read(
                        oid,
                        gix::object::Kind::Blob,
                        MAX_LINK_TARGET_BYTES,
                        "symlink",
                    )?;
                    tree.add_symlink(&dir, name, &target).map_err(tree_err)?;
                }
                // Submodules are not followed.
                EntryKind::Commit => {}
            }
        }
    }
    Ok((tree, GitBlobs { repo }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_e2e::git_with_input as git;
    use flotilla_render::discover_tree;

    fn blob(repo: &Path, content: &[u8]) -> String {
        git(repo, &["hash-object", "-w", "--stdin"], content)
    }

    /// Writes a tree object byte by byte, so that it may hold names `git mktree` refuses.
    fn tree(repo: &Path, entries: &[(&str, &[u8], &str)]) -> String {
        let mut raw = Vec::new();
        for (mode, name, oid) in entries {
            raw.extend_from_slice(mode.as_bytes());
            raw.push(b' ');
            raw.extend_from_slice(name);
            raw.push(0);
            raw.extend(hex::decode(oid).expect("hex id"));
        }
        git(
            repo,
            &["hash-object", "-t", "tree", "--literally", "-w", "--stdin"],
            &raw,
        )
    }

    fn commit(repo: &Path, tree: &str) -> String {
        git(repo, &["commit-tree", tree, "-m", "hostile"], b"")
    }

    fn new_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tmp");
        git(dir.path(), &["init", "-q", "--bare"], b"");
        dir
    }

    const FLEET: &[u8] = b"defaultNamespace: x\n";
    const CM: &[u8] = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n";

    /// A bundle folder `fleet.yaml` + `cm.yaml`, plus `extra` entries.
    fn bundle(repo: &Path, extra: &[(&str, &[u8], &str)]) -> String {
        let (fleet, cm) = (blob(repo, FLEET), blob(repo, CM));
        let mut entries = vec![
            ("100644", &b"cm.yaml"[..], cm.as_str()),
            ("100644", b"fleet.yaml", fleet.as_str()),
        ];
        entries.extend_from_slice(extra);
        tree(repo, &entries)
    }

    #[test]
    fn a_good_tree_renders_from_the_object_database_without_writing_a_file() {
        let repo = new_repo();
        let app = bundle(repo.path(), &[]);
        let root = tree(repo.path(), &[("40000", b"app", &app)]);
        let c = commit(repo.path(), &root);
        let before = list_files(repo.path());
        let (tree, blobs) = load_tree(repo.path(), &c, &[], &Limits::default()).expect("loads");
        let bundles = discover_tree(&tree, &blobs, "s", &[], &Limits::default());
        assert_eq!(bundles.len(), 1);
        assert!(bundles[0].result.is_ok(), "{:?}", bundles[0].result);
        assert_eq!(list_files(repo.path()), before, "nothing was written");
    }

    fn list_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).expect("read dir").flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
                out.push(e.path());
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_name_with_a_slash_behind_a_symlink_fails_the_whole_tree() {
        let repo = new_repo();
        let outside = tempfile::tempdir().expect("tmp");
        let link = blob(repo.path(), outside.path().to_string_lossy().as_bytes());
        let pwned = blob(repo.path(), b"pwned");
        let root = tree(
            repo.path(),
            &[("120000", b"a", &link), ("100644", b"a/pwned", &pwned)],
        );
        let c = commit(repo.path(), &root);
        let err = load_tree(repo.path(), &c, &[], &Limits::default()).expect_err("refused");
        assert!(
            err.to_string().contains("\"a/pwned\" is refused") && err.to_string().contains("'/'"),
            "{err}"
        );
        assert!(list_files(outside.path()).is_empty());
    }

    #[test]
    fn dot_git_entries_in_any_case_fail_the_whole_tree() {
        let repo = new_repo();
        let hooks = bundle(repo.path(), &[]);
        for name in [&b".git"[..], b".GIT", b".Git."] {
            let root = tree(repo.path(), &[("40000", name, &hooks)]);
            let c = commit(repo.path(), &root);
            let err = load_tree(repo.path(), &c, &[], &Limits::default()).expect_err("refused");
            assert!(err.to_string().contains("'.git' entry"), "{err}");
        }
    }

    #[test]
    fn a_symlink_out_of_the_tree_fails_only_the_bundle_that_reads_it() {
        let repo = new_repo();
        let up = blob(repo.path(), b"../../../etc/hostname");
        let abs = blob(repo.path(), b"/etc/hostname");
        let bad_up = bundle(repo.path(), &[("120000", b"leak.yaml", &up)]);
        let bad_abs = bundle(repo.path(), &[("120000", b"leak.yaml", &abs)]);
        let good = bundle(repo.path(), &[]);
        let root = tree(
            repo.path(),
            &[
                ("40000", b"abs", &bad_abs),
                ("40000", b"good", &good),
                ("40000", b"up", &bad_up),
            ],
        );
        let c = commit(repo.path(), &root);
        let (tree, blobs) = load_tree(repo.path(), &c, &[], &Limits::default()).expect("loads");
        let bundles = discover_tree(&tree, &blobs, "s", &[], &Limits::default());
        let outcome: Vec<(&str, String)> = bundles
            .iter()
            .map(|b| {
                let text = match &b.result {
                    Ok(_) => "ok".to_string(),
                    Err(d) => d.iter().map(ToString::to_string).collect(),
                };
                (b.path.as_str(), text)
            })
            .collect();
        assert_eq!(outcome[1], ("good", "ok".to_string()));
        assert!(outcome[0].1.contains("absolute path"), "{outcome:?}");
        assert!(outcome[2].1.contains("escapes the repo"), "{outcome:?}");
    }

    #[test]
    fn blob_sizes_are_read_from_headers_and_a_repo_over_budget_fails_with_a_clear_error() {
        let repo = new_repo();
        let zeros = blob(repo.path(), &vec![0u8; 3 << 20]);
        let app = bundle(repo.path(), &[("100644", b"zeros.bin", &zeros)]);
        let root = tree(repo.path(), &[("40000", b"app", &app)]);
        let c = commit(repo.path(), &root);
        let limits = Limits {
            max_tree_blob_bytes: 1 << 20,
            ..Limits::default()
        };
        let err = load_tree(repo.path(), &c, &["app".into()], &limits).expect_err("over budget");
        assert!(
            err.to_string()
                .contains("app/zeros.bin is 3145728 bytes, over the limit of 1048576"),
            "{err}"
        );
        // Outside the source's paths the blob costs nothing until a bundle reads it.
        let docs = tree(repo.path(), &[("100644", b"zeros.bin", &zeros)]);
        let good = bundle(repo.path(), &[]);
        let root = tree(
            repo.path(),
            &[("40000", b"app", &good), ("40000", b"docs", &docs)],
        );
        let c = commit(repo.path(), &root);
        load_tree(repo.path(), &c, &["app".into()], &limits).expect("docs/ is not budgeted");
    }

    #[test]
    fn a_name_holding_nul_leaves_a_tree_that_does_not_parse_and_is_refused() {
        let repo = new_repo();
        let pwned = blob(repo.path(), b"pwned");
        let root = tree(repo.path(), &[("100644", b"x\0../../pwned", &pwned)]);
        let c = commit(repo.path(), &root);
        let err = load_tree(repo.path(), &c, &[], &Limits::default()).expect_err("refused");
        assert!(
            err.to_string().starts_with(&format!("commit {c}: ")),
            "{err}"
        );
    }

    #[test]
    fn a_fetch_refuses_an_object_over_the_blob_budget() {
        let work = tempfile::tempdir().expect("tmp");
        git(work.path(), &["init", "-q", "-b", "main"], b"");
        std::fs::write(work.path().join("zeros.bin"), vec![0u8; 3 << 20]).expect("write");
        git(work.path(), &["add", "-A"], b"");
        git(work.path(), &["commit", "-q", "-m", "zeros"], b"");
        let url = format!("file://{}", work.path().display());
        let mirrors = tempfile::tempdir().expect("tmp");

        let err = fetch_branch(&mirrors.path().join("small"), &url, "main", 1 << 20)
            .expect_err("over the budget");
        assert!(
            err.to_string()
                .contains("an object is over the limit of 1048576 bytes"),
            "{err}"
        );
        fetch_branch(&mirrors.path().join("big"), &url, "main", 4 << 20).expect("within");
    }

    #[test]
    fn a_pinned_commit_or_tag_is_deployed_instead_of_the_head_and_an_unknown_one_is_an_error() {
        let work = tempfile::tempdir().expect("tmp");
        git(work.path(), &["init", "-q", "-b", "main"], b"");
        std::fs::write(work.path().join("a.yaml"), "a: 1\n").expect("write");
        git(work.path(), &["add", "-A"], b"");
        git(work.path(), &["commit", "-q", "-m", "one"], b"");
        let first = git(work.path(), &["rev-parse", "HEAD"], b"");
        git(work.path(), &["tag", "-a", "v1", "-m", "v1"], b"");
        std::fs::write(work.path().join("a.yaml"), "a: 2\n").expect("write");
        git(work.path(), &["commit", "-q", "-am", "two"], b"");
        let head = git(work.path(), &["rev-parse", "HEAD"], b"");
        let url = format!("file://{}", work.path().display());
        let mirror = tempfile::tempdir().expect("tmp");
        let access = Access::default();
        let at = |revision: Option<&str>| {
            let remote = Remote {
                url: &url,
                branch: "main",
                revision,
                access: &access,
            };
            fetch(&mirror.path().join("m"), &remote, 1 << 20)
        };
        assert_eq!(at(None).expect("head"), head);
        assert_eq!(at(Some(&first)).expect("commit"), first);
        assert_eq!(at(Some("v1")).expect("annotated tag, peeled"), first);
        let missing = "0".repeat(40);
        for bad in ["v9", missing.as_str()] {
            let err = at(Some(bad)).expect_err("unknown");
            assert!(
                matches!(err, GitError::RevisionNotFound { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_ssh_command_trusts_only_the_given_files_and_quotes_them() {
        let access = Access {
            ssh_key: Some(PathBuf::from("/data/it's/key")),
            ..Access::default()
        };
        let cmd = access.ssh_command(Path::new("/m/ssh.log"));
        assert!(cmd.starts_with("ssh -F /dev/null "), "{cmd}");
        for part in [
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile='/dev/null'",
            "GlobalKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            "BatchMode=yes",
            r"-i '/data/it'\''s/key'",
        ] {
            assert!(cmd.contains(part), "{part} in {cmd}");
        }
    }

    #[test]
    fn a_symlink_blob_larger_than_a_path_is_refused_before_it_is_read() {
        let repo = new_repo();
        let long = blob(repo.path(), &vec![b'a'; 5000]);
        let root = tree(repo.path(), &[("120000", b"link", &long)]);
        let c = commit(repo.path(), &root);
        let err = load_tree(repo.path(), &c, &[], &Limits::default()).expect_err("refused");
        assert!(
            err.to_string().contains("over the limit of 4096 bytes"),
            "{err}"
        );
    }

    #[test]
    fn a_tree_with_too_many_entries_is_refused_before_its_object_is_read() {
        let repo = new_repo();
        let app = bundle(repo.path(), &[]);
        let root = tree(repo.path(), &[("40000", b"app", &app)]);
        let c = commit(repo.path(), &root);
        let limits = Limits {
            max_tree_entries: 1,
            ..Limits::default()
        };
        let err = load_tree(repo.path(), &c, &[], &limits).expect_err("refused");
        assert!(err.to_string().contains("more than 1 entries"), "{err}");
    }
}
