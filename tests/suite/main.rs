//! The integration tests, one module per subject, in one test binary (the helpers of
//! tests/common are compiled once, not once per file). Run one subject with a filter:
//! `cargo test --release --test suite train::`. tests/real_data.rs, which needs the data and
//! its own harness, stays a binary of its own.

#[path = "../common/mod.rs"]
mod common;

mod checkpoint;
mod cli;
mod data;
mod data_paths;
mod deepnade;
mod keep;
mod made;
mod mixture;
mod models;
#[cfg(feature = "cuda")]
mod nade_cuda;
mod optim;
mod sampling;
mod train;
