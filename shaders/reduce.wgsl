// Deterministic second pass of split reductions (e.g. conv backward_weight partials).

struct ReduceParams {
    n: u32,
    parts: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: ReduceParams;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// sum_partials: out[i] = sum_{s = 0, 1, ..., parts-1} partials[s*n + i], added in that order.
// One invocation per element (linear id over a possibly 2-D dispatch of 256-wide workgroups);
// consecutive invocations read consecutive addresses of each part.
@compute @workgroup_size(256, 1, 1)
fn sum_partials(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + li;
    if i >= p.n {
        return;
    }
    var s = 0.0;
    for (var j = 0u; j < p.parts; j++) {
        s += partials[j * p.n + i];
    }
    out[i] = s;
}
