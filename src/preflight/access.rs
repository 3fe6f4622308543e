//! Who runs the node, and whether that user can read a file: decided from owners and mode bits
//! (of the file and of every directory above it) reported by `stat` on the host.
//!
//! Root's override (CAP_DAC_OVERRIDE) is deliberately not counted: a file whose mode grants the
//! node's user no read permission is a mistake that breaks the day the service stops running as
//! root, and it is the only way the check means something when distls itself runs as root.

use crate::shell::shell_quote;
use crate::transport::Transport;
use std::path::{Path, PathBuf};
use std::time::Duration;

const STAT_TIMEOUT: Duration = Duration::from_secs(10);

/// The credentials the node runs with, and how distls learnt them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUser {
    pub uid: u32,
    pub gids: Vec<u32>,
    pub source: String,
}

/// Owner, group and permission bits of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub uid: u32,
    pub gid: u32,
    pub bits: u32,
}

impl Mode {
    /// The rwx bits that apply to `user` (owner, else group, else other), as `0o7` at most.
    fn class_bits(&self, user: &ServiceUser) -> u32 {
        if user.uid == self.uid {
            (self.bits >> 6) & 0o7
        } else if user.gids.contains(&self.gid) {
            (self.bits >> 3) & 0o7
        } else {
            self.bits & 0o7
        }
    }
}

/// Whether `user` can read the last path of `chain`, every earlier one being a directory that
/// must be searchable. `Err` names the path that stops it.
pub fn can_read(user: &ServiceUser, chain: &[(PathBuf, Mode)]) -> Result<(), String> {
    let Some(((file, file_mode), dirs)) = chain.split_last() else {
        return Err("nothing to check".to_string());
    };
    for (dir, mode) in dirs {
        if mode.class_bits(user) & 0o1 == 0 {
            return Err(format!(
                "directory {} (mode {:03o}, owner {}:{}) is not searchable",
                dir.display(),
                mode.bits,
                mode.uid,
                mode.gid
            ));
        }
    }
    if file_mode.class_bits(user) & 0o4 == 0 {
        return Err(format!(
            "{} (mode {:03o}, owner {}:{}) grants no read permission",
            file.display(),
            file_mode.bits,
            file_mode.uid,
            file_mode.gid
        ));
    }
    Ok(())
}

