//! What the zone holds (two red-black trees of counters, the refusal counts, the queues'
//! blocks), and every count read or changed under its lock.

use std::ffi::c_void;
use std::path::PathBuf;
use std::ptr::{self, NonNull};

use ngx::collections::RbTreeMap;
use ngx::core::{NgxString, Status};
use ngx::ffi::{
    ngx_int_t, ngx_log_t, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_free_locked, ngx_slab_pool_t,
    NGX_LOG_EMERG, NGX_LOG_NOTICE, NGX_LOG_WARN,
};
use ngx::ngx_log_error;

use super::slab::{HeldSlab, Key, Map};
use super::state_file;
use ngx_ollama_auth::limits::{encode_state, signature, KeyLimits, RateInfo, RateRefusal};
use ngx_ollama_auth::metrics::{parse_series_key, series_key, SeriesCounts, OTHER_USER};
use ngx_ollama_auth::options::EntryOptions;
use ngx_ollama_auth::refusal::RefusalReason;

/// How often the state file is written, at least.
pub const STATE_INTERVAL_MS: u64 = 10_000;

/// A limited key's counters in the zone, held by a request it admitted, so that the request's
/// end and its tokens need no lookup. Valid while that request is in flight: an entry is freed
/// only when idle (nothing in flight, see `forget_idle_keys`), tree nodes never move, and the
/// zone stays mapped for the worker's life. Read and written only with the zone's lock held.
#[derive(Clone, Copy)]
pub struct Counters(NonNull<LimitEntry>);

/// One limited key's counters, and the digest of the options they were made for.
pub struct LimitEntry {
    signature: u64,
    limits: KeyLimits,
}

/// The slab slot of a usage series' tree node with its counts; its key takes a slot of its own,
/// of the key's length rounded up to a power of two (see [`series_bytes`]).
const SERIES_NODE_BYTES: usize = 256;
const _: () = assert!(std::mem::size_of::<SeriesCounts>() + 80 <= SERIES_NODE_BYTES);

/// What a series with a key of `key_len` bytes takes in the zone: its node's slot and its key's.
fn series_bytes(key_len: usize) -> usize {
    SERIES_NODE_BYTES + key_len.max(8).next_power_of_two()
}

/// Room past the series' half for their `__other__` series (one per status code).
const OTHER_SERIES_SLACK: usize = OVERFLOW_SLOTS * 2 * SERIES_NODE_BYTES;

// The node (nginx's tree node, the key's handle, the counts) must stay in that 256-byte slot.
const _: () = assert!(
    std::mem::size_of::<ngx::ffi::ngx_rbtree_node_t>()
        + std::mem::size_of::<Key>()
        + std::mem::size_of::<SeriesCounts>()
        <= 256
);

/// Status codes that series fold into when the zone is full, by code (the last slot for the rest).
const OVERFLOW_SLOTS: usize = 8;

/// What the zone holds, in the zone.
pub struct ZoneData {
    series: Map<SeriesCounts>,
    limits: Map<LimitEntry>,
    refused: [u64; RefusalReason::ALL.len()],
    /// `user="__other__"` series when not even those could be made: by status code, model "".
    overflow: [(u16, SeriesCounts); OVERFLOW_SLOTS],
    /// The "zone is full" warning was logged (once per zone).
    full_warned: bool,
    /// When the state file was last written (or read), milliseconds since the epoch.
    state_written_ms: u64,
    /// What the usage series take, in bytes, and what they may: half the zone, so that they
    /// can never crowd out the counters of limited keys, whatever labels clients bring.
    series_bytes: usize,
    max_series_bytes: usize,
    /// When the counters of idle keys were last freed (at most once a second, under the lock
    /// every worker needs).
    forgot_ms: u64,
    /// The fair queues (`ollama_auth_queue`) in this zone: (capacity, max_waiting, block).
    queues: [(u32, u32, *mut u8); MAX_QUEUES],
}

/// Queues one zone may hold (different capacities or bounds).
pub const MAX_QUEUES: usize = 16;

