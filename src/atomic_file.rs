//! A node's files, opened, read, replaced and removed safely on a host whose service user owns
//! the directories distls writes into (docs/security.md):
//! - a path is walked one directory fd at a time (`O_NOFOLLOW`); a symbolic link is followed only
//!   when root (or the user distls runs as) owns the link, its target and every directory on the
//!   way, anything else is refused naming the link, the owner and the fix;
//! - a read takes a regular file only, opened `O_NONBLOCK` (a FIFO cannot hang it), up to a limit;
//! - a replacement is a fresh temp file (`O_CREAT|O_EXCL|O_NOFOLLOW`, random name) in the file's
//!   directory fd, owner and mode set through its fd, its bytes read back through the fd and
//!   checked (length + sha256) before the rename: a reader sees the old bytes or the new ones.
//!
//! The shell path (SSH, `become`) runs the same operations, with the same messages, in Perl
//! (`atomic_file.pl`); a change here is a change there.

use sha2::{Digest, Sha256};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

/// Hex SHA-256 of some bytes; the journal identifies file contents by it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a read takes at most unless the caller says less: certificates and args files are far
/// smaller; a larger file is a mistake (or `/dev/zero` behind a name).
pub const READ_LIMIT: u64 = 16 * 1024 * 1024;

/// More links than this on one walk is a loop.
const MAX_LINKS: usize = 40;

/// Where a replacement's owner and mode come from.
#[derive(Debug, Clone, Copy)]
pub enum Ownership<'a> {
    /// The file being replaced keeps its owner and mode; a new file gets this mode (owner: distls).
    KeepOrNew(u32),
    /// Exactly this mode, owner and group of that other file (e.g. an optfile owned like the
    /// flags file beside it, so the service user can read it).
    Like(&'a Path, u32),
}

/// A file read that exceeded its limit (kept apart so callers can explain their own limit).
#[derive(Debug)]
pub struct TooLarge {
    pub size: u64,
    pub limit: u64,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "it is {} bytes, more than the {} distls reads",
            self.size, self.limit
        )
    }
}

impl std::error::Error for TooLarge {}

/// The file a path really names (trusted links followed, docs/security.md); it must exist.
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let walk = Walk::to(path)?;
    if walk.entry()?.is_none() {
        return Err(not_found(&walk.real()));
    }
    Ok(walk.real())
}

/// Whether a path names something (a trusted link is looked through; any other link counts as
/// there, so the read that follows refuses it).
pub fn exists(path: &Path) -> io::Result<bool> {
    match Walk::to(path) {
        Ok(walk) => Ok(walk.entry()?.is_some()),
        // A directory on the way is missing: so is the file.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The bytes of a regular file, at most `limit` of them (a larger file is an error whose source
/// is [`TooLarge`]).
pub fn read(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let walk = Walk::to(path)?;
    let file = walk.open_regular(libc::O_RDONLY)?;
    let size = file.metadata()?.len();
    if size > limit {
        return Err(io::Error::other(TooLarge { size, limit }));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // /proc files say 0 bytes and still have content: read up to the limit, whatever fstat says.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::other(TooLarge {
            size: bytes.len() as u64,
            limit,
        }));
    }
    Ok(bytes)
}

/// Replace `path` with `bytes` (owner and mode per `mode_if_new` / the old file): see the module
/// comment.
pub fn write(path: &Path, bytes: &[u8], mode_if_new: u32) -> io::Result<()> {
    replace(path, bytes, Ownership::KeepOrNew(mode_if_new))
}

/// Like [`write`], but the file gets exactly `mode` and the owner and group of `like`.
pub fn write_owned_like(path: &Path, bytes: &[u8], mode: u32, like: &Path) -> io::Result<()> {
    replace(path, bytes, Ownership::Like(like, mode))
}

/// The one way distls replaces a file: temp file beside it, verified, renamed over it.
pub fn replace(path: &Path, bytes: &[u8], ownership: Ownership) -> io::Result<()> {
    let staged = Staged::write(path, bytes, ownership)?;
    staged.rename().inspect_err(|_| staged.discard())?;
    staged.settle()
}

