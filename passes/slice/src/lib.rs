//! SliceGPT for post-LN transformers (`slice`).
//!
//! **What it does.** Finds the residual stream of a transformer whose blocks end in a
//! LayerNormalization (post-LN, BERT-style: `x_{i+1} = LN(x_i + f(x_i))`), rotates the stream
//! at every norm into the principal axes of its calibration activations, and deletes the
//! least important axes (Ashkboos et al. 2024, *SliceGPT: Compress Large Language Models by
//! Deleting Rows and Columns*, which treats pre-LN models; this is the post-LN form).
//!
//! Write norm `i` as `n_i = C z_i / rms(C z_i)`, `x_i = n_i diag(γ_i) + β_i`, with
//! `C = I − 11ᵀ/d` the centering matrix. RMS is rotation-invariant, so with an orthogonal
//! `Q_i` per norm the rotated stream `ñ_i = n_i Q_i` is an RMS normalization of
//! `w_i = C z_i Q_i`, and everything around it folds:
//!
//! - linear layers reading `x_i` (attention Q/K/V, FFN up): `W ← Q_iᵀ diag(γ_i) W`,
//!   `b ← b + β_i W`;
//! - linear layers writing into `z_{i+1}` (attention output, FFN down): `W ← W C Q_{i+1}`,
//!   `b ← b C Q_{i+1}`;
//! - embedding tables (constant `[V, d]` tables gathered by row) and constants summed into
//!   `z`: `T ← T C Q`;
//! - the residual connection `x_i → z_{i+1}`: an inserted `d×d` MatMul
//!   `Q_iᵀ diag(γ_i) C Q_{i+1}` plus the constant `β_i C Q_{i+1}`;
//! - every LayerNormalization becomes `ñ = w / sqrt(Σ w² / d + ε)` in primitive ops
//!   (ReduceSumSquare, Div, Add, Sqrt, Div), `ε` where LayerNormalization has it;
//! - readers of a norm output that are none of the above (graph outputs, pooling, a
//!   non-linear op) get the original basis back: `x_i = ñ_i Q_iᵀ diag(γ_i) + β_i`, one
//!   inserted `d'×d` MatMul and Add per such norm (the last norm of an encoder).
//!
//! `Q_i` are the eigenvectors of `E[n_iᵀ n_i]` (uncentered second moment of the normalized
//! rows, as in the paper), eigenvalues descending, from the calibration samples. Slicing at
//! `ratio` keeps the first `d' = round((1 − ratio)·d / round-to)·round-to` axes of every
//! `Q_i` (the full `d` when `ratio = 0`; at least `round-to`): input linears keep `d'` rows,
//! output linears and tables `d'` columns, residual matrices become `d'×d'`, and the RMS
//! normalization still divides by the full `d`. Heads and FFN widths are untouched.
//! `scope=embeddings` rotates and slices only the norms whose input sums embedding-table
//! lookups (BERT's embedding LayerNorm): the other norms stay LayerNormalization and read
//! that stream through a restore MatMul; most of an encoder's parameters are in the
//! embedding table, so this keeps most of the saving at much less error (table below).
//!
//! `sequential=true` computes the axes one norm at a time on the model with the earlier
//! norms already rotated and sliced (SliceGPT's sequential calibration: one interpreter pass
//! over the samples per norm instead of one in all).
//!
//! `refit=true` then re-solves the linear maps around the sliced stream by least squares so
//! that the sliced model reproduces the dense model's intermediate values on the calibration
//! samples (module `refit`), one group of maps at a time in graph order, each on the
//! activations the already refitted earlier part of the sliced model produces (one
//! interpreter pass of the dense and one of the sliced model over the samples per group):
//!
//! - the linear layers reading norm `i` (Q/K/V, FFN up) and its restore MatMul: inputs
//!   `X̃ = [ñ_i, 1]` (`d' + 1` columns), target the dense layer output (the dense norm output
//!   for the restore) — heads and FFN widths are unchanged, so the basis is the same;
//! - the linear layer writing into norm `i` (attention output, FFN down) jointly with the
//!   residual MatMuls feeding norm `i`: inputs `[h, ñ_j, 1]`, target the dense `z_i` in the
//!   sliced basis, `z_i C P_i` (what the rewrite maps every term of the sum to), minus the
//!   sliced sum's terms that are not refitted (the residual bias constant, tables);
//!
//! each solving `W = argmin ‖X̃W − Y‖² + λ‖W − W₀‖²` with `λ = refit-damp · mean(diag X̃ᵀX̃)`
//! by Cholesky of `X̃ᵀX̃ + λI`, `X̃ᵀX̃` and `X̃ᵀY` accumulated sample by sample. The damping
//! pulls towards the rotated weights `W₀` rather than towards zero, so a map the data already
//! fits (nothing sliced) keeps its weights and the refit generalizes no worse than the
//! rotation where the calibration rows are few. The report gives each map's relative error on
//! the calibration data before and after; a map whose error the solve does not lower keeps
//! its weights.
//!
//! Options: `ratio` (default 0.25), `round-to` (default 8), `scope=all|embeddings`
//! (default `all`), `sequential` (default false), `refit` (default false), `refit-damp`
//! (default 0.3), `search=none|evo` (default `none`), `budget=flops|params` (default `flops`),
//! `generations` (20), `offspring` (4), `search-samples` (8).
//!
//! **Width search** (`search=evo`, needs `--calib`): instead of one width for every norm, an
//! evolutionary search spreads what the uniform widths remove over the norms (module
//! `widths`: units of `round-to` axes, the budget held fixed is the linear layers' weights —
//! the per-token multiply-adds — or all parameters), scored by the end-to-end output error on
//! `search-samples` calibration samples. The report gives the uniform and the searched error
//! and cost, and each norm's width.
//!
//! Terms of a norm's input that are not linear layers, tables, constants or earlier norm
//! outputs are rotated by an inserted `d×d'` MatMul; LayerNormalizations that do not fit
//! (not over the last axis, non-constant scale or bias, an input also read elsewhere — the
//! pre-LN layout, not supported yet) are left alone with a note, and their neighbours then
//! see the original basis.
//!
//! **Needs.** Calibration samples (`--calib`) when `ratio > 0`; with `ratio = 0` and no
//! samples the rotation is the identity (only the norm folding). Types are inferred before
//! and re-inferred after. Run after `canonicalize` (fused LayerNormalization); follow with
//! `canonicalize` to drop the dead weights.
//!
//! **Guarantees.** With nothing sliced (`ratio = 0`) the rewrite is exact up to float
//! rounding (MiniLM: relative output error 1.4e-6, tested). Slicing is lossy: the report
//! gives per norm `d → d'` and the fraction of `E[‖n‖²]` kept on the calibration data (the
//! retained variance), and the parameter count before and after (dead weights excluded);
//! there is no a-priori bound on the output error.
//!
//! Measured on MiniLM (`tests/real_models.rs`, `sweep`: 192 generated calibration samples of
//! 2×16 tokens = 6144 rows, the three onnxruntime fixtures held out; cosine per token / per
//! sentence against the dense model; params and FLOPs at batch 2 × 16 tokens after
//! `canonicalize`):
//!
//! | scope | ratio | d' | params | GFLOP | last hidden state cos (mean) | pooled cos min / mean | pooled rel. err |
//! |---|---|---|---|---|---|---|---|
//! | dense | – | 384 | 17.24 M | 0.343 | 1 | 1 / 1 | 0 |
//! | all | 0 | 384 | 18.27 M | 0.409 | 1.0000 | 1.0000 / 1.0000 | 1.0e-6 |
//! | all | 0.1 | 344 | 16.29 M | 0.362 | 0.959 | 0.972 / 0.976 | 0.218 |
//! | all | 0.2 | 304 | 14.32 M | 0.315 | 0.919 | 0.937 / 0.945 | 0.331 |
//! | all | 0.25 | 288 | 13.54 M | 0.297 | 0.904 | 0.921 / 0.932 | 0.369 |
//! | all | 0.3 | 272 | 12.76 M | 0.279 | 0.887 | 0.896 / 0.915 | 0.413 |
//! | all, sequential | 0.25 | 288 | 13.54 M | 0.297 | 0.914 | 0.922 / 0.929 | 0.376 |
//! | all, refit | 0.25 | 288 | 13.54 M | 0.297 | 0.908 | 0.921 / 0.928 | 0.372 |
//! | all, refit | 0.3 | 272 | 12.76 M | 0.279 | 0.893 | 0.897 / 0.914 | 0.406 |
//! | all, sequential, refit | 0.25 | 288 | 13.54 M | 0.297 | 0.914 | 0.925 / 0.930 | 0.370 |
//! | all, refit, refit-damp=0.01 | 0.25 | 288 | 13.54 M | 0.297 | 0.900 | 0.908 / 0.914 | 0.406 |
//! | embeddings, refit | 0.25 | 288 | 14.26 M | 0.343 | 0.953 | 0.970 / 0.975 | 0.224 |
//! | embeddings | 0.25 | 288 | 14.26 M | 0.343 | 0.953 | 0.970 / 0.975 | 0.225 |
//! | embeddings | 0.4 | 232 | 12.44 M | 0.338 | 0.917 | 0.945 / 0.953 | 0.307 |
//! | embeddings | 0.5 | 192 | 11.14 M | 0.334 | 0.887 | 0.914 / 0.928 | 0.380 |
//!
//! `ratio = 0` adds the residual and restore matrices (1.03 M parameters). The word-embedding
//! table (30522 rows) is most of the saving, which is why `scope=embeddings` (one norm
//! sliced, one restore MatMul) gives a better size/fidelity trade-off on this small encoder
//! than slicing every norm: its stream is not very low-rank (keeping 288 of 384 axes retains
//! 95–97% of `E[‖n‖²]` per norm) and the seven truncations compound. The principal axes need
//! many calibration rows: with 768 rows the pooled cosine at `ratio = 0.25` is 0.867.
//! Sequential calibration improves the last hidden state a little (relative error 0.435 →
//! 0.409) but not the pooled embedding.
//!
//! The refit does not close the gap either. It lowers every map's error on the calibration
//! data (at 0.25: Q/K/V 0.23–0.30 → 0.22–0.29, attention output + residual and FFN down +
//! residual by 3–10 %, the last hidden state 0.325 → 0.318), and on the calibration samples
//! themselves it raises the pooled cosine from 0.955 to 0.975 (mean), but on held-out inputs
//! it gains nothing: on the fixtures (above) and equally on 16 more generated samples like
//! the calibration ones (pooled mean 0.936 with and without, last hidden state mean 0.921 →
//! 0.925). Less damping fits the calibration set better and the held-out inputs worse
//! (`refit-damp=0.01`: pooled 0.914 on the fixtures, 0.922 on generated samples); at
//! `refit-damp=1` the result is the unrefitted one within noise (0.923 / 0.930). The reason:
//! the PCA axes are uncorrelated on the calibration data, so a layer reading the sliced stream
//! cannot recover what the deleted axes carried from the kept ones (Q/K/V after the first
//! norm keep 23 % relative error whatever the weights), and what the 6144 calibration rows
//! (192 sequences) let it fit beyond that does not generalize. With four times the
//! calibration data (768 samples, `SLICE_CALIB=768` in the sweep) the refit does help held
//! out, a little: pooled cosine on the fixtures 0.934 / 0.938 → 0.938 / 0.943 (relative error
//! 0.354 → 0.334), last hidden state mean 0.906 → 0.914, generated samples pooled mean 0.943 →
//! 0.948 (`refit-damp=0.05`: 0.937 / 0.943; with `sequential`: 0.933 / 0.941, last hidden
//! state 0.919). Reaching 0.95 at this width needs the deleted axes to matter less (axes chosen for
//! the readers' outputs rather than the stream's energy), not a per-layer refit. Per-norm
//! widths (`search=evo`, FLOPs budget, 60 generations) give 0.930 / 0.937 at the uniform
//! widths' multiply-adds (0.2963 GFLOP): a small gain (docs/passes.md has the table). The exported models run in onnxruntime 1.32 and
//! agree with pare's interpreter to 2.5e-6 of each output's scale; at 2×16 tokens on one
//! thread onnxruntime took 7.1 ms (`all`, 0.25) and 8.4 ms (`embeddings`, 0.25) against
//! 7.6 ms dense (medians, noisy shared machine: at this size the run time is mostly per-op
//! overhead, and the RMS normalization is five ops where LayerNormalization was one).
//!
//! Not done yet: pre-LN models (the residual stream read by the next block's norm and by the
//! next residual Add), attention-head or FFN slicing, refit targets beyond each map's own output (attention
//! scores, the block output), a fused RMS
//! normalization op.

