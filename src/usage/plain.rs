//! NDJSON lines that cannot carry the counts, told apart cheaply so the scanner passes them over.

/// Whether a whole NDJSON line (read from the start of a line, see [`Env::is_lines`]) cannot
/// carry the counts: it has no escape (so every name in it is as written), no `eval_count`
/// (nor so `prompt_eval_count`), and no `done"` followed by `:` and a `t`. Then reading it could
/// at most count a token and flag damage, never finish the answer or change its model (known
/// already): it is passed over. Built up from the line's stops, one at a time.
#[derive(Default)]
pub(super) struct PlainLine {
    pub(super) counts: bool,
    pub(super) token: bool,
}

impl PlainLine {
    /// The bytes looked at: the end of the line, an escape, the `d` of `done`, the `_` of
    /// `eval_count`.
    pub(super) const STOPS: [u8; 4] = [b'\n', b'\\', b'd', b'_'];

    /// Looks at the stop at `bytes[at]` (never a newline): only bytes of its own line matter, as
    /// a newline is in none of the words looked for.
    pub(super) fn look_at(&mut self, bytes: &[u8], at: usize) {
        match bytes[at] {
            b'\\' => self.counts = true,
            b'd' if bytes[at..].starts_with(b"done\"") => match value_after(bytes, at + 5) {
                Some(b't') => self.counts = true,
                Some(b'f') => self.token = true,
                _ => {}
            },
            b'_' if bytes[at.saturating_sub(4)..].starts_with(b"eval_count") => self.counts = true,
            _ => {}
        }
    }

    /// `None` if the line may count; else whether it looks like a token.
    pub(super) fn verdict(&self) -> Option<bool> {
        (!self.counts).then_some(self.token)
    }
}

/// After a name's closing quote at `at - 1`: white space, a colon, white space, and the first
/// byte of the value, if the line has them.
pub(super) fn value_after(bytes: &[u8], mut at: usize) -> Option<u8> {
    let white = |at: &mut usize| {
        while bytes.get(*at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            *at += 1;
        }
    };
    white(&mut at);
    if bytes.get(at) != Some(&b':') {
        return None;
    }
    at += 1;
    white(&mut at);
    bytes.get(at).copied()
}
