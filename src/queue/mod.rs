//! The fair queue in front of the GPU (`ollama_auth_queue`): at most `capacity` inference
//! requests in flight, the rest waiting per key, and when a slot frees the next request comes
//! from the waiting key that has used the least slot time relative to its `share`.
//!
//! Fairness is weighted fair queuing on slot time (start-time fair queuing). Each key has a
//! virtual time `vtime`: the slot time it has been charged, divided by its share. A request's
//! dispatch charges its key an estimate (the key's last slot time, or 1 s at first) over its
//! share; its end corrects the charge to the real slot time. The waiting key with the least
//! `vtime` goes next (ties: the earlier request), first in, first out within a key. The queue's
//! virtual clock `vclock` is the `vtime` of the latest dispatch; a key that starts waiting takes
//! `max(its vtime, vclock)`, so time spent idle banks no credit, and a newcomer behind a key
//! with a deep backlog goes next: that key was charged for every request it has running.
//!
//! The state is plain fixed-size data ([`Header`], [`KeySlot`], [`Ticket`] and two index
//! arrays), allocated once and changed only through [`Queue`], which works on slices: the nginx
//! glue keeps them in a shared-memory zone (changed only under its lock); the tests keep them
//! in vectors ([`QueueStore`]). Nothing allocates after that, every operation is O(log n) in the
//! waiting keys (a binary min-heap with positions, a hash index with linear probing), and no
//! method panics or loops forever, whatever the state holds: a worker that died in the middle
//! of an operation leaves state that is at worst unfair, never a crash (and [`Queue::sweep`]
//! gives back what a dead worker held).
//!
//! Time is a parameter (milliseconds), never read here.
//!
//! - `data.rs`: the state's plain data, [`Queue`] and [`QueueStore`];
//! - `ops.rs`: the operations and the dispatch;
//! - `fair.rs`: the fair-share arithmetic (slot time to virtual time);
//! - `index.rs`: the hash index and the min-heap of waiting keys;
//! - `render.rs`: the queues' metrics;
//! - `answers.rs`: what the gate answers a request the queue does not take.

pub mod answers;
mod data;
mod fair;
mod index;
mod ops;
mod render;

pub use data::*;
pub use render::{render, Snapshot};

#[cfg(test)]
mod tests;
