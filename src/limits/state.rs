//! The limits state file's content: every key's counts, so a restart forgets nothing (writing
//! it to disk is `state_file`'s). Versioned, checksummed, and read back only whole.

use std::fmt;

use crate::fnv::fnv1a_64;
use crate::limits::key::KeyLimits;
use crate::limits::window::{WindowCounter, MAX_WINDOWS, SLOTS};

/// The longest key id the state file holds (a label or a fingerprint).
pub const MAX_KEY_ID_BYTES: usize = 256;

/// The state file's first bytes.
pub(super) const STATE_MAGIC: [u8; 8] = *b"NGXOALIM";

/// The state file's format; a file in another is refused rather than guessed at. Version 1
/// (without the moments of the latest charges) is still read.
pub const STATE_VERSION: u32 = 2;

/// Magic, version, entry count.
const STATE_HEADER_BYTES: usize = 16;

/// FNV-1a 64 of everything before it, at the end.
pub(super) const CHECKSUM_BYTES: usize = 8;

/// Why a state file was not read. Says what is wrong, never what the file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    Empty,
    NotAStateFile,
    /// The format version the file says it has.
    UnsupportedVersion(u32),
    Truncated,
    ChecksumMismatch,
    /// The checksum matched but the content breaks the format (a writer's bug, not damage).
    Invalid(&'static str),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Empty => f.write_str("the file is empty"),
            StateError::NotAStateFile => f.write_str("not a limits state file (wrong magic)"),
            StateError::UnsupportedVersion(version) => {
                write!(f, "format version {version}; this build reads only versions 1 and {STATE_VERSION}")
            }
            StateError::Truncated => f.write_str("the file is truncated"),
            StateError::ChecksumMismatch => f.write_str("checksum mismatch: the file is corrupt or incomplete"),
            StateError::Invalid(reason) => write!(f, "invalid content: {reason}"),
        }
    }
}

impl std::error::Error for StateError {}

/// The state file: magic, version, entry count, the entries (key id, then its limits and counts,
/// little-endian), and a checksum. Requests in flight are not written: a restart ends them. An
/// id longer than [`MAX_KEY_ID_BYTES`] is left out.
pub fn encode_state<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a KeyLimits)>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(STATE_HEADER_BYTES + CHECKSUM_BYTES);
    bytes.extend_from_slice(&STATE_MAGIC);
    bytes.extend_from_slice(&STATE_VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes()); // the entry count, once known
    let mut count = 0u32;
    for (id, limits) in entries {
        if id.len() > MAX_KEY_ID_BYTES || count == u32::MAX {
            continue;
        }
        count += 1;
        bytes.extend_from_slice(&(id.len() as u16).to_le_bytes());
        bytes.extend_from_slice(id);
        bytes.extend_from_slice(&limits.latest_ms.to_le_bytes());
        bytes.extend_from_slice(&limits.parallel.to_le_bytes());
        bytes.push(limits.window_count() as u8);
        for window in limits.windows() {
            bytes.push(window.kind);
            bytes.extend_from_slice(&window.seconds.to_le_bytes());
            bytes.extend_from_slice(&window.limit.to_le_bytes());
            for slot in window.slots.iter().chain(&window.latest_charge) {
                bytes.extend_from_slice(&slot.to_le_bytes());
            }
        }
    }
    bytes[12..STATE_HEADER_BYTES].copy_from_slice(&count.to_le_bytes());
    let checksum = fnv1a_64(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    bytes
}

/// Reads what [`encode_state`] wrote, in file order. Requests in flight start at 0. The glue
/// then gives each key its current options ([`KeyLimits::reconfigure`]) and drops the ids the
/// files no longer have.
pub fn decode_state(bytes: &[u8]) -> Result<Vec<(Vec<u8>, KeyLimits)>, StateError> {
    if bytes.is_empty() {
        return Err(StateError::Empty);
    }
    let magic_length = bytes.len().min(STATE_MAGIC.len());
    if bytes[..magic_length] != STATE_MAGIC[..magic_length] {
        return Err(StateError::NotAStateFile);
    }
    if bytes.len() < STATE_HEADER_BYTES + CHECKSUM_BYTES {
        return Err(StateError::Truncated);
    }
    let mut reader = Reader { bytes: &bytes[STATE_MAGIC.len()..bytes.len() - CHECKSUM_BYTES] };
    let version = reader.u32().ok_or(StateError::Truncated)?;
    if version != STATE_VERSION && version != 1 {
        return Err(StateError::UnsupportedVersion(version));
    }
    let (content, stored) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    if stored != fnv1a_64(content).to_le_bytes() {
        return Err(StateError::ChecksumMismatch);
    }
    let count = reader.u32().ok_or(StateError::Truncated)?;
    let smallest_entry = 2 + 8 + 4 + 1;
    let mut entries = Vec::with_capacity((count as usize).min(reader.bytes.len() / smallest_entry));
    for _ in 0..count {
        entries.push(read_entry(&mut reader, version)?);
    }
    if !reader.bytes.is_empty() {
        return Err(StateError::Invalid("bytes after the last entry"));
    }
    Ok(entries)
}

fn read_entry(reader: &mut Reader<'_>, version: u32) -> Result<(Vec<u8>, KeyLimits), StateError> {
    const CUT_SHORT: StateError = StateError::Invalid("fewer entries than the count says");
    let id_length = usize::from(reader.u16().ok_or(CUT_SHORT)?);
    if id_length > MAX_KEY_ID_BYTES {
        return Err(StateError::Invalid("a key id longer than 256 bytes"));
    }
    let id = reader.take(id_length).ok_or(CUT_SHORT)?.to_vec();
    let mut limits = KeyLimits::EMPTY;
    limits.latest_ms = reader.u64().ok_or(CUT_SHORT)?;
    limits.parallel = reader.u32().ok_or(CUT_SHORT)?;
    let window_count = reader.take(1).ok_or(CUT_SHORT)?[0];
    if usize::from(window_count) > MAX_WINDOWS {
        return Err(StateError::Invalid("more windows than a key may have"));
    }
    limits.window_count = window_count;
    for index in 0..usize::from(window_count) {
        let kind = reader.take(1).ok_or(CUT_SHORT)?[0];
        let seconds = reader.u32().ok_or(CUT_SHORT)?;
        let limit = reader.u64().ok_or(CUT_SHORT)?;
        let mut slots = [0u32; SLOTS];
        for slot in &mut slots {
            *slot = reader.u32().ok_or(CUT_SHORT)?;
        }
        // Version 1 has no moments: each sub-interval is kept to its end, as it then was.
        let mut latest_charge = [u32::MAX; SLOTS];
        if version >= 2 {
            for charge in &mut latest_charge {
                *charge = reader.u32().ok_or(CUT_SHORT)?;
            }
        }
        let window = WindowCounter { limit, seconds, kind, _padding: [0; 3], slots, latest_charge };
        if !window.is_countable(&limits.windows[..index]) {
            return Err(StateError::Invalid("a window this build cannot count"));
        }
        limits.windows[index] = window;
    }
    Ok((id, limits))
}

/// Little-endian fields from the front of a byte string.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if count > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}
