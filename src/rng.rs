//! Seeded randomness: one ChaCha8 stream per purpose, so changing one never shifts another (SPEC 1).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The independent purposes randomness is drawn for. The discriminant is the ChaCha stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Init = 1,
    Shuffle = 2,
    Split = 3,
    Dropout = 4,
    Augment = 5,
    Search = 6,
}

pub fn stream(seed: u64, s: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(s as u64);
    rng
}

/// A 32-bit key for the counter-based hashes of dropout and augmentation (SPEC 4).
pub fn hash_key(seed: u64, s: Stream) -> u32 {
    use rand::RngExt;
    stream(seed, s).random::<u32>()
}

/// A stream that also depends on `epoch`, so epoch `e` can be drawn without replaying `0..e`.
pub fn epoch_stream(seed: u64, s: Stream, epoch: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((s as u64) << 32) | epoch);
    rng
}
