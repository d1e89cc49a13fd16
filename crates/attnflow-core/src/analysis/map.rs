//! Attention maps as plain `f64` matrices, and stacks of them per layer and
//! head.
//!
//! Analysis works in `f64` on the host whatever dtype the model ran in: maps
//! are small next to the model, and products over many layers lose
//! precision quickly in `f32`.

use candle_core::{DType, Tensor};

use super::error::{AnalysisError, AnalysisResult};

/// Default tolerance for "this row sums to one": loose enough for maps
/// computed in `f32` (about 1e-7 relative error per term, rows of a few
/// thousand entries), tight enough to catch a missing normalisation.
pub const ROW_SUM_TOLERANCE: f64 = 1e-4;

/// One attention map: `rows × columns` weights in row-major order. Row `i`
/// holds how much query `i` attends to each key.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionMap {
    rows: usize,
    columns: usize,
    values: Vec<f64>,
}

impl AttentionMap {
    /// A map from row-major values; fails when `values.len()` is not
    /// `rows × columns`.
    pub fn new(rows: usize, columns: usize, values: Vec<f64>) -> AnalysisResult<Self> {
        if rows.checked_mul(columns) != Some(values.len()) {
            return Err(AnalysisError::shape(
                "map",
                format!(
                    "{} values do not fill a {rows} × {columns} matrix",
                    values.len()
                ),
            ));
        }
        Ok(Self {
            rows,
            columns,
            values,
        })
    }

    /// A map from a list of rows of equal length.
    pub fn from_rows(rows: &[Vec<f64>]) -> AnalysisResult<Self> {
        let columns = rows.first().map_or(0, Vec::len);
        let mut values = Vec::with_capacity(rows.len() * columns);
        for (index, row) in rows.iter().enumerate() {
            if row.len() != columns {
                return Err(AnalysisError::shape(
                    "map",
                    format!(
                        "row {index} has {} entries but row 0 has {columns}",
                        row.len()
                    ),
                ));
            }
            values.extend_from_slice(row);
        }
        Self::new(rows.len(), columns, values)
    }

    /// The `n × n` identity, the attention of a layer that only keeps each
    /// token where it is.
    pub fn identity(n: usize) -> Self {
        let mut values = vec![0.0; n * n];
        for i in 0..n {
            values[i * n + i] = 1.0;
        }
        Self {
            rows: n,
            columns: n,
            values,
        }
    }

    /// Number of rows (queries).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (keys).
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// The values in row-major order.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Consumes the map, returning its row-major values.
    pub fn into_values(self) -> Vec<f64> {
        self.values
    }

    /// The entry at `(row, column)`; panics out of range, like slice indexing.
    pub fn get(&self, row: usize, column: usize) -> f64 {
        self.values[row * self.columns + column]
    }

    /// Row `row` as a slice.
    pub fn row(&self, row: usize) -> &[f64] {
        &self.values[row * self.columns..(row + 1) * self.columns]
    }

