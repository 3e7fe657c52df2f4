//! From a graph to files: LLVM optimization, object emission, the C header, and linking with
//! the embedded runtime into `.a`, `.so` or an executable. Every output is written to a
//! temporary file in the destination directory and renamed into place, so a failed or
//! interrupted compile never leaves a half-written artifact.

use crate::codegen::{self, Exports};
use crate::plan::{Plan, StepKind};
use crate::{lower, prepare, BackendError, CompileStats, Options, Result, RUNTIME_LIB};
use inkwell::context::Context;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine,
    TargetTriple,
};
use inkwell::OptimizationLevel;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// Relocatable object with the model (link it with `libpare_runtime.a`, written alongside).
    Obj,
    /// Static archive: the model and the runtime in one `.a`.
    Lib,
    /// Shared library exporting only the model's C ABI.
    So,
    /// Standalone executable (`--inputs`, `--out`, `--bench`, `--threads`).
    Exe,
    /// Optimized LLVM IR text.
    LlvmIr,
}

impl Emit {
    /// Parses `obj|lib|so|exe|llvm-ir`.
    pub fn parse(s: &str) -> Option<Emit> {
        Some(match s {
            "obj" => Emit::Obj,
            "lib" => Emit::Lib,
            "so" => Emit::So,
            "exe" => Emit::Exe,
            "llvm-ir" => Emit::LlvmIr,
            _ => return None,
        })
    }
}

/// Code generation target.
#[derive(Clone, Debug)]
pub struct Target {
    /// LLVM triple; `None` is the host.
    pub triple: Option<String>,
    /// CPU name (`native` = the host CPU, or e.g. `x86-64-v3`, `znver3`).
    pub cpu: String,
    /// Extra LLVM feature string (`+avx2,+fma`).
    pub features: String,
}

impl Target {
    /// The host CPU with all its features.
    pub fn host() -> Target {
        Target {
            triple: None,
            cpu: "native".into(),
            features: String::new(),
        }
    }
}

/// CPU features the runtime checks before running an artifact (subset that matters for the
/// code LLVM generates for x86-64).
const CHECKED_FEATURES: &[&str] = &[
    "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512dq", "avx512vl",
];

fn machine(t: &Target, level: u8) -> Result<(TargetMachine, String, String)> {
    let host = t.triple.is_none();
    if host {
        LlvmTarget::initialize_native(&InitializationConfig::default())
            .map_err(BackendError::Llvm)?;
    } else {
        LlvmTarget::initialize_all(&InitializationConfig::default());
    }
    let triple = match &t.triple {
        Some(s) => TargetTriple::create(s),
        None => TargetMachine::get_default_triple(),
    };
    let target = LlvmTarget::from_triple(&triple)
        .map_err(|e| BackendError::Llvm(format!("target {}: {e}", triple)))?;
    let (cpu, mut features) = if t.cpu == "native" && host {
        (
            TargetMachine::get_host_cpu_name().to_string(),
            TargetMachine::get_host_cpu_features().to_string(),
        )
    } else {
        (t.cpu.clone(), String::new())
    };
    if !t.features.is_empty() {
        if !features.is_empty() {
            features.push(',');
        }
        features.push_str(&t.features);
    }
    let level = match level {
        0 => OptimizationLevel::None,
        1 => OptimizationLevel::Less,
        2 => OptimizationLevel::Default,
        _ => OptimizationLevel::Aggressive,
    };
    let tm = target
        .create_target_machine(
            &triple,
            &cpu,
            &features,
            level,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| {
            BackendError::Llvm(format!(
                "cannot create a target machine for {triple} cpu {cpu}"
            ))
        })?;
    // The features the generated code assumes: what the machine enables among CHECKED_FEATURES.
    let fs = tm.get_feature_string().to_str().unwrap_or("").to_string();
    let enabled: Vec<&str> = CHECKED_FEATURES
        .iter()
        .copied()
        .filter(|f| fs.split(',').any(|x| x == format!("+{f}")))
        .collect();
    let triple_s = triple.as_str().to_string_lossy().into_owned();
    Ok((tm, triple_s, enabled.join(",")))
}

/// A temporary path next to `dest` (same file system, so the final rename is atomic).
fn temp_beside(dest: &Path) -> Result<tempfile::TempPath> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let f = tempfile::Builder::new()
        .prefix(".pare-")
        .tempfile_in(dir)
        .map_err(|e| BackendError::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
    Ok(f.into_temp_path())
}

fn persist(tmp: tempfile::TempPath, dest: &Path) -> Result<()> {
    tmp.persist(dest).map_err(|e| BackendError::Io {
        path: dest.display().to_string(),
        source: e.error,
    })
}

fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_beside(dest)?;
    std::fs::write(&tmp, bytes).map_err(|e| BackendError::Io {
        path: dest.display().to_string(),
        source: e,
    })?;
    persist(tmp, dest)
}

