//! GEMM tile variants: the `override` constants that pick a kernel's workgroup shape.
//!
//! Every GEMM kernel (conv forward, input and weight gradients, the dense layers) walks one
//! output tile per workgroup with `TM x TN` invocations, each owning a 4 x 4 block of C, so the
//! tile is `BM = 4*TM` rows by `BN = 4*TN` columns. A variant only changes which workgroup
//! computes which outputs: every output is one `fma` chain over K in ascending order in one
//! invocation, so all variants give bit-identical results and tuning never changes numbers.

/// One tile variant: `tm x tn` invocations, a `4*tm x 4*tn` output tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Tile {
    pub tm: u32,
    pub tn: u32,
}

/// K rows staged per step (`BK` in the shaders); fixed, so workgroup memory is `BK*4*(tm+tn)*4`.
pub const BK: u32 = 32;

impl Tile {
    /// The default variant, used when nothing is tuned and the reference for bit-identity.
    pub const DEFAULT: Tile = Tile { tm: 16, tn: 16 };

    /// Candidates in order of preference (ties in `tune` go to the earlier one).
    pub const CANDIDATES: [Tile; 5] = [
        Tile::DEFAULT,
        Tile { tm: 16, tn: 8 },
        Tile { tm: 8, tn: 16 },
        Tile { tm: 8, tn: 8 },
        Tile { tm: 32, tn: 16 },
    ];

    pub fn name(&self) -> String {
        format!("{}x{}", 4 * self.tm, 4 * self.tn)
    }

    pub fn bm(&self) -> u32 {
        4 * self.tm
    }

    pub fn bn(&self) -> u32 {
        4 * self.tn
    }

    pub fn invocations(&self) -> u32 {
        self.tm * self.tn
    }

    /// Bytes of workgroup memory for the A and B tiles (vec4 of f32 per 4 rows or columns).
    pub fn workgroup_bytes(&self) -> u32 {
        BK * (self.tm + self.tn) * 16
    }

    /// Whether a device opened with `limits` can run this variant.
    pub fn fits(&self, limits: &wgpu::Limits) -> bool {
        self.invocations() <= limits.max_compute_invocations_per_workgroup
            && self.tm <= limits.max_compute_workgroup_size_x
            && self.tn <= limits.max_compute_workgroup_size_y
            && self.workgroup_bytes() <= limits.max_compute_workgroup_storage_size
    }

    /// The candidates a device opened with `limits` can run.
    pub fn candidates(limits: &wgpu::Limits) -> Vec<Tile> {
        Self::CANDIDATES
            .iter()
            .copied()
            .filter(|t| t.fits(limits))
            .collect()
    }

    /// Pipeline `override` constants `TM` and `TN`.
    pub fn constants(&self) -> [(&'static str, f64); 2] {
        [("TM", self.tm as f64), ("TN", self.tn as f64)]
    }
}

impl Default for Tile {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl std::str::FromStr for Tile {
    type Err = String;
    /// `"64x32"` (the tile's rows x columns, as [`Tile::name`] writes it).
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('x')
            .ok_or_else(|| format!("tile {s:?} is not ROWSxCOLS"))?;
        let parse = |v: &str| -> Result<u32, String> {
            let n: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("tile {s:?} is not ROWSxCOLS"))?;
            if n == 0 || !n.is_multiple_of(4) || n > 256 {
                return Err(format!(
                    "tile {s:?}: sides must be multiples of 4 in 4..=256"
                ));
            }
            Ok(n / 4)
        };
        Ok(Tile {
            tm: parse(a)?,
            tn: parse(b)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Tile::CANDIDATES {
            assert_eq!(t.name().parse::<Tile>(), Ok(t));
        }
        assert!("64".parse::<Tile>().is_err());
        assert!("0x64".parse::<Tile>().is_err());
        assert!("66x64".parse::<Tile>().is_err());
    }

    #[test]
    fn webgpu_defaults_run_the_256_invocation_tiles_only() {
        let l = wgpu::Limits::defaults();
        let c = Tile::candidates(&l);
        assert!(c.contains(&Tile::DEFAULT));
        assert!(!c.contains(&Tile { tm: 32, tn: 16 }));
    }
}
