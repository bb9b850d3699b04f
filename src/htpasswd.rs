//! The htpasswd file, and a cache that spares repeated checks of the same credential.
//!
//! The cache belongs to one loaded version of the file: a change to the file builds a new table,
//! so everything remembered for any user is forgotten. It holds keyed digests of credentials as
//! presented (the base64 text of `user:password`), never passwords, and only successes; so a
//! repeated credential is admitted without being decoded or hashed again.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::cache::{KeyedDigest, VerifiedCache};
use crate::credentials::{decode_basic, DecodeBuffer};
use crate::hashes::PasswordHash;
use crate::lines::{entries, has_control_bytes};
use crate::watch::{Counted, LineWarning, Parse};

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    UnknownUser,
    WrongPassword,
    /// Not base64 of `user:password` with a user name.
    Malformed,
}

pub struct UserTable {
    users: HashMap<Vec<u8>, PasswordHash>,
    /// Checked when the user is unknown, so that costs what a known user's wrong password does.
    decoy: Option<PasswordHash>,
    /// Keyed digests of credentials (as sent) already verified; see `cache`.
    verified: RefCell<VerifiedCache<()>>,
    digest: KeyedDigest,
}

impl UserTable {
    /// Checks a Basic credential as presented: the base64 text after `Basic `.
    pub fn verify_basic(&self, encoded: &[u8]) -> Verdict {
        let key = self.digest.of(encoded);
        if self.verified.borrow().get(&key).is_some() {
            return Verdict::Admitted;
        }
        let mut buffer = DecodeBuffer::new();
        let Some(credential) = decode_basic(encoded, &mut buffer) else {
            return Verdict::Malformed;
        };
        let verdict = self.verify(credential.user(), credential.password());
        if verdict == Verdict::Admitted {
            self.verified.borrow_mut().insert(&key, ());
        }
        verdict
    }

    /// Checks a user and password against the file, paying for the hash.
    pub fn verify(&self, user: &[u8], password: &[u8]) -> Verdict {
        match self.users.get(user) {
            Some(hash) if hash.verify(password) => Verdict::Admitted,
            Some(_) => Verdict::WrongPassword,
            None => {
                if let Some(decoy) = &self.decoy {
                    decoy.verify(password);
                }
                Verdict::UnknownUser
            }
        }
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    #[cfg(test)]
    fn cached_pairs(&self) -> usize {
        self.verified.borrow().len()
    }
}

impl Counted for UserTable {
    fn entry_count(&self) -> usize {
        self.len()
    }
}

/// Warnings name the line and, where the line has one, the user: user names are not secrets.
fn user_warning(line: usize, user: &[u8], reason: impl std::fmt::Display) -> LineWarning {
    let user = String::from_utf8_lossy(user);
    LineWarning { line, reason: format!("user \"{}\": {reason}", user.escape_debug()) }
}

impl Parse for UserTable {
    const FILE_KIND: &'static str = "basic user file";
    const ENTRY_KIND: &'static str = "users";

