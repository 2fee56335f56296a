//! The memory service as MCP tools (rmcp): `add_memory`, `search_memory`,
//! `get_memory`, `update_memory`, `delete_memory`, `list_memories` and
//! `memory_history`.
//!
//! Two transports, one tool set:
//! - stateless Streamable HTTP at `/api/v1/memory/mcp` (in pods:
//!   `http://pinacle.internal/mcp`), where each call is authorised by the
//!   request's bearer token through the same [`TokenVerifier`] as REST;
//! - stdio (`pinacle memory mcp`), for tools that spawn their servers,
//!   which calls the REST API with the token from `$PINAK_TOKEN_FILE`.
//!
//! Tenant and project come from the token only; no tool takes them.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::MemoryError;
use crate::http::{status_of, TokenVerifier};
use crate::model::*;
use crate::service::MemoryService;

/// One operation, as the tools ask it of a backend.
#[derive(Debug, Clone)]
pub enum Op {
    Add(NewMemory),
    Search(SearchRequest),
    Get(String),
    Update(String, Patch),
    Delete(String),
    List { filters: Filters, limit: Option<usize>, cursor: Option<String> },
    History(String),
}

/// A failed operation: an HTTP-like status and the message a model reads.
#[derive(Debug, Clone)]
pub struct OpError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl From<MemoryError> for OpError {
    fn from(e: MemoryError) -> Self {
        let (status, code) = status_of(&e);
        OpError { status: status.as_u16(), code: code.to_owned(), message: crate::http::public_message(&e) }
    }
}

/// Who carries the operations out: the service in this process, or the
/// REST API over HTTP.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Runs `op` for the caller of `token` (`None`: the backend's own).
    async fn run(&self, token: Option<String>, op: Op) -> Result<serde_json::Value, OpError>;
}

/// The service in this process, callers verified per call.
pub struct InProcess {
    pub service: MemoryService,
    pub verifier: Arc<dyn TokenVerifier>,
}

fn to_value<T: Serialize>(v: T) -> Result<serde_json::Value, OpError> {
    serde_json::to_value(v).map_err(|e| MemoryError::Internal(e.to_string()).into())
}

#[async_trait::async_trait]
impl Backend for InProcess {
    async fn run(&self, token: Option<String>, op: Op) -> Result<serde_json::Value, OpError> {
        let token = token.ok_or_else(|| MemoryError::Unauthenticated("send the memory token as Authorization: Bearer <token>".into()))?;
        let c = self.verifier.verify(&token).await?;
        let s = &self.service;
        match op {
            Op::Add(m) => to_value(s.add(&c, vec![m]).await?.remove(0)),
            Op::Search(r) => to_value(serde_json::json!({ "results": s.search(&c, &r).await? })),
            Op::Get(id) => to_value(s.get(&c, &id).await?),
            Op::Update(id, p) => to_value(s.update(&c, &id, p).await?),
            Op::Delete(id) => to_value(s.delete(&c, &id).await?),
            Op::List { filters, limit, cursor } => to_value(s.list(&c, &filters, limit, cursor.as_deref()).await?),
            Op::History(id) => to_value(s.history(&c, &id).await?),
        }
    }
}

/// Where a client finds its token.
#[derive(Clone)]
pub enum TokenSource {
    /// Read again for every call (a pod's is replaced every few minutes).
    File(std::path::PathBuf),
    Fixed(String),
    /// Minted on demand and again before it expires (a user's, outside a
    /// pod: a long-running stdio server outlives one token).
    Renewed(std::sync::Arc<Renewed>),
}

impl TokenSource {
    /// The token to send now.
    pub async fn read(&self) -> Result<String, OpError> {
        match self {
            TokenSource::Fixed(t) => Ok(t.clone()),
            TokenSource::File(p) => std::fs::read_to_string(p).map(|t| t.trim().to_owned()).map_err(|e| OpError {
                status: 401,
                code: "unauthorized".into(),
                message: format!("memory token file {}: {e}", p.display()),
            }),
            TokenSource::Renewed(r) => r.token(crate::store::now_ms() / 1000).await,
        }
    }
}

