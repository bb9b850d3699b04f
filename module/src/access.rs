//! The access-phase handler: admits a request with a valid credential whose entry may do what
//! it asks; refuses the rest (401 without a valid credential, 403 for what its scopes or models
//! do not cover, 400 for a body whose model cannot be read).
//!
//! Refusals go through nginx's special-response path, so `auth_delay`, `error_page` and
//! `satisfy any` behave as with `auth_basic`; `filters` gives them their JSON bodies.

use std::borrow::Cow;

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_http_handler_pt, ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_request_t, ngx_int_t,
    NGX_HTTP_UNAUTHORIZED, NGX_LOG_ERR,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request};
use ngx::{ngx_log_debug_http, ngx_log_error};

use super::authenticate::{authenticate, Decision};
use super::body::start_reading;
use super::conf::LocConf;
use super::ctx::{ctx_mut, ctx_or_new, record, Refusal};
use super::policy::{judge, Judgement};
use super::Module;

/// Adds the access handler. Called once per configuration load.
///
/// # Safety
/// `cf` must be the configuration being loaded, in postconfiguration.
pub unsafe fn install(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: cf is valid during postconfiguration, as the caller guarantees.
    let Some(core) = NgxHttpCoreModule::main_conf_mut(unsafe { &*cf }) else {
        return Status::NGX_ERROR.0;
    };
    // SAFETY: the access phase's handler array exists in the core main configuration during
    // postconfiguration, and ngx_array_push returns room for one element or NULL.
    let slot =
        unsafe { ngx::ffi::ngx_array_push(&mut core.phases[ngx_http_phases_NGX_HTTP_ACCESS_PHASE as usize].handlers) }
            as *mut ngx_http_handler_pt;
    if slot.is_null() {
        return Status::NGX_ERROR.0;
    }
    // SAFETY: slot is non-null room for one handler pointer.
    unsafe { *slot = Some(access_handler) };
    Status::NGX_OK.0
}

/// A label for a log line about an admitted request: the one recorded, or a fresh look.
fn label_for_log(request: &mut Request, conf: &LocConf) -> String {
    let recorded = ctx_mut(request).and_then(|ctx| ctx.label());
    let label = recorded.or_else(|| match authenticate(request, conf, true) {
        Decision::Admitted(admission) => admission.label,
        Decision::Refused => None,
    });
    label.map_or_else(String::new, |label| String::from_utf8_lossy(label.as_bytes()).escape_debug().to_string())
}

/// Records this module's own answer to an admitted request and logs why, naming who asked.
pub fn refuse(request: &mut Request, status: usize, body: Vec<u8>, reason: &str) {
    if let Some(conf) = Module::location_conf(request) {
        let label = label_for_log(request, conf);
        ngx_log_error!(NGX_LOG_ERR, request.log(), "\"{}\" refused with {}: {}", label, status, reason);
    }
    if let Some(ctx) = ctx_or_new(request) {
        ctx.refusal = Some(Refusal { status, body: Cow::Owned(body) });
    }
}

/// nginx runs access handlers for main requests only; subrequests share the main request's
/// admission.
extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a valid request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let Some(conf) = Module::location_conf(request).filter(|conf: &&LocConf| conf.is_gated()) else {
        return Status::NGX_DECLINED.0;
    };
    let checked_earlier = match ctx_mut(request) {
        // Back from reading the body: its verdict is the answer.
        Some(ctx) if ctx.body_verdict.is_some() => return ctx.body_verdict.unwrap_or_default(),
        Some(ctx) => ctx.checked,
        None => false,
    };
    if !checked_earlier {
        let record_user = Module::main_conf(request).is_some_and(|main| main.user_variable_used);
        let decision = authenticate(request, conf, record_user);
        let admitted_without_label = matches!(&decision, Decision::Admitted(admission) if admission.label.is_none());
        if admitted_without_label {
            // The common path: judged right here, nothing kept, nothing allocated.
            let Decision::Admitted(admission) = decision else { unreachable!() };
            return act_on(r, conf, judge(request, conf, &admission));
        }
        if record(request, conf, decision).is_none() {
            return Status::NGX_ERROR.0;
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
            if let Some(ctx) = ctx_mut(request) {
                let body = Cow::Borrowed(super::filters::unauthorized_body(ctx.challenges));
                ctx.refusal = Some(Refusal { status: NGX_HTTP_UNAUTHORIZED as usize, body });
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
    match judgement {
        Judgement::Allow => {
            ngx_log_debug_http!(request, "ollama auth: access granted");
            Status::NGX_OK.0
        }
        Judgement::AllowListing(listing, options) => {
            let Some(ctx) = ctx_or_new(request) else { return Status::NGX_ERROR.0 };
            ctx.listing = Some((listing, options));
            Status::NGX_OK.0
        }
        Judgement::ReadBody(members, options) => start_reading(r, members, options),
        Judgement::Refuse { status, body, reason } => {
            if ctx_or_new(request).is_some_and(|ctx| ctx.challenges == 0) {
                // An admitted request's context may be new: its 401 (expired) needs challenges.
                if let Some(ctx) = ctx_mut(request) {
                    ctx.challenges = super::ctx::challenges_of(conf);
                }
            }
            refuse(request, status, body, &reason);
            status as ngx_int_t
        }
    }
}
