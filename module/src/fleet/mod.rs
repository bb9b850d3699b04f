//! Several Ollama servers behind one gate: `ollama_auth_fleet <name> { server ...; }` (http)
//! defines a fleet, polled for its models (`poll`) into a shared zone (`shared`);
//! `ollama_auth_use_fleet <name>` (location) routes a location's requests through it
//! (`route`), by the model the request names (`model`, which also gives
//! `$ollama_request_model`); members that fail requests are marked down (`health`). The plain
//! rules are `ngx_ollama_auth::fleet`.

pub mod health;
pub mod model;
pub mod poll;
pub mod route;
pub mod shared;

use std::ffi::{c_char, c_void};

use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_array_push, ngx_command_t, ngx_conf_parse, ngx_conf_t, ngx_cycle_t, ngx_http_add_variable, ngx_http_handler_pt,
    ngx_http_phases_NGX_HTTP_LOG_PHASE, ngx_http_phases_NGX_HTTP_PREACCESS_PHASE,
    ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE, ngx_http_request_t, ngx_int_t, ngx_parse_size, ngx_parse_time,
    ngx_parse_url, ngx_pool_cleanup_add, ngx_shared_memory_add, ngx_str_t, ngx_url_t, ngx_variable_value_t,
    NGX_HTTP_VAR_NOCACHEABLE, NGX_LOG_EMERG,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request};
use ngx::ngx_conf_log_error;

use crate::conf::LocConf;
use crate::{conf_error, Module};
use ngx_ollama_auth::fleet::{render_members, MemberMetrics};
use shared::{Fleet, FleetRef, MemberConf, MAX_MEMBERS};

const REQUEST_MODEL: &str = "ollama_request_model";
const BACKEND: &str = "ollama_fleet_backend";
const DEFAULT_PORT: u16 = 11434;

type Getter = unsafe extern "C" fn(*mut ngx_http_request_t, *mut ngx_variable_value_t, usize) -> ngx_int_t;

/// Whether this location reads the body of a model-bearing request for its model: it routes
/// through a fleet, or it is gated and the configuration reads `$ollama_request_model`.
pub fn reads_model_here(request: &Request, conf: &LocConf) -> bool {
    conf.fleet.is_some() || (conf.is_gated() && Module::main_conf(request).is_some_and(|main| main.request_model_used))
}

/// Fills a variable's value with `text` (bytes that outlive the request), or the empty string.
///
/// # Safety
/// `text` must live as long as the request.
unsafe fn fill(value: &mut ngx_variable_value_t, text: Option<&[u8]>) -> ngx_int_t {
    let text = text.map(|text| ngx_str_t { len: text.len(), data: text.as_ptr().cast_mut() });
    super::variables::fill(value, text)
}

unsafe extern "C" fn get_request_model(
    r: *mut ngx_http_request_t,
    value: *mut ngx_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: nginx calls variable handlers with a valid request, whose main request is valid
    // for as long as it is.
    let main = unsafe { Request::from_ngx_http_request((*r).main) };
    let pool = main.as_ref().pool;
    let model = Module::location_conf(main).and_then(|conf| model::model_of(main, conf));
    // SAFETY: the request pool outlives the variable's use in this request.
    let text = model.and_then(|model| unsafe { ngx_str_t::from_bytes(pool, model.as_bytes()) });
    // SAFETY: nginx hands variable handlers a valid value slot; the text is in the request pool.
    unsafe { fill(&mut *value, text.as_ref().map(|text| text.as_bytes())) }
}

/// Registers the variables. Called in preconfiguration.
///
/// # Safety
/// `cf` must be the configuration being loaded.
pub unsafe fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    for (name, getter) in [(REQUEST_MODEL, get_request_model as Getter), (BACKEND, route::get_backend as Getter)] {
        let mut name = ngx_str_t { len: name.len(), data: name.as_ptr().cast_mut() };
        // SAFETY: cf is valid during preconfiguration; nginx copies the name.
        let variable = unsafe { ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as usize) };
        if variable.is_null() {
            return Status::NGX_ERROR.0;
        }
        // SAFETY: non-null: the variable nginx just added.
        unsafe { (*variable).get_handler = Some(getter) };
    }
    Status::NGX_OK.0
}

/// Adds a handler to a phase.
///
/// # Safety
/// `cf` must be the configuration being loaded, in postconfiguration.
unsafe fn add_handler(cf: *mut ngx_conf_t, phase: u32, handler: ngx_http_handler_pt) -> ngx_int_t {
    // SAFETY: cf is valid during postconfiguration (the caller's promise).
    let Some(core) = NgxHttpCoreModule::main_conf_mut(unsafe { &*cf }) else { return Status::NGX_ERROR.0 };
    // SAFETY: the phase's handler array exists in the core main configuration during
    // postconfiguration; ngx_array_push returns room for one element or NULL.
    let slot = unsafe { ngx_array_push(&mut core.phases[phase as usize].handlers) }.cast::<ngx_http_handler_pt>();
    if slot.is_null() {
        return Status::NGX_ERROR.0;
    }
    // SAFETY: non-null room for one handler pointer.
    unsafe { *slot = handler };
    Status::NGX_OK.0
}

