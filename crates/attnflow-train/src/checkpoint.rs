//! Checkpoints: weights and optimiser moments in safetensors, plus
//! `checkpoint.json` with the step, the generator state, the data position,
//! the configuration, the blueprint's hash and a checksum of each tensor
//! file.
//!
//! Writing is crash-safe: the tensor files get new, step-numbered names and
//! are each written atomically (temporary file, fsync, rename); then
//! `checkpoint.json`, the commit point, is replaced atomically; only then
//! are the previous step's files removed. A crash at any moment leaves the
//! previous checkpoint or the new one, whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use attnflow_blueprint::{Blueprint, Op};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{BlueprintSource, TrainConfig};
use crate::rng::{fnv1a64, Rng};
use crate::tasks::DataPosition;
use crate::{Result, TrainError};

/// The name of the commit record in a checkpoint directory.
pub const META_FILE: &str = "checkpoint.json";
/// The copy of the blueprint spec kept next to the checkpoint.
pub const SPEC_FILE: &str = "spec.toml";
const FORMAT: &str = "attnflow-checkpoint";
const VERSION: u32 = 1;

/// One tensor file of a checkpoint and its checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// File name within the checkpoint directory.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// 64-bit FNV-1a of the contents, hex.
    pub fnv1a64: String,
}

/// The contents of `checkpoint.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Always `attnflow-checkpoint`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Updates completed.
    pub step: u64,
    /// The blueprint's name.
    pub blueprint: String,
    /// [`blueprint_hash`] of the blueprint the weights belong to.
    pub blueprint_hash: String,
    /// The run's configuration.
    pub config: TrainConfig,
    /// The dropout generator's state.
    pub rng: Rng,
    /// Where the run is in its training data.
    pub data: DataPosition,
    /// The weights file.
    pub weights: FileRecord,
    /// The optimiser-moments file.
    pub optimizer: FileRecord,
}

/// A loaded and verified checkpoint.
pub struct Checkpoint {
    /// Its metadata.
    pub meta: CheckpointMeta,
    /// Weights by parameter name.
    pub weights: HashMap<String, Tensor>,
    /// Optimiser moments by `m.<name>` / `v.<name>`.
    pub optimizer: HashMap<String, Tensor>,
}

/// A hash of what makes weights fit a blueprint: every node's name, op with
/// its attributes, and inputs (input nodes by name and element kind only, so
/// batch size and sequence length may change), plus every parameter's name
/// and shape.
pub fn blueprint_hash(blueprint: &Blueprint, parameters: &[(String, Vec<usize>)]) -> String {
    let nodes: Vec<serde_json::Value> = blueprint
        .nodes
        .iter()
        .map(|node| {
            let op = match &node.op {
                Op::Input { element, .. } => {
                    serde_json::json!({ "op": "input", "element": element })
                }
                other => serde_json::to_value(other).unwrap_or(serde_json::Value::Null),
            };
            serde_json::json!([node.name, op, node.inputs])
        })
        .collect();
    let canonical = serde_json::json!({ "nodes": nodes, "parameters": parameters });
    format!("{:016x}", fnv1a64(canonical.to_string().as_bytes()))
}

/// Writes `bytes` to `path` atomically (`attnflow_base::write_atomically`),
/// naming the file on failure.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    attnflow_base::write_atomically(path, bytes).map_err(|source| TrainError::io(path, source))
}

fn serialize_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let contiguous = tensors
        .iter()
        .map(|(name, tensor)| Ok((name.clone(), tensor.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(contiguous, None)
        .map_err(|error| TrainError::checkpoint(path, format!("cannot serialise tensors: {error}")))
}

/// Writes a checkpoint into `directory` (created if needed). `meta`'s file
/// records are filled in here.
pub fn save(
    directory: &Path,
    mut meta: CheckpointMeta,
    weights: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
) -> Result<PathBuf> {
    std::fs::create_dir_all(directory).map_err(|source| TrainError::io(directory, source))?;
    let previous = read_meta(directory).ok();
    let write = |kind: &str, tensors: &[(String, Tensor)]| -> Result<FileRecord> {
        let file = format!("{kind}-{:08}.safetensors", meta.step);
        let path = directory.join(&file);
        let bytes = serialize_tensors(&path, tensors)?;
        write_atomically(&path, &bytes)?;
        Ok(FileRecord {
            file,
            bytes: bytes.len() as u64,
            fnv1a64: format!("{:016x}", fnv1a64(&bytes)),
        })
    };
    meta.weights = write("weights", weights)?;
    meta.optimizer = write("optimizer", optimizer)?;
    meta.format = FORMAT.into();
    meta.version = VERSION;
    let meta_path = directory.join(META_FILE);
    let text = serde_json::to_string_pretty(&meta)
        .map_err(|error| TrainError::checkpoint(&meta_path, error.to_string()))?;
    write_atomically(&meta_path, text.as_bytes())?;
    if let Some(previous) = previous {
        for old in [previous.weights.file, previous.optimizer.file] {
            if old != meta.weights.file && old != meta.optimizer.file {
                // A leftover file wastes space but harms nothing.
                let _ = std::fs::remove_file(directory.join(old));
            }
        }
    }
    Ok(directory.to_path_buf())
}

/// Reads and checks `checkpoint.json` only.
pub fn read_meta(directory: &Path) -> Result<CheckpointMeta> {
    let path = directory.join(META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TrainError::checkpoint(&path, "not found: the directory holds no checkpoint")
        } else {
            TrainError::io(&path, source)
        }
    })?;
    let meta: CheckpointMeta = serde_json::from_str(&text).map_err(|error| {
        TrainError::checkpoint(
            &path,
            format!("line {}, column {}: {error}", error.line(), error.column()),
        )
    })?;
    if meta.format != FORMAT || meta.version != VERSION {
        return Err(TrainError::checkpoint(
            &path,
            format!(
                "format `{}` version {} is not `{FORMAT}` version {VERSION}",
                meta.format, meta.version
            ),
        ));
    }
    Ok(meta)
}

