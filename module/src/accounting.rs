//! Usage accounting for admitted requests (`ollama_auth_usage <zone>`, or the usage variables):
//! the request side (asking Ollama for a streamed `/v1` answer's usage), and the log phase,
//! where the finished request is counted in the zone and its tokens charged to its limits. The
//! answer is read as it passes, by the response filters (`filters`); the parsing is plain Rust
//! (`ngx_ollama_auth::usage`), the rendering too (`ngx_ollama_auth::metrics`).

use std::borrow::Cow;

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_http_handler_pt, ngx_http_phases_NGX_HTTP_LOG_PHASE, ngx_http_request_t, ngx_int_t,
    NGX_HTTP_BAD_REQUEST, NGX_HTTP_CLIENT_CLOSED_REQUEST, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_POST,
};
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule, Request};

use super::conf::LocConf;
use super::ctx::{ctx_mut, ctx_or_new, Accounting};
use super::zone::{now_ms, warn_full};
use super::Module;
use ngx_ollama_auth::json::JsonError;
use ngx_ollama_auth::policy::strip_prefix;
use ngx_ollama_auth::usage::{accepts_stream_options, include_usage_rewrite, UsageScanner};

/// Whether this location's admitted requests are counted, or their counts read by variables.
pub fn wanted(request: &Request, conf: &LocConf) -> bool {
    conf.metrics.is_none()
        && (conf.usage_zone().is_some() || Module::main_conf(request).is_some_and(|main| main.usage_variables_used))
}

/// Starts counting an admitted request (once). Says whether its body must be read first, to
/// ask Ollama for the usage of a streamed answer (see [`ask_for_usage`]).
pub fn start(request: &mut Request, conf: &LocConf) -> Option<bool> {
    if !wanted(request, conf) {
        return Some(false);
    }
    let is_post = request.as_ref().method == NGX_HTTP_POST as usize;
    let asks = is_post && path(request, conf).is_some_and(accepts_stream_options);
    let ctx = ctx_or_new(request)?;
    if ctx.accounting.is_some() {
        return Some(false);
    }
    ctx.accounting = Some(Accounting::new(conf.usage_zone()));
    Some(asks && ctx.body.is_none())
}

/// The Ollama path the request is for: nginx's normalized URI after the location's prefix.
pub fn path<'r>(request: &'r Request, conf: &LocConf) -> Option<&'r str> {
    let path = strip_prefix(request.as_ref().uri.as_bytes(), conf.path_prefix())?;
    std::str::from_utf8(path).ok()
}

/// Adds `stream_options.include_usage` to a streamed request that did not ask for it, so the
/// answer carries its counts; the response filters take out what that added. Returns the new
/// body, if it changed; an error for a body that is not one JSON object (see
/// `include_usage_rewrite`).
pub fn ask_for_usage(request: &mut Request, body: &[u8]) -> Result<Option<Vec<u8>>, JsonError> {
    let Some(asked) = include_usage_rewrite(body)? else { return Ok(None) };
    if let Some(accounting) = ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut()) {
        accounting.asked_usage = true;
    }
    Ok(Some(asked))
}

/// Adds the log-phase handler, if the configuration counts anything (a zone, or the usage
/// variables: `variables::note_use` runs first); otherwise requests pay nothing for it. Called
/// once per configuration load.
///
/// # Safety
/// `cf` must be the configuration being loaded, in postconfiguration.
pub unsafe fn install_if_used(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: cf is valid during postconfiguration, as the caller guarantees.
    let cf = unsafe { &*cf };
    let used = Module::main_conf(cf).is_some_and(|main| !main.zones.is_empty() || main.usage_variables_used);
    if !used {
        return Status::NGX_OK.0;
    }
    let Some(core) = NgxHttpCoreModule::main_conf_mut(cf) else {
        return Status::NGX_ERROR.0;
    };
    // SAFETY: the log phase's handler array exists in the core main configuration during
    // postconfiguration, and ngx_array_push returns room for one element or NULL.
    let slot =
        unsafe { ngx::ffi::ngx_array_push(&mut core.phases[ngx_http_phases_NGX_HTTP_LOG_PHASE as usize].handlers) }
            as *mut ngx_http_handler_pt;
    if slot.is_null() {
        return Status::NGX_ERROR.0;
    }
    // SAFETY: slot is non-null room for one handler pointer.
    unsafe { *slot = Some(count_finished) };
    Status::NGX_OK.0
}

