use super::data::*;
use super::index::ORDER_CALLS;
use super::*;

const W1: u32 = 101; // worker pids
const W2: u32 = 202;

fn who(hash: u64) -> Who<'static> {
    Who { hash, share: 1, max_queue: DEFAULT_KEY_QUEUE, label: b"k" }
}

fn who_share(hash: u64, share: u32) -> Who<'static> {
    Who { hash, share, max_queue: 10_000, label: b"k" }
}

fn dispatched(arrival: Result<Arrival, Refused>) -> TicketRef {
    match arrival {
        Ok(Arrival::Dispatched(ticket)) => ticket,
        other => panic!("not dispatched: {other:?}"),
    }
}

fn waiting(arrival: Result<Arrival, Refused>) -> TicketRef {
    match arrival {
        Ok(Arrival::Waiting(ticket)) => ticket,
        other => panic!("not waiting: {other:?}"),
    }
}

fn grants(queue: &mut Queue, owner: u32) -> Vec<TicketRef> {
    let mut taken = Vec::new();
    queue.take_grants(owner, |ticket| taken.push(ticket));
    taken
}

#[test]
fn work_conserving_one_key_gets_every_slot() {
    let mut store = QueueStore::new(3, 100);
    let mut q = store.queue();
    let running: Vec<TicketRef> = (0..3).map(|i| dispatched(q.arrive(&who(1), W1, i))).collect();
    assert_eq!(q.in_flight(), 3);
    assert_eq!(q.waiting(), 0);
    let fourth = waiting(q.arrive(&who(1), W1, 10));
    assert_eq!(q.state(fourth), Some(State::Waiting));
    q.check().unwrap();
    assert_eq!(q.end(running[0], 1_000), Ended::Released { slot_ms: 1_000 });
    // The slot went to the waiting request at once: nobody waits while a slot is free.
    assert_eq!(q.in_flight(), 3);
    assert_eq!(q.waiting(), 0);
    assert_eq!(q.state(fourth), Some(State::Granted));
    assert!(q.has_grants_for(W1));
    assert!(!q.has_grants_for(W2));
    assert!(grants(&mut q, W2).is_empty());
    assert_eq!(grants(&mut q, W1), [fourth]);
    assert_eq!(q.state(fourth), Some(State::Running));
    assert_eq!(q.waited_ms(fourth), 990);
    q.check().unwrap();
    for ticket in running[1..].iter().chain([&fourth]) {
        assert!(matches!(q.end(*ticket, 2_000), Ended::Released { .. }));
    }
    assert_eq!((q.in_flight(), q.waiting()), (0, 0));
    assert_eq!(q.end(fourth, 3_000), Ended::Unknown, "a ticket ends once");
    q.check().unwrap();
}

#[test]
fn first_in_first_out_within_a_key() {
    let mut store = QueueStore::new(1, 100);
    let mut q = store.queue();
    let mut current = dispatched(q.arrive(&who(7), W1, 0));
    let queued: Vec<TicketRef> =
        (1..=10).map(|i| waiting(q.arrive(&who(7), if i % 2 == 0 { W1 } else { W2 }, i))).collect();
    for (i, expected) in queued.iter().enumerate() {
        q.end(current, 100 * (i as u64 + 1));
        let granted = [grants(&mut q, W1), grants(&mut q, W2)].concat();
        assert_eq!(granted, [*expected]);
        current = granted[0];
        q.check().unwrap();
    }
}

#[test]
fn a_newcomer_behind_a_deep_backlog_goes_next() {
    let mut store = QueueStore::new(2, 1_000);
    let mut q = store.queue();
    let a = who(0xA);
    let running: Vec<TicketRef> = (0..2).map(|i| dispatched(q.arrive(&a, W1, i))).collect();
    let backlog: Vec<TicketRef> = (0..18).map(|i| waiting(q.arrive(&a, W1, 10 + i))).collect();
    let b = waiting(q.arrive(&who(0xB), W2, 200));
    q.end(running[0], 1_000);
    assert_eq!(grants(&mut q, W2), [b], "B starts on the next free slot");
    assert_eq!(grants(&mut q, W1), []);
    q.end(running[1], 1_100);
    assert_eq!(grants(&mut q, W1), [backlog[0]]);
    q.check().unwrap();
}