    /// Every row as a slice, top to bottom.
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f64]> {
        self.values.chunks(self.columns.max(1)).take(self.rows)
    }

    pub(crate) fn row_mut(&mut self, row: usize) -> &mut [f64] {
        &mut self.values[row * self.columns..(row + 1) * self.columns]
    }

    /// Fails with the first NaN or infinite value, naming it `name`.
    pub fn check_finite(&self, name: &str) -> AnalysisResult<()> {
        match self.values.iter().position(|value| !value.is_finite()) {
            Some(index) => Err(AnalysisError::NotFinite {
                map: name.to_string(),
                row: index / self.columns,
                column: index % self.columns,
                value: self.values[index],
            }),
            None => Ok(()),
        }
    }

    /// Fails unless every entry is finite and non-negative and every row
    /// sums to one within `tolerance`. `name` names the map in the error.
    pub fn check_row_stochastic(&self, name: &str, tolerance: f64) -> AnalysisResult<()> {
        self.check_finite(name)?;
        for (index, row) in self.iter_rows().enumerate() {
            if let Some(column) = row.iter().position(|&value| value < -tolerance) {
                return Err(AnalysisError::NotRowStochastic {
                    map: name.to_string(),
                    row: index,
                    message: format!("entry at column {column} is {} < 0", row[column]),
                    tolerance,
                });
            }
            let sum: f64 = row.iter().sum();
            if (sum - 1.0).abs() > tolerance {
                return Err(AnalysisError::NotRowStochastic {
                    map: name.to_string(),
                    row: index,
                    message: format!("it sums to {sum}"),
                    tolerance,
                });
            }
        }
        Ok(())
    }

    /// The largest deviation of a row sum from one: 0 for an exactly
    /// row-stochastic map.
    pub fn max_row_sum_error(&self) -> f64 {
        self.iter_rows()
            .map(|row| (row.iter().sum::<f64>() - 1.0).abs())
            .fold(0.0, f64::max)
    }

    /// Matrix product `self · other`; fails when the inner sizes differ.
    pub fn matmul(&self, other: &AttentionMap) -> AnalysisResult<AttentionMap> {
        if self.columns != other.rows {
            return Err(AnalysisError::shape(
                "product",
                format!(
                    "cannot multiply a {} × {} map by a {} × {} map",
                    self.rows, self.columns, other.rows, other.columns
                ),
            ));
        }
        let mut values = vec![0.0; self.rows * other.columns];
        for i in 0..self.rows {
            let out = &mut values[i * other.columns..(i + 1) * other.columns];
            for (k, &left) in self.row(i).iter().enumerate() {
                if left == 0.0 {
                    continue;
                }
                for (target, &right) in out.iter_mut().zip(other.row(k)) {
                    *target += left * right;
                }
            }
        }
        AttentionMap::new(self.rows, other.columns, values)
    }

    /// Divides each row by its sum so it sums to one; rows summing to zero
    /// (fully masked queries) are left as zeros rather than becoming NaN.
    pub(crate) fn normalise_rows(&mut self) {
        for i in 0..self.rows {
            let row = self.row_mut(i);
            let sum: f64 = row.iter().sum();
            if sum > 0.0 {
                row.iter_mut().for_each(|value| *value /= sum);
            }
        }
    }
}

/// The attention maps of a whole model for one input: `layers × heads`
/// square maps over the same `n` tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionStack {
    layers: Vec<Vec<AttentionMap>>,
    tokens: usize,
}

impl AttentionStack {
    /// A stack from `layers[layer][head]`; every layer must have the same
    /// number of heads (at least one) and every map be `n × n` for one `n`.
    pub fn new(layers: Vec<Vec<AttentionMap>>) -> AnalysisResult<Self> {
        let first = layers
            .first()
            .and_then(|heads| heads.first())
            .ok_or_else(|| AnalysisError::shape("attention", "no layers or no heads"))?;
        let tokens = first.rows();
        if tokens == 0 {
            return Err(AnalysisError::shape("attention", "maps over zero tokens"));
        }
        let heads = layers[0].len();
        for (layer, maps) in layers.iter().enumerate() {
            if maps.len() != heads {
                return Err(AnalysisError::shape(
                    &format!("layer {layer}"),
                    format!("has {} heads but layer 0 has {heads}", maps.len()),
                ));
            }
            for (head, map) in maps.iter().enumerate() {
                if map.rows() != tokens || map.columns() != tokens {
                    return Err(AnalysisError::shape(
                        &format!("layer {layer} head {head}"),
                        format!(
                            "is {} × {} but every map must be {tokens} × {tokens}",
                            map.rows(),
                            map.columns()
                        ),
                    ));
                }
            }
        }
        Ok(Self { layers, tokens })
    }

