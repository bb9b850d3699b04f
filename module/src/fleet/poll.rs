//! The poller: an HTTP/1.0 client on nginx's event loop that asks each fleet member for
//! `GET /api/tags` and then `GET /api/ps` (nonblocking connect, send and receive with nginx's
//! connection and event API, as nginx-acme's client does), bounded in answer size and in time,
//! and writes what it learned into the fleet's zone.
//!
//! Each worker has a tick timer; a member's poll is claimed in the zone (its `next_poll_ms`), so
//! one worker polls each member per interval, whichever worker gets there first.

use std::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_close_connection, ngx_connection_t, ngx_cycle, ngx_cycle_t, ngx_event_connect_peer, ngx_event_get_peer,
    ngx_event_t, ngx_handle_read_event, ngx_handle_write_event, ngx_log_t, ngx_peer_connection_t, ngx_str_t,
    NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_LOG_WARN,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_log_error;

use super::shared::{FleetRef, MemberState, NAMES_BYTES};
use crate::clock::now_ms;
use crate::module::Module;
use ngx_ollama_auth::fleet::{parse_poll_answer, PollError, PolledModels};

/// How often a worker looks for a member due for a poll.
pub const TICK_MS: u64 = 250;

/// What one poll of one member has got so far.
struct Poll {
    fleet: FleetRef,
    member: usize,
    /// `/api/tags`'s answer, once read; then `/api/ps` is asked.
    tags: Option<PolledModels>,
    request: Vec<u8>,
    sent: usize,
    answer: Vec<u8>,
    peer: ngx_peer_connection_t,
    name: ngx_str_t,
    log: *mut ngx_log_t,
}

/// Polls every member of `fleet` that is due, claiming it in the zone first.
pub fn poll_due(fleet: FleetRef, log: *mut ngx_log_t) {
    let conf = fleet.get();
    let now = now_ms();
    let mut due = Vec::new();
    if let Some(held) = conf.lock() {
        for (index, member) in held.members.iter_mut().enumerate() {
            if now >= member.next_poll_ms {
                // Jitter of up to a fifth of the interval keeps the members' polls apart.
                let jitter = (ngx::ffi::ngx_random() as u64) % (conf.interval_ms / 5 + 1);
                member.next_poll_ms = now + conf.interval_ms + jitter;
                due.push(index);
            }
        }
    }
    for member in due {
        start(fleet, member, log);
    }
}

fn start(fleet: FleetRef, member: usize, log: *mut ngx_log_t) {
    let conf = &fleet.get().members[member];
    let poll = Box::new(Poll {
        fleet,
        member,
        tags: None,
        request: Vec::new(),
        sent: 0,
        answer: Vec::new(),
        // SAFETY: an all-zero peer connection is nginx's own starting point (it is ngx_pcalloc'd).
        peer: unsafe { std::mem::zeroed() },
        name: ngx_str_t { len: conf.host.len(), data: conf.host.as_ptr().cast_mut() },
        log,
    });
    connect(Box::into_raw(poll), b"/api/tags");
}

/// Opens a connection for one request of the poll; on failure, ends the poll.
fn connect(poll: *mut Poll, path: &[u8]) {
    // SAFETY: `poll` is the live Box this poll owns (freed only by finish), used on this worker's
    // thread alone; nginx's connect fills `peer.connection` on success.
    unsafe {
        let p = &mut *poll;
        let fleet = p.fleet.get();
        let member = &fleet.members[p.member];
        p.request = [
            &b"GET "[..],
            path,
            b" HTTP/1.0\r\nHost: ",
            member.host.as_bytes(),
            b"\r\nAccept: application/json\r\n\r\n",
        ]
        .concat();
        p.sent = 0;
        p.answer.clear();
        p.peer = std::mem::zeroed();
        p.peer.sockaddr = member.sockaddr_ptr();
        p.peer.socklen = member.socklen;
        p.peer.name = &mut p.name;
        p.peer.get = Some(ngx_event_get_peer);
        p.peer.log = p.log;
        p.peer.set_log_error(ngx::ffi::ngx_connection_log_error_e_NGX_ERROR_ERR);
        let rc = ngx_event_connect_peer(&mut p.peer);
        let c = p.peer.connection;
        if rc == Status::NGX_ERROR.0 || rc == Status::NGX_BUSY.0 || rc == Status::NGX_DECLINED.0 || c.is_null() {
            if !c.is_null() {
                ngx_close_connection(c);
            }
            return finish(poll, Err("cannot connect".into()));
        }
        (*c).data = poll.cast();
        (*(*c).read).handler = Some(on_read);
        (*(*c).write).handler = Some(on_write);
        ngx::ffi::ngx_add_timer((*c).read, fleet.timeout_ms as _);
        ngx::ffi::ngx_add_timer((*c).write, fleet.timeout_ms as _);
        if rc == Status::NGX_OK.0 {
            on_write((*c).write);
        }
    }
}

