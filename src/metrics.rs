//! The counters `ollama_auth_metrics` answers with, in Prometheus' text exposition format 0.0.4.
//!
//! The input is plain data (the glue reads it out of its shared-memory zone): one small
//! struct per series, given to [`Exposition`] family by family as iterators. Each family is
//! written as one group, `# HELP` and `# TYPE` first, as the format requires; the metric and
//! label names are fixed here, label values are escaped (`\`, `"` and line feed), and numbers
//! are written as integers (durations as exact decimal seconds), with no floating point.
//!
//! The format does not allow two samples with the same labels in one family: the caller gives
//! each series once (a zone keyed by its labels does).

use crate::refusal::RefusalReason;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The user that series fold into when the zone has no room for a new one.
pub const OTHER_USER: &str = "__other__";

/// The upper bounds of `ollama_auth_request_duration_seconds`' buckets, in microseconds and as
/// written in `le` (Go's shortest form, as Prometheus' own clients write them): from a tenth
/// of a second (a refusal, an embedding) to five minutes (a long answer on a slow machine).
pub const DURATION_BUCKETS: [(u64, &str); 11] = [
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
    (30_000_000, "30"),
    (60_000_000, "60"),
    (120_000_000, "120"),
    (300_000_000, "300"),
];

/// Slots of a [`DurationHistogram`]: one per bucket, and one for durations above the last.
pub const DURATION_SLOTS: usize = DURATION_BUCKETS.len() + 1;

/// The slot a duration is counted in: the first bucket whose bound it does not exceed, or the
/// last slot past them all.
pub fn duration_slot(micros: u64) -> usize {
    DURATION_BUCKETS.iter().position(|&(bound, _)| micros <= bound).unwrap_or(DURATION_BUCKETS.len())
}

/// `ollama_auth_requests_total{user,model,code}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestCount<'a> {
    pub user: &'a str,
    pub model: &'a str,
    /// The HTTP status sent (499: the client went away).
    pub code: u16,
    pub count: u64,
}

/// `ollama_auth_prompt_tokens_total{user,model}` or `ollama_auth_completion_tokens_total{user,model}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenCount<'a> {
    pub user: &'a str,
    pub model: &'a str,
    pub tokens: u64,
}

/// `ollama_auth_refused_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedCount<'a> {
    pub reason: &'a str,
    pub count: u64,
}

/// `ollama_auth_request_duration_seconds{model}`: per-slot counts, not cumulative (the zone
/// adds one to [`duration_slot`]'s slot per request; the rendering sums them up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationHistogram<'a> {
    pub model: &'a str,
    pub slots: [u64; DURATION_SLOTS],
    pub sum_micros: u64,
}

impl<'a> DurationHistogram<'a> {
    pub fn new(model: &'a str) -> Self {
        DurationHistogram { model, slots: [0; DURATION_SLOTS], sum_micros: 0 }
    }

