//! `pare eval`: fidelity of a candidate model against a reference on the same inputs.

use anyhow::{bail, Context, Result};
use clap::Args;
use pare_pass::fidelity::Fidelity;
use pare_pass::SampleSet;
use serde::Serialize;
use std::path::PathBuf;

/// Arguments of `pare eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// The reference ONNX model (e.g. the original).
    reference: PathBuf,
    /// The candidate ONNX model (e.g. the compressed one).
    candidate: PathBuf,
    /// Inputs: a directory of test_data_set_N directories (input_K.pb) or of directories of
    /// <input name>.npy files, or of .npz files (one sample each); or one sample directory or
    /// .npz file. Repeatable.
    #[arg(long, num_args = 1.., required = true, value_name = "DIR")]
    inputs: Vec<PathBuf>,
    /// Interpreter threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Exit with status 1 when an output's max relative error exceeds this.
    #[arg(long, value_name = "REL")]
    max_rel_err: Option<f64>,
}

#[derive(Serialize)]
struct EvalReport {
    reference: String,
    candidate: String,
    #[serde(flatten)]
    fidelity: Fidelity,
}

/// Runs `pare eval`; prints JSON on stdout.
pub fn eval(a: &EvalArgs) -> Result<()> {
    let r = crate::load(&a.reference)?.graph;
    let c = crate::load(&a.candidate)?.graph;
    let names = |g: &pare_ir::Graph| -> Vec<String> {
        g.outputs()
            .iter()
            .map(|&v| g.value(v).name.clone())
            .collect()
    };
    let (rn, cn) = (names(&r), names(&c));
    if rn.len() != cn.len() {
        bail!(
            "the models have different outputs: reference [{}], candidate [{}]",
            rn.join(", "),
            cn.join(", ")
        );
    }
    // Candidate outputs in reference order: by name when every name matches, else by position.
    let order: Vec<usize> = if rn.iter().all(|n| cn.contains(n)) {
        rn.iter()
            .map(|n| cn.iter().position(|x| x == n).unwrap_or(0))
            .collect()
    } else {
        (0..rn.len()).collect()
    };
    let mut rs = SampleSet::default();
    let mut cs = SampleSet::default();
    for d in &a.inputs {
        rs.samples.extend(SampleSet::load(&r, d)?.samples);
        cs.samples.extend(
            SampleSet::load(&c, d)
                .context("inputs for the candidate")?
                .samples,
        );
    }
    let interp = pare_interp::Interpreter::with_threads(a.threads);
    let mut f = Fidelity::new(&rn);
    for (sr, sc) in rs.samples.iter().zip(&cs.samples) {
        let ro = interp
            .run(&r, &sr.inputs)
            .with_context(|| format!("reference on {}", sr.origin.display()))?;
        let co = interp
            .run(&c, &sc.inputs)
            .with_context(|| format!("candidate on {}", sc.origin.display()))?;
        let co: Vec<_> = order.iter().map(|&i| co[i].clone()).collect();
        f.add(&ro, &co)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("comparing on {}", sr.origin.display()))?;
    }
    let worst = f.max_rel_err();
    let report = EvalReport {
        reference: a.reference.display().to_string(),
        candidate: a.candidate.display().to_string(),
        fidelity: f,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(limit) = a.max_rel_err {
        let within = worst <= limit; // false for NaN too
        if !within {
            bail!("max relative error {worst:e} exceeds --max-rel-err {limit:e}");
        }
    }
    Ok(())
}
