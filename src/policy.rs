//! What each Ollama endpoint needs a key to hold, and where its request names a model.
//!
//! Endpoints are known by method and path, as Ollama's router (`server/routes.go`) lists them.
//! Anything else, including endpoints a later Ollama adds, needs the `all` scope: a key is never
//! given more than its scopes name because a path was new or spelled oddly.

use std::fmt;

use crate::endpoints::{find_route, is_segment, route_path, NO_MEMBERS};
pub use crate::endpoints::{Access, BodyExtra, Listing, Method};
use crate::form::{boundary, field_values};
use crate::json::{for_each_top_level_member, go_name_matches, string_value, JsonError, ValueKind};
use crate::listing::filter_listing;
use crate::models::{ModelName, ModelPatterns};
pub use crate::scopes::Scopes;

/// What `classify` found out about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint<'a> {
    pub access: Access,
    /// The JSON body members that name a model, each to be checked when present.
    pub model_members: &'static [&'static str],
    /// Body members that name what a model is made of by other means than a model name (blob
    /// digests): a key limited to some models may not send them, since they cannot be checked.
    pub uncheckable_members: &'static [&'static str],
    /// `GET /v1/models/<model>`: the model as it stands in the path.
    pub path_model: Option<&'a [u8]>,
    pub listing: Option<Listing>,
    /// What else the body may ask for that needs its own scope or rule (cloud models, web
    /// searches); see [`BodyExtra`].
    pub extra: BodyExtra,
}

impl Endpoint<'static> {
    pub const UNKNOWN: Endpoint<'static> = Endpoint {
        access: Access::OnlyAll,
        model_members: NO_MEMBERS,
        uncheckable_members: NO_MEMBERS,
        path_model: None,
        listing: None,
        extra: BodyExtra::None,
    };
}

impl Endpoint<'_> {
    /// The scope a key must hold, or `None` if any key will do.
    pub fn needed_scope(&self) -> Option<Scopes> {
        match self.access {
            Access::AnyKey => None,
            Access::Scope(scope) => Some(scope),
            Access::OnlyAll => Some(Scopes::ALL),
        }
    }
}

/// Says what a request needs, from its method and its path (decoded, without the query, and
/// with any configured prefix already taken off). Unknown paths and methods need `all`.
pub fn classify(method: Method, path: &[u8]) -> Endpoint<'_> {
    let sent = method;
    let method = if method == Method::Head { Method::Get } else { method };
    let Some(path) = route_path(path) else {
        return Endpoint::UNKNOWN;
    };
    if path.is_empty() {
        return match method {
            Method::Get => Endpoint { access: Access::AnyKey, ..Endpoint::UNKNOWN },
            _ => Endpoint::UNKNOWN,
        };
    }
    if let Some(known) = find_route(method, path) {
        return Endpoint {
            access: Access::Scope(known.scope),
            model_members: known.model_members,
            uncheckable_members: known.uncheckable_members,
            path_model: None,
            listing: known.listing,
            extra: known.extra,
        };
    }
    if let Some(model) = path.strip_prefix(b"v1/models/") {
        if method == Method::Get && is_segment(model) {
            return Endpoint { access: Access::Scope(Scopes::READ), path_model: Some(model), ..Endpoint::UNKNOWN };
        }
    }
    if let Some(digest) = path.strip_prefix(b"api/blobs/") {
        // Ollama routes HEAD (does the blob exist) and POST (upload) here, and no GET.
        if matches!(sent, Method::Head | Method::Post) && is_segment(digest) {
            return Endpoint { access: Access::Scope(Scopes::MANAGE), ..Endpoint::UNKNOWN };
        }
    }
    Endpoint::UNKNOWN
}

/// Why a key may not use an endpoint, for the 403 message and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeRefusal {
    pub needed: Scopes,
    /// The endpoint is not one this module knows, which is why it needs `all`.
    pub unknown_endpoint: bool,
}

impl fmt::Display for ScopeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unknown_endpoint {
            write!(f, "not a known Ollama endpoint, which needs the \"{}\" scope", self.needed)
        } else {
            write!(f, "this endpoint needs the \"{}\" scope", self.needed)
        }
    }
}

/// Whether a key holding `scopes` may use the endpoint (its model is checked separately).
pub fn allows(scopes: Scopes, endpoint: &Endpoint<'_>) -> Result<(), ScopeRefusal> {
    match endpoint.needed_scope() {
        Some(needed) if !scopes.contains(needed) => {
            Err(ScopeRefusal { needed, unknown_endpoint: endpoint.access == Access::OnlyAll })
        }
        _ => Ok(()),
    }
}

/// Whether `path` lies outside Ollama's own roots (`/`, `/api`, `/v1` and what is under them):
/// such a location, or request, likely serves Ollama under a prefix of its own, which needs
/// `ollama_auth_path_prefix`.
pub fn outside_ollama_roots(path: &[u8]) -> bool {
    let under = |root: &[u8]| path.strip_prefix(root).is_some_and(|rest| rest.is_empty() || rest[0] == b'/');
    path.starts_with(b"/") && path != b"/" && !under(b"/api") && !under(b"/v1")
}

/// A query string Go would read only in part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnreadableQuery;

