//! Password hashes as Apache's `htpasswd` writes them, and as stock nginx reads them.
//!
//! Accepted: bcrypt (`$2y$`, `$2a$`, `$2b$`), MD5 crypt (`$apr1$`, `$1$`), SHA-256 and SHA-512
//! crypt (`$5$`, `$6$`, with `rounds=`), `{SHA}`, `{SSHA}` and `{PLAIN}`. Rejected at load: DES
//! crypt, unprefixed plaintext, unknown formats, and hashes too costly to check on a worker.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use md5::{Digest as _, Md5};
use sha1::Sha1;

/// Highest bcrypt cost accepted (cost 12: 0.44 s per check on the benchmark machine).
pub const MAX_BCRYPT_COST: u32 = 12;

/// Longest password any hash is asked to check. SHA-crypt hashes the password once per round, so
/// its cost grows with the password's length: without a cap, one request with a long password
/// (to an unknown user, checked against the decoy) could hold a worker for seconds.
pub const MAX_PASSWORD_BYTES: usize = 256;

/// Highest SHA-crypt rounds accepted, chosen so that a check with a [`MAX_PASSWORD_BYTES`]
/// password costs no more than a cost-12 bcrypt (measured here, 256-byte password: SHA-256
/// crypt 500,000 rounds 0.19 s, SHA-512 crypt 100,000 rounds 0.13 s, bcrypt cost 12 0.27 s;
/// SHA-256 rounds are cheaper because these CPUs have SHA-256 instructions and no SHA-512 ones).
pub const MAX_SHA256_CRYPT_ROUNDS: usize = 500_000;
pub const MAX_SHA512_CRYPT_ROUNDS: usize = 100_000;

const CRYPT_ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShaCryptKind {
    Sha256,
    Sha512,
}

#[derive(Clone)]
pub enum PasswordHash {
    Bcrypt(String),
    Md5Crypt { magic: &'static str, salt: Vec<u8>, encoded: Vec<u8> },
    ShaCrypt { kind: ShaCryptKind, rounds: usize, salt: Vec<u8>, encoded: Vec<u8> },
    Sha1([u8; 20]),
    SaltedSha1 { digest: [u8; 20], salt: Vec<u8> },
    Plain(Vec<u8>),
}

/// Why a hash was not loaded. The text names the format, never the hash.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    DesCrypt,
    Unknown,
    Malformed(&'static str),
    TooCostly(String),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::DesCrypt => f.write_str("DES crypt hashes are not supported (use htpasswd -B)"),
            Rejected::Unknown => f.write_str("unknown hash format or plaintext password (use htpasswd -B)"),
            Rejected::Malformed(format) => write!(f, "malformed {format} hash"),
            Rejected::TooCostly(what) => write!(f, "{what}: too costly to check on a worker"),
        }
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)") // never print a hash
    }
}

/// Compares in time that depends only on the lengths, eight bytes at a time.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.len() < 8 {
        return a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    }
    let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    // Whole words, then the last eight bytes (overlapping) for whatever is left over.
    let tail = word(&a[a.len() - 8..]) ^ word(&b[b.len() - 8..]);
    a.chunks_exact(8).zip(b.chunks_exact(8)).fold(tail, |acc, (x, y)| acc | (word(x) ^ word(y))) == 0
}

fn is_crypt_text(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| CRYPT_ALPHABET.contains(b))
}

/// Encodes `raw` in crypt's base64: each group of three bytes (first byte highest) becomes four
/// characters, lowest six bits first; the `tail` bytes (one or two) become `tail_chars` characters.
fn crypt_base64(raw: &[u8], groups: &[[usize; 3]], tail: &[usize], tail_chars: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(groups.len() * 4 + tail_chars);
    let mut emit = |indices: &[usize], chars: usize| {
        let mut word = indices.iter().fold(0u32, |word, &i| (word << 8) | u32::from(raw[i]));
        for _ in 0..chars {
            out.push(CRYPT_ALPHABET[(word & 0x3f) as usize]);
            word >>= 6;
        }
    };
    for group in groups {
        emit(group, 4);
    }
    emit(tail, tail_chars);
    out
}

