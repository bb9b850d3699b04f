//! The fleet's hooks: its variables (`$ollama_request_model`, `$ollama_fleet_backend`), and its
//! phase handlers, added only where something needs them.

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_http_phases_NGX_HTTP_LOG_PHASE, ngx_http_phases_NGX_HTTP_PREACCESS_PHASE,
    ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE, ngx_int_t,
};
use ngx::http::HttpModuleMainConf;

use super::model::{get_request_model, REQUEST_MODEL};
use super::{health, model, route};
use crate::hooks::{add_phase_handler, add_variable, is_variable_used, Getter, PhaseHandler};
use crate::module::Module;

const BACKEND: &str = "ollama_fleet_backend";

/// Registers the variables. Called in preconfiguration.
///
/// # Safety
/// `cf` must be the configuration being loaded.
pub unsafe fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    for (name, getter) in [(REQUEST_MODEL, get_request_model as Getter), (BACKEND, route::get_backend as Getter)] {
        // SAFETY: the caller's promise.
        if unsafe { add_variable(cf, name, getter, 0) } != Status::NGX_OK.0 {
            return Status::NGX_ERROR.0;
        }
    }
    Status::NGX_OK.0
}

/// Notes whether the configuration reads `$ollama_request_model`, and adds the phase handlers
/// only where something needs them.
///
/// # Safety
/// `cf` must be the configuration being loaded, in postconfiguration.
pub unsafe fn install(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: cf is valid during postconfiguration (the caller's promise).
    let cfr = unsafe { &*cf };
    let used = is_variable_used(cfr, REQUEST_MODEL);
    let Some(main) = Module::main_conf_mut(cfr) else { return Status::NGX_ERROR.0 };
    main.request_model_used = used;
    let fleets = !main.fleets.is_empty();
    let mut handlers = Vec::new();
    if used || fleets {
        handlers.push((ngx_http_phases_NGX_HTTP_PREACCESS_PHASE, model::preaccess_handler as PhaseHandler));
    }
    if fleets {
        handlers.push((ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE, route::precontent_handler));
        handlers.push((ngx_http_phases_NGX_HTTP_LOG_PHASE, health::log_handler));
    }
    for (phase, handler) in handlers {
        // SAFETY: as this function's caller promises.
        if unsafe { add_phase_handler(cf, phase, handler) } != Status::NGX_OK.0 {
            return Status::NGX_ERROR.0;
        }
    }
    Status::NGX_OK.0
}