#![deny(missing_docs)]

mod basis;
mod refit;
mod rewrite;
mod structure;
mod widths;

pub use basis::{principal_axes, Basis, Point, Square};
pub use rewrite::{Inserted, Site, Slot};
pub use structure::{find, linear_at, Bias, Linear, Norm, Plan, Scope, Term, TermKind};

use pare_ir::cost::cost;
use pare_pass::{Pass, PassContext, PassError, PassInfo, PassReport, Registry};
use serde::Deserialize;

pub(crate) const NAME: &str = "slice";

/// Errors of the numerical steps.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SliceError {
    /// The eigendecomposition did not converge.
    #[error("the eigendecomposition of the activation second moment did not converge")]
    Eigen,
}

/// How the per-norm widths are chosen.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Search {
    /// Every norm keeps the width `ratio` gives.
    #[default]
    None,
    /// Remove at least what the uniform widths remove (see [`Budget`]) and spread it over
    /// the norms by an evolutionary search scored end to end on the calibration samples.
    Evo,
}

/// What the width search holds fixed.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// The weights of the MatMul / Gemm layers: the per-token multiply-adds.
    #[default]
    Flops,
    /// All parameters (embedding tables included).
    Params,
}

/// Options of `slice`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SliceOptions {
    /// Fraction of the hidden size to delete.
    pub ratio: f64,
    /// The kept width is rounded to a multiple of this.
    pub round_to: usize,
    /// Which norms to slice.
    pub scope: Scope,
    /// Compute each norm's axes on the model with the earlier norms already sliced.
    pub sequential: bool,
    /// Re-solve the linear maps around the sliced stream by least squares against the dense
    /// model's intermediate values (see the `refit` section of the crate docs).
    pub refit: bool,
    /// Damping of the refit: `λ = refit-damp · mean(diag(XᵀX))`, pulling towards the
    /// rewritten weights.
    pub refit_damp: f64,
    /// Per-norm widths: uniform, or searched.
    pub search: Search,
    /// `search=evo`: what is held fixed.
    pub budget: Budget,
    /// `search=evo`: generations.
    pub generations: usize,
    /// `search=evo`: candidates per generation.
    pub offspring: usize,
    /// `search=evo`: calibration samples that score a candidate (0: all).
    pub search_samples: usize,
}