/// Several files replaced as one change: every new file is written and verified beside its
/// name first, then the renames follow one another. A reader that opens them one after the other
/// (a certificate, then its key) can see a mixed pair only in the microseconds between two
/// renames, not while the next file is still being written. Nothing is renamed unless every new
/// file was written and verified.
pub fn replace_together(files: &[(&Path, &[u8], Ownership)]) -> io::Result<()> {
    let mut staged: Vec<Staged> = Vec::with_capacity(files.len());
    for (path, bytes, ownership) in files {
        let next = Staged::write(path, bytes, *ownership).and_then(|s| {
            if staged
                .iter()
                .any(|other| other.walk.real() == s.walk.real())
            {
                s.discard();
                return Err(io::Error::other(format!(
                    "{}: named twice in one change",
                    s.walk.real().display()
                )));
            }
            Ok(s)
        });
        match next {
            Ok(s) => staged.push(s),
            Err(e) => {
                staged.iter().for_each(Staged::discard);
                return Err(e);
            }
        }
    }
    for (i, s) in staged.iter().enumerate() {
        if let Err(e) = s.rename() {
            staged[i..].iter().for_each(Staged::discard);
            // The ones renamed already stay: checked, synced and named, so the caller knows.
            let done = &staged[..i];
            done.iter().for_each(|d| {
                let _ = d.settle();
            });
            if done.is_empty() {
                return Err(e);
            }
            let names: Vec<String> = done
                .iter()
                .map(|d| d.walk.real().display().to_string())
                .collect();
            return Err(io::Error::new(
                e.kind(),
                format!("{e} (already replaced before it: {})", names.join(", ")),
            ));
        }
    }
    // Every file is checked and synced; the first problem is the one reported.
    let settled: Vec<io::Result<()>> = staged.iter().map(Staged::settle).collect();
    settled.into_iter().collect()
}

/// A new file written, owned, synced and verified beside the name it is to replace.
struct Staged {
    walk: Walk,
    temp_name: OsString,
    temp: File,
    temp_stat: libc::stat,
}

impl Staged {
    fn write(path: &Path, bytes: &[u8], ownership: Ownership) -> io::Result<Staged> {
        let walk = Walk::to(path)?;
        let existing = walk.entry()?;
        if let Some(st) = &existing {
            walk.check_regular(st)?;
        }
        let (uid, gid, mode) = match ownership {
            Ownership::KeepOrNew(mode_if_new) => match &existing {
                Some(st) => (st.st_uid, st.st_gid, st.st_mode & 0o7777),
                // SAFETY: plain getters.
                None => unsafe { (libc::geteuid(), libc::getegid(), mode_if_new) },
            },
            Ownership::Like(like, mode) => {
                let like_walk = Walk::to(like)?;
                let st = fstat(&like_walk.open_regular(libc::O_RDONLY)?)?;
                (st.st_uid, st.st_gid, mode)
            }
        };
        let (temp_name, temp) = walk.create_temp()?;
        match fill(&walk, &temp, bytes, (uid, gid, mode)) {
            Ok(temp_stat) => Ok(Staged {
                walk,
                temp_name,
                temp,
                temp_stat,
            }),
            Err(e) => {
                walk.unlink_if_same(&temp_name, &temp);
                Err(e)
            }
        }
    }

    fn rename(&self) -> io::Result<()> {
        self.walk.rename_from(&self.temp_name)
    }

    /// After the rename: the name holds this very file (nobody swapped the temp name before the
    /// rename), and the directory entry is on disk.
    fn settle(&self) -> io::Result<()> {
        match self.walk.entry()? {
            Some(now)
                if now.st_ino == self.temp_stat.st_ino && now.st_dev == self.temp_stat.st_dev => {}
            _ => {
                return Err(io::Error::other(format!(
                    "{}: was replaced by someone else while distls wrote it",
                    self.walk.real().display()
                )));
            }
        }
        self.walk.sync_dir()
    }

    /// Remove the temp file (a replacement that will not happen).
    fn discard(&self) {
        self.walk.unlink_if_same(&self.temp_name, &self.temp);
    }
}

