//! FNV-1a, 64 bits: the library's one unkeyed checksum (the limits state file's, and the digest
//! of an entry's limits). Not for anything an outsider chooses to collide: use SipHash there.

/// Where every FNV-1a 64 hash starts.
pub const FNV1A_64_START: u64 = 0xcbf2_9ce4_8422_2325;

const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// `hash` carried on over `bytes`: any one changed byte changes it (each step is a bijection of
/// the state). Hashing in pieces gives what hashing the whole would.
pub fn fnv1a_64_extend(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(FNV_64_PRIME))
}

/// FNV-1a 64 of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    fnv1a_64_extend(FNV1A_64_START, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_pieces() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a_64_extend(fnv1a_64(b"foo"), b"bar"), fnv1a_64(b"foobar"));
    }
}
