//! What an answer's scan counts: the places in it that matter (`Ctx`, `Slot`), the records and
//! environment a value is read in, and what was found so far (`Tally`).

use super::kind::*;
use super::sse::*;

/// What the scan has found so far.
#[derive(Clone, Default)]
pub(super) struct Tally {
    pub(super) model: Option<Box<str>>,
    /// (prompt, completion) of the final usage report.
    pub(super) finished: Option<(u64, u64)>,
    /// `message_start.message.usage.input_tokens` of an Anthropic stream.
    pub(super) start_input_tokens: Option<u64>,
    pub(super) token_chunks: u64,
    pub(super) done_marker: bool,
    pub(super) malformed: bool,
}

impl Tally {
    pub(super) fn model(&mut self, source: Src, bytes: &[u8], dialect: Dialect) {
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

    pub(super) fn finish(&mut self, prompt: Option<u64>, completion: Option<u64>) {
        self.finished = Some((prompt.unwrap_or(0), completion.unwrap_or(0)));
    }

    /// A top-level value has ended: count what it says.
    pub(super) fn commit(&mut self, record: &Record, env: Env) {
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
pub(super) struct Env {
    pub(super) dialect: Dialect,
    pub(super) framing: Framing,
    /// The SSE `event:` of the current event.
    pub(super) event: EventType,
}

impl Env {
    /// A native JSON answer is read as NDJSON: a top-level value ends on its line, and a line
    /// that ends inside one is damage, forgotten with its line (Ollama writes each object on
    /// one line, its single answers too, and a newline never sits inside its strings). So
    /// each line reads the same whatever came before it.
    pub(super) fn is_lines(self) -> bool {
        self.framing == Framing::Json && self.dialect == Dialect::Native
    }
}

/// The objects whose `usage` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Src {
    /// The top-level object's `usage`.
    Root = 0,
    /// `message.usage` (Anthropic's `message_start`).
    Message = 1,
    /// `response.usage` (the Responses API's events).
    Response = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UsageField {
    Prompt = 0,
    Completion = 1,
    Input = 2,
    Output = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) enum Choices {
    #[default]
    Absent,
    Empty,
    NonEmpty,
}

/// What one top-level value said, as far as counting goes.
#[derive(Clone, Default)]
pub(super) struct Record {
    pub(super) is_object: bool,
    pub(super) done: Option<bool>,
    pub(super) prompt_eval_count: Option<u64>,
    pub(super) eval_count: Option<u64>,
    pub(super) usage: [[Option<u64>; 4]; 3],
    /// Whether each `usage` was an object (not `null`).
    pub(super) usage_object: [bool; 3],
    /// The `type` member; `None` when absent.
    pub(super) event_type: Option<EventType>,
    pub(super) choices: Choices,
    /// A token-carrying string (`choices[0].delta.content`, `delta.text`...) was non-empty.
    pub(super) text: bool,
}

impl Record {
    pub(super) fn event_type(&self, env: Env) -> EventType {
        self.event_type.unwrap_or(env.event)
    }
}

/// Where a container sits, as far as counting goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ctx {
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
pub(super) enum Slot {
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

pub(super) fn slot_for(ctx: Ctx, name: &[u8]) -> Slot {
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
