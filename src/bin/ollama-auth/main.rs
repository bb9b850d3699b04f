//! `ollama-auth`: makes, lists and revokes bearer keys, manages htpasswd users, and checks both
//! files with the module's own parser. Needs no nginx. See `ollama-auth --help`.

mod args;
mod edit;
mod help;
mod list;
mod password;
mod store;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use zeroize::Zeroizing;

use ngx_ollama_auth::htpasswd::{UserTable, Verdict};
use ngx_ollama_auth::keys::{fingerprint_of, sha256, KeySet};
use ngx_ollama_auth::options::{parse_options, EntryOptions, OptionError};
use ngx_ollama_auth::watch::{read_regular_file, Counted, Parse};

use args::{Command, OptionFlags};
use edit::{hex, KeyLine, Revocation, RevokeTarget};
use store::StoreError;

/// Exit codes, as `--help` documents them.
const PROBLEM: u8 = 1;
const USAGE: u8 = 2;
const CANNOT_WRITE: u8 = 3;
const IO: u8 = 4;

/// The shipped configuration's paths (nginx-conf/*.conf, docker/Dockerfile).
const DEFAULT_KEYS: &str = "/etc/nginx/auth/api_keys.txt";
const DEFAULT_USERS: &str = "/etc/nginx/auth/htpasswd";

/// Prefix of the keys this tool makes, so that a leaked one is recognised (by secret scanners too).
const KEY_PREFIX: &str = "sk-ollama-";
/// 256 bits from the OS's random source.
const KEY_RANDOM_BYTES: usize = 32;

/// Why a command failed: the exit code, the one-line message, and lines to print after it as
/// they are (a line to add to a file by hand).
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
    lines: Vec<String>,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure { code, message: message.into(), lines: Vec::new() }
    }

    fn with_lines(mut self, lines: Vec<String>) -> Self {
        self.lines = lines;
        self
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = match args::parse(&args) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("ollama-auth: {} (see `{} --help`)", error.message, help_name(error.command));
            return ExitCode::from(USAGE);
        }
    };
    match run(command) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("ollama-auth: {}", failure.message);
            for line in &failure.lines {
                eprintln!("{line}");
            }
            ExitCode::from(failure.code)
        }
    }
}

fn help_name(text: &str) -> &'static str {
    [
        (help::KEY, "ollama-auth key"),
        (help::KEY_NEW, "ollama-auth key new"),
        (help::KEY_SET, "ollama-auth key set"),
        (help::KEY_REVOKE, "ollama-auth key revoke"),
        (help::KEY_LIST, "ollama-auth key list"),
        (help::USER, "ollama-auth user"),
        (help::USER_ADD, "ollama-auth user add"),
        (help::USER_PASSWD, "ollama-auth user passwd"),
        (help::USER_REMOVE, "ollama-auth user remove"),
        (help::USER_LIST, "ollama-auth user list"),
        (help::CHECK, "ollama-auth check"),
    ]
    .into_iter()
    .find(|(known, _)| *known == text)
    .map_or("ollama-auth", |(_, name)| name)
}

