//! Code generation for a fused elementwise group: one loop nest that loads each outside operand
//! (broadcast by stride 0), evaluates every node of the group in registers and stores only the
//! values read outside the group.
//!
//! The loop nest runs over the group's shape with dimensions collapsed wherever every operand is
//! contiguous across them, so a typical `[1, C, H, W] + [C, 1, 1]` becomes `C` rows of `H*W`
//! unit-stride elements that LLVM's loop vectorizer turns into full-width vector code. The
//! function has the signature `void (ptr args, i64 lo, i64 hi)`: `args` holds the operand
//! pointers (inputs, then outputs) and `[lo, hi)` is a range of outer rows, so the run function
//! can call it directly or hand it to the runtime's `pare_rt_parallel_for`.
//!
//! Transcendentals are written out as branch-free polynomial code (no libm calls in the loop) so
//! the loops vectorize: `exp` is Cephes' `expf` (range reduction by ln 2, degree-6 polynomial,
//! exponent by bit shift; about 2 ulp), `erf` is Abramowitz & Stegun 7.1.26 (absolute error
//! below 1.5e-7), `tanh` and `sigmoid` are built from `exp`.

use crate::plan::{dtype, shape};
use crate::{BackendError, Result};
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicType, BasicTypeEnum, FloatType};
use inkwell::values::{
    BasicValue, BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue,
};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate};
use pare_ir::{DType, Graph, NodeId, Op, ValueId};
use std::collections::HashMap;

/// Ops the fused elementwise code generator handles.
pub fn is_elementwise(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if node.outputs().len() != 1 {
        return false;
    }
    let supported_dtype = |v: ValueId| {
        matches!(
            g.value(v).ty.dtype,
            Some(
                DType::F32
                    | DType::F64
                    | DType::F16
                    | DType::I64
                    | DType::I32
                    | DType::Bool
                    | DType::I8
                    | DType::U8
            )
        )
    };
    if !node.inputs().iter().flatten().all(|&v| supported_dtype(v))
        || !supported_dtype(node.outputs()[0])
    {
        return false;
    }
    matches!(
        &node.op,
        Op::Abs
            | Op::Neg
            | Op::Exp
            | Op::Log
            | Op::Sqrt
            | Op::Reciprocal
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Erf
            | Op::Floor
            | Op::Ceil
            | Op::Round
            | Op::Sign
            | Op::Not
            | Op::IsNaN
            | Op::Softplus
            | Op::Sin
            | Op::Cos
            | Op::HardSwish
            | Op::HardSigmoid(_)
            | Op::LeakyRelu(_)
            | Op::Elu(_)
            | Op::Gelu(_)
            | Op::Cast(_)
            | Op::Clip
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Max
            | Op::Min
            | Op::Sum
            | Op::Mean
            | Op::Equal
            | Op::Less
            | Op::Greater
            | Op::LessOrEqual
            | Op::GreaterOrEqual
            | Op::And
            | Op::Or
            | Op::Xor
            | Op::Where
            | Op::PRelu
            | Op::Mish
            | Op::Softsign
    )
}

/// Element strides of `in_shape` broadcast to `out` (right-aligned; 0 where broadcast).
pub fn broadcast_strides(in_shape: &[usize], out: &[usize]) -> Vec<i64> {
    let r = out.len();
    let off = r - in_shape.len().min(r);
    let mut strides = vec![0i64; r];
    let mut acc = 1i64;
    for k in (0..in_shape.len()).rev() {
        let d = in_shape[k];
        if k + off < r {
            strides[k + off] = if d == 1 && out[k + off] != 1 { 0 } else { acc };
        }
        acc *= d as i64;
    }
    strides
}

/// Collapses dims of size 1 and adjacent dims every operand walks contiguously.
pub fn collapse(shape: &[usize], strides: &[Vec<i64>]) -> (Vec<usize>, Vec<Vec<i64>>) {
    let mut dims: Vec<usize> = Vec::new();
    let mut st: Vec<Vec<i64>> = vec![Vec::new(); strides.len()];
    for k in 0..shape.len() {
        if shape[k] == 1 {
            continue;
        }
        let mergeable = !dims.is_empty()
            && strides
                .iter()
                .zip(st.iter())
                .all(|(s, cur)| *cur.last().expect("dim") == s[k] * shape[k] as i64);
        if mergeable {
            let last = dims.len() - 1;
            dims[last] *= shape[k];
            for (s, cur) in strides.iter().zip(st.iter_mut()) {
                let l = cur.len() - 1;
                cur[l] = s[k];
            }
        } else {
            dims.push(shape[k]);
            for (s, cur) in strides.iter().zip(st.iter_mut()) {
                cur.push(s[k]);
            }
        }
    }
    if dims.is_empty() {
        dims.push(1);
        for cur in st.iter_mut() {
            cur.push(0);
        }
    }
    (dims, st)
}

/// Fewest rows a fused loop should have so that threads can share it.
const MIN_ROWS: usize = 64;
/// Row lengths [`split_rows`] picks from (floats): long enough for the vectorized inner loop,
/// short enough to give the threads many rows.
const SPLIT_ROW: std::ops::RangeInclusive<usize> = 512..=4096;

/// Splits a long last dimension into rows when the collapsed loop nest has fewer than
/// [`MIN_ROWS`] rows (a plain elementwise op over a whole tensor collapses to a single row,
/// which the runtime cannot split between threads): the last extent `n` becomes
/// `[n / c, c]` for the largest divisor `c` of `n` in [`SPLIT_ROW`], each operand's last
/// stride `s` becoming `[s * c, s]`. Unchanged when no such divisor exists.
pub fn split_rows((mut dims, mut st): (Vec<usize>, Vec<Vec<i64>>)) -> (Vec<usize>, Vec<Vec<i64>>) {
    let r = dims.len();
    let outer: usize = dims[..r - 1].iter().product();
    let last = dims[r - 1];
    if outer >= MIN_ROWS || last < 2 * SPLIT_ROW.start() {
        return (dims, st);
    }
    let Some(c) = SPLIT_ROW.rev().find(|c| last % c == 0 && last / c > 1) else {
        return (dims, st);
    };
    dims[r - 1] = last / c;
    dims.push(c);
    for s in st.iter_mut() {
        let sl = s[r - 1];
        s[r - 1] = sl * c as i64;
        s.push(sl);
    }
    (dims, st)
}

