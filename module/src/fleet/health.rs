//! Failure marking from the requests themselves (the log phase): a request the gate sent to a
//! member that ended in a connect error or a timeout before any answer (nginx's own 502 or 504)
//! counts as one of the member's failures in a row, as a failed poll does; a client that leaves
//! and an answer of Ollama's own (a 503 "server busy" a client can provoke) do not, so no client
//! can mark a member down; `fails=` of them mark it down until a poll finds it
//! answering again (polls go on at the fleet's interval). Only a poll that answers resets the
//! count.
//! A request sent again through `error_page ... @retry` counts its failed try here too (see
//! `route`).

use ngx::core::Status;
use ngx::ffi::{ngx_http_request_t, ngx_int_t, ngx_log_t, NGX_LOG_WARN};
use ngx::http::{HttpModuleMainConf, Request};
use ngx::ngx_log_error;

use super::model::FleetCtx;
use super::shared::Chosen;
use crate::clock::now_ms;
use crate::ctx::ctx_mut;
use crate::module::Module;
use ngx_ollama_auth::fleet::{render_members, MemberMetrics};

/// The log-phase handler: counts the request's outcome against the member chosen for it.
pub extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx runs log handlers with a valid request, the main one here.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let Some(status) = failed_try(request) else { return Status::NGX_OK.0 };
    let log = request.log();
    let Some(chosen) = ctx_mut(request)
        .and_then(|ctx| ctx.fleet.as_ref()?.downcast_ref::<FleetCtx>())
        .and_then(|ctx| ctx.chosen.as_ref())
    else {
        return Status::NGX_OK.0;
    };
    count(chosen, status, log);
    Status::NGX_OK.0
}

/// The status of the last upstream try if it failed before any answer came: nginx's own 502
/// (connect error, reset) or 504 (timeout), with no header read from the member. `None` for
/// an answer of the member's own, a client gone, or a request never sent upstream.
pub fn failed_try(request: &Request) -> Option<usize> {
    let upstream = request.as_ref().upstream;
    if upstream.is_null() {
        return None;
    }
    // SAFETY: a non-null r->upstream is the request's upstream, alive until the request ends;
    // its state is NULL or the last try's record.
    let (status, header_time) = unsafe {
        let state = (*upstream).state;
        if state.is_null() {
            return None;
        }
        ((*state).status, (*state).header_time)
    };
    // nginx sets header_time to -1 when a try starts and to the time when a header arrives.
    let no_answer = header_time == ngx::ffi::ngx_msec_t::MAX;
    (no_answer && matches!(status, 502 | 504)).then_some(status)
}

/// Counts a failed try (see [`failed_try`]) against its member. Only a poll that answers
/// resets the count: a member that answers requests but not its polls cannot route on a stale
/// listing for ever.
pub fn count(chosen: &Chosen, status: usize, log: *mut ngx_log_t) {
    let fleet = chosen.fleet.get();
    let Some(held) = fleet.lock() else { return };
    let member = &mut held.members[chosen.member];
    member.failures = member.failures.saturating_add(1);
    if member.up && member.failures >= fleet.fails {
        member.up = false;
        member.next_poll_ms = now_ms() + fleet.interval_ms;
        let name = &fleet.members[chosen.member].name;
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "ollama_auth_fleet \"{}\": {} marked down after {} failed requests (last: {})",
            fleet.name,
            name,
            member.failures,
            status
        );
    }
}

/// The metrics of every fleet's members (see `ngx_ollama_auth::fleet::render_members`).
pub fn exposition(request: &Request) -> Vec<u8> {
    let Some(main) = Module::main_conf(request) else { return Vec::new() };
    let mut members = Vec::new();
    for fleet in main.fleets.iter().map(|fleet| fleet.get()) {
        let Some(held) = fleet.lock() else { continue };
        for (conf, state) in fleet.members.iter().zip(held.members.iter()) {
            members.push((fleet.name.clone(), conf.name.clone(), state.up, state.busy, state.requests));
        }
    }
    let members: Vec<MemberMetrics<'_>> = members
        .iter()
        .map(|(fleet, backend, up, in_flight, requests)| MemberMetrics {
            fleet,
            backend,
            up: *up,
            in_flight: *in_flight,
            requests: *requests,
        })
        .collect();
    render_members(&members)
}
