//! The printer. Layout: header with inputs and their types, constants in value-id order,
//! nodes in topological order (id order if the graph has a cycle), outputs named in the header.

use super::data::{decimal_elems, DECIMAL_MAX_ELEMS};
use super::{fmt_f32, is_bare_name, is_ident, write_quoted, PrintOptions};
use crate::{Attr, Dim, Graph, NodeId, Op, Tensor, TensorType, ValueId};
use std::collections::HashMap;

const INDENT: usize = 2;

/// How each printed value of one graph is referred to: its name plus an optional `#k`
/// disambiguator for names that occur more than once (and for empty names).
struct Names {
    keys: Vec<Option<Option<u32>>>,
}

impl Names {
    fn new(g: &Graph, order: &[NodeId]) -> Names {
        let mut keys = vec![None; g.value_capacity()];
        let mut seen: HashMap<&str, u32> = HashMap::new();
        let mut assign = |v: ValueId, keys: &mut Vec<Option<Option<u32>>>| {
            let Some(slot) = keys.get_mut(v.index()) else {
                return;
            };
            if slot.is_some() {
                return;
            }
            let name = g.value(v).name.as_str();
            let c = seen.entry(name).or_insert(0);
            *slot = Some(if name.is_empty() || *c > 0 {
                Some(*c)
            } else {
                None
            });
            *c += 1;
        };
        for &v in g.inputs() {
            assign(v, &mut keys);
        }
        for (v, _) in g.constants() {
            assign(v, &mut keys);
        }
        for &n in order {
            for &v in g.node(n).outputs() {
                assign(v, &mut keys);
            }
        }
        Names { keys }
    }

    fn write(&self, g: &Graph, v: ValueId, out: &mut String) {
        match self.keys.get(v.index()).copied().flatten() {
            Some(k) => write_value_ref(out, &g.value(v).name, k),
            None => {
                // Not defined in this graph (a dangling operand of an invalid graph): print
                // something that names the problem; it will not parse back.
                out.push('%');
                write_quoted(out, &format!("<undefined {v}>"));
            }
        }
    }
}

pub(super) fn write_value_ref(out: &mut String, name: &str, k: Option<u32>) {
    out.push('%');
    if is_bare_name(name) {
        out.push_str(name);
    } else if !(name.is_empty() && k.is_some()) {
        write_quoted(out, name);
    }
    if let Some(k) = k {
        out.push('#');
        out.push_str(&k.to_string());
    }
}

fn write_global(out: &mut String, name: &str) {
    out.push('@');
    if is_bare_name(name) {
        out.push_str(name);
    } else {
        write_quoted(out, name);
    }
}

fn write_ident_or_quoted(out: &mut String, s: &str) {
    if is_ident(s) {
        out.push_str(s);
    } else {
        write_quoted(out, s);
    }
}

fn write_type(out: &mut String, ty: &TensorType) {
    match ty.dtype {
        Some(d) => out.push_str(d.name()),
        None => out.push('?'),
    }
    match &ty.shape {
        None => out.push_str("[*]"),
        Some(s) => {
            out.push('[');
            for (i, d) in s.0.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match d {
                    Dim::Fixed(n) => out.push_str(&n.to_string()),
                    Dim::Sym(s) => write_ident_or_quoted(out, s),
                    Dim::Unknown => out.push('?'),
                }
            }
            out.push(']');
        }
    }
}

fn write_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 + 2 * bytes.len());
    out.push_str("0x");
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

/// `f32[2,2] <data>`: the tensor's type, then its data as hex bytes, a decimal list, a string
/// list, or `...` when elided.
fn write_tensor(out: &mut String, t: &Tensor, opts: &PrintOptions) {
    write_type(
        out,
        &TensorType::new(t.dtype(), crate::Shape::fixed(t.shape())),
    );
    out.push(' ');
    if opts.elide_constants_above.is_some_and(|n| t.numel() > n) {
        out.push_str("...");
        return;
    }
    if let Some(strs) = t.strings() {
        out.push('[');
        for (i, s) in strs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write_quoted(out, s);
        }
        out.push(']');
        return;
    }
    if t.numel() <= DECIMAL_MAX_ELEMS {
        if let Some(nums) = decimal_elems(t) {
            out.push('[');
            for (i, n) in nums.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&n.text());
            }
            out.push(']');
            return;
        }
    }
    write_hex(out, t.raw());
}

struct Printer<'o> {
    out: String,
    opts: &'o PrintOptions,
}

