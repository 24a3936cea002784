//! Checkpoint loading: `checkpoint::load_model_bytes` (model.safetensors) and
//! `checkpoint::load_state_bytes` (optimizer.safetensors, per optimizer kind). Input: a selector
//! byte, then the file's bytes. Ok must be finite parameters of consistent shapes (and, for the
//! state, consistent optimizer state and epochs); an error must be `BadFile` (exit 2); at most
//! 8 MiB plus 4 bytes per input byte may be allocated at once.

#![no_main]

mod common;

use fmnist_gpu::checkpoint::{load_model_bytes, load_state_bytes, state_components};
use fmnist_gpu::model::Params;
use fmnist_gpu::optim::OptimizerKind;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fn consistent(p: &Params) {
    assert!(p.all_finite());
    let want = Params::zeros(p.hidden);
    assert_eq!(p.tensors.len(), want.tensors.len());
    for (a, b) in p.tensors.iter().zip(&want.tensors) {
        assert_eq!(a.len(), b.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let path = Path::new("/r/c.safetensors");
    let kinds = [
        OptimizerKind::Wame,
        OptimizerKind::Adam,
        OptimizerKind::Rmsprop,
        OptimizerKind::Sgd,
    ];
    let (r, peak) = common::peak_of(|| {
        if sel & 1 == 0 {
            load_model_bytes(path, bytes).map(|(m, _)| consistent(&m))
        } else {
            let kind = kinds[(sel as usize >> 1) % kinds.len()];
            load_state_bytes(path, bytes, kind).map(|(s, _)| {
                consistent(&s.params);
                consistent(&s.best);
                assert_eq!(s.params.hidden, s.best.hidden);
                let w = state_components(kind).len();
                assert_eq!(s.optim.len(), s.params.tensors.len());
                for (o, t) in s.optim.iter().zip(&s.params.tensors) {
                    assert_eq!(o.len(), t.len() * w);
                    assert!(o.iter().all(|v| v.is_finite()));
                }
                assert!(s.epoch >= 1 && s.best_epoch >= 1 && s.best_epoch <= s.epoch);
                assert!(s.epoch as u64 <= fmnist_gpu::limits::MAX_EPOCHS);
                assert!((0.0..=1.0).contains(&s.best_val_accuracy));
            })
        }
    });
    assert!(
        peak < 8 * common::MB + 4 * bytes.len(),
        "{peak} bytes allocated for a {}-byte file",
        bytes.len()
    );
    if let Err(e) = r {
        common::clean(&e);
        assert!(e.to_string().contains("/r/c.safetensors"), "{e}");
    }
});
