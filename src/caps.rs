//! Caps on what one request may ask of the GPU: the context size (`num_ctx`), the answer's
//! length (`num_predict`, and what each `/v1` dialect turns into it), and how long the model
//! stays loaded (`keep_alive`). A value over a cap is rewritten to the cap ("clamp, don't
//! refuse"); a `keep_alive` that would unload the model is for keys with the `manage` scope.
//!
//! What counts is what Ollama 0.33 finally reads (`api/types.go`, `openai/*.go`,
//! `anthropic/anthropic.go`): top-level members matched as Go's `encoding/json` matches them
//! (case-insensitive, escaped, every duplicate applied in turn, so the last wins; a second
//! `options` object merges into the first, a `null` one empties it), the keys inside `options`
//! exactly (Ollama fills its options from a map by exact name). The rewrite makes every
//! occurrence that Go would apply lie within the caps, so whichever one wins does too; every
//! other byte of the body stays as it was.

use std::fmt;
use std::ops::Range;

use crate::endpoints::CapTarget;
use crate::json::{for_each_top_level_member, go_name_matches, string_value, JsonError, ValueKind};

/// A `keep_alive` shorter than this unloads the model as surely as `0` does (Ollama drops an
/// idle model once its keep-alive has passed): it is an unload, for `manage` keys only.
const UNLOAD_BELOW_NANOS: i128 = 1_000_000_000;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// The longest `keep_alive` a cap may name: a year.
const MAX_KEEP_ALIVE_SECONDS: u64 = 366 * 86_400;

/// The largest `num_ctx` or answer length a cap may name: Ollama reads them into a Go `int`.
const MAX_CAP: u64 = i32::MAX as u64;

/// The range a `keep_alive` is moved into, in whole seconds; either end may be open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepAliveRange {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

/// The caps of a location (`ollama_auth_caps`) or of one entry (its `num_ctx=`, `num_predict=`,
/// `keep_alive=` options). `None` is no cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub num_ctx: Option<u64>,
    pub num_predict: Option<u64>,
    pub keep_alive: Option<KeepAliveRange>,
}

/// The names of the caps, as the directive and the entry options spell them.
pub const CAP_NAMES: [&str; 3] = ["num_ctx", "num_predict", "keep_alive"];

impl Caps {
    pub fn is_empty(&self) -> bool {
        *self == Caps::default()
    }

    /// Sets one cap from its `name=value` parts; the error is the reason, for the caller to
    /// name the option or directive. A name not in [`CAP_NAMES`] is an error too.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "num_ctx" => self.num_ctx = Some(parse_count(value)?),
            "num_predict" => self.num_predict = Some(parse_count(value)?),
            "keep_alive" => self.keep_alive = Some(parse_range(value)?),
            _ => return Err(format!("unknown cap \"{name}\" (known: num_ctx, num_predict, keep_alive)")),
        }
        Ok(())
    }

    /// The directive's arguments: `name=value` words, each cap at most once.
    pub fn parse_words<'w>(words: impl IntoIterator<Item = &'w str>) -> Result<Caps, String> {
        let mut caps = Caps::default();
        let mut seen = [false; CAP_NAMES.len()];
        for word in words {
            let Some((name, value)) = word.split_once('=') else {
                return Err(format!("\"{word}\" is not name=value"));
            };
            if let Some(index) = CAP_NAMES.iter().position(|known| *known == name) {
                if std::mem::replace(&mut seen[index], true) {
                    return Err(format!("\"{name}\" is repeated"));
                }
            }
            caps.set(name, value).map_err(|reason| format!("\"{word}\": {reason}"))?;
        }
        Ok(caps)
    }

    /// These caps over `base`: each cap set here replaces the one there (a key's own cap beats
    /// its location's, larger or smaller).
    pub fn over(&self, base: &Caps) -> Caps {
        Caps {
            num_ctx: self.num_ctx.or(base.num_ctx),
            num_predict: self.num_predict.or(base.num_predict),
            keep_alive: self.keep_alive.or(base.keep_alive),
        }
    }

    /// The caps as `name=value` words that [`Caps::set`] reads back to the same value.
    pub fn to_words(&self) -> Vec<String> {
        let mut words = Vec::new();
        if let Some(n) = self.num_ctx {
            words.push(format!("num_ctx={n}"));
        }
        if let Some(n) = self.num_predict {
            words.push(format!("num_predict={n}"));
        }
        if let Some(range) = self.keep_alive {
            words.push(format!("keep_alive={range}"));
        }
        words
    }

    /// Whether any of these caps can change or refuse a request to `target`: only then is its
    /// body read.
    pub fn apply_to(&self, target: CapTarget) -> bool {
        match target {
            CapTarget::Native { .. } => !self.is_empty(),
            _ => self.num_predict.is_some(),
        }
    }
}

