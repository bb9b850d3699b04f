//! The access-phase handler, and the header and body filters that turn this module's 401 into a
//! challenge plus a JSON body in Ollama's error shape.
//!
//! The challenges are added by the header filter, only to a response that really is this module's
//! 401. So with `satisfy any`, when another handler admits the request, no stale challenge exists
//! to be cleared, on any nginx version. The 401 itself goes through nginx's special-response path,
//! so `auth_delay`, `error_page` and `satisfy any` behave as with `auth_basic`.

use std::ffi::c_void;
use std::mem::size_of;
use std::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_chain_t, ngx_conf_t, ngx_current_msec, ngx_cycle, ngx_http_handler_pt,
    ngx_http_output_body_filter_pt, ngx_http_output_header_filter_pt, ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
    ngx_http_request_t, ngx_http_top_body_filter, ngx_http_top_header_filter, ngx_int_t, ngx_list_push,
    ngx_pcalloc, ngx_pnalloc, ngx_str_t, ngx_table_elt_t, NGX_HTTP_UNAUTHORIZED, NGX_LOG_ERR,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request};
use ngx::ngx_log_error;

use super::conf::{refresh, LocConf};
use super::Module;
use crate::credentials::{decode_basic, parse_authorization, Credential, DecodeBuffer};
use crate::htpasswd::Verdict;

/// Which schemes a denied request is challenged for.
const CHALLENGE_BEARER: u8 = 1;
const CHALLENGE_BASIC: u8 = 2;

/// Per-request state, allocated zeroed from the request pool (all-zero is "not checked yet").
#[repr(C)]
pub struct RequestCtx {
    checked: bool,
    admitted: bool,
    /// Set by the access handler when it answers 401; read by the filters.
    denied: bool,
    replace_body: bool,
    body_sent: bool,
    challenges: u8,
    /// Who was admitted: a key's name or fingerprint, or a Basic user name; in the request pool.
    pub user: ngx_str_t,
}

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

/// Adds the access handler and the two filters. Called once per configuration load.
///
/// # Safety
/// `cf` must be the configuration being loaded, in postconfiguration.
pub unsafe fn install(cf: *mut ngx_conf_t) -> ngx_int_t {
    let Some(core) = NgxHttpCoreModule::main_conf_mut(&*cf) else {
        return Status::NGX_ERROR.0;
    };
    // Variables the configuration refers to are indexed by now: record labels only if ours is.
    let used = core.variables.as_slice::<ngx::ffi::ngx_http_variable_t>()
        .iter()
        .any(|variable| variable.name.as_bytes() == super::variables::NAME);
    if let Some(main) = Module::main_conf_mut(&*cf) {
        main.user_variable_used = used;
    }
    // SAFETY: the access phase's handler array exists in the core main configuration during
    // postconfiguration, and ngx_array_push returns room for one element or NULL.
    let slot = ngx::ffi::ngx_array_push(&mut core.phases[ngx_http_phases_NGX_HTTP_ACCESS_PHASE as usize].handlers)
        as *mut ngx_http_handler_pt;
    if slot.is_null() {
        return Status::NGX_ERROR.0;
    }
    *slot = Some(access_handler);
    // SAFETY: filter chains are rebuilt single-threaded during configuration; this is the
    // standard way an nginx filter links itself in front of the previous top of the chain.
    NEXT_HEADER_FILTER = ngx_http_top_header_filter;
    ngx_http_top_header_filter = Some(header_filter);
    NEXT_BODY_FILTER = ngx_http_top_body_filter;
    ngx_http_top_body_filter = Some(body_filter);
    Status::NGX_OK.0
}

/// The request's context. The lifetime is the request's, which no Rust borrow can express.
fn ctx_of<'r>(request: &Request) -> Option<&'r mut RequestCtx> {
    // SAFETY: r->ctx has one slot per HTTP module, ctx_index is this module's; the slot is NULL
    // or a RequestCtx this module allocated from the request's pool, which lives as long as the
    // request. nginx runs one request's handlers on one thread, one at a time.
    unsafe {
        let slot = *request.as_ref().ctx.add(Module::module().ctx_index);
        (slot as *mut RequestCtx).as_mut()
    }
}

