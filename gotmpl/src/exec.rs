//! The executor: walks a parsed template over a [`Value`] as Go's `text/template/exec.go`
//! does (variables, pipelines, field chains, control flow, `template`), calls functions from
//! [`crate::funcs`], and implements the functions that need the template set itself
//! (`include`, `tpl`). Every node evaluated is charged to the step budget.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Arc;

use crate::funcs::{self, CallError, Callee, Ctx, Imp, Ty};
use crate::parse::{Arg, Branch, Command, List, Node, Num, Pipe, Template, location};
use crate::{Error, MissingKey, Options, TemplateSet, Value};

/// Meters one `execute` call (including everything it includes).
pub(crate) struct Budget {
    steps_left: Cell<u64>,
    pub max_output: usize,
    /// Address of a local in `execute`'s frame: stack use is measured from here.
    stack_base: usize,
    max_stack: usize,
}

/// The address of a local of the caller's frame (safe: the pointer is never dereferenced).
#[inline(never)]
fn stack_marker() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

impl Budget {
    pub fn new(options: &Options) -> Budget {
        // Walks left over from earlier work on this thread are not this call's.
        crate::value::take_walked();
        Budget {
            steps_left: Cell::new(options.max_steps),
            max_output: options.max_output_bytes,
            stack_base: stack_marker(),
            max_stack: options.max_stack_bytes,
        }
    }

    /// Refuses to go deeper once the executor has used its stack allowance.
    pub fn check_stack(&self) -> Result<(), String> {
        let used = self.stack_base.abs_diff(stack_marker());
        if used > self.max_stack {
            return Err(format!(
                "nesting budget exhausted: evaluation used more than {} bytes of stack",
                self.max_stack
            ));
        }
        Ok(())
    }

    /// Charges `n` steps.
    pub fn charge(&self, n: u64) -> Result<(), String> {
        let left = self.steps_left.get();
        if n > left {
            self.steps_left.set(0);
            return Err("step budget exhausted: the template does too much work".to_string());
        }
        self.steps_left.set(left - n);
        Ok(())
    }

    /// Refuses a string or list of `n` bytes/elements beyond the output limit.
    pub fn check_size(&self, n: usize) -> Result<(), String> {
        if n > self.max_output {
            return Err(format!(
                "output budget exhausted: a value of {n} bytes exceeds the limit of {} bytes",
                self.max_output
            ));
        }
        Ok(())
    }
}

pub(crate) fn execute(set: &TemplateSet, name: &str, data: &Value) -> Result<String, Error> {
    let budget = Budget::new(&set.options);
    let scope = Scope { set, overlay: None };
    execute_with(&scope, &budget, 0, name, data)
}

/// The templates an execution sees: the set, plus what `tpl` calls parsed on top of it
/// (Helm parses `tpl` text into a copy of the set; an overlay gives the same view without
/// copying the set on every call).
#[derive(Clone)]
struct Scope<'a> {
    set: &'a TemplateSet,
    overlay: Option<Arc<HashMap<String, Arc<Template>>>>,
}

impl Scope<'_> {
    fn lookup(&self, name: &str) -> Option<&Arc<Template>> {
        self.overlay
            .as_ref()
            .and_then(|o| o.get(name))
            .or_else(|| self.set.lookup(name))
    }
}

fn execute_with(
    scope: &Scope<'_>,
    budget: &Budget,
    depth: usize,
    name: &str,
    data: &Value,
) -> Result<String, Error> {
    let Some(tmpl) = scope.lookup(name) else {
        return Err(Error::Template {
            template: name.to_string(),
            message: format!("no template {name:?} associated with template \"gotpl\""),
        });
    };
    let mut state = State {
        scope: scope.clone(),
        budget,
        tmpl: tmpl.clone(),
        vars: vec![("$".to_string(), data.clone())],
        depth,
    };
    let mut out = String::new();
    let root = tmpl.root.clone();
    state.walk_list(data, &root, &mut out)?;
    Ok(out)
}

/// What a walked node asks its enclosing `range` to do.
enum Flow {
    Normal,
    Break,
    Continue,
}

struct State<'a> {
    scope: Scope<'a>,
    budget: &'a Budget,
    tmpl: Arc<Template>,
    vars: Vec<(String, Value)>,
    depth: usize,
}

