//! Header and body filters that turn this module's own 401 into a challenge plus a JSON body in
//! Ollama's error shape, and leave every other response alone.
//!
//! A response is this module's 401 only if the access handler refused the request and nginx
//! itself is answering 401 for it (`r->err_status`, set by nginx's special-response path). With
//! `satisfy any`, when `allow` admits a request the module refused, an upstream's own 401 has no
//! `err_status` and passes unchanged.

use std::mem::size_of;
use std::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_chain_t, ngx_conf_t, ngx_http_output_body_filter_pt,
    ngx_http_output_header_filter_pt, ngx_http_request_t, ngx_http_top_body_filter, ngx_http_top_header_filter,
    ngx_int_t, ngx_list_push, ngx_pcalloc, ngx_str_t, ngx_table_elt_t, NGX_HTTP_UNAUTHORIZED,
};
use ngx::http::{HttpModuleLocationConf, Request};
use ngx::ngx_log_debug_http;

use super::conf::{Challenges, LocConf};
use super::ctx::{ctx_mut, CHALLENGE_BASIC, CHALLENGE_BEARER};
use super::Module;

const JSON_CONTENT_TYPE: &[u8] = b"application/json; charset=utf-8";

fn json_body(challenges: u8) -> &'static [u8] {
    match challenges {
        CHALLENGE_BEARER => b"{\"error\":\"unauthorized: a valid API key is required (Authorization: Bearer <key>)\"}\n",
        CHALLENGE_BASIC => b"{\"error\":\"unauthorized: a valid user name and password are required\"}\n",
        _ => b"{\"error\":\"unauthorized: a valid API key (Authorization: Bearer <key>) or user name and password are required\"}\n",
    }
}

/// The next filters in nginx's chains, saved when this module installs its own.
static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;
static mut NEXT_BODY_FILTER: ngx_http_output_body_filter_pt = None;

/// Links the two filters in front of the chains. Called once per configuration load.
///
/// # Safety
/// `_cf` must be the configuration being loaded, in postconfiguration.
pub unsafe fn install(_cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: filter chains are rebuilt single-threaded during configuration, before any
    // request; this is the standard way an nginx filter links itself in front of the chain.
    unsafe {
        NEXT_HEADER_FILTER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(header_filter);
        NEXT_BODY_FILTER = ngx_http_top_body_filter;
        ngx_http_top_body_filter = Some(body_filter);
    }
    Status::NGX_OK.0
}

fn next_header_filter() -> unsafe extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: written once per configuration load, before any request, and only read after.
    unsafe { NEXT_HEADER_FILTER }.expect("header filter chain")
}

fn next_body_filter() -> unsafe extern "C" fn(*mut ngx_http_request_t, *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: as in next_header_filter.
    unsafe { NEXT_BODY_FILTER }.expect("body filter chain")
}

