// Convolution family: valid, stride-1 conv over NCHW activations and OIHW weights (SPEC 2, 4).
//
// forward, backward_input and backward_weight are implicit GEMMs sharing one tile engine:
// a workgroup of 16 x 16 invocations owns a BM x BN = 64 x 64 tile of C = A * B, walks K in steps
// of BK, stages an A tile (BK x BM) and a B tile (BK x BN) in workgroup memory, and each
// invocation accumulates a 4 x 4 block of C in four vec4 registers (4 consecutive GEMM rows per
// vec4, one vec4 per GEMM column). In forward and backward_weight GEMM rows are the dimension
// that is contiguous in the output, so 16 invocations write 64 consecutive floats; backward_input
// puts the batch innermost instead, to skip kernel taps that fall outside. No im2col buffer is
// built: the A/B tile loaders compute the im2col address of each element. Loads outside the
// tensor read index 0 and select 0, so the hot loop has no branches and no out-of-range access.
//
// forward_relu_pool is the same engine with GEMM rows ordered (n, py, px, dy, dx): a vec4 of rows
// is one 2x2 pooling window, so the max-pool (and dropout) run in registers in the epilogue and
// the full-resolution activation is never written. Its tile shape (TM x TN invocations) and
// layer shape (C_IN, H, W, C_OUT, KS; all but the batch) are override constants.
//
// backward_weight splits its huge K (= batch * OH * OW) into a shape-determined number of chunks
// and writes one partial dw per chunk; reduce.wgsl `sum_partials` then adds the chunks in order.
// Every sum here has a fixed order: results are bit-identical run to run.

