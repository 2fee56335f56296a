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
//! reads it. Links are archived as links, never followed. A restore checks
//! the checksum first and swaps the volumes in only when the whole archive
//! unpacked.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::AgentError;

/// What a snapshot is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    /// `20261122T073000Z-1a2b` (sorts by time).
    pub id: String,
    /// The user's label; `auto` for one taken on stop.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// Bytes of the compressed archive.
    pub size_bytes: u64,
    /// SHA-256 of the archive, hex.
    pub sha256: String,
    /// Taken automatically when the pod stopped.
    pub auto: bool,
    /// The image the pod ran when it was taken.
    pub image: String,
}

/// The volumes a snapshot holds, as directory names in the pod's disk.
pub const VOLUMES: &[&str] = &["workspace", "home"];

/// How many automatic snapshots are kept per pod (older ones are removed).
pub const KEEP_AUTO: usize = 3;

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn not_found(id: &str) -> AgentError {
    AgentError::Snapshot(format!("no snapshot {id:?}"))
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

/// Archives the volumes under `disk_root` (a mounted, idle pod disk) into
/// `dir`. Blocking: run it off the async threads.
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
    let written = (|| {
        for v in VOLUMES {
            let src = disk_root.join(v);
            if src.is_dir() {
                tar.append_dir_all(v, &src)?;
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

/// Replaces the volumes under `disk_root` with snapshot `id`'s. Blocking.
pub fn restore(disk_root: &Path, dir: &Path, id: &str) -> Result<SnapshotInfo, AgentError> {
    let info = verify(dir, id)?;
    let staging = disk_root.join(".restore");
    crate::rootfs::remove_tree(&staging)?;
    std::fs::create_dir_all(&staging).map_err(AgentError::io("creating", &staging))?;
    let path = dir.join(format!("{id}.tar.gz"));
    let unpacked = (|| {
        let f = std::fs::File::open(&path)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
        archive.set_preserve_permissions(true);
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
    for v in VOLUMES {
        let live = disk_root.join(v);
        let old = disk_root.join(format!(".old-{v}"));
        let fresh = staging.join(v);
        if !fresh.exists() {
            std::fs::create_dir_all(&fresh).map_err(AgentError::io("creating", &fresh))?;
        }
        crate::rootfs::remove_tree(&old)?;
        if live.exists() {
            std::fs::rename(&live, &old).map_err(AgentError::io("moving aside", &live))?;
        }
        std::fs::rename(&fresh, &live).map_err(AgentError::io("restoring", &live))?;
        crate::rootfs::remove_tree(&old)?;
    }
    crate::rootfs::remove_tree(&staging)?;
    Ok(info)
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
