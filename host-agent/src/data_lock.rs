//! Locks over a host's data directory: one holder at a time among the
//! tasks of this process (an async mutex, so no thread blocks) and among
//! processes sharing the data directory (`flock` on a lock file), such as
//! `pinacle up` and a separate `pinacle agent` started on the same data.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::AgentError;

/// Held until dropped.
pub struct Held {
    _file: Flock<std::fs::File>,
    _task: tokio::sync::MutexGuard<'static, ()>,
}

/// Waits for `task` (this process) and then the lock file at `path`
/// (made if missing, mode 0600).
pub async fn hold(task: &'static tokio::sync::Mutex<()>, path: &Path) -> Result<Held, AgentError> {
    let guard = task.lock().await;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(AgentError::io("opening lock file", path))?;
    let locked = tokio::task::spawn_blocking(move || Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e))
        .await
        .map_err(|e| AgentError::Bundle(format!("lock task: {e}")))?
        .map_err(|e| AgentError::io("locking", path)(e.into()))?;
    Ok(Held { _file: locked, _task: guard })
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn holders_take_turns_in_this_process_and_against_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.lock");
        let held = hold(&TEST_LOCK, &path).await.unwrap();
        // another process (flock(1)) cannot take it while held...
        let busy = std::process::Command::new("flock").args(["-n"]).arg(&path).arg("true").status().unwrap();
        assert!(!busy.success(), "another process took a held lock");
        // ...nor another task
        let waiting = tokio::spawn({
            let path = path.clone();
            async move { hold(&TEST_LOCK, &path).await.map(|_| ()) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        drop(held);
        waiting.await.unwrap().unwrap();
        let free = std::process::Command::new("flock").args(["-n"]).arg(&path).arg("true").status().unwrap();
        assert!(free.success());
    }
}
