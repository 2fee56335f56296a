//! What can go wrong talking to GitHub.

/// A failed GitHub call or a bad App credential.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// The private key is not an RSA key in PEM (PKCS#1 or PKCS#8).
    #[error("the GitHub App's private key is not an RSA private key in PEM: {0}")]
    Key(String),
    /// 401: the App's JWT or a token was refused.
    #[error("GitHub refused the credentials ({0}); check the App id and private key")]
    Unauthorized(String),
    /// 403 that is not a rate limit: the App lacks a permission, or the
    /// organisation forbids the operation (deploy keys, for instance).
    #[error("GitHub refused the operation: {0}")]
    Forbidden(String),
    /// 404: the repository, installation or object does not exist, or the
    /// installation cannot see it.
    #[error("not found on GitHub: {0}")]
    NotFound(String),
    /// 422: GitHub refused the request's content ("key is already in use").
    #[error("GitHub refused the request: {0}")]
    Invalid(String),
    /// 429, or 403 with the rate limit exhausted.
    #[error("GitHub's rate limit is reached: {0}")]
    RateLimited(String),
    /// Another status (5xx above all).
    #[error("GitHub answered {status}: {message}")]
    Status { status: u16, message: String },
    /// No answer (connection, timeout, TLS) or an answer that is not
    /// GitHub's JSON.
    #[error("GitHub could not be reached or answered something unreadable: {0}")]
    Transport(String),
}

impl GithubError {
    /// Whether trying again later may succeed (server errors, rate
    /// limits, transport failures); a refusal will not change by itself.
    pub fn retryable(&self) -> bool {
        match self {
            Self::RateLimited(_) | Self::Transport(_) => true,
            Self::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// From a status code and GitHub's `message`.
    pub fn from_status(status: u16, message: String, rate_limit_left: Option<u64>) -> Self {
        match status {
            401 => Self::Unauthorized(message),
            403 if rate_limit_left == Some(0) => Self::RateLimited(message),
            403 => Self::Forbidden(message),
            404 => Self::NotFound(message),
            422 => Self::Invalid(message),
            429 => Self::RateLimited(message),
            _ => Self::Status { status, message },
        }
    }
}

impl From<octocrab::Error> for GithubError {
    fn from(e: octocrab::Error) -> Self {
        match e {
            octocrab::Error::GitHub { source, .. } => {
                let left = source
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("x-ratelimit-remaining"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                Self::from_status(source.status_code.as_u16(), source.message, left)
            }
            other => Self::Transport(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify_and_only_transient_ones_retry() {
        let e = |s, left| GithubError::from_status(s, "m".into(), left);
        assert!(matches!(e(401, None), GithubError::Unauthorized(_)));
        assert!(matches!(e(403, Some(0)), GithubError::RateLimited(_)));
        assert!(matches!(e(403, Some(12)), GithubError::Forbidden(_)));
        assert!(matches!(e(404, None), GithubError::NotFound(_)));
        assert!(matches!(e(422, None), GithubError::Invalid(_)));
        assert!(e(429, None).retryable() && e(502, None).retryable() && e(403, Some(0)).retryable());
        assert!(!e(401, None).retryable() && !e(404, None).retryable() && !e(422, None).retryable() && !e(400, None).retryable());
    }
}
