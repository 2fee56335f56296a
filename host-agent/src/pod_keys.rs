//! Each pod's own SSH key pair (ed25519), kept in the pod's home as
//! `~/.ssh/id_ed25519` and `~/.ssh/id_ed25519.pub`: what the pod uses to
//! reach Git hosts (as a deploy key). Made at provisioning, replaced by
//! [`rotate`], gone with the pod's disk when the pod is deleted.
//!
//! Rotation never leaves a moment without a valid key: the new pair is
//! written beside the old one and renamed over it (`rename` is atomic).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use ssh_key::private::Ed25519Keypair;
use ssh_key::{HashAlg, LineEnding, PrivateKey};

use crate::AgentError;

/// The key's file name in `~/.ssh`.
pub const KEY_FILE: &str = "id_ed25519";

/// A pod key's public half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodKey {
    /// `ssh-ed25519 AAAA... pinacle-pod-NAME`.
    pub public_key: String,
    /// `SHA256:...`.
    pub fingerprint: String,
}

fn ssh_dir(home: &Path) -> PathBuf {
    home.join(".ssh")
}

fn make_key(comment: &str) -> Result<PrivateKey, AgentError> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    PrivateKey::new(Ed25519Keypair::from_seed(&seed).into(), comment).map_err(|e| AgentError::Bundle(format!("making the pod's SSH key: {e}")))
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), AgentError> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(AgentError::io("writing", path))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(AgentError::io("writing", path))
}

fn public_of(key: &PrivateKey) -> Result<PodKey, AgentError> {
    let public_key = key.public_key().to_openssh().map_err(|e| AgentError::Bundle(format!("encoding the pod's SSH key: {e}")))?;
    Ok(PodKey { public_key, fingerprint: key.public_key().fingerprint(HashAlg::Sha256).to_string() })
}

/// Writes a new key pair for the pod named `pod_name` into `home`,
/// replacing any old one atomically.
fn install(home: &Path, pod_name: &str) -> Result<PodKey, AgentError> {
    let dir = ssh_dir(home);
    std::fs::create_dir_all(&dir).map_err(AgentError::io("creating", &dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(AgentError::io("restricting", &dir))?;
    let key = make_key(&format!("pinacle-pod-{pod_name}"))?;
    let private = key.to_openssh(LineEnding::LF).map_err(|e| AgentError::Bundle(format!("encoding the pod's SSH key: {e}")))?;
    let public = public_of(&key)?;
    let (key_path, pub_path) = (dir.join(KEY_FILE), dir.join(format!("{KEY_FILE}.pub")));
    let (key_tmp, pub_tmp) = (dir.join(format!(".{KEY_FILE}.new")), dir.join(format!(".{KEY_FILE}.pub.new")));
    write_new(&key_tmp, private.as_bytes(), 0o600)?;
    write_new(&pub_tmp, format!("{}\n", public.public_key).as_bytes(), 0o644)?;
    std::fs::rename(&key_tmp, &key_path).map_err(AgentError::io("replacing", &key_path))?;
    std::fs::rename(&pub_tmp, &pub_path).map_err(AgentError::io("replacing", &pub_path))?;
    Ok(public)
}

/// The pod's key in `home`, made first if it has none.
pub fn ensure(home: &Path, pod_name: &str) -> Result<PodKey, AgentError> {
    match read(home) {
        Some(k) => Ok(k),
        None => install(home, pod_name),
    }
}

/// Replaces the pod's key with a new one; returns the new public half.
pub fn rotate(home: &Path, pod_name: &str) -> Result<PodKey, AgentError> {
    install(home, pod_name)
}

/// The pod's current key, read from its private half (the public file is
/// only a copy).
pub fn read(home: &Path) -> Option<PodKey> {
    let text = std::fs::read_to_string(ssh_dir(home).join(KEY_FILE)).ok()?;
    public_of(&PrivateKey::from_openssh(&text).ok()?).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_pod_key_is_made_once_private_and_rotated_in_place() {
        let home = tempfile::tempdir().unwrap();
        let first = ensure(home.path(), "web").unwrap();
        assert!(first.public_key.starts_with("ssh-ed25519 "), "{}", first.public_key);
        assert!(first.public_key.ends_with(" pinacle-pod-web"));
        assert_eq!(ensure(home.path(), "web").unwrap(), first, "ensure keeps an existing key");
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
}
