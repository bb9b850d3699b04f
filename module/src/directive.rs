//! What every directive handler needs: its arguments, its configuration, its failure message,
//! and its line in the commands table.

use std::ffi::{c_char, c_void, CStr};

use ngx::ffi::{ngx_command_t, ngx_conf_t, ngx_str_t, ngx_uint_t, NGX_HTTP_LOC_CONF_OFFSET};

/// A directive handler, as nginx calls it.
pub type Handler = extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

/// The `char *` nginx expects from a directive handler that fails with a message: nginx writes
/// `"<directive>" <message>` and the file and line.
pub fn conf_error(message: &'static CStr) -> *mut c_char {
    message.as_ptr().cast_mut()
}

/// The arguments of the directive being parsed, its name first.
///
/// # Safety
/// `cf` must be the configuration being parsed, with a directive's arguments.
pub unsafe fn arguments<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: cf->args holds the directive and its arguments while it is parsed (the caller's
    // promise); nginx keeps them in the configuration pool until the handler returns.
    unsafe { (*(*cf).args).as_slice::<ngx_str_t>() }
}

/// The configuration a directive handler is given, as this module's type for it.
///
/// # Safety
/// `conf` must be the configuration nginx passes a handler of this module, made by this
/// module's `create_*_conf` as a `T`, and not otherwise borrowed while the result lives.
pub unsafe fn conf_mut<'a, T>(conf: *mut c_void) -> &'a mut T {
    // SAFETY: the caller's promise: conf points at a live, unshared T.
    unsafe { &mut *conf.cast::<T>() }
}

/// A directive that sets this module's location configuration.
pub const fn location_directive(name: ngx_str_t, contexts: u32, set: Handler) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: contexts as ngx_uint_t,
        set: Some(set),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: std::ptr::null_mut(),
    }
}

/// A directive of the `http` block that sets this module's main configuration (or nothing
/// of any level: zones and fleets are found through the cycle).
pub const fn main_directive(name: ngx_str_t, contexts: u32, set: Handler) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: contexts as ngx_uint_t,
        set: Some(set),
        conf: 0,
        offset: 0,
        post: std::ptr::null_mut(),
    }
}
