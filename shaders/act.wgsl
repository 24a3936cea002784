// Element-wise activations over n values: ReLU and inverted dropout (CPU twin: src/cpu/act.rs).
// Every entry point: one invocation per element, workgroups of 256, the 1-D grid split over y
// (x <= 65535 workgroups) and rebuilt as a flat index.

struct ActParams {
    n: u32,
    threshold: u32,
    scale: f32,
    seed: u32,
}

struct StepState {
    epoch_step: u32,
    t: u32,
    n: u32,
    batch: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: ActParams;

// relu_forward: x -> y
@group(0) @binding(1) var<storage, read> rf_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> rf_y: array<f32>;

// relu_backward: y (ReLU output), dy -> dx
@group(0) @binding(1) var<storage, read> rb_y: array<f32>;
@group(0) @binding(2) var<storage, read> rb_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> rb_dx: array<f32>;

// dropout_forward: step (StepState.t), x -> y; dropout_backward: step, dy -> dx
@group(0) @binding(1) var<storage, read> state: StepState;
@group(0) @binding(2) var<storage, read> d_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> d_out: array<f32>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// PCG hash (SPEC 4), the same u32 arithmetic as `params::pcg`.
fn pcg(x: u32) -> u32 {
    let h = x * 747796405u + 2891336453u;
    let w = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
    return (w >> 22u) ^ w;
}

fn dropout_hash(seed: u32, step: u32, i: u32) -> u32 {
    return pcg(pcg(pcg(seed) ^ step) ^ i);
}

// y[i] = max(x[i], 0), i over [0, n).
@compute @workgroup_size(256)
fn relu_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    rf_y[i] = max(rf_x[i], 0.0);
}

// dx[i] = y[i] > 0 ? dy[i] : 0, i over [0, n).
@compute @workgroup_size(256)
fn relu_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    rb_dx[i] = select(0.0, rb_dy[i], rb_y[i] > 0.0);
}

// The mask is recomputed from (seed, step, i) rather than stored, so forward and backward agree
// without a mask buffer and the CPU twin draws the same units.
fn keep(i: u32) -> bool {
    return dropout_hash(p.seed, state.t, i) >= p.threshold;
}

// y[i] = keep(i) ? x[i] * scale : 0, i over [0, n).
@compute @workgroup_size(256)
fn dropout_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    d_out[i] = select(0.0, d_in[i] * p.scale, keep(i));
}

// dx[i] = keep(i) ? dy[i] * scale : 0, i over [0, n); the same mask as dropout_forward.
@compute @workgroup_size(256)
fn dropout_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    d_out[i] = select(0.0, d_in[i] * p.scale, keep(i));
}
