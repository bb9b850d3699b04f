//! The keys file: parsing, and lookups that must agree with what was parsed.
use ngx_ollama_auth::keys::{KeySet, MAX_KEY_BYTES};
use ngx_ollama_auth::lines::{entries, first_field, has_control_bytes};
use ngx_ollama_auth::watch::Parse;

fn main() {
    afl::fuzz!(|content: &[u8]| {
        let (keys, warnings) = KeySet::parse(content);
        assert!(warnings.iter().all(|w| w.line >= 1));
        for (_, line) in entries(content) {
            let (key, _) = first_field(line);
            if !has_control_bytes(line) && !key.starts_with(b"sha256:") && key.len() <= MAX_KEY_BYTES {
                assert!(keys.lookup(key).is_some(), "a plain key from the file is found");
                assert!(keys.lookup(key).is_some(), "and found again, from the cache");
            }
        }
        let _ = keys.lookup(content);
    });
}