/// The configuration side of one zone, owned by the configuration (freed with its pool); nginx
/// hands it to the zone's init callback and keeps it as `shm_zone->data`.
pub struct ZoneConf {
    pub(super) name: String,
    pub(super) state_path: Option<PathBuf>,
    pub(super) pool: *mut ngx_slab_pool_t,
    pub(super) data: *mut ZoneData,
}

impl ZoneConf {
    /// A zone's configuration, before nginx makes the zone.
    pub fn new(name: String, state_path: Option<PathBuf>) -> Self {
        ZoneConf { name, state_path, pool: ptr::null_mut(), data: ptr::null_mut() }
    }
}

/// A zone named by a directive: valid for the configuration's life (nginx's shared zone entry).
#[derive(Clone, Copy)]
pub struct Zone(pub(super) *mut ngx_shm_zone_t);

/// The zone's data, with its pool's mutex held until this is dropped.
pub struct Locked<'z> {
    pool: *mut ngx_slab_pool_t,
    data: &'z mut ZoneData,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: the mutex this guard took in Zone::lock, on the same live pool.
        unsafe { ngx_shmtx_unlock(&mut (*self.pool).mutex) };
    }
}

/// A series copied out of the zone: user, model, status code, counts.
pub type OwnedSeries = (String, String, u16, SeriesCounts);

/// A limited key's request, counted or refused; either way, what its rate-limit headers say.
pub enum LimitVerdict {
    /// With the tokens reserved for the request (see `KeyLimits::reserve_tokens`).
    Admitted(RateInfo, Counters, u64),
    Refused(RateRefusal, RateInfo),
}

/// Why a limited key could not be counted.
pub enum Unenforceable {
    ZoneFull,
    Options(ngx_ollama_auth::limits::ConfigError),
}

impl Zone {
    pub(super) fn conf(self) -> Option<&'static ZoneConf> {
        // SAFETY: the shm zone entry and the ZoneConf set_zone put in its data live as long as
        // the configuration that names the zone, which outlives every handler that uses it.
        unsafe { (*self.0).data.cast::<ZoneConf>().as_ref() }
    }

    pub fn name(self) -> &'static str {
        self.conf().map_or("", |conf| conf.name.as_str())
    }

    /// Whether two references name the same zone.
    pub fn same(self, other: Zone) -> bool {
        self.0 == other.0
    }

    /// The zone's size, once a directive defined it.
    pub fn size(self) -> Option<usize> {
        // SAFETY: the shm zone entry lives as long as the configuration that names it.
        Some(unsafe { (*self.0).shm.size })
    }

    /// Takes the zone's mutex. `None` if the zone was never made (it always is once nginx runs:
    /// a zone that is named but never defined fails the configuration).
    pub fn lock(self) -> Option<Locked<'static>> {
        Zone::lock_conf(self.conf()?)
    }
}

