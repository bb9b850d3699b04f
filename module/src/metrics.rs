//! `ollama_auth_metrics <zone>;`: a location that answers `GET` (and `HEAD`) with the zone's
//! counters in Prometheus' text format. The counts are copied out under the zone's lock and
//! rendered after it is released (`ngx_ollama_auth::metrics::render`), so other workers wait
//! only for the copy.

use std::ffi::{c_char, c_void};

use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_http_discard_request_body, ngx_http_request_t, ngx_int_t, NGX_HTTP_GET,
    NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK,
};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule, Request};

use super::answer::send_whole;
use super::conf::LocConf;
use super::directive::{arguments, conf_error, conf_mut};
use super::module::Module;
use super::zone::directive::zone_reference;
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
    text.extend(super::queue::store::exposition(zone));
    text.extend(super::fleet::health::exposition(request));
    send_whole(r, NGX_HTTP_OK as usize, CONTENT_TYPE.as_bytes(), &text)
}

/// `ollama_auth_metrics <zone>`: this location answers with the zone's counters.
pub extern "C" fn set_metrics(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration and the configuration being
    // parsed, with one argument (NGX_CONF_TAKE1).
    let (conf, value) = unsafe { (conf_mut::<LocConf>(conf), &arguments(cf)[1]) };
    if conf.metrics.is_some() {
        return conf_error(c"is duplicate");
    }
    // SAFETY: cf is the configuration being parsed; size 0 names a zone defined elsewhere.
    let Some(zone) = (unsafe { zone_reference(cf, value, 0) }) else {
        return NGX_CONF_ERROR;
    };
    conf.metrics = Some(zone);
    // SAFETY: cf is a location's configuration being parsed: the core module's location
    // configuration exists, and its content handler is this location's to set.
    let Some(core) = (unsafe { NgxHttpCoreModule::location_conf_mut(&*cf) }) else {
        return NGX_CONF_ERROR;
    };
    core.handler = Some(metrics_handler);
    NGX_CONF_OK
}