/// The connection and poll an event of a poll's connection is for; `None` (the poll ended as
/// failed) when the event timed out.
///
/// # Safety
/// `ev` must be an event of a connection made by `connect`, whose data is its Poll.
unsafe fn poll_of(ev: *mut ngx_event_t) -> Option<(*mut ngx_connection_t, *mut Poll)> {
    // SAFETY: the caller's promise: the event's data is the connection, whose data is the Poll.
    unsafe {
        let c = (*ev).data.cast::<ngx_connection_t>();
        let poll = (*c).data.cast::<Poll>();
        if (*ev).timedout() != 0 {
            fail(poll, c, "timed out");
            return None;
        }
        Some((c, poll))
    }
}

unsafe extern "C" fn on_write(ev: *mut ngx_event_t) {
    // SAFETY: nginx calls event handlers with the connection's event, whose data is the
    // connection, whose data is the Poll set by connect.
    unsafe {
        let Some((c, poll)) = poll_of(ev) else { return };
        let p = &mut *poll;
        while p.sent < p.request.len() {
            let rest = &p.request[p.sent..];
            let Some(send) = (*c).send else { return fail(poll, c, "no send") };
            let n = send(c, rest.as_ptr().cast_mut(), rest.len());
            if n > 0 {
                p.sent += n as usize;
            } else if n == Status::NGX_AGAIN.0 {
                if ngx_handle_write_event(ev, 0) != Status::NGX_OK.0 {
                    return fail(poll, c, "write event");
                }
                return;
            } else {
                return fail(poll, c, "connection refused or reset");
            }
        }
        if (*ev).timer_set() != 0 {
            ngx::ffi::ngx_del_timer(ev);
        }
        (*ev).handler = Some(ignore);
        on_read((*c).read);
    }
}

unsafe extern "C" fn ignore(_ev: *mut ngx_event_t) {}

unsafe extern "C" fn on_read(ev: *mut ngx_event_t) {
    // SAFETY: as in on_write.
    unsafe {
        let Some((c, poll)) = poll_of(ev) else { return };
        let p = &mut *poll;
        if p.sent < p.request.len() {
            return; // still connecting or sending: on_write reads when it is done
        }
        let max = p.fleet.get().max_answer;
        let mut buf = [0u8; 16 << 10];
        loop {
            let Some(recv) = (*c).recv else { return fail(poll, c, "no recv") };
            let n = recv(c, buf.as_mut_ptr(), buf.len());
            if n > 0 {
                if p.answer.len() + n as usize > max {
                    return fail(poll, c, "answer too large");
                }
                p.answer.extend_from_slice(&buf[..n as usize]);
            } else if n == 0 {
                ngx_close_connection(c);
                return answered(poll);
            } else if n == Status::NGX_AGAIN.0 {
                if ngx_handle_read_event(ev, 0) != Status::NGX_OK.0 {
                    return fail(poll, c, "read event");
                }
                return;
            } else {
                return fail(poll, c, "connection reset");
            }
        }
    }
}

/// Closes the connection and ends the poll as failed.
///
/// # Safety
/// `poll` and `c` are the live poll and its open connection.
unsafe fn fail(poll: *mut Poll, c: *mut ngx_connection_t, why: &str) {
    // SAFETY: the caller's promise; the connection is closed once, here.
    unsafe { ngx_close_connection(c) };
    finish(poll, Err(why.into()));
}

/// One answer read in full: `/api/tags` leads to `/api/ps`, which ends the poll.
fn answered(poll: *mut Poll) {
    // SAFETY: the live Box this poll owns.
    let p = unsafe { &mut *poll };
    let parsed = parse_poll_answer(&p.answer).map_err(|error: PollError| error.to_string());
    match (p.tags.take(), parsed) {
        (None, Ok(tags)) => {
            p.tags = Some(tags);
            connect(poll, b"/api/ps");
        }
        (Some(tags), Ok(ps)) => finish(poll, Ok((tags, ps))),
        (_, Err(why)) => finish(poll, Err(why)),
    }
}

