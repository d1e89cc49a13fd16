//! Scaling (§9): the account evaluated over a list of values of one
//! dimension, and the growth exponent of time and memory fitted by least
//! squares on `log cost = k·log value + c`.
//!
//! The paper states attention as `O(n²d)` time and `O(n²)` space. A whole
//! model mixes `n`-linear work (projections, feed-forward) with the `n²`
//! products, so its fitted exponent lies between 1 and 2 and climbs towards 2
//! as `n` outgrows `d`; the report gives the attention nodes' own fit too.

use serde::Serialize;

use crate::cost::{account, CostOptions};
use crate::error::Error;
use crate::spec::Spec;

/// The account at one value of the scaled dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScalePoint {
    /// The dimension's value.
    pub value: u64,
    /// Parameters.
    pub params: u128,
    /// Forward FLOPs.
    pub forward_flops: u128,
    /// Training FLOPs.
    pub training_flops: u128,
    /// Forward FLOPs of attention nodes only.
    pub attention_flops: u128,
    /// Activation bytes.
    pub activation_bytes: u128,
}

/// A least-squares fit of `log y = exponent·log x + intercept`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// The growth exponent `k` in `y ∝ x^k`.
    pub exponent: f64,
    /// `ln` of the constant factor.
    pub intercept: f64,
    /// Coefficient of determination of the fit in log-log space.
    pub r_squared: f64,
}

/// Cost over a list of values of one dimension, with fitted exponents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaleReport {
    /// The model's name.
    pub model: String,
    /// The dimension that varies.
    pub dim: String,
    /// How it was counted.
    pub options: CostOptions,
    /// One point per value, in the order given.
    pub points: Vec<ScalePoint>,
    /// Growth of forward FLOPs (time).
    pub time: Option<Fit>,
    /// Growth of activation memory.
    pub memory: Option<Fit>,
    /// Growth of attention nodes' FLOPs, when there are attention nodes.
    pub attention: Option<Fit>,
}

/// Least-squares slope of `ln y` on `ln x`. `None` with fewer than two
/// distinct `x` or a non-positive value.
pub fn fit_exponent(points: &[(f64, f64)]) -> Option<Fit> {
    if points.iter().any(|(x, y)| *x <= 0.0 || *y <= 0.0) {
        return None;
    }
    let logs: Vec<(f64, f64)> = points.iter().map(|(x, y)| (x.ln(), y.ln())).collect();
    let count = logs.len() as f64;
    let mean_x = logs.iter().map(|(x, _)| x).sum::<f64>() / count;
    let mean_y = logs.iter().map(|(_, y)| y).sum::<f64>() / count;
    let sxx: f64 = logs.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    if logs.len() < 2 || sxx <= f64::EPSILON {
        return None;
    }
    let sxy: f64 = logs.iter().map(|(x, y)| (x - mean_x) * (y - mean_y)).sum();
    let exponent = sxy / sxx;
    let intercept = mean_y - exponent * mean_x;
    let total: f64 = logs.iter().map(|(_, y)| (y - mean_y).powi(2)).sum();
    let residual: f64 = logs
        .iter()
        .map(|(x, y)| (y - (exponent * x + intercept)).powi(2))
        .sum();
    let r_squared = if total <= f64::EPSILON {
        1.0
    } else {
        1.0 - residual / total
    };
    Some(Fit {
        exponent,
        intercept,
        r_squared,
    })
}

/// Checks `spec` at each value of `dim` (on top of `overrides`) and
/// accounts it. `progress` is called after each point (for a progress bar).
pub fn scale(
    spec: &Spec,
    dim: &str,
    values: &[u64],
    overrides: &[(String, String)],
    options: CostOptions,
    mut progress: impl FnMut(usize),
) -> crate::Result<ScaleReport> {
    if !spec.dims.iter().any(|declared| declared.name.value == dim) {
        return Err(Error::Request(format!(
            "--dim {dim}: `{dim}` is not a dimension of {} (declared: {})",
            spec.file,
            spec.dims
                .iter()
                .map(|declared| declared.name.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if values.is_empty() {
        return Err(Error::Request("--values: give at least one value".into()));
    }
    let mut points = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let mut all_overrides: Vec<(String, String)> = overrides
            .iter()
            .filter(|(name, _)| name != dim)
            .cloned()
            .collect();
        all_overrides.push((dim.to_string(), value.to_string()));
        let blueprint = spec.check(&all_overrides)?;
        let account = account(&blueprint, options);
        points.push(ScalePoint {
            value: *value,
            params: account.total.params,
            forward_flops: account.total.forward_flops,
            training_flops: account.total.training_flops,
            attention_flops: account
                .by_op
                .get("attention")
                .map_or(0, |cost| cost.forward_flops),
            activation_bytes: account.total.activation_bytes,
        });
        progress(index + 1);
    }
    let series = |pick: fn(&ScalePoint) -> u128| -> Option<Fit> {
        let pairs: Vec<(f64, f64)> = points
            .iter()
            .map(|point| (point.value as f64, pick(point) as f64))
            .collect();
        fit_exponent(&pairs)
    };
    Ok(ScaleReport {
        model: spec.name.clone(),
        dim: dim.to_string(),
        options,
        time: series(|point| point.forward_flops),
        memory: series(|point| point.activation_bytes),
        attention: series(|point| point.attention_flops),
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_power_laws_are_recovered() {
        let points: Vec<(f64, f64)> = [2.0f64, 4.0, 8.0, 16.0]
            .iter()
            .map(|x| (*x, 3.0 * x.powi(2)))
            .collect();
        let fit = fit_exponent(&points).unwrap();
        assert!((fit.exponent - 2.0).abs() < 1e-12);
        assert!((fit.intercept - 3.0f64.ln()).abs() < 1e-12);
        assert!((fit.r_squared - 1.0).abs() < 1e-12);
        assert!(fit_exponent(&[(1.0, 1.0)]).is_none());
        assert!(fit_exponent(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
        assert!(fit_exponent(&[(1.0, 0.0), (2.0, 2.0)]).is_none());
    }
}