fn run(command: Command) -> Result<u8, Failure> {
    match command {
        Command::Help(text) => {
            print!("{text}");
            Ok(0)
        }
        Command::Version => {
            println!("ollama-auth {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Command::KeyNew { name, options, plain, file } => key_new(&name, &options, plain, &keys_path(file)),
        Command::KeySet { target, options, file } => key_set(&target, &options, &keys_path(file)),
        Command::KeyRevoke { target, all, file } => key_revoke(&target, all, &keys_path(file)),
        Command::KeyList { json, file } => list::key_list(json, &keys_path(file)),
        Command::UserAdd { name, options, cost, file } => user_add(&name, &options, cost, &users_path(file)),
        Command::UserPasswd { name, cost, file } => user_passwd(&name, cost, &users_path(file)),
        Command::UserRemove { name, file } => user_remove(&name, &users_path(file)),
        Command::UserList { json, file } => list::user_list(json, &users_path(file)),
        Command::Check { keys, users } => check(keys, users),
    }
}

fn env_path(variable: &str) -> Option<PathBuf> {
    std::env::var_os(variable).filter(|value| !value.is_empty()).map(PathBuf::from)
}

fn keys_path(file: Option<PathBuf>) -> PathBuf {
    file.or_else(|| env_path("OLLAMA_AUTH_KEYS")).unwrap_or_else(|| DEFAULT_KEYS.into())
}

fn users_path(file: Option<PathBuf>) -> PathBuf {
    file.or_else(|| env_path("OLLAMA_AUTH_USERS")).unwrap_or_else(|| DEFAULT_USERS.into())
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs() as i64)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn list_lines(lines: &[usize]) -> String {
    let numbers: Vec<String> = lines.iter().map(usize::to_string).collect();
    let noun = if lines.len() == 1 { "line" } else { "lines" };
    format!("{noun} {}", numbers.join(", "))
}

/// An example for each option, for the hint after a refused value.
fn option_hint(option: &str) -> &'static str {
    match option {
        "scopes" => "e.g. --scopes read,infer",
        "models" => "e.g. --models 'llama3*,myorg/*'",
        "expires" => "e.g. --expires 2026-12-31 or --expires 2026-12-31T18:00:00+01:00",
        "tokens" => "e.g. --tokens 20000/1m,500000/1d; periods <n>s, <n>m, <n>h, <n>d, at most 366 days",
        "requests" => "e.g. --requests 60/1m; periods <n>s, <n>m, <n>h, <n>d, at most 366 days",
        "share" => "e.g. --share 3 (a whole number from 1 to 1000)",
        "queue" => "e.g. --queue 20 (a whole number from 0 to 100000)",
        "num_ctx" => "e.g. --num-ctx 32768",
        "num_predict" => "e.g. --num-predict 4096",
        "keep_alive" => "e.g. --keep-alive 5m..30m, --keep-alive 1h (the longest) or --keep-alive 1m.. (the shortest)",
        _ => "e.g. --parallel 2",
    }
}

/// Checks the option flags with the module's own parser and returns the words to write, as the
/// module writes them back (so they read back to the same options).
fn option_words(flags: &OptionFlags) -> Result<(Vec<String>, EntryOptions), Failure> {
    let given = flags.given();
    let words: Vec<String> = given.iter().map(|(name, value)| format!("{name}={value}")).collect();
    let word_bytes: Vec<&[u8]> = words.iter().map(|word| word.as_bytes()).collect();
    let options = parse_options(&word_bytes).map_err(|error| {
        let message = match &error {
            OptionError::Invalid { option, reason } => {
                format!("--{}: {reason} ({})", option.replace('_', "-"), option_hint(option))
            }
            other => other.to_string(),
        };
        Failure::new(USAGE, message)
    })?;
    let written = options.to_words();
    for word in &written {
        if word.chars().any(|c| c.is_whitespace() || c.is_control()) {
            let option = word.split('=').next().unwrap_or_default();
            return Err(Failure::new(
                USAGE,
                format!("--{option}: white space has no place in an option ({})", option_hint(option)),
            ));
        }
    }
    let reread: Vec<&[u8]> = written.iter().map(|word| word.as_bytes()).collect();
    if parse_options(&reread).as_ref() != Ok(&options) {
        return Err(Failure::new(IO, "internal error: the options do not read back as written"));
    }
    if options.is_expired_at(now()) {
        return Err(Failure::new(
            USAGE,
            "--expires: that time has passed, so the entry would never admit anyone (give a later time)",
        ));
    }
    Ok((written, options))
}

/// A new key: the prefix and 256 random bits from the OS, URL-safe base64 without padding.
fn generate_key() -> Result<Zeroizing<String>, Failure> {
    let mut random = Zeroizing::new([0u8; KEY_RANDOM_BYTES]);
    getrandom::fill(random.as_mut())
        .map_err(|error| Failure::new(IO, format!("cannot read the OS random source: {error}")))?;
    Ok(Zeroizing::new(format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random.as_ref()))))
}