/// The temp file gets the bytes, owner and mode, reaches the disk and reads back as written.
fn fill(
    walk: &Walk,
    temp: &File,
    bytes: &[u8],
    (uid, gid, mode): (u32, u32, u32),
) -> io::Result<libc::stat> {
    temp.write_all_at(bytes, 0)?;
    let st = fstat(temp)?;
    if st.st_uid != uid || st.st_gid != gid {
        // Owner first: fchown may clear set-id bits, the fchmod below puts the mode back.
        // SAFETY: fchown on an fd this function owns.
        if unsafe { libc::fchown(temp.as_raw_fd(), uid, gid) } != 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(
                err.kind(),
                format!(
                    "{}: cannot give the new file the owner {uid}:{gid}: {err}",
                    walk.real().display()
                ),
            ));
        }
    }
    // SAFETY: fchmod on an fd this function owns.
    if unsafe { libc::fchmod(temp.as_raw_fd(), mode as libc::mode_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    temp.sync_all()?;
    verify(walk, temp, bytes)?;
    Ok(st)
}

/// The temp file holds exactly `bytes`, read back through its fd.
fn verify(walk: &Walk, temp: &File, bytes: &[u8]) -> io::Result<()> {
    let mut back = Vec::with_capacity(bytes.len());
    let mut reader = ReadAt { file: temp, at: 0 };
    (&mut reader)
        .take(bytes.len() as u64 + 1)
        .read_to_end(&mut back)?;
    if back.len() != bytes.len() || sha256_hex(&back) != sha256_hex(bytes) {
        return Err(io::Error::other(format!(
            "{}: the new file does not read back as written ({} of {} bytes); nothing changed",
            walk.real().display(),
            back.len(),
            bytes.len()
        )));
    }
    Ok(())
}

struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Remove a file (or a link, never what it points to) if it is there, then fsync its directory.
pub fn remove(path: &Path) -> io::Result<()> {
    let walk = Walk::to_name(path)?;
    match walk.entry()? {
        None => return Ok(()),
        Some(st) if is_type(&st, libc::S_IFDIR) => {
            return Err(io::Error::other(format!(
                "{}: is a directory, not a file",
                walk.real().display()
            )));
        }
        Some(_) => {}
    }
    walk.unlink(0).map_err(|e| walk.error(e))?;
    walk.sync_dir()
}

/// Create a directory with `mode` (an existing directory is fine, anything else there is an
/// error). Returns whether it was created.
pub fn make_dir(path: &Path, mode: u32) -> io::Result<bool> {
    let walk = Walk::to_name(path)?;
    let name = c_name(&walk.name)?;
    // SAFETY: mkdirat relative to a directory fd this walk owns.
    let created = unsafe { libc::mkdirat(walk.dir.as_raw_fd(), name.as_ptr(), 0o700) } == 0;
    if !created {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            return Err(walk.error(err));
        }
    }
    let dir = walk.open_at(libc::O_RDONLY | libc::O_DIRECTORY)?;
    if created {
        // SAFETY: fchmod on an fd this function owns.
        if unsafe { libc::fchmod(dir.as_raw_fd(), mode as libc::mode_t) } != 0 {
            return Err(walk.error(io::Error::last_os_error()));
        }
        walk.sync_dir()?;
    }
    Ok(created)
}

/// Remove a directory if it is there and empty.
pub fn remove_dir_if_empty(path: &Path) -> io::Result<()> {
    let walk = Walk::to_name(path)?;
    match walk.unlink(libc::AT_REMOVEDIR) {
        Ok(()) => walk.sync_dir(),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTEMPTY | libc::EEXIST)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(walk.error(e)),
    }
}

/// A path walked down to the directory that holds its last name: `dir` is that directory's fd,
/// `real_dir` its path with trusted links resolved.
struct Walk {
    dir: OwnedFd,
    real_dir: PathBuf,
    name: OsString,
    /// The first link followed on the way, if any: the file it leads to must be trusted too.
    via_link: Option<PathBuf>,
}

impl Walk {
    fn to(path: &Path) -> io::Result<Walk> {
        Self::down(path, true)
    }

    /// Down to the last name, which is not followed if it is a link (to remove the link itself).
    fn to_name(path: &Path) -> io::Result<Walk> {
        Self::down(path, false)
    }

