//! A small REST client for the Pinacle API.

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::config::CliConfig;

/// An authenticated client. A sign-in whose access token expired is
/// renewed with its refresh token once, transparently, and saved.
pub struct Client {
    http: reqwest::Client,
    cfg: std::sync::Mutex<CliConfig>,
    api: String,
}

/// An error the server answered in its `{"error":{code,message}}` shape.
#[derive(Debug)]
pub struct ServerError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.status.as_u16())
    }
}

impl std::error::Error for ServerError {}

impl Client {
    pub fn new(cfg: CliConfig) -> Result<Self> {
        let http = reqwest::Client::builder().build()?;
        Ok(Self { http, api: cfg.api.clone(), cfg: std::sync::Mutex::new(cfg) })
    }

    /// The server's base URL.
    pub fn api(&self) -> &str {
        &self.api
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.api)
    }

    fn config(&self) -> CliConfig {
        match self.cfg.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    async fn attempt(&self, method: &Method, url: &str, body: Option<&Value>) -> Result<reqwest::Response> {
        let mut req = self.http.request(method.clone(), url).bearer_auth(self.config().token);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.with_context(|| format!("cannot reach the Pinacle API at {}", self.api))
    }

    /// Trades the saved refresh token for a new pair and saves it.
    async fn renew(&self) -> Result<bool> {
        let cfg = self.config();
        let Some(refresh) = cfg.refresh_token.clone().filter(|_| !cfg.from_env) else { return Ok(false) };
        let resp = self
            .http
            .post(self.url("/auth/refresh"))
            .json(&serde_json::json!({ "refresh_token": refresh }))
            .send()
            .await
            .with_context(|| format!("cannot reach the Pinacle API at {}", self.api))?;
        if !resp.status().is_success() {
            return Ok(false);
        }
        let pair: Value = resp.json().await.context("server sent invalid JSON")?;
        let (Some(access), Some(refresh)) = (pair["access_token"].as_str(), pair["refresh_token"].as_str()) else {
            return Ok(false);
        };
        let updated = CliConfig { token: access.to_owned(), refresh_token: Some(refresh.to_owned()), ..cfg };
        crate::config::save(&updated)?;
        match self.cfg.lock() {
            Ok(mut g) => *g = updated,
            Err(p) => *p.into_inner() = updated,
        }
        Ok(true)
    }

    /// A request to `path` under `/api/v1`.
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<reqwest::Response> {
        self.send_url(method, &self.url(path), body).await
    }

    /// A request to `path` at the server's root (the AI router's `/v1/…`
    /// and `/router/…`).
    pub async fn send_root(&self, method: Method, path: &str, body: Option<Value>) -> Result<reqwest::Response> {
        self.send_url(method, &format!("{}{path}", self.api), body).await
    }

    async fn send_url(&self, method: Method, url: &str, body: Option<Value>) -> Result<reqwest::Response> {
        let mut resp = self.attempt(&method, url, body.as_ref()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED && self.renew().await? {
            resp = self.attempt(&method, url, body.as_ref()).await?;
        }
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let parsed: Option<(String, String)> = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
            let e = v.get("error")?;
            Some((e.get("code")?.as_str()?.to_owned(), e.get("message")?.as_str()?.to_owned()))
        });
        match parsed {
            Some((code, message)) => Err(ServerError { status, code, message }.into()),
            None => bail!("server answered {status}: {text}"),
        }
    }

    /// Opens a WebSocket to `path` (under `/api/v1`) with the caller's
    /// credential (renewed first if it expired).
    pub async fn websocket(
        &self,
        path: &str,
    ) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>> {
        self.send(Method::GET, "/me", None).await?;
        let url = self.url(path);
        let ws_url = match url.strip_prefix("http://") {
            Some(rest) => format!("ws://{rest}"),
            None => bail!("terminals over {} are not supported yet: use an http:// API address", self.api),
        };
        let host = ws_url.trim_start_matches("ws://").split('/').next().unwrap_or_default().to_owned();
        let req = tokio_tungstenite::tungstenite::http::Request::builder()
            .uri(&ws_url)
            .header("host", host)
            .header("authorization", format!("Bearer {}", self.config().token))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", tokio_tungstenite::tungstenite::handshake::client::generate_key())
            .body(())?;
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
                let message = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                    .unwrap_or(body);
                bail!("{message} (HTTP {})", resp.status().as_u16())
            }
            Err(e) => Err(anyhow!("cannot open a terminal at {ws_url}: {e}")),
        }
    }

    pub async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let resp = self.send(method, path, body).await?;
        resp.json().await.context("server sent invalid JSON")
    }

    /// Follows the pod's event stream, calling `on_event` with each event's
    /// JSON until it returns `Some`, which is returned.
    pub async fn follow_events<T>(&self, pod: &str, mut on_event: impl FnMut(&Value) -> Option<T>) -> Result<T> {
        let resp = self.send(Method::GET, &format!("/pods/{pod}/events"), None).await?;
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.context("event stream broke")?));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let data: String = frame
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(&data).context("unreadable event")?;
                if let Some(done) = on_event(&v) {
                    return Ok(done);
                }
            }
        }
        Err(anyhow!("event stream ended"))
    }
}
