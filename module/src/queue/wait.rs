//! Entering the queue in the access phase, waiting, and leaving it when the request ends.
//!
//! A request that must wait holds a ticket in the zone and nothing else: the access handler
//! answers `NGX_AGAIN` (the phase loop stops, no worker is held), the request reads with
//! `ngx_http_test_reading` (a client that leaves is finalized, and its context's drop takes
//! the ticket out), and writes with nginx's empty handler, as `limit_req`'s delay does.
//!
//! Whoever frees a slot (any worker, in its request's pool cleanup) grants it in the zone to
//! the next ticket, addressed to that ticket's worker (its pid). Each worker with requests
//! waiting runs one timer (every `waiters::TICK_MS`) that, under the lock, takes the grants addressed
//! to it and ends the waits past their deadline, then resumes those requests: the phases run
//! again, and the access handler finds the ticket granted (or the wait refused). A worker-local
//! map from ticket to request, emptied by the requests' pool cleanups, means no request that
//! has ended is ever resumed. The same timer sweeps the tickets of workers that are gone.

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_cycle_t, ngx_event_t, ngx_http_block_reading, ngx_http_core_run_phases,
    ngx_http_request_empty_handler, ngx_http_request_t, ngx_http_run_posted_requests, ngx_http_test_reading, ngx_int_t,
    ngx_variable_value_t, NGX_LOG_ERR, NGX_LOG_NOTICE,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, Request};
use ngx::ngx_log_error;

use super::store::{self, QueueConf};
use super::ticket::{Queued, Stage};
use super::waiters::{
    add_waiter, alive_checker, arm_timer, busy_queues, expired, has_waiters, init_timer, is_waiting, pid, sweep_due,
    take_waiter, WaitKey,
};
use crate::clock::now_ms;
use crate::conf::LocConf;
use crate::ctx::{ctx_mut, ctx_or_new, refuse};
use crate::hooks::{add_variable, copied_variable};
use crate::module::Module;
use crate::policy::is_inference;
use ngx_ollama_auth::queue::answers::NotQueued;
use ngx_ollama_auth::queue::{Arrival, Ended, State, TicketRef, Who};
use ngx_ollama_auth::queue::{DEFAULT_KEY_QUEUE, DEFAULT_SHARE};
use ngx_ollama_auth::refusal::Refusal;

/// How often that timer also sweeps the tickets of workers that are gone.
const SWEEP_MS: u64 = 1_000;

