//! The `granular` convention checked against running code: plain reference
//! implementations of each op, written as one would write them, run on a
//! number type that counts every scalar operation it performs. The counts
//! must equal the account's, kind by kind.

use std::cell::RefCell;
use std::ops::{Add, Div, Mul, Sub};

use attnflow_blueprint::{account, Blueprint, CostOptions, Counting, Flops};

thread_local! {
    static COUNTS: RefCell<Flops> = RefCell::new(Flops::default());
}

fn tally(update: impl FnOnce(&mut Flops)) {
    COUNTS.with(|counts| update(&mut counts.borrow_mut()));
}

/// Counts one operation of the kind `field` selects (kept out of the
/// operator impls so that their bodies hold only the operation itself).
fn record(field: fn(&mut Flops) -> &mut u128) {
    tally(|counts| *field(counts) += 1);
}

fn take_counts() -> Flops {
    COUNTS.with(|counts| std::mem::take(&mut *counts.borrow_mut()))
}

/// A real number that counts the operations done on it.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Counted(f64);

impl Add for Counted {
    type Output = Counted;
    fn add(self, other: Counted) -> Counted {
        record(|counts| &mut counts.add);
        Counted(self.0 + other.0)
    }
}

impl Sub for Counted {
    type Output = Counted;
    fn sub(self, other: Counted) -> Counted {
        record(|counts| &mut counts.add);
        Counted(self.0 - other.0)
    }
}

impl Mul for Counted {
    type Output = Counted;
    fn mul(self, other: Counted) -> Counted {
        record(|counts| &mut counts.mul);
        Counted(self.0 * other.0)
    }
}

impl Div for Counted {
    type Output = Counted;
    fn div(self, other: Counted) -> Counted {
        record(|counts| &mut counts.div);
        Counted(self.0 / other.0)
    }
}

impl Counted {
    fn exp(self) -> Counted {
        record(|counts| &mut counts.exp);
        Counted(self.0.exp())
    }
    /// tanh and erf cost one transcendental each, counted with exp.
    fn transcendental(self, function: fn(f64) -> f64) -> Counted {
        record(|counts| &mut counts.exp);
        Counted(function(self.0))
    }
    fn sqrt(self) -> Counted {
        record(|counts| &mut counts.sqrt);
        Counted(self.0.sqrt())
    }
    fn max(self, other: Counted) -> Counted {
        record(|counts| &mut counts.compare);
        if other.0 > self.0 {
            other
        } else {
            self
        }
    }
    /// A sign flip: free.
    fn negate(self) -> Counted {
        Counted(-self.0)
    }
}

/// Runs a reference for its counts only.
fn discard<T>(value: T) {
    std::hint::black_box(value);
}

fn constant(value: f64) -> Counted {
    Counted(value)
}

type Matrix = Vec<Vec<Counted>>;

/// Runs one op's reference implementation.
type Reference<'a> = Box<dyn Fn() + 'a>;

fn matrix(rows: usize, columns: usize) -> Matrix {
    (0..rows)
        .map(|row| {
            (0..columns)
                .map(|column| constant(((row * 7 + column * 3) % 11) as f64 / 11.0 - 0.5))
                .collect()
        })
        .collect()
}

/// `x Wᵀ + b`, each output a running dot product.
fn linear(input: &Matrix, out: usize, bias: bool) -> Matrix {
    let weight = matrix(out, input[0].len());
    input
        .iter()
        .map(|row| {
            (0..out)
                .map(|column| {
                    let mut sum = row[0] * weight[column][0];
                    for inner in 1..row.len() {
                        sum = sum + row[inner] * weight[column][inner];
                    }
                    if bias {
                        sum = sum + constant(0.1);
                    }
                    sum
                })
                .collect()
        })
        .collect()
}

fn layer_norm(input: &Matrix, bias: bool) -> Matrix {
    input
        .iter()
        .map(|row| {
            let width = constant(row.len() as f64);
            let mean = row[1..].iter().fold(row[0], |sum, value| sum + *value) / width;
            let centered: Vec<Counted> = row.iter().map(|value| *value - mean).collect();
            let squares: Vec<Counted> = centered.iter().map(|value| *value * *value).collect();
            let variance = squares[1..]
                .iter()
                .fold(squares[0], |sum, value| sum + *value)
                / width;
            let deviation = (variance + constant(1e-5)).sqrt();
            centered
                .iter()
                .map(|value| {
                    let scaled = *value / deviation * constant(1.5);
                    if bias {
                        scaled + constant(0.1)
                    } else {
                        scaled
                    }
                })
                .collect()
        })
        .collect()
}

