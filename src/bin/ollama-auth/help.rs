//! The `--help` texts. Each one also names the command in usage errors.

pub const MAIN: &str = "\
ollama-auth: manage the keys file and the htpasswd file of the ngx-ollama-auth nginx module

Usage:
  ollama-auth key new <name> [OPTIONS] [--plain] [--file PATH]
  ollama-auth key set <name|fingerprint> [OPTIONS] [--file PATH]
  ollama-auth key revoke <name|fingerprint> [--all] [--file PATH]
  ollama-auth key list [--json] [--file PATH]
  ollama-auth user add <name> [OPTIONS] [--cost N] [--file PATH]
  ollama-auth user passwd <name> [--cost N] [--file PATH]
  ollama-auth user remove <name> [--file PATH]
  ollama-auth user list [--json] [--file PATH]
  ollama-auth check [--keys PATH] [--users PATH]
  ollama-auth <command> --help

OPTIONS (checked by the module's own parser before anything is written):
  --scopes LIST       read, infer, manage, search, all; comma-separated
  --models LIST       model patterns, comma-separated: llama3*,myorg/*
  --expires TIME      YYYY-MM-DD (start of that day, UTC) or an RFC 3339 time
  --tokens LIMITS     at most n tokens per period: 20000/1m,500000/1d
  --requests LIMITS   at most n requests per period: 60/1m
  --parallel N        at most N requests at once
  --share N           weight in the fair queue (ollama_auth_queue), 1-1000, default 1
  --queue N           most requests waiting in the fair queue, default 50; 0: never waits
  --num-ctx N         caps: at most N tokens of context (options.num_ctx)
  --num-predict N     at most N tokens per answer (num_predict, max_tokens, max_output_tokens)
  --keep-alive RANGE  keep_alive moved into MIN..MAX (5m..30m; 1h is ..1h); 0 needs manage

Files (--file, else the environment, else the shipped configuration's path):
  keys    $OLLAMA_AUTH_KEYS   /etc/nginx/auth/api_keys.txt
  users   $OLLAMA_AUTH_USERS  /etc/nginx/auth/htpasswd

Every change is written to a temporary file in the same directory, synced and renamed over the
file (keeping its mode and owner) while holding a lock on the directory: nginx never reads half a
file and concurrent runs lose nothing.

Exit status:
  0  done
  1  check found skipped lines; or nothing done: no such key or user, user exists,
     ambiguous key name
  2  usage error: arguments, option values, name or password refused
  3  the file cannot be written (read-only, permissions, disk full): nothing was changed,
     and the line to add (or the line to remove) is printed instead
  4  other I/O error: the file is missing, unreadable, or not a regular file
";

pub const KEY: &str = "\
Usage:
  ollama-auth key new <name> [OPTIONS] [--plain] [--file PATH]
  ollama-auth key set <name|fingerprint> [OPTIONS] [--file PATH]
  ollama-auth key revoke <name|fingerprint> [--all] [--file PATH]
  ollama-auth key list [--json] [--file PATH]

Run `ollama-auth key <command> --help` for details, `ollama-auth --help` for exit codes.
";

pub const KEY_NEW: &str = "\
Usage: ollama-auth key new <name> [OPTIONS] [--plain] [--file PATH]

Makes a key from the operating system's secure random source (256 bits, `sk-ollama-` and 43
URL-safe characters), appends its line to the keys file, and prints the key once on stdout.
The file holds `sha256:<SHA-256 of the key> <name> <options>`; with --plain, the key itself.
A missing file is created (mode 0644: nginx's workers must read it).

The name may be several words (joined by single spaces); it may not contain `=` or control
characters, nor look like a fingerprint (`sha256:...`). Another key may carry the same name
(to rotate: make the new key, move the clients, revoke the old one by its fingerprint).

OPTIONS:
  --scopes LIST       read, infer, manage, search, all; comma-separated
  --models LIST       model patterns, comma-separated: llama3*,myorg/*
  --expires TIME      YYYY-MM-DD (start of that day, UTC) or an RFC 3339 time; not in the past
  --tokens LIMITS     at most n tokens per period: 20000/1m,500000/1d
  --requests LIMITS   at most n requests per period: 60/1m
  --parallel N        at most N requests at once
  --share N           weight in the fair queue (ollama_auth_queue), 1-1000, default 1
  --queue N           most requests waiting in the fair queue, default 50; 0: never waits
  --num-ctx N         caps: at most N tokens of context (options.num_ctx)
  --num-predict N     at most N tokens per answer (num_predict, max_tokens, max_output_tokens)
  --keep-alive RANGE  keep_alive moved into MIN..MAX (5m..30m; 1h is ..1h); 0 needs manage
  --plain             store the key itself rather than its SHA-256
  --file PATH         keys file (default $OLLAMA_AUTH_KEYS, else /etc/nginx/auth/api_keys.txt)

Exit status: 0 written; 2 usage error; 3 the file cannot be written: the key is printed all the
same, with the line to add yourself on stderr; 4 other I/O error.
";

pub const KEY_SET: &str = "\
Usage: ollama-auth key set <name|fingerprint> [OPTIONS] [--file PATH]

Sets options on the key named exactly <name>, or whose fingerprint is <fingerprint> (as
`key revoke` takes them): each option given replaces the line's own, the others stay. The
options are checked by the module's own parser before anything is written; the change counts
within a second, without a reload. Comments and other lines are kept byte for byte.

OPTIONS: as for `key new` (--scopes, --models, --expires, --tokens, --requests, --parallel,
--num-ctx, --num-predict, --keep-alive), at least one.
  --file PATH         keys file (default $OLLAMA_AUTH_KEYS, else /etc/nginx/auth/api_keys.txt)

Exit status: 0 set; 1 no such key, or a name several different keys carry; 2 usage error; 3
the file cannot be written (nothing changed); 4 other I/O error.
";

pub const KEY_REVOKE: &str = "\
Usage: ollama-auth key revoke <name|fingerprint> [--all] [--file PATH]

Removes the key named exactly <name> (words joined by single spaces), or the key whose
fingerprint is <fingerprint> (`sha256:` and 12 hex digits, as `key list` shows; the full
`sha256:<64 hex digits>` works too). Every line that holds the same key goes, so the key is
refused within a second. Comments and other lines are kept byte for byte.

A name carried by several different keys is refused as ambiguous (the candidates are listed
with their fingerprints) unless --all is given, which revokes them all.

  --all               revoke every key carrying the name
  --file PATH         keys file (default $OLLAMA_AUTH_KEYS, else /etc/nginx/auth/api_keys.txt)

Exit status: 0 revoked; 1 no such key, or ambiguous name; 2 usage error; 3 the file cannot be
written (nothing changed; the lines to remove are named); 4 other I/O error.
";

pub const KEY_LIST: &str = "\
Usage: ollama-auth key list [--json] [--file PATH]

Lists the keys nginx loads from the file: line, name, fingerprint, how it is stored (sha256 or
plain), scopes, models, expiry and limits. Never a key. `-` means the line does not set the
option. Lines nginx skips are named on stderr (see `ollama-auth check`).

  --json              one JSON object: {\"file\", \"keys\": [...], \"skipped\": [{\"line\", \"reason\"}]}
  --file PATH         keys file (default $OLLAMA_AUTH_KEYS, else /etc/nginx/auth/api_keys.txt)

Exit status: 0 listed; 2 usage error; 4 the file cannot be read.
";

pub const USER: &str = "\
Usage:
  ollama-auth user add <name> [OPTIONS] [--cost N] [--file PATH]
  ollama-auth user passwd <name> [--cost N] [--file PATH]
  ollama-auth user remove <name> [--file PATH]
  ollama-auth user list [--json] [--file PATH]

Run `ollama-auth user <command> --help` for details, `ollama-auth --help` for exit codes.
";

pub const USER_ADD: &str = "\
Usage: ollama-auth user add <name> [OPTIONS] [--cost N] [--file PATH]

Adds a user to the htpasswd file with a bcrypt hash (`$2y$`, as `htpasswd -B` writes). The
password is read from the terminal (twice, without echo) or, when stdin is not a terminal, as
one line from stdin; never from the command line. The options go in the line's comment field:
`name:hash:scopes=read models=llama3*`. A missing file is created (mode 0644).

The name may not be empty, hold `:` or control characters, start with `#`, or start or end
with white space. An existing user is refused (use `user passwd`). Passwords may not be empty,
hold a NUL byte, or be longer than 72 bytes (bcrypt would ignore the rest).

OPTIONS:
  --scopes LIST       read, infer, manage, search, all; comma-separated
  --models LIST       model patterns, comma-separated: llama3*,myorg/*
  --expires TIME      YYYY-MM-DD (start of that day, UTC) or an RFC 3339 time; not in the past
  --tokens LIMITS     at most n tokens per period: 20000/1m,500000/1d
  --requests LIMITS   at most n requests per period: 60/1m
  --parallel N        at most N requests at once
  --share N           weight in the fair queue (ollama_auth_queue), 1-1000, default 1
  --queue N           most requests waiting in the fair queue, default 50; 0: never waits
  --num-ctx N         caps: at most N tokens of context (options.num_ctx)
  --num-predict N     at most N tokens per answer (num_predict, max_tokens, max_output_tokens)
  --keep-alive RANGE  keep_alive moved into MIN..MAX (5m..30m; 1h is ..1h); 0 needs manage
  --cost N            bcrypt cost, 4 to 12 (default 10; the module skips costs above 12)
  --file PATH         htpasswd file (default $OLLAMA_AUTH_USERS, else /etc/nginx/auth/htpasswd)

Exit status: 0 added; 1 the user exists; 2 usage error or password refused; 3 the file cannot
be written (nothing changed; the line to add is printed); 4 other I/O error.
";

pub const USER_PASSWD: &str = "\
Usage: ollama-auth user passwd <name> [--cost N] [--file PATH]

Sets a new password (read as for `user add`). Only the hash changes: the rest of the line
(comment, options) is kept. Every line of the user is changed.

  --cost N            bcrypt cost, 4 to 12 (default 10)
  --file PATH         htpasswd file (default $OLLAMA_AUTH_USERS, else /etc/nginx/auth/htpasswd)

Exit status: 0 changed; 1 no such user, or the line would still be skipped by nginx; 2 usage
error or password refused; 3 the file cannot be written (nothing changed; the new line is
printed); 4 other I/O error.
";

pub const USER_REMOVE: &str = "\
Usage: ollama-auth user remove <name> [--file PATH]

Removes every line of the user. Comments and other lines are kept byte for byte.

  --file PATH         htpasswd file (default $OLLAMA_AUTH_USERS, else /etc/nginx/auth/htpasswd)

Exit status: 0 removed; 1 no such user; 2 usage error; 3 the file cannot be written (nothing
changed; the lines to remove are named); 4 other I/O error.
";

pub const USER_LIST: &str = "\
Usage: ollama-auth user list [--json] [--file PATH]

Lists the users nginx admits, one line each: line number, name, hash scheme (never the hash),
scopes, models, expiry and limits. Lines nginx skips are named on stderr with the reason.

  --json              one JSON document: {\"file\", \"users\": [...], \"skipped\": [...]}
  --file PATH         htpasswd file (default $OLLAMA_AUTH_USERS, else /etc/nginx/auth/htpasswd)

Exit status: 0 listed; 2 usage error; 4 the file cannot be read.
";

pub const CHECK: &str = "\
Usage: ollama-auth check [--keys PATH] [--users PATH]

Reads the files with the module's own parser and prints, on stdout, exactly the warnings nginx
logs for the lines it skips (file, line, reason; never a line's content), one per line; then a
summary per file on stderr. nginx logs the first 20 per load; check prints them all.
For CI and pre-commit hooks.

With neither flag, checks the keys file and the htpasswd file from $OLLAMA_AUTH_KEYS and
$OLLAMA_AUTH_USERS, else those of the shipped configuration that exist.

  --keys PATH         bearer keys file
  --users PATH        htpasswd file

Exit status: 0 no line skipped; 1 some line skipped; 2 usage error; 4 a file cannot be read.
";
