//! An OpenSSH client set up for a test's SSH gateway: its own keys and a
//! known_hosts that trusts only the gateway's host CA.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use reqwest::Method;

use super::common::Pinacle;

/// A client-side setup: keys and a known_hosts that trusts the host CA.
pub struct Client {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Client {
    pub async fn new(p: &Pinacle, port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (s, info) = p.call(Method::GET, "/api/v1/ssh", None).await;
        assert_eq!(s, 200, "{info}");
        assert_eq!(info["gateway"]["port"], port, "{info}");
        let ca = info["host_ca"].as_str().unwrap();
        std::fs::write(dir.path().join("known_hosts"), format!("@cert-authority [127.0.0.1]:{port} {ca}\n")).unwrap();
        Client { dir, port }
    }

    /// Makes key pair `name` (ssh-keygen); returns the private key's path.
    pub fn keygen(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        path
    }

    pub fn base_args(&self, key: &Path) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.dir.path().join("known_hosts").display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
        ]
    }

    /// `ssh -p PORT [extra] LOGIN@127.0.0.1 COMMAND`, bounded in time.
    pub fn ssh(&self, key: &Path, login: &str, extra: &[&str], command: &str) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg("60").arg("ssh").args(self.base_args(key)).args(["-p", &self.port.to_string()]).args(extra);
        cmd.arg(format!("{login}@127.0.0.1"));
        if !command.is_empty() {
            cmd.arg(command);
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    }
}