/// Mints a memory token.
#[async_trait::async_trait]
pub trait Mint: Send + Sync {
    /// A new token and how many seconds it lives (not its expiry by the
    /// server's clock: this machine's may differ).
    async fn mint(&self) -> Result<(String, i64), OpError>;
}

/// A token kept until a minute before it expires (by this machine's
/// clock, from when it was minted), then minted again; dropped at once when
/// the service refuses it.
pub struct Renewed {
    mint: Box<dyn Mint>,
    cached: tokio::sync::Mutex<Option<(String, i64)>>,
}

/// Seconds before expiry a token is replaced.
pub const RENEW_BEFORE_SECS: i64 = 60;

impl Renewed {
    pub fn new(mint: impl Mint + 'static) -> Self {
        Self { mint: Box::new(mint), cached: Default::default() }
    }

    /// The token to use at `now` (seconds since the epoch).
    pub async fn token(&self, now: i64) -> Result<String, OpError> {
        let mut cached = self.cached.lock().await;
        if let Some((t, expires)) = cached.as_ref() {
            if now < expires - RENEW_BEFORE_SECS {
                return Ok(t.clone());
            }
        }
        let (t, lives) = self.mint.mint().await?;
        *cached = Some((t.clone(), now + lives));
        Ok(t)
    }

    /// Forgets the token (the service refused it): the next is minted.
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }
}

/// The REST API over HTTP (the stdio server's backend).
pub struct Rest {
    /// `…/api/v1/memory`.
    pub base: String,
    pub token: TokenSource,
    pub client: reqwest::Client,
}

#[async_trait::async_trait]
impl Backend for Rest {
    async fn run(&self, _token: Option<String>, op: Op) -> Result<serde_json::Value, OpError> {
        use reqwest::Method;
        let enc = |s: &str| -> String { s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect() };
        let (method, path, body) = match op {
            Op::Add(m) => (Method::POST, "/memories".to_owned(), Some(to_value(m)?)),
            Op::Search(r) => (Method::POST, "/search".to_owned(), Some(to_value(r)?)),
            Op::Get(id) => (Method::GET, format!("/memories/{}", enc(&id)), None),
            Op::Update(id, p) => (Method::PATCH, format!("/memories/{}", enc(&id)), Some(to_value(p)?)),
            Op::Delete(id) => (Method::DELETE, format!("/memories/{}", enc(&id)), None),
            Op::List { filters, limit, cursor } => {
                let mut q = form_query(&filters);
                if let Some(l) = limit {
                    q.push(("limit".into(), l.to_string()));
                }
                if let Some(c) = cursor {
                    q.push(("cursor".into(), c));
                }
                let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", url_escape(v))).collect();
                (Method::GET, format!("/memories?{}", qs.join("&")), None)
            }
            Op::History(id) => (Method::GET, format!("/memories/{}/history", enc(&id)), None),
        };
        self.request(method, &path, body).await
    }
}

impl Rest {
    /// One call of the REST API (`path` below `/api/v1/memory`): its JSON
    /// answer, or its error.
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> Result<serde_json::Value, OpError> {
        match self.request_once(method.clone(), path, body.clone()).await {
            // a minted token refused (revoked keys, a clock far off): once
            // more with a new one
            Err(e) if e.status == 401 && matches!(self.token, TokenSource::Renewed(_)) => {
                if let TokenSource::Renewed(r) = &self.token {
                    r.forget().await;
                }
                self.request_once(method, path, body).await
            }
            other => other,
        }
    }

    async fn request_once(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> Result<serde_json::Value, OpError> {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(self.token.read().await?);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let unreachable = |e: reqwest::Error| OpError { status: 502, code: "unavailable".into(), message: format!("memory service at {}: {e}", self.base) };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let value: serde_json::Value = resp.json().await.map_err(unreachable)?;
        if status >= 400 {
            return Err(OpError {
                status,
                code: value["error"]["code"].as_str().unwrap_or("error").to_owned(),
                message: value["error"]["message"].as_str().unwrap_or("the memory service refused").to_owned(),
            });
        }
        Ok(value)
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.status)
    }
}

