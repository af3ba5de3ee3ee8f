//! `semver` and `semverCompare`: Masterminds/semver v3's version parsing, ordering and
//! constraint language (`>=1.20.0-0`, `^1.2`, `~1.2`, `1.x`, `||`, comma or space AND,
//! hyphen ranges), including its rule that prerelease versions only satisfy constraint
//! groups that mention a prerelease.

use std::cmp::Ordering;
use std::sync::OnceLock;

use regex::Regex;

use super::{str_arg, CallError, Ctx, Registry, Ty};
use crate::{Object, Value};

pub(super) fn register(r: &mut Registry) {
    use Ty::*;
    r.add("semver", &[Str], None, |_: &Ctx<'_>, a| {
        let v = Version::parse(str_arg(&a[0])).ok_or_else(|| CallError::Msg("Invalid Semantic Version".into()))?;
        Ok(Value::object(v))
    });
    r.add("semverCompare", &[Str, Str], None, |_, a| {
        let c = Constraints::parse(str_arg(&a[0])).map_err(CallError::Msg)?;
        let v = Version::parse(str_arg(&a[1])).ok_or_else(|| CallError::Msg("Invalid Semantic Version".into()))?;
        Ok(Value::Bool(c.check(&v)))
    });
}

/// A semantic version, as `semver` returns it (printing as Masterminds' `String()`).
#[derive(Clone, Debug)]
pub struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    pre: String,
    metadata: String,
    original: String,
}

