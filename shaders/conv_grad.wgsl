// Conv gradient family: the backward of conv -> ReLU -> 2x2 max pool (-> dropout) with the pool,
// ReLU and dropout backward done in the GEMM loaders, so no full-resolution gradient of the conv
// output is ever written (CPU twin: src/cpu/conv_grad.rs; host: src/ops/conv_grad.rs).
//
// The forward keeps only the pooled map q [B,C_OUT,PH,PW] (post-ReLU max) and its argmax (the
// flat index y*OW + x of the winner inside the conv-output plane). At the winner ReLU' is exactly
// q > 0, so the conv-output gradient is a pure function of the index:
//   dy[b,o,y,x] = (y/2 < PH && x/2 < PW && am[i] == y*OW + x && q[i] > 0) ? g[i] : 0,
//   i = ((b*C_OUT + o)*PH + y/2)*PW + x/2,  g[i] = dd[i], or with dropout keep(i) ? dd[i]*scale : 0
// with the mask of act.dropout_backward (seed, StepState.t, i). Rows and columns the floor-mode
// pool dropped get 0.
//
// backward_weight and backward_input (and `backward`, which runs both as workgroup roles in one
// dispatch) are implicit GEMMs with the tile engine of conv.wgsl, its tile shape chosen
// by the `override` constants TM x TN (src/gpu/tile.rs): a workgroup of TM x TN invocations owns
// a BM x BN = 4TM x 4TN tile of C, walks K in steps of BK = 32 staging an A tile (BK x BM) and a
// B tile (BK x BN) in workgroup memory, and invocation (tx, ty) accumulates the 4 x 4 block of
// rows 4tx..+3 and columns 4ty..+3 in four vec4 registers. Every output is one fma chain over K
// in ascending order inside one invocation, and K padding adds exact zeros, so every tile
// variant gives the same bits. The layer shape (all but the batch) is also an `override`, so the
// index arithmetic divides by constants only; the batch and the dropout settings come from the
// uniform. Loads outside a tensor read index 0 and select 0: no out-of-range access.

