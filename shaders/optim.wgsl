// Optimizer updates (CPU twins: src/cpu/optim.rs). Two kinds of entry point share the per-element
// rules below (`wame_rule`, `adam_rule`, `rmsprop_rule`, `sgd_rule`):
// - `wame`, `adam`, `rmsprop`, `sgd`: one dispatch per parameter tensor of n elements;
// - `update_wame`, `update_adam`, `update_rmsprop`, `update_sgd`: one dispatch for every tensor
//   of the model, parameters, gradients and state each in one arena binding, the gradient
//   summed from its split-K partials first (see the table `UpdateRecord`).
// - `stats_wame`, `stats_adam`, `stats_rmsprop`, `stats_sgd`: the optimizer statistics, once
//   per epoch, recorded just before the epoch's last `update_*` (see the section at the end).
// Every entry point: one invocation per element, workgroups of 256, the 1-D grid split over y
// (x <= 65535 workgroups) and rebuilt as a flat index. Per-element state is interleaved so one
// element's state is one vector load.

struct WameParams {
    n: u32,
    variant: u32,
    lr: f32,
    alpha: f32,
    eta_plus: f32,
    eta_minus: f32,
    zeta_min: f32,
    zeta_max: f32,
    eps: f32,
    warmup: u32,
    weight_decay: f32,
    _p2: u32,
}

