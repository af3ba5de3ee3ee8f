//! Go's `text/template`, with the Sprig functions and Helm's own template functions, so that a
//! chart renders here exactly as `helm template` renders it.
//!
//! The pipeline is the same as Go's: [`lex`] splits text into tokens, [`parse`] builds the
//! AST (with Go's parse-time checks), and [`exec`] walks it over a [`Value`]. Functions live
//! in [`funcs`] (Go's builtins, Sprig, Helm's). Every evaluation is metered by [`Options`]'
//! budgets, so hostile templates stop with [`Error::Budget`] instead of hanging.
//!
//! **Architecture invariant:** pure. No I/O, no clock but [`Clock`], no threads, no tokio.
//! `.Files` are data the caller hands in ([`Files`]); `lookup` returns an empty map as
//! `helm template` does.
#![forbid(unsafe_code)]

mod cache;
mod exec;
mod funcs;
mod gofmt;
mod helm;
mod lex;
mod parse;
pub mod semver;
mod value;
mod yaml;
mod yaml_fast;

use std::collections::HashMap;
use std::sync::Arc;

pub use cache::ParseCache;
pub use helm::{ApiVersions, Files, GoStruct, KubeVersion};
pub use value::{Map, Object, Value};
pub use yaml::{manifest_to_json, yaml_to_json};

/// What a field access on a map does when the key is missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingKey {
    /// Go's `missingkey=zero`: the zero value (nil), printed as `<no value>`. Helm's default.
    #[default]
    Zero,
    /// Go's `missingkey=error` (`helm template --strict`).
    Error,
}

/// The only clock templates may read (`now`, `ago`, `date` defaults...).
#[derive(Clone, Copy, Debug, Default)]
pub enum Clock {
    /// The system clock, as Helm reads it.
    #[default]
    System,
    /// A fixed instant, for deterministic renders and tests.
    Fixed(time::OffsetDateTime),
}

/// Helm's parts of the environment that are not data.
#[derive(Clone, Debug, Default)]
pub struct HelmContext {
    /// What `now` returns.
    pub clock: Clock,
}

/// Limits and modes for a template set. Budgets count per `execute` call.
#[derive(Clone, Debug)]
pub struct Options {
    /// Evaluation steps (every node evaluated, every element a function builds) per execute.
    pub max_steps: u64,
    /// Largest output of one template, and largest string any function may build.
    pub max_output_bytes: usize,
    /// Deepest nesting of `template`/`include`/`tpl` calls, and of parentheses and blocks
    /// at parse time.
    pub max_depth: usize,
    /// Stack the executor may use below `execute`'s own frame. Whatever the nesting, the
    /// render stops with [`Error::Budget`] before it can overflow the thread's stack; the
    /// default (1 MiB) suits the 2 MiB stacks of spawned and tokio threads.
    pub max_stack_bytes: usize,
    pub missing_key: MissingKey,
    pub helm: HelmContext,
    /// Action delimiters: `("{{", "}}")` for Helm; Fleet's values templating uses `("${", "}")`.
    pub delimiters: (String, String),
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_steps: 50_000_000,
            max_output_bytes: 64 << 20,
            max_depth: 100,
            max_stack_bytes: 1 << 20,
            missing_key: MissingKey::Zero,
            helm: HelmContext::default(),
            delimiters: ("{{".to_string(), "}}".to_string()),
        }
    }
}

/// Everything that can go wrong, worded as Go and Helm word it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    /// Go: `template: NAME:LINE: MESSAGE`.
    #[error("template: {name}:{line}: {message}")]
    Parse {
        name: String,
        line: usize,
        message: String,
    },
    /// Go: `template: NAME:LINE:COL: executing "TEMPLATE" at <NODE>: MESSAGE`.
    #[error("template: {location}: executing \"{template}\" at <{context}>: {message}")]
    Exec {
        location: String,
        template: String,
        context: String,
        message: String,
    },
    /// Go, for errors outside any node (`template: no template "x" associated with ...`);
    /// `template` is the template that was asked for.
    #[error("template: {message}")]
    Template { template: String, message: String },
    /// A budget in [`Options`] ran out.
    #[error("template: {location}: {message}")]
    Budget { location: String, message: String },
    /// `fail` or `required`, as Helm prints them: the location is the outermost call site.
    #[error("execution error at ({location}): {message}")]
    Fail { location: String, message: String },
}

