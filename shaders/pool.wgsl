// Max pooling, 2x2 window, stride 2, floor mode, NCHW (CPU twin: src/cpu/pool.rs).

struct PoolParams {
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    _p0: u32,
    _p1: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: PoolParams;

// maxpool_forward bindings: x [B,C,H,W] -> y [B,C,OH,OW], argmax [B,C,OH,OW].
@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_argmax: array<u32>;

// maxpool_backward bindings: dy [B,C,OH,OW], argmax, x [B,C,H,W] (post-ReLU) -> dx [B,C,H,W].
@group(0) @binding(1) var<storage, read> b_dy: array<f32>;
@group(0) @binding(2) var<storage, read> b_argmax: array<u32>;
@group(0) @binding(3) var<storage, read> b_x: array<f32>;
@group(0) @binding(4) var<storage, read_write> b_dx: array<f32>;

// The dispatch may be split over y to keep x <= 65535 workgroups; this is the flat thread id.
fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// One invocation per output element (flat index over [B,C,OH,OW]), 1-D, split dispatch.
// The window is scanned in row-major order and only a strictly larger value replaces the
// current best, so ties go to the first maximum.
@compute @workgroup_size(256)
fn maxpool_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    let plane_out = p.oh * p.ow;
    if (i >= p.batch * p.c * plane_out) {
        return;
    }
    let bc = i / plane_out;
    let r = i % plane_out;
    let oy = r / p.ow;
    let ox = r % p.ow;
    let base = bc * p.h * p.w;
    var best_idx = (2u * oy) * p.w + 2u * ox;
    var best = f_x[base + best_idx];
    for (var dy = 0u; dy < 2u; dy++) {
        for (var dx = 0u; dx < 2u; dx++) {
            let idx = (2u * oy + dy) * p.w + 2u * ox + dx;
            let v = f_x[base + idx];
            if (v > best) {
                best = v;
                best_idx = idx;
            }
        }
    }
    f_y[i] = best;
    f_argmax[i] = best_idx;
}

// One invocation per input element (flat index over [B,C,H,W]), 1-D, split dispatch.
// Each input gathers from the one window that can contain it instead of scattering from the
// outputs, so every dx element is written exactly once (no zero-fill pass, no races). Rows and
// columns dropped by the floor mode get 0.
@compute @workgroup_size(256)
fn maxpool_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    let plane_in = p.h * p.w;
    if (i >= p.batch * p.c * plane_in) {
        return;
    }
    let bc = i / plane_in;
    let r = i % plane_in;
    let iy = r / p.w;
    let ix = r % p.w;
    let oy = iy / 2u;
    let ox = ix / 2u;
    var g = 0.0;
    if (oy < p.oh && ox < p.ow) {
        let o = bc * p.oh * p.ow + oy * p.ow + ox;
        if (b_argmax[o] == r && b_x[i] > 0.0) {
            g = b_dy[o];
        }
    }
    b_dx[i] = g;
}
