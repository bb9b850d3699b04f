//! What an answer is: its API's dialect (from the endpoint table) and framing, and the bounds
//! the scanner keeps to.

use crate::endpoints;
pub use crate::endpoints::Dialect;

/// The longest model name kept; a longer one is not reported. Ollama's own limits make a
/// name at most about 600 bytes (a 350-byte host and three 80-byte parts).
pub const MAX_MODEL_LEN: usize = 1024;

/// The longest SSE event [`UsageStripper`] holds back; a longer one is passed on unchanged.
pub const MAX_HELD_EVENT: usize = 64 * 1024;

/// The longest member name compared: the longest one looked for is `prompt_eval_count`.
pub(super) const MAX_NAME_LEN: usize = 24;
/// The longest `type` (or SSE `event:`) compared: `response.reasoning_summary_text.delta`.
pub(super) const MAX_TYPE_LEN: usize = 48;
/// Containers whose place is tracked (the deepest that counts, `choices[0].delta`, is the
/// fourth); any deeper are skipped by their brackets, with no limit and no memory.
pub(super) const TRACKED_DEPTH: usize = 8;

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
        let dialect = endpoints::answer_dialect(path)?;
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
    endpoints::accepts_stream_options(path)
}