/// Where a receiver came from: Go treats a nil found inside a field chain (a typed
/// `interface{}` nil) differently from a nil dot or variable (an invalid value).
#[derive(Clone, Copy, PartialEq)]
enum Origin {
    Start,
    Chain,
}

type R<T> = Result<T, Error>;

impl<'a> State<'a> {
    fn options(&self) -> &Options {
        &self.scope.set.options
    }

    fn loc(&self, pos: usize) -> String {
        location(&self.tmpl.parse_name, &self.tmpl.source, pos)
    }

    fn err(&self, pos: usize, context: &dyn Display, message: impl Into<String>) -> Error {
        Error::Exec {
            location: self.loc(pos),
            template: self.tmpl.name.clone(),
            context: context.to_string(),
            message: message.into(),
        }
    }

    /// An error about a block's pipeline value, placed where Go places it.
    fn err_at_last(&self, b: &Branch, message: String) -> Error {
        match last_node(&b.pipe) {
            Some(a) => self.err(a.pos(), a, message),
            None => self.err(b.pos, &b.pipe, message),
        }
    }

    fn step(&self, pos: usize) -> R<()> {
        // Every node walked while printing or encoding values costs a step too.
        self.budget
            .charge(1 + crate::value::take_walked())
            .and_then(|_| self.budget.check_stack())
            .map_err(|message| Error::Budget {
                location: self.loc(pos),
                message,
            })
    }

    fn write(&self, out: &mut String, s: &str, pos: usize) -> R<()> {
        if out.len() + s.len() > self.budget.max_output {
            return Err(Error::Budget {
                location: self.loc(pos),
                message: format!(
                    "output budget exhausted: more than {} bytes",
                    self.budget.max_output
                ),
            });
        }
        out.push_str(s);
        Ok(())
    }

    fn walk_list(&mut self, dot: &Value, list: &List, out: &mut String) -> R<Flow> {
        for node in &list.nodes {
            match self.walk(dot, node, out)? {
                Flow::Normal => {}
                flow => return Ok(flow),
            }
        }
        Ok(Flow::Normal)
    }

