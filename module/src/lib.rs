//! `ngx_http_ollama_auth_module`: the nginx glue of ngx-ollama-auth, and its registration with
//! nginx. The rules themselves are plain Rust in the `ngx_ollama_auth` crate.
//!
//! This layer is thin on purpose: it turns nginx's structures into the plain Rust types of the
//! ngx_ollama_auth crate and back, one file (or folder) per nginx mechanism; CONTRIBUTING.md
//! gives each one's job. This file registers the module: its commands, its context, and what a
//! worker does when it starts and exits. Every `unsafe` block says what makes it sound.

mod access;
mod accounting;
mod answer;
mod authenticate;
mod body;
mod buffers;
mod caps;
mod clock;
mod conf;
mod ctx;
mod directive;
mod files;
mod filters;
mod fleet;
mod hooks;
mod limit;
mod metrics;
mod module;
mod policy;
mod queue;
mod variables;
mod zone;

use std::ptr::addr_of;

use ngx::core::Status;
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t, ngx_uint_t, NGX_CONF_1MORE,
    NGX_CONF_BLOCK, NGX_CONF_TAKE1, NGX_CONF_TAKE2, NGX_CONF_TAKE23, NGX_CONF_TAKE3, NGX_CONF_TAKE4, NGX_HTTP_LMT_CONF,
    NGX_HTTP_LOC_CONF, NGX_HTTP_MAIN_CONF, NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF,
};
use ngx::http::HttpModule;
use ngx::ngx_string;

use directive::{location_directive, main_directive};
use module::Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while it loads and configures
        // modules, in the master process, before any request handler can call this.
        unsafe { &*addr_of!(ngx_http_ollama_auth_module) }
    }
}

/// Where the file directives (and most others) may appear.
const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;
const FILE_DIRECTIVE_CONTEXTS: u32 = ANY_LEVEL | NGX_HTTP_LMT_CONF | NGX_CONF_TAKE1;

/// Every directive of the module, and the handler that sets it.
static mut COMMANDS: [ngx_command_t; 14] = [
    location_directive(ngx_string!("ollama_bearer_keys_file"), FILE_DIRECTIVE_CONTEXTS, conf::set_keys_file),
    location_directive(ngx_string!("ollama_basic_user_file"), FILE_DIRECTIVE_CONTEXTS, conf::set_user_file),
    location_directive(ngx_string!("ollama_auth_realm"), FILE_DIRECTIVE_CONTEXTS, conf::set_realm),
    location_directive(ngx_string!("ollama_auth_default_scopes"), FILE_DIRECTIVE_CONTEXTS, conf::set_default_scopes),
    location_directive(ngx_string!("ollama_auth_path_prefix"), FILE_DIRECTIVE_CONTEXTS, conf::set_path_prefix),
    location_directive(ngx_string!("ollama_auth_json_errors"), ANY_LEVEL | NGX_CONF_TAKE1, conf::set_json_errors),
    main_directive(ngx_string!("ollama_auth_zone"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE23, zone::directive::set_zone),
    location_directive(ngx_string!("ollama_auth_usage"), FILE_DIRECTIVE_CONTEXTS, conf::set_usage),
    location_directive(ngx_string!("ollama_auth_metrics"), NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1, metrics::set_metrics),
    location_directive(ngx_string!("ollama_auth_caps"), ANY_LEVEL | NGX_CONF_1MORE, conf::set_caps),
    main_directive(
        ngx_string!("ollama_auth_fleet"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_BLOCK | NGX_CONF_1MORE,
        fleet::directive::set_fleet,
    ),
    location_directive(
        ngx_string!("ollama_auth_use_fleet"),
        NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        fleet::directive::set_use_fleet,
    ),
    location_directive(
        ngx_string!("ollama_auth_queue"),
        ANY_LEVEL | NGX_CONF_TAKE2 | NGX_CONF_TAKE3 | NGX_CONF_TAKE4,
        queue::directive::set_queue,
    ),
    ngx_command_t::empty(),
];

/// Before the configuration is read: the variables, which directives may name.
unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    for step in [variables::register, fleet::install::register, queue::wait::register_variable] {
        // SAFETY: nginx calls this with the configuration being loaded, as all of them require.
        let rc = unsafe { step(cf) };
        if rc != Status::NGX_OK.0 {
            return rc;
        }
    }
    Status::NGX_OK.0
}

/// After it is read: the phase handlers and filters, installed only where they are used.
unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    for step in [
        variables::note_use,
        fleet::install::install,
        access::install,
        accounting::install_if_used,
        filters::install::install,
    ] {
        // SAFETY: nginx calls this with the configuration being loaded, in postconfiguration,
        // as all of them require.
        let rc = unsafe { step(cf) };
        if rc != Status::NGX_OK.0 {
            return rc;
        }
    }
    Status::NGX_OK.0
}

static MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(preconfiguration),
    postconfiguration: Some(postconfiguration),
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
    commands: addr_of!(COMMANDS) as *mut ngx_command_t,
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_process: Some(init_process),
    exit_process: Some(zone::state_timer::save_on_exit),
    ..ngx_module_t::default()
};

/// At worker start: a sweep of the queues, the files' readability check, the fleets' poller,
/// and the zones' state-file timer.
extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    queue::wait::start_in_worker(cycle);
    conf::check_files_in_worker(cycle);
    fleet::poll::start_in_worker(cycle);
    zone::state_timer::start(cycle);
    Status::NGX_OK.0
}
