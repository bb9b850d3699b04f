//! What every directive handler needs: its arguments, its configuration, its failure message,
//! its line in the commands table, and the data of a shared zone it defines.

use std::ffi::{c_char, c_void, CStr};

use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_pool_cleanup_add, ngx_shm_zone_init_pt, ngx_shm_zone_t, ngx_str_t, ngx_uint_t,
    NGX_HTTP_LOC_CONF_OFFSET,
};

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

/// Gives a shared zone a directive just added its data: `data`, owned by the configuration (freed
/// with its pool, after every request of it), and `init`, which nginx calls when it makes the
/// zone. `None` if the pool is out of memory.
///
/// # Safety
/// `cf` must be the configuration being parsed, and `zone` a zone it added that has no data yet.
pub unsafe fn attach_to_zone<T>(
    cf: *mut ngx_conf_t,
    zone: *mut ngx_shm_zone_t,
    data: Box<T>,
    init: ngx_shm_zone_init_pt,
) -> Option<*mut T> {
    // SAFETY: cf's pool lives as long as the configuration (the caller's promise);
    // ngx_pool_cleanup_add returns a cleanup record or NULL.
    let cleanup = unsafe { ngx_pool_cleanup_add((*cf).pool, 0) };
    if cleanup.is_null() {
        return None;
    }
    let data = Box::into_raw(data);
    // SAFETY: the cleanup record just added, and the zone nginx added for this configuration;
    // the box is freed once, by the cleanup, when the pool goes.
    unsafe {
        (*cleanup).data = data.cast();
        (*cleanup).handler = Some(drop_box::<T>);
        (*zone).data = data.cast();
        (*zone).init = init;
    }
    Some(data)
}

unsafe extern "C" fn drop_box<T>(data: *mut c_void) {
    // SAFETY: registered by attach_to_zone for the box it leaked; run once, with the pool.
    drop(unsafe { Box::from_raw(data.cast::<T>()) });
}
