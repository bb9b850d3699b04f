//! Atomic, locked read-modify-write of one file.
//!
//! Under an exclusive lock: read the file, compute the new content, write it to a temporary file
//! in the same directory, give that the old file's owner and mode, fsync it, rename it over the
//! file, fsync the directory. nginx (which re-reads the file when its inode or mtime changes)
//! sees the old file or the new one, never a part of one; a crash leaves at worst a stray
//! temporary file, never a damaged file.
//!
//! **The lock is a `flock` on the directory, not on the file.** A lock on the file's inode does
//! not survive the rename: a second writer blocked on the old inode would get the lock after
//! the first writer renamed a new inode into place, then read and rewrite the *old* content,
//! losing the first writer's line. The directory keeps its inode across the rename, so every
//! writer of any file in it is serialized. A sidecar lock file (`api_keys.txt.lock`) would work
//! too, but it needs a file created next to the watched one that outlives every run, and must
//! itself never be renamed; the directory lock leaves nothing behind. It serializes
//! `ollama-auth` runs (of this and later versions) with each other; an editor or `sed -i`
//! running at the same moment is not held back by it.
//!
//! Extended attributes, ACLs and security labels of the old file are not carried over.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ngx_ollama_auth::watch::{read_regular_file, LoadError};

/// The mode of a file this tool creates: nginx's workers (another user) must read it.
pub const NEW_FILE_MODE: u32 = 0o644;

/// Why an update did not happen. In every case the file is as it was.
#[derive(Debug)]
pub enum StoreError<E> {
    /// The edit refused (nothing to remove, user exists, ...).
    Refused(E),
    /// The file cannot be written: read-only file system, permissions, disk full, no directory.
    CannotWrite(String),
    /// Anything else: the file cannot be read, is not a regular file, ...
    Io(String),
}

/// An OS error without Rust's ` (os error N)` tail.
pub fn describe(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

fn describe_load(error: &LoadError) -> String {
    match error {
        LoadError::Io(_, message) => match message.find(" (os error ") {
            Some(cut) => message[..cut].to_string(),
            None => message.clone(),
        },
        other => other.to_string(),
    }
}

/// Errors that mean "this file cannot be written here", as opposed to a fault.
fn is_cannot_write(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EROFS | libc::EACCES | libc::EPERM | libc::ENOSPC | libc::EDQUOT | libc::ETXTBSY)
    )
}

fn write_error<E>(what: String, error: &io::Error) -> StoreError<E> {
    let message = format!("{what}: {}", describe(error));
    if is_cannot_write(error) {
        StoreError::CannotWrite(message)
    } else {
        StoreError::Io(message)
    }
}

/// The file a path names: a symlink is followed, so that the link stays a link and the file it
/// points to is replaced (in its own directory).
fn resolve<E>(path: &Path) -> Result<PathBuf, StoreError<E>> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(path).map_err(|e| {
            StoreError::Io(format!("{}: cannot follow the symbolic link: {}", path.display(), describe(&e)))
        }),
        _ => Ok(path.to_path_buf()),
    }
}

/// Holds `flock(LOCK_EX)` on a directory until dropped.
struct DirectoryLock {
    dir: File,
}

impl DirectoryLock {
    fn acquire<E>(dir: &Path) -> Result<Self, StoreError<E>> {
        let shown = dir.display();
        let dir =
            OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(dir).map_err(|e| {
                match e.raw_os_error() {
                    // Missing, not unwritable: nothing to add a line to by hand.
                    Some(libc::ENOENT | libc::ENOTDIR) => StoreError::Io(format!("directory {shown} does not exist")),
                    _ => write_error(format!("cannot open directory {shown}"), &e),
                }
            })?;
        let flock = |operation| loop {
            // SAFETY: the descriptor is open for as long as `dir` lives.
            if unsafe { libc::flock(dir.as_raw_fd(), operation) } == 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINTR) {
                return Err(error);
            }
        };
        if let Err(error) = flock(libc::LOCK_EX | libc::LOCK_NB) {
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(StoreError::Io(format!("cannot lock directory {shown}: {}", describe(&error))));
            }
            eprintln!("ollama-auth: waiting for another ollama-auth writing in {shown}");
            flock(libc::LOCK_EX)
                .map_err(|e| StoreError::Io(format!("cannot lock directory {shown}: {}", describe(&e))))?;
        }
        Ok(DirectoryLock { dir })
    }

    /// Makes a rename in the directory durable.
    fn sync(&self) -> io::Result<()> {
        match self.dir.sync_all() {
            // Some file systems cannot sync a directory; the rename is still done.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            other => other,
        }
    }
}

/// A temporary file that is removed unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    kept: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // Uniqueness, not secrecy: create_new refuses a clash, and the pid already separates runs.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the file was, for the new version to keep.
struct Original {
    mode: u32,
    uid: u32,
    gid: u32,
}

