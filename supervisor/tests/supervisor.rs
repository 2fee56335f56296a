//! The supervisor binary on the host (outside a pod), driven through the
//! agent's client over its control socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pinacle_supervisor::client::{ClientError, ExecEvent, ExecInput, SupervisorClient};
use pinacle_supervisor::protocol::{Control, ExecSpec, Op, Response, WindowSize};

struct Supervisor {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Supervisor {
    fn start(config: serde_json::Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        std::fs::write(dir.path().join("etc/secret"), "test-secret\n").unwrap();
        std::fs::write(dir.path().join("etc/supervisor.json"), config.to_string()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pinacle-supervisor"))
            .env("PINACLE_SUPERVISOR_ETC", dir.path().join("etc"))
            .env("PINACLE_SUPERVISOR_RUN", dir.path().join("run"))
            .spawn()
            .unwrap();
        Self { child, dir }
    }

    fn client(&self) -> SupervisorClient {
        SupervisorClient::new(self.dir.path().join("run/supervisor.sock"), "test-secret")
    }

    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).display().to_string()
    }
}

fn env() -> Vec<&'static str> {
    vec!["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8"]
}

/// Runs a command to the end: (stdout, stderr, exit code).
async fn run(c: &SupervisorClient, argv: &[&str], stdin: Option<&[u8]>) -> (String, String, i32) {
    let spec = ExecSpec { argv: argv.iter().map(|s| s.to_string()).collect(), cwd: Some("/".into()), ..Default::default() };
    let (input, mut events) = c.exec(spec).await.unwrap();
    if let Some(data) = stdin {
        input.send(ExecInput::Stdin(data.to_vec())).await.unwrap();
    }
    input.send(ExecInput::StdinEnd).await.unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await.unwrap() {
            Some(ExecEvent::Stdout(d)) => out.extend(d),
            Some(ExecEvent::Stderr(d)) => err.extend(d),
            Some(ExecEvent::Exit(s)) => return (String::from_utf8_lossy(&out).into(), String::from_utf8_lossy(&err).into(), s.code),
            None => panic!("exec ended without an exit status"),
        }
    }
}