/// A discrete-event run: each key keeps `depth` requests queued, sending the next as one ends,
/// and each request holds its slot for its key's `slot_ms`; answers the slot time each key got.
fn saturate(capacity: u32, keys: &[(u64, u32, u64)], depth: usize, run_ms: u64) -> Vec<u64> {
    let mut store = QueueStore::new(capacity, 10_000);
    let mut q = store.queue();
    let mut used = vec![0u64; keys.len()];
    let mut whose = std::collections::HashMap::new(); // ticket -> key
    let mut running: Vec<(u64, TicketRef)> = Vec::new(); // (ends at, ticket)
    let mut now = 0;
    for key in (0..depth).flat_map(|_| 0..keys.len()) {
        let (hash, share, slot_ms) = keys[key];
        match q.arrive(&who_share(hash, share), W1, now) {
            Ok(Arrival::Dispatched(ticket)) => {
                whose.insert(ticket.seq, key);
                running.push((now + slot_ms, ticket));
            }
            Ok(Arrival::Waiting(ticket)) => drop(whose.insert(ticket.seq, key)),
            Err(refused) => panic!("{refused:?}"),
        }
    }
    while now < run_ms {
        running.sort_by_key(|r| r.0);
        let (ends, ticket) = running.remove(0);
        now = ends;
        let Ended::Released { slot_ms } = q.end(ticket, now) else { panic!("not running") };
        let key = whose[&ticket.seq];
        used[key] += slot_ms;
        for granted in grants(&mut q, W1) {
            running.push((now + keys[whose[&granted.seq]].2, granted));
        }
        // The client sends its next request.
        let (hash, share, slot_ms) = keys[key];
        match q.arrive(&who_share(hash, share), W1, now) {
            Ok(Arrival::Dispatched(ticket) | Arrival::Waiting(ticket)) => {
                whose.insert(ticket.seq, key);
                if q.state(ticket) == Some(State::Running) {
                    running.push((now + slot_ms, ticket));
                }
            }
            Err(refused) => panic!("{refused:?}"),
        }
        assert!(running.len() as u32 <= capacity);
        q.check().unwrap();
    }
    used
}

#[test]
fn shares_three_to_one_get_three_times_the_slot_time() {
    let used = saturate(2, &[(1, 3, 1_000), (2, 1, 1_000)], 20, 400_000);
    let ratio = used[0] as f64 / used[1] as f64;
    assert!((2.9..3.1).contains(&ratio), "{used:?}: {ratio}");
    // Longer answers do not buy more: slot time, not request count, is shared.
    let used = saturate(2, &[(1, 3, 700), (2, 1, 2_300)], 20, 400_000);
    let ratio = used[0] as f64 / used[1] as f64;
    assert!((2.8..3.2).contains(&ratio), "{used:?}: {ratio}");
}

#[test]
fn equal_shares_split_slot_time_evenly_whatever_the_answer_lengths() {
    let used = saturate(4, &[(1, 1, 3_000), (2, 1, 1_000), (3, 1, 500)], 10, 300_000);
    let least = *used.iter().min().unwrap() as f64;
    let most = *used.iter().max().unwrap() as f64;
    assert!(most / least < 1.1, "{used:?}");
}

