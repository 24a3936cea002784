//! A run's config.json: `train::RunConfig::from_json_str` then `cmd::train::check_run`, as
//! `train --resume` does. Ok must be within the limits; an error must be `BadFile` (exit 2)
//! naming config.json.

#![no_main]

mod common;

use fmnist_gpu::limits;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // config.json is read with input::read_text: only UTF-8 reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/r/config.json");
    let r = fmnist_gpu::train::RunConfig::from_json_str(path, text).and_then(|c| {
        fmnist_gpu::cmd::train::check_run(&c, &limits::Origin::File(path)).map(|_| c)
    });
    match r {
        Ok(c) => {
            assert!(c.batch_size >= 1 && c.batch_size as u64 <= limits::MAX_BATCH);
            assert!(c.hidden >= 1 && c.hidden as u64 <= limits::MAX_HIDDEN);
            assert!(c.epochs >= 1 && c.epochs as u64 <= limits::MAX_EPOCHS);
            assert!((0.0..1.0).contains(&c.dropout));
            assert!((0.0..1.0).contains(&c.val_fraction));
            assert!((0.0..1.0).contains(&c.label_smoothing));
            assert!(c.optimizer.lr.is_finite() && c.optimizer.lr > 0.0);
            assert!(c.limit.is_none_or(|l| l >= 1));
            // What train writes back must read back as the same run.
            let again = serde_json::to_string(&c).unwrap();
            let c2 = fmnist_gpu::train::RunConfig::from_json_str(path, &again).unwrap();
            assert_eq!(c.differs_from(&c2), None);
        }
        Err(e) => {
            common::clean(&e);
            assert!(e.to_string().contains("/r/config.json"), "{e}");
        }
    }
});
