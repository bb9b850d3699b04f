//! `ollama_auth_metrics <zone>;`: a location that answers `GET` (and `HEAD`) with the zone's
//! counters in Prometheus' text format. The counts are copied out under the zone's lock and
//! rendered after it is released (`ngx_ollama_auth::metrics::render`), so other workers wait
//! only for the copy.

use std::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_http_discard_request_body, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_send_header, ngx_int_t, ngx_pcalloc, ngx_pnalloc, ngx_str_t, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK,
};
use ngx::http::{HttpModuleLocationConf, Request};

use super::conf::LocConf;
use super::Module;
use ngx_ollama_auth::metrics::{render, CONTENT_TYPE};

/// The content handler of an `ollama_auth_metrics` location.
pub extern "C" fn metrics_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a valid request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let method = request.as_ref().method;
    if method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    // SAFETY: a valid request in its content phase.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != Status::NGX_OK.0 {
        return rc;
    }
    let Some(zone) = Module::location_conf(request).and_then(|conf: &LocConf| conf.metrics) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some((series, refused)) = zone.lock().map(|locked| locked.snapshot()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let borrowed: Vec<_> =
        series.iter().map(|(user, model, code, counts)| (user.as_str(), model.as_str(), *code, *counts)).collect();
    let mut text = render(&borrowed, &refused);
    text.extend(super::queue::exposition(zone));
    text.extend(super::fleet::exposition(request));
    let pool = request.as_ref().pool;
    let out = &mut request.as_mut().headers_out;
    out.status = NGX_HTTP_OK as usize;
    out.content_length_n = text.len() as i64;
    out.content_type = ngx_str_t { len: CONTENT_TYPE.len(), data: CONTENT_TYPE.as_ptr().cast_mut() };
    out.content_type_len = CONTENT_TYPE.len();
    out.content_type_lowcase = ptr::null_mut();
    // SAFETY: a valid request whose header is complete.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == Status::NGX_ERROR.0 || rc > Status::NGX_OK.0 || request.header_only() {
        return rc;
    }
    // SAFETY: request-pool memory lives as long as the response; each allocation is checked;
    // the buffer is this handler's until passed on.
    unsafe {
        let data = ngx_pnalloc(pool, text.len().max(1)).cast::<u8>();
        let buf = ngx_pcalloc(pool, std::mem::size_of::<ngx_buf_t>()).cast::<ngx_buf_t>();
        let link = ngx_alloc_chain_link(pool);
        if data.is_null() || buf.is_null() || link.is_null() {
            return Status::NGX_ERROR.0;
        }
        ptr::copy_nonoverlapping(text.as_ptr(), data, text.len());
        (*buf).pos = data;
        (*buf).last = data.add(text.len());
        (*buf).set_temporary(u32::from(!text.is_empty()));
        (*buf).set_last_buf(1);
        (*buf).set_last_in_chain(1);
        (*link).buf = buf;
        (*link).next = ptr::null_mut();
        ngx_http_output_filter(r, link)
    }
}
