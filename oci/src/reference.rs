//! Image references: parsing and Docker-compatible normalisation.
//!
//! Grammar (the Docker distribution one, slightly stricter): `[REGISTRY/]REPOSITORY[:TAG][@sha256:HEX]`.
//! The first path component is a registry when it contains `.` or `:` or is
//! `localhost`; otherwise the registry is `docker.io`, where a single-component
//! repository gets the `library/` prefix. A reference with neither tag nor digest
//! gets the tag `latest`.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The longest reference accepted (the whole string, as the user typed it).
pub const MAX_REFERENCE_LEN: usize = 255;

/// The registry used when a reference names none.
pub const DOCKER_HUB: &str = "docker.io";

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Nothing was given.
    #[error("the image reference is empty")]
    Empty,
    /// Longer than [`MAX_REFERENCE_LEN`].
    #[error("the image reference is {0} characters long; at most 255 are allowed")]
    TooLong(usize),
    /// A character no part of a reference may contain (whitespace, control, non-ASCII, …).
    #[error("the image reference `{input}` contains the character {ch:?}, which no image reference may contain")]
    BadCharacter {
        /// The reference as given.
        input: String,
        /// The offending character.
        ch: char,
    },
    /// The registry part is not `host[:port]`.
    #[error("`{registry}` in `{input}` is not a registry address (host or host:port)")]
    BadRegistry {
        /// The reference as given.
        input: String,
        /// The registry part.
        registry: String,
    },
    /// A repository path component breaks the naming rules.
    #[error("the repository name in `{input}` is invalid: path components use lowercase letters, digits and single `.`, `_`, `__` or `-` runs between them")]
    BadRepository {
        /// The reference as given.
        input: String,
    },
    /// The tag breaks the naming rules.
    #[error("the tag in `{input}` is invalid: up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`")]
    BadTag {
        /// The reference as given.
        input: String,
    },
    /// The part after `@` is not a supported digest.
    #[error("the digest in `{input}` is invalid: {source}")]
    BadDigest {
        /// The reference as given.
        input: String,
        /// What is wrong with it.
        source: DigestError,
    },
}

