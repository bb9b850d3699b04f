//! The htpasswd file, and a cache that spares repeated checks of the same credential.
//!
//! The cache belongs to one loaded version of the file: a change to the file builds a new table,
//! so everything remembered for any user is forgotten. It holds keyed digests of credentials as
//! presented (the base64 text of `user:password`), never passwords, and only successes; so a
//! repeated credential is admitted without being decoded or hashed again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::cache::VerifiedCache;
use crate::credentials::{decode_basic, DecodeBuffer};
use crate::hashes::PasswordHash;
use crate::lines::{entries, has_control_bytes};
use crate::options::{options_in_comment, parse_options, EntryOptions};
use crate::watch::{Counted, LineWarning, Parse};

/// A user of one loaded version of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserId(u32);

/// What a Basic credential turned out to be. The user name as sent is handed back only for a
/// user the file does not know, for the log line; a known user is named by its [`UserId`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'b> {
    Admitted(UserId),
    WrongPassword(UserId),
    UnknownUser(&'b [u8]),
    /// Not base64 of `user:password` with a user name.
    Malformed,
}

struct User {
    name: Box<[u8]>,
    hash: PasswordHash,
    options: Option<Rc<EntryOptions>>,
}

pub struct UserTable {
    users: Vec<User>,
    by_name: HashMap<Box<[u8]>, UserId>,
    /// The costliest hash of the file, checked when the user is unknown, so that an unknown user
    /// costs at least what any known user's wrong password does.
    decoy: Option<UserId>,
    /// Credentials (as sent) already verified, by keyed digest; see `cache`.
    verified: RefCell<VerifiedCache<UserId>>,
}

