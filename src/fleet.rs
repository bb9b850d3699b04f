//! Several Ollama servers behind one gate (a "fleet"): the model a request names, normalized as
//! Ollama normalizes it; the members' poll answers (`/api/tags`, `/api/ps`) read into bounded
//! model sets; and the choice of a member for a request. Plain Rust: the nginx glue (the
//! directive, the poller on nginx's event loop, the shared zone, the variables) is in the
//! module's `fleet` folder.

use std::borrow::Cow;
use std::hash::Hasher;

use siphasher::sip::SipHasher13;

use crate::json::{for_each_top_level_member, go_name_matches, push_string_content, string_value, JsonError};
use crate::listing::filter_listing;
use crate::models::{ModelName, DEFAULT_HOST, DEFAULT_NAMESPACE};
use crate::policy::{classify, Listing, Method};

/// At most this many models are kept from one member's answer; the rest are ignored (and the
/// answer counted as truncated). A fleet member with more models than this is not a real one.
pub const MAX_MODELS_PER_MEMBER: usize = 1024;

/// The name Ollama shows for a model (`DisplayShortest`): `gemma3:latest` for
/// `registry.ollama.ai/library/gemma3:latest`, `ns/m:tag` for another namespace of the default
/// host, the whole name for another host. Lowercase, as [`ModelName`] is.
pub fn short_name(name: &ModelName) -> String {
    if name.host() == DEFAULT_HOST && name.namespace() == DEFAULT_NAMESPACE {
        format!("{}:{}", name.model(), name.tag())
    } else if name.host() == DEFAULT_HOST {
        format!("{}/{}:{}", name.namespace(), name.model(), name.tag())
    } else {
        name.to_string()
    }
}

/// `text` read as a model name and shown as Ollama shows it; `None` if Ollama would refuse it.
pub fn normalize(text: &str) -> Option<String> {
    plain_name(text).or_else(|| ModelName::parse(text).map(|name| short_name(&name)))
}

/// The common spelling, `model` or `model:tag` (no host, no namespace, no source suffix, no white
/// space), normalized without the full parse: lowercased, `:latest` added. `None` for any other
/// spelling, which the full parse reads.
fn plain_name(text: &str) -> Option<String> {
    let (model, tag) = match text.split_once(':') {
        Some((model, tag)) => (model, Some(tag)),
        None => (text, None),
    };
    let part_ok = |part: &str| {
        let bytes = part.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 80
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    if !part_ok(model) || !tag.is_none_or(part_ok) {
        return None;
    }
    // `cloud`, `local` and `…-cloud` are source suffixes, not tags: the full parse says what they mean.
    if let Some(tag) = tag {
        let lower = tag.to_ascii_lowercase();
        if lower == "cloud" || lower == "local" || lower.ends_with("-cloud") {
            return None;
        }
    }
    let mut out = String::with_capacity(text.len() + 7);
    out.push_str(text);
    if tag.is_none() {
        out.push_str(":latest");
    }
    out.make_ascii_lowercase();
    Some(out)
}

/// The model a request names, normalized (see [`normalize`]): from the path
/// (`GET /v1/models/<model>`) or from the JSON body's member that the endpoint reads (for
/// `/api/show`, `/api/pull` and the like `model`, else `name`; for `/api/copy` the `source`).
/// A member is matched as Go's `encoding/json` matches it, the last duplicate winning. `None`
/// for an endpoint that names no model, a body that is not one JSON object, or a name Ollama
/// would refuse. `body` is `None` when it was not read.
pub fn request_model(method: Method, path: &[u8], body: Option<&[u8]>) -> Option<String> {
    let endpoint = classify(method, path);
    if let Some(text) = endpoint.path_model {
        return normalize(std::str::from_utf8(text).ok()?);
    }
    if endpoint.model_members.is_empty() {
        return None;
    }
    body_model(body?, endpoint.model_members)
}

/// The first of `members` (in that order of preference) that the body gives as a non-empty
/// string, normalized.
pub fn body_model(body: &[u8], members: &[&str]) -> Option<String> {
    // No endpoint reads more than three members for its model.
    let mut found: [Option<Cow<'_, str>>; 3] = [None, None, None];
    for_each_top_level_member(body, |member| {
        if let Some(at) = members.iter().take(3).position(|field| go_name_matches(&member.name, field)) {
            // Go keeps the last value; a non-string value fails Ollama's decoding of the body,
            // and here it simply names nothing.
            found[at] = string_value(body, &member);
        }
    })
    .ok()?;
    let text = found.into_iter().flatten().find(|text| !text.is_empty())?;
    normalize(&text)
}

/// A model name as a 64-bit key, for the fleet's shared model sets (a sorted array of keys per
/// member). The key is fixed, so every worker and every reload agrees.
pub fn model_key(normalized: &str) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(0x6f6c_6c61_6d61_2d66, 0x6c65_6574_2d6b_6579);
    hasher.write(normalized.as_bytes());
    hasher.finish()
}

/// What a member's poll answer (`/api/tags` or `/api/ps`) says: the models, normalized and
/// deduplicated as keys, sorted; and whether some were left out for [`MAX_MODELS_PER_MEMBER`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolledModels {
    pub keys: Vec<u64>,
    pub names: Vec<String>,
    pub truncated: bool,
}

