//! Builds a [`DecoderModel`] from a Hugging Face directory
//! (`model.safetensors`, mapped rather than read) or from a GGUF file, every
//! tensor checked against the configuration and named on error.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::decoder::config::{DecoderConfig, Family};
use crate::decoder::model::{DecoderModel, FeedForward, Layer, Linear, Norm};
use crate::decoder::rope::Rotary;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use attnflow_kernels::packed::{PackedMatrix, Packing};

/// Where tensors come from: names the architecture uses (Hugging Face's,
/// without the `model.`/`transformer.` prefix) mapped to the file's.
trait TensorSource {
    /// The file, for messages.
    fn path(&self) -> &Path;
    /// The tensor `name` as a `rows × columns` matrix, checked.
    fn matrix(&self, name: &str, rows: usize, columns: usize) -> Result<PackedMatrix>;
    /// The tensor `name` as `length` f32 values, checked.
    fn vector(&self, name: &str, length: usize) -> Result<Vec<f32>>;
    /// Whether `name` exists.
    fn has(&self, name: &str) -> bool;
}

/// A mapped `model.safetensors`.
struct Safetensors {
    path: PathBuf,
    map: memmap2::Mmap,
    prefix: String,
}

impl Safetensors {
    fn open(path: &Path, probes: &[&str]) -> Result<Self> {
        let file = File::open(path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                ModelError::MissingFile {
                    path: path.to_path_buf(),
                    what: "model.safetensors holds the weights (save them with `save_pretrained(..., safe_serialization=True)`)".to_string(),
                }
            } else {
                ModelError::Io {
                    path: path.to_path_buf(),
                    source: error,
                }
            }
        })?;
        // SAFETY: the map is read-only and lives as long as the loader; a
        // file changed underneath while loading could give wrong values
        // (never memory unsafety beyond that, as safetensors checks every
        // offset against the mapped length).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut loaded = Self {
            path: path.to_path_buf(),
            map,
            prefix: String::new(),
        };
        let names: Vec<String> = loaded
            .file()?
            .names()
            .into_iter()
            .map(str::to_string)
            .collect();
        let prefix = ["", "model.", "transformer."]
            .into_iter()
            .find(|prefix| {
                probes
                    .iter()
                    .any(|probe| names.iter().any(|name| *name == format!("{prefix}{probe}")))
            })
            .ok_or_else(|| ModelError::MissingTensor {
                path: path.to_path_buf(),
                tensor: format!("model.{}", probes[0]),
            })?;
        loaded.prefix = prefix.to_string();
        Ok(loaded)
    }

    fn file(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.map).map_err(|error| ModelError::Safetensors {
            path: self.path.clone(),
            message: error.to_string(),
        })
    }

    /// The full name of `name`: with the prefix, except for the output
    /// head, which transformers keeps outside the base model.
    fn full_name(&self, name: &str) -> String {
        if name == "lm_head.weight" {
            name.to_string()
        } else {
            format!("{}{name}", self.prefix)
        }
    }

    fn view(&self, name: &str, shape: &[usize]) -> Result<(Packing, Vec<u8>)> {
        let full = self.full_name(name);
        let file = self.file()?;
        let view = file.tensor(&full).map_err(|_| ModelError::MissingTensor {
            path: self.path.clone(),
            tensor: full.clone(),
        })?;
        if view.shape() != shape {
            return Err(ModelError::TensorShape {
                path: self.path.clone(),
                tensor: full,
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let packing = match view.dtype() {
            Dtype::F32 => Packing::F32,
            Dtype::F16 => Packing::F16,
            Dtype::BF16 => Packing::Bf16,
            Dtype::F64 => {
                let values: Vec<u8> = view
                    .data()
                    .chunks_exact(8)
                    .flat_map(|chunk| {
                        let bytes: [u8; 8] = chunk.try_into().expect("8-byte chunks");
                        (f64::from_le_bytes(bytes) as f32).to_le_bytes()
                    })
                    .collect();
                return Ok((Packing::F32, values));
            }
            other => {
                return Err(ModelError::TensorDtype {
                    path: self.path.clone(),
                    tensor: full,
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok((packing, view.data().to_vec()))
    }
}

impl TensorSource for Safetensors {
    fn path(&self) -> &Path {
        &self.path
    }

    fn matrix(&self, name: &str, rows: usize, columns: usize) -> Result<PackedMatrix> {
        let (packing, bytes) = self.view(name, &[rows, columns])?;
        PackedMatrix::from_bytes(rows, columns, packing, bytes).map_err(|message| {
            ModelError::Safetensors {
                path: self.path.clone(),
                message: format!("tensor `{}`: {message}", self.full_name(name)),
            }
        })
    }

    fn vector(&self, name: &str, length: usize) -> Result<Vec<f32>> {
        let (packing, bytes) = self.view(name, &[length])?;
        Ok(PackedMatrix::from_bytes(1, length, packing, bytes)
            .map_err(|message| ModelError::Safetensors {
                path: self.path.clone(),
                message: format!("tensor `{}`: {message}", self.full_name(name)),
            })?
            .to_f32())
    }

    fn has(&self, name: &str) -> bool {
        self.file()
            .map(|file| file.tensor(&self.full_name(name)).is_ok())
            .unwrap_or(false)
    }
}

/// A GGUF file with Hugging Face names mapped to llama.cpp's.
struct Gguf<'a> {
    file: &'a GgufFile,
    /// llama.cpp stores llama's q and k rows with each head's rotary halves
    /// interleaved; these heads counts undo it (`None` for qwen2, stored as
    /// Hugging Face has them).
    interleaved: Option<(usize, usize)>,
}

impl Gguf<'_> {
    fn gguf_name(name: &str) -> String {
        let renamed = [
            ("embed_tokens.weight", "token_embd.weight"),
            ("norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
        ];
        if let Some((_, to)) = renamed.iter().find(|(from, _)| *from == name) {
            return to.to_string();
        }
        let Some(rest) = name.strip_prefix("layers.") else {
            return name.to_string();
        };
        let (index, local) = rest.split_once('.').unwrap_or((rest, ""));
        let local = [
            ("input_layernorm.", "attn_norm."),
            ("post_attention_layernorm.", "ffn_norm."),
            ("self_attn.q_proj.", "attn_q."),
            ("self_attn.k_proj.", "attn_k."),
            ("self_attn.v_proj.", "attn_v."),
            ("self_attn.o_proj.", "attn_output."),
            ("mlp.gate_proj.", "ffn_gate."),
            ("mlp.up_proj.", "ffn_up."),
            ("mlp.down_proj.", "ffn_down."),
        ]
        .iter()
        .find_map(|(from, to)| local.strip_prefix(from).map(|leaf| format!("{to}{leaf}")))
        .unwrap_or_else(|| local.to_string());
        format!("blk.{index}.{local}")
    }

    /// The row order that undoes llama.cpp's interleaving for `heads` heads.
    fn uninterleave(rows: usize, heads: usize) -> Vec<usize> {
        let width = rows / heads;
        let half = width / 2;
        (0..rows)
            .map(|row| {
                let (head, within) = (row / width, row % width);
                let (part, index) = (within / half, within % half);
                head * width + 2 * index + part
            })
            .collect()
    }

    fn interleaved_heads(&self, name: &str) -> Option<usize> {
        let (heads, kv_heads) = self.interleaved?;
        if name.contains("self_attn.q_proj.") {
            Some(heads)
        } else if name.contains("self_attn.k_proj.") {
            Some(kv_heads)
        } else {
            None
        }
    }
}

impl TensorSource for Gguf<'_> {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn matrix(&self, name: &str, rows: usize, columns: usize) -> Result<PackedMatrix> {
        let matrix = self.file.matrix(&Self::gguf_name(name), rows, columns)?;
        Ok(match self.interleaved_heads(name) {
            Some(heads) => matrix.permute_rows(&Self::uninterleave(rows, heads)),
            None => matrix,
        })
    }

    fn vector(&self, name: &str, length: usize) -> Result<Vec<f32>> {
        let values = self.file.vector(&Self::gguf_name(name), length)?;
        Ok(match self.interleaved_heads(name) {
            Some(heads) => Self::uninterleave(length, heads)
                .into_iter()
                .map(|row| values[row])
                .collect(),
            None => values,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.file.has_tensor(&Self::gguf_name(name))
    }
}

/// The model in a Hugging Face directory whose `config.json` was read into
/// `config`.
pub fn from_directory(directory: &Path, config: &DecoderConfig) -> Result<DecoderModel> {
    let probes: &[&str] = match config.family {
        Family::Gpt2 => &["wte.weight"],
        _ => &["embed_tokens.weight"],
    };
    let source = Safetensors::open(&directory.join("model.safetensors"), probes)?;
    match config.family {
        Family::Gpt2 => gpt2(&source, config),
        _ => llama(&source, config),
    }
}

/// The model in a GGUF file whose metadata was read into `config`.
pub fn from_gguf(file: &GgufFile, config: &DecoderConfig) -> Result<DecoderModel> {
    let interleaved =
        (config.family == Family::Llama).then_some((config.num_heads, config.num_kv_heads));
    llama(&Gguf { file, interleaved }, config)
}

fn linear(
    source: &dyn TensorSource,
    module: &str,
    inputs: usize,
    outputs: usize,
    bias: bool,
) -> Result<Linear> {
    Ok(Linear {
        weight: source.matrix(&format!("{module}.weight"), outputs, inputs)?,
        bias: if bias {
            Some(source.vector(&format!("{module}.bias"), outputs)?)
        } else {
            None
        },
    })
}

fn llama(source: &dyn TensorSource, config: &DecoderConfig) -> Result<DecoderModel> {
    let d = config.hidden_size;
    let q = config.num_heads * config.head_dim;
    let kv = config.num_kv_heads * config.head_dim;
    let ff = config.intermediate_size;
    let eps = config.norm_eps as f32;
    let embedding = source.matrix("embed_tokens.weight", config.vocab_size, d)?;
    let layers = (0..config.num_layers)
        .map(|index| {
            let name = |local: &str| format!("layers.{index}.{local}");
            let rms = |local: &str| -> Result<Norm> {
                Ok(Norm::Rms {
                    weight: source.vector(&name(local), d)?,
                    eps,
                })
            };
            Ok(Layer {
                attention_norm: rms("input_layernorm.weight")?,
                query: linear(source, &name("self_attn.q_proj"), d, q, config.qkv_bias)?,
                key: linear(source, &name("self_attn.k_proj"), d, kv, config.qkv_bias)?,
                value: linear(source, &name("self_attn.v_proj"), d, kv, config.qkv_bias)?,
                output: linear(source, &name("self_attn.o_proj"), q, d, config.output_bias)?,
                feed_forward_norm: rms("post_attention_layernorm.weight")?,
                feed_forward: FeedForward::Gated {
                    gate: linear(source, &name("mlp.gate_proj"), d, ff, config.mlp_bias)?,
                    up: linear(source, &name("mlp.up_proj"), d, ff, config.mlp_bias)?,
                    down: linear(source, &name("mlp.down_proj"), ff, d, config.mlp_bias)?,
                },
                window: config.sliding_windows[index],
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let head = if config.tie_embeddings {
        None
    } else {
        Some(linear(source, "lm_head", d, config.vocab_size, false)?)
    };
    Ok(DecoderModel {
        config: config.clone(),
        embedding,
        positions: None,
        layers,
        final_norm: Norm::Rms {
            weight: source.vector("norm.weight", d)?,
            eps,
        },
        head,
        rotary: config
            .rope
            .as_ref()
            .map(|rope| Rotary::new(rope, config.head_dim, config.max_positions)),
    })
}

/// GPT-2 keeps its maps as `Conv1D`, weights `(inputs, outputs)`: they are
/// transposed to `(outputs, inputs)` here, and the fused `c_attn` split into
/// query, key and value maps.
fn gpt2(source: &dyn TensorSource, config: &DecoderConfig) -> Result<DecoderModel> {
    let d = config.hidden_size;
    let ff = config.intermediate_size;
    let eps = config.norm_eps as f32;
    let conv = |module: &str, inputs: usize, outputs: usize| -> Result<(Vec<f32>, Vec<f32>)> {
        let stored = source
            .matrix(&format!("{module}.weight"), inputs, outputs)?
            .to_f32();
        let mut transposed = vec![0f32; inputs * outputs];
        for row in 0..inputs {
            for column in 0..outputs {
                transposed[column * inputs + row] = stored[row * outputs + column];
            }
        }
        Ok((
            transposed,
            source.vector(&format!("{module}.bias"), outputs)?,
        ))
    };
    let dense = |weights: Vec<f32>, bias: Vec<f32>, inputs: usize| -> Result<Linear> {
        let rows = bias.len();
        Ok(Linear {
            weight: PackedMatrix::from_f32(rows, inputs, weights).map_err(|message| {
                ModelError::Safetensors {
                    path: source.path().to_path_buf(),
                    message,
                }
            })?,
            bias: Some(bias),
        })
    };
    let norm = |module: &str| -> Result<Norm> {
        Ok(Norm::Layer {
            weight: source.vector(&format!("{module}.weight"), d)?,
            bias: source.vector(&format!("{module}.bias"), d)?,
            eps,
        })
    };
    let activation = config.activation;
    let layers = (0..config.num_layers)
        .map(|index| {
            let name = |local: &str| format!("h.{index}.{local}");
            let (fused, fused_bias) = conv(&name("attn.c_attn"), d, 3 * d)?;
            let part = |which: usize| {
                dense(
                    fused[which * d * d..(which + 1) * d * d].to_vec(),
                    fused_bias[which * d..(which + 1) * d].to_vec(),
                    d,
                )
            };
            let (output, output_bias) = conv(&name("attn.c_proj"), d, d)?;
            let (up, up_bias) = conv(&name("mlp.c_fc"), d, ff)?;
            let (down, down_bias) = conv(&name("mlp.c_proj"), ff, d)?;
            Ok(Layer {
                attention_norm: norm(&name("ln_1"))?,
                query: part(0)?,
                key: part(1)?,
                value: part(2)?,
                output: dense(output, output_bias, d)?,
                feed_forward_norm: norm(&name("ln_2"))?,
                feed_forward: FeedForward::Plain {
                    up: dense(up, up_bias, d)?,
                    down: dense(down, down_bias, ff)?,
                    activation,
                },
                window: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let head = if config.tie_embeddings || !source.has("lm_head.weight") {
        None
    } else {
        Some(linear(source, "lm_head", d, config.vocab_size, false)?)
    };
    Ok(DecoderModel {
        config: config.clone(),
        embedding: source.matrix("wte.weight", config.vocab_size, d)?,
        positions: Some(
            source
                .matrix("wpe.weight", config.max_positions, d)?
                .to_f32(),
        ),
        layers,
        final_norm: norm("ln_f")?,
        head,
        rotary: None,
    })
}

/// The tensors a decoder's weights file holds, name to shape, read from the
/// safetensors header or the GGUF table alone.
pub fn tensor_shapes(path: &Path) -> Result<HashMap<String, Vec<usize>>> {
    if crate::gguf::is_gguf(path) {
        let file = GgufFile::open(path)?;
        return Ok(file
            .tensor_names()
            .into_iter()
            .filter_map(|name| file.shape(&name).map(|shape| (name, shape)))
            .collect());
    }
    let source = Safetensors::open(path, &["embed_tokens.weight", "wte.weight"])?;
    let file = source.file()?;
    Ok(file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect())
}
