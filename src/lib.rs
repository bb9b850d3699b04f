//! ngx-ollama-auth: an nginx module that admits requests carrying a known Bearer key or Basic
//! credential, so nginx can stand in front of an Ollama server.
//!
//! The pure logic (no FFI, unit tested) lives in `credentials`, `lines`, `keys`, `hashes`,
//! `htpasswd`, `cache` and `watch`. The nginx glue is in `module`, behind the `module` feature;
//! it is left out of unit-test builds, whose binaries have no nginx to link against.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod cache;
pub mod credentials;
pub mod hashes;
pub mod htpasswd;
pub mod json;
pub mod keys;
pub mod lines;
pub mod models;
pub mod options;
pub mod policy;
pub mod watch;

#[cfg(all(feature = "module", not(test)))]
mod module;
