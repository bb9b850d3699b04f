//! The Authorization header: Bearer and Basic parsing, and Basic's base64 decoding.
use ngx_ollama_auth::credentials::{decode_basic, is_single_token, parse_authorization, Credential, DecodeBuffer};

fn main() {
    afl::fuzz!(|header: &[u8]| {
        match parse_authorization(header) {
            Credential::Bearer(token) => {
                assert!(!token.is_empty() && header.ends_with(token));
                assert_eq!(is_single_token(token), token.iter().all(|&b| b > b' ' && b != 0x7f));
                assert!(header[..6].eq_ignore_ascii_case(b"bearer"));
            }
            Credential::Basic(token) => {
                assert!(header[..5].eq_ignore_ascii_case(b"basic") && header.ends_with(token));
                let mut buffer = DecodeBuffer::new();
                if let Some(credential) = decode_basic(token, &mut buffer) {
                    assert!(!credential.user().is_empty() && !credential.user().contains(&b':'));
                }
            }
            Credential::None => {}
        }
        // Decoding arbitrary bytes as base64 never panics, whatever their length.
        let mut buffer = DecodeBuffer::new();
        if let Some(credential) = decode_basic(header, &mut buffer) {
            assert!(!credential.user().is_empty());
        }
    });
}