/// Reads the file at `path` under the directory lock, hands its content to `edit` (`None` for a
/// missing file, when `create` allows one), and writes back what `edit` returns.
pub fn update<T, E>(
    path: &Path,
    create: bool,
    edit: impl FnOnce(Option<&[u8]>) -> Result<(Vec<u8>, T), E>,
) -> Result<T, StoreError<E>> {
    let target = resolve(path)?;
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(file_name) = target.file_name() else {
        return Err(StoreError::Io(format!("{}: not a file name", path.display())));
    };
    let lock = DirectoryLock::acquire(&dir)?;

    // Read under the lock: another writer's change is in, none can come in after.
    let (content, original) = match read_regular_file(&target) {
        Ok((content, _)) => {
            let meta = fs::metadata(&target)
                .map_err(|e| StoreError::Io(format!("cannot read {}: {}", path.display(), describe(&e))))?;
            (Some(content), Some(Original { mode: meta.mode() & 0o7777, uid: meta.uid(), gid: meta.gid() }))
        }
        Err(LoadError::Io(io::ErrorKind::NotFound, _)) if create => (None, None),
        Err(error) => return Err(StoreError::Io(format!("cannot read {}: {}", path.display(), describe_load(&error)))),
    };
    let (new_content, value) = edit(content.as_deref()).map_err(StoreError::Refused)?;

    let temp_path =
        dir.join(format!(".{}.ollama-auth-{}-{}", file_name.to_string_lossy(), std::process::id(), random_suffix()));
    let cannot = |what: &str, e: &io::Error| write_error(format!("cannot write {}: {what}", path.display()), e);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&temp_path)
        .map_err(|e| write_error(format!("cannot write {}", path.display()), &e))?;
    let mut temp = TempFile { path: temp_path, kept: false };
    file.write_all(&new_content).map_err(|e| cannot("writing the new version", &e))?;
    let mode = match &original {
        Some(original) => {
            let meta = file.metadata().map_err(|e| cannot("reading back the new version", &e))?;
            if (meta.uid(), meta.gid()) != (original.uid, original.gid) {
                // Before the chmod: a chown clears set-user-ID bits.
                std::os::unix::fs::fchown(&file, Some(original.uid), Some(original.gid)).map_err(|e| {
                    cannot(
                        &format!(
                            "cannot keep its owner {}:{} (run as that user or as root)",
                            original.uid, original.gid
                        ),
                        &e,
                    )
                })?;
            }
            original.mode
        }
        None => NEW_FILE_MODE,
    };
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| cannot("setting its mode", &e))?;
    file.sync_all().map_err(|e| cannot("syncing the new version", &e))?;
    drop(file);
    fs::rename(&temp.path, &target).map_err(|e| cannot("renaming the new version into place", &e))?;
    temp.kept = true;
    if let Err(error) = lock.sync() {
        eprintln!(
            "ollama-auth: warning: {} was replaced, but syncing its directory failed: {}",
            path.display(),
            describe(&error)
        );
    }
    drop(lock);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("ollama-auth-store-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn append(path: &Path, line: &str) -> Result<(), StoreError<()>> {
        update(path, true, |content| {
            let mut new = content.unwrap_or_default().to_vec();
            new.extend_from_slice(line.as_bytes());
            Ok((new, ()))
        })
    }

    #[test]
    fn creates_replaces_and_keeps_the_mode_and_leaves_no_temporary_file() {
        let dir = TempDir::new("basic");
        let path = dir.0.join("keys");
        append(&path, "a\n").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, NEW_FILE_MODE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        append(&path, "b\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a\nb\n");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_ne!(meta.ino(), inode, "replaced by rename, not written in place");
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn a_refused_edit_changes_nothing() {
        let dir = TempDir::new("refused");
        let path = dir.0.join("keys");
        fs::write(&path, "a\n").unwrap();
        let result: Result<(), StoreError<&str>> = update(&path, false, |_| Err("no"));
        assert!(matches!(result, Err(StoreError::Refused("no"))));
        assert_eq!(fs::read_to_string(&path).unwrap(), "a\n");
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn missing_files_and_directories() {
        let dir = TempDir::new("missing");
        let result: Result<(), StoreError<()>> = update(&dir.0.join("nope"), false, |_| Ok((Vec::new(), ())));
        assert!(matches!(result, Err(StoreError::Io(ref m)) if m.contains("No such file")), "{result:?}");
        let result = append(&dir.0.join("no-dir/keys"), "a\n");
        assert!(matches!(result, Err(StoreError::Io(ref m)) if m.contains("does not exist")), "{result:?}");
        fs::create_dir(dir.0.join("sub")).unwrap();
        let result = append(&dir.0.join("sub"), "a\n");
        assert!(matches!(result, Err(StoreError::Io(ref m)) if m.contains("not a regular file")), "{result:?}");
    }

    #[test]
    fn a_symlink_stays_a_link_and_its_target_is_replaced() {
        let dir = TempDir::new("symlink");
        fs::create_dir(dir.0.join("data")).unwrap();
        fs::write(dir.0.join("data/keys"), "a\n").unwrap();
        let link = dir.0.join("keys");
        std::os::unix::fs::symlink("data/keys", &link).unwrap();
        append(&link, "b\n").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(dir.0.join("data/keys")).unwrap(), "a\nb\n");
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = TempDir::new("concurrent");
        let path = dir.0.join("keys");
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || append(&path, &format!("line {i}\n")).unwrap())
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 16);
    }
}
