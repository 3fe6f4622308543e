//! A node's files on its host. Local without `become`, distls reaches them itself
//! ([`atomic_file`], off the async threads); every other way goes through the file agent.

use super::{OUTPUT_LIMIT, Transport, TransportError};
use crate::atomic_file;

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

impl Transport {
    /// A regular file's bytes, exactly as stored, at most [`atomic_file::READ_LIMIT`] of them.
    pub async fn read_file(&self, path: &Path) -> Result<Vec<u8>, TransportError> {
        self.read_file_limited(path, atomic_file::READ_LIMIT).await
    }

    /// A regular file's bytes, exactly as stored; more than `limit` is [`TransportError::TooLarge`].
    pub async fn read_file_limited(
        &self,
        path: &Path,
        limit: u64,
    ) -> Result<Vec<u8>, TransportError> {
        if self.is_direct() {
            return self
                .on_local_disk(path, move |p| atomic_file::read(&p, limit))
                .await;
        }
        let out = self
            .agent("read", path, &[limit.to_string()], None, limit as usize + 1)
            .await?;
        match out.status {
            Some(0) if out.stdout.len() as u64 <= limit => Ok(out.stdout),
            Some(3) => {
                let said = String::from_utf8_lossy(&out.stderr);
                let size = said
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(limit + 1);
                Err(TransportError::TooLarge {
                    host: self.describe(),
                    path: path.to_path_buf(),
                    size,
                    limit,
                })
            }
            _ => Err(self.agent_error(path, &out)),
        }
    }

    /// Whether a path names something. A path distls may not look through counts as there, so
    /// the read that follows explains why: see [`Transport::try_exists`].
    pub async fn file_exists(&self, path: &Path) -> bool {
        self.try_exists(path).await.unwrap_or(true)
    }

