//! Hand-written argument parsing: a handful of subcommands and flags do not need a crate.
//!
//! Flags take `--flag value` or `--flag=value`; `--` ends the flags (for a name that starts with
//! `-`); `-h`/`--help` anywhere before `--` asks for the command's help.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::help;

/// The option flags shared by `key new` and `user add`, as given (checked later, by the module's
/// own option parser).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OptionFlags {
    pub scopes: Option<String>,
    pub models: Option<String>,
    pub expires: Option<String>,
    pub tokens: Option<String>,
    pub requests: Option<String>,
    pub parallel: Option<String>,
    pub share: Option<String>,
    pub queue: Option<String>,
    pub num_ctx: Option<String>,
    pub num_predict: Option<String>,
    pub keep_alive: Option<String>,
}

impl OptionFlags {
    /// `(option name, value)` in the order the module writes options back.
    pub fn given(&self) -> Vec<(&'static str, &str)> {
        [
            ("scopes", &self.scopes),
            ("models", &self.models),
            ("expires", &self.expires),
            ("tokens", &self.tokens),
            ("requests", &self.requests),
            ("parallel", &self.parallel),
            ("share", &self.share),
            ("queue", &self.queue),
            ("num_ctx", &self.num_ctx),
            ("num_predict", &self.num_predict),
            ("keep_alive", &self.keep_alive),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|value| (name, value)))
        .collect()
    }
}

pub const DEFAULT_COST: u32 = 10;
pub const MIN_COST: u32 = 4;
/// The module skips bcrypt hashes above cost 12 (`hashes::MAX_BCRYPT_COST`).
pub const MAX_COST: u32 = ngx_ollama_auth::hashes::MAX_BCRYPT_COST;

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Print this help text on stdout and exit 0.
    Help(&'static str),
    Version,
    KeyNew {
        name: String,
        options: OptionFlags,
        plain: bool,
        file: Option<PathBuf>,
    },
    KeySet {
        target: String,
        options: OptionFlags,
        file: Option<PathBuf>,
    },
    KeyRevoke {
        target: String,
        all: bool,
        file: Option<PathBuf>,
    },
    KeyList {
        json: bool,
        file: Option<PathBuf>,
    },
    UserAdd {
        name: String,
        options: OptionFlags,
        cost: u32,
        file: Option<PathBuf>,
    },
    UserPasswd {
        name: String,
        cost: u32,
        file: Option<PathBuf>,
    },
    UserRemove {
        name: String,
        file: Option<PathBuf>,
    },
    UserList {
        json: bool,
        file: Option<PathBuf>,
    },
    Check {
        keys: Option<PathBuf>,
        users: Option<PathBuf>,
    },
}

/// A usage error: the message, and the help to point at.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError {
    pub message: String,
    pub command: &'static str,
}

fn usage(command: &'static str, message: impl Into<String>) -> UsageError {
    UsageError { message: message.into(), command }
}

const OPTION_FLAGS: [&str; 11] = [
    "scopes",
    "models",
    "expires",
    "tokens",
    "requests",
    "parallel",
    "share",
    "queue",
    "num-ctx",
    "num-predict",
    "keep-alive",
];

/// What one command's flags turned out to be.
#[derive(Debug, Default)]
struct Flags {
    values: Vec<(&'static str, OsString)>,
    switches: Vec<&'static str>,
    positional: Vec<OsString>,
}

impl Flags {
    fn value(&self, name: &str) -> Option<&OsString> {
        self.values.iter().find(|(flag, _)| *flag == name).map(|(_, value)| value)
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.value(name).map(PathBuf::from)
    }