/// Appends one `WWW-Authenticate` header with a value that lives as long as the configuration.
fn add_challenge(request: &mut Request, value: &'static [u8]) -> Option<()> {
    let out = &mut request.as_mut().headers_out;
    // SAFETY: headers_out.headers is the response's header list, initialised by nginx;
    // ngx_list_push returns room for one element or NULL.
    let header = unsafe { ngx_list_push(&mut out.headers) } as *mut ngx_table_elt_t;
    if header.is_null() {
        return None;
    }
    // SAFETY: header points at fresh, writable list storage for one ngx_table_elt_t; nginx only
    // reads header values, so the configuration's bytes can stand in for a pool copy.
    unsafe {
        (*header).hash = 1;
        (*header).key = ngx_str_t { len: 16, data: b"WWW-Authenticate".as_ptr().cast_mut() };
        (*header).value = ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() };
        (*header).lowcase_key = ptr::null_mut();
        #[cfg(ngx_linked_headers)]
        {
            (*header).next = ptr::null_mut();
            // Keep nginx's view of the challenges complete: the first one, then a linked list.
            let mut link = &mut out.www_authenticate;
            while !link.is_null() {
                link = &mut (**link).next;
            }
            *link = header;
        }
        #[cfg(not(ngx_linked_headers))]
        if out.www_authenticate.is_null() {
            out.www_authenticate = header;
        }
    }
    Some(())
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    let next = next_header_filter();
    // SAFETY: nginx calls header filters with a valid request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let ours = {
        let status = request.as_ref().headers_out.status;
        let nginx_answers_401 = request.as_ref().err_status == NGX_HTTP_UNAUTHORIZED as usize;
        match ctx_mut(request) {
            Some(ctx) if ctx.refused && nginx_answers_401 && status == NGX_HTTP_UNAUTHORIZED as usize => Some(ctx.challenges),
            _ => None,
        }
    };
    let Some(challenges) = ours else {
        // SAFETY: the next filter takes the request nginx gave this one.
        return unsafe { next(r) };
    };
    let conf: Option<&'static LocConf> = Module::location_conf(request);
    let values: &'static Challenges = conf.map_or(Challenges::default_realm(), LocConf::challenges);
    ngx_log_debug_http!(request, "ollama auth: challenging the 401");
    for (bit, value) in [(CHALLENGE_BASIC, &values.basic), (CHALLENGE_BEARER, &values.bearer)] {
        if challenges & bit != 0 && add_challenge(request, value).is_none() {
            return Status::NGX_ERROR.0;
        }
    }
    if !request.header_only() {
        let out = &mut request.as_mut().headers_out;
        out.content_type = ngx_str_t { len: JSON_CONTENT_TYPE.len(), data: JSON_CONTENT_TYPE.as_ptr().cast_mut() };
        out.content_type_len = JSON_CONTENT_TYPE.len();
        out.content_type_lowcase = ptr::null_mut();
        out.content_length_n = json_body(challenges).len() as i64;
        if !out.content_length.is_null() {
            // SAFETY: a non-null content_length points at an element of the response header list.
            unsafe { (*out.content_length).hash = 0 };
            out.content_length = ptr::null_mut();
        }
        if let Some(ctx) = ctx_mut(request) {
            ctx.replace_body = true;
        }
    }
    // SAFETY: as above.
    unsafe { next(r) }
}

/// Marks a chain as sent so its producer can reuse or free its buffers.
///
/// # Safety
/// `chain` must be NULL or a valid chain of valid buffers.
unsafe fn consume(mut chain: *mut ngx_chain_t) {
    while !chain.is_null() {
        // SAFETY: the caller guarantees every link and buffer of the chain is valid.
        unsafe {
            let buf = (*chain).buf;
            if !buf.is_null() {
                (*buf).pos = (*buf).last;
                (*buf).file_pos = (*buf).file_last;
            }
            chain = (*chain).next;
        }
    }
}

/// A one-buffer chain holding a static body, from the request pool.
fn static_body_chain(request: &Request, body: &'static [u8]) -> Option<*mut ngx_chain_t> {
    let pool = request.as_ref().pool;
    // SAFETY: request-pool allocations live as long as the response; ngx_pcalloc returns zeroed
    // memory or NULL, and a zeroed ngx_buf_t is an empty buffer.
    let (buf, link) =
        unsafe { (ngx_pcalloc(pool, size_of::<ngx_buf_t>()) as *mut ngx_buf_t, ngx_alloc_chain_link(pool)) };
    if buf.is_null() || link.is_null() {
        return None;
    }
    // SAFETY: both were just allocated and are not shared. The body is static and only read by
    // later filters: the memory flag without "temporary" says it is read-only.
    unsafe {
        (*buf).pos = body.as_ptr().cast_mut();
        (*buf).last = (*buf).pos.add(body.len());
        (*buf).set_memory(1);
        (*buf).set_last_buf(u32::from(request.is_main()));
        (*buf).set_last_in_chain(1);
        (*link).buf = buf;
        (*link).next = ptr::null_mut();
    }
    Some(link)
}

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    let next = next_body_filter();
    // SAFETY: nginx calls body filters with a valid request and chain.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let (challenges, first_call) = match ctx_mut(request) {
        Some(ctx) if ctx.replace_body => {
            let first = !ctx.body_sent;
            ctx.body_sent = true;
            (ctx.challenges, first)
        }
        // SAFETY: the next filter takes what nginx gave this one.
        _ => return unsafe { next(r, input) },
    };
    // SAFETY: nginx hands body filters a valid chain (or NULL).
    unsafe { consume(input) };
    if !first_call {
        // Later calls (nginx's flush of what a partial write left buffered, with NULL) must
        // still reach the write filter, or the answer stalls until send_timeout.
        // SAFETY: NULL is what nginx itself passes to flush.
        return unsafe { next(r, ptr::null_mut()) };
    }
    let Some(chain) = static_body_chain(request, json_body(challenges)) else {
        return Status::NGX_ERROR.0;
    };
    // SAFETY: a valid chain from the request pool.
    unsafe { next(r, chain) }
}
