//! The parser: a recursive descent over the tokens of [`super::lexer`], building the graph with
//! the ordinary [`Graph`] methods. Values must be defined before they are used, except the
//! graph outputs named in the header, which are resolved at the closing brace. Each graph,
//! nested ones included, is its own scope.

use super::data::{encode, has_decimal_form, Num};
use super::lexer::{lex, Tok, Token};
use super::printer::write_value_ref;
use super::{parse_f32, ParseError};
use crate::{
    Attr, AttrError, Attrs, CustomOp, DType, Dim, Graph, Op, Shape, Tensor, TensorType, ValueId,
};
use bytes::Bytes;
use std::collections::HashMap;

/// Deepest subgraph nesting accepted (bounds the parser's recursion on hostile input).
const MAX_NESTING: usize = 64;

/// A value as written: its name and its `#k` disambiguator.
type Key = (String, Option<u32>);

/// Where a value was defined.
struct Def {
    id: ValueId,
    line: usize,
    col: usize,
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    /// One scope per graph being parsed, innermost last. Only the innermost is visible; the
    /// others only improve the message for a reference to an outer value.
    scopes: Vec<HashMap<Key, Def>>,
}

type Result<T> = std::result::Result<T, ParseError>;

pub(super) fn parse(src: &str) -> Result<Graph> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        scopes: Vec::new(),
    };
    let g = p.graph()?;
    let t = p.next();
    if t.tok != Tok::Eof {
        return Err(err_at(
            &t,
            format!("expected end of input after the graph, found {}", t.tok),
        ));
    }
    Ok(g)
}

fn err_at(t: &Token, msg: impl Into<String>) -> ParseError {
    ParseError {
        line: t.line,
        col: t.col,
        msg: msg.into(),
    }
}

fn value_text(k: &Key) -> String {
    let mut s = String::new();
    write_value_ref(&mut s, &k.0, k.1);
    s
}

