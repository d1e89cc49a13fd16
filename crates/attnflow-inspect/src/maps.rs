//! Attention maps and tokens from the user's files: safetensors stacks,
//! single maps as CSV or safetensors, and token lists.

use std::collections::HashMap;
use std::path::Path;

use attnflow_core::analysis::{AttentionMap, AttentionStack};
use candle_core::Tensor;

use crate::error::{InspectError, Result};

/// Row sums may be off by this much in a weights file (maps saved in f16
/// or bf16 lose about three decimal digits).
pub const FILE_ROW_TOLERANCE: f64 = 1e-2;

/// Reads one token per line. Empty lines are refused (an empty token cannot
/// be labelled or embedded), with the line number.
pub fn read_tokens(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| InspectError::file(path, format!("cannot read tokens: {error}")))?;
    let lines: Vec<&str> = text.split('\n').collect();
    let mut tokens = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            // A final newline ends the last line; it does not start a token.
            if index + 1 == lines.len() {
                continue;
            }
            return Err(InspectError::file_at(
                path,
                index + 1,
                None,
                "empty line; the file needs one non-empty token per line",
            ));
        }
        tokens.push(line.to_string());
    }
    if tokens.is_empty() {
        return Err(InspectError::file(path, "no tokens (one token per line)"));
    }
    Ok(tokens)
}

/// The trailing number of a tensor name (`attentions.11` -> 11).
fn layer_number(name: &str) -> Option<usize> {
    let start = name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[start..].parse().ok()
}

/// Reads a stack of maps: one `(layers, batch, heads, n, n)` tensor, or one
/// tensor per layer named with a trailing layer number (`layer.0`,
/// `attentions.1`, ...), each `(heads, n, n)` or `(batch, heads, n, n)`.
/// `batch` picks the batch element. Rows must sum to one within
/// [`FILE_ROW_TOLERANCE`].
pub fn read_stack(path: &Path, batch: usize) -> Result<AttentionStack> {
    let tensors = attnflow_core::file::read_tensors(path)?;
    let place = path.display().to_string();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let listing = names
        .iter()
        .map(|name| format!("`{name}` {:?}", tensors[*name].dims()))
        .collect::<Vec<_>>()
        .join(", ");
    let five: Vec<&String> = names
        .iter()
        .copied()
        .filter(|name| tensors[*name].rank() == 5)
        .collect();
    // One (layers, heads, n, n) tensor without a layer number: Hugging
    // Face's layout for one text, as `--save-weights` writes it.
    let four: Vec<&String> = names
        .iter()
        .copied()
        .filter(|name| tensors[*name].rank() == 4 && layer_number(name).is_none())
        .collect();
    let stack = match five.as_slice() {
        [] if four.len() == 1 => {
            let name = four[0];
            let tensor = &tensors[name];
            let layers = (0..tensor.dim(0).unwrap_or(0))
                .map(|layer| tensor.get(layer))
                .collect::<std::result::Result<Vec<Tensor>, _>>()
                .map_err(|error| InspectError::file(path, format!("tensor `{name}`: {error}")))?;
            AttentionStack::from_layer_tensors(&layers)
                .map_err(InspectError::analysis(format!("{place}: tensor `{name}`")))?
        }
        [name] => AttentionStack::from_tensor(&tensors[*name], batch)
            .map_err(InspectError::analysis(format!("{place}: tensor `{name}`")))?,
        [_, _, ..] => {
            return Err(InspectError::file(
                path,
                format!("several (layers, batch, heads, n, n) tensors ({listing}); keep one"),
            ))
        }
        [] => stack_of_layers(path, &tensors, &names, &listing, batch)?,
    };
    stack
        .check_row_stochastic(FILE_ROW_TOLERANCE)
        .map_err(InspectError::analysis(place))?;
    Ok(stack)
}