/// A fused group's interface: operand order of its `args` array.
pub struct FusedSig {
    /// Values loaded (in `args[0..inputs.len()]`).
    pub inputs: Vec<ValueId>,
    /// Values stored (after the inputs).
    pub outputs: Vec<ValueId>,
    /// Outer rows (the `[lo, hi)` range).
    pub outer: u64,
    /// Total elements.
    pub numel: u64,
}

/// Storage and register type of a dtype.
fn llvm_type<'c>(cx: &'c Context, d: DType) -> Result<BasicTypeEnum<'c>> {
    Ok(match d {
        DType::F32 => cx.f32_type().into(),
        DType::F64 => cx.f64_type().into(),
        DType::F16 => cx.f16_type().into(),
        DType::I64 => cx.i64_type().into(),
        DType::I32 => cx.i32_type().into(),
        DType::I8 | DType::U8 | DType::Bool => cx.i8_type().into(),
        other => {
            return Err(BackendError::Unsupported(format!(
                "element type {}",
                other.name()
            )))
        }
    })
}

/// Pointer to element `idx` of type `ty` at `base`.
pub fn elem_ptr<'c>(
    b: &Builder<'c>,
    ty: BasicTypeEnum<'c>,
    base: PointerValue<'c>,
    idx: IntValue<'c>,
) -> Result<PointerValue<'c>> {
    // SAFETY: building a GEP instruction has no effect on the compiler process; the address
    // it computes is in bounds at run time because every index the code generator emits is
    // below the buffer's static element count (loops run over the static shape).
    Ok(unsafe { b.build_in_bounds_gep(ty, base, &[idx], "p") }?)
}

struct Gen<'a, 'c> {
    cx: &'c Context,
    m: &'a Module<'c>,
    b: &'a Builder<'c>,
}

