//! `Budget`: what one render may spend, charged *while* it builds, so a hostile bundle
//! (a kustomize diamond, a deep chain of bases, a generator that copies one big file a
//! thousand times, a JSON patch that doubles an object with every `copy`) fails after at
//! most one step over the limit, in bounded memory, instead of after it has built
//! everything.
//!
//! Four counters: objects materialised, bytes materialised or copied, work steps (one
//! object through one transformer, one patch tried on one object, one kustomization
//! read), and kustomization nesting depth. Work is a deterministic count, not a clock, so
//! a render that fails on its budget fails the same way on every machine.
//!
//! A charge that would go over its limit is refused (nothing is added) and exhausts the
//! budget: every later charge fails too, so callers stop at the first refusal however
//! they handle the error.

use std::cell::Cell;
use std::fmt;
use std::io;

use serde_json::Value;

use crate::Limits;

/// The budget's limits, each a `Limits` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Objects,
    Bytes,
    Work,
    Depth,
}

/// A refused charge: which limit, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exceeded {
    limit: Limit,
    value: u64,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.value;
        let (what, field) = match self.limit {
            Limit::Objects => (format!("more than {n} objects"), "max_objects"),
            Limit::Bytes => (
                format!("more than {n} bytes of objects built or copied"),
                "max_render_bytes",
            ),
            Limit::Work => (format!("more than {n} work steps"), "max_render_work"),
            Limit::Depth => (
                format!("kustomizations nested more than {n} deep"),
                "max_kustomize_depth",
            ),
        };
        write!(f, "render budget exceeded: {what} (Limits::{field})")
    }
}

/// What one render may spend, and what it has spent. Interior mutability because the
/// pipeline reaches it through the shared [`crate::sources::Sources`].
#[derive(Debug)]
pub(crate) struct Budget {
    max_objects: u64,
    max_bytes: u64,
    max_work: u64,
    max_depth: usize,
    objects: Cell<u64>,
    bytes: Cell<u64>,
    work: Cell<u64>,
    exceeded: Cell<Option<Exceeded>>,
}

/// What a render has spent so far.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spent {
    pub objects: u64,
    pub bytes: u64,
    pub work: u64,
}

impl Budget {
    pub(crate) fn new(limits: &Limits) -> Self {
        Budget {
            max_objects: limits.max_objects as u64,
            max_bytes: limits.max_render_bytes,
            max_work: limits.max_render_work,
            max_depth: limits.max_kustomize_depth,
            objects: Cell::new(0),
            bytes: Cell::new(0),
            work: Cell::new(0),
            exceeded: Cell::new(None),
        }
    }

    fn charge(
        &self,
        counter: &Cell<u64>,
        n: u64,
        value: u64,
        limit: Limit,
    ) -> Result<(), Exceeded> {
        if let Some(e) = self.exceeded.get() {
            return Err(e);
        }
        let total = counter.get().saturating_add(n);
        if total > value {
            let e = Exceeded { limit, value };
            self.exceeded.set(Some(e));
            return Err(e);
        }
        counter.set(total);
        Ok(())
    }

    /// One more object, of `value`'s size, enters the render.
    pub(crate) fn object(&self, value: &Value) -> Result<(), Exceeded> {
        self.charge(&self.objects, 1, self.max_objects, Limit::Objects)?;
        self.bytes(json_size(value))
    }

    /// `n` bytes are materialised or copied.
    pub(crate) fn bytes(&self, n: u64) -> Result<(), Exceeded> {
        self.charge(&self.bytes, n, self.max_bytes, Limit::Bytes)
    }

    /// `n` steps of work (see the module doc for what a step is).
    pub(crate) fn work(&self, n: u64) -> Result<(), Exceeded> {
        self.charge(&self.work, n, self.max_work, Limit::Work)
    }

    /// Work for parsing (or copying parsed) `len` bytes of YAML: a step per 16 bytes
    /// (parsing costs about as much as moving one small object through a transformer),
    /// at least one, since parsing the same small file again and again costs too.
    pub(crate) fn parse(&self, len: usize) -> Result<(), Exceeded> {
        self.work(1 + len as u64 / 16)
    }

    /// A kustomization `depth` levels below the root is about to be built.
    pub(crate) fn depth(&self, depth: usize) -> Result<(), Exceeded> {
        if let Some(e) = self.exceeded.get() {
            return Err(e);
        }
        if depth > self.max_depth {
            let e = Exceeded {
                limit: Limit::Depth,
                value: self.max_depth as u64,
            };
            self.exceeded.set(Some(e));
            return Err(e);
        }
        Ok(())
    }