/// An element of a bracketed list, before its kind is decided.
enum Item {
    Int(i128),
    Float(String),
    Str(String),
    Bool(bool),
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.peek_token().tok
    }

    fn peek_token(&self) -> &Token {
        // `lex` always ends with Eof and `next` never moves past it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek_token().clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, c: char) -> bool {
        if *self.peek() == Tok::Punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<Token> {
        let t = self.next();
        if t.tok == Tok::Punct(c) {
            Ok(t)
        } else {
            Err(err_at(&t, format!("expected '{c}', found {}", t.tok)))
        }
    }

    fn expect_after(&mut self, c: char, after: &str) -> Result<Token> {
        let t = self.next();
        if t.tok == Tok::Punct(c) {
            Ok(t)
        } else {
            Err(err_at(
                &t,
                format!("expected '{c}' or ',' {after}, found {}", t.tok),
            ))
        }
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == kw)
    }

    fn peek2(&self) -> &Tok {
        &self.toks[(self.pos + 1).min(self.toks.len() - 1)].tok
    }

    /// Parses `item (',' item)* close` or just `close`; the opening bracket is already eaten.
    fn list<T>(
        &mut self,
        close: char,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        if self.eat(close) {
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if self.eat(',') {
                continue;
            }
            self.expect_after(close, what)?;
            return Ok(out);
        }
    }

    fn lookup(&self, key: &Key, at: &Token) -> Result<ValueId> {
        if let Some(d) = self.scopes.last().and_then(|s| s.get(key)) {
            return Ok(d.id);
        }
        let outer = self
            .scopes
            .iter()
            .rev()
            .skip(1)
            .any(|s| s.contains_key(key));
        let hint = if outer {
            " (it is defined in an enclosing graph; a subgraph reads outer values only through \
             its own inputs)"
        } else {
            ""
        };
        Err(err_at(
            at,
            format!("undefined value {}{hint}", value_text(key)),
        ))
    }

    fn check_fresh(&self, key: &Key, at: &Token) -> Result<()> {
        match self.scopes.last().and_then(|s| s.get(key)) {
            Some(d) => Err(err_at(
                at,
                format!(
                    "value {} is already defined at {}:{}",
                    value_text(key),
                    d.line,
                    d.col
                ),
            )),
            None => Ok(()),
        }
    }

    fn define(&mut self, key: Key, id: ValueId, at: &Token) -> Result<()> {
        self.check_fresh(&key, at)?;
        if let Some(s) = self.scopes.last_mut() {
            s.insert(
                key,
                Def {
                    id,
                    line: at.line,
                    col: at.col,
                },
            );
        }
        Ok(())
    }

    fn value_key(&mut self, what: &str) -> Result<(Key, Token)> {
        let t = self.next();
        match &t.tok {
            Tok::Value(n, k) => Ok(((n.clone(), *k), t)),
            other => Err(err_at(&t, format!("expected {what}, found {other}"))),
        }
    }

    /// `graph @name(%in: type, ..., capture %c: type, ...) -> (%out, ...) { statements }`
    fn graph(&mut self) -> Result<Graph> {
        let kw = self.next();
        if kw.tok != Tok::Ident("graph".into()) {
            return Err(err_at(&kw, format!("expected 'graph', found {}", kw.tok)));
        }
        let t = self.next();
        let name = match &t.tok {
            Tok::Global(n) => n.clone(),
            other => {
                return Err(err_at(
                    &t,
                    format!("expected a graph name (@name), found {other}"),
                ))
            }
        };
        if self.scopes.len() >= MAX_NESTING {
            return Err(err_at(
                &kw,
                format!("graphs are nested more than {MAX_NESTING} deep"),
            ));
        }
        let mut g = Graph::new(name);
        self.scopes.push(HashMap::new());
        self.expect('(')?;
        let mut captures = 0;
        self.list(')', "between graph inputs", |p| {
            if p.is_keyword("capture") {
                p.next();
                captures += 1;
            } else if captures > 0 {
                let t = p.peek_token().clone();
                return Err(err_at(
                    &t,
                    "captured inputs must come last: expected 'capture'",
                ));
            }
            let (key, t) = p.value_key("a graph input (%name: type)")?;
            let ty = if p.eat(':') {
                p.ty()?
            } else {
                TensorType::UNKNOWN
            };
            p.check_fresh(&key, &t)?;
            let v = g.add_input(key.0.clone(), ty);
            p.define(key, v, &t)
        })?;
        g.set_num_captures(captures);
        let arrow = self.next();
        if arrow.tok != Tok::Arrow {
            return Err(err_at(
                &arrow,
                format!("expected '->' and the graph outputs, found {}", arrow.tok),
            ));
        }
        self.expect('(')?;
        let outputs = self.list(')', "between graph outputs", |p| {
            p.value_key("a graph output (%name)")
        })?;
        self.expect('{')?;
        loop {
            let t = self.peek_token().clone();
            match &t.tok {
                Tok::Punct('}') => {
                    self.next();
                    break;
                }
                Tok::Eof => {
                    return Err(err_at(
                        &t,
                        format!(
                            "expected '}}' to close graph @{}, found end of input",
                            g.name
                        ),
                    ))
                }
                _ => self.statement(&mut g)?,
            }
        }
        for (key, t) in &outputs {
            let v = self.lookup(key, t)?;
            g.add_output(v);
        }
        self.scopes.pop();
        Ok(g)
    }

    /// `%a, %b = Op(...) ...`, `%w = const ...`, or `Op(...)` for a node without results.
    fn statement(&mut self, g: &mut Graph) -> Result<()> {
        let t = self.peek_token().clone();
        match &t.tok {
            Tok::Value(..) => {
                let mut results = Vec::new();
                loop {
                    results.push(self.value_key("a result name (%name)")?);
                    if self.eat(',') {
                        continue;
                    }
                    let eq = self.next();
                    if eq.tok != Tok::Punct('=') {
                        return Err(err_at(
                            &eq,
                            format!("expected '=' or ',' after result names, found {}", eq.tok),
                        ));
                    }
                    break;
                }
                if self.is_keyword("const") {
                    if let Some((_, t2)) = results.get(1) {
                        return Err(err_at(t2, "a constant defines exactly one value"));
                    }
                    self.next();
                    let tensor = self.tensor_literal("constant")?;
                    let ((name, k), t) = results.swap_remove(0);
                    let key = (name, k);
                    self.check_fresh(&key, &t)?;
                    let v = g.add_const(key.0.clone(), tensor);
                    if self.eat(':') {
                        let ty = self.ty()?;
                        g.set_type(v, ty);
                    }
                    self.define(key, v, &t)
                } else {
                    self.op_statement(g, results)
                }
            }
            Tok::Ident(_) | Tok::Str(_) => self.op_statement(g, Vec::new()),
            other => Err(err_at(
                &t,
                format!("expected a statement ('%name = ...') or '}}', found {other}"),
            )),
        }
    }

    fn op_statement(&mut self, g: &mut Graph, results: Vec<(Key, Token)>) -> Result<()> {
        let op_tok = self.next();
        let (op_name, custom) = match &op_tok.tok {
            Tok::Ident(s) => (s.clone(), false),
            Tok::Str(s) => (s.clone(), true),
            other => {
                return Err(err_at(
                    &op_tok,
                    format!("expected an op name or 'const', found {other}"),
                ));
            }
        };
        self.expect('(')?;
        let operands = self.list(')', "between operands", |p| {
            let t = p.next();
            match &t.tok {
                Tok::Ident(s) if s == "_" => Ok(None),
                Tok::Value(n, k) => p.lookup(&(n.clone(), *k), &t).map(Some),
                other => Err(err_at(
                    &t,
                    format!("expected an operand (%value or _), found {other}"),
                )),
            }
        })?;
        let mut attrs: Vec<(String, Attr, Token)> = Vec::new();
        if self.eat('{') {
            attrs = self.list('}', "between attributes", |p| p.attr())?;
            for (i, (name, _, t)) in attrs.iter().enumerate() {
                if attrs[..i].iter().any(|(n, _, _)| n == name) {
                    return Err(err_at(t, format!("duplicate attribute '{name}'")));
                }
            }
        }
        let mut types = Vec::new();
        if *self.peek() == Tok::Punct(':') {
            let colon = self.next();
            loop {
                types.push(self.ty()?);
                if !self.eat(',') {
                    break;
                }
            }
            if types.len() != results.len() {
                return Err(err_at(
                    &colon,
                    format!(
                        "{} result(s) but {} type(s): give one type per result",
                        results.len(),
                        types.len()
                    ),
                ));
            }
        }
        let mut loc = String::new();
        if self.is_keyword("loc") && *self.peek2() == Tok::Punct('(') {
            self.next();
            self.next();
            let t = self.next();
            match &t.tok {
                Tok::Str(s) => loc = s.clone(),
                other => {
                    return Err(err_at(
                        &t,
                        format!("expected the node name as a string, found {other}"),
                    ))
                }
            }
            self.expect(')')?;
        }
        let op = if custom {
            let Some((domain, op_type)) = op_name.split_once("::") else {
                return Err(err_at(
                    &op_tok,
                    format!("custom op \"{op_name}\" must be written \"domain::Name\" (\"::Name\" for the default domain)"),
                ));
            };
            Op::Custom(CustomOp {
                domain: domain.to_string(),
                op_type: op_type.to_string(),
                attrs: Attrs(attrs.into_iter().map(|(n, a, _)| (n, a)).collect()),
                def: None,
            })
        } else {
            let positions: Vec<(String, Token)> = attrs
                .iter()
                .map(|(n, _, t)| (n.clone(), t.clone()))
                .collect();
            let bag = Attrs(attrs.into_iter().map(|(n, a, _)| (n, a)).collect());
            match Op::from_attrs(&op_name, bag) {
                Ok(Some(op)) => op,
                Ok(None) => return Err(err_at(&op_tok, unknown_op(&op_name))),
                Err(e) => {
                    let at = match &e {
                        AttrError::Invalid { name, .. } | AttrError::Unknown { name, .. } => {
                            positions.iter().find(|(n, _)| n == name).map(|(_, t)| t)
                        }
                        AttrError::Missing(_) => None,
                    };
                    return Err(err_at(at.unwrap_or(&op_tok), format!("{op_name}: {e}")));
                }
            }
        };
        for (i, (key, t)) in results.iter().enumerate() {
            self.check_fresh(key, t)?;
            if results[..i].iter().any(|(k, _)| k == key) {
                return Err(err_at(
                    t,
                    format!("value {} is defined twice by this node", value_text(key)),
                ));
            }
        }
        let names = results.iter().map(|((n, _), _)| n.clone()).collect();
        let node = g.add_node(loc, op, operands, names);
        let outs = g.node(node).outputs().to_vec();
        for (i, ty) in types.into_iter().enumerate() {
            if let Some(&v) = outs.get(i) {
                g.set_type(v, ty);
            }
        }
        for ((key, t), v) in results.into_iter().zip(outs) {
            self.define(key, v, &t)?;
        }
        Ok(())
    }

    /// `name=value`; the name is an identifier or a quoted string.
    fn attr(&mut self) -> Result<(String, Attr, Token)> {
        let t = self.next();
        let name = match &t.tok {
            Tok::Ident(s) | Tok::Str(s) => s.clone(),
            other => {
                return Err(err_at(
                    &t,
                    format!("expected an attribute name, found {other}"),
                ))
            }
        };
        let eq = self.next();
        if eq.tok != Tok::Punct('=') {
            return Err(err_at(
                &eq,
                format!(
                    "expected '=' after attribute name '{name}', found {}",
                    eq.tok
                ),
            ));
        }
        let a = self.attr_value()?;
        Ok((name, a, t))
    }

    fn attr_value(&mut self) -> Result<Attr> {
        let t = self.peek_token().clone();
        match &t.tok {
            Tok::Ident(s) if s == "graph" => return Ok(Attr::Graph(Box::new(self.graph()?))),
            Tok::Ident(s)
                if matches!(s.as_str(), "ints" | "floats" | "strings")
                    && *self.peek2() == Tok::Punct('[') =>
            {
                let kind = s.clone();
                self.next();
                self.next();
                let items = self.list(']', "between list elements", |p| p.item())?;
                return typed_list(&kind, items);
            }
            _ => {}
        }
        self.next();
        Ok(match &t.tok {
            Tok::Int(i) => Attr::Int(to_i64(*i, &t)?),
            Tok::Float(s) => Attr::Float(float32(s, &t)?),
            Tok::Ident(s) if s == "inf" || s == "nan" => Attr::Float(float32(s, &t)?),
            Tok::Str(s) => Attr::String(s.clone()),
            Tok::Punct('[') => {
                let items = self.list(']', "between list elements", |p| p.item())?;
                untyped_list(items, &t)?
            }
            Tok::Ident(s) if s == "tensor" => {
                self.expect('<')?;
                let tensor = self.tensor_literal("tensor")?;
                self.expect('>')?;
                Attr::Tensor(tensor)
            }
            other => {
                return Err(err_at(
                    &t,
                    format!(
                        "expected an attribute value (integer, float, string, list, tensor<...> or \
                         graph), found {other}"
                    ),
                ))
            }
        })
    }

    /// One element of a bracketed list.
    fn item(&mut self) -> Result<(Item, Token)> {
        let t = self.next();
        let item = match &t.tok {
            Tok::Int(i) => Item::Int(*i),
            Tok::Float(s) => Item::Float(s.clone()),
            Tok::Ident(s) if s == "inf" || s == "nan" => Item::Float(s.clone()),
            Tok::Ident(s) if s == "true" => Item::Bool(true),
            Tok::Ident(s) if s == "false" => Item::Bool(false),
            Tok::Str(s) => Item::Str(s.clone()),
            other => {
                return Err(err_at(
                    &t,
                    format!("expected a list element, found {other}"),
                ))
            }
        };
        Ok((item, t))
    }

    /// `dtype[dims]`, `?[dims]`, `dtype[*]`; dims are integers, names (bare or quoted) or `?`.
    fn ty(&mut self) -> Result<TensorType> {
        let t = self.next();
        let dtype = match &t.tok {
            Tok::Punct('?') => None,
            Tok::Ident(s) => match DType::from_name(s) {
                Some(d) => Some(d),
                None => return Err(err_at(&t, format!("unknown dtype '{s}'"))),
            },
            other => {
                return Err(err_at(
                    &t,
                    format!("expected a type (like f32[N,3] or ?[*]), found {other}"),
                ))
            }
        };
        self.expect('[')?;
        if self.eat('*') {
            self.expect(']')?;
            return Ok(TensorType { dtype, shape: None });
        }
        let dims = self.list(']', "between dimensions", |p| {
            let t = p.next();
            match &t.tok {
                Tok::Int(i) => u64::try_from(*i)
                    .map(Dim::Fixed)
                    .map_err(|_| err_at(&t, format!("dimension {i} is negative"))),
                Tok::Ident(s) | Tok::Str(s) => Ok(Dim::Sym(s.clone())),
                Tok::Punct('?') => Ok(Dim::Unknown),
                other => Err(err_at(
                    &t,
                    format!("expected a dimension (integer, name or ?), found {other}"),
                )),
            }
        })?;
        Ok(TensorType {
            dtype,
            shape: Some(Shape(dims)),
        })
    }

    /// `dtype[static dims] data`, data being `0x<hex>`, `[numbers]`, `["strings"]` or the
    /// unparseable `...`. `what` names the literal in messages ("constant", "tensor").
    fn tensor_literal(&mut self, what: &str) -> Result<Tensor> {
        let tt = self.peek_token().clone();
        let ty = self.ty()?;
        let ty_text = ty.to_string();
        let Some(d) = ty.dtype else {
            return Err(err_at(
                &tt,
                format!("a {what} needs a known dtype, not '?'"),
            ));
        };
        let shape: Vec<usize> = ty
            .shape
            .as_ref()
            .and_then(|s| s.as_fixed())
            .ok_or_else(|| {
                err_at(
                    &tt,
                    format!("a {what} needs integer dimensions, found {ty_text}"),
                )
            })?;
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| err_at(&tt, format!("{what} {ty_text} is too large")))?;
        let mut t = self.next();
        match std::mem::replace(&mut t.tok, Tok::Eof) {
            Tok::Hex(bytes) => {
                if d == DType::String {
                    return Err(err_at(&t, format!("a string {what} takes a list of strings, not hex bytes")));
                }
                let expected = numel
                    .checked_mul(d.bits())
                    .map(|b| b.div_ceil(8))
                    .ok_or_else(|| err_at(&tt, format!("{what} {ty_text} is too large")))?;
                if bytes.len() != expected {
                    return Err(err_at(
                        &t,
                        format!("{what} {ty_text} needs {expected} bytes, got {}", bytes.len()),
                    ));
                }
                Tensor::from_raw(d, shape, Bytes::from(bytes)).map_err(|e| err_at(&t, e.to_string()))
            }
            Tok::Punct('[') => {
                let items = self.list(']', "between elements", |p| p.item())?;
                if items.len() != numel {
                    let unit = if d == DType::String { "strings" } else { "elements" };
                    return Err(err_at(&t, format!("{what} {ty_text} needs {numel} {unit}, got {}", items.len())));
                }
                if d == DType::String {
                    let strs = items
                        .into_iter()
                        .map(|(it, t)| match it {
                            Item::Str(s) => Ok(s),
                            _ => Err(err_at(&t, format!("expected a string element of {what} {ty_text}"))),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    return Tensor::from_strings(shape, strs).map_err(|e| err_at(&t, e.to_string()));
                }
                if !has_decimal_form(d) {
                    return Err(err_at(&t, format!("{d} data must be written as hex bytes (0x...)")));
                }
                let mut nums = Vec::with_capacity(items.len());
                for (it, it_tok) in &items {
                    nums.push(match it {
                        Item::Int(i) => Num::Int(*i),
                        Item::Float(s) => Num::Float(s.clone()),
                        Item::Bool(b) => Num::Bool(*b),
                        Item::Str(_) => {
                            return Err(err_at(it_tok, format!("expected a number in {what} {ty_text}, found a string")))
                        }
                    });
                }
                let bytes = encode(d, &nums).map_err(|(i, m)| err_at(&items[i].1, m))?;
                Tensor::from_raw(d, shape, Bytes::from(bytes)).map_err(|e| err_at(&t, e.to_string()))
            }
            Tok::Ellipsis => Err(err_at(
                &t,
                format!(
                    "{what} data was elided ('...') when printing; print without \
                     elide_constants_above to get text that parses"
                ),
            )),
            other => Err(err_at(
                &t,
                format!("expected {what} data (0x<hex bytes>, [elements] or [\"strings\"]), found {other}"),
            )),
        }
    }
}

