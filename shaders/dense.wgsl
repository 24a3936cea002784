// Fully connected layer, x [B,In], w [Out,In] (nn.Linear layout), bias [Out], y [B,Out]
// (CPU twin: src/cpu/dense.rs).
//
// forward, backward_input and backward_weight are the same tiled GEMM C[M,N] = sum_k A[m,k] B[k,n]
// with different operand loaders: a workgroup of 8x8 invocations computes a 32x32 tile of C, each
// invocation a 4x4 register block, stepping over K in slabs of 32 staged (k-major) in workgroup
// memory. Every output sums its k in ascending order in one invocation, so results are
// bit-identical run to run, and no atomics are needed.

struct DenseParams {
    batch: u32,
    n_in: u32,
    n_out: u32,
    relu: u32,
}

const TM: u32 = 32u;
const TN: u32 = 32u;
const TK: u32 = 32u;
// Invocations per tile row/column, each owning 4 rows/columns of the tile.
const TD: u32 = 8u;
const THREADS: u32 = 64u;

@group(0) @binding(0) var<uniform> p: DenseParams;

// forward: x, w, bias -> y
@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read> f_w: array<f32>;
@group(0) @binding(3) var<storage, read> f_bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_y: array<f32>;

// backward_input: dy, w -> dx
@group(0) @binding(1) var<storage, read> bi_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bi_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> bi_dx: array<f32>;

// backward_weight: x, dy -> dw
@group(0) @binding(1) var<storage, read> bw_x: array<f32>;
@group(0) @binding(2) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bw_dw: array<f32>;

// backward_bias: dy -> db
@group(0) @binding(1) var<storage, read> bb_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> bb_db: array<f32>;

// A slab [TK][TM] and B slab [TK][TN], k-major so one vec4 read gives 4 rows (or 4 columns).
var<workgroup> a_s: array<vec4<f32>, 256>;
var<workgroup> b_s: array<vec4<f32>, 256>;
// acc[r] holds C[row0 + r, col0 .. col0 + 3] of this invocation's 4x4 block.
var<private> acc: array<vec4<f32>, 4>;

fn store_a(kk: u32, mm: u32, v: f32) {
    a_s[kk * (TM / 4u) + mm / 4u][mm % 4u] = v;
}

fn store_b(kk: u32, nn: u32, v: f32) {
    b_s[kk * (TN / 4u) + nn / 4u][nn % 4u] = v;
}

// Multiplies the staged slabs into acc; k ascending.
fn mma(tx: u32, ty: u32) {
    for (var kk = 0u; kk < TK; kk++) {
        let a = a_s[kk * (TM / 4u) + ty];
        let b = b_s[kk * (TN / 4u) + tx];
        acc[0] += a.x * b;
        acc[1] += a.y * b;
        acc[2] += a.z * b;
        acc[3] += a.w * b;
    }
}

fn zero_acc() {
    for (var r = 0u; r < 4u; r++) {
        acc[r] = vec4<f32>(0.0);
    }
}

// y[b,o] = bias[o] + sum_i x[b,i] w[o,i] (+ReLU): M = B, N = Out, K = In.
// Grid (ceil(Out/32), ceil(B/32)), workgroup 8x8; invocation (tx,ty) owns rows 4ty.., cols 4tx...
// Both operands are contiguous along k, so the loaders walk k fastest.
@compute @workgroup_size(8, 8)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m_total = p.batch;
    let n_total = p.n_out;
    let k_total = p.n_in;
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let li = lid.y * TD + lid.x;
    zero_acc();
    for (var k0 = 0u; k0 < k_total; k0 += TK) {
        for (var j = 0u; j < TM * TK / THREADS; j++) {
            let e = li + j * THREADS;
            let rr = e / TK;
            let kk = e % TK;
            let k = k0 + kk;
            var va = 0.0;
            if (m0 + rr < m_total && k < k_total) {
                va = f_x[(m0 + rr) * k_total + k];
            }
            store_a(kk, rr, va);
            var vb = 0.0;
            if (n0 + rr < n_total && k < k_total) {
                vb = f_w[(n0 + rr) * k_total + k];
            }
            store_b(kk, rr, vb);
        }
        workgroupBarrier();
        mma(lid.x, lid.y);
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + lid.y * 4u + r;
        for (var c = 0u; c < 4u; c++) {
            let n = n0 + lid.x * 4u + c;
            if (m < m_total && n < n_total) {
                var v = acc[r][c] + f_bias[n];
                if (p.relu != 0u) {
                    v = max(v, 0.0);
                }
                f_y[m * n_total + n] = v;
            }
        }
    }
}