/// Puts an admitted inference request in its location's queue. Answers what the access phase
/// answers: `NGX_OK` (a slot: go on), `NGX_AGAIN` (waiting), or a refusal's status.
pub fn enter(r: *mut ngx_http_request_t, conf: &LocConf, queue_conf: &QueueConf) -> ngx_int_t {
    // SAFETY: nginx's request, valid for this call; the borrow ends before any resumption.
    let request = unsafe { Request::from_ngx_http_request(r) };
    if !is_inference(request, conf) {
        return Status::NGX_OK.0; // reads and management never wait and hold no slot
    }
    let Some(ctx) = ctx_or_new(request) else { return Status::NGX_ERROR.0 };
    if let Some(queued) = &ctx.queued {
        return queued.answer(); // the phases ran again (resumed, or after a rewrite)
    }
    let Some(admission) = ctx.admission.as_ref() else { return Status::NGX_OK.0 };
    let options = admission.options.as_deref();
    let label = admission.label.unwrap_or_default();
    let who = Who {
        hash: admission.queue_key.unwrap_or_default(),
        share: options.and_then(|o| o.share).unwrap_or(DEFAULT_SHARE),
        max_queue: options.and_then(|o| o.queue).unwrap_or(DEFAULT_KEY_QUEUE),
        label: label.as_bytes(),
    };
    let now = now_ms();
    let arrival = queue_conf.zone.lock().and_then(|mut locked| {
        let mut queue = store::queue(&mut locked, queue_conf)?;
        Some(queue.arrive(&who, pid(), now))
    });
    let mut queued = Queued {
        conf: *queue_conf,
        ticket: None,
        stage: Stage::Running,
        waited_ms: None,
        retry_after: None,
        headers_sent: false,
        running_since_ms: None,
        slot_ms: None,
    };
    let not_queued = match arrival {
        Some(Ok(Arrival::Dispatched(ticket))) => {
            queued.ticket = Some(ticket);
            queued.running_since_ms = Some(now);
            queued.waited_ms = Some(0);
            ctx.queued = Some(queued);
            return Status::NGX_OK.0;
        }
        Some(Ok(Arrival::Waiting(ticket))) => {
            queued.ticket = Some(ticket);
            queued.stage = Stage::Waiting;
            ctx.queued = Some(queued);
            add_waiter(queue_conf, ticket, r, now + queue_conf.timeout_ms);
            arm_timer();
            // SAFETY: a main request in the access phase: its handlers are ours to set until
            // it resumes (see resume), as limit_req's delay sets them.
            unsafe {
                (*r).read_event_handler = Some(ngx_http_test_reading);
                (*r).write_event_handler = Some(ngx_http_request_empty_handler);
            }
            return Status::NGX_AGAIN.0;
        }
        Some(Err(refused)) => NotQueued::Refused(refused),
        None => NotQueued::NoRoom,
    };
    let (refusal, retry) = not_queued.answer();
    queued.stage = Stage::Refused(refusal.status as ngx_int_t);
    queued.retry_after = Some(retry);
    ctx.queued = Some(queued);
    if arrival.is_none() {
        let zone = queue_conf.zone.name();
        ngx_log_error!(NGX_LOG_ERR, request.log(), "ollama_auth_queue: zone \"{}\" has no room for the queue", zone);
    }
    refuse(request, conf, &refusal)
}

/// Whether this request's context says how the queue answered it already (the access handler
/// asks first, when the phases run again).
pub fn preempt(request: &mut Request) -> Option<ngx_int_t> {
    ctx_mut(request).and_then(|ctx| ctx.queued.as_ref()).map(Queued::answer)
}

/// What one tick found for one queue: requests to resume, and how.
struct Due {
    granted: Vec<(WaitKey, u64)>,
    expired: Vec<WaitKey>,
}

unsafe extern "C" fn on_tick(_event: *mut ngx_event_t) {
    let now = now_ms();
    let sweep = sweep_due(now, SWEEP_MS);
    for (at, conf) in busy_queues(sweep) {
        let due = collect(at, &conf, now, sweep);
        for (key, waited_ms) in due.granted {
            resume(key, |queued| {
                queued.stage = Stage::Running;
                queued.waited_ms = Some(waited_ms);
                queued.running_since_ms = Some(now_ms());
                None
            });
        }
        for key in due.expired {
            resume(key, |queued| {
                let (refusal, retry_after) = NotQueued::WaitedTooLong.answer();
                queued.stage = Stage::Refused(refusal.status as ngx_int_t);
                queued.retry_after = Some(retry_after);
                queued.ticket = None; // it left the queue already
                Some(refusal)
            });
        }
    }
    if has_waiters() {
        arm_timer();
    }
}