struct ConvParams {
    batch: u32,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
    k: u32,
    oh: u32,
    ow: u32,
    relu: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;

// forward
@group(0) @binding(1) var<storage, read> fx: array<f32>;
@group(0) @binding(2) var<storage, read> fw: array<f32>;
@group(0) @binding(3) var<storage, read> fbias: array<f32>;
@group(0) @binding(4) var<storage, read_write> fy: array<f32>;

// backward_input (w shares binding 2 with forward: same type and access)
@group(0) @binding(1) var<storage, read> bi_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bi_dx: array<f32>;

// backward_weight: partials[chunk][c_out][c_in*k*k]
@group(0) @binding(1) var<storage, read> wx: array<f32>;
@group(0) @binding(2) var<storage, read> wdy: array<f32>;
@group(0) @binding(3) var<storage, read_write> wpart: array<f32>;

// backward_bias
@group(0) @binding(1) var<storage, read> bdy: array<f32>;
@group(0) @binding(2) var<storage, read_write> bdb: array<f32>;

const TS: u32 = 16u;              // invocations per tile side
const BM: u32 = 64u;              // tile rows: TS invocations x 4
const BN: u32 = 64u;              // tile columns: TS invocations x 4
const BK: u32 = 32u;              // K per step: tile_mma walks it 8 rows at a time; two loader rounds
// The K chunk of backward_weight: at least 512 and at most 256 chunks, rounded to 64 (a multiple
// of BK). `ops::conv::weight_chunk` is the host twin; both must agree.
const WCHUNK_MIN: u32 = 512u;
const WCHUNK_MAX_PARTS: u32 = 256u;

// A tile as [BK][BM/4] vec4 (4 consecutive GEMM rows), B tile as [BK][BN/4] (4 consecutive
// columns): 2 x 32 x 16 x 16 B = 16 KiB, the portable limit.
var<workgroup> As: array<vec4<f32>, 512>;
var<workgroup> Bs: array<vec4<f32>, 512>;

struct Acc {
    c0: vec4<f32>,
    c1: vec4<f32>,
    c2: vec4<f32>,
    c3: vec4<f32>,
}

// k row `kk` of the tile product for invocation (tx, ty): column j of its 4 x 4 block is acc.cj,
// a vec4 over its 4 rows.
fn mma_row(acc: Acc, kk: u32, tx: u32, ty: u32) -> Acc {
    let a = As[kk * TS + tx];
    let b = Bs[kk * TS + ty];
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

// One K step (BK = 32 rows) of the tile product, in 4 loop iterations of 8 rows. Unrolling
// matters on lavapipe (Mesa 22.3), which stops all loops of an invocation once they have run
// 65,535 iterations in total: one iteration per row capped K near 62,000, this caps it at about
// 419,000 (13,107 K steps of 5 iterations). Unrolling all 32 rows ran 1.5-2x slower there.
// GPUs have no such cap.
fn tile_mma(acc: Acc, tx: u32, ty: u32) -> Acc {
    var a = acc;
    for (var kk = 0u; kk < BK; kk += 8u) {
        a = mma_4rows(mma_4rows(a, kk, tx, ty), kk + 4u, tx, ty);
    }
    return a;
}

fn ld_fx(i: u32, ok: bool) -> f32 {
    return select(0.0, fx[select(0u, i, ok)], ok);
}
fn ld_fw(i: u32, ok: bool) -> f32 {
    return select(0.0, fw[select(0u, i, ok)], ok);
}
fn ld_bi_dy(i: u32, ok: bool) -> f32 {
    return select(0.0, bi_dy[select(0u, i, ok)], ok);
}
fn ld_wx(i: u32, ok: bool) -> f32 {
    return select(0.0, wx[select(0u, i, ok)], ok);
}
fn ld_wdy(i: u32, ok: bool) -> f32 {
    return select(0.0, wdy[select(0u, i, ok)], ok);
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

// Stages A row `ra` (rows 4mv..+3 of the tile) and B row `rb` (columns 4nv..+3) of the forward
// K step at k0: A = im2col(x), B = w^T.
fn fwd_stage(k0: u32, ra: u32, mv: u32, a_off: vec4<u32>, a_ok: vec4<bool>, rb: u32, nv: u32,
             b_off: vec4<u32>, b_ok: vec4<bool>) {
    let kk2 = p.k * p.k;
    let k_len = p.c_in * kk2;
    let ka = k0 + ra;
    let c = ka / kk2;
    let rr = ka - c * kk2;
    let ky = rr / p.k;
    let kx = rr - ky * p.k;
    let ia = a_off + vec4<u32>(c * p.h * p.w + ky * p.w + kx);
    let oka = a_ok & vec4<bool>(ka < k_len);
    As[ra * TS + mv] = vec4<f32>(
        ld_fx(ia.x, oka.x), ld_fx(ia.y, oka.y), ld_fx(ia.z, oka.z), ld_fx(ia.w, oka.w));

    let kb = k0 + rb;
    let ib = b_off + vec4<u32>(kb);
    let okb = b_ok & vec4<bool>(kb < k_len);
    Bs[rb * TS + nv] = vec4<f32>(
        ld_fw(ib.x, okb.x), ld_fw(ib.y, okb.y), ld_fw(ib.z, okb.z), ld_fw(ib.w, okb.w));
}

// forward: y[b,o,oy,ox] = relu?(bias[o] + sum_{c,ky,kx} x[b,c,oy+ky,ox+kx] * w[o,c,ky,kx]).
// GEMM M = batch*oh*ow (row m = (b,oy,ox)), N = c_out, K = c_in*k*k (k = (c,ky,kx)).
// Workgroup: one 64 x 64 tile (linear tile id, m tiles fastest); invocation (tx, ty) owns rows
// m0+4tx..+3 and output channels n0+4ty..+3. A loader: invocation li fills As row li/16 (+16r)
// for rows 4*(li%16)..+3 (its rows' x offsets are fixed, only the k decode changes per step);
// B loader: Bs row li%16 (+16r), 4 channels 4*(li/16)..+3 (consecutive invocations read
// consecutive weights).
@compute @workgroup_size(16, 16, 1)
fn forward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let ohw = p.oh * p.ow;
    let hw = p.h * p.w;
    let kk2 = p.k * p.k;
    let m_len = p.batch * ohw;
    let n_len = p.c_out;
    let k_len = p.c_in * kk2;
    let mt = (m_len + BM - 1u) / BM;
    let nt = (n_len + BN - 1u) / BN;
    let tile = tile_id(wid, nwg);
    if tile >= mt * nt {
        return;
    }
    let m0 = (tile % mt) * BM;
    let n0 = (tile / mt) * BN;

    // A loader rows: x offset of (b, oy, ox) without the (c, ky, kx) part.
    let a_mv = li % TS;
    let a_k = li / TS;
    let am = vec4<u32>(m0 + 4u * a_mv) + vec4<u32>(0u, 1u, 2u, 3u);
    let a_ok = am < vec4<u32>(m_len);
    let ab = am / vec4<u32>(ohw);
    let apix = am - ab * vec4<u32>(ohw);
    let aoy = apix / vec4<u32>(p.ow);
    let aox = apix - aoy * vec4<u32>(p.ow);
    let a_off = ab * vec4<u32>(p.c_in * hw) + aoy * vec4<u32>(p.w) + aox;

    // B loader columns: weight row offsets of 4 output channels.
    let b_k = li % TS;
    let b_nv = li / TS;
    let bn = vec4<u32>(n0 + 4u * b_nv) + vec4<u32>(0u, 1u, 2u, 3u);
    let b_ok = bn < vec4<u32>(n_len);
    let b_off = bn * vec4<u32>(k_len);

    var acc = Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = 0u; k0 < k_len; k0 += BK) {
        fwd_stage(k0, a_k, a_mv, a_off, a_ok, b_k, b_nv, b_off, b_ok);
        fwd_stage(k0, a_k + TS, a_mv, a_off, a_ok, b_k + TS, b_nv, b_off, b_ok);
        workgroupBarrier();
        acc = tile_mma(acc, lid.x, lid.y);
        workgroupBarrier();
    }

    // Epilogue: bias, ReLU, scatter to NCHW (rows m -> (b, pixel), column n -> channel plane).
    let om = m0 + 4u * lid.x;
    let on = n0 + 4u * lid.y;
    for (var j = 0u; j < 4u; j++) {
        let n = on + j;
        if n >= n_len {
            break;
        }
        let v = col(acc, j) + vec4<f32>(fbias[n]);
        let out = select(v, max(v, vec4<f32>(0.0)), p.relu != 0u);
        for (var i = 0u; i < 4u; i++) {
            let m = om + i;
            if m < m_len {
                let b = m / ohw;
                fy[(b * p.c_out + n) * ohw + (m - b * ohw)] = out[i];
            }
        }
    }
}

// The kernel taps a backward_input tile visits: ky in ky0.., kx in kx0..kx0+nkx-1, every o;
// K index t = ((ky-ky0)*nkx + (kx-kx0))*c_out + o, t < k_len.
struct Taps {
    ky0: u32,
    kx0: u32,
    nkx: u32,
    k_len: u32,
}

// An invocation's 4 A-loader rows of backward_input: dy offset of their sample, their pixel.
struct Rows {
    base: vec4<u32>,
    iy: vec4<u32>,
    ix: vec4<u32>,
    ok: vec4<bool>,
}

// Stages A row `ra` and B row `rb` of the backward_input K step at k0: A = dy at the shifted
// pixel (0 outside the output plane), B = w[o, c, ky, kx] for the K index's tap and o.
fn bi_stage(k0: u32, taps: Taps, ra: u32, mv: u32, rows: Rows, rb: u32, nv: u32,
            b_off: vec4<u32>, b_ok: vec4<bool>) {
    let ohw = p.oh * p.ow;
    let ka = k0 + ra;
    let ta = ka / p.c_out;
    let oa = ka - ta * p.c_out;
    let tya = ta / taps.nkx;
    let yy = rows.iy - vec4<u32>(taps.ky0 + tya);
    let xx = rows.ix - vec4<u32>(taps.kx0 + ta - tya * taps.nkx);
    let oka = rows.ok & (yy < vec4<u32>(p.oh)) & (xx < vec4<u32>(p.ow))
        & vec4<bool>(ka < taps.k_len);
    let ia = rows.base + vec4<u32>(oa * ohw) + yy * vec4<u32>(p.ow) + xx;
    As[ra * TS + mv] = vec4<f32>(
        ld_bi_dy(ia.x, oka.x), ld_bi_dy(ia.y, oka.y), ld_bi_dy(ia.z, oka.z), ld_bi_dy(ia.w, oka.w));

    let kb = k0 + rb;
    let tb = kb / p.c_out;
    let ob = kb - tb * p.c_out;
    let tyb = tb / taps.nkx;
    let tap = (taps.ky0 + tyb) * p.k + taps.kx0 + tb - tyb * taps.nkx;
    let ib = b_off + vec4<u32>(ob * p.c_in * p.k * p.k + tap);
    let okb = b_ok & vec4<bool>(kb < taps.k_len);
    Bs[rb * TS + nv] = vec4<f32>(
        ld_fw(ib.x, okb.x), ld_fw(ib.y, okb.y), ld_fw(ib.z, okb.z), ld_fw(ib.w, okb.w));
}

// backward_input: dx[b,c,iy,ix] = sum_{o,ky,kx} dy[b,o,iy-ky,ix-kx] * w[o,c,ky,kx] over the
// (iy-ky, ix-kx) inside the output plane (the gather form of the transposed convolution).
// GEMM M = h*w*batch with the batch innermost (row m = (iy,ix,b)), N = c_in, K = (ky,kx,o)
// restricted to the kernel taps that reach the tile's pixels: with batch a multiple of 64 a tile
// is one pixel, and it visits exactly its valid taps (a zero-padded gather would do 2.25x the
// work for 12x12 -> 8x8 with k = 5). Taps valid for some but not all of a tile's rows (small
// batches, tiles spanning pixels) are zeroed per element: u32 wrap-around makes negative
// coordinates fail the `< oh` test.
// Workgroup and invocation mapping as in forward; A loader: As row li/16 (+16r), rows
// 4*(li%16)..+3; B loader: Bs row li%16 (+16r), input channels 4*(li/16)..+3.
@compute @workgroup_size(16, 16, 1)
fn backward_input(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let ohw = p.oh * p.ow;
    let hw = p.h * p.w;
    let kk2 = p.k * p.k;
    let m_len = hw * p.batch;
    let n_len = p.c_in;
    let mt = (m_len + BM - 1u) / BM;
    let nt = (n_len + BN - 1u) / BN;
    let tile = tile_id(wid, nwg);
    if tile >= mt * nt {
        return;
    }
    let m0 = (tile % mt) * BM;
    let n0 = (tile / mt) * BN;

    // Taps (ky, kx) valid for at least one pixel of the tile.
    let pix_lo = m0 / p.batch;
    let pix_hi = (min(m0 + BM, m_len) - 1u) / p.batch;
    let iy_lo = pix_lo / p.w;
    let iy_hi = pix_hi / p.w;
    var ix_lo = 0u;
    var ix_hi = p.w - 1u;
    if iy_lo == iy_hi {
        ix_lo = pix_lo - iy_lo * p.w;
        ix_hi = pix_hi - iy_hi * p.w;
    }
    let ky0 = select(0u, iy_lo + 1u - p.oh, iy_lo + 1u > p.oh);
    let kx0 = select(0u, ix_lo + 1u - p.ow, ix_lo + 1u > p.ow);
    let nkx = min(p.k - 1u, ix_hi) + 1u - kx0;
    let nky = min(p.k - 1u, iy_hi) + 1u - ky0;
    let taps = Taps(ky0, kx0, nkx, nky * nkx * p.c_out);

    let a_mv = li % TS;
    let a_k = li / TS;
    let am = vec4<u32>(m0 + 4u * a_mv) + vec4<u32>(0u, 1u, 2u, 3u);
    let a_ok = am < vec4<u32>(m_len);
    let apix = am / vec4<u32>(p.batch);
    let ab = am - apix * vec4<u32>(p.batch);
    let aiy = apix / vec4<u32>(p.w);
    let aix = apix - aiy * vec4<u32>(p.w);
    let rows = Rows(ab * vec4<u32>(p.c_out * ohw), aiy, aix, a_ok);

    let b_k = li % TS;
    let b_nv = li / TS;
    let bn = vec4<u32>(n0 + 4u * b_nv) + vec4<u32>(0u, 1u, 2u, 3u);
    let b_ok = bn < vec4<u32>(n_len);
    let b_off = bn * vec4<u32>(kk2);

    var acc = Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = 0u; k0 < taps.k_len; k0 += BK) {
        bi_stage(k0, taps, a_k, a_mv, rows, b_k, b_nv, b_off, b_ok);
        bi_stage(k0, taps, a_k + TS, a_mv, rows, b_k + TS, b_nv, b_off, b_ok);
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
                bi_dx[(b * p.c_in + n) * hw + pix] = v[i];
            }
        }
    }
}

