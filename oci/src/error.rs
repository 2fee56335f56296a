//! The crate's error type. Every variant's message is a sentence a user can act on;
//! the ones about a pull name the reference.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::reference::ReferenceError;

/// Everything that can go wrong resolving, pulling, unpacking or managing images.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference does not parse.
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),
    /// The registry has no such repository, tag or digest.
    #[error("image `{reference}` was not found in its registry: check the repository name and tag (or digest)")]
    NotFound {
        /// The reference as normalised.
        reference: String,
    },
    /// The registry answered 401/403 (or refused the credentials).
    #[error("registry {registry} refused access to `{reference}`: check the registry credentials (user name and password or token) and that they may pull this repository")]
    AuthRefused {
        /// The reference as normalised.
        reference: String,
        /// The registry host.
        registry: String,
    },
    /// The image exists but has no linux/amd64 variant.
    #[error("image `{reference}` has no linux/amd64 variant (it offers: {}); choose a tag built for linux/amd64", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    UnsupportedPlatform {
        /// The reference as normalised.
        reference: String,
        /// `os/architecture[/variant]` of each variant the index lists.
        available: Vec<String>,
    },
    /// The registry could not be reached (DNS, connection refused, timeout, TLS).
    #[error("cannot reach registry {registry} to pull `{reference}` ({message}): check the registry address and this host's network (plain-HTTP registries must be listed as insecure)")]
    Unreachable {
        /// The reference as normalised.
        reference: String,
        /// The registry host.
        registry: String,
        /// What the HTTP client said.
        message: String,
    },
    /// Any other error the registry answered with (its message included).
    #[error("registry error while pulling `{reference}`: {message}")]
    Registry {
        /// The reference as normalised.
        reference: String,
        /// The registry's own message.
        message: String,
    },
    /// Downloaded content did not match the digest (or size) it was asked for.
    /// Nothing is installed when this happens.
    #[error("content of `{reference}` does not match its digest {expected} (got {actual}): the registry served corrupted or tampered data; nothing was installed")]
    DigestMismatch {
        /// The reference as normalised.
        reference: String,
        /// The digest that was asked for.
        expected: Digest,
        /// What arrived instead (a digest, or a size).
        actual: String,
    },
    /// The manifest, config or a layer has a media type this crate cannot run.
    #[error("`{reference}` is not a container image this host can run: unsupported media type `{media_type}`")]
    UnsupportedMediaType {
        /// The reference as normalised.
        reference: String,
        /// The media type found.
        media_type: String,
    },
    /// The manifest, config or a layer is malformed (bad JSON, bad tar, oversized config).
    #[error("image `{reference}` is malformed: {message}")]
    BadImage {
        /// The reference as normalised.
        reference: String,
        /// What is wrong.
        message: String,
    },
    /// A layer tries to write outside the image's root filesystem; the pull is refused.
    #[error("layer {layer} of `{reference}` is unsafe: entry `{path}` {reason}; the image was refused and nothing was installed")]
    UnsafeLayer {
        /// The reference as normalised.
        reference: String,
        /// The layer's digest.
        layer: Digest,
        /// The entry's path in the layer (lossy UTF-8).
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// The file system holding the store is full (ENOSPC or EDQUOT).
    #[error("no space left on the disk holding {}: remove unused images (image gc) or free disk space, then pull again", path.display())]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// Any other local I/O error.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored image's metadata cannot be read.
    #[error("the image store entry {} is damaged ({message}): remove the image and pull it again", path.display())]
    Corrupt {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl OciError {
    /// Classifies a local I/O error: ENOSPC/EDQUOT become [`OciError::DiskFull`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> OciError {
        let path = path.into();
        if is_disk_full(&source) {
            OciError::DiskFull { path }
        } else {
            OciError::Io { path, source }
        }
    }
}

pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_disk_full_and_other_errors_are_io() {
        let full = OciError::io("/x", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(full, OciError::DiskFull { .. }), "{full:?}");
        assert!(full.to_string().contains("no space left"));
        let other = OciError::io("/x", std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(other, OciError::Io { .. }), "{other:?}");
    }

    #[test]
    fn messages_name_the_reference() {
        let e = OciError::UnsupportedPlatform {
            reference: "docker.io/library/x:1".into(),
            available: vec!["linux/arm64".into()],
        };
        assert!(e.to_string().contains("docker.io/library/x:1"));
        assert!(e.to_string().contains("linux/arm64"));
    }
}
