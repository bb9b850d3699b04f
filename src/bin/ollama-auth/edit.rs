//! Line editing that keeps everything it does not touch byte for byte, and the reading of key
//! and user lines with the module's own helpers (`lines`, `options`).

use std::ops::Range;

use ngx_ollama_auth::keys::{fingerprint_of, key_digest, Digest};
use ngx_ollama_auth::lines::{entries, first_field, has_control_bytes};
use ngx_ollama_auth::options::{parse_options, split_name_and_options, EntryOptions, OptionError};

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// The byte ranges of the file's lines, newline included, numbered from 1 as `lines::entries`
/// numbers them. A last line without a newline counts; an empty tail after a final newline not.
pub fn line_spans(content: &[u8]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, &b) in content.iter().enumerate() {
        if b == b'\n' {
            spans.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < content.len() {
        spans.push(start..content.len());
    }
    spans
}

/// The line separator the file already uses: CRLF if its first line ends so, else LF.
fn newline_of(content: &[u8]) -> &'static [u8] {
    match content.iter().position(|&b| b == b'\n') {
        Some(end) if end > 0 && content[end - 1] == b'\r' => b"\r\n",
        _ => b"\n",
    }
}

/// Appends `line` (without its newline); a file whose last line has no newline gets one first.
/// Returns the new content and the appended line's number.
pub fn append_line(content: &[u8], line: &[u8]) -> (Vec<u8>, usize) {
    let newline = newline_of(content);
    let mut out = Vec::with_capacity(content.len() + line.len() + 4);
    out.extend_from_slice(content);
    if !content.is_empty() && !content.ends_with(b"\n") {
        out.extend_from_slice(newline);
    }
    let number = line_spans(&out).len() + 1;
    out.extend_from_slice(line);
    out.extend_from_slice(newline);
    (out, number)
}

/// Removes the given lines (numbered from 1), newline included. A byte-order mark at the start
/// of the file stays, even when the first line goes.
pub fn remove_lines(content: &[u8], numbers: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    for (index, span) in line_spans(content).into_iter().enumerate() {
        if numbers.contains(&(index + 1)) {
            if index == 0 && content.starts_with(UTF8_BOM) {
                out.extend_from_slice(UTF8_BOM);
            }
        } else {
            out.extend_from_slice(&content[span]);
        }
    }
    out
}

