//! Parsing of the `Authorization` request header: `Bearer <token>` and `Basic <base64>`.
//!
//! [`parse_authorization`] splits the scheme from the token; text before the scheme, an unknown
//! scheme or a missing token is [`Credential::None`]. A token must also be one run of visible
//! bytes ([`is_single_token`]): white space inside means two credentials in one header, which is
//! none. That check runs where a token is first trusted (a bearer token before its SHA-256
//! lookup; a Basic token fails base64 decoding), not on every request: a token remembered as
//! admitted has passed it already.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use zeroize::Zeroize;

/// Standard base64, padding optional, as clients differ on it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest decoded `user:password` accepted.
pub const MAX_BASIC_DECODED: usize = 4096;

/// Decoded credentials up to this size stay on the stack.
const SMALL_DECODED: usize = 128;

#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    Bearer(&'a [u8]),
    /// The base64 text; [`decode_basic`] turns it into a user and a password.
    Basic(&'a [u8]),
    None,
}

/// Room to decode a Basic credential into: on the stack for the usual short one, on the heap
/// for a long one.
pub struct DecodeBuffer {
    small: [u8; SMALL_DECODED],
    /// How much of `small` was written, so the wipe costs nothing when nothing was decoded.
    small_used: usize,
    large: Vec<u8>,
}

impl DecodeBuffer {
    pub fn new() -> Self {
        DecodeBuffer { small: [0; SMALL_DECODED], small_used: 0, large: Vec::new() }
    }
}

/// A decoded password must not outlive the request that sent it, in any memory.
impl Drop for DecodeBuffer {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl DecodeBuffer {
    fn wipe(&mut self) {
        self.small[..self.small_used].zeroize();
        self.large.zeroize(); // the whole allocation, then the length
    }
}

impl Default for DecodeBuffer {
    fn default() -> Self {
        Self::new()
    }
}

/// A decoded `user:password` pair, in a [`DecodeBuffer`].
#[derive(PartialEq, Eq)]
pub struct BasicCredential<'a> {
    user: &'a [u8],
    password: &'a [u8],
}

impl<'a> BasicCredential<'a> {
    pub fn user(&self) -> &'a [u8] {
        self.user
    }

    /// Everything after the first colon, NUL bytes included.
    pub fn password(&self) -> &'a [u8] {
        self.password
    }
}

impl std::fmt::Debug for BasicCredential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log or a panic message.
        f.debug_struct("BasicCredential").field("user", &String::from_utf8_lossy(self.user)).finish()
    }
}

/// Whether `header` starts with the ASCII word `lowercase` in any case, then a space: RFC 9110
/// and RFC 6750 separate scheme and credential with `1*SP`, not tabs (nginx's auth_basic agrees).
/// `b | 0x20` lowercases a letter and maps no other byte onto a lowercase letter.
fn starts_with_scheme(header: &[u8], lowercase: &[u8]) -> bool {
    header.len() > lowercase.len()
        && header[lowercase.len()] == b' '
        && header.iter().zip(lowercase).all(|(&a, &b)| a | 0x20 == b)
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// Whether any of the eight bytes is below `limit` (at most 0x80). Borrows can only flag bytes
/// above a byte that really is below the limit, so the answer for "any" is exact.
fn any_byte_below(word: u64, limit: u8) -> bool {
    word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGHS != 0
}

/// Whether a token is one run of visible bytes: no white space, no control character (bytes up
/// to 0x20, and 0x7f), at least one byte.
pub fn is_single_token(token: &[u8]) -> bool {
    !token.is_empty() && !has_blank_or_control(token)
}

/// Checked eight bytes at a time.
fn has_blank_or_control(token: &[u8]) -> bool {
    let bad = |chunk: &[u8]| {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        any_byte_below(word, 0x21) || any_byte_below(word ^ (ONES * 0x7f), 1)
    };
    if token.len() < 8 {
        return token.iter().any(|&b| b <= b' ' || b == 0x7f);
    }
    // Whole words, then the last eight bytes (overlapping) for whatever is left over.
    let mut chunks = token.chunks_exact(8);
    chunks.any(bad) || (!chunks.remainder().is_empty() && bad(&token[token.len() - 8..]))
}

/// Parses `<scheme> 1*SP <token>`. The token is not checked here: see the module's note.
pub fn parse_authorization(header: &[u8]) -> Credential<'_> {
    let (is_bearer, scheme_len) = if starts_with_scheme(header, b"bearer") {
        (true, 6)
    } else if starts_with_scheme(header, b"basic") {
        (false, 5)
    } else {
        return Credential::None;
    };
    let rest = &header[scheme_len..];
    let blanks = rest.iter().take_while(|&&b| b == b' ').count();
    let token = &rest[blanks..];
    if token.is_empty() {
        return Credential::None;
    }
    if is_bearer {
        Credential::Bearer(token)
    } else {
        Credential::Basic(token)
    }
}

