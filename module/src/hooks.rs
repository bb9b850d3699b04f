//! Hooking into nginx's request processing: a handler in a phase, a variable and its value.

use ngx::core::Status;
use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_http_add_variable, ngx_http_handler_pt, ngx_http_request_t, ngx_http_variable_t,
    ngx_int_t, ngx_str_t, ngx_variable_value_t, NGX_HTTP_VAR_NOCACHEABLE,
};
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule, Request};

/// A phase handler, as nginx calls it.
pub type PhaseHandler = extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t;

/// A variable's handler, as nginx calls it.
pub type Getter = unsafe extern "C" fn(*mut ngx_http_request_t, *mut ngx_variable_value_t, usize) -> ngx_int_t;

/// Adds `handler` to a phase of every request.
///
/// # Safety
/// `cf` must be the configuration being loaded, in postconfiguration.
pub unsafe fn add_phase_handler(cf: *mut ngx_conf_t, phase: u32, handler: PhaseHandler) -> ngx_int_t {
    // SAFETY: cf is valid during postconfiguration (the caller's promise).
    let Some(core) = NgxHttpCoreModule::main_conf_mut(unsafe { &*cf }) else { return Status::NGX_ERROR.0 };
    // SAFETY: the phase's handler array exists in the core main configuration during
    // postconfiguration; ngx_array_push returns room for one element or NULL.
    let slot = unsafe { ngx_array_push(&mut core.phases[phase as usize].handlers) }.cast::<ngx_http_handler_pt>();
    if slot.is_null() {
        return Status::NGX_ERROR.0;
    }
    // SAFETY: non-null room for one handler pointer.
    unsafe { *slot = Some(handler) };
    Status::NGX_OK.0
}

/// Adds the variable `$name`, evaluated on every read by `getter` (given `data`).
///
/// # Safety
/// `cf` must be the configuration being loaded, in preconfiguration.
pub unsafe fn add_variable(cf: *mut ngx_conf_t, name: &str, getter: Getter, data: usize) -> ngx_int_t {
    let mut name = ngx_str_t { len: name.len(), data: name.as_ptr().cast_mut() };
    // SAFETY: cf is valid during preconfiguration (the caller's promise); nginx copies the name
    // into its own pool and never writes through `name.data`.
    let variable = unsafe { ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as usize) };
    if variable.is_null() {
        return Status::NGX_ERROR.0;
    }
    // SAFETY: non-null: the variable nginx just added, in the configuration's pool.
    unsafe {
        (*variable).get_handler = Some(getter);
        (*variable).data = data;
    }
    Status::NGX_OK.0
}

/// Whether the configuration reads `$name`: by postconfiguration, the variables it names are
/// indexed.
pub fn is_variable_used(cf: &ngx_conf_t, name: &str) -> bool {
    let Some(core) = NgxHttpCoreModule::main_conf(cf) else { return false };
    // SAFETY: the core module's `variables` array holds ngx_http_variable_t elements.
    let variables = unsafe { core.variables.as_slice::<ngx_http_variable_t>() };
    variables.iter().any(|variable| variable.name.as_bytes() == name.as_bytes())
}

/// Fills a variable's value with `text` (pool or configuration bytes), or the empty string:
/// every variable of this module's answers through it.
pub fn fill(value: &mut ngx_variable_value_t, text: Option<ngx_str_t>) -> ngx_int_t {
    let text = text.unwrap_or(ngx_str_t { len: 0, data: b"".as_ptr().cast_mut() });
    value.set_len(text.len as u32);
    value.data = text.data;
    value.set_valid(1);
    value.set_no_cacheable(1);
    value.set_not_found(0);
    Status::NGX_OK.0
}

/// Evaluates a variable of the request's main request to a copy of what `text` gives (the empty
/// string for `None`), in the request pool.
///
/// # Safety
/// `r` and `value` must be what nginx passes a variable handler.
pub unsafe fn copied_variable(
    r: *mut ngx_http_request_t,
    value: *mut ngx_variable_value_t,
    text: impl FnOnce(&mut Request) -> Option<String>,
) -> ngx_int_t {
    // SAFETY: nginx calls variable handlers with a valid request, whose main request is valid
    // for as long as it is.
    let main = unsafe { Request::from_ngx_http_request((*r).main) };
    let pool = main.as_ref().pool;
    // SAFETY: the request pool outlives the variable's use in this request.
    let copy = text(main).and_then(|text| unsafe { ngx_str_t::from_bytes(pool, text.as_bytes()) });
    // SAFETY: nginx hands variable handlers a valid value slot to fill.
    fill(unsafe { &mut *value }, copy)
}