fn read_tensors(
    directory: &Path,
    record: &FileRecord,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    if record.file.contains('/') || record.file.contains('\\') || record.file.starts_with('.') {
        return Err(TrainError::checkpoint(
            directory.join(META_FILE),
            format!(
                "file name `{}` must be a plain name inside the checkpoint directory",
                record.file
            ),
        ));
    }
    let path = directory.join(&record.file);
    let bytes = std::fs::read(&path).map_err(|source| TrainError::io(&path, source))?;
    if bytes.len() as u64 != record.bytes {
        return Err(TrainError::checkpoint(
            &path,
            format!(
                "has {} bytes but checkpoint.json records {} (truncated or replaced)",
                bytes.len(),
                record.bytes
            ),
        ));
    }
    let checksum = format!("{:016x}", fnv1a64(&bytes));
    if checksum != record.fnv1a64 {
        return Err(TrainError::checkpoint(
            &path,
            format!(
                "checksum mismatch: FNV-1a {checksum}, checkpoint.json records {} (the file is corrupt)",
                record.fnv1a64
            ),
        ));
    }
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|error| {
        TrainError::checkpoint(&path, format!("not a valid safetensors file: {error}"))
    })
}

/// Loads a checkpoint, verifying its checksums (tensor names and shapes are
/// checked against the model by the trainer).
pub fn load(directory: &Path, device: &Device) -> Result<Checkpoint> {
    let meta = read_meta(directory)?;
    let weights = read_tensors(directory, &meta.weights, device)?;
    let optimizer = read_tensors(directory, &meta.optimizer, device)?;
    Ok(Checkpoint {
        meta,
        weights,
        optimizer,
    })
}

/// Loads only the weights of the checkpoint `meta` describes (verified
/// against their recorded size and checksum), for inference.
pub fn load_weights(
    directory: &Path,
    meta: &CheckpointMeta,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    read_tensors(directory, &meta.weights, device)
}

/// Checks that `tensors` (from `file`) holds exactly `expected` names with
/// the given shapes, and returns them in `expected`'s order.
pub fn take_tensors(
    file: &Path,
    mut tensors: HashMap<String, Tensor>,
    expected: &[(String, Vec<usize>)],
) -> Result<Vec<Tensor>> {
    let mut ordered = Vec::with_capacity(expected.len());
    for (name, shape) in expected {
        let tensor = tensors.remove(name).ok_or_else(|| {
            TrainError::checkpoint(file, format!("missing tensor `{name}` (shape {shape:?})"))
        })?;
        if tensor.dims() != shape.as_slice() {
            return Err(TrainError::checkpoint(
                file,
                format!(
                    "tensor `{name}` has shape {:?} but the model needs {shape:?}",
                    tensor.dims()
                ),
            ));
        }
        ordered.push(tensor.to_dtype(candle_core::DType::F32)?);
    }
    if let Some(extra) = tensors.keys().min() {
        return Err(TrainError::checkpoint(
            file,
            format!(
                "unexpected tensor `{extra}`: the model has no such parameter (a checkpoint of another blueprint?)"
            ),
        ));
    }
    Ok(ordered)
}

/// The blueprint spec saved beside the checkpoint in `directory`.
pub(crate) fn saved_source(directory: &Path) -> Result<BlueprintSource> {
    BlueprintSource::from_file(&directory.join(SPEC_FILE))
}

/// Refuses a blueprint (`name`, hashing to `hash`) other than the one the
/// checkpoint described by `meta` in `directory` was written for.
pub(crate) fn check_blueprint(
    directory: &Path,
    meta: &CheckpointMeta,
    name: &str,
    hash: &str,
) -> Result<()> {
    if meta.blueprint_hash == hash {
        return Ok(());
    }
    Err(TrainError::checkpoint(
        directory.join(META_FILE),
        format!(
            "was written for blueprint `{}` (hash {}), but `{name}` has hash {hash}: another blueprint or other dims",
            meta.blueprint, meta.blueprint_hash
        ),
    ))
}
