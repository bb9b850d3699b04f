//! This worker's waiting requests: which request waits for which ticket, until when, and the
//! one timer that looks for their grants; and the processes that own tickets.

use std::collections::{BTreeSet, HashMap};
use std::ptr;

use ngx::ffi::{ngx_event_t, ngx_http_request_t, ngx_log_t};

use super::store::QueueConf;
use ngx_ollama_auth::queue::TicketRef;

/// How often a worker with waiting requests looks for their grants.
pub const TICK_MS: u64 = 10;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitKey {
    pub queue: usize,
    pub index: u32,
    pub seq: u64,
}

pub struct Waiter {
    pub request: *mut ngx_http_request_t,
    pub deadline_ms: u64,
}

#[derive(Default)]
struct Local {
    /// The queues this worker has waited in: their configuration (the same for the worker's
    /// life: one cycle), and how many of its requests wait there now.
    queues: Vec<(QueueConf, usize)>,
    waiters: HashMap<WaitKey, Waiter>,
    deadlines: BTreeSet<(u64, WaitKey)>,
    last_sweep_ms: u64,
}

static mut LOCAL: Option<Local> = None;
static mut TIMER: Option<ngx_event_t> = None;

/// This worker's waiters.
fn local() -> &'static mut Local {
    // SAFETY: a worker runs its event loop on one thread; every caller takes this borrow for a
    // few statements and never across a call that could come back here (a resumption runs
    // only after the borrow ends).
    unsafe { (*ptr::addr_of_mut!(LOCAL)).get_or_insert_with(Local::default) }
}

fn queue_index(local: &mut Local, conf: &QueueConf) -> usize {
    match local.queues.iter().position(|(known, _)| known.same_queue(conf)) {
        Some(at) => at,
        None => {
            local.queues.push((*conf, 0));
            local.queues.len() - 1
        }
    }
}

pub fn add_waiter(conf: &QueueConf, ticket: TicketRef, request: *mut ngx_http_request_t, deadline_ms: u64) {
    let local = local();
    let queue = queue_index(local, conf);
    let key = WaitKey { queue, index: ticket.index, seq: ticket.seq };
    local.queues[queue].1 += 1;
    local.waiters.insert(key, Waiter { request, deadline_ms });
    local.deadlines.insert((deadline_ms, key));
}

/// Takes a request off this worker's waiters; whether it was there.
pub fn take_waiter(key: WaitKey) -> Option<Waiter> {
    let local = local();
    let waiter = local.waiters.remove(&key)?;
    local.deadlines.remove(&(waiter.deadline_ms, key));
    if let Some((_, count)) = local.queues.get_mut(key.queue) {
        *count = count.saturating_sub(1);
    }
    Some(waiter)
}

pub fn forget_waiter(conf: &QueueConf, ticket: TicketRef) {
    let local = local();
    if let Some(queue) = local.queues.iter().position(|(known, _)| known.same_queue(conf)) {
        take_waiter(WaitKey { queue, index: ticket.index, seq: ticket.seq });
    }
}

/// Makes this worker's timer, which runs `on_tick` when armed. At worker start, before any
/// request can wait.
pub fn init_timer(on_tick: unsafe extern "C" fn(*mut ngx_event_t), log: *mut ngx_log_t) {
    // SAFETY: the worker's own static timer, on its thread, made once before any use; the event
    // lives for the process.
    unsafe {
        let mut event: ngx_event_t = std::mem::zeroed();
        event.handler = Some(on_tick);
        event.log = log;
        event.data = ptr::addr_of_mut!(TIMER).cast();
        // Not cancelable: a worker shutting down (reload) still dispatches its waiters.
        *ptr::addr_of_mut!(TIMER) = Some(event);
    }
}

/// Runs the tick within the next `TICK_MS`, unless it is due already.
pub fn arm_timer() {
    // SAFETY: the worker's own static timer (made by init_timer), on its thread.
    unsafe {
        if let Some(timer) = (*ptr::addr_of_mut!(TIMER)).as_mut() {
            if timer.timer_set() == 0 {
                ngx::ffi::ngx_add_timer(timer, TICK_MS as _);
            }
        }
    }
}

/// Whether it is time to sweep dead workers' tickets (at most every `every_ms`); if so, the
/// sweep is counted as done now.
pub fn sweep_due(now: u64, every_ms: u64) -> bool {
    let local = local();
    let due = now.saturating_sub(local.last_sweep_ms) >= every_ms;
    if due {
        local.last_sweep_ms = now;
    }
    due
}

/// The queues this worker has requests waiting in (all it knows, with `all`), by index.
pub fn busy_queues(all: bool) -> Vec<(usize, QueueConf)> {
    let local = local();
    let busy = local.queues.iter().enumerate().filter(|(_, (_, count))| *count > 0 || all);
    busy.map(|(at, (conf, _))| (at, *conf)).collect()
}

/// This worker's waits in queue `at` whose deadline has passed.
pub fn expired(at: usize, now: u64) -> Vec<WaitKey> {
    let local = local();
    let due = local.deadlines.iter().take_while(|(deadline, _)| *deadline <= now).map(|(_, key)| *key);
    due.filter(|key| key.queue == at).collect()
}

pub fn is_waiting(key: WaitKey) -> bool {
    local().waiters.contains_key(&key)
}

pub fn has_waiters() -> bool {
    !local().waiters.is_empty()
}

/// Runs the tick after the events being handled now.
pub fn post_tick() {
    // SAFETY: the worker's own static timer event (made by init_timer), on its thread;
    // ngx_posted_events is the worker's queue of posted events, and a posted event is queued once
    // however often posted.
    unsafe {
        if let Some(timer) = (*ptr::addr_of_mut!(TIMER)).as_mut() {
            ngx::ffi::ngx_post_event(timer, ptr::addr_of_mut!(ngx::ffi::ngx_posted_events));
        }
    }
}

/// This worker's process id: the owner of its tickets.
pub fn pid() -> u32 {
    // SAFETY: ngx_pid is set once at process start and only read afterwards.
    unsafe { ngx::ffi::ngx_pid as u32 }
}

/// [`is_alive`], asked once per pid in one sweep.
pub fn alive_checker() -> impl FnMut(u32) -> bool {
    let mut known: Vec<(u32, bool)> = Vec::new();
    move |owner| match known.iter().find(|(pid, _)| *pid == owner) {
        Some(&(_, alive)) => alive,
        None => {
            let alive = is_alive(owner);
            known.push((owner, alive));
            alive
        }
    }
}

/// Whether a ticket's owner still runs (`kill(pid, 0)` says no such process only when it is
/// gone).
fn is_alive(owner: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(owner as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}
