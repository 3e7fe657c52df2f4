//! The text form of the IR: printer and parser (grammar and examples in docs/ir.md).
//!
//! ```text
//! graph @main(%x: f32[N,3,224,224]) -> (%y) {
//!   %w = const f32[64,3,7,7] 0x0000803f...
//!   %c = Conv(%x, %w, _) {pads=[3,3,3,3], strides=[2,2]} : f32[N,64,112,112] loc("conv1")
//!   %y = Relu(%c) : f32[N,64,112,112]
//! }
//! ```
//!
//! Guarantees, checked by the round-trip tests:
//! - printing loses nothing: names, every value's type, node names, non-default attributes and
//!   constants' exact bytes are all in the text (unless constants are elided on request);
//! - `print(parse(print(g))) == print(g)`, and `parse(print(g))` equals `g` up to the numbering
//!   of ids (constants come first, then nodes in topological order);
//! - values that share a name within one graph get a `#k` disambiguator in the text
//!   (`%x`, `%x#1`; unnamed values print as `%#0`, `%#1`, …) that is not part of the name.

use crate::{Graph, NodeId};

mod data;
mod lexer;
mod parser;
mod printer;

/// Printer options.
#[derive(Clone, Debug, Default)]
pub struct PrintOptions {
    /// Constants with more elements than this are printed as `...` (not parseable back).
    pub elide_constants_above: Option<usize>,
}

/// A parse error with its position.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{col}: {msg}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong.
    pub msg: String,
}

/// Prints a graph in the text form.
pub fn print_graph(g: &Graph, opts: &PrintOptions) -> String {
    printer::print_graph(g, opts)
}

/// Prints one node of `g` as its statement line (`%y = Relu(%x) : f32[N]`), for messages.
/// Nested subgraphs are printed in full; value names are disambiguated as in [`print_graph`].
pub fn print_node(g: &Graph, node: NodeId, opts: &PrintOptions) -> String {
    printer::print_node(g, node, opts)
}

/// Parses the text form.
pub fn parse_graph(src: &str) -> Result<Graph, ParseError> {
    parser::parse(src)
}

/// Characters allowed in an unquoted value or graph name (`%x.1`, `@main`).
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | '-')
}

/// True when `s` prints unquoted after `%` or `@`.
pub(crate) fn is_bare_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_name_char)
}

/// True when `s` is an identifier: `[A-Za-z_][A-Za-z0-9_]*` (op names, attribute names, dims).
pub(crate) fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Appends `s` as a double-quoted string literal.
pub(crate) fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Formats an f32 so that it lexes as a float and parses back to the same bits (NaN payloads
/// aside): `1.0`, `1e-5`, `inf`, `-inf`, `nan`, `-nan`.
pub(crate) fn fmt_f32(x: f32) -> String {
    if x.is_nan() {
        if x.is_sign_negative() { "-nan" } else { "nan" }.to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{x:?}")
    }
}

/// [`fmt_f32`] for f64.
pub(crate) fn fmt_f64(x: f64) -> String {
    if x.is_nan() {
        if x.is_sign_negative() { "-nan" } else { "nan" }.to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{x:?}")
    }
}

/// Parses float text as printed by [`fmt_f64`] (also `inf`, `nan` with optional sign).
pub(crate) fn parse_f64(s: &str) -> Option<f64> {
    match s {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        "-nan" => Some(-f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses float text straight to f32 (no double rounding through f64).
pub(crate) fn parse_f32(s: &str) -> Option<f32> {
    match s {
        "inf" => Some(f32::INFINITY),
        "-inf" => Some(f32::NEG_INFINITY),
        "nan" => Some(f32::NAN),
        "-nan" => Some(-f32::NAN),
        _ => s.parse().ok(),
    }
}
