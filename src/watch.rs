//! Keeps a parsed file in memory and re-reads it only when the file changes.
//!
//! One mechanism serves the keys file and the htpasswd file: both implement [`Parse`].
//! A look costs one `stat()` and happens at most every [`CHECK_INTERVAL_MS`]; between looks the
//! hot path only compares two integers.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often a worker looks at the file. nginx's cached clock may lag a little behind, so this
/// stays well under the one second within which a change must be honoured.
pub const CHECK_INTERVAL_MS: u64 = 200;

/// Files larger than this are refused rather than read into memory.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// A file format the watcher can load. Parsing never fails as a whole: bad lines are skipped and
/// reported as warnings that name the line number, never its content.
pub trait Parse: Sized {
    /// What the file is, for log messages: "bearer keys file".
    const FILE_KIND: &'static str;
    /// What its entries are, for log messages: "keys".
    const ENTRY_KIND: &'static str;

    fn parse(content: &[u8]) -> (Self, Vec<LineWarning>);
}

/// Why one line was skipped. `reason` never contains the line's secret content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineWarning {
    pub line: usize,
    pub reason: String,
}

impl LineWarning {
    /// The text nginx logs for a skipped line (and `ollama-auth check` prints, word for word):
    /// `bearer keys file "/etc/keys.txt" line 3 skipped: <reason>`.
    pub fn message<T: Parse>(&self, path: &Path) -> String {
        format!("{} \"{}\" line {} skipped: {}", T::FILE_KIND, path.to_string_lossy(), self.line, self.reason)
    }
}

/// What identifies one version of a file: the file the path resolves to (device and inode, so a
/// rename or a retargeted symlink is seen), its size, and its nanosecond mtime and ctime (so two
/// same-size edits within one second are seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_sec: i64,
    mtime_nsec: i64,
    ctime_sec: i64,
    ctime_nsec: i64,
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime_sec: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }

    fn modified(&self) -> SystemTime {
        let since_epoch = Duration::new(self.mtime_sec.max(0) as u64, self.mtime_nsec as u32);
        UNIX_EPOCH + since_epoch
    }

    /// A file read this soon after its last modification may still be written again within the
    /// same timestamp tick, leaving size and mtime unchanged ("racily clean", as git calls it).
    /// Timestamps with no sub-second part come from a coarse filesystem: allow a whole tick there.
    fn is_racy(&self, read_at: SystemTime) -> bool {
        let tick = if self.mtime_nsec == 0 { Duration::from_secs(2) } else { Duration::from_millis(50) };
        match read_at.duration_since(self.modified()) {
            Ok(age) => age < tick,
            Err(_) => true, // mtime in the future: the clock or the writer is odd, keep looking
        }
    }
}

/// Why a file could not be loaded. Displays as the OS error or the reason, without content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    Io(io::ErrorKind, String),
    NotRegularFile,
    TooLarge(u64),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(_, message) => f.write_str(message),
            LoadError::NotRegularFile => f.write_str("not a regular file"),
            LoadError::TooLarge(size) => {
                write!(f, "file is {size} bytes, larger than the {MAX_FILE_BYTES}-byte limit")
            }
        }
    }
}

impl From<io::Error> for LoadError {
    fn from(error: io::Error) -> Self {
        LoadError::Io(error.kind(), error.to_string())
    }
}

/// Opens for reading without ever blocking: a FIFO without a writer cannot stall a worker.
fn open_for_reading(path: &Path) -> io::Result<File> {
    File::options().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY).open(path)
}

/// Whether this process may open the file for reading, without reading it.
pub fn check_readable(path: &Path) -> Result<(), LoadError> {
    open_for_reading(path)?;
    Ok(())
}

/// Whether a process of user `uid` and group `gid` (root: 0) may create files in `dir`, from
/// the directory's owner, group and mode (supplementary groups and ACLs are not looked at): for
/// a file written by worker processes, checked by the master, which may run as another user.
pub fn check_writable_dir(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(|error| format!("directory \"{}\": {error}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("\"{}\" is not a directory", dir.display()));
    }
    let mode = meta.mode();
    let writable = uid == 0
        || (meta.uid() == uid && mode & 0o300 == 0o300)
        || (meta.uid() != uid && meta.gid() == gid && mode & 0o030 == 0o030)
        || (meta.uid() != uid && meta.gid() != gid && mode & 0o003 == 0o003);
    if writable {
        Ok(())
    } else {
        Err(format!(
            "directory \"{}\" is not writable by the worker processes' user (uid {uid}, gid {gid}): \
            owner {}, group {}, mode {:o}",
            dir.display(),
            meta.uid(),
            meta.gid(),
            mode & 0o7777
        ))
    }
}