    pub fn observe(&mut self, micros: u64) {
        self.slots[duration_slot(micros)] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    pub fn count(&self) -> u64 {
        self.slots.iter().sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Requests,
    PromptTokens,
    CompletionTokens,
    EstimatedTokens,
    SlotSeconds,
    Refused,
    Durations,
}

impl Family {
    fn header(self) -> &'static str {
        match self {
            Family::Requests => concat!(
                "# HELP ollama_auth_requests_total Requests answered, by user, model and HTTP status (499: the client went away).\n",
                "# TYPE ollama_auth_requests_total counter\n",
            ),
            Family::PromptTokens => concat!(
                "# HELP ollama_auth_prompt_tokens_total Prompt tokens Ollama evaluated, by user and model.\n",
                "# TYPE ollama_auth_prompt_tokens_total counter\n",
            ),
            Family::CompletionTokens => concat!(
                "# HELP ollama_auth_completion_tokens_total Tokens Ollama generated, by user and model.\n",
                "# TYPE ollama_auth_completion_tokens_total counter\n",
            ),
            Family::EstimatedTokens => concat!(
                "# HELP ollama_auth_estimated_tokens_total Of the prompt and completion tokens, those the gate estimated because Ollama's counts never arrived, by user and model.\n",
                "# TYPE ollama_auth_estimated_tokens_total counter\n",
            ),
            Family::SlotSeconds => concat!(
                "# HELP ollama_auth_slot_seconds_total Time requests held a slot of the fair queue (GPU time), by user and model.\n",
                "# TYPE ollama_auth_slot_seconds_total counter\n",
            ),
            Family::Refused => concat!(
                "# HELP ollama_auth_refused_total Requests refused, by reason.\n",
                "# TYPE ollama_auth_refused_total counter\n",
            ),
            Family::Durations => concat!(
                "# HELP ollama_auth_request_duration_seconds Time from a request to the end of its answer, by model.\n",
                "# TYPE ollama_auth_request_duration_seconds histogram\n",
            ),
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// An exposition being written. Give each family's series in one go (one call, or calls in a
/// row: the header is written once, by the first); a family may have no series, and then has
/// its header alone.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    out: Vec<u8>,
    current: Option<Family>,
    written: u8,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// With room for `bytes`, about 100 a series (growing costs little: 200,000 series render
    /// in about 10 ms either way).
    pub fn with_capacity(bytes: usize) -> Self {
        Exposition { out: Vec::with_capacity(bytes), ..Self::default() }
    }

    pub fn requests<'a>(&mut self, series: impl IntoIterator<Item = RequestCount<'a>>) -> &mut Self {
        self.begin(Family::Requests);
        for RequestCount { user, model, code, count } in series {
            self.out.extend_from_slice(b"ollama_auth_requests_total{user=\"");
            push_label_value(&mut self.out, user);
            self.out.extend_from_slice(b"\",model=\"");
            push_label_value(&mut self.out, model);
            self.out.extend_from_slice(b"\",code=\"");
            push_u64(&mut self.out, u64::from(code));
            self.out.extend_from_slice(b"\"} ");
            push_u64(&mut self.out, count);
            self.out.push(b'\n');
        }
        self
    }

    pub fn prompt_tokens<'a>(&mut self, series: impl IntoIterator<Item = TokenCount<'a>>) -> &mut Self {
        self.begin(Family::PromptTokens);
        self.tokens(b"ollama_auth_prompt_tokens_total{user=\"", series)
    }

    pub fn completion_tokens<'a>(&mut self, series: impl IntoIterator<Item = TokenCount<'a>>) -> &mut Self {
        self.begin(Family::CompletionTokens);
        self.tokens(b"ollama_auth_completion_tokens_total{user=\"", series)
    }

    pub fn estimated_tokens<'a>(&mut self, series: impl IntoIterator<Item = TokenCount<'a>>) -> &mut Self {
        self.begin(Family::EstimatedTokens);
        self.tokens(b"ollama_auth_estimated_tokens_total{user=\"", series)
    }

    /// `ollama_auth_slot_seconds_total{user,model}`: `tokens` here counts microseconds.
    pub fn slot_seconds<'a>(&mut self, series: impl IntoIterator<Item = TokenCount<'a>>) -> &mut Self {
        self.begin(Family::SlotSeconds);
        for TokenCount { user, model, tokens: micros } in series {
            self.out.extend_from_slice(b"ollama_auth_slot_seconds_total{user=\"");
            push_label_value(&mut self.out, user);
            self.out.extend_from_slice(b"\",model=\"");
            push_label_value(&mut self.out, model);
            self.out.extend_from_slice(b"\"} ");
            push_seconds(&mut self.out, micros);
            self.out.push(b'\n');
        }
        self
    }

    pub fn refused<'a>(&mut self, series: impl IntoIterator<Item = RefusedCount<'a>>) -> &mut Self {
        self.begin(Family::Refused);
        for RefusedCount { reason, count } in series {
            self.out.extend_from_slice(b"ollama_auth_refused_total{reason=\"");
            push_label_value(&mut self.out, reason);
            self.out.extend_from_slice(b"\"} ");
            push_u64(&mut self.out, count);
            self.out.push(b'\n');
        }
        self
    }

    pub fn request_durations<'a>(&mut self, series: impl IntoIterator<Item = DurationHistogram<'a>>) -> &mut Self {
        self.begin(Family::Durations);
        for histogram in series {
            let mut cumulative = 0u64;
            let bounds = DURATION_BUCKETS.iter().map(|&(_, le)| le).chain(["+Inf"]);
            for (le, &in_slot) in bounds.zip(&histogram.slots) {
                cumulative = cumulative.saturating_add(in_slot);
                self.out.extend_from_slice(b"ollama_auth_request_duration_seconds_bucket{model=\"");
                push_label_value(&mut self.out, histogram.model);
                self.out.extend_from_slice(b"\",le=\"");
                self.out.extend_from_slice(le.as_bytes());
                self.out.extend_from_slice(b"\"} ");
                push_u64(&mut self.out, cumulative);
                self.out.push(b'\n');
            }
            self.out.extend_from_slice(b"ollama_auth_request_duration_seconds_sum{model=\"");
            push_label_value(&mut self.out, histogram.model);
            self.out.extend_from_slice(b"\"} ");
            push_seconds(&mut self.out, histogram.sum_micros);
            self.out.extend_from_slice(b"\nollama_auth_request_duration_seconds_count{model=\"");
            push_label_value(&mut self.out, histogram.model);
            self.out.extend_from_slice(b"\"} ");
            push_u64(&mut self.out, cumulative);
            self.out.push(b'\n');
        }
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.out
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    fn begin(&mut self, family: Family) {
        if self.current == Some(family) {
            return;
        }
        // A family written in two groups would be refused by Prometheus.
        assert!(self.written & family.bit() == 0, "{family:?} series must be given in one go");
        self.written |= family.bit();
        self.current = Some(family);
        self.out.extend_from_slice(family.header().as_bytes());
    }

    fn tokens<'a>(&mut self, start: &[u8], series: impl IntoIterator<Item = TokenCount<'a>>) -> &mut Self {
        for TokenCount { user, model, tokens } in series {
            self.out.extend_from_slice(start);
            push_label_value(&mut self.out, user);
            self.out.extend_from_slice(b"\",model=\"");
            push_label_value(&mut self.out, model);
            self.out.extend_from_slice(b"\"} ");
            push_u64(&mut self.out, tokens);
            self.out.push(b'\n');
        }
        self
    }
}

