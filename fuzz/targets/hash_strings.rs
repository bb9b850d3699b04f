//! Password hash strings: parsing, and checking a password against what parsed (hashes cheap
//! enough to check thousands of times a second only, so the fuzzer keeps its pace).
use ngx_ollama_auth::hashes::PasswordHash;

fn cheap(hash: &PasswordHash) -> bool {
    match hash {
        PasswordHash::Bcrypt(text) => text.get(4..6) == Some("04"),
        PasswordHash::ShaCrypt { rounds, .. } => *rounds <= 5_000,
        _ => true,
    }
}

fn main() {
    afl::fuzz!(|text: &[u8]| {
        if let Ok(hash) = PasswordHash::parse(text) {
            if cheap(&hash) {
                let _ = hash.verify(text);
                let _ = hash.verify(b"");
                let _ = hash.verify(b"password\0with nul");
            }
        }
    });
}
