//! Jobs the control plane queues for a host agent.
//!
//! A job names a pod and what to do; the agent reads the pod's current record
//! before acting. Every job is idempotent: running it twice, or after the pod
//! has moved on, is harmless (see [`PodJob::expected_state`]).

use uuid::Uuid;

use crate::PodState;

/// Work for a host agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", content = "pod_id", rename_all = "snake_case")]
pub enum PodJob {
    Provision(Uuid),
    Start(Uuid),
    Stop(Uuid),
    Delete(Uuid),
}

impl PodJob {
    /// The pod this job is for.
    pub fn pod_id(self) -> Uuid {
        match self {
            PodJob::Provision(id) | PodJob::Start(id) | PodJob::Stop(id) | PodJob::Delete(id) => id,
        }
    }

    /// The states in which this job still has work to do. In any other state
    /// the job is stale (the pod moved on) and the agent drops it.
    pub fn expected_state(self) -> &'static [PodState] {
        match self {
            PodJob::Provision(_) => &[PodState::Pending, PodState::Provisioning],
            PodJob::Start(_) => &[PodState::Starting],
            PodJob::Stop(_) => &[PodState::Stopping],
            PodJob::Delete(_) => &[PodState::Deleting],
        }
    }

    /// The job that settles a pod in a transitional state, if any. Used when
    /// an agent restarts and re-drives unfinished work.
    pub fn to_settle(state: PodState, id: Uuid) -> Option<PodJob> {
        match state {
            PodState::Pending | PodState::Provisioning => Some(PodJob::Provision(id)),
            PodState::Starting => Some(PodJob::Start(id)),
            PodState::Stopping => Some(PodJob::Stop(id)),
            PodState::Deleting => Some(PodJob::Delete(id)),
            PodState::Running | PodState::Stopped | PodState::Deleted | PodState::Error => None,
        }
    }

    /// Name of the queue that host `host_id` consumes.
    pub fn queue_for_host(host_id: &str) -> String {
        format!("host.{host_id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transitional_state_has_a_settling_job_that_expects_it() {
        let id = Uuid::new_v4();
        for s in PodState::ALL {
            match PodJob::to_settle(s, id) {
                Some(job) => {
                    assert!(s.is_transitional(), "{s}");
                    assert!(job.expected_state().contains(&s), "{s}");
                    assert_eq!(job.pod_id(), id);
                }
                None => assert!(!s.is_transitional(), "{s}"),
            }
        }
    }

    #[test]
    fn wire_format_is_stable() {
        let id = Uuid::nil();
        let json = serde_json::to_string(&PodJob::Stop(id)).unwrap();
        assert_eq!(json, format!("{{\"action\":\"stop\",\"pod_id\":\"{id}\"}}"));
        assert_eq!(serde_json::from_str::<PodJob>(&json).unwrap(), PodJob::Stop(id));
        assert_eq!(PodJob::queue_for_host("local"), "host.local");
    }
}
