//! The parser: tokens to the AST, following Go's `text/template/parse/parse.go` (the same
//! grammar, the same parse-time checks: undefined functions and variables, `break` outside
//! `range`, misplaced `else`/`end`). Each node keeps its byte position, and prints as Go's
//! `Node.String()` does, because exec errors quote it (`at <.Values.x>`).

use std::fmt;
use std::sync::Arc;

use crate::lex::{Tok, Token, lex};

#[derive(Debug, Clone)]
pub(crate) struct List {
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(String),
    Action(Pipe),
    If(Branch),
    With(Branch),
    Range(Branch),
    Template {
        pos: usize,
        name: String,
        pipe: Option<Pipe>,
    },
    Break,
    Continue,
}

/// `if`/`with`/`range`: the pipeline, the body, and the `else` body.
#[derive(Debug, Clone)]
pub(crate) struct Branch {
    pub pos: usize,
    pub pipe: Pipe,
    pub list: List,
    pub else_list: Option<List>,
}

#[derive(Debug, Clone)]
pub(crate) struct Pipe {
    pub pos: usize,
    pub is_assign: bool,
    pub decl: Vec<String>,
    pub cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
pub(crate) struct Command {
    pub pos: usize,
    pub args: Vec<Arg>,
}

#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// `.a.b`
    Field {
        pos: usize,
        idents: Vec<String>,
    },
    /// `$x.a.b` (`idents[0]` is the variable with its `$`).
    Variable {
        pos: usize,
        idents: Vec<String>,
    },
    /// `(pipe).a.b`
    Chain {
        pos: usize,
        node: Box<Arg>,
        fields: Vec<String>,
    },
    Ident {
        pos: usize,
        name: String,
    },
    Dot(usize),
    Nil(usize),
    Bool(usize, bool),
    Number {
        pos: usize,
        text: String,
        value: Num,
    },
    Str {
        pos: usize,
        quoted: String,
        /// Shared with every `Value` the literal evaluates to.
        value: std::sync::Arc<str>,
    },
    Pipe(Box<Pipe>),
}

/// A number constant: what Go's `idealConstant` makes of it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
    /// Too big for int: Go reports "overflows int" when it is used.
    Overflow,
}

