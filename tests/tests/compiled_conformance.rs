//! ONNX backend node tests through the LLVM CPU backend.
//!
//! Every node test the interpreter passes (same enumeration as tests/conformance.rs:
//! `.cache/onnx-node` or `PARE_ONNX_NODE_DIR`, `PARE_NODE_FILTER`, tests whose ops pare
//! implements, imported and run in the interpreter on `test_data_set_0` within rtol 1e-3,
//! atol 1e-7) is compiled to a shared library (`Emit::So`, the default canonicalize pipeline,
//! `opt_level` 1) with its input shapes taken from `test_data_set_0`, loaded, run on those
//! inputs and compared with the expected outputs with the interpreter conformance tolerances.
//!
//! A test the backend does not claim (compile fails with `UnsupportedNode`, `Unsupported` or
//! `Dynamic`) is counted per op and printed. Any other compile error, panic, run error or
//! mismatch is a failure. A test whose operands the backend needs as constants (weights, axes,
//! pads, shapes: node tests pass them as inputs) is compiled a second time with every operand
//! after the first bound as a constant (`Options::input_values`), the form real models have.
//! The number of tests that compile and pass may only grow: see [`MIN_COMPILED`].
//!
//! Compiles run two at a time (rayon pool of 2) into one temporary directory. Tests whose
//! `test_data_set_0` files exceed [`MAX_DATA_BYTES`] are skipped to bound the run time (none
//! of onnx 1.22.0's do: the largest is 0.75 MB). The whole run takes about 30-60 s in the test
//! profile on 2 cores (most tests stop early as not claimed or are skipped).

use pare_backend_llvm::{emit_artifact, BackendError, Emit, Options};
use pare_ir::Tensor;
use pare_onnx::proto::{GraphProto, ModelProto};
use pare_runtime::loader::Library;
use pare_runtime::npy::NpyArray;
use pare_tests::{compare, read_data_set, repo_root};
use prost::Message;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Tests that compile and pass may only grow: raise this as the backend claims more.
const MIN_COMPILED: usize = 655;
/// The interpreter conformance tolerances (tests/conformance.rs).
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-7;
/// Tests whose `test_data_set_0` holds more bytes than this are skipped.
const MAX_DATA_BYTES: u64 = 4 << 20;

fn ops_of(g: &GraphProto, out: &mut BTreeSet<String>) {
    for n in &g.node {
        let d = n.domain.as_deref().unwrap_or("");
        let op = n.op_type.clone().unwrap_or_default();
        out.insert(if d.is_empty() || d == "ai.onnx" {
            op
        } else {
            format!("{d}::{op}")
        });
        for a in &n.attribute {
            for sub in a.g.iter().chain(a.graphs.iter()) {
                ops_of(sub, out);
            }
        }
    }
}

fn implemented() -> BTreeSet<String> {
    let mut s: BTreeSet<String> = pare_ir::Op::ALL.iter().map(|s| s.to_string()).collect();
    for extra in ["Constant", "Upsample", "Scatter"] {
        s.insert(extra.into());
    }
    s
}

