//! The queue's state as plain fixed-size data a shared zone holds: the header, the key slots,
//! the tickets, their sizes, [`Queue`] (the state's slices, wherever they live) and
//! [`QueueStore`] (the same in vectors, for the tests and the fuzzer).

/// No index: the end of a list, an empty index cell, a key outside the heap.
pub const NONE: u32 = u32::MAX;

/// The slot time charged at dispatch to a key whose last slot time is not known yet.
pub const DEFAULT_ESTIMATE_MS: u32 = 1_000;

/// The largest `share=`: weights beyond this ratio mean "everything" anyway.
pub const MAX_SHARE: u32 = 1_000;

/// The default `share=`.
pub const DEFAULT_SHARE: u32 = 1;

/// The default `queue=`: a key's most requests waiting.
pub const DEFAULT_KEY_QUEUE: u32 = 50;

/// The largest `queue=`.
pub const MAX_KEY_QUEUE: u32 = 100_000;

/// The longest label a key keeps for metrics (longer ones are cut).
pub const LABEL_BYTES: usize = 48;

pub(super) const MAGIC: u32 = 0x5155_4555; // "QUEU"

/// A ticket's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// In its key's queue.
    Waiting,
    /// Dispatched by some worker (holding a slot), not yet taken by its owner.
    Granted,
    /// Holding a slot, its owner knows.
    Running,
}

pub(super) const FREE: u32 = 0;
pub(super) const WAITING: u32 = 1;
pub(super) const GRANTED: u32 = 2;
pub(super) const RUNNING: u32 = 3;

pub(super) fn state_of(code: u32) -> Option<State> {
    match code {
        WAITING => Some(State::Waiting),
        GRANTED => Some(State::Granted),
        RUNNING => Some(State::Running),
        _ => None,
    }
}

/// The queue's counts and list heads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    pub(super) magic: u32,
    pub(super) capacity: u32,
    pub(super) max_waiting: u32,
    pub(super) in_flight: u32,
    pub(super) waiting: u32,
    pub(super) free_ticket: u32,
    pub(super) free_key: u32,
    pub(super) idle_head: u32,
    pub(super) idle_tail: u32,
    pub(super) granted_head: u32,
    pub(super) heap_len: u32,
    pub(super) next_seq: u64,
    pub(super) vclock: u64,
    /// The waits of dispatched requests (0 for those that went straight on): a histogram.
    pub(super) wait_buckets: [u64; WAIT_BUCKETS_MS.len()],
    pub(super) wait_count: u64,
    pub(super) wait_sum_ms: u64,
}

impl Header {
    /// A queue with no ticket and no key, its lists empty, counting on from `next_seq` and
    /// `vclock` (a repair keeps both).
    pub(super) fn empty(capacity: u32, max_waiting: u32, next_seq: u64, vclock: u64) -> Header {
        Header {
            magic: MAGIC,
            capacity,
            max_waiting,
            free_ticket: NONE,
            free_key: NONE,
            idle_head: NONE,
            idle_tail: NONE,
            granted_head: NONE,
            next_seq,
            vclock,
            ..Header::default()
        }
    }
}

/// The upper bounds of the wait histogram's buckets, in milliseconds (then `+Inf`).
pub const WAIT_BUCKETS_MS: [u64; 10] = [10, 100, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000];

/// One key's place in the queue, kept while it is idle so that its `vtime` is remembered until
/// the room is needed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KeySlot {
    pub(super) hash: u64,
    pub(super) vtime: u64,
    pub(super) used: u32,
    pub(super) share: u32,
    pub(super) estimate_ms: u32,
    pub(super) waiting: u32,
    pub(super) running: u32,
    /// The slot time this key used while it had its slot here, in milliseconds.
    pub(super) slot_ms: u64,
    pub(super) head: u32,
    pub(super) tail: u32,
    pub(super) heap_pos: u32,
    pub(super) prev: u32,
    pub(super) next: u32,
    pub(super) label_len: u32,
    pub(super) label: [u8; LABEL_BYTES],
}

pub(super) const EMPTY_KEY: KeySlot = KeySlot {
    hash: 0,
    vtime: 0,
    used: 0,
    share: 1,
    estimate_ms: DEFAULT_ESTIMATE_MS,
    waiting: 0,
    running: 0,
    slot_ms: 0,
    head: NONE,
    tail: NONE,
    heap_pos: NONE,
    prev: NONE,
    next: NONE,
    label_len: 0,
    label: [0; LABEL_BYTES],
};

impl Default for KeySlot {
    fn default() -> KeySlot {
        EMPTY_KEY
    }
}

/// One request, from its arrival until its end: waiting, then holding a slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Ticket {
    /// Arrival order, and the ticket's generation: a [`TicketRef`] names one allocation.
    pub(super) seq: u64,
    pub(super) enqueued_ms: u64,
    pub(super) dispatched_ms: u64,
    pub(super) charge: u64,
    pub(super) key: u32,
    pub(super) state: u32,
    pub(super) prev: u32,
    pub(super) next: u32,
    pub(super) owner: u32,
}

