//! An answer of this module's own, whole: its header (status, type, length), then its body in
//! one buffer.

use std::ptr;

use ngx::core::Status;
use ngx::ffi::{ngx_http_output_filter, ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_str_t};

use super::buffers::{one_buffer_chain, ChainBytes};

/// The type of every JSON answer of this module's (its refusals, a fleet's listings).
pub const JSON_CONTENT_TYPE: &[u8] = b"application/json; charset=utf-8";

/// Sends `body` as the whole answer to `r`: the header, then (unless the request wants only the
/// header) the body, copied into the request pool. Answers what nginx answered.
pub fn send_whole(r: *mut ngx_http_request_t, status: usize, content_type: &'static [u8], body: &[u8]) -> ngx_int_t {
    // SAFETY: the caller's request, valid for this call; its header is this module's to set until
    // it is sent, and the content type is static.
    let rc = unsafe {
        let out = &mut (*r).headers_out;
        out.status = status;
        out.content_length_n = body.len() as i64;
        out.content_type = ngx_str_t { len: content_type.len(), data: content_type.as_ptr().cast_mut() };
        out.content_type_len = content_type.len();
        out.content_type_lowcase = ptr::null_mut();
        ngx_http_send_header(r)
    };
    // SAFETY: as above.
    if rc == Status::NGX_ERROR.0 || rc > Status::NGX_OK.0 || unsafe { (*r).header_only() } != 0 {
        return rc;
    }
    // SAFETY: the request pool outlives the answer.
    let Some(chain) = (unsafe { one_buffer_chain((*r).pool, ChainBytes::Copied(body), true) }) else {
        return Status::NGX_ERROR.0;
    };
    // SAFETY: a valid request whose header was sent; the chain is this module's to pass on.
    unsafe { ngx_http_output_filter(r, chain) }
}
