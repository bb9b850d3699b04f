//! Response headers of this module's: added, and the length set.

use std::ptr;

use ngx::ffi::{ngx_list_push, ngx_str_t, ngx_table_elt_t};
use ngx::http::Request;

/// Appends a response header. `value` must live as long as the response (static or pool bytes).
pub fn push_header(request: &mut Request, name: &'static str, value: &[u8]) -> Option<*mut ngx_table_elt_t> {
    let out = &mut request.as_mut().headers_out;
    // SAFETY: headers_out.headers is the response's header list, initialised by nginx;
    // ngx_list_push returns room for one element or NULL.
    let header = unsafe { ngx_list_push(&mut out.headers) } as *mut ngx_table_elt_t;
    if header.is_null() {
        return None;
    }
    // SAFETY: header points at fresh, writable list storage for one ngx_table_elt_t; nginx only
    // reads header names and values, which outlive the response (the caller's promise).
    unsafe {
        (*header).hash = 1;
        (*header).key = ngx_str_t { len: name.len(), data: name.as_ptr().cast_mut() };
        (*header).value = ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() };
        (*header).lowcase_key = ptr::null_mut();
        #[cfg(ngx_linked_headers)]
        {
            (*header).next = ptr::null_mut();
        }
    }
    Some(header)
}

/// Appends a response header whose value is copied into the request pool.
pub fn push_header_copy(request: &mut Request, name: &'static str, value: &[u8]) -> Option<()> {
    // SAFETY: the request pool lives as long as the response.
    let copy = unsafe { ngx_str_t::from_bytes(request.as_ref().pool, value) }?;
    push_header(request, name, copy.as_bytes()).map(drop)
}

/// Appends one `WWW-Authenticate` header with a value that lives as long as the configuration.
pub fn add_challenge(request: &mut Request, value: &'static [u8]) -> Option<()> {
    let header = push_header(request, "WWW-Authenticate", value)?;
    let out = &mut request.as_mut().headers_out;
    // Keep nginx's view of the challenges complete: the first one, then (from 1.23) a linked list.
    #[cfg(ngx_linked_headers)]
    // SAFETY: header is the element just pushed onto this response's list; the links are
    // elements of the same list.
    unsafe {
        let mut link = &mut out.www_authenticate;
        while !link.is_null() {
            link = &mut (**link).next;
        }
        *link = header;
    }
    #[cfg(not(ngx_linked_headers))]
    if out.www_authenticate.is_null() {
        out.www_authenticate = header;
    }
    Some(())
}

/// Sets the response's length (or, with `None`, says it is unknown), dropping any copy of the
/// old one in the header list.
pub fn set_content_length(request: &mut Request, length: Option<usize>) {
    let out = &mut request.as_mut().headers_out;
    out.content_length_n = length.map_or(-1, |length| length as i64);
    if !out.content_length.is_null() {
        // SAFETY: a non-null content_length points at an element of the response header list.
        unsafe { (*out.content_length).hash = 0 };
        out.content_length = ptr::null_mut();
    }
}
