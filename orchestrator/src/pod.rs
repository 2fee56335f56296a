//! What the host agent needs to know about a pod.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::{PodName, PodState, Tier};

/// Which sandbox runtime runs a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// gVisor's `runsc`: a user-space kernel between the pod and the host.
    Gvisor,
    /// youki's `libcontainer`: namespaces and cgroups on the host kernel.
    Youki,
}

impl RuntimeKind {
    /// Lowercase name, as stored and accepted by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Gvisor => "gvisor",
            RuntimeKind::Youki => "youki",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gvisor" | "runsc" => Ok(RuntimeKind::Gvisor),
            "youki" | "libcontainer" => Ok(RuntimeKind::Youki),
            other => Err(format!("unknown runtime {other:?}; choose gvisor or youki")),
        }
    }
}

/// A pod as the control plane records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRecord {
    pub id: Uuid,
    pub name: PodName,
    pub owner: String,
    pub state: PodState,
    pub image: String,
    /// The template it was created from (its starter files fill a new
    /// workspace); empty when unknown.
    #[serde(default)]
    pub template: String,
    pub tier: Tier,
    pub runtime: RuntimeKind,
    pub host: String,
    /// Egress policy: `allow-all`, `deny-all` or an allow list of IPv4
    /// CIDRs (validated by the control plane).
    #[serde(default = "default_egress")]
    pub egress: String,
    /// What the pod's supervisor runs.
    #[serde(default)]
    pub processes: crate::processes::PodProcesses,
    /// Take a snapshot of its volumes each time it stops.
    #[serde(default)]
    pub snapshot_on_stop: bool,
}

fn default_egress() -> String {
    "allow-all".into()
}

impl PodRecord {
    /// The sandbox id used with the runtime: stable, unique, and safe in paths.
    pub fn sandbox_id(&self) -> String {
        sandbox_id(self.id)
    }
}

/// Prefix of every sandbox id Pinacle creates, so reconcile can tell its own
/// sandboxes from anything else the runtime runs.
pub const SANDBOX_PREFIX: &str = "pinacle-";

/// The sandbox id of the pod with `id`.
pub fn sandbox_id(id: Uuid) -> String {
    format!("{SANDBOX_PREFIX}{}", id.simple())
}

/// The pod id a sandbox id belongs to, if it is one of ours.
pub fn pod_id_of_sandbox(sandbox: &str) -> Option<Uuid> {
    sandbox.strip_prefix(SANDBOX_PREFIX).and_then(|s| Uuid::parse_str(s).ok())
}

/// The longest repository URL accepted.
pub const MAX_REPOSITORY_URL: usize = 2048;

/// The longest branch name accepted.
pub const MAX_BRANCH: usize = 255;

/// A repository a pod's `/workspace` is cloned from when it first runs.
/// Stored on the pod (JSON) and shown in its API view.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepositorySource {
    /// An `http://` or `https://` URL without credentials.
    pub url: String,
    /// The branch (or tag) to check out; none: the remote's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit to check out (hexadecimal, 7 to 64 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The repository's own `pinacle.yaml` (or devcontainer.json)
    /// configures the pod: the request gave neither a config nor a template.
    #[serde(default)]
    pub use_repository_config: bool,
}

/// Why a repository source was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepositoryError {
    #[error("the repository URL is empty")]
    Empty,
    #[error("the repository URL is longer than {MAX_REPOSITORY_URL} characters")]
    TooLong,
    #[error("only http:// and https:// repository URLs are supported (not {0:?}); local paths, file:// and ext:: are refused")]
    Scheme(String),
    #[error("the repository URL holds credentials; store a token as the secret GIT_TOKEN (and optionally GIT_USERNAME) instead")]
    Credentials,
    #[error("the repository URL has no host")]
    NoHost,
    #[error("the repository URL has an invalid {0}")]
    Invalid(&'static str),
    #[error("invalid branch name {0:?} (git's ref-name rules)")]
    Branch(String),
    #[error("invalid commit {0:?}: expected 7 to 64 hexadecimal digits")]
    Commit(String),
}