fn rms_norm(input: &Matrix) -> Matrix {
    input
        .iter()
        .map(|row| {
            let squares: Vec<Counted> = row.iter().map(|value| *value * *value).collect();
            let mean_square = squares[1..]
                .iter()
                .fold(squares[0], |sum, value| sum + *value)
                / constant(row.len() as f64);
            let root = (mean_square + constant(1e-6)).sqrt();
            row.iter()
                .map(|value| *value / root * constant(1.5))
                .collect()
        })
        .collect()
}

/// Numerically stable softmax of one row.
fn softmax(row: &[Counted]) -> Vec<Counted> {
    let maximum = row[1..]
        .iter()
        .fold(row[0], |maximum, value| maximum.max(*value));
    let exponentials: Vec<Counted> = row.iter().map(|value| (*value - maximum).exp()).collect();
    let total = exponentials[1..]
        .iter()
        .fold(exponentials[0], |sum, value| sum + *value);
    exponentials.iter().map(|value| *value / total).collect()
}

fn gelu(value: Counted) -> Counted {
    let inner = (value * constant(std::f64::consts::FRAC_1_SQRT_2)).transcendental(erf);
    value * constant(0.5) * (constant(1.0) + inner)
}

fn gelu_tanh(value: Counted) -> Counted {
    let cube = value * value * value;
    let inner = constant((2.0 / std::f64::consts::PI).sqrt()) * (value + constant(0.044715) * cube);
    value * constant(0.5) * (constant(1.0) + inner.transcendental(f64::tanh))
}

fn silu(value: Counted) -> Counted {
    value / (constant(1.0) + value.negate().exp())
}

/// Abramowitz–Stegun 7.1.26; only its value is used, not its cost.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.3275911 * x.abs());
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    (1.0 - poly * (-x * x).exp()).copysign(x)
}

/// Multi-head self attention over one sequence: projections, scores, scale,
/// mask, softmax, weighted values, output projection (§3.2). `window`
/// limits each query to that many most recent keys; `exact` skips masked
/// entries instead of masking them out of a dense matrix.
#[allow(clippy::too_many_arguments)]
fn attention(
    input: &Matrix,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal_window: Option<usize>,
    exact: bool,
    rotary: bool,
    key_bias: bool,
) -> Matrix {
    let tokens = input.len();
    let mut queries = linear(input, heads * head_dim, true);
    let mut keys = linear(input, kv_heads * head_dim, key_bias);
    let values = linear(input, kv_heads * head_dim, true);
    if rotary {
        for matrix in [&mut queries, &mut keys] {
            for row in matrix.iter_mut() {
                let copy = row.clone();
                for (index, value) in row.iter_mut().enumerate() {
                    let partner = copy[index ^ 1];
                    *value = copy[index] * constant(0.8) + partner * constant(0.6);
                }
            }
        }
    }
    let scale = constant((head_dim as f64).sqrt());
    let visible = |query: usize, key: usize| match causal_window {
        None => true,
        Some(window) => key <= query && key + window > query,
    };
    let mut context = vec![Vec::new(); tokens];
    for head in 0..heads {
        let kv_head = head / (heads / kv_heads);
        let slice = |row: &Vec<Counted>, which: usize| {
            row[which * head_dim..(which + 1) * head_dim].to_vec()
        };
        for query in 0..tokens {
            let query_vector = slice(&queries[query], head);
            let keys_used: Vec<usize> = (0..tokens)
                .filter(|key| !exact || visible(query, *key))
                .collect();
            let mut scores: Vec<Counted> = keys_used
                .iter()
                .map(|key| {
                    let key_vector = slice(&keys[*key], kv_head);
                    let dot = (1..head_dim).fold(query_vector[0] * key_vector[0], |sum, index| {
                        sum + query_vector[index] * key_vector[index]
                    });
                    dot / scale
                })
                .collect();
            if !exact && causal_window.is_some() {
                for (position, key) in keys_used.iter().enumerate() {
                    // Building the mask: one comparison per entry.
                    record(|counts| &mut counts.compare);
                    if !visible(query, *key) {
                        scores[position] = constant(-1e30);
                    }
                }
            }
            let weights = softmax(&scores);
            for feature in 0..head_dim {
                let mut sum = weights[0] * values[keys_used[0]][kv_head * head_dim + feature];
                for (position, key) in keys_used.iter().enumerate().skip(1) {
                    sum = sum + weights[position] * values[*key][kv_head * head_dim + feature];
                }
                context[query].push(sum);
            }
        }
    }
    linear(&context, input[0].len(), true)
}

