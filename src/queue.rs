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

/// Virtual time per millisecond of slot time at share 1 (so that share 1000 still counts).
const VTIME_PER_MS: u64 = 1_000;

/// The longest slot time an estimate takes (an hour): one stuck stream must not shut its key
/// out for days.
const MAX_ESTIMATE_MS: u64 = 3_600_000;

const MAGIC: u32 = 0x5155_4555; // "QUEU"

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

const FREE: u32 = 0;
const WAITING: u32 = 1;
const GRANTED: u32 = 2;
const RUNNING: u32 = 3;

fn state_of(code: u32) -> Option<State> {
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
    magic: u32,
    capacity: u32,
    max_waiting: u32,
    in_flight: u32,
    waiting: u32,
    free_ticket: u32,
    free_key: u32,
    idle_head: u32,
    idle_tail: u32,
    granted_head: u32,
    heap_len: u32,
    next_seq: u64,
    vclock: u64,
    /// The waits of dispatched requests (0 for those that went straight on): a histogram.
    wait_buckets: [u64; WAIT_BUCKETS_MS.len()],
    wait_count: u64,
    wait_sum_ms: u64,
}

impl Header {
    /// A queue with no ticket and no key, its lists empty, counting on from `next_seq` and
    /// `vclock` (a repair keeps both).
    fn empty(capacity: u32, max_waiting: u32, next_seq: u64, vclock: u64) -> Header {
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
    hash: u64,
    vtime: u64,
    used: u32,
    share: u32,
    estimate_ms: u32,
    waiting: u32,
    running: u32,
    /// The slot time this key used while it had its slot here, in milliseconds.
    slot_ms: u64,
    head: u32,
    tail: u32,
    heap_pos: u32,
    prev: u32,
    next: u32,
    label_len: u32,
    label: [u8; LABEL_BYTES],
}

const EMPTY_KEY: KeySlot = KeySlot {
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
    seq: u64,
    enqueued_ms: u64,
    dispatched_ms: u64,
    charge: u64,
    key: u32,
    state: u32,
    prev: u32,
    next: u32,
    owner: u32,
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
    header: Header,
    keys: Vec<KeySlot>,
    index: Vec<u32>,
    heap: Vec<u32>,
    tickets: Vec<Ticket>,
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

impl Queue<'_> {
    /// Whether the state was initialized for these bounds (a reload that keeps them keeps it).
    pub fn is_initialized(&self, capacity: u32, max_waiting: u32) -> bool {
        self.header.magic == MAGIC && self.header.capacity == capacity && self.header.max_waiting == max_waiting
    }

    /// Empties the queue: every ticket and key free.
    pub fn init(&mut self, capacity: u32, max_waiting: u32) {
        *self.header = Header::empty(capacity, max_waiting, 1, 0);
        for cell in self.index.iter_mut().chain(self.heap.iter_mut()) {
            *cell = NONE;
        }
        for at in (0..self.tickets.len()).rev() {
            self.tickets[at] = Ticket { next: self.header.free_ticket, prev: NONE, ..Ticket::default() };
            self.header.free_ticket = at as u32;
        }
        for at in (0..self.keys.len()).rev() {
            self.keys[at] = KeySlot { next: self.header.free_key, ..EMPTY_KEY };
            self.header.free_key = at as u32;
        }
    }

    pub fn capacity(&self) -> u32 {
        self.header.capacity
    }

    pub fn in_flight(&self) -> u32 {
        self.header.in_flight
    }

    pub fn waiting(&self) -> u32 {
        self.header.waiting
    }

    /// The keys with requests waiting or running: (label, waiting, running).
    pub fn each_active_key(&self, mut each: impl FnMut(&[u8], u32, u32)) {
        for key in self.keys.iter().filter(|key| key.used != 0 && (key.waiting > 0 || key.running > 0)) {
            let label = &key.label[..(key.label_len as usize).min(LABEL_BYTES)];
            each(label, key.waiting, key.running);
        }
    }

    /// The queue's series, copied out for the exposition.
    pub fn snapshot(&self) -> Snapshot {
        let mut keys = Vec::new();
        for key in self.keys.iter().filter(|key| key.used != 0) {
            let label = String::from_utf8_lossy(&key.label[..(key.label_len as usize).min(LABEL_BYTES)]).into_owned();
            keys.push((label, key.waiting, key.slot_ms));
        }
        Snapshot {
            capacity: self.header.capacity,
            in_flight: self.header.in_flight,
            keys,
            wait_buckets: self.header.wait_buckets,
            wait_count: self.header.wait_count,
            wait_sum_ms: self.header.wait_sum_ms,
        }
    }

    /// The state of a request's ticket, if it is still that request's.
    pub fn state(&self, ticket: TicketRef) -> Option<State> {
        let t = self.tickets.get(ticket.index as usize)?;
        (t.seq == ticket.seq).then(|| state_of(t.state)).flatten()
    }

    /// A request arrives for a slot: dispatched at once while a slot is free and nobody waits,
    /// else queued behind its key's earlier requests, or refused when a bound is reached.
    pub fn arrive(&mut self, who: &Who, owner: u32, now_ms: u64) -> Result<Arrival, Refused> {
        let Some(key) = self.find_or_add_key(who.hash) else { return Err(Refused::QueueFull) };
        self.describe_key(key, who);
        let vclock = self.header.vclock;
        let direct = self.header.in_flight < self.header.capacity && self.header.waiting == 0;
        let slot = &self.keys[key as usize];
        if !direct && slot.waiting >= who.max_queue {
            self.idle_if_unused(key);
            return Err(Refused::KeyQueueFull);
        }
        if !direct && self.header.waiting >= self.header.max_waiting {
            self.idle_if_unused(key);
            return Err(Refused::QueueFull);
        }
        let Some(ticket) = self.take_ticket(key, owner, now_ms) else {
            self.idle_if_unused(key);
            return Err(Refused::QueueFull);
        };
        let reference = TicketRef { index: ticket, seq: self.tickets[ticket as usize].seq };
        let slot = &mut self.keys[key as usize];
        if slot.waiting == 0 {
            slot.vtime = slot.vtime.max(vclock); // idle time banks no credit
        }
        if direct {
            self.dispatch(ticket, RUNNING, now_ms);
            return Ok(Arrival::Dispatched(reference));
        }
        self.enqueue(key, ticket);
        self.fill(now_ms);
        // A slot was free after all (the state said someone waited while one was): take it.
        if self.state(reference) == Some(State::Granted) {
            self.unlink_granted(ticket);
            self.tickets[ticket as usize].state = RUNNING;
            return Ok(Arrival::Dispatched(reference));
        }
        Ok(Arrival::Waiting(reference))
    }

    /// Takes the grants addressed to `owner` (marking them running), oldest first.
    pub fn take_grants(&mut self, owner: u32, mut each: impl FnMut(TicketRef)) {
        let mut at = self.header.granted_head;
        for _ in 0..self.tickets.len() {
            let Some(t) = self.tickets.get(at as usize).copied() else { break };
            let next = t.next;
            if t.owner == owner && t.state == GRANTED {
                self.unlink_granted(at);
                self.tickets[at as usize].state = RUNNING;
                each(TicketRef { index: at, seq: t.seq });
            }
            at = next;
        }
    }

    /// Whether some grant waits for `owner` to take it.
    pub fn has_grants_for(&self, owner: u32) -> bool {
        let mut at = self.header.granted_head;
        for _ in 0..self.tickets.len() {
            let Some(t) = self.tickets.get(at as usize) else { return false };
            if t.owner == owner && t.state == GRANTED {
                return true;
            }
            at = t.next;
        }
        false
    }

    /// A request ends, however (answered, client gone, timed out, refused): leaves the queue if
    /// it waited, gives its slot to the next request if it held one.
    pub fn end(&mut self, ticket: TicketRef, now_ms: u64) -> Ended {
        let Some(state) = self.state(ticket) else { return Ended::Unknown };
        let at = ticket.index;
        let t = self.tickets[at as usize];
        let ended = match state {
            State::Waiting => {
                self.unqueue(at);
                Ended::LeftQueue { waited_ms: now_ms.saturating_sub(t.enqueued_ms) }
            }
            State::Granted | State::Running => {
                if state == State::Granted {
                    self.unlink_granted(at);
                }
                let slot_ms = now_ms.saturating_sub(t.dispatched_ms);
                self.header.in_flight = self.header.in_flight.saturating_sub(1);
                if let Some(key) = self.keys.get_mut(t.key as usize) {
                    key.running = key.running.saturating_sub(1);
                    let share = u64::from(key.share.clamp(1, MAX_SHARE));
                    let actual = slot_ms.min(MAX_ESTIMATE_MS) * VTIME_PER_MS / share;
                    key.vtime = key.vtime.saturating_sub(t.charge).saturating_add(actual);
                    key.estimate_ms = slot_ms.clamp(1, MAX_ESTIMATE_MS) as u32;
                    key.slot_ms = key.slot_ms.saturating_add(slot_ms);
                    let pos = key.heap_pos;
                    self.sift(pos); // its vtime moved; it may be waiting too
                }
                Ended::Released { slot_ms }
            }
        };
        self.free_ticket(at);
        self.idle_if_unused(t.key);
        self.fill(now_ms);
        ended
    }

    /// The milliseconds a ticket waited before its dispatch (0 if it went straight on).
    pub fn waited_ms(&self, ticket: TicketRef) -> u64 {
        match self.tickets.get(ticket.index as usize) {
            Some(t) if t.seq == ticket.seq && t.state != WAITING => t.dispatched_ms.saturating_sub(t.enqueued_ms),
            _ => 0,
        }
    }

    /// Ends every ticket whose owner is gone (a worker that crashed or exited without ending its
    /// requests): answers how many.
    pub fn sweep(&mut self, mut alive: impl FnMut(u32) -> bool, now_ms: u64) -> usize {
        let mut swept = 0;
        for at in 0..self.tickets.len() {
            let t = self.tickets[at];
            if t.state != FREE && !alive(t.owner) {
                self.end(TicketRef { index: at as u32, seq: t.seq }, now_ms);
                swept += 1;
            }
        }
        if self.check().is_err() {
            self.repair(now_ms);
        }
        swept
    }

    /// Rebuilds every list, count and index from the tickets themselves: after a worker died
    /// in the middle of a change (nginx frees the lock it held), the state may disagree with
    /// itself. Requests keep their places (FIFO by arrival within a key); nothing is lost.
    fn repair(&mut self, now_ms: u64) {
        let (capacity, max_waiting, vclock, next_seq) =
            (self.header.capacity, self.header.max_waiting, self.header.vclock, self.header.next_seq);
        let next_seq = next_seq.max(self.tickets.iter().map(|t| t.seq).max().unwrap_or(0) + 1);
        *self.header = Header::empty(capacity, max_waiting, next_seq, vclock);
        self.index.fill(NONE);
        self.heap.fill(NONE);
        for at in 0..self.keys.len() {
            let slot = &mut self.keys[at];
            (slot.waiting, slot.running, slot.head, slot.tail, slot.heap_pos) = (0, 0, NONE, NONE, NONE);
            (slot.prev, slot.next) = (NONE, NONE);
            let hash = slot.hash;
            if slot.used != 0 && self.find_key(hash).is_some() {
                self.keys[at].used = 0; // a second slot for one hash
            }
            if self.keys[at].used != 0 && !self.index_insert(hash, at as u32) {
                self.keys[at].used = 0;
            }
        }
        let mut waiting: Vec<(u64, u32)> = Vec::new();
        for at in 0..self.tickets.len() {
            let t = self.tickets[at];
            let key_ok = self.keys.get(t.key as usize).is_some_and(|slot| slot.used != 0);
            match state_of(t.state) {
                Some(State::Waiting) if key_ok => waiting.push((t.seq, at as u32)),
                Some(state @ (State::Granted | State::Running)) if key_ok => {
                    self.keys[t.key as usize].running += 1;
                    self.header.in_flight += 1;
                    let t = &mut self.tickets[at];
                    (t.prev, t.next) = (NONE, NONE);
                    if state == State::Granted {
                        // Still to be taken by its owner: back on the list of grants.
                        t.next = self.header.granted_head;
                        if let Some(old) = self.tickets.get_mut(self.header.granted_head as usize) {
                            old.prev = at as u32;
                        }
                        self.header.granted_head = at as u32;
                    }
                }
                _ => self.tickets[at] = Ticket::default(),
            }
        }
        waiting.sort_unstable();
        for (_, at) in waiting {
            let key = self.tickets[at as usize].key;
            self.enqueue(key, at);
        }
        self.relink_free_tickets();
        for at in (0..self.keys.len()).rev() {
            if self.keys[at].used == 0 {
                self.keys[at].next = self.header.free_key;
                self.header.free_key = at as u32;
            }
        }
        for at in 0..self.keys.len() {
            self.idle_if_unused(at as u32);
        }
        self.fill(now_ms);
    }

    fn index_insert(&mut self, hash: u64, key: u32) -> bool {
        let mut at = self.home(hash);
        for _ in 0..self.index.len() {
            if self.index[at] == NONE || (self.index[at] as usize) >= self.keys.len() {
                self.index[at] = key;
                return true;
            }
            at = (at + 1) & (self.index.len() - 1);
        }
        false
    }

    fn describe_key(&mut self, key: u32, who: &Who) {
        let slot = &mut self.keys[key as usize];
        slot.share = who.share.clamp(1, MAX_SHARE);
        let len = who.label.len().min(LABEL_BYTES);
        slot.label[..len].copy_from_slice(&who.label[..len]);
        slot.label_len = len as u32;
    }

    /// Charges a ticket's key and gives it a slot.
    fn dispatch(&mut self, ticket: u32, state: u32, now_ms: u64) {
        let t = &mut self.tickets[ticket as usize];
        t.state = state;
        t.dispatched_ms = now_ms;
        let waited = now_ms.saturating_sub(t.enqueued_ms);
        let bucket = WAIT_BUCKETS_MS.iter().position(|&bound| waited <= bound);
        if let Some(count) = bucket.and_then(|at| self.header.wait_buckets.get_mut(at)) {
            *count = count.saturating_add(1);
        }
        self.header.wait_count = self.header.wait_count.saturating_add(1);
        self.header.wait_sum_ms = self.header.wait_sum_ms.saturating_add(waited);
        let Some(key) = self.keys.get_mut(t.key as usize) else { return };
        let share = u64::from(key.share.clamp(1, MAX_SHARE));
        let charge = u64::from(key.estimate_ms).min(MAX_ESTIMATE_MS) * VTIME_PER_MS / share;
        t.charge = charge;
        self.header.vclock = self.header.vclock.max(key.vtime);
        key.vtime = key.vtime.saturating_add(charge);
        key.running = key.running.saturating_add(1);
        self.header.in_flight = self.header.in_flight.saturating_add(1);
    }

    /// Grants waiting requests while slots are free: the least-charged key's first request.
    fn fill(&mut self, now_ms: u64) {
        for _ in 0..self.tickets.len() {
            if self.header.in_flight >= self.header.capacity || self.header.heap_len == 0 {
                return;
            }
            let Some(&key) = self.heap.first() else { return };
            let Some(head) = self.keys.get(key as usize).map(|slot| slot.head) else {
                self.heap_remove(0);
                continue;
            };
            if self.tickets.get(head as usize).is_none_or(|t| t.state != WAITING || t.key != key) {
                // A broken list (a worker died mid-change): this key waits no more.
                let slot = &mut self.keys[key as usize];
                slot.waiting = 0;
                slot.head = NONE;
                slot.tail = NONE;
                self.heap_remove(0);
                continue;
            }
            self.unqueue(head);
            self.dispatch(head, GRANTED, now_ms);
            let pos = self.keys[key as usize].heap_pos;
            self.sift(pos); // its vtime grew
            let t = &mut self.tickets[head as usize];
            t.prev = NONE;
            t.next = self.header.granted_head;
            if let Some(old) = self.tickets.get_mut(self.header.granted_head as usize) {
                old.prev = head;
            }
            self.header.granted_head = head;
        }
    }

    fn enqueue(&mut self, key: u32, ticket: u32) {
        let slot = &mut self.keys[key as usize];
        let tail = slot.tail;
        slot.tail = ticket;
        slot.waiting += 1;
        let first = slot.head == NONE || tail == NONE;
        if first {
            slot.head = ticket;
        }
        let t = &mut self.tickets[ticket as usize];
        t.state = WAITING;
        t.prev = if first { NONE } else { tail };
        t.next = NONE;
        if !first {
            if let Some(previous) = self.tickets.get_mut(tail as usize) {
                previous.next = ticket;
            }
        }
        self.header.waiting = self.header.waiting.saturating_add(1);
        let pos = self.keys[key as usize].heap_pos;
        if pos == NONE || pos >= self.header.heap_len {
            self.heap_push(key);
        }
    }

    /// Takes a waiting ticket out of its key's queue (the ticket stays allocated).
    fn unqueue(&mut self, ticket: u32) {
        let t = self.tickets[ticket as usize];
        self.header.waiting = self.header.waiting.saturating_sub(1);
        if let Some(previous) = self.tickets.get_mut(t.prev as usize) {
            previous.next = t.next;
        }
        if let Some(next) = self.tickets.get_mut(t.next as usize) {
            next.prev = t.prev;
        }
        let Some(slot) = self.keys.get_mut(t.key as usize) else { return };
        if slot.head == ticket {
            slot.head = t.next;
        }
        if slot.tail == ticket {
            slot.tail = t.prev;
        }
        slot.waiting = slot.waiting.saturating_sub(1);
        let pos = slot.heap_pos;
        if slot.waiting == 0 || slot.head == NONE {
            slot.waiting = 0;
            slot.head = NONE;
            slot.tail = NONE;
            self.heap_remove(pos);
        } else {
            self.sift(pos);
        }
        let t = &mut self.tickets[ticket as usize];
        t.prev = NONE;
        t.next = NONE;
    }

    fn unlink_granted(&mut self, ticket: u32) {
        let t = self.tickets[ticket as usize];
        match self.tickets.get_mut(t.prev as usize) {
            Some(previous) => previous.next = t.next,
            None => self.header.granted_head = t.next,
        }
        if let Some(next) = self.tickets.get_mut(t.next as usize) {
            next.prev = t.prev;
        }
        let t = &mut self.tickets[ticket as usize];
        t.prev = NONE;
        t.next = NONE;
    }

    fn take_ticket(&mut self, key: u32, owner: u32, now_ms: u64) -> Option<u32> {
        let mut at = self.header.free_ticket;
        if self.tickets.get(at as usize).is_some_and(|t| t.state != FREE) {
            at = self.relink_free_tickets(); // a broken free list (a worker died mid-change)
        }
        let t = self.tickets.get_mut(at as usize)?;
        self.header.free_ticket = t.next;
        let seq = self.header.next_seq.max(1);
        self.header.next_seq = seq.wrapping_add(1);
        *t = Ticket { seq, enqueued_ms: now_ms, key, owner, prev: NONE, next: NONE, ..Ticket::default() };
        Some(at)
    }

    /// Links every free ticket anew; answers the first.
    fn relink_free_tickets(&mut self) -> u32 {
        self.header.free_ticket = NONE;
        for at in (0..self.tickets.len()).rev() {
            if self.tickets[at].state == FREE {
                self.tickets[at].next = self.header.free_ticket;
                self.header.free_ticket = at as u32;
            }
        }
        self.header.free_ticket
    }

    fn free_ticket(&mut self, at: u32) {
        let free = self.header.free_ticket;
        self.tickets[at as usize] = Ticket { next: free, prev: NONE, ..Ticket::default() };
        self.header.free_ticket = at;
    }

    // The keys: a hash index over stable slots; idle keys kept in a list, oldest evicted first.

    fn home(&self, hash: u64) -> usize {
        (hash as usize) & (self.index.len().saturating_sub(1))
    }

    fn find_key(&self, hash: u64) -> Option<(usize, u32)> {
        let mut at = self.home(hash);
        for _ in 0..self.index.len() {
            let key = *self.index.get(at)?;
            match self.keys.get(key as usize) {
                None => return None,
                Some(slot) if slot.used != 0 && slot.hash == hash => return Some((at, key)),
                Some(_) => at = (at + 1) & (self.index.len() - 1),
            }
        }
        None
    }

    fn find_or_add_key(&mut self, hash: u64) -> Option<u32> {
        if let Some((_, key)) = self.find_key(hash) {
            if self.keys[key as usize].waiting == 0 && self.keys[key as usize].running == 0 {
                self.unlink_idle(key);
            }
            return Some(key);
        }
        let key = match self.header.free_key {
            free if (free as usize) < self.keys.len() && self.keys[free as usize].used == 0 => {
                self.header.free_key = self.keys[free as usize].next;
                free
            }
            _ => {
                let oldest = self.header.idle_head;
                let slot = self.keys.get(oldest as usize)?;
                if slot.waiting > 0 || slot.running > 0 {
                    return None;
                }
                let old_hash = slot.hash;
                self.unlink_idle(oldest);
                self.remove_from_index(old_hash);
                oldest
            }
        };
        self.keys[key as usize] = KeySlot { hash, used: 1, ..EMPTY_KEY };
        if self.index_insert(hash, key) {
            return Some(key);
        }
        self.keys[key as usize].used = 0;
        None
    }

    /// Backward-shift deletion: the cells after it that probed past it move back.
    fn remove_from_index(&mut self, hash: u64) {
        let Some((mut hole, _)) = self.find_key(hash) else { return };
        let mask = self.index.len() - 1;
        let mut at = hole;
        for _ in 0..self.index.len() {
            at = (at + 1) & mask;
            let key = self.index[at];
            let Some(slot) = self.keys.get(key as usize) else { break };
            let home = self.home(slot.hash);
            // Whether `home` lies cyclically in (hole, at]: then the entry stays.
            let stays = if hole <= at { hole < home && home <= at } else { hole < home || home <= at };
            if !stays {
                self.index[hole] = key;
                hole = at;
            }
        }
        self.index[hole] = NONE;
    }

    fn idle_if_unused(&mut self, key: u32) {
        let Some(slot) = self.keys.get_mut(key as usize) else { return };
        if slot.used == 0 || slot.waiting > 0 || slot.running > 0 {
            return;
        }
        slot.prev = self.header.idle_tail;
        slot.next = NONE;
        match self.keys.get_mut(self.header.idle_tail as usize) {
            Some(tail) => tail.next = key,
            None => self.header.idle_head = key,
        }
        self.header.idle_tail = key;
    }

    fn unlink_idle(&mut self, key: u32) {
        let slot = self.keys[key as usize];
        let in_list = slot.prev != NONE || self.header.idle_head == key;
        if !in_list {
            return;
        }
        match self.keys.get_mut(slot.prev as usize) {
            Some(previous) => previous.next = slot.next,
            None => self.header.idle_head = slot.next,
        }
        match self.keys.get_mut(slot.next as usize) {
            Some(next) => next.prev = slot.prev,
            None => self.header.idle_tail = slot.prev,
        }
        let slot = &mut self.keys[key as usize];
        slot.prev = NONE;
        slot.next = NONE;
    }

    // The heap of waiting keys, least (vtime, first ticket's seq) on top.

    fn order(&self, key: u32) -> (u64, u64) {
        #[cfg(test)]
        ORDER_CALLS.with(|calls| calls.set(calls.get() + 1));
        let Some(slot) = self.keys.get(key as usize) else { return (0, 0) };
        let seq = self.tickets.get(slot.head as usize).map_or(0, |t| t.seq);
        (slot.vtime, seq)
    }

    fn set_heap(&mut self, pos: usize, key: u32) {
        self.heap[pos] = key;
        if let Some(slot) = self.keys.get_mut(key as usize) {
            slot.heap_pos = pos as u32;
        }
    }

    fn heap_len(&self) -> usize {
        (self.header.heap_len as usize).min(self.heap.len())
    }

    fn heap_push(&mut self, key: u32) {
        let len = self.heap_len();
        if len >= self.heap.len() {
            return;
        }
        self.header.heap_len = len as u32 + 1;
        self.set_heap(len, key);
        self.sift_up(len);
    }

    fn heap_remove(&mut self, pos: u32) {
        let len = self.heap_len();
        let pos = pos as usize;
        if pos >= len {
            return;
        }
        if let Some(slot) = self.keys.get_mut(self.heap[pos] as usize) {
            slot.heap_pos = NONE;
        }
        let last = self.heap[len - 1];
        self.header.heap_len = len as u32 - 1;
        self.heap[len - 1] = NONE;
        if pos < len - 1 {
            self.set_heap(pos, last);
            self.sift(pos as u32);
        }
    }

    fn sift(&mut self, pos: u32) {
        if (pos as usize) < self.heap_len() {
            let at = self.sift_up(pos as usize);
            self.sift_down(at);
        }
    }

    fn sift_up(&mut self, mut at: usize) -> usize {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.order(self.heap[at]) >= self.order(self.heap[parent]) {
                break;
            }
            let (child_key, parent_key) = (self.heap[at], self.heap[parent]);
            self.set_heap(parent, child_key);
            self.set_heap(at, parent_key);
            at = parent;
        }
        at
    }

