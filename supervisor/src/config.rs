//! What the host agent tells the supervisor to run (`supervisor.json`).

use serde::{Deserialize, Serialize};

pub use pinacle_orchestrator::processes::{HealthCheck, PodProcesses, ProcessSpec, Restart, Step};

/// The supervisor's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorConfig {
    /// `NAME=VALUE` environment of every process and exec (the pod's
    /// standard environment and secrets).
    #[serde(default)]
    pub env: Vec<String>,
    /// The pod's install steps and processes.
    #[serde(flatten)]
    pub pod: PodProcesses,
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
        let c: SupervisorConfig = serde_json::from_str(r#"{"env":["A=1"],"install":[{"name":"i","run":"true"}],"processes":[{"name":"web","run":"x"}]}"#).unwrap();
        assert_eq!(c.pod.install.len(), 1);
        assert_eq!(c.pod.processes[0].name, "web");
    }
}
