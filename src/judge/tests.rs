use super::*;
use crate::refusal::Refusal;

fn options(words: &str) -> Rc<EntryOptions> {
    let words: Vec<&[u8]> = words.split_whitespace().map(str::as_bytes).collect();
    Rc::new(crate::options::parse_options(&words).expect("valid options"))
}

fn asked(method: Method, uri: &'static str) -> Asked<'static> {
    let method_name: &'static [u8] = match method {
        Method::Get => b"GET",
        Method::Head => b"HEAD",
        Method::Post => b"POST",
        Method::Delete => b"DELETE",
        Method::Other => b"PATCH",
    };
    Asked { method_name, uri: uri.as_bytes(), target: uri.as_bytes(), args: b"" }
}

const LOCATION: Location<'static> =
    Location { path_prefix: None, default_scopes: Scopes::ALL, caps: None, counts_limits: true };

fn verdict(asked: &Asked<'_>, location: &Location<'_>, options: Option<&Rc<EntryOptions>>) -> Judgement {
    judge(asked, location, &Admitted { options, is_user: false }, 1_000)
}

fn refusal(judgement: Judgement) -> Refusal {
    match judgement {
        Judgement::Refuse(refusal) => refusal,
        _ => panic!("expected a refusal"),
    }
}

#[test]
fn a_plain_entry_with_every_scope_is_allowed_without_reading_anything() {
    assert!(matches!(verdict(&asked(Method::Post, "/api/chat"), &LOCATION, None), Judgement::Allow));
}

#[test]
fn a_fragment_in_the_target_is_a_bad_request() {
    let asked = Asked { target: b"/api/chat#x", ..asked(Method::Post, "/api/chat") };
    let refusal = refusal(verdict(&asked, &LOCATION, None));
    assert_eq!((refusal.status, refusal.why), (400, RefusalReason::BadRequest));
}

#[test]
fn an_expired_entry_is_unauthorized_in_its_own_words() {
    let expired = options("expires=1970-01-01");
    let key = refusal(verdict(&asked(Method::Get, "/api/tags"), &LOCATION, Some(&expired)));
    assert_eq!((key.status, key.kind, key.why), (401, "unauthorized", RefusalReason::Expired));
    assert_eq!(key.message, "this API key has expired");
    let admitted = Admitted { options: Some(&expired), is_user: true };
    let user = refusal(judge(&asked(Method::Get, "/api/tags"), &LOCATION, &admitted, 1_000));
    assert_eq!(user.message, "this user's access has expired");
}

#[test]
fn limits_without_a_zone_admit_no_one() {
    let limited = options("requests=10/1m");
    let location = Location { counts_limits: false, ..LOCATION };
    let refusal = refusal(verdict(&asked(Method::Get, "/api/tags"), &location, Some(&limited)));
    assert_eq!((refusal.status, refusal.why), (403, RefusalReason::Unenforceable));
    assert!(matches!(verdict(&asked(Method::Get, "/api/tags"), &LOCATION, Some(&limited)), Judgement::Allow));
}

#[test]
fn a_missing_scope_is_forbidden_and_an_unknown_path_hints_at_the_prefix() {
    let read_only = options("scopes=read");
    let scope = refusal(verdict(&asked(Method::Post, "/api/chat"), &LOCATION, Some(&read_only)));
    assert_eq!((scope.status, scope.why), (403, RefusalReason::ForbiddenScope));
    assert!(scope.message.ends_with("this key does not have it"), "{}", scope.message);
    let outside = refusal(verdict(&asked(Method::Get, "/ollama/api/tags"), &LOCATION, Some(&read_only)));
    assert!(outside.message.contains("ollama_auth_path_prefix"), "{}", outside.message);
    let prefixed = Location { path_prefix: Some(b"/ollama"), ..LOCATION };
    assert!(matches!(verdict(&asked(Method::Get, "/ollama/api/tags"), &prefixed, Some(&read_only)), Judgement::Allow));
}

#[test]
fn the_default_scopes_apply_to_entries_without_their_own() {
    let location = Location { default_scopes: Scopes::READ, ..LOCATION };
    let refusal = refusal(verdict(&asked(Method::Post, "/api/generate"), &location, None));
    assert_eq!(refusal.why, RefusalReason::ForbiddenScope);
}