/// The line's text without its newline (and without a CR before it).
pub fn line_text(content: &[u8], number: usize) -> Option<&[u8]> {
    let span = line_spans(content).into_iter().nth(number.checked_sub(1)?)?;
    let line = &content[span];
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// Where the hash of an htpasswd line sits: after the first `:`, up to the next `:` or the end
/// of the line, white space around it left out. `None` for a line without a colon.
pub fn hash_range(line: &[u8]) -> Option<Range<usize>> {
    let colon = line.iter().position(|&b| b == b':')?;
    let start = colon + 1;
    let end = line[start..].iter().position(|&b| b == b':').map_or(line.len(), |i| start + i);
    let field = &line[start..end];
    let lead = field.iter().take_while(|b| b.is_ascii_whitespace()).count();
    if lead == field.len() {
        return Some(start..start); // no hash: insert right after the colon
    }
    let trail = field.iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
    Some(start + lead..end - trail)
}

/// Replaces the hash of line `number` with `hash`, keeping the rest of the line (user, white
/// space, comment, options, line ending) and every other line.
pub fn replace_hash(content: &[u8], number: usize, hash: &[u8]) -> Option<Vec<u8>> {
    let span = line_spans(content).into_iter().nth(number.checked_sub(1)?)?;
    let line = &content[span.clone()];
    let range = hash_range(line.strip_suffix(b"\n").unwrap_or(line))?;
    let mut out = Vec::with_capacity(content.len() + hash.len());
    out.extend_from_slice(&content[..span.start + range.start]);
    out.extend_from_slice(hash);
    out.extend_from_slice(&content[span.start + range.end..]);
    Some(out)
}

/// Line `number` with its options replaced by `given` (`name=value` words): an option given
/// replaces the line's own in its place (or is added at the end), the others stay; the key and the name stay (joined by single
/// spaces), and so does the line's ending. `Err` if the options would not be read, naming why.
pub fn set_line_options(content: &[u8], number: usize, given: &[String]) -> Option<Result<Vec<u8>, OptionError>> {
    let span = line_spans(content).into_iter().nth(number.checked_sub(1)?)?;
    let line = &content[span.clone()];
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let (key, rest) = first_field(body.trim_ascii());
    let (name, old) = split_name_and_options(rest);
    let option_name = |word: &[u8]| word.split(|&b| b == b'=').next().unwrap_or_default().to_vec();
    let replaced: Vec<Vec<u8>> = given.iter().map(|word| option_name(word.as_bytes())).collect();
    // A given option takes the place of the line's own, so the line reads as before.
    let mut words: Vec<&[u8]> = old
        .into_iter()
        .map(|word| replaced.iter().position(|name| *name == option_name(word)).map_or(word, |i| given[i].as_bytes()))
        .collect();
    let added: Vec<&[u8]> = given.iter().map(|word| word.as_bytes()).filter(|word| !words.contains(word)).collect();
    words.extend(added);
    if let Err(error) = parse_options(&words) {
        return Some(Err(error));
    }
    let lead = &line[..line.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0)];
    let mut out = content[..span.start].to_vec();
    out.extend_from_slice(lead);
    out.extend_from_slice(key);
    for part in std::iter::once(&name[..]).filter(|name| !name.is_empty()).chain(words) {
        out.push(b' ');
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&line[body.len()..]);
    out.extend_from_slice(&content[span.end..]);
    Some(Ok(out))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One entry line of the keys file, as far as it can be read.
#[derive(Debug)]
pub struct KeyLine {
    pub line: usize,
    /// The key's SHA-256; `None` when the line cannot hold a key (control character, overlong
    /// key, malformed `sha256:`).
    pub digest: Option<Digest>,
    /// Whether the file holds the key itself rather than its SHA-256.
    pub plain: bool,
    /// The name: the words without `=`, joined by single spaces.
    pub name: Vec<u8>,
    pub options: Result<EntryOptions, OptionError>,
}

pub fn key_lines(content: &[u8]) -> Vec<KeyLine> {
    entries(content)
        .map(|(line, text)| {
            let (key, rest) = first_field(text);
            let (name, option_words) = split_name_and_options(rest);
            let options = parse_options(&option_words);
            let (digest, plain) = if has_control_bytes(text) {
                (None, false)
            } else {
                (key_digest(key).ok(), !key.starts_with(b"sha256:"))
            };
            KeyLine { line, digest, plain, name, options }
        })
        .collect()
}

/// What `key revoke` was given.
#[derive(Debug, PartialEq, Eq)]
pub enum RevokeTarget {
    /// `sha256:` and 12 hex digits (lower case), or the full 64.
    Fingerprint(String),
    Name(Vec<u8>),
}

impl RevokeTarget {
    pub fn parse(text: &str) -> RevokeTarget {
        let normalized = normalize_words(text);
        if let Some(hex) = normalized.strip_prefix("sha256:") {
            if (hex.len() == 12 || hex.len() == 64) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return RevokeTarget::Fingerprint(hex.to_ascii_lowercase());
            }
        }
        RevokeTarget::Name(normalized.into_bytes())
    }

    pub fn matches(&self, entry: &KeyLine) -> bool {
        match self {
            RevokeTarget::Fingerprint(hex_prefix) => {
                entry.digest.is_some_and(|digest| hex(&digest).starts_with(hex_prefix.as_str()))
            }
            RevokeTarget::Name(name) => &entry.name == name,
        }
    }
}

/// The lines to remove to revoke `target`: the matching lines and every other line that holds
/// the same key (else the key would still be admitted, under another line).
#[derive(Debug, PartialEq, Eq)]
pub enum Revocation {
    NotFound,
    /// The name is carried by several different keys: `(line, fingerprint)` of each.
    Ambiguous(Vec<(usize, Option<String>)>),
    Lines {
        lines: Vec<usize>,
        keys: usize,
    },
}

pub fn plan_revocation(entries: &[KeyLine], target: &RevokeTarget, all: bool) -> Revocation {
    let matched: Vec<&KeyLine> = entries.iter().filter(|entry| target.matches(entry)).collect();
    if matched.is_empty() {
        return Revocation::NotFound;
    }
    let mut digests: Vec<Digest> = matched.iter().filter_map(|entry| entry.digest).collect();
    digests.sort_unstable();
    digests.dedup();
    let keys = digests.len() + matched.iter().filter(|entry| entry.digest.is_none()).count();
    if keys > 1 && !all {
        return Revocation::Ambiguous(
            matched.iter().map(|entry| (entry.line, entry.digest.as_ref().map(fingerprint_of))).collect(),
        );
    }
    let lines = entries
        .iter()
        .filter(|entry| target.matches(entry) || entry.digest.is_some_and(|digest| digests.contains(&digest)))
        .map(|entry| entry.line)
        .collect();
    Revocation::Lines { lines, keys }
}

