// Softmax cross-entropy over `batch` rows of `classes` logits (CPU twin: src/cpu/loss.rs).
// Only the first `valid` rows count (the last batch of an epoch can be short); `valid` comes from
// StepState exactly as `StepState::valid()` computes it.

struct LossParams {
    batch: u32,
    classes: u32,
    // Target = (1 - ls) * onehot + ls / classes; 0 gives plain cross-entropy bit for bit
    // (the extra terms are exact zeros).
    label_smoothing: f32,
    _p1: u32,
}

struct StepState {
    epoch_step: u32,
    t: u32,
    n: u32,
    batch: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: LossParams;
@group(0) @binding(1) var<storage, read> state: StepState;

// softmax_xent_forward: logits [B,classes], labels [B] -> probs [B,classes], metrics (accumulated;
// the loss is the label-smoothed one when label_smoothing > 0)
@group(0) @binding(2) var<storage, read> f_logits: array<f32>;
@group(0) @binding(3) var<storage, read> f_labels: array<u32>;
@group(0) @binding(4) var<storage, read_write> f_probs: array<f32>;
// [0] running loss sum (f32 bits), [1] running correct count, [2] running rows seen, [3] unused.
@group(0) @binding(5) var<storage, read_write> metrics: array<u32, 4>;

// softmax_xent_backward: probs, labels -> dlogits
@group(0) @binding(2) var<storage, read> b_probs: array<f32>;
@group(0) @binding(3) var<storage, read> b_labels: array<u32>;
@group(0) @binding(4) var<storage, read_write> b_dlogits: array<f32>;

var<workgroup> red_loss: array<f32, WG>;
var<workgroup> red_correct: array<u32, WG>;

fn valid_rows() -> u32 {
    let start = state.epoch_step * state.batch;
    var v = 0u;
    if (state.n > start) {
        v = min(state.n - start, state.batch);
    }
    // Never past the rows this dispatch was built for, whatever the state says.
    return min(v, p.batch);
}

// One workgroup of 256 for the whole batch, grid (1,1,1): invocation t handles rows t, t+256, ...
// in ascending order (writing their probabilities), then a fixed-shape tree adds the per-invocation
// loss sums and correct counts and invocation 0 adds them to `metrics`. No atomics: one writer.
@compute @workgroup_size(256)
fn softmax_xent_forward(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let valid = valid_rows();
    let c = p.classes;
    var loss = 0.0;
    var correct = 0u;
    for (var r = t; r < p.batch; r += WG) {
        let base = r * c;
        // Argmax on the logits, ties to the first maximum; the max also stabilises exp.
        var mx = f_logits[base];
        var arg = 0u;
        for (var j = 1u; j < c; j++) {
            let z = f_logits[base + j];
            if (z > mx) {
                mx = z;
                arg = j;
            }
        }
        var sum = 0.0;
        var zsum = 0.0;
        for (var j = 0u; j < c; j++) {
            sum += exp(f_logits[base + j] - mx);
            zsum += f_logits[base + j] - mx;
        }
        for (var j = 0u; j < c; j++) {
            f_probs[base + j] = exp(f_logits[base + j] - mx) / sum;
        }
        if (r < valid) {
            let label = f_labels[r];
            // log-sum-exp form of -sum_j target_j log p_j (weights summing to 1), without
            // underflow when a probability is tiny.
            let ls = p.label_smoothing;
            let zy = f_logits[base + min(label, c - 1u)] - mx;
            loss += log(sum) - ((1.0 - ls) * zy + ls / f32(c) * zsum);
            if (arg == label) {
                correct += 1u;
            }
        }
    }
    red_loss[t] = loss;
    red_correct[t] = correct;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (t < h) {
            red_loss[t] += red_loss[t + h];
            red_correct[t] += red_correct[t + h];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        metrics[0] = bitcast<u32>(bitcast<f32>(metrics[0]) + red_loss[0]);
        metrics[1] = metrics[1] + red_correct[0];
        metrics[2] = metrics[2] + valid;
    }
}

// dlogits[r,j] = (probs[r,j] - target[r,j]) / valid for r < valid, else 0, with
// target = (1 - ls) * onehot(label) + ls / classes.
// One invocation per element of [B,classes], workgroups of 256, 1-D grid split over y.
@compute @workgroup_size(256)
fn softmax_xent_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.batch * p.classes) {
        return;
    }
    let r = i / p.classes;
    let j = i % p.classes;
    let valid = valid_rows();
    var g = 0.0;
    if (r < valid) {
        let ls = p.label_smoothing;
        let tgt = (1.0 - ls) * select(0.0, 1.0, b_labels[r] == j) + ls / f32(p.classes);
        g = (b_probs[i] - tgt) / f32(valid);
    }
    b_dlogits[i] = g;
}