// dx[b,i] = sum_o dy[b,o] w[o,i]: M = B, N = In, K = Out.
// Grid (ceil(In/32), ceil(B/32)), workgroup 8x8 as in forward. dy is contiguous along k, w along n.
@compute @workgroup_size(8, 8)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m_total = p.batch;
    let n_total = p.n_in;
    let k_total = p.n_out;
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let li = lid.y * TD + lid.x;
    zero_acc();
    for (var k0 = 0u; k0 < k_total; k0 += TK) {
        for (var j = 0u; j < TM * TK / THREADS; j++) {
            let e = li + j * THREADS;
            // A: walk k fastest (dy rows are contiguous in o).
            let ar = e / TK;
            let ak = e % TK;
            var va = 0.0;
            if (m0 + ar < m_total && k0 + ak < k_total) {
                va = bi_dy[(m0 + ar) * k_total + k0 + ak];
            }
            store_a(ak, ar, va);
            // B: walk n fastest (w rows are contiguous in i).
            let bk = e / TN;
            let bn = e % TN;
            var vb = 0.0;
            if (n0 + bn < n_total && k0 + bk < k_total) {
                vb = bi_w[(k0 + bk) * n_total + n0 + bn];
            }
            store_b(bk, bn, vb);
        }
        workgroupBarrier();
        mma(lid.x, lid.y);
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + lid.y * 4u + r;
        for (var c = 0u; c < 4u; c++) {
            let n = n0 + lid.x * 4u + c;
            if (m < m_total && n < n_total) {
                bi_dx[m * n_total + n] = acc[r][c];
            }
        }
    }
}

// dw[o,i] = sum_b dy[b,o] x[b,i]: M = Out, N = In, K = B, summed over the batch in ascending b.
// Grid (ceil(In/32), ceil(Out/32)), workgroup 8x8 as in forward. Both operands are contiguous
// along their non-k index, so the loaders walk m or n fastest.
@compute @workgroup_size(8, 8)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m_total = p.n_out;
    let n_total = p.n_in;
    let k_total = p.batch;
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let li = lid.y * TD + lid.x;
    zero_acc();
    for (var k0 = 0u; k0 < k_total; k0 += TK) {
        for (var j = 0u; j < TM * TK / THREADS; j++) {
            let e = li + j * THREADS;
            let kk = e / TM;
            let rr = e % TM;
            let k = k0 + kk;
            var va = 0.0;
            if (m0 + rr < m_total && k < k_total) {
                va = bw_dy[k * m_total + m0 + rr];
            }
            store_a(kk, rr, va);
            var vb = 0.0;
            if (n0 + rr < n_total && k < k_total) {
                vb = bw_x[k * n_total + n0 + rr];
            }
            store_b(kk, rr, vb);
        }
        workgroupBarrier();
        mma(lid.x, lid.y);
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + lid.y * 4u + r;
        for (var c = 0u; c < 4u; c++) {
            let n = n0 + lid.x * 4u + c;
            if (m < m_total && n < n_total) {
                bw_dw[m * n_total + n] = acc[r][c];
            }
        }
    }
}

const BB_WG: u32 = 64u;
var<workgroup> red: array<f32, BB_WG>;

