//! The bearer keys file and the in-memory set built from it.
//!
//! Each entry is `<key> [name] [option=value ...]`, or `sha256:<64 hex digits> [name] [...]` for
//! a key stored by its SHA-256. Options (`scopes=`, `models=`, `expires=`, limits) are read by
//! `options`; a line whose options do not parse is skipped, so a typo never widens a key. The table holds digests only and is looked up by digest, so a lookup takes the same
//! time however much of a real key a guess shares, and the file need not hold secrets at all.
//! Tokens already admitted are also remembered by a keyed digest (see `cache`), so that a
//! repeated token skips the SHA-256.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use sha2::{Digest as _, Sha256};

use crate::cache::VerifiedCache;
use crate::credentials::is_single_token;
use crate::lines::{entries, first_field, has_control_bytes};
use crate::options::{parse_options, split_name_and_options, EntryOptions};
use crate::watch::{Counted, LineWarning, Parse};

pub type Digest = [u8; 32];

/// How much of the digest the table keeps: 128 bits, far beyond any guessing, at half the memory.
type TableKey = [u8; 16];

/// Longest key accepted from the file; longer lines are skipped with a warning.
pub const MAX_KEY_BYTES: usize = 4096;
/// Longest name accepted; a longer one is cut at a character boundary.
pub const MAX_NAME_BYTES: usize = 256;

/// The table's keys are SHA-256 digests, uniformly random already: their first eight bytes are
/// the table hash, with nothing left to compute.
#[derive(Default)]
struct DigestPrefixHasher(u64);

impl Hasher for DigestPrefixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for (i, &b) in bytes.iter().take(8).enumerate() {
            self.0 |= u64::from(b) << (8 * i);
        }
    }

    fn write_usize(&mut self, _length_prefix: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Where a key's name sits in the shared name buffer; `len == 0` means unnamed.
#[derive(Clone, Copy, Debug)]
struct NameSpan {
    start: u32,
    len: u32,
}

/// One key of the table: its name, and its options (an index into `KeySet::options`, 0 for none).
#[derive(Clone, Copy, Debug)]
struct Entry {
    name: NameSpan,
    options: u32,
}

/// What an accepted token leads to: its entry, and the start of its digest for a fingerprint.
#[derive(Clone, Copy, Debug)]
pub struct KeyRef {
    entry: Entry,
    digest_prefix: [u8; 6],
}

pub struct KeySet {
    /// Keyed by the digest, which is uniformly random: its first bytes are the table hash.
    table: HashMap<TableKey, Entry, BuildHasherDefault<DigestPrefixHasher>>,
    names: Vec<u8>,
    /// The options of the keys that have some; index 0 stands for "none" and is never read.
    options: Vec<Rc<EntryOptions>>,
    /// Tokens already admitted, by keyed digest, so they skip the SHA-256 (thousands of
    /// instructions on a CPU without SHA extensions, against a few hundred for the cache).
    verified: RefCell<VerifiedCache<KeyRef>>,
}

/// Who a key belongs to: its name from the file, or else a fingerprint of its digest.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyLabel<'a> {
    Named(&'a [u8]),
    Fingerprint([u8; FINGERPRINT_LEN]),
}

impl KeyLabel<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            KeyLabel::Named(name) => name,
            KeyLabel::Fingerprint(fingerprint) => fingerprint,
        }
    }
}

pub const FINGERPRINT_LEN: usize = "sha256:".len() + 12;

/// `sha256:` and the first 12 hex digits of the key's SHA-256: enough to tell keys apart in a
/// log, far too little to give the key back.
fn fingerprint(digest_prefix: &[u8; 6]) -> [u8; FINGERPRINT_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; FINGERPRINT_LEN];
    out[..7].copy_from_slice(b"sha256:");
    for (i, byte) in digest_prefix.iter().enumerate() {
        out[7 + 2 * i] = HEX[usize::from(byte >> 4)];
        out[8 + 2 * i] = HEX[usize::from(byte & 0xf)];
    }
    out
}

