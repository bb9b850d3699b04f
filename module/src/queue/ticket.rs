//! A request's place in a queue, kept in its context: what the access phase answers for it,
//! the wait and slot time it is counted for, and leaving the queue (or freeing the slot) when
//! its answer's last buffer passes or the request ends, however it ended.

use ngx::core::Status;
use ngx::ffi::{ngx_chain_t, ngx_int_t};

use super::store::{self, QueueConf};
use super::waiters::{forget_waiter, pid, post_tick};
use crate::clock::now_ms;
use ngx_ollama_auth::queue::TicketRef;

/// Where a request stands in its location's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Waiting,
    Running,
    /// Refused (full, or waited past the timeout): the access phase's answer.
    Refused(ngx_int_t),
}

/// A request's place in a queue, in its context: dropped with the request's pool, however it
/// ended, which leaves the queue or frees the slot.
pub struct Queued {
    pub(super) conf: QueueConf,
    pub(super) ticket: Option<TicketRef>,
    pub stage: Stage,
    /// Milliseconds it waited for its slot (0: it went straight on).
    pub waited_ms: Option<u64>,
    /// A refusal's `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    /// The answer's headers have been added.
    pub headers_sent: bool,
    /// When it took its slot, while it holds it.
    pub(super) running_since_ms: Option<u64>,
    /// How long it held its slot, once it gave it back.
    pub(super) slot_ms: Option<u64>,
}

impl Queued {
    pub(super) fn answer(&self) -> ngx_int_t {
        match self.stage {
            Stage::Waiting => Status::NGX_AGAIN.0,
            Stage::Running => Status::NGX_OK.0,
            Stage::Refused(status) => status,
        }
    }

    /// How long it has held (or held) its slot: the GPU time it is counted for.
    pub fn slot_time_ms(&self) -> Option<u64> {
        self.slot_ms.or_else(|| self.running_since_ms.map(|since| now_ms().saturating_sub(since)))
    }

    /// The wait as the header and the variable give it: seconds, to the millisecond.
    pub fn wait_text(&self) -> Option<String> {
        self.waited_ms.map(|ms| format!("{}.{:03}", ms / 1000, ms % 1000))
    }
}

impl Queued {
    /// Frees the slot as the answer's last buffer passes: the model is done with it, whatever
    /// the client does from here (a slow read, a lingering close).
    ///
    /// # Safety
    /// `chain` must be NULL or a valid chain of valid buffers.
    pub unsafe fn release_at_last(&mut self, mut chain: *mut ngx_chain_t) {
        if self.stage != Stage::Running || self.ticket.is_none() {
            return;
        }
        // SAFETY: the caller's promise: every link and buffer is valid.
        while let Some(link) = unsafe { chain.as_ref() } {
            // SAFETY: as above.
            if unsafe { link.buf.as_ref() }.is_some_and(|buf| buf.last_buf() != 0) {
                self.leave();
                return;
            }
            chain = link.next;
        }
    }

    /// Leaves the queue, or gives the slot back. When the slot went to a request of this
    /// worker's, the tick runs as soon as this event is handled, not at the next timer.
    fn leave(&mut self) {
        let Some(ticket) = self.ticket.take() else { return };
        if let Some(since) = self.running_since_ms.take() {
            self.slot_ms = Some(now_ms().saturating_sub(since));
        }
        forget_waiter(&self.conf, ticket);
        let Some(mut locked) = self.conf.zone.lock() else { return };
        let Some(mut queue) = store::queue(&mut locked, &self.conf) else { return };
        queue.end(ticket, now_ms());
        if queue.has_grants_for(pid()) {
            post_tick();
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.leave();
    }
}
