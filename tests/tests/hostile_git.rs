//! Red-team suite, git input: each hostile tree is built with git plumbing (names that
//! `git mktree` refuses are written byte by byte with `hash-object --literally`),
//! committed on top of a good revision, served by `git daemon`, and polled by a real hub
//! with a real spoke. Each case checks what an attacker wanted: that nothing outside the
//! hub's own folders changed (a canary folder), that the hub's trust files are the same,
//! also after a restart, that the source or the bundle shows a clear error, and that the
//! good bundle of the previous revision stays deployed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla_e2e::{
    GitServer, Hub, Repo, Spoke, configmap, git_with_input, wait_until, write_file,
};

const BUNDLE: &str = "hostile-app";

/// A hub polling a repo whose first commit holds one good bundle, deployed to a spoke.
struct Scenario {
    tmp: tempfile::TempDir,
    _git: GitServer,
    repo: Repo,
    hub: Hub,
    spoke: Spoke,
    canary: PathBuf,
    deployed: String,
    trust: BTreeMap<String, String>,
}

impl Scenario {
    fn start() -> Scenario {
        Self::start_with(&[])
    }

    /// Like `start`, with extra `flotilla-hub run` flags.
    fn start_with(hub_args: &[&str]) -> Scenario {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        write_file(&src, "app/fleet.yaml", "defaultNamespace: app\n");
        write_file(&src, "app/cm.yaml", &configmap("good", "v1"));
        let git = GitServer::start(&tmp.path().join("git"));
        let repo = git.repo_from("fleet", &src);
        // Stream big blobs when serving them instead of delta-searching them in memory.
        git_with_input(&repo.dir, &["config", "core.bigFileThreshold", "1m"], b"");
        let canary = tmp.path().join("canary");
        write_file(&canary, "untouched.txt", "canary");
        let hub = Hub::start_with(tmp.path(), hub_args);
        hub.add_source("hostile", &repo.url, "");
        let join = hub.token("1h", 1);
        let spoke = Spoke::start(tmp.path(), &join, "dev", "env=dev");
        hub.wait_ready_bundles("dev", &[BUNDLE]);
        let deployed = spoke.file(BUNDLE).expect("the good bundle is deployed");
        let trust = trust_files(&hub.dir);
        assert!(trust.contains_key("ca.pem") && trust.contains_key("trust.pem"));
        Scenario {
            tmp,
            _git: git,
            repo,
            hub,
            spoke,
            canary,
            deployed,
            trust,
        }
    }

    /// Commits `tree` on top of `main`, as a push would.
    fn push_tree(&self, tree: &str) {
        let head = git_with_input(&self.repo.dir, &["rev-parse", "HEAD"], b"");
        let commit = git_with_input(
            &self.repo.dir,
            &["commit-tree", tree, "-p", &head, "-m", "hostile"],
            b"",
        );
        git_with_input(
            &self.repo.dir,
            &["update-ref", "refs/heads/main", &commit],
            b"",
        );
    }

    fn blob(&self, content: &[u8]) -> String {
        git_with_input(&self.repo.dir, &["hash-object", "-w", "--stdin"], content)
    }

    /// A tree object written byte by byte, so that it may hold any name.
    fn tree(&self, entries: &[(&str, &[u8], &str)]) -> String {
        let mut raw = Vec::new();
        for (mode, name, oid) in entries {
            raw.extend_from_slice(mode.as_bytes());
            raw.push(b' ');
            raw.extend_from_slice(name);
            raw.push(0);
            raw.extend(hex::decode(oid).expect("hex object id"));
        }
        git_with_input(
            &self.repo.dir,
            &["hash-object", "-t", "tree", "--literally", "-w", "--stdin"],
            &raw,
        )
    }

    /// The id of `path` in the first (good) commit's tree.
    fn good(&self, path: &str) -> String {
        git_with_input(&self.repo.dir, &["rev-parse", &format!("HEAD:{path}")], b"")
    }

    fn source(&self) -> serde_json::Value {
        self.hub.json(&["sources"])[0].clone()
    }

    /// Waits until the source shows an error containing `needle`.
    fn wait_source_error(&self, needle: &str) -> String {
        wait_until(
            &format!("the source to show an error with {needle:?}"),
            || {
                let error = self.source()["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if error.contains(needle) {
                    Ok(error)
                } else {
                    Err(error)
                }
            },
        )
    }

    /// Everything an attacker aimed at is as it was, and the good bundle stays deployed.
    fn assert_unharmed(&self) {
        // A source error leaves the bundle as it was: Ready.
        self.assert_unharmed_showing("Ready");
    }

