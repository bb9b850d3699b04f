//! ngx-ollama-auth: the plain-Rust logic of an nginx module that puts authentication and per-key
//! policy in front of an Ollama server. No FFI here: everything is unit tested and fuzzed, and
//! the `ollama-auth` tool (src/bin) uses it without nginx. The nginx glue is the
//! `ngx-ollama-auth-module` package in `module/`.
//!
//! - the credential: `credentials` (the Authorization header), `hashes` (password hashes),
//!   `cache` (credentials already verified, by keyed digest), `challenges` (a 401's
//!   `WWW-Authenticate` values for a realm);
//! - the files: `lines` (the line syntax both share), `keys`, `htpasswd`, `options` (what an
//!   entry may carry), `watch` (one change-watching mechanism for both);
//! - the policy: `endpoints` (the one table of Ollama's routes: scope, model members,
//!   listings, body extras, usage shape, caps and estimate), `scopes` (a key's scopes), `policy`
//!   (a request judged against the table: scopes, body models, cloud models), `judge` (the
//!   verdict on an admitted request, its body and its limits), `listing` (model listings cut
//!   down), `models` (Ollama's model names and patterns), `json` (Go-compatible JSON member
//!   scanning, and the one JSON string escaper), `bytescan` (the byte search `json` and `usage`
//!   share, the library's only `unsafe`), `form` (a multipart form's field, for
//!   transcriptions), `compressed` (zstd request bodies);
//! - usage and limits: `usage` (token counts and the model from Ollama's answers, streamed, in
//!   bounded memory; the `/v1` include_usage rewrite), `metrics` (the counts a zone keeps and
//!   their Prometheus text exposition), `refusal` (why the gate answered itself: every reason, and the refusal),
//!   `limits` (per-key sliding windows, in-flight counts, rate-limit headers and the state
//!   file, as fixed-size data for a shared zone), `fnv` (the state file's checksum),
//!   `state_file` (that file on disk: atomic, owner only), `estimate` (a request's tokens by the
//!   gate's own rule, reserved at admission and charged when Ollama's counts never arrive),
//!   `queue` (the fair queue's scheduler);
//! - caps on what one request may ask (`num_ctx`, answer lengths, `keep_alive`) and the body
//!   rewrite that enforces them: `caps`;
//! - the gate's own error answers in each API's shape: `errors`;
//! - several Ollama servers behind one gate: `fleet` (the request's model, poll answers, the
//!   choice of a member).

pub mod bytescan;
pub mod cache;
pub mod caps;
pub mod challenges;
pub mod compressed;
pub mod credentials;
pub mod endpoints;
pub mod errors;
pub mod estimate;
pub mod fleet;
pub mod fnv;
pub mod form;
pub mod hashes;
pub mod htpasswd;
pub mod json;
pub mod judge;
pub mod keys;
pub mod limits;
pub mod lines;
pub mod listing;
pub mod metrics;
pub mod models;
pub mod options;
pub mod policy;
pub mod queue;
pub mod refusal;
pub mod scopes;
pub mod state_file;
pub mod usage;
pub mod watch;

/// `n` in decimal digits, written at the end of `digits` (a `u64` has at most 20): for the
/// numbers of headers and of the exposition, without formatting machinery or allocation.
pub(crate) fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[at..]
}
