//! `pinacle-runsc-build`: gVisor's `runsc` as buildah's OCI runtime for the
//! `RUN` steps of Dockerfile builds ([`pinacle_host_agent::dockerfile`]).
//!
//! buildah runs a step as `RUNTIME create --pid-file F ID`, `start`, polls
//! `state`, reaps the process named in F with `wait4` (it is a child
//! subreaper) and then calls `delete`. runsc's `create` leaves two processes
//! behind, the sandbox and the gofer; buildah reaps only the first, so the
//! gofer stays a zombie and `runsc delete` waits for it until its deadline
//! (5 s) and fails the step. This wrapper passes every command to runsc
//! unchanged except `create`, which it runs from a small keeper process: the
//! keeper is a child subreaper, so both runsc processes become its children
//! when `runsc create` exits; it writes its own pid into F, reaps both, and
//! exits with the sandbox's status (the step's exit code, or 128 + signal).
//! buildah's `wait4` on the keeper therefore gives the step's real status.
//!
//! The runsc binary is `PINACLE_RUNSC` if set, else `runsc` on `PATH`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

fn runsc() -> OsString {
    std::env::var_os("PINACLE_RUNSC").unwrap_or_else(|| "runsc".into())
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let is_create = args.iter().find(|a| !a.to_string_lossy().starts_with('-')).is_some_and(|a| a == "create");
    if !is_create {
        let err = Command::new(runsc()).args(&args).exec();
        eprintln!("pinacle-runsc-build: cannot run runsc: {err}");
        return ExitCode::from(127);
    }
    match create(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pinacle-runsc-build: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `runsc create` from a keeper process; returns once the container is
/// created (0) or creation failed (runsc's status).
fn create(mut args: Vec<OsString>) -> Result<u8, String> {
    let at = args.iter().position(|a| a == "--pid-file").ok_or("create without --pid-file")?;
    let real = args.get(at + 1).cloned().ok_or("--pid-file without a path")?;
    let mut sandbox_file = real.clone();
    sandbox_file.push(".sandbox");
    args[at + 1] = sandbox_file.clone();
    let (rx, tx) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (mut rx, tx) = (std::fs::File::from(rx), std::fs::File::from(tx));
    // SAFETY: this process is single-threaded here; the child only runs
    // async-signal-safe work until it spawns runsc (a fresh exec).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => {
            drop(tx);
            let mut answer = Vec::new();
            let _ = rx.read_to_end(&mut answer);
            let code = std::str::from_utf8(&answer).ok().and_then(|s| s.trim().parse::<u8>().ok()).unwrap_or(1);
            Ok(code)
        }
        ForkResult::Child => {
            drop(rx);
            let code = keeper(args, &real, &sandbox_file, tx);
            std::process::exit(code);
        }
    }
}

fn keeper(args: Vec<OsString>, real: &OsString, sandbox_file: &OsString, mut tx: std::fs::File) -> i32 {
    let mut tell = |code: i32| {
        let _ = write!(tx, "{code}");
    };
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("pinacle-runsc-build: cannot become a child subreaper: {e}");
        tell(1);
        return 1;
    }
    let status = match Command::new(runsc()).args(&args).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pinacle-runsc-build: cannot run runsc: {e}");
            tell(127);
            return 127;
        }
    };
    if !status.success() {
        let code = status.code().unwrap_or(1);
        tell(code);
        return code;
    }
    let sandbox = std::fs::read_to_string(sandbox_file).ok().and_then(|s| s.trim().parse::<i32>().ok()).filter(|p| *p > 0);
    let Some(sandbox) = sandbox else {
        eprintln!("pinacle-runsc-build: runsc create wrote no sandbox pid");
        tell(1);
        return 1;
    };
    if let Err(e) = std::fs::write(real, std::process::id().to_string()) {
        eprintln!("pinacle-runsc-build: cannot write the pid file: {e}");
        tell(1);
        return 1;
    }
    // buildah's output pipes must close when the step's process exits, not
    // when the keeper does.
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    tell(0);
    drop(tx);
    let mut code = 1;
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, c)) if pid.as_raw() == sandbox => code = c,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == sandbox => code = 128 + sig as i32,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            // ECHILD: the sandbox and the gofer are both gone.
            Err(_) => break,
        }
    }
    code
}