enum Outcome {
    /// Not part of this test: the category (unimplemented op, interpreter fails, too large).
    Skip(&'static str),
    /// The backend does not compile it: the op it names (or the test's ops) and why.
    NotClaimed(String, String),
    Pass,
    /// Compiling failed with an error other than "not supported", or panicked.
    CompileFail(String),
    /// Loading, running or comparing failed.
    Fail(String),
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().and_then(|e| e.metadata().ok()))
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The ops of a node test's model (`domain::Op` outside the default domain).
fn model_ops(model_path: &Path) -> Option<BTreeSet<String>> {
    let bytes = std::fs::read(model_path).ok()?;
    let m = ModelProto::decode(bytes.as_slice()).ok()?;
    let mut ops = BTreeSet::new();
    if let Some(g) = &m.graph {
        ops_of(g, &mut ops);
    }
    Some(ops)
}

fn run_test(
    dir: &Path,
    name: &str,
    ops: Option<&BTreeSet<String>>,
    implemented: &BTreeSet<String>,
    out_dir: &Path,
) -> Outcome {
    let model_path = dir.join("model.onnx");
    let Some(ops) = ops else {
        return Outcome::Skip("model does not decode");
    };
    if ops.iter().any(|o| !implemented.contains(o)) {
        return Outcome::Skip("needs an op pare does not implement");
    }
    let set = dir.join("test_data_set_0");
    if !set.is_dir() {
        return Outcome::Skip("no test_data_set_0");
    }
    if dir_bytes(&set) > MAX_DATA_BYTES {
        return Outcome::Skip("test data too large");
    }
    // The interpreter must pass it.
    let prepared = std::panic::catch_unwind(|| -> Result<_, String> {
        let model = pare_onnx::load_model(&model_path, &Default::default())
            .map_err(|e| format!("import: {e}"))?;
        let inputs = read_data_set(&set, "input_")?;
        let expected = read_data_set(&set, "output_")?;
        if inputs.len() != model.graph.inputs().len() {
            return Err("input count".into());
        }
        let tensors: Vec<Tensor> = inputs.into_iter().map(|(_, t)| t).collect();
        let got = pare_interp::Interpreter::with_threads(1)
            .run(&model.graph, &tensors)
            .map_err(|e| e.to_string())?;
        if got.len() != expected.len() {
            return Err("output count".into());
        }
        for ((_, e), g) in expected.iter().zip(&got) {
            compare(e, g, RTOL, ATOL)?;
        }
        Ok((model, tensors, expected))
    });
    let (model, inputs, expected) = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(_)) | Err(_) => return Outcome::Skip("the interpreter fails it"),
    };

    // First as the test states it (every operand a run-time input); if the backend does not
    // claim that form, again with every operand after the first bound as a constant, the form
    // weights, axes, pads and shapes take in real models.
    let so = out_dir.join(format!("lib{name}.so"));
    let mut n_run = inputs.len();
    let mut last = None;
    for bind_rest in [false, true] {
        if bind_rest && inputs.len() < 2 {
            break;
        }
        let mut opts = Options {
            pipeline: "canonicalize".into(),
            opt_level: 1,
            ..Options::default()
        };
        for (i, (&v, t)) in model.graph.inputs().iter().zip(&inputs).enumerate() {
            let vname = model.graph.value(v).name.clone();
            if bind_rest && i > 0 {
                opts.input_values.insert(vname, t.clone());
            } else {
                opts.input_shapes
                    .insert(vname, t.shape().iter().map(|&d| d as u64).collect());
            }
        }
        let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            emit_artifact(&model.graph, &opts, Emit::So, &so)
        }));
        match compiled {
            Ok(Ok(_)) => {
                n_run = if bind_rest { 1 } else { inputs.len() };
                last = None;
                break;
            }
            Ok(Err(BackendError::UnsupportedNode { op, why, .. })) => {
                last = Some(Outcome::NotClaimed(op, why));
            }
            Ok(Err(e @ (BackendError::Unsupported(_) | BackendError::Dynamic { .. }))) => {
                let key = ops.iter().cloned().collect::<Vec<_>>().join("+");
                last = Some(Outcome::NotClaimed(key, e.to_string()));
            }
            Ok(Err(e)) => return Outcome::CompileFail(format!("compile: {e}")),
            Err(p) => return Outcome::CompileFail(format!("compile panics: {}", panic_message(p))),
        }
    }
    if let Some(o) = last {
        return o;
    }
    let inputs = &inputs[..n_run];

    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<(), String> {
        let lib = Library::open(&so, "pare_model").map_err(|e| format!("load: {e}"))?;
        let info = lib.info().clone();
        let mut sess = lib.session(1).map_err(|e| format!("session: {e}"))?;
        if info.inputs.len() != inputs.len() || info.outputs.len() != expected.len() {
            return Err(format!(
                "{} inputs / {} outputs compiled, test has {} / {}",
                info.inputs.len(),
                info.outputs.len(),
                inputs.len(),
                expected.len()
            ));
        }
        let arrays = inputs
            .iter()
            .zip(&info.inputs)
            .map(|(t, d)| {
                NpyArray::new(d.dtype, d.shape.clone(), t.raw().to_vec())
                    .map_err(|e| format!("input '{}': {e}", d.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outs = sess.run_arrays(&arrays).map_err(|e| format!("run: {e}"))?;
        for (i, ((oname, e), a)) in expected.iter().zip(outs).enumerate() {
            let shape: Vec<usize> = a.shape.iter().map(|&d| d as usize).collect();
            let got = Tensor::from_raw(e.dtype(), shape, a.data.into())
                .map_err(|err| format!("output {i} '{oname}': {err}"))?;
            compare(e, &got, RTOL, ATOL).map_err(|m| format!("output {i} '{oname}': {m}"))?;
        }
        Ok(())
    }));
    let _ = std::fs::remove_file(&so);
    let _ = std::fs::remove_file(so.with_extension("h"));
    match ran {
        Ok(Ok(())) => Outcome::Pass,
        Ok(Err(e)) => Outcome::Fail(e),
        Err(p) => Outcome::Fail(format!("PANIC: {}", panic_message(p))),
    }
}

#[test]
fn compiled_onnx_node_tests() {
    let t0 = Instant::now();
    let root = repo_root();
    let dir = std::env::var_os("PARE_ONNX_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or(root.join(".cache/onnx-node"));
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/fetch_conformance.sh first",
        dir.display()
    );
    let mut tests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("readable node-test directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    tests.sort();
    let filtered = std::env::var("PARE_NODE_FILTER").ok();
    if let Some(filter) = &filtered {
        tests.retain(|p| p.to_string_lossy().contains(filter));
    }
    let implemented = implemented();
    let out_dir = tempfile::tempdir().expect("tempdir");
    std::panic::set_hook(Box::new(|_| {}));
    let jobs = std::env::var("PARE_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .stack_size(256 << 20)
        .build()
        .expect("thread pool");
    let results: Vec<(String, String, Outcome)> = pool.install(|| {
        tests
            .par_iter()
            .map(|t| {
                let name = t
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                let ts = Instant::now();
                let ops = model_ops(&t.join("model.onnx"));
                if std::env::var_os("PARE_VERBOSE").is_some() {
                    eprintln!("{name}: start");
                }
                let o = run_test(t, &name, ops.as_ref(), &implemented, out_dir.path());
                if std::env::var_os("PARE_VERBOSE").is_some() {
                    eprintln!("{name}: {:.2} s", ts.elapsed().as_secs_f64());
                }
                let ops = ops
                    .map(|s| s.into_iter().collect::<Vec<_>>().join("+"))
                    .unwrap_or_default();
                (name, ops, o)
            })
            .collect()
    });
    let _ = std::panic::take_hook();

    let (mut passed, mut run_failed, mut compile_failed) = (0usize, 0usize, 0usize);
    let mut skipped: BTreeMap<&str, usize> = BTreeMap::new();
    let mut not_claimed: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, ops, o) in &results {
        match o {
            Outcome::Skip(why) => *skipped.entry(why).or_default() += 1,
            Outcome::NotClaimed(op, why) => not_claimed
                .entry(op.clone())
                .or_default()
                .push((name.clone(), why.clone())),
            Outcome::Pass => passed += 1,
            Outcome::CompileFail(e) | Outcome::Fail(e) => {
                if matches!(o, Outcome::CompileFail(_)) {
                    compile_failed += 1;
                } else {
                    run_failed += 1;
                }
                failures.push(format!("{name} ({ops}): {e}"));
            }
        }
    }
    let n_not_claimed: usize = not_claimed.values().map(Vec::len).sum();
    let mut by_count: Vec<(&String, &Vec<(String, String)>)> = not_claimed.iter().collect();
    by_count.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    eprintln!("not claimed by the backend, by op (count, op, first test: why):");
    for (op, v) in &by_count {
        eprintln!(
            "  {:>4}  {op}  ({}: {})",
            v.len(),
            v[0].0,
            v[0].1.chars().take(140).collect::<String>()
        );
    }
    let skipped_s: Vec<String> = skipped.iter().map(|(w, n)| format!("{n} {w}")).collect();
    eprintln!(
        "compiled_conformance: {} node tests; skipped {} ({}); compiled {} ({compile_failed} failed \
         to compile), passed {passed}, failed {run_failed}; not claimed {n_not_claimed}; {:.1} s",
        results.len(),
        skipped.values().sum::<usize>(),
        skipped_s.join(", "),
        passed + run_failed,
        t0.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} compiled node tests fail (test (ops): error):\n{}",
        failures.len(),
        failures.join("\n")
    );
    if filtered.is_none() {
        assert!(
            passed >= MIN_COMPILED,
            "{passed} node tests compile and pass, fewer than the ratchet {MIN_COMPILED}"
        );
    }
}
