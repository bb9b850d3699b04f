//! The caps on what one request may ask (`ollama_auth_caps`, and an entry's `num_ctx=`,
//! `num_predict=`, `keep_alive=`): the body rewritten to them, and the `x-ollama-clamped`
//! header and `$ollama_clamped` variable that say what was changed. Which caps apply is
//! `ngx_ollama_auth::judge::cap_check`; the rules are `ngx_ollama_auth::caps`.

use ngx::http::Request;
use ngx::ngx_log_debug_http;

use super::ctx::ctx_mut;
use ngx_ollama_auth::caps::apply_caps;
use ngx_ollama_auth::judge::CapCheck;
use ngx_ollama_auth::refusal::Refusal;

/// The response header naming what the gate changed in the request.
pub const CLAMPED_HEADER: &str = "x-ollama-clamped";

/// Clamps a body that has been read: the body to send instead (`None`: as it is), or the
/// refusal. Keeps what was changed for the header and the variable.
pub fn clamp_body(request: &mut Request, check: &CapCheck, body: &[u8]) -> Result<Option<Vec<u8>>, Refusal> {
    let clamped = apply_caps(body, check.target, &check.caps, check.may_unload)
        .map_err(|refusal| Refusal::of_caps(refusal, check.who))?;
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
