//! The verdict on an admitted request: its entry's expiry, scopes and models against the endpoint
//! it asks for, then the caps on what it asks. Decided from plain values the glue reads off the
//! request and its location, so every branch is unit tested here.

use std::rc::Rc;

use crate::caps::{CapRefusal, Caps};
use crate::endpoints::{cap_target, CapTarget};
use crate::options::EntryOptions;
use crate::policy::{
    allows, check_model, classify, is_judgeable_target, outside_ollama_roots, query_value, strip_prefix, Access,
    BodyExtra, BodyRule, Endpoint, Listing, Method, ModelRefusal, Scopes,
};
use crate::refusal::RefusalReason;

/// What a request asks, as nginx parsed it.
#[derive(Clone, Copy)]
pub struct Asked<'r> {
    pub method: Method,
    /// The normalized path (decoded, no query, no `//` or `/./`).
    pub uri: &'r [u8],
    /// The request target as the client sent it.
    pub target: &'r [u8],
    /// The query string, undecoded.
    pub args: &'r [u8],
}

/// What the request's location says.
#[derive(Clone, Copy)]
pub struct Location<'c> {
    /// `ollama_auth_path_prefix`, if given.
    pub path_prefix: Option<&'c [u8]>,
    /// The scopes of entries without `scopes=`.
    pub default_scopes: Scopes,
    /// `ollama_auth_caps`, if given.
    pub caps: Option<&'c Caps>,
    /// The location has an `ollama_auth_usage` zone to count limits in.
    pub counts_limits: bool,
}

/// Who was admitted: the entry's options (`None`: a plain entry) and whether it is a Basic user.
#[derive(Clone, Copy)]
pub struct Admitted<'a> {
    pub options: Option<&'a Rc<EntryOptions>>,
    pub is_user: bool,
}

impl Admitted<'_> {
    /// "key" or "user", for the wording of refusals.
    pub fn who(&self) -> &'static str {
        if self.is_user {
            "user"
        } else {
            "key"
        }
    }

    fn scopes(&self, location: &Location<'_>) -> Scopes {
        self.options.and_then(|options| options.scopes).unwrap_or(location.default_scopes)
    }
}

/// The gate's answer in place of the request: status, the kind of error and the reason (the
/// body's text and the error log's), and the reason for the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub why: RefusalReason,
}

impl Refusal {
    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal { status: 400, kind: "bad request", message: message.into(), why: RefusalReason::BadRequest }
    }

    pub fn forbidden(message: impl Into<String>, why: RefusalReason) -> Refusal {
        Refusal { status: 403, kind: "forbidden", message: message.into(), why }
    }

    pub fn too_large(message: impl Into<String>, why: RefusalReason) -> Refusal {
        Refusal { status: 413, kind: "request entity too large", message: message.into(), why }
    }

    /// A body-model refusal as the gate answers it.
    pub fn of_model(refusal: ModelRefusal) -> Refusal {
        match refusal {
            ModelRefusal::BadRequest(message) => Refusal::bad_request(message),
            ModelRefusal::Forbidden(message) => Refusal::forbidden(message, RefusalReason::ForbiddenModel),
        }
    }

    /// A refusal of the caps as the gate answers it.
    pub fn of_caps(refusal: CapRefusal, who: &str) -> Refusal {
        match refusal {
            CapRefusal::BadRequest(message) => Refusal::bad_request(message),
            CapRefusal::Unload(message) => {
                Refusal::forbidden(format!("{message}; this {who} does not have it"), RefusalReason::ForbiddenScope)
            }
        }
    }
}

/// The models a body must name: the rule, the entry's options, and "key" or "user".
pub struct ModelCheck {
    pub rule: BodyRule,
    pub options: Rc<EntryOptions>,
    pub who: &'static str,
}

/// What a request body is clamped to.
pub struct CapCheck {
    pub caps: Caps,
    pub target: CapTarget,
    /// The entry has the `manage` scope: it may unload a model.
    pub may_unload: bool,
    pub who: &'static str,
}

