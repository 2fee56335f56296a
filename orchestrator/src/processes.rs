//! What a pod runs: install steps and long-running processes, as a pod's
//! definition declares them. The in-pod supervisor carries them out.

use serde::{Deserialize, Serialize};

/// A pod's install steps and processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodProcesses {
    /// Run once, in order, before any process; a failed step stops the
    /// rest (and the processes) until the pod restarts.
    #[serde(default)]
    pub install: Vec<Step>,
    /// Kept running.
    #[serde(default)]
    pub processes: Vec<ProcessSpec>,
    /// `NAME=value` environment of every process, step and terminal (from
    /// the pod's definition; secrets are added by the host, not stored here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

/// An install step: a shell command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    /// Run with `/bin/sh -c`.
    pub run: String,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Run only until it first succeeds in this pod's root filesystem (a
    /// marker under `/var/lib/pinacle/steps` remembers it); otherwise at
    /// every start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub once: bool,
}

/// A long-running process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub name: String,
    /// Run with `/bin/sh -c`.
    pub run: String,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// The port it serves HTTP on: the process is then reachable through
    /// the proxy as `{name}-{pod}-{owner}.{domain}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// When a process that ended is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Whenever it ends (the default).
    #[default]
    Always,
    /// When it ends with a non-zero status or a signal.
    OnFailure,
    Never,
}

/// How a process's health is judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// A TCP connection to this port on 127.0.0.1 succeeds; with `path`, an
    /// HTTP GET of it answers below 400. 0: no port check (a `command` only).
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub path: Option<String>,
    /// A shell command that exits 0 when healthy (checked after the port,
    /// if any), given 10 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Seconds between checks (default 5).
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
}

fn default_interval() -> u64 {
    5
}

impl PodProcesses {
    /// Problems that make the configuration unusable, named by field.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.processes.iter().enumerate() {
            if p.name.is_empty() || !p.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("processes[{i}].name {:?}: use letters, digits, - and _", p.name));
            }
            if !names.insert(p.name.as_str()) {
                return Err(format!("processes[{i}].name {:?} is used twice", p.name));
            }
            if p.run.trim().is_empty() {
                return Err(format!("processes[{i}].run is empty"));
            }
            if let Some(port) = p.port {
                if port == 0 {
                    return Err(format!("processes[{i}].port must be 1 to 65535"));
                }
                if !crate::hostname::valid_service_name(&p.name) {
                    return Err(format!(
                        "processes[{i}].name {:?} serves a port, so it names a service in host names: use at most {} lower-case letters, digits and dashes, not only digits",
                        p.name,
                        crate::hostname::MAX_SERVICE
                    ));
                }
            }
            if let Some(h) = &p.health {
                if (h.port == 0 && h.command.as_deref().is_none_or(|c| c.trim().is_empty())) || h.interval_secs == 0 {
                    return Err(format!("processes[{i}].health: needs a port or a command, and a positive interval_secs"));
                }
            }
        }
        for (i, s) in self.install.iter().enumerate() {
            if s.run.trim().is_empty() {
                return Err(format!("install[{i}].run is empty"));
            }
        }
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_read_with_defaults_and_bad_ones_are_named() {
        let c: PodProcesses =
            serde_json::from_str(r#"{"processes":[{"name":"web","run":"python3 -m http.server","health":{"port":8000}}]}"#).unwrap();
        assert_eq!(c.processes[0].restart, Restart::Always);
        assert_eq!(c.processes[0].health.as_ref().unwrap().interval_secs, 5);
        assert!(c.validate().is_ok());
        let twice = PodProcesses { processes: vec![c.processes[0].clone(), c.processes[0].clone()], ..Default::default() };
        assert!(twice.validate().unwrap_err().contains("used twice"));
        let mut bad = c.clone();
        bad.processes[0].name = "a b".into();
        assert!(bad.validate().unwrap_err().contains("processes[0].name"));
        let empty = PodProcesses { install: vec![Step { name: "x".into(), run: " ".into(), cwd: None, once: false }], ..Default::default() };
        assert!(empty.validate().unwrap_err().contains("install[0].run"));
        let mut served = c.clone();
        served.processes[0].port = Some(8000);
        assert!(served.validate().is_ok());
        served.processes[0].name = "Web_App".into();
        assert!(served.validate().unwrap_err().contains("names a service"));
        served.processes[0].name = "web".into();
        served.processes[0].port = Some(0);
        assert!(served.validate().unwrap_err().contains("port"));
        let r: Restart = serde_json::from_str("\"on-failure\"").unwrap();
        assert_eq!(r, Restart::OnFailure);
    }
}