fn new_ctx<'r>(request: &mut Request) -> Option<&'r mut RequestCtx> {
    let raw: *mut ngx_http_request_t = request.into();
    // SAFETY: the request pool is valid for the request's life; ngx_pcalloc returns zeroed,
    // suitably aligned memory (or NULL), and all-zero is a valid RequestCtx.
    let ctx = unsafe { ngx_pcalloc((*raw).pool, size_of::<RequestCtx>()) } as *mut RequestCtx;
    if ctx.is_null() {
        return None;
    }
    request.set_module_ctx(ctx as *mut c_void, Module::module());
    // SAFETY: just allocated, non-null, zeroed.
    Some(unsafe { &mut *ctx })
}

/// Copies a label into the request pool, for `$ollama_auth_user` to hand out.
fn pool_copy(request: &Request, bytes: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: the pool is the request's own; ngx_pnalloc returns `len` writable bytes or NULL.
    let data = unsafe { ngx_pnalloc(request.as_ref().pool, bytes.len()) } as *mut u8;
    if data.is_null() {
        return None;
    }
    // SAFETY: data has room for bytes.len() bytes and cannot overlap a Rust slice.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len()) };
    Some(ngx_str_t { len: bytes.len(), data })
}

fn authorization_header(request: &Request) -> &[u8] {
    let header = request.as_ref().headers_in.authorization;
    if header.is_null() {
        return b"";
    }
    // SAFETY: a non-null headers_in.authorization points at a parsed header in the request's
    // header list, whose value stays valid for the request's life.
    unsafe { (*header).value.as_bytes() }
}

/// What one look at a request's credential found.
enum Decision {
    /// Admitted; with the label for `$ollama_auth_user` when it was asked for.
    Admitted(Option<ngx_str_t>),
    Refused,
}

/// Checks the request's credential against this location's files. With `want_label`, an admitted
/// request's label is copied into the request pool; otherwise the admitted path allocates nothing.
fn authenticate(request: &Request, conf: &LocConf, want_label: bool) -> Decision {
    // SAFETY: ngx_current_msec and ngx_cycle are nginx's globals, written only by this worker's
    // own thread between events; ngx_cycle->log is valid while the cycle runs.
    let (now_ms, cycle_log) = unsafe { (ngx_current_msec as u64, (*ngx_cycle).log) };
    let log = request.log();
    let keys = conf.keys.file();
    let users = conf.users.file();
    if let Some(keys) = keys {
        refresh(keys, now_ms, cycle_log);
    }
    if let Some(users) = users {
        refresh(users, now_ms, cycle_log);
    }
    let admitted = |label: &[u8]| Decision::Admitted(if want_label { pool_copy(request, label) } else { None });

    match parse_authorization(authorization_header(request)) {
        Credential::Bearer(token) => {
            let Some(keys) = keys else { return Decision::Refused };
            // The borrow lasts for this lookup only; nothing in it can reload the file.
            let watched = keys.borrow();
            let keys = watched.current();
            match keys.find(token) {
                Some(found) if want_label => admitted(keys.label(found).as_bytes()),
                Some(_) => Decision::Admitted(None),
                None => {
                    ngx_log_error!(NGX_LOG_ERR, log, "bearer key not accepted: not in the keys file");
                    Decision::Refused
                }
            }
        }
        Credential::Basic(token) => {
            let Some(users) = users else { return Decision::Refused };
            let watched = users.borrow();
            let verdict = watched.current().verify_basic(token);
            if verdict == Verdict::Admitted && !want_label {
                return Decision::Admitted(None);
            }
            // Cold paths: the user name for the label, or for the log line of a refusal.
            let mut buffer = DecodeBuffer::new();
            let Some(credential) = decode_basic(token, &mut buffer) else { return Decision::Refused };
            let shown = || String::from_utf8_lossy(credential.user()).escape_debug().to_string();
            match verdict {
                Verdict::Admitted => admitted(credential.user()),
                Verdict::UnknownUser => {
                    ngx_log_error!(NGX_LOG_ERR, log, "user \"{}\" was not found in the basic user file", shown());
                    Decision::Refused
                }
                Verdict::WrongPassword => {
                    ngx_log_error!(NGX_LOG_ERR, log, "user \"{}\": password mismatch", shown());
                    Decision::Refused
                }
                Verdict::Malformed => Decision::Refused,
            }
        }
        Credential::None => Decision::Refused,
    }
}

