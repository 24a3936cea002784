// Batch gather from the resident packed-u8 data set, and the per-step counter advance
// (CPU twin: src/cpu/data.rs).

struct GatherParams {
    batch: u32,
    pixels: u32,
    augment: u32,
    seed: u32,
}

struct StepState {
    epoch_step: u32,
    t: u32,
    n: u32,
    batch: u32,
}

const WG: u32 = 256u;

// gather: state, index [n], images [N*pixels bytes, 4 per u32], labels [N] -> x [B,pixels], y [B]
@group(0) @binding(0) var<uniform> p: GatherParams;
@group(0) @binding(1) var<storage, read> state: StepState;
@group(0) @binding(2) var<storage, read> index: array<u32>;
@group(0) @binding(3) var<storage, read> images: array<u32>;
@group(0) @binding(4) var<storage, read> labels: array<u32>;
@group(0) @binding(5) var<storage, read_write> x: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<u32>;

// advance has no params struct: its only binding is the state it increments.
@group(0) @binding(0) var<storage, read_write> adv_state: StepState;

fn pcg(v: u32) -> u32 {
    let h = v * 747796405u + 2891336453u;
    let w = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
    return (w >> 22u) ^ w;
}

fn dropout_hash(seed: u32, step: u32, i: u32) -> u32 {
    return pcg(pcg(pcg(seed) ^ step) ^ i);
}

// Byte k of the packed image array (pixel k%4 of word k/4, little-endian) as a value in [0, 1].
fn pixel(k: u32) -> f32 {
    let word = images[k / 4u];
    return f32((word >> (8u * (k % 4u))) & 0xffu) / 255.0;
}

// floor(sqrt(pixels)) exactly, as the twin's f64 sqrt gives it: images are square.
fn image_side() -> u32 {
    var s = u32(sqrt(f32(p.pixels)));
    while (s * s > p.pixels) {
        s -= 1u;
    }
    while ((s + 1u) * (s + 1u) <= p.pixels) {
        s += 1u;
    }
    return s;
}

// One invocation per output pixel of x [B,pixels] (flat id i, row b = i / pixels), workgroups of
// 256, 1-D grid split over y. The invocation for pixel 0 of a row also writes its label.
// Augmentation (GatherParams doc): r_j = dropout_hash(seed, t, 4b + j); flip iff r_0 & 1,
// shift dx = r_1 % 5 - 2, dy = r_2 % 5 - 2; output (yy, xx) reads source row yy - dy and column
// xx - dx, mirrored when flipped; zero outside the image.
@compute @workgroup_size(256)
fn gather(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.batch * p.pixels) {
        return;
    }
    let b = i / p.pixels;
    let k = i % p.pixels;
    let pos = state.epoch_step * p.batch + b;
    if (pos >= state.n) {
        x[i] = 0.0;
        if (k == 0u) {
            y[b] = 0u;
        }
        return;
    }
    let s = index[pos];
    if (k == 0u) {
        y[b] = labels[s];
    }
    let base = s * p.pixels;
    if (p.augment == 0u) {
        x[i] = pixel(base + k);
        return;
    }
    let side = i32(image_side());
    let flip = (dropout_hash(p.seed, state.t, 4u * b) & 1u) == 1u;
    let dx = i32(dropout_hash(p.seed, state.t, 4u * b + 1u) % 5u) - 2;
    let dy = i32(dropout_hash(p.seed, state.t, 4u * b + 2u) % 5u) - 2;
    let yy = i32(k) / side;
    let xx = i32(k) % side;
    let sy = yy - dy;
    var sx = xx - dx;
    if (flip) {
        sx = side - 1 - sx;
    }
    var v = 0.0;
    if (sy >= 0 && sy < side && sx >= 0 && sx < side) {
        v = pixel(base + u32(sy * side + sx));
    }
    x[i] = v;
}

// Grid (1,1,1), one invocation: the last dispatch of a training step moves to the next batch
// and counts the optimizer step.
@compute @workgroup_size(1)
fn advance() {
    adv_state.epoch_step += 1u;
    adv_state.t += 1u;
}
