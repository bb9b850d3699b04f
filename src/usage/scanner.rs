//! [`UsageScanner`]: the model and token counts of an answer fed to it chunk by chunk.

use super::kind::*;
use super::lexer::*;
use super::plain::*;
use super::sse::*;
use super::tally::*;
use crate::bytescan;

/// Reads the model and the token counts out of an answer fed to it chunk by chunk.
///
/// Feed it the bytes as Ollama sent them (before [`UsageStripper`], which removes the usage).
/// Never fails: what it cannot read it does not count, and [`Self::saw_malformed`] says so.
#[derive(Clone)]
pub struct UsageScanner {
    pub(super) kind: AnswerKind,
    pub(super) lexer: Lexer,
    pub(super) sse: Sse,
    pub(super) tally: Tally,
}

impl UsageScanner {
    pub fn new(kind: AnswerKind) -> Self {
        UsageScanner { kind, lexer: Lexer::new(), sse: Sse::new(), tally: Tally::default() }
    }

    pub fn kind(&self) -> AnswerKind {
        self.kind
    }

    /// Scans the next bytes of the answer.
    pub fn feed(&mut self, chunk: &[u8]) {
        match self.kind.framing {
            Framing::Json if self.kind.dialect == Dialect::Native => self.feed_lines(chunk),
            Framing::Json => {
                let env = Env { dialect: self.kind.dialect, framing: Framing::Json, event: EventType::Absent };
                self.lexer.feed(chunk, &mut self.tally, env);
            }
            Framing::EventStream => self.feed_event_stream(chunk),
        }
    }

    /// A native answer, line by line: once the model is known, a whole line that plainly cannot
    /// carry the counts (see [`PlainLine`]) is passed over without the tokenizer; every
    /// other byte goes through it. The model and the counts are the tokenizer's however the
    /// answer is split; the tokens counted for an answer cut short may differ for lines Ollama
    /// never writes (two objects on a line, a nested `"done":false`).
    pub(super) fn feed_lines(&mut self, chunk: &[u8]) {
        let env = Env { dialect: Dialect::Native, framing: Framing::Json, event: EventType::Absent };
        // One SIMD pass over the chunk finds the newlines and what may make a line count.
        let (mut line_start, mut line) = (0, PlainLine::default());
        let mut base = 0;
        while base < chunk.len() {
            let mut mask = bytescan::mask_of(chunk, base, PlainLine::STOPS);
            while mask != 0 {
                let at = base + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if chunk[at] != b'\n' {
                    line.look_at(chunk, at);
                    continue;
                }
                let skippable = self.lexer.state == Lex::Between && self.tally.model.is_some();
                match line.verdict().filter(|_| skippable) {
                    Some(token) => self.tally.token_chunks += u64::from(token),
                    None => self.lexer.feed(&chunk[line_start..=at], &mut self.tally, env),
                }
                (line_start, line) = (at + 1, PlainLine::default());
            }
            base += 64;
        }
        if line_start < chunk.len() {
            self.lexer.feed(&chunk[line_start..], &mut self.tally, env);
        }
    }

    /// The top-level model of the answer (the first one seen), if it was valid UTF-8 of at most
    /// [`MAX_MODEL_LEN`] bytes.
    pub fn model(&self) -> Option<&str> {
        self.tally.model.as_deref()
    }

    /// The prompt tokens of the final usage report; before it (an answer cut short), the
    /// input tokens of an Anthropic stream's `message_start`, which may be an estimate.
    pub fn prompt_tokens(&self) -> Option<u64> {
        match self.tally.finished {
            Some((prompt, _)) => Some(prompt),
            None => self.tally.start_input_tokens,
        }
    }

    /// The completion tokens of the final usage report, once it has been seen.
    pub fn completion_tokens(&self) -> Option<u64> {
        self.tally.finished.map(|(_, completion)| completion)
    }

    /// [`Self::completion_tokens`] if the final report was seen, else the tokens relayed so
    /// far as chunks counted them (for a client that went away mid-stream).
    pub fn completion_tokens_so_far(&self) -> u64 {
        self.completion_tokens().unwrap_or(self.tally.token_chunks)
    }

    /// Chunks (objects or events) seen that carried one generated token each.
    pub fn token_chunks(&self) -> u64 {
        self.tally.token_chunks
    }

    /// Whether the final usage report was seen: the counts are Ollama's own.
    pub fn is_final(&self) -> bool {
        self.tally.finished.is_some()
    }

    /// Whether an event stream's `data: [DONE]` was seen.
    pub fn saw_done_marker(&self) -> bool {
        self.tally.done_marker
    }

