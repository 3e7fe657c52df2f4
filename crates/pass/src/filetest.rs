//! The file test runner: `*.ir` files that state a pipeline, the IR it runs on, and what must
//! come out.
//!
//! ```text
//! // RUN: fold-constants,dce            pipeline (required)
//! // BIND: N=2,seq=3                     symbolic dims for the numeric check
//! // TOLERANCE: 1e-5                     relative tolerance of the numeric check (default 1e-5)
//! // NO-NUMERIC                          skip the numeric check
//! // CALIB: 4                            run the pipeline with 4 random calibration samples
//! // CHECK: text                         substring of a later output line (in order)
//! // CHECK-NEXT: text                    substring of the line after the previous match
//! // CHECK-NOT: text                     absent between the previous and the next match
//! // ERROR: text                         the pipeline must fail with an error containing text
//! graph @main(%x: f32[2,3]) -> (%y) {
//!   ...
//! }
//! // OUT: line                           the whole printed output (written by bless mode)
//! ```
//!
//! The runner parses the graph, runs the pipeline with verify-each (with `CALIB: n`, on a
//! context holding `n` random samples drawn like the numeric check's inputs, with other
//! seeds, so passes that need `--calib` can be tested), prints the result
//! (constants over 16 elements elided), checks the CHECK lines and the `OUT` block, and
//! compares the interpreter's outputs on the original and transformed graphs on random inputs
//! (f32 ~ N(0,1), integers in [0,4), random booleans), so every rewrite is also checked
//! numerically. In bless mode (`PARE_BLESS=1`) the `OUT` block is rewritten instead of
//! compared; CI runs without it, so a stale block fails.

use crate::{run_pipeline, PassContext, Registry};
use pare_interp::Interpreter;
use pare_ir::{DType, Dim, Graph, PrintOptions, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq)]
enum CheckKind {
    Plain,
    Next,
    Not,
}

/// A parsed file test.
#[derive(Clone, Debug)]
pub struct FileTest {
    /// The pipeline.
    pub run: String,
    bind: BTreeMap<String, u64>,
    tolerance: f64,
    numeric: bool,
    calib: usize,
    checks: Vec<(CheckKind, String, usize)>,
    error: Option<String>,
    out: Vec<String>,
    body: String,
}

const OUT_PREFIX: &str = "// OUT:";

/// Parses a file test's directives.
pub fn parse(text: &str) -> Result<FileTest, String> {
    let mut t = FileTest {
        run: String::new(),
        bind: BTreeMap::new(),
        tolerance: 1e-5,
        numeric: true,
        calib: 0,
        checks: Vec::new(),
        error: None,
        out: Vec::new(),
        body: String::new(),
    };
    let mut have_run = false;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        let lineno = i + 1;
        if let Some(rest) = l.strip_prefix(OUT_PREFIX) {
            t.out
                .push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            continue;
        }
        t.body.push_str(line);
        t.body.push('\n');
        let Some(c) = l.strip_prefix("//") else {
            continue;
        };
        let c = c.trim_start();
        let directive = |name: &str| -> Option<String> {
            c.strip_prefix(name)
                .and_then(|r| r.strip_prefix(':'))
                .map(|r| r.trim().to_string())
        };
        if let Some(r) = directive("RUN") {
            if have_run {
                return Err(format!("line {lineno}: a second RUN line"));
            }
            t.run = r;
            have_run = true;
        } else if let Some(r) = directive("BIND") {
            for kv in r.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("line {lineno}: BIND expects name=size, got '{kv}'"))?;
                let v = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("line {lineno}: bad size in BIND '{kv}'"))?;
                t.bind.insert(k.trim().to_string(), v);
            }
        } else if let Some(r) = directive("TOLERANCE") {
            t.tolerance = r
                .parse()
                .map_err(|_| format!("line {lineno}: bad TOLERANCE '{r}'"))?;
        } else if let Some(r) = directive("CALIB") {
            t.calib = r
                .parse()
                .map_err(|_| format!("line {lineno}: bad CALIB '{r}' (a sample count)"))?;
        } else if c.trim() == "NO-NUMERIC" {
            t.numeric = false;
        } else if let Some(r) = directive("CHECK") {
            t.checks.push((CheckKind::Plain, r, lineno));
        } else if let Some(r) = directive("CHECK-NEXT") {
            t.checks.push((CheckKind::Next, r, lineno));
        } else if let Some(r) = directive("CHECK-NOT") {
            t.checks.push((CheckKind::Not, r, lineno));
        } else if let Some(r) = directive("ERROR") {
            t.error = Some(r);
        } else if c.starts_with("CHECK") {
            return Err(format!("line {lineno}: unknown directive '{c}'"));
        }
    }
    if !have_run {
        return Err("no '// RUN: <pipeline>' line".into());
    }
    Ok(t)
}

