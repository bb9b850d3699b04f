//! Per-key limits (`requests=`, `tokens=`, `parallel=`): the counting, in plain fixed-size data
//! that the nginx glue keeps in a shared-memory zone (one [`KeyLimits`] per key, changed only
//! under the zone's lock), and the state file that carries the counts across a restart.
//!
//! A window slides, counted from above so that it never admits more than its limit in any span
//! of its period. The period is cut into [`WIDTHS_PER_PERIOD`] sub-intervals of equal width
//! (aligned on the Unix epoch, so the same for every worker), each with a count. The window's
//! count is the sum of the sub-intervals that touch the last period: the oldest of them lies
//! partly before the period and is counted whole. So the count is never below the true sliding
//! count, and exceeds it only by what happened in the one width before the period: a refusal
//! comes at most 1/15 of the period early (4 s on `1m`, 4 min on `1h`, 96 min on `1d`). Each
//! sub-interval also keeps the moment of its latest charge and is forgotten one period after it,
//! so a refused request never waits longer than the period, and `Retry-After` is exact. A fixed
//! window, reset at its boundaries, would admit twice the limit across a boundary, and a token
//! bucket with a burst of the limit nearly twice within one period; neither can happen here.
//!
//! Time is a parameter (milliseconds since the Unix epoch), never read here. No method panics,
//! whatever the state holds: every bit pattern of [`KeyLimits`] is a value it handles.

use std::fmt;

use crate::options::{EntryOptions, Window, MAX_WINDOW_SECONDS};

/// Windows one key may have, `tokens=` and `requests=` together: a minute, an hour and a day of
/// each, and what keeps a key's counters within 1 KB of the zone.
pub const MAX_WINDOWS: usize = 6;

/// Sub-intervals a period is cut into; the early refusal is at most one of them.
pub const WIDTHS_PER_PERIOD: u64 = 15;

/// The sub-intervals that touch a period: its widths and the one it starts in, one slot each.
const SLOTS: usize = WIDTHS_PER_PERIOD as usize + 1;

/// What one key's counters take in the zone.
pub const KEY_LIMITS_BYTES: usize = std::mem::size_of::<KeyLimits>();

// The README gives the zone 1 KB per key for the counters (nginx's slab class for them).
const _: () = assert!(KEY_LIMITS_BYTES <= 1024);

/// The longest key id the state file holds (a label or a fingerprint).
pub const MAX_KEY_ID_BYTES: usize = 256;

/// How far the clock may seem to go back and still be read as the workers' cached times
/// differing (the counters then hold, as if no time had passed). Further back, the clock was set
/// back: the counters move with it, each keeping its age, so that no key stays locked until the
/// clock catches up again.
const CLOCK_SKEW_TOLERANCE_MS: u64 = 60_000;

/// A sub-interval's count stops here. A slot this full keeps its window closed until it leaves:
/// what went past it is unknown, and an unknown count must not admit.
const FULL_SLOT: u32 = u32::MAX;

/// What a window counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Requests,
    Tokens,
}

impl Kind {
    /// Its byte in the zone and the state file; 0 marks no window.
    fn code(self) -> u8 {
        match self {
            Kind::Requests => 1,
            Kind::Tokens => 2,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Requests),
            2 => Some(Kind::Tokens),
            _ => None,
        }
    }
}

/// A digest of an entry's limits, so the zone can tell cheaply when a reload changed them (and
/// its counters must be [reconfigured](KeyLimits::reconfigure)). Never 0, which stands for
/// "not known" (counters read back from the state file).
pub fn signature(options: &EntryOptions) -> u64 {
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |value: u64| {
        for byte in value.to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
    };
    for (tag, windows) in [(1, &options.requests), (2, &options.tokens)] {
        for window in windows.iter() {
            add(tag);
            add(window.limit);
            add(window.seconds);
        }
    }
    add(3);
    add(options.parallel.map_or(0, |parallel| u64::from(parallel) + 1));
    hash.max(1)
}

/// One limit of a key, written as its refusal names it: `requests 60/1m`, `tokens 20000/1m`,
/// `parallel 2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Requests(Window),
    Tokens(Window),
    Parallel(u32),
}

impl Limit {
    fn of_window(kind: Kind, window: Window) -> Limit {
        match kind {
            Kind::Requests => Limit::Requests(window),
            Kind::Tokens => Limit::Tokens(window),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Requests(window) => write!(f, "requests {window}"),
            Limit::Tokens(window) => write!(f, "tokens {window}"),
            Limit::Parallel(count) => write!(f, "parallel {count}"),
        }
    }
}

/// Why a request may not go on now: the 429's `Retry-After` and the limit its body names
/// (`{"error":"rate limited: requests 60/1m"}`: the Display is the limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub limit: Limit,
    /// Whole seconds until enough of the window has passed for the request to be admitted,
    /// rounded up, at least 1. For `parallel=`, 1: when a request ends is not known.
    pub retry_after_seconds: u64,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.limit.fmt(f)
    }
}

/// Options this module cannot count. The options parser never makes the second kind; the
/// first is for the glue to report on the key's line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// How many windows the entry has, more than [`MAX_WINDOWS`].
    TooManyWindows(usize),
    /// A limit of 0, a period outside 1 s to 366 days, or two windows of one kind over one period.
    Unsupported(Limit),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::TooManyWindows(count) => write!(
                f,
                "{count} limit windows, more than the {MAX_WINDOWS} a key may have (tokens= and requests= together)"
            ),
            ConfigError::Unsupported(limit) => write!(
                f,
                "limit \"{limit}\" cannot be counted (it needs at least 1 over 1 second to 366 days, one per period)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

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
fn retry_after_seconds(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(1000).max(1)
}

/// One window's counts: a ring of the sub-intervals that touch the period, the newest being the
/// one the key's `latest_ms` falls in.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowCounter {
    limit: u64,
    seconds: u32,
    /// [`Kind::code`]; 0 for no window.
    kind: u8,
    _padding: [u8; 3],
    /// The count of sub-interval `n` is in slot `n % SLOTS`.
    slots: [u32; SLOTS],
    /// Milliseconds from the start of sub-interval `n` to its latest charge, in slot `n % SLOTS`.
    latest_charge: [u32; SLOTS],
}

impl WindowCounter {
    const UNUSED: WindowCounter =
        WindowCounter { limit: 0, seconds: 0, kind: 0, _padding: [0; 3], slots: [0; SLOTS], latest_charge: [0; SLOTS] };

    fn new(kind: Kind, window: Window) -> WindowCounter {
        let seconds = u32::try_from(window.seconds).unwrap_or(u32::MAX);
        WindowCounter { limit: window.limit, seconds, kind: kind.code(), ..WindowCounter::UNUSED }
    }

    fn kind(&self) -> Option<Kind> {
        Kind::from_code(self.kind)
    }

    fn window(&self) -> Window {
        Window { limit: self.limit, seconds: u64::from(self.seconds) }
    }

    fn is_same_period(&self, other: &WindowCounter) -> bool {
        self.kind == other.kind && self.seconds == other.seconds
    }

    /// A period of 0 (only in a state nothing here made) counts as a second, so nothing divides
    /// by zero.
    fn period_ms(&self) -> u64 {
        u64::from(self.seconds.max(1)) * 1000
    }

    /// The sub-interval a moment falls in, counted from the epoch.
    fn sub_interval_at(&self, time_ms: u64) -> u64 {
        let index = u128::from(time_ms) * u128::from(WIDTHS_PER_PERIOD) / u128::from(self.period_ms());
        u64::try_from(index).unwrap_or(u64::MAX)
    }

    /// The first millisecond of a sub-interval.
    fn start_ms(&self, sub_interval: u64) -> u64 {
        let start = (u128::from(sub_interval) * u128::from(self.period_ms())).div_ceil(u128::from(WIDTHS_PER_PERIOD));
        u64::try_from(start).unwrap_or(u64::MAX)
    }

    /// The moment a sub-interval stops being counted: one period after its latest charge, and
    /// at the latest when it no longer touches the last period.
    fn forgotten_at_ms(&self, sub_interval: u64) -> u64 {
        let latest_charge =
            self.start_ms(sub_interval).saturating_add(u64::from(self.latest_charge[Self::slot_of(sub_interval)]));
        latest_charge.saturating_add(self.period_ms()).min(self.start_ms(sub_interval.saturating_add(SLOTS as u64)))
    }

    fn slot_of(sub_interval: u64) -> usize {
        (sub_interval % SLOTS as u64) as usize
    }

