//! Shared helpers: example blueprints at tiny sizes.

#![allow(dead_code)]

use std::path::PathBuf;

use attnflow_train::trainer::BlueprintSource;

/// The repository's `examples/` directory.
pub fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// A spec from `examples/`.
pub fn source(relative: &str) -> BlueprintSource {
    BlueprintSource::from_file(&examples().join(relative)).unwrap()
}

/// Overrides that shrink any example blueprint to a few thousand
/// parameters; only dims the blueprint declares are overridden.
pub fn tiny_overrides(declared: &[String]) -> Vec<(String, String)> {
    let wanted = [
        ("batch", "2"),
        ("seq", "8"),
        ("n_ctx", "16"),
        ("max_positions", "16"),
        ("max_len", "40"),
        ("vocab", "24"),
        ("type_vocab", "2"),
        ("d_model", "16"),
        ("heads", "2"),
        ("kv_heads", "1"),
        ("layers", "2"),
        ("d_ff", "24"),
        ("image", "8"),
        ("patch", "4"),
        ("classes", "5"),
        ("window", "3"),
    ];
    wanted
        .iter()
        .filter(|(name, _)| declared.iter().any(|dim| dim == name))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}
