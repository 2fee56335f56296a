//! The seam between the router and the sandbox that runs subprocess
//! modules: the server hands the router a [`ModuleSandbox`] (the host
//! agent's gVisor runner, the same runtime as pods); tests may hand a fake.

use std::path::Path;
use std::time::Duration;

/// One run of a subprocess module.
#[derive(Debug, Clone)]
pub struct SandboxJob<'a> {
    /// The image its root filesystem comes from (read-only).
    pub image: &'a str,
    /// The module's files, mounted read-only at `/module`.
    pub files: &'a Path,
    /// The program and its arguments.
    pub command: &'a [String],
    pub memory_mb: u32,
    /// Wall time, from start to exit; past it the sandbox is killed.
    pub timeout: Duration,
    /// Most bytes of standard output read; more is an error.
    pub max_output: usize,
}

/// Why a sandboxed run did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    #[error("ran past its time limit and was killed")]
    Timeout,
    #[error("wrote more than {0} bytes")]
    OutputTooLarge(usize),
    #[error("exited with status {status}: {stderr}")]
    Exited { status: i32, stderr: String },
    /// The sandbox could not be made (no runtime, no image).
    #[error("{0}")]
    Unavailable(String),
}

/// Runs a module's program in a sandbox with no network: its input on
/// standard input, its answer read from standard output.
pub trait ModuleSandbox: Send + Sync {
    /// Whether `image` can run here (checked when the registry loads).
    fn check_image(&self, image: &str) -> Result<(), String>;
    /// Runs `job` to its end (blocking: called off the async runtime).
    fn run(&self, job: &SandboxJob<'_>, input: &[u8]) -> Result<Vec<u8>, SandboxError>;
}
