use super::*;
use crate::bytescan::skip_plain_text;
use crate::listing::{filter_listing, Entry};
use std::time::Instant;

/// Both checks of one body: the validator's and the listing filter's.
fn check_consistency(body: &[u8]) {
    super::check_consistency(body);
    crate::listing::check_consistency(body);
}

fn members(body: &str) -> Vec<(String, String, ValueKind)> {
    top_level_members(body.as_bytes())
        .unwrap()
        .into_iter()
        .map(|m| (m.name.to_string(), body[m.value.clone()].to_string(), m.kind))
        .collect()
}

fn string_of(body: &str, name: &str) -> Option<String> {
    let found = top_level_members(body.as_bytes()).unwrap();
    let member = found.iter().find(|m| m.name == name)?;
    string_value(body.as_bytes(), member).map(Cow::into_owned)
}

#[test]
fn accepts_rfc_8259_json() {
    let valid: &[&[u8]] = &[
        b"{}",
        b"[]",
        b"0",
        b"-0",
        b"-0.0e-0",
        b"1.5e+10",
        b"-1E-2",
        b"123456789012345678901234567890",
        b"\"\"",
        b"true",
        b"false",
        b"null",
        b" \t\r\n{ \"a\" : [ 1 , 2 , { \"b\" : null } ] , \"c\":{}} \r\n\t",
        b"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"",
        "\"é😀 \u{7f} \u{10FFFF}\"".as_bytes(),
        b"\"\\uDEAD lone surrogates are valid JSON\"",
        b"[[[]],[{}],{\"\":[]}]",
        b"{\"a\":1,\"a\":2}",
    ];
    for &body in valid {
        assert!(validate(body).is_ok(), "{:?}", String::from_utf8_lossy(body));
    }
    assert_eq!(validate(b" [1] "), Ok(ValueKind::Array));
    assert_eq!(validate(b"\"x\""), Ok(ValueKind::String));
    assert_eq!(validate(b"-1"), Ok(ValueKind::Number));
}