/// Words separated by any white space, joined by single spaces: how the module reads a name.
pub fn normalize_words(text: &str) -> String {
    text.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks a new key's name; returns it as the module will read it back.
pub fn key_name(text: &str) -> Result<String, String> {
    // Checked before white space is folded, which would turn a newline into a space.
    if text.chars().any(char::is_control) {
        return Err("a key name cannot contain control characters".into());
    }
    let name = normalize_words(text);
    if name.is_empty() {
        return Err("a key name cannot be empty or only white space".into());
    }
    if name.contains('=') {
        return Err(format!(
            "a key name cannot contain `=` (a word with `=` is read as an option; use --scopes, --models, ...): {name:?}"
        ));
    }
    if name.starts_with("sha256:") {
        return Err("a key name cannot start with `sha256:`: it would be taken for a fingerprint".into());
    }
    if name.len() > ngx_ollama_auth::keys::MAX_NAME_BYTES {
        return Err(format!("a key name can be at most {} bytes", ngx_ollama_auth::keys::MAX_NAME_BYTES));
    }
    Ok(name)
}

/// Longest user name accepted by `user add`.
const MAX_USER_BYTES: usize = 256;

/// Checks a new user's name: it must come back whole from `user:hash`, as the module reads it.
pub fn user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a user name cannot be empty".into());
    }
    if name.contains(':') {
        return Err("a user name cannot contain `:` (it ends the name in the file and in Basic credentials)".into());
    }
    if name.chars().any(char::is_control) {
        return Err("a user name cannot contain control characters".into());
    }
    if name.starts_with('#') {
        return Err("a user name cannot start with `#`: the line would be a comment".into());
    }
    if name.trim_ascii() != name {
        return Err("a user name cannot start or end with white space".into());
    }
    if name.len() > MAX_USER_BYTES {
        return Err(format!("a user name can be at most {MAX_USER_BYTES} bytes"));
    }
    Ok(())
}

/// The numbers of the lines of `user` (the text before the first colon, exactly).
pub fn user_lines(content: &[u8], user: &[u8]) -> Vec<usize> {
    entries(content)
        .filter(|(_, text)| text.iter().position(|&b| b == b':').is_some_and(|colon| &text[..colon] == user))
        .map(|(line, _)| line)
        .collect()
}

/// One user line of the htpasswd file, as far as it can be read.
pub struct UserLine {
    pub line: usize,
    pub name: Vec<u8>,
    pub hash: Vec<u8>,
    pub options: Result<EntryOptions, OptionError>,
}

/// The lines with a user: a name, a colon, a hash and the options in the comment field.
pub fn user_entries(content: &[u8]) -> Vec<UserLine> {
    entries(content)
        .filter_map(|(line, text)| {
            let colon = text.iter().position(|&b| b == b':')?;
            let hash = hash_range(text).map_or(&[][..], |range| &text[range]);
            Some(UserLine { line, name: text[..colon].to_vec(), hash: hash.to_vec(), options: user_options(text) })
        })
        .collect()
}

/// The options in an htpasswd line's comment field.
pub fn user_options(text: &[u8]) -> Result<EntryOptions, OptionError> {
    use ngx_ollama_auth::options::options_in_comment;
    let field = match hash_range(text) {
        Some(range) => text[range.end..].strip_prefix(b":").unwrap_or(&[]),
        None => &[],
    };
    parse_options(&options_in_comment(field))
}

#[cfg(test)]
mod tests {