// Number of batch*oh*ow positions per backward_weight chunk (host twin: ops::conv::weight_chunk).
fn weight_chunk(q_len: u32) -> u32 {
    let per = max((q_len + WCHUNK_MAX_PARTS - 1u) / WCHUNK_MAX_PARTS, WCHUNK_MIN);
    return (per + 63u) / 64u * 64u;
}

// Stages A row `ra` and B row `rb` of the backward_weight K step at k0 (positions q of one
// chunk, q < q_end): A = x at (c, oy+ky, ox+kx) for the invocation's 4 rows (c, ky, kx),
// B = dy[b, o, oy, ox].
fn bw_stage(k0: u32, q_end: u32, ra: u32, mv: u32, a_off: vec4<u32>, a_ok: vec4<bool>, rb: u32,
            nv: u32, b_off: vec4<u32>, b_ok: vec4<bool>) {
    let ohw = p.oh * p.ow;
    let qa = k0 + ra;
    let ba = qa / ohw;
    let pa = qa - ba * ohw;
    let oy = pa / p.ow;
    let ox = pa - oy * p.ow;
    let ia = a_off + vec4<u32>(ba * p.c_in * p.h * p.w + oy * p.w + ox);
    let oka = a_ok & vec4<bool>(qa < q_end);
    As[ra * TS + mv] = vec4<f32>(
        ld_wx(ia.x, oka.x), ld_wx(ia.y, oka.y), ld_wx(ia.z, oka.z), ld_wx(ia.w, oka.w));

    let qb = k0 + rb;
    let bb = qb / ohw;
    let ib = b_off + vec4<u32>(bb * p.c_out * ohw + (qb - bb * ohw));
    let okb = b_ok & vec4<bool>(qb < q_end);
    Bs[rb * TS + nv] = vec4<f32>(
        ld_wdy(ib.x, okb.x), ld_wdy(ib.y, okb.y), ld_wdy(ib.z, okb.z), ld_wdy(ib.w, okb.w));
}