#[test]
fn refuses_everything_else() {
    let invalid: &[&[u8]] = &[
        b"",
        b"  ",
        b"{,}",
        b"[1,]",
        b"[,1]",
        b"[1,,2]",
        b"{\"a\":1,}",
        b"{\"a\":1,,\"b\":2}",
        b"{\"a\"}",
        b"{\"a\" 1}",
        b"{\"a\"::1}",
        b"{1:2}",
        b"{a:1}",
        b"{'a':1}",
        b"[1 2]",
        b"{\"a\":1 \"b\":2}",
        b"[1}",
        b"{\"a\":1]",
        b"01",
        b"-01",
        b"00",
        b"1.",
        b".5",
        b"-",
        b"+1",
        b"1e",
        b"1e+",
        b"1.e5",
        b"0x10",
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"tru",
        b"nul",
        b"True",
        b"nulll",
        b"'a'",
        b"\"\\x\"",
        b"\"\\u12\"",
        b"\"\\u12G4\"",
        b"\"\\U0041\"",
        b"\"\\",
        b"\"a",
        b"\"a\t\"",
        b"\"a\nb\"",
        b"\"\x00\"",
        b"\"\x1f\"",
        b"{} {}",
        b"{}x",
        b"[]]",
        b"1 2",
        b"\xef\xbb\xbf{}",
        b"/* comment */{}",
        b"{}// comment",
        b"[1]\x00",
        b"\x0c{}",
        b"\xc2\xa0{}",
    ];
    for &body in invalid {
        assert!(validate(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        assert!(top_level_members(body).is_err(), "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn errors_say_where_and_what() {
    assert_eq!(validate(b""), Err(JsonError::Truncated));
    assert_eq!(validate(b"[1,"), Err(JsonError::Truncated));
    assert_eq!(validate(b"{\"a\":x}"), Err(JsonError::Syntax { at: 5 }));
    assert_eq!(validate(b"{} {}"), Err(JsonError::TrailingData { at: 3 }));
    assert_eq!(validate(b"01"), Err(JsonError::TrailingData { at: 1 }));
    assert_eq!(validate(b"\xef\xbb\xbf{}"), Err(JsonError::Syntax { at: 0 }));
    assert_eq!(validate(b"\"ab\xff\""), Err(JsonError::InvalidUtf8 { at: 3 }));
    assert_eq!(top_level_members(b"[]"), Err(JsonError::NotAnObject));
    assert_eq!(top_level_members(b"[1,"), Err(JsonError::Truncated));
    assert_eq!(JsonError::Syntax { at: 17 }.to_string(), "invalid JSON at byte 17");
    assert_eq!(JsonError::TooDeep.to_string(), "JSON nested deeper than 10000 levels");
    let body = b"{\"model\":\"secret-model\", oops}";
    let message = top_level_members(body).unwrap_err().to_string();
    assert!(!message.contains("secret") && !message.contains("oops"), "{message}");
}

#[test]
fn strings_must_be_valid_utf8() {
    let invalid: &[&[u8]] = &[
        b"\x80",                     // a continuation byte alone
        b"\xc3",                     // a sequence cut short by the quote
        b"\xc3(",                    // a bad continuation
        b"\xc0\xaf",                 // overlong '/'
        b"\xc1\xbf",                 // overlong
        b"\xe0\x80\xaf",             // overlong '/'
        b"\xf0\x80\x80\xaf",         // overlong '/'
        b"\xed\xa0\x80",             // the surrogate U+D800, encoded
        b"\xed\xbf\xbf",             // the surrogate U+DFFF, encoded
        b"\xed\xa0\xbd\xed\xb8\x80", // a surrogate pair, each half encoded (CESU-8)
        b"\xf4\x90\x80\x80",         // above U+10FFFF
        b"\xf5\x80\x80\x80",
        b"\xfe",
        b"\xff",
    ];
    for &bad in invalid {
        let value = [b"\"a".as_slice(), bad, b"\""].concat();
        assert_eq!(validate(&value), Err(JsonError::InvalidUtf8 { at: 2 }), "{bad:?}");
        let name = [b"{\"".as_slice(), bad, b"\":1}"].concat();
        assert_eq!(top_level_members(&name), Err(JsonError::InvalidUtf8 { at: 2 }), "{bad:?}");
    }
    assert!(validate("\"\u{80}\u{7ff}\u{800}\u{d7ff}\u{e000}\u{ffff}\u{10000}\u{10ffff}\"".as_bytes()).is_ok());
    // Outside a string, any non-ASCII byte is simply not JSON.
    assert_eq!(validate("[é]".as_bytes()), Err(JsonError::Syntax { at: 1 }));
}

#[test]
fn every_truncation_of_a_body_is_an_error() {
    let body = "{\"model\" : \"llama3.2:1b\", \"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo \
                \\ud83d\\ude00 ü\"}],\"options\":{\"temperature\":-0.5e+1,\"seed\":42},\"stream\":false,\
                \"keep\":null,\"raw\":true}"
        .as_bytes();
    assert!(top_level_members(body).is_ok());
    for end in 0..body.len() {
        assert!(validate(&body[..end]).is_err(), "prefix of {end} bytes");
        assert!(top_level_members(&body[..end]).is_err(), "prefix of {end} bytes");
    }
}

#[test]
fn single_byte_changes_never_panic_and_the_entry_points_agree() {
    let sample = "{\"model\":\"m\\u0031\",\"x\":[1,-2.5e3,{\"y\":[true,false,null]}],\"z\":\"é\"}";
    let listing = "{\"models\":[{\"name\":\"a\"}, {\"name\":\"b\"} ,\"c\"],\"data\":[]}";
    for body in [sample.as_bytes(), listing.as_bytes()] {
        mutate_and_check(body);
    }
}

fn mutate_and_check(body: &[u8]) {
    for at in 0..body.len() {
        for replacement in
            [0u8, b' ', b'"', b'\\', b',', b':', b'{', b'}', b'[', b']', b'0', b'e', b'-', 0x80, 0xc3, 0xff]
        {
            let mut changed = body.to_vec();
            changed[at] = replacement;
            check_consistency(&changed);
        }
        let mut shorter = body.to_vec();
        shorter.remove(at);
        check_consistency(&shorter);
    }
}

#[test]
fn fuzz_seeds_hold_the_invariants() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/json_body");
    let mut count = 0;
    for seed in std::fs::read_dir(seeds).unwrap() {
        check_consistency(&std::fs::read(seed.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count >= 5);
}

fn nested(depth: usize, open: &str, inner: &str, close: &str) -> Vec<u8> {
    [open.repeat(depth), inner.to_string(), close.repeat(depth)].concat().into_bytes()
}

#[test]
fn nesting_stops_at_go_s_limit_without_recursion() {
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        assert_eq!(validate(&nested(MAX_DEPTH, open, "1", close)).map(|_| ()), Ok(()));
        assert_eq!(validate(&nested(MAX_DEPTH + 1, open, "1", close)), Err(JsonError::TooDeep));
    }
    // The top-level object counts as one level.
    assert_eq!(top_level_members(&nested(MAX_DEPTH, "{\"a\":", "1", "}")).map(|m| m.len()), Ok(1));
    assert_eq!(top_level_members(&nested(MAX_DEPTH + 1, "{\"a\":", "1", "}")), Err(JsonError::TooDeep));
    let mut mixed = b"{\"a\":".to_vec();
    mixed.extend(nested(MAX_DEPTH - 1, "[", "{}", "]"));
    mixed.push(b'}');
    assert_eq!(top_level_members(&mixed), Err(JsonError::TooDeep));
    let mut deepest = b"{\"a\":".to_vec();
    deepest.extend(nested(MAX_DEPTH - 1, "[", "0", "]"));
    deepest.push(b'}');
    assert!(top_level_members(&deepest).is_ok());
    // A million open brackets: refused at the limit, no stack overflow.
    assert_eq!(validate(&vec![b'['; 1_000_000]), Err(JsonError::TooDeep));
    // Levels closed again do not count: wide is not deep.
    let wide = format!("[{}1]", "[[[]]],".repeat(100_000));
    assert!(validate(wide.as_bytes()).is_ok());
}

#[test]
fn reports_top_level_members_in_order_with_duplicates() {
    let body = r#" { "model" : "a", "n": -1.5, "o": {"model": "nested"}, "l": [{"model": "in-array"}],
                   "t": true, "f": false, "z": null, "model": "b" } "#;
    let found = members(body);
    let kinds: Vec<ValueKind> = found.iter().map(|m| m.2).collect();
    use ValueKind::*;
    assert_eq!(kinds, [String, Number, Object, Array, True, False, Null, String]);
    assert_eq!(found[0], ("model".into(), "\"a\"".into(), String));
    assert_eq!(found[1].1, "-1.5");
    assert_eq!(found[2].1, r#"{"model": "nested"}"#);
    assert_eq!(found[7], ("model".into(), "\"b\"".into(), String));
    let models: Vec<&str> = found.iter().filter(|m| m.0 == "model").map(|m| m.1.as_str()).collect();
    assert_eq!(models, ["\"a\"", "\"b\""], "nested members are not reported");
    assert!(members("{}").is_empty());
    assert!(members(" {\n} ").is_empty());
}

#[test]
fn the_callback_sees_the_same_members() {
    let body = br#"{"a":1,"model":"m","a":[2]}"#;
    let mut seen = Vec::new();
    assert_eq!(for_each_top_level_member(body, |m| seen.push(m)), Ok(()));
    assert_eq!(seen, top_level_members(body).unwrap());
}

#[test]
fn non_object_bodies_are_refused() {
    for body in ["[]", "[{\"model\":\"m\"}]", "\"model\"", "1", "null", " true "] {
        assert_eq!(top_level_members(body.as_bytes()), Err(JsonError::NotAnObject), "{body}");
    }
}

#[test]
fn names_are_unescaped() {
    let found = members(r#"{"mod\u0065l":1,"\u006dodel":2,"a\/b":3,"\"q\\":4,"\u017Fource":5,"e\u0301":6}"#);
    let names: Vec<&str> = found.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names, ["model", "model", "a/b", "\"q\\", "ſource", "e\u{301}"]);
    // Pairs become one rune; a surrogate outside a pair becomes U+FFFD, as in Go.
    let found = members(
        r#"{"\uD83D\uDE00":1,"\uD800x":2,"\uDC00":3,"\uD800\uD800\uDC00":4,"\uDBFF\uDFFF":5,"\uD800\u0041":6}"#,
    );
    let names: Vec<&str> = found.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names, ["😀", "\u{FFFD}x", "\u{FFFD}", "\u{FFFD}\u{10000}", "\u{10FFFF}", "\u{FFFD}A"]);
    // Names without escapes are borrowed from the body.
    let body = br#"{"plain":1}"#;
    assert!(matches!(top_level_members(body).unwrap()[0].name, Cow::Borrowed("plain")));
}

#[test]
fn string_values_are_unescaped() {
    let body =
        r#"{"model":"llama\u0033.2:1b","b":"tab\there \"q\" \\ \/ \b\f\n\r","c":"é\u00e9\ud83d\ude00","n":1,"d":""}"#;
    assert_eq!(string_of(body, "model").as_deref(), Some("llama3.2:1b"));
    assert_eq!(string_of(body, "b").as_deref(), Some("tab\there \"q\" \\ / \u{8}\u{c}\n\r"));
    assert_eq!(string_of(body, "c").as_deref(), Some("éé😀"));
    assert_eq!(string_of(body, "d").as_deref(), Some(""));
    assert_eq!(string_of(body, "n"), None, "not a string");
    let found = top_level_members(body.as_bytes()).unwrap();
    assert!(matches!(string_value(body.as_bytes(), &found[0]), Some(Cow::Owned(_))));
    let plain = br#"{"model":"llama3"}"#;
    let found = top_level_members(plain).unwrap();
    assert!(matches!(string_value(plain, &found[0]), Some(Cow::Borrowed("llama3"))));
    // A member from another body is answered with None or some string, never a panic.
    assert_eq!(string_value(b"\"", &found[0]), None);
    assert_eq!(string_value(b"", &found[0]), None);
}

#[test]
fn unescape_refuses_what_is_not_a_json_string() {
    for bad in [&b"\\"[..], b"\\x", b"\\u12", b"\\u12g4", b"a\"b", b"\x01", b"\xff", b"\\u00e9\xc3"] {
        assert_eq!(unescape(bad), None, "{bad:?}");
    }
}

#[test]
fn names_match_as_go_matches_struct_fields() {
    for name in ["model", "MODEL", "Model", "mOdEl"] {
        assert!(go_name_matches(name, "model"), "{name}");
    }
    for name in ["models", "mode", "", "mode l", "m\u{0}odel", "modeł", "ｍodel", "model\u{301}"] {
        assert!(!go_name_matches(name, "model"), "{name:?}");
    }
    // After unescaping, as the member extraction hands them over.
    for body in [r#"{"\u006dodel":1}"#, r#"{"mod\u0065l":1}"#, r#"{"\u004DODEL":1}"#] {
        assert!(go_name_matches(&top_level_members(body.as_bytes()).unwrap()[0].name, "model"), "{body}");
    }
    let names = members(r#"{"nam\u0065":1,"\u017Fource":2,"ſOURCE":3,"de\u017Ftination":4}"#);
    assert!(go_name_matches(&names[0].0, "name"));
    assert!(go_name_matches(&names[1].0, "source"));
    assert!(go_name_matches(&names[2].0, "source"));
    assert!(go_name_matches(&names[3].0, "destination"));
    assert!(go_name_matches("FROM", "from") && go_name_matches("Destination", "destination"));
    // The long s only stands for s, the Kelvin sign only for k.
    assert!(!go_name_matches("ſ", "f") && !go_name_matches("ſ", "t"));
    assert!(go_name_matches("\u{212A}ind", "kind") && go_name_matches("\u{212A}IND", "kind"));
    for field in ["model", "name", "from", "source", "destination"] {
        let with_kelvin = format!("\u{212A}{}", &field[1..]);
        assert!(!go_name_matches(&with_kelvin, field), "{with_kelvin}");
    }
    // Turkish dotted and dotless i fold only to themselves in Go.
    assert!(go_name_matches("INFO", "info"));
    assert!(!go_name_matches("\u{130}nfo", "info") && !go_name_matches("\u{131}nfo", "info"));
    // Non-letters must be equal.
    assert!(go_name_matches("keep_alive", "keep_alive") && !go_name_matches("keep-alive", "keep_alive"));
    assert!(!go_name_matches("a\u{7f}", "a_"));
}

fn tags(names: &[&str]) -> String {
    let entries: Vec<String> = names
        .iter()
        .map(|n| format!(r#"{{"name":"{n}","model":"{n}","size":1,"details":{{"family":"x","name":"inner"}}}}"#))
        .collect();
    format!(r#"{{"models":[{}]}}"#, entries.join(","))
}

fn keep_names<'a>(allowed: &'a [&'a str]) -> impl FnMut(&Entry<'_>) -> bool + 'a {
    move |entry| entry.string("name").is_some_and(|name| allowed.contains(&name.as_ref()))
}

fn listed_names(body: &[u8], array: &str) -> Vec<String> {
    let mut names = Vec::new();
    let unchanged = filter_listing(body, array, |entry| {
        names.push(entry.string("name").or_else(|| entry.string("id")).unwrap_or_default().into_owned());
        true
    });
    assert!(matches!(unchanged, Ok(Cow::Borrowed(_))));
    names
}

#[test]
fn filter_drops_first_last_middle_all_or_none() {
    let body = tags(&["a", "b", "c", "d"]);
    let cases: &[(&[&str], &[&str])] = &[
        (&["b", "c", "d"], &["b", "c", "d"]),
        (&["a", "b", "c"], &["a", "b", "c"]),
        (&["a", "d"], &["a", "d"]),
        (&["b"], &["b"]),
        (&[], &[]),
    ];
    for &(allowed, expected) in cases {
        let filtered = filter_listing(body.as_bytes(), "models", keep_names(allowed)).unwrap();
        assert_eq!(validate(&filtered), Ok(ValueKind::Object));
        assert_eq!(listed_names(&filtered, "models"), expected);
        assert_eq!(filtered.as_ref(), tags(expected).as_bytes(), "the rest is untouched");
    }
    let all = filter_listing(body.as_bytes(), "models", keep_names(&["a", "b", "c", "d"])).unwrap();
    assert!(matches!(all, Cow::Borrowed(_)));
    assert_eq!(filter_listing(b"{\"models\":[]}", "models", |_| false).unwrap().as_ref(), b"{\"models\":[]}");
}

#[test]
fn filter_keeps_the_layout_around_the_array() {
    let body = "{\n  \"models\": [\n    {\"name\": \"a\"},\n    {\"name\": \"b\"} ,\n    {\"name\": \"c\"}\n  ],\n  \"x\": 1\n}\n";
    let keep = |allowed| filter_listing(body.as_bytes(), "models", keep_names(allowed)).unwrap().into_owned();
    assert_eq!(
        String::from_utf8(keep(&["a", "c"])).unwrap(),
        "{\n  \"models\": [\n    {\"name\": \"a\"} ,\n    {\"name\": \"c\"}\n  ],\n  \"x\": 1\n}\n"
    );
    assert_eq!(
        String::from_utf8(keep(&["b"])).unwrap(),
        "{\n  \"models\": [\n    {\"name\": \"b\"}\n  ],\n  \"x\": 1\n}\n"
    );
    assert_eq!(String::from_utf8(keep(&[])).unwrap(), "{\n  \"models\": [],\n  \"x\": 1\n}\n");
}

#[test]
fn filter_reads_entries_by_exact_name_and_the_openai_listing_by_id() {
    let body = br#"{"object":"list","data":[{"id":"llama3:latest","object":"model","owned_by":"library"},
                    {"id":"qw\u0065n:7b","object":"model"},{"ID":"hidden:1"},{"id":7},"text",null]}"#;
    let mut seen = Vec::new();
    let filtered = filter_listing(body, "data", |entry| {
        let id = entry.string("id");
        seen.push(id.as_deref().map(str::to_owned));
        id.is_some_and(|id| id.starts_with("qwen"))
    })
    .unwrap();
    assert_eq!(seen, [Some("llama3:latest".into()), Some("qwen:7b".into()), None, None, None, None]);
    assert_eq!(filtered.as_ref(), br#"{"object":"list","data":[{"id":"qw\u0065n:7b","object":"model"}]}"#);
    // The last of a repeated name counts; nested members are not the entry's own.
    let body = br#"{"models":[{"name":"a","name":"b"},{"details":{"name":"a"}}]}"#;
    let filtered = filter_listing(body, "models", keep_names(&["a"])).unwrap();
    assert_eq!(filtered.as_ref(), br#"{"models":[]}"#);
}

#[test]
fn filter_leaves_bodies_without_the_array_alone() {
    for body in [
        r#"{"other":[{"name":"a"}]}"#,
        r#"{"models":null}"#,
        r#"{"models":"a"}"#,
        r#"{"models":{"name":"a"}}"#,
        r#"{"x":{"models":[{"name":"a"}]}}"#,
        r#"{"Models":[{"name":"a"}]}"#,
    ] {
        let filtered = filter_listing(body.as_bytes(), "models", |_| false).unwrap();
        assert!(matches!(filtered, Cow::Borrowed(b) if b == body.as_bytes()), "{body}");
    }
    assert_eq!(filter_listing(b"[]", "models", |_| false), Err(JsonError::NotAnObject));
    assert_eq!(filter_listing(b"{\"models\":[}", "models", |_| false), Err(JsonError::Syntax { at: 11 }));
    // Every array of that name is filtered, should the name repeat.
    let body = br#"{"models":[{"name":"a"},{"name":"b"}],"n":1,"models":[{"name":"b"},{"name":"a"}]}"#;
    let filtered = filter_listing(body, "models", keep_names(&["a"])).unwrap();
    assert_eq!(filtered.as_ref(), br#"{"models":[{"name":"a"}],"n":1,"models":[{"name":"a"}]}"#);
}

#[test]
fn a_20_mb_image_scans_fast() {
    let image: String =
        (0..20_000_000u32).map(|i| b"ABCDEFGHabcdefgh01234567+/xyzXYZ"[(i % 32) as usize] as char).collect();
    let body = format!(r#"{{"model":"llava","prompt":"what is this?","images":["{image}"],"stream":false}}"#);
    let start = Instant::now();
    let found = top_level_members(body.as_bytes()).unwrap();
    let elapsed = start.elapsed();
    println!("20 MB body with one base64 image scanned in {elapsed:?}");
    assert_eq!(found.len(), 4);
    assert!(elapsed.as_millis() < 500, "{elapsed:?}");
    // Text above U+007F takes the UTF-8 check as well.
    let prompt = "日本語のテキスト、ü and ASCII. ".repeat(20_000_000 / 48);
    let body = format!(r#"{{"prompt":"{prompt}","model":"m"}}"#);
    let start = Instant::now();
    let found = top_level_members(body.as_bytes()).unwrap();
    let elapsed = start.elapsed();
    println!("20 MB body with a non-ASCII prompt scanned in {elapsed:?}");
    assert_eq!(found[1].name, "model");
    assert!(elapsed.as_millis() < 500, "{elapsed:?}");
}

#[test]
fn filtering_200_entries_is_fast() {
    let entry = |i: usize| {
        format!(
            r#"{{"name":"model-{i}:latest","model":"model-{i}:latest","modified_at":"2025-05-01T10:00:00.000000000Z","size":4683087332,"digest":"a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72","details":{{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"8.0B","quantization_level":"Q4_K_M"}}}}"#
        )
    };
    let body = format!(r#"{{"models":[{}]}}"#, (0..200).map(entry).collect::<Vec<_>>().join(","));
    let keep = |entry: &Entry<'_>| entry.string("name").is_some_and(|name| name.len() % 2 == 0);
    let _warm = filter_listing(body.as_bytes(), "models", keep).unwrap();
    let runs = 20;
    let start = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(filter_listing(std::hint::black_box(body.as_bytes()), "models", keep).unwrap());
    }
    let each = start.elapsed() / runs;
    println!("200-entry listing ({} bytes) filtered in {each:?}", body.len());
    let filtered = filter_listing(body.as_bytes(), "models", keep).unwrap();
    assert_eq!(validate(&filtered), Ok(ValueKind::Object));
    assert!(each.as_millis() < 10, "{each:?}");
}

#[test]
fn plain_text_skipping_stops_at_every_stopper() {
    let text = b"abcdefghijklmnopqrstuvwxyz\xc3\xa9\x7f0123456789";
    let non_ascii_at = 26;
    assert_eq!(skip_plain_text(text, 0), (text.len(), true));
    assert_eq!(skip_plain_text(text, non_ascii_at + 2), (text.len(), false));
    for at in 0..text.len() {
        for stopper in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            let mut changed = text.to_vec();
            changed[at] = stopper;
            for from in 0..=at {
                let non_ascii_before = (from..at).any(|i| changed[i] >= 0x80);
                assert_eq!(skip_plain_text(&changed, from), (at, non_ascii_before), "{at} {from}");
            }
        }
    }
}
