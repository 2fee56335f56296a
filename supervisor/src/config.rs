//! What the host agent tells the supervisor to run (`supervisor.json`).

use serde::{Deserialize, Serialize};

pub use pinacle_orchestrator::processes::{HealthCheck, PodProcesses, ProcessSpec, Restart, Step};

/// The supervisor's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorConfig {
    /// `NAME=VALUE` environment of every process and exec (the pod's
    /// standard environment and secrets), before the pod definition's own
    /// `env` (which is in `pod`).
    #[serde(default, rename = "host_env")]
    pub env: Vec<String>,
    /// The pod's install steps and processes.
    #[serde(flatten)]
    pub pod: PodProcesses,
    /// When set, the supervisor kills the largest process once the pod's
    /// processes together hold more resident memory than this (for
    /// sandboxes without a per-process OOM killer, i.e. gVisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
}

impl SupervisorConfig {
    /// Problems that make the configuration unusable, named by field.
    pub fn validate(&self) -> Result<(), String> {
        self.pod.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_flat() {
        let c: SupervisorConfig = serde_json::from_str(r#"{"host_env":["A=1"],"install":[{"name":"i","run":"true"}],"processes":[{"name":"web","run":"x"}]}"#).unwrap();
        assert_eq!(c.pod.install.len(), 1);
        assert_eq!(c.pod.processes[0].name, "web");
    }
}
