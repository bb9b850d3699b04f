//! Writing the zones' state files: every few seconds in each worker, and at its exit.

use std::ptr;

use ngx::ffi::{ngx_cycle, ngx_cycle_t, ngx_event_t};
use ngx::http::HttpModuleMainConf;

use ngx::ffi::ngx_log_t;

use super::data::{Zone, ZoneConf, STATE_INTERVAL_MS};
use super::state_file;
use crate::clock::now_ms;
use crate::module::Module;

/// The state-file timer of one worker.
static mut STATE_TIMER: Option<ngx_event_t> = None;

/// At worker start: writes the state files every few seconds from now on.
pub fn start(cycle: *mut ngx_cycle_t) {
    // SAFETY: init_process runs once per worker, single-threaded, with the running cycle.
    unsafe {
        let Some(main) = Module::main_conf(&*cycle) else { return };
        if !main.zones.iter().any(|zone| zone.conf().is_some_and(|conf| conf.state_path.is_some())) {
            return;
        }
        let timer = &mut *ptr::addr_of_mut!(STATE_TIMER);
        let event = timer.insert(std::mem::zeroed());
        event.handler = Some(on_state_timer);
        event.log = (*cycle).log;
        event.data = ptr::addr_of_mut!(STATE_TIMER).cast();
        // A pending write must not keep a shutting-down worker alive.
        event.set_cancelable(1);
        ngx::ffi::ngx_add_timer(event, STATE_INTERVAL_MS as _);
    }
}

unsafe extern "C" fn on_state_timer(event: *mut ngx_event_t) {
    save_all(false);
    // SAFETY: ngx_exiting and ngx_quit are nginx's flags, read on the worker's thread; the
    // event is this worker's static timer.
    unsafe {
        if ngx::ffi::ngx_exiting == 0 && ngx::ffi::ngx_quit == 0 && ngx::ffi::ngx_terminate == 0 {
            ngx::ffi::ngx_add_timer(event, STATE_INTERVAL_MS as _);
        }
    }
}

/// Writes every zone's state file (that is due, or all with `force`).
pub fn save_all(force: bool) {
    // SAFETY: ngx_cycle is the running cycle on this worker's thread, and its log is valid while
    // it runs.
    unsafe {
        let cycle = ngx_cycle;
        let Some(main) = Module::main_conf(&*cycle) else { return };
        let now_ms = now_ms();
        for zone in &main.zones {
            if let Some(conf) = zone.conf() {
                save(conf, now_ms, force, (*cycle).log);
            }
        }
    }
}

/// At worker exit: the last counts go to the state file.
pub extern "C" fn save_on_exit(_cycle: *mut ngx_cycle_t) {
    save_all(true);
}

/// Writes the zone's state file if it has one and it is due (or `force`, at exit).
fn save(zone: &ZoneConf, now_ms: u64, force: bool, log: *mut ngx_log_t) {
    let Some(path) = &zone.state_path else { return };
    let bytes = {
        let Some(mut locked) = Zone::lock_conf(zone) else { return };
        match locked.state_if_due(now_ms, force) {
            Some(bytes) => bytes,
            None => return,
        }
    };
    state_file::write(path, &bytes, log);
}
