//! `Module`: this module as the ngx crate knows it, the key to its configurations and request
//! contexts (its `HttpModule` implementation, which names the module's static, is in `lib.rs`),
//! and the tag nginx tells its zones and buffers by.

use ngx::http::HttpModule;

pub struct Module;

/// This module's tag: nginx tells a module's shared zones (one per name and tag) and buffers
/// (for recycling) by it.
pub fn module_tag() -> *mut std::ffi::c_void {
    std::ptr::from_ref(Module::module()).cast_mut().cast()
}
