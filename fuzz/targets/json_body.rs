//! Request and listing bodies: validation, top-level members, and the listing filter must agree
//! with one another and never panic.
use ngx_ollama_auth::json::{
    filter_listing, for_each_top_level_member, go_name_matches, string_value, top_level_members, validate,
    JsonError, ValueKind,
};

fn main() {
    afl::fuzz!(|body: &[u8]| {
        let whole = validate(body);
        if whole.is_ok() {
            assert!(std::str::from_utf8(body).is_ok(), "valid JSON is valid UTF-8");
        }
        match top_level_members(body) {
            Ok(members) => {
                assert_eq!(whole, Ok(ValueKind::Object));
                let mut previous_end = 0;
                for member in &members {
                    let range = member.value.clone();
                    assert!(
                        previous_end <= range.start && range.start < range.end && range.end <= body.len()
                    );
                    previous_end = range.end;
                    assert_eq!(validate(&body[range]), Ok(member.kind), "a value scans alone");
                    assert_eq!(string_value(body, member).is_some(), member.kind == ValueKind::String);
                    let _ = go_name_matches(&member.name, "model");
                }
                let mut seen = 0;
                assert_eq!(for_each_top_level_member(body, |_| seen += 1), Ok(()));
                assert_eq!(seen, members.len());
            }
            Err(JsonError::NotAnObject) => assert!(whole.is_ok() && whole != Ok(ValueKind::Object)),
            Err(error) => assert_eq!(whole, Err(error), "both entry points see the same fault"),
        }
        for array in ["models", "data"] {
            let all = filter_listing(body, array, |_| true);
            match &all {
                Ok(kept) => assert_eq!(kept.as_ref(), body, "keeping everything changes nothing"),
                Err(_) => assert!(whole != Ok(ValueKind::Object)),
            }
            let mut toggle = false;
            let some = filter_listing(body, array, |entry| {
                let _ = (entry.string("name"), entry.string("id"));
                toggle = !toggle;
                toggle
            });
            let none = filter_listing(body, array, |_| false);
            for filtered in [some, none] {
                match filtered {
                    Ok(filtered) => {
                        assert_eq!(validate(&filtered), Ok(ValueKind::Object), "still a JSON object")
                    }
                    Err(error) => assert_eq!(Err::<(), _>(error), all.clone().map(|_| ())),
                }
            }
        }
    });
}