/// Decodes a Basic token into `user:password`. Malformed base64, no colon, an empty user name
/// or more than [`MAX_BASIC_DECODED`] bytes is no credential.
pub fn decode_basic<'b>(token: &[u8], buffer: &'b mut DecodeBuffer) -> Option<BasicCredential<'b>> {
    let room = base64::decoded_len_estimate(token.len());
    if room > MAX_BASIC_DECODED {
        return None;
    }
    let out: &mut [u8] = if room <= SMALL_DECODED {
        buffer.small_used = room;
        &mut buffer.small[..room]
    } else {
        buffer.large.resize(room, 0);
        &mut buffer.large[..]
    };
    let len = BASE64.decode_slice(token, out).ok()?;
    let decoded = &out[..len];
    let colon = decoded.iter().position(|&b| b == b':')?;
    if colon == 0 {
        return None;
    }
    Some(BasicCredential { user: &decoded[..colon], password: &decoded[colon + 1..] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(header: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        match parse_authorization(header.as_bytes()) {
            Credential::Basic(token) => {
                let mut buffer = DecodeBuffer::new();
                decode_basic(token, &mut buffer).map(|c| (c.user().to_vec(), c.password().to_vec()))
            }
            _ => None,
        }
    }

    fn b64(text: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_with_one_or_more_spaces() {
        for header in ["Bearer k1", "bearer k1", "BEARER   k1", "bEaReR k1"] {
            assert_eq!(parse_authorization(header.as_bytes()), Credential::Bearer(b"k1"), "{header:?}");
        }
    }

    #[test]
    fn a_tab_does_not_separate_scheme_and_credential() {
        for header in ["Bearer\tk1", "bEaReR\tk1", "Basic\tdTpw", "Bearer\t k1"] {
            assert_eq!(parse_authorization(header.as_bytes()), Credential::None, "{header:?}");
        }
        // After the spaces, a tab is part of the token, which is then not a single token.
        assert_eq!(bearer_token(b"Bearer \tk1"), None);
    }

    /// What a gate sees: a bearer credential only if the token is also a single token.
    fn bearer_token(header: &[u8]) -> Option<&[u8]> {
        match parse_authorization(header) {
            Credential::Bearer(token) if is_single_token(token) => Some(token),
            _ => None,
        }
    }

    #[test]
    fn not_a_bearer_credential() {
        for header in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer\t",
            "Bearerk1",
            "Token k1",
            "xBearer k1",
            " Bearer k1",
            "Basic-ish k1",
            "Bearer k1 k2",
            "Bearer k1, Bearer k2",
            "Bearer k1,Basic Zm9vOmJhcg== x",
            "Bearer k\x01",
            "Bearer k\x7f1",
            "Bearer\x00 k1",
            "Bea\x02rer k1",
            "BearerX k1",
            "Beare k1",
        ] {
            assert_eq!(bearer_token(header.as_bytes()), None, "{header:?}");
        }
        for header in ["", "Bearer", "Bearer   ", "Token k1", "xBearer k1", "Beare k1", "Basic"] {
            assert_eq!(parse_authorization(header.as_bytes()), Credential::None, "{header:?}");
        }
    }

    #[test]
    fn every_control_and_blank_byte_is_refused_at_every_position() {
        for bad in (0u8..=0x20).chain([0x7f]) {
            // A space in front of the token only lengthens the run of spaces after the scheme.
            let first = if bad == b' ' { 1 } else { 0 };
            for position in first..20 {
                let mut token = b"abcdefghijklmnopqrst".to_vec();
                token[position] = bad;
                let header = [&b"Bearer "[..], &token].concat();
                assert_eq!(bearer_token(&header), None, "byte {bad:#x} at {position}");
            }
        }
        for good in (0x21u8..=0x7e).chain(0x80..=0xff) {
            let header = [&b"Bearer abcdefghij"[..], &[good], b"klmnop"].concat();
            assert!(bearer_token(&header).is_some(), "byte {good:#x}");
        }
    }

    #[test]
    fn bearer_token_keeps_non_ascii_bytes() {
        let header = "Bearer clé-ü".as_bytes();
        assert_eq!(parse_authorization(header), Credential::Bearer("clé-ü".as_bytes()));
        assert_eq!(bearer_token(b"Bearer k\x001"), None, "NUL is a control byte");
    }

    #[test]
    fn basic_splits_at_first_colon_and_keeps_nul() {
        let header = format!("Basic {}", b64(b"myuser:my:pass\0word"));
        assert_eq!(basic(&header), Some((b"myuser".to_vec(), b"my:pass\0word".to_vec())));
        let header = format!("basic   {}", b64("jürgen:pässwörd".as_bytes()));
        assert_eq!(basic(&header), Some(("jürgen".as_bytes().to_vec(), "pässwörd".as_bytes().to_vec())));
        let header = format!("Basic {}", b64(b"user:"));
        assert_eq!(basic(&header), Some((b"user".to_vec(), b"".to_vec())), "empty password parses");
    }

    #[test]
    fn long_credentials_decode_on_the_heap() {
        let long = format!("{}:{}", "u".repeat(500), "p".repeat(2000));
        let header = format!("Basic {}", b64(long.as_bytes()));
        assert_eq!(basic(&header), Some(("u".repeat(500).into_bytes(), "p".repeat(2000).into_bytes())));
    }

    #[test]
    fn basic_padding_is_optional() {
        let padded = b64(b"ab:c");
        assert!(padded.ends_with('='));
        assert_eq!(basic(&format!("Basic {}", padded.trim_end_matches('='))), Some((b"ab".to_vec(), b"c".to_vec())));
    }

    #[test]
    fn malformed_basic_is_no_credential() {
        let long = b64(&vec![b'a'; MAX_BASIC_DECODED + 10]);
        for header in [
            "Basic".to_string(),
            "Basic !!!!".to_string(),
            format!("Basic {}", b64(b"nocolon")),
            format!("Basic {}", b64(b":password")),
            format!("Basic {}===", b64(b"u:p")),
            format!("Basic {} extra", b64(b"u:p")),
            format!("Basic {long}"),
        ] {
            assert_eq!(basic(&header), None, "{header:?}");
        }
    }

    #[test]
    fn the_buffer_is_wiped_when_dropped() {
        let mut buffer = DecodeBuffer::new();
        decode_basic(b64(b"alice:s3cret").as_bytes(), &mut buffer).unwrap();
        assert!(buffer.small.windows(6).any(|w| w == b"s3cret"));
        let mut long = DecodeBuffer::new();
        decode_basic(b64(format!("bob:{}", "x".repeat(300)).as_bytes()).as_bytes(), &mut long).unwrap();
        assert!(long.large.windows(6).any(|w| w == b"xxxxxx"));
        // What Drop runs.
        buffer.wipe();
        long.wipe();
        assert!(buffer.small.iter().all(|&b| b == 0));
        assert!(long.large.is_empty());
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let mut buffer = DecodeBuffer::new();
        let c = decode_basic(b64(b"alice:s3cret").as_bytes(), &mut buffer).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("alice") && !shown.contains("s3cret"), "{shown}");
    }
}
