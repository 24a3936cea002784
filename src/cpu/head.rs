//! CPU twin of `shaders/head.wgsl`: fc2 forward, softmax cross-entropy (metrics) and, with the
//! backward, dlogits, fc2's gradients and fc1's ReLU-masked output gradient, composed of the
//! unfused CPU ops in the order the unfused GPU step runs them.

use super::loss::Metrics;
use super::{Real, act, dense, loss};
use crate::params::{ActParams, HEAD_CLASSES, HeadParams};

/// The head's inputs: fc1's ReLU output `h [B,hidden]`, fc2's `w [10,hidden]` and `bias [10]`,
/// and the labels `[B]`.
pub struct HeadInputs<'a, T> {
    pub h: &'a [T],
    pub w: &'a [T],
    pub bias: &'a [T],
    pub labels: &'a [u32],
}

/// The backward's outputs: `dlogits [B,10]` (a by-product the GPU keeps in workgroup memory),
/// `dw [10,hidden]`, `db [10]` and `dh [B,hidden] = (dlogits w) * (h > 0)`.
pub struct HeadGrads<'a, T> {
    pub dlogits: &'a mut [T],
    pub dw: &'a mut [T],
    pub db: &'a mut [T],
    pub dh: &'a mut [T],
}

/// `logits = h w^T + bias`; rows below `valid` add their loss and correct count to `metrics`
/// (as `loss::softmax_xent_forward`); with `grads`, the backward. Returns this batch's loss sum.
pub fn head<T: Real>(
    p: &HeadParams,
    valid: u32,
    x: &HeadInputs<T>,
    logits: &mut [T],
    metrics: &mut Metrics,
    grads: Option<HeadGrads<T>>,
) -> T {
    let (fc2, lp) = (p.fc2(), p.loss());
    let n = p.batch as usize * HEAD_CLASSES as usize;
    dense::forward(&fc2, x.h, x.w, x.bias, logits);
    let mut probs = vec![T::ZERO; n];
    let batch_loss = loss::softmax_xent_forward(&lp, valid, logits, x.labels, &mut probs, metrics);
    if let Some(g) = grads {
        loss::softmax_xent_backward(&lp, valid, &probs, x.labels, g.dlogits);
        dense::backward_weight(&fc2, x.h, g.dlogits, g.dw);
        dense::backward_bias(&fc2, g.dlogits, g.db);
        let hn = p.batch as usize * p.hidden as usize;
        let mut dh_pre = vec![T::ZERO; hn];
        dense::backward_input(&fc2, g.dlogits, x.w, &mut dh_pre);
        let relu = ActParams {
            n: hn as u32,
            threshold: 0,
            scale: 1.0,
            seed: 0,
        };
        act::relu_backward(&relu, x.h, &dh_pre, g.dh);
    }
    batch_loss
}
