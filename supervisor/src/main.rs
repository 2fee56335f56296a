//! `pinacle-supervisor`: the pod's first process. See the library's docs.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinacle_supervisor::config::{ProcessSpec, Restart, Step, SupervisorConfig};
use pinacle_supervisor::protocol::{
    read_frame, write_frame, write_json, Control, ErrorCode, ExecSpec, ExitStatus, FileEntry, FrameKind, Op, ProcessStatus, Request,
    Response, StepStatus, WindowSize,
};
use pinacle_supervisor::{paths, restart_delay, secrets_match, LogRing, STABLE_AFTER};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// musl's allocator, keeping a few large blocks for reuse (for the SFTP
/// mode's requests).
#[global_allocator]
static ALLOCATOR: pinacle_supervisor::alloc::BlockCache = pinacle_supervisor::alloc::BlockCache::new();

/// Bytes of each process's log kept in memory.
const RING_BYTES: usize = 256 * 1024;
/// A process log file is rotated (to `.1`) past this size.
const LOG_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// After a command exits, output still arriving is read until it pauses
/// this long (a background job may hold the pipe open for ever).
const DRAIN_IDLE: Duration = Duration::from_millis(200);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes a line to the console. A console that cannot be written (the
/// pod's disk, where it lives, is full) loses the line: pid 1 must not
/// panic over its own log.
fn log(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "pinacle-supervisor: {msg}");
}

// ---------------------------------------------------------------------------
// Reaping: as PID 1 the supervisor waits for every child, its own and the
// orphans the kernel hands it, and tells the owner of a pid how it ended.

type Pipes = (Option<OwnedFd>, Option<OwnedFd>, Option<OwnedFd>);

/// A started child.
struct Spawned {
    pid: i32,
    exited: oneshot::Receiver<ExitStatus>,
    pipes: Pipes,
}

#[derive(Default)]
struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

impl Reaper {
    /// Spawns `cmd`; the receiver gets its exit status. Returns the
    /// parent's ends of any piped stdin, stdout and stderr.
    fn spawn(&self, cmd: &mut std::process::Command) -> io::Result<Spawned> {
        // Held across the fork: the reaper cannot report the pid before
        // the waiter is in place.
        let mut waiters = lock(&self.waiters);
        let mut child = cmd.spawn()?;
        let pid = i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        let pipes = (child.stdin.take().map(OwnedFd::from), child.stdout.take().map(OwnedFd::from), child.stderr.take().map(OwnedFd::from));
        Ok(Spawned { pid, exited: rx, pipes })
    }

    async fn run(self: Arc<Self>) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) else {
            log("cannot watch SIGCHLD; children will not be reaped");
            return;
        };
        loop {
            loop {
                // Under the waiters lock, which `spawn` holds until the
                // child has exec'd: a child whose exec failed is std's to
                // reap (it waits for it, and panics if it is gone).
                let mut waiters = lock(&self.waiters);
                let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus { code, signal: None }),
                    Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus { code: 128 + sig as i32, signal: Some(sig as i32) }),
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                };
                if let Some(tx) = waiters.remove(&pid.as_raw()) {
                    let _ = tx.send(status);
                }
            }
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Commands

