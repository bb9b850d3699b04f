//! The options an entry may carry after its key (or in an htpasswd line's comment field):
//! `scopes=`, `models=`, `expires=`, `tokens=`, `requests=`, `parallel=`, for the fair queue
//! (`crate::queue`) `share=` and `queue=`, and the caps `num_ctx=`, `num_predict=`,
//! `keep_alive=` (see `caps`).
//!
//! A word holding `=` is an option; the other words are the entry's name. An option that is
//! unknown, repeated or malformed makes the whole entry unusable (the line is skipped with a
//! warning): a typo must never leave a key with more than was meant.

use std::fmt;

use crate::caps::{Caps, CAP_NAMES};
use crate::limits::window::{self, Window, MAX_WINDOW_SECONDS, SECONDS_PER_DAY};
use crate::models::ModelPatterns;
use crate::policy::Scopes;
use crate::queue::{MAX_KEY_QUEUE, MAX_SHARE};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryOptions {
    pub scopes: Option<Scopes>,
    pub models: Option<ModelPatterns>,
    /// Unix seconds from which the entry no longer admits anyone.
    pub expires: Option<i64>,
    pub tokens: Vec<Window>,
    pub requests: Vec<Window>,
    pub parallel: Option<u32>,
    /// The key's weight in the fair queue (`share=`, default 1).
    pub share: Option<u32>,
    /// The key's most requests waiting in the fair queue (`queue=`, default 50; 0: never waits).
    pub queue: Option<u32>,
    /// The entry's own caps, over its location's.
    pub caps: Caps,
}

impl window::EntryLimits for EntryOptions {
    fn requests(&self) -> &[Window] {
        &self.requests
    }

    fn tokens(&self) -> &[Window] {
        &self.tokens
    }

    fn parallel(&self) -> Option<u32> {
        self.parallel
    }
}

impl EntryOptions {
    pub fn has_limits(&self) -> bool {
        !self.tokens.is_empty() || !self.requests.is_empty() || self.parallel.is_some()
    }

    /// Whether the entry has expired at `now` (Unix seconds): from the expiry time on.
    pub fn is_expired_at(&self, now: i64) -> bool {
        self.expires.is_some_and(|expires| now >= expires)
    }

    /// The options as words that `parse_options` reads back to the same value, in a fixed order.
    pub fn to_words(&self) -> Vec<String> {
        let windows = |windows: &[Window]| windows.iter().map(Window::to_string).collect::<Vec<_>>().join(",");
        let mut words = Vec::new();
        if let Some(scopes) = self.scopes {
            words.push(format!("scopes={scopes}"));
        }
        if let Some(models) = &self.models {
            words.push(format!("models={models}"));
        }
        if let Some(expires) = self.expires {
            words.push(format!("expires={}", format_time(expires)));
        }
        if !self.tokens.is_empty() {
            words.push(format!("tokens={}", windows(&self.tokens)));
        }
        if !self.requests.is_empty() {
            words.push(format!("requests={}", windows(&self.requests)));
        }
        if let Some(parallel) = self.parallel {
            words.push(format!("parallel={parallel}"));
        }
        if let Some(share) = self.share {
            words.push(format!("share={share}"));
        }
        if let Some(queue) = self.queue {
            words.push(format!("queue={queue}"));
        }
        words.extend(self.caps.to_words());
        words
    }
}

/// The options as they are written in a line: words separated by one space.
impl fmt::Display for EntryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_words().join(" "))
    }
}

/// Why an entry's options were refused. Names the option and the reason, never a value: a key
/// pasted into the wrong place must not end up in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionError {
    Unknown(String),
    Repeated(&'static str),
    Invalid { option: &'static str, reason: String },
}

/// Longest option name quoted back in a warning.
const MAX_QUOTED_NAME_CHARS: usize = 32;

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Only a name that looks like an option name is quoted back: a word ending in `=`
            // may be a pasted base64 key, which must not reach a log.
            OptionError::Unknown(name)
                if name.len() <= MAX_QUOTED_NAME_CHARS
                    && !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-') =>
            {
                write!(f, "unknown option \"{name}\"")
            }
            OptionError::Unknown(_) => f.write_str("unknown option (a word with \"=\" that is not an option name)"),
            OptionError::Repeated(option) => write!(f, "repeated option \"{option}\""),
            OptionError::Invalid { option, reason } => write!(f, "option \"{option}\": {reason}"),
        }
    }
}