/// `min..max`, `min..`, `..max`, or one duration (the maximum).
impl fmt::Display for KeepAliveRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |end: Option<u64>| end.map(format_seconds).unwrap_or_default();
        match (self.min, self.max) {
            (None, Some(max)) => f.write_str(&format_seconds(max)),
            (min, max) => write!(f, "{}..{}", text(min), text(max)),
        }
    }
}

fn parse_count(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a whole number".into());
    }
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) if n <= MAX_CAP => Ok(n),
        _ => Err(format!("at most {MAX_CAP}")),
    }
}

fn parse_range(text: &str) -> Result<KeepAliveRange, String> {
    let (min, max) = match text.split_once("..") {
        Some((min, max)) => (Some(min).filter(|t| !t.is_empty()), Some(max).filter(|t| !t.is_empty())),
        None => (None, Some(text)),
    };
    if min.is_none() && max.is_none() {
        return Err("needs a duration: 30m, 5m..30m, 5m.. or ..1h".into());
    }
    let range =
        KeepAliveRange { min: min.map(parse_cap_duration).transpose()?, max: max.map(parse_cap_duration).transpose()? };
    if let (Some(min), Some(max)) = (range.min, range.max) {
        if min > max {
            return Err("the shortest keep_alive is longer than the longest".into());
        }
    }
    Ok(range)
}

/// A cap's duration: a Go duration of whole seconds, at least one second (a shorter keep-alive
/// would unload the model), at most a year.
fn parse_cap_duration(text: &str) -> Result<u64, String> {
    let expected = || "not a duration such as 90s, 5m or 1h30m".to_string();
    let nanos = parse_go_duration(text.as_bytes()).ok_or_else(expected)?;
    if nanos < NANOS_PER_SECOND || nanos % NANOS_PER_SECOND != 0 {
        return Err("must be a whole number of seconds, at least 1s".into());
    }
    let seconds = (nanos / NANOS_PER_SECOND) as u64;
    if seconds > MAX_KEEP_ALIVE_SECONDS {
        return Err("longer than 366 days".into());
    }
    Ok(seconds)
}

/// Seconds as the shortest Go duration: `30m`, `1h30m`, `45s`.
pub fn format_seconds(seconds: u64) -> String {
    let (hours, minutes, rest) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    if rest > 0 || text.is_empty() {
        text.push_str(&format!("{rest}s"));
    }
    text
}

/// Go's `time.ParseDuration`, in nanoseconds (`None` where Go returns an error): an optional
/// sign, then one or more `<number><unit>`, or a bare `0`. Units `ns`, `us`, `µs`, `μs`, `ms`,
/// `s`, `m`, `h`; a fraction's part beyond the nanosecond is dropped as Go drops it.
pub fn parse_go_duration(text: &[u8]) -> Option<i128> {
    let (negative, mut rest) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == b"0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let whole_digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let whole = &rest[..whole_digits];
        rest = &rest[whole_digits..];
        let mut fraction: &[u8] = b"";
        if let Some(after_dot) = rest.strip_prefix(b".") {
            let digits = after_dot.iter().take_while(|b| b.is_ascii_digit()).count();
            fraction = &after_dot[..digits];
            rest = &after_dot[digits..];
        }
        if whole.is_empty() && fraction.is_empty() {
            return None; // no digits, as in ".s"
        }
        let unit_len = rest.iter().take_while(|&&b| b != b'.' && !b.is_ascii_digit()).count();
        let unit: i128 = match &rest[..unit_len] {
            b"ns" => 1,
            b"us" | [0xc2, 0xb5, b's'] | [0xce, 0xbc, b's'] => 1_000, // µs, μs
            b"ms" => 1_000_000,
            b"s" => NANOS_PER_SECOND,
            b"m" => 60 * NANOS_PER_SECOND,
            b"h" => 3600 * NANOS_PER_SECOND,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let mut value: i128 = 0;
        for &digit in whole {
            value = value * 10 + i128::from(digit - b'0');
            if value > i128::from(i64::MAX) {
                return None;
            }
        }
        value = value.checked_mul(unit).filter(|v| *v <= i128::from(i64::MAX))?;
        // As Go: the fraction's first digits, scaled, then truncated to whole nanoseconds.
        let (mut numerator, mut scale) = (0f64, 1f64);
        for &digit in fraction.iter().take(18) {
            numerator = numerator * 10.0 + f64::from(digit - b'0');
            scale *= 10.0;
        }
        value += (numerator * (unit as f64 / scale)) as i128;
        total += value;
        if total > i128::from(i64::MAX) {
            return None;
        }
    }
    Some(if negative { -total } else { total })
}