/// The first value of `name` in a query string, as Go's `url.ParseQuery` reads it (pieces
/// split at `&`, `+` for a space, `%XX` escapes); `Ok(None)` if it is not there. A query Go
/// would read only in part (a `;`, a bad escape) is `Err`: what Go keeps of it is not guessed.
pub fn query_value(query: &[u8], name: &str) -> Result<Option<String>, UnreadableQuery> {
    let mut first = None;
    for piece in query.split(|&b| b == b'&').filter(|piece| !piece.is_empty()) {
        if piece.contains(&b';') {
            return Err(UnreadableQuery);
        }
        let (key, value) = match piece.iter().position(|&b| b == b'=') {
            Some(at) => (&piece[..at], &piece[at + 1..]),
            None => (piece, &b""[..]),
        };
        let (key, value) = (query_unescape(key)?, query_unescape(value)?);
        if first.is_none() && key == name.as_bytes() {
            first = Some(String::from_utf8(value).map_err(|_| UnreadableQuery)?);
        }
    }
    Ok(first)
}

fn query_unescape(text: &[u8]) -> Result<Vec<u8>, UnreadableQuery> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let [high, low, ..] = rest else { return Err(UnreadableQuery) };
                let (Some(high), Some(low)) = (hex(*high), hex(*low)) else { return Err(UnreadableQuery) };
                out.push((high * 16 + low) as u8);
                rest = &rest[2..];
            }
            byte => out.push(byte),
        }
    }
    Ok(out)
}

/// Whether a request is a browser's CORS preflight: `OPTIONS` with an `Origin` and an
/// `Access-Control-Request-Method`, and no credential (browsers never send one with a
/// preflight). It goes to Ollama unauthenticated, whose `OLLAMA_ORIGINS` answers it; any other
/// `OPTIONS` needs a key.
pub fn is_cors_preflight<'h>(method: &[u8], headers: impl IntoIterator<Item = &'h [u8]>) -> bool {
    if method != b"OPTIONS" {
        return false;
    }
    let (mut origin, mut asks_method) = (false, false);
    for name in headers {
        if name.eq_ignore_ascii_case(b"authorization") {
            return false;
        }
        origin |= name.eq_ignore_ascii_case(b"origin");
        asks_method |= name.eq_ignore_ascii_case(b"access-control-request-method");
    }
    origin && asks_method
}

/// Whether a raw request target is one the gate can judge: one with a `#` is not, since
/// nginx's URI stops at the `#` while `proxy_pass` sends the target as it came (Ollama would
/// read a path the gate never saw).
pub fn is_judgeable_target(raw_target: &[u8]) -> bool {
    !raw_target.contains(&b'#')
}

/// Takes a configured location prefix off a request path: with prefix `/ollama`, `/ollama` is
/// `/` and `/ollama/api/tags` is `/api/tags`, but `/ollamax/...` is outside (`None`, an unknown
/// path). A trailing `/` on the prefix changes nothing; an empty prefix or `/` takes nothing off.
pub fn strip_prefix<'a>(uri: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let mut prefix = prefix;
    while let Some(shorter) = prefix.strip_suffix(b"/") {
        prefix = shorter;
    }
    if prefix.is_empty() {
        return Some(uri);
    }
    let rest = uri.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some(b"/")
    } else if rest.starts_with(b"/") {
        Some(rest)
    } else {
        None
    }
}

/// Why a request's model was not let through: 400 for a body or name that is not usable, 403
/// for a model the key may not use. The message names the model as sent (it is the client's
/// own text), never anything of the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelRefusal {
    BadRequest(String),
    Forbidden(String),
}

/// Checks a model name as the request spells it against what the entry (`who`: "key" or
/// "user", for the message) may use.
pub fn check_model(text: &str, allowed: &ModelPatterns, who: &str) -> Result<(), ModelRefusal> {
    let Some(name) = ModelName::parse(text) else {
        return Err(ModelRefusal::BadRequest(format!("invalid model name {text:?}")));
    };
    if allowed.allows(&name) {
        Ok(())
    } else {
        Err(ModelRefusal::Forbidden(format!("this {who} may not use model {text:?}")))
    }
}

/// What a request body is checked for: the members naming a model, those that may not be
/// sent at all by an entry limited to some models, and what else the endpoint's body may ask
/// for (a cloud model by other means than its name).
#[derive(Clone, Copy, Debug)]
pub struct BodyRule {
    pub model_members: &'static [&'static str],
    pub uncheckable_members: &'static [&'static str],
    pub extra: BodyExtra,
}

impl BodyRule {
    pub fn of(endpoint: &Endpoint<'_>) -> BodyRule {
        BodyRule {
            model_members: endpoint.model_members,
            uncheckable_members: endpoint.uncheckable_members,
            extra: endpoint.extra,
        }
    }
}

/// Whether a name says it is a cloud model (`x:cloud`, `x:*-cloud`, in any spelling).
fn says_cloud(text: &str) -> bool {
    ModelName::parse(text).is_some_and(|name| name.is_cloud())
}

/// For an entry limited to some models: a create or copy must not make a model that runs in the
/// cloud under a name that does not say so (the allowlist judges by the name; Ollama by what is
/// stored). `remote_host` makes a cloud model whatever its name (`server/create.go`); a cloud
/// source (`from`, `source`) makes one too.
fn check_cloud_made(
    rule: BodyRule,
    sources: &[String],
    made: &[String],
    remote_host: bool,
    who: &str,
) -> Result<(), ModelRefusal> {
    let cloud_source = remote_host || sources.iter().any(|text| says_cloud(text));
    if !cloud_source || made.iter().all(|text| says_cloud(text)) {
        return Ok(());
    }
    let why = if remote_host { "\"remote_host\" makes a cloud model" } else { "the source is a cloud model" };
    let what = if rule.extra == BodyExtra::Copy { "copy" } else { "new model" };
    Err(ModelRefusal::Forbidden(format!(
        "{why}: this {who} may use only some models, and the {what}'s name must say cloud (\":cloud\" or \"-cloud\")"
    )))
}

