//! Pod networking on real sandboxes: each pod has its own namespace and
//! address on a host bridge; the host reaches pods, pods reach neither each
//! other nor the host's own services, and deleting a pod removes its
//! namespace and interfaces. Only the bridge and namespaces this test makes
//! are touched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, HostCleanup, Pinacle};
use serde_json::Value;

// Each test has its own bridge and subnet: tests run in parallel.
const BRIDGE: &str = "pnctest0";
const SUBNET: &str = "10.231.7.0/24";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 231, 7, 1);

fn attachment(p: &Pinacle, pod: &Value) -> (Ipv4Addr, String) {
    let id: uuid::Uuid = pod["id"].as_str().unwrap().parse().unwrap();
    let path = p.data.path().join("pods").join(id.simple().to_string()).join("network.json");
    let a: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (a["ip"].as_str().unwrap().parse().unwrap(), a["netns"].as_str().unwrap().to_owned())
}

/// A shell line that fetches /index.html from `host:port` with busybox nc.
fn http_via_nc(host: &str, port: u16) -> String {
    format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {host} {port}")
}

async fn http_get(url: &str) -> Result<String, String> {
    let c = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    match c.get(url).send().await {
        Ok(r) => r.text().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn pods_get_isolated_networks_on_both_runtimes() {
    let _cleanup = HostCleanup(BRIDGE);
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BRIDGE, "--pod-subnet", SUBNET]).await;
    let a = p.create_running("net-a", "minimal", "youki").await;
    let b = p.create_running("net-b", "minimal", "gvisor").await;
    let (ip_a, ns_a) = attachment(&p, &a);
    let (ip_b, ns_b) = attachment(&p, &b);
    assert_ne!(ip_a, ip_b);
    for ip in [ip_a, ip_b] {
        assert!(ip.octets()[..3] == [10, 231, 7] && ip != GATEWAY, "{ip}");
    }
    // a web server in each pod
    for (pod, body) in [("net-a", "hello from a"), ("net-b", "hello from b")] {
        let script = format!("echo '{body}' > /workspace/index.html && busybox httpd -p 8080 -h /workspace");
        let (_, err, code) = p.exec(pod, &["sh", "-c", &script]).await;
        assert_eq!(code, 0, "{pod}: {err}");
    }
    // the host reaches both (this is how the proxy will)
    for (ip, body) in [(ip_a, "hello from a"), (ip_b, "hello from b")] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match http_get(&format!("http://{ip}:8080/index.html")).await {
                Ok(text) => {
                    assert_eq!(text.trim(), body);
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "host cannot reach {ip}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // each pod reaches itself... (busybox nc: Debian's static wget crashes)
    let (out, _, code) = p.exec("net-a", &["sh", "-c", &http_via_nc("127.0.0.1", 8080)]).await;
    assert_eq!(code, 0);
    assert!(out.contains("hello from a"), "{out}");
    // ...but not the other pod, on either runtime
    for (from, to) in [("net-a", ip_b), ("net-b", ip_a)] {
        let (out, _, code) = p.exec(from, &["sh", "-c", &http_via_nc(&to.to_string(), 8080)]).await;
        assert!(code != 0 && !out.contains("hello"), "{from} reached {to}: {out}");
    }
    // nor a service of the host's, even on the bridge address itself
    let listener = tokio::net::TcpListener::bind((GATEWAY, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        while let Ok((_, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    for from in ["net-a", "net-b"] {
        let (_, _, code) = p.exec(from, &["sh", "-c", &http_via_nc(&GATEWAY.to_string(), port)]).await;
        assert_ne!(code, 0);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "a pod opened a connection to the host");
    server.abort();
    // the address survives a stop and start
    p.call(reqwest::Method::POST, "/api/v1/pods/net-a/stop", None).await;
    p.wait_state("net-a", "stopped", 60).await;
    p.call(reqwest::Method::POST, "/api/v1/pods/net-a/start", None).await;
    p.wait_state("net-a", "running", 60).await;
    assert_eq!(attachment(&p, &a).0, ip_a);
    // deleting removes the namespace and the host's veth
    for pod in ["net-a", "net-b"] {
        p.call(reqwest::Method::DELETE, &format!("/api/v1/pods/{pod}"), None).await;
        p.wait_state(pod, "deleted", 60).await;
    }
    for ns in [ns_a, ns_b] {
        assert!(!Path::new("/var/run/netns").join(&ns).exists(), "{ns} left behind");
        let veth = format!("pv{}", ns.trim_start_matches("pinacle-"));
        let shown = std::process::Command::new("ip").args(["link", "show", &veth]).output().unwrap();
        assert!(!shown.status.success(), "{veth} left behind");
    }
}

/// GET through the proxy with `host` and maybe a bearer token: (status, body).
async fn via_proxy(proxy: u16, host: &str, token: Option<&str>) -> (u16, String) {
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut req = c.get(format!("http://127.0.0.1:{proxy}/index.html")).header("host", host);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn the_proxy_routes_pod_hosts_to_their_owners_only() {
    const BR: &str = "pnctest1";
    let _cleanup = HostCleanup(BR);
    let proxy = free_port();
    let proxy_arg = format!("127.0.0.1:{proxy}");
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.8.0/24", "--proxy-listen", &proxy_arg]).await;
    p.create_running("web", "minimal", "youki").await;
    let (_, err, code) = p.exec("web", &["sh", "-c", "echo 'hello via proxy' > /workspace/index.html && busybox httpd -p 8080 -h /workspace"]).await;
    assert_eq!(code, 0, "{err}");
    let host = "8080-web-admin.pinacle.localhost";
    // the owner gets through (the server may take a moment to listen)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, body) = via_proxy(proxy, host, Some(common::TOKEN)).await;
        if s == 200 {
            assert_eq!(body.trim(), "hello via proxy");
            break;
        }
        assert!(Instant::now() < deadline, "{s}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // no credential: 401, and nothing is told about which pods exist
    assert_eq!(via_proxy(proxy, host, None).await.0, 401);
    assert_eq!(via_proxy(proxy, "8080-nope-admin.pinacle.localhost", None).await.0, 401);
    assert_eq!(via_proxy(proxy, host, Some("pnc_not-a-token")).await.0, 401);
    // another user: 404, as if the pod did not exist
    let (s, b) = p
        .call_as("", reqwest::Method::POST, "/api/v1/auth/signup", Some(serde_json::json!({"name": "bob", "password": "correct horse battery"})))
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, pair) = p
        .call_as("", reqwest::Method::POST, "/api/v1/auth/login", Some(serde_json::json!({"name": "bob", "password": "correct horse battery"})))
        .await;
    let bob = pair["access_token"].as_str().unwrap();
    assert_eq!(via_proxy(proxy, host, Some(bob)).await.0, 404);
    // wrong pod, outside the domain, a service name: 404
    for h in ["8080-nope-admin.pinacle.localhost", "8080-web-admin.example.com", "code-web-admin.pinacle.localhost", "site-web-admin.pinacle.localhost"] {
        assert_eq!(via_proxy(proxy, h, Some(common::TOKEN)).await.0, 404, "{h}");
    }
    // a process that serves a port is reachable by its name
    let svc = serde_json::json!({"name": "svc", "template": "minimal", "runtime": "youki",
        "install": [{"name": "page", "run": "echo 'hello from a service' > /workspace/index.html"}],
        "processes": [{"name": "site", "run": "exec busybox httpd -f -p 8081 -h /workspace", "port": 8081}]});
    let (s, b) = p.call(reqwest::Method::POST, "/api/v1/pods", Some(svc)).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state("svc", "running", 60).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, body) = via_proxy(proxy, "site-svc-admin.pinacle.localhost", Some(common::TOKEN)).await;
        if s == 200 {
            assert_eq!(body.trim(), "hello from a service");
            break;
        }
        assert!(Instant::now() < deadline, "{s}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, body) = via_proxy(proxy, "other-svc-admin.pinacle.localhost", Some(common::TOKEN)).await;
    assert_eq!(s, 404);
    assert!(body.contains("no service named other"), "{body}");
    // nothing listening on the port: a 502 page naming pod and port
    let (s, body) = via_proxy(proxy, "9090-web-admin.pinacle.localhost", Some(common::TOKEN)).await;
    assert_eq!(s, 502);
    assert!(body.contains("port 9090 of pod web"), "{body}");
    // a stopped pod: a page saying so
    p.call(reqwest::Method::POST, "/api/v1/pods/web/stop", None).await;
    p.wait_state("web", "stopped", 60).await;
    let (s, body) = via_proxy(proxy, host, Some(common::TOKEN)).await;
    assert_eq!(s, 503);
    assert!(body.contains("web is stopped"), "{body}");
}

/// A small server for the streaming tests, run with the pod's python3:
/// `GET /blob` streams 50 MiB of a known pattern, `POST /sha` answers the
/// SHA-256 of the body, and a WebSocket upgrade echoes frames.
const STREAM_SERVER: &str = include_str!("../../scripts/bench/stream_server.py");

#[tokio::test]
async fn the_proxy_streams_50_mib_both_ways_and_carries_websockets() {
    use futures::{SinkExt, StreamExt};
    use sha2::Digest;
    const BR: &str = "pnctest2";
    let _cleanup = HostCleanup(BR);
    let proxy = free_port();
    let proxy_arg = format!("127.0.0.1:{proxy}");
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.10.0/24", "--proxy-listen", &proxy_arg]).await;
    p.create_running("py", "blank", "youki").await;
    let write = serde_json::json!({"command": ["sh", "-c", "cat > /workspace/srv.py"], "stdin": STREAM_SERVER});
    let (s, b) = p.call(reqwest::Method::POST, "/api/v1/pods/py/exec", Some(write)).await;
    assert_eq!(s, 200, "{b}");
    let (_, err, code) = p.exec("py", &["sh", "-c", "setsid python3 /workspace/srv.py >/workspace/srv.log 2>&1 </dev/null &"]).await;
    assert_eq!(code, 0, "{err}");
    let host = "9000-py-admin.pinacle.localhost";
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    // download: 50 MiB streamed through the proxy, byte for byte
    let deadline = Instant::now() + Duration::from_secs(20);
    let blob = loop {
        let r = http.get(format!("http://127.0.0.1:{proxy}/blob")).header("host", host).bearer_auth(common::TOKEN).send().await.unwrap();
        if r.status() == 200 {
            break r.bytes().await.unwrap();
        }
        assert!(Instant::now() < deadline, "server never came up: {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pattern: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(4096 * 50);
    assert_eq!(blob.len(), 50 * 1024 * 1024);
    assert!(blob[..] == pattern[..], "downloaded bytes differ");
    // upload: 50 MiB of other bytes, hashed by the pod
    let upload: Vec<u8> = (0..50 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let want = hex_of(&sha2::Sha256::digest(&upload));
    let r = http.post(format!("http://127.0.0.1:{proxy}/sha")).header("host", host).bearer_auth(common::TOKEN).body(upload).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), want);
    // WebSocket: the upgrade goes through and frames echo both ways
    let req = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("ws://127.0.0.1:{proxy}/ws"))
        .header("host", host)
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
        ws.send(tokio_tungstenite::tungstenite::Message::Text(msg.to_owned().into())).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
    // without a token the upgrade is refused
    let req = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("ws://127.0.0.1:{proxy}/ws"))
        .header("host", host)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tokio_tungstenite::tungstenite::handshake::client::generate_key())
        .body(())
        .unwrap();
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A network namespace standing in for "the outside": a web server on
/// `{prefix}.2` (and `{routed}.2`), reached from the host through a veth
/// (`{prefix}.1`), so that pod egress goes through the host's forwarding
/// and NAT exactly as it would to the Internet.
#[derive(Debug, Clone, Copy)]
struct OutsideNet {
    ns: &'static str,
    host_veth: &'static str,
    peer_veth: &'static str,
    /// The first three octets of the veth's /24.
    prefix: &'static str,
    /// Another /24 (first three octets) routed through the namespace.
    routed: Option<&'static str>,
}

impl OutsideNet {
    fn server(&self) -> String {
        format!("{}.2", self.prefix)
    }
}

/// 10.231.14.2 and 10.231.15.2.
const OUTSIDE_A: OutsideNet =
    OutsideNet { ns: "pnctest-out", host_veth: "pnctestov", peer_veth: "pnctestop", prefix: "10.231.14", routed: Some("10.231.15") };
/// 10.231.45.2, for tests running beside those using [`OUTSIDE_A`].
const OUTSIDE_B: OutsideNet = OutsideNet { ns: "pnctest-out2", host_veth: "pnctestov2", peer_veth: "pnctestop2", prefix: "10.231.45", routed: None };

struct Outside {
    net: OutsideNet,
    server: Option<common::KillOnDrop>,
    _dir: tempfile::TempDir,
}

impl Outside {
    fn start() -> Self {
        Self::start_as(OUTSIDE_A)
    }

    fn start_as(net: OutsideNet) -> Self {
        Self::remove(&net);
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        };
        let (ns, host, peer, pfx) = (net.ns, net.host_veth, net.peer_veth, net.prefix);
        ip(&["netns", "add", ns]);
        ip(&["link", "add", host, "type", "veth", "peer", "name", peer]);
        ip(&["link", "set", peer, "netns", ns]);
        ip(&["addr", "add", &format!("{pfx}.1/24"), "dev", host]);
        ip(&["link", "set", host, "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{pfx}.2/24"), "dev", peer]);
        if let Some(routed) = net.routed {
            ip(&["-n", ns, "addr", "add", &format!("{routed}.2/24"), "dev", peer]);
        }
        ip(&["-n", ns, "link", "set", peer, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        if let Some(routed) = net.routed {
            ip(&["route", "add", &format!("{routed}.0/24"), "via", &format!("{pfx}.2")]);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "hello from outside\n").unwrap();
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "busybox", "httpd", "-f", "-p", "8080", "-h"])
            .arg(dir.path())
            .spawn()
            .unwrap();
        Self { net, server: Some(common::KillOnDrop(server)), _dir: dir }
    }

    fn remove(net: &OutsideNet) {
        if let Some(routed) = net.routed {
            let _ = std::process::Command::new("ip").args(["route", "del", &format!("{routed}.0/24")]).output();
        }
        let _ = std::process::Command::new("ip").args(["link", "del", net.host_veth]).output();
        let _ = std::process::Command::new("ip").args(["netns", "del", net.ns]).output();
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.server.take();
        Self::remove(&self.net);
    }
}

/// Whether `pod` can fetch the outside server's page at `ip`.
async fn reaches(p: &Pinacle, pod: &str, ip: &str) -> bool {
    let (out, _, code) = p.exec(pod, &["sh", "-c", &http_via_nc(ip, 8080)]).await;
    code == 0 && out.contains("hello from outside")
}

/// Finding #15: private networks (the outside server's 10.231.14.0/24 is
/// one) are out of reach by default, for every pod policy, and reachable
/// once the operator allows them with --pod-allow-cidr.
#[tokio::test]
async fn private_networks_are_unreachable_unless_the_operator_allows_them() {
    const BR: &str = "pnctest9";
    let _cleanup = HostCleanup(BR);
    let _outside = Outside::start_as(OUTSIDE_B);
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.44.0/24"]).await;
    p.create_running("priv-yk", "minimal", "youki").await;
    p.create_running("priv-gv", "minimal", "gvisor").await;
    for pod in ["priv-yk", "priv-gv"] {
        assert!(!reaches(&p, pod, &OUTSIDE_B.server()).await, "{pod} reached a private network by default");
    }
    // a pod's own allow list does not open the site's networks
    let allow = serde_json::json!({"egress": format!("{}/32", OUTSIDE_B.server())});
    assert_eq!(p.call(reqwest::Method::PATCH, "/api/v1/pods/priv-yk", Some(allow)).await.0, 200);
    assert!(!reaches(&p, "priv-yk", &OUTSIDE_B.server()).await, "a pod's allow list opened a private network");
    drop(p);
    // the operator's allow list does
    let net = format!("{}.0/24", OUTSIDE_B.prefix);
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.44.0/24", "--pod-allow-cidr", &net]).await;
    p.create_running("priv-yk", "minimal", "youki").await;
    p.create_running("priv-gv", "minimal", "gvisor").await;
    for pod in ["priv-yk", "priv-gv"] {
        assert!(reaches(&p, pod, &OUTSIDE_B.server()).await, "{pod} cannot reach an allowed private network");
    }
}

#[tokio::test]
async fn egress_policies_apply_per_pod_at_once_and_the_deny_list_always_wins() {
    const BR: &str = "pnctest4";
    let _cleanup = HostCleanup(BR);
    let _outside = Outside::start();
    // the outside server lives in a private network: allowed here
    let p = Pinacle::start_with(&[
        "--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.13.0/24", "--pod-deny", "10.231.15.0/24",
        "--pod-allow-cidr", "10.231.14.0/24,10.231.15.0/24",
    ])
    .await;
    p.create_running("eg-a", "minimal", "youki").await;
    p.create_running("eg-b", "minimal", "gvisor").await;
    // allow-all by default: out through NAT, but never to the deny list
    for pod in ["eg-a", "eg-b"] {
        assert!(reaches(&p, pod, "10.231.14.2").await, "{pod} cannot get out");
        assert!(!reaches(&p, pod, "10.231.15.2").await, "{pod} reached a denied network");
    }
    // deny-all on one pod, applied to the running pod; the other is untouched
    let (s, b) = p.call(reqwest::Method::PATCH, "/api/v1/pods/eg-a", Some(serde_json::json!({"egress": "deny-all"}))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["egress"], "deny-all");
    assert!(!reaches(&p, "eg-a", "10.231.14.2").await, "deny-all pod got out");
    assert!(reaches(&p, "eg-b", "10.231.14.2").await);
    // an allow list: listed networks only, and the deny list still wins
    let allow = serde_json::json!({"egress": "10.231.14.2/32, 10.231.15.0/24"});
    assert_eq!(p.call(reqwest::Method::PATCH, "/api/v1/pods/eg-b", Some(allow)).await.0, 200);
    assert!(reaches(&p, "eg-b", "10.231.14.2").await);
    assert!(!reaches(&p, "eg-b", "10.231.15.2").await, "the allow list beat the deny list");
    let elsewhere = serde_json::json!({"egress": "10.231.16.0/24"});
    assert_eq!(p.call(reqwest::Method::PATCH, "/api/v1/pods/eg-b", Some(elsewhere)).await.0, 200);
    assert!(!reaches(&p, "eg-b", "10.231.14.2").await, "reached a network not on the allow list");
    // the policy outlives a restart
    p.call(reqwest::Method::POST, "/api/v1/pods/eg-a/stop", None).await;
    p.wait_state("eg-a", "stopped", 60).await;
    p.call(reqwest::Method::POST, "/api/v1/pods/eg-a/start", None).await;
    p.wait_state("eg-a", "running", 60).await;
    assert!(!reaches(&p, "eg-a", "10.231.14.2").await, "deny-all was lost on restart");
    // a bad policy is refused and changes nothing
    let (s, b) = p.call(reqwest::Method::PATCH, "/api/v1/pods/eg-a", Some(serde_json::json!({"egress": "example.com"}))).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("egress"), "{b}");
    assert_eq!(p.pod("eg-a").await["egress"], "deny-all");

    // Reconcile removes a pod interface no pod owns (a start that died
    // halfway) from this bridge, with its namespace.
    let ip = |args: &[&str]| assert!(std::process::Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
    ip(&["netns", "add", "pinacle-0dead0beef00"]);
    ip(&["link", "add", "pv0dead0beef00", "type", "veth", "peer", "name", "pn0dead0beef00"]);
    ip(&["link", "set", "pv0dead0beef00", "master", BR]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Path::new("/var/run/netns/pinacle-0dead0beef00").exists()
        || std::process::Command::new("ip").args(["link", "show", "pv0dead0beef00"]).output().unwrap().status.success()
    {
        assert!(Instant::now() < deadline, "the leftover interface was not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // the pods' own interfaces are untouched
    let out = std::process::Command::new("ip").args(["-o", "link", "show", "master", BR]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2, "{}", String::from_utf8_lossy(&out.stdout));
    let (s, _) = p.call(reqwest::Method::PATCH, "/api/v1/pods/eg-b", Some(serde_json::json!({"egress": "allow-all"}))).await;
    assert_eq!(s, 200);
    assert!(reaches(&p, "eg-b", "10.231.14.2").await, "eg-b lost its network");
}

/// Finding #3: addresses are chosen under one lock per host, checked
/// against every recorded pod: sixteen pods started at once get sixteen
/// addresses, and each pod's interface carries the address recorded for it.
#[tokio::test]
async fn sixteen_pods_started_at_once_get_sixteen_distinct_addresses() {
    const BR: &str = "pnctest8";
    const N: usize = 16;
    let _cleanup = HostCleanup(BR);
    // sixteen 20 GiB disks: more than this machine's free space, on purpose
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.42.0/24", "--disk-overcommit", "100"]).await;
    let names: Vec<String> = (0..N).map(|i| format!("many-{i}")).collect();
    let pods = futures::future::join_all(names.iter().map(|n| p.create(n, "minimal", "youki"))).await;
    for n in &names {
        p.wait_state(n, "running", 300).await;
    }
    let attached: Vec<(Ipv4Addr, String)> = pods.iter().map(|pod| attachment(&p, pod)).collect();
    let distinct: std::collections::BTreeSet<Ipv4Addr> = attached.iter().map(|a| a.0).collect();
    assert_eq!(distinct.len(), N, "duplicate addresses: {attached:?}");
    for (ip, ns) in &attached {
        let out = std::process::Command::new("ip").args(["-n", ns, "-4", "-o", "addr", "show", "eth0"]).output().unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(shown.contains(&format!(" {ip}/24 ")), "{ns} does not carry {ip}: {shown}");
    }
}
