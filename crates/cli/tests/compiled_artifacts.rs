//! `pare compile` end to end through the CLI, for every `--emit` kind, on a real model: the
//! executable reads the fixture, writes `.npy` outputs that match the interpreter and prints the
//! `--bench` line; the C example (examples/c-api) builds against the `.so`, the `.a` and the
//! `.o` + runtime archive and runs; the LLVM IR is text with the exported functions.

use pare_tests::{cases, compare, data_set_dirs, read_data_set};
use std::path::{Path, PathBuf};
use std::process::Command;

fn pare() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pare"))
}

fn repo() -> PathBuf {
    pare_tests::repo_root()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn have_cc() -> bool {
    Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn compile(model: &Path, emit: &str, out: &Path, shape: &str) -> String {
    run(Command::new(pare())
        .arg("compile")
        .arg(model)
        .args(["--emit", emit, "--shape", shape])
        .arg("-o")
        .arg(out))
}

/// The `.npy` files an executable wrote to `out_dir` match the interpreter's outputs of `model`
/// on `inputs` within 1e-4 of each output's scale.
fn assert_outputs_match(model_path: &Path, inputs: &[(String, pare_ir::Tensor)], out_dir: &Path) {
    let model = pare_onnx::load_model(model_path, &Default::default()).expect("load");
    let tensors: Vec<_> = inputs.iter().map(|(_, t)| t.clone()).collect();
    let expected = pare_interp::Interpreter::new()
        .run(&model.graph, &tensors)
        .expect("interpreter");
    for (&v, e) in model.graph.outputs().iter().zip(&expected) {
        let name: String = model
            .graph
            .value(v)
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let got = pare_ir::npy::from_npy(
            &std::fs::read(out_dir.join(format!("{name}.npy"))).expect("output npy"),
        )
        .expect("npy");
        let scale = e
            .to_f64_vec()
            .unwrap()
            .iter()
            .fold(0f64, |m, x| m.max(x.abs()))
            .max(1e-6);
        compare(e, &got, 0.0, 1e-4 * scale).unwrap_or_else(|m| panic!("exe output {name}: {m}"));
    }
}

#[test]
fn every_emit_kind_works_on_a_real_model() {
    if !have_cc() {
        eprintln!("skipped: no C compiler (cc)");
        return;
    }
    let c = cases()
        .into_iter()
        .find(|c| c.name == "ocr-cls")
        .expect("ocr-cls fixture");
    let ds = &data_set_dirs(&c.fixtures)[0];
    let inputs = read_data_set(ds, "input_").expect("inputs");
    let shape = format!(
        "x={}",
        inputs[0]
            .1
            .shape()
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // exe: outputs match the interpreter; --bench prints the documented line.
    let exe = d.join("model");
    let report = compile(&c.model, "exe", &exe, &shape);
    assert!(report.contains("arena"), "{report}");
    let out_dir = d.join("out");
    run(Command::new(&exe)
        .arg("--inputs")
        .arg(ds)
        .arg("--out")
        .arg(&out_dir));
    assert_outputs_match(&c.model, &inputs, &out_dir);
    let bench =
        run(Command::new(&exe)
            .arg("--inputs")
            .arg(ds)
            .args(["--bench", "3", "--threads", "1"]));
    let line = bench
        .lines()
        .find(|l| l.starts_with("median_ms="))
        .expect("bench line");
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(parts.len(), 2, "{line}");
    assert!(
        parts[0]
            .trim_start_matches("median_ms=")
            .parse::<f64>()
            .is_ok(),
        "{line}"
    );
    assert!(
        parts[1].starts_with("p90_ms=") && parts[1][7..].parse::<f64>().is_ok(),
        "{line}"
    );

    // so: the C example links it and runs.
    let so = d.join("libmodel.so");
    compile(&c.model, "so", &so, &shape);
    assert!(d.join("libmodel.h").is_file(), "header next to the .so");
    let text = run(Command::new("sh")
        .arg(repo().join("examples/c-api/run.sh"))
        .arg(&so)
        .args(["pare_model", "1"]));
    assert!(text.contains("ran in"), "{text}");

    // lib: one archive with the runtime; the example links it with -lpthread -ldl -lm.
    let lib = d.join("libmodel.a");
    compile(&c.model, "lib", &lib, &shape);
    let demo = d.join("demo_static");
    let cdir = repo().join("examples/c-api");
    run(Command::new("cc")
        .args(["-std=c11", "-O2", "-DPARE_PREFIX=pare_model", "-I"])
        .arg(&cdir)
        .arg(cdir.join("main.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&demo));
    assert!(run(Command::new(&demo).arg("1")).contains("ran in"));

    // obj: the object plus the runtime archive written beside it.
    let obj = d.join("model.o");
    compile(&c.model, "obj", &obj, &shape);
    assert!(d.join("libpare_runtime.a").is_file());
    let demo = d.join("demo_obj");
    run(Command::new("cc")
        .args(["-std=c11", "-O2", "-DPARE_PREFIX=pare_model", "-I"])
        .arg(&cdir)
        .arg(cdir.join("main.c"))
        .arg(&obj)
        .arg(d.join("libpare_runtime.a"))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&demo));
    assert!(run(Command::new(&demo).arg("1")).contains("ran in"));

    // llvm-ir: text with the ABI functions.
    let ll = d.join("model.ll");
    compile(&c.model, "llvm-ir", &ll, &shape);
    let ir = std::fs::read_to_string(&ll).expect("ir");
    for f in [
        "@pare_model_run",
        "@pare_model_create",
        "@pare_model_api",
        "pare_k_conv",
    ] {
        assert!(ir.contains(f), "{f} missing from the LLVM IR");
    }
}

#[test]
fn compile_errors_name_the_problem() {
    let c = cases()
        .into_iter()
        .find(|c| c.name == "ocr-cls")
        .expect("ocr-cls fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("m");
    // Symbolic dims without --shape.
    let o = Command::new(pare())
        .arg("compile")
        .arg(&c.model)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("input 'x'") && err.contains("--shape"),
        "{err}"
    );
    assert!(!out.exists(), "no output on failure");
    // Unknown emit kind.
    let o = Command::new(pare())
        .arg("compile")
        .arg(&c.model)
        .args(["--emit", "dll", "-o"])
        .arg(&out)
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--emit dll"));
    let _ = std::fs::remove_dir_all(dir.path().join("none"));
}

#[test]
fn a_quantized_model_compiles() {
    // `quantize` writes weights as DequantizeLinear(int8 codes, scale); `pare compile` folds
    // them into f32 constants and the executable matches the interpreter on the int8 model.
    let c = cases()
        .into_iter()
        .find(|c| c.name == "ocr-cls")
        .expect("ocr-cls fixture");
    let ds = &data_set_dirs(&c.fixtures)[0];
    let inputs = read_data_set(ds, "input_").expect("inputs");
    let shape = format!(
        "x={}",
        inputs[0]
            .1
            .shape()
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let q = dir.path().join("int8.onnx");
    let report = run(Command::new(pare())
        .arg("opt")
        .arg(&c.model)
        .args([
            "--passes",
            "quantize(bits=8,weights-only=true,min-elements=256)",
            "-o",
        ])
        .arg(&q));
    assert!(report.contains("layers-quantized="), "{report}");
    let exe = dir.path().join("int8");
    compile(&q, "exe", &exe, &shape);
    let out_dir = dir.path().join("out");
    run(Command::new(&exe)
        .arg("--inputs")
        .arg(ds)
        .arg("--out")
        .arg(&out_dir));
    assert_outputs_match(&q, &inputs, &out_dir);
}
