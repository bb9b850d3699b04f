//! Reads a request body in the access phase, for the model it names, to clamp it to the caps
//! (see `caps`), and, when usage is counted, to ask Ollama for a streamed `/v1` answer's usage,
//! before the request goes on to `proxy_pass`; as nginx's mirror module does: read it with
//! `ngx_http_read_client_request_body`, answer `NGX_DONE`, and run the phases again from the
//! callback, where the access handler finds the verdict in the request context.
//!
//! nginx keeps the body it read (in memory or in a temporary file) and proxies exactly those
//! bytes; chunked bodies, `Expect: 100-continue` and `client_max_body_size` are nginx's own.

use ngx::core::Status;
use ngx::ffi::{
    ngx_http_core_run_phases, ngx_http_finalize_request, ngx_http_read_client_request_body, ngx_http_request_t,
    ngx_int_t, ngx_list_part_t, ngx_pnalloc, ngx_table_elt_t, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR,
};
use ngx::http::{HttpModuleLocationConf, Request};
use ngx::{ngx_log_debug_http, ngx_log_error};

use super::accounting::{self, ask_for_usage};
use super::buffers::{append_chain, one_buffer_chain, single_memory_buffer, ChainBytes};
use super::caps::clamp_body;
use super::conf::LocConf;
use super::ctx::{ctx_mut, ctx_or_new, refuse, BodyState};
use super::limit;
use super::module::Module;
use ngx_ollama_auth::compressed::{as_ollama_reads, NotDecoded};
use ngx_ollama_auth::judge::{judge_body, judge_too_large, BodyCheck};
use ngx_ollama_auth::policy::BodyExtra;
use ngx_ollama_auth::refusal::Refusal;

/// Larger bodies read for models or caps are refused (413) rather than copied and
/// scanned: the scan runs on the worker's event loop (about 1.6 ms for 20 MB here).
const MAX_SCANNED_BODY: usize = 64 << 20;

/// Starts reading the body. Answers what the access handler answers: `NGX_DONE` while reading.
///
/// Takes the raw request: the callback may run the phases (and so this module's access handler)
/// before this returns, and no Rust borrow of the request may be alive across that.
pub fn start_reading(r: *mut ngx_http_request_t, check: BodyCheck) -> ngx_int_t {
    {
        // SAFETY: nginx's request, valid for this call; the borrow ends with this block.
        let request = unsafe { Request::from_ngx_http_request(r) };
        let Some(ctx) = ctx_or_new(request) else { return Status::NGX_ERROR.0 };
        ctx.body = Some(BodyState::Reading(Box::new(check)));
    }
    // SAFETY: a valid main request in the access phase; nginx calls body_read when the whole
    // body is in (maybe at once, before this returns).
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_read)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    // SAFETY: reading took a reference on the request (r->main->count); NGX_DONE gives it back.
    unsafe { ngx_http_finalize_request(r, Status::NGX_DONE.0) };
    Status::NGX_DONE.0
}

