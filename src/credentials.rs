//! Parsing of the `Authorization` request header: `Bearer <token>` and `Basic <base64>`.
//!
//! Anything that is not exactly one credential of a known scheme is [`Credential::None`]: text
//! before the scheme, an unknown scheme, a missing token, white space inside the token (two
//! credentials in one header), malformed base64, no colon, an empty user name.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Standard base64, padding optional, as clients differ on it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest decoded `user:password` accepted; decoding happens on the stack, without allocation.
pub const MAX_BASIC_DECODED: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    Bearer(&'a [u8]),
    Basic(BasicCredential),
    None,
}

/// A decoded `user:password` pair, held in a fixed buffer.
pub struct BasicCredential {
    buffer: [u8; MAX_BASIC_DECODED],
    len: usize,
    colon: usize,
}

impl BasicCredential {
    pub fn user(&self) -> &[u8] {
        &self.buffer[..self.colon]
    }

    /// Everything after the first colon, NUL bytes included.
    pub fn password(&self) -> &[u8] {
        &self.buffer[self.colon + 1..self.len]
    }
}

impl PartialEq for BasicCredential {
    fn eq(&self, other: &Self) -> bool {
        self.user() == other.user() && self.password() == other.password()
    }
}

impl Eq for BasicCredential {}

impl std::fmt::Debug for BasicCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log or a panic message.
        f.debug_struct("BasicCredential").field("user", &String::from_utf8_lossy(self.user())).finish()
    }
}

/// Splits `<scheme> 1*(SP / HTAB) <token>` and checks the token is one run of visible characters.
fn scheme_and_token(header: &[u8]) -> Option<(&[u8], &[u8])> {
    let scheme_end = header.iter().position(|&b| b == b' ' || b == b'\t')?;
    let (scheme, rest) = header.split_at(scheme_end);
    let token_start = rest.iter().position(|&b| b != b' ' && b != b'\t')?;
    let token = &rest[token_start..];
    if token.iter().all(|&b| b.is_ascii_graphic() || b >= 0x80) {
        Some((scheme, token))
    } else {
        None
    }
}

pub fn parse_authorization(header: &[u8]) -> Credential<'_> {
    let Some((scheme, token)) = scheme_and_token(header) else {
        return Credential::None;
    };
    if scheme.eq_ignore_ascii_case(b"Bearer") {
        Credential::Bearer(token)
    } else if scheme.eq_ignore_ascii_case(b"Basic") {
        decode_basic(token).map_or(Credential::None, Credential::Basic)
    } else {
        Credential::None
    }
}

fn decode_basic(token: &[u8]) -> Option<BasicCredential> {
    let mut credential = BasicCredential { buffer: [0; MAX_BASIC_DECODED], len: 0, colon: 0 };
    if base64::decoded_len_estimate(token.len()) > MAX_BASIC_DECODED {
        return None;
    }
    credential.len = BASE64.decode_slice(token, &mut credential.buffer).ok()?;
    credential.colon = credential.buffer[..credential.len].iter().position(|&b| b == b':')?;
    if credential.colon == 0 {
        return None;
    }
    Some(credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(header: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        match parse_authorization(header.as_bytes()) {
            Credential::Basic(c) => Some((c.user().to_vec(), c.password().to_vec())),
            _ => None,
        }
    }

    fn b64(text: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_with_one_or_more_spaces() {
        for header in ["Bearer k1", "bearer k1", "BEARER   k1", "bEaReR\tk1", "Bearer \t k1"] {
            assert_eq!(parse_authorization(header.as_bytes()), Credential::Bearer(b"k1"), "{header:?}");
        }
    }

    #[test]
    fn not_a_bearer_credential() {
        for header in [
            "", "Bearer", "Bearer ", "Bearer\t", "Bearerk1", "Token k1", "xBearer k1", " Bearer k1",
            "Basic-ish k1", "Bearer k1 k2", "Bearer k1, Bearer k2", "Bearer k1,Basic Zm9vOmJhcg== x",
            "Bearer k\x01", "Bearer k\x7f1",
        ] {
            assert_eq!(parse_authorization(header.as_bytes()), Credential::None, "{header:?}");
        }
    }

    #[test]
    fn bearer_token_keeps_non_ascii_bytes() {
        let header = "Bearer clé-ü".as_bytes();
        assert_eq!(parse_authorization(header), Credential::Bearer("clé-ü".as_bytes()));
        assert_eq!(parse_authorization(b"Bearer k\x001"), Credential::None, "NUL is a control byte");
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
    fn debug_output_never_shows_the_password() {
        let header = format!("Basic {}", b64(b"alice:s3cret"));
        let Credential::Basic(c) = parse_authorization(header.as_bytes()) else { panic!() };
        let shown = format!("{c:?}");
        assert!(shown.contains("alice") && !shown.contains("s3cret"), "{shown}");
    }
}
