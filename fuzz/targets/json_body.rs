//! Request and listing bodies: validation, top-level members, and the listing filter must agree
//! with one another and never panic (the checks are `json::check_consistency`, which the unit
//! tests run too).
fn main() {
    afl::fuzz!(|body: &[u8]| ngx_ollama_auth::json::check_consistency(body));
}