/// What a body is read for: its models, a web-search tool the entry may not use (`search`
/// scope), asking Ollama for the usage of a streamed `/v1` answer, and the caps.
#[derive(Default)]
pub struct BodyCheck {
    pub models: Option<ModelCheck>,
    pub web_search: Option<(BodyExtra, &'static str)>,
    pub add_usage: bool,
    pub caps: Option<CapCheck>,
}

/// The verdict on one admitted request.
pub enum Judgement {
    Allow,
    /// Allowed; the answer lists models and must be cut down to the entry's.
    AllowListing(Listing, Rc<EntryOptions>),
    /// Allowed so far; the body must be read first.
    ReadBody(BodyCheck),
    Refuse(Refusal),
}

/// The endpoint a request asks for, after the location's path prefix.
pub fn endpoint<'r>(asked: &Asked<'r>, path_prefix: Option<&[u8]>) -> Endpoint<'r> {
    match strip_prefix(asked.uri, path_prefix.unwrap_or_default()) {
        Some(path) => classify(asked.method, path),
        None => Endpoint::UNKNOWN,
    }
}

/// Whether a request asks for inference (what occupies the GPU, and what the queue holds).
pub fn is_inference(asked: &Asked<'_>, path_prefix: Option<&[u8]>) -> bool {
    endpoint(asked, path_prefix).access == Access::Scope(Scopes::INFER)
}

/// The verdict on an admitted request at `now` (seconds since the epoch): its entry's expiry,
/// scopes and models, then the caps on what it asks.
pub fn judge(asked: &Asked<'_>, location: &Location<'_>, admitted: &Admitted<'_>, now: i64) -> Judgement {
    let judgement = judge_access(asked, location, admitted, now);
    if !matches!(judgement, Judgement::Allow | Judgement::ReadBody(_)) {
        return judgement;
    }
    let Some(caps) = cap_check(asked, location, admitted) else { return judgement };
    match judgement {
        Judgement::ReadBody(body) => Judgement::ReadBody(BodyCheck { caps: Some(caps), ..body }),
        _ => Judgement::ReadBody(BodyCheck { caps: Some(caps), ..BodyCheck::default() }),
    }
}

/// The caps that apply to this request: its entry's over its location's, if any can change a
/// request to this endpoint. Read from the entry on every request, so an edited key file counts
/// at once.
pub fn cap_check(asked: &Asked<'_>, location: &Location<'_>, admitted: &Admitted<'_>) -> Option<CapCheck> {
    let own = admitted.options.map(|options| options.caps).unwrap_or_default();
    let caps = own.over(location.caps.unwrap_or(&Caps::default()));
    if caps.is_empty() {
        return None;
    }
    let path = strip_prefix(asked.uri, location.path_prefix.unwrap_or_default())?;
    let target = cap_target(asked.method, path).filter(|&target| caps.apply_to(target))?;
    let may_unload = admitted.scopes(location).contains(Scopes::MANAGE);
    Some(CapCheck { caps, target, may_unload, who: admitted.who() })
}

