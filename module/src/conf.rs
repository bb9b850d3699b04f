//! The location and main configurations, merged as nginx merges them, and the directives that
//! set only them: `ollama_bearer_keys_file`, `ollama_basic_user_file`, `ollama_auth_realm`,
//! `ollama_auth_default_scopes`, `ollama_auth_path_prefix`, `ollama_auth_json_errors`,
//! `ollama_auth_usage` and `ollama_auth_caps` (the others are in the file of what they set:
//! `zone`, `metrics`, `queue`, `fleet`); and the worker-start readability check of the files
//! they name (the files themselves are `files`).

use std::ffi::{c_char, c_void};
use std::rc::Rc;

use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_int_t, NGX_LOG_EMERG, NGX_LOG_WARN};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, Merge, MergeConfigError};
use ngx::ngx_conf_log_error;

use super::directive::{arguments, conf_error, conf_mut};
use super::files::{check_readable_in_worker, set_file, FileSetting, Registry};
use super::fleet::shared::FleetRef;
use super::module::Module;
use super::queue::store::QueueConf;
use super::zone::data::Zone;
use super::zone::directive::zone_reference;
use ngx_ollama_auth::caps::Caps;
use ngx_ollama_auth::challenges::Challenges;
use ngx_ollama_auth::htpasswd::UserTable;
use ngx_ollama_auth::keys::KeySet;
use ngx_ollama_auth::policy::{outside_ollama_roots, Scopes};

#[derive(Default)]
pub struct LocConf {
    pub keys: FileSetting<KeySet>,
    pub users: FileSetting<UserTable>,
    /// From `ollama_auth_realm`; `None` means the default realm.
    pub challenges: Option<Rc<Challenges>>,
    /// From `ollama_auth_default_scopes`: the scopes of entries without `scopes=`.
    pub default_scopes: Option<Scopes>,
    /// From `ollama_auth_path_prefix`: what comes before Ollama's own paths in this location.
    pub path_prefix: Option<Vec<u8>>,
    /// From `ollama_auth_usage`: `Some(None)` is `off`.
    pub usage: Option<Option<Zone>>,
    /// From `ollama_auth_metrics`: this location answers with the zone's counters.
    pub metrics: Option<Zone>,
    /// From `ollama_auth_json_errors`: nginx's own error pages here answer JSON.
    pub json_errors: Option<bool>,
    /// From `ollama_auth_caps`: the caps of every entry here (an entry's own beat them);
    /// `off` is an empty set.
    pub caps: Option<Caps>,
    /// From `ollama_auth_use_fleet`: requests here are routed to the fleet's members.
    pub fleet: Option<FleetRef>,
    /// From `ollama_auth_queue`: the fair queue this location's inference waits in.
    pub queue: Option<QueueConf>,
}

/// The scopes of entries without `scopes=` when no `ollama_auth_default_scopes` says otherwise.
const DEFAULT_SCOPES: Scopes = Scopes::READ.union(Scopes::INFER);

impl LocConf {
    pub fn is_gated(&self) -> bool {
        self.keys.file().is_some() || self.users.file().is_some()
    }

    pub fn challenges(&self) -> &Challenges {
        self.challenges.as_deref().unwrap_or(Challenges::default_realm())
    }

    pub fn default_scopes(&self) -> Scopes {
        self.default_scopes.unwrap_or(DEFAULT_SCOPES)
    }

    pub fn path_prefix(&self) -> &[u8] {
        self.path_prefix.as_deref().unwrap_or_default()
    }

    /// The zone this location counts usage and limits in.
    pub fn usage_zone(&self) -> Option<Zone> {
        self.usage.flatten()
    }

    pub fn json_errors(&self) -> bool {
        self.json_errors.unwrap_or(false)
    }
}