    /// The sub-intervals counted at `at_ms` that the ring still holds (it holds up to
    /// `latest_ms`'s), oldest first: those touching the last period, less the oldest once a
    /// period has passed since its latest charge. `at_ms` is not before `latest_ms`.
    fn counted(&self, latest_ms: u64, at_ms: u64) -> std::ops::RangeInclusive<u64> {
        let oldest = self.sub_interval_at(at_ms).saturating_sub(WIDTHS_PER_PERIOD);
        let oldest = if at_ms >= self.forgotten_at_ms(oldest) { oldest.saturating_add(1) } else { oldest };
        oldest..=self.sub_interval_at(latest_ms)
    }

    /// The sum of the sub-intervals `from..=newest`; a full slot makes it unbounded.
    fn sum(&self, from: u64, newest: u64) -> u64 {
        (from..=newest)
            .map(|sub_interval| self.slots[Self::slot_of(sub_interval)])
            .try_fold(0u64, |sum, count| (count != FULL_SLOT).then(|| sum + u64::from(count)))
            .unwrap_or(u64::MAX)
    }

    fn used(&self, latest_ms: u64, at_ms: u64) -> u64 {
        let counted = self.counted(latest_ms, at_ms);
        self.sum(*counted.start(), *counted.end())
    }

    /// Milliseconds from `now_ms` until the window counts less than its limit, if it does not now.
    fn wait_ms(&self, latest_ms: u64, at_ms: u64, now_ms: u64) -> Option<u64> {
        let counted = self.counted(latest_ms, at_ms);
        let (oldest, newest) = (*counted.start(), *counted.end());
        if self.sum(oldest, newest) < self.limit {
            return None;
        }
        // The first sub-interval whose forgetting brings the count below the limit.
        let enough = counted.clone().find(|&sub_interval| {
            sub_interval == newest || self.sum(sub_interval.saturating_add(1), newest) < self.limit
        });
        let admitted_at =
            enough.map_or(now_ms.saturating_add(self.period_ms()), |sub_interval| self.forgotten_at_ms(sub_interval));
        Some(admitted_at.saturating_sub(now_ms))
    }

    /// Milliseconds from `now_ms` until the window counts nothing.
    fn reset_ms(&self, latest_ms: u64, at_ms: u64, now_ms: u64) -> u64 {
        let newest_used =
            self.counted(latest_ms, at_ms).rev().find(|&sub_interval| self.slots[Self::slot_of(sub_interval)] > 0);
        newest_used.map_or(0, |sub_interval| self.forgotten_at_ms(sub_interval).saturating_sub(now_ms))
    }

    fn remaining(&self, latest_ms: u64, at_ms: u64, now_ms: u64) -> Remaining {
        Remaining {
            limit: self.limit,
            remaining: self.limit.saturating_sub(self.used(latest_ms, at_ms)),
            reset_ms: self.reset_ms(latest_ms, at_ms, now_ms),
        }
    }

    /// Empties the slots that the sub-intervals after `from_ms`'s, up to `to_ms`'s, take over.
    fn roll(&mut self, from_ms: u64, to_ms: u64) {
        let from = self.sub_interval_at(from_ms);
        let passed = self.sub_interval_at(to_ms).saturating_sub(from).min(SLOTS as u64);
        for step in 1..=passed {
            let slot = Self::slot_of(from.saturating_add(step));
            self.slots[slot] = 0;
            self.latest_charge[slot] = 0;
        }
    }

    /// Moves the counts back with a clock set back from `from_ms` to `to_ms`, each keeping its
    /// age in sub-intervals (those older than the epoch allows join the first sub-interval).
    fn move_back(&mut self, from_ms: u64, to_ms: u64) {
        let (from, to) = (self.sub_interval_at(from_ms), self.sub_interval_at(to_ms));
        let (mut moved, mut moved_charges) = ([0u32; SLOTS], [0u32; SLOTS]);
        for age in 0..SLOTS as u64 {
            let Some(old) = from.checked_sub(age) else { break };
            let (new_slot, old_slot) = (Self::slot_of(to.saturating_sub(age)), Self::slot_of(old));
            moved[new_slot] = moved[new_slot].saturating_add(self.slots[old_slot]);
            moved_charges[new_slot] = moved_charges[new_slot].max(self.latest_charge[old_slot]);
        }
        self.slots = moved;
        self.latest_charge = moved_charges;
    }

    fn charge(&mut self, at_ms: u64, amount: u64) {
        if amount == 0 {
            return;
        }
        let sub_interval = self.sub_interval_at(at_ms);
        let slot = Self::slot_of(sub_interval);
        self.slots[slot] = self.slots[slot].saturating_add(u32::try_from(amount).unwrap_or(FULL_SLOT));
        let offset = u32::try_from(at_ms.saturating_sub(self.start_ms(sub_interval))).unwrap_or(u32::MAX);
        self.latest_charge[slot] = self.latest_charge[slot].max(offset);
    }
}

/// All the limits of one key and their counts: plain data (no pointers, no heap, `Copy`), so
/// that the glue can keep it in a shared-memory zone and copy it out to write the state file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyLimits {
    /// The latest moment the counts were brought to; every window's ring ends at it.
    latest_ms: u64,
    windows: [WindowCounter; MAX_WINDOWS],
    /// `parallel=`; 0 for none.
    parallel: u32,
    /// Requests admitted and not yet ended, counted with or without `parallel=`, so that a
    /// `parallel=` added by a reload counts those already running.
    in_flight: u32,
    window_count: u8,
    _padding: [u8; 3],
    /// Tokens reserved by requests in flight ([`reserve_tokens`](Self::reserve_tokens)), until
    /// their answers' counts are charged: a `tokens=` window admits only while what it counted
    /// and what is reserved stay under its limit, so a key sending many requests at once
    /// overshoots by one request at most.
    reserved_tokens: u32,
}

impl Default for KeyLimits {
    fn default() -> Self {
        KeyLimits::EMPTY
    }
}

impl KeyLimits {
    /// No limits and no counts.
    pub const EMPTY: KeyLimits = KeyLimits {
        latest_ms: 0,
        windows: [WindowCounter::UNUSED; MAX_WINDOWS],
        parallel: 0,
        in_flight: 0,
        window_count: 0,
        _padding: [0; 3],
        reserved_tokens: 0,
    };

    /// Empty counters for an entry's limits: its `requests=` windows, then its `tokens=` ones.
    pub fn new(options: &EntryOptions, now_ms: u64) -> Result<KeyLimits, ConfigError> {
        let window_count = options.requests.len() + options.tokens.len();
        if window_count > MAX_WINDOWS {
            return Err(ConfigError::TooManyWindows(window_count));
        }
        let mut limits = KeyLimits { latest_ms: now_ms, ..KeyLimits::EMPTY };
        let windows = options
            .requests
            .iter()
            .map(|&w| (Kind::Requests, w))
            .chain(options.tokens.iter().map(|&w| (Kind::Tokens, w)));
        for (index, (kind, window)) in windows.enumerate() {
            let counter = WindowCounter::new(kind, window);
            let repeated = limits.windows[..index].iter().any(|earlier| earlier.is_same_period(&counter));
            if window.limit == 0 || !(1..=MAX_WINDOW_SECONDS).contains(&window.seconds) || repeated {
                return Err(ConfigError::Unsupported(Limit::of_window(kind, window)));
            }
            limits.windows[index] = counter;
        }
        limits.window_count = window_count as u8;
        match options.parallel {
            Some(0) => return Err(ConfigError::Unsupported(Limit::Parallel(0))),
            Some(parallel) => limits.parallel = parallel,
            None => {}
        }
        Ok(limits)
    }

    /// Whether an entry's limits can be counted, for the glue to report when it loads the file.
    pub fn check(options: &EntryOptions) -> Result<(), ConfigError> {
        KeyLimits::new(options, 0).map(drop)
    }

    /// Takes the limits of a reloaded entry. A window of the same kind and period keeps its
    /// counts (its limit may have changed), a new one starts empty, a removed one is dropped;
    /// requests in flight stay counted. Options that cannot be counted change nothing.
    pub fn reconfigure(&mut self, options: &EntryOptions, now_ms: u64) -> Result<(), ConfigError> {
        let mut next = KeyLimits::new(options, now_ms)?;
        self.advance(now_ms);
        next.latest_ms = self.latest_ms;
        next.in_flight = self.in_flight;
        next.reserved_tokens = self.reserved_tokens;
        let count = next.window_count();
        for window in &mut next.windows[..count] {
            if let Some(kept) = self.windows().iter().find(|old| old.is_same_period(window)) {
                window.slots = kept.slots;
                window.latest_charge = kept.latest_charge;
            }
        }
        *self = next;
        Ok(())
    }

