//! A queue's state in the zone: one zeroed block per queue (made on first use, kept across
//! reloads with the zone), carved into the plain arrays `ngx_ollama_auth::queue` works on.

use std::mem::{align_of, size_of};
use std::ptr::NonNull;

use crate::zone::data::{Locked, Zone};
use ngx_ollama_auth::queue::{Header, KeySlot, Queue, Sizes, Snapshot, Ticket};

/// One location's queue, as its directive set it.
#[derive(Clone, Copy)]
pub struct QueueConf {
    pub zone: Zone,
    pub capacity: u32,
    pub max_waiting: u32,
    pub timeout_ms: u64,
}

impl QueueConf {
    /// Queues are shared by zone, capacity and bound.
    pub fn same_queue(&self, other: &QueueConf) -> bool {
        self.zone.same(other.zone) && self.capacity == other.capacity && self.max_waiting == other.max_waiting
    }
}

/// The zone's queues' series for `ollama_auth_metrics` (empty without queues).
pub fn exposition(zone: Zone) -> Vec<u8> {
    let snapshots = snapshots(zone);
    ngx_ollama_auth::queue::render(&snapshots)
}

fn align_up(offset: usize, align: usize) -> usize {
    offset.div_ceil(align) * align
}

/// Offsets of the arrays in a block, and its size.
struct Carving {
    keys: usize,
    tickets: usize,
    index: usize,
    heap: usize,
    bytes: usize,
}

fn carving(sizes: &Sizes) -> Carving {
    let keys = align_up(size_of::<Header>(), align_of::<KeySlot>());
    let tickets = align_up(keys + sizes.keys * size_of::<KeySlot>(), align_of::<Ticket>());
    let index = align_up(tickets + sizes.tickets * size_of::<Ticket>(), align_of::<u32>());
    let heap = index + sizes.index * size_of::<u32>();
    Carving { keys, tickets, index, heap, bytes: heap + sizes.keys * size_of::<u32>() }
}

/// The queue of `conf` in its zone, made if it is new; `None` if the zone has no room for it.
/// The borrow of the lock stands for the queue's: no one else touches it meanwhile.
pub fn queue<'l>(locked: &'l mut Locked<'_>, conf: &QueueConf) -> Option<Queue<'l>> {
    let bounds = (conf.capacity, conf.max_waiting);
    if !locked.has_queue(bounds) && queue_for(locked, conf.capacity, conf.max_waiting).is_none() {
        free_idle_queues(locked, bounds);
    }
    queue_for(locked, conf.capacity, conf.max_waiting)
}

/// Frees the blocks of the other queues with nothing in flight and nothing waiting, when a new
/// queue finds no room in the zone: those of configurations reloaded away (another capacity),
/// so that reloads never fill it.
fn free_idle_queues(locked: &mut Locked<'_>, keep: (u32, u32)) {
    for (capacity, max_waiting) in locked.queue_bounds().into_iter().filter(|&bounds| bounds != keep) {
        let idle = queue_for(locked, capacity, max_waiting).is_some_and(|q| q.in_flight() == 0 && q.waiting() == 0);
        if idle {
            locked.free_queue_block(capacity, max_waiting);
        }
    }
}

/// Gives back, in every queue of the zone, what workers that are gone held.
pub fn sweep_zone(zone: Zone, mut alive: impl FnMut(u32) -> bool, now_ms: u64) -> usize {
    let Some(mut locked) = zone.lock() else { return 0 };
    let mut swept = 0;
    for (capacity, max_waiting) in locked.queue_bounds() {
        if let Some(mut queue) = queue_for(&mut locked, capacity, max_waiting) {
            swept += queue.sweep(&mut alive, now_ms);
        }
    }
    swept
}

/// Every queue of the zone, copied out under its lock.
pub fn snapshots(zone: Zone) -> Vec<Snapshot> {
    let Some(mut locked) = zone.lock() else { return Vec::new() };
    let mut snapshots = Vec::new();
    for (capacity, max_waiting) in locked.queue_bounds() {
        if let Some(queue) = queue_for(&mut locked, capacity, max_waiting) {
            snapshots.push(queue.snapshot());
        }
    }
    snapshots
}

fn queue_for<'l>(locked: &'l mut Locked<'_>, capacity: u32, max_waiting: u32) -> Option<Queue<'l>> {
    let sizes = Sizes::new(capacity, max_waiting);
    let carve = carving(&sizes);
    let (block, fresh): (NonNull<u8>, bool) = locked.queue_block(capacity, max_waiting, carve.bytes)?;
    let base = block.as_ptr();
    const { assert!(align_of::<Header>() <= 8 && align_of::<KeySlot>() <= 8 && align_of::<Ticket>() <= 8) };
    // SAFETY: the block is `carve.bytes` long, zeroed when made, and aligned to at least 8 bytes
    // (a slab block of this size is page-aligned); the arrays lie at disjoint, aligned offsets
    // within it; every field of these types is an integer, so any bytes are a valid value; the
    // zone's lock is held for the borrow's life (`locked`), and nothing else reaches the block.
    let mut queue = unsafe {
        Queue {
            header: &mut *base.cast::<Header>(),
            keys: std::slice::from_raw_parts_mut(base.add(carve.keys).cast::<KeySlot>(), sizes.keys),
            tickets: std::slice::from_raw_parts_mut(base.add(carve.tickets).cast::<Ticket>(), sizes.tickets),
            index: std::slice::from_raw_parts_mut(base.add(carve.index).cast::<u32>(), sizes.index),
            heap: std::slice::from_raw_parts_mut(base.add(carve.heap).cast::<u32>(), sizes.keys),
        }
    };
    if fresh || !queue.is_initialized(capacity, max_waiting) {
        queue.init(capacity, max_waiting);
    }
    Some(queue)
}