struct ConvGradParams {
    batch: u32,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
    k: u32,
    oh: u32,
    ow: u32,
    ph: u32,
    pw: u32,
    chunk: u32,
    parts: u32,
    dropout: u32,
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

// Tile variant (src/gpu/tile.rs): TM, TN in {8, 16, 32}, so the loaders below need 1, 2 or 4
// rounds and every invocation count is a multiple of BK.
override TM: u32 = 16u;
override TN: u32 = 16u;
// Layer shape: conv input C_IN x H x W, C_OUT filters K x K, output OH x OW, pooled PH x PW.
override C_IN: u32 = 64u;
override H: u32 = 12u;
override W: u32 = 12u;
override C_OUT: u32 = 64u;
override K: u32 = 5u;
override OH: u32 = 8u;
override OW: u32 = 8u;
override PH: u32 = 4u;
override PW: u32 = 4u;

const BK: u32 = 32u;

@group(0) @binding(0) var<uniform> p: ConvGradParams;
@group(0) @binding(1) var<storage, read> state: StepState;
@group(0) @binding(2) var<storage, read> am: array<u32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read> dd: array<f32>;

// backward_weight: x [B,C_IN,H,W] -> wpart[s][C_OUT][C_IN*K*K], bpart[s][C_OUT]
@group(0) @binding(5) var<storage, read> wx: array<f32>;
@group(0) @binding(6) var<storage, read_write> wpart: array<f32>;
@group(0) @binding(7) var<storage, read_write> bpart: array<f32>;

// backward_input: w [C_OUT,C_IN,K,K] -> dx [B,C_IN,H,W]. Bindings 8 and 9, not 5 and 6, so
// that `backward` can bind both roles' tensors at once (9 storage buffers).
@group(0) @binding(8) var<storage, read> iw: array<f32>;
@group(0) @binding(9) var<storage, read_write> bdx: array<f32>;

var<workgroup> As: array<vec4<f32>, BK * TM>;
var<workgroup> Bs: array<vec4<f32>, BK * TN>;

// PCG hash and dropout mask: the same u32 arithmetic as act.wgsl and `params::dropout_hash`.
fn pcg(v: u32) -> u32 {
    let h = v * 747796405u + 2891336453u;
    let w = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
    return (w >> 22u) ^ w;
}

// pcg(pcg(seed) ^ t), the part of the hash shared by every unit of the step: set once at the
// start of each entry point, since the compiler may not hoist a storage read out of the loop.
var<private> drop_key: u32;

fn keep(i: u32) -> bool {
    return pcg(drop_key ^ i) >= p.threshold;
}

// The conv-output gradient at (b, o, y, x) (see the header); `ok` false gives 0. The pooled
// index is clamped to 0 when out of range so the three loads are always in bounds; the hash is
// evaluated only for the winners (a quarter of the positions at most).
fn dy_at(b: u32, o: u32, y: u32, x: u32, ok: bool) -> f32 {
    let py = y >> 1u;
    let px = x >> 1u;
    let inside = ok && py < PH && px < PW;
    let i = select(0u, ((b * C_OUT + o) * PH + py) * PW + px, inside);
    let hit = inside && am[i] == y * OW + x && q[i] > 0.0;
    var g = 0.0;
    if hit {
        g = dd[i];
        if p.dropout != 0u {
            g = select(0.0, g * p.scale, keep(i));
        }
    }
    return g;
}

struct Acc {
    c0: vec4<f32>,
    c1: vec4<f32>,
    c2: vec4<f32>,
    c3: vec4<f32>,
}

fn mma_row(acc: Acc, kk: u32, tx: u32, ty: u32) -> Acc {
    let a = As[kk * TM + tx];
    let b = Bs[kk * TN + ty];
    return Acc(
        fma(a, vec4<f32>(b.x), acc.c0),
        fma(a, vec4<f32>(b.y), acc.c1),
        fma(a, vec4<f32>(b.z), acc.c2),
        fma(a, vec4<f32>(b.w), acc.c3),
    );
}

fn mma_4rows(acc: Acc, kk: u32, tx: u32, ty: u32) -> Acc {
    return mma_row(mma_row(mma_row(mma_row(acc, kk, tx, ty), kk + 1u, tx, ty), kk + 2u, tx, ty),
        kk + 3u, tx, ty);
}

// One K step (BK rows) of the tile product in 4 iterations of 8 rows: lavapipe stops all loops
// of an invocation after 65,535 iterations in total (see conv.wgsl), and the loaders below are
// unrolled for the same reason, so one K step costs about 6 of them.
fn tile_mma(acc: Acc, tx: u32, ty: u32) -> Acc {
    var a = acc;
    for (var kk = 0u; kk < BK; kk += 8u) {
        a = mma_4rows(mma_4rows(a, kk, tx, ty), kk + 4u, tx, ty);
    }
    return a;
}

fn col(acc: Acc, j: u32) -> vec4<f32> {
    switch j {
        case 0u: { return acc.c0; }
        case 1u: { return acc.c1; }
        case 2u: { return acc.c2; }
        default: { return acc.c3; }
    }
}

// Tile id from a possibly 2-D split dispatch (SPEC 6).
fn tile_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

fn ld_wx(i: u32, ok: bool) -> f32 {
    return select(0.0, wx[select(0u, i, ok)], ok);
}

fn ld_iw(i: u32, ok: bool) -> f32 {
    return select(0.0, iw[select(0u, i, ok)], ok);
}

// ---------------------------------------------------------------------------------------------
// backward_weight

// Stages A row `ra` (rows 4mv..+3) of the K step at k0 (positions q < q_end of one chunk):
// x at (c, oy+ky, ox+kx) for the invocation's 4 rows (c, ky, kx), whose offsets are `a_off`.
fn bw_stage_a(k0: u32, q_end: u32, ra: u32, mv: u32, a_off: vec4<u32>, a_ok: vec4<bool>) {
    let ohw = OH * OW;
    let qa = k0 + ra;
    let ba = qa / ohw;
    let pa = qa - ba * ohw;
    let oy = pa / OW;
    let ox = pa - oy * OW;
    let ia = a_off + vec4<u32>(ba * C_IN * H * W + oy * W + ox);
    let oka = a_ok & vec4<bool>(qa < q_end);
    As[ra * TM + mv] = vec4<f32>(
        ld_wx(ia.x, oka.x), ld_wx(ia.y, oka.y), ld_wx(ia.z, oka.z), ld_wx(ia.w, oka.w));
}

// Stages B row `rb`, columns 4nv..+3 (output channels from n0) of the K step at k0: the fused
// conv-output gradient at the row's position for 4 channels.
fn bw_stage_b(k0: u32, q_end: u32, rb: u32, nv: u32, n0: u32) {
    let ohw = OH * OW;
    let qb = k0 + rb;
    let bb = qb / ohw;
    let pb = qb - bb * ohw;
    let oy = pb / OW;
    let ox = pb - oy * OW;
    let o = n0 + 4u * nv;
    let ok = qb < q_end;
    Bs[rb * TN + nv] = vec4<f32>(
        dy_at(bb, o, oy, ox, ok && o < C_OUT),
        dy_at(bb, o + 1u, oy, ox, ok && o + 1u < C_OUT),
        dy_at(bb, o + 2u, oy, ox, ok && o + 2u < C_OUT),
        dy_at(bb, o + 3u, oy, ox, ok && o + 3u < C_OUT));
}

// Column `j` of B tile vec4 column `nv` summed over 8 rows from kk, added to s in row order.
fn col_sum8(s: f32, kk: u32, nv: u32, j: u32) -> f32 {
    var a = s;
    a += Bs[kk * TN + nv][j];
    a += Bs[(kk + 1u) * TN + nv][j];
    a += Bs[(kk + 2u) * TN + nv][j];
    a += Bs[(kk + 3u) * TN + nv][j];
    a += Bs[(kk + 4u) * TN + nv][j];
    a += Bs[(kk + 5u) * TN + nv][j];
    a += Bs[(kk + 6u) * TN + nv][j];
    a += Bs[(kk + 7u) * TN + nv][j];
    return a;
}

// backward_weight partials, weight and bias in one dispatch:
//   wpart[s][o][c,ky,kx] = sum over positions q = (b,oy,ox) of chunk s of dy[b,o,oy,ox] * x[b,c,oy+ky,ox+kx]
//   bpart[s][o]          = sum over positions q of chunk s of dy[b,o,oy,ox]
// with dy the fused gradient of the header, chunk s = positions [s*chunk, (s+1)*chunk) of the
// batch*OH*OW, chunk and parts from the host (ops::conv::weight_chunk, as conv.backward_weight).
// GEMM (rows contiguous in dw) M = C_IN*K*K (row m = (c,ky,kx)), N = C_OUT, K = one chunk.
// Workgroup: one BM x BN tile of one chunk (linear id: m tiles fastest, then n tiles, then
// chunks); invocation (tx, ty) owns rows m0+4tx..+3, channels n0+4ty..+3.
// A loader: invocation li fills As rows li/TM + r*TN for rows 4*(li%TM)..+3 (fixed x offsets).
// B loader: Bs row li%BK (consecutive invocations read consecutive positions), vec4 columns
// li/BK + r*(TM*TN/BK).
// Bias: the workgroups of m tile 0 also sum the dy they stage: invocation li < BN owns channel
// n0+li and adds its B column row by row, positions ascending, so the sum does not depend on
// the tile variant.
@compute @workgroup_size(TM, TN, 1)
fn backward_weight(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    weight_tile(tile_id(wid, nwg), lid, li);
}

// backward_weight's tile count: m tiles x n tiles x chunks.
fn weight_tiles() -> u32 {
    let mt = (C_IN * K * K + 4u * TM - 1u) / (4u * TM);
    let nt = (C_OUT + 4u * TN - 1u) / (4u * TN);
    return mt * nt * p.parts;
}

// The body of backward_weight for linear tile id `tile` (shared with `backward`, so both give
// the same bits). `tile` must be workgroup-uniform: the early return precedes the barriers.
fn weight_tile(tile: u32, lid: vec3<u32>, li: u32) {
    let bm = 4u * TM;
    let bn = 4u * TN;
    let kk2 = K * K;
    let m_len = C_IN * kk2;
    let n_len = C_OUT;
    let q_len = p.batch * OH * OW;
    let mt = (m_len + bm - 1u) / bm;
    let nt = (n_len + bn - 1u) / bn;
    if tile >= weight_tiles() {
        return;
    }
    drop_key = pcg(pcg(p.seed) ^ state.t);
    let mi = tile % mt;
    let m0 = mi * bm;
    let n0 = ((tile / mt) % nt) * bn;
    let s = tile / (mt * nt);
    let q_begin = s * p.chunk;
    let q_end = min(q_begin + p.chunk, q_len);

    let a_mv = li % TM;
    let a_k = li / TM;
    let am4 = vec4<u32>(m0 + 4u * a_mv) + vec4<u32>(0u, 1u, 2u, 3u);
    let a_ok = am4 < vec4<u32>(m_len);
    let ac = am4 / vec4<u32>(kk2);
    let arr = am4 - ac * vec4<u32>(kk2);
    let aky = arr / vec4<u32>(K);
    let akx = arr - aky * vec4<u32>(K);
    let a_off = ac * vec4<u32>(H * W) + aky * vec4<u32>(W) + akx;

    let b_k = li % BK;
    let b_nv = li / BK;
    let b_step = TM * TN / BK;

    let bias_role = mi == 0u && li < bn;
    let bias_nv = li / 4u;
    let bias_j = li % 4u;
    var bsum = 0.0;

    var acc = Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = q_begin; k0 < q_end; k0 += BK) {
        bw_stage_a(k0, q_end, a_k, a_mv, a_off, a_ok);
        if BK / TN > 1u {
            bw_stage_a(k0, q_end, a_k + TN, a_mv, a_off, a_ok);
        }
        if BK / TN > 2u {
            bw_stage_a(k0, q_end, a_k + 2u * TN, a_mv, a_off, a_ok);
            bw_stage_a(k0, q_end, a_k + 3u * TN, a_mv, a_off, a_ok);
        }
        bw_stage_b(k0, q_end, b_k, b_nv, n0);
        if BK / TM > 1u {
            bw_stage_b(k0, q_end, b_k, b_nv + b_step, n0);
        }
        if BK / TM > 2u {
            bw_stage_b(k0, q_end, b_k, b_nv + 2u * b_step, n0);
            bw_stage_b(k0, q_end, b_k, b_nv + 3u * b_step, n0);
        }
        workgroupBarrier();
        acc = tile_mma(acc, lid.x, lid.y);
        if bias_role {
            for (var kk = 0u; kk < BK; kk += 8u) {
                bsum = col_sum8(bsum, kk, bias_nv, bias_j);
            }
        }
        workgroupBarrier();
    }

