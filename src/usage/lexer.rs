//! The small JSON tokenizer under the scanner: a path stack and the byte-by-byte states of a
//! value, in bounded memory whatever the answer. What it finds goes to a `Tally`.

use super::kind::*;
use super::sse::EventType;
use super::tally::*;
use crate::bytescan;
use crate::json::simple_escape;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lex {
    /// Between top-level values.
    Between,
    /// A value is expected.
    Value,
    /// Right after `[`: a value or `]`.
    FirstValue,
    /// Right after `{`: a member name or `}`.
    FirstName,
    /// After a `,` in an object: a member name.
    Name,
    Colon,
    /// After a value in a container: `,` or the closing bracket.
    AfterValue,
    Str,
    Num,
    Lit,
    /// Inside a container nothing in which counts, or deeper than [`TRACKED_DEPTH`]: counting
    /// brackets.
    Skip,
    Broken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Escape {
    None,
    /// After `\`.
    Backslash,
    /// After `\u` and `digits` hex digits, whose value is `unit` so far.
    Unicode {
        digits: u8,
        unit: u16,
    },
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Frame {
    pub(super) ctx: Ctx,
    pub(super) is_object: bool,
    pub(super) has_elements: bool,
}

/// A streaming JSON tokenizer that keeps only the place of the current value and the few
/// strings and numbers counting needs. Strict where something counts, not a validator (what it
/// skips it only bracket-matches): what it cannot follow breaks it, and it reads nothing more.
#[derive(Clone)]
pub(super) struct Lexer {
    pub(super) state: Lex,
    pub(super) depth: usize,
    pub(super) frames: [Frame; TRACKED_DEPTH],
    pub(super) slot: Slot,
    // A string.
    pub(super) in_name: bool,
    pub(super) escape: Escape,
    /// A high surrogate waiting for its low half (0: none).
    pub(super) high_surrogate: u16,
    pub(super) capture: bool,
    pub(super) capture_limit: usize,
    pub(super) captured: [u8; MAX_MODEL_LEN],
    pub(super) captured_len: usize,
    pub(super) overflowed: bool,
    pub(super) non_empty: bool,
    // A number.
    pub(super) number: u64,
    pub(super) number_ok: bool,
    // A literal.
    pub(super) literal: &'static [u8],
    pub(super) literal_at: usize,
    // Skipping deep containers.
    pub(super) skip_depth: u64,
    pub(super) skip_in_string: bool,
    pub(super) skip_escape: bool,
    pub(super) record: Record,
}

impl Lexer {
    pub(super) fn new() -> Self {
        Lexer {
            state: Lex::Between,
            depth: 0,
            frames: [Frame { ctx: Ctx::Other, is_object: false, has_elements: false }; TRACKED_DEPTH],
            slot: Slot::Top,
            in_name: false,
            escape: Escape::None,
            high_surrogate: 0,
            capture: false,
            capture_limit: 0,
            captured: [0; MAX_MODEL_LEN],
            captured_len: 0,
            overflowed: false,
            non_empty: false,
            number: 0,
            number_ok: false,
            literal: b"",
            literal_at: 0,
            skip_depth: 0,
            skip_in_string: false,
            skip_escape: false,
            record: Record::default(),
        }
    }

    pub(super) fn reset(&mut self) {
        self.state = Lex::Between;
        self.depth = 0;
        self.skip_depth = 0;
        self.record = Record::default();
    }

    pub(super) fn feed(&mut self, bytes: &[u8], tally: &mut Tally, env: Env) {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                Lex::Broken if env.framing == Framing::Json => {
                    // NDJSON: an object the tokenizer cannot follow ends with its line; the
                    // next line starts afresh (Ollama writes one object a line, and a newline
                    // never sits inside one of its strings).
                    tally.malformed = true;
                    match bytescan::find_any(bytes, i, [b'\n']) {
                        end if end < bytes.len() => {
                            self.reset();
                            i = end + 1;
                            continue;
                        }
                        _ => return,
                    }
                }
                Lex::Broken => return,
                Lex::Str => {
                    i = self.string_bytes(bytes, i, tally, env);
                    continue;
                }
                Lex::Skip => {
                    i = self.skip_bytes(bytes, i, tally, env);
                    continue;
                }
                Lex::Num => {
                    i += self.number_byte(bytes[i], tally, env);
                    continue;
                }
                Lex::Lit => {
                    i += self.literal_byte(bytes[i], tally, env);
                    continue;
                }
                _ => {}
            }
            let b = bytes[i];
            i += 1;
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                if b == b'\n' && env.is_lines() && self.state != Lex::Between {
                    tally.malformed = true;
                    self.reset();
                }
                continue;
            }
            self.structural_byte(b, tally, env);
        }
    }

    /// A byte of a number; how far it moves on (0: the byte after the number, which the next
    /// state looks at).
    #[inline]
    pub(super) fn number_byte(&mut self, b: u8, tally: &mut Tally, env: Env) -> usize {
        match b {
            b'0'..=b'9' => {
                self.number = match self.number.checked_mul(10).and_then(|n| n.checked_add(u64::from(b - b'0'))) {
                    Some(n) => n,
                    None => {
                        self.number_ok = false;
                        0
                    }
                };
                1
            }
            b'-' | b'+' | b'.' | b'e' | b'E' => {
                // Not a count (Go writes an int as digits alone).
                self.number_ok = false;
                1
            }
            _ => {
                self.end_number();
                self.value_done(tally, env);
                0
            }
        }
    }

    /// A byte of `true`, `false` or `null`; how far it moves on (0: broken, and the byte is
    /// looked at again, for a newline).
    #[inline]
    pub(super) fn literal_byte(&mut self, b: u8, tally: &mut Tally, env: Env) -> usize {
        if b != self.literal[self.literal_at] {
            self.state = Lex::Broken;
            return 0;
        }
        self.literal_at += 1;
        if self.literal_at == self.literal.len() {
            if self.slot == Slot::Done {
                match self.literal {
                    b"true" => self.record.done = Some(true),
                    b"false" => self.record.done = Some(false),
                    _ => {}
                }
            }
            self.value_done(tally, env);
        }
        1
    }

    /// A byte outside strings, numbers and literals, white space excepted.
    #[inline]
    pub(super) fn structural_byte(&mut self, b: u8, tally: &mut Tally, env: Env) {
        match self.state {
            Lex::Between => {
                self.record = Record::default();
                self.slot = Slot::Top;
                self.begin_value(b);
            }
            Lex::Value => self.begin_value(b),
            Lex::FirstValue => {
                if b == b']' {
                    self.close(b, tally, env);
                } else {
                    self.begin_value(b);
                }
            }
            Lex::FirstName | Lex::Name => {
                if b == b'"' {
                    self.begin_string(true);
                } else if b == b'}' && self.state == Lex::FirstName {
                    self.close(b, tally, env);
                } else {
                    self.state = Lex::Broken;
                }
            }
            Lex::Colon => {
                self.state = if b == b':' { Lex::Value } else { Lex::Broken };
            }
            Lex::AfterValue => match b {
                b',' => {
                    self.state = if self.frames[self.depth - 1].is_object { Lex::Name } else { Lex::Value };
                }
                b'}' | b']' => self.close(b, tally, env),
                _ => self.state = Lex::Broken,
            },
            Lex::Str | Lex::Num | Lex::Lit | Lex::Skip | Lex::Broken => unreachable!("handled in feed"),
        }
    }

    fn begin_value(&mut self, b: u8) {
        if self.depth > 0 {
            let frame = &mut self.frames[self.depth - 1];
            if !frame.is_object {
                let first = !frame.has_elements;
                frame.has_elements = true;
                self.slot = if frame.ctx == Ctx::Choices {
                    self.record.choices = Choices::NonEmpty;
                    if first {
                        Slot::Choice0
                    } else {
                        Slot::Ignore
                    }
                } else {
                    Slot::Ignore
                };
            }
        }
        match b {
            b'{' => self.open(true),
            b'[' => self.open(false),
            b'"' => self.begin_string(false),
            b'-' => {
                self.state = Lex::Num;
                self.number = 0;
                self.number_ok = false;
            }
            b'0'..=b'9' => {
                self.state = Lex::Num;
                self.number = u64::from(b - b'0');
                self.number_ok = true;
            }
            b't' | b'f' | b'n' => {
                self.state = Lex::Lit;
                self.literal = match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                self.literal_at = 1;
            }
            _ => self.state = Lex::Broken,
        }
    }

    fn open(&mut self, is_object: bool) {
        let ctx = match (self.slot, is_object) {
            (Slot::Top, true) => {
                self.record.is_object = true;
                Ctx::Root
            }
            (Slot::Usage(source), true) => {
                self.record.usage_object[source as usize] = true;
                Ctx::Usage(source)
            }
            (Slot::Message, true) => Ctx::Message,
            (Slot::Response, true) => Ctx::Response,
            (Slot::Choices, false) => {
                self.record.choices = Choices::Empty;
                Ctx::Choices
            }
            (Slot::Choice0, true) => Ctx::Choice0,
            (Slot::Choice0Delta, true) => Ctx::Choice0Delta,
            (Slot::RootDelta, true) => Ctx::RootDelta,
            _ => Ctx::Other,
        };
        if ctx == Ctx::Other || self.depth == TRACKED_DEPTH {
            // Nothing in it counts (embeddings, a message's content, tool calls...): skip it
            // by its brackets alone, fast and however deep.
            self.state = Lex::Skip;
            self.skip_depth = 1;
            self.skip_in_string = false;
            self.skip_escape = false;
            return;
        }
        self.frames[self.depth] = Frame { ctx, is_object, has_elements: false };
        self.depth += 1;
        self.state = if is_object { Lex::FirstName } else { Lex::FirstValue };
    }

    fn close(&mut self, b: u8, tally: &mut Tally, env: Env) {
        if self.depth == 0 || self.frames[self.depth - 1].is_object != (b == b'}') {
            self.state = Lex::Broken;
            return;
        }
        self.depth -= 1;
        self.value_done(tally, env);
    }

    /// A value has ended at `depth`: the top-level one is counted.
    fn value_done(&mut self, tally: &mut Tally, env: Env) {
        if self.depth == 0 {
            tally.commit(&self.record, env);
            self.state = Lex::Between;
        } else {
            self.state = Lex::AfterValue;
        }
    }

    fn begin_string(&mut self, name: bool) {
        self.state = Lex::Str;
        self.in_name = name;
        self.escape = Escape::None;
        self.high_surrogate = 0;
        self.captured_len = 0;
        self.overflowed = false;
        self.non_empty = false;
        (self.capture, self.capture_limit) = if name {
            (true, MAX_NAME_LEN)
        } else {
            match self.slot {
                Slot::Model(_) => (true, MAX_MODEL_LEN),
                Slot::Type => (true, MAX_TYPE_LEN),
                _ => (false, 0),
            }
        };
    }

    fn push_captured(&mut self, bytes: &[u8]) {
        let end = self.captured_len + bytes.len();
        if end > self.capture_limit {
            self.overflowed = true;
            return;
        }
        self.captured[self.captured_len..end].copy_from_slice(bytes);
        self.captured_len = end;
    }

    fn push_char(&mut self, c: char) {
        if self.capture {
            let mut utf8 = [0; 4];
            self.push_captured(c.encode_utf8(&mut utf8).as_bytes());
        }
    }

    /// A lone high surrogate becomes U+FFFD, as Go decodes it.
    fn flush_surrogate(&mut self) {
        if self.high_surrogate != 0 {
            self.high_surrogate = 0;
            self.push_char(char::REPLACEMENT_CHARACTER);
        }
    }

    fn unicode_escape(&mut self, unit: u16) {
        if self.high_surrogate != 0 {
            if (0xDC00..=0xDFFF).contains(&unit) {
                let high = u32::from(self.high_surrogate - 0xD800);
                self.high_surrogate = 0;
                let c = char::from_u32(0x10000 + (high << 10) + u32::from(unit - 0xDC00));
                self.push_char(c.unwrap_or(char::REPLACEMENT_CHARACTER));
                return;
            }
            self.flush_surrogate();
        }
        match unit {
            0xD800..=0xDBFF => self.high_surrogate = unit,
            0xDC00..=0xDFFF => self.push_char(char::REPLACEMENT_CHARACTER),
            _ => self.push_char(char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER)),
        }
    }

    /// Reads string bytes from `i`; answers where it stopped.
    fn string_bytes(&mut self, bytes: &[u8], mut i: usize, tally: &mut Tally, env: Env) -> usize {
        while i < bytes.len() {
            match self.escape {
                Escape::None => {
                    // Plain text up to the next quote, escape or control byte, in one step.
                    let (stop, _) = bytescan::skip_plain_text(bytes, i);
                    if stop > i {
                        self.non_empty = true;
                        if self.capture {
                            self.flush_surrogate();
                            self.push_captured(&bytes[i..stop]);
                        }
                        i = stop;
                        if i == bytes.len() {
                            return i;
                        }
                    }
                    let b = bytes[i];
                    i += 1;
                    match b {
                        b'"' => {
                            self.flush_surrogate();
                            self.end_string(tally, env);
                            return i;
                        }
                        b'\\' => {
                            self.non_empty = true;
                            self.escape = Escape::Backslash;
                        }
                        _ => {
                            // A control byte (skip_plain_text stops at nothing else): it may be
                            // the newline that ends the line.
                            self.state = Lex::Broken;
                            return i - 1;
                        }
                    }
                }
                Escape::Backslash => {
                    let b = bytes[i];
                    i += 1;
                    self.escape = Escape::None;
                    if b == b'u' {
                        self.escape = Escape::Unicode { digits: 0, unit: 0 };
                        continue;
                    }
                    let Some(c) = simple_escape(b) else {
                        self.state = Lex::Broken;
                        return i - 1;
                    };
                    self.flush_surrogate();
                    self.push_char(c);
                }
                Escape::Unicode { digits, unit } => {
                    let Some(digit) = char::from(bytes[i]).to_digit(16) else {
                        self.state = Lex::Broken;
                        return i;
                    };
                    i += 1;
                    let unit = unit << 4 | digit as u16;
                    if digits == 3 {
                        self.escape = Escape::None;
                        self.unicode_escape(unit);
                    } else {
                        self.escape = Escape::Unicode { digits: digits + 1, unit };
                    }
                }
            }
        }
        i
    }

    fn end_string(&mut self, tally: &mut Tally, env: Env) {
        let text = &self.captured[..self.captured_len];
        if self.in_name {
            let ctx = self.frames[self.depth - 1].ctx;
            self.slot = if self.overflowed { Slot::Ignore } else { slot_for(ctx, text) };
            self.state = Lex::Colon;
            return;
        }
        match self.slot {
            Slot::Model(source) if !self.overflowed => tally.model(source, text, env.dialect),
            Slot::Type => {
                self.record.event_type = Some(if self.overflowed { EventType::Other } else { EventType::parse(text) });
            }
            Slot::Text | Slot::RootDelta => self.record.text |= self.non_empty,
            _ => {}
        }
        self.value_done(tally, env);
    }

    fn end_number(&mut self) {
        if !self.number_ok {
            return;
        }
        let n = Some(self.number);
        match self.slot {
            Slot::PromptEvalCount => self.record.prompt_eval_count = n,
            Slot::EvalCount => self.record.eval_count = n,
            Slot::Count(source, field) => self.record.usage[source as usize][field as usize] = n,
            _ => {}
        }
    }

    /// Skips the inside of a container nothing in which counts, to its closing bracket: only
    /// brackets and strings (for the brackets in them) are looked at.
    fn skip_bytes(&mut self, bytes: &[u8], mut i: usize, tally: &mut Tally, env: Env) -> usize {
        // In NDJSON a newline ends the line, and so whatever it cut short. (Elsewhere, the
        // searches look for a quote twice instead.)
        let lines = env.is_lines();
        let newline = if lines { b'\n' } else { b'"' };
        while i < bytes.len() {
            if self.skip_in_string {
                if self.skip_escape {
                    if lines && bytes[i] == b'\n' {
                        self.state = Lex::Broken;
                        return i;
                    }
                    self.skip_escape = false;
                    i += 1;
                    continue;
                }
                let at = bytescan::find_any(bytes, i, [b'"', b'\\', newline]);
                if at == bytes.len() {
                    return at;
                }
                i = at;
                match bytes[i] {
                    b'"' => self.skip_in_string = false,
                    b'\\' => self.skip_escape = true,
                    _ => {
                        self.state = Lex::Broken;
                        return i;
                    }
                }
                i += 1;
                continue;
            }
            let at = bytescan::find_any(bytes, i, [b'"', b'{', b'[', b'}', b']', newline]);
            if at == bytes.len() {
                return at;
            }
            i = at;
            let b = bytes[i];
            i += 1;
            match b {
                b'"' => self.skip_in_string = true,
                b'{' | b'[' => self.skip_depth += 1,
                b'}' | b']' => {
                    self.skip_depth -= 1;
                    if self.skip_depth == 0 {
                        self.value_done(tally, env);
                        return i;
                    }
                }
                _ => {
                    self.state = Lex::Broken;
                    return i - 1;
                }
            }
        }
        i
    }
}