/// Byte orders of the crypt encodings, from the MD5-crypt and SHA-crypt specifications.
const MD5_GROUPS: [[usize; 3]; 5] = [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]];

/// SHA-256 crypt: group k holds bytes k, k+10, k+20, rotated right by k mod 3.
fn sha256_groups() -> Vec<[usize; 3]> {
    (0..10)
        .map(|k| {
            let mut triple = [k, k + 10, k + 20];
            triple.rotate_right(k % 3);
            triple
        })
        .collect()
}

/// SHA-512 crypt: group k starts at byte 22k mod 63 and steps by 21.
fn sha512_groups() -> Vec<[usize; 3]> {
    (0..21)
        .map(|k| {
            let first = (22 * k) % 63;
            [first, (first + 21) % 63, (first + 42) % 63]
        })
        .collect()
}

/// MD5 crypt, as in FreeBSD's `$1$` and Apache's `$apr1$` (which differ only in the magic).
fn md5_crypt(password: &[u8], magic: &str, salt: &[u8]) -> Vec<u8> {
    let alternate = Md5::new().chain_update(password).chain_update(salt).chain_update(password).finalize();
    let mut context = Md5::new().chain_update(password).chain_update(magic).chain_update(salt);
    let mut remaining = password.len();
    while remaining > 0 {
        let take = remaining.min(16);
        context.update(&alternate[..take]);
        remaining -= take;
    }
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            context.update([0u8]);
        } else {
            context.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = context.finalize();
    for round in 0..1000 {
        let mut step = Md5::new();
        if round & 1 == 1 {
            step.update(password);
        } else {
            step.update(digest);
        }
        if round % 3 != 0 {
            step.update(salt);
        }
        if round % 7 != 0 {
            step.update(password);
        }
        if round & 1 == 1 {
            step.update(digest);
        } else {
            step.update(password);
        }
        digest = step.finalize();
    }
    crypt_base64(&digest, &MD5_GROUPS, &[11], 2)
}

fn sha_crypt(kind: ShaCryptKind, password: &[u8], salt: &[u8], rounds: usize) -> Vec<u8> {
    match kind {
        ShaCryptKind::Sha256 => {
            let params = sha_crypt::Sha256Params::new(rounds).expect("rounds clamped at parse");
            let raw = sha_crypt::sha256_crypt(password, salt, &params).expect("valid parameters");
            crypt_base64(&raw, &sha256_groups(), &[31, 30], 3)
        }
        ShaCryptKind::Sha512 => {
            let params = sha_crypt::Sha512Params::new(rounds).expect("rounds clamped at parse");
            let raw = sha_crypt::sha512_crypt(password, salt, &params).expect("valid parameters");
            crypt_base64(&raw, &sha512_groups(), &[63], 2)
        }
    }
}

fn parse_md5_crypt(rest: &[u8], magic: &'static str) -> Result<PasswordHash, Rejected> {
    let malformed = Rejected::Malformed("MD5 crypt");
    let split = rest.iter().position(|&b| b == b'$').ok_or(Rejected::Malformed("MD5 crypt"))?;
    let (salt, encoded) = (&rest[..split], &rest[split + 1..]);
    if salt.len() > 8 || encoded.len() != 22 || !is_crypt_text(encoded) {
        return Err(malformed);
    }
    Ok(PasswordHash::Md5Crypt { magic, salt: salt.to_vec(), encoded: encoded.to_vec() })
}

