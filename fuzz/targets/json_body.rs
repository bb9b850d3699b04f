//! Request and listing bodies: validation, top-level members, and the listing filter must agree
//! with one another and never panic (the checks are `json::check_consistency` and
//! `listing::check_consistency`, which the unit tests run too); nor may the readers built on them: web-search tools, answer-length caps, and
//! a query string's model, a form's; nor the zstd decoder of request bodies.
use ngx_ollama_auth::policy::{asks_web_search, query_value, BodyExtra};

fn main() {
    afl::fuzz!(|body: &[u8]| {
        ngx_ollama_auth::json::check_consistency(body);
        ngx_ollama_auth::listing::check_consistency(body);
        let _ = asks_web_search(body, BodyExtra::RESPONSES_SEARCH);
        let _ = asks_web_search(body, BodyExtra::MESSAGES_SEARCH);
        let _ = ngx_ollama_auth::estimate::answer_cap(body);
        let _ = query_value(body, "model");
        let _ = ngx_ollama_auth::form::field_values(body, b"b", "model");
        let _ = ngx_ollama_auth::form::boundary(body);
        let _ = ngx_ollama_auth::compressed::decode_zstd(body, 1 << 20);
    });
}
