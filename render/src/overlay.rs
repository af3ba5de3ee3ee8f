//! Fleet's `yaml.overlays`: folders under `<bundle>/overlays/`, applied in the order listed.
//! `X_patch.yaml` patches `X.yaml` (a YAML list is an RFC 6902 JSON patch; a map is a
//! strategic merge for built-in kinds and an RFC 7386 merge for others); any other file
//! adds to or replaces the bundle file of the same relative path.

use serde_json::Value;

use crate::budget::{Budget, json_size};
use crate::diagnostic::{Diagnostic, Diags};
use crate::repo_fs::{Kind, join};
use crate::sources::{LayerFile, Sources};
use crate::strategic_merge::{self, Outcome};
use crate::yaml::Doc;
use crate::{json_patch, scope};

/// Lays the named overlays of the bundle at `bundle_dir` over `sources`.
pub(crate) fn apply_overlays(
    sources: &mut Sources<'_>,
    bundle_dir: &str,
    fleet_file: &str,
    overlays: &[String],
) -> Diags<()> {
    for name in overlays {
        let dir = join(bundle_dir, &format!("overlays/{name}"))
            .map_err(|e| vec![Diagnostic::new(fleet_file, e)])?;
        if sources.fs.kind(&dir) != Kind::Dir {
            return Err(vec![Diagnostic::new(
                fleet_file,
                format!("overlay {name:?} not found: no folder {dir}"),
            )]);
        }
        let mut files = Vec::new();
        collect(sources, &dir, &mut files)?;
        for file in files {
            let rel = file
                .strip_prefix(&format!("{dir}/"))
                .unwrap_or(&file)
                .to_string();
            apply_file(sources, bundle_dir, &file, &rel)?;
        }
    }
    Ok(())
}

fn collect(sources: &Sources<'_>, dir: &str, out: &mut Vec<String>) -> Diags<()> {
    let entries = sources.fs.list(dir).map_err(|d| vec![d])?;
    for e in entries.iter() {
        if e.name.starts_with('.') || e.is_symlink && e.is_dir {
            continue;
        }
        let path = join(dir, &e.name).map_err(|m| vec![Diagnostic::new(dir, m)])?;
        if e.is_dir {
            collect(sources, &path, out)?;
        } else if e.name.ends_with(".yaml") || e.name.ends_with(".yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Splits `a/b_patch.yaml` into `a/b` and the extension.
fn patch_target(rel: &str) -> Option<(&str, &str)> {
    for ext in [".yaml", ".yml"] {
        if let Some(stem) = rel.strip_suffix(ext) {
            return stem.strip_suffix("_patch").map(|s| (s, ext));
        }
    }
    None
}

fn apply_file(sources: &mut Sources<'_>, bundle_dir: &str, file: &str, rel: &str) -> Diags<()> {
    let Some((stem, _)) = patch_target(rel) else {
        let target = join(bundle_dir, rel).map_err(|m| vec![Diagnostic::new(file, m)])?;
        let docs = sources.base_docs(file)?;
        sources
            .layer
            .insert(target, LayerFile::new(file.to_string(), docs));
        return Ok(());
    };
    let candidates: Vec<String> = [".yaml", ".yml"]
        .iter()
        .filter_map(|ext| join(bundle_dir, &format!("{stem}{ext}")).ok())
        .collect();
    let Some(target) = candidates.iter().find(|c| sources.exists(c)).cloned() else {
        return Err(vec![Diagnostic::new(
            file,
            format!(
                "patch target does not exist: no {}",
                candidates.first().map(String::as_str).unwrap_or(stem)
            ),
        )]);
    };
    let (target_file, mut docs) = sources.docs(&target)?;
    let patches = sources.base_docs(file)?;
    for p in &patches {
        patch_docs(&mut docs, p, file, sources.budget)?;
    }
    sources
        .layer
        .insert(target, LayerFile::new(target_file, docs));
    Ok(())
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Applies one patch document to the documents of a file. A map patch that names a kind
/// or name applies to the matching documents only; otherwise to every document.
fn patch_docs(docs: &mut Vec<Doc>, patch: &Doc, file: &str, budget: &Budget) -> Diags<()> {
    let err = |m: String| vec![Diagnostic::at(file, patch.line, m)];
    match &patch.value {
        Value::Array(ops) => {
            for d in docs.iter_mut() {
                json_patch::apply(&mut d.value, ops, budget)
                    .map_err(|e| err(format!("JSON patch failed: {e}")))?;
            }
            Ok(())
        }
        Value::Object(_) => {
            // A merge adds at most the patch to each document it touches.
            let patch_bytes = json_size(&patch.value);
            let want_kind = str_at(&patch.value, &["kind"]);
            let want_name = str_at(&patch.value, &["metadata", "name"]);
            let mut matched = false;
            let mut keep = Vec::with_capacity(docs.len());
            for mut d in std::mem::take(docs) {
                let hit = want_kind.is_none_or(|k| str_at(&d.value, &["kind"]) == Some(k))
                    && want_name.is_none_or(|n| str_at(&d.value, &["metadata", "name"]) == Some(n));
                if !hit {
                    keep.push(d);
                    continue;
                }
                matched = true;
                budget
                    .work(1)
                    .and_then(|()| budget.bytes(patch_bytes))
                    .map_err(|e| err(e.to_string()))?;
                let api_version = str_at(&d.value, &["apiVersion"]).unwrap_or("").to_string();
                let kind = str_at(&d.value, &["kind"]).unwrap_or("").to_string();
                if scope::is_builtin(&api_version) {
                    match strategic_merge::apply(&mut d.value, &patch.value, &kind) {
                        Ok(Outcome::Kept) => keep.push(d),
                        Ok(Outcome::Deleted) => {}
                        Err(e) => return Err(err(format!("strategic merge failed: {e}"))),
                    }
                } else {
                    json_patch::merge_patch(&mut d.value, &patch.value);
                    keep.push(d);
                }
            }
            *docs = keep;
            if matched {
                Ok(())
            } else {
                Err(err(format!(
                    "patch target does not exist: no document with kind {} and name {}",
                    want_kind.unwrap_or("*"),
                    want_name.unwrap_or("*")
                )))
            }
        }
        _ => Err(err(
            "a patch must be a YAML list (JSON patch) or a map (merge patch)".into(),
        )),
    }
}
