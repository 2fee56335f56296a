//! A real git smart-HTTP server for tests: Debian's `git http-backend`
//! behind a small CGI bridge (Python's standard library, run by
//! `/usr/bin/python3`) that asks for HTTP Basic auth on `/private/…`
//! repositories. It runs in a network namespace this harness creates, on
//! a veth pair with addresses in 198.18.0.0/15, so pods reach it through
//! their NAT egress exactly as they would reach a forge on the Internet.
//! Everything (server, namespace, veth) is removed on drop.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The CGI bridge (shared with `scripts/bench/clone.sh`): serves `git
/// http-backend` for every repository under the project root;
/// `/private/…` needs `Authorization: Basic` with the configured user and
/// token. Repositories whose path holds `-v0` speak protocol v0 only.
const BRIDGE: &str = include_str!("../../../scripts/bench/git_http_bridge.py");

/// Where a test's server lives: namespace, veth names and the /24 of the
/// veth (first three octets, inside 198.18.0.0/15).
#[derive(Debug, Clone, Copy)]
pub struct GitNet {
    pub ns: &'static str,
    pub host_veth: &'static str,
    pub peer_veth: &'static str,
    pub prefix: &'static str,
}

/// The port the server listens on in its namespace.
pub const PORT: u16 = 8080;

/// A running git server; removed (process, veth, namespace) on drop.
pub struct GitServer {
    net: GitNet,
    child: Option<Child>,
    /// The repositories (`GIT_PROJECT_ROOT`): `public/…` and `private/…`.
    pub root: PathBuf,
    /// The bridge's request log (never holds credentials).
    pub log: PathBuf,
    dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// `git` on the host for building test repositories (never for a pod's
/// content), with a fixed identity and no global configuration.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid"))
    .trim()
    .to_owned()
}

impl GitServer {
    /// Creates the namespace and veth, and starts the bridge on
    /// `{prefix}.2:8080` with `user`/`token` for `/private/…`. Waits (at
    /// most 20 s) until the host can connect to it.
    pub fn start(net: GitNet, user: &str, token: &str) -> Self {
        Self::remove(&net);
        let (ns, host, peer, pfx) = (net.ns, net.host_veth, net.peer_veth, net.prefix);
        ip(&["netns", "add", ns]);
        ip(&["link", "add", host, "type", "veth", "peer", "name", peer]);
        ip(&["link", "set", peer, "netns", ns]);
        ip(&["addr", "add", &format!("{pfx}.1/24"), "dev", host]);
        ip(&["link", "set", host, "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{pfx}.2/24"), "dev", peer]);
        ip(&["-n", ns, "link", "set", peer, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        let dir = tempfile::Builder::new().prefix("pinacle-git-").tempdir_in("/var/tmp").unwrap();
        let root = dir.path().join("repos");
        std::fs::create_dir_all(root.join("public")).unwrap();
        std::fs::create_dir_all(root.join("private")).unwrap();
        let script = dir.path().join("bridge.py");
        std::fs::write(&script, BRIDGE).unwrap();
        let log = dir.path().join("requests.log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "/usr/bin/python3"])
            .arg(&script)
            .arg(&root)
            .arg(format!("{pfx}.2"))
            .arg(PORT.to_string())
            .env("GIT_TEST_USER", user)
            .env("GIT_TEST_TOKEN", token)
            .env("GIT_TEST_LOG", &log)
            .env("GIT_TEST_TOKENS", dir.path().join("tokens"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("bridge.err")).unwrap()))
            .spawn()
            .unwrap();
        let server = Self { net, child: Some(child), root, log, dir };
        let addr: SocketAddr = format!("{pfx}.2:{PORT}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git server did not start: {}",
                std::fs::read_to_string(server.dir.path().join("bridge.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `http://{prefix}.2:8080/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}.2:{PORT}/{path}", self.net.prefix)
    }

    /// The file of tokens (`TOKEN REPO EXPIRES` lines) that also open
    /// `/private/REPO.git` (a fake GitHub's installation tokens).
    pub fn tokens_file(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// A scratch directory for building repositories.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join("work").join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Publishes the work repository `work` as the bare repository
    /// `{root}/{path}` (e.g. `public/app.git`), all branches; pushes are
    /// accepted on it.
    pub fn publish(&self, work: &Path, path: &str) -> PathBuf {
        let bare = self.root.join(path);
        run(Command::new("git").arg("clone").arg("--bare").arg("-q").arg(work).arg(&bare).env("GIT_CONFIG_GLOBAL", "/dev/null"));
        git(&bare, &["config", "http.receivepack", "true"]);
        git(&bare, &["update-server-info"]);
        bare
    }

    /// The bridge's stderr (for failure messages).
    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bridge.err")).unwrap_or_default()
    }

    fn remove(net: &GitNet) {
        let _ = Command::new("ip").args(["link", "del", net.host_veth]).output();
        let _ = Command::new("ip").args(["netns", "del", net.ns]).output();
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Self::remove(&self.net);
    }
}