/// The verdict on a body that has been read in full.
fn verdict(request: &mut Request) -> ngx_int_t {
    let Some(BodyState::Reading(check)) = ctx_mut(request).and_then(|ctx| ctx.body.take()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(conf) = Module::location_conf(request) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let mut copied = Vec::new();
    let body = match body_bytes(request, &mut copied) {
        Ok(Some(body)) => body,
        Ok(None) => return too_large(request, conf, &check),
        Err(rc) => return rc,
    };
    let zstd = match zstd_decoded(request, conf, body) {
        Ok(zstd) => zstd,
        Err(refused) => return refused,
    };
    let body = zstd.as_ref().map_or(body, |(decoded, _)| &decoded[..]);
    accounting::estimate_from_body(request, conf, body);
    let is_form = check.models.as_ref().is_some_and(|models| models.rule.extra == BodyExtra::FormModel);
    if let Err(refusal) = judge_body(&check, body, if is_form { content_type(request) } else { b"" }) {
        return refuse(request, conf, &refusal);
    }
    ngx_log_debug_http!(request, "ollama auth: request body judged, allowed");
    if let Err(rc) = rewrite(request, conf, &check, body, zstd.as_ref().map(|&(_, encoding)| encoding)) {
        return rc;
    }
    limit::admit(request, conf)
}

/// The body nginx read: where it is when it is one memory buffer, else copied into `copied`;
/// `None` past `MAX_SCANNED_BODY`; `Err` with what the access phase answers when it cannot be read.
fn body_bytes<'a>(request: &Request, copied: &'a mut Vec<u8>) -> Result<Option<&'a [u8]>, ngx_int_t> {
    let request_body = request.as_ref().request_body;
    // SAFETY: after a read, r->request_body is NULL or nginx's record of the body, whose chain
    // holds valid buffers (memory or the still open temporary file).
    let chain = if request_body.is_null() { std::ptr::null_mut() } else { unsafe { (*request_body).bufs } };
    // SAFETY: as above; a body in one memory buffer is read where it is, for its life, which
    // is the request's (and so longer than `copied`'s borrow here).
    if let Some(bytes) = unsafe { single_memory_buffer(chain) } {
        return Ok(Some(bytes));
    }
    // SAFETY: as above.
    match unsafe { append_chain(chain, copied, MAX_SCANNED_BODY) } {
        Ok(_) => Ok(Some(&copied[..])),
        Err(error) if error.kind() == std::io::ErrorKind::FileTooLarge => Ok(None),
        Err(error) => {
            ngx_log_error!(NGX_LOG_ERR, request.log(), "request body not read: {}", error);
            Err(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t)
        }
    }
}

/// What a body too large to scan gets: an estimate by its length where it was read only for
/// that (`tokens=`), else a refusal.
fn too_large(request: &mut Request, conf: &LocConf, check: &BodyCheck) -> ngx_int_t {
    match judge_too_large(check, MAX_SCANNED_BODY) {
        Some(refusal) => refuse(request, conf, &refusal),
        None => {
            accounting::estimate_from_length(request, conf);
            limit::admit(request, conf)
        }
    }
}

/// The one `Content-Type` of the request, or nothing when it has none or several.
fn content_type(request: &Request) -> &[u8] {
    match request_headers_named(request, b"content-type")[..] {
        // SAFETY: an entry of this request's header list, in its pool, which outlives the borrow.
        [one] => unsafe { (*one).value.as_bytes() },
        _ => b"",
    }
}

/// Rewrites the body for `proxy_pass`: clamped to the caps, then (where usage is counted)
/// asking for a streamed `/v1` answer's usage. A rewritten zstd body goes on decoded, its
/// `Content-Encoding` made `identity` (Ollama decodes only `zstd` and reads the rest as is).
/// `Err` is the access phase's answer.
fn rewrite(
    request: &mut Request,
    conf: &LocConf,
    check: &BodyCheck,
    body: &[u8],
    zstd_encoding: Option<*mut ngx_table_elt_t>,
) -> Result<(), ngx_int_t> {
    let mut rewritten = None;
    if let Some(caps) = &check.caps {
        rewritten = clamp_body(request, caps, body).map_err(|refusal| refuse(request, conf, &refusal))?;
    }
    if check.add_usage {
        match ask_for_usage(request, rewritten.as_deref().unwrap_or(body)) {
            Ok(Some(asked)) => rewritten = Some(asked),
            Ok(None) => {}
            Err(error) => {
                // Ollama would read the first value and stream its answer without the counts.
                let refusal = Refusal::bad_request(format!("the body must be one JSON object: {error}"));
                return Err(refuse(request, conf, &refusal));
            }
        }
    }
    let Some(bytes) = rewritten else { return Ok(()) };
    replace_body(request, &bytes).ok_or(Status::NGX_ERROR.0)?;
    if let Some(encoding) = zstd_encoding {
        // SAFETY: an entry of this request's header list, in its pool; the static text outlives
        // the request.
        unsafe { (*encoding).value = ngx::ffi::ngx_str_t { len: 8, data: b"identity".as_ptr().cast_mut() } };
    }
    Ok(())
}

/// A `Content-Encoding: zstd` body on the `/v1` paths where Ollama decodes one, decoded as
/// Ollama decodes it, with its `Content-Encoding` header; `None` for any other body; `Err` with
/// what the access phase answers for a body refused.
fn zstd_decoded(
    request: &mut Request,
    conf: &LocConf,
    body: &[u8],
) -> Result<Option<(Vec<u8>, *mut ngx_table_elt_t)>, ngx_int_t> {
    let path = accounting::path(request, conf).unwrap_or_default().as_bytes();
    as_ollama_decodes(request, path, body).map_err(|not_decoded| refuse(request, conf, &not_decoded.refusal()))
}