    /// Reads a stack from one tensor of shape `(layers, batch, heads, n, n)`
    /// (the usual "all attentions" export), taking batch element `batch`.
    pub fn from_tensor(weights: &Tensor, batch: usize) -> AnalysisResult<Self> {
        let dims = weights.dims();
        let (layers, batches) = match dims {
            &[layers, batches, _, _, _] => (layers, batches),
            _ => {
                return Err(AnalysisError::shape(
                    "weights",
                    format!("expected (layers, batch, heads, n, n), got shape {dims:?}"),
                ))
            }
        };
        if batch >= batches {
            return Err(AnalysisError::parameter(
                "batch",
                format!("is {batch} but the tensor holds {batches} batch elements"),
            ));
        }
        let per_layer = (0..layers)
            .map(|layer| weights.get(layer)?.get(batch))
            .collect::<candle_core::Result<Vec<_>>>()?;
        // Squareness and equal head counts are checked per layer there.
        Self::from_layer_tensors(&per_layer)
    }

    /// Reads a stack from one tensor per layer, each `(heads, n, n)`.
    pub fn from_layer_tensors(layers: &[Tensor]) -> AnalysisResult<Self> {
        let mut stack = Vec::with_capacity(layers.len());
        for (layer, tensor) in layers.iter().enumerate() {
            let name = format!("layer {layer}");
            let (heads, n, m) = tensor.dims3().map_err(|_| {
                AnalysisError::shape(
                    &name,
                    format!("expected (heads, n, n), got shape {:?}", tensor.dims()),
                )
            })?;
            if n != m {
                return Err(AnalysisError::shape(
                    &name,
                    format!("maps must be square (self-attention), got {n} × {m}"),
                ));
            }
            if n == 0 || heads == 0 {
                return Err(AnalysisError::shape(
                    &name,
                    format!("has shape {:?}: no tokens or no heads", tensor.dims()),
                ));
            }
            let values = tensor
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            let maps = values
                .chunks(n * n)
                .take(heads)
                .map(|chunk| AttentionMap::new(n, n, chunk.to_vec()))
                .collect::<AnalysisResult<Vec<_>>>()?;
            stack.push(maps);
        }
        Self::new(stack)
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Number of heads per layer.
    pub fn num_heads(&self) -> usize {
        self.layers[0].len()
    }

    /// Number of tokens `n`.
    pub fn num_tokens(&self) -> usize {
        self.tokens
    }

    /// The map of `head` in `layer`; panics out of range, like indexing.
    pub fn map(&self, layer: usize, head: usize) -> &AttentionMap {
        &self.layers[layer][head]
    }

    /// The heads of one layer.
    pub fn layer(&self, layer: usize) -> &[AttentionMap] {
        &self.layers[layer]
    }

    /// Every layer's heads, first layer first.
    pub fn layers(&self) -> &[Vec<AttentionMap>] {
        &self.layers
    }

    /// Fails unless every row of every map is a distribution within
    /// `tolerance` or entirely zero (a fully masked query, which the engine
    /// returns as zeros), naming the first bad layer, head and row.
    pub fn check_row_stochastic(&self, tolerance: f64) -> AnalysisResult<()> {
        for (layer, maps) in self.layers.iter().enumerate() {
            for (head, map) in maps.iter().enumerate() {
                let name = format!("layer {layer} head {head}");
                map.check_finite(&name)?;
                for (index, row) in map.iter_rows().enumerate() {
                    if row.iter().all(|&value| value == 0.0) {
                        continue;
                    }
                    let single = AttentionMap::new(1, row.len(), row.to_vec())?;
                    single
                        .check_row_stochastic(&name, tolerance)
                        .map_err(|error| match error {
                            AnalysisError::NotRowStochastic {
                                map,
                                message,
                                tolerance,
                                ..
                            } => AnalysisError::NotRowStochastic {
                                map,
                                row: index,
                                message,
                                tolerance,
                            },
                            other => other,
                        })?;
                }
            }
        }
        Ok(())
    }
}
