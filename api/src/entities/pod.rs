//! `pods`: every pod ever created; deleted ones stay with state `deleted`.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pods")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub state: String,
    pub state_reason: Option<String>,
    pub template: String,
    pub image: String,
    pub tier: String,
    pub runtime: String,
    pub host_id: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The team the pod belongs to; `None`: a personal pod of `owner_id`.
    pub team_id: Option<String>,
    /// `{pod}-{owner}` (owner: team or user name), the part of host names
    /// the pod owns; live pods never hold conflicting keys.
    pub route_key: Option<String>,
    /// Ports reachable through the proxy without signing in, comma-separated.
    pub public_ports: String,
    /// Egress policy: `allow-all`, `deny-all` or an allow list of CIDRs.
    pub egress: String,
    /// The supervisor's install steps and processes, JSON.
    pub processes: String,
    /// The pod's checked `pinacle.yaml` as JSON; empty for pods created
    /// before it was kept.
    pub config: String,
    /// Snapshot the pod's volumes each time it stops.
    pub snapshot_on_stop: bool,
    /// The repository `/workspace` is cloned from, JSON
    /// ([`pinacle_orchestrator::pod::RepositorySource`]); empty: none.
    pub repository: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