fn check_lines(out: &[&str], checks: &[(CheckKind, String, usize)]) -> Result<(), String> {
    let mut cursor = 0usize;
    let mut nots: Vec<&(CheckKind, String, usize)> = Vec::new();
    let check_nots = |nots: &mut Vec<&(CheckKind, String, usize)>, from: usize, to: usize| {
        for n in nots.drain(..) {
            if let Some(k) = (from..to).find(|&k| out[k].contains(n.1.as_str())) {
                return Err(format!(
                    "CHECK-NOT (line {}): '{}' found on output line {}: {}",
                    n.2,
                    n.1,
                    k + 1,
                    out[k]
                ));
            }
        }
        Ok(())
    };
    for c in checks {
        match c.0 {
            CheckKind::Not => nots.push(c),
            CheckKind::Plain => {
                let found = (cursor..out.len()).find(|&k| out[k].contains(c.1.as_str()));
                let Some(k) = found else {
                    return Err(format!(
                        "CHECK (line {}): '{}' not found after output line {cursor}",
                        c.2, c.1
                    ));
                };
                check_nots(&mut nots, cursor, k)?;
                cursor = k + 1;
            }
            CheckKind::Next => {
                if cursor == 0 {
                    return Err(format!("CHECK-NEXT (line {}) has no previous CHECK", c.2));
                }
                if cursor >= out.len() || !out[cursor].contains(c.1.as_str()) {
                    return Err(format!(
                        "CHECK-NEXT (line {}): '{}' not on output line {}: {}",
                        c.2,
                        c.1,
                        cursor + 1,
                        out.get(cursor).unwrap_or(&"<end of output>")
                    ));
                }
                check_nots(&mut nots, cursor, cursor)?;
                cursor += 1;
            }
        }
    }
    check_nots(&mut nots, cursor, out.len())
}

/// A deterministic generator (xorshift64*) for numeric-check inputs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Random inputs for `g`: f32/f64/f16/bf16 ~ N(0,1), integers in [0,4), booleans; symbolic dims
/// from `bind`.
pub fn random_inputs(
    g: &Graph,
    bind: &BTreeMap<String, u64>,
    seed: u64,
) -> Result<Vec<Tensor>, String> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    for &v in g.inputs().iter().take(g.inputs().len() - g.num_captures()) {
        let val = g.value(v);
        let ty = &val.ty;
        let shape = ty
            .shape
            .as_ref()
            .ok_or_else(|| format!("input '{}' has unknown rank", val.name))?;
        let mut dims = Vec::new();
        for d in &shape.0 {
            dims.push(match d {
                Dim::Fixed(n) => *n as usize,
                Dim::Sym(s) => *bind.get(s.as_str()).ok_or_else(|| {
                    format!(
                        "input '{}': no size for symbolic dim '{s}' (add // BIND: {s}=2)",
                        val.name
                    )
                })? as usize,
                Dim::Unknown => {
                    return Err(format!("input '{}' has an unknown dim", val.name));
                }
            });
        }
        let n: usize = dims.iter().product();
        let dtype = ty
            .dtype
            .ok_or_else(|| format!("input '{}' has an unknown dtype", val.name))?;
        let t = match dtype {
            DType::F32 => Tensor::from_vec(dims, (0..n).map(|_| rng.normal() as f32).collect()),
            DType::F64 => Tensor::from_vec(dims, (0..n).map(|_| rng.normal()).collect()),
            DType::F16 => Tensor::from_vec(
                dims,
                (0..n).map(|_| half::f16::from_f64(rng.normal())).collect(),
            ),
            DType::BF16 => Tensor::from_vec(
                dims,
                (0..n).map(|_| half::bf16::from_f64(rng.normal())).collect(),
            ),
            DType::I64 => {
                Tensor::from_vec(dims, (0..n).map(|_| (rng.next_u64() % 4) as i64).collect())
            }
            DType::I32 => {
                Tensor::from_vec(dims, (0..n).map(|_| (rng.next_u64() % 4) as i32).collect())
            }
            DType::I8 => {
                Tensor::from_vec(dims, (0..n).map(|_| (rng.next_u64() % 4) as i8).collect())
            }
            DType::U8 => {
                Tensor::from_vec(dims, (0..n).map(|_| (rng.next_u64() % 4) as u8).collect())
            }
            DType::Bool => {
                Tensor::from_vec(dims, (0..n).map(|_| rng.next_u64() % 2 == 1).collect())
            }
            other => {
                return Err(format!(
                    "input '{}': no random generator for {} (use NO-NUMERIC)",
                    val.name,
                    other.name()
                ))
            }
        };
        out.push(t);
    }
    Ok(out)
}