#[test]
fn a_model_in_the_path_is_checked_at_once_and_a_body_model_is_read() {
    let some = options("models=llama3*");
    let allowed = asked(Method::Get, "/v1/models/llama3.2");
    assert!(matches!(verdict(&allowed, &LOCATION, Some(&some)), Judgement::Allow));
    let other = refusal(verdict(&asked(Method::Get, "/v1/models/qwen3"), &LOCATION, Some(&some)));
    assert_eq!((other.status, other.why), (403, RefusalReason::ForbiddenModel));
    match verdict(&asked(Method::Post, "/api/chat"), &LOCATION, Some(&some)) {
        Judgement::ReadBody(check) => assert!(check.models.is_some() && check.caps.is_none()),
        _ => panic!("a chat's model is in its body"),
    }
}

#[test]
fn a_listing_is_cut_down_for_an_entry_with_some_models() {
    let some = options("models=llama3*");
    assert!(matches!(verdict(&asked(Method::Get, "/api/tags"), &LOCATION, Some(&some)), Judgement::AllowListing(..)));
}

#[test]
fn a_transcription_model_comes_from_the_query_before_the_form() {
    let some = options("models=whisper*");
    let base = asked(Method::Post, "/v1/audio/transcriptions");
    let query = |args: &'static str| Asked { args: args.as_bytes(), ..base };
    assert!(matches!(verdict(&query("model=whisper-1"), &LOCATION, Some(&some)), Judgement::Allow));
    assert_eq!(refusal(verdict(&query("model=other"), &LOCATION, Some(&some))).status, 403);
    assert_eq!(refusal(verdict(&query("model="), &LOCATION, Some(&some))).status, 400);
    assert_eq!(refusal(verdict(&query("model=%zz"), &LOCATION, Some(&some))).status, 400);
    assert!(matches!(verdict(&base, &LOCATION, Some(&some)), Judgement::ReadBody(_)));
}

#[test]
fn web_search_tools_need_the_search_scope() {
    let infer = options("scopes=read,infer");
    match verdict(&asked(Method::Post, "/v1/responses"), &LOCATION, Some(&infer)) {
        Judgement::ReadBody(check) => assert_eq!(check.web_search.map(|(_, who)| who), Some("key")),
        _ => panic!("a responses body may name a web-search tool"),
    }
    let search = options("scopes=read,infer,search");
    assert!(matches!(verdict(&asked(Method::Post, "/v1/responses"), &LOCATION, Some(&search)), Judgement::Allow));
}

#[test]
fn caps_make_a_body_to_read_with_the_entrys_over_the_locations() {
    let location_caps = Caps::parse_words(["num_ctx=4096"]).unwrap();
    let location = Location { caps: Some(&location_caps), ..LOCATION };
    match verdict(&asked(Method::Post, "/api/chat"), &location, None) {
        Judgement::ReadBody(check) => {
            let caps = check.caps.expect("the location's caps");
            assert!(caps.may_unload, "every scope includes manage");
            assert_eq!(caps.caps, location_caps);
        }
        _ => panic!("a capped chat's body is read"),
    }
    assert!(matches!(verdict(&asked(Method::Get, "/api/tags"), &location, None), Judgement::Allow));
    let own = options("num_ctx=2048 scopes=read,infer");
    let check =
        cap_check(&asked(Method::Post, "/api/chat"), &location, &Admitted { options: Some(&own), is_user: true })
            .expect("caps apply to a chat");
    assert_eq!(
        (check.caps.over(&Caps::default()), check.may_unload, check.who),
        (own.caps.over(&location_caps), false, "user")
    );
}

#[test]
fn a_refused_unload_names_the_missing_scope_and_who() {
    let refusal = Refusal::of_caps(CapRefusal::Unload("unloading a model needs the manage scope".into()), "user");
    assert_eq!((refusal.status, refusal.why), (403, RefusalReason::ForbiddenScope));
    assert_eq!(refusal.message, "unloading a model needs the manage scope; this user does not have it");
    assert_eq!(Refusal::of_caps(CapRefusal::BadRequest("bad".into()), "key").status, 400);
}

#[test]
fn inference_is_what_needs_the_infer_scope() {
    assert!(is_inference(&asked(Method::Post, "/api/chat"), None));
    assert!(is_inference(&asked(Method::Post, "/ollama/v1/chat/completions"), Some(b"/ollama")));
    assert!(!is_inference(&asked(Method::Get, "/api/tags"), None));
    assert!(!is_inference(&asked(Method::Post, "/api/pull"), None));
}

