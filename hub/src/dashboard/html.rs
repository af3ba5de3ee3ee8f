//! HTML output for the dashboard: escaping and the page frame. Every value that reaches
//! a page (cluster and bundle names, labels, commit messages, error messages) came from
//! git, a spoke or a user and is hostile, so nothing is written into HTML except through
//! [`esc`] (text and double-quoted attribute values) or [`seg`] (a URL path segment).
//! The frame carries no inline script or style: the Content-Security-Policy forbids
//! them, and the page's behaviour is the one static file `app.js`.

use std::fmt::{self, Display, Write};

/// A value escaped for HTML text and for double-quoted attribute values.
pub struct Esc<'a>(&'a str);

pub fn esc(s: &str) -> Esc<'_> {
    Esc(s)
}

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// A value percent-encoded as one URL path segment (every byte but the unreserved
/// ones), so a name cannot add segments, a query or a scheme to a link.
pub struct Seg<'a>(&'a str);

pub fn seg(s: &str) -> Seg<'_> {
    Seg(s)
}

impl Display for Seg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// Decodes one percent-encoded path segment; `None` when it is malformed or not UTF-8.
pub fn unseg(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A page being written. `fmt::Write` into a `String` cannot fail, so the writers
/// below ignore its `Result`.
pub struct Page {
    out: String,
}

impl Page {
    /// Starts a page whose `<title>` and heading are `title`.
    pub fn new(title: &str) -> Page {
        let mut out = String::with_capacity(16 * 1024);
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{t} · flotilla</title>\
             <link rel=\"stylesheet\" href=\"/static/style.css\">\
             <script src=\"/static/app.js\" defer></script></head>\n<body>\
             <header><a href=\"/\" class=\"brand\">flotilla</a>\
             <span id=\"live\" data-state=\"connecting\">connecting…</span></header>\n\
             <main><h1>{t}</h1>\n",
            t = esc(title)
        );
        Page { out }
    }

    /// Appends already-safe markup (built only from literals, [`esc`] and [`seg`]).
    pub fn raw(&mut self, markup: impl Display) -> &mut Page {
        let _ = write!(self.out, "{markup}");
        self
    }

    pub fn h2(&mut self, text: &str) -> &mut Page {
        self.raw(format_args!("<h2>{}</h2>\n", esc(text)))
    }

    /// A paragraph of plain text.
    pub fn p(&mut self, class: &str, text: &str) -> &mut Page {
        self.raw(format_args!(
            "<p class=\"{}\">{}</p>\n",
            esc(class),
            esc(text)
        ))
    }

    /// Ends the page; the live event log sits outside `<main>`, which `app.js` redraws.
    pub fn finish(mut self) -> String {
        self.out.push_str(
            "</main>\n<aside><h2>Live events</h2><ol id=\"events\"></ol></aside>\n</body></html>\n",
        );
        self.out
    }
}

/// A state as a badge whose class selects its colour (`state-Ready` ...).
pub fn state_badge(state: &str) -> String {
    let shown = if state.is_empty() { "—" } else { state };
    format!(
        "<span class=\"state state-{}\">{}</span>",
        esc(state),
        esc(shown)
    )
}

/// A link to a cluster's page.
pub fn cluster_link(name: &str) -> String {
    format!("<a href=\"/clusters/{}\">{}</a>", seg(name), esc(name))
}

/// A link to a bundle's page.
pub fn bundle_link(name: &str) -> String {
    format!("<a href=\"/bundles/{}\">{}</a>", seg(name), esc(name))
}

/// The first 12 characters of a commit, with the full id on hover.
pub fn commit(c: &str) -> String {
    if c.is_empty() {
        return "—".to_string();
    }
    let short: String = c.chars().take(12).collect();
    format!("<code title=\"{}\">{}</code>", esc(c), esc(&short))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_a_value_comes_out_as_text() {
        let hostile = "<script>alert(\"x\")</script>&'";
        assert_eq!(
            esc(hostile).to_string(),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(esc("plain-name.1").to_string(), "plain-name.1");
    }

    #[test]
    fn a_name_in_a_link_stays_one_path_segment_and_reads_back() {
        let name = "a/../b?c=d#e \"x\" é";
        let encoded = seg(name).to_string();
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
            "{encoded}"
        );
        assert_eq!(unseg(&encoded).as_deref(), Some(name));
    }

    #[test]
    fn a_malformed_segment_is_refused_not_guessed() {
        assert_eq!(unseg("%4"), None);
        assert_eq!(unseg("%zz"), None);
        assert_eq!(unseg("%ff"), None);
    }

    #[test]
    fn links_and_badges_escape_what_they_show() {
        assert_eq!(
            cluster_link("<b>"),
            "<a href=\"/clusters/%3Cb%3E\">&lt;b&gt;</a>"
        );
        assert!(state_badge("\"onload").contains("state-&quot;onload"));
    }
}
