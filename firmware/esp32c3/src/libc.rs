//! The two C library functions littlefs (the flash image's C code) calls that neither
//! the chip's ROM nor compiler-builtins provide. Path lookups in the image use them.

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
