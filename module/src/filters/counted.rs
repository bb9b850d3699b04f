//! Answers to counted requests (`accounting`): read for their model and token counts as each
//! buffer passes, never held; a streamed `/v1` answer whose usage the gate asked for loses what
//! asking added, event by event (a partial event waits for its end, nothing more).

use std::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_buf_t, ngx_chain_get_free_buf, ngx_chain_t, ngx_chain_update_chains, ngx_http_request_t, ngx_int_t, ngx_palloc,
    NGX_LOG_ERR, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, Request};
use ngx::ngx_log_error;

use super::headers::set_content_length;
use super::next::next_body;
use crate::accounting::path;
use crate::buffers::{consume, consume_buf, for_each_piece};
use crate::ctx::{ctx_mut, Accounting, RequestCtx};
use crate::module::{module_tag, Module};
use ngx_ollama_auth::usage::{AnswerKind, Framing, UsageScanner, UsageStripper};

/// Sets up the reading of a counted answer, once its header says what it is.
#[inline]
pub fn start_scanning(request: &mut Request) {
    let counted_and_new = |ctx: &mut RequestCtx| ctx.accounting.as_ref().is_some_and(|a| a.scanner.is_none());
    if !ctx_mut(request).is_some_and(counted_and_new) {
        return;
    }
    let Some(conf) = Module::location_conf(request) else { return };
    let out = &request.as_ref().headers_out;
    let encoded = !out.content_encoding.is_null();
    let kind = path(request, conf).and_then(|path| AnswerKind::for_answer(path, out.content_type.as_bytes()));
    let Some(kind) = kind else { return };
    if encoded {
        // Compressed on the way (ollama.com's headers come back through a cloud model, or a
        // proxy compresses): no scanner reads it, so the request is charged its estimate.
        warn_unreadable_once(request.log());
        return;
    }
    let Some(accounting) = ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut()) else { return };
    accounting.scanner = Some(Box::new(UsageScanner::new(kind)));
    if accounting.asked_usage && kind.framing == Framing::EventStream {
        accounting.stripper = Some(Box::new(UsageStripper::new()));
        set_content_length(request, None);
    }
}

/// Logs, once per worker, that a counted answer came compressed.
fn warn_unreadable_once(log: *mut ngx::ffi::ngx_log_t) {
    thread_local! {
        static WARNED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !WARNED.replace(true) {
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "a counted answer came with a Content-Encoding and cannot be read: it is charged the gate's estimate (clear Accept-Encoding towards Ollama)"
        );
    }
}

/// What marks the stripper's own buffers, for nginx's buffer recycling.
fn buffer_tag() -> ngx::ffi::ngx_buf_tag_t {
    module_tag()
}

/// Reads a counted answer's buffers as they pass. They go on unchanged, unless the gate asked
/// for usage the client did not: then what asking added is taken out, and the rest goes on in
/// the module's own buffers, with the same flush and last-buffer marks.
pub fn account_body(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx's request, valid for this call.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let pool = request.as_ref().pool;
    let log = request.log();
    let Some(Accounting { scanner: Some(scanner), stripper, answer_ended, held, stripped, .. }) =
        ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut())
    else {
        return next_body(r, input);
    };
    if !held.is_empty() {
        give_back_sent(held);
    }
    let mut out = stripper.as_ref().map(|_| std::mem::take(stripped));
    let (mut last, mut flush, mut recycled) = (false, false, false);
    let mut link = input;
    while !link.is_null() {
        // SAFETY: nginx hands body filters a valid chain of valid buffers.
        let buf = unsafe { &*(*link).buf };
        // SAFETY: as above; a file buffer's file is open while its buffer is passed on.
        let read = unsafe {
            for_each_piece(buf, |bytes| {
                scanner.feed(bytes);
                if let (Some(stripper), Some(out)) = (stripper.as_mut(), out.as_mut()) {
                    stripper.feed(bytes, out);
                }
            })
        };
        if let Err(error) = read {
            ngx_log_error!(NGX_LOG_ERR, log, "answer not read for its usage: {}", error);
            return Status::NGX_ERROR.0;
        }
        last |= buf.last_buf() != 0;
        flush |= buf.flush() != 0;
        recycled |= stripper.is_some() && buf.recycled() != 0;
        // SAFETY: as above.
        link = unsafe { (*link).next };
    }
    if last {
        *answer_ended = true;
        if let (Some(stripper), Some(out)) = (stripper.as_mut(), out.as_mut()) {
            stripper.finish(out);
        }
    }
    let Some(out) = out else {
        let rc = next_body(r, input);
        note_end_delivered(request);
        return rc;
    };
    // The input's bytes are all in `out` (or the stripper's partial event) now.
    if out.is_empty() && !flush && !last {
        // Only part of an event came: nothing to send yet, and nothing to hold the input for
        // (the stripper keeps the partial event); what the writer holds may go, and with it
        // the answer's end.
        // SAFETY: nginx hands body filters a valid chain (or NULL).
        unsafe { consume(input) };
        keep_scratch(request, out);
        let rc = next_body(r, ptr::null_mut());
        sent_and_given_back(request, pool, ptr::null_mut());
        return rc;
    }
    // Output that holds recycled buffers back (proxy_buffering's) is flushed at once, as nginx's
    // sub filter marks its shadows: the upstream waits for them, so postpone_output must not.
    let marks = Marks { flush, last, recycled };
    let Some(mut chain) = stripped_chain(pool, &out, marks, ctx_mut(request)) else {
        return Status::NGX_ERROR.0;
    };
    if let Some(accounting) = ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut()) {
        // SAFETY: the chain stripped_chain just made (one link, one buffer), and the chain
        // nginx handed this filter (or NULL).
        unsafe {
            let ours = (*chain).buf;
            let mut link = input;
            while !link.is_null() {
                accounting.held.push((ours, (*link).buf));
                link = (*link).next;
            }
        }
    }
    keep_scratch(request, out);
    let rc = next_body(r, chain);
    sent_and_given_back(request, pool, &mut chain);
    rc
}