/// What a finished request is counted as.
pub struct Outcome<'a> {
    pub model: &'a str,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// The model and counts the answer carried: the final report's, or for an answer cut short, the
/// tokens relayed so far (Ollama streams one a chunk).
pub fn outcome(scanner: Option<&UsageScanner>) -> Outcome<'_> {
    match scanner {
        Some(scanner) => Outcome {
            model: scanner.model().unwrap_or(""),
            prompt_tokens: scanner.prompt_tokens(),
            completion_tokens: scanner
                .completion_tokens()
                .or_else(|| (scanner.token_chunks() > 0).then(|| scanner.completion_tokens_so_far())),
        },
        None => Outcome { model: "", prompt_tokens: None, completion_tokens: None },
    }
}

thread_local! {
    /// Room for a series' key, reused request after request (a worker is one thread).
    static SERIES_KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The log phase: counts the request in its zone and charges its tokens to its limits.
extern "C" fn count_finished(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls log-phase handlers with a valid main request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let status = request.as_ref().headers_out.status;
    // SAFETY: a request's connection is valid while the request is.
    let client_gone = unsafe { (*request.as_ref().connection).error() } != 0;
    // The answer went out whole only if nothing of it is still waiting to be written.
    // SAFETY: as above.
    let unsent = !request.as_ref().out.is_null() || unsafe { (*request.as_ref().connection).buffered() } != 0;
    let started_ms = request.as_ref().start_sec as u64 * 1000 + request.as_ref().start_msec as u64;
    let log = request.log();
    let Some(ctx) = ctx_mut(request) else { return Status::NGX_DECLINED.0 };
    if let (Some(why), Some(zone)) = (ctx.refused_for, ctx.refusal_zone) {
        // A refusal is counted if it stood (with `satisfy any`, `allow` may have admitted the
        // request after all), and then the request is not counted as admitted.
        if status >= NGX_HTTP_BAD_REQUEST as usize {
            if let Some(mut locked) = zone.lock() {
                locked.count_refusal(why);
            }
        }
        return Status::NGX_DECLINED.0;
    }
    let Some(accounting) = ctx.accounting.as_ref() else { return Status::NGX_DECLINED.0 };
    let Some(zone) = accounting.zone else { return Status::NGX_DECLINED.0 };
    let code = match status {
        // A client that had the answer's end and closed before its last bytes (the chunked
        // terminator) came is not one that went away mid-answer.
        _ if client_gone && !accounting.end_delivered && (!accounting.answer_ended || unsent) => {
            NGX_HTTP_CLIENT_CLOSED_REQUEST as u16
        }
        // Ended before any header (an error nginx logged): as nginx's own 500.
        0 => NGX_HTTP_INTERNAL_SERVER_ERROR as u16,
        status => status.min(999) as u16,
    };
    let outcome = outcome(accounting.scanner.as_deref());
    let (prompt, completion) = (outcome.prompt_tokens.unwrap_or(0), outcome.completion_tokens.unwrap_or(0));
    // Token series only where a model answered: a listing or an error names none and counts none.
    let answered = !outcome.model.is_empty() || outcome.prompt_tokens.is_some() || outcome.completion_tokens.is_some();
    let label = ctx.label();
    let user = label.as_ref().map_or(Cow::Borrowed(""), |label| match std::str::from_utf8(label.as_bytes()) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(label.as_bytes()),
    });
    let now = now_ms();
    let micros = now.saturating_sub(started_ms).saturating_mul(1000);
    let Some(mut locked) = zone.lock() else { return Status::NGX_DECLINED.0 };
    let first_full = SERIES_KEY.with_borrow_mut(|scratch| {
        locked.count_request(&user, outcome.model, code, answered.then_some((prompt, completion)), micros, scratch)
    });
    if let Some(in_flight) = &ctx.in_flight {
        locked.charge_tokens(in_flight.counters, now, prompt.saturating_add(completion));
    }
    drop(locked);
    if first_full {
        warn_full(log, zone.name());
    }
    Status::NGX_DECLINED.0
}