    fn sift_down(&mut self, mut at: usize) {
        let len = self.heap_len();
        loop {
            let mut least = at;
            for child in [2 * at + 1, 2 * at + 2] {
                if child < len && self.order(self.heap[child]) < self.order(self.heap[least]) {
                    least = child;
                }
            }
            if least == at {
                return;
            }
            let (a, b) = (self.heap[at], self.heap[least]);
            self.set_heap(at, b);
            self.set_heap(least, a);
            at = least;
        }
    }

    /// Checks every invariant (for the tests and the fuzzer): the counts match the lists.
    pub fn check(&self) -> Result<(), String> {
        let count = |state| self.tickets.iter().filter(|t| t.state == state).count() as u32;
        let (waiting, granted, running) = (count(WAITING), count(GRANTED), count(RUNNING));
        if waiting != self.header.waiting {
            return Err(format!("waiting {} counted, {waiting} tickets", self.header.waiting));
        }
        if granted + running != self.header.in_flight {
            return Err(format!("in flight {} counted, {} tickets", self.header.in_flight, granted + running));
        }
        if self.header.in_flight > self.header.capacity {
            return Err("more in flight than capacity".into());
        }
        if self.header.waiting > 0 && self.header.in_flight < self.header.capacity {
            return Err("a request waits while a slot is free".into());
        }
        for (at, slot) in self.keys.iter().enumerate().filter(|(_, slot)| slot.used != 0) {
            let mut walked = 0;
            let mut ticket = slot.head;
            while ticket != NONE && walked <= self.tickets.len() {
                let t = self.tickets.get(ticket as usize).ok_or("bad ticket in a key's list")?;
                if t.state != WAITING || t.key != at as u32 {
                    return Err("a key's list holds a ticket not waiting for it".into());
                }
                walked += 1;
                ticket = t.next;
            }
            if walked != slot.waiting as usize {
                return Err(format!("key {at}: {} waiting counted, {walked} listed", slot.waiting));
            }
            let in_heap = (slot.heap_pos as usize) < self.heap_len() && self.heap[slot.heap_pos as usize] == at as u32;
            if in_heap != (slot.waiting > 0) {
                return Err(format!("key {at}: in heap {in_heap}, waiting {}", slot.waiting));
            }
            if self.find_key(slot.hash).map(|(_, key)| key) != Some(at as u32) {
                return Err(format!("key {at} not found by its hash"));
            }
        }
        for pos in 1..self.heap_len() {
            if self.order(self.heap[pos]) < self.order(self.heap[(pos - 1) / 2]) {
                return Err("heap order".into());
            }
        }
        Ok(())
    }
}