impl std::error::Error for OpError {}

fn form_query(f: &Filters) -> Vec<(String, String)> {
    let mut q = Vec::new();
    if !f.layers.is_empty() {
        q.push(("layers".into(), f.layers.join(",")));
    }
    if let Some(s) = &f.session_id {
        q.push(("session_id".into(), s.clone()));
    }
    for (k, v) in &f.metadata {
        q.push((format!("meta.{k}"), v.as_str().map_or_else(|| v.to_string(), str::to_owned)));
    }
    q
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',') { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// `add_memory`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AddArgs {
    /// What to remember: one fact, decision, procedure or event.
    pub content: String,
    /// `semantic` (facts, the default), `episodic` (what happened),
    /// `procedural` (how-tos), `session` (a turn; needs session_id) or
    /// `working` (a scratchpad note that expires).
    #[serde(default)]
    pub layer: Option<String>,
    /// Flat key/value labels (strings, numbers, booleans).
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub session_id: Option<String>,
}

/// `search_memory`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// What to look for, in words.
    pub query: String,
    /// How many results (default 10, at most 100).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Only these layers.
    #[serde(default)]
    pub layers: Option<Vec<String>>,
    /// Only memories whose metadata has these values.
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct IdArgs {
    /// The memory's id.
    pub id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpdateArgs {
    pub id: String,
    /// The new content (the old version stays in its history).
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListArgs {
    #[serde(default)]
    pub layers: Option<Vec<String>>,
    #[serde(default)]
    pub session_id: Option<String>,
    /// At most this many (default 50).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// The tools.
#[derive(Clone)]
pub struct MemoryTools {
    backend: Arc<dyn Backend>,
    tool_router: ToolRouter<Self>,
}

fn bearer(ctx: &RequestContext<RoleServer>) -> Option<String> {
    crate::http::bearer(ctx.extensions.get::<axum::http::request::Parts>()?).map(str::to_owned)
}

/// A tool's answer: the JSON result, or the error as the model should read
/// it (in-band: a tool that failed, not a protocol error).
fn answer(r: Result<serde_json::Value, OpError>) -> Result<CallToolResult, ErrorData> {
    match r {
        Ok(v) => Ok(CallToolResult::success(vec![ContentBlock::text(v.to_string())])),
        Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(format!("{} ({}): {}", e.code, e.status, e.message))])),
    }
}

