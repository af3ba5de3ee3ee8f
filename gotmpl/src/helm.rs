//! Helm's template-facing objects that carry methods in Go: `.Files` (`Get`, `GetBytes`,
//! `Glob`, `AsConfig`, `AsSecrets`, `Lines`), `.Capabilities.APIVersions` (`Has`) and
//! `.Capabilities.KubeVersion` (fields plus `String`/`GitVersion`). Callers fill them with
//! plain data; the method semantics (gobwas/glob patterns, `path.Base` keys, YAML output)
//! are Helm's and live here.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;

use crate::yaml::to_yaml;
use crate::{Object, Value};

/// `.Files`: a chart's non-template files, path (relative to the chart root) to contents.
#[derive(Debug, Clone, Default)]
pub struct Files(pub Arc<BTreeMap<String, Vec<u8>>>);

impl Files {
    pub fn new(files: BTreeMap<String, Vec<u8>>) -> Files {
        Files(Arc::new(files))
    }

    pub fn into_value(self) -> Value {
        Value::object(self)
    }

    /// Go's `string(bytes)`: text stays a string; bytes that are not UTF-8 stay bytes, so
    /// `.Files.Get "x.p12" | b64enc` encodes the file as it is.
    fn get(&self, name: &str) -> Value {
        match self.0.get(name) {
            None => Value::string(""),
            Some(b) => match std::str::from_utf8(b) {
                Ok(s) => Value::string(s),
                Err(_) => Value::object(BinaryString(b.clone())),
            },
        }
    }

    /// A YAML map of `path.Base(name)` to contents, as Helm's `toYAML(map[string]string)`.
    fn as_map_yaml(&self, encode: impl Fn(&[u8]) -> String) -> String {
        if self.0.is_empty() {
            // Go: a nil/empty files map gives "" from the nil check, or "{}" when empty.
            return "{}".to_string();
        }
        let m: BTreeMap<String, Value> = self
            .0
            .iter()
            .map(|(k, v)| {
                (
                    k.rsplit('/').next().unwrap_or(k).to_string(),
                    Value::string(encode(v)),
                )
            })
            .collect();
        to_yaml(&Value::map(m))
            .map(|s| s.strip_suffix('\n').unwrap_or(&s).to_string())
            .unwrap_or_default()
    }
}

fn one_string<'a>(name: &str, args: &'a [Value]) -> Result<&'a str, String> {
    match args {
        [Value::String(s)] => Ok(s),
        [other] => Err(format!(
            "wrong type for value; expected string; got {}",
            other.type_name()
        )),
        _ => Err(format!(
            "wrong number of args for {name}: want 1 got {}",
            args.len()
        )),
    }
}

impl Object for Files {
    fn type_name(&self) -> &str {
        "engine.files"
    }

    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        Some(match name {
            "Get" => one_string(name, args).map(|p| self.get(p)),
            "GetBytes" => one_string(name, args).map(|p| {
                Value::list(
                    self.0
                        .get(p)
                        .map(|b| b.iter().map(|x| Value::Int(i64::from(*x))).collect())
                        .unwrap_or_default(),
                )
            }),
            "Glob" => one_string(name, args).map(|pattern| {
                let re = glob_regex(pattern)
                    .unwrap_or_else(|| glob_regex("**").unwrap_or_else(match_all));
                let picked: BTreeMap<String, Vec<u8>> = self
                    .0
                    .iter()
                    .filter(|(k, _)| re.is_match(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Files::new(picked).into_value()
            }),
            "AsConfig" => no_args(name, args).map(|_| {
                Value::string(self.as_map_yaml(|b| String::from_utf8_lossy(b).into_owned()))
            }),
            "AsSecrets" => no_args(name, args).map(|_| {
                Value::string(
                    self.as_map_yaml(|b| base64::engine::general_purpose::STANDARD.encode(b)),
                )
            }),
            "Lines" => one_string(name, args).map(|p| match self.0.get(p) {
                None => Value::list(Vec::new()),
                Some(b) => {
                    let s = String::from_utf8_lossy(b);
                    let s = s.strip_suffix('\n').unwrap_or(&s);
                    Value::list(s.split('\n').map(Value::string).collect())
                }
            }),
            _ => return None,
        })
    }

    fn display(&self) -> String {
        // Go prints a map[string][]byte as `map[name:[97 98]]`.
        let items: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| {
                let bytes: Vec<String> = v.iter().map(u8::to_string).collect();
                format!("{k}:[{}]", bytes.join(" "))
            })
            .collect();
        format!("map[{}]", items.join(" "))
    }