/// Reads the whole file, refusing anything but a regular file. The type is checked on the opened
/// descriptor, so a swap between check and read cannot slip a FIFO in.
pub fn read_regular_file(path: &Path) -> Result<(Vec<u8>, FileIdentity), LoadError> {
    let mut file = open_for_reading(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(LoadError::NotRegularFile);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge(meta.len()));
    }
    let mut content = Vec::with_capacity(meta.len() as usize + 1);
    (&mut file).take(MAX_FILE_BYTES + 1).read_to_end(&mut content)?;
    if content.len() as u64 > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge(content.len() as u64));
    }
    Ok((content, FileIdentity::of(&meta)))
}

/// What a look at the file found, for the caller to log.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Not time to look yet, or the file is as it was.
    Unchanged,
    /// A new version was loaded.
    Reloaded { entries: usize, warnings: Vec<LineWarning> },
    /// The file could not be read; the last good version stays in use. Reported once per
    /// distinct failure, not on every look.
    Failed(LoadError),
}

/// Parsed content that can say how many entries it holds, for log messages.
pub trait Counted {
    fn entry_count(&self) -> usize;
}

pub struct WatchedFile<T> {
    path: PathBuf,
    current: T,
    identity: FileIdentity,
    racy: bool,
    next_check_ms: u64,
    last_failure: Option<LoadError>,
}

impl<T: Parse + Counted> WatchedFile<T> {
    /// Loads the file at configuration time. Any failure is returned so the configuration fails.
    pub fn load(path: PathBuf) -> Result<(Self, Vec<LineWarning>), LoadError> {
        let (content, identity) = read_regular_file(&path)?;
        let (parsed, warnings) = T::parse(&content);
        let watched = WatchedFile {
            path,
            current: parsed,
            identity,
            racy: identity.is_racy(SystemTime::now()),
            next_check_ms: 0,
            last_failure: None,
        };
        Ok((watched, warnings))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last good version.
    pub fn current(&self) -> &T {
        &self.current
    }

    /// Whether `now_ms` (a monotonic millisecond clock) says it is time to look at the file.
    /// This is all that runs on most requests.
    #[inline]
    pub fn due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_check_ms
    }

    /// Looks at the file if `now_ms` says it is time.
    pub fn refresh(&mut self, now_ms: u64) -> Refresh {
        if !self.due(now_ms) {
            return Refresh::Unchanged;
        }
        self.next_check_ms = now_ms.saturating_add(CHECK_INTERVAL_MS);
        self.look()
    }

