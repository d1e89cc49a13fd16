//! Per-field profiles in one streaming pass with bounded memory: counts,
//! nulls, type errors, min/max/mean/std (Welford), approximate distinct
//! counts (HyperLogLog), a histogram (adaptive bins for numbers, heavy
//! hitters for text), for the report and for people deciding on a schema.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::check::{typed_cells, Checker};
use crate::error::DataResult;
use crate::schema::Schema;
use crate::source::{self, Body, Record};
use crate::unique::stable_hash;
use crate::value::{FieldType, ValueRef};

/// Running mean and variance by Welford's method: one pass, numerically
/// stable (no catastrophic cancellation of a sum of squares).
#[derive(Debug, Clone, Copy, Default)]
pub struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Moments {
    /// Adds one finite value.
    pub fn push(&mut self, value: f64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
    }

    /// Values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean, when any value was seen.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// Sample standard deviation (n - 1 in the denominator, as pandas).
    pub fn std(&self) -> Option<f64> {
        (self.count > 1).then(|| (self.m2 / (self.count - 1) as f64).sqrt())
    }

    /// Smallest value.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest value.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }
}

/// HyperLogLog distinct counter with 2^14 registers (16 KiB, standard error
/// about 1.04/√16384 ≈ 0.8%), with the small-range correction of Flajolet
/// et al. (linear counting below 2.5·m).
#[derive(Debug, Clone)]
pub struct HyperLogLog {
    registers: Vec<u8>,
}

const HLL_BITS: u32 = 14;

impl Default for HyperLogLog {
    fn default() -> Self {
        Self {
            registers: vec![0; 1 << HLL_BITS],
        }
    }
}

