//! `/graphql` (queries and mutations) and `/graphql/ws` (subscriptions).
//!
//! A WebSocket connection is authenticated by its `connection_init`
//! payload, and again for every operation it carries: each `subscribe`
//! (query, mutation or subscription) runs as the caller is *now* (the
//! credential still valid, its session not signed out, current team
//! roles). The connection is closed with 4403 once the credential stops
//! working (at its expiry at the latest); graphql-ws clients reconnect
//! with a fresh token.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use async_graphql::{Data, Executor};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::Extension;
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};

use crate::principal::Principal;
use crate::graphql::{PinacleSchema, WsCredential};
use crate::AppState;

/// Largest WebSocket message (and frame) accepted from a client: room for
/// the largest configuration file read (1 MiB, `validateConfig`) once
/// JSON-escaped, nothing like axum's default 64 MiB.
pub const MAX_WS_MESSAGE: usize = 2 * 1024 * 1024;

/// graphql-ws's close code for a refused credential: its clients
/// reconnect (the web app with a refreshed token).
pub const CLOSE_FORBIDDEN: u16 = 4403;

/// Close code for a message over [`MAX_WS_MESSAGE`] (RFC 6455 1009).
pub const CLOSE_TOO_BIG: u16 = 1009;

/// What async-graphql closes with when `connection_init` is refused.
const CLOSE_PROTOCOL_ERROR: u16 = 1002;

/// `POST /graphql`, behind [`crate::routes::middleware::require_principal`].
pub async fn http(
    Extension(schema): Extension<PinacleSchema>,
    Extension(who): Extension<Principal>,
    req: GraphQLRequest,
) -> GraphQLResponse {
    schema.execute(req.into_inner().data(who)).await.into()
}

/// Runs every operation of one connection as the caller is now.
#[derive(Clone)]
struct Authenticated {
    state: AppState,
    schema: PinacleSchema,
    /// Set by `connection_init`.
    token: Arc<OnceLock<Arc<str>>>,
    source: Option<String>,
}

fn refused(e: crate::ApiError) -> async_graphql::Response {
    async_graphql::Response::from_errors(vec![crate::graphql::gql(e).into_server_error(Default::default())])
}

impl Authenticated {
    async fn principal(&self) -> Result<(Principal, Arc<str>), crate::ApiError> {
        let token = self.token.get().cloned().ok_or_else(|| crate::ApiError::unauthorized("send connection_init first"))?;
        let mut who = self.state.auth.principal_for_bearer(&token).await?;
        if let Some(source) = &self.source {
            who.source = source.clone();
        }
        Ok((who, token))
    }
}

impl Executor for Authenticated {
    async fn execute(&self, request: async_graphql::Request) -> async_graphql::Response {
        match self.principal().await {
            Ok((who, token)) => self.schema.execute(request.data(who).data(WsCredential(token))).await,
            Err(e) => refused(e),
        }
    }

    fn execute_stream(&self, request: async_graphql::Request, session_data: Option<Arc<Data>>) -> BoxStream<'static, async_graphql::Response> {
        let this = self.clone();
        futures::stream::once(async move {
            match this.principal().await {
                Ok((who, token)) => {
                    let request = request.data(who).data(WsCredential(token.clone()));
                    let stream = this.schema.execute_stream_with_session_data(request, session_data.unwrap_or_default());
                    // a subscription ends once the credential stops working
                    let state = this.state.clone();
                    let lost = async move { state.auth.access_lost(&token, |_| async { Ok(()) }).await };
                    stream.take_until(Box::pin(lost)).boxed()
                }
                Err(e) => futures::stream::once(async move { refused(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

/// `GET /graphql/ws`: graphql-transport-ws (or the older graphql-ws); the
/// `connection_init` payload must carry `{"token": "<bearer token>"}`.
pub async fn websocket(
    State(s): State<AppState>,
    Extension(schema): Extension<PinacleSchema>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let source = peer.map(|Extension(ConnectInfo(a))| a.ip().to_string());
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| serve(s, schema, protocol, source, socket))
}

async fn serve(state: AppState, schema: PinacleSchema, protocol: GraphQLProtocol, source: Option<String>, socket: WebSocket) {
    let token: Arc<OnceLock<Arc<str>>> = Arc::default();
    let signed_in = Arc::new(tokio::sync::Notify::new());
    let executor = Authenticated { state: state.clone(), schema, token: token.clone(), source };
    let (mut tx, rx) = socket.split();
    // A refused `connection_init` closes the socket with 4403 rather than
    // async-graphql's 1002, which graphql-ws clients never retry: they
    // reconnect with a refreshed token.
    let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let read_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reason = {
        let (init_state, init_token, init_signed_in, init_refused) = (state.clone(), token.clone(), signed_in.clone(), refused.clone());
        let sink = (&mut tx).with(|m: Message| {
            let m = match m {
                Message::Close(Some(f)) if f.code == CLOSE_PROTOCOL_ERROR && refused.load(std::sync::atomic::Ordering::Acquire) => {
                    Message::Close(Some(CloseFrame { code: CLOSE_FORBIDDEN, reason: f.reason }))
                }
                other => other,
            };
            std::future::ready(Ok::<_, axum::Error>(m))
        });
        // a read error (a message over MAX_WS_MESSAGE, a broken frame) ends
        // the input; the client is told why below
        let read_failed = read_failed.clone();
        let rx = rx.inspect(move |r| {
            if r.is_err() {
                read_failed.store(true, std::sync::atomic::Ordering::Release);
            }
        });
        let serve = GraphQLWebSocket::new_with_pair(sink, rx, executor, protocol)
            .on_connection_init(move |payload| async move {
                let presented = payload.get("token").and_then(|t| t.as_str()).ok_or_else(|| {
                    async_graphql::Error::new(r#"connection_init must carry {"token": "<access token>"}"#)
                })?;
                if let Err(e) = init_state.auth.principal_for_bearer(presented).await {
                    init_refused.store(true, std::sync::atomic::Ordering::Release);
                    return Err(async_graphql::Error::new(e.message));
                }
                let _ = init_token.set(Arc::from(presented));
                init_signed_in.notify_one();
                Ok(Data::default())
            })
            .serve();
        let watch = async {
            signed_in.notified().await;
            match token.get() {
                Some(t) => state.auth.access_lost(t, |_| async { Ok(()) }).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = serve => None,
            e = watch => Some(e),
        }
    };
    let frame = match reason {
        Some(e) => {
            tracing::info!(reason = %e.message, "closing a GraphQL WebSocket: its credential no longer works");
            CloseFrame { code: CLOSE_FORBIDDEN, reason: e.message.chars().take(100).collect::<String>().into() }
        }
        None if read_failed.load(std::sync::atomic::Ordering::Acquire) => {
            CloseFrame { code: CLOSE_TOO_BIG, reason: format!("messages are limited to {MAX_WS_MESSAGE} bytes").into() }
        }
        None => return,
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tx.send(Message::Close(Some(frame)))).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tx.close()).await;
}
