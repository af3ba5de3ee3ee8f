//! Finding bundles and their files: which folders under a source's paths are bundles
//! (`fleet.yaml` / `flotilla.yaml`, nested allowed; a path with neither is one raw bundle),
//! which YAML files belong to a bundle (not those of nested bundles, `overlays/`, hidden or
//! `.fleetignore`d ones), and the DNS-safe stable bundle names.

use sha2::{Digest, Sha256};

use crate::diagnostic::Diagnostic;
use crate::repo_fs::{Backend, Fs, Kind, join};

pub(crate) const BUNDLE_FILES: &[&str] = &["flotilla.yaml", "fleet.yaml"];
pub(crate) const KUSTOMIZATION_FILES: &[&str] =
    &["kustomization.yaml", "kustomization.yml", "Kustomization"];
const IGNORE_FILE: &str = ".fleetignore";

/// `.fleetignore` patterns in force for some directory.
#[derive(Debug, Clone, Default)]
pub(crate) struct IgnoreRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// Directory of the `.fleetignore` that holds the rule.
    base: String,
    pattern: String,
    dir_only: bool,
    /// A pattern with an inner `/` matches the path below `base`, otherwise any name.
    anchored: bool,
}

impl IgnoreRules {
    /// The rules of every `.fleetignore` from the repo root down to `dir`.
    pub(crate) fn for_dir(fs: &dyn Fs, dir: &str) -> Self {
        let mut rules = IgnoreRules::default();
        let mut cur = String::new();
        rules.add_from(fs, &cur);
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            cur = if cur.is_empty() {
                part.to_string()
            } else {
                format!("{cur}/{part}")
            };
            rules.add_from(fs, &cur);
        }
        rules
    }

    /// Adds the rules of `dir/.fleetignore`, if there is one.
    pub(crate) fn add_from(&mut self, fs: &dyn Fs, dir: &str) {
        let Ok(path) = join(dir, IGNORE_FILE) else {
            return;
        };
        if fs.kind(&path) != Kind::File {
            return;
        }
        let Ok(text) = fs.read(&path) else {
            return;
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let dir_only = line.ends_with('/');
            let pattern = line.trim_end_matches('/').trim_start_matches('/');
            if pattern.is_empty() {
                continue;
            }
            self.rules.push(Rule {
                base: dir.to_string(),
                anchored: line.trim_end_matches('/').contains('/'),
                pattern: pattern.to_string(),
                dir_only,
            });
        }
    }

    pub(crate) fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        let name = crate::repo_fs::file_name(rel);
        self.rules.iter().any(|r| {
            if r.dir_only && !is_dir {
                return false;
            }
            let below = if r.base.is_empty() {
                Some(rel)
            } else {
                rel.strip_prefix(&r.base).and_then(|s| s.strip_prefix('/'))
            };
            let Some(below) = below else {
                return false;
            };
            if r.anchored {
                glob_match(&r.pattern, below)
            } else {
                glob_match(&r.pattern, name)
            }
        })
    }
}

/// Shell-style glob: `*` and `?` stay within one path segment, `**` crosses segments,
/// `[abc]`/`[a-z]`/`[!x]` classes.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = p[2..].strip_prefix(&['/']).unwrap_or(&p[2..]);
            (0..=t.len()).any(|i| glob_at(rest, &t[i..]))
        }
        Some('*') => {
            let mut i = 0;
            loop {
                if glob_at(&p[1..], &t[i..]) {
                    return true;
                }
                if i >= t.len() || t[i] == '/' {
                    return false;
                }
                i += 1;
            }
        }
        Some('?') => t.first().is_some_and(|c| *c != '/') && glob_at(&p[1..], &t[1..]),
        Some('[') => {
            let Some(c) = t.first() else {
                return false;
            };
            let Some(close) = p.iter().skip(1).position(|c| *c == ']').map(|i| i + 1) else {
                return *c == '[' && glob_at(&p[1..], &t[1..]);
            };
            let class = &p[1..close];
            let (negated, class) = match class.first() {
                Some('!') | Some('^') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= *c && *c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == *c;
                    i += 1;
                }
            }
            hit != negated && glob_at(&p[close + 1..], &t[1..])
        }
        Some(ch) => t.first() == Some(ch) && glob_at(&p[1..], &t[1..]),
    }
}

/// The bundle file (`flotilla.yaml` wins over `fleet.yaml`) of `dir`, if any.
pub(crate) fn bundle_file(fs: &dyn Fs, dir: &str) -> Option<String> {
    BUNDLE_FILES
        .iter()
        .filter_map(|f| join(dir, f).ok())
        .find(|p| fs.kind(p) == Kind::File)
}

