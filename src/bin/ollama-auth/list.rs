//! `key list` and `user list`: the entries of a file as nginx reads them, as a table or JSON.

use std::path::Path;

use ngx_ollama_auth::hashes::{PasswordHash, ShaCryptKind};
use ngx_ollama_auth::htpasswd::UserTable;
use ngx_ollama_auth::keys::{fingerprint_of, KeySet};
use ngx_ollama_auth::limits::Window;
use ngx_ollama_auth::options::{format_time, EntryOptions};
use ngx_ollama_auth::watch::Parse;

use super::{edit, lossy, now, read_file, Failure};

/// One usable entry: its line, its own columns (name first), and its options.
struct Row {
    line: usize,
    columns: Vec<(&'static str, Option<String>)>,
    options: EntryOptions,
}

pub fn key_list(json: bool, path: &Path) -> Result<u8, Failure> {
    let content = read_file(path)?;
    let warnings = KeySet::parse(&content).1;
    let mut rows = Vec::new();
    let mut skipped: Vec<(usize, String)> = Vec::new();
    for entry in edit::key_lines(&content) {
        if let Some(warning) = warnings.iter().find(|warning| warning.line == entry.line) {
            skipped.push((entry.line, warning.reason.clone()));
            continue;
        }
        let (Some(digest), Ok(options)) = (entry.digest, &entry.options) else {
            let reason = entry.options.as_ref().err().map_or("unreadable key".to_string(), ToString::to_string);
            skipped.push((entry.line, reason));
            continue;
        };
        let columns = vec![
            ("name", (!entry.name.is_empty()).then(|| lossy(&entry.name))),
            ("fingerprint", Some(fingerprint_of(&digest))),
            ("stored", Some(if entry.plain { "plain" } else { "sha256" }.to_string())),
        ];
        rows.push(Row { line: entry.line, columns, options: options.clone() });
    }
    show(json, path, "keys", &rows, &skipped);
    Ok(0)
}

pub fn user_list(json: bool, path: &Path) -> Result<u8, Failure> {
    let content = read_file(path)?;
    let warnings = UserTable::parse(&content).1;
    let mut rows = Vec::new();
    let mut skipped: Vec<(usize, String)> = Vec::new();
    for entry in edit::user_entries(&content) {
        if let Some(warning) = warnings.iter().find(|warning| warning.line == entry.line) {
            skipped.push((entry.line, warning.reason.clone()));
            continue;
        }
        let hash = PasswordHash::parse(&entry.hash).map(|hash| hash_scheme(&hash));
        let (Ok(hash), Ok(options)) = (hash, &entry.options) else {
            skipped.push((entry.line, "unreadable hash or options".to_string()));
            continue;
        };
        let columns = vec![("name", Some(lossy(&entry.name))), ("hash", Some(hash.to_string()))];
        rows.push(Row { line: entry.line, columns, options: options.clone() });
    }
    show(json, path, "users", &rows, &skipped);
    Ok(0)
}

/// The hash's scheme, as `htpasswd` users know it; never the hash.
fn hash_scheme(hash: &PasswordHash) -> &'static str {
    match hash {
        PasswordHash::Bcrypt(_) => "bcrypt",
        PasswordHash::Md5Crypt { .. } => "md5-crypt",
        PasswordHash::ShaCrypt { kind: ShaCryptKind::Sha256, .. } => "sha256-crypt",
        PasswordHash::ShaCrypt { kind: ShaCryptKind::Sha512, .. } => "sha512-crypt",
        PasswordHash::Sha1(_) => "sha1",
        PasswordHash::SaltedSha1 { .. } => "ssha",
        PasswordHash::Plain(_) => "plain",
    }
}

