//! nade: autoregressive density models of binary vectors (FVSBN, MLP, NADE, MADE,
//! order-agnostic deep NADE) on candle.
//! docs/ARCHITECTURE.md is the map of the code.
//!
//! p(x) = prod_i p(x_i | x_<i) over x in {0,1}^n; every model computes all n conditionals at
//! once for density evaluation ([`models::Autoregressive::logits`]).

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod image_grid;
pub mod info;
pub mod interrupt;
pub mod io;
pub mod keep;
pub mod kernels;
pub mod memory;
pub mod models;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod run_lock;
pub mod sample;
pub mod threads;
pub mod train;
pub mod train_progress;
pub mod train_state;