// ln_b1, ln_b2: ln(b1), ln(b2) from the host in f64, rounded once (for `one_minus_pow`).
struct OptParams {
    n: u32,
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    warmup: u32,
    weight_decay: f32,
    ln_b1: f32,
    ln_b2: f32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

// One tensor of the fused update: workgroups [wg_begin, wg_end) update its n elements; its
// parameters start at param_off of the params arena, its `parts` partial gradients at grad_off
// of the grads arena (partial s of element j at grad_off + s * n + j), its state at state_off of
// the state arena. Offsets are in f32 elements from the start of each binding.
struct UpdateRecord {
    wg_begin: u32,
    wg_end: u32,
    n: u32,
    parts: u32,
    param_off: u32,
    grad_off: u32,
    state_off: u32,
    _p0: u32,
}

struct StepState {
    epoch_step: u32,
    t: u32,
    n: u32,
    batch: u32,
}

const WG: u32 = 256u;

// wame: w, g, state (zeta, Z, theta, g_prev), step (StepState.t + 1, for the warm-up)
@group(0) @binding(0) var<uniform> wp: WameParams;
@group(0) @binding(1) var<storage, read_write> wm_w: array<f32>;
@group(0) @binding(2) var<storage, read> wm_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> wm_state: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> wm_step: StepState;

// adam: step (StepState.t + 1), w, g, state (m, v)
@group(0) @binding(0) var<uniform> op: OptParams;
@group(0) @binding(1) var<storage, read> state: StepState;
@group(0) @binding(2) var<storage, read_write> ad_w: array<f32>;
@group(0) @binding(3) var<storage, read> ad_g: array<f32>;
@group(0) @binding(4) var<storage, read_write> ad_state: array<vec2<f32>>;

// rmsprop: w, g, v, step (StepState.t + 1, for the warm-up)
@group(0) @binding(1) var<storage, read_write> rm_w: array<f32>;
@group(0) @binding(2) var<storage, read> rm_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> rm_v: array<f32>;
@group(0) @binding(4) var<storage, read> rm_step: StepState;

// sgd: step (StepState.t + 1), w, g, b (momentum buffer)
@group(0) @binding(2) var<storage, read_write> sg_w: array<f32>;
@group(0) @binding(3) var<storage, read> sg_g: array<f32>;
@group(0) @binding(4) var<storage, read_write> sg_b: array<f32>;

// Linear warm-up (`--warmup-steps`): step k (from 1) of `warmup` runs at lr * k / warmup.
// WAME needs it most: Z starts at 0, so its first steps move each weight by up to 30 * lr.
// Same expression as the CPU twin `warm_lr`.
fn warm_lr(lr: f32, warmup: u32, k: u32) -> f32 {
    if (k < warmup) {
        return lr * (f32(k) / f32(warmup));
    }
    return lr;
}

// Decoupled weight decay (`--weight-decay`, AdamW's form): the factor the weights are scaled by
// before the step. 1 exactly when wd is 0, so runs without it are bit-identical to before.
fn decay(lr: f32, wd: f32) -> f32 {
    return 1.0 - lr * wd;
}

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// 1 - b^t for a beta b in [0, 1) at step t >= 1, from ln_b = ln(b) computed on the host in f64
// and rounded once. SPEC 5 wants it exact to f32 rounding for every t (PyTorch computes it in
// double); `1 - pow(b, t)` is not: pow is an approximation on GPUs, and for b = 0.999 its
// error of a few ulps of b^t ~ 1 becomes a relative error of ~1e-5 of 1 - b^t ~ 1e-3.
// Here 1 - b^t = -expm1(x), x = t * ln_b <= 0, with no device pow, exp or log:
// - x < -20: b^t < 2.1e-9 is below half an ulp of 1, so 1 - b^t rounds to 1 (also b = 0, whose
//   ln_b is -inf);
// - else halve x k <= 6 times until |y| <= 0.5 (exact: powers of two), sum the Taylor series of
//   expm1(y) to y^9/9! (truncation < 7e-10 relative for |y| <= 0.5) in Horner form, and undo the
//   halvings with expm1(2y) = e * (e + 2), e = expm1(y). For e in (-1, 0) that doubling scales the
//   relative error by 1 + e / (e + 2) < 1, so errors shrink instead of compounding.
// Condition number of expm1 is |x e^x / expm1(x)| <= 1 for x <= 0, so the roundings of ln_b and
// of t * ln_b add at most about one ulp each. The CPU model of this code
// (`cpu::optim::one_minus_pow_f32`) stays within 3 ulps of the f64 value 1 - b^t for every
// t <= 2^24 and the betas tested (test `bias_correction_is_exact_to_a_few_ulps`); the kernel
// table checks the shader against f64 at t = 1, 2, 10, 1000 and 100000.
fn one_minus_pow(ln_b: f32, t: u32) -> f32 {
    let x = f32(t) * ln_b;
    if (x < -20.0) {
        return 1.0;
    }
    var y = x;
    var k = 0u;
    // 20 / 2^6 < 0.5: six halvings always suffice, and the trip count stays tiny (lavapipe).
    for (var i = 0u; i < 6u; i++) {
        if (y >= -0.5) {
            break;
        }
        y = y * 0.5;
        k += 1u;
    }
    var p = 1.0 + y / 9.0;
    p = 1.0 + y / 8.0 * p;
    p = 1.0 + y / 7.0 * p;
    p = 1.0 + y / 6.0 * p;
    p = 1.0 + y / 5.0 * p;
    p = 1.0 + y / 4.0 * p;
    p = 1.0 + y / 3.0 * p;
    p = 1.0 + y / 2.0 * p;
    var e = y * p;
    for (var i = 0u; i < k; i++) {
        e = e * (e + 2.0);
    }
    return -e;
}

// One element's WAME update (SPEC 5, in the spec's order): the new weight and state.
struct WameOut {
    w: f32,
    st: vec4<f32>,
}

// The multiplier of WAME's step for the variant: seed zeta / Z, paper Z, inverse 1 / Z.
fn wame_multiplier(zeta: f32, z: f32) -> f32 {
    switch wp.variant {
        case 1u: {
            return z;
        }
        case 2u: {
            return 1.0 / z;
        }
        default: {
            return zeta / z;
        }
    }
}

// WAME per element. The sign product, not g*g_prev, decides the zeta update so that products of
// tiny gradients cannot underflow to "no sign information". `lr` is the warmed-up rate.
fn wame_rule(w: f32, g: f32, st: vec4<f32>, lr: f32) -> WameOut {
    var zeta = st.x;
    var z = st.y;
    var theta = st.z;
    let g_prev = st.w;
    let s = sign(g) * sign(g_prev);
    if (s > 0.0) {
        zeta = min(zeta * wp.eta_plus, wp.zeta_max);
    } else if (s < 0.0) {
        zeta = max(zeta * wp.eta_minus, wp.zeta_min);
    }
    z = wp.alpha * z + (1.0 - wp.alpha) * zeta;
    theta = wp.alpha * theta + (1.0 - wp.alpha) * g * g;
    let m = wame_multiplier(zeta, z);
    let nw = w * decay(lr, wp.weight_decay) - lr * m * g / sqrt(theta + wp.eps);
    return WameOut(nw, vec4<f32>(zeta, z, theta, g));
}

// Adam per element: (new w, new m, new v), bias corrections bc1, bc2 from `one_minus_pow`.
fn adam_rule(w: f32, g: f32, st: vec2<f32>, lr: f32, bc1: f32, bc2: f32) -> vec3<f32> {
    let m = op.b1 * st.x + (1.0 - op.b1) * g;
    let v = op.b2 * st.y + (1.0 - op.b2) * g * g;
    let nw = w * decay(lr, op.weight_decay) - lr * (m / bc1) / (sqrt(v / bc2) + op.eps);
    return vec3<f32>(nw, m, v);
}

// RMSprop per element, b2 is its smoothing constant alpha: (new w, new v).
fn rmsprop_rule(w: f32, g: f32, v0: f32, lr: f32) -> vec2<f32> {
    let v = op.b2 * v0 + (1.0 - op.b2) * g * g;
    return vec2<f32>(w * decay(lr, op.weight_decay) - lr * g / (sqrt(v) + op.eps), v);
}

// SGD with momentum mu = b1 per element: (new w, new b); the buffer starts at g on step k == 1,
// as PyTorch does.
fn sgd_rule(w: f32, g: f32, b0: f32, lr: f32, k: u32) -> vec2<f32> {
    var b = g;
    if (k != 1u) {
        b = op.b1 * b0 + g;
    }
    return vec2<f32>(w * decay(lr, op.weight_decay) - lr * b, b);
}

// wame: [n] weights, one invocation per element (see the file header).
@compute @workgroup_size(256)
fn wame(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= wp.n) {
        return;
    }
    let lr = warm_lr(wp.lr, wp.warmup, wm_step.t + 1u);
    let r = wame_rule(wm_w[i], wm_g[i], wm_state[i], lr);
    wm_w[i] = r.w;
    wm_state[i] = r.st;
}