/// Why a body is refused rather than clamped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapRefusal {
    /// Not something Ollama would read (not one JSON object, a member of a type it refuses):
    /// 400, as Ollama would answer.
    BadRequest(String),
    /// The request would unload a model, and the key does not have `manage`: 403.
    Unload(String),
}

/// What the caps made of a body: the body to send instead (`None`: send it as it is), and
/// what was changed, as `name=value` items for the answer's header and the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Clamped {
    pub body: Option<Vec<u8>>,
    pub changed: Vec<String>,
}

impl Clamped {
    /// `num_ctx=8192, keep_alive=30m`: the `x-ollama-clamped` header's value.
    pub fn summary(&self) -> String {
        self.changed.join(", ")
    }
}

/// The edits to a body: values to replace, and members to add before its closing brace.
#[derive(Default)]
struct Edits {
    replace: Vec<(Range<usize>, Vec<u8>)>,
    append: Vec<u8>,
    changed: Vec<String>,
}

impl Edits {
    fn note(&mut self, item: String) {
        if !self.changed.contains(&item) {
            self.changed.push(item);
        }
    }

    fn apply(mut self, body: &[u8]) -> Clamped {
        if self.replace.is_empty() && self.append.is_empty() {
            return Clamped::default();
        }
        self.replace.sort_by_key(|(range, _)| range.start);
        let mut out = Vec::with_capacity(body.len() + self.append.len() + 16);
        let mut at = 0;
        for (range, text) in &self.replace {
            out.extend_from_slice(&body[at..range.start]);
            out.extend_from_slice(text);
            at = range.end;
        }
        if self.append.is_empty() {
            out.extend_from_slice(&body[at..]);
        } else {
            // The body was checked to be one object: its last non-blank byte is its `}`.
            let close = body.iter().rposition(|&b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')).unwrap_or(0);
            out.extend_from_slice(&body[at..close]);
            let empty =
                body[..close].iter().rev().find(|&&b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) == Some(&b'{');
            out.extend_from_slice(if empty { &self.append[1..] } else { &self.append });
            out.extend_from_slice(&body[close..]);
        }
        Clamped { body: Some(out), changed: self.changed }
    }
}

fn bad(message: impl Into<String>) -> CapRefusal {
    CapRefusal::BadRequest(message.into())
}

fn json_error(error: JsonError) -> CapRefusal {
    bad(format!("the body must be one JSON object: {error}"))
}

/// A JSON number's value, as Go's `float64` would hold it.
fn number(text: &[u8]) -> f64 {
    std::str::from_utf8(text).ok().and_then(|t| t.parse::<f64>().ok()).unwrap_or(f64::INFINITY)
}

/// Clamps `body` (to `target`) to `caps`. `may_unload`: the key has the `manage` scope.
pub fn apply_caps(body: &[u8], target: CapTarget, caps: &Caps, may_unload: bool) -> Result<Clamped, CapRefusal> {
    let mut edits = Edits::default();
    match target {
        CapTarget::Native { generates } => native(body, generates, caps, may_unload, &mut edits)?,
        CapTarget::OpenAiMaxTokens => answer_length(body, "max_tokens", true, caps, &mut edits)?,
        CapTarget::Responses => answer_length(body, "max_output_tokens", true, caps, &mut edits)?,
        CapTarget::Messages => answer_length(body, "max_tokens", false, caps, &mut edits)?,
    }
    Ok(edits.apply(body))
}

/// A `/v1` answer length: a top-level integer, every occurrence over the cap (or negative, which
/// asks for no limit) set to the cap; a missing or `null` one (no limit, where `missing_is_unlimited`)
/// added.
fn answer_length(
    body: &[u8],
    member: &str,
    missing_is_unlimited: bool,
    caps: &Caps,
    edits: &mut Edits,
) -> Result<(), CapRefusal> {
    let Some(cap) = caps.num_predict else {
        return Ok(());
    };
    let mut present = false;
    let mut wrong_type = false;
    for_each_top_level_member(body, |m| {
        if !go_name_matches(&m.name, member) {
            return;
        }
        match m.kind {
            ValueKind::Null => present = false,
            ValueKind::Number => {
                present = true;
                let value = number(&body[m.value.clone()]);
                if value > cap as f64 || value < 0.0 {
                    edits.replace.push((m.value.clone(), cap.to_string().into_bytes()));
                    edits.note(format!("{member}={cap}"));
                }
            }
            _ => wrong_type = true,
        }
    })
    .map_err(json_error)?;
    if wrong_type {
        return Err(bad(format!("\"{member}\" must be a number")));
    }
    if !present && missing_is_unlimited {
        edits.append.extend_from_slice(format!(",\"{member}\":{cap}").as_bytes());
        edits.note(format!("{member}={cap}"));
    }
    Ok(())
}

/// What a native body's `options` and `keep_alive` come to, occurrence by occurrence.
#[derive(Default)]
struct NativeScan {
    /// Ollama will read a `num_predict` (the merged map holds a non-null one).
    num_predict_present: bool,
    /// The `keep_alive` Ollama keeps: the last one, `None` for missing or `null`.
    keep_alive: Option<KeepAlive>,
    error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeepAlive {
    Forever,
    Nanos(i128),
}

impl KeepAlive {
    fn unloads(self) -> bool {
        matches!(self, KeepAlive::Nanos(nanos) if nanos < UNLOAD_BELOW_NANOS)
    }