    fn parse(content: &[u8]) -> (Self, Vec<LineWarning>) {
        let mut users: HashMap<Vec<u8>, PasswordHash> = HashMap::new();
        let mut first_hash = None;
        let mut warnings = Vec::new();
        for (line, text) in entries(content) {
            let Some(colon) = text.iter().position(|&b| b == b':') else {
                warnings.push(LineWarning { line, reason: "no colon between user and hash".into() });
                continue;
            };
            let user = &text[..colon];
            // As in nginx, the hash ends at the next colon: later fields are comments.
            let rest = &text[colon + 1..];
            let hash_text = rest.split(|&b| b == b':').next().unwrap_or_default().trim_ascii();
            if user.is_empty() || has_control_bytes(text) {
                warnings.push(LineWarning { line, reason: "empty user name or control character".into() });
                continue;
            }
            match PasswordHash::parse(hash_text) {
                Ok(hash) => {
                    if users.contains_key(user) {
                        warnings.push(user_warning(line, user, "duplicate user, the first entry is kept"));
                        continue;
                    }
                    first_hash.get_or_insert_with(|| hash.clone());
                    users.insert(user.to_vec(), hash);
                }
                Err(rejected) => warnings.push(user_warning(line, user, rejected)),
            }
        }
        let table = UserTable { users, decoy: first_hash, verified: RefCell::new(VerifiedCache::new()), digest: KeyedDigest::new() };
        (table, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by Debian's htpasswd: alice/wonderland (bcrypt cost 5), bob/builder (apr1).
    const FILE: &str = "alice:$2y$05$CqCSiysJ7w2wWDCh.wJMp.YxwDfIn34NKIXibsKCt6cTG47hDdgzG\r\n\
                        # comment\n\
                        bob:$apr1$QLQCSmbm$POW5D6uJk.qH.dFACC.xC.\n";

    fn table(text: &str) -> (UserTable, Vec<LineWarning>) {
        UserTable::parse(text.as_bytes())
    }

    #[test]
    fn verifies_users_from_an_htpasswd_file() {
        let (users, warnings) = table(FILE);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(users.len(), 2);
        assert_eq!(users.verify(b"alice", b"wonderland"), Verdict::Admitted);
        assert_eq!(users.verify(b"bob", b"builder"), Verdict::Admitted);
        assert_eq!(users.verify(b"alice", b"builder"), Verdict::WrongPassword);
        assert_eq!(users.verify(b"Alice", b"wonderland"), Verdict::UnknownUser, "names match exactly");
        assert_eq!(users.verify(b"carol", b"x"), Verdict::UnknownUser);
    }

    fn encoded(user: &str, password: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")).into_bytes()
    }

    #[test]
    fn caches_successes_only() {
        let (users, _) = table(FILE);
        assert_eq!(users.verify_basic(&encoded("alice", "nope")), Verdict::WrongPassword);
        assert_eq!(users.cached_pairs(), 0, "a failure is never remembered");
        assert_eq!(users.verify_basic(&encoded("alice", "wonderland")), Verdict::Admitted);
        assert_eq!(users.cached_pairs(), 1);
        assert_eq!(users.verify_basic(&encoded("alice", "wonderland")), Verdict::Admitted);
        assert_eq!(users.verify_basic(&encoded("alice", "wonderlan")), Verdict::WrongPassword);
        assert_eq!(users.verify_basic(&encoded("bob", "wonderland")), Verdict::WrongPassword, "cache is per credential");
        assert_eq!(users.verify_basic(&encoded("carol", "x")), Verdict::UnknownUser);
        assert_eq!(users.verify_basic(b"!!notbase64"), Verdict::Malformed);
        assert_eq!(users.verify_basic(&encoded("", "wonderland")), Verdict::Malformed);
        assert_eq!(users.cached_pairs(), 1);
    }

    #[test]
    fn a_reload_forgets_cached_successes() {
        let (users, _) = table(FILE);
        assert_eq!(users.verify_basic(&encoded("alice", "wonderland")), Verdict::Admitted);
        // A new version of the file is a new table, with an empty cache.
        let (changed, _) = table("alice:{PLAIN}new\n");
        assert_eq!(changed.verify_basic(&encoded("alice", "wonderland")), Verdict::WrongPassword);
        assert_eq!(changed.verify_basic(&encoded("alice", "new")), Verdict::Admitted);
    }

    #[test]
    fn skipped_lines_name_line_and_user_but_not_the_hash() {
        let text = "des:lZu0wOMcIYesE\nplain:mypassword\nnocolon\n:{PLAIN}x\nok:{PLAIN}x\nok:{PLAIN}y\nctl:{PLAIN}a\x01b\n";
        let (users, warnings) = table(text);
        assert_eq!(users.len(), 1);
        let summary: Vec<(usize, &str)> = warnings.iter().map(|w| (w.line, w.reason.as_str())).collect();
        assert_eq!(summary[0].0, 1);
        assert!(summary[0].1.contains("\"des\"") && summary[0].1.contains("DES"));
        assert_eq!(summary[1].0, 2);
        assert!(summary[1].1.contains("\"plain\"") && summary[1].1.contains("plaintext"));
        assert_eq!(warnings.iter().map(|w| w.line).collect::<Vec<_>>(), [1, 2, 3, 4, 6, 7]);
        for warning in &warnings {
            assert!(!warning.reason.contains("lZu0") && !warning.reason.contains("mypassword"));
        }
    }

    #[test]
    fn utf8_user_names_and_fields_after_the_hash() {
        let (users, warnings) = table("jürgen:{PLAIN}pässwort:a comment\n");
        assert!(warnings.is_empty());
        assert_eq!(users.verify("jürgen".as_bytes(), "pässwort".as_bytes()), Verdict::Admitted);
    }

    #[test]
    fn unknown_user_pays_for_a_decoy_check() {
        let (users, _) = table("slow:$2y$08$3/JwCvpj/Y5LYmFO8Q2eYuOsK1MGDn39kitDxeJ0XkrwW7Jjzyt16\n");
        let time = |user: &[u8]| {
            let start = std::time::Instant::now();
            users.verify(user, b"guess");
            start.elapsed()
        };
        let (known, unknown) = (time(b"slow"), time(b"nobody"));
        // Both run a cost-8 bcrypt (about 15 ms); without the decoy the unknown user takes microseconds.
        assert!(unknown * 4 > known, "known {known:?}, unknown {unknown:?}");
    }
}
