//! Each pod's own SSH key pair (ed25519), kept in the pod's home as
//! `~/.ssh/id_ed25519` and `~/.ssh/id_ed25519.pub`: what the pod uses to
//! reach Git hosts (as a deploy key). Made at provisioning, replaced by
//! [`rotate`], gone with the pod's disk when the pod is deleted.
//!
//! Rotation never leaves a moment without a valid key: the new pair is
//! written beside the old one and renamed over it (`rename` is atomic).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use ssh_key::private::Ed25519Keypair;
use ssh_key::{HashAlg, LineEnding, PrivateKey};

use crate::AgentError;

/// The key's file name in `~/.ssh`.
pub const KEY_FILE: &str = "id_ed25519";

/// A pod's own SSH key (a wire type of the host contract).
pub use pinacle_host_api::PodKey;

/// Largest key file read back (an ed25519 key in OpenSSH format is
/// about 400 bytes).
const MAX_KEY_FILE: u64 = 16 * 1024;

/// The pod's `~/.ssh`, opened without following a symbolic link, made
/// (0700) if absent, and a path through the open descriptor
/// (`/proc/self/fd/N`). The home directory is the agent's own (a mount
/// point in the pod); `.ssh` and everything in it is the pod's, so nothing
/// below the home is resolved by name on the host: a link there can never
/// send the agent (root on the host) elsewhere.
struct SshDir {
    dir: std::fs::File,
}

impl SshDir {
    fn open(home: &Path, create: bool) -> Result<Option<Self>, AgentError> {
        let path = home.join(".ssh");
        if create {
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(AgentError::io("creating", &path)(e)),
            }
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&path);
        let dir = match opened {
            Ok(d) => d,
            Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // a link or a file where the directory should be
            Err(e) => return Err(AgentError::Bundle(format!("the pod's ~/.ssh is not a directory ({e}); remove it in the pod"))),
        };
        if create {
            dir.set_permissions(std::fs::Permissions::from_mode(0o700)).map_err(AgentError::io("restricting", &path))?;
        }
        Ok(Some(SshDir { dir }))
    }

    /// `name` in the directory, reached through its descriptor.
    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd())).join(name)
    }

    /// Writes a new file `name` (never through a link), replacing a stale one.
    fn write_new(&self, name: &str, data: &[u8], mode: u32) -> Result<(), AgentError> {
        let path = self.path(name);
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&path)
            .map_err(AgentError::io("writing", &path))?;
        f.write_all(data).and_then(|_| f.sync_all()).map_err(AgentError::io("writing", &path))
    }

    /// A regular file's text, at most [`MAX_KEY_FILE`] bytes; `None` for
    /// anything else (a link, a FIFO, a device, too big, absent).
    fn read_small(&self, name: &str) -> Option<String> {
        use std::io::Read;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open(self.path(name))
            .ok()?;
        let meta = f.metadata().ok()?;
        if !meta.is_file() || meta.len() > MAX_KEY_FILE {
            return None;
        }
        let mut text = String::new();
        f.take(MAX_KEY_FILE).read_to_string(&mut text).ok()?;
        Some(text)
    }
}

fn make_key(comment: &str) -> Result<PrivateKey, AgentError> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    PrivateKey::new(Ed25519Keypair::from_seed(&seed).into(), comment).map_err(|e| AgentError::Bundle(format!("making the pod's SSH key: {e}")))
}

fn public_of(key: &PrivateKey) -> Result<PodKey, AgentError> {
    let public_key = key.public_key().to_openssh().map_err(|e| AgentError::Bundle(format!("encoding the pod's SSH key: {e}")))?;
    Ok(PodKey { public_key, fingerprint: key.public_key().fingerprint(HashAlg::Sha256).to_string() })
}

