//! Reading a new password: from the terminal, twice and without echo, or as one line of stdin.
//! Never from the command line, where `ps` and shell history would show it.

use std::io::{self, BufRead, Write};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

use zeroize::Zeroizing;

/// bcrypt reads at most 72 bytes; a longer password would be accepted with any tail.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Checks a password for `user add` and `user passwd`.
pub fn check(password: &[u8]) -> Result<(), String> {
    if password.is_empty() {
        return Err("empty password refused".into());
    }
    if password.contains(&0) {
        return Err("a password cannot contain a NUL byte".into());
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "password longer than {MAX_PASSWORD_BYTES} bytes: bcrypt would ignore the rest, so it is refused"
        ));
    }
    Ok(())
}

/// One line without its line ending (LF or CRLF). `None` at end of input with nothing read.
fn read_line(input: &mut impl BufRead) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut line = Zeroizing::new(Vec::new());
    if input.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(Some(line))
}

/// Reads the password from a non-terminal input: its first line.
pub fn from_lines(input: &mut impl BufRead) -> Result<Zeroizing<Vec<u8>>, String> {
    let password = read_line(input)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?
        .ok_or("no password on stdin (give it as one line, or run in a terminal)")?;
    check(&password)?;
    Ok(password)
}

// The terminal settings to put back if a signal ends the program while echo is off.
static ECHO_OFF: AtomicBool = AtomicBool::new(false);
static mut SAVED: MaybeUninit<libc::termios> = MaybeUninit::uninit();

extern "C" fn restore_and_reraise(signal: libc::c_int) {
    if ECHO_OFF.load(Ordering::SeqCst) {
        // SAFETY: SAVED was written before ECHO_OFF was set; tcsetattr, signal and raise are
        // async-signal-safe.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, std::ptr::addr_of!(SAVED).cast()) };
    }
    // SAFETY: as above.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Echo off on stdin until dropped (or until a signal ends the program).
struct NoEcho;

impl NoEcho {
    fn new() -> io::Result<NoEcho> {
        let mut settings = MaybeUninit::<libc::termios>::uninit();
        // SAFETY: stdin is a terminal (checked by the caller); tcgetattr fills the struct.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, settings.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: initialized by tcgetattr above.
        let saved = unsafe { settings.assume_init() };
        // SAFETY: single-threaded here, and no handler reads SAVED before ECHO_OFF is set.
        unsafe { std::ptr::addr_of_mut!(SAVED).write(MaybeUninit::new(saved)) };
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGTSTP] {
            // SAFETY: the handler only calls async-signal-safe functions.
            unsafe { libc::signal(signal, restore_and_reraise as *const () as libc::sighandler_t) };
        }
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK);
        quiet.c_lflag |= libc::ECHONL; // the Enter still moves to the next line
        ECHO_OFF.store(true, Ordering::SeqCst);
        // SAFETY: quiet is a valid termios.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &quiet) } != 0 {
            ECHO_OFF.store(false, Ordering::SeqCst);
            return Err(io::Error::last_os_error());
        }
        Ok(NoEcho)
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        // SAFETY: SAVED holds the settings read in new().
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, std::ptr::addr_of!(SAVED).cast()) };
        ECHO_OFF.store(false, Ordering::SeqCst);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGTSTP] {
            // SAFETY: puts back the default action.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
}

fn prompt(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    eprint!("{text}");
    let _ = io::stderr().flush();
    let _quiet = NoEcho::new().map_err(|e| format!("cannot turn off echo on the terminal: {e}"))?;
    read_line(&mut io::stdin().lock())
        .map_err(|e| format!("cannot read the password: {e}"))?
        .ok_or_else(|| "no password given".to_string())
}

/// The new password for `user`: prompted twice on a terminal, else the first line of stdin.
pub fn read_new(user: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return from_lines(&mut io::stdin().lock());
    }
    let first = prompt(&format!("New password for {user}: "))?;
    check(&first)?;
    let second = prompt("Retype the password: ")?;
    if first != second {
        return Err("the passwords do not match".into());
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> Result<Vec<u8>, String> {
        from_lines(&mut &input[..]).map(|password| password.to_vec())
    }

    #[test]
    fn one_line_from_a_pipe() {
        assert_eq!(read(b"secret\n"), Ok(b"secret".to_vec()));
        assert_eq!(read(b"secret\r\nsecond line\n"), Ok(b"secret".to_vec()));
        assert_eq!(read(b"no newline"), Ok(b"no newline".to_vec()));
        assert_eq!(read(b" spaces kept \n"), Ok(b" spaces kept ".to_vec()));
        assert_eq!(read("pässwort:with colon\n".as_bytes()), Ok("pässwort:with colon".as_bytes().to_vec()));
    }

    #[test]
    fn refused_passwords() {
        assert!(read(b"").unwrap_err().contains("no password"));
        assert_eq!(read(b"\n"), Err("empty password refused".into()));
        assert_eq!(read(b"\r\n"), Err("empty password refused".into()));
        assert!(read(b"a\0b\n").unwrap_err().contains("NUL"));
        assert!(read(&[b'x'; 73]).unwrap_err().contains("72 bytes"));
        assert_eq!(read(&[b'x'; 72]).unwrap().len(), 72);
    }
}