impl<'c> Gen<'_, 'c> {
    fn f32c(&self, x: f64) -> FloatValue<'c> {
        self.cx.f32_type().const_float(x)
    }

    fn intrinsic(&self, name: &str, ty: BasicTypeEnum<'c>) -> Result<FunctionValue<'c>> {
        let i = Intrinsic::find(name)
            .ok_or_else(|| BackendError::Llvm(format!("no intrinsic {name}")))?;
        i.get_declaration(self.m, &[ty])
            .ok_or_else(|| BackendError::Llvm(format!("cannot declare {name}")))
    }

    fn call1(&self, name: &str, x: FloatValue<'c>) -> Result<FloatValue<'c>> {
        let f = self.intrinsic(name, x.get_type().into())?;
        self.callf(f, &[x])
    }

    fn call2(&self, name: &str, x: FloatValue<'c>, y: FloatValue<'c>) -> Result<FloatValue<'c>> {
        let f = self.intrinsic(name, x.get_type().into())?;
        self.callf(f, &[x, y])
    }

    fn callf(&self, f: FunctionValue<'c>, args: &[FloatValue<'c>]) -> Result<FloatValue<'c>> {
        let a: Vec<_> = args.iter().map(|x| (*x).into()).collect();
        match self.b.build_call(f, &a, "c")?.try_as_basic_value() {
            inkwell::values::ValueKind::Basic(v) => Ok(v.into_float_value()),
            _ => Err(BackendError::Llvm("intrinsic returned void".into())),
        }
    }

    fn fmul(&self, a: FloatValue<'c>, b: FloatValue<'c>) -> Result<FloatValue<'c>> {
        Ok(self.b.build_float_mul(a, b, "m")?)
    }
    fn fadd(&self, a: FloatValue<'c>, b: FloatValue<'c>) -> Result<FloatValue<'c>> {
        Ok(self.b.build_float_add(a, b, "a")?)
    }
    fn fsub(&self, a: FloatValue<'c>, b: FloatValue<'c>) -> Result<FloatValue<'c>> {
        Ok(self.b.build_float_sub(a, b, "s")?)
    }
    fn fdiv(&self, a: FloatValue<'c>, b: FloatValue<'c>) -> Result<FloatValue<'c>> {
        Ok(self.b.build_float_div(a, b, "d")?)
    }
    fn fma(
        &self,
        a: FloatValue<'c>,
        b: FloatValue<'c>,
        c: FloatValue<'c>,
    ) -> Result<FloatValue<'c>> {
        let f = self.intrinsic("llvm.fmuladd", a.get_type().into())?;
        self.callf(f, &[a, b, c])
    }
    fn fmax(&self, a: FloatValue<'c>, b: FloatValue<'c>) -> Result<FloatValue<'c>> {
        self.call2("llvm.maxnum", a, b)
    }
    fn fmin(&self, a: FloatValue<'c>, b: FloatValue<'c>) -> Result<FloatValue<'c>> {
        self.call2("llvm.minnum", a, b)
    }
    fn select_f(
        &self,
        c: IntValue<'c>,
        a: FloatValue<'c>,
        b: FloatValue<'c>,
    ) -> Result<FloatValue<'c>> {
        Ok(self.b.build_select(c, a, b, "sel")?.into_float_value())
    }
    fn fcmp(
        &self,
        p: FloatPredicate,
        a: FloatValue<'c>,
        b: FloatValue<'c>,
    ) -> Result<IntValue<'c>> {
        Ok(self.b.build_float_compare(p, a, b, "cmp")?)
    }

    /// `exp(x)` in f32, vectorizable (Cephes expf).
    fn exp(&self, x: FloatValue<'c>) -> Result<FloatValue<'c>> {
        let x = self.fmin(x, self.f32c(88.0))?;
        let x = self.fmax(x, self.f32c(-88.0))?;
        let fx = self.fma(x, self.f32c(std::f64::consts::LOG2_E), self.f32c(0.5))?;
        let fx = self.call1("llvm.floor", fx)?;
        let x = self.fsub(x, self.fmul(fx, self.f32c(0.693_359_375))?)?;
        let x = self.fsub(x, self.fmul(fx, self.f32c(-2.121_944_4e-4))?)?;
        let mut y = self.f32c(1.987_569_15e-4);
        for c in [
            1.398_199_950_7e-3,
            8.333_451_907_3e-3,
            4.166_579_589_4e-2,
            1.666_666_545_9e-1,
            5.000_000_120_1e-1,
        ] {
            y = self.fma(y, x, self.f32c(c))?;
        }
        let x2 = self.fmul(x, x)?;
        let y = self.fma(y, x2, x)?;
        let y = self.fadd(y, self.f32c(1.0))?;
        let i32t = self.cx.i32_type();
        let n = self.b.build_float_to_signed_int(fx, i32t, "n")?;
        let n = self.b.build_int_add(n, i32t.const_int(127, false), "n")?;
        let n = self.b.build_left_shift(n, i32t.const_int(23, false), "n")?;
        let pow2 = self
            .b
            .build_bit_cast(n, self.cx.f32_type(), "p2")?
            .into_float_value();
        self.fmul(y, pow2)
    }

    fn sigmoid(&self, x: FloatValue<'c>) -> Result<FloatValue<'c>> {
        let e = self.exp(self.b.build_float_neg(x, "n")?)?;
        self.fdiv(self.f32c(1.0), self.fadd(self.f32c(1.0), e)?)
    }

    fn tanh(&self, x: FloatValue<'c>) -> Result<FloatValue<'c>> {
        // tanh x = 1 - 2 / (exp(2x) + 1); for |x| < 0.01 use x - x^3/3 (keeps relative accuracy).
        let e = self.exp(self.fmul(x, self.f32c(2.0))?)?;
        let t = self.fsub(
            self.f32c(1.0),
            self.fdiv(self.f32c(2.0), self.fadd(e, self.f32c(1.0))?)?,
        )?;
        let x3 = self.fmul(self.fmul(x, x)?, x)?;
        let small = self.fsub(x, self.fmul(x3, self.f32c(1.0 / 3.0))?)?;
        let ax = self.call1("llvm.fabs", x)?;
        let is_small = self.fcmp(FloatPredicate::OLT, ax, self.f32c(0.01))?;
        self.select_f(is_small, small, t)
    }

    fn erf(&self, x: FloatValue<'c>) -> Result<FloatValue<'c>> {
        let ax = self.call1("llvm.fabs", x)?;
        let t = self.fdiv(
            self.f32c(1.0),
            self.fma(ax, self.f32c(0.327_591_1), self.f32c(1.0))?,
        )?;
        let mut p = self.f32c(1.061_405_429);
        for c in [-1.453_152_027, 1.421_413_741, -0.284_496_736, 0.254_829_592] {
            p = self.fma(p, t, self.f32c(c))?;
        }
        let p = self.fmul(p, t)?;
        let e = self.exp(self.b.build_float_neg(self.fmul(ax, ax)?, "n")?)?;
        let r = self.fsub(self.f32c(1.0), self.fmul(p, e)?)?;
        self.call2("llvm.copysign", r, x)
    }
}

/// How a register value is represented.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    F32,
    F64,
    F16,
    Int { bits: u32, signed: bool },
    Bool,
}

fn kind(d: DType) -> Result<Kind> {
    Ok(match d {
        DType::F32 => Kind::F32,
        DType::F64 => Kind::F64,
        DType::F16 => Kind::F16,
        DType::I64 => Kind::Int {
            bits: 64,
            signed: true,
        },
        DType::I32 => Kind::Int {
            bits: 32,
            signed: true,
        },
        DType::I8 => Kind::Int {
            bits: 8,
            signed: true,
        },
        DType::U8 => Kind::Int {
            bits: 8,
            signed: false,
        },
        DType::Bool => Kind::Bool,
        other => {
            return Err(BackendError::Unsupported(format!(
                "element type {}",
                other.name()
            )))
        }
    })
}

/// Emits `void @name(ptr args, i64 lo, i64 hi)` for the group and returns it with its signature.
pub fn emit<'c>(
    cx: &'c Context,
    m: &Module<'c>,
    g: &Graph,
    nodes: &[NodeId],
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    name: &str,
) -> Result<(FunctionValue<'c>, FusedSig)> {
    let out_shape = shape(g, g.node(*nodes.last().expect("node")).outputs()[0])?;
    let numel: usize = out_shape.iter().product();
    let mut strides = Vec::new();
    for &v in &inputs {
        strides.push(broadcast_strides(&shape(g, v)?, &out_shape));
    }
    for &v in &outputs {
        let s = shape(g, v)?;
        if s.iter().product::<usize>() != numel {
            return Err(BackendError::Internal(format!(
                "fused output {} has shape {s:?}, group {out_shape:?}",
                g.value(v).name
            )));
        }
        strides.push(broadcast_strides(&out_shape, &out_shape));
    }
    let (dims, st) = split_rows(collapse(&out_shape, &strides));
    let r = dims.len();
    let inner = dims[r - 1] as u64;
    let outer: u64 = dims[..r - 1].iter().map(|&d| d as u64).product();

    let i64t = cx.i64_type();
    let ptr = cx.ptr_type(AddressSpace::default());
    let fty = cx
        .void_type()
        .fn_type(&[ptr.into(), i64t.into(), i64t.into()], false);
    let f = m.add_function(name, fty, Some(Linkage::Internal));
    let b = cx.create_builder();
    let entry = cx.append_basic_block(f, "entry");
    b.position_at_end(entry);
    let gen = Gen { cx, m, b: &b };
    let args = f.get_nth_param(0).expect("args").into_pointer_value();
    let lo = f.get_nth_param(1).expect("lo").into_int_value();
    let hi = f.get_nth_param(2).expect("hi").into_int_value();

    // Operand pointers; scalar constants become immediates.
    let nops = inputs.len() + outputs.len();
    let mut base_ptrs = Vec::new();
    for i in 0..nops {
        let p = elem_ptr(&b, ptr.into(), args, i64t.const_int(i as u64, false))?;
        let bp = b.build_load(ptr, p, "op")?.into_pointer_value();
        base_ptrs.push(bp);
    }
    let mut immediates: HashMap<ValueId, BasicValueEnum<'c>> = HashMap::new();
    for &v in &inputs {
        if let Some(t) = g.constant(v) {
            if t.numel() == 1 {
                if let Some(imm) = scalar_const(cx, t)? {
                    immediates.insert(v, imm);
                }
            }
        }
    }

    // Outer loop over rows [lo, hi).
    let pre = b.get_insert_block().expect("block");
    let outer_bb = cx.append_basic_block(f, "outer");
    let inner_pre = cx.append_basic_block(f, "inner.pre");
    let inner_bb = cx.append_basic_block(f, "inner");
    let inner_end = cx.append_basic_block(f, "inner.end");
    let exit = cx.append_basic_block(f, "exit");
    let c = b.build_int_compare(IntPredicate::ULT, lo, hi, "any")?;
    b.build_conditional_branch(c, outer_bb, exit)?;
    b.position_at_end(outer_bb);
    let o = b.build_phi(i64t, "o")?;
    o.add_incoming(&[(&lo, pre)]);
    let ov = o.as_basic_value().into_int_value();
    // Row base offsets: digits of o over dims[..r-1].
    let mut bases: Vec<IntValue<'c>> = vec![i64t.const_zero(); nops];
    let mut rem = ov;
    for k in (0..r - 1).rev() {
        let d = i64t.const_int(dims[k] as u64, false);
        let digit = if k == 0 {
            rem
        } else {
            b.build_int_unsigned_rem(rem, d, "dg")?
        };
        if k > 0 {
            rem = b.build_int_unsigned_div(rem, d, "q")?;
        }
        for (j, base) in bases.iter_mut().enumerate() {
            let s = st[j][k];
            if s != 0 {
                let t = b.build_int_mul(digit, i64t.const_int(s as u64, true), "t")?;
                *base = b.build_int_add(*base, t, "b")?;
            }
        }
    }
    b.build_unconditional_branch(inner_pre)?;
    b.position_at_end(inner_pre);
    b.build_unconditional_branch(inner_bb)?;
    b.position_at_end(inner_bb);
    let j = b.build_phi(i64t, "j")?;
    j.add_incoming(&[(&i64t.const_zero(), inner_pre)]);
    let jv = j.as_basic_value().into_int_value();

    let mut regs: HashMap<ValueId, BasicValueEnum<'c>> = HashMap::new();
    for (ii, &v) in inputs.iter().enumerate() {
        if let Some(imm) = immediates.get(&v) {
            regs.insert(v, *imm);
            continue;
        }
        let ty = llvm_type(cx, dtype(g, v)?)?;
        let s = st[ii][r - 1];
        let idx = if s == 0 {
            bases[ii]
        } else {
            let t = if s == 1 {
                jv
            } else {
                b.build_int_mul(jv, i64t.const_int(s as u64, true), "t")?
            };
            b.build_int_add(bases[ii], t, "i")?
        };
        let p = elem_ptr(&b, ty, base_ptrs[ii], idx)?;
        let mut val = b.build_load(ty, p, "x")?;
        if dtype(g, v)? == DType::Bool {
            val = b
                .build_int_compare(
                    IntPredicate::NE,
                    val.into_int_value(),
                    cx.i8_type().const_zero(),
                    "bool",
                )?
                .into();
        }
        regs.insert(v, val);
    }
    for &n in nodes {
        let node = g.node(n);
        let out = node.outputs()[0];
        let v = eval_node(&gen, g, n, &regs)?;
        regs.insert(out, v);
        let _ = &node.name;
    }
    for (oi, &v) in outputs.iter().enumerate() {
        let k = inputs.len() + oi;
        let ty = llvm_type(cx, dtype(g, v)?)?;
        let idx = b.build_int_add(bases[k], jv, "i")?;
        let p = elem_ptr(&b, ty, base_ptrs[k], idx)?;
        let mut val = regs[&v];
        if dtype(g, v)? == DType::Bool {
            val = b
                .build_int_z_extend(val.into_int_value(), cx.i8_type(), "b8")?
                .into();
        }
        b.build_store(p, val)?;
    }
    let jn = b.build_int_add(jv, i64t.const_int(1, false), "jn")?;
    let cur = b.get_insert_block().expect("block");
    j.add_incoming(&[(&jn, cur)]);
    let more = b.build_int_compare(IntPredicate::ULT, jn, i64t.const_int(inner, false), "more")?;
    b.build_conditional_branch(more, inner_bb, inner_end)?;
    b.position_at_end(inner_end);
    let on = b.build_int_add(ov, i64t.const_int(1, false), "on")?;
    o.add_incoming(&[(&on, inner_end)]);
    let more = b.build_int_compare(IntPredicate::ULT, on, hi, "more")?;
    b.build_conditional_branch(more, outer_bb, exit)?;
    b.position_at_end(exit);
    b.build_return(None)?;
    for &n in nodes {
        let _ = n;
    }
    Ok((
        f,
        FusedSig {
            inputs,
            outputs,
            outer,
            numel: numel as u64,
        },
    ))
}

fn scalar_const<'c>(cx: &'c Context, t: &pare_ir::Tensor) -> Result<Option<BasicValueEnum<'c>>> {
    let Some(v) = t.to_f64_vec() else {
        return Ok(None);
    };
    let x = v[0];
    Ok(Some(match t.dtype() {
        DType::F32 => cx.f32_type().const_float(x as f32 as f64).into(),
        DType::F64 => cx.f64_type().const_float(x).into(),
        DType::F16 => cx.f16_type().const_float(x).into(),
        DType::I64 => {
            let i = t.to_i64_vec().map(|v| v[0]).unwrap_or(x as i64);
            cx.i64_type().const_int(i as u64, true).into()
        }
        DType::I32 => cx.i32_type().const_int(x as i64 as u64, true).into(),
        DType::I8 | DType::U8 => cx.i8_type().const_int(x as i64 as u64, true).into(),
        DType::Bool => cx.bool_type().const_int((x != 0.0) as u64, false).into(),
        _ => return Ok(None),
    }))
}

