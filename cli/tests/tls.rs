//! HTTPS through the pod proxy, with certificates really issued by Pebble
//! (Let's Encrypt's test CA, Debian package `pebble`) through instant-acme,
//! and the browser sign-in flow: pod-scoped login links, HttpOnly cookies,
//! public ports. Pebble, its DNS server (`pebble-challtestsrv`) and every
//! listener are on loopback; Pebble's DNS answers 127.0.0.1 for any name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, HostCleanup, KillOnDrop, Pinacle};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{json, Value};

const DOMAIN: &str = "pinacle.test";
const STREAM_SERVER: &str = include_str!("../../scripts/bench/stream_server.py");

/// Pebble and its DNS server, on loopback ports of their own.
struct Pebble {
    dir: tempfile::TempDir,
    _acme: KillOnDrop,
    directory: String,
    management: u16,
}

/// The DNS server Pebble resolves names with; TXT records for DNS-01 are
/// set through its management port.
struct ChallengeDns {
    _srv: KillOnDrop,
    dns: u16,
    management: u16,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl ChallengeDns {
    async fn start() -> Self {
        let (dns, management) = (free_port(), free_port());
        let srv = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{management}"), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (apt-get install pebble; scripts/setup.sh --test installs it)");
        let srv = KillOnDrop(srv);
        wait_listening(management, "pebble-challtestsrv").await;
        Self { _srv: srv, dns, management }
    }
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port` of 127.0.0.1, issuing certificates valid for
    /// `validity_secs`.
    async fn start(dns: &ChallengeDns, http_port: u16, tls_port: u16, validity_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Pebble's own HTTPS endpoint: a leaf signed by a CA of the test.
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Pinacle test CA for Pebble");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "pebble on loopback");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();
        let (listen, management) = (free_port(), free_port());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_secs,
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("pebble.log")).unwrap();
        let acme = Command::new("pebble")
            .arg("-config")
            .arg(dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", dns.dns)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble (apt-get install pebble)");
        let acme = KillOnDrop(acme);
        wait_listening(listen, "pebble").await;
        wait_listening(management, "pebble's management API").await;
        Self { dir, _acme: acme, directory: format!("https://127.0.0.1:{listen}/dir"), management }
    }

    fn client_root(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The root Pebble issues certificates under (a new one per start).
    fn issuing_roots(&self) -> rustls::RootCertStore {
        let out = Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(self.client_root())
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management))
            .output()
            .unwrap();
        assert!(out.status.success(), "fetching Pebble's root failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&out.stdout) {
            roots.add(cert.unwrap()).unwrap();
        }
        roots
    }
}

/// Checks that `chain` (leaf first) is valid for `name` under `roots`.
fn verify_chain(roots: &rustls::RootCertStore, chain: &[CertificateDer<'static>], name: &str) -> Result<(), String> {
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider()).build().unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    verifier.verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now()).map(|_| ()).map_err(|e| e.to_string())
}

/// An HTTPS client of the proxy's TLS port that trusts `roots` only.
struct Client {
    port: u16,
    roots: rustls::RootCertStore,
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

impl Client {
    async fn connect(&self, host: &str, alpn: &[&[u8]]) -> Result<(Tls, Vec<u8>), String> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(host.to_owned()).unwrap();
        let tls = tokio::time::timeout(Duration::from_secs(60), tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        Ok((tls, leaf))
    }

    /// An HTTP/1.1 connection: its sender and the certificate it got.
    async fn h1(&self, host: &str) -> (hyper::client::conn::http1::SendRequest<Full<Bytes>>, Vec<u8>) {
        let (tls, leaf) = self.connect(host, &[b"http/1.1"]).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn.with_upgrades());
        (sender, leaf)
    }

    /// One request on a fresh HTTP/1.1 connection.
    async fn request(&self, host: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> (StatusCode, hyper::HeaderMap, Bytes) {
        let (mut sender, _) = self.h1(host).await;
        send(&mut sender, host, method, path, headers, body).await
    }

    async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> (StatusCode, hyper::HeaderMap, Bytes) {
        self.request(host, "GET", path, headers, Bytes::new()).await
    }
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req.body(Full::new(body)).unwrap())).await.unwrap().unwrap();
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn pods_are_served_over_https_with_certificates_from_pebble_and_browsers_sign_in_with_cookies() {
    use futures::{SinkExt, StreamExt};
    use sha2::Digest;
    const BR: &str = "pnctest3";
    let _cleanup = HostCleanup(BR);
    let (plain, tls) = (free_port(), free_port());
    let dns = ChallengeDns::start().await;
    // Certificates live 18 s here, so renewal (at two thirds) happens within the test.
    let pebble = Pebble::start(&dns, plain, tls, 18).await;
    let plain_arg = format!("127.0.0.1:{plain}");
    let tls_arg = format!("127.0.0.1:{tls}");
    let root = pebble.client_root();
    let p = Pinacle::start_with(&[
        "--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.11.0/24",
        "--proxy-listen", &plain_arg, "--proxy-tls-listen", &tls_arg, "--domain", DOMAIN,
        "--acme-directory", &pebble.directory, "--acme-ca-root", root.to_str().unwrap(),
        "--acme-challenge", "tls-alpn-01", "--acme-check-interval", "1",
    ])
    .await;
    // The servers are processes of the pod's definition, on ports 9000 and
    // 9001: real routes, so their host names get certificates on demand.
    let spec = json!({"name": "py", "template": "blank", "runtime": "runsc",
        "install": [{"name": "server", "run": format!("cat > /workspace/srv.py <<'PYEOF'\n{STREAM_SERVER}\nPYEOF")}],
        "processes": [{"name": "srv", "run": "exec python3 /workspace/srv.py", "port": 9000},
                      {"name": "files", "run": "exec python3 -m http.server 9001 -d /workspace", "port": 9001}]});
    let (s, b) = p.call(reqwest::Method::POST, "/api/v1/pods", Some(spec)).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state("py", "running", 120).await;
    let host = format!("9000-py-admin.{DOMAIN}");
    let roots = pebble.issuing_roots();
    let client = Client { port: tls, roots: roots.clone() };
    let admin = bearer(common::TOKEN);

    // The first handshake for the host has the certificate issued on
    // demand (TLS-ALPN-01 against this very listener); it chains to Pebble's root.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_leaf = loop {
        let (mut sender, leaf) = client.h1(&host).await;
        let (status, _, body) = send(&mut sender, &host, "GET", "/headers", &[("authorization", &admin)], Bytes::new()).await;
        if status == 200 {
            let seen: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(seen["x-forwarded-proto"], "https");
            assert!(seen.get("authorization").is_none(), "the bearer token reached the pod: {seen}");
            break leaf;
        }
        assert!(Instant::now() < deadline, "pod server never answered: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(p.data.path().join("certs").join(format!("{host}.key")).exists(), "certificate not stored");

    // HTTP/2 by ALPN.
    let (h2, _) = client.connect(&host, &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(h2)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder().uri(format!("https://{host}/headers")).header("authorization", &admin).body(Full::new(Bytes::new())).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let seen: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(seen["host"], host.as_str(), "{seen}");

    // 50 MiB down and up over HTTPS, byte for byte.
    let (status, _, blob) = client.get(&host, "/blob", &[("authorization", &admin)]).await;
    assert_eq!(status, 200);
    let pattern: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(4096 * 50);
    assert!(blob.len() == pattern.len() && blob[..] == pattern[..], "downloaded bytes differ");
    let upload: Vec<u8> = (0..50 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let want: String = sha2::Sha256::digest(&upload).iter().map(|b| format!("{b:02x}")).collect();
    let (status, _, got) = client.request(&host, "POST", "/sha", &[("authorization", &admin)], Bytes::from(upload)).await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&got), want);

    // WebSocket echo over TLS.
    let (stream, _) = client.connect(&host, &[b"http/1.1"]).await.unwrap();
    let req = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("wss://{host}/ws"))
        .header("host", &host)
        .header("authorization", &admin)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tokio_tungstenite::tungstenite::handshake::client::generate_key())
        .body(())
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::Text("over tls".into())).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "over tls");

    // Plain HTTP redirects to HTTPS.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{plain}/a?b=1"))
        .header("host", &host)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("https://{host}:{tls}/a?b=1").as_str());

    // Browser sign-in: a one-minute, single-use link from the API...
    let (s, open) = p.call(reqwest::Method::POST, "/api/v1/pods/py/open", Some(json!({"port": 9000, "path": "/headers", "embed": true}))).await;
    assert_eq!(s, 200, "{open}");
    let url = open["url"].as_str().unwrap();
    let origin = format!("https://{host}:{tls}");
    let link = url.strip_prefix(&origin).unwrap_or_else(|| panic!("{url} not on {origin}"));
    // ...sets an HttpOnly cookie for the iframe and sends the browser on.
    let (status, headers, _) = client.get(&host, link, &[]).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/headers");
    let set_cookies: Vec<String> = headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let set_cookie = set_cookies.iter().find(|c| c.starts_with("__Host-pinacle_pod=")).unwrap_or_else(|| panic!("no __Host- cookie: {set_cookies:?}")).clone();
    for attr in ["HttpOnly", "Secure", "SameSite=None", "Partitioned", "Path=/"] {
        assert!(set_cookie.contains(attr), "{attr} missing: {set_cookie}");
    }
    assert!(!set_cookie.to_ascii_lowercase().contains("domain="), "the cookie must be host-only: {set_cookie}");
    let session = set_cookie.split(';').next().unwrap().to_owned();
    let session_value = session.split_once('=').unwrap().1.to_owned();
    // the link works once
    assert_eq!(client.get(&host, link, &[]).await.0, 401);
    // the cookie opens the pod, and neither it nor other cookies' neighbour leaks
    let cookies = format!("theme=dark; {session}");
    let (status, _, body) = client.get(&host, "/headers", &[("cookie", &cookies)]).await;
    assert_eq!(status, 200);
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["cookie"], "theme=dark", "the pod session cookie reached the pod: {seen}");
    // a forged or foreign cookie does not
    assert_eq!(client.get(&host, "/headers", &[("cookie", "pinacle_pod=forged")]).await.0, 401);
    assert_eq!(client.get(&host, "/headers", &[("cookie", "__Host-pinacle_pod=forged")]).await.0, 401);
    // Cookie tossing: cookies a sibling host planted (a plain name, sent
    // first) neither shadow the real one nor reach the pod.
    let tossed = format!("pinacle_pod=planted; pinacle_pod=also-planted; {session}");
    let (status, _, body) = client.get(&host, "/headers", &[("cookie", &tossed)]).await;
    assert_eq!(status, 200, "a planted cookie shadowed the real one");
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert!(seen.get("cookie").is_none(), "pod cookies reached the pod: {seen}");
    // The same session's older plain-named cookie still works (upgrades).
    assert_eq!(client.get(&host, "/headers", &[("cookie", &format!("pinacle_pod={session_value}"))]).await.0, 200);
    // Cross-site requests: a write or a WebSocket from another origin is
    // refused with the cookie; from the pod's own origin it goes through.
    let own_origin = format!("https://{host}");
    let evil_origin = format!("https://3000-evil-bob.{DOMAIN}");
    let (status, _, body) =
        client.request(&host, "POST", "/sha", &[("cookie", &session), ("origin", &evil_origin)], Bytes::from_static(b"x")).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("Cross-site request refused"));
    let (status, _, _) =
        client.request(&host, "POST", "/sha", &[("cookie", &session), ("sec-fetch-site", "same-site")], Bytes::from_static(b"x")).await;
    assert_eq!(status, 403);
    let (status, _, _) = client
        .request(&host, "POST", "/sha", &[("cookie", &session), ("origin", &own_origin), ("sec-fetch-site", "same-origin")], Bytes::from_static(b"x"))
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = client.get(&host, "/headers", &[("cookie", &session), ("origin", &evil_origin), ("sec-fetch-site", "cross-site")]).await;
    assert_eq!(status, 200, "a cross-site GET is a navigation or a read the browser keeps from the other page");
    for (origin, want) in [(evil_origin.as_str(), 403), (own_origin.as_str(), 101)] {
        let (stream, _) = client.connect(&host, &[b"http/1.1"]).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn.with_upgrades());
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        let headers = [("cookie", session.as_str()), ("origin", origin), ("connection", "Upgrade"), ("upgrade", "websocket"), ("sec-websocket-version", "13"), ("sec-websocket-key", key.as_str())];
        let (status, _, _) = send(&mut sender, &host, "GET", "/ws", &headers, Bytes::new()).await;
        assert_eq!(status.as_u16(), want, "WebSocket from {origin}");
    }
    // the cookie is for this pod only: another pod's host refuses it
    let other = json!({"name": "other", "template": "minimal", "runtime": "runsc",
        "processes": [{"name": "idle", "run": "exec sleep 100000", "port": 9000}]});
    let (s, b) = p.call(reqwest::Method::POST, "/api/v1/pods", Some(other)).await;
    assert_eq!(s, 202, "{b}");
    let other_host = format!("9000-other-admin.{DOMAIN}");
    assert_eq!(client.get(&other_host, "/headers", &[("cookie", &session)]).await.0, 401);

    // No credential: 401. Another user: 404, from the proxy and the API.
    assert_eq!(client.get(&host, "/headers", &[]).await.0, 401);
    let (s, b) = p.call_as("", reqwest::Method::POST, "/api/v1/auth/signup", Some(json!({"name": "bob", "password": "correct horse battery"}))).await;
    assert_eq!(s, 201, "{b}");
    let (_, pair) = p.call_as("", reqwest::Method::POST, "/api/v1/auth/login", Some(json!({"name": "bob", "password": "correct horse battery"}))).await;
    let bob = pair["access_token"].as_str().unwrap().to_owned();
    assert_eq!(client.get(&host, "/headers", &[("authorization", &bearer(&bob))]).await.0, 404);
    assert_eq!(p.call_as(&bob, reqwest::Method::POST, "/api/v1/pods/py/open", Some(json!({"port": 9000}))).await.0, 404);

    // A public port needs no sign-in; other ports of the pod still do.
    let (s, b) = p.call(reqwest::Method::PATCH, "/api/v1/pods/py", Some(json!({"public_ports": [9000]}))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["public_ports"], json!([9000]));
    assert_eq!(client.get(&host, "/headers", &[]).await.0, 200);
    assert_eq!(client.get(&format!("9001-py-admin.{DOMAIN}"), "/", &[]).await.0, 401);
    // only the pod's owner (or a team admin) may change it
    assert_eq!(p.call_as(&bob, reqwest::Method::PATCH, "/api/v1/pods/py", Some(json!({"public_ports": []}))).await.0, 404);
    let (s, b) = p.call(reqwest::Method::PATCH, "/api/v1/pods/py", Some(json!({"public_ports": [0]}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_request")), "{b}");
    p.call(reqwest::Method::PATCH, "/api/v1/pods/py", Some(json!({"public_ports": []}))).await;
    assert_eq!(client.get(&host, "/headers", &[]).await.0, 401);

    // Renewal: the certificate is replaced before it expires, and a
    // connection opened under the old one keeps working throughout.
    let (mut old, old_leaf) = client.h1(&host).await;
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (status, _, _) = send(&mut old, &host, "GET", "/headers", &[("authorization", &admin)], Bytes::new()).await;
        assert_eq!(status, 200, "the connection opened before renewal failed");
        let (_, leaf) = client.connect(&host, &[b"http/1.1"]).await.unwrap();
        if leaf != old_leaf && leaf != first_leaf {
            break;
        }
        assert!(Instant::now() < deadline, "the certificate was not renewed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, _, _) = send(&mut old, &host, "GET", "/headers", &[("authorization", &admin)], Bytes::new()).await;
    assert_eq!(status, 200);

    // what happened shows in the metrics
    let metrics = reqwest::get(format!("{}/metrics", p.url)).await.unwrap().text().await.unwrap();
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{metrics}"))
    };
    assert!(value("pinacle_proxy_requests_total{status=\"200\"}") >= 5.0);
    assert!(value("pinacle_proxy_requests_total{status=\"401\"}") >= 3.0);
    assert!(value("pinacle_proxy_certificates_total{outcome=\"issued\"}") >= 2.0, "first issue and a renewal");
    assert!(value("pinacle_proxy_tls_handshakes_total{outcome=\"ok\"}") >= 5.0);
    assert!(value("pinacle_proxy_tls_handshakes_total{outcome=\"acme_validation\"}") >= 1.0);
}

/// The ACME client on its own: HTTP-01 answered by the proxy's plain
/// listener, and a wildcard certificate through the DNS-01 hook.
#[tokio::test]
async fn acme_issues_with_http_01_and_a_wildcard_with_the_dns_hook() {
    use pinacle_proxy::acme::{Acme, AcmeConfig, ChallengeKind};
    use pinacle_proxy::tls::CertStore;
    let http_port = free_port();
    let dns = ChallengeDns::start().await;
    let pebble = Pebble::start(&dns, http_port, free_port(), 3600).await;
    let store = Arc::new(CertStore::in_memory());
    // A proxy that knows no pods, answering ACME challenges only.
    let proxy = Arc::new(pinacle_proxy::Proxy {
        resolver: Arc::new(NoPods),
        certs: Some(Arc::clone(&store)),
        acme: None,
        domain: DOMAIN.into(),
        https_redirect_port: None,
        metrics: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", http_port)).await.unwrap();
    tokio::spawn(pinacle_proxy::serve(listener, proxy, std::future::pending()));
    let state = tempfile::tempdir().unwrap();
    let config = |challenge, hook: Option<PathBuf>| AcmeConfig {
        directory_url: pebble.directory.clone(),
        root_ca: Some(pebble.client_root()),
        contact: vec!["mailto:ops@pinacle.test".into()],
        challenge,
        dns_hook: hook,
        renew_before: Duration::from_secs(30 * 86_400),
        state_dir: state.path().to_owned(),
    };
    let roots = pebble.issuing_roots();

    let acme = Acme::new(config(ChallengeKind::Http01, None), Arc::clone(&store));
    let name = format!("http01.{DOMAIN}");
    acme.ensure(&name).await.unwrap();
    let cert = store.get(&name).unwrap();
    verify_chain(&roots, &cert.key.cert, &name).unwrap();
    assert!(verify_chain(&roots, &cert.key.cert, &format!("other.{DOMAIN}")).is_err());
    // the account was saved (0600) and is used again
    let account = state.path().join("acme-account.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&account).unwrap().permissions().mode() & 0o777, 0o600);
    let saved = std::fs::read(&account).unwrap();
    // a fresh certificate is not ordered again
    acme.ensure(&name).await.unwrap();
    assert_eq!(store.get(&name).unwrap().serial, cert.serial);

    // DNS-01: the hook sets the TXT record in Pebble's DNS server.
    let hook = write_dns_hook(state.path(), dns.management);
    let wild = Acme::new(config(ChallengeKind::Http01, Some(hook.clone())), Arc::clone(&store));
    assert_eq!(wild.certificate_name(&format!("8080-web-alice.wild.{DOMAIN}"), &format!("wild.{DOMAIN}")), format!("*.wild.{DOMAIN}"));
    wild.ensure(&format!("*.wild.{DOMAIN}")).await.unwrap();
    let cert = store.lookup(&format!("8080-web-alice.wild.{DOMAIN}")).unwrap();
    verify_chain(&roots, &cert.key.cert, &format!("8080-web-alice.wild.{DOMAIN}")).unwrap();
    verify_chain(&roots, &cert.key.cert, &format!("3000-db-bob.wild.{DOMAIN}")).unwrap();
    assert_eq!(std::fs::read(&account).unwrap(), saved, "the saved account was replaced");
    // the hook cleared its record afterwards
    let log = std::fs::read_to_string(state.path().join("hook.log")).unwrap();
    assert_eq!(log.lines().map(|l| l.split(' ').next().unwrap()).collect::<Vec<_>>(), ["set", "clear"], "{log}");

    // A failing hook fails the order with its message, and the name backs off.
    std::fs::write(&hook, "#!/bin/sh\necho 'no API key for the DNS provider' >&2\nexit 3\n").unwrap();
    let failing = Acme::new(config(ChallengeKind::Http01, Some(hook)), Arc::new(CertStore::in_memory()));
    let err = failing.ensure(&format!("*.fail.{DOMAIN}")).await.unwrap_err().to_string();
    assert!(err.contains("no API key for the DNS provider"), "{err}");
    let again = failing.ensure(&format!("*.fail.{DOMAIN}")).await.unwrap_err().to_string();
    assert!(again.contains("not retrying yet"), "{again}");
}

fn write_dns_hook(dir: &Path, management: u16) -> PathBuf {
    let hook = dir.join("dns-hook.sh");
    let script = format!(
        "#!/bin/sh\nset -e\necho \"$1 $2\" >> {log}\ncase \"$1\" in\n\
         set) curl -sf -X POST -d \"{{\\\"host\\\":\\\"$2.\\\",\\\"value\\\":\\\"$3\\\"}}\" http://127.0.0.1:{management}/set-txt ;;\n\
         clear) curl -sf -X POST -d \"{{\\\"host\\\":\\\"$2.\\\"}}\" http://127.0.0.1:{management}/clear-txt ;;\n\
         *) exit 2 ;;\nesac\n",
        log = dir.join("hook.log").display()
    );
    std::fs::write(&hook, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    hook
}

struct NoPods;

#[async_trait::async_trait]
impl pinacle_proxy::Resolver for NoPods {
    async fn resolve(&self, _: &str, _: pinacle_proxy::Credentials<'_>) -> Result<pinacle_proxy::Upstream, pinacle_proxy::RouteError> {
        Err(pinacle_proxy::RouteError::NotFound)
    }
    async fn sign_in(&self, _: &str, _: &str) -> Result<pinacle_proxy::PodSession, pinacle_proxy::RouteError> {
        Err(pinacle_proxy::RouteError::NotFound)
    }
    async fn may_issue_certificate(&self, _: &str) -> Option<String> {
        None
    }
}

/// The value of metric line `line_start` in `/metrics`, 0 when absent.
async fn metric(p: &Pinacle, line_start: &str) -> f64 {
    let metrics = reqwest::get(format!("{}/metrics", p.url)).await.unwrap().text().await.unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Security #8: a handshake orders a certificate only for a host name that
/// routes to something (a defined service, a port a process declares, a
/// public port), spelled the canonical way, within per-pod limits. Made-up
/// labels order nothing, whether or not their pod exists.
#[tokio::test]
async fn made_up_host_names_order_no_certificates_and_real_routes_do_within_limits() {
    use futures::StreamExt;
    const BR: &str = "pncsec1";
    let _cleanup = HostCleanup(BR);
    let (plain, tls) = (free_port(), free_port());
    let dns = ChallengeDns::start().await;
    let pebble = Pebble::start(&dns, plain, tls, 3600).await;
    let plain_arg = format!("127.0.0.1:{plain}");
    let tls_arg = format!("127.0.0.1:{tls}");
    let root = pebble.client_root();
    let p = Pinacle::start_with(&[
        "--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.141.0/24",
        "--proxy-listen", &plain_arg, "--proxy-tls-listen", &tls_arg, "--domain", DOMAIN,
        "--acme-directory", &pebble.directory, "--acme-ca-root", root.to_str().unwrap(),
        "--acme-challenge", "tls-alpn-01",
    ])
    .await;
    let spec = json!({"name": "web", "template": "minimal", "runtime": "runsc",
        "processes": [{"name": "site", "run": "exec busybox httpd -f -p 8081 -h /workspace", "port": 8081}]});
    let (s, b) = p.call(reqwest::Method::POST, "/api/v1/pods", Some(spec)).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state("web", "running", 120).await;
    let (s, b) = p.call(reqwest::Method::PATCH, "/api/v1/pods/web", Some(json!({"public_ports": [8082]}))).await;
    assert_eq!(s, 200, "{b}");
    let client = Arc::new(Client { port: tls, roots: pebble.issuing_roots() });

    // 200 made-up labels: random ports, leading zeros, unknown services,
    // unknown pods and owners (some next to the real pod's names).
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let labels: Vec<String> = (0..200)
        .map(|i| {
            let r = next();
            match i % 8 {
                0 => {
                    let port = 1 + r % 65_535;
                    let port = if port == 8081 || port == 8082 { 8083 } else { port };
                    format!("{port}-web-admin")
                }
                1 => format!("0{}-web-admin", 8081 + r % 2),
                2 => format!("{}{}-web-admin", "0".repeat(1 + (r % 3) as usize), 8081 + r % 2),
                3 => format!("svc{}-web-admin", r % 100_000),
                4 => format!("8081-nope{}-admin", r % 100_000),
                5 => format!("site-web-nobody{}", r % 100_000),
                6 => format!("{}-pod{}-user{}", 1 + r % 65_535, r % 997, r % 991),
                _ => format!("x{}-web-admin", r % 100_000),
            }
        })
        .collect();
    let started = Instant::now();
    let results: Vec<(String, bool)> = futures::stream::iter(labels.clone())
        .map(|label| {
            let client = Arc::clone(&client);
            async move {
                let host = format!("{label}.{DOMAIN}");
                let ok = tokio::time::timeout(Duration::from_secs(30), client.connect(&host, &[b"http/1.1"])).await.is_ok_and(|r| r.is_ok());
                (label, ok)
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let served: Vec<&String> = results.iter().filter(|(_, ok)| *ok).map(|(l, _)| l).collect();
    assert!(served.is_empty(), "made-up host names got certificates: {served:?}");
    assert_eq!(metric(&p, "pinacle_proxy_certificates_total{outcome=\"issued\"}").await, 0.0);
    assert_eq!(metric(&p, "pinacle_proxy_certificates_total{outcome=\"failed\"}").await, 0.0);
    assert!(metric(&p, "pinacle_proxy_certificates_total{outcome=\"no_route\"}").await >= 200.0);
    assert!(started.elapsed() < Duration::from_secs(60), "200 refused handshakes took {:?}", started.elapsed());
    assert!(
        !p.data.path().join("certs").read_dir().map(|d| d.count() > 0).unwrap_or(false),
        "a certificate was stored for a made-up name"
    );

    // Real routes get their certificates: the service, its port, the public port.
    for label in ["site-web-admin", "8081-web-admin", "8082-web-admin"] {
        let host = format!("{label}.{DOMAIN}");
        // (the client checks the chain to Pebble's root and the name)
        client.connect(&host, &[b"http/1.1"]).await.unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    assert_eq!(metric(&p, "pinacle_proxy_certificates_total{outcome=\"issued\"}").await, 3.0);

    // Per pod, at most 10 orders at once: with 15 more public ports, 7
    // more certificates come, then orders wait.
    let ports: Vec<u16> = (8100..8115).collect();
    let (s, b) = p.call(reqwest::Method::PATCH, "/api/v1/pods/web", Some(json!({"public_ports": ports}))).await;
    assert_eq!(s, 200, "{b}");
    let mut got = 0;
    for port in &ports {
        if client.connect(&format!("{port}-web-admin.{DOMAIN}"), &[b"http/1.1"]).await.is_ok() {
            got += 1;
        }
    }
    assert_eq!(got, 7, "certificates beyond the per-pod burst");
    assert_eq!(metric(&p, "pinacle_proxy_certificates_total{outcome=\"issued\"}").await, 10.0);
    assert_eq!(metric(&p, "pinacle_proxy_certificates_total{outcome=\"rate_limited\"}").await, 8.0);
}

/// Security #8, with a wildcard certificate (DNS-01 through the hook):
/// one order at start, and every pod host name, made-up or real, is
/// served by it without ordering anything more.
#[tokio::test]
async fn with_a_dns_hook_one_wildcard_certificate_serves_every_pod_host() {
    let (plain, tls) = (free_port(), free_port());
    let dns = ChallengeDns::start().await;
    let pebble = Pebble::start(&dns, plain, tls, 3600).await;
    let hooks = tempfile::tempdir().unwrap();
    let hook = write_dns_hook(hooks.path(), dns.management);
    let plain_arg = format!("127.0.0.1:{plain}");
    let tls_arg = format!("127.0.0.1:{tls}");
    let root = pebble.client_root();
    let p = Pinacle::start_with(&[
        "--pod-network", "none", "--proxy-listen", &plain_arg, "--proxy-tls-listen", &tls_arg, "--domain", DOMAIN,
        "--acme-directory", &pebble.directory, "--acme-ca-root", root.to_str().unwrap(), "--acme-dns-hook", hook.to_str().unwrap(),
    ])
    .await;
    let client = Client { port: tls, roots: pebble.issuing_roots() };
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.connect(&format!("8080-web-admin.{DOMAIN}"), &[b"http/1.1"]).await.is_err() {
        assert!(Instant::now() < deadline, "the wildcard certificate was not issued:\n{}", p.server_log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // (handshakes before it was there asked for a route: none)
    let asked = metric(&p, "pinacle_proxy_certificates_total{outcome=\"no_route\"}").await;
    for i in 0..50 {
        let host = format!("{}-pod{i}-user{i}.{DOMAIN}", 1000 + i);
        client.connect(&host, &[b"http/1.1"]).await.unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    assert_eq!(metric(&p, "pinacle_proxy_certificates_total{outcome=\"issued\"}").await, 1.0);
    assert_eq!(metric(&p, "pinacle_proxy_certificates_total{outcome=\"no_route\"}").await, asked, "the wildcard did not serve them");
    let certs: Vec<String> = std::fs::read_dir(p.data.path().join("certs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".crt"))
        .collect();
    assert_eq!(certs, vec![format!("_wildcard.{DOMAIN}.crt")], "one certificate, the wildcard");
}
