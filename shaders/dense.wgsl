// Fully connected layer, x [B,In], w [Out,In] (nn.Linear layout), bias [Out], y [B,Out]
// (CPU twin: src/cpu/dense.rs; host: src/ops/dense.rs).
//
// forward, backward_input and backward_weight are the same tiled GEMM C[M,N] = sum_k A[m,k] B[k,n]
// with different operand loaders. The tile shape comes from the `override` constants TM x TN
// (src/gpu/tile.rs): a workgroup of TM x TN invocations owns a BM x BN = 4TM x 4TN tile of C and
// invocation (tx, ty) = (lid.x, lid.y) its 4 x 4 register block of rows 4tx..+3 and columns
// 4ty..+3, stepping over K in slabs of BK = 32 staged (k-major) in workgroup memory. TM and TN
// divide 128 (so the loaders' rounds BK*BM/(TM*TN) = 128/TN and BK*BN/(TM*TN) = 128/TM are
// whole) and TM*TN >= 64 (backward_fused's bias role uses 64 invocations). Every output sums its
// k in ascending order in one invocation and K padding adds exact zeros, so every tile variant
// gives the same bits run to run, and no atomics are needed. The layer shape In x Out is also an
// `override` (IN, OUT), so K loops over In or Out have constant trip counts and the tile
// arithmetic divides by constants; the batch comes from the uniform (it varies: the short last
// batch).

struct DenseParams {
    batch: u32,
    // Must equal IN and OUT (the host builds one pipeline per shape).
    n_in: u32,
    n_out: u32,
    relu: u32,
}

// Tile variant: TM x TN invocations, a 4TM x 4TN tile of C.
override TM: u32 = 16u;
override TN: u32 = 16u;
// Layer shape: In inputs, Out outputs.
override IN: u32 = 1024u;
override OUT: u32 = 128u;

const BK: u32 = 32u;

@group(0) @binding(0) var<uniform> p: DenseParams;

// forward: x, w, bias -> y
@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read> f_w: array<f32>;
@group(0) @binding(3) var<storage, read> f_bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_y: array<f32>;

// The backward kernels: x, dy, w -> dw, db, dx. backward_fused binds all six, the unfused
// kernels the ones they use at these same bindings (backward_input dy, w, dx; backward_weight
// x, dy, dw; backward_bias dy, db), so the code paths they share read the same globals.
@group(0) @binding(1) var<storage, read> g_x: array<f32>;
@group(0) @binding(2) var<storage, read> g_dy: array<f32>;
@group(0) @binding(3) var<storage, read> g_w: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_dw: array<f32>;
@group(0) @binding(5) var<storage, read_write> g_db: array<f32>;
@group(0) @binding(6) var<storage, read_write> g_dx: array<f32>;

// A slab [BK][BM] and B slab [BK][BN], k-major so one vec4 read gives 4 rows (or 4 columns).
var<workgroup> a_s: array<vec4<f32>, BK * TM>;
var<workgroup> b_s: array<vec4<f32>, BK * TN>;
// acc[r] holds C[row0 + r, col0 .. col0 + 3] of this invocation's 4x4 block.
var<private> acc: array<vec4<f32>, 4>;

fn bm() -> u32 {
    return 4u * TM;
}

fn bn() -> u32 {
    return 4u * TN;
}

// Loader rounds: A and B slab elements per invocation.
fn a_rounds() -> u32 {
    return BK * 4u * TM / (TM * TN);
}

fn b_rounds() -> u32 {
    return BK * 4u * TN / (TM * TN);
}

fn store_a(kk: u32, mm: u32, v: f32) {
    a_s[kk * TM + mm / 4u][mm % 4u] = v;
}

fn store_b(kk: u32, nn: u32, v: f32) {
    b_s[kk * TN + nn / 4u][nn % 4u] = v;
}