impl Arg {
    pub fn pos(&self) -> usize {
        match self {
            Arg::Field { pos, .. }
            | Arg::Variable { pos, .. }
            | Arg::Chain { pos, .. }
            | Arg::Ident { pos, .. }
            | Arg::Dot(pos)
            | Arg::Nil(pos)
            | Arg::Bool(pos, _)
            | Arg::Number { pos, .. }
            | Arg::Str { pos, .. } => *pos,
            Arg::Pipe(p) => p.pos,
        }
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Field { idents, .. } => {
                for i in idents {
                    write!(f, ".{i}")?;
                }
                Ok(())
            }
            Arg::Variable { idents, .. } => f.write_str(&idents.join(".")),
            Arg::Chain { node, fields, .. } => {
                if let Arg::Pipe(p) = node.as_ref() {
                    write!(f, "({p})")?;
                } else {
                    write!(f, "{node}")?;
                }
                for i in fields {
                    write!(f, ".{i}")?;
                }
                Ok(())
            }
            Arg::Ident { name, .. } => f.write_str(name),
            Arg::Dot(_) => f.write_str("."),
            Arg::Nil(_) => f.write_str("nil"),
            Arg::Bool(_, b) => write!(f, "{b}"),
            Arg::Number { text, .. } => f.write_str(text),
            Arg::Str { quoted, .. } => f.write_str(quoted),
            Arg::Pipe(p) => write!(f, "{p}"),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if let Arg::Pipe(p) = a {
                write!(f, "({p})")?;
            } else {
                write!(f, "{a}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            write!(f, "{}", self.decl.join(", "))?;
            f.write_str(if self.is_assign { " = " } else { " := " })?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// A parse error: the line (Go reports only the line for parse errors) and Go's message.
#[derive(Debug)]
pub(crate) struct ParseError {
    pub line: usize,
    pub message: String,
}

/// A parsed file: its own body, and the templates it `define`s (or `block`s).
pub(crate) struct Parsed {
    pub root: List,
    pub defines: Vec<(String, List)>,
}

/// Whether `list` is empty in Go's sense (only whitespace text), so a later definition with
/// such a body does not replace an earlier one.
pub(crate) fn is_empty_tree(list: &List) -> bool {
    list.nodes.iter().all(|n| match n {
        Node::Text(t) => t.trim().is_empty(),
        _ => false,
    })
}

/// Parses `text`. `has_func` answers whether a function name exists (a parse-time check in
/// Go); `max_depth` bounds nesting of parentheses and control blocks.
pub(crate) fn parse(
    text: &str,
    delims: (&str, &str),
    has_func: &dyn Fn(&str) -> bool,
    max_depth: usize,
) -> Result<Parsed, ParseError> {
    let tokens = lex(text, delims.0, delims.1).map_err(|e| ParseError {
        line: e.line,
        message: e.message,
    })?;
    let mut p = Parser {
        toks: tokens,
        i: 0,
        vars: vec!["$".to_string()],
        range_depth: 0,
        depth: 0,
        max_depth,
        has_func,
        defines: Vec::new(),
        line: 1,
    };
    let root = p.parse_top()?;
    Ok(Parsed {
        root,
        defines: p.defines,
    })
}

struct Parser<'a> {
    toks: Vec<Token<'a>>,
    i: usize,
    vars: Vec<String>,
    range_depth: usize,
    depth: usize,
    max_depth: usize,
    has_func: &'a dyn Fn(&str) -> bool,
    defines: Vec<(String, List)>,
    line: usize,
}

/// What ended an item list.
enum End {
    End,
    Else,
}

type PResult<T> = Result<T, ParseError>;

fn describe(t: &Tok<'_>) -> String {
    match t {
        Tok::Text(s) => format!("{s:?}"),
        Tok::LeftDelim => "<left delim>".into(),
        Tok::RightDelim => "<right delim>".into(),
        Tok::Space => "<space>".into(),
        Tok::Field(f) => format!("<field .{f}>"),
        Tok::Variable(v) => format!("<variable {v}>"),
        Tok::Ident(i) => format!("<identifier {i}>"),
        Tok::Keyword(k) => format!("<{k}>"),
        Tok::Bool(b) => format!("{b:?}"),
        Tok::Nil => "<nil>".into(),
        Tok::Dot => "<.>".into(),
        Tok::Number(n) | Tok::CharConst(n) => format!("{n:?}"),
        Tok::Str(q, _) => format!("{q:?}"),
        Tok::Pipe => "\"|\"".into(),
        Tok::LeftParen => "\"(\"".into(),
        Tok::RightParen => "\")\"".into(),
        Tok::Declare => "\":=\"".into(),
        Tok::Assign => "\"=\"".into(),
        Tok::Char(c) => format!("{:?}", c.to_string()),
        Tok::Eof => "EOF".into(),
    }
}

impl<'a> Parser<'a> {
    fn err<T>(&self, message: impl Into<String>) -> PResult<T> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&mut self) -> &Token<'a> {
        let t = &self.toks[self.i.min(self.toks.len() - 1)];
        self.line = t.line;
        t
    }

    fn next(&mut self) -> Token<'a> {
        let t = self.toks[self.i.min(self.toks.len() - 1)].clone();
        self.line = t.line;
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn backup(&mut self) {
        self.i -= 1;
    }

    fn skip_space(&mut self) {
        while matches!(self.peek().tok, Tok::Space) {
            self.next();
        }
    }

    fn peek_non_space(&mut self) -> &Token<'a> {
        self.skip_space();
        self.peek()
    }

