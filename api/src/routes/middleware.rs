//! The HTTP edge every `/api` request passes: who is calling
//! ([`require_principal`]), whether they may call again yet ([`limit`]),
//! and what every request counted ([`track`]).

use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ratelimit::{client_ip, ip_key};
use crate::{ApiError, AppState};

/// Middleware: resolves the bearer token to a [`Principal`] or answers 401.
pub async fn require_principal(State(state): State<AppState>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let token = bearer_of(req.headers())?;
    let mut principal = state.auth.principal_for_bearer(&token).await?;
    if let Some(axum::extract::ConnectInfo(peer)) = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        principal.source = peer.ip().to_string();
    }
    // GraphQL queries are POSTs too: its mutations check the scope themselves
    if !principal.scope.allows(req.method().as_str()) && req.uri().path() != "/graphql" {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this token is read-only; {} needs a token with scope full", req.method()),
        ));
    }
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

pub use crate::auth::{bearer_of, WS_BEARER_PROTOCOL_PREFIX};

/// Middleware for the API routes.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(limiter) = state.rate_limiter.as_ref() else { return next.run(req).await };
    let mut keys = Vec::with_capacity(2);
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>() {
        let forwarded = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
        keys.push(ip_key(client_ip(peer.ip(), forwarded, &state.trusted_proxies)));
    }
    if let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    {
        // keyed by the token's hash: the token itself is never kept
        keys.push(format!("key:{}", &crate::principal::hash_token(token.trim())[..16]));
    }
    // with Redis the buckets are the deployment's, shared by its servers
    let verdict = match state.bus.take_tokens(&keys, limiter.limits).await {
        Some(v) => v,
        None => limiter.check(&keys, Instant::now()),
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut resp = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {secs} s"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

/// Middleware counting requests and their latency by matched route.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Known methods only: a label per made-up method would grow forever.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m.to_owned(),
        _ => "other".to_owned(),
    };
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.http_requests
        .get_or_create(&crate::metrics::HttpLabels { method, route: route.clone(), status: resp.status().as_u16() })
        .inc();
    m.http_duration.get_or_create(&crate::metrics::RouteLabels { route }).observe(started.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_subprotocol_counts_only_on_a_websocket_upgrade() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, "pinacle.terminal, bearer.pnc_abc".parse().unwrap());
        assert!(bearer_of(&h).is_err(), "a plain request with the header");
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert_eq!(bearer_of(&h).unwrap(), "pnc_abc");
        h.insert(header::AUTHORIZATION, "Bearer pnc_header".parse().unwrap());
        assert_eq!(bearer_of(&h).unwrap(), "pnc_header", "the header wins");
        h.insert(header::AUTHORIZATION, "Basic x".parse().unwrap());
        assert!(bearer_of(&h).is_err());
    }
}
