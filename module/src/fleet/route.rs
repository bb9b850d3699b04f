//! Choosing a fleet member for a request (the precontent phase, after the access phase has
//! admitted it): by the request's model, among the members whose last poll listed it, one where
//! it is loaded, then the least busy; a 404 in the endpoint's error shape when none has it.
//! Model management needs its target named (`X-Ollama-Backend`); listings are answered here,
//! as the union of the members' listings (the listing filter then cuts them per key).
//! `$ollama_fleet_backend` names the member chosen.

use ngx::core::Status;
use ngx::ffi::{
    ngx_http_finalize_request, ngx_http_request_t, ngx_int_t, ngx_str_t, ngx_variable_value_t, NGX_HTTP_BAD_REQUEST,
    NGX_HTTP_NOT_FOUND, NGX_HTTP_OK, NGX_HTTP_SERVICE_UNAVAILABLE,
};
use ngx::http::{HttpModuleLocationConf, Request};

use super::model::{fleet_ctx, model_of};
use super::shared::{Chosen, FleetRef, MemberState, MAX_MEMBERS};
use crate::answer::{send_whole, JSON_CONTENT_TYPE};
use crate::conf::LocConf;
use crate::ctx::{ctx_mut, refuse};
use crate::hooks::fill;
use crate::module::Module;
use ngx_ollama_auth::endpoints::changes_models;
use ngx_ollama_auth::fleet::{choose, model_key, Candidate};
use ngx_ollama_auth::policy::{classify, strip_prefix, Listing, Method};
use ngx_ollama_auth::refusal::Refusal;
use ngx_ollama_auth::refusal::RefusalReason;

/// The header that names a management request's member (its `server` name in the fleet).
pub const TARGET_HEADER: &str = "x-ollama-backend";

/// A per-worker counter that turns ties round.
static mut ROUND: usize = 0;

fn next_round() -> usize {
    // SAFETY: a worker runs its requests on one thread; this counter is only a tie-breaker.
    unsafe {
        ROUND = ROUND.wrapping_add(1);
        ROUND
    }
}

/// The member for a request for `model` (`None`: any member that is up), other than `tried`.
fn pick(members: &[MemberState], model: Option<u64>, tried: &[usize]) -> Option<usize> {
    let mut candidates = [Candidate::default(); MAX_MEMBERS];
    for (i, (candidate, m)) in candidates.iter_mut().zip(members).enumerate() {
        *candidate = Candidate {
            up: m.up && !tried.contains(&i),
            has: model.is_none_or(|key| m.tags().binary_search(&key).is_ok()),
            loaded: model.is_some_and(|key| m.ps().binary_search(&key).is_ok()),
            busy: m.busy,
        };
    }
    choose(&candidates[..members.len().min(MAX_MEMBERS)], next_round())
}

/// The precontent handler: chooses the member, or answers the request itself.
pub extern "C" fn precontent_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a valid request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    if !request.is_main() {
        return Status::NGX_DECLINED.0;
    }
    let Some(conf) = Module::location_conf(request) else { return Status::NGX_DECLINED.0 };
    let Some(fleet) = conf.fleet else { return Status::NGX_DECLINED.0 };
    let tried = match retry(request) {
        Ok(tried) => tried,
        Err(rc) => return rc,
    };
    let method = Method::from_name(request.as_ref().method_name.as_bytes());
    let Some(path) = strip_prefix(request.as_ref().uri.as_bytes(), conf.path_prefix()).map(<[u8]>::to_vec) else {
        return Status::NGX_DECLINED.0;
    };
    if let Some(listing) = classify(method, &path).listing {
        return answer_listing(r, fleet, listing);
    }
    // What changes a member's models goes to the member the client names, never to all.
    let chosen = if changes_models(&path) {
        match target(request, fleet) {
            Ok(member) => {
                let Some(held) = fleet.get().lock() else { return Status::NGX_ERROR.0 };
                Chosen::counted(fleet, held.members, member)
            }
            Err(message) => return refuse_here(request, conf, NGX_HTTP_BAD_REQUEST, "bad request", message),
        }
    } else {
        let model = model_of(request, conf);
        let key = model.as_deref().map(model_key);
        let Some(held) = fleet.get().lock() else { return Status::NGX_ERROR.0 };
        match pick(held.members, key, &tried) {
            Some(member) => Chosen::counted(fleet, held.members, member),
            None => {
                let any_up = held.members.iter().any(|m| m.up);
                drop(held);
                return match model {
                    Some(model) if any_up => {
                        let message = format!("model \"{model}\" not found on any server of this fleet");
                        refuse_here(request, conf, NGX_HTTP_NOT_FOUND, "not found", message)
                    }
                    _ => {
                        let message = "no server of this fleet is up".to_string();
                        refuse_here(request, conf, NGX_HTTP_SERVICE_UNAVAILABLE, "service unavailable", message)
                    }
                };
            }
        }
    };
    let Some(ctx) = fleet_ctx(request) else { return Status::NGX_ERROR.0 };
    ctx.chosen = Some(chosen);
    Status::NGX_DECLINED.0
}