    fn switch(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }
}

enum Parsed {
    Help,
    Flags(Flags),
}

/// Reads flags: `with_value` take a value, `switches` do not.
fn parse_flags(
    command: &'static str,
    args: &[OsString],
    with_value: &[&'static str],
    switches: &[&'static str],
) -> Result<Parsed, UsageError> {
    let mut flags = Flags::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            flags.positional.extend(args.cloned());
            break;
        }
        if text == "-h" || text == "--help" {
            return Ok(Parsed::Help);
        }
        let Some(flag) = text.strip_prefix("--") else {
            if text.starts_with('-') && text.len() > 1 {
                return Err(usage(command, format!("unknown flag {text} (a name starting with - goes after --)")));
            }
            flags.positional.push(arg.clone());
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, _)) => {
                // The value as given, not as lossily decoded: a path may be any bytes.
                let bytes = arg.as_bytes();
                let equals = bytes.iter().position(|&b| b == b'=').expect("the flag holds =");
                (name, Some(OsStr::from_bytes(&bytes[equals + 1..]).to_os_string()))
            }
            None => (flag, None),
        };
        if let Some(&known) = with_value.iter().find(|&&known| known == name) {
            if flags.value(known).is_some() {
                return Err(usage(command, format!("--{known} given twice")));
            }
            let value = match inline {
                Some(value) => value,
                None => args.next().cloned().ok_or_else(|| usage(command, format!("--{known} needs a value")))?,
            };
            flags.values.push((known, value));
        } else if let Some(&known) = switches.iter().find(|&&known| known == name) {
            if inline.is_some() {
                return Err(usage(command, format!("--{known} takes no value")));
            }
            if flags.switch(known) {
                return Err(usage(command, format!("--{known} given twice")));
            }
            flags.switches.push(known);
        } else {
            return Err(usage(command, format!("unknown flag --{name}")));
        }
    }
    Ok(Parsed::Flags(flags))
}

fn utf8(command: &'static str, what: &str, value: &OsStr) -> Result<String, UsageError> {
    value.to_str().map(str::to_owned).ok_or_else(|| usage(command, format!("{what} is not valid UTF-8")))
}

/// The positional words, joined by single spaces (a key's name may be given as several words).
fn joined_words(command: &'static str, what: &str, flags: &Flags) -> Result<String, UsageError> {
    if flags.positional.is_empty() {
        return Err(usage(command, format!("missing {what}")));
    }
    let words: Result<Vec<String>, UsageError> = flags.positional.iter().map(|w| utf8(command, what, w)).collect();
    Ok(words?.join(" "))
}

fn exactly_one(command: &'static str, what: &str, flags: &Flags) -> Result<String, UsageError> {
    match flags.positional.as_slice() {
        [] => Err(usage(command, format!("missing {what}"))),
        [one] => utf8(command, what, one),
        [_, extra, ..] => Err(usage(command, format!("unexpected argument {:?}", extra.to_string_lossy()))),
    }
}

fn no_positional(command: &'static str, flags: &Flags) -> Result<(), UsageError> {
    match flags.positional.first() {
        None => Ok(()),
        Some(extra) => Err(usage(command, format!("unexpected argument {:?}", extra.to_string_lossy()))),
    }
}

fn option_flags(command: &'static str, flags: &Flags) -> Result<OptionFlags, UsageError> {
    let get = |name: &str| flags.value(name).map(|value| utf8(command, &format!("--{name}"), value)).transpose();
    Ok(OptionFlags {
        scopes: get("scopes")?,
        models: get("models")?,
        expires: get("expires")?,
        tokens: get("tokens")?,
        requests: get("requests")?,
        parallel: get("parallel")?,
        share: get("share")?,
        queue: get("queue")?,
        num_ctx: get("num-ctx")?,
        num_predict: get("num-predict")?,
        keep_alive: get("keep-alive")?,
    })
}

fn cost(command: &'static str, flags: &Flags) -> Result<u32, UsageError> {
    let Some(text) = flags.value("cost") else {
        return Ok(DEFAULT_COST);
    };
    match text.to_str().and_then(|t| t.parse::<u32>().ok()) {
        Some(cost) if (MIN_COST..=MAX_COST).contains(&cost) => Ok(cost),
        _ => Err(usage(
            command,
            format!("--cost must be a whole number from {MIN_COST} to {MAX_COST} (the module skips bcrypt costs above {MAX_COST})"),
        )),
    }
}