    fn next_non_space(&mut self) -> Token<'a> {
        self.skip_space();
        self.next()
    }

    fn expect_right(&mut self, context: &str) -> PResult<Token<'a>> {
        let t = self.next_non_space();
        if t.tok != Tok::RightDelim {
            return self.err(format!("unexpected {} in {context}", describe(&t.tok)));
        }
        Ok(t)
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return self.err(format!("nesting deeper than {} levels", self.max_depth));
        }
        Ok(())
    }

    fn parse_top(&mut self) -> PResult<List> {
        let mut list = List { nodes: Vec::new() };
        loop {
            match self.peek().tok {
                Tok::Eof => return Ok(list),
                Tok::LeftDelim => {
                    let at = self.i;
                    self.next();
                    if self.peek_non_space().tok == Tok::Keyword("define") {
                        self.next();
                        self.parse_definition()?;
                        continue;
                    }
                    self.i = at;
                }
                _ => {}
            }
            match self.text_or_action()? {
                Item::Node(n) => list.nodes.push(n),
                Item::End => return self.err("unexpected {{end}}"),
                Item::Else => return self.err("unexpected {{else}}"),
            }
        }
    }

    fn parse_definition(&mut self) -> PResult<()> {
        let context = "define clause";
        let t = self.next_non_space();
        let name = match t.tok {
            Tok::Str(_, v) => v,
            other => return self.err(format!("unexpected {} in {context}", describe(&other))),
        };
        self.expect_right(context)?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let (list, end) = self.item_list()?;
        self.vars = saved;
        if let End::Else = end {
            return self.err(format!("unexpected {{{{else}}}} in {context}"));
        }
        self.add_define(name, list)
    }

    /// Go's `Tree.add`: within one parse, a second non-empty definition is an error.
    fn add_define(&mut self, name: String, list: List) -> PResult<()> {
        if let Some(i) = self.defines.iter().position(|(n, _)| *n == name) {
            if is_empty_tree(&self.defines[i].1) {
                self.defines[i].1 = list;
            } else if !is_empty_tree(&list) {
                return self.err(format!(
                    "template: multiple definition of template {name:?}"
                ));
            }
            return Ok(());
        }
        self.defines.push((name, list));
        Ok(())
    }

    fn item_list(&mut self) -> PResult<(List, End)> {
        let mut list = List { nodes: Vec::new() };
        loop {
            if self.peek_non_space().tok == Tok::Eof {
                return self.err("unexpected EOF");
            }
            match self.text_or_action()? {
                Item::Node(n) => list.nodes.push(n),
                Item::End => return Ok((list, End::End)),
                Item::Else => return Ok((list, End::Else)),
            }
        }
    }

    fn text_or_action(&mut self) -> PResult<Item> {
        let t = self.next_non_space();
        match t.tok {
            Tok::Text(s) => Ok(Item::Node(Node::Text(s.to_string()))),
            Tok::LeftDelim => self.action(),
            other => self.err(format!("unexpected {} in input", describe(&other))),
        }
    }

    fn action(&mut self) -> PResult<Item> {
        let t = self.next_non_space();
        match t.tok {
            Tok::Keyword("block") => self.block(),
            Tok::Keyword("break") => {
                if self.range_depth == 0 {
                    return self.err("{{break}} outside {{range}}");
                }
                self.expect_right("{{break}}")?;
                Ok(Item::Node(Node::Break))
            }
            Tok::Keyword("continue") => {
                if self.range_depth == 0 {
                    return self.err("{{continue}} outside {{range}}");
                }
                self.expect_right("{{continue}}")?;
                Ok(Item::Node(Node::Continue))
            }
            Tok::Keyword("else") => {
                let p = self.peek_non_space();
                if matches!(p.tok, Tok::Keyword("if") | Tok::Keyword("with")) {
                    return Ok(Item::Else);
                }
                self.expect_right("else")?;
                Ok(Item::Else)
            }
            Tok::Keyword("end") => {
                self.expect_right("end")?;
                Ok(Item::End)
            }
            Tok::Keyword("if") => Ok(Item::Node(Node::If(self.control("if")?))),
            Tok::Keyword("range") => Ok(Item::Node(Node::Range(self.control("range")?))),
            Tok::Keyword("with") => Ok(Item::Node(Node::With(self.control("with")?))),
            Tok::Keyword("template") => self.template(),
            Tok::Keyword("define") => self.err("unexpected <define> in command"),
            _ => {
                self.backup();
                let pipe = self.pipeline("command", Tok::RightDelim)?;
                Ok(Item::Node(Node::Action(pipe)))
            }
        }
    }

    fn control(&mut self, context: &'static str) -> PResult<Branch> {
        self.enter()?;
        let vars_mark = self.vars.len();
        let pipe = self.pipeline(context, Tok::RightDelim)?;
        let pos = pipe.pos;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, end) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let mut else_list = None;
        if let End::Else = end {
            let next = self.peek().tok.clone();
            if context == "if" && next == Tok::Keyword("if") {
                self.next();
                let inner = self.control("if")?;
                else_list = Some(List {
                    nodes: vec![Node::If(inner)],
                });
            } else if context == "with" && next == Tok::Keyword("with") {
                self.next();
                let inner = self.control("with")?;
                else_list = Some(List {
                    nodes: vec![Node::With(inner)],
                });
            } else {
                let (l, end) = self.item_list()?;
                if let End::Else = end {
                    return self.err("expected end; found {{else}}");
                }
                else_list = Some(l);
            }
        }
        self.vars.truncate(vars_mark);
        self.depth -= 1;
        Ok(Branch {
            pos,
            pipe,
            list,
            else_list,
        })
    }

    fn template_name(&mut self, context: &str) -> PResult<String> {
        let t = self.next_non_space();
        match t.tok {
            Tok::Str(_, v) => Ok(v),
            other => self.err(format!("unexpected {} in {context}", describe(&other))),
        }
    }

    fn template(&mut self) -> PResult<Item> {
        let context = "template clause";
        // Go positions a template node at its name.
        let pos = self.peek_non_space().pos;
        let name = self.template_name(context)?;
        let pipe = if self.next_non_space().tok != Tok::RightDelim {
            self.backup();
            Some(self.pipeline(context, Tok::RightDelim)?)
        } else {
            None
        };
        Ok(Item::Node(Node::Template { pos, name, pipe }))
    }

    fn block(&mut self) -> PResult<Item> {
        let context = "block clause";
        let pos = self.peek_non_space().pos;
        let name = self.template_name(context)?;
        let pipe = self.pipeline(context, Tok::RightDelim)?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let saved_range = std::mem::take(&mut self.range_depth);
        let (list, end) = self.item_list()?;
        self.vars = saved;
        self.range_depth = saved_range;
        if let End::Else = end {
            return self.err(format!("unexpected {{{{else}}}} in {context}"));
        }
        self.add_define(name.clone(), list)?;
        Ok(Item::Node(Node::Template {
            pos,
            name,
            pipe: Some(pipe),
        }))
    }

    fn pipeline(&mut self, context: &str, end: Tok<'_>) -> PResult<Pipe> {
        self.enter()?;
        let start = self.peek_non_space();
        let mut pipe = Pipe {
            pos: start.pos,
            is_assign: false,
            decl: Vec::new(),
            cmds: Vec::new(),
        };
        // Declarations: `$x :=`, `$x =`, `$i, $v :=` (range only).
        loop {
            let v = self.peek_non_space();
            let Tok::Variable(name) = v.tok.clone() else {
                break;
            };
            let at = self.i;
            self.next();
            let next = &self.peek_non_space().tok;
            match next {
                Tok::Assign | Tok::Declare => {
                    pipe.is_assign = *next == Tok::Assign;
                    self.next();
                    pipe.decl.push(name.to_string());
                    self.vars.push(name.to_string());
                    break;
                }
                Tok::Char(',') => {
                    self.next();
                    pipe.decl.push(name.to_string());
                    self.vars.push(name.to_string());
                    if context == "range" && pipe.decl.len() < 2 {
                        match self.peek_non_space().tok {
                            Tok::Variable(_) | Tok::RightDelim | Tok::RightParen => continue,
                            _ => return self.err("range can only initialize variables"),
                        }
                    }
                    return self.err(format!("too many declarations in {context}"));
                }
                _ => {
                    self.i = at;
                    break;
                }
            }
        }
        loop {
            let t = self.next_non_space();
            if t.tok == end {
                if pipe.cmds.is_empty() {
                    return self.err(format!("missing value for {context}"));
                }
                for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
                    if matches!(
                        c.args.first(),
                        Some(
                            Arg::Bool(..)
                                | Arg::Dot(_)
                                | Arg::Nil(_)
                                | Arg::Number { .. }
                                | Arg::Str { .. }
                        )
                    ) {
                        return self.err(format!(
                            "non executable command in pipeline stage {}",
                            i + 1
                        ));
                    }
                }
                self.depth -= 1;
                return Ok(pipe);
            }
            match t.tok {
                Tok::Bool(_)
                | Tok::CharConst(_)
                | Tok::Dot
                | Tok::Field(_)
                | Tok::Ident(_)
                | Tok::Number(_)
                | Tok::Nil
                | Tok::Str(..)
                | Tok::Variable(_)
                | Tok::LeftParen => {
                    self.backup();
                    let c = self.command()?;
                    pipe.cmds.push(c);
                }
                other => return self.err(format!("unexpected {} in {context}", describe(&other))),
            }
        }
    }

    fn command(&mut self) -> PResult<Command> {
        let pos = self.peek_non_space().pos;
        let mut cmd = Command {
            pos,
            args: Vec::new(),
        };
        loop {
            self.skip_space();
            if let Some(a) = self.operand()? {
                cmd.args.push(a);
            }
            let t = self.next();
            match t.tok {
                Tok::Space => continue,
                Tok::RightDelim | Tok::RightParen => self.backup(),
                Tok::Pipe => {}
                other => return self.err(format!("unexpected {} in operand", describe(&other))),
            }
            break;
        }
        if cmd.args.is_empty() {
            return self.err("empty command");
        }
        Ok(cmd)
    }

    fn operand(&mut self) -> PResult<Option<Arg>> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        if let Tok::Field(_) = self.peek().tok {
            let chain_pos = self.peek().pos;
            let mut fields = Vec::new();
            while let Tok::Field(f) = self.peek().tok.clone() {
                self.next();
                fields.push(f.to_string());
            }
            return Ok(Some(match node {
                Arg::Field { mut idents, .. } => {
                    idents.extend(fields);
                    Arg::Field {
                        pos: chain_pos,
                        idents,
                    }
                }
                Arg::Variable { mut idents, .. } => {
                    idents.extend(fields);
                    Arg::Variable {
                        pos: chain_pos,
                        idents,
                    }
                }
                Arg::Bool(..)
                | Arg::Str { .. }
                | Arg::Number { .. }
                | Arg::Nil(_)
                | Arg::Dot(_) => {
                    return self.err(format!("unexpected . after term {:?}", node.to_string()));
                }
                other => Arg::Chain {
                    pos: chain_pos,
                    node: Box::new(other),
                    fields,
                },
            }));
        }
        Ok(Some(node))
    }

    fn term(&mut self) -> PResult<Option<Arg>> {
        let t = self.next_non_space();
        let pos = t.pos;
        Ok(Some(match t.tok {
            Tok::Ident(name) => {
                if !(self.has_func)(name) {
                    return self.err(format!("function {name:?} not defined"));
                }
                Arg::Ident {
                    pos,
                    name: name.to_string(),
                }
            }
            Tok::Dot => Arg::Dot(pos),
            Tok::Nil => Arg::Nil(pos),
            Tok::Variable(v) => {
                if !self.vars.iter().any(|x| x == v) {
                    return self.err(format!("undefined variable {v:?}"));
                }
                Arg::Variable {
                    pos,
                    idents: vec![v.to_string()],
                }
            }
            Tok::Field(f) => Arg::Field {
                pos,
                idents: vec![f.to_string()],
            },
            Tok::Bool(b) => Arg::Bool(pos, b),
            Tok::Number(text) => {
                let value = parse_number(text)
                    .ok_or(())
                    .or_else(|_| self.err(format!("illegal number syntax: {text:?}")))?;
                Arg::Number {
                    pos,
                    text: text.to_string(),
                    value,
                }
            }
            Tok::CharConst(text) => {
                let value = parse_char(text)
                    .ok_or(())
                    .or_else(|_| self.err(format!("malformed character constant: {text}")))?;
                Arg::Number {
                    pos,
                    text: text.to_string(),
                    value: Num::Int(value),
                }
            }
            Tok::LeftParen => {
                let p = self.pipeline("parenthesized pipeline", Tok::RightParen)?;
                Arg::Pipe(Box::new(p))
            }
            Tok::Str(quoted, value) => Arg::Str {
                pos,
                quoted: quoted.to_string(),
                value: value.into(),
            },
            _ => {
                self.backup();
                return Ok(None);
            }
        }))
    }
}

