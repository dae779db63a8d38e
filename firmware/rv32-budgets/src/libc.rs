//! The C library functions littlefs (the flash image's C code) calls that
//! compiler-builtins does not provide. On the board `strcpy` and `strchr` come from the
//! chip's ROM and the other two from `firmware/esp32c3/src/libc.rs` (same code).

use core::ffi::{CStr, c_char};

/// Length of the leading run of `s` made of bytes in `accept`.
///
/// # Safety
/// Both arguments are valid NUL-terminated C strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strspn(s: *const c_char, accept: *const c_char) -> usize {
    // SAFETY: the caller passes NUL-terminated strings.
    let (s, accept) = unsafe { (CStr::from_ptr(s), CStr::from_ptr(accept)) };
    let accept = accept.to_bytes();
    s.to_bytes()
        .iter()
        .take_while(|b| accept.contains(b))
        .count()
}

/// Length of the leading run of `s` made of bytes not in `reject`.
///
/// # Safety
/// Both arguments are valid NUL-terminated C strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strcspn(s: *const c_char, reject: *const c_char) -> usize {
    // SAFETY: the caller passes NUL-terminated strings.
    let (s, reject) = unsafe { (CStr::from_ptr(s), CStr::from_ptr(reject)) };
    let reject = reject.to_bytes();
    s.to_bytes()
        .iter()
        .take_while(|b| !reject.contains(b))
        .count()
}

/// Copies the NUL-terminated `src` (with its NUL) to `dst`; returns `dst`.
///
/// # Safety
/// `src` is a valid C string and `dst` has room for it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strcpy(dst: *mut c_char, src: *const c_char) -> *mut c_char {
    let mut i = 0;
    loop {
        // SAFETY: within `src` up to its NUL, and `dst` is large enough (caller's contract).
        let c = unsafe { *src.add(i) };
        unsafe { *dst.add(i) = c };
        if c == 0 {
            return dst;
        }
        i += 1;
    }
}

/// The first `c` in the C string `s` (the NUL itself when `c` is 0), or null.
///
/// # Safety
/// `s` is a valid NUL-terminated C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strchr(s: *const c_char, c: i32) -> *mut c_char {
    let c = c as c_char;
    let mut p = s;
    loop {
        // SAFETY: `p` stays within `s` up to and including its NUL.
        let here = unsafe { *p };
        if here == c {
            return p.cast_mut();
        }
        if here == 0 {
            return core::ptr::null_mut();
        }
        p = unsafe { p.add(1) };
    }
}
