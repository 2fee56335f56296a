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
//! Clients speak HTTP/1.1 or HTTP/2 (ALPN over TLS, prior knowledge over
//! plain TCP); pods are spoken to in HTTP/1.1. TLS certificates come from
//! a [`tls::CertStore`], filled by [`acme::Acme`] or by the operator.
//!
//! Browsers sign in to one pod host at a time: the app mints a short-lived
//! pod-scoped login token and sends the browser to
//! `/.pinacle/auth?token=...&next=/path` on the pod's host, where the proxy
//! exchanges it (through the [`Resolver`]) for an HttpOnly cookie and
//! redirects. Paths under `/.pinacle/` are the proxy's own.
//!
//! Every pod host is a subdomain of one site, so `SameSite` does not stop
//! one pod's page from sending requests to another pod's host with the
//! victim's cookie. The proxy therefore refuses the cookie on state-changing
//! requests and on every WebSocket upgrade that come from another origin
//! ([`foreign_origin`]): such a request is answered as if no cookie had been
//! sent (a public port still works), and where the cookie was what it
//! needed, with a 403 page. Over TLS the cookie is `__Host-` prefixed, so a
//! sibling host cannot plant one that shadows it; every pod-session cookie
//! sent is tried, the `__Host-` ones first.

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

pub mod acme;
pub mod metrics;
pub mod tls;

/// The cookie that carries a browser's pod session over plain HTTP (local
/// development): host-only (no `Domain`).
pub const COOKIE_NAME: &str = "pinacle_pod";

/// The cookie that carries a browser's pod session over TLS. Browsers take
/// a `__Host-` cookie only with `Secure`, `Path=/` and no `Domain`, so no
/// other host (a sibling pod) can set or overwrite it.
pub const HOST_COOKIE_NAME: &str = "__Host-pinacle_pod";

/// At most this many pod-session cookies of one request are tried (a
/// sibling host may plant `pinacle_pod` cookies next to the real one).
pub const MAX_SESSION_COOKIES: usize = 4;

/// The proxy's own path prefix on every pod host.
pub const OWN_PREFIX: &str = "/.pinacle/";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The pod's port.
    pub port: u16,
    /// How the port is reached.
    pub via: Via,
    pub pod: String,
    pub owner: String,
}

/// A byte stream to a pod's port, opened by a [`Dial`].
pub trait UpstreamIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> UpstreamIo for T {}

/// Why a [`Dial`] opened no stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// Nothing accepts connections on the port.
    #[error("{0}")]
    Refused(String),
    /// The pod's host cannot open it now.
    #[error("{0}")]
    Unavailable(String),
}

/// Opens streams to one pod's port through its host (a pod on another
/// machine: the proxy has no route to its network).
#[async_trait::async_trait]
pub trait Dial: Send + Sync + std::fmt::Debug + 'static {
    async fn dial(&self) -> Result<Box<dyn UpstreamIo>, DialError>;

    /// What it reaches (host, pod and port), the same for every dial to
    /// it: connections are pooled under it.
    fn key(&self) -> String;
}

/// The dials behind the pool of connections through hosts, by the name
/// their requests carry (`l{hash}.link`).
static LINK_DIALS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Arc<dyn Dial>>>> =
    std::sync::LazyLock::new(Default::default);

fn link_name(dial: &Arc<dyn Dial>) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dial.key().hash(&mut h);
    let name = format!("l{:016x}.link", h.finish());
    LINK_DIALS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.clone(), dial.clone());
    name
}

/// A stream through a host, as the pooled client's connection.
pub(crate) struct LinkIo(TokioIo<Box<dyn UpstreamIo>>);

impl hyper::rt::Read for LinkIo {
    fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: hyper::rt::ReadBufCursor<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for LinkIo {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for LinkIo {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// Connects the pooled client's `l{hash}.link` names through their hosts.
#[derive(Clone, Default)]
pub(crate) struct LinkConnector;

impl tower_service::Service<hyper::Uri> for LinkConnector {
    type Response = LinkIo;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<LinkIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let name = uri.host().unwrap_or_default().to_owned();
        Box::pin(async move {
            let dial = LINK_DIALS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&name).cloned();
            let dial = dial.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such link"))?;
            match tokio::time::timeout(CONNECT_TIMEOUT, dial.dial()).await {
                Ok(Ok(io)) => Ok(LinkIo(TokioIo::new(io))),
                Ok(Err(e)) => Err(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string())),
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no stream through the pod's host in time")),
            }
        })
    }
}

/// Pooled HTTP/1.1 connections to pods on other hosts, over their links.
type LinkClient = hyper_util::client::legacy::Client<LinkConnector, ProxyBody>;

fn link_client() -> LinkClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(UPSTREAM_IDLE)
        .pool_max_idle_per_host(64)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(LinkConnector)
}

