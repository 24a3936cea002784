// The dense tail in one dispatch (CPU twin: src/cpu/head.rs): fc2 forward (logits = h W2^T + b2),
// softmax cross-entropy forward with the metrics of loss.softmax_xent_forward, and, when
// BACKWARD, the backward of both: dlogits, dW2 = dlogits^T h, db2 = sum_b dlogits and
// dh = (dlogits W2) * (h > 0) (fc1's ReLU derivative, h being fc1's ReLU output).
//
// One workgroup of 256 for the whole batch: the batch reductions (dW2, db2, the metrics) need
// every row's dlogits, and WGSL has no grid-wide barrier. fc2 is small (10 x hidden), so one
// workgroup keeps the whole tail in one dispatch. Every sum has the order of the unfused kernels
// it replaces (dense.forward, loss.*, dense.backward_{weight,bias,input}, act.relu_backward), so
// results are bit-identical run to run and, where the compiler contracts alike, to the unfused
// chain.
//
// lavapipe (Mesa 22.3) stops all loops of an invocation after 65,535 iterations in total, so the
// per-row class loops of the column phase are unrolled by hand; an invocation runs about
// ceil(B/256) * hidden + ceil(hidden/256) * B iterations, under the cap for B * hidden up to
// about 8M (batch 4096 at hidden 1024 uses about half of it). GPUs have no such cap.

struct HeadParams {
    batch: u32,
    // Must equal HIDDEN (the host builds one pipeline per hidden width).
    hidden: u32,
    // As LossParams.label_smoothing: 0 gives plain cross-entropy bit for bit.
    label_smoothing: f32,
    _p1: u32,
}

struct StepState {
    epoch_step: u32,
    t: u32,
    n: u32,
    batch: u32,
}

// fc2's outputs: the model's 10 classes, fixed so the class loops can be unrolled.
const CLASSES: u32 = 10u;
const WG: u32 = 256u;
// Rows per chunk: one per invocation, so invocation t handles rows t, t+256, ... as
// loss.softmax_xent_forward does (same per-invocation loss sums, same tree).
const CHUNK: u32 = WG;
// db2 follows dense.backward_bias: 64 lanes, lane l summing rows l, l+64, ..., then a tree.
const LANES: u32 = 64u;

// Training runs with the backward; evaluation builds the pipeline with BACKWARD = false and only
// writes logits and metrics (dw, db, dh are then bound but never touched).
override BACKWARD: bool = true;
// fc1's width (fc2's input): an override, so every loop over it has a constant trip count and
// the column phase's stride arithmetic is constant. The batch stays in the uniform (it varies).
override HIDDEN: u32 = 128u;

@group(0) @binding(0) var<uniform> p: HeadParams;
@group(0) @binding(1) var<storage, read> state: StepState;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> labels: array<u32>;
@group(0) @binding(6) var<storage, read_write> logits: array<f32>;
// [0] running loss sum (f32 bits), [1] running correct count, [2] running rows seen, [3] unused:
// the layout and accumulation of loss.wgsl's metrics.
@group(0) @binding(7) var<storage, read_write> metrics: array<u32, 4>;
@group(0) @binding(8) var<storage, read_write> dw: array<f32>;
@group(0) @binding(9) var<storage, read_write> db: array<f32>;
@group(0) @binding(10) var<storage, read_write> dh: array<f32>;

// The chunk's dlogits, row b at [3b] (classes 0-3), [3b+1] (4-7), [3b+2].xy (8, 9).
var<workgroup> dl_s: array<vec4<f32>, 768>;
// Tree scratch: the loss sums (first 256), then db2's 10 x 64 lane sums.
var<workgroup> red: array<f32, 640>;
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

// sum_c d[c] * wc[c] in ascending c, one rounding per step like dense.backward_input's chain.
fn dot10(d0: vec4<f32>, d1: vec4<f32>, d2: vec2<f32>, w0: vec4<f32>, w1: vec4<f32>, w2: vec2<f32>) -> f32 {
    var s = 0.0;
    s += d0.x * w0.x;
    s += d0.y * w0.y;
    s += d0.z * w0.z;
    s += d0.w * w0.w;
    s += d1.x * w1.x;
    s += d1.y * w1.y;
    s += d1.z * w1.z;
    s += d1.w * w1.w;
    s += d2.x * w2.x;
    s += d2.y * w2.y;
    return s;
}