// adam: [n] weights, one invocation per element; t = StepState.t + 1.
@compute @workgroup_size(256)
fn adam(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= op.n) {
        return;
    }
    let k = state.t + 1u;
    let lr = warm_lr(op.lr, op.warmup, k);
    let r = adam_rule(ad_w[i], ad_g[i], ad_state[i], lr, one_minus_pow(op.ln_b1, k), one_minus_pow(op.ln_b2, k));
    ad_w[i] = r.x;
    ad_state[i] = r.yz;
}

// rmsprop: [n] weights, one invocation per element.
@compute @workgroup_size(256)
fn rmsprop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= op.n) {
        return;
    }
    let lr = warm_lr(op.lr, op.warmup, rm_step.t + 1u);
    let r = rmsprop_rule(rm_w[i], rm_g[i], rm_v[i], lr);
    rm_w[i] = r.x;
    rm_v[i] = r.y;
}

// sgd: [n] weights, one invocation per element.
@compute @workgroup_size(256)
fn sgd(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= op.n) {
        return;
    }
    let k = state.t + 1u;
    let r = sgd_rule(sg_w[i], sg_g[i], sg_b[i], warm_lr(op.lr, op.warmup, k), k);
    sg_w[i] = r.x;
    sg_b[i] = r.y;
}