    /// Looks now, whatever the clock says.
    pub fn look(&mut self) -> Refresh {
        if !self.racy && self.last_failure.is_none() {
            match std::fs::metadata(&self.path) {
                Ok(meta) if meta.file_type().is_file() && FileIdentity::of(&meta) == self.identity => {
                    return Refresh::Unchanged;
                }
                _ => {} // changed, gone or odd: the read below finds out which and says why
            }
        }
        match read_regular_file(&self.path) {
            Ok((content, identity)) => {
                // A racy re-read is parsed even when the identity is the same: the bytes may differ.
                self.last_failure = None;
                self.racy = identity.is_racy(SystemTime::now());
                // Parsing cannot fail, and nothing is served while this worker parses, so the old
                // version goes first: the peak is one version and the file's bytes, not two versions.
                self.current = T::parse(b"").0;
                let (parsed, warnings) = T::parse(&content);
                let entries = parsed.entry_count();
                self.current = parsed;
                self.identity = identity;
                Refresh::Reloaded { entries, warnings }
            }
            Err(error) => {
                if self.last_failure.as_ref() == Some(&error) {
                    return Refresh::Unchanged;
                }
                self.last_failure = Some(error.clone());
                Refresh::Failed(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Lines of text, one entry each: the smallest format that shows what the watcher does.
    #[derive(Debug)]
    struct Lines(Vec<String>);

    impl Parse for Lines {
        const FILE_KIND: &'static str = "test file";
        const ENTRY_KIND: &'static str = "lines";

        fn parse(content: &[u8]) -> (Self, Vec<LineWarning>) {
            let text = String::from_utf8_lossy(content);
            (Lines(text.lines().map(str::to_owned).collect()), Vec::new())
        }
    }

    impl Counted for Lines {
        fn entry_count(&self) -> usize {
            self.0.len()
        }
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("watch-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(path: &Path, text: &str) {
        let mut file = File::create(path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn lines(watched: &WatchedFile<Lines>) -> Vec<String> {
        watched.current().0.clone()
    }

    /// Waits out the racy window so the next look relies on metadata alone.
    fn settle(watched: &mut WatchedFile<Lines>) {
        std::thread::sleep(Duration::from_millis(60));
        watched.look();
        assert!(!watched.racy, "file should no longer be racy after the window");
    }

    #[test]
    fn loads_and_reports_missing_file_with_os_error() {
        let dir = TempDir::new("missing");
        let error = WatchedFile::<Lines>::load(dir.file("nope")).err().unwrap();
        assert!(matches!(error, LoadError::Io(io::ErrorKind::NotFound, _)));
        assert!(error.to_string().contains("No such file"), "{error}");
    }

    #[test]
    fn refuses_directory_and_fifo_without_blocking() {
        let dir = TempDir::new("odd");
        assert_eq!(WatchedFile::<Lines>::load(dir.0.clone()).err(), Some(LoadError::NotRegularFile));
        let fifo = dir.file("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        assert_eq!(WatchedFile::<Lines>::load(fifo).err(), Some(LoadError::NotRegularFile));
    }

    #[test]
    fn sees_same_size_edits_in_place_within_one_second() {
        let dir = TempDir::new("inplace");
        let path = dir.file("keys");
        write(&path, "aaaa\n");
        let (mut watched, _) = WatchedFile::<Lines>::load(path.clone()).unwrap();
        settle(&mut watched);
        std::fs::write(&path, "bbbb\n").unwrap();
        assert!(matches!(watched.look(), Refresh::Reloaded { entries: 1, .. }));
        assert_eq!(lines(&watched), ["bbbb"]);
        settle(&mut watched);
        std::fs::write(&path, "cccc\n").unwrap();
        watched.look();
        assert_eq!(lines(&watched), ["cccc"]);
    }

    fn identity_modified_at(modified: SystemTime) -> FileIdentity {
        let since = modified.duration_since(UNIX_EPOCH).unwrap();
        FileIdentity {
            dev: 1,
            ino: 1,
            size: 1,
            mtime_sec: since.as_secs() as i64,
            mtime_nsec: i64::from(since.subsec_nanos()),
            ctime_sec: 0,
            ctime_nsec: 0,
        }
    }

    #[test]
    fn racy_means_read_within_one_timestamp_tick_of_the_last_change() {
        let changed = UNIX_EPOCH + Duration::new(1_800_000_000, 123_000_000);
        let identity = identity_modified_at(changed);
        assert!(identity.is_racy(changed));
        assert!(identity.is_racy(changed + Duration::from_millis(49)));
        assert!(!identity.is_racy(changed + Duration::from_millis(50)));
        assert!(identity.is_racy(changed - Duration::from_millis(1)), "an mtime in the future stays racy");
        // Whole-second timestamps come from a coarse filesystem: its tick is taken as two seconds.
        let coarse = identity_modified_at(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        assert!(coarse.is_racy(UNIX_EPOCH + Duration::from_millis(1_800_000_001_900)));
        assert!(!coarse.is_racy(UNIX_EPOCH + Duration::from_secs(1_800_000_002)));
    }

    #[test]
    fn racily_clean_file_is_read_again_at_next_look() {
        let dir = TempDir::new("racy");
        let path = dir.file("keys");
        write(&path, "aaaa\n");
        let (mut watched, _) = WatchedFile::<Lines>::load(path.clone()).unwrap();
        // A second write within the same timestamp tick leaves every field of the identity as
        // it was. Simulate that collision: the new identity is recorded as the one read, and the
        // read as racy (what load() finds when it reads within a tick of the write).
        std::fs::write(&path, "zzzz\n").unwrap();
        watched.identity = FileIdentity::of(&std::fs::metadata(&path).unwrap());
        watched.racy = true;
        watched.look();
        assert_eq!(lines(&watched), ["zzzz"], "racy: read again although the identity matches");

        // Once the file has aged past the tick, the identity alone decides.
        settle(&mut watched);
        std::fs::write(&path, "yyyy\n").unwrap();
        watched.identity = FileIdentity::of(&std::fs::metadata(&path).unwrap());
        assert_eq!(watched.look(), Refresh::Unchanged);
        assert_eq!(lines(&watched), ["zzzz"], "why the racy re-read matters");
    }

    #[test]
    fn sees_append_atomic_rename_and_symlink_retarget() {
        let dir = TempDir::new("swap");
        let path = dir.file("keys");
        write(&path, "one\n");
        let (mut watched, _) = WatchedFile::<Lines>::load(path.clone()).unwrap();
        settle(&mut watched);

        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"two\n").unwrap();
        watched.look();
        assert_eq!(lines(&watched), ["one", "two"]);
        settle(&mut watched);

        let staged = dir.file("keys.new");
        write(&staged, "three\n");
        std::fs::rename(&staged, &path).unwrap();
        watched.look();
        assert_eq!(lines(&watched), ["three"]);

        // Kubernetes-style: keys -> ..data/keys, and ..data is a symlink swapped atomically.
        let link_path = dir.file("linked");
        for (version, text) in [("v1", "four\n"), ("v2", "five\n")] {
            std::fs::create_dir_all(dir.file(version)).unwrap();
            write(&dir.file(version).join("keys"), text);
        }
        std::os::unix::fs::symlink("v1", dir.file("..data")).unwrap();
        std::os::unix::fs::symlink("..data/keys", &link_path).unwrap();
        let (mut linked, _) = WatchedFile::<Lines>::load(link_path).unwrap();
        settle(&mut linked);
        std::os::unix::fs::symlink("v2", dir.file("..data_tmp")).unwrap();
        std::fs::rename(dir.file("..data_tmp"), dir.file("..data")).unwrap();
        linked.look();
        assert_eq!(lines(&linked), ["five"]);
    }

    #[test]
    fn keeps_last_good_version_and_reports_each_failure_once() {
        let dir = TempDir::new("faults");
        let path = dir.file("keys");
        write(&path, "kept\n");
        let (mut watched, _) = WatchedFile::<Lines>::load(path.clone()).unwrap();
        settle(&mut watched);

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(watched.look(), Refresh::Failed(LoadError::Io(io::ErrorKind::NotFound, _))));
        assert_eq!(watched.look(), Refresh::Unchanged, "same failure is reported once");
        assert_eq!(lines(&watched), ["kept"]);

        std::fs::create_dir(&path).unwrap();
        assert_eq!(watched.look(), Refresh::Failed(LoadError::NotRegularFile));
        assert_eq!(lines(&watched), ["kept"]);
        std::fs::remove_dir(&path).unwrap();

        write(&path, "back\n");
        assert!(matches!(watched.look(), Refresh::Reloaded { .. }));
        assert_eq!(lines(&watched), ["back"]);
    }

    #[test]
    fn refresh_looks_only_once_per_interval() {
        let dir = TempDir::new("interval");
        let path = dir.file("keys");
        write(&path, "a\n");
        let (mut watched, _) = WatchedFile::<Lines>::load(path.clone()).unwrap();
        settle(&mut watched);
        assert_eq!(watched.refresh(1_000), Refresh::Unchanged);
        write(&path, "b\nc\n");
        assert_eq!(watched.refresh(1_000 + CHECK_INTERVAL_MS - 1), Refresh::Unchanged);
        assert_eq!(lines(&watched), ["a"]);
        assert!(matches!(watched.refresh(1_000 + CHECK_INTERVAL_MS), Refresh::Reloaded { entries: 2, .. }));
    }

    #[test]
    fn writable_dir_follows_owner_group_and_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = std::env::temp_dir().join(format!("ollama-auth-writable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        let (owner, group) = (meta.uid(), meta.gid());
        let stranger = owner.wrapping_add(4242);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_writable_dir(&dir, owner, group).is_ok());
        assert!(check_writable_dir(&dir, 0, 0).is_ok());
        assert!(check_writable_dir(&dir, stranger, group.wrapping_add(4242)).is_err());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_writable_dir(&dir, stranger, group.wrapping_add(4242)).is_ok());
        assert!(check_writable_dir(&dir.join("missing"), owner, group).is_err());
        std::fs::remove_dir(&dir).unwrap();
    }
}
