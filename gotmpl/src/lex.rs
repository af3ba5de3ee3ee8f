//! The lexer: template text to tokens, as Go's `text/template/parse/lex.go` splits it,
//! including the trim markers (`{{- `, ` -}}`) and comments, which it resolves here so the
//! parser never sees them. Positions are byte offsets into the template text.

/// Tokens borrow their text from the template (no allocation per token); only a string
/// literal's unquoted value is built.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok<'a> {
    Text(&'a str),
    LeftDelim,
    RightDelim,
    Space,
    /// `.Name` (the text without the dot).
    Field(&'a str),
    /// `$` or `$name` (with the `$`).
    Variable(&'a str),
    Ident(&'a str),
    Keyword(&'static str),
    Bool(bool),
    Nil,
    Dot,
    /// A number as written.
    Number(&'a str),
    /// A char constant as written (`'a'`).
    CharConst(&'a str),
    /// A string literal: as written, and its value.
    Str(&'a str, String),
    Pipe,
    LeftParen,
    RightParen,
    Declare,
    Assign,
    /// Any other printable ASCII character inside an action (`,` in range declarations).
    Char(char),
    Eof,
}

#[derive(Clone, Debug)]
pub(crate) struct Token<'a> {
    pub tok: Tok<'a>,
    pub pos: usize,
    pub line: usize,
}

#[derive(Debug)]
pub(crate) struct LexError {
    pub line: usize,
    pub message: String,
}

const KEYWORDS: [&str; 10] = [
    "block", "break", "continue", "define", "else", "end", "if", "range", "template", "with",
];

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn has_left_trim(s: &[u8]) -> bool {
    s.len() >= 2 && s[0] == b'-' && is_space(s[1])
}

fn has_right_trim(s: &[u8]) -> bool {
    s.len() >= 2 && is_space(s[0]) && s[1] == b'-'
}

struct Lexer<'a> {
    input: &'a str,
    left: &'a str,
    right: &'a str,
    pos: usize,
    line: usize,
    out: Vec<Token<'a>>,
}

/// Splits `input` into tokens with the given delimiters.
pub(crate) fn lex<'a>(
    input: &'a str,
    left: &'a str,
    right: &'a str,
) -> Result<Vec<Token<'a>>, LexError> {
    let mut l = Lexer {
        input,
        left,
        right,
        pos: 0,
        line: 1,
        out: Vec::new(),
    };
    l.run()?;
    Ok(l.out)
}

impl<'a> Lexer<'a> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, LexError> {
        Err(LexError {
            line: self.line,
            message: message.into(),
        })
    }

    fn emit(&mut self, tok: Tok<'a>, pos: usize, line: usize) {
        self.out.push(Token { tok, pos, line });
    }

    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn run(&mut self) -> Result<(), LexError> {
        loop {
            // Text up to the next left delimiter.
            let start = self.pos;
            match self.rest().find(self.left) {
                None => {
                    if self.pos < self.input.len() {
                        let text = &self.input[start..];
                        self.emit(Tok::Text(text), start, self.line);
                        self.line += text.matches('\n').count();
                        self.pos = self.input.len();
                    }
                    let (pos, line) = (self.pos, self.line);
                    self.emit(Tok::Eof, pos, line);
                    return Ok(());
                }
                Some(x) => {
                    let delim_at = start + x;
                    let after = delim_at + self.left.len();
                    let trim_left = has_left_trim(&self.input.as_bytes()[after..]);
                    let mut text_end = delim_at;
                    if trim_left {
                        text_end = start
                            + self.input[start..delim_at]
                                .trim_end_matches([' ', '\t', '\r', '\n'])
                                .len();
                    }
                    if text_end > start {
                        let text = &self.input[start..text_end];
                        self.emit(Tok::Text(text), start, self.line);
                    }
                    self.line += self.input[start..delim_at].matches('\n').count();
                    self.pos = after;
                    let after_marker = if trim_left { 2 } else { 0 };
                    if self.input[self.pos + after_marker..].starts_with("/*") {
                        self.pos += after_marker;
                        self.lex_comment()?;
                        continue;
                    }
                    let line = self.line;
                    self.emit(Tok::LeftDelim, delim_at, line);
                    self.pos += after_marker;
                    self.lex_action()?;
                }
            }
        }
    }

    fn at_right_delim(&self) -> (bool, bool) {
        let rest = self.rest();
        if has_right_trim(rest.as_bytes()) && rest[2..].starts_with(self.right) {
            return (true, true);
        }
        (rest.starts_with(self.right), false)
    }

    fn skip_left_trim_space(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        self.line += rest[..rest.len() - trimmed.len()].matches('\n').count();
        self.pos += rest.len() - trimmed.len();
    }

    fn lex_comment(&mut self) -> Result<(), LexError> {
        self.pos += 2;
        let Some(x) = self.rest().find("*/") else {
            return self.err("unclosed comment");
        };
        self.line += self.rest()[..x].matches('\n').count();
        self.pos += x + 2;
        let (delim, trim) = self.at_right_delim();
        if !delim {
            return self.err("comment ends before closing delimiter");
        }
        if trim {
            self.pos += 2;
        }
        self.pos += self.right.len();
        if trim {
            self.skip_left_trim_space();
        }
        Ok(())
    }

    fn lex_action(&mut self) -> Result<(), LexError> {
        let mut paren_depth = 0usize;
        loop {
            let (delim, trim) = self.at_right_delim();
            if delim {
                if paren_depth > 0 {
                    return self.err("unclosed left paren");
                }
                if trim {
                    self.pos += 2;
                }
                let (pos, line) = (self.pos, self.line);
                self.emit(Tok::RightDelim, pos, line);
                self.pos += self.right.len();
                if trim {
                    self.skip_left_trim_space();
                }
                return Ok(());
            }
            let start = self.pos;
            let line = self.line;
            let Some(c) = self.rest().chars().next() else {
                return self.err("unclosed action");
            };
            match c {
                ' ' | '\t' | '\r' | '\n' => {
                    // A run of spaces; a single space before "-}}" belongs to the delimiter.
                    let rest = self.rest();
                    let n = rest.len() - rest.trim_start_matches([' ', '\t', '\r', '\n']).len();
                    let mut end = start + n;
                    let b = self.input.as_bytes();
                    if end > start
                        && has_right_trim(&b[end - 1..])
                        && self.input[end + 1..].starts_with(self.right)
                    {
                        end -= 1;
                        if n == 1 {
                            // The space belongs to the delimiter; the loop sees it next.
                            continue;
                        }
                    }
                    self.line += self.input[start..end].matches('\n').count();
                    self.pos = end;
                    self.emit(Tok::Space, start, line);
                }
                '=' => {
                    self.pos += 1;
                    self.emit(Tok::Assign, start, line);
                }
                ':' => {
                    if !self.rest().starts_with(":=") {
                        return self.err("expected :=");
                    }
                    self.pos += 2;
                    self.emit(Tok::Declare, start, line);
                }
                '|' => {
                    self.pos += 1;
                    self.emit(Tok::Pipe, start, line);
                }
                '"' => self.lex_quote()?,
                '`' => self.lex_raw_quote()?,
                '$' => {
                    self.pos += 1;
                    self.alnum_run();
                    self.emit(Tok::Variable(&self.input[start..self.pos]), start, line);
                    self.check_terminator()?;
                }
                '\'' => self.lex_char()?,
                '.' => {
                    let next = self.input.as_bytes().get(self.pos + 1).copied();
                    if matches!(next, Some(b'0'..=b'9')) {
                        self.lex_number()?;
                    } else {
                        self.pos += 1;
                        let name = self.alnum_run();
                        if name.is_empty() {
                            self.emit(Tok::Dot, start, line);
                        } else {
                            self.emit(Tok::Field(name), start, line);
                        }
                        self.check_terminator()?;
                    }
                }
                '+' | '-' | '0'..='9' => self.lex_number()?,
                '(' => {
                    paren_depth += 1;
                    self.pos += 1;
                    self.emit(Tok::LeftParen, start, line);
                }
                ')' => {
                    if paren_depth == 0 {
                        return self.err("unexpected right paren");
                    }
                    paren_depth -= 1;
                    self.pos += 1;
                    self.emit(Tok::RightParen, start, line);
                }
                c if is_alnum(c) => {
                    let word = self.alnum_run();
                    let tok = if let Some(k) = KEYWORDS.iter().find(|k| **k == word) {
                        Tok::Keyword(k)
                    } else if word == "true" || word == "false" {
                        Tok::Bool(word == "true")
                    } else if word == "nil" {
                        Tok::Nil
                    } else {
                        Tok::Ident(word)
                    };
                    self.emit(tok, start, line);
                    self.check_terminator()?;
                }
                c if c.is_ascii() && !c.is_ascii_control() => {
                    self.pos += 1;
                    self.emit(Tok::Char(c), start, line);
                }
                c => {
                    return self.err(format!(
                        "unrecognized character in action: U+{:04X}",
                        c as u32
                    ));
                }
            }
        }
    }

    fn alnum_run(&mut self) -> &'a str {
        let rest = self.rest();
        let n = rest
            .char_indices()
            .find(|(_, c)| !is_alnum(*c))
            .map_or(rest.len(), |(i, _)| i);
        self.pos += n;
        &rest[..n]
    }

    /// Go requires a word to be followed by a space, punctuation or the delimiter.
    fn check_terminator(&self) -> Result<(), LexError> {
        let rest = self.rest();
        let Some(c) = rest.chars().next() else {
            return Ok(());
        };
        if matches!(
            c,
            ' ' | '\t' | '\r' | '\n' | '.' | ',' | '|' | ':' | ')' | '('
        ) || rest.starts_with(self.right)
        {
            return Ok(());
        }
        self.err(format!("bad character U+{:04X} '{c}'", c as u32))
    }

    fn lex_quote(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        let line = self.line;
        let bytes = self.input.as_bytes();
        let mut i = self.pos + 1;
        loop {
            match bytes.get(i) {
                None | Some(b'\n') => return self.err("unterminated quoted string"),
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        let raw = &self.input[start..=i];
        let value = unquote(raw).map_err(|m| LexError { line, message: m })?;
        self.pos = i + 1;
        self.emit(Tok::Str(raw, value), start, line);
        Ok(())
    }

    fn lex_raw_quote(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        let line = self.line;
        let Some(x) = self.input[start + 1..].find('`') else {
            return self.err("unterminated raw quoted string");
        };
        let raw = &self.input[start..start + x + 2];
        self.line += raw.matches('\n').count();
        self.pos = start + x + 2;
        self.emit(
            Tok::Str(raw, raw[1..raw.len() - 1].to_string()),
            start,
            line,
        );
        Ok(())
    }

    fn lex_char(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        let line = self.line;
        let bytes = self.input.as_bytes();
        let mut i = start + 1;
        loop {
            match bytes.get(i) {
                None | Some(b'\n') => return self.err("unterminated character constant"),
                Some(b'\\') => i += 2,
                Some(b'\'') => break,
                Some(_) => i += 1,
            }
        }
        self.pos = i + 1;
        self.emit(Tok::CharConst(&self.input[start..=i]), start, line);
        Ok(())
    }

    fn lex_number(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        let line = self.line;
        let b = self.input.as_bytes();
        let mut i = start;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let mut digits: &[u8] = b"0123456789_";
        if b.get(i) == Some(&b'0') {
            match b.get(i + 1) {
                Some(b'x' | b'X') => {
                    i += 2;
                    digits = b"0123456789abcdefABCDEF_";
                }
                Some(b'o' | b'O') => {
                    i += 2;
                    digits = b"01234567_";
                }
                Some(b'b' | b'B') => {
                    i += 2;
                    digits = b"01_";
                }
                _ => {}
            }
        }
        let run = |i: &mut usize, set: &[u8]| {
            while b.get(*i).is_some_and(|c| set.contains(c)) {
                *i += 1;
            }
        };
        run(&mut i, digits);
        if b.get(i) == Some(&b'.') {
            i += 1;
            run(&mut i, digits);
        }
        let hex = digits.len() > 20;
        let exp: &[u8] = if hex { b"pP" } else { b"eE" };
        if b.get(i).is_some_and(|c| exp.contains(c)) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            run(&mut i, b"0123456789_");
        }
        if b.get(i) == Some(&b'i') {
            i += 1;
        }
        self.pos = i;
        if self.rest().chars().next().is_some_and(is_alnum) {
            let bad_end = self
                .rest()
                .find(|c: char| !is_alnum(c))
                .unwrap_or(self.rest().len());
            return self.err(format!(
                "bad number syntax: {:?}",
                &self.input[start..self.pos + bad_end]
            ));
        }
        self.emit(Tok::Number(&self.input[start..i]), start, line);
        Ok(())
    }
}

/// Go's `strconv.Unquote` for a double-quoted literal.
pub(crate) fn unquote(raw: &str) -> Result<String, String> {
    let inner = &raw[1..raw.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    let bad = || format!("invalid syntax: {raw}");
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            return Err(bad());
        };
        match e {
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => return Err(bad()),
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = (0..n).filter_map(|_| chars.next()).collect();
                let v = u32::from_str_radix(&hex, 16).map_err(|_| bad())?;
                if hex.len() != n {
                    return Err(bad());
                }
                if e == 'x' {
                    // Go strings are bytes; a \x escape above 0x7f cannot be kept in a
                    // Rust String, so it becomes the replacement character.
                    out.push(char::from_u32(v).filter(|_| v < 0x80).unwrap_or('\u{FFFD}'));
                } else {
                    out.push(char::from_u32(v).ok_or_else(bad)?);
                }
            }
            '0'..='7' => {
                let mut v = e as u32 - '0' as u32;
                for _ in 0..2 {
                    let d = chars.next().and_then(|c| c.to_digit(8)).ok_or_else(bad)?;
                    v = v * 8 + d;
                }
                if v > 255 {
                    return Err(bad());
                }
                out.push(char::from_u32(v).filter(|_| v < 0x80).unwrap_or('\u{FFFD}'));
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok<'_>> {
        lex(s, "{{", "}}")
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn trim_markers_eat_surrounding_space() {
        assert_eq!(
            toks("a  {{- .x -}}  b"),
            vec![
                Tok::Text("a"),
                Tok::LeftDelim,
                Tok::Field("x"),
                Tok::RightDelim,
                Tok::Text("b"),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn negative_numbers_are_not_trim_markers() {
        assert_eq!(
            toks("{{-3}}"),
            vec![Tok::LeftDelim, Tok::Number("-3"), Tok::RightDelim, Tok::Eof]
        );
    }

    #[test]
    fn comments_vanish() {
        assert_eq!(
            toks("x {{- /* c */ -}} y"),
            vec![Tok::Text("x"), Tok::Text("y"), Tok::Eof]
        );
    }
}
