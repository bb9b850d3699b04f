//! The queue's operations: arrive, take a grant, end, sweep what a dead worker held, and the
//! dispatch that fills free slots from the least-charged waiting key.

use crate::queue::data::*;
use crate::queue::fair;
use crate::queue::render::Snapshot;

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
                    let actual = fair::vtime(slot_ms, key.share);
                    key.vtime = key.vtime.saturating_sub(t.charge).saturating_add(actual);
                    key.estimate_ms = fair::estimate_ms(slot_ms);
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
    pub(super) fn repair(&mut self, now_ms: u64) {
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

    pub(super) fn index_insert(&mut self, hash: u64, key: u32) -> bool {
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

    pub(super) fn describe_key(&mut self, key: u32, who: &Who) {
        let slot = &mut self.keys[key as usize];
        slot.share = who.share.clamp(1, MAX_SHARE);
        let len = who.label.len().min(LABEL_BYTES);
        slot.label[..len].copy_from_slice(&who.label[..len]);
        slot.label_len = len as u32;
    }

    /// Charges a ticket's key and gives it a slot.
    pub(super) fn dispatch(&mut self, ticket: u32, state: u32, now_ms: u64) {
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
        let charge = fair::vtime(u64::from(key.estimate_ms), key.share);
        t.charge = charge;
        self.header.vclock = self.header.vclock.max(key.vtime);
        key.vtime = key.vtime.saturating_add(charge);
        key.running = key.running.saturating_add(1);
        self.header.in_flight = self.header.in_flight.saturating_add(1);
    }

    /// Grants waiting requests while slots are free: the least-charged key's first request.
    pub(super) fn fill(&mut self, now_ms: u64) {
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

    pub(super) fn enqueue(&mut self, key: u32, ticket: u32) {
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
    pub(super) fn unqueue(&mut self, ticket: u32) {
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

    pub(super) fn unlink_granted(&mut self, ticket: u32) {
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

    pub(super) fn take_ticket(&mut self, key: u32, owner: u32, now_ms: u64) -> Option<u32> {
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
    pub(super) fn relink_free_tickets(&mut self) -> u32 {
        self.header.free_ticket = NONE;
        for at in (0..self.tickets.len()).rev() {
            if self.tickets[at].state == FREE {
                self.tickets[at].next = self.header.free_ticket;
                self.header.free_ticket = at as u32;
            }
        }
        self.header.free_ticket
    }

    pub(super) fn free_ticket(&mut self, at: u32) {
        let free = self.header.free_ticket;
        self.tickets[at as usize] = Ticket { next: free, prev: NONE, ..Ticket::default() };
        self.header.free_ticket = at;
    }

    // The keys: a hash index over stable slots; idle keys kept in a list, oldest evicted first.

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