// backward_weight partials: part[s][o][c,ky,kx] = sum over positions q = (b,oy,ox) of chunk s of
// dy[b,o,oy,ox] * x[b,c,oy+ky,ox+kx].
// GEMM (transposed so rows are contiguous in dw) M = c_in*k*k (row m = (c,ky,kx)), N = c_out,
// K = positions of one chunk. Workgroup: one 64 x 64 tile of one chunk (linear id: m tiles
// fastest, then n tiles, then chunks). A loader: As row li/16 (+16r) (one position), rows
// 4*(li%16)..+3 (fixed x offsets c*h*w+ky*w+kx); B loader: Bs row li%16 (+16r) (consecutive
// invocations read consecutive dy pixels), channels 4*(li/16)..+3.
@compute @workgroup_size(16, 16, 1)
fn backward_weight(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let ohw = p.oh * p.ow;
    let hw = p.h * p.w;
    let kk2 = p.k * p.k;
    let m_len = p.c_in * kk2;
    let n_len = p.c_out;
    let q_len = p.batch * ohw;
    let chunk = weight_chunk(q_len);
    let parts = (q_len + chunk - 1u) / chunk;
    let mt = (m_len + BM - 1u) / BM;
    let nt = (n_len + BN - 1u) / BN;
    let tile = tile_id(wid, nwg);
    if tile >= mt * nt * parts {
        return;
    }
    let m0 = (tile % mt) * BM;
    let n0 = ((tile / mt) % nt) * BN;
    let s = tile / (mt * nt);
    let q_begin = s * chunk;
    let q_end = min(q_begin + chunk, q_len);

    let a_mv = li % TS;
    let a_k = li / TS;
    let am = vec4<u32>(m0 + 4u * a_mv) + vec4<u32>(0u, 1u, 2u, 3u);
    let a_ok = am < vec4<u32>(m_len);
    let ac = am / vec4<u32>(kk2);
    let arr = am - ac * vec4<u32>(kk2);
    let aky = arr / vec4<u32>(p.k);
    let akx = arr - aky * vec4<u32>(p.k);
    let a_off = ac * vec4<u32>(hw) + aky * vec4<u32>(p.w) + akx;

    let b_k = li % TS;
    let b_nv = li / TS;
    let bn = vec4<u32>(n0 + 4u * b_nv) + vec4<u32>(0u, 1u, 2u, 3u);
    let b_ok = bn < vec4<u32>(n_len);
    let b_off = bn * vec4<u32>(ohw);

    var acc = Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = q_begin; k0 < q_end; k0 += BK) {
        bw_stage(k0, q_end, a_k, a_mv, a_off, a_ok, b_k, b_nv, b_off, b_ok);
        bw_stage(k0, q_end, a_k + TS, a_mv, a_off, a_ok, b_k + TS, b_nv, b_off, b_ok);
        workgroupBarrier();
        acc = tile_mma(acc, lid.x, lid.y);
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
}