/// Float op in f32: f16 is widened, computed and narrowed per op (ONNX rounds every f16 op).
fn with_f32<'c>(
    gen: &Gen<'_, 'c>,
    kind: Kind,
    xs: &[BasicValueEnum<'c>],
    f: impl FnOnce(&[FloatValue<'c>]) -> Result<FloatValue<'c>>,
) -> Result<BasicValueEnum<'c>> {
    let f32t = gen.cx.f32_type();
    match kind {
        Kind::F32 => {
            let v: Vec<_> = xs.iter().map(|x| x.into_float_value()).collect();
            Ok(f(&v)?.into())
        }
        Kind::F16 | Kind::F64 => {
            let mut v = Vec::new();
            for x in xs {
                v.push(gen.b.build_float_cast(x.into_float_value(), f32t, "w")?);
            }
            let r = f(&v)?;
            let ty: FloatType = if kind == Kind::F16 {
                gen.cx.f16_type()
            } else {
                gen.cx.f64_type()
            };
            Ok(gen.b.build_float_cast(r, ty, "n")?.into())
        }
        _ => Err(BackendError::Unsupported(
            "integer operand to a float-only op".into(),
        )),
    }
}

fn eval_node<'c>(
    gen: &Gen<'_, 'c>,
    g: &Graph,
    n: NodeId,
    regs: &HashMap<ValueId, BasicValueEnum<'c>>,
) -> Result<BasicValueEnum<'c>> {
    let node = g.node(n);
    let b = gen.b;
    let get = |i: usize| -> Result<Option<BasicValueEnum<'c>>> {
        Ok(match node.inputs().get(i).copied().flatten() {
            Some(v) => Some(*regs.get(&v).ok_or_else(|| {
                BackendError::Internal(format!(
                    "operand {} of {} not evaluated",
                    g.value(v).name,
                    node.name
                ))
            })?),
            None => None,
        })
    };
    let x0 =
        get(0)?.ok_or_else(|| BackendError::Internal(format!("{} has no operand", node.name)))?;
    let in_kind = kind(dtype(g, node.inputs()[0].expect("operand"))?)?;
    let out_kind = kind(dtype(g, node.outputs()[0])?)?;
    let unsupported = || BackendError::UnsupportedNode {
        node: node.name.clone(),
        op: node.op.name().to_string(),
        why: "element type".into(),
    };
    let is_float = matches!(in_kind, Kind::F32 | Kind::F64 | Kind::F16);
    let f1 = |f: &dyn Fn(FloatValue<'c>) -> Result<FloatValue<'c>>| {
        with_f32(gen, in_kind, &[x0], |v| f(v[0]))
    };
    // Binary ops (numpy broadcasting is done by the loads).
    let bin = |fop: &dyn Fn(FloatValue<'c>, FloatValue<'c>) -> Result<FloatValue<'c>>,
               iop: &dyn Fn(IntValue<'c>, IntValue<'c>, bool) -> Result<IntValue<'c>>|
     -> Result<BasicValueEnum<'c>> {
        let mut acc = x0;
        for i in 1..node.inputs().len() {
            let y = get(i)?.ok_or_else(unsupported)?;
            acc = match in_kind {
                Kind::Int { signed, .. } => {
                    iop(acc.into_int_value(), y.into_int_value(), signed)?.into()
                }
                Kind::Bool => return Err(unsupported()),
                k => with_f32(gen, k, &[acc, y], |v| fop(v[0], v[1]))?,
            };
        }
        Ok(acc)
    };
    let cmp =
        |fp: FloatPredicate, sp: IntPredicate, up: IntPredicate| -> Result<BasicValueEnum<'c>> {
            let y = get(1)?.ok_or_else(unsupported)?;
            Ok(match in_kind {
                Kind::Int { signed, .. } => b
                    .build_int_compare(
                        if signed { sp } else { up },
                        x0.into_int_value(),
                        y.into_int_value(),
                        "c",
                    )?
                    .into(),
                Kind::Bool => b
                    .build_int_compare(up, x0.into_int_value(), y.into_int_value(), "c")?
                    .into(),
                _ => b
                    .build_float_compare(fp, x0.into_float_value(), y.into_float_value(), "c")?
                    .into(),
            })
        };
    let r: BasicValueEnum<'c> = match &node.op {
        Op::Add | Op::Sum => bin(&|a, c| gen.fadd(a, c), &|a, c, _| {
            Ok(b.build_int_add(a, c, "a")?)
        })?,
        Op::Sub => bin(&|a, c| gen.fsub(a, c), &|a, c, _| {
            Ok(b.build_int_sub(a, c, "s")?)
        })?,
        Op::Mul => bin(&|a, c| gen.fmul(a, c), &|a, c, _| {
            Ok(b.build_int_mul(a, c, "m")?)
        })?,
        Op::Div => bin(&|a, c| gen.fdiv(a, c), &|a, c, s| {
            Ok(if s {
                b.build_int_signed_div(a, c, "d")?
            } else {
                b.build_int_unsigned_div(a, c, "d")?
            })
        })?,
        Op::Max => bin(&|a, c| gen.fmax(a, c), &|a, c, s| {
            let p = if s {
                IntPredicate::SGT
            } else {
                IntPredicate::UGT
            };
            let k = b.build_int_compare(p, a, c, "k")?;
            Ok(b.build_select(k, a, c, "mx")?.into_int_value())
        })?,
        Op::Min => bin(&|a, c| gen.fmin(a, c), &|a, c, s| {
            let p = if s {
                IntPredicate::SLT
            } else {
                IntPredicate::ULT
            };
            let k = b.build_int_compare(p, a, c, "k")?;
            Ok(b.build_select(k, a, c, "mn")?.into_int_value())
        })?,
        Op::Mean => {
            let s = bin(&|a, c| gen.fadd(a, c), &|_, _, _| Err(unsupported()))?;
            let k = node.inputs().len() as f64;
            with_f32(gen, in_kind, &[s], |v| gen.fmul(v[0], gen.f32c(1.0 / k)))?
        }
        Op::Pow => {
            let e = node.inputs()[1].and_then(|v| g.constant(v)).and_then(|t| {
                if t.numel() == 1 {
                    t.to_f64_vec()
                } else {
                    None
                }
            });
            let y = get(1)?.ok_or_else(unsupported)?;
            if !is_float {
                return Err(unsupported());
            }
            match e.map(|v| v[0]) {
                Some(2.0) => f1(&|a| gen.fmul(a, a))?,
                Some(1.0) => x0,
                Some(0.5) => f1(&|a| gen.call1("llvm.sqrt", a))?,
                Some(3.0) => f1(&|a| gen.fmul(gen.fmul(a, a)?, a))?,
                _ => {
                    let yk = kind(dtype(g, node.inputs()[1].expect("exponent"))?)?;
                    let yf = match yk {
                        Kind::Int { .. } => b
                            .build_signed_int_to_float(y.into_int_value(), gen.cx.f32_type(), "e")?
                            .into(),
                        Kind::F32 => y,
                        _ => b
                            .build_float_cast(y.into_float_value(), gen.cx.f32_type(), "e")?
                            .into(),
                    };
                    let xw = with_f32(gen, in_kind, &[x0], |v| Ok(v[0]))?;
                    let xf = if in_kind == Kind::F32 {
                        xw
                    } else {
                        b.build_float_cast(xw.into_float_value(), gen.cx.f32_type(), "x")?
                            .into()
                    };
                    let r = gen.call2("llvm.pow", xf.into_float_value(), yf.into_float_value())?;
                    with_f32(gen, Kind::F32, &[r.into()], |v| Ok(v[0]))?
                }
            }
        }
        Op::Neg => match in_kind {
            Kind::Int { .. } => b.build_int_neg(x0.into_int_value(), "n")?.into(),
            _ => f1(&|a| Ok(b.build_float_neg(a, "n")?))?,
        },
        Op::Abs => match in_kind {
            Kind::Int { signed: true, .. } => {
                let f = gen.intrinsic("llvm.abs", x0.get_type())?;
                let a = [x0.into(), gen.cx.bool_type().const_zero().into()];
                match b.build_call(f, &a, "abs")?.try_as_basic_value() {
                    inkwell::values::ValueKind::Basic(v) => v,
                    _ => return Err(unsupported()),
                }
            }
            Kind::Int { .. } => x0,
            _ => f1(&|a| gen.call1("llvm.fabs", a))?,
        },
        Op::Exp => f1(&|a| gen.exp(a))?,
        Op::Log => f1(&|a| gen.call1("llvm.log", a))?,
        Op::Sqrt => f1(&|a| gen.call1("llvm.sqrt", a))?,
        Op::Sin => f1(&|a| gen.call1("llvm.sin", a))?,
        Op::Cos => f1(&|a| gen.call1("llvm.cos", a))?,
        Op::Floor => f1(&|a| gen.call1("llvm.floor", a))?,
        Op::Ceil => f1(&|a| gen.call1("llvm.ceil", a))?,
        Op::Round => f1(&|a| gen.call1("llvm.roundeven", a))?,
        Op::Reciprocal => f1(&|a| gen.fdiv(gen.f32c(1.0), a))?,
        Op::Relu => match in_kind {
            Kind::Int { .. } => {
                let z = x0.get_type().into_int_type().const_zero();
                let k = b.build_int_compare(IntPredicate::SLT, x0.into_int_value(), z, "k")?;
                b.build_select(k, z, x0.into_int_value(), "r")?
            }
            _ => f1(&|a| {
                let k = gen.fcmp(FloatPredicate::OLT, a, gen.f32c(0.0))?;
                gen.select_f(k, gen.f32c(0.0), a)
            })?,
        },
        Op::Sigmoid => f1(&|a| gen.sigmoid(a))?,
        Op::Tanh => f1(&|a| gen.tanh(a))?,
        Op::Erf => f1(&|a| gen.erf(a))?,
        Op::Softplus => f1(&|a| {
            // log(1 + exp(x)) = max(x, 0) + log(1 + exp(-|x|))
            let ax = gen.call1("llvm.fabs", a)?;
            let e = gen.exp(b.build_float_neg(ax, "n")?)?;
            let l = gen.call1("llvm.log", gen.fadd(gen.f32c(1.0), e)?)?;
            gen.fadd(gen.fmax(a, gen.f32c(0.0))?, l)
        })?,
        Op::Softsign => f1(&|a| gen.fdiv(a, gen.fadd(gen.f32c(1.0), gen.call1("llvm.fabs", a)?)?))?,
        Op::Mish => f1(&|a| {
            let ax = gen.call1("llvm.fabs", a)?;
            let e = gen.exp(b.build_float_neg(ax, "n")?)?;
            let sp = gen.fadd(
                gen.fmax(a, gen.f32c(0.0))?,
                gen.call1("llvm.log", gen.fadd(gen.f32c(1.0), e)?)?,
            )?;
            gen.fmul(a, gen.tanh(sp)?)
        })?,
        Op::Sign => match in_kind {
            Kind::Int { .. } => return Err(unsupported()),
            _ => f1(&|a| {
                let pos = gen.fcmp(FloatPredicate::OGT, a, gen.f32c(0.0))?;
                let neg = gen.fcmp(FloatPredicate::OLT, a, gen.f32c(0.0))?;
                let s = gen.select_f(neg, gen.f32c(-1.0), gen.f32c(0.0))?;
                gen.select_f(pos, gen.f32c(1.0), s)
            })?,
        },
        Op::HardSigmoid(a) => {
            let (al, be) = (a.alpha as f64, a.beta as f64);
            f1(&|x| {
                let y = gen.fma(x, gen.f32c(al), gen.f32c(be))?;
                gen.fmax(gen.fmin(y, gen.f32c(1.0))?, gen.f32c(0.0))
            })?
        }
        Op::HardSwish => f1(&|x| {
            let y = gen.fma(x, gen.f32c(1.0 / 6.0), gen.f32c(0.5))?;
            let y = gen.fmax(gen.fmin(y, gen.f32c(1.0))?, gen.f32c(0.0))?;
            gen.fmul(x, y)
        })?,
        Op::LeakyRelu(a) => {
            let al = a.alpha as f64;
            f1(&|x| {
                let k = gen.fcmp(FloatPredicate::OLT, x, gen.f32c(0.0))?;
                gen.select_f(k, gen.fmul(x, gen.f32c(al))?, x)
            })?
        }
        Op::Elu(a) => {
            let al = a.alpha as f64;
            f1(&|x| {
                let k = gen.fcmp(FloatPredicate::OLT, x, gen.f32c(0.0))?;
                let e = gen.fmul(gen.fsub(gen.exp(x)?, gen.f32c(1.0))?, gen.f32c(al))?;
                gen.select_f(k, e, x)
            })?
        }
        Op::Gelu(a) => {
            let tanh_form = a.approximate == "tanh";
            f1(&|x| {
                let inner = if tanh_form {
                    let x3 = gen.fmul(gen.fmul(x, x)?, x)?;
                    let u = gen.fmul(
                        gen.fma(x3, gen.f32c(0.044715), x)?,
                        gen.f32c((2.0 / std::f64::consts::PI).sqrt()),
                    )?;
                    gen.tanh(u)?
                } else {
                    gen.erf(gen.fmul(x, gen.f32c(std::f64::consts::FRAC_1_SQRT_2))?)?
                };
                gen.fmul(gen.fmul(x, gen.f32c(0.5))?, gen.fadd(inner, gen.f32c(1.0))?)
            })?
        }
        Op::PRelu => {
            let s = get(1)?.ok_or_else(unsupported)?;
            with_f32(gen, in_kind, &[x0, s], |v| {
                let k = gen.fcmp(FloatPredicate::OLT, v[0], gen.f32c(0.0))?;
                gen.select_f(k, gen.fmul(v[0], v[1])?, v[0])
            })?
        }
        Op::Clip => {
            let lo = get(1)?;
            let hi = get(2)?;
            match in_kind {
                Kind::Int { signed, .. } => {
                    let mut v = x0.into_int_value();
                    if let Some(l) = lo {
                        let k = b.build_int_compare(
                            if signed {
                                IntPredicate::SLT
                            } else {
                                IntPredicate::ULT
                            },
                            v,
                            l.into_int_value(),
                            "k",
                        )?;
                        v = b
                            .build_select(k, l.into_int_value(), v, "c")?
                            .into_int_value();
                    }
                    if let Some(h) = hi {
                        let k = b.build_int_compare(
                            if signed {
                                IntPredicate::SGT
                            } else {
                                IntPredicate::UGT
                            },
                            v,
                            h.into_int_value(),
                            "k",
                        )?;
                        v = b
                            .build_select(k, h.into_int_value(), v, "c")?
                            .into_int_value();
                    }
                    v.into()
                }
                _ => {
                    let mut ops = vec![x0];
                    ops.extend(lo);
                    ops.extend(hi);
                    let (has_lo, has_hi) = (lo.is_some(), hi.is_some());
                    with_f32(gen, in_kind, &ops, |v| {
                        let mut x = v[0];
                        let mut i = 1;
                        if has_lo {
                            let k = gen.fcmp(FloatPredicate::OLT, x, v[i])?;
                            x = gen.select_f(k, v[i], x)?;
                            i += 1;
                        }
                        if has_hi {
                            let k = gen.fcmp(FloatPredicate::OGT, x, v[i])?;
                            x = gen.select_f(k, v[i], x)?;
                        }
                        Ok(x)
                    })?
                }
            }
        }
        Op::Equal => cmp(FloatPredicate::OEQ, IntPredicate::EQ, IntPredicate::EQ)?,
        Op::Less => cmp(FloatPredicate::OLT, IntPredicate::SLT, IntPredicate::ULT)?,
        Op::LessOrEqual => cmp(FloatPredicate::OLE, IntPredicate::SLE, IntPredicate::ULE)?,
        Op::Greater => cmp(FloatPredicate::OGT, IntPredicate::SGT, IntPredicate::UGT)?,
        Op::GreaterOrEqual => cmp(FloatPredicate::OGE, IntPredicate::SGE, IntPredicate::UGE)?,
        Op::Not => b.build_not(x0.into_int_value(), "not")?.into(),
        Op::And | Op::Or | Op::Xor => {
            let y = get(1)?.ok_or_else(unsupported)?.into_int_value();
            let x = x0.into_int_value();
            match node.op {
                Op::And => b.build_and(x, y, "and")?.into(),
                Op::Or => b.build_or(x, y, "or")?.into(),
                _ => b.build_xor(x, y, "xor")?.into(),
            }
        }
        Op::IsNaN => b
            .build_float_compare(
                FloatPredicate::UNO,
                x0.into_float_value(),
                x0.into_float_value(),
                "nan",
            )?
            .into(),
        Op::Where => {
            let a = get(1)?.ok_or_else(unsupported)?;
            let c = get(2)?.ok_or_else(unsupported)?;
            b.build_select(x0.into_int_value(), a, c, "w")?
        }
        Op::Cast(_) => cast(gen, x0, in_kind, out_kind)?,
        _ => {
            return Err(BackendError::UnsupportedNode {
                node: node.name.clone(),
                op: node.op.name().to_string(),
                why: "not an elementwise op the fused code generator knows".into(),
            })
        }
    };
    let _ = r.as_basic_value_enum();
    Ok(r)
}

