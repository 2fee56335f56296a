//! The master key and what it protects. Secrets and the private halves of
//! token-signing keys are sealed with ChaCha20-Poly1305 (an AEAD) under a
//! 256-bit master key, with associated data that binds each ciphertext to
//! the row it belongs to: a sealed value copied to another row does not open.
//!
//! The master key comes from `PINACLE_MASTER_KEY` (base64 of 32 bytes) or a
//! key file created on first start with mode 0600.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Why the master key or a sealed value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key {0}: {1}")]
    KeyFile(String, std::io::Error),
    #[error("master key {where_}: {problem}; {fix}")]
    BadKey { where_: String, problem: String, fix: &'static str },
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value does not open with this master key (wrong key, or the value was moved or edited)")]
    Open,
    #[error("system random number generator failed")]
    Random,
}

const SEALED_PREFIX: &str = "v1:";
const KEY_LEN: usize = 32;
const KEY_FIX: &str = "use 32 random bytes, base64-encoded (`head -c32 /dev/urandom | base64`)";

/// The master key. Debug output never shows it.
pub struct MasterKey {
    key: LessSafeKey,
    /// For derived credentials (HMAC-SHA256 of a purpose).
    mac: ring::hmac::Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A key from base64 text (`PINACLE_MASTER_KEY` or the key file).
    pub fn from_base64(text: &str, where_: &str) -> Result<Self, CryptoError> {
        let bytes = B64.decode(text.trim()).map_err(|e| CryptoError::BadKey {
            where_: where_.to_owned(),
            problem: format!("not base64 ({e})"),
            fix: KEY_FIX,
        })?;
        Self::from_bytes(&bytes).map_err(|_| CryptoError::BadKey {
            where_: where_.to_owned(),
            problem: format!("{} bytes long, not {KEY_LEN}", bytes.len()),
            fix: KEY_FIX,
        })
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::Malformed);
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| CryptoError::Malformed)?;
        Ok(Self { key: LessSafeKey::new(key), mac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes) })
    }

    /// A new random key (for tests and first start).
    pub fn generate() -> Result<(Self, String), CryptoError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut bytes).map_err(|_| CryptoError::Random)?;
        Ok((Self::from_bytes(&bytes)?, B64.encode(bytes)))
    }

    /// The key in `path`, created (mode 0600) if missing. A key file that
    /// others can read is refused: the key protects every secret.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mode = std::fs::metadata(path).map_err(|e| CryptoError::KeyFile(shown.clone(), e))?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(CryptoError::BadKey {
                        where_: shown,
                        problem: format!("file mode is {:o}, readable by others", mode & 0o777),
                        fix: "run `chmod 600` on it",
                    });
                }
                Self::from_base64(&text, &shown)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, text) = Self::generate()?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| CryptoError::KeyFile(shown.clone(), e))?;
                f.write_all(format!("{text}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| CryptoError::KeyFile(shown.clone(), e))?;
                Ok(key)
            }
            Err(e) => Err(CryptoError::KeyFile(shown, e)),
        }
    }

    /// A credential derived from the key for `purpose` (hex of
    /// HMAC-SHA256): the same on every server that holds the key, and
    /// nothing about the key or other purposes can be learnt from it.
    pub fn derive(&self, purpose: &str) -> String {
        hex::encode(ring::hmac::sign(&self.mac, purpose.as_bytes()).as_ref())
    }

    /// Whether `presented` is [`MasterKey::derive`]`(purpose)`, compared in
    /// constant time.
    pub fn verify_derived(&self, purpose: &str, presented: &str) -> bool {
        hex::decode(presented).is_ok_and(|tag| ring::hmac::verify(&self.mac, purpose.as_bytes(), &tag).is_ok())
    }

    /// Encrypts `plaintext`, bound to `context` (which must be given again
    /// to open it). Output: `v1:` + base64(nonce || ciphertext || tag).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<String, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| CryptoError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{SEALED_PREFIX}{}", B64.encode(out)))
    }

    /// Decrypts a value from [`MasterKey::seal`] sealed with the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, CryptoError> {
        let raw = sealed.strip_prefix(SEALED_PREFIX).ok_or(CryptoError::Malformed)?;
        let mut bytes = B64.decode(raw).map_err(|_| CryptoError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(CryptoError::Malformed);
        }
        let mut body = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| CryptoError::Malformed)?;
        let plain = self.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut body).map_err(|_| CryptoError::Open)?;
        Ok(plain.to_vec())
    }
}

impl MasterKey {
    /// Seals and checks the seal opens (a broken key must fail loudly here,
    /// not when the value is needed).
    pub(crate) fn open_check_seal(&self, context: &str, plaintext: &[u8]) -> Result<String, crate::ApiError> {
        let sealed = self.seal(context, plaintext).map_err(crate::ApiError::internal)?;
        match self.open(context, &sealed) {
            Ok(p) if p == plaintext => Ok(sealed),
            _ => Err(crate::ApiError::internal("sealed value did not open")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_bound_to_context() {
        let (k, _) = MasterKey::generate().unwrap();
        let sealed = k.seal("secret:user:1:DB_PASSWORD", b"hunter2-but-longer").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(k.open("secret:user:1:DB_PASSWORD", &sealed).unwrap(), b"hunter2-but-longer");
        assert!(matches!(k.open("secret:user:2:DB_PASSWORD", &sealed), Err(CryptoError::Open)));
        let (other, _) = MasterKey::generate().unwrap();
        assert!(matches!(other.open("secret:user:1:DB_PASSWORD", &sealed), Err(CryptoError::Open)));
        // Same plaintext twice: different ciphertexts (random nonces).
        assert_ne!(sealed, k.seal("secret:user:1:DB_PASSWORD", b"hunter2-but-longer").unwrap());
        // A flipped bit is detected.
        let mut bytes = B64.decode(&sealed[3..]).unwrap();
        bytes[20] ^= 1;
        assert!(matches!(k.open("secret:user:1:DB_PASSWORD", &format!("v1:{}", B64.encode(bytes))), Err(CryptoError::Open)));
        assert!(matches!(k.open("x", "garbage"), Err(CryptoError::Malformed)));
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let k1 = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = k1.seal("c", b"v").unwrap();
        let k2 = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(k2.open("c", &sealed).unwrap(), b"v");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn bad_keys_say_how_to_make_a_good_one() {
        let err = MasterKey::from_base64("c2hvcnQ=", "PINACLE_MASTER_KEY").unwrap_err().to_string();
        assert!(err.contains("PINACLE_MASTER_KEY") && err.contains("5 bytes") && err.contains("urandom"), "{err}");
        assert!(MasterKey::from_base64("!!!", "env").unwrap_err().to_string().contains("not base64"));
    }
}
