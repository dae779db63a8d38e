//! The flash image: a LittleFS filesystem holding the device's credentials and config.
//!
//! Layout (DESIGN section 3): block size 4096, files `/cert.der`, `/private.der`, `/ca.der`
//! and `/config.json`. The `certs` tool formats and fills an image in RAM; the ESP32-C3
//! mounts its data partition and the virtual device mounts the very same file.
//!
//! The image's block count is stored in its superblock and read back on mount, so one
//! firmware can mount an image of any size that fits its partition. That is why this
//! module drives the littlefs C library through `littlefs2-sys` with a runtime
//! configuration: the `littlefs2` wrapper fixes the block count at compile time.
//!
//! # Rules for [`Flash`] implementations
//! - `capacity()` is constant and a multiple of [`BLOCK_SIZE`].
//! - `read`/`write`/`erase` are only called in bounds; offsets and lengths are multiples
//!   of the geometry below ([`READ_SIZE`], [`PROG_SIZE`], [`BLOCK_SIZE`]).
//! - `erase` leaves the region reading as `0xFF`; `write` only clears bits, as NOR flash.
//! - Errors are reported, never panicked on: littlefs turns them into `LFS_ERR_IO`.

use core::ffi::{c_int, c_void};
use core::fmt;
use core::marker::PhantomData;

use heapless::String;
use littlefs2_sys as lfs;

mod failure;

pub use failure::ImageFailure;

use crate::config::{ConfigError, DeviceConfig, MAX_CONFIG_JSON};
use crate::log::{FlashFile, LoadError};

/// Erase block size, fixed by the design (the ESP32's flash sector).
pub const BLOCK_SIZE: usize = 4096;
/// Smallest read littlefs issues.
pub const READ_SIZE: usize = 16;
/// Smallest program littlefs issues.
pub const PROG_SIZE: usize = 16;
const CACHE_SIZE: usize = 256;
const LOOKAHEAD_SIZE: usize = 16;
/// LittleFS on-disk format written and expected (2.0).
pub const DISK_VERSION: u32 = 0x0002_0000;
/// Superblock pair plus a block per file, with room for copy-on-write.
pub const MIN_BLOCKS: usize = 8;

pub const CERT_PATH: &str = "/cert.der";
pub const KEY_PATH: &str = "/private.der";
pub const CA_PATH: &str = "/ca.der";
pub const CONFIG_PATH: &str = "/config.json";

/// Largest certificate (`/cert.der`, `/ca.der`) the device loads.
pub const MAX_CERT: usize = 4096;
/// Largest private key the device loads (RSA-2048 PKCS#8 is about 1.2 KB).
pub const MAX_KEY: usize = 2048;
const MAX_PATH: usize = 64;

/// The storage under the image: a partition of NOR flash, or a byte buffer on the host.
pub trait Flash {
    fn capacity(&self) -> usize;
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), FlashError>;
    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), FlashError>;
    fn erase(&mut self, offset: usize, len: usize) -> Result<(), FlashError>;
}

/// A storage driver failure at a byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashError {
    pub offset: usize,
}

/// A RAM image, as the `certs` tool builds and the virtual device loads.
impl Flash for &mut [u8] {
    fn capacity(&self) -> usize {
        self.len()
    }
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), FlashError> {
        let src = self
            .get(offset..offset + buf.len())
            .ok_or(FlashError { offset })?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), FlashError> {
        let dst = self
            .get_mut(offset..offset + data.len())
            .ok_or(FlashError { offset })?;
        // NOR semantics: programming only clears bits.
        for (d, s) in dst.iter_mut().zip(data) {
            *d &= *s;
        }
        Ok(())
    }
    fn erase(&mut self, offset: usize, len: usize) -> Result<(), FlashError> {
        self.get_mut(offset..offset + len)
            .ok_or(FlashError { offset })?
            .fill(0xFF);
        Ok(())
    }
}

