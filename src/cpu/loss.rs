//! Softmax cross-entropy: forward (probabilities, loss sum, correct count) and backward.

use super::Real;
use crate::params::LossParams;

/// Running sums over an epoch, mirroring the GPU's metrics buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    pub loss_sum: f32,
    pub correct: u32,
    pub seen: u32,
}

/// Index of the first maximum.
pub fn argmax<T: Real>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Writes softmax probabilities for every row; rows `< valid` add `-sum_j target_j ln p_j` (target
/// `(1 - ls) * onehot(label) + ls / classes`, `ls = p.label_smoothing`) and the correct count to
/// `metrics`. Returns this batch's loss sum in `T` (for gradient checks).
pub fn softmax_xent_forward<T: Real>(
    p: &LossParams,
    valid: u32,
    logits: &[T],
    labels: &[u32],
    probs: &mut [T],
    metrics: &mut Metrics,
) -> T {
    let k = p.classes as usize;
    let ls = T::from_f64(p.label_smoothing as f64);
    let ls_k = ls / T::from_f64(k as f64);
    let mut batch_loss = T::ZERO;
    for r in 0..p.batch as usize {
        let z = &logits[r * k..][..k];
        let m = z.iter().fold(z[0], |a, &b| a.max(b));
        let (mut s, mut zsum) = (T::ZERO, T::ZERO);
        for &v in z {
            s += (v - m).exp();
            zsum += v - m;
        }
        let pr = &mut probs[r * k..][..k];
        for (o, &v) in pr.iter_mut().zip(z) {
            *o = (v - m).exp() / s;
        }
        if (r as u32) < valid {
            let label = labels[r] as usize;
            // At ls = 0 the smoothing terms are exact zeros: plain cross-entropy, bit for bit.
            let loss = s.ln() - ((T::ONE - ls) * (z[label] - m) + ls_k * zsum);
            batch_loss += loss;
            if argmax(z) == label {
                metrics.correct += 1;
            }
            metrics.seen += 1;
        }
    }
    metrics.loss_sum += batch_loss.to_f64() as f32;
    batch_loss
}

/// `dlogits = (probs - target) / valid` for rows below `valid`, zero for the rest, with
/// `target = (1 - ls) * onehot(label) + ls / classes`.
pub fn softmax_xent_backward<T: Real>(
    p: &LossParams,
    valid: u32,
    probs: &[T],
    labels: &[u32],
    dlogits: &mut [T],
) {
    let k = p.classes as usize;
    let inv = T::ONE / T::from_f64(valid.max(1) as f64);
    let ls = T::from_f64(p.label_smoothing as f64);
    let ls_k = ls / T::from_f64(k as f64);
    for r in 0..p.batch as usize {
        let d = &mut dlogits[r * k..][..k];
        if (r as u32) < valid {
            for (c, (o, &pv)) in d.iter_mut().zip(&probs[r * k..][..k]).enumerate() {
                let y = if c == labels[r] as usize {
                    T::ONE
                } else {
                    T::ZERO
                };
                *o = (pv - ((T::ONE - ls) * y + ls_k)) * inv;
            }
        } else {
            d.fill(T::ZERO);
        }
    }
}