impl Default for SliceOptions {
    fn default() -> Self {
        SliceOptions {
            ratio: 0.25,
            round_to: 8,
            scope: Scope::All,
            sequential: false,
            refit: false,
            refit_damp: 0.3,
            search: Search::None,
            budget: Budget::Flops,
            generations: 20,
            offspring: 4,
            search_samples: 8,
        }
    }
}

impl SliceOptions {
    fn check(&self) -> Result<(), PassError> {
        if !(self.ratio >= 0.0 && self.ratio < 1.0) {
            return Err(PassError::failed(NAME, "ratio must be in [0, 1)"));
        }
        if self.round_to == 0 {
            return Err(PassError::failed(NAME, "round-to must be at least 1"));
        }
        if self.search == Search::Evo && (self.generations == 0 || self.offspring == 0) {
            return Err(PassError::failed(
                NAME,
                "search=evo needs generations and offspring of at least 1",
            ));
        }
        if !(self.refit_damp.is_finite() && self.refit_damp >= 0.0) {
            return Err(PassError::failed(
                NAME,
                "refit-damp must be a non-negative number",
            ));
        }
        Ok(())
    }

    /// The kept width for hidden size `d`.
    pub fn kept(&self, d: usize) -> usize {
        if self.ratio <= 0.0 || d == 0 {
            return d;
        }
        let m = self.round_to.max(1);
        let target = (1.0 - self.ratio) * d as f64;
        let k = ((target / m as f64).round() as usize) * m;
        k.clamp(m.min(d), d)
    }
}