impl RepositorySource {
    /// Checks URL, branch and commit; trims the URL and lowercases the commit.
    pub fn validated(mut self) -> Result<Self, RepositoryError> {
        self.url = self.url.trim().to_owned();
        check_repository_url(&self.url)?;
        if let Some(b) = self.branch.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
            check_branch(b)?;
            self.branch = Some(b.to_owned());
        } else {
            self.branch = None;
        }
        if let Some(c) = self.commit.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            if !(7..=64).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(RepositoryError::Commit(c.chars().take(80).collect()));
            }
            self.commit = Some(c.to_ascii_lowercase());
        } else {
            self.commit = None;
        }
        Ok(self)
    }

    /// `scheme://host[:port]` of the URL: what git's credential helper is
    /// scoped to (`credential.<scope>.helper`).
    pub fn credential_scope(&self) -> Result<String, RepositoryError> {
        let (scheme, authority, _) = split_url(&self.url)?;
        Ok(format!("{scheme}://{}", authority.to_ascii_lowercase()))
    }
}

/// Splits `scheme://authority/path` into its parts; the scheme lowercased.
fn split_url(url: &str) -> Result<(String, &str, &str), RepositoryError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(RepositoryError::Scheme(url.chars().take(40).collect()));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(RepositoryError::Scheme(format!("{scheme}://")));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Ok((scheme, &rest[..end], &rest[end..]))
}

/// Accepts `http(s)://host[:port][/path]` without credentials, whitespace
/// or control characters, at most [`MAX_REPOSITORY_URL`] long.
pub fn check_repository_url(url: &str) -> Result<(), RepositoryError> {
    if url.is_empty() {
        return Err(RepositoryError::Empty);
    }
    if url.len() > MAX_REPOSITORY_URL {
        return Err(RepositoryError::TooLong);
    }
    let (_, authority, path) = split_url(url)?;
    if authority.contains('@') {
        return Err(RepositoryError::Credentials);
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or(RepositoryError::Invalid("host"))?;
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                return Err(RepositoryError::Invalid("host"));
            }
            if !after.is_empty() && !after.starts_with(':') {
                return Err(RepositoryError::Invalid("host"));
            }
            (h, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(RepositoryError::NoHost);
    }
    if !authority.starts_with('[') && !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_') {
        return Err(RepositoryError::Invalid("host"));
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535) {
            return Err(RepositoryError::Invalid("port"));
        }
    }
    if !path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        return Err(RepositoryError::Invalid("path"));
    }
    Ok(())
}

