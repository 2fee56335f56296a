//! The one authorisation layer: [`decide`] answers whether a subject may take
//! an action on a resource. It is pure (no I/O): callers load the resource,
//! and the [`Principal`](crate::principal::Principal) carries the caller's team
//! roles and token scope. Handlers never check permissions themselves; they
//! go through [`crate::principal::Principal::authorize`].
//!
//! Two kinds of refusal:
//! - [`Denied::Hidden`]: the subject may not even know the resource exists
//!   (another tenant's pod, secret, token or audit entry). Answered 404.
//! - [`Denied::Forbidden`]: the subject can see the resource but not do this
//!   (a viewer stopping a team pod, a read-only token writing). Answered 403.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};


/// A member's role in a team, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees the team's pods and the names of its secrets.
    Viewer,
    /// Also creates, starts, stops and execs into team pods; deletes its own.
    Member,
    /// Also deletes any team pod, manages team secrets and members (not owners).
    Admin,
    /// Also appoints owners and deletes the team.
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; use one of owner, admin, member, viewer"))
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub user_id: String,
    /// The instance administrator (settings, invitations, the whole audit log).
    pub instance_admin: bool,
    pub scope: Scope,
    /// Team id → the subject's role there.
    pub teams: BTreeMap<String, Role>,
}

/// What the subject wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// See it (show, list, events, logs).
    Read,
    /// Create it (a pod in a team, a team secret...).
    Create,
    /// Start or stop a pod.
    Operate,
    /// Run commands inside a pod.
    Exec,
    /// Change its settings or secrets.
    Configure,
    /// Delete it.
    Delete,
    /// Manage a team's members and invitations.
    ManageMembers,
    /// Appoint or remove owners; delete the team.
    ManageOwners,
}

