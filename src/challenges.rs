//! The `WWW-Authenticate` challenges a 401 carries, for one realm (`ollama_auth_realm`).

use std::borrow::Cow;

/// The `Bearer` and `Basic` challenges of one realm, made once at configuration time so that a
/// 401 allocates nothing for them.
pub struct Challenges {
    pub bearer: Cow<'static, [u8]>,
    pub basic: Cow<'static, [u8]>,
}

impl Challenges {
    /// `<scheme> realm="…"`, the realm a quoted-string as RFC 9110 asks (`"` and `\` escaped).
    /// A realm with control characters cannot be one: `None`.
    pub fn for_realm(realm: &[u8]) -> Option<Self> {
        if realm.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return None;
        }
        let mut quoted = Vec::with_capacity(realm.len() + 2);
        for &byte in realm {
            if byte == b'"' || byte == b'\\' {
                quoted.push(b'\\');
            }
            quoted.push(byte);
        }
        let value = |scheme: &[u8]| [scheme, b" realm=\"", &quoted, b"\""].concat();
        Some(Challenges { bearer: Cow::Owned(value(b"Bearer")), basic: Cow::Owned(value(b"Basic")) })
    }

    /// The challenges where no `ollama_auth_realm` is given.
    pub fn default_realm() -> &'static Challenges {
        static DEFAULT: Challenges = Challenges {
            bearer: Cow::Borrowed(b"Bearer realm=\"ollama\""),
            basic: Cow::Borrowed(b"Basic realm=\"ollama\""),
        };
        &DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_realm_is_quoted_with_its_quotes_and_backslashes_escaped() {
        let challenges = Challenges::for_realm(br#"my "lab" \ gpu"#).unwrap();
        assert_eq!(&*challenges.bearer, br#"Bearer realm="my \"lab\" \\ gpu""#);
        assert_eq!(&*challenges.basic, br#"Basic realm="my \"lab\" \\ gpu""#);
    }

    #[test]
    fn a_realm_with_control_characters_is_refused() {
        assert!(Challenges::for_realm(b"a\r\nSet-Cookie: x").is_none());
        assert!(Challenges::for_realm(b"tab\there").is_none());
        assert!(Challenges::for_realm(b"del\x7f").is_none());
        assert!(Challenges::for_realm("ollama ü".as_bytes()).is_some());
    }

    #[test]
    fn the_default_realm_is_what_an_explicit_ollama_realm_gives() {
        let explicit = Challenges::for_realm(b"ollama").unwrap();
        assert_eq!(explicit.bearer, Challenges::default_realm().bearer);
        assert_eq!(explicit.basic, Challenges::default_realm().basic);
    }
}
