//! predict's image decoder, `cmd::predict::load_image_bytes` (PNG, JPEG, GIF, BMP, WebP). Ok must
//! be 28x28 grey pixels; an error must be `BadFile` (exit 2); at most 600 MiB may be allocated
//! at once (libFuzzer's -timeout bounds the time).

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let (r, peak) = common::peak_of(|| {
        fmnist_gpu::cmd::predict::load_image_bytes(Path::new("/r/x.img"), data, false)
    });
    assert!(peak < 600 * common::MB, "{peak} bytes allocated");
    match r {
        Ok(px) => assert_eq!(px.len(), 784),
        Err(e) => {
            common::clean(&e);
            assert!(e.to_string().contains("/r/x.img"), "{e}");
        }
    }
});
