//! Test harness: runs the real `pinacle up` binary as root against real
//! sandboxes, each test with its own data directory and port, and removes
//! every sandbox, mount and file it made when dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

pub const TOKEN: &str = "pnc_test-admin-token-0123456789";

/// The longest a test waits for one exec to finish.
pub const EXEC_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Where the test images are cached between tests (built by scripts/test.sh).
pub fn image_cache() -> PathBuf {
    std::env::var_os("PINACLE_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/pinacle-test/images"))
}

pub fn pinacle_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pinacle"))
}

/// Fails loudly (never skips) when the machine lacks what the tests need.
fn check_prerequisites() {
    assert!(nix::unistd::geteuid().is_root(), "sandbox tests run as root (CI does); run scripts/test.sh as root");
    assert!(Path::new("/usr/bin/runsc").exists() || which("runsc"), "runsc missing: run scripts/setup.sh --test");
    let youki = pinacle_bin().with_file_name("pinacle-youki");
    assert!(youki.exists(), "{} missing: build the workspace (cargo build --workspace)", youki.display());
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Per-tenant quotas no test reaches.
pub fn lifted_quotas() -> Value {
    json!({"user_pods": 10000, "user_vcpus": 10000, "team_pods": 10000, "team_vcpus": 10000})
}

/// A running `pinacle up`.
pub struct Pinacle {
    pub data: tempfile::TempDir,
    pub url: String,
    child: Option<Child>,
    pub http: reqwest::Client,
    extra_args: Vec<String>,
    role: &'static str,
    /// What `PINACLE_ADMIN_TOKEN` is set to on the next (re)start.
    pub admin_token: String,
    /// `PINACLE_LOG` of the server.
    log_filter: String,
    /// More environment for the server.
    extra_env: Vec<(String, String)>,
    /// Whether the administrator lets everyone run youki pods (instances
    /// refuse them by default; most tests run them) and lifts the
    /// per-tenant quotas (tests start many pods as one user).
    grant_youki: bool,
}

impl Pinacle {
    /// Starts `pinacle up` with the cached images and a fast reconcile loop.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Self {
        Self::start_full("up", extra).await
    }

    /// Starts `pinacle server` (API only) instead of `up`.
    pub async fn start_role(role: &'static str) -> Self {
        Self::start_full(role, &[]).await
    }

    /// [`Pinacle::start_role`] with more arguments.
    pub async fn start_role_with(role: &'static str, extra: &[&str]) -> Self {
        Self::start_full(role, extra).await
    }

    /// [`Pinacle::start_role_with`] with more environment variables.
    pub async fn start_role_env(role: &'static str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_full_env(role, extra, "info,sqlx=warn", env).await
    }

    /// [`Pinacle::start_with`] logging with `filter` (`PINACLE_LOG`).
    pub async fn start_with_log(extra: &[&str], filter: &str) -> Self {
        Self::start_full_log("up", extra, filter).await
    }

    /// [`Pinacle::start_with`] with more environment variables.
    pub async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_full_env("up", extra, "info,sqlx=warn", env).await
    }

    async fn start_full(role: &'static str, extra: &[&str]) -> Self {
        Self::start_full_log(role, extra, "info,sqlx=warn").await
    }

    async fn start_full_log(role: &'static str, extra: &[&str], filter: &str) -> Self {
        Self::start_full_env(role, extra, filter, &[]).await
    }

    /// [`Pinacle::start_with`] with the instance's default runtime policy
    /// (youki allowed for nobody).
    pub async fn start_default_policy(extra: &[&str]) -> Self {
        Self::start_policy("up", extra, "info,sqlx=warn", &[], false).await
    }

    async fn start_full_env(role: &'static str, extra: &[&str], filter: &str, env: &[(&str, &str)]) -> Self {
        Self::start_policy(role, extra, filter, env, true).await
    }

    async fn start_policy(role: &'static str, extra: &[&str], filter: &str, env: &[(&str, &str)], grant_youki: bool) -> Self {
        check_prerequisites();
        let data = tempfile::Builder::new().prefix("pinacle-test-").tempdir_in("/var/tmp").expect("tempdir");
        let cache = image_cache();
        std::fs::create_dir_all(&cache).expect("image cache");
        std::os::unix::fs::symlink(&cache, data.path().join("images")).expect("link images");
        let mut p = Pinacle {
            data,
            url: String::new(),
            child: None,
            http: reqwest::Client::new(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            role,
            admin_token: TOKEN.to_owned(),
            log_filter: filter.to_owned(),
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            grant_youki,
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(pinacle_bin());
        cmd.arg(self.role)
            .arg("--data-dir")
            .arg(self.data.path())
            .args(if self.extra_args.iter().any(|a| a == "--listen") { &[][..] } else { &["--listen", "127.0.0.1:0"][..] })
            .args(if self.role == "server" { &[][..] } else { &["--reconcile-interval", "0.5"][..] })
            .args(&self.extra_args)
            // tests poll hard; the rate-limit test sets its own limit
            .args(if self.extra_args.iter().any(|a| a == "--rate-limit") { &[][..] } else { &["--rate-limit", "0"][..] })
            // Tests run in parallel: no shared default bridge or proxy port
            // unless a test asks for its own.
            .args(if self.extra_args.iter().any(|a| a == "--pod-network") { &[][..] } else { &["--pod-network", "none"][..] })
            .args(if self.extra_args.iter().any(|a| a == "--proxy-listen") { &[][..] } else { &["--proxy-listen", "none"][..] })
            .args(if self.extra_args.iter().any(|a| a == "--ssh-listen") { &[][..] } else { &["--ssh-listen", "none"][..] })
            .env("PINACLE_ADMIN_TOKEN", &self.admin_token)
            .env("PINACLE_CONFIG", self.data.path().join("cli.json"))
            .env("PINACLE_LOG", &self.log_filter)
            .env("PINACLE_KEYRING", "off")
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.data.path().join("server.log"))
                    .expect("log"),
            ));
        let mut child = cmd.spawn().expect("spawn pinacle up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("Pinacle API listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        self.url = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            panic!("pinacle up did not start; log:\n{}", self.server_log())
        });
        self.child = Some(child);
        // wait for readiness (first reconcile pass done)
        // (a bound, not a speed check: under a full parallel run on two
        // cores the first pass has been seen to take over 30 s)
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ok = self.http.get(format!("{}/readyz", self.url)).send().await.map(|r| r.status().is_success());
            if ok.unwrap_or(false) {
                break;
            }
            assert!(Instant::now() < deadline, "pinacle up never became ready; log:\n{}", self.server_log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // (not where a test counts requests against its own rate limit)
        if self.grant_youki && !self.extra_args.iter().any(|a| a == "--rate-limit") {
            let granted = self
                .http
                .patch(format!("{}/api/v1/admin/settings", self.url))
                .bearer_auth(&self.admin_token)
                .json(&json!({"youki": {"everyone": true}, "quotas": lifted_quotas()}))
                .send()
                .await
                .map(|r| r.status().is_success());
            assert!(granted.unwrap_or(false), "could not allow youki pods and lift quotas; log:\n{}", self.server_log());
        }
    }

    /// The data directory of remote host `id` ([`Pinacle::spawn_host`]).
    pub fn host_dir(&self, id: &str) -> PathBuf {
        self.data.path().join("hosts").join(id)
    }

    /// Starts `pinacle agent` for host `id` as another machine would run
    /// it: a data directory of its own (no database, queue or master key),
    /// joined with a token from `pinacle host add {id}` on its first start
    /// (its credential is kept for the next), connected to this server
    /// only over its link. It dies with the guard; it logs to `agent.log`
    /// in its directory.
    pub fn spawn_host(&self, id: &str, extra: &[&str]) -> KillOnDrop {
        self.spawn_host_in(id, &[], extra)
    }

    /// [`Pinacle::spawn_host`], run through `prefix` (such as `nsenter
    /// --net=/run/netns/NS --`, for a host in a network namespace).
    pub fn spawn_host_in(&self, id: &str, prefix: &[&str], extra: &[&str]) -> KillOnDrop {
        let dir = self.host_dir(id);
        std::fs::create_dir_all(&dir).expect("host dir");
        // youki pods' root group must pass through the directories above
        // the host's own (as through / and /var/lib on a real machine)
        for above in [self.data.path().to_path_buf(), self.data.path().join("hosts")] {
            use std::os::unix::fs::PermissionsExt;
            std::os::unix::fs::chown(&above, None, Some(1_000_000_000)).expect("chgrp");
            std::fs::set_permissions(&above, std::fs::Permissions::from_mode(0o710)).expect("chmod");
        }
        if !dir.join("images").exists() {
            std::os::unix::fs::symlink(image_cache(), dir.join("images")).expect("image cache link");
        }
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(pinacle_bin());
                c
            }
            None => Command::new(pinacle_bin()),
        };
        cmd.arg("agent").arg("--server").arg(&self.url).arg("--data-dir").arg(&dir);
        if !dir.join("host-credential.json").exists() {
            let (code, token, err) = cli(self, &["host", "add", id]);
            assert_eq!(code, 0, "pinacle host add {id}: {err}");
            cmd.arg("--join-token").arg(token.trim());
        }
        cmd.args(extra)
            .env("PINACLE_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("agent.log")).expect("log")));
        KillOnDrop(cmd.spawn().expect("spawn pinacle agent"))
    }

    /// What remote host `id`'s agent logged.
    pub fn host_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.host_dir(id).join("agent.log")).unwrap_or_default()
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    /// Kills the server process hard (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts the server again on the same data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(TOKEN, method, path, body).await
    }

    pub async fn call_as(&self, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Signs up user `name` (a fixed password) and signs in: an access token.
    pub async fn signup_and_login(&self, name: &str) -> String {
        let creds = json!({"name": name, "password": "correct horse battery"});
        let (s, b) = self.call_as("", reqwest::Method::POST, "/api/v1/auth/signup", Some(creds.clone())).await;
        assert_eq!(s, 201, "{b}");
        let (s, b) = self.call_as("", reqwest::Method::POST, "/api/v1/auth/login", Some(creds)).await;
        assert_eq!(s, 200, "{b}");
        b["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn create(&self, name: &str, template: &str, runtime: &str) -> Value {
        let (status, pod) = self
            .call(reqwest::Method::POST, "/api/v1/pods", Some(json!({"name": name, "template": template, "runtime": runtime})))
            .await;
        assert_eq!(status, 202, "create {name}: {pod}");
        pod
    }

    pub async fn pod(&self, key: &str) -> Value {
        let (status, pod) = self.call(reqwest::Method::GET, &format!("/api/v1/pods/{key}"), None).await;
        assert_eq!(status, 200, "show {key}: {pod}");
        pod
    }

    /// Polls until the pod is in `state`; panics on `error` or after `secs`.
    pub async fn wait_state(&self, key: &str, state: &str, secs: u64) -> Value {
        self.wait_state_as(TOKEN, key, state, secs).await
    }

    /// [`Pinacle::wait_state`] with another user's token.
    pub async fn wait_state_as(&self, token: &str, key: &str, state: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (status, pod) = self.call_as(token, reqwest::Method::GET, &format!("/api/v1/pods/{key}"), None).await;
            if status == 200 && pod["state"] == state {
                return pod;
            }
            if state != "error" && pod["state"] == "error" {
                panic!("pod {key} failed: {pod}\n{}", self.server_log());
            }
            if state == "deleted" && status == 404 {
                return pod;
            }
            assert!(Instant::now() < deadline, "pod {key} not {state} after {secs} s: {pod}\n{}", self.server_log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn create_running(&self, name: &str, template: &str, runtime: &str) -> Value {
        self.create(name, template, runtime).await;
        self.wait_state(name, "running", 120).await
    }

    /// Runs a command in the pod through the API: (stdout, stderr, exit code).
    pub async fn exec(&self, key: &str, argv: &[&str]) -> (String, String, i64) {
        self.exec_as(TOKEN, key, argv).await
    }

    /// [`Pinacle::exec`] with another user's token.
    pub async fn exec_as(&self, token: &str, key: &str, argv: &[&str]) -> (String, String, i64) {
        match self.try_exec_as(token, key, argv, true).await {
            Some(r) => r,
            None => unreachable!("exec_as asserts the answer"),
        }
    }

    /// [`Pinacle::exec_as`], `None` when the pod does not take it (not
    /// running yet, for instance) unless `must` is set.
    pub async fn try_exec_as(&self, token: &str, key: &str, argv: &[&str], must: bool) -> Option<(String, String, i64)> {
        let resp = self
            .http
            .post(format!("{}/api/v1/pods/{key}/exec", self.url))
            .bearer_auth(token)
            .json(&json!({ "command": argv }))
            .send()
            .await
            .expect("exec");
        if !must && resp.status() != 200 {
            return None;
        }
        assert_eq!(resp.status(), 200, "exec {argv:?}: {}", resp.text().await.unwrap_or_default());
        // a command that hangs fails its test instead of hanging the run
        let body = tokio::time::timeout(EXEC_LIMIT, resp.text())
            .await
            .unwrap_or_else(|_| panic!("exec {argv:?} did not finish within {EXEC_LIMIT:?}"))
            .expect("exec body");
        let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
        let b64 = base64::engine::general_purpose::STANDARD;
        for line in body.lines() {
            let v: Value = serde_json::from_str(line).expect("ndjson");
            if let Some(c) = v.get("exit_code") {
                code = c.as_i64();
            } else {
                let data = b64.decode(v["data"].as_str().unwrap()).unwrap();
                if v["stream"] == "stdout" { out.extend(data) } else { err.extend(data) }
            }
        }
        Some((
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
            code.expect("exec stream ended without exit code"),
        ))
    }

    pub fn runtime_state(&self, runtime: &str) -> PathBuf {
        self.data.path().join("runtime").join(runtime)
    }

    /// Sandbox ids the runtime holds in this test's state directory.
    pub fn sandboxes(&self, runtime: &str) -> Vec<String> {
        sandboxes_in(&self.runtime_state(runtime), runtime)
    }
}

/// Sandbox ids `runtime` holds in state directory `state`.
pub fn sandboxes_in(state: &Path, runtime: &str) -> Vec<String> {
    {
        let out = runtime_cmd(runtime, state).arg("list").args(if runtime == "runsc" { &["-quiet"][..] } else { &[][..] }).output().expect("list");
        String::from_utf8_lossy(&out.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }
}

/// A child process killed when dropped (also when a test fails).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A runtime command line on a state directory: `runsc` or `pinacle-youki`.
pub fn runtime_cmd(runtime: &str, state: &Path) -> Command {
    let mut cmd = if runtime == "runsc" {
        let mut c = Command::new("runsc");
        c.arg(format!("--root={}", state.display())).arg("--network=none").arg("--overlay2=none");
        c
    } else {
        let mut c = Command::new(pinacle_bin().with_file_name("pinacle-youki"));
        c.arg(format!("--root={}", state.display()));
        c
    };
    cmd.stdin(Stdio::null());
    cmd
}

impl Drop for Pinacle {
    fn drop(&mut self) {
        self.kill();
        // this server's data directory and those of the hosts it started
        let mut roots = vec![self.data.path().to_path_buf()];
        if let Ok(hosts) = std::fs::read_dir(self.data.path().join("hosts")) {
            roots.extend(hosts.flatten().map(|h| h.path()));
        }
        for root in &roots {
            for runtime in ["runsc", "youki"] {
                let state = root.join("runtime").join(runtime);
                if !state.exists() {
                    continue;
                }
                for id in sandboxes_in(&state, runtime) {
                    let _ = runtime_cmd(runtime, &state).args(["delete", "--force", &id]).output();
                }
            }
            // pod network namespaces (bridged or loopback-only) and host
            // veths made there: named after the pod's id, its directory's name
            if let Ok(pods) = std::fs::read_dir(root.join("pods")) {
                for dir in pods.flatten() {
                    let name = dir.file_name().to_string_lossy().into_owned();
                    let Some(short) = name.get(..12) else { continue };
                    if std::path::Path::new("/var/run/netns").join(format!("pinacle-{short}")).exists() {
                        let _ = Command::new("ip").args(["netns", "del", &format!("pinacle-{short}")]).output();
                    }
                    let _ = Command::new("ip").args(["link", "del", &format!("pv{short}")]).output();
                }
            }
        }
        // unmount every overlay left under the data dir, deepest first
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let root = self.data.path().canonicalize().unwrap_or_else(|_| self.data.path().to_path_buf());
            let mut mounts: Vec<&str> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&*root.to_string_lossy()))
                .collect();
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mounts {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_file(self.data.path().join("images"));
    }
}

/// Removes a test's pod bridge and its nftables ruleset however the test ends.
pub struct HostCleanup(pub &'static str);

impl Drop for HostCleanup {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).output();
        let _ = Command::new("nft").args(["delete", "table", "inet", &format!("pinacle_{}", self.0)]).output();
    }
}

/// A loopback port nothing listens on right now.
/// Runs the `pinacle` CLI against `p` as the admin, stdin closed:
/// (exit code, stdout, stderr).
pub fn cli(p: &Pinacle, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(pinacle_bin())
        .args(args)
        .env("PINACLE_API", &p.url)
        .env("PINACLE_TOKEN", TOKEN)
        .env("PINACLE_CONFIG", p.data.path().join("none.json"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A WebSocket to the pod's terminal (`query`: `rows=24&cols=80`, or empty),
/// with the admin token.
pub async fn terminal(
    p: &Pinacle,
    pod: &str,
    query: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/api/v1/pods/{pod}/terminal?{query}", p.url.replace("http://", "ws://"));
    let req = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(&url)
        .header("host", p.url.trim_start_matches("http://"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tokio_tungstenite::tungstenite::handshake::client::generate_key())
        .body(())
        .unwrap();
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// Signs `challenge` in `namespace` with the OpenSSH private key at `key`
/// (`ssh-keygen -Y sign`): the armored signature.
pub fn sign_ssh_challenge(key: &Path, namespace: &str, challenge: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh-keygen");
    child.stdin.take().expect("stdin").write_all(challenge.as_bytes()).expect("write challenge");
    let out = child.wait_with_output().expect("ssh-keygen -Y sign");
    assert!(out.status.success(), "ssh-keygen -Y sign: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("signature")
}

impl Pinacle {
    /// Registers the OpenSSH key whose private half is at `key` (the `.pub`
    /// beside it) for the holder of `token`, with proof of possession: a
    /// challenge from the server signed with the private key.
    pub async fn add_ssh_key_as(&self, token: &str, name: &str, key: &Path) -> (u16, Value) {
        let (s, ch) = self.call_as(token, reqwest::Method::POST, "/api/v1/ssh-keys/challenge", None).await;
        assert_eq!(s, 201, "{ch}");
        let challenge = ch["challenge"].as_str().expect("challenge");
        let signature = sign_ssh_challenge(key, ch["namespace"].as_str().expect("namespace"), challenge);
        let public_key = std::fs::read_to_string(format!("{}.pub", key.display())).expect("public key");
        let body = json!({"name": name, "public_key": public_key, "challenge": challenge, "signature": signature});
        self.call_as(token, reqwest::Method::POST, "/api/v1/ssh-keys", Some(body)).await
    }
}
