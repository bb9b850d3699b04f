//! A bounded memory of credentials already verified, shared by the keys file and the htpasswd file.
//!
//! An entry is found by a per-process randomly seeded hash and confirmed by a comparison whose
//! time depends only on the length, so a lookup tells a guesser nothing about what is stored.
//! Only successes go in. Each loaded version of a file has its own cache, so a change to the file
//! forgets everything.
//!
//! What is stored is what the caller hands in: a bearer token as presented (the keys file holds
//! it too, unless hashed), or, for Basic, a keyed digest of the user and password (see
//! [`KeyedDigest`]), never the password.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use siphasher::sip128::SipHasher24;

use crate::hashes::constant_time_eq;

/// How many verified credentials one worker remembers per file.
pub const CACHE_CAPACITY: usize = 10_000;

/// Room made when a file is loaded (in the master, before any request), so the first entries
/// do not allocate under a request.
const INITIAL_CAPACITY: usize = 256;

pub struct VerifiedCache<V> {
    seed: foldhash::fast::RandomState,
    entries: HashTable<(Box<[u8]>, V)>,
}

impl<V: Copy> VerifiedCache<V> {
    pub fn new() -> Self {
        VerifiedCache { seed: Default::default(), entries: HashTable::with_capacity(INITIAL_CAPACITY) }
    }

    pub fn get(&self, credential: &[u8]) -> Option<V> {
        let hash = self.seed.hash_one(credential);
        self.entries.find(hash, |(stored, _)| constant_time_eq(stored, credential)).map(|(_, value)| *value)
    }

    pub fn insert(&mut self, credential: &[u8], value: V) {
        if self.entries.len() >= CACHE_CAPACITY {
            self.entries.clear(); // bounded memory; the next checks pay their full cost again
        }
        let seed = &self.seed;
        let hash = seed.hash_one(credential);
        self.entries.insert_unique(hash, (credential.into(), value), |(stored, _)| seed.hash_one(&stored[..]));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<V: Copy> Default for VerifiedCache<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// SipHash-2-4-128 under a random per-process key: what the Basic cache stores instead of the
/// credential (user and password, as presented).
pub struct KeyedDigest(SipHasher24);

impl KeyedDigest {
    /// The key is 128 bits from the OS's randomness, through the standard library's randomly
    /// keyed hasher (foldhash's seed, good enough to place entries, is not a secret key).
    pub fn new() -> Self {
        let mut key = [0u8; 16];
        for (i, chunk) in key.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&std::collections::hash_map::RandomState::new().hash_one(i).to_le_bytes());
        }
        KeyedDigest(SipHasher24::new_with_key(&key))
    }

    pub fn of(&self, credential: &[u8]) -> [u8; 16] {
        self.0.hash(credential).as_bytes()
    }
}

impl Default for KeyedDigest {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_what_was_inserted() {
        let mut cache = VerifiedCache::new();
        cache.insert(b"token-1", 1);
        cache.insert(b"token-2", 2);
        assert_eq!(cache.get(b"token-1"), Some(1));
        assert_eq!(cache.get(b"token-2"), Some(2));
        assert_eq!(cache.get(b"token-"), None);
        assert_eq!(cache.get(b"token-10"), None);
        assert_eq!(cache.get(b""), None);
    }

    #[test]
    fn bounded() {
        let mut cache = VerifiedCache::new();
        for i in 0..(CACHE_CAPACITY + 5) {
            cache.insert(i.to_string().as_bytes(), i);
        }
        assert!(cache.len() <= CACHE_CAPACITY && !cache.is_empty());
    }

    #[test]
    fn keyed_digest_is_keyed() {
        let digest = KeyedDigest::new();
        assert_eq!(digest.of(b"dTpw"), digest.of(b"dTpw"));
        assert_ne!(digest.of(b"dTpw"), digest.of(b"dTpx"));
        // Each process (here: each instance) has its own key.
        assert_ne!(KeyedDigest::new().of(b"dTpw"), digest.of(b"dTpw"));
    }
}