/// Whether a body asks Ollama to run web searches on ollama.com (a web-search tool in `tools`,
/// see [`BodyExtra::WebSearchTools`]); `Err` for a body that is not one JSON object. Every
/// member Go could read as `tools`, every `type` in an entry, is looked at.
pub fn asks_web_search(body: &[u8], extra: BodyExtra) -> Result<bool, JsonError> {
    let BodyExtra::WebSearchTools { type_name, prefix } = extra else {
        return Ok(false);
    };
    let mut arrays = Vec::new();
    for_each_top_level_member(body, |member| {
        if member.kind == ValueKind::Array && go_name_matches(&member.name, "tools") {
            arrays.push(member.value);
        }
    })?;
    let mut found = false;
    for range in arrays {
        let mut wrapped = Vec::with_capacity(range.len() + 8);
        wrapped.extend_from_slice(b"{\"t\":");
        wrapped.extend_from_slice(&body[range]);
        wrapped.push(b'}');
        filter_listing(&wrapped, "t", |entry| {
            found |= entry
                .go_strings("type")
                .any(|kind| if prefix { kind.starts_with(type_name) } else { kind == type_name });
            true
        })?;
    }
    Ok(found)
}

/// Checks every top-level member of a JSON request body that Ollama would read as a model (named
/// in `members`, matched as Go's `encoding/json` matches names: unescaped, case-folded, every
/// duplicate). At least one must be there; each must be a non-empty string naming an allowed
/// model. The whole body must be valid JSON: one object, nothing but white space after it,
/// nesting no deeper than Go allows.
pub fn check_body_models(body: &[u8], rule: BodyRule, allowed: &ModelPatterns, who: &str) -> Result<(), ModelRefusal> {
    let members = rule.model_members;
    let mut found = 0usize;
    let mut first_problem: Option<ModelRefusal> = None;
    let (mut sources, mut made, mut remote_host) = (Vec::new(), Vec::new(), false);
    let source_member = match rule.extra {
        BodyExtra::Create => Some("from"),
        BodyExtra::Copy => Some("source"),
        _ => None,
    };
    let scanned = for_each_top_level_member(body, |member| {
        if first_problem.is_some() {
            return;
        }
        if rule.extra == BodyExtra::Create && go_name_matches(&member.name, "remote_host") {
            remote_host |= member.kind != ValueKind::Null && string_value(body, &member).is_none_or(|t| !t.is_empty());
            return;
        }
        if member.kind != ValueKind::Null
            && rule.uncheckable_members.iter().any(|field| go_name_matches(&member.name, field))
        {
            let message = format!("this {who} may use only some models, and \"{}\" cannot be checked", member.name);
            first_problem = Some(ModelRefusal::Forbidden(message));
            return;
        }
        if !members.iter().any(|field| go_name_matches(&member.name, field)) {
            return;
        }
        found += 1;
        let problem = match string_value(body, &member) {
            Some(text) if !text.is_empty() => {
                if source_member.is_some() {
                    let is_source = source_member.is_some_and(|field| go_name_matches(&member.name, field));
                    if is_source { &mut sources } else { &mut made }.push(text.to_string());
                }
                check_model(&text, allowed, who).err()
            }
            _ => Some(ModelRefusal::BadRequest(format!("\"{}\" must be a model name", member.name))),
        };
        first_problem = problem;
    });
    match scanned {
        Err(JsonError::NotAnObject) => return Err(ModelRefusal::BadRequest("the body must be a JSON object".into())),
        Err(error) => return Err(ModelRefusal::BadRequest(error.to_string())),
        Ok(()) => {}
    }
    if let Some(problem) = first_problem {
        return Err(problem);
    }
    if found == 0 {
        return Err(ModelRefusal::BadRequest(format!("a model is required (\"{}\")", members.join("\" or \""))));
    }
    check_cloud_made(rule, &sources, &made, remote_host, who)
}

/// Checks the model of a `multipart/form-data` body (`/v1/audio/transcriptions`, whose query
/// string named none): every part named `model` must name an allowed one, and at least one must
/// be there; a body read only in part is refused (see `form`).
pub fn check_form_models(
    body: &[u8],
    content_type: &[u8],
    allowed: &ModelPatterns,
    who: &str,
) -> Result<(), ModelRefusal> {
    let Some(boundary) = boundary(content_type) else {
        return Err(ModelRefusal::BadRequest("the body must be multipart/form-data".into()));
    };
    let values = field_values(body, &boundary, "model").map_err(|_| {
        ModelRefusal::Forbidden(format!("this {who} may use only some models, and this form's model cannot be read"))
    })?;
    if values.is_empty() {
        return Err(ModelRefusal::BadRequest("a model is required (\"model\")".into()));
    }
    for value in values {
        match std::str::from_utf8(&value) {
            Ok(text) if !text.is_empty() => check_model(text, allowed, who)?,
            _ => return Err(ModelRefusal::BadRequest("\"model\" must be a model name".into())),
        }
    }
    Ok(())
}

