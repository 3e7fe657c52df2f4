//! The `pare` binary as a user runs it.

use pare_tests::{compare, read_data_set, repo_root};
use std::path::PathBuf;
use std::process::{Command, Output};

fn pare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(args)
        .output()
        .expect("pare runs")
}

fn model(name: &str) -> PathBuf {
    let p = repo_root()
        .join(".cache/models")
        .join(format!("{name}.onnx"));
    assert!(
        p.is_file(),
        "{} missing: run python3 scripts/fetch_models.py",
        p.display()
    );
    p
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_lists_commands() {
    let o = pare(&["--help"]);
    assert!(o.status.success());
    let t = text(&o);
    for cmd in ["inspect", "run", "ir", "export", "opt", "passes", "eval"] {
        assert!(t.contains(cmd), "--help lacks {cmd}: {t}");
    }
}

#[test]
fn inspect_json_has_the_documented_keys() {
    let m = model("ocr-cls");
    let o = pare(&[
        "inspect",
        m.to_str().unwrap(),
        "--json",
        "--shape",
        "x=1x3x48x192",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    for k in ["inputs", "outputs", "ops", "params", "bytes", "flops"] {
        assert!(v.get(k).is_some(), "missing key {k}");
    }
    assert!(v["params"].as_u64().unwrap() > 100_000);
    assert!(v["flops"].as_u64().unwrap() > 1_000_000);
    assert!(v["ops"]["Conv"].as_u64().unwrap() > 0);
    assert_eq!(v["inputs"][0]["name"], "x");
}

#[test]
fn inspect_text_reports_counts() {
    let m = model("minilm");
    let o = pare(&["inspect", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("params") && t.contains("MatMul") && t.contains("input_ids"),
        "{t}"
    );
}

#[test]
fn run_writes_sanitized_npy_outputs_that_match_onnxruntime() {
    let m = model("minilm");
    let data = repo_root().join("tests/models/minilm/test_data_set_0");
    let out = tempfile::tempdir().unwrap();
    let o = pare(&[
        "run",
        m.to_str().unwrap(),
        "--inputs",
        data.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--print",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // `onnx::Shape_422` has ':' characters, which become '_'.
    let expected = read_data_set(&data, "output_").unwrap();
    for (name, e) in expected {
        let file = out.path().join(format!("{}.npy", name.replace(':', "_")));
        let bytes =
            std::fs::read(&file).unwrap_or_else(|_| panic!("{} not written", file.display()));
        let got = pare_ir::npy::from_npy(&bytes).unwrap();
        let scale = e
            .to_f64_vec()
            .unwrap()
            .iter()
            .fold(1e-6f64, |m, x| m.max(x.abs()));
        compare(&e, &got, 0.0, 1e-4 * scale).unwrap_or_else(|m| panic!("{name}: {m}"));
    }
}

#[test]
fn run_with_npy_inputs_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // Identity-like model: the silero sequence model needs three inputs; give them by name.
    let m = model("silero-vad-16k-sequence");
    let data = repo_root().join("tests/models/silero-vad-16k-sequence/test_data_set_0");
    let inputs = read_data_set(&data, "input_").unwrap();
    let mut args: Vec<String> = vec!["run".into(), m.to_str().unwrap().into(), "--inputs".into()];
    for (name, t) in inputs.iter().rev() {
        let p = dir.path().join(format!("{name}.npy"));
        std::fs::write(&p, pare_ir::npy::to_npy(t).unwrap()).unwrap();
        args.push(format!("{name}={}", p.display()));
    }
    args.extend([
        "--out".into(),
        dir.path().join("out").to_str().unwrap().into(),
    ]);
    let o = Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("out/speech_probs.npy").is_file());
}

#[test]
fn errors_name_the_problem() {
    let o = pare(&["inspect", "/nonexistent/model.onnx"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/model.onnx"), "{}", text(&o));

    let m = model("ocr-cls");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    std::fs::write(
        &p,
        pare_ir::npy::to_npy(&pare_ir::Tensor::from_vec(vec![2], vec![1i64, 2])).unwrap(),
    )
    .unwrap();
    let o = pare(&[
        "run",
        m.to_str().unwrap(),
        "--inputs",
        &format!("nope={}", p.display()),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no input named 'nope'"), "{}", text(&o));

    let o = pare(&[
        "run",
        m.to_str().unwrap(),
        "--inputs",
        p.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("'x'") && (t.contains("i64") || t.contains("dtype")),
        "{t}"
    );
}

#[test]
fn ir_prints_text_form() {
    let m = model("silero-vad-16k-sequence");
    let o = pare(&["ir", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.starts_with("graph @"), "{}", &t[..t.len().min(200)]);
    assert!(t.contains("LSTM("), "LSTM missing");
}

#[test]
fn opt_canonicalize_writes_a_model_and_reports_and_eval_compares() {
    let m = model("ocr-cls");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.onnx");
    let json = dir.path().join("r.json");
    let md = dir.path().join("r.md");
    let o = pare(&[
        "opt",
        m.to_str().unwrap(),
        "--passes",
        "canonicalize",
        "-o",
        out.to_str().unwrap(),
        "--report",
        json.to_str().unwrap(),
        "--report-md",
        md.to_str().unwrap(),
        "--verify-each",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("nodes"), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["pipeline"], "canonicalize");
    let before = r["before"]["nodes"].as_u64().unwrap();
    let after = r["after"]["nodes"].as_u64().unwrap();
    assert!(after <= before && before > 0, "{before} -> {after}");
    assert!(r["steps"][0]["steps"].as_array().unwrap().len() >= 5);
    let mdtext = std::fs::read_to_string(&md).unwrap();
    assert!(mdtext.contains("| before |") && mdtext.contains("fold-constants"));

    let inputs = repo_root().join("tests/models/ocr-cls");
    let o = pare(&[
        "eval",
        m.to_str().unwrap(),
        out.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--max-rel-err",
        "1e-5",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["samples"], 3);
    let out0 = &v["outputs"][0];
    for k in [
        "max_abs_err",
        "mean_abs_err",
        "cosine_min",
        "top1_agreement",
        "kl_divergence",
    ] {
        assert!(out0.get(k).is_some(), "missing {k}: {v}");
    }
    assert_eq!(out0["top1_agreement"], 1.0);
}

#[test]
fn opt_rejects_bad_pipelines_before_loading() {
    let o = pare(&[
        "opt",
        "missing.onnx",
        "--passes",
        "canonicalize,nope",
        "-o",
        "/tmp/x.onnx",
    ]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("unknown pass 'nope'") && t.contains("fold-constants"),
        "{t}"
    );
    let o = pare(&[
        "opt",
        "missing.onnx",
        "--passes",
        "dce(x=1",
        "-o",
        "/tmp/x.onnx",
    ]);
    assert!(
        text(&o).contains("pipeline syntax error at column"),
        "{}",
        text(&o)
    );
}

#[test]
fn passes_lists_the_registry() {
    let o = pare(&["passes"]);
    assert!(o.status.success());
    let t = text(&o);
    for p in [
        "canonicalize",
        "fold-constants",
        "dce",
        "cse",
        "fuse-attention",
    ] {
        assert!(t.contains(p), "missing {p}: {t}");
    }
    let o = pare(&["passes", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(v.as_array().unwrap().len() >= 11);
}

/// A model that `quantize(format=matmulnbits)` wrote (com.microsoft MatMulNBits) loads back
/// into `inspect` and `eval`; `compile` refuses it naming the node and the op.
#[test]
fn matmulnbits_models_load_back() {
    let m = model("ocr-cls");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nb.onnx");
    let o = pare(&[
        "opt",
        m.to_str().unwrap(),
        "--passes",
        "canonicalize,quantize(bits=4,format=matmulnbits,min-elements=1)",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = pare(&["inspect", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("MatMulNBits"), "{}", text(&o));
    let inputs = repo_root().join("tests/models/ocr-cls");
    let o = pare(&[
        "eval",
        m.to_str().unwrap(),
        out.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["samples"], 3);
    let exe = dir.path().join("nb.exe");
    let o = pare(&[
        "compile",
        out.to_str().unwrap(),
        "--emit",
        "exe",
        "-o",
        exe.to_str().unwrap(),
        "--shape",
        "x=2x3x48x192",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("MatMulNBits"), "{}", text(&o));
    assert!(!exe.exists());
}

#[test]
fn opt_sweep_measures_each_value_and_keeps_the_strongest_within_max_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model("ocr-cls");
    let fx = repo_root().join("tests/models/ocr-cls");
    let out = dir.path().join("q.onnx");
    let json = dir.path().join("sweep.json");
    let svg = dir.path().join("sweep.svg");
    let s = |p: &PathBuf| p.display().to_string();
    let run = |drop: &str, budget: &str| {
        pare(&[
            "opt",
            &s(&m),
            "--passes",
            "canonicalize,quantize(bits={bits},weights-only=true,min-elements=0),canonicalize",
            "--sweep",
            "bits=8,4",
            "--calib",
            &s(&fx.join("test_data_set_0")),
            "--eval",
            &s(&fx.join("test_data_set_2")),
            "--max-drop",
            drop,
            "--budget",
            budget,
            "-o",
            &s(&out),
            "--sweep-json",
            &s(&json),
            "--sweep-svg",
            &s(&svg),
        ])
    };
    let o = run("1%", "size=0.5");
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("valid json");
    let res = r["results"].as_array().expect("results");
    assert_eq!(res.len(), 2);
    // int4 is smaller than int8 (the trailing canonicalize keeps quantized weights quantized),
    // and both are smaller than the input model.
    let bytes = |i: usize| res[i]["weight_bytes"].as_u64().expect("bytes");
    let dense = r["input_model"]["weight_bytes"].as_u64().expect("dense");
    assert!(bytes(1) < bytes(0) && bytes(0) * 3 < dense, "{r}");
    // The chosen value meets the bound; -o holds it.
    let chosen = r["chosen"].as_str().expect("chosen");
    let pick = res
        .iter()
        .find(|p| p["value"] == chosen)
        .expect("chosen point");
    assert!(pick["loss"].as_f64().expect("loss") <= 0.01, "{r}");
    assert!(
        out.is_file()
            && std::fs::read_to_string(&svg)
                .expect("svg")
                .contains("bits=8")
    );
    // An impossible budget writes nothing and says why.
    std::fs::remove_file(&out).expect("rm");
    let o = run("1%", "size=0.01");
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("nothing written") && !out.exists(), "{t}");
    // Without a placeholder the sweep is refused before any work.
    let o = pare(&[
        "opt",
        &s(&m),
        "--passes",
        "quantize(bits=8)",
        "--sweep",
        "bits=8,4",
        "-o",
        &s(&out),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("{bits}"),
        "{}",
        text(&o)
    );
}

#[test]
fn opt_sweep_latency_budget_compiles_and_times_each_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model("ocr-cls");
    let fx = repo_root().join("tests/models/ocr-cls");
    let out = dir.path().join("p.onnx");
    let json = dir.path().join("sweep.json");
    let s = |p: &PathBuf| p.display().to_string();
    let run = |budget: &str| {
        pare(&[
            "opt",
            &s(&m),
            "--passes",
            "canonicalize,prune-unstructured(sparsity={s},min-elements=0),canonicalize",
            "--sweep",
            "s=0.3,0.9",
            "--calib",
            &s(&fx.join("test_data_set_0")),
            "--eval",
            &s(&fx.join("test_data_set_2")),
            "--budget",
            budget,
            "--latency-runs",
            "3",
            "-o",
            &s(&out),
            "--sweep-json",
            &s(&json),
        ])
    };
    let o = run("latency=100");
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("latency") && t.contains(" ms "), "{t}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("valid json");
    let dense_ms = r["input_latency_ms"].as_f64().expect("input latency");
    assert!(dense_ms > 0.0 && r["latency_threads"] == 1, "{r}");
    let res = r["results"].as_array().expect("results");
    assert!(
        res.iter()
            .all(|p| p["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0)),
        "{r}"
    );
    // Every result is within a 100× budget: the most faithful is kept.
    let best = res
        .iter()
        .min_by(|a, b| {
            let l = |p: &serde_json::Value| p["loss"].as_f64().unwrap_or(f64::INFINITY);
            l(a).total_cmp(&l(b))
        })
        .expect("a result");
    assert_eq!(r["chosen"], best["value"], "{r}");
    assert!(res.iter().all(|p| p["feasible"] == true), "{r}");
    assert!(out.is_file());
    // No build runs in a thousandth of the input model's time: nothing is written.
    std::fs::remove_file(&out).expect("rm");
    let o = run("latency=0.001");
    let t = text(&o);
    assert!(!o.status.success() && t.contains("nothing written"), "{t}");
    assert!(!out.exists());
    // A bad budget is refused before any work.
    let o = run("latency=0");
    assert!(!o.status.success() && text(&o).contains("must be > 0"));
}

/// `budget=latency` in the allocation searches of `prune-channels` and `lowrank`: `pare opt`
/// installs the latency probe, each group or layer is priced by timing its cut-out kernels,
/// and the report gives the prices and the measured latency of the input, the uniform
/// allocation and the searched one.
#[test]
fn opt_latency_budget_prices_groups_by_timing_their_kernels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model("ocr-cls");
    let fx = repo_root().join("tests/models/ocr-cls");
    let out = dir.path().join("p.onnx");
    let md = dir.path().join("r.md");
    let s = |p: &PathBuf| p.display().to_string();
    for step in [
        "lowrank(ratio=0.5,search=evo,budget=latency,generations=3,offspring=2,search-samples=1)",
        "prune-channels(ratio=0.2,search=evo,budget=latency,generations=3,offspring=2,\
         search-samples=1)",
    ] {
        let o = pare(&[
            "opt",
            &s(&m),
            "--passes",
            &format!("canonicalize,{step},canonicalize"),
            "--calib",
            &s(&fx.join("test_data_set_0")),
            "-o",
            &s(&out),
            "--report-md",
            &s(&md),
        ]);
        let t = text(&o);
        assert!(o.status.success(), "{step}: {t}");
        let r = std::fs::read_to_string(&md).expect("report");
        assert!(r.contains("latency prices:"), "{step}: {r}");
        let line = r
            .lines()
            .find(|l| l.contains("measured compiled latency: input"))
            .unwrap_or_else(|| panic!("{step}: no measured latency in {r}"));
        assert!(line.contains(" ms") && line.contains("searched"), "{line}");
        assert!(out.is_file());
        std::fs::remove_file(&out).expect("rm");
    }
}