#[test]
fn idle_time_banks_no_credit() {
    let mut store = QueueStore::new(1, 1_000);
    let mut q = store.queue();
    // A alone for a long time: 100 requests of 1 s.
    let mut now = 0;
    for _ in 0..100 {
        let ticket = dispatched(q.arrive(&who(0xA), W1, now));
        now += 1_000;
        q.end(ticket, now);
    }
    // Now A and B both saturate: B must not get the next 100 slots to "catch up".
    let mut current = dispatched(q.arrive(&who(0xA), W1, now));
    let mut queued = Vec::new();
    for _ in 0..10 {
        queued.push((0xA, waiting(q.arrive(&who(0xA), W1, now))));
        queued.push((0xB, waiting(q.arrive(&who(0xB), W2, now))));
    }
    let mut order = Vec::new();
    for _ in 0..10 {
        now += 1_000;
        q.end(current, now);
        current = [grants(&mut q, W1), grants(&mut q, W2)].concat()[0];
        order.push(queued.iter().find(|(_, t)| *t == current).unwrap().0);
    }
    let b_count = order.iter().filter(|&&k| k == 0xB).count();
    assert!((4..=6).contains(&b_count), "{order:x?}");
}

#[test]
fn bounds_per_key_and_for_the_queue() {
    let mut store = QueueStore::new(1, 5);
    let mut q = store.queue();
    let small = Who { hash: 1, share: 1, max_queue: 2, label: b"small" };
    dispatched(q.arrive(&small, W1, 0));
    waiting(q.arrive(&small, W1, 0));
    waiting(q.arrive(&small, W1, 0));
    assert_eq!(q.arrive(&small, W1, 0), Err(Refused::KeyQueueFull));
    let none = Who { hash: 9, share: 1, max_queue: 0, label: b"never waits" };
    assert_eq!(q.arrive(&none, W1, 0), Err(Refused::KeyQueueFull));
    for _ in 0..3 {
        waiting(q.arrive(&who(2), W1, 0));
    }
    assert_eq!(q.arrive(&who(3), W1, 0), Err(Refused::QueueFull));
    assert_eq!(q.waiting(), 5);
    q.check().unwrap();
    // A refused key keeps no room.
    let mut labels = Vec::new();
    q.each_active_key(|label, waiting, running| labels.push((label.to_vec(), waiting, running)));
    labels.sort();
    assert_eq!(labels, [(b"k".to_vec(), 3, 0), (b"small".to_vec(), 2, 1)]);
}

#[test]
fn a_request_that_leaves_while_waiting_is_never_dispatched() {
    let mut store = QueueStore::new(1, 100);
    let mut q = store.queue();
    let first = dispatched(q.arrive(&who(1), W1, 0));
    let gone = waiting(q.arrive(&who(1), W1, 10));
    let next = waiting(q.arrive(&who(2), W2, 20));
    assert_eq!(q.end(gone, 50), Ended::LeftQueue { waited_ms: 40 });
    assert_eq!(q.state(gone), None);
    q.check().unwrap();
    q.end(first, 100);
    assert_eq!(grants(&mut q, W1), []);
    assert_eq!(grants(&mut q, W2), [next]);
    // Key 1 was charged only for what it ran.
    assert_eq!(q.waiting(), 0);
    q.check().unwrap();
}

#[test]
fn a_grant_not_taken_yet_still_passes_its_slot_on() {
    let mut store = QueueStore::new(1, 100);
    let mut q = store.queue();
    let first = dispatched(q.arrive(&who(1), W1, 0));
    let second = waiting(q.arrive(&who(1), W2, 0));
    let third = waiting(q.arrive(&who(1), W1, 0));
    q.end(first, 100);
    assert_eq!(q.state(second), Some(State::Granted));
    // Its client left before its worker took the grant: the slot goes on to the third.
    assert_eq!(q.end(second, 150), Ended::Released { slot_ms: 50 });
    assert_eq!(q.state(third), Some(State::Granted));
    assert_eq!(grants(&mut q, W2), []);
    assert_eq!(grants(&mut q, W1), [third]);
    q.check().unwrap();
}

#[test]
fn a_dead_workers_tickets_are_swept() {
    let mut store = QueueStore::new(2, 100);
    let mut q = store.queue();
    dispatched(q.arrive(&who(1), W1, 0));
    dispatched(q.arrive(&who(1), W2, 0));
    waiting(q.arrive(&who(2), W2, 0));
    let survivor = waiting(q.arrive(&who(3), W1, 0));
    assert_eq!(q.sweep(|owner| owner != W2, 500), 2);
    assert_eq!(q.in_flight(), 2);
    assert_eq!(q.waiting(), 0);
    assert_eq!(grants(&mut q, W1), [survivor]);
    q.check().unwrap();
    assert_eq!(q.sweep(|_| false, 600), 2);
    assert_eq!((q.in_flight(), q.waiting()), (0, 0));
    q.check().unwrap();
}

