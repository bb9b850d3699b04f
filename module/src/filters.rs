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

use std::borrow::Cow;
use std::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_chain_get_free_buf, ngx_chain_t, ngx_chain_update_chains, ngx_conf_t, ngx_http_err_page_t,
    ngx_http_output_body_filter_pt, ngx_http_output_header_filter_pt, ngx_http_request_t, ngx_http_top_body_filter,
    ngx_http_top_header_filter, ngx_int_t, ngx_list_push, ngx_palloc, ngx_str_t, ngx_table_elt_t, NGX_HTTP_HEAD,
    NGX_HTTP_MAX_URI_CHANGES, NGX_HTTP_OK, NGX_HTTP_SERVICE_UNAVAILABLE, NGX_HTTP_TOO_MANY_REQUESTS,
    NGX_HTTP_UNAUTHORIZED, NGX_LOG_ERR, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule, Request};
use ngx::{ngx_log_debug_http, ngx_log_error};

use super::accounting::path;
use super::buffers::{append_chain, for_each_piece, one_buffer_chain, ChainBytes};
use super::caps::CLAMPED_HEADER;
use super::conf::{Challenges, LocConf};
use super::ctx::{
    ctx_mut, ctx_or_new, error_shape, Accounting, Refusal, RequestCtx, CHALLENGE_BASIC, CHALLENGE_BEARER,
};
use super::module::{module_tag, Module};
use ngx_ollama_auth::errors::{answers_as_json, default_retry_after, error_body, nginx_error_text, NginxResponse};
use ngx_ollama_auth::policy::cut_listing;
use ngx_ollama_auth::usage::{AnswerKind, Framing, UsageScanner, UsageStripper};

const JSON_CONTENT_TYPE: &[u8] = b"application/json; charset=utf-8";

/// The largest listing this module cuts down; a larger one fails closed.
const MAX_LISTING: usize = 16 << 20;

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

fn next_header(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: written once per configuration load, before any request, and only read after;
    // the next filter takes the request nginx gave this one.
    unsafe { NEXT_HEADER_FILTER.expect("header filter chain")(r) }
}

fn next_body(r: *mut ngx_http_request_t, chain: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: as in next_header; `chain` is what nginx gave this filter, NULL, or a valid chain
    // of this module's.
    unsafe { NEXT_BODY_FILTER.expect("body filter chain")(r, chain) }
}

/// Appends a response header. `value` must live as long as the response (static or pool bytes).
fn push_header(request: &mut Request, name: &'static str, value: &[u8]) -> Option<*mut ngx_table_elt_t> {
    let out = &mut request.as_mut().headers_out;
    // SAFETY: headers_out.headers is the response's header list, initialised by nginx;
    // ngx_list_push returns room for one element or NULL.
    let header = unsafe { ngx_list_push(&mut out.headers) } as *mut ngx_table_elt_t;
    if header.is_null() {
        return None;
    }
    // SAFETY: header points at fresh, writable list storage for one ngx_table_elt_t; nginx only
    // reads header names and values, which outlive the response (the caller's promise).
    unsafe {
        (*header).hash = 1;
        (*header).key = ngx_str_t { len: name.len(), data: name.as_ptr().cast_mut() };
        (*header).value = ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() };
        (*header).lowcase_key = ptr::null_mut();
        #[cfg(ngx_linked_headers)]
        {
            (*header).next = ptr::null_mut();
        }
    }
    Some(header)
}

/// Appends a response header whose value is copied into the request pool.
fn push_header_copy(request: &mut Request, name: &'static str, value: &[u8]) -> Option<()> {
    // SAFETY: the request pool lives as long as the response.
    let copy = unsafe { ngx_str_t::from_bytes(request.as_ref().pool, value) }?;
    push_header(request, name, copy.as_bytes()).map(drop)
}

