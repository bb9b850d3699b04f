//! What the gate answers a request the queue does not take: its words, and when to try again.

use super::data::Refused;
use crate::refusal::{Refusal, RefusalReason};

/// Why a request was not queued, or stopped waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotQueued {
    /// The queue refused it on arrival.
    Refused(Refused),
    /// The zone has no room for the queue.
    NoRoom,
    /// It waited past the queue's `timeout=`.
    WaitedTooLong,
}

impl NotQueued {
    /// The 503 the gate answers, and its `Retry-After` in seconds: a key's own backlog clears
    /// sooner than the whole queue's.
    pub fn answer(self) -> (Refusal, u64) {
        let (message, retry_after) = match self {
            NotQueued::Refused(Refused::KeyQueueFull) => ("too many requests of this key are waiting for the model", 5),
            NotQueued::Refused(Refused::QueueFull) => ("too many requests are waiting for the model", 10),
            NotQueued::NoRoom => ("the server cannot queue this request now", 10),
            NotQueued::WaitedTooLong => ("waited too long for the model: the server is busy", 10),
        };
        (Refusal::unavailable(message, RefusalReason::RateLimited), retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_a_503_with_a_retry_after() {
        let all = [
            NotQueued::Refused(Refused::KeyQueueFull),
            NotQueued::Refused(Refused::QueueFull),
            NotQueued::NoRoom,
            NotQueued::WaitedTooLong,
        ];
        for not_queued in all {
            let (refusal, retry_after) = not_queued.answer();
            assert_eq!(
                (refusal.status, refusal.kind, refusal.why),
                (503, "service unavailable", RefusalReason::RateLimited)
            );
            assert!((5..=10).contains(&retry_after), "{not_queued:?}");
        }
        assert_eq!(NotQueued::Refused(Refused::KeyQueueFull).answer().1, 5);
    }
}