fn to_i64(i: i128, t: &Token) -> Result<i64> {
    i64::try_from(i).map_err(|_| err_at(t, format!("integer {i} does not fit in i64")))
}

fn float32(s: &str, t: &Token) -> Result<f32> {
    parse_f32(s).ok_or_else(|| err_at(t, format!("invalid float '{s}'")))
}

fn item_f32(it: &Item, t: &Token) -> Result<f32> {
    match it {
        Item::Int(i) => Ok(*i as f32),
        Item::Float(s) => float32(s, t),
        _ => Err(err_at(t, "expected a number in a float list")),
    }
}

/// `[...]` without a kind prefix: ints, floats (any float element makes it floats) or strings.
fn untyped_list(items: Vec<(Item, Token)>, open: &Token) -> Result<Attr> {
    let Some((first, ft)) = items.first() else {
        return Err(err_at(
            open,
            "an empty list needs its kind: ints[], floats[] or strings[]",
        ));
    };
    match first {
        Item::Str(_) => typed_list("strings", items),
        Item::Bool(_) => Err(err_at(
            ft,
            "attribute lists hold integers, floats or strings",
        )),
        _ if items.iter().any(|(i, _)| matches!(i, Item::Float(_))) => typed_list("floats", items),
        _ => typed_list("ints", items),
    }
}