fn int_t(cx: &Context, bits: u32) -> inkwell::types::IntType<'_> {
    match bits {
        64 => cx.i64_type(),
        32 => cx.i32_type(),
        16 => cx.i16_type(),
        _ => cx.i8_type(),
    }
}

fn cast<'c>(
    gen: &Gen<'_, 'c>,
    x: BasicValueEnum<'c>,
    from: Kind,
    to: Kind,
) -> Result<BasicValueEnum<'c>> {
    let b = gen.b;
    let cx = gen.cx;
    let fty = |k: Kind| -> Option<FloatType<'c>> {
        match k {
            Kind::F32 => Some(cx.f32_type()),
            Kind::F64 => Some(cx.f64_type()),
            Kind::F16 => Some(cx.f16_type()),
            _ => None,
        }
    };
    Ok(match (from, to) {
        (a, c) if a == c => x,
        (Kind::Bool, Kind::Int { bits, .. }) => b
            .build_int_z_extend(x.into_int_value(), int_t(cx, bits), "z")?
            .into(),
        (Kind::Bool, t) => b
            .build_unsigned_int_to_float(x.into_int_value(), fty(t).expect("float"), "f")?
            .into(),
        (Kind::Int { .. }, Kind::Bool) => {
            let z = x.get_type().into_int_type().const_zero();
            b.build_int_compare(IntPredicate::NE, x.into_int_value(), z, "nz")?
                .into()
        }
        (Kind::Int { bits: fb, signed }, Kind::Int { bits: tb, .. }) => {
            let t = int_t(cx, tb);
            if tb < fb {
                b.build_int_truncate(x.into_int_value(), t, "t")?.into()
            } else if signed {
                b.build_int_s_extend(x.into_int_value(), t, "s")?.into()
            } else {
                b.build_int_z_extend(x.into_int_value(), t, "z")?.into()
            }
        }
        (Kind::Int { signed, .. }, t) => {
            let ft = fty(t).expect("float");
            if signed {
                b.build_signed_int_to_float(x.into_int_value(), ft, "f")?
                    .into()
            } else {
                b.build_unsigned_int_to_float(x.into_int_value(), ft, "f")?
                    .into()
            }
        }
        (f, Kind::Bool) => {
            let ft = fty(f).expect("float");
            b.build_float_compare(
                FloatPredicate::UNE,
                x.into_float_value(),
                ft.const_zero(),
                "nz",
            )?
            .into()
        }
        (_, Kind::Int { bits, signed }) => {
            let t = int_t(cx, bits);
            if signed {
                b.build_float_to_signed_int(x.into_float_value(), t, "i")?
                    .into()
            } else {
                b.build_float_to_unsigned_int(x.into_float_value(), t, "i")?
                    .into()
            }
        }
        (_, t) => b
            .build_float_cast(x.into_float_value(), fty(t).expect("float"), "c")?
            .into(),
    })
}