#[test]
fn idle_keys_give_their_room_to_new_ones() {
    let mut store = QueueStore::new(1, 3); // four key slots
    let mut q = store.queue();
    for hash in 0..1_000u64 {
        let ticket = dispatched(q.arrive(&who(hash.wrapping_mul(0x9e37_79b9_7f4a_7c15)), W1, hash));
        q.end(ticket, hash + 1);
        q.check().unwrap();
    }
    // With every key slot busy, a new key is refused (the queue is full), not a panic.
    let mut store = QueueStore::new(1, 3);
    let mut q = store.queue();
    dispatched(q.arrive(&who(1), W1, 0));
    for hash in 2..5 {
        waiting(q.arrive(&who(hash), W1, 0));
    }
    assert_eq!(q.arrive(&who(99), W1, 0), Err(Refused::QueueFull));
    q.check().unwrap();
}

#[test]
fn colliding_hashes_probe_and_delete_cleanly() {
    let mut store = QueueStore::new(1, 7); // 8 keys, 16 index cells
    let mut q = store.queue();
    // Hashes with the same home cell, added and evicted in turns.
    for round in 0..50u64 {
        let hash = (round << 32) | 5;
        let ticket = dispatched(q.arrive(&who(hash), W1, round));
        q.end(ticket, round + 1);
        q.check().unwrap();
    }
}

thread_local! {
    static SEED: std::cell::Cell<u64> = const { std::cell::Cell::new(0x1234_5678) };
}

fn random() -> u64 {
    SEED.with(|seed| {
        let mut x = seed.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seed.set(x);
        x
    })
}

/// Random arrivals, ends, grants and sweeps: every invariant holds after each step.
#[test]
fn random_operations_keep_every_invariant() {
    for (capacity, max_waiting) in [(1, 5), (2, 20), (4, 50), (3, 1)] {
        let mut store = QueueStore::new(capacity, max_waiting);
        let mut q = store.queue();
        let mut live: Vec<TicketRef> = Vec::new();
        let mut now = 0;
        for _ in 0..20_000 {
            now += random() % 50;
            match random() % 10 {
                0..=4 => {
                    let hash = random() % 12;
                    let owner = [W1, W2][(random() % 2) as usize];
                    let who =
                        Who { hash, share: 1 + (random() % 4) as u32, max_queue: (random() % 6) as u32, label: b"r" };
                    if let Ok(Arrival::Dispatched(t) | Arrival::Waiting(t)) = q.arrive(&who, owner, now) {
                        live.push(t);
                    }
                }
                5..=7 if !live.is_empty() => {
                    let ticket = live.swap_remove((random() as usize) % live.len());
                    assert_ne!(q.end(ticket, now), Ended::Unknown);
                }
                8 => {
                    let _ = grants(&mut q, W1);
                }
                _ if random().is_multiple_of(50) => {
                    q.sweep(|owner| owner != W2, now);
                    live.retain(|t| q.state(*t).is_some());
                }
                _ => {}
            }
            q.check().unwrap_or_else(|e| panic!("{capacity}/{max_waiting}: {e}"));
        }
    }
}

/// A worker that died mid-change may leave any state: the queue never panics or hangs on it.
#[test]
fn scrambled_state_never_panics() {
    for round in 0..300 {
        let mut store = QueueStore::new(1 + round % 3, 6);
        let mut live = Vec::new();
        for step in 0..300u64 {
            if step % 17 == 0 {
                store.scramble(random);
            }
            let mut q = store.queue();
            match random() % 4 {
                0 | 1 => {
                    if let Ok(Arrival::Dispatched(t) | Arrival::Waiting(t)) = q.arrive(&who(random() % 5), W1, step) {
                        live.push(t);
                    }
                }
                2 if !live.is_empty() => {
                    let ticket = live.swap_remove((random() as usize) % live.len());
                    q.end(ticket, step);
                }
                _ => {
                    let _ = grants(&mut q, W1);
                    q.sweep(|_| !random().is_multiple_of(3), step);
                }
            }
            let _ = q.check();
        }
        // A full sweep gives everything back whatever happened.
        let mut q = store.queue();
        q.sweep(|_| false, 1_000);
        assert_eq!(q.waiting(), 0);
    }
}