    /// The key's limits: windows, then `parallel=`.
    pub fn limits(&self) -> impl Iterator<Item = Limit> + '_ {
        let windows = self.windows().iter().filter_map(|w| Some(Limit::of_window(w.kind()?, w.window())));
        windows.chain((self.parallel > 0).then_some(Limit::Parallel(self.parallel)))
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Admits a request if every limit allows it, counting it in the `requests=` windows and as
    /// in flight (until [`leave`](Self::leave)); a refusal counts nothing. The glue's one call
    /// before the request goes to Ollama.
    pub fn admit(&mut self, now_ms: u64) -> Result<RateInfo, Refusal> {
        let at_ms = self.advance(now_ms);
        let refusal = match (self.window_refusal(at_ms, now_ms), self.parallel_refusal()) {
            (Some(window), Some(parallel)) => Some(worse(window, parallel)),
            (window, parallel) => window.or(parallel),
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        self.charge_request(at_ms);
        self.in_flight = self.in_flight.saturating_add(1);
        Ok(self.rate_info(now_ms))
    }

    /// Admits a request if every window allows it (`requests=`: fewer than the limit counted;
    /// `tokens=`: fewer tokens than the limit counted from answers already finished) and counts
    /// it in the `requests=` windows. `parallel=` is [`enter`](Self::enter)'s.
    pub fn admit_request(&mut self, now_ms: u64) -> Result<RateInfo, Refusal> {
        let at_ms = self.advance(now_ms);
        if let Some(refusal) = self.window_refusal(at_ms, now_ms) {
            return Err(refusal);
        }
        self.charge_request(at_ms);
        Ok(self.rate_info(now_ms))
    }

    /// Counts a request as in flight, if `parallel=` allows one more.
    pub fn enter(&mut self) -> Result<(), Refusal> {
        match self.parallel_refusal() {
            Some(refusal) => Err(refusal),
            None => {
                self.in_flight = self.in_flight.saturating_add(1);
                Ok(())
            }
        }
    }

    /// A request admitted ends, in any way.
    pub fn leave(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Reserves an admitted request's estimated tokens until [`settle`](Self::settle): later
    /// requests are admitted only while the `tokens=` windows' counts plus every reservation
    /// stay under their limits. A key without `tokens=` reserves nothing; says what it reserved.
    pub fn reserve_tokens(&mut self, tokens: u64) -> u64 {
        if !self.windows().iter().any(|w| w.kind() == Some(Kind::Tokens)) {
            return 0;
        }
        let taken = u32::try_from(tokens).unwrap_or(u32::MAX).min(u32::MAX - self.reserved_tokens);
        self.reserved_tokens += taken;
        u64::from(taken)
    }

    /// Gives back a reservation and charges the tokens the answer was counted at (or its
    /// estimate); `tokens` 0 for a request that ended without reaching Ollama.
    pub fn settle(&mut self, now_ms: u64, reserved: u64, tokens: u64) {
        self.reserved_tokens = self.reserved_tokens.saturating_sub(u32::try_from(reserved).unwrap_or(u32::MAX));
        if tokens > 0 {
            self.charge_tokens(now_ms, tokens);
        }
    }

    /// Counts an answer's tokens, once known, at the moment it ends. The answer is not refused
    /// (it is over): a request may take the window past its limit by its own size, and the next
    /// one waits until enough of it is forgotten.
    pub fn charge_tokens(&mut self, now_ms: u64, tokens: u64) {
        let at_ms = self.advance(now_ms);
        for window in self.windows_mut().iter_mut().filter(|w| w.kind() == Some(Kind::Tokens)) {
            window.charge(at_ms, tokens);
        }
    }

    /// The values of the `x-ratelimit-*` headers now, for the kinds of windows the key has.
    pub fn rate_info(&self, now_ms: u64) -> RateInfo {
        let at_ms = now_ms.max(self.latest_ms);
        let least_remaining = |kind: Kind| {
            self.windows()
                .iter()
                .filter(|w| w.kind() == Some(kind))
                .map(|w| w.remaining(self.latest_ms, at_ms, now_ms))
                .min_by_key(|r| (r.remaining, std::cmp::Reverse(r.reset_ms)))
        };
        RateInfo { requests: least_remaining(Kind::Requests), tokens: least_remaining(Kind::Tokens) }
    }

    /// `x-ratelimit-*` headers and their values now; see [`RateInfo::headers`].
    pub fn headers(&self, now_ms: u64) -> Vec<(&'static str, String)> {
        self.rate_info(now_ms).headers()
    }

    /// Nothing counted and nothing in flight: the glue may forget the key, and the state file
    /// need not hold it.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        let at_ms = now_ms.max(self.latest_ms);
        self.in_flight == 0
            && self.reserved_tokens == 0
            && self.windows().iter().all(|w| w.used(self.latest_ms, at_ms) == 0)
    }

    fn window_count(&self) -> usize {
        usize::from(self.window_count).min(MAX_WINDOWS)
    }

    fn windows(&self) -> &[WindowCounter] {
        &self.windows[..self.window_count()]
    }

    fn windows_mut(&mut self) -> &mut [WindowCounter] {
        let count = self.window_count();
        &mut self.windows[..count]
    }

    /// Brings every window to `now_ms` and returns the moment the counts stand at: `now_ms`, or
    /// the latest moment when the clock seems to have gone back a little.
    fn advance(&mut self, now_ms: u64) -> u64 {
        let latest_ms = self.latest_ms;
        if now_ms < latest_ms && latest_ms - now_ms <= CLOCK_SKEW_TOLERANCE_MS {
            return latest_ms;
        }
        for window in self.windows_mut() {
            if now_ms >= latest_ms {
                window.roll(latest_ms, now_ms);
            } else {
                window.move_back(latest_ms, now_ms);
            }
        }
        self.latest_ms = now_ms;
        now_ms
    }

    /// The refusal of the window that makes the request wait longest, if any refuses. A
    /// `tokens=` window full only with reservations waits for them to settle: a second, then
    /// the client asks again.
    fn window_refusal(&self, at_ms: u64, now_ms: u64) -> Option<Refusal> {
        self.windows()
            .iter()
            .filter_map(|w| {
                let reserved_full = || {
                    let counted = w.used(self.latest_ms, at_ms).saturating_add(u64::from(self.reserved_tokens));
                    (w.kind() == Some(Kind::Tokens) && self.reserved_tokens > 0 && counted >= w.limit).then_some(1000)
                };
                let wait_ms = w.wait_ms(self.latest_ms, at_ms, now_ms).or_else(reserved_full)?;
                let limit = Limit::of_window(w.kind()?, w.window());
                Some(Refusal { limit, retry_after_seconds: retry_after_seconds(wait_ms) })
            })
            .reduce(worse)
    }

    fn parallel_refusal(&self) -> Option<Refusal> {
        (self.parallel > 0 && self.in_flight >= self.parallel)
            .then_some(Refusal { limit: Limit::Parallel(self.parallel), retry_after_seconds: 1 })
    }

    fn charge_request(&mut self, at_ms: u64) {
        for window in self.windows_mut().iter_mut().filter(|w| w.kind() == Some(Kind::Requests)) {
            window.charge(at_ms, 1);
        }
    }
}

/// Of two refusals, the one to report: the longer wait (the request needs every limit to allow
/// it), the first on a tie.
fn worse(first: Refusal, second: Refusal) -> Refusal {
    if second.retry_after_seconds > first.retry_after_seconds {
        second
    } else {
        first
    }
}

/// The state file's first bytes.
const STATE_MAGIC: [u8; 8] = *b"NGXOALIM";

/// The state file's format; a file in another is refused rather than guessed at. Version 1
/// (without the moments of the latest charges) is still read.
pub const STATE_VERSION: u32 = 2;

/// Magic, version, entry count.
const STATE_HEADER_BYTES: usize = 16;

/// FNV-1a 64 of everything before it, at the end.
const CHECKSUM_BYTES: usize = 8;

/// Why a state file was not read. Says what is wrong, never what the file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    Empty,
    NotAStateFile,
    /// The format version the file says it has.
    UnsupportedVersion(u32),
    Truncated,
    ChecksumMismatch,
    /// The checksum matched but the content breaks the format (a writer's bug, not damage).
    Invalid(&'static str),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Empty => f.write_str("the file is empty"),
            StateError::NotAStateFile => f.write_str("not a limits state file (wrong magic)"),
            StateError::UnsupportedVersion(version) => {
                write!(f, "format version {version}; this build reads only versions 1 and {STATE_VERSION}")
            }
            StateError::Truncated => f.write_str("the file is truncated"),
            StateError::ChecksumMismatch => f.write_str("checksum mismatch: the file is corrupt or incomplete"),
            StateError::Invalid(reason) => write!(f, "invalid content: {reason}"),
        }
    }
}

impl std::error::Error for StateError {}

