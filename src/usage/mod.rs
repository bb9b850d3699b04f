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

mod kind;
mod lexer;
mod plain;
mod request;
mod scanner;
mod sse;
mod strip;
mod tally;
#[cfg(test)]
mod tests;

pub use kind::{accepts_stream_options, AnswerKind, Dialect, Framing, MAX_HELD_EVENT, MAX_MODEL_LEN};
pub use request::{add_include_usage, include_usage_rewrite};
pub use scanner::UsageScanner;
pub use strip::UsageStripper;
