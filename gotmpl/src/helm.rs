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

    fn get(&self, name: &str) -> String {
        self.0
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
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
            .map(|(k, v)| (k.rsplit('/').next().unwrap_or(k).to_string(), Value::String(encode(v))))
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
        _ => Err(format!("wrong number of args for {name}: want 1 got {}", args.len())),
    }
}

impl Object for Files {
    fn type_name(&self) -> &str {
        "engine.files"
    }

    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        Some(match name {
            "Get" => one_string(name, args).map(|p| Value::String(self.get(p))),
            "GetBytes" => one_string(name, args).map(|p| {
                Value::list(
                    self.0
                        .get(p)
                        .map(|b| b.iter().map(|x| Value::Int(i64::from(*x))).collect())
                        .unwrap_or_default(),
                )
            }),
            "Glob" => one_string(name, args).map(|pattern| {
                let re = glob_regex(pattern).unwrap_or_else(|| glob_regex("**").unwrap_or_else(match_all));
                let picked: BTreeMap<String, Vec<u8>> = self
                    .0
                    .iter()
                    .filter(|(k, _)| re.is_match(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Files::new(picked).into_value()
            }),
            "AsConfig" => no_args(name, args).map(|_| {
                Value::String(self.as_map_yaml(|b| String::from_utf8_lossy(b).into_owned()))
            }),
            "AsSecrets" => no_args(name, args).map(|_| {
                Value::String(self.as_map_yaml(|b| base64::engine::general_purpose::STANDARD.encode(b)))
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
        let items: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{k}:{:?}", v))
            .collect();
        format!("map[{}]", items.join(" "))
    }

    fn truth(&self) -> bool {
        !self.0.is_empty()
    }

    fn to_data(&self) -> Value {
        Value::map(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(base64::engine::general_purpose::STANDARD.encode(v))))
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
        Err(format!("wrong number of args for {name}: want 0 got {}", args.len()))
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
            "Has" => Some(one_string(name, args).map(|v| Value::Bool(self.0.iter().any(|x| x == v)))),
            _ => None,
        }
    }

    fn display(&self) -> String {
        format!("[{}]", self.0.join(" "))
    }

    fn truth(&self) -> bool {
        !self.0.is_empty()
    }

    fn to_data(&self) -> Value {
        Value::list(self.0.iter().map(Value::string).collect())
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
            "String" | "GitVersion" => Some(no_args(name, args).map(|_| Value::string(self.version.clone()))),
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
    fn files_render_as_config() {
        let mut m = BTreeMap::new();
        m.insert("conf/a.txt".to_string(), b"hello".to_vec());
        m.insert("conf/b.txt".to_string(), b"x: 1\n".to_vec());
        let f = Files::new(m);
        let v = f.call("AsConfig", &[]).and_then(Result::ok).unwrap_or_default();
        assert_eq!(v.to_string(), "a.txt: hello\nb.txt: |\n  x: 1");
    }
}