fn with_options(extra: &[&'static str]) -> Vec<&'static str> {
    OPTION_FLAGS.iter().copied().chain(extra.iter().copied()).collect()
}

/// Reads a command's flags, or returns its help when asked for.
macro_rules! flags {
    ($command:expr, $args:expr, $values:expr, $switches:expr) => {
        match parse_flags($command, $args, $values, $switches)? {
            Parsed::Flags(flags) => flags,
            Parsed::Help => return Ok(Command::Help($command)),
        }
    };
}

/// Parses the arguments after the program name.
pub fn parse(args: &[OsString]) -> Result<Command, UsageError> {
    let Some(first) = args.first() else {
        return Err(usage(help::MAIN, "missing command"));
    };
    let rest = &args[1..];
    match first.to_string_lossy().as_ref() {
        "-h" | "--help" | "help" => Ok(Command::Help(help::MAIN)),
        "-V" | "--version" => Ok(Command::Version),
        "check" => {
            let flags = flags!(help::CHECK, rest, &["keys", "users"], &[]);
            no_positional(help::CHECK, &flags)?;
            Ok(Command::Check { keys: flags.path("keys"), users: flags.path("users") })
        }
        "key" => parse_key(rest),
        "user" => parse_user(rest),
        other => Err(usage(help::MAIN, format!("unknown command {other:?}: key, user or check"))),
    }
}

/// `key <command> ...`
fn parse_key(args: &[OsString]) -> Result<Command, UsageError> {
    let Some(sub) = args.first() else {
        return Err(usage(help::KEY, "missing key command: new, set, revoke or list"));
    };
    let rest = &args[1..];
    match sub.to_string_lossy().as_ref() {
        "-h" | "--help" | "help" => Ok(Command::Help(help::KEY)),
        "new" => {
            let flags = flags!(help::KEY_NEW, rest, &with_options(&["file"]), &["plain"]);
            Ok(Command::KeyNew {
                name: joined_words(help::KEY_NEW, "key name", &flags)?,
                options: option_flags(help::KEY_NEW, &flags)?,
                plain: flags.switch("plain"),
                file: flags.path("file"),
            })
        }
        "set" => {
            let flags = flags!(help::KEY_SET, rest, &with_options(&["file"]), &[]);
            let options = option_flags(help::KEY_SET, &flags)?;
            if options.given().is_empty() {
                return Err(usage(help::KEY_SET, "nothing to set: give at least one option, e.g. --num-ctx 32768"));
            }
            Ok(Command::KeySet {
                target: joined_words(help::KEY_SET, "key name or fingerprint", &flags)?,
                options,
                file: flags.path("file"),
            })
        }
        "revoke" => {
            let flags = flags!(help::KEY_REVOKE, rest, &["file"], &["all"]);
            Ok(Command::KeyRevoke {
                target: joined_words(help::KEY_REVOKE, "key name or fingerprint", &flags)?,
                all: flags.switch("all"),
                file: flags.path("file"),
            })
        }
        "list" => {
            let flags = flags!(help::KEY_LIST, rest, &["file"], &["json"]);
            no_positional(help::KEY_LIST, &flags)?;
            Ok(Command::KeyList { json: flags.switch("json"), file: flags.path("file") })
        }
        other => Err(usage(help::KEY, format!("unknown key command {other:?}: new, set, revoke or list"))),
    }
}

/// `user <command> ...`
fn parse_user(args: &[OsString]) -> Result<Command, UsageError> {
    let Some(sub) = args.first() else {
        return Err(usage(help::USER, "missing user command: add, passwd, remove or list"));
    };
    let rest = &args[1..];
    match sub.to_string_lossy().as_ref() {
        "-h" | "--help" | "help" => Ok(Command::Help(help::USER)),
        "add" => {
            let flags = flags!(help::USER_ADD, rest, &with_options(&["file", "cost"]), &[]);
            Ok(Command::UserAdd {
                name: exactly_one(help::USER_ADD, "user name", &flags)?,
                options: option_flags(help::USER_ADD, &flags)?,
                cost: cost(help::USER_ADD, &flags)?,
                file: flags.path("file"),
            })
        }
        "passwd" => {
            let flags = flags!(help::USER_PASSWD, rest, &["file", "cost"], &[]);
            Ok(Command::UserPasswd {
                name: exactly_one(help::USER_PASSWD, "user name", &flags)?,
                cost: cost(help::USER_PASSWD, &flags)?,
                file: flags.path("file"),
            })
        }
        "remove" => {
            let flags = flags!(help::USER_REMOVE, rest, &["file"], &[]);
            Ok(Command::UserRemove {
                name: exactly_one(help::USER_REMOVE, "user name", &flags)?,
                file: flags.path("file"),
            })
        }
        "list" => {
            let flags = flags!(help::USER_LIST, rest, &["file"], &["json"]);
            no_positional(help::USER_LIST, &flags)?;
            Ok(Command::UserList { json: flags.switch("json"), file: flags.path("file") })
        }
        other => Err(usage(help::USER, format!("unknown user command {other:?}: add, passwd, remove or list"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &[&str]) -> Result<Command, UsageError> {
        let args: Vec<OsString> = line.iter().map(OsString::from).collect();
        parse(&args)
    }

    fn error(line: &[&str]) -> String {
        run(line).expect_err("a usage error").message
    }

    #[test]
    fn key_new_with_every_flag_in_both_spellings() {
        let command = run(&[
            "key",
            "new",
            "ci",
            "bot",
            "--scopes",
            "read,infer",
            "--models=llama3*",
            "--expires",
            "2030-01-01",
            "--tokens=20000/1m",
            "--requests",
            "60/1m",
            "--parallel",
            "2",
            "--file=/tmp/k=v",
            "--plain",
        ])
        .unwrap();
        let Command::KeyNew { name, options, plain, file } = command else { panic!("{command:?}") };
        assert_eq!(name, "ci bot");
        assert!(plain);
        assert_eq!(file, Some(PathBuf::from("/tmp/k=v")), "only the first = splits flag and value");
        assert_eq!(
            options.given(),
            [
                ("scopes", "read,infer"),
                ("models", "llama3*"),
                ("expires", "2030-01-01"),
                ("tokens", "20000/1m"),
                ("requests", "60/1m"),
                ("parallel", "2")
            ]
        );
    }

    #[test]
    fn flags_may_come_before_the_name_and_double_dash_ends_them() {
        let command = run(&["key", "new", "--scopes", "read", "--", "-odd", "--name"]).unwrap();
        let Command::KeyNew { name, options, .. } = command else { panic!() };
        assert_eq!(name, "-odd --name");
        assert_eq!(options.scopes.as_deref(), Some("read"));
    }

    #[test]
    fn help_everywhere() {
        assert_eq!(run(&["--help"]), Ok(Command::Help(help::MAIN)));
        assert_eq!(run(&["help"]), Ok(Command::Help(help::MAIN)));
        assert_eq!(run(&["key", "--help"]), Ok(Command::Help(help::KEY)));
        assert_eq!(run(&["key", "new", "-h"]), Ok(Command::Help(help::KEY_NEW)));
        assert_eq!(run(&["key", "new", "x", "--bogus", "--help"]), Err(usage(help::KEY_NEW, "unknown flag --bogus")));
        assert_eq!(run(&["key", "new", "--help", "--bogus"]), Ok(Command::Help(help::KEY_NEW)));
        assert_eq!(run(&["key", "revoke", "--help"]), Ok(Command::Help(help::KEY_REVOKE)));
        assert_eq!(run(&["key", "list", "--help"]), Ok(Command::Help(help::KEY_LIST)));
        assert_eq!(run(&["user", "--help"]), Ok(Command::Help(help::USER)));
        assert_eq!(run(&["user", "add", "--help"]), Ok(Command::Help(help::USER_ADD)));
        assert_eq!(run(&["user", "passwd", "--help"]), Ok(Command::Help(help::USER_PASSWD)));
        assert_eq!(run(&["user", "remove", "--help"]), Ok(Command::Help(help::USER_REMOVE)));
        assert_eq!(run(&["check", "--help"]), Ok(Command::Help(help::CHECK)));
        assert_eq!(run(&["--version"]), Ok(Command::Version));
        // After --, --help is a name.
        assert!(matches!(run(&["key", "revoke", "--", "--help"]), Ok(Command::KeyRevoke { .. })));
    }

    #[test]
    fn usage_errors() {
        assert_eq!(error(&[]), "missing command");
        assert_eq!(error(&["keys"]), "unknown command \"keys\": key, user or check");
        assert_eq!(error(&["key"]), "missing key command: new, set, revoke or list");
        assert_eq!(error(&["key", "delete"]), "unknown key command \"delete\": new, set, revoke or list");
        assert_eq!(error(&["key", "new"]), "missing key name");
        assert_eq!(error(&["key", "new", "x", "--scopes"]), "--scopes needs a value");
        assert_eq!(error(&["key", "new", "x", "--scopes", "read", "--scopes=infer"]), "--scopes given twice");
        assert_eq!(error(&["key", "new", "x", "--plain=yes"]), "--plain takes no value");
        assert_eq!(error(&["key", "new", "x", "--plain", "--plain"]), "--plain given twice");
        assert_eq!(error(&["key", "new", "x", "-p"]), "unknown flag -p (a name starting with - goes after --)");
        assert_eq!(error(&["key", "new", "x", "--cost", "5"]), "unknown flag --cost");
        assert_eq!(error(&["key", "list", "extra"]), "unexpected argument \"extra\"");
        assert_eq!(error(&["key", "revoke"]), "missing key name or fingerprint");
        assert_eq!(error(&["user", "add"]), "missing user name");
        assert_eq!(error(&["user", "add", "a", "b"]), "unexpected argument \"b\"");
        assert_eq!(error(&["user", "passwd", "a", "--scopes", "read"]), "unknown flag --scopes");
        assert_eq!(error(&["user", "add", "--password", "x", "a"]), "unknown flag --password");
        assert_eq!(error(&["check", "file"]), "unexpected argument \"file\"");
        assert_eq!(run(&["key", "new"]).unwrap_err().command, help::KEY_NEW);
    }

    #[test]
    fn cost_is_bounded_by_what_the_module_accepts() {
        let cost_of = |value: &str| match run(&["user", "add", "a", "--cost", value]) {
            Ok(Command::UserAdd { cost, .. }) => Ok(cost),
            Ok(other) => panic!("{other:?}"),
            Err(error) => Err(error.message),
        };
        assert_eq!(cost_of("4"), Ok(4));
        assert_eq!(cost_of("12"), Ok(12));
        for bad in ["3", "13", "x", "-1", ""] {
            assert!(cost_of(bad).unwrap_err().starts_with("--cost must be"), "{bad}");
        }
        let Ok(Command::UserPasswd { cost, .. }) = run(&["user", "passwd", "a"]) else { panic!() };
        assert_eq!(cost, DEFAULT_COST);
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            run(&["key", "revoke", "sha256:0123456789ab", "--all", "--file", "k"]),
            Ok(Command::KeyRevoke { target: "sha256:0123456789ab".into(), all: true, file: Some("k".into()) })
        );
        assert_eq!(run(&["key", "list", "--json"]), Ok(Command::KeyList { json: true, file: None }));
        assert_eq!(
            run(&["user", "remove", "bob", "--file", "/h"]),
            Ok(Command::UserRemove { name: "bob".into(), file: Some("/h".into()) })
        );
        assert_eq!(
            run(&["check", "--users", "u", "--keys=k"]),
            Ok(Command::Check { keys: Some("k".into()), users: Some("u".into()) })
        );
        assert_eq!(run(&["check"]), Ok(Command::Check { keys: None, users: None }));
    }

    #[test]
    fn non_utf8_paths_pass_but_names_must_be_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(b"/tmp/\xff".to_vec());
        let args = vec!["key".into(), "list".into(), "--file".into(), odd.clone()];
        assert_eq!(parse(&args), Ok(Command::KeyList { json: false, file: Some(PathBuf::from(odd.clone())) }));
        let mut inline = b"--file=".to_vec();
        inline.extend_from_slice(b"/tmp/\xff");
        let args = vec!["key".into(), "list".into(), OsString::from_vec(inline)];
        assert_eq!(parse(&args), Ok(Command::KeyList { json: false, file: Some(PathBuf::from(odd.clone())) }));
        let args = vec!["user".into(), "add".into(), odd];
        assert_eq!(parse(&args).unwrap_err().message, "user name is not valid UTF-8");
    }
}
