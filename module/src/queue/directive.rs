//! `ollama_auth_queue <zone> capacity=<n> [timeout=<time>] [max_waiting=<n>]`.

use std::ffi::{c_char, c_void};

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{ngx_command_t, ngx_conf_t, ngx_parse_time, ngx_str_t, NGX_LOG_EMERG};
use ngx::ngx_conf_log_error;

use super::store::QueueConf;
use crate::conf::LocConf;
use crate::directive::{arguments, conf_error, conf_mut};
use crate::zone::directive::zone_reference;
use ngx_ollama_auth::queue::Sizes;

/// The default `timeout=`: how long a request may wait for a slot.
const DEFAULT_TIMEOUT_MS: u64 = 120_000;

/// The default `max_waiting=`.
const DEFAULT_MAX_WAITING: u32 = 1_000;

/// The largest `capacity=` and `max_waiting=` (the queue's state is sized from them).
const MAX_CAPACITY: u32 = 100_000;
const MAX_MAX_WAITING: u32 = 1_000_000;

fn parse_count(value: &[u8], most: u32) -> Option<u32> {
    let text = std::str::from_utf8(value).ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 10 {
        return None;
    }
    text.parse::<u64>().ok().filter(|&n| n <= u64::from(most)).map(|n| n as u32)
}

/// `ollama_auth_queue <zone> capacity=<n> [timeout=<time>] [max_waiting=<n>]`.
pub extern "C" fn set_queue(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration as `conf`, and the
    // configuration being parsed, whose args hold the directive and 2 to 4 arguments.
    let (conf, args) = unsafe { (conf_mut::<LocConf>(conf), arguments(cf)) };
    if conf.queue.is_some() {
        return conf_error(c"is duplicate");
    }
    let (mut capacity, mut timeout_ms, mut max_waiting) = (None, DEFAULT_TIMEOUT_MS, DEFAULT_MAX_WAITING);
    for arg in &args[2..] {
        let bytes = arg.as_bytes();
        let parsed = if let Some(value) = bytes.strip_prefix(b"capacity=") {
            parse_count(value, MAX_CAPACITY).filter(|&n| n > 0).map(|n| capacity = Some(n))
        } else if let Some(value) = bytes.strip_prefix(b"max_waiting=") {
            parse_count(value, MAX_MAX_WAITING).map(|n| max_waiting = n)
        } else if let Some(value) = bytes.strip_prefix(b"timeout=") {
            let mut text = ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() };
            // SAFETY: ngx_parse_time reads the string it is given; 0: milliseconds.
            let ms = unsafe { ngx_parse_time(&mut text, 0) };
            (ms > 0).then(|| timeout_ms = ms as u64)
        } else {
            None
        };
        if parsed.is_none() {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid \"ollama_auth_queue\" parameter \"{}\": expected capacity=<1-{}>, timeout=<time> \
                 or max_waiting=<0-{}>",
                arg,
                MAX_CAPACITY,
                MAX_MAX_WAITING
            );
            return NGX_CONF_ERROR;
        }
    }
    let Some(capacity) = capacity else {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"ollama_auth_queue {}\" needs capacity=<n>", args[1]);
        return NGX_CONF_ERROR;
    };
    // SAFETY: cf is the configuration being parsed; size 0 names a zone defined elsewhere.
    let Some(zone) = (unsafe { zone_reference(cf, &args[1], 0) }) else { return NGX_CONF_ERROR };
    let needed = Sizes::new(capacity, max_waiting).bytes() + 64 * 1024;
    if let Some(size) = zone.size().filter(|&size| size > 0 && size < needed) {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"ollama_auth_queue {}\" with capacity={} max_waiting={} needs a zone of at least {}k (it has {}k)",
            args[1],
            capacity,
            max_waiting,
            needed.div_ceil(1024),
            size / 1024
        );
        return NGX_CONF_ERROR;
    }
    conf.queue = Some(QueueConf { zone, capacity, max_waiting, timeout_ms });
    NGX_CONF_OK
}
