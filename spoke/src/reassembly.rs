//! Reassembles a content that the hub sent in `ContentChunk`s: one content at a time, in
//! order, right before the `Assign` that uses it (`content_chunked`). It is bounded:
//! a content announced over the ceiling, a chunk past the announced size, or a chunk
//! out of order is refused, and nothing more of that content is kept. The refusal is
//! kept instead, so that the `Assign` that needed the content fails alone with the
//! reason, and the stream and the other bundles go on.
//!
//! The digest of the reassembled bytes is checked where every content is checked, when
//! the `Assign` is prepared (`Agent::try_prepare`), so the bytes are hashed once.
//!
//! Pure: no I/O, and no wire types (`session.rs` takes the `ContentChunk` apart). At
//! most one content is held, so a session holds at most this copy and the one the apply
//! works on.

/// One chunk, as `session.rs` reads it off the wire.
pub struct Chunk<'a> {
    pub digest: String,
    /// The whole content's size, as announced.
    pub total: u64,
    pub offset: u64,
    pub data: &'a [u8],
}

/// The content being received, or why it was refused.
enum Slot {
    Receiving {
        digest: String,
        total: u64,
        data: Vec<u8>,
    },
    Refused {
        digest: String,
        why: String,
    },
}

/// The chunks of one stream.
pub struct Reassembly {
    ceiling: u64,
    slot: Option<Slot>,
}

impl Reassembly {
    /// Refuses any content over `ceiling` bytes.
    pub fn new(ceiling: u64) -> Self {
        Reassembly {
            ceiling,
            slot: None,
        }
    }

    /// Takes one chunk. A chunk at offset 0 starts a new content (dropping an unfinished
    /// one); any other must continue the content being received.
    pub fn push(&mut self, chunk: Chunk<'_>) {
        let Chunk {
            digest,
            total,
            offset,
            data: bytes,
        } = chunk;
        if offset == 0 {
            self.slot = Some(if total > self.ceiling {
                Slot::Refused {
                    why: format!(
                        "content {digest} is announced as {total} bytes, over the {} bytes a spoke accepts",
                        self.ceiling
                    ),
                    digest: digest.clone(),
                }
            } else {
                Slot::Receiving {
                    digest: digest.clone(),
                    total,
                    data: Vec::new(),
                }
            });
        }
        let refusal = match &mut self.slot {
            Some(Slot::Refused { digest: d, .. }) if *d == digest => return,
            Some(Slot::Receiving {
                digest: d,
                total: t,
                data,
            }) if *d == digest && *t == total && data.len() as u64 == offset => {
                if offset + bytes.len() as u64 > total {
                    format!("the chunks of content {digest} run past its announced {total} bytes")
                } else {
                    data.extend_from_slice(bytes);
                    return;
                }
            }
            Some(Slot::Receiving {
                digest: d, data, ..
            }) => format!(
                "a chunk of content {digest} at offset {offset} does not follow the {} bytes \
                 received of content {d}",
                data.len()
            ),
            _ => format!("a chunk of content {digest} at offset {offset} came without its start"),
        };
        self.slot = Some(Slot::Refused {
            digest,
            why: refusal,
        });
    }

    /// The whole content of `digest` for the `Assign` that announced it, or why there is
    /// none. Either way the slot is emptied.
    pub fn take(&mut self, digest: &str) -> Result<Vec<u8>, String> {
        match self.slot.take() {
            Some(Slot::Receiving {
                digest: d,
                total,
                data,
            }) if d == digest => {
                if data.len() as u64 == total {
                    Ok(data)
                } else {
                    Err(format!(
                        "only {} of the {total} bytes of content {digest} arrived",
                        data.len()
                    ))
                }
            }
            Some(Slot::Refused { digest: d, why }) if d == digest => Err(why),
            _ => Err(format!(
                "content {digest} was announced in chunks, but its chunks did not arrive"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk<'a>(digest: &str, total: u64, offset: u64, data: &'a [u8]) -> Chunk<'a> {
        Chunk {
            digest: digest.into(),
            total,
            offset,
            data,
        }
    }

    #[test]
    fn chunks_in_order_make_the_whole_content() {
        let mut r = Reassembly::new(100);
        r.push(chunk("d", 10, 0, b"0123"));
        r.push(chunk("d", 10, 4, b"4567"));
        r.push(chunk("d", 10, 8, b"89"));
        assert_eq!(r.take("d").as_deref(), Ok(&b"0123456789"[..]));
        assert!(
            r.take("d").is_err_and(|e| e.contains("did not arrive")),
            "taken once"
        );
    }

    #[test]
    fn a_content_over_the_ceiling_is_refused_and_not_kept() {
        let mut r = Reassembly::new(8);
        r.push(chunk("d", 9, 0, b"0123"));
        r.push(chunk("d", 9, 4, b"45678"));
        let why = r.take("d").expect_err("refused");
        assert!(why.contains("announced as 9 bytes, over the 8"), "{why}");
    }

    #[test]
    fn chunks_past_the_announced_size_are_refused() {
        let mut r = Reassembly::new(100);
        r.push(chunk("d", 6, 0, b"0123"));
        r.push(chunk("d", 6, 4, b"4567"));
        // Whatever follows is not kept either.
        r.push(chunk("d", 6, 8, b"89"));
        let why = r.take("d").expect_err("refused");
        assert!(why.contains("run past its announced 6 bytes"), "{why}");
    }

    #[test]
    fn a_gap_a_missing_start_or_a_short_content_is_refused() {
        let mut r = Reassembly::new(100);
        r.push(chunk("d", 10, 0, b"0123"));
        r.push(chunk("d", 10, 6, b"6789"));
        assert!(
            r.take("d")
                .is_err_and(|e| e.contains("does not follow the 4 bytes"))
        );

        r.push(chunk("d", 10, 4, b"4567"));
        assert!(r.take("d").is_err_and(|e| e.contains("without its start")));

        r.push(chunk("d", 10, 0, b"0123"));
        assert!(
            r.take("d")
                .is_err_and(|e| e.contains("only 4 of the 10 bytes"))
        );

        // A new content replaces an unfinished one; the Assign of the old one fails.
        r.push(chunk("a", 10, 0, b"0123"));
        r.push(chunk("b", 2, 0, b"01"));
        assert!(r.take("a").is_err_and(|e| e.contains("did not arrive")));
    }
}
