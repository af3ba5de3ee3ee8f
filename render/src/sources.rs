//! The files of one render as the pipeline sees them: the bundle snapshot, with the
//! variant's overlays laid over it and, for bundles that opt in, the cluster's values
//! substituted. Every resource or patch document is read through here, and the render's
//! [`Budget`] travels with it so every stage can charge what it builds.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::budget::{Budget, json_size};
use crate::diagnostic::{Diagnostic, Diags};
use crate::output::Object;
use crate::repo_fs::{Fs, Kind};
use crate::values::{self, Values};
use crate::yaml::{self, Doc};

/// A file as an overlay left it.
#[derive(Debug, Clone)]
pub(crate) struct LayerFile {
    /// The file the documents now come from (the overlay file, or the patched base).
    pub file: String,
    pub docs: Vec<Doc>,
    /// The documents' JSON size: each read copies them, and is charged for it.
    size: u64,
}

impl LayerFile {
    pub(crate) fn new(file: String, docs: Vec<Doc>) -> Self {
        let size = docs.iter().map(|d| json_size(&d.value)).sum();
        LayerFile { file, docs, size }
    }
}

pub(crate) struct Sources<'a> {
    pub fs: &'a dyn Fs,
    /// `None`: substitute nothing (the bundle did not opt in, or this is validation).
    pub values: Option<&'a Values>,
    /// Repo-relative path -> documents, for files added, replaced or patched by overlays.
    pub layer: BTreeMap<String, LayerFile>,
    pub budget: &'a Budget,
}

impl<'a> Sources<'a> {
    pub(crate) fn new(fs: &'a dyn Fs, values: Option<&'a Values>, budget: &'a Budget) -> Self {
        Sources {
            fs,
            values,
            layer: BTreeMap::new(),
            budget,
        }
    }

    pub(crate) fn exists(&self, rel: &str) -> bool {
        self.layer.contains_key(rel) || self.fs.kind(rel) == Kind::File
    }

    /// The documents of a file before overlays, with cluster values substituted.
    pub(crate) fn base_docs(&self, rel: &str) -> Diags<Vec<Doc>> {
        let text = self.fs.read(rel).map_err(|d| vec![d])?;
        self.budget
            .parse(text.len())
            .map_err(|e| vec![Diagnostic::new(rel, e.to_string())])?;
        let mut docs = yaml::parse_documents(rel, &text).map_err(|d| vec![d])?;
        if let Some(vals) = self.values {
            values::check(rel, &text, vals)?;
            for d in &mut docs {
                values::substitute(&mut d.value, vals);
            }
        }
        Ok(docs)
    }

    /// The documents of a file after overlays, with the file they now come from.
    pub(crate) fn docs(&self, rel: &str) -> Diags<(String, Vec<Doc>)> {
        match self.layer.get(rel) {
            Some(l) => {
                self.budget
                    .parse(usize::try_from(l.size).unwrap_or(usize::MAX))
                    .map_err(|e| vec![Diagnostic::new(&l.file, e.to_string())])?;
                Ok((l.file.clone(), l.docs.clone()))
            }
            None => Ok((rel.to_string(), self.base_docs(rel)?)),
        }
    }

    /// The Kubernetes objects of a resource file (a `kind: List` is unpacked), each
    /// charged to the budget as it is made.
    pub(crate) fn objects(&self, rel: &str) -> Diags<Vec<Object>> {
        let (file, docs) = self.docs(rel)?;
        let mut out = Vec::new();
        let charge = |o: Object| -> Result<Object, Vec<Diagnostic>> {
            self.budget
                .object(&o.value)
                .map_err(|e| vec![Diagnostic::at(&o.file, o.line, e.to_string())])?;
            Ok(o)
        };
        for d in docs {
            let is_list = d.value.get("kind").and_then(Value::as_str) == Some("List")
                && d.value.get("items").is_some_and(Value::is_array);
            if is_list {
                if let Some(items) = d.value.get("items").and_then(Value::as_array) {
                    for v in items {
                        out.push(charge(Object {
                            file: file.clone(),
                            line: d.line,
                            value: v.clone(),
                        })?);
                    }
                }
            } else {
                if !d.value.is_object() {
                    return Err(vec![Diagnostic::at(
                        &file,
                        d.line,
                        "a resource document must be a YAML mapping",
                    )]);
                }
                out.push(charge(Object {
                    file: file.clone(),
                    line: d.line,
                    value: d.value,
                })?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use crate::repo_fs::Snapshot;

    #[test]
    fn every_read_of_an_overlaid_file_is_charged_for_the_copy_it_makes() {
        let limits = Limits {
            max_render_work: 10_000,
            ..Limits::default()
        };
        let budget = Budget::new(&limits);
        let fs = Snapshot::default();
        let mut sources = Sources::new(&fs, None, &budget);
        let big = serde_json::json!({"data": "x".repeat(4000)});
        let docs = vec![Doc {
            line: 1,
            value: big,
        }];
        sources.layer.insert(
            "a.yaml".into(),
            LayerFile::new("overlays/o/a.yaml".into(), docs),
        );
        // A kustomize diamond can read one overlaid file exponentially often.
        let reads = (0..1000)
            .take_while(|_| sources.docs("a.yaml").is_ok())
            .count();
        assert!(reads < 100, "{reads} copies of 4 KB for 10,000 steps");
        let e = sources.docs("a.yaml").expect_err("over budget");
        assert!(e[0].message.contains("Limits::max_render_work"), "{e:?}");
        assert!(budget.spent().work <= limits.max_render_work);
    }
}
