//! Repository names as GitHub writes them, and the clone URLs they map to.

/// `owner/name` of a GitHub repository, checked against GitHub's rules
/// (owner: letters, digits and single dashes, at most 39; name: letters,
/// digits, `.`, `-`, `_`, at most 100, not `.` or `..`). Compared without
/// regard to case, as GitHub does; kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FullName {
    owner: String,
    name: String,
}

/// Why a repository name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a GitHub repository name: write it as owner/name (letters, digits, `-`; the name may also hold `.` and `_`)")]
pub struct BadFullName(pub String);

impl FullName {
    /// Parses `owner/name` (a trailing `.git` is dropped).
    pub fn parse(s: &str) -> Result<Self, BadFullName> {
        let bad = || BadFullName(s.chars().take(120).collect());
        let (owner, name) = s.trim().split_once('/').ok_or_else(bad)?;
        let name = name.strip_suffix(".git").unwrap_or(name);
        let owner_ok = (1..=39).contains(&owner.len())
            && owner.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !owner.starts_with('-')
            && !owner.ends_with('-');
        let name_ok = (1..=100).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            && name != "."
            && name != "..";
        if !owner_ok || !name_ok {
            return Err(bad());
        }
        Ok(Self { owner: owner.to_owned(), name: name.to_owned() })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The form used as a key: lower case.
    pub fn key(&self) -> String {
        format!("{}/{}", self.owner, self.name).to_ascii_lowercase()
    }

    /// `{git_url}/owner/name.git`: where git clones it from.
    pub fn clone_url(&self, git_url: &str) -> String {
        format!("{}/{}/{}.git", git_url.trim_end_matches('/'), self.owner, self.name)
    }

    /// The repository a URL names when it is on `git_url`'s host
    /// (`https://github.com/Owner/Repo`, with or without `.git` or a
    /// trailing slash); `None` for another host or path shape.
    pub fn from_clone_url(url: &str, git_url: &str) -> Option<Self> {
        let base = git_url.trim_end_matches('/').to_ascii_lowercase();
        let url = url.trim();
        let head = url.get(..base.len())?;
        if url.len() <= base.len() || !head.eq_ignore_ascii_case(&base) {
            return None;
        }
        let rest = url.get(base.len()..)?.strip_prefix('/')?.trim_end_matches('/');
        if rest.matches('/').count() != 1 || rest.contains(['?', '#']) {
            return None;
        }
        Self::parse(rest).ok()
    }
}

impl std::fmt::Display for FullName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl TryFrom<String> for FullName {
    type Error = BadFullName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<FullName> for String {
    fn from(n: FullName) -> Self {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_githubs_rules() {
        let n = FullName::parse("Octo-Org/my.repo_1.git").unwrap();
        assert_eq!((n.owner(), n.name(), n.key().as_str()), ("Octo-Org", "my.repo_1", "octo-org/my.repo_1"));
        for bad in ["", "a", "a/", "/b", "a/b/c", "-a/b", "a-/b", "a/..", "a/.", "a b/c", "a/b c", "a/b%2F", &format!("{}/b", "x".repeat(40))] {
            assert!(FullName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clone_urls_round_trip_on_the_configured_host_only() {
        let n = FullName::parse("octo/app").unwrap();
        assert_eq!(n.clone_url("https://github.com/"), "https://github.com/octo/app.git");
        for url in ["https://github.com/octo/app", "https://GitHub.com/octo/app.git", "https://github.com/octo/app/"] {
            assert_eq!(FullName::from_clone_url(url, "https://github.com"), Some(n.clone()), "{url}");
        }
        for url in ["https://gitlab.com/octo/app", "https://github.com/octo", "https://github.com/octo/app/tree/x", "https://github.com.evil/octo/app", "https://github.com/octo/app?x", "https://githubé.com/a/b", "é"] {
            assert_eq!(FullName::from_clone_url(url, "https://github.com"), None, "{url}");
        }
    }
}