impl Merge for LocConf {
    fn merge(&mut self, parent: &LocConf) -> Result<(), MergeConfigError> {
        self.keys.inherit(&parent.keys);
        self.users.inherit(&parent.users);
        if self.challenges.is_none() {
            self.challenges = parent.challenges.clone();
        }
        if self.default_scopes.is_none() {
            self.default_scopes = parent.default_scopes;
        }
        if self.path_prefix.is_none() {
            self.path_prefix = parent.path_prefix.clone();
        }
        if self.usage.is_none() {
            self.usage = parent.usage;
        }
        if self.json_errors.is_none() {
            self.json_errors = parent.json_errors;
        }
        if self.caps.is_none() {
            self.caps = parent.caps;
        }
        if self.fleet.is_none() {
            self.fleet = parent.fleet;
        }
        if self.queue.is_none() {
            self.queue = parent.queue;
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct MainConf {
    pub keys: Registry<KeySet>,
    pub users: Registry<UserTable>,
    /// Whether the configuration reads `$ollama_auth_user`; if not, admitted requests need no
    /// label and the access handler allocates nothing for them.
    pub user_variable_used: bool,
    /// Whether it reads `$ollama_model` or the token variables: then every gated answer is
    /// scanned for them, with or without a zone.
    pub usage_variables_used: bool,
    /// The zones `ollama_auth_zone` defines, for the state-file timer.
    pub zones: Vec<Zone>,
    /// The fleets `ollama_auth_fleet` defines, for the poller.
    pub fleets: Vec<FleetRef>,
    /// Whether the configuration reads `$ollama_request_model` (see `fleet::model`).
    pub request_model_used: bool,
}

// SAFETY: the configuration types match the ones create_*_conf allocate for this module.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

// SAFETY: as above.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}

pub extern "C" fn set_keys_file(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration (NGX_HTTP_LOC_CONF_OFFSET) as
    // `conf`, allocated by create_loc_conf as a LocConf; cf is the configuration being parsed.
    unsafe {
        let conf = conf_mut::<LocConf>(conf);
        set_file(cf, &mut conf.keys, || Module::main_conf_mut(&*cf).map(|main| &mut main.keys))
    }
}

pub extern "C" fn set_user_file(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: as in set_keys_file.
    unsafe {
        let conf = conf_mut::<LocConf>(conf);
        set_file(cf, &mut conf.users, || Module::main_conf_mut(&*cf).map(|main| &mut main.users))
    }
}

pub extern "C" fn set_realm(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: as in set_keys_file; NGX_CONF_TAKE1 guarantees one argument.
    let (conf, value) = unsafe { (conf_mut::<LocConf>(conf), &arguments(cf)[1]) };
    if conf.challenges.is_some() {
        return conf_error(c"is duplicate");
    }
    let Some(challenges) = Challenges::for_realm(value.as_bytes()) else {
        return conf_error(c"must not contain control characters");
    };
    conf.challenges = Some(Rc::new(challenges));
    NGX_CONF_OK
}

pub extern "C" fn set_default_scopes(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: as in set_keys_file; NGX_CONF_TAKE1 guarantees one argument.
    let (conf, value) = unsafe { (conf_mut::<LocConf>(conf), &arguments(cf)[1]) };
    if conf.default_scopes.is_some() {
        return conf_error(c"is duplicate");
    }
    match value.to_str().map_err(|_| "not UTF-8".to_string()).and_then(Scopes::parse) {
        Ok(scopes) => {
            conf.default_scopes = Some(scopes);
            NGX_CONF_OK
        }
        Err(reason) => {
            // The conf is no secret: name the value, and the item that is not a scope.
            let text = String::from_utf8_lossy(value.as_bytes());
            let detail = match text.split(',').find(|item| Scopes::parse(item).is_err()) {
                Some(item) if !item.is_empty() => {
                    let names: Vec<&str> = Scopes::NAMES
                        .iter()
                        .filter(|&&(scope, _)| scope != Scopes::ALL)
                        .map(|&(_, name)| name)
                        .chain(["all"])
                        .collect();
                    format!("\"{item}\" is not one of {}", names.join(", "))
                }
                _ => reason,
            };
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid \"ollama_auth_default_scopes\" value \"{}\": {}",
                text,
                detail
            );
            NGX_CONF_ERROR
        }
    }
}

pub extern "C" fn set_path_prefix(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: as in set_keys_file; NGX_CONF_TAKE1 guarantees one argument.
    let (conf, value) = unsafe { (conf_mut::<LocConf>(conf), &arguments(cf)[1]) };
    if conf.path_prefix.is_some() {
        return conf_error(c"is duplicate");
    }
    let prefix = value.as_bytes();
    if !prefix.starts_with(b"/") || prefix.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return conf_error(c"must be a path starting with \"/\"");
    }
    conf.path_prefix = Some(prefix.to_vec());
    NGX_CONF_OK
}

pub extern "C" fn set_json_errors(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: as in set_keys_file; NGX_CONF_TAKE1 guarantees one argument.
    let (conf, value) = unsafe { (conf_mut::<LocConf>(conf), &arguments(cf)[1]) };
    if conf.json_errors.is_some() {
        return conf_error(c"is duplicate");
    }
    conf.json_errors = match value.as_bytes() {
        b"on" => Some(true),
        b"off" => Some(false),
        _ => return conf_error(c"must be \"on\" or \"off\""),
    };
    NGX_CONF_OK
}

pub extern "C" fn set_usage(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: as in set_keys_file; NGX_CONF_TAKE1 guarantees one argument.
    let (conf, value) = unsafe { (conf_mut::<LocConf>(conf), &arguments(cf)[1]) };
    if conf.usage.is_some() {
        return conf_error(c"is duplicate");
    }
    if value.as_bytes() == b"off" {
        conf.usage = Some(None);
        return NGX_CONF_OK;
    }
    // SAFETY: cf is the configuration being parsed; size 0 names a zone defined elsewhere
    // (nginx fails the configuration if it never is).
    match unsafe { zone_reference(cf, value, 0) } {
        Some(zone) => {
            conf.usage = Some(Some(zone));
            NGX_CONF_OK
        }
        None => NGX_CONF_ERROR,
    }
}

pub extern "C" fn set_caps(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: as in set_keys_file; NGX_CONF_1MORE guarantees at least one argument after the
    // directive's name.
    let (conf, args) = unsafe { (conf_mut::<LocConf>(conf), &arguments(cf)[1..]) };
    if conf.caps.is_some() {
        return conf_error(c"is duplicate");
    }
    if let [only] = args {
        if only.as_bytes() == b"off" {
            conf.caps = Some(Caps::default());
            return NGX_CONF_OK;
        }
    }
    let words: Option<Vec<&str>> = args.iter().map(|arg| arg.to_str().ok()).collect();
    let parsed = words.ok_or_else(|| "not UTF-8".to_string()).and_then(Caps::parse_words);
    match parsed {
        Ok(caps) => {
            conf.caps = Some(caps);
            NGX_CONF_OK
        }
        Err(reason) => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid \"ollama_auth_caps\" value {}", reason);
            NGX_CONF_ERROR
        }
    }
}