    fn walk(&mut self, dot: &Value, node: &Node, out: &mut String) -> R<Flow> {
        match node {
            Node::Text(t) => {
                self.step(0)?;
                self.write(out, t, 0)?;
            }
            Node::Action(pipe) => {
                self.step(pipe.pos)?;
                let v = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    let text = match &v {
                        Value::Nil => "<no value>".to_string(),
                        Value::String(s) => {
                            self.write(out, s, pipe.pos)?;
                            return Ok(Flow::Normal);
                        }
                        other => other.to_string(),
                    };
                    self.write(out, &text, pipe.pos)?;
                }
            }
            Node::If(b) => return self.walk_if_with(dot, b, false, out),
            Node::With(b) => return self.walk_if_with(dot, b, true, out),
            Node::Range(b) => return self.walk_range(dot, b, out),
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
            Node::Template { pos, name, pipe } => {
                self.step(*pos)?;
                let ctx = TemplateCtx(name, pipe.as_ref());
                let Some(tmpl) = self.scope.lookup(name).cloned() else {
                    return Err(self.err(*pos, &ctx, format!("template {name:?} not defined")));
                };
                if self.depth >= self.options().max_depth {
                    return Err(Error::Budget {
                        location: self.loc(*pos),
                        message: format!(
                            "exceeded maximum template depth ({})",
                            self.options().max_depth
                        ),
                    });
                }
                let new_dot = match pipe {
                    Some(p) => self.eval_pipeline(dot, p)?,
                    None => Value::Nil,
                };
                let mut inner = State {
                    scope: self.scope.clone(),
                    budget: self.budget,
                    tmpl: tmpl.clone(),
                    vars: vec![("$".to_string(), new_dot.clone())],
                    depth: self.depth + 1,
                };
                inner.walk_list(&new_dot, &tmpl.root, out)?;
            }
        }
        Ok(Flow::Normal)
    }

    fn walk_if_with(&mut self, dot: &Value, b: &Branch, with: bool, out: &mut String) -> R<Flow> {
        self.step(b.pos)?;
        let mark = self.vars.len();
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let flow = if val.truth() {
            if with {
                self.walk_list(&val, &b.list, out)?
            } else {
                self.walk_list(dot, &b.list, out)?
            }
        } else if let Some(e) = &b.else_list {
            self.walk_list(dot, e, out)?
        } else {
            Flow::Normal
        };
        self.vars.truncate(mark);
        Ok(flow)
    }

    fn walk_range(&mut self, dot: &Value, b: &Branch, out: &mut String) -> R<Flow> {
        self.step(b.pos)?;
        let mark = self.vars.len();
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let body_mark = self.vars.len();
        // Lazily: `range 1000000000` must stop at the step budget, not allocate first.
        let items: Box<dyn Iterator<Item = (Value, Value)>> = match &val {
            Value::List(l) => {
                let l = l.clone();
                Box::new((0..l.len()).map(move |i| (Value::Int(i as i64), l[i].clone())))
            }
            Value::Map(m) => Box::new(m.snapshot().into_iter().map(|(k, v)| (Value::string(k), v))),
            Value::Int(n) => {
                if b.pipe.decl.len() > 1 {
                    return Err(self.err_at_last(
                        b,
                        format!("can't use {n} to iterate over more than one variable"),
                    ));
                }
                Box::new((0..*n).map(|i| (Value::Nil, Value::Int(i))))
            }
            Value::Nil => Box::new(std::iter::empty()),
            Value::Object(o) if o.entries().is_some() => {
                Box::new(o.entries().unwrap_or_default().into_iter())
            }
            other => {
                return Err(self.err_at_last(b, format!("range can't iterate over {other}")));
            }
        };
        let mut ran = false;
        for (index, elem) in items {
            ran = true;
            self.step(b.pos)?;
            let decl = &b.pipe.decl;
            if !decl.is_empty() {
                if b.pipe.is_assign {
                    if decl.len() > 1 {
                        self.set_var(&decl[0], index.clone(), b)?;
                        self.set_var(&decl[1], elem.clone(), b)?;
                    } else {
                        self.set_var(&decl[0], elem.clone(), b)?;
                    }
                } else {
                    let n = self.vars.len();
                    self.vars[n - 1].1 = elem.clone();
                    if decl.len() > 1 {
                        self.vars[n - 2].1 = index.clone();
                    }
                }
            }
            let flow = self.walk_list(&elem, &b.list, out)?;
            self.vars.truncate(body_mark);
            if let Flow::Break = flow {
                break;
            }
        }
        if !ran && let Some(e) = &b.else_list {
            self.walk_list(dot, e, out)?;
        }
        self.vars.truncate(mark);
        Ok(Flow::Normal)
    }

    fn set_var(&mut self, name: &str, value: Value, at: &Branch) -> R<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = value;
                Ok(())
            }
            None => Err(self.err(at.pos, &at.pipe, format!("undefined variable: {name}"))),
        }
    }

    fn var_value(&self, name: &str, pos: usize) -> R<Value> {
        match self.vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => Err(self.err(pos, &name, format!("undefined variable: {name}"))),
        }
    }

    fn eval_pipeline(&mut self, dot: &Value, pipe: &Pipe) -> R<Value> {
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or_default();
        for name in &pipe.decl {
            if pipe.is_assign {
                match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = value.clone(),
                    None => {
                        return Err(self.err(
                            pipe.pos,
                            pipe,
                            format!("undefined variable: {name}"),
                        ));
                    }
                }
            } else {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn not_a_function(&self, cmd: &Command, final_: &Option<Value>) -> R<()> {
        if cmd.args.len() > 1 || final_.is_some() {
            return Err(self.err(
                cmd.args[0].pos(),
                &cmd.args[0],
                format!("can't give argument to non-function {}", cmd.args[0]),
            ));
        }
        Ok(())
    }

    fn eval_command(&mut self, dot: &Value, cmd: &Command, final_: Option<Value>) -> R<Value> {
        self.step(cmd.pos)?;
        let first = &cmd.args[0];
        match first {
            Arg::Field { pos, idents } => self.eval_field_chain(
                dot,
                dot.clone(),
                Origin::Start,
                first,
                *pos,
                idents,
                &cmd.args,
                final_,
            ),
            Arg::Variable { pos, idents } => {
                let v = self.var_value(&idents[0], *pos)?;
                if idents.len() == 1 {
                    self.not_a_function(cmd, &final_)?;
                    return Ok(v);
                }
                self.eval_field_chain(
                    dot,
                    v,
                    Origin::Start,
                    first,
                    *pos,
                    &idents[1..],
                    &cmd.args,
                    final_,
                )
            }
            Arg::Chain { pos, node, fields } => {
                let v = self.eval_arg_value(dot, node)?;
                self.eval_field_chain(
                    dot,
                    v,
                    Origin::Start,
                    first,
                    *pos,
                    fields,
                    &cmd.args,
                    final_,
                )
            }
            Arg::Ident { pos, name } => {
                self.eval_function(dot, name, *pos, cmd, &cmd.args[1..], final_)
            }
            Arg::Pipe(p) => {
                self.not_a_function(cmd, &final_)?;
                self.eval_pipeline(dot, p)
            }
            Arg::Bool(_, b) => {
                self.not_a_function(cmd, &final_)?;
                Ok(Value::Bool(*b))
            }
            Arg::Dot(_) => {
                self.not_a_function(cmd, &final_)?;
                Ok(dot.clone())
            }
            Arg::Nil(pos) => Err(self.err(*pos, first, "nil is not a command")),
            Arg::Number { pos, text, value } => {
                self.not_a_function(cmd, &final_)?;
                self.number(*pos, text, *value)
            }
            Arg::Str { value, .. } => {
                self.not_a_function(cmd, &final_)?;
                Ok(Value::String(value.clone()))
            }
        }
    }

    fn number(&self, pos: usize, text: &str, value: Num) -> R<Value> {
        match value {
            Num::Int(i) => Ok(Value::Int(i)),
            Num::Float(f) => Ok(Value::Float(f)),
            Num::Overflow => Err(self.err(pos, &text, format!("{text} overflows int"))),
        }
    }

    /// Evaluates an operand that is not called with arguments.
    fn eval_arg_value(&mut self, dot: &Value, arg: &Arg) -> R<Value> {
        self.step(arg.pos())?;
        match arg {
            Arg::Dot(_) => Ok(dot.clone()),
            Arg::Nil(_) => Ok(Value::Nil),
            Arg::Bool(_, b) => Ok(Value::Bool(*b)),
            Arg::Str { value, .. } => Ok(Value::String(value.clone())),
            Arg::Number { pos, text, value } => self.number(*pos, text, *value),
            Arg::Field { pos, idents } => self.eval_field_chain(
                dot,
                dot.clone(),
                Origin::Start,
                arg,
                *pos,
                idents,
                &[],
                None,
            ),
            Arg::Variable { pos, idents } => {
                let v = self.var_value(&idents[0], *pos)?;
                if idents.len() == 1 {
                    return Ok(v);
                }
                self.eval_field_chain(dot, v, Origin::Start, arg, *pos, &idents[1..], &[], None)
            }
            Arg::Chain { pos, node, fields } => {
                let v = self.eval_arg_value(dot, node)?;
                self.eval_field_chain(dot, v, Origin::Start, arg, *pos, fields, &[], None)
            }
            Arg::Pipe(p) => self.eval_pipeline(dot, p),
            Arg::Ident { pos, name } => {
                let cmd = Command {
                    pos: *pos,
                    args: vec![arg.clone()],
                };
                self.eval_function(dot, name, *pos, &cmd, &[], None)
            }
        }
    }

    /// `.a.b.c` on `receiver`; the last field gets `args` (after the first word) and the
    /// piped `final_` value, as a method call would.
    #[allow(clippy::too_many_arguments)]
    fn eval_field_chain(
        &mut self,
        dot: &Value,
        receiver: Value,
        origin: Origin,
        node: &Arg,
        pos: usize,
        idents: &[String],
        args: &[Arg],
        final_: Option<Value>,
    ) -> R<Value> {
        let mut recv = receiver;
        let mut origin = origin;
        let n = idents.len();
        for (i, name) in idents.iter().enumerate() {
            let last = i + 1 == n;
            let (call_args, fin) = if last {
                (args.get(1..).unwrap_or(&[]), final_.clone())
            } else {
                (&[][..], None)
            };
            recv = self.eval_field(dot, name, node, pos, call_args, fin, recv, origin)?;
            origin = Origin::Chain;
        }
        Ok(recv)
    }

    #[allow(clippy::too_many_arguments)]
    fn eval_field(
        &mut self,
        dot: &Value,
        name: &str,
        node: &Arg,
        pos: usize,
        args: &[Arg],
        final_: Option<Value>,
        receiver: Value,
        origin: Origin,
    ) -> R<Value> {
        let has_args = !args.is_empty() || final_.is_some();
        match &receiver {
            Value::Nil => {
                if origin == Origin::Chain {
                    return Err(self.err(
                        pos,
                        node,
                        format!("nil pointer evaluating interface {{}}.{name}"),
                    ));
                }
                if self.options().missing_key == MissingKey::Error {
                    return Err(self.err(
                        pos,
                        node,
                        format!("nil data; no entry for key {name:?}"),
                    ));
                }
                Ok(Value::Nil)
            }
            Value::Map(m) => {
                if has_args {
                    return Err(self.err(
                        pos,
                        node,
                        format!("{name} is not a method but has arguments"),
                    ));
                }
                match m.get(name) {
                    Some(v) => Ok(v.clone()),
                    None => match self.options().missing_key {
                        MissingKey::Zero => Ok(Value::Nil),
                        MissingKey::Error => {
                            Err(self.err(pos, node, format!("map has no entry for key {name:?}")))
                        }
                    },
                }
            }
            Value::Object(o) => {
                let mut argv = Vec::with_capacity(args.len() + 1);
                for a in args {
                    argv.push(self.eval_arg_value(dot, a)?);
                }
                if let Some(f) = final_ {
                    argv.push(f);
                }
                if let Some(result) = o.call(name, &argv) {
                    // Method errors are Go's argument checks, which it reports unwrapped.
                    return result.map_err(|m| self.err(pos, node, m));
                }
                match o.field(name) {
                    Some(_) if has_args => Err(self.err(
                        pos,
                        node,
                        format!("{name} has arguments but cannot be invoked as function"),
                    )),
                    Some(v) => Ok(v),
                    None => Err(self.err(
                        pos,
                        node,
                        format!("can't evaluate field {name} in type {}", o.type_name()),
                    )),
                }
            }
            other => {
                let ty = if origin == Origin::Chain {
                    "interface {}"
                } else {
                    other.type_name()
                };
                Err(self.err(
                    pos,
                    node,
                    format!("can't evaluate field {name} in type {ty}"),
                ))
            }
        }
    }

    fn eval_function(
        &mut self,
        dot: &Value,
        name: &str,
        pos: usize,
        cmd: &Command,
        args: &[Arg],
        final_: Option<Value>,
    ) -> R<Value> {
        let ident = IdentCtx(name);
        let Some(func) = funcs::get(name) else {
            return Err(self.err(pos, &ident, format!("{name:?} is not a defined function")));
        };
        let n_in = args.len() + usize::from(final_.is_some());
        let fixed = func.params.len();
        if func.variadic.is_some() {
            if n_in < fixed {
                return Err(self.err(
                    pos,
                    &ident,
                    format!(
                        "wrong number of args for {name}: want at least {fixed} got {}",
                        args.len()
                    ),
                ));
            }
        } else if n_in != fixed {
            return Err(self.err(
                pos,
                &ident,
                format!("wrong number of args for {name}: want {fixed} got {n_in}"),
            ));
        }
        let callee = match func.imp {
            // `and`/`or` short-circuit and return the deciding operand.
            Imp::And | Imp::Or => {
                let want = matches!(func.imp, Imp::Or);
                let mut v = Value::Nil;
                for a in args {
                    v = self.eval_arg_value(dot, a)?;
                    if v.truth() == want {
                        return Ok(v);
                    }
                }
                if let Some(f) = final_ {
                    v = f;
                }
                return Ok(v);
            }
            Imp::Call(callee) => callee,
        };
        let mut argv = Vec::with_capacity(n_in);
        for (i, a) in args.iter().enumerate() {
            let ty = func
                .params
                .get(i)
                .copied()
                .or(func.variadic)
                .unwrap_or(Ty::Any);
            let v = self.eval_typed_arg(dot, a, ty)?;
            argv.push(v);
        }
        if let Some(f) = final_ {
            let ty = func
                .params
                .get(args.len())
                .copied()
                .or(func.variadic)
                .unwrap_or(Ty::Any);
            let v = funcs::convert(f, ty).map_err(|m| self.err(pos, &ident, m))?;
            argv.push(v);
        }
        // Functions do work in proportion to their arguments (`upper`, `regexFindAll` and
        // `toString` of a large value in a loop): charge it, so only the budget decides.
        let work: usize = argv
            .iter()
            .map(|v| match v {
                Value::String(s) => s.len() / 16,
                Value::List(l) => l.len(),
                Value::Map(m) => m.len(),
                _ => 0,
            })
            .sum();
        self.budget
            .charge(work as u64)
            .map_err(|message| Error::Budget {
                location: self.loc(cmd.pos),
                message,
            })?;
        let result = match callee {
            Callee::Plain(f) => {
                let ctx = Ctx {
                    budget: self.budget,
                    options: self.options(),
                };
                f(&ctx, argv)
            }
            Callee::Include => self.include(argv),
            Callee::Tpl => self.tpl(argv),
        };
        let result = result.and_then(|v| {
            if let Value::String(s) = &v {
                self.budget.check_size(s.len()).map_err(CallError::Budget)?;
            }
            Ok(v)
        });
        result.map_err(|e| self.call_error(cmd, name, e))
    }

    fn eval_typed_arg(&mut self, dot: &Value, a: &Arg, ty: Ty) -> R<Value> {
        // Constants are checked against the parameter type by their syntax, as Go does.
        match (a, ty) {
            (Arg::Number { text, .. }, Ty::Str) => {
                return Err(self.err(a.pos(), a, format!("expected string; found {text}")));
            }
            (Arg::Str { quoted, .. }, Ty::Int) => {
                return Err(self.err(a.pos(), a, format!("expected integer; found {quoted}")));
            }
            (
                Arg::Number {
                    text,
                    value: Num::Float(f),
                    ..
                },
                Ty::Int,
            ) => {
                if f.fract() == 0.0 && f.abs() < 9.2e18 {
                    return Ok(Value::Int(*f as i64));
                }
                return Err(self.err(a.pos(), a, format!("expected integer; found {text}")));
            }
            (
                Arg::Number {
                    value: Num::Int(i), ..
                },
                Ty::Float,
            ) => return Ok(Value::Float(*i as f64)),
            (Arg::Nil(_), Ty::Str | Ty::Int | Ty::Float | Ty::Bool) => {
                return Err(self.err(a.pos(), a, format!("cannot assign nil to {}", ty.go_name())));
            }
            _ => {}
        }
        let v = self.eval_arg_value(dot, a)?;
        // A nil read from a map (or returned by a function) is a typed `interface{}` nil in
        // Go, which no concrete parameter type accepts; a nil variable or parenthesised
        // pipeline is an untyped nil, which map parameters take as an empty map.
        let typed_nil = matches!(a, Arg::Field { .. } | Arg::Chain { .. } | Arg::Ident { .. })
            || matches!(a, Arg::Variable { idents, .. } if idents.len() > 1);
        if v.is_nil() && ty != Ty::Any && typed_nil {
            return Err(self.err(
                a.pos(),
                a,
                format!(
                    "wrong type for value; expected {}; got interface {{}}",
                    ty.go_name()
                ),
            ));
        }
        funcs::convert(v, ty).map_err(|m| self.err(a.pos(), a, m))
    }

    fn call_error(&self, cmd: &Command, name: &str, e: CallError) -> Error {
        match e {
            CallError::Msg(m) => self.err(cmd.pos, cmd, format!("error calling {name}: {m}")),
            CallError::Fail(message) => Error::Fail {
                location: self.loc(cmd.pos),
                message,
            },
            CallError::Budget(message) => Error::Budget {
                location: self.loc(cmd.pos),
                message,
            },
            CallError::Inner(inner) => match inner {
                Error::Fail { message, .. } => Error::Fail {
                    location: self.loc(cmd.pos),
                    message,
                },
                b @ Error::Budget { .. } => b,
                other => self.err(cmd.pos, cmd, format!("error calling {name}: {other}")),
            },
            CallError::Wrapped(prefix, inner) => match *inner {
                Error::Fail { message, .. } => Error::Fail {
                    location: self.loc(cmd.pos),
                    message,
                },
                b @ Error::Budget { .. } => b,
                other => self.err(
                    cmd.pos,
                    cmd,
                    format!("error calling {name}: {prefix}: {other}"),
                ),
            },
        }
    }

    fn nested_depth(&self) -> Result<usize, CallError> {
        let depth = self.depth + 1;
        if depth > self.options().max_depth {
            return Err(CallError::Budget(format!(
                "exceeded maximum template depth ({}) in include/tpl",
                self.options().max_depth
            )));
        }
        Ok(depth)
    }

    /// Helm's `include NAME DATA`: executes a template into a string.
    fn include(&self, argv: Vec<Value>) -> Result<Value, CallError> {
        let depth = self.nested_depth()?;
        let name = argv[0].as_str().unwrap_or_default().to_string();
        execute_with(&self.scope, self.budget, depth, &name, &argv[1])
            .map(Value::string)
            .map_err(CallError::Inner)
    }

    /// Helm's `tpl TEXT DATA`: parses TEXT as a new template (named as Helm names it,
    /// `gotpl`) in a copy of the set, so it can use the set's defines, and executes it.
    fn tpl(&self, argv: Vec<Value>) -> Result<Value, CallError> {
        let depth = self.nested_depth()?;
        let text = argv[0].as_str().unwrap_or_default();
        let parsed = crate::parse_templates(
            self.options(),
            self.scope.set.cache.as_deref(),
            "gotpl",
            "gotpl",
            text,
        )
        .map_err(|e| CallError::Wrapped(format!("cannot parse template {text:?}"), Box::new(e)))?;
        let mut overlay = self.scope.overlay.as_deref().cloned().unwrap_or_default();
        for (name, t) in parsed {
            // The text itself always becomes `gotpl`; its defines follow Go's rule that an
            // empty body does not replace an existing template.
            let exists = overlay.contains_key(&name) || self.scope.set.lookup(&name).is_some();
            if name != "gotpl" && crate::parse::is_empty_tree(&t.root) && exists {
                continue;
            }
            overlay.insert(name, t);
        }
        let scope = Scope {
            set: self.scope.set,
            overlay: Some(Arc::new(overlay)),
        };
        let out = execute_with(&scope, self.budget, depth, "gotpl", &argv[1]).map_err(|e| {
            CallError::Wrapped(
                format!("error during tpl function execution for {text:?}"),
                Box::new(e),
            )
        })?;
        Ok(Value::string(out.replace("<no value>", "")))
    }
}

/// The node Go's executor visited last while evaluating `pipe` (its errors point there):
/// the last command's field, or the last argument of its function call.
fn last_node(pipe: &Pipe) -> Option<&Arg> {
    let cmd = pipe.cmds.last()?;
    match cmd.args.first()? {
        Arg::Ident { .. } => match cmd.args.last()? {
            Arg::Pipe(p) => last_node(p),
            a => Some(a),
        },
        Arg::Pipe(p) => last_node(p),
        a => Some(a),
    }
}

struct IdentCtx<'a>(&'a str);

