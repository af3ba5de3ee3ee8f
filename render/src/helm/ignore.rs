//! `.helmignore`, with Helm's rules (`pkg/ignore`): one pattern a line, `#` comments,
//! `!` negation (Helm's own meaning: a path that does *not* match is ignored), a trailing
//! `/` for folders only, a leading `/` or an inner `/` to match the chart-relative path,
//! otherwise the base name; `**` is refused as Helm refuses it. Helm adds
//! `templates/.?*` (hidden files in `templates/`) to every chart.

use crate::discovery::glob_match;

#[derive(Debug, Clone)]
struct Pattern {
    rule: String,
    negate: bool,
    must_dir: bool,
    /// Match the chart-relative path, not just the base name.
    full_path: bool,
}

/// The rules of one chart's `.helmignore`, plus Helm's default.
#[derive(Debug, Clone, Default)]
pub(crate) struct HelmIgnore {
    patterns: Vec<Pattern>,
}

impl HelmIgnore {
    /// Parses `.helmignore` text (`None`: the chart has none). `Err` names the line.
    pub(crate) fn parse(text: Option<&str>) -> Result<Self, String> {
        let mut rules = HelmIgnore::default();
        let text = text.unwrap_or("");
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, line) in text.lines().enumerate() {
            rules
                .add(line)
                .map_err(|e| format!(".helmignore:{}: {e}", i + 1))?;
        }
        rules.add("templates/.?*")?;
        Ok(rules)
    }

    fn add(&mut self, line: &str) -> Result<(), String> {
        let mut rule = line.trim();
        if rule.is_empty() || rule.starts_with('#') {
            return Ok(());
        }
        if rule.contains("**") {
            return Err("double-star (**) syntax is not supported".to_string());
        }
        let negate = rule.starts_with('!');
        if negate {
            rule = &rule[1..];
        }
        let must_dir = rule.ends_with('/');
        if must_dir {
            rule = rule.trim_end_matches('/');
        }
        let full_path = rule.contains('/');
        self.patterns.push(Pattern {
            rule: rule.trim_start_matches('/').to_string(),
            negate,
            must_dir,
            full_path,
        });
        Ok(())
    }

    /// Whether the chart-relative `path` is left out of the chart.
    pub(crate) fn ignores(&self, path: &str, is_dir: bool) -> bool {
        if path.is_empty() || path == "." || path == "./" {
            return false;
        }
        for p in &self.patterns {
            let name = if p.full_path {
                path
            } else {
                crate::repo_fs::file_name(path)
            };
            if p.negate {
                // Helm: a negated rule ignores everything it does not match.
                if p.must_dir && !is_dir {
                    return true;
                }
                if !glob_match(&p.rule, name) {
                    return true;
                }
                continue;
            }
            if p.must_dir && !is_dir {
                continue;
            }
            if glob_match(&p.rule, name) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_rules() {
        let r =
            HelmIgnore::parse(Some("# c\n*.bak\n/secret.txt\ndocs/\nci/*.yaml\n")).expect("parses");
        assert!(r.ignores("a.bak", false));
        assert!(r.ignores("templates/a.bak", false));
        assert!(r.ignores("secret.txt", false));
        assert!(r.ignores("docs", true));
        assert!(!r.ignores("docs", false));
        assert!(r.ignores("ci/x.yaml", false));
        assert!(!r.ignores("ci/sub/x.yaml", false));
        assert!(r.ignores("templates/.hidden", false));
        assert!(!r.ignores("templates/x.yaml", false));
        assert!(!r.ignores("values.yaml", false));
    }

    #[test]
    fn double_star_is_refused_with_its_line() {
        let e = HelmIgnore::parse(Some("ok\n**/x\n")).expect_err("refused");
        assert_eq!(e, ".helmignore:2: double-star (**) syntax is not supported");
    }
}
