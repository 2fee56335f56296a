//! Teams, members and invitations. Team names share the user-name space
//! (both become parts of pod host names), so a team cannot take a user's
//! name or the reverse. Every team keeps at least one owner.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set, SqlErr, TransactionTrait,
};
use serde::{Deserialize, Serialize};

use crate::principal::{hash_token, Principal};
use crate::entities::{invite, pod, team, team_member, user};
use crate::policy::{Action, Resource, Role};
use crate::ApiError;

/// Prefix of invitation codes.
pub const INVITE_PREFIX: &str = "pni_";

/// Default and longest lifetime of an invitation.
pub const INVITE_DEFAULT_SECS: i64 = 7 * 24 * 3600;
pub const INVITE_MAX_SECS: i64 = 30 * 24 * 3600;

/// A team as its members see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeamView {
    pub id: String,
    pub name: String,
    /// The caller's role.
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// One member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    pub user_id: String,
    pub name: String,
    pub role: Role,
    pub since: DateTime<Utc>,
}

/// `POST /api/v1/teams`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTeamRequest {
    pub name: String,
}

/// `POST /api/v1/teams/{team}/members`: add an existing user directly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub user: String,
    pub role: Role,
}

/// `PATCH /api/v1/teams/{team}/members/{user}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRoleRequest {
    pub role: Role,
}

/// `POST /api/v1/invites`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInviteRequest {
    /// Team to join; none: an invitation to sign up only (administrator).
    #[serde(default)]
    pub team: Option<String>,
    /// Role in the team (default member).
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
}

/// An invitation as answered once, with its code.
#[derive(Debug, Clone, Serialize)]
pub struct InviteView {
    pub id: String,
    pub code: String,
    pub team: Option<String>,
    pub role: Option<Role>,
    pub expires_at: DateTime<Utc>,
}

/// The member named (or with the user id) `member`, else "not found".
fn find_member<'a>(members: &'a [MemberView], member: &str, team: &str) -> Result<&'a MemberView, ApiError> {
    members
        .iter()
        .find(|m| m.name == member || m.user_id == member)
        .ok_or_else(|| ApiError::not_found(format!("{member} is not in team {team}")))
}

fn team_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("team {name} not found"))
}

/// Teams as a service: teams, members and their roles, invitations.
#[derive(Clone)]
pub struct Teams {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Cleared by every membership change: roles take effect at once.
    principals: std::sync::Arc<crate::tokens::PrincipalCache>,
}

