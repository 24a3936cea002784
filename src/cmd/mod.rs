//! Subcommand implementations; `main.rs` parses the command line and dispatches here.

pub mod adapters;