var<workgroup> red: array<f32, 256>;

// backward_bias: db[o] = sum_{b,oy,ox} dy[b,o,oy,ox].
// Workgroup: one output channel (linear id over a possibly 2-D dispatch), 256 invocations.
// Invocation li sums positions li, li+256, ... in order, then a fixed-order tree halves 256 -> 1.
@compute @workgroup_size(256, 1, 1)
fn backward_bias(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let o = tile_id(wid, nwg);
    if o >= p.c_out {
        return;
    }
    let ohw = p.oh * p.ow;
    let q_len = p.batch * ohw;
    // On lavapipe this loop's 65,535-iteration cap (see tile_mma) allows 16.7M positions.
    var s = 0.0;
    for (var q = li; q < q_len; q += 256u) {
        let b = q / ohw;
        s += bdy[(b * p.c_out + o) * ohw + (q - b * ohw)];
    }
    red[li] = s;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half >>= 1u) {
        if li < half {
            red[li] += red[li + half];
        }
        workgroupBarrier();
    }
    if li == 0u {
        bdb[o] = red[0];
    }
}


// ---------------------------------------------------------------------------------------------
// forward_relu_pool: conv + bias + ReLU + 2x2 stride-2 max-pool (floor mode) [+ dropout].

// Invocations per workgroup along GEMM rows (windows) and columns (channel quads): the tile is
// 4*TM rows (TM pooling windows) by 4*TN channels. BK must be a multiple of TM and TN, and TM*TN
// a multiple of BK (the loaders split evenly); `gpu::tile::Tile` lists the variants.
override TM: u32 = 16u;
override TN: u32 = 16u;
// Layer shape: input C_IN x H x W, C_OUT filters KS x KS (stride 1, valid), so the K decode
// (c, ky, kx), the window decode and the K loop's trip count divide by and compare with
// constants, not uniforms; the batch (it varies: the short last batch) stays in the uniform.
override C_IN: u32 = 64u;
override H: u32 = 12u;
override W: u32 = 12u;
override C_OUT: u32 = 64u;
override KS: u32 = 5u;
// Writes the dropped-out map `rp_d` as well (the mask of act.dropout_forward on the pooled map).
override DROPOUT: bool = false;

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

