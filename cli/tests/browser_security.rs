//! Browser-facing security of the pod proxy, through a real `pinacle up`
//! (real pods, the real proxy on loopback, raw HTTP clients that send what
//! a browser would): cross-origin requests cannot use the pod cookie
//! (security review #7), and pod cookies live exactly as long as they
//! should across key rotation, while sessions refreshed for longer than
//! the refresh lifetime survive the purge (#19).
//! `web/e2e/security-csrf.test.mjs` drives the same attack with Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{free_port, HostCleanup, Pinacle};
use serde_json::{json, Value};

const DOMAIN: &str = "pinacle.localhost";

/// A CGI script for busybox httpd that logs every request it gets (method,
/// query, Origin, Cookie) to /workspace/req.log. It reads the whole body
/// first: a server that closes with unread input resets the connection.
const LOGGER: &str = "#!/bin/sh\n\
cat > /dev/null\n\
echo \"$REQUEST_METHOD $QUERY_STRING origin=$HTTP_ORIGIN cookie=$HTTP_COOKIE\" >> /workspace/req.log\n\
printf 'Content-Type: text/plain\\r\\n\\r\\nlogged\\n'\n";

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// One request to the proxy for `host`, with `headers`, no redirects.
async fn via_proxy(proxy: u16, host: &str, method: reqwest::Method, path: &str, headers: &[(&str, &str)]) -> Answer {
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut req = c.request(method.clone(), format!("http://127.0.0.1:{proxy}{path}")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if method == reqwest::Method::POST {
        req = req.body("x");
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    Answer { status, headers, body: r.text().await.unwrap() }
}

/// Starts the request logger on `port` of pod `pod` (owned by the admin).
async fn start_logger(p: &Pinacle, pod: &str, ports: &[u16]) {
    let write = json!({"command": ["sh", "-c", "mkdir -p /workspace/cgi-bin && cat > /workspace/cgi-bin/log && chmod 755 /workspace/cgi-bin/log"], "stdin": LOGGER});
    let (s, b) = p.call(reqwest::Method::POST, &format!("/api/v1/pods/{pod}/exec"), Some(write)).await;
    assert_eq!(s, 200, "{b}");
    for port in ports {
        let (_, err, code) = p.exec(pod, &["sh", "-c", &format!("busybox httpd -p {port} -h /workspace")]).await;
        assert_eq!(code, 0, "{err}");
    }
}

/// What the pod's logger saw.
async fn logged(p: &Pinacle, pod: &str) -> String {
    p.exec(pod, &["sh", "-c", "cat /workspace/req.log 2>/dev/null; true"]).await.0
}

/// A pod-session cookie (`name=value`) for `host`, through the API's
/// sign-in link and the proxy's `/.pinacle/auth`.
async fn sign_in(p: &Pinacle, proxy: u16, token: &str, pod: &str, port: u16) -> String {
    let (s, open) = p.call_as(token, reqwest::Method::POST, &format!("/api/v1/pods/{pod}/open"), Some(json!({"port": port}))).await;
    assert_eq!(s, 200, "{open}");
    let url = open["url"].as_str().unwrap();
    let host = open["host"].as_str().unwrap();
    let path = &url[url.find("/.pinacle/").unwrap()..];
    let a = via_proxy(proxy, host, reqwest::Method::GET, path, &[]).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let cookie = a.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).find(|c| c.starts_with("pinacle_pod=")).unwrap();
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "the cookie must be host-only: {cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

/// The headers of a browser's WebSocket handshake from `origin`, with `cookie`.
fn ws<'a>(origin: &'a str, cookie: &'a str) -> [(&'a str, &'a str); 6] {
    [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("origin", origin),
        ("cookie", cookie),
    ]
}

async fn wait_serving(proxy: u16, host: &str, cookie: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = via_proxy(proxy, host, reqwest::Method::GET, "/cgi-bin/log?ready", &[("cookie", cookie)]).await;
        if a.status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{}: {}", a.status, a.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Security #7: a page on another pod's host (same site) or any other
/// origin cannot make the victim's browser write to, or open a WebSocket
/// on, the victim's pod with the victim's cookie; the pod's own pages
/// can, public ports are unaffected, and cookies planted next to the real
/// one do not log the victim out.
#[tokio::test]
async fn cross_origin_requests_cannot_use_the_pod_cookie() {
    const BR: &str = "pncsec2";
    let _cleanup = HostCleanup(BR);
    let proxy = free_port();
    let proxy_arg = format!("127.0.0.1:{proxy}");
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.142.0/24", "--proxy-listen", &proxy_arg]).await;
    p.create_running("web", "minimal", "runsc").await;
    start_logger(&p, "web", &[8080, 8090]).await;
    let (s, b) = p.call(reqwest::Method::PATCH, "/api/v1/pods/web", Some(json!({"public_ports": [8090]}))).await;
    assert_eq!(s, 200, "{b}");
    let cookie = sign_in(&p, proxy, common::TOKEN, "web", 8080).await;
    let host = format!("8080-web-admin.{DOMAIN}:{proxy}");
    let own = format!("http://{host}");
    wait_serving(proxy, &host, &cookie).await;
    let post = reqwest::Method::POST;

    // From a sibling pod's host, another port of the same pod, another
    // site, or an opaque origin: refused, with a page that says why.
    let sibling = format!("http://8080-evil-bob.{DOMAIN}:{proxy}");
    let other_port = format!("http://3000-web-admin.{DOMAIN}:{proxy}");
    for origin in [sibling.as_str(), other_port.as_str(), "https://evil.test", "null"] {
        let a = via_proxy(proxy, &host, post.clone(), "/cgi-bin/log?attack-post", &[("cookie", &cookie), ("origin", origin)]).await;
        assert_eq!(a.status, 403, "POST from {origin}: {}", a.body);
        assert!(a.body.contains("Cross-site request refused"), "{}", a.body);
    }
    for site in ["same-site", "cross-site"] {
        let a = via_proxy(proxy, &host, reqwest::Method::DELETE, "/cgi-bin/log?attack-delete", &[("cookie", &cookie), ("sec-fetch-site", site)]).await;
        assert_eq!(a.status, 403, "{site}");
    }
    let a = via_proxy(proxy, &host, reqwest::Method::GET, "/cgi-bin/log?attack-ws", &ws(&sibling, &cookie)).await;
    assert_eq!(a.status, 403, "WebSocket upgrade from a sibling: {}", a.body);
    let a = via_proxy(proxy, &host, reqwest::Method::GET, "/cgi-bin/log?attack-ws-nameless", &ws("null", &cookie)).await;
    assert_eq!(a.status, 403);
    // nothing of it reached the pod
    let log = logged(&p, "web").await;
    assert!(!log.contains("attack"), "a cross-origin request reached the pod:\n{log}");

    // The pod's own origin, and requests without browser headers, get through.
    let a = via_proxy(proxy, &host, post.clone(), "/cgi-bin/log?own-post", &[("cookie", &cookie), ("origin", &own), ("sec-fetch-site", "same-origin")]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = via_proxy(proxy, &host, post.clone(), "/cgi-bin/log?tool-post", &[("cookie", &cookie)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = via_proxy(proxy, &host, reqwest::Method::GET, "/cgi-bin/log?own-ws", &ws(&own, &cookie)).await;
    assert_ne!(a.status, 403, "a same-origin upgrade was refused: {}", a.body);
    // a cross-site GET is a navigation: the browser keeps its answer from the other page
    let a = via_proxy(proxy, &host, reqwest::Method::GET, "/cgi-bin/log?nav", &[("cookie", &cookie), ("sec-fetch-site", "cross-site")]).await;
    assert_eq!(a.status, 200);
    // a bearer token is never sent by a browser on its own: not affected
    let a = via_proxy(proxy, &host, post.clone(), "/cgi-bin/log?bearer-post", &[("authorization", &format!("Bearer {}", common::TOKEN)), ("origin", "https://evil.test")]).await;
    assert_eq!(a.status, 200);
    // A public port needs no cookie: a cross-site write reaches it, without the cookie.
    let public = format!("8090-web-admin.{DOMAIN}:{proxy}");
    let a = via_proxy(proxy, &public, post.clone(), "/cgi-bin/log?public-post", &[("cookie", &format!("{cookie}; theme=dark")), ("origin", "https://evil.test")]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let log = logged(&p, "web").await;
    for want in ["POST own-post", "POST tool-post", "GET own-ws", "GET nav", "POST bearer-post", "POST public-post"] {
        assert!(log.contains(want), "{want} missing:\n{log}");
    }
    assert!(log.lines().all(|l| !l.contains("pinacle_pod")), "the pod cookie reached the pod:\n{log}");
    assert!(log.lines().any(|l| l.starts_with("POST public-post") && l.contains("cookie=theme=dark")), "{log}");

    // Cookie tossing: cookies for this host planted by a sibling (sent
    // first) do not shadow the real one.
    let tossed = format!("pinacle_pod=planted; pinacle_pod=planted2; {cookie}");
    let a = via_proxy(proxy, &host, reqwest::Method::GET, "/cgi-bin/log?tossed", &[("cookie", &tossed)]).await;
    assert_eq!(a.status, 200, "a planted cookie logged the user out: {}", a.body);
    // another site's page cannot sign the user out (an <img> of the sign-out URL)
    let a = via_proxy(proxy, &host, reqwest::Method::GET, "/.pinacle/signout", &[("cookie", &cookie), ("sec-fetch-site", "same-site")]).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.headers.get("set-cookie").is_none(), "a cross-site page signed the user out");
    // signing out clears the cookie
    let a = via_proxy(proxy, &host, reqwest::Method::GET, "/.pinacle/signout", &[("cookie", &cookie)]).await;
    assert!(a.headers.get_all("set-cookie").iter().any(|v| v.to_str().unwrap().starts_with("pinacle_pod=;")));
}

fn sqlite(p: &Pinacle, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3").arg(p.data.path().join("pinacle.db")).arg(sql).output().expect("sqlite3 (apt-get install sqlite3)");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Security #19: a pod cookie lives its 12 hours across a signing-key
/// rotation (retired keys verify as long as the cookies they signed), and
/// a session refreshed all along is not purged for being older than the
/// refresh lifetime (while a session whose refresh tokens all expired is).
#[tokio::test]
async fn pod_cookies_survive_key_rotation_and_refreshed_sessions_survive_the_purge() {
    const BR: &str = "pncsec3";
    let _cleanup = HostCleanup(BR);
    let proxy = free_port();
    let proxy_arg = format!("127.0.0.1:{proxy}");
    let p = Pinacle::start_with(&[
        "--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.143.0/24", "--proxy-listen", &proxy_arg,
        "--access-token-ttl", "2",
    ])
    .await;
    p.create_running("web", "minimal", "runsc").await;
    start_logger(&p, "web", &[8080]).await;
    let cookie = sign_in(&p, proxy, common::TOKEN, "web", 8080).await;
    let host = format!("8080-web-admin.{DOMAIN}:{proxy}");
    wait_serving(proxy, &host, &cookie).await;
    let (s, b) = p.call(reqwest::Method::POST, "/api/v1/admin/signing-keys/rotate", None).await;
    assert!(s == 200 || s == 201, "{s} {b}");
    // past the access-token lifetime of the retired key
    tokio::time::sleep(Duration::from_secs(4)).await;
    let a = via_proxy(proxy, &host, reqwest::Method::GET, "/cgi-bin/log?after-rotation", &[("cookie", &cookie)]).await;
    assert_eq!(a.status, 200, "the pod cookie died with the key rotation: {}", a.body);
    // (the retired key has left the JWKS: no access token of it is alive)
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", p.url)).await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{jwks}");
    // a forged cookie still is not accepted
    let a = via_proxy(proxy, &host, reqwest::Method::GET, "/", &[("cookie", "pinacle_pod=forged")]).await;
    assert_eq!(a.status, 401);

    // Sessions: bob's first session is 40 days old (past the 30-day
    // refresh lifetime) but was refreshed all along; a second one's
    // refresh tokens have all expired.
    let creds = json!({"name": "bob", "password": "correct horse battery"});
    let (s, b) = p.call_as("", reqwest::Method::POST, "/api/v1/auth/signup", Some(creds.clone())).await;
    assert_eq!(s, 201, "{b}");
    let login = || async { p.call_as("", reqwest::Method::POST, "/api/v1/auth/login", Some(creds.clone())).await };
    let (s, kept) = login().await;
    assert_eq!(s, 200, "{kept}");
    let (s, dead) = login().await;
    assert_eq!(s, 200, "{dead}");
    let p = &p;
    let refresh = |token: String| async move {
        p.call_as("", reqwest::Method::POST, "/api/v1/auth/refresh", Some(json!({"refresh_token": token}))).await
    };
    let (s, kept) = refresh(kept["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(s, 200, "{kept}");
    let session_of = |pair: &Value| {
        let claims = pair["access_token"].as_str().unwrap().split('.').nth(1).unwrap().to_owned();
        let claims: Value = serde_json::from_slice(&base64_url(&claims)).unwrap();
        claims["sid"].as_str().unwrap().to_owned()
    };
    let (kept_sid, dead_sid) = (session_of(&kept), session_of(&dead));
    sqlite(p, &format!("UPDATE sessions SET created_at = '2020' || substr(created_at, 5) WHERE id IN ('{kept_sid}', '{dead_sid}')"));
    sqlite(p, &format!("UPDATE refresh_tokens SET expires_at = '2020' || substr(expires_at, 5) WHERE session_id = '{dead_sid}'"));
    // signing in again purges bob's dead sessions
    let (s, b) = login().await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sqlite(p, &format!("SELECT count(*) FROM sessions WHERE id = '{dead_sid}'")), "0", "a dead session was kept");
    assert_eq!(sqlite(p, &format!("SELECT count(*) FROM sessions WHERE id = '{kept_sid}'")), "1", "a refreshed session was purged");
    let (s, b) = refresh(kept["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(s, 200, "the refreshed session no longer refreshes: {b}");
}

fn base64_url(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).unwrap()
}

/// Security #19: a pod cookie minted through an API token (no session)
/// dies when the token is revoked, within the read cache's time limit.
#[tokio::test]
async fn a_pod_cookie_minted_through_an_api_token_dies_with_the_token() {
    const BR: &str = "pncsec5";
    let _cleanup = HostCleanup(BR);
    let proxy = free_port();
    let proxy_arg = format!("127.0.0.1:{proxy}");
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.145.0/24", "--proxy-listen", &proxy_arg]).await;
    p.create_running("web", "minimal", "runsc").await;
    start_logger(&p, "web", &[8080]).await;
    let (s, t) = p.call(reqwest::Method::POST, "/api/v1/tokens", Some(json!({"name": "browser"}))).await;
    assert_eq!(s, 201, "{t}");
    let (token, id) = (t["token"].as_str().unwrap().to_owned(), t["id"].as_str().unwrap().to_owned());
    let cookie = sign_in(&p, proxy, &token, "web", 8080).await;
    let host = format!("8080-web-admin.{DOMAIN}:{proxy}");
    wait_serving(proxy, &host, &cookie).await;
    let (s, b) = p.call(reqwest::Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await;
    assert_eq!(s, 204, "{b}");
    // at once in this process (caches are cleared); --read-cache-ms (1 s) bounds other processes
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let a = via_proxy(proxy, &host, reqwest::Method::GET, "/cgi-bin/log?after-revoke", &[("cookie", &cookie)]).await;
        if a.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the cookie outlived its API token: {} {}", a.status, a.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!logged(&p, "web").await.contains("after-revoke"), "a request with the dead cookie reached the pod");
    // a cookie minted through another, live token still works
    let (s, t) = p.call(reqwest::Method::POST, "/api/v1/tokens", Some(json!({"name": "other"}))).await;
    assert_eq!(s, 201, "{t}");
    let cookie = sign_in(&p, proxy, t["token"].as_str().unwrap(), "web", 8080).await;
    assert_eq!(via_proxy(proxy, &host, reqwest::Method::GET, "/cgi-bin/log?live", &[("cookie", &cookie)]).await.status, 200);
}
