//! Exact rational matrices: the arithmetic that decides Lemma 1 and
//! Lemma 2 without rounding. Entries are `BigRational`, so a row sum is
//! 1 or it is not.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// A dense square or rectangular matrix of exact rationals, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Exact {
    rows: usize,
    columns: usize,
    values: Vec<BigRational>,
}

/// `numerator / denominator` as an exact rational.
pub fn ratio(numerator: i64, denominator: i64) -> BigRational {
    BigRational::new(BigInt::from(numerator), BigInt::from(denominator))
}

impl Exact {
    /// A matrix from rows of `numerator / denominator` pairs.
    pub fn from_fractions(rows: &[&[(i64, i64)]]) -> Self {
        let columns = rows.first().map_or(0, |row| row.len());
        let values = rows
            .iter()
            .flat_map(|row| row.iter().map(|&(n, d)| ratio(n, d)))
            .collect();
        Self {
            rows: rows.len(),
            columns,
            values,
        }
    }

    /// A matrix of integers.
    pub fn from_integers(rows: usize, columns: usize, values: &[i64]) -> Self {
        assert_eq!(values.len(), rows * columns, "integer matrix shape");
        Self {
            rows,
            columns,
            values: values.iter().map(|&value| ratio(value, 1)).collect(),
        }
    }

    /// A matrix whose rows are integer weights divided by their row sum
    /// (row-stochastic when every row has a positive sum).
    pub fn normalised_rows(rows: usize, columns: usize, weights: &[i64]) -> Self {
        let mut matrix = Self::from_integers(rows, columns, weights);
        for row in 0..rows {
            let sum: i64 = weights[row * columns..(row + 1) * columns].iter().sum();
            if sum != 0 {
                for column in 0..columns {
                    let value = matrix.get(row, column) / ratio(sum, 1);
                    matrix.set(row, column, value);
                }
            }
        }
        matrix
    }

    /// The identity of size `n`.
    pub fn identity(n: usize) -> Self {
        let mut matrix = Self::zeros(n, n);
        for index in 0..n {
            matrix.set(index, index, BigRational::one());
        }
        matrix
    }

    /// All zeros.
    pub fn zeros(rows: usize, columns: usize) -> Self {
        Self {
            rows,
            columns,
            values: vec![BigRational::zero(); rows * columns],
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Entry `(row, column)`.
    pub fn get(&self, row: usize, column: usize) -> BigRational {
        self.values[row * self.columns + column].clone()
    }

    fn entry(&self, row: usize, column: usize) -> &BigRational {
        &self.values[row * self.columns + column]
    }

    /// Sets entry `(row, column)`.
    pub fn set(&mut self, row: usize, column: usize, value: BigRational) {
        self.values[row * self.columns + column] = value;
    }

    /// The sub-matrix of the given rows and columns.
    pub fn select(&self, rows: &[usize], columns: &[usize]) -> Self {
        let values = rows
            .iter()
            .flat_map(|&row| columns.iter().map(move |&column| self.get(row, column)))
            .collect();
        Self {
            rows: rows.len(),
            columns: columns.len(),
            values,
        }
    }

    /// The product `self · other`.
    pub fn multiply(&self, other: &Exact) -> Exact {
        assert_eq!(self.columns, other.rows, "matrix product shapes");
        let mut product = Self::zeros(self.rows, other.columns);
        for row in 0..self.rows {
            for middle in 0..self.columns {
                let left = self.entry(row, middle);
                if left.is_zero() {
                    continue;
                }
                for column in 0..other.columns {
                    let value = product.entry(row, column) + left * other.entry(middle, column);
                    product.set(row, column, value);
                }
            }
        }
        product
    }

    /// `self − other`.
    pub fn subtract(&self, other: &Exact) -> Exact {
        assert_eq!((self.rows, self.columns), (other.rows, other.columns));
        Exact {
            rows: self.rows,
            columns: self.columns,
            values: self
                .values
                .iter()
                .zip(&other.values)
                .map(|(left, right)| left - right)
                .collect(),
        }
    }

    /// Each row's sum.
    pub fn row_sums(&self) -> Vec<BigRational> {
        (0..self.rows)
            .map(|row| {
                (0..self.columns).fold(BigRational::zero(), |sum, column| {
                    sum + self.entry(row, column)
                })
            })
            .collect()
    }

    /// The inverse by Gauss–Jordan elimination, or `None` when the matrix
    /// is singular (exactly: no pivot is a rounding artefact).
    pub fn inverse(&self) -> Option<Exact> {
        assert_eq!(self.rows, self.columns, "inverse of a non-square matrix");
        let n = self.rows;
        let mut left = self.clone();
        let mut right = Self::identity(n);
        for column in 0..n {
            let pivot = (column..n).find(|&row| !left.entry(row, column).is_zero())?;
            if pivot != column {
                for index in 0..n {
                    left.values.swap(pivot * n + index, column * n + index);
                    right.values.swap(pivot * n + index, column * n + index);
                }
            }
            let scale = left.get(column, column).recip();
            for index in 0..n {
                let value = left.entry(column, index) * &scale;
                left.set(column, index, value);
                let value = right.entry(column, index) * &scale;
                right.set(column, index, value);
            }
            for row in (0..n).filter(|&row| row != column) {
                let factor = left.get(row, column);
                if factor.is_zero() {
                    continue;
                }
                for index in 0..n {
                    let value = left.entry(row, index) - &factor * left.entry(column, index);
                    left.set(row, index, value);
                    let value = right.entry(row, index) - &factor * right.entry(column, index);
                    right.set(row, index, value);
                }
            }
        }
        Some(right)
    }

    /// The entries as `f64`, row-major (for comparison with the engines).
    pub fn to_f64(&self) -> Vec<f64> {
        self.values
            .iter()
            .map(|value| value.to_f64().unwrap_or(f64::NAN))
            .collect()
    }

    /// Whether every entry is non-negative.
    pub fn is_non_negative(&self) -> bool {
        self.values.iter().all(|value| !value.is_negative())
    }
}

/// A rational for display: `p/q`, or `p` when whole.
pub fn show(value: &BigRational) -> String {
    if value.is_integer() {
        value.numer().to_string()
    } else {
        format!("{}/{}", value.numer(), value.denom())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_times_matrix_is_the_identity_exactly() {
        let matrix = Exact::from_integers(3, 3, &[2, -1, 0, 1, 3, 1, 0, 5, -2]);
        let inverse = matrix.inverse().unwrap();
        assert_eq!(inverse.multiply(&matrix), Exact::identity(3));
        let singular = Exact::from_integers(2, 2, &[1, 2, 2, 4]);
        assert!(singular.inverse().is_none());
    }

    #[test]
    fn normalised_rows_sum_to_one_exactly() {
        let matrix = Exact::normalised_rows(2, 3, &[1, 1, 1, 3, 0, 7]);
        assert!(matrix.row_sums().iter().all(|sum| sum.is_one()));
        assert_eq!(show(&matrix.get(1, 2)), "7/10");
    }
}
