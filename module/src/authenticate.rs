//! Checks a request's credential against its location's keys file and htpasswd file.

use ngx::ffi::{ngx_cycle, ngx_str_t, NGX_LOG_ERR};
use ngx::http::Request;
use ngx::{ngx_log_debug_http, ngx_log_error};

use std::rc::Rc;

use super::clock::monotonic_ms;
use super::conf::LocConf;
use super::files::refresh;
use ngx_ollama_auth::credentials::{parse_authorization, Credential, DecodeBuffer};
use ngx_ollama_auth::htpasswd::Verdict;
use ngx_ollama_auth::keys::KeyLabel;
use ngx_ollama_auth::options::EntryOptions;
use ngx_ollama_auth::queue::key_hash;
use ngx_ollama_auth::refusal::RefusalReason;

/// What one look at a request's credential found.
pub enum Decision {
    Admitted(Admission),
    Refused(RefusalReason),
}

/// Who was admitted, as far as the rest of the request needs to know.
pub struct Admission {
    /// The label for `$ollama_auth_user` and log lines, in the request pool, when asked for.
    pub label: Option<ngx_str_t>,
    /// The entry's options, if its line has any (shared with the loaded file).
    pub options: Option<Rc<EntryOptions>>,
    /// A Basic user rather than a bearer key, for the wording of refusals.
    pub is_user: bool,
    /// For an entry with limits: what the zone counts them under (`key:` and the key's
    /// fingerprint, or `user:` and the name), never the key.
    pub limit_id: Option<Vec<u8>>,
    /// In a location with `ollama_auth_queue`: a keyed hash of the same id, the key's identity
    /// in the queue.
    pub queue_key: Option<u64>,
}

fn authorization_header(request: &Request) -> &[u8] {
    let header = request.as_ref().headers_in.authorization;
    if header.is_null() {
        return b"";
    }
    // SAFETY: a non-null headers_in.authorization points at a parsed header in the request's
    // header list, whose value stays valid for the request's life.
    unsafe { (*header).value.as_bytes() }
}

/// A name for a log line: key and user names may hold any byte but control characters.
pub fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(name).escape_debug().to_string()
}

/// Checks the request's credential against this location's files. With `want_label`, an admitted
/// request's label is copied into the request pool; otherwise the admitted path allocates nothing.
pub fn authenticate(request: &Request, conf: &LocConf, want_label: bool) -> Decision {
    let now_ms = monotonic_ms();
    // SAFETY: ngx_cycle is nginx's global, written only by this worker's own thread between
    // events; ngx_cycle->log is valid while the cycle runs.
    let cycle_log = unsafe { (*ngx_cycle).log };
    let log = request.log();
    let keys = conf.keys.file();
    let users = conf.users.file();
    if let Some(keys) = keys {
        refresh(keys, now_ms, cycle_log);
    }
    if let Some(users) = users {
        refresh(users, now_ms, cycle_log);
    }
    let admitted = |label: &[u8], options: Option<&Rc<EntryOptions>>, id: &dyn Fn() -> Vec<u8>, is_user: bool| {
        let label = if want_label {
            ngx_log_debug_http!(request, "ollama auth: admitted \"{}\"", shown(label));
            // SAFETY: the request pool lives as long as the request that reads the label.
            unsafe { ngx_str_t::from_bytes(request.as_ref().pool, label) }
        } else {
            None
        };
        let limit_id = options.filter(|options| options.has_limits()).map(|_| id());
        let queue_key = conf.queue.is_some().then(|| match &limit_id {
            Some(id) => key_hash(id),
            None => key_hash(&id()),
        });
        Decision::Admitted(Admission { label, options: options.cloned(), is_user, limit_id, queue_key })
    };

    match parse_authorization(authorization_header(request)) {
        Credential::Bearer(token) => {
            let Some(keys) = keys else {
                ngx_log_debug_http!(request, "ollama auth: bearer credential, but no keys file here");
                return Decision::Refused(RefusalReason::NoCredential);
            };
            // The borrow lasts for this lookup only; nothing in it can reload the file.
            let watched = keys.borrow();
            let keys = watched.current();
            match keys.find(token) {
                Some(found) => {
                    let id = || [b"key:".as_slice(), &keys.fingerprint(found)].concat();
                    let label = if want_label { keys.label(found) } else { KeyLabel::Named(b"") };
                    admitted(label.as_bytes(), keys.options(found), &id, false)
                }
                None => {
                    ngx_log_error!(NGX_LOG_ERR, log, "bearer key not accepted: not in the keys file");
                    Decision::Refused(RefusalReason::UnknownKey)
                }
            }
        }
        Credential::Basic(token) => {
            let Some(users) = users else {
                ngx_log_debug_http!(request, "ollama auth: basic credential, but no user file here");
                return Decision::Refused(RefusalReason::NoCredential);
            };
            let watched = users.borrow();
            let users = watched.current();
            let mut buffer = DecodeBuffer::new();
            match users.verify_basic(token, &mut buffer) {
                Verdict::Admitted(user) => {
                    let id = || [b"user:".as_slice(), users.name(user)].concat();
                    admitted(users.name(user), users.options(user), &id, true)
                }
                Verdict::WrongPassword(id) => {
                    ngx_log_error!(NGX_LOG_ERR, log, "user \"{}\": password mismatch", shown(users.name(id)));
                    Decision::Refused(RefusalReason::WrongPassword)
                }
                Verdict::UnknownUser(name) => {
                    ngx_log_error!(NGX_LOG_ERR, log, "user \"{}\" was not found in the basic user file", shown(name));
                    Decision::Refused(RefusalReason::UnknownUser)
                }
                Verdict::Malformed => {
                    ngx_log_debug_http!(request, "ollama auth: malformed basic credential");
                    Decision::Refused(RefusalReason::MalformedCredential)
                }
            }
        }
        Credential::None => {
            ngx_log_debug_http!(request, "ollama auth: no bearer or basic credential");
            Decision::Refused(RefusalReason::NoCredential)
        }
    }
}