pub fn sha256(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

fn table_key(digest: &Digest) -> TableKey {
    digest[..16].try_into().expect("16 of 32 bytes")
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Exactly 64 hex digits (`from_str_radix` would also take a sign: `+f` is 15).
fn parse_hex_digest(hex: &[u8]) -> Option<Digest> {
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(digest)
}

/// Cuts a name at most `MAX_NAME_BYTES` long, never inside a UTF-8 sequence.
fn bounded_name(name: &[u8]) -> &[u8] {
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let mut end = MAX_NAME_BYTES;
    while end > 0 && (name[end] & 0xc0) == 0x80 {
        end -= 1;
    }
    &name[..end]
}

/// The fingerprint of a key by its SHA-256, as `$ollama_auth_user` shows an unnamed key.
pub fn fingerprint_of(digest: &Digest) -> String {
    let prefix: [u8; 6] = digest[..6].try_into().expect("6 of 32 bytes");
    String::from_utf8(fingerprint(&prefix).to_vec()).expect("ASCII")
}

/// The digest a line's key field stands for: `sha256:<64 hex digits>` as written, else the
/// key's own SHA-256. The error is the warning for a line whose key field is neither.
pub fn key_digest(key: &[u8]) -> Result<Digest, &'static str> {
    if key.len() > MAX_KEY_BYTES {
        return Err("key longer than 4096 bytes");
    }
    match key.strip_prefix(b"sha256:") {
        Some(hex) => parse_hex_digest(hex).ok_or("sha256: must be followed by 64 hex digits"),
        None => Ok(sha256(key)),
    }
}

impl KeySet {
    /// Looks a presented token up: first among tokens already admitted (by keyed digest), then by
    /// the token's SHA-256. Neither lookup's time depends on how much of a
    /// key the token shares.
    pub fn find(&self, token: &[u8]) -> Option<KeyRef> {
        let cached = self.verified.borrow().get(token);
        let found = match cached {
            Some(found) => found,
            None => {
                // First sight of this token: it must be one token before it is trusted.
                if !is_single_token(token) {
                    return None;
                }
                let digest = sha256(token);
                let entry = *self.table.get(&table_key(&digest))?;
                let found = KeyRef { entry, digest_prefix: digest[..6].try_into().expect("6 bytes") };
                self.verified.borrow_mut().insert(token, found);
                found
            }
        };
        Some(found)
    }

    /// Who a found key belongs to, for `$ollama_auth_user`.
    pub fn label(&self, found: KeyRef) -> KeyLabel<'_> {
        let name = found.entry.name;
        if name.len == 0 {
            KeyLabel::Fingerprint(fingerprint(&found.digest_prefix))
        } else {
            let start = name.start as usize;
            KeyLabel::Named(&self.names[start..start + name.len as usize])
        }
    }

    /// The key's own fingerprint, named or not: what its limit counters are kept under (stable
    /// across restarts, unlike the keyed digests, and never the key).
    pub fn fingerprint(&self, found: KeyRef) -> [u8; FINGERPRINT_LEN] {
        fingerprint(&found.digest_prefix)
    }

    /// Whether some line has `tokens=`, `requests=` or `parallel=`.
    pub fn has_limits(&self) -> bool {
        self.options.iter().skip(1).any(|options| options.has_limits())
    }

    /// The key's options, if its line has any.
    pub fn options(&self, found: KeyRef) -> Option<&Rc<EntryOptions>> {
        match found.entry.options {
            0 => None,
            index => self.options.get(index as usize),
        }
    }

    pub fn lookup(&self, token: &[u8]) -> Option<KeyLabel<'_>> {
        self.find(token).map(|found| self.label(found))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl Counted for KeySet {
    fn entry_count(&self) -> usize {
        self.len()
    }
}

impl Parse for KeySet {
    const FILE_KIND: &'static str = "bearer keys file";
    const ENTRY_KIND: &'static str = "keys";

    fn parse(content: &[u8]) -> (Self, Vec<LineWarning>) {
        // Sized by entries, not lines: blank and comment lines must not make the table huge.
        let capacity = entries(content).count();
        let mut keys = KeySet {
            table: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            names: Vec::new(),
            options: vec![Rc::default()],
            verified: RefCell::new(VerifiedCache::new()),
        };
        let mut warnings = Vec::new();
        let mut warn = |line: usize, reason: &str| warnings.push(LineWarning { line, reason: reason.into() });

        for (line, text) in entries(content) {
            if has_control_bytes(text) {
                warn(line, "control character in line");
                continue;
            }
            let (key, rest) = first_field(text);
            let digest = match key_digest(key) {
                Ok(digest) => digest,
                Err(reason) => {
                    warn(line, reason);
                    continue;
                }
            };
            let (name, option_words) = split_name_and_options(rest);
            let options = match parse_options(&option_words) {
                Ok(options) => options,
                Err(error) => {
                    warn(line, &format!("{error}"));
                    continue;
                }
            };
            let name = bounded_name(&name);
            let span = NameSpan { start: keys.names.len() as u32, len: name.len() as u32 };
            match keys.table.entry(table_key(&digest)) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    warn(line, "duplicate key, the first entry is kept");
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    keys.names.extend_from_slice(name);
                    let options_index = if option_words.is_empty() {
                        0
                    } else {
                        keys.options.push(Rc::new(options));
                        (keys.options.len() - 1) as u32
                    };
                    slot.insert(Entry { name: span, options: options_index });
                }
            }
        }
        keys.names.shrink_to_fit();
        (keys, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (KeySet, Vec<LineWarning>) {
        KeySet::parse(text.as_bytes())
    }

    #[test]
    fn seed_file_works_unchanged() {
        let (keys, warnings) = parse("my-secret-api-key-1\nadmin-key-abcdef\n");
        assert!(warnings.is_empty());
        assert_eq!(keys.len(), 2);
        assert!(keys.lookup(b"my-secret-api-key-1").is_some());
        assert!(keys.lookup(b"admin-key-abcdef").is_some());
        assert!(keys.lookup(b"admin-key-abcde").is_none());
        assert!(keys.lookup(b"").is_none());
    }

    #[test]
    fn names_and_fingerprints() {
        let (keys, _) = parse("k1 alice smith\r\nk2\n");
        assert_eq!(keys.lookup(b"k1"), Some(KeyLabel::Named(b"alice smith")));
        let expected = format!("sha256:{}", &hex(&sha256(b"k2"))[..12]);
        assert_eq!(keys.lookup(b"k2").unwrap().as_bytes(), expected.as_bytes());
    }

    #[test]
    fn hashed_entries_match_the_key_not_the_hash_text() {
        let line = format!("sha256:{} ci-bot", hex(&sha256(b"hidden-key")).to_uppercase());
        let (keys, warnings) = parse(&line);
        assert!(warnings.is_empty());
        assert_eq!(keys.lookup(b"hidden-key"), Some(KeyLabel::Named(b"ci-bot")));
        assert!(keys.lookup(line.split(' ').next().unwrap().as_bytes()).is_none());
    }

    #[test]
    fn bad_lines_are_skipped_with_line_numbers_and_no_content() {
        let text =
            "good\nbad\x01key\nsha256:abc\n# note\nsha256:zz\n\ngood\n".to_string() + &"x".repeat(MAX_KEY_BYTES + 1);
        let (keys, warnings) = parse(&text);
        assert_eq!(keys.len(), 1);
        let lines: Vec<usize> = warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [2, 3, 5, 7, 8]);
        for warning in &warnings {
            assert!(!warning.reason.contains("bad") && !warning.reason.contains("xxx"), "{warning:?}");
        }
    }

    #[test]
    fn sha256_lines_take_hex_digits_only() {
        let digest = hex(&sha256(b"k"));
        // `u8::from_str_radix("+f", 16)` is 15: a sign must not pass for a digit.
        let signed = format!("sha256:+{}", &digest[1..]);
        let (keys, warnings) = parse(&format!("{signed} signed\nsha256:{digest} good\n"));
        assert_eq!(warnings.iter().map(|w| w.line).collect::<Vec<_>>(), [1]);
        assert_eq!(keys.len(), 1);
        assert_eq!(parse_hex_digest(b"-f").map(|_| ()), None);
        for bad in ["+0", "-0", " f", "g0", "0x"] {
            assert_eq!(parse_hex_digest(format!("{bad}{}", &digest[2..]).as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn the_table_is_sized_by_entries_not_lines() {
        // A file of newlines near the size limit once asked for a table of that many entries.
        let (keys, _) = KeySet::parse(&vec![b'\n'; 10_000_000]);
        assert!(keys.table.capacity() < 1_000, "{}", keys.table.capacity());
        let (keys, _) = parse(&"# comment\n".repeat(100_000));
        assert!(keys.table.capacity() < 1_000);
    }

    #[test]
    fn empty_and_comment_only_files_admit_no_one() {
        for text in ["", "\n\n", "# nothing\n   \r\n"] {
            let (keys, warnings) = parse(text);
            assert!(keys.is_empty() && warnings.is_empty());
            assert!(keys.lookup(b"").is_none());
        }
    }

    #[test]
    fn binary_garbage_never_panics() {
        let garbage: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let (keys, _) = KeySet::parse(&garbage);
        assert!(keys.lookup(b"anything").is_none());
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let name = "é".repeat(MAX_NAME_BYTES);
        let (keys, _) = parse(&format!("k {name}"));
        let KeyLabel::Named(kept) = keys.lookup(b"k").unwrap() else { panic!() };
        assert!(kept.len() <= MAX_NAME_BYTES);
        assert!(std::str::from_utf8(kept).is_ok());
    }

    #[test]
    fn a_million_keys_parse() {
        let mut text = String::with_capacity(40_000_000);
        for i in 0..1_000_000 {
            text.push_str(&format!("key-{i:032}\n"));
        }
        let (keys, warnings) = parse(&text);
        assert!(warnings.is_empty());
        assert_eq!(keys.len(), 1_000_000);
        assert!(keys.lookup(format!("key-{:032}", 999_999).as_bytes()).is_some());
    }

    #[test]
    fn two_tokens_in_one_header_never_match_even_a_hashed_entry_with_a_space() {
        // `printf '%s' 'k1 k2' | sha256sum` makes an entry whose key has a space in it.
        let (keys, _) = parse(&format!("sha256:{} spaced\nk1\n", hex(&sha256(b"k1 k2"))));
        assert!(keys.lookup(b"k1 k2").is_none());
        assert!(keys.lookup(b"k1\tk2").is_none());
        assert!(keys.lookup(b"k1").is_some());
        assert!(keys.lookup(b"k1 ").is_none());
    }

    #[test]
    fn options_follow_the_name_and_a_bad_option_skips_the_line() {
        let text = "k1 Admin console scopes=all\nk2 ci scopes=infer models=nomic-embed-text expires=2030-01-01\n\
                    k3 typo scope=read\nk4 twice scopes=read scopes=all\nk5 bad scopes=sudo\nk6 plain\n";
        let (keys, warnings) = parse(text);
        let k1 = keys.find(b"k1").unwrap();
        assert_eq!(keys.label(k1), KeyLabel::Named(b"Admin console"));
        assert_eq!(keys.options(k1).unwrap().scopes.unwrap().to_string(), "all");
        let k2 = keys.find(b"k2").unwrap();
        let options = keys.options(k2).unwrap();
        assert!(options.models.as_ref().is_some_and(|m| !m.is_unrestricted()));
        assert!(options.expires.is_some());
        assert!(keys.options(keys.find(b"k6").unwrap()).is_none());
        for skipped in [&b"k3"[..], b"k4", b"k5"] {
            assert!(keys.find(skipped).is_none(), "{skipped:?}");
        }
        let lines: Vec<usize> = warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [3, 4, 5]);
        assert!(warnings[0].reason.contains("scope"), "{:?}", warnings[0]);
        assert!(warnings[1].reason.contains("scopes"), "{:?}", warnings[1]);
    }

    #[test]
    fn repeated_lookups_are_answered_from_the_cache_and_agree() {
        let (keys, _) = parse("k1 alice\nk2\n");
        for _ in 0..3 {
            assert_eq!(keys.lookup(b"k1"), Some(KeyLabel::Named(b"alice")));
            assert_eq!(
                keys.lookup(b"k2").unwrap().as_bytes(),
                format!("sha256:{}", &hex(&sha256(b"k2"))[..12]).as_bytes()
            );
            assert_eq!(keys.lookup(b"k3"), None);
        }
        assert_eq!(keys.verified.borrow().len(), 2, "only admitted tokens are remembered");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
