//! `model.safetensors`: named tensors, looked up with their expected shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use crate::error::{read_file, ModelError, Result};

/// The tensors of a checkpoint, read into memory as `f32`, looked up by
/// their architecture name whatever prefix the file uses.
///
/// Hugging Face saves a bare `BertModel` with names such as
/// `embeddings.word_embeddings.weight`, and a model with a task head
/// (`BertForMaskedLM`, ...) with the encoder under `bert.`; both load.
pub struct Weights {
    path: PathBuf,
    prefix: String,
    tensors: HashMap<String, Tensor>,
    /// Integer tensors left out (buffers such as `position_ids`), by name
    /// and dtype, so that a weight stored as integers is reported as such
    /// rather than as missing.
    skipped: HashMap<String, String>,
    used: std::cell::RefCell<Vec<String>>,
}

impl Weights {
    /// Reads every tensor of `path`, converting floating-point tensors to
    /// `f32`. `probe` is a tensor every model of the family has; the prefix
    /// (`bert.` or none) is chosen by where it is found.
    pub fn from_file(path: &Path, probe: &str, device: &Device) -> Result<Self> {
        let bytes = read_file(
            path,
            "model.safetensors holds the weights (convert a pytorch_model.bin with Hugging Face's `save_pretrained(..., safe_serialization=True)`)",
        )?;
        let file = SafeTensors::deserialize(&bytes).map_err(|error| ModelError::Safetensors {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        let mut tensors = HashMap::new();
        let mut skipped = HashMap::new();
        for (name, view) in file.tensors() {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                safetensors::Dtype::F64 => DType::F64,
                // Integer buffers (`embeddings.position_ids` in older
                // checkpoints) are not weights; the forward pass derives them.
                dtype @ (safetensors::Dtype::I64
                | safetensors::Dtype::I32
                | safetensors::Dtype::U8) => {
                    skipped.insert(name, format!("{dtype:?}"));
                    continue;
                }
                other => {
                    return Err(ModelError::TensorDtype {
                        path: path.to_path_buf(),
                        tensor: name,
                        dtype: format!("{other:?}"),
                    })
                }
            };
            let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), device)
                .and_then(|tensor| tensor.to_dtype(DType::F32))
                .map_err(|error| ModelError::Safetensors {
                    path: path.to_path_buf(),
                    message: format!("tensor `{name}`: {error}"),
                })?;
            tensors.insert(name, tensor);
        }
        let mut weights = Self::from_tensors(path, tensors, probe)?;
        weights.skipped = skipped;
        Ok(weights)
    }

    /// Wraps tensors already in memory; `path` names their origin in
    /// messages.
    pub fn from_tensors(
        path: &Path,
        tensors: HashMap<String, Tensor>,
        probe: &str,
    ) -> Result<Self> {
        let prefix = find_prefix(tensors.keys().map(String::as_str), probe).ok_or_else(|| {
            ModelError::MissingTensor {
                path: path.to_path_buf(),
                tensor: format!("{probe}` or `bert.{probe}"),
            }
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            prefix,
            tensors,
            skipped: HashMap::new(),
            used: Default::default(),
        })
    }

    /// The prefix the encoder's tensors carry in this file (`bert.` or empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The tensor `name` (without prefix), checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.find(name, shape)?
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                tensor: format!("{}{name}", self.prefix),
            })
    }

    /// Like [`Weights::get`], but accepts the TensorFlow-era LayerNorm names
    /// (`gamma` for `weight`, `beta` for `bias`) as Hugging Face does.
    pub fn get_norm(&self, module: &str, shape: &[usize]) -> Result<(Tensor, Tensor)> {
        let pick = |modern: &str, legacy: &str| -> Result<Tensor> {
            match self.find(&format!("{module}.{modern}"), shape)? {
                Some(tensor) => Ok(tensor),
                None => self
                    .find(&format!("{module}.{legacy}"), shape)?
                    .ok_or_else(|| ModelError::MissingTensor {
                        path: self.path.clone(),
                        tensor: format!("{}{module}.{modern}", self.prefix),
                    }),
            }
        };
        Ok((pick("weight", "gamma")?, pick("bias", "beta")?))
    }

    /// The tensor `name` if present, or `None`; wrong shapes are errors.
    pub fn find(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        let full = format!("{}{name}", self.prefix);
        let Some(tensor) = self.tensors.get(&full) else {
            if let Some(dtype) = self.skipped.get(&full) {
                return Err(ModelError::TensorDtype {
                    path: self.path.clone(),
                    tensor: full,
                    dtype: dtype.clone(),
                });
            }
            return Ok(None);
        };
        if tensor.dims() != shape {
            return Err(ModelError::TensorShape {
                path: self.path.clone(),
                tensor: full,
                expected: shape.to_vec(),
                found: tensor.dims().to_vec(),
            });
        }
        self.used.borrow_mut().push(full);
        Ok(Some(tensor.clone()))
    }

    /// Number of scalars in the tensors read so far: the parameters of the
    /// model built from this file.
    pub fn used_parameter_count(&self) -> usize {
        self.used
            .borrow()
            .iter()
            .filter_map(|name| self.tensors.get(name))
            .map(Tensor::elem_count)
            .sum()
    }
}