fn typed_list(kind: &str, items: Vec<(Item, Token)>) -> Result<Attr> {
    Ok(match kind {
        "ints" => Attr::Ints(
            items
                .iter()
                .map(|(it, t)| match it {
                    Item::Int(i) => to_i64(*i, t),
                    _ => Err(err_at(t, "expected an integer in an ints list")),
                })
                .collect::<Result<_>>()?,
        ),
        "floats" => Attr::Floats(
            items
                .iter()
                .map(|(it, t)| item_f32(it, t))
                .collect::<Result<_>>()?,
        ),
        _ => Attr::Strings(
            items
                .into_iter()
                .map(|(it, t)| match it {
                    Item::Str(s) => Ok(s),
                    _ => Err(err_at(&t, "expected a string in a strings list")),
                })
                .collect::<Result<_>>()?,
        ),
    })
}

/// The message for an op name that is not a core op, with a suggestion when one is close.
fn unknown_op(name: &str) -> String {
    let best = Op::ALL
        .iter()
        .map(|c| {
            (
                edit_distance(&name.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                *c,
            )
        })
        .min()
        .filter(|(d, _)| *d <= 2);
    match best {
        Some((_, c)) => format!("unknown op '{name}' (did you mean '{c}'?)"),
        None => format!("unknown op '{name}': not a core op; custom ops are written quoted, as \"domain::{name}\""),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
