//! The gate's own error answers, in the shape the clients of each API read:
//! - Ollama's native API: `{"error":"<kind>: <message>"}`;
//! - the OpenAI-compatible `/v1` API: `{"error":{"message":...,"type":...,"param":null,"code":...}}`,
//!   the shape Ollama itself answers there and the OpenAI SDKs put in their exceptions;
//! - the Anthropic-compatible `/v1/messages`: `{"type":"error","error":{"type":...,"message":...}}`.
//!
//! The message is the same text in every shape.

use crate::json::push_string_content;

/// Which API's error shape an answer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorShape {
    Ollama,
    OpenAi,
    Anthropic,
}

impl ErrorShape {
    /// The shape for the endpoint at `path` (nginx's normalized URI, after the location's
    /// `ollama_auth_path_prefix`).
    pub fn for_path(path: &[u8]) -> ErrorShape {
        let under = |prefix: &[u8]| {
            path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest[0] == b'/' || rest[0] == b'?')
        };
        if under(b"/v1/messages") {
            ErrorShape::Anthropic
        } else if under(b"/v1") {
            ErrorShape::OpenAi
        } else {
            ErrorShape::Ollama
        }
    }
}

/// The error `type` and `code` an OpenAI client sees for `status`.
fn openai_type_and_code(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "bad_request"),
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("permission_error", "forbidden"),
        404 => ("not_found_error", "not_found"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 => ("server_error", "service_unavailable"),
        502 | 504 => ("server_error", "upstream_unavailable"),
        _ => ("api_error", "error"),
    }
}

/// The error `type` Anthropic's API gives for `status`.
fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The body of an error answer with `status`: `<kind>: <message>` in `shape`, and a newline.
pub fn error_body(shape: ErrorShape, status: u16, kind: &str, message: &str) -> Vec<u8> {
    let mut text = String::with_capacity(kind.len() + message.len() + 2);
    text.push_str(kind);
    text.push_str(": ");
    text.push_str(message);
    let mut body = Vec::with_capacity(text.len() + 96);
    match shape {
        ErrorShape::Ollama => {
            body.extend_from_slice(b"{\"error\":\"");
            push_string_content(&mut body, &text);
            body.extend_from_slice(b"\"}");
        }
        ErrorShape::OpenAi => {
            let (kind, code) = openai_type_and_code(status);
            body.extend_from_slice(b"{\"error\":{\"message\":\"");
            push_string_content(&mut body, &text);
            body.extend_from_slice(format!("\",\"type\":\"{kind}\",\"param\":null,\"code\":\"{code}\"}}}}").as_bytes());
        }
        ErrorShape::Anthropic => {
            body.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":\"");
            body.extend_from_slice(anthropic_type(status).as_bytes());
            body.extend_from_slice(b"\",\"message\":\"");
            push_string_content(&mut body, &text);
            body.extend_from_slice(b"\"}}");
        }
    }
    body.push(b'\n');
    body
}

/// What a 401 says a client needs, by the credentials the location takes.
pub fn unauthorized_message(bearer: bool, basic: bool) -> &'static str {
    match (bearer, basic) {
        (true, false) => "a valid API key is required (Authorization: Bearer <key>)",
        (false, true) => "a valid user name and password are required",
        _ => "a valid API key (Authorization: Bearer <key>) or user name and password are required",
    }
}

/// The `Retry-After` an error answer of nginx's own carries when nothing says how long: a
/// `limit_req` 429 frees within a second at the usual rates; an upstream that is down is asked
/// again after a few.
pub fn default_retry_after(status: u16) -> Option<&'static str> {
    match status {
        429 => Some("1"),
        502..=504 => Some("5"),
        _ => None,
    }
}

/// What nginx says of a response, for [`answers_as_json`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NginxResponse {
    pub status: u16,
    /// nginx's `r->err_status`: the error its special-response path is answering, or 0.
    pub err_status: u16,
    /// nginx's `r->error_page`: `error_page` directives were in scope when the error came.
    pub error_pages_in_scope: bool,
    /// The request went through an internal redirect (an `error_page`, `try_files`, ...).
    pub redirected: bool,
    /// The location answering has an `error_page` for this status.
    pub location_has_page: bool,
}

/// Whether `ollama_auth_json_errors` answers this response in JSON: it is nginx's own error
/// page (its special response, 400 to 599), not a 401 (whose challenges are another module's),
/// and no `error_page` of the configuration's own is, or may be, answering it.
pub fn answers_as_json(response: NginxResponse) -> bool {
    let nginx_error = response.err_status != 0 && response.status == response.err_status;
    let own_page = response.location_has_page || (response.error_pages_in_scope && response.redirected);
    nginx_error && (400..600).contains(&response.status) && response.status != 401 && !own_page
}

