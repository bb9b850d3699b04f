//! Header and body filters for the responses this module owns, leaving every other one alone:
//! - its own refusals (401, 403, 400, 413, 429, 503): a JSON body in the shape the endpoint's
//!   clients read (`ngx_ollama_auth::errors`), and for a 401 the challenges. A response is such a refusal only if the access phase refused the request and
//!   nginx itself is answering with that status (`r->err_status`, set by nginx's
//!   special-response path): with `satisfy any`, when `allow` admits a request the module
//!   refused, an upstream's own 401 has no `err_status` and passes unchanged;
//! - model listings (`/api/tags`, `/api/ps`, `/v1/models`) answered to an entry limited to some
//!   models: cut down to those models. These are small JSON documents, not streams: the header
//!   is held until the whole body is in, so the new `Content-Length` is right;
//! - answers to counted requests (`accounting`): read for their model and token counts as each
//!   buffer passes, never held; a streamed `/v1` answer whose usage the gate asked for loses
//!   what asking added, event by event (a partial event waits for its end, nothing more);
//! - answers to limited keys: the `x-ratelimit-*` headers (and a 429's `Retry-After`).
//!
//! `install` links the two filters in and tells each response's role; the roles are in
//! `refusal`, `listing`, `counted` and `annotations`; `next` and `headers` are what they share.

mod annotations;
mod counted;
mod headers;
pub mod install;
mod listing;
mod next;
mod refusal;