// db[o] = sum_b dy[b,o]. One workgroup of 64 per output o (grid split over y when Out > 65535):
// invocation t sums rows t, t+64, ... in ascending order, then a fixed-shape tree adds the 64
// partials, so the result is the same every run.
@compute @workgroup_size(64)
fn backward_bias(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let o = wid.y * nwg.x + wid.x;
    let t = lid.x;
    // o is uniform across the workgroup, so the early exit keeps barriers in uniform control flow.
    if (o >= p.n_out) {
        return;
    }
    var s = 0.0;
    for (var b = t; b < p.batch; b += BB_WG) {
        s += bb_dy[b * p.n_out + o];
    }
    red[t] = s;
    workgroupBarrier();
    for (var h = BB_WG / 2u; h > 0u; h = h / 2u) {
        if (t < h) {
            red[t] += red[t + h];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        bb_db[o] = red[0];
    }
}

// backward_fused: x, dy, w -> dw, db, dx (the three backward kernels above in one dispatch)
@group(0) @binding(1) var<storage, read> bf_x: array<f32>;
@group(0) @binding(2) var<storage, read> bf_dy: array<f32>;
@group(0) @binding(3) var<storage, read> bf_w: array<f32>;
@group(0) @binding(4) var<storage, read_write> bf_dw: array<f32>;
@group(0) @binding(5) var<storage, read_write> bf_db: array<f32>;
@group(0) @binding(6) var<storage, read_write> bf_dx: array<f32>;

// backward_input's tile (m0, n0) of dx, with its loaders and order.
fn fused_dx_tile(m0: u32, n0: u32, lid: vec3<u32>) {
    let m_total = p.batch;
    let n_total = p.n_in;
    let k_total = p.n_out;
    let li = lid.y * TD + lid.x;
    zero_acc();
    for (var k0 = 0u; k0 < k_total; k0 += TK) {
        for (var j = 0u; j < TM * TK / THREADS; j++) {
            let e = li + j * THREADS;
            let ar = e / TK;
            let ak = e % TK;
            var va = 0.0;
            if (m0 + ar < m_total && k0 + ak < k_total) {
                va = bf_dy[(m0 + ar) * k_total + k0 + ak];
            }
            store_a(ak, ar, va);
            let bk = e / TN;
            let bn = e % TN;
            var vb = 0.0;
            if (n0 + bn < n_total && k0 + bk < k_total) {
                vb = bf_w[(k0 + bk) * n_total + n0 + bn];
            }
            store_b(bk, bn, vb);
        }
        workgroupBarrier();
        mma(lid.x, lid.y);
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + lid.y * 4u + r;
        for (var c = 0u; c < 4u; c++) {
            let n = n0 + lid.x * 4u + c;
            if (m < m_total && n < n_total) {
                bf_dx[m * n_total + n] = acc[r][c];
            }
        }
    }
}

// backward_weight's tile (m0, n0) of dw, with its loaders and order (ascending b).
fn fused_dw_tile(m0: u32, n0: u32, lid: vec3<u32>) {
    let m_total = p.n_out;
    let n_total = p.n_in;
    let k_total = p.batch;
    let li = lid.y * TD + lid.x;
    zero_acc();
    for (var k0 = 0u; k0 < k_total; k0 += TK) {
        for (var j = 0u; j < TM * TK / THREADS; j++) {
            let e = li + j * THREADS;
            let kk = e / TM;
            let rr = e % TM;
            let k = k0 + kk;
            var va = 0.0;
            if (m0 + rr < m_total && k < k_total) {
                va = bf_dy[k * m_total + m0 + rr];
            }
            store_a(kk, rr, va);
            var vb = 0.0;
            if (n0 + rr < n_total && k < k_total) {
                vb = bf_x[k * n_total + n0 + rr];
            }
            store_b(kk, rr, vb);
        }
        workgroupBarrier();
        mma(lid.x, lid.y);
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + lid.y * 4u + r;
        for (var c = 0u; c < 4u; c++) {
            let n = n0 + lid.x * 4u + c;
            if (m < m_total && n < n_total) {
                bf_dw[m * n_total + n] = acc[r][c];
            }
        }
    }
}

// backward_bias for output o: the same 64 strided sums and tree.
fn fused_db(o: u32, t: u32) {
    var s = 0.0;
    for (var b = t; b < p.batch; b += BB_WG) {
        s += bf_dy[b * p.n_out + o];
    }
    red[t] = s;
    workgroupBarrier();
    for (var h = BB_WG / 2u; h > 0u; h = h / 2u) {
        if (t < h) {
            red[t] += red[t + h];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        bf_db[o] = red[0];
    }
}

// dw = dy^T x [Out,In], db = sum_b dy [Out] and dx = dy w [B,In] in one dispatch; the three
// have no data dependency on each other, so workgroups take roles by flat workgroup id
// (wid.y * nwg.x + wid.x, the grid split over y past 65535):
//   [0, nx * my)              dx tiles, nx = ceil(In/32), my = ceil(B/32)   (heaviest first)
//   [.., + nx * mo)           dw tiles, mo = ceil(Out/32)
//   [.., + Out)               db, one workgroup per output
// and ids past the end return. Workgroup 8x8; a tile workgroup runs backward_input's or
// backward_weight's code for its tile, a db workgroup backward_bias's with invocation
// 8*lid.y + lid.x, so every value is computed in the same order as by the unfused kernels.
// Each workgroup's role depends only on its id, so its barriers stay in uniform control flow.
@compute @workgroup_size(8, 8)
fn backward_fused(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let id = wid.y * nwg.x + wid.x;
    let nx = (p.n_in + TN - 1u) / TN;
    let n_dx = nx * ((p.batch + TM - 1u) / TM);
    let n_dw = nx * ((p.n_out + TM - 1u) / TM);
    if (id < n_dx) {
        fused_dx_tile((id / nx) * TM, (id % nx) * TN, lid);
    } else if (id < n_dx + n_dw) {
        let i = id - n_dx;
        fused_dw_tile((i / nx) * TM, (i % nx) * TN, lid);
    } else if (id < n_dx + n_dw + p.n_out) {
        fused_db(id - n_dx - n_dw, lid.y * TD + lid.x);
    }
}