impl Display for IdentCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

struct TemplateCtx<'a>(&'a str, Option<&'a Pipe>);

impl Display for TemplateCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{{template {:?}", self.0)?;
        if let Some(p) = self.1 {
            write!(f, " {p}")?;
        }
        f.write_str("}}")
    }
}

/// Whether `list` might read top-level field `field` (see [`TemplateSet::reads_field`]).
pub(crate) fn mentions_field(list: &List, field: &str) -> bool {
    list.nodes.iter().any(|n| node_mentions(n, field))
}

fn node_mentions(node: &Node, field: &str) -> bool {
    match node {
        Node::Text(_) | Node::Break | Node::Continue => false,
        Node::Action(p) => pipe_mentions(p, field),
        Node::If(b) | Node::With(b) | Node::Range(b) => {
            pipe_mentions(&b.pipe, field)
                || mentions_field(&b.list, field)
                || b.else_list
                    .as_ref()
                    .is_some_and(|l| mentions_field(l, field))
        }
        Node::Template { pipe, .. } => pipe.as_ref().is_some_and(|p| pipe_mentions(p, field)),
    }
}

fn pipe_mentions(p: &Pipe, field: &str) -> bool {
    p.cmds
        .iter()
        .any(|c| c.args.iter().any(|a| arg_mentions(a, field)))
}

fn arg_mentions(a: &Arg, field: &str) -> bool {
    match a {
        Arg::Field { idents, .. } => idents.iter().any(|i| i == field),
        Arg::Variable { idents, .. } => idents.iter().any(|i| i == field),
        Arg::Chain { node, fields, .. } => {
            fields.iter().any(|i| i == field) || arg_mentions(node, field)
        }
        Arg::Ident { name, .. } => name == "tpl",
        Arg::Str { value, .. } => &**value == field,
        Arg::Pipe(p) => pipe_mentions(p, field),
        _ => false,
    }
}