fn base_command(argv: &[String], env: &[String], cwd: &str) -> Result<std::process::Command, String> {
    let program = argv.first().filter(|p| !p.is_empty()).ok_or("command must name a program")?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(&argv[1..]).env_clear();
    for kv in env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let dir = if Path::new(cwd).is_dir() { cwd } else { "/" };
    cmd.current_dir(dir);
    Ok(cmd)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    fcntl(fd, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    Ok(())
}

/// A pty master, read and written asynchronously.
struct Pty(AsyncFd<OwnedFd>);

impl Pty {
    fn new(master: OwnedFd) -> io::Result<Self> {
        set_nonblocking(master.as_raw_fd())?;
        // SAFETY: the OwnedFd is valid and is neither replaced nor closed
        // while the AsyncFd owns it.
        Ok(Self(unsafe { AsyncFd::register(master)? }))
    }

    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            let fd = self.0.get_ref().as_raw_fd();
            // SAFETY: fd is open for the life of self; buf is valid for len bytes.
            match guard.try_io(|_| {
                let n = unsafe { nix::libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            let fd = self.0.get_ref().as_raw_fd();
            // SAFETY: as in read.
            match guard.try_io(|_| {
                let n = unsafe { nix::libc::write(fd, data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    fn resize(&self, size: WindowSize) {
        let ws = nix::libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
        unsafe {
            nix::libc::ioctl(self.0.get_ref().as_raw_fd(), nix::libc::TIOCSWINSZ, &ws);
        }
    }
}

fn signal_group(pid: i32, sig: i32) {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
        // the command leads its own process group (setsid)
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-pid), sig);
    }
}

/// Output frames to the client, written by one task.
type Out = mpsc::Sender<(FrameKind, Vec<u8>)>;

fn spawn_writer(mut w: OwnedWriteHalf) -> Out {
    let (tx, mut rx) = mpsc::channel::<(FrameKind, Vec<u8>)>(64);
    tokio::spawn(async move {
        while let Some((kind, data)) = rx.recv().await {
            if write_frame(&mut w, kind, &data).await.is_err() {
                return;
            }
        }
    });
    tx
}

/// Starts `spec`'s command: on a new pseudo-terminal (returned) when it
/// asks for one, else on pipes (in [`Spawned::pipes`]).
fn spawn_command(state: &State, spec: &ExecSpec) -> Result<(Spawned, Option<Arc<Pty>>), String> {
    let mut env = state.config.env.clone();
    env.extend(state.config.pod.env.iter().cloned());
    env.extend(spec.env.iter().cloned());
    let mut cmd = base_command(&spec.argv, &env, spec.cwd.as_deref().unwrap_or("/workspace"))?;
    let mut pty = None;
    if let Some(size) = spec.tty {
        let ws = nix::pty::Winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
        let pair = nix::pty::openpty(Some(&ws), None).map_err(|e| format!("no pseudo-terminal: {e}"))?;
        let (Ok(a), Ok(b), Ok(c)) = (pair.slave.try_clone(), pair.slave.try_clone(), pair.slave.try_clone()) else {
            return Err("no pseudo-terminal: out of file descriptors".into());
        };
        cmd.stdin(Stdio::from(a)).stdout(Stdio::from(b)).stderr(Stdio::from(c));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(io::Error::from)?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        pty = Some(pair.master);
    } else {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
        }
    }
    let spawned = state.reaper.spawn(&mut cmd).map_err(|e| format!("cannot run {}: {e}", spec.argv[0]))?;
    drop(cmd); // closes the parent's copies of the child's ends
    let pty = match pty {
        Some(master) => match Pty::new(master) {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                signal_group(spawned.pid, nix::libc::SIGKILL);
                return Err(format!("pseudo-terminal: {e}"));
            }
        },
        None => None,
    };
    Ok((spawned, pty))
}

async fn refuse_on(out: &Out, message: String) {
    let resp = serde_json::to_vec(&Response::Error { code: ErrorCode::Invalid, message }).unwrap_or_default();
    let _ = out.send((FrameKind::Response, resp)).await;
}

// ---------------------------------------------------------------------------
// Terminal sessions: a shell on a pty that outlives its connection.

/// Recent output of a terminal session, replayed when a client re-attaches.
const SESSION_REPLAY_BYTES: usize = 64 * 1024;
/// Most terminal sessions alive at once in a pod. A new one past it ends
/// the session detached the longest (hung up); when every session has a
/// client, it is refused.
const MAX_TERMINAL_SESSIONS: usize = 32;

struct TerminalSession {
    pid: i32,
    pty: Arc<Pty>,
    shared: Mutex<SessionShared>,
}

#[derive(Default)]
struct SessionShared {
    /// The last [`SESSION_REPLAY_BYTES`] of output.
    recent: std::collections::VecDeque<u8>,
    /// The client receiving output now, and its attach number.
    attached: Option<(u64, Out)>,
    next_attach: u64,
    /// How the command ended, once it has.
    ended: Option<ExitStatus>,
    /// Since when no client is attached.
    detached_since: Option<Instant>,
}

/// The id of the session detached the longest, if any is detached.
fn longest_detached(terminals: &HashMap<String, Arc<TerminalSession>>) -> Option<String> {
    terminals
        .iter()
        .filter_map(|(id, s)| lock(&s.shared).detached_since.map(|t| (t, id)))
        .min()
        .map(|(_, id)| id.clone())
}

/// Starts session `id`'s command and the tasks that pump its output and
/// wait for its end. Called with the session table locked.
fn start_session(state: &Arc<State>, spec: &ExecSpec, id: &str) -> Result<Arc<TerminalSession>, String> {
    let (spawned, pty) = spawn_command(state, spec)?;
    let pty = pty.ok_or("a terminal session needs a pseudo-terminal")?;
    let session = Arc::new(TerminalSession { pid: spawned.pid, pty, shared: Mutex::new(SessionShared::default()) });
    let pump = {
        let session = Arc::clone(&session);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match session.pty.read(&mut buf).await {
                    Ok(0) | Err(_) => return, // EIO: every slave end is closed
                    Ok(n) => n,
                };
                let target = {
                    let mut shared = lock(&session.shared);
                    shared.recent.extend(&buf[..n]);
                    let excess = shared.recent.len().saturating_sub(SESSION_REPLAY_BYTES);
                    shared.recent.drain(..excess);
                    shared.attached.as_ref().map(|(_, out)| out.clone())
                };
                if let Some(out) = target {
                    let _ = out.send((FrameKind::Stdout, buf[..n].to_vec())).await;
                }
            }
        })
    };
    let (state, session_w, id) = (Arc::clone(state), Arc::clone(&session), id.to_owned());
    tokio::spawn(async move {
        let status = spawned.exited.await.unwrap_or(ExitStatus { code: 255, signal: None });
        let abort = pump.abort_handle();
        if tokio::time::timeout(DRAIN_IDLE * 5, pump).await.is_err() {
            abort.abort();
        }
        {
            // (unless it was evicted and the id started afresh)
            let mut terminals = lock(&state.terminals);
            if terminals.get(&id).is_some_and(|s| Arc::ptr_eq(s, &session_w)) {
                terminals.remove(&id);
            }
        }
        let attached = {
            let mut shared = lock(&session_w.shared);
            shared.ended = Some(status);
            shared.attached.take()
        };
        if let Some((_, out)) = attached {
            let _ = out.send((FrameKind::Exit, serde_json::to_vec(&status).unwrap_or_default())).await;
        }
    });
    Ok(session)
}