    #[test]
    fn set_line_options_replaces_in_place_and_keeps_the_rest() {
        let words = |list: &[&str]| list.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let content = b"\xef\xbb\xbfk1  CI   bot scopes=read num_ctx=1\r\n# c\r\n  k2 other\r\n";
        let set = set_line_options(content, 1, &words(&["num_ctx=32768", "keep_alive=5m..30m"])).unwrap().unwrap();
        assert_eq!(set, b"\xef\xbb\xbfk1 CI bot scopes=read num_ctx=32768 keep_alive=5m..30m\r\n# c\r\n  k2 other\r\n");
        let set = set_line_options(content, 3, &words(&["scopes=infer"])).unwrap().unwrap();
        assert_eq!(&set[content.len() - 12..], b"  k2 other scopes=infer\r\n");
        let refused = set_line_options(content, 1, &words(&["num_ctx=0"])).unwrap();
        assert_eq!(refused.unwrap_err().to_string(), "option \"num_ctx\": must be at least 1");
        assert!(set_line_options(content, 9, &words(&["num_ctx=1"])).is_none());
    }
    use super::*;

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn appending_adds_a_missing_newline_and_keeps_crlf() {
        assert_eq!(append_line(b"", b"new"), (b"new\n".to_vec(), 1));
        assert_eq!(append_line(b"a\n", b"new"), (b"a\nnew\n".to_vec(), 2));
        assert_eq!(append_line(b"a", b"new"), (b"a\nnew\n".to_vec(), 2));
        assert_eq!(append_line(b"a\r\nb", b"new"), (b"a\r\nb\r\nnew\r\n".to_vec(), 3));
        assert_eq!(append_line(b"# c\n\n\n", b"new"), (b"# c\n\n\nnew\n".to_vec(), 4));
        assert_eq!(append_line(b"\xef\xbb\xbfa", b"n"), (b"\xef\xbb\xbfa\nn\n".to_vec(), 2));
    }

    #[test]
    fn line_numbers_agree_with_the_module() {
        let content = b"\xef\xbb\xbfone\r\n\n# c\ntwo\nthree";
        let numbers: Vec<usize> = entries(content).map(|(n, _)| n).collect();
        assert_eq!(numbers, [1, 4, 5]);
        assert_eq!(line_spans(content).len(), 5);
        assert_eq!(line_text(content, 4), Some(&b"two"[..]));
        assert_eq!(line_text(content, 1), Some(&b"\xef\xbb\xbfone"[..]));
        assert_eq!(line_text(content, 5), Some(&b"three"[..]));
        assert_eq!(line_text(content, 6), None);
        assert_eq!(line_text(content, 0), None);
    }

    #[test]
    fn removing_keeps_everything_else_byte_for_byte() {
        let content = b"# keep  me \r\nk1 a\r\n\n  k2 b  \nk3\t c";
        assert_eq!(remove_lines(content, &[2]), b"# keep  me \r\n\n  k2 b  \nk3\t c");
        assert_eq!(remove_lines(content, &[4, 5]), b"# keep  me \r\nk1 a\r\n\n");
        assert_eq!(remove_lines(content, &[]), content);
        assert_eq!(remove_lines(b"\xef\xbb\xbfk1\nk2\n", &[1]), b"\xef\xbb\xbfk2\n");
    }

    #[test]
    fn replacing_a_hash_keeps_the_rest_of_the_line() {
        let content = b"# c\nalice: $apr1$x$y :comment scopes=read\r\nbob:old\nbare:\ncarol:h:\n";
        let out = replace_hash(content, 2, b"NEW").unwrap();
        assert_eq!(text(&out), "# c\nalice: NEW :comment scopes=read\r\nbob:old\nbare:\ncarol:h:\n");
        let out = replace_hash(content, 3, b"NEW").unwrap();
        assert_eq!(text(&out), "# c\nalice: $apr1$x$y :comment scopes=read\r\nbob:NEW\nbare:\ncarol:h:\n");
        let out = replace_hash(content, 4, b"NEW").unwrap();
        assert!(text(&out).contains("\nbare:NEW\n"));
        let out = replace_hash(content, 5, b"NEW").unwrap();
        assert!(text(&out).ends_with("\ncarol:NEW:\n"));
        assert_eq!(replace_hash(b"no colon\n", 1, b"x"), None);
        assert_eq!(replace_hash(b"bob:old", 1, b"NEW").unwrap(), b"bob:NEW");
        assert_eq!(replace_hash(b"bob:old\r\n", 1, b"NEW").unwrap(), b"bob:NEW\r\n");
    }

    #[test]
    fn user_lines_match_the_name_exactly() {
        let content = b"bob:x\n  bob:y\nbobby:z\nBob:w\n# bob:v\nbob\n";
        assert_eq!(user_lines(content, b"bob"), [1, 2]);
        assert_eq!(user_lines(content, b"Bob"), [4]);
        assert!(user_lines(content, b"carol").is_empty());
    }

    #[test]
    fn user_options_come_from_the_comment_field() {
        let options =
            user_options(b"bob:$2y$10$abc:Bob from accounting scopes=read expires=2030-01-01T10:00:00Z").unwrap();
        assert_eq!(options.to_words(), ["scopes=read", "expires=2030-01-01T10:00:00Z"]);
        assert_eq!(user_options(b"bob:hash").unwrap(), EntryOptions::default());
        assert!(user_options(b"bob:hash:scopes=nope").is_err());
    }