impl Teams {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
        principals: std::sync::Arc<crate::tokens::PrincipalCache>,
    ) -> Self {
        Self { db, write_lock, principals }
    }

    /// Whether `name` is not free as a user or team name: another user or
    /// team has it, or its host names could be confused with theirs: it
    /// ends with a dash and an existing name, or an existing name ends with
    /// a dash and it (pod hosts are `{pod}-{owner}`, and names hold
    /// dashes). As no owner name is such a suffix of another, two route
    /// keys can only conflict between one owner's own pods, so creating a
    /// pod never tells anyone whether another tenant's pod exists.
    pub(crate) async fn account_name_taken<C: ConnectionTrait>(&self, db: &C, name: &str) -> Result<bool, ApiError> {
        let suffixes: Vec<String> = name.match_indices('-').map(|(i, _)| name[i + 1..].to_owned()).filter(|s| !s.is_empty()).collect();
        fn near<C: ColumnTrait>(column: C, name: &str, suffixes: &[String]) -> sea_orm::Condition {
            sea_orm::Condition::any()
                .add(column.eq(name))
                .add(column.is_in(suffixes.iter().cloned()))
                .add(column.like(format!("%-{name}")))
        }
        Ok(user::Entity::find().filter(near(user::Column::Name, name, &suffixes)).one(db).await?.is_some()
            || team::Entity::find().filter(near(team::Column::Name, name, &suffixes)).one(db).await?.is_some())
    }

    /// A team's name by id (for showing, after the caller's right to see
    /// the thing that names it was checked).
    pub async fn team_name(&self, id: &str) -> Result<Option<String>, ApiError> {
        Ok(team::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(|t| t.name))
    }

    /// `user`'s role in team `team` now; `None` when not a member.
    pub async fn member_role(&self, team: &str, user: &str) -> Result<Option<Role>, ApiError> {
        let row = team_member::Entity::find_by_id((team.to_owned(), user.to_owned())).one(&self.db).await?;
        Ok(row.and_then(|m| m.role.parse().ok()))
    }

    /// A team by name or id, if the caller may `action` it.
    pub async fn find_team(&self, who: &Principal, key: &str, action: Action) -> Result<team::Model, ApiError> {
        let t = team::Entity::find()
            .filter(sea_orm::Condition::any().add(team::Column::Name.eq(key)).add(team::Column::Id.eq(key)))
            .one(&self.db)
            .await?
            .ok_or_else(|| team_not_found(key))?;
        who.authorize(action, &Resource::Team { team: &t.id }, &format!("team {key}"))?;
        Ok(t)
    }

    /// Creates a team with the caller as its owner.
    pub async fn create_team(&self, who: &Principal, req: CreateTeamRequest) -> Result<TeamView, ApiError> {
        crate::principal::check_user_name(&req.name)
            .map_err(|m| ApiError::bad_request("invalid_name", m.replace("user name", "team name")))?;
        who.authorize(Action::Create, &Resource::Account { user: &who.user_id }, "account")?;
        let now = Utc::now();
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        if self.account_name_taken(&txn, &req.name).await? {
            return Err(ApiError::conflict(
                "name_taken",
                format!("the name {} is taken by a user or team, or too close to one for unambiguous host names", req.name),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let t = team::ActiveModel { id: Set(id.clone()), name: Set(req.name.clone()), created_at: Set(now) }
            .insert(&txn)
            .await
            .map_err(|e| match e.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => {
                    ApiError::conflict("name_taken", format!("the name {} is taken", req.name))
                }
                _ => e.into(),
            })?;
        team_member::ActiveModel {
            team_id: Set(id.clone()),
            user_id: Set(who.user_id.clone()),
            role: Set(Role::Owner.as_str().to_owned()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        crate::audit::append(&txn, who, "team.create", &format!("team:{id} ({})", req.name)).await?;
        txn.commit().await?;
        self.principals.clear();
        Ok(TeamView { id: t.id, name: t.name, role: Role::Owner, created_at: t.created_at })
    }

    /// The caller's teams.
    pub async fn list_teams(&self, who: &Principal) -> Result<Vec<TeamView>, ApiError> {
        let ids: Vec<String> = who.teams.keys().cloned().collect();
        let teams = team::Entity::find().filter(team::Column::Id.is_in(ids)).order_by_asc(team::Column::Name).all(&self.db).await?;
        Ok(teams
            .into_iter()
            .filter(|t| who.authorize(Action::Read, &Resource::Team { team: &t.id }, "team").is_ok())
            .filter_map(|t| {
                let role = *who.teams.get(&t.id)?;
                Some(TeamView { id: t.id, name: t.name, role, created_at: t.created_at })
            })
            .collect())
    }

    /// A team and its members.
    pub async fn show_team(&self, who: &Principal, key: &str) -> Result<(TeamView, Vec<MemberView>), ApiError> {
        let t = self.find_team(who, key, Action::Read).await?;
        let members = self.members(&self.db, &t.id).await?;
        let role = who.teams.get(&t.id).copied().unwrap_or(Role::Viewer);
        Ok((TeamView { id: t.id, name: t.name, role, created_at: t.created_at }, members))
    }

    async fn members<C: ConnectionTrait>(&self, db: &C, team_id: &str) -> Result<Vec<MemberView>, ApiError> {
        let rows = team_member::Entity::find()
            .filter(team_member::Column::TeamId.eq(team_id))
            .order_by_asc(team_member::Column::CreatedAt)
            .all(db)
            .await?;
        let ids: Vec<String> = rows.iter().map(|m| m.user_id.clone()).collect();
        let users = user::Entity::find().filter(user::Column::Id.is_in(ids)).all(db).await?;
        Ok(rows
            .into_iter()
            .filter_map(|m| {
                let u = users.iter().find(|u| u.id == m.user_id)?;
                Some(MemberView { user_id: m.user_id, name: u.name.clone(), role: m.role.parse().ok()?, since: m.created_at })
            })
            .collect())
    }

    /// Deletes a team (owners only) once it has no live pods.
    pub async fn delete_team(&self, who: &Principal, key: &str) -> Result<(), ApiError> {
        let t = self.find_team(who, key, Action::Delete).await?;
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let live = pod::Entity::find()
            .filter(pod::Column::TeamId.eq(t.id.clone()))
            .filter(pod::Column::State.ne(pinacle_orchestrator::PodState::Deleted.as_str()))
            .one(&txn)
            .await?;
        if let Some(p) = live {
            return Err(ApiError::conflict(
                "team_has_pods",
                format!("team {} still has pods (e.g. {}); delete them first", t.name, p.name),
            ));
        }
        crate::secrets::delete_scope(&txn, "team", &t.id).await?;
        team::Entity::delete_by_id(t.id.clone()).exec(&txn).await?;
        crate::audit::append(&txn, who, "team.delete", &format!("team:{} ({})", t.id, t.name)).await?;
        txn.commit().await?;
        self.principals.clear();
        Ok(())
    }

    /// Adds an existing user to a team. Admins add up to admin; owners
    /// appoint owners.
    pub async fn add_member(&self, who: &Principal, key: &str, req: AddMemberRequest) -> Result<MemberView, ApiError> {
        let action = if req.role == Role::Owner { Action::ManageOwners } else { Action::ManageMembers };
        let t = self.find_team(who, key, action).await?;
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let u = user::Entity::find()
            .filter(user::Column::Name.eq(req.user.clone()))
            .one(&txn)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("user {} not found", req.user)))?;
        let now = Utc::now();
        let inserted = team_member::ActiveModel {
            team_id: Set(t.id.clone()),
            user_id: Set(u.id.clone()),
            role: Set(req.role.as_str().to_owned()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                return Err(ApiError::conflict(
                    "already_member",
                    format!("{} is already in team {}; change the role with PATCH", u.name, t.name),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        crate::audit::append(&txn, who, "team.member.add", &format!("team:{} user:{} role:{}", t.id, u.id, req.role)).await?;
        txn.commit().await?;
        self.principals.clear();
        Ok(MemberView { user_id: u.id, name: u.name, role: req.role, since: now })
    }

    /// Changes a member's role; a team never loses its last owner.
    pub async fn set_member_role(&self, who: &Principal, key: &str, member: &str, role: Role) -> Result<MemberView, ApiError> {
        let t = self.find_team(who, key, Action::ManageMembers).await?;
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let members = self.members(&txn, &t.id).await?;
        let m = find_member(&members, member, &t.name)?;
        who.authorize(Action::Configure, &Resource::Membership { team: &t.id, user: &m.user_id, role: m.role }, "member")?;
        if role == Role::Owner {
            who.authorize(Action::ManageOwners, &Resource::Team { team: &t.id }, "team")?;
        }
        if m.role == Role::Owner && role != Role::Owner && members.iter().filter(|m| m.role == Role::Owner).count() == 1 {
            return Err(ApiError::conflict("last_owner", format!("{} is the last owner of {}; appoint another owner first", m.name, t.name)));
        }
        team_member::Entity::update_many()
            .col_expr(team_member::Column::Role, sea_orm::sea_query::Expr::value(role.as_str()))
            .filter(team_member::Column::TeamId.eq(t.id.clone()))
            .filter(team_member::Column::UserId.eq(m.user_id.clone()))
            .exec(&txn)
            .await?;
        crate::audit::append(&txn, who, "team.member.role", &format!("team:{} user:{} role:{role}", t.id, m.user_id)).await?;
        txn.commit().await?;
        self.principals.clear();
        Ok(MemberView { role, ..m.clone() })
    }

    /// Removes a member (admins; owners for owners). Anyone may leave.
    pub async fn remove_member(&self, who: &Principal, key: &str, member: &str) -> Result<(), ApiError> {
        let t = self.find_team(who, key, Action::Read).await?;
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let members = self.members(&txn, &t.id).await?;
        let m = find_member(&members, member, &t.name)?;
        who.authorize(Action::Delete, &Resource::Membership { team: &t.id, user: &m.user_id, role: m.role }, "member")?;
        if m.role == Role::Owner && members.iter().filter(|m| m.role == Role::Owner).count() == 1 {
            return Err(ApiError::conflict("last_owner", format!("{} is the last owner of {}; appoint another owner or delete the team", m.name, t.name)));
        }
        team_member::Entity::delete_many()
            .filter(team_member::Column::TeamId.eq(t.id.clone()))
            .filter(team_member::Column::UserId.eq(m.user_id.clone()))
            .exec(&txn)
            .await?;
        crate::audit::append(&txn, who, "team.member.remove", &format!("team:{} user:{}", t.id, m.user_id)).await?;
        txn.commit().await?;
        self.principals.clear();
        Ok(())
    }

    /// Creates an invitation: to a team (its admins), or to sign up only
    /// (the instance administrator).
    pub async fn create_invite(&self, who: &Principal, req: CreateInviteRequest) -> Result<InviteView, ApiError> {
        let secs = req.expires_in_seconds.unwrap_or(INVITE_DEFAULT_SECS);
        if !(60..=INVITE_MAX_SECS).contains(&secs) {
            return Err(ApiError::bad_request(
                "invalid_expiry",
                format!("expires_in_seconds is {secs}; use 60 to {INVITE_MAX_SECS} (30 days)"),
            ));
        }
        let (team, role) = match &req.team {
            Some(name) => {
                let role = req.role.unwrap_or(Role::Member);
                let action = if role == Role::Owner { Action::ManageOwners } else { Action::ManageMembers };
                (Some(self.find_team(who, name, action).await?), Some(role))
            }
            None => {
                if req.role.is_some() {
                    return Err(ApiError::bad_request("invalid_request", "role needs a team"));
                }
                who.authorize(Action::Create, &Resource::Instance, "instance")?;
                (None, None)
            }
        };
        let code = crate::principal::random_secret(INVITE_PREFIX);
        let now = Utc::now();
        let id = uuid::Uuid::new_v4().to_string();
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let m = invite::ActiveModel {
            id: Set(id.clone()),
            code_hash: Set(hash_token(&code)),
            team_id: Set(team.as_ref().map(|t| t.id.clone())),
            role: Set(role.map(|r| r.as_str().to_owned())),
            created_by: Set(who.user_id.clone()),
            created_at: Set(now),
            expires_at: Set(now + Duration::seconds(secs)),
            used_by: Set(None),
            used_at: Set(None),
        }
        .insert(&txn)
        .await?;
        let target = match &team {
            Some(t) => format!("invite:{id} team:{} role:{}", t.id, role.map(Role::as_str).unwrap_or("member")),
            None => format!("invite:{id} signup"),
        };
        crate::audit::append(&txn, who, "invite.create", &target).await?;
        txn.commit().await?;
        Ok(InviteView { id, code, team: team.map(|t| t.name), role, expires_at: m.expires_at })
    }

    /// Whether the unused, unexpired invitation `code` may create an account
    /// when sign-up is invite-only: a sign-up invitation (only the instance
    /// administrator makes those), or a team invitation the administrator
    /// made. A team invitation any team admin made does not, so team admins
    /// cannot open an invite-only server to anyone. `None`: no such
    /// invitation.
    pub(crate) async fn invite_admits_new_account<C: ConnectionTrait>(&self, txn: &C, code: &str) -> Result<Option<bool>, ApiError> {
        if !code.starts_with(INVITE_PREFIX) || code.len() > 200 {
            return Ok(None);
        }
        let now = Utc::now();
        let Some(inv) = invite::Entity::find()
            .filter(invite::Column::CodeHash.eq(hash_token(code)))
            .one(txn)
            .await?
            .filter(|i| i.used_at.is_none() && i.expires_at > now)
        else {
            return Ok(None);
        };
        if inv.team_id.is_none() {
            return Ok(Some(true));
        }
        let maker = user::Entity::find_by_id(inv.created_by.clone()).one(txn).await?;
        Ok(Some(maker.is_some_and(|u| u.name == crate::principal::ADMIN_USER)))
    }

    /// Uses an invitation for `user_id` inside `txn`: marks it used and adds
    /// the team membership it carries. Returns the team joined, if any.
    pub(crate) async fn redeem_invite<C: ConnectionTrait>(
        &self,
        txn: &C,
        code: &str,
        user_id: &str,
    ) -> Result<Option<(String, Role)>, ApiError> {
        let invalid = || ApiError::bad_request("invalid_invite", "invitation code is unknown, used or expired");
        if !code.starts_with(INVITE_PREFIX) || code.len() > 200 {
            return Err(invalid());
        }
        let now = Utc::now();
        let inv = invite::Entity::find()
            .filter(invite::Column::CodeHash.eq(hash_token(code)))
            .one(txn)
            .await?
            .filter(|i| i.used_at.is_none() && i.expires_at > now)
            .ok_or_else(invalid)?;
        invite::Entity::update_many()
            .col_expr(invite::Column::UsedAt, sea_orm::sea_query::Expr::value(now))
            .col_expr(invite::Column::UsedBy, sea_orm::sea_query::Expr::value(user_id))
            .filter(invite::Column::Id.eq(inv.id.clone()))
            .exec(txn)
            .await?;
        let (Some(team_id), Some(role)) = (inv.team_id, inv.role) else {
            return Ok(None);
        };
        let role: Role = role.parse().map_err(ApiError::internal)?;
        let inserted = team_member::ActiveModel {
            team_id: Set(team_id.clone()),
            user_id: Set(user_id.to_owned()),
            role: Set(role.as_str().to_owned()),
            created_at: Set(now),
        }
        .insert(txn)
        .await;
        match inserted {
            Ok(_) => Ok(Some((team_id, role))),
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                Err(ApiError::conflict("already_member", "you are already in this team"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An existing user accepts a team invitation.
    pub async fn accept_invite(&self, who: &Principal, code: &str) -> Result<TeamView, ApiError> {
        who.authorize(Action::Create, &Resource::Account { user: &who.user_id }, "account")?;
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let Some((team_id, role)) = self.redeem_invite(&txn, code, &who.user_id).await? else {
            return Err(ApiError::bad_request("invalid_invite", "this invitation is for signing up, not for a team"));
        };
        let t = team::Entity::find_by_id(team_id.clone()).one(&txn).await?.ok_or_else(|| team_not_found(&team_id))?;
        crate::audit::append(&txn, who, "team.member.join", &format!("team:{team_id} role:{role}")).await?;
        txn.commit().await?;
        self.principals.clear();
        Ok(TeamView { id: t.id, name: t.name, role, created_at: t.created_at })
    }
}