// ---- The fused update: every parameter tensor in one dispatch. ----
// Bindings of update_*: 0 params uniform (WameParams or OptParams; its `n` is unused), 1 the
// StepState, 2 the tensor table, 3 the params arena, 4 the grads arena, 5 the state arena (as
// vec4 for WAME, vec2 for Adam, f32 for RMSprop and SGD: state_off is a multiple of the width).
@group(0) @binding(1) var<storage, read> up_step: StepState;
@group(0) @binding(2) var<storage, read> up_table: array<UpdateRecord>;
@group(0) @binding(3) var<storage, read_write> up_w: array<f32>;
@group(0) @binding(4) var<storage, read> up_g: array<f32>;
@group(0) @binding(5) var<storage, read_write> up_s4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> up_s2: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> up_s1: array<f32>;

// Where one invocation of the fused update works: its tensor's record and element, `ok` false
// for invocations past the tensor's end and for the padding workgroups of the 2-D split.
struct Slot {
    ok: bool,
    rec: UpdateRecord,
    j: u32,
}

// The record whose workgroup range holds this workgroup (a scan of the few records: the same
// for every invocation of the workgroup), and the element index inside that tensor.
fn slot(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> Slot {
    let g = wid.y * nwg.x + wid.x;
    var out: Slot;
    out.ok = false;
    let count = arrayLength(&up_table);
    for (var r = 0u; r < count; r++) {
        let rec = up_table[r];
        if (g >= rec.wg_begin && g < rec.wg_end) {
            out.rec = rec;
            out.j = (g - rec.wg_begin) * WG + lid.x;
            out.ok = out.j < rec.n;
            break;
        }
    }
    return out;
}

// g = partial[0] + partial[1] + ... + partial[parts - 1], added in ascending part order from
// partial 0 (`sum_partials`' order; parts == 1 reads the full gradient unchanged).
fn grad_sum(rec: UpdateRecord, j: u32) -> f32 {
    var g = up_g[rec.grad_off + j];
    for (var s = 1u; s < rec.parts; s++) {
        g = g + up_g[rec.grad_off + s * rec.n + j];
    }
    return g;
}

// update_wame: one invocation per element of every tensor in the table (file header, `slot`).
@compute @workgroup_size(256)
fn update_wame(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let at = slot(wid, nwg, lid);
    if (!at.ok) {
        return;
    }
    let wi = at.rec.param_off + at.j;
    let si = at.rec.state_off / 4u + at.j;
    let lr = warm_lr(wp.lr, wp.warmup, up_step.t + 1u);
    let r = wame_rule(up_w[wi], grad_sum(at.rec, at.j), up_s4[si], lr);
    up_w[wi] = r.w;
    up_s4[si] = r.st;
}

// update_adam: as update_wame; t = StepState.t + 1.
@compute @workgroup_size(256)
fn update_adam(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let at = slot(wid, nwg, lid);
    if (!at.ok) {
        return;
    }
    let wi = at.rec.param_off + at.j;
    let si = at.rec.state_off / 2u + at.j;
    let k = up_step.t + 1u;
    let lr = warm_lr(op.lr, op.warmup, k);
    let bc1 = one_minus_pow(op.ln_b1, k);
    let bc2 = one_minus_pow(op.ln_b2, k);
    let r = adam_rule(up_w[wi], grad_sum(at.rec, at.j), up_s2[si], lr, bc1, bc2);
    up_w[wi] = r.x;
    up_s2[si] = r.yz;
}

// update_rmsprop: as update_wame.
@compute @workgroup_size(256)
fn update_rmsprop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let at = slot(wid, nwg, lid);
    if (!at.ok) {
        return;
    }
    let wi = at.rec.param_off + at.j;
    let si = at.rec.state_off + at.j;
    let lr = warm_lr(op.lr, op.warmup, up_step.t + 1u);
    let r = rmsprop_rule(up_w[wi], grad_sum(at.rec, at.j), up_s1[si], lr);
    up_w[wi] = r.x;
    up_s1[si] = r.y;
}