/// The prefix under which `probe` appears among `names`: `""` for a bare
/// encoder, `"bert."` for one inside a task model.
fn find_prefix<'a>(names: impl Iterator<Item = &'a str> + Clone, probe: &str) -> Option<String> {
    for prefix in ["", "bert."] {
        let wanted = format!("{prefix}{probe}");
        if names.clone().any(|name| name == wanted) {
            return Some(prefix.to_string());
        }
    }
    None
}

/// The names of the tensors in a safetensors file, read from its header
/// alone (the first few kilobytes), so that a model's shape can be
/// inspected without loading its weights.
pub fn tensor_names(path: &Path) -> Result<Vec<String>> {
    use std::io::Read;
    let fault = |message: String| ModelError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "model.safetensors holds the weights".to_string(),
            }
        } else {
            ModelError::Io {
                path: path.to_path_buf(),
                source: error,
            }
        }
    })?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|error| fault(format!("cannot read the header length: {error}")))?;
    let length = u64::from_le_bytes(length);
    // The format caps headers at 100 MB; anything larger is not safetensors.
    if length > 100_000_000 {
        return Err(fault(format!("header length {length} is implausible")));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header)
        .map_err(|error| fault(format!("cannot read the {length}-byte header: {error}")))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|error| fault(format!("header is not a JSON object: {error}")))?;
    Ok(header
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name != "__metadata__")
        .collect())
}

/// Whether the encoder in `names` has the pooler (`pooler.dense`), under
/// either prefix.
pub(crate) fn has_pooler(names: &[String]) -> bool {
    names
        .iter()
        .any(|name| name == "pooler.dense.weight" || name == "bert.pooler.dense.weight")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(names: &[&str]) -> Result<Weights> {
        let tensors = names
            .iter()
            .map(|name| {
                let tensor = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
                (name.to_string(), tensor)
            })
            .collect();
        Weights::from_tensors(Path::new("m/model.safetensors"), tensors, "a.weight")
    }

    #[test]
    fn finds_bare_and_prefixed_names() {
        assert_eq!(weights(&["a.weight"]).unwrap().prefix(), "");
        let prefixed = weights(&["bert.a.weight", "cls.x"]).unwrap();
        assert_eq!(prefixed.prefix(), "bert.");
        assert_eq!(prefixed.get("a.weight", &[2, 3]).unwrap().dims(), &[2, 3]);
        assert_eq!(prefixed.used_parameter_count(), 6);
    }

    #[test]
    fn names_missing_and_misshapen_tensors() {
        let message = weights(&["other"]).err().unwrap().to_string();
        assert!(
            message.contains("m/model.safetensors") && message.contains("a.weight"),
            "{message}"
        );
        let file = weights(&["bert.a.weight"]).unwrap();
        let message = file.get("b.bias", &[3]).unwrap_err().to_string();
        assert!(message.contains("`bert.b.bias`"), "{message}");
        let message = file.get("a.weight", &[3, 2]).unwrap_err().to_string();
        assert!(
            message.contains("`bert.a.weight`")
                && message.contains("[2, 3]")
                && message.contains("[3, 2]"),
            "{message}"
        );
    }

    #[test]
    fn legacy_norm_names() {
        let file = weights(&["a.weight", "n.gamma", "n.beta"]).unwrap();
        let (weight, bias) = file.get_norm("n", &[2, 3]).unwrap();
        assert_eq!((weight.dims(), bias.dims()), (&[2, 3][..], &[2, 3][..]));
    }
}