/// The members tried already: none on a request's first pass; on a pass after its upstream try
/// failed (`error_page 502 504 = @retry` into a fleet location), the failed ones, counted as
/// failures. `Err(NGX_DECLINED)` when a member is chosen already and stands.
fn retry(request: &mut Request) -> Result<Vec<usize>, ngx_int_t> {
    let log = request.log();
    let internal = request.as_ref().internal() != 0;
    let failed = super::health::failed_try(request);
    let Some(ctx) = ctx_mut(request).and_then(|ctx| ctx.fleet.as_mut()?.downcast_mut::<super::model::FleetCtx>())
    else {
        return Ok(Vec::new());
    };
    let Some(chosen) = ctx.chosen.take() else { return Ok(ctx.tried.clone()) };
    match failed {
        Some(status) if internal => {
            super::health::count(&chosen, status, log);
            ctx.tried.push(chosen.member);
            Ok(ctx.tried.clone())
        }
        _ => {
            ctx.chosen = Some(chosen);
            Err(Status::NGX_DECLINED.0)
        }
    }
}

/// The member a management request names in its header.
fn target(request: &Request, fleet: FleetRef) -> Result<usize, String> {
    let names = || fleet.get().members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
    let header = request
        .headers_in_iterator()
        .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(TARGET_HEADER.as_bytes()))
        .map(|(_, value)| value.as_bytes().to_vec());
    let Some(value) = header else {
        return Err(format!(
            "this fleet changes models on one server at a time: name it in an \"X-Ollama-Backend\" header (one of: {})",
            names()
        ));
    };
    fleet
        .get()
        .members
        .iter()
        .position(|m| m.name.as_bytes() == value.as_slice())
        .ok_or_else(|| format!("\"X-Ollama-Backend\" names no server of this fleet (one of: {})", names()))
}

fn refuse_here(request: &mut Request, conf: &LocConf, status: u32, kind: &'static str, message: String) -> ngx_int_t {
    refuse(request, conf, &Refusal { status: status as u16, kind, message, why: RefusalReason::BadRequest })
}

/// The union of the members' listings (those up; for `ps`, the models each has loaded).
fn union_listing(fleet: FleetRef, listing: Listing) -> Option<Vec<u8>> {
    let held = fleet.get().lock()?;
    let mut names: Vec<&str> = Vec::new();
    for member in held.members.iter().filter(|m| m.up) {
        let listed = member.names().split(|&b| b == b'\n').filter_map(|name| std::str::from_utf8(name).ok());
        for name in listed.filter(|name| !name.is_empty()) {
            if listing != Listing::Ps || member.ps().binary_search(&model_key(name)).is_ok() {
                names.push(name);
            }
        }
    }
    Some(ngx_ollama_auth::fleet::union_listing(listing, names))
}

/// Answers a listing from the fleet's state. The module's listing filter still cuts it down
/// to the key's models, as it cuts Ollama's own.
fn answer_listing(r: *mut ngx_http_request_t, fleet: FleetRef, listing: Listing) -> ngx_int_t {
    let Some(body) = union_listing(fleet, listing) else { return Status::NGX_ERROR.0 };
    // A body the client sent with its listing is read and dropped, as nginx's static module
    // does, so that its bytes are never taken for the connection's next request.
    // SAFETY: a valid main request in the precontent phase.
    let discarded = unsafe { ngx::ffi::ngx_http_discard_request_body(r) };
    if discarded != Status::NGX_OK.0 {
        return discarded;
    }
    let rc = send_whole(r, NGX_HTTP_OK as usize, JSON_CONTENT_TYPE, &body);
    // SAFETY: a valid main request in the precontent phase, answered here, finalized once.
    unsafe { ngx_http_finalize_request(r, rc) };
    Status::NGX_DONE.0
}

/// `$ollama_fleet_backend`: the member chosen for the request; empty when none was.
pub unsafe extern "C" fn get_backend(
    r: *mut ngx_http_request_t,
    value: *mut ngx_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: nginx calls variable handlers with a valid request, whose main request is valid
    // for as long as it is.
    let main = unsafe { Request::from_ngx_http_request((*r).main) };
    let name = ctx_mut(main)
        .and_then(|ctx| ctx.fleet.as_ref()?.downcast_ref::<super::model::FleetCtx>())
        .and_then(|ctx| ctx.chosen.as_ref())
        .map(|chosen| chosen.fleet.get().members[chosen.member].name.as_bytes())
        .map(|name| ngx_str_t { len: name.len(), data: name.as_ptr().cast_mut() });
    // SAFETY: nginx hands variable handlers a valid value slot; the name lives as long as the
    // configuration.
    fill(unsafe { &mut *value }, name)
}
