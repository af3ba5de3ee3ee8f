//! Chart versions and version ranges as Helm reads them (the Masterminds `semver` v3
//! syntax): `1.2.3`, `>= 1.2, < 2`, `~1.2`, `^0.3`, `1.2.x`, `1.0 - 1.4`, `a || b`.
//!
//! Pure: no I/O. A version with a prerelease (`1.0.0-rc.1`) satisfies a constraint only
//! when that constraint names a prerelease itself, as in Masterminds, so an empty range
//! (`*`) means the highest stable version.

use std::cmp::Ordering;
use std::fmt;

/// A semantic version, parsed loosely as Helm does (`v1.2`, `1` are `1.2.0`, `1.0.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    parts: [u64; 3],
    /// How many of the three numbers were written (for constraints: the rest are
    /// wildcards).
    given: usize,
    pre: Vec<Ident>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ident {
    Num(u64),
    Alpha(String),
}

impl Ord for Ident {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Ident::Num(a), Ident::Num(b)) => a.cmp(b),
            (Ident::Num(_), Ident::Alpha(_)) => Ordering::Less,
            (Ident::Alpha(_), Ident::Num(_)) => Ordering::Greater,
            (Ident::Alpha(a), Ident::Alpha(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Ident {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Version {
    /// Parses `v?MAJOR[.MINOR[.PATCH]][-PRE][+BUILD]`; build metadata is ignored.
    pub fn parse(s: &str) -> Option<Version> {
        Self::parse_with(s, false).map(|(v, _)| v)
    }

    /// Parses a version whose missing or `x`/`X`/`*` parts are wildcards when
    /// `wildcards` is set; returns whether any part was a wildcard.
    fn parse_with(s: &str, wildcards: bool) -> Option<(Version, bool)> {
        let s = s.trim();
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        if s.is_empty() || s.len() > 128 {
            return None;
        }
        let s = s.split_once('+').map_or(s, |(v, _)| v);
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (s, None),
        };
        let mut parts = [0u64; 3];
        let mut given = 0;
        let mut wild = false;
        let fields: Vec<&str> = core.split('.').collect();
        if fields.len() > 3 {
            return None;
        }
        for (i, f) in fields.iter().enumerate() {
            if wildcards && matches!(*f, "x" | "X" | "*") {
                wild = true;
                break;
            }
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts[i] = f.parse().ok()?;
            given = i + 1;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(p) => p
                .split('.')
                .map(|id| {
                    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    {
                        None
                    } else if id.bytes().all(|b| b.is_ascii_digit()) {
                        id.parse().ok().map(Ident::Num)
                    } else {
                        Some(Ident::Alpha(id.to_string()))
                    }
                })
                .collect::<Option<Vec<_>>>()?,
        };
        Some((Version { parts, given, pre }, wild || given < 3))
    }

    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// The smallest version above every version that matches this one's written parts:
    /// `1.2` → `1.3.0`, `1` → `2.0.0`. None when no part was written (`*`).
    fn bump(&self) -> Option<Version> {
        let mut parts = [0u64; 3];
        match self.given {
            0 => return None,
            n => {
                parts[..n].copy_from_slice(&self.parts[..n]);
                parts[n - 1] = parts[n - 1].saturating_add(1);
            }
        }
        Some(Version {
            parts,
            given: 3,
            pre: Vec::new(),
        })
    }

    fn with_parts(parts: [u64; 3]) -> Version {
        Version {
            parts,
            given: 3,
            pre: Vec::new(),
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts.cmp(&other.parts).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            }
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.parts;
        write!(f, "{a}.{b}.{c}")?;
        for (i, id) in self.pre.iter().enumerate() {
            f.write_str(if i == 0 { "-" } else { "." })?;
            match id {
                Ident::Num(n) => write!(f, "{n}")?,
                Ident::Alpha(s) => f.write_str(s)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Tilde,
    Caret,
}

/// One comparison: `>= 1.2`.
#[derive(Debug, Clone)]
struct Term {
    op: Op,
    v: Version,
    /// Some part was missing or a wildcard.
    partial: bool,
}

impl Term {
    fn matches(&self, v: &Version) -> bool {
        // Masterminds: a prerelease is only compatible with a constraint that names one.
        if v.is_prerelease() && !self.v.is_prerelease() {
            return false;
        }
        let c = &self.v;
        let in_range = |lo: &Version, hi: Option<Version>| v >= lo && hi.is_none_or(|hi| *v < hi);
        match self.op {
            Op::Eq if self.partial => in_range(c, c.bump()),
            Op::Eq => v == c,
            Op::Ne if self.partial => !in_range(c, c.bump()),
            Op::Ne => v != c,
            Op::Gt if self.partial => c.bump().is_some_and(|b| *v >= b),
            Op::Gt => v > c,
            Op::Ge => v >= c,
            Op::Lt => v < c,
            Op::Le if self.partial => c.bump().is_none_or(|b| *v < b),
            Op::Le => v <= c,
            Op::Tilde => {
                let hi = match c.given {
                    0 => None,
                    1 => Some(Version::with_parts([c.parts[0].saturating_add(1), 0, 0])),
                    _ => Some(Version::with_parts([
                        c.parts[0],
                        c.parts[1].saturating_add(1),
                        0,
                    ])),
                };
                in_range(c, hi)
            }
            Op::Caret => {
                let [major, minor, patch] = c.parts;
                let hi = if c.given == 0 {
                    None
                } else if major > 0 || c.given == 1 {
                    Some(Version::with_parts([major.saturating_add(1), 0, 0]))
                } else if minor > 0 || c.given == 2 {
                    Some(Version::with_parts([0, minor.saturating_add(1), 0]))
                } else {
                    Some(Version::with_parts([0, 0, patch.saturating_add(1)]))
                };
                in_range(c, hi)
            }
        }
    }
}

/// A version range: terms ANDed within a group, groups ORed (`||`).
#[derive(Debug, Clone)]
pub struct Constraint {
    groups: Vec<Vec<Term>>,
    text: String,
}

impl Constraint {
    /// Parses a range; `""` is `*` (any stable version).
    pub fn parse(s: &str) -> Result<Constraint, String> {
        if s.len() > 1024 {
            return Err("version range longer than 1024 characters".into());
        }
        let text = s.trim().to_string();
        let mut groups = Vec::new();
        for group in text.split("||") {
            let group = group.trim();
            let mut terms = Vec::new();
            if let Some((lo, hi)) = group.split_once(" - ") {
                let lo = term(Op::Ge, lo.trim())?;
                let hi = term(Op::Le, hi.trim())?;
                terms.extend([lo, hi]);
            } else {
                for t in tokens(group) {
                    terms.push(parse_term(&t)?);
                }
            }
            if terms.is_empty() {
                terms.push(term(Op::Ge, "*")?);
            }
            groups.push(terms);
        }
        Ok(Constraint { groups, text })
    }

    pub fn matches(&self, v: &Version) -> bool {
        self.groups.iter().any(|g| g.iter().all(|t| t.matches(v)))
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.text.is_empty() {
            "*"
        } else {
            &self.text
        })
    }
}

/// Splits `>= 1.2, <2 ~1.3` into `[">=1.2", "<2", "~1.3"]`: commas and spaces separate
/// terms, but an operator and its version may be apart.
fn tokens(group: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut pending_op = String::new();
    for word in group.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
        if word.bytes().all(|b| b"=<>!~^".contains(&b)) {
            pending_op.push_str(word);
        } else {
            out.push(format!("{}{word}", std::mem::take(&mut pending_op)));
        }
    }
    if !pending_op.is_empty() {
        out.push(pending_op);
    }
    out
}

fn parse_term(t: &str) -> Result<Term, String> {
    const OPS: [(&str, Op); 12] = [
        ("~>", Op::Tilde),
        (">=", Op::Ge),
        ("=>", Op::Ge),
        ("<=", Op::Le),
        ("=<", Op::Le),
        ("!=", Op::Ne),
        ("==", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("=", Op::Eq),
        ("~", Op::Tilde),
        ("^", Op::Caret),
    ];
    for (prefix, op) in OPS {
        if let Some(rest) = t.strip_prefix(prefix) {
            return term(op, rest.trim());
        }
    }
    term(Op::Eq, t)
}

fn term(op: Op, v: &str) -> Result<Term, String> {
    let (v, partial) =
        Version::parse_with(v, true).ok_or_else(|| format!("{v:?} is not a version"))?;
    Ok(Term { op, v, partial })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(range: &str, v: &str) -> bool {
        Constraint::parse(range)
            .expect("range")
            .matches(&Version::parse(v).expect("version"))
    }

    #[test]
    fn ranges_match_as_masterminds_semver_documents_them() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("", &["0.0.1", "9.9.9"], &["1.0.0-rc.1"]),
            ("*", &["1.0.0"], &["2.0.0-alpha"]),
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
        assert!(Constraint::parse(&"1".repeat(2000)).is_err());
    }
}
