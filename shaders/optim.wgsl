// Optimizer updates, one dispatch per parameter tensor of n elements (CPU twin: src/cpu/optim.rs).
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

struct OptParams {
    n: u32,
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    warmup: u32,
    weight_decay: f32,
    _p2: u32,
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

// WAME (SPEC 5), per element in the spec's order. The sign product, not g*g_prev, decides the
// zeta update so that products of tiny gradients cannot underflow to "no sign information".
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
    let g = wm_g[i];
    let st = wm_state[i];
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
    var m: f32;
    switch wp.variant {
        case 1u: {
            m = z;
        }
        case 2u: {
            m = 1.0 / z;
        }
        default: {
            m = zeta / z;
        }
    }
    let lr = warm_lr(wp.lr, wp.warmup, wm_step.t + 1u);
    wm_w[i] = wm_w[i] * decay(lr, wp.weight_decay) - lr * m * g / sqrt(theta + wp.eps);
    wm_state[i] = vec4<f32>(zeta, z, theta, g);
}

// Adam with bias corrections from t = StepState.t + 1 (in f32, like the CPU twin).
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
    let t = f32(state.t + 1u);
    let g = ad_g[i];
    var st = ad_state[i];
    st.x = op.b1 * st.x + (1.0 - op.b1) * g;
    st.y = op.b2 * st.y + (1.0 - op.b2) * g * g;
    let bc1 = 1.0 - pow(op.b1, t);
    let bc2 = 1.0 - pow(op.b2, t);
    let lr = warm_lr(op.lr, op.warmup, state.t + 1u);
    ad_w[i] = ad_w[i] * decay(lr, op.weight_decay) - lr * (st.x / bc1) / (sqrt(st.y / bc2) + op.eps);
    ad_state[i] = st;
}

// RMSprop, b2 is its smoothing constant alpha.
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
    let g = rm_g[i];
    let v = op.b2 * rm_v[i] + (1.0 - op.b2) * g * g;
    let lr = warm_lr(op.lr, op.warmup, rm_step.t + 1u);
    rm_w[i] = rm_w[i] * decay(lr, op.weight_decay) - lr * g / (sqrt(v) + op.eps);
    rm_v[i] = v;
}

// SGD with momentum mu = b1; the buffer starts at g on the first step (t = StepState.t + 1 == 1),
// as PyTorch does.
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
    let g = sg_g[i];
    var b = g;
    if (state.t + 1u != 1u) {
        b = op.b1 * sg_b[i] + g;
    }
    let lr = warm_lr(op.lr, op.warmup, state.t + 1u);
    sg_w[i] = sg_w[i] * decay(lr, op.weight_decay) - lr * b;
    sg_b[i] = b;
}
