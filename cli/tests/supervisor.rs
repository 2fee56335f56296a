//! The in-pod supervisor in real pods on both runtimes, through the API:
//! install steps, a crashing process restarted, health checks, process
//! logs, listening ports, files, exec exit codes and a terminal that
//! resizes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Pinacle;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn raw(p: &Pinacle, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> (u16, Vec<u8>) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", p.url)).bearer_auth(common::TOKEN);
    if let Some(b) = body {
        req = req.body(b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads terminal output until `want` shows up.
async fn screen_until(ws: &mut Ws, screen: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
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

#[tokio::test]
async fn the_supervisor_runs_processes_and_serves_terminals_on_both_runtimes() {
    let p = Pinacle::start().await;
    // a bad definition is refused up front, naming the field
    let bad = json!({"name": "bad", "template": "minimal", "processes": [{"name": "a b", "run": "true"}]});
    let (s, b) = p.call(reqwest::Method::POST, "/api/v1/pods", Some(bad)).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_processes")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("processes[0].name"), "{b}");

    for (pod, runtime) in [("sv-yk", "youki"), ("sv-gv", "gvisor")] {
        let body = json!({
            "name": pod, "template": "minimal", "runtime": runtime,
            "install": [{"name": "page", "run": "echo 'served by busybox' > /workspace/index.html"}],
            "processes": [
                {"name": "crashy", "run": "echo up; sleep 0.3; exit 3"},
                {"name": "web", "run": "exec busybox httpd -f -p 8080 -h /workspace", "health": {"port": 8080, "path": "/index.html", "interval_secs": 1}},
            ],
        });
        let (s, b) = p.call(reqwest::Method::POST, "/api/v1/pods", Some(body)).await;
        assert_eq!(s, 202, "{b}");
        p.wait_state(pod, "running", 120).await;

        // install ran; the crashing process is restarted; the server is healthy
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (s, st) = p.call(reqwest::Method::GET, &format!("/api/v1/pods/{pod}/processes"), None).await;
            assert_eq!(s, 200, "{st}");
            let find = |n: &str| st["processes"].as_array().unwrap().iter().find(|x| x["name"] == n).unwrap().clone();
            let (crashy, web) = (find("crashy"), find("web"));
            if st["install"][0]["state"] == "done" && crashy["restarts"].as_u64().unwrap() >= 2 && web["healthy"] == true {
                assert_eq!(crashy["last_exit"]["code"], 3);
                assert_eq!(web["state"], "running");
                break;
            }
            assert!(Instant::now() < deadline, "{runtime}: {st}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (s, log) = raw(&p, reqwest::Method::GET, &format!("/api/v1/pods/{pod}/processes/crashy/logs"), None).await;
        assert_eq!(s, 200);
        let log = String::from_utf8_lossy(&log);
        assert!(log.matches("up\n").count() >= 2 && log.contains("exited with 3"), "{runtime}: {log}");
        assert_eq!(raw(&p, reqwest::Method::GET, &format!("/api/v1/pods/{pod}/processes/nope/logs"), None).await.0, 404);

        // the server's port is discovered
        let (s, ports) = p.call(reqwest::Method::GET, &format!("/api/v1/pods/{pod}/ports"), None).await;
        assert_eq!(s, 200, "{ports}");
        assert!(ports["ports"].as_array().unwrap().iter().any(|x| x["port"] == 8080), "{runtime}: {ports}");

        // exec returns the command's exit code, through the supervisor
        let (_, _, code) = p.exec(pod, &["sh", "-c", "exit 42"]).await;
        assert_eq!(code, 42, "{runtime}");

        // files: write, read back, list; errors are clear
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
        let (s, _) = raw(&p, reqwest::Method::PUT, &format!("/api/v1/pods/{pod}/files/content?path=blob.bin"), Some(data.clone())).await;
        assert_eq!(s, 204);
        let (s, back) = raw(&p, reqwest::Method::GET, &format!("/api/v1/pods/{pod}/files/content?path=/workspace/blob.bin"), None).await;
        assert_eq!(s, 200);
        assert!(back == data, "{runtime}: file changed on the way");
        let (s, list) = p.call(reqwest::Method::GET, &format!("/api/v1/pods/{pod}/files?path=/workspace"), None).await;
        assert_eq!(s, 200, "{list}");
        let names: Vec<&str> = list["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"blob.bin") && names.contains(&"index.html"), "{names:?}");
        let (s, b) = p.call(reqwest::Method::GET, &format!("/api/v1/pods/{pod}/files/content?path=nope.txt"), None).await;
        assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")), "{b}");

        // a terminal: the shell sees the size asked for, then the new one
        let mut ws = common::terminal(&p, pod, "rows=24&cols=80").await;
        let mut screen = String::new();
        ws.send(Message::Binary(b"stty size\n".to_vec().into())).await.unwrap();
        screen_until(&mut ws, &mut screen, "24 80").await;
        ws.send(Message::Text(json!({"resize": {"rows": 50, "cols": 132}}).to_string().into())).await.unwrap();
        ws.send(Message::Binary(b"stty size\n".to_vec().into())).await.unwrap();
        screen_until(&mut ws, &mut screen, "50 132").await;
        ws.send(Message::Binary(b"exit 3\n".to_vec().into())).await.unwrap();
        screen_until(&mut ws, &mut screen, r#"{"exit":{"code":3"#).await;
    }

    // the CLI's shell: input through the pod's terminal, the exit code back
    let cli = |args: &[&str], input: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(common::pinacle_bin())
            .args(args)
            .env("PINACLE_API", &p.url)
            .env("PINACLE_TOKEN", common::TOKEN)
            .env("PINACLE_CONFIG", p.data.path().join("none.json"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = cli(&["pod", "shell", "sv-yk"], "echo in-pod-$((6*7)); exit 9\n");
    assert_eq!(out.status.code(), Some(9), "{}\n{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout), p.server_log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("in-pod-42"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = cli(&["pod", "shell", "sv-gv", "--command", "stty size; exit 5"], "");
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("24 80"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = cli(&["pod", "shell", "nope"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"), "{}", String::from_utf8_lossy(&out.stderr));

    // without the right to exec, no terminal and no files
    let (s, b) = p.call_as("", reqwest::Method::POST, "/api/v1/auth/signup", Some(json!({"name": "eve", "password": "correct horse battery"}))).await;
    assert_eq!(s, 201, "{b}");
    let (_, pair) = p.call_as("", reqwest::Method::POST, "/api/v1/auth/login", Some(json!({"name": "eve", "password": "correct horse battery"}))).await;
    let eve = pair["access_token"].as_str().unwrap();
    for path in ["/api/v1/pods/sv-yk/files?path=/", "/api/v1/pods/sv-yk/processes", "/api/v1/pods/sv-yk/ports"] {
        let (s, _): (u16, Value) = p.call_as(eve, reqwest::Method::GET, path, None).await;
        assert_eq!(s, 404, "{path}");
    }
}
