//! LLVM IR for a [`Plan`]: constant data, the model's C ABI (`P_create`, `P_run`, `P_destroy`,
//! `P_api`, see `pare_runtime::abi`), kernel calls and the fused elementwise loops.
//!
//! `P_run` is straight-line code: per step it computes operand addresses (arena base plus a
//! constant offset, a caller pointer, or a constant global), stores them in a small pointer
//! array on the stack and calls the runtime kernel with its constant parameter words, returning
//! the first non-zero status. Fused groups are separate internal functions; when the group is
//! large and the context has more than one thread they run through `pare_rt_parallel_for`.

use crate::fused;
use crate::plan::{self, Operand, Place, Plan, Step, StepKind, ALIGN};
use crate::{BackendError, Result};
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, FunctionValue, GlobalValue, IntValue, PointerValue,
};
use inkwell::{AddressSpace, IntPredicate};
use pare_ir::DType;
use std::collections::HashMap;

/// Below this many elements a fused loop runs on the calling thread (16 Ki floats is a few
/// microseconds of work, about what a hand-off to the runtime's spinning workers costs).
const PARALLEL_MIN_ELEMS: u64 = 1 << 14;

/// What the generated module exports.
#[derive(Clone, Debug)]
pub struct Exports {
    /// Symbol prefix.
    pub prefix: String,
    /// Model name (in the descriptor).
    pub name: String,
    /// Target triple string (in the descriptor).
    pub triple: String,
    /// CPU features the code assumes (in the descriptor).
    pub cpu_features: String,
    /// Also emit a C `main` calling `pare_exe_main`.
    pub main: bool,
}

fn abi_dtype(d: DType) -> Result<i32> {
    use pare_runtime::abi::dtype as c;
    Ok(match d {
        DType::F32 => c::F32,
        DType::U8 => c::U8,
        DType::I8 => c::I8,
        DType::I32 => c::I32,
        DType::I64 => c::I64,
        DType::Bool => c::BOOL,
        DType::F16 => c::F16,
        DType::F64 => c::F64,
        other => {
            return Err(BackendError::Unsupported(format!(
                "graph input/output of type {}",
                other.name()
            )))
        }
    })
}

struct Cg<'c, 'p> {
    cx: &'c Context,
    m: Module<'c>,
    plan: &'p Plan,
    consts: Vec<GlobalValue<'c>>,
    kernels: HashMap<&'static str, FunctionValue<'c>>,
}

