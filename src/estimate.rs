//! The gate's own estimate of a request's tokens: reserved against a `tokens=` budget when the
//! request is admitted, and charged when Ollama's counts never arrive (a client gone before the
//! final chunk, an answer that carries none, an answer compressed on the way), so that a request
//! that reached Ollama is never charged 0.
//!
//! The rule, as the README states it:
//! - the prompt is the request body's bytes / 4, rounded up (audio bytes / 1,000 for
//!   `/v1/audio/transcriptions`);
//! - the answer is the length cap the request sets (`max_tokens`, `max_completion_tokens`,
//!   `max_output_tokens`, or `num_predict` in `options`), else [`DEFAULT_ANSWER_TOKENS`]; 0 for
//!   the embedding endpoints, which generate nothing.
//!
//! When counts are missing, the prompt is charged its estimate, and the completion the token
//! chunks the gate relayed, or, for an answer it could not read, the answer estimate.

use crate::json::{for_each_top_level_member, go_name_matches, ValueKind};

/// The answer a request without a length cap is assumed to get, in tokens.
pub const DEFAULT_ANSWER_TOKENS: u64 = 1024;

/// No cap is taken above this: a `max_tokens` of 10^18 reserves what no answer can use.
pub const MAX_ANSWER_TOKENS: u64 = 1 << 20;

/// Bytes per token of a text body, and of an uploaded audio file.
const TEXT_BYTES_PER_TOKEN: u64 = 4;
const AUDIO_BYTES_PER_TOKEN: u64 = 1000;

pub use crate::endpoints::Work;

/// A request's estimated tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    pub prompt_tokens: u64,
    pub answer_tokens: u64,
}

impl Estimate {
    /// From the request body, read whole.
    pub fn of_body(work: Work, body: &[u8]) -> Estimate {
        let answer_tokens = match work {
            Work::Embeds => 0,
            Work::Generates | Work::Transcribes => answer_cap(body).unwrap_or(DEFAULT_ANSWER_TOKENS),
        };
        Estimate { answer_tokens, ..Estimate::of_length(work, body.len() as u64) }
    }

    /// From the body's length alone (a body the gate did not read).
    pub fn of_length(work: Work, bytes: u64) -> Estimate {
        let (per_token, answer_tokens) = match work {
            Work::Generates => (TEXT_BYTES_PER_TOKEN, DEFAULT_ANSWER_TOKENS),
            Work::Embeds => (TEXT_BYTES_PER_TOKEN, 0),
            Work::Transcribes => (AUDIO_BYTES_PER_TOKEN, DEFAULT_ANSWER_TOKENS),
        };
        Estimate { prompt_tokens: bytes.div_ceil(per_token), answer_tokens }
    }

    /// What is reserved against a `tokens=` budget while the request runs.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.answer_tokens)
    }
}

/// The largest answer-length cap a JSON body sets, as Go reads the members (any case); `None`
/// if it sets none, or sets one that is not a positive number (`num_predict: -1`, no cap).
pub fn answer_cap(body: &[u8]) -> Option<u64> {
    let mut cap: Option<u64> = None;
    let mut options = Vec::new();
    let mut take = |text: &[u8]| {
        if let Some(value) = std::str::from_utf8(text).ok().and_then(|text| text.parse::<u64>().ok()) {
            if value > 0 {
                cap = Some(cap.map_or(value, |cap| cap.max(value)).min(MAX_ANSWER_TOKENS));
            }
        }
    };
    let scanned = for_each_top_level_member(body, |member| {
        let caps = ["max_tokens", "max_completion_tokens", "max_output_tokens"];
        if member.kind == ValueKind::Number && caps.iter().any(|field| go_name_matches(&member.name, field)) {
            take(&body[member.value.clone()]);
        } else if member.kind == ValueKind::Object && go_name_matches(&member.name, "options") {
            options.push(member.value);
        }
    });
    scanned.ok()?;
    for range in options {
        let inner = &body[range];
        let _ = for_each_top_level_member(inner, |member| {
            if member.kind == ValueKind::Number && go_name_matches(&member.name, "num_predict") {
                take(&inner[member.value.clone()]);
            }
        });
    }
    cap
}

/// What a finished request is charged, and how much of it is the gate's estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Charge {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub estimated_tokens: u64,
}

impl Charge {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// What the answer told about its tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// The answer was read (not compressed, a kind the gate reads).
    pub readable: bool,
    /// Ollama's final counts.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Ollama's own guess at the prompt before its final count (`/v1/messages`' `message_start`),
    /// which may be far below it.
    pub prompt_guess: Option<u64>,
    /// Token chunks relayed so far (one token each in Ollama's streams).
    pub relayed_chunks: u64,
}

/// Whether a finished request reached Ollama and made it work: it was proxied (`has_upstream`)
/// and answered with a 2xx, or left by its client (499). Ollama's own refusals and errors, and
/// answers from nginx alone, are charged only what they counted.
pub fn reached_ollama(has_upstream: bool, code: u16) -> bool {
    has_upstream && (matches!(code, 200..=299) || code == 499)
}

