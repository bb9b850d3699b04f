//! Just enough JSON to see a request body the way Ollama (Go's `encoding/json`) will, and to
//! trim Ollama's model listings.
//!
//! A gate that reads the model out of a body differently from the server behind it can be
//! walked around, so the rules here follow Go's where it matters and are stricter elsewhere:
//!
//! - The whole body must be one RFC 8259 value with nothing but white space around it (Go's
//!   decoder would ignore what follows the first value; a second value could hide a model).
//!   Strings must be valid UTF-8 (Go would replace bad bytes with U+FFFD; we refuse them).
//! - Member names are compared after unescaping and with Go's case folding
//!   ([`go_name_matches`]), and every top-level member is reported, duplicates included: Go
//!   keeps the last one, the gate must see them all.
//! - Nesting is limited to [`MAX_DEPTH`], Go's own limit, and scanned without recursion, so
//!   no body can exhaust the stack.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// Arrays and objects open at once, as in Go's scanner: 10,000 passes, 10,001 does not.
pub const MAX_DEPTH: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// A byte that cannot continue the JSON text.
    Syntax {
        at: usize,
    },
    /// The body ends inside a value (or is empty).
    Truncated,
    TooDeep,
    /// Something other than white space follows the value.
    TrailingData {
        at: usize,
    },
    InvalidUtf8 {
        at: usize,
    },
    /// Well-formed JSON, but the top-level value is not an object.
    NotAnObject,
}

impl fmt::Display for JsonError {
    // Positions only: a body may hold secrets, so none of it reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax { at } => write!(f, "invalid JSON at byte {at}"),
            JsonError::Truncated => f.write_str("JSON ends before its value does"),
            JsonError::TooDeep => write!(f, "JSON nested deeper than {MAX_DEPTH} levels"),
            JsonError::TrailingData { at } => write!(f, "trailing data after the JSON value, at byte {at}"),
            JsonError::InvalidUtf8 { at } => write!(f, "invalid UTF-8 in a JSON string at byte {at}"),
            JsonError::NotAnObject => f.write_str("the JSON value is not an object"),
        }
    }
}

impl std::error::Error for JsonError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    String,
    Number,
    Object,
    Array,
    True,
    False,
    Null,
}

/// One member of an object: its unescaped name, and where its value sits in the body
/// (`body[value]` is the value's JSON text, quotes included for a string).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    pub name: Cow<'a, str>,
    pub value: Range<usize>,
    pub kind: ValueKind,
}

/// Checks that `body` is one JSON value with only white space around it, and says what kind.
pub fn validate(body: &[u8]) -> Result<ValueKind, JsonError> {
    let mut scanner = Scanner::new(body);
    let kind = scanner.value()?;
    scanner.finish()?;
    Ok(kind)
}

/// Calls `on_member` for each member of the top-level object, in body order, while validating
/// the whole body. Only an `Ok` answer makes the members trustworthy: on an error, discard
/// whatever was seen. Keeps nothing itself, so memory stays flat however many members there are.
pub fn for_each_top_level_member<'a>(body: &'a [u8], on_member: impl FnMut(Member<'a>)) -> Result<(), JsonError> {
    let mut scanner = Scanner::new(body);
    scanner.skip_white_space();
    if scanner.peek() != Some(b'{') {
        // The precise error for a malformed body; a well-formed one is still not an object.
        validate(body)?;
        return Err(JsonError::NotAnObject);
    }
    scanner.collect_members(on_member)?;
    scanner.finish()
}

/// Every member of the top-level object, in body order, duplicates included. Costs about 50
/// bytes per member; [`for_each_top_level_member`] keeps only what its caller keeps.
pub fn top_level_members(body: &[u8]) -> Result<Vec<Member<'_>>, JsonError> {
    let mut members = Vec::new();
    for_each_top_level_member(body, |member| members.push(member))?;
    Ok(members)
}

/// The unescaped text of a string member, as Go would decode it; `None` for any other kind, or
/// a member that does not come from this body.
pub fn string_value<'a>(body: &'a [u8], member: &Member<'_>) -> Option<Cow<'a, str>> {
    if member.kind != ValueKind::String {
        return None;
    }
    let quoted = body.get(member.value.clone())?;
    unescape(quoted.strip_prefix(b"\"")?.strip_suffix(b"\"")?)
}

/// The character a one-letter JSON escape (`\\n`, `\\"`, ...) stands for; `\\u` is not one.
pub fn simple_escape(code: u8) -> Option<char> {
    Some(match code {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        _ => return None,
    })
}

/// Whether Go's `encoding/json` would store a member named `name` (already unescaped) in the
/// struct field tagged `field`: equal under `bytes.EqualFold`, Unicode simple case folding.
///
/// `field` must be ASCII (all of Ollama's are). Then only two non-ASCII runes can match: U+017F
/// LATIN SMALL LETTER LONG S folds with `s`, U+212A KELVIN SIGN with `k`. No other rune's
/// simple-fold orbit holds an ASCII letter; U+0130 and U+0131 (Turkish dotted and dotless i)
/// fold only to themselves in Go's tables, not to `i`.
pub fn go_name_matches(name: &str, field: &str) -> bool {
    debug_assert!(field.is_ascii(), "go_name_matches only knows the folds of ASCII field names");
    let mut runes = name.chars();
    field.bytes().all(|f| runes.next().is_some_and(|rune| folds_to_ascii(rune, f))) && runes.next().is_none()
}

fn folds_to_ascii(rune: char, field_byte: u8) -> bool {
    let wanted = field_byte.to_ascii_lowercase();
    match rune {
        '\u{17F}' => wanted == b's',
        '\u{212A}' => wanted == b'k',
        _ => rune.is_ascii() && (rune as u8).to_ascii_lowercase() == wanted,
    }
}

/// One element of a listing's array, as shown to [`filter_listing`]'s `keep`.
pub struct Entry<'a> {
    body: &'a [u8],
    value: Range<usize>,
    members: Vec<Member<'a>>,
}

impl<'a> Entry<'a> {
    /// The element's own string member named exactly `name` (the last one, if repeated, as a
    /// Go or Python client would read it); `None` if absent, not a string, or the element is
    /// not an object.
    pub fn string(&self, name: &str) -> Option<Cow<'a, str>> {
        let member = self.members.iter().rev().find(|member| member.name == name)?;
        string_value(self.body, member)
    }

    /// Every string value of the element's members that Go would store in the field tagged
    /// `field` (matched as [`go_name_matches`] does), duplicates included, in body order.
    pub fn go_strings(&self, field: &'static str) -> impl Iterator<Item = Cow<'a, str>> + '_ {
        let body = self.body;
        self.members
            .iter()
            .filter(move |member| go_name_matches(&member.name, field))
            .filter_map(move |member| string_value(body, member))
    }

    /// The element's JSON text.
    pub fn raw(&self) -> &'a [u8] {
        &self.body[self.value.clone()]
    }
}