// Shape: h [B,HIDDEN], w [10,HIDDEN], bias [10], labels [B] -> logits [B,10], metrics
// (accumulated); with BACKWARD also dw [10,HIDDEN], db [10], dh [B,HIDDEN].
// Grid (1,1,1), workgroup 256. The batch is walked in chunks of 256 rows:
//   row phase: invocation t computes row r0+t (its 10 logits over k ascending, softmax, loss,
//     correct, dlogits into dl_s);
//   lane phase: invocation t = 64g + l adds rows l, l+64, ... of the chunk to db2 lane sums of
//     classes g, g+4, g+8;
//   column phase: invocation t owns columns k = t, t+256, ...: dw[c,k] continues its chain over
//     the chunk's rows (kept in dw between chunks, so the order is ascending b throughout), and
//     dh[b,k] = dot10(dlogits[b], w[:,k]) where h[b,k] > 0.
// Then fixed-shape trees for the metrics and db2.
@compute @workgroup_size(256)
fn head(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let valid = valid_rows();
    let hid = HIDDEN;
    let ls = p.label_smoothing;
    let lane = t % LANES;
    let cg = t / LANES;
    var loss = 0.0;
    var correct = 0u;
    // db2 lane sums of classes cg, cg + 4, cg + 8 (the last only for groups 0 and 1).
    var dbp = vec3<f32>(0.0);
    for (var r0 = 0u; r0 < p.batch; r0 += CHUNK) {
        let r = r0 + t;
        var dl0 = vec4<f32>(0.0);
        var dl1 = vec4<f32>(0.0);
        var dl2 = vec2<f32>(0.0);
        if (r < p.batch) {
            // y[r,c] = bias[c] + sum_k h[r,k] w[c,k], k ascending (dense.forward's order).
            var a0 = vec4<f32>(0.0);
            var a1 = vec4<f32>(0.0);
            var a2 = vec2<f32>(0.0);
            let hr = r * hid;
            for (var k = 0u; k < hid; k++) {
                let hv = h[hr + k];
                a0 += hv * vec4<f32>(w[k], w[hid + k], w[2u * hid + k], w[3u * hid + k]);
                a1 += hv * vec4<f32>(w[4u * hid + k], w[5u * hid + k], w[6u * hid + k], w[7u * hid + k]);
                a2 += hv * vec2<f32>(w[8u * hid + k], w[9u * hid + k]);
            }
            var z: array<f32, 10>;
            z[0] = a0.x + bias[0];
            z[1] = a0.y + bias[1];
            z[2] = a0.z + bias[2];
            z[3] = a0.w + bias[3];
            z[4] = a1.x + bias[4];
            z[5] = a1.y + bias[5];
            z[6] = a1.z + bias[6];
            z[7] = a1.w + bias[7];
            z[8] = a2.x + bias[8];
            z[9] = a2.y + bias[9];
            for (var j = 0u; j < CLASSES; j++) {
                logits[r * CLASSES + j] = z[j];
            }
            // From here as loss.softmax_xent_forward/backward, on the same f32 logits.
            var mx = z[0];
            var arg = 0u;
            for (var j = 1u; j < CLASSES; j++) {
                if (z[j] > mx) {
                    mx = z[j];
                    arg = j;
                }
            }
            var sum = 0.0;
            var zsum = 0.0;
            for (var j = 0u; j < CLASSES; j++) {
                sum += exp(z[j] - mx);
                zsum += z[j] - mx;
            }
            if (r < valid) {
                let label = labels[r];
                let zy = z[min(label, CLASSES - 1u)] - mx;
                loss += log(sum) - ((1.0 - ls) * zy + ls / f32(CLASSES) * zsum);
                if (arg == label) {
                    correct += 1u;
                }
                if (BACKWARD) {
                    var g: array<f32, 10>;
                    for (var j = 0u; j < CLASSES; j++) {
                        let prob = exp(z[j] - mx) / sum;
                        let tgt = (1.0 - ls) * select(0.0, 1.0, label == j) + ls / f32(CLASSES);
                        g[j] = (prob - tgt) / f32(valid);
                    }
                    dl0 = vec4<f32>(g[0], g[1], g[2], g[3]);
                    dl1 = vec4<f32>(g[4], g[5], g[6], g[7]);
                    dl2 = vec2<f32>(g[8], g[9]);
                }
            }
        }
        if (BACKWARD) {
            dl_s[3u * t] = dl0;
            dl_s[3u * t + 1u] = dl1;
            dl_s[3u * t + 2u] = vec4<f32>(dl2, 0.0, 0.0);
            workgroupBarrier();
            let rows = min(CHUNK, p.batch - r0);
            // db2 lanes: rows lane, lane + 64, ... of the chunk, as dense.backward_bias strides.
            for (var b = lane; b < rows; b += LANES) {
                let d0 = dl_s[3u * b];
                let d1 = dl_s[3u * b + 1u];
                let d2 = dl_s[3u * b + 2u];
                // Class cg of d0, cg + 4 of d1, cg + 8 of d2 (groups 0, 1 only).
                dbp.x += d0[cg];
                dbp.y += d1[cg];
                if (cg < 2u) {
                    dbp.z += d2[cg];
                }
            }
            for (var k = t; k < hid; k += WG) {
                let w0 = vec4<f32>(w[k], w[hid + k], w[2u * hid + k], w[3u * hid + k]);
                let w1 = vec4<f32>(w[4u * hid + k], w[5u * hid + k], w[6u * hid + k], w[7u * hid + k]);
                let w2 = vec2<f32>(w[8u * hid + k], w[9u * hid + k]);
                var c0 = vec4<f32>(0.0);
                var c1 = vec4<f32>(0.0);
                var c2 = vec2<f32>(0.0);
                if (r0 > 0u) {
                    // Our own partial sums from the previous chunks (same invocation).
                    c0 = vec4<f32>(dw[k], dw[hid + k], dw[2u * hid + k], dw[3u * hid + k]);
                    c1 = vec4<f32>(dw[4u * hid + k], dw[5u * hid + k], dw[6u * hid + k], dw[7u * hid + k]);
                    c2 = vec2<f32>(dw[8u * hid + k], dw[9u * hid + k]);
                }
                for (var b = 0u; b < rows; b++) {
                    let d0 = dl_s[3u * b];
                    let d1 = dl_s[3u * b + 1u];
                    let d2 = dl_s[3u * b + 2u].xy;
                    let i = (r0 + b) * hid + k;
                    let hv = h[i];
                    c0 += d0 * hv;
                    c1 += d1 * hv;
                    c2 += d2 * hv;
                    dh[i] = select(0.0, dot10(d0, d1, d2, w0, w1, w2), hv > 0.0);
                }
                dw[k] = c0.x;
                dw[hid + k] = c0.y;
                dw[2u * hid + k] = c0.z;
                dw[3u * hid + k] = c0.w;
                dw[4u * hid + k] = c1.x;
                dw[5u * hid + k] = c1.y;
                dw[6u * hid + k] = c1.z;
                dw[7u * hid + k] = c1.w;
                dw[8u * hid + k] = c2.x;
                dw[9u * hid + k] = c2.y;
            }
            // dl_s is rewritten by the next chunk's row phase.
            workgroupBarrier();
        }
    }
    // A batch of 0 rows still has a (zero) dw: the column phase above never ran.
    if (BACKWARD && p.batch == 0u) {
        for (var i = t; i < CLASSES * hid; i += WG) {
            dw[i] = 0.0;
        }
    }
    red[t] = loss;
    red_correct[t] = correct;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (t < s) {
            red[t] += red[t + s];
            red_correct[t] += red_correct[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        metrics[0] = bitcast<u32>(bitcast<f32>(metrics[0]) + red[0]);
        metrics[1] = metrics[1] + red_correct[0];
        metrics[2] = metrics[2] + valid;
    }
    if (BACKWARD) {
        // red[0] was read above by invocation 0 only; every invocation passes this barrier
        // before the lane sums overwrite it.
        workgroupBarrier();
        red[cg * LANES + lane] = dbp.x;
        red[(cg + 4u) * LANES + lane] = dbp.y;
        if (cg < 2u) {
            red[(cg + 8u) * LANES + lane] = dbp.z;
        }
        workgroupBarrier();
        // dense.backward_bias's tree, per class.
        for (var s = LANES / 2u; s > 0u; s = s / 2u) {
            if (lane < s) {
                red[cg * LANES + lane] += red[cg * LANES + lane + s];
                red[(cg + 4u) * LANES + lane] += red[(cg + 4u) * LANES + lane + s];
                if (cg < 2u) {
                    red[(cg + 8u) * LANES + lane] += red[(cg + 8u) * LANES + lane + s];
                }
            }
            workgroupBarrier();
        }
        if (t < CLASSES) {
            db[t] = red[t * LANES];
        }
    }
}