/// How the proxy reaches a pod's port.
#[derive(Debug, Clone)]
pub enum Via {
    /// Over TCP to this address (the pod's host is this machine); pooled.
    Tcp(std::net::IpAddr),
    /// Through the pod's host: a connection per request (or per upgrade).
    Host(Arc<dyn Dial>),
}

impl PartialEq for Via {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Via::Tcp(a), Via::Tcp(b)) => a == b,
            (Via::Host(a), Via::Host(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}
impl Eq for Via {}

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

/// What a caller presented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// `Authorization: Bearer` token (API token or access token).
    pub bearer: Option<&'a str>,
    /// The pod-session cookie.
    pub cookie: Option<&'a str>,
}

/// A pod-session cookie the [`Resolver`] minted for a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSession {
    pub value: String,
    pub max_age_secs: u64,
}

/// The control plane as the proxy sees it.
#[async_trait::async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// The upstream for `host` (the `Host` header) if the caller's
    /// credentials allow it (or the port is public).
    async fn resolve(&self, host: &str, credentials: Credentials<'_>) -> Result<Upstream, RouteError>;

    /// Exchanges a pod-scoped login token for a pod-session cookie, valid
    /// on `host` only.
    async fn sign_in(&self, host: &str, login_token: &str) -> Result<PodSession, RouteError>;

    /// Whether a certificate may be issued for `host` on demand: `Some`
    /// only for a host name that routes to something (a defined service of
    /// a pod, a port one of its processes declares, a public port), written
    /// the one canonical way; the value names the pod, for per-pod order
    /// limits. Keeps strangers from making the proxy order certificates
    /// for made-up names, and answers the same for a made-up label whether
    /// or not its pod exists.
    async fn may_issue_certificate(&self, host: &str) -> Option<String>;
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

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn redirect(location: &str, status: StatusCode) -> Response<ProxyBody> {
    let mut resp = text(status, String::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn refusal(e: &RouteError) -> Response<ProxyBody> {
    match e {
        RouteError::Unauthorized => page(
            StatusCode::UNAUTHORIZED,
            "Sign in required",
            "Open this pod from Pinacle (`pinacle pod open POD --port PORT` prints a sign-in link), \
             or send `Authorization: Bearer <token>`.",
        ),
        RouteError::NotFound => page(StatusCode::NOT_FOUND, "Not found", "There is no pod at this address."),
        RouteError::Forbidden(why) => page(StatusCode::FORBIDDEN, "Not allowed", why),
        RouteError::UnknownService { pod, service } => page(
            StatusCode::NOT_FOUND,
            "No such service",
            &format!("Pod {pod} has no service named {service} (a process with a port); use a port number, like 8080-{pod}-…"),
        ),
        RouteError::NotRunning { pod, state } => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Pod not running",
            &format!("Pod {pod} is {state}. Start it with `pinacle pod start {pod}`."),
        ),
        RouteError::Internal(_) => page(StatusCode::BAD_GATEWAY, "Proxy error", "The proxy could not look this pod up; try again."),
    }
}

/// The 403 page for a cross-site request that only the pod cookie could
/// have let through.
fn cross_site_refusal(why: &str) -> Response<ProxyBody> {
    page(
        StatusCode::FORBIDDEN,
        "Cross-site request refused",
        &format!(
            "This request came from another site ({why}). Pages on other hosts may not use your sign-in to this pod \
             for changes or WebSockets. Open the page on this host itself, or send `Authorization: Bearer <token>`."
        ),
    )
}

/// Resolves with the bearer token when there is one, else with each
/// pod-session cookie in turn until one is accepted (a planted cookie
/// cannot shadow the real one), else with no credential.
async fn resolve_any(resolver: &dyn Resolver, host: &str, bearer: Option<&str>, cookies: &[String]) -> Result<Upstream, RouteError> {
    if bearer.is_some() || cookies.is_empty() {
        return resolver.resolve(host, Credentials { bearer, cookie: None }).await;
    }
    for cookie in cookies {
        match resolver.resolve(host, Credentials { bearer: None, cookie: Some(cookie) }).await {
            Err(RouteError::Unauthorized) => continue,
            other => return other,
        }
    }
    Err(RouteError::Unauthorized)
}

fn bearer<B>(req: &Request<B>) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

fn is_session_cookie_name(name: &str) -> bool {
    name == COOKIE_NAME || name == HOST_COOKIE_NAME
}

/// The pod-session cookies sent, in the order to try them: `__Host-` ones
/// first (no other host can have set them), then the plain name; at most
/// [`MAX_SESSION_COOKIES`], without repeats.
fn session_cookies<B>(req: &Request<B>) -> Vec<String> {
    let pairs: Vec<(String, String)> = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(name, value)| is_session_cookie_name(name) && !value.trim().is_empty())
        .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
        .collect();
    let mut out: Vec<String> = Vec::new();
    for wanted in [HOST_COOKIE_NAME, COOKIE_NAME] {
        for (_, value) in pairs.iter().filter(|(name, _)| name == wanted) {
            if out.len() < MAX_SESSION_COOKIES && !out.contains(value) {
                out.push(value.clone());
            }
        }
    }
    out
}

/// Removes the pod-session cookies from what goes to the pod.
fn strip_session_cookie(headers: &mut hyper::HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').is_none_or(|(name, _)| !is_session_cookie_name(name)))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// `(scheme, host, port)` of an origin, lower-cased, with the scheme's
/// default port filled in; `None` when it is not `http(s)://host[:port]`.
fn origin_parts(origin: &str) -> Option<(String, String, u16)> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let default = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !rest.ends_with(']') => (h, p.parse::<u16>().ok()?),
        _ => (rest, default),
    };
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then(|| (scheme.to_owned(), host.to_owned(), port))
}

