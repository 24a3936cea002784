//! IDX images + labels pair reading (`data::read_pair_sized`, 28x28 as `data::load` asks), each
//! file raw or gzip. Input: a mode byte, a 2-byte split point, then the images bytes and the
//! labels bytes. Per file the mode says: raw, the bytes as a `.gz` file (the decoder fuzzed), or
//! the bytes gzip-compressed here into a `.gz` file (the IDX reader fuzzed behind gzip).
//! Ok must be a consistent data set; an error must be `BadFile` (exit 2); at most 8 MiB
//! (plus a little per input byte) may be allocated at once.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8], mode: u8) -> PathBuf {
    for stale in [name.to_string(), format!("{name}.gz")] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    match mode {
        0 => {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        }
        1 => {
            let p = dir.join(format!("{name}.gz"));
            std::fs::write(&p, bytes).unwrap();
            p
        }
        _ => {
            let p = dir.join(format!("{name}.gz"));
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(bytes).unwrap();
            std::fs::write(&p, z.finish().unwrap()).unwrap();
            p
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let mode = data[0];
    let split = (u16::from_le_bytes([data[1], data[2]]) as usize).min(data.len() - 3);
    let (img, lab) = data[3..].split_at(split);
    let dir = common::scratch();
    let ip = write(&dir, "images-idx3-ubyte", img, mode % 3);
    let lp = write(&dir, "labels-idx1-ubyte", lab, (mode / 3) % 3);
    // Sometimes name the file without its .gz, as `data::load` does (resolve() adds it).
    let (ip, lp) = if mode & 0x80 != 0 {
        (ip.with_extension(""), lp.with_extension(""))
    } else {
        (ip, lp)
    };
    let (r, peak) = common::peak_of(|| fmnist_gpu::data::read_pair_sized(&ip, &lp, Some((28, 28))));
    assert!(
        peak < 8 * common::MB + 64 * data.len(),
        "{peak} bytes allocated for a {}-byte input",
        data.len()
    );
    match r {
        Ok(d) => {
            assert!(d.n >= 1);
            assert_eq!((d.rows, d.cols), (28, 28));
            assert_eq!(d.labels.len(), d.n);
            assert_eq!(d.images.len(), d.n * 784);
            assert!(d.labels.iter().all(|&l| l <= 9));
        }
        Err(e) => common::clean(&e),
    }
});
