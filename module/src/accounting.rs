//! Usage accounting for admitted requests (`ollama_auth_usage <zone>`, or the usage variables):
//! the request side (asking Ollama for a streamed `/v1` answer's usage), and the log phase,
//! where the finished request is counted in the zone and its tokens charged to its limits. The
//! answer is read as it passes, by the response filters (`filters`); the parsing is plain Rust
//! (`ngx_ollama_auth::usage`), the rendering too (`ngx_ollama_auth::metrics`).

use std::borrow::Cow;

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_http_phases_NGX_HTTP_LOG_PHASE, ngx_http_request_t, ngx_int_t, NGX_HTTP_BAD_REQUEST,
    NGX_HTTP_CLIENT_CLOSED_REQUEST, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_POST,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, Request};

use super::clock::now_ms;
use super::conf::LocConf;
use super::ctx::{ctx_mut, ctx_or_new, Accounting};
use super::hooks::add_phase_handler;
use super::module::Module;
use super::zone::data::warn_full;
use ngx_ollama_auth::endpoints::work_of_path;
use ngx_ollama_auth::estimate::{charge, reached_ollama, Counted, Estimate};
use ngx_ollama_auth::json::JsonError;
use ngx_ollama_auth::metrics::SeriesCounts;
use ngx_ollama_auth::models::ModelName;
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

/// Whether an admitted request's body must be read to reserve its estimated tokens against its
/// entry's `tokens=` limits before it is admitted (see `limit`): a counted POST to an endpoint
/// that uses tokens, from an entry with `tokens=`.
pub fn reserves_tokens(request: &mut Request, conf: &LocConf) -> bool {
    let is_post = request.as_ref().method == NGX_HTTP_POST as usize;
    let works = is_post && path(request, conf).and_then(work_of_path).is_some();
    works
        && ctx_mut(request).is_some_and(|ctx| {
            ctx.accounting.is_some()
                && ctx.admission.as_ref().is_some_and(|admission| {
                    admission.limit_id.is_some() && admission.options.as_ref().is_some_and(|o| !o.tokens.is_empty())
                })
        })
}

/// Estimates a counted request's tokens from its body, read whole (see `estimate`).
pub fn estimate_from_body(request: &mut Request, conf: &LocConf, body: &[u8]) {
    let Some(work) = path(request, conf).and_then(work_of_path) else { return };
    if let Some(accounting) = ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut()) {
        accounting.estimate = Some(Estimate::of_body(work, body));
    }
}

/// Estimates a counted request's tokens from its body's length alone (nginx's count, chunked
/// bodies too, once read).
pub fn estimate_from_length(request: &mut Request, conf: &LocConf) {
    let Some(work) = path(request, conf).and_then(work_of_path) else { return };
    let length = request.as_ref().headers_in.content_length_n.max(0) as u64;
    if let Some(accounting) = ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut()) {
        accounting.estimate = Some(Estimate::of_length(work, length));
    }
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
    let used =
        Module::main_conf(unsafe { &*cf }).is_some_and(|main| !main.zones.is_empty() || main.usage_variables_used);
    if !used {
        return Status::NGX_OK.0;
    }
    // SAFETY: the caller's promise.
    unsafe { add_phase_handler(cf, ngx_http_phases_NGX_HTTP_LOG_PHASE, count_finished) }
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
    let has_upstream = !request.as_ref().upstream.is_null();
    // A body the gate did not read is estimated by its length (nginx's count, chunked too).
    let is_post = request.as_ref().method == NGX_HTTP_POST as usize;
    let length = request.as_ref().headers_in.content_length_n.max(0) as u64;
    let conf: Option<&'static LocConf> = Module::location_conf(request);
    let work = conf.and_then(|conf| path(request, conf)).and_then(work_of_path).filter(|_| is_post);
    let length_estimate = work.map(|work| Estimate::of_length(work, length));
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
    let counted = match accounting.scanner.as_deref() {
        Some(scanner) => Counted {
            readable: true,
            prompt_tokens: scanner.prompt_tokens().filter(|_| scanner.is_final()),
            completion_tokens: scanner.completion_tokens(),
            prompt_guess: scanner.prompt_tokens().filter(|_| !scanner.is_final()),
            relayed_chunks: if scanner.token_chunks() > 0 { scanner.completion_tokens_so_far() } else { 0 },
        },
        None => Counted::default(),
    };
    let estimate = accounting.estimate.or(length_estimate);
    let charged = charge(counted, estimate, reached_ollama(has_upstream, code));
    // Labelled with the model as the gate reads names: every spelling of one model is one
    // series, so no client can fill the zone with spellings (Ollama echoes the one it was sent).
    let model = outcome(accounting.scanner.as_deref()).model;
    let model = ModelName::parse(model).map_or(String::new(), |name| name.label());
    // Token series only where a model answered or tokens were charged: a listing or an error
    // makes no empty token rows.
    let answered = !model.is_empty() || charged.total() > 0;
    let label = ctx.label();
    let user = label.as_ref().map_or(Cow::Borrowed(""), |label| match std::str::from_utf8(label.as_bytes()) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(label.as_bytes()),
    });
    let now = now_ms();
    let micros = now.saturating_sub(started_ms).saturating_mul(1000);
    // The fair queue's slot time, under the model that answered: the GPU time each key used.
    let slot_micros = ctx.queued.as_ref().and_then(|queued| queued.slot_time_ms()).unwrap_or(0).saturating_mul(1000);
    let mut counts =
        SeriesCounts { estimated_tokens: charged.estimated_tokens, slot_micros, ..SeriesCounts::default() };
    counts.add(answered.then_some((charged.prompt_tokens, charged.completion_tokens)), micros);
    let Some(mut locked) = zone.lock() else { return Status::NGX_DECLINED.0 };
    let first_full = SERIES_KEY.with_borrow_mut(|scratch| locked.count_request(&user, &model, code, &counts, scratch));
    if let Some(in_flight) = ctx.in_flight.as_mut() {
        locked.settle(in_flight.counters, now, std::mem::take(&mut in_flight.reserved), charged.total());
    }
    drop(locked);
    if first_full {
        warn_full(log, zone.name());
    }
    Status::NGX_DECLINED.0
}
