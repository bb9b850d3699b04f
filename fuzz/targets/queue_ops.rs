//! The fair queue under any sequence of arrivals, ends, grants, sweeps and corrupted state (a
//! worker that died mid-change): never a panic or a hang; without corruption every invariant
//! holds after each step, and a full sweep always empties it.
use ngx_ollama_auth::queue::{Arrival, QueueStore, Who};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&sizes, ops)) = data.split_first() else { return };
        let mut store = QueueStore::new(u32::from(sizes & 7), u32::from(sizes >> 3));
        let mut live = Vec::new();
        let mut scrambled = false;
        let mut now = 0u64;
        let mut bytes = ops.iter().copied();
        while let Some(op) = bytes.next() {
            let arg = bytes.next().unwrap_or(0);
            now += u64::from(arg & 15);
            let mut queue = store.queue();
            let owner = u32::from(arg >> 7);
            match op % 5 {
                0 | 1 => {
                    let who = Who {
                        hash: u64::from(arg % 9),
                        share: u32::from(op >> 4) + 1,
                        max_queue: u32::from(op >> 5),
                        label: &[arg],
                    };
                    if let Ok(Arrival::Dispatched(t) | Arrival::Waiting(t)) = queue.arrive(&who, owner, now) {
                        live.push(t);
                    }
                }
                2 if !live.is_empty() => {
                    let ticket = live.swap_remove(usize::from(arg) % live.len());
                    queue.end(ticket, now);
                }
                3 => queue.take_grants(owner, |_| {}),
                4 if op & 0x80 != 0 => {
                    let mut rest = bytes.clone().map(u64::from);
                    store.scramble(|| rest.next().unwrap_or(7));
                    scrambled = true;
                }
                _ => {
                    queue.sweep(|pid| pid != owner, now);
                    live.retain(|t| queue.state(*t).is_some());
                }
            }
            if !scrambled {
                if let Err(error) = store.queue().check() {
                    panic!("{error}");
                }
            }
        }
        let mut queue = store.queue();
        queue.sweep(|_| false, now);
        if !scrambled {
            assert_eq!((queue.waiting(), queue.in_flight()), (0, 0));
        }
    });
}