/// Notes whether the configuration reads `$ollama_request_model`, and adds the phase handlers
/// only where something needs them.
///
/// # Safety
/// `cf` must be the configuration being loaded, in postconfiguration.
pub unsafe fn install(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: cf is valid during postconfiguration (the caller's promise).
    let cfr = unsafe { &*cf };
    let Some(core) = NgxHttpCoreModule::main_conf(cfr) else { return Status::NGX_ERROR.0 };
    // SAFETY: the core module's `variables` array holds ngx_http_variable_t elements.
    let variables = unsafe { core.variables.as_slice::<ngx::ffi::ngx_http_variable_t>() };
    let used = variables.iter().any(|variable| variable.name.as_bytes() == REQUEST_MODEL.as_bytes());
    let Some(main) = Module::main_conf_mut(cfr) else { return Status::NGX_ERROR.0 };
    main.request_model_used = used;
    let fleets = !main.fleets.is_empty();
    if used || fleets {
        let phase = ngx_http_phases_NGX_HTTP_PREACCESS_PHASE;
        // SAFETY: as this function's caller promises.
        if unsafe { add_handler(cf, phase, Some(model::preaccess_handler)) } != Status::NGX_OK.0 {
            return Status::NGX_ERROR.0;
        }
    }
    if fleets {
        let phase = ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE;
        // SAFETY: as above.
        if unsafe { add_handler(cf, phase, Some(route::precontent_handler)) } != Status::NGX_OK.0 {
            return Status::NGX_ERROR.0;
        }
        // SAFETY: as above.
        return unsafe { add_handler(cf, ngx_http_phases_NGX_HTTP_LOG_PHASE, Some(health::log_handler)) };
    }
    Status::NGX_OK.0
}

/// At worker start: the poller's timer.
/// The metrics of every fleet's members (see `ngx_ollama_auth::fleet::render_members`).
pub fn exposition(request: &Request) -> Vec<u8> {
    let Some(main) = Module::main_conf(request) else { return Vec::new() };
    let mut members = Vec::new();
    for fleet in main.fleets.iter().map(|fleet| fleet.get()) {
        let Some(held) = fleet.lock() else { continue };
        for (conf, state) in fleet.members.iter().zip(held.members.iter()) {
            members.push((fleet.name.clone(), conf.name.clone(), state.up, state.busy, state.requests));
        }
    }
    let members: Vec<MemberMetrics<'_>> = members
        .iter()
        .map(|(fleet, backend, up, in_flight, requests)| MemberMetrics {
            fleet,
            backend,
            up: *up,
            in_flight: *in_flight,
            requests: *requests,
        })
        .collect();
    render_members(&members)
}

pub fn start_in_worker(cycle: *mut ngx_cycle_t) {
    // SAFETY: init_process gets the running cycle, whose configuration is complete.
    let Some(main) = (unsafe { Module::main_conf(&*cycle) }) else { return };
    poll::start_ticking(main.fleets.clone());
}

/// The arguments of the directive being parsed.
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: cf->args holds the directive and its arguments while it is parsed.
    unsafe { (*(*cf).args).as_slice::<ngx_str_t>() }
}

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
    let args = unsafe { args(cf) };
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
        let tag = std::ptr::addr_of_mut!(crate::ngx_http_ollama_auth_module).cast();
        let zone = ngx_shared_memory_add(cf, &mut zone_name_str, size, tag);
        if zone.is_null() {
            return NGX_CONF_ERROR;
        }
        if !(*zone).data.is_null() {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "duplicate ollama_auth_fleet \"{}\"", fleet.name);
            return NGX_CONF_ERROR;
        }
        fleet.zone = zone;
        let cleanup = ngx_pool_cleanup_add((*cf).pool, 0);
        if cleanup.is_null() {
            return NGX_CONF_ERROR;
        }
        let fleet = Box::into_raw(fleet);
        (*cleanup).data = fleet.cast();
        (*cleanup).handler = Some(drop_fleet);
        (*zone).data = fleet.cast();
        (*zone).init = Some(shared::init_zone);
        match Module::main_conf_mut(&*cf) {
            Some(main) => main.fleets.push(FleetRef(fleet)),
            None => return NGX_CONF_ERROR,
        }
    }
    NGX_CONF_OK
}

unsafe extern "C" fn drop_fleet(data: *mut c_void) {
    // SAFETY: registered by finish_fleet for the box it leaked; run once, when the
    // configuration's pool goes, after every request and timer of that configuration.
    drop(unsafe { Box::from_raw(data.cast::<Fleet>()) });
}

/// One line of a fleet block: `server <address> [name=<name>];`.
unsafe extern "C" fn fleet_line(cf: *mut ngx_conf_t, _dummy: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: set_fleet made `conf` this block's Fleet; cf is the configuration being parsed.
    let (fleet, args) = unsafe { (&mut *conf.cast::<Fleet>(), args(cf)) };
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
    let (conf, args) = unsafe { (&mut *conf.cast::<LocConf>(), args(cf)) };
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
