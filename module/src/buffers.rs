//! nginx buffer chains: the bytes of one, in memory or in a temporary file, and a chain of one
//! buffer made from bytes of ours.

use std::io;
use std::mem::size_of;

use ngx::ffi::{ngx_alloc_chain_link, ngx_buf_t, ngx_chain_t, ngx_pcalloc, ngx_pnalloc, ngx_pool_t};

/// Appends the chain's bytes to `out`, refusing to grow it past `limit`. Says whether the chain
/// held the last buffer of the body.
///
/// # Safety
/// `chain` must be NULL or a valid chain of valid buffers, whose files (if any) are open.
pub unsafe fn append_chain(mut chain: *mut ngx_chain_t, out: &mut Vec<u8>, limit: usize) -> io::Result<bool> {
    // SAFETY: as below; this pass only sums the lengths, so `out` grows once.
    out.reserve(unsafe { chain_len(chain) }.min(limit.saturating_sub(out.len())));
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

/// Gives a buffer's bytes to `each`, as they are in memory, or from its file in pieces of at
/// most 16 KB: a buffer of a proxied answer spilled to a temporary file is read without holding
/// it whole.
///
/// # Safety
/// `buf` must be a valid buffer whose file (if any) is open.
pub unsafe fn for_each_piece(buf: &ngx_buf_t, mut each: impl FnMut(&[u8])) -> io::Result<()> {
    if buf.in_file() != 0 && !buf.file.is_null() {
        let mut piece = [0u8; 16 * 1024];
        let mut at = buf.file_pos;
        while at < buf.file_last {
            let want = piece.len().min((buf.file_last - at) as usize);
            // SAFETY: the file is open (the caller's promise) and `piece` has room for `want`.
            let read = unsafe { libc::pread((*buf.file).fd, piece.as_mut_ptr().cast(), want, at) };
            match read {
                n if n > 0 => {
                    each(&piece[..n as usize]);
                    at += n as i64;
                }
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "temporary file is short")),
                _ => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
            }
        }
    } else if !buf.pos.is_null() && buf.last > buf.pos {
        // SAFETY: a memory buffer's bytes from pos to last are valid for reading.
        each(unsafe { std::slice::from_raw_parts(buf.pos, buf.last as usize - buf.pos as usize) });
    }
    Ok(())
}

/// How many bytes the chain holds, in memory and in files.
///
/// # Safety
/// `chain` must be NULL or a valid chain of valid buffers.
unsafe fn chain_len(mut chain: *mut ngx_chain_t) -> usize {
    let mut total = 0;
    while !chain.is_null() {
        // SAFETY: the caller guarantees every link and buffer of the chain is valid.
        let buf = unsafe { &*(*chain).buf };
        total += if buf.in_file() != 0 && !buf.file.is_null() {
            (buf.file_last - buf.file_pos) as usize
        } else if !buf.pos.is_null() {
            buf.last as usize - buf.pos as usize
        } else {
            0
        };
        // SAFETY: as above.
        chain = unsafe { (*chain).next };
    }
    total
}

/// The bytes of a chain that is one buffer in memory (a small request body), where they are.
///
/// # Safety
/// `chain` must be NULL or a valid chain of valid buffers, which outlive the returned slice.
pub unsafe fn single_memory_buffer<'a>(chain: *mut ngx_chain_t) -> Option<&'a [u8]> {
    if chain.is_null() {
        return Some(&[]);
    }
    // SAFETY: the caller guarantees the link and its buffer are valid.
    let (buf, next) = unsafe { (&*(*chain).buf, (*chain).next) };
    if !next.is_null() || buf.in_file() != 0 || buf.pos.is_null() {
        return None;
    }
    // SAFETY: a memory buffer's bytes from pos to last are valid for reading, as long as the
    // buffer (the caller's promise).
    Some(unsafe { std::slice::from_raw_parts(buf.pos, buf.last as usize - buf.pos as usize) })
}

/// The bytes a one-buffer chain holds: copied into the pool, or static bytes pointed at as
/// they are (read-only: later filters must copy before they change them).
pub enum ChainBytes<'a> {
    Copied(&'a [u8]),
    Static(&'static [u8]),
}

/// A chain of one buffer from `pool` holding `bytes`, the last of its chain, and the last of
/// the answer (or body) with `last_buf`. An empty one holds no memory and is a special buffer
/// (the end, or else a sync mark, as nginx's `ngx_http_send_special` makes them), never a
/// zero-size buffer, which nginx's write filter refuses.
///
/// # Safety
/// `pool` must be a valid pool that outlives every use of the chain.
pub unsafe fn one_buffer_chain(
    pool: *mut ngx_pool_t,
    bytes: ChainBytes<'_>,
    last_buf: bool,
) -> Option<*mut ngx_chain_t> {
    // SAFETY: the pool is valid (the caller's promise); ngx_pcalloc returns zeroed memory or
    // NULL, and a zeroed ngx_buf_t is an empty buffer.
    let (buf, link) =
        unsafe { (ngx_pcalloc(pool, size_of::<ngx_buf_t>()).cast::<ngx_buf_t>(), ngx_alloc_chain_link(pool)) };
    if buf.is_null() || link.is_null() {
        return None;
    }
    // SAFETY: both were just allocated and are not shared.
    let (buf, link) = unsafe { (&mut *buf, &mut *link) };
    let (data, len) = match bytes {
        ChainBytes::Static(bytes) => {
            buf.set_memory(u32::from(!bytes.is_empty()));
            (bytes.as_ptr().cast_mut(), bytes.len())
        }
        ChainBytes::Copied(bytes) => {
            // SAFETY: as above; ngx_pnalloc returns `len` writable bytes or NULL.
            let data = unsafe { ngx_pnalloc(pool, bytes.len().max(1)) }.cast::<u8>();
            if data.is_null() {
                return None;
            }
            // SAFETY: `data` has room for the bytes and cannot overlap a Rust slice.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len()) };
            buf.set_temporary(u32::from(!bytes.is_empty()));
            (data, bytes.len())
        }
    };
    buf.start = data;
    buf.pos = data;
    // SAFETY: `data` holds `len` bytes.
    buf.last = unsafe { data.add(len) };
    buf.end = buf.last;
    buf.set_last_buf(u32::from(last_buf));
    buf.set_sync(u32::from(len == 0 && !last_buf));
    buf.set_last_in_chain(1);
    link.buf = buf;
    link.next = std::ptr::null_mut();
    Some(link)
}

/// Marks a chain as sent so its producer can reuse or free its buffers.
///
/// # Safety
/// `chain` must be NULL or a valid chain of valid buffers.
pub unsafe fn consume(mut chain: *mut ngx_chain_t) {
    while !chain.is_null() {
        // SAFETY: the caller guarantees every link and buffer of the chain is valid.
        unsafe {
            consume_buf((*chain).buf);
            chain = (*chain).next;
        }
    }
}

/// Marks one buffer as sent (see [`consume`]).
///
/// # Safety
/// `buf` must be NULL or a valid buffer.
pub unsafe fn consume_buf(buf: *mut ngx_buf_t) {
    // SAFETY: the caller's promise.
    if let Some(buf) = unsafe { buf.as_mut() } {
        buf.pos = buf.last;
        buf.file_pos = buf.file_last;
    }
}
