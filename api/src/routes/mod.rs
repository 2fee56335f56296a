//! HTTP routes.

pub mod accounts;
pub mod admin;
pub mod github;
pub mod graphql;
pub mod audit;
pub mod health;
pub mod idempotency;
pub mod memory;
pub mod middleware;
pub mod pods;
pub mod supervise;
pub mod secrets;
pub mod teams;
pub mod tokens;

use axum::middleware as layer;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::{ApiError, AppState};

/// Largest accepted request body (JSON requests are small; uploads will
/// have their own routes).
pub const BODY_LIMIT: usize = 256 * 1024;

/// The whole HTTP surface: health and metrics open, everything under `/api`
/// behind [`middleware::require_principal`].
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/me", get(pods::me))
        .route("/templates", get(pods::templates))
        .route("/tiers", get(pods::tiers))
        .route("/config/validate", post(pods::validate_config))
        .route("/pods", get(pods::list).post(pods::create))
        .route("/pods/{pod}", get(pods::show).patch(pods::configure).delete(pods::delete))
        .route("/pods/{pod}/open", post(pods::open))
        .route("/pods/{pod}/start", post(pods::start))
        .route("/pods/{pod}/stop", post(pods::stop))
        .route("/pods/{pod}/exec", post(pods::exec))
        .route("/pods/{pod}/events", get(pods::events))
        .route("/pods/{pod}/logs", get(pods::logs))
        .route("/pods/{pod}/processes", get(supervise::processes))
        .route("/pods/{pod}/processes/{process}/logs", get(supervise::process_logs))
        .route("/pods/{pod}/ports", get(supervise::ports))
        .route("/pods/{pod}/files", get(supervise::list_files))
        .route(
            "/pods/{pod}/files/content",
            get(supervise::read_file)
                .put(supervise::write_file)
                .layer(axum::extract::DefaultBodyLimit::max(supervise::MAX_FILE_BYTES)),
        )
        .route("/pods/{pod}/terminal", get(supervise::terminal))
        .route("/pods/{pod}/snapshots", get(pods::snapshots).post(pods::create_snapshot))
        .route("/pods/{pod}/snapshots/{snapshot}", delete(pods::delete_snapshot))
        .route("/pods/{pod}/snapshots/{snapshot}/restore", post(pods::restore_snapshot))
        .route("/pods/{pod}/ssh-certificate", post(accounts::ssh_certificate))
        .route("/pods/{pod}/ssh-key", get(accounts::pod_ssh_key))
        .route("/pods/{pod}/rotate-keys", post(accounts::rotate_pod_keys))
        .route("/ssh", get(accounts::ssh_info))
        .route("/ssh-keys", get(accounts::list_ssh_keys).post(accounts::add_ssh_key))
        .route("/ssh-keys/challenge", post(accounts::ssh_key_challenge))
        .route("/ssh-keys/{id}", delete(accounts::delete_ssh_key))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}", delete(tokens::revoke))
        .route("/auth/logout", post(accounts::logout))
        .route("/auth/device/approve", post(accounts::device_approve))
        .route("/teams", get(teams::list).post(teams::create))
        .route("/teams/{team}", get(teams::show).delete(teams::delete))
        .route("/teams/{team}/members", post(teams::add_member))
        .route("/teams/{team}/members/{user}", axum::routing::patch(teams::set_role).delete(teams::remove_member))
        .route("/invites", post(teams::create_invite))
        .route("/invites/accept", post(teams::accept_invite))
        .route("/secrets", get(secrets::list))
        .route("/secrets/{name}", put(secrets::set).delete(secrets::delete))
        .route("/memory/tokens", post(memory::token))
        .route("/audit", get(audit::list))
        .route("/audit/verify", get(audit::verify))
        .route("/audit/anchor", post(audit::anchor))
        .route("/admin/settings", get(admin::settings).patch(admin::update_settings))
        .route("/admin/signing-keys/rotate", post(admin::rotate_signing_key))
        .route("/admin/images", get(admin::images))
        .route("/admin/images/gc", post(admin::images_gc))
        .route("/admin/hosts", get(admin::hosts).post(admin::add_host))
        .route("/admin/host-tokens", post(admin::add_host_token))
        .route("/admin/hosts/{id}", axum::routing::delete(admin::remove_host))
        .route("/admin/hosts/{id}/cordon", post(admin::cordon_host))
        .route("/admin/hosts/{id}/uncordon", post(admin::uncordon_host))
        .route("/admin/hosts/{id}/drain", post(admin::drain_host))
        .route("/github/repositories", get(github::repositories))
        .route("/github/repositories/{owner}/{repo}/branches", get(github::branches))
        .route("/admin/github/installations", get(github::installations))
        .route("/admin/github/manifest", post(github::manifest))
        .route("/admin/github/redeliver", post(github::redeliver))
        .route("/admin/github/deliveries", get(github::deliveries))
        .route("/admin/github/repositories/{owner}/{repo}/previews", put(github::set_previews))
        // inner: runs after authentication, which wraps it
        .route_layer(layer::from_fn_with_state(state.clone(), idempotency::layer))
        .route_layer(layer::from_fn_with_state(state.clone(), middleware::require_principal));
    // Rate limits cover the API, not health checks and metrics scrapes.
    let schema = crate::graphql::schema(state.clone());
    let graphql = Router::new()
        .route("/graphql", post(graphql::http))
        .route_layer(layer::from_fn_with_state(state.clone(), middleware::require_principal))
        // authenticated by its connection_init payload
        .route("/graphql/ws", get(graphql::websocket))
        .layer(axum::Extension(schema));
    let limited = Router::new()
        .route("/api/v1/auth/providers", get(accounts::providers))
        .route("/api/v1/auth/signup", post(accounts::signup))
        .route("/api/v1/auth/login", post(accounts::login))
        .route("/api/v1/auth/refresh", post(accounts::refresh))
        .route("/api/v1/auth/device", post(accounts::device_start))
        .route("/api/v1/auth/device/token", post(accounts::device_token))
        .route("/api/v1/auth/github/start", get(accounts::github_start))
        .route("/api/v1/auth/github/callback", get(accounts::github_callback))
        .route("/api/v1/github/status", get(github::status))
        .route("/api/v1/github/manifest/callback", get(github::manifest_callback))
        // hosts' agents: their own credentials, not a user's
        .route("/api/v1/agents/join", post(admin::join_host))
        .route("/api/v1/agents/me", get(admin::agent_me))
        .nest("/api/v1", api)
        // memory tokens, not the platform's: checked by the memory API
        .nest("/api/v1/memory", memory::router(&state))
        // the AI router: OpenAI-compatible `/v1/…`, tasks, `/router/…`;
        // callers checked by `crate::aion_access::AionAccess`
        .merge(pinacle_aion::http::router(pinacle_aion::http::AionApi {
            aion: state.aion.clone(),
            verifier: std::sync::Arc::new(state.aion_access.clone()),
            auditor: std::sync::Arc::new(state.aion_access.clone()),
        }))
        .merge(graphql)
        .route_layer(layer::from_fn_with_state(state.clone(), middleware::limit));
    Router::new()
        // hosts' links and servers' relays: long-lived, authenticated by
        // their own credentials, never counted against a client's limit
        // (a reconnect storm after a server dies must not be refused)
        .route("/api/v1/agents/connect", get(admin::agent_connect))
        // GitHub's deliveries: signed, come in bursts from GitHub's few
        // addresses (never limited per client), at most 10 MiB
        .route("/api/v1/github/webhook", post(github::webhook))
        .route("/api/v1/internal/hosts/{id}/relay", get(admin::relay_host))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/.well-known/jwks.json", get(accounts::jwks))
        .route("/api/v1/schemas/pinacle.json", get(pods::schema))
        .merge(limited)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(layer::from_fn_with_state(state.clone(), middleware::track))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Unrouted requests: the web app's files and pages, else 404.
async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    crate::web_assets::serve(&method, &uri).unwrap_or_else(|| ApiError::not_found(format!("no route for {}", uri.path())).into_response())
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
