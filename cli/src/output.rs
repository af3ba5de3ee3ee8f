//! Output formats shared by every listing command: aligned tables (kubectl style),
//! `-o wide`, `-o json` and `-o yaml`.

use anyhow::Result;
use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

/// Something that can be shown as a table row.
pub trait Row: Serialize {
    fn headers(wide: bool) -> Vec<&'static str>;
    fn cells(&self, wide: bool) -> Vec<String>;
}

pub fn print<T: Row>(items: &[T], format: Format) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(items)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(&items)?),
        Format::Table | Format::Wide => {
            let wide = format == Format::Wide;
            let rows: Vec<Vec<String>> = items.iter().map(|i| i.cells(wide)).collect();
            print!("{}", table(&T::headers(wide), &rows));
        }
    }
    Ok(())
}

/// Left-aligned columns separated by three spaces, like kubectl.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
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
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
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
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["dev".into(), "Ready".into()],
                vec!["production".into(), "NotReady".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME         STATE\ndev          Ready\nproduction   NotReady\n"
        );
    }

    #[test]
    fn short_cuts_long_and_multiline_messages() {
        assert_eq!(short("abc", 10), "abc");
        assert_eq!(short("abcdef", 3), "abc…");
        assert_eq!(short("a\nb", 10), "a…");
    }
}
