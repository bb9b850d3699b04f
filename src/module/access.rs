//! The access-phase handler: admits a request with a valid credential, refuses the rest with 401.
//!
//! The 401 goes through nginx's special-response path, so `auth_delay`, `error_page` and
//! `satisfy any` behave as with `auth_basic`; `filters` turns it into a challenge plus JSON.

use ngx::core::Status;
use ngx::ffi::{ngx_conf_t, ngx_http_handler_pt, ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_request_t, ngx_int_t, NGX_HTTP_UNAUTHORIZED};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request};
use ngx::ngx_log_debug_http;

use super::authenticate::{authenticate, Decision};
use super::conf::LocConf;
use super::ctx::{ctx_mut, record};
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
    let slot = unsafe { ngx::ffi::ngx_array_push(&mut core.phases[ngx_http_phases_NGX_HTTP_ACCESS_PHASE as usize].handlers) }
        as *mut ngx_http_handler_pt;
    if slot.is_null() {
        return Status::NGX_ERROR.0;
    }
    // SAFETY: slot is non-null room for one handler pointer.
    unsafe { *slot = Some(access_handler) };
    Status::NGX_OK.0
}

/// nginx runs access handlers for main requests only; subrequests share the main request's
/// admission.
extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a valid request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let Some(conf) = Module::location_conf(request).filter(|conf: &&LocConf| conf.is_gated()) else {
        return Status::NGX_DECLINED.0;
    };
    let record_user = Module::main_conf(request).is_some_and(|main| main.user_variable_used);

    let admitted = match ctx_mut(request) {
        Some(ctx) if ctx.checked => ctx.admitted, // decided earlier, when the variable was read
        _ => match authenticate(request, conf, record_user) {
            Decision::Admitted(None) => true,
            decision @ Decision::Admitted(Some(_)) => {
                if record(request, conf, decision).is_none() {
                    return Status::NGX_ERROR.0;
                }
                true
            }
            Decision::Refused => {
                if record(request, conf, Decision::Refused).is_none() {
                    return Status::NGX_ERROR.0;
                }
                false
            }
        },
    };
    if admitted {
        ngx_log_debug_http!(request, "ollama auth: access granted");
        return Status::NGX_OK.0;
    }
    let Some(ctx) = ctx_mut(request) else { return Status::NGX_ERROR.0 };
    ctx.refused = true;
    ngx_log_debug_http!(request, "ollama auth: access refused, 401");
    NGX_HTTP_UNAUTHORIZED as ngx_int_t
}