impl PolledModels {
    pub fn contains(&self, key: u64) -> bool {
        self.keys.binary_search(&key).is_ok()
    }
}

/// Why a poll answer was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollError {
    Json(JsonError),
    /// No `models` array: not an Ollama listing.
    NoModels,
    /// Not an HTTP answer this reads (no header end, a bad status line, a bad chunk).
    Http(&'static str),
    /// An HTTP status other than 200.
    Status(u16),
}

impl std::fmt::Display for PollError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollError::Json(error) => write!(f, "not JSON: {error}"),
            PollError::NoModels => f.write_str("no \"models\" array"),
            PollError::Http(what) => write!(f, "not an HTTP answer: {what}"),
            PollError::Status(status) => write!(f, "status {status}"),
        }
    }
}

/// Reads a `/api/tags` or `/api/ps` answer: each element's `model` (else `name`), normalized;
/// elements without a valid name are skipped. The caller bounds the answer's size; this keeps
/// at most [`MAX_MODELS_PER_MEMBER`] names.
pub fn parse_models(body: &[u8]) -> Result<PolledModels, PollError> {
    let mut names: Vec<String> = Vec::new();
    let mut truncated = false;
    let mut saw_array = false;
    filter_listing(body, "models", |entry| {
        saw_array = true;
        if names.len() >= MAX_MODELS_PER_MEMBER {
            truncated = true;
            return true;
        }
        let text = entry.string("model").filter(|text| !text.is_empty()).or_else(|| entry.string("name"));
        if let Some(name) = text.as_deref().and_then(normalize) {
            names.push(name);
        }
        true
    })
    .map_err(PollError::Json)?;
    if !saw_array && !has_models_array(body) {
        return Err(PollError::NoModels);
    }
    names.sort();
    names.dedup();
    let mut keys: Vec<u64> = names.iter().map(|name| model_key(name)).collect();
    keys.sort_unstable();
    keys.dedup();
    Ok(PolledModels { keys, names, truncated })
}

/// A whole poll answer (status line, headers, body, as read until the member closed the
/// connection) read as a listing. The caller bounds its size.
pub fn parse_poll_answer(answer: &[u8]) -> Result<PolledModels, PollError> {
    parse_models(&http_body(answer)?)
}

