//! The limits state file on disk (its content is `limits::encode_state`): written atomically,
//! readable and writable by its owner only, since its counts are read back at start.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Owner read and write only: any other local user could raise a key's counts or lower them.
pub const MODE: u32 = 0o600;

/// Writes `bytes` to `path` whole or not at all: a fresh temporary file beside it (made with
/// O_EXCL, so a file or link already there is never written through), synced, then renamed
/// over `path`. The file is made with [`MODE`] (a umask only takes bits away; nginx's is 0, so
/// without it the file would be 0666).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.{nanos:09}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(MODE).open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Whether users other than the file's owner may write it (group or others have write
/// permission); `None` when it cannot be looked at (missing).
pub fn others_can_write(path: &Path) -> Option<bool> {
    fs::metadata(path).ok().map(|meta| meta.permissions().mode() & 0o022 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("state-file-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_file_is_written_whole_for_its_owner_only() {
        let dir = scratch("mode");
        let path = dir.join("limits.state");
        write_atomically(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(others_can_write(&path), Some(false));

        // A file others may write is replaced by one they may not.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(others_can_write(&path), Some(true));
        write_atomically(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(others_can_write(&path), Some(false));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file is left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = scratch("fail");
        let path = dir.join("limits.state");
        write_atomically(&path, b"kept").unwrap();
        // A directory where the file should be renamed to: the rename fails.
        let blocked = dir.join("blocked");
        fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(write_atomically(&blocked, b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"kept");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        assert_eq!(others_can_write(&dir.join("missing")), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