    /// The refused charge, once there was one: the render is over.
    pub(crate) fn refused(&self) -> Option<Exceeded> {
        self.exceeded.get()
    }

    /// Starts the object count again for the next render sharing this budget (a bundle's
    /// variants at load share one budget of bytes and work; each may have `max_objects`).
    pub(crate) fn next_render(&self) {
        self.objects.set(0);
    }

    #[cfg(test)]
    pub(crate) fn spent(&self) -> Spent {
        Spent {
            objects: self.objects.get(),
            bytes: self.bytes.get(),
            work: self.work.get(),
        }
    }
}

/// The size of `v` as compact JSON (`serde_json::to_string`), counted without encoding
/// it: every rendered object is counted, and walking the value is a few times cheaper
/// than serialising it into a counting sink.
pub(crate) fn json_size(v: &Value) -> u64 {
    match v {
        Value::Null => 4,
        Value::Bool(b) => 4 + u64::from(!*b),
        Value::Number(n) => number_size(n),
        Value::String(s) => string_size(s),
        Value::Array(items) => {
            2 + items.iter().map(json_size).sum::<u64>() + items.len().saturating_sub(1) as u64
        }
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| string_size(k) + 1 + json_size(v))
                .sum::<u64>()
                + map.len().saturating_sub(1) as u64
        }
    }
}

/// A number as serde_json writes it (itoa, or ryu for floats).
fn number_size(n: &serde_json::Number) -> u64 {
    struct Count(u64);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a number to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, n);
    c.0
}

/// A string with its quotes and escapes, as serde_json writes it: `"` and `\` and the
/// short escapes take two bytes, other control characters six (`\u00XX`), the rest as is.
fn string_size(s: &str) -> u64 {
    let extra: u64 = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x0c | b'\n' | b'\r' | b'\t' => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    2 + s.len() as u64 + extra
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny() -> Budget {
        Budget::new(&Limits {
            max_objects: 2,
            max_render_bytes: 100,
            max_render_work: 10,
            max_kustomize_depth: 3,
            ..Limits::default()
        })
    }

    #[test]
    fn a_refused_charge_adds_nothing_and_every_later_charge_fails() {
        let b = tiny();
        assert!(b.work(6).is_ok());
        let e = b.work(5).expect_err("over");
        assert_eq!(b.spent().work, 6);
        assert!(e.to_string().contains("max_render_work"), "{e}");
        assert_eq!(b.refused(), Some(e));
        assert!(b.work(1).is_err());
        assert!(b.bytes(1).is_err());
    }

    #[test]
    fn objects_are_counted_and_sized() {
        let b = tiny();
        let v = json!({"a": "b"});
        assert!(b.object(&v).is_ok());
        assert!(b.object(&v).is_ok());
        assert_eq!(b.spent().bytes, 2 * json_size(&v));
        let e = b.object(&v).expect_err("third object");
        assert!(e.to_string().contains("max_objects"), "{e}");
    }

    #[test]
    fn next_render_resets_objects_only() {
        let b = tiny();
        assert!(b.object(&json!(1)).is_ok());
        assert!(b.work(3).is_ok());
        b.next_render();
        assert_eq!(b.spent().objects, 0);
        assert_eq!(b.spent().work, 3);
    }

    #[test]
    fn depth_beyond_the_limit_is_refused() {
        let b = tiny();
        assert!(b.depth(3).is_ok());
        let e = b.depth(4).expect_err("too deep");
        assert!(e.to_string().contains("max_kustomize_depth"), "{e}");
    }

    #[test]
    fn json_size_is_the_compact_encoding_length() {
        let v = json!({
            "k": [1, "two", null, true, false, -3.5, 1e300, 18446744073709551615u64],
            "esc\"\\": "tab\t nl\n cr\r bell\u{7} del\u{7f} é 😀",
            "": {}, "e": [], "n": [[], {"a": {}}]
        });
        assert_eq!(
            json_size(&v),
            serde_json::to_string(&v).expect("encodes").len() as u64
        );
    }

    proptest::proptest! {
        #[test]
        fn json_size_matches_serde_json_for_any_value(v in any_json()) {
            proptest::prop_assert_eq!(
                json_size(&v),
                serde_json::to_string(&v).expect("encodes").len() as u64
            );
        }
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