impl HyperLogLog {
    /// Adds a 64-bit hash.
    pub fn add_hash(&mut self, hash: u64) {
        let index = (hash >> (64 - HLL_BITS)) as usize;
        let rest = (hash << HLL_BITS) | (1 << (HLL_BITS - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        if rank > self.registers[index] {
            self.registers[index] = rank;
        }
    }

    /// The estimated number of distinct hashes added.
    pub fn estimate(&self) -> u64 {
        let m = self.registers.len() as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self
            .registers
            .iter()
            .map(|&rank| 2f64.powi(-i32::from(rank)))
            .sum();
        let raw = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|&&rank| rank == 0).count();
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

const BINS: usize = 32;
const WARMUP: usize = 1024;

/// A histogram whose 32 equal-width bins widen (by merging neighbours) as
/// values outside the current range arrive: exact counts, bounded memory,
/// one pass. The first 1024 values fix the initial range.
#[derive(Debug, Clone, Default)]
pub struct AdaptiveHistogram {
    warmup: Vec<f64>,
    low: f64,
    width: f64,
    counts: Vec<u64>,
}

/// One histogram bin `[low, high)` (the last bin includes `high`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// Lower edge.
    pub low: f64,
    /// Upper edge.
    pub high: f64,
    /// Values in the bin.
    pub count: u64,
}

impl AdaptiveHistogram {
    /// Adds a finite value.
    pub fn push(&mut self, value: f64) {
        if self.counts.is_empty() {
            self.warmup.push(value);
            if self.warmup.len() >= WARMUP {
                self.start();
            }
            return;
        }
        self.place(value);
    }

    fn start(&mut self) {
        let low = self.warmup.iter().copied().fold(f64::INFINITY, f64::min);
        let high = self
            .warmup
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        self.low = low;
        // Slightly wider than the span so the maximum falls inside.
        self.width = if high > low {
            (high - low) / BINS as f64 * (1.0 + 1e-9)
        } else {
            1.0
        };
        self.counts = vec![0; BINS];
        for value in std::mem::take(&mut self.warmup) {
            self.place(value);
        }
    }

    fn place(&mut self, value: f64) {
        loop {
            let offset = (value - self.low) / self.width;
            if offset >= 0.0 && offset < BINS as f64 {
                // Agree with the edges `bins` reports despite rounding.
                let mut index = offset as usize;
                while index > 0 && value < self.low + self.width * index as f64 {
                    index -= 1;
                }
                while index + 1 < BINS && value >= self.low + self.width * (index + 1) as f64 {
                    index += 1;
                }
                self.counts[index] += 1;
                return;
            }
            if !self.width.is_finite() || self.width > f64::MAX / 4.0 {
                // Values beyond f64's reach: clamp into the edge bins.
                let index = if value < self.low { 0 } else { BINS - 1 };
                self.counts[index] += 1;
                return;
            }
            let mut merged = vec![0; BINS];
            if value < self.low {
                // The old range becomes the upper half.
                for (index, count) in self.counts.iter().enumerate() {
                    merged[BINS / 2 + index / 2] += count;
                }
                self.low -= self.width * BINS as f64;
            } else {
                for (index, count) in self.counts.iter().enumerate() {
                    merged[index / 2] += count;
                }
            }
            self.width *= 2.0;
            self.counts = merged;
        }
    }

    /// The non-empty span of bins.
    pub fn bins(&self) -> Vec<Bin> {
        let mut histogram = self.clone();
        if histogram.counts.is_empty() {
            if histogram.warmup.is_empty() {
                return Vec::new();
            }
            histogram.start();
        }
        let first = histogram
            .counts
            .iter()
            .position(|&count| count > 0)
            .unwrap_or(0);
        let last = histogram
            .counts
            .iter()
            .rposition(|&count| count > 0)
            .unwrap_or(0);
        (first..=last)
            .map(|index| Bin {
                low: histogram.low + histogram.width * index as f64,
                high: histogram.low + histogram.width * (index + 1) as f64,
                count: histogram.counts[index],
            })
            .collect()
    }
}

/// Heavy hitters by the Space-Saving algorithm (Metwally et al., 2005) with
/// 64 counters: any value more frequent than n/64 is guaranteed to be kept;
/// each count is an upper bound, over by at most the stated error.
#[derive(Debug, Clone, Default)]
pub struct TopValues {
    counters: HashMap<String, (u64, u64)>,
}

const TOP_COUNTERS: usize = 64;

/// A frequent value and its count bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopValue {
    /// The value.
    pub value: String,
    /// Upper bound of its count.
    pub count: u64,
    /// The count is exact to within this much (0: exact).
    pub error: u64,
}

impl TopValues {
    /// Counts one occurrence.
    pub fn push(&mut self, value: &str) {
        if let Some((count, _)) = self.counters.get_mut(value) {
            *count += 1;
            return;
        }
        if self.counters.len() < TOP_COUNTERS {
            self.counters.insert(value.to_owned(), (1, 0));
            return;
        }
        let (smallest, &(count, _)) = self
            .counters
            .iter()
            .min_by_key(|(_, (count, _))| *count)
            .map(|(key, entry)| (key.clone(), entry))
            .expect("counters are full");
        self.counters.remove(&smallest);
        self.counters.insert(value.to_owned(), (count + 1, count));
    }

    /// The `limit` most frequent values, most frequent first.
    pub fn top(&self, limit: usize) -> Vec<TopValue> {
        let mut values: Vec<TopValue> = self
            .counters
            .iter()
            .map(|(value, &(count, error))| TopValue {
                value: value.clone(),
                count,
                error,
            })
            .collect();
        values.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        values.truncate(limit);
        values
    }
}

/// The profile of one field.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FieldProfile {
    /// Field name.
    pub name: String,
    /// Declared type.
    pub field_type: FieldType,
    /// Values present and of the declared type.
    pub count: u64,
    /// Missing or null values.
    pub nulls: u64,
    /// Values not of the declared type.
    pub invalid: u64,
    /// Infinite values (numbers only; excluded from the moments).
    pub infinite: u64,
    /// Smallest value (numbers), or shortest length (text: characters;
    /// tokens: token count).
    pub min: Option<f64>,
    /// Largest value or longest length.
    pub max: Option<f64>,
    /// Mean value or mean length.
    pub mean: Option<f64>,
    /// Sample standard deviation of the value or length.
    pub std: Option<f64>,
    /// What min/max/mean/std describe: `value` or `length`.
    pub measure: String,
    /// Approximate distinct values (HyperLogLog, about 0.8% error).
    pub distinct: u64,
    /// Histogram of numeric values (or lengths).
    pub histogram: Vec<Bin>,
    /// Most frequent values (text, tokens, bools).
    pub top: Vec<TopValue>,
}

