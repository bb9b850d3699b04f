//! A fleet member's poll answer (`/api/tags`, `/api/ps`) as the poller reads it: any bytes.
//! Reading never panics, keeps at most the bound's models, sorted and unique; and the request
//! model reader never panics on any body; normalizing a name agrees with the full parse.
use ngx_ollama_auth::fleet::{normalize, parse_poll_answer, request_model, short_name, MAX_MODELS_PER_MEMBER};
use ngx_ollama_auth::models::ModelName;
use ngx_ollama_auth::policy::Method;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(polled) = parse_poll_answer(data) {
            assert!(polled.keys.len() <= MAX_MODELS_PER_MEMBER);
            assert!(polled.keys.windows(2).all(|pair| pair[0] < pair[1]), "sorted, unique");
            assert!(polled.names.len() <= MAX_MODELS_PER_MEMBER);
        }
        let _ = request_model(Method::Post, b"/api/chat", Some(data));
        // The fast path for plain names agrees with the full parse on every text.
        if let Ok(text) = std::str::from_utf8(data) {
            assert_eq!(normalize(text), ModelName::parse(text).map(|name| short_name(&name)), "{text:?}");
        }
    });
}