/// A listing answer (`/api/tags`, `/api/ps`, `/v1/models`) cut down to the models `allowed`
/// admits: an entry stays only if every name it gives (`model` and `name`, or `id`) is allowed.
/// `None` if the answer is not the JSON Ollama sends.
pub fn cut_listing(body: &[u8], listing: Listing, allowed: &ModelPatterns) -> Option<Vec<u8>> {
    let (array, fields): (&str, &[&str]) = match listing {
        Listing::Tags | Listing::Ps => ("models", &["model", "name"]),
        Listing::V1Models => ("data", &["id"]),
    };
    let cut = filter_listing(body, array, |entry| {
        let mut named = false;
        for text in fields.iter().filter_map(|field| entry.string(field)) {
            named = true;
            if !ModelName::parse(&text).is_some_and(|name| allowed.allows(&name)) {
                return false;
            }
        }
        named
    });
    cut.ok().map(|cut| cut.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::Method::{Delete, Get, Post};

    const METHODS: [Method; 5] = [Method::Get, Method::Head, Method::Post, Method::Delete, Method::Other];

    /// A known endpoint: the methods that reach it (HEAD is added to GET), the path, the scope
    /// it needs, the body members naming a model, and the listing.
    type Known = (&'static [Method], &'static str, Scopes, &'static [&'static str], Option<Listing>);

    fn known_endpoints() -> Vec<Known> {
        use Listing::*;
        let (read, infer, manage) = (Scopes::READ, Scopes::INFER, Scopes::MANAGE);
        let model: &'static [&'static str] = &["model"];
        let model_name: &'static [&'static str] = &["model", "name"];
        let none: &'static [&'static str] = &[];
        let (get, post, delete): (&'static [Method], &'static [Method], &'static [Method]) =
            (&[Get], &[Post], &[Delete]);
        vec![
            (get, "/api/tags", read, none, Some(Tags)),
            (get, "/api/ps", read, none, Some(Ps)),
            (get, "/api/version", read, none, None),
            (get, "/api/status", read, none, None),
            (get, "/api/experimental/model-recommendations", read, none, None),
            (post, "/v1/audio/transcriptions", infer, none, None),
            (post, "/api/experimental/web_search", Scopes::SEARCH, none, None),
            (post, "/api/experimental/web_fetch", Scopes::SEARCH, none, None),
            (post, "/api/show", read, model_name, None),
            (get, "/v1/models", read, none, Some(V1Models)),
            (get, "/v1/models/llama3:8b", read, none, None),
            (post, "/api/generate", infer, model, None),
            (post, "/api/chat", infer, model, None),
            (post, "/api/embed", infer, model, None),
            (post, "/api/embeddings", infer, model, None),
            (post, "/v1/chat/completions", infer, model, None),
            (post, "/v1/completions", infer, model, None),
            (post, "/v1/embeddings", infer, model, None),
            (post, "/v1/responses", infer, model, None),
            (post, "/v1/messages", infer, model, None),
            (post, "/api/pull", manage, model_name, None),
            (post, "/api/push", manage, model_name, None),
            (post, "/api/create", manage, &["model", "name", "from"], None),
            (post, "/api/copy", manage, &["source", "destination"], None),
            (delete, "/api/delete", manage, model_name, None),
            (&[Post, Method::Head], "/api/blobs/sha256:29fdb92e57cf082e", manage, none, None),
        ]
    }

    fn scope_sets() -> Vec<Scopes> {
        let (r, i, m) = (Scopes::READ, Scopes::INFER, Scopes::MANAGE);
        let s = Scopes::SEARCH;
        vec![Scopes::NONE, r, i, m, s, r | i, r | m, i | m, r | i | m, r | i | m | s, Scopes::ALL]
    }

    /// HEAD reaches what GET reaches, and what lists HEAD itself (blobs).
    fn reaches(listed: &[Method], sent: Method) -> bool {
        listed.contains(&sent) || (sent == Method::Head && listed.contains(&Method::Get))
    }

    #[test]
    fn every_scope_against_every_endpoint_and_method() {
        let mut checked = 0;
        for (listed, path, scope, members, listing) in known_endpoints() {
            for variant in [path.to_string(), format!("{path}/")] {
                for method in METHODS {
                    let endpoint = classify(method, variant.as_bytes());
                    let known = reaches(listed, method);
                    if known {
                        assert_eq!(endpoint.access, Access::Scope(scope), "{method:?} {variant}");
                        assert_eq!(endpoint.model_members, members, "{method:?} {variant}");
                        assert_eq!(endpoint.listing, listing, "{method:?} {variant}");
                    } else {
                        assert_eq!(endpoint, Endpoint::UNKNOWN, "{method:?} {variant}");
                    }
                    for scopes in scope_sets() {
                        let expected = if known { scopes.contains(scope) } else { scopes == Scopes::ALL };
                        assert_eq!(allows(scopes, &endpoint).is_ok(), expected, "{scopes} {method:?} {variant}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 26 * 2 * 5 * 11);
    }

    #[test]
    fn the_root_is_open_to_any_key_for_get_and_head_only() {
        for method in METHODS {
            let endpoint = classify(method, b"/");
            let open = matches!(method, Method::Get | Method::Head);
            assert_eq!(endpoint.access == Access::AnyKey, open, "{method:?}");
            assert_eq!(allows(Scopes::NONE, &endpoint).is_ok(), open);
            assert!(allows(Scopes::ALL, &endpoint).is_ok());
            assert_eq!(endpoint.model_members, NO_MEMBERS);
        }
        assert_eq!(classify(Method::Get, b"//"), Endpoint::UNKNOWN);
        assert_eq!(classify(Method::Get, b""), Endpoint::UNKNOWN);
    }

    #[test]
    fn unknown_paths_need_all() {
        for path in [
            "/api/me",
            "/api/signout",
            "/api/user/keys/abc",
            "/api/experimental/other",
            "/api",
            "/api/",
            "/v1",
            "/api/blobs",
            "/api/blobs/",
            "/api/blobs/a/b",
            "/api/blobs/..",
            "/api/tags/x",
            "/api/pull//",
            "//api/pull",
            "/API/TAGS",
            "/api/Pull",
            "api/pull",
            "/api/pull?x=1",
            "/api/pull\0",
            "/api/tagsx",
            "/v1/models/hf.co/a/b",
            "/v1/models/myorg/m",
            "/v1/models/.",
            "/v1/models//",
            "/v1/chat",
            "/\u{e9}",
        ] {
            for method in METHODS {
                let endpoint = classify(method, path.as_bytes());
                assert_eq!(endpoint, Endpoint::UNKNOWN, "{method:?} {path:?}");
                let every_named = Scopes::READ | Scopes::INFER | Scopes::MANAGE | Scopes::SEARCH;
                let refusal = allows(every_named, &endpoint).unwrap_err();
                assert_eq!(refusal, ScopeRefusal { needed: Scopes::ALL, unknown_endpoint: true });
                assert!(allows(Scopes::ALL, &endpoint).is_ok());
            }
        }
    }

    #[test]
    fn a_model_in_the_path() {
        let endpoint = classify(Method::Get, b"/v1/models/llama3.2:1b");
        assert_eq!(endpoint.path_model, Some(&b"llama3.2:1b"[..]));
        assert_eq!(endpoint.listing, None);
        assert_eq!(classify(Method::Head, b"/v1/models/qwen3/").path_model, Some(&b"qwen3"[..]));
        assert_eq!(classify(Method::Get, b"/v1/models").path_model, None);
        assert_eq!(classify(Method::Get, b"/v1/models/").listing, Some(Listing::V1Models));
        assert_eq!(classify(Method::Post, b"/v1/models/llama3"), Endpoint::UNKNOWN);
        assert_eq!(classify(Method::Get, b"/v1/models/a/b"), Endpoint::UNKNOWN);
    }

    #[test]
    fn refusals_name_the_missing_scope() {
        let pull = classify(Method::Post, b"/api/pull");
        let refusal = allows(Scopes::READ | Scopes::INFER, &pull).unwrap_err();
        assert_eq!(refusal.needed, Scopes::MANAGE);
        assert_eq!(refusal.to_string(), "this endpoint needs the \"manage\" scope");
        let unknown = allows(Scopes::READ, &classify(Method::Post, b"/api/me")).unwrap_err();
        assert_eq!(unknown.to_string(), "not a known Ollama endpoint, which needs the \"all\" scope");
        assert_eq!(pull.needed_scope(), Some(Scopes::MANAGE));
        assert_eq!(classify(Method::Get, b"/").needed_scope(), None);
    }

    #[test]
    fn scope_lists() {
        assert_eq!(Scopes::parse("read"), Ok(Scopes::READ));
        assert_eq!(Scopes::parse("read,infer"), Ok(Scopes::READ | Scopes::INFER));
        assert_eq!(Scopes::parse("manage,read,read"), Ok(Scopes::READ | Scopes::MANAGE));
        assert_eq!(Scopes::parse("all"), Ok(Scopes::ALL));
        assert_eq!(Scopes::parse("read,all"), Ok(Scopes::ALL));
        assert_eq!(Scopes::parse(""), Err("empty list".into()));
        assert_eq!(Scopes::parse("read,"), Err("item 2 is empty".into()));
        assert_eq!(Scopes::parse(",read"), Err("item 1 is empty".into()));
        for bad in ["Read", "admin", "read infer", "read;infer", " read", "*", "none"] {
            assert!(Scopes::parse(bad).is_err(), "{bad}");
        }
        assert!(!Scopes::parse("admin").unwrap_err().contains("admin"), "the text is not echoed");
        assert!(Scopes::ALL.contains(Scopes::READ | Scopes::INFER | Scopes::MANAGE | Scopes::SEARCH));
        assert!(!(Scopes::READ | Scopes::INFER | Scopes::MANAGE | Scopes::SEARCH).contains(Scopes::ALL));
        assert_eq!(Scopes::parse("search,read"), Ok(Scopes::READ | Scopes::SEARCH));
    }

    #[test]
    fn scopes_are_written_back_canonically() {
        assert_eq!(Scopes::MANAGE.to_string(), "manage");
        assert_eq!(Scopes::parse("manage,read").unwrap().to_string(), "read,manage");
        assert_eq!(Scopes::parse("infer,all").unwrap().to_string(), "all");
        assert_eq!((Scopes::READ | Scopes::INFER | Scopes::MANAGE).to_string(), "read,infer,manage");
        assert_eq!((Scopes::SEARCH | Scopes::INFER).to_string(), "infer,search");
        assert_eq!(Scopes::NONE.to_string(), "none");
        for scopes in scope_sets().into_iter().skip(1) {
            assert_eq!(Scopes::parse(&scopes.to_string()), Ok(scopes));
        }
        assert_eq!(format!("{:?}", Scopes::READ | Scopes::INFER), "Scopes(read,infer)");
    }

    #[test]
    fn methods_by_name() {
        assert_eq!(Method::from_name(b"GET"), Method::Get);
        assert_eq!(Method::from_name(b"HEAD"), Method::Head);
        assert_eq!(Method::from_name(b"POST"), Method::Post);
        assert_eq!(Method::from_name(b"DELETE"), Method::Delete);
        for other in [&b"get"[..], b"PUT", b"PATCH", b"OPTIONS", b"", b"POST "] {
            assert_eq!(Method::from_name(other), Method::Other);
        }
    }

    #[test]
    fn query_values_as_go_reads_them() {
        assert_eq!(query_value(b"model=gemma3", "model"), Ok(Some("gemma3".into())));
        assert_eq!(query_value(b"x=1&model=gemma3%3A1b&model=llama3", "model"), Ok(Some("gemma3:1b".into())));
        assert_eq!(query_value(b"mod%65l=a+b", "model"), Ok(Some("a b".into())));
        assert_eq!(query_value(b"Model=llama3", "model"), Ok(None));
        assert_eq!(query_value(b"", "model"), Ok(None));
        assert_eq!(query_value(b"model", "model"), Ok(Some(String::new())));
        assert_eq!(query_value(b"model=a;model=b", "model"), Err(UnreadableQuery));
        assert_eq!(query_value(b"x=%zz&model=a", "model"), Err(UnreadableQuery));
        assert_eq!(query_value(b"model=%", "model"), Err(UnreadableQuery));
    }

    #[test]
    fn form_models() {
        let allowed = patterns("whisper*");
        let content_type = b"multipart/form-data; boundary=b";
        let body =
            |model: &str| format!("--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n--b--\r\n");
        let check = |body: &str, content_type: &[u8]| check_form_models(body.as_bytes(), content_type, &allowed, "key");
        assert_eq!(check(&body("whisper:large"), content_type), Ok(()));
        assert!(matches!(check(&body("llama3"), content_type), Err(ModelRefusal::Forbidden(_))));
        assert!(matches!(check(&body(""), content_type), Err(ModelRefusal::BadRequest(_))));
        assert!(matches!(check("--b--\r\n", content_type), Err(ModelRefusal::BadRequest(_))));
        assert!(matches!(check(&body("whisper"), b"application/json"), Err(ModelRefusal::BadRequest(_))));
        assert!(matches!(check("no form", content_type), Err(ModelRefusal::Forbidden(_))));
    }

    #[test]
    fn cors_preflights() {
        let preflight = |method: &[u8], names: &[&str]| is_cors_preflight(method, names.iter().map(|n| n.as_bytes()));
        assert!(preflight(b"OPTIONS", &["Host", "Origin", "Access-Control-Request-Method"]));
        assert!(preflight(b"OPTIONS", &["origin", "ACCESS-CONTROL-REQUEST-METHOD", "Access-Control-Request-Headers"]));
        assert!(!preflight(b"OPTIONS", &["Origin"]));
        assert!(!preflight(b"OPTIONS", &["Access-Control-Request-Method"]));
        assert!(!preflight(b"OPTIONS", &["Origin", "Access-Control-Request-Method", "Authorization"]));
        assert!(!preflight(b"GET", &["Origin", "Access-Control-Request-Method"]));
        assert!(!preflight(b"options", &["Origin", "Access-Control-Request-Method"]));
    }

    #[test]
    fn targets_with_a_fragment_are_not_judged() {
        assert!(is_judgeable_target(b"/v1/models/gemma3"));
        assert!(is_judgeable_target(b"/api/tags?x=%23"));
        for target in [&b"/v1/models/gemma3#/../llama3"[..], b"/api/tags#", b"/#", b"/api/chat?x=#y"] {
            assert!(!is_judgeable_target(target));
        }
    }

    #[test]
    fn prefixes() {
        let strip = |uri: &'static str, prefix: &str| {
            strip_prefix(uri.as_bytes(), prefix.as_bytes()).map(|rest| std::str::from_utf8(rest).unwrap().to_string())
        };
        for prefix in ["/ollama", "/ollama/", "/ollama//"] {
            assert_eq!(strip("/ollama", prefix).as_deref(), Some("/"));
            assert_eq!(strip("/ollama/", prefix).as_deref(), Some("/"));
            assert_eq!(strip("/ollama/api/tags", prefix).as_deref(), Some("/api/tags"));
            assert_eq!(strip("/ollamax/api/tags", prefix), None);
            assert_eq!(strip("/api/tags", prefix), None);
            assert_eq!(strip("/", prefix), None);
            assert_eq!(strip("", prefix), None);
        }
        assert_eq!(strip("/a/b/api/ps", "/a/b").as_deref(), Some("/api/ps"));
        assert_eq!(strip("/a/bc", "/a/b"), None);
        for prefix in ["", "/", "//"] {
            assert_eq!(strip("/api/tags", prefix).as_deref(), Some("/api/tags"));
        }
        assert_eq!(strip("/ollama/api/tags", "ollama"), None, "a prefix is compared as given");
        let inside = strip_prefix(b"/ollama/api/tags/", b"/ollama/").unwrap();
        assert_eq!(classify(Method::Get, inside).listing, Some(Listing::Tags));
    }

    #[test]
    fn arbitrary_paths_never_panic() {
        let pieces = ["/", "api", "v1", "models", "blobs", "tags", ".", "..", "", "\0", "\u{e9}", "x"];
        let mut seed = 7u32;
        for _ in 0..20_000 {
            let mut path = String::new();
            for _ in 0..(seed % 9) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                path.push_str(pieces[(seed >> 16) as usize % pieces.len()]);
            }
            for method in METHODS {
                let endpoint = classify(method, path.as_bytes());
                let _ = allows(Scopes::READ, &endpoint);
                let _ = strip_prefix(path.as_bytes(), b"/api");
            }
        }
    }

    fn patterns(text: &str) -> ModelPatterns {
        ModelPatterns::parse(text).unwrap()
    }

    fn rule(members: &'static [&'static str]) -> BodyRule {
        BodyRule { model_members: members, uncheckable_members: NO_MEMBERS, extra: BodyExtra::None }
    }

    fn body_check(body: &str, members: &'static [&'static str], allowed: &str) -> Result<(), ModelRefusal> {
        check_body_models(body.as_bytes(), rule(members), &patterns(allowed), "key")
    }

    #[test]
    fn create_from_blobs_is_refused_to_a_limited_key() {
        let create = classify(Method::Post, b"/api/create");
        let rule = BodyRule::of(&create);
        let check = |body: &str| check_body_models(body.as_bytes(), rule, &patterns("gemma3"), "key");
        assert_eq!(check(r#"{"model":"gemma3:mine","from":"gemma3"}"#), Ok(()));
        for body in [
            r#"{"model":"gemma3:mine","files":{"m.gguf":"sha256:abc"}}"#,
            r#"{"model":"gemma3:x","ADAPTERS":{}}"#,
            r#"{"model":"gemma3:x","draft_files":{"d.gguf":"sha256:abc"}}"#,
            r#"{"model":"gemma3:x","Draft_Files":{}}"#,
        ] {
            assert!(matches!(check(body), Err(ModelRefusal::Forbidden(_))), "{body}");
        }
        assert_eq!(check(r#"{"model":"gemma3:mine","files":null}"#), Ok(()));
    }

    #[test]
    fn cloud_models_are_not_made_under_local_names() {
        let allowed = patterns("gpt-oss*,gpt-oss:*-cloud,gpt-oss:cloud");
        let create = BodyRule::of(&classify(Method::Post, b"/api/create"));
        let copy = BodyRule::of(&classify(Method::Post, b"/api/copy"));
        let check = |rule, body: &str| check_body_models(body.as_bytes(), rule, &allowed, "key");
        for body in [
            r#"{"model":"gpt-oss:mine","from":"gpt-oss:120b","remote_host":"https://ollama.com"}"#,
            r#"{"model":"gpt-oss:mine","from":"gpt-oss:120b","REMOTE_HOST":"https://ollama.com"}"#,
            r#"{"model":"gpt-oss:mine","from":"gpt-oss:120b","remote_host":7}"#,
            r#"{"model":"gpt-oss:mine","from":"gpt-oss:120b-cloud"}"#,
            r#"{"model":"gpt-oss:mine","from":"gpt-oss:latest:cloud"}"#,
            r#"{"model":"gpt-oss:mine-cloud","name":"gpt-oss:mine","from":"gpt-oss:cloud"}"#,
        ] {
            assert!(matches!(check(create, body), Err(ModelRefusal::Forbidden(_))), "{body}");
        }
        for body in [
            r#"{"model":"gpt-oss:mine","from":"gpt-oss:120b"}"#,
            r#"{"model":"gpt-oss:mine","from":"gpt-oss:120b","remote_host":""}"#,
            r#"{"model":"gpt-oss:mine","from":"gpt-oss:120b","remote_host":null}"#,
            r#"{"model":"gpt-oss:mine-cloud","from":"gpt-oss:120b","remote_host":"https://ollama.com"}"#,
            r#"{"model":"gpt-oss:cloud","from":"gpt-oss:120b-cloud"}"#,
        ] {
            assert_eq!(check(create, body), Ok(()), "{body}");
        }
        let refused = check(copy, r#"{"source":"gpt-oss:120b-cloud","destination":"gpt-oss:mine"}"#);
        assert!(matches!(refused, Err(ModelRefusal::Forbidden(ref m)) if m.contains("copy")), "{refused:?}");
        assert!(check(copy, r#"{"source":"gpt-oss:cloud","Destination":"gpt-oss:x"}"#).is_err());
        assert_eq!(check(copy, r#"{"source":"gpt-oss:120b-cloud","destination":"gpt-oss:mine-cloud"}"#), Ok(()));
        assert_eq!(check(copy, r#"{"source":"gpt-oss:120b","destination":"gpt-oss:mine"}"#), Ok(()));
        // remote_host means nothing to copy.
        assert_eq!(check(copy, r#"{"source":"gpt-oss","destination":"gpt-oss:b","remote_host":"x"}"#), Ok(()));
    }

    #[test]
    fn web_search_tools_are_found_as_go_reads_them() {
        let responses = BodyExtra::RESPONSES_SEARCH;
        let messages = BodyExtra::MESSAGES_SEARCH;
        let asks = |body: &str, extra| asks_web_search(body.as_bytes(), extra);
        assert_eq!(asks(r#"{"model":"m","tools":[{"type":"web_search"}]}"#, responses), Ok(true));
        assert_eq!(asks(r#"{"model":"m","TOOLS":[{"type":"function"},{"Type":"web_search"}]}"#, responses), Ok(true));
        assert_eq!(asks(r#"{"tools":[{"type":"web_search","type":"function"}]}"#, responses), Ok(true));
        assert_eq!(asks(r#"{"tools":[{"type":"web_search_preview"}]}"#, responses), Ok(false));
        assert_eq!(asks(r#"{"tools":[{"type":"function","name":"web_search"}]}"#, responses), Ok(false));
        assert_eq!(asks(r#"{"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#, messages), Ok(true));
        assert_eq!(asks(r#"{"tools":[{"type":"web\u005fsearch_2025"}]}"#, messages), Ok(true));
        assert_eq!(asks(r#"{"tools":[{"type":"custom","name":"web_search"}]}"#, messages), Ok(false));
        assert_eq!(asks(r#"{"model":"m","messages":[]}"#, messages), Ok(false));
        assert_eq!(asks(r#"{"tools":null}"#, messages), Ok(false));
        assert_eq!(asks(r#"{"model":"m","tools":[{"type":"web_search"}]}"#, BodyExtra::None), Ok(false));
        assert!(asks(r#"{"tools":[{"type":"web_search"}]"#, responses).is_err());
        assert!(asks("[]", responses).is_err());
    }

    #[test]
    fn body_models_are_found_as_go_finds_them() {
        let chat = &["model"][..];
        assert_eq!(body_check(r#"{"model":"gemma3","messages":[]}"#, chat, "gemma3"), Ok(()));
        assert_eq!(body_check(r#"{"model":"registry.ollama.ai/library/GEMMA3:latest"}"#, chat, "gemma3"), Ok(()));
        for smuggled in [
            r#"{"model":"gemma3","model":"llama3"}"#,
            r#"{"model":"llama3","model":"gemma3"}"#,
            r#"{"model":"gemma3","MODEL":"llama3"}"#,
            r#"{"model":"gemma3","mod\u0065l":"llama3"}"#,
            r#"{"model":"gemma3","Model":"llama3"}"#,
        ] {
            assert!(matches!(body_check(smuggled, chat, "gemma3"), Err(ModelRefusal::Forbidden(_))), "{smuggled}");
        }
        let copy = &["source", "destination"][..];
        assert!(matches!(
            body_check(r#"{"source":"gemma3","\u017Fource":"llama3","destination":"gemma3:copy"}"#, copy, "gemma3"),
            Err(ModelRefusal::Forbidden(_))
        ));
        assert_eq!(body_check(r#"{"source":"gemma3","destination":"gemma3:copy"}"#, copy, "gemma3"), Ok(()));
        // Nested members are not Ollama's model.
        assert_eq!(body_check(r#"{"model":"gemma3","options":{"model":"llama3"}}"#, chat, "gemma3"), Ok(()));
    }

    #[test]
    fn unusable_bodies_are_bad_requests() {
        let chat = &["model"][..];
        for body in [
            r#"{}"#,
            r#"{"model":null}"#,
            r#"{"model":""}"#,
            r#"{"model":7}"#,
            r#"{"model":["gemma3"]}"#,
            r#"{"model":{"name":"gemma3"}}"#,
            r#"{"model":"gemma3"} x"#,
            r#"{"model":"gemma3"}{}"#,
            r#"["gemma3"]"#,
            "",
            "nul",
            r#"{"model":"gemma3""#,
            r#"{"model":"bad name!"}"#,
        ] {
            assert!(matches!(body_check(body, chat, "gemma3"), Err(ModelRefusal::BadRequest(_))), "{body:?}");
        }
        assert!(matches!(
            check_body_models(b"{\"model\":\"gemma3\xff\"}", rule(chat), &patterns("gemma3"), "key"),
            Err(ModelRefusal::BadRequest(_))
        ));
        let deep = format!("{{\"model\":\"gemma3\",\"x\":{}{}}}", "[".repeat(10_001), "]".repeat(10_001));
        assert!(matches!(body_check(&deep, chat, "gemma3"), Err(ModelRefusal::BadRequest(_))));
        let deep_ok = format!("{{\"model\":\"gemma3\",\"x\":{}{}}}", "[".repeat(9_998), "]".repeat(9_998));
        assert_eq!(body_check(&deep_ok, chat, "gemma3"), Ok(()));
    }

    #[test]
    fn paths_outside_ollamas_roots_are_told_apart() {
        for inside in [&b"/"[..], b"/api", b"/api/", b"/api/tags", b"/v1", b"/v1/models", b"@named", b""] {
            assert!(!outside_ollama_roots(inside), "{}", String::from_utf8_lossy(inside));
        }
        for outside in [&b"/ollama/"[..], b"/ollama", b"/apix", b"/v10/chat", b"/ollama/api/tags", b"/metrics"] {
            assert!(outside_ollama_roots(outside), "{}", String::from_utf8_lossy(outside));
        }
    }

    #[test]
    fn listings_keep_only_allowed_models() {
        let tags = br#"{"models":[{"name":"gemma3:latest","model":"gemma3:latest"},{"name":"llama3:8b","model":"llama3:8b"},{"name":"qwen3:4b","model":"llama3:8b"}]}"#;
        let cut = cut_listing(tags, Listing::Tags, &patterns("gemma3,qwen*")).unwrap();
        assert_eq!(cut, br#"{"models":[{"name":"gemma3:latest","model":"gemma3:latest"}]}"#);
        let v1 = br#"{"object":"list","data":[{"id":"llama3"},{"id":"gemma3:1b"}]}"#;
        assert_eq!(
            cut_listing(v1, Listing::V1Models, &patterns("gemma3")).unwrap(),
            br#"{"object":"list","data":[{"id":"gemma3:1b"}]}"#
        );
        assert_eq!(cut_listing(b"not json", Listing::Tags, &patterns("gemma3")), None);
    }

    /// A listing of `count` models, as Ollama's /api/tags writes it.
    fn tags_listing(count: usize) -> Vec<u8> {
        let entries: Vec<String> = (0..count)
            .map(|i| format!(r#"{{"name":"model{i}:latest","model":"model{i}:latest","modified_at":"2025-01-01T00:00:00Z","size":815319791,"digest":"e0a42594d802e0a42594d802","details":{{"format":"gguf","family":"gemma3","parameter_size":"1B"}}}}"#))
            .collect();
        format!(r#"{{"models":[{}]}}"#, entries.join(",")).into_bytes()
    }

    /// Best of five, in milliseconds, printed for `make bench` to read.
    fn measure(name: &str, mut run: impl FnMut()) {
        let best = (0..5)
            .map(|_| {
                let start = std::time::Instant::now();
                run();
                start.elapsed().as_secs_f64() * 1000.0
            })
            .fold(f64::INFINITY, f64::min);
        println!("MEASURE {name} {best:.3}");
    }

    #[test]
    #[ignore = "a measurement, run by make bench"]
    fn measure_policy_costs() {
        let image = "QUJD".repeat(5_000_000);
        let body = format!(r#"{{"model":"gemma3","prompt":"what is this?","images":["{image}"],"stream":false}}"#);
        assert!(body.len() > 20_000_000);
        let allowed = patterns("gemma3");
        measure("20_MB_image_body_model_check", || {
            assert_eq!(check_body_models(body.as_bytes(), rule(&["model"]), &allowed, "key"), Ok(()))
        });
        let listing = tags_listing(200);
        let some = patterns("model1*");
        measure("api_tags_with_200_models_cut_down", || assert!(cut_listing(&listing, Listing::Tags, &some).is_some()));
    }
}
