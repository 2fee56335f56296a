//! Three hosts as three machines would run them: each a `pinacle agent`
//! process in a network namespace of its own (its own data directory, pod
//! bridge and subnet), joined with a token and connected to one `pinacle
//! server` only over its link. The server has no route to any pod network;
//! yet for a pod on each host, exec, files, logs, terminals (with
//! re-attach), snapshots, the proxy (HTTP and WebSocket) and the SSH
//! gateway (shell, scp, sftp, `-L`, `-R`) work. Then a host killed with SIGKILL turns
//! unreachable within three heartbeats and, restarted, takes its pod back
//! without orphans; a reused join token and a removed host are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/ssh_client.rs"]
mod ssh_client;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Pinacle};
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use ssh_client::Client;
use tokio_tungstenite::tungstenite::Message;

const STREAM_SERVER: &str = include_str!("../../scripts/bench/stream_server.py");

/// The hosts' uplink: a bridge in the test's namespace (the server listens
/// on its address) and, per host, a namespace joined to it by a veth.
const BRIDGE: &str = "pnrhbr";
const UPLINK: &str = "10.252.0";
const HOSTS: u8 = 3;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn ns(i: u8) -> String {
    format!("pnrh-{i}")
}

/// The namespaces and bridge, removed when dropped.
struct Lab;

