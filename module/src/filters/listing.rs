//! Model listings (`/api/tags`, `/api/ps`, `/v1/models`) answered to an entry limited to some
//! models, cut down to those models. These are small JSON documents, not streams: the header is
//! held until the whole body is in, so the new `Content-Length` is right.

use ngx::core::Status;
use ngx::ffi::{ngx_chain_t, ngx_http_request_t, ngx_int_t, NGX_HTTP_HEAD, NGX_LOG_ERR};
use ngx::http::Request;
use ngx::{ngx_log_debug_http, ngx_log_error};

use super::headers::set_content_length;
use super::next::{next_body, next_header};
use crate::buffers::{append_chain, consume, one_buffer_chain, ChainBytes};
use crate::ctx::ctx_mut;
use ngx_ollama_auth::policy::cut_listing;

/// The largest listing this module cuts down; a larger one fails closed.
const MAX_LISTING: usize = 16 << 20;

/// nginx's bit for a filter that holds data back (`r->buffered`, four bits). This one is the
/// image filter's (`NGX_HTTP_IMAGE_BUFFERED`): that filter has no business with Ollama's JSON.
const LISTING_BUFFERED: u32 = 0x08;

/// Tells nginx that the listing is held here, as the image and xslt filters do, so the request
/// is not taken for finished before its cut-down body is sent.
fn set_listing_buffered(request: &mut Request, held: bool) {
    let r = request.as_mut();
    let bits = r.buffered();
    r.set_buffered(if held { bits | LISTING_BUFFERED } else { bits & !LISTING_BUFFERED });
}

/// A listing's header: held (and the request marked as holding data) until its body is cut.
pub fn hold_header(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx's request, valid for this call.
    let request = unsafe { Request::from_ngx_http_request(r) };
    if !request.as_ref().headers_out.content_encoding.is_null() {
        // Compressed: it cannot be read here, and must not pass uncut.
        ngx_log_error!(NGX_LOG_ERR, request.log(), "model listing is compressed and cannot be filtered");
        return Status::NGX_ERROR.0;
    }
    set_content_length(request, None);
    // nginx marks a HEAD answer header-only further down the chain, in its own filter.
    if request.header_only() || request.as_ref().method == NGX_HTTP_HEAD as usize {
        return next_header(r);
    }
    if let Some(ctx) = ctx_mut(request) {
        ctx.listing_held = true;
    }
    set_listing_buffered(request, true);
    ngx_log_debug_http!(request, "ollama auth: holding the listing's header until its body is cut down");
    Status::NGX_OK.0
}

/// Gathers a held listing's body; at its last buffer, sends the header and the cut-down body.
pub fn gather_body(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx's request, valid for this call.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let Some(ctx) = ctx_mut(request) else { return Status::NGX_ERROR.0 };
    let mut gathered = std::mem::take(&mut ctx.listing_body);
    // SAFETY: nginx hands body filters a valid chain of valid buffers (or NULL).
    let read = unsafe { append_chain(input, &mut gathered, MAX_LISTING) };
    // SAFETY: as above; the bytes are copied, so the buffers can go back to their producer.
    unsafe { consume(input) };
    let last = match read {
        Ok(last) => last,
        Err(error) => {
            ngx_log_error!(NGX_LOG_ERR, request.log(), "model listing not filtered: {}", error);
            return Status::NGX_ERROR.0;
        }
    };
    if !last {
        if let Some(ctx) = ctx_mut(request) {
            ctx.listing_body = gathered;
        }
        return Status::NGX_OK.0;
    }
    let Some((listing, options)) = ctx_mut(request).and_then(|ctx| {
        ctx.listing_held = false;
        ctx.listing.take()
    }) else {
        return Status::NGX_ERROR.0;
    };
    set_listing_buffered(request, false);
    let cut = options.models.as_ref().and_then(|models| cut_listing(&gathered, listing, models));
    let Some(cut) = cut else {
        ngx_log_error!(NGX_LOG_ERR, request.log(), "model listing is not the JSON Ollama sends; not passed on");
        return Status::NGX_ERROR.0;
    };
    set_content_length(request, Some(cut.len()));
    let rc = next_header(r);
    if rc == Status::NGX_ERROR.0 || rc > Status::NGX_OK.0 || request.header_only() {
        return rc;
    }
    // SAFETY: the request pool outlives the answer.
    let Some(chain) = (unsafe { one_buffer_chain(request.as_ref().pool, ChainBytes::Copied(&cut), request.is_main()) })
    else {
        return Status::NGX_ERROR.0;
    };
    next_body(r, chain)
}
