//! Pinacle's reverse proxy: routes `{service|port}-{pod}-{owner}.{domain}`
//! to the pod's web services.
//!
//! The proxy knows nothing of users or pods: a [`Resolver`] (the control
//! plane) turns a host name and the caller's credential into an upstream
//! address or a refusal. The proxy forwards HTTP/1.1 with streaming bodies
//! in both directions, `X-Forwarded-*` headers and protocol upgrades
//! (WebSocket), never passes the caller's Pinacle credential on to the pod,
//! and answers refusals with small pages.
//!
//! Plain HTTP only so far; TLS, HTTP/2 and browser cookies come next.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub pod: String,
    pub owner: String,
}

/// Why a request is not forwarded; each becomes a page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No credential, or an invalid one: 401.
    #[error("sign in to reach this pod")]
    Unauthorized,
    /// Not a pod host, or a pod the caller may not see: 404.
    #[error("no such pod")]
    NotFound,
    /// The caller sees the pod but may not use it (a team viewer): 403.
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// The pod has no service of that name: 404.
    #[error("pod {pod} has no service {service}")]
    UnknownService { pod: String, service: String },
    /// The pod exists but is not running: 503.
    #[error("pod {pod} is {state}")]
    NotRunning { pod: String, state: String },
    /// The resolver failed: 502.
    #[error("{0}")]
    Internal(String),
}

/// The control plane as the proxy sees it.
#[async_trait::async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// The upstream for `host` (the `Host` header) if `credential` (a
    /// bearer token, if any) may use it.
    async fn resolve(&self, host: &str, credential: Option<&str>) -> Result<Upstream, RouteError>;
}

/// How long connecting to a pod may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type ProxyBody = BoxBody<Bytes, hyper::Error>;

fn page(status: StatusCode, title: &str, text: &str) -> Response<ProxyBody> {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{t}</h1><p>{x}</p><p><small>Pinacle proxy</small></p></body></html>\n",
        t = esc(title),
        x = esc(text)
    );
    let mut resp = Response::new(Full::new(Bytes::from(html)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

fn refusal(e: &RouteError) -> Response<ProxyBody> {
    match e {
        RouteError::Unauthorized => page(StatusCode::UNAUTHORIZED, "Sign in required", "Sign in to Pinacle to reach this pod."),
        RouteError::NotFound => page(StatusCode::NOT_FOUND, "Not found", "There is no pod at this address."),
        RouteError::Forbidden(why) => page(StatusCode::FORBIDDEN, "Not allowed", why),
        RouteError::UnknownService { pod, service } => page(
            StatusCode::NOT_FOUND,
            "No such service",
            &format!("Pod {pod} has no service named {service}; use a port number, like 8080-{pod}-…"),
        ),
        RouteError::NotRunning { pod, state } => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Pod not running",
            &format!("Pod {pod} is {state}. Start it with `pinacle pod start {pod}`."),
        ),
        RouteError::Internal(_) => page(StatusCode::BAD_GATEWAY, "Proxy error", "The proxy could not look this pod up; try again."),
    }
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Hop-by-hop headers (RFC 9110 7.6.1), never forwarded, except that an
/// upgrade request keeps `Connection: upgrade` and `Upgrade`.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];

fn is_upgrade(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
        && headers.contains_key(header::UPGRADE)
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap, keep_upgrade: bool) {
    let upgrade = headers.get(header::UPGRADE).cloned();
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    if let (true, Some(u)) = (keep_upgrade, upgrade) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

/// Handles one request.
pub async fn handle(
    resolver: Arc<dyn Resolver>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let upstream = match resolver.resolve(&host, bearer(&req).as_deref()).await {
        Ok(u) => u,
        Err(e) => {
            if let RouteError::Internal(why) = &e {
                tracing::warn!(%host, error = %why, "route lookup failed");
            }
            return Ok(refusal(&e));
        }
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream.addr)).await {
        Ok(Ok(s)) => s,
        _ => {
            return Ok(page(
                StatusCode::BAD_GATEWAY,
                "Nothing listening",
                &format!(
                    "Nothing is listening on port {} of pod {} (owner {}). Start your server there, on 0.0.0.0.",
                    upstream.addr.port(),
                    upstream.pod,
                    upstream.owner
                ),
            ))
        }
    };
    let upgrading = is_upgrade(req.headers());
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    {
        let headers = req.headers_mut();
        strip_hop_by_hop(headers, upgrading);
        // the caller's Pinacle credential stays with the proxy
        headers.remove(header::AUTHORIZATION);
        let prior = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let xff = match prior {
            Some(p) => format!("{p}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
        if let Ok(v) = HeaderValue::from_str(&host) {
            headers.insert("x-forwarded-host", v);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(x) => x,
        Err(e) => return Ok(page(StatusCode::BAD_GATEWAY, "Bad gateway", &format!("The pod's server failed: {e}"))),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            return Ok(page(
                StatusCode::BAD_GATEWAY,
                "Bad gateway",
                &format!("The server on port {} of pod {} did not answer properly: {e}", upstream.addr.port(), upstream.pod),
            ))
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(client), Ok(server)) = (client_upgrade.await, upstream_upgrade.await) {
                    let (mut c, mut s) = (TokioIo::new(client), TokioIo::new(server));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                }
            });
        }
    } else {
        strip_hop_by_hop(resp.headers_mut(), false);
    }
    Ok(resp.map(|b| b.boxed()))
}

/// Serves the proxy on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, resolver: Arc<dyn Resolver>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let resolver = Arc::clone(&resolver);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&resolver), peer, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "proxy connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_stay() {
        let mut h = hyper::HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(is_upgrade(&h));
        let mut plain = h.clone();
        strip_hop_by_hop(&mut plain, false);
        assert!(plain.get(header::UPGRADE).is_none() && plain.get(header::CONNECTION).is_none() && plain.get("keep-alive").is_none());
        assert!(plain.get(header::CONTENT_TYPE).is_some());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert!(h.get("keep-alive").is_none());
    }

    #[test]
    fn refusal_pages_escape_and_say_why() {
        let r = refusal(&RouteError::NotRunning { pod: "<web>".into(), state: "stopped".into() });
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refusal(&RouteError::Unauthorized).status(), StatusCode::UNAUTHORIZED);
        assert_eq!(refusal(&RouteError::NotFound).status(), StatusCode::NOT_FOUND);
    }
}