enum Item {
    Node(Node),
    End,
    Else,
}

/// Go's number literal rules as `idealConstant` applies them: integers (any base, `_`
/// separators) are ints; anything with `.`, `e` or `p` (non-hex) is a float.
fn parse_number(text: &str) -> Option<Num> {
    let clean: String = text.chars().filter(|c| *c != '_').collect();
    if clean.ends_with('i') {
        return None; // complex numbers: no chart uses them.
    }
    let (neg, body) = match clean.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let lower = body.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        if h.contains(['.', 'p']) {
            None
        } else {
            Some(i128::from_str_radix(h, 16).ok())
        }
    } else if let Some(o) = lower.strip_prefix("0o") {
        Some(i128::from_str_radix(o, 8).ok())
    } else if let Some(b) = lower.strip_prefix("0b") {
        Some(i128::from_str_radix(b, 2).ok())
    } else if lower.contains(['.', 'e']) {
        None
    } else if lower.len() > 1 && lower.starts_with('0') {
        Some(i128::from_str_radix(&lower[1..], 8).ok())
    } else {
        Some(lower.parse::<i128>().ok())
    };
    match int {
        Some(Some(v)) => {
            let v = if neg { -v } else { v };
            Some(i64::try_from(v).map_or(Num::Overflow, Num::Int))
        }
        Some(None) => {
            // Too long for i128 but all digits: an overflow, not a syntax error.
            if lower
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == 'x' || c == 'o')
            {
                Some(Num::Overflow)
            } else {
                None
            }
        }
        None => {
            let f: f64 = lower.parse().ok()?;
            Some(Num::Float(if neg { -f } else { f }))
        }
    }
}

