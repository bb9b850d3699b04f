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
//!
//! - `window.rs`: a window, whether it can be counted, its counter (the options parser's only
//!   way in, so that it needs nothing that needs it);
//! - `key.rs`: one key's counters, admission and charges;
//! - `headers.rs`: the `x-ratelimit-*` headers and `Retry-After`;
//! - `state.rs`: the state file's content.

pub mod headers;
pub mod key;
pub mod state;
pub mod window;

pub use headers::{format_reset, RateInfo, Remaining};
pub use key::{signature, KeyLimits, RateRefusal, KEY_LIMITS_BYTES};
pub use state::{decode_state, encode_state, StateError, MAX_KEY_ID_BYTES, STATE_VERSION};
pub use window::{ConfigError, Kind, Limit, Window, MAX_WINDOWS, MAX_WINDOW_SECONDS, WIDTHS_PER_PERIOD};

#[cfg(test)]
mod tests;
