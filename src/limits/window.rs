//! One limit window (`requests=` or `tokens=`, `<n>/<period>`): what it is, whether it can be
//! counted, and its counter, a ring of sub-intervals (see the `limits` module's text for how a
//! window slides). The options parser reads this file only: nothing here knows an entry.

use std::fmt;

use crate::limits::headers::Remaining;

/// The longest period a limit may count over: a year, leap day included. Longer windows would
/// need counters kept across restarts to mean anything.
pub const MAX_WINDOW_SECONDS: u64 = 366 * SECONDS_PER_DAY;

pub const SECONDS_PER_DAY: u64 = 86_400;

/// At most `limit` (tokens or requests) in any `seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub seconds: u64,
}

/// Written back as `limit/period` in the largest unit that divides the period: `20000/1m`.
impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (count, unit) = [(SECONDS_PER_DAY, 'd'), (3600, 'h'), (60, 'm')]
            .into_iter()
            .find(|&(size, _)| self.seconds.is_multiple_of(size))
            .map_or((self.seconds, 's'), |(size, unit)| (self.seconds / size, unit));
        write!(f, "{}/{count}{unit}", self.limit)
    }
}

/// Windows one key may have, `tokens=` and `requests=` together: a minute, an hour and a day of
/// each, and what keeps a key's counters within 1 KB of the zone.
pub const MAX_WINDOWS: usize = 6;

/// Sub-intervals a period is cut into; the early refusal is at most one of them.
pub const WIDTHS_PER_PERIOD: u64 = 15;

/// The sub-intervals that touch a period: its widths and the one it starts in, one slot each.
pub(super) const SLOTS: usize = WIDTHS_PER_PERIOD as usize + 1;

/// A sub-interval's count stops here. A slot this full keeps its window closed until it leaves:
/// what went past it is unknown, and an unknown count must not admit.
pub(super) const FULL_SLOT: u32 = u32::MAX;

/// What a window counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Requests,
    Tokens,
}

impl Kind {
    /// Its byte in the zone and the state file; 0 marks no window.
    pub(super) fn code(self) -> u8 {
        match self {
            Kind::Requests => 1,
            Kind::Tokens => 2,
        }
    }

    pub(super) fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Requests),
            2 => Some(Kind::Tokens),
            _ => None,
        }
    }
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
    pub(super) fn of_window(kind: Kind, window: Window) -> Limit {
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

/// What an entry says of its limits, all its counters are made from: its `requests=` and
/// `tokens=` windows and its `parallel=` (`options::EntryOptions` says it).
pub trait EntryLimits {
    fn requests(&self) -> &[Window];
    fn tokens(&self) -> &[Window];
    fn parallel(&self) -> Option<u32>;
}

/// Whether limits can be counted: at most [`MAX_WINDOWS`] windows, each of at least 1 over 1 s
/// to 366 days and one per kind and period, and a `parallel=` of at least 1.
pub fn check(requests: &[Window], tokens: &[Window], parallel: Option<u32>) -> Result<(), ConfigError> {
    counters(requests, tokens, parallel).map(drop)
}

/// Empty counters for `requests=` windows, then `tokens=` ones, and how many there are; refused
/// as [`check`] says.
pub(super) fn counters(
    requests: &[Window],
    tokens: &[Window],
    parallel: Option<u32>,
) -> Result<([WindowCounter; MAX_WINDOWS], usize), ConfigError> {
    let window_count = requests.len() + tokens.len();
    if window_count > MAX_WINDOWS {
        return Err(ConfigError::TooManyWindows(window_count));
    }
    let mut counters = [WindowCounter::UNUSED; MAX_WINDOWS];
    let windows = requests.iter().map(|&w| (Kind::Requests, w)).chain(tokens.iter().map(|&w| (Kind::Tokens, w)));
    for (index, (kind, window)) in windows.enumerate() {
        let counter = WindowCounter::new(kind, window);
        if !counter.is_countable(&counters[..index]) {
            return Err(ConfigError::Unsupported(Limit::of_window(kind, window)));
        }
        counters[index] = counter;
    }
    if parallel == Some(0) {
        return Err(ConfigError::Unsupported(Limit::Parallel(0)));
    }
    Ok((counters, window_count))
}

/// One window's counts: a ring of the sub-intervals that touch the period, the newest being the
/// one the key's `latest_ms` falls in.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowCounter {
    pub(super) limit: u64,
    pub(super) seconds: u32,
    /// [`Kind::code`]; 0 for no window.
    pub(super) kind: u8,
    pub(super) _padding: [u8; 3],
    /// The count of sub-interval `n` is in slot `n % SLOTS`.
    pub(super) slots: [u32; SLOTS],
    /// Milliseconds from the start of sub-interval `n` to its latest charge, in slot `n % SLOTS`.
    pub(super) latest_charge: [u32; SLOTS],
}