fn parse_char(text: &str) -> Option<i64> {
    let inner = &text[1..text.len() - 1];
    if let Some(esc) = inner.strip_prefix('\\') {
        let c = match esc {
            "n" => '\n',
            "t" => '\t',
            "r" => '\r',
            "\\" => '\\',
            "'" => '\'',
            "0" => '\0',
            "a" => '\x07',
            "b" => '\x08',
            "f" => '\x0c',
            "v" => '\x0b',
            _ => {
                let hex = esc.strip_prefix(['x', 'u', 'U'])?;
                return i64::from_str_radix(hex, 16).ok();
            }
        };
        return Some(c as i64);
    }
    let mut chars = inner.chars();
    let c = chars.next()?;
    if chars.next().is_some() {
        return None;
    }
    Some(c as i64)
}

/// A template in a set: its body, and where it came from (for error locations).
#[derive(Debug)]
pub(crate) struct Template {
    pub name: String,
    /// The file (or `tpl` string) it was parsed from, as error locations name it.
    pub parse_name: String,
    pub source: Arc<str>,
    pub root: Arc<List>,
}

/// `NAME:LINE:COL` of byte `pos` in `source`, as Go's `ErrorContext` computes it.
pub(crate) fn location(parse_name: &str, source: &str, pos: usize) -> String {
    let pos = pos.min(source.len());
    let before = &source.as_bytes()[..pos];
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let col = match before.iter().rposition(|b| *b == b'\n') {
        Some(nl) => pos - nl - 1,
        None => pos,
    };
    format!("{parse_name}:{line}:{col}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Parsed, ParseError> {
        parse(s, ("{{", "}}"), &|n| n == "printf" || n == "include", 100)
    }

    #[test]
    fn pipelines_print_as_go_prints_them() {
        let parsed = p(r#"{{ $x := .a.b | printf "%d" (include "y" $) }}"#)
            .unwrap_or_else(|e| panic!("{}", e.message));
        let Node::Action(pipe) = &parsed.root.nodes[0] else {
            panic!("not an action")
        };
        assert_eq!(
            pipe.to_string(),
            r#"$x := .a.b | printf "%d" (include "y" $)"#
        );
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = p("{{ nope 1 }}").err().map(|e| e.message);
        assert_eq!(e.as_deref(), Some("function \"nope\" not defined"));
        let e = p("{{ $y }}").err().map(|e| e.message);
        assert_eq!(e.as_deref(), Some("undefined variable \"$y\""));
        assert!(p("{{ if 1 }}").is_err());
        assert!(p("{{ end }}").is_err());
        assert!(p("{{ break }}").is_err());
    }

    #[test]
    fn defines_are_collected() {
        let parsed =
            p(r#"a{{ define "x" }}X{{ end }}b"#).unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(parsed.defines.len(), 1);
        assert_eq!(parsed.root.nodes.len(), 2);
    }
}
