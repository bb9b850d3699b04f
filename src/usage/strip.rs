//! [`UsageStripper`]: takes what asking for usage added back out of a `/v1` event stream.

use super::kind::*;
use crate::json::{self, ValueKind};

/// Takes out of a streamed `/v1/chat/completions` or `/v1/completions` answer what asking for
/// `stream_options.include_usage` added to it (see the module's notes): the event whose JSON
/// has `"choices":[]` and a `usage` object, and the top-level `usage` member of every other
/// chunk. Bytes in, bytes out: it holds back at most the event being received, and passes each
/// on as soon as its blank line arrives (Ollama writes an event in one piece).
///
/// An event longer than [`MAX_HELD_EVENT`] is passed on unchanged as it comes (counted in
/// [`Self::oversized_events`]); rewriting resumes with the next event.
#[derive(Clone, Debug)]
pub struct UsageStripper {
    pub(super) held: Vec<u8>,
    /// The current event outgrew the limit and is being passed through.
    pub(super) passing: bool,
    /// The last byte ended a line (true at the start: a blank line there ends an empty event).
    pub(super) line_start: bool,
    /// The last byte was a CR: a LF now is the rest of that line end.
    pub(super) after_cr: bool,
    /// An event ended with a CR; a LF may follow that belongs to it.
    pub(super) end_pending: bool,
    pub(super) removed_events: u64,
    pub(super) removed_members: u64,
    pub(super) oversized_events: u64,
}

impl Default for UsageStripper {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageStripper {
    pub fn new() -> Self {
        UsageStripper {
            held: Vec::new(),
            passing: false,
            line_start: true,
            after_cr: false,
            end_pending: false,
            removed_events: 0,
            removed_members: 0,
            oversized_events: 0,
        }
    }

    /// Rewrites the next bytes of the answer, appending what can go to the client to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            if self.end_pending {
                self.end_pending = false;
                self.after_cr = false;
                if input[i] == b'\n' {
                    self.take(b"\n", out);
                    i += 1;
                }
                self.end_event(out);
                continue;
            }
            let rest = &input[i..];
            let Some(at) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.take(rest, out);
                self.line_start = false;
                self.after_cr = false;
                return;
            };
            if at > 0 {
                self.take(&rest[..at], out);
                self.line_start = false;
                self.after_cr = false;
            }
            let b = rest[at];
            i += at + 1;
            self.take(&[b], out);
            if b == b'\n' && self.after_cr {
                // The LF of a CRLF: that line end was counted at its CR.
                self.after_cr = false;
                continue;
            }
            let blank_line = self.line_start;
            self.line_start = true;
            self.after_cr = b == b'\r';
            if blank_line {
                if b == b'\r' {
                    self.end_pending = true;
                } else {
                    self.end_event(out);
                }
            }
        }
    }

    /// The answer has ended: passes on what is held. An event left without its blank line is
    /// passed on unchanged.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.end_pending {
            self.end_pending = false;
            self.end_event(out);
        }
        out.append(&mut self.held);
        self.passing = false;
    }

    /// Bytes held back, waiting for the end of their event.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Usage events removed (one per answer that asked).
    pub fn removed_events(&self) -> u64 {
        self.removed_events
    }

    /// `usage` members removed from chunks.
    pub fn removed_members(&self) -> u64 {
        self.removed_members
    }

    /// Events passed on unchanged because they were longer than [`MAX_HELD_EVENT`].
    pub fn oversized_events(&self) -> u64 {
        self.oversized_events
    }

    pub(super) fn take(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.passing {
            out.extend_from_slice(bytes);
        } else if self.held.len() + bytes.len() > MAX_HELD_EVENT {
            self.oversized_events += 1;
            self.passing = true;
            out.append(&mut self.held);
            out.extend_from_slice(bytes);
        } else {
            self.held.extend_from_slice(bytes);
        }
    }

    pub(super) fn end_event(&mut self, out: &mut Vec<u8>) {
        if self.passing {
            self.passing = false;
            return;
        }
        match strip_event(&self.held) {
            Stripped::Unchanged => out.extend_from_slice(&self.held),
            Stripped::Dropped => self.removed_events += 1,
            Stripped::Edited { data: range, member } => {
                out.extend_from_slice(&self.held[..range.start + member.start]);
                out.extend_from_slice(&self.held[range.start + member.end..]);
                self.removed_members += 1;
            }
        }
        self.held.clear();
    }
}

pub(super) enum Stripped {
    Unchanged,
    Dropped,
    /// Remove `member` (relative to `data`, the data line's JSON) from the event.
    Edited {
        data: std::ops::Range<usize>,
        member: std::ops::Range<usize>,
    },
}

/// Decides what to take out of one whole event (blank line included).
pub(super) fn strip_event(event: &[u8]) -> Stripped {
    // The one data line's value.
    let mut data = None;
    let mut start = 0;
    while start < event.len() {
        let line_end = event[start..].iter().position(|&b| b == b'\n' || b == b'\r').map_or(event.len(), |p| start + p);
        let line = &event[start..line_end];
        if let Some(value) = line.strip_prefix(b"data") {
            if value.is_empty() || value[0] == b':' {
                if data.is_some() {
                    return Stripped::Unchanged;
                }
                let skip = match value {
                    [b':', b' ', ..] => 6,
                    [b':', ..] => 5,
                    _ => 4,
                };
                data = Some(start + skip..line_end);
            }
        }
        start = line_end + 1;
        if event.get(line_end) == Some(&b'\r') && event.get(line_end + 1) == Some(&b'\n') {
            start += 1;
        }
    }
    let Some(data) = data else { return Stripped::Unchanged };
    let json = &event[data.clone()];
    let mut usage = None;
    let mut usages = 0;
    let mut choices_empty = None;
    let mut previous_end = None;
    let result = json::for_each_top_level_member(json, |member| {
        match &*member.name {
            "usage" => {
                usages += 1;
                usage = Some((member.kind, previous_end, member.value.clone()));
            }
            "choices" => {
                let text = &json[member.value.clone()];
                choices_empty = Some(
                    member.kind == ValueKind::Array
                        && text.iter().all(|b| matches!(b, b'[' | b']' | b' ' | b'\t' | b'\n' | b'\r')),
                );
            }
            _ => {}
        }
        previous_end = Some(member.value.end);
    });
    if result.is_err() || usages != 1 {
        return Stripped::Unchanged;
    }
    let Some((kind, previous_end, value)) = usage else { return Stripped::Unchanged };
    if kind == ValueKind::Object && choices_empty == Some(true) {
        return Stripped::Dropped;
    }
    if !matches!(kind, ValueKind::Object | ValueKind::Null) {
        return Stripped::Unchanged;
    }
    let member = match previous_end {
        // `,"usage":...`: from the end of the member before to the end of this one.
        Some(previous_end) => previous_end..value.end,
        None => {
            // The first member: from its name to the next member's name, or to the end of its
            // value if it is the only one.
            let name_start = skip_white_space(json, json.iter().position(|&b| b == b'{').unwrap_or(0) + 1);
            let after = skip_white_space(json, value.end);
            if json.get(after) == Some(&b',') {
                name_start..skip_white_space(json, after + 1)
            } else {
                name_start..value.end
            }
        }
    };
    Stripped::Edited { data, member }
}

fn skip_white_space(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}
