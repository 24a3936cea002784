//! The kernel table: every GPU entry point against its CPU twin on random inputs (SPEC 10).

use crate::Result;
use crate::gpu::DeviceArgs;

pub fn run_table(_device: &DeviceArgs, _json: bool) -> Result<()> {
    Err(crate::Error::BadArg(
        "the kernel table is not built yet; pass --fixture".into(),
    ))
}
