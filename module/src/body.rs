//! Reads a request body in the access phase, for the model it names, before the request goes
//! on to `proxy_pass`; as nginx's mirror module does: read it with
//! `ngx_http_read_client_request_body`, answer `NGX_DONE`, and run the phases again from the
//! callback, where the access handler finds the verdict in the request context.
//!
//! nginx keeps the body it read (in memory or in a temporary file) and proxies exactly those
//! bytes; chunked bodies, `Expect: 100-continue` and `client_max_body_size` are nginx's own.

use ngx::core::Status;
use ngx::ffi::{
    ngx_http_core_run_phases, ngx_http_finalize_request, ngx_http_read_client_request_body, ngx_http_request_t,
    ngx_int_t, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, NGX_HTTP_SPECIAL_RESPONSE,
    NGX_LOG_ERR,
};
use ngx::http::{HttpModuleLocationConf, Request};
use ngx::{ngx_log_debug_http, ngx_log_error};

use super::buffers::{append_chain, single_memory_buffer};
use super::ctx::{ctx_mut, ctx_or_new, refuse, BodyState};
use super::policy::{refuse_model, BodyCheck, Judgement};
use super::Module;
use ngx_ollama_auth::policy::{check_body_models, error_body};

/// Larger bodies from a key limited to some models are refused (413) rather than copied and
/// scanned: the scan runs on the worker's event loop (about 1.6 ms for 20 MB here).
const MAX_SCANNED_BODY: usize = 64 << 20;

/// Starts reading the body. Answers what the access handler answers: `NGX_DONE` while reading.
///
/// Takes the raw request: the callback may run the phases (and so this module's access handler)
/// before this returns, and no Rust borrow of the request may be alive across that.
pub fn start_reading(r: *mut ngx_http_request_t, check: BodyCheck) -> ngx_int_t {
    {
        // SAFETY: nginx's request, valid for this call; the borrow ends with this block.
        let request = unsafe { Request::from_ngx_http_request(r) };
        let Some(ctx) = ctx_or_new(request) else { return Status::NGX_ERROR.0 };
        ctx.body = Some(BodyState::Reading(check));
    }
    // SAFETY: a valid main request in the access phase; nginx calls body_read when the whole
    // body is in (maybe at once, before this returns).
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_read)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    // SAFETY: reading took a reference on the request (r->main->count); NGX_DONE gives it back.
    unsafe { ngx_http_finalize_request(r, Status::NGX_DONE.0) };
    Status::NGX_DONE.0
}

/// The verdict on a body that has been read in full.
fn verdict(request: &mut Request) -> ngx_int_t {
    let Some(BodyState::Reading(check)) = ctx_mut(request).and_then(|ctx| ctx.body.take()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(conf) = Module::location_conf(request) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let request_body = request.as_ref().request_body;
    // SAFETY: after a read, r->request_body is NULL or nginx's record of the body, whose chain
    // holds valid buffers (memory or the still open temporary file).
    let chain = if request_body.is_null() { std::ptr::null_mut() } else { unsafe { (*request_body).bufs } };
    let mut copied = Vec::new();
    // SAFETY: as above; a body in one memory buffer is read where it is, for its life.
    let body = match unsafe { single_memory_buffer(chain) } {
        Some(bytes) => bytes,
        None => {
            // SAFETY: as above.
            if let Err(error) = unsafe { append_chain(chain, &mut copied, MAX_SCANNED_BODY) } {
                if error.kind() == std::io::ErrorKind::FileTooLarge {
                    let message = format!("a body checked for its model may be at most {} MB", MAX_SCANNED_BODY >> 20);
                    let body = error_body("request entity too large", &message);
                    return match refuse(request, conf, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE as usize, body, &message) {
                        Some(()) => NGX_HTTP_REQUEST_ENTITY_TOO_LARGE as ngx_int_t,
                        None => Status::NGX_ERROR.0,
                    };
                }
                ngx_log_error!(NGX_LOG_ERR, request.log(), "request body not checked for its model: {}", error);
                return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
            }
            &copied[..]
        }
    };
    let models = check.options.models.as_ref().expect("read only for keys with models=");
    match check_body_models(body, check.rule, models, check.who) {
        Ok(()) => {
            ngx_log_debug_http!(request, "ollama auth: request body names allowed models");
            Status::NGX_OK.0
        }
        Err(refusal) => match refuse_model(refusal) {
            Judgement::Refuse { status, body, reason } => match refuse(request, conf, status, body, &reason) {
                Some(()) => status as ngx_int_t,
                None => Status::NGX_ERROR.0,
            },
            _ => Status::NGX_ERROR.0,
        },
    }
}

unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    {
        // SAFETY: nginx calls the post handler with the request whose body was read; the borrow
        // ends with this block, before the phases run again.
        let request = unsafe { Request::from_ngx_http_request(r) };
        let verdict = verdict(request);
        let Some(ctx) = ctx_mut(request) else {
            // SAFETY: the request nginx handed this handler; it must still be finished.
            unsafe { ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t) };
            return;
        };
        ctx.body = Some(BodyState::Judged(verdict));
    }
    // SAFETY: as the mirror module does: the body is kept for whoever reads it next (an
    // error_page going through the phases again), and the phases go on from the access
    // handler, which now finds the verdict; later write events run the phases too.
    unsafe {
        (*r).set_preserve_body(1);
        (*r).write_event_handler = Some(ngx_http_core_run_phases);
        ngx_http_core_run_phases(r);
    }
}