fn parse_sha_crypt(rest: &[u8], kind: ShaCryptKind) -> Result<PasswordHash, Rejected> {
    let (format, max_rounds) = match kind {
        ShaCryptKind::Sha256 => ("SHA-256 crypt", MAX_SHA256_CRYPT_ROUNDS),
        ShaCryptKind::Sha512 => ("SHA-512 crypt", MAX_SHA512_CRYPT_ROUNDS),
    };
    let mut fields: Vec<&[u8]> = rest.split(|&b| b == b'$').collect();
    let mut rounds = sha_crypt::ROUNDS_DEFAULT;
    if let Some(spec) = fields.first().and_then(|f| f.strip_prefix(b"rounds=")) {
        let text = std::str::from_utf8(spec).map_err(|_| Rejected::Malformed(format))?;
        let asked: u64 = text.parse().map_err(|_| Rejected::Malformed(format))?;
        if asked > max_rounds as u64 {
            return Err(Rejected::TooCostly(format!("{format} with {asked} rounds")));
        }
        // As glibc does: fewer than the minimum means the minimum.
        rounds = (asked as usize).max(sha_crypt::ROUNDS_MIN);
        fields.remove(0);
    }
    let expected_len = if kind == ShaCryptKind::Sha256 { 43 } else { 86 };
    match fields.as_slice() {
        [salt, encoded] if encoded.len() == expected_len && is_crypt_text(encoded) => {
            let salt = &salt[..salt.len().min(16)];
            Ok(PasswordHash::ShaCrypt { kind, rounds, salt: salt.to_vec(), encoded: encoded.to_vec() })
        }
        _ => Err(Rejected::Malformed(format)),
    }
}

fn parse_bcrypt(text: &[u8]) -> Result<PasswordHash, Rejected> {
    let malformed = Rejected::Malformed("bcrypt");
    // $2y$NN$ followed by 22 characters of salt and 31 of hash.
    if text.len() != 60 || text[6] != b'$' || !is_crypt_text(&text[7..]) {
        return Err(malformed);
    }
    let cost: u32 = std::str::from_utf8(&text[4..6]).ok().and_then(|c| c.parse().ok()).ok_or(malformed)?;
    if !(4..=31).contains(&cost) {
        return Err(Rejected::Malformed("bcrypt"));
    }
    if cost > MAX_BCRYPT_COST {
        return Err(Rejected::TooCostly(format!("bcrypt cost {cost}")));
    }
    Ok(PasswordHash::Bcrypt(String::from_utf8(text.to_vec()).map_err(|_| Rejected::Malformed("bcrypt"))?))
}

fn parse_salted_sha1(encoded: &[u8]) -> Result<PasswordHash, Rejected> {
    let raw = BASE64.decode(encoded).map_err(|_| Rejected::Malformed("{SSHA}"))?;
    if raw.len() < 20 {
        return Err(Rejected::Malformed("{SSHA}"));
    }
    let digest = raw[..20].try_into().expect("20 bytes");
    Ok(PasswordHash::SaltedSha1 { digest, salt: raw[20..].to_vec() })
}

impl PasswordHash {
    pub fn parse(text: &[u8]) -> Result<Self, Rejected> {
        if let Some(rest) = text.strip_prefix(b"$apr1$") {
            parse_md5_crypt(rest, "$apr1$")
        } else if let Some(rest) = text.strip_prefix(b"$1$") {
            parse_md5_crypt(rest, "$1$")
        } else if let Some(rest) = text.strip_prefix(b"$5$") {
            parse_sha_crypt(rest, ShaCryptKind::Sha256)
        } else if let Some(rest) = text.strip_prefix(b"$6$") {
            parse_sha_crypt(rest, ShaCryptKind::Sha512)
        } else if [&b"$2y$"[..], b"$2a$", b"$2b$"].iter().any(|p| text.starts_with(p)) {
            parse_bcrypt(text)
        } else if let Some(encoded) = text.strip_prefix(b"{SHA}") {
            let raw = BASE64.decode(encoded).map_err(|_| Rejected::Malformed("{SHA}"))?;
            Ok(PasswordHash::Sha1(raw.try_into().map_err(|_| Rejected::Malformed("{SHA}"))?))
        } else if let Some(encoded) = text.strip_prefix(b"{SSHA}") {
            parse_salted_sha1(encoded)
        } else if let Some(plain) = text.strip_prefix(b"{PLAIN}") {
            Ok(PasswordHash::Plain(plain.to_vec()))
        } else if text.len() == 13 && is_crypt_text(text) {
            Err(Rejected::DesCrypt)
        } else {
            Err(Rejected::Unknown)
        }
    }

