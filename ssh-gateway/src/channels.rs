//! Channels: each session channel runs one command in the pod through its
//! supervisor (shell, exec or the SFTP subsystem); each `direct-tcpip`
//! channel runs the supervisor's TCP relay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pinacle_api::policy::Action;
use pinacle_api::AppState;
use pinacle_supervisor::client::{ExecEvent, ExecInput};
use pinacle_supervisor::protocol::{Control, ExecSpec, WindowSize};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf, Sig};
use tokio::sync::mpsc;

use crate::Login;

/// Where shells, commands and SFTP start.
pub const WORKING_DIRECTORY: &str = "/workspace";
/// The most variables a client may set with `SendEnv`/`SetEnv`.
const MAX_CLIENT_ENV: usize = 64;
/// Longest accepted value of a client variable.
const MAX_ENV_VALUE: usize = 4096;
/// How long a command may leave its input unread while the client sends
/// more. russh acknowledges a channel's data as it arrives, so input is
/// held back by not reading the connection; past this the channel is
/// closed (and its command ended) rather than stalling the connection for
/// good, which would also hide the client's leaving.
pub const STDIN_STALL: Duration = Duration::from_secs(60);
/// How long a finished channel waits for its output copier to report the
/// exit code before stopping it.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// Client variables passed into the pod (as OpenSSH's `AcceptEnv LANG LC_*`
/// on Debian, plus terminal hints editors send).
pub fn accepted_env(name: &str) -> bool {
    matches!(name, "LANG" | "LANGUAGE" | "TZ" | "COLORTERM" | "TERM_PROGRAM" | "TERM_PROGRAM_VERSION")
        || (name.starts_with("LC_") && name.len() > 3 && name[3..].bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
}

fn set_env(env: &mut Vec<String>, name: &str, value: &str) {
    env.retain(|kv| kv.split_once('=').map(|(k, _)| k) != Some(name));
    env.push(format!("{name}={value}"));
}

fn window(cols: u32, rows: u32) -> WindowSize {
    let clamp = |v: u32| v.clamp(1, 1000) as u16;
    WindowSize { rows: clamp(rows), cols: clamp(cols) }
}

/// The signal number of an SSH signal name.
fn signal_number(sig: &Sig) -> Option<i32> {
    Some(match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => return None,
    })
}

/// What a session channel runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKind {
    Shell,
    Exec(String),
    Sftp,
}

impl SessionKind {
    /// The command line the supervisor runs.
    pub fn argv(&self) -> Vec<String> {
        match self {
            SessionKind::Shell => vec![
                "/bin/sh".into(),
                "-c".into(),
                "if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi".into(),
            ],
            SessionKind::Exec(cmd) => vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
            SessionKind::Sftp => vec![pinacle_supervisor::paths::BINARY.into(), pinacle_supervisor::modes::SFTP_SERVER.into()],
        }
    }

    fn label(&self) -> &'static str {
        match self {
            SessionKind::Shell => "shell",
            SessionKind::Exec(_) => "exec",
            SessionKind::Sftp => "sftp",
        }
    }
}

/// The variables every command gets on top of the pod's own.
fn base_env(login: &Login) -> Vec<String> {
    let peer = login.peer;
    vec![
        "USER=root".into(),
        "LOGNAME=root".into(),
        "HOME=/root".into(),
        format!("PINACLE_POD={}", login.pod_name),
        format!("SSH_CLIENT={} {} 22", peer.ip(), peer.port()),
        format!("SSH_CONNECTION={} {} 127.0.0.1 22", peer.ip(), peer.port()),
    ]
}