/// The body of an HTTP/1.x answer with status 200: by `Content-Length`, or de-chunked, or up to
/// the end (the poll asks with HTTP/1.0 and reads until the member closes).
pub fn http_body(answer: &[u8]) -> Result<Cow<'_, [u8]>, PollError> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or(PollError::Http("no end of headers"))?;
    let head = &answer[..end];
    let body = &answer[end + 4..];
    let mut lines = head.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split(|&b| b == b' ');
    let version = words.next().unwrap_or_default();
    if !version.starts_with(b"HTTP/1.") {
        return Err(PollError::Http("bad status line"));
    }
    let status = words
        .next()
        .filter(|code| code.len() == 3 && code.iter().all(u8::is_ascii_digit))
        .map(|code| code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0')))
        .ok_or(PollError::Http("bad status code"))?;
    if status != 200 {
        return Err(PollError::Status(status));
    }
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let digits = std::str::from_utf8(value).ok().and_then(|text| text.parse::<usize>().ok());
            length = Some(digits.ok_or(PollError::Http("bad Content-Length"))?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value.eq_ignore_ascii_case(b"chunked");
        }
    }
    if chunked {
        return dechunk(body).map(Cow::Owned);
    }
    match length {
        Some(length) => body.get(..length).map(Cow::Borrowed).ok_or(PollError::Http("body shorter than its length")),
        None => Ok(Cow::Borrowed(body)),
    }
}

/// A chunked body's bytes (extensions and trailers ignored); never longer than its input.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, PollError> {
    let bad = PollError::Http("bad chunk");
    let mut out = Vec::with_capacity(rest.len());
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or(bad.clone())?;
        let size_text = rest[..line_end].split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        if size_text.is_empty() || size_text.len() > 8 {
            return Err(bad);
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_text).map_err(|_| bad.clone())?, 16)
            .map_err(|_| bad.clone())?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or(bad.clone())?;
        out.extend_from_slice(chunk);
        rest = rest.get(size..).and_then(|r| r.strip_prefix(b"\r\n")).ok_or(bad.clone())?;
    }
}

/// Whether the top-level object has a `models` member that is an array (an empty one included).
fn has_models_array(body: &[u8]) -> bool {
    let mut found = false;
    let _ = for_each_top_level_member(body, |member| {
        if member.name == "models" && member.kind == crate::json::ValueKind::Array {
            found = true;
        }
    });
    found
}

/// One member as the choice sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    /// Answering its polls (not marked down).
    pub up: bool,
    /// Its last `/api/tags` listed the model.
    pub has: bool,
    /// Its last `/api/ps` listed the model as loaded.
    pub loaded: bool,
    /// Requests the gate has in flight to it.
    pub busy: u32,
}

/// Picks the member for a request: among those up that have the model, one where it is loaded,
/// then the least busy; ties go round from `start` (a per-request counter), so equal members
/// share the load. `None` when no member that is up has the model.
pub fn choose(candidates: &[Candidate], start: usize) -> Option<usize> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    (0..n)
        .map(|offset| (start.wrapping_add(offset)) % n)
        .filter(|&i| candidates[i].up && candidates[i].has)
        .min_by_key(|&i| (!candidates[i].loaded, candidates[i].busy))
}

/// One member's state for the metrics.
pub struct MemberMetrics<'a> {
    pub fleet: &'a str,
    pub backend: &'a str,
    pub up: bool,
    pub in_flight: u32,
    pub requests: u64,
}

/// A family of the members' metrics: name, type, help, and the value of a member.
type MemberFamily = (&'static str, &'static str, &'static str, fn(&MemberMetrics<'_>) -> u64);