#[tool_router]
impl MemoryTools {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend, tool_router: Self::tool_router() }
    }

    async fn op(&self, ctx: &RequestContext<RoleServer>, op: Op) -> Result<CallToolResult, ErrorData> {
        answer(self.backend.run(bearer(ctx), op).await)
    }

    #[tool(description = "Remember something for later sessions and other pods of this project: a fact, a decision, a procedure, an event. An exact or near duplicate is not stored twice: the existing memory is returned.")]
    async fn add_memory(&self, ctx: RequestContext<RoleServer>, Parameters(a): Parameters<AddArgs>) -> Result<CallToolResult, ErrorData> {
        let m = NewMemory { content: a.content, layer: a.layer, metadata: a.metadata.unwrap_or_default(), session_id: a.session_id, ..Default::default() };
        self.op(&ctx, Op::Add(m)).await
    }

    #[tool(description = "Search this project's memories by meaning and keywords (hybrid). Returns the best matches with their ids, layers and scores.")]
    async fn search_memory(&self, ctx: RequestContext<RoleServer>, Parameters(a): Parameters<SearchArgs>) -> Result<CallToolResult, ErrorData> {
        let filters = Filters { layers: a.layers.unwrap_or_default(), metadata: a.metadata.unwrap_or_default(), ..Default::default() };
        self.op(&ctx, Op::Search(SearchRequest { query: a.query, top_k: a.top_k, filters, ..Default::default() })).await
    }

    #[tool(description = "Read one memory by id (its current version).")]
    async fn get_memory(&self, ctx: RequestContext<RoleServer>, Parameters(a): Parameters<IdArgs>) -> Result<CallToolResult, ErrorData> {
        self.op(&ctx, Op::Get(a.id)).await
    }

    #[tool(description = "Correct or refine a memory: a new version supersedes the current one; the old one stays in its history.")]
    async fn update_memory(&self, ctx: RequestContext<RoleServer>, Parameters(a): Parameters<UpdateArgs>) -> Result<CallToolResult, ErrorData> {
        self.op(&ctx, Op::Update(a.id, Patch { content: a.content, metadata: a.metadata })).await
    }

    #[tool(description = "Forget a memory that is wrong or obsolete (its history is kept).")]
    async fn delete_memory(&self, ctx: RequestContext<RoleServer>, Parameters(a): Parameters<IdArgs>) -> Result<CallToolResult, ErrorData> {
        self.op(&ctx, Op::Delete(a.id)).await
    }

    #[tool(description = "List this project's memories, newest first, optionally of some layers or one session.")]
    async fn list_memories(&self, ctx: RequestContext<RoleServer>, Parameters(a): Parameters<ListArgs>) -> Result<CallToolResult, ErrorData> {
        let filters = Filters { layers: a.layers.unwrap_or_default(), session_id: a.session_id, ..Default::default() };
        self.op(&ctx, Op::List { filters, limit: a.limit, cursor: a.cursor }).await
    }

    #[tool(description = "Every version of a memory and each change made to it, with content hashes.")]
    async fn memory_history(&self, ctx: RequestContext<RoleServer>, Parameters(a): Parameters<IdArgs>) -> Result<CallToolResult, ErrorData> {
        self.op(&ctx, Op::History(a.id)).await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for MemoryTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "Pinacle memory: long-term memory shared by the sessions and pods of this project. Search it before you \
             start, add what you learn (facts, decisions, procedures), update what changed.",
        )
    }
}

/// The Streamable HTTP service (stateless, JSON responses), to nest at
/// `/mcp`.
pub fn http_service(
    service: MemoryService,
    verifier: Arc<dyn TokenVerifier>,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<MemoryTools, rmcp::transport::streamable_http_server::session::local::LocalSessionManager> {
    use rmcp::transport::streamable_http_server::{session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService};
    let backend: Arc<dyn Backend> = Arc::new(InProcess { service, verifier });
    StreamableHttpService::new(
        move || Ok(MemoryTools::new(backend.clone())),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            // reached through proxies and the pods' gateway by any host name;
            // every call is authorised by its bearer token
            .disable_allowed_hosts()
            .with_max_request_body_bytes(crate::http::BODY_LIMIT),
    )
}

/// Serves the tools over stdin/stdout until the client closes them.
pub async fn serve_stdio(backend: Arc<dyn Backend>) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let running = MemoryTools::new(backend).serve(rmcp::transport::io::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod renew_tests {
    use super::*;

    struct Counter(std::sync::atomic::AtomicI64);

    #[async_trait::async_trait]
    impl Mint for Counter {
        async fn mint(&self) -> Result<(String, i64), OpError> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Ok((format!("token-{n}"), 900))
        }
    }

    #[tokio::test]
    async fn a_token_is_kept_until_a_minute_before_it_expires_then_minted_again() {
        let r = Renewed::new(Counter(Default::default()));
        // token-1, minted at 1000 for 900 s, expires at 1900 by this clock
        assert_eq!(r.token(1000).await.unwrap(), "token-1");
        assert_eq!(r.token(1800).await.unwrap(), "token-1");
        assert_eq!(r.token(1839).await.unwrap(), "token-1");
        assert_eq!(r.token(1840).await.unwrap(), "token-2", "renewed 60 s before expiry");
        assert_eq!(r.token(2000).await.unwrap(), "token-2");
        // refused: the next call mints another at once
        r.forget().await;
        assert_eq!(r.token(2001).await.unwrap(), "token-3");
    }
}