/// Compiles one of the constant patterns below once.
fn re(cell: &'static OnceLock<Regex>, pattern: impl FnOnce() -> String) -> &'static Regex {
    cell.get_or_init(|| Regex::new(&pattern()).expect("constant semver pattern compiles"))
}

const SEMVER: &str = r"v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?";
const CV: &str = r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?";
const OPS: &str = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^";

impl Version {
    pub fn parse(v: &str) -> Option<Version> {
        static R: OnceLock<Regex> = OnceLock::new();
        if v.len() > 128 {
            return None;
        }
        let m = re(&R, || format!("^{SEMVER}$")).captures(v)?;
        let num = |i: usize| -> Option<u64> {
            match m.get(i) {
                Some(x) => x.as_str().parse().ok(),
                None => Some(0),
            }
        };
        Some(Version {
            major: num(1)?,
            minor: num(2)?,
            patch: num(3)?,
            pre: m.get(4).map_or("", |x| x.as_str()).to_string(),
            metadata: m.get(5).map_or("", |x| x.as_str()).to_string(),
            original: v.to_string(),
        })
    }

    fn compare(&self, o: &Version) -> Ordering {
        self.major
            .cmp(&o.major)
            .then(self.minor.cmp(&o.minor))
            .then(self.patch.cmp(&o.patch))
            .then_with(|| match (self.pre.is_empty(), o.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => compare_prerelease(&self.pre, &o.pre),
            })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.metadata.is_empty() {
            write!(f, "+{}", self.metadata)?;
        }
        Ok(())
    }
}

impl Object for Version {
    fn type_name(&self) -> &str {
        "*semver.Version"
    }

    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let v = match name {
            "Major" => Value::Int(self.major as i64),
            "Minor" => Value::Int(self.minor as i64),
            "Patch" => Value::Int(self.patch as i64),
            "Prerelease" => Value::string(self.pre.clone()),
            "Metadata" => Value::string(self.metadata.clone()),
            "Original" => Value::string(self.original.clone()),
            "String" => Value::string(self.to_string()),
            _ => return None,
        };
        if !args.is_empty() {
            return Some(Err(format!("wrong number of args for {name}: want 0 got {}", args.len())));
        }
        Some(Ok(v))
    }

    fn display(&self) -> String {
        self.to_string()
    }

    fn to_data(&self) -> Value {
        Value::string(self.to_string())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn compare_prerelease(a: &str, b: &str) -> Ordering {
    let sa: Vec<&str> = a.split('.').collect();
    let sb: Vec<&str> = b.split('.').collect();
    for i in 0..sa.len().max(sb.len()) {
        let (s, o) = (sa.get(i).copied().unwrap_or(""), sb.get(i).copied().unwrap_or(""));
        let d = compare_pre_part(s, o);
        if d != Ordering::Equal {
            return d;
        }
    }
    Ordering::Equal
}

fn compare_pre_part(s: &str, o: &str) -> Ordering {
    if s == o {
        return Ordering::Equal;
    }
    if s.is_empty() {
        return Ordering::Less;
    }
    if o.is_empty() {
        return Ordering::Greater;
    }
    match (s.parse::<u64>(), o.parse::<u64>()) {
        (Err(_), Err(_)) => {
            if s > o {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Ok(x), Ok(y)) => {
            if x > y {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
    }
}

struct Constraint {
    op: String,
    con: Version,
    minor_dirty: bool,
    patch_dirty: bool,
    dirty: bool,
}

struct Constraints {
    groups: Vec<(Vec<Constraint>, bool)>,
}

fn is_x(s: &str) -> bool {
    matches!(s, "x" | "X" | "*")
}

impl Constraints {
    fn parse(c: &str) -> Result<Constraints, String> {
        static RANGE: OnceLock<Regex> = OnceLock::new();
        static VALID: OnceLock<Regex> = OnceLock::new();
        static FIND: OnceLock<Regex> = OnceLock::new();
        static ONE: OnceLock<Regex> = OnceLock::new();
        if c.len() > 512 {
            return Err("constraint string is too long (max 512 bytes)".into());
        }
        let range = re(&RANGE, || format!(r"\s*({CV})\s+-\s+({CV})\s*"));
        let mut text = c.to_string();
        let matches: Vec<(String, String, String)> = range
            .captures_iter(c)
            .map(|m| {
                (
                    m[0].to_string(),
                    m.get(1).map_or("", |x| x.as_str()).to_string(),
                    m.get(11).map_or("", |x| x.as_str()).to_string(),
                )
            })
            .collect();
        for (whole, a, b) in matches {
            text = text.replacen(&whole, &format!(">= {a}, <= {b} "), 1);
        }
        let valid = re(&VALID, || format!(r"^(\s*({OPS})\s*({CV})\s*)((?:\s+|,\s*)({OPS})\s*({CV})\s*)*$"));
        let find = re(&FIND, || format!(r"({OPS})\s*({CV})"));
        let one = re(&ONE, || format!(r"^\s*({OPS})\s*({CV})\s*$"));
        let ors: Vec<&str> = text.split("||").collect();
        if ors.len() > 32 {
            return Err("too many constraint groups (max 32)".into());
        }
        let mut groups = Vec::new();
        for o in ors {
            if !valid.is_match(o) {
                return Err(format!("improper constraint: {}", crate::gofmt::quote(o).trim_matches('"')));
            }
            let mut found: Vec<String> = find.find_iter(o).map(|m| m.as_str().to_string()).collect();
            if found.is_empty() {
                found.push(o.to_string());
            }
            let mut has_pre = false;
            let mut cs = Vec::new();
            for s in found {
                let m = one.captures(&s).ok_or_else(|| format!("improper constraint: {s}"))?;
                let g = |i: usize| m.get(i).map_or("", |x| x.as_str());
                let (op, ver) = (g(1).to_string(), g(2));
                let (mut minor_dirty, mut patch_dirty, mut dirty) = (false, false, false);
                let ver = if is_x(g(3)) || g(3).is_empty() {
                    dirty = true;
                    format!("0.0.0{}", g(6))
                } else if is_x(g(4).trim_start_matches('.')) || g(4).is_empty() {
                    minor_dirty = true;
                    dirty = true;
                    format!("{}.0.0{}", g(3), g(6))
                } else if is_x(g(5).trim_start_matches('.')) || g(5).is_empty() {
                    dirty = true;
                    patch_dirty = true;
                    format!("{}{}.0{}", g(3), g(4), g(6))
                } else {
                    ver.to_string()
                };
                let con = Version::parse(&ver).ok_or_else(|| "constraint parser error".to_string())?;
                if !con.pre.is_empty() {
                    has_pre = true;
                }
                cs.push(Constraint {
                    op,
                    con,
                    minor_dirty,
                    patch_dirty,
                    dirty,
                });
            }
            groups.push((cs, has_pre));
        }
        Ok(Constraints { groups })
    }

    fn check(&self, v: &Version) -> bool {
        self.groups
            .iter()
            .any(|(cs, pre)| cs.iter().all(|c| c.check(v, *pre)))
    }
}

impl Constraint {
    fn check(&self, v: &Version, include_pre: bool) -> bool {
        if !v.pre.is_empty() && !include_pre {
            return false;
        }
        let c = &self.con;
        match self.op.as_str() {
            "" | "=" => {
                if self.dirty {
                    self.tilde(v)
                } else {
                    v.compare(c) == Ordering::Equal
                }
            }
            "!=" => {
                if self.dirty {
                    if c.major != v.major {
                        return true;
                    }
                    if c.minor != v.minor && !self.minor_dirty {
                        return true;
                    } else if self.minor_dirty {
                        return false;
                    } else if c.patch != v.patch && !self.patch_dirty {
                        return true;
                    } else if self.patch_dirty {
                        if !v.pre.is_empty() || !c.pre.is_empty() {
                            return compare_prerelease(&v.pre, &c.pre) != Ordering::Equal;
                        }
                        return false;
                    }
                }
                v.compare(c) != Ordering::Equal
            }
            ">" => {
                if !self.dirty {
                    return v.compare(c) == Ordering::Greater;
                }
                if v.major != c.major {
                    return v.major > c.major;
                }
                if self.minor_dirty {
                    return false;
                }
                if self.patch_dirty {
                    return v.minor > c.minor;
                }
                v.compare(c) == Ordering::Greater
            }
            "<" => v.compare(c) == Ordering::Less,
            ">=" | "=>" => v.compare(c) != Ordering::Less,
            "<=" | "=<" => {
                if !self.dirty {
                    return v.compare(c) != Ordering::Greater;
                }
                if v.major > c.major {
                    return false;
                }
                !(v.major == c.major && v.minor > c.minor && !self.minor_dirty)
            }
            "~" | "~>" => self.tilde(v),
            "^" => {
                if v.compare(c) == Ordering::Less {
                    return false;
                }
                if c.major > 0 || self.minor_dirty {
                    return v.major == c.major;
                }
                if v.major > 0 {
                    return false;
                }
                if c.minor > 0 || self.patch_dirty {
                    return v.minor == c.minor;
                }
                if v.minor > 0 {
                    return false;
                }
                c.patch == v.patch
            }
            _ => false,
        }
    }

    fn tilde(&self, v: &Version) -> bool {
        let c = &self.con;
        if v.compare(c) == Ordering::Less {
            return false;
        }
        if c.major == 0 && c.minor == 0 && c.patch == 0 && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        if v.major != c.major {
            return false;
        }
        !(v.minor != c.minor && !self.minor_dirty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(c: &str, v: &str) -> bool {
        let c = Constraints::parse(c).unwrap_or_else(|e| panic!("{e}"));
        c.check(&Version::parse(v).unwrap_or_else(|| panic!("bad version {v}")))
    }

    #[test]
    fn constraints_follow_masterminds() {
        assert!(check(">=1.20.0-0", "1.28.3"));
        assert!(check(">=1.20.0-0", "1.21.0-eks.1"));
        assert!(!check(">=1.20.0", "1.21.0-eks.1"));
        assert!(check("^1.2", "1.9.0"));
        assert!(!check("^1.2", "2.0.0"));
        assert!(check("~1.2", "1.2.9"));
        assert!(!check("~1.2", "1.3.0"));
        assert!(check("1.x", "1.5.5"));
        assert!(check("<1.0 || >=2.0, <3", "2.5.0"));
        assert!(check("1.2 - 1.4.5", "1.4.5"));
        assert!(!check("1.2 - 1.4.5", "1.4.6"));
        assert!(check(">= 1.19 < 1.30", "1.25.0"));
    }
}
