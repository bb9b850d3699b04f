//! The time, as nginx caches it between events: one reading for everything a worker does.

/// Milliseconds since the epoch: what the limit windows, the queue and the fleet count in.
pub fn now_ms() -> u64 {
    // SAFETY: ngx_cached_time always points at a valid time slot, updated by this worker's own
    // thread between events.
    let time = unsafe { &*ngx::ffi::ngx_cached_time };
    time.sec as u64 * 1000 + time.msec as u64
}

/// Seconds since the epoch: what an entry's `expires=` is compared with.
pub fn now_seconds() -> i64 {
    // SAFETY: as in now_ms.
    unsafe { (*ngx::ffi::ngx_cached_time).sec }
}

/// nginx's monotonic milliseconds (`ngx_current_msec`): what a watched file's re-check
/// interval counts in, unmoved by a change of the wall clock.
pub fn monotonic_ms() -> u64 {
    // SAFETY: ngx_current_msec is updated by this worker's own thread between events.
    unsafe { ngx::ffi::ngx_current_msec as u64 }
}