impl WindowCounter {
    pub(super) const UNUSED: WindowCounter =
        WindowCounter { limit: 0, seconds: 0, kind: 0, _padding: [0; 3], slots: [0; SLOTS], latest_charge: [0; SLOTS] };

    fn new(kind: Kind, window: Window) -> WindowCounter {
        let seconds = u32::try_from(window.seconds).unwrap_or(u32::MAX);
        WindowCounter { limit: window.limit, seconds, kind: kind.code(), ..WindowCounter::UNUSED }
    }

    pub(super) fn kind(&self) -> Option<Kind> {
        Kind::from_code(self.kind)
    }

    pub(super) fn window(&self) -> Window {
        Window { limit: self.limit, seconds: u64::from(self.seconds) }
    }

    pub(super) fn is_same_period(&self, other: &WindowCounter) -> bool {
        self.kind == other.kind && self.seconds == other.seconds
    }

    /// Whether this build can count the window after `earlier` ones: a known kind, a limit of at
    /// least 1, a period of 1 s to 366 days, and no earlier window of its kind and period.
    pub(super) fn is_countable(&self, earlier: &[WindowCounter]) -> bool {
        self.kind().is_some()
            && self.limit > 0
            && (1..=MAX_WINDOW_SECONDS).contains(&u64::from(self.seconds))
            && !earlier.iter().any(|window| window.is_same_period(self))
    }

    /// A period of 0 (only in a state nothing here made) counts as a second, so nothing divides
    /// by zero.
    fn period_ms(&self) -> u64 {
        u64::from(self.seconds.max(1)) * 1000
    }

    /// The sub-interval a moment falls in, counted from the epoch.
    pub(super) fn sub_interval_at(&self, time_ms: u64) -> u64 {
        let index = u128::from(time_ms) * u128::from(WIDTHS_PER_PERIOD) / u128::from(self.period_ms());
        u64::try_from(index).unwrap_or(u64::MAX)
    }

    /// The first millisecond of a sub-interval.
    pub(super) fn start_ms(&self, sub_interval: u64) -> u64 {
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

    pub(super) fn used(&self, latest_ms: u64, at_ms: u64) -> u64 {
        let counted = self.counted(latest_ms, at_ms);
        self.sum(*counted.start(), *counted.end())
    }

    /// Milliseconds from `now_ms` until the window counts less than its limit, if it does not now.
    pub(super) fn wait_ms(&self, latest_ms: u64, at_ms: u64, now_ms: u64) -> Option<u64> {
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

    pub(super) fn remaining(&self, latest_ms: u64, at_ms: u64, now_ms: u64) -> Remaining {
        Remaining {
            limit: self.limit,
            remaining: self.limit.saturating_sub(self.used(latest_ms, at_ms)),
            reset_ms: self.reset_ms(latest_ms, at_ms, now_ms),
        }
    }

    /// Empties the slots that the sub-intervals after `from_ms`'s, up to `to_ms`'s, take over.
    pub(super) fn roll(&mut self, from_ms: u64, to_ms: u64) {
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
    pub(super) fn move_back(&mut self, from_ms: u64, to_ms: u64) {
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

    pub(super) fn charge(&mut self, at_ms: u64, amount: u64) {
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
