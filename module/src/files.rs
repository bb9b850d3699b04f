//! The files a configuration names (`ollama_bearer_keys_file`, `ollama_basic_user_file`):
//! loaded once however many locations name them, re-read when they change, and every load and
//! skipped line logged (by number, never by content).

use std::cell::RefCell;
use std::ffi::{c_char, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_conf_full_name, ngx_conf_t, ngx_log_t, ngx_str_t, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_LOG_WARN,
};
use ngx::{ngx_conf_log_error, ngx_log_error};

use super::directive::{arguments, conf_error};
use ngx_ollama_auth::watch::{check_readable, Counted, LineWarning, Parse, Refresh, WatchedFile};

pub type Shared<T> = Rc<RefCell<WatchedFile<T>>>;

/// At most this many skipped-line warnings are logged per load; the rest are counted.
const MAX_LOGGED_WARNINGS: usize = 20;

/// One directive's setting at one level: not given (inherit), `off`, or a file.
#[derive(Default)]
pub enum FileSetting<T> {
    #[default]
    Unset,
    Off,
    File(Shared<T>),
}

impl<T> Clone for FileSetting<T> {
    fn clone(&self) -> Self {
        match self {
            FileSetting::Unset => FileSetting::Unset,
            FileSetting::Off => FileSetting::Off,
            FileSetting::File(file) => FileSetting::File(file.clone()),
        }
    }
}

impl<T> FileSetting<T> {
    pub fn file(&self) -> Option<&Shared<T>> {
        match self {
            FileSetting::File(file) => Some(file),
            _ => None,
        }
    }

    pub fn inherit(&mut self, parent: &Self) {
        if matches!(self, FileSetting::Unset) {
            *self = parent.clone();
        }
    }
}

/// Every file the configuration names, loaded once however many locations name it.
pub struct Registry<T> {
    files: Vec<Shared<T>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry { files: Vec::new() }
    }
}

/// Logs what a load found: the count, and the skipped lines by number (never by content).
pub fn log_loaded<T: Parse>(log: *mut ngx_log_t, path: &Path, entries: usize, warnings: &[LineWarning]) {
    for warning in warnings.iter().take(MAX_LOGGED_WARNINGS) {
        ngx_log_error!(NGX_LOG_WARN, log, "{}", warning.message::<T>(path));
    }
    let path = path.to_string_lossy();
    if warnings.len() > MAX_LOGGED_WARNINGS {
        let more = warnings.len() - MAX_LOGGED_WARNINGS;
        ngx_log_error!(NGX_LOG_WARN, log, "{} \"{}\": {} more lines skipped", T::FILE_KIND, path, more);
    }
    ngx_log_error!(NGX_LOG_NOTICE, log, "{} \"{}\" loaded: {} {}", T::FILE_KIND, path, entries, T::ENTRY_KIND);
}

/// Looks at a watched file if it is time, and logs what changed.
#[inline]
pub fn refresh<T: Parse + Counted>(file: &Shared<T>, now_ms: u64, log: *mut ngx_log_t) {
    if file.borrow().due(now_ms) {
        look_and_log(file, now_ms, log);
    }
}

#[cold]
fn look_and_log<T: Parse + Counted>(file: &Shared<T>, now_ms: u64, log: *mut ngx_log_t) {
    let mut watched = file.borrow_mut();
    match watched.refresh(now_ms) {
        Refresh::Unchanged => {}
        Refresh::Reloaded { entries, warnings } => {
            log_loaded::<T>(log, watched.path(), entries, &warnings);
        }
        Refresh::Failed(error) => {
            let path = watched.path().to_string_lossy();
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "{} \"{}\" cannot be read, still using the last good version: {}",
                T::FILE_KIND,
                path,
                error
            );
        }
    }
}

/// Resolves a path the way `auth_basic_user_file` does: relative to nginx's configuration prefix.
///
/// # Safety
/// `cf` must be the configuration being parsed and `name` one of its arguments.
unsafe fn full_path(cf: *mut ngx_conf_t, name: &ngx_str_t) -> Option<PathBuf> {
    let mut resolved = *name;
    // SAFETY: cf->cycle is valid while a configuration is parsed (the caller's promise);
    // ngx_conf_full_name allocates the resolved path from the cycle's pool, which outlives this.
    if unsafe { ngx_conf_full_name((*cf).cycle, &mut resolved, 1) } != Status::NGX_OK.0 {
        return None;
    }
    Some(PathBuf::from(OsStr::from_bytes(resolved.as_bytes())))
}

/// The handler shared by both file directives.
///
/// # Safety
/// `cf` must be the configuration being parsed, holding this directive's arguments.
pub unsafe fn set_file<T: Parse + Counted + 'static>(
    cf: *mut ngx_conf_t,
    setting: &mut FileSetting<T>,
    registry: impl FnOnce() -> Option<&'static mut Registry<T>>,
) -> *mut c_char {
    if !matches!(setting, FileSetting::Unset) {
        return conf_error(c"is duplicate");
    }
    // SAFETY: the caller passes the configuration being parsed, whose args hold the directive
    // and its arguments; NGX_CONF_TAKE1 guarantees exactly one argument.
    let value = unsafe { &arguments(cf)[1] };
    if value.as_bytes() == b"off" {
        *setting = FileSetting::Off;
        return NGX_CONF_OK;
    }
    if value.is_empty() {
        return conf_error(c"needs a file path or \"off\"");
    }
    // SAFETY: cf and value are the configuration being parsed and its argument.
    let Some(path) = (unsafe { full_path(cf, value) }) else {
        return NGX_CONF_ERROR;
    };
    let Some(registry) = registry() else {
        return NGX_CONF_ERROR;
    };
    if let Some(existing) = registry.files.iter().find(|file| file.borrow().path() == path) {
        *setting = FileSetting::File(existing.clone());
        return NGX_CONF_OK;
    }
    match WatchedFile::<T>::load(path.clone()) {
        Ok((watched, warnings)) => {
            // SAFETY: cf->log is valid while the configuration is parsed.
            log_loaded::<T>(unsafe { (*cf).log }, &path, watched.current().entry_count(), &warnings);
            let shared = Rc::new(RefCell::new(watched));
            registry.files.push(shared.clone());
            *setting = FileSetting::File(shared);
            NGX_CONF_OK
        }
        Err(error) => {
            let shown = path.to_string_lossy();
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "cannot load {} \"{}\": {}", T::FILE_KIND, shown, error);
            NGX_CONF_ERROR
        }
    }
}

/// Says plainly, at worker start, if the worker's user cannot read a file the master could.
pub fn check_readable_in_worker<T: Parse + Counted>(registry: &Registry<T>, log: *mut ngx_log_t) {
    for file in &registry.files {
        let watched = file.borrow();
        if let Err(error) = check_readable(watched.path()) {
            let path = watched.path().to_string_lossy();
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "{} \"{}\" cannot be read by this worker process ({}); \
                serving the version the master loaded, and changes to the file will not be seen until \
                the worker can read it (check the file's owner and mode against the \"user\" directive)",
                T::FILE_KIND,
                path,
                error
            );
        }
    }
}
