//! The one table of Ollama's endpoints: per route (method and path, as Ollama's router,
//! `server/routes.go`, lists them), what it needs for policy (scope, the body members naming a
//! model, a listing to cut down, extras in the body), what its answer is for usage (the API
//! shape of its counts), and for rewriting and estimating its body (whether the gate may add
//! `include_usage`, what the caps limit, what its answer does). `policy`, `usage`, `caps` and
//! `estimate` read it; none matches paths of its own.

use crate::scopes::Scopes;

/// The request methods that matter here; HEAD is treated as GET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Delete,
    Other,
}

impl Method {
    /// From the method as sent: names are case-sensitive in HTTP.
    pub fn from_name(name: &[u8]) -> Method {
        match name {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// What a key must hold to reach an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `GET /`, Ollama's "is it running": any valid key.
    AnyKey,
    /// A known endpoint: one scope (or `all`).
    Scope(Scopes),
    /// Not an endpoint listed here: only `all`.
    OnlyAll,
}

/// A response listing models, to be cut down to those a key may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// `GET /api/tags`
    Tags,
    /// `GET /api/ps`
    Ps,
    /// `GET /v1/models`
    V1Models,
}

/// What a body may carry besides a model name that the gate must look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyExtra {
    None,
    /// `/api/create`: `remote_host` makes a cloud model, and `from` may name one.
    Create,
    /// `/api/copy`: `source` may name a cloud model.
    Copy,
    /// A `tools` entry whose `type` is this, or starts with it (`prefix`), makes Ollama run
    /// ollama.com web searches (`openai/responses.go`, `anthropic/anthropic.go`): it needs
    /// the `search` scope.
    WebSearchTools {
        type_name: &'static str,
        prefix: bool,
    },
    /// `/v1/audio/transcriptions`: the model is a form value (`FormValue("model")`), not JSON.
    FormModel,
}

impl BodyExtra {
    /// The web-search tools of `/v1/responses` (`type` is `web_search`) and `/v1/messages`
    /// (`type` starts with `web_search`, as `web_search_20250305`).
    pub const RESPONSES_SEARCH: BodyExtra = BodyExtra::WebSearchTools { type_name: "web_search", prefix: false };
    pub const MESSAGES_SEARCH: BodyExtra = BodyExtra::WebSearchTools { type_name: "web_search", prefix: true };
}

/// The endpoints whose bodies carry what a cap limits, and which members Ollama reads there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapTarget {
    /// `/api/generate` and `/api/chat` (`generates`), `/api/embed` and `/api/embeddings`:
    /// `options.num_ctx`, `options.num_predict` when it generates, `keep_alive`.
    Native { generates: bool },
    /// `/v1/chat/completions`, `/v1/completions`: a `*int` `max_tokens` (Ollama ignores
    /// `max_completion_tokens`); `null` or missing is no limit.
    OpenAiMaxTokens,
    /// `/v1/responses`: a `*int` `max_output_tokens`.
    Responses,
    /// `/v1/messages`: an `int` `max_tokens`, which Ollama requires to be positive.
    Messages,
}

/// What kind of answer an endpoint's requests get, for the gate's estimate of their tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Generates,
    Embeds,
    Transcribes,
}