/// Bases computed one norm at a time, each on the graph with the earlier norms already
/// rotated and sliced (the later ones left full and unrotated), so that every norm's axes
/// describe the activations it will really see (SliceGPT's sequential calibration).
fn sequential_bases(
    g: &pare_ir::Graph,
    plan: &Plan,
    keep: &[usize],
    samples: &pare_pass::SampleSet,
    interpreter: impl Fn() -> pare_interp::Interpreter,
    mut progress: impl FnMut(),
) -> Result<Vec<Basis>, PassError> {
    let mut bases: Vec<Basis> = plan
        .norms
        .iter()
        .map(|n| Basis {
            q: Square::identity(n.d),
            eigenvalues: Vec::new(),
            rows: 0,
        })
        .collect();
    let mut widths: Vec<usize> = plan.norms.iter().map(|n| n.d).collect();
    for (i, norm) in plan.norms.iter().enumerate() {
        let point = |value| Point {
            value,
            d: norm.d,
            eps: norm.eps,
        };
        // A fresh interpreter per graph: its constant cache would keep every copy alive.
        let interp = interpreter();
        let mut b = if i == 0 {
            basis::calibrate(g, &[Point::from(norm)], samples, &interp, || {})?
        } else {
            let mut h = g.clone();
            let ins = rewrite::apply(&mut h, plan, &bases, &widths)?;
            pare_ir::infer::reinfer_types(&mut h)
                .map_err(|e| PassError::failed(NAME, format!("sequential calibration: {e}")))?;
            let w = ins.stream_inputs.get(i).copied().ok_or_else(|| {
                PassError::failed(NAME, "internal error: no stream input for a norm")
            })?;
            basis::calibrate(&h, &[point(w)], samples, &interp, || {})?
        };
        if let Some(b) = b.pop() {
            bases[i] = b;
        }
        widths[i] = keep[i];
        progress();
    }
    Ok(bases)
}