fn windows(list: &[Window]) -> Option<String> {
    (!list.is_empty()).then(|| list.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
}

fn show(json: bool, path: &Path, what: &str, rows: &[Row], skipped: &[(usize, String)]) {
    if json {
        print_json(path, what, rows, skipped);
        return;
    }
    print_table(rows);
    if rows.is_empty() {
        eprintln!("ollama-auth: no usable {what} in {}", path.display());
    }
    for (line, reason) in skipped {
        eprintln!("ollama-auth: line {line} is skipped by nginx: {reason}");
    }
}

fn print_json(path: &Path, what: &str, rows: &[Row], skipped: &[(usize, String)]) {
    let now = now();
    let entries: Vec<String> = rows
        .iter()
        .map(|row| {
            let o = &row.options;
            let mut fields = vec![format!("\"line\":{}", row.line)];
            fields
                .extend(row.columns.iter().map(|(name, value)| format!("\"{name}\":{}", json_or_null(value.clone()))));
            fields.extend([
                format!("\"scopes\":{}", json_or_null(o.scopes.map(|s| s.to_string()))),
                format!("\"models\":{}", json_or_null(o.models.as_ref().map(ToString::to_string))),
                format!("\"expires\":{}", json_or_null(o.expires.map(format_time))),
                format!("\"expired\":{}", o.is_expired_at(now)),
                format!("\"tokens\":{}", json_or_null(windows(&o.tokens))),
                format!("\"requests\":{}", json_or_null(windows(&o.requests))),
                format!("\"parallel\":{}", o.parallel.map_or_else(|| "null".to_string(), |n| n.to_string())),
                format!("\"share\":{}", o.share.map_or_else(|| "null".to_string(), |n| n.to_string())),
                format!("\"queue\":{}", o.queue.map_or_else(|| "null".to_string(), |n| n.to_string())),
                format!("\"caps\":{}", json_or_null((!o.caps.is_empty()).then(|| o.caps.to_words().join(" ")))),
            ]);
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    let skipped: Vec<String> = skipped
        .iter()
        .map(|(line, reason)| format!("{{\"line\":{line},\"reason\":{}}}", json_string(reason)))
        .collect();
    println!(
        "{{\"file\":{},\"{what}\":[{}],\"skipped\":[{}]}}",
        json_string(&path.to_string_lossy()),
        entries.join(","),
        skipped.join(",")
    );
}

/// Columns padded to their widest cell; the last one (limits and caps, of varying length) is not.
fn print_table(rows: &[Row]) {
    let Some(first) = rows.first() else { return };
    let now = now();
    let mut header = vec!["LINE".to_string()];
    header.extend(first.columns.iter().map(|(name, _)| name.to_uppercase()));
    header.extend(["SCOPES", "MODELS", "EXPIRES", "LIMITS"].map(String::from));
    let dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_string());
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let o = &row.options;
            let mut limits = Vec::new();
            if let Some(tokens) = windows(&o.tokens) {
                limits.push(format!("tokens={tokens}"));
            }
            if let Some(requests) = windows(&o.requests) {
                limits.push(format!("requests={requests}"));
            }
            if let Some(parallel) = o.parallel {
                limits.push(format!("parallel={parallel}"));
            }
            for (name, value) in [("share", o.share), ("queue", o.queue)] {
                if let Some(value) = value {
                    limits.push(format!("{name}={value}"));
                }
            }
            limits.extend(o.caps.to_words());
            let expires = o.expires.map(|time| {
                if o.is_expired_at(now) {
                    format!("{} (expired)", format_time(time))
                } else {
                    format_time(time)
                }
            });
            let mut cells = vec![row.line.to_string()];
            cells.extend(row.columns.iter().map(|(_, value)| dash(value.clone())));
            cells.extend([
                dash(o.scopes.map(|s| s.to_string())),
                dash(o.models.as_ref().map(ToString::to_string)),
                dash(expires),
                dash((!limits.is_empty()).then(|| limits.join(" "))),
            ]);
            cells
        })
        .collect();
    let mut widths = vec![0usize; header.len()];
    for row in std::iter::once(&header).chain(&table) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let last = header.len() - 1;
    for row in std::iter::once(&header).chain(&table) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &width))| if i == last { cell.clone() } else { format!("{cell:<width$}") })
            .collect();
        println!("{}", cells.join("  "));
    }
}

/// `text` as a JSON string (the library's one escaper).
pub fn json_string(text: &str) -> String {
    ngx_ollama_auth::json::quoted(text)
}

fn json_or_null(value: Option<String>) -> String {
    value.map_or_else(|| "null".to_string(), |text| json_string(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\u{1}é"), "\"a\\\"b\\\\c\\u0001é\"");
    }
}
