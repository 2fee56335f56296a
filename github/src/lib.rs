//! The GitHub App (issue 20): what Pinacle needs of GitHub, apart from
//! storage and HTTP routes (those are the API server's, `api/src/github`).
//!
//! - [`app`]: the App's identity (an RS256 JWT signed with its private
//!   key, made with `ring`) and [`app::GithubApp`], the REST client over
//!   octocrab: repository-scoped installation tokens (cached until 30
//!   minutes before they expire), repositories, branches, file contents,
//!   collaborator permissions, deploy keys, issue comments and check runs.
//! - [`webhook`]: `X-Hub-Signature-256` checked in constant time
//!   (octocrab's verifier), and the few events Pinacle acts on, read into
//!   small typed structs (octocrab's own webhook types are still marked
//!   beta and demand fields GitHub leaves out of some deliveries).
//! - [`preview`]: the sticky pull-request comment and the check run's
//!   text, pure.
//! - [`repo`]: repository full names and the clone URLs they map to.
//!
//! Errors are [`GithubError`], classified by GitHub's status code, never by
//! message text; [`GithubError::retryable`] says which are worth another
//! try.

pub mod app;
pub mod error;
pub mod preview;
pub mod repo;
pub mod webhook;

pub use error::GithubError;