/// Profiles of every field over a set of files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileReport {
    /// Schema name.
    pub schema: String,
    /// The files read.
    pub files: Vec<String>,
    /// Records read.
    pub records: u64,
    /// Records that could not be parsed (counted, not profiled).
    pub malformed: u64,
    /// One profile per schema field.
    pub fields: Vec<FieldProfile>,
}

#[derive(Default)]
struct Accumulator {
    count: u64,
    nulls: u64,
    invalid: u64,
    infinite: u64,
    moments: Moments,
    distinct: HyperLogLog,
    histogram: AdaptiveHistogram,
    top: TopValues,
}

impl Accumulator {
    fn push(&mut self, value: &ValueRef<'_>) {
        match value {
            ValueRef::Null => {
                self.nulls += 1;
                return;
            }
            ValueRef::Int(number) => {
                self.distinct.add_hash(stable_hash(number));
                self.numeric(*number as f64);
            }
            ValueRef::Float(number) => {
                self.distinct.add_hash(stable_hash(&number.to_bits()));
                if number.is_finite() {
                    self.numeric(*number);
                } else {
                    self.infinite += 1;
                }
            }
            ValueRef::Bool(flag) => {
                self.distinct.add_hash(stable_hash(flag));
                self.top.push(if *flag { "true" } else { "false" });
            }
            ValueRef::Str(text) => {
                self.distinct.add_hash(stable_hash(text));
                self.top.push(text);
                self.numeric(if text.is_ascii() {
                    text.len()
                } else {
                    text.chars().count()
                } as f64);
            }
            ValueRef::Tokens(tokens) => {
                self.distinct.add_hash(stable_hash(tokens));
                for token in tokens {
                    self.top.push(token);
                }
                self.numeric(tokens.len() as f64);
            }
        }
        self.count += 1;
    }

    fn numeric(&mut self, value: f64) {
        self.moments.push(value);
        self.histogram.push(value);
    }
}