/// Merges a location's settings, then refuses entries with limits where nothing counts them.
pub unsafe extern "C" fn merge_loc_conf(cf: *mut ngx_conf_t, prev: *mut c_void, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes the configuration being merged and two of this module's LocConfs.
    let rc = unsafe { <Module as ngx::http::HttpModule>::merge_loc_conf(cf, prev, conf) };
    if rc != NGX_CONF_OK {
        return rc;
    }
    // SAFETY: as above.
    let conf = unsafe { &*(conf as *const LocConf) };
    // SAFETY: as above; while merging, cf's context is the location being merged.
    unsafe { warn_of_missing_prefix(cf, conf) };
    if conf.usage_zone().is_some() {
        return NGX_CONF_OK;
    }
    let keys = conf
        .keys
        .file()
        .filter(|file| file.borrow().current().has_limits())
        .map(|file| file.borrow().path().to_path_buf());
    let users = conf
        .users
        .file()
        .filter(|file| file.borrow().current().has_limits())
        .map(|file| file.borrow().path().to_path_buf());
    for (kind, path) in [("keys file", keys), ("basic user file", users)] {
        if let Some(path) = path {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "{} \"{}\" has entries with limits (tokens=, requests=, parallel=), which need \
                \"ollama_auth_usage <zone>;\" (and \"ollama_auth_zone\") where it is used",
                kind,
                path.to_string_lossy()
            );
            return NGX_CONF_ERROR;
        }
    }
    NGX_CONF_OK
}

/// Warns (at `nginx -t` too) of a gated location that hands requests to a content handler
/// (`proxy_pass`) under a prefix of its own, such as `location /ollama/ { proxy_pass
/// http://ollama/; }`, without `ollama_auth_path_prefix`: every request there would be refused
/// as an unknown endpoint.
///
/// # Safety
/// `cf` must be the configuration being merged, its context the location `conf` belongs to.
unsafe fn warn_of_missing_prefix(cf: *mut ngx_conf_t, conf: &LocConf) {
    if !conf.is_gated() || conf.path_prefix.is_some() || conf.metrics.is_some() {
        return;
    }
    // SAFETY: the caller's promise: the core module's configuration of this location.
    let Some(core) = (unsafe { ngx::http::NgxHttpCoreModule::location_conf(&*cf) }) else { return };
    let name = core.name.as_bytes();
    if core.handler.is_some() && outside_ollama_roots(name) {
        ngx_conf_log_error!(
            NGX_LOG_WARN,
            cf,
            "location \"{}\" is gated and serves a prefix outside Ollama's /api and /v1 paths: \
             without \"ollama_auth_path_prefix {}\" every request there is refused as an unknown endpoint",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(name.strip_suffix(b"/").unwrap_or(name))
        );
    }
}

/// At worker start, says plainly if the worker's user cannot read a file the master could: the
/// worker keeps serving what the master loaded, but would not see a change.
pub extern "C" fn check_files_in_worker(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx calls init_process with the running cycle, whose configuration (and so this
    // module's main configuration, if there is an http block) is complete and valid.
    let (main, log) = unsafe {
        match Module::main_conf(&*cycle) {
            Some(main) => (main, (*cycle).log),
            None => return Status::NGX_OK.0,
        }
    };
    check_readable_in_worker(&main.keys, log);
    check_readable_in_worker(&main.users, log);
    Status::NGX_OK.0
}
