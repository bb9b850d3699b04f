//! `$ollama_auth_user`: who this location's gate admitted. A key's name, a fingerprint of an
//! unnamed key, or the Basic user name; empty when no one was admitted. Never a key.
//!
//! `$ollama_model`, `$ollama_prompt_tokens`, `$ollama_completion_tokens`: what the answer to an
//! admitted request said, for the log phase; empty when it said nothing (see `accounting`).
//!
//! `$ollama_clamped`: what the caps changed in the request (`num_ctx=8192, keep_alive=30m`),
//! as the `x-ollama-clamped` header says it; empty when nothing was changed.

use ngx::core::Status;
use ngx::ffi::{ngx_conf_t, ngx_http_request_t, ngx_int_t, ngx_variable_value_t};
use ngx::http::{HttpModuleMainConf, Request};

use super::accounting::outcome;
use super::ctx::{ctx_mut, decided_with_label};
use super::hooks::{add_variable, copied_variable, fill, is_variable_used, Getter};
use super::module::Module;

const NAME: &str = "ollama_auth_user";
const CLAMPED: &str = "ollama_clamped";

/// What the answer said: the model, the prompt tokens, the completion tokens.
const USAGE_VARIABLES: [(&str, usize); 3] =
    [("ollama_model", 0), ("ollama_prompt_tokens", 1), ("ollama_completion_tokens", 2)];

/// Registers the variables. Called in preconfiguration, so configurations can name them.
///
/// # Safety
/// `cf` must be the configuration being loaded.
pub unsafe fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    let all = [(NAME, 0, get_user as Getter), (CLAMPED, 0, get_clamped as Getter)]
        .into_iter()
        .chain(USAGE_VARIABLES.map(|(name, which)| (name, which, get_usage as Getter)));
    for (name, data, getter) in all {
        // SAFETY: the caller's promise.
        if unsafe { add_variable(cf, name, getter, data) } != Status::NGX_OK.0 {
            return Status::NGX_ERROR.0;
        }
    }
    Status::NGX_OK.0
}

/// Notes whether the configuration reads the variables. If not, admitted requests need no
/// label and allocate nothing for it, and answers are not scanned for the usage variables.
///
/// # Safety
/// `cf` must be the configuration being loaded, in postconfiguration.
pub unsafe fn note_use(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: cf is valid during postconfiguration (the caller's promise).
    let cf = unsafe { &*cf };
    let user_used = is_variable_used(cf, NAME);
    let usage_used = USAGE_VARIABLES.iter().any(|(name, _)| is_variable_used(cf, name));
    if let Some(main) = Module::main_conf_mut(cf) {
        main.user_variable_used = user_used;
        main.usage_variables_used = usage_used;
    }
    Status::NGX_OK.0
}

/// Evaluates a usage variable: what the answer so far said.
unsafe extern "C" fn get_usage(
    r: *mut ngx_http_request_t,
    value: *mut ngx_variable_value_t,
    which: usize,
) -> ngx_int_t {
    let text = |main: &mut Request| {
        let accounting = ctx_mut(main)?.accounting.as_ref()?;
        let outcome = outcome(accounting.scanner.as_deref());
        Some(match which {
            0 => outcome.model.to_owned(),
            1 => outcome.prompt_tokens.map(|n| n.to_string()).unwrap_or_default(),
            _ => outcome.completion_tokens.map(|n| n.to_string()).unwrap_or_default(),
        })
    };
    // SAFETY: nginx's arguments to a variable handler.
    unsafe { copied_variable(r, value, text) }
}

/// Evaluates `$ollama_clamped`.
unsafe extern "C" fn get_clamped(
    r: *mut ngx_http_request_t,
    value: *mut ngx_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: nginx's arguments to a variable handler.
    unsafe { copied_variable(r, value, |main| ctx_mut(main)?.clamped.clone()) }
}

/// Evaluates the variable. If it is read before the access phase (by `limit_req` or
/// `limit_conn`, say), the credential is checked here and the answer kept for the access phase.
unsafe extern "C" fn get_user(r: *mut ngx_http_request_t, value: *mut ngx_variable_value_t, _data: usize) -> ngx_int_t {
    // SAFETY: nginx calls variable handlers with a valid request, whose main request is valid
    // for as long as it is.
    let main = unsafe { Request::from_ngx_http_request((*r).main) };
    let user = decided_with_label(main).and_then(|ctx| ctx.label());
    // SAFETY: nginx hands variable handlers a valid value slot to fill.
    fill(unsafe { &mut *value }, user)
}
