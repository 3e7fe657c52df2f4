//! ONNX backend node tests (from the onnx 1.22.0 wheel, fetched by
//! `scripts/fetch_conformance.sh` into `.cache/onnx-node`).
//!
//! Every test whose ops pare implements is imported, run in the interpreter, compared with the
//! expected outputs (rtol 1e-3, atol 1e-7, as ONNX's backend runner does), then exported,
//! re-imported and run again. docs/conformance.md gets the per-op table. The test fails when
//! any test of a *claimed* op (tests/conformance/claimed.txt) fails, or when fewer ops are
//! claimed than the ratchet below. `PARE_BLESS=1` rewrites claimed.txt to the ops whose tests
//! all pass.

use pare_onnx::proto::{GraphProto, ModelProto};
use pare_tests::{compare, data_set_dirs, read_data_set, repo_root};
use prost::Message;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Claimed ops may only grow: raise this as ops are added.
const MIN_CLAIMED: usize = 148;
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-7;

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
    Pass,
    Fail(String),
    Skip(String),
}

fn run_graph(g: &pare_ir::Graph, dir: &Path) -> Result<(), String> {
    let inputs = read_data_set(dir, "input_")?;
    let expected = read_data_set(dir, "output_")?;
    if inputs.len() != g.inputs().len() {
        return Err(format!(
            "{} inputs given, graph has {}",
            inputs.len(),
            g.inputs().len()
        ));
    }
    let tensors: Vec<_> = inputs.into_iter().map(|(_, t)| t).collect();
    let interp = pare_interp::Interpreter::with_threads(1);
    let got = interp.run(g, &tensors).map_err(|e| e.to_string())?;
    if got.len() != expected.len() {
        return Err(format!(
            "{} outputs, expected {}",
            got.len(),
            expected.len()
        ));
    }
    for (i, ((name, e), gt)) in expected.iter().zip(&got).enumerate() {
        compare(e, gt, RTOL, ATOL).map_err(|m| format!("output {i} '{name}': {m}"))?;
    }
    Ok(())
}

