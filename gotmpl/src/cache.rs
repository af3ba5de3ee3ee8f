//! [`ParseCache`]: parsed template texts remembered by a digest of their text and of the
//! options that shape a parse, so that loading the same chart again (a new revision whose
//! templates did not change, another hub replica's load, a `tpl` string seen before) skips
//! lexing and parsing, which is a fifth of a large chart's render.
//!
//! A parse depends only on the text, the delimiters and `max_depth` (the function table is
//! static), so equal digests give equal trees; only successful parses are kept, so errors
//! are always reported by a fresh parse. The cache is bounded by the bytes of text it holds
//! and forgets the oldest entries first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::Options;
use crate::parse::{self, List, ParseError};

/// One parsed text: its body, its `define`s, and the text itself (error locations read it).
pub(crate) struct Trees {
    pub root: Arc<List>,
    pub defines: Vec<(String, Arc<List>)>,
    pub source: Arc<str>,
}

type Key = [u8; 32];

/// A bounded, thread-safe memo of parsed texts, shared by the [`crate::TemplateSet`]s built
/// with [`crate::TemplateSet::with_cache`].
pub struct ParseCache {
    max_bytes: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    trees: HashMap<Key, Arc<Trees>>,
    /// Keys oldest first, with the length of their text.
    order: VecDeque<(Key, usize)>,
    bytes: usize,
}

impl ParseCache {
    /// A cache holding parses of at most `max_bytes` of template text in all.
    pub fn new(max_bytes: usize) -> ParseCache {
        ParseCache {
            max_bytes,
            inner: Mutex::new(Entries::default()),
        }
    }

    /// The parse of `text` under `options`, from the cache or parsed now (and remembered).
    pub(crate) fn get_or_parse(
        &self,
        options: &Options,
        text: &str,
    ) -> Result<Arc<Trees>, ParseError> {
        let key = digest(options, text);
        // A poisoned lock only means another thread panicked while holding it; the cache
        // then stays out of the way rather than trusting half-updated entries.
        if let Ok(entries) = self.inner.lock()
            && let Some(t) = entries.trees.get(&key)
        {
            return Ok(t.clone());
        }
        let trees = Arc::new(parse_trees(options, text)?);
        if text.len() <= self.max_bytes
            && let Ok(mut entries) = self.inner.lock()
        {
            entries.insert(key, trees.clone(), text.len(), self.max_bytes);
        }
        Ok(trees)
    }
}

impl Entries {
    fn insert(&mut self, key: Key, trees: Arc<Trees>, len: usize, max_bytes: usize) {
        if self.trees.insert(key, trees).is_some() {
            // Another thread parsed the same text meanwhile: it is already counted.
            return;
        }
        self.order.push_back((key, len));
        self.bytes += len;
        while self.bytes > max_bytes {
            let Some((old, old_len)) = self.order.pop_front() else {
                break;
            };
            self.trees.remove(&old);
            self.bytes -= old_len;
        }
    }
}

/// Parses `text` without a cache.
pub(crate) fn parse_trees(options: &Options, text: &str) -> Result<Trees, ParseError> {
    let delims = (options.delimiters.0.as_str(), options.delimiters.1.as_str());
    let parsed = parse::parse(text, delims, &crate::funcs::exists, options.max_depth)?;
    Ok(Trees {
        root: Arc::new(parsed.root),
        defines: parsed
            .defines
            .into_iter()
            .map(|(name, list)| (name, Arc::new(list)))
            .collect(),
        source: Arc::from(text),
    })
}

/// SHA-256 of everything a parse depends on, each part length-prefixed so that no two
/// different inputs run together into the same bytes.
fn digest(options: &Options, text: &str) -> Key {
    let mut h = Sha256::new();
    for part in [
        options.delimiters.0.as_bytes(),
        options.delimiters.1.as_bytes(),
        text.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update((options.max_depth as u64).to_le_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options::default()
    }

    fn parse(cache: &ParseCache, options: &Options, text: &str) -> Arc<Trees> {
        cache
            .get_or_parse(options, text)
            .unwrap_or_else(|e| panic!("{text}: {}", e.message))
    }

    /// (entries, bytes of text) the cache holds.
    fn held(cache: &ParseCache) -> (usize, usize) {
        let entries = cache.inner.lock().unwrap_or_else(|p| p.into_inner());
        (entries.trees.len(), entries.bytes)
    }

    #[test]
    fn same_text_and_options_share_one_parse() {
        let cache = ParseCache::new(1 << 20);
        let a = parse(&cache, &opts(), "{{ .x }}");
        let b = parse(&cache, &opts(), "{{ .x }}");
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn options_that_shape_the_parse_are_part_of_the_key() {
        let cache = ParseCache::new(1 << 20);
        let text = "${ .x } {{ .y }}";
        let braces = parse(&cache, &opts(), text);
        let mut dollar = opts();
        dollar.delimiters = ("${".to_string(), "}".to_string());
        let other = parse(&cache, &dollar, text);
        assert!(!Arc::ptr_eq(&braces, &other));
        let mut shallow = opts();
        shallow.max_depth = 1;
        assert!(cache.get_or_parse(&shallow, "{{ ((1)) }}").is_err());
        assert!(cache.get_or_parse(&opts(), "{{ ((1)) }}").is_ok());
    }

    #[test]
    fn errors_are_not_remembered_and_the_size_is_bounded() {
        let cache = ParseCache::new(16);
        assert!(cache.get_or_parse(&opts(), "{{ end }}").is_err());
        assert_eq!(held(&cache), (0, 0));
        let first = parse(&cache, &opts(), "{{ .aaaaaa }}");
        parse(&cache, &opts(), "{{ .bbbbbb }}");
        assert_eq!(held(&cache), (1, 13));
        let again = parse(&cache, &opts(), "{{ .aaaaaa }}");
        assert!(
            !Arc::ptr_eq(&first, &again),
            "the oldest entry was forgotten"
        );
    }
}
