//! Keys for append-mostly records (deployment history, the audit trail) that stay
//! unique when several hub replicas write one store, and sort by time.
//!
//! A key is `<unix nanoseconds, 20 digits>-<writer id, 16 hex>`. The writer id is
//! random per `Stamper` (each `History` and `Audit` of each process has one), and a
//! writer's stamps strictly increase: a stamp is `max(now, last + 1)`, with `last`
//! starting at the newest stamp in the snapshot the writer was restored from. So two
//! replicas never write the same key (same nanosecond *and* same 64-bit random id), one
//! replica's records keep their order even if its clock steps back, and a range read
//! returns records in wall-clock order (to within the replicas' clock skew). A writer
//! also `observe`s the ids other replicas made (`ha::mirror`), so its next record sorts
//! after every one it has seen.
//!
//! Why not a counter allocated with `Store::compare_and_swap`: that is one etcd round
//! trip per record before it can be queued, and every replica's history and audit
//! writes would contend on one key (a refused swap retries). The stamp needs no
//! coordination, and time order is the order `flotilla history` and `flotilla audit`
//! show anyway.
//!
//! Keys written before replicas existed are 16 hex digits of a per-process counter
//! (`RecordId::Legacy`). They still parse, and sort before every stamped key both as
//! strings (`"0000…"` < `"017…"`) and as `RecordId`s, which is true of when they were
//! written; no migration is needed.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where a record sits in its table's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordId {
    /// A key of the single-hub format: a per-process counter.
    Legacy(u64),
    /// Unix nanoseconds when recorded, then the writer that recorded it.
    Stamped { nanos: u64, writer: u64 },
}

impl RecordId {
    /// The store key (see the module doc for the format).
    pub fn key(self) -> String {
        match self {
            RecordId::Legacy(seq) => format!("{seq:016x}"),
            RecordId::Stamped { nanos, writer } => format!("{nanos:020}-{writer:016x}"),
        }
    }

    /// Parses a key made by `key`; `None` for anything else.
    pub fn parse(key: &str) -> Option<RecordId> {
        let hex = |s: &str| {
            (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(s, 16).ok())
                .flatten()
        };
        match key.split_once('-') {
            None => hex(key).map(RecordId::Legacy),
            Some((nanos, writer)) => {
                if nanos.len() != 20 || !nanos.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(RecordId::Stamped {
                    nanos: nanos.parse().ok()?,
                    writer: hex(writer)?,
                })
            }
        }
    }

    /// The Unix second of a stamped id.
    pub fn unix(self) -> Option<i64> {
        match self {
            RecordId::Legacy(_) => None,
            RecordId::Stamped { nanos, .. } => i64::try_from(nanos / 1_000_000_000).ok(),
        }
    }

    /// The number shown as a record's sequence: the stamp's nanoseconds, or the old
    /// counter.
    pub fn seq(self) -> u64 {
        match self {
            RecordId::Legacy(seq) => seq,
            RecordId::Stamped { nanos, .. } => nanos,
        }
    }
}

/// Makes this writer's `RecordId`s. Callers hold it under their own lock.
#[derive(Debug)]
pub struct Stamper {
    writer: u64,
    last: u64,
}

impl Stamper {
    /// A writer with a fresh random id whose stamps come after every id in `seen`.
    pub fn after<'a>(seen: impl IntoIterator<Item = &'a RecordId>) -> Stamper {
        let last = seen
            .into_iter()
            .filter_map(|id| match id {
                RecordId::Stamped { nanos, .. } => Some(*nanos),
                RecordId::Legacy(_) => None,
            })
            .max()
            .unwrap_or(0);
        Stamper {
            writer: rand::random(),
            last,
        }
    }

    /// Notes an id another writer made, so this writer's next one sorts after it (a
    /// record taken from another replica stays before the ones made here next, even if
    /// that replica's clock is ahead).
    pub fn observe(&mut self, id: RecordId) {
        if let RecordId::Stamped { nanos, .. } = id {
            self.last = self.last.max(nanos);
        }
    }

    pub fn stamp(&mut self) -> RecordId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.last = now.max(self.last.saturating_add(1));
        RecordId::Stamped {
            nanos: self.last,
            writer: self.writer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_sort_as_their_ids_with_legacy_keys_first() {
        let mut a = Stamper::after(&[]);
        let mut b = Stamper::after(&[]);
        let ids = [
            RecordId::Legacy(0x10),
            RecordId::Legacy(0x9),
            a.stamp(),
            b.stamp(),
            a.stamp(),
        ];
        let mut by_key: Vec<String> = ids.iter().map(|id| id.key()).collect();
        by_key.sort();
        let mut by_id = ids.to_vec();
        by_id.sort();
        assert_eq!(
            by_key,
            by_id.iter().map(|id| id.key()).collect::<Vec<_>>(),
            "string order is id order"
        );
        assert_eq!(by_id[..2], [RecordId::Legacy(0x9), RecordId::Legacy(0x10)]);
        for id in ids {
            assert_eq!(RecordId::parse(&id.key()), Some(id));
        }
        for bad in [
            "",
            "12",
            "0000000000000012-x",
            "x-0000000000000012",
            "1-2-3",
        ] {
            assert_eq!(RecordId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_writer_stamps_after_what_it_saw_and_never_repeats() {
        let ahead = RecordId::Stamped {
            nanos: u64::MAX - 5,
            writer: 1,
        };
        let mut s = Stamper::after(&[ahead, RecordId::Legacy(3)]);
        let first = s.stamp();
        let second = s.stamp();
        assert!(ahead < first && first < second, "{first:?} {second:?}");
    }
}