    /// As `assert_unharmed`, with the bundle's state on the hub: `ErrApplied` when the
    /// bundle itself failed to load (its last good version still runs on the spoke).
    fn assert_unharmed_showing(&self, state: &str) {
        assert_eq!(
            files_under(&self.canary),
            vec![("untouched.txt".to_string(), "canary".to_string())],
            "nothing outside the hub's folders changed"
        );
        assert_eq!(
            trust_files(&self.hub.dir),
            self.trust,
            "the hub's trust is unchanged"
        );
        assert_eq!(
            self.spoke.file(BUNDLE).as_deref(),
            Some(self.deployed.as_str()),
            "the last good revision stays deployed"
        );
        let rows = self.hub.status();
        assert!(
            rows.contains(&("dev".into(), BUNDLE.into(), state.into())),
            "{rows:?}"
        );
        let stray: Vec<_> = files_under(self.tmp.path())
            .into_iter()
            .filter(|(p, _)| p.ends_with("pwned") || p.contains("checkout-"))
            .collect();
        assert!(
            stray.is_empty(),
            "no file of the tree reached the disk: {stray:?}"
        );
    }

    /// Restarts the hub and checks that it still trusts only its own CAs and still
    /// refuses the revision.
    fn assert_unharmed_after_restart(&mut self, needle: &str) {
        self.hub.restart();
        self.wait_source_error(needle);
        // The spoke reconnects after its backoff; until then the bundle shows Offline.
        wait_until("the spoke to reconnect after the restart", || {
            let c = self.hub.json(&["clusters"]);
            (c[0]["connected"] == true)
                .then_some(())
                .ok_or(c.to_string())
        });
        self.assert_unharmed();
    }
}

/// The hub's trust material: every `ca*.pem` and `trust.pem`, by name, with contents.
fn trust_files(data_dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(data_dir)
        .expect("hub data dir")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let is_trust =
                (name.starts_with("ca") && name.ends_with(".pem")) || name == "trust.pem";
            is_trust.then(|| (name, std::fs::read_to_string(e.path()).unwrap_or_default()))
        })
        .collect()
}

/// Every file under `dir` (symlinks not followed), relative, with its text if it is small.
fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(dir)
                .map(|p| p.to_string_lossy().to_string())
                .unwrap_or_default();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(t) if t.is_file() && e.metadata().is_ok_and(|m| m.len() < 4096) => {
                    out.push((rel, std::fs::read_to_string(&path).unwrap_or_default()));
                }
                _ => out.push((rel, String::new())),
            }
        }
    }
    out.sort();
    out
}

const PEM: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIBattacker\n-----END CERTIFICATE-----\n";

#[test]
fn a_blob_named_through_a_symlink_to_an_outside_folder_writes_nothing_there() {
    let mut s = Scenario::start();
    let link = s.blob(s.canary.to_string_lossy().as_bytes());
    let pwned = s.blob(b"pwned");
    let tree = s.tree(&[
        ("120000", b"a", &link),
        ("100644", b"a/pwned", &pwned),
        ("40000", b"app", &s.good("app")),
    ]);
    s.push_tree(&tree);

    let error = s.wait_source_error("\"a/pwned\" is refused");
    assert!(error.contains("'/'"), "{error}");
    s.assert_unharmed();
    s.assert_unharmed_after_restart("\"a/pwned\" is refused");
}

#[test]
fn a_ca_planted_through_a_parent_symlink_is_never_trusted_even_after_a_restart() {
    let mut s = Scenario::start();
    let link = s.blob(b"../../..");
    let ca = s.blob(PEM);
    let tree = s.tree(&[
        ("40000", b"app", &s.good("app")),
        ("120000", b"d", &link),
        ("100644", b"d/ca-previous.pem", &ca),
    ]);
    s.push_tree(&tree);

    s.wait_source_error("\"d/ca-previous.pem\" is refused");
    assert!(!s.hub.dir.join("ca-previous.pem").exists());
    s.assert_unharmed();
    s.assert_unharmed_after_restart("\"d/ca-previous.pem\" is refused");
}

