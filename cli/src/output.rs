//! Output formats shared by every command: aligned tables (kubectl style), `-o wide`,
//! `-o name`, `-o json` and `-o yaml`, `--no-headers`, and the one place that writes to
//! stdout, so a closed pipe (`flotilla token list | head -1`) is an error the caller can
//! recognise instead of a panic.

use std::io::Write;

use anyhow::Result;
use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns (the default for reads).
    Table,
    /// The table with more columns.
    Wide,
    /// `kind/name`, one per line, for scripts.
    Name,
    /// JSON: an array for lists, an object for one named object, JSON lines for `watch`.
    Json,
    /// YAML, the same shapes as JSON.
    Yaml,
}

/// How a command shows its result: the `-o` the user gave (if any) and `--no-headers`.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// `None` when no `-o` was given: reads print a table, changes a confirmation.
    pub format: Option<Format>,
    pub no_headers: bool,
}

impl Printer {
    /// The format a read command uses.
    pub fn read_format(&self) -> Format {
        self.format.unwrap_or(Format::Table)
    }

    /// Prints a list of rows.
    pub fn list<T: Row>(&self, items: &[T]) -> Result<()> {
        self.list_with_details(items, |_| Vec::new())
    }

    /// `list`, with a table row followed by its `details` lines, indented (e.g. every
    /// non-ready resource under its status row). JSON and YAML carry the same data as
    /// fields, so they ignore `details`.
    pub fn list_with_details<T: Row>(
        &self,
        items: &[T],
        details: impl Fn(&T) -> Vec<String>,
    ) -> Result<()> {
        match self.read_format() {
            Format::Json => emit(&(serde_json::to_string_pretty(items)? + "\n")),
            Format::Yaml => emit(&serde_saphyr::to_string(&items)?),
            Format::Name => emit(
                &items
                    .iter()
                    .map(|i| name_line(i) + "\n")
                    .collect::<String>(),
            ),
            f @ (Format::Table | Format::Wide) => {
                let wide = f == Format::Wide;
                let rows: Vec<Vec<String>> = items.iter().map(|i| i.cells(wide)).collect();
                let headers = T::headers(wide);
                let headers = (!self.no_headers).then_some(headers.as_slice());
                let details: Vec<Vec<String>> = items.iter().map(details).collect();
                emit(&with_details(
                    &table_with(headers, &rows),
                    headers.is_some(),
                    &details,
                ))
            }
        }
    }

    /// Prints one object got by name: an object (not an array) in JSON and YAML, as
    /// `kubectl get KIND NAME` does.
    pub fn one<T: Row>(&self, item: &T) -> Result<()> {
        match self.read_format() {
            Format::Json => emit(&(serde_json::to_string_pretty(item)? + "\n")),
            Format::Yaml => emit(&serde_saphyr::to_string(item)?),
            _ => self.list(std::slice::from_ref(item)),
        }
    }

    /// After a change: `kind/name VERB` by default (kubectl's `cluster/c1 labeled`), the
    /// changed object when `-o` names a format.
    pub fn changed<T: Row>(&self, item: &T, verb: &str) -> Result<()> {
        match self.format {
            None => emit(&format!("{} {verb}\n", name_line(item))),
            Some(_) => self.one(item),
        }
    }

    /// After a change whose reply carries no object (remove, delete, revoke a token).
    pub fn done(&self, kind: &str, name: &str, verb: &str) -> Result<()> {
        match self.format {
            Some(Format::Name) => emit(&format!("{kind}/{name}\n")),
            Some(Format::Json) => emit(&format!(
                "{}\n",
                serde_json::json!({ "kind": kind, "name": name, "result": verb })
            )),
            Some(Format::Yaml) => emit(&serde_saphyr::to_string(
                &serde_json::json!({ "kind": kind, "name": name, "result": verb }),
            )?),
            _ => emit(&format!("{kind}/{name} {verb}\n")),
        }
    }
}

fn name_line<T: Row>(item: &T) -> String {
    format!("{}/{}", T::KIND, item.name())
}

/// Writes to stdout and flushes, so a closed pipe surfaces here as `BrokenPipe`
/// (`main` turns that into a quiet exit) rather than as `println!`'s panic.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Something that can be shown as a table row and named as `KIND/name`.
pub trait Row: Serialize {
    /// The kind in `-o name` output and confirmations, e.g. `cluster`.
    const KIND: &'static str;
    fn name(&self) -> String;
    fn headers(wide: bool) -> Vec<&'static str>;
    fn cells(&self, wide: bool) -> Vec<String>;
}

/// Left-aligned columns separated by three spaces, like kubectl.
#[cfg(feature = "quickstart")]
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    table_with(Some(headers), rows)
}

/// `table`, with the header line left out when `headers` is `None` (`--no-headers`);
/// the columns are as wide as they would be with it, so both line up alike.
fn table_with(headers: Option<&[&str]>, rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .map(|h| h.iter().map(|h| h.len()).collect())
        .unwrap_or_else(|| vec![0; rows.first().map_or(0, Vec::len)]);
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = headers.map(|h| line(h.to_vec())).unwrap_or_default();
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Puts each row's `details` under it, indented; `header` says whether the first line
/// of `table` is a header line.
fn with_details(table: &str, header: bool, details: &[Vec<String>]) -> String {
    let mut lines = table.lines();
    let mut out = String::new();
    if header && let Some(h) = lines.next() {
        out.push_str(h);
        out.push('\n');
    }
    for (i, line) in lines.enumerate() {
        out.push_str(line);
        out.push('\n');
        for d in details.get(i).into_iter().flatten() {
            out.push_str(&format!("  {d}\n"));
        }
    }
    out
}

/// `k=v,k2=v2` for table cells.
pub fn labels_cell(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// First line of a message, shortened for a table cell.
pub fn short(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or("");
    let more = s.lines().count() > 1;
    let mut out: String = first.chars().take(max).collect();
    if first.chars().count() > max || more {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = [
            vec!["dev".into(), "Ready".into()],
            vec!["production".into(), "NotReady".into()],
        ];
        assert_eq!(
            table_with(Some(&["NAME", "STATE"]), &rows),
            "NAME         STATE\ndev          Ready\nproduction   NotReady\n"
        );
        assert_eq!(
            table_with(None, &rows),
            "dev          Ready\nproduction   NotReady\n"
        );
    }

    #[test]
    fn details_go_under_their_row() {
        let rows = [
            vec!["c1".into(), "NotReady".into()],
            vec!["c2".into(), "Ready".into()],
        ];
        let details = [vec!["Deployment web/web: NotReady".to_string()], vec![]];
        let t = table_with(Some(&["CLUSTER", "STATE"]), &rows);
        assert_eq!(
            with_details(&t, true, &details),
            "CLUSTER   STATE\nc1        NotReady\n  Deployment web/web: NotReady\nc2        Ready\n"
        );
    }

    #[test]
    fn short_cuts_long_and_multiline_messages() {
        assert_eq!(short("abc", 10), "abc");
        assert_eq!(short("abcdef", 3), "abc…");
        assert_eq!(short("a\nb", 10), "a…");
    }
}