async fn fail(tx: &ChannelWriteHalf<Msg>, message: &str) {
    let _ = tx.extended_data_bytes(1, Bytes::from(format!("pinacle: {message}\r\n"))).await;
    let _ = tx.exit_status(1).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

/// A started command: its input and the task that copies its output.
struct Running {
    input: mpsc::Sender<ExecInput>,
    output: tokio::task::JoinHandle<Option<i32>>,
    kind: SessionKind,
    started: Instant,
}

async fn start(state: &AppState, login: &Login, tx: Arc<ChannelWriteHalf<Msg>>, kind: SessionKind, tty: Option<WindowSize>, env: Vec<String>) -> Option<Running> {
    let (pod, client) = match state.host_registry.pod_supervisor(&login.principal, &login.pod_key, Action::Exec).await {
        Ok(found) => found,
        Err(e) => {
            let target = format!("pod {} {} from {}: {}", login.pod_name, kind.label(), login.peer, e.message);
            audit(state, login, "ssh.session.failed", &target).await;
            fail(&tx, &e.message).await;
            return None;
        }
    };
    let tty = if kind == SessionKind::Sftp { None } else { tty };
    let spec = ExecSpec { argv: kind.argv(), env, cwd: Some(WORKING_DIRECTORY.into()), tty, session: None };
    let (input, events) = match client.exec(spec).await {
        Ok(io) => io,
        Err(e) => {
            fail(&tx, &format!("the pod's supervisor did not answer: {e}")).await;
            return None;
        }
    };
    let what = match &kind {
        SessionKind::Exec(cmd) => format!("exec {:?}", cmd.chars().take(200).collect::<String>()),
        other => other.label().to_owned(),
    };
    let target = format!("pod:{} ({}) {what} from {} via {}", pod.id, pod.name, login.peer, login.via);
    audit(state, login, "ssh.session.start", &target).await;
    tracing::info!(pod = %pod.name, user = %login.principal.user_name, kind = kind.label(), "SSH session started");
    state.metrics.ssh_sessions.get_or_create(&pinacle_api::metrics::KindLabels { kind: kind.label().into() }).inc();
    let output = tokio::spawn(copy_output(tx, events, true));
    Some(Running { input, output, kind, started: Instant::now() })
}

/// Copies a command's output to the channel, then closes it; returns the
/// exit code. A session channel gets stderr as extended data and the exit
/// status; a forward (`session` false) only the bytes (the relay's own
/// messages and exit code are not the client's business).
async fn copy_output(tx: Arc<ChannelWriteHalf<Msg>>, mut events: mpsc::Receiver<ExecEvent>, session: bool) -> Option<i32> {
    let mut code = None;
    while let Some(event) = events.recv().await {
        let sent = match event {
            ExecEvent::Stdout(d) => tx.data_bytes(Bytes::from(d)).await,
            ExecEvent::Stderr(d) if session => tx.extended_data_bytes(1, Bytes::from(d)).await,
            ExecEvent::Stderr(d) => {
                tracing::debug!(message = %String::from_utf8_lossy(&d).trim(), "forward relay");
                Ok(())
            }
            ExecEvent::Exit(status) => {
                code = Some(status.code);
                if session {
                    let _ = tx.exit_status(status.code.clamp(0, 255) as u32).await;
                }
                break;
            }
        };
        if sent.is_err() {
            return None;
        }
    }
    let _ = tx.eof().await;
    let _ = tx.close().await;
    code
}

/// Records an SSH session event; a failure to record is logged, and does
/// not end the session.
pub(crate) async fn audit(state: &AppState, login: &Login, action: &str, target: &str) {
    if let Err(e) = state.audit.record(&login.principal, action, target).await {
        tracing::warn!(error = %e.message, action, "audit of an SSH session failed");
    }
}

/// Passes client input on, unless the command leaves it unread for
/// [`STDIN_STALL`]: then tells the client, closes the channel and answers
/// false (the caller stops, which ends the command).
async fn pass_input(input: &mpsc::Sender<ExecInput>, data: ExecInput, tx: &ChannelWriteHalf<Msg>, stderr: bool) -> bool {
    match tokio::time::timeout(STDIN_STALL, input.send(data)).await {
        // sent, or the command is gone already (its exit follows)
        Ok(_) => true,
        Err(_) => {
            tracing::warn!("an SSH channel's command left its input unread for {} s; closing it", STDIN_STALL.as_secs());
            if stderr {
                let message = format!("pinacle: the command read none of its input for {} s; closing\r\n", STDIN_STALL.as_secs());
                let _ = tokio::time::timeout(Duration::from_secs(5), tx.extended_data_bytes(1, Bytes::from(message))).await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), tx.close()).await;
            false
        }
    }
}

