//! The pod state machine.
//!
//! ```text
//! pending → provisioning → running → stopping → stopped → starting → running
//!     any live state → deleting → deleted
//!     provisioning | starting | stopping | running → error (with a reason)
//!     stopping --start or stop requested--> stopping (the newest one is kept)
//! ```
//!
//! A start asked for while the pod is stopping is not refused: it is stored
//! as an event that leaves the pod `stopping`, and once the sandbox has
//! stopped the control plane carries it out ([`start_due_after_stop`]).
//! A stop asked for after it cancels it; a delete or a failed stop drops it.
//!
//! Users cause `*Requested` events through the API; the host agent reports
//! progress events. [`PodState::apply`] is the only place that decides
//! whether a change is allowed, so a stale or repeated event can never move a
//! pod backwards.

use std::fmt;
use std::str::FromStr;

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodState {
    Pending,
    Provisioning,
    Running,
    Stopping,
    Stopped,
    Starting,
    Deleting,
    Deleted,
    Error,
}

/// Something that happened to a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodEvent {
    /// The host agent began provisioning.
    ProvisionStarted,
    /// The sandbox is up (after provisioning or starting).
    SandboxRunning,
    /// A user asked to stop the pod.
    StopRequested,
    /// The sandbox is gone and the pod's storage is kept.
    SandboxStopped,
    /// A user asked to start a stopped (or failed) pod.
    StartRequested,
    /// A user asked to delete the pod.
    DeleteRequested,
    /// Sandbox, layer and volume are removed.
    Removed,
    /// The agent found a running pod's sandbox missing and restarts it.
    SandboxLost,
    /// An operation failed; the event carries its reason beside it.
    Failed,
}

/// An event that is not allowed in the pod's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event} a pod that is {state}")]
pub struct InvalidTransition {
    pub state: PodState,
    pub event: PodEvent,
}

impl PodState {
    /// The state after `event`, or why `event` is not allowed now.
    pub fn apply(self, event: PodEvent) -> Result<PodState, InvalidTransition> {
        use PodEvent as E;
        use PodState as S;
        let next = match (self, event) {
            (S::Pending, E::ProvisionStarted) => S::Provisioning,
            (S::Provisioning | S::Starting, E::SandboxRunning) => S::Running,
            (S::Running | S::Error, E::StopRequested) => S::Stopping,
            // remembered until the sandbox has stopped (the newest wins)
            (S::Stopping, E::StartRequested | E::StopRequested) => S::Stopping,
            (S::Stopping, E::SandboxStopped) => S::Stopped,
            (S::Stopped | S::Error, E::StartRequested) => S::Starting,
            (S::Running, E::SandboxLost) => S::Starting,
            (s, E::DeleteRequested) if s.is_live() => S::Deleting,
            (S::Deleting, E::Removed) => S::Deleted,
            (S::Pending | S::Provisioning | S::Starting | S::Stopping | S::Running, E::Failed) => {
                S::Error
            }
            (state, event) => return Err(InvalidTransition { state, event }),
        };
        Ok(next)
    }

    /// Whether the pod still exists from the user's point of view.
    pub fn is_live(self) -> bool {
        !matches!(self, PodState::Deleting | PodState::Deleted)
    }

    /// Whether the host agent still has work to do to settle this state.
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            PodState::Pending
                | PodState::Provisioning
                | PodState::Starting
                | PodState::Stopping
                | PodState::Deleting
        )
    }

    /// Whether the pod's sandbox should be running in this state.
    pub fn wants_sandbox(self) -> bool {
        matches!(
            self,
            PodState::Pending | PodState::Provisioning | PodState::Starting | PodState::Running
        )
    }

    /// Lowercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            PodState::Pending => "pending",
            PodState::Provisioning => "provisioning",
            PodState::Running => "running",
            PodState::Stopping => "stopping",
            PodState::Stopped => "stopped",
            PodState::Starting => "starting",
            PodState::Deleting => "deleting",
            PodState::Deleted => "deleted",
            PodState::Error => "error",
        }
    }

    /// Every state.
    pub const ALL: [PodState; 9] = [
        PodState::Pending,
        PodState::Provisioning,
        PodState::Running,
        PodState::Stopping,
        PodState::Stopped,
        PodState::Starting,
        PodState::Deleting,
        PodState::Deleted,
        PodState::Error,
    ];
}

/// Whether a pod that just finished stopping should start again at once:
/// `newest_request` is the newest user start or stop request recorded for
/// it, with the state it was made in. Only a start made while the pod was
/// stopping is still due; a later stop request cancels it, and a start
/// made in any other state was carried out already.
pub fn start_due_after_stop(newest_request: Option<(PodEvent, PodState)>) -> bool {
    newest_request == Some((PodEvent::StartRequested, PodState::Stopping))
}

impl fmt::Display for PodState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PodState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PodState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown pod state {s:?}"))
    }
}