// Multiplies the staged slabs into acc; k ascending.
fn mma(tx: u32, ty: u32) {
    for (var kk = 0u; kk < BK; kk++) {
        let a = a_s[kk * TM + tx];
        let b = b_s[kk * TN + ty];
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
// Grid (ceil(Out/BN), ceil(B/BM)), workgroup TM x TN; invocation (tx,ty) owns rows 4tx..,
// cols 4ty... Both operands are contiguous along k, so the loaders walk k fastest.
@compute @workgroup_size(TM, TN)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let m_total = p.batch;
    let m0 = wid.y * bm();
    let n0 = wid.x * bn();
    zero_acc();
    for (var k0 = 0u; k0 < IN; k0 += BK) {
        for (var j = 0u; j < a_rounds(); j++) {
            let e = li + j * TM * TN;
            let rr = e / BK;
            let kk = e % BK;
            let k = k0 + kk;
            var va = 0.0;
            if (m0 + rr < m_total && k < IN) {
                va = f_x[(m0 + rr) * IN + k];
            }
            store_a(kk, rr, va);
        }
        for (var j = 0u; j < b_rounds(); j++) {
            let e = li + j * TM * TN;
            let rr = e / BK;
            let kk = e % BK;
            let k = k0 + kk;
            var vb = 0.0;
            if (n0 + rr < OUT && k < IN) {
                vb = f_w[(n0 + rr) * IN + k];
            }
            store_b(kk, rr, vb);
        }
        workgroupBarrier();
        mma(lid.x, lid.y);
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + lid.x * 4u + r;
        for (var c = 0u; c < 4u; c++) {
            let n = n0 + lid.y * 4u + c;
            if (m < m_total && n < OUT) {
                var v = acc[r][c] + f_bias[n];
                if (p.relu != 0u) {
                    v = max(v, 0.0);
                }
                f_y[m * OUT + n] = v;
            }
        }
    }
}

// dx[b,i] = sum_o dy[b,o] w[o,i]: M = B, N = In, K = Out.
// Grid (ceil(In/BN), ceil(B/BM)), workgroup TM x TN as in forward. dy is contiguous along k,
// w along n.
@compute @workgroup_size(TM, TN)
fn backward_input(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    dx_tile(wid.y * bm(), wid.x * bn(), li, lid);
}

// dw[o,i] = sum_b dy[b,o] x[b,i]: M = Out, N = In, K = B, summed over the batch in ascending b.
// Grid (ceil(In/BN), ceil(Out/BM)), workgroup TM x TN as in forward. Both operands are
// contiguous along their non-k index, so the loaders walk m or n fastest.
@compute @workgroup_size(TM, TN)
fn backward_weight(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    dw_tile(wid.y * bm(), wid.x * bn(), li, lid);
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
    // o is uniform across the workgroup, so the early exit keeps barriers in uniform control flow.
    if (o >= OUT) {
        return;
    }
    db_sum(o, lid.x);
}

// The dx tile (m0, n0) of dx = dy w (M = B, N = In, K = Out): staged, multiplied k ascending,
// stored. `m0`, `n0` must be workgroup-uniform (barriers).
fn dx_tile(m0: u32, n0: u32, li: u32, lid: vec3<u32>) {
    let m_total = p.batch;
    zero_acc();
    for (var k0 = 0u; k0 < OUT; k0 += BK) {
        // A: walk k fastest (dy rows are contiguous in o).
        for (var j = 0u; j < a_rounds(); j++) {
            let e = li + j * TM * TN;
            let ar = e / BK;
            let ak = e % BK;
            var va = 0.0;
            if (m0 + ar < m_total && k0 + ak < OUT) {
                let i = (m0 + ar) * OUT + k0 + ak;
                va = g_dy[i];
            }
            store_a(ak, ar, va);
        }
        // B: walk n fastest (w rows are contiguous in i).
        for (var j = 0u; j < b_rounds(); j++) {
            let e = li + j * TM * TN;
            let bk = e / bn();
            let bnn = e % bn();
            var vb = 0.0;
            if (n0 + bnn < IN && k0 + bk < OUT) {
                let i = (k0 + bk) * IN + n0 + bnn;
                vb = g_w[i];
            }
            store_b(bk, bnn, vb);
        }
        workgroupBarrier();
        mma(lid.x, lid.y);
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + lid.x * 4u + r;
        for (var c = 0u; c < 4u; c++) {
            let n = n0 + lid.y * 4u + c;
            if (m < m_total && n < IN) {
                g_dx[m * IN + n] = acc[r][c];
            }
        }
    }
}

// The dw tile (m0, n0) of dw = dy^T x (M = Out, N = In, K = B, ascending b): staged,
// multiplied, stored. `m0`, `n0` must be workgroup-uniform (barriers).
fn dw_tile(m0: u32, n0: u32, li: u32, lid: vec3<u32>) {
    let k_total = p.batch;
    zero_acc();
    for (var k0 = 0u; k0 < k_total; k0 += BK) {
        for (var j = 0u; j < a_rounds(); j++) {
            let e = li + j * TM * TN;
            let kk = e / bm();
            let rr = e % bm();
            let k = k0 + kk;
            var va = 0.0;
            if (m0 + rr < OUT && k < k_total) {
                let i = k * OUT + m0 + rr;
                va = g_dy[i];
            }
            store_a(kk, rr, va);
        }
        for (var j = 0u; j < b_rounds(); j++) {
            let e = li + j * TM * TN;
            let kk = e / bn();
            let nn = e % bn();
            let k = k0 + kk;
            var vb = 0.0;
            if (n0 + nn < IN && k < k_total) {
                let i = k * IN + n0 + nn;
                vb = g_x[i];
            }
            store_b(kk, nn, vb);
        }
        workgroupBarrier();
        mma(lid.x, lid.y);
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + lid.x * 4u + r;
        for (var c = 0u; c < 4u; c++) {
            let n = n0 + lid.y * 4u + c;
            if (m < OUT && n < IN) {
                g_dw[m * IN + n] = acc[r][c];
            }
        }
    }
}

// db[o] = sum_b dy[b,o] by invocations t < 64 (the others only pass the barriers): t sums rows
// t, t+64, ... ascending, then the fixed 64-wide tree.
fn db_sum(o: u32, t: u32) {
    if (t < BB_WG) {
        var s = 0.0;
        for (var b = t; b < p.batch; b += BB_WG) {
            let i = b * OUT + o;
            s += g_dy[i];
        }
        red[t] = s;
    }
    workgroupBarrier();
    for (var h = BB_WG / 2u; h > 0u; h = h / 2u) {
        if (t < h) {
            red[t] += red[t + h];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        g_db[o] = red[0];
    }
}

// dw = dy^T x [Out,In], db = sum_b dy [Out] and dx = dy w [B,In] in one dispatch; the three
// have no data dependency on each other, so workgroups take roles by flat workgroup id
// (wid.y * nwg.x + wid.x, the grid split over y past 65535):
//   [0, nx * my)              dx tiles, nx = ceil(In/BN), my = ceil(B/BM)   (heaviest first)
//   [.., + nx * mo)           dw tiles, mo = ceil(Out/BM)
//   [.., + Out)               db, one workgroup per output
// and ids past the end return. Workgroup TM x TN; a tile workgroup runs backward_input's or
// backward_weight's code for its tile, a db workgroup backward_bias's with invocations
// local_invocation_index < 64 (the rest idle at its barriers), so every value is computed in
// the same order as by the unfused kernels with any tile. Each workgroup's role depends only
// on its id and the uniform batch, so its barriers stay in uniform control flow.
@compute @workgroup_size(TM, TN)
fn backward_fused(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let id = wid.y * nwg.x + wid.x;
    let nx = (IN + bn() - 1u) / bn();
    let n_dx = nx * ((p.batch + bm() - 1u) / bm());
    let n_dw = nx * ((OUT + bm() - 1u) / bm());
    if (id < n_dx) {
        dx_tile((id / nx) * bm(), (id % nx) * bn(), li, lid);
    } else if (id < n_dx + n_dw) {
        let i = id - n_dx;
        dw_tile((i / nx) * bm(), (i % nx) * bn(), li, lid);
    } else if (id < n_dx + n_dw + OUT) {
        db_sum(id - n_dx - n_dw, li);
    }
}
