//! The fair queue in front of the GPU: `ollama_auth_queue <zone> capacity=<n> [timeout=<time>]
//! [max_waiting=<n>]`. At most `capacity` inference requests of the locations that name the
//! same zone, capacity and bound are in flight to Ollama at once, across all workers; the rest
//! wait in the gate, without a worker or an upstream connection, and are dispatched by slot
//! time over `share=` (the scheduler itself is plain Rust: `ngx_ollama_auth::queue`).
//!
//! - `directive`: `ollama_auth_queue`;
//! - `store`: the queue's state in the zone (one block per queue, under the zone's lock);
//! - `ticket`: a request's place in a queue, left when its answer ends or the request does;
//! - `waiters`: this worker's waiting requests and the timer that looks for their grants;
//! - `wait`: entering the queue in the access phase, waiting (`NGX_AGAIN`), and resuming.

pub mod directive;
pub mod store;
pub mod ticket;
pub mod wait;
mod waiters;
