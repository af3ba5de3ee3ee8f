//! Which resources a kustomize patch applies to: a `target` selector (group, version, kind,
//! name and namespace as anchored regular expressions, label and annotation selectors) or,
//! for a strategic-merge patch without one, the patch's own apiVersion/kind/name. Matches
//! the current identity or any earlier one (before prefixes, suffixes and namespaces).

use flotilla_model::{LabelSelector, Labels};
use serde::Deserialize;
use serde_json::Value;

use super::Res;
use crate::scope::group_of;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct Target {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub annotation_selector: Option<String>,
}

fn labels_of(v: &Value, field: &str) -> Labels {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl Target {
    pub(crate) fn matches(&self, r: &Res) -> Result<bool, String> {
        let api_version = r.obj.api_version();
        let version = api_version.rsplit('/').next().unwrap_or("");
        let checks = [
            (&self.group, group_of(api_version)),
            (&self.version, version),
            (&self.kind, r.obj.kind()),
        ];
        for (want, have) in checks {
            if let Some(w) = want
                && !w.is_empty()
                && !Regex::new(w)?.is_match(have)
            {
                return Ok(false);
            }
        }
        if let Some(sel) = self.label_selector.as_deref().filter(|s| !s.is_empty()) {
            let sel: LabelSelector = sel.parse().map_err(|e| format!("{e}"))?;
            if !sel.matches(&labels_of(&r.obj.value, "labels")) {
                return Ok(false);
            }
        }
        if let Some(sel) = self
            .annotation_selector
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            let sel: LabelSelector = sel.parse().map_err(|e| format!("{e}"))?;
            if !sel.matches(&labels_of(&r.obj.value, "annotations")) {
                return Ok(false);
            }
        }
        let name_re = match self.name.as_deref().filter(|s| !s.is_empty()) {
            Some(n) => Some(Regex::new(n)?),
            None => None,
        };
        let ns_re = match self.namespace.as_deref().filter(|s| !s.is_empty()) {
            Some(n) => Some(Regex::new(n)?),
            None => None,
        };
        Ok(r.ids().any(|(name, ns)| {
            name_re.as_ref().is_none_or(|re| re.is_match(name))
                && ns_re.as_ref().is_none_or(|re| {
                    re.is_match(ns.unwrap_or("default")) || re.is_match(ns.unwrap_or(""))
                })
        }))
    }
}

/// True when a strategic-merge patch without a target names resource `r`.
pub(crate) fn patch_names(patch: &Value, r: &Res) -> bool {
    let s = |path: &[&str]| {
        let mut v = patch;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str()
    };
    let kind_ok = s(&["kind"]) == Some(r.obj.kind());
    let group_ok = s(&["apiVersion"]).is_none_or(|a| group_of(a) == group_of(r.obj.api_version()));
    let name = s(&["metadata", "name"]);
    let ns = s(&["metadata", "namespace"]);
    kind_ok
        && group_ok
        && r.ids().any(|(n, rns)| {
            Some(n) == name && ns.is_none_or(|want| same_namespace(Some(want), rns))
        })
}

fn same_namespace(a: Option<&str>, b: Option<&str>) -> bool {
    let norm = |x: Option<&str>| match x {
        None | Some("") => "default".to_string(),
        Some(s) => s.to_string(),
    };
    norm(a) == norm(b)
}

/// A small anchored regular expression: literals, `.`, `[...]` classes, `(a|b)` groups,
/// `|`, and the `*`, `+`, `?` quantifiers. Enough for kustomize target names.
pub(crate) struct Regex {
    alts: Vec<Vec<Piece>>,
}

#[derive(Debug, Clone)]
enum Atom {
    Char(char),
    Any,
    Class(Vec<(char, char)>, bool),
    Group(Vec<Vec<Piece>>),
}

#[derive(Debug, Clone)]
struct Piece {
    atom: Atom,
    min: usize,
    max: usize,
}

impl Regex {
    pub(crate) fn new(pattern: &str) -> Result<Regex, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut pos = 0;
        let alts = parse_alts(&chars, &mut pos)
            .map_err(|e| format!("unsupported regular expression {pattern:?}: {e}"))?;
        if pos != chars.len() {
            return Err(format!(
                "unsupported regular expression {pattern:?}: unbalanced ')'"
            ));
        }
        Ok(Regex { alts })
    }

    pub(crate) fn is_match(&self, text: &str) -> bool {
        let t: Vec<char> = text.chars().collect();
        let seq = [Piece {
            atom: Atom::Group(self.alts.clone()),
            min: 1,
            max: 1,
        }];
        match_seq(&seq, &t, 0, &mut |end| end == t.len())
    }
}

