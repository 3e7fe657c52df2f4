//! Fidelity of a candidate model's outputs against a reference's: error, cosine similarity,
//! and for classifier-like outputs top-1 agreement and KL divergence. `pare eval` prints
//! these; compression passes are judged by them.

use pare_ir::Tensor;
use serde::Serialize;

/// Fidelity of one output, accumulated over samples.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OutputFidelity {
    /// Output name.
    pub name: String,
    /// Samples compared.
    pub samples: usize,
    /// Largest |ref - cand| over all elements and samples.
    pub max_abs_err: f64,
    /// Mean |ref - cand| over all elements and samples.
    pub mean_abs_err: f64,
    /// `max_abs_err / max |ref|` (0 when the reference is all zeros and so is the error).
    pub max_rel_err: f64,
    /// Cosine similarity of the flattened outputs, lowest over samples.
    pub cosine_min: f64,
    /// Cosine similarity, mean over samples.
    pub cosine_mean: f64,
    /// For classifier-like outputs (float, rank 2 or 3, last axis ≥ 2 classes): the fraction of
    /// rows (all axes but the last) whose arg-max agrees.
    pub top1_agreement: Option<f64>,
    /// For classifier-like outputs: mean over rows of KL(softmax(ref) ‖ softmax(cand)) in nats
    /// (rows that already are probability distributions are used as they are).
    pub kl_divergence: Option<f64>,
    #[serde(skip)]
    abs_err_sum: f64,
    #[serde(skip)]
    elements: u64,
    #[serde(skip)]
    ref_abs_max: f64,
    #[serde(skip)]
    cosine_sum: f64,
    #[serde(skip)]
    rows: u64,
    #[serde(skip)]
    rows_agree: u64,
    #[serde(skip)]
    kl_sum: f64,
}

fn as_f64(t: &Tensor) -> Option<Vec<f64>> {
    t.to_f64_vec()
}

fn softmax_or_probs(row: &[f64]) -> Vec<f64> {
    let is_prob = row.iter().all(|&p| (0.0..=1.0).contains(&p))
        && (row.iter().sum::<f64>() - 1.0).abs() < 1e-3;
    if is_prob {
        return row.to_vec();
    }
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|&x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

impl OutputFidelity {
    /// An empty accumulator for output `name`.
    pub fn new(name: &str) -> OutputFidelity {
        OutputFidelity {
            name: name.to_string(),
            samples: 0,
            max_abs_err: 0.0,
            mean_abs_err: 0.0,
            max_rel_err: 0.0,
            cosine_min: 1.0,
            cosine_mean: 1.0,
            top1_agreement: None,
            kl_divergence: None,
            abs_err_sum: 0.0,
            elements: 0,
            ref_abs_max: 0.0,
            cosine_sum: 0.0,
            rows: 0,
            rows_agree: 0,
            kl_sum: 0.0,
        }
    }

    /// Adds one sample's pair of outputs.
    pub fn add(&mut self, reference: &Tensor, candidate: &Tensor) -> Result<(), String> {
        if reference.shape() != candidate.shape() {
            return Err(format!(
                "output '{}': shapes differ: reference {:?}, candidate {:?}",
                self.name,
                reference.shape(),
                candidate.shape()
            ));
        }
        let (Some(r), Some(c)) = (as_f64(reference), as_f64(candidate)) else {
            return Err(format!(
                "output '{}': cannot compare {} values numerically",
                self.name,
                reference.dtype().name()
            ));
        };
        let mut dot = 0.0;
        let mut nr = 0.0;
        let mut nc = 0.0;
        for (&a, &b) in r.iter().zip(&c) {
            let d = if a == b || (a.is_nan() && b.is_nan()) {
                0.0
            } else {
                (a - b).abs()
            };
            self.max_abs_err = self
                .max_abs_err
                .max(if d.is_nan() { f64::INFINITY } else { d });
            self.abs_err_sum += d;
            self.ref_abs_max = self.ref_abs_max.max(a.abs());
            dot += a * b;
            nr += a * a;
            nc += b * b;
        }
        self.elements += r.len() as u64;
        let cos = if nr == 0.0 && nc == 0.0 {
            1.0
        } else if nr == 0.0 || nc == 0.0 {
            0.0
        } else {
            dot / (nr.sqrt() * nc.sqrt())
        };
        self.cosine_min = if self.samples == 0 {
            cos
        } else {
            self.cosine_min.min(cos)
        };
        self.cosine_sum += cos;
        self.samples += 1;
        let shape = reference.shape();
        let classes = shape.last().copied().unwrap_or(0);
        if reference.dtype().is_float() && (shape.len() == 2 || shape.len() == 3) && classes >= 2 {
            for (ra, ca) in r.chunks(classes).zip(c.chunks(classes)) {
                self.rows += 1;
                if argmax(ra) == argmax(ca) {
                    self.rows_agree += 1;
                }
                let p = softmax_or_probs(ra);
                let q = softmax_or_probs(ca);
                let kl: f64 = p
                    .iter()
                    .zip(&q)
                    .filter(|(&p, _)| p > 0.0)
                    .map(|(&p, &q)| p * (p / q.max(1e-300)).ln())
                    .sum();
                self.kl_sum += kl.max(0.0);
            }
        }
        self.finish();
        Ok(())
    }

    fn finish(&mut self) {
        self.mean_abs_err = if self.elements > 0 {
            self.abs_err_sum / self.elements as f64
        } else {
            0.0
        };
        self.max_rel_err = if self.ref_abs_max > 0.0 {
            self.max_abs_err / self.ref_abs_max
        } else if self.max_abs_err > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        self.cosine_mean = if self.samples > 0 {
            self.cosine_sum / self.samples as f64
        } else {
            1.0
        };
        if self.rows > 0 {
            self.top1_agreement = Some(self.rows_agree as f64 / self.rows as f64);
            self.kl_divergence = Some(self.kl_sum / self.rows as f64);
        }
    }
}

/// Fidelity of every output of a model.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Fidelity {
    /// Samples compared.
    pub samples: usize,
    /// One entry per output, in output order.
    pub outputs: Vec<OutputFidelity>,
}

