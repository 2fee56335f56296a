//! Webhook deliveries: the signature, and the events Pinacle acts on.
//!
//! A delivery is trusted only when `X-Hub-Signature-256` is the
//! HMAC-SHA256 of the exact body under the App's webhook secret, compared
//! in constant time (octocrab's verifier; `sha1=` is refused). The events
//! are read into small structs holding what Pinacle uses; every other
//! event is [`Event::Other`] (acknowledged, ignored).

use serde::Deserialize;

/// The largest body taken (GitHub caps payloads at 25 MB; pushes of many
/// commits are the large ones, and Pinacle reads none of their commits).
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the delivery has no X-Hub-Signature-256 header")]
    MissingSignature,
    #[error("the delivery's X-Hub-Signature-256 does not match its body")]
    BadSignature,
    #[error("the delivery has no X-GitHub-Event or X-GitHub-Delivery header")]
    MissingHeader,
    #[error("the {event} payload is malformed: {message}")]
    Malformed { event: String, message: String },
}

/// Checks the signature header against the body.
pub fn verify(secret: &[u8], signature: Option<&str>, body: &[u8]) -> Result<(), WebhookError> {
    let signature = signature.ok_or(WebhookError::MissingSignature)?;
    octocrab::models::webhook_events::verification::verify_signature(signature, secret, body).map_err(|_| WebhookError::BadSignature)
}

/// `sha256=<hex>` of `body` under `secret`: what GitHub sends (for tests
/// and the benchmark's sender).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// An account (user or organisation).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Account {
    pub id: u64,
    pub login: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// A repository as events name it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RepoRef {
    pub id: u64,
    pub full_name: String,
    #[serde(default)]
    pub private: bool,
    #[serde(default)]
    pub default_branch: Option<String>,
}

/// The installation an event came through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstallationRef {
    pub id: u64,
    #[serde(default)]
    pub account: Option<Account>,
}

/// One side of a pull request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Side {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    /// None when a fork was deleted.
    #[serde(default)]
    pub repo: Option<RepoRef>,
}

/// A pull request as its events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub head: Side,
    pub base: Side,
    #[serde(default)]
    pub merged: bool,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub user: Option<Account>,
    #[serde(default)]
    pub html_url: Option<String>,
    /// When the pull request last changed: orders `synchronize` events
    /// that arrive out of order.
    #[serde(default)]
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl PullRequest {
    /// Whether the head is in another repository than the base (a fork):
    /// its code is untrusted.
    pub fn from_fork(&self) -> bool {
        match (&self.head.repo, &self.base.repo) {
            (Some(h), Some(b)) => h.id != b.id,
            _ => true,
        }
    }
}

/// `pull_request`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    pub number: u64,
    pub pull_request: PullRequest,
    pub repository: RepoRef,
    #[serde(default)]
    pub installation: Option<InstallationRef>,
    #[serde(default)]
    pub sender: Option<Account>,
}

/// `push`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PushEvent {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub before: String,
    pub after: String,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub forced: bool,
    pub repository: RepoRef,
    #[serde(default)]
    pub installation: Option<InstallationRef>,
}

impl PushEvent {
    /// The branch pushed to (`refs/heads/…`); `None` for tags.
    pub fn branch(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/heads/")
    }
}

/// `installation`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstallationEvent {
    pub action: String,
    pub installation: InstallationRef,
    /// Present on `created`: what it was installed on (for "selected").
    #[serde(default)]
    pub repositories: Option<Vec<RepoRef>>,
    #[serde(default)]
    pub sender: Option<Account>,
}

/// `installation_repositories`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstallationRepositoriesEvent {
    pub action: String,
    pub installation: InstallationRef,
    #[serde(default)]
    pub repositories_added: Vec<RepoRef>,
    #[serde(default)]
    pub repositories_removed: Vec<RepoRef>,
    #[serde(default)]
    pub sender: Option<Account>,
}

/// An event Pinacle acts on, or another one it acknowledges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ping,
    Installation(InstallationEvent),
    InstallationRepositories(InstallationRepositoriesEvent),
    PullRequest(Box<PullRequestEvent>),
    Push(Box<PushEvent>),
    /// Any other event: acknowledged and ignored.
    Other { event: String },
}