/// The kind word and message for an error nginx itself answers in front of Ollama (an
/// `error_page` location of this module's), by status.
pub fn nginx_error_text(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("bad request", "the request could not be read"),
        403 => ("forbidden", "access to this endpoint is denied"),
        404 => ("not found", "no such endpoint"),
        405 => ("method not allowed", "this endpoint does not take that method"),
        408 => ("request timeout", "the request was not received in time"),
        413 => ("request entity too large", "the request body is larger than this server accepts"),
        414 => ("request uri too large", "the request target is too long"),
        429 => ("rate limited", "too many requests; retry later"),
        494 | 431 => ("request header too large", "the request headers are too large"),
        500 => ("internal server error", "the gate failed to handle the request"),
        502 => ("bad gateway", "Ollama is not answering"),
        503 => ("service unavailable", "Ollama cannot take the request now; retry later"),
        504 => ("gateway timeout", "Ollama did not answer in time"),
        _ => ("error", "the request failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_gets_its_own_shape() {
        assert_eq!(ErrorShape::for_path(b"/api/chat"), ErrorShape::Ollama);
        assert_eq!(ErrorShape::for_path(b"/v1/chat/completions"), ErrorShape::OpenAi);
        assert_eq!(ErrorShape::for_path(b"/v1/models/gemma3"), ErrorShape::OpenAi);
        assert_eq!(ErrorShape::for_path(b"/v1"), ErrorShape::OpenAi);
        assert_eq!(ErrorShape::for_path(b"/v1/messages"), ErrorShape::Anthropic);
        assert_eq!(ErrorShape::for_path(b"/v1/messages/count_tokens"), ErrorShape::Anthropic);
        assert_eq!(ErrorShape::for_path(b"/v1/messagesx"), ErrorShape::OpenAi);
        assert_eq!(ErrorShape::for_path(b"/v10/chat"), ErrorShape::Ollama);
        assert_eq!(ErrorShape::for_path(b"/"), ErrorShape::Ollama);
    }

    #[test]
    fn the_message_is_where_each_client_reads_it() {
        let message = "this key may not use model \"a\\b\u{1}\u{2028}é\"";
        let escaped = r#"forbidden: this key may not use model \"a\\b\u0001\u2028é\""#;
        assert_eq!(
            String::from_utf8(error_body(ErrorShape::Ollama, 403, "forbidden", message)).unwrap(),
            format!("{{\"error\":\"{escaped}\"}}\n")
        );
        assert_eq!(
            String::from_utf8(error_body(ErrorShape::OpenAi, 403, "forbidden", message)).unwrap(),
            format!(
                "{{\"error\":{{\"message\":\"{escaped}\",\"type\":\"permission_error\",\"param\":null,\"code\":\"forbidden\"}}}}\n"
            )
        );
        assert_eq!(
            String::from_utf8(error_body(ErrorShape::Anthropic, 429, "rate limited", "slow down")).unwrap(),
            "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"rate limited: slow down\"}}\n"
        );
    }

    #[test]
    fn bodies_end_with_one_newline_and_hold_no_raw_control_character() {
        for shape in [ErrorShape::Ollama, ErrorShape::OpenAi, ErrorShape::Anthropic] {
            for status in [400, 401, 403, 404, 413, 429, 500, 502, 503, 504, 599] {
                let body = error_body(shape, status, "kind", "line\nbreak\ttab\u{7}");
                assert_eq!(body.iter().filter(|&&b| b == b'\n').count(), 1);
                assert_eq!(body.last(), Some(&b'\n'));
                assert!(body[..body.len() - 1].iter().all(|&b| b >= 0x20));
            }
        }
    }

    #[test]
    fn only_nginx_s_own_error_pages_answer_json() {
        let error = |status| NginxResponse { status, err_status: status, ..NginxResponse::default() };
        for status in [400, 403, 404, 413, 429, 500, 502, 503, 504] {
            assert!(answers_as_json(error(status)), "{status}");
        }
        assert!(!answers_as_json(error(401)), "a 401's challenges are another module's");
        assert!(!answers_as_json(NginxResponse { status: 502, ..NginxResponse::default() }), "an upstream's own");
        assert!(!answers_as_json(NginxResponse { status: 200, err_status: 502, ..NginxResponse::default() }));
        // error_page directives in scope that do not take this status leave it to the gate...
        assert!(answers_as_json(NginxResponse { error_pages_in_scope: true, ..error(429) }));
        // ...but a page of the location's own for it, or one reached by a redirect, is kept.
        assert!(!answers_as_json(NginxResponse { location_has_page: true, ..error(502) }));
        assert!(!answers_as_json(NginxResponse { error_pages_in_scope: true, redirected: true, ..error(502) }));
        // A redirect with no error_page in scope (try_files, say) is not a page of the user's.
        assert!(answers_as_json(NginxResponse { redirected: true, ..error(502) }));
    }

    #[test]
    fn retry_after_is_given_for_what_passes() {
        assert_eq!(default_retry_after(429), Some("1"));
        assert_eq!(default_retry_after(502), Some("5"));
        assert_eq!(default_retry_after(413), None);
    }
}