/// FNV-1a, 64 bits: any one changed byte changes it (each step is a bijection of the state).
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// The state file: magic, version, entry count, the entries (key id, then its limits and counts,
/// little-endian), and a checksum. Requests in flight are not written: a restart ends them. An
/// id longer than [`MAX_KEY_ID_BYTES`] is left out.
pub fn encode_state<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a KeyLimits)>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(STATE_HEADER_BYTES + CHECKSUM_BYTES);
    bytes.extend_from_slice(&STATE_MAGIC);
    bytes.extend_from_slice(&STATE_VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes()); // the entry count, once known
    let mut count = 0u32;
    for (id, limits) in entries {
        if id.len() > MAX_KEY_ID_BYTES || count == u32::MAX {
            continue;
        }
        count += 1;
        bytes.extend_from_slice(&(id.len() as u16).to_le_bytes());
        bytes.extend_from_slice(id);
        bytes.extend_from_slice(&limits.latest_ms.to_le_bytes());
        bytes.extend_from_slice(&limits.parallel.to_le_bytes());
        bytes.push(limits.window_count() as u8);
        for window in limits.windows() {
            bytes.push(window.kind);
            bytes.extend_from_slice(&window.seconds.to_le_bytes());
            bytes.extend_from_slice(&window.limit.to_le_bytes());
            for slot in window.slots.iter().chain(&window.latest_charge) {
                bytes.extend_from_slice(&slot.to_le_bytes());
            }
        }
    }
    bytes[12..STATE_HEADER_BYTES].copy_from_slice(&count.to_le_bytes());
    let checksum = fnv1a_64(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    bytes
}

/// Reads what [`encode_state`] wrote, in file order. Requests in flight start at 0. The glue
/// then gives each key its current options ([`KeyLimits::reconfigure`]) and drops the ids the
/// files no longer have.
pub fn decode_state(bytes: &[u8]) -> Result<Vec<(Vec<u8>, KeyLimits)>, StateError> {
    if bytes.is_empty() {
        return Err(StateError::Empty);
    }
    let magic_length = bytes.len().min(STATE_MAGIC.len());
    if bytes[..magic_length] != STATE_MAGIC[..magic_length] {
        return Err(StateError::NotAStateFile);
    }
    if bytes.len() < STATE_HEADER_BYTES + CHECKSUM_BYTES {
        return Err(StateError::Truncated);
    }
    let mut reader = Reader { bytes: &bytes[STATE_MAGIC.len()..bytes.len() - CHECKSUM_BYTES] };
    let version = reader.u32().ok_or(StateError::Truncated)?;
    if version != STATE_VERSION && version != 1 {
        return Err(StateError::UnsupportedVersion(version));
    }
    let (content, stored) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    if stored != fnv1a_64(content).to_le_bytes() {
        return Err(StateError::ChecksumMismatch);
    }
    let count = reader.u32().ok_or(StateError::Truncated)?;
    let smallest_entry = 2 + 8 + 4 + 1;
    let mut entries = Vec::with_capacity((count as usize).min(reader.bytes.len() / smallest_entry));
    for _ in 0..count {
        entries.push(read_entry(&mut reader, version)?);
    }
    if !reader.bytes.is_empty() {
        return Err(StateError::Invalid("bytes after the last entry"));
    }
    Ok(entries)
}

fn read_entry(reader: &mut Reader<'_>, version: u32) -> Result<(Vec<u8>, KeyLimits), StateError> {
    const CUT_SHORT: StateError = StateError::Invalid("fewer entries than the count says");
    let id_length = usize::from(reader.u16().ok_or(CUT_SHORT)?);
    if id_length > MAX_KEY_ID_BYTES {
        return Err(StateError::Invalid("a key id longer than 256 bytes"));
    }
    let id = reader.take(id_length).ok_or(CUT_SHORT)?.to_vec();
    let mut limits = KeyLimits::EMPTY;
    limits.latest_ms = reader.u64().ok_or(CUT_SHORT)?;
    limits.parallel = reader.u32().ok_or(CUT_SHORT)?;
    let window_count = reader.take(1).ok_or(CUT_SHORT)?[0];
    if usize::from(window_count) > MAX_WINDOWS {
        return Err(StateError::Invalid("more windows than a key may have"));
    }
    limits.window_count = window_count;
    for index in 0..usize::from(window_count) {
        let kind = reader.take(1).ok_or(CUT_SHORT)?[0];
        let seconds = reader.u32().ok_or(CUT_SHORT)?;
        let limit = reader.u64().ok_or(CUT_SHORT)?;
        let mut slots = [0u32; SLOTS];
        for slot in &mut slots {
            *slot = reader.u32().ok_or(CUT_SHORT)?;
        }
        // Version 1 has no moments: each sub-interval is kept to its end, as it then was.
        let mut latest_charge = [u32::MAX; SLOTS];
        if version >= 2 {
            for charge in &mut latest_charge {
                *charge = reader.u32().ok_or(CUT_SHORT)?;
            }
        }
        let window = WindowCounter { limit, seconds, kind, _padding: [0; 3], slots, latest_charge };
        let valid = Kind::from_code(kind).is_some()
            && limit > 0
            && (1..=MAX_WINDOW_SECONDS).contains(&u64::from(seconds))
            && !limits.windows[..index].iter().any(|earlier| earlier.is_same_period(&window));
        if !valid {
            return Err(StateError::Invalid("a window this build cannot count"));
        }
        limits.windows[index] = window;
    }
    Ok((id, limits))
}