    let om = m0 + 4u * lid.x;
    let on = n0 + 4u * lid.y;
    let part = s * n_len * m_len;
    for (var j = 0u; j < 4u; j++) {
        let n = on + j;
        if n >= n_len {
            break;
        }
        let v = col(acc, j);
        for (var i = 0u; i < 4u; i++) {
            let m = om + i;
            if m < m_len {
                wpart[part + n * m_len + m] = v[i];
            }
        }
    }
    if bias_role && n0 + li < n_len {
        bpart[s * n_len + n0 + li] = bsum;
    }
}

// ---------------------------------------------------------------------------------------------
// backward_input

// The kernel taps a backward_input tile visits: ky in ky0.., kx in kx0..kx0+nkx-1, every o;
// K index t = ((ky-ky0)*nkx + (kx-kx0))*C_OUT + o, t < k_len. `magic` = ceil(2^16 / nkx): the
// tap row is (t / C_OUT) * magic >> 16, exact for t / C_OUT < K*K when K <= 32 (the host checks),
// so the K loop has no division by a runtime value.
struct Taps {
    ky0: u32,
    kx0: u32,
    nkx: u32,
    magic: u32,
    k_len: u32,
}

// An invocation's 4 A-loader rows: their sample, their input pixel.
struct Rows {
    b: vec4<u32>,
    iy: vec4<u32>,
    ix: vec4<u32>,
    ok: vec4<bool>,
}

