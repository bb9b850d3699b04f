//! `$ollama_auth_user`: who this location's gate admitted. A key's name, a fingerprint of an
//! unnamed key, or the Basic user name; empty when no one was admitted. Never a key.

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_int_t, ngx_variable_value_t, NGX_HTTP_VAR_NOCACHEABLE,
};
use ngx::http::Request;
use ngx::ngx_string;

use super::access::checked_with_label;

pub const NAME: &[u8] = b"ollama_auth_user";

/// Registers the variable. Called in preconfiguration, so configurations can name it.
///
/// # Safety
/// `cf` must be the configuration being loaded.
pub unsafe fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    let mut name = ngx_string!("ollama_auth_user");
    // SAFETY: cf is valid during preconfiguration; nginx copies nothing from `name` that it does
    // not keep in its own pool, and the name's bytes are static.
    let variable = ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as usize);
    if variable.is_null() {
        return Status::NGX_ERROR.0;
    }
    (*variable).get_handler = Some(get_user);
    Status::NGX_OK.0
}

/// Evaluates the variable. If it is read before the access phase (by `limit_req` or
/// `limit_conn`, say), the credential is checked here and the answer kept for the access phase.
unsafe extern "C" fn get_user(r: *mut ngx_http_request_t, value: *mut ngx_variable_value_t, _data: usize) -> ngx_int_t {
    // SAFETY: nginx calls variable handlers with a valid request and value slot; a subrequest's
    // main request is valid for as long as the subrequest.
    let main = Request::from_ngx_http_request((*r).main);
    let user = match checked_with_label(main) {
        Some(ctx) if !ctx.user.data.is_null() => ctx.user,
        _ => ngx::ffi::ngx_str_t { len: 0, data: b"".as_ptr() as *mut u8 },
    };
    let value = &mut *value;
    value.set_len(user.len as u32);
    value.data = user.data;
    value.set_valid(1);
    value.set_no_cacheable(1);
    value.set_not_found(0);
    Status::NGX_OK.0
}