impl std::error::Error for OptionError {}

fn is_option(word: &[u8]) -> bool {
    word.contains(&b'=')
}

fn words(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|b| b.is_ascii_whitespace()).filter(|word| !word.is_empty())
}

/// Splits what follows the key into the name (its words joined by single spaces, so
/// `key Admin console` is named `Admin console`) and the option words (those holding `=`).
pub fn split_name_and_options(rest: &[u8]) -> (Vec<u8>, Vec<&[u8]>) {
    let mut name = Vec::new();
    let mut options = Vec::new();
    for word in words(rest) {
        if is_option(word) {
            options.push(word);
        } else {
            if !name.is_empty() {
                name.push(b' ');
            }
            name.extend_from_slice(word);
        }
    }
    (name, options)
}

/// The option words in an htpasswd line's comment field; its other words stay a comment.
/// `field` is everything after the hash's `:`, colons included: an RFC 3339 time or a model
/// on a registry with a port holds `:`.
pub fn options_in_comment(field: &[u8]) -> Vec<&[u8]> {
    words(field).filter(|word| is_option(word)).collect()
}

const OPTION_NAMES: [&str; 11] = [
    "scopes",
    "models",
    "expires",
    "tokens",
    "requests",
    "parallel",
    "share",
    "queue",
    CAP_NAMES[0],
    CAP_NAMES[1],
    CAP_NAMES[2],
];

/// Reads option words (`name=value`). Option names are case-sensitive.
pub fn parse_options(words: &[&[u8]]) -> Result<EntryOptions, OptionError> {
    let mut options = EntryOptions::default();
    let mut seen = [false; OPTION_NAMES.len()];
    for word in words {
        let (name, value) = match word.iter().position(|&b| b == b'=') {
            Some(equals) => (&word[..equals], &word[equals + 1..]),
            None => (&word[..], &b""[..]),
        };
        let Some(index) = OPTION_NAMES.iter().position(|known| known.as_bytes() == name) else {
            return Err(OptionError::Unknown(String::from_utf8_lossy(name).into_owned()));
        };
        let option = OPTION_NAMES[index];
        if std::mem::replace(&mut seen[index], true) {
            return Err(OptionError::Repeated(option));
        }
        let invalid = |reason: String| OptionError::Invalid { option, reason };
        let value = std::str::from_utf8(value).map_err(|_| invalid("not UTF-8".into()))?;
        match option {
            "scopes" => options.scopes = Some(Scopes::parse(value).map_err(invalid)?),
            "models" => options.models = Some(ModelPatterns::parse(value).map_err(invalid)?),
            "expires" => {
                let time =
                    parse_time(value).ok_or_else(|| invalid("not a date (YYYY-MM-DD) or RFC 3339 time".into()))?;
                options.expires = Some(time);
            }
            "tokens" => options.tokens = parse_windows(value).map_err(invalid)?,
            "requests" => options.requests = parse_windows(value).map_err(invalid)?,
            "parallel" => options.parallel = Some(parse_parallel(value).map_err(invalid)?),
            "share" => options.share = Some(parse_bounded(value, 1, MAX_SHARE).map_err(invalid)?),
            "queue" => options.queue = Some(parse_bounded(value, 0, MAX_KEY_QUEUE).map_err(invalid)?),
            _ => options.caps.set(option, value).map_err(invalid)?,
        }
    }
    // What the zone cannot count (more windows than a key's counters hold) is a bad line too.
    if let Err(error) = window::check(&options.requests, &options.tokens, options.parallel) {
        let option = if options.tokens.is_empty() { "requests" } else { "tokens" };
        return Err(OptionError::Invalid { option, reason: error.to_string() });
    }
    Ok(options)
}

enum NumberError {
    NotANumber,
    TooLarge,
}

/// Decimal digits only: no sign, no white space, no `_`.
fn parse_decimal(text: &str) -> Result<u64, NumberError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NumberError::NotANumber);
    }
    text.bytes().try_fold(0u64, |total, digit| {
        total.checked_mul(10).and_then(|total| total.checked_add(u64::from(digit - b'0'))).ok_or(NumberError::TooLarge)
    })
}