/// Whether a request must not be authenticated by the pod-session cookie
/// because it comes from another origin: `Some(why)` for a state-changing
/// request (any method but GET, HEAD and OPTIONS) or a WebSocket upgrade
/// whose `Origin` is not this host's own origin (scheme, host and port),
/// or whose `Sec-Fetch-Site` is `cross-site` or `same-site` (another pod's
/// host is same-site). Safe requests and requests without these headers
/// (not from a browser) are not affected.
pub fn foreign_origin(method: &hyper::Method, headers: &hyper::HeaderMap, host: &str, tls: bool) -> Option<String> {
    let safe = matches!(*method, hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS);
    if safe && !is_upgrade(headers) {
        return None;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Some(format!("Sec-Fetch-Site: {site}"));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let own = origin_parts(&format!("{}://{host}", if tls { "https" } else { "http" }));
        let theirs = origin_parts(&text);
        if own.is_none() || own != theirs {
            return Some(format!("Origin: {}", text.chars().take(200).collect::<String>()));
        }
    }
    None
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

/// Query parameter `name` of `query`, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a sign-in may send the browser afterwards: a path on the same
/// host, never another site (`//evil`, `/\evil`, `https://...`).
fn safe_next(next: Option<String>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") && !n.chars().any(char::is_control) => n,
        _ => "/".to_owned(),
    }
}

/// The `Set-Cookie` value for a pod session: host-only (no `Domain`), and
/// over TLS named [`HOST_COOKIE_NAME`] and `Secure`; when the page is
/// embedded in the IDE's iframe it must also be `SameSite=None;
/// Partitioned` (CHIPS) to be sent at all.
pub fn session_set_cookie(session: &PodSession, tls: bool, embedded: bool) -> String {
    let name = if tls { HOST_COOKIE_NAME } else { COOKIE_NAME };
    let mut c = format!("{name}={}; Path=/; Max-Age={}; HttpOnly", session.value, session.max_age_secs);
    match (tls, embedded) {
        (true, true) => c.push_str("; Secure; SameSite=None; Partitioned"),
        (true, false) => c.push_str("; Secure; SameSite=Lax"),
        (false, _) => c.push_str("; SameSite=Lax"),
    }
    c
}

/// `Set-Cookie` values that delete the pod-session cookies this proxy
/// sets on a host (the `__Host-` one only over TLS, where it can exist).
fn clear_session_cookies(tls: bool) -> Vec<String> {
    let mut out = vec![format!("{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly{}", if tls { "; Secure" } else { "" })];
    if tls {
        out.push(format!("{HOST_COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; Secure"));
    }
    out
}

/// Pooled HTTP/1.1 connections to pods, kept open between requests.
pub type UpstreamClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, ProxyBody>;

/// Idle connections to pods are closed after this long.
pub const UPSTREAM_IDLE: Duration = Duration::from_secs(30);

/// A client for pods: keep-alive pool, connect timeout, no Nagle delay.
pub fn upstream_client() -> UpstreamClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(UPSTREAM_IDLE)
        .pool_max_idle_per_host(256)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
}

/// The proxy: resolver, certificates and listeners' shared settings.
pub struct Proxy {
    pub resolver: Arc<dyn Resolver>,
    /// Answers HTTP-01 challenges; holds the TLS certificates.
    pub certs: Option<Arc<tls::CertStore>>,
    /// Issues certificates on demand for pod hosts without one.
    pub acme: Option<Arc<acme::Acme>>,
    /// The domain pods live under (for certificate names).
    pub domain: String,
    /// When set, plain-HTTP requests (other than ACME challenges) are
    /// redirected to HTTPS on this port.
    pub https_redirect_port: Option<u16>,
    /// Counters and latencies, registered by whoever serves `/metrics`.
    pub metrics: metrics::ProxyMetrics,
}