impl UserTable {
    /// Checks a Basic credential as presented: the base64 text after `Basic `. A credential
    /// admitted before is neither decoded nor hashed again; otherwise it is decoded into `buffer`.
    pub fn verify_basic<'b>(&self, encoded: &[u8], buffer: &'b mut DecodeBuffer) -> Verdict<'b> {
        if let Some(user) = self.verified.borrow().get(encoded) {
            return Verdict::Admitted(user);
        }
        let Some(credential) = decode_basic(encoded, buffer) else {
            return Verdict::Malformed;
        };
        let verdict = self.verify(credential.user(), credential.password());
        if let Verdict::Admitted(user) = verdict {
            self.verified.borrow_mut().insert(encoded, user);
        }
        verdict
    }

    /// Checks a user and password against the file, paying for the hash.
    pub fn verify<'u>(&self, user: &'u [u8], password: &[u8]) -> Verdict<'u> {
        match self.by_name.get(user) {
            Some(&id) if self.user(id).hash.verify(password) => Verdict::Admitted(id),
            Some(&id) => Verdict::WrongPassword(id),
            None => {
                if let Some(decoy) = self.decoy {
                    self.user(decoy).hash.verify(password);
                }
                Verdict::UnknownUser(user)
            }
        }
    }

    fn user(&self, id: UserId) -> &User {
        &self.users[id.0 as usize]
    }

    /// The user's name as the file spells it, for `$ollama_auth_user` and log lines.
    pub fn name(&self, id: UserId) -> &[u8] {
        &self.user(id).name
    }

    /// The user's options, if the line's comment field holds some.
    pub fn options(&self, id: UserId) -> Option<&Rc<EntryOptions>> {
        self.user(id).options.as_ref()
    }

    /// Whether some user has `tokens=`, `requests=` or `parallel=`.
    pub fn has_limits(&self) -> bool {
        self.users.iter().any(|user| user.options.as_ref().is_some_and(|options| options.has_limits()))
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
        let mut table = UserTable {
            users: Vec::new(),
            by_name: HashMap::new(),
            decoy: None,
            verified: RefCell::new(VerifiedCache::new()),
        };
        let mut warnings = Vec::new();
        for (line, text) in entries(content) {
            let Some(colon) = text.iter().position(|&b| b == b':') else {
                warnings.push(LineWarning { line, reason: "no colon between user and hash".into() });
                continue;
            };
            let user = &text[..colon];
            // As in nginx, the hash ends at the next colon; what follows is a comment, where
            // words holding `=` are options (values may hold colons: times, registry ports).
            let after_user = &text[colon + 1..];
            let (hash_text, comment) = match after_user.iter().position(|&b| b == b':') {
                Some(end) => (&after_user[..end], &after_user[end + 1..]),
                None => (after_user, &b""[..]),
            };
            if user.is_empty() || has_control_bytes(text) {
                warnings.push(LineWarning { line, reason: "empty user name or control character".into() });
                continue;
            }
            let hash = match PasswordHash::parse(hash_text.trim_ascii()) {
                Ok(hash) => hash,
                Err(rejected) => {
                    warnings.push(user_warning(line, user, rejected));
                    continue;
                }
            };
            let option_words = options_in_comment(comment);
            let options = match parse_options(&option_words) {
                Ok(_) if option_words.is_empty() => None,
                Ok(options) => Some(Rc::new(options)),
                Err(error) => {
                    warnings.push(user_warning(line, user, error));
                    continue;
                }
            };
            if table.by_name.contains_key(user) {
                warnings.push(user_warning(line, user, "duplicate user, the first entry is kept"));
                continue;
            }
            let id = UserId(table.users.len() as u32);
            let costliest =
                table.decoy.is_none_or(|decoy| hash.cost_estimate() > table.user(decoy).hash.cost_estimate());
            if costliest {
                table.decoy = Some(id);
            }
            table.by_name.insert(user.into(), id);
            table.users.push(User { name: user.into(), hash, options });
        }
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
        assert_eq!(users.verify(b"alice", b"wonderland"), Verdict::Admitted(UserId(0)));
        assert_eq!(users.verify(b"bob", b"builder"), Verdict::Admitted(UserId(1)));
        assert_eq!(users.name(UserId(1)), b"bob");
        assert_eq!(users.verify(b"alice", b"builder"), Verdict::WrongPassword(UserId(0)));
        assert_eq!(users.verify(b"Alice", b"wonderland"), Verdict::UnknownUser(b"Alice"), "names match exactly");
        assert_eq!(users.verify(b"carol", b"x"), Verdict::UnknownUser(b"carol"));
    }

    fn encoded(user: &str, password: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")).into_bytes()
    }

    /// verify_basic with a buffer of its own, for tests that only look at the outcome's shape.
    fn check(users: &UserTable, encoded: &[u8]) -> String {
        format!("{:?}", users.verify_basic(encoded, &mut DecodeBuffer::new()))
    }

    #[test]
    fn caches_successes_only() {
        let (users, _) = table(FILE);
        assert_eq!(check(&users, &encoded("alice", "nope")), "WrongPassword(UserId(0))");
        assert_eq!(users.cached_pairs(), 0, "a failure is never remembered");
        assert_eq!(check(&users, &encoded("alice", "wonderland")), "Admitted(UserId(0))");
        assert_eq!(users.cached_pairs(), 1);
        assert_eq!(check(&users, &encoded("alice", "wonderland")), "Admitted(UserId(0))");
        assert_eq!(check(&users, &encoded("alice", "wonderlan")), "WrongPassword(UserId(0))");
        assert_eq!(check(&users, &encoded("bob", "wonderland")), "WrongPassword(UserId(1))", "cache is per credential");
        assert_eq!(check(&users, &encoded("carol", "x")), format!("UnknownUser({:?})", b"carol"));
        assert_eq!(check(&users, b"!!notbase64"), "Malformed");
        assert_eq!(check(&users, &encoded("", "wonderland")), "Malformed");
        assert_eq!(users.cached_pairs(), 1);
    }

    #[test]
    fn a_reload_forgets_cached_successes() {
        let (users, _) = table(FILE);
        assert_eq!(check(&users, &encoded("alice", "wonderland")), "Admitted(UserId(0))");
        // A new version of the file is a new table, with an empty cache.
        let (changed, _) = table("alice:{PLAIN}new\n");
        assert_eq!(check(&changed, &encoded("alice", "wonderland")), "WrongPassword(UserId(0))");
        assert_eq!(check(&changed, &encoded("alice", "new")), "Admitted(UserId(0))");
    }

    #[test]
    fn skipped_lines_name_line_and_user_but_not_the_hash() {
        let text =
            "des:lZu0wOMcIYesE\nplain:mypassword\nnocolon\n:{PLAIN}x\nok:{PLAIN}x\nok:{PLAIN}y\nctl:{PLAIN}a\x01b\n";
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
    fn options_in_the_comment_field() {
        let text = "alice:{PLAIN}a:scopes=read,infer models=llama3* a note\n\
                    bob:{PLAIN}b:just a comment\n\
                    carol:{PLAIN}c:expires=2030-01-01T00:00:00+01:00\n\
                    dave:{PLAIN}d:scopes=root\n";
        let (users, warnings) = table(text);
        assert_eq!(users.len(), 3);
        let id = |name: &[u8]| match users.verify(name, &name[..1]) {
            Verdict::Admitted(id) => id,
            other => panic!("{other:?}"),
        };
        let alice = users.options(id(b"alice")).unwrap();
        assert_eq!(alice.scopes.unwrap().to_string(), "read,infer");
        assert!(users.options(id(b"bob")).is_none(), "words without = stay a comment");
        assert!(users.options(id(b"carol")).unwrap().expires.is_some(), "a time with colons");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].line == 4 && warnings[0].reason.contains("\"dave\""), "{warnings:?}");
    }

    #[test]
    fn utf8_user_names_and_fields_after_the_hash() {
        let (users, warnings) = table("jürgen:{PLAIN}pässwort:a comment\n");
        assert!(warnings.is_empty());
        assert_eq!(users.verify("jürgen".as_bytes(), "pässwort".as_bytes()), Verdict::Admitted(UserId(0)));
    }

    /// How long a wrong password takes for a known user and for an unknown one.
    fn known_and_unknown(users: &UserTable, known: &[u8]) -> (std::time::Duration, std::time::Duration) {
        let time = |user: &[u8]| {
            let start = std::time::Instant::now();
            users.verify(user, b"guess");
            start.elapsed()
        };
        (time(known), time(b"nobody"))
    }

    #[test]
    fn unknown_user_pays_for_a_decoy_check() {
        let (users, _) = table("slow:$2y$08$3/JwCvpj/Y5LYmFO8Q2eYuOsK1MGDn39kitDxeJ0XkrwW7Jjzyt16\n");
        let (known, unknown) = known_and_unknown(&users, b"slow");
        // Both run a cost-8 bcrypt (about 15 ms); without the decoy the unknown user takes microseconds.
        assert!(unknown * 4 > known, "known {known:?}, unknown {unknown:?}");
    }

    #[test]
    fn the_decoy_is_the_costliest_hash_not_the_first() {
        // With `{PLAIN}` first, a decoy taken from the first line cost 1 µs against 67 ms for a
        // known bcrypt user: the timing told who exists.
        let text = "cheap:{PLAIN}x\nmd5:$apr1$QLQCSmbm$POW5D6uJk.qH.dFACC.xC.\n\
                    slow:$2y$08$3/JwCvpj/Y5LYmFO8Q2eYuOsK1MGDn39kitDxeJ0XkrwW7Jjzyt16\nplain2:{PLAIN}y\n";
        let (users, _) = table(text);
        assert_eq!(users.decoy, Some(UserId(2)));
        let (known, unknown) = known_and_unknown(&users, b"slow");
        assert!(unknown * 4 > known, "known {known:?}, unknown {unknown:?}");
    }
}