/// One queue's series: its capacity, in flight, each key's (label, waiting, slot time), waits.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub capacity: u32,
    pub in_flight: u32,
    pub keys: Vec<(String, u32, u64)>,
    pub wait_buckets: [u64; WAIT_BUCKETS_MS.len()],
    pub wait_count: u64,
    pub wait_sum_ms: u64,
}

/// The queues' series in Prometheus' text format, labelled by capacity: `ollama_auth_in_flight`
/// and `ollama_auth_queue_capacity` (gauges), `ollama_auth_queue_waiting{user}` (gauge),
/// (the slot time each key used is in the usage series, by user and model: `metrics`), and the histogram
/// `ollama_auth_queue_wait_seconds`. Keys of one label (several unnamed keys) are added up.
pub fn render(queues: &[Snapshot]) -> Vec<u8> {
    use std::fmt::Write;
    if queues.is_empty() {
        return Vec::new();
    }
    let mut out = String::new();
    let mut families: [(&str, &str, &str, String); 4] = [
        ("ollama_auth_in_flight", "gauge", "Inference requests holding a slot of the fair queue.", String::new()),
        (
            "ollama_auth_queue_capacity",
            "gauge",
            "Slots of the fair queue (ollama_auth_queue capacity=).",
            String::new(),
        ),
        ("ollama_auth_queue_waiting", "gauge", "Requests waiting in the fair queue, by user.", String::new()),
        ("ollama_auth_queue_wait_seconds", "histogram", "How long requests waited for a slot.", String::new()),
    ];
    for queue in queues {
        let capacity = queue.capacity;
        let _ = writeln!(families[0].3, "ollama_auth_in_flight{{capacity=\"{capacity}\"}} {}", queue.in_flight);
        let _ = writeln!(families[1].3, "ollama_auth_queue_capacity{{capacity=\"{capacity}\"}} {capacity}");
        let mut by_user: Vec<(String, u32)> = Vec::new();
        for (label, waiting, _) in &queue.keys {
            match by_user.iter_mut().find(|(known, _)| known == label) {
                Some(entry) => entry.1 += waiting,
                None => by_user.push((label.clone(), *waiting)),
            }
        }
        by_user.sort();
        for (label, waiting) in &by_user {
            let mut user = Vec::new();
            crate::metrics::push_label_value(&mut user, label);
            let user = String::from_utf8_lossy(&user);
            let _ = writeln!(
                families[2].3,
                "ollama_auth_queue_waiting{{capacity=\"{capacity}\",user=\"{user}\"}} {waiting}"
            );
        }
        let mut cumulative = 0;
        for (bound, count) in WAIT_BUCKETS_MS.iter().zip(queue.wait_buckets) {
            cumulative += count;
            let le = *bound as f64 / 1000.0;
            let _ = writeln!(
                families[3].3,
                "ollama_auth_queue_wait_seconds_bucket{{capacity=\"{capacity}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let hist = &mut families[3].3;
        let _ = writeln!(
            hist,
            "ollama_auth_queue_wait_seconds_bucket{{capacity=\"{capacity}\",le=\"+Inf\"}} {}",
            queue.wait_count
        );
        let _ = writeln!(
            hist,
            "ollama_auth_queue_wait_seconds_sum{{capacity=\"{capacity}\"}} {}",
            queue.wait_sum_ms as f64 / 1000.0
        );
        let _ = writeln!(hist, "ollama_auth_queue_wait_seconds_count{{capacity=\"{capacity}\"}} {}", queue.wait_count);
    }
    for (name, kind, help, lines) in &families {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{lines}");
    }
    out.into_bytes()
}

/// The key's identity in the queue: a keyed 64-bit hash of its limit id (`key:` and a
/// fingerprint, or `user:` and a name), the same in every worker.
pub fn key_hash(limit_id: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = siphasher::sip::SipHasher13::new_with_keys(0x6f6c_6c61_6d61_2d71, 0x7565_7565_2d6b_6579);
    hasher.write(limit_id);
    hasher.finish()
}

#[cfg(test)]
thread_local! {
    /// Heap comparisons, for the test that dispatch is O(log n).
    static ORDER_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests;
