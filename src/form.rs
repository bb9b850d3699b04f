//! The values of one field of a `multipart/form-data` body, for the model of
//! `/v1/audio/transcriptions` (Ollama reads it with Go's `Request.FormValue`).
//!
//! The reading errs towards finding more: every part whose `Content-Disposition` names the field
//! counts (Go's `FormValue` takes the first one that is not a file), and a part whose header block
//! mentions the field in any way this reader does not follow (a `name*=` parameter, a
//! `Content-Transfer-Encoding`, a folded line) makes the body unreadable, so the caller refuses
//! it rather than guess what Go would read.

use std::borrow::Cow;

/// Why a form body was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormError {
    /// The `Content-Type` is not `multipart/form-data` with a usable boundary.
    NotMultipart,
    /// No boundary line in the body, or a part without its header block's end.
    Malformed,
    /// A part speaks of the field in a way this reader does not follow.
    Unfollowed,
}

/// The boundary of a `multipart/form-data` content type; `None` for another type.
pub fn boundary(content_type: &[u8]) -> Option<Vec<u8>> {
    let (media_type, params) = split_first_param(content_type);
    if !media_type.trim_ascii().eq_ignore_ascii_case(b"multipart/form-data") {
        return None;
    }
    let mut found = None;
    for (name, value) in parameters(params)? {
        if name.contains(&b'*') {
            return None; // Go decodes `boundary*=` (RFC 2231) over `boundary=`: not guessed
        }
        if name.eq_ignore_ascii_case(b"boundary") {
            if found.is_some() {
                return None; // Go refuses a repeated parameter
            }
            found = Some(value);
        }
    }
    found.filter(|value| (1..=70).contains(&value.len()))
}

/// Every value of the parts named `field`, in body order (see the module's rule).
pub fn field_values<'a>(body: &'a [u8], boundary: &[u8], field: &str) -> Result<Vec<Cow<'a, [u8]>>, FormError> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let starts: Vec<usize> = (0..body.len())
        .filter(|&at| (at == 0 || body[at - 1] == b'\n') && body[at..].starts_with(&delimiter))
        .collect();
    // The last delimiter must close the body (`--boundary--`): a body cut short is not read.
    let closed = starts.last().is_some_and(|&last| body[last + delimiter.len()..].starts_with(b"--"));
    if !closed {
        return Err(FormError::Malformed);
    }
    let mut values = Vec::new();
    for pair in starts.windows(2) {
        let (start, next) = (pair[0] + delimiter.len(), pair[1]);
        let line_end = body[start..next].iter().position(|&b| b == b'\n').ok_or(FormError::Malformed)? + start + 1;
        let part = &body[line_end..next];
        let part = part.strip_suffix(b"\n").ok_or(FormError::Malformed)?;
        let part = part.strip_suffix(b"\r").unwrap_or(part);
        let Some((headers, content)) = split_header_block(part) else {
            return Err(FormError::Malformed);
        };
        if names_field(headers, field)? {
            values.push(Cow::Borrowed(content));
        }
    }
    Ok(values)
}

/// The header block and the content of a part.
fn split_header_block(part: &[u8]) -> Option<(&[u8], &[u8])> {
    if let Some(rest) = part.strip_prefix(b"\r\n").or_else(|| part.strip_prefix(b"\n")) {
        return Some((&[], rest)); // no headers
    }
    let crlf = part.windows(4).position(|w| w == b"\r\n\r\n").map(|at| (at, at + 4));
    let lf = part.windows(2).position(|w| w == b"\n\n").map(|at| (at, at + 2));
    let (end, content) = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some((&part[..end], &part[content..]))
}

/// Whether a part's headers name it `field`; `Err` where they mention the field otherwise (a
/// file name such as `model_test.wav`, or a media type, is not a mention).
fn names_field(headers: &[u8], field: &str) -> Result<bool, FormError> {
    // Looked for once: a header block may be most of a large body.
    let anywhere = contains_ignoring_case(headers, field.as_bytes());
    let (mut mentioned, mut named, mut encoded) = (false, false, false);
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| b.is_ascii_whitespace()) {
            // A folded line: what it continues is not followed here.
            if anywhere {
                return Err(FormError::Unfollowed);
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (line[..colon].trim_ascii(), &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            encoded = true;
        }
        if name.eq_ignore_ascii_case(b"content-type") {
            continue;
        }
        if !name.eq_ignore_ascii_case(b"content-disposition") {
            mentioned |= contains_ignoring_case(line, field.as_bytes());
            continue;
        }
        let (disposition, params) = split_first_param(value);
        mentioned |= contains_ignoring_case(disposition, field.as_bytes());
        for (param, text) in parameters(params).ok_or(FormError::Unfollowed)? {
            if param.starts_with(b"name*") {
                return Err(FormError::Unfollowed);
            }
            if param == b"name" && text == field.as_bytes() {
                named = true;
            } else if !param.starts_with(b"filename") {
                mentioned |=
                    contains_ignoring_case(&param, field.as_bytes()) || contains_ignoring_case(&text, field.as_bytes());
            }
        }
    }
    if named && encoded {
        return Err(FormError::Unfollowed); // Go would decode quoted-printable
    }
    if !named && mentioned {
        return Err(FormError::Unfollowed);
    }
    Ok(named)
}

fn contains_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window.eq_ignore_ascii_case(needle))
}

/// The text before the first `;`, and the rest.
fn split_first_param(text: &[u8]) -> (&[u8], &[u8]) {
    match text.iter().position(|&b| b == b';') {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, &[]),
    }
}