/// A body as Ollama reads it at `path` (after the location's prefix): decoded, with its
/// `Content-Encoding` header, where Ollama decodes zstd; `None` where it takes the bytes as
/// they are. Every reader of a body's model goes through this, so none reads it otherwise.
pub fn as_ollama_decodes(
    request: &Request,
    path: &[u8],
    body: &[u8],
) -> Result<Option<(Vec<u8>, *mut ngx_table_elt_t)>, NotDecoded> {
    let headers = request_headers_named(request, b"content-encoding");
    // SAFETY: entries of this request's header list, in its pool.
    let values: Vec<&[u8]> = headers.iter().map(|&header| unsafe { (*header).value.as_bytes() }).collect();
    let decoded = as_ollama_reads(std::str::from_utf8(path).unwrap_or_default(), &values, body)?;
    // A decoded body had exactly one Content-Encoding.
    Ok(decoded.map(|decoded| (decoded, headers[0])))
}

/// The request's headers named `name` (any case), in the order sent.
fn request_headers_named(request: &Request, name: &[u8]) -> Vec<*mut ngx_table_elt_t> {
    let mut found = Vec::new();
    let mut part: *const ngx_list_part_t = &request.as_ref().headers_in.headers.part;
    while !part.is_null() {
        // SAFETY: nginx's list of the request's headers: each part holds `nelts` entries at
        // `elts`, and `next` is the next part or NULL.
        unsafe {
            let entries = (*part).elts.cast::<ngx_table_elt_t>();
            for index in 0..(*part).nelts {
                let entry = entries.add(index);
                if (*entry).key.as_bytes().eq_ignore_ascii_case(name) {
                    found.push(entry);
                }
            }
            part = (*part).next;
        }
    }
    found
}

/// Puts `bytes` in place of the request body nginx read, for `proxy_pass` to send: one memory
/// buffer from the request pool, and the length it announces.
fn replace_body(request: &mut Request, bytes: &[u8]) -> Option<()> {
    let r = request.as_mut();
    let pool = r.pool;
    // SAFETY: the request pool lives as long as the request; ngx_pcalloc and ngx_pnalloc return
    // zeroed or raw memory of the asked size, or NULL; the request body record was made by the
    // read that just finished, and is this request's to change until proxy_pass reads it.
    unsafe {
        let rb = r.request_body;
        if rb.is_null() {
            return None;
        }
        let link = one_buffer_chain(pool, ChainBytes::Copied(bytes), true)?;
        (*rb).bufs = link;
        r.headers_in.content_length_n = bytes.len() as i64;
        // `$content_length` reads the header, if the client sent one (chunked bodies have none).
        let header = r.headers_in.content_length;
        if !header.is_null() {
            let digits = bytes.len().to_string();
            let text = ngx_pnalloc(pool, digits.len()).cast::<u8>();
            if text.is_null() {
                return None;
            }
            std::ptr::copy_nonoverlapping(digits.as_ptr(), text, digits.len());
            (*header).value = ngx::ffi::ngx_str_t { len: digits.len(), data: text };
        }
    }
    Some(())
}

unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    {
        // SAFETY: nginx calls the post handler with the request whose body was read; the borrow
        // ends with this block, before the phases run again.
        let request = unsafe { Request::from_ngx_http_request(r) };
        let verdict = verdict(request);
        let Some(ctx) = ctx_mut(request) else {
            // SAFETY: the request nginx handed this handler; it must still be finished.
            unsafe { ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t) };
            return;
        };
        ctx.body = Some(BodyState::Judged(verdict));
    }
    // SAFETY: as the mirror module does: the body is kept for whoever reads it next (an
    // error_page going through the phases again), and the phases go on from the access
    // handler, which now finds the verdict; later write events run the phases too.
    unsafe {
        (*r).set_preserve_body(1);
        (*r).write_event_handler = Some(ngx_http_core_run_phases);
        ngx_http_core_run_phases(r);
    }
}
