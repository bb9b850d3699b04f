//! This module's own refusals (401, 403, 400, 413, 429, 503), and nginx's own error pages in a
//! location with `ollama_auth_json_errors on`: a JSON body in the shape the endpoint's clients
//! read (`ngx_ollama_auth::errors`), and for a 401 the challenges.

use std::borrow::Cow;
use std::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_chain_t, ngx_http_err_page_t, ngx_http_request_t, ngx_int_t, ngx_str_t, NGX_HTTP_HEAD, NGX_HTTP_MAX_URI_CHANGES,
};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule, Request};
use ngx::ngx_log_debug_http;

use super::headers::{add_challenge, push_header, set_content_length};
use super::next::{next_body, next_header};
use crate::answer::JSON_CONTENT_TYPE;
use crate::buffers::{consume, one_buffer_chain, ChainBytes};
use crate::conf::LocConf;
use crate::ctx::{ctx_mut, ctx_or_new, error_shape, RefusalAnswer, CHALLENGE_BASIC, CHALLENGE_BEARER};
use crate::module::Module;
use ngx_ollama_auth::challenges::Challenges;
use ngx_ollama_auth::errors::{answers_as_json, default_retry_after, error_body, nginx_error_text, NginxResponse};

/// Makes nginx's own error page (a special response: `limit_req`'s 429, a 502 or 504 with Ollama
/// down, a 413) in a location with `ollama_auth_json_errors on` one of this module's refusals,
/// with a JSON body in the endpoint's shape, a `Retry-After` where waiting helps, and counted as
/// any answer is. A 401 (whose challenges are another module's), an error page of the
/// location's own (`error_page`) and a refusal of this module's are left as they are.
pub fn adopt_nginx_error(request: &mut Request) -> Option<()> {
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
        crate::accounting::start(request, conf)?;
    }
    ctx_or_new(request)?.refusal = Some(RefusalAnswer { status, body: Cow::Owned(body) });
    match default_retry_after(status as u16) {
        Some(seconds) => push_header(request, "Retry-After", seconds.as_bytes()).map(drop),
        None => Some(()),
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

/// A refusal's header: the challenges of a 401, and the JSON body's type and length.
pub fn send_header(r: *mut ngx_http_request_t, challenges: u8, length: usize, unauthorized: bool) -> ngx_int_t {
    // SAFETY: nginx's request, valid for this call.
    let request = unsafe { Request::from_ngx_http_request(r) };
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
        out.content_type = ngx_str_t { len: JSON_CONTENT_TYPE.len(), data: JSON_CONTENT_TYPE.as_ptr().cast_mut() };
        out.content_type_len = JSON_CONTENT_TYPE.len();
        out.content_type_lowcase = ptr::null_mut();
        set_content_length(request, Some(length));
        if let Some(ctx) = ctx_mut(request) {
            ctx.replace_body = true;
        }
    }
    next_header(r)
}

/// A refusal's body, in place of the one nginx made: sent on the first call, and every later
/// call passed on empty.
pub fn send_body(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx's request, valid for this call.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let header_only = request.header_only();
    let is_main = request.is_main();
    let pool = request.as_ref().pool;
    let Some(ctx) = ctx_mut(request) else { return Status::NGX_ERROR.0 };
    let first_call = !ctx.body_sent && !header_only;
    ctx.body_sent = true;
    // SAFETY: nginx hands body filters a valid chain (or NULL).
    unsafe { consume(input) };
    if !first_call {
        // Later calls (nginx's flush of what a partial write left buffered, with NULL) must
        // still reach the write filter, or the answer stalls until send_timeout.
        return next_body(r, ptr::null_mut());
    }
    let Some(body) = ctx.refusal.as_ref().map(|refusal| refusal.body.clone()) else {
        return Status::NGX_ERROR.0;
    };
    let bytes = match &body {
        Cow::Borrowed(bytes) => ChainBytes::Static(bytes),
        Cow::Owned(bytes) => ChainBytes::Copied(bytes),
    };
    // SAFETY: the request pool outlives the answer.
    let Some(chain) = (unsafe { one_buffer_chain(pool, bytes, is_main) }) else { return Status::NGX_ERROR.0 };
    next_body(r, chain)
}