impl Event {
    /// Reads a verified delivery's body by its `X-GitHub-Event` name.
    pub fn parse(event: &str, body: &[u8]) -> Result<Self, WebhookError> {
        fn read<T: serde::de::DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, WebhookError> {
            serde_json::from_slice(body).map_err(|e| WebhookError::Malformed { event: event.to_owned(), message: e.to_string() })
        }
        Ok(match event {
            "ping" => {
                let _: serde_json::Value = read(event, body)?;
                Self::Ping
            }
            "installation" => Self::Installation(read(event, body)?),
            "installation_repositories" => Self::InstallationRepositories(read(event, body)?),
            "pull_request" => Self::PullRequest(Box::new(read(event, body)?)),
            "push" => Self::Push(Box::new(read(event, body)?)),
            other => {
                let _: serde_json::Value = read(other, body)?;
                Self::Other { event: other.chars().take(64).collect() }
            }
        })
    }

    /// The event's action, when it has one.
    pub fn action(&self) -> Option<&str> {
        match self {
            Self::Installation(e) => Some(&e.action),
            Self::InstallationRepositories(e) => Some(&e.action),
            Self::PullRequest(e) => Some(&e.action),
            Self::Ping | Self::Push(_) | Self::Other { .. } => None,
        }
    }

    /// The repository it is about, when one.
    pub fn repository(&self) -> Option<&str> {
        match self {
            Self::PullRequest(e) => Some(&e.repository.full_name),
            Self::Push(e) => Some(&e.repository.full_name),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr_body(action: &str, head_repo: u64) -> Vec<u8> {
        serde_json::json!({
            "action": action, "number": 7,
            "pull_request": {
                "number": 7, "merged": false, "draft": false, "updated_at": "2026-12-07T10:00:00Z",
                "user": {"id": 9, "login": "dev", "type": "User"},
                "head": {"ref": "feature", "sha": "a".repeat(40), "repo": {"id": head_repo, "full_name": "dev/app", "private": false}},
                "base": {"ref": "main", "sha": "b".repeat(40), "repo": {"id": 1, "full_name": "octo/app", "private": true}}
            },
            "repository": {"id": 1, "full_name": "octo/app", "private": true, "default_branch": "main"},
            "installation": {"id": 42},
            "sender": {"id": 9, "login": "dev", "type": "User"}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn signatures_are_checked_over_the_exact_body() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let sig = sign(b"s3cret", body);
        assert!(verify(b"s3cret", Some(&sig), body).is_ok());
        assert_eq!(verify(b"other", Some(&sig), body), Err(WebhookError::BadSignature));
        assert_eq!(verify(b"s3cret", Some(&sig), br#"{"zen":"Keep it logically awesome!"}"#), Err(WebhookError::BadSignature));
        assert_eq!(verify(b"s3cret", None, body), Err(WebhookError::MissingSignature));
        for bad in ["", "sha256=", "sha256=zz", "sha1=0123456789abcdef0123456789abcdef01234567", &sig[7..]] {
            assert_eq!(verify(b"s3cret", Some(bad), body), Err(WebhookError::BadSignature), "{bad}");
        }
        // GitHub's documented example (its docs: "Validating webhook deliveries")
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn pull_requests_are_read_with_their_fork_status() {
        let Event::PullRequest(e) = Event::parse("pull_request", &pr_body("opened", 1)).unwrap() else { panic!() };
        assert_eq!((e.action.as_str(), e.number, e.installation.as_ref().map(|i| i.id)), ("opened", 7, Some(42)));
        assert!(!e.pull_request.from_fork());
        assert_eq!(e.pull_request.head.sha, "a".repeat(40));
        let Event::PullRequest(e) = Event::parse("pull_request", &pr_body("synchronize", 2)).unwrap() else { panic!() };
        assert!(e.pull_request.from_fork());
    }

    #[test]
    fn unknown_events_pass_and_malformed_ones_name_the_event() {
        assert_eq!(Event::parse("star", br#"{"action":"created"}"#).unwrap(), Event::Other { event: "star".into() });
        assert!(matches!(Event::parse("pull_request", br#"{"action":"opened"}"#), Err(WebhookError::Malformed { event, .. }) if event == "pull_request"));
        assert!(matches!(Event::parse("star", b"not json"), Err(WebhookError::Malformed { .. })));
        let push = serde_json::json!({"ref": "refs/heads/main", "before": "0".repeat(40), "after": "1".repeat(40),
            "repository": {"id": 1, "full_name": "octo/app"}, "installation": {"id": 42}});
        let Event::Push(p) = Event::parse("push", push.to_string().as_bytes()).unwrap() else { panic!() };
        assert_eq!(p.branch(), Some("main"));
    }
}