/// Attaches a connection to terminal session `id`, starting it first when
/// it does not exist. The connection ending detaches it; the command keeps
/// running until it exits (a `Signal` control can end it).
async fn terminal_session(state: Arc<State>, mut reader: tokio::net::unix::OwnedReadHalf, out: Out, spec: ExecSpec, id: String) {
    if !pinacle_supervisor::protocol::valid_session_id(&id) {
        return refuse_on(&out, "a terminal session id is 1 to 64 letters, digits, - or _".into()).await;
    }
    let found: Result<Arc<TerminalSession>, String> = {
        let mut terminals = lock(&state.terminals);
        match terminals.get(&id) {
            Some(s) => Ok(Arc::clone(s)),
            None => {
                if terminals.len() >= MAX_TERMINAL_SESSIONS {
                    if let Some(old) = longest_detached(&terminals).and_then(|old| terminals.remove(&old)) {
                        signal_group(old.pid, nix::libc::SIGHUP);
                    }
                }
                if terminals.len() >= MAX_TERMINAL_SESSIONS {
                    Err(format!("this pod has {MAX_TERMINAL_SESSIONS} terminals in use; close one first"))
                } else {
                    start_session(&state, &spec, &id).inspect(|s| {
                        terminals.insert(id.clone(), Arc::clone(s));
                    })
                }
            }
        }
    };
    let session = match found {
        Ok(s) => s,
        Err(e) => return refuse_on(&out, e).await,
    };
    if let Some(size) = spec.tty {
        session.pty.resize(size);
    }
    let me = {
        let mut shared = lock(&session.shared);
        if let Some(status) = shared.ended {
            // it ended between the lookup and now
            let _ = out.try_send((FrameKind::Exit, serde_json::to_vec(&status).unwrap_or_default()));
            return;
        }
        let me = shared.next_attach;
        shared.next_attach += 1;
        // Queued before this client can receive anything live, so the
        // replay comes first; the channel is new, so there is room.
        if !shared.recent.is_empty() {
            let replay: Vec<u8> = shared.recent.iter().copied().collect();
            let _ = out.try_send((FrameKind::Stdout, replay));
        }
        // a client already attached is replaced: dropping its sender ends its stream
        shared.attached = Some((me, out));
        shared.detached_since = None;
        me
    };
    loop {
        match read_frame(&mut reader).await {
            Ok(Some((FrameKind::Stdin, data))) => {
                if session.pty.write_all(&data).await.is_err() {
                    break;
                }
            }
            Ok(Some((FrameKind::Control, payload))) => match serde_json::from_slice::<Control>(&payload) {
                Ok(Control::Resize(size)) => session.pty.resize(size),
                Ok(Control::Signal(sig)) => signal_group(session.pid, sig),
                Err(_) => {}
            },
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let mut shared = lock(&session.shared);
    if shared.attached.as_ref().is_some_and(|(n, _)| *n == me) {
        shared.attached = None;
        shared.detached_since = Some(Instant::now());
    }
}

async fn exec(state: Arc<State>, stream: UnixStream, spec: ExecSpec) {
    let (mut reader, writer) = stream.into_split();
    let out = spawn_writer(writer);
    if spec.tty.is_some() {
        if let Some(id) = spec.session.clone() {
            return terminal_session(state, reader, out, spec, id).await;
        }
    }
    let refuse = |message: String| {
        let out = out.clone();
        async move { refuse_on(&out, message).await }
    };
    let (spawned, pty_master) = match spawn_command(&state, &spec) {
        Ok(x) => x,
        Err(e) => return refuse(e).await,
    };
    let pid = spawned.pid;
    let mut pumps = Vec::new();
    let input: mpsc::Sender<Option<Vec<u8>>>;
    let mut pty_handle: Option<Arc<Pty>> = None;
    match pty_master {
        Some(master) => {
            pty_handle = Some(Arc::clone(&master));
            let (tx, mut rx) = mpsc::channel::<Option<Vec<u8>>>(64);
            input = tx;
            let m = Arc::clone(&master);
            tokio::spawn(async move {
                while let Some(Some(data)) = rx.recv().await {
                    if m.write_all(&data).await.is_err() {
                        return;
                    }
                }
            });
            let (m, out) = (Arc::clone(&master), out.clone());
            pumps.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match m.read(&mut buf).await {
                        Ok(0) | Err(_) => return, // EIO: every slave end is closed
                        Ok(n) => {
                            if out.send((FrameKind::Stdout, buf[..n].to_vec())).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }));
        }
        None => {
            let (tx, mut rx) = mpsc::channel::<Option<Vec<u8>>>(64);
            input = tx;
            // the child's pipes, taken from the std child that Reaper spawned
            let (stdin, stdout, stderr) = spawned.pipes;
            if let Some(stdin) = stdin {
                tokio::spawn(async move {
                    let Ok(mut w) = tokio::net::unix::pipe::Sender::from_owned_fd(stdin) else { return };
                    while let Some(Some(data)) = rx.recv().await {
                        if w.write_all(&data).await.is_err() {
                            return;
                        }
                    }
                    // None or the sender gone: stdin ends
                });
            }
            for (fd, kind) in [(stdout, FrameKind::Stdout), (stderr, FrameKind::Stderr)] {
                let Some(fd) = fd else { continue };
                let out = out.clone();
                pumps.push(tokio::spawn(async move {
                    let Ok(mut r) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else { return };
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if out.send((kind, buf[..n].to_vec())).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }));
            }
        }
    }
    // Client frames: stdin, its end, resize and signals. The client going
    // away hangs the command up.
    let client = {
        let pty = pty_handle.clone();
        tokio::spawn(async move {
            let mut input = Some(input);
            loop {
                match read_frame(&mut reader).await {
                    Ok(Some((FrameKind::Stdin, data))) => {
                        if let Some(i) = &input {
                            let _ = i.send(Some(data)).await;
                        }
                    }
                    Ok(Some((FrameKind::StdinEnd, _))) => {
                        if pty.is_none() {
                            input = None; // closes the pipe
                        }
                    }
                    Ok(Some((FrameKind::Control, payload))) => match serde_json::from_slice::<Control>(&payload) {
                        Ok(Control::Resize(size)) => {
                            if let Some(p) = &pty {
                                p.resize(size);
                            }
                        }
                        Ok(Control::Signal(sig)) => signal_group(pid, sig),
                        Err(_) => {}
                    },
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return true,
                }
            }
        })
    };
    let mut exited = spawned.exited;
    let mut client = client;
    let status = tokio::select! {
        status = &mut exited => status.unwrap_or(ExitStatus { code: 255, signal: None }),
        _ = &mut client => {
            // The caller left: hang the command up, then make sure.
            signal_group(pid, nix::libc::SIGHUP);
            signal_group(pid, nix::libc::SIGTERM);
            match tokio::time::timeout(Duration::from_secs(2), &mut exited).await {
                Ok(status) => status.unwrap_or(ExitStatus { code: 255, signal: None }),
                Err(_) => {
                    signal_group(pid, nix::libc::SIGKILL);
                    exited.await.unwrap_or(ExitStatus { code: 255, signal: None })
                }
            }
        }
    };
    // Output the command wrote just before exiting, unless something in
    // the background keeps the stream open.
    for pump in pumps {
        let abort = pump.abort_handle();
        if tokio::time::timeout(DRAIN_IDLE * 5, pump).await.is_err() {
            abort.abort();
        }
    }
    let _ = out.send((FrameKind::Exit, serde_json::to_vec(&status).unwrap_or_default())).await;
    client.abort();
    drop(out);
}

// ---------------------------------------------------------------------------
// Managed processes

#[derive(Debug, Clone)]
struct ProcState {
    state: &'static str,
    pid: Option<u32>,
    restarts: u32,
    last_exit: Option<ExitStatus>,
    healthy: Option<bool>,
}

struct Managed {
    spec: ProcessSpec,
    state: Mutex<ProcState>,
    log: Arc<ProcessLog>,
}

/// A process's log: a ring in memory and a file.
struct ProcessLog {
    ring: Mutex<LogRing>,
    file: PathBuf,
}

impl ProcessLog {
    fn new(dir: &Path, name: &str) -> Self {
        Self { ring: Mutex::new(LogRing::new(RING_BYTES)), file: dir.join(format!("{name}.log")) }
    }

    fn append(&self, data: &[u8]) {
        lock(&self.ring).push(data);
        use std::io::Write;
        if std::fs::metadata(&self.file).is_ok_and(|m| m.len() > LOG_FILE_BYTES) {
            let _ = std::fs::rename(&self.file, self.file.with_extension("log.1"));
        }
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.file) {
            let _ = f.write_all(data);
        }
    }
}

