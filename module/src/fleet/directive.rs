//! `ollama_auth_fleet <name> [options] { server <address> [name=<name>]; ... }` (http), which
//! defines a fleet and its zone, and `ollama_auth_use_fleet <name>` (location).

use std::ffi::{c_char, c_void};

use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_parse, ngx_conf_t, ngx_parse_size, ngx_parse_time, ngx_parse_url, ngx_shared_memory_add,
    ngx_str_t, ngx_url_t, NGX_LOG_EMERG,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_conf_log_error;

use super::shared::{self, Fleet, FleetRef, MemberConf, MAX_MEMBERS};
use crate::conf::LocConf;
use crate::directive::{arguments, attach_to_zone, conf_error, conf_mut};
use crate::module::{module_tag, Module};

const DEFAULT_PORT: u16 = 11434;

/// A `key=value` option of `ollama_auth_fleet`.
fn set_option(fleet: &mut Fleet, option: &ngx_str_t) -> Result<(), ()> {
    let text = option.as_bytes();
    let (key, value) = match text.iter().position(|&b| b == b'=') {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => return Err(()),
    };
    let mut value = ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() };
    match key {
        b"interval" | b"timeout" => {
            // SAFETY: ngx_parse_time reads the string it is given.
            let ms = unsafe { ngx_parse_time(&mut value, 0) };
            if ms <= 0 || ms > 3_600_000 {
                return Err(());
            }
            if key == b"interval" {
                fleet.interval_ms = ms as u64;
            } else {
                fleet.timeout_ms = ms as u64;
            }
        }
        b"fails" => {
            let n = std::str::from_utf8(value.as_bytes()).ok().and_then(|t| t.parse::<u32>().ok()).ok_or(())?;
            fleet.fails = if (1..=100).contains(&n) { n } else { return Err(()) };
        }
        b"max_answer" => {
            // SAFETY: ngx_parse_size reads the string it is given.
            let size = unsafe { ngx_parse_size(&mut value) };
            if !(1024..=(64 << 20)).contains(&size) {
                return Err(());
            }
            fleet.max_answer = size as usize;
        }
        _ => return Err(()),
    }
    Ok(())
}

/// `ollama_auth_fleet <name> [interval=5s] [timeout=3s] [fails=2] [max_answer=4m] { ... }`.
pub extern "C" fn set_fleet(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, _conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx calls directive handlers with the configuration being parsed.
    let args = unsafe { arguments(cf) };
    let name = args[1];
    if name.is_empty() || name.as_bytes().iter().any(|&b| b <= b' ' || b == b'"') {
        return conf_error(c"needs a fleet name");
    }
    let mut fleet = Box::new(Fleet {
        name: name.to_string(),
        members: Vec::new(),
        interval_ms: 5000,
        timeout_ms: 3000,
        fails: 2,
        max_answer: 4 << 20,
        zone: std::ptr::null_mut(),
    });
    for option in &args[2..] {
        if set_option(&mut fleet, option).is_err() {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid \"ollama_auth_fleet\" parameter \"{}\"", option);
            return NGX_CONF_ERROR;
        }
    }
    if fleet.timeout_ms > fleet.interval_ms {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "ollama_auth_fleet \"{}\": timeout= must not exceed interval=", name);
        return NGX_CONF_ERROR;
    }
    // SAFETY: cf is the configuration being parsed; the block's lines go to fleet_line with the
    // fleet as handler_conf, and cf is restored after, as nginx's `types` block does.
    let rv = unsafe {
        let saved = *cf;
        (*cf).handler = Some(fleet_line);
        (*cf).handler_conf = (&mut *fleet as *mut Fleet).cast();
        let rv = ngx_conf_parse(cf, std::ptr::null_mut());
        *cf = saved;
        rv
    };
    if rv != NGX_CONF_OK {
        return rv;
    }
    if fleet.members.is_empty() {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "ollama_auth_fleet \"{}\" has no \"server\"", name);
        return NGX_CONF_ERROR;
    }
    // SAFETY: cf is the configuration being parsed.
    unsafe { finish_fleet(cf, fleet) }
}