/// Little-endian fields from the front of a byte string.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if count > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14T22:24:00Z: a whole number of sub-intervals of every period from a second to a day.
    const T0: u64 = 1_700_000_640_000;

    fn options(requests: &[(u64, u64)], tokens: &[(u64, u64)], parallel: Option<u32>) -> EntryOptions {
        let windows = |list: &[(u64, u64)]| list.iter().map(|&(limit, seconds)| Window { limit, seconds }).collect();
        EntryOptions { requests: windows(requests), tokens: windows(tokens), parallel, ..EntryOptions::default() }
    }

    fn limits(requests: &[(u64, u64)], tokens: &[(u64, u64)], parallel: Option<u32>) -> KeyLimits {
        KeyLimits::new(&options(requests, tokens, parallel), T0).unwrap_or_else(|e| panic!("{e}"))
    }

    /// xorshift64*: a reproducible stream for the randomized tests.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(n, _)| *n == name).map(|(_, value)| value.as_str())
    }

    #[test]
    fn a_key_fits_in_1_kb_of_plain_data() {
        fn plain<T: Copy + Send + Sync + 'static>() {}
        plain::<KeyLimits>();
        assert_eq!(KEY_LIMITS_BYTES, 888);
        assert_eq!(std::mem::size_of::<WindowCounter>(), 144);
        assert_eq!(std::mem::align_of::<KeyLimits>(), 8);
        assert_eq!(100_000 * KEY_LIMITS_BYTES, 88_800_000, "the counters of 100,000 keys: about 85 MiB");
        assert_eq!(KeyLimits::default(), KeyLimits::EMPTY);
    }

    #[test]
    fn limits_beyond_what_can_be_counted_are_errors() {
        let six = options(&[(1, 1), (2, 60), (3, 3600)], &[(4, 60), (5, 3600), (6, 86_400)], Some(2));
        assert_eq!(KeyLimits::check(&six), Ok(()));
        let seven = options(&[(1, 1), (2, 60), (3, 3600), (4, 86_400)], &[(4, 60), (5, 3600), (6, 86_400)], None);
        let error = KeyLimits::check(&seven).unwrap_err();
        assert_eq!(error, ConfigError::TooManyWindows(7));
        assert_eq!(
            error.to_string(),
            "7 limit windows, more than the 6 a key may have (tokens= and requests= together)"
        );
        assert_eq!(
            KeyLimits::check(&options(&[], &[(1, 1); 6], None)),
            Err(ConfigError::Unsupported(Limit::Tokens(Window { limit: 1, seconds: 1 })))
        );
        for (bad, named) in [
            (options(&[(0, 60)], &[], None), "requests 0/1m"),
            (options(&[(1, 0)], &[], None), "requests 1/0d"),
            (options(&[], &[(1, MAX_WINDOW_SECONDS + 1)], None), "tokens 1/31622401s"),
            (options(&[], &[(1, u64::MAX)], None), "tokens 1/18446744073709551615s"),
            (options(&[(1, 60), (2, 60)], &[], None), "requests 2/1m"),
            (options(&[], &[], Some(0)), "parallel 0"),
        ] {
            let error = KeyLimits::check(&bad).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "limit \"{named}\" cannot be counted (it needs at least 1 over 1 second to 366 days, one per period)"
                )
            );
        }
        // One period for each kind is two windows, not a repetition.
        let both = limits(&[(60, 60)], &[(20_000, 60)], None);
        let named: Vec<String> = both.limits().map(|l| l.to_string()).collect();
        assert_eq!(named, ["requests 60/1m", "tokens 20000/1m"]);
        assert!(KeyLimits::check(&options(&[(u64::MAX, MAX_WINDOW_SECONDS)], &[], Some(u32::MAX))).is_ok());
        assert!(KeyLimits::check(&EntryOptions::default()).is_ok());
    }

    #[test]
    fn limits_are_named_as_in_the_keys_file() {
        let key = limits(&[(60, 60)], &[(20_000, 60), (500_000, 86_400)], Some(2));
        let named: Vec<String> = key.limits().map(|l| l.to_string()).collect();
        assert_eq!(named, ["requests 60/1m", "tokens 20000/1m", "tokens 500000/1d", "parallel 2"]);
        let refusal = Refusal { limit: Limit::Requests(Window { limit: 60, seconds: 60 }), retry_after_seconds: 3 };
        assert_eq!(refusal.to_string(), "requests 60/1m");
    }

    #[test]
    fn requests_are_admitted_up_to_the_limit_then_refused_until_the_first_is_forgotten() {
        let mut key = limits(&[(3, 60)], &[], None);
        for remaining in [2, 1, 0] {
            let info = key.admit_request(T0).unwrap();
            assert_eq!(info.requests.map(|r| r.remaining), Some(remaining));
            assert_eq!(info.tokens, None);
        }
        let refusal = key.admit_request(T0 + 1000).unwrap_err();
        assert_eq!(refusal.limit, Limit::Requests(Window { limit: 3, seconds: 60 }));
        // The three sit in the sub-interval [T0, T0 + 4 s), whose latest charge was at T0: it is
        // counted until a whole period has passed since then, at T0 + 60 s.
        assert_eq!(refusal.retry_after_seconds, 59);
        assert!(key.admit_request(T0 + 59_999).is_err());
        assert_eq!(key.admit_request(T0 + 60_000).map(|info| info.requests.map(|r| r.remaining)), Ok(Some(2)));
        // A refusal counts nothing.
        let mut key = limits(&[(1, 1)], &[], None);
        assert!(key.admit_request(T0 + 10).is_ok());
        for offset in 10..1010 {
            assert!(key.admit_request(T0 + offset).is_err(), "{offset}");
        }
        assert!(key.admit_request(T0 + 1010).is_ok());
        // Earlier charges of a sub-interval wait for its latest: counted from above, never early.
        let mut key = limits(&[(2, 60)], &[], None);
        key.admit_request(T0).unwrap();
        key.admit_request(T0 + 3_000).unwrap();
        assert_eq!(key.admit_request(T0 + 3_000).unwrap_err().retry_after_seconds, 60);
        assert!(key.admit_request(T0 + 62_999).is_err());
        assert!(key.admit_request(T0 + 63_000).is_ok());
    }

    #[test]
    fn a_burst_at_a_boundary_is_not_a_second_limit() {
        // What a fixed window gets wrong: the limit just before a boundary and again just after.
        let mut key = limits(&[(10, 60)], &[], None);
        let before_boundary = T0 + 59_999;
        for _ in 0..10 {
            assert!(key.admit_request(before_boundary).is_ok());
        }
        for after in [60_000, 60_001, 61_000, 100_000, 119_998] {
            assert!(key.admit_request(T0 + after).is_err(), "{after}");
        }
        assert!(key.admit_request(T0 + 119_998).is_err());
        assert!(key.admit_request(T0 + 119_999).is_ok(), "a whole period after the ten");
    }

    #[test]
    fn no_window_of_any_placement_admits_more_than_its_limit() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let periods = [1, 2, 3, 7, 10, 60, 90];
        for trial in 0..300 {
            let mut requests: Vec<(u64, u64)> = Vec::new();
            for _ in 0..1 + random.below(3) {
                let seconds = periods[random.below(periods.len() as u64) as usize];
                if requests.iter().all(|&(_, s)| s != seconds) {
                    requests.push((1 + random.below(8), seconds));
                }
            }
            let start = T0 + random.below(1 << 40);
            let mut key = KeyLimits::new(&options(&requests, &[], None), start).unwrap();
            let mut admitted: Vec<u64> = Vec::new();
            let mut now = start;
            for _ in 0..2000 {
                now += match random.below(4) {
                    0 => 0,
                    1 => random.below(50),
                    2 => random.below(2000),
                    _ => random.below(150_000),
                };
                match key.admit_request(now) {
                    Ok(info) => {
                        admitted.push(now);
                        let least = requests
                            .iter()
                            .map(|&(limit, seconds)| {
                                let inside = admitted.len() - admitted.partition_point(|&t| t + seconds * 1000 <= now);
                                assert!(
                                    inside as u64 <= limit,
                                    "trial {trial}: {inside} in {seconds} s, limit {limit}"
                                );
                                limit - inside as u64
                            })
                            .min();
                        assert!(info.requests.is_some_and(|r| r.remaining <= least.unwrap()), "trial {trial}");
                    }
                    Err(refusal) => {
                        let Limit::Requests(window) = refusal.limit else { panic!("{refusal}") };
                        let period = window.seconds * 1000;
                        // Everything counted lies within one sub-interval before the period.
                        let counted = admitted.len()
                            - admitted.partition_point(|&t| {
                                t * WIDTHS_PER_PERIOD + (WIDTHS_PER_PERIOD + 1) * period <= now * WIDTHS_PER_PERIOD
                            });
                        assert!(
                            counted as u64 >= window.limit,
                            "trial {trial}: refused early, {counted} counted in {window}"
                        );
                        // Retry-After is exact to the second.
                        let retry_ms = refusal.retry_after_seconds * 1000;
                        assert!(key.clone().admit_request(now + retry_ms).is_ok(), "trial {trial}");
                        assert!(key.clone().admit_request(now + retry_ms - 1000).is_err() || retry_ms == 1000);
                    }
                }
            }
            // The property itself: every span of a period, wherever it starts, holds at most the limit.
            for &(limit, seconds) in &requests {
                for (first, &t) in admitted.iter().enumerate() {
                    let inside = admitted[first..].partition_point(|&later| later < t + seconds * 1000);
                    assert!(inside as u64 <= limit, "trial {trial}: {inside} from {t} over {seconds} s, limit {limit}");
                }
            }
        }
    }

    #[test]
    fn reservations_let_a_key_overshoot_by_one_request_at_most() {
        let mut key = limits(&[], &[(100, 60)], None);
        // Eight requests of 5000 tokens at once: the first is admitted, the rest wait for it.
        let mut admitted = 0;
        for _ in 0..8 {
            if key.admit(T0).is_ok() {
                assert_eq!(key.reserve_tokens(5000), 5000);
                admitted += 1;
            }
        }
        assert_eq!(admitted, 1);
        let refusal = key.admit(T0).unwrap_err();
        assert_eq!(
            (refusal.limit, refusal.retry_after_seconds),
            (Limit::Tokens(Window { limit: 100, seconds: 60 }), 1)
        );
        assert!(!key.is_idle(T0));
        // Settled at its real size: the window is full by the counts now.
        key.settle(T0 + 1000, 5000, 30);
        key.leave();
        assert!(key.admit(T0 + 1000).is_ok(), "30 of 100 used, nothing reserved");
        key.reserve_tokens(50);
        assert!(key.admit(T0 + 1000).is_ok(), "30 used + 50 reserved < 100");
        key.reserve_tokens(50);
        assert!(key.admit(T0 + 1000).is_err(), "30 + 100 reserved");
        key.settle(T0 + 2000, 50, 0);
        key.settle(T0 + 2000, 50, 0);
        key.leave();
        key.leave();
        assert!(key.admit(T0 + 2000).is_ok());
        // A reservation survives a reload, and a key without tokens= reserves nothing.
        key.reserve_tokens(500);
        key.reconfigure(&options(&[], &[(100, 60)], None), T0 + 2000).unwrap();
        assert!(key.admit(T0 + 2000).is_err());
        let mut requests_only = limits(&[(10, 60)], &[], None);
        assert_eq!(requests_only.reserve_tokens(5000), 0);
        assert!(requests_only.admit(T0).is_ok());
    }

    #[test]
    fn tokens_refuse_once_the_finished_answers_reach_the_limit() {
        let mut key = limits(&[], &[(1000, 60)], None);
        let info = key.admit_request(T0).unwrap();
        assert_eq!(info.tokens, Some(Remaining { limit: 1000, remaining: 1000, reset_ms: 0 }));
        assert_eq!(info.requests, None);
        key.charge_tokens(T0 + 5000, 400);
        let info = key.admit_request(T0 + 5000).unwrap();
        assert_eq!(info.tokens.map(|t| t.remaining), Some(600));
        // An answer may go past the limit by its own size: it is over when its size is known.
        key.charge_tokens(T0 + 10_000, 5000);
        assert_eq!(key.rate_info(T0 + 10_000).tokens.map(|t| t.remaining), Some(0));
        let refusal = key.admit_request(T0 + 10_000).unwrap_err();
        assert_eq!(refusal.limit, Limit::Tokens(Window { limit: 1000, seconds: 60 }));
        assert_eq!(refusal.to_string(), "tokens 1000/1m");
        // The 5000 were charged at T0 + 10 s, forgotten at T0 + 70 s.
        assert_eq!(refusal.retry_after_seconds, 60);
        assert!(key.admit_request(T0 + 69_999).is_err());
        assert_eq!(key.admit_request(T0 + 70_000).unwrap().tokens.map(|t| t.remaining), Some(1000));
        // Just below the limit admits; one token more than the limit is spent, none is lost.
        let mut key = limits(&[], &[(10, 1)], None);
        key.charge_tokens(T0, 9);
        assert!(key.admit_request(T0).is_ok());
        key.charge_tokens(T0, 1);
        assert!(key.admit_request(T0).is_err());
        key.charge_tokens(T0, u64::MAX);
        assert_eq!(key.admit_request(T0 + 500).unwrap_err().retry_after_seconds, 1);
        assert!(key.admit_request(T0 + 1067).is_ok());
    }

    #[test]
    fn tokens_go_past_a_limit_by_no_more_than_one_answer() {
        let mut random = Random(7);
        for trial in 0..200 {
            let seconds = [1, 5, 60][random.below(3) as usize];
            let limit = 1 + random.below(200);
            let start = T0 + random.below(1 << 40);
            let mut key = KeyLimits::new(&options(&[], &[(limit, seconds)], None), start).unwrap();
            let mut charged: Vec<(u64, u64)> = Vec::new();
            let mut now = start;
            for _ in 0..1000 {
                now += random.below(seconds * 300);
                if key.admit_request(now).is_ok() {
                    let answer = random.below(limit / 2 + 2);
                    key.charge_tokens(now, answer);
                    charged.push((now, answer));
                    let first = charged.partition_point(|&(t, _)| t + seconds * 1000 <= now);
                    let inside: u64 = charged[first..].iter().map(|&(_, tokens)| tokens).sum();
                    assert!(inside < limit + answer, "trial {trial}: {inside} tokens, limit {limit}, last {answer}");
                }
            }
        }
    }

    #[test]
    fn a_large_limit_counts_full_sub_intervals_as_unknown() {
        // Counts stop at u32::MAX per sub-interval; past it the window must not admit.
        let mut key = limits(&[], &[(u64::MAX, 60)], None);
        key.charge_tokens(T0, u64::from(u32::MAX) - 1);
        assert!(key.admit_request(T0).is_ok());
        key.charge_tokens(T0, 1);
        let refusal = key.admit_request(T0 + 1).unwrap_err();
        assert_eq!(refusal.retry_after_seconds, 60);
        assert_eq!(key.rate_info(T0).tokens.map(|t| t.remaining), Some(0));
        assert!(key.admit_request(T0 + 59_999).is_err());
        assert!(key.admit_request(T0 + 60_000).is_ok());
        // Below u32::MAX per sub-interval, a large limit is counted exactly.
        let mut key = limits(&[], &[(10_000_000_000, 60)], None);
        for second in 0..3 {
            key.charge_tokens(T0 + second * 4000, 3_000_000_000);
        }
        assert_eq!(key.rate_info(T0 + 8000).tokens.map(|t| t.remaining), Some(1_000_000_000));
        assert!(key.admit_request(T0 + 8000).is_ok());
    }

    #[test]
    fn the_worst_window_is_named_and_sets_retry_after() {
        let mut key = limits(&[(2, 1), (3, 3600)], &[], None);
        assert!(key.admit_request(T0).is_ok());
        assert!(key.admit_request(T0).is_ok());
        let per_second = key.admit_request(T0 + 10).unwrap_err();
        assert_eq!((per_second.to_string().as_str(), per_second.retry_after_seconds), ("requests 2/1s", 1));
        assert!(key.admit_request(T0 + 1000).is_ok());
        // Now both are full: the hour makes the request wait longer.
        let refusal = key.admit_request(T0 + 2000).unwrap_err();
        assert_eq!(refusal.to_string(), "requests 3/1h");
        assert_eq!(refusal.retry_after_seconds, 3600 - 1);
    }

    #[test]
    fn parallel_counts_from_admission_until_the_request_ends() {
        let mut key = limits(&[], &[], Some(2));
        assert_eq!(key.enter(), Ok(()));
        assert_eq!(key.enter(), Ok(()));
        let refusal = key.enter().unwrap_err();
        assert_eq!((refusal.to_string().as_str(), refusal.retry_after_seconds), ("parallel 2", 1));
        assert_eq!(key.in_flight(), 2);
        key.leave();
        assert_eq!(key.enter(), Ok(()));
        for _ in 0..5 {
            key.leave();
        }
        assert_eq!(key.in_flight(), 0, "never below zero");
        assert_eq!(key.admit(T0), Ok(RateInfo::default()));
        // Without parallel= the count still runs, for a reload that adds one.
        let mut key = limits(&[(100, 60)], &[], None);
        for _ in 0..3 {
            assert!(key.admit(T0).is_ok());
        }
        assert_eq!(key.in_flight(), 3);
        key.reconfigure(&options(&[(100, 60)], &[], Some(3)), T0).unwrap();
        assert_eq!(key.admit(T0).unwrap_err().limit, Limit::Parallel(3));
        key.in_flight = u32::MAX;
        key.reconfigure(&options(&[], &[], None), T0).unwrap();
        assert_eq!(key.enter(), Ok(()));
        assert_eq!(key.in_flight(), u32::MAX);
    }

    #[test]
    fn admit_counts_nothing_when_any_limit_refuses() {
        let mut key = limits(&[(5, 60)], &[(100, 60)], Some(1));
        let info = key.admit(T0).unwrap();
        assert_eq!(info.requests.map(|r| r.remaining), Some(4));
        let before = key;
        let refusal = key.admit(T0 + 1).unwrap_err();
        assert_eq!(refusal.limit, Limit::Parallel(1));
        assert_eq!(key.rate_info(T0 + 1), before.rate_info(T0 + 1));
        assert_eq!(key.in_flight(), 1);
        key.leave();
        key.charge_tokens(T0 + 2, 100);
        // Tokens and parallel both refuse: the longer wait is named.
        assert!(key.enter().is_ok());
        let refusal = key.admit(T0 + 3).unwrap_err();
        assert_eq!(refusal.limit, Limit::Tokens(Window { limit: 100, seconds: 60 }));
        assert_eq!(key.in_flight(), 1);
        assert_eq!(key.rate_info(T0 + 3).requests.map(|r| r.remaining), Some(4));
        key.leave();
        assert_eq!(key.admit(T0 + 64_000).map(|info| info.requests.map(|r| r.remaining)), Ok(Some(5 - 1)));
    }

    #[test]
    fn headers_describe_the_window_with_the_least_remaining() {
        let mut key = limits(&[(60, 60), (1000, 86_400)], &[(20_000, 60), (30_000, 3600)], None);
        let info = key.admit_request(T0 + 1500).unwrap();
        let headers = info.headers();
        let names: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens"
            ]
        );
        assert_eq!(header(&headers, "x-ratelimit-limit-requests"), Some("60"));
        assert_eq!(header(&headers, "x-ratelimit-remaining-requests"), Some("59"));
        // Forgotten when a minute has passed since the latest request, just now.
        assert_eq!(header(&headers, "x-ratelimit-reset-requests"), Some("1m0s"));
        assert_eq!(header(&headers, "x-ratelimit-limit-tokens"), Some("20000"));
        assert_eq!(header(&headers, "x-ratelimit-remaining-tokens"), Some("20000"));
        assert_eq!(header(&headers, "x-ratelimit-reset-tokens"), Some("0s"));
        key.charge_tokens(T0 + 2000, 15_000);
        let headers = key.headers(T0 + 2000);
        assert_eq!(header(&headers, "x-ratelimit-remaining-tokens"), Some("5000"));
        key.charge_tokens(T0 + 600_000, 12_000);
        let headers = key.headers(T0 + 600_000);
        assert_eq!(header(&headers, "x-ratelimit-limit-tokens"), Some("30000"));
        assert_eq!(header(&headers, "x-ratelimit-remaining-tokens"), Some("3000"));
        assert_eq!(header(&headers, "x-ratelimit-reset-tokens"), Some("1h0m0s"));
        // Only the kinds the key has.
        let key = limits(&[], &[(5, 1)], Some(1));
        let names: Vec<&str> = key.headers(T0).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"]);
        assert!(limits(&[], &[], Some(1)).headers(T0).is_empty());
        // Sub-second resets.
        let mut key = limits(&[(5, 1)], &[], None);
        key.admit_request(T0).unwrap();
        assert_eq!(header(&key.headers(T0 + 933), "x-ratelimit-reset-requests"), Some("67ms"));
        assert_eq!(header(&key.headers(T0 + 999), "x-ratelimit-reset-requests"), Some("1ms"));
        assert_eq!(header(&key.headers(T0 + 1000), "x-ratelimit-reset-requests"), Some("0s"));
        assert_eq!(header(&key.headers(T0 + 1000), "x-ratelimit-remaining-requests"), Some("5"));
    }

    #[test]
    fn resets_are_written_as_openai_writes_them() {
        for (milliseconds, text) in [
            (0, "0s"),
            (1, "1ms"),
            (20, "20ms"),
            (999, "999ms"),
            (1000, "1s"),
            (1001, "2s"),
            (8640, "9s"),
            (59_000, "59s"),
            (60_000, "1m0s"),
            (360_000, "6m0s"),
            (3_600_000, "1h0m0s"),
            (3_723_000, "1h2m3s"),
            (86_400_000, "24h0m0s"),
            (u64::MAX, "5124095576030h25m52s"),
        ] {
            assert_eq!(format_reset(milliseconds), text, "{milliseconds}");
        }
    }

    #[test]
    fn a_clock_that_goes_back_a_little_frees_nothing() {
        let mut key = limits(&[(1, 60)], &[], None);
        assert!(key.admit_request(T0 + 30_000).is_ok());
        // Another worker's cached time, a little behind.
        let refusal = key.admit_request(T0 + 29_000).unwrap_err();
        assert_eq!(refusal.retry_after_seconds, 90 - 29);
        assert!(key.admit_request(T0 - 30_000).is_err(), "a minute back still holds");
        assert!(key.admit_request(T0 + 90_000).is_ok());
    }

    #[test]
    fn a_clock_set_back_moves_the_counts_with_it() {
        let mut key = limits(&[(2, 3600)], &[], None);
        assert!(key.admit_request(T0).is_ok());
        assert!(key.admit_request(T0 + 600_000).is_ok());
        // Set back a day: the two keep their ages (0 and 10 minutes) and the key is not locked.
        let back = T0 + 600_000 - 86_400_000;
        let refusal = key.admit_request(back).unwrap_err();
        assert_eq!(refusal.retry_after_seconds, 3000);
        assert!(key.admit_request(back + 2_999_999).is_err());
        assert!(key.admit_request(back + 3_000_000).is_ok());
        // Set back to near the epoch: counts older than it can be are kept at its start.
        let mut key = limits(&[(3, 60)], &[], None);
        for offset in [0, 20_000, 40_000] {
            assert!(key.admit_request(T0 + offset).is_ok());
        }
        assert!(key.admit_request(5000).is_err());
        assert!(key.admit_request(64_000).is_ok());
    }

    #[test]
    fn reconfiguring_keeps_the_counts_of_windows_that_stay() {
        let mut key = limits(&[(10, 60), (100, 3600)], &[(1000, 60)], Some(10));
        for _ in 0..5 {
            key.admit(T0).unwrap();
        }
        key.charge_tokens(T0, 700);
        // Same periods, other limits; a new day window; the hour dropped; tokens and requests
        // over the same minute stay apart.
        let changed = options(&[(6, 60), (50, 86_400)], &[(800, 60)], Some(10));
        key.reconfigure(&changed, T0 + 1000).unwrap();
        let named: Vec<String> = key.limits().map(|l| l.to_string()).collect();
        assert_eq!(named, ["requests 6/1m", "requests 50/1d", "tokens 800/1m", "parallel 10"]);
        let info = key.admit(T0 + 1000).unwrap();
        assert_eq!(info.requests, Some(Remaining { limit: 6, remaining: 0, reset_ms: 60_000 }));
        assert_eq!(info.tokens.map(|t| t.remaining), Some(100));
        assert_eq!(key.in_flight(), 6);
        assert_eq!(key.admit(T0 + 1000).unwrap_err().to_string(), "requests 6/1m");
        // The day window started empty at the change: it holds only what came after.
        let day = key.windows().iter().find(|w| w.seconds == 86_400).unwrap();
        assert_eq!(day.used(key.latest_ms, T0 + 1000), 1);
        // A window that goes and comes back starts empty.
        key.reconfigure(&options(&[(50, 86_400)], &[], None), T0 + 2000).unwrap();
        key.reconfigure(&changed, T0 + 2000).unwrap();
        assert_eq!(key.rate_info(T0 + 2000).tokens.map(|t| t.remaining), Some(800));
        // Options that cannot be counted change nothing.
        let before = key;
        let seven = options(&[(1, 1), (2, 2), (3, 3), (4, 4)], &[(1, 1), (2, 2), (3, 3)], None);
        assert_eq!(key.reconfigure(&seven, T0 + 3000), Err(ConfigError::TooManyWindows(7)));
        assert_eq!(key, before);
        // Every limit removed: nothing counted, the in-flight count kept.
        key.reconfigure(&EntryOptions::default(), T0 + 3000).unwrap();
        assert_eq!(key.limits().count(), 0);
        assert_eq!(key.in_flight(), 6);
        assert_eq!(key.admit(T0 + 3000), Ok(RateInfo::default()));
    }

    #[test]
    fn idle_keys_can_be_forgotten() {
        let mut key = limits(&[(1, 60)], &[], Some(1));
        assert!(key.is_idle(T0));
        key.admit(T0).unwrap();
        assert!(!key.is_idle(T0 + 70_000));
        key.leave();
        assert!(!key.is_idle(T0 + 59_999));
        assert!(key.is_idle(T0 + 60_000));
    }

    #[test]
    fn any_state_and_any_time_never_panic() {
        let mut random = Random(0xdead_beef);
        let moments = [0, 1, 999, 1000, T0, u64::MAX / 2, u64::MAX - 1, u64::MAX];
        for _ in 0..3000 {
            let mut key = KeyLimits::EMPTY;
            key.latest_ms = if random.below(2) == 0 { moments[random.below(8) as usize] } else { random.next() };
            key.parallel = random.below(4) as u32;
            key.in_flight = [0, 1, u32::MAX][random.below(3) as usize];
            key.reserved_tokens = [0, 1, u32::MAX, random.next() as u32][random.below(4) as usize];
            key.window_count = random.below(256) as u8;
            for window in &mut key.windows {
                window.kind = random.below(4) as u8;
                window.seconds = [0, 1, 60, u32::MAX, random.next() as u32][random.below(5) as usize];
                window.limit = [0, 1, u64::MAX, random.next()][random.below(4) as usize];
                for slot in &mut window.slots {
                    *slot = [0, 1, FULL_SLOT, random.next() as u32][random.below(4) as usize];
                }
            }
            let now = if random.below(2) == 0 { moments[random.below(8) as usize] } else { random.next() };
            let _ = key.headers(now);
            let _ = key.is_idle(now);
            let _ = key.limits().count();
            if let Err(refusal) = key.admit(now) {
                assert!(refusal.retry_after_seconds >= 1);
            }
            let _ = key.admit_request(now.wrapping_add(1));
            let reserved = key.reserve_tokens(random.next());
            key.settle(now, reserved.wrapping_add(random.below(3)), random.next());
            key.charge_tokens(now, random.next());
            let _ = key.enter();
            key.leave();
            let _ = key.reconfigure(&options(&[(1, 60)], &[(5, 1)], Some(1)), now);
            let decoded = decode_state(&encode_state([(&b"k"[..], &key)]));
            assert!(decoded.is_ok() || decoded == Err(StateError::Invalid("a window this build cannot count")));
        }
    }

    fn sample_state() -> Vec<(Vec<u8>, KeyLimits)> {
        let mut alice = limits(&[(60, 60)], &[(20_000, 60), (500_000, 86_400)], Some(2));
        alice.admit(T0).unwrap();
        alice.charge_tokens(T0 + 3000, 1234);
        let mut ci = limits(&[(1, 1), (2, 2), (3, 3)], &[(4, 4), (5, 5), (6, MAX_WINDOW_SECONDS)], None);
        ci.admit_request(T0 + 10).unwrap();
        ci.charge_tokens(T0 + 20, u64::MAX);
        let fingerprint = vec![0xab; 32];
        vec![
            (b"alice".to_vec(), alice),
            (fingerprint, ci),
            (Vec::new(), KeyLimits::EMPTY),
            (vec![b'x'; MAX_KEY_ID_BYTES], limits(&[], &[], Some(u32::MAX))),
        ]
    }

    fn encode(entries: &[(Vec<u8>, KeyLimits)]) -> Vec<u8> {
        encode_state(entries.iter().map(|(id, limits)| (id.as_slice(), limits)))
    }

    #[test]
    fn the_state_file_reads_back_what_was_written() {
        let entries = sample_state();
        let bytes = encode(&entries);
        let decoded = decode_state(&bytes).unwrap();
        assert_eq!(decoded.len(), entries.len());
        for ((id, limits), (read_id, read_limits)) in entries.iter().zip(&decoded) {
            assert_eq!(read_id, id);
            // Requests in flight end with the process that ran them.
            assert_eq!(*read_limits, KeyLimits { in_flight: 0, ..*limits });
        }
        assert_eq!(decoded[0].1.rate_info(T0 + 3000), entries[0].1.rate_info(T0 + 3000));
        assert_eq!(entries[0].1.in_flight(), 1);
        assert_eq!(decode_state(&encode(&[])), Ok(Vec::new()));
        assert_eq!(encode(&decoded), bytes);
        // Ids the file cannot hold are left out, not cut.
        let too_long = vec![b'y'; MAX_KEY_ID_BYTES + 1];
        let huge = vec![b'z'; 70_000];
        let key = KeyLimits::EMPTY;
        let bytes = encode_state([(&too_long[..], &key), (&b"kept"[..], &key), (&huge[..], &key)]);
        assert_eq!(decode_state(&bytes), Ok(vec![(b"kept".to_vec(), key)]));
    }

    #[test]
    fn every_truncation_and_every_changed_byte_is_refused() {
        let bytes = encode(&sample_state());
        for length in 0..bytes.len() {
            assert!(decode_state(&bytes[..length]).is_err(), "{length}");
        }
        assert_eq!(decode_state(&bytes[..bytes.len() - 1]), Err(StateError::ChecksumMismatch));
        assert_eq!(decode_state(&bytes[..20]), Err(StateError::Truncated));
        assert_eq!(decode_state(&bytes[..5]), Err(StateError::Truncated));
        for position in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[position] ^= flip;
                assert!(decode_state(&changed).is_err(), "{position} ^ {flip:#x}");
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_state(&longer).is_err());
    }

    /// A file with a valid checksum over content the format does not allow.
    fn sealed(mut content: Vec<u8>) -> Vec<u8> {
        let checksum = fnv1a_64(&content);
        content.extend_from_slice(&checksum.to_le_bytes());
        content
    }

    #[test]
    fn a_reconfigured_window_forgets_its_counts_no_sooner() {
        let mut key = limits(&[(1, 60)], &[], None);
        key.admit_request(T0 + 3_000).unwrap();
        key.reconfigure(&options(&[(1, 60)], &[(500, 60)], None), T0 + 3_500).unwrap();
        assert!(
            key.admit_request(T0 + 62_999).is_err(),
            "a minute after the request, not after its sub-interval began"
        );
        assert!(key.admit_request(T0 + 63_000).is_ok());
    }

    #[test]
    fn a_version_1_file_is_read_with_each_sub_interval_kept_to_its_end() {
        let mut key = limits(&[(2, 60)], &[], None);
        key.admit_request(T0).unwrap();
        key.admit_request(T0 + 10).unwrap();
        // Version 1 wrote the slots only.
        let mut v1 = Vec::new();
        v1.extend_from_slice(&STATE_MAGIC);
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&3u16.to_le_bytes());
        v1.extend_from_slice(b"key");
        v1.extend_from_slice(&key.latest_ms.to_le_bytes());
        v1.extend_from_slice(&key.parallel.to_le_bytes());
        v1.push(1);
        let window = key.windows[0];
        v1.push(window.kind);
        v1.extend_from_slice(&window.seconds.to_le_bytes());
        v1.extend_from_slice(&window.limit.to_le_bytes());
        for slot in window.slots {
            v1.extend_from_slice(&slot.to_le_bytes());
        }
        let read = decode_state(&sealed(v1)).unwrap();
        let mut restored = read[0].1;
        let sub_interval_end = window.start_ms(window.sub_interval_at(T0) + 1);
        let forgotten = sub_interval_end + 60_000;
        assert!(restored.admit_request(forgotten - 1).is_err());
        assert!(restored.admit_request(forgotten).is_ok());
    }

    #[test]
    fn retry_after_and_reset_never_exceed_the_window() {
        let mut random = Random(0x5eed_1234_abcd_ef01);
        for seconds in [1u64, 2, 3, 7, 30, 60, 3600] {
            for _ in 0..200 {
                let limit = 1 + random.below(4);
                let mut key = limits(&[(limit, seconds)], &[], None);
                let mut now = T0 + random.below(100_000);
                for _ in 0..limit {
                    key.admit_request(now).unwrap();
                    now += random.below((seconds * 1000 / (limit + 1)).max(1));
                }
                let retry = key.admit_request(now).unwrap_err().retry_after_seconds;
                assert!(retry <= seconds, "Retry-After {retry} for a {seconds} s window");
                let reset = key.rate_info(now).requests.unwrap().reset_ms;
                assert!(reset <= seconds * 1000, "reset {reset} ms for a {seconds} s window");
                assert!(key.admit_request(now + retry * 1000).is_ok(), "{seconds} s, retry {retry}");
            }
        }
    }

    #[test]
    fn state_errors_say_why_without_the_content() {
        assert_eq!(decode_state(b""), Err(StateError::Empty));
        assert_eq!(decode_state(b"alice 60/1m"), Err(StateError::NotAStateFile));
        assert_eq!(decode_state(b"x"), Err(StateError::NotAStateFile));
        let bytes = encode(&sample_state());
        let mut future = bytes[..bytes.len() - CHECKSUM_BYTES].to_vec();
        future[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(decode_state(&sealed(future)), Err(StateError::UnsupportedVersion(3)));
        let empty = encode(&[]);
        let header = |count: u32| {
            let mut header = empty[..12].to_vec();
            header.extend_from_slice(&count.to_le_bytes());
            header
        };
        assert_eq!(
            decode_state(&sealed(header(u32::MAX))),
            Err(StateError::Invalid("fewer entries than the count says")),
            "a count the file cannot hold allocates nothing"
        );
        let mut trailing = header(0);
        trailing.push(0);
        assert_eq!(decode_state(&sealed(trailing)), Err(StateError::Invalid("bytes after the last entry")));
        let mut long_id = header(1);
        long_id.extend_from_slice(&257u16.to_le_bytes());
        long_id.extend_from_slice(&[b's'; 257]);
        assert_eq!(decode_state(&sealed(long_id)), Err(StateError::Invalid("a key id longer than 256 bytes")));
        let entry = |window_count: u8, kind: u8, seconds: u32, limit: u64| {
            let mut bytes = header(1);
            bytes.extend_from_slice(&6u16.to_le_bytes());
            bytes.extend_from_slice(b"secret");
            bytes.extend_from_slice(&T0.to_le_bytes());
            bytes.extend_from_slice(&0u32.to_le_bytes());
            bytes.push(window_count);
            for _ in 0..window_count.min(8) {
                bytes.push(kind);
                bytes.extend_from_slice(&seconds.to_le_bytes());
                bytes.extend_from_slice(&limit.to_le_bytes());
                bytes.extend_from_slice(&[0; SLOTS * 8]);
            }
            sealed(bytes)
        };
        assert!(decode_state(&entry(1, 2, 60, 5)).is_ok());
        let windows_error = StateError::Invalid("a window this build cannot count");
        for bad in [
            entry(1, 3, 60, 5),
            entry(1, 0, 60, 5),
            entry(1, 1, 0, 5),
            entry(1, 1, 31_622_401, 5),
            entry(1, 1, 60, 0),
            entry(2, 1, 60, 5),
        ] {
            assert_eq!(decode_state(&bad), Err(windows_error));
        }
        assert_eq!(decode_state(&entry(7, 1, 60, 5)), Err(StateError::Invalid("more windows than a key may have")));
        for error in [
            StateError::Empty,
            StateError::NotAStateFile,
            StateError::UnsupportedVersion(3),
            StateError::Truncated,
            StateError::ChecksumMismatch,
            windows_error,
        ] {
            assert!(!error.to_string().contains("secret"));
        }
        assert_eq!(
            StateError::UnsupportedVersion(3).to_string(),
            "format version 3; this build reads only versions 1 and 2"
        );
        assert_eq!(StateError::ChecksumMismatch.to_string(), "checksum mismatch: the file is corrupt or incomplete");
    }
}