impl Locked<'_> {
    fn alloc(&self) -> HeldSlab {
        // SAFETY: non-null: a Locked exists only for a made zone.
        HeldSlab(unsafe { NonNull::new_unchecked(self.pool) })
    }

    fn key(&self, bytes: &[u8]) -> Option<Key> {
        NgxString::try_from_bytes_in(bytes, self.alloc()).ok()
    }

    pub fn count_refusal(&mut self, reason: RefusalReason) {
        let count = &mut self.data.refused[reason.index()];
        *count = count.saturating_add(1);
    }

    /// Counts one finished request, with its (prompt, completion) tokens if a model answered it.
    /// Says `true` the first time the zone had no room for a series (the caller logs it).
    pub fn count_request(
        &mut self,
        user: &str,
        model: &str,
        code: u16,
        counts: &SeriesCounts,
        scratch: &mut Vec<u8>,
    ) -> bool {
        series_key(user, model, code, scratch);
        if let Some(series) = self.data.series.get_mut(scratch.as_slice()) {
            series.merge(counts);
            return false;
        }
        let room = self.data.max_series_bytes.saturating_sub(self.data.series_bytes);
        if series_bytes(scratch.len()) <= room && self.insert_series(scratch, counts) {
            return false;
        }
        // No room: one `__other__` series per status code; then a fixed slot by code.
        series_key(OTHER_USER, "", code, scratch);
        let folded = match self.data.series.get_mut(scratch.as_slice()) {
            Some(series) => {
                series.merge(counts);
                true
            }
            // A few of these may go past the series' half, not more: then the fixed slots.
            None if self.data.series_bytes < self.data.max_series_bytes + OTHER_SERIES_SLACK => {
                self.insert_series(scratch, counts)
            }
            None => false,
        };
        if !folded {
            let slots = &mut self.data.overflow;
            let index = slots.iter().position(|(c, _)| *c == code).or_else(|| slots.iter().position(|(c, _)| *c == 0));
            let (slot_code, slot) = &mut slots[index.unwrap_or(OVERFLOW_SLOTS - 1)];
            if *slot_code == 0 {
                *slot_code = code;
            }
            slot.merge(counts);
        }
        !std::mem::replace(&mut self.data.full_warned, true)
    }

    fn insert_series(&mut self, key: &[u8], counts: &SeriesCounts) -> bool {
        let bytes = series_bytes(key.len());
        let Some(key) = self.key(key) else { return false };
        let made = self.data.series.try_insert(key, *counts).is_ok();
        if made {
            self.data.series_bytes += bytes;
        }
        made
    }

    /// Every series and the refusal counts, copied out so the caller can render them unlocked.
    pub fn snapshot(&self) -> (Vec<OwnedSeries>, Vec<u64>) {
        let mut series = Vec::with_capacity(1024);
        for (key, counts) in self.data.series.iter() {
            if let Some((user, model, code)) = parse_series_key(key.as_bytes()) {
                series.push((user.to_owned(), model.to_owned(), code, *counts));
            }
        }
        for (code, counts) in self.data.overflow.iter().filter(|(code, _)| *code != 0) {
            series.push((OTHER_USER.to_owned(), String::new(), *code, *counts));
        }
        (series, self.data.refused.to_vec())
    }

    /// Admits a request of a limited key (`id`: its fingerprint or user name), counting it;
    /// makes the key's counters if it has none yet, and takes changed options. An admitted
    /// request gets its key's counters, for [`Self::leave`] and [`Self::charge_tokens`].
    pub fn admit(
        &mut self,
        id: &[u8],
        options: &EntryOptions,
        now_ms: u64,
        reserve_tokens: u64,
    ) -> Result<LimitVerdict, Unenforceable> {
        let wanted = signature(options);
        let entry = match self.data.limits.get_mut(id) {
            Some(entry) => entry,
            None => {
                let limits = KeyLimits::new(options, now_ms).map_err(Unenforceable::Options)?;
                if !self.insert_limits(id, LimitEntry { signature: wanted, limits }) && self.forget_idle_keys(now_ms) {
                    let limits = KeyLimits::new(options, now_ms).map_err(Unenforceable::Options)?;
                    if !self.insert_limits(id, LimitEntry { signature: wanted, limits }) {
                        return Err(Unenforceable::ZoneFull);
                    }
                }
                self.data.limits.get_mut(id).ok_or(Unenforceable::ZoneFull)?
            }
        };
        if entry.signature != wanted {
            entry.limits.reconfigure(options, now_ms).map_err(Unenforceable::Options)?;
            entry.signature = wanted;
        }
        Ok(match entry.limits.admit(now_ms) {
            Ok(rate) => {
                let reserved = entry.limits.reserve_tokens(reserve_tokens);
                LimitVerdict::Admitted(rate, Counters(NonNull::from(&mut *entry)), reserved)
            }
            Err(refusal) => LimitVerdict::Refused(refusal, entry.limits.rate_info(now_ms)),
        })
    }

    fn insert_limits(&mut self, id: &[u8], entry: LimitEntry) -> bool {
        match self.key(id) {
            Some(key) => self.data.limits.try_insert(key, entry).is_ok(),
            None => false,
        }
    }

    /// Frees the counters of keys with nothing counted and nothing in flight, at most once a
    /// second (it looks at every key); says whether it did.
    fn forget_idle_keys(&mut self, now_ms: u64) -> bool {
        if now_ms.saturating_sub(self.data.forgot_ms) < 1000 {
            return false;
        }
        self.data.forgot_ms = now_ms;
        let idle: Vec<Vec<u8>> = self
            .data
            .limits
            .iter()
            .filter(|(_, entry)| entry.limits.is_idle(now_ms))
            .map(|(key, _)| key.as_bytes().to_vec())
            .collect();
        for key in idle {
            self.data.limits.remove(key.as_slice());
        }
        true
    }

    /// A request admitted by [`Self::admit`] has ended.
    pub fn leave(&mut self, counters: Counters) {
        // SAFETY: see Counters; the lock is held (self).
        unsafe { (*counters.0.as_ptr()).limits.leave() };
    }

    /// Gives back a request's reservation and charges its tokens to the key of a request
    /// admitted by [`Self::admit`].
    pub fn settle(&mut self, counters: Counters, now_ms: u64, reserved: u64, tokens: u64) {
        // SAFETY: see Counters; the lock is held (self).
        unsafe { (*counters.0.as_ptr()).limits.settle(now_ms, reserved, tokens) };
    }

    /// The zeroed block of `bytes` that holds the queue of this capacity and bound, made on
    /// first use; with whether it was just made. `None` if the zone has no room for it.
    pub fn queue_block(&mut self, capacity: u32, max_waiting: u32, bytes: usize) -> Option<(NonNull<u8>, bool)> {
        let queues = &mut self.data.queues;
        if let Some(&(_, _, block)) = queues.iter().find(|q| (q.0, q.1) == (capacity, max_waiting) && !q.2.is_null()) {
            return NonNull::new(block).map(|block| (block, false));
        }
        let free = queues.iter_mut().find(|q| q.2.is_null())?;
        // SAFETY: the pool is the zone's and its mutex is held (self); the block is zeroed.
        let block = NonNull::new(unsafe { ngx::ffi::ngx_slab_calloc_locked(self.pool, bytes) }.cast::<u8>())?;
        *free = (capacity, max_waiting, block.as_ptr());
        Some((block, true))
    }

    /// Frees the block of the queue of this capacity and bound (one no configuration uses any
    /// more, and empty).
    pub fn free_queue_block(&mut self, capacity: u32, max_waiting: u32) {
        for queue in self.data.queues.iter_mut().filter(|q| (q.0, q.1) == (capacity, max_waiting) && !q.2.is_null()) {
            // SAFETY: a block queue_block allocated from this pool; the mutex is held (self).
            unsafe { ngx_slab_free_locked(self.pool, queue.2.cast()) };
            *queue = (0, 0, ptr::null_mut());
        }
    }

    /// Whether the queue of this capacity and bound was made.
    pub fn has_queue(&self, (capacity, max_waiting): (u32, u32)) -> bool {
        self.data.queues.iter().any(|q| (q.0, q.1) == (capacity, max_waiting) && !q.2.is_null())
    }

    /// The (capacity, max_waiting) of every queue made in the zone.
    pub fn queue_bounds(&self) -> Vec<(u32, u32)> {
        self.data.queues.iter().filter(|q| !q.2.is_null()).map(|q| (q.0, q.1)).collect()
    }

    /// The limit counters as the state file holds them, if it is time to write them.
    pub(super) fn state_if_due(&mut self, now_ms: u64, force: bool) -> Option<Vec<u8>> {
        if !force && now_ms.saturating_sub(self.data.state_written_ms) < STATE_INTERVAL_MS {
            return None;
        }
        self.data.state_written_ms = now_ms;
        let busy = self.data.limits.iter().filter(|(_, entry)| !entry.limits.is_idle(now_ms));
        Some(encode_state(busy.map(|(key, entry)| (key.as_bytes(), &entry.limits))))
    }
}

