//! Two `pinacle server` processes on one PostgreSQL database and one Redis
//! (both real, started by the harness on private ports), behind nginx, with
//! one host whose agent dials nginx: the job queue is the database's, so a
//! pod created through either server is started by the one holding the
//! host's link; the other reaches the host through that server (exec,
//! logs); events recorded by one stream through the other's Server-Sent
//! Events (Redis); and when the server holding the link is killed with
//! SIGKILL while a pod is being provisioned, the agent reconnects to the
//! other through nginx, the job is not lost and nothing runs twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/redis.rs"]
mod redis;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Pinacle, TOKEN};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// nginx in front of the servers (round robin, WebSockets and upgrades
/// passed through); stopped on drop.
struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(upstreams: &[u16]) -> Self {
        let dir = tempfile::Builder::new().prefix("pinacle-nginx-").tempdir_in("/var/tmp").unwrap();
        let port = free_port();
        let servers: String = upstreams.iter().map(|p| format!("server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n")).collect();
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log; daemon off;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/cb; proxy_temp_path {d}/pt; fastcgi_temp_path {d}/ft; uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream api {{ {servers} }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
            proxy_buffering off;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("nginx is not installed ({e}); run scripts/setup.sh --test"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, _dir: dir, port }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(db: &str, redis: &str, port: u16, proxy: u16) -> Pinacle {
    let listen = format!("127.0.0.1:{port}");
    let advertise = format!("http://127.0.0.1:{port}");
    let proxy = format!("127.0.0.1:{proxy}");
    Pinacle::start_role_env(
        "server",
        &[
            "--listen", &listen, "--database-url", db, "--redis-url", redis, "--advertise-url", &advertise, "--heartbeat-interval", "1",
            "--read-cache-ms", "0", "--proxy-listen", &proxy,
        ],
        &[("PINACLE_MASTER_KEY", MASTER_KEY)],
    )
    .await
}

async fn host_view(p: &Pinacle, id: &str) -> Option<Value> {
    let (_, list) = p.call(Method::GET, "/api/v1/admin/hosts", None).await;
    list.as_array().and_then(|a| a.iter().find(|h| h["id"] == id).cloned())
}

/// The server (URL) whose link host `id` holds, once it is ready.
async fn linked_server(p: &Pinacle, id: &str, not: Option<&str>, secs: u64) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(h) = host_view(p, id).await {
            if let Some(server) = h["link_server"].as_str().filter(|s| Some(*s) != not) {
                if h["status"] == "ready" {
                    return server.to_owned();
                }
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(secs), "host {id} never linked: {:?}\n{}", host_view(p, id).await, p.host_log(id));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_servers_share_queue_links_and_events() {
    let pg = postgres::Postgres::start();
    let redis = redis::Redis::start();
    let (port_a, port_b, proxy_a, proxy_b) = (free_port(), free_port(), free_port(), free_port());
    let a = start_server(&pg.url(), &redis.url(), port_a, proxy_a).await;
    let b = start_server(&pg.url(), &redis.url(), port_b, proxy_b).await;
    let nginx = Nginx::start(&[port_a, port_b]);
    let front = format!("http://127.0.0.1:{}", nginx.port);

    // the host joins through one server and dials nginx
    let dir = a.host_dir("h1");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(common::image_cache(), dir.join("images")).unwrap();
    let (code, token, err) = common::cli(&a, &["host", "add", "h1"]);
    assert_eq!(code, 0, "{err}");
    let spawn_agent = |token: Option<&str>| {
        let mut cmd = Command::new(common::pinacle_bin());
        cmd.args(["agent", "--server", &front, "--pod-network", "none", "--reconcile-interval", "1"]).arg("--data-dir").arg(&dir);
        if let Some(t) = token {
            cmd.args(["--join-token", t]);
        }
        cmd.env("PINACLE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("agent.log")).unwrap()));
        common::KillOnDrop(cmd.spawn().unwrap())
    };
    let _agent = spawn_agent(Some(token.trim()));
    let holder = linked_server(&a, "h1", None, 60).await;
    let mut servers = [a, b];
    let hi = if holder == format!("http://127.0.0.1:{port_a}") { 0 } else { 1 };
    let oi = 1 - hi;
    assert_eq!(holder, format!("http://127.0.0.1:{}", [port_a, port_b][hi]));
    let (holder_srv, other_srv) = (&servers[hi], &servers[oi]);
    assert_eq!(linked_server(other_srv, "h1", None, 10).await, holder, "both servers see where the link ends");

    // created through the server without the link: the shared queue gets
    // the job to the server holding it; its events stream through the
    // other (Redis), the history first
    let (s, pod) = other_srv.call(Method::POST, "/api/v1/pods", Some(json!({"name": "shared", "template": "minimal", "runtime": "gvisor"}))).await;
    assert_eq!(s, 202, "{pod}");
    let id = pod["id"].as_str().unwrap().to_owned();
    let events = reqwest::Client::new().get(format!("{}/api/v1/pods/{id}/events", holder_srv.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(events.status(), 200);
    let mut body = events.bytes_stream();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seen.contains("\"to\":\"running\"") {
        assert!(Instant::now() < deadline, "never saw running: {seen}");
        if let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(1), body.next()).await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }
    // and the other way round: stopped through the link's server, the
    // other server's stream shows it live
    let events = reqwest::Client::new().get(format!("{}/api/v1/pods/{id}/events", other_srv.url)).bearer_auth(TOKEN).send().await.unwrap();
    let mut body = events.bytes_stream();
    let mut live = String::new();
    // (drain the history)
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_millis(500), body.next()).await {
        live.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let history_len = live.len();
    let (s, _) = holder_srv.call(Method::POST, &format!("/api/v1/pods/{id}/stop"), None).await;
    assert_eq!(s, 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !live[history_len..].contains("\"to\":\"stopped\"") {
        assert!(Instant::now() < deadline, "the other server never streamed the stop: {}", &live[history_len..]);
        if let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(1), body.next()).await {
            live.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }
    let (s, _) = other_srv.call(Method::POST, &format!("/api/v1/pods/{id}/start"), None).await;
    assert_eq!(s, 202);
    holder_srv.wait_state(&id, "running", 120).await;

    // both servers reach the pod: one over the link, one relayed
    for srv in [holder_srv, other_srv] {
        let (out, _, code) = srv.exec("shared", &["sh", "-c", "echo hello; exit 2"]).await;
        assert_eq!((out.as_str(), code), ("hello\n", 2), "{}", srv.url);
        let (s, _) = srv.call(Method::GET, &format!("/api/v1/pods/{id}/logs"), None).await;
        assert_eq!(s, 200, "{}", srv.url);
    }

    // a single-use sign-in link works once in the whole deployment: at
    // one server's proxy, and then at neither
    let (s, open) = other_srv.call(Method::POST, &format!("/api/v1/pods/{id}/open"), Some(json!({"port": 8080}))).await;
    assert_eq!(s, 200, "{open}");
    let url = open["url"].as_str().unwrap();
    let path = &url[url.find("/.pinacle/").unwrap()..];
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let sign_in = |proxy: u16| {
        let req = no_redirects.get(format!("http://127.0.0.1:{proxy}{path}")).header("host", open["host"].as_str().unwrap());
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let (first, second, third) = if hi == 0 { (proxy_a, proxy_b, proxy_a) } else { (proxy_b, proxy_a, proxy_b) };
    assert_eq!(sign_in(first).await, 303, "the link signs in once");
    assert_ne!(sign_in(second).await, 303, "used at one server, refused at the other");
    assert_ne!(sign_in(third).await, 303, "and at the first again");

    // SIGKILL of the server holding the link while a pod is provisioning:
    // the agent reconnects through nginx to the other, which takes the job
    let (s, second) = other_srv.call(Method::POST, "/api/v1/pods", Some(json!({"name": "during", "template": "minimal", "runtime": "gvisor"}))).await;
    assert_eq!(s, 202, "{second}");
    let second_id = second["id"].as_str().unwrap().to_owned();
    servers[hi].kill();
    let other_srv = &servers[oi];
    let t_kill = Instant::now();
    let now_linked = linked_server(other_srv, "h1", Some(&holder), 60).await;
    eprintln!("link moved from {holder} to {now_linked} {} ms after SIGKILL", t_kill.elapsed().as_millis());
    assert_eq!(now_linked, format!("http://127.0.0.1:{}", [port_a, port_b][oi]));
    other_srv.wait_state(&second_id, "running", 180).await;
    let state = dir.join("runtime").join("runsc");
    assert_eq!(common::sandboxes_in(&state, "runsc").len(), 2, "two pods, two sandboxes: nothing started twice");
    let (out, _, code) = other_srv.exec("during", &["echo", "alive"]).await;
    assert_eq!((out.as_str(), code), ("alive\n", 0));
    for pod in [&id, &second_id] {
        let (s, _) = other_srv.call(Method::DELETE, &format!("/api/v1/pods/{pod}"), None).await;
        assert_eq!(s, 202);
        other_srv.wait_state(pod, "deleted", 120).await;
    }
    assert!(common::sandboxes_in(&state, "runsc").is_empty(), "no orphan");
}

#[tokio::test]
async fn rate_limits_hold_across_servers() {
    let pg = postgres::Postgres::start();
    let redis = redis::Redis::start();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let (listen, advertise) = (format!("127.0.0.1:{port}"), format!("http://127.0.0.1:{port}"));
        let db = pg.url();
        let args = ["--listen", &listen, "--database-url", &db, "--redis-url", &redis.url(), "--advertise-url", &advertise, "--rate-limit", "6", "--rate-burst", "5"];
        servers.push(Pinacle::start_role_env("server", &args, &[("PINACLE_MASTER_KEY", MASTER_KEY)]).await);
    }
    // 20 requests within a second, alternating between the servers: one
    // deployment-wide bucket of 5 (plus what refills, one every 10 s), not
    // one per server
    let mut ok = [0, 0];
    let mut limited = [0, 0];
    for i in 0..20 {
        let (s, b) = servers[i % 2].call(Method::GET, "/api/v1/pods", None).await;
        match s {
            200 => ok[i % 2] += 1,
            429 => {
                assert_eq!(b["error"]["code"], "rate_limited", "{b}");
                limited[i % 2] += 1;
            }
            other => panic!("{other}: {b}"),
        }
    }
    assert!(ok[0] + ok[1] <= 6, "the servers together let through {} of 20 (burst 5): {ok:?}", ok[0] + ok[1]);
    assert!(ok[0] + ok[1] >= 5, "the burst is allowed: {ok:?}");
    assert!(limited[0] > 0 && limited[1] > 0, "both servers refuse once the shared bucket is empty: {limited:?}");
}
