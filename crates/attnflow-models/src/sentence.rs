//! Sentence embeddings as sentence-transformers makes them: pool the last
//! hidden states over the real tokens, then (optionally) scale to unit
//! length.

use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::error::{read_json, ModelError, Result};

/// How token vectors become one sentence vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean over real tokens (all-MiniLM-L6-v2 and most
    /// sentence-transformers models).
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
    /// The element-wise maximum over real tokens.
    Max,
}

/// The sentence-embedding recipe of a model directory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SentenceConfig {
    /// How tokens are pooled.
    pub pooling: Pooling,
    /// Whether embeddings are scaled to unit L2 norm.
    pub normalize: bool,
    /// The longest input in tokens (sentence-transformers' `max_seq_length`);
    /// longer texts are cut.
    pub max_length: usize,
    /// Where the recipe came from, for reports.
    pub source: String,
}

impl SentenceConfig {
    /// Reads the sentence-transformers files of `directory` when present:
    /// `1_Pooling/config.json` (pooling mode), `modules.json` (whether a
    /// `Normalize` module follows) and `sentence_bert_config.json`
    /// (`max_seq_length`). A plain transformers directory gets mean pooling
    /// and unit length, the usual recipe, capped at `model_max_length`.
    pub fn from_directory(directory: &Path, model_max_length: usize) -> Result<Self> {
        let pooling_path = directory.join("1_Pooling").join("config.json");
        let modules_path = directory.join("modules.json");
        let sbert_path = directory.join("sentence_bert_config.json");
        let mut sources = Vec::new();

        let pooling =
            if pooling_path.is_file() {
                sources.push("1_Pooling/config.json");
                let value = read_json(&pooling_path, "pooling settings")?;
                let flag = |field: &str| -> Result<bool> {
                    match value.get(field) {
                        None | Some(serde_json::Value::Null) => Ok(false),
                        Some(serde_json::Value::Bool(flag)) => Ok(*flag),
                        Some(other) => Err(ModelError::config(
                            &pooling_path,
                            field,
                            format!("expected true or false, got {other}"),
                        )),
                    }
                };
                let modes = [
                    ("pooling_mode_mean_tokens", Pooling::Mean),
                    ("pooling_mode_cls_token", Pooling::Cls),
                    ("pooling_mode_max_tokens", Pooling::Max),
                ];
                let mut chosen = Vec::new();
                for (field, mode) in modes {
                    if flag(field)? {
                        chosen.push((field, mode));
                    }
                }
                for field in [
                    "pooling_mode_mean_sqrt_len_tokens",
                    "pooling_mode_weightedmean_tokens",
                    "pooling_mode_lasttoken",
                ] {
                    if flag(field)? {
                        return Err(ModelError::config(
                        &pooling_path,
                        field,
                        "this pooling mode is not supported; attnflow pools by mean, cls or max",
                    ));
                    }
                }
                match chosen.as_slice() {
                    [(_, mode)] => *mode,
                    [] => {
                        return Err(ModelError::config(
                            &pooling_path,
                            "pooling_mode_mean_tokens",
                            "no pooling mode is set",
                        ))
                    }
                    several => return Err(ModelError::config(
                        &pooling_path,
                        several[1].0,
                        "several pooling modes at once (concatenated embeddings) are not supported",
                    )),
                }
            } else {
                Pooling::Mean
            };

        let normalize = if modules_path.is_file() {
            sources.push("modules.json");
            let value = read_json(&modules_path, "sentence-transformers modules")?;
            let modules = value.as_array().ok_or_else(|| {
                ModelError::config(&modules_path, "(top level)", "expected a list of modules")
            })?;
            modules.iter().any(|module| {
                module
                    .get("type")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|kind| kind.ends_with(".Normalize"))
            })
        } else {
            true
        };

        let max_length = if sbert_path.is_file() {
            sources.push("sentence_bert_config.json");
            let value = read_json(&sbert_path, "sentence-transformers settings")?;
            match value.get("max_seq_length") {
                None | Some(serde_json::Value::Null) => model_max_length,
                Some(length) => match length.as_u64() {
                    Some(length) if length >= 2 => (length as usize).min(model_max_length),
                    _ => {
                        return Err(ModelError::config(
                            &sbert_path,
                            "max_seq_length",
                            format!("expected a whole number of at least 2, got {length}"),
                        ))
                    }
                },
            }
        } else {
            model_max_length
        };

        let source = if sources.is_empty() {
            "defaults (no sentence-transformers files): mean pooling, unit length".to_string()
        } else {
            sources.join(", ")
        };
        Ok(Self {
            pooling,
            normalize,
            max_length,
            source,
        })
    }
}