fn judge_access(asked: &Asked<'_>, location: &Location<'_>, admitted: &Admitted<'_>, now: i64) -> Judgement {
    let options = admitted.options;
    let who = admitted.who();
    if !is_judgeable_target(asked.target) {
        return Judgement::Refuse(Refusal::bad_request("a request target may not contain \"#\""));
    }
    if options.is_some_and(|options| options.is_expired_at(now)) {
        let message = if admitted.is_user { "this user's access has expired" } else { "this API key has expired" };
        let refusal =
            Refusal { status: 401, kind: "unauthorized", message: message.into(), why: RefusalReason::Expired };
        return Judgement::Refuse(refusal);
    }
    if options.is_some_and(|options| options.has_limits()) && !location.counts_limits {
        // Limits are counted in the zone of `ollama_auth_usage`; a reload brought a limited entry
        // into a location without one. It admits no one rather than everyone without a limit.
        let message =
            format!("this {who} has limits, which this location cannot count (it has no \"ollama_auth_usage\" zone)");
        return Judgement::Refuse(Refusal::forbidden(message, RefusalReason::Unenforceable));
    }
    let scopes = admitted.scopes(location);
    let restricted_models =
        options.is_some_and(|options| options.models.as_ref().is_some_and(|m| !m.is_unrestricted()));
    if scopes == Scopes::ALL && !restricted_models {
        return Judgement::Allow; // every endpoint, every model: nothing to look at
    }
    let endpoint = endpoint(asked, location.path_prefix);
    if let Err(refusal) = allows(scopes, &endpoint) {
        let mut message = format!("{refusal}; this {who} does not have it");
        if refusal.unknown_endpoint && location.path_prefix.is_none() && outside_ollama_roots(asked.uri) {
            message.push_str(" (a location serving Ollama under a path prefix needs \"ollama_auth_path_prefix\")");
        }
        return Judgement::Refuse(Refusal::forbidden(message, RefusalReason::ForbiddenScope));
    }
    let web_search = match endpoint.extra {
        extra @ BodyExtra::WebSearchTools { .. } if !scopes.contains(Scopes::SEARCH) => Some((extra, who)),
        _ => None,
    };
    let Some(options) = options.filter(|_| restricted_models) else {
        return match web_search {
            Some(_) => Judgement::ReadBody(BodyCheck { web_search, ..BodyCheck::default() }),
            None => Judgement::Allow,
        };
    };
    judge_models(asked, &endpoint, options, who, web_search)
}

/// The models of an entry that may use only some, against what the request names.
fn judge_models(
    asked: &Asked<'_>,
    endpoint: &Endpoint<'_>,
    options: &Rc<EntryOptions>,
    who: &'static str,
    web_search: Option<(BodyExtra, &'static str)>,
) -> Judgement {
    let models = options.models.as_ref().expect("only entries with restricted models get here");
    let allow_if = |checked: Result<(), ModelRefusal>| match checked {
        Ok(()) => Judgement::Allow,
        Err(refusal) => Judgement::Refuse(Refusal::of_model(refusal)),
    };
    let read_body = |web_search| {
        let models = Some(ModelCheck { rule: BodyRule::of(endpoint), options: options.clone(), who });
        Judgement::ReadBody(BodyCheck { models, web_search, ..BodyCheck::default() })
    };
    if endpoint.extra == BodyExtra::FormModel {
        // Go's FormValue("model"): the query string's comes before the multipart field's.
        return match query_value(asked.args, "model") {
            Ok(Some(text)) if !text.is_empty() => allow_if(check_model(&text, models, who)),
            Ok(None) => read_body(web_search),
            Ok(Some(_)) => Judgement::Refuse(Refusal::bad_request("\"model\" must be a model name")),
            Err(_) => Judgement::Refuse(Refusal::bad_request(
                "the query string cannot be read as Ollama reads it (a \";\" or a bad escape)",
            )),
        };
    }
    if let Some(text) = endpoint.path_model {
        return match std::str::from_utf8(text) {
            Ok(text) => allow_if(check_model(text, models, who)),
            Err(_) => Judgement::Refuse(Refusal::bad_request("invalid model name")),
        };
    }
    if !endpoint.model_members.is_empty() {
        return read_body(web_search);
    }
    if endpoint.access == Access::OnlyAll {
        let message = format!("this {who} may use only some models, and this endpoint's model cannot be checked");
        return Judgement::Refuse(Refusal::forbidden(message, RefusalReason::ForbiddenModel));
    }
    match endpoint.listing {
        Some(listing) => Judgement::AllowListing(listing, options.clone()),
        None => Judgement::Allow,
    }
}

#[cfg(test)]
mod tests;