fn numeric_check(before: &Graph, after: &Graph, t: &FileTest) -> Result<(), String> {
    let inputs = random_inputs(before, &t.bind, 0x9e37_79b9_7f4a_7c15)?;
    if after.inputs().len() != before.inputs().len() {
        return Err(format!(
            "the pipeline changed the number of graph inputs ({} -> {})",
            before.inputs().len(),
            after.inputs().len()
        ));
    }
    let interp = Interpreter::with_threads(1);
    let r = interp
        .run(before, &inputs)
        .map_err(|e| format!("interpreter on the original graph: {e}"))?;
    let c = interp
        .run(after, &inputs)
        .map_err(|e| format!("interpreter on the transformed graph: {e}"))?;
    let names: Vec<String> = before
        .outputs()
        .iter()
        .map(|&v| before.value(v).name.clone())
        .collect();
    let mut f = crate::fidelity::Fidelity::new(&names);
    f.add(&r, &c)?;
    for o in &f.outputs {
        let scale = 1f64.max(if o.max_rel_err > 0.0 {
            o.max_abs_err / o.max_rel_err
        } else {
            0.0
        });
        let within = o.max_abs_err <= t.tolerance * scale;
        if !within {
            return Err(format!(
                "numeric check: output '{}' differs from the original graph's by {:e} \
                 (tolerance {:e} × {scale:.3})",
                o.name, o.max_abs_err, t.tolerance
            ));
        }
    }
    Ok(())
}

/// What running one file test did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All expectations held.
    Passed,
    /// Bless mode rewrote the `OUT` block.
    Blessed,
}