/// Removes the elements `keep` refuses from the array in the top-level member named exactly
/// `array_member` (`models` in /api/tags and /api/ps, `data` in /v1/models). Everything else
/// stays byte for byte, so the answer is still the JSON Ollama wrote; an array left empty
/// becomes `[]`. Without such an array (absent, null, another kind) the body comes back as it
/// was, borrowed, as it does when every element is kept. One pass: `keep` may be called for
/// elements of a body that then turns out malformed, whose error is returned.
pub fn filter_listing<'a>(
    body: &'a [u8],
    array_member: &str,
    mut keep: impl FnMut(&Entry<'a>) -> bool,
) -> Result<Cow<'a, [u8]>, JsonError> {
    let mut scanner = Scanner::new(body);
    scanner.skip_white_space();
    if scanner.peek() != Some(b'{') {
        validate(body)?;
        return Err(JsonError::NotAnObject);
    }
    let mut arrays = Vec::new();
    scanner.object_members(|scanner, name| {
        if name == array_member && scanner.peek() == Some(b'[') {
            arrays.push(scanner.listing_array(&mut keep)?);
        } else {
            scanner.value()?;
        }
        Ok(())
    })?;
    scanner.finish()?;

    let mut filtered: Option<Vec<u8>> = None;
    let mut copied_up_to = 0;
    for ListingArray { brackets, elements } in arrays {
        if elements.iter().all(|element| element.kept) {
            continue;
        }
        let out = filtered.get_or_insert_with(|| Vec::with_capacity(body.len()));
        out.extend_from_slice(&body[copied_up_to..brackets.start + 1]);
        let mut any_kept = false;
        for (index, element) in elements.iter().enumerate().filter(|(_, element)| element.kept) {
            let before = if any_kept {
                // The separator that stood before this element: white space, a comma, white space.
                elements[index - 1].value.end..element.value.start
            } else {
                // The white space between `[` and the first element.
                brackets.start + 1..elements[0].value.start
            };
            out.extend_from_slice(&body[before]);
            out.extend_from_slice(&body[element.value.clone()]);
            any_kept = true;
        }
        if any_kept {
            // The white space between the last element and `]`.
            let last = elements.last().expect("a kept element");
            out.extend_from_slice(&body[last.value.end..brackets.end - 1]);
        }
        copied_up_to = brackets.end - 1;
    }
    Ok(match filtered {
        Some(mut out) => {
            out.extend_from_slice(&body[copied_up_to..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(body),
    })
}

/// A listing's array as scanned: where its brackets are, and each element with `keep`'s verdict.
struct ListingArray {
    brackets: Range<usize>,
    elements: Vec<ListedElement>,
}

struct ListedElement {
    value: Range<usize>,
    kept: bool,
}

/// Decodes a string's text (between its quotes) as Go's `unquote` does: `\uXXXX` pairs make one
/// rune, and a surrogate that is not half of a pair becomes U+FFFD. `None` for text that is not
/// a valid JSON string body.
fn unescape(raw: &[u8]) -> Option<Cow<'_, str>> {
    fn plain(run: &[u8]) -> Option<&str> {
        let text = std::str::from_utf8(run).ok()?;
        (!text.bytes().any(|b| b < 0x20 || b == b'"')).then_some(text)
    }
    let Some(first_escape) = raw.iter().position(|&b| b == b'\\') else {
        return plain(raw).map(Cow::Borrowed);
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(plain(&raw[..first_escape])?);
    let mut i = first_escape;
    while i < raw.len() {
        if raw[i] != b'\\' {
            let run_end = raw[i..].iter().position(|&b| b == b'\\').map_or(raw.len(), |n| i + n);
            out.push_str(plain(&raw[i..run_end])?);
            i = run_end;
            continue;
        }
        let code = *raw.get(i + 1)?;
        i += 2;
        let decoded = match code {
            b'u' => {
                let unit = hex4(raw.get(i..i + 4)?)?;
                i += 4;
                let low = raw.get(i..i + 6).filter(|next| next.starts_with(b"\\u")).and_then(|next| hex4(&next[2..]));
                match (unit, low) {
                    (0xD800..=0xDBFF, Some(low @ 0xDC00..=0xDFFF)) => {
                        i += 6;
                        char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?
                    }
                    // A lone surrogate; the \u after it, if any, is decoded on its own.
                    (0xD800..=0xDFFF, _) => char::REPLACEMENT_CHARACTER,
                    _ => char::from_u32(unit)?,
                }
            }
            _ => simple_escape(code)?,
        };
        out.push(decoded);
    }
    Some(Cow::Owned(out))
}

fn hex4(digits: &[u8]) -> Option<u32> {
    if digits.len() != 4 {
        return None;
    }
    digits.iter().try_fold(0u32, |value, &d| Some(value << 4 | char::from(d).to_digit(16)?))
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// Flags (high bit) the bytes of `word` below `limit` (at most 0x80). A borrow can only flag a
/// byte above one that really is below the limit, so the lowest flag is exact.
fn bytes_below(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGHS
}

/// The bytes that end a run of plain string text: `"`, `\` and control bytes.
fn string_stoppers(word: u64) -> u64 {
    bytes_below(word ^ (ONES * u64::from(b'"')), 1)
        | bytes_below(word ^ (ONES * u64::from(b'\\')), 1)
        | bytes_below(word, 0x20)
}

fn is_string_stopper(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The index of the first `"`, `\` or control byte at or after `from`, eight bytes a step (a
/// 20 MB base64 image is one long run of plain text), and whether a byte above 0x7f comes
/// before it: only then does the string need a UTF-8 check.
pub(crate) fn skip_plain_text(bytes: &[u8], from: usize) -> (usize, bool) {
    let (mut i, mut high_bits) = skip_plain_text_wide(bytes, from);
    if i < bytes.len() && is_string_stopper(bytes[i]) {
        return (i, high_bits != 0);
    }
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let stoppers = string_stoppers(word);
        if stoppers != 0 {
            let below_first_stopper = (stoppers & stoppers.wrapping_neg()) - 1;
            high_bits |= word & below_first_stopper & HIGHS;
            return (i + stoppers.trailing_zeros() as usize / 8, high_bits != 0);
        }
        high_bits |= word & HIGHS;
        i += 8;
    }
    while i < bytes.len() && !is_string_stopper(bytes[i]) {
        high_bits |= u64::from(bytes[i] & 0x80);
        i += 1;
    }
    (i, high_bits != 0)
}

/// The index of the first byte at or after `from` that is one of `set`, or `bytes.len()`:
/// sixteen bytes a step with SSE2 on x86_64 (the NDJSON lines of a streamed answer are mostly
/// runs of plain text between a few quotes and brackets).
pub(crate) fn find_any<const N: usize>(bytes: &[u8], from: usize, set: [u8; N]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
        // The set's bytes must not be 0: the last block is padded with zeros.
        debug_assert!(!set.contains(&0));
        let hits = |block: *const u8| {
            // SAFETY: SSE2 is part of the x86_64 baseline; the caller passes 16 readable bytes.
            unsafe {
                let chunk = _mm_loadu_si128(block.cast());
                let mut found = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(set[0] as i8));
                for &b in &set[1..] {
                    found = _mm_or_si128(found, _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b as i8)));
                }
                _mm_movemask_epi8(found) as u32
            }
        };
        let mut i = from;
        while i + 16 <= bytes.len() {
            // bytes[i..i + 16] is inside the slice (the loop condition).
            let found = hits(bytes[i..].as_ptr());
            if found != 0 {
                return i + found.trailing_zeros() as usize;
            }
            i += 16;
        }
        if i < bytes.len() {
            let mut last = [0u8; 16];
            last[..bytes.len() - i].copy_from_slice(&bytes[i..]);
            let found = hits(last.as_ptr());
            if found != 0 {
                return i + found.trailing_zeros() as usize;
            }
        }
        bytes.len().max(from)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut i = from;
        while i < bytes.len() && !set.contains(&bytes[i]) {
            i += 1;
        }
        i
    }
}

/// Bit `k` set where `bytes[from + k]` (k < 64) is one of `set`: sixty-four bytes looked at in
/// four SSE2 steps on x86_64, for a caller that walks many stops close together.
pub(crate) fn mask_of<const N: usize>(bytes: &[u8], from: usize, set: [u8; N]) -> u64 {
    let end = bytes.len().min(from.saturating_add(64));
    let len = end.saturating_sub(from);
    // A whole block is read where it is; the last, shorter one from a zero-padded copy (the
    // padding matches only if the set has 0).
    let mut padded = [0u8; 64];
    let block: &[u8] = if len == 64 {
        &bytes[from..end]
    } else {
        padded[..len].copy_from_slice(&bytes[from.min(end)..end]);
        &padded
    };
    let mut mask = 0u64;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
        for part in 0..4 {
            // SAFETY: SSE2 is part of the x86_64 baseline; `block` is 64 bytes long, and the load
            // reads block[16 * part..][..16].
            let bits = unsafe {
                let chunk = _mm_loadu_si128(block.as_ptr().add(16 * part).cast());
                let mut found = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(set[0] as i8));
                for &b in &set[1..] {
                    found = _mm_or_si128(found, _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b as i8)));
                }
                _mm_movemask_epi8(found) as u32 as u64
            };
            mask |= bits << (16 * part);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (k, b) in block.iter().enumerate() {
        if set.contains(b) {
            mask |= 1 << k;
        }
    }
    if len < 64 {
        mask &= (1u64 << len) - 1;
    }
    mask
}

/// [`skip_plain_text`] sixteen bytes a step with SSE2, which every x86_64 processor has: about
/// half an instruction a byte, where a request body's prompt or image is most of its bytes.
/// Answers where it stopped (a stopper, or fewer than sixteen bytes left) and the high bits of
/// the bytes before that.
#[cfg(target_arch = "x86_64")]
fn skip_plain_text_wide(bytes: &[u8], from: usize) -> (usize, u64) {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_setzero_si128,
    };
    let mut i = from;
    let mut high = 0u32;
    while i + 16 <= bytes.len() {
        // SAFETY: SSE2 is part of the x86_64 baseline; the unaligned load reads bytes[i..i + 16],
        // which the loop condition keeps inside the slice.
        let (stoppers, high_bytes) = unsafe {
            let chunk = _mm_loadu_si128(bytes.as_ptr().add(i).cast());
            let quote = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8));
            // A byte below 0x20 is one whose top three bits are all clear.
            let control = _mm_cmpeq_epi8(_mm_and_si128(chunk, _mm_set1_epi8(0xe0u8 as i8)), _mm_setzero_si128());
            let stoppers = _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32;
            (stoppers, _mm_movemask_epi8(chunk) as u32)
        };
        if stoppers != 0 {
            high |= high_bytes & ((stoppers & stoppers.wrapping_neg()) - 1);
            return (i + stoppers.trailing_zeros() as usize, u64::from(high != 0) * HIGHS);
        }
        high |= high_bytes;
        i += 16;
    }
    (i, u64::from(high != 0) * HIGHS)
}

#[cfg(not(target_arch = "x86_64"))]
fn skip_plain_text_wide(_bytes: &[u8], from: usize) -> (usize, u64) {
    (from, 0)
}

/// A validating cursor over the body. Nesting is tracked in `open` (one bit per open container,
/// set for an object) rather than on the call stack; 10,000 levels fit in 1.25 KB, so it needs
/// no allocation.
struct Scanner<'a> {
    body: &'a [u8],
    pos: usize,
    depth: usize,
    open: [u64; MAX_DEPTH.div_ceil(64)],
}

impl<'a> Scanner<'a> {
    fn new(body: &'a [u8]) -> Self {
        Scanner { body, pos: 0, depth: 0, open: [0; MAX_DEPTH.div_ceil(64)] }
    }

    fn peek(&self) -> Option<u8> {
        self.body.get(self.pos).copied()
    }

    fn error_here(&self) -> JsonError {
        if self.pos >= self.body.len() {
            JsonError::Truncated
        } else {
            JsonError::Syntax { at: self.pos }
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.peek() != Some(byte) {
            return Err(self.error_here());
        }
        self.pos += 1;
        Ok(())
    }

    fn skip_white_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn finish(&mut self) -> Result<(), JsonError> {
        self.skip_white_space();
        if self.pos < self.body.len() {
            return Err(JsonError::TrailingData { at: self.pos });
        }
        Ok(())
    }

    fn open_container(&mut self, is_object: bool) -> Result<(), JsonError> {
        if self.depth == MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if is_object {
            self.open[word] |= 1 << bit;
        } else {
            self.open[word] &= !(1 << bit);
        }
        self.depth += 1;
        Ok(())
    }

    fn innermost_is_object(&self) -> bool {
        let innermost = self.depth - 1;
        self.open[innermost / 64] >> (innermost % 64) & 1 == 1
    }

    /// Scans one value, nested ones included, from `pos` (white space before it allowed).
    fn value(&mut self) -> Result<ValueKind, JsonError> {
        let outer_depth = self.depth;
        self.skip_white_space();
        let kind = match self.peek() {
            Some(b'"') => ValueKind::String,
            Some(b'-' | b'0'..=b'9') => ValueKind::Number,
            Some(b'{') => ValueKind::Object,
            Some(b'[') => ValueKind::Array,
            Some(b't') => ValueKind::True,
            Some(b'f') => ValueKind::False,
            Some(b'n') => ValueKind::Null,
            _ => return Err(self.error_here()),
        };
        'value: loop {
            self.skip_white_space();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    self.open_container(true)?;
                    self.skip_white_space();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        self.depth -= 1;
                    } else {
                        self.name_and_colon()?;
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.open_container(false)?;
                    self.skip_white_space();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        self.depth -= 1;
                    } else {
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.error_here()),
            }
            // A value is complete: close the containers that end here, or go on to the next
            // element of the innermost one.
            while self.depth > outer_depth {
                self.skip_white_space();
                let in_object = self.innermost_is_object();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if in_object {
                            self.skip_white_space();
                            self.name_and_colon()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if in_object => {
                        self.pos += 1;
                        self.depth -= 1;
                    }
                    Some(b']') if !in_object => {
                        self.pos += 1;
                        self.depth -= 1;
                    }
                    _ => return Err(self.error_here()),
                }
            }
            return Ok(kind);
        }
    }

    fn name_and_colon(&mut self) -> Result<(), JsonError> {
        self.string()?;
        self.skip_white_space();
        self.expect(b':')
    }

    /// Scans the object at `pos`. For each member, `member_value` gets the name and must scan the
    /// value, which starts at `pos`.
    fn object_members(
        &mut self,
        mut member_value: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        self.expect(b'{')?;
        self.open_container(true)?;
        self.skip_white_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.skip_white_space();
            let name_start = self.pos;
            let escaped = self.string()?;
            let raw_name = &self.body[name_start + 1..self.pos - 1];
            let name = match (escaped, std::str::from_utf8(raw_name)) {
                (false, Ok(name)) => Cow::Borrowed(name),
                _ => unescape(raw_name).ok_or(JsonError::Syntax { at: name_start })?,
            };
            self.skip_white_space();
            self.expect(b':')?;
            self.skip_white_space();
            member_value(self, name)?;
            self.skip_white_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.error_here()),
            }
        }
    }

    /// Scans the object at `pos` and hands over each member, nested values validated but not
    /// reported.
    fn collect_members(&mut self, mut on_member: impl FnMut(Member<'a>)) -> Result<(), JsonError> {
        self.object_members(|scanner, name| {
            let value_start = scanner.pos;
            let kind = scanner.value()?;
            on_member(Member { name, value: value_start..scanner.pos, kind });
            Ok(())
        })
    }

    /// Scans the array at `pos`, showing each element to `keep` as it goes.
    fn listing_array(&mut self, keep: &mut impl FnMut(&Entry<'a>) -> bool) -> Result<ListingArray, JsonError> {
        let start = self.pos;
        self.expect(b'[')?;
        self.open_container(false)?;
        let mut elements = Vec::new();
        self.skip_white_space();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(ListingArray { brackets: start..self.pos, elements });
        }
        // One member list, reused from element to element.
        let mut members = Vec::new();
        loop {
            self.skip_white_space();
            let value_start = self.pos;
            if self.peek() == Some(b'{') {
                self.collect_members(|member| members.push(member))?;
            } else {
                self.value()?;
            }
            let entry = Entry { body: self.body, value: value_start..self.pos, members };
            let kept = keep(&entry);
            elements.push(ListedElement { value: entry.value, kept });
            members = entry.members;
            members.clear();
            self.skip_white_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(ListingArray { brackets: start..self.pos, elements });
                }
                _ => return Err(self.error_here()),
            }
        }
    }

    /// Scans the string at `pos`, through its closing quote; says whether it holds escapes.
    fn string(&mut self) -> Result<bool, JsonError> {
        self.expect(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        let mut non_ascii = false;
        loop {
            let (stopper, saw_non_ascii) = skip_plain_text(self.body, self.pos);
            self.pos = stopper;
            non_ascii |= saw_non_ascii;
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return Err(self.error_here()),
            }
        }
        // Escapes are ASCII, so checking the raw text checks every raw byte.
        if non_ascii {
            if let Err(error) = std::str::from_utf8(&self.body[start..self.pos]) {
                return Err(JsonError::InvalidUtf8 { at: start + error.valid_up_to() });
            }
        }
        self.pos += 1;
        Ok(escaped)
    }

    fn escape(&mut self) -> Result<(), JsonError> {
        self.pos += 1;
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
            Some(b'u') => {
                self.pos += 1;
                for _ in 0..4 {
                    match self.peek() {
                        Some(digit) if digit.is_ascii_hexdigit() => self.pos += 1,
                        _ => return Err(self.error_here()),
                    }
                }
            }
            _ => return Err(self.error_here()),
        }
        Ok(())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits()?,
            _ => return Err(self.error_here()),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    /// One digit or more.
    fn digits(&mut self) -> Result<(), JsonError> {
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(self.error_here());
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        word.iter().try_for_each(|&b| self.expect(b))
    }
}

/// Asserts that the scanner's entry points agree on `body`: validation, top-level members,
/// member-by-member scanning and the listing filter. Panics on any disagreement. For the fuzz
/// target (`fuzz/targets/json_body.rs`) and the unit tests, which share it so that they check
/// the same things.
pub fn check_consistency(body: &[u8]) {
    let whole = validate(body);
    if whole.is_ok() {
        assert!(std::str::from_utf8(body).is_ok(), "valid JSON is valid UTF-8");
    }
    match top_level_members(body) {
        Ok(members) => {
            assert_eq!(whole, Ok(ValueKind::Object));
            let mut previous_end = 0;
            for member in &members {
                let range = member.value.clone();
                assert!(previous_end <= range.start && range.start < range.end && range.end <= body.len());
                previous_end = range.end;
                assert_eq!(validate(&body[range]), Ok(member.kind), "a value scans alone");
                assert_eq!(string_value(body, member).is_some(), member.kind == ValueKind::String);
                let _ = go_name_matches(&member.name, "model");
            }
            let mut seen = 0;
            assert_eq!(for_each_top_level_member(body, |_| seen += 1), Ok(()));
            assert_eq!(seen, members.len());
        }
        Err(JsonError::NotAnObject) => assert!(whole.is_ok() && whole != Ok(ValueKind::Object)),
        Err(error) => assert_eq!(whole, Err(error), "both entry points see the same fault"),
    }
    for array in ["models", "data", "x"] {
        let all = filter_listing(body, array, |_| true);
        match &all {
            Ok(kept) => assert_eq!(kept.as_ref(), body, "keeping everything changes nothing"),
            Err(_) => assert!(whole != Ok(ValueKind::Object)),
        }
        let mut toggle = false;
        let some = filter_listing(body, array, |entry| {
            let _ = (entry.string("name"), entry.string("id"), entry.raw());
            toggle = !toggle;
            toggle
        });
        let none = filter_listing(body, array, |_| false);
        for filtered in [some, none] {
            match filtered {
                Ok(filtered) => assert_eq!(validate(&filtered), Ok(ValueKind::Object), "still a JSON object"),
                Err(error) => assert_eq!(Err::<(), _>(error), all.clone().map(|_| ())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn members(body: &str) -> Vec<(String, String, ValueKind)> {
        top_level_members(body.as_bytes())
            .unwrap()
            .into_iter()
            .map(|m| (m.name.to_string(), body[m.value.clone()].to_string(), m.kind))
            .collect()
    }

    fn string_of(body: &str, name: &str) -> Option<String> {
        let found = top_level_members(body.as_bytes()).unwrap();
        let member = found.iter().find(|m| m.name == name)?;
        string_value(body.as_bytes(), member).map(Cow::into_owned)
    }

    #[test]
    fn accepts_rfc_8259_json() {
        let valid: &[&[u8]] = &[
            b"{}",
            b"[]",
            b"0",
            b"-0",
            b"-0.0e-0",
            b"1.5e+10",
            b"-1E-2",
            b"123456789012345678901234567890",
            b"\"\"",
            b"true",
            b"false",
            b"null",
            b" \t\r\n{ \"a\" : [ 1 , 2 , { \"b\" : null } ] , \"c\":{}} \r\n\t",
            b"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"",
            "\"é😀 \u{7f} \u{10FFFF}\"".as_bytes(),
            b"\"\\uDEAD lone surrogates are valid JSON\"",
            b"[[[]],[{}],{\"\":[]}]",
            b"{\"a\":1,\"a\":2}",
        ];
        for &body in valid {
            assert!(validate(body).is_ok(), "{:?}", String::from_utf8_lossy(body));
        }
        assert_eq!(validate(b" [1] "), Ok(ValueKind::Array));
        assert_eq!(validate(b"\"x\""), Ok(ValueKind::String));
        assert_eq!(validate(b"-1"), Ok(ValueKind::Number));
    }

    #[test]
    fn refuses_everything_else() {
        let invalid: &[&[u8]] = &[
            b"",
            b"  ",
            b"{,}",
            b"[1,]",
            b"[,1]",
            b"[1,,2]",
            b"{\"a\":1,}",
            b"{\"a\":1,,\"b\":2}",
            b"{\"a\"}",
            b"{\"a\" 1}",
            b"{\"a\"::1}",
            b"{1:2}",
            b"{a:1}",
            b"{'a':1}",
            b"[1 2]",
            b"{\"a\":1 \"b\":2}",
            b"[1}",
            b"{\"a\":1]",
            b"01",
            b"-01",
            b"00",
            b"1.",
            b".5",
            b"-",
            b"+1",
            b"1e",
            b"1e+",
            b"1.e5",
            b"0x10",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"tru",
            b"nul",
            b"True",
            b"nulll",
            b"'a'",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"\\u12G4\"",
            b"\"\\U0041\"",
            b"\"\\",
            b"\"a",
            b"\"a\t\"",
            b"\"a\nb\"",
            b"\"\x00\"",
            b"\"\x1f\"",
            b"{} {}",
            b"{}x",
            b"[]]",
            b"1 2",
            b"\xef\xbb\xbf{}",
            b"/* comment */{}",
            b"{}// comment",
            b"[1]\x00",
            b"\x0c{}",
            b"\xc2\xa0{}",
        ];
        for &body in invalid {
            assert!(validate(body).is_err(), "{:?}", String::from_utf8_lossy(body));
            assert!(top_level_members(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn errors_say_where_and_what() {
        assert_eq!(validate(b""), Err(JsonError::Truncated));
        assert_eq!(validate(b"[1,"), Err(JsonError::Truncated));
        assert_eq!(validate(b"{\"a\":x}"), Err(JsonError::Syntax { at: 5 }));
        assert_eq!(validate(b"{} {}"), Err(JsonError::TrailingData { at: 3 }));
        assert_eq!(validate(b"01"), Err(JsonError::TrailingData { at: 1 }));
        assert_eq!(validate(b"\xef\xbb\xbf{}"), Err(JsonError::Syntax { at: 0 }));
        assert_eq!(validate(b"\"ab\xff\""), Err(JsonError::InvalidUtf8 { at: 3 }));
        assert_eq!(top_level_members(b"[]"), Err(JsonError::NotAnObject));
        assert_eq!(top_level_members(b"[1,"), Err(JsonError::Truncated));
        assert_eq!(JsonError::Syntax { at: 17 }.to_string(), "invalid JSON at byte 17");
        assert_eq!(JsonError::TooDeep.to_string(), "JSON nested deeper than 10000 levels");
        let body = b"{\"model\":\"secret-model\", oops}";
        let message = top_level_members(body).unwrap_err().to_string();
        assert!(!message.contains("secret") && !message.contains("oops"), "{message}");
    }

    #[test]
    fn strings_must_be_valid_utf8() {
        let invalid: &[&[u8]] = &[
            b"\x80",                     // a continuation byte alone
            b"\xc3",                     // a sequence cut short by the quote
            b"\xc3(",                    // a bad continuation
            b"\xc0\xaf",                 // overlong '/'
            b"\xc1\xbf",                 // overlong
            b"\xe0\x80\xaf",             // overlong '/'
            b"\xf0\x80\x80\xaf",         // overlong '/'
            b"\xed\xa0\x80",             // the surrogate U+D800, encoded
            b"\xed\xbf\xbf",             // the surrogate U+DFFF, encoded
            b"\xed\xa0\xbd\xed\xb8\x80", // a surrogate pair, each half encoded (CESU-8)
            b"\xf4\x90\x80\x80",         // above U+10FFFF
            b"\xf5\x80\x80\x80",
            b"\xfe",
            b"\xff",
        ];
        for &bad in invalid {
            let value = [b"\"a".as_slice(), bad, b"\""].concat();
            assert_eq!(validate(&value), Err(JsonError::InvalidUtf8 { at: 2 }), "{bad:?}");
            let name = [b"{\"".as_slice(), bad, b"\":1}"].concat();
            assert_eq!(top_level_members(&name), Err(JsonError::InvalidUtf8 { at: 2 }), "{bad:?}");
        }
        assert!(validate("\"\u{80}\u{7ff}\u{800}\u{d7ff}\u{e000}\u{ffff}\u{10000}\u{10ffff}\"".as_bytes()).is_ok());
        // Outside a string, any non-ASCII byte is simply not JSON.
        assert_eq!(validate("[é]".as_bytes()), Err(JsonError::Syntax { at: 1 }));
    }

    #[test]
    fn every_truncation_of_a_body_is_an_error() {
        let body = "{\"model\" : \"llama3.2:1b\", \"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo \
                    \\ud83d\\ude00 ü\"}],\"options\":{\"temperature\":-0.5e+1,\"seed\":42},\"stream\":false,\
                    \"keep\":null,\"raw\":true}"
            .as_bytes();
        assert!(top_level_members(body).is_ok());
        for end in 0..body.len() {
            assert!(validate(&body[..end]).is_err(), "prefix of {end} bytes");
            assert!(top_level_members(&body[..end]).is_err(), "prefix of {end} bytes");
        }
    }

    #[test]
    fn single_byte_changes_never_panic_and_the_entry_points_agree() {
        let sample = "{\"model\":\"m\\u0031\",\"x\":[1,-2.5e3,{\"y\":[true,false,null]}],\"z\":\"é\"}";
        let listing = "{\"models\":[{\"name\":\"a\"}, {\"name\":\"b\"} ,\"c\"],\"data\":[]}";
        for body in [sample.as_bytes(), listing.as_bytes()] {
            mutate_and_check(body);
        }
    }

    fn mutate_and_check(body: &[u8]) {
        for at in 0..body.len() {
            for replacement in
                [0u8, b' ', b'"', b'\\', b',', b':', b'{', b'}', b'[', b']', b'0', b'e', b'-', 0x80, 0xc3, 0xff]
            {
                let mut changed = body.to_vec();
                changed[at] = replacement;
                check_consistency(&changed);
            }
            let mut shorter = body.to_vec();
            shorter.remove(at);
            check_consistency(&shorter);
        }
    }

    #[test]
    fn fuzz_seeds_hold_the_invariants() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/json_body");
        let mut count = 0;
        for seed in std::fs::read_dir(seeds).unwrap() {
            check_consistency(&std::fs::read(seed.unwrap().path()).unwrap());
            count += 1;
        }
        assert!(count >= 5);
    }

    fn nested(depth: usize, open: &str, inner: &str, close: &str) -> Vec<u8> {
        [open.repeat(depth), inner.to_string(), close.repeat(depth)].concat().into_bytes()
    }

    #[test]
    fn nesting_stops_at_go_s_limit_without_recursion() {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            assert_eq!(validate(&nested(MAX_DEPTH, open, "1", close)).map(|_| ()), Ok(()));
            assert_eq!(validate(&nested(MAX_DEPTH + 1, open, "1", close)), Err(JsonError::TooDeep));
        }
        // The top-level object counts as one level.
        assert_eq!(top_level_members(&nested(MAX_DEPTH, "{\"a\":", "1", "}")).map(|m| m.len()), Ok(1));
        assert_eq!(top_level_members(&nested(MAX_DEPTH + 1, "{\"a\":", "1", "}")), Err(JsonError::TooDeep));
        let mut mixed = b"{\"a\":".to_vec();
        mixed.extend(nested(MAX_DEPTH - 1, "[", "{}", "]"));
        mixed.push(b'}');
        assert_eq!(top_level_members(&mixed), Err(JsonError::TooDeep));
        let mut deepest = b"{\"a\":".to_vec();
        deepest.extend(nested(MAX_DEPTH - 1, "[", "0", "]"));
        deepest.push(b'}');
        assert!(top_level_members(&deepest).is_ok());
        // A million open brackets: refused at the limit, no stack overflow.
        assert_eq!(validate(&vec![b'['; 1_000_000]), Err(JsonError::TooDeep));
        // Levels closed again do not count: wide is not deep.
        let wide = format!("[{}1]", "[[[]]],".repeat(100_000));
        assert!(validate(wide.as_bytes()).is_ok());
    }

    #[test]
    fn reports_top_level_members_in_order_with_duplicates() {
        let body = r#" { "model" : "a", "n": -1.5, "o": {"model": "nested"}, "l": [{"model": "in-array"}],
                       "t": true, "f": false, "z": null, "model": "b" } "#;
        let found = members(body);
        let kinds: Vec<ValueKind> = found.iter().map(|m| m.2).collect();
        use ValueKind::*;
        assert_eq!(kinds, [String, Number, Object, Array, True, False, Null, String]);
        assert_eq!(found[0], ("model".into(), "\"a\"".into(), String));
        assert_eq!(found[1].1, "-1.5");
        assert_eq!(found[2].1, r#"{"model": "nested"}"#);
        assert_eq!(found[7], ("model".into(), "\"b\"".into(), String));
        let models: Vec<&str> = found.iter().filter(|m| m.0 == "model").map(|m| m.1.as_str()).collect();
        assert_eq!(models, ["\"a\"", "\"b\""], "nested members are not reported");
        assert!(members("{}").is_empty());
        assert!(members(" {\n} ").is_empty());
    }

    #[test]
    fn the_callback_sees_the_same_members() {
        let body = br#"{"a":1,"model":"m","a":[2]}"#;
        let mut seen = Vec::new();
        assert_eq!(for_each_top_level_member(body, |m| seen.push(m)), Ok(()));
        assert_eq!(seen, top_level_members(body).unwrap());
    }

    #[test]
    fn non_object_bodies_are_refused() {
        for body in ["[]", "[{\"model\":\"m\"}]", "\"model\"", "1", "null", " true "] {
            assert_eq!(top_level_members(body.as_bytes()), Err(JsonError::NotAnObject), "{body}");
        }
    }

    #[test]
    fn names_are_unescaped() {
        let found = members(r#"{"mod\u0065l":1,"\u006dodel":2,"a\/b":3,"\"q\\":4,"\u017Fource":5,"e\u0301":6}"#);
        let names: Vec<&str> = found.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(names, ["model", "model", "a/b", "\"q\\", "ſource", "e\u{301}"]);
        // Pairs become one rune; a surrogate outside a pair becomes U+FFFD, as in Go.
        let found = members(
            r#"{"\uD83D\uDE00":1,"\uD800x":2,"\uDC00":3,"\uD800\uD800\uDC00":4,"\uDBFF\uDFFF":5,"\uD800\u0041":6}"#,
        );
        let names: Vec<&str> = found.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(names, ["😀", "\u{FFFD}x", "\u{FFFD}", "\u{FFFD}\u{10000}", "\u{10FFFF}", "\u{FFFD}A"]);
        // Names without escapes are borrowed from the body.
        let body = br#"{"plain":1}"#;
        assert!(matches!(top_level_members(body).unwrap()[0].name, Cow::Borrowed("plain")));
    }

    #[test]
    fn string_values_are_unescaped() {
        let body = r#"{"model":"llama\u0033.2:1b","b":"tab\there \"q\" \\ \/ \b\f\n\r","c":"é\u00e9\ud83d\ude00","n":1,"d":""}"#;
        assert_eq!(string_of(body, "model").as_deref(), Some("llama3.2:1b"));
        assert_eq!(string_of(body, "b").as_deref(), Some("tab\there \"q\" \\ / \u{8}\u{c}\n\r"));
        assert_eq!(string_of(body, "c").as_deref(), Some("éé😀"));
        assert_eq!(string_of(body, "d").as_deref(), Some(""));
        assert_eq!(string_of(body, "n"), None, "not a string");
        let found = top_level_members(body.as_bytes()).unwrap();
        assert!(matches!(string_value(body.as_bytes(), &found[0]), Some(Cow::Owned(_))));
        let plain = br#"{"model":"llama3"}"#;
        let found = top_level_members(plain).unwrap();
        assert!(matches!(string_value(plain, &found[0]), Some(Cow::Borrowed("llama3"))));
        // A member from another body is answered with None or some string, never a panic.
        assert_eq!(string_value(b"\"", &found[0]), None);
        assert_eq!(string_value(b"", &found[0]), None);
    }

    #[test]
    fn unescape_refuses_what_is_not_a_json_string() {
        for bad in [&b"\\"[..], b"\\x", b"\\u12", b"\\u12g4", b"a\"b", b"\x01", b"\xff", b"\\u00e9\xc3"] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_match_as_go_matches_struct_fields() {
        for name in ["model", "MODEL", "Model", "mOdEl"] {
            assert!(go_name_matches(name, "model"), "{name}");
        }
        for name in ["models", "mode", "", "mode l", "m\u{0}odel", "modeł", "ｍodel", "model\u{301}"] {
            assert!(!go_name_matches(name, "model"), "{name:?}");
        }
        // After unescaping, as the member extraction hands them over.
        for body in [r#"{"\u006dodel":1}"#, r#"{"mod\u0065l":1}"#, r#"{"\u004DODEL":1}"#] {
            assert!(go_name_matches(&top_level_members(body.as_bytes()).unwrap()[0].name, "model"), "{body}");
        }
        let names = members(r#"{"nam\u0065":1,"\u017Fource":2,"ſOURCE":3,"de\u017Ftination":4}"#);
        assert!(go_name_matches(&names[0].0, "name"));
        assert!(go_name_matches(&names[1].0, "source"));
        assert!(go_name_matches(&names[2].0, "source"));
        assert!(go_name_matches(&names[3].0, "destination"));
        assert!(go_name_matches("FROM", "from") && go_name_matches("Destination", "destination"));
        // The long s only stands for s, the Kelvin sign only for k.
        assert!(!go_name_matches("ſ", "f") && !go_name_matches("ſ", "t"));
        assert!(go_name_matches("\u{212A}ind", "kind") && go_name_matches("\u{212A}IND", "kind"));
        for field in ["model", "name", "from", "source", "destination"] {
            let with_kelvin = format!("\u{212A}{}", &field[1..]);
            assert!(!go_name_matches(&with_kelvin, field), "{with_kelvin}");
        }
        // Turkish dotted and dotless i fold only to themselves in Go.
        assert!(go_name_matches("INFO", "info"));
        assert!(!go_name_matches("\u{130}nfo", "info") && !go_name_matches("\u{131}nfo", "info"));
        // Non-letters must be equal.
        assert!(go_name_matches("keep_alive", "keep_alive") && !go_name_matches("keep-alive", "keep_alive"));
        assert!(!go_name_matches("a\u{7f}", "a_"));
    }

    fn tags(names: &[&str]) -> String {
        let entries: Vec<String> = names
            .iter()
            .map(|n| format!(r#"{{"name":"{n}","model":"{n}","size":1,"details":{{"family":"x","name":"inner"}}}}"#))
            .collect();
        format!(r#"{{"models":[{}]}}"#, entries.join(","))
    }

    fn keep_names<'a>(allowed: &'a [&'a str]) -> impl FnMut(&Entry<'_>) -> bool + 'a {
        move |entry| entry.string("name").is_some_and(|name| allowed.contains(&name.as_ref()))
    }

    fn listed_names(body: &[u8], array: &str) -> Vec<String> {
        let mut names = Vec::new();
        let unchanged = filter_listing(body, array, |entry| {
            names.push(entry.string("name").or_else(|| entry.string("id")).unwrap_or_default().into_owned());
            true
        });
        assert!(matches!(unchanged, Ok(Cow::Borrowed(_))));
        names
    }

    #[test]
    fn filter_drops_first_last_middle_all_or_none() {
        let body = tags(&["a", "b", "c", "d"]);
        let cases: &[(&[&str], &[&str])] = &[
            (&["b", "c", "d"], &["b", "c", "d"]),
            (&["a", "b", "c"], &["a", "b", "c"]),
            (&["a", "d"], &["a", "d"]),
            (&["b"], &["b"]),
            (&[], &[]),
        ];
        for &(allowed, expected) in cases {
            let filtered = filter_listing(body.as_bytes(), "models", keep_names(allowed)).unwrap();
            assert_eq!(validate(&filtered), Ok(ValueKind::Object));
            assert_eq!(listed_names(&filtered, "models"), expected);
            assert_eq!(filtered.as_ref(), tags(expected).as_bytes(), "the rest is untouched");
        }
        let all = filter_listing(body.as_bytes(), "models", keep_names(&["a", "b", "c", "d"])).unwrap();
        assert!(matches!(all, Cow::Borrowed(_)));
        assert_eq!(filter_listing(b"{\"models\":[]}", "models", |_| false).unwrap().as_ref(), b"{\"models\":[]}");
    }

    #[test]
    fn filter_keeps_the_layout_around_the_array() {
        let body = "{\n  \"models\": [\n    {\"name\": \"a\"},\n    {\"name\": \"b\"} ,\n    {\"name\": \"c\"}\n  ],\n  \"x\": 1\n}\n";
        let keep = |allowed| filter_listing(body.as_bytes(), "models", keep_names(allowed)).unwrap().into_owned();
        assert_eq!(
            String::from_utf8(keep(&["a", "c"])).unwrap(),
            "{\n  \"models\": [\n    {\"name\": \"a\"} ,\n    {\"name\": \"c\"}\n  ],\n  \"x\": 1\n}\n"
        );
        assert_eq!(
            String::from_utf8(keep(&["b"])).unwrap(),
            "{\n  \"models\": [\n    {\"name\": \"b\"}\n  ],\n  \"x\": 1\n}\n"
        );
        assert_eq!(String::from_utf8(keep(&[])).unwrap(), "{\n  \"models\": [],\n  \"x\": 1\n}\n");
    }

    #[test]
    fn filter_reads_entries_by_exact_name_and_the_openai_listing_by_id() {
        let body = br#"{"object":"list","data":[{"id":"llama3:latest","object":"model","owned_by":"library"},
                        {"id":"qw\u0065n:7b","object":"model"},{"ID":"hidden:1"},{"id":7},"text",null]}"#;
        let mut seen = Vec::new();
        let filtered = filter_listing(body, "data", |entry| {
            let id = entry.string("id");
            seen.push(id.as_deref().map(str::to_owned));
            id.is_some_and(|id| id.starts_with("qwen"))
        })
        .unwrap();
        assert_eq!(seen, [Some("llama3:latest".into()), Some("qwen:7b".into()), None, None, None, None]);
        assert_eq!(filtered.as_ref(), br#"{"object":"list","data":[{"id":"qw\u0065n:7b","object":"model"}]}"#);
        // The last of a repeated name counts; nested members are not the entry's own.
        let body = br#"{"models":[{"name":"a","name":"b"},{"details":{"name":"a"}}]}"#;
        let filtered = filter_listing(body, "models", keep_names(&["a"])).unwrap();
        assert_eq!(filtered.as_ref(), br#"{"models":[]}"#);
    }

    #[test]
    fn filter_leaves_bodies_without_the_array_alone() {
        for body in [
            r#"{"other":[{"name":"a"}]}"#,
            r#"{"models":null}"#,
            r#"{"models":"a"}"#,
            r#"{"models":{"name":"a"}}"#,
            r#"{"x":{"models":[{"name":"a"}]}}"#,
            r#"{"Models":[{"name":"a"}]}"#,
        ] {
            let filtered = filter_listing(body.as_bytes(), "models", |_| false).unwrap();
            assert!(matches!(filtered, Cow::Borrowed(b) if b == body.as_bytes()), "{body}");
        }
        assert_eq!(filter_listing(b"[]", "models", |_| false), Err(JsonError::NotAnObject));
        assert_eq!(filter_listing(b"{\"models\":[}", "models", |_| false), Err(JsonError::Syntax { at: 11 }));
        // Every array of that name is filtered, should the name repeat.
        let body = br#"{"models":[{"name":"a"},{"name":"b"}],"n":1,"models":[{"name":"b"},{"name":"a"}]}"#;
        let filtered = filter_listing(body, "models", keep_names(&["a"])).unwrap();
        assert_eq!(filtered.as_ref(), br#"{"models":[{"name":"a"}],"n":1,"models":[{"name":"a"}]}"#);
    }

    #[test]
    fn a_20_mb_image_scans_fast() {
        let image: String =
            (0..20_000_000u32).map(|i| b"ABCDEFGHabcdefgh01234567+/xyzXYZ"[(i % 32) as usize] as char).collect();
        let body = format!(r#"{{"model":"llava","prompt":"what is this?","images":["{image}"],"stream":false}}"#);
        let start = Instant::now();
        let found = top_level_members(body.as_bytes()).unwrap();
        let elapsed = start.elapsed();
        println!("20 MB body with one base64 image scanned in {elapsed:?}");
        assert_eq!(found.len(), 4);
        assert!(elapsed.as_millis() < 500, "{elapsed:?}");
        // Text above U+007F takes the UTF-8 check as well.
        let prompt = "日本語のテキスト、ü and ASCII. ".repeat(20_000_000 / 48);
        let body = format!(r#"{{"prompt":"{prompt}","model":"m"}}"#);
        let start = Instant::now();
        let found = top_level_members(body.as_bytes()).unwrap();
        let elapsed = start.elapsed();
        println!("20 MB body with a non-ASCII prompt scanned in {elapsed:?}");
        assert_eq!(found[1].name, "model");
        assert!(elapsed.as_millis() < 500, "{elapsed:?}");
    }

    #[test]
    fn filtering_200_entries_is_fast() {
        let entry = |i: usize| {
            format!(
                r#"{{"name":"model-{i}:latest","model":"model-{i}:latest","modified_at":"2025-05-01T10:00:00.000000000Z","size":4683087332,"digest":"a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72","details":{{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"8.0B","quantization_level":"Q4_K_M"}}}}"#
            )
        };
        let body = format!(r#"{{"models":[{}]}}"#, (0..200).map(entry).collect::<Vec<_>>().join(","));
        let keep = |entry: &Entry<'_>| entry.string("name").is_some_and(|name| name.len() % 2 == 0);
        let _warm = filter_listing(body.as_bytes(), "models", keep).unwrap();
        let runs = 20;
        let start = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(filter_listing(std::hint::black_box(body.as_bytes()), "models", keep).unwrap());
        }
        let each = start.elapsed() / runs;
        println!("200-entry listing ({} bytes) filtered in {each:?}", body.len());
        let filtered = filter_listing(body.as_bytes(), "models", keep).unwrap();
        assert_eq!(validate(&filtered), Ok(ValueKind::Object));
        assert!(each.as_millis() < 10, "{each:?}");
    }

    #[test]
    fn plain_text_skipping_stops_at_every_stopper() {
        let text = b"abcdefghijklmnopqrstuvwxyz\xc3\xa9\x7f0123456789";
        let non_ascii_at = 26;
        assert_eq!(skip_plain_text(text, 0), (text.len(), true));
        assert_eq!(skip_plain_text(text, non_ascii_at + 2), (text.len(), false));
        for at in 0..text.len() {
            for stopper in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                let mut changed = text.to_vec();
                changed[at] = stopper;
                for from in 0..=at {
                    let non_ascii_before = (from..at).any(|i| changed[i] >= 0x80);
                    assert_eq!(skip_plain_text(&changed, from), (at, non_ascii_before), "{at} {from}");
                }
            }
        }
    }
}