/// 10,000 requests waiting across 1,000 keys: each dispatch costs O(log n) heap steps.
#[test]
fn dispatch_is_logarithmic() {
    let mut store = QueueStore::new(10, 10_000);
    let mut q = store.queue();
    let mut running: Vec<TicketRef> = (0..10).map(|i| dispatched(q.arrive(&who(i), W1, 0))).collect();
    for i in 0..10_000u64 {
        let key = 1_000 + (i % 1_000) * 7919;
        waiting(q.arrive(&Who { hash: key, share: 1, max_queue: 100, label: b"x" }, W1, i));
    }
    assert_eq!(q.waiting(), 10_000);
    let before = ORDER_CALLS.with(std::cell::Cell::get);
    for now in 0..1_000u64 {
        let ticket = running.remove(0);
        q.end(ticket, 20_000 + now);
        running.extend(grants(&mut q, W1));
    }
    let per_dispatch = (ORDER_CALLS.with(std::cell::Cell::get) - before) / 1_000;
    // A heap of 1,000 keys is 10 levels deep; a sift compares at most 3 per level, twice.
    assert!(per_dispatch <= 80, "{per_dispatch} comparisons per dispatch");
    assert_eq!(q.waiting(), 9_000);
    q.check().unwrap();
}

#[test]
fn key_hashes_are_stable_and_distinct() {
    assert_eq!(key_hash(b"key:abc"), key_hash(b"key:abc"));
    assert_ne!(key_hash(b"key:abc"), key_hash(b"user:abc"));
    // Fixed keys: the same in every worker and across restarts.
    assert_eq!(key_hash(b""), key_hash(b""));
}

#[test]
fn sizes_fit_the_bounds() {
    let sizes = Sizes::new(4, 1_000);
    assert_eq!(sizes, Sizes { tickets: 1_004, keys: 1_004, index: 2_048 });
    assert!(sizes.bytes() < 256 * 1024, "{}", sizes.bytes());
    let store = QueueStore::new(0, 0);
    assert_eq!(store.tickets.len(), 1);
    let mut store = QueueStore::new(0, 0);
    let mut q = store.queue();
    assert_eq!(q.arrive(&who(1), W1, 0), Err(Refused::QueueFull), "capacity 0 admits nobody");
    assert!(q.is_initialized(0, 0));
    assert!(!q.is_initialized(1, 0));
}

#[test]
fn a_repair_keeps_every_request_in_its_place() {
    let mut store = QueueStore::new(1, 10);
    let mut q = store.queue();
    let first = dispatched(q.arrive(&who(1), W1, 0));
    let granted = waiting(q.arrive(&who(2), W2, 1));
    let second = waiting(q.arrive(&who(3), W1, 2));
    let third = waiting(q.arrive(&who(3), W1, 3));
    q.end(first, 10);
    assert_eq!(q.state(granted), Some(State::Granted));
    // A worker died in the middle of a change: the counts disagree with the tickets.
    store.header.in_flight = 7;
    store.header.waiting = 0;
    let mut q = store.queue();
    assert!(q.check().is_err());
    assert_eq!(q.sweep(|_| true, 20), 0);
    q.check().unwrap();
    assert_eq!((q.in_flight(), q.waiting()), (1, 2));
    assert_eq!(grants(&mut q, W2), [granted], "the grant is still W2's to take");
    q.end(granted, 30);
    assert_eq!(grants(&mut q, W1), [second], "first in, first out within the key");
    q.end(second, 40);
    assert_eq!(grants(&mut q, W1), [third]);
}