/// Makes the zone's data in a fresh pool, reading the state file if there is one.
///
/// # Safety
/// `pool` must be the zone's freshly initialized slab pool, in the master, before any worker.
unsafe fn make_data(pool: *mut ngx_slab_pool_t, conf: &ZoneConf, log: *mut ngx_log_t) -> Option<*mut ZoneData> {
    // SAFETY: the caller's promise: nothing else uses the pool yet.
    let alloc = HeldSlab(unsafe { NonNull::new_unchecked(pool) });
    let data = ZoneData {
        series: RbTreeMap::try_new_in(alloc.clone()).ok()?,
        limits: RbTreeMap::try_new_in(alloc.clone()).ok()?,
        refused: [0; RefusalReason::ALL.len()],
        overflow: [(0, SeriesCounts::default()); OVERFLOW_SLOTS],
        full_warned: false,
        state_written_ms: 0,
        series_bytes: 0,
        // SAFETY: start and end bound the pool's pages, set by ngx_slab_init.
        max_series_bytes: unsafe { ((*pool).end as usize).saturating_sub((*pool).start as usize) } / 2,
        forgot_ms: 0,
        queues: [(0, 0, ptr::null_mut()); MAX_QUEUES],
    };
    let place = ngx::allocator::allocate(data, &alloc).ok()?.as_ptr();
    if let Some((path, entries)) = conf.state_path.as_ref().and_then(|path| Some((path, state_file::read(path, log)?)))
    {
        // SAFETY: just made, and not shared yet.
        let data = unsafe { &mut *place };
        let mut kept = 0;
        for (id, limits) in entries {
            let Ok(key) = NgxString::try_from_bytes_in(&id, alloc.clone()) else { break };
            // Signature 0: the options are not known until the key's next request.
            if data.limits.try_insert(key, LimitEntry { signature: 0, limits }).is_err() {
                break;
            }
            kept += 1;
        }
        let shown = path.to_string_lossy();
        ngx_log_error!(NGX_LOG_NOTICE, log, "ollama_auth_zone state file \"{}\" read: {} keys", shown, kept);
    }
    Some(place)
}

