//! placeholder
use crate::diagnostic::{Diagnostic, Diags};
use crate::output::Object;
use crate::sources::Sources;

pub(crate) fn build(_sources: &Sources<'_>, dir: &str) -> Diags<Vec<Object>> {
    Err(vec![Diagnostic::new(dir, "kustomize is not supported yet")])
}