fn challenges_of(conf: &LocConf) -> u8 {
    let bearer = if conf.keys.file().is_some() { CHALLENGE_BEARER } else { 0 };
    let basic = if conf.users.file().is_some() { CHALLENGE_BASIC } else { 0 };
    bearer | basic
}

/// The request's decision with its label, checked once and kept in the request context: for
/// `$ollama_auth_user`, which may be read before the access phase (by `limit_req`).
pub fn checked_with_label<'r>(request: &mut Request) -> Option<&'r mut RequestCtx> {
    let conf: &LocConf = Module::location_conf(request)?;
    if !conf.is_gated() {
        return None;
    }
    let ctx = match ctx_of(request) {
        Some(ctx) => ctx,
        None => new_ctx(request)?,
    };
    // A request admitted while no one wanted the label has none yet: look again, with it.
    if !ctx.checked || (ctx.admitted && ctx.user.data.is_null()) {
        ctx.checked = true;
        ctx.challenges = challenges_of(conf);
        match authenticate(request, conf, true) {
            Decision::Admitted(label) => {
                ctx.admitted = true;
                ctx.user = label.unwrap_or(ngx_str_t { len: 0, data: ptr::null_mut() });
            }
            Decision::Refused => ctx.admitted = false,
        }
    }
    Some(ctx)
}

extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a valid request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    // Subrequests share the main request's admission; nginx skips their access phase anyway.
    if !request.is_main() {
        return Status::NGX_DECLINED.0;
    }
    let Some(conf) = Module::location_conf(request).filter(|conf: &&LocConf| conf.is_gated()) else {
        return Status::NGX_DECLINED.0;
    };
    let record_user = Module::main_conf(request).is_some_and(|main| main.user_variable_used);

    let admitted = match ctx_of(request) {
        Some(ctx) if ctx.checked => ctx.admitted, // decided earlier, when the variable was read
        _ => match authenticate(request, conf, record_user) {
            Decision::Admitted(None) => true,
            Decision::Admitted(Some(label)) => {
                let Some(ctx) = new_ctx(request) else { return Status::NGX_ERROR.0 };
                ctx.checked = true;
                ctx.admitted = true;
                ctx.user = label;
                true
            }
            Decision::Refused => false,
        },
    };
    if admitted {
        return Status::NGX_OK.0;
    }
    let ctx = match ctx_of(request) {
        Some(ctx) => ctx,
        None => match new_ctx(request) {
            Some(ctx) => ctx,
            None => return Status::NGX_ERROR.0,
        },
    };
    ctx.checked = true;
    ctx.challenges = challenges_of(conf);
    ctx.denied = true;
    NGX_HTTP_UNAUTHORIZED as ngx_int_t
}

/// `realm="…"` with the realm quoted as RFC 9110 asks.
fn challenge(scheme: &[u8], realm: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(scheme.len() + realm.len() + 10);
    value.extend_from_slice(scheme);
    value.extend_from_slice(b" realm=\"");
    for &b in realm {
        if b == b'"' || b == b'\\' {
            value.push(b'\\');
        }
        value.push(b);
    }
    value.push(b'"');
    value
}

