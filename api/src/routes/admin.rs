//! `/api/v1/admin/*`: instance settings, signing keys, images and hosts
//! (administrator).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use crate::principal::Principal;
use crate::error::{ApiJson, ApiPath};
use crate::policy::{Action, Resource};
use crate::settings::{Settings, SettingsUpdate};
use crate::{ApiError, AppState};

pub async fn settings(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<Settings>, ApiError> {
    Ok(Json(s.settings.show(&who).await?))
}

pub async fn update_settings(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(req): ApiJson<SettingsUpdate>,
) -> Result<Json<Settings>, ApiError> {
    Ok(Json(s.settings.update(&who, req).await?))
}

/// `POST /api/v1/admin/signing-keys/rotate`: a new key signs from now on;
/// tokens signed by the old one stay valid until they expire.
pub async fn rotate_signing_key(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.authorize(Action::Configure, &Resource::Instance, "signing keys")?;
    let kid = s.sessions.rotate_signing_key(Some(&who)).await?;
    Ok(Json(serde_json::json!({ "kid": kid })))
}

/// A pulled image on the server's own host, and how many live pods use it.
#[derive(Debug, serde::Serialize)]
pub struct RegistryImageView {
    pub pinned: String,
    pub references: Vec<String>,
    pub digest: String,
    pub size_bytes: u64,
    pub pulled_at: chrono::DateTime<chrono::Utc>,
    pub pods: usize,
}

/// `GET /api/v1/admin/images`: images pulled from registries on this
/// server's host, with the number of live pods pinned to each.
pub async fn images(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<Vec<RegistryImageView>>, ApiError> {
    who.authorize(Action::Configure, &Resource::Instance, "images")?;
    let hosts = s.hosts.all();
    if hosts.is_empty() {
        return Err(ApiError::not_supported("this server reaches no host"));
    }
    let used = registry_images_in_use(&s).await?;
    let mut out = Vec::new();
    for host in hosts {
        let list = host.stored_images().await.map_err(crate::hosts::host_error)?;
        out.extend(list.into_iter().map(|i| RegistryImageView {
            pods: used.iter().filter(|d| d.to_string() == i.digest).count(),
            pinned: i.pinned,
            references: i.references,
            digest: i.digest,
            size_bytes: i.size_bytes,
            pulled_at: i.pulled_at,
        }));
    }
    Ok(Json(out))
}

/// `POST /api/v1/admin/images/gc`: removes pulled images no live pod is
/// pinned to, and the layers only they held; audited.
pub async fn images_gc(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<serde_json::Value>, ApiError> {
    who.authorize(Action::Configure, &Resource::Instance, "images")?;
    let hosts = s.hosts.all();
    if hosts.is_empty() {
        return Err(ApiError::not_supported("this server reaches no host"));
    }
    let keep: Vec<String> = registry_images_in_use(&s).await?.iter().map(ToString::to_string).collect();
    let mut report = pinacle_host_api::ImageGcReport::default();
    for host in hosts {
        let r = host.gc_images(&keep).await.map_err(crate::hosts::host_error)?;
        report.removed_images.extend(r.removed_images);
        report.removed_blobs += r.removed_blobs;
        report.freed_bytes += r.freed_bytes;
    }
    let summary = format!("{} image(s), {} layer(s), {} bytes", report.removed_images.len(), report.removed_blobs, report.freed_bytes);
    s.audit.record(&who, "images.gc", &summary).await?;
    Ok(Json(serde_json::json!({
        "removed_images": report.removed_images,
        "removed_blobs": report.removed_blobs,
        "freed_bytes": report.freed_bytes,
    })))
}

/// Manifest digests of the registry images live (not deleted) pods are
/// pinned to, one entry per pod.
async fn registry_images_in_use(s: &AppState) -> Result<Vec<pinacle_oci::Digest>, ApiError> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let pods = crate::entities::pod::Entity::find()
        .filter(crate::entities::pod::Column::State.ne(pinacle_orchestrator::PodState::Deleted.as_str()))
        .all(&s.db)
        .await?;
    Ok(pods
        .iter()
        .filter_map(|p| pinacle_oci::Reference::parse(&p.image).ok())
        .filter_map(|r| r.digest().cloned())
        .collect())
}

/// `GET /api/v1/admin/hosts`: every host, its status and what it holds.
pub async fn hosts(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<Vec<crate::hosts::HostView>>, ApiError> {
    Ok(Json(s.host_registry.list_hosts(&who).await?))
}

/// `POST /api/v1/admin/hosts/{id}/cordon`: no new pods on the host.
pub async fn cordon_host(State(s): State<AppState>, Extension(who): Extension<Principal>, ApiPath(id): ApiPath<String>) -> Result<Json<crate::hosts::HostView>, ApiError> {
    Ok(Json(s.host_registry.cordon_host(&who, &id, true).await?))
}

/// `POST /api/v1/admin/hosts/{id}/uncordon`: new pods again.
pub async fn uncordon_host(State(s): State<AppState>, Extension(who): Extension<Principal>, ApiPath(id): ApiPath<String>) -> Result<Json<crate::hosts::HostView>, ApiError> {
    Ok(Json(s.host_registry.cordon_host(&who, &id, false).await?))
}

/// `POST /api/v1/admin/hosts/{id}/drain`: cordon, and stop its pods.
pub async fn drain_host(State(s): State<AppState>, Extension(who): Extension<Principal>, ApiPath(id): ApiPath<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let (host, stopped, not_stopped) = s.host_registry.drain_host(&who, &id).await?;
    Ok(Json(serde_json::json!({ "host": host, "stopping": stopped, "not_stopped": not_stopped })))
}

/// `DELETE /api/v1/admin/hosts/{id}`: forget a host that holds no pods.
pub async fn remove_host(State(s): State<AppState>, Extension(who): Extension<Principal>, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    s.host_registry.remove_host(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/admin/hosts` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddHost {
    pub name: String,
}

/// `POST /api/v1/admin/hosts`: adds a host and issues its one-time join
/// token (201; shown once).
pub async fn add_host(State(s): State<AppState>, Extension(who): Extension<Principal>, ApiJson(req): ApiJson<AddHost>) -> Result<(StatusCode, Json<crate::hosts::HostJoin>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.host_registry.add_host(&who, &req.name).await?)))
}

/// `POST /api/v1/admin/host-tokens` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddHostToken {
    /// Seconds the token stays valid (60 to 365 days; default 30 days).
    #[serde(default = "default_pool_ttl")]
    pub expires_in_seconds: i64,
}

fn default_pool_ttl() -> i64 {
    30 * 86_400
}

/// `POST /api/v1/admin/host-tokens`: a reusable join token (201; shown
/// once); each agent joining with it names its host.
pub async fn add_host_token(State(s): State<AppState>, Extension(who): Extension<Principal>, ApiJson(req): ApiJson<AddHostToken>) -> Result<(StatusCode, Json<crate::hosts::HostJoin>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.host_registry.add_host_pool_token(&who, req.expires_in_seconds).await?)))
}

/// `POST /api/v1/agents/join` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinHost {
    pub token: String,
    /// The host's name, for a reusable token (must match a one-time
    /// token's host when given).
    #[serde(default)]
    pub host: Option<String>,
}

/// `POST /api/v1/agents/join` (no user credential): a host's agent
/// exchanges its one-time join token for its credential.
pub async fn join_host(State(s): State<AppState>, ApiJson(req): ApiJson<JoinHost>) -> Result<Json<crate::hosts::HostCredential>, ApiError> {
    Ok(Json(s.host_registry.join_host(&req.token, req.host.as_deref()).await?))
}

/// `GET /api/v1/agents/me` with `Authorization: Bearer pnh_…`: which host
/// the credential is (401 once the host is removed).
pub async fn agent_me(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let secret = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let host = s.host_registry.authenticate_host(secret.trim()).await?;
    Ok(Json(serde_json::json!({ "host": host, "protocol_version": pinacle_host_api::PROTOCOL_VERSION })))
}

/// `GET /api/v1/agents/connect?v=1` with `Authorization: Bearer pnh_…` and
/// `Upgrade: pinacle-host/1`: a host's agent opens its link (see
/// `pinacle_host_link`). 101 and the link, or 401 for an unknown or
/// revoked credential, 426 without the upgrade, 400 for another protocol
/// version.
pub async fn agent_connect(State(s): State<AppState>, mut req: axum::extract::Request) -> Result<axum::response::Response, ApiError> {
    let secret = presented_bearer(req.headers());
    let host = s.host_registry.authenticate_host(&secret).await?;
    let secret_hash = crate::principal::hash_token(&secret);
    let upgrade = req.headers().get(axum::http::header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case(pinacle_host_link::UPGRADE) {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            format!("a host link is opened with `Connection: upgrade` and `Upgrade: {}` (pinacle agent --server URL)", pinacle_host_link::UPGRADE),
        ));
    }
    let version = req.uri().query().and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "v").map(|(_, v)| v.into_owned()));
    if version.as_deref() != Some(&pinacle_host_api::PROTOCOL_VERSION.to_string()) {
        return Err(ApiError::bad_request(
            "unsupported_protocol",
            format!(
                "this control plane speaks host protocol {}; the agent asked for {} (run the same Pinacle version on both)",
                pinacle_host_api::PROTOCOL_VERSION,
                version.as_deref().unwrap_or("none")
            ),
        ));
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ApiError::bad_request("upgrade_required", "this connection cannot be upgraded (HTTP/1.1 is needed)"));
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => s.host_registry.run_host_link(host, secret_hash, hyper_util::rt::TokioIo::new(upgraded)).await,
            Err(e) => tracing::warn!(host = %host, error = %e, "host link upgrade failed"),
        }
    });
    switching_protocols()
}

/// `GET /api/v1/internal/hosts/{id}/relay?v=1` from another API server of
/// the same database (`Authorization: Bearer` the relay credential derived
/// from the master key, `Upgrade: pinacle-host/1`): the link of host `id`,
/// which ends at this server, relayed to it. 401 for any other caller, 404
/// when the link does not end here.
pub async fn relay_host(State(s): State<AppState>, ApiPath(id): ApiPath<String>, mut req: axum::extract::Request) -> Result<axum::response::Response, ApiError> {
    let presented = presented_bearer(req.headers());
    if !s.links.is_peer(&presented) {
        return Err(ApiError { code: "invalid_peer_credential", ..ApiError::unauthorized("not a server of this deployment") });
    }
    let upgrade = req.headers().get(axum::http::header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case(pinacle_host_link::UPGRADE) {
        return Err(ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", format!("a relayed link needs `Upgrade: {}`", pinacle_host_link::UPGRADE)));
    }
    let link = s.links.relayable(&id)?;
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ApiError::bad_request("upgrade_required", "this connection cannot be upgraded (HTTP/1.1 is needed)"));
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(e) => {
                tracing::warn!(host = %id, error = %e, "relay upgrade failed");
                return;
            }
        };
        let (report_link, watched) = (link.clone(), link.clone());
        let side = pinacle_host_link::agent::AgentSide {
            host: std::sync::Arc::new(link),
            control: pinacle_host_link::agent::LinkControl::new(std::time::Duration::ZERO),
            report: std::sync::Arc::new(move || report_link.last_report().unwrap_or_default()),
            // only the server holding the link renews the host's credential
            credential: pinacle_host_link::agent::Credential::new(
                String::new(),
                std::sync::Arc::new(|_: &str| Err(std::io::Error::other("a relayed link does not hold the host's credential"))),
            ),
        };
        // the relay ends with the link it relays (an agent that reconnects
        // gets a new one, which the other server relays anew)
        tokio::select! {
            r = pinacle_host_link::agent::serve(upgraded, side) => if let Err(e) = r {
                tracing::debug!(host = %id, error = %e, "relayed link ended");
            },
            _ = watched.closed() => tracing::debug!(host = %id, "the relayed link closed"),
        }
    });
    switching_protocols()
}

/// The `Authorization: Bearer` value of a host's or server's request (empty
/// when there is none: refused by the credential check that follows).
fn presented_bearer(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// 101: the connection becomes a host link.
fn switching_protocols() -> Result<axum::response::Response, ApiError> {
    axum::response::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(axum::http::header::CONNECTION, "upgrade")
        .header(axum::http::header::UPGRADE, pinacle_host_link::UPGRADE)
        .body(axum::body::Body::empty())
        .map_err(ApiError::internal)
}
