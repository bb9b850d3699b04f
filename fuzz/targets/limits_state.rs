//! The limits state file, read back at start: any bytes are refused or read, never a panic, and
//! what is read writes back to bytes that read the same.
use ngx_ollama_auth::limits::{decode_state, encode_state};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(entries) = decode_state(data) {
            let again = encode_state(entries.iter().map(|(id, limits)| (id.as_slice(), limits)));
            assert_eq!(decode_state(&again).ok(), Some(entries));
        }
    });
}
