//! Token usage read out of Ollama's answers as they stream past, and the `/v1` rewrite that
//! asks Ollama for usage a client did not ask for, then takes it back out of the answer.
//!
//! [`UsageScanner`] is fed an answer chunk by chunk, split anywhere (inside a UTF-8 sequence, a
//! string, an escape or a number), and keeps about 1.5 KB of state whatever the answer's size:
//! it never holds a line, an event or a value, only a small tokenizer with a path stack, and
//! skips any array or object nothing in which counts (embeddings, a message, tool calls) by its
//! brackets alone, at about 1 GB/s. It reads only the members named below, at the places named
//! (a `"model"` or `"eval_count"` in a message's text or in a nested object is not taken):
//!
//! - Native answers (`/api/generate`, `/api/chat`, `/api/embed`): one JSON object, or NDJSON.
//!   The counts are the top-level `prompt_eval_count` and `eval_count` of the object with
//!   `"done": true` (both are `omitempty` in Go: a missing one is 0), or of the one object of
//!   `/api/embed`, which has no `done`. Each object with `"done": false` is one token (Ollama
//!   streams a token a chunk), for an answer cut short.
//! - OpenAI-shaped answers (`/v1/...`): the top-level `usage` (`prompt_tokens`,
//!   `completion_tokens`; `input_tokens`, `output_tokens` for `/v1/responses`). In an event
//!   stream, only from a chunk without choices (`"choices":[]`): Ollama puts an all-zero `usage`
//!   in every `/v1/completions` chunk when usage was asked for. `/v1/responses` streams the
//!   usage in `response.usage` of its `response.completed` event. A chunk whose
//!   `choices[0].delta.content` (or `.reasoning`, or `choices[0].text`) is non-empty, or a
//!   `response.output_text.delta` event, is one token.
//! - Anthropic-shaped answers (`/v1/messages`): the top-level `usage` (`input_tokens`,
//!   `output_tokens`); streamed, `message_delta`'s `usage` (its `input_tokens`, else the
//!   `message.usage.input_tokens` of `message_start`, which may be Ollama's estimate), and each
//!   `content_block_delta` with text or thinking is one token.
//!
//! What Ollama writes with and without `stream_options.include_usage` (its `middleware/openai.go`
//! and `openai/openai.go`, unchanged since usage chunks came in, December 2024):
//!
//! - `/v1/chat/completions`: the chunks are the same bytes either way (`ChatCompletionChunk`'s
//!   `Usage *Usage` is `omitempty` and left nil: no `"usage":null`). Asking adds one event after
//!   the finish-reason chunk and before `data: [DONE]`: the finish chunk again with
//!   `"choices":[]` and `"usage":{"prompt_tokens":P,"completion_tokens":C,"total_tokens":T}`.
//! - `/v1/completions`: asking adds `,"usage":{"prompt_tokens":0,"completion_tokens":0,
//!   "total_tokens":0}` as the last member of every chunk (`c.Usage = &openai.Usage{}`), and
//!   the same extra event, here the last chunk with `"choices":[]` and the real usage.
//!
//! [`UsageStripper`] takes exactly those out again (and OpenAI's own `"usage":null`, which its
//! API puts in every chunk when asked), so a client that did not ask gets the bytes it would
//! have got; [`add_include_usage`] is the request side.

use crate::json::{self, simple_escape, ValueKind};

/// The longest model name kept; a longer one is not reported. Ollama's own limits make a
/// name at most about 600 bytes (a 350-byte host and three 80-byte parts).
pub const MAX_MODEL_LEN: usize = 1024;

/// The longest SSE event [`UsageStripper`] holds back; a longer one is passed on unchanged.
pub const MAX_HELD_EVENT: usize = 64 * 1024;

/// The longest member name compared: the longest one looked for is `prompt_eval_count`.
const MAX_NAME_LEN: usize = 24;
/// The longest `type` (or SSE `event:`) compared: `response.reasoning_summary_text.delta`.
const MAX_TYPE_LEN: usize = 48;
/// Containers whose place is tracked (the deepest that counts, `choices[0].delta`, is the
/// fourth); any deeper are skipped by their brackets, with no limit and no memory.
const TRACKED_DEPTH: usize = 8;

/// Which API shaped the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `/api/generate`, `/api/chat`, `/api/embed`, `/api/embeddings`.
    Native,
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`.
    OpenAi,
    /// `/v1/messages`.
    Anthropic,
}

/// How the answer's JSON is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One JSON value, or several separated by white space: `application/json`, and
    /// `application/x-ndjson` (one object a line).
    Json,
    /// Server-sent events (`text/event-stream`): each event's `data:` holds one JSON value.
    EventStream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerKind {
    pub dialect: Dialect,
    pub framing: Framing,
}

impl AnswerKind {
    /// The kind of answer to scan for the request `path` (no query string) and the answer's
    /// `Content-Type`; `None` for an endpoint that reports no usage, or another content type
    /// (then there is nothing to count).
    pub fn for_answer(path: &str, content_type: &[u8]) -> Option<AnswerKind> {
        let dialect = match path {
            "/api/generate" | "/api/chat" | "/api/embed" | "/api/embeddings" => Dialect::Native,
            "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/responses" => Dialect::OpenAi,
            "/v1/messages" => Dialect::Anthropic,
            _ => return None,
        };
        let media_type = content_type.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        let framing = if media_type.eq_ignore_ascii_case(b"text/event-stream") {
            Framing::EventStream
        } else if media_type.eq_ignore_ascii_case(b"application/json")
            || media_type.eq_ignore_ascii_case(b"application/x-ndjson")
        {
            Framing::Json
        } else {
            return None;
        };
        Some(AnswerKind { dialect, framing })
    }
}

/// Whether Ollama reads `stream_options.include_usage` on this path. For a request there, the
/// glue gives the body to [`add_include_usage`]; if that changed it, the `text/event-stream`
/// answer goes through a [`UsageStripper`] (after the [`UsageScanner`], which wants the usage).
pub fn accepts_stream_options(path: &str) -> bool {
    matches!(path, "/v1/chat/completions" | "/v1/completions")
}

/// Reads the model and the token counts out of an answer fed to it chunk by chunk.
///
/// Feed it the bytes as Ollama sent them (before [`UsageStripper`], which removes the usage).
/// Never fails: what it cannot read it does not count, and [`Self::saw_malformed`] says so.
#[derive(Clone)]
pub struct UsageScanner {
    kind: AnswerKind,
    lexer: Lexer,
    sse: Sse,
    tally: Tally,
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
    fn feed_lines(&mut self, chunk: &[u8]) {
        let env = Env { dialect: Dialect::Native, framing: Framing::Json, event: EventType::Absent };
        // One SIMD pass over the chunk finds the newlines and what may make a line count.
        let (mut line_start, mut line) = (0, PlainLine::default());
        let mut base = 0;
        while base < chunk.len() {
            let mut mask = json::mask_of(chunk, base, PlainLine::STOPS);
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

    fn feed_event_stream(&mut self, bytes: &[u8]) {
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

    fn begin_field_value(&mut self) {
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
    fn data(&mut self, bytes: &[u8]) {
        for (&b, at) in bytes.iter().zip(self.sse.data_len..self.sse.data_prefix.len()) {
            self.sse.data_prefix[at] = b;
        }
        self.sse.data_len = self.sse.data_len.saturating_add(bytes.len());
        let env = Env { dialect: self.kind.dialect, framing: Framing::EventStream, event: self.sse.event };
        self.lexer.feed(bytes, &mut self.tally, env);
    }

    fn end_line(&mut self, terminator: u8) {
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
    fn dispatch_event(&mut self) {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SseLine {
    Start,
    Field,
    /// A field's value (or a comment, as `Other`); `first` until its first byte, which is
    /// dropped if it is a space.
    Value {
        field: Field,
        first: bool,
    },
}

/// Where an event stream's lines are, and what the current event said besides its data.
#[derive(Clone)]
struct Sse {
    line: SseLine,
    /// The last line ended with CR: a LF right after it belongs to the same line end.
    skip_lf: bool,
    field: [u8; 8],
    field_len: usize,
    event_name: [u8; MAX_TYPE_LEN],
    event_len: usize,
    event: EventType,
    data_lines: u32,
    /// The first bytes of the event's data, to recognize `[DONE]`, and how many there were.
    data_prefix: [u8; 8],
    data_len: usize,
}

impl Sse {
    fn new() -> Self {
        Sse {
            line: SseLine::Start,
            skip_lf: false,
            field: [0; 8],
            field_len: 0,
            event_name: [0; MAX_TYPE_LEN],
            event_len: 0,
            event: EventType::Absent,
            data_lines: 0,
            data_prefix: [0; 8],
            data_len: 0,
        }
    }
}

/// The `type` of an Anthropic or Responses event (from the JSON, else from `event:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Absent,
    MessageStart,
    MessageDelta,
    ContentBlockDelta,
    /// `response.completed` and the other ends of a Responses stream, which carry its usage.
    ResponseEnd,
    /// A Responses event carrying a piece of generated text.
    ResponseTextDelta,
    Other,
}

impl EventType {
    fn parse(name: &[u8]) -> EventType {
        match name {
            b"message_start" => EventType::MessageStart,
            b"message_delta" => EventType::MessageDelta,
            b"content_block_delta" => EventType::ContentBlockDelta,
            b"response.completed" | b"response.incomplete" | b"response.failed" => EventType::ResponseEnd,
            b"response.output_text.delta"
            | b"response.reasoning_summary_text.delta"
            | b"response.reasoning_text.delta"
            | b"response.refusal.delta" => EventType::ResponseTextDelta,
            _ => EventType::Other,
        }
    }
}

