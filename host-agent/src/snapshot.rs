//! Snapshots of a pod's volumes: `/workspace` and the home directory, as a
//! gzip-compressed tar archive with its size and SHA-256, kept on the pod's
//! host under `{data}/snapshots/{pod}/`:
//!
//! ```text
//! {id}.tar.gz    the archive (entries under workspace/ and home/)
//! {id}.json      its [`SnapshotInfo`]
//! ```
//!
//! Snapshots are taken and restored while the pod is stopped: nothing in
//! the pod can change a file into a link to a host path while the host
//! reads it. Links are archived as links, never followed; the holes of
//! sparse files are skipped and a hard-linked file is read once, so a
//! snapshot reads at most about the disk's size; sockets, FIFOs and
//! devices are left out and listed in [`SnapshotInfo::skipped`]. Owners,
//! modes and times survive a restore. A restore checks the checksum first,
//! unpacks beside the volumes, commits with a journal and swaps each volume
//! in atomically; [`recover`] finishes or undoes a restore a crash cut
//! short.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::AgentError;

/// What a snapshot is (a wire type of the host contract).
pub use pinacle_host_api::SnapshotInfo;

/// How many left-out entries a snapshot names (the rest are counted).
pub const MAX_SKIPPED_NAMED: usize = 20;

/// The volumes a snapshot holds, as directory names in the pod's disk.
pub const VOLUMES: &[&str] = &["workspace", "home"];

/// How many automatic snapshots are kept per pod (older ones are removed).
pub const KEEP_AUTO: usize = 3;

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn not_found(id: &str) -> AgentError {
    AgentError::SnapshotNotFound(format!("no snapshot {id:?}"))
}

/// Every snapshot in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<SnapshotInfo> {
    let mut out: Vec<SnapshotInfo> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|raw| serde_json::from_slice(&raw).ok())
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// One snapshot's record.
pub fn find(dir: &Path, id: &str) -> Result<SnapshotInfo, AgentError> {
    if !valid_id(id) {
        return Err(not_found(id));
    }
    let raw = std::fs::read(dir.join(format!("{id}.json"))).map_err(|_| not_found(id))?;
    serde_json::from_slice(&raw).map_err(|e| AgentError::Snapshot(format!("snapshot {id}: {e}")))
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What a snapshot walk keeps track of.
struct Walk {
    /// Archive path of the first name of each multiply-linked file seen,
    /// by (device, inode): later names are stored as hard links.
    linked: std::collections::HashMap<(u64, u64), PathBuf>,
    /// Bytes of file data (allocated blocks: holes cost nothing) left to read.
    budget: u64,
    skipped: Vec<String>,
    skipped_count: usize,
}

/// Appends the tree at `src` under the archive name `name`: files by their
/// data only (holes of sparse files are stored as holes), every further
/// name of a hard-linked file as a link, links as links; Unix sockets,
/// FIFOs and devices are left out (never opened) and noted. Owners, modes
/// and times are kept.
fn append_tree<W: Write>(tar: &mut tar::Builder<W>, name: &str, src: &Path, walk: &mut Walk) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut stack = vec![(src.to_path_buf(), PathBuf::from(name))];
    while let Some((path, archived)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            tar.append_dir(&archived, &path)?;
            let mut children: Vec<_> = std::fs::read_dir(&path)?.collect::<Result<_, _>>()?;
            children.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
            stack.extend(children.into_iter().map(|e| (e.path(), archived.join(e.file_name()))));
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = walk.linked.get(&key) {
                    let mut header = tar::Header::new_gnu();
                    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    tar.append_link(&mut header, &archived, first)?;
                    continue;
                }
                walk.linked.insert(key, archived.clone());
            }
            let cost = meta.blocks() * 512;
            if cost > walk.budget {
                return Err(std::io::Error::other(format!(
                    "the volumes hold more file data than the pod's disk can ({} bytes at {})",
                    meta.len(),
                    archived.display()
                )));
            }
            walk.budget -= cost;
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
                .open(&path)?;
            if !file.metadata()?.is_file() {
                return Err(std::io::Error::other(format!("{} changed while it was archived", archived.display())));
            }
            tar.append_file(&archived, &mut file)?;
        } else if kind.is_symlink() {
            // as a link (follow_symlinks is off)
            tar.append_path_with_name(&path, &archived)?;
        } else {
            // sockets, FIFOs and devices: nothing a restore could bring back
            walk.skipped_count += 1;
            if walk.skipped.len() < MAX_SKIPPED_NAMED {
                walk.skipped.push(archived.display().to_string());
            }
        }
    }
    Ok(())
}