    fn down(path: &Path, follow_last: bool) -> io::Result<Walk> {
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()?.join(path)
        };
        // Names still to walk, the next one last.
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, &absolute);
        let mut dir = open_root()?;
        let mut real_dir = PathBuf::from("/");
        let mut untrusted: Option<(PathBuf, String)> =
            dir_problem(&fstat(&dir)?).map(|p| (real_dir.clone(), p));
        let mut via_link: Option<PathBuf> = None;
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                dir = open_dir_at(&dir, OsStr::new(".."), &real_dir)?;
                real_dir.pop();
                continue;
            }
            let last = pending.is_empty();
            let here = real_dir.join(&name);
            let st = lstat_at(&dir, &name, &here)?;
            let follow = st
                .as_ref()
                .is_some_and(|st| is_type(st, libc::S_IFLNK) && (follow_last || !last));
            if last && !follow {
                return Ok(Walk {
                    dir,
                    real_dir,
                    name,
                    via_link,
                });
            }
            let Some(st) = st else {
                return Err(not_found(&here));
            };
            if follow {
                let problem = untrusted
                    .clone()
                    .or_else(|| owner_problem(&st).map(|p| (here.clone(), p)));
                if let Some((culprit, why)) = problem {
                    return Err(refused_link(&here, &culprit, &why));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other(format!(
                        "{}: more than {MAX_LINKS} symbolic links on the way (a loop?)",
                        absolute.display()
                    )));
                }
                let target = read_link_at(&dir, &name, &here)?;
                if target.is_absolute() {
                    dir = open_root()?;
                    real_dir = PathBuf::from("/");
                }
                push_components(&mut pending, &target);
                via_link.get_or_insert(here);
                continue;
            }
            let next = open_dir_at(&dir, &name, &here)?;
            if untrusted.is_none() {
                untrusted = dir_problem(&fstat(&next)?).map(|p| (here.clone(), p));
            }
            if let (Some(link), Some((culprit, why))) = (&via_link, &untrusted) {
                return Err(refused_link(link, culprit, why));
            }
            dir = next;
            real_dir = here;
        }
        Err(io::Error::other(format!(
            "{}: names a directory, not a file",
            absolute.display()
        )))
    }

    fn real(&self) -> PathBuf {
        self.real_dir.join(&self.name)
    }

    fn error(&self, err: io::Error) -> io::Error {
        io::Error::new(err.kind(), format!("{}: {err}", self.real().display()))
    }

    /// What is at the name now (never looked through).
    fn entry(&self) -> io::Result<Option<libc::stat>> {
        lstat_at(&self.dir, &self.name, &self.real())
    }

    fn open_at(&self, flags: libc::c_int) -> io::Result<File> {
        let name = c_name(&self.name)?;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: openat relative to a directory fd this walk owns; the fd is owned below.
        let fd = unsafe { libc::openat(self.dir.as_raw_fd(), name.as_ptr(), flags) };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOENT) => not_found(&self.real()),
                Some(libc::ELOOP) => io::Error::other(format!(
                    "{}: is a symbolic link that appeared while distls opened it",
                    self.real().display()
                )),
                _ => self.error(err),
            });
        }
        // SAFETY: a fresh fd nobody else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// The file at the name, which must be a regular file (and trusted, if a link led to it).
    fn open_regular(&self, flags: libc::c_int) -> io::Result<File> {
        let file = self.open_at(flags)?;
        self.check_regular(&fstat(&file)?)?;
        Ok(file)
    }

    fn check_regular(&self, st: &libc::stat) -> io::Result<()> {
        if !is_type(st, libc::S_IFREG) {
            return Err(io::Error::other(format!(
                "{}: is not a regular file ({}); distls reads and writes regular files only",
                self.real().display(),
                type_name(st)
            )));
        }
        if let (Some(link), Some(why)) = (&self.via_link, owner_problem(st)) {
            return Err(refused_link(link, &self.real(), &why));
        }
        Ok(())
    }

    /// `.NAME.distls-<random>`, created exclusively: nobody else can have chosen it.
    fn create_temp(&self) -> io::Result<(OsString, File)> {
        for _ in 0..8 {
            let mut name = OsString::from(".");
            name.push(&self.name);
            name.push(format!(".distls-{}", random_hex()?));
            let c = c_name(&name)?;
            let flags =
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: openat relative to a directory fd this walk owns.
            let fd = unsafe { libc::openat(self.dir.as_raw_fd(), c.as_ptr(), flags, 0o600) };
            if fd >= 0 {
                // SAFETY: a fresh fd nobody else owns.
                return Ok((name, unsafe { File::from_raw_fd(fd) }));
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::new(
                    err.kind(),
                    format!(
                        "{}: cannot create a temp file beside it: {err}",
                        self.real().display()
                    ),
                ));
            }
        }
        Err(io::Error::other(format!(
            "{}: cannot create a temp file with a fresh name beside it",
            self.real().display()
        )))
    }

    fn rename_from(&self, temp_name: &OsStr) -> io::Result<()> {
        let (from, to) = (c_name(temp_name)?, c_name(&self.name)?);
        let fd = self.dir.as_raw_fd();
        // SAFETY: renameat within one directory fd this walk owns.
        if unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) } != 0 {
            return Err(self.error(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Remove the temp file after a failure, if the name still holds it.
    fn unlink_if_same(&self, temp_name: &OsStr, temp: &File) {
        let (Ok(ours), Ok(Some(there))) =
            (fstat(temp), lstat_at(&self.dir, temp_name, &self.real()))
        else {
            return;
        };
        if ours.st_ino == there.st_ino
            && ours.st_dev == there.st_dev
            && let Ok(c) = c_name(temp_name)
        {
            // SAFETY: unlinkat relative to a directory fd this walk owns.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), c.as_ptr(), 0) };
        }
    }

    fn unlink(&self, flags: libc::c_int) -> io::Result<()> {
        let name = c_name(&self.name)?;
        // SAFETY: unlinkat relative to a directory fd this walk owns.
        if unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        // SAFETY: fsync on a directory fd this walk owns.
        if unsafe { libc::fsync(self.dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Push a path's names onto a stack so the first name is popped first.
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    let names: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    pending.extend(names.into_iter().rev());
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::other("a file name holds a NUL byte"))
}

fn open_root() -> io::Result<OwnedFd> {
    // SAFETY: open with a constant path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c"/".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir_at(dir: &OwnedFd, name: &OsStr, here: &Path) -> io::Result<OwnedFd> {
    let c = c_name(name)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat relative to a directory fd the caller owns; the fd is owned below.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ENOTDIR) => {
                io::Error::other(format!("{}: is not a directory", here.display()))
            }
            Some(libc::ELOOP) => io::Error::other(format!(
                "{}: is a symbolic link that appeared while distls walked the path",
                here.display()
            )),
            Some(libc::ENOENT) => not_found(here),
            _ => io::Error::new(err.kind(), format!("{}: {err}", here.display())),
        });
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn lstat_at(dir: &OwnedFd, name: &OsStr, here: &Path) -> io::Result<Option<libc::stat>> {
    let c = c_name(name)?;
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat relative to a directory fd the caller owns, never following a link.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        return Ok(Some(st));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOENT) => Ok(None),
        Some(libc::ENOTDIR) => Err(io::Error::other(format!(
            "{}: a part of the path is not a directory",
            here.display()
        ))),
        _ => Err(io::Error::new(
            err.kind(),
            format!("{}: {err}", here.display()),
        )),
    }
}

