//! Batch gather from the u8 data set (with optional augmentation) and the step counter advance.

use crate::params::{GatherParams, StepState, dropout_hash};

/// The augmentation draw of [`GatherParams`]: (flip, dx, dy) for batch row `b` at step `t`.
pub fn augment_draw(seed: u32, t: u32, b: u32) -> (bool, i32, i32) {
    let r = |j: u32| dropout_hash(seed, t, 4 * b + j);
    (r(0) & 1 == 1, (r(1) % 5) as i32 - 2, (r(2) % 5) as i32 - 2)
}

pub fn gather(
    p: &GatherParams,
    state: &StepState,
    index: &[u32],
    images: &[u8],
    labels: &[u8],
    x: &mut [f32],
    y: &mut [u32],
) {
    let pix = p.pixels as usize;
    // Images are square (28x28); the side is derived so the twin matches the shader exactly.
    let side = (pix as f64).sqrt() as i32;
    for b in 0..p.batch as usize {
        let pos = state.epoch_step as usize * p.batch as usize + b;
        let xr = &mut x[b * pix..][..pix];
        if pos >= state.n as usize {
            xr.fill(0.0);
            y[b] = 0;
            continue;
        }
        let s = index[pos] as usize;
        let img = &images[s * pix..][..pix];
        y[b] = labels[s] as u32;
        if p.augment == 0 {
            for (o, &v) in xr.iter_mut().zip(img) {
                *o = v as f32 / 255.0;
            }
            continue;
        }
        let (flip, dx, dy) = augment_draw(p.seed, state.t, b as u32);
        for yy in 0..side {
            for xx in 0..side {
                let sy = yy - dy;
                let mut sx = xx - dx;
                if flip {
                    sx = side - 1 - sx;
                }
                let inside = (0..side).contains(&sy) && (0..side).contains(&sx);
                xr[(yy * side + xx) as usize] = if inside {
                    img[(sy * side + sx) as usize] as f32 / 255.0
                } else {
                    0.0
                };
            }
        }
    }
}

pub fn advance(state: &mut StepState) {
    state.epoch_step += 1;
    state.t += 1;
}
