//! Byte search a word or a vector at a time: the end of a run of plain JSON string text, and
//! the first of a few bytes. The JSON validator and the answer scanner (`usage`) share it; it
//! holds the library's only `unsafe` (SSE2 loads, which every x86_64 processor has).

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// Flags (high bit) the bytes of `word` below `limit` (at most 0x80). A borrow can only flag a
/// byte above one that really is below the limit, so the lowest flag is exact.
fn bytes_below(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGHS
}

/// The bytes that end a run of plain string text: `"`, `\` and control bytes.
fn string_stoppers(word: u64) -> u64 {
    bytes_below(word ^ (ONES * u64::from(b'"')), 1)
        | bytes_below(word ^ (ONES * u64::from(b'\\')), 1)
        | bytes_below(word, 0x20)
}

fn is_string_stopper(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The index of the first `"`, `\` or control byte at or after `from`, eight bytes a step (a
/// 20 MB base64 image is one long run of plain text), and whether a byte above 0x7f comes
/// before it: only then does the string need a UTF-8 check.
pub(crate) fn skip_plain_text(bytes: &[u8], from: usize) -> (usize, bool) {
    let (mut i, mut high_bits) = skip_plain_text_wide(bytes, from);
    if i < bytes.len() && is_string_stopper(bytes[i]) {
        return (i, high_bits != 0);
    }
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let stoppers = string_stoppers(word);
        if stoppers != 0 {
            let below_first_stopper = (stoppers & stoppers.wrapping_neg()) - 1;
            high_bits |= word & below_first_stopper & HIGHS;
            return (i + stoppers.trailing_zeros() as usize / 8, high_bits != 0);
        }
        high_bits |= word & HIGHS;
        i += 8;
    }
    while i < bytes.len() && !is_string_stopper(bytes[i]) {
        high_bits |= u64::from(bytes[i] & 0x80);
        i += 1;
    }
    (i, high_bits != 0)
}

/// The index of the first byte at or after `from` that is one of `set`, or `bytes.len()`:
/// sixteen bytes a step with SSE2 on x86_64 (the NDJSON lines of a streamed answer are mostly
/// runs of plain text between a few quotes and brackets).
pub(crate) fn find_any<const N: usize>(bytes: &[u8], from: usize, set: [u8; N]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
        // The set's bytes must not be 0: the last block is padded with zeros.
        debug_assert!(!set.contains(&0));
        let hits = |block: *const u8| {
            // SAFETY: SSE2 is part of the x86_64 baseline; the caller passes 16 readable bytes.
            unsafe {
                let chunk = _mm_loadu_si128(block.cast());
                let mut found = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(set[0] as i8));
                for &b in &set[1..] {
                    found = _mm_or_si128(found, _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b as i8)));
                }
                _mm_movemask_epi8(found) as u32
            }
        };
        let mut i = from;
        while i + 16 <= bytes.len() {
            // bytes[i..i + 16] is inside the slice (the loop condition).
            let found = hits(bytes[i..].as_ptr());
            if found != 0 {
                return i + found.trailing_zeros() as usize;
            }
            i += 16;
        }
        if i < bytes.len() {
            let mut last = [0u8; 16];
            last[..bytes.len() - i].copy_from_slice(&bytes[i..]);
            let found = hits(last.as_ptr());
            if found != 0 {
                return i + found.trailing_zeros() as usize;
            }
        }
        bytes.len().max(from)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut i = from;
        while i < bytes.len() && !set.contains(&bytes[i]) {
            i += 1;
        }
        i
    }
}

/// Bit `k` set where `bytes[from + k]` (k < 64) is one of `set`: sixty-four bytes looked at in
/// four SSE2 steps on x86_64, for a caller that walks many stops close together.
pub(crate) fn mask_of<const N: usize>(bytes: &[u8], from: usize, set: [u8; N]) -> u64 {
    let end = bytes.len().min(from.saturating_add(64));
    let len = end.saturating_sub(from);
    // A whole block is read where it is; the last, shorter one from a zero-padded copy (the
    // padding matches only if the set has 0).
    let mut padded = [0u8; 64];
    let block: &[u8] = if len == 64 {
        &bytes[from..end]
    } else {
        padded[..len].copy_from_slice(&bytes[from.min(end)..end]);
        &padded
    };
    let mut mask = 0u64;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
        for part in 0..4 {
            // SAFETY: SSE2 is part of the x86_64 baseline; `block` is 64 bytes long, and the load
            // reads block[16 * part..][..16].
            let bits = unsafe {
                let chunk = _mm_loadu_si128(block.as_ptr().add(16 * part).cast());
                let mut found = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(set[0] as i8));
                for &b in &set[1..] {
                    found = _mm_or_si128(found, _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b as i8)));
                }
                _mm_movemask_epi8(found) as u32 as u64
            };
            mask |= bits << (16 * part);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (k, b) in block.iter().enumerate() {
        if set.contains(b) {
            mask |= 1 << k;
        }
    }
    if len < 64 {
        mask &= (1u64 << len) - 1;
    }
    mask
}

/// [`skip_plain_text`] sixteen bytes a step with SSE2, which every x86_64 processor has: about
/// half an instruction a byte, where a request body's prompt or image is most of its bytes.
/// Answers where it stopped (a stopper, or fewer than sixteen bytes left) and the high bits of
/// the bytes before that.
#[cfg(target_arch = "x86_64")]
fn skip_plain_text_wide(bytes: &[u8], from: usize) -> (usize, u64) {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_setzero_si128,
    };
    let mut i = from;
    let mut high = 0u32;
    while i + 16 <= bytes.len() {
        // SAFETY: SSE2 is part of the x86_64 baseline; the unaligned load reads bytes[i..i + 16],
        // which the loop condition keeps inside the slice.
        let (stoppers, high_bytes) = unsafe {
            let chunk = _mm_loadu_si128(bytes.as_ptr().add(i).cast());
            let quote = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8));
            // A byte below 0x20 is one whose top three bits are all clear.
            let control = _mm_cmpeq_epi8(_mm_and_si128(chunk, _mm_set1_epi8(0xe0u8 as i8)), _mm_setzero_si128());
            let stoppers = _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32;
            (stoppers, _mm_movemask_epi8(chunk) as u32)
        };
        if stoppers != 0 {
            high |= high_bytes & ((stoppers & stoppers.wrapping_neg()) - 1);
            return (i + stoppers.trailing_zeros() as usize, u64::from(high != 0) * HIGHS);
        }
        high |= high_bytes;
        i += 16;
    }
    (i, u64::from(high != 0) * HIGHS)
}

#[cfg(not(target_arch = "x86_64"))]
fn skip_plain_text_wide(_bytes: &[u8], from: usize) -> (usize, u64) {
    (from, 0)
}
