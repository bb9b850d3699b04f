//! The line syntax both files share: LF or CRLF, surrounding white space trimmed, blank lines and
//! lines whose first non-blank character is `#` skipped, and a leading UTF-8 byte-order mark
//! (which Windows editors write) ignored.

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Yields `(line number, trimmed line)` for every line that holds an entry.
pub fn entries(content: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    content
        .strip_prefix(UTF8_BOM)
        .unwrap_or(content)
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim_ascii()))
        .filter(|(_, line)| !line.is_empty() && line[0] != b'#')
}

/// Control characters other than the tab that separates fields have no place in either file;
/// a line holding one is skipped whole.
pub fn has_control_bytes(line: &[u8]) -> bool {
    line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// Splits off the first white-space separated field; the rest is trimmed.
pub fn first_field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|b| b.is_ascii_whitespace()) {
        Some(end) => (&line[..end], line[end..].trim_ascii()),
        None => (line, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_blank_and_comment_lines_and_trims_crlf() {
        let content = b"  one  \r\n\r\n# comment\n   # indented comment\n\ttwo\tnamed\r\nthree";
        let found: Vec<(usize, &[u8])> = entries(content).collect();
        assert_eq!(found, [(1, &b"one"[..]), (5, b"two\tnamed"), (6, b"three")]);
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_entry() {
        let found: Vec<(usize, &[u8])> = entries(b"\xef\xbb\xbfkey-1\r\nkey-2\r\n").collect();
        assert_eq!(found, [(1, &b"key-1"[..]), (2, b"key-2")]);
    }

    #[test]
    fn first_field_splits_on_any_white_space() {
        assert_eq!(first_field(b"key"), (&b"key"[..], &b""[..]));
        assert_eq!(first_field(b"key  the name "), (&b"key"[..], &b"the name"[..]));
        assert_eq!(first_field(b"key\tname"), (&b"key"[..], &b"name"[..]));
    }

    #[test]
    fn control_bytes() {
        assert!(!has_control_bytes(b"key\tname \xc3\xa9"));
        assert!(has_control_bytes(b"key\x00"));
        assert!(has_control_bytes(b"key\x1bname"));
        assert!(has_control_bytes(b"key\x7f"));
        assert!(has_control_bytes(b"key\rmid"));
    }
}