fn spec(op_lines: &str) -> Blueprint {
    let text = format!(
        "[dims]\nseq = 6\nd = 8\n\n[[node]]\nname = \"x\"\nop = \"input\"\nshape = [\"seq\", \"d\"]\n\n[[node]]\nname = \"op\"\ninput = \"x\"\n{op_lines}\n"
    );
    Blueprint::from_text("reference.toml", &text, &[]).unwrap()
}

fn counted(blueprint: &Blueprint, counting: Counting) -> Flops {
    let options = CostOptions {
        counting,
        ..CostOptions::default()
    };
    account(blueprint, options).total.flops
}

#[test]
fn linear_norms_activations_and_pooling() {
    let input = matrix(6, 8);
    let cases: Vec<(&str, Reference)> = vec![
        (
            "op = \"linear\"\nout = 5",
            Box::new(|| discard(linear(&input, 5, true))),
        ),
        (
            "op = \"linear\"\nout = 5\nbias = false",
            Box::new(|| discard(linear(&input, 5, false))),
        ),
        (
            "op = \"layer_norm\"",
            Box::new(|| discard(layer_norm(&input, true))),
        ),
        (
            "op = \"layer_norm\"\nbias = false",
            Box::new(|| discard(layer_norm(&input, false))),
        ),
        ("op = \"rms_norm\"", Box::new(|| discard(rms_norm(&input)))),
        (
            "op = \"softmax\"",
            Box::new(|| input.iter().for_each(|row| discard(softmax(row)))),
        ),
        (
            "op = \"activation\"\nfunction = \"gelu\"",
            Box::new(|| {
                input
                    .iter()
                    .flatten()
                    .for_each(|value| discard(gelu(*value)))
            }),
        ),
        (
            "op = \"activation\"\nfunction = \"gelu_tanh\"",
            Box::new(|| {
                input
                    .iter()
                    .flatten()
                    .for_each(|value| discard(gelu_tanh(*value)))
            }),
        ),
        (
            "op = \"activation\"\nfunction = \"silu\"",
            Box::new(|| {
                input
                    .iter()
                    .flatten()
                    .for_each(|value| discard(silu(*value)))
            }),
        ),
        (
            "op = \"activation\"\nfunction = \"relu\"",
            Box::new(|| {
                input
                    .iter()
                    .flatten()
                    .for_each(|value| discard(value.max(constant(0.0))))
            }),
        ),
        (
            "op = \"pool\"\nkind = \"mean\"",
            Box::new(|| {
                let mut sums = input[0].clone();
                for row in &input[1..] {
                    for (sum, value) in sums.iter_mut().zip(row) {
                        *sum = *sum + *value;
                    }
                }
                sums.iter().for_each(|sum| discard(*sum / constant(6.0)));
            }),
        ),
        (
            "op = \"feed_forward\"\nhidden = 12\nactivation = \"silu\"\ngated = true\nbias = false",
            Box::new(|| {
                let gate = linear(&input, 12, false);
                let up = linear(&input, 12, false);
                let hidden: Matrix = gate
                    .iter()
                    .zip(&up)
                    .map(|(gate_row, up_row)| {
                        gate_row
                            .iter()
                            .zip(up_row)
                            .map(|(g, u)| silu(*g) * *u)
                            .collect()
                    })
                    .collect();
                discard(linear(&hidden, 8, false));
            }),
        ),
    ];
    for (lines, run) in cases {
        take_counts();
        run();
        let reference = take_counts();
        assert_eq!(counted(&spec(lines), Counting::Dense), reference, "{lines}");
    }
}

#[test]
fn attention_dense_exact_windowed_grouped_rotary() {
    let input = matrix(6, 8);
    for (lines, window, rotary, kv_heads) in [
        ("heads = 2", None, false, 2),
        ("heads = 2\nkey_bias = false", None, false, 2),
        (
            "heads = 2\nmask = \"causal\"",
            Some(usize::MAX / 2),
            false,
            2,
        ),
        (
            "heads = 2\nmask = \"window\"\nwindow = 3",
            Some(3),
            false,
            2,
        ),
        (
            "heads = 4\nkv_heads = 2\nmask = \"causal\"\nrotary = true",
            Some(usize::MAX / 2),
            true,
            2,
        ),
    ] {
        let heads: usize = lines
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("heads = ")
            .parse()
            .unwrap();
        let blueprint = spec(&format!("op = \"attention\"\n{lines}"));
        for (counting, exact) in [(Counting::Dense, false), (Counting::Exact, true)] {
            take_counts();
            discard(attention(
                &input,
                heads,
                kv_heads,
                8 / heads,
                window,
                exact,
                rotary,
                !lines.contains("key_bias = false"),
            ));
            let reference = take_counts();
            assert_eq!(
                counted(&blueprint, counting),
                reference,
                "{lines}, {counting:?}"
            );
        }
    }
}