/// Gives a parsed fleet its zone and keeps it for the configuration's life.
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn finish_fleet(cf: *mut ngx_conf_t, mut fleet: Box<Fleet>) -> *mut c_char {
    let zone_name = format!("ollama_auth_fleet:{}", fleet.name);
    let size = shared::zone_size(fleet.members.len());
    // SAFETY: cf is valid (the caller's promise); nginx keeps the zone name's pointer, so the
    // name is copied into the configuration's pool first; the tag is this module, as for
    // `ollama_auth_zone`.
    unsafe {
        let Some(mut zone_name_str) = ngx_str_t::from_bytes((*cf).pool, zone_name.as_bytes()) else {
            return NGX_CONF_ERROR;
        };
        let tag = module_tag();
        let zone = ngx_shared_memory_add(cf, &mut zone_name_str, size, tag);
        if zone.is_null() {
            return NGX_CONF_ERROR;
        }
        if !(*zone).data.is_null() {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "duplicate ollama_auth_fleet \"{}\"", fleet.name);
            return NGX_CONF_ERROR;
        }
        fleet.zone = zone;
        let Some(fleet) = attach_to_zone(cf, zone, fleet, Some(shared::init_zone)) else { return NGX_CONF_ERROR };
        match Module::main_conf_mut(&*cf) {
            Some(main) => main.fleets.push(FleetRef(fleet)),
            None => return NGX_CONF_ERROR,
        }
    }
    NGX_CONF_OK
}

/// One line of a fleet block: `server <address> [name=<name>];`.
unsafe extern "C" fn fleet_line(cf: *mut ngx_conf_t, _dummy: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: set_fleet made `conf` this block's Fleet; cf is the configuration being parsed.
    let (fleet, args) = unsafe { (&mut *conf.cast::<Fleet>(), arguments(cf)) };
    if args[0].as_bytes() != b"server" || !(2..=3).contains(&args.len()) {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "ollama_auth_fleet takes only \"server <address> [name=<name>]\" lines, not \"{}\"",
            args[0]
        );
        return NGX_CONF_ERROR;
    }
    if fleet.members.len() >= MAX_MEMBERS {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "ollama_auth_fleet \"{}\": at most {} servers", fleet.name, MAX_MEMBERS);
        return NGX_CONF_ERROR;
    }
    // SAFETY: an all-zero ngx_url_t is how nginx's own modules start one.
    let mut url: ngx_url_t = unsafe { std::mem::zeroed() };
    url.url = args[1];
    url.default_port = DEFAULT_PORT;
    // SAFETY: cf->pool is the configuration's pool; ngx_parse_url resolves the host (as
    // `upstream`'s `server` does) into addresses allocated from it.
    let rc = unsafe { ngx_parse_url((*cf).pool, &mut url) };
    if rc != Status::NGX_OK.0 || url.naddrs == 0 || url.addrs.is_null() {
        let why = if url.err.is_null() {
            "no address".into()
        } else {
            // SAFETY: not NULL: a static C string nginx set.
            unsafe { std::ffi::CStr::from_ptr(url.err) }.to_string_lossy()
        };
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "invalid \"server\" \"{}\" in ollama_auth_fleet \"{}\": {}",
            args[1],
            fleet.name,
            why
        );
        return NGX_CONF_ERROR;
    }
    let host = format!("{}:{}", url.host, url.port);
    let name = match args.get(2) {
        Some(option) => match option.as_bytes().strip_prefix(b"name=") {
            Some(name) if !name.is_empty() && name.iter().all(|&b| b > b' ' && b != b'"' && b < 0x7f) => {
                String::from_utf8_lossy(name).into_owned()
            }
            _ => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "invalid \"server\" parameter \"{}\" in ollama_auth_fleet",
                    option
                );
                return NGX_CONF_ERROR;
            }
        },
        None => host.clone(),
    };
    if fleet.members.iter().any(|m| m.name == name) {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "duplicate server \"{}\" in ollama_auth_fleet \"{}\"", name, fleet.name);
        return NGX_CONF_ERROR;
    }
    // SAFETY: naddrs > 0: the first address nginx resolved, valid for socklen bytes.
    let (sockaddr, socklen) = unsafe {
        let addr = &*url.addrs;
        (std::slice::from_raw_parts(addr.sockaddr.cast::<u8>(), addr.socklen as usize).to_vec(), addr.socklen)
    };
    fleet.members.push(MemberConf { name, sockaddr, socklen, host });
    NGX_CONF_OK
}

/// `ollama_auth_use_fleet <name>`: this location's requests go to the fleet's members.
pub extern "C" fn set_use_fleet(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's location configuration; cf is being parsed.
    let (conf, args) = unsafe { (conf_mut::<LocConf>(conf), arguments(cf)) };
    if conf.fleet.is_some() {
        return conf_error(c"is duplicate");
    }
    let name = args[1];
    // SAFETY: cf is the configuration being parsed.
    let found = unsafe { Module::main_conf(&*cf) }
        .and_then(|main| main.fleets.iter().copied().find(|fleet| fleet.get().name.as_bytes() == name.as_bytes()));
    match found {
        Some(fleet) => {
            conf.fleet = Some(fleet);
            NGX_CONF_OK
        }
        None => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "\"ollama_auth_use_fleet\": no ollama_auth_fleet \"{}\" defined before",
                name
            );
            NGX_CONF_ERROR
        }
    }
}