/// git's ref-name rules (`git check-ref-format --branch`), a little
/// stricter: ASCII only, no leading `-`.
pub fn check_branch(b: &str) -> Result<(), RepositoryError> {
    let bad = || RepositoryError::Branch(b.chars().take(80).collect());
    if b.is_empty() || b.len() > MAX_BRANCH || b.starts_with('-') || b.starts_with('/') || b.ends_with('/') || b.ends_with('.') || b.ends_with(".lock") {
        return Err(bad());
    }
    if b.contains("..") || b.contains("@{") || b.contains("//") || b == "@" {
        return Err(bad());
    }
    if !b.bytes().all(|c| c.is_ascii_graphic() && !b"~^:?*[\\".contains(&c)) {
        return Err(bad());
    }
    if b.split('/').any(|part| part.starts_with('.')) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(url: &str) -> RepositorySource {
        RepositorySource { url: url.into(), branch: None, commit: None, use_repository_config: false }
    }

    #[test]
    fn repository_urls_are_http_only_and_without_credentials() {
        for ok in ["https://github.com/a/b.git", "http://198.18.0.2:8080/r.git", "HTTPS://Example.COM/x", "https://[::1]:443/a", "https://h"] {
            assert!(repo(ok).validated().is_ok(), "{ok}");
        }
        let err = |u: &str| repo(u).validated().unwrap_err();
        assert_eq!(err(""), RepositoryError::Empty);
        assert_eq!(err("   "), RepositoryError::Empty);
        assert!(matches!(err("file:///etc"), RepositoryError::Scheme(_)));
        assert!(matches!(err("ext::sh -c touch% /tmp/x"), RepositoryError::Scheme(_)));
        assert!(matches!(err("/srv/repo.git"), RepositoryError::Scheme(_)));
        assert!(matches!(err("git@github.com:a/b.git"), RepositoryError::Scheme(_)));
        assert!(matches!(err("ssh://git@h/a"), RepositoryError::Scheme(_)));
        assert_eq!(err("https://user:tok@github.com/a/b"), RepositoryError::Credentials);
        assert_eq!(err("https://tok@github.com/a/b"), RepositoryError::Credentials);
        assert_eq!(err("https:///a"), RepositoryError::NoHost);
        assert_eq!(err("https://h:0/a"), RepositoryError::Invalid("port"));
        assert_eq!(err("https://h:99999/a"), RepositoryError::Invalid("port"));
        assert_eq!(err("https://h a/b"), RepositoryError::Invalid("host"));
        assert_eq!(err("https://h/a b"), RepositoryError::Invalid("path"));
        assert_eq!(err("https://h/a\nb"), RepositoryError::Invalid("path"));
        assert_eq!(err(&format!("https://h/{}", "a".repeat(MAX_REPOSITORY_URL))), RepositoryError::TooLong);
    }

    #[test]
    fn branches_follow_git_ref_rules_and_commits_are_hex() {
        for ok in ["main", "feature/x-1", "v1.2.3", "release_2026"] {
            assert!(check_branch(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a..b", "a b", "a~1", "a^", "a:b", "x.lock", "a/", "/a", "a//b", ".hidden", "a/.b", "@", "x@{1}", "a\\b", "ü"] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
        let mut r = repo("https://h/a");
        r.commit = Some("ABCDEF1".into());
        assert_eq!(r.clone().validated().unwrap().commit.as_deref(), Some("abcdef1"));
        for bad in ["abc", "xyz1234", &"a".repeat(65)] {
            r.commit = Some(bad.into());
            assert!(matches!(r.clone().validated(), Err(RepositoryError::Commit(_))), "{bad}");
        }
        r.commit = Some("  ".into());
        r.branch = Some(" dev ".into());
        let v = r.validated().unwrap();
        assert_eq!((v.commit, v.branch.as_deref()), (None, Some("dev")));
    }

    #[test]
    fn odd_urls_are_refused_without_panicking() {
        for odd in ["https://[", "https://[]", "https://[::1", "https://[::1]x", "https://ü/", "http://:80", "https://h:", "HTTP://é@x", "https://h:8o", "https://\u{0}/", "https://h/\u{7f}", "://", "https://", "ftp://h"] {
            assert!(repo(odd).validated().is_err(), "{odd:?}");
        }
        assert!(repo("https://[::1]:8443/a").validated().is_ok());
    }

    #[test]
    fn credential_scope_is_scheme_host_and_port() {
        assert_eq!(repo("HTTP://Git.Example:8080/a/b.git?x").credential_scope().unwrap(), "http://git.example:8080");
        assert_eq!(repo("https://github.com/a").credential_scope().unwrap(), "https://github.com");
    }

    #[test]
    fn sandbox_ids_round_trip_and_ignore_strangers() {
        let id = Uuid::new_v4();
        assert_eq!(pod_id_of_sandbox(&sandbox_id(id)), Some(id));
        assert_eq!(pod_id_of_sandbox("other-container"), None);
        assert_eq!(pod_id_of_sandbox("pinacle-zzz"), None);
    }

    #[test]
    fn runtime_names() {
        assert_eq!("runsc".parse(), Ok(RuntimeKind::Gvisor));
        assert_eq!("youki".parse(), Ok(RuntimeKind::Youki));
        assert!("docker".parse::<RuntimeKind>().is_err());
    }
}
