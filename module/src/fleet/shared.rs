//! A fleet as configured (`ollama_auth_fleet`), and its state in a shared-memory zone of its
//! own, so that every worker routes on the same answers: per member, whether it is up, its
//! failures in a row, when it is next polled, the requests in flight to it, and the models its
//! last poll listed (as sorted keys, and their names for listings). All of it is touched only
//! under the zone's mutex. Fixed-size records: a member's answer can never grow the zone.

use std::ffi::c_void;
use std::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_int_t, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_alloc, ngx_slab_pool_t, sockaddr,
    socklen_t as ngx_socklen_t, NGX_LOG_EMERG,
};
use ngx::ngx_log_error;

pub use ngx_ollama_auth::fleet::MAX_MODELS_PER_MEMBER;

/// Bytes of model names kept per member for listings (newline-separated): about 500 names of
/// a typical length; a longer listing routes in full but lists only what fits.
pub const NAMES_BYTES: usize = 32 << 10;

/// At most this many members per fleet: members are GPU boxes, and the metrics label stays
/// bounded.
pub const MAX_MEMBERS: usize = 32;

/// One `server` of a fleet block.
pub struct MemberConf {
    /// What `$ollama_fleet_backend` gives for it: the address as written, or `name=`.
    pub name: String,
    /// Where it is polled (resolved when the configuration is read).
    pub sockaddr: Vec<u8>,
    pub socklen: ngx_socklen_t,
    /// `host:port`, for the poll's Host header and the log.
    pub host: String,
}

impl MemberConf {
    pub fn sockaddr_ptr(&self) -> *mut sockaddr {
        self.sockaddr.as_ptr().cast_mut().cast()
    }
}

/// `ollama_auth_fleet <name> ... { server ...; }`.
pub struct Fleet {
    pub name: String,
    pub members: Vec<MemberConf>,
    /// How often each member is polled, and how long a poll may take.
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Failures in a row (polls, or requests the gate saw fail) before a member is marked down.
    pub fails: u32,
    /// The largest poll answer read (bytes, headers included); a larger one is a failure.
    pub max_answer: usize,
    /// The fleet's zone (its data is this Fleet).
    pub zone: *mut ngx_shm_zone_t,
}

/// A fleet as a location's configuration refers to it: the Fleet lives in the configuration's
/// pool, as long as every location of it.
#[derive(Clone, Copy)]
pub struct FleetRef(pub *const Fleet);

impl FleetRef {
    pub fn get(self) -> &'static Fleet {
        // SAFETY: made from a Fleet leaked into the configuration's pool (see the directive),
        // which outlives every request and timer of that configuration.
        unsafe { &*self.0 }
    }
}

/// One member's shared record.
#[repr(C)]
pub struct MemberState {
    /// Which configured member the record is for (see [`MemberConf::identity`]): a reload that
    /// reorders or replaces members does not give one member another's state.
    pub identity: u64,
    pub up: bool,
    /// A poll has answered at least once.
    pub polled: bool,
    pub failures: u32,
    pub busy: u32,
    /// Requests routed to it, for the metrics.
    pub requests: u64,
    pub tags_len: u32,
    pub ps_len: u32,
    pub names_len: u32,
    pub next_poll_ms: u64,
    pub tags: [u64; MAX_MODELS_PER_MEMBER],
    pub ps: [u64; MAX_MODELS_PER_MEMBER],
    pub names: [u8; NAMES_BYTES],
}

impl MemberState {
    pub fn tags(&self) -> &[u64] {
        &self.tags[..self.tags_len as usize]
    }

    pub fn ps(&self) -> &[u64] {
        &self.ps[..self.ps_len as usize]
    }

    pub fn names(&self) -> &[u8] {
        &self.names[..self.names_len as usize]
    }
}

impl MemberConf {
    /// The member's name and address, hashed (FNV-1a): what its zone record is matched by.
    pub fn identity(&self) -> u64 {
        self.name
            .as_bytes()
            .iter()
            .chain(&[0])
            .chain(&self.sockaddr)
            .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
    }
}

