//! Admitting a limited key's request (`tokens=`, `requests=`, `parallel=`) in the zone of
//! `ollama_auth_usage`, once its policy allows it: counted before it goes to Ollama, in flight
//! until it ends (the context's `InFlight`), refused with 429 and `Retry-After` over a limit.
//! The counting itself is plain Rust (`ngx_ollama_auth::limits`).

use ngx::core::Status;
use ngx::ffi::{ngx_int_t, NGX_HTTP_FORBIDDEN, NGX_HTTP_SERVICE_UNAVAILABLE, NGX_HTTP_TOO_MANY_REQUESTS, NGX_LOG_ERR};
use ngx::http::Request;
use ngx::ngx_log_error;

use super::clock::now_ms;
use super::conf::LocConf;
use super::ctx::{ctx_mut, refuse, InFlight};
use super::zone::data::{LimitVerdict, Unenforceable};
use ngx_ollama_auth::judge::Refusal;
use ngx_ollama_auth::refusal::RefusalReason;

/// Counts an admitted request against its entry's limits, if it has any. Answers what the
/// access phase answers: `NGX_OK`, or the status of a refusal already recorded.
pub fn admit(request: &mut Request, conf: &LocConf) -> ngx_int_t {
    let Some(ctx) = ctx_mut(request) else { return Status::NGX_OK.0 };
    if ctx.in_flight.is_some() {
        return Status::NGX_OK.0; // admitted once already (the phases ran again after a rewrite)
    }
    let Some(admission) = ctx.admission.as_ref() else { return Status::NGX_OK.0 };
    let (Some(id), Some(options)) = (admission.limit_id.clone(), admission.options.clone()) else {
        return Status::NGX_OK.0;
    };
    let who = if admission.is_user { "user" } else { "key" };
    // What is reserved against `tokens=` until the answer's count is known: the estimate of the
    // body read for it (see `accounting::reserves_tokens`).
    let reserve = ctx.accounting.as_ref().and_then(|accounting| accounting.estimate).map_or(0, |e| e.total());
    let Some(zone) = conf.usage_zone() else {
        // judge() refuses these first; kept so that no path admits a limited entry uncounted.
        return refused(
            request,
            conf,
            NGX_HTTP_FORBIDDEN,
            "forbidden",
            format!("this {who}'s limits cannot be counted here"),
            RefusalReason::Unenforceable,
        );
    };
    let verdict = zone.lock().map(|mut locked| locked.admit(&id, &options, now_ms(), reserve));
    match verdict {
        Some(Ok(LimitVerdict::Admitted(rate, counters, reserved))) => {
            let Some(ctx) = ctx_mut(request) else { return Status::NGX_ERROR.0 };
            ctx.in_flight = Some(InFlight { zone, counters, reserved });
            ctx.rate = Some(rate);
            Status::NGX_OK.0
        }
        Some(Ok(LimitVerdict::Refused(refusal, rate))) => {
            if let Some(ctx) = ctx_mut(request) {
                ctx.rate = Some(rate);
                ctx.retry_after = Some(refusal.retry_after_seconds);
            }
            let message = refusal.to_string();
            refused(request, conf, NGX_HTTP_TOO_MANY_REQUESTS, "rate limited", message, RefusalReason::RateLimited)
        }
        Some(Err(Unenforceable::Options(error))) => {
            let message = format!("this {who}'s limits cannot be counted: {error}");
            refused(request, conf, NGX_HTTP_FORBIDDEN, "forbidden", message, RefusalReason::Unenforceable)
        }
        Some(Err(Unenforceable::ZoneFull)) | None => {
            ngx_log_error!(
                NGX_LOG_ERR,
                request.log(),
                "ollama_auth_zone \"{}\" has no room for another limited key",
                zone.name()
            );
            let message = "the server cannot count this key's limits now".to_string();
            refused(
                request,
                conf,
                NGX_HTTP_SERVICE_UNAVAILABLE,
                "service unavailable",
                message,
                RefusalReason::Unenforceable,
            )
        }
    }
}

fn refused(
    request: &mut Request,
    conf: &LocConf,
    status: u32,
    kind: &'static str,
    message: String,
    why: RefusalReason,
) -> ngx_int_t {
    refuse(request, conf, &Refusal { status: status as u16, kind, message, why })
}