impl Printer<'_> {
    fn indent(&mut self, n: usize) {
        for _ in 0..n {
            self.out.push(' ');
        }
    }

    /// Prints `graph @name(...) -> (...) {` ... `}` with statements at `indent + INDENT` and the
    /// closing brace at `indent` (the caller has already indented the first line).
    fn graph(&mut self, g: &Graph, indent: usize) {
        let (order, cyclic) = match g.topo_order() {
            Ok(o) => (o, false),
            Err(_) => (g.node_ids().collect(), true),
        };
        let names = Names::new(g, &order);
        self.out.push_str("graph ");
        write_global(&mut self.out, &g.name);
        self.out.push('(');
        // Captured values are the trailing inputs; each is marked `capture`.
        let first_capture = g.inputs().len().saturating_sub(g.num_captures());
        for (i, &v) in g.inputs().iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            if i >= first_capture {
                self.out.push_str("capture ");
            }
            names.write(g, v, &mut self.out);
            self.out.push_str(": ");
            write_type(&mut self.out, &g.value(v).ty);
        }
        self.out.push_str(") -> (");
        for (i, &v) in g.outputs().iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            names.write(g, v, &mut self.out);
        }
        self.out.push_str(") {\n");
        let inner = indent + INDENT;
        if cyclic {
            self.indent(inner);
            self.out.push_str(
                "// the graph has a cycle: nodes are in id order and will not parse back\n",
            );
        }
        for (v, t) in g.constants() {
            self.indent(inner);
            names.write(g, v, &mut self.out);
            self.out.push_str(" = const ");
            write_tensor(&mut self.out, t, self.opts);
            let ty = &g.value(v).ty;
            if *ty != TensorType::new(t.dtype(), crate::Shape::fixed(t.shape())) {
                self.out.push_str(" : ");
                write_type(&mut self.out, ty);
            }
            self.out.push('\n');
        }
        for &n in &order {
            self.indent(inner);
            self.node(g, &names, n, inner);
            self.out.push('\n');
        }
        self.indent(indent);
        self.out.push('}');
    }

    fn node(&mut self, g: &Graph, names: &Names, n: NodeId, indent: usize) {
        let node = g.node(n);
        for (i, &v) in node.outputs().iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            names.write(g, v, &mut self.out);
        }
        if !node.outputs().is_empty() {
            self.out.push_str(" = ");
        }
        match &node.op {
            Op::Custom(c) => write_quoted(&mut self.out, &format!("{}::{}", c.domain, c.op_type)),
            op => self.out.push_str(op.name()),
        }
        self.out.push('(');
        for (i, v) in node.inputs().iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            match v {
                Some(v) => names.write(g, *v, &mut self.out),
                None => self.out.push('_'),
            }
        }
        self.out.push(')');
        let attrs = node.op.attrs();
        if !attrs.is_empty() {
            self.out.push_str(" {");
            for (i, (name, a)) in attrs.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                write_ident_or_quoted(&mut self.out, name);
                self.out.push('=');
                // Cast.to and EyeLike.dtype read better as dtype names than as ONNX codes.
                let dtype = match a {
                    Attr::Int(code) if dtype_attr(&node.op, name) => {
                        i32::try_from(*code).ok().and_then(crate::onnx_dtype)
                    }
                    _ => None,
                };
                match dtype {
                    Some(d) => write_quoted(&mut self.out, d.name()),
                    None => self.attr(a, indent),
                }
            }
            self.out.push('}');
        }
        let outs = node.outputs();
        if outs.iter().any(|&v| !g.value(v).ty.is_unknown()) {
            self.out.push_str(" : ");
            for (i, &v) in outs.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                write_type(&mut self.out, &g.value(v).ty);
            }
        }
        if !node.name.is_empty() {
            self.out.push_str(" loc(");
            write_quoted(&mut self.out, &node.name);
            self.out.push(')');
        }
    }

    fn attr(&mut self, a: &Attr, indent: usize) {
        let out = &mut self.out;
        match a {
            Attr::Int(i) => out.push_str(&i.to_string()),
            Attr::Float(f) => out.push_str(&fmt_f32(*f)),
            Attr::String(s) => write_quoted(out, s),
            Attr::Ints(v) if v.is_empty() => out.push_str("ints[]"),
            Attr::Floats(v) if v.is_empty() => out.push_str("floats[]"),
            Attr::Strings(v) if v.is_empty() => out.push_str("strings[]"),
            Attr::Ints(v) => {
                let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                out.push('[');
                out.push_str(&items.join(","));
                out.push(']');
            }
            Attr::Floats(v) => {
                let items: Vec<String> = v.iter().map(|x| fmt_f32(*x)).collect();
                out.push('[');
                out.push_str(&items.join(","));
                out.push(']');
            }
            Attr::Strings(v) => {
                out.push('[');
                for (i, s) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_quoted(out, s);
                }
                out.push(']');
            }
            Attr::Tensor(t) => {
                out.push_str("tensor<");
                write_tensor(out, t, self.opts);
                out.push('>');
            }
            Attr::Graph(sub) => self.graph(sub, indent),
        }
    }
}

/// Attributes holding a dtype as an ONNX code, printed as the dtype's name instead.
fn dtype_attr(op: &Op, name: &str) -> bool {
    matches!((op, name), (Op::Cast(_), "to") | (Op::EyeLike(_), "dtype"))
}

pub(super) fn print_graph(g: &Graph, opts: &PrintOptions) -> String {
    let mut p = Printer {
        out: String::new(),
        opts,
    };
    p.graph(g, 0);
    p.out.push('\n');
    p.out
}

pub(super) fn print_node(g: &Graph, n: NodeId, opts: &PrintOptions) -> String {
    let order: Vec<NodeId> = match g.topo_order() {
        Ok(o) => o,
        Err(_) => g.node_ids().collect(),
    };
    let names = Names::new(g, &order);
    let mut p = Printer {
        out: String::new(),
        opts,
    };
    if n.index() < g.node_capacity() {
        p.node(g, &names, n, 0);
    } else {
        p.out.push_str(&format!("<no {n}>"));
    }
    p.out
}