    /// Whether a path names something (a trusted link is looked through, docs/security.md).
    pub async fn try_exists(&self, path: &Path) -> Result<bool, TransportError> {
        if self.is_direct() {
            return self.on_local_disk(path, |p| atomic_file::exists(&p)).await;
        }
        let out = self.agent("exists", path, &[], None, OUTPUT_LIMIT).await?;
        match out.status {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.agent_error(path, &out)),
        }
    }

    /// The real file behind a path: trusted links followed, any other link refused
    /// (docs/security.md). Edits go to the real file, so the link stays.
    pub async fn canonicalize(&self, path: &Path) -> Result<PathBuf, TransportError> {
        if self.is_direct() {
            return self.on_local_disk(path, |p| atomic_file::resolve(&p)).await;
        }
        let out = self.agent_ok("resolve", path, &[], None).await?;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(out)))
    }

    /// Atomic, verified replace keeping mode and owner (a new file gets `mode_if_new`).
    pub async fn write_file(
        &self,
        path: &Path,
        bytes: &[u8],
        mode_if_new: u32,
    ) -> Result<(), TransportError> {
        if self.is_direct() {
            let data = bytes.to_vec();
            return self
                .on_local_disk(path, move |p| atomic_file::write(&p, &data, mode_if_new))
                .await;
        }
        self.agent_write(
            path,
            bytes,
            &format!("keep:{mode_if_new:o}"),
            None,
            bytes.len(),
        )
        .await
    }

    /// Several files replaced as one change (each keeps its mode and owner; a new one gets
    /// `mode_if_new`): all written and verified beside their names before the first rename, so
    /// a certificate and its key are mismatched on disk for microseconds at most, see
    /// [`atomic_file::replace_together`].
    pub async fn write_files_together(
        &self,
        files: &[(&Path, &[u8])],
        mode_if_new: u32,
    ) -> Result<(), TransportError> {
        let Some((first, _)) = files.first() else {
            return Ok(());
        };
        let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.to_path_buf()).collect();
        // An error names the file it is about: that file, not the first one, is its path.
        let about = |said: &str| -> PathBuf {
            paths
                .iter()
                .find(|p| said.starts_with(&format!("{}: ", p.display())))
                .unwrap_or(&paths[0])
                .clone()
        };
        if self.is_direct() {
            let owned: Vec<(PathBuf, Vec<u8>)> = files
                .iter()
                .map(|(p, b)| (p.to_path_buf(), b.to_vec()))
                .collect();
            let done = tokio::task::spawn_blocking(move || {
                let ownership = atomic_file::Ownership::KeepOrNew(mode_if_new);
                let borrowed: Vec<(&Path, &[u8], atomic_file::Ownership)> = owned
                    .iter()
                    .map(|(p, b)| (p.as_path(), b.as_slice(), ownership))
                    .collect();
                atomic_file::replace_together(&borrowed)
            })
            .await
            .expect("file task");
            return done.map_err(|e| self.io_error(&about(&e.to_string()), e));
        }
        let mut args = Vec::new();
        let mut input = Vec::new();
        for (i, (path, bytes)) in files.iter().enumerate() {
            if i > 0 {
                args.push(path.display().to_string());
            }
            args.push(bytes.len().to_string());
            args.push(atomic_file::sha256_hex(bytes));
            args.push(format!("keep:{mode_if_new:o}"));
            input.extend_from_slice(bytes);
        }
        let out = self
            .agent("write-together", first, &args, Some(&input), OUTPUT_LIMIT)
            .await?;
        if out.status != Some(0) {
            let path = about(&String::from_utf8_lossy(&out.stderr));
            return Err(self.agent_error(&path, &out));
        }
        Ok(())
    }

    /// Atomic, verified write with exactly `mode` and the owner and group of `like`.
    pub async fn write_file_owned_like(
        &self,
        path: &Path,
        bytes: &[u8],
        mode: u32,
        like: &Path,
    ) -> Result<(), TransportError> {
        if self.is_direct() {
            let (like, data) = (like.to_path_buf(), bytes.to_vec());
            return self
                .on_local_disk(path, move |p| {
                    atomic_file::write_owned_like(&p, &data, mode, &like)
                })
                .await;
        }
        self.agent_write(path, bytes, &format!("{mode:o}"), Some(like), bytes.len())
            .await
    }

    /// Remove a file (a link itself, never its target); a file that is not there is fine.
    pub async fn remove_file(&self, path: &Path) -> Result<(), TransportError> {
        if self.is_direct() {
            return self.on_local_disk(path, |p| atomic_file::remove(&p)).await;
        }
        self.agent_ok("remove", path, &[], None).await.map(|_| ())
    }

    /// Create a directory with `mode` (an existing one is kept); whether it was created.
    pub async fn make_dir(&self, path: &Path, mode: u32) -> Result<bool, TransportError> {
        if self.is_direct() {
            return self
                .on_local_disk(path, move |p| atomic_file::make_dir(&p, mode))
                .await;
        }
        let out = self
            .agent_ok("mkdir", path, &[format!("{mode:o}")], None)
            .await?;
        Ok(out == b"created")
    }

    /// Remove a directory if it is there and empty.
    pub async fn remove_dir_if_empty(&self, path: &Path) -> Result<(), TransportError> {
        if self.is_direct() {
            return self
                .on_local_disk(path, |p| atomic_file::remove_dir_if_empty(&p))
                .await;
        }
        self.agent_ok("rmdir", path, &[], None).await.map(|_| ())
    }

    /// Run a blocking local file operation off the async threads.
    async fn on_local_disk<T: Send + 'static>(
        &self,
        path: &Path,
        op: impl FnOnce(PathBuf) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, TransportError> {
        let owned = path.to_path_buf();
        tokio::task::spawn_blocking(move || op(owned))
            .await
            .expect("file task")
            .map_err(|e| self.io_error(path, e))
    }

    fn io_error(&self, path: &Path, err: std::io::Error) -> TransportError {
        if let Some(too_large) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<atomic_file::TooLarge>())
        {
            return TransportError::TooLarge {
                host: self.describe(),
                path: path.to_path_buf(),
                size: too_large.size,
                limit: too_large.limit,
            };
        }
        let text = err.to_string();
        let prefix = format!("{}: ", path.display());
        self.file_error(path, text.strip_prefix(&prefix).unwrap_or(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::test_support::local;
    use std::time::{Duration, Instant};

    /// The two ways to a node's files: direct (Rust, fds) and the shell path (the Perl agent,
    /// as over SSH; `become env` runs it locally).
    fn both() -> [(Transport, &'static str); 2] {
        [
            (local(), "direct"),
            (Transport::local(vec![], Some("env".into())), "shell"),
        ]
    }

    /// A FIFO named `fifo` in `dir`: a name a read or write of a regular file must refuse.
    fn make_fifo(dir: &Path) -> PathBuf {
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        fifo
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A new file owned like another one, by both paths.
    #[tokio::test]
    async fn writes_a_file_owned_like_another_with_an_exact_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let like = dir.path().join("flags");
        std::fs::write(&like, "x").unwrap();
        for (transport, name) in both() {
            let path = dir.path().join(name);
            std::fs::write(&path, "old").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            transport
                .write_file_owned_like(&path, b"[].", 0o600, &like)
                .await
                .unwrap();
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
            assert_eq!(meta.uid(), std::fs::metadata(&like).unwrap().uid());
            assert_eq!(std::fs::read(&path).unwrap(), b"[].");
            transport.remove_file(&path).await.unwrap();
            transport.remove_file(&path).await.unwrap();
            assert!(!path.exists());
        }
    }

    /// Both paths edit through a trusted link, keep the mode, leave no temp file, and move every
    /// byte as it is (Latin-1, CR LF, NUL, no final newline).
    #[tokio::test]
    async fn file_operations_follow_trusted_links_keep_the_mode_and_move_raw_bytes() {
        use std::os::unix::fs::PermissionsExt;
        let bytes: &[u8] = b"## r\xe9seau\r\n-x 'quoted' $text\r\n\x00\xff\xfe-end";
        for (transport, name) in both() {
            let dir = tempfile::tempdir().unwrap();
            let real = dir.path().join("real args");
            let link = dir.path().join("vm.dist.args");
            std::fs::write(&real, "old").unwrap();
            std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
            std::os::unix::fs::symlink(&real, &link).unwrap();
            assert_eq!(transport.canonicalize(&link).await.unwrap(), real, "{name}");
            transport.write_file(&link, bytes, 0o600).await.unwrap();
            assert_eq!(transport.read_file(&link).await.unwrap(), bytes, "{name}");
            assert_eq!(std::fs::read(&real).unwrap(), bytes, "{name}");
            assert!(
                std::fs::symlink_metadata(&link)
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
            assert_eq!(
                std::fs::metadata(&real).unwrap().permissions().mode() & 0o777,
                0o640
            );
            assert!(transport.file_exists(&real).await);
            assert!(!transport.file_exists(&dir.path().join("missing")).await);
            assert!(
                !transport
                    .try_exists(&dir.path().join("no/such/dir/file"))
                    .await
                    .unwrap()
            );
            assert_eq!(entries(dir.path()), ["real args", "vm.dist.args"], "{name}");
            let sub = dir.path().join("distls-hybrid");
            assert!(transport.make_dir(&sub, 0o755).await.unwrap(), "{name}");
            assert!(!transport.make_dir(&sub, 0o755).await.unwrap(), "{name}");
            assert_eq!(
                std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
                0o755
            );
            transport.remove_dir_if_empty(&sub).await.unwrap();
            transport.remove_dir_if_empty(&sub).await.unwrap();
            assert!(!sub.exists(), "{name}");
        }
    }

    /// Reads take regular files only, up to a limit; the same refusal by both paths.
    #[tokio::test]
    async fn reads_refuse_devices_fifos_and_files_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 1000]).unwrap();
        let fifo = make_fifo(dir.path());
        for (transport, name) in both() {
            match transport.read_file_limited(&big, 999).await {
                Err(TransportError::TooLarge { size, limit, .. }) => {
                    assert_eq!((size, limit), (1000, 999), "{name}")
                }
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(
                transport.read_file_limited(&big, 1000).await.unwrap().len(),
                1000
            );
            let err = transport
                .read_file(Path::new("/dev/zero"))
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("/dev/zero: is not a regular file (a character device)"),
                "{name}: {err}"
            );
            let started = Instant::now();
            let err = transport.read_file(&fifo).await.unwrap_err().to_string();
            assert!(
                err.contains("is not a regular file (a FIFO)"),
                "{name}: {err}"
            );
            assert!(started.elapsed() < Duration::from_secs(10), "{name}");
            let err = transport
                .write_file(&fifo, b"x", 0o600)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("(a FIFO)"), "{name}: {err}");
        }
    }

    /// The plan's env reaches commands, not the file agent: a PERL5OPT there changes nothing.
    #[tokio::test]
    async fn the_file_agent_ignores_perl_options_in_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let env = vec![
            ("PERL5OPT".to_owned(), "-Mdistls_no_such_module".to_owned()),
            ("PERL_UNICODE".to_owned(), "SDA".to_owned()),
        ];
        let shell = Transport::local(env, Some("env".into()));
        shell.write_file(&path, b"\xe9\r\n", 0o600).await.unwrap();
        assert_eq!(shell.read_file(&path).await.unwrap(), b"\xe9\r\n");
    }

    /// A write whose stream stops early renames nothing: the old file stays, no temp file.
    #[tokio::test]
    async fn a_write_cut_short_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.dist.args");
        std::fs::write(&path, "old text\n").unwrap();
        let shell = Transport::local(vec![], Some("env".into()));
        let new = b"-proto_dist inet_tls\n".repeat(5000);
        let err = shell
            .write_file_cut_short(&path, &new, 4096)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("received 4096 of {} bytes", new.len())),
            "{err}"
        );
        assert!(err.contains("nothing changed"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old text\n");
        assert_eq!(entries(dir.path()), ["vm.dist.args"]);
        shell
            .write_file_cut_short(&path, &new, new.len())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), new);
    }

    /// Files written together: all renamed, modes and owners kept, no temp file left; and when
    /// one of them cannot be written, none is changed.
    #[tokio::test]
    async fn files_written_together_change_all_or_none() {
        use std::os::unix::fs::PermissionsExt;
        for (transport, name) in both() {
            let dir = tempfile::tempdir().unwrap();
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert, "old cert").unwrap();
            std::fs::write(&key, "old key").unwrap();
            std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
            transport
                .write_files_together(&[(&cert, b"new cert\r\n\xff"), (&key, b"new key")], 0o600)
                .await
                .unwrap();
            assert_eq!(std::fs::read(&cert).unwrap(), b"new cert\r\n\xff", "{name}");
            assert_eq!(std::fs::read(&key).unwrap(), b"new key", "{name}");
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!((mode(&cert), mode(&key)), (0o644, 0o640), "{name}");
            assert_eq!(entries(dir.path()), ["cert.pem", "key.pem"], "{name}");

            let fifo = make_fifo(dir.path());
            let err = transport
                .write_files_together(&[(&cert, b"newer cert"), (&fifo, b"x")], 0o600)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("(a FIFO)"), "{name}: {err}");
            assert!(
                !err.contains("cert.pem"),
                "{name}: names the FIFO only: {err}"
            );
            assert_eq!(std::fs::read(&cert).unwrap(), b"new cert\r\n\xff", "{name}");
            assert_eq!(
                entries(dir.path()),
                ["cert.pem", "fifo", "key.pem"],
                "{name}"
            );

            let err = transport
                .write_files_together(&[(&key, b"a"), (&cert, b"b"), (&key, b"c")], 0o600)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("key.pem: named twice in one change"),
                "{name}: {err}"
            );
            assert_eq!(std::fs::read(&key).unwrap(), b"new key", "{name}");
            assert_eq!(
                entries(dir.path()),
                ["cert.pem", "fifo", "key.pem"],
                "{name}"
            );
        }
    }

    /// A link in a directory others may write into is not followed, whoever owns it: refused
    /// with the link, the culprit and the fix, by both paths; nothing written.
    #[tokio::test]
    async fn a_link_in_a_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret").unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let link = open.join("vm.dist.args");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        for (transport, name) in both() {
            for err in [
                transport.read_file(&link).await.unwrap_err(),
                transport.write_file(&link, b"x", 0o644).await.unwrap_err(),
                transport.canonicalize(&link).await.unwrap_err(),
            ] {
                let err = err.to_string();
                assert!(
                    err.contains(&format!(
                        "{}: a symbolic link distls does not follow: {} is writable by group or others (mode 0777)",
                        link.display(),
                        open.display()
                    )),
                    "{name}: {err}"
                );
                assert!(err.contains("hint: check where it points"), "{name}: {err}");
            }
            assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
            // Removing the link itself is fine: it never touches the target.
            transport.remove_file(&link).await.unwrap();
            std::os::unix::fs::symlink(&victim, &link).unwrap();
        }
    }
}