/// The zone's size for `members` members.
pub fn zone_size(members: usize) -> usize {
    let page = 4096;
    let records = (members * std::mem::size_of::<MemberState>()).div_ceil(page) * page;
    records + 16 * page
}

/// The fleet's records, held under the zone's mutex until dropped.
pub struct Held<'a> {
    pool: *mut ngx_slab_pool_t,
    pub members: &'a mut [MemberState],
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // SAFETY: the mutex was taken by Fleet::lock, on this worker, for this guard.
        unsafe { ngx_shmtx_unlock(&mut (*self.pool).mutex) };
    }
}

impl Fleet {
    /// Takes the zone's mutex. `None` before the zone is made.
    pub fn lock(&self) -> Option<Held<'_>> {
        // SAFETY: the zone is this fleet's, mapped in every process of the cycle; its slab pool's
        // data is the member array init_zone made, which nothing touches without the mutex.
        unsafe {
            let pool = (*self.zone).shm.addr.cast::<ngx_slab_pool_t>();
            if pool.is_null() || (*pool).data.is_null() {
                return None;
            }
            ngx_shmtx_lock(&mut (*pool).mutex);
            let members = std::slice::from_raw_parts_mut((*pool).data.cast::<MemberState>(), self.members.len());
            Some(Held { pool, members })
        }
    }
}

/// Makes the member records (or keeps the previous cycle's, for the same members), and asks
/// for a poll of every member at once.
pub unsafe extern "C" fn init_zone(shm_zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls this in the master with the zone the directive added, whose data is
    // its Fleet; the slab pool at the zone's start is initialized by nginx.
    unsafe {
        let fleet = &*(*shm_zone).data.cast::<Fleet>();
        let pool = (*shm_zone).shm.addr.cast::<ngx_slab_pool_t>();
        let reused = !old.is_null() || (*shm_zone).shm.exists != 0;
        if reused && !(*pool).data.is_null() {
            if let Some(held) = fleet.lock() {
                for (record, conf) in held.members.iter_mut().zip(&fleet.members) {
                    if record.identity != conf.identity() {
                        // Another member at this place now: it starts as a new one.
                        ptr::write_bytes(ptr::from_mut(record), 0, 1);
                        record.identity = conf.identity();
                    }
                    record.next_poll_ms = 0;
                }
            }
            return Status::NGX_OK.0;
        }
        let bytes = fleet.members.len() * std::mem::size_of::<MemberState>();
        let data = ngx_slab_alloc(pool, bytes);
        if data.is_null() {
            ngx_log_error!(NGX_LOG_EMERG, (*shm_zone).shm.log, "ollama_auth_fleet \"{}\": no memory", fleet.name);
            return Status::NGX_ERROR.0;
        }
        // All-zero is a valid record: down, never polled, nothing listed, due for a poll now.
        ptr::write_bytes(data.cast::<u8>(), 0, bytes);
        let records = std::slice::from_raw_parts_mut(data.cast::<MemberState>(), fleet.members.len());
        for (record, conf) in records.iter_mut().zip(&fleet.members) {
            record.identity = conf.identity();
        }
        (*pool).data = data;
        Status::NGX_OK.0
    }
}

/// A member chosen for a request: counted busy until the request ends.
pub struct Chosen {
    pub fleet: FleetRef,
    pub member: usize,
}

impl Chosen {
    /// Counts the member busy, under the lock its choice was made with.
    pub fn counted(fleet: FleetRef, members: &mut [MemberState], member: usize) -> Chosen {
        members[member].busy = members[member].busy.saturating_add(1);
        members[member].requests = members[member].requests.saturating_add(1);
        Chosen { fleet, member }
    }
}

impl Drop for Chosen {
    fn drop(&mut self) {
        if let Some(held) = self.fleet.get().lock() {
            held.members[self.member].busy = held.members[self.member].busy.saturating_sub(1);
        }
    }
}