/// Appends one `WWW-Authenticate` header with a value that lives as long as the configuration.
fn add_challenge(request: &mut Request, value: &'static [u8]) -> Option<()> {
    let header = push_header(request, "WWW-Authenticate", value)?;
    let out = &mut request.as_mut().headers_out;
    // Keep nginx's view of the challenges complete: the first one, then (from 1.23) a linked list.
    #[cfg(ngx_linked_headers)]
    // SAFETY: header is the element just pushed onto this response's list; the links are
    // elements of the same list.
    unsafe {
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
    Some(())
}

/// Sets the response's length (or, with `None`, says it is unknown), dropping any copy of the
/// old one in the header list.
fn set_content_length(request: &mut Request, length: Option<usize>) {
    let out = &mut request.as_mut().headers_out;
    out.content_length_n = length.map_or(-1, |length| length as i64);
    if !out.content_length.is_null() {
        // SAFETY: a non-null content_length points at an element of the response header list.
        unsafe { (*out.content_length).hash = 0 };
        out.content_length = ptr::null_mut();
    }
}

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

/// Adds the `x-ratelimit-*` headers of a limited key's answer, and a 429's `Retry-After`.
fn add_rate_headers(request: &mut Request) -> Option<()> {
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
fn add_clamped_header(request: &mut Request) -> Option<()> {
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
fn add_queue_headers(request: &mut Request) -> Option<()> {
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

/// Sets up the reading of a counted answer, once its header says what it is.
fn start_scanning(request: &mut Request) {
    let counted_and_new = |ctx: &mut RequestCtx| ctx.accounting.as_ref().is_some_and(|a| a.scanner.is_none());
    if !ctx_mut(request).is_some_and(counted_and_new) {
        return;
    }
    let Some(conf) = Module::location_conf(request) else { return };
    let out = &request.as_ref().headers_out;
    let encoded = !out.content_encoding.is_null();
    let kind = path(request, conf).and_then(|path| AnswerKind::for_answer(path, out.content_type.as_bytes()));
    let Some(kind) = kind else { return };
    if encoded {
        // Compressed on the way (ollama.com's headers come back through a cloud model, or a
        // proxy compresses): no scanner reads it, so the request is charged its estimate.
        warn_unreadable_once(request.log());
        return;
    }
    let Some(accounting) = ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut()) else { return };
    accounting.scanner = Some(Box::new(UsageScanner::new(kind)));
    if accounting.asked_usage && kind.framing == Framing::EventStream {
        accounting.stripper = Some(Box::new(UsageStripper::new()));
        set_content_length(request, None);
    }
}

/// Makes nginx's own error page (a special response: `limit_req`'s 429, a 502 or 504 with Ollama
/// down, a 413) in a location with `ollama_auth_json_errors on` one of this module's refusals,
/// with a JSON body in the endpoint's shape, a `Retry-After` where waiting helps, and counted as
/// any answer is. A 401 (whose challenges are another module's), an error page of the
/// location's own (`error_page`) and a refusal of this module's are left as they are.
fn adopt_nginx_error(request: &mut Request) -> Option<()> {
    let r = request.as_ref();
    let status = r.headers_out.status;
    let response = NginxResponse {
        status: status.min(999) as u16,
        err_status: r.err_status.min(999) as u16,
        error_pages_in_scope: r.error_page() != 0,
        redirected: r.uri_changes() <= NGX_HTTP_MAX_URI_CHANGES,
        location_has_page: location_has_error_page(request, status),
    };
    if !answers_as_json(response) {
        return Some(());
    }
    let Some(conf) = Module::location_conf(request).filter(|conf| conf.json_errors()) else { return Some(()) };
    if ctx_mut(request).is_some_and(|ctx| ctx.refusal.is_some()) {
        return Some(());
    }
    let (kind, message) = nginx_error_text(status as u16);
    let body = error_body(error_shape(request, conf), status as u16, kind, message);
    if request.is_main() {
        super::accounting::start(request, conf)?;
    }
    ctx_or_new(request)?.refusal = Some(Refusal { status, body: Cow::Owned(body) });
    match default_retry_after(status as u16) {
        Some(seconds) => push_header(request, "Retry-After", seconds.as_bytes()).map(drop),
        None => Some(()),
    }
}

/// Logs, once per worker, that a counted answer came compressed.
fn warn_unreadable_once(log: *mut ngx::ffi::ngx_log_t) {
    thread_local! {
        static WARNED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !WARNED.replace(true) {
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "a counted answer came with a Content-Encoding and cannot be read: it is charged the gate's estimate (clear Accept-Encoding towards Ollama)"
        );
    }
}

/// Whether the location answering has an `error_page` for `status`.
fn location_has_error_page(request: &Request, status: usize) -> bool {
    let Some(core) = NgxHttpCoreModule::location_conf(request) else { return false };
    if core.error_pages.is_null() {
        return false;
    }
    // SAFETY: a location's error_pages is NULL or nginx's array of ngx_http_err_page_t, made at
    // configuration time and alive for the cycle.
    let pages = unsafe { (*core.error_pages).as_slice::<ngx_http_err_page_t>() };
    pages.iter().any(|page| page.status == status as ngx_int_t)
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls header filters with a valid request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    if request.as_ref().err_status != 0 && adopt_nginx_error(request).is_none() {
        return Status::NGX_ERROR.0;
    }
    if ctx_mut(request).is_none() {
        return next_header(r); // the common case: nothing of this module's to do
    }
    if request.is_main()
        && (add_rate_headers(request).is_none()
            || add_clamped_header(request).is_none()
            || add_queue_headers(request).is_none())
    {
        return Status::NGX_ERROR.0;
    }
    match role(request) {
        Role::NotOurs => {
            if request.is_main() {
                start_scanning(request);
            }
            next_header(r)
        }
        Role::Refusal { challenges, length, unauthorized } => {
            if unauthorized {
                let conf: Option<&'static LocConf> = Module::location_conf(request);
                let values: &'static Challenges = conf.map_or(Challenges::default_realm(), LocConf::challenges);
                ngx_log_debug_http!(request, "ollama auth: challenging the 401");
                for (bit, value) in [(CHALLENGE_BASIC, &values.basic), (CHALLENGE_BEARER, &values.bearer)] {
                    if challenges & bit != 0 && add_challenge(request, value).is_none() {
                        return Status::NGX_ERROR.0;
                    }
                }
            }
            // A HEAD answer has no body: nginx marks it header-only only further down the chain,
            // and a body written after its header (on a flush after EAGAIN) would desync the
            // connection.
            if !request.header_only() && request.as_ref().method != NGX_HTTP_HEAD as usize {
                let out = &mut request.as_mut().headers_out;
                out.content_type =
                    ngx_str_t { len: JSON_CONTENT_TYPE.len(), data: JSON_CONTENT_TYPE.as_ptr().cast_mut() };
                out.content_type_len = JSON_CONTENT_TYPE.len();
                out.content_type_lowcase = ptr::null_mut();
                set_content_length(request, Some(length));
                if let Some(ctx) = ctx_mut(request) {
                    ctx.replace_body = true;
                }
            }
            next_header(r)
        }
        Role::Listing => {
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
    }
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

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx calls body filters with a valid request and chain.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let header_only = request.header_only();
    let is_main = request.is_main();
    let Some(ctx) = ctx_mut(request) else { return next_body(r, input) };
    if let Some(queued) = ctx.queued.as_mut().filter(|_| is_main) {
        // SAFETY: nginx hands body filters a valid chain (or NULL).
        unsafe { queued.release_at_last(input) };
    }
    if ctx.replace_body {
        let first_call = !ctx.body_sent && !header_only;
        ctx.body_sent = true;
        // SAFETY: nginx hands body filters a valid chain (or NULL).
        unsafe { consume(input) };
        if !first_call {
            // Later calls (nginx's flush of what a partial write left buffered, with NULL) must
            // still reach the write filter, or the answer stalls until send_timeout.
            return next_body(r, ptr::null_mut());
        }
        let body = match &ctx.refusal {
            Some(refusal) => refusal.body.clone(),
            None => return Status::NGX_ERROR.0,
        };
        let bytes = match &body {
            std::borrow::Cow::Borrowed(bytes) => ChainBytes::Static(bytes),
            std::borrow::Cow::Owned(bytes) => ChainBytes::Copied(bytes),
        };
        // SAFETY: the request pool outlives the answer.
        let Some(chain) = (unsafe { one_buffer_chain(request.as_ref().pool, bytes, request.is_main()) }) else {
            return Status::NGX_ERROR.0;
        };
        return next_body(r, chain);
    }
    if !ctx.listing_held {
        let scanned = ctx.accounting.as_ref().is_some_and(|accounting| accounting.scanner.is_some());
        if scanned && request.is_main() {
            return account_body(r, input);
        }
        return next_body(r, input);
    }
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

/// What marks the stripper's own buffers, for nginx's buffer recycling.
fn buffer_tag() -> ngx::ffi::ngx_buf_tag_t {
    module_tag()
}

/// Reads a counted answer's buffers as they pass. They go on unchanged, unless the gate asked
/// for usage the client did not: then what asking added is taken out, and the rest goes on in
/// the module's own buffers, with the same flush and last-buffer marks.
fn account_body(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx's request, valid for this call.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let pool = request.as_ref().pool;
    let log = request.log();
    let Some(Accounting { scanner: Some(scanner), stripper, answer_ended, .. }) =
        ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut())
    else {
        return next_body(r, input);
    };
    let mut out = stripper.as_ref().map(|_| Vec::new());
    let (mut last, mut flush) = (false, false);
    let mut link = input;
    while !link.is_null() {
        // SAFETY: nginx hands body filters a valid chain of valid buffers.
        let buf = unsafe { &*(*link).buf };
        // SAFETY: as above; a file buffer's file is open while its buffer is passed on.
        let read = unsafe {
            for_each_piece(buf, |bytes| {
                scanner.feed(bytes);
                if let (Some(stripper), Some(out)) = (stripper.as_mut(), out.as_mut()) {
                    stripper.feed(bytes, out);
                }
            })
        };
        if let Err(error) = read {
            ngx_log_error!(NGX_LOG_ERR, log, "answer not read for its usage: {}", error);
            return Status::NGX_ERROR.0;
        }
        last |= buf.last_buf() != 0;
        flush |= buf.flush() != 0;
        // SAFETY: as above.
        link = unsafe { (*link).next };
    }
    if last {
        *answer_ended = true;
        if let (Some(stripper), Some(out)) = (stripper.as_mut(), out.as_mut()) {
            stripper.finish(out);
        }
    }
    let Some(out) = out else {
        let rc = next_body(r, input);
        note_end_delivered(request);
        return rc;
    };
    // SAFETY: the input's bytes are all in `out` now; its buffers go back to their producer.
    unsafe { consume(input) };
    if out.is_empty() && !flush && !last {
        // Only part of an event came: nothing to send yet, but what the writer holds may go,
        // and with it the answer's end.
        let rc = next_body(r, ptr::null_mut());
        note_end_delivered(request);
        return rc;
    }
    let Some(mut chain) = stripped_chain(pool, &out, flush, last, ctx_mut(request)) else {
        return Status::NGX_ERROR.0;
    };
    let rc = next_body(r, chain);
    if let Some(accounting) = ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut()) {
        // SAFETY: the lists are this request's, in its pool; nginx moves sent buffers with this
        // module's tag from busy to free.
        unsafe { ngx_chain_update_chains(pool, &mut accounting.free, &mut accounting.busy, &mut chain, buffer_tag()) };
    }
    note_end_delivered(request);
    rc
}

/// Records that the answer's end reached the client: it was seen, and nothing is left unsent.
fn note_end_delivered(request: &mut Request) {
    let r = request.as_ref();
    // SAFETY: a request's connection is valid while the request is.
    let all_sent = r.out.is_null() && unsafe { (*r.connection).buffered() } == 0;
    if let Some(accounting) = ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut()) {
        let end_seen = accounting.scanner.as_ref().is_some_and(|scanner| scanner.saw_answer_end());
        accounting.end_delivered |= end_seen && all_sent;
    }
}

/// One buffer holding `bytes` for the next filter: a free one of the module's if it has room,
/// else fresh memory from the pool.
fn stripped_chain(
    pool: *mut ngx::ffi::ngx_pool_t,
    bytes: &[u8],
    flush: bool,
    last: bool,
    ctx: Option<&mut RequestCtx>,
) -> Option<*mut ngx_chain_t> {
    let accounting = ctx?.accounting.as_mut()?;
    // SAFETY: the free list is this request's (see account_body); ngx_chain_get_free_buf
    // returns a link with a buffer (reused, or zeroed from the pool) or NULL.
    let link = unsafe { ngx_chain_get_free_buf(pool, &mut accounting.free) };
    if link.is_null() {
        return None;
    }
    // SAFETY: the link and buffer are this module's alone until passed on.
    unsafe {
        let buf = &mut *(*link).buf;
        let room = if buf.start.is_null() { 0 } else { buf.end as usize - buf.start as usize };
        if room < bytes.len() {
            let size = bytes.len().max(4096);
            let memory = ngx_palloc(pool, size).cast::<u8>();
            if memory.is_null() {
                return None;
            }
            buf.start = memory;
            buf.end = memory.add(size);
        }
        if !bytes.is_empty() {
            ptr::copy_nonoverlapping(bytes.as_ptr(), buf.start, bytes.len());
        }
        buf.pos = buf.start;
        buf.last = buf.start.add(bytes.len());
        buf.tag = buffer_tag();
        // An empty buffer is a special one (a flush or the end), never an empty memory buffer.
        buf.set_temporary(u32::from(!bytes.is_empty()));
        buf.set_memory(0);
        buf.set_in_file(0);
        buf.set_recycled(0);
        buf.set_flush(u32::from(flush));
        buf.set_last_buf(u32::from(last));
        buf.set_last_in_chain(u32::from(last));
        (*link).next = ptr::null_mut();
    }
    Some(link)
}