/// Archives the volumes under `disk_root` (a mounted, idle pod disk) into
/// `dir`. Blocking: run it off the async threads. Reading costs at most
/// about the disk's size: sparse files' holes are skipped, hard links are
/// stored once, and more data than the disk holds is refused.
pub fn create(disk_root: &Path, dir: &Path, name: &str, auto: bool, image: &str) -> Result<SnapshotInfo, AgentError> {
    std::fs::create_dir_all(dir).map_err(AgentError::io("creating", dir))?;
    let now = chrono::Utc::now();
    let id = format!("{}-{:04x}", now.format("%Y%m%dT%H%M%S%.3fZ").to_string().replace('.', ""), rand::random::<u16>());
    let partial = dir.join(format!("{id}.tar.gz.partial"));
    let file = std::fs::File::create(&partial).map_err(AgentError::io("creating", &partial))?;
    let hashing = Hashing { inner: std::io::BufWriter::new(file), hash: Sha256::new(), bytes: 0 };
    let gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.sparse(true);
    tar.mode(tar::HeaderMode::Complete);
    let disk_size = nix::sys::statvfs::statvfs(disk_root).map(|st| st.blocks() * st.fragment_size()).unwrap_or(u64::MAX);
    let mut walk = Walk { linked: Default::default(), budget: disk_size, skipped: Vec::new(), skipped_count: 0 };
    let written = (|| {
        for v in VOLUMES {
            let src = disk_root.join(v);
            if std::fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir()) {
                append_tree(&mut tar, v, &src, &mut walk)?;
            }
        }
        let gz = tar.into_inner()?;
        let mut hashing = gz.finish()?;
        hashing.flush()?;
        Ok::<_, std::io::Error>(hashing)
    })();
    let hashing = match written {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(AgentError::Snapshot(format!("archiving the pod's volumes: {e}")));
        }
    };
    let info = SnapshotInfo {
        id: id.clone(),
        name: if name.is_empty() { if auto { "auto".into() } else { id.clone() } } else { name.to_owned() },
        created_at: now.to_rfc3339(),
        size_bytes: hashing.bytes,
        sha256: hex::encode(hashing.hash.finalize()),
        auto,
        image: image.to_owned(),
        skipped: {
            let mut names = walk.skipped;
            if walk.skipped_count > names.len() {
                names.push(format!("and {} more", walk.skipped_count - names.len()));
            }
            names
        },
    };
    let archive = dir.join(format!("{id}.tar.gz"));
    std::fs::rename(&partial, &archive).map_err(AgentError::io("installing", &archive))?;
    let meta = serde_json::to_vec_pretty(&info).map_err(|e| AgentError::Snapshot(e.to_string()))?;
    std::fs::write(dir.join(format!("{id}.json")), meta).map_err(AgentError::io("writing", dir))?;
    Ok(info)
}

/// Removes automatic snapshots beyond the newest [`KEEP_AUTO`].
pub fn prune_auto(dir: &Path) {
    let auto: Vec<SnapshotInfo> = list(dir).into_iter().filter(|s| s.auto).collect();
    for old in auto.iter().take(auto.len().saturating_sub(KEEP_AUTO)) {
        let _ = delete(dir, &old.id);
    }
}