/// Runs one file test with passes from `registry`. With `bless`, rewrites the file's `OUT`
/// block instead of comparing it. `Err` describes the first failed expectation.
pub fn run_file(registry: &Registry, path: &Path, bless: bool) -> Result<Outcome, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading: {e}"))?;
    let t = parse(&text)?;
    let original = pare_ir::parse_graph(&t.body).map_err(|e| format!("parsing the IR: {e}"))?;
    pare_ir::verify(&original).map_err(|e| format!("the input IR is invalid: {e}"))?;
    let mut g = original.clone();
    let mut cx = PassContext::new().with_threads(1);
    if t.calib > 0 {
        let samples = (0..t.calib as u64)
            .map(|i| {
                Ok(crate::Sample {
                    origin: PathBuf::from(format!("generated calibration sample {i}")),
                    inputs: random_inputs(&original, &t.bind, 0x5eed_ca1b ^ (i << 20))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        cx = cx.with_samples(crate::SampleSet {
            input_names: original
                .inputs()
                .iter()
                .map(|&v| original.value(v).name.clone())
                .collect(),
            samples,
        });
    }
    let result = run_pipeline(registry, &t.run, &mut g, &mut cx);
    let output = match (&result, &t.error) {
        (Err(e), Some(want)) => {
            let msg = e.to_string();
            if !msg.contains(want.as_str()) {
                return Err(format!("expected an error containing '{want}', got: {msg}"));
            }
            return Ok(Outcome::Passed);
        }
        (Ok(_), Some(want)) => {
            return Err(format!(
                "expected an error containing '{want}', but the pipeline succeeded"
            ))
        }
        (Err(e), None) => return Err(format!("pipeline '{}' failed: {e}", t.run)),
        (Ok(_), None) => pare_ir::print_graph(
            &g,
            &PrintOptions {
                elide_constants_above: Some(16),
            },
        ),
    };
    let lines: Vec<&str> = output.lines().collect();
    check_lines(&lines, &t.checks).map_err(|e| format!("{e}\n--- output ---\n{output}"))?;
    if t.numeric {
        numeric_check(&original, &g, &t)?;
    }
    let mut outcome = Outcome::Passed;
    if bless {
        let same = t.out.iter().map(String::as_str).eq(lines.iter().copied());
        if !same {
            let mut body = t.body.trim_end().to_string();
            body.push('\n');
            for l in &lines {
                body.push_str(OUT_PREFIX);
                if !l.is_empty() {
                    body.push(' ');
                    body.push_str(l);
                }
                body.push('\n');
            }
            std::fs::write(path, body).map_err(|e| format!("writing: {e}"))?;
            outcome = Outcome::Blessed;
        }
    } else if !t.out.is_empty() {
        if let Some(k) = (0..t.out.len().max(lines.len()))
            .find(|&k| t.out.get(k).map(String::as_str) != lines.get(k).copied())
        {
            return Err(format!(
                "output differs from the OUT block at line {}:\n  expected: {}\n  actual:   {}\n\
                 (rerun with PARE_BLESS=1 if the change is intended)\n--- output ---\n{output}",
                k + 1,
                t.out.get(k).map(String::as_str).unwrap_or("<end>"),
                lines.get(k).copied().unwrap_or("<end>"),
            ));
        }
    } else if t.checks.is_empty() {
        return Err("no expectations (CHECK lines or an OUT block): run with PARE_BLESS=1".into());
    }
    Ok(outcome)
}

/// Every `*.ir` file under `dir`, recursively, sorted.
pub fn collect(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ir") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs every file test under `dir` for a `#[test]`: prints each failure, then panics when
/// any failed or when fewer than `min_files` tests were found (a moved directory must not
/// pass silently).
pub fn assert_dir(registry: &Registry, dir: &Path, min_files: usize) {
    let (n, failures, blessed) = run_dir(registry, dir);
    for (f, e) in &failures {
        eprintln!("FAIL {}\n  {}\n", f.display(), e.replace('\n', "\n  "));
    }
    eprintln!(
        "{n} file tests, {} failed, {blessed} blessed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} file tests failed",
        failures.len()
    );
    assert!(
        n >= min_files,
        "expected at least {min_files} file tests under {}, found {n}",
        dir.display()
    );
}

/// Runs every file test under `dir`; returns the failures as (file, message) and the number
/// blessed. Bless mode is on when `PARE_BLESS` is set to anything but `0`.
pub fn run_dir(registry: &Registry, dir: &Path) -> (usize, Vec<(PathBuf, String)>, usize) {
    let bless = std::env::var("PARE_BLESS").is_ok_and(|v| v != "0");
    let files = collect(dir);
    let mut failures = Vec::new();
    let mut blessed = 0;
    for f in &files {
        match run_file(registry, f, bless) {
            Ok(Outcome::Blessed) => blessed += 1,
            Ok(Outcome::Passed) => {}
            Err(e) => failures.push((f.clone(), e)),
        }
    }
    (files.len(), failures, blessed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_follow_filecheck_rules() {
        let out = ["a x", "b y", "c z"];
        let chk = |v: Vec<(CheckKind, &str)>| {
            let v: Vec<_> = v.into_iter().map(|(k, s)| (k, s.to_string(), 1)).collect();
            check_lines(&out, &v)
        };
        assert!(chk(vec![(CheckKind::Plain, "a"), (CheckKind::Next, "b")]).is_ok());
        assert!(chk(vec![(CheckKind::Plain, "a"), (CheckKind::Next, "c")]).is_err());
        assert!(chk(vec![(CheckKind::Plain, "b"), (CheckKind::Plain, "a")]).is_err());
        assert!(chk(vec![
            (CheckKind::Plain, "a"),
            (CheckKind::Not, "y"),
            (CheckKind::Plain, "z")
        ])
        .is_err());
        assert!(chk(vec![(CheckKind::Not, "q"), (CheckKind::Plain, "z")]).is_ok());
        assert!(chk(vec![(CheckKind::Plain, "b"), (CheckKind::Not, "z")]).is_err());
    }

    #[test]
    fn directives_parse() {
        let t = parse(
            "// RUN: a,b(x=1)\n// BIND: N=2\n// CALIB: 3\n// CHECK: foo\n// OUT: bar\ngraph @g() -> () {\n}\n",
        )
        .unwrap();
        assert_eq!(t.run, "a,b(x=1)");
        assert_eq!(t.calib, 3);
        assert!(parse("// RUN: a\n// CALIB: many\n").is_err());
        assert_eq!(t.bind["N"], 2);
        assert_eq!(t.out, vec!["bar"]);
        assert!(!t.body.contains("OUT"));
        assert!(parse("graph @g() -> () {}").is_err());
    }
}
