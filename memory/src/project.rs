//! Project names: the memory a pod shares with the other pods of its
//! repository is keyed by the repository, written one way whatever URL
//! form cloned it.

/// Longest project name.
pub const MAX_PROJECT: usize = 200;

/// The project of a repository URL: host and path, lower-cased host, no
/// scheme, credentials, port, `.git` or trailing slash
/// (`https://GitHub.com/Owner/Repo.git` → `github.com/Owner/Repo`).
pub fn from_repository_url(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let (host, path) = rest.split_once('/')?;
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
    let project = format!("{host}/{path}");
    (!host.is_empty() && !path.is_empty() && check(&project).is_ok()).then_some(project)
}

/// Why a project name is refused: 1 to 200 printable characters, no
/// spaces.
pub fn check(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_PROJECT || !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!("project {name:?}: use 1 to {MAX_PROJECT} printable ASCII characters without spaces (a repository like github.com/owner/repo)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_url_form_of_a_repository_names_one_project() {
        for url in [
            "https://github.com/Owner/Repo",
            "https://GitHub.com/Owner/Repo.git",
            "http://token:x@github.com:443/Owner/Repo/",
            "github.com/Owner/Repo.git/",
        ] {
            assert_eq!(from_repository_url(url).as_deref(), Some("github.com/Owner/Repo"), "{url}");
        }
        assert_eq!(from_repository_url("https://github.com"), None);
        assert_eq!(from_repository_url("https://host/with space"), None);
        assert!(check("pod:1234").is_ok());
        assert!(check("").is_err() && check(&"x".repeat(201)).is_err() && check("a b").is_err());
    }
}
