//! The per-request context: what the gate decided about one request, kept from the moment it
//! is first asked (the access phase, or `$ollama_auth_user` read earlier by `limit_req`) to the
//! filters that shape this module's own refusals and cut down model listings.
//!
//! A request that is simply admitted gets no context at all, so the common path allocates
//! nothing. The context is a Rust value in the request pool, dropped by a pool cleanup.

use std::borrow::Cow;
use std::mem::{align_of, size_of};
use std::rc::Rc;

use ngx::core::Status;
use ngx::ffi::{ngx_buf_t, ngx_chain_t, ngx_int_t, ngx_palloc, ngx_pool_cleanup_add, ngx_str_t, NGX_LOG_ERR};
use ngx::http::{HttpModule, HttpModuleLocationConf, Request};
use ngx::ngx_log_error;

use super::authenticate::{authenticate, shown, Admission, Decision};
use super::conf::LocConf;
use super::module::Module;
use super::zone::data::{Counters, Zone};
use ngx_ollama_auth::errors::{error_body, ErrorShape};
use ngx_ollama_auth::estimate::Estimate;
use ngx_ollama_auth::judge::BodyCheck;
use ngx_ollama_auth::limits::RateInfo;
use ngx_ollama_auth::options::EntryOptions;
use ngx_ollama_auth::policy::{strip_prefix, Listing};
use ngx_ollama_auth::refusal::Refusal;
use ngx_ollama_auth::refusal::RefusalReason;
use ngx_ollama_auth::usage::{UsageScanner, UsageStripper};

/// Which schemes a refused request is challenged for.
pub const CHALLENGE_BEARER: u8 = 1;
pub const CHALLENGE_BASIC: u8 = 2;

/// This module's own answer to a request: its status and JSON body.
pub struct RefusalAnswer {
    pub status: usize,
    pub body: Cow<'static, [u8]>,
}

/// Counting an admitted request's answer (`ollama_auth_usage`, or the usage variables).
pub struct Accounting {
    /// Where the finished request is counted; `None` when only the variables want the counts.
    pub zone: Option<Zone>,
    /// Reads the answer's model and counts as it passes; made when its header says what it is.
    pub scanner: Option<Box<UsageScanner>>,
    /// Takes out of the answer what `asked_usage` added to it.
    pub stripper: Option<Box<UsageStripper>>,
    /// The gate added `stream_options.include_usage` to the request.
    pub asked_usage: bool,
    /// The request's tokens by the gate's own rule, once its body was read (see `estimate`).
    pub estimate: Option<Estimate>,
    /// The answer's last buffer went by: a client gone after this saw the whole answer.
    pub answer_ended: bool,
    /// The answer's end (its final report, or `[DONE]`) was written to the client: a client
    /// that closes after it, before the upstream's last bytes, had the whole answer.
    pub end_delivered: bool,
    /// The stripper's output buffers: sent and reusable, or still being sent (nginx's
    /// `ngx_chain_update_chains` keeps both lists, in the request pool).
    pub free: *mut ngx_chain_t,
    pub busy: *mut ngx_chain_t,
    /// Each stripper buffer not yet sent, paired with each upstream buffer its bytes came from
    /// (oldest first): those are given back (marked consumed) only once it is sent, so that a
    /// slow client holds Ollama back as it would without the gate (as nginx's sub filter holds
    /// its input by `shadow`). One list for the answer's life: no allocation per buffer.
    pub held: Vec<(*mut ngx_buf_t, *mut ngx_buf_t)>,
    /// The stripped bytes of one call, kept for the next so they are not allocated each time.
    pub stripped: Vec<u8>,
}

impl Accounting {
    pub fn new(zone: Option<Zone>) -> Self {
        Accounting {
            zone,
            scanner: None,
            stripper: None,
            asked_usage: false,
            estimate: None,
            answer_ended: false,
            end_delivered: false,
            free: std::ptr::null_mut(),
            busy: std::ptr::null_mut(),
            held: Vec::new(),
            stripped: Vec::new(),
        }
    }
}

/// A request of a limited key, admitted and counted in flight until the request ends (the
/// context is dropped with the request's pool, however the request ended).
pub struct InFlight {
    pub zone: Zone,
    /// The key's counters in the zone.
    pub counters: Counters,
    /// The tokens reserved for the request until its count is charged (the log phase settles
    /// it); a request that never gets there gives it back when it ends.
    pub reserved: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(mut zone) = self.zone.lock() {
            if self.reserved > 0 {
                zone.settle(self.counters, crate::clock::now_ms(), self.reserved, 0);
            }
            zone.leave(self.counters);
        }
    }
}

/// Where reading the request body for its model stands.
pub enum BodyState {
    /// Being read, for this check.
    Reading(Box<BodyCheck>),
    /// Read and judged: the access phase's answer.
    Judged(isize),
}