/// Spawns `sh -c run` with its output going to `log`; returns its pid and
/// exit receiver.
fn spawn_logged(
    reaper: &Reaper,
    run: &str,
    cwd: Option<&str>,
    env: &[String],
    log: &Arc<ProcessLog>,
) -> io::Result<Spawned> {
    let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), run.to_owned()];
    let mut cmd = base_command(&argv, env, cwd.unwrap_or("/workspace")).map_err(io::Error::other)?;
    let (r, w) = nix::unistd::pipe().map_err(io::Error::from)?;
    let w2 = w.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(Stdio::from(w)).stderr(Stdio::from(w2));
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
    let spawned = reaper.spawn(&mut cmd)?;
    drop(cmd);
    let log = Arc::clone(log);
    tokio::spawn(async move {
        let Ok(mut r) = tokio::net::unix::pipe::Receiver::from_owned_fd(r) else { return };
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                return;
            }
            log.append(&buf[..n]);
        }
    });
    Ok(spawned)
}

async fn supervise(state: Arc<State>, m: Arc<Managed>) {
    let mut failures = 0u32;
    let mut env = state.config.env.clone();
    env.extend(state.config.pod.env.iter().cloned());
    env.extend(m.spec.env.iter().cloned());
    loop {
        if *state.stopping.borrow() {
            lock(&m.state).state = "stopped";
            return;
        }
        lock(&m.state).state = "starting";
        let started = Instant::now();
        let status = match spawn_logged(&state.reaper, &m.spec.run, m.spec.cwd.as_deref(), &env, &m.log) {
            Ok(Spawned { pid, exited, .. }) => {
                {
                    let mut s = lock(&m.state);
                    s.state = "running";
                    s.pid = u32::try_from(pid).ok();
                }
                m.log.append(format!("[pinacle] started {} (pid {pid})\n", m.spec.name).as_bytes());
                exited.await.unwrap_or(ExitStatus { code: 255, signal: None })
            }
            Err(e) => {
                m.log.append(format!("[pinacle] cannot start {}: {e}\n", m.spec.name).as_bytes());
                ExitStatus { code: 127, signal: None }
            }
        };
        m.log.append(format!("[pinacle] {} exited with {}\n", m.spec.name, status.code).as_bytes());
        {
            let mut s = lock(&m.state);
            s.pid = None;
            s.last_exit = Some(status);
        }
        if started.elapsed() >= STABLE_AFTER {
            failures = 0;
        }
        let again = match m.spec.restart {
            Restart::Always => true,
            Restart::OnFailure => status.code != 0,
            Restart::Never => false,
        };
        if !again || *state.stopping.borrow() {
            lock(&m.state).state = if again { "stopped" } else { "exited" };
            return;
        }
        lock(&m.state).state = "backoff";
        let delay = restart_delay(failures);
        failures = failures.saturating_add(1);
        let mut stop = state.stopping.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        lock(&m.state).restarts += 1;
    }
}