impl Zone {
    pub(super) fn lock_conf(conf: &ZoneConf) -> Option<Locked<'_>> {
        if conf.pool.is_null() || conf.data.is_null() {
            return None;
        }
        // SAFETY: the pool is the zone's, mapped in every worker for the cycle's life; its mutex
        // guards the ZoneData made in it, which nothing touches without it.
        unsafe {
            ngx_shmtx_lock(&mut (*conf.pool).mutex);
            Some(Locked { pool: conf.pool, data: &mut *conf.data })
        }
    }
}

pub(super) unsafe extern "C" fn init_zone(shm_zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls this in the master with the zone set_zone added, whose data is its
    // ZoneConf, and `old` the previous cycle's ZoneConf of the same zone (name, size, tag) or NULL.
    unsafe {
        let conf = &mut *(*shm_zone).data.cast::<ZoneConf>();
        let pool = (*shm_zone).shm.addr.cast::<ngx_slab_pool_t>();
        if let Some(old) = old.cast::<ZoneConf>().as_ref() {
            conf.pool = old.pool;
            conf.data = old.data;
            return Status::NGX_OK.0;
        }
        conf.pool = pool;
        if (*shm_zone).shm.exists != 0 {
            conf.data = (*pool).data.cast();
            return Status::NGX_OK.0;
        }
        let log = (*shm_zone).shm.log;
        match make_data(pool, conf, log) {
            Some(data) => {
                conf.data = data;
                (*pool).data = data.cast();
                // The zone's own "no memory" is handled (folded series, a refusal for a key),
                // and logged once: nginx's per-allocation alert would flood the log.
                (*pool).set_log_nomem(0);
                Status::NGX_OK.0
            }
            None => {
                ngx_log_error!(NGX_LOG_EMERG, log, "ollama_auth_zone \"{}\" is too small", conf.name);
                Status::NGX_ERROR.0
            }
        }
    }
}

/// Logs once that the zone is full.
pub fn warn_full(log: *mut ngx_log_t, zone: &str) {
    ngx_log_error!(
        NGX_LOG_WARN,
        log,
        "ollama_auth_zone \"{}\" is full: new series are counted as user \"{}\"",
        zone,
        OTHER_USER
    );
}