    #[test]
    fn key_names() {
        assert_eq!(key_name("  CI   bot "), Ok("CI bot".into()));
        assert_eq!(key_name("café #1"), Ok("café #1".into()));
        // A newline or tab would be folded into a space; refused like every control character.
        for bad in
            ["", "   ", "a=b", "scopes=read", "a\u{1b}b", "a\u{85}b", "sha256:0123456789ab", "CI\nbot", "CI\tbot"]
        {
            assert!(key_name(bad).is_err(), "{bad:?}");
        }
        assert!(key_name(&"x".repeat(257)).is_err());
        assert!(key_name(&"x".repeat(256)).is_ok());
    }

    #[test]
    fn user_names() {
        assert!(user_name("jürgen").is_ok());
        assert!(user_name("a b").is_ok());
        for bad in ["", "a:b", "#x", " a", "a ", "a\tb", "a\u{7f}"] {
            assert!(user_name(bad).is_err(), "{bad:?}");
        }
    }

    fn digest_of(key: &str) -> Digest {
        ngx_ollama_auth::keys::sha256(key.as_bytes())
    }

    #[test]
    fn key_lines_read_names_options_and_digests() {
        let hashed = hex(&digest_of("k2"));
        let content = format!(
            "# c\nk1  CI   bot scopes=read\nsha256:{} other parallel=2\nsha256:abc broken\nk4 x scopes=bogus\nk\x015 ctl\n",
            hashed.to_uppercase()
        );
        let lines = key_lines(content.as_bytes());
        assert_eq!(lines.len(), 5);
        assert_eq!((lines[0].line, lines[0].plain, text(&lines[0].name)), (2, true, "CI bot"));
        assert_eq!(lines[0].digest, Some(digest_of("k1")));
        assert_eq!(lines[0].options.as_ref().unwrap().to_words(), ["scopes=read"]);
        assert_eq!((lines[1].plain, lines[1].digest), (false, Some(digest_of("k2"))));
        assert_eq!(lines[1].options.as_ref().unwrap().parallel, Some(2));
        assert_eq!(lines[2].digest, None);
        assert!(lines[3].options.is_err());
        assert_eq!(lines[4].digest, None, "a line with a control character holds no key");
        assert_eq!(fingerprint_of(&digest_of("k1")), format!("sha256:{}", &hex(&digest_of("k1"))[..12]));
    }

    #[test]
    fn revoke_targets() {
        assert_eq!(RevokeTarget::parse("sha256:0123456789AB"), RevokeTarget::Fingerprint("0123456789ab".into()));
        let full = "f".repeat(64);
        assert_eq!(RevokeTarget::parse(&format!("sha256:{full}")), RevokeTarget::Fingerprint(full));
        assert_eq!(RevokeTarget::parse("sha256:0123"), RevokeTarget::Name(b"sha256:0123".to_vec()));
        assert_eq!(RevokeTarget::parse(" CI  bot "), RevokeTarget::Name(b"CI bot".to_vec()));
    }

    #[test]
    fn revocation_removes_every_line_of_the_key_and_refuses_ambiguous_names() {
        let fp = |key: &str| fingerprint_of(&digest_of(key));
        let content = format!(
            "k1 alice\n# alice\nk2 bob\nsha256:{} alias of alice\nk3 bob\nk2 bob\nk4 carol\n",
            hex(&digest_of("k1"))
        );
        let entries = key_lines(content.as_bytes());
        let plan = |target: &str, all| plan_revocation(&entries, &RevokeTarget::parse(target), all);
        assert_eq!(plan("alice", false), Revocation::Lines { lines: vec![1, 4], keys: 1 });
        assert_eq!(plan(&fp("k4"), false), Revocation::Lines { lines: vec![7], keys: 1 });
        assert_eq!(plan(&fp("k2"), false), Revocation::Lines { lines: vec![3, 6], keys: 1 });
        assert_eq!(
            plan("bob", false),
            Revocation::Ambiguous(vec![(3, Some(fp("k2"))), (5, Some(fp("k3"))), (6, Some(fp("k2")))])
        );
        assert_eq!(plan("bob", true), Revocation::Lines { lines: vec![3, 5, 6], keys: 2 });
        assert_eq!(plan("Bob", false), Revocation::NotFound);
        assert_eq!(plan("sha256:000000000000", false), Revocation::NotFound);
    }
}
