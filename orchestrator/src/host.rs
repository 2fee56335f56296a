//! A host's lifecycle, from its heartbeats and the operator's cordon: pure.
//!
//! A host that reports within [`MISSED_HEARTBEATS`] heartbeat intervals is
//! `ready` (or `cordoned`, when the operator said so: no new pods); past
//! that it is `unreachable` (no placements; its pods' operations answer
//! 503), and past [`LOST_AFTER_SECS`] it is `lost`. A host that reports
//! again is what it was before.

use std::fmt;

/// Heartbeats a host may miss before it is unreachable.
pub const MISSED_HEARTBEATS: u64 = 3;

/// Seconds of silence after which an unreachable host is lost (at least
/// twice the time it takes to become unreachable).
pub const LOST_AFTER_SECS: u64 = 300;

/// What a host is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// Reporting, and given new pods.
    Ready,
    /// Reporting; the operator keeps new pods off it.
    Cordoned,
    /// Silent for more than [`MISSED_HEARTBEATS`] intervals.
    Unreachable,
    /// Silent for more than [`LOST_AFTER_SECS`].
    Lost,
}

impl HostStatus {
    /// Its name in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Ready => "ready",
            HostStatus::Cordoned => "cordoned",
            HostStatus::Unreachable => "unreachable",
            HostStatus::Lost => "lost",
        }
    }

    /// Whether it reports (ready or cordoned).
    pub fn is_reachable(self) -> bool {
        matches!(self, HostStatus::Ready | HostStatus::Cordoned)
    }

    /// Whether new pods may be placed on it.
    pub fn accepts_pods(self) -> bool {
        self == HostStatus::Ready
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a host last heard from `silent_secs` ago, reporting every
/// `heartbeat_secs`, cordoned unless `schedulable`.
pub fn host_status(schedulable: bool, silent_secs: u64, heartbeat_secs: u64) -> HostStatus {
    let unreachable_after = heartbeat_secs.max(1).saturating_mul(MISSED_HEARTBEATS);
    // a slow heartbeat is unreachable for a while before it is lost
    if silent_secs > LOST_AFTER_SECS.max(unreachable_after.saturating_mul(2)) {
        HostStatus::Lost
    } else if silent_secs > unreachable_after {
        HostStatus::Unreachable
    } else if !schedulable {
        HostStatus::Cordoned
    } else {
        HostStatus::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_makes_a_host_unreachable_then_lost() {
        assert_eq!(host_status(true, 0, 5), HostStatus::Ready);
        assert_eq!(host_status(true, 15, 5), HostStatus::Ready, "three missed heartbeats are tolerated");
        assert_eq!(host_status(true, 16, 5), HostStatus::Unreachable);
        assert_eq!(host_status(false, 16, 5), HostStatus::Unreachable, "silence wins over the cordon");
        assert_eq!(host_status(true, 301, 5), HostStatus::Lost);
        // a slow heartbeat is unreachable for a while before it is lost
        assert_eq!(host_status(true, 301, 200), HostStatus::Ready);
        assert_eq!(host_status(true, 601, 200), HostStatus::Unreachable);
        assert_eq!(host_status(true, 1201, 200), HostStatus::Lost);
        // a zero interval is read as one second
        assert_eq!(host_status(true, 4, 0), HostStatus::Unreachable);
    }

    #[test]
    fn only_ready_hosts_take_pods() {
        assert_eq!(host_status(false, 0, 5), HostStatus::Cordoned);
        for (s, takes) in [(HostStatus::Ready, true), (HostStatus::Cordoned, false), (HostStatus::Unreachable, false), (HostStatus::Lost, false)] {
            assert_eq!(s.accepts_pods(), takes, "{s}");
        }
    }
}