impl<'c> Cg<'c, '_> {
    fn ptr_t(&self) -> inkwell::types::PointerType<'c> {
        self.cx.ptr_type(AddressSpace::default())
    }

    fn cstring(&self, s: &str, name: &str) -> GlobalValue<'c> {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        let init = self.cx.const_string(&bytes, false);
        let g = self.m.add_global(init.get_type(), None, name);
        g.set_initializer(&init);
        g.set_constant(true);
        g.set_linkage(Linkage::Private);
        g
    }

    fn declare(&mut self, name: &'static str) -> FunctionValue<'c> {
        if let Some(f) = self.kernels.get(name) {
            return *f;
        }
        let p = self.ptr_t();
        let ty = self
            .cx
            .i32_type()
            .fn_type(&[p.into(), p.into(), self.cx.i64_type().into()], false);
        let f = self.m.add_function(name, ty, Some(Linkage::External));
        self.kernels.insert(name, f);
        f
    }

    fn extern_fn(&self, name: &str, ty: inkwell::types::FunctionType<'c>) -> FunctionValue<'c> {
        self.m
            .get_function(name)
            .unwrap_or_else(|| self.m.add_function(name, ty, Some(Linkage::External)))
    }

    fn emit_consts(&mut self) {
        for (i, c) in self.plan.consts.iter().enumerate() {
            let init = self.cx.const_string(&c.bytes, false);
            let g = self
                .m
                .add_global(init.get_type(), None, &format!("pare.const.{i}"));
            g.set_initializer(&init);
            g.set_constant(true);
            g.set_linkage(Linkage::Private);
            g.set_alignment(ALIGN as u32);
            g.set_unnamed_addr(true);
            self.consts.push(g);
        }
    }

    fn descriptors(
        &self,
        values: &[pare_ir::ValueId],
        which: &str,
    ) -> Result<(GlobalValue<'c>, usize)> {
        let g = &self.plan.graph;
        let i32t = self.cx.i32_type();
        let i64t = self.cx.i64_type();
        let p = self.ptr_t();
        let info_t = self.cx.struct_type(
            &[p.into(), i32t.into(), i32t.into(), p.into(), i64t.into()],
            false,
        );
        let mut items = Vec::new();
        for (k, &v) in values.iter().enumerate() {
            let val = g.value(v);
            let name = self.cstring(&val.name, &format!("pare.{which}.name.{k}"));
            let shape = plan::shape(g, v)?;
            let dims: Vec<_> = shape
                .iter()
                .map(|&d| i64t.const_int(d as u64, false))
                .collect();
            let arr = i64t.const_array(&dims);
            let sg = self
                .m
                .add_global(arr.get_type(), None, &format!("pare.{which}.shape.{k}"));
            sg.set_initializer(&arr);
            sg.set_constant(true);
            sg.set_linkage(Linkage::Private);
            let bytes = plan::bytes(g, v)?;
            items.push(
                info_t.const_named_struct(&[
                    name.as_pointer_value().into(),
                    i32t.const_int(abi_dtype(plan::dtype(g, v)?)? as u64, true)
                        .into(),
                    i32t.const_int(shape.len() as u64, false).into(),
                    sg.as_pointer_value().into(),
                    i64t.const_int(bytes, false).into(),
                ]),
            );
        }
        let arr = info_t.const_array(&items);
        let gl = self
            .m
            .add_global(arr.get_type(), None, &format!("pare.{which}"));
        gl.set_initializer(&arr);
        gl.set_constant(true);
        gl.set_linkage(Linkage::Private);
        Ok((gl, values.len()))
    }
}

/// Builds the module.
pub fn emit<'c>(cx: &'c Context, plan: &Plan, ex: &Exports) -> Result<Module<'c>> {
    let m = cx.create_module(&ex.name);
    let mut cg = Cg {
        cx,
        m,
        plan,
        consts: Vec::new(),
        kernels: HashMap::new(),
    };
    cg.emit_consts();
    let i32t = cx.i32_type();
    let i64t = cx.i64_type();
    let p = cg.ptr_t();
    let voidt = cx.void_type();
    let alloc = cg.extern_fn("pare_rt_alloc", p.fn_type(&[i64t.into()], false));
    let free = cg.extern_fn(
        "pare_rt_free",
        voidt.fn_type(&[p.into(), i64t.into()], false),
    );
    let default_threads = cg.extern_fn("pare_rt_default_threads", i64t.fn_type(&[], false));
    let par_for = cg.extern_fn(
        "pare_rt_parallel_for",
        voidt.fn_type(&[p.into(), p.into(), i64t.into(), i64t.into()], false),
    );

    // create(threads): ctx = { arena, threads }.
    let create_t = p.fn_type(&[i32t.into()], false);
    let create =
        cg.m.add_function(&format!("{}_create", ex.prefix), create_t, None);
    {
        let b = cx.create_builder();
        let e = cx.append_basic_block(create, "entry");
        b.position_at_end(e);
        let ctx = b.build_call(alloc, &[i64t.const_int(16, false).into()], "ctx")?;
        let ctx = basic(ctx)?.into_pointer_value();
        let ok = cx.append_basic_block(create, "ok");
        let fail = cx.append_basic_block(create, "fail");
        let isnull = b.build_is_null(ctx, "null")?;
        b.build_conditional_branch(isnull, fail, ok)?;
        b.position_at_end(fail);
        b.build_return(Some(&p.const_null()))?;
        b.position_at_end(ok);
        let arena = if plan.arena_bytes > 0 {
            let a = b.build_call(
                alloc,
                &[i64t.const_int(plan.arena_bytes, false).into()],
                "arena",
            )?;
            let a = basic(a)?.into_pointer_value();
            let ok2 = cx.append_basic_block(create, "ok2");
            let fail2 = cx.append_basic_block(create, "fail2");
            let isnull = b.build_is_null(a, "null")?;
            b.build_conditional_branch(isnull, fail2, ok2)?;
            b.position_at_end(fail2);
            b.build_call(free, &[ctx.into(), i64t.const_int(16, false).into()], "")?;
            b.build_return(Some(&p.const_null()))?;
            b.position_at_end(ok2);
            a
        } else {
            p.const_null()
        };
        b.build_store(ctx, arena)?;
        let t = create.get_nth_param(0).expect("threads").into_int_value();
        let t64 = b.build_int_s_extend(t, i64t, "t")?;
        let dflt = basic(b.build_call(default_threads, &[], "d")?)?.into_int_value();
        let pos = b.build_int_compare(IntPredicate::SGT, t64, i64t.const_zero(), "pos")?;
        let threads = b.build_select(pos, t64, dflt, "threads")?;
        let tp = fused::elem_ptr(&b, i64t.into(), ctx, i64t.const_int(1, false))?;
        b.build_store(tp, threads)?;
        b.build_return(Some(&ctx))?;
    }
    // destroy(ctx).
    let destroy = cg.m.add_function(
        &format!("{}_destroy", ex.prefix),
        voidt.fn_type(&[p.into()], false),
        None,
    );
    {
        let b = cx.create_builder();
        let e = cx.append_basic_block(destroy, "entry");
        let body = cx.append_basic_block(destroy, "body");
        let done = cx.append_basic_block(destroy, "done");
        b.position_at_end(e);
        let ctx = destroy.get_nth_param(0).expect("ctx").into_pointer_value();
        let isnull = b.build_is_null(ctx, "null")?;
        b.build_conditional_branch(isnull, done, body)?;
        b.position_at_end(body);
        let arena = b.build_load(p, ctx, "arena")?;
        b.build_call(
            free,
            &[arena.into(), i64t.const_int(plan.arena_bytes, false).into()],
            "",
        )?;
        b.build_call(free, &[ctx.into(), i64t.const_int(16, false).into()], "")?;
        b.build_unconditional_branch(done)?;
        b.position_at_end(done);
        b.build_return(None)?;
    }
    // run(ctx, inputs, outputs).
    let run_t = i32t.fn_type(&[p.into(), p.into(), p.into()], false);
    let run =
        cg.m.add_function(&format!("{}_run", ex.prefix), run_t, None);
    {
        let b = cx.create_builder();
        let entry = cx.append_basic_block(run, "entry");
        let fail = cx.append_basic_block(run, "fail");
        b.position_at_end(fail);
        let status_phi = b.build_phi(i32t, "status")?;
        b.build_return(Some(&status_phi.as_basic_value()))?;
        b.position_at_end(entry);
        let ctx = run.get_nth_param(0).expect("ctx").into_pointer_value();
        let inputs = run.get_nth_param(1).expect("inputs").into_pointer_value();
        let outputs = run.get_nth_param(2).expect("outputs").into_pointer_value();
        let arena = b.build_load(p, ctx, "arena")?.into_pointer_value();
        let tp = fused::elem_ptr(&b, i64t.into(), ctx, i64t.const_int(1, false))?;
        let threads = b.build_load(i64t, tp, "threads")?.into_int_value();
        let max_bufs = plan
            .steps
            .iter()
            .map(|s| match &s.kind {
                StepKind::Kernel(k) => k.bufs.len(),
                StepKind::Fused(n) => n.len() * 4 + 8,
                StepKind::Copy { .. } => 0,
            })
            .max()
            .unwrap_or(0)
            .max(1);
        let bufs = b.build_array_alloca(p, i64t.const_int(max_bufs as u64 + 64, false), "bufs")?;
        let consts = cg.consts.clone();
        let mut kernel_steps = Vec::new();
        for step in &plan.steps {
            if let StepKind::Kernel(k) = &step.kind {
                kernel_steps.push(k.func);
            }
        }
        for f in kernel_steps {
            cg.declare(f);
        }
        let mut n_fused = 0usize;
        let addr = |b: &inkwell::builder::Builder<'c>, place: Place| -> Result<PointerValue<'c>> {
            Ok(match place {
                Place::Arena(off) => {
                    fused::elem_ptr(b, cx.i8_type().into(), arena, i64t.const_int(off, false))?
                }
                Place::Input(i) => {
                    let q = fused::elem_ptr(b, p.into(), inputs, i64t.const_int(i as u64, false))?;
                    b.build_load(p, q, "in")?.into_pointer_value()
                }
                Place::Output(i) => {
                    let q = fused::elem_ptr(b, p.into(), outputs, i64t.const_int(i as u64, false))?;
                    b.build_load(p, q, "out")?.into_pointer_value()
                }
                Place::Const(i) => consts[i].as_pointer_value(),
                Place::Null => p.const_null(),
            })
        };
        let mut fail_edges: Vec<(IntValue<'c>, inkwell::basic_block::BasicBlock<'c>)> = Vec::new();
        for (si, step) in plan.steps.iter().enumerate() {
            match &step.kind {
                StepKind::Kernel(k) => {
                    let f = cg.kernels[k.func];
                    let words: Vec<_> = k
                        .params
                        .iter()
                        .map(|&w| i64t.const_int(w as u64, true))
                        .collect();
                    let arr = i64t.const_array(&words);
                    let pg =
                        cg.m.add_global(arr.get_type(), None, &format!("pare.params.{si}"));
                    pg.set_initializer(&arr);
                    pg.set_constant(true);
                    pg.set_linkage(Linkage::Private);
                    pg.set_unnamed_addr(true);
                    for (bi, op) in k.bufs.iter().enumerate() {
                        let a = addr(&b, plan.place_of(step, *op))?;
                        let q =
                            fused::elem_ptr(&b, p.into(), bufs, i64t.const_int(bi as u64, false))?;
                        b.build_store(q, a)?;
                    }
                    let st = b.build_call(
                        f,
                        &[pg.as_pointer_value().into(), bufs.into(), threads.into()],
                        "st",
                    )?;
                    let st = basic(st)?.into_int_value();
                    let bad =
                        b.build_int_compare(IntPredicate::NE, st, i32t.const_zero(), "bad")?;
                    let next = cx.append_basic_block(run, &format!("s{si}"));
                    b.build_conditional_branch(bad, fail, next)?;
                    fail_edges.push((st, b.get_insert_block().expect("block")));
                    b.position_at_end(next);
                }
                StepKind::Fused(nodes) => {
                    let g = &plan.graph;
                    let ins = plan::group_inputs(g, nodes);
                    let outs = plan::group_outputs(g, nodes, &plan.root);
                    let name = format!("pare.fused.{n_fused}");
                    n_fused += 1;
                    let (f, sig) = fused::emit(cx, &cg.m, g, nodes, ins, outs, &name)
                        .map_err(|e| e.at(step))?;
                    for (bi, v) in sig.inputs.iter().chain(sig.outputs.iter()).enumerate() {
                        let a = addr(&b, plan.place_of(step, Operand::Value(*v)))?;
                        let q =
                            fused::elem_ptr(&b, p.into(), bufs, i64t.const_int(bi as u64, false))?;
                        b.build_store(q, a)?;
                    }
                    let outer = i64t.const_int(sig.outer, false);
                    if sig.numel == 0 {
                        // Empty tensors: nothing to compute (the loop nest runs its body at
                        // least once per row).
                    } else if sig.numel >= PARALLEL_MIN_ELEMS && sig.outer > 1 {
                        let fp = f.as_global_value().as_pointer_value();
                        b.build_call(
                            par_for,
                            &[fp.into(), bufs.into(), outer.into(), threads.into()],
                            "",
                        )?;
                    } else {
                        b.build_call(
                            f,
                            &[bufs.into(), i64t.const_zero().into(), outer.into()],
                            "",
                        )?;
                    }
                }
                StepKind::Copy { from, to, bytes } => {
                    let src = addr(&b, plan.place_of(step, *from))?;
                    let dst = addr(&b, plan.place_of(step, *to))?;
                    b.build_memcpy(dst, 1, src, 1, i64t.const_int(*bytes, false))?;
                }
            }
        }
        b.build_return(Some(&i32t.const_zero()))?;
        for (st, bb) in &fail_edges {
            status_phi.add_incoming(&[(st, *bb)]);
        }
        if fail_edges.is_empty() {
            // No kernel can fail: the failure block has no predecessors; drop it.
            fail.remove_from_function()
                .map_err(|_| BackendError::Llvm("cannot remove the unused failure block".into()))?;
        }
    }
    // Descriptor and api().
    let g = &plan.graph;
    let (ins, nin) = cg.descriptors(g.inputs(), "inputs")?;
    let (outs, nout) = cg.descriptors(g.outputs(), "outputs")?;
    let name = cg.cstring(&ex.name, "pare.name");
    let triple = cg.cstring(&ex.triple, "pare.triple");
    let feats = cg.cstring(&ex.cpu_features, "pare.features");
    let api_t = cx.struct_type(
        &[
            i32t.into(),
            i32t.into(),
            i32t.into(),
            i32t.into(),
            p.into(),
            p.into(),
            p.into(),
            i64t.into(),
            p.into(),
            p.into(),
            p.into(),
            p.into(),
            p.into(),
        ],
        false,
    );
    let api_val = api_t.const_named_struct(&[
        i32t.const_int(pare_runtime::abi::ABI_VERSION as u64, false)
            .into(),
        i32t.const_int(nin as u64, false).into(),
        i32t.const_int(nout as u64, false).into(),
        i32t.const_zero().into(),
        name.as_pointer_value().into(),
        ins.as_pointer_value().into(),
        outs.as_pointer_value().into(),
        i64t.const_int(plan.arena_bytes, false).into(),
        triple.as_pointer_value().into(),
        feats.as_pointer_value().into(),
        create.as_global_value().as_pointer_value().into(),
        run.as_global_value().as_pointer_value().into(),
        destroy.as_global_value().as_pointer_value().into(),
    ]);
    let api_g =
        cg.m.add_global(api_t, None, &format!("{}.api.data", ex.prefix));
    api_g.set_initializer(&api_val.as_basic_value_enum());
    api_g.set_constant(true);
    api_g.set_linkage(Linkage::Private);
    let api_f =
        cg.m.add_function(&format!("{}_api", ex.prefix), p.fn_type(&[], false), None);
    {
        let b = cx.create_builder();
        let e = cx.append_basic_block(api_f, "entry");
        b.position_at_end(e);
        b.build_return(Some(&api_g.as_pointer_value()))?;
    }
    if ex.main {
        let exe_main = cg.extern_fn(
            "pare_exe_main",
            i32t.fn_type(&[i32t.into(), p.into(), p.into()], false),
        );
        let main =
            cg.m.add_function("main", i32t.fn_type(&[i32t.into(), p.into()], false), None);
        let b = cx.create_builder();
        let e = cx.append_basic_block(main, "entry");
        b.position_at_end(e);
        let argc = main.get_nth_param(0).expect("argc");
        let argv = main.get_nth_param(1).expect("argv");
        let r = b.build_call(
            exe_main,
            &[argc.into(), argv.into(), api_g.as_pointer_value().into()],
            "r",
        )?;
        b.build_return(Some(&basic(r)?))?;
    }
    let _: Option<BasicMetadataValueEnum> = None;
    Ok(cg.m)
}

fn basic(c: inkwell::values::CallSiteValue<'_>) -> Result<inkwell::values::BasicValueEnum<'_>> {
    match c.try_as_basic_value() {
        inkwell::values::ValueKind::Basic(v) => Ok(v),
        _ => Err(BackendError::Llvm("call returned void".into())),
    }
}

impl BackendError {
    /// Adds the step's node and op to an error.
    pub fn at(self, step: &Step) -> BackendError {
        match self {
            e @ BackendError::UnsupportedNode { .. } => e,
            other => BackendError::UnsupportedNode {
                node: step.node.clone(),
                op: step.op.clone(),
                why: other.to_string(),
            },
        }
    }
}