/// Checks the archive of `id` against its recorded size and checksum.
pub fn verify(dir: &Path, id: &str) -> Result<SnapshotInfo, AgentError> {
    let info = find(dir, id)?;
    let path = dir.join(format!("{id}.tar.gz"));
    let mut f = std::fs::File::open(&path).map_err(AgentError::io("opening", &path))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(AgentError::io("reading", &path))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    if bytes != info.size_bytes || hex::encode(hash.finalize()) != info.sha256 {
        return Err(AgentError::Snapshot(format!("snapshot {id} is damaged: its checksum does not match; it was not restored")));
    }
    Ok(info)
}

/// Where a restore unpacks, on the pod's disk (out of the pod's sight).
const STAGING: &str = ".restore";

/// The journal of a restore, in [`STAGING`]: written (and synced) once the
/// snapshot is unpacked completely; it names the inode of each unpacked
/// volume. From then on the restore is rolled forward whatever happens;
/// before, it is rolled back.
const JOURNAL: &str = "READY";

#[derive(serde::Serialize, serde::Deserialize)]
struct Journal {
    snapshot: String,
    /// `(volume, inode of the unpacked directory)`.
    volumes: Vec<(String, u64)>,
}

fn inode(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).map(|m| m.ino())
}

/// Swaps two directories in one step (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    nix::fcntl::renameat2(None, a, None, b, nix::fcntl::RenameFlags::RENAME_EXCHANGE).map_err(std::io::Error::from)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Steps of a restore, for [`restore_steps`]: unpacked, committed, each
/// volume swapped, journal gone, old volumes gone. Each may be the last
/// one a crash lets happen.
#[cfg(test)]
const STEPS: usize = 4 + VOLUMES.len();

/// Replaces the volumes under `disk_root` with snapshot `id`'s. Blocking.
///
/// Crash-safe: the snapshot is unpacked beside the volumes; a journal then
/// commits the restore, and each volume is swapped with its restored copy
/// atomically (`RENAME_EXCHANGE`). [`recover`], run whenever the disk is
/// mounted, finishes a committed restore a crash cut short, or removes an
/// uncommitted one: the volumes are always all the old or all the new ones,
/// never missing.
pub fn restore(disk_root: &Path, dir: &Path, id: &str) -> Result<SnapshotInfo, AgentError> {
    restore_steps(disk_root, dir, id, usize::MAX)
}