fn read_link_at(dir: &OwnedFd, name: &OsStr, here: &Path) -> io::Result<PathBuf> {
    let c = c_name(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: readlinkat into a buffer of the given length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("{}: {err}", here.display()),
        ));
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsStr::from_bytes(&buf)))
}

fn fstat(file: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on an fd the caller owns.
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn is_type(st: &libc::stat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

fn type_name(st: &libc::stat) -> &'static str {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symbolic link",
        _ => "not a plain file",
    }
}

/// Root and the user distls runs as may own what distls trusts.
fn trusted_uid(uid: u32) -> bool {
    // SAFETY: plain getter.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// Why a link or file may not be trusted: its owner.
fn owner_problem(st: &libc::stat) -> Option<String> {
    (!trusted_uid(st.st_uid)).then(|| format!("is owned by {}", user_label(st.st_uid)))
}

/// Why a directory on the way may not be trusted: its owner, or others may write into it (a
/// sticky directory like /tmp is fine: nobody may replace what they do not own there).
fn dir_problem(st: &libc::stat) -> Option<String> {
    owner_problem(st).or_else(|| {
        let mode = st.st_mode & 0o7777;
        (mode & 0o022 != 0 && mode & 0o1000 == 0)
            .then(|| format!("is writable by group or others (mode {mode:04o})"))
    })
}

/// `mongooseim (uid 998)`.
pub fn user_label(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: zeroed passwd is a valid out-parameter; getpwuid_r writes into `buf`.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return format!("{} (uid {uid})", name.to_string_lossy());
    }
    format!("uid {uid}")
}