/// Which API shaped an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `/api/generate`, `/api/chat`, `/api/embed`, `/api/embeddings`.
    Native,
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`.
    OpenAi,
    /// `/v1/messages`.
    Anthropic,
}

pub(crate) const NO_MEMBERS: &[&str] = &[];
const MODEL: &[&str] = &["model"];
const MODEL_OR_NAME: &[&str] = &["model", "name"];
const CREATE: &[&str] = &["model", "name", "from"];
const COPY: &[&str] = &["source", "destination"];

/// One fixed path and method of Ollama's router, and all the gate knows of it.
pub struct Route {
    pub method: Method,
    /// Without the leading `/`.
    pub path: &'static [u8],
    /// The scope a key must hold.
    pub scope: Scopes,
    /// The JSON body members that name a model.
    pub model_members: &'static [&'static str],
    /// Body members that name what a model is made of other than by a model name.
    pub uncheckable_members: &'static [&'static str],
    /// The answer lists models, to be cut down.
    pub listing: Option<Listing>,
    pub extra: BodyExtra,
    /// The API whose shape the answer's usage counts take; `None`: the answer reports none.
    pub answer: Option<Dialect>,
    /// Ollama reads `stream_options.include_usage` here, so the gate may add it.
    pub include_usage: bool,
    /// What the caps limit in its body; `None`: nothing.
    pub cap_target: Option<CapTarget>,
    /// What its answer does, for the estimate; `None`: it carries no tokens.
    pub work: Option<Work>,
}

const fn route(method: Method, path: &'static [u8], scope: Scopes, model_members: &'static [&'static str]) -> Route {
    Route {
        method,
        path,
        scope,
        model_members,
        uncheckable_members: NO_MEMBERS,
        listing: None,
        extra: BodyExtra::None,
        answer: None,
        include_usage: false,
        cap_target: None,
        work: None,
    }
}

const fn listing(path: &'static [u8], listing: Listing) -> Route {
    Route {
        method: Method::Get,
        path,
        scope: Scopes::READ,
        model_members: NO_MEMBERS,
        uncheckable_members: NO_MEMBERS,
        listing: Some(listing),
        extra: BodyExtra::None,
        answer: None,
        include_usage: false,
        cap_target: None,
        work: None,
    }
}

/// An inference route whose answer reports usage in `dialect`'s shape, its body capped as
/// `cap_target` says.
const fn counted(path: &'static [u8], dialect: Dialect, work: Work, cap_target: CapTarget) -> Route {
    Route {
        answer: Some(dialect),
        work: Some(work),
        cap_target: Some(cap_target),
        ..route(Post, path, Scopes::INFER, MODEL)
    }
}

const GENERATES: CapTarget = CapTarget::Native { generates: true };
const EMBEDS: CapTarget = CapTarget::Native { generates: false };

use Method::{Delete, Get, Post};

pub const ROUTES: &[Route] = &[
    listing(b"api/tags", Listing::Tags),
    listing(b"api/ps", Listing::Ps),
    listing(b"v1/models", Listing::V1Models),
    route(Get, b"api/version", Scopes::READ, NO_MEMBERS),
    // What `ollama launch` asks for.
    route(Get, b"api/status", Scopes::READ, NO_MEMBERS),
    route(Get, b"api/experimental/model-recommendations", Scopes::READ, NO_MEMBERS),
    route(Post, b"api/show", Scopes::READ, MODEL_OR_NAME),
    counted(b"api/generate", Dialect::Native, Work::Generates, GENERATES),
    counted(b"api/chat", Dialect::Native, Work::Generates, GENERATES),
    counted(b"api/embed", Dialect::Native, Work::Embeds, EMBEDS),
    counted(b"api/embeddings", Dialect::Native, Work::Embeds, EMBEDS),
    Route {
        include_usage: true,
        ..counted(b"v1/chat/completions", Dialect::OpenAi, Work::Generates, CapTarget::OpenAiMaxTokens)
    },
    Route {
        include_usage: true,
        ..counted(b"v1/completions", Dialect::OpenAi, Work::Generates, CapTarget::OpenAiMaxTokens)
    },
    Route { cap_target: None, ..counted(b"v1/embeddings", Dialect::OpenAi, Work::Embeds, EMBEDS) },
    Route {
        extra: BodyExtra::RESPONSES_SEARCH,
        ..counted(b"v1/responses", Dialect::OpenAi, Work::Generates, CapTarget::Responses)
    },
    Route {
        extra: BodyExtra::MESSAGES_SEARCH,
        ..counted(b"v1/messages", Dialect::Anthropic, Work::Generates, CapTarget::Messages)
    },
    Route {
        extra: BodyExtra::FormModel,
        work: Some(Work::Transcribes),
        ..route(Post, b"v1/audio/transcriptions", Scopes::INFER, NO_MEMBERS)
    },
    // Signed searches on ollama.com, billed to the server's account.
    route(Post, b"api/experimental/web_search", Scopes::SEARCH, NO_MEMBERS),
    route(Post, b"api/experimental/web_fetch", Scopes::SEARCH, NO_MEMBERS),
    route(Post, b"api/pull", Scopes::MANAGE, MODEL_OR_NAME),
    route(Post, b"api/push", Scopes::MANAGE, MODEL_OR_NAME),
    // `files`, `adapters` and `draft_files` name blobs by digest: a model made of any stored
    // weights.
    Route {
        uncheckable_members: &["files", "adapters", "draft_files"],
        extra: BodyExtra::Create,
        ..route(Post, b"api/create", Scopes::MANAGE, CREATE)
    },
    Route { extra: BodyExtra::Copy, ..route(Post, b"api/copy", Scopes::MANAGE, COPY) },
    route(Delete, b"api/delete", Scopes::MANAGE, MODEL_OR_NAME),
];

/// The path without its leading `/` and without one trailing `/` (`/api/pull/` is `/api/pull`,
/// as Ollama's router redirects it); `None` when it does not start with `/`.
pub(crate) fn route_path(path: &[u8]) -> Option<&[u8]> {
    let inner = path.strip_prefix(b"/")?;
    match inner.strip_suffix(b"/") {
        Some(trimmed) if !trimmed.is_empty() => Some(trimmed),
        _ => Some(inner),
    }
}

/// A path parameter: one whole, ordinary segment, as the router's `:param` takes it.
pub(crate) fn is_segment(text: &[u8]) -> bool {
    !text.is_empty() && !text.contains(&b'/') && text != b"." && text != b".."
}

/// The fixed route a request takes: its method (the caller passes HEAD as GET where Ollama
/// answers it so) and its path as [`route_path`] gives it.
pub(crate) fn find_route(method: Method, path: &[u8]) -> Option<&'static Route> {
    ROUTES.iter().find(|known| known.path == path && known.method == method)
}

/// The route of a request path exactly as written (no trailing `/` taken off), any method: for
/// what is read of answers, which only the routes' own paths have.
fn route_of_exact_path(path: &str) -> Option<&'static Route> {
    let path = path.strip_prefix('/')?.as_bytes();
    ROUTES.iter().find(|known| known.path == path)
}

/// The API shaping the usage of the answer to `path` (no query string); `None` for an
/// endpoint whose answer reports none.
pub fn answer_dialect(path: &str) -> Option<Dialect> {
    route_of_exact_path(path)?.answer
}

/// What the caps limit in a request's body: its method and path (decoded, any prefix taken
/// off, one trailing `/` allowed, as the router takes it).
pub fn cap_target(method: Method, path: &[u8]) -> Option<CapTarget> {
    find_route(method, route_path(path)?)?.cap_target
}

/// What the answer to `path` (exactly as written, no query string) does, for the estimate.
pub fn work_of_path(path: &str) -> Option<Work> {
    route_of_exact_path(path)?.work
}

/// Whether a request to `path` (any method; one trailing `/` allowed) changes a server's
/// models: the `manage` routes and blob uploads. Across several servers, such a request goes to
/// the one the client names.
pub fn changes_models(path: &[u8]) -> bool {
    let manages = |route: &[u8]| ROUTES.iter().any(|known| known.path == route && known.scope == Scopes::MANAGE);
    path.starts_with(b"/api/blobs/") || route_path(path).is_some_and(manages)
}

/// The paths where Ollama reads `Content-Encoding: zstd`: its `/v1` middleware decodes it, and
/// that sits on exactly its OpenAI- and Anthropic-shaped routes.
pub fn accepts_zstd(path: &str) -> bool {
    route_of_exact_path(path).is_some_and(|known| matches!(known.answer, Some(Dialect::OpenAi | Dialect::Anthropic)))
}

/// Whether Ollama reads `stream_options.include_usage` on this path.
pub fn accepts_stream_options(path: &str) -> bool {
    route_of_exact_path(path).is_some_and(|known| known.include_usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_targets() {
        assert_eq!(cap_target(Method::Post, b"/api/chat"), Some(CapTarget::Native { generates: true }));
        assert_eq!(cap_target(Method::Post, b"/api/embeddings/"), Some(CapTarget::Native { generates: false }));
        assert_eq!(cap_target(Method::Post, b"/v1/responses"), Some(CapTarget::Responses));
        assert_eq!(cap_target(Method::Get, b"/api/chat"), None);
        assert_eq!(cap_target(Method::Post, b"/v1/embeddings"), None);
    }

    #[test]
    fn what_changes_models_goes_by_path_alone() {
        for path in ["/api/pull", "/api/push/", "/api/create", "/api/copy", "/api/delete", "/api/blobs/sha256:ab"] {
            assert!(changes_models(path.as_bytes()), "{path}");
        }
        for path in ["/api/chat", "/api/tags", "/api/pullx", "api/pull", "/api/blobs", "/"] {
            assert!(!changes_models(path.as_bytes()), "{path}");
        }
    }

    #[test]
    fn answers_are_known_by_their_exact_path() {
        assert_eq!(answer_dialect("/api/chat"), Some(Dialect::Native));
        assert_eq!(answer_dialect("/v1/embeddings"), Some(Dialect::OpenAi));
        assert_eq!(answer_dialect("/v1/messages"), Some(Dialect::Anthropic));
        for path in ["/api/chat/", "api/chat", "//api/chat", "/api/tags", "/api/show", "/v1/models", ""] {
            assert_eq!(answer_dialect(path), None, "{path}");
        }
        let rewritten: Vec<_> = ROUTES.iter().filter(|route| route.include_usage).map(|route| route.path).collect();
        assert_eq!(rewritten, [&b"v1/chat/completions"[..], b"v1/completions"]);
        assert!(accepts_stream_options("/v1/completions") && !accepts_stream_options("/v1/completions/"));
        let zstd: Vec<_> =
            ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"]
                .into_iter()
                .filter(|path| accepts_zstd(path))
                .collect();
        assert_eq!(zstd.len(), 5);
        for path in ["/api/chat", "/v1/models", "/v1/audio/transcriptions", "/v1/chat/completions/", "/v1"] {
            assert!(!accepts_zstd(path), "{path}");
        }
        // Every route that counts usage is an inference route.
        assert!(ROUTES.iter().filter(|route| route.answer.is_some()).all(|route| route.scope == Scopes::INFER));
    }
}