// Stages A row `ra` (rows 4mv..+3) of the K step at k0: the fused dy at the pixel shifted by
// the K index's tap (0 outside the conv-output plane; u32 wrap-around makes negative
// coordinates fail the `< OH` test).
fn bi_stage_a(k0: u32, taps: Taps, ra: u32, mv: u32, rows: Rows) {
    let ka = k0 + ra;
    let ta = ka / C_OUT;
    let oa = ka - ta * C_OUT;
    let tya = (ta * taps.magic) >> 16u;
    let yy = rows.iy - vec4<u32>(taps.ky0 + tya);
    let xx = rows.ix - vec4<u32>(taps.kx0 + ta - tya * taps.nkx);
    let ok = rows.ok & (yy < vec4<u32>(OH)) & (xx < vec4<u32>(OW)) & vec4<bool>(ka < taps.k_len);
    As[ra * TM + mv] = vec4<f32>(
        dy_at(rows.b.x, oa, yy.x, xx.x, ok.x),
        dy_at(rows.b.y, oa, yy.y, xx.y, ok.y),
        dy_at(rows.b.z, oa, yy.z, xx.z, ok.z),
        dy_at(rows.b.w, oa, yy.w, xx.w, ok.w));
}

// Stages B row `rb`, columns 4nv..+3 (input channels from n0) of the K step at k0:
// w[o, c, ky, kx] for the K index's tap and o.
fn bi_stage_b(k0: u32, taps: Taps, rb: u32, nv: u32, n0: u32) {
    let kb = k0 + rb;
    let tb = kb / C_OUT;
    let ob = kb - tb * C_OUT;
    let tyb = (tb * taps.magic) >> 16u;
    let tap = (taps.ky0 + tyb) * K + taps.kx0 + tb - tyb * taps.nkx;
    let c = vec4<u32>(n0 + 4u * nv) + vec4<u32>(0u, 1u, 2u, 3u);
    let ok = (c < vec4<u32>(C_IN)) & vec4<bool>(kb < taps.k_len);
    let ib = c * vec4<u32>(K * K) + vec4<u32>(ob * C_IN * K * K + tap);
    Bs[rb * TN + nv] = vec4<f32>(
        ld_iw(ib.x, ok.x), ld_iw(ib.y, ok.y), ld_iw(ib.z, ok.z), ld_iw(ib.w, ok.w));
}

