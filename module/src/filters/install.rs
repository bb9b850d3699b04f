//! The two filters, linked in front of nginx's chains: each response is told its role here and
//! handed to the file that plays it; a response that is not this module's passes untouched.

use ngx::core::Status;
use ngx::ffi::{ngx_chain_t, ngx_conf_t, ngx_http_request_t, ngx_int_t, NGX_HTTP_OK, NGX_HTTP_UNAUTHORIZED};
use ngx::http::Request;

use super::next::{link_in_front, next_body, next_header};
use super::{annotations, counted, listing, refusal};
use crate::ctx::ctx_mut;

/// Links the two filters in front of the chains. Called once per configuration load.
///
/// # Safety
/// `_cf` must be the configuration being loaded, in postconfiguration.
pub unsafe fn install(_cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: the caller's promise.
    unsafe { link_in_front(header_filter, body_filter) };
    Status::NGX_OK.0
}

/// What this module does with a response.
enum Role {
    NotOurs,
    Refusal { challenges: u8, length: usize, unauthorized: bool },
    Listing,
}

fn role(request: &mut Request) -> Role {
    let status = request.as_ref().headers_out.status;
    let err_status = request.as_ref().err_status;
    let is_main = request.is_main();
    match ctx_mut(request) {
        Some(ctx) => match &ctx.refusal {
            Some(refusal) if refusal.status == status && refusal.status == err_status => Role::Refusal {
                challenges: ctx.challenges,
                length: refusal.body.len(),
                unauthorized: status == NGX_HTTP_UNAUTHORIZED as usize,
            },
            _ if ctx.listing.is_some() && status == NGX_HTTP_OK as usize && is_main => Role::Listing,
            _ => Role::NotOurs,
        },
        None => Role::NotOurs,
    }
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls header filters with a valid request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    if request.as_ref().err_status != 0 && refusal::adopt_nginx_error(request).is_none() {
        return Status::NGX_ERROR.0;
    }
    if ctx_mut(request).is_none() {
        return next_header(r); // the common case: nothing of this module's to do
    }
    if request.is_main() && annotations::annotate(request).is_none() {
        return Status::NGX_ERROR.0;
    }
    match role(request) {
        Role::NotOurs => {
            if request.is_main() {
                counted::start_scanning(request);
            }
            next_header(r)
        }
        Role::Refusal { challenges, length, unauthorized } => refusal::send_header(r, challenges, length, unauthorized),
        Role::Listing => listing::hold_header(r),
    }
}

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx calls body filters with a valid request and chain.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let is_main = request.is_main();
    let Some(ctx) = ctx_mut(request) else { return next_body(r, input) };
    if let Some(queued) = ctx.queued.as_mut().filter(|_| is_main) {
        // SAFETY: nginx hands body filters a valid chain (or NULL).
        unsafe { queued.release_at_last(input) };
    }
    if ctx.replace_body {
        return refusal::send_body(r, input);
    }
    if ctx.listing_held {
        return listing::gather_body(r, input);
    }
    let scanned = ctx.accounting.as_ref().is_some_and(|accounting| accounting.scanner.is_some());
    if scanned && is_main {
        return counted::account_body(r, input);
    }
    next_body(r, input)
}