    /// The end of `range` this lies beyond, if any.
    fn outside(self, range: KeepAliveRange) -> Option<u64> {
        let nanos = |seconds: u64| i128::from(seconds) * NANOS_PER_SECOND;
        match self {
            KeepAlive::Forever => range.max,
            KeepAlive::Nanos(n) => match (range.min, range.max) {
                (Some(min), _) if n < nanos(min) => Some(min),
                (_, Some(max)) if n > nanos(max) => Some(max),
                _ => None,
            },
        }
    }
}

/// A `keep_alive` value as Ollama's `Duration.UnmarshalJSON` reads it: a number of seconds or a
/// Go duration string, negative for forever. `None`: Ollama refuses it.
fn keep_alive_value(body: &[u8], member: &crate::json::Member<'_>) -> Option<KeepAlive> {
    let nanos = match member.kind {
        ValueKind::Number => {
            let seconds = number(&body[member.value.clone()]);
            if seconds < 0.0 {
                return Some(KeepAlive::Forever);
            }
            let nanos = seconds * 1e9;
            // Go converts a float beyond int64 to an undefined duration: no finite keep-alive.
            if nanos >= i64::MAX as f64 {
                return Some(KeepAlive::Forever);
            }
            nanos as i128
        }
        ValueKind::String => parse_go_duration(string_value(body, member)?.as_bytes())?,
        _ => return None,
    };
    Some(if nanos < 0 { KeepAlive::Forever } else { KeepAlive::Nanos(nanos) })
}

fn native(body: &[u8], generates: bool, caps: &Caps, may_unload: bool, edits: &mut Edits) -> Result<(), CapRefusal> {
    let mut scan = NativeScan::default();
    for_each_top_level_member(body, |m| {
        if go_name_matches(&m.name, "options") {
            match m.kind {
                ValueKind::Null => scan.num_predict_present = false,
                ValueKind::Object => options(body, m.value.clone(), generates, caps, &mut scan, edits),
                _ => scan.error = Some("\"options\" must be an object".into()),
            }
        } else if go_name_matches(&m.name, "keep_alive") {
            if m.kind == ValueKind::Null {
                scan.keep_alive = None;
                return;
            }
            let Some(value) = keep_alive_value(body, &m) else {
                scan.error = Some("\"keep_alive\" must be a number of seconds or a duration such as \"5m\"".into());
                return;
            };
            scan.keep_alive = Some(value);
            if value.unloads() && may_unload {
                return; // a manage key's unload goes through as it is
            }
            if let Some(end) = caps.keep_alive.and_then(|range| value.outside(range)) {
                let text = format_seconds(end);
                edits.replace.push((m.value.clone(), format!("\"{text}\"").into_bytes()));
                edits.note(format!("keep_alive={text}"));
            }
        }
    })
    .map_err(json_error)?;
    if let Some(error) = scan.error {
        return Err(bad(error));
    }
    if !may_unload && scan.keep_alive.is_some_and(KeepAlive::unloads) {
        let message = "a keep_alive of 0 (under a second) unloads the model, which needs the \"manage\" scope";
        return Err(CapRefusal::Unload(message.into()));
    }
    if let (true, Some(cap), false) = (generates, caps.num_predict, scan.num_predict_present) {
        edits.append.extend_from_slice(format!(",\"options\":{{\"num_predict\":{cap}}}").as_bytes());
        edits.note(format!("num_predict={cap}"));
    }
    Ok(())
}

/// One top-level `options` object: its keys exactly, the last of a repeated key winning.
fn options(body: &[u8], range: Range<usize>, generates: bool, caps: &Caps, scan: &mut NativeScan, edits: &mut Edits) {
    let offset = range.start;
    let object = &body[range];
    let scanned = for_each_top_level_member(object, |m| {
        let (cap, is_num_predict) = match &*m.name {
            "num_ctx" => (caps.num_ctx, false),
            "num_predict" if generates => (caps.num_predict, true),
            _ => return,
        };
        match m.kind {
            ValueKind::Null => {
                if is_num_predict {
                    scan.num_predict_present = false; // Ollama skips it: no limit
                }
            }
            ValueKind::Number => {
                scan.num_predict_present |= is_num_predict;
                let Some(cap) = cap else { return };
                let value = number(&object[m.value.clone()]);
                // A negative answer length asks for no limit.
                if value > cap as f64 || (is_num_predict && value < 0.0) {
                    let at = offset + m.value.start..offset + m.value.end;
                    edits.replace.push((at, cap.to_string().into_bytes()));
                    edits.note(format!("{}={cap}", m.name));
                }
            }
            _ => scan.error = Some(format!("option \"{}\" must be a number", m.name)),
        }
    });
    if scanned.is_err() {
        scan.error = Some("\"options\" is not a JSON object".into());
    }
}

/// The promise of [`apply_caps`], checked (panics if broken), for the fuzz target and the unit
/// tests: a rewritten body names what changed, is one JSON object, and the same caps leave it as
/// it is (every value Ollama would read is within them).
pub fn check_clamp_consistency(body: &[u8], target: CapTarget, caps: &Caps, may_unload: bool) {
    let Ok(clamped) = apply_caps(body, target, caps, may_unload) else { return };
    if let Some(rewritten) = clamped.body {
        assert!(!clamped.changed.is_empty(), "a rewrite names what it changed");
        assert_eq!(crate::json::validate(&rewritten), Ok(ValueKind::Object), "a clamped body is one object");
        let again = apply_caps(&rewritten, target, caps, may_unload).expect("a clamped body is accepted");
        assert!(again.body.is_none(), "clamping a clamped body changes nothing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: CapTarget = CapTarget::Native { generates: true };
    const EMBED: CapTarget = CapTarget::Native { generates: false };

    fn caps(words: &str) -> Caps {
        Caps::parse_words(words.split(' ')).unwrap()
    }

    /// The body Ollama would get, and the header's text.
    fn clamp(body: &str, target: CapTarget, words: &str) -> (String, String) {
        let clamped = apply_caps(body.as_bytes(), target, &caps(words), false).unwrap();
        let sent = clamped.body.clone().map_or(body.to_string(), |b| String::from_utf8(b).unwrap());
        (sent, clamped.summary())
    }

    #[test]
    fn a_context_cap_applies_to_native_bodies_only() {
        assert!(!caps("num_ctx=1").apply_to(CapTarget::Messages));
        assert!(caps("num_ctx=1").apply_to(EMBED));
    }

    #[test]
    fn parses_the_directive_words_and_writes_them_back() {
        let parsed = caps("num_ctx=8192 num_predict=4096 keep_alive=5m..30m");
        assert_eq!(parsed.num_ctx, Some(8192));
        assert_eq!(parsed.num_predict, Some(4096));
        assert_eq!(parsed.keep_alive, Some(KeepAliveRange { min: Some(300), max: Some(1800) }));
        assert_eq!(parsed.to_words(), ["num_ctx=8192", "num_predict=4096", "keep_alive=5m..30m"]);
        assert_eq!(caps("keep_alive=1h30m").keep_alive, Some(KeepAliveRange { min: None, max: Some(5400) }));
        assert_eq!(caps("keep_alive=90s..").to_words(), ["keep_alive=1m30s.."]);
        assert_eq!(caps("keep_alive=..2h").to_words(), ["keep_alive=2h"]);
    }

    #[test]
    fn refuses_malformed_caps_naming_them() {
        for (words, expected) in [
            ("num_ctx=0", "at least 1"),
            ("num_ctx=-1", "not a whole number"),
            ("num_ctx=8k", "not a whole number"),
            ("num_ctx=99999999999", "at most"),
            ("num_ctx=1 num_ctx=2", "repeated"),
            ("max_ctx=8192", "unknown cap"),
            ("num_ctx", "not name=value"),
            ("keep_alive=0", "at least 1s"),
            ("keep_alive=1.5s", "whole number of seconds"),
            ("keep_alive=30m..5m", "longer than the longest"),
            ("keep_alive=..", "needs a duration"),
            ("keep_alive=5x", "not a duration"),
            ("keep_alive=400d", "not a duration"),
            ("keep_alive=9000h", "longer than 366 days"),
        ] {
            let error = Caps::parse_words(words.split(' ')).expect_err(words);
            assert!(error.contains(expected), "{words}: {error}");
        }
    }

    #[test]
    fn a_keys_caps_beat_the_locations() {
        let location = caps("num_ctx=8192 num_predict=100 keep_alive=5m..30m");
        let key = caps("num_ctx=32768");
        assert_eq!(key.over(&location), caps("num_ctx=32768 num_predict=100 keep_alive=5m..30m"));
        assert_eq!(Caps::default().over(&location), location);
    }

    #[test]
    fn parses_go_durations_as_go_does() {
        let second = NANOS_PER_SECOND;
        for (text, nanos) in [
            ("0", Some(0)),
            ("-0", Some(0)),
            ("+0s", Some(0)),
            ("-0s", Some(0)),
            ("5m", Some(300 * second)),
            ("1h30m", Some(5400 * second)),
            ("1.5h", Some(5400 * second)),
            (".5s", Some(second / 2)),
            ("1.s", Some(second)),
            ("0.0000000001s", Some(0)),
            ("1µs", Some(1000)),
            ("1μs", Some(1000)),
            ("-5m", Some(-300 * second)),
            ("", None),
            ("5", None),
            ("s", None),
            (".s", None),
            ("5 m", None),
            ("1d", None),
            ("9999999999h", None),
        ] {
            assert_eq!(parse_go_duration(text.as_bytes()), nanos, "{text}");
        }
    }

    #[test]
    fn clamps_native_options_and_leaves_the_rest_byte_for_byte() {
        let body = r#"{"model":"m", "options": {"num_ctx": 131072, "temperature":0.1},"prompt":"hi"}"#;
        let (sent, header) = clamp(body, CHAT, "num_ctx=8192");
        assert_eq!(sent, r#"{"model":"m", "options": {"num_ctx": 8192, "temperature":0.1},"prompt":"hi"}"#);
        assert_eq!(header, "num_ctx=8192");
        let under = r#"{"model":"m","options":{"num_ctx":4096,"num_predict":10},"keep_alive":"10m"}"#;
        let clamped =
            apply_caps(under.as_bytes(), CHAT, &caps("num_ctx=8192 num_predict=4096 keep_alive=5m..30m"), false);
        assert_eq!(clamped, Ok(Clamped::default()));
    }

    #[test]
    fn a_missing_or_unlimited_answer_length_gets_the_cap() {
        for (body, sent) in [
            (r#"{"model":"m"}"#, r#"{"model":"m","options":{"num_predict":64}}"#),
            ("{}", r#"{"options":{"num_predict":64}}"#),
            (r#"{"options":{"num_predict":-1}}"#, r#"{"options":{"num_predict":64}}"#),
            (r#"{"options":{"num_predict":1e9}}"#, r#"{"options":{"num_predict":64}}"#),
            (
                r#"{"options":{"num_predict":5},"options":null}"#,
                r#"{"options":{"num_predict":5},"options":null,"options":{"num_predict":64}}"#,
            ),
            (
                r#"{"options":{"num_predict":5,"num_predict":null} }"#,
                r#"{"options":{"num_predict":5,"num_predict":null} ,"options":{"num_predict":64}}"#,
            ),
        ] {
            assert_eq!(clamp(body, CHAT, "num_predict=64"), (sent.to_string(), "num_predict=64".to_string()), "{body}");
        }
        // Embeddings generate nothing: no answer length to cap.
        assert_eq!(clamp(r#"{"model":"m"}"#, EMBED, "num_predict=64").1, "");
    }

    #[test]
    fn every_options_object_go_would_merge_is_clamped_and_only_those() {
        let body = r#"{"OPTIONS":{"num_ctx":99999},"messages":[{"options":{"num_ctx":99999}}],"opti\u006fns":{"num_ctx":1,"num_ctx":70000},"options":{"NUM_CTX":99999,"num\u005fctx":50000}}"#;
        let (sent, header) = clamp(body, CHAT, "num_ctx=8192");
        assert_eq!(
            sent,
            r#"{"OPTIONS":{"num_ctx":8192},"messages":[{"options":{"num_ctx":99999}}],"opti\u006fns":{"num_ctx":1,"num_ctx":8192},"options":{"NUM_CTX":99999,"num\u005fctx":8192}}"#
        );
        assert_eq!(header, "num_ctx=8192");
    }

    #[test]
    fn keep_alive_moves_to_the_nearest_end_of_its_range() {
        let range = "keep_alive=5m..30m";
        for (value, sent) in [
            ("-1", "\"30m\""),
            ("\"-1s\"", "\"30m\""),
            ("\"2h\"", "\"30m\""),
            ("1e300", "\"30m\""),
            ("10", "\"5m\""),
            ("\"1m\"", "\"5m\""),
            ("600", "600"),
            ("\"10m\"", "\"10m\""),
            ("null", "null"),
        ] {
            let body = format!(r#"{{"model":"m","keep_alive":{value}}}"#);
            assert_eq!(clamp(&body, CHAT, range).0, format!(r#"{{"model":"m","keep_alive":{sent}}}"#), "{value}");
        }
        let (sent, _) = clamp(r#"{"KEEP_ALIVE":-1,"keep_alive":"5m","Keep_Alive":7200}"#, EMBED, range);
        assert_eq!(sent, r#"{"KEEP_ALIVE":"30m","keep_alive":"5m","Keep_Alive":"30m"}"#);
    }

    #[test]
    fn unloading_needs_manage() {
        let any = caps("num_ctx=8192");
        for body in [
            r#"{"model":"m","keep_alive":0}"#,
            r#"{"model":"m","keep_alive":-0}"#,
            r#"{"model":"m","keep_alive":"0"}"#,
            r#"{"model":"m","keep_alive":"-0s"}"#,
            r#"{"model":"m","keep_alive":"0.0000000001s"}"#,
            r#"{"model":"m","keep_alive":0.5,"prompt":"not empty"}"#,
            r#"{"model":"m","keep_alive":"5m","kEEp_alive":0}"#,
        ] {
            assert!(matches!(apply_caps(body.as_bytes(), CHAT, &any, false), Err(CapRefusal::Unload(_))), "{body}");
            assert_eq!(apply_caps(body.as_bytes(), CHAT, &any, true), Ok(Clamped::default()), "{body}");
        }
        let later_wins = r#"{"model":"m","keep_alive":0,"keep_alive":null}"#;
        assert_eq!(apply_caps(later_wins.as_bytes(), CHAT, &any, false), Ok(Clamped::default()));
    }

    #[test]
    fn openai_dialects_cap_the_member_ollama_reads() {
        let (sent, header) =
            clamp(r#"{"model":"m","max_tokens":100000}"#, CapTarget::OpenAiMaxTokens, "num_predict=512");
        assert_eq!((sent.as_str(), header.as_str()), (r#"{"model":"m","max_tokens":512}"#, "max_tokens=512"));
        // Ollama ignores max_completion_tokens: the cap goes on max_tokens, added.
        let (sent, _) = clamp(r#"{"max_completion_tokens":100000}"#, CapTarget::OpenAiMaxTokens, "num_predict=512");
        assert_eq!(sent, r#"{"max_completion_tokens":100000,"max_tokens":512}"#);
        let (sent, _) =
            clamp(r#"{"MAX_TOKENS":9999,"max_tokens":null}"#, CapTarget::OpenAiMaxTokens, "num_predict=512");
        assert_eq!(sent, r#"{"MAX_TOKENS":512,"max_tokens":null,"max_tokens":512}"#);
        let (sent, _) = clamp(r#"{"max_output_tokens":-1}"#, CapTarget::Responses, "num_predict=512");
        assert_eq!(sent, r#"{"max_output_tokens":512}"#);
        let (sent, _) = clamp(r#"{"max_tokens":100000}"#, CapTarget::Messages, "num_predict=512");
        assert_eq!(sent, r#"{"max_tokens":512}"#);
        // Ollama refuses a /v1/messages request without a positive max_tokens: left to it.
        assert_eq!(clamp(r#"{"model":"m"}"#, CapTarget::Messages, "num_predict=512").1, "");
        assert_eq!(clamp(r#"{"max_tokens":100}"#, CapTarget::OpenAiMaxTokens, "num_predict=512").1, "");
    }

    #[test]
    fn refuses_what_ollama_could_not_read() {
        let all = caps("num_ctx=10 num_predict=10 keep_alive=1m..1h");
        for (body, target) in [
            ("[]", CHAT),
            (r#"{"model":"m"} {"options":{"num_ctx":99999}}"#, CHAT),
            (r#"{"options":"num_ctx=99999"}"#, CHAT),
            (r#"{"options":{"num_ctx":"99999"}}"#, CHAT),
            (r#"{"keep_alive":true}"#, CHAT),
            (r#"{"keep_alive":"forever"}"#, CHAT),
            (r#"{"max_tokens":"99999"}"#, CapTarget::OpenAiMaxTokens),
        ] {
            assert!(
                matches!(apply_caps(body.as_bytes(), target, &all, true), Err(CapRefusal::BadRequest(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn clamping_a_clamped_body_changes_nothing() {
        // The fuzz target's property, over seeds cut short and with one byte replaced.
        let caps = caps("num_ctx=8192 num_predict=512 keep_alive=5m..30m");
        let seeds: [&[u8]; 5] = [
            br#"{"model":"m","options":{"num_ctx":131072,"num_predict":-1},"keep_alive":-1}"#,
            br#"{"OPTIONS":{"num\u005fctx":99999},"options":null,"KEEP_ALIVE":"2h","keep_alive":0}"#,
            br#"{"model":"m","max_tokens":100000,"max_output_tokens":null}"#,
            br#"{ "options" : { "num_predict" : 1e9 } , "keep_alive" : "1m" }"#,
            b"{}",
        ];
        let targets = [CHAT, EMBED, CapTarget::OpenAiMaxTokens, CapTarget::Responses, CapTarget::Messages];
        for seed in seeds {
            for at in 0..seed.len() {
                for byte in *b"{}[]\",:0-9en " {
                    let mut body = seed.to_vec();
                    body[at] = byte;
                    for target in targets {
                        check_clamp_consistency(&body, target, &caps, false);
                        check_clamp_consistency(&body, target, &caps, true);
                        check_clamp_consistency(&seed[..at], target, &caps, false);
                    }
                }
            }
        }
    }

    #[test]
    #[ignore = "a measurement, run by make bench"]
    fn measure_caps_costs() {
        let image = "QUJD".repeat(5_000_000);
        let caps = caps("num_ctx=8192 num_predict=4096 keep_alive=5m..30m");
        let body = |options: &str| {
            format!(
                r#"{{"model":"gemma3","prompt":"what is this?","images":["{image}"],"options":{options},"keep_alive":"10m"}}"#
            )
        };
        let unchanged = body(r#"{"num_ctx":4096,"num_predict":100}"#);
        let rewritten = body(r#"{"num_ctx":131072,"num_predict":100}"#);
        assert!(unchanged.len() > 20_000_000);
        for (name, body, changes) in
            [("20_MB_image_body_caps_check", &unchanged, false), ("20_MB_image_body_caps_rewrite", &rewritten, true)]
        {
            let mut best_ms = f64::INFINITY;
            for _ in 0..5 {
                let start = std::time::Instant::now();
                let clamped = apply_caps(body.as_bytes(), CHAT, &caps, false).unwrap();
                best_ms = best_ms.min(start.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(clamped.body.is_some(), changes);
            }
            println!("MEASURE {name} {best_ms:.3}");
        }
    }
}