@group(0) @binding(1) var<storage, read> rp_x: array<f32>;
@group(0) @binding(2) var<storage, read> rp_w: array<f32>;
@group(0) @binding(3) var<storage, read> rp_bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> rp_p: array<f32>;
@group(0) @binding(5) var<storage, read_write> rp_argmax: array<u32>;
// Dropout (bound to placeholders when DROPOUT is off): seed, threshold, scale; state.t the step.
@group(0) @binding(6) var<uniform> rp_drop: ActParams;
@group(0) @binding(7) var<storage, read> rp_state: StepState;
@group(0) @binding(8) var<storage, read_write> rp_d: array<f32>;

// A tile [BK][TM] vec4 (one pooling window per vec4), B tile [BK][TN] (4 channels per vec4):
// 16 KiB for the default 16 x 16 invocations.
var<workgroup> rp_as: array<vec4<f32>, BK * TM>;
var<workgroup> rp_bs: array<vec4<f32>, BK * TN>;

// PCG hash and dropout hash of SPEC 4, the same u32 arithmetic as act.wgsl and `params::pcg`.
fn pcg(x: u32) -> u32 {
    let h = x * 747796405u + 2891336453u;
    let w = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
    return (w >> 22u) ^ w;
}

fn dropout_hash(seed: u32, step: u32, i: u32) -> u32 {
    return pcg(pcg(pcg(seed) ^ step) ^ i);
}