fn parse_parallel(text: &str) -> Result<u32, String> {
    match parse_decimal(text) {
        Err(NumberError::NotANumber) => Err("not a whole number".into()),
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => u32::try_from(n).map_err(|_| "too large".into()),
        Err(NumberError::TooLarge) => Err("too large".into()),
    }
}

/// A whole number from `least` to `most`.
fn parse_bounded(text: &str, least: u32, most: u32) -> Result<u32, String> {
    match parse_decimal(text) {
        Err(NumberError::NotANumber) => Err("not a whole number".into()),
        Ok(n) if n < u64::from(least) => Err(format!("must be at least {least}")),
        Ok(n) if n <= u64::from(most) => Ok(n as u32),
        Ok(_) | Err(NumberError::TooLarge) => Err(format!("must be at most {most}")),
    }
}

/// `<n>s`, `<n>m`, `<n>h` or `<n>d`, as seconds.
fn parse_period(text: &str) -> Result<u64, String> {
    const EXPECTED: &str = "period must be <n>s, <n>m, <n>h or <n>d";
    let Some(unit) = text.bytes().last() else {
        return Err(EXPECTED.into());
    };
    let size = match unit {
        b's' => 1,
        b'm' => 60,
        b'h' => 3600,
        b'd' => SECONDS_PER_DAY,
        _ => return Err(EXPECTED.into()),
    };
    let too_long = || "period longer than 366 days".to_string();
    match parse_decimal(&text[..text.len() - 1]) {
        Err(NumberError::NotANumber) => Err(EXPECTED.into()),
        Err(NumberError::TooLarge) => Err(too_long()),
        Ok(0) => Err("period must be at least 1 second".into()),
        Ok(count) => match count.checked_mul(size) {
            Some(seconds) if seconds <= MAX_WINDOW_SECONDS => Ok(seconds),
            _ => Err(too_long()),
        },
    }
}