    /// Whether the answer's end was seen: the final usage report (Ollama's `"done":true`,
    /// the `/v1` usage, Anthropic's `message_delta`) or an event stream's `data: [DONE]`.
    /// Nothing a client needs comes after it.
    pub fn saw_answer_end(&self) -> bool {
        self.is_final() || self.tally.done_marker
    }

    /// Whether some of the answer was not JSON as expected (and so not counted).
    pub fn saw_malformed(&self) -> bool {
        self.tally.malformed || (self.kind.framing == Framing::Json && self.lexer.state == Lex::Broken)
    }

    pub(super) fn feed_event_stream(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if self.sse.skip_lf {
                self.sse.skip_lf = false;
                if b == b'\n' {
                    i += 1;
                    continue;
                }
            }
            match self.sse.line {
                SseLine::Start => {
                    if b == b'\n' || b == b'\r' {
                        self.dispatch_event();
                        self.sse.skip_lf = b == b'\r';
                        i += 1;
                    } else if b == b':' {
                        // A comment.
                        self.sse.line = SseLine::Value { field: Field::Other, first: false };
                        i += 1;
                    } else {
                        self.sse.field_len = 0;
                        self.sse.line = SseLine::Field;
                    }
                }
                SseLine::Field => {
                    i += 1;
                    if b == b':' {
                        self.begin_field_value();
                    } else if b == b'\n' || b == b'\r' {
                        // A field name alone: its value is empty.
                        self.begin_field_value();
                        self.end_line(b);
                    } else {
                        // A name longer than the buffer matches nothing: count it, store none.
                        if let Some(slot) = self.sse.field.get_mut(self.sse.field_len) {
                            *slot = b;
                        }
                        self.sse.field_len = self.sse.field_len.saturating_add(1);
                    }
                }
                SseLine::Value { field, first } => {
                    if first {
                        self.sse.line = SseLine::Value { field, first: false };
                        if b == b' ' {
                            i += 1;
                            continue;
                        }
                    }
                    let rest = &bytes[i..];
                    let end = rest.iter().position(|&c| c == b'\n' || c == b'\r').unwrap_or(rest.len());
                    let value = &rest[..end];
                    match field {
                        Field::Data => self.data(value),
                        Field::Event => {
                            for &c in value {
                                if let Some(slot) = self.sse.event_name.get_mut(self.sse.event_len) {
                                    *slot = c;
                                }
                                self.sse.event_len = self.sse.event_len.saturating_add(1);
                            }
                        }
                        Field::Other => {}
                    }
                    i += end;
                    if end < rest.len() {
                        self.end_line(rest[end]);
                        i += 1;
                    }
                }
            }
        }
    }

    pub(super) fn begin_field_value(&mut self) {
        let name = self.sse.field.get(..self.sse.field_len).unwrap_or_default();
        let field = match name {
            b"data" => {
                if self.sse.data_lines > 0 {
                    // The lines of one event's data are joined with a line feed.
                    self.data(b"\n");
                }
                self.sse.data_lines = self.sse.data_lines.saturating_add(1);
                Field::Data
            }
            b"event" => {
                self.sse.event_len = 0;
                Field::Event
            }
            _ => Field::Other,
        };
        self.sse.line = SseLine::Value { field, first: true };
    }

    /// Bytes of the current event's data: to the lexer, and the first few kept for `[DONE]`.
    pub(super) fn data(&mut self, bytes: &[u8]) {
        for (&b, at) in bytes.iter().zip(self.sse.data_len..self.sse.data_prefix.len()) {
            self.sse.data_prefix[at] = b;
        }
        self.sse.data_len = self.sse.data_len.saturating_add(bytes.len());
        let env = Env { dialect: self.kind.dialect, framing: Framing::EventStream, event: self.sse.event };
        self.lexer.feed(bytes, &mut self.tally, env);
    }

    pub(super) fn end_line(&mut self, terminator: u8) {
        if let SseLine::Value { field: Field::Event, .. } = self.sse.line {
            self.sse.event = match self.sse.event_name.get(..self.sse.event_len) {
                Some(name) => EventType::parse(name),
                None => EventType::Other,
            };
        }
        self.sse.line = SseLine::Start;
        self.sse.skip_lf = terminator == b'\r';
    }

    /// A blank line ends an event: what its data held has been counted already, as each JSON
    /// value ended; what did not end is dropped.
    pub(super) fn dispatch_event(&mut self) {
        if self.sse.data_lines > 0 {
            if self.sse.data_len == 6 && self.sse.data_prefix.starts_with(b"[DONE]") {
                self.tally.done_marker = true;
            } else if self.lexer.state != Lex::Between {
                self.tally.malformed = true;
            }
        }
        self.lexer.reset();
        self.sse.event = EventType::Absent;
        self.sse.data_lines = 0;
        self.sse.data_len = 0;
    }
}
