//! The shared-memory zone (`ollama_auth_zone <name> <size> [state=<path>]`): the usage counters
//! and the limit counters of all workers, as `limit_req_zone` keeps its state. The zone is a
//! slab pool; its data (two red-black trees and a few counts) lives in the pool and is read or
//! changed only with the pool's mutex held, the lock nginx itself frees if a worker dies holding
//! it. The counts themselves are plain Rust (`metrics`, `limits`).
//!
//! A reload that keeps the zone's name and size keeps its data. With `state=`, the limit
//! counters are written to a file at least every 10 s and when a worker exits, and read back
//! when the zone is made.
//!
//! - `slab`: the zone's slab pool as an allocator, used only with its mutex held;
//! - `data`: what the zone holds, and every count read or changed under its lock;
//! - `directive`: `ollama_auth_zone`, and the zone a directive names;
//! - `state_file`: reading and writing the limit counters' file;
//! - `state_timer`: writing it every few seconds, and at a worker's exit.

pub mod data;
pub mod directive;
mod slab;
mod state_file;
pub mod state_timer;