/// What went wrong with an image, naming the file where one is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// The flash size is not a whole number of blocks, or too few of them.
    Geometry {
        capacity: usize,
    },
    /// No LittleFS superblock, or a damaged one: not an image, or a corrupted image.
    Corrupt,
    /// A LittleFS image made with another block size than [`BLOCK_SIZE`].
    BlockSize {
        found: u32,
    },
    /// The image claims more blocks than the flash holds.
    Truncated {
        image_bytes: usize,
        capacity: usize,
    },
    /// The files do not fit.
    NoSpace,
    NotFound(String<MAX_PATH>),
    /// A file is larger than the buffer the device reserves for it.
    TooLarge {
        path: String<MAX_PATH>,
        len: usize,
        max: usize,
    },
    BadPath,
    Flash(FlashError),
    /// `/config.json` is present but invalid.
    Config(ConfigError),
    /// A credential file is present but the device would refuse it (feature `tls`: see
    /// [`crate::creds`]).
    Creds {
        file: FlashFile,
        error: LoadError,
    },
    /// Any other littlefs error code.
    Lfs(i32),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Geometry { capacity } => write!(
                f,
                "size {capacity} is not a multiple of {BLOCK_SIZE} of at least {} bytes",
                MIN_BLOCKS * BLOCK_SIZE
            ),
            Self::Corrupt => write!(f, "not a LittleFS image, or a corrupted one"),
            Self::BlockSize { found } => write!(
                f,
                "LittleFS image with {found}-byte blocks; the device reads {BLOCK_SIZE}-byte blocks"
            ),
            Self::Truncated {
                image_bytes,
                capacity,
            } => write!(
                f,
                "image is {image_bytes} bytes but only {capacity} are available (truncated)"
            ),
            Self::NoSpace => write!(f, "image too small for its files"),
            Self::NotFound(path) => write!(f, "{path}: missing from the image"),
            Self::TooLarge { path, len, max } => {
                write!(f, "{path}: {len} bytes, the device reads at most {max}")
            }
            Self::BadPath => write!(f, "path too long"),
            Self::Flash(e) => write!(f, "flash error at offset {}", e.offset),
            Self::Config(e) => write!(f, "{CONFIG_PATH}: {e}"),
            Self::Creds { file, error } => {
                write!(f, "{file}: {}", crate::creds::describe(*file, *error))
            }
            Self::Lfs(code) => write!(f, "littlefs error {code}"),
        }
    }
}

/// Storage handed to the littlefs callbacks; remembers the driver's error so it can be
/// reported instead of a bare `LFS_ERR_IO`.
struct Context<'f, F> {
    flash: &'f mut F,
    error: Option<FlashError>,
}

#[repr(C, align(8))]
struct Buffers {
    read: [u8; CACHE_SIZE],
    prog: [u8; CACHE_SIZE],
    lookahead: [u8; LOOKAHEAD_SIZE],
}

unsafe extern "C" fn read_cb<F: Flash>(
    c: *const lfs::lfs_config,
    block: lfs::lfs_block_t,
    off: lfs::lfs_off_t,
    buffer: *mut c_void,
    size: lfs::lfs_size_t,
) -> c_int {
    // SAFETY: littlefs passes back the config we built, whose context is a live Context<F>
    // for the duration of the call that invoked it, and a buffer of `size` bytes.
    let (ctx, buf) = unsafe {
        (
            &mut *((*c).context as *mut Context<F>),
            core::slice::from_raw_parts_mut(buffer as *mut u8, size as usize),
        )
    };
    let offset = block as usize * BLOCK_SIZE + off as usize;
    io_result(ctx, offset, buf.len(), |flash| flash.read(offset, buf))
}

unsafe extern "C" fn prog_cb<F: Flash>(
    c: *const lfs::lfs_config,
    block: lfs::lfs_block_t,
    off: lfs::lfs_off_t,
    buffer: *const c_void,
    size: lfs::lfs_size_t,
) -> c_int {
    // SAFETY: as in `read_cb`.
    let (ctx, data) = unsafe {
        (
            &mut *((*c).context as *mut Context<F>),
            core::slice::from_raw_parts(buffer as *const u8, size as usize),
        )
    };
    let offset = block as usize * BLOCK_SIZE + off as usize;
    io_result(ctx, offset, data.len(), |flash| flash.write(offset, data))
}

