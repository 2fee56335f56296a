//! The platform services as pods see them (issue 18): one address,
//! `http://pinacle.internal` (the pod bridge's gateway), served by this
//! agent and forwarded to the control plane in the pod's name.
//!
//! - The gateway listens on the bridge's address, port [`GATEWAY_PORT`];
//!   the ruleset lets pods reach that port only, and redirects port 80 to
//!   it. Everything else on the host stays closed to pods.
//! - A request is taken only for the platform's routes
//!   ([`upstream_path`]); the pod is known by its source address, and a
//!   token presented must be that pod's own (a token copied out of another
//!   pod is refused). A request without one gets the pod's current token.
//! - Each pod's token (15 minutes) is refreshed by the agent into
//!   `/run/pinacle/platform/memory-token` (a read-only directory bound into
//!   the pod) well before it expires.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use hyper::http;
use uuid::Uuid;

/// The host name pods reach the platform services by.
pub const PLATFORM_HOST: &str = "pinacle.internal";

/// The port the gateway listens on (on the bridge's address only); pods'
/// port 80 to the gateway is redirected here.
pub const GATEWAY_PORT: u16 = 7079;

/// Where pods find their token directory.
pub const TOKEN_DIR_IN_POD: &str = "/run/pinacle/platform";

/// The token's file in that directory.
pub const TOKEN_FILE: &str = "memory-token";

/// The agent's own directory of a pod's platform files (bound read-only).
pub fn token_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("platform")
}

/// How often a pod's token is replaced (tokens live 15 minutes).
pub const TOKEN_REFRESH: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Largest request body forwarded (documents and imports).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// The API key OpenAI clients in pods send (`OPENAI_API_KEY`): they need
/// one; the gateway replaces it with the pod's own token.
pub const POD_API_KEY: &str = "pinacle-pod";

/// The environment that tells a pod's agents where the platform services
/// are: memory, and the AI router (OpenAI clients find it by
/// `OPENAI_BASE_URL`; a pod whose own environment, secrets included,
/// already sets `OPENAI_BASE_URL` or `OPENAI_API_KEY` keeps them).
pub fn pod_env(existing: &[String]) -> Vec<String> {
    let mut env = vec![
        format!("PINAK_URL=http://{PLATFORM_HOST}/api/v1/memory"),
        format!("PINAK_MCP_URL=http://{PLATFORM_HOST}/mcp"),
        format!("PINAK_TOKEN_FILE={TOKEN_DIR_IN_POD}/{TOKEN_FILE}"),
        format!("AION_URL=http://{PLATFORM_HOST}"),
        format!("AION_TOKEN_FILE={TOKEN_DIR_IN_POD}/{TOKEN_FILE}"),
    ];
    let has = |name: &str| existing.iter().any(|e| e.split_once('=').is_some_and(|(k, _)| k == name));
    if !has("OPENAI_BASE_URL") && !has("OPENAI_API_KEY") {
        env.push(format!("OPENAI_BASE_URL=http://{PLATFORM_HOST}/v1"));
        env.push(format!("OPENAI_API_KEY={POD_API_KEY}"));
    }
    env
}

/// The router's paths pods may call (`/v1/ws` as a WebSocket upgrade).
fn router_path(path: &str) -> bool {
    matches!(path, "/v1/chat/completions" | "/v1/embeddings" | "/v1/models" | "/v1/tasks" | "/v1/ws" | "/router/usage" | "/router/usage/records")
        || ["/v1/tasks/", "/v1/stream/"].iter().any(|p| path.strip_prefix(p).is_some_and(|id| !id.is_empty() && !id.contains('/')))
}

/// The control plane path a pod's request goes to, or `None` for a path
/// the gateway does not serve: the memory API, `/mcp` (its MCP server),
/// and the AI router's API. Paths that climb out (`..`) are refused.
pub fn upstream_path(path_and_query: &str) -> Option<String> {
    let path = path_and_query.split('?').next().unwrap_or("");
    // only plain characters (no escapes, no backslashes, which URL parsers
    // read as slashes), no dot or empty segments: what is checked is what
    // the control plane routes
    let plain = path.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~'));
    if !plain || path.contains("//") || path.split('/').any(|seg| seg == ".." || seg == ".") {
        return None;
    }
    if path == "/mcp" || path == "/mcp/" {
        let query = path_and_query.strip_prefix(path).unwrap_or("");
        return Some(format!("/api/v1/memory/mcp{query}"));
    }
    let memory = path.starts_with("/api/v1/memory/") && path != "/api/v1/memory/tokens";
    (memory || router_path(path)).then(|| path_and_query.to_owned())
}

/// The `pod` claim of a JWT (not verified here: the control plane does).
pub fn token_pod(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("pod")?.as_str().map(str::to_owned)
}

