//! The fused attention against a plain f64 reference: forward, weights and
//! backward, with causal offsets, key padding, grouped heads, strided
//! (packed QKV) layouts, tiles small enough to cross many of them, and
//! every SIMD path this machine has; and the same bits on any thread count.

mod common;

use attnflow_kernels::{
    attention_backward, attention_forward, attention_forward_packed, attention_weights_forward,
    key_bias_from_lengths, AttentionProblem, HeadsLayout, SimdPath, Tiling,
};
use common::{bits, on_threads, Seeded};

/// One case: sizes, masks, and its inputs in contiguous head layout.
#[derive(Clone, Debug)]
struct Case {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    n: usize,
    m: usize,
    d: usize,
    dv: usize,
    causal: Option<usize>,
    /// Real keys per batch (the rest padding), if masked.
    lengths: Option<Vec<usize>>,
}

impl Case {
    fn new(n: usize, m: usize, d: usize) -> Self {
        Self {
            batch: 1,
            heads: 1,
            kv_heads: 1,
            n,
            m,
            d,
            dv: d,
            causal: None,
            lengths: None,
        }
    }

    fn inputs(&self, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = Seeded(seed);
        (
            rng.values(self.batch * self.heads * self.n * self.d, 3.0),
            rng.values(self.batch * self.kv_heads * self.m * self.d, 1.0),
            rng.values(self.batch * self.kv_heads * self.m * self.dv, 1.0),
        )
    }

    fn bias(&self) -> Option<Vec<f32>> {
        self.lengths.as_ref().map(|lengths| {
            let mut bias = Vec::new();
            key_bias_from_lengths(&mut bias, lengths, self.m);
            bias
        })
    }

    fn problem<'a>(
        &self,
        bias: Option<&'a [f32]>,
        path: SimdPath,
        tiling: Tiling,
    ) -> AttentionProblem<'a> {
        AttentionProblem {
            batch: self.batch,
            heads: self.heads,
            kv_heads: self.kv_heads,
            n: self.n,
            m: self.m,
            d: self.d,
            dv: self.dv,
            scale: 1.0 / (self.d as f32).sqrt(),
            causal: self.causal,
            key_bias: bias,
            tiling,
            path,
        }
    }

    /// Whether query `i` of batch `b` may see key `j`.
    fn visible(&self, b: usize, i: usize, j: usize) -> bool {
        self.causal.is_none_or(|offset| j <= i + offset)
            && self.lengths.as_ref().is_none_or(|lengths| j < lengths[b])
    }

    /// f64 reference: (output, weights, lse), contiguous.
    fn reference(&self, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let Case {
            batch,
            heads,
            kv_heads,
            n,
            m,
            d,
            dv,
            ..
        } = *self;
        let scale = 1.0 / (d as f64).sqrt();
        let mut out = vec![0f64; batch * heads * n * dv];
        let mut weights = vec![0f64; batch * heads * n * m];
        let mut lse = vec![f64::NEG_INFINITY; batch * heads * n];
        for b in 0..batch {
            for h in 0..heads {
                let kv = h / (heads / kv_heads);
                for i in 0..n {
                    let qi = &q[((b * heads + h) * n + i) * d..][..d];
                    let scores: Vec<Option<f64>> = (0..m)
                        .map(|j| {
                            self.visible(b, i, j).then(|| {
                                let kj = &k[((b * kv_heads + kv) * m + j) * d..][..d];
                                scale
                                    * qi.iter()
                                        .zip(kj)
                                        .map(|(a, b)| f64::from(*a) * f64::from(*b))
                                        .sum::<f64>()
                            })
                        })
                        .collect();
                    let max = scores
                        .iter()
                        .flatten()
                        .fold(f64::NEG_INFINITY, |a, b| a.max(*b));
                    if max == f64::NEG_INFINITY {
                        continue;
                    }
                    let total: f64 = scores.iter().flatten().map(|s| (s - max).exp()).sum();
                    lse[(b * heads + h) * n + i] = max + total.ln();
                    for (j, s) in scores.iter().enumerate() {
                        let Some(s) = s else { continue };
                        let p = (s - max).exp() / total;
                        weights[((b * heads + h) * n + i) * m + j] = p;
                        let vj = &v[((b * kv_heads + kv) * m + j) * dv..][..dv];
                        for c in 0..dv {
                            out[((b * heads + h) * n + i) * dv + c] += p * f64::from(vj[c]);
                        }
                    }
                }
            }
        }
        (out, weights, lse)
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-3f64, |a, w| a.max(w.abs()));
    for (index, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}[{index}]: {g}");
        assert!(
            (f64::from(*g) - w).abs() <= 1e-5 * scale,
            "{what}[{index}]: got {g}, want {w}"
        );
    }
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        Case::new(1, 1, 8),
        Case::new(7, 7, 16),
        Case::new(129, 129, 32),
        Case::new(130, 70, 64),
        Case::new(33, 300, 128),
    ];
    let mut causal = Case::new(77, 77, 32);
    causal.causal = Some(0);
    cases.push(causal.clone());
    // Decoding with a cache: 5 new queries after 60 cached keys.
    let mut decode = Case::new(5, 65, 32);
    decode.causal = Some(60);
    decode.heads = 4;
    decode.kv_heads = 2;
    cases.push(decode);
    // A prefill after 20 cached keys: causal query blocks of 64 rows, the
    // last one short, each over only the keys it sees.
    let mut prefill = Case::new(150, 170, 16);
    prefill.causal = Some(20);
    prefill.heads = 3;
    prefill.kv_heads = 1;
    cases.push(prefill);
    // Padding, one sequence fully padded, grouped heads, dv ≠ d.
    let mut padded = Case::new(40, 40, 16);
    padded.batch = 3;
    padded.heads = 6;
    padded.kv_heads = 3;
    padded.dv = 24;
    padded.lengths = Some(vec![40, 17, 0]);
    cases.push(padded.clone());
    padded.causal = Some(0);
    cases.push(padded.clone());
    // Padding and causal over several query blocks.
    padded.n = 100;
    padded.m = 100;
    padded.lengths = Some(vec![100, 70, 0]);
    cases.push(padded);
    cases
}