fn refused_link(link: &Path, culprit: &Path, why: &str) -> io::Error {
    // SAFETY: plain getter.
    let me = user_label(unsafe { libc::geteuid() });
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        // An io::Error carries text: the hint goes along rendered, and comes back as data
        // through `Message::from_rendered`.
        crate::message::Message::new(format!(
            "{link}: a symbolic link distls does not follow: {culprit} {why}; distls follows a link only when root or the user it runs as ({me}) owns the link, its target and every directory on the way (docs/security.md)",
            link = link.display(),
            culprit = culprit.display()
        ))
        .hint(format!(
            "check where it points (readlink -f {link}); if that is the node's own file, replace the link with a copy of it (cp --remove-destination \"$(readlink -f {link})\" {link}) or have root own {culprit} and the directories above it; otherwise remove the link",
            link = link.display(),
            culprit = culprit.display()
        ))
        .to_string(),
    )
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: does not exist", path.display()),
    )
}

fn random_hex() -> io::Result<String> {
    let mut bytes = [0u8; 12];
    // SAFETY: getrandom into a buffer of the given length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

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
    fn writes_through_a_trusted_symlink_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.args");
        let link = dir.path().join("vm.dist.args");
        fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(resolve(&link).unwrap(), real);
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
    fn relative_paths_start_from_the_current_directory() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("x");
        write(&inside, b"1", 0o600).unwrap();
        let relative = pathdiff(&inside);
        assert_eq!(read(&relative, 10).unwrap(), b"1");
    }

    /// `../../..` up to the root, then down to the file.
    fn pathdiff(path: &Path) -> PathBuf {
        let cwd = std::env::current_dir().unwrap();
        let mut up = PathBuf::new();
        for _ in cwd.components().skip(1) {
            up.push("..");
        }
        up.join(path.strip_prefix("/").unwrap())
    }

    #[test]
    fn reads_are_bounded_and_take_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b'x'; 100]).unwrap();
        let err = read(&path, 99).unwrap_err();
        let too_large = err.get_ref().unwrap().downcast_ref::<TooLarge>().unwrap();
        assert_eq!((too_large.size, too_large.limit), (100, 99));
        assert_eq!(read(&path, 100).unwrap().len(), 100);
        let err = read(Path::new("/dev/zero"), 10).unwrap_err().to_string();
        assert!(
            err.contains("not a regular file (a character device)"),
            "{err}"
        );
        let fifo = dir.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read(&fifo, 10).unwrap_err().to_string();
        assert!(err.contains("(a FIFO)"), "{err}");
        let err = write(&fifo, b"x", 0o600).unwrap_err().to_string();
        assert!(err.contains("(a FIFO)"), "{err}");
        assert!(
            read(Path::new("/proc/self/status"), READ_LIMIT)
                .unwrap()
                .len()
                > 10
        );
    }

    #[test]
    fn make_and_remove_a_directory_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("distls-hybrid");
        assert!(make_dir(&sub, 0o755).unwrap());
        assert!(!make_dir(&sub, 0o755).unwrap());
        assert_eq!(
            fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let file = sub.join("m.erl");
        write(&file, b"x", 0o644).unwrap();
        remove_dir_if_empty(&sub).unwrap();
        assert!(sub.exists(), "not empty: kept");
        remove(&file).unwrap();
        remove(&file).unwrap();
        remove_dir_if_empty(&sub).unwrap();
        assert!(!sub.exists());
        remove_dir_if_empty(&sub).unwrap();
        assert!(!exists(&file).unwrap());
    }

    #[test]
    fn sha256_is_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