/// Folders under `start` (itself included) that hold a bundle file, in path order.
pub(crate) fn find_bundle_dirs(fs: &dyn Fs, start: &str) -> Vec<String> {
    let mut found = Vec::new();
    let rules = IgnoreRules::for_dir(fs, start);
    walk_dirs(fs, start, rules, &mut found);
    found
}

fn walk_dirs(fs: &dyn Fs, dir: &str, rules: IgnoreRules, found: &mut Vec<String>) {
    if bundle_file(fs, dir).is_some() {
        found.push(dir.to_string());
    }
    let Ok(entries) = fs.list(dir) else {
        return;
    };
    for e in entries.iter() {
        if !e.is_dir || e.is_symlink || e.name.starts_with('.') {
            continue;
        }
        let Ok(sub) = join(dir, &e.name) else {
            continue;
        };
        if rules.is_ignored(&sub, true) {
            continue;
        }
        let mut sub_rules = rules.clone();
        sub_rules.add_from(fs, &sub);
        walk_dirs(fs, &sub, sub_rules, found);
    }
}

fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// The YAML resource files of the bundle at `dir`, sorted; `nested` are warnings about
/// nested bundles left out.
pub(crate) fn resource_files(
    fs: &dyn Fs,
    dir: &str,
) -> Result<(Vec<String>, Vec<String>), Vec<Diagnostic>> {
    let mut files = Vec::new();
    let mut nested = Vec::new();
    let mut errors = Vec::new();
    let rules = IgnoreRules::for_dir(fs, dir);
    walk_files(fs, dir, dir, rules, &mut files, &mut nested, &mut errors);
    if errors.is_empty() {
        files.sort();
        Ok((files, nested))
    } else {
        Err(errors)
    }
}

fn walk_files(
    fs: &dyn Fs,
    root: &str,
    dir: &str,
    rules: IgnoreRules,
    files: &mut Vec<String>,
    nested: &mut Vec<String>,
    errors: &mut Vec<Diagnostic>,
) {
    let entries = match fs.list(dir) {
        Ok(e) => e,
        Err(d) => {
            errors.push(d);
            return;
        }
    };
    for e in entries.iter() {
        if e.name.starts_with('.') {
            continue;
        }
        let Ok(path) = join(dir, &e.name) else {
            continue;
        };
        if rules.is_ignored(&path, e.is_dir) {
            continue;
        }
        if e.is_dir {
            if e.is_symlink || (dir == root && e.name == "overlays") {
                continue;
            }
            if bundle_file(fs, &path).is_some() {
                nested.push(path);
                continue;
            }
            let mut sub_rules = rules.clone();
            sub_rules.add_from(fs, &path);
            walk_files(fs, root, &path, sub_rules, files, nested, errors);
            continue;
        }
        if e.name == "Chart.yaml" {
            errors.push(Diagnostic::new(
                &path,
                "a Helm chart inside a raw YAML bundle: make its folder a bundle of its own, \
                 or point helm.chart in fleet.yaml at it (see docs/bundles.md)",
            ));
            continue;
        }
        let is_bundle_file = dir == root && BUNDLE_FILES.contains(&e.name.as_str());
        if is_yaml(&e.name) && !is_bundle_file && !KUSTOMIZATION_FILES.contains(&e.name.as_str()) {
            files.push(path);
        }
    }
}

const MAX_NAME: usize = 63;

/// The DNS-label bundle name for `path` (repo-relative) of source `source`: lowercase
/// `[a-z0-9-]`, at most 63 characters; a longer name keeps its head and gets an 8-hex
/// hash of the full source/path, so it stays unique and stable.
pub(crate) fn bundle_name(source: &str, path: &str) -> String {
    let raw = if path.is_empty() {
        source.to_string()
    } else {
        format!("{source}-{path}")
    };
    let mut name = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (name.is_empty() || name.ends_with('-')) {
            continue;
        }
        name.push(c);
    }
    while name.ends_with('-') {
        name.pop();
    }
    if name.is_empty() {
        name.push_str("bundle");
    }
    if name.len() <= MAX_NAME {
        return name;
    }
    with_hash(&name, source, path)
}

/// `name` cut to fit, plus `-` and 8 hex of sha256("source/path").
pub(crate) fn with_hash(name: &str, source: &str, path: &str) -> String {
    let hash = hex::encode(Sha256::digest(format!("{source}/{path}").as_bytes()));
    let keep = MAX_NAME - 9;
    let mut head: String = name.chars().take(keep).collect();
    while head.ends_with('-') {
        head.pop();
    }
    format!("{head}-{}", &hash[..8])
}

