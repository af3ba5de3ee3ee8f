//! `configMapGenerator`, `secretGenerator` and `generatorOptions`: building ConfigMaps and
//! Secrets from literals, files and env files, merging them with `behavior`, and
//! kustomize's content-hash name suffix (which must match kustomize byte for byte, since
//! other tools and humans expect the same names).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::diagnostic::Diagnostic;
use crate::repo_fs::{file_name, join};
use crate::sources::Sources;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct Generator {
    pub name: String,
    pub namespace: Option<String>,
    pub behavior: Option<String>,
    pub files: Vec<String>,
    pub literals: Vec<String>,
    pub envs: Vec<String>,
    pub env: Option<String>,
    #[serde(rename = "type")]
    pub secret_type: Option<String>,
    pub options: Option<GeneratorOptions>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct GeneratorOptions {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub disable_name_suffix_hash: Option<bool>,
    pub immutable: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behavior {
    Create,
    Merge,
    Replace,
}

/// A generated object, before it meets the accumulated resources.
pub(crate) struct Generated {
    pub value: Value,
    pub behavior: Behavior,
    pub needs_hash: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum GenKind {
    ConfigMap,
    Secret,
}

/// Builds one generator's object. `dir` is the kustomization folder, `file` its path.
pub(crate) fn generate(
    sources: &Sources<'_>,
    dir: &str,
    file: &str,
    spec: &Generator,
    kind: GenKind,
    global: Option<&GeneratorOptions>,
) -> Result<Generated, Diagnostic> {
    let err = |m: String| Diagnostic::new(file, format!("generator {:?}: {m}", spec.name));
    if spec.name.is_empty() {
        return Err(Diagnostic::new(file, "a generator needs a name"));
    }
    let behavior = match spec.behavior.as_deref() {
        None | Some("") | Some("create") => Behavior::Create,
        Some("merge") => Behavior::Merge,
        Some("replace") => Behavior::Replace,
        Some(other) => return Err(err(format!("unknown behavior {other:?}"))),
    };
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    // Every value is charged before it is copied in: listing one big file under a
    // thousand keys must stop at the byte budget, not after a thousand copies.
    let charge = |n: usize| {
        sources
            .budget
            .bytes(n as u64)
            .and_then(|()| sources.budget.work(1))
            .map_err(|e| err(e.to_string()))
    };
    let mut put = |k: String, v: String| -> Result<(), Diagnostic> {
        if data.insert(k.clone(), v).is_some() {
            return Err(err(format!("key {k:?} is defined twice")));
        }
        Ok(())
    };
    let read = |rel: &str| -> Result<std::sync::Arc<str>, Diagnostic> {
        let path = join(dir, rel).map_err(&err)?;
        sources.fs.read(&path)
    };
    for env_file in spec.envs.iter().chain(spec.env.iter()) {
        let text = read(env_file)?;
        charge(text.len())?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) => put(k.trim().to_string(), v.to_string())?,
                None => return Err(err(format!("{env_file}: line {line:?} is not KEY=VALUE"))),
            }
        }
    }
    for lit in &spec.literals {
        let Some((k, v)) = lit.split_once('=') else {
            return Err(err(format!("literal {lit:?} is not KEY=VALUE")));
        };
        charge(lit.len())?;
        put(k.to_string(), unquote(v).to_string())?;
    }
    for f in &spec.files {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) => (k.to_string(), p),
            None => (file_name(f).to_string(), f.as_str()),
        };
        let text = read(path)?;
        charge(key.len() + text.len())?;
        put(key, text.to_string())?;
    }

    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    let mut disable_hash = false;
    let mut immutable = false;
    for o in global.into_iter().chain(spec.options.as_ref()) {
        labels.extend(o.labels.clone());
        annotations.extend(o.annotations.clone());
        if let Some(d) = o.disable_name_suffix_hash {
            disable_hash = d;
        }
        if let Some(i) = o.immutable {
            immutable = i;
        }
    }
    let mut meta = Map::new();
    meta.insert("name".into(), json!(spec.name));
    if let Some(ns) = &spec.namespace {
        meta.insert("namespace".into(), json!(ns));
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), json!(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), json!(annotations));
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!("v1"));
    obj.insert("metadata".into(), Value::Object(meta));
    match kind {
        GenKind::ConfigMap => {
            obj.insert("kind".into(), json!("ConfigMap"));
            if !data.is_empty() {
                obj.insert("data".into(), json!(data));
            }
        }
        GenKind::Secret => {
            obj.insert("kind".into(), json!("Secret"));
            obj.insert(
                "type".into(),
                json!(spec.secret_type.as_deref().unwrap_or("Opaque")),
            );
            if !data.is_empty() {
                let encoded: BTreeMap<_, _> = data
                    .into_iter()
                    .map(|(k, v)| (k, base64(v.as_bytes())))
                    .collect();
                obj.insert("data".into(), json!(encoded));
            }
        }
    }
    if immutable {
        obj.insert("immutable".into(), json!(true));
    }
    Ok(Generated {
        value: Value::Object(obj),
        behavior,
        needs_hash: !disable_hash,
    })
}

/// Kustomize strips one pair of matching quotes around a literal's value.
fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Kustomize's name-suffix hash of a ConfigMap or Secret: sha256 of Go's JSON encoding of
/// {kind, name, data[, binaryData | type, stringData]}, first 10 hex, some letters swapped.
/// Quirks reproduced from kustomize v5 (checked against `kubectl kustomize`): the name it
/// hashes is always empty, and a missing `data` is the empty string.
pub(crate) fn content_hash(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let field = |k: &str| obj.get(k).cloned().unwrap_or_else(|| json!(""));
    let mut m = Map::new();
    m.insert("kind".into(), json!(kind));
    m.insert("name".into(), json!(""));
    m.insert("data".into(), field("data"));
    if kind == "Secret" {
        m.insert("type".into(), field("type"));
        if obj.get("stringData").is_some() {
            m.insert("stringData".into(), field("stringData"));
        }
    } else if obj.get("binaryData").is_some_and(Value::is_object) {
        m.insert("binaryData".into(), field("binaryData"));
    }
    let encoded = go_json(&Value::Object(m));
    let hex = hex::encode(Sha256::digest(encoded.as_bytes()));
    hex.chars()
        .take(10)
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

/// Go's `json.Marshal` of a map: sorted keys, and `<`, `>`, `&`, U+2028, U+2029 escaped.
fn go_json(v: &Value) -> String {
    crate::output::canonical_json(v)
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_kustomize() {
        // Values produced by `kubectl kustomize` (kustomize v5.5).
        let cm = json!({"kind": "ConfigMap", "metadata": {"name": "p-cfg-s"}, "data": {"A": "1", "B": "x<y&z"}});
        assert_eq!(content_hash(&cm), "mgk8mb4fgh");
        let empty = json!({"kind": "ConfigMap", "metadata": {"name": "p-empty-s"}});
        assert_eq!(content_hash(&empty), "6ct58987ht");
        let one = json!({"kind": "ConfigMap", "metadata": {"name": "one"}, "data": {"A": "1"}});
        assert_eq!(content_hash(&one), "89g4tffbfk");
        let sec = json!({"kind": "Secret", "type": "Opaque", "metadata": {"name": "p-sec-s"}, "data": {"P": "cHc="}});
        assert_eq!(content_hash(&sec), "9bf7ght95b");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"pw"), "cHc=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
