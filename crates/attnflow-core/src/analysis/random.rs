//! Seeded pseudo-random numbers: every draw is a pure function of a seed
//! and a label, so seeded models and claim checks repeat exactly.

/// SplitMix64: a tiny, well-mixed generator; good enough for weights, and
/// it makes every draw a pure function of the seed.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// `count` normal draws scaled by `scale`.
    pub fn normals(&mut self, count: usize, scale: f64) -> Vec<f64> {
        (0..count).map(|_| self.normal() * scale).collect()
    }
}

/// A seed derived from the model seed and a label, so every weight and
/// every token's embedding has its own independent stream.
pub fn stream(seed: u64, label: &str) -> SplitMix {
    let mut hash = 0xCBF2_9CE4_8422_2325u64 ^ seed;
    for byte in label.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    SplitMix(hash)
}