thread_local! {
    /// Pooled connections to pods, one pool per thread: a connection's
    /// task and the requests that use it stay on one thread.
    static UPSTREAM: UpstreamClient = upstream_client();
    static LINKED: LinkClient = link_client();
}

impl Proxy {
    /// A plain proxy over `resolver`, without TLS.
    pub fn plain(resolver: Arc<dyn Resolver>, domain: &str) -> Arc<Self> {
        Arc::new(Self {
            resolver,
            certs: None,
            acme: None,
            domain: domain.to_owned(),
            https_redirect_port: None,
            metrics: metrics::ProxyMetrics::default(),
        })
    }
}

/// What a connection tells a request.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

fn host_of<B>(req: &Request<B>) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// Handles one request, counting its answer.
pub async fn handle(proxy: Arc<Proxy>, conn: ConnInfo, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    let started = std::time::Instant::now();
    let resp = answer(Arc::clone(&proxy), conn, req).await;
    if let Ok(r) = &resp {
        let metrics = &proxy.metrics;
        metrics.requests.get_or_create(&metrics::StatusLabels { status: r.status().as_u16() }).inc();
        metrics.duration.observe(started.elapsed().as_secs_f64());
    }
    resp
}

async fn answer(proxy: Arc<Proxy>, conn: ConnInfo, mut req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    let host = host_of(&req);
    let path = req.uri().path().to_owned();
    // ACME HTTP-01 answers, on plain HTTP only.
    if let (false, Some(token), Some(certs)) = (conn.tls, path.strip_prefix("/.well-known/acme-challenge/"), &proxy.certs) {
        return Ok(match certs.http_challenge(token) {
            Some(answer) => text(StatusCode::OK, answer),
            None => text(StatusCode::NOT_FOUND, "no such challenge\n".into()),
        });
    }
    if let (false, Some(port)) = (conn.tls, proxy.https_redirect_port) {
        let bare = host.rsplit_once(':').map_or(host.as_str(), |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host.as_str() });
        let target = if port == 443 { format!("https://{bare}") } else { format!("https://{bare}:{port}") };
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        return Ok(redirect(&format!("{target}{pq}"), StatusCode::PERMANENT_REDIRECT));
    }
    if let Some(own) = path.strip_prefix(OWN_PREFIX) {
        let other_site = from_other_site(req.headers());
        return Ok(own_endpoint(&proxy, conn, &host, own, req.uri().query().unwrap_or(""), other_site).await);
    }
    let bearer = bearer(&req);
    let cookies = session_cookies(&req);
    // From another origin, a state-changing request or upgrade goes on as
    // if no cookie had been sent (a public port still answers).
    let foreign = foreign_origin(req.method(), req.headers(), &host, conn.tls);
    let usable: &[String] = if foreign.is_some() { &[] } else { &cookies };
    let upstream = match resolve_any(proxy.resolver.as_ref(), &host, bearer.as_deref(), usable).await {
        Ok(u) => u,
        Err(e) => {
            if let (RouteError::Unauthorized, Some(why), false, None) = (&e, &foreign, cookies.is_empty(), &bearer) {
                tracing::info!(%host, %why, method = %req.method(), "cross-site request with the pod cookie refused");
                return Ok(cross_site_refusal(why));
            }
            if let RouteError::Internal(why) = &e {
                tracing::warn!(%host, error = %why, "route lookup failed");
            }
            return Ok(refusal(&e));
        }
    };
    let upgrading = is_upgrade(req.headers());
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    // An HTTP/2 request carries its target in absolute form and no Host
    // header; the pod gets HTTP/1.1 in origin form.
    if req.version() != hyper::Version::HTTP_11 {
        *req.version_mut() = hyper::Version::HTTP_11;
        let pq = req.uri().path_and_query().cloned();
        if let Some(pq) = pq {
            if let Ok(uri) = hyper::Uri::builder().path_and_query(pq).build() {
                *req.uri_mut() = uri;
            }
        }
    }
    {
        let headers = req.headers_mut();
        strip_hop_by_hop(headers, upgrading);
        // the caller's Pinacle credentials stay with the proxy
        headers.remove(header::AUTHORIZATION);
        strip_session_cookie(headers);
        if !headers.contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(&host) {
                headers.insert(header::HOST, v);
            }
        }
        let prior = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let xff = match prior {
            Some(p) => format!("{p}, {}", conn.peer.ip()),
            None => conn.peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
        if let Ok(v) = HeaderValue::from_str(&host) {
            headers.insert("x-forwarded-host", v);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static(if conn.tls { "https" } else { "http" }));
    }
    let nothing_listening = || {
        page(
            StatusCode::BAD_GATEWAY,
            "Nothing listening",
            &format!(
                "Nothing is listening on port {} of pod {} (owner {}). Start your server there, on 0.0.0.0.",
                upstream.port,
                upstream.pod,
                upstream.owner
            ),
        )
    };
    let bad_answer = |e: &dyn std::fmt::Display| {
        page(
            StatusCode::BAD_GATEWAY,
            "Bad gateway",
            &format!("The server on port {} of pod {} did not answer properly: {e}", upstream.port, upstream.pod),
        )
    };
    let mut resp = if upgrading {
        // An upgraded connection leaves HTTP: it gets its own; so does each
        // request to a pod on another host (its host opens the stream).
        let stream: Box<dyn UpstreamIo> = match &upstream.via {
            Via::Tcp(ip) => match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((*ip, upstream.port))).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    Box::new(s)
                }
                _ => return Ok(nothing_listening()),
            },
            Via::Host(dial) => match tokio::time::timeout(CONNECT_TIMEOUT, dial.dial()).await {
                Ok(Ok(s)) => s,
                Ok(Err(DialError::Unavailable(why))) => return Ok(page(StatusCode::SERVICE_UNAVAILABLE, "Pod unavailable", &why)),
                _ => return Ok(nothing_listening()),
            },
        };
        let (mut sender, upstream_conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(x) => x,
            Err(e) => return Ok(bad_answer(&e)),
        };
        tokio::spawn(async move {
            if let Err(e) = upstream_conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Ok(bad_answer(&e)),
        }
    } else if let Via::Host(dial) = &upstream.via {
        // through the pod's host: pooled keep-alive streams over its link
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        match format!("http://{}{pq}", link_name(dial)).parse::<hyper::Uri>() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return Ok(page(StatusCode::BAD_REQUEST, "Bad request", &format!("unusable request target: {e}"))),
        }
        let client = LINKED.with(LinkClient::clone);
        match client.request(req.map(BodyExt::boxed)).await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Ok(nothing_listening()),
            Err(e) => return Ok(bad_answer(&e)),
        }
    } else {
        let Via::Tcp(ip) = upstream.via else { return Ok(nothing_listening()) };
        let addr = SocketAddr::new(ip, upstream.port);
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        match format!("http://{addr}{pq}").parse::<hyper::Uri>() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return Ok(page(StatusCode::BAD_REQUEST, "Bad request", &format!("unusable request target: {e}"))),
        }
        let client = UPSTREAM.with(UpstreamClient::clone);
        // a request without a body can be sent again: once, on a fresh
        // connection, when the first try failed before any answer (a pod
        // server that reset or closed the connection under it), as nginx's
        // proxy_next_upstream does for idempotent requests
        let again = retry_copy(&req);
        match client.request(req.map(BodyExt::boxed)).await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Ok(nothing_listening()),
            Err(e) => match again {
                Some(again) => {
                    tracing::debug!(error = %e, pod = %upstream.pod, "request to a pod failed before an answer; sending it again");
                    match client.request(again).await {
                        Ok(r) => r,
                        Err(e) if e.is_connect() => return Ok(nothing_listening()),
                        Err(e) => return Ok(bad_answer(&e)),
                    }
                }
                None => return Ok(bad_answer(&e)),
            },
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