/// How often a process that has not been healthy yet is checked.
const STARTUP_HEALTH_INTERVAL: Duration = Duration::from_millis(250);

async fn health_check(state: Arc<State>, m: Arc<Managed>) {
    let Some(h) = m.spec.health.clone() else { return };
    let log = Arc::new(ProcessLog {
        ring: Mutex::new(LogRing::new(RING_BYTES / 4)),
        file: m.log.file.with_extension("health.log"),
    });
    let mut env = state.config.env.clone();
    env.extend(state.config.pod.env.iter().cloned());
    env.extend(m.spec.env.iter().cloned());
    let mut ever_healthy = false;
    loop {
        let port_ok = h.port == 0
            || tokio::time::timeout(Duration::from_secs(2), check_once(h.port, h.path.as_deref())).await.unwrap_or(false);
        let healthy = match &h.command {
            Some(command) if port_ok => check_command(&state, command, m.spec.cwd.as_deref(), &env, &log).await,
            _ => port_ok,
        };
        let changed = {
            let mut s = lock(&m.state);
            let changed = s.healthy != Some(healthy);
            s.healthy = Some(healthy);
            changed
        };
        if changed {
            m.log.append(format!("[pinacle] health check: {}\n", if healthy { "healthy" } else { "unhealthy" }).as_bytes());
        }
        if healthy {
            ever_healthy = true;
        }
        // until the process first comes up, check often so "ready" is seen
        // at once; then at the configured interval
        let pause = if ever_healthy { Duration::from_secs(h.interval_secs) } else { STARTUP_HEALTH_INTERVAL.min(Duration::from_secs(h.interval_secs)) };
        tokio::time::sleep(pause).await;
    }
}