    fn truth(&self) -> bool {
        !self.0.is_empty()
    }

    fn entries(&self) -> Option<Vec<(Value, Value)>> {
        Some(
            self.0
                .iter()
                .map(|(k, v)| {
                    let bytes = v.iter().map(|b| Value::Int(i64::from(*b))).collect();
                    (Value::string(k.clone()), Value::list(bytes))
                })
                .collect(),
        )
    }

    fn to_data(&self) -> Value {
        Value::map(
            self.0
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        Value::string(base64::engine::general_purpose::STANDARD.encode(v)),
                    )
                })
                .collect(),
        )
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn no_args(name: &str, args: &[Value]) -> Result<(), String> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {name}: want 0 got {}",
            args.len()
        ))
    }
}

fn match_all() -> regex::Regex {
    regex::Regex::new("").expect("the empty pattern compiles")
}

/// gobwas/glob with `/` as separator: `*` and `?` stay within a segment, `**` crosses
/// segments, `[...]`/`[!...]` classes, `{a,b}` alternatives, `\` escapes.
pub(crate) fn glob_regex(pattern: &str) -> Option<regex::Regex> {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut in_alt = 0usize;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    re.push_str(".*");
                    i += 1;
                } else {
                    re.push_str("[^/]*");
                }
            }
            '?' => re.push_str("[^/]"),
            '[' => {
                let close = chars[i + 1..].iter().position(|c| *c == ']')? + i + 1;
                let mut class: String = chars[i + 1..close].iter().collect();
                if let Some(rest) = class.strip_prefix('!') {
                    class = format!("^{rest}");
                }
                re.push('[');
                re.push_str(&class.replace('\\', "\\\\").replace('[', "\\["));
                re.push(']');
                i = close;
            }
            '{' => {
                in_alt += 1;
                re.push_str("(?:");
            }
            '}' if in_alt > 0 => {
                in_alt -= 1;
                re.push(')');
            }
            ',' if in_alt > 0 => re.push('|'),
            '\\' => {
                i += 1;
                re.push_str(&regex::escape(&chars.get(i)?.to_string()));
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    if in_alt > 0 {
        return None;
    }
    re.push('$');
    regex::Regex::new(&re).ok()
}

/// A Go string holding bytes that are not UTF-8 (a binary file read with `.Files.Get`).
/// Functions over bytes (`b64enc`, the digests) use the bytes; everything else sees the
/// text with invalid sequences replaced.
#[derive(Debug, Clone)]
pub(crate) struct BinaryString(pub Vec<u8>);

impl Object for BinaryString {
    fn type_name(&self) -> &str {
        "string"
    }

    fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    fn truth(&self) -> bool {
        !self.0.is_empty()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The bytes of a string argument (`Ty::Bytes`).
pub(crate) fn bytes_of(v: &Value) -> &[u8] {
    match v {
        Value::String(s) => s.as_bytes(),
        Value::Object(o) => o
            .as_any()
            .downcast_ref::<BinaryString>()
            .map_or(&[], |b| b.0.as_slice()),
        _ => &[],
    }
}

/// A Go struct such as Helm's `.Chart` (`chart.Metadata` plus `IsRoot`) or `.Capabilities`:
/// fields in declaration order; a field it does not have is Go's "can't evaluate field"
/// error (where a map would give `<no value>`), and it prints as Go's `%v` of a struct,
/// `{value value ...}`. `toYaml`/`toJson` see it as a map of its JSON names.
#[derive(Debug, Clone)]
pub struct GoStruct {
    type_name: String,
    /// (Go field name, JSON name, value), in declaration order.
    fields: Vec<(String, String, Value)>,
}

impl GoStruct {
    /// A struct of Go type `type_name` (as error messages print it, e.g.
    /// `*chartutil.Capabilities`).
    pub fn new(type_name: impl Into<String>) -> GoStruct {
        GoStruct {
            type_name: type_name.into(),
            fields: Vec::new(),
        }
    }

    /// Adds field `name`, marshalled to JSON/YAML as `json_name` (empty: left out, as
    /// `omitempty` leaves out empty values).
    pub fn field(mut self, name: &str, json_name: &str, value: Value) -> GoStruct {
        self.fields
            .push((name.to_string(), json_name.to_string(), value));
        self
    }

    pub fn into_value(self) -> Value {
        Value::object(self)
    }
}

impl Object for GoStruct {
    fn type_name(&self) -> &str {
        &self.type_name
    }

    fn field(&self, name: &str) -> Option<Value> {
        self.fields
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v.clone())
    }

    fn display(&self) -> String {
        let parts: Vec<String> = self.fields.iter().map(|(_, _, v)| v.to_string()).collect();
        format!("{{{}}}", parts.join(" "))
    }

    fn to_data(&self) -> Value {
        Value::map(
            self.fields
                .iter()
                .filter(|(_, j, _)| !j.is_empty())
                .map(|(_, j, v)| (j.clone(), v.to_data()))
                .collect(),
        )
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `.Capabilities.APIVersions`: the group/versions (and `group/version/Kind`s) a cluster
/// serves; `.Has "apps/v1"`.
#[derive(Debug, Clone, Default)]
pub struct ApiVersions(pub Vec<String>);

impl ApiVersions {
    pub fn into_value(self) -> Value {
        Value::object(self)
    }
}

impl Object for ApiVersions {
    fn type_name(&self) -> &str {
        "chartutil.VersionSet"
    }

    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        match name {
            "Has" => {
                Some(one_string(name, args).map(|v| Value::Bool(self.0.iter().any(|x| x == v))))
            }
            _ => None,
        }
    }

    fn display(&self) -> String {
        format!("[{}]", self.0.join(" "))
    }

    fn truth(&self) -> bool {
        !self.0.is_empty()
    }

    fn entries(&self) -> Option<Vec<(Value, Value)>> {
        Some(
            self.0
                .iter()
                .enumerate()
                .map(|(i, v)| (Value::Int(i as i64), Value::string(v.clone())))
                .collect(),
        )
    }

    fn to_data(&self) -> Value {
        Value::list(self.0.iter().map(|s| Value::string(s.as_str())).collect())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `.Capabilities.KubeVersion`: `.Version` (`v1.31.0`), `.Major`, `.Minor`; prints as the
/// version.
#[derive(Debug, Clone, Default)]
pub struct KubeVersion {
    pub version: String,
    pub major: String,
    pub minor: String,
}

impl KubeVersion {
    pub fn into_value(self) -> Value {
        Value::object(self)
    }
}

impl Object for KubeVersion {
    fn type_name(&self) -> &str {
        "chartutil.KubeVersion"
    }

    fn field(&self, name: &str) -> Option<Value> {
        match name {
            "Version" => Some(Value::string(self.version.clone())),
            "Major" => Some(Value::string(self.major.clone())),
            "Minor" => Some(Value::string(self.minor.clone())),
            _ => None,
        }
    }

    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        match name {
            "String" | "GitVersion" => {
                Some(no_args(name, args).map(|_| Value::string(self.version.clone())))
            }
            _ => None,
        }
    }

    fn display(&self) -> String {
        self.version.clone()
    }

    fn to_data(&self) -> Value {
        let mut m = BTreeMap::new();
        m.insert("Major".to_string(), Value::string(self.major.clone()));
        m.insert("Minor".to_string(), Value::string(self.minor.clone()));
        m.insert("Version".to_string(), Value::string(self.version.clone()));
        Value::map(m)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_gobwas() {
        let re = |p: &str| glob_regex(p).unwrap_or_else(|| panic!("bad glob {p}"));
        assert!(re("config/*").is_match("config/a.yaml"));
        assert!(!re("config/*").is_match("config/sub/a.yaml"));
        assert!(re("config/**").is_match("config/sub/a.yaml"));
        assert!(re("*.{yaml,json}").is_match("a.json"));
        assert!(re("file?.txt").is_match("file1.txt"));
    }

    #[test]
    fn structs_behave_as_go_structs() {
        let s = GoStruct::new("chart.Metadata")
            .field("Name", "name", Value::string("x"))
            .field("IsRoot", "", Value::Bool(true));
        assert_eq!(s.display(), "{x true}");
        assert_eq!(
            Object::field(&s, "Name").map(|v| v.to_string()).as_deref(),
            Some("x")
        );
        assert!(Object::field(&s, "Nope").is_none());
        assert_eq!(s.to_data().to_string(), "map[name:x]");
    }

    #[test]
    fn files_render_as_config() {
        let mut m = BTreeMap::new();
        m.insert("conf/a.txt".to_string(), b"hello".to_vec());
        m.insert("conf/b.txt".to_string(), b"x: 1\n".to_vec());
        let f = Files::new(m);
        let v = f
            .call("AsConfig", &[])
            .and_then(Result::ok)
            .unwrap_or_default();
        assert_eq!(v.to_string(), "a.txt: hello\nb.txt: |\n  x: 1");
    }
}