/// What the scan has found so far.
#[derive(Clone, Default)]
struct Tally {
    model: Option<Box<str>>,
    /// (prompt, completion) of the final usage report.
    finished: Option<(u64, u64)>,
    /// `message_start.message.usage.input_tokens` of an Anthropic stream.
    start_input_tokens: Option<u64>,
    token_chunks: u64,
    done_marker: bool,
    malformed: bool,
}

impl Tally {
    fn model(&mut self, source: Src, bytes: &[u8], dialect: Dialect) {
        let wanted = match source {
            Src::Root => true,
            Src::Message => dialect == Dialect::Anthropic,
            Src::Response => dialect == Dialect::OpenAi,
        };
        if wanted && self.model.is_none() {
            if let Ok(name) = std::str::from_utf8(bytes) {
                self.model = Some(name.into());
            }
        }
    }

    fn finish(&mut self, prompt: Option<u64>, completion: Option<u64>) {
        self.finished = Some((prompt.unwrap_or(0), completion.unwrap_or(0)));
    }

    /// A top-level value has ended: count what it says.
    fn commit(&mut self, record: &Record, env: Env) {
        if !record.is_object {
            return;
        }
        let usage = |source: Src, field: UsageField| record.usage[source as usize][field as usize];
        use UsageField::{Completion, Input, Output, Prompt};
        match env.dialect {
            Dialect::Native => match record.done {
                Some(true) => self.finish(record.prompt_eval_count, record.eval_count),
                Some(false) => self.token_chunks += 1,
                None => {
                    // /api/embed: one object, no `done`.
                    if record.prompt_eval_count.is_some() || record.eval_count.is_some() {
                        self.finish(record.prompt_eval_count, record.eval_count);
                    }
                }
            },
            Dialect::OpenAi => match record.event_type(env) {
                EventType::ResponseEnd => {
                    if record.usage_object[Src::Response as usize] {
                        self.finish(
                            usage(Src::Response, Input).or(usage(Src::Response, Prompt)),
                            usage(Src::Response, Output).or(usage(Src::Response, Completion)),
                        );
                    }
                }
                EventType::ResponseTextDelta => {
                    if record.text {
                        self.token_chunks += 1;
                    }
                }
                _ => {
                    // Streamed, only the chunk without choices has the real usage.
                    let choices_allow = env.framing == Framing::Json || record.choices != Choices::NonEmpty;
                    if record.usage_object[Src::Root as usize] && choices_allow {
                        self.finish(
                            usage(Src::Root, Prompt).or(usage(Src::Root, Input)),
                            usage(Src::Root, Completion).or(usage(Src::Root, Output)),
                        );
                    }
                    if env.framing == Framing::EventStream && record.choices == Choices::NonEmpty && record.text {
                        self.token_chunks += 1;
                    }
                }
            },
            Dialect::Anthropic => match record.event_type(env) {
                EventType::MessageStart => {
                    if record.usage_object[Src::Message as usize] {
                        self.start_input_tokens = usage(Src::Message, Input);
                    }
                }
                EventType::MessageDelta => {
                    if record.usage_object[Src::Root as usize] {
                        self.finish(usage(Src::Root, Input).or(self.start_input_tokens), usage(Src::Root, Output));
                    }
                }
                EventType::ContentBlockDelta => {
                    if record.text {
                        self.token_chunks += 1;
                    }
                }
                _ => {
                    if env.framing == Framing::Json && record.usage_object[Src::Root as usize] {
                        self.finish(usage(Src::Root, Input), usage(Src::Root, Output));
                    }
                }
            },
        }
    }
}

/// What the lexer needs to know about the answer around the JSON it reads.
#[derive(Clone, Copy)]
struct Env {
    dialect: Dialect,
    framing: Framing,
    /// The SSE `event:` of the current event.
    event: EventType,
}

impl Env {
    /// A native JSON answer is read as NDJSON: a top-level value ends on its line, and a line
    /// that ends inside one is damage, forgotten with its line (Ollama writes each object on
    /// one line, its single answers too, and a newline never sits inside its strings). So
    /// each line reads the same whatever came before it.
    fn is_lines(self) -> bool {
        self.framing == Framing::Json && self.dialect == Dialect::Native
    }
}

/// The objects whose `usage` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    /// The top-level object's `usage`.
    Root = 0,
    /// `message.usage` (Anthropic's `message_start`).
    Message = 1,
    /// `response.usage` (the Responses API's events).
    Response = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UsageField {
    Prompt = 0,
    Completion = 1,
    Input = 2,
    Output = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Choices {
    #[default]
    Absent,
    Empty,
    NonEmpty,
}

/// What one top-level value said, as far as counting goes.
#[derive(Clone, Default)]
struct Record {
    is_object: bool,
    done: Option<bool>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    usage: [[Option<u64>; 4]; 3],
    /// Whether each `usage` was an object (not `null`).
    usage_object: [bool; 3],
    /// The `type` member; `None` when absent.
    event_type: Option<EventType>,
    choices: Choices,
    /// A token-carrying string (`choices[0].delta.content`, `delta.text`...) was non-empty.
    text: bool,
}

impl Record {
    fn event_type(&self, env: Env) -> EventType {
        self.event_type.unwrap_or(env.event)
    }
}

/// Where a container sits, as far as counting goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    /// The top-level object.
    Root,
    Usage(Src),
    /// The top-level `message` object.
    Message,
    /// The top-level `response` object.
    Response,
    /// The top-level `choices` array.
    Choices,
    /// `choices[0]`.
    Choice0,
    /// `choices[0].delta`.
    Choice0Delta,
    /// The top-level `delta` object (Anthropic's `content_block_delta`).
    RootDelta,
    Other,
}

/// What the value about to be read is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Ignore,
    /// A top-level value.
    Top,
    Model(Src),
    Type,
    Done,
    PromptEvalCount,
    EvalCount,
    Count(Src, UsageField),
    Usage(Src),
    Message,
    Response,
    Choices,
    Choice0,
    Choice0Delta,
    /// The top-level `delta`: an object (Anthropic) or a string (Responses).
    RootDelta,
    /// A string whose being non-empty means a token.
    Text,
}