    /// Checks a password. The cost is bounded by the load-time caps as long as the password is
    /// at most [`MAX_PASSWORD_BYTES`] long; a longer one is refused without hashing.
    pub fn verify(&self, password: &[u8]) -> bool {
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        match self {
            // bcrypt reads at most 72 bytes of the password, as htpasswd's bcrypt does.
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Md5Crypt { magic, salt, encoded } => {
                constant_time_eq(&md5_crypt(password, magic, salt), encoded)
            }
            PasswordHash::ShaCrypt { kind, rounds, salt, encoded } => {
                constant_time_eq(&sha_crypt(*kind, password, salt, *rounds), encoded)
            }
            PasswordHash::Sha1(digest) => constant_time_eq(&Sha1::digest(password), digest),
            PasswordHash::SaltedSha1 { digest, salt } => {
                constant_time_eq(&Sha1::new().chain_update(password).chain_update(salt).finalize(), digest)
            }
            PasswordHash::Plain(plain) => constant_time_eq(password, plain),
        }
    }
}

impl PasswordHash {
    /// A rough cost of one check, in microseconds on the benchmark machine, to pick the costliest
    /// hash of a file as the decoy for unknown users. Only the order matters.
    pub fn cost_estimate(&self) -> u64 {
        match self {
            // bcrypt cost 12: about 0.44 s, doubling per step.
            PasswordHash::Bcrypt(hash) => {
                let cost: u32 = hash.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(MAX_BCRYPT_COST);
                (440_000u64 << cost.min(MAX_BCRYPT_COST)) >> MAX_BCRYPT_COST
            }
            // Per round, for a short password: SHA-512 about 0.75 µs, SHA-256 about 0.2 µs.
            PasswordHash::ShaCrypt { kind: ShaCryptKind::Sha512, rounds, .. } => *rounds as u64 * 3 / 4,
            PasswordHash::ShaCrypt { kind: ShaCryptKind::Sha256, rounds, .. } => *rounds as u64 / 5,
            // 1,000 MD5 rounds.
            PasswordHash::Md5Crypt { .. } => 300,
            PasswordHash::Sha1(_) | PasswordHash::SaltedSha1 { .. } => 1,
            PasswordHash::Plain(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes written by Debian's `htpasswd -nb <flag> u 'p:w'` (password `p:w`).
    const WRITTEN_BY_HTPASSWD: &[(&str, &str)] = &[
        ("-m", "$apr1$Vbzgf3Ez$yK/7.nLf1A/P9lhDxOPqB1"),
        ("-2", "$5$ZBuN2Q9/7vn9A1Tt$M016vBarD963U7eqUi/hwlzIwaTQnPGL.FmRjAChIC4"),
        ("-5", "$6$oCVqd703cHv2NZY7$9qf3DMMGeIJIj9502bAE35PDKpsO9t5zVclIsql2Zx/LIyVQxo4Asf5qCtHwAIpkcqqUFHbXtuLBPlYVlmbKI0"),
        ("-B", "$2y$05$br39LHCF.YEzpKtp/sFSOeITf6AgeOLnTddlrDVUi6Fc/lOFfjg56"),
        ("-s", "{SHA}DRIHHM4AV3Qz8RTwikQAPCo1Kw0="),
    ];

    #[test]
    fn every_htpasswd_format_verifies_right_and_refuses_wrong() {
        for (flag, text) in WRITTEN_BY_HTPASSWD {
            let hash = PasswordHash::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{flag}: {e}"));
            assert!(hash.verify(b"p:w"), "{flag} right password");
            for wrong in [&b"p:W"[..], b"p", b"", b"p:w\0", b"p:w "] {
                assert!(!hash.verify(wrong), "{flag} wrong password {wrong:?}");
            }
        }
    }

    #[test]
    fn sha512_with_explicit_rounds() {
        // htpasswd -nb -5 -r 1000 u p
        let text = "$6$rounds=1000$ZoFKqrdrHcVw5sNC$RU/Hup2dRctb4ayExkWgCt8dx1tskI3KuJHlk8U7BvL2OFG9lR1nTxjPQPPCsS4ynVy1oWWAuOmwxmyeYUAZm1";
        let hash = PasswordHash::parse(text.as_bytes()).unwrap();
        assert!(hash.verify(b"p") && !hash.verify(b"q"));
    }

    #[test]
    fn glibc_reference_vectors() {
        // Written by glibc's crypt(3); the salt is cut at 16 characters.
        let sha256 = "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5";
        let sha256_hash = PasswordHash::parse(sha256.as_bytes()).unwrap();
        assert!(sha256_hash.verify(b"This is just a test"));
        let sha512 = "$6$rounds=1400$anotherlongsaltstring$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1";
        assert!(PasswordHash::parse(sha512.as_bytes())
            .unwrap()
            .verify(b"a very much longer text to encrypt.  This one even stretches over morethan one line."));
        let md5 = PasswordHash::parse(b"$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/").unwrap();
        assert!(md5.verify(b"password"));
    }

    #[test]
    fn salted_sha1_and_plain_as_nginx_reads_them() {
        let salt = b"NaCl";
        let mut raw = Sha1::new().chain_update(b"secret").chain_update(salt).finalize().to_vec();
        raw.extend_from_slice(salt);
        let ssha = format!("{{SSHA}}{}", BASE64.encode(&raw));
        let hash = PasswordHash::parse(ssha.as_bytes()).unwrap();
        assert!(hash.verify(b"secret") && !hash.verify(b"secreT"));
        let plain = PasswordHash::parse(b"{PLAIN}pa\xc3\xa9ss").unwrap();
        assert!(plain.verify("paéss".as_bytes()) && !plain.verify(b"pa"));
    }

    #[test]
    fn nul_and_what_follows_count() {
        let plain = PasswordHash::parse(b"{PLAIN}ab").unwrap();
        assert!(!plain.verify(b"ab\0cd"));
        let sha1 = PasswordHash::parse(b"{SHA}2iNhTgJGmg18e9G9q1ycR0sZBNw=").unwrap(); // "ab"
        assert!(sha1.verify(b"ab") && !sha1.verify(b"ab\0"));
    }

    #[test]
    fn rejects_des_plaintext_unknown_and_malformed() {
        assert_eq!(PasswordHash::parse(b"lZu0wOMcIYesE").err(), Some(Rejected::DesCrypt));
        assert_eq!(PasswordHash::parse(b"mypassword").err(), Some(Rejected::Unknown));
        assert_eq!(PasswordHash::parse(b"$argon2id$v=19$x").err(), Some(Rejected::Unknown));
        assert_eq!(PasswordHash::parse(b"").err(), Some(Rejected::Unknown));
        for bad in [
            &b"$apr1$salt"[..],
            b"$apr1$toolongsalt$yK/7.nLf1A/P9lhDxOPqB1",
            b"$5$s$short",
            b"$6$rounds=x$s$h",
            b"$2y$05$short",
            b"$2y$99$br39LHCF.YEzpKtp/sFSOeITf6AgeOLnTddlrDVUi6Fc/lOFfjg56",
            b"{SHA}!!",
            b"{SHA}YWJj",
            b"{SSHA}YWJj",
        ] {
            assert!(
                matches!(PasswordHash::parse(bad), Err(Rejected::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn costly_hashes_are_refused_at_load() {
        let cost13 = b"$2y$13$br39LHCF.YEzpKtp/sFSOeITf6AgeOLnTddlrDVUi6Fc/lOFfjg56";
        assert!(matches!(PasswordHash::parse(cost13), Err(Rejected::TooCostly(_))));
        let cost12 = b"$2y$12$br39LHCF.YEzpKtp/sFSOeITf6AgeOLnTddlrDVUi6Fc/lOFfjg56";
        assert!(PasswordHash::parse(cost12).is_ok());
        let many_rounds = b"$6$rounds=1000000$ZoFKqrdrHcVw5sNC$RU/Hup2dRctb4ayExkWgCt8dx1tskI3KuJHlk8U7BvL2OFG9lR1nTxjPQPPCsS4ynVy1oWWAuOmwxmyeYUAZm1";
        assert!(matches!(PasswordHash::parse(many_rounds), Err(Rejected::TooCostly(_))));
        let sha512_over = b"$6$rounds=100001$ZoFKqrdrHcVw5sNC$RU/Hup2dRctb4ayExkWgCt8dx1tskI3KuJHlk8U7BvL2OFG9lR1nTxjPQPPCsS4ynVy1oWWAuOmwxmyeYUAZm1";
        assert!(matches!(PasswordHash::parse(sha512_over), Err(Rejected::TooCostly(_))));
        let sha256_max = b"$5$rounds=500000$ZBuN2Q9/7vn9A1Tt$M016vBarD963U7eqUi/hwlzIwaTQnPGL.FmRjAChIC4";
        assert!(PasswordHash::parse(sha256_max).is_ok());
        let at_limit = b"$5$rounds=100000$ZBuN2Q9/7vn9A1Tt$M016vBarD963U7eqUi/hwlzIwaTQnPGL.FmRjAChIC4";
        assert!(PasswordHash::parse(at_limit).is_ok());
    }

    #[test]
    fn a_long_password_is_refused_without_hashing() {
        // Before the cap, a 4,000-byte password took 7.5 s against this hash (SHA-crypt hashes
        // the password once per round); now it is refused at once. The hash's salt and digest
        // need not match: the check must not even start.
        let costly = b"$6$rounds=100000$ZoFKqrdrHcVw5sNC$RU/Hup2dRctb4ayExkWgCt8dx1tskI3KuJHlk8U7BvL2OFG9lR1nTxjPQPPCsS4ynVy1oWWAuOmwxmyeYUAZm1";
        let hash = PasswordHash::parse(costly).unwrap();
        let start = std::time::Instant::now();
        assert!(!hash.verify(&[b'a'; 4000]));
        assert!(start.elapsed() < std::time::Duration::from_millis(5), "{:?}", start.elapsed());
        let plain = PasswordHash::parse(format!("{{PLAIN}}{}", "p".repeat(MAX_PASSWORD_BYTES + 1)).as_bytes()).unwrap();
        assert!(!plain.verify("p".repeat(MAX_PASSWORD_BYTES + 1).as_bytes()), "over the cap, whatever the hash");
        let plain = PasswordHash::parse(format!("{{PLAIN}}{}", "p".repeat(MAX_PASSWORD_BYTES)).as_bytes()).unwrap();
        assert!(plain.verify("p".repeat(MAX_PASSWORD_BYTES).as_bytes()), "at the cap");
    }

    #[test]
    fn cost_estimates_order_hashes_by_their_real_cost() {
        let parse = |text: &[u8]| PasswordHash::parse(text).unwrap();
        let plain = parse(b"{PLAIN}x");
        let sha1 = parse(b"{SHA}DRIHHM4AV3Qz8RTwikQAPCo1Kw0=");
        let apr1 = parse(WRITTEN_BY_HTPASSWD[0].1.as_bytes());
        let bcrypt5 = parse(WRITTEN_BY_HTPASSWD[3].1.as_bytes());
        let sha512_default = parse(WRITTEN_BY_HTPASSWD[2].1.as_bytes());
        let bcrypt12 = parse(b"$2y$12$br39LHCF.YEzpKtp/sFSOeITf6AgeOLnTddlrDVUi6Fc/lOFfjg56");
        // Cost 5 bcrypt and 5,000-round SHA-512 crypt are within a factor of two of each other,
        // so only their order against the cheap and the costly ones is checked.
        for middle in [&bcrypt5, &sha512_default] {
            for pair in [[&plain, &sha1], [&sha1, &apr1], [&apr1, middle], [middle, &bcrypt12]] {
                assert!(pair[0].cost_estimate() < pair[1].cost_estimate());
            }
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        let samples: [&[u8]; 10] = [
            b"",
            b"a",
            b"abcdefgh",
            b"abcdefgi",
            b"bbcdefgh",
            b"abcdefghijklmnopq",
            b"abcdefghijklmnopr",
            b"bbcdefghijklmnopq",
            b"abcdefghXjklmnopq",
            b"abcdefghijXlmnopq",
        ];
        for a in samples {
            for b in samples {
                assert_eq!(constant_time_eq(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn debug_never_shows_the_hash() {
        let hash = PasswordHash::parse(b"{PLAIN}topsecret").unwrap();
        assert!(!format!("{hash:?}").contains("topsecret"));
    }
}