#[test]
fn a_limited_keys_refusals_say_why_and_whose() {
    let no_zone = Refusal::of_limits(LimitsRefused::NoZone, "user");
    assert_eq!((no_zone.status, no_zone.why), (403, RefusalReason::Unenforceable));
    assert_eq!(no_zone.message, "this user's limits cannot be counted here");
    let error = crate::limits::ConfigError::TooManyWindows(7);
    let uncountable = Refusal::of_limits(LimitsRefused::Uncountable(&error), "key");
    assert!(
        uncountable.message.starts_with("this key's limits cannot be counted: 7 limit windows"),
        "{}",
        uncountable.message
    );
    let full = Refusal::of_limits(LimitsRefused::ZoneFull, "key");
    assert_eq!((full.status, full.kind, full.why), (503, "service unavailable", RefusalReason::Unenforceable));
    let mut key = crate::limits::KeyLimits::new(&options("requests=1/1m").as_ref().clone(), 0).unwrap();
    key.admit(0).unwrap();
    let over = key.admit(1).unwrap_err();
    let refusal = Refusal::of_limits(LimitsRefused::Over(&over), "key");
    assert_eq!((refusal.status, refusal.kind, refusal.why), (429, "rate limited", RefusalReason::RateLimited));
    assert_eq!(refusal.message, over.to_string());
}

fn body_check(judgement: Judgement) -> BodyCheck {
    match judgement {
        Judgement::ReadBody(check) => check,
        _ => panic!("expected a body to read"),
    }
}

#[test]
fn a_body_is_judged_by_every_model_it_names_and_its_tools() {
    let some = options("models=llama3* scopes=read,infer");
    let check = body_check(verdict(&asked(Method::Post, "/api/chat"), &LOCATION, Some(&some)));
    assert_eq!(judge_body(&check, br#"{"model":"llama3.2"}"#, b""), Ok(()));
    let other = judge_body(&check, br#"{"model":"llama3.2","MODEL":"qwen3"}"#, b"").unwrap_err();
    assert_eq!((other.status, other.why), (403, RefusalReason::ForbiddenModel));
    let search = body_check(verdict(&asked(Method::Post, "/v1/responses"), &LOCATION, Some(&some)));
    let tools = br#"{"model":"llama3.2","tools":[{"type":"web_search"}]}"#;
    let refusal = judge_body(&search, tools, b"").unwrap_err();
    assert_eq!((refusal.status, refusal.why), (403, RefusalReason::ForbiddenScope));
    assert!(refusal.message.contains("\"search\" scope; this key does not have it"), "{}", refusal.message);
    assert_eq!(judge_body(&search, b"[1]", b"").unwrap_err().status, 400);
}

#[test]
fn a_form_model_is_read_with_the_requests_content_type() {
    let some = options("models=whisper*");
    let check = body_check(verdict(&asked(Method::Post, "/v1/audio/transcriptions"), &LOCATION, Some(&some)));
    let form = b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b--\r\n";
    assert_eq!(judge_body(&check, form, b"multipart/form-data; boundary=b"), Ok(()));
    let other = b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nother\r\n--b--\r\n";
    assert_eq!(judge_body(&check, other, b"multipart/form-data; boundary=b").unwrap_err().status, 403);
}

#[test]
fn a_body_too_large_is_refused_unless_read_only_for_an_estimate() {
    assert_eq!(judge_too_large(&BodyCheck::default(), 64 << 20), None);
    let usage = BodyCheck { add_usage: true, ..BodyCheck::default() };
    let refusal = judge_too_large(&usage, 64 << 20).unwrap();
    assert_eq!((refusal.status, refusal.message.as_str()), (413, "a body read by this gate may be at most 64 MB"));
    let some = options("models=whisper*");
    let form = body_check(verdict(&asked(Method::Post, "/v1/audio/transcriptions"), &LOCATION, Some(&some)));
    let refusal = judge_too_large(&form, 64 << 20).unwrap();
    assert_eq!((refusal.status, refusal.why), (403, RefusalReason::ForbiddenModel));
    assert!(refusal.message.contains("?model="), "{}", refusal.message);
}
