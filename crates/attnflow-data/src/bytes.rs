//! Byte scanning for the CSV hot path, 64 bytes at a time: bit masks of
//! where two chosen bytes occur (SSE2 compares on x86_64, which every
//! x86_64 processor has; a plain loop elsewhere), and searches and counts
//! built on them.

/// Bit `i` of the first mask is set where `chunk[i] == first`, of the
/// second where `chunk[i] == second`.
#[inline]
pub fn masks(chunk: &[u8; 64], first: u8, second: u8) -> (u64, u64) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        let mut found_first = 0u64;
        let mut found_second = 0u64;
        // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics
        // are always available; each load reads exactly the 16 bytes of
        // `part` (unaligned loads allow any address).
        unsafe {
            let first = _mm_set1_epi8(first as i8);
            let second = _mm_set1_epi8(second as i8);
            for (index, part) in chunk.chunks_exact(16).enumerate() {
                let bytes = _mm_loadu_si128(part.as_ptr().cast::<__m128i>());
                let shift = 16 * index;
                found_first |=
                    u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, first)) as u16) << shift;
                found_second |=
                    u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, second)) as u16) << shift;
            }
        }
        (found_first, found_second)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        portable_masks(chunk, first, second)
    }
}

/// [`masks`] without vector instructions (also the reference in tests).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn portable_masks(chunk: &[u8; 64], first: u8, second: u8) -> (u64, u64) {
    let mut found_first = 0u64;
    let mut found_second = 0u64;
    for (index, &byte) in chunk.iter().enumerate() {
        found_first |= u64::from(byte == first) << index;
        found_second |= u64::from(byte == second) << index;
    }
    (found_first, found_second)
}

/// [`masks`] of a window of at most 64 bytes (the missing tail reads as
/// bytes equal to neither, which only a zero byte could be: zero is
/// masked out explicitly).
#[inline]
pub fn window_masks(window: &[u8], first: u8, second: u8) -> (u64, u64) {
    match window.first_chunk::<64>() {
        Some(chunk) => masks(chunk, first, second),
        None => {
            let mut chunk = [0u8; 64];
            chunk[..window.len()].copy_from_slice(window);
            let (found_first, found_second) = masks(&chunk, first, second);
            let valid = (1u64 << window.len()) - 1;
            (found_first & valid, found_second & valid)
        }
    }
}

/// Position of the first `byte` in `haystack`.
pub fn find_byte(haystack: &[u8], byte: u8) -> Option<usize> {
    let mut base = 0;
    while base < haystack.len() {
        let (found, _) = window_masks(&haystack[base..], byte, byte);
        if found != 0 {
            return Some(base + found.trailing_zeros() as usize);
        }
        base += 64;
    }
    None
}

/// Position of the last `byte` in `haystack`.
pub fn rfind_byte(haystack: &[u8], byte: u8) -> Option<usize> {
    let mut end = haystack.len();
    while end > 0 {
        let start = end.saturating_sub(64);
        let (found, _) = window_masks(&haystack[start..end], byte, byte);
        if found != 0 {
            return Some(start + 63 - found.leading_zeros() as usize);
        }
        end = start;
    }
    None
}

/// How many times `byte` occurs in `haystack`.
pub fn count_byte(haystack: &[u8], byte: u8) -> usize {
    let mut chunks = haystack.chunks_exact(64);
    let mut count = 0;
    for chunk in &mut chunks {
        let chunk = chunk.first_chunk::<64>().unwrap_or(&[0; 64]);
        count += masks(chunk, byte, byte).0.count_ones() as usize;
    }
    count
        + chunks
            .remainder()
            .iter()
            .filter(|&&found| found == byte)
            .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn scans_agree_with_plain_loops(
            haystack in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b','), Just(0u8), any::<u8>()], 0..300),
            byte in prop_oneof![Just(b'\n'), Just(b','), Just(0u8), any::<u8>()],
        ) {
            prop_assert_eq!(find_byte(&haystack, byte), haystack.iter().position(|&found| found == byte));
            prop_assert_eq!(rfind_byte(&haystack, byte), haystack.iter().rposition(|&found| found == byte));
            prop_assert_eq!(count_byte(&haystack, byte), haystack.iter().filter(|&&found| found == byte).count());
            for window in haystack.chunks(64) {
                let (first, second) = window_masks(window, byte, b',');
                for (index, &found) in window.iter().enumerate() {
                    prop_assert_eq!(first >> index & 1 == 1, found == byte);
                    prop_assert_eq!(second >> index & 1 == 1, found == b',');
                }
                if let Some(chunk) = window.first_chunk::<64>() {
                    prop_assert_eq!(masks(chunk, byte, b','), portable_masks(chunk, byte, b','));
                }
            }
        }
    }
}
