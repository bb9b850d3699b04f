//! The keys file: parsing, and lookups that must agree with what was parsed.
use ngx_ollama_auth::keys::{KeySet, MAX_KEY_BYTES};
use ngx_ollama_auth::lines::{entries, first_field, has_control_bytes};
use ngx_ollama_auth::options::{parse_options, split_name_and_options};
use ngx_ollama_auth::watch::Parse;

fn main() {
    afl::fuzz!(|content: &[u8]| {
        let (keys, warnings) = KeySet::parse(content);
        assert!(warnings.iter().all(|w| w.line >= 1));
        for (_, line) in entries(content) {
            let (key, rest) = first_field(line);
            // A line whose options do not parse is skipped: its key admits no one through it.
            let options_parse = parse_options(&split_name_and_options(rest).1).is_ok();
            if !has_control_bytes(line) && !key.starts_with(b"sha256:") && key.len() <= MAX_KEY_BYTES && options_parse {
                assert!(keys.lookup(key).is_some(), "a plain key from the file is found");
                assert!(keys.lookup(key).is_some(), "and found again, from the cache");
            }
        }
        let _ = keys.lookup(content);
    });
}
