//! All-or-nothing output: every file is written to a temporary name in the target
//! directory and renamed into place only once the whole set is written, so an error never
//! leaves a half-written file or a partial set behind. Replacing a set (`--force`) keeps
//! each old file until the whole new set is in place, and puts them all back if any
//! rename fails, so a failure never leaves a mixed set (a new `cert.der` beside an old
//! `private.der`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{CertsError, OutputProblem};

/// One file of an output set.
pub struct OutFile {
    /// Path relative to the output directory (may contain one level of subdirectory).
    pub name: PathBuf,
    pub contents: Zeroizing<Vec<u8>>,
    /// Private keys are created with mode 0600; everything else 0644.
    pub secret: bool,
}

impl OutFile {
    pub fn public(name: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            contents: Zeroizing::new(contents.into()),
            secret: false,
        }
    }

    pub fn secret(name: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            contents: Zeroizing::new(contents.into()),
            secret: true,
        }
    }

    fn mode(&self) -> u32 {
        if self.secret { 0o600 } else { 0o644 }
    }
}

/// Refuse to touch anything if `dir` is not a directory, or (without `force`) if any
/// of `names` already exists under it.
pub fn check_names(dir: &Path, names: &[PathBuf], force: bool) -> Result<(), CertsError> {
    if dir.exists() && !dir.is_dir() {
        return Err(CertsError::output(dir, OutputProblem::NotADirectory));
    }
    if !force {
        for name in names {
            let path = dir.join(name);
            if path.exists() {
                return Err(CertsError::output(&path, OutputProblem::Exists));
            }
        }
    }
    Ok(())
}

/// Write a set of files under `dir` (created if needed).
///
/// Files go to a staging directory inside `dir` first; only when all are written and
/// synced are they renamed into place, each rename atomic. A file being replaced is first
/// moved aside into the staging directory; if any rename fails, every file already
/// renamed in is taken out again and the old ones are put back.
pub fn write_set(dir: &Path, files: &[OutFile], force: bool) -> Result<(), CertsError> {
    let names: Vec<PathBuf> = files.iter().map(|f| f.name.clone()).collect();
    check_names(dir, &names, force)?;
    let created_dir = !dir.exists();
    fs::create_dir_all(dir).map_err(|e| CertsError::io(dir, e))?;
    if created_dir {
        set_mode(dir, 0o755)?;
    }
    let result = stage_and_rename(dir, files);
    if result.is_err() && created_dir {
        // Leave no empty directory behind either; ignore failure, the error is what matters.
        let _ = fs::remove_dir_all(dir);
    }
    result
}

/// One file renamed into place, and where the file it replaced was put.
struct Swapped {
    target: PathBuf,
    previous: Option<PathBuf>,
}

fn stage_and_rename(dir: &Path, files: &[OutFile]) -> Result<(), CertsError> {
    let staging = tempfile::Builder::new()
        .prefix(".certs-staging-")
        .tempdir_in(dir)
        .map_err(|e| CertsError::io(dir, e))?;
    let new_dir = staging.path().join("new");
    let old_dir = staging.path().join("old");
    for file in files {
        let path = new_dir.join(&file.name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| CertsError::io(parent, e))?;
        }
        write_new(&path, &file.contents, file.mode())?;
    }
    let mut swapped = Vec::new();
    for file in files {
        let target = dir.join(&file.name);
        match swap_in(
            &new_dir.join(&file.name),
            &target,
            &old_dir.join(&file.name),
        ) {
            Ok(s) => swapped.push(s),
            Err(e) => {
                let unrestored = roll_back(&swapped);
                if unrestored.is_empty() {
                    return Err(e);
                }
                // Keep the old files where they are rather than delete them with the
                // staging directory, and say where they are.
                let kept = staging.keep();
                return Err(CertsError::io(
                    &target,
                    std::io::Error::other(format!(
                        "{e}; putting the previous files back failed for {}: they are in {}",
                        unrestored.join(", "),
                        kept.join("old").display()
                    )),
                ));
            }
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Rename `staged` to `target`, moving a file already at `target` to `aside` first (and
/// back again if the rename fails).
fn swap_in(staged: &Path, target: &Path, aside: &Path) -> Result<Swapped, CertsError> {
    if let Some(parent) = target.parent()
        && !parent.exists()
    {
        fs::create_dir_all(parent).map_err(|e| CertsError::io(parent, e))?;
        set_mode(parent, 0o755)?;
    }
    // Only a regular file is moved aside: anything else at `target` (a directory) makes
    // the rename below fail, and the set is rolled back.
    let replacing = fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_file());
    if replacing {
        if let Some(parent) = aside.parent() {
            fs::create_dir_all(parent).map_err(|e| CertsError::io(parent, e))?;
        }
        fs::rename(target, aside).map_err(|e| CertsError::io(target, e))?;
    }
    if let Err(e) = fs::rename(staged, target) {
        if replacing {
            let _ = fs::rename(aside, target);
        }
        return Err(CertsError::io(target, e));
    }
    Ok(Swapped {
        target: target.to_path_buf(),
        previous: replacing.then(|| aside.to_path_buf()),
    })
}

/// Undo `swapped`, last first: put each previous file back, or remove a file that did
/// not exist before. Returns the targets that could not be restored.
fn roll_back(swapped: &[Swapped]) -> Vec<String> {
    let mut failed = Vec::new();
    for s in swapped.iter().rev() {
        let restored = match &s.previous {
            Some(previous) => fs::rename(previous, &s.target),
            None => fs::remove_file(&s.target),
        };
        if restored.is_err() {
            failed.push(s.target.display().to_string());
        }
    }
    failed
}

/// Write one file atomically: temporary file in the same directory, then rename.
/// Without `force` an existing file is an error (checked again at the rename, so a race
/// cannot clobber it).
pub fn write_file(
    path: &Path,
    contents: &[u8],
    secret: bool,
    force: bool,
) -> Result<(), CertsError> {
    if path.is_dir() {
        return Err(CertsError::output(path, OutputProblem::IsADirectory));
    }
    if !force && path.exists() {
        return Err(CertsError::output(path, OutputProblem::Exists));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| CertsError::io(&parent, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".certs-tmp-")
        .tempfile_in(&parent)
        .map_err(|e| CertsError::io(&parent, e))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| CertsError::io(tmp.path(), e))?;
    let mode = if secret { 0o600 } else { 0o644 };
    set_mode(tmp.path(), mode)?;
    let persisted = if force {
        tmp.persist(path).map(|_| ())
    } else {
        tmp.persist_noclobber(path).map(|_| ())
    };
    persisted.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            CertsError::output(path, OutputProblem::Exists)
        } else {
            CertsError::io(path, e.error)
        }
    })?;
    sync_dir(&parent);
    Ok(())
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertsError> {
    // The mode is set at creation so a key is never readable by others, even briefly.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| CertsError::io(path, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| CertsError::io(path, e))?;
    // The umask may have narrowed the mode; public files should be world-readable.
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), CertsError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| CertsError::io(path, e))
}

fn sync_dir(dir: &Path) {
    // Best effort: makes the renames durable; not all filesystems support it.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