// update_sgd: as update_wame.
@compute @workgroup_size(256)
fn update_sgd(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let at = slot(wid, nwg, lid);
    if (!at.ok) {
        return;
    }
    let wi = at.rec.param_off + at.j;
    let si = at.rec.state_off + at.j;
    let k = up_step.t + 1u;
    let r = sgd_rule(up_w[wi], grad_sum(at.rec, at.j), up_s1[si], warm_lr(op.lr, op.warmup, k), k);
    up_w[wi] = r.x;
    up_s1[si] = r.y;
}

// ---- Optimizer statistics: once per epoch, just before the epoch's last fused update. ----
// Each invocation computes the update `update_*` is about to make to its element (the same rule
// on the same inputs; nothing but the partials is written) and adds it to its workgroup's
// StatsPartial: integer counts through workgroup atomics (exact in any order), four f32 sums
// through a fixed tree (lane i += lane i + s for s = 128, 64, ..., 1), so the result is the same
// bits on every run. The host sums a tensor's workgroups in f64 in ascending order. CPU twins:
// `cpu::optim::stats_*`, which reduce 256-element chunks in the same tree order.
// Bindings: 0-5 as `update_*`, 6 one StatsPartial per workgroup of the grid, 7 (WAME only) the
// bin edges of zeta: edges[0] = zeta_min < edges[1] < ... < edges[15], log-spaced to zeta_max.

struct StatsPartial {
    bins: array<u32, 16>,
    at_min: u32,
    at_max: u32,
    flips: u32,
    count: u32,
    mult: f32,
    step: f32,
    dw2: f32,
    w2: f32,
}

const STATS_BINS: u32 = 16u;
// Counters: bins 0-15, then at_min, at_max, flips, count.
const STATS_COUNTERS: u32 = 20u;

@group(0) @binding(6) var<storage, read_write> st_out: array<StatsPartial>;
@group(0) @binding(7) var<storage, read> st_edges: array<f32, 16>;

var<workgroup> st_count: array<atomic<u32>, 20>;
var<workgroup> st_sum: array<vec4<f32>, 256>;

fn stats_begin(lid: vec3<u32>) {
    if (lid.x < STATS_COUNTERS) {
        atomicStore(&st_count[lid.x], 0u);
    }
    workgroupBarrier();
}

// Tree-sums every lane's (mult, step, dw2, w2) and writes the workgroup's partial. Called from
// uniform control flow by every invocation (it has barriers).
fn stats_finish(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, sums: vec4<f32>) {
    st_sum[lid.x] = sums;
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        workgroupBarrier();
        if (lid.x < s) {
            st_sum[lid.x] = st_sum[lid.x] + st_sum[lid.x + s];
        }
    }
    workgroupBarrier();
    let g = wid.y * nwg.x + wid.x;
    if (g >= arrayLength(&st_out)) {
        return;
    }
    if (lid.x < STATS_BINS) {
        st_out[g].bins[lid.x] = atomicLoad(&st_count[lid.x]);
    }
    if (lid.x == 0u) {
        st_out[g].at_min = atomicLoad(&st_count[16u]);
        st_out[g].at_max = atomicLoad(&st_count[17u]);
        st_out[g].flips = atomicLoad(&st_count[18u]);
        st_out[g].count = atomicLoad(&st_count[19u]);
        let t = st_sum[0];
        st_out[g].mult = t.x;
        st_out[g].step = t.y;
        st_out[g].dw2 = t.z;
        st_out[g].w2 = t.w;
    }
}

