//! What a pod does to its own files never reaches the host: the agent
//! (root on the host) follows no link a pod made, a pod's writes land on
//! its own size-limited disk, and the platform's secrets stay out of the
//! processes the agent starts. Real pods through the real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{HostCleanup, Pinacle};
use reqwest::Method;
use serde_json::Value;

fn simple_id(pod: &Value) -> String {
    pod["id"].as_str().unwrap().replace('-', "")
}

async fn stop(p: &Pinacle, pod: &str) {
    let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/{pod}/stop"), None).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state(pod, "stopped", 90).await;
}

async fn start(p: &Pinacle, pod: &str) {
    let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/{pod}/start"), None).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state(pod, "running", 120).await;
}

/// Removes a file the old agent would have written on the host, however
/// the test ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Finding #2: a pod that turns its `/etc` into a link to a host directory
/// (`/root`), or into a loop (`/etc -> /etc`), and restarts, leaves the
/// host's `/root` and `/etc` untouched and still starts.
#[tokio::test]
async fn a_pod_linking_its_etc_out_leaves_the_host_untouched() {
    const BR: &str = "pnctest20";
    let _cleanup = HostCleanup(BR);
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.40.0/24"]).await;
    let planted = Path::new("/root/resolv.conf");
    assert!(!planted.exists(), "{} exists before the test; remove it", planted.display());
    let _guard = RemoveOnDrop(planted.to_owned());
    let host_resolv = std::fs::symlink_metadata("/etc/resolv.conf").unwrap();
    let host_resolv_text = std::fs::read("/etc/resolv.conf").unwrap();
    for (pod, runtime, target) in [("lnk-root", "youki", "/root"), ("lnk-loop", "gvisor", "/etc")] {
        let created = p.create_running(pod, "minimal", runtime).await;
        let (_, err, code) = p.exec(pod, &["sh", "-c", &format!("mv /etc /e && ln -s {target} /etc && ls -ld /etc")]).await;
        assert_eq!(code, 0, "{pod}: {err}");
        stop(&p, pod).await;
        start(&p, pod).await;
        let (out, _, code) = p.exec(pod, &["echo", "still runs"]).await;
        assert_eq!((code, out.as_str()), (0, "still runs\n"), "{pod}");
        assert!(!planted.exists(), "{pod}: the agent wrote {} on the host", planted.display());
        let now = std::fs::symlink_metadata("/etc/resolv.conf").unwrap();
        assert_eq!((now.ino(), now.mtime(), now.mtime_nsec()), (host_resolv.ino(), host_resolv.mtime(), host_resolv.mtime_nsec()), "{pod}: host /etc/resolv.conf replaced");
        assert_eq!(std::fs::read("/etc/resolv.conf").unwrap(), host_resolv_text);
        // what the pod linked to got the file, inside the pod's own tree
        if target == "/root" {
            let layer = p.data.path().join("volumes").join(simple_id(&created)).join("disk/upper/root/resolv.conf");
            assert!(layer.exists(), "{pod}: resolv.conf should land in the pod's own /root layer");
        }
    }
}