/// Under the queue's lock: the grants addressed to this worker, the waits past their deadline
/// (taken out of the queue), and a sweep of dead workers' tickets when due.
fn collect(at: usize, conf: &QueueConf, now: u64, sweep: bool) -> Due {
    let mut due = Due { granted: Vec::new(), expired: Vec::new() };
    let expired = expired(at, now);
    let Some(mut locked) = conf.zone.lock() else { return due };
    let Some(mut queue) = store::queue(&mut locked, conf) else { return due };
    if sweep {
        queue.sweep(alive_checker(), now);
    }
    let mut granted = Vec::new();
    queue.take_grants(pid(), |ticket| granted.push(ticket));
    for ticket in granted {
        let key = WaitKey { queue: at, index: ticket.index, seq: ticket.seq };
        if is_waiting(key) {
            due.granted.push((key, queue.waited_ms(ticket)));
        } else {
            queue.end(ticket, now); // no request of ours waits for it: never leak the slot
        }
    }
    for key in expired {
        let ticket = TicketRef { index: key.index, seq: key.seq };
        match queue.state(ticket) {
            Some(State::Waiting) => {
                if matches!(queue.end(ticket, now), Ended::LeftQueue { .. }) {
                    due.expired.push(key);
                }
            }
            // Its ticket is gone (a repair after a worker died mid-change): it waits no more.
            None => due.expired.push(key),
            // It holds a slot that no grant announced (the same): it runs.
            Some(State::Granted | State::Running) => due.granted.push((key, queue.waited_ms(ticket))),
        }
    }
    due
}

/// Resumes a waiting request of this worker, if it still waits: `update` marks its context
/// (and may give a refusal); then its phases run again from the access phase.
fn resume(key: WaitKey, update: impl FnOnce(&mut Queued) -> Option<Refusal>) {
    let Some(waiter) = take_waiter(key) else { return };
    let r = waiter.request;
    {
        // SAFETY: the request was in this worker's map, so its pool cleanup has not run: it is
        // alive, waiting in the access phase, and no borrow of it is held elsewhere.
        let request = unsafe { Request::from_ngx_http_request(r) };
        let refusal = match ctx_mut(request).and_then(|ctx| ctx.queued.as_mut()) {
            Some(queued) => update(queued),
            None => return,
        };
        if let Some(refusal) = refusal {
            let conf: Option<&'static LocConf> = Module::location_conf(request);
            if let Some(conf) = conf {
                refuse(request, conf, &refusal);
            }
        }
    }
    // SAFETY: as above; this is how limit_req resumes a delayed request: reading is blocked
    // again (the proxy sets its own), the phases run from the access phase, and the posted
    // subrequests of the connection run, as ngx_http_request_handler would.
    unsafe {
        let connection = (*r).connection;
        (*r).read_event_handler = Some(ngx_http_block_reading);
        (*r).write_event_handler = Some(ngx_http_core_run_phases);
        ngx_http_core_run_phases(r);
        ngx_http_run_posted_requests(connection);
    }
}

/// At worker start: gives back what workers that are gone held (a crash, or a worker killed:
/// nginx starts a new one), so the in-flight count is the true one again.
pub fn start_in_worker(cycle: *mut ngx_cycle_t) {
    // SAFETY: init_process runs once per worker with the running cycle, whose log is valid.
    init_timer(on_tick, unsafe { (*cycle).log });
    // SAFETY: as above.
    let Some(main) = (unsafe { Module::main_conf(&*cycle) }) else { return };
    let now = now_ms();
    for zone in &main.zones {
        let swept = store::sweep_zone(*zone, alive_checker(), now);
        if swept > 0 {
            // SAFETY: the cycle's log is valid in init_process.
            let log = unsafe { (*cycle).log };
            ngx_log_error!(
                NGX_LOG_NOTICE,
                log,
                "ollama_auth_queue: {} requests of workers that are gone let go",
                swept
            );
        }
    }
}

const VARIABLE: &str = "ollama_queue_wait";

/// Registers `$ollama_queue_wait`: how long the request waited for its slot, in seconds to the
/// millisecond (`0.000` when it went straight on); empty when it did not queue.
///
/// # Safety
/// `cf` must be the configuration being loaded, in preconfiguration.
pub unsafe fn register_variable(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: the caller's promise.
    unsafe { add_variable(cf, VARIABLE, get_wait, 0) }
}

unsafe extern "C" fn get_wait(r: *mut ngx_http_request_t, value: *mut ngx_variable_value_t, _: usize) -> ngx_int_t {
    // SAFETY: nginx's arguments to a variable handler.
    unsafe { copied_variable(r, value, |main| ctx_mut(main)?.queued.as_ref()?.wait_text()) }
}
