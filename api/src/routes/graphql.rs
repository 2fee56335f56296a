//! `/graphql` (queries and mutations) and `/graphql/ws` (subscriptions).

use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use crate::auth::Principal;
use crate::graphql::PinacleSchema;
use crate::AppState;

/// `POST /graphql`, behind [`crate::auth::require_principal`].
pub async fn http(
    Extension(schema): Extension<PinacleSchema>,
    Extension(who): Extension<Principal>,
    req: GraphQLRequest,
) -> GraphQLResponse {
    schema.execute(req.into_inner().data(who)).await.into()
}

/// `GET /graphql/ws`: graphql-transport-ws (or the older graphql-ws); the
/// `connection_init` payload must carry `{"token": "<bearer token>"}`.
pub async fn websocket(
    State(s): State<AppState>,
    Extension(schema): Extension<PinacleSchema>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let token = payload
                        .get("token")
                        .and_then(|t| t.as_str())
                        .ok_or_else(|| {
                            async_graphql::Error::new(
                                r#"connection_init must carry {"token": "<access token>"}"#,
                            )
                        })?;
                    let who = s
                        .principal_for_bearer(token)
                        .await
                        .map_err(|e| async_graphql::Error::new(e.message))?;
                    let mut data = Data::default();
                    data.insert(who);
                    Ok(data)
                })
                .serve()
        })
}