impl Error {
    /// The message as `helm template` prints it (after its `Error: ` prefix): Helm rewrites
    /// parse errors as `parse error at (NAME:LINE): MESSAGE` and `fail`/`required` as
    /// `execution error at (NAME:LINE:COL): MESSAGE`; other errors are Go's own.
    pub fn helm_message(&self) -> String {
        match self {
            Error::Parse { .. } => {
                let text = self.to_string();
                let tokens: Vec<&str> = text.split(": ").collect();
                match tokens.as_slice() {
                    [_, location, .., last] => format!("parse error at ({location}): {last}"),
                    _ => text,
                }
            }
            other => other.to_string(),
        }
    }
}

/// Parses one text into its templates: `name` for the body, then its `define`s and
/// `block`s (Go's rule that an empty body does not replace an existing one is the caller's).
/// With a `cache`, a text parsed before under the same options is not parsed again.
pub(crate) fn parse_templates(
    options: &Options,
    cache: Option<&ParseCache>,
    name: &str,
    parse_name: &str,
    text: &str,
) -> Result<Vec<(String, Arc<parse::Template>)>, Error> {
    let trees = match cache {
        Some(cache) => cache.get_or_parse(options, text),
        None => cache::parse_trees(options, text).map(Arc::new),
    }
    .map_err(|e| Error::Parse {
        name: parse_name.to_string(),
        line: e.line,
        message: e.message,
    })?;
    let make = |tname: &str, list: &Arc<parse::List>| {
        (
            tname.to_string(),
            Arc::new(parse::Template {
                name: tname.to_string(),
                parse_name: parse_name.to_string(),
                source: trees.source.clone(),
                root: list.clone(),
            }),
        )
    };
    let mut out = vec![make(name, &trees.root)];
    out.extend(trees.defines.iter().map(|(d, l)| make(d, l)));
    Ok(out)
}

/// A set of parsed templates that can call each other (Go's `*template.Template` with its
/// associated templates, as Helm builds one for a chart and its subcharts).
#[derive(Clone)]
pub struct TemplateSet {
    options: Arc<Options>,
    templates: HashMap<String, Arc<parse::Template>>,
    /// Where parses are remembered across sets (and `tpl` calls), if anywhere.
    cache: Option<Arc<ParseCache>>,
}

impl TemplateSet {
    pub fn new(options: Options) -> TemplateSet {
        TemplateSet {
            options: Arc::new(options),
            templates: HashMap::new(),
            cache: None,
        }
    }

    /// A set whose parses (and its `tpl` calls') go through `cache`: a text already parsed
    /// under the same options, by this set or another, is not lexed and parsed again.
    pub fn with_cache(options: Options, cache: Arc<ParseCache>) -> TemplateSet {
        TemplateSet {
            cache: Some(cache),
            ..TemplateSet::new(options)
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Parses one file under `name`; its `define`s and `block`s join the set. As in Go, a
    /// later definition replaces an earlier one unless its body is empty.
    pub fn parse(&mut self, name: &str, text: &str) -> Result<(), Error> {
        self.parse_as(name, name, text)
    }

    /// Parses `text` as template `name`, reporting locations as `parse_name`.
    fn parse_as(&mut self, name: &str, parse_name: &str, text: &str) -> Result<(), Error> {
        for (tname, t) in
            parse_templates(&self.options, self.cache.as_deref(), name, parse_name, text)?
        {
            if parse::is_empty_tree(&t.root) && self.templates.contains_key(&tname) {
                continue;
            }
            self.templates.insert(tname, t);
        }
        Ok(())
    }

    /// Executes template `name` with `data` as dot. Like Go, nil values print as
    /// `<no value>`; Helm then replaces every `<no value>` with "" (the caller's job).
    pub fn execute(&self, name: &str, data: &Value) -> Result<String, Error> {
        exec::execute(self, name, data)
    }

    /// The names of all templates in the set, files and defines, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> = self.templates.keys().map(String::as_str).collect();
        names.sort_unstable();
        names.into_iter()
    }

    /// True if any template might read top-level field `field` (e.g. `Capabilities`):
    /// a `.Capabilities` anywhere in a chain, the string `"Capabilities"` as an argument
    /// (`index $ "Capabilities"`), or any `tpl` call (its text is only known at run time).
    /// Conservative: false only when no template can read it.
    pub fn reads_field(&self, field: &str) -> bool {
        self.templates
            .values()
            .any(|t| exec::mentions_field(&t.root, field))
    }

    fn lookup(&self, name: &str) -> Option<&Arc<parse::Template>> {
        self.templates.get(name)
    }
}
