//! The LLVM CPU backend on the real models: each model is compiled for the shapes of its
//! fixtures into a shared library, loaded with the runtime's loader, run on every fixture and
//! compared with the reference interpreter within 1e-4 of each output's scale (integers
//! exactly), the bound the interpreter itself meets against onnxruntime. All eleven compile:
//! the Silero models' sample-rate input is bound to the fixture's value, after which every If
//! (including those on the recurrent state's shape) folds away.

use pare_backend_llvm::{emit_artifact, Emit, Options};
use pare_ir::Tensor;
use pare_runtime::loader::Library;
use pare_runtime::npy::NpyArray;
use pare_tests::{cases, compare, data_set_dirs, read_data_set};
use std::time::Instant;

fn tensor_from(desc_dtype: pare_ir::DType, shape: &[i64], bytes: Vec<u8>) -> Tensor {
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    Tensor::from_raw(desc_dtype, shape, bytes.into()).expect("output tensor")
}

#[test]
fn compiled_real_models_match_the_interpreter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let interp = pare_interp::Interpreter::new();
    let mut failures = Vec::new();
    for c in cases() {
        let model =
            pare_onnx::load_model(&c.model, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let sets = data_set_dirs(&c.fixtures);
        let first = read_data_set(&sets[0], "input_").expect("inputs");
        let mut opts = Options::default();
        let names: Vec<String> = model
            .graph
            .inputs()
            .iter()
            .map(|&v| model.graph.value(v).name.clone())
            .collect();
        // A sample-rate input is a deployment constant: compile for the fixture's value.
        let bound: Vec<usize> = (0..names.len()).filter(|&i| names[i] == "sr").collect();
        for (i, (_, t)) in first.iter().enumerate() {
            if bound.contains(&i) {
                opts.input_values.insert(names[i].clone(), t.clone());
            } else {
                opts.input_shapes.insert(
                    names[i].clone(),
                    t.shape().iter().map(|&d| d as u64).collect(),
                );
            }
        }
        let so = dir.path().join(format!("lib{}.so", c.name));
        let t0 = Instant::now();
        let res = emit_artifact(&model.graph, &opts, Emit::So, &so);
        let compile_s = t0.elapsed().as_secs_f64();
        let stats = res.unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let lib = Library::open(&so, "pare_model").unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let mut sess = lib.session(2).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let info = lib.info().clone();
        let mut worst = 0f64;
        for d in &sets {
            let inputs: Vec<Tensor> = read_data_set(d, "input_")
                .expect("inputs")
                .into_iter()
                .map(|(_, t)| t)
                .collect();
            if inputs
                .iter()
                .enumerate()
                .filter(|(i, _)| !bound.contains(i))
                .map(|(_, t)| t)
                .zip(&info.inputs)
                .any(|(t, desc)| {
                    t.shape().iter().map(|&x| x as i64).collect::<Vec<_>>() != desc.shape
                })
            {
                // A fixture with other shapes needs another compile; the first set's shape is checked.
                continue;
            }
            let expected = interp
                .run(&model.graph, &inputs)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let run_inputs: Vec<&Tensor> = inputs
                .iter()
                .enumerate()
                .filter(|(i, _)| !bound.contains(i))
                .map(|(_, t)| t)
                .collect();
            let arrays: Vec<NpyArray> = run_inputs
                .iter()
                .zip(&info.inputs)
                .map(|(t, desc)| {
                    NpyArray::new(desc.dtype, desc.shape.clone(), t.raw().to_vec())
                        .expect("input array")
                })
                .collect();
            let outs: Vec<Vec<u8>> = sess
                .run_arrays(&arrays)
                .unwrap_or_else(|e| panic!("{} {}: {e}", c.name, d.display()))
                .into_iter()
                .map(|a| a.data)
                .collect();
            for ((e, desc), bytes) in expected.iter().zip(&info.outputs).zip(outs) {
                let got = tensor_from(e.dtype(), &desc.shape, bytes);
                let tol = if e.dtype().is_float() { 1e-4 } else { 0.0 };
                let scale = e
                    .to_f64_vec()
                    .map(|v| v.iter().fold(0f64, |m, x| m.max(x.abs())))
                    .unwrap_or(1.0)
                    .max(1e-6);
                match compare(e, &got, 0.0, tol * scale) {
                    Ok(a) => worst = worst.max(a.max_abs / scale),
                    Err(m) => failures.push(format!(
                        "{} {} output '{}': {m}",
                        c.name,
                        d.display(),
                        desc.name
                    )),
                }
            }
        }
        eprintln!(
            "{:<26} compiled in {:>5.2} s  {:>3} steps ({} kernels, {} fused loops)  arena {:>8} B  max|err|/scale {worst:.2e}",
            c.name, compile_s, stats.steps, stats.kernel_calls, stats.fused_loops, stats.arena_bytes
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