#[test]
fn a_symlink_to_an_absolute_path_fails_only_the_bundle_that_reads_it() {
    let s = Scenario::start();
    let abs = s.blob(b"/etc/hostname");
    let up = s.blob(b"../../../../../../etc/hostname");
    let canary = s.blob(s.canary.to_string_lossy().as_bytes());
    let app = s.tree(&[
        ("100644", b"cm.yaml", &s.good("app/cm.yaml")),
        ("100644", b"fleet.yaml", &s.good("app/fleet.yaml")),
        ("120000", b"leak.yaml", &abs),
        ("120000", b"up.yaml", &up),
    ]);
    let tree = s.tree(&[("40000", b"app", &app), ("120000", b"canary", &canary)]);
    s.push_tree(&tree);

    let error = wait_until("the bundle to show its error", || {
        let b = &s.hub.json(&["bundles"])[0];
        let e = b["error"].as_str().unwrap_or_default().to_string();
        if e.is_empty() {
            Err(b.to_string())
        } else {
            Ok(e)
        }
    });
    assert!(
        error.contains("app/leak.yaml") && error.contains("absolute path \"/etc/hostname\""),
        "{error}"
    );
    assert_eq!(
        s.source()["error"],
        "",
        "a bundle's error is its own, not the source's"
    );
    s.assert_unharmed_showing("ErrApplied");
}

#[test]
fn a_dot_git_folder_in_the_tree_fails_the_revision() {
    let mut s = Scenario::start();
    let hook = s.blob(b"[core]\n\tfsmonitor = touch /tmp/flotilla-pwned\n");
    let git_dir = s.tree(&[("100644", b"config", &hook)]);
    let tree = s.tree(&[
        ("40000", b".GIT", &git_dir),
        ("40000", b"app", &s.good("app")),
    ]);
    s.push_tree(&tree);

    s.wait_source_error("'.git' entry");
    s.assert_unharmed();
    s.assert_unharmed_after_restart("'.git' entry");
}

#[test]
fn a_tree_whose_entry_name_holds_nul_is_refused_as_corrupt() {
    let s = Scenario::start();
    let pwned = s.blob(b"pwned");
    // A NUL ends a name in the tree format: what follows is read as the object id, so
    // the tree no longer parses.
    let tree = s.tree(&[
        ("40000", b"app", &s.good("app")),
        ("100644", b"x\0../../pwned", &pwned),
    ]);
    s.push_tree(&tree);

    let error = wait_until("the source to show an error", || {
        let e = s.source()["error"].as_str().unwrap_or_default().to_string();
        if e.is_empty() { Err(e) } else { Ok(e) }
    });
    // git itself may already refuse to serve it (the fetch fails) or the hub refuses the
    // tree; either way it is the source's error.
    assert!(
        error.contains("commit ") || error.contains("git fetch"),
        "{error}"
    );
    s.assert_unharmed();
}

#[test]
fn a_huge_zero_blob_is_refused_while_fetching_and_the_hub_stays_small() {
    // 200 MiB of zeros compress to about 200 KiB in git: a tiny repo, a huge file.
    let s = Scenario::start_with(&["--max-blob-bytes", "1048576"]);
    let zeros = zero_blob(&s, "200M");
    let app = s.tree(&[
        ("100644", b"cm.yaml", &s.good("app/cm.yaml")),
        ("100644", b"fleet.yaml", &s.good("app/fleet.yaml")),
        ("100644", b"zeros.yaml", &zeros),
    ]);
    let tree = s.tree(&[("40000", b"app", &app)]);
    s.push_tree(&tree);

    let error = s.wait_source_error("an object is over the limit of 1048576 bytes");
    assert!(error.starts_with("git fetch"), "{error}");
    s.assert_unharmed();
    let peak = peak_rss_bytes(s.hub.proc.child.id());
    assert!(
        peak < 100 << 20,
        "the hub never held the blob: peak RSS {peak} bytes"
    );
}

#[test]
fn files_over_the_total_budget_fail_the_source_from_their_headers() {
    let s = Scenario::start_with(&["--max-tree-bytes", "1048576"]);
    let zeros = zero_blob(&s, "600K");
    let app = s.tree(&[
        ("100644", b"a.bin", &zeros),
        ("100644", b"b.bin", &zeros),
        ("100644", b"cm.yaml", &s.good("app/cm.yaml")),
        ("100644", b"fleet.yaml", &s.good("app/fleet.yaml")),
    ]);
    let tree = s.tree(&[("40000", b"app", &app)]);
    s.push_tree(&tree);

    let error = s.wait_source_error("add up to more than 1048576 bytes");
    assert!(error.contains("(at app/b.bin)"), "{error}");
    s.assert_unharmed();
}

/// A blob of `size` zeros (`head -c` syntax), written straight into the repo.
fn zero_blob(s: &Scenario, size: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {size} /dev/zero | git hash-object -w --stdin"
        ))
        .current_dir(&s.repo.dir)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The peak resident set size of a process (`VmHWM`), in bytes.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM in /proc status")
}