/// Writes the poll's outcome into the zone and frees the poll.
fn finish(poll: *mut Poll, outcome: Result<(PolledModels, PolledModels), String>) {
    // SAFETY: the Box connect's caller leaked; its connection is closed, so nothing refers to it.
    let poll = unsafe { Box::from_raw(poll) };
    let fleet = poll.fleet.get();
    let member = &fleet.members[poll.member];
    let Some(held) = fleet.lock() else { return };
    let state = &mut held.members[poll.member];
    match outcome {
        Ok((tags, ps)) => {
            if !state.up {
                ngx_log_error!(NGX_LOG_NOTICE, poll.log, "ollama_auth_fleet \"{}\": {} is up", fleet.name, member.name);
            }
            store(state, &tags, &ps);
        }
        Err(why) => {
            state.failures = state.failures.saturating_add(1);
            let level = if state.up { NGX_LOG_WARN } else { NGX_LOG_ERR };
            if state.up && state.failures >= fleet.fails {
                state.up = false;
                ngx_log_error!(
                    NGX_LOG_WARN,
                    poll.log,
                    "ollama_auth_fleet \"{}\": {} marked down after {} failures: {}",
                    fleet.name,
                    member.name,
                    state.failures,
                    why
                );
            } else if state.failures == 1 {
                ngx_log_error!(
                    level,
                    poll.log,
                    "ollama_auth_fleet \"{}\": poll of {} failed: {}",
                    fleet.name,
                    member.name,
                    why
                );
            }
        }
    }
}

/// A successful poll's models, in the member's fixed-size record.
fn store(state: &mut MemberState, tags: &PolledModels, ps: &PolledModels) {
    state.up = true;
    state.polled = true;
    state.failures = 0;
    let n = tags.keys.len().min(state.tags.len());
    state.tags[..n].copy_from_slice(&tags.keys[..n]);
    state.tags_len = n as u32;
    let n = ps.keys.len().min(state.ps.len());
    state.ps[..n].copy_from_slice(&ps.keys[..n]);
    state.ps_len = n as u32;
    let mut at = 0;
    for name in &tags.names {
        let end = at + name.len() + 1;
        if end > NAMES_BYTES {
            break;
        }
        state.names[at..end - 1].copy_from_slice(name.as_bytes());
        state.names[end - 1] = b'\n';
        at = end;
    }
    state.names_len = at as u32;
}

/// This worker's tick timer.
static mut TICK: Option<ngx_event_t> = None;

/// At worker start: polls from now on, if the configuration has fleets.
pub fn start_ticking(fleets: Vec<FleetRef>) {
    if fleets.is_empty() {
        return;
    }
    // SAFETY: init_process runs once per worker, single-threaded; ngx_cycle is the running cycle.
    unsafe {
        let tick = &mut *ptr::addr_of_mut!(TICK);
        let event = tick.insert(std::mem::zeroed());
        event.handler = Some(on_tick);
        event.log = (*ngx_cycle).log;
        event.data = Box::into_raw(Box::new(fleets)).cast();
        // A pending poll must not keep a shutting-down worker alive.
        event.set_cancelable(1);
        ngx::ffi::ngx_add_timer(event, 1);
    }
}

unsafe extern "C" fn on_tick(event: *mut ngx_event_t) {
    // SAFETY: the worker's tick event, whose data is the fleets start_ticking leaked (for the
    // worker's life); ngx_exiting and friends are read on this worker's thread.
    unsafe {
        if ngx::ffi::ngx_exiting != 0 || ngx::ffi::ngx_quit != 0 || ngx::ffi::ngx_terminate != 0 {
            return;
        }
        let fleets = &*(*event).data.cast::<Vec<FleetRef>>();
        for fleet in fleets {
            poll_due(*fleet, (*event).log);
        }
        ngx::ffi::ngx_add_timer(event, TICK_MS as _);
    }
}

/// At worker start: the poller's timer.
pub fn start_in_worker(cycle: *mut ngx_cycle_t) {
    // SAFETY: init_process gets the running cycle, whose configuration is complete.
    let Some(main) = (unsafe { Module::main_conf(&*cycle) }) else { return };
    start_ticking(main.fleets.clone());
}
