//! Admitting a limited key's request (`tokens=`, `requests=`, `parallel=`) in the zone of
//! `ollama_auth_usage`, once its policy allows it: counted before it goes to Ollama, in flight
//! until it ends (the context's `InFlight`), refused with 429 and `Retry-After` over a limit.
//! The counting itself is plain Rust (`ngx_ollama_auth::limits`).

use ngx::core::Status;
use ngx::ffi::{ngx_int_t, NGX_LOG_ERR};
use ngx::http::Request;
use ngx::ngx_log_error;

use super::clock::now_ms;
use super::conf::LocConf;
use super::ctx::{ctx_mut, refuse, InFlight};
use super::zone::data::{LimitVerdict, Unenforceable};
use ngx_ollama_auth::judge::{Admitted, LimitsRefused};
use ngx_ollama_auth::refusal::Refusal;

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
    let who = Admitted { options: None, is_user: admission.is_user }.who();
    // What is reserved against `tokens=` until the answer's count is known: the estimate of the
    // body read for it (see `accounting::reserves_tokens`).
    let reserve = ctx.accounting.as_ref().and_then(|accounting| accounting.estimate).map_or(0, |e| e.total());
    let Some(zone) = conf.usage_zone() else {
        // judge() refuses these first; kept so that no path admits a limited entry uncounted.
        return refuse(request, conf, &Refusal::of_limits(LimitsRefused::NoZone, who));
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
            refuse(request, conf, &Refusal::of_limits(LimitsRefused::Over(&refusal), who))
        }
        Some(Err(Unenforceable::Options(error))) => {
            refuse(request, conf, &Refusal::of_limits(LimitsRefused::Uncountable(&error), who))
        }
        Some(Err(Unenforceable::ZoneFull)) | None => {
            ngx_log_error!(
                NGX_LOG_ERR,
                request.log(),
                "ollama_auth_zone \"{}\" has no room for another limited key",
                zone.name()
            );
            refuse(request, conf, &Refusal::of_limits(LimitsRefused::ZoneFull, who))
        }
    }
}
