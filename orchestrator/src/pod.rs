//! What the host agent needs to know about a pod.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::{PodName, PodState, Tier};

/// Which sandbox runtime runs a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// gVisor's `runsc`: a user-space kernel between the pod and the host.
    Gvisor,
    /// youki's `libcontainer`: namespaces and cgroups on the host kernel.
    Youki,
}

impl RuntimeKind {
    /// Lowercase name, as stored and accepted by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Gvisor => "gvisor",
            RuntimeKind::Youki => "youki",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gvisor" | "runsc" => Ok(RuntimeKind::Gvisor),
            "youki" | "libcontainer" => Ok(RuntimeKind::Youki),
            other => Err(format!("unknown runtime {other:?}; choose gvisor or youki")),
        }
    }
}

/// A pod as the control plane records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRecord {
    pub id: Uuid,
    pub name: PodName,
    pub owner: String,
    pub state: PodState,
    pub image: String,
    /// The template it was created from (its starter files fill a new
    /// workspace); empty when unknown.
    #[serde(default)]
    pub template: String,
    pub tier: Tier,
    pub runtime: RuntimeKind,
    pub host: String,
    /// Egress policy: `allow-all`, `deny-all` or an allow list of IPv4
    /// CIDRs (validated by the control plane).
    #[serde(default = "default_egress")]
    pub egress: String,
    /// What the pod's supervisor runs.
    #[serde(default)]
    pub processes: crate::processes::PodProcesses,
    /// Take a snapshot of its volumes each time it stops.
    #[serde(default)]
    pub snapshot_on_stop: bool,
}

fn default_egress() -> String {
    "allow-all".into()
}

impl PodRecord {
    /// The sandbox id used with the runtime: stable, unique, and safe in paths.
    pub fn sandbox_id(&self) -> String {
        sandbox_id(self.id)
    }
}

/// Prefix of every sandbox id Pinacle creates, so reconcile can tell its own
/// sandboxes from anything else the runtime runs.
pub const SANDBOX_PREFIX: &str = "pinacle-";

/// The sandbox id of the pod with `id`.
pub fn sandbox_id(id: Uuid) -> String {
    format!("{SANDBOX_PREFIX}{}", id.simple())
}

/// The pod id a sandbox id belongs to, if it is one of ours.
pub fn pod_id_of_sandbox(sandbox: &str) -> Option<Uuid> {
    sandbox.strip_prefix(SANDBOX_PREFIX).and_then(|s| Uuid::parse_str(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids_round_trip_and_ignore_strangers() {
        let id = Uuid::new_v4();
        assert_eq!(pod_id_of_sandbox(&sandbox_id(id)), Some(id));
        assert_eq!(pod_id_of_sandbox("other-container"), None);
        assert_eq!(pod_id_of_sandbox("pinacle-zzz"), None);
    }

    #[test]
    fn runtime_names() {
        assert_eq!("runsc".parse(), Ok(RuntimeKind::Gvisor));
        assert_eq!("youki".parse(), Ok(RuntimeKind::Youki));
        assert!("docker".parse::<RuntimeKind>().is_err());
    }
}
