//! Reading a repository's configuration to pre-fill the web app's new-pod
//! form: its `pinacle.yaml`, or else its devcontainer.json imported as one.
//! GitHub repositories only, read through GitHub's REST API (octocrab).

use super::{check_config, diagnostics_of, RepositoryConfig};
use crate::ApiError;

/// Files looked for, in order.
pub const CANDIDATES: [&str; 4] = [
    "pinacle.yaml",
    "pinacle.yml",
    ".devcontainer/devcontainer.json",
    ".devcontainer.json",
];

/// A GitHub repository named by a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub owner: String,
    pub repo: String,
    /// A branch, tag or commit (`/tree/REF`); none: the default branch.
    pub git_ref: Option<String>,
}

/// Reads `https://github.com/OWNER/REPO[.git][/tree/REF]` (`web_url` is the
/// GitHub site's address); `None` for anything else.
pub fn parse_repo_url(url: &str, web_url: &str) -> Option<RepoRef> {
    let web = web_url.trim_end_matches('/');
    let rest = url.trim().strip_prefix(web)?.strip_prefix('/')?;
    let mut parts = rest.trim_end_matches('/').split('/');
    let owner = parts.next().filter(|s| valid_name(s))?.to_owned();
    let repo = parts.next()?.trim_end_matches(".git").to_owned();
    if !valid_name(&repo) {
        return None;
    }
    let git_ref = match parts.next() {
        None => None,
        Some("tree") => {
            let r = parts.collect::<Vec<_>>().join("/");
            let ok = !r.is_empty()
                && r.len() <= 200
                && !r.contains("..")
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
            Some(r).filter(|_| ok)?.into()
        }
        Some(_) => return None,
    };
    Some(RepoRef {
        owner,
        repo,
        git_ref,
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s != "."
        && s != ".."
}

/// Repositories' configurations, read from GitHub (or the GitHub
/// Enterprise the sign-in is configured with).
#[derive(Clone)]
pub struct RepositoryConfigs {
    github: std::sync::Arc<std::sync::OnceLock<crate::github::GithubConfig>>,
}

impl RepositoryConfigs {
    pub fn new(github: std::sync::Arc<std::sync::OnceLock<crate::github::GithubConfig>>) -> Self {
        Self { github }
    }

    /// The configuration of the repository at `url`.
    pub async fn repository_config(&self, url: &str) -> Result<RepositoryConfig, ApiError> {
        let (web_url, api_url) = match self.github.get() {
            Some(g) => (g.oauth_url.clone(), g.api_url.clone()),
            None => (
                "https://github.com".to_owned(),
                "https://api.github.com".to_owned(),
            ),
        };
        let repo = parse_repo_url(url, &web_url).ok_or_else(|| {
            ApiError::bad_request(
                "unsupported_repository",
                format!("only GitHub repositories can be read ({web_url}/OWNER/REPO, optionally /tree/BRANCH); paste the pinacle.yaml instead"),
            )
        })?;
        let octo = octocrab::Octocrab::builder()
            .base_uri(api_url.as_str())
            .map_err(ApiError::internal)?
            .build()
            .map_err(ApiError::internal)?;
        for file in CANDIDATES {
            let Some(text) = fetch(&octo, &repo, file).await? else {
                continue;
            };
            if file.ends_with(".json") {
                return Ok(
                    match pinacle_config::devcontainer::import(file, &text) {
                        Ok(imported) => {
                            let yaml =
                                pinacle_config::pinacle_yaml::to_canonical_yaml(&imported.config);
                            let mut check = check_config("pinacle.yaml", &yaml);
                            let mut diagnostics = diagnostics_of(&imported.report);
                            diagnostics.append(&mut check.diagnostics);
                            RepositoryConfig {
                                file: file.to_owned(),
                                pinacle_yaml: yaml,
                                diagnostics,
                            }
                        }
                        Err(d) => RepositoryConfig {
                            file: file.to_owned(),
                            pinacle_yaml: String::new(),
                            diagnostics: diagnostics_of(&d),
                        },
                    },
                );
            }
            let check = check_config(file, &text);
            return Ok(RepositoryConfig {
                file: file.to_owned(),
                pinacle_yaml: text,
                diagnostics: check.diagnostics,
            });
        }
        Err(ApiError::not_found(format!(
            "{}/{} has no {} at its root; start from a template instead",
            repo.owner,
            repo.repo,
            CANDIDATES.join(", ")
        )))
    }
}

/// A file's text, `None` when the repository has no such file.
async fn fetch(
    octo: &octocrab::Octocrab,
    repo: &RepoRef,
    path: &str,
) -> Result<Option<String>, ApiError> {
    let handler = octo.repos(&repo.owner, &repo.repo);
    let mut request = handler.get_content().path(path);
    if let Some(r) = &repo.git_ref {
        request = request.r#ref(r);
    }
    match request.send().await {
        Ok(items) => Ok(items
            .items
            .into_iter()
            .next()
            .and_then(|i| i.decoded_content())),
        Err(octocrab::Error::GitHub { source, .. }) if source.status_code.as_u16() == 404 => {
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, owner = %repo.owner, repo = %repo.repo, "reading a repository failed");
            Err(ApiError::bad_gateway("github_unavailable",
                format!(
                    "GitHub did not answer for {}/{}; try again",
                    repo.owner, repo.repo
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_are_read_strictly() {
        let gh = "https://github.com";
        let r = |owner: &str, repo: &str, git_ref: Option<&str>| {
            Some(RepoRef {
                owner: owner.into(),
                repo: repo.into(),
                git_ref: git_ref.map(Into::into),
            })
        };
        assert_eq!(
            parse_repo_url("https://github.com/acme/app", gh),
            r("acme", "app", None)
        );
        assert_eq!(
            parse_repo_url("https://github.com/acme/app.git", gh),
            r("acme", "app", None)
        );
        assert_eq!(
            parse_repo_url("https://github.com/acme/app/tree/feature/x", gh),
            r("acme", "app", Some("feature/x"))
        );
        assert_eq!(parse_repo_url("https://gitlab.com/acme/app", gh), None);
        assert_eq!(parse_repo_url("https://github.com/acme", gh), None);
        assert_eq!(parse_repo_url("https://github.com/../etc", gh), None);
        assert_eq!(
            parse_repo_url("https://github.com/acme/app/blob/main/x", gh),
            None
        );
        assert_eq!(
            parse_repo_url("https://github.com.evil.com/acme/app", gh),
            None
        );
    }
}
