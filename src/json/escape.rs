//! JSON text written: the one string escaper every writer of JSON in the library calls.

/// Appends `text` as the inside of a JSON string: the quote, the backslash and every control
/// character (C0 and DEL) escaped, as are U+2028 and U+2029, which JavaScript does not take raw.
/// Any `&str` comes out as valid JSON string content.
pub fn push_string_content(out: &mut Vec<u8>, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if c < ' ' || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                out.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes())
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

/// `text` as a whole JSON string, quotes included.
pub fn quoted(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'"');
    push_string_content(&mut out, text);
    out.push(b'"');
    String::from_utf8(out).expect("escaped UTF-8 is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{string_value, top_level_members, validate, ValueKind};

    #[test]
    fn escapes_what_json_and_javascript_need() {
        assert_eq!(quoted("a\"b\\c\u{1}é\u{7f}\u{2028}\u{2029}\n"), r#""a\"b\\c\u0001é\u007f\u2028\u2029\u000a""#);
        assert_eq!(quoted(""), r#""""#);
    }

    #[test]
    fn every_character_comes_back_as_it_was() {
        let every: String =
            (0..0x11_0000).filter_map(char::from_u32).filter(|c| (*c as u32) < 0x3000 || *c > '\u{10fff0}').collect();
        for text in [every.as_str(), "\u{0}", "\"\\/", "\u{1f600}"] {
            let body = format!("{{\"x\":{}}}", quoted(text));
            assert_eq!(validate(body.as_bytes()), Ok(ValueKind::Object));
            let members = top_level_members(body.as_bytes()).unwrap();
            assert_eq!(string_value(body.as_bytes(), &members[0]).as_deref(), Some(text));
        }
    }
}