unsafe extern "C" fn erase_cb<F: Flash>(
    c: *const lfs::lfs_config,
    block: lfs::lfs_block_t,
) -> c_int {
    // SAFETY: as in `read_cb`.
    let ctx = unsafe { &mut *((*c).context as *mut Context<F>) };
    let offset = block as usize * BLOCK_SIZE;
    io_result(ctx, offset, BLOCK_SIZE, |flash| {
        flash.erase(offset, BLOCK_SIZE)
    })
}

unsafe extern "C" fn sync_cb(_c: *const lfs::lfs_config) -> c_int {
    0
}

fn io_result<F: Flash>(
    ctx: &mut Context<'_, F>,
    offset: usize,
    len: usize,
    op: impl FnOnce(&mut F) -> Result<(), FlashError>,
) -> c_int {
    // A damaged superblock can name blocks past the end of the flash: refuse, don't trust.
    let in_bounds = offset
        .checked_add(len)
        .is_some_and(|end| end <= ctx.flash.capacity());
    let result = if in_bounds {
        op(ctx.flash)
    } else {
        Err(FlashError { offset })
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            ctx.error = Some(e);
            lfs::lfs_error_LFS_ERR_IO
        }
    }
}

fn config<F: Flash>(
    ctx: &mut Context<'_, F>,
    bufs: &mut Buffers,
    blocks: usize,
) -> lfs::lfs_config {
    lfs::lfs_config {
        context: ctx as *mut Context<'_, F> as *mut c_void,
        read: Some(read_cb::<F>),
        prog: Some(prog_cb::<F>),
        erase: Some(erase_cb::<F>),
        sync: Some(sync_cb),
        read_size: READ_SIZE as u32,
        prog_size: PROG_SIZE as u32,
        block_size: BLOCK_SIZE as u32,
        block_count: blocks as u32,
        block_cycles: 500,
        cache_size: CACHE_SIZE as u32,
        lookahead_size: LOOKAHEAD_SIZE as u32,
        read_buffer: bufs.read.as_mut_ptr() as *mut c_void,
        prog_buffer: bufs.prog.as_mut_ptr() as *mut c_void,
        lookahead_buffer: bufs.lookahead.as_mut_ptr() as *mut c_void,
        // On-disk format 2.0: readable by every littlefs 2.x, including the `littlefs2`
        // crate and the ESP8266 Arduino core's LittleFS.
        disk_version: DISK_VERSION,
        ..Default::default()
    }
}

fn check(code: c_int, flash_error: Option<FlashError>) -> Result<c_int, ImageError> {
    if code >= 0 {
        return Ok(code);
    }
    Err(match (code, flash_error) {
        (_, Some(e)) => ImageError::Flash(e),
        (lfs::lfs_error_LFS_ERR_CORRUPT, _) | (lfs::lfs_error_LFS_ERR_INVAL, _) => {
            ImageError::Corrupt
        }
        (lfs::lfs_error_LFS_ERR_NOSPC, _) => ImageError::NoSpace,
        (lfs::lfs_error_LFS_ERR_NAMETOOLONG, _) => ImageError::BadPath,
        (code, _) => ImageError::Lfs(code),
    })
}

fn geometry(capacity: usize) -> Result<usize, ImageError> {
    if !capacity.is_multiple_of(BLOCK_SIZE) || capacity / BLOCK_SIZE < MIN_BLOCKS {
        return Err(ImageError::Geometry { capacity });
    }
    Ok(capacity / BLOCK_SIZE)
}

/// Write an empty filesystem spanning the whole flash.
pub fn format<F: Flash>(flash: &mut F) -> Result<(), ImageError> {
    let blocks = geometry(flash.capacity())?;
    let mut ctx = Context { flash, error: None };
    let mut bufs = Buffers {
        read: [0; CACHE_SIZE],
        prog: [0; CACHE_SIZE],
        lookahead: [0; LOOKAHEAD_SIZE],
    };
    let cfg = config(&mut ctx, &mut bufs, blocks);
    let mut state = lfs::lfs_t::default();
    // SAFETY: cfg, its buffers and its context outlive the call.
    let code = unsafe { lfs::lfs_format(&mut state, &cfg) };
    check(code, ctx.error).map(drop)
}