/// A pod's `/etc/hosts`: `existing` without an older platform line, and
/// the platform's name at `gateway`.
pub fn pod_hosts(existing: &str, gateway: Ipv4Addr) -> String {
    let mut out: String = existing
        .lines()
        .filter(|l| !l.split_whitespace().skip(1).any(|name| name == PLATFORM_HOST))
        .map(|l| format!("{l}\n"))
        .collect();
    if !out.lines().any(|l| l.split_whitespace().nth(1) == Some("localhost")) {
        out.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    }
    out.push_str(&format!("{gateway}\t{PLATFORM_HOST}\n"));
    out
}

/// Writes `token` into the pod's token directory (atomically: readers see
/// the old or the new one).
pub fn write_token(pod_dir: &Path, token: &str) -> std::io::Result<()> {
    write_file(pod_dir, TOKEN_FILE, token)
}

/// The pod's git token's file in the token directory (a GitHub App
/// installation token for the pod's repository only), read by the pod's
/// git credential helper.
pub const GIT_TOKEN_FILE: &str = "git-token";

/// Replaces `name` in the pod's token directory with `content` (written
/// beside it and renamed: readers never see half a token).
pub fn write_file(pod_dir: &Path, name: &str, content: &str) -> std::io::Result<()> {
    let dir = token_dir(pod_dir);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content)?;
    use std::os::unix::fs::PermissionsExt;
    // pods' users are not root: readable in the pod, writable by no one there
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))?;
    std::fs::rename(&tmp, dir.join(name))
}

