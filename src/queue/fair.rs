//! The fair-share arithmetic: slot time turned into virtual time by a key's `share=`. Dispatch
//! charges an estimate with it, the end of a request corrects the charge to the real time.

use crate::queue::data::MAX_SHARE;

/// Virtual time per millisecond of slot time at share 1 (so that share 1000 still counts).
const VTIME_PER_MS: u64 = 1_000;

/// The longest slot time an estimate takes (an hour): one stuck stream must not shut its key
/// out for days.
const MAX_ESTIMATE_MS: u64 = 3_600_000;

/// The virtual time `slot_ms` of slot time costs a key of `share` (clamped to 1..=[`MAX_SHARE`];
/// slot time beyond an hour counts as an hour).
pub(super) fn vtime(slot_ms: u64, share: u32) -> u64 {
    slot_ms.min(MAX_ESTIMATE_MS) * VTIME_PER_MS / u64::from(share.clamp(1, MAX_SHARE))
}

/// The estimate a key's next dispatch is charged: its last slot time, 1 ms to an hour.
pub(super) fn estimate_ms(slot_ms: u64) -> u32 {
    slot_ms.clamp(1, MAX_ESTIMATE_MS) as u32
}