/// The charge for a finished request: Ollama's counts where they came; where they did not, for
/// a request that reached Ollama with an estimate, the estimate (see the module's rule).
pub fn charge(counted: Counted, estimate: Option<Estimate>, reached_ollama: bool) -> Charge {
    let estimate = estimate.filter(|_| reached_ollama);
    let mut charge = Charge::default();
    match (counted.prompt_tokens, estimate) {
        (Some(tokens), _) => charge.prompt_tokens = tokens,
        (None, Some(estimate)) => {
            let tokens = estimate.prompt_tokens.max(counted.prompt_guess.unwrap_or(0));
            charge.prompt_tokens = tokens;
            charge.estimated_tokens += tokens;
        }
        (None, None) => charge.prompt_tokens = counted.prompt_guess.unwrap_or(0),
    }
    match (counted.completion_tokens, estimate) {
        (Some(tokens), _) => charge.completion_tokens = tokens,
        (None, _) if counted.readable && counted.relayed_chunks > 0 => {
            charge.completion_tokens = counted.relayed_chunks;
            charge.estimated_tokens += counted.relayed_chunks;
        }
        (None, Some(estimate)) if !counted.readable => {
            charge.completion_tokens = estimate.answer_tokens;
            charge.estimated_tokens += estimate.answer_tokens;
        }
        _ => {}
    }
    charge
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_follow_the_documented_rule() {
        let body = br#"{"model":"gemma3","prompt":"abcdefgh"}"#;
        let estimate = Estimate::of_body(Work::Generates, body);
        assert_eq!(estimate, Estimate { prompt_tokens: (body.len() as u64).div_ceil(4), answer_tokens: 1024 });
        let capped = br#"{"model":"gemma3","max_tokens":50}"#;
        assert_eq!(Estimate::of_body(Work::Generates, capped).answer_tokens, 50);
        assert_eq!(Estimate::of_body(Work::Embeds, capped).answer_tokens, 0);
        assert_eq!(Estimate::of_length(Work::Transcribes, 1_000_001).prompt_tokens, 1001);
        assert_eq!(Estimate::of_length(Work::Generates, 0), Estimate { prompt_tokens: 0, answer_tokens: 1024 });
        assert_eq!(Estimate { prompt_tokens: 3, answer_tokens: 4 }.total(), 7);
        assert_eq!(crate::endpoints::work_of_path("/api/chat"), Some(Work::Generates));
        assert_eq!(crate::endpoints::work_of_path("/v1/embeddings"), Some(Work::Embeds));
        assert_eq!(crate::endpoints::work_of_path("/api/tags"), None);
    }

    #[test]
    fn answer_caps_as_go_reads_them() {
        assert_eq!(answer_cap(br#"{"max_tokens":10}"#), Some(10));
        assert_eq!(answer_cap(br#"{"MAX_COMPLETION_TOKENS":20,"max_tokens":10}"#), Some(20));
        assert_eq!(answer_cap(br#"{"max_output_tokens":30}"#), Some(30));
        assert_eq!(answer_cap(br#"{"options":{"num_predict":40}}"#), Some(40));
        assert_eq!(answer_cap(br#"{"Options":{"Num_Predict":40},"options":{"num_predict":5}}"#), Some(40));
        assert_eq!(answer_cap(br#"{"options":{"num_predict":-1}}"#), None);
        assert_eq!(answer_cap(br#"{"max_tokens":1e3}"#), None);
        assert_eq!(answer_cap(br#"{"max_tokens":"10"}"#), None);
        assert_eq!(answer_cap(br#"{"max_tokens":99999999999999}"#), Some(MAX_ANSWER_TOKENS));
        assert_eq!(answer_cap(br#"{"prompt":"x"}"#), None);
        assert_eq!(answer_cap(b"not json"), None);
    }

    #[test]
    fn what_reached_ollama() {
        assert!(reached_ollama(true, 200) && reached_ollama(true, 299) && reached_ollama(true, 499));
        assert!(!reached_ollama(false, 200) && !reached_ollama(false, 499));
        for code in [0, 101, 304, 400, 404, 429, 500, 502, 504] {
            assert!(!reached_ollama(true, code), "{code}");
        }
    }

    #[test]
    fn a_request_that_reached_ollama_is_never_charged_zero() {
        let estimate = Some(Estimate { prompt_tokens: 1250, answer_tokens: 1024 });
        // The counts came: they are charged, nothing estimated.
        let whole = Counted {
            readable: true,
            prompt_tokens: Some(7),
            completion_tokens: Some(9),
            relayed_chunks: 9,
            prompt_guess: None,
        };
        assert_eq!(
            charge(whole, estimate, true),
            Charge { prompt_tokens: 7, completion_tokens: 9, estimated_tokens: 0 }
        );
        // A client gone before the final chunk: the prompt's estimate and the relayed chunks.
        let cut = Counted { readable: true, relayed_chunks: 3, ..Counted::default() };
        assert_eq!(
            charge(cut, estimate, true),
            Charge { prompt_tokens: 1250, completion_tokens: 3, estimated_tokens: 1253 }
        );
        // Ollama's own guess (message_start) counts only where it is the larger.
        let guessed = Counted { prompt_guess: Some(1), ..cut };
        assert_eq!(charge(guessed, estimate, true).prompt_tokens, 1250);
        let guessed = Counted { prompt_guess: Some(5000), ..cut };
        assert_eq!(charge(guessed, estimate, true).prompt_tokens, 5000);
        assert_eq!(charge(guessed, None, true).prompt_tokens, 5000);
        // Gone before any chunk.
        let early = Counted { readable: true, ..Counted::default() };
        assert_eq!(
            charge(early, estimate, true),
            Charge { prompt_tokens: 1250, completion_tokens: 0, estimated_tokens: 1250 }
        );
        // An answer the gate could not read (compressed): the whole estimate.
        let encoded = Counted::default();
        assert_eq!(charge(encoded, estimate, true).total(), 2274);
        assert_eq!(charge(encoded, estimate, true).estimated_tokens, 2274);
        // Not sent to Ollama, or nothing to estimate: only what was counted.
        assert_eq!(charge(encoded, estimate, false), Charge::default());
        assert_eq!(charge(cut, None, true), Charge { prompt_tokens: 0, completion_tokens: 3, estimated_tokens: 3 });
    }
}
