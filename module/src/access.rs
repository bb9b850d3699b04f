//! The access-phase handler: admits a request with a valid credential whose entry may do what
//! it asks; refuses the rest (401 without a valid credential, 403 for what its scopes or models
//! do not cover, 400 for a body whose model cannot be read).
//!
//! Refusals go through nginx's special-response path, so `auth_delay`, `error_page` and
//! `satisfy any` behave as with `auth_basic`; `filters` gives them their JSON bodies.

use std::borrow::Cow;

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_request_t, ngx_int_t, NGX_HTTP_OPTIONS,
    NGX_HTTP_UNAUTHORIZED,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, Request};
use ngx::ngx_log_debug_http;

use super::authenticate::{authenticate, Decision};
use super::body::start_reading;
use super::conf::LocConf;
use super::ctx::{
    ctx_mut, ctx_or_new, error_shape, record, refuse, BodyState, RefusalAnswer, CHALLENGE_BASIC, CHALLENGE_BEARER,
};
use super::hooks::add_phase_handler;
use super::module::Module;
use super::policy::judge;
use super::{accounting, limit, queue};
use ngx_ollama_auth::errors::{error_body, unauthorized_message};
use ngx_ollama_auth::judge::{BodyCheck, Judgement};
use ngx_ollama_auth::policy::is_cors_preflight;

/// Adds the access handler. Called once per configuration load.
///
/// # Safety
/// `cf` must be the configuration being loaded, in postconfiguration.
pub unsafe fn install(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: the caller's promise.
    unsafe { add_phase_handler(cf, ngx_http_phases_NGX_HTTP_ACCESS_PHASE, access_handler) }
}

/// nginx runs access handlers for main requests only; subrequests share the main request's
/// admission. In a location with `ollama_auth_queue`, an admitted inference request then
/// takes its place in the queue (and the phases, run again when it is resumed, find it there).
extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a valid request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let Some(conf) = Module::location_conf(request).filter(|conf: &&LocConf| conf.is_gated()) else {
        return Status::NGX_DECLINED.0;
    };
    if request.as_ref().method == NGX_HTTP_OPTIONS as usize
        && is_cors_preflight(
            request.as_ref().method_name.as_bytes(),
            request.headers_in_iterator().map(|(name, _)| name.as_bytes()),
        )
    {
        ngx_log_debug_http!(request, "ollama auth: a CORS preflight, passed on for Ollama to answer");
        return Status::NGX_OK.0;
    }
    let Some(queue_conf) = conf.queue.as_ref() else { return decide(r, conf) };
    if ctx_mut(request).is_some_and(|ctx| ctx.is_decided_for(conf)) {
        if let Some(answer) = queue::wait::preempt(request) {
            return answer;
        }
    }
    match decide(r, conf) {
        rc if rc == Status::NGX_OK.0 => queue::wait::enter(r, conf, queue_conf),
        rc => rc,
    }
}

/// Who is asking, and may they: `NGX_OK`, a refusal's status, or `NGX_DONE` while the body is
/// read.
fn decide(r: *mut ngx_http_request_t, conf: &LocConf) -> ngx_int_t {
    // SAFETY: nginx's request, valid for this call.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let decided_here = match ctx_mut(request) {
        // Back from reading the body: its verdict is the answer.
        Some(ctx) => match ctx.body {
            Some(BodyState::Judged(verdict)) => return verdict,
            Some(BodyState::Reading(_)) => return Status::NGX_DONE.0,
            None => ctx.is_decided_for(conf),
        },
        None => false,
    };
    if !decided_here {
        let record_user = Module::main_conf(request).is_some_and(|main| main.user_variable_used)
            || accounting::wanted(request, conf)
            || conf.queue.is_some();
        match authenticate(request, conf, record_user) {
            // The common path: judged right here, nothing kept, nothing allocated, nothing
            // counted (no label was wanted, so nothing is accounted; no limits).
            Decision::Admitted(admission)
                if admission.label.is_none() && admission.limit_id.is_none() && admission.queue_key.is_none() =>
            {
                return match judge(request, conf, &admission) {
                    Judgement::Allow => Status::NGX_OK.0,
                    judgement => act_on(r, conf, judgement),
                };
            }
            decision => {
                if record(request, conf, decision).is_none() {
                    return Status::NGX_ERROR.0;
                }
            }
        }
    }
    let judgement = match ctx_mut(request).and_then(|ctx| ctx.admission.take()) {
        Some(admission) => {
            let judgement = judge(request, conf, &admission);
            if let Some(ctx) = ctx_mut(request) {
                ctx.admission = Some(admission);
            }
            judgement
        }
        None => {
            ngx_log_debug_http!(request, "ollama auth: access refused, 401");
            let shape = error_shape(request, conf);
            if let Some(ctx) = ctx_mut(request) {
                let message =
                    unauthorized_message(ctx.challenges & CHALLENGE_BEARER != 0, ctx.challenges & CHALLENGE_BASIC != 0);
                let body = Cow::Owned(error_body(shape, NGX_HTTP_UNAUTHORIZED as u16, "unauthorized", message));
                ctx.refusal = Some(RefusalAnswer { status: NGX_HTTP_UNAUTHORIZED as usize, body });
            }
            return NGX_HTTP_UNAUTHORIZED as ngx_int_t;
        }
    };
    act_on(r, conf, judgement)
}

/// Carries out a judgement; answers what the access handler answers.
fn act_on(r: *mut ngx_http_request_t, conf: &LocConf, judgement: Judgement) -> ngx_int_t {
    // SAFETY: nginx's request, valid for this call.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let check = match judgement {
        Judgement::Allow => None,
        Judgement::AllowListing(listing, options) => {
            let Some(ctx) = ctx_or_new(request) else { return Status::NGX_ERROR.0 };
            ctx.listing = Some((listing, options));
            None
        }
        Judgement::ReadBody(check) => Some(check),
        Judgement::Refuse(refusal) => return refuse(request, conf, &refusal),
    };
    let Some(add_usage) = accounting::start(request, conf) else { return Status::NGX_ERROR.0 };
    let reserves = accounting::reserves_tokens(request, conf);
    match check {
        Some(check) => start_reading(r, BodyCheck { add_usage, ..check }),
        None if add_usage || reserves => start_reading(r, BodyCheck { add_usage, ..BodyCheck::default() }),
        None => {
            ngx_log_debug_http!(request, "ollama auth: access granted");
            limit::admit(request, conf)
        }
    }
}