/// After passing the stripper's buffers on: the sent ones go back to its free list (nginx's
/// `ngx_chain_update_chains`), the upstream's buffers held for them are given back, and the
/// answer's end is noted if it reached the client.
fn sent_and_given_back(request: &mut Request, pool: *mut ngx::ffi::ngx_pool_t, chain: *mut *mut ngx_chain_t) {
    if let Some(accounting) = ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut()) {
        if !chain.is_null() {
            // SAFETY: the lists are this request's, in its pool; nginx moves sent buffers with
            // this module's tag from busy to free.
            unsafe { ngx_chain_update_chains(pool, &mut accounting.free, &mut accounting.busy, chain, buffer_tag()) };
        }
        if !accounting.held.is_empty() {
            give_back_sent(&mut accounting.held);
        }
    }
    note_end_delivered(request);
}

/// Gives the upstream back its buffers held for stripper buffers that have been sent, oldest
/// first (the writer sends in order). Runs before a sent buffer can be reused: a held entry
/// never names a buffer that holds new bytes.
fn give_back_sent(held: &mut Vec<(*mut ngx_buf_t, *mut ngx_buf_t)>) {
    // SAFETY: held buffers are this module's, in the request pool; a sent one has pos at last.
    let sent = held.iter().take_while(|(ours, _)| unsafe { (**ours).pos == (**ours).last }).count();
    for (_, buf) in held.drain(..sent) {
        // SAFETY: an upstream buffer handed to this filter, still in the upstream's busy list
        // (its bytes were never marked consumed), alive while the request is.
        unsafe { consume_buf(buf) };
    }
}

/// The largest stripped-bytes vector kept from one call to the next.
const MAX_KEPT_SCRATCH: usize = 16 << 10;

/// Keeps the call's stripped-bytes vector, emptied, for the next call; one grown past a few
/// events' worth (a call that brought many buffers at once) is let go rather than kept.
fn keep_scratch(request: &mut Request, mut out: Vec<u8>) {
    if out.capacity() > MAX_KEPT_SCRATCH {
        return;
    }
    if let Some(accounting) = ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut()) {
        out.clear();
        accounting.stripped = out;
    }
}

/// Records that the answer's end reached the client: it was seen, and nothing is left unsent.
fn note_end_delivered(request: &mut Request) {
    let r = request.as_ref();
    // SAFETY: a request's connection is valid while the request is.
    let all_sent = r.out.is_null() && unsafe { (*r.connection).buffered() } == 0;
    if let Some(accounting) = ctx_mut(request).and_then(|ctx| ctx.accounting.as_mut()) {
        let end_seen = accounting.scanner.as_ref().is_some_and(|scanner| scanner.saw_answer_end());
        accounting.end_delivered |= end_seen && all_sent;
    }
}

/// What the input's buffers said, for the buffer that carries their bytes on.
#[derive(Clone, Copy)]
struct Marks {
    flush: bool,
    last: bool,
    /// The input holds recycled buffers (`proxy_buffering`'s), given back only once this is sent.
    recycled: bool,
}

/// One buffer holding `bytes` for the next filter: a free one of the module's if it has room,
/// else fresh memory from the pool.
fn stripped_chain(
    pool: *mut ngx::ffi::ngx_pool_t,
    bytes: &[u8],
    marks: Marks,
    ctx: Option<&mut RequestCtx>,
) -> Option<*mut ngx_chain_t> {
    let accounting = ctx?.accounting.as_mut()?;
    // SAFETY: the free list is this request's (see account_body); ngx_chain_get_free_buf
    // returns a link with a buffer (reused, or zeroed from the pool) or NULL.
    let link = unsafe { ngx_chain_get_free_buf(pool, &mut accounting.free) };
    if link.is_null() {
        return None;
    }
    // SAFETY: the link and buffer are this module's alone until passed on.
    unsafe {
        let buf = &mut *(*link).buf;
        let room = if buf.start.is_null() { 0 } else { buf.end as usize - buf.start as usize };
        if room < bytes.len() {
            let size = bytes.len().max(4096);
            let memory = ngx_palloc(pool, size).cast::<u8>();
            if memory.is_null() {
                return None;
            }
            buf.start = memory;
            buf.end = memory.add(size);
        }
        if !bytes.is_empty() {
            ptr::copy_nonoverlapping(bytes.as_ptr(), buf.start, bytes.len());
        }
        buf.pos = buf.start;
        buf.last = buf.start.add(bytes.len());
        buf.tag = buffer_tag();
        // An empty buffer is a special one (a flush or the end), never an empty memory buffer.
        buf.set_temporary(u32::from(!bytes.is_empty()));
        buf.set_memory(0);
        buf.set_in_file(0);
        buf.set_recycled(u32::from(marks.recycled));
        buf.set_flush(u32::from(marks.flush));
        buf.set_last_buf(u32::from(marks.last));
        buf.set_last_in_chain(u32::from(marks.last));
        (*link).next = ptr::null_mut();
    }
    Some(link)
}
