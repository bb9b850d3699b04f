//! Failure marking from the requests themselves (the log phase): a request the gate sent to a
//! member that ended in a connect error, a timeout or a 5xx counts as one of the member's
//! failures in a row, as a failed poll does; `fails=` of them mark it down until a poll finds it
//! answering again (polls go on at the fleet's interval). Only a poll that answers resets the
//! count.
//! A request sent again through `error_page ... @retry` counts its failed try here too (see
//! `route`).

use ngx::core::Status;
use ngx::ffi::{ngx_http_request_t, ngx_int_t, ngx_log_t, NGX_LOG_WARN};
use ngx::http::Request;
use ngx::ngx_log_error;

use super::model::FleetCtx;
use super::poll::now_ms;
use super::route::Chosen;
use crate::ctx::ctx_mut;

/// The log-phase handler: counts the request's outcome against the member chosen for it.
pub extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx runs log handlers with a valid request, the main one here.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let Some(status) = upstream_status(request) else { return Status::NGX_OK.0 };
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

/// The last upstream try's status: 0 for no answer (a failed connection, a timeout), `None`
/// when the request was never sent upstream.
pub fn upstream_status(request: &Request) -> Option<usize> {
    let upstream = request.as_ref().upstream;
    if upstream.is_null() {
        return None;
    }
    // SAFETY: a non-null r->upstream is the request's upstream, alive until the request ends;
    // its state is NULL or the last try's record.
    unsafe {
        let state = (*upstream).state;
        (!state.is_null()).then(|| (*state).status)
    }
}

/// Counts one request's outcome against its member.
pub fn count(chosen: &Chosen, status: usize, log: *mut ngx_log_t) {
    if (1..500).contains(&status) {
        return; // only a poll that answers resets the count: a member that answers requests
                // but not its polls cannot route on a stale listing for ever
    }
    let fleet = chosen.fleet.get();
    let Some(held) = fleet.lock() else { return };
    let member = &mut held.members[chosen.member];
    // 0: no answer at all (the connection failed or timed out before a status).
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
