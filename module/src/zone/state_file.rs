//! The limit counters' state file: read back when a zone is made, written atomically (the
//! format itself is plain Rust: `ngx_ollama_auth::limits`).

use std::path::Path;

use ngx::ffi::{ngx_log_t, NGX_LOG_ERR, NGX_LOG_WARN};
use ngx::ngx_log_error;

use ngx_ollama_auth::limits::{decode_state, KeyLimits};
use ngx_ollama_auth::state_file;

/// The entries the state file holds; `None` for a missing file, or one that cannot be read or
/// is not a state file (said in the error log).
pub fn read(path: &Path, log: *mut ngx_log_t) -> Option<Vec<(Vec<u8>, KeyLimits)>> {
    let shown = path.to_string_lossy();
    if state_file::others_can_write(path) == Some(true) {
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "ollama_auth_zone state file \"{}\" is writable by other users, who could change the counts read back; \
             it is rewritten for its owner only (mode 0600)",
            shown
        );
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "ollama_auth_zone state file \"{}\" not read, starting empty: {}",
                shown,
                error
            );
            return None;
        }
    };
    let decoded = decode_state(&bytes);
    if let Err(error) = &decoded {
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "ollama_auth_zone state file \"{}\" ignored, starting empty: {}",
            shown,
            error
        );
    }
    decoded.ok()
}

/// Writes the state file (atomically, for its owner only); a failure is said in the error log.
pub fn write(path: &Path, bytes: &[u8], log: *mut ngx_log_t) {
    if let Err(error) = state_file::write_atomically(path, bytes) {
        let shown = path.to_string_lossy();
        ngx_log_error!(NGX_LOG_ERR, log, "ollama_auth_zone state file \"{}\" not written: {}", shown, error);
    }
}
