//! A bounded memory of credentials already verified, shared by the keys file and the htpasswd file.
//!
//! What is stored is a keyed digest of the credential as presented (SipHash-1-3-128 under a
//! random key), never the credential: no bearer key or password stays in worker memory beyond
//! the request that sent it. The digest is unpredictable without the key, so it also places the
//! entry in the table, and a lookup tells a guesser nothing about what is stored. Only successes
//! go in. Each loaded version of a file has its own cache, so a change to the file forgets
//! everything.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use siphasher::sip128::SipHasher13;

use crate::hashes::constant_time_eq;

/// How many verified credentials one worker remembers per file.
pub const CACHE_CAPACITY: usize = 10_000;

/// Room made when a file is loaded (in the master, before any request), so the first entries
/// do not allocate under a request.
const INITIAL_CAPACITY: usize = 256;

type Digest = [u8; 16];

pub struct VerifiedCache<V> {
    key: KeyedDigest,
    entries: HashTable<(Digest, V)>,
}

/// The digest is uniformly random: its first eight bytes are the table hash.
fn table_hash(digest: &Digest) -> u64 {
    u64::from_le_bytes(digest[..8].try_into().expect("8 of 16 bytes"))
}

impl<V: Copy> VerifiedCache<V> {
    pub fn new() -> Self {
        VerifiedCache { key: KeyedDigest::new(), entries: HashTable::with_capacity(INITIAL_CAPACITY) }
    }

    pub fn get(&self, credential: &[u8]) -> Option<V> {
        let digest = self.key.of(credential);
        self.entries.find(table_hash(&digest), |(stored, _)| constant_time_eq(stored, &digest)).map(|(_, value)| *value)
    }

    pub fn insert(&mut self, credential: &[u8], value: V) {
        if self.entries.len() >= CACHE_CAPACITY {
            self.entries.clear(); // bounded memory; the next checks pay their full cost again
        }
        let digest = self.key.of(credential);
        self.entries.insert_unique(table_hash(&digest), (digest, value), |(stored, _)| table_hash(stored));
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

/// SipHash-1-3-128 under a random 128-bit key, made when a file version is loaded: in the master
/// at start (the workers inherit it through fork) or in a worker when it re-reads the file.
/// SipHash-1-3 (the rounds Rust's own HashMap uses) rather than 2-4: it runs on every admitted
/// request, and finding a collision still needs the key, which never leaves the process.
struct KeyedDigest(SipHasher13);

impl KeyedDigest {
    /// The key comes from the OS's randomness, through the standard library's randomly keyed
    /// hasher (each `RandomState::new()` draws fresh keys from it).
    fn new() -> Self {
        let mut key = [0u8; 16];
        for (i, chunk) in key.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&std::collections::hash_map::RandomState::new().hash_one(i).to_le_bytes());
        }
        KeyedDigest(SipHasher13::new_with_key(&key))
    }

    fn of(&self, credential: &[u8]) -> Digest {
        self.0.hash(credential).as_bytes()
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
        // Each instance (each loaded file version) has its own key.
        assert_ne!(KeyedDigest::new().of(b"dTpw"), digest.of(b"dTpw"));
    }

    #[test]
    fn the_credential_is_not_in_the_cache() {
        let secret = b"sk-ollama-0123456789abcdef0123456789abcdef";
        let mut cache = VerifiedCache::new();
        cache.insert(secret, ());
        for (stored, ()) in cache.entries.iter() {
            assert!(!secret.windows(8).any(|part| stored.windows(8).any(|s| s == part)));
        }
        assert_eq!(std::mem::size_of::<(Digest, ())>(), 16, "an entry is the digest and nothing else");
    }
}