/// Runs a health check command: healthy when it exits 0 within 10 s (its
/// process group is killed otherwise). Output goes to `{name}.health.log`.
async fn check_command(state: &State, command: &str, cwd: Option<&str>, env: &[String], log: &Arc<ProcessLog>) -> bool {
    let Ok(spawned) = spawn_logged(&state.reaper, command, cwd, env, log) else { return false };
    let pid = spawned.pid;
    match tokio::time::timeout(Duration::from_secs(10), spawned.exited).await {
        Ok(Ok(status)) => status.code == 0,
        _ => {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            false
        }
    }
}

async fn check_once(port: u16, path: Option<&str>) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let Some(path) = path else { return true };
    let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: pinacle-health\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let Ok(n) = s.read(&mut head).await else { return false };
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).is_some_and(|c| (200..400).contains(&c))
}

/// Kills the largest process whenever the pod's processes together hold
/// more than `limit` bytes (see `pinacle_supervisor::memory`).
async fn memory_guard(limit: u64) {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map(|p| p as u64).unwrap_or(4096);
    let me = std::process::id() as i32;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let procs = pinacle_supervisor::memory::read_processes(Path::new("/proc"), page, me);
        if let Some(v) = pinacle_supervisor::memory::victim(&procs, limit) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(v.pid), nix::sys::signal::Signal::SIGKILL);
            log(&format!(
                "out of memory: killed process {} ({}) holding {} MiB; the pod's limit is {} MiB",
                v.pid,
                v.name,
                v.rss_bytes >> 20,
                limit >> 20
            ));
        }
    }
}

async fn run_install(state: &Arc<State>) -> bool {
    let mut env = state.config.env.clone();
    env.extend(state.config.pod.env.iter().cloned());
    for (i, step) in state.config.pod.install.iter().enumerate() {
        let log = Arc::clone(&state.install_log);
        let marker = step.once.then(|| step_marker(i, &step.name, &step.run));
        if marker.as_ref().is_some_and(|m| m.exists()) {
            set_step(state, i, "done", Some(0));
            log.append(format!("[pinacle] install step {}: done before, skipped\n", step.name).as_bytes());
            continue;
        }
        set_step(state, i, "running", None);
        log.append(format!("[pinacle] install step {}: {}\n", step.name, step.run).as_bytes());
        let status = match spawn_logged(&state.reaper, &step.run, step.cwd.as_deref(), &env, &log) {
            Ok(spawned) => spawned.exited.await.unwrap_or(ExitStatus { code: 255, signal: None }),
            Err(e) => {
                log.append(format!("[pinacle] cannot run: {e}\n").as_bytes());
                ExitStatus { code: 127, signal: None }
            }
        };
        let ok = status.code == 0;
        if ok {
            if let Some(marker) = &marker {
                let _ = std::fs::create_dir_all(STEP_MARKERS).and_then(|()| std::fs::write(marker, &step.run));
            }
        }
        set_step(state, i, if ok { "done" } else { "failed" }, Some(status.code));
        if !ok {
            log.append(format!("[pinacle] install step {} failed with {}; processes are not started\n", step.name, status.code).as_bytes());
            return false;
        }
    }
    true
}

/// Where run-once install steps leave a marker, inside the pod's own root
/// filesystem: kept across restarts, gone with a new image.
const STEP_MARKERS: &str = "/var/lib/pinacle/steps";

fn step_marker(i: usize, name: &str, run: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    run.hash(&mut h);
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(40).collect();
    Path::new(STEP_MARKERS).join(format!("{i}-{safe}-{:016x}", h.finish()))
}

fn set_step(state: &State, i: usize, s: &str, code: Option<i32>) {
    if let Some(step) = lock(&state.install).get_mut(i) {
        step.state = s.to_owned();
        step.exit_code = code;
    }
}

// ---------------------------------------------------------------------------
// The control socket

struct State {
    secret: String,
    config: SupervisorConfig,
    reaper: Arc<Reaper>,
    processes: Vec<Arc<Managed>>,
    install: Mutex<Vec<StepStatus>>,
    install_log: Arc<ProcessLog>,
    stopping: tokio::sync::watch::Receiver<bool>,
    started: Instant,
    /// Terminal sessions by id.
    terminals: Mutex<HashMap<String, Arc<TerminalSession>>>,
}

async fn answer(mut stream: UnixStream, r: Response) {
    let _ = write_json(&mut stream, FrameKind::Response, &r).await;
}

