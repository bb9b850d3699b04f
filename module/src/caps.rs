//! The caps on what one request may ask (`ollama_auth_caps`, and an entry's `num_ctx=`,
//! `num_predict=`, `keep_alive=`): which requests have their body read for them, the body
//! rewritten to them, and the `x-ollama-clamped` header and `$ollama_clamped` variable that
//! say what was changed. The rules are plain Rust in `ngx_ollama_auth::caps`.

use ngx::ffi::{NGX_HTTP_BAD_REQUEST, NGX_HTTP_FORBIDDEN};
use ngx::http::Request;
use ngx::ngx_log_debug_http;

use super::authenticate::Admission;
use super::conf::LocConf;
use super::ctx::ctx_mut;
use ngx_ollama_auth::caps::{apply_caps, target, CapRefusal, Caps, Target};
use ngx_ollama_auth::metrics::RefusalReason;
use ngx_ollama_auth::policy::{strip_prefix, Method, Scopes};

/// The response header naming what the gate changed in the request.
pub const CLAMPED_HEADER: &str = "x-ollama-clamped";

/// What a request's body is clamped to.
pub struct CapCheck {
    pub caps: Caps,
    pub target: Target,
    /// The entry has the `manage` scope: it may unload a model.
    pub may_unload: bool,
    /// "key" or "user", for the refusal's wording.
    pub who: &'static str,
}

/// The caps that apply to this request: its entry's over its location's, if any can change a
/// request to this endpoint. Looked up from the entry on every request, so an edited key file
/// counts at once.
pub fn cap_check(request: &Request, conf: &LocConf, admission: &Admission) -> Option<CapCheck> {
    let options = admission.options.as_deref();
    let own = options.map(|options| options.caps).unwrap_or_default();
    let caps = own.over(conf.caps.as_ref().unwrap_or(&Caps::default()));
    if caps.is_empty() {
        return None;
    }
    let method = Method::from_name(request.as_ref().method_name.as_bytes());
    let path = strip_prefix(request.as_ref().uri.as_bytes(), conf.path_prefix())?;
    let target = target(method, path).filter(|&target| caps.apply_to(target))?;
    let scopes = options.and_then(|options| options.scopes).unwrap_or(conf.default_scopes());
    let who = if admission.is_user { "user" } else { "key" };
    Some(CapCheck { caps, target, may_unload: scopes.contains(Scopes::MANAGE), who })
}

/// A body the caps refuse: what `policy::refuse` makes the answer of.
pub struct Refused {
    pub status: u32,
    pub kind: &'static str,
    pub message: String,
    pub why: RefusalReason,
}

/// Clamps a body that has been read: the body to send instead (`None`: as it is), or the
/// refusal. Keeps what was changed for the header and the variable.
pub fn clamp_body(request: &mut Request, check: &CapCheck, body: &[u8]) -> Result<Option<Vec<u8>>, Refused> {
    match apply_caps(body, check.target, &check.caps, check.may_unload) {
        Ok(clamped) => {
            if !clamped.changed.is_empty() {
                let summary = clamped.summary();
                ngx_log_debug_http!(request, "ollama auth: request clamped: {}", summary);
                // The context exists: reading the body made it.
                if let Some(ctx) = ctx_mut(request) {
                    ctx.clamped = Some(summary);
                }
            }
            Ok(clamped.body)
        }
        Err(CapRefusal::BadRequest(message)) => {
            Err(Refused { status: NGX_HTTP_BAD_REQUEST, kind: "bad request", message, why: RefusalReason::BadRequest })
        }
        Err(CapRefusal::Unload(message)) => {
            let message = format!("{message}; this {} does not have it", check.who);
            Err(Refused { status: NGX_HTTP_FORBIDDEN, kind: "forbidden", message, why: RefusalReason::ForbiddenScope })
        }
    }
}