fn key_new(name: &str, flags: &OptionFlags, plain: bool, path: &Path) -> Result<u8, Failure> {
    let name = edit::key_name(name).map_err(|message| Failure::new(USAGE, message))?;
    let (words, options) = option_words(flags)?;
    let key = generate_key()?;
    let digest = sha256(key.as_bytes());
    let shown = fingerprint_of(&digest);
    let mut line = Zeroizing::new(if plain { key.to_string() } else { format!("sha256:{}", hex(&digest)) });
    line.push(' ');
    line.push_str(&name);
    for word in &words {
        line.push(' ');
        line.push_str(word);
    }

    let result = store::update(path, true, |content| {
        let content = content.unwrap_or_default();
        let (new, number) = edit::append_line(content, line.as_bytes());
        // The new line must come back as written: the module admits the key, and reads the same
        // name and options.
        let (keys, warnings) = KeySet::parse(&new);
        if let Some(warning) = warnings.iter().find(|warning| warning.line == number) {
            return Err(Failure::new(PROBLEM, format!("the new line would be skipped by nginx: {}", warning.reason)));
        }
        let reread = edit::key_lines(&new).into_iter().find(|entry| entry.line == number);
        let reads_back = reread.is_some_and(|entry| {
            entry.digest == Some(digest) && entry.name == name.as_bytes() && entry.options.as_ref() == Ok(&options)
        });
        if keys.lookup(key.as_bytes()).is_none() || !reads_back {
            return Err(Failure::new(IO, "internal error: the new line does not read back as written"));
        }
        let namesakes: Vec<usize> = edit::key_lines(content)
            .into_iter()
            .filter(|entry| entry.name == name.as_bytes())
            .map(|entry| entry.line)
            .collect();
        Ok((new, (number, namesakes)))
    });
    match result {
        Ok((number, namesakes)) => {
            println!("{}", key.as_str());
            eprintln!("ollama-auth: added key \"{name}\" ({shown}) to {}, line {number}", path.display());
            if !namesakes.is_empty() {
                let verb = if namesakes.len() == 1 { "names" } else { "name" };
                eprintln!(
                    "ollama-auth: note: {} also {verb} a key \"{name}\"; revoke the old key by its fingerprint",
                    list_lines(&namesakes)
                );
            }
            Ok(0)
        }
        Err(error) => {
            let message = match error {
                StoreError::CannotWrite(message) => message,
                // A missing or unreadable file or directory: no key was added, so none is shown.
                StoreError::Io(message) => return Err(Failure::new(IO, format!("{message}; no key was made"))),
                StoreError::Refused(failure) => return Err(failure),
            };
            let code = CANNOT_WRITE;
            // The file is there but cannot be written: print the key so that the line below can
            // be added by hand.
            println!("{}", key.as_str());
            Err(Failure::new(
                code,
                format!("{message}; the key ({shown}) was NOT added. Add this line to {} yourself:", path.display()),
            )
            .with_lines(vec![line.to_string()]))
        }
    }
}

fn describe_key(entry: &KeyLine) -> String {
    let name = if entry.name.is_empty() { "unnamed".to_string() } else { format!("\"{}\"", lossy(&entry.name)) };
    match &entry.digest {
        Some(digest) => format!("line {} ({name}, {})", entry.line, fingerprint_of(digest)),
        None => format!("line {} ({name})", entry.line),
    }
}

/// `key set`: the given options replace the same options on every line of the one key named.
fn key_set(target_text: &str, flags: &OptionFlags, path: &Path) -> Result<u8, Failure> {
    let target = RevokeTarget::parse(target_text);
    if target == RevokeTarget::Name(Vec::new()) {
        return Err(Failure::new(USAGE, "the key name is empty"));
    }
    let (given, _) = option_words(flags)?;
    let result = store::update(path, false, |content| {
        let content = content.unwrap_or_default();
        let entries = edit::key_lines(content);
        let matched: Vec<&edit::KeyLine> = entries.iter().filter(|entry| target.matches(entry)).collect();
        let mut digests: Vec<_> = matched.iter().map(|entry| entry.digest).collect();
        digests.sort_unstable();
        digests.dedup();
        if matched.is_empty() || digests.len() > 1 {
            let why = if matched.is_empty() { "no key" } else { "several different keys" };
            return Err(Failure::new(
                PROBLEM,
                format!("{why} with that name or fingerprint in {}; nothing set", path.display()),
            ));
        }
        let mut out = content.to_vec();
        for entry in &matched {
            out = match edit::set_line_options(&out, entry.line, &given) {
                Some(Ok(changed)) => changed,
                Some(Err(error)) => {
                    return Err(Failure::new(USAGE, format!("line {}: {error}; nothing set", entry.line)))
                }
                None => return Err(Failure::new(IO, "the file changed while it was read; nothing set")),
            };
        }
        let described: Vec<String> = matched.iter().map(|entry| describe_key(entry)).collect();
        Ok((out, described))
    });
    match result {
        Ok(described) => {
            eprintln!("ollama-auth: set {} on {} in {}", given.join(" "), described.join(", "), path.display());
            Ok(0)
        }
        Err(error) => Err(store_failure(error, path, |path| format!("nothing was changed in {}", path.display()))),
    }
}

