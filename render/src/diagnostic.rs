//! `Diagnostic`: one error or warning about a bundle, located by repo-relative file,
//! line and column. Every failure the renderer reports is one of these, so the hub can
//! put them in a bundle's status and the CLI can print them as `file:line:col: message`.

use std::fmt;

/// An error or warning about a bundle. `file` is relative to the repo root ("" when the
/// problem is not about one file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(file: impl Into<String>, line: u32, message: impl Into<String>) -> Self {
        Diagnostic {
            line: Some(line),
            ..Diagnostic::new(file, message)
        }
    }

    pub(crate) fn with_column(mut self, column: Option<u32>) -> Self {
        self.column = column;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        if !self.file.is_empty() {
            f.write_str(&self.file)?;
            wrote = true;
        }
        if let Some(line) = self.line {
            if wrote {
                f.write_str(":")?;
            }
            write!(f, "{line}")?;
            wrote = true;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if wrote {
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// The result of a step that can fail with several diagnostics at once.
pub(crate) type Diags<T> = Result<T, Vec<Diagnostic>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_omits_missing_parts() {
        let d = Diagnostic::at("a/b.yaml", 3, "bad").with_column(Some(7));
        assert_eq!(d.to_string(), "a/b.yaml:3:7: bad");
        assert_eq!(
            Diagnostic::at("a.yaml", 3, "bad").to_string(),
            "a.yaml:3: bad"
        );
        assert_eq!(Diagnostic::new("a.yaml", "bad").to_string(), "a.yaml: bad");
        assert_eq!(Diagnostic::new("", "bad").to_string(), "bad");
    }
}
