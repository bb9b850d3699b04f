//! What a client is told of its limits: the `x-ratelimit-*` headers (OpenAI's names and
//! duration format), written on the stack, and the whole seconds of a `Retry-After`.

/// The state of one window of one kind, as OpenAI's `x-ratelimit-*` headers describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remaining {
    pub limit: u64,
    /// How many more the window admits now (requests: after the one just admitted).
    pub remaining: u64,
    /// Milliseconds until the window has forgotten everything it counts (OpenAI: "the time until
    /// the rate limit resets to its initial state").
    pub reset_ms: u64,
}

/// What the answer tells the client about its limits: for each kind the key has, the window with
/// the least remaining (ties: the one that resets last).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub requests: Option<Remaining>,
    pub tokens: Option<Remaining>,
}

impl RateInfo {
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, only for the kinds the key has.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(6);
        self.each_header(|name, value| headers.push((name, String::from_utf8_lossy(value).into_owned())));
        headers
    }

    /// The same headers, each given to `emit` as it is written (on the stack: a request that
    /// carries them allocates nothing for them).
    pub fn each_header(&self, mut emit: impl FnMut(&'static str, &[u8])) {
        let mut text = Text::default();
        let kinds = [
            (
                self.requests,
                ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"],
            ),
            (self.tokens, ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"]),
        ];
        for (remaining, [limit_name, remaining_name, reset_name]) in kinds {
            let Some(remaining) = remaining else { continue };
            emit(limit_name, text.clear().number(remaining.limit).as_bytes());
            emit(remaining_name, text.clear().number(remaining.remaining).as_bytes());
            emit(reset_name, text.clear().reset(remaining.reset_ms).as_bytes());
        }
    }
}

/// A short text written on the stack: a number, or a reset duration.
#[derive(Default)]
struct Text {
    bytes: [u8; 32],
    len: usize,
}

impl Text {
    fn clear(&mut self) -> &mut Self {
        self.len = 0;
        self
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn push(&mut self, bytes: &[u8]) -> &mut Self {
        let end = (self.len + bytes.len()).min(self.bytes.len());
        self.bytes[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
        self
    }

    fn number(&mut self, n: u64) -> &mut Self {
        self.push(crate::decimal(n, &mut [0; 20]))
    }

    /// A reset duration as OpenAI writes it (Go's duration format): `20ms` under a second, else
    /// `1s`, `6m0s`, `1h2m3s`. Seconds are rounded up, never shown with a fraction: clients that
    /// read the value with a plain `(\d+)(h|m|s|ms)` pattern would misread `8.64s`.
    fn reset(&mut self, milliseconds: u64) -> &mut Self {
        match milliseconds {
            0 => self.push(b"0s"),
            1..=999 => self.number(milliseconds).push(b"ms"),
            _ => {
                let seconds = milliseconds.div_ceil(1000);
                let (hours, minutes, seconds) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
                if hours > 0 {
                    self.number(hours).push(b"h").number(minutes).push(b"m")
                } else if minutes > 0 {
                    self.number(minutes).push(b"m")
                } else {
                    self
                }
                .number(seconds)
                .push(b"s")
            }
        }
    }
}

/// A reset duration as the `x-ratelimit-reset-*` headers write it (see [`RateInfo::each_header`]).
pub fn format_reset(milliseconds: u64) -> String {
    String::from_utf8_lossy(Text::default().reset(milliseconds).as_bytes()).into_owned()
}

/// Whole seconds of waiting, rounded up, at least 1 (a `Retry-After: 0` would invite a retry
/// storm).
pub(super) fn retry_after_seconds(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(1000).max(1)
}