/// The type every operand pointer is loaded as (for the caller's `args` array).
pub fn ptr_type(cx: &Context) -> BasicTypeEnum<'_> {
    cx.ptr_type(AddressSpace::default()).as_basic_type_enum()
}

#[cfg(test)]
mod tests {
    use super::{collapse, split_rows};

    #[test]
    fn a_whole_tensor_loop_is_split_into_rows() {
        // [1, 16, 112, 112], all operands contiguous: one row of 200704, split into 49 rows of
        // 4096 (the largest divisor in range).
        let shape = [1, 16, 112, 112];
        let contiguous = vec![200704, 12544, 112, 1];
        let scalar = vec![0, 0, 0, 0];
        let (d, s) = split_rows(collapse(&shape, &[contiguous, scalar]));
        assert_eq!(d, vec![49, 4096]);
        assert_eq!(s, vec![vec![4096, 1], vec![0, 0]]);
    }

    #[test]
    fn per_channel_operands_keep_their_strides() {
        // [16, 12544] with a per-channel bias [16, 1]: 16 rows, each split into 4 of 3136.
        let (d, s) = split_rows(collapse(&[16, 12544], &[vec![12544, 1], vec![1, 0]]));
        assert_eq!(d, vec![16, 4, 3136]);
        assert_eq!(s, vec![vec![12544, 3136, 1], vec![1, 0, 0]]);
    }

    #[test]
    fn enough_rows_or_no_divisor_leaves_the_nest_alone() {
        let rows = (vec![128, 4096], vec![vec![4096, 1]]);
        assert_eq!(split_rows(rows.clone()), rows);
        let prime = (vec![100_003], vec![vec![1]]);
        assert_eq!(split_rows(prime.clone()), prime);
        let short = (vec![1000], vec![vec![1]]);
        assert_eq!(split_rows(short.clone()), short);
    }
}