/// `name=value` parameters separated by `;`, values plain or quoted (with `\` escapes); names
/// lowercased. `None` for text that is not such a list.
fn parameters(mut text: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut list = Vec::new();
    loop {
        text = text.trim_ascii_start();
        if text.is_empty() {
            return Some(list);
        }
        let equals = text.iter().position(|&b| b == b'=')?;
        let name = text[..equals].trim_ascii().to_ascii_lowercase();
        if name.is_empty() || name.iter().any(|&b| b == b';' || b == b'"') {
            return None;
        }
        text = text[equals + 1..].trim_ascii_start();
        let mut value = Vec::new();
        if let Some(quoted) = text.strip_prefix(b"\"") {
            let mut rest = quoted;
            loop {
                let (&byte, tail) = rest.split_first()?;
                rest = tail;
                match byte {
                    b'"' => break,
                    b'\\' => {
                        let (&escaped, tail) = rest.split_first()?;
                        value.push(escaped);
                        rest = tail;
                    }
                    byte => value.push(byte),
                }
            }
            text = rest.trim_ascii_start();
            match text.split_first() {
                None => {}
                Some((b';', tail)) => text = tail,
                Some(_) => return None,
            }
        } else {
            let end = text.iter().position(|&b| b == b';').unwrap_or(text.len());
            value.extend_from_slice(text[..end].trim_ascii());
            text = text.get(end + 1..).unwrap_or_default();
        }
        list.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, &str)], newline: &str) -> Vec<u8> {
        let mut body = String::new();
        for (headers, content) in parts {
            body.push_str(&format!("--XyZ{newline}{headers}{newline}{newline}{content}{newline}"));
        }
        body.push_str(&format!("--XyZ--{newline}"));
        body.into_bytes()
    }

    fn models(body: &[u8]) -> Result<Vec<String>, FormError> {
        field_values(body, b"XyZ", "model")
            .map(|values| values.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect())
    }

    #[test]
    fn boundaries() {
        assert_eq!(boundary(b"multipart/form-data; boundary=XyZ"), Some(b"XyZ".to_vec()));
        assert_eq!(boundary(b"Multipart/Form-Data;BOUNDARY=\"a b;c\""), Some(b"a b;c".to_vec()));
        assert_eq!(boundary(b"multipart/form-data; charset=x; boundary=q"), Some(b"q".to_vec()));
        assert_eq!(boundary(b"multipart/form-data"), None);
        assert_eq!(boundary(b"multipart/mixed; boundary=q"), None);
        assert_eq!(boundary(b"application/json"), None);
        assert_eq!(boundary(b"multipart/form-data; boundary=a; boundary=b"), None);
        assert_eq!(boundary(b"multipart/form-data; boundary=a; boundary*=utf-8''b"), None);
        assert_eq!(boundary(b"multipart/form-data; boundary*0=a"), None);
        assert_eq!(boundary(b"multipart/form-data; boundary=\"unterminated"), None);
        assert_eq!(boundary(format!("multipart/form-data; boundary={}", "x".repeat(71)).as_bytes()), None);
    }

    #[test]
    fn every_part_named_model_is_found() {
        let file = ("Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"", "RIFF\r\n--Xy\n");
        for newline in ["\r\n", "\n"] {
            let body = form(&[("Content-Disposition: form-data; name=\"model\"", "whisper"), file], newline);
            assert_eq!(models(&body), Ok(vec!["whisper".to_string()]), "{newline:?}");
            let two = form(
                &[
                    ("content-disposition: FORM-DATA; NAME=model", "a"),
                    file,
                    ("Content-Disposition: form-data; name=\"model\"", "b"),
                ],
                newline,
            );
            assert_eq!(models(&two), Ok(vec!["a".to_string(), "b".to_string()]));
        }
        let none = form(&[file], "\r\n");
        assert_eq!(models(&none), Ok(vec![]));
        let preamble =
            [b"ignored preamble\r\n".as_slice(), &form(&[("Content-Disposition: form-data; name=model", "m")], "\r\n")]
                .concat();
        assert_eq!(models(&preamble), Ok(vec!["m".to_string()]));
    }

    #[test]
    fn a_huge_header_block_is_read_in_one_pass() {
        let headers = " x\r\n".repeat(2_000_000);
        let body = form(&[(&format!("Content-Disposition: form-data; name=\"file\"\r\n{headers}X: y"), "z")], "\r\n");
        let started = std::time::Instant::now();
        assert_eq!(models(&body), Ok(vec![]));
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn what_is_not_followed_is_refused() {
        for headers in [
            "Content-Disposition: form-data; name*=utf-8''model",
            "Content-Disposition: form-data;\r\n name=\"model\"",
            "Content-Disposition: form-data; name=\"model\"\r\nContent-Transfer-Encoding: quoted-printable",
            "Content-Disposition: form-data; name=\"mod\\el\"; x=\"",
            "X-Model: 1",
        ] {
            let body = form(&[(headers, "whisper")], "\r\n");
            assert_eq!(models(&body), Err(FormError::Unfollowed), "{headers:?}");
        }
        // A file's name or a media type that holds the word is no mention of the field.
        let file =
            "Content-Disposition: form-data; name=\"file\"; filename=\"model_test.wav\"\r\nContent-Type: audio/x-model";
        assert_eq!(models(&form(&[(file, "RIFF")], "\r\n")), Ok(vec![]));
        assert_eq!(models(b"no boundary here"), Err(FormError::Malformed));
        assert_eq!(models(b"--XyZ\r\nContent-Disposition: form-data; name=model"), Err(FormError::Malformed));
    }
}
