//! What an admitted request may do: its entry's expiry, scopes and models against the endpoint
//! it asks for, and the caps on what it asks (the rules themselves are plain Rust in
//! `ngx_ollama_auth::policy` and `ngx_ollama_auth::caps`).

use std::rc::Rc;

use ngx::ffi::{NGX_HTTP_BAD_REQUEST, NGX_HTTP_FORBIDDEN, NGX_HTTP_UNAUTHORIZED};
use ngx::http::Request;

use super::authenticate::Admission;
use super::caps::{cap_check, CapCheck};
use super::clock::now_seconds;
use super::conf::LocConf;
use ngx_ollama_auth::metrics::RefusalReason;
use ngx_ollama_auth::options::EntryOptions;
use ngx_ollama_auth::policy::{
    allows, check_model, classify, is_judgeable_target, outside_ollama_roots, query_value, strip_prefix, Access,
    BodyExtra, BodyRule, Endpoint, Listing, Method, ModelRefusal, Scopes,
};

/// What a body is read for: its models (the rule, the entry's options, and who it is, "key" or
/// "user"), a web-search tool the entry may not use (`search` scope), and asking Ollama for the
/// usage of a streamed `/v1` answer (see `accounting`).
pub struct BodyCheck {
    pub models: Option<ModelCheck>,
    pub web_search: Option<(BodyExtra, &'static str)>,
    pub add_usage: bool,
    /// The caps to clamp the body to (see `caps`).
    pub caps: Option<CapCheck>,
}

pub struct ModelCheck {
    pub rule: BodyRule,
    pub options: Rc<EntryOptions>,
    pub who: &'static str,
}

/// The verdict on one admitted request.
pub enum Judgement {
    Allow,
    /// Allowed; the answer lists models and must be cut down to the entry's.
    AllowListing(Listing, Rc<EntryOptions>),
    /// Allowed so far; the body names the model and must be read first.
    ReadBody(BodyCheck),
    /// Answered by this module: status, the kind of error and the reason (the body's text and
    /// the error log's), and the reason for the metrics.
    Refuse {
        status: usize,
        kind: &'static str,
        reason: String,
        why: RefusalReason,
    },
}

pub fn refuse(status: u32, kind: &'static str, message: String, why: RefusalReason) -> Judgement {
    Judgement::Refuse { status: status as usize, kind, reason: message, why }
}

/// A body-model refusal as the module answers it.
pub fn refuse_model(refusal: ModelRefusal) -> Judgement {
    match refusal {
        ModelRefusal::BadRequest(message) => {
            refuse(NGX_HTTP_BAD_REQUEST, "bad request", message, RefusalReason::BadRequest)
        }
        ModelRefusal::Forbidden(message) => {
            refuse(NGX_HTTP_FORBIDDEN, "forbidden", message, RefusalReason::ForbiddenModel)
        }
    }
}

/// Adds the caps to a judgement that lets the request through: its body must then be read.
fn with_caps(judgement: Judgement, request: &Request, conf: &LocConf, admission: &Admission) -> Judgement {
    if !matches!(judgement, Judgement::Allow | Judgement::ReadBody(_)) {
        return judgement;
    }
    let Some(check) = cap_check(request, conf, admission) else {
        return judgement;
    };
    match judgement {
        Judgement::ReadBody(body) => Judgement::ReadBody(BodyCheck { caps: Some(check), ..body }),
        _ => Judgement::ReadBody(BodyCheck { models: None, web_search: None, add_usage: false, caps: Some(check) }),
    }
}

/// The endpoint a request asks for: its method, and nginx's normalized URI (decoded, no query,
/// no `//` or `/./`) after this location's `ollama_auth_path_prefix`.
fn endpoint<'r>(request: &'r Request, conf: &LocConf) -> Endpoint<'r> {
    let method = Method::from_name(request.as_ref().method_name.as_bytes());
    match strip_prefix(request.as_ref().uri.as_bytes(), conf.path_prefix()) {
        Some(path) => classify(method, path),
        None => Endpoint::UNKNOWN,
    }
}

/// Whether a request asks for inference (what occupies the GPU, and what the queue holds).
pub fn is_inference(request: &Request, conf: &LocConf) -> bool {
    endpoint(request, conf).access == Access::Scope(Scopes::INFER)
}

/// The verdict on an admitted request: its entry's expiry, scopes and models, then the caps on
/// what it asks.
pub fn judge(request: &Request, conf: &LocConf, admission: &Admission) -> Judgement {
    with_caps(judge_access(request, conf, admission), request, conf, admission)
}

