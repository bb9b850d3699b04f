//! `ollama_auth_zone <name> <size> [state=<path>]`, and the zone a directive names.

use std::ffi::{c_char, c_void, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_core_conf_t, ngx_core_module, ngx_parse_size, ngx_shared_memory_add, ngx_str_t,
    NGX_LOG_EMERG,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_conf_log_error;

use super::data::{init_zone, Zone, ZoneConf};
use crate::directive::{arguments, attach_to_zone, conf_error};
use crate::module::{module_tag, Module};
use ngx_ollama_auth::watch::check_writable_dir;

const MIN_ZONE_SIZE: usize = 64 * 1024;

/// The zone `name` as a directive names it: the entry nginx keeps per name, made on first use.
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn zone_reference(cf: *mut ngx_conf_t, name: &ngx_str_t, size: usize) -> Option<Zone> {
    let mut name = *name;
    // SAFETY: cf is valid (the caller's promise); the tag is this module, as nginx's own modules
    // tag their zones, so another module's zone of the same name is refused by nginx.
    let shm_zone = unsafe { ngx_shared_memory_add(cf, &mut name, size, module_tag()) };
    if shm_zone.is_null() {
        return None;
    }
    Some(Zone(shm_zone))
}

/// `ollama_auth_zone <name> <size> [state=<path>]`.
pub extern "C" fn set_zone(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx calls directive handlers with the configuration being parsed, whose args
    // hold the directive and its 2 or 3 arguments (NGX_CONF_TAKE23).
    let args = unsafe { arguments(cf) };
    let name = args[1];
    if name.is_empty() || name.as_bytes().iter().any(|&b| b <= b' ') {
        return conf_error(c"needs a zone name");
    }
    let mut size_arg = args[2];
    // SAFETY: ngx_parse_size reads the string it is given.
    let size = unsafe { ngx_parse_size(&mut size_arg) };
    if size < 0 {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid zone size \"{}\"", args[2]);
        return NGX_CONF_ERROR;
    }
    if (size as usize) < MIN_ZONE_SIZE {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "zone \"{}\" is too small: at least 64k", name);
        return NGX_CONF_ERROR;
    }
    let mut state_path = None;
    if let Some(option) = args.get(3) {
        let Some(path) = option.as_bytes().strip_prefix(b"state=").filter(|path| !path.is_empty()) else {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid parameter \"{}\": only state=<path>", option);
            return NGX_CONF_ERROR;
        };
        let mut full = ngx_str_t { len: path.len(), data: path.as_ptr().cast_mut() };
        // SAFETY: cf->cycle is valid while parsing; the resolved path is from the cycle's pool.
        if unsafe { ngx::ffi::ngx_conf_full_name((*cf).cycle, &mut full, 1) } != Status::NGX_OK.0 {
            return NGX_CONF_ERROR;
        }
        let path = PathBuf::from(OsStr::from_bytes(full.as_bytes()));
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        // SAFETY: cf->cycle is valid while parsing.
        let (uid, gid) = unsafe { worker_user(cf) };
        if let Err(reason) = check_writable_dir(&dir, uid, gid) {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "ollama_auth_zone \"{}\": state file cannot be written: {}",
                name,
                reason
            );
            return NGX_CONF_ERROR;
        }
        state_path = Some(path);
    }
    // SAFETY: cf is the configuration being parsed.
    let Some(zone) = (unsafe { zone_reference(cf, &name, size as usize) }) else {
        return NGX_CONF_ERROR;
    };
    // SAFETY: the entry nginx just returned; its data is NULL unless this name was defined
    // before in this configuration.
    unsafe {
        if !(*zone.0).data.is_null() {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "duplicate zone \"{}\"", name);
            return NGX_CONF_ERROR;
        }
        let conf = Box::new(ZoneConf::new(name.to_string(), state_path));
        if attach_to_zone(cf, zone.0, conf, Some(init_zone)).is_none() {
            return NGX_CONF_ERROR;
        }
        if let Some(main) = Module::main_conf_mut(&*cf) {
            main.zones.push(zone);
        }
    }
    NGX_CONF_OK
}

/// The user and group worker processes will run as: `user`'s, or nobody's when the master runs
/// as root without one (as nginx does), else the master's own.
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn worker_user(cf: *mut ngx_conf_t) -> (u32, u32) {
    // SAFETY: geteuid and getegid cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid != 0 {
        return (euid, egid);
    }
    // SAFETY: the core module's configuration exists from the start of parsing; `user`, if
    // given before the http block, has set it.
    let (user, group) = unsafe {
        let ccf = *(*(*cf).cycle).conf_ctx.add(ngx_core_module.index) as *const ngx_core_conf_t;
        ((*ccf).user, (*ccf).group)
    };
    if user != u32::MAX {
        return (user, group);
    }
    // SAFETY: getpwnam returns NULL or a valid static record.
    match unsafe { libc::getpwnam(c"nobody".as_ptr()).as_ref() } {
        Some(nobody) => (nobody.pw_uid, nobody.pw_gid),
        None => (65534, 65534),
    }
}