impl Fidelity {
    /// An accumulator for these output names.
    pub fn new(names: &[String]) -> Fidelity {
        Fidelity {
            samples: 0,
            outputs: names.iter().map(|n| OutputFidelity::new(n)).collect(),
        }
    }

    /// Adds one sample's outputs (reference and candidate, in output order).
    pub fn add(&mut self, reference: &[Tensor], candidate: &[Tensor]) -> Result<(), String> {
        if reference.len() != self.outputs.len() || candidate.len() != self.outputs.len() {
            return Err(format!(
                "output counts differ: expected {}, reference has {}, candidate {}",
                self.outputs.len(),
                reference.len(),
                candidate.len()
            ));
        }
        for ((o, r), c) in self.outputs.iter_mut().zip(reference).zip(candidate) {
            o.add(r, c)?;
        }
        self.samples += 1;
        Ok(())
    }

    /// The worst relative error over outputs.
    pub fn max_rel_err(&self) -> f64 {
        self.outputs
            .iter()
            .map(|o| o.max_rel_err)
            .fold(0.0, f64::max)
    }

    /// The lowest cosine similarity over outputs and samples.
    pub fn cosine_min(&self) -> f64 {
        self.outputs
            .iter()
            .map(|o| o.cosine_min)
            .fold(1.0, f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_outputs_are_perfect() {
        let t = Tensor::from_vec(vec![2, 3], vec![1.0f32, 3.0, 2.0, 0.5, -1.0, 0.0]);
        let mut f = Fidelity::new(&["y".to_string()]);
        let one = std::slice::from_ref(&t);
        f.add(one, one).unwrap();
        let o = &f.outputs[0];
        assert_eq!(o.max_abs_err, 0.0);
        assert!((o.cosine_min - 1.0).abs() < 1e-12);
        assert_eq!(o.top1_agreement, Some(1.0));
        assert!(o.kl_divergence.unwrap().abs() < 1e-12);
    }

    #[test]
    fn errors_and_top1_disagreement_are_measured() {
        let r = Tensor::from_vec(vec![2, 2], vec![1.0f32, 0.0, 0.0, 1.0]);
        let c = Tensor::from_vec(vec![2, 2], vec![1.0f32, 0.0, 1.0, 0.0]);
        let mut f = Fidelity::new(&["y".to_string()]);
        f.add(&[r], &[c]).unwrap();
        let o = &f.outputs[0];
        assert_eq!(o.max_abs_err, 1.0);
        assert_eq!(o.mean_abs_err, 0.5);
        assert_eq!(o.top1_agreement, Some(0.5));
        assert!(o.kl_divergence.unwrap() > 0.0);
        assert!((o.cosine_min - 0.5).abs() < 1e-12);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let r = Tensor::from_vec(vec![2], vec![1.0f32, 0.0]);
        let c = Tensor::from_vec(vec![1, 2], vec![1.0f32, 0.0]);
        assert!(OutputFidelity::new("y").add(&r, &c).is_err());
    }
}
