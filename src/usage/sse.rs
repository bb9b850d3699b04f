//! Server-sent event framing: where an event stream's lines are, and the event's `type`.

use super::kind::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Field {
    Data,
    Event,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SseLine {
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
pub(super) struct Sse {
    pub(super) line: SseLine,
    /// The last line ended with CR: a LF right after it belongs to the same line end.
    pub(super) skip_lf: bool,
    pub(super) field: [u8; 8],
    pub(super) field_len: usize,
    pub(super) event_name: [u8; MAX_TYPE_LEN],
    pub(super) event_len: usize,
    pub(super) event: EventType,
    pub(super) data_lines: u32,
    /// The first bytes of the event's data, to recognize `[DONE]`, and how many there were.
    pub(super) data_prefix: [u8; 8],
    pub(super) data_len: usize,
}

impl Sse {
    pub(super) fn new() -> Self {
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
pub(super) enum EventType {
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
    pub(super) fn parse(name: &[u8]) -> EventType {
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
