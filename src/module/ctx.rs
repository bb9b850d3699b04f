//! The per-request context: what the gate decided about one request, kept from the moment it
//! is first asked (the access phase, or `$ollama_auth_user` read earlier by `limit_req`) to the
//! filters that shape this module's own refusals.

use std::mem::size_of;

use ngx::ffi::{ngx_pcalloc, ngx_str_t};
use ngx::http::{HttpModule, HttpModuleLocationConf, Request};

use super::authenticate::{authenticate, Decision};
use super::conf::LocConf;
use super::Module;

/// Which schemes a refused request is challenged for.
pub const CHALLENGE_BEARER: u8 = 1;
pub const CHALLENGE_BASIC: u8 = 2;

/// Allocated zeroed from the request pool; all-zero is "not checked yet".
#[repr(C)]
pub struct RequestCtx {
    pub checked: bool,
    pub admitted: bool,
    /// Set by the access handler when it answers 401; read by the filters.
    pub refused: bool,
    pub replace_body: bool,
    pub body_sent: bool,
    pub challenges: u8,
    /// Who was admitted: a key's name or fingerprint, or a Basic user name; in the request pool.
    /// Null when no one was, or when no one asked for it.
    pub user: ngx_str_t,
}

impl RequestCtx {
    pub fn has_label(&self) -> bool {
        !self.user.data.is_null()
    }

    fn record(&mut self, decision: Decision, conf: &LocConf) {
        self.checked = true;
        self.challenges = challenges_of(conf);
        match decision {
            Decision::Admitted(label) => {
                self.admitted = true;
                self.user = label.unwrap_or(ngx_str_t::empty());
            }
            Decision::Refused => self.admitted = false,
        }
    }
}

fn challenges_of(conf: &LocConf) -> u8 {
    let bearer = if conf.keys.file().is_some() { CHALLENGE_BEARER } else { 0 };
    let basic = if conf.users.file().is_some() { CHALLENGE_BASIC } else { 0 };
    bearer | basic
}

/// The request's context, if this module made one. The borrow of the request stands for the
/// borrow of its context, so two contexts of one request can never be held at once.
pub fn ctx_mut(request: &mut Request) -> Option<&mut RequestCtx> {
    // SAFETY: r->ctx has one slot per HTTP module and ctx_index is this module's. The slot is
    // NULL or a RequestCtx this module allocated from the request's pool, which lives as long as
    // the request; the returned borrow is tied to `request`'s exclusive one, and nginx runs one
    // request's handlers on one thread, one at a time.
    unsafe {
        let slot = *request.as_ref().ctx.add(Module::module().ctx_index);
        slot.cast::<RequestCtx>().as_mut()
    }
}

/// The request's context, made (zeroed) if there is none yet. `None` only if the pool is out
/// of memory.
pub fn ctx_or_new(request: &mut Request) -> Option<&mut RequestCtx> {
    if request.get_module_ctx::<RequestCtx>(Module::module()).is_none() {
        // SAFETY: the request pool is valid for the request's life; ngx_pcalloc returns zeroed,
        // suitably aligned memory or NULL, and all-zero is a valid RequestCtx.
        let fresh = unsafe { ngx_pcalloc(request.as_ref().pool, size_of::<RequestCtx>()) };
        if fresh.is_null() {
            return None;
        }
        request.set_module_ctx(fresh, Module::module());
    }
    ctx_mut(request)
}

/// The request's decision with its label, checked once and kept in the context: for
/// `$ollama_auth_user`, which may be read before the access phase (by `limit_req`). `None`
/// when this location is not gated.
pub fn decided_with_label(request: &mut Request) -> Option<&mut RequestCtx> {
    let conf: &'static LocConf = Module::location_conf(request).filter(|conf: &&LocConf| conf.is_gated())?;
    let needs_check = match ctx_mut(request) {
        // Admitted while no one wanted the label: look again, with it.
        Some(ctx) => !ctx.checked || (ctx.admitted && !ctx.has_label()),
        None => true,
    };
    if needs_check {
        let decision = authenticate(request, conf, true);
        ctx_or_new(request)?.record(decision, conf);
    }
    ctx_mut(request)
}

/// Keeps a decision the access handler made (see `access`).
pub fn record<'r>(request: &'r mut Request, conf: &LocConf, decision: Decision) -> Option<&'r mut RequestCtx> {
    let ctx = ctx_or_new(request)?;
    ctx.record(decision, conf);
    Some(ctx)
}
