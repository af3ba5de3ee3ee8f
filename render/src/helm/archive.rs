//! Chart archives (`.tgz`, as `helm package` writes them) unpacked in memory under bounds:
//! total decompressed bytes, bytes per file, number of entries, and path names that must
//! stay inside the chart. Follows Helm's `loader.LoadArchiveFiles`: the first path component
//! (the chart's folder) is dropped, directories and PAX headers are skipped, a UTF-8 BOM is
//! trimmed. Reads only the bytes it is given.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

/// How much one archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArchiveLimits {
    pub max_total_bytes: u64,
    pub max_file_bytes: u64,
    pub max_entries: usize,
}

/// Unpacks `bytes` into chart-relative paths and their contents.
pub(crate) fn unpack(
    bytes: &[u8],
    limits: ArchiveLimits,
) -> Result<BTreeMap<String, Arc<[u8]>>, String> {
    let gz = flate2::read::GzDecoder::new(bytes);
    // Every byte tar reads counts against the total, headers and padding included, so a
    // stream of empty entries cannot spin unbounded.
    let bounded = gz.take(limits.max_total_bytes.saturating_add(1 << 20));
    let mut archive = tar::Archive::new(bounded);
    let entries = archive
        .entries()
        .map_err(|e| format!("not a chart archive (gzip/tar): {e}"))?;
    let mut files = BTreeMap::new();
    let mut total: u64 = 0;
    for (count, entry) in entries.enumerate() {
        if count >= limits.max_entries {
            return Err(format!(
                "chart archive has more than {} entries",
                limits.max_entries
            ));
        }
        let mut entry = entry.map_err(|e| format!("chart archive is corrupt: {e}"))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() || kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            // Links and devices have no place in a chart; Helm reads their (empty) data.
            continue;
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        let name = chart_path(&raw)?;
        let size = entry.header().size().map_err(|e| format!("{raw}: {e}"))?;
        if size > limits.max_file_bytes {
            return Err(format!(
                "chart archive file {raw:?} is {size} bytes, over the limit of {} bytes per file",
                limits.max_file_bytes
            ));
        }
        if total.saturating_add(size) > limits.max_total_bytes {
            return Err(format!(
                "chart archive unpacks to more than {} bytes",
                limits.max_total_bytes
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| format!("chart archive is corrupt at {raw:?}: {e}"))?;
        total += data.len() as u64;
        let data = data
            .strip_prefix(&[0xEF, 0xBB, 0xBF])
            .map(<[u8]>::to_vec)
            .unwrap_or(data);
        files.insert(name, Arc::from(data));
    }
    if files.is_empty() {
        return Err("no files in chart archive".to_string());
    }
    Ok(files)
}

/// The chart-relative path of an archive entry `chart/dir/file`, refused when it would
/// leave the chart.
fn chart_path(raw: &str) -> Result<String, String> {
    let delimiter = if raw.contains('\\') { '\\' } else { '/' };
    let mut parts = raw.split(delimiter);
    let first = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() && first == "Chart.yaml" {
        return Err("chart archive has Chart.yaml outside the chart's folder".to_string());
    }
    if raw.starts_with('/') || raw.starts_with('\\') {
        return Err(format!("chart archive holds an absolute path {raw:?}"));
    }
    let mut clean: Vec<&str> = Vec::new();
    for p in rest {
        match p {
            "" | "." => {}
            ".." => {
                if clean.pop().is_none() {
                    return Err(format!(
                        "chart archive path {raw:?} leaves the chart's folder"
                    ));
                }
            }
            p if p.len() >= 2 && p.as_bytes()[1] == b':' => {
                return Err(format!("chart archive path {raw:?} names a drive"));
            }
            p => clean.push(p),
        }
    }
    if clean.is_empty() {
        return Err(format!(
            "chart archive holds content outside the chart's folder: {raw:?}"
        ));
    }
    Ok(clean.join("/"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const LIMITS: ArchiveLimits = ArchiveLimits {
        max_total_bytes: 1 << 20,
        max_file_bytes: 256 << 10,
        max_entries: 100,
    };

    /// A gzipped tar of `files` (paths as given, unchecked).
    pub(crate) fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`: write the name bytes directly, as a hostile tool would.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            tar.append(&h, *data).expect("append");
        }
        let raw = tar.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).expect("gz");
        gz.finish().expect("gz")
    }

    #[test]
    fn unpacks_below_the_chart_folder() {
        let t = tgz(&[
            ("web/Chart.yaml", b"name: web\n"),
            ("web/templates/a.yaml", b"\xEF\xBB\xBFa: 1\n"),
        ]);
        let files = unpack(&t, LIMITS).expect("unpacks");
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["Chart.yaml", "templates/a.yaml"]);
        assert_eq!(&*files["templates/a.yaml"], b"a: 1\n");
    }

    #[test]
    fn paths_that_leave_the_chart_are_refused() {
        for bad in ["web/../../etc/passwd", "/abs/x", "web/../x"] {
            let t = tgz(&[("web/Chart.yaml", b"name: web\n"), (bad, b"x")]);
            let e = unpack(&t, LIMITS).expect_err(bad);
            assert!(
                e.contains("leaves") || e.contains("absolute") || e.contains("outside"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 2 << 20];
        let t = tgz(&[("web/Chart.yaml", b"name: web\n"), ("web/big", &zeros)]);
        assert!(t.len() < 64 << 10, "the bomb is small packed");
        let e = unpack(&t, LIMITS).expect_err("too big");
        assert!(e.contains("over the limit"), "{e}");
        let e = unpack(
            &t,
            ArchiveLimits {
                max_file_bytes: 4 << 20,
                ..LIMITS
            },
        )
        .expect_err("too big");
        assert!(e.contains("unpacks to more than"), "{e}");
    }

    #[test]
    fn ten_thousand_entries_are_refused() {
        let names: Vec<String> = (0..10_000).map(|i| format!("web/f{i}")).collect();
        let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        let e = unpack(&tgz(&files), LIMITS).expect_err("too many");
        assert!(e.contains("more than 100 entries"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(unpack(b"not gzip at all", LIMITS).is_err());
        assert!(unpack(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3], LIMITS).is_err());
    }
}
