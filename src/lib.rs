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
pub mod mix;
pub mod models;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod report;
pub mod run_lock;
pub mod sample;
pub mod threads;
pub mod tile_shape;
pub mod train;
pub mod train_overrides;
pub mod train_progress;
pub mod train_state;

/// The layer rule of docs/ARCHITECTURE.md, kept by a test: the dependencies point down, so
/// code under src/kernels names nothing of the crate outside src/kernels (plain tensors in
/// and out), and code under src/models nothing above it (only kernels). Comments may mention
/// anything.
#[cfg(test)]
mod layer_rule {
    use std::path::Path;

    /// Every `crate::NAME` in code (not comments) of the .rs files under `dir`, with its place.
    fn crate_paths(dir: &Path) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(crate_paths(&path));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for (at, _) in code.match_indices("crate::") {
                    let name: String = code[at + 7..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    found.push((format!("{}:{}", path.display(), i + 1), name));
                }
            }
        }
        found
    }

    fn check(layer: &str, allowed: &[&str]) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(layer);
        let found = crate_paths(&dir);
        assert!(
            !found.is_empty() || layer == "kernels",
            "no code read in {}",
            dir.display()
        );
        let above: Vec<_> = found
            .iter()
            .filter(|(_, name)| !allowed.contains(&name.as_str()))
            .collect();
        assert!(above.is_empty(), "src/{layer} reaches up: {above:?}");
    }

    #[test]
    fn kernels_name_nothing_outside_kernels() {
        // dispatch_isa is the kernels' own macro (src/kernels/simd.rs), exported at the root.
        check("kernels", &["kernels", "dispatch_isa"]);
    }

    #[test]
    fn models_name_only_kernels() {
        check("models", &["kernels", "dispatch_isa"]);
    }
}