/// A copy of `req` to send again if the first try fails before an answer:
/// only for methods that change nothing (GET, HEAD, OPTIONS) and carry no
/// body.
fn retry_copy(req: &Request<Incoming>) -> Option<Request<ProxyBody>> {
    use hyper::body::Body;
    let safe = matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS);
    if !safe || !req.body().is_end_stream() && req.body().size_hint().upper() != Some(0) {
        return None;
    }
    let mut copy = Request::new(http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// `/.pinacle/auth` (sign a browser in) and `/.pinacle/signout`.
/// Whether the browser says the request was made by another site's page
/// (`Sec-Fetch-Site: cross-site` or `same-site`; another pod's host is
/// same-site).
fn from_other_site(headers: &hyper::HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cross-site") || v.trim().eq_ignore_ascii_case("same-site"))
}

async fn own_endpoint(proxy: &Proxy, conn: ConnInfo, host: &str, what: &str, query: &str, other_site: bool) -> Response<ProxyBody> {
    match what {
        "auth" => {
            let Some(token) = query_param(query, "token") else {
                return page(StatusCode::BAD_REQUEST, "Bad sign-in link", "The link has no token; open the pod from Pinacle again.");
            };
            let embedded = query_param(query, "embed").is_some_and(|v| v == "1");
            let next = safe_next(query_param(query, "next"));
            match proxy.resolver.sign_in(host, &token).await {
                Ok(session) => {
                    let mut resp = redirect(&next, StatusCode::SEE_OTHER);
                    if let Ok(v) = HeaderValue::from_str(&session_set_cookie(&session, conn.tls, embedded)) {
                        resp.headers_mut().append(header::SET_COOKIE, v);
                    }
                    if conn.tls {
                        // a plain-named cookie of an older version goes
                        if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; Secure")) {
                            resp.headers_mut().append(header::SET_COOKIE, v);
                        }
                    }
                    resp
                }
                Err(RouteError::Unauthorized) => page(
                    StatusCode::UNAUTHORIZED,
                    "Sign-in link expired",
                    "This sign-in link is invalid, used or expired; open the pod from Pinacle again.",
                ),
                Err(e) => refusal(&e),
            }
        }
        "signout" if other_site => page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "Another site's page asked to sign you out of this pod; you are still signed in. Open /.pinacle/signout on this host to sign out.",
        ),
        "signout" => {
            let mut resp = page(StatusCode::OK, "Signed out", "You are signed out of this pod.");
            for clear in clear_session_cookies(conn.tls) {
                if let Ok(v) = HeaderValue::from_str(&clear) {
                    resp.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            resp
        }
        _ => page(StatusCode::NOT_FOUND, "Not found", "Paths under /.pinacle/ belong to the Pinacle proxy."),
    }
}

async fn serve_connection<I>(proxy: Arc<Proxy>, conn: ConnInfo, io: I)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(Arc::clone(&proxy), conn, req));
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(hyper_util::rt::TokioTimer::new()).keep_alive_interval(Duration::from_secs(30));
    if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!(error = %e, "proxy connection ended");
    }
}

