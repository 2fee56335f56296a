//! Content digests (`sha256:<64 lowercase hex>`), the store's only addressing scheme.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a digest this crate accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The algorithm is not `sha256` (sha384/sha512 images are rare; they are refused).
    #[error("digest algorithm `{0}` is not supported (only sha256 is)")]
    UnsupportedAlgorithm(String),
    /// No `algorithm:` prefix.
    #[error("a digest looks like `sha256:<64 hex digits>`")]
    Malformed,
    /// The hex part is not 64 lowercase hex digits.
    #[error("a sha256 digest has 64 lowercase hex digits")]
    BadHex,
}

/// A verified-format SHA-256 content digest, `sha256:<64 lowercase hex digits>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_sha256(sha2::Sha256::digest(bytes).into())
    }

    /// The digest whose raw SHA-256 value is `raw`.
    pub fn from_sha256(raw: [u8; 32]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(raw)))
    }

    /// The 64 hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        self.0.strip_prefix("sha256:").unwrap_or(&self.0)
    }

    /// The full `sha256:…` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let (algorithm, hex) = s.split_once(':').ok_or(DigestError::Malformed)?;
        if algorithm != "sha256" {
            if algorithm.is_empty() || hex.is_empty() {
                return Err(DigestError::Malformed);
            }
            return Err(DigestError::UnsupportedAlgorithm(
                algorithm.chars().take(32).collect(),
            ));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::BadHex);
        }
        Ok(Digest(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sha256_and_refuses_the_rest() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(d.as_str().parse::<Digest>(), Ok(d.clone()));
        assert_eq!(d.hex().len(), 64);
        assert_eq!("sha256".parse::<Digest>(), Err(DigestError::Malformed));
        assert_eq!("sha256:abc".parse::<Digest>(), Err(DigestError::BadHex));
        let upper = d.as_str().to_uppercase().replace("SHA256", "sha256");
        assert_eq!(upper.parse::<Digest>(), Err(DigestError::BadHex));
        assert!(matches!(
            format!("sha512:{}", "a".repeat(128)).parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(a)) if a == "sha512"
        ));
    }
}
