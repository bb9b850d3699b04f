//! `ngx_http_ollama_auth_module`: the nginx glue of ngx-ollama-auth, and its registration with
//! nginx. The rules themselves are plain Rust in the `ngx_ollama_auth` crate.
//!
//! This layer is thin on purpose: it turns nginx's structures into the plain Rust types of the
//! ngx_ollama_auth crate and back. One file per nginx mechanism: `conf` (directives and the
//! watched files), `ctx` (the per-request context and its decision), `authenticate` (the
//! credential check), `policy` (what an admitted entry may do), `access` (the access-phase
//! handler), `body` (reading a request body for its model), `caps` (clamping it to the caps),
//! `buffers` (copying nginx buffer chains), `filters` (this module's refusals, cut-down model
//! listings, counted answers), `zone` (the shared-memory zone and its state file), `accounting`
//! (counting a finished request, the log phase), `limit` (admitting a limited key's request),
//! `metrics` (the Prometheus endpoint), `variables` (`$ollama_auth_user`, the usage variables
//! and `$ollama_clamped`), `fleet` (several Ollama servers: `$ollama_request_model`, routing by
//! model, polling). Every `unsafe` block says what makes it sound.

mod access;
mod accounting;
mod authenticate;
mod body;
mod buffers;
mod caps;
mod conf;
mod ctx;
mod filters;
mod fleet;
mod limit;
mod metrics;
mod policy;
mod queue;
mod variables;
mod zone;

use std::ffi::c_char;
use std::ptr::addr_of;

use ngx::ffi::{ngx_command_t, ngx_http_module_t, ngx_int_t, ngx_module_t, ngx_uint_t, NGX_HTTP_MODULE};
use ngx::http::HttpModule;

pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while it loads and configures
        // modules, in the master process, before any request handler can call this.
        unsafe { &*addr_of!(ngx_http_ollama_auth_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx::ffi::ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx calls this with the configuration being loaded, as register requires.
        let rc = unsafe { variables::register(cf) };
        if rc != ngx::core::Status::NGX_OK.0 {
            return rc;
        }
        // SAFETY: as above.
        let rc = unsafe { fleet::register(cf) };
        if rc != ngx::core::Status::NGX_OK.0 {
            return rc;
        }
        // SAFETY: as above.
        unsafe { queue::register_variable(cf) }
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx::ffi::ngx_conf_t) -> ngx_int_t {
        for step in
            [variables::note_use, fleet::install, access::install, accounting::install_if_used, filters::install]
        {
            // SAFETY: nginx calls this with the configuration being loaded, in
            // postconfiguration, as all of them require.
            let rc = unsafe { step(cf) };
            if rc != ngx::core::Status::NGX_OK.0 {
                return rc;
            }
        }
        ngx::core::Status::NGX_OK.0
    }
}

static MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(conf::merge_loc_conf),
};

// The exports table that lets nginx's `load_module` find the module in this cdylib.
ngx::ngx_modules!(ngx_http_ollama_auth_module);

#[used]
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_ollama_auth_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(MODULE_CTX) as _,
    // nginx only reads the commands array, which lives as long as the module.
    commands: addr_of!(conf::COMMANDS) as *mut ngx_command_t,
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_process: Some(init_process),
    exit_process: Some(zone::save_on_exit),
    ..ngx_module_t::default()
};

/// At worker start: the files' readability check, the fleets' poller, and a sweep of the queues.
extern "C" fn init_process(cycle: *mut ngx::ffi::ngx_cycle_t) -> ngx_int_t {
    queue::start_in_worker(cycle);
    let rc = conf::check_files_in_worker(cycle);
    fleet::start_in_worker(cycle);
    rc
}

/// The `char *` nginx expects from a directive handler that fails with a message.
fn conf_error(message: &'static std::ffi::CStr) -> *mut c_char {
    message.as_ptr() as *mut c_char
}