/// A label value, escaped as the format wants: `\` as `\\`, `"` as `\"`, line feed as `\n`.
pub(crate) fn push_label_value(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    if !bytes.iter().any(|&b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(crate::decimal(n, &mut [0; 20]));
}

/// Microseconds as exact decimal seconds: `1.5`, `0.000001`, `300`.
fn push_seconds(out: &mut Vec<u8>, micros: u64) {
    push_u64(out, micros / 1_000_000);
    let mut fraction = micros % 1_000_000;
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (fraction % 10) as u8;
        fraction /= 10;
    }
    if let Some(last) = digits.iter().rposition(|&digit| digit != b'0') {
        out.push(b'.');
        out.extend_from_slice(&digits[..=last]);
    }
}

/// What the zone counts for one `(user, model, code)` series: its requests, and for the
/// token and duration families (which have fewer labels) its share, summed at rendering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeriesCounts {
    pub requests: u64,
    /// Requests a model answered (its answer named one or carried counts): a `(user, model)`
    /// has token series only if it has some, so listings and errors make no empty token rows.
    pub answered: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub duration_slots: [u64; DURATION_SLOTS],
    pub duration_sum_micros: u64,
    /// Of the prompt and completion tokens, those the gate estimated (Ollama's counts never
    /// arrived; see `estimate`).
    pub estimated_tokens: u64,
    /// Microseconds the requests held a slot of the fair queue (`ollama_auth_queue`).
    pub slot_micros: u64,
}

impl SeriesCounts {
    /// Counts one finished request: `tokens` (prompt, completion) if a model answered it.
    pub fn add(&mut self, tokens: Option<(u64, u64)>, micros: u64) {
        self.requests = self.requests.saturating_add(1);
        if let Some((prompt, completion)) = tokens {
            self.answered = self.answered.saturating_add(1);
            self.prompt_tokens = self.prompt_tokens.saturating_add(prompt);
            self.completion_tokens = self.completion_tokens.saturating_add(completion);
        }
        self.duration_slots[duration_slot(micros)] += 1;
        self.duration_sum_micros = self.duration_sum_micros.saturating_add(micros);
    }

    /// Adds another series' counts (the same labels, counted apart).
    pub fn merge(&mut self, other: &SeriesCounts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.answered = self.answered.saturating_add(other.answered);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        for (slot, add) in self.duration_slots.iter_mut().zip(other.duration_slots) {
            *slot = slot.saturating_add(add);
        }
        self.duration_sum_micros = self.duration_sum_micros.saturating_add(other.duration_sum_micros);
        self.estimated_tokens = self.estimated_tokens.saturating_add(other.estimated_tokens);
        self.slot_micros = self.slot_micros.saturating_add(other.slot_micros);
    }
}

/// The longest user or model label a series key holds; longer ones are cut (at a character
/// boundary), so a key's size is bounded.
pub const MAX_LABEL_BYTES: usize = 1024;

/// A series' key in the zone: `user`, `model` (each length-prefixed, so any bytes are safe) and
/// the status code, written into `out` (cleared first).
pub fn series_key(user: &str, model: &str, code: u16, out: &mut Vec<u8>) {
    out.clear();
    for label in [user, model] {
        let label = cut_label(label);
        out.extend_from_slice(&(label.len() as u16).to_le_bytes());
        out.extend_from_slice(label.as_bytes());
    }
    out.extend_from_slice(&code.to_le_bytes());
}

