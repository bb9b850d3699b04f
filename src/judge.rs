//! The verdict on an admitted request: its entry's expiry, scopes and models against the endpoint
//! it asks for, then the caps on what it asks. Decided from plain values the glue reads off the
//! request and its location, so every branch is unit tested here.

use std::rc::Rc;

use crate::caps::{CapRefusal, Caps};
use crate::endpoints::{cap_target, CapTarget};
use crate::limits::{ConfigError, RateRefusal};
use crate::options::EntryOptions;
use crate::policy::{
    allows, asks_web_search, check_body_models, check_form_models, check_model, classify, is_judgeable_target,
    outside_ollama_roots, query_value, strip_prefix, Access, BodyExtra, BodyRule, Endpoint, Listing, Method,
    ModelRefusal, Scopes,
};
use crate::refusal::{Refusal, RefusalReason};

/// What a request asks, as nginx parsed it.
#[derive(Clone, Copy)]
pub struct Asked<'r> {
    /// The method as sent, read into a [`Method`] only where the endpoint matters.
    pub method_name: &'r [u8],
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

/// Why a limited key's request is not admitted, as the zone found it.
pub enum LimitsRefused<'a> {
    /// Over one of its limits.
    Over(&'a RateRefusal),
    /// The location has no zone to count them in.
    NoZone,
    /// They cannot be counted at all.
    Uncountable(&'a ConfigError),
    /// The zone has no room for another limited key.
    ZoneFull,
}

/// The refusals a verdict makes.
impl Refusal {
    /// A limited key's request the zone does not admit, as the gate answers it.
    pub fn of_limits(refused: LimitsRefused<'_>, who: &str) -> Refusal {
        match refused {
            LimitsRefused::Over(over) => Refusal::rate_limited(over.to_string()),
            LimitsRefused::NoZone => {
                Refusal::forbidden(format!("this {who}'s limits cannot be counted here"), RefusalReason::Unenforceable)
            }
            LimitsRefused::Uncountable(error) => Refusal::forbidden(
                format!("this {who}'s limits cannot be counted: {error}"),
                RefusalReason::Unenforceable,
            ),
            LimitsRefused::ZoneFull => {
                Refusal::unavailable("the server cannot count this key's limits now", RefusalReason::Unenforceable)
            }
        }
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

/// The verdict on a body read for `check`: a model the entry may not use, or a web-search tool
/// without the `search` scope, refuses it. `content_type` is the request's one `Content-Type`
/// (empty when it has none, or several: which of two Go would read is not guessed at).
pub fn judge_body(check: &BodyCheck, body: &[u8], content_type: &[u8]) -> Result<(), Refusal> {
    if let Some(models) = &check.models {
        let allowed = models.options.models.as_ref().expect("read only for entries with models=");
        let checked = match models.rule.extra {
            BodyExtra::FormModel => check_form_models(body, content_type, allowed, models.who),
            _ => check_body_models(body, models.rule, allowed, models.who),
        };
        checked.map_err(Refusal::of_model)?;
    }
    let Some((extra, who)) = check.web_search else { return Ok(()) };
    match asks_web_search(body, extra) {
        Ok(false) => Ok(()),
        Ok(true) => Err(Refusal::forbidden(
            format!("a web-search tool needs the \"search\" scope; this {who} does not have it"),
            RefusalReason::ForbiddenScope,
        )),
        Err(error) => Err(Refusal::bad_request(format!("the body must be one JSON object: {error}"))),
    }
}

/// A body past what the gate reads (`most_bytes`) for `check`: `None` where it was read only for
/// an estimate (then made from its length), else the refusal. A form's model past it cannot be
/// read: refused as a model that cannot be checked.
pub fn judge_too_large(check: &BodyCheck, most_bytes: usize) -> Option<Refusal> {
    if check.models.is_none() && check.web_search.is_none() && !check.add_usage && check.caps.is_none() {
        return None;
    }
    if let Some(models) = check.models.as_ref().filter(|models| models.rule.extra == BodyExtra::FormModel) {
        let message = format!(
            "this {} may use only some models, and a form's model is read within {} MB: name it in the query string (?model=...)",
            models.who,
            most_bytes >> 20
        );
        return Some(Refusal::forbidden(message, RefusalReason::ForbiddenModel));
    }
    let message = format!("a body read by this gate may be at most {} MB", most_bytes >> 20);
    Some(Refusal::too_large(message, RefusalReason::TooLarge))
}

/// The endpoint a request asks for, after the location's path prefix.
pub fn endpoint<'r>(asked: &Asked<'r>, path_prefix: Option<&[u8]>) -> Endpoint<'r> {
    match strip_prefix(asked.uri, path_prefix.unwrap_or_default()) {
        Some(path) => classify(Method::from_name(asked.method_name), path),
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
    let target = cap_target(Method::from_name(asked.method_name), path).filter(|&target| caps.apply_to(target))?;
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
