//! `$ollama_request_model`: the model a request names, normalized as Ollama normalizes it
//! (`gemma3` is `gemma3:latest`, case folded), from the path or the JSON body; empty when it
//! names none. Where the configuration reads it (or a location routes through a fleet), the body
//! of a model-bearing request is read in the preaccess phase, before `limit_req` keys on it, and
//! kept for `proxy_pass` as `body` keeps it; a gated location reads it only for an admitted
//! credential, so a stranger's body is never buffered for this.

use std::any::Any;

use ngx::core::Status;
use ngx::ffi::{
    ngx_http_core_run_phases, ngx_http_finalize_request, ngx_http_read_client_request_body, ngx_http_request_t,
    ngx_int_t, ngx_variable_value_t, NGX_HTTP_SPECIAL_RESPONSE,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, Request};

use crate::body::as_ollama_decodes;
use crate::buffers::{append_chain, single_memory_buffer};
use crate::conf::LocConf;
use crate::ctx::{ctx_mut, ctx_or_new, decided_with_label};
use crate::hooks::copied_variable;
use crate::module::Module;
use ngx_ollama_auth::fleet::request_model;
use ngx_ollama_auth::policy::{classify, strip_prefix, Method};

/// A body larger than this is not read for its model (the variable is empty then): as much as
/// `body` scans for a key limited to some models.
const MAX_READ_BODY: usize = 64 << 20;

/// What this module's fleet code keeps for one request (in the request context's `fleet` slot).
#[derive(Default)]
pub struct FleetCtx {
    /// The body was asked for (`Some(false)`: being read; `Some(true)`: read).
    pub body: Option<bool>,
    /// The request's model, once looked up: `Some(None)` names none.
    pub model: Option<Option<String>>,
    /// The member chosen for the request, counted busy until the request ends.
    pub chosen: Option<super::shared::Chosen>,
    /// Members tried before and failed (a retry through `error_page`): not chosen again.
    pub tried: Vec<usize>,
}

/// The request's fleet context, made if there is none yet.
pub fn fleet_ctx(request: &mut Request) -> Option<&mut FleetCtx> {
    let ctx = ctx_or_new(request)?;
    if ctx.fleet.is_none() {
        ctx.fleet = Some(Box::new(FleetCtx::default()) as Box<dyn Any>);
    }
    ctx.fleet.as_mut()?.downcast_mut::<FleetCtx>()
}

/// The request's fleet context, if one was made.
fn fleet_ctx_if_any(request: &mut Request) -> Option<&mut FleetCtx> {
    ctx_mut(request)?.fleet.as_mut()?.downcast_mut::<FleetCtx>()
}

/// The method and path as the policy reads them (after `ollama_auth_path_prefix`).
fn method_and_path<'r>(request: &'r Request, conf: &LocConf) -> Option<(Method, &'r [u8])> {
    let method = Method::from_name(request.as_ref().method_name.as_bytes());
    Some((method, strip_prefix(request.as_ref().uri.as_bytes(), conf.path_prefix())?))
}

/// Whether the request's endpoint names its model in the body.
fn body_names_model(request: &Request, conf: &LocConf) -> bool {
    method_and_path(request, conf).is_some_and(|(method, path)| !classify(method, path).model_members.is_empty())
}

/// The preaccess handler (installed only when something reads the model): starts reading the
/// body of a model-bearing request in a location that reads it.
pub extern "C" fn preaccess_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    {
        // SAFETY: nginx calls phase handlers with a valid request; the borrow ends with this
        // block, before the body read may run the phases again.
        let request = unsafe { Request::from_ngx_http_request(r) };
        if !request.is_main() {
            return Status::NGX_DECLINED.0;
        }
        let Some(conf) = Module::location_conf(request) else { return Status::NGX_DECLINED.0 };
        if !reads_model_here(request, conf) || !body_names_model(request, conf) {
            return Status::NGX_DECLINED.0;
        }
        match fleet_ctx_if_any(request).and_then(|ctx| ctx.body) {
            Some(true) => return Status::NGX_DECLINED.0,
            Some(false) => return Status::NGX_DONE.0,
            None => {}
        }
        if conf.is_gated() {
            // Only an admitted credential's body is read here; the access phase refuses the rest.
            let admitted = decided_with_label(request).is_some_and(|ctx| ctx.admission.is_some());
            if !admitted {
                return Status::NGX_DECLINED.0;
            }
        }
        let Some(ctx) = fleet_ctx(request) else { return Status::NGX_ERROR.0 };
        ctx.body = Some(false);
    }
    // SAFETY: a valid main request; nginx calls body_read when the whole body is in (maybe at
    // once, before this returns).
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_read)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    // SAFETY: reading took a reference on the request (r->main->count); NGX_DONE gives it back.
    unsafe { ngx_http_finalize_request(r, Status::NGX_DONE.0) };
    Status::NGX_DONE.0
}

unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    {
        // SAFETY: nginx calls the post handler with the request whose body was read; the borrow
        // ends with this block, before the phases run again.
        let request = unsafe { Request::from_ngx_http_request(r) };
        if let Some(ctx) = fleet_ctx(request) {
            ctx.body = Some(true);
        }
    }
    // SAFETY: as `body` does (after nginx's mirror module): the body is kept for proxy_pass and
    // for an access-phase read, and the phases go on from this handler, which now declines.
    unsafe {
        (*r).set_preserve_body(1);
        (*r).write_event_handler = Some(ngx_http_core_run_phases);
        ngx_http_core_run_phases(r);
    }
}

/// The request's model, normalized; looked up once per request and kept.
pub fn model_of(request: &mut Request, conf: &LocConf) -> Option<String> {
    if let Some(known) = fleet_ctx_if_any(request).and_then(|ctx| ctx.model.clone()) {
        return known;
    }
    let read_here = fleet_ctx_if_any(request).is_some_and(|ctx| ctx.body == Some(true));
    let request_body = request.as_ref().request_body;
    // SAFETY: r->request_body is NULL or nginx's record of the body read so far; once read in
    // full its chain holds valid buffers (memory or the still open temporary file).
    let chain = if request_body.is_null() { std::ptr::null_mut() } else { unsafe { (*request_body).bufs } };
    let read = read_here || !chain.is_null();
    let names_in_body = body_names_model(request, conf);
    let (method, path) = method_and_path(request, conf)?;
    let mut copied = Vec::new();
    let body = if !read || chain.is_null() {
        None
    } else {
        // SAFETY: as above: a body read in full.
        match unsafe { single_memory_buffer(chain) } {
            Some(bytes) => Some(bytes),
            // SAFETY: as above.
            None => unsafe { append_chain(chain, &mut copied, MAX_READ_BODY) }.ok().map(|_| &copied[..]),
        }
    };
    // Read as Ollama reads it: a zstd body decoded; one that cannot be names no model.
    let decoded = body.map(|bytes| as_ollama_decodes(request, path, bytes));
    let body = match &decoded {
        Some(Ok(Some((decoded, _)))) => Some(&decoded[..]),
        Some(Ok(None)) => body,
        Some(Err(_)) | None => None,
    };
    let model = request_model(method, path, body);
    if read || !names_in_body {
        if let Some(ctx) = fleet_ctx(request) {
            ctx.model = Some(model.clone());
        }
    }
    model
}

/// The variable that names the model a request asks for.
pub const REQUEST_MODEL: &str = "ollama_request_model";

/// Whether this location reads the body of a model-bearing request for its model: it routes
/// through a fleet, or it is gated and the configuration reads `$ollama_request_model`.
pub fn reads_model_here(request: &Request, conf: &LocConf) -> bool {
    conf.fleet.is_some() || (conf.is_gated() && Module::main_conf(request).is_some_and(|main| main.request_model_used))
}

/// Evaluates `$ollama_request_model`.
pub unsafe extern "C" fn get_request_model(
    r: *mut ngx_http_request_t,
    value: *mut ngx_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: nginx's arguments to a variable handler.
    unsafe { copied_variable(r, value, |main| Module::location_conf(main).and_then(|conf| model_of(main, conf))) }
}
