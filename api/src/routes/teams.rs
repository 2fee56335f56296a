//! `/api/v1/teams`, `/api/v1/invites`: teams, members and invitations.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;

use crate::principal::Principal;
use crate::error::{ApiJson, ApiPath};
use crate::teams::{AddMemberRequest, CreateInviteRequest, CreateTeamRequest, InviteView, MemberView, SetRoleRequest, TeamView};
use crate::{ApiError, AppState};

pub async fn create(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(req): ApiJson<CreateTeamRequest>,
) -> Result<(StatusCode, Json<TeamView>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.teams.create_team(&who, req).await?)))
}

pub async fn list(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(serde_json::json!({ "teams": s.teams.list_teams(&who).await? })))
}

pub async fn show(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(team): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (t, members) = s.teams.show_team(&who, &team).await?;
    let mut body = serde_json::to_value(t).map_err(ApiError::internal)?;
    body["members"] = serde_json::to_value(members).map_err(ApiError::internal)?;
    Ok(Json(body))
}

pub async fn delete(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(team): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    s.teams.delete_team(&who, &team).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_member(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(team): ApiPath<String>,
    ApiJson(req): ApiJson<AddMemberRequest>,
) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.teams.add_member(&who, &team, req).await?)))
}

pub async fn set_role(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath((team, user)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<SetRoleRequest>,
) -> Result<Json<MemberView>, ApiError> {
    Ok(Json(s.teams.set_member_role(&who, &team, &user, req.role).await?))
}

pub async fn remove_member(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath((team, user)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.teams.remove_member(&who, &team, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_invite(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(req): ApiJson<CreateInviteRequest>,
) -> Result<(StatusCode, Json<InviteView>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.teams.create_invite(&who, req).await?)))
}

/// `POST /api/v1/invites/accept` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvite {
    pub code: String,
}

pub async fn accept_invite(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(req): ApiJson<AcceptInvite>,
) -> Result<Json<TeamView>, ApiError> {
    Ok(Json(s.teams.accept_invite(&who, &req.code).await?))
}
