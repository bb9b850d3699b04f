//! The next filters in nginx's chains, where this module's own pass what they are done with.

use ngx::ffi::{
    ngx_chain_t, ngx_http_output_body_filter_pt, ngx_http_output_header_filter_pt, ngx_http_request_t,
    ngx_http_top_body_filter, ngx_http_top_header_filter, ngx_int_t,
};

/// The next filters in nginx's chains, saved when this module installs its own.
static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;
static mut NEXT_BODY_FILTER: ngx_http_output_body_filter_pt = None;

/// Puts `header` and `body` in front of nginx's filter chains, keeping the filters they push back.
///
/// # Safety
/// Only while a configuration is loaded, in postconfiguration.
pub unsafe fn link_in_front(
    header: unsafe extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t,
    body: unsafe extern "C" fn(*mut ngx_http_request_t, *mut ngx_chain_t) -> ngx_int_t,
) {
    // SAFETY: filter chains are rebuilt single-threaded during configuration, before any
    // request; this is the standard way an nginx filter links itself in front of the chain.
    unsafe {
        NEXT_HEADER_FILTER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(header);
        NEXT_BODY_FILTER = ngx_http_top_body_filter;
        ngx_http_top_body_filter = Some(body);
    }
}

pub fn next_header(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: written once per configuration load, before any request, and only read after;
    // the next filter takes the request nginx gave this one.
    unsafe { NEXT_HEADER_FILTER.expect("header filter chain")(r) }
}

pub fn next_body(r: *mut ngx_http_request_t, chain: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: as in next_header; `chain` is what nginx gave this filter, NULL, or a valid chain
    // of this module's.
    unsafe { NEXT_BODY_FILTER.expect("body filter chain")(r, chain) }
}