/// The fleets' members in Prometheus' text format: `ollama_auth_backend_up` and
/// `ollama_auth_backend_in_flight` (gauges) and `ollama_auth_backend_requests_total` (requests
/// routed to the member), labelled by fleet and backend, which the configuration bounds.
pub fn render_members(members: &[MemberMetrics<'_>]) -> Vec<u8> {
    use std::fmt::Write;
    if members.is_empty() {
        return Vec::new();
    }
    let families: [MemberFamily; 3] = [
        ("ollama_auth_backend_up", "gauge", "Whether the fleet member answers its polls.", |m| u64::from(m.up)),
        ("ollama_auth_backend_in_flight", "gauge", "Requests in flight to the fleet member.", |m| {
            u64::from(m.in_flight)
        }),
        ("ollama_auth_backend_requests_total", "counter", "Requests routed to the fleet member.", |m| m.requests),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in families {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for member in members {
            let (mut fleet, mut backend) = (Vec::new(), Vec::new());
            crate::metrics::push_label_value(&mut fleet, member.fleet);
            crate::metrics::push_label_value(&mut backend, member.backend);
            let (fleet, backend) = (String::from_utf8_lossy(&fleet), String::from_utf8_lossy(&backend));
            let _ = writeln!(out, "{name}{{fleet=\"{fleet}\",backend=\"{backend}\"}} {}", value(member));
        }
    }
    out.into_bytes()
}

/// The union of the members' listings as Ollama's listing of `listing`'s shape: the model names
/// given (as each member's poll listed them), each once, sorted. The module's listing filter
/// still cuts it down to a key's models, as it cuts Ollama's own.
pub fn union_listing<'n>(listing: Listing, names: impl IntoIterator<Item = &'n str>) -> Vec<u8> {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_unstable();
    names.dedup();
    let mut body = Vec::with_capacity(names.len() * 64 + 32);
    let v1 = listing == Listing::V1Models;
    body.extend_from_slice(if v1 { b"{\"object\":\"list\",\"data\":[" } else { b"{\"models\":[" });
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let string = |body: &mut Vec<u8>, text: &str| {
            body.push(b'"');
            push_string_content(body, text);
            body.push(b'"');
        };
        if v1 {
            body.extend_from_slice(b"{\"id\":");
            string(&mut body, name);
            body.extend_from_slice(b",\"object\":\"model\",\"created\":0,\"owned_by\":");
            string(&mut body, name.split_once('/').map_or("library", |(owner, _)| owner));
        } else {
            body.extend_from_slice(b"{\"name\":");
            string(&mut body, name);
            body.extend_from_slice(b",\"model\":");
            string(&mut body, name);
        }
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_render_as_bounded_series() {
        let members = [
            MemberMetrics { fleet: "gpu", backend: "box-a", up: true, in_flight: 2, requests: 40 },
            MemberMetrics { fleet: "gpu", backend: "10.0.0.2:11434", up: false, in_flight: 0, requests: 7 },
        ];
        let text = String::from_utf8(render_members(&members)).unwrap();
        for line in [
            "# TYPE ollama_auth_backend_up gauge\n",
            "ollama_auth_backend_up{fleet=\"gpu\",backend=\"box-a\"} 1\n",
            "ollama_auth_backend_up{fleet=\"gpu\",backend=\"10.0.0.2:11434\"} 0\n",
            "ollama_auth_backend_in_flight{fleet=\"gpu\",backend=\"box-a\"} 2\n",
            "# TYPE ollama_auth_backend_requests_total counter\n",
            "ollama_auth_backend_requests_total{fleet=\"gpu\",backend=\"10.0.0.2:11434\"} 7\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(render_members(&[]).is_empty());
    }

    #[test]
    fn short_names_are_as_ollama_shows_them() {
        assert_eq!(normalize("gemma3").as_deref(), Some("gemma3:latest"));
        assert_eq!(normalize("Gemma3:4B").as_deref(), Some("gemma3:4b"));
        assert_eq!(normalize("library/gemma3").as_deref(), Some("gemma3:latest"));
        assert_eq!(normalize("registry.ollama.ai/library/gemma3:1b").as_deref(), Some("gemma3:1b"));
        assert_eq!(normalize("jmorgan/m").as_deref(), Some("jmorgan/m:latest"));
        assert_eq!(normalize("hf.co/Org/Model:Q4").as_deref(), Some("hf.co/org/model:q4"));
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("bad name"), None);
    }

    #[test]
    fn the_plain_spelling_is_normalized_as_the_full_parse_does() {
        let names = [
            "gemma3",
            "Gemma3:4B",
            "qwen2.5-coder:7b",
            "_x",
            "a.b-c_d:Q4_K_M",
            "x:cloud",
            "x:Local",
            "x:20b-cloud",
            "-x",
            "x:",
            ":x",
            "x:y:z",
            "x/y",
            "a b",
            " x",
            "x.",
            "é",
            "x:-y",
            "x:.y",
            "x:_y",
        ];
        for text in names {
            let full = ModelName::parse(text).map(|name| short_name(&name));
            assert_eq!(normalize(text), full, "{text:?}");
            if let Some(fast) = plain_name(text) {
                assert_eq!(Some(fast), full, "{text:?}");
            }
        }
        let long = "m".repeat(81);
        assert_eq!(normalize(&long), None);
    }

    #[test]
    fn the_request_model_comes_from_the_body_or_the_path() {
        let chat = br#"{"model":"Llama3","messages":[]}"#;
        assert_eq!(request_model(Method::Post, b"/api/chat", Some(chat)).as_deref(), Some("llama3:latest"));
        assert_eq!(request_model(Method::Post, b"/v1/chat/completions", Some(chat)).as_deref(), Some("llama3:latest"));
        assert_eq!(request_model(Method::Get, b"/v1/models/Qwen3:8B", None).as_deref(), Some("qwen3:8b"));
        // Not read, or not an endpoint that names a model.
        assert_eq!(request_model(Method::Post, b"/api/chat", None), None);
        assert_eq!(request_model(Method::Get, b"/api/tags", None), None);
        assert_eq!(request_model(Method::Get, b"/api/chat", Some(chat)), None);
        // The last duplicate wins, names are matched as Go matches them.
        let twice = br#"{"model":"a","MODEL":"b"}"#;
        assert_eq!(request_model(Method::Post, b"/api/generate", Some(twice)).as_deref(), Some("b:latest"));
        // /api/show reads `model`, else `name`.
        let show = br#"{"name":"phi4"}"#;
        assert_eq!(request_model(Method::Post, b"/api/show", Some(show)).as_deref(), Some("phi4:latest"));
        let both = br#"{"name":"phi4","model":"mistral"}"#;
        assert_eq!(request_model(Method::Post, b"/api/show", Some(both)).as_deref(), Some("mistral:latest"));
        assert_eq!(
            request_model(Method::Post, b"/api/copy", Some(br#"{"source":"x","destination":"y"}"#)).as_deref(),
            Some("x:latest")
        );
        // Malformed bodies, empty or non-string models, invalid names name nothing.
        for body in [&b"{"[..], b"[]", br#"{"model":""}"#, br#"{"model":3}"#, br#"{"model":"a b"}"#, b"{} x"] {
            assert_eq!(request_model(Method::Post, b"/api/chat", Some(body)), None, "{body:?}");
        }
    }

    #[test]
    fn poll_answers_are_read_into_sorted_deduplicated_keys() {
        let tags = br#"{"models":[{"name":"gemma3:latest","model":"gemma3:latest","size":1},
            {"name":"Qwen3","model":"qwen3:latest"},{"name":"x","model":"bad name"},{"model":"Gemma3"},
            {"other":1}, 7]}"#;
        let polled = parse_models(tags).unwrap();
        assert_eq!(polled.names, ["gemma3:latest", "qwen3:latest"]);
        assert!(polled.contains(model_key("gemma3:latest")));
        assert!(polled.contains(model_key("qwen3:latest")));
        assert!(!polled.contains(model_key("llama3:latest")));
        assert!(!polled.truncated);
        assert_eq!(parse_models(br#"{"models":[]}"#).unwrap(), PolledModels::default());
        assert_eq!(parse_models(br#"{"models":null}"#), Err(PollError::NoModels));
        assert_eq!(parse_models(br#"{"error":"x"}"#), Err(PollError::NoModels));
        assert!(matches!(parse_models(br#"{"models":[{"#), Err(PollError::Json(_))));
        assert!(matches!(parse_models(b"<html>"), Err(PollError::Json(_))));
    }

    #[test]
    fn a_huge_listing_is_cut_at_the_bound() {
        let entries: Vec<String> = (0..MAX_MODELS_PER_MEMBER + 10).map(|i| format!(r#"{{"model":"m{i}"}}"#)).collect();
        let body = format!(r#"{{"models":[{}]}}"#, entries.join(","));
        let polled = parse_models(body.as_bytes()).unwrap();
        assert_eq!(polled.keys.len(), MAX_MODELS_PER_MEMBER);
        assert!(polled.truncated);
    }

    #[test]
    fn poll_answers_are_read_from_http() {
        let body = r#"{"models":[{"model":"gemma3:latest"}]}"#;
        let plain = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(parse_poll_answer(plain.as_bytes()).unwrap().names, ["gemma3:latest"]);
        let no_length = format!("HTTP/1.0 200 OK\r\n\r\n{body}");
        assert_eq!(parse_poll_answer(no_length.as_bytes()).unwrap().names, ["gemma3:latest"]);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            &body[..5],
            body.len() - 5,
            &body[5..]
        );
        assert_eq!(parse_poll_answer(chunked.as_bytes()).unwrap().names, ["gemma3:latest"]);
        assert_eq!(parse_poll_answer(b"HTTP/1.1 500 Oops\r\n\r\n{}"), Err(PollError::Status(500)));
        for bad in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\nab",
        ] {
            assert!(matches!(parse_poll_answer(bad), Err(PollError::Http(_))), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// `make bench`: what one poll of three members with 200 models each costs the worker that
    /// polls (both answers read, keys sorted), without the network.
    #[test]
    #[ignore]
    fn measure_fleet_poll_of_3_members_200_models() {
        let entries: Vec<String> = (0..200)
            .map(|i| format!(r#"{{"name":"model-{i}:latest","model":"model-{i}:latest","size":815319791,"digest":"e0a42594d802","details":{{"family":"x"}}}}"#))
            .collect();
        let body = format!(r#"{{"models":[{}]}}"#, entries.join(","));
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let ps = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"models\":[]}";
        let rounds = 200;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            for _ in 0..3 {
                assert_eq!(parse_poll_answer(answer.as_bytes()).unwrap().keys.len(), 200);
                assert!(parse_poll_answer(ps.as_bytes()).unwrap().keys.is_empty());
            }
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
        println!("MEASURE fleet_poll_of_3_members_200_models_each {ms:.4}");
    }

    fn member(up: bool, has: bool, loaded: bool, busy: u32) -> Candidate {
        Candidate { up, has, loaded, busy }
    }

    #[test]
    fn the_choice_prefers_loaded_then_least_busy_and_skips_down_members() {
        let members = [member(true, true, false, 0), member(true, true, true, 5), member(true, false, true, 0)];
        assert_eq!(choose(&members, 0), Some(1), "loaded wins over idle");
        let cold = [member(true, true, false, 3), member(true, true, false, 1)];
        assert_eq!(choose(&cold, 0), Some(1), "both cold: the less busy");
        let down = [member(false, true, true, 0), member(true, true, false, 9)];
        assert_eq!(choose(&down, 0), Some(1), "a member marked down is skipped");
        assert_eq!(choose(&[member(false, true, true, 0), member(true, false, false, 0)], 0), None);
        assert_eq!(choose(&[], 0), None);
        let equal = [member(true, true, false, 0), member(true, true, false, 0), member(true, true, false, 0)];
        let picks: Vec<_> = (0..3).map(|start| choose(&equal, start).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2], "ties go round");
    }

    #[test]
    fn a_union_listing_is_each_model_once_in_the_shape_asked() {
        let names = ["qwen3:8b", "gemma3:latest", "qwen3:8b", "me/tuned:1"];
        let tags = union_listing(Listing::Tags, names);
        assert_eq!(
            String::from_utf8(tags).unwrap(),
            r#"{"models":[{"name":"gemma3:latest","model":"gemma3:latest"},{"name":"me/tuned:1","model":"me/tuned:1"},{"name":"qwen3:8b","model":"qwen3:8b"}]}"#
        );
        let v1 = String::from_utf8(union_listing(Listing::V1Models, ["me/tuned:1", "gemma3:latest"])).unwrap();
        assert_eq!(
            v1,
            r#"{"object":"list","data":[{"id":"gemma3:latest","object":"model","created":0,"owned_by":"library"},{"id":"me/tuned:1","object":"model","created":0,"owned_by":"me"}]}"#
        );
        assert_eq!(union_listing(Listing::Ps, []), br#"{"models":[]}"#);
        let odd = String::from_utf8(union_listing(Listing::Tags, ["a\"b"])).unwrap();
        assert_eq!(odd, r#"{"models":[{"name":"a\"b","model":"a\"b"}]}"#);
    }
}
