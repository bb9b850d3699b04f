//! Just enough JSON to see a request body the way Ollama (Go's `encoding/json`) will (the
//! scanner `listing` cuts model listings with), and the one string escaper (`escape`).
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

use crate::bytescan::skip_plain_text;

mod escape;

pub use escape::{push_string_content, quoted};

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

/// A validating cursor over the body. Nesting is tracked in `open` (one bit per open container,
/// set for an object) rather than on the call stack; 10,000 levels fit in 1.25 KB, so it needs
/// no allocation.
pub(crate) struct Scanner<'a> {
    body: &'a [u8],
    pos: usize,
    depth: usize,
    open: [u64; MAX_DEPTH.div_ceil(64)],
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Scanner { body, pos: 0, depth: 0, open: [0; MAX_DEPTH.div_ceil(64)] }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
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

    pub(crate) fn skip_white_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    pub(crate) fn finish(&mut self) -> Result<(), JsonError> {
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
    pub(crate) fn value(&mut self) -> Result<ValueKind, JsonError> {
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
    pub(crate) fn object_members(
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
    pub(crate) fn collect_members(&mut self, mut on_member: impl FnMut(Member<'a>)) -> Result<(), JsonError> {
        self.object_members(|scanner, name| {
            let value_start = scanner.pos;
            let kind = scanner.value()?;
            on_member(Member { name, value: value_start..scanner.pos, kind });
            Ok(())
        })
    }

    /// Scans the array at `pos`. For each element, `element` must scan the value, which starts at
    /// `pos`. Answers where the array's brackets are.
    pub(crate) fn array_elements(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<(), JsonError>,
    ) -> Result<Range<usize>, JsonError> {
        let start = self.pos;
        self.expect(b'[')?;
        self.open_container(false)?;
        self.skip_white_space();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(start..self.pos);
        }
        loop {
            self.skip_white_space();
            element(self)?;
            self.skip_white_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(start..self.pos);
                }
                _ => return Err(self.error_here()),
            }
        }
    }

    /// Where the scan stands.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The body scanned.
    pub(crate) fn body(&self) -> &'a [u8] {
        self.body
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
}

#[cfg(test)]
mod tests;