/// The `slice` pass (see the crate docs).
#[derive(Clone, Debug, Default)]
pub struct Slice {
    opts: SliceOptions,
}

impl Slice {
    /// A pass with these options.
    pub fn new(opts: SliceOptions) -> Slice {
        Slice { opts }
    }
}

/// Registers `slice`.
pub fn register(reg: &mut Registry) {
    let d = SliceOptions::default();
    reg.register(
        PassInfo::new(
            NAME,
            "SliceGPT for post-LN transformers: rotate the residual stream into its principal \
             axes (calibration PCA) and delete the smallest (lossy; needs --calib)",
        )
        .option(
            "ratio",
            "float",
            &d.ratio.to_string(),
            "fraction of the hidden size to delete (0: rotation only, exact)",
        )
        .option(
            "round-to",
            "int",
            &d.round_to.to_string(),
            "round the kept hidden size to a multiple of this",
        )
        .option(
            "sequential",
            "bool",
            "false",
            "compute each norm's axes with the earlier norms already sliced (one calibration \
             run per norm)",
        )
        .option(
            "refit",
            "bool",
            "false",
            "after slicing, re-solve the linear layers and residual matrices around the \
             sliced stream by least squares against the dense model's intermediate values, \
             block by block in graph order (one calibration run per block)",
        )
        .option(
            "refit-damp",
            "float",
            &d.refit_damp.to_string(),
            "refit damping, relative to the mean diagonal of XᵀX (pulls towards the rotated \
             weights)",
        )
        .option(
            "scope",
            "all|embeddings",
            "all",
            "all: every norm of the residual stream; embeddings: only the norm over the \
             embedding sum (the other norms stay LayerNormalization)",
        )
        .option(
            "search",
            "none|evo",
            "none",
            "none: every norm keeps the width ratio gives; evo: remove at least as much \
             (see budget) and search per-norm widths, scored end to end on the calibration \
             samples (needs --calib)",
        )
        .option(
            "budget",
            "flops|params",
            "flops",
            "search=evo: hold the linear layers' weights (per-token multiply-adds) or all \
             parameters at least as low as the uniform widths",
        )
        .evo_search_options(d.generations, d.offspring, d.search_samples),
        |o| {
            let opts = o.parse::<SliceOptions>()?;
            opts.check()?;
            Ok(Box::new(Slice::new(opts)))
        },
    );
}