/// Writes a new key pair for the pod named `pod_name` into `home`,
/// replacing any old one atomically.
fn install(home: &Path, pod_name: &str) -> Result<PodKey, AgentError> {
    let Some(dir) = SshDir::open(home, true)? else {
        return Err(AgentError::Bundle("the pod's ~/.ssh could not be made".into()));
    };
    let key = make_key(&format!("pinacle-pod-{pod_name}"))?;
    let private = key.to_openssh(LineEnding::LF).map_err(|e| AgentError::Bundle(format!("encoding the pod's SSH key: {e}")))?;
    let public = public_of(&key)?;
    let (key_tmp, pub_tmp) = (format!(".{KEY_FILE}.new"), format!(".{KEY_FILE}.pub.new"));
    dir.write_new(&key_tmp, private.as_bytes(), 0o600)?;
    dir.write_new(&pub_tmp, format!("{}\n", public.public_key).as_bytes(), 0o644)?;
    // rename(2) replaces whatever has the name (a link too) without following it
    let pub_name = format!("{KEY_FILE}.pub");
    std::fs::rename(dir.path(&key_tmp), dir.path(KEY_FILE)).map_err(AgentError::io("replacing", dir.path(KEY_FILE)))?;
    std::fs::rename(dir.path(&pub_tmp), dir.path(&pub_name)).map_err(AgentError::io("replacing", dir.path(&pub_name)))?;
    Ok(public)
}

/// The pod's key in `home`, made first if it has none. A key file that is
/// there but not ours to read (another format, a link) is left alone.
pub fn ensure(home: &Path, pod_name: &str) -> Result<Option<PodKey>, AgentError> {
    if let Some(k) = read(home) {
        return Ok(Some(k));
    }
    let present = SshDir::open(home, false)?.is_some_and(|d| std::fs::symlink_metadata(d.path(KEY_FILE)).is_ok());
    if present {
        return Ok(None);
    }
    install(home, pod_name).map(Some)
}

/// Replaces the pod's key with a new one; returns the new public half.
pub fn rotate(home: &Path, pod_name: &str) -> Result<PodKey, AgentError> {
    install(home, pod_name)
}

/// The pod's current key, read from its private half (the public file is
/// only a copy).
pub fn read(home: &Path) -> Option<PodKey> {
    let dir = SshDir::open(home, false).ok()??;
    let text = dir.read_small(KEY_FILE)?;
    public_of(&PrivateKey::from_openssh(&text).ok()?).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_pod_key_is_made_once_private_and_rotated_in_place() {
        let home = tempfile::tempdir().unwrap();
        let first = ensure(home.path(), "web").unwrap().unwrap();
        assert!(first.public_key.starts_with("ssh-ed25519 "), "{}", first.public_key);
        assert!(first.public_key.ends_with(" pinacle-pod-web"));
        assert_eq!(ensure(home.path(), "web").unwrap(), Some(first.clone()), "ensure keeps an existing key");
        let key_path = home.path().join(".ssh").join(KEY_FILE);
        assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(home.path().join(".ssh")).unwrap().permissions().mode() & 0o777, 0o700);
        let second = rotate(home.path(), "web").unwrap();
        assert_ne!(second.fingerprint, first.fingerprint);
        assert_eq!(read(home.path()).unwrap(), second);
        let public = std::fs::read_to_string(home.path().join(".ssh/id_ed25519.pub")).unwrap();
        assert_eq!(public.trim(), second.public_key);
        // nothing left over from the swap
        let names: Vec<_> = std::fs::read_dir(home.path().join(".ssh")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn links_and_odd_files_the_pod_planted_lead_nowhere_on_the_host() {
        let host = tempfile::tempdir().unwrap();
        let outside = host.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host data").unwrap();

        // ~/.ssh is a link out of the pod: refused, the target untouched
        let home = host.path().join("home1");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::symlink(&outside, home.join(".ssh")).unwrap();
        assert!(ensure(&home, "web").is_err());
        assert!(rotate(&home, "web").is_err());
        assert!(read(&home).is_none());
        let left: Vec<_> = std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["secret"]);
        assert_eq!(std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777, 0o755);

        // the key file is a link to a host file: never read, and rotation
        // replaces the link itself
        let home = host.path().join("home2");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), home.join(".ssh").join(KEY_FILE)).unwrap();
        assert!(read(&home).is_none());
        assert_eq!(ensure(&home, "web").unwrap(), None, "a key file that is not ours is left alone");
        let k = rotate(&home, "web").unwrap();
        assert_eq!(read(&home), Some(k));
        assert_eq!(std::fs::read_to_string(outside.join("secret")).unwrap(), "host data");

        // a FIFO (which would block a reader) or a huge file is not read
        let home = host.path().join("home3");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        nix::unistd::mkfifo(&home.join(".ssh").join(KEY_FILE), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read(&home).is_none());
    }
}
