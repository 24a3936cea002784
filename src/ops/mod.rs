//! GPU op families: compiled pipelines plus the prepared dispatches of each WGSL entry point.

pub mod conv;