fn ld_rp_x(i: u32, ok: bool) -> f32 {
    return select(0.0, rp_x[select(0u, i, ok)], ok);
}
fn ld_rp_w(i: u32, ok: bool) -> f32 {
    return select(0.0, rp_w[select(0u, i, ok)], ok);
}

// The same fma sequence per output as mma_row/tile_mma (k ascending, one fma per k), so every
// output equals conv.forward's bit for bit, whatever TM and TN.
fn rp_mma_row(acc: Acc, kk: u32, tx: u32, ty: u32) -> Acc {
    let a = rp_as[kk * TM + tx];
    let b = rp_bs[kk * TN + ty];
    return Acc(
        fma(a, vec4<f32>(b.x), acc.c0),
        fma(a, vec4<f32>(b.y), acc.c1),
        fma(a, vec4<f32>(b.z), acc.c2),
        fma(a, vec4<f32>(b.w), acc.c3),
    );
}

fn rp_mma_4rows(acc: Acc, kk: u32, tx: u32, ty: u32) -> Acc {
    return rp_mma_row(rp_mma_row(rp_mma_row(rp_mma_row(acc, kk, tx, ty), kk + 1u, tx, ty),
        kk + 2u, tx, ty), kk + 3u, tx, ty);
}

// 8 rows per iteration for lavapipe's loop cap (see tile_mma).
fn rp_tile_mma(acc: Acc, tx: u32, ty: u32) -> Acc {
    var a = acc;
    for (var kk = 0u; kk < BK; kk += 8u) {
        a = rp_mma_4rows(rp_mma_4rows(a, kk, tx, ty), kk + 4u, tx, ty);
    }
    return a;
}

// Stages As row `ra`, window `mv` of the K step at k0: x at the window's four pixels shifted
// by tap (c, ky, kx) = decode(k0 + ra). `a_off`: x offsets of the window's pixels (tap 0).
fn rp_stage_a(k0: u32, k_len: u32, ra: u32, mv: u32, a_off: vec4<u32>, a_ok: bool) {
    let kk2 = KS * KS;
    let ka = k0 + ra;
    let c = ka / kk2;
    let rr = ka - c * kk2;
    let ky = rr / KS;
    let kx = rr - ky * KS;
    let ia = a_off + vec4<u32>(c * H * W + ky * W + kx);
    let ok = a_ok && ka < k_len;
    rp_as[ra * TM + mv] = vec4<f32>(
        ld_rp_x(ia.x, ok), ld_rp_x(ia.y, ok), ld_rp_x(ia.z, ok), ld_rp_x(ia.w, ok));
}

// Stages Bs row `rb`, channel quad `nv` (first channel n0 + 4 nv): w[n, k0 + rb].
fn rp_stage_b(k0: u32, k_len: u32, rb: u32, nv: u32, n0: u32) {
    let kb = k0 + rb;
    let bn = vec4<u32>(n0 + 4u * nv) + vec4<u32>(0u, 1u, 2u, 3u);
    let okb = (bn < vec4<u32>(C_OUT)) & vec4<bool>(kb < k_len);
    let ib = bn * vec4<u32>(k_len) + vec4<u32>(kb);
    rp_bs[rb * TN + nv] = vec4<f32>(
        ld_rp_w(ib.x, okb.x), ld_rp_w(ib.y, okb.y), ld_rp_w(ib.z, okb.z), ld_rp_w(ib.w, okb.w));
}

