//! The request side: `stream_options.include_usage` added to a streamed `/v1` body.

use crate::json::{self, ValueKind};

/// The request side of the rewrite: `body` with `"stream_options":{"include_usage":true}`
/// added before its final `}`, when Ollama (Go's `encoding/json`: member names compared without
/// case, the last duplicate wins, a `null` leaves a bool as it was and sets a pointer to nil, a
/// second object merges into the first) would read it as a streamed request that did not ask
/// for usage. `None` when nothing should change: not a JSON object, not streamed, usage already
/// asked for, or a member of a type Go would refuse (the request fails either way).
///
/// The added member comes last, so Go applies it over any `stream_options` before it: a
/// `null` one gets a new object, an existing one gets `include_usage` set in it. Every other
/// byte stays as it was.
pub fn add_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    include_usage_rewrite(body).ok().flatten()
}

/// [`add_include_usage`], telling a body that is not one JSON object (invalid, or followed by
/// more than white space) from one that needs no change: Ollama reads the first value and
/// ignores what follows, so such a body would go through unchanged, streamed without its
/// counts. The glue refuses it (400) where usage is counted.
pub fn include_usage_rewrite(body: &[u8]) -> Result<Option<Vec<u8>>, json::JsonError> {
    let mut stream = false;
    // `None`: a nil *StreamOptions; `Some(b)`: its IncludeUsage.
    let mut include_usage: Option<bool> = None;
    let mut refused = false;
    json::for_each_top_level_member(body, |member| {
        if json::go_name_matches(&member.name, "stream") {
            match member.kind {
                ValueKind::True => stream = true,
                ValueKind::False => stream = false,
                ValueKind::Null => {}
                _ => refused = true,
            }
        } else if json::go_name_matches(&member.name, "stream_options") {
            match member.kind {
                ValueKind::Null => include_usage = None,
                ValueKind::Object => {
                    let mut current = include_usage.unwrap_or(false);
                    let options = &body[member.value.clone()];
                    let scanned = json::for_each_top_level_member(options, |option| {
                        if json::go_name_matches(&option.name, "include_usage") {
                            match option.kind {
                                ValueKind::True => current = true,
                                ValueKind::False => current = false,
                                ValueKind::Null => {}
                                _ => refused = true,
                            }
                        }
                    });
                    refused |= scanned.is_err();
                    include_usage = Some(current);
                }
                _ => refused = true,
            }
        }
    })?;
    if refused || !stream || include_usage == Some(true) {
        return Ok(None);
    }
    // There is a `stream` member, so the object is not empty and the comma is right.
    let Some(close) = body.iter().rposition(|&b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) else {
        return Ok(None);
    };
    debug_assert_eq!(body[close], b'}');
    const MEMBER: &[u8] = br#","stream_options":{"include_usage":true}"#;
    let mut out = Vec::with_capacity(body.len() + MEMBER.len());
    out.extend_from_slice(&body[..close]);
    out.extend_from_slice(MEMBER);
    out.extend_from_slice(&body[close..]);
    Ok(Some(out))
}