/// Profiles `files` under `schema` in one streaming pass.
pub fn profile_files(schema: &Schema, files: &[PathBuf]) -> DataResult<ProfileReport> {
    let checker = Checker::new(schema);
    let mut accumulators: Vec<Accumulator> = schema
        .fields
        .iter()
        .map(|_| Accumulator::default())
        .collect();
    let mut report = ProfileReport {
        schema: schema.name.clone(),
        files: files
            .iter()
            .map(|path| path.display().to_string())
            .collect(),
        records: 0,
        malformed: 0,
        fields: Vec::new(),
    };
    let mut opened = Vec::new();
    for path in files {
        let format = schema.format_of(path)?;
        let source = source::open(path, format, &schema.source, schema.fields.len())?;
        let binding = checker.bind(source.columns(), path, format != crate::schema::Format::Csv)?;
        opened.push((source, binding));
    }
    let mut record = Record::default();
    for (mut source, binding) in opened {
        while source.next_record(&mut record)? {
            report.records += 1;
            if matches!(record.body, Body::Malformed(_)) {
                report.malformed += 1;
                continue;
            }
            for (accumulator, typed) in accumulators
                .iter_mut()
                .zip(typed_cells(schema, &record, &binding))
            {
                match typed {
                    Ok(value) => accumulator.push(&value),
                    Err(_) => accumulator.invalid += 1,
                }
            }
        }
    }
    report.fields = schema
        .fields
        .iter()
        .zip(accumulators)
        .map(|(field, accumulator)| {
            let numeric = matches!(field.field_type, FieldType::Int | FieldType::Float);
            FieldProfile {
                name: field.name.clone(),
                field_type: field.field_type,
                count: accumulator.count,
                nulls: accumulator.nulls,
                invalid: accumulator.invalid,
                infinite: accumulator.infinite,
                min: accumulator.moments.min(),
                max: accumulator.moments.max(),
                mean: accumulator.moments.mean(),
                std: accumulator.moments.std(),
                measure: if numeric { "value" } else { "length" }.to_string(),
                distinct: accumulator.distinct.estimate(),
                histogram: accumulator.histogram.bins(),
                top: if numeric {
                    Vec::new()
                } else {
                    accumulator.top.top(10)
                },
            }
        })
        .collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn welford_matches_two_pass(values in proptest::collection::vec(-1e6f64..1e6, 2..300)) {
            let mut moments = Moments::default();
            for &value in &values {
                moments.push(value);
            }
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let variance = values.iter().map(|value| (value - mean).powi(2)).sum::<f64>() / (n - 1.0);
            prop_assert!((moments.mean().unwrap() - mean).abs() <= 1e-9 * (1.0 + mean.abs()));
            prop_assert!((moments.std().unwrap() - variance.sqrt()).abs() <= 1e-6 * (1.0 + variance.sqrt()));
            prop_assert_eq!(moments.min().unwrap(), values.iter().copied().fold(f64::INFINITY, f64::min));
        }

        #[test]
        fn histogram_keeps_every_value_in_its_bin(values in proptest::collection::vec(-1e9f64..1e9, 1..5000)) {
            let mut histogram = AdaptiveHistogram::default();
            for &value in &values {
                histogram.push(value);
            }
            let bins = histogram.bins();
            prop_assert_eq!(bins.iter().map(|bin| bin.count).sum::<u64>(), values.len() as u64);
            // Bins merge as the range grows; edges are recomputed in floating
            // point, so allow values within a hair of an edge on either side.
            for bin in &bins {
                let slack = (bin.high - bin.low) * 1e-9;
                let surely = values.iter().filter(|&&value| value >= bin.low + slack && value < bin.high - slack).count() as u64;
                let maybe = values.iter().filter(|&&value| value >= bin.low - slack && value < bin.high + slack).count() as u64;
                prop_assert!(surely <= bin.count && bin.count <= maybe, "{:?}: {} {} {}", bin, surely, bin.count, maybe);
            }
        }
    }

    #[test]
    fn welford_is_stable_with_a_large_offset() {
        let mut moments = Moments::default();
        for value in [1e9 + 4.0, 1e9 + 7.0, 1e9 + 13.0, 1e9 + 16.0] {
            moments.push(value);
        }
        assert!((moments.std().unwrap() - 30f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn hyperloglog_is_within_three_percent() {
        for distinct in [10u64, 1000, 50_000, 400_000] {
            let mut counter = HyperLogLog::default();
            for value in 0..distinct {
                counter.add_hash(stable_hash(&value));
                counter.add_hash(stable_hash(&value));
            }
            let estimate = counter.estimate() as f64;
            let error = (estimate - distinct as f64).abs() / distinct as f64;
            assert!(error < 0.03, "{distinct}: estimated {estimate}");
        }
    }

    #[test]
    fn space_saving_keeps_heavy_hitters() {
        let mut top = TopValues::default();
        for index in 0..20_000u64 {
            top.push(&format!("rare{index}"));
            if index % 4 == 0 {
                top.push("heavy");
            }
        }
        let first = &top.top(1)[0];
        assert_eq!(first.value, "heavy");
        assert!(first.count >= 5000 && first.count - first.error <= 5000);
    }
}