// backward_input: dx[b,c,iy,ix] = sum_{o,ky,kx} dy[b,o,iy-ky,ix-kx] * w[o,c,ky,kx] over the
// (iy-ky, ix-kx) inside the conv-output plane, dy the fused gradient of the header (the gather
// form of the transposed convolution, as conv.backward_input).
// GEMM M = H*W*batch with the batch innermost (row m = (iy,ix,b)), N = C_IN, K = (ky,kx,o)
// restricted to the taps that reach the tile's pixels (with batch a multiple of BM a tile is one
// pixel and visits exactly its valid taps); taps valid for only some rows are zeroed per element.
// Workgroup: one BM x BN tile (linear id, m tiles fastest); invocation (tx, ty) owns rows
// m0+4tx..+3 and input channels n0+4ty..+3. A loader: As rows li/TM + r*TN, rows 4*(li%TM)..+3;
// B loader: Bs row li%BK, vec4 columns li/BK + r*(TM*TN/BK).
@compute @workgroup_size(TM, TN, 1)
fn backward_input(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    input_tile(tile_id(wid, nwg), lid, li);
}

// The body of backward_input for linear tile id `tile` (shared with `backward`, so both give
// the same bits). `tile` must be workgroup-uniform: the early return precedes the barriers.
fn input_tile(tile: u32, lid: vec3<u32>, li: u32) {
    let bm = 4u * TM;
    let bn = 4u * TN;
    let hw = H * W;
    let m_len = hw * p.batch;
    let n_len = C_IN;
    let mt = (m_len + bm - 1u) / bm;
    let nt = (n_len + bn - 1u) / bn;
    if tile >= mt * nt {
        return;
    }
    drop_key = pcg(pcg(p.seed) ^ state.t);
    let m0 = (tile % mt) * bm;
    let n0 = (tile / mt) * bn;

    // Taps (ky, kx) valid for at least one pixel of the tile.
    let pix_lo = m0 / p.batch;
    let pix_hi = (min(m0 + bm, m_len) - 1u) / p.batch;
    let iy_lo = pix_lo / W;
    let iy_hi = pix_hi / W;
    var ix_lo = 0u;
    var ix_hi = W - 1u;
    if iy_lo == iy_hi {
        ix_lo = pix_lo - iy_lo * W;
        ix_hi = pix_hi - iy_hi * W;
    }
    let ky0 = select(0u, iy_lo + 1u - OH, iy_lo + 1u > OH);
    let kx0 = select(0u, ix_lo + 1u - OW, ix_lo + 1u > OW);
    let nkx = min(K - 1u, ix_hi) + 1u - kx0;
    let nky = min(K - 1u, iy_hi) + 1u - ky0;
    let taps = Taps(ky0, kx0, nkx, (65536u + nkx - 1u) / nkx, nky * nkx * C_OUT);

    let a_mv = li % TM;
    let a_k = li / TM;
    let am4 = vec4<u32>(m0 + 4u * a_mv) + vec4<u32>(0u, 1u, 2u, 3u);
    let a_ok = am4 < vec4<u32>(m_len);
    let apix = am4 / vec4<u32>(p.batch);
    let ab = am4 - apix * vec4<u32>(p.batch);
    let aiy = apix / vec4<u32>(W);
    let aix = apix - aiy * vec4<u32>(W);
    let rows = Rows(ab, aiy, aix, a_ok);

    let b_k = li % BK;
    let b_nv = li / BK;
    let b_step = TM * TN / BK;

    var acc = Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = 0u; k0 < taps.k_len; k0 += BK) {
        bi_stage_a(k0, taps, a_k, a_mv, rows);
        if BK / TN > 1u {
            bi_stage_a(k0, taps, a_k + TN, a_mv, rows);
        }
        if BK / TN > 2u {
            bi_stage_a(k0, taps, a_k + 2u * TN, a_mv, rows);
            bi_stage_a(k0, taps, a_k + 3u * TN, a_mv, rows);
        }
        bi_stage_b(k0, taps, b_k, b_nv, n0);
        if BK / TM > 1u {
            bi_stage_b(k0, taps, b_k, b_nv + b_step, n0);
        }
        if BK / TM > 2u {
            bi_stage_b(k0, taps, b_k, b_nv + 2u * b_step, n0);
            bi_stage_b(k0, taps, b_k, b_nv + 3u * b_step, n0);
        }
        workgroupBarrier();
        acc = tile_mma(acc, lid.x, lid.y);
        workgroupBarrier();
    }

    let om = m0 + 4u * lid.x;
    let on = n0 + 4u * lid.y;
    for (var j = 0u; j < 4u; j++) {
        let n = on + j;
        if n >= n_len {
            break;
        }
        let v = col(acc, j);
        for (var i = 0u; i < 4u; i++) {
            let m = om + i;
            if m < m_len {
                let pix = m / p.batch;
                let b = m - pix * p.batch;
                bdx[(b * C_IN + n) * hw + pix] = v[i];
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// backward: conv2's whole backward in one dispatch (the training step's dispatch budget).

// backward: backward_weight and backward_input in one dispatch, workgroups taking roles by
// linear id: ids [0, n_w) with n_w = weight_tiles() are backward_weight's tiles (wpart, bpart),
// ids [n_w, n_w + n_x) are backward_input's tiles (dx), n_x its tile count; the host dispatches
// exactly n_w + n_x, later ids return. Each role runs the same function as its own entry point,
// so every output has the bits of the separate dispatches. The branch depends only on the
// workgroup id and the uniform, so it is workgroup-uniform and the roles' barriers are valid;
// the roles share the As/Bs workgroup arrays (one role per workgroup). Shape and thread mapping
// per role: see backward_weight and backward_input.
@compute @workgroup_size(TM, TN, 1)
fn backward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = tile_id(wid, nwg);
    let n_w = weight_tiles();
    if tile < n_w {
        weight_tile(tile, lid, li);
    } else {
        input_tile(tile - n_w, lid, li);
    }
}
