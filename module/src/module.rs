//! `Module`: this module as the ngx crate knows it, the key to its configurations and request
//! contexts. It names the module's static through its symbol, as a C module's files name theirs
//! with `extern ngx_module_t`, so that no file needs the registration in `lib.rs`.

use ngx::ffi::ngx_module_t;
use ngx::http::HttpModule;

extern "C" {
    /// Defined, with its commands and hooks, in `lib.rs`.
    static mut ngx_http_ollama_auth_module: ngx_module_t;
}

pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the symbol is the `ngx_module_t` static of `lib.rs` (same type, same crate).
        // nginx writes it only while it loads and configures modules, in the master process,
        // before any handler can call this.
        unsafe { &*std::ptr::addr_of!(ngx_http_ollama_auth_module) }
    }
}

/// This module's tag: nginx tells a module's shared zones (one per name and tag) and buffers
/// (for recycling) by it.
pub fn module_tag() -> *mut std::ffi::c_void {
    std::ptr::from_ref(Module::module()).cast_mut().cast()
}