async fn status(c: &SupervisorClient) -> (Vec<pinacle_supervisor::protocol::StepStatus>, Vec<pinacle_supervisor::protocol::ProcessStatus>) {
    match c.call(Op::Status).await.unwrap() {
        Response::Status { install, processes } => (install, processes),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_crashing_process_is_restarted_with_backoff_and_its_log_is_kept() {
    let s = Supervisor::start(serde_json::json!({
        "host_env": env(),
        "install": [{"name": "prep", "run": "echo preparing"}],
        "processes": [
            {"name": "crashy", "run": "echo started; sleep 0.2; exit 3"},
            {"name": "once", "run": "echo done", "restart": "on-failure"},
        ]
    }));
    let c = s.client();
    c.wait_ready(Duration::from_secs(10)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (install, procs) = status(&c).await;
        let crashy = procs.iter().find(|p| p.name == "crashy").unwrap();
        let once = procs.iter().find(|p| p.name == "once").unwrap();
        if install[0].state != "done" {
            // processes start only after the install steps
            assert!(crashy.restarts == 0 && crashy.pid.is_none(), "a process started before install finished: {procs:?}");
        } else if crashy.restarts >= 3 && once.state == "exited" {
            assert_eq!(crashy.last_exit.unwrap().code, 3);
            assert_eq!(once.restarts, 0, "a clean exit was restarted");
            break;
        }
        assert!(Instant::now() < deadline, "not restarted: {install:?} {procs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Response::Logs { data } = c.call(Op::Logs { process: "crashy".into(), tail_bytes: 4096 }).await.unwrap() else { panic!() };
    assert!(data.matches("started").count() >= 3 && data.contains("exited with 3"), "{data}");
    let file = std::fs::read_to_string(s.path("run/logs/crashy.log")).unwrap();
    assert!(file.contains("started"));
    let Response::Logs { data } = c.call(Op::Logs { process: "install".into(), tail_bytes: 4096 }).await.unwrap() else { panic!() };
    assert!(data.contains("preparing"), "{data}");
    assert!(matches!(c.call(Op::Logs { process: "nope".into(), tail_bytes: 10 }).await, Err(ClientError::Refused(_))));
}

#[tokio::test]
async fn a_failed_install_step_holds_the_processes() {
    let s = Supervisor::start(serde_json::json!({
        "host_env": env(),
        "install": [{"name": "broken", "run": "echo nope >&2; exit 4"}, {"name": "later", "run": "true"}],
        "processes": [{"name": "web", "run": "sleep 100"}]
    }));
    let c = s.client();
    c.wait_ready(Duration::from_secs(10)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (install, procs) = status(&c).await;
        if install[0].state == "failed" && procs[0].state == "stopped" {
            assert_eq!(install[0].exit_code, Some(4));
            assert_eq!(install[1].state, "pending");
            break;
        }
        assert!(Instant::now() < deadline, "{install:?} {procs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn exec_returns_exit_codes_streams_stdin_and_resizes_a_pty() {
    let s = Supervisor::start(serde_json::json!({"host_env": env()}));
    let c = s.client();
    c.wait_ready(Duration::from_secs(10)).await.unwrap();
    assert_eq!(run(&c, &["sh", "-c", "exit 7"], None).await.2, 7);
    let (out, err, code) = run(&c, &["sh", "-c", "echo out; echo err >&2"], None).await;
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 0));
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (out, _, code) = run(&c, &["sh", "-c", "wc -c"], Some(&big)).await;
    assert_eq!((out.trim(), code), ("3000000", 0));
    let (_, err, code) = run(&c, &["/no/such/program"], None).await;
    assert_eq!(code, 126);
    assert!(err.contains("cannot run"), "{err}");
    // killed by a signal: 128 + signal
    assert_eq!(run(&c, &["sh", "-c", "kill -9 $$"], None).await.2, 137);

    // A pty: the size is the one asked for, and follows a resize.
    let spec = ExecSpec { argv: vec!["sh".into()], tty: Some(WindowSize { rows: 24, cols: 80 }), cwd: Some("/".into()), ..Default::default() };
    let (input, mut events) = c.exec(spec).await.unwrap();
    let mut screen = String::new();
    let mut expect = async |input: &tokio::sync::mpsc::Sender<ExecInput>, line: &str, want: &str, screen: &mut String| {
        input.send(ExecInput::Stdin(line.as_bytes().to_vec())).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !screen.contains(want) {
            assert!(Instant::now() < deadline, "never saw {want:?} in {screen:?}");
            if let Ok(Some(ExecEvent::Stdout(d))) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
                screen.push_str(&String::from_utf8_lossy(&d));
            }
        }
    };
    expect(&input, "tty; stty size\n", "24 80", &mut screen).await;
    assert!(screen.contains("/dev/pts/"), "not a terminal: {screen}");
    input.send(ExecInput::Control(Control::Resize(WindowSize { rows: 40, cols: 132 }))).await.unwrap();
    expect(&input, "stty size\n", "40 132", &mut screen).await;
    expect(&input, "exit 5\n", "exit 5", &mut screen).await;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap() {
            Some(ExecEvent::Exit(s)) => break s.code,
            Some(_) => {}
            None => panic!("no exit"),
        }
    };
    assert_eq!(code, 5);

    // Signals reach the command's process group.
    let spec = ExecSpec { argv: vec!["sh".into(), "-c".into(), "sleep 30".into()], ..Default::default() };
    let (input, mut events) = c.exec(spec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    input.send(ExecInput::Control(Control::Signal(15))).await.unwrap();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap() {
            Some(ExecEvent::Exit(s)) => break s,
            Some(_) => {}
            None => panic!("no exit"),
        }
    };
    assert_eq!((status.code, status.signal), (143, Some(15)));
}

#[tokio::test]
async fn files_ports_and_the_secret() {
    let s = Supervisor::start(serde_json::json!({"host_env": env()}));
    let c = s.client();
    c.wait_ready(Duration::from_secs(10)).await.unwrap();
    let dir = s.path("files");
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!("{dir}/hello.txt");
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    c.write_file(&file, &data, Some(0o640)).await.unwrap();
    assert_eq!(c.read_file(&file, 10 << 20).await.unwrap(), data);
    assert!(matches!(c.read_file(&file, 1000).await, Err(ClientError::Refused(m)) if m.contains("larger")));
    let Response::Files { entries } = c.call(Op::ListFiles { path: dir.clone() }).await.unwrap() else { panic!() };
    assert_eq!(entries.len(), 1, "a temporary file was left: {entries:?}");
    assert_eq!((entries[0].name.as_str(), entries[0].kind.as_str(), entries[0].size, entries[0].mode), ("hello.txt", "file", 2_500_000, 0o640));
    assert!(matches!(c.read_file(&format!("{dir}/missing"), 100).await, Err(ClientError::Refused(m)) if m.contains("No such file")));
    assert!(matches!(c.write_file("/no/such/dir/x", b"x", None).await, Err(ClientError::Refused(_))));

    // a listening port shows up
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let Response::Ports { ports } = c.call(Op::Ports).await.unwrap() else { panic!() };
    assert!(ports.iter().any(|p| p.port == port && p.address == "127.0.0.1"), "{port} not in {ports:?}");

    // the wrong secret gets nothing
    let wrong = SupervisorClient::new(Path::new(&s.path("run/supervisor.sock")), "guess");
    assert!(matches!(wrong.call(Op::Ping).await, Err(ClientError::Refused(m)) if m.contains("secret")));
    let (_, err, code) = {
        let (input, mut events) = wrong.exec(ExecSpec { argv: vec!["true".into()], ..Default::default() }).await.unwrap();
        drop(input);
        let mut err = Vec::new();
        let code = loop {
            match events.recv().await.unwrap() {
                ExecEvent::Stderr(d) => err.extend(d),
                ExecEvent::Exit(s) => break s.code,
                ExecEvent::Stdout(_) => {}
            }
        };
        ((), String::from_utf8_lossy(&err).into_owned(), code)
    };
    assert_eq!(code, 126);
    assert!(err.contains("secret"), "{err}");
}

#[tokio::test]
async fn a_command_whose_caller_left_is_ended() {
    let s = Supervisor::start(serde_json::json!({"host_env": env()}));
    let c = s.client();
    c.wait_ready(Duration::from_secs(10)).await.unwrap();
    // even one that ignores hang-ups and SIGTERM
    let spec = ExecSpec { argv: vec!["sh".into(), "-c".into(), "trap '' HUP TERM; echo $$; exec sleep 60".into()], ..Default::default() };
    let (input, mut events) = c.exec(spec).await.unwrap();
    let Some(ExecEvent::Stdout(pid)) = events.recv().await else { panic!("no pid") };
    let pid: i32 = String::from_utf8_lossy(&pid).trim().parse().unwrap();
    let alive = |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    assert!(alive(pid));
    drop(input);
    drop(events);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "the command outlived its caller");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_socket_deep_in_the_file_system_is_still_reached() {
    let base = tempfile::tempdir().unwrap();
    let deep = base.path().join("a-rather-long-directory-name-for-pinacle-data").join("pods").join("0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(deep.join("etc")).unwrap();
    std::fs::create_dir_all(deep.join("run")).unwrap();
    std::fs::write(deep.join("etc/secret"), "deep-secret").unwrap();
    let socket = deep.join("run/supervisor.sock");
    assert!(socket.as_os_str().len() > 108, "not deep enough: {}", socket.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_pinacle-supervisor"))
        .env("PINACLE_SUPERVISOR_ETC", deep.join("etc"))
        .env("PINACLE_SUPERVISOR_RUN", deep.join("run"))
        .current_dir(deep.join("run"))
        .spawn()
        .unwrap();
    let c = SupervisorClient::new(&socket, "deep-secret");
    let ready = c.wait_ready(Duration::from_secs(10)).await;
    let _ = child.kill();
    let _ = child.wait();
    ready.unwrap();
}

#[tokio::test]
async fn a_link_in_place_of_the_socket_is_not_followed() {
    // a pod can write where its socket lives; replacing the socket with a
    // link to another socket of the host must not reach that socket
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("host-service.sock");
    let listener = std::os::unix::net::UnixListener::bind(&other).unwrap();
    listener.set_nonblocking(true).unwrap();
    let link = dir.path().join("supervisor.sock");
    std::os::unix::fs::symlink(&other, &link).unwrap();
    let c = SupervisorClient::new(&link, "secret");
    let err = c.call(Op::Ping).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    assert!(listener.accept().is_err(), "the client followed the link");
    // a regular file is refused too
    std::fs::remove_file(&link).unwrap();
    std::fs::write(&link, "not a socket").unwrap();
    assert!(c.call(Op::Ping).await.unwrap_err().to_string().contains("not a socket"));
}

/// Reads output until `want` shows up (10 s at most); returns what was read.
async fn read_until(events: &mut tokio::sync::mpsc::Receiver<ExecEvent>, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut screen = String::new();
    while !screen.contains(want) {
        assert!(Instant::now() < deadline, "never saw {want:?} in {screen:?}");
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Some(ExecEvent::Stdout(d))) => screen.push_str(&String::from_utf8_lossy(&d)),
            Ok(Some(ExecEvent::Exit(s))) => panic!("exited ({s:?}) before {want:?} in {screen:?}"),
            Ok(None) => panic!("stream ended before {want:?} in {screen:?}"),
            _ => {}
        }
    }
    screen
}

#[tokio::test]
async fn terminal_sessions_outlive_their_connection() {
    let s = Supervisor::start(serde_json::json!({"host_env": env()}));
    let c = s.client();
    c.wait_ready(Duration::from_secs(10)).await.unwrap();
    let spec = |session: &str| ExecSpec {
        argv: vec!["sh".into()],
        tty: Some(WindowSize { rows: 24, cols: 80 }),
        cwd: Some("/".into()),
        session: Some(session.into()),
        ..Default::default()
    };

    // A shell with state (a variable), then the connection drops.
    let (input, mut events) = c.exec(spec("tab-1")).await.unwrap();
    input.send(ExecInput::Stdin(b"X=kept-$((40+2)); echo STA\"\"RTED-$$.\n".to_vec())).await.unwrap();
    let mut first = read_until(&mut events, "STARTED-").await;
    while !first.split("STARTED-").nth(1).unwrap().contains('.') {
        first += &read_until(&mut events, ".").await;
    }
    drop((input, events));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Re-attaching replays what it printed and reaches the same shell.
    let (input, mut events) = c.exec(spec("tab-1")).await.unwrap();
    let pid = first.split("STARTED-").nth(1).unwrap().split('.').next().unwrap().to_owned();
    let replay = read_until(&mut events, &format!("STARTED-{pid}.")).await;
    assert!(replay.contains("X=kept"), "the replay {replay:?} lacks the command line");
    input.send(ExecInput::Stdin(b"echo value=$X pid=$$\n".to_vec())).await.unwrap();
    read_until(&mut events, &format!("value=kept-42 pid={pid}")).await;

    // Another id is another shell; a bad id is refused.
    let (other, mut other_events) = c.exec(spec("tab-2")).await.unwrap();
    other.send(ExecInput::Stdin(b"echo value=[$X]\n".to_vec())).await.unwrap();
    read_until(&mut other_events, "value=[]").await;
    let (_bad, mut bad_events) = c.exec(spec("bad id!")).await.unwrap();
    let mut refusal = String::new();
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), bad_events.recv()).await.unwrap() {
            Some(ExecEvent::Stderr(d)) => refusal.push_str(&String::from_utf8_lossy(&d)),
            Some(ExecEvent::Exit(s)) => break s.code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, 126, "a session id with spaces was accepted");
    assert!(refusal.contains("session id"), "{refusal}");

    // A second client takes the session over: the first one's stream ends.
    let (input2, mut events2) = c.exec(spec("tab-1")).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if events.recv().await.is_none() {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the replaced client kept its stream");

    // The shell exiting ends the session with its status; the id is free again.
    input2.send(ExecInput::Stdin(b"exit 3\n".to_vec())).await.unwrap();
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), events2.recv()).await.unwrap() {
            Some(ExecEvent::Exit(s)) => break s.code,
            Some(_) => {}
            None => panic!("no exit"),
        }
    };
    assert_eq!(code, 3);
    let (input, mut events) = c.exec(spec("tab-1")).await.unwrap();
    input.send(ExecInput::Stdin(b"echo fresh=[$X]\n".to_vec())).await.unwrap();
    read_until(&mut events, "fresh=[]").await;
    drop((input, events));

    // Past 32 sessions the one detached the longest is hung up for the new
    // one (tab-1, tab-2 and many-0 are detached here); when none is, a new
    // one is refused.
    drop((other, other_events));
    let mut held = Vec::new();
    for i in 0..32 {
        let (input, mut events) = c.exec(spec(&format!("many-{i}"))).await.unwrap();
        input.send(ExecInput::Stdin(format!("echo up-{i}-\"\"ok\n").into_bytes())).await.unwrap();
        read_until(&mut events, &format!("up-{i}-ok")).await;
        if i == 0 {
            drop((input, events)); // many-0 (and tab-1, tab-2 before it) detach
        } else {
            held.push((input, events));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (input, mut events) = c.exec(spec("one-more")).await.unwrap();
    input.send(ExecInput::Stdin(b"echo MO\"\"RE\n".to_vec())).await.unwrap();
    read_until(&mut events, "MORE").await;
    let (_full, mut refused) = c.exec(spec("too-many")).await.unwrap();
    let mut said = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), refused.recv()).await.unwrap() {
            Some(ExecEvent::Stderr(d)) => said.push_str(&String::from_utf8_lossy(&d)),
            Some(ExecEvent::Exit(s)) => {
                assert_eq!(s.code, 126, "{said}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(said.contains("in use"), "{said}");
    drop((held, input, events));
}

/// The console lives on the pod's disk: when it is full, writing the log
/// fails, and pid 1 must go on (here: end with its own exit code for a
/// missing secret, not a panic's 101).
#[test]
fn an_unwritable_console_does_not_panic_the_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_pinacle-supervisor"))
        .env("PINACLE_SUPERVISOR_ETC", dir.path().join("etc"))
        .env("PINACLE_SUPERVISOR_RUN", dir.path().join("run"))
        .stderr(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2), "{status:?}");
}