impl PodEvent {
    /// snake_case name, as stored in pod events.
    pub fn as_str(self) -> &'static str {
        match self {
            PodEvent::ProvisionStarted => "provision_started",
            PodEvent::SandboxRunning => "sandbox_running",
            PodEvent::StopRequested => "stop_requested",
            PodEvent::SandboxStopped => "sandbox_stopped",
            PodEvent::StartRequested => "start_requested",
            PodEvent::DeleteRequested => "delete_requested",
            PodEvent::Removed => "removed",
            PodEvent::SandboxLost => "sandbox_lost",
            PodEvent::Failed => "failed",
        }
    }
}

impl fmt::Display for PodEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self {
            PodEvent::ProvisionStarted => "start provisioning",
            PodEvent::SandboxRunning => "mark running",
            PodEvent::StopRequested => "stop",
            PodEvent::SandboxStopped => "mark stopped",
            PodEvent::StartRequested => "start",
            PodEvent::DeleteRequested => "delete",
            PodEvent::Removed => "mark removed",
            PodEvent::SandboxLost => "restart",
            PodEvent::Failed => "fail",
        };
        f.write_str(verb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PodEvent as E;
    use PodState as S;

    fn run(events: &[PodEvent]) -> Result<PodState, InvalidTransition> {
        events.iter().try_fold(S::Pending, |s, e| s.apply(*e))
    }

    #[test]
    fn full_life_cycle() {
        let life = [
            E::ProvisionStarted,
            E::SandboxRunning,
            E::StopRequested,
            E::SandboxStopped,
            E::StartRequested,
            E::SandboxRunning,
            E::DeleteRequested,
            E::Removed,
        ];
        assert_eq!(run(&life), Ok(S::Deleted));
    }

    #[test]
    fn user_requests_are_refused_in_the_wrong_state() {
        assert_eq!(
            S::Stopped.apply(E::StopRequested),
            Err(InvalidTransition { state: S::Stopped, event: E::StopRequested })
        );
        assert!(S::Running.apply(E::StartRequested).is_err());
        assert!(S::Starting.apply(E::StartRequested).is_err());
        assert!(S::Starting.apply(E::StopRequested).is_err());
        assert!(S::Provisioning.apply(E::StopRequested).is_err());
        assert!(S::Deleting.apply(E::StartRequested).is_err());
        assert!(S::Deleting.apply(E::DeleteRequested).is_err());
        assert!(S::Deleted.apply(E::DeleteRequested).is_err());
        assert_eq!(
            S::Stopped.apply(E::StopRequested).unwrap_err().to_string(),
            "cannot stop a pod that is stopped"
        );
    }

    #[test]
    fn stale_agent_reports_never_move_a_pod_backwards() {
        // A provision job that finishes after the user asked to delete.
        assert!(S::Deleting.apply(E::SandboxRunning).is_err());
        assert!(S::Deleted.apply(E::SandboxStopped).is_err());
        assert!(S::Running.apply(E::ProvisionStarted).is_err());
        assert!(S::Deleted.apply(E::Failed).is_err());
        assert!(S::Stopped.apply(E::Failed).is_err());
    }

    #[test]
    fn every_live_state_can_be_deleted_and_errors_recover() {
        for s in S::ALL.into_iter().filter(|s| s.is_live()) {
            assert_eq!(s.apply(E::DeleteRequested), Ok(S::Deleting), "{s}");
        }
        assert_eq!(S::Error.apply(E::StartRequested), Ok(S::Starting));
        assert_eq!(S::Error.apply(E::StopRequested), Ok(S::Stopping));
        assert_eq!(S::Running.apply(E::SandboxLost), Ok(S::Starting));
    }

    #[test]
    fn a_start_asked_for_while_stopping_waits_for_the_stop() {
        // the request keeps the pod stopping; the stop completes as usual
        assert_eq!(S::Stopping.apply(E::StartRequested), Ok(S::Stopping));
        assert_eq!(S::Stopping.apply(E::StopRequested), Ok(S::Stopping));
        let life = [E::ProvisionStarted, E::SandboxRunning, E::StopRequested, E::StartRequested, E::SandboxStopped];
        assert_eq!(run(&life), Ok(S::Stopped));
        // then it is due, and starting from stopped is allowed
        assert!(start_due_after_stop(Some((E::StartRequested, S::Stopping))));
        assert_eq!(S::Stopped.apply(E::StartRequested), Ok(S::Starting));
        // a stop asked for after it cancels it
        assert!(!start_due_after_stop(Some((E::StopRequested, S::Stopping))));
        // the stop that made the pod stopping is no start
        assert!(!start_due_after_stop(Some((E::StopRequested, S::Running))));
        assert!(!start_due_after_stop(Some((E::StopRequested, S::Error))));
        // a start made while stopped or failed was carried out already
        assert!(!start_due_after_stop(Some((E::StartRequested, S::Stopped))));
        assert!(!start_due_after_stop(Some((E::StartRequested, S::Error))));
        assert!(!start_due_after_stop(None));
        // a delete or a failed stop leaves stopping: no stop completes
        for e in [E::DeleteRequested, E::Failed] {
            let left = S::Stopping.apply(e).unwrap();
            assert_ne!(left, S::Stopping);
            assert!(left.apply(E::SandboxStopped).is_err(), "{left}");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<PodState>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
    }
}
