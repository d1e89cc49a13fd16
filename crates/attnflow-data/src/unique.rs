//! Memory-lean sets for `unique` constraints over millions of records.
//!
//! Integers are kept exactly in a compressed bitmap (the idea of Roaring
//! bitmaps: 2^16-value chunks stored as a sorted array while sparse and as a
//! bitmap once dense), so ten million sequential ids take about 1.3 MB
//! instead of the 160+ MB of a `HashSet<i64>`. Other values are kept as
//! 64-bit hashes: two different values collide with probability about
//! n² / 2⁶⁵ (under 3·10⁻⁶ for ten million values); a collision would
//! quarantine a record as a duplicate, never drop it.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A fast, deterministic hasher for in-process sets keyed by values from
/// the schema or by integer chunks (SipHash's flooding resistance buys
/// nothing there and costs a third of the check's time).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        let mut hash = self.0;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^ (hash >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_i64(&mut self, value: i64) {
        self.write_u64(value as u64);
    }
}

/// `HashSet` with [`FastHasher`].
pub type FastSet<T> = HashSet<T, BuildHasherDefault<FastHasher>>;
/// `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

const SPARSE_LIMIT: usize = 4096;

enum Chunk {
    Sparse(Vec<u16>),
    Dense(Box<[u64; 1024]>),
}

impl Chunk {
    /// Inserts `low`; false when it was already present.
    fn insert(&mut self, low: u16) -> bool {
        match self {
            // Values often come in increasing order: append without a search.
            Chunk::Sparse(values)
                if values.len() < SPARSE_LIMIT && values.last().is_none_or(|&last| last < low) =>
            {
                values.push(low);
                true
            }
            Chunk::Sparse(values) => match values.binary_search(&low) {
                Ok(_) => false,
                Err(position) => {
                    if values.len() >= SPARSE_LIMIT {
                        let mut bits = Box::new([0u64; 1024]);
                        for &value in values.iter() {
                            bits[usize::from(value) >> 6] |= 1 << (value & 63);
                        }
                        *self = Chunk::Dense(bits);
                        return self.insert(low);
                    }
                    values.insert(position, low);
                    true
                }
            },
            Chunk::Dense(bits) => {
                let word = &mut bits[usize::from(low) >> 6];
                let mask = 1u64 << (low & 63);
                let fresh = *word & mask == 0;
                *word |= mask;
                fresh
            }
        }
    }

    fn contains(&self, low: u16) -> bool {
        match self {
            Chunk::Sparse(values) => values.binary_search(&low).is_ok(),
            Chunk::Dense(bits) => bits[usize::from(low) >> 6] & (1 << (low & 63)) != 0,
        }
    }
}

/// An exact set of i64 values, compressed by 2^16-value chunks.
#[derive(Default)]
pub struct IntegerSet {
    /// Chunk index by the value's high bits.
    index: FastMap<i64, usize>,
    chunks: Vec<Chunk>,
    /// The chunk used last, as (high bits, index): ids often come in order.
    last: Option<(i64, usize)>,
    length: usize,
}

impl IntegerSet {
    /// Inserts `value`; false when it was already present.
    pub fn insert(&mut self, value: i64) -> bool {
        let high = value >> 16;
        let low = (value & 0xffff) as u16;
        let chunk = match self.last {
            Some((last, chunk)) if last == high => chunk,
            _ => {
                let chunks = &mut self.chunks;
                let chunk = *self.index.entry(high).or_insert_with(|| {
                    chunks.push(Chunk::Sparse(Vec::new()));
                    chunks.len() - 1
                });
                self.last = Some((high, chunk));
                chunk
            }
        };
        let fresh = self.chunks[chunk].insert(low);
        self.length += usize::from(fresh);
        fresh
    }

    /// Whether `value` is present.
    pub fn contains(&self, value: i64) -> bool {
        let high = value >> 16;
        let chunk = match self.last {
            Some((last, chunk)) if last == high => Some(chunk),
            _ => self.index.get(&high).copied(),
        };
        chunk.is_some_and(|chunk| self.chunks[chunk].contains((value & 0xffff) as u16))
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.length
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }
}

/// The seen values of one `unique` field.
#[derive(Default)]
pub struct UniqueSet {
    integers: IntegerSet,
    hashes: FastSet<u64>,
}

/// A stable 64-bit hash of `value` (FNV-1a then a murmur finaliser: fast,
/// deterministic across runs, well mixed for HyperLogLog and sets).
pub fn stable_hash(value: &impl Hash) -> u64 {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            let mut hash = self.0;
            hash ^= hash >> 33;
            hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
            hash ^= hash >> 33;
            hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            hash ^ (hash >> 33)
        }
        fn write(&mut self, bytes: &[u8]) {
            for &byte in bytes {
                self.0 ^= u64::from(byte);
                self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    let mut hasher = Fnv(0xcbf2_9ce4_8422_2325);
    value.hash(&mut hasher);
    hasher.finish()
}

impl UniqueSet {
    /// Inserts an integer; false when seen before.
    pub fn insert_integer(&mut self, value: i64) -> bool {
        self.integers.insert(value)
    }

    /// Whether an integer was seen.
    pub fn contains_integer(&self, value: i64) -> bool {
        self.integers.contains(value)
    }

    /// Inserts a non-integer value by its stable hash; false when seen.
    pub fn insert_hash(&mut self, hash: u64) -> bool {
        self.hashes.insert(hash)
    }

    /// Whether a hash was seen.
    pub fn contains_hash(&self, hash: u64) -> bool {
        self.hashes.contains(&hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn integer_set_matches_a_hash_set(values in proptest::collection::vec(prop_oneof![-5000i64..70000, any::<i64>()], 0..6000)) {
            let mut set = IntegerSet::default();
            let mut reference = HashSet::new();
            for value in values {
                prop_assert_eq!(set.insert(value), reference.insert(value));
                prop_assert!(set.contains(value));
            }
            prop_assert_eq!(set.len(), reference.len());
        }
    }

    #[test]
    fn dense_chunks_stay_exact() {
        let mut set = IntegerSet::default();
        for value in 0..100_000 {
            assert!(set.insert(value * 3));
        }
        for value in 0..300_000 {
            assert_eq!(set.contains(value), value % 3 == 0, "{value}");
        }
        assert!(!set.insert(2997));
    }
}
