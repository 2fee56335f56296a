//! The gateway's own host key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use ssh_key::{LineEnding, PrivateKey};

/// Reads the ed25519 host key at `path`, or makes one there (mode 0600).
pub fn load_or_create_host_key(path: &Path) -> anyhow::Result<PrivateKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(&text).with_context(|| format!("{} is not an OpenSSH private key; delete it to make a new host key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let key = pinacle_api::ssh::new_ed25519_key("pinacle-ssh-gateway").context("making the SSH host key")?;
            let pem = key.to_openssh(LineEnding::LF).context("encoding the SSH host key")?;
            let tmp = path.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(pem.as_bytes()).and_then(|_| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading the SSH host key {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_host_key_is_made_once_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh/host_ed25519");
        let a = load_or_create_host_key(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = load_or_create_host_key(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        std::fs::write(&path, "garbage").unwrap();
        let e = load_or_create_host_key(&path).unwrap_err().to_string();
        assert!(e.contains("delete it"), "{e}");
    }
}
