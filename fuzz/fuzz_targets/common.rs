//! Shared by the fuzz targets: allocation accounting (the property tests' memory bounds) and the
//! check that an error is the clean kind (`BadFile`, exit 2).

#![allow(dead_code)]

use fmnist_gpu::Error;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

// libFuzzer runs the target on one thread, so process-wide counters measure the target.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let v = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(v, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new) };
        if !p.is_null() {
            if new >= layout.size() {
                grow(new - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

pub const MB: usize = 1 << 20;

/// Runs `f` and returns its result with the most bytes it had allocated at once.
pub fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    (r, peak)
}

/// A parser's error must be a bad-input error (exit 2), never a runtime one.
pub fn clean(e: &Error) {
    assert_eq!(e.exit_code(), 2, "error with exit code {}: {e}", e.exit_code());
    assert!(matches!(e, Error::BadFile { .. }), "not a BadFile error: {e:?}");
}

/// A scratch directory of this process under /dev/shm (tmpfs; two fuzzers may run at once).
pub fn scratch() -> std::path::PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("fmnist-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch directory");
    d
}