/// Pools `(batch, n, d)` hidden states over the tokens `attention_mask`
/// `(batch, n)` marks as real (non-zero) into `(batch, d)`, as
/// sentence-transformers' `Pooling` module.
pub fn pool(hidden: &Tensor, attention_mask: &Tensor, pooling: Pooling) -> Result<Tensor> {
    let (batch, n, d) = hidden.dims3()?;
    let values = hidden
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let real: Vec<bool> = attention_mask
        .ne(0f64)?
        .to_dtype(DType::U8)?
        .flatten_all()?
        .to_vec1::<u8>()?
        .into_iter()
        .map(|flag| flag != 0)
        .collect();
    let mut pooled = vec![0f32; batch * d];
    for ((out, sequence), real) in pooled
        .chunks_exact_mut(d.max(1))
        .zip(values.chunks_exact((n * d).max(1)))
        .zip(real.chunks_exact(n.max(1)))
    {
        pool_sequence(out, sequence, Some(real), pooling);
    }
    Ok(Tensor::from_vec(pooled, (batch, d), hidden.device())?.to_dtype(hidden.dtype())?)
}

/// Pools one sequence's `(n, d)` hidden rows into `out` (`d` values):
/// `real[i]` says whether token `i` is real (not padding); `None` when
/// every row is.
///
/// Mean: the sum over real tokens divided by their count (at least 1e-9);
/// max: the maximum over tokens with padding lowered by 1e9; CLS: the first
/// row. These are sentence-transformers' formulas.
pub(crate) fn pool_sequence(
    out: &mut [f32],
    hidden: &[f32],
    real: Option<&[bool]>,
    pooling: Pooling,
) {
    let d = out.len();
    let is_real = |row: usize| real.is_none_or(|real| real[row]);
    match pooling {
        Pooling::Cls => out.copy_from_slice(&hidden[..d]),
        Pooling::Mean => {
            out.fill(0.0);
            let mut count = 0f32;
            for (index, row) in hidden.chunks_exact(d).enumerate() {
                if is_real(index) {
                    count += 1.0;
                    for (sum, value) in out.iter_mut().zip(row) {
                        *sum += value;
                    }
                }
            }
            let count = count.max(1e-9);
            for value in out.iter_mut() {
                *value /= count;
            }
        }
        Pooling::Max => {
            out.fill(f32::NEG_INFINITY);
            for (index, row) in hidden.chunks_exact(d).enumerate() {
                let offset = if is_real(index) { 0.0 } else { -1e9 };
                for (best, value) in out.iter_mut().zip(row) {
                    *best = best.max(value + offset);
                }
            }
        }
    }
}

/// Scales each row of `(batch, d)` to unit L2 norm, dividing by the norm
/// clamped at 1e-12 (PyTorch's `F.normalize`), so a zero row stays zero.
pub fn normalize(embeddings: &Tensor) -> Result<Tensor> {
    let (_, d) = embeddings.dims2()?;
    let mut values = embeddings
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    for row in values.chunks_exact_mut(d.max(1)) {
        normalize_row(row);
    }
    Ok(
        Tensor::from_vec(values, embeddings.dims(), embeddings.device())?
            .to_dtype(embeddings.dtype())?,
    )
}

/// Scales `row` to unit L2 norm (the norm clamped at 1e-12).
pub(crate) fn normalize_row(row: &mut [f32]) {
    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    for value in row.iter_mut() {
        *value /= norm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pooling_ignores_padding() {
        let hidden = Tensor::new(
            &[
                [[1f32, 2.], [3., 4.], [100., -100.]],
                [[5., 6.], [7., 8.], [9., 10.]],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let mask = Tensor::new(&[[1u32, 1, 0], [1, 1, 1]], &Device::Cpu).unwrap();
        let mean = pool(&hidden, &mask, Pooling::Mean)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(mean, [[2., 3.], [7., 8.]]);
        let max = pool(&hidden, &mask, Pooling::Max)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(max, [[3., 4.], [9., 10.]]);
        let cls = pool(&hidden, &mask, Pooling::Cls)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(cls, [[1., 2.], [5., 6.]]);
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zero() {
        let x = Tensor::new(&[[3f32, 4.], [0., 0.]], &Device::Cpu).unwrap();
        let unit = normalize(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(unit, [[0.6, 0.8], [0., 0.]]);
    }

    #[test]
    fn reads_the_sentence_transformers_files() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = SentenceConfig::from_directory(dir.path(), 512).unwrap();
        assert_eq!(
            (defaults.pooling, defaults.normalize, defaults.max_length),
            (Pooling::Mean, true, 512)
        );

        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("modules.json"),
            r#"[{"type": "sentence_transformers.models.Transformer"}]"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sentence_bert_config.json"),
            r#"{"max_seq_length": 256}"#,
        )
        .unwrap();
        let config = SentenceConfig::from_directory(dir.path(), 512).unwrap();
        assert_eq!(
            (config.pooling, config.normalize, config.max_length),
            (Pooling::Cls, false, 256)
        );

        std::fs::write(
            dir.path().join("sentence_bert_config.json"),
            r#"{"max_seq_length": "x"}"#,
        )
        .unwrap();
        let message = SentenceConfig::from_directory(dir.path(), 512)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("sentence_bert_config.json") && message.contains("max_seq_length"),
            "{message}"
        );

        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            "{\n  \"pooling_mode_cls_token\": tru }",
        )
        .unwrap();
        let message = SentenceConfig::from_directory(dir.path(), 512)
            .unwrap_err()
            .to_string();
        assert!(message.contains("1_Pooling/config.json:2:"), "{message}");
    }
}