fn parse_alts(c: &[char], pos: &mut usize) -> Result<Vec<Vec<Piece>>, String> {
    let mut alts = vec![Vec::new()];
    if c.first() == Some(&'^') && *pos == 0 {
        *pos += 1;
    }
    while *pos < c.len() {
        let ch = c[*pos];
        let atom = match ch {
            ')' => break,
            '|' => {
                *pos += 1;
                alts.push(Vec::new());
                continue;
            }
            '$' if *pos + 1 == c.len() => {
                *pos += 1;
                continue;
            }
            '(' => {
                *pos += 1;
                if c.get(*pos) == Some(&'?') {
                    return Err("group flags".into());
                }
                let inner = parse_alts(c, pos)?;
                if c.get(*pos) != Some(&')') {
                    return Err("unclosed '('".into());
                }
                *pos += 1;
                Atom::Group(inner)
            }
            '.' => {
                *pos += 1;
                Atom::Any
            }
            '\\' => {
                let e = *c.get(*pos + 1).ok_or("trailing '\\'")?;
                *pos += 2;
                match e {
                    'd' => Atom::Class(vec![('0', '9')], false),
                    'w' => Atom::Class(vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')], false),
                    c if c.is_ascii_alphanumeric() => return Err(format!("escape \\{c}")),
                    c => Atom::Char(c),
                }
            }
            '[' => {
                *pos += 1;
                let negated = c.get(*pos) == Some(&'^');
                if negated {
                    *pos += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let ch = *c.get(*pos).ok_or("unclosed '['")?;
                    if ch == ']' && !first {
                        *pos += 1;
                        break;
                    }
                    first = false;
                    if c.get(*pos + 1) == Some(&'-') && c.get(*pos + 2).is_some_and(|e| *e != ']') {
                        ranges.push((ch, c[*pos + 2]));
                        *pos += 3;
                    } else {
                        ranges.push((ch, ch));
                        *pos += 1;
                    }
                }
                Atom::Class(ranges, negated)
            }
            '{' | '*' | '+' | '?' => return Err(format!("unexpected {ch:?}")),
            ch => {
                *pos += 1;
                Atom::Char(ch)
            }
        };
        let (min, max) = match c.get(*pos) {
            Some('*') => (0, usize::MAX),
            Some('+') => (1, usize::MAX),
            Some('?') => (0, 1),
            Some('{') => return Err("counted repetition".into()),
            _ => (1, 1),
        };
        if (min, max) != (1, 1) {
            *pos += 1;
        }
        if let Some(last) = alts.last_mut() {
            last.push(Piece { atom, min, max });
        }
    }
    Ok(alts)
}

/// Matches `seq` at `i`, calling `k` with each possible end until it says yes.
fn match_seq(seq: &[Piece], t: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    let Some((first, rest)) = seq.split_first() else {
        return k(i);
    };
    match_rep(first, 0, t, i, &mut |j| match_seq(rest, t, j, k))
}

fn match_rep(
    p: &Piece,
    count: usize,
    t: &[char],
    i: usize,
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    // Greedy: try one more first, then stop here.
    if count < p.max {
        let more = match_atom(&p.atom, t, i, &mut |j| {
            j != i && match_rep(p, count + 1, t, j, k)
        });
        if more {
            return true;
        }
    }
    count >= p.min && k(i)
}

fn match_atom(a: &Atom, t: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match a {
        Atom::Char(c) => t.get(i) == Some(c) && k(i + 1),
        Atom::Any => i < t.len() && k(i + 1),
        Atom::Class(ranges, negated) => {
            t.get(i)
                .is_some_and(|c| ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negated)
                && k(i + 1)
        }
        Atom::Group(alts) => alts.iter().any(|seq| match_seq(seq, t, i, k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_subset_is_anchored() {
        let m = |p: &str, t: &str| Regex::new(p).expect("valid").is_match(t);
        assert!(m("web", "web"));
        assert!(!m("web", "web2"));
        assert!(m("web.*", "web-frontend"));
        assert!(m("(web|api)-[0-9]+", "api-12"));
        assert!(!m("(web|api)-[0-9]+", "api-"));
        assert!(m("a|b", "b"));
        assert!(m("^x?y$", "y"));
        assert!(m("[^-]+", "abc"));
        assert!(Regex::new("a{2}").is_err());
    }
}