/// A normalised image reference: registry, repository, optional tag, optional digest.
///
/// `Display` gives the full normal form (`docker.io/library/python:3.13`,
/// `ghcr.io/o/i@sha256:…`, both `:tag@digest` when both were given).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `input` (see the module docs).
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if input.len() > MAX_REFERENCE_LEN {
            return Err(ReferenceError::TooLong(input.len()));
        }
        if let Some(ch) = input.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'))
        }) {
            return Err(ReferenceError::BadCharacter {
                input: input.to_string(),
                ch,
            });
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|source| ReferenceError::BadDigest {
                        input: input.to_string(),
                        source,
                    })?;
                (n, Some(digest))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_tag[..at], Some(&name_tag[at + 1..]))
            }
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            if !pinacle_orchestrator::image_name::valid_tag(t) {
                return Err(ReferenceError::BadTag {
                    input: input.to_string(),
                });
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_registry(first) {
                    return Err(ReferenceError::BadRegistry {
                        input: input.to_string(),
                        registry: first.to_string(),
                    });
                }
                (first.to_ascii_lowercase(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        if !repository.split('/').all(pinacle_orchestrator::image_name::valid_repository_component) {
            return Err(ReferenceError::BadRepository {
                input: input.to_string(),
            });
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path (`library/python`, `owner/img`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference names one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository@digest`: the same repository pinned to `digest`
    /// (no tag, so it never moves).
    pub fn pinned(&self, digest: &Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.clone()),
        }
    }

    /// The reference as oci-client wants it.
    pub(crate) fn to_client(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.to_string(),
            ),
            (Some(t), None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone(),
            ),
            (None, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                "latest".to_string(),
            ),
        }
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

/// Whether `s` should be treated as a registry image reference rather than the
/// name of a local (built-in) image: local names (`base`, `node`) contain none of
/// `/`, `:`, `@`, `.`. It says nothing about validity: parse it with [`Reference::parse`].
pub fn looks_like_registry_reference(s: &str) -> bool {
    s.contains(['/', ':', '@', '.'])
}


fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
        if p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}


#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => r.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn normalises_docker_hub_names() {
        assert_eq!(norm("python:3.13"), "docker.io/library/python:3.13");
        assert_eq!(norm("python"), "docker.io/library/python:latest");
        assert_eq!(norm("owner/img"), "docker.io/owner/img:latest");
        assert_eq!(norm("docker.io/python"), "docker.io/library/python:latest");
        assert_eq!(
            norm("index.docker.io/library/python:3"),
            "docker.io/library/python:3"
        );
    }

    #[test]
    fn keeps_other_registries_ports_and_digests() {
        assert_eq!(norm("ghcr.io/owner/img:tag"), "ghcr.io/owner/img:tag");
        assert_eq!(norm("localhost/a"), "localhost/a:latest");
        let r = Reference::parse(&format!("reg:5000/a/b@sha256:{HEX}")).expect("parses");
        assert_eq!(r.registry(), "reg:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().map(|d| d.hex()), Some(HEX));
        let both = Reference::parse(&format!("127.0.0.1:5000/x:v1@sha256:{HEX}")).expect("parses");
        assert_eq!(both.tag(), Some("v1"));
        assert_eq!(
            both.to_string(),
            format!("127.0.0.1:5000/x:v1@sha256:{HEX}")
        );
    }

    #[test]
    fn pinned_drops_the_tag() {
        let r = Reference::parse("ghcr.io/o/i:moving").expect("parses");
        let d: Digest = format!("sha256:{HEX}").parse().expect("digest");
        assert_eq!(
            r.pinned(&d).to_string(),
            format!("ghcr.io/o/i@sha256:{HEX}")
        );
        assert_eq!(
            Reference::parse("python")
                .expect("parses")
                .pinned(&d)
                .to_string(),
            format!("docker.io/library/python@sha256:{HEX}")
        );
    }

    #[test]
    fn refuses_bad_input_with_typed_errors() {
        assert_eq!(Reference::parse(""), Err(ReferenceError::Empty));
        assert_eq!(
            Reference::parse(&"a".repeat(256)),
            Err(ReferenceError::TooLong(256))
        );
        assert!(Reference::parse(&"a".repeat(255)).is_ok());
        assert!(matches!(
            Reference::parse("py thon"),
            Err(ReferenceError::BadCharacter { ch: ' ', .. })
        ));
        assert!(matches!(
            Reference::parse("pythön"),
            Err(ReferenceError::BadCharacter { ch: 'ö', .. })
        ));
        assert!(matches!(
            Reference::parse("Python"),
            Err(ReferenceError::BadRepository { .. })
        ));
        assert!(matches!(
            Reference::parse("a//b"),
            Err(ReferenceError::BadRepository { .. })
        ));
        assert!(matches!(
            Reference::parse("a/../b"),
            Err(ReferenceError::BadRepository { .. })
        ));
        assert!(matches!(
            Reference::parse("a/b-"),
            Err(ReferenceError::BadRepository { .. })
        ));
        assert!(matches!(
            Reference::parse("a_._b"),
            Err(ReferenceError::BadRepository { .. })
        ));
        assert!(matches!(
            Reference::parse("a/"),
            Err(ReferenceError::BadRepository { .. })
        ));
        assert!(matches!(
            Reference::parse("a:"),
            Err(ReferenceError::BadTag { .. })
        ));
        assert!(matches!(
            Reference::parse("a:-x"),
            Err(ReferenceError::BadTag { .. })
        ));
        assert!(matches!(
            Reference::parse(&format!("a:{}", "t".repeat(129))),
            Err(ReferenceError::BadTag { .. })
        ));
        assert!(matches!(
            Reference::parse("reg:99999/a"),
            Err(ReferenceError::BadRegistry { .. })
        ));
        assert!(matches!(
            Reference::parse("-reg.io/a"),
            Err(ReferenceError::BadRegistry { .. })
        ));
        assert!(matches!(
            Reference::parse("a@sha256:abc"),
            Err(ReferenceError::BadDigest { .. })
        ));
        assert!(matches!(
            Reference::parse("a@md5:abc"),
            Err(ReferenceError::BadDigest { .. })
        ));
        assert!(Reference::parse("a__b/c---d/e.f_g").is_ok());
    }

    #[test]
    fn local_names_are_not_registry_references() {
        assert!(!looks_like_registry_reference("base"));
        assert!(!looks_like_registry_reference("node"));
        assert!(!looks_like_registry_reference("debian-12"));
        assert!(looks_like_registry_reference("python:3.13"));
        assert!(looks_like_registry_reference("owner/img"));
        assert!(looks_like_registry_reference("reg.io"));
        assert!(looks_like_registry_reference(&format!("x@sha256:{HEX}")));
    }
}