fn key_revoke(target_text: &str, all: bool, path: &Path) -> Result<u8, Failure> {
    let target = RevokeTarget::parse(target_text);
    if target == RevokeTarget::Name(Vec::new()) {
        return Err(Failure::new(USAGE, "the key name is empty"));
    }
    let what = match &target {
        RevokeTarget::Fingerprint(hex) => format!("fingerprint sha256:{hex}"),
        RevokeTarget::Name(name) => format!("name \"{}\"", lossy(name)),
    };
    // What the edit planned, for the message when the file cannot be written.
    let mut planned = Vec::new();
    let result = store::update(path, false, |content| {
        let content = content.unwrap_or_default();
        let entries = edit::key_lines(content);
        match edit::plan_revocation(&entries, &target, all) {
            Revocation::NotFound => {
                Err(Failure::new(PROBLEM, format!("no key with the {what} in {}; nothing revoked", path.display())))
            }
            Revocation::Ambiguous(candidates) => {
                let listed: Vec<String> = candidates
                    .iter()
                    .map(|(line, fp)| format!("line {line} {}", fp.as_deref().unwrap_or("(unreadable key)")))
                    .collect();
                Err(Failure::new(
                    PROBLEM,
                    format!(
                        "different keys carry the {what} ({}); nothing revoked: revoke one by its fingerprint, or all with --all",
                        listed.join(", ")
                    ),
                ))
            }
            Revocation::Lines { lines, keys } => {
                let described: Vec<String> =
                    entries.iter().filter(|entry| lines.contains(&entry.line)).map(describe_key).collect();
                planned.clone_from(&described);
                Ok((edit::remove_lines(content, &lines), (lines, keys, described)))
            }
        }
    });
    match result {
        Ok((lines, keys, described)) => {
            let noun = if keys == 1 { "key" } else { "keys" };
            let removed = if lines.len() == 1 { "1 line".to_string() } else { format!("{} lines", lines.len()) };
            eprintln!(
                "ollama-auth: revoked {keys} {noun} in {}: removed {removed}: {}",
                path.display(),
                described.join(", ")
            );
            Ok(0)
        }
        Err(error) => Err(store_failure(error, path, |path| {
            format!("nothing was changed. To revoke by hand, remove from {}: {}", path.display(), planned.join(", "))
        })),
    }
}