fn run_tool(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| {
        BackendError::Link(format!(
            "cannot run {shown}: {e} (install a C compiler: apt-get install gcc)"
        ))
    })?;
    if !out.status.success() {
        return Err(BackendError::Link(format!(
            "{shown} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

fn c_compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn archiver() -> Option<PathBuf> {
    for c in ["/usr/lib/llvm-22/bin/llvm-ar", "/usr/bin/llvm-ar-22"] {
        if Path::new(c).is_file() {
            return Some(PathBuf::from(c));
        }
    }
    None
}

/// The C header of an artifact compiled with `prefix`.
pub fn header(prefix: &str, plan: &Plan, name: &str) -> String {
    let g = &plan.graph;
    let guard = format!("{}_H", prefix.to_uppercase());
    let mut io = String::new();
    for (which, vals) in [("input", g.inputs()), ("output", g.outputs())] {
        for (i, &v) in vals.iter().enumerate() {
            let val = g.value(v);
            let shape = crate::plan::shape(g, v).unwrap_or_default();
            let dt = val.ty.dtype.map(|d| d.name()).unwrap_or("?");
            io.push_str(&format!(
                " *   {which} {i}: \"{}\" {dt}{:?} ({} bytes)\n",
                val.name,
                shape,
                crate::plan::bytes(g, v).unwrap_or(0)
            ));
        }
    }
    format!(
        r#"/* {prefix}.h: C interface of the model "{name}", generated by pare compile.
 *
{io} *   activation arena: {arena} bytes per context
 *
 * Use: void *ctx = {prefix}_create(0);                  (0 = all cores; NULL if out of memory)
 *      int32_t st = {prefix}_run(ctx, inputs, outputs);  (0 = success)
 *      {prefix}_destroy(ctx);
 * inputs[i] / outputs[i] point at dense row-major buffers of the sizes above. A context runs
 * one inference at a time; create one per thread for concurrent inferences.
 * Link: the .so alone; or the .a with -lpthread -ldl -lm; or the .o with libpare_runtime.a.
 */
#ifndef {guard}
#define {guard}

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#ifndef PARE_MODEL_ABI_TYPES
#define PARE_MODEL_ABI_TYPES
/* dtype codes are ONNX TensorProto codes: 1 float, 2 uint8, 3 int8, 6 int32, 7 int64, 9 bool,
 * 10 float16, 11 double. */
typedef struct PareTensorInfo {{
    const char *name;
    int32_t dtype;
    int32_t rank;
    const int64_t *shape;
    size_t bytes;
}} PareTensorInfo;

typedef struct PareModelApi {{
    uint32_t abi_version; /* {abi} */
    uint32_t num_inputs;
    uint32_t num_outputs;
    uint32_t reserved;
    const char *name;
    const PareTensorInfo *inputs;
    const PareTensorInfo *outputs;
    uint64_t arena_bytes;
    const char *target_triple;
    const char *cpu_features; /* comma-separated, e.g. "avx,avx2,fma" */
    void *(*create)(int32_t threads);
    int32_t (*run)(void *ctx, const void *const *inputs, void *const *outputs);
    void (*destroy)(void *ctx);
}} PareModelApi;
#endif

const PareModelApi *{prefix}_api(void);
void *{prefix}_create(int32_t threads);
int32_t {prefix}_run(void *ctx, const void *const *inputs, void *const *outputs);
void {prefix}_destroy(void *ctx);

#ifdef __cplusplus
}}
#endif

#endif /* {guard} */
"#,
        arena = plan.arena_bytes,
        abi = pare_runtime::abi::ABI_VERSION,
    )
}

/// Compiles `g` (an imported graph, possibly with symbolic dims) and writes `out`. Returns
/// statistics on the plan and the time spent.
pub fn emit_artifact(
    g: &pare_ir::Graph,
    opts: &Options,
    emit: Emit,
    out: &Path,
) -> Result<CompileStats> {
    let t0 = Instant::now();
    let mut g = g.clone();
    prepare(&mut g, opts)?;
    let prepare_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let plan = lower::build_plan(&g)?;
    let mut stats = plan_stats(&plan);
    stats.prepare_s = prepare_s;
    let cx = Context::create();
    let (tm, triple, features) = machine(&opts.target, opts.opt_level)?;
    let name = g.name.clone();
    let ex = Exports {
        prefix: opts.prefix.clone(),
        name: if name.is_empty() {
            opts.prefix.clone()
        } else {
            name.clone()
        },
        triple: triple.clone(),
        cpu_features: features,
        main: emit == Emit::Exe,
    };
    let module = codegen::emit(&cx, &plan, &ex)?;
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    module
        .verify()
        .map_err(|e| BackendError::Llvm(format!("generated module does not verify: {e}")))?;
    stats.lower_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let po = PassBuilderOptions::create();
    po.set_loop_vectorization(true);
    po.set_loop_slp_vectorization(true);
    po.set_loop_unrolling(true);
    po.set_loop_interleaving(true);
    let level = opts.opt_level.min(3);
    module
        .run_passes(&format!("default<O{level}>"), &tm, po)
        .map_err(|e| BackendError::Llvm(e.to_string()))?;
    let host = opts.target.triple.is_none()
        || opts.target.triple.as_deref()
            == Some(
                &TargetMachine::get_default_triple()
                    .as_str()
                    .to_string_lossy(),
            );
    if emit == Emit::LlvmIr {
        write_atomic(out, module.print_to_string().to_bytes())?;
        stats.llvm_s = t2.elapsed().as_secs_f64();
        return Ok(stats);
    }
    let obj = tm
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| BackendError::Llvm(e.to_string()))?;
    stats.llvm_s = t2.elapsed().as_secs_f64();
    let dir = tempfile::tempdir().map_err(|e| BackendError::Io {
        path: "temporary directory".into(),
        source: e,
    })?;
    let obj_path = dir.path().join("model.o");
    let rt_path = dir.path().join("libpare_runtime.a");
    let io = |p: &Path, e| BackendError::Io {
        path: p.display().to_string(),
        source: e,
    };
    std::fs::write(&obj_path, obj.as_slice()).map_err(|e| io(&obj_path, e))?;
    std::fs::write(&rt_path, RUNTIME_LIB).map_err(|e| io(&rt_path, e))?;
    if !host && emit != Emit::Obj {
        return Err(BackendError::Unsupported(format!(
            "--emit {emit:?} for target {triple}: the embedded runtime is built for the host; emit obj or llvm-ir and link with a runtime built for the target"
        )));
    }
    let header_for = |out: &Path| -> Result<()> {
        let h = out.with_extension("h");
        let h = if h == out {
            out.with_extension("model.h")
        } else {
            h
        };
        write_atomic(&h, header(&opts.prefix, &plan, &ex.name).as_bytes())
    };
    match emit {
        Emit::Obj => {
            write_atomic(out, obj.as_slice())?;
            let rt = out.with_file_name("libpare_runtime.a");
            write_atomic(&rt, RUNTIME_LIB)?;
            header_for(out)?;
        }
        Emit::Lib => {
            let ar = archiver().ok_or_else(|| {
                BackendError::Link("llvm-ar (LLVM 22) not found: apt-get install llvm-22".into())
            })?;
            let tmp = temp_beside(out)?;
            let _ = std::fs::remove_file(&tmp);
            run_tool(
                Command::new(ar)
                    .arg("qcsL")
                    .arg(&*tmp)
                    .arg(&obj_path)
                    .arg(&rt_path),
            )?;
            persist(tmp, out)?;
            header_for(out)?;
        }
        Emit::So => {
            let map = dir.path().join("exports.map");
            let script = format!(
                "{{ global: {p}_api; {p}_create; {p}_run; {p}_destroy; local: *; }};\n",
                p = opts.prefix
            );
            std::fs::write(&map, script).map_err(|e| io(&map, e))?;
            let tmp = temp_beside(out)?;
            run_tool(
                Command::new(c_compiler())
                    .arg("-shared")
                    .arg("-o")
                    .arg(&*tmp)
                    .arg(format!("-Wl,--version-script={}", map.display()))
                    .arg("-Wl,--gc-sections")
                    .arg("-static-libgcc")
                    .arg(&obj_path)
                    .arg(&rt_path)
                    .args(["-lpthread", "-ldl", "-lm"]),
            )?;
            persist(tmp, out)?;
            header_for(out)?;
        }
        Emit::Exe => {
            let tmp = temp_beside(out)?;
            run_tool(
                Command::new(c_compiler())
                    .arg("-o")
                    .arg(&*tmp)
                    .arg("-Wl,--gc-sections")
                    .arg("-static-libgcc")
                    .arg(&obj_path)
                    .arg(&rt_path)
                    .args(["-lpthread", "-ldl", "-lm"]),
            )?;
            persist(tmp, out)?;
        }
        Emit::LlvmIr => unreachable!("handled above"),
    }
    Ok(stats)
}

fn plan_stats(plan: &Plan) -> CompileStats {
    let mut s = CompileStats {
        steps: plan.steps.len(),
        arena_bytes: plan.arena_bytes,
        peak_live_bytes: plan.peak_live_bytes,
        const_bytes: plan.consts.iter().map(|c| c.bytes.len() as u64).sum(),
        ..CompileStats::default()
    };
    let mut per: std::collections::BTreeMap<String, usize> = Default::default();
    for st in &plan.steps {
        match &st.kind {
            StepKind::Kernel(k) => {
                s.kernel_calls += 1;
                *per.entry(k.func.to_string()).or_default() += 1;
            }
            StepKind::Fused(n) => {
                s.fused_loops += 1;
                s.nodes_fused += n.len();
            }
            StepKind::Copy { .. } => {}
        }
    }
    s.views = plan.views;
    s.nodes_fused += plan.epilogue_folds;
    s.kernels = per.into_iter().collect();
    s
}