/// [`pass_input`] to the session's command, if one runs (else dropped);
/// false when the channel was closed for a stall.
async fn forward(running: &Option<Running>, data: Option<ExecInput>, tx: &ChannelWriteHalf<Msg>) -> bool {
    match (running, data) {
        (Some(r), Some(data)) => pass_input(&r.input, data, tx, true).await,
        _ => true,
    }
}

/// Waits briefly for a channel's output copier (it returns once it sent
/// the exit status), else stops it, which ends the command.
async fn finish(mut output: tokio::task::JoinHandle<Option<i32>>) -> Option<i32> {
    match tokio::time::timeout(OUTPUT_GRACE, &mut output).await {
        Ok(code) => code.ok().flatten(),
        Err(_) => {
            output.abort();
            None
        }
    }
}

/// Serves one session channel until it closes.
pub(crate) async fn run_session(state: AppState, login: Arc<Login>, channel: Channel<Msg>) {
    let (mut rx, tx) = channel.split();
    let tx = Arc::new(tx);
    let mut tty: Option<WindowSize> = None;
    let mut env = base_env(&login);
    let mut client_vars = 0usize;
    let mut running: Option<Running> = None;
    while let Some(msg) = rx.wait().await {
        match msg {
            ChannelMsg::RequestPty { term, col_width, row_height, .. } if running.is_none() && login.pty_allowed => {
                tty = Some(window(col_width, row_height));
                if !term.is_empty() && term.len() <= 64 && term.bytes().all(|b| b.is_ascii_graphic()) {
                    set_env(&mut env, "TERM", &term);
                }
            }
            ChannelMsg::SetEnv { variable_name, variable_value, .. }
                if running.is_none() && accepted_env(&variable_name) && variable_value.len() <= MAX_ENV_VALUE && !variable_value.contains('\0') && client_vars < MAX_CLIENT_ENV =>
            {
                client_vars += 1;
                set_env(&mut env, &variable_name, &variable_value);
            }
            ChannelMsg::RequestShell { .. } if running.is_none() => {
                running = start(&state, &login, tx.clone(), SessionKind::Shell, tty, env.clone()).await;
            }
            ChannelMsg::Exec { command, .. } if running.is_none() => {
                let command = String::from_utf8_lossy(&command).into_owned();
                running = start(&state, &login, tx.clone(), SessionKind::Exec(command), tty, env.clone()).await;
            }
            ChannelMsg::RequestSubsystem { name, .. } if running.is_none() && name == "sftp" => {
                running = start(&state, &login, tx.clone(), SessionKind::Sftp, tty, env.clone()).await;
            }
            // everything for the command shares its input queue, so each
            // waits at most STDIN_STALL behind unread input
            ChannelMsg::WindowChange { col_width, row_height, .. } if !forward(&running, Some(ExecInput::Control(Control::Resize(window(col_width, row_height)))), &tx).await => break,
            ChannelMsg::Signal { signal } if !forward(&running, signal_number(&signal).map(Control::Signal).map(ExecInput::Control), &tx).await => break,
            ChannelMsg::Data { data } if !forward(&running, Some(ExecInput::Stdin(data.to_vec())), &tx).await => break,
            ChannelMsg::Eof if !forward(&running, Some(ExecInput::StdinEnd), &tx).await => break,
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    if let Some(r) = running {
        // the client left: stop copying, which ends the command
        drop(r.input);
        let code = finish(r.output).await;
        let ended = match code {
            Some(c) => format!("exit {c}"),
            None => "disconnected".to_owned(),
        };
        let target = format!("pod:{} ({}) {} from {} {ended} after {} ms", login.pod_id, login.pod_name, r.kind.label(), login.peer, r.started.elapsed().as_millis());
        audit(&state, &login, "ssh.session.end", &target).await;
    }
}

/// Serves one `direct-tcpip` channel (`ssh -L`): the pod's supervisor
/// connects to `host:port` from inside the pod, so `localhost` is the
/// pod's own loopback.
pub(crate) async fn run_forward(state: AppState, login: Arc<Login>, channel: Channel<Msg>, reply: russh::server::ChannelOpenHandle, host: String, port: u16) {
    let (pod, client) = match state.host_registry.pod_supervisor(&login.principal, &login.pod_key, Action::Exec).await {
        Ok(found) => found,
        Err(e) => {
            tracing::info!(pod = %login.pod_name, error = %e.message, "SSH forward refused");
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return;
        }
    };
    let spec = ExecSpec {
        argv: vec![pinacle_supervisor::paths::BINARY.into(), pinacle_supervisor::modes::TCP_CONNECT.into(), host.clone(), port.to_string()],
        cwd: Some("/".into()),
        ..Default::default()
    };
    let Ok((input, mut events)) = client.exec(spec).await else {
        reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
        return;
    };
    // The relay says it is connected (on stderr) before anything else.
    let mut early = Vec::new();
    loop {
        match events.recv().await {
            Some(ExecEvent::Stderr(d)) if d.starts_with(pinacle_supervisor::modes::TCP_CONNECTED.as_bytes()) => break,
            Some(ExecEvent::Stdout(d)) => early.push(d),
            Some(ExecEvent::Stderr(d)) => {
                tracing::info!(pod = %pod.name, %host, port, error = %String::from_utf8_lossy(&d).trim(), "SSH forward failed");
            }
            Some(ExecEvent::Exit(_)) | None => {
                reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
                return;
            }
        }
    }
    reply.accept().await;
    state.metrics.ssh_sessions.get_or_create(&pinacle_api::metrics::KindLabels { kind: "forward".into() }).inc();
    let target = format!("pod:{} ({}) forward to {host}:{port} from {} via {}", pod.id, pod.name, login.peer, login.via);
    audit(&state, &login, "ssh.session.start", &target).await;
    let started = Instant::now();
    let (mut rx, tx) = channel.split();
    let tx = Arc::new(tx);
    for d in early {
        let _ = tx.data_bytes(Bytes::from(d)).await;
    }
    let output = tokio::spawn(copy_output(tx.clone(), events, false));
    while let Some(msg) = rx.wait().await {
        match msg {
            ChannelMsg::Data { data } if !pass_input(&input, ExecInput::Stdin(data.to_vec()), &tx, false).await => break,
            ChannelMsg::Eof if !pass_input(&input, ExecInput::StdinEnd, &tx, false).await => break,
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    drop(input);
    finish(output).await;
    let target = format!("pod:{} ({}) forward to {host}:{port} from {} ended after {} ms", pod.id, pod.name, login.peer, started.elapsed().as_millis());
    audit(&state, &login, "ssh.session.end", &target).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_locale_and_terminal_variables_come_from_the_client() {
        for ok in ["LANG", "LC_ALL", "LC_CTYPE", "TZ", "COLORTERM", "TERM_PROGRAM"] {
            assert!(accepted_env(ok), "{ok}");
        }
        for bad in ["PATH", "LD_PRELOAD", "HOME", "LC_", "LC_x", "BASH_ENV", "PINACLE_POD", ""] {
            assert!(!accepted_env(bad), "{bad}");
        }
    }

    #[test]
    fn sizes_and_signals_are_mapped() {
        assert_eq!(window(120, 40), WindowSize { rows: 40, cols: 120 });
        assert_eq!(window(0, 99_999), WindowSize { rows: 1000, cols: 1 });
        assert_eq!(signal_number(&Sig::INT), Some(2));
        assert_eq!(signal_number(&Sig::Custom("WINCH".into())), None);
        let mut env = vec!["TERM=dumb".to_owned()];
        set_env(&mut env, "TERM", "xterm");
        assert_eq!(env, ["TERM=xterm"]);
    }

    #[test]
    fn commands_start_in_the_workspace_through_a_shell() {
        assert_eq!(SessionKind::Exec("echo hi".into()).argv(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(SessionKind::Sftp.argv()[1], pinacle_supervisor::modes::SFTP_SERVER);
    }
}
