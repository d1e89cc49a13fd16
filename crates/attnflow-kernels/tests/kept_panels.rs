//! A packed matrix keeps its `f32` panels from its second product with
//! several input rows on, within the process-wide limit, and every product
//! gives the same bits whether its panels were kept or made on demand. Its
//! own test binary: the kept bytes are counted process-wide.

use attnflow_kernels::packed::{kept_panel_bytes, set_kept_panel_limit, PackedMatrix, Packing};

/// A Q4_1 matrix of `rows × columns` with varied blocks.
fn q4_1(rows: usize, columns: usize, seed: u32) -> PackedMatrix {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut bytes = Vec::new();
    for _ in 0..rows * columns / 32 {
        let scale = half::f16::from_f32((next() % 1000) as f32 / 7000.0 + 0.01);
        let minimum = half::f16::from_f32((next() % 1000) as f32 / 7000.0 - 0.07);
        bytes.extend(scale.to_bits().to_le_bytes());
        bytes.extend(minimum.to_bits().to_le_bytes());
        bytes.extend((0..16).map(|_| next() as u8));
    }
    PackedMatrix::from_bytes(rows, columns, Packing::Q4_1, bytes).unwrap()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|value| value.to_bits()).collect()
}

#[test]
fn panels_are_kept_from_the_second_product_within_the_limit() {
    let (rows, columns, n) = (130, 96, 20);
    let x: Vec<f32> = (0..n * columns)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let matrix = q4_1(rows, columns, 1);
    let panel_bytes = 3 * 64 * columns * 4;

    // One input row never makes panels; the first product of many rows
    // makes them per task and keeps none.
    let mut one = vec![0f32; rows];
    matrix.matmul(&x[..columns], 1, &mut one);
    let first = matrix.matmul_new(&x, n);
    assert!(!matrix.keeps_panels());
    assert_eq!(kept_panel_bytes(), 0);
    // Expected values: each row dequantized, dotted in f64.
    let weights = matrix.to_f32();
    for (t, row) in first.chunks_exact(rows).enumerate() {
        for (o, &got) in row.iter().enumerate() {
            let want: f64 = (0..columns)
                .map(|p| f64::from(x[t * columns + p]) * f64::from(weights[o * columns + p]))
                .sum();
            assert!(
                (f64::from(got) - want).abs() < 1e-4,
                "({t}, {o}): {got}, {want}"
            );
        }
    }

    // The second keeps them, and the products give the same bits.
    let second = matrix.matmul_new(&x, n);
    assert!(matrix.keeps_panels());
    assert_eq!(kept_panel_bytes(), panel_bytes);
    assert_eq!(bits(&second), bits(&first));
    let mut into = vec![0f32; n * rows];
    matrix.matmul(&x, n, &mut into);
    assert_eq!(bits(&into), bits(&first));
    let other = q4_1(64, columns, 2);
    let alone = other.matmul_new(&x, n);
    let group = PackedMatrix::matmul_group_new(&[&matrix, &other], &x, n);
    assert_eq!(bits(&group[0]), bits(&first));
    assert_eq!(bits(&group[1]), bits(&alone));
    assert!(other.keeps_panels(), "the group was its second product");
    assert_eq!(kept_panel_bytes(), panel_bytes + 64 * columns * 4);

    // A clone starts over; dropping a matrix gives its bytes back.
    let clone = matrix.clone();
    assert!(!clone.keeps_panels());
    drop(other);
    assert_eq!(kept_panel_bytes(), panel_bytes);

    // Past the limit, nothing more is kept and the bits stay the same.
    set_kept_panel_limit(panel_bytes + 1000);
    clone.matmul_new(&x, n);
    assert_eq!(bits(&clone.matmul_new(&x, n)), bits(&first));
    assert!(!clone.keeps_panels());
    assert_eq!(kept_panel_bytes(), panel_bytes);
    drop(matrix);
    assert_eq!(kept_panel_bytes(), 0);
}
