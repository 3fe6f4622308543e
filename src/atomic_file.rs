//! Crash-safe file replacement: a reader sees the old bytes or the new bytes, never a mix.

use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Hex SHA-256 of some bytes; the journal identifies file contents by it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The file a path really names: edits go to a symlink's target, so the link survives.
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    fs::canonicalize(path)
}

/// Replace `path` with `bytes`: temp file in the same directory, fsync, rename, fsync the directory.
/// The new file keeps the old one's mode and owner; `mode_if_new` applies when there was no file.
pub fn write(path: &Path, bytes: &[u8], mode_if_new: u32) -> io::Result<()> {
    write_inner(path, bytes, mode_if_new, None)
}

/// Like [`write`], but the file gets exactly `mode` and the owner and group of `like` (e.g. an
/// optfile owned like the flags file beside it, so the service user can read it).
pub fn write_owned_like(path: &Path, bytes: &[u8], mode: u32, like: &Path) -> io::Result<()> {
    let owner = fs::metadata(like)?;
    write_inner(path, bytes, mode, Some((owner, mode)))
}

fn write_inner(
    path: &Path,
    bytes: &[u8],
    mode_if_new: u32,
    forced: Option<(fs::Metadata, u32)>,
) -> io::Result<()> {
    let target = match resolve(path) {
        Ok(real) => real,
        Err(err) if err.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(err) => return Err(err),
    };
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.distls-tmp-{}", std::process::id()));
    let result = match &forced {
        // Owner from `like`, mode as asked, whatever the file had.
        Some((owner, mode)) => {
            write_temp_then_rename(&temp, &target, bytes, Some(owner), *mode, true)
        }
        None => {
            let existing = fs::metadata(&target).ok();
            write_temp_then_rename(&temp, &target, bytes, existing.as_ref(), mode_if_new, false)
        }
    };
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    File::open(dir)?.sync_all()
}

/// Remove a file if it exists, then fsync its directory.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

fn write_temp_then_rename(
    temp: &Path,
    target: &Path,
    bytes: &[u8],
    existing: Option<&fs::Metadata>,
    mode_if_new: u32,
    force_mode: bool,
) -> io::Result<()> {
    let mode = match existing {
        Some(m) if !force_mode => m.permissions().mode() & 0o7777,
        _ => mode_if_new,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    file.write_all(bytes)?;
    if let Some(meta) = existing {
        // Owner first: chown may clear set-id bits, the chmod below puts the mode back.
        chown_if_needed(temp, meta)?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, target)
}

fn chown_if_needed(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let current = fs::metadata(path)?;
    if current.uid() == meta.uid() && current.gid() == meta.gid() {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.dist.args");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file may remain");
    }

    #[test]
    fn writes_through_a_symlink_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.args");
        let link = dir.path().join("vm.dist.args");
        fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write(&link, b"new", 0o600).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
    }

    #[test]
    fn new_file_gets_the_requested_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        write(&path, b"{}", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn sha256_is_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