fn stack_of_layers(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    names: &[&String],
    listing: &str,
    batch: usize,
) -> Result<AttentionStack> {
    let mut layers: Vec<(usize, &String)> = names
        .iter()
        .filter_map(|name| layer_number(name).map(|number| (number, *name)))
        .collect();
    layers.sort();
    if layers.is_empty() {
        let held = if listing.is_empty() {
            "nothing"
        } else {
            listing
        };
        return Err(InspectError::file(
            path,
            format!("expected one (layers, batch, heads, n, n) tensor or one tensor per layer named with a trailing number (`layer.0`, ...); the file holds {held}"),
        ));
    }
    for (position, (number, name)) in layers.iter().enumerate() {
        if *number != position {
            return Err(InspectError::file(
                path,
                format!("layer tensors must be numbered 0, 1, 2, ... without gaps; `{name}` is number {number} at position {position}"),
            ));
        }
    }
    let per_layer = layers
        .iter()
        .map(|(_, name)| {
            let tensor = &tensors[*name];
            match tensor.rank() {
                3 => Ok(tensor.clone()),
                4 => tensor.get(batch).map_err(|_| {
                    InspectError::file(
                        path,
                        format!("tensor `{name}` {:?} has no batch element {batch}", tensor.dims()),
                    )
                }),
                _ => Err(InspectError::file(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?}; a layer is (heads, n, n) or (batch, heads, n, n)",
                        tensor.dims()
                    ),
                )),
            }
        })
        .collect::<Result<Vec<Tensor>>>()?;
    AttentionStack::from_layer_tensors(&per_layer)
        .map_err(InspectError::analysis(path.display().to_string()))
}

/// Reads one map: CSV (numbers separated by commas, one row per line;
/// blank lines ignored) or safetensors (the one 2-D tensor, or `name`).
pub fn read_map(path: &Path, name: Option<&str>) -> Result<AttentionMap> {
    if path
        .extension()
        .is_some_and(|extension| extension == "safetensors")
    {
        let tensors = attnflow_core::file::read_tensors(path)?;
        return map_of_tensors(path, &tensors, name);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| InspectError::file(path, format!("cannot read: {error}")))?;
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (line_index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut row = Vec::new();
        let mut column = 1;
        for field in line.split(',') {
            let value: f64 = field.trim().parse().map_err(|_| {
                InspectError::file_at(
                    path,
                    line_index + 1,
                    Some(column),
                    format!("`{}` is not a number", field.trim()),
                )
            })?;
            row.push(value);
            column += field.chars().count() + 1;
        }
        if let Some(first) = rows.first().filter(|first| first.len() != row.len()) {
            return Err(InspectError::file_at(
                path,
                line_index + 1,
                None,
                format!(
                    "{} values, but the first row has {}",
                    row.len(),
                    first.len()
                ),
            ));
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(InspectError::file(path, "no rows"));
    }
    AttentionMap::from_rows(&rows).map_err(InspectError::analysis(path.display().to_string()))
}

fn map_of_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    name: Option<&str>,
) -> Result<AttentionMap> {
    let tensor = match name {
        Some(name) => tensors
            .get(name)
            .ok_or_else(|| InspectError::file(path, format!("no tensor named `{name}`")))?,
        None => {
            let matrices: Vec<&String> = tensors
                .keys()
                .filter(|key| tensors[*key].rank() == 2)
                .collect();
            match matrices.as_slice() {
                [only] => &tensors[*only],
                _ => {
                    return Err(InspectError::file(
                        path,
                        format!(
                            "{} two-dimensional tensors; name the one to read with --name",
                            matrices.len()
                        ),
                    ))
                }
            }
        }
    };
    let (rows, columns) = tensor.dims2().map_err(|_| {
        InspectError::file(
            path,
            format!("the map must be 2-D, got shape {:?}", tensor.dims()),
        )
    })?;
    let values = tensor
        .to_dtype(candle_core::DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(|error| InspectError::file(path, error.to_string()))?;
    AttentionMap::new(rows, columns, values)
        .map_err(InspectError::analysis(path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_numbers_are_trailing_digits() {
        assert_eq!(layer_number("attentions.11"), Some(11));
        assert_eq!(layer_number("layer0"), Some(0));
        assert_eq!(layer_number("weights"), None);
    }

    #[test]
    fn token_files_refuse_empty_lines_with_their_number() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("tokens.txt");
        std::fs::write(&path, "a\n\nb\n").unwrap();
        let error = read_tokens(&path).unwrap_err().to_string();
        assert!(error.contains("tokens.txt:2: empty line"), "{error}");
        std::fs::write(&path, "a\r\nb\n").unwrap();
        assert_eq!(read_tokens(&path).unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn csv_faults_name_line_and_column() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("map.csv");
        std::fs::write(&path, "0.5, 0.5\n1, x\n").unwrap();
        let error = read_map(&path, None).unwrap_err().to_string();
        assert!(
            error.contains("map.csv:2:3: `x` is not a number"),
            "{error}"
        );
        std::fs::write(&path, "0.5, 0.5\n1\n").unwrap();
        let error = read_map(&path, None).unwrap_err().to_string();
        assert!(
            error.contains("map.csv:2: 1 values, but the first row has 2"),
            "{error}"
        );
    }
}
