//! The queue's two indexes over its key slots: a hash index with linear probing (a key by its
//! hash) and a binary min-heap with positions (the waiting keys by charged time, then arrival).

use crate::queue::data::*;

#[cfg(test)]
thread_local! {
    /// Heap comparisons, for the test that dispatch is O(log n).
    pub(super) static ORDER_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Queue<'_> {
    pub(super) fn home(&self, hash: u64) -> usize {
        (hash as usize) & (self.index.len().saturating_sub(1))
    }

    pub(super) fn find_key(&self, hash: u64) -> Option<(usize, u32)> {
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

    pub(super) fn find_or_add_key(&mut self, hash: u64) -> Option<u32> {
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
    pub(super) fn remove_from_index(&mut self, hash: u64) {
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

    pub(super) fn idle_if_unused(&mut self, key: u32) {
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

    pub(super) fn unlink_idle(&mut self, key: u32) {
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

    pub(super) fn order(&self, key: u32) -> (u64, u64) {
        #[cfg(test)]
        ORDER_CALLS.with(|calls| calls.set(calls.get() + 1));
        let Some(slot) = self.keys.get(key as usize) else { return (0, 0) };
        let seq = self.tickets.get(slot.head as usize).map_or(0, |t| t.seq);
        (slot.vtime, seq)
    }

    pub(super) fn set_heap(&mut self, pos: usize, key: u32) {
        self.heap[pos] = key;
        if let Some(slot) = self.keys.get_mut(key as usize) {
            slot.heap_pos = pos as u32;
        }
    }

    pub(super) fn heap_len(&self) -> usize {
        (self.header.heap_len as usize).min(self.heap.len())
    }

    pub(super) fn heap_push(&mut self, key: u32) {
        let len = self.heap_len();
        if len >= self.heap.len() {
            return;
        }
        self.header.heap_len = len as u32 + 1;
        self.set_heap(len, key);
        self.sift_up(len);
    }

    pub(super) fn heap_remove(&mut self, pos: u32) {
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

    pub(super) fn sift(&mut self, pos: u32) {
        if (pos as usize) < self.heap_len() {
            let at = self.sift_up(pos as usize);
            self.sift_down(at);
        }
    }

    pub(super) fn sift_up(&mut self, mut at: usize) -> usize {
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

    pub(super) fn sift_down(&mut self, mut at: usize) {
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
}