// stats_wame: as update_wame, one invocation per element of every tensor in the table. Counts
// the new zeta's bin (the number of edges 1..15 at or below it), whether it sits at a bound, and
// whether the gradient's sign flipped; sums zeta / Z, |m g| / sqrt(theta + eps), dw^2 and w^2.
@compute @workgroup_size(256)
fn stats_wame(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let at = slot(wid, nwg, lid);
    stats_begin(lid);
    var sums = vec4<f32>(0.0);
    if (at.ok) {
        let wi = at.rec.param_off + at.j;
        let w = up_w[wi];
        let g = grad_sum(at.rec, at.j);
        let st = up_s4[at.rec.state_off / 4u + at.j];
        let r = wame_rule(w, g, st, warm_lr(wp.lr, wp.warmup, up_step.t + 1u));
        let zeta = r.st.x;
        var bin = 0u;
        for (var k = 1u; k < STATS_BINS; k++) {
            bin += select(0u, 1u, zeta >= st_edges[k]);
        }
        atomicAdd(&st_count[bin], 1u);
        if (zeta <= wp.zeta_min) {
            atomicAdd(&st_count[16u], 1u);
        }
        if (zeta >= wp.zeta_max) {
            atomicAdd(&st_count[17u], 1u);
        }
        if (sign(g) * sign(st.w) < 0.0) {
            atomicAdd(&st_count[18u], 1u);
        }
        atomicAdd(&st_count[19u], 1u);
        let m = wame_multiplier(zeta, r.st.y);
        let dw = r.w - w;
        sums = vec4<f32>(zeta / r.st.y, abs(m * g / sqrt(r.st.z + wp.eps)), dw * dw, w * w);
    }
    stats_finish(wid, nwg, lid, sums);
}

// stats_adam: as update_adam; sums |m^ / (sqrt(v^) + eps)|, dw^2 and w^2.
@compute @workgroup_size(256)
fn stats_adam(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let at = slot(wid, nwg, lid);
    stats_begin(lid);
    var sums = vec4<f32>(0.0);
    if (at.ok) {
        let wi = at.rec.param_off + at.j;
        let w = up_w[wi];
        let k = up_step.t + 1u;
        let bc1 = one_minus_pow(op.ln_b1, k);
        let bc2 = one_minus_pow(op.ln_b2, k);
        let r = adam_rule(w, grad_sum(at.rec, at.j), up_s2[at.rec.state_off / 2u + at.j], warm_lr(op.lr, op.warmup, k), bc1, bc2);
        atomicAdd(&st_count[19u], 1u);
        let dw = r.x - w;
        sums = vec4<f32>(0.0, abs((r.y / bc1) / (sqrt(r.z / bc2) + op.eps)), dw * dw, w * w);
    }
    stats_finish(wid, nwg, lid, sums);
}

// stats_rmsprop: as update_rmsprop; sums |g| / (sqrt(v) + eps), dw^2 and w^2.
@compute @workgroup_size(256)
fn stats_rmsprop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let at = slot(wid, nwg, lid);
    stats_begin(lid);
    var sums = vec4<f32>(0.0);
    if (at.ok) {
        let wi = at.rec.param_off + at.j;
        let w = up_w[wi];
        let g = grad_sum(at.rec, at.j);
        let r = rmsprop_rule(w, g, up_s1[at.rec.state_off + at.j], warm_lr(op.lr, op.warmup, up_step.t + 1u));
        atomicAdd(&st_count[19u], 1u);
        let dw = r.x - w;
        sums = vec4<f32>(0.0, abs(g / (sqrt(r.y) + op.eps)), dw * dw, w * w);
    }
    stats_finish(wid, nwg, lid, sums);
}

// stats_sgd: as update_sgd; sums |b| (the new momentum buffer), dw^2 and w^2.
@compute @workgroup_size(256)
fn stats_sgd(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let at = slot(wid, nwg, lid);
    stats_begin(lid);
    var sums = vec4<f32>(0.0);
    if (at.ok) {
        let wi = at.rec.param_off + at.j;
        let w = up_w[wi];
        let k = up_step.t + 1u;
        let r = sgd_rule(w, grad_sum(at.rec, at.j), up_s1[at.rec.state_off + at.j], warm_lr(op.lr, op.warmup, k), k);
        atomicAdd(&st_count[19u], 1u);
        let dw = r.x - w;
        sums = vec4<f32>(0.0, abs(r.y), dw * dw, w * w);
    }
    stats_finish(wid, nwg, lid, sums);
}