async fn accept_loop<F, Fut>(listener: TcpListener, shutdown: impl std::future::Future<Output = ()>, mut on_conn: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
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
        tokio::spawn(on_conn(stream, peer));
    }
}

/// Serves plain HTTP (HTTP/1.1, or HTTP/2 with prior knowledge) on
/// `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: impl std::future::Future<Output = ()>) {
    accept_loop(listener, shutdown, move |stream, peer| {
        let proxy = Arc::clone(&proxy);
        async move { serve_connection(proxy, ConnInfo { peer, tls: false }, TokioIo::new(stream)).await }
    })
    .await
}

/// Serves on `addr` from `threads` threads, each with its own
/// single-threaded runtime and its own listening socket (`SO_REUSEPORT`:
/// the kernel spreads connections over them), until `stop` turns true.
/// Like nginx's workers, a request never waits for another thread. With
/// `tls`, the listeners serve HTTPS.
pub fn serve_threads(
    addr: SocketAddr,
    threads: usize,
    proxy: Arc<Proxy>,
    tls: Option<Arc<tls::TlsConfigs>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, Vec<std::thread::JoinHandle<()>>)> {
    let mut sockets = Vec::new();
    let mut addr = addr;
    for _ in 0..threads.max(1) {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        // port 0: the others share the port the first one got
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    let mut handles = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let (proxy, tls, mut stop) = (Arc::clone(&proxy), tls.clone(), stop.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = std::thread::Builder::new().name(format!("pinacle-proxy-{i}")).spawn(move || {
            runtime.block_on(async move {
                let listener = match socket.listen(1024) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "proxy listener failed");
                        return;
                    }
                };
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                match tls {
                    Some(configs) => serve_tls(listener, proxy, configs, shutdown).await,
                    None => serve(listener, proxy, shutdown).await,
                }
            });
        })?;
        handles.push(handle);
    }
    Ok((addr, handles))
}

/// How long a TLS handshake, on-demand issuance included, may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(120);

