//! Masterminds/semver v3, as Helm and Sprig use it: version parsing, ordering and the
//! constraint language (`>=1.20.0-0`, `^1.2`, `~1.2`, `1.x`, `||`, comma or space AND,
//! hyphen ranges), including its rule that prerelease versions only satisfy constraint
//! groups that mention a prerelease. The one home of this algorithm: the `semver` and
//! `semverCompare` template functions and the hub's chart version resolution both use it.
//!
//! Pure: no I/O. Inputs are bounded (128-byte versions, 512-byte ranges, 32 `||` groups).

use std::cmp::Ordering;
use std::sync::OnceLock;

use regex::Regex;

/// A semantic version (Masterminds `NewVersion`: `v1.2`, `1` are `1.2.0`, `1.0.0`); prints as
/// Masterminds' `String()`. Equality and order ignore build metadata, as Masterminds' do.
#[derive(Clone, Debug)]
pub struct Version {
    pub(crate) major: u64,
    pub(crate) minor: u64,
    pub(crate) patch: u64,
    pub(crate) pre: String,
    pub(crate) metadata: String,
    pub(crate) original: String,
}

/// Compiles one of the constant patterns below once.
fn re(cell: &'static OnceLock<Regex>, pattern: impl FnOnce() -> String) -> &'static Regex {
    cell.get_or_init(|| Regex::new(&pattern()).expect("constant semver pattern compiles"))
}

const SEMVER: &str = r"v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?";
const CV: &str = r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?";
const OPS: &str = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^";

impl Version {
    /// Parses `v?MAJOR[.MINOR[.PATCH]][-PRE][+BUILD]`; None when it is not a version.
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

    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
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

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.compare(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.compare(other)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
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

fn compare_prerelease(a: &str, b: &str) -> Ordering {
    let sa: Vec<&str> = a.split('.').collect();
    let sb: Vec<&str> = b.split('.').collect();
    for i in 0..sa.len().max(sb.len()) {
        let (s, o) = (
            sa.get(i).copied().unwrap_or(""),
            sb.get(i).copied().unwrap_or(""),
        );
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

/// One comparison (`>= 1.2`); the `*_dirty` flags record wildcard or missing parts.
#[derive(Debug, Clone)]
struct Term {
    op: String,
    con: Version,
    minor_dirty: bool,
    patch_dirty: bool,
    dirty: bool,
}

/// A version range: terms ANDed within a group, groups ORed (`||`).
#[derive(Debug, Clone)]
pub struct Constraint {
    /// Each group's terms, and whether any of them names a prerelease.
    groups: Vec<(Vec<Term>, bool)>,
    text: String,
}

fn is_x(s: &str) -> bool {
    matches!(s, "x" | "X" | "*")
}

impl Constraint {
    /// Parses a range as Masterminds `NewConstraint` does (`""` is an error there too).
    pub fn parse(c: &str) -> Result<Constraint, String> {
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
        let valid = re(&VALID, || {
            format!(r"^(\s*({OPS})\s*({CV})\s*)((?:\s+|,\s*)({OPS})\s*({CV})\s*)*$")
        });
        let find = re(&FIND, || format!(r"({OPS})\s*({CV})"));
        let one = re(&ONE, || format!(r"^\s*({OPS})\s*({CV})\s*$"));
        let ors: Vec<&str> = text.split("||").collect();
        if ors.len() > 32 {
            return Err("too many constraint groups (max 32)".into());
        }
        let mut groups = Vec::new();
        for o in ors {
            if !valid.is_match(o) {
                return Err(format!(
                    "improper constraint: {}",
                    crate::gofmt::quote(o).trim_matches('"')
                ));
            }
            let mut found: Vec<String> =
                find.find_iter(o).map(|m| m.as_str().to_string()).collect();
            if found.is_empty() {
                found.push(o.to_string());
            }
            let mut has_pre = false;
            let mut cs = Vec::new();
            for s in found {
                let m = one
                    .captures(&s)
                    .ok_or_else(|| format!("improper constraint: {s}"))?;
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
                let con =
                    Version::parse(&ver).ok_or_else(|| "constraint parser error".to_string())?;
                if !con.pre.is_empty() {
                    has_pre = true;
                }
                cs.push(Term {
                    op,
                    con,
                    minor_dirty,
                    patch_dirty,
                    dirty,
                });
            }
            groups.push((cs, has_pre));
        }
        Ok(Constraint {
            groups,
            text: c.trim().to_string(),
        })
    }

    /// Whether `v` satisfies the range (Masterminds `Check`).
    pub fn matches(&self, v: &Version) -> bool {
        self.groups
            .iter()
            .any(|(cs, pre)| cs.iter().all(|c| c.check(v, *pre)))
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.text.is_empty() {
            "*"
        } else {
            &self.text
        })
    }
}

impl Term {
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
        v.minor == c.minor || self.minor_dirty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(c: &str, v: &str) -> bool {
        let c = Constraint::parse(c).unwrap_or_else(|e| panic!("{e}"));
        c.matches(&Version::parse(v).unwrap_or_else(|| panic!("bad version {v}")))
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

    fn ok(range: &str, v: &str) -> bool {
        Constraint::parse(range)
            .expect("range")
            .matches(&Version::parse(v).expect("version"))
    }

    #[test]
    fn ranges_match_as_masterminds_semver_documents_them() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "*",
                &["0.0.1", "1.0.0", "9.9.9"],
                &["1.0.0-rc.1", "2.0.0-alpha"],
            ),
            ("1.2.3", &["1.2.3", "v1.2.3"], &["1.2.4"]),
            ("1.2.x", &["1.2.0", "1.2.9"], &["1.3.0", "1.1.9"]),
            ("1.2", &["1.2.0", "1.2.7"], &["1.3.0"]),
            (">= 1.2, < 2", &["1.2.0", "1.9.9"], &["2.0.0", "1.1.0"]),
            (">=1.2 <2", &["1.5.0"], &["2.1.0"]),
            ("> 1.2", &["1.3.0"], &["1.2.9"]),
            ("<= 1.2", &["1.2.9"], &["1.3.0"]),
            ("~1.2.3", &["1.2.3", "1.2.9"], &["1.3.0"]),
            ("~1", &["1.9.0"], &["2.0.0"]),
            ("^1.2.3", &["1.9.0"], &["2.0.0", "1.2.2"]),
            ("^0.2.3", &["0.2.9"], &["0.3.0"]),
            ("^0.0.3", &["0.0.3"], &["0.0.4"]),
            ("^0", &["0.9.0"], &["1.0.0"]),
            ("1.0 - 1.4", &["1.0.0", "1.4.9"], &["1.5.0"]),
            ("1.x || >= 3", &["1.1.0", "3.2.0"], &["2.0.0"]),
            ("!= 1.2.3", &["1.2.4"], &["1.2.3"]),
            (">= 1.0.0-0", &["1.0.0-rc.1", "1.0.0"], &["0.9.0"]),
        ];
        for (range, yes, no) in cases {
            for v in *yes {
                assert!(ok(range, v), "{v} must satisfy {range:?}");
            }
            for v in *no {
                assert!(!ok(range, v), "{v} must not satisfy {range:?}");
            }
        }
    }

    #[test]
    fn versions_order_with_prereleases_below_their_release() {
        let mut vs: Vec<Version> = ["1.0.0", "1.0.0-rc.10", "1.0.0-rc.2", "1.0.0-alpha", "0.9"]
            .iter()
            .map(|s| Version::parse(s).expect("version"))
            .collect();
        vs.sort();
        let shown: Vec<String> = vs.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["0.9.0", "1.0.0-alpha", "1.0.0-rc.2", "1.0.0-rc.10", "1.0.0"]
        );
    }

    #[test]
    fn garbage_is_refused_not_guessed() {
        for bad in ["1.2.3.4", "one", "1..2", ">= x.y", "1.2.3-", "~~1"] {
            assert!(
                Constraint::parse(bad).is_err() || Version::parse(bad).is_none(),
                "{bad:?}"
            );
        }
        assert!(Version::parse("1.2.3-rc..1").is_none());
        // Masterminds refuses an empty range; callers that mean "any" say `*`.
        assert!(Constraint::parse("").is_err());
        assert!(Constraint::parse(&"1".repeat(2000)).is_err());
    }
}