#[derive(Default)]
pub struct RequestCtx {
    /// The location whose files the decision below was made against: a decision made for
    /// another location (the variable read at server level, or before a `rewrite ... last`)
    /// does not count here.
    pub decided_for: Option<*const LocConf>,
    /// Who was admitted, and with what options; `None` if no one was.
    pub admission: Option<Admission>,
    pub challenges: u8,
    /// Why no one was admitted, or why this module answered an admitted request itself: for
    /// `ollama_auth_refused_total`, counted in the log phase if the answer was a refusal (with
    /// `satisfy any`, `allow` may still admit the request).
    pub refused_for: Option<RefusalReason>,
    /// Where that refusal is counted: the zone of the location that refused.
    pub refusal_zone: Option<Zone>,
    /// Set when this module answers the request itself (401, 403, 400); read by the filters.
    pub refusal: Option<RefusalAnswer>,
    /// The refusal's header went out with the JSON body's length: the body filter sends it.
    pub replace_body: bool,
    pub body_sent: bool,
    /// Reading the request body for its model (see `body`).
    pub body: Option<BodyState>,
    /// What the caps changed in the request body (`num_ctx=8192, ...`), for `x-ollama-clamped`
    /// and `$ollama_clamped`; the header went out once `clamped_sent`.
    pub clamped: Option<String>,
    pub clamped_sent: bool,
    /// A listing answer to cut down to the models these options allow.
    pub listing: Option<(Listing, Rc<EntryOptions>)>,
    /// The listing answer, gathered until its last buffer, its header held back till then.
    pub listing_body: Vec<u8>,
    pub listing_held: bool,
    /// Counting the answer (see `accounting`).
    pub accounting: Option<Accounting>,
    /// A limited key's request in flight (see `limit`).
    pub in_flight: Option<InFlight>,
    /// The `x-ratelimit-*` values for the answer, and whether they were added to it.
    pub rate: Option<RateInfo>,
    pub rate_sent: bool,
    /// A 429's `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    /// What the fleet code keeps for the request (`fleet::model::FleetCtx`); opaque here, so
    /// that this file does not depend on it.
    pub fleet: Option<Box<dyn std::any::Any>>,
    /// Its place in the location's fair queue (see `queue`), left when the context is dropped.
    pub queued: Option<super::queue::ticket::Queued>,
}

impl RequestCtx {
    /// The label for `$ollama_auth_user`, if one was recorded.
    pub fn label(&self) -> Option<ngx_str_t> {
        self.admission.as_ref().and_then(|admission| admission.label)
    }

    /// Whether a decision for this location is kept here.
    pub fn is_decided_for(&self, conf: &LocConf) -> bool {
        self.decided_for == Some(conf as *const LocConf)
    }

    fn record(&mut self, decision: Decision, conf: &LocConf) {
        self.decided_for = Some(conf as *const LocConf);
        self.challenges = challenges_of(conf);
        self.admission = match decision {
            Decision::Admitted(admission) => Some(admission),
            Decision::Refused(reason) => {
                self.refused_for = Some(reason);
                self.refusal_zone = conf.usage_zone();
                None
            }
        };
    }
}

pub fn challenges_of(conf: &LocConf) -> u8 {
    let bearer = if conf.keys.file().is_some() { CHALLENGE_BEARER } else { 0 };
    let basic = if conf.users.file().is_some() { CHALLENGE_BASIC } else { 0 };
    bearer | basic
}

/// The request's context, if this module made one. The borrow of the request stands for the
/// borrow of its context, so two contexts of one request can never be held at once.
pub fn ctx_mut(request: &mut Request) -> Option<&mut RequestCtx> {
    // SAFETY: r->ctx has one slot per HTTP module and ctx_index is this module's. The slot is
    // NULL or a RequestCtx this module put in the request's pool (see ctx_or_new), which lives
    // as long as the request; the returned borrow is tied to `request`'s exclusive one, and
    // nginx runs one request's handlers on one thread, one at a time.
    let slot = unsafe { *request.as_ref().ctx.add(Module::module().ctx_index) };
    if slot.is_null() && request.as_ref().internal() != 0 && request.is_main() {
        return recover_after_redirect(request);
    }
    // SAFETY: as above.
    unsafe { slot.cast::<RequestCtx>().as_mut() }
}

