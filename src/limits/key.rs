//! One key's limits and their counts ([`KeyLimits`]), plain fixed-size data a shared zone
//! holds: admission, `parallel=`, token reservations and charges.

use std::fmt;

use crate::fnv::{fnv1a_64_extend, FNV1A_64_START};
use crate::limits::headers::{retry_after_seconds, RateInfo};
use crate::limits::window::{self, ConfigError, EntryLimits, Kind, Limit, WindowCounter, MAX_WINDOWS};

/// What one key's counters take in the zone.
pub const KEY_LIMITS_BYTES: usize = std::mem::size_of::<KeyLimits>();

// The README gives the zone 1 KB per key for the counters (nginx's slab class for them).
const _: () = assert!(KEY_LIMITS_BYTES <= 1024);

/// How far the clock may seem to go back and still be read as the workers' cached times
/// differing (the counters then hold, as if no time had passed). Further back, the clock was set
/// back: the counters move with it, each keeping its age, so that no key stays locked until the
/// clock catches up again.
const CLOCK_SKEW_TOLERANCE_MS: u64 = 60_000;

/// A digest of an entry's limits, so the zone can tell cheaply when a reload changed them (and
/// its counters must be [reconfigured](KeyLimits::reconfigure)). Never 0, which stands for
/// "not known" (counters read back from the state file).
pub fn signature(options: &impl EntryLimits) -> u64 {
    let mut hash = FNV1A_64_START;
    let mut add = |value: u64| hash = fnv1a_64_extend(hash, &value.to_le_bytes());
    for (tag, windows) in [(1, options.requests()), (2, options.tokens())] {
        for window in windows.iter() {
            add(tag);
            add(window.limit);
            add(window.seconds);
        }
    }
    add(3);
    add(options.parallel().map_or(0, |parallel| u64::from(parallel) + 1));
    hash.max(1)
}

/// Why a request may not go on now: the 429's `Retry-After` and the limit its body names
/// (`{"error":"rate limited: requests 60/1m"}`: the Display is the limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateRefusal {
    pub limit: Limit,
    /// Whole seconds until enough of the window has passed for the request to be admitted,
    /// rounded up, at least 1. For `parallel=`, 1: when a request ends is not known.
    pub retry_after_seconds: u64,
}

impl fmt::Display for RateRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.limit.fmt(f)
    }
}

/// All the limits of one key and their counts: plain data (no pointers, no heap, `Copy`), so
/// that the glue can keep it in a shared-memory zone and copy it out to write the state file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyLimits {
    /// The latest moment the counts were brought to; every window's ring ends at it.
    pub(super) latest_ms: u64,
    pub(super) windows: [WindowCounter; MAX_WINDOWS],
    /// `parallel=`; 0 for none.
    pub(super) parallel: u32,
    /// Requests admitted and not yet ended, counted with or without `parallel=`, so that a
    /// `parallel=` added by a reload counts those already running.
    pub(super) in_flight: u32,
    pub(super) window_count: u8,
    pub(super) _padding: [u8; 3],
    /// Tokens reserved by requests in flight ([`reserve_tokens`](Self::reserve_tokens)), until
    /// their answers' counts are charged: a `tokens=` window admits only while what it counted
    /// and what is reserved stay under its limit, so a key sending many requests at once
    /// overshoots by one request at most.
    pub(super) reserved_tokens: u32,
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
    pub fn new(options: &impl EntryLimits, now_ms: u64) -> Result<KeyLimits, ConfigError> {
        let (windows, window_count) = window::counters(options.requests(), options.tokens(), options.parallel())?;
        Ok(KeyLimits {
            latest_ms: now_ms,
            windows,
            parallel: options.parallel().unwrap_or(0),
            window_count: window_count as u8,
            ..KeyLimits::EMPTY
        })
    }

    /// Whether an entry's limits can be counted, for the glue to report when it loads the file.
    pub fn check(options: &impl EntryLimits) -> Result<(), ConfigError> {
        window::check(options.requests(), options.tokens(), options.parallel())
    }

    /// Takes the limits of a reloaded entry. A window of the same kind and period keeps its
    /// counts (its limit may have changed), a new one starts empty, a removed one is dropped;
    /// requests in flight stay counted. Options that cannot be counted change nothing.
    pub fn reconfigure(&mut self, options: &impl EntryLimits, now_ms: u64) -> Result<(), ConfigError> {
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
    pub fn admit(&mut self, now_ms: u64) -> Result<RateInfo, RateRefusal> {
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
    pub fn admit_request(&mut self, now_ms: u64) -> Result<RateInfo, RateRefusal> {
        let at_ms = self.advance(now_ms);
        if let Some(refusal) = self.window_refusal(at_ms, now_ms) {
            return Err(refusal);
        }
        self.charge_request(at_ms);
        Ok(self.rate_info(now_ms))
    }

    /// Counts a request as in flight, if `parallel=` allows one more.
    pub fn enter(&mut self) -> Result<(), RateRefusal> {
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

    pub(super) fn window_count(&self) -> usize {
        usize::from(self.window_count).min(MAX_WINDOWS)
    }

    pub(super) fn windows(&self) -> &[WindowCounter] {
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
    fn window_refusal(&self, at_ms: u64, now_ms: u64) -> Option<RateRefusal> {
        self.windows()
            .iter()
            .filter_map(|w| {
                let reserved_full = || {
                    let counted = w.used(self.latest_ms, at_ms).saturating_add(u64::from(self.reserved_tokens));
                    (w.kind() == Some(Kind::Tokens) && self.reserved_tokens > 0 && counted >= w.limit).then_some(1000)
                };
                let wait_ms = w.wait_ms(self.latest_ms, at_ms, now_ms).or_else(reserved_full)?;
                let limit = Limit::of_window(w.kind()?, w.window());
                Some(RateRefusal { limit, retry_after_seconds: retry_after_seconds(wait_ms) })
            })
            .reduce(worse)
    }

    fn parallel_refusal(&self) -> Option<RateRefusal> {
        (self.parallel > 0 && self.in_flight >= self.parallel)
            .then_some(RateRefusal { limit: Limit::Parallel(self.parallel), retry_after_seconds: 1 })
    }

    fn charge_request(&mut self, at_ms: u64) {
        for window in self.windows_mut().iter_mut().filter(|w| w.kind() == Some(Kind::Requests)) {
            window.charge(at_ms, 1);
        }
    }
}

/// Of two refusals, the one to report: the longer wait (the request needs every limit to allow
/// it), the first on a tie.
fn worse(first: RateRefusal, second: RateRefusal) -> RateRefusal {
    if second.retry_after_seconds > first.retry_after_seconds {
        second
    } else {
        first
    }
}