/// What it is done to. Identifiers only: the policy never touches storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A pod; `team` is `None` for a personal pod of `owner`.
    Pod { owner: &'a str, team: Option<&'a str> },
    /// A team.
    Team { team: &'a str },
    /// One membership: `user` in `team` with `role`.
    Membership { team: &'a str, user: &'a str, role: Role },
    /// A user's own account: their secrets, the teams they create, the
    /// invitations they accept.
    Account { user: &'a str },
    /// An API token or sign-in session of one user.
    Token { owner: &'a str },
    /// An audit entry and who made it.
    AuditEntry { actor: &'a str },
    /// The instance: settings, sign-up invitations, signing keys, whole-log
    /// verification.
    Instance,
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Not visible to the subject: answer "not found".
    Hidden,
    /// Visible but not allowed: answer 403 with this reason.
    Forbidden(String),
}

/// Whether `subject` may take `action` on `resource`.
pub fn decide(subject: &Subject, action: Action, resource: &Resource<'_>) -> Result<(), Denied> {
    let visible = visible(subject, resource);
    if !visible {
        return Err(Denied::Hidden);
    }
    if subject.scope == Scope::Read && action != Action::Read {
        return Err(Denied::Forbidden(format!(
            "this token is read-only; {} needs a token with scope full",
            verb(action)
        )));
    }
    let allowed = match *resource {
        Resource::Pod { owner, team: None } => owner == subject.user_id,
        Resource::Pod { owner, team: Some(team) } => {
            let role = subject.teams.get(team).copied();
            match action {
                Action::Read => role.is_some(),
                Action::Create | Action::Operate | Action::Exec => role >= Some(Role::Member),
                // Members delete and configure the pods they created.
                Action::Delete | Action::Configure => {
                    role >= Some(Role::Admin) || (role == Some(Role::Member) && owner == subject.user_id)
                }
                Action::ManageMembers | Action::ManageOwners => false,
            }
        }
        Resource::Team { team } => {
            let role = subject.teams.get(team).copied();
            match action {
                Action::Read => role.is_some(),
                Action::Create | Action::Operate | Action::Exec => role >= Some(Role::Member),
                Action::Configure | Action::ManageMembers => role >= Some(Role::Admin),
                Action::Delete | Action::ManageOwners => role == Some(Role::Owner),
            }
        }
        Resource::Membership { team, user, role: member_role } => {
            let role = subject.teams.get(team).copied();
            match action {
                Action::Read => role.is_some(),
                // Anyone may leave; admins remove members, owners remove owners.
                Action::Delete if user == subject.user_id => true,
                Action::Delete | Action::Configure if member_role == Role::Owner => role == Some(Role::Owner),
                Action::Delete | Action::Configure => role >= Some(Role::Admin),
                _ => false,
            }
        }
        Resource::Account { user } | Resource::Token { owner: user } => user == subject.user_id,
        Resource::AuditEntry { .. } => action == Action::Read,
        Resource::Instance => subject.instance_admin,
    };
    if allowed {
        Ok(())
    } else {
        Err(Denied::Forbidden(match (resource, subject.teams_role(resource)) {
            (_, Some(role)) => format!("your role {role} in this team does not allow you to {}", verb(action)),
            (Resource::Instance, _) => "only the instance administrator can do this".to_owned(),
            _ => format!("you are not allowed to {} this", verb(action)),
        }))
    }
}

/// The role `subject` holds in a tenant's memory (issue 18): its own
/// (`team` none) as admin; a team's by its role there (viewer → viewer,
/// member → editor, admin and owner → admin). A read-only token is a
/// viewer at most. Another user's memory, or a team the subject is not in,
/// is [`Denied::Hidden`].
pub fn memory_role(subject: &Subject, team: Option<&str>) -> Result<pinacle_memory_service::Role, Denied> {
    use pinacle_memory_service::Role as M;
    let role = match team {
        None => M::Admin,
        Some(team) => match subject.teams.get(team) {
            None => return Err(Denied::Hidden),
            Some(Role::Viewer) => M::Viewer,
            Some(Role::Member) => M::Editor,
            Some(Role::Admin | Role::Owner) => M::Admin,
        },
    };
    Ok(if subject.scope == Scope::Read { M::Viewer } else { role })
}

fn visible(subject: &Subject, resource: &Resource<'_>) -> bool {
    match *resource {
        Resource::Pod { owner, team: None } => owner == subject.user_id,
        Resource::Pod { team: Some(team), .. } | Resource::Team { team } | Resource::Membership { team, .. } => {
            subject.teams.contains_key(team)
        }
        Resource::Account { user } | Resource::Token { owner: user } => user == subject.user_id,
        Resource::AuditEntry { actor } => actor == subject.user_id || subject.instance_admin,
        Resource::Instance => true,
    }
}

impl Subject {
    fn teams_role(&self, resource: &Resource<'_>) -> Option<Role> {
        match *resource {
            Resource::Pod { team: Some(team), .. } | Resource::Team { team } | Resource::Membership { team, .. } => {
                self.teams.get(team).copied()
            }
            _ => None,
        }
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Read => "read",
        Action::Create => "create",
        Action::Operate => "start or stop",
        Action::Exec => "exec into",
        Action::Configure => "configure",
        Action::Delete => "delete",
        Action::ManageMembers => "manage members of",
        Action::ManageOwners => "manage owners of",
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything its user may do.
    Full,
    /// Reads only (GET and HEAD).
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Full => "full",
            Scope::Read => "read",
        }
    }

    /// Unknown stored scopes grant the least.
    pub fn parse_stored(s: &str) -> Scope {
        if s == "full" {
            Scope::Full
        } else {
            Scope::Read
        }
    }

    /// Whether a request with HTTP method `method` (`GET`, `POST`, …) is
    /// within this scope: a read-only scope allows `GET` and `HEAD` only.
    pub fn allows(self, method: &str) -> bool {
        self == Scope::Full || method == "GET" || method == "HEAD"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_scope_allows_reads_only() {
        assert!(Scope::Read.allows("GET"));
        assert!(Scope::Read.allows("HEAD"));
        for m in ["POST", "DELETE", "PUT", "PATCH", "get"] {
            assert!(!Scope::Read.allows(m), "{m}");
            assert!(Scope::Full.allows(m), "{m}");
        }
        assert_eq!(Scope::parse_stored("full"), Scope::Full);
        assert_eq!(Scope::parse_stored("garbage"), Scope::Read);
    }

    fn subject(user: &str, teams: &[(&str, Role)]) -> Subject {
        Subject {
            user_id: user.into(),
            instance_admin: false,
            scope: Scope::Full,
            teams: teams.iter().map(|(t, r)| (t.to_string(), *r)).collect(),
        }
    }

    const ALL_ACTIONS: [Action; 8] = [
        Action::Read,
        Action::Create,
        Action::Operate,
        Action::Exec,
        Action::Configure,
        Action::Delete,
        Action::ManageMembers,
        Action::ManageOwners,
    ];

    #[test]
    fn other_tenants_resources_are_hidden_for_every_action() {
        let bob = subject("bob", &[("t-bob", Role::Owner)]);
        let resources = [
            Resource::Pod { owner: "alice", team: None },
            Resource::Pod { owner: "alice", team: Some("t-alice") },
            Resource::Team { team: "t-alice" },
            Resource::Account { user: "alice" },
            Resource::Token { owner: "alice" },
            Resource::AuditEntry { actor: "alice" },
        ];
        for r in &resources {
            for a in ALL_ACTIONS {
                assert_eq!(decide(&bob, a, r), Err(Denied::Hidden), "{a:?} on {r:?}");
            }
        }
    }

    #[test]
    fn memory_roles_follow_team_roles_and_read_only_tokens_only_read() {
        use pinacle_memory_service::Role as M;
        let ann = subject("ann", &[("t1", Role::Viewer), ("t2", Role::Member), ("t3", Role::Admin), ("t4", Role::Owner)]);
        assert_eq!(memory_role(&ann, None), Ok(M::Admin));
        assert_eq!(memory_role(&ann, Some("t1")), Ok(M::Viewer));
        assert_eq!(memory_role(&ann, Some("t2")), Ok(M::Editor));
        assert_eq!(memory_role(&ann, Some("t3")), Ok(M::Admin));
        assert_eq!(memory_role(&ann, Some("t4")), Ok(M::Admin));
        assert_eq!(memory_role(&ann, Some("t-other")), Err(Denied::Hidden));
        let read_only = Subject { scope: Scope::Read, ..ann };
        assert_eq!(memory_role(&read_only, None), Ok(M::Viewer));
        assert_eq!(memory_role(&read_only, Some("t4")), Ok(M::Viewer));
    }

    #[test]
    fn owners_do_everything_with_personal_pods() {
        let alice = subject("alice", &[]);
        let pod = Resource::Pod { owner: "alice", team: None };
        for a in [Action::Read, Action::Operate, Action::Exec, Action::Configure, Action::Delete] {
            assert_eq!(decide(&alice, a, &pod), Ok(()), "{a:?}");
        }
    }

    #[test]
    fn team_pod_rights_follow_the_role() {
        let theirs = Resource::Pod { owner: "carol", team: Some("t") };
        let expect = |role: Role, action: Action| -> bool {
            match action {
                Action::Read => true,
                Action::Create | Action::Operate | Action::Exec => role >= Role::Member,
                Action::Configure | Action::Delete => role >= Role::Admin,
                Action::ManageMembers | Action::ManageOwners => false,
            }
        };
        for role in Role::ALL {
            let s = subject("dave", &[("t", role)]);
            for a in ALL_ACTIONS {
                let got = decide(&s, a, &theirs);
                assert_eq!(got.is_ok(), expect(role, a), "{role} {a:?}: {got:?}");
                if let Err(e) = got {
                    assert!(matches!(e, Denied::Forbidden(_)), "team members see team pods");
                }
            }
        }
        // A member may delete the pods they made, not others'.
        let member = subject("dave", &[("t", Role::Member)]);
        assert_eq!(decide(&member, Action::Delete, &Resource::Pod { owner: "dave", team: Some("t") }), Ok(()));
        let viewer = subject("dave", &[("t", Role::Viewer)]);
        assert!(decide(&viewer, Action::Delete, &Resource::Pod { owner: "dave", team: Some("t") }).is_err());
    }

    #[test]
    fn team_management_needs_admin_and_owner_roles() {
        let team = Resource::Team { team: "t" };
        for role in Role::ALL {
            let s = subject("u", &[("t", role)]);
            assert!(decide(&s, Action::Read, &team).is_ok());
            assert_eq!(decide(&s, Action::ManageMembers, &team).is_ok(), role >= Role::Admin, "{role}");
            assert_eq!(decide(&s, Action::ManageOwners, &team).is_ok(), role == Role::Owner, "{role}");
            assert_eq!(decide(&s, Action::Delete, &team).is_ok(), role == Role::Owner, "{role}");
            assert_eq!(decide(&s, Action::Create, &team).is_ok(), role >= Role::Member, "{role}");
        }
    }

    #[test]
    fn members_leave_admins_remove_members_owners_remove_owners() {
        let m = |user, role| Resource::Membership { team: "t", user, role };
        let member = subject("mia", &[("t", Role::Member)]);
        assert_eq!(decide(&member, Action::Delete, &m("mia", Role::Member)), Ok(()), "leaving");
        assert!(decide(&member, Action::Delete, &m("vic", Role::Viewer)).is_err());
        let admin = subject("adam", &[("t", Role::Admin)]);
        assert_eq!(decide(&admin, Action::Delete, &m("vic", Role::Viewer)), Ok(()));
        assert_eq!(decide(&admin, Action::Configure, &m("vic", Role::Viewer)), Ok(()));
        assert!(decide(&admin, Action::Delete, &m("olga", Role::Owner)).is_err());
        assert!(decide(&admin, Action::Configure, &m("olga", Role::Owner)).is_err());
        let owner = subject("olga", &[("t", Role::Owner)]);
        assert_eq!(decide(&owner, Action::Delete, &m("ozzy", Role::Owner)), Ok(()));
        let outsider = subject("otto", &[]);
        assert_eq!(decide(&outsider, Action::Delete, &m("otto", Role::Member)), Err(Denied::Hidden));
    }

    #[test]
    fn read_only_tokens_only_read() {
        let mut alice = subject("alice", &[("t", Role::Owner)]);
        alice.scope = Scope::Read;
        let pod = Resource::Pod { owner: "alice", team: None };
        assert_eq!(decide(&alice, Action::Read, &pod), Ok(()));
        for a in ALL_ACTIONS.into_iter().filter(|a| *a != Action::Read) {
            assert!(matches!(decide(&alice, a, &pod), Err(Denied::Forbidden(m)) if m.contains("read-only")), "{a:?}");
        }
    }

    #[test]
    fn instance_actions_need_the_administrator() {
        let mut s = subject("u", &[]);
        assert!(matches!(decide(&s, Action::Configure, &Resource::Instance), Err(Denied::Forbidden(_))));
        s.instance_admin = true;
        assert_eq!(decide(&s, Action::Configure, &Resource::Instance), Ok(()));
        // The administrator reads anyone's audit entries, but cannot change them.
        assert_eq!(decide(&s, Action::Read, &Resource::AuditEntry { actor: "x" }), Ok(()));
        assert!(decide(&s, Action::Delete, &Resource::AuditEntry { actor: "x" }).is_err());
        // ...and does not see other users' pods or secrets.
        assert_eq!(decide(&s, Action::Read, &Resource::Pod { owner: "x", team: None }), Err(Denied::Hidden));
        assert_eq!(decide(&s, Action::Read, &Resource::Account { user: "x" }), Err(Denied::Hidden));
    }

    #[test]
    fn roles_parse_and_order() {
        assert!(Role::Viewer < Role::Member && Role::Member < Role::Admin && Role::Admin < Role::Owner);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().unwrap_err().contains("owner, admin, member, viewer"));
    }
}
