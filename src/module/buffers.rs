//! Copies the bytes of an nginx buffer chain, in memory or in a temporary file, into a `Vec`.

use std::io;

use ngx::ffi::ngx_chain_t;

/// Appends the chain's bytes to `out`, refusing to grow it past `limit`. Says whether the chain
/// held the last buffer of the body.
///
/// # Safety
/// `chain` must be NULL or a valid chain of valid buffers, whose files (if any) are open.
pub unsafe fn append_chain(mut chain: *mut ngx_chain_t, out: &mut Vec<u8>, limit: usize) -> io::Result<bool> {
    let mut last = false;
    while !chain.is_null() {
        // SAFETY: the caller guarantees every link and buffer of the chain is valid.
        let buf = unsafe { &*(*chain).buf };
        // SAFETY: as above.
        chain = unsafe { (*chain).next };
        last |= buf.last_buf() != 0 || buf.last_in_chain() != 0;
        let (start, len) = if buf.in_file() != 0 && !buf.file.is_null() {
            (buf.file_pos, (buf.file_last - buf.file_pos) as usize)
        } else if !buf.pos.is_null() {
            (0, buf.last as usize - buf.pos as usize)
        } else {
            continue;
        };
        if out.len() + len > limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "more than this module reads"));
        }
        if buf.in_file() != 0 && !buf.file.is_null() {
            let old = out.len();
            out.resize(old + len, 0);
            let mut done = 0;
            while done < len {
                // SAFETY: the file is open (the caller's promise) and the destination is `len`
                // writable bytes of `out`, past `done`.
                let read = unsafe {
                    libc::pread((*buf.file).fd, out[old + done..].as_mut_ptr().cast(), len - done, start + done as i64)
                };
                match read {
                    n if n > 0 => done += n as usize,
                    0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "temporary file is short")),
                    _ => {
                        let error = io::Error::last_os_error();
                        if error.kind() != io::ErrorKind::Interrupted {
                            return Err(error);
                        }
                    }
                }
            }
        } else {
            // SAFETY: a memory buffer's bytes from pos to last are valid for reading.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(buf.pos, len) });
        }
    }
    Ok(last)
}