/// A request's ticket, as its worker keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TicketRef {
    pub index: u32,
    pub seq: u64,
}

/// Who asks: the key's identity (a hash of its limit id), its weight and queue bound, a label.
#[derive(Clone, Copy, Debug)]
pub struct Who<'a> {
    pub hash: u64,
    pub share: u32,
    pub max_queue: u32,
    pub label: &'a [u8],
}

/// What an arriving request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// A slot, now: go on.
    Dispatched(TicketRef),
    /// A place in the queue: wait for a grant.
    Waiting(TicketRef),
}

/// Why an arriving request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// This key has `queue=` requests waiting already.
    KeyQueueFull,
    /// The queue holds `max_waiting` requests already.
    QueueFull,
}

/// What ending a request (whatever its state) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It was waiting: it left the queue, nobody was charged.
    LeftQueue { waited_ms: u64 },
    /// It held a slot for this long; the slot went to the next.
    Released { slot_ms: u64 },
    /// The ticket was no longer this request's (ended already, or swept).
    Unknown,
}

/// How many of each the queue needs, for `capacity` slots and `max_waiting` waiting requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub tickets: usize,
    pub keys: usize,
    pub index: usize,
}

impl Sizes {
    pub fn new(capacity: u32, max_waiting: u32) -> Sizes {
        let tickets = (capacity as usize).saturating_add(max_waiting as usize).max(1);
        let keys = tickets;
        let index = keys.saturating_mul(2).next_power_of_two();
        Sizes { tickets, keys, index }
    }

    /// Bytes the queue takes: header, keys, index, heap and tickets.
    pub fn bytes(&self) -> usize {
        size_of::<Header>()
            + self.keys * size_of::<KeySlot>()
            + self.index * size_of::<u32>()
            + self.keys * size_of::<u32>()
            + self.tickets * size_of::<Ticket>()
    }
}

/// The queue's state in vectors: for the tests and the fuzzer.
#[derive(Clone, Debug)]
pub struct QueueStore {
    pub(super) header: Header,
    pub(super) keys: Vec<KeySlot>,
    pub(super) index: Vec<u32>,
    pub(super) heap: Vec<u32>,
    pub(super) tickets: Vec<Ticket>,
}

impl QueueStore {
    pub fn new(capacity: u32, max_waiting: u32) -> QueueStore {
        let sizes = Sizes::new(capacity, max_waiting);
        let mut store = QueueStore {
            header: Header::default(),
            keys: vec![EMPTY_KEY; sizes.keys],
            index: vec![NONE; sizes.index],
            heap: vec![NONE; sizes.keys],
            tickets: vec![Ticket::default(); sizes.tickets],
        };
        store.queue().init(capacity, max_waiting);
        store
    }

    pub fn queue(&mut self) -> Queue<'_> {
        Queue {
            header: &mut self.header,
            keys: &mut self.keys,
            index: &mut self.index,
            heap: &mut self.heap,
            tickets: &mut self.tickets,
        }
    }

    /// Every byte of the state, for the fuzzer to corrupt: the queue must survive it.
    pub fn scramble(&mut self, mut next: impl FnMut() -> u64) {
        let n = next();
        match n % 6 {
            0 => self.header.in_flight = next() as u32,
            1 => self.header.heap_len = next() as u32,
            2 => {
                let at = next() as usize % self.keys.len();
                self.keys[at].head = next() as u32;
                self.keys[at].heap_pos = next() as u32;
            }
            3 => {
                let at = next() as usize % self.tickets.len();
                self.tickets[at].next = next() as u32;
                self.tickets[at].state = next() as u32 % 5;
            }
            4 => {
                let at = next() as usize % self.heap.len();
                self.heap[at] = next() as u32;
            }
            _ => {
                let at = next() as usize % self.index.len();
                self.index[at] = next() as u32;
            }
        }
    }
}

/// The queue, over its state wherever that lives.
pub struct Queue<'a> {
    pub header: &'a mut Header,
    pub keys: &'a mut [KeySlot],
    /// A power of two long: key slot indexes by hash, linear probing.
    pub index: &'a mut [u32],
    /// As long as `keys`: the waiting keys, a min-heap on (vtime, first ticket's seq).
    pub heap: &'a mut [u32],
    pub tickets: &'a mut [Ticket],
}

/// The key's identity in the queue: a keyed 64-bit hash of its limit id (`key:` and a
/// fingerprint, or `user:` and a name), the same in every worker.
pub fn key_hash(limit_id: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = siphasher::sip::SipHasher13::new_with_keys(0x6f6c_6c61_6d61_2d71, 0x7565_7565_2d6b_6579);
    hasher.write(limit_id);
    hasher.finish()
}
