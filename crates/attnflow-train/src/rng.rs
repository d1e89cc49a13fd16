//! A small seeded random number generator whose whole state can be written
//! into a checkpoint, so that a resumed run draws exactly the numbers an
//! uninterrupted run would have drawn.
//!
//! candle's CPU random tensors come from an unseeded thread-local generator;
//! everything random in training (initial weights, synthetic examples,
//! shuffles, dropout masks) therefore comes from here.

use serde::{Deserialize, Serialize};

/// xoshiro256** (Blackman and Vigna, 2018): fast, 256 bits of state,
/// passes BigCrush. The state is plain data and serialises as four numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    state: [u64; 4],
}

/// SplitMix64's output function; spreads a seed over the state and mixes
/// stream labels into seeds.
fn splitmix64(value: &mut u64) -> u64 {
    *value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *value;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a. Used for stream labels and as the checkpoint checksum:
/// each step is a bijection of the state, so any single changed byte
/// changes the digest.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl Rng {
    /// A generator seeded from one number.
    pub fn seeded(seed: u64) -> Self {
        let mut mix = seed;
        let state = [
            splitmix64(&mut mix),
            splitmix64(&mut mix),
            splitmix64(&mut mix),
            splitmix64(&mut mix),
        ];
        Self { state }
    }

    /// An independent generator for item `index` of the stream called
    /// `stream` under `seed`: the same triple always gives the same numbers,
    /// whatever else was drawn before (so example `i` of a task does not
    /// depend on how batches were cut).
    pub fn derive(seed: u64, stream: &str, index: u64) -> Self {
        let mut mix = seed ^ fnv1a64(stream.as_bytes()).rotate_left(17);
        let base = splitmix64(&mut mix);
        let mut mixed = base ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        Self::seeded(splitmix64(&mut mixed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.state[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let shifted = self.state[1] << 17;
        self.state[2] ^= self.state[0];
        self.state[3] ^= self.state[1];
        self.state[1] ^= self.state[2];
        self.state[0] ^= self.state[3];
        self.state[2] ^= shifted;
        self.state[3] = self.state[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..bound` without modulo bias (Lemire's method with
    /// rejection). `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "Rng::below needs a positive bound");
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A standard normal sample (Box-Muller; one sample per call keeps the
    /// state a pure function of the draws made).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // in (0, 1]: ln never sees 0
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            let pick = self.below(last as u64 + 1) as usize;
            items.swap(last, pick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_streams_differ() {
        let mut a = Rng::seeded(7);
        let mut b = Rng::seeded(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut x = Rng::derive(7, "train", 3);
        let mut y = Rng::derive(7, "valid", 3);
        let mut z = Rng::derive(7, "train", 4);
        let (x0, y0, z0) = (x.next_u64(), y.next_u64(), z.next_u64());
        assert_ne!(x0, y0);
        assert_ne!(x0, z0);
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut rng = Rng::seeded(1);
        let mut counts = [0usize; 10];
        for _ in 0..100_000 {
            counts[rng.below(10) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = Rng::seeded(2);
        let samples: Vec<f64> = (0..200_000).map(|_| rng.normal()).collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / samples.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
    }

    #[test]
    fn fnv_detects_any_single_byte_change() {
        let data: Vec<u8> = (0..=255u8).collect();
        let base = fnv1a64(&data);
        for index in 0..data.len() {
            let mut changed = data.clone();
            changed[index] ^= 0x10;
            assert_ne!(fnv1a64(&changed), base);
        }
    }
}
