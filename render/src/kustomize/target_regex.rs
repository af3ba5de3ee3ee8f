//! The regular expressions of a kustomize patch `target` (group, version, kind, name,
//! namespace). Kustomize compiles each with Go's `regexp` (RE2) as `^(?:pattern)$`; we
//! compile the same anchored form with the `regex` crate, which like RE2 runs in time
//! linear in the input, so a pattern such as `(a+)+b` cannot stall a render.
//!
//! The two dialects are nearly the same. Where they differ, a pattern is refused with a
//! clear message rather than read differently from kustomize: Rust-only flags (`x`, `u`,
//! `R`), Rust's class set operations (`&&`, `--`, `~~`) and nested classes, which Go
//! reads as literal characters; and RE2's `\Q...\E` quoting, which the `regex` crate
//! lacks. Size is bounded before and during compilation.

use regex::{Regex, RegexBuilder};

/// Longest pattern accepted, in bytes. Real targets are names, rarely over 100.
const MAX_PATTERN_BYTES: usize = 1024;

/// Bound on the compiled program, so a short pattern with large counted repetitions
/// (`(x{1000}){1000}`) cannot take memory or time to build.
const MAX_COMPILED_BYTES: usize = 256 << 10;

/// Compiles `pattern` of the target field `field` as kustomize anchors it.
pub(crate) fn compile(field: &str, pattern: &str) -> Result<Regex, String> {
    let refuse = |why: String| format!("patch target {field} {pattern:?}: {why}");
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(refuse(format!(
            "pattern is {} bytes, over the limit of {MAX_PATTERN_BYTES}",
            pattern.len()
        )));
    }
    not_go_compatible(pattern).map_or(Ok(()), |why| Err(refuse(why)))?;
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(MAX_COMPILED_BYTES)
        .dfa_size_limit(MAX_COMPILED_BYTES)
        .build()
        .map_err(|e| {
            refuse(match e {
                regex::Error::CompiledTooBig(limit) => {
                    format!("pattern compiles to more than {limit} bytes")
                }
                // The crate's message points at the pattern with a caret; keep its reason.
                e => format!(
                    "not a regular expression flotilla accepts (RE2 syntax): {}",
                    e.to_string().lines().last().unwrap_or_default().trim()
                ),
            })
        })
}

/// Why `pattern` would mean something else to Go's RE2 than to the `regex` crate, if it
/// would.
fn not_go_compatible(pattern: &str) -> Option<String> {
    let b = pattern.as_bytes();
    let mut i = 0;
    let mut class_depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'\\' if b.get(i + 1) == Some(&b'Q') => {
                return Some(
                    "\\Q...\\E quoting is RE2 syntax that Rust's regex does not have; \
                     escape each character instead"
                        .into(),
                );
            }
            b'\\' => i += 1,
            b'[' if class_depth > 0 && b.get(i + 1) == Some(&b':') => {
                // A POSIX class `[:alpha:]`, the same in both.
                match pattern[i..].find(":]") {
                    Some(end) => i += end + 1,
                    None => return Some("unclosed POSIX class".into()),
                }
            }
            b'[' if class_depth > 0 => {
                return Some(
                    "a '[' inside a class is a nested class in Rust's regex but a literal in \
                     Go's RE2 (which kustomize uses); escape it as \\["
                        .into(),
                );
            }
            b'[' => {
                class_depth = 1;
                // `]` right after `[` or `[^` is a literal in both.
                if b.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if class_depth > 0 => class_depth = 0,
            op @ (b'&' | b'-' | b'~') if class_depth > 0 && b.get(i + 1) == Some(&op) => {
                let op = char::from(op);
                return Some(format!(
                    "{op}{op} inside a class is a set operation in Rust's regex but literal \
                     characters in Go's RE2 (which kustomize uses); escape them"
                ));
            }
            b'(' if class_depth == 0 && b.get(i + 1) == Some(&b'?') => {
                let flags = pattern[i + 2..]
                    .split([':', ')'])
                    .next()
                    .unwrap_or_default();
                if let Some(f) = flags.chars().find(|c| matches!(c, 'x' | 'u' | 'R')) {
                    return Some(format!(
                        "flag {f:?} exists in Rust's regex but not in Go's RE2 (which \
                         kustomize uses)"
                    ));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        compile("name", p).expect("valid").is_match(t)
    }

    #[test]
    fn patterns_are_anchored_like_kustomize() {
        assert!(m("web", "web"));
        assert!(!m("web", "web2"));
        assert!(!m("web", "my-web"));
        assert!(m("web.*", "web-frontend"));
        assert!(m("(web|api)-[0-9]+", "api-12"));
        assert!(!m("(web|api)-[0-9]+", "api-"));
        // The whole alternation is anchored, not only its ends: `^(?:a|b)$`.
        assert!(m("a|b", "b"));
        assert!(!m("a|b", "ab"));
        assert!(m("^x?y$", "y"));
        assert!(m("[^-]+", "abc"));
        assert!(m("a{2}", "aa"));
        assert!(m("[[:alpha:]]+", "abc"));
        assert!(m("(?i)WEB", "web"));
    }

    #[test]
    fn nested_quantifiers_on_a_long_name_match_in_linear_time_like_re2() {
        // Backtracking engines take exponential time here; the answer is RE2's.
        let long = "a".repeat(5000);
        assert!(!m("(a+)+b", &long));
        assert!(m("(a+)+b", &format!("{long}b")));
        assert!(!m("(a|aa)*c", &long));
    }

    #[test]
    fn patterns_go_and_rust_read_differently_are_refused_with_the_reason() {
        for (p, why) in [
            ("[a&&b]", "set operation"),
            ("[a--b]", "set operation"),
            ("[a~~b]", "set operation"),
            ("[[a]]", "nested class"),
            ("(?x)a b", "flag 'x'"),
            ("\\Qa.b\\E", "quoting"),
        ] {
            let e = compile("name", p).expect_err(p);
            assert!(e.contains(why), "{p}: {e}");
            assert!(e.contains("patch target name"), "{p}: {e}");
        }
        // Literal dashes and ranges are the same in both.
        assert!(m("[a-c-]+", "b-"));
        assert!(m("a--b", "a--b"));
    }

    #[test]
    fn invalid_huge_or_oversized_patterns_get_a_clear_error() {
        let e = compile("namespace", "(a").expect_err("unclosed");
        assert!(e.contains("patch target namespace \"(a\""), "{e}");
        assert!(e.contains("RE2 syntax"), "{e}");
        let e = compile("name", "\\1").expect_err("backreference");
        assert!(e.contains("RE2 syntax"), "{e}");
        let e = compile("name", "((a{100}){100}){100}").expect_err("too big");
        assert!(e.contains("compiles to more than"), "{e}");
        let e = compile("name", &"a".repeat(2000)).expect_err("too long");
        assert!(e.contains("over the limit"), "{e}");
    }
}