async fn serve_connection(state: Arc<State>, mut stream: UnixStream) {
    let request = match tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream)).await {
        Ok(Ok(Some((FrameKind::Request, payload)))) => serde_json::from_slice::<Request>(&payload),
        _ => return,
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return answer(stream, Response::Error { code: ErrorCode::Invalid, message: format!("bad request: {e}") }).await,
    };
    if !secrets_match(&request.secret, &state.secret) {
        return answer(stream, Response::Error { code: ErrorCode::Unauthorized, message: "wrong control secret".into() }).await;
    }
    match request.op {
        Op::Ping => {
            answer(
                stream,
                Response::Pong {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                uptime_ms: u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                },
            )
            .await
        }
        Op::Exec(spec) => exec(state, stream, spec).await,
        Op::Status => {
            let processes = state
                .processes
                .iter()
                .map(|m| {
                    let s = lock(&m.state).clone();
                    ProcessStatus {
                        name: m.spec.name.clone(),
                        state: s.state.into(),
                        pid: s.pid,
                        restarts: s.restarts,
                        last_exit: s.last_exit,
                        healthy: s.healthy,
                    }
                })
                .collect();
            let install = lock(&state.install).clone();
            answer(stream, Response::Status { install, processes }).await
        }
        Op::Logs { process, tail_bytes } => {
            let log = if process == "install" {
                Some(Arc::clone(&state.install_log))
            } else {
                state.processes.iter().find(|m| m.spec.name == process).map(|m| Arc::clone(&m.log))
            };
            match log {
                Some(log) => {
                    let tail = lock(&log.ring).tail(usize::try_from(tail_bytes).unwrap_or(usize::MAX));
                    answer(stream, Response::Logs { data: String::from_utf8_lossy(&tail).into_owned() }).await
                }
                None => answer(stream, Response::Error { code: ErrorCode::NotFound, message: format!("no process named {process}") }).await,
            }
        }
        Op::ListFiles { path } => answer(stream, list_files(&path)).await,
        Op::ReadFile { path } => read_file(stream, &path).await,
        Op::WriteFile { path, mode } => write_file(stream, &path, mode).await,
        Op::Ports => {
            let mut ports = Vec::new();
            for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
                if let Ok(text) = std::fs::read_to_string(file) {
                    ports.extend(pinacle_supervisor::listening_ports(&text, v6));
                }
            }
            ports.sort();
            ports.dedup();
            answer(stream, Response::Ports { ports }).await
        }
    }
}

/// Paths are absolute in the pod, or relative to /workspace.
fn pod_path(path: &str) -> PathBuf {
    if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new("/workspace").join(path)
    }
}

fn failed(e: &io::Error, path: &Path) -> Response {
    let code = if e.kind() == io::ErrorKind::NotFound { ErrorCode::NotFound } else { ErrorCode::Failed };
    Response::Error { code, message: format!("{}: {e}", path.display()) }
}

fn list_files(path: &str) -> Response {
    use std::os::unix::fs::MetadataExt;
    let dir = pod_path(path);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => return failed(&e, &dir),
    };
    let mut out: Vec<FileEntry> = entries
        .flatten()
        .filter_map(|e| {
            let meta = e.path().symlink_metadata().ok()?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_file() {
                "file"
            } else if ft.is_symlink() {
                "symlink"
            } else {
                "other"
            };
            Some(FileEntry { name: e.file_name().to_string_lossy().into_owned(), kind: kind.into(), size: meta.len(), mode: meta.mode() & 0o7777, modified: meta.mtime() })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Response::Files { entries: out }
}

async fn read_file(mut stream: UnixStream, path: &str) {
    let file = pod_path(path);
    let mut f = match tokio::fs::File::open(&file).await {
        Ok(f) => f,
        Err(e) => {
            let _ = write_json(&mut stream, FrameKind::Response, &failed(&e, &file)).await;
            return;
        }
    };
    if f.metadata().await.is_ok_and(|m| m.is_dir()) {
        let r = Response::Error { code: ErrorCode::Invalid, message: format!("{} is a directory", file.display()) };
        let _ = write_json(&mut stream, FrameKind::Response, &r).await;
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if write_frame(&mut stream, FrameKind::Stdout, &buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = write_json(&mut stream, FrameKind::Response, &failed(&e, &file)).await;
                return;
            }
        }
    }
    let _ = write_frame(&mut stream, FrameKind::End, &[]).await;
}

async fn write_file(mut stream: UnixStream, path: &str, mode: Option<u32>) {
    let file = pod_path(path);
    let Some(parent) = file.parent().map(Path::to_path_buf) else {
        let _ = write_json(&mut stream, FrameKind::Response, &Response::Error { code: ErrorCode::Invalid, message: "no file name".into() }).await;
        return;
    };
    let tmp = parent.join(format!(".{}.pinacle-tmp", file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    let result = async {
        let mut f = tokio::fs::File::create(&tmp).await?;
        loop {
            match read_frame(&mut stream).await {
                Ok(Some((FrameKind::Stdin, data))) => f.write_all(&data).await?,
                Ok(Some((FrameKind::StdinEnd, _))) => break,
                _ => return Err(io::Error::other("the upload was cut short")),
            }
        }
        f.sync_all().await?;
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode & 0o7777)).await?;
        }
        tokio::fs::rename(&tmp, &file).await
    }
    .await;
    let resp = match result {
        Ok(()) => Response::Ok,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            failed(&e, &file)
        }
    };
    let _ = write_json(&mut stream, FrameKind::Response, &resp).await;
}

// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    // the helper modes, run through exec inside the pod, need neither the
    // secret nor the configuration
    let mode = std::env::args_os().nth(1);
    match mode.as_ref().and_then(|m| m.to_str()) {
        Some(pinacle_supervisor::modes::SFTP_SERVER) => return pinacle_supervisor::sftp::main(),
        Some(pinacle_supervisor::modes::TCP_CONNECT) => return pinacle_supervisor::relay::main(std::env::args_os().skip(2)),
        Some(pinacle_supervisor::modes::TCP_LISTEN) => return pinacle_supervisor::listen::main(std::env::args_os().skip(2)),
        _ => {}
    }
    let etc = std::env::var_os("PINACLE_SUPERVISOR_ETC").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(paths::CONFIG_DIR));
    let run = std::env::var_os("PINACLE_SUPERVISOR_RUN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(paths::RUN_DIR));
    let secret = match std::fs::read_to_string(etc.join(paths::SECRET_FILE)) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => {
            log(&format!("no control secret in {}", etc.join(paths::SECRET_FILE).display()));
            return ExitCode::from(2);
        }
    };
    let config: SupervisorConfig = match std::fs::read(etc.join(paths::CONFIG_FILE)) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log(&format!("{}: {e}", etc.join(paths::CONFIG_FILE).display()));
                return ExitCode::from(2);
            }
        },
        Err(_) => SupervisorConfig::default(),
    };
    if let Err(e) = config.validate() {
        log(&format!("{}: {e}", etc.join(paths::CONFIG_FILE).display()));
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log(&format!("cannot start: {e}"));
            return ExitCode::from(1);
        }
    };
    rt.block_on(serve(secret, config, run))
}

async fn serve(secret: String, config: SupervisorConfig, run: PathBuf) -> ExitCode {
    let log_dir = run.join("logs");
    let _ = std::fs::create_dir_all(&log_dir);
    let reaper = Arc::new(Reaper::default());
    tokio::spawn(Arc::clone(&reaper).run());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let processes: Vec<Arc<Managed>> = config
        .pod
        .processes
        .iter()
        .map(|p| {
            Arc::new(Managed {
                spec: p.clone(),
                state: Mutex::new(ProcState { state: "waiting", pid: None, restarts: 0, last_exit: None, healthy: None }),
                log: Arc::new(ProcessLog::new(&log_dir, &p.name)),
            })
        })
        .collect();
    let install = config
        .pod
        .install
        .iter()
        .map(|s: &Step| StepStatus { name: s.name.clone(), state: "pending".into(), exit_code: None })
        .collect();
    let state = Arc::new(State {
        secret,
        config,
        reaper,
        processes,
        install: Mutex::new(install),
        install_log: Arc::new(ProcessLog::new(&log_dir, "install")),
        stopping: stop_rx,
        started: Instant::now(),
        terminals: Mutex::new(HashMap::new()),
    });
    let socket = run.join(paths::SOCKET);
    let _ = std::fs::remove_file(&socket);
    let bound = pinacle_supervisor::socket_address(&socket).and_then(|(_dir, path)| UnixListener::bind(path));
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            log(&format!("cannot listen on {}: {e}", socket.display()));
            return ExitCode::from(1);
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600));
    }
    log(&format!("listening on {}", socket.display()));
    if let Some(limit) = state.config.memory_limit_bytes {
        tokio::spawn(memory_guard(limit));
    }
    {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            if run_install(&state).await {
                for m in &state.processes {
                    tokio::spawn(supervise(Arc::clone(&state), Arc::clone(m)));
                    tokio::spawn(health_check(Arc::clone(&state), Arc::clone(m)));
                }
            } else {
                for m in &state.processes {
                    lock(&m.state).state = "stopped";
                }
            }
        });
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log(&format!("cannot watch SIGTERM: {e}"));
            return ExitCode::from(1);
        }
    };
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_connection(Arc::clone(&state), stream));
                }
            }
            _ = term.recv() => break,
            _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => break,
        }
    }
    // Stopping: tell every managed process, give them a moment, then go
    // (the runtime kills what is left with the pod).
    log("stopping");
    let _ = stop_tx.send(true);
    for m in &state.processes {
        if let Some(pid) = lock(&m.state).pid {
            signal_group(pid as i32, nix::libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && state.processes.iter().any(|m| lock(&m.state).pid.is_some()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(&socket);
    ExitCode::SUCCESS
}