// forward_relu_pool: a = relu?(bias[o] + conv(x, w)) as in forward, then
// p[b,o,py,px] = max over the window (2py+dy, 2px+dx), dy, dx in {0,1}, in row-major order
// with ties to the first maximum; argmax = (2py+dy)*ow + 2px+dx (index in the conv output plane,
// pool.maxpool_forward's encoding); with DROPOUT d = keep(i) ? p*scale : 0, i the flat index of
// p (act.dropout_forward on p). Rows and columns dropped by the floor mode are never computed.
// GEMM M = 4 * batch*ph*pw, row m = (b, py, px, dy, dx) (window q = m/4 major), N = c_out,
// K = c_in*KS*KS. Workgroup: TM windows x 4*TN channels (linear tile id, window tiles fastest);
// invocation (tx, ty) owns window q0+tx, channels n0+4ty..+3, a vec4 over the window per
// channel. Loaders over entries e = li + TM*TN*r: A entry (k row e/TM, window e%TM), so an
// invocation's window and its x offsets are fixed; B entry (k row e%BK, channel quad e/BK), so
// consecutive invocations read consecutive weights. Per K step lavapipe counts 5 + BK/min(TM,TN)
// loop iterations against its 65,535 cap: K up to ~230,000 for 16 x 16.
@compute @workgroup_size(TM, TN, 1)
fn forward_relu_pool(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // A pipeline built for another shape writes nothing rather than wrong values (the host
    // builds one per shape, so this never triggers there).
    if p.c_in != C_IN || p.h != H || p.w != W || p.c_out != C_OUT || p.k != KS {
        return;
    }
    let hw = H * W;
    let ow = W - KS + 1u;
    let ph = (H - KS + 1u) / 2u;
    let pw = ow / 2u;
    let phw = ph * pw;
    let q_len = p.batch * phw;
    let n_len = C_OUT;
    let k_len = C_IN * KS * KS;
    let mt = (q_len + TM - 1u) / TM;
    let nt = (n_len + 4u * TN - 1u) / (4u * TN);
    let tile = tile_id(wid, nwg);
    if tile >= mt * nt {
        return;
    }
    let q0 = (tile % mt) * TM;
    let n0 = (tile / mt) * (4u * TN);

    // A loader: window q0 + a_mv, pixels (2py+dy, 2px+dx) in row-major window order.
    let a_mv = li % TM;
    let a_k = li / TM;
    let aq = q0 + a_mv;
    let a_ok = aq < q_len;
    let ab = aq / phw;
    let apix = aq - ab * phw;
    let apy = apix / pw;
    let apx = apix - apy * pw;
    let a_off = vec4<u32>(ab * C_IN * hw + 2u * apy * W + 2u * apx)
        + vec4<u32>(0u, 1u, W, W + 1u);

    // B loader: k row b_k, channel quads b_nv + NV_STEP*r.
    let b_k = li % BK;
    let b_nv = li / BK;
    let nv_step = TM * TN / BK;

    let ra_rounds = BK / TN;
    let rb_rounds = BK / TM;
    let rounds = max(ra_rounds, rb_rounds);
    var acc = Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = 0u; k0 < k_len; k0 += BK) {
        for (var r = 0u; r < rounds; r++) {
            if r < ra_rounds {
                rp_stage_a(k0, k_len, a_k + TN * r, a_mv, a_off, a_ok);
            }
            if r < rb_rounds {
                rp_stage_b(k0, k_len, b_k, b_nv + nv_step * r, n0);
            }
        }
        workgroupBarrier();
        acc = rp_tile_mma(acc, lid.x, lid.y);
        workgroupBarrier();
    }

    // Epilogue: bias and ReLU exactly as forward, then the window max in registers.
    let q = q0 + lid.x;
    if q >= q_len {
        return;
    }
    let b = q / phw;
    let pix = q - b * phw;
    let py = pix / pw;
    let px = pix - py * pw;
    let am0 = 2u * py * ow + 2u * px;
    let on = n0 + 4u * lid.y;
    for (var j = 0u; j < 4u; j++) {
        let n = on + j;
        if n >= n_len {
            break;
        }
        let v = col(acc, j) + vec4<f32>(rp_bias[n]);
        let a = select(v, max(v, vec4<f32>(0.0)), p.relu != 0u);
        // Strict > in row-major window order: the first of equal maxima wins (pool.wgsl).
        var best = a.x;
        var at = 0u;
        if a.y > best {
            best = a.y;
            at = 1u;
        }
        if a.z > best {
            best = a.z;
            at = ow;
        }
        if a.w > best {
            best = a.w;
            at = ow + 1u;
        }
        let o = (b * n_len + n) * phw + pix;
        rp_p[o] = best;
        rp_argmax[o] = am0 + at;
        if DROPOUT {
            let keep = dropout_hash(rp_drop.seed, rp_state.t, o) >= rp_drop.threshold;
            rp_d[o] = select(0.0, best * rp_drop.scale, keep);
        }
    }
}
