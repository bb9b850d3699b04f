//! The headers this module adds to answers it lets through: the `x-ratelimit-*` of a limited
//! key (and a 429's `Retry-After`), `x-ollama-clamped`, and the queue's wait (and a 503's
//! `Retry-After`).

use ngx::ffi::{NGX_HTTP_SERVICE_UNAVAILABLE, NGX_HTTP_TOO_MANY_REQUESTS};
use ngx::http::Request;

use super::headers::push_header_copy;
use crate::caps::CLAMPED_HEADER;
use crate::ctx::ctx_mut;

/// Adds the `x-ratelimit-*` headers of a limited key's answer, and a 429's `Retry-After`.
#[inline]
pub fn add_rate_headers(request: &mut Request) -> Option<()> {
    let status = request.as_ref().headers_out.status;
    let (rate, retry_after) = match ctx_mut(request) {
        Some(ctx) if !ctx.rate_sent => match ctx.rate {
            Some(rate) => {
                ctx.rate_sent = true;
                (rate, ctx.retry_after)
            }
            None => return Some(()),
        },
        _ => return Some(()),
    };
    let mut added = Some(());
    rate.each_header(|name, value| {
        if added.is_some() {
            added = push_header_copy(request, name, value);
        }
    });
    if let Some(seconds) = retry_after.filter(|_| status == NGX_HTTP_TOO_MANY_REQUESTS as usize) {
        push_header_copy(request, "Retry-After", seconds.to_string().as_bytes())?;
    }
    added
}

/// Names what the caps changed in the request (`x-ollama-clamped`), once.
#[inline]
pub fn add_clamped_header(request: &mut Request) -> Option<()> {
    let summary = match ctx_mut(request) {
        Some(ctx) if !ctx.clamped_sent && ctx.clamped.is_some() => {
            ctx.clamped_sent = true;
            ctx.clamped.clone()?
        }
        _ => return Some(()),
    };
    push_header_copy(request, CLAMPED_HEADER, summary.as_bytes())
}

/// The fair queue's headers: how long an answer waited for its slot, and a queue refusal's
/// `Retry-After`.
#[inline]
pub fn add_queue_headers(request: &mut Request) -> Option<()> {
    let status = request.as_ref().headers_out.status;
    let (wait, retry_after) = match ctx_mut(request).and_then(|ctx| ctx.queued.as_mut()) {
        Some(queued) if !queued.headers_sent => {
            queued.headers_sent = true;
            (queued.waited_ms.filter(|&ms| ms > 0).and_then(|_| queued.wait_text()), queued.retry_after)
        }
        _ => return Some(()),
    };
    if let Some(wait) = wait {
        push_header_copy(request, "x-ollama-queue-wait", format!("{wait}s").as_bytes())?;
    }
    if let Some(seconds) = retry_after.filter(|_| status == NGX_HTTP_SERVICE_UNAVAILABLE as usize) {
        push_header_copy(request, "Retry-After", seconds.to_string().as_bytes())?;
    }
    Some(())
}

/// All of them, on a main request's answer.
#[inline]
pub fn annotate(request: &mut Request) -> Option<()> {
    add_rate_headers(request)?;
    add_clamped_header(request)?;
    add_queue_headers(request)
}
