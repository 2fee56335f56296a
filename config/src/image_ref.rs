//! What `image:` may name: an image this host builds (`base`, `node`,
//! `base-bookworm`) or an OCI image reference pulled from a registry
//! (`python:3.13`, `ghcr.io/owner/img:tag`, `registry:5000/a/b@sha256:…`).
//!
//! This is the syntax check only (Docker's reference grammar); the host agent
//! normalises and pulls references with `pinacle-oci`.

/// Longest reference accepted (Docker's limit on a repository name).
pub const MAX_REFERENCE_LEN: usize = 255;

/// What an `image:` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageName {
    /// An image built on the host (`[a-z0-9-]`, at most 64 characters).
    Local(String),
    /// An image reference in a registry, as written.
    Registry(String),
}

impl ImageName {
    pub fn as_str(&self) -> &str {
        match self {
            ImageName::Local(s) | ImageName::Registry(s) => s,
        }
    }
}

/// Whether `s` is written as a registry reference rather than a local
/// image name: it has a `/`, `:`, `@` or `.`.
pub fn is_registry_reference(s: &str) -> bool {
    s.contains(['/', ':', '@', '.'])
}

/// Checks an `image:` value; the error says what is wrong with it.
pub fn check(s: &str) -> Result<ImageName, String> {
    if s.is_empty() {
        return Err("the image is empty".into());
    }
    if !is_registry_reference(s) {
        return if s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            Ok(ImageName::Local(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is neither an image name (lower-case letters, digits and dashes) nor a registry reference (like python:3.13 or ghcr.io/owner/image:tag)"
            ))
        };
    }
    check_reference(s).map(|()| ImageName::Registry(s.to_owned())).map_err(|why| format!("{s:?} is not an image reference: {why}"))
}

fn check_reference(s: &str) -> Result<(), String> {
    if s.len() > MAX_REFERENCE_LEN {
        return Err(format!("it is longer than {MAX_REFERENCE_LEN} characters"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").ok_or("a digest must be sha256:<64 hex digits>")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err("a digest must be sha256:<64 lower-case hex digits>".into());
        }
    }
    // a tag follows the last ':' after the last '/'
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        if !pinacle_orchestrator::image_name::valid_tag(tag) {
            return Err(format!("tag {tag:?}: use letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-')"));
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // a first part with '.' or ':' (or `localhost`) is a registry host
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        let (h, port) = match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        };
        if let Some(p) = port {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("registry port {p:?} is not a number"));
            }
        }
        let host_ok = !h.is_empty()
            && h.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-') && !l.ends_with('-')
            });
        if !host_ok {
            return Err(format!("registry host {h:?} is not a host name"));
        }
    }
    if parts.is_empty() || parts.iter().any(|p| !pinacle_orchestrator::image_name::valid_repository_component(p)) {
        return Err("repository path components are lower-case letters and digits, separated by '.', '_', '__' or '-'".into());
    }
    Ok(())
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_and_registry_references_are_told_apart() {
        assert_eq!(check("base"), Ok(ImageName::Local("base".into())));
        assert_eq!(check("base-bookworm"), Ok(ImageName::Local("base-bookworm".into())));
        for r in [
            "python:3.13",
            "debian",
            "library/debian:trixie-slim",
            "ghcr.io/owner/img:v1.2.3",
            "mcr.microsoft.com/devcontainers/python:1-3.12-bookworm",
            "127.0.0.1:5000/team/app",
            "localhost/app:latest",
            "registry.example.com:443/a/b/c@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "node:20@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "my__repo/x-y.z:tag_1",
        ] {
            if is_registry_reference(r) {
                assert_eq!(check(r), Ok(ImageName::Registry(r.into())), "{r}");
            } else {
                assert_eq!(check(r), Ok(ImageName::Local(r.into())), "{r}");
            }
        }
    }

    #[test]
    fn malformed_references_are_refused_with_a_reason() {
        for bad in [
            "",
            "Base",
            "python:",
            "python:-x",
            "UPPER/case:tag",
            "a//b",
            "ghcr.io/",
            "img@sha256:abc",
            "img@md5:0123",
            "reg:port/x",
            "-bad.example.com/x",
            "a/b:tag with space",
            "a/../b",
            "a/b;rm -rf /",
        ] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("ghcr.io/{}", "a".repeat(300));
        assert!(check(&long).unwrap_err().contains("longer than"));
    }
}
