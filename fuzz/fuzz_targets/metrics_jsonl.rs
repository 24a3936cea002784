//! A run's metrics.jsonl as `train --resume` reads it: `train::parse_records` (the text of
//! `train::read_records`). Input: a count byte (records wanted, 0..8), then the text. Ok must
//! hold exactly that many records; an error must be `BadFile` (exit 2) naming the file; at most
//! 1 MiB plus 4 bytes per input byte may be allocated at once.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    // read_records reads with input::read_text: only UTF-8 reaches the parser.
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let n = (n % 8) as usize;
    let path = Path::new("/r/metrics.jsonl");
    let (r, peak) = common::peak_of(|| fmnist_gpu::train::parse_records(path, text, n));
    assert!(peak < common::MB + 4 * data.len(), "{peak} bytes allocated");
    match r {
        Ok(v) => assert_eq!(v.len(), n),
        Err(e) => {
            common::clean(&e);
            assert!(e.to_string().contains("/r/metrics.jsonl"), "{e}");
        }
    }
});