/// Appends one `WWW-Authenticate` header to the response.
fn add_challenge(request: &mut Request, value: &[u8]) -> Option<()> {
    let value = pool_copy(request, value)?;
    let out = &mut request.as_mut().headers_out;
    // SAFETY: headers_out.headers is the response's header list, initialised by nginx;
    // ngx_list_push returns room for one element or NULL.
    let header = unsafe { ngx_list_push(&mut out.headers) } as *mut ngx_table_elt_t;
    if header.is_null() {
        return None;
    }
    // SAFETY: header points at fresh, writable list storage for one ngx_table_elt_t.
    unsafe {
        (*header).hash = 1;
        (*header).key = ngx_str_t { len: 16, data: b"WWW-Authenticate".as_ptr() as *mut u8 };
        (*header).value = value;
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
    // SAFETY: nginx calls header filters with a valid request; NEXT_HEADER_FILTER was set
    // during configuration, before any request.
    let request = Request::from_ngx_http_request(r);
    let next = NEXT_HEADER_FILTER.expect("header filter chain");
    let Some(ctx) = ctx_of(request) else {
        return next(r);
    };
    if !ctx.denied || request.as_ref().headers_out.status != NGX_HTTP_UNAUTHORIZED as usize {
        return next(r);
    }
    let challenges = ctx.challenges;
    let realm = Module::location_conf(request).map_or(super::conf::DEFAULT_REALM, LocConf::realm).to_vec();
    for (bit, scheme) in [(CHALLENGE_BASIC, &b"Basic"[..]), (CHALLENGE_BEARER, b"Bearer")] {
        if challenges & bit != 0 && add_challenge(request, &challenge(scheme, &realm)).is_none() {
            return Status::NGX_ERROR.0;
        }
    }
    if request.header_only() {
        return next(r);
    }
    let out = &mut request.as_mut().headers_out;
    out.content_type = ngx_str_t { len: JSON_CONTENT_TYPE.len(), data: JSON_CONTENT_TYPE.as_ptr() as *mut u8 };
    out.content_type_len = JSON_CONTENT_TYPE.len();
    out.content_type_lowcase = ptr::null_mut();
    out.content_length_n = json_body(challenges).len() as i64;
    if !out.content_length.is_null() {
        // SAFETY: a non-null content_length points at an element of the response header list.
        (*out.content_length).hash = 0;
        out.content_length = ptr::null_mut();
    }
    ctx.replace_body = true;
    next(r)
}

/// Marks a chain as sent so its producer can reuse or free its buffers.
///
/// # Safety
/// `chain` must be NULL or a valid chain of valid buffers.
unsafe fn consume(mut chain: *mut ngx_chain_t) {
    while !chain.is_null() {
        let buf = (*chain).buf;
        if !buf.is_null() {
            (*buf).pos = (*buf).last;
            (*buf).file_pos = (*buf).file_last;
        }
        chain = (*chain).next;
    }
}

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx calls body filters with a valid request and chain; NEXT_BODY_FILTER was set
    // during configuration.
    let request = Request::from_ngx_http_request(r);
    let next = NEXT_BODY_FILTER.expect("body filter chain");
    let Some(ctx) = ctx_of(request) else {
        return next(r, input);
    };
    if !ctx.replace_body {
        return next(r, input);
    }
    consume(input);
    if ctx.body_sent {
        return Status::NGX_OK.0;
    }
    ctx.body_sent = true;
    let body = json_body(ctx.challenges);
    let pool = request.as_ref().pool;
    // SAFETY: request-pool allocations live as long as the response; the body is a static,
    // only read by later filters (the memory flag without "temporary" says it is read-only).
    let buf = ngx_pcalloc(pool, size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
    let link = ngx_alloc_chain_link(pool);
    if buf.is_null() || link.is_null() {
        return Status::NGX_ERROR.0;
    }
    (*buf).pos = body.as_ptr() as *mut u8;
    (*buf).last = (*buf).pos.add(body.len());
    (*buf).set_memory(1);
    (*buf).set_last_buf(u32::from(request.is_main()));
    (*buf).set_last_in_chain(1);
    (*link).buf = buf;
    (*link).next = ptr::null_mut();
    next(r, link)
}