impl Lab {
    fn new() -> Self {
        Self::remove();
        ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ip(&["addr", "add", &format!("{UPLINK}.1/24"), "dev", BRIDGE]);
        ip(&["link", "set", BRIDGE, "up"]);
        for i in 1..=HOSTS {
            let (ns, outer, inner) = (ns(i), format!("pnrh{i}a"), format!("pnrh{i}b"));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "master", BRIDGE, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{UPLINK}.{}/24", 10 + i), "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        Lab
    }

    fn remove() {
        for i in 1..=HOSTS {
            let _ = Command::new("ip").args(["link", "del", &format!("pnrh{i}a")]).output();
            let _ = Command::new("ip").args(["netns", "del", &ns(i)]).output();
        }
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        Self::remove();
    }
}

fn start_host(p: &Pinacle, i: u8) -> common::KillOnDrop {
    let net = format!("--net=/run/netns/{}", ns(i));
    let subnet = format!("10.240.{i}.0/24");
    let label = format!("zone=z{i}");
    p.spawn_host_in(
        &format!("h{i}"),
        &["nsenter", &net, "--"],
        &["--pod-network", "bridge", "--pod-bridge", "pnc0", "--pod-subnet", &subnet, "--reconcile-interval", "1", "--label", &label],
    )
}

async fn hosts(p: &Pinacle) -> Vec<Value> {
    let (s, list) = p.call(Method::GET, "/api/v1/admin/hosts", None).await;
    assert_eq!(s, 200, "{list}");
    list.as_array().unwrap().clone()
}

/// Waits (at most `secs`) until host `id` has `status` (and is connected,
/// for `ready`); how long it took.
async fn wait_host(p: &Pinacle, id: &str, status: &str, secs: u64) -> Duration {
    let t0 = Instant::now();
    loop {
        let all = hosts(p).await;
        let h = all.iter().find(|h| h["id"] == id);
        if h.is_some_and(|h| h["status"] == status && (status != "ready" || h["connected"] == true)) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(secs), "host {id} is not {status}: {h:?}\n{}", p.host_log(id));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn screen_until(ws: &mut Ws, screen: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !screen.contains(want) {
        assert!(Instant::now() < deadline, "never saw {want:?} on the terminal: {screen:?}");
        match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            Ok(Some(Ok(Message::Binary(d)))) => screen.push_str(&String::from_utf8_lossy(&d)),
            Ok(Some(Ok(Message::Text(t)))) => screen.push_str(t.as_str()),
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(other) => panic!("terminal ended: {other:?}; screen: {screen:?}"),
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

async fn raw(p: &Pinacle, method: Method, path: &str, body: Option<Vec<u8>>) -> (u16, Vec<u8>) {
    let mut req = p.http.request(method, format!("{}{path}", p.url)).bearer_auth(common::TOKEN);
    if let Some(b) = body {
        req = req.body(b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// 4 MiB sent to each pod (through the proxy, and by scp).
fn upload_bytes() -> Vec<u8> {
    (0..4u32 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

/// Everything a user does with pod `pod` (on host `host`), through the
/// server only.
async fn use_pod(p: &Pinacle, proxy: u16, ssh: &Client, key: &std::path::Path, pod: &str, host: &str) {
    // exec: output, errors and the exit code
    let (out, err, code) = p.exec(pod, &["sh", "-c", "echo out; echo err >&2; exit 5"]).await;
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 5), "{pod} on {host}");

    // files: written, read back, listed
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let (s, _) = raw(p, Method::PUT, &format!("/api/v1/pods/{pod}/files/content?path=blob.bin"), Some(data.clone())).await;
    assert_eq!(s, 204, "{pod}");
    let (s, back) = raw(p, Method::GET, &format!("/api/v1/pods/{pod}/files/content?path=/workspace/blob.bin"), None).await;
    assert_eq!(s, 200);
    assert!(back == data, "{pod}: the file changed on the way");
    let (s, list) = p.call(Method::GET, &format!("/api/v1/pods/{pod}/files?path=/workspace"), None).await;
    assert_eq!(s, 200, "{list}");
    assert!(list.to_string().contains("blob.bin"), "{list}");

    // logs
    let (s, b) = raw(p, Method::GET, &format!("/api/v1/pods/{pod}/logs"), None).await;
    assert_eq!(s, 200, "{pod}: {}", String::from_utf8_lossy(&b));

    // a terminal session, left and re-attached: the output is still there
    let mut ws = common::terminal(p, pod, "rows=24&cols=80&session=tab-1").await;
    let mut screen = String::new();
    ws.send(Message::Binary(b"echo $((6*7))-on-$(hostname | cut -c1-4)\n".to_vec().into())).await.unwrap();
    screen_until(&mut ws, &mut screen, "42-on-").await;
    drop(ws);
    let mut ws = common::terminal(p, pod, "rows=24&cols=80&session=tab-1").await;
    let mut again = String::new();
    screen_until(&mut ws, &mut again, "42-on-").await;
    ws.send(Message::Binary(b"exit 7\n".to_vec().into())).await.unwrap();
    screen_until(&mut ws, &mut again, r#"{"exit":{"code":7"#).await;

    // the pod's server, through the proxy: HTTP both ways and a WebSocket
    let write = json!({"command": ["sh", "-c", "cat > /workspace/srv.py"], "stdin": STREAM_SERVER});
    let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/{pod}/exec"), Some(write)).await;
    assert_eq!(s, 200, "{b}");
    let (_, err, code) = p.exec(pod, &["sh", "-c", "setsid python3 /workspace/srv.py >/workspace/srv.log 2>&1 </dev/null &"]).await;
    assert_eq!(code, 0, "{err}");
    let vhost = format!("9000-{pod}-admin.pinacle.localhost");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = p.http.get(format!("http://127.0.0.1:{proxy}/headers")).header("host", &vhost).bearer_auth(common::TOKEN).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{pod}: the server never answered through the proxy: {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // its ports and processes, as the host's supervisor sees them
    let (s, ports) = p.call(Method::GET, &format!("/api/v1/pods/{pod}/ports"), None).await;
    assert_eq!(s, 200, "{ports}");
    assert!(ports["ports"].as_array().unwrap().iter().any(|x| x["port"] == 9000), "{pod}: {ports}");
    let (s, procs) = p.call(Method::GET, &format!("/api/v1/pods/{pod}/processes"), None).await;
    assert_eq!(s, 200, "{pod}: {procs}");
    // the pod's own SSH key, kept on its host, and a new one on rotation
    let (s, key1) = p.call(Method::GET, &format!("/api/v1/pods/{pod}/ssh-key"), None).await;
    assert_eq!(s, 200, "{pod}: {key1}");
    assert!(key1["public_key"].as_str().unwrap().starts_with("ssh-ed25519 "), "{key1}");
    let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/{pod}/rotate-keys"), None).await;
    assert!((200..300).contains(&s), "{pod}: {b}");
    let (_, key2) = p.call(Method::GET, &format!("/api/v1/pods/{pod}/ssh-key"), None).await;
    assert_ne!(key1["fingerprint"], key2["fingerprint"], "{pod}: the rotation changed nothing");
    let upload = upload_bytes();
    let r = p.http.post(format!("http://127.0.0.1:{proxy}/sha")).header("host", &vhost).bearer_auth(common::TOKEN).body(upload.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), sha256_hex(&upload), "{pod}: the upload changed on the way");
    let req = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("ws://127.0.0.1:{proxy}/ws"))
        .header("host", &vhost)
        .header("authorization", format!("Bearer {}", common::TOKEN))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tokio_tungstenite::tungstenite::handshake::client::generate_key())
        .body(())
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    for msg in ["hello", &"x".repeat(70_000)] {
        ws.send(Message::Text(msg.to_owned().into())).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }

    // SSH: a shell command, scp up and back, -L to the pod's server
    let out = ssh.ssh(key, pod, &[], "echo via-ssh; exit 4");
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(4), "via-ssh\n"), "{}", String::from_utf8_lossy(&out.stderr));
    let file = ssh.dir.path().join(format!("{pod}.bin"));
    std::fs::write(&file, &upload).unwrap();
    let scp = |from: &str, to: &str| {
        let mut cmd = Command::new("timeout");
        cmd.arg("120").arg("scp").args(ssh.base_args(key)).args(["-P", &ssh.port.to_string(), from, to]);
        cmd.stdin(Stdio::null()).output().unwrap()
    };
    let out = scp(&file.display().to_string(), &format!("{pod}@127.0.0.1:up.bin"));
    assert!(out.status.success(), "scp up: {}", String::from_utf8_lossy(&out.stderr));
    let back = ssh.dir.path().join(format!("{pod}.back"));
    let out = scp(&format!("{pod}@127.0.0.1:/workspace/up.bin"), &back.display().to_string());
    assert!(out.status.success(), "scp down: {}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&back).unwrap() == upload, "{pod}: scp changed the file");
    let local = free_port();
    let mut forward = common::KillOnDrop(
        Command::new("ssh")
            .args(ssh.base_args(key))
            .args(["-p", &ssh.port.to_string(), "-N", "-L", &format!("127.0.0.1:{local}:localhost:9000"), &format!("{pod}@127.0.0.1")])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        if let Ok(r) = p.http.get(format!("http://127.0.0.1:{local}/headers")).send().await {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "{pod}: -L never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains(&format!("127.0.0.1:{local}")), "{pod}: the forwarded request's Host: {body}");
    let _ = forward.0.kill();

    // sftp puts a file, which the pod then holds intact
    let batch = ssh.dir.path().join(format!("{pod}.sftp"));
    std::fs::write(&batch, format!("cd /workspace\nput {} sftp.bin\nls -l sftp.bin\n", file.display())).unwrap();
    let out = Command::new("timeout")
        .arg("120")
        .arg("sftp")
        .args(ssh.base_args(key))
        .args(["-P", &ssh.port.to_string(), "-b"])
        .arg(&batch)
        .arg(format!("{pod}@127.0.0.1"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{pod}: sftp: {}", String::from_utf8_lossy(&out.stderr));
    let (sum, _, code) = p.exec(pod, &["sha256sum", "/workspace/sftp.bin"]).await;
    assert_eq!((code, sum.split_whitespace().next()), (0, Some(sha256_hex(&upload).as_str())), "{pod}: sftp changed the file");

    // -R: a connection made in the pod reaches a server beside the client
    let served = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client_port = served.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in served.incoming().take(100) {
            let Ok(mut conn) = conn else { continue };
            let _ = std::io::Write::write_all(&mut conn, b"from-beside-the-client\n");
        }
    });
    let mut reverse = common::KillOnDrop(
        Command::new("ssh")
            .args(ssh.base_args(key))
            .args(["-p", &ssh.port.to_string(), "-N", "-o", "ExitOnForwardFailure=yes", "-R", &format!("7301:127.0.0.1:{client_port}"), &format!("{pod}@127.0.0.1")])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ssh.ssh(key, pod, &[], "bash -c 'exec 3<>/dev/tcp/127.0.0.1/7301 && cat <&3'");
        if String::from_utf8_lossy(&out.stdout) == "from-beside-the-client\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{pod}: -R never answered: {}", String::from_utf8_lossy(&out.stderr));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = reverse.0.kill();

    // snapshots (of the stopped pod), then it starts again
    let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/{pod}/stop"), None).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state(pod, "stopped", 120).await;
    let (s, snap) = p.call(Method::POST, &format!("/api/v1/pods/{pod}/snapshots"), Some(json!({"name": "remote"}))).await;
    assert!(s == 200 || s == 201, "{pod}: {snap}");
    let (s, list) = p.call(Method::GET, &format!("/api/v1/pods/{pod}/snapshots"), None).await;
    assert_eq!(s, 200);
    assert!(list.to_string().contains("\"remote\""), "{list}");
    let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/{pod}/start"), None).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state(pod, "running", 120).await;
}

#[tokio::test]
async fn pods_on_three_remote_hosts_work_through_their_links_only() {
    let _lab = Lab::new();
    let (proxy, ssh_port) = (free_port(), free_port());
    let listen = format!("{UPLINK}.1:0");
    let (proxy_arg, ssh_arg) = (format!("127.0.0.1:{proxy}"), format!("127.0.0.1:{ssh_port}"));
    let p = Pinacle::start_role_with(
        "server",
        &["--listen", &listen, "--heartbeat-interval", "1", "--proxy-listen", &proxy_arg, "--ssh-listen", &ssh_arg, "--ssh-host", "127.0.0.1", "--ssh-allow-remote-forward"],
    )
    .await;
    let mut agents: Vec<_> = (1..=HOSTS).map(|i| Some(start_host(&p, i))).collect();
    for i in 1..=HOSTS {
        wait_host(&p, &format!("h{i}"), "ready", 90).await;
    }
    // no credential of the control plane is on any host
    for i in 1..=HOSTS {
        let dir = p.host_dir(&format!("h{i}"));
        for f in ["pinacle.db", "queue.db", "master.key"] {
            assert!(!dir.join(f).exists(), "host h{i} holds {f}");
        }
    }

    // one pod on each host, placed by the labels its agent reports
    for h in hosts(&p).await {
        let i = h["id"].as_str().unwrap().trim_start_matches('h').to_owned();
        assert_eq!(h["labels"], json!({"zone": format!("z{i}")}), "{h}");
    }
    let mut pods = Vec::new();
    for i in 1..=HOSTS {
        let name = format!("r{i}");
        let runtime = if i == 1 { "gvisor" } else { "youki" };
        let body = json!({"name": name, "template": "blank", "runtime": runtime, "host_labels": {"zone": format!("z{i}")}});
        let (s, pod) = p.call(Method::POST, "/api/v1/pods", Some(body)).await;
        assert_eq!(s, 202, "{pod}");
        let host = pod["host"].as_str().unwrap().to_owned();
        assert_eq!(host, format!("h{i}"), "placed by its labels");
        pods.push((name, host, pod["id"].as_str().unwrap().to_owned()));
    }
    let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "nowhere", "template": "blank", "host_labels": {"zone": "z9"}}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("no_capacity")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("zone=z9"), "{b}");
    for (name, _, _) in &pods {
        p.wait_state(name, "running", 180).await;
    }

    let ssh = Client::new(&p, ssh_port).await;
    let key = ssh.keygen("id_remote");
    let (code, _, err) = common::cli(&p, &["ssh-key", "add", &format!("{}.pub", key.display())]);
    assert_eq!(code, 0, "{err}");
    for (name, host, _) in &pods {
        use_pod(&p, proxy, &ssh, &key, name, host).await;
    }

    // SIGKILL of a host: unreachable within three heartbeats (1 s), its
    // pod's operations answer 503 host_unreachable
    let (victim, vhost, _) = pods[1].clone();
    let idx = vhost.trim_start_matches('h').parse::<usize>().unwrap() - 1;
    agents[idx] = None;
    let took = wait_host(&p, &vhost, "unreachable", 10).await;
    eprintln!("{vhost} unreachable {} ms after SIGKILL of its agent (heartbeat 1 s)", took.as_millis());
    let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/{victim}/exec"), Some(json!({"command": ["true"]}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("host_unreachable")), "{b}");
    assert_eq!(p.pod(&victim).await["host_status"], "unreachable");
    // back: the pod still runs (its sandbox outlived the agent), adopted
    // by the new agent; nothing is started twice
    let sandboxes = |i: usize| {
        let dir = p.host_dir(&format!("h{}", i + 1)).join("runtime");
        common::sandboxes_in(&dir.join("runsc"), "runsc").len() + common::sandboxes_in(&dir.join("youki"), "youki").len()
    };
    assert_eq!(sandboxes(idx), 1);
    agents[idx] = Some(start_host(&p, idx as u8 + 1));
    wait_host(&p, &vhost, "ready", 60).await;
    let (out, _, code) = p.exec(&victim, &["sha256sum", "/workspace/up.bin"]).await;
    assert_eq!((code, out.split_whitespace().next()), (0, Some(sha256_hex(&upload_bytes()).as_str())), "the pod's files survived its host's restart");
    assert_eq!(sandboxes(idx), 1, "one sandbox, not two");

    // a reused join token is refused; a removed host is cut off at once
    let r = p.http.post(format!("{}/api/v1/agents/join", p.url)).json(&json!({"token": "pnj_reused"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (victim3, vhost3, id3) = pods[2].clone();
    let (s, _) = p.call(Method::DELETE, &format!("/api/v1/pods/{victim3}"), None).await;
    assert_eq!(s, 202);
    p.wait_state(&id3, "deleted", 120).await;
    let (code, out, err) = common::cli(&p, &["host", "remove", &vhost3]);
    assert_eq!(code, 0, "{out}{err}");
    let i3 = vhost3.trim_start_matches('h').parse::<usize>().unwrap() - 1;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = agents[i3].as_mut().unwrap().0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the removed host's agent still runs: {}", p.host_log(&vhost3));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    assert!(p.host_log(&vhost3).contains("refused this host's credential"), "{}", p.host_log(&vhost3));

    for (name, _, id) in &pods[..2] {
        let (s, _) = p.call(Method::DELETE, &format!("/api/v1/pods/{name}"), None).await;
        assert_eq!(s, 202);
        p.wait_state(id, "deleted", 120).await;
    }
    for (_, h, _) in &pods[..2] {
        let hi = h.trim_start_matches('h').parse::<usize>().unwrap() - 1;
        assert_eq!(sandboxes(hi), 0, "no orphan sandbox on {h}");
    }
}