/// A mounted image, valid inside [`mount`]'s closure.
pub struct Mounted<'a, F> {
    state: &'a mut lfs::lfs_t,
    blocks: usize,
    error: *const Option<FlashError>,
    _flash: PhantomData<F>,
}

/// Mount the image in `flash` and run `f` on it; unmounts afterwards (also on error).
///
/// The filesystem state lives in this stack frame because littlefs keeps pointers into
/// it; the closure keeps it from moving.
pub fn mount<F: Flash, R>(
    flash: &mut F,
    f: impl FnOnce(&mut Mounted<'_, F>) -> Result<R, ImageError>,
) -> Result<R, ImageError> {
    let capacity = flash.capacity();
    if !capacity.is_multiple_of(BLOCK_SIZE) || capacity < 2 * BLOCK_SIZE {
        return Err(ImageError::Geometry { capacity });
    }
    let mut ctx = Context { flash, error: None };
    let mut bufs = Buffers {
        read: [0; CACHE_SIZE],
        prog: [0; CACHE_SIZE],
        lookahead: [0; LOOKAHEAD_SIZE],
    };
    // Block count 0: take it from the superblock, so any image that fits can be mounted.
    let cfg = config(&mut ctx, &mut bufs, 0);
    let mut state = lfs::lfs_t::default();
    // SAFETY: cfg, its buffers and its context outlive the mount, which ends below.
    let code = unsafe { lfs::lfs_mount(&mut state, &cfg) };
    if let Err(ImageError::Corrupt) = check(code, ctx.error) {
        // Say so if it is a sound image of another geometry rather than damage.
        return Err(foreign_block_size(ctx.flash)
            .map_or(ImageError::Corrupt, |found| ImageError::BlockSize { found }));
    }
    check(code, ctx.error)?;
    let blocks = state.block_count as usize;
    let result = if blocks * BLOCK_SIZE > capacity {
        Err(ImageError::Truncated {
            image_bytes: blocks * BLOCK_SIZE,
            capacity,
        })
    } else {
        let mut mounted = Mounted {
            state: &mut state,
            blocks,
            error: &ctx.error,
            _flash: PhantomData,
        };
        f(&mut mounted)
    };
    // SAFETY: the state was mounted above and is not used afterwards.
    let code = unsafe { lfs::lfs_unmount(&mut state) };
    let value = result?;
    check(code, ctx.error)?;
    Ok(value)
}

/// Where block 0 of a LittleFS 2.x image holds the magic and the superblock's geometry:
/// revision (4), name tag (4), `littlefs` (8), struct tag (4), then little-endian
/// version, block size, block count.
const SUPERBLOCK_MAGIC_AT: usize = 8;
const SUPERBLOCK_BLOCK_SIZE_AT: usize = 24;

/// The block size a LittleFS superblock at offset 0 declares, if it is a plausible one
/// (a power of two littlefs accepts, dividing the flash) other than [`BLOCK_SIZE`].
fn foreign_block_size<F: Flash>(flash: &mut F) -> Option<u32> {
    let mut head = [0u8; 32];
    flash.read(0, &mut head).ok()?;
    if head.get(SUPERBLOCK_MAGIC_AT..SUPERBLOCK_MAGIC_AT + 8) != Some(b"littlefs") {
        return None;
    }
    let field = head.get(SUPERBLOCK_BLOCK_SIZE_AT..SUPERBLOCK_BLOCK_SIZE_AT + 4)?;
    let found = u32::from_le_bytes(field.try_into().ok()?);
    let plausible = found.is_power_of_two()
        && (128..=1 << 20).contains(&found)
        && found as usize != BLOCK_SIZE
        && flash.capacity().is_multiple_of(found as usize);
    plausible.then_some(found)
}

/// A NUL-terminated copy of a path for the C API.
fn c_path(path: &str) -> Result<[u8; MAX_PATH + 1], ImageError> {
    let mut out = [0u8; MAX_PATH + 1];
    if path.len() > MAX_PATH || path.bytes().any(|b| b == 0) {
        return Err(ImageError::BadPath);
    }
    out[..path.len()].copy_from_slice(path.as_bytes());
    Ok(out)
}

fn path_string(path: &str) -> String<MAX_PATH> {
    let mut s = String::new();
    // c_path has already bounded the length.
    let _ = s.push_str(path);
    s
}

impl<F> Mounted<'_, F> {
    /// Blocks in the image (from its superblock).
    pub fn block_count(&self) -> usize {
        self.blocks
    }

    fn flash_error(&self) -> Option<FlashError> {
        // SAFETY: points at the Context in `mount`'s frame, which outlives `self`.
        unsafe { *self.error }
    }

    fn check(&self, code: c_int, path: &str) -> Result<c_int, ImageError> {
        if code == lfs::lfs_error_LFS_ERR_NOENT {
            return Err(ImageError::NotFound(path_string(path)));
        }
        check(code, self.flash_error())
    }

    /// Open `path`, run `f` with the file, close it.
    fn with_file<R>(
        &mut self,
        path: &str,
        flags: c_int,
        f: impl FnOnce(&mut Self, *mut lfs::lfs_file_t) -> Result<R, ImageError>,
    ) -> Result<R, ImageError> {
        let cpath = c_path(path)?;
        #[repr(align(8))]
        struct FileBuffer([u8; CACHE_SIZE]);
        let mut buffer = FileBuffer([0; CACHE_SIZE]);
        let file_cfg = lfs::lfs_file_config {
            buffer: buffer.0.as_mut_ptr() as *mut c_void,
            ..Default::default()
        };
        let mut file = lfs::lfs_file_t::default();
        // SAFETY: the path is NUL-terminated; the file and its buffer outlive the close.
        let code = unsafe {
            lfs::lfs_file_opencfg(
                self.state,
                &mut file,
                cpath.as_ptr() as *const _,
                flags,
                &file_cfg,
            )
        };
        self.check(code, path)?;
        let result = f(self, &mut file);
        // SAFETY: the file was opened above.
        let code = unsafe { lfs::lfs_file_close(self.state, &mut file) };
        let value = result?;
        self.check(code, path)?;
        Ok(value)
    }

    /// Create or replace `path` with `data`.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), ImageError> {
        let flags = (lfs::lfs_open_flags_LFS_O_WRONLY
            | lfs::lfs_open_flags_LFS_O_CREAT
            | lfs::lfs_open_flags_LFS_O_TRUNC) as c_int;
        self.with_file(path, flags, |this, file| {
            // SAFETY: data is valid for its length; file is open for writing.
            let n = unsafe {
                lfs::lfs_file_write(
                    this.state,
                    file,
                    data.as_ptr() as *const c_void,
                    data.len() as u32,
                )
            };
            this.check(n, path)?;
            Ok(())
        })
    }

    /// Size of `path` in bytes.
    pub fn file_len(&mut self, path: &str) -> Result<usize, ImageError> {
        let cpath = c_path(path)?;
        let mut info = lfs::lfs_info::default();
        // SAFETY: path NUL-terminated, info is a valid out-pointer.
        let code = unsafe { lfs::lfs_stat(self.state, cpath.as_ptr() as *const _, &mut info) };
        self.check(code, path)?;
        Ok(info.size as usize)
    }

    /// Read all of `path` into `buf`, failing with [`ImageError::TooLarge`] if it does not fit.
    pub fn read_file<'b>(&mut self, path: &str, buf: &'b mut [u8]) -> Result<&'b [u8], ImageError> {
        let len = self.file_len(path)?;
        if len > buf.len() {
            return Err(ImageError::TooLarge {
                path: path_string(path),
                len,
                max: buf.len(),
            });
        }
        let read = self.with_file(
            path,
            lfs::lfs_open_flags_LFS_O_RDONLY as c_int,
            |this, file| {
                // SAFETY: buf holds at least `len` bytes; file is open for reading.
                let n = unsafe {
                    lfs::lfs_file_read(
                        this.state,
                        file,
                        buf.as_mut_ptr() as *mut c_void,
                        len as u32,
                    )
                };
                this.check(n, path)
            },
        )? as usize;
        if read != len {
            return Err(ImageError::Corrupt);
        }
        Ok(&buf[..len])
    }

    /// Call `f(name, size)` for every regular file in the root directory.
    pub fn list(&mut self, mut f: impl FnMut(&str, usize)) -> Result<(), ImageError> {
        let mut dir = lfs::lfs_dir_t::default();
        // SAFETY: "/" is NUL-terminated; dir outlives the close below.
        let code = unsafe { lfs::lfs_dir_open(self.state, &mut dir, c"/".as_ptr()) };
        self.check(code, "/")?;
        let result = loop {
            let mut info = lfs::lfs_info::default();
            // SAFETY: dir is open; info is a valid out-pointer.
            let code = unsafe { lfs::lfs_dir_read(self.state, &mut dir, &mut info) };
            match self.check(code, "/") {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            if info.type_ as u32 != lfs::lfs_type_LFS_TYPE_REG {
                continue;
            }
            let name_len = info.name.iter().position(|&c| c == 0).unwrap_or(0);
            // SAFETY: c_char and u8 have the same layout.
            let name =
                unsafe { core::slice::from_raw_parts(info.name.as_ptr() as *const u8, name_len) };
            match core::str::from_utf8(name) {
                Ok(name) => f(name, info.size as usize),
                Err(_) => break Err(ImageError::Corrupt),
            }
        };
        // SAFETY: dir was opened above.
        let code = unsafe { lfs::lfs_dir_close(self.state, &mut dir) };
        result?;
        self.check(code, "/").map(drop)
    }

    /// Load and validate the device's config and credentials; with feature `tls` the
    /// credentials pass [`crate::creds::check_credentials`].
    pub fn load_credentials<'b>(
        &mut self,
        bufs: &'b mut CredentialBuffers,
    ) -> Result<Credentials<'b>, ImageError> {
        let config_json = self.read_file(CONFIG_PATH, &mut bufs.config)?;
        let config = DeviceConfig::from_json(config_json).map_err(ImageError::Config)?;
        let cert = self.read_file(CERT_PATH, &mut bufs.cert)?;
        let key = self.read_file(KEY_PATH, &mut bufs.key)?;
        let ca = self.read_file(CA_PATH, &mut bufs.ca)?;
        // Name a bad file now, not as a nameless handshake failure later.
        #[cfg(feature = "tls")]
        crate::creds::check_credentials(cert, key, ca).map_err(|f| ImageError::Creds {
            file: f.file,
            error: f.error,
        })?;
        Ok(Credentials {
            cert,
            key,
            ca,
            config,
        })
    }
}

/// Where the device keeps its credentials once loaded (about 12 KiB).
pub struct CredentialBuffers {
    pub cert: [u8; MAX_CERT],
    pub key: [u8; MAX_KEY],
    pub ca: [u8; MAX_CERT],
    pub config: [u8; MAX_CONFIG_JSON],
}

impl CredentialBuffers {
    pub const fn new() -> Self {
        Self {
            cert: [0; MAX_CERT],
            key: [0; MAX_KEY],
            ca: [0; MAX_CERT],
            config: [0; MAX_CONFIG_JSON],
        }
    }
}

impl Default for CredentialBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// The device's identity and settings, borrowed from [`CredentialBuffers`].
/// `Debug` shows sizes only: key bytes never reach a log.
pub struct Credentials<'a> {
    pub cert: &'a [u8],
    pub key: &'a [u8],
    pub ca: &'a [u8],
    pub config: DeviceConfig,
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("cert_bytes", &self.cert.len())
            .field("key_bytes", &self.key.len())
            .field("ca_bytes", &self.ca.len())
            .field("config", &self.config)
            .finish()
    }
}

#[cfg(test)]
mod tests;