/// A comma-separated list of `<n>/<period>`. Two items over the same period are refused, as
/// they would leave unclear which limit was meant.
fn parse_windows(list: &str) -> Result<Vec<Window>, String> {
    if list.is_empty() {
        return Err("empty list".into());
    }
    let mut windows: Vec<Window> = Vec::new();
    for (index, item) in list.split(',').enumerate() {
        let position = index + 1;
        let at = |reason: &str| format!("item {position}: {reason}");
        if item.is_empty() {
            return Err(format!("item {position} is empty"));
        }
        let Some((count, period)) = item.split_once('/') else {
            return Err(at("expected <n>/<period>, as in 20000/1m"));
        };
        let limit = match parse_decimal(count) {
            Err(NumberError::NotANumber) => return Err(at("limit is not a whole number")),
            Err(NumberError::TooLarge) => return Err(at("limit too large")),
            Ok(0) => return Err(at("limit must be at least 1")),
            Ok(limit) => limit,
        };
        let seconds = parse_period(period).map_err(|reason| at(&reason))?;
        if windows.iter().any(|window| window.seconds == seconds) {
            return Err(at("same period as an earlier item"));
        }
        windows.push(Window { limit, seconds });
    }
    Ok(windows)
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`): years counted from March, so the leap day ends a year, in 400-year eras.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of `days_from_civil`: (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Exactly `digits` ASCII digits.
fn fixed_digits(text: &[u8], digits: usize) -> Option<u32> {
    if text.len() != digits || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0, |total, &digit| total * 10 + u32::from(digit - b'0')))
}

/// `YYYY-MM-DD` as days since 1970-01-01, checking month and day (leap years included).
fn parse_date(text: &[u8]) -> Option<i64> {
    if text.len() != 10 || text[4] != b'-' || text[7] != b'-' {
        return None;
    }
    let year = i64::from(fixed_digits(&text[..4], 4)?);
    let month = fixed_digits(&text[5..7], 2)?;
    let day = fixed_digits(&text[8..], 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// `HH:MM` or `HH:MM:SS` (with `seconds`) as seconds into the day; hours 0-23, minutes 0-59,
/// seconds 0-59 (a leap second `60` is refused, as Go's time parser refuses it).
fn parse_clock(text: &[u8], seconds: bool) -> Option<i64> {
    let length = if seconds { 8 } else { 5 };
    if text.len() != length || text[2] != b':' || (seconds && text[5] != b':') {
        return None;
    }
    let hour = fixed_digits(&text[..2], 2)?;
    let minute = fixed_digits(&text[3..5], 2)?;
    let second = if seconds { fixed_digits(&text[6..], 2)? } else { 0 };
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(i64::from(hour * 3600 + minute * 60 + second))
}

/// The first and last second that `format_time` can write with a four-digit year.
const FIRST_TIME: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
const LAST_TIME: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// `YYYY-MM-DD` (the start of that day, UTC) or an RFC 3339 time, as Unix seconds. A fraction
/// of a second is dropped, which moves an expiry earlier, never later.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.as_bytes();
    let days = parse_date(text.get(..10)?)?;
    if text.len() == 10 {
        return Some(days * SECONDS_PER_DAY as i64);
    }
    if !matches!(text[10], b'T' | b't' | b' ') {
        return None;
    }
    let clock = parse_clock(text.get(11..19)?, true)?;
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), hours_minutes @ ..] => {
            let offset = parse_clock(hours_minutes, false)?;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let time = days * SECONDS_PER_DAY as i64 + clock - offset;
    (FIRST_TIME..=LAST_TIME).contains(&time).then_some(time)
}

/// Unix seconds as `parse_time` reads them back: a date for the start of a day, else an RFC 3339
/// time in UTC.
pub fn format_time(time: i64) -> String {
    let day = SECONDS_PER_DAY as i64;
    let (year, month, date) = civil_from_days(time.div_euclid(day));
    let second_of_day = time.rem_euclid(day);
    if second_of_day == 0 {
        return format!("{year:04}-{month:02}-{date:02}");
    }
    let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{date:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelName;

    fn parse(line: &str) -> Result<EntryOptions, OptionError> {
        let words: Vec<&[u8]> = line.split(' ').filter(|w| !w.is_empty()).map(str::as_bytes).collect();
        parse_options(&words)
    }

    fn error(line: &str) -> String {
        parse(line).expect_err(line).to_string()
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn names_keep_their_words_and_options_are_picked_out() {
        let (name, options) = split_name_and_options(b"Admin console");
        assert_eq!(name, b"Admin console");
        assert!(options.is_empty());
        let (name, options) = split_name_and_options(b"  ci \t bot   scopes=read,infer  nightly models=qwen*\r");
        assert_eq!(name, b"ci bot nightly");
        assert_eq!(options.iter().map(|o| text(o)).collect::<Vec<_>>(), ["scopes=read,infer", "models=qwen*"]);
        let (name, options) = split_name_and_options(b"expires=2026-01-01");
        assert!(name.is_empty());
        assert_eq!(options, [&b"expires=2026-01-01"[..]]);
        assert_eq!(split_name_and_options(b""), (Vec::new(), Vec::new()));
        let (name, options) = split_name_and_options(b"caf\xc3\xa9 = x=");
        assert_eq!(name, "café".as_bytes());
        assert_eq!(options, [&b"="[..], b"x="]);
    }

    #[test]
    fn caps_are_options_checked_by_the_caps_parser() {
        let options = parse("scopes=infer num_ctx=32768 keep_alive=1m..1h").unwrap();
        assert_eq!(options.caps.num_ctx, Some(32768));
        assert_eq!(options.caps.keep_alive.map(|range| (range.min, range.max)), Some((Some(60), Some(3600))));
        assert_eq!(options.to_words(), ["scopes=infer", "num_ctx=32768", "keep_alive=1m..1h"]);
        assert!(!options.has_limits());
        assert_eq!(error("num_predict=0"), "option \"num_predict\": must be at least 1");
        assert_eq!(error("num_ctx=1 num_ctx=2"), "repeated option \"num_ctx\"");
        assert_eq!(error("keep_alive=forever"), "option \"keep_alive\": not a duration such as 90s, 5m or 1h30m");
    }

    #[test]
    fn htpasswd_comment_fields_keep_only_option_words() {
        let field = b"scopes=read,infer models=llama3* Alice from accounting expires=2026-03-01T12:00:00+01:00";
        let found: Vec<&str> = options_in_comment(field).into_iter().map(text).collect();
        assert_eq!(found, ["scopes=read,infer", "models=llama3*", "expires=2026-03-01T12:00:00+01:00"]);
        assert!(options_in_comment(b"just a comment").is_empty());
        assert!(options_in_comment(b"").is_empty());
        let options = parse_options(&options_in_comment(field)).unwrap();
        assert_eq!(options.scopes, Some(Scopes::READ | Scopes::INFER));
        assert_eq!(options.expires, Some(1_772_362_800));
    }

    #[test]
    fn every_option_together() {
        let line = "scopes=read,infer models=llama3*,myorg/* expires=2026-01-01 tokens=20000/1m,500000/1d \
                    requests=60/1m parallel=2";
        let options = parse(line).unwrap();
        assert_eq!(options.scopes, Some(Scopes::READ | Scopes::INFER));
        let models = options.models.as_ref().unwrap();
        assert!(models.allows(&ModelName::parse("llama3.2:1b").unwrap()));
        assert!(models.allows(&ModelName::parse("myorg/x").unwrap()));
        assert!(!models.allows(&ModelName::parse("qwen3").unwrap()));
        assert_eq!(options.expires, Some(1_767_225_600));
        assert_eq!(options.tokens, [Window { limit: 20_000, seconds: 60 }, Window { limit: 500_000, seconds: 86_400 }]);
        assert_eq!(options.requests, [Window { limit: 60, seconds: 60 }]);
        assert_eq!(options.parallel, Some(2));
        assert!(options.has_limits());
        assert_eq!(options.to_string(), line);
    }

    #[test]
    fn no_options_is_the_default() {
        let options = parse("").unwrap();
        assert_eq!(options, EntryOptions::default());
        assert!(!options.has_limits());
        assert!(!options.is_expired_at(i64::MAX));
        assert!(options.to_words().is_empty());
        assert!(parse("parallel=1").unwrap().has_limits());
        assert!(parse("requests=1/1s").unwrap().has_limits());
        assert!(parse("tokens=1/1s").unwrap().has_limits());
        assert!(!parse("scopes=all models=* expires=2030-01-01").unwrap().has_limits());
    }

    #[test]
    fn unknown_and_repeated_options() {
        assert_eq!(error("colour=blue"), "unknown option \"colour\"");
        assert_eq!(error("scope=read"), "unknown option \"scope\"");
        // Anything that does not look like an option name is not quoted: it may be a secret.
        let generic = "unknown option (a word with \"=\" that is not an option name)";
        for word in ["Scopes=read", "=read", "x\"y=1", "dGhpcyBpcyBhIGtleQ==", "sk-ollama-Ab3=x"] {
            assert_eq!(error(word), generic, "{word}");
        }
        assert_eq!(error(&format!("{}=1", "n".repeat(40))), generic);
        assert_eq!(error("scopes=read scopes=infer"), "repeated option \"scopes\"");
        assert_eq!(error("scopes=read scopes=read"), "repeated option \"scopes\"");
        assert_eq!(error("models=a expires=2030-01-01 models=b"), "repeated option \"models\"");
        assert_eq!(error("parallel=1 parallel=oops"), "repeated option \"parallel\"");
        assert_eq!(error("tokens=1/1s tokens=2/1m"), "repeated option \"tokens\"");
        let non_utf8: &[u8] = b"k\xff=1";
        assert_eq!(parse_options(&[non_utf8]).unwrap_err().to_string(), generic);
    }

    #[test]
    fn malformed_values_name_the_option_and_never_the_value() {
        for (line, expected) in [
            ("scopes=", "option \"scopes\": empty list"),
            ("scopes=sk-live-secret", "option \"scopes\": item 1 is not one of read, infer, manage, search, all"),
            ("scopes=read,,infer", "option \"scopes\": item 2 is empty"),
            ("models=", "option \"models\": empty list"),
            (
                "models=llama3,sk-live-secret:local",
                "option \"models\": item 2: a pattern names stored models, :local has no place in it",
            ),
            ("models=ns.secret/x", "option \"models\": item 1: not a valid model name pattern (bad namespace)"),
            ("expires=", "option \"expires\": not a date (YYYY-MM-DD) or RFC 3339 time"),
            ("expires=sk-live-secret", "option \"expires\": not a date (YYYY-MM-DD) or RFC 3339 time"),
            ("tokens=", "option \"tokens\": empty list"),
            ("tokens=100", "option \"tokens\": item 1: expected <n>/<period>, as in 20000/1m"),
            ("tokens=100/1m,", "option \"tokens\": item 2 is empty"),
            ("requests=0/1m", "option \"requests\": item 1: limit must be at least 1"),
            ("requests=x/1m", "option \"requests\": item 1: limit is not a whole number"),
            ("requests=-1/1m", "option \"requests\": item 1: limit is not a whole number"),
            ("requests=+1/1m", "option \"requests\": item 1: limit is not a whole number"),
            ("requests=18446744073709551616/1m", "option \"requests\": item 1: limit too large"),
            ("requests=1/0s", "option \"requests\": item 1: period must be at least 1 second"),
            ("requests=1/m", "option \"requests\": item 1: period must be <n>s, <n>m, <n>h or <n>d"),
            ("requests=1/1", "option \"requests\": item 1: period must be <n>s, <n>m, <n>h or <n>d"),
            ("requests=1/1w", "option \"requests\": item 1: period must be <n>s, <n>m, <n>h or <n>d"),
            ("requests=1/1M", "option \"requests\": item 1: period must be <n>s, <n>m, <n>h or <n>d"),
            ("requests=1/", "option \"requests\": item 1: period must be <n>s, <n>m, <n>h or <n>d"),
            ("requests=1/1.5h", "option \"requests\": item 1: period must be <n>s, <n>m, <n>h or <n>d"),
            ("requests=1/367d", "option \"requests\": item 1: period longer than 366 days"),
            ("requests=1/99999999999999999999s", "option \"requests\": item 1: period longer than 366 days"),
            ("requests=1/307445734561825861d", "option \"requests\": item 1: period longer than 366 days"),
            ("requests=1/1m,2/60s", "option \"requests\": item 2: same period as an earlier item"),
            ("requests=1/1m/1", "option \"requests\": item 1: period must be <n>s, <n>m, <n>h or <n>d"),
            ("parallel=", "option \"parallel\": not a whole number"),
            ("parallel=0", "option \"parallel\": must be at least 1"),
            ("parallel=two", "option \"parallel\": not a whole number"),
            ("parallel=4294967296", "option \"parallel\": too large"),
            ("parallel=99999999999999999999999", "option \"parallel\": too large"),
        ] {
            assert_eq!(error(line), expected, "{line}");
            assert!(!expected.contains("secret"));
        }
        let invalid_utf8: &[u8] = b"models=\xff";
        assert_eq!(parse_options(&[invalid_utf8]).unwrap_err().to_string(), "option \"models\": not UTF-8");
    }

    #[test]
    fn limits() {
        let options = parse("tokens=1/1s,2/59s,3/1m,4/90m,5/1h,6/36h").unwrap_or_else(|e| panic!("{e}"));
        let windows: Vec<(u64, u64)> = options.tokens.iter().map(|w| (w.limit, w.seconds)).collect();
        assert_eq!(windows, [(1, 1), (2, 59), (3, 60), (4, 5400), (5, 3600), (6, 129_600)]);
        let line = "tokens=7/1d,8/366d requests=18446744073709551615/31622399s parallel=4294967295";
        let options = parse(line).unwrap_or_else(|e| panic!("{e}"));
        let windows: Vec<(u64, u64)> = options.tokens.iter().map(|w| (w.limit, w.seconds)).collect();
        assert_eq!(windows, [(7, 86_400), (8, 31_622_400)]);
        assert_eq!(options.requests, [Window { limit: u64::MAX, seconds: 31_622_399 }]);
        assert_eq!(options.parallel, Some(u32::MAX));
        assert_eq!(parse("requests=007/01m").unwrap().requests, [Window { limit: 7, seconds: 60 }]);
        assert_eq!(MAX_WINDOW_SECONDS, 31_622_400);
        assert!(parse("tokens=1/527040m").is_ok());
        assert!(parse("tokens=1/527041m").is_err());
        assert!(parse("tokens=1/8784h").is_ok());
        assert!(parse("tokens=1/8785h").is_err());
    }

    #[test]
    fn windows_are_written_in_the_largest_whole_unit() {
        let written = parse("tokens=1/1s,2/60s,3/90s,4/120m,5/24h,6/366d")
            .map(|options| options.to_words())
            .unwrap_or_else(|e| vec![e.to_string()]);
        assert_eq!(written, ["tokens=1/1s,2/1m,3/90s,4/2h,5/1d,6/366d"]);
    }

    #[test]
    fn dates_are_the_start_of_the_day_utc() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("1970-01-02"), Some(86_400));
        assert_eq!(parse_time("1969-12-31"), Some(-86_400));
        assert_eq!(parse_time("2000-03-01"), Some(951_868_800));
        assert_eq!(parse_time("2026-01-01"), Some(1_767_225_600));
        assert_eq!(parse_time("0000-01-01"), Some(FIRST_TIME));
        assert_eq!(parse_time("9999-12-31"), Some(LAST_TIME + 1 - 86_400));
    }

    #[test]
    fn february_29_only_in_leap_years() {
        assert_eq!(parse_time("2024-02-29"), Some(1_709_164_800));
        assert_eq!(parse_time("2000-02-29"), Some(951_782_400));
        assert_eq!(parse_time("1600-02-29"), Some(-11_670_998_400));
        for not_leap in ["2023-02-29", "2100-02-29", "1900-02-29", "2025-02-29"] {
            assert_eq!(parse_time(not_leap), None, "{not_leap}");
        }
        assert_eq!(parse_time("2024-02-30"), None);
        assert_eq!(parse_time("2024-02-28"), Some(1_709_078_400));
    }

    #[test]
    fn month_and_day_ranges() {
        for bad in [
            "2025-00-10",
            "2025-13-01",
            "2025-01-00",
            "2025-01-32",
            "2025-04-31",
            "2025-06-31",
            "2025-09-31",
            "2025-11-31",
            "2025-1-01",
            "2025-01-1",
            "25-01-01",
            "2025/01/01",
            "2025-01-01x",
            "20250101",
            "+2025-01-01",
            "２０２５-01-01",
            "2025-01-01T",
            "",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        for good in ["2025-01-31", "2025-03-31", "2025-04-30", "2025-12-31"] {
            assert!(parse_time(good).is_some(), "{good}");
        }
    }

    #[test]
    fn rfc_3339_times() {
        let noon = 1_767_268_800; // 2026-01-01T12:00:00Z
        for text in [
            "2026-01-01T12:00:00Z",
            "2026-01-01t12:00:00z",
            "2026-01-01 12:00:00Z",
            "2026-01-01T12:00:00+00:00",
            "2026-01-01T12:00:00-00:00",
            "2026-01-01T13:30:00+01:30",
            "2026-01-01T07:00:00-05:00",
            "2026-01-01T12:00:00.999999999Z",
            "2026-01-01T12:00:00.5+00:00",
            "2026-01-02T11:59:00+23:59",
            "2025-12-31T12:01:00-23:59",
        ] {
            assert_eq!(parse_time(text), Some(noon), "{text}");
        }
        assert_eq!(parse_time("2024-02-29T23:59:59Z"), Some(1_709_251_199));
        assert_eq!(parse_time("2024-03-01T00:30:00+01:00"), Some(1_709_249_400), "an offset crosses the leap day");
        for bad in [
            "2026-01-01T12:00Z",
            "2026-01-01T12:00:00",
            "2026-01-01T24:00:00Z",
            "2026-01-01T12:60:00Z",
            "2026-01-01T23:59:60Z",
            "2026-01-01T12:00:00.Z",
            "2026-01-01T12:00:00,5Z",
            "2026-01-01T12:00:00+01",
            "2026-01-01T12:00:00+0100",
            "2026-01-01T12:00:00+24:00",
            "2026-01-01T12:00:00+01:60",
            "2026-01-01T12:00:00UTC",
            "2026-01-01T12:00:00Zx",
            "2026-01-01T12:00:00ZZ",
            "2026-01-01_12:00:00Z",
            "2026-01-01T1:00:00Z",
            "2026-01-01T12:00:00 Z",
            "2026-02-30T12:00:00Z",
            "0000-01-01T00:30:00+01:00",
            "9999-12-31T23:30:00-01:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_are_written_back_and_read_again() {
        assert_eq!(format_time(0), "1970-01-01");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_time(1_709_164_800), "2024-02-29");
        assert_eq!(format_time(1_767_268_800), "2026-01-01T12:00:00Z");
        assert_eq!(format_time(FIRST_TIME), "0000-01-01");
        assert_eq!(format_time(LAST_TIME), "9999-12-31T23:59:59Z");
        let mut time = FIRST_TIME;
        while time <= LAST_TIME {
            assert_eq!(parse_time(&format_time(time)), Some(time), "{time}");
            time += 7_777_777;
        }
        for days in -800_000..800_000 {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
            assert!((1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month));
        }
    }

    #[test]
    fn expiry_is_inclusive() {
        let options = parse("expires=2026-01-01").unwrap();
        assert!(!options.is_expired_at(1_767_225_599));
        assert!(options.is_expired_at(1_767_225_600));
        assert!(options.is_expired_at(i64::MAX));
    }

    #[test]
    fn options_round_trip_through_their_words() {
        for line in [
            "scopes=manage,read",
            "scopes=all models=* expires=2026-01-01T12:00:00.5+02:00",
            "models=Qwen*,hf.co/*/* parallel=3",
            "tokens=60/60s,1000/3600s requests=1/1s",
        ] {
            let options = parse(line).unwrap();
            let words = options.to_words();
            let word_bytes: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
            assert_eq!(parse_options(&word_bytes).unwrap(), options, "{line} -> {words:?}");
        }
        assert_eq!(parse("expires=2026-01-01T12:00:00.5+02:00").unwrap().to_string(), "expires=2026-01-01T10:00:00Z");
    }

    #[test]
    fn arbitrary_words_never_panic() {
        let pieces = [
            "scopes=",
            "models=",
            "expires=",
            "tokens=",
            "requests=",
            "parallel=",
            "share=",
            "queue=",
            "1",
            "/",
            ",",
            "m",
            "d",
            "-",
            ":",
            "T",
            "Z",
            "+",
            "*",
            "9",
            "=",
            "é",
            ".",
        ];
        let mut seed = 99u32;
        for _ in 0..20_000 {
            let mut word = String::new();
            for _ in 0..(seed % 10) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                word.push_str(pieces[(seed >> 16) as usize % pieces.len()]);
            }
            if let Ok(options) = parse_options(&[word.as_bytes()]) {
                let words = options.to_words();
                let word_bytes: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
                assert_eq!(parse_options(&word_bytes).as_ref(), Ok(&options), "{word}");
            }
            let _ = parse_time(&word);
        }
    }

    #[test]
    fn queue_options() {
        let options = parse("share=3 queue=0").unwrap();
        assert_eq!((options.share, options.queue), (Some(3), Some(0)));
        assert!(!options.has_limits(), "a share is no limit: it needs no usage zone");
        assert_eq!(options.to_string(), "share=3 queue=0");
        assert_eq!(parse("share=1000 queue=100000").unwrap().to_string(), "share=1000 queue=100000");
        assert_eq!(parse("").unwrap().share, None);
        for (line, expected) in [
            ("share=0", "option \"share\": must be at least 1"),
            ("share=1001", "option \"share\": must be at most 1000"),
            ("share=", "option \"share\": not a whole number"),
            ("share=1.5", "option \"share\": not a whole number"),
            ("share=99999999999999999999999", "option \"share\": must be at most 1000"),
            ("queue=100001", "option \"queue\": must be at most 100000"),
            ("queue=-1", "option \"queue\": not a whole number"),
            ("share=2 share=2", "repeated option \"share\""),
            ("queue=1 queue=2", "repeated option \"queue\""),
        ] {
            assert_eq!(error(line), expected, "{line}");
        }
    }

    #[test]
    fn more_windows_than_a_key_can_count_is_a_bad_line() {
        let seven = "tokens=1/1s,1/2s,1/3s,1/4s requests=1/1s,1/2s,1/3s";
        let error = parse(seven).unwrap_err().to_string();
        assert!(error.contains("more than the 6"), "{error}");
        assert!(parse("tokens=1/1s,1/2s,1/3s requests=1/1s,1/2s,1/3s").is_ok());
    }
}
