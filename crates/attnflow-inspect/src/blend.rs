//! §8.1: the blend `α·A_v + (1 − α)·A_l` of two maps from files, checked,
//! drawn and written.

use std::path::PathBuf;

use attnflow_core::analysis::{blend, AnalysisError, AttentionMap};
use attnflow_report::{blend_figure, Heatmap, ImageFormat};
use serde::{Deserialize, Serialize};

use crate::error::{InspectError, Result};
use crate::maps::{read_map, read_tokens};

/// What to blend.
#[derive(Clone, Debug)]
pub struct BlendRequest {
    /// `A_v`: a CSV or safetensors map.
    pub a: PathBuf,
    /// `A_l`: a map of the same shape.
    pub b: PathBuf,
    /// The weight of `A_v`, in `[0, 1]`.
    pub alpha: f64,
    /// The tensor to read from safetensors inputs.
    pub name: Option<String>,
    /// How far row sums may be from one.
    pub tolerance: f64,
    /// A tokens file (one per line) labelling the pictures.
    pub tokens: Option<PathBuf>,
    /// The folder for `blend.csv`, `blend.png` and `blend.svg`.
    pub out: PathBuf,
}

/// What a blend wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Blend {
    /// `A_v`'s file.
    pub a: PathBuf,
    /// `A_l`'s file.
    pub b: PathBuf,
    /// The weight of `A_v`.
    pub alpha: f64,
    /// Rows of the blend.
    pub rows: usize,
    /// Columns of the blend.
    pub columns: usize,
    /// The largest distance of a row sum from one.
    pub max_row_sum_error: f64,
    /// The files written, relative to `out`.
    pub files: Vec<String>,
    /// The output folder.
    pub out: PathBuf,
}

/// Reads both maps, blends them (both checked row-stochastic; the file at
/// fault is named), and writes `blend.csv`, `blend.png` and `blend.svg`.
pub fn blend_files(request: &BlendRequest) -> Result<Blend> {
    let vision = read_map(&request.a, request.name.as_deref())?;
    let language = read_map(&request.b, request.name.as_deref())?;
    let blended = blend(&vision, &language, request.alpha, request.tolerance).map_err(|error| {
        let place = match &error {
            AnalysisError::NotRowStochastic { map, .. } | AnalysisError::NotFinite { map, .. }
                if map == "A_v" =>
            {
                request.a.display().to_string()
            }
            AnalysisError::NotRowStochastic { .. } | AnalysisError::NotFinite { .. } => {
                request.b.display().to_string()
            }
            AnalysisError::Shape { .. } => {
                format!("{} and {}", request.a.display(), request.b.display())
            }
            _ => "--alpha".to_string(),
        };
        InspectError::Analysis {
            place,
            source: error,
        }
    })?;
    let tokens = match &request.tokens {
        Some(path) => {
            let tokens = read_tokens(path)?;
            if tokens.len() != blended.rows() || tokens.len() != blended.columns() {
                return Err(InspectError::file(
                    path,
                    format!(
                        "{} tokens for a {} × {} map",
                        tokens.len(),
                        blended.rows(),
                        blended.columns()
                    ),
                ));
            }
            tokens
        }
        None => Vec::new(),
    };
    let panel = |title: &str, map: &AttentionMap| {
        Heatmap::new(title, map.rows(), map.columns(), map.values().to_vec())
    };
    let figure = blend_figure(
        &tokens,
        panel("A_v", &vision)?,
        panel("A_l", &language)?,
        panel("blend", &blended)?,
        request.alpha,
    )?;
    let csv: String = blended
        .iter_rows()
        .map(|row| {
            row.iter()
                .map(|v| format!("{v:.17}"))
                .collect::<Vec<_>>()
                .join(",")
                + "\n"
        })
        .collect();
    let mut files = vec![("blend.csv".to_string(), csv.into_bytes())];
    for format in [ImageFormat::Png, ImageFormat::Svg] {
        files.push((
            format!("blend.{}", format.extension()),
            figure.render(format)?,
        ));
    }
    std::fs::create_dir_all(&request.out).map_err(|source| InspectError::Io {
        path: request.out.clone(),
        source,
    })?;
    for (name, bytes) in &files {
        let path = request.out.join(name);
        attnflow_base::write_atomically(&path, bytes)
            .map_err(|source| InspectError::Io { path, source })?;
    }
    Ok(Blend {
        a: request.a.clone(),
        b: request.b.clone(),
        alpha: request.alpha,
        rows: blended.rows(),
        columns: blended.columns(),
        max_row_sum_error: blended.max_row_sum_error(),
        files: files.into_iter().map(|(name, _)| name).collect(),
        out: request.out.clone(),
    })
}