#[test]
fn forward_matches_the_reference_on_every_path_and_tiling() {
    for case in cases() {
        let (q, k, v) = case.inputs(1);
        let bias = case.bias();
        let (want, _, want_lse) = case.reference(&q, &k, &v);
        for path in SimdPath::available() {
            for tiling in [
                Tiling::default(),
                Tiling {
                    query_block: 3,
                    key_block: 5,
                },
                Tiling {
                    query_block: 16,
                    key_block: 64,
                },
            ] {
                let problem = case.problem(bias.as_deref(), path, tiling);
                let mut out = vec![f32::NAN; want.len()];
                let mut lse = vec![0f32; want_lse.len()];
                attention_forward(
                    &problem,
                    (&q, HeadsLayout::contiguous(case.heads, case.n, case.d)),
                    (&k, HeadsLayout::contiguous(case.kv_heads, case.m, case.d)),
                    (&v, HeadsLayout::contiguous(case.kv_heads, case.m, case.dv)),
                    (
                        &mut out,
                        HeadsLayout::contiguous(case.heads, case.n, case.dv),
                    ),
                    Some(&mut lse),
                );
                let label = format!("{case:?} {path} {tiling:?}");
                assert_close(&format!("{label} output"), &out, &want);
                for (got, want) in lse.iter().zip(&want_lse) {
                    if *want == f64::NEG_INFINITY {
                        assert_eq!(
                            *got,
                            f32::NEG_INFINITY,
                            "{label}: lse of a query that sees nothing"
                        );
                    } else {
                        assert!(
                            (f64::from(*got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{label}: lse {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn every_path_gives_the_same_bits() {
    let mut case = Case::new(150, 150, 64);
    case.causal = Some(0);
    case.batch = 2;
    case.lengths = Some(vec![150, 99]);
    let (q, k, v) = case.inputs(2);
    let bias = case.bias();
    let run = |path| {
        let mut out = vec![0f32; q.len()];
        attention_forward(
            &case.problem(
                bias.as_deref(),
                path,
                Tiling {
                    query_block: 32,
                    key_block: 64,
                },
            ),
            (&q, HeadsLayout::contiguous(1, 150, 64)),
            (&k, HeadsLayout::contiguous(1, 150, 64)),
            (&v, HeadsLayout::contiguous(1, 150, 64)),
            (&mut out, HeadsLayout::contiguous(1, 150, 64)),
            None,
        );
        bits(&out)
    };
    let portable = run(SimdPath::Portable);
    for path in SimdPath::available() {
        assert_eq!(run(path), portable, "{path}");
    }
}

#[test]
fn packed_qkv_rows_in_and_token_rows_out_give_the_same_bits() {
    // Q, K, V read straight from a (batch·n, 3·heads·d) product, the output
    // written as (batch·n, heads·d) token rows.
    let (batch, heads, n, d) = (2, 3, 45, 16);
    let width = heads * d;
    let mut rng = Seeded(3);
    let packed = rng.values(batch * n * 3 * width, 2.0);
    let lengths = vec![45, 30];
    let mut bias = Vec::new();
    key_bias_from_lengths(&mut bias, &lengths, n);
    let mut problem = AttentionProblem::new(batch, heads, n, d);
    problem.key_bias = Some(&bias);
    problem.tiling = Tiling {
        query_block: 8,
        key_block: 16,
    };
    let mut rows_out = vec![0f32; batch * n * width];
    attention_forward(
        &problem,
        (&packed, HeadsLayout::token_rows(n, 3 * width, d, 0)),
        (&packed, HeadsLayout::token_rows(n, 3 * width, d, width)),
        (&packed, HeadsLayout::token_rows(n, 3 * width, d, 2 * width)),
        (&mut rows_out, HeadsLayout::token_rows(n, width, d, 0)),
        None,
    );
    let split = |part: usize| {
        let mut heads_layout = vec![0f32; batch * heads * n * d];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..n {
                    let from = (b * n + i) * 3 * width + part * width + h * d;
                    let to = ((b * heads + h) * n + i) * d;
                    heads_layout[to..to + d].copy_from_slice(&packed[from..from + d]);
                }
            }
        }
        heads_layout
    };
    let (q, k, v) = (split(0), split(1), split(2));
    let mut heads_out = vec![0f32; q.len()];
    let contiguous = HeadsLayout::contiguous(heads, n, d);
    attention_forward(
        &problem,
        (&q, contiguous),
        (&k, contiguous),
        (&v, contiguous),
        (&mut heads_out, contiguous),
        None,
    );
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..n {
                let row = (b * n + i) * width + h * d;
                let head_row = ((b * heads + h) * n + i) * d;
                assert_eq!(
                    bits(&rows_out[row..row + d]),
                    bits(&heads_out[head_row..head_row + d]),
                    "batch {b} head {h} row {i}"
                );
            }
        }
    }
}

#[test]
fn packed_sequences_give_each_sequence_alone_and_its_padded_batch() {
    // Sequences back to back in (rows, 3·width) QKV rows, no padding: each
    // gets the bits of its own batch-1 problem, and matches the padded
    // batch of all of them (whose masked keys add exact zeros, summed in
    // another order) to float rounding. Grouped heads, a 1-token and an
    // empty sequence, several query blocks, tiles and `gemm` products,
    // causal and not, every path.
    let (heads, kv_heads, d) = (4, 2, 16);
    let lengths = [45, 1, 0, 30, 17];
    let n = *lengths.iter().max().unwrap();
    let rows: usize = lengths.iter().sum();
    let (width, kv_width) = (heads * d, kv_heads * d);
    let row_width = width + 2 * kv_width;
    let packed = Seeded(11).values(rows * row_width, 2.0);
    let layouts = |rows_per_batch: usize| {
        (
            HeadsLayout::token_rows(rows_per_batch, row_width, d, 0),
            HeadsLayout::token_rows(rows_per_batch, row_width, d, width),
            HeadsLayout::token_rows(rows_per_batch, row_width, d, width + kv_width),
            HeadsLayout::token_rows(rows_per_batch, width, d, 0),
        )
    };
    // The same rows padded to (batch, n, row_width), padding rows zero.
    let mut padded = vec![0f32; lengths.len() * n * row_width];
    let mut first = 0;
    for (b, &length) in lengths.iter().enumerate() {
        padded[b * n * row_width..][..length * row_width]
            .copy_from_slice(&packed[first * row_width..(first + length) * row_width]);
        first += length;
    }
    let mut bias = Vec::new();
    key_bias_from_lengths(&mut bias, &lengths, n);
    let tilings = [
        Tiling {
            query_block: 8,
            key_block: 16,
        },
        Tiling {
            query_block: 16,
            key_block: 24,
        },
        Tiling::default(),
    ];
    for path in SimdPath::available() {
        for tiling in tilings {
            for causal in [None, Some(0)] {
                let mut problem = AttentionProblem::new(1, heads, n, d);
                (
                    problem.kv_heads,
                    problem.causal,
                    problem.tiling,
                    problem.path,
                ) = (kv_heads, causal, tiling, path);
                let (q, k, v, o) = layouts(rows);
                let mut out = vec![f32::NAN; rows * width];
                attention_forward_packed(
                    &problem,
                    &lengths,
                    (&packed, q),
                    (&packed, k),
                    (&packed, v),
                    (&mut out, o),
                );
                let (q, k, v, o) = layouts(n);
                let mut batch = AttentionProblem {
                    batch: lengths.len(),
                    key_bias: Some(&bias),
                    ..problem
                };
                let mut padded_out = vec![0f32; lengths.len() * n * width];
                attention_forward(
                    &batch,
                    (&padded, q),
                    (&padded, k),
                    (&padded, v),
                    (&mut padded_out, o),
                    None,
                );
                let mut first = 0;
                for (b, &length) in lengths.iter().enumerate() {
                    let rows_of = first * row_width..(first + length) * row_width;
                    let mut alone = vec![0f32; length * width];
                    (batch.batch, batch.n, batch.m, batch.key_bias) = (1, length, length, None);
                    attention_forward(
                        &batch,
                        (&packed[rows_of.clone()], q),
                        (&packed[rows_of.clone()], k),
                        (&packed[rows_of], v),
                        (&mut alone, o),
                        None,
                    );
                    let got = &out[first * width..(first + length) * width];
                    let what = format!("{path} {tiling:?} causal {causal:?} sequence {b}");
                    assert_eq!(bits(got), bits(&alone), "{what}");
                    let want: Vec<f64> = padded_out[b * n * width..][..length * width]
                        .iter()
                        .map(|&value| f64::from(value))
                        .collect();
                    assert_close(&what, got, &want);
                    first += length;
                }
            }
        }
    }
}

#[test]
fn materialised_weights_match_the_reference() {
    for case in cases() {
        let (q, k, v) = case.inputs(4);
        let bias = case.bias();
        let (want_out, want_weights, _) = case.reference(&q, &k, &v);
        let mut out = vec![0f32; want_out.len()];
        let mut weights = vec![f32::NAN; want_weights.len()];
        attention_weights_forward(
            &case.problem(bias.as_deref(), SimdPath::detect(), Tiling::default()),
            (&q, HeadsLayout::contiguous(case.heads, case.n, case.d)),
            (&k, HeadsLayout::contiguous(case.kv_heads, case.m, case.d)),
            (&v, HeadsLayout::contiguous(case.kv_heads, case.m, case.dv)),
            (
                &mut out,
                HeadsLayout::contiguous(case.heads, case.n, case.dv),
            ),
            &mut weights,
        );
        assert_close(&format!("{case:?} weights"), &weights, &want_weights);
        assert_close(&format!("{case:?} output"), &out, &want_out);
    }
}

/// f64 reference gradients of `Σ out ∘ upstream` for a case with
/// `kv_heads == heads`.
fn reference_gradients(
    case: &Case,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    upstream: &[f32],
) -> [Vec<f64>; 3] {
    let Case {
        batch,
        heads,
        n,
        m,
        d,
        dv,
        ..
    } = *case;
    let (_, weights, _) = case.reference(q, k, v);
    let scale = 1.0 / (d as f64).sqrt();
    let (mut dq, mut dk, mut dvv) = (
        vec![0f64; q.len()],
        vec![0f64; k.len()],
        vec![0f64; v.len()],
    );
    for head in 0..batch * heads {
        for i in 0..n {
            let p = &weights[(head * n + i) * m..][..m];
            let g = &upstream[(head * n + i) * dv..][..dv];
            let dp: Vec<f64> = (0..m)
                .map(|j| {
                    (0..dv)
                        .map(|c| f64::from(g[c]) * f64::from(v[(head * m + j) * dv + c]))
                        .sum()
                })
                .collect();
            let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
            for j in 0..m {
                for c in 0..dv {
                    dvv[(head * m + j) * dv + c] += p[j] * f64::from(g[c]);
                }
                let ds = p[j] * (dp[j] - delta) * scale;
                for c in 0..d {
                    dq[(head * n + i) * d + c] += ds * f64::from(k[(head * m + j) * d + c]);
                    dk[(head * m + j) * d + c] += ds * f64::from(q[(head * n + i) * d + c]);
                }
            }
        }
    }
    [dq, dk, dvv]
}

#[test]
fn backward_matches_the_reference_and_ignores_the_thread_count() {
    let mut causal = Case::new(100, 100, 16);
    causal.causal = Some(0);
    causal.heads = 2;
    causal.kv_heads = 2;
    let mut padded = Case::new(37, 70, 8);
    padded.batch = 2;
    padded.lengths = Some(vec![70, 20]);
    padded.dv = 12;
    for case in [causal, padded, Case::new(300, 300, 32)] {
        let (q, k, v) = case.inputs(5);
        let upstream = Seeded(6).values(case.batch * case.heads * case.n * case.dv, 1.0);
        let bias = case.bias();
        let want = reference_gradients(&case, &q, &k, &v, &upstream);
        for tiling in [
            Tiling {
                query_block: 16,
                key_block: 32,
            },
            Tiling::default(),
        ] {
            let problem = case.problem(bias.as_deref(), SimdPath::detect(), tiling);
            let run = |threads| {
                on_threads(threads, || {
                    let mut out = vec![0f32; upstream.len()];
                    let mut lse = vec![0f32; case.batch * case.heads * case.n];
                    let contiguous = |rows, width| HeadsLayout::contiguous(case.heads, rows, width);
                    attention_forward(
                        &problem,
                        (&q, contiguous(case.n, case.d)),
                        (&k, contiguous(case.m, case.d)),
                        (&v, contiguous(case.m, case.dv)),
                        (&mut out, contiguous(case.n, case.dv)),
                        Some(&mut lse),
                    );
                    let grads = attention_backward(&problem, &q, &k, &v, &out, &lse, &upstream);
                    [grads.q, grads.k, grads.v]
                })
            };
            let got = run(1);
            for (name, (got, want)) in ["dq", "dk", "dv"].iter().zip(got.iter().zip(&want)) {
                assert_close(&format!("{case:?} {tiling:?} {name}"), got, want);
            }
            let got_bits = got.map(|g| bits(&g));
            assert_eq!(run(2).map(|g| bits(&g)), got_bits, "{case:?}: 2 threads");
            assert_eq!(run(3).map(|g| bits(&g)), got_bits, "{case:?}: 3 threads");
        }
    }
}