/// `path` and every directory above it, outermost first, with their modes (symlinks followed).
pub async fn mode_chain(
    transport: &Transport,
    path: &Path,
) -> Result<Vec<(PathBuf, Mode)>, String> {
    // A relative path ends in an empty ancestor: the working directory, which is not checked.
    let mut paths: Vec<PathBuf> = path
        .ancestors()
        .filter(|ancestor| !ancestor.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect();
    paths.reverse();
    if transport.is_direct() {
        // This host, as this user: ask the kernel instead of starting a `stat` per file.
        return paths
            .into_iter()
            .map(|path| {
                use std::os::unix::fs::MetadataExt;
                let meta = std::fs::metadata(&path)
                    .map_err(|e| format!("stat: cannot stat '{}': {e}", path.display()))?;
                let mode = Mode {
                    uid: meta.uid(),
                    gid: meta.gid(),
                    bits: meta.mode() & 0o7777,
                };
                Ok((path, mode))
            })
            .collect();
    }
    let quoted: Vec<String> = paths
        .iter()
        .map(|p| shell_quote(&p.display().to_string()))
        .collect();
    let command = format!("stat -L -c '%u %g %a' -- {}", quoted.join(" "));
    let outcome = transport
        .run(&command, STAT_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if !outcome.success() {
        return Err(outcome.tail());
    }
    let modes: Vec<Mode> = outcome.stdout.lines().filter_map(parse_mode).collect();
    if modes.len() != paths.len() {
        return Err(format!("unexpected output from stat: {}", outcome.stdout));
    }
    Ok(paths.into_iter().zip(modes).collect())
}

fn parse_mode(line: &str) -> Option<Mode> {
    let mut words = line.split_whitespace();
    Some(Mode {
        uid: words.next()?.parse().ok()?,
        gid: words.next()?.parse().ok()?,
        bits: u32::from_str_radix(words.next()?, 8).ok()?,
    })
}

/// The user of the running VM (from `/proc/<pid>/status`), or else the owner of `owned_file`
/// with that user's groups: the release belongs to the user that runs it.
pub async fn service_user(
    transport: &Transport,
    os_pid: Option<u32>,
    owned_file: &Path,
) -> Result<ServiceUser, String> {
    if let Some(pid) = os_pid
        && let Ok(status) = transport
            .read_file(Path::new(&format!("/proc/{pid}/status")))
            .await
        && let Some(user) = parse_proc_status(&String::from_utf8_lossy(&status))
    {
        return Ok(user);
    }
    let chain = mode_chain(transport, owned_file).await?;
    let owner = chain.last().map(|(_, mode)| mode.uid).unwrap_or(0);
    let gids = groups_of(transport, owner).await?;
    Ok(ServiceUser {
        uid: owner,
        gids,
        // No path or pid in the text: the same finding on every node then shares one row.
        source: format!(
            "uid {owner}, the owner of the node's {}",
            owned_file.file_name().map_or_else(
                || owned_file.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        ),
    })
}

/// The groups of `uid` on the transport's host, asked once per host and user in a run: every
/// node of a big plan usually shares one owner, and its nodes are checked concurrently (so the
/// first asker's answer is awaited by the others, not asked again).
async fn groups_of(transport: &Transport, uid: u32) -> Result<Vec<u32>, String> {
    type Cell = std::sync::Arc<tokio::sync::OnceCell<Vec<u32>>>;
    type Known = std::sync::Mutex<std::collections::HashMap<(String, u32), Cell>>;
    static KNOWN: std::sync::OnceLock<Known> = std::sync::OnceLock::new();
    let cell = KNOWN
        .get_or_init(Default::default)
        .lock()
        .expect("not poisoned")
        .entry((transport.site(), uid))
        .or_default()
        .clone();
    cell.get_or_try_init(|| async {
        let groups = transport
            .run(&format!("id -G {uid}"), STAT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        Ok(groups
            .stdout
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect())
    })
    .await
    .cloned()
}

/// Effective uid and gid, plus supplementary groups, from `/proc/<pid>/status`.
fn parse_proc_status(status: &str) -> Option<ServiceUser> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
    };
    let uid: u32 = field("Uid:")?.get(1)?.parse().ok()?;
    let gid: u32 = field("Gid:")?.get(1)?.parse().ok()?;
    let mut gids: Vec<u32> = field("Groups:")
        .unwrap_or_default()
        .iter()
        .filter_map(|g| g.parse().ok())
        .collect();
    gids.push(gid);
    Some(ServiceUser {
        uid,
        gids,
        source: format!("uid {uid}, the user of the node's running VM"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, gids: &[u32]) -> ServiceUser {
        ServiceUser {
            uid,
            gids: gids.to_vec(),
            source: String::new(),
        }
    }

    fn chain(file_mode: u32, dir_mode: u32) -> Vec<(PathBuf, Mode)> {
        vec![
            (
                PathBuf::from("/etc"),
                Mode {
                    uid: 0,
                    gid: 0,
                    bits: dir_mode,
                },
            ),
            (
                PathBuf::from("/etc/key.pem"),
                Mode {
                    uid: 1000,
                    gid: 1000,
                    bits: file_mode,
                },
            ),
        ]
    }

    #[test]
    fn owner_group_and_other_classes_apply() {
        assert!(can_read(&user(1000, &[]), &chain(0o600, 0o755)).is_ok());
        assert!(can_read(&user(2000, &[1000]), &chain(0o640, 0o755)).is_ok());
        assert!(can_read(&user(2000, &[]), &chain(0o640, 0o755)).is_err());
        assert!(can_read(&user(2000, &[]), &chain(0o644, 0o755)).is_ok());
    }

    #[test]
    fn root_gets_no_override() {
        let err = can_read(&user(0, &[0]), &chain(0o000, 0o755)).unwrap_err();
        assert!(err.contains("mode 000"), "{err}");
    }

    #[test]
    fn an_unsearchable_directory_blocks() {
        let err = can_read(&user(1000, &[]), &chain(0o600, 0o700)).unwrap_err();
        assert!(err.starts_with("directory /etc"), "{err}");
    }

    #[tokio::test]
    async fn modes_of_a_relative_path_and_its_directories() {
        let chain = mode_chain(
            &Transport::local(Vec::new(), None),
            Path::new("src/preflight/access.rs"),
        )
        .await
        .unwrap();
        let paths: Vec<&Path> = chain.iter().map(|(path, _)| path.as_path()).collect();
        assert_eq!(
            paths,
            [
                Path::new("src"),
                Path::new("src/preflight"),
                Path::new("src/preflight/access.rs")
            ]
        );
        assert_eq!(chain[2].1.bits & 0o400, 0o400, "{chain:?}");
    }

    #[test]
    fn proc_status_gives_effective_ids_and_groups() {
        let status =
            "Name:\tbeam.smp\nUid:\t0\t999\t999\t999\nGid:\t0\t998\t998\t998\nGroups:\t4 27 \n";
        let user = parse_proc_status(status).unwrap();
        assert_eq!(user.uid, 999);
        assert_eq!(user.gids, vec![4, 27, 998]);
    }
}