fn judge_access(request: &Request, conf: &LocConf, admission: &Admission) -> Judgement {
    let options = admission.options.as_ref();
    let who = if admission.is_user { "user" } else { "key" };
    if !is_judgeable_target(request.as_ref().unparsed_uri.as_bytes()) {
        let message = "a request target may not contain \"#\"".to_string();
        return refuse(NGX_HTTP_BAD_REQUEST, "bad request", message, RefusalReason::BadRequest);
    }
    if options.is_some_and(|options| options.is_expired_at(now_seconds())) {
        let message = if admission.is_user { "this user's access has expired" } else { "this API key has expired" };
        return refuse(NGX_HTTP_UNAUTHORIZED, "unauthorized", message.into(), RefusalReason::Expired);
    }
    if options.is_some_and(|options| options.has_limits()) && conf.usage_zone().is_none() {
        // Limits are counted in the zone of `ollama_auth_usage`; a reload brought a limited entry
        // into a location without one. It admits no one rather than everyone without a limit.
        return refuse(
            NGX_HTTP_FORBIDDEN,
            "forbidden",
            format!("this {who} has limits, which this location cannot count (it has no \"ollama_auth_usage\" zone)"),
            RefusalReason::Unenforceable,
        );
    }
    let scopes = options.and_then(|options| options.scopes).unwrap_or(conf.default_scopes());
    let restricted_models =
        options.is_some_and(|options| options.models.as_ref().is_some_and(|m| !m.is_unrestricted()));
    if scopes == Scopes::ALL && !restricted_models {
        return Judgement::Allow; // every endpoint, every model: nothing to look at
    }
    let endpoint = endpoint(request, conf);
    if let Err(refusal) = allows(scopes, &endpoint) {
        let mut message = format!("{refusal}; this {who} does not have it");
        if refusal.unknown_endpoint
            && conf.path_prefix.is_none()
            && outside_ollama_roots(request.as_ref().uri.as_bytes())
        {
            message.push_str(" (a location serving Ollama under a path prefix needs \"ollama_auth_path_prefix\")");
        }
        return refuse(NGX_HTTP_FORBIDDEN, "forbidden", message, RefusalReason::ForbiddenScope);
    }
    let web_search = match endpoint.extra {
        extra @ BodyExtra::WebSearchTools { .. } if !scopes.contains(Scopes::SEARCH) => Some((extra, who)),
        _ => None,
    };
    let Some(options) = options.filter(|_| restricted_models) else {
        return match web_search {
            Some(_) => Judgement::ReadBody(BodyCheck { models: None, web_search, add_usage: false, caps: None }),
            None => Judgement::Allow,
        };
    };
    let models = options.models.as_ref().expect("filtered on models");
    if endpoint.extra == BodyExtra::FormModel {
        // Go's FormValue("model"): the query string's comes before the multipart field's.
        return match query_value(request.as_ref().args.as_bytes(), "model") {
            Ok(Some(text)) if !text.is_empty() => {
                check_model(&text, models, who).map_or_else(refuse_model, |()| Judgement::Allow)
            }
            Ok(None) => {
                let models = Some(ModelCheck { rule: BodyRule::of(&endpoint), options: options.clone(), who });
                Judgement::ReadBody(BodyCheck { models, web_search, add_usage: false, caps: None })
            }
            Ok(Some(_)) => refuse_model(ModelRefusal::BadRequest("\"model\" must be a model name".into())),
            Err(_) => {
                let message = "the query string cannot be read as Ollama reads it (a \";\" or a bad escape)";
                refuse(NGX_HTTP_BAD_REQUEST, "bad request", message.into(), RefusalReason::BadRequest)
            }
        };
    }
    if let Some(text) = endpoint.path_model {
        return match std::str::from_utf8(text).map_err(|_| ModelRefusal::BadRequest("invalid model name".into())) {
            Ok(text) => check_model(text, models, who).map_or_else(refuse_model, |()| Judgement::Allow),
            Err(refusal) => refuse_model(refusal),
        };
    }
    if !endpoint.model_members.is_empty() {
        let models = Some(ModelCheck { rule: BodyRule::of(&endpoint), options: options.clone(), who });
        return Judgement::ReadBody(BodyCheck { models, web_search, add_usage: false, caps: None });
    }
    if endpoint.access == Access::OnlyAll {
        let message = format!("this {who} may use only some models, and this endpoint's model cannot be checked");
        return refuse(NGX_HTTP_FORBIDDEN, "forbidden", message, RefusalReason::ForbiddenModel);
    }
    match endpoint.listing {
        Some(listing) => Judgement::AllowListing(listing, options.clone()),
        None => Judgement::Allow,
    }
}