/// [`restore`], stopping (as a crash would) after `steps` steps.
fn restore_steps(disk_root: &Path, dir: &Path, id: &str, steps: usize) -> Result<SnapshotInfo, AgentError> {
    recover(disk_root)?;
    let info = verify(dir, id)?;
    let staging = disk_root.join(STAGING);
    crate::rootfs::remove_tree(&staging)?;
    std::fs::create_dir_all(&staging).map_err(AgentError::io("creating", &staging))?;
    let path = dir.join(format!("{id}.tar.gz"));
    let unpacked = (|| {
        let f = std::fs::File::open(&path)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(false);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let entry_path = entry.path()?.into_owned();
            let top = entry_path.components().next().and_then(|c| c.as_os_str().to_str().map(str::to_owned));
            if !top.as_deref().is_some_and(|t| VOLUMES.contains(&t)) {
                return Err(std::io::Error::other(format!("unexpected entry {}", entry_path.display())));
            }
            // unpack_in refuses entries that would land outside `staging`
            entry.unpack_in(&staging)?;
        }
        Ok::<_, std::io::Error>(())
    })();
    if let Err(e) = unpacked {
        let _ = crate::rootfs::remove_tree(&staging);
        return Err(AgentError::Snapshot(format!("unpacking snapshot {id}: {e}; the pod's volumes are unchanged")));
    }
    // step 1: unpacked. Both sides of every swap must exist.
    let mut journal = Journal { snapshot: id.to_owned(), volumes: Vec::new() };
    for v in VOLUMES {
        for d in [staging.join(v), disk_root.join(v)] {
            if !d.exists() {
                std::fs::create_dir_all(&d).map_err(AgentError::io("creating", &d))?;
            }
        }
        journal.volumes.push((v.to_string(), inode(&staging.join(v)).map_err(AgentError::io("reading", &staging))?));
    }
    if steps <= 1 {
        return Ok(info);
    }
    // step 2: everything unpacked is on the disk before the journal says so
    let disk = std::fs::File::open(disk_root).map_err(AgentError::io("opening", disk_root))?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&disk)).map_err(|e| AgentError::io("syncing", disk_root)(e.into()))?;
    let json = serde_json::to_vec(&journal).map_err(|e| AgentError::Snapshot(e.to_string()))?;
    let tmp = staging.join(format!("{JOURNAL}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(AgentError::io("writing", &tmp))?;
    f.write_all(&json).and_then(|()| f.sync_all()).map_err(AgentError::io("writing", &tmp))?;
    std::fs::rename(&tmp, staging.join(JOURNAL)).map_err(AgentError::io("writing", &staging))?;
    sync_dir(&staging).map_err(AgentError::io("syncing", &staging))?;
    if steps <= 2 {
        return Ok(info);
    }
    // steps 3..: the swaps and the clean-up, as recovery would do them
    roll_forward(disk_root, &journal, steps - 2)?;
    Ok(info)
}

/// Finishes a committed restore: swaps each volume not yet swapped, then
/// drops the journal and the old volumes. Stops after `steps` steps.
fn roll_forward(disk_root: &Path, journal: &Journal, steps: usize) -> Result<(), AgentError> {
    let staging = disk_root.join(STAGING);
    let mut done = 0;
    for (v, fresh) in &journal.volumes {
        let live = disk_root.join(v);
        if inode(&live).ok() != Some(*fresh) {
            exchange(&staging.join(v), &live).map_err(AgentError::io("restoring", &live))?;
        }
        done += 1;
        if done >= steps {
            return Ok(());
        }
    }
    sync_dir(disk_root).map_err(AgentError::io("syncing", disk_root))?;
    // the journal goes first: without it, what is left in staging is old
    let journal_file = staging.join(JOURNAL);
    match std::fs::remove_file(&journal_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(AgentError::io("removing", &journal_file)(e)),
    }
    sync_dir(&staging).map_err(AgentError::io("syncing", &staging))?;
    if done + 1 >= steps {
        return Ok(());
    }
    crate::rootfs::remove_tree(&staging)
}

/// Settles a restore a crash interrupted on the disk mounted at
/// `disk_root`: a committed one (its journal is there) is finished, an
/// uncommitted one is removed; volumes an older agent left renamed aside
/// (`.old-NAME`, its restore swapped by two renames) are put back. Run it
/// before anything uses the volumes (the agent does, on every mount).
pub fn recover(disk_root: &Path) -> Result<(), AgentError> {
    for v in VOLUMES {
        let (live, old) = (disk_root.join(v), disk_root.join(format!(".old-{v}")));
        if old.exists() && !live.exists() {
            tracing::warn!(volume = %live.display(), "putting back a volume an interrupted restore moved aside");
            std::fs::rename(&old, &live).map_err(AgentError::io("recovering", &live))?;
        }
    }
    let staging = disk_root.join(STAGING);
    if !staging.exists() {
        return Ok(());
    }
    let journal = std::fs::read(staging.join(JOURNAL)).ok().and_then(|raw| serde_json::from_slice::<Journal>(&raw).ok());
    match journal {
        Some(j) => {
            tracing::warn!(disk = %disk_root.display(), snapshot = %j.snapshot, "finishing a restore that was interrupted");
            roll_forward(disk_root, &j, usize::MAX)
        }
        None => crate::rootfs::remove_tree(&staging),
    }
}

/// Deletes snapshot `id`.
pub fn delete(dir: &Path, id: &str) -> Result<SnapshotInfo, AgentError> {
    let info = find(dir, id)?;
    for ext in ["tar.gz", "json"] {
        let p: PathBuf = dir.join(format!("{id}.{ext}"));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AgentError::io("removing", &p)(e)),
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_keep_links_as_links_and_refuse_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("disk");
        std::fs::create_dir_all(disk.join("workspace/src")).unwrap();
        std::fs::create_dir_all(disk.join("home")).unwrap();
        std::fs::write(disk.join("workspace/src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(disk.join("home/.bashrc"), "alias ll='ls -l'\n").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", disk.join("workspace/link")).unwrap();
        let snaps = tmp.path().join("snaps");
        let info = create(&disk, &snaps, "before", false, "base").unwrap();
        assert_eq!(info.name, "before");
        assert_eq!(info.size_bytes, std::fs::metadata(snaps.join(format!("{}.tar.gz", info.id))).unwrap().len());
        assert_eq!(list(&snaps), vec![info.clone()]);

        std::fs::write(disk.join("workspace/src/main.rs"), "changed").unwrap();
        std::fs::write(disk.join("workspace/new.txt"), "new").unwrap();
        restore(&disk, &snaps, &info.id).unwrap();
        assert_eq!(std::fs::read_to_string(disk.join("workspace/src/main.rs")).unwrap(), "fn main() {}\n");
        assert!(!disk.join("workspace/new.txt").exists());
        assert_eq!(std::fs::read_link(disk.join("workspace/link")).unwrap(), Path::new("/etc/hostname"));
        assert_eq!(std::fs::read_to_string(disk.join("home/.bashrc")).unwrap(), "alias ll='ls -l'\n");

        // a damaged archive is refused and the volumes stay as they are
        let archive = snaps.join(format!("{}.tar.gz", info.id));
        let mut bytes = std::fs::read(&archive).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&archive, bytes).unwrap();
        std::fs::write(disk.join("workspace/keep.txt"), "keep").unwrap();
        let err = restore(&disk, &snaps, &info.id).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        assert!(disk.join("workspace/keep.txt").exists());

        assert!(find(&snaps, "../etc").is_err());
        delete(&snaps, &info.id).unwrap();
        assert!(list(&snaps).is_empty());
    }

    fn tree_of(dir: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for v in VOLUMES {
            let mut stack = vec![dir.join(v)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap().flatten() {
                    let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                    if e.file_type().unwrap().is_dir() {
                        stack.push(e.path());
                        out.push((rel, "/".into()));
                    } else {
                        out.push((rel, std::fs::read_to_string(e.path()).unwrap()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    fn set_state(disk: &Path, which: &str) {
        for v in VOLUMES {
            let _ = std::fs::remove_dir_all(disk.join(v));
            std::fs::create_dir_all(disk.join(v).join("sub")).unwrap();
            std::fs::write(disk.join(v).join("sub/file"), format!("{which} {v}")).unwrap();
            std::fs::write(disk.join(v).join(format!("only-{which}")), which).unwrap();
        }
    }

    #[test]
    fn a_restore_cut_short_at_any_step_ends_all_old_or_all_new() {
        let tmp = tempfile::tempdir().unwrap();
        let (disk, snaps) = (tmp.path().join("disk"), tmp.path().join("snaps"));
        set_state(&disk, "new");
        let new_state = tree_of(&disk);
        let info = create(&disk, &snaps, "new", false, "base").unwrap();
        set_state(&disk, "old");
        let old_state = tree_of(&disk);
        assert_ne!(old_state, new_state);
        for step in 0..=STEPS {
            set_state(&disk, "old");
            restore_steps(&disk, &snaps, &info.id, step).unwrap();
            // the agent restarts: the disk is mounted, recovery runs first
            recover(&disk).unwrap();
            let now = tree_of(&disk);
            // committed (journal written) from step 2 on: rolled forward
            let want = if step >= 2 { &new_state } else { &old_state };
            assert_eq!(&now, want, "cut after step {step}");
            assert!(!disk.join(STAGING).exists(), "step {step}: staging left behind");
            // a second recovery changes nothing
            recover(&disk).unwrap();
            assert_eq!(&tree_of(&disk), want);
        }
        // a volume an older agent moved aside comes back
        set_state(&disk, "old");
        std::fs::rename(disk.join("workspace"), disk.join(".old-workspace")).unwrap();
        recover(&disk).unwrap();
        assert_eq!(tree_of(&disk), old_state);
    }

    #[test]
    fn snapshots_skip_holes_and_sockets_keep_hard_links_owners_and_modes() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !nix::unistd::geteuid().is_root() {
            panic!("ownership tests run as root (CI does)");
        }
        let tmp = tempfile::tempdir().unwrap();
        let (disk, snaps) = (tmp.path().join("disk"), tmp.path().join("snaps"));
        std::fs::create_dir_all(disk.join("workspace")).unwrap();
        std::fs::create_dir_all(disk.join("home")).unwrap();
        // a 1 TiB file of holes and a few bytes
        let big = std::fs::File::create(disk.join("workspace/big")).unwrap();
        big.set_len(1 << 40).unwrap();
        std::os::unix::fs::FileExt::write_at(&big, b"end", (1 << 40) - 3).unwrap();
        drop(big);
        // a socket in the home, a FIFO, a file with another owner and mode, two names of one file
        let _socket = std::os::unix::net::UnixListener::bind(disk.join("home/agent.sock")).unwrap();
        nix::unistd::mkfifo(&disk.join("workspace/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(disk.join("workspace/owned"), "mine").unwrap();
        std::fs::set_permissions(disk.join("workspace/owned"), std::fs::Permissions::from_mode(0o640)).unwrap();
        nix::unistd::chown(&disk.join("workspace/owned"), Some(nix::unistd::Uid::from_raw(1000)), Some(nix::unistd::Gid::from_raw(1000))).unwrap();
        std::fs::write(disk.join("workspace/one"), vec![7u8; 100_000]).unwrap();
        std::fs::hard_link(disk.join("workspace/one"), disk.join("home/two")).unwrap();
        let t0 = std::time::Instant::now();
        let info = create(&disk, &snaps, "", false, "base").unwrap();
        eprintln!("snapshot of a 1 TiB sparse file: {:?}, {} bytes", t0.elapsed(), info.size_bytes);
        assert!(info.size_bytes < 1 << 20, "holes were archived: {} bytes", info.size_bytes);
        assert_eq!(info.skipped, vec!["workspace/fifo".to_string(), "home/agent.sock".to_string()]);
        // the hard-linked file is stored once
        std::fs::remove_dir_all(disk.join("workspace")).unwrap();
        std::fs::remove_dir_all(disk.join("home")).unwrap();
        std::fs::create_dir_all(disk.join("workspace")).unwrap();
        restore(&disk, &snaps, &info.id).unwrap();
        let big = std::fs::metadata(disk.join("workspace/big")).unwrap();
        assert_eq!(big.len(), 1 << 40);
        assert!(big.blocks() * 512 < 1 << 20, "restored without holes: {} bytes", big.blocks() * 512);
        let owned = std::fs::metadata(disk.join("workspace/owned")).unwrap();
        assert_eq!((owned.uid(), owned.gid(), owned.mode() & 0o777), (1000, 1000, 0o640));
        let (one, two) = (std::fs::metadata(disk.join("workspace/one")).unwrap(), std::fs::metadata(disk.join("home/two")).unwrap());
        assert_eq!((one.ino(), one.nlink()), (two.ino(), 2), "hard links restored as one file");
        assert!(!disk.join("home/agent.sock").exists());
    }

    #[test]
    fn only_the_newest_automatic_snapshots_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("disk");
        std::fs::create_dir_all(disk.join("workspace")).unwrap();
        let snaps = tmp.path().join("snaps");
        let manual = create(&disk, &snaps, "mine", false, "base").unwrap();
        for _ in 0..5 {
            create(&disk, &snaps, "", true, "base").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        prune_auto(&snaps);
        let left = list(&snaps);
        assert_eq!(left.iter().filter(|s| s.auto).count(), KEEP_AUTO);
        assert!(left.contains(&manual));
    }
}