fn run_test(dir: &Path, implemented: &BTreeSet<String>) -> (BTreeSet<String>, Outcome) {
    let model_path = dir.join("model.onnx");
    let bytes = match std::fs::read(&model_path) {
        Ok(b) => b,
        Err(e) => return (BTreeSet::new(), Outcome::Fail(e.to_string())),
    };
    let mut ops = BTreeSet::new();
    match ModelProto::decode(bytes.as_slice()) {
        Ok(m) => {
            if let Some(g) = &m.graph {
                ops_of(g, &mut ops);
            }
        }
        Err(e) => return (ops, Outcome::Fail(format!("decode: {e}"))),
    }
    let missing: Vec<&String> = ops.iter().filter(|o| !implemented.contains(*o)).collect();
    if !missing.is_empty() {
        let m: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        let reason = format!("needs {}", m.join(", "));
        return (ops, Outcome::Skip(reason));
    }
    let outcome = std::panic::catch_unwind(|| -> Result<(), String> {
        let model = pare_onnx::load_model(&model_path, &Default::default())
            .map_err(|e| format!("import: {e}"))?;
        let sets = data_set_dirs(dir);
        for d in &sets {
            run_graph(&model.graph, d).map_err(|e| {
                format!(
                    "{}: {e}",
                    d.file_name().unwrap_or_default().to_string_lossy()
                )
            })?;
        }
        // Export, re-import, run again.
        let proto = pare_onnx::to_model_proto(&model.graph, &Default::default())
            .map_err(|e| format!("export: {e}"))?;
        let again = pare_onnx::load_model_from_bytes(
            proto.encode_to_vec().into(),
            None,
            &model_path,
            &Default::default(),
        )
        .map_err(|e| format!("re-import after export: {e}"))?;
        for d in &sets {
            run_graph(&again.graph, d).map_err(|e| format!("after export round trip: {e}"))?;
        }
        Ok(())
    });
    let outcome = match outcome {
        Ok(Ok(())) => Outcome::Pass,
        Ok(Err(e)) => Outcome::Fail(e),
        Err(p) => Outcome::Fail(format!(
            "PANIC: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    };
    (ops, outcome)
}

#[derive(Default)]
struct OpRow {
    passed: Vec<String>,
    failed: Vec<(String, String)>,
    skipped: Vec<(String, String)>,
}

#[test]
fn onnx_node_tests() {
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
    if let Ok(filter) = std::env::var("PARE_NODE_FILTER") {
        tests.retain(|p| p.to_string_lossy().contains(&filter));
    }
    let implemented = implemented();
    // Silence panic messages from catch_unwind; they are reported as failures.
    std::panic::set_hook(Box::new(|_| {}));
    // Work stealing can stack one test on top of another on the same worker (the interpreter
    // uses rayon too), so the workers get large stacks.
    let pool = rayon::ThreadPoolBuilder::new()
        .stack_size(256 << 20)
        .build()
        .expect("thread pool");
    let results: Vec<(String, BTreeSet<String>, Outcome)> = pool.install(|| {
        tests
            .par_iter()
            .map(|t| {
                let name = t
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                if std::env::var_os("PARE_VERBOSE").is_some() {
                    eprintln!("running {name}");
                }
                let (ops, o) = run_test(t, &implemented);
                (name, ops, o)
            })
            .collect()
    });
    let _ = std::panic::take_hook();

    let mut rows: BTreeMap<String, OpRow> = BTreeMap::new();
    for (name, ops, o) in &results {
        for op in ops {
            let r = rows.entry(op.clone()).or_default();
            match o {
                Outcome::Pass => r.passed.push(name.clone()),
                Outcome::Fail(m) => r.failed.push((name.clone(), m.clone())),
                Outcome::Skip(m) => r.skipped.push((name.clone(), m.clone())),
            }
        }
    }
    let claimed_path = root.join("tests/conformance/claimed.txt");
    let bless = std::env::var_os("PARE_BLESS").is_some();
    let claimed: BTreeSet<String> = if bless {
        let c: BTreeSet<String> = rows
            .iter()
            .filter(|(op, r)| {
                implemented.contains(*op) && r.failed.is_empty() && !r.passed.is_empty()
            })
            .map(|(op, _)| op.clone())
            .collect();
        let body: String = c.iter().map(|o| format!("{o}\n")).collect();
        std::fs::write(
            &claimed_path,
            format!("# Ops whose ONNX node tests all pass (PARE_BLESS=1 regenerates).\n{body}"),
        )
        .expect("write claimed.txt");
        c
    } else {
        std::fs::read_to_string(&claimed_path)
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect()
    };

    // The report.
    let total_pass = results
        .iter()
        .filter(|r| matches!(r.2, Outcome::Pass))
        .count();
    let total_fail = results
        .iter()
        .filter(|r| matches!(r.2, Outcome::Fail(_)))
        .count();
    let total_skip = results.len() - total_pass - total_fail;
    let claimed_tests: BTreeSet<&String> = rows
        .iter()
        .filter(|(op, _)| claimed.contains(*op))
        .flat_map(|(_, r)| r.passed.iter().chain(r.failed.iter().map(|f| &f.0)))
        .collect();
    let mut md = String::new();
    let _ = writeln!(md, "# ONNX node-test conformance\n");
    let _ = writeln!(
        md,
        "Generated by `cargo test -p pare-tests --test conformance` from the node tests of the onnx 1.22.0 wheel \
         (`scripts/fetch_conformance.sh`). Each test is imported, run in the reference interpreter and compared \
         with rtol={RTOL}, atol={ATOL} (exact for integers and booleans), then exported to ONNX, re-imported and \
         run again.\n"
    );
    let _ = writeln!(
        md,
        "**{} ops claimed**; {} node tests exercise them. Over all {} tests: {total_pass} pass, {total_fail} fail, \
         {total_skip} skipped (they need an op pare does not implement).\n",
        claimed.len(),
        claimed_tests.len(),
        results.len()
    );
    let _ = writeln!(
        md,
        "| op | claimed | passed | failed | skipped | notes |\n|---|---|---|---|---|---|"
    );
    for (op, r) in &rows {
        let status = if claimed.contains(op) {
            "yes"
        } else if implemented.contains(op) {
            "no"
        } else {
            "not implemented"
        };
        let note = match (r.failed.first(), r.skipped.first()) {
            (Some((t, m)), _) => format!(
                "`{t}`: {}",
                m.replace('|', "\\|").chars().take(160).collect::<String>()
            ),
            (None, Some((_, m))) if r.passed.is_empty() => m.chars().take(120).collect(),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "| {op} | {status} | {} | {} | {} | {note} |",
            r.passed.len(),
            r.failed.len(),
            r.skipped.len()
        );
    }
    let _ = writeln!(md, "\n## Failing tests\n");
    for (name, _, o) in &results {
        if let Outcome::Fail(m) = o {
            let _ = writeln!(
                md,
                "- `{name}`: {}",
                m.chars().take(300).collect::<String>().replace('\n', " ")
            );
        }
    }
    std::fs::write(root.join("docs/conformance.md"), md).expect("write docs/conformance.md");

    let claimed_failures: Vec<String> = rows
        .iter()
        .filter(|(op, _)| claimed.contains(*op))
        .flat_map(|(op, r)| r.failed.iter().map(move |(t, m)| format!("{op}: {t}: {m}")))
        .collect();
    let unpassed: Vec<&String> = claimed
        .iter()
        .filter(|op| rows.get(*op).is_none_or(|r| r.passed.is_empty()))
        .collect();
    eprintln!(
        "conformance: {} claimed ops, {total_pass} pass / {total_fail} fail / {total_skip} skipped of {} tests",
        claimed.len(),
        results.len()
    );
    assert!(
        claimed_failures.is_empty(),
        "node tests of claimed ops fail:\n{}",
        claimed_failures.join("\n")
    );
    assert!(
        unpassed.is_empty(),
        "claimed ops without a passing node test: {unpassed:?}"
    );
    assert!(
        claimed.len() >= MIN_CLAIMED,
        "{} ops claimed, fewer than the ratchet {MIN_CLAIMED}",
        claimed.len()
    );
}