fn cut_label(label: &str) -> &str {
    if label.len() <= MAX_LABEL_BYTES {
        return label;
    }
    let mut end = MAX_LABEL_BYTES;
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    &label[..end]
}

/// The labels a [`series_key`] was made of; `None` for bytes it did not make.
pub fn parse_series_key(key: &[u8]) -> Option<(&str, &str, u16)> {
    let mut rest = key;
    let mut label = || -> Option<&str> {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        let text = std::str::from_utf8(tail.get(..len)?).ok()?;
        rest = &tail[len..];
        Some(text)
    };
    let (user, model) = (label()?, label()?);
    let code: [u8; 2] = rest.try_into().ok()?;
    Some((user, model, u16::from_le_bytes(code)))
}

/// The whole exposition from the zone's counts: requests per series, tokens per user and
/// model (only where a model answered some request), refusals per reason (every reason, zeros included, so a dashboard's rate() starts
/// from a sample), durations per model. Sorted, so scrapes are stable; series given twice (the
/// zone's overflow slots) are summed.
pub fn render(series: &[(&str, &str, u16, SeriesCounts)], refused: &[u64]) -> Vec<u8> {
    // Sorted by reference: moving the counts themselves (168 bytes) would cost more than the rest.
    let mut sorted: Vec<&(&str, &str, u16, SeriesCounts)> = series.iter().collect();
    sorted.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    let mut merged: Vec<(&str, &str, u16, SeriesCounts)> = Vec::with_capacity(sorted.len());
    for &(user, model, code, counts) in sorted {
        match merged.last_mut() {
            Some(last) if (last.0, last.1, last.2) == (user, model, code) => last.3.merge(&counts),
            _ => merged.push((user, model, code, counts)),
        }
    }
    // Sorted by user then model: one user's series for one model are next to each other.
    let mut by_user_model: Vec<(&str, &str, SeriesCounts)> = Vec::with_capacity(merged.len());
    for &(user, model, _, counts) in &merged {
        match by_user_model.last_mut() {
            Some(last) if (last.0, last.1) == (user, model) => last.2.merge(&counts),
            _ => by_user_model.push((user, model, counts)),
        }
    }
    let mut by_model: std::collections::HashMap<&str, SeriesCounts> = std::collections::HashMap::new();
    for &(_, model, counts) in &by_user_model {
        by_model.entry(model).or_default().merge(&counts);
    }
    let mut by_model: Vec<(&str, SeriesCounts)> = by_model.into_iter().collect();
    by_model.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out =
        Exposition::with_capacity(110 * (merged.len() + 2 * by_user_model.len() + 14 * by_model.len()) + 4096);
    out.requests(merged.iter().map(|&(user, model, code, counts)| RequestCount {
        user,
        model,
        code,
        count: counts.requests,
    }));
    let answered = || by_user_model.iter().filter(|(_, _, counts)| counts.answered > 0);
    out.prompt_tokens(answered().map(|&(user, model, counts)| TokenCount {
        user,
        model,
        tokens: counts.prompt_tokens,
    }));
    out.completion_tokens(answered().map(|&(user, model, counts)| TokenCount {
        user,
        model,
        tokens: counts.completion_tokens,
    }));
    // Only where something was estimated: most series never are.
    out.estimated_tokens(
        by_user_model
            .iter()
            .filter(|(_, _, counts)| counts.estimated_tokens > 0)
            .map(|&(user, model, counts)| TokenCount { user, model, tokens: counts.estimated_tokens }),
    );
    // Only where a request held a slot: locations without a queue have none.
    out.slot_seconds(
        by_user_model.iter().filter(|(_, _, counts)| counts.slot_micros > 0).map(|&(user, model, counts)| TokenCount {
            user,
            model,
            tokens: counts.slot_micros,
        }),
    );
    out.refused(RefusalReason::ALL.iter().map(|reason| RefusedCount {
        reason: reason.as_str(),
        count: refused.get(reason.index()).copied().unwrap_or(0),
    }));
    out.request_durations(by_model.iter().map(|&(model, counts)| DurationHistogram {
        model,
        slots: counts.duration_slots,
        sum_micros: counts.duration_sum_micros,
    }));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn text(exposition: &Exposition) -> &str {
        std::str::from_utf8(exposition.as_bytes()).unwrap()
    }

    #[test]
    fn renders_every_family() {
        let mut histogram = DurationHistogram::new("llama3.2");
        for micros in [50_000, 100_000, 100_001, 3_000_000, 400_000_000] {
            histogram.observe(micros);
        }
        let mut exposition = Exposition::new();
        exposition
            .requests([
                RequestCount { user: "alice", model: "llama3.2", code: 200, count: 3 },
                RequestCount { user: "alice", model: "llama3.2", code: 499, count: 1 },
            ])
            .prompt_tokens([TokenCount { user: "alice", model: "llama3.2", tokens: 120 }])
            .completion_tokens([TokenCount { user: "alice", model: "llama3.2", tokens: 4000 }])
            .refused([RefusedCount { reason: "bad_key", count: 2 }])
            .request_durations([histogram, DurationHistogram::new("qwen3:8b")]);
        let expected = "\
# HELP ollama_auth_requests_total Requests answered, by user, model and HTTP status (499: the client went away).
# TYPE ollama_auth_requests_total counter
ollama_auth_requests_total{user=\"alice\",model=\"llama3.2\",code=\"200\"} 3
ollama_auth_requests_total{user=\"alice\",model=\"llama3.2\",code=\"499\"} 1
# HELP ollama_auth_prompt_tokens_total Prompt tokens Ollama evaluated, by user and model.
# TYPE ollama_auth_prompt_tokens_total counter
ollama_auth_prompt_tokens_total{user=\"alice\",model=\"llama3.2\"} 120
# HELP ollama_auth_completion_tokens_total Tokens Ollama generated, by user and model.
# TYPE ollama_auth_completion_tokens_total counter
ollama_auth_completion_tokens_total{user=\"alice\",model=\"llama3.2\"} 4000
# HELP ollama_auth_refused_total Requests refused, by reason.
# TYPE ollama_auth_refused_total counter
ollama_auth_refused_total{reason=\"bad_key\"} 2
# HELP ollama_auth_request_duration_seconds Time from a request to the end of its answer, by model.
# TYPE ollama_auth_request_duration_seconds histogram
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"0.1\"} 2
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"0.25\"} 3
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"0.5\"} 3
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"1\"} 3
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"2.5\"} 3
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"5\"} 4
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"10\"} 4
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"30\"} 4
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"60\"} 4
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"120\"} 4
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"300\"} 4
ollama_auth_request_duration_seconds_bucket{model=\"llama3.2\",le=\"+Inf\"} 5
ollama_auth_request_duration_seconds_sum{model=\"llama3.2\"} 403.250001
ollama_auth_request_duration_seconds_count{model=\"llama3.2\"} 5
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"0.1\"} 0
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"0.25\"} 0
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"0.5\"} 0
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"1\"} 0
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"2.5\"} 0
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"5\"} 0
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"10\"} 0
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"30\"} 0
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"60\"} 0
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"120\"} 0
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"300\"} 0
ollama_auth_request_duration_seconds_bucket{model=\"qwen3:8b\",le=\"+Inf\"} 0
ollama_auth_request_duration_seconds_sum{model=\"qwen3:8b\"} 0
ollama_auth_request_duration_seconds_count{model=\"qwen3:8b\"} 0
";
        assert_eq!(text(&exposition), expected);
    }

    #[test]
    fn empty_families_have_their_header_alone() {
        let mut exposition = Exposition::new();
        exposition.requests([]).refused([]);
        assert_eq!(
            text(&exposition),
            concat!(
                "# HELP ollama_auth_requests_total Requests answered, by user, model and HTTP status (499: the client went away).\n",
                "# TYPE ollama_auth_requests_total counter\n",
                "# HELP ollama_auth_refused_total Requests refused, by reason.\n",
                "# TYPE ollama_auth_refused_total counter\n",
            )
        );
    }

    #[test]
    fn a_family_may_come_in_several_calls_in_a_row() {
        let mut exposition = Exposition::new();
        exposition.refused([RefusedCount { reason: "a", count: 1 }]).refused([RefusedCount { reason: "b", count: 2 }]);
        assert_eq!(text(&exposition).matches("# TYPE").count(), 1);
        assert!(text(&exposition).ends_with("{reason=\"a\"} 1\nollama_auth_refused_total{reason=\"b\"} 2\n"));
    }

    #[test]
    #[should_panic(expected = "in one go")]
    fn a_family_split_by_another_is_refused() {
        Exposition::new().refused([]).requests([]).refused([]);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut exposition = Exposition::new();
        exposition.prompt_tokens([TokenCount { user: "a\\b\"c\nd\re\té", model: "m\"", tokens: 1 }]);
        assert!(text(&exposition)
            .ends_with("ollama_auth_prompt_tokens_total{user=\"a\\\\b\\\"c\\nd\re\té\",model=\"m\\\"\"} 1\n"));
    }

    #[test]
    fn numbers() {
        let render = |n| {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            String::from_utf8(out).unwrap()
        };
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::MAX] {
            assert_eq!(render(n), n.to_string());
        }
        let seconds = |micros| {
            let mut out = Vec::new();
            push_seconds(&mut out, micros);
            String::from_utf8(out).unwrap()
        };
        let cases = [
            (0, "0"),
            (1, "0.000001"),
            (10, "0.00001"),
            (100_000, "0.1"),
            (1_500_000, "1.5"),
            (300_000_000, "300"),
            (1_234_567_890, "1234.56789"),
            (u64::MAX, "18446744073709.551615"),
        ];
        for (micros, expected) in cases {
            assert_eq!(seconds(micros), expected);
            assert_eq!(expected.parse::<f64>().unwrap(), micros as f64 / 1e6);
        }
    }

    #[test]
    fn duration_slots() {
        assert_eq!(duration_slot(0), 0);
        assert_eq!(duration_slot(100_000), 0);
        assert_eq!(duration_slot(100_001), 1);
        assert_eq!(duration_slot(1_000_000), 3);
        assert_eq!(duration_slot(300_000_000), 10);
        assert_eq!(duration_slot(300_000_001), 11);
        assert_eq!(duration_slot(u64::MAX), DURATION_SLOTS - 1);
        for (i, &(bound, le)) in DURATION_BUCKETS.iter().enumerate() {
            assert_eq!(le.parse::<f64>().unwrap(), bound as f64 / 1e6);
            assert_eq!(duration_slot(bound), i);
            if i > 0 {
                assert!(bound > DURATION_BUCKETS[i - 1].0);
            }
        }
    }

    struct Large {
        users: Vec<String>,
        models: [&'static str; 5],
        histograms: Vec<DurationHistogram<'static>>,
    }

    fn large() -> Large {
        let models =
            ["llama3.2:3b", "qwen3:8b", "gpt-oss:20b", "nomic-embed-text:latest", "registry.example.com/team/m:q4"];
        let histograms = models
            .iter()
            .enumerate()
            .map(|(i, model)| {
                let mut histogram = DurationHistogram::new(model);
                for j in 0..1000u64 {
                    histogram.observe(j * j * (i as u64 + 1) * 317);
                }
                histogram
            })
            .collect();
        Large { users: (0..10_000).map(|i| format!("user-{i:05}@example.com")).collect(), models, histograms }
    }

    /// 10,000 users x 5 models: two status codes each, both token counters.
    fn render_large(data: &Large, capacity: usize) -> Exposition {
        let pairs = || data.users.iter().flat_map(|user| data.models.iter().map(move |model| (user.as_str(), *model)));
        let mut exposition = Exposition::with_capacity(capacity);
        exposition
            .requests(pairs().flat_map(|(user, model)| {
                [
                    RequestCount { user, model, code: 200, count: 123_456 },
                    RequestCount { user, model, code: 499, count: 7 },
                ]
            }))
            .prompt_tokens(pairs().map(|(user, model)| TokenCount { user, model, tokens: 987_654_321 }))
            .completion_tokens(pairs().map(|(user, model)| TokenCount { user, model, tokens: 12_345_678_901 }))
            .refused(
                ["bad_key", "expired", "model", "scope", "method"].map(|reason| RefusedCount { reason, count: 42 }),
            )
            .request_durations(data.histograms.iter().copied());
        exposition
    }

    #[test]
    fn renders_ten_thousand_users_by_five_models_fast() {
        let data = large();
        // Sized for the answer (about 100 bytes a series), then grown from nothing.
        for (capacity, how) in [(200_000 * 120, "sized"), (0, "grown")] {
            let mut times = Vec::new();
            let mut len = 0;
            let mut lines = 0;
            for _ in 0..7 {
                let started = Instant::now();
                let exposition = render_large(&data, capacity);
                times.push(started.elapsed());
                len = exposition.as_bytes().len();
                lines = exposition.as_bytes().iter().filter(|&&b| b == b'\n').count();
            }
            times.sort();
            let median = times[times.len() / 2];
            println!(
                "rendered 10,000 users x 5 models ({lines} lines, {:.1} MB, buffer {how}): median {median:?}, best {:?}, worst {:?}",
                len as f64 / 1e6,
                times[0],
                times[times.len() - 1]
            );
            assert_eq!(lines, 200_000 + 5 * 14 + 5 + 10);
            assert!(median < Duration::from_millis(250), "median {median:?}");
        }
    }

    /// Writes a sample with awkward label values, and the large one, for a check with the
    /// Python client's parser, when OLLAMA_AUTH_EXPOSITION_DIR names a directory:
    /// `python3 tests/check_exposition.py < $OLLAMA_AUTH_EXPOSITION_DIR/sample.prom`.
    #[test]
    fn writes_samples_for_an_outside_parser() {
        let Some(dir) = std::env::var_os("OLLAMA_AUTH_EXPOSITION_DIR") else { return };
        let dir = std::path::Path::new(&dir);
        let mut histogram = DurationHistogram::new("m\"\\\n");
        for micros in [1, 99_999, 100_000, 250_001, 299_999_999, 300_000_000, 300_000_001, 86_400_000_000] {
            histogram.observe(micros);
        }
        let mut sample = Exposition::new();
        sample
            .requests([
                RequestCount { user: "alice", model: "llama3.2", code: 200, count: 3 },
                RequestCount { user: OTHER_USER, model: "llama3.2", code: 499, count: u64::MAX },
                RequestCount { user: "q\"uote", model: "back\\slash", code: 401, count: 0 },
                RequestCount { user: "new\nline", model: "ünï©ødé 😀", code: 200, count: 1 },
                RequestCount { user: "", model: "", code: 0, count: 1 },
                RequestCount { user: "trailing\\", model: "{}=,# ", code: 65535, count: 1 },
            ])
            .prompt_tokens([TokenCount { user: "a\\\"\n", model: "m", tokens: 12 }])
            .completion_tokens([TokenCount { user: "a\\\"\n", model: "m", tokens: 34 }])
            .refused([RefusedCount { reason: "bad_key", count: 2 }, RefusedCount { reason: "r\"\\\n", count: 1 }])
            .request_durations([histogram, DurationHistogram::new("empty")]);
        std::fs::write(dir.join("sample.prom"), sample.as_bytes()).unwrap();
        std::fs::write(dir.join("large.prom"), render_large(&large(), 0).as_bytes()).unwrap();
    }

    #[test]
    fn series_keys_round_trip_any_label() {
        let mut key = Vec::new();
        for (user, model, code) in [("alice", "gemma3:latest", 200), ("", "", 499), ("a\"b\n", "x\u{0}y", 0)] {
            series_key(user, model, code, &mut key);
            assert_eq!(parse_series_key(&key), Some((user, model, code)));
        }
        let long = "é".repeat(MAX_LABEL_BYTES);
        series_key(&long, "m", 200, &mut key);
        let (user, _, _) = parse_series_key(&key).unwrap();
        assert!(user.len() <= MAX_LABEL_BYTES && long.starts_with(user));
        assert_eq!(parse_series_key(b"\x05\x00ab"), None);
    }

    #[test]
    fn estimated_tokens_are_a_family_of_their_own_where_there_are_some() {
        let mut counted = SeriesCounts::default();
        counted.add(Some((10, 20)), 1000);
        let mut estimated = SeriesCounts { estimated_tokens: 1250, ..SeriesCounts::default() };
        estimated.add(Some((1250, 0)), 1000);
        let mut gone = SeriesCounts { estimated_tokens: 3, ..SeriesCounts::default() };
        gone.add(Some((7, 3)), 1000);
        let refused = [0u64; RefusalReason::ALL.len()];
        let series = [("a", "m", 200, counted), ("b", "m", 200, estimated), ("b", "m", 499, gone)];
        let text = String::from_utf8(render(&series, &refused)).unwrap();
        assert!(text.contains("# TYPE ollama_auth_estimated_tokens_total counter\n"));
        assert!(text.contains("ollama_auth_estimated_tokens_total{user=\"b\",model=\"m\"} 1253\n"), "{text}");
        assert!(text.contains("ollama_auth_prompt_tokens_total{user=\"b\",model=\"m\"} 1257\n"));
        assert!(!text.contains("ollama_auth_estimated_tokens_total{user=\"a\""), "nothing estimated, no series");
    }

    #[test]
    fn render_sums_tokens_and_durations_across_codes() {
        let mut ok = SeriesCounts::default();
        ok.add(Some((10, 20)), 150_000);
        ok.add(Some((1, 2)), 50_000);
        ok.slot_micros = 1_500_000;
        let mut gone = SeriesCounts::default();
        gone.add(Some((5, 7)), 400_000_000);
        gone.slot_micros = 250_000;
        let mut refused = [0u64; RefusalReason::ALL.len()];
        refused[RefusalReason::UnknownKey.index()] = 3;
        let text = String::from_utf8(render(&[("bob", "m", 200, ok), ("bob", "m", 499, gone)], &refused)).unwrap();
        for line in [
            "ollama_auth_requests_total{user=\"bob\",model=\"m\",code=\"200\"} 2\n",
            "ollama_auth_requests_total{user=\"bob\",model=\"m\",code=\"499\"} 1\n",
            "ollama_auth_prompt_tokens_total{user=\"bob\",model=\"m\"} 16\n",
            "ollama_auth_completion_tokens_total{user=\"bob\",model=\"m\"} 29\n",
            "ollama_auth_slot_seconds_total{user=\"bob\",model=\"m\"} 1.75\n",
            "ollama_auth_refused_total{reason=\"unknown_key\"} 3\n",
            "ollama_auth_refused_total{reason=\"rate_limited\"} 0\n",
            "ollama_auth_request_duration_seconds_bucket{model=\"m\",le=\"0.1\"} 1\n",
            "ollama_auth_request_duration_seconds_bucket{model=\"m\",le=\"0.25\"} 2\n",
            "ollama_auth_request_duration_seconds_bucket{model=\"m\",le=\"300\"} 2\n",
            "ollama_auth_request_duration_seconds_bucket{model=\"m\",le=\"+Inf\"} 3\n",
            "ollama_auth_request_duration_seconds_sum{model=\"m\"} 400.2\n",
            "ollama_auth_request_duration_seconds_count{model=\"m\"} 3\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn token_series_only_where_a_model_answered() {
        let one = |tokens| {
            let mut counts = SeriesCounts::default();
            counts.add(tokens, 1_000);
            counts
        };
        let (listing, error, answered, folded) = (one(None), one(None), one(Some((0, 0))), one(Some((3, 4))));
        let series = [
            ("bob", "", 200, listing),
            ("bob", "", 404, error),
            ("bob", "m", 200, answered),
            ("bob", "m", 500, error),
            (OTHER_USER, "", 200, folded),
            (OTHER_USER, "", 404, error),
        ];
        let text = String::from_utf8(render(&series, &[])).unwrap();
        let tokens: Vec<&str> = text.lines().filter(|l| l.starts_with("ollama_auth_prompt_tokens_total{")).collect();
        // A model that answered with no tokens still has its series; the folded `__other__` one
        // keeps the tokens it was given; bob's listing and error make none.
        assert_eq!(
            tokens,
            [
                "ollama_auth_prompt_tokens_total{user=\"__other__\",model=\"\"} 3",
                "ollama_auth_prompt_tokens_total{user=\"bob\",model=\"m\"} 0"
            ]
        );
        assert!(text.contains("ollama_auth_completion_tokens_total{user=\"__other__\",model=\"\"} 4\n"));
        assert!(!text.contains("ollama_auth_completion_tokens_total{user=\"bob\",model=\"\"}"));
        // Request counts stay as they are, with or without a model.
        assert!(text.contains("ollama_auth_requests_total{user=\"bob\",model=\"\",code=\"200\"} 1\n"));
        assert!(text.contains("ollama_auth_requests_total{user=\"bob\",model=\"m\",code=\"500\"} 1\n"));
    }

    #[test]
    #[ignore = "a measurement, run by make bench"]
    fn measure_metrics_scrape() {
        // 10,000 users x 5 models: the keys as the zone holds them, copied out (the part done
        // under the zone's lock), then rendered.
        let mut keys = Vec::new();
        for user in 0..10_000 {
            for model in 0..5 {
                let mut key = Vec::new();
                series_key(&format!("user-{user}"), &format!("model-{model}:latest"), 200, &mut key);
                keys.push(key);
            }
        }
        let mut counts = SeriesCounts::default();
        counts.add(Some((100, 200)), 1_500_000);
        let refused = [1u64; RefusalReason::ALL.len()];
        let (mut copy_ms, mut total_ms) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let copied: Vec<(String, String, u16, SeriesCounts)> = keys
                .iter()
                .filter_map(|key| parse_series_key(key))
                .map(|(user, model, code)| (user.to_owned(), model.to_owned(), code, counts))
                .collect();
            copy_ms = copy_ms.min(start.elapsed().as_secs_f64() * 1000.0);
            let borrowed: Vec<_> = copied.iter().map(|(u, m, c, n)| (u.as_str(), m.as_str(), *c, *n)).collect();
            let text = render(&borrowed, &refused);
            total_ms = total_ms.min(start.elapsed().as_secs_f64() * 1000.0);
            assert!(text.len() > 50_000 * 60);
        }
        println!("MEASURE metrics_scrape_10k_users_5_models_copy {copy_ms:.3}");
        println!("MEASURE metrics_scrape_10k_users_5_models_total {total_ms:.3}");
    }
}