/// Serves HTTPS on `listener` until `shutdown` resolves. A handshake for a
/// pod host without a certificate waits for one to be issued (when ACME is
/// configured and the host names a pod); TLS-ALPN-01 validation
/// handshakes get the challenge certificate.
pub async fn serve_tls(listener: TcpListener, proxy: Arc<Proxy>, configs: Arc<tls::TlsConfigs>, shutdown: impl std::future::Future<Output = ()>) {
    accept_loop(listener, shutdown, move |stream, peer| {
        let proxy = Arc::clone(&proxy);
        let configs = Arc::clone(&configs);
        async move {
            let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls_handshake(&proxy, &configs, stream)).await;
            let count = |outcome| metrics::ProxyMetrics::outcome(&proxy.metrics.handshakes, outcome);
            match accepted {
                Ok(Ok(Some(tls))) => {
                    count("ok");
                    serve_connection(proxy, ConnInfo { peer, tls: true }, TokioIo::new(tls)).await
                }
                Ok(Ok(None)) => count("acme_validation"),
                Ok(Err(e)) => {
                    count("failed");
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    count("failed");
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        }
    })
    .await
}

async fn tls_handshake(
    proxy: &Proxy,
    configs: &tls::TlsConfigs,
    stream: TcpStream,
) -> std::io::Result<Option<tokio_rustls::server::TlsStream<TcpStream>>> {
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let hello = start.client_hello();
    let server_name = hello.server_name().map(str::to_owned);
    let acme_validation = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == tls::ACME_TLS_ALPN));
    if acme_validation {
        // Validation only: complete the handshake and close.
        let mut tls = start.into_stream(Arc::clone(&configs.acme)).await?;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
        return Ok(None);
    }
    if let (Some(name), Some(certs), Some(acme)) = (&server_name, &proxy.certs, &proxy.acme) {
        if certs.lookup(name).is_none() {
            match proxy.resolver.may_issue_certificate(name).await {
                Some(pod) => {
                    let cert_name = acme.certificate_name(name, &proxy.domain);
                    if let Err(e) = acme.ensure_on_demand(&cert_name, &pod).await {
                        tracing::warn!(host = %name, error = %e, "no certificate for this handshake");
                    }
                }
                None => metrics::ProxyMetrics::outcome(&acme.metrics.certificates, "no_route"),
            }
        }
    }
    Ok(Some(start.into_stream(Arc::clone(&configs.serve)).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Routes every host to `addr`, for anyone.
    struct To(SocketAddr);

    #[async_trait::async_trait]
    impl Resolver for To {
        async fn resolve(&self, _: &str, _: Credentials<'_>) -> Result<Upstream, RouteError> {
            Ok(Upstream { port: self.0.port(), via: Via::Tcp(self.0.ip()), pod: "p".into(), owner: "o".into() })
        }
        async fn sign_in(&self, _: &str, _: &str) -> Result<PodSession, RouteError> {
            Err(RouteError::Unauthorized)
        }
        async fn may_issue_certificate(&self, _: &str) -> Option<String> {
            None
        }
    }

    /// A pod server that drops its first connection after reading the
    /// request (a reset under the proxy), then answers `ok` on each next.
    async fn flaky_upstream() -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for n in 0..8 {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                if n > 0 {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                }
            }
        });
        addr
    }

    async fn send(proxy: SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_request_without_a_body_is_sent_again_once_when_the_pod_dropped_it() {
        let upstream = flaky_upstream().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Proxy::plain(Arc::new(To(upstream)), "test"), std::future::pending()));
        let answer = send(addr, "GET / HTTP/1.1\r\nHost: 80-p-o.test\r\nConnection: close\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");
        // a write is never sent twice: the dropped one is a 502
        let upstream = flaky_upstream().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Proxy::plain(Arc::new(To(upstream)), "test"), std::future::pending()));
        let answer = send(addr, "POST / HTTP/1.1\r\nHost: 80-p-o.test\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx").await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    }

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
    fn sign_in_redirects_stay_on_the_pod_host() {
        assert_eq!(safe_next(Some("/app?x=1".into())), "/app?x=1");
        for evil in ["//evil.test/", "/\\evil.test", "https://evil.test/", "evil", "/a\nSet-Cookie: x=1"] {
            assert_eq!(safe_next(Some(evil.replace("\\n", "\n"))), "/", "{evil}");
        }
        assert_eq!(safe_next(None), "/");
        assert_eq!(query_param("token=a%2Bb&next=%2Fx%3Fy%3D1&embed=1", "next").as_deref(), Some("/x?y=1"));
        assert_eq!(query_param("token=a%2Bb", "token").as_deref(), Some("a+b"));
        assert_eq!(query_param("token=%zz%", "token").as_deref(), Some("%zz%"));
        assert_eq!(query_param("a=1", "token"), None);
    }

    #[test]
    fn session_cookies_are_host_only_http_only_and_partitioned_when_embedded() {
        let s = PodSession { value: "v".into(), max_age_secs: 60 };
        let embedded = session_set_cookie(&s, true, true);
        assert!(embedded.starts_with("__Host-pinacle_pod=v;"), "{embedded}");
        assert!(embedded.contains("HttpOnly") && embedded.contains("Secure") && embedded.contains("SameSite=None") && embedded.contains("Partitioned"));
        let top = session_set_cookie(&s, true, false);
        assert!(top.starts_with("__Host-pinacle_pod=v;") && top.contains("Path=/;"), "{top}");
        assert!(top.contains("SameSite=Lax") && top.contains("Secure") && !top.contains("Partitioned"));
        // plain HTTP (local development): no Secure, which browsers would drop, so no __Host- either
        let plain = session_set_cookie(&s, false, true);
        assert!(plain.starts_with("pinacle_pod=v;") && !plain.contains("Secure"), "{plain}");
        for c in [embedded, top, plain] {
            assert!(!c.to_ascii_lowercase().contains("domain="), "not host-only: {c}");
        }
        assert_eq!(clear_session_cookies(false).len(), 1);
        assert!(clear_session_cookies(true).iter().any(|c| c.starts_with("__Host-pinacle_pod=;") && c.contains("Secure")));
    }

    #[test]
    fn the_session_cookie_is_read_and_never_forwarded() {
        let mut req = Request::new(());
        req.headers_mut().append(header::COOKIE, HeaderValue::from_static("a=1; pinacle_pod=secret; b=2"));
        req.headers_mut().append(header::COOKIE, HeaderValue::from_static("c=3; __Host-pinacle_pod=host"));
        // the __Host- cookie first: no sibling host can have planted it
        assert_eq!(session_cookies(&req), vec!["host".to_string(), "secret".to_string()]);
        strip_session_cookie(req.headers_mut());
        let left: Vec<_> = req.headers().get_all(header::COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(left, vec!["a=1; b=2; c=3".to_string()]);
        let mut only = Request::new(());
        only.headers_mut().insert(header::COOKIE, HeaderValue::from_static("pinacle_pod=x"));
        strip_session_cookie(only.headers_mut());
        assert!(only.headers().get(header::COOKIE).is_none());
        // planted copies are all tried, up to a bound, without repeats
        let mut many = Request::new(());
        let planted = (0..10).map(|i| format!("pinacle_pod=p{i}")).collect::<Vec<_>>().join("; ");
        many.headers_mut().insert(header::COOKIE, HeaderValue::from_str(&format!("pinacle_pod=p0; {planted}")).unwrap());
        assert_eq!(session_cookies(&many), vec!["p0", "p1", "p2", "p3"]);
    }

    #[test]
    fn cross_origin_writes_and_upgrades_are_told_apart() {
        use hyper::Method;
        let host = "8080-web-alice.pinacle.test";
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = hyper::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let ws = [("connection", "Upgrade"), ("upgrade", "websocket")];
        // same origin, explicit default port, case: fine
        for origin in ["https://8080-web-alice.pinacle.test", "https://8080-web-alice.pinacle.test:443", "HTTPS://8080-Web-Alice.pinacle.test"] {
            let h = with(&[("origin", origin), ("sec-fetch-site", "same-origin")]);
            assert_eq!(foreign_origin(&Method::POST, &h, host, true), None, "{origin}");
        }
        assert_eq!(foreign_origin(&Method::POST, &with(&[("origin", "http://8080-web-alice.pinacle.test:8000")]), "8080-web-alice.pinacle.test:8000", false), None);
        // a sibling pod, another port of the same pod, another scheme, "null": refused
        for origin in ["https://3000-evil-bob.pinacle.test", "https://3000-web-alice.pinacle.test", "http://8080-web-alice.pinacle.test", "null", "https://8080-web-alice.pinacle.test:8443", "https://8080-web-alice.pinacle.test.evil.test"] {
            let h = with(&[("origin", origin)]);
            assert!(foreign_origin(&Method::POST, &h, host, true).is_some(), "{origin}");
            let mut up = with(&ws);
            up.insert("origin", HeaderValue::from_str(origin).unwrap());
            assert!(foreign_origin(&Method::GET, &up, host, true).is_some(), "upgrade from {origin}");
        }
        for site in ["cross-site", "same-site", "Same-Site", "bogus"] {
            let h = with(&[("sec-fetch-site", site)]);
            assert!(foreign_origin(&Method::DELETE, &h, host, true).is_some(), "{site}");
        }
        assert_eq!(foreign_origin(&Method::PUT, &with(&[("sec-fetch-site", "none")]), host, true), None);
        // safe requests are never affected; nor are requests without browser headers
        assert_eq!(foreign_origin(&Method::GET, &with(&[("origin", "https://evil.test"), ("sec-fetch-site", "cross-site")]), host, true), None);
        assert_eq!(foreign_origin(&Method::OPTIONS, &with(&[("origin", "https://evil.test")]), host, true), None);
        assert_eq!(foreign_origin(&Method::POST, &hyper::HeaderMap::new(), host, true), None);
        // signing out: only from this host's own pages or typed in
        assert!(from_other_site(&with(&[("sec-fetch-site", "same-site")])));
        assert!(!from_other_site(&with(&[("sec-fetch-site", "none")])) && !from_other_site(&hyper::HeaderMap::new()));
        // a same-origin WebSocket is fine
        let mut up = with(&ws);
        up.insert("origin", HeaderValue::from_static("https://8080-web-alice.pinacle.test"));
        assert_eq!(foreign_origin(&Method::GET, &up, host, true), None);
    }

    #[test]
    fn refusal_pages_escape_and_say_why() {
        let r = refusal(&RouteError::NotRunning { pod: "<web>".into(), state: "stopped".into() });
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refusal(&RouteError::Unauthorized).status(), StatusCode::UNAUTHORIZED);
        assert_eq!(refusal(&RouteError::NotFound).status(), StatusCode::NOT_FOUND);
    }
}