/// An internal redirect (`error_page`, `try_files` to a named location, `rewrite ... last`
/// excepted) empties every module's context slot and runs the phases again; the context itself
/// is still in the request pool, found by its cleanup as nginx's realip module finds its own.
/// What belongs to the request goes on (who was admitted, its in-flight count, its accounting,
/// its rate-limit headers); what belonged to the answer being replaced does not.
#[cold]
fn recover_after_redirect(request: &mut Request) -> Option<&mut RequestCtx> {
    // SAFETY: a main request's pool is its own; its cleanup list holds valid entries, and the
    // one whose handler is drop_ctx was registered by ctx_or_new for this request's context.
    let found = unsafe {
        let mut cleanup = (*request.as_ref().pool).cleanup;
        let mut found = std::ptr::null_mut();
        while !cleanup.is_null() {
            if (*cleanup).handler.is_some_and(|handler| std::ptr::fn_addr_eq(handler, drop_ctx as DropFn)) {
                found = (*cleanup).data.cast::<RequestCtx>();
            }
            cleanup = (*cleanup).next;
        }
        found.as_mut()?
    };
    found.refusal = None;
    found.replace_body = false;
    found.body_sent = false;
    found.body = None;
    found.listing = None;
    found.listing_body = Vec::new();
    found.listing_held = false;
    request.set_module_ctx((found as *mut RequestCtx).cast(), Module::module());
    // SAFETY: as in ctx_mut: the slot now holds this request's context again.
    unsafe { (*request.as_ref().ctx.add(Module::module().ctx_index)).cast::<RequestCtx>().as_mut() }
}

type DropFn = unsafe extern "C" fn(*mut std::ffi::c_void);

unsafe extern "C" fn drop_ctx(data: *mut std::ffi::c_void) {
    // SAFETY: registered by ctx_or_new for the RequestCtx it wrote at `data`, and run once, when
    // the request pool is destroyed, after every handler of the request has returned.
    unsafe { std::ptr::drop_in_place(data.cast::<RequestCtx>()) };
}

/// The request's context, made if there is none yet. `None` only if the pool is out of memory.
pub fn ctx_or_new(request: &mut Request) -> Option<&mut RequestCtx> {
    if ctx_mut(request).is_none() {
        let pool = request.as_ref().pool;
        const { assert!(align_of::<RequestCtx>() <= 16) }; // what ngx_palloc's NGX_ALIGNMENT gives
                                                           // SAFETY: the request pool is valid for the request's life; ngx_palloc returns memory
                                                           // aligned for any type up to NGX_ALIGNMENT, or NULL; the cleanup entry is the pool's.
        unsafe {
            let cleanup = ngx_pool_cleanup_add(pool, 0);
            let fresh = ngx_palloc(pool, size_of::<RequestCtx>()).cast::<RequestCtx>();
            if cleanup.is_null() || fresh.is_null() {
                return None;
            }
            fresh.write(RequestCtx::default());
            (*cleanup).data = fresh.cast();
            (*cleanup).handler = Some(drop_ctx);
            request.set_module_ctx(fresh.cast(), Module::module());
        }
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
        Some(ctx) => {
            !ctx.is_decided_for(conf) || ctx.admission.as_ref().is_some_and(|admission| admission.label.is_none())
        }
        None => true,
    };
    if needs_check {
        let decision = authenticate(request, conf, true);
        ctx_or_new(request)?.record(decision, conf);
    }
    ctx_mut(request)
}

/// A label for a log line about an admitted request: the one recorded, or a fresh look.
fn label_for_log(request: &mut Request, conf: &LocConf) -> String {
    let recorded = ctx_mut(request).and_then(|ctx| ctx.label());
    let label = recorded.or_else(|| match authenticate(request, conf, true) {
        Decision::Admitted(admission) => admission.label,
        Decision::Refused(_) => None,
    });
    label.map_or_else(String::new, |label| shown(label.as_bytes()))
}

/// Records this module's own answer to an admitted request and logs why, naming who asked.
/// Answers what the access phase answers: the refusal's status, or `NGX_ERROR` if the pool is
/// out of memory.
pub fn refuse(request: &mut Request, conf: &LocConf, refusal: &Refusal) -> ngx_int_t {
    let Refusal { status, kind, ref message, why } = *refusal;
    let body = error_body(error_shape(request, conf), status, kind, message);
    let label = label_for_log(request, conf);
    ngx_log_error!(NGX_LOG_ERR, request.log(), "\"{}\" refused with {}: {}", label, status, message);
    let Some(ctx) = ctx_or_new(request) else { return Status::NGX_ERROR.0 };
    ctx.refused_for = Some(why);
    ctx.refusal_zone = conf.usage_zone();
    // An admitted request's context may be new: a 401 (expired) needs its challenges.
    ctx.challenges = challenges_of(conf);
    ctx.refusal = Some(RefusalAnswer { status: usize::from(status), body: Cow::Owned(body) });
    status as ngx_int_t
}

/// The error shape of the endpoint a request asks for (see `ngx_ollama_auth::errors`).
pub fn error_shape(request: &Request, conf: &LocConf) -> ErrorShape {
    let uri = request.as_ref().uri.as_bytes();
    ErrorShape::for_path(strip_prefix(uri, conf.path_prefix()).unwrap_or(uri))
}

/// Keeps a decision the access handler made (see `access`).
pub fn record<'r>(request: &'r mut Request, conf: &LocConf, decision: Decision) -> Option<&'r mut RequestCtx> {
    let ctx = ctx_or_new(request)?;
    ctx.record(decision, conf);
    Some(ctx)
}