/// The failure for a store error; `instead` says what to do by hand when the file cannot be
/// written.
fn store_failure(error: StoreError<Failure>, path: &Path, instead: impl FnOnce(&Path) -> String) -> Failure {
    match error {
        StoreError::Refused(failure) => failure,
        StoreError::CannotWrite(message) => Failure::new(CANNOT_WRITE, format!("{message}; {}", instead(path))),
        StoreError::Io(message) => Failure::new(IO, format!("{message}; nothing was changed")),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    read_regular_file(path).map(|(content, _)| content).map_err(|error| {
        Failure::new(IO, format!("cannot read {}: {}", path.display(), without_os_error(&error.to_string())))
    })
}

fn without_os_error(text: &str) -> &str {
    text.find(" (os error ").map_or(text, |cut| &text[..cut])
}

/// The user's line as `user add` writes it: `user:hash`, then the options in the comment field.
fn user_line(name: &str, hash: &str, words: &[String]) -> String {
    if words.is_empty() {
        format!("{name}:{hash}")
    } else {
        format!("{name}:{hash}:{}", words.join(" "))
    }
}

fn bcrypt_hash(password: &[u8], cost: u32) -> Result<String, Failure> {
    bcrypt::hash_with_result(password, cost)
        .map(|parts| parts.format_for_version(bcrypt::Version::TwoY))
        .map_err(|error| Failure::new(IO, format!("cannot hash the password: {error}")))
}

/// After an edit, the module must admit `name` with `password`; else names why it would not.
fn check_admits(content: &[u8], name: &str, password: &[u8], lines: &[usize]) -> Result<(), Failure> {
    let (users, warnings) = UserTable::parse(content);
    if matches!(users.verify(name.as_bytes(), password), Verdict::Admitted(_)) {
        return Ok(());
    }
    let reasons: Vec<String> = warnings
        .iter()
        .filter(|warning| lines.contains(&warning.line))
        .map(|warning| format!("line {}: {}", warning.line, warning.reason))
        .collect();
    Err(Failure::new(
        PROBLEM,
        format!(
            "nothing was changed: nginx would not admit \"{name}\" with the new line ({}); fix the line first",
            if reasons.is_empty() { "an earlier line for the user wins".to_string() } else { reasons.join("; ") }
        ),
    ))
}

fn user_exists_failure(name: &str, lines: &[usize], path: &Path) -> Failure {
    Failure::new(
        PROBLEM,
        format!(
            "user \"{name}\" exists ({} of {}); use `ollama-auth user passwd {name}` to change the password",
            list_lines(lines),
            path.display()
        ),
    )
}

fn no_user_failure(name: &str, path: &Path) -> Failure {
    Failure::new(PROBLEM, format!("no user \"{name}\" in {}; nothing changed", path.display()))
}

fn user_add(name: &str, flags: &OptionFlags, cost: u32, path: &Path) -> Result<u8, Failure> {
    edit::user_name(name).map_err(|message| Failure::new(USAGE, message))?;
    let (words, _) = option_words(flags)?;
    // Refuse an existing user before asking for a password (and again under the lock).
    if let Ok((content, _)) = read_regular_file(path) {
        let lines = edit::user_lines(&content, name.as_bytes());
        if !lines.is_empty() {
            return Err(user_exists_failure(name, &lines, path));
        }
    }
    let password = password::read_new(name).map_err(|message| Failure::new(USAGE, message))?;
    let line = user_line(name, &bcrypt_hash(&password, cost)?, &words);
    let result = store::update(path, true, |content| {
        let content = content.unwrap_or_default();
        let lines = edit::user_lines(content, name.as_bytes());
        if !lines.is_empty() {
            return Err(user_exists_failure(name, &lines, path));
        }
        let (new, number) = edit::append_line(content, line.as_bytes());
        check_admits(&new, name, &password, &[number])?;
        Ok((new, number))
    });
    match result {
        Ok(number) => {
            eprintln!("ollama-auth: added user \"{name}\" to {}, line {number}", path.display());
            Ok(0)
        }
        Err(error) => {
            let cannot_write = matches!(error, StoreError::CannotWrite(_));
            let failure = store_failure(error, path, |path| {
                format!("nothing was changed. Add this line to {} yourself:", path.display())
            });
            Err(if cannot_write { failure.with_lines(vec![line]) } else { failure })
        }
    }
}

fn user_passwd(name: &str, cost: u32, path: &Path) -> Result<u8, Failure> {
    if name.is_empty() {
        return Err(Failure::new(USAGE, "the user name is empty"));
    }
    let content = read_file(path)?;
    if edit::user_lines(&content, name.as_bytes()).is_empty() {
        return Err(no_user_failure(name, path));
    }
    let password = password::read_new(name).map_err(|message| Failure::new(USAGE, message))?;
    let hash = bcrypt_hash(&password, cost)?;
    let mut replacements = Vec::new();
    let result = store::update(path, false, |content| {
        let content = content.unwrap_or_default();
        let lines = edit::user_lines(content, name.as_bytes());
        if lines.is_empty() {
            return Err(no_user_failure(name, path));
        }
        let mut new = content.to_vec();
        for &line in &lines {
            new = edit::replace_hash(&new, line, hash.as_bytes()).expect("a user line has a colon");
        }
        for &line in &lines {
            replacements.push(lossy(edit::line_text(&new, line).unwrap_or_default()).trim().to_string());
        }
        check_admits(&new, name, &password, &lines)?;
        Ok((new, lines))
    });
    match result {
        Ok(lines) => {
            eprintln!("ollama-auth: changed the password of \"{name}\" in {} ({})", path.display(), list_lines(&lines));
            Ok(0)
        }
        Err(error) => {
            let cannot_write = matches!(error, StoreError::CannotWrite(_));
            let lines = edit::user_lines(&content, name.as_bytes());
            let failure = store_failure(error, path, |path| {
                format!("nothing was changed. Replace {} of {} with:", list_lines(&lines), path.display())
            });
            Err(if cannot_write { failure.with_lines(replacements) } else { failure })
        }
    }
}

fn user_remove(name: &str, path: &Path) -> Result<u8, Failure> {
    if name.is_empty() {
        return Err(Failure::new(USAGE, "the user name is empty"));
    }
    let mut planned = Vec::new();
    let result = store::update(path, false, |content| {
        let content = content.unwrap_or_default();
        let lines = edit::user_lines(content, name.as_bytes());
        if lines.is_empty() {
            return Err(no_user_failure(name, path));
        }
        planned.clone_from(&lines);
        Ok((edit::remove_lines(content, &lines), lines))
    });
    match result {
        Ok(lines) => {
            eprintln!("ollama-auth: removed user \"{name}\" from {} ({})", path.display(), list_lines(&lines));
            Ok(0)
        }
        Err(error) => Err(store_failure(error, path, |path| {
            format!(
                "nothing was changed. To remove the user by hand, delete {} of {}",
                list_lines(&planned),
                path.display()
            )
        })),
    }
}

/// The path as nginx names it in its log: absolute (nginx makes a relative one absolute
/// against its prefix; here, against the current directory).
fn as_logged(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir().map_or_else(|_| path.to_path_buf(), |dir| dir.join(path))
}

/// Checks one file; returns the exit code for it.
fn check_file<T: Parse + Counted>(path: &Path) -> u8 {
    let logged = as_logged(path);
    let content = match read_regular_file(path) {
        Ok((content, _)) => content,
        Err(error) => {
            eprintln!(
                "ollama-auth: {} \"{}\" cannot be read: {}",
                T::FILE_KIND,
                logged.display(),
                without_os_error(&error.to_string())
            );
            return IO;
        }
    };
    let (parsed, warnings) = T::parse(&content);
    for warning in &warnings {
        println!("{}", warning.message::<T>(&logged));
    }
    let skipped = match warnings.len() {
        0 => "no line skipped".to_string(),
        1 => "1 line skipped".to_string(),
        n => format!("{n} lines skipped"),
    };
    // As nginx's notice after a load, with the count of skipped lines.
    eprintln!(
        "ollama-auth: {} \"{}\" loaded: {} {}, {skipped}",
        T::FILE_KIND,
        logged.display(),
        parsed.entry_count(),
        T::ENTRY_KIND
    );
    if warnings.is_empty() {
        0
    } else {
        PROBLEM
    }
}

fn check(keys: Option<PathBuf>, users: Option<PathBuf>) -> Result<u8, Failure> {
    let (keys, users) = if keys.is_some() || users.is_some() {
        (keys, users)
    } else {
        // The environment names files that must be there; the shipped paths only if present.
        let pick = |variable: &str, default: &str| {
            env_path(variable).or_else(|| Path::new(default).exists().then(|| PathBuf::from(default)))
        };
        let picked = (pick("OLLAMA_AUTH_KEYS", DEFAULT_KEYS), pick("OLLAMA_AUTH_USERS", DEFAULT_USERS));
        if picked == (None, None) {
            return Err(Failure::new(
                IO,
                format!("nothing to check: neither {DEFAULT_KEYS} nor {DEFAULT_USERS} exists (give --keys or --users)"),
            ));
        }
        picked
    };
    let mut code = 0;
    if let Some(path) = keys {
        code = code.max(check_file::<KeySet>(&path));
    }
    if let Some(path) = users {
        code = code.max(check_file::<UserTable>(&path));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> OptionFlags {
        let mut flags = OptionFlags::default();
        for &(name, value) in pairs {
            let slot = match name {
                "scopes" => &mut flags.scopes,
                "models" => &mut flags.models,
                "expires" => &mut flags.expires,
                "tokens" => &mut flags.tokens,
                "requests" => &mut flags.requests,
                "share" => &mut flags.share,
                "queue" => &mut flags.queue,
                "num_ctx" => &mut flags.num_ctx,
                "keep_alive" => &mut flags.keep_alive,
                _ => &mut flags.parallel,
            };
            *slot = Some(value.to_string());
        }
        flags
    }

    fn words(pairs: &[(&str, &str)]) -> Result<Vec<String>, String> {
        option_words(&flags(pairs)).map(|(words, _)| words).map_err(|failure| failure.message)
    }

    #[test]
    fn option_flags_are_checked_and_written_as_the_module_writes_them() {
        assert_eq!(words(&[]), Ok(vec![]));
        assert_eq!(
            words(&[
                ("parallel", "2"),
                ("scopes", "infer,read"),
                ("tokens", "20000/60s"),
                ("expires", "2099-01-01 12:00:00+01:00")
            ]),
            Ok(vec![
                "scopes=read,infer".into(),
                "expires=2099-01-01T11:00:00Z".into(),
                "tokens=20000/1m".into(),
                "parallel=2".into()
            ])
        );
        assert_eq!(words(&[("models", "llama3*,myorg/*")]), Ok(vec!["models=llama3*,myorg/*".into()]));
    }

    #[test]
    fn refused_option_flags_name_the_flag_and_give_a_hint() {
        let error = words(&[("scopes", "write")]).unwrap_err();
        assert_eq!(error, "--scopes: item 1 is not one of read, infer, manage, search, all (e.g. --scopes read,infer)");
        assert!(words(&[("tokens", "100")]).unwrap_err().starts_with("--tokens: item 1: expected <n>/<period>"));
        assert!(words(&[("parallel", "0")]).unwrap_err().starts_with("--parallel: must be at least 1"));
        assert_eq!(words(&[("num_ctx", "32768"), ("keep_alive", "30m")]).unwrap(), ["num_ctx=32768", "keep_alive=30m"]);
        assert!(words(&[("keep_alive", "0s")])
            .unwrap_err()
            .starts_with("--keep-alive: must be a whole number of seconds"));
        assert!(words(&[("share", "0")]).unwrap_err().starts_with("--share: must be at least 1 (e.g. --share 3"));
        assert!(words(&[("queue", "x")]).unwrap_err().starts_with("--queue: not a whole number"));
        assert_eq!(words(&[("queue", "5"), ("share", "3")]), Ok(vec!["share=3".into(), "queue=5".into()]));
        assert!(words(&[("expires", "tomorrow")]).unwrap_err().starts_with("--expires: not a date"));
        assert!(words(&[("expires", "2001-01-01")]).unwrap_err().contains("has passed"));
        assert!(words(&[("models", "a, b")]).unwrap_err().starts_with("--models: "));
    }

    #[test]
    fn keys_are_long_random_url_safe_and_recognisable() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(*a, *b);
        let body = a.strip_prefix(KEY_PREFIX).unwrap();
        assert_eq!(body.len(), 43, "256 bits in unpadded base64");
        assert!(body.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn user_lines_carry_options_in_the_comment_field() {
        assert_eq!(user_line("bob", "$2y$10$h", &[]), "bob:$2y$10$h");
        assert_eq!(
            user_line("bob", "$2y$10$h", &["scopes=read".into(), "parallel=1".into()]),
            "bob:$2y$10$h:scopes=read parallel=1"
        );
        let line = user_line("bob", "$2y$10$h", &["scopes=read".into()]);
        assert_eq!(edit::user_options(line.as_bytes()).unwrap().to_words(), ["scopes=read"]);
    }
}