fn slot_for(ctx: Ctx, name: &[u8]) -> Slot {
    match ctx {
        Ctx::Root => match name {
            b"model" => Slot::Model(Src::Root),
            b"type" => Slot::Type,
            b"done" => Slot::Done,
            b"prompt_eval_count" => Slot::PromptEvalCount,
            b"eval_count" => Slot::EvalCount,
            b"usage" => Slot::Usage(Src::Root),
            b"message" => Slot::Message,
            b"response" => Slot::Response,
            b"choices" => Slot::Choices,
            b"delta" => Slot::RootDelta,
            _ => Slot::Ignore,
        },
        Ctx::Usage(source) => match name {
            b"prompt_tokens" => Slot::Count(source, UsageField::Prompt),
            b"completion_tokens" => Slot::Count(source, UsageField::Completion),
            b"input_tokens" => Slot::Count(source, UsageField::Input),
            b"output_tokens" => Slot::Count(source, UsageField::Output),
            _ => Slot::Ignore,
        },
        Ctx::Message => match name {
            b"model" => Slot::Model(Src::Message),
            b"usage" => Slot::Usage(Src::Message),
            _ => Slot::Ignore,
        },
        Ctx::Response => match name {
            b"model" => Slot::Model(Src::Response),
            b"usage" => Slot::Usage(Src::Response),
            _ => Slot::Ignore,
        },
        Ctx::Choice0 => match name {
            b"delta" => Slot::Choice0Delta,
            b"text" => Slot::Text,
            _ => Slot::Ignore,
        },
        Ctx::Choice0Delta => match name {
            b"content" | b"reasoning" => Slot::Text,
            _ => Slot::Ignore,
        },
        Ctx::RootDelta => match name {
            b"text" | b"thinking" => Slot::Text,
            _ => Slot::Ignore,
        },
        Ctx::Choices | Ctx::Other => Slot::Ignore,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
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
enum Escape {
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
struct Frame {
    ctx: Ctx,
    is_object: bool,
    has_elements: bool,
}

/// A streaming JSON tokenizer that keeps only the place of the current value and the few
/// strings and numbers counting needs. Strict where something counts, not a validator (what it
/// skips it only bracket-matches): what it cannot follow breaks it, and it reads nothing more.
#[derive(Clone)]
struct Lexer {
    state: Lex,
    depth: usize,
    frames: [Frame; TRACKED_DEPTH],
    slot: Slot,
    // A string.
    in_name: bool,
    escape: Escape,
    /// A high surrogate waiting for its low half (0: none).
    high_surrogate: u16,
    capture: bool,
    capture_limit: usize,
    captured: [u8; MAX_MODEL_LEN],
    captured_len: usize,
    overflowed: bool,
    non_empty: bool,
    // A number.
    number: u64,
    number_ok: bool,
    // A literal.
    literal: &'static [u8],
    literal_at: usize,
    // Skipping deep containers.
    skip_depth: u64,
    skip_in_string: bool,
    skip_escape: bool,
    record: Record,
}

impl Lexer {
    fn new() -> Self {
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

    fn reset(&mut self) {
        self.state = Lex::Between;
        self.depth = 0;
        self.skip_depth = 0;
        self.record = Record::default();
    }

    fn feed(&mut self, bytes: &[u8], tally: &mut Tally, env: Env) {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                Lex::Broken if env.framing == Framing::Json => {
                    // NDJSON: an object the tokenizer cannot follow ends with its line; the
                    // next line starts afresh (Ollama writes one object a line, and a newline
                    // never sits inside one of its strings).
                    tally.malformed = true;
                    match json::find_any(bytes, i, [b'\n']) {
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
    fn number_byte(&mut self, b: u8, tally: &mut Tally, env: Env) -> usize {
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
    fn literal_byte(&mut self, b: u8, tally: &mut Tally, env: Env) -> usize {
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
    fn structural_byte(&mut self, b: u8, tally: &mut Tally, env: Env) {
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
                    let (stop, _) = json::skip_plain_text(bytes, i);
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
                let at = json::find_any(bytes, i, [b'"', b'\\', newline]);
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
            let at = json::find_any(bytes, i, [b'"', b'{', b'[', b'}', b']', newline]);
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

/// Whether a whole NDJSON line (read from the start of a line, see [`Env::is_lines`]) cannot
/// carry the counts: it has no escape (so every name in it is as written), no `eval_count`
/// (nor so `prompt_eval_count`), and no `done"` followed by `:` and a `t`. Then reading it could
/// at most count a token and flag damage, never finish the answer or change its model (known
/// already): it is passed over. Built up from the line's stops, one at a time.
#[derive(Default)]
struct PlainLine {
    counts: bool,
    token: bool,
}

impl PlainLine {
    /// The bytes looked at: the end of the line, an escape, the `d` of `done`, the `_` of
    /// `eval_count`.
    const STOPS: [u8; 4] = [b'\n', b'\\', b'd', b'_'];

    /// Looks at the stop at `bytes[at]` (never a newline): only bytes of its own line matter, as
    /// a newline is in none of the words looked for.
    fn look_at(&mut self, bytes: &[u8], at: usize) {
        match bytes[at] {
            b'\\' => self.counts = true,
            b'd' if bytes[at..].starts_with(b"done\"") => match value_after(bytes, at + 5) {
                Some(b't') => self.counts = true,
                Some(b'f') => self.token = true,
                _ => {}
            },
            b'_' if bytes[at.saturating_sub(4)..].starts_with(b"eval_count") => self.counts = true,
            _ => {}
        }
    }

    /// `None` if the line may count; else whether it looks like a token.
    fn verdict(&self) -> Option<bool> {
        (!self.counts).then_some(self.token)
    }
}

/// After a name's closing quote at `at - 1`: white space, a colon, white space, and the first
/// byte of the value, if the line has them.
fn value_after(bytes: &[u8], mut at: usize) -> Option<u8> {
    let white = |at: &mut usize| {
        while bytes.get(*at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            *at += 1;
        }
    };
    white(&mut at);
    if bytes.get(at) != Some(&b':') {
        return None;
    }
    at += 1;
    white(&mut at);
    bytes.get(at).copied()
}

/// Takes out of a streamed `/v1/chat/completions` or `/v1/completions` answer what asking for
/// `stream_options.include_usage` added to it (see the module's notes): the event whose JSON
/// has `"choices":[]` and a `usage` object, and the top-level `usage` member of every other
/// chunk. Bytes in, bytes out: it holds back at most the event being received, and passes each
/// on as soon as its blank line arrives (Ollama writes an event in one piece).
///
/// An event longer than [`MAX_HELD_EVENT`] is passed on unchanged as it comes (counted in
/// [`Self::oversized_events`]); rewriting resumes with the next event.
#[derive(Clone, Debug)]
pub struct UsageStripper {
    held: Vec<u8>,
    /// The current event outgrew the limit and is being passed through.
    passing: bool,
    /// The last byte ended a line (true at the start: a blank line there ends an empty event).
    line_start: bool,
    /// The last byte was a CR: a LF now is the rest of that line end.
    after_cr: bool,
    /// An event ended with a CR; a LF may follow that belongs to it.
    end_pending: bool,
    removed_events: u64,
    removed_members: u64,
    oversized_events: u64,
}

impl Default for UsageStripper {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageStripper {
    pub fn new() -> Self {
        UsageStripper {
            held: Vec::new(),
            passing: false,
            line_start: true,
            after_cr: false,
            end_pending: false,
            removed_events: 0,
            removed_members: 0,
            oversized_events: 0,
        }
    }

    /// Rewrites the next bytes of the answer, appending what can go to the client to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            if self.end_pending {
                self.end_pending = false;
                self.after_cr = false;
                if input[i] == b'\n' {
                    self.take(b"\n", out);
                    i += 1;
                }
                self.end_event(out);
                continue;
            }
            let rest = &input[i..];
            let Some(at) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.take(rest, out);
                self.line_start = false;
                self.after_cr = false;
                return;
            };
            if at > 0 {
                self.take(&rest[..at], out);
                self.line_start = false;
                self.after_cr = false;
            }
            let b = rest[at];
            i += at + 1;
            self.take(&[b], out);
            if b == b'\n' && self.after_cr {
                // The LF of a CRLF: that line end was counted at its CR.
                self.after_cr = false;
                continue;
            }
            let blank_line = self.line_start;
            self.line_start = true;
            self.after_cr = b == b'\r';
            if blank_line {
                if b == b'\r' {
                    self.end_pending = true;
                } else {
                    self.end_event(out);
                }
            }
        }
    }

    /// The answer has ended: passes on what is held. An event left without its blank line is
    /// passed on unchanged.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.end_pending {
            self.end_pending = false;
            self.end_event(out);
        }
        out.append(&mut self.held);
        self.passing = false;
    }

    /// Bytes held back, waiting for the end of their event.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Usage events removed (one per answer that asked).
    pub fn removed_events(&self) -> u64 {
        self.removed_events
    }

    /// `usage` members removed from chunks.
    pub fn removed_members(&self) -> u64 {
        self.removed_members
    }

    /// Events passed on unchanged because they were longer than [`MAX_HELD_EVENT`].
    pub fn oversized_events(&self) -> u64 {
        self.oversized_events
    }

    fn take(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.passing {
            out.extend_from_slice(bytes);
        } else if self.held.len() + bytes.len() > MAX_HELD_EVENT {
            self.oversized_events += 1;
            self.passing = true;
            out.append(&mut self.held);
            out.extend_from_slice(bytes);
        } else {
            self.held.extend_from_slice(bytes);
        }
    }

    fn end_event(&mut self, out: &mut Vec<u8>) {
        if self.passing {
            self.passing = false;
            return;
        }
        match strip_event(&self.held) {
            Stripped::Unchanged => out.extend_from_slice(&self.held),
            Stripped::Dropped => self.removed_events += 1,
            Stripped::Edited { data: range, member } => {
                out.extend_from_slice(&self.held[..range.start + member.start]);
                out.extend_from_slice(&self.held[range.start + member.end..]);
                self.removed_members += 1;
            }
        }
        self.held.clear();
    }
}

enum Stripped {
    Unchanged,
    Dropped,
    /// Remove `member` (relative to `data`, the data line's JSON) from the event.
    Edited {
        data: std::ops::Range<usize>,
        member: std::ops::Range<usize>,
    },
}

/// Decides what to take out of one whole event (blank line included).
fn strip_event(event: &[u8]) -> Stripped {
    // The one data line's value.
    let mut data = None;
    let mut start = 0;
    while start < event.len() {
        let line_end = event[start..].iter().position(|&b| b == b'\n' || b == b'\r').map_or(event.len(), |p| start + p);
        let line = &event[start..line_end];
        if let Some(value) = line.strip_prefix(b"data") {
            if value.is_empty() || value[0] == b':' {
                if data.is_some() {
                    return Stripped::Unchanged;
                }
                let skip = match value {
                    [b':', b' ', ..] => 6,
                    [b':', ..] => 5,
                    _ => 4,
                };
                data = Some(start + skip..line_end);
            }
        }
        start = line_end + 1;
        if event.get(line_end) == Some(&b'\r') && event.get(line_end + 1) == Some(&b'\n') {
            start += 1;
        }
    }
    let Some(data) = data else { return Stripped::Unchanged };
    let json = &event[data.clone()];
    let mut usage = None;
    let mut usages = 0;
    let mut choices_empty = None;
    let mut previous_end = None;
    let result = json::for_each_top_level_member(json, |member| {
        match &*member.name {
            "usage" => {
                usages += 1;
                usage = Some((member.kind, previous_end, member.value.clone()));
            }
            "choices" => {
                let text = &json[member.value.clone()];
                choices_empty = Some(
                    member.kind == ValueKind::Array
                        && text.iter().all(|b| matches!(b, b'[' | b']' | b' ' | b'\t' | b'\n' | b'\r')),
                );
            }
            _ => {}
        }
        previous_end = Some(member.value.end);
    });
    if result.is_err() || usages != 1 {
        return Stripped::Unchanged;
    }
    let Some((kind, previous_end, value)) = usage else { return Stripped::Unchanged };
    if kind == ValueKind::Object && choices_empty == Some(true) {
        return Stripped::Dropped;
    }
    if !matches!(kind, ValueKind::Object | ValueKind::Null) {
        return Stripped::Unchanged;
    }
    let member = match previous_end {
        // `,"usage":...`: from the end of the member before to the end of this one.
        Some(previous_end) => previous_end..value.end,
        None => {
            // The first member: from its name to the next member's name, or to the end of its
            // value if it is the only one.
            let name_start = skip_white_space(json, json.iter().position(|&b| b == b'{').unwrap_or(0) + 1);
            let after = skip_white_space(json, value.end);
            if json.get(after) == Some(&b',') {
                name_start..skip_white_space(json, after + 1)
            } else {
                name_start..value.end
            }
        }
    };
    Stripped::Edited { data, member }
}

fn skip_white_space(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The request side of the rewrite: `body` with `"stream_options":{"include_usage":true}`
/// added before its final `}`, when Ollama (Go's `encoding/json`: member names compared without
/// case, the last duplicate wins, a `null` leaves a bool as it was and sets a pointer to nil, a
/// second object merges into the first) would read it as a streamed request that did not ask
/// for usage. `None` when nothing should change: not a JSON object, not streamed, usage already
/// asked for, or a member of a type Go would refuse (the request fails either way).
///
/// The added member comes last, so Go applies it over any `stream_options` before it: a
/// `null` one gets a new object, an existing one gets `include_usage` set in it. Every other
/// byte stays as it was.
pub fn add_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    include_usage_rewrite(body).ok().flatten()
}

/// [`add_include_usage`], telling a body that is not one JSON object (invalid, or followed by
/// more than white space) from one that needs no change: Ollama reads the first value and
/// ignores what follows, so such a body would go through unchanged, streamed without its
/// counts. The glue refuses it (400) where usage is counted.
pub fn include_usage_rewrite(body: &[u8]) -> Result<Option<Vec<u8>>, json::JsonError> {
    let mut stream = false;
    // `None`: a nil *StreamOptions; `Some(b)`: its IncludeUsage.
    let mut include_usage: Option<bool> = None;
    let mut refused = false;
    json::for_each_top_level_member(body, |member| {
        if json::go_name_matches(&member.name, "stream") {
            match member.kind {
                ValueKind::True => stream = true,
                ValueKind::False => stream = false,
                ValueKind::Null => {}
                _ => refused = true,
            }
        } else if json::go_name_matches(&member.name, "stream_options") {
            match member.kind {
                ValueKind::Null => include_usage = None,
                ValueKind::Object => {
                    let mut current = include_usage.unwrap_or(false);
                    let options = &body[member.value.clone()];
                    let scanned = json::for_each_top_level_member(options, |option| {
                        if json::go_name_matches(&option.name, "include_usage") {
                            match option.kind {
                                ValueKind::True => current = true,
                                ValueKind::False => current = false,
                                ValueKind::Null => {}
                                _ => refused = true,
                            }
                        }
                    });
                    refused |= scanned.is_err();
                    include_usage = Some(current);
                }
                _ => refused = true,
            }
        }
    })?;
    if refused || !stream || include_usage == Some(true) {
        return Ok(None);
    }
    // There is a `stream` member, so the object is not empty and the comma is right.
    let Some(close) = body.iter().rposition(|&b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) else {
        return Ok(None);
    };
    debug_assert_eq!(body[close], b'}');
    const MEMBER: &[u8] = br#","stream_options":{"include_usage":true}"#;
    let mut out = Vec::with_capacity(body.len() + MEMBER.len());
    out.extend_from_slice(&body[..close]);
    out.extend_from_slice(MEMBER);
    out.extend_from_slice(&body[close..]);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole line as [`PlainLine`] sees it: `None` if it may count, else whether it looks like
    /// a token (`"done": false`).
    fn plain_chunk_line(line: &[u8]) -> Option<bool> {
        let mut plain = PlainLine::default();
        let mut base = 0;
        while base < line.len() {
            let mut mask = json::mask_of(line, base, PlainLine::STOPS);
            while mask != 0 {
                let at = base + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                plain.look_at(line, at);
            }
            base += 64;
        }
        plain.verdict()
    }

    const NATIVE: AnswerKind = AnswerKind { dialect: Dialect::Native, framing: Framing::Json };
    const OPENAI_JSON: AnswerKind = AnswerKind { dialect: Dialect::OpenAi, framing: Framing::Json };
    const OPENAI_SSE: AnswerKind = AnswerKind { dialect: Dialect::OpenAi, framing: Framing::EventStream };
    const ANTHROPIC_JSON: AnswerKind = AnswerKind { dialect: Dialect::Anthropic, framing: Framing::Json };
    const ANTHROPIC_SSE: AnswerKind = AnswerKind { dialect: Dialect::Anthropic, framing: Framing::EventStream };

    /// What a scan found, to compare in one assertion.
    #[derive(Debug, PartialEq, Eq)]
    struct Found {
        model: Option<String>,
        prompt: Option<u64>,
        completion: Option<u64>,
        so_far: u64,
        chunks: u64,
        malformed: bool,
    }

    fn found(scanner: &UsageScanner) -> Found {
        Found {
            model: scanner.model().map(str::to_owned),
            prompt: scanner.prompt_tokens(),
            completion: scanner.completion_tokens(),
            so_far: scanner.completion_tokens_so_far(),
            chunks: scanner.token_chunks(),
            malformed: scanner.saw_malformed(),
        }
    }

    fn scan_chunks<'a>(kind: AnswerKind, chunks: impl IntoIterator<Item = &'a [u8]>) -> Found {
        let mut scanner = UsageScanner::new(kind);
        for chunk in chunks {
            scanner.feed(chunk);
        }
        found(&scanner)
    }

    fn scan(kind: AnswerKind, answer: &[u8]) -> Found {
        scan_chunks(kind, [answer])
    }

    /// A small deterministic generator for split points.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    /// Scans `answer` whole, then split in two at every point, then a byte at a time, then cut
    /// into random pieces, and checks every way finds the same.
    fn scan_every_way(kind: AnswerKind, answer: &[u8]) -> Found {
        let whole = scan(kind, answer);
        for at in 0..=answer.len() {
            let (a, b) = answer.split_at(at);
            assert_eq!(scan_chunks(kind, [a, b]), whole, "split at {at}");
        }
        assert_eq!(scan_chunks(kind, answer.chunks(1)), whole, "a byte at a time");
        let mut random = Lcg(answer.len() as u64);
        for _ in 0..50 {
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < answer.len() {
                let len = 1 + random.below(40);
                pieces.push(&answer[at..(at + len).min(answer.len())]);
                at += len;
            }
            assert_eq!(scan_chunks(kind, pieces), whole);
        }
        whole
    }

    fn counted(model: &str, prompt: u64, completion: u64, chunks: u64) -> Found {
        Found {
            model: Some(model.into()),
            prompt: Some(prompt),
            completion: Some(completion),
            so_far: completion,
            chunks,
            malformed: false,
        }
    }

    // Native answers, as Ollama writes them.

    const GENERATE_STREAM: &str = concat!(
        r#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00.1Z","response":"The","done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00.2Z","response":" sky \"model\":\"x\" \u00e9 ","done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00.3Z","response":" is blue, \"eval_count\":999 😀","done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00.4Z","response":"","done":true,"done_reason":"stop","#,
        r#""context":[128006,9125,128007,271,38766,1303,33025,2696],"total_duration":5043500667,"#,
        r#""load_duration":5025959,"prompt_eval_count":26,"prompt_eval_duration":325953000,"#,
        r#""eval_count":290,"eval_duration":4709213000}"#,
        "\n",
    );

    #[test]
    fn native_stream_counts_the_done_object() {
        assert_eq!(scan_every_way(NATIVE, GENERATE_STREAM.as_bytes()), counted("llama3.2", 26, 290, 3));
    }

    #[test]
    fn native_stream_cut_short_counts_the_chunks_relayed() {
        let cut = GENERATE_STREAM.find("\"done\":true").unwrap();
        let mut scanner = UsageScanner::new(NATIVE);
        let mut seen = Vec::new();
        for (i, &b) in GENERATE_STREAM.as_bytes()[..cut].iter().enumerate() {
            scanner.feed(&[b]);
            if b == b'}' && GENERATE_STREAM.as_bytes()[i + 1] == b'\n' {
                seen.push(scanner.completion_tokens_so_far());
            }
        }
        assert_eq!(seen, [1, 2, 3]);
        assert!(!scanner.is_final());
        assert_eq!(scanner.completion_tokens(), None);
        assert_eq!(scanner.prompt_tokens(), None);
        assert_eq!(scanner.completion_tokens_so_far(), 3);
        assert_eq!(scanner.model(), Some("llama3.2"));
        assert!(!scanner.saw_malformed());
    }

    #[test]
    fn native_chat_ignores_nested_and_quoted_lookalikes() {
        let answer = concat!(
            r#"{"model":"qwen3:8b","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","#,
            r#""content":"{\"model\":\"evil\",\"eval_count\":1,\"done\":true}","model":"nested","#,
            r#""eval_count":7,"done":true,"prompt_eval_count":8},"done":false}"#,
            "\n",
            r#"{"model":"qwen3:8b","created_at":"2025-01-01T00:00:01Z","message":{"role":"assistant","content":"","#,
            r#""tool_calls":[{"function":{"name":"f","arguments":{"model":"x","usage":{"prompt_tokens":5},"#,
            r#""done":true,"eval_count":3,"a":[[[[{"eval_count":4}]]]]}}}]},"done":false}"#,
            "\n",
            r#"{"model":"qwen3:8b","created_at":"2025-01-01T00:00:02Z","message":{"role":"assistant","content":""},"#,
            r#""done_reason":"stop","done":true,"total_duration":1,"prompt_eval_count":11,"eval_count":2,"#,
            r#""eval_duration":1}"#,
            "\n",
        );
        assert_eq!(scan_every_way(NATIVE, answer.as_bytes()), counted("qwen3:8b", 11, 2, 2));
    }

    #[test]
    fn native_done_object_omits_zero_counts() {
        // Go's `omitempty`: a prompt wholly cached has no prompt_eval_count.
        let answer = br#"{"model":"m","response":"hi","done":true,"eval_count":1}"#;
        assert_eq!(scan_every_way(NATIVE, answer), counted("m", 0, 1, 0));
        let load =
            br#"{"model":"m","created_at":"2025-01-01T00:00:00Z","response":"","done":true,"done_reason":"load"}"#;
        assert_eq!(scan(NATIVE, load), counted("m", 0, 0, 0));
    }

    #[test]
    fn native_counts_come_whatever_the_member_order_and_spacing() {
        let answer = b" {\r \"eval_count\" : 5 ,\t\"done\" :\rtrue , \"prompt_eval_count\":\t6, \"model\" : \"m\" } \n";
        assert_eq!(scan_every_way(NATIVE, answer), counted("m", 6, 5, 0));
        // NDJSON: an object ends on its line (Ollama's always do); one cut by a newline is damage.
        let split = b"{\"model\":\"m\",\"done\":true,\n\"eval_count\":5}\n";
        let found = scan_every_way(NATIVE, split);
        assert_eq!((found.completion, found.malformed), (None, true));
    }

    #[test]
    fn embed_counts_after_megabytes_of_vectors_in_bounded_memory() {
        let mut answer = String::from(r#"{"model":"nomic-embed-text","embeddings":["#);
        let mut random = Lcg(7);
        let mut vectors = 0;
        while answer.len() < 4 << 20 {
            if vectors > 0 {
                answer.push(',');
            }
            answer.push('[');
            for i in 0..768 {
                if i > 0 {
                    answer.push(',');
                }
                let n = random.below(2_000_000) as f64 / 1e6 - 1.0;
                answer.push_str(&format!("{n:e}"));
            }
            answer.push(']');
            vectors += 1;
        }
        answer.push_str(r#"],"total_duration":14143917,"load_duration":1019500,"prompt_eval_count":8192}"#);
        let started = std::time::Instant::now();
        let mut scanner = UsageScanner::new(NATIVE);
        for chunk in answer.as_bytes().chunks(4096) {
            scanner.feed(chunk);
        }
        let elapsed = started.elapsed();
        println!(
            "scanned {} MB of embeddings in {elapsed:?} ({:.0} MB/s); scanner state {} bytes",
            answer.len() >> 20,
            answer.len() as f64 / 1e6 / elapsed.as_secs_f64(),
            std::mem::size_of::<UsageScanner>()
        );
        assert_eq!(found(&scanner), counted("nomic-embed-text", 8192, 0, 0));
        assert!(std::mem::size_of::<UsageScanner>() < 2048, "{}", std::mem::size_of::<UsageScanner>());
        // Odd splits too, on a smaller one.
        let small = br#"{"model":"all-minilm","embeddings":[[0.010071029,-0.0017594862,0.05007221],[-1e-3,2E+5]],"total_duration":1,"prompt_eval_count":12}"#;
        assert_eq!(scan_every_way(NATIVE, small), counted("all-minilm", 12, 0, 0));
        // The legacy /api/embeddings reports no count.
        let legacy = br#"{"embedding":[0.5,-0.25]}"#;
        assert_eq!(scan(NATIVE, legacy).prompt, None);
    }

    #[test]
    fn strings_are_decoded_across_any_split() {
        let answer = r#"{"m\u006fdel":"llama\u00e9-\ud83d\ude00-\"q\"\\\/-é😀:latest","done":true,"prompt_eval_count":1,"eval_count":2}"#;
        assert_eq!(scan_every_way(NATIVE, answer.as_bytes()), counted("llamaé-😀-\"q\"\\/-é😀:latest", 1, 2, 0));
        // Lone surrogates become U+FFFD, as in Go.
        let answer = br#"{"model":"a\ud83d-\ude00-\ud83d\u0041","done":true}"#;
        assert_eq!(scan(NATIVE, answer).model.as_deref(), Some("a\u{FFFD}-\u{FFFD}-\u{FFFD}A"));
    }

    #[test]
    fn odd_models_and_numbers_are_not_taken() {
        let long = format!(
            r#"{{"model":"{}","done":true,"prompt_eval_count":1,"eval_count":2}}"#,
            "m".repeat(MAX_MODEL_LEN + 1)
        );
        let found = scan(NATIVE, long.as_bytes());
        assert_eq!((found.model, found.prompt, found.completion), (None, Some(1), Some(2)));
        let at_limit =
            format!(r#"{{"model":"{}","done":true,"prompt_eval_count":1,"eval_count":2}}"#, "m".repeat(MAX_MODEL_LEN));
        assert_eq!(scan(NATIVE, at_limit.as_bytes()).model.map(|m| m.len()), Some(MAX_MODEL_LEN));
        // Invalid UTF-8 in the name: not reported.
        assert_eq!(scan(NATIVE, b"{\"model\":\"\xff\",\"done\":true}").model, None);
        // Not a model: a number, or an object.
        assert_eq!(scan(NATIVE, br#"{"model":5,"done":true}"#).model, None);
        assert_eq!(scan(NATIVE, br#"{"model":{"model":"x"},"done":true}"#).model, None);
        for count in ["-1", "1.5", "1e3", "18446744073709551616", "\"7\"", "null", "true"] {
            let answer = format!(r#"{{"done":true,"prompt_eval_count":{count},"eval_count":{count}}}"#);
            let found = scan(NATIVE, answer.as_bytes());
            assert_eq!((found.prompt, found.completion, found.malformed), (Some(0), Some(0), false), "{count}");
        }
        let max = format!(r#"{{"done":true,"prompt_eval_count":{},"eval_count":0}}"#, u64::MAX);
        assert_eq!(scan(NATIVE, max.as_bytes()).prompt, Some(u64::MAX));
    }

    #[test]
    fn the_first_model_is_kept() {
        let answer =
            concat!(r#"{"model":"first","done":false}"#, "\n", r#"{"model":"second","done":true,"eval_count":1}"#);
        assert_eq!(scan(NATIVE, answer.as_bytes()).model.as_deref(), Some("first"));
    }

    #[test]
    fn deep_nesting_is_skipped_without_limit() {
        let depth = 100_000;
        let mut answer = String::from(r#"{"model":"m","message":{"tool_calls":[{"x":"#);
        answer += &"[".repeat(depth);
        answer += r#""\"]}[{\\""#;
        answer += &"]".repeat(depth);
        answer += r#"}]},"done":true,"prompt_eval_count":3,"eval_count":4}"#;
        let found = scan(NATIVE, answer.as_bytes());
        assert_eq!(found, counted("m", 3, 4, 0));
        let shallow =
            r#"{"a":[[[[[[[[[[[[[[[[[[[[{"b":"]}"}]]]]]]]]]]]]]]]]]]]],"done":true,"eval_count":9,"model":"m"}"#;
        assert_eq!(scan_every_way(NATIVE, shallow.as_bytes()), counted("m", 0, 9, 0));
    }

    #[test]
    fn malformed_answers_are_flagged_and_not_counted() {
        for answer in [
            &br#"{"model":"m","done":true,"eval_count":1"#[..], // cut: not flagged, not counted
            br#"{"model":"m" "done":true,"eval_count":1}"#,
            br#"{"model":"m","done":tru,"eval_count":1}"#,
            br#"{"model":"m","done":true,"eval_count":1]"#,
            br#"{model:"m","done":true,"eval_count":1}"#,
            b"{\"model\":\"m\x01\",\"done\":true,\"eval_count\":1}",
            br#"{"model":"m\x","done":true,"eval_count":1}"#,
            br#"{"model":"m\u12x4","done":true,"eval_count":1}"#,
            br#"<html>502 Bad Gateway</html>"#,
        ] {
            let found = scan(NATIVE, answer);
            assert_eq!(found.completion, None, "{}", String::from_utf8_lossy(answer));
            assert_eq!(found.malformed, !answer.ends_with(b"1"), "{}", String::from_utf8_lossy(answer));
        }
        // What came before the damage stays counted, and the next line starts afresh.
        // (A line that cannot carry the counts is passed over, not checked: its damage is not seen.)
        let answer = concat!(r#"{"model":"m","done":false}"#, "\n", r#"{"done":false"#, "}}\n", r#"{"done":false}"#);
        let found = scan(NATIVE, answer.as_bytes());
        assert_eq!(found.chunks, 3);
        let answer = concat!(
            r#"{"model":"m","done":false}"#,
            "\n",
            r#"{"done":tru,"x":1}"#,
            "\n",
            r#"{"done":true,"eval_count":4}"#
        );
        let found = scan(NATIVE, answer.as_bytes());
        assert_eq!((found.completion, found.malformed), (Some(4), true));
    }

    #[test]
    fn plain_lines_are_passed_over_only_when_they_cannot_count() {
        assert_eq!(plain_chunk_line(br#"{"model":"m","response":"The","done":false}"#), Some(true));
        assert_eq!(plain_chunk_line(br#"{"model":"m","created_at":"t","response":"d_","done" : false}"#), Some(true));
        assert_eq!(plain_chunk_line(br#"{"model":"m"}"#), Some(false));
        for counting in [
            &br#"{"model":"m","response":"{[\"","done":false}"#[..],
            br#"{"model":"m","done":true}"#,
            br#"{"model":"m","done" : true}"#,
            br#"{"model":"m","x":{"done":true},"done":false}"#,
            br#"{"model":"m","prompt_eval_count":3}"#,
            br#"{"model":"m","eval_count":3,"done":false}"#,
            br#"{"model":"m"}{"done":true}"#,
        ] {
            assert_eq!(plain_chunk_line(counting), None, "{}", String::from_utf8_lossy(counting));
        }
    }

    #[test]
    fn a_stream_reads_the_same_whole_and_byte_by_byte() {
        let mut answer = String::new();
        for _ in 0..50 {
            answer += "{\"model\":\"m\",\"response\":\"a\\\"b\",\"done\":false}\n{\"model\":\"m\",\"response\":\"x\",\"done\":false}\n";
        }
        answer += r#"{"model":"m","response":"","done":true,"prompt_eval_count":7,"eval_count":100}"#;
        answer += "\n";
        let whole = scan(NATIVE, answer.as_bytes());
        let mut scanner = UsageScanner::new(NATIVE);
        for byte in answer.as_bytes() {
            scanner.feed(std::slice::from_ref(byte));
        }
        assert_eq!((whole.prompt, whole.completion, whole.chunks), (Some(7), Some(100), 100));
        assert_eq!(
            (scanner.prompt_tokens(), scanner.completion_tokens(), scanner.token_chunks()),
            (Some(7), Some(100), 100)
        );
    }

    #[test]
    fn native_lines_read_the_same_however_split() {
        // Lines the fast path passes over, lines it must not, and damage, in random orders,
        // split at every point: the counts are the tokenizer's every time.
        let lines: [&[u8]; 14] = [
            br#"{"model":"m","response":"The","done":false}"#,
            br#"{"model":"other","response":"x","done":false}"#,
            br#"{"model":"m","done":true,"prompt_eval_count":3,"eval_count":5}"#,
            br#"{"model":"m","done" : true,"eval_count":9}"#,
            br#"{"x":{"done":true,"eval_count":1},"done":false}"#,
            br#"{"done":true,"eval_count":2}"#,
            br#"{"prompt_eval_count":4}"#,
            br#"{"done":tru,"eval_count":1}"#,
            br#"{"done":false"#,
            br#"{"done":false}}"#,
            br#"{"response":"a"}b","done":false}"#,
            br#"[1,2]"#,
            br#"  "#,
            b"{\"response\":\"\x01\",\"done\":true,\"eval_count\":3}",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        for _ in 0..300 {
            let mut answer = Vec::new();
            for _ in 0..1 + next(6) {
                answer.extend_from_slice(lines[next(lines.len())]);
                answer.push(b'\n');
            }
            let whole = scan(NATIVE, &answer);
            for split in 0..=answer.len() {
                let mut pieces = UsageScanner::new(NATIVE);
                pieces.feed(&answer[..split]);
                pieces.feed(&answer[split..]);
                let found = (pieces.model().map(String::from), pieces.prompt_tokens(), pieces.completion_tokens());
                assert_eq!(
                    found,
                    (whole.model.clone(), whole.prompt, whole.completion),
                    "{}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }
    }

    #[test]
    fn an_error_answer_counts_nothing() {
        let found = scan(NATIVE, br#"{"error":"model \"x\" not found, try pulling it first"}"#);
        assert_eq!(
            found,
            Found { model: None, prompt: None, completion: None, so_far: 0, chunks: 0, malformed: false }
        );
    }

    // OpenAI-shaped answers.

    #[test]
    fn openai_answers_in_one_piece() {
        let chat = concat!(
            r#"{"id":"chatcmpl-42","object":"chat.completion","created":1735689600,"model":"llama3.2","#,
            r#""system_fingerprint":"fp_ollama","choices":[{"index":0,"message":{"role":"assistant","#,
            r#""content":"\"usage\":{\"prompt_tokens\":1}"},"finish_reason":"stop"}],"#,
            r#""usage":{"prompt_tokens":23,"completion_tokens":9,"total_tokens":32}}"#,
            "\n"
        );
        assert_eq!(scan_every_way(OPENAI_JSON, chat.as_bytes()), counted("llama3.2", 23, 9, 0));
        let completion = concat!(
            r#"{"id":"cmpl-7","object":"text_completion","created":1735689600,"model":"llama3.2","#,
            r#""system_fingerprint":"fp_ollama","choices":[{"text":"Hello","index":0,"finish_reason":"stop"}],"#,
            r#""usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#
        );
        assert_eq!(scan(OPENAI_JSON, completion.as_bytes()), counted("llama3.2", 4, 2, 0));
        let embeddings = concat!(
            r#"{"object":"list","data":[{"object":"embedding","embedding":[0.1,-0.2],"index":0}],"#,
            r#""model":"all-minilm","usage":{"prompt_tokens":5,"total_tokens":5}}"#
        );
        assert_eq!(scan_every_way(OPENAI_JSON, embeddings.as_bytes()), counted("all-minilm", 5, 0, 0));
        let responses = concat!(
            r#"{"id":"resp_1","object":"response","created_at":1,"completed_at":2,"status":"completed","#,
            r#""incomplete_details":null,"model":"gpt-oss:20b","output":[{"id":"msg_1","type":"message","#,
            r#""content":[{"type":"output_text","text":"hi","annotations":[],"logprobs":[]}]}],"#,
            r#""usage":{"input_tokens":12,"output_tokens":3,"total_tokens":15,"#,
            r#""input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":0}}}"#
        );
        assert_eq!(scan_every_way(OPENAI_JSON, responses.as_bytes()), counted("gpt-oss:20b", 12, 3, 0));
    }

    fn chat_chunk(content: &str) -> String {
        format!(
            r#"data: {{"id":"chatcmpl-42","object":"chat.completion.chunk","created":1735689600,"model":"llama3.2","system_fingerprint":"fp_ollama","choices":[{{"index":0,"delta":{{"role":"assistant","content":{content}}},"finish_reason":null}}]}}"#
        ) + "\n\n"
    }

    const CHAT_FINISH: &str = concat!(
        r#"data: {"id":"chatcmpl-42","object":"chat.completion.chunk","created":1735689600,"model":"llama3.2","#,
        r#""system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        "\n\n"
    );

    const CHAT_USAGE: &str = concat!(
        r#"data: {"id":"chatcmpl-42","object":"chat.completion.chunk","created":1735689600,"model":"llama3.2","#,
        r#""system_fingerprint":"fp_ollama","choices":[],"#,
        r#""usage":{"prompt_tokens":15,"completion_tokens":3,"total_tokens":18}}"#,
        "\n\n"
    );

    /// A streamed chat answer as Ollama writes it, with or without the usage asked for.
    fn chat_stream(with_usage: bool) -> String {
        let mut answer = chat_chunk(r#""""#);
        for content in [r#""Hel""#, r#""lo \"usage\":{} 😀""#, r#""!""#] {
            answer += &chat_chunk(content);
        }
        answer += CHAT_FINISH;
        if with_usage {
            answer += CHAT_USAGE;
        }
        answer + "data: [DONE]\n\n"
    }

    #[test]
    fn openai_chat_stream_with_usage() {
        let answer = chat_stream(true);
        assert_eq!(scan_every_way(OPENAI_SSE, answer.as_bytes()), counted("llama3.2", 15, 3, 3));
        let mut scanner = UsageScanner::new(OPENAI_SSE);
        scanner.feed(answer.as_bytes());
        assert!(scanner.saw_done_marker() && scanner.is_final());
    }

    #[test]
    fn openai_chat_stream_without_usage_counts_chunks() {
        let found = scan_every_way(OPENAI_SSE, chat_stream(false).as_bytes());
        let expected = Found {
            model: Some("llama3.2".into()),
            prompt: None,
            completion: None,
            so_far: 3,
            chunks: 3,
            malformed: false,
        };
        assert_eq!(found, expected);
    }

    fn completion_chunk(text: &str, finish: &str, usage: bool) -> String {
        let usage = if usage { r#","usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}"# } else { "" };
        format!(
            r#"data: {{"id":"cmpl-7","object":"text_completion","created":1735689600,"choices":[{{"text":{text},"index":0,"finish_reason":{finish}}}],"model":"llama3.2","system_fingerprint":"fp_ollama"{usage}}}"#
        ) + "\n\n"
    }

    /// A streamed /v1/completions answer as Ollama writes it.
    fn completion_stream(with_usage: bool) -> String {
        let mut answer = String::new();
        for text in [r#""Once""#, r#"" upon""#, r#""""#, r#"" a""#] {
            answer += &completion_chunk(text, "null", with_usage);
        }
        answer += &completion_chunk(r#"" time""#, r#""stop""#, with_usage);
        if with_usage {
            answer += concat!(
                r#"data: {"id":"cmpl-7","object":"text_completion","created":1735689600,"choices":[],"#,
                r#""model":"llama3.2","system_fingerprint":"fp_ollama","#,
                r#""usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
                "\n\n"
            );
        }
        answer + "data: [DONE]\n\n"
    }

    #[test]
    fn openai_completion_stream_ignores_the_zero_usage_in_every_chunk() {
        let answer = completion_stream(true);
        assert_eq!(scan_every_way(OPENAI_SSE, answer.as_bytes()), counted("llama3.2", 3, 5, 4));
        // Cut before the usage chunk: the zero usages have not made it final.
        let cut = answer.find(r#""choices":[]"#).unwrap();
        let mut scanner = UsageScanner::new(OPENAI_SSE);
        scanner.feed(&answer.as_bytes()[..cut]);
        assert!(!scanner.is_final());
        assert_eq!(scanner.completion_tokens_so_far(), 4);
    }

    #[test]
    fn openai_responses_stream() {
        // Go marshals these events from maps: members in name order.
        let answer = concat!(
            "event: response.created\n",
            r#"data: {"response":{"id":"resp_1","model":"gpt-oss:20b","output":[],"status":"in_progress","usage":null},"sequence_number":0,"type":"response.created"}"#,
            "\n\n",
            "event: response.output_text.delta\n",
            r#"data: {"content_index":0,"delta":"Hi","item_id":"msg_1","logprobs":[],"output_index":0,"sequence_number":4,"type":"response.output_text.delta"}"#,
            "\n\n",
            "event: response.reasoning_summary_text.delta\n",
            r#"data: {"delta":"hmm","item_id":"rs_1","output_index":0,"sequence_number":2,"summary_index":0,"type":"response.reasoning_summary_text.delta"}"#,
            "\n\n",
            "event: response.output_text.done\n",
            r#"data: {"content_index":0,"item_id":"msg_1","logprobs":[],"output_index":0,"sequence_number":5,"text":"Hi","type":"response.output_text.done"}"#,
            "\n\n",
            "event: response.completed\n",
            r#"data: {"response":{"completed_at":2,"id":"resp_1","model":"gpt-oss:20b","output":[{"content":[{"text":"Hi","type":"output_text"}],"id":"msg_1","type":"message"}],"status":"completed","#,
            r#""usage":{"input_tokens":30,"input_tokens_details":{"cached_tokens":0},"output_tokens":12,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":42}},"sequence_number":6,"type":"response.completed"}"#,
            "\n\n",
        );
        assert_eq!(scan_every_way(OPENAI_SSE, answer.as_bytes()), counted("gpt-oss:20b", 30, 12, 2));
    }

    #[test]
    fn event_stream_framing_variants() {
        // CRLF and CR line ends, comments, a field without its space, data over two lines,
        // unknown fields, and a data value that is not JSON.
        let answer = concat!(
            ": keep-alive\r\n\r\n",
            "id: 1\r\ndata:{\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n",
            "retry: 10\rdata: {\"choices\":[{\"delta\":\r",
            "data: {\"content\":\"b\"}}]}\r\r",
            "data: not json\n\n",
            "data\n\n",
            "event: whatever\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        );
        let found = scan_every_way(OPENAI_SSE, answer.as_bytes());
        assert_eq!(found, Found { malformed: true, ..counted("m", 1, 2, 2) });
        let mut scanner = UsageScanner::new(OPENAI_SSE);
        scanner.feed(answer.as_bytes());
        assert!(scanner.saw_done_marker());
        // "[DONE]" split over two data lines is not the marker.
        let mut scanner = UsageScanner::new(OPENAI_SSE);
        scanner.feed(b"data: [DO\ndata: NE]\n\n");
        assert!(!scanner.saw_done_marker());
        // An event's JSON that does not end with the event is dropped.
        let found = scan(OPENAI_SSE, b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}\n\ndata: }\n\n");
        assert_eq!((found.prompt, found.malformed), (None, true));
    }

    #[test]
    fn usage_without_choices_only_counts_in_a_stream_at_its_top_level() {
        let answer = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"x\"},\"usage\":{\"prompt_tokens\":9}}],\"model\":\"m\"}\n\n",
            "data: {\"x\":{\"usage\":{\"prompt_tokens\":9}},\"usage\":null,\"choices\":[]}\n\n",
        );
        let found = scan(OPENAI_SSE, answer.as_bytes());
        assert_eq!((found.prompt, found.chunks), (None, 1));
    }

    // Anthropic-shaped answers, as Ollama writes them.

    #[test]
    fn anthropic_answer_in_one_piece() {
        let answer = concat!(
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"llama3.2","#,
            r#""content":[{"type":"text","text":"Hi \"usage\""}],"stop_reason":"end_turn","#,
            r#""usage":{"input_tokens":10,"output_tokens":2}}"#
        );
        assert_eq!(scan_every_way(ANTHROPIC_JSON, answer.as_bytes()), counted("llama3.2", 10, 2, 0));
    }

    fn anthropic_event(name: &str, data: &str) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn anthropic_stream(delta_usage: &str) -> String {
        [
            anthropic_event(
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"llama3.2","content":[],"usage":{"input_tokens":14,"output_tokens":0}}}"#,
            ),
            anthropic_event(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            ),
            anthropic_event(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hm"}}"#,
            ),
            anthropic_event("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            anthropic_event(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}"#,
            ),
            anthropic_event(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" there"}}"#,
            ),
            anthropic_event(
                "message_delta",
                &format!(r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn"}},"usage":{delta_usage}}}"#),
            ),
            anthropic_event("message_stop", r#"{"type":"message_stop"}"#),
        ]
        .concat()
    }

    #[test]
    fn anthropic_stream_takes_message_delta_usage() {
        let answer = anthropic_stream(r#"{"input_tokens":17,"output_tokens":3}"#);
        assert_eq!(scan_every_way(ANTHROPIC_SSE, answer.as_bytes()), counted("llama3.2", 17, 3, 3));
        // Without input_tokens in message_delta, message_start's.
        let answer = anthropic_stream(r#"{"output_tokens":3}"#);
        assert_eq!(scan(ANTHROPIC_SSE, answer.as_bytes()), counted("llama3.2", 14, 3, 3));
        // Without `event:` lines, the JSON's type does it.
        let answer: String =
            answer.lines().filter(|line| !line.starts_with("event:")).flat_map(|l| [l, "\n"]).collect();
        assert_eq!(scan(ANTHROPIC_SSE, answer.as_bytes()), counted("llama3.2", 14, 3, 3));
    }

    #[test]
    fn anthropic_stream_cut_short() {
        let answer = anthropic_stream(r#"{"input_tokens":17,"output_tokens":3}"#);
        let cut = answer.find("event: message_delta").unwrap();
        let found = scan(ANTHROPIC_SSE, &answer.as_bytes()[..cut]);
        let expected = Found {
            model: Some("llama3.2".into()),
            prompt: Some(14),
            completion: None,
            so_far: 3,
            chunks: 3,
            malformed: false,
        };
        assert_eq!(found, expected);
    }

    #[test]
    fn answer_kinds() {
        let kind = |path, content_type: &str| AnswerKind::for_answer(path, content_type.as_bytes());
        assert_eq!(kind("/api/chat", "application/x-ndjson"), Some(NATIVE));
        assert_eq!(kind("/api/generate", "application/json; charset=utf-8"), Some(NATIVE));
        assert_eq!(kind("/api/embed", "Application/JSON"), Some(NATIVE));
        assert_eq!(kind("/v1/chat/completions", "text/event-stream"), Some(OPENAI_SSE));
        assert_eq!(kind("/v1/responses", " text/event-stream ; charset=utf-8"), Some(OPENAI_SSE));
        assert_eq!(kind("/v1/embeddings", "application/json"), Some(OPENAI_JSON));
        assert_eq!(kind("/v1/messages", "text/event-stream"), Some(ANTHROPIC_SSE));
        assert_eq!(kind("/v1/messages", "application/json"), Some(ANTHROPIC_JSON));
        assert_eq!(kind("/api/tags", "application/json"), None);
        assert_eq!(kind("/api/chat", "text/plain"), None);
        assert_eq!(kind("/api/chat", ""), None);
        assert!(accepts_stream_options("/v1/chat/completions") && accepts_stream_options("/v1/completions"));
        assert!(!accepts_stream_options("/v1/responses") && !accepts_stream_options("/api/chat"));
    }

    // The include_usage rewrite.

    fn strip_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<u8>, UsageStripper) {
        let mut stripper = UsageStripper::new();
        let mut out = Vec::new();
        for chunk in chunks {
            stripper.feed(chunk, &mut out);
            assert!(stripper.held_len() <= MAX_HELD_EVENT);
        }
        stripper.finish(&mut out);
        (out, stripper)
    }

    /// Strips `answer` whole, split at every point, a byte at a time and in random pieces,
    /// and checks each gives `expected`.
    fn strip_every_way(answer: &[u8], expected: &[u8]) -> UsageStripper {
        let (out, stripper) = strip_chunks([answer]);
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(expected));
        for at in 0..=answer.len() {
            let (a, b) = answer.split_at(at);
            assert_eq!(strip_chunks([a, b]).0, expected, "split at {at}");
        }
        assert_eq!(strip_chunks(answer.chunks(1)).0, expected);
        let mut random = Lcg(answer.len() as u64);
        for _ in 0..50 {
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < answer.len() {
                let len = 1 + random.below(60);
                pieces.push(&answer[at..(at + len).min(answer.len())]);
                at += len;
            }
            assert_eq!(strip_chunks(pieces).0, expected);
        }
        stripper
    }

    #[test]
    fn chat_stream_gets_back_the_bytes_it_would_have_had() {
        let stripper = strip_every_way(chat_stream(true).as_bytes(), chat_stream(false).as_bytes());
        assert_eq!((stripper.removed_events(), stripper.removed_members(), stripper.oversized_events()), (1, 0, 0));
    }

    #[test]
    fn completion_stream_gets_back_the_bytes_it_would_have_had() {
        let stripper = strip_every_way(completion_stream(true).as_bytes(), completion_stream(false).as_bytes());
        assert_eq!((stripper.removed_events(), stripper.removed_members()), (1, 5));
    }

    #[test]
    fn openai_style_usage_null_is_removed_too() {
        let asked = concat!(
            "data: {\"usage\":null,\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}], \"usage\" : null }\n\n",
            "data: {\"usage\":null}\n\n",
            "data: {\"id\":1,\"choices\":[ ],\"usage\":{\"prompt_tokens\":1}}\n\n",
            "data: [DONE]\n\n",
        );
        let plain = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}] }\n\n",
            "data: {}\n\n",
            "data: [DONE]\n\n",
        );
        let stripper = strip_every_way(asked.as_bytes(), plain.as_bytes());
        assert_eq!((stripper.removed_events(), stripper.removed_members()), (1, 3));
    }

    #[test]
    fn stripper_leaves_other_events_alone() {
        let answer = concat!(
            ": comment\n\n",
            "data: not json, \"usage\":null\n\n",
            "data: {\"choices\":[],\"usage\":\"text\"}\n\n",
            "data: {\"choices\":[],\"usage\":{},\"usage\":{}}\n\n",
            "data: {\"a\":{\"usage\":null}}\n\n",
            "data: {\"choices\":[]}\ndata: {\"usage\":{}}\n\n",
            "event: x\nid: 2\n\n",
            "\n\n",
            "data: {\"choices\":[],\"usage\":{}}",
        );
        let stripper = strip_every_way(answer.as_bytes(), answer.as_bytes());
        assert_eq!((stripper.removed_events(), stripper.removed_members()), (0, 0));
    }

    #[test]
    fn stripper_handles_crlf_and_cr_line_ends() {
        let asked = "event: e\r\ndata: {\"choices\":[{}],\"usage\":null}\r\n\r\ndata: {\"choices\":[],\"usage\":{}}\r\rdata: [DONE]\r\n\r\n";
        let plain = "event: e\r\ndata: {\"choices\":[{}]}\r\n\r\ndata: [DONE]\r\n\r\n";
        strip_every_way(asked.as_bytes(), plain.as_bytes());
        // A CR blank line at the very end.
        strip_every_way(b"data: {\"choices\":[],\"usage\":{}}\r\r", b"");
    }

    #[test]
    fn stripper_passes_each_event_on_as_soon_as_it_ends() {
        let answer = completion_stream(true);
        let expected = completion_stream(false);
        let mut stripper = UsageStripper::new();
        let mut out = Vec::new();
        for event in answer.split_inclusive("\n\n") {
            let before = out.len();
            stripper.feed(event.as_bytes(), &mut out);
            assert_eq!(stripper.held_len(), 0);
            assert!(expected.as_bytes().starts_with(&out));
            assert!(out.len() > before || event.contains(r#""choices":[]"#));
        }
        assert_eq!(out, expected.as_bytes());
        // Mid-event, that event is held and nothing else.
        let mut stripper = UsageStripper::new();
        let mut out = Vec::new();
        stripper.feed(b"data: [DONE]\n\ndata: {\"a\"", &mut out);
        assert_eq!((out.as_slice(), stripper.held_len()), (&b"data: [DONE]\n\n"[..], 10));
    }

    #[test]
    fn an_oversized_event_passes_unchanged_and_rewriting_resumes() {
        let big = format!("data: {{\"choices\":[{{\"text\":\"{}\"}}],\"usage\":null}}\n\n", "x".repeat(MAX_HELD_EVENT));
        let answer = format!("{}{big}{}", completion_stream(true), completion_stream(true));
        let expected = format!("{}{big}{}", completion_stream(false), completion_stream(false));
        for piece in [1, 100, 4096, answer.len()] {
            let (out, stripper) = strip_chunks(answer.as_bytes().chunks(piece));
            assert_eq!(out, expected.as_bytes(), "in pieces of {piece}");
            assert_eq!((stripper.oversized_events(), stripper.removed_events()), (1, 2));
        }
    }

    #[test]
    fn add_include_usage_to_streamed_requests() {
        let add = |body: &str| add_include_usage(body.as_bytes()).map(|b| String::from_utf8(b).unwrap());
        assert_eq!(
            add(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"}"}]}"#).as_deref(),
            Some(
                r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"}"}],"stream_options":{"include_usage":true}}"#
            )
        );
        assert_eq!(
            add(" {\n  \"stream\" : true\n}\r\n ").as_deref(),
            Some(" {\n  \"stream\" : true\n,\"stream_options\":{\"include_usage\":true}}\r\n ")
        );
        // Go's case folding, `ſ` included; the last `stream` wins; `null` leaves it.
        assert!(add(r#"{"STREAM":true}"#).is_some());
        assert!(add(r#"{"ſtream":true}"#).is_some());
        assert!(add(r#"{"stream":false,"stream":true}"#).is_some());
        assert!(add(r#"{"stream":true,"stream":null}"#).is_some());
        assert!(add(r#"{"stream":true,"stream":false}"#).is_none());
        // Stream options that do not ask: absent, null, empty, false, or overridden.
        for options in [
            r#"null"#,
            r#"{}"#,
            r#"{"include_usage":false}"#,
            r#"{"include_usage":null}"#,
            r#"{"include_usage":true,"include_usage":false}"#,
            r#"{"other":1}"#,
        ] {
            let body = format!(r#"{{"stream":true,"stream_options":{options}}}"#);
            assert!(add(&body).is_some(), "{options}");
        }
        assert!(add(r#"{"stream_options":{"include_usage":true},"stream_options":null,"stream":true}"#).is_some());
        // Already asked: nothing to do.
        for options in
            [r#"{"include_usage":true}"#, r#"{"Include_Usage":true}"#, r#"{"include_usage":true,"include_usage":null}"#]
        {
            let body = format!(r#"{{"stream":true,"stream_options":{options}}}"#);
            assert!(add(&body).is_none(), "{options}");
        }
        // A second object merges into the first in Go: include_usage stays true.
        assert!(add(r#"{"stream":true,"stream_options":{"include_usage":true},"STREAM_OPTIONS":{}}"#).is_none());
        assert!(add(r#"{"stream":true,"stream_options":null,"stream_options":{"include_usage":true}}"#).is_none());
        // Not streamed, not an object, not JSON, or of a type Go refuses.
        for body in [
            r#"{"model":"m"}"#,
            r#"{"stream":false}"#,
            r#"{"stream":null}"#,
            r#"{"stream":"true"}"#,
            r#"{"stream":1}"#,
            r#"{"stream":true,"stream_options":true}"#,
            r#"{"stream":true,"stream_options":[]}"#,
            r#"{"stream":true,"stream_options":{"include_usage":1}}"#,
            r#"[{"stream":true}]"#,
            r#"{"stream":true"#,
            r#"{"stream":true}{}"#,
            "",
        ] {
            assert!(add(body).is_none(), "{body}");
        }
    }

    #[test]
    fn added_member_is_what_go_would_read() {
        for body in [
            r#"{"stream":true}"#,
            r#"{"stream":true,"stream_options":null}"#,
            r#"{"stream":true,"stream_options":{"include_usage":false,"x":[1]}}"#,
        ] {
            let out = add_include_usage(body.as_bytes()).unwrap();
            let members = json::top_level_members(&out).unwrap();
            let last = members.last().unwrap();
            assert_eq!((&*last.name, &out[last.value.clone()]), ("stream_options", &br#"{"include_usage":true}"#[..]));
            assert_eq!(&out[..body.len() - 1], &body.as_bytes()[..body.len() - 1]);
            // Asking twice changes nothing more.
            assert_eq!(add_include_usage(&out), None);
        }
    }

    #[test]
    fn whole_round_trip_through_scanner_and_stripper() {
        // What the glue does: scan what Ollama sends, strip it, send the rest.
        let answer = chat_stream(true);
        let mut scanner = UsageScanner::new(OPENAI_SSE);
        let mut stripper = UsageStripper::new();
        let mut out = Vec::new();
        for chunk in answer.as_bytes().chunks(17) {
            scanner.feed(chunk);
            stripper.feed(chunk, &mut out);
        }
        stripper.finish(&mut out);
        assert_eq!(out, chat_stream(false).as_bytes());
        assert_eq!(found(&scanner), counted("llama3.2", 15, 3, 3));
    }

    #[test]
    fn any_bytes_split_anywhere_give_the_same_result() {
        // Pieces of JSON and SSE, and some that are neither, strung together at random: no
        // panic, and the same result whole and in any pieces.
        const PIECES: &[&[u8]] = &[
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b":",
            b"\"",
            b"\\",
            b"\\u",
            b"d83d",
            b"\"model\"",
            b"\"usage\"",
            b"\"choices\"",
            b"\"done\"",
            b"\"type\"",
            b"\"delta\"",
            b"\"content\"",
            b"\"message\"",
            b"\"response\"",
            b"true",
            b"false",
            b"null",
            b"123",
            b"-1.5e3",
            b"\"prompt_tokens\"",
            b"\"output_tokens\"",
            b"\"eval_count\"",
            b"\"message_delta\"",
            b"data: ",
            b"data:",
            b"event: ",
            b"message_start",
            b"\n",
            b"\r",
            b"\r\n",
            b"\n\n",
            b" ",
            b"[DONE]",
            "\u{e9}".as_bytes(),
            b"\xff",
            b"\x01",
        ];
        let kinds = [NATIVE, OPENAI_JSON, OPENAI_SSE, ANTHROPIC_JSON, ANTHROPIC_SSE];
        let mut random = Lcg(11);
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..random.below(80) {
                input.extend_from_slice(PIECES[random.below(PIECES.len())]);
            }
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let len = 1 + random.below(8);
                pieces.push(&input[at..(at + len).min(input.len())]);
                at += len;
            }
            for kind in kinds {
                assert_eq!(scan_chunks(kind, pieces.iter().copied()), scan(kind, &input));
            }
            assert_eq!(strip_chunks(pieces.iter().copied()).0, strip_chunks([&input[..]]).0);
        }
    }
}