impl Pass for Slice {
    fn name(&self) -> &str {
        NAME
    }

    fn run(
        &mut self,
        g: &mut pare_ir::Graph,
        cx: &mut PassContext,
    ) -> Result<PassReport, PassError> {
        self.opts.check()?;
        let _ = pare_ir::infer::infer_types(g);
        let plan = find(g, self.opts.scope).map_err(|e| PassError::failed(NAME, e.to_string()))?;
        let mut report = PassReport::unchanged();
        for (name, why) in &plan.skipped {
            report.note(format!("left LayerNormalization '{name}' alone: {why}"));
        }
        if plan.out_of_scope > 0 {
            report.note(format!(
                "scope=embeddings: {} other norm(s) of the stream left as LayerNormalization",
                plan.out_of_scope
            ));
        }
        if plan.norms.is_empty() {
            report.note(
                "no residual stream found (LayerNormalization over the last axis with constant \
                 scale and bias whose input is a sum of residual terms); graph unchanged",
            );
            return Ok(report);
        }
        let keep: Vec<usize> = plan.norms.iter().map(|n| self.opts.kept(n.d)).collect();
        let sliced = plan.norms.iter().zip(&keep).any(|(n, &k)| k < n.d);
        let samples = cx.samples().cloned();
        let bases = match samples.clone() {
            Some(samples) if !samples.is_empty() => {
                let steps = if self.opts.sequential {
                    plan.norms.len()
                } else {
                    samples.len()
                };
                let pb = cx.progress_bar(steps as u64, "slice: calibrating");
                let b = if self.opts.sequential {
                    let threads = cx.threads();
                    let interp =
                        || pare_interp::Interpreter::with_threads(threads).cache_constants(true);
                    sequential_bases(g, &plan, &keep, &samples, interp, || pb.inc(1))?
                } else {
                    let interp = cx.interpreter().cache_constants(true);
                    let points: Vec<Point> = plan.norms.iter().map(Point::from).collect();
                    basis::calibrate(g, &points, &samples, &interp, || pb.inc(1))?
                };
                pb.finish_and_clear();
                b
            }
            _ if !sliced => {
                report.note("no calibration samples: identity rotation (norm folding only)");
                plan.norms
                    .iter()
                    .map(|n| Basis {
                        q: Square::identity(n.d),
                        eigenvalues: Vec::new(),
                        rows: 0,
                    })
                    .collect()
            }
            _ => {
                cx.require_samples(NAME)?;
                return Err(PassError::failed(NAME, "the calibration set is empty"));
            }
        };
        let keep = if self.opts.search == Search::Evo && sliced {
            widths::search_widths(g, &plan, &bases, &keep, &self.opts, cx, &mut report)?
        } else {
            keep
        };
        let before = cost(g).params;
        let dense = self.opts.refit.then(|| g.clone());
        let ins = rewrite::apply(g, &plan, &bases, &keep)?;
        pare_ir::infer::reinfer_types(g)
            .map_err(|e| PassError::failed(NAME, format!("after the rewrite: {e}")))?;
        if let Some(dense) = &dense {
            match samples.as_deref() {
                Some(samples) if !samples.is_empty() => {
                    let pb = cx.progress_bar(2 * plan.norms.len() as u64, "slice: refitting");
                    let threads = cx.threads();
                    let interp =
                        || pare_interp::Interpreter::with_threads(threads).cache_constants(true);
                    let fits = refit::refit(
                        dense,
                        g,
                        &plan,
                        &bases,
                        &keep,
                        &ins,
                        samples,
                        self.opts.refit_damp,
                        interp,
                        || pb.inc(1),
                    )?;
                    pb.finish_and_clear();
                    let mut kept = 0u64;
                    for f in &fits {
                        report.note(format!(
                            "refit '{}': relative error on the calibration data {:.4} -> {:.4}{}",
                            f.name,
                            f.before,
                            f.after,
                            if f.kept {
                                ""
                            } else {
                                " (not lower: kept the rotated weights)"
                            }
                        ));
                        kept += f.kept as u64;
                    }
                    report.add_stat("refit-layers", fits.len() as u64);
                    report.add_stat("refit-changed", kept);
                }
                _ => report.note("refit: no calibration samples; skipped"),
            }
        }
        let after = cost(g).params;
        for (i, n) in plan.norms.iter().enumerate() {
            let b = &bases[i];
            let kept = b.retained(keep[i]);
            report.note(format!(
                "'{}': d {} -> {}, retained variance {:.4}{}",
                g.node(n.node).name,
                n.d,
                keep[i],
                kept,
                if b.rows > 0 {
                    format!(" ({} calibration rows)", b.rows)
                } else {
                    String::new()
                }
            ));
            if !plan.others[i].is_empty() {
                report.note(format!(
                    "'{}': {} reader(s) of the output need the original basis: restored by a \
                     {}x{} MatMul",
                    g.node(n.node).name,
                    plan.others[i].len(),
                    keep[i],
                    n.d
                ));
            }
        }
        if ins.rotated_terms > 0 {
            report.note(format!(
                "{} term(s) of norm inputs were not linear layers, tables or constants: rotated \
                 by inserted MatMuls",
                ins.rotated_terms
            ));
        }
        report.changed = true;
        report.preserved = pare_pass::Preserved::none();
        let d = plan.norms.iter().map(|n| n.d).max().unwrap_or(0);
        let dk = keep.iter().copied().max().unwrap_or(0);
        report.add_stat("norms", plan.norms.len() as u64);
        report.add_stat("hidden", d as u64);
        report.add_stat("hidden-kept", dk as u64);
        report.add_stat("linears", ins.linears as u64);
        report.add_stat("tables", ins.tables as u64);
        report.add_stat("residual-matmuls", ins.residual as u64);
        report.add_stat("restore-matmuls", ins.restores as u64);
        report.add_stat("params-before", before);
        report.add_stat("params-after", after);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_width() {
        let o = |ratio, round_to| SliceOptions {
            ratio,
            round_to,
            ..SliceOptions::default()
        };
        assert_eq!(o(0.25, 8).kept(384), 288);
        assert_eq!(o(0.1, 8).kept(384), 344);
        assert_eq!(o(0.1, 1).kept(384), 346);
        assert_eq!(o(0.0, 8).kept(10), 10);
        assert_eq!(o(0.9, 8).kept(16), 8);
        assert_eq!(o(0.5, 16).kept(8), 8);
        assert!(o(1.0, 8).check().is_err());
        assert!(o(0.2, 0).check().is_err());
    }

    #[test]
    fn search_needs_generations_and_offspring() {
        let evo = |generations, offspring| SliceOptions {
            search: Search::Evo,
            generations,
            offspring,
            ..SliceOptions::default()
        };
        assert!(evo(20, 4).check().is_ok());
        assert!(evo(0, 4).check().is_err());
        assert!(evo(20, 0).check().is_err());
        // Without the search the counts are not used.
        let none = SliceOptions {
            generations: 0,
            ..SliceOptions::default()
        };
        assert!(none.check().is_ok());
    }
}