/// The pod's current token, as last written.
pub fn read_token(pod_dir: &Path) -> Option<String> {
    std::fs::read_to_string(token_dir(pod_dir).join(TOKEN_FILE)).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Finds the pod behind a source address.
pub trait PodByAddress: Send + Sync {
    /// The pod and its directory.
    fn pod(&self, ip: Ipv4Addr) -> Option<(Uuid, PathBuf)>;
}

/// Pods as recorded under the agent's pods directory.
pub struct RecordedPods(pub PathBuf);

impl PodByAddress for RecordedPods {
    fn pod(&self, ip: Ipv4Addr) -> Option<(Uuid, PathBuf)> {
        std::fs::read_dir(&self.0).ok()?.flatten().find_map(|e| {
            let dir = e.path();
            let id = Uuid::parse_str(&e.file_name().to_string_lossy()).ok()?;
            let a = crate::network::recorded(&dir)?;
            (a.ip == ip).then_some((id, dir))
        })
    }
}

/// Whether a request asks to switch to a WebSocket.
fn is_websocket(headers: &http::HeaderMap) -> bool {
    let has = |name: http::header::HeaderName, token: &str| {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has(http::header::CONNECTION, "upgrade") && has(http::header::UPGRADE, "websocket")
}

/// Why the gateway refused a request.
fn refuse(status: u16, code: &str, message: &str) -> http::Response<reqwest::Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(reqwest::Body::from(body))
        .unwrap_or_default()
}

/// Whether a request's `Host` names the platform (`pinacle.internal` or
/// the gateway's address, with or without a port).
pub fn platform_host(host: Option<&str>, gateway: Ipv4Addr) -> bool {
    let Some(host) = host else { return false };
    let name = host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    name.eq_ignore_ascii_case(PLATFORM_HOST) || name.parse::<Ipv4Addr>().is_ok_and(|ip| ip == gateway)
}

/// The gateway: forwards pods' platform requests to `upstream`.
pub struct Gateway {
    /// The bridge's address it listens on.
    pub gateway_ip: Ipv4Addr,
    pub upstream: String,
    pub pods: Arc<dyn PodByAddress>,
    pub client: reqwest::Client,
}

impl Gateway {
    /// Answers one request from `peer`.
    pub async fn handle(&self, peer: SocketAddr, req: http::Request<hyper::body::Incoming>) -> http::Response<reqwest::Body> {
        use http_body_util::BodyExt;
        let IpAddr::V4(ip) = peer.ip() else { return refuse(403, "forbidden", "pods reach the platform over IPv4") };
        let Some((pod, dir)) = self.pods.pod(ip) else { return refuse(403, "forbidden", "this address is no pod of this host") };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let Some(target) = upstream_path(&path) else {
            return refuse(404, "not_found", "the platform serves /api/v1/memory/…, /mcp and the AI router's /v1/… here");
        };
        let presented = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| t.trim().to_owned())
            // an OpenAI client's placeholder key stands for the pod's token
            .filter(|t| t != POD_API_KEY);
        let token = match presented {
            Some(t) => {
                if token_pod(&t).is_some_and(|p| p != pod.to_string()) {
                    return refuse(403, "forbidden", "this token belongs to another pod");
                }
                t
            }
            // only for requests to the platform's own name: a page in the
            // pod's browser that rebinds another name to this address gets
            // nothing it did not bring
            None if !platform_host(req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()), self.gateway_ip) => {
                return refuse(401, "unauthorized", "send the pod's token (the file $PINAK_TOKEN_FILE), or call http://pinacle.internal");
            }
            None => match read_token(&dir) {
                Some(t) => t,
                None => return refuse(503, "unavailable", "this pod has no platform token yet; try again shortly"),
            },
        };
        if is_websocket(req.headers()) {
            // only the router's task socket switches protocols
            if target.split('?').next() != Some("/v1/ws") || req.method() != http::Method::GET {
                return refuse(400, "bad_request", "only GET /v1/ws upgrades to a WebSocket here");
            }
            return self.upgrade(pod, ip, &target, token, req).await;
        }
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return refuse(413, "too_large", "request body too large"),
        };
        let mut up = self.client.request(parts.method, format!("{}{target}", self.upstream)).bearer_auth(token).body(body);
        for name in [http::header::CONTENT_TYPE, http::header::ACCEPT] {
            if let Some(v) = parts.headers.get(&name) {
                up = up.header(name, v);
            }
        }
        for name in ["mcp-protocol-version", "mcp-session-id", "last-event-id", "idempotency-key"] {
            if let Some(v) = parts.headers.get(name) {
                up = up.header(name, v);
            }
        }
        up = up.header("x-forwarded-for", ip.to_string());
        match up.send().await {
            Ok(resp) => {
                let mut out = http::Response::builder().status(resp.status().as_u16());
                for (k, v) in resp.headers() {
                    if k != http::header::TRANSFER_ENCODING && k != http::header::CONNECTION && k != http::header::CONTENT_LENGTH {
                        out = out.header(k.as_str(), v.as_bytes());
                    }
                }
                out.body(reqwest::Body::wrap_stream(resp.bytes_stream())).unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(%pod, error = %e, "platform request not forwarded");
                refuse(502, "bad_gateway", "the control plane did not answer")
            }
        }
    }

    /// Forwards a WebSocket upgrade: the control plane's answer goes back
    /// to the pod, and once both sides switched, bytes flow both ways
    /// until either closes. The control plane re-checks the token on a
    /// connection that stays open.
    async fn upgrade(&self, pod: Uuid, ip: Ipv4Addr, target: &str, token: String, mut req: http::Request<hyper::body::Incoming>) -> http::Response<reqwest::Body> {
        let mut up = self.client.get(format!("{}{target}", self.upstream)).bearer_auth(token).header("x-forwarded-for", ip.to_string());
        for name in ["connection", "upgrade", "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions"] {
            if let Some(v) = req.headers().get(name) {
                up = up.header(name, v);
            }
        }
        let resp = match up.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%pod, error = %e, "platform WebSocket not forwarded");
                return refuse(502, "bad_gateway", "the control plane did not answer");
            }
        };
        let mut out = http::Response::builder().status(resp.status().as_u16());
        for (k, v) in resp.headers() {
            if k != http::header::TRANSFER_ENCODING && k != http::header::CONTENT_LENGTH {
                out = out.header(k.as_str(), v.as_bytes());
            }
        }
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            // a refusal (401, 403, 429…) goes back as it came
            return out.body(reqwest::Body::wrap_stream(resp.bytes_stream())).unwrap_or_default();
        }
        let from_pod = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let (pod_side, upstream) = match tokio::try_join!(async { from_pod.await.map_err(|e| e.to_string()) }, async { resp.upgrade().await.map_err(|e| e.to_string()) }) {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(%pod, error = %e, "platform WebSocket upgrade failed");
                    return;
                }
            };
            let mut pod_side = hyper_util::rt::TokioIo::new(pod_side);
            let mut upstream = upstream;
            if let Err(e) = tokio::io::copy_bidirectional(&mut pod_side, &mut upstream).await {
                tracing::debug!(%pod, error = %e, "platform WebSocket ended");
            }
        });
        out.body(reqwest::Body::from(Vec::new())).unwrap_or_default()
    }

    /// Serves pods on `addr` until `shutdown`.
    pub async fn serve(self: Arc<Self>, addr: SocketAddr, mut shutdown: tokio::sync::watch::Receiver<bool>) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, upstream = %self.upstream, "platform gateway for pods listening");
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "platform gateway accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return Ok(()),
            };
            let gw = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let gw = gw.clone();
                    async move { Ok::<_, std::convert::Infallible>(gw.handle(peer, req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(30))
                    .serve_connection(io, svc)
                    .with_upgrades()
                    .await
                {
                    tracing::debug!(error = %e, "platform gateway connection ended");
                }
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    #[test]
    fn pods_get_the_router_for_openai_clients_unless_they_set_their_own() {
        let env = pod_env(&[]);
        assert!(env.contains(&format!("OPENAI_BASE_URL=http://{PLATFORM_HOST}/v1")));
        assert!(env.contains(&format!("OPENAI_API_KEY={POD_API_KEY}")));
        let env = pod_env(&["OPENAI_API_KEY=sk-mine".to_owned()]);
        assert!(!env.iter().any(|e| e.starts_with("OPENAI_")), "{env:?}");
        assert!(env.iter().any(|e| e.starts_with("AION_URL=")));
    }
    use super::*;

    #[test]
    fn only_a_websocket_upgrade_is_spliced() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONNECTION, http::HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        assert!(is_websocket(&h));
        h.insert(http::header::UPGRADE, http::HeaderValue::from_static("h2c"));
        assert!(!is_websocket(&h), "other protocols are not switched to");
        h.insert(http::header::UPGRADE, http::HeaderValue::from_static("WebSocket"));
        h.insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        assert!(!is_websocket(&h), "Upgrade without Connection: upgrade is no upgrade");
    }

    #[test]
    fn only_the_platform_routes_go_upstream() {
        assert_eq!(upstream_path("/api/v1/memory/search").as_deref(), Some("/api/v1/memory/search"));
        assert_eq!(upstream_path("/api/v1/memory/memories?limit=5").as_deref(), Some("/api/v1/memory/memories?limit=5"));
        assert_eq!(upstream_path("/mcp").as_deref(), Some("/api/v1/memory/mcp"));
        assert_eq!(upstream_path("/v1/chat/completions").as_deref(), Some("/v1/chat/completions"));
        assert_eq!(upstream_path("/v1/stream/task_01").as_deref(), Some("/v1/stream/task_01"));
        assert_eq!(upstream_path("/v1/tasks?limit=5").as_deref(), Some("/v1/tasks?limit=5"));
        assert_eq!(upstream_path("/v1/ws").as_deref(), Some("/v1/ws"));
        assert_eq!(upstream_path("/router/usage/records?after=1:t").as_deref(), Some("/router/usage/records?after=1:t"));
        for refused in ["/v1/tasks/a/b", "/v1/stream/", "/router/policy/reload", "/router/policy", "/v1/chat/completions/../../api/v1/pods"] {
            assert_eq!(upstream_path(refused), None, "{refused}");
        }
        for bad in [
            "/",
            "/api/v1/pods",
            "/api/v1/memory/tokens",
            "/api/v1/memory/../pods",
            "/api/v1/memory/%2E%2E/pods",
            "/api/v1/memory/..\\..\\..\\metrics",
            "/api/v1/memory/x\\..\\tokens",
            "/api/v1/memory/a;b",
            "/api/v1/memory//x",
            "/api/v1/memoryx",
            "/metrics",
            "/api/v1/internal/hosts/x/relay",
        ] {
            assert_eq!(upstream_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_pods_token_is_added_only_for_the_platforms_own_name() {
        let gw = Ipv4Addr::new(10, 88, 0, 1);
        for ok in ["pinacle.internal", "PINACLE.internal:80", "10.88.0.1", "10.88.0.1:7079"] {
            assert!(platform_host(Some(ok), gw), "{ok}");
        }
        for bad in ["evil.example", "evil.example:80", "pinacle.internal.evil.example", "10.88.0.2", ""] {
            assert!(!platform_host(Some(bad), gw), "{bad}");
        }
        assert!(!platform_host(None, gw));
    }

    #[test]
    fn a_tokens_pod_is_read_from_its_claims() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"pod":"p-1","sub":"pod:p-1"}"#);
        assert_eq!(token_pod(&format!("h.{claims}.s")).as_deref(), Some("p-1"));
        let user = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"user:u"}"#);
        assert_eq!(token_pod(&format!("h.{user}.s")), None);
        assert_eq!(token_pod("garbage"), None);
    }

    #[test]
    fn hosts_files_gain_one_platform_line() {
        let gw = Ipv4Addr::new(10, 88, 0, 1);
        let once = pod_hosts("127.0.0.1 localhost\n10.0.0.9 pinacle.internal\n", gw);
        assert_eq!(once, "127.0.0.1 localhost\n10.88.0.1\tpinacle.internal\n");
        assert_eq!(pod_hosts(&once, gw), once);
        assert!(pod_hosts("", gw).contains("localhost"));
    }

    #[test]
    fn tokens_are_replaced_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_token(dir.path()), None);
        write_token(dir.path(), "t1").unwrap();
        write_token(dir.path(), "t2").unwrap();
        assert_eq!(read_token(dir.path()).as_deref(), Some("t2"));
    }
}