/// Finds the bundles under `paths` of the repo served by `repo` and loads each on its own.
pub(crate) fn discover<B: Backend + Clone>(
    repo: B,
    source: &str,
    paths: &[String],
    limits: &crate::Limits,
) -> Vec<crate::LoadedBundle> {
    use std::collections::{BTreeMap, BTreeSet};

    let fs = crate::repo_fs::Recorder::new(repo.clone(), limits);
    let roots: Vec<String> = if paths.is_empty() {
        vec![String::new()]
    } else {
        paths.to_vec()
    };
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let mut broken: BTreeMap<String, Diagnostic> = BTreeMap::new();
    for p in &roots {
        let norm = match join("", p) {
            Ok(n) => n,
            Err(m) => {
                broken.insert(p.clone(), Diagnostic::new(p, m));
                continue;
            }
        };
        if fs.kind(&norm) != Kind::Dir {
            broken.insert(
                norm.clone(),
                Diagnostic::new(&norm, "path not found in the repo"),
            );
            continue;
        }
        let found = find_bundle_dirs(&fs, &norm);
        if found.is_empty() {
            dirs.insert(norm);
        } else {
            dirs.extend(found);
        }
    }
    let all: BTreeSet<&String> = dirs.iter().chain(broken.keys()).collect();
    let mut names: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for d in &all {
        names.entry(bundle_name(source, d)).or_default().push(d);
    }
    let mut name_of: BTreeMap<&String, String> = BTreeMap::new();
    for (name, owners) in names {
        let unique = owners.len() == 1;
        for d in owners {
            let n = if unique {
                name.clone()
            } else {
                with_hash(&name, source, d)
            };
            name_of.insert(d, n);
        }
    }
    let mut out: Vec<crate::LoadedBundle> = Vec::new();
    for d in all {
        let name = name_of
            .get(d)
            .cloned()
            .unwrap_or_else(|| bundle_name(source, d));
        let result = match broken.get(d) {
            Some(diag) => Err(vec![diag.clone()]),
            None => crate::bundle::load(repo.clone(), d, &name, limits, false),
        };
        out.push(crate::LoadedBundle {
            name,
            path: d.clone(),
            result,
        });
    }
    apply_fleet_names(source, &mut out);
    out
}

/// Renames the bundles whose fleet.yaml sets `name:` to `<source>-<name>` (DNS-safe, as
/// path names are), and fails every bundle whose name another one also has: a name is
/// what `dependsOn` and the hub's state key on, so it must be unique.
fn apply_fleet_names(source: &str, bundles: &mut [crate::LoadedBundle]) {
    use std::collections::BTreeMap;

    for lb in bundles.iter_mut() {
        if let Ok(b) = &mut lb.result
            && let Some(n) = b.fleet_name()
        {
            let name = bundle_name(source, n);
            b.rename(name.clone());
            lb.name = name;
        }
    }
    let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for lb in bundles.iter() {
        paths
            .entry(lb.name.clone())
            .or_default()
            .push(lb.path.clone());
    }
    for lb in bundles.iter_mut() {
        let Some(all) = paths.get(&lb.name).filter(|p| p.len() > 1) else {
            continue;
        };
        let shown: Vec<String> = all
            .iter()
            .map(|p| if p.is_empty() { ".".into() } else { p.clone() })
            .collect();
        lb.result = Err(vec![Diagnostic::new(
            &lb.path,
            format!(
                "bundle name {} is used by several folders ({}); give each a different `name:` in its fleet.yaml",
                lb.name,
                shown.join(", ")
            ),
        )]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_safe_and_stable() {
        assert_eq!(bundle_name("infra", ""), "infra");
        assert_eq!(bundle_name("infra", "apps/Web_App"), "infra-apps-web-app");
        assert_eq!(bundle_name("My.Repo", "/a//b/"), "my-repo-a-b");
        let long = bundle_name("fleet", &"very-long-folder-name/".repeat(5));
        assert_eq!(long.len(), 63);
        assert_eq!(
            long,
            bundle_name("fleet", &"very-long-folder-name/".repeat(5))
        );
        assert_ne!(
            long,
            bundle_name("fleet", &"very-long-folder-name/".repeat(6))
        );
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.yaml", "a.yaml"));
        assert!(!glob_match("*.yaml", "a/b.yaml"));
        assert!(glob_match("**/b.yaml", "a/c/b.yaml"));
        assert!(glob_match("te?t[0-9]", "test7"));
        assert!(!glob_match("te?t[!0-9]", "test7"));
        assert!(glob_match("secret*", "secret-values.yaml"));
    }
}
