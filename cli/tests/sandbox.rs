//! Pods in real gVisor and libcontainer sandboxes, through the real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{runtime_cmd, Pinacle};
use reqwest::Method;

#[tokio::test]
async fn gvisor_pod_really_runs_under_gvisor() {
    let p = Pinacle::start().await;
    let pod = p.create_running("gv", "minimal", "gvisor").await;
    assert_eq!(pod["runtime"], "gvisor");
    // gVisor's own kernel log is the proof: the host kernel prints nothing like it.
    let (out, _, code) = p.exec("gv", &["dmesg"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("Starting gVisor"), "dmesg: {out}");
    // exit codes and the two streams come back apart
    let (out, err, code) = p.exec("gv", &["sh", "-c", "echo to-out; echo to-err >&2; exit 7"]).await;
    assert_eq!((out.as_str(), err.as_str(), code), ("to-out\n", "to-err\n", 7));
    // default working directory is the workspace, hostname the pod name
    let (out, _, _) = p.exec("gv", &["sh", "-c", "pwd; hostname"]).await;
    assert_eq!(out, "/workspace\ngv\n");
}

#[tokio::test]
async fn youki_pod_runs_on_the_host_kernel_with_tier_limits() {
    let p = Pinacle::start().await;
    let pod = p.create_running("yk", "minimal", "youki").await;
    assert_eq!(pod["runtime"], "youki");
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let (out, _, code) = p.exec("yk", &["uname", "-r"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), host_kernel.trim(), "libcontainer pods share the host kernel");
    let (out, _, _) = p.exec("yk", &["cat", "/proc/1/cmdline"]).await;
    assert!(out.contains("pinacle-supervisor"), "pid 1 is the pod's supervisor: {out:?}");
    // the tier's limits are in the pod's cgroup (dev.small: 2 GiB, 1 vCPU, 1024 pids)
    let sid = format!("pinacle-{}", pod["id"].as_str().unwrap().replace('-', ""));
    let cg = |ctl: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{ctl}/pinacle/{sid}/{file}")).map(|s| s.trim().to_owned())
    };
    assert_eq!(cg("memory", "memory.limit_in_bytes").unwrap(), (2u64 << 30).to_string());
    assert_eq!(cg("cpu", "cpu.cfs_quota_us").unwrap(), "100000");
    assert_eq!(cg("pids", "pids.max").unwrap(), "1024");
}

async fn workspace_survives_and_delete_cleans(runtime: &str, state_dir: &str) {
    let p = Pinacle::start().await;
    let pod = p.create_running("ws", "minimal", runtime).await;
    let id = pod["id"].as_str().unwrap().to_owned();
    let (_, _, code) = p.exec("ws", &["sh", "-c", "echo kept > /workspace/note; echo layer > /etc/layer"]).await;
    assert_eq!(code, 0);

    let (status, _) = p.call(Method::POST, "/api/v1/pods/ws/stop", None).await;
    assert_eq!(status, 202);
    p.wait_state("ws", "stopped", 60).await;
    assert!(p.sandboxes(state_dir).is_empty(), "no sandbox while stopped");

    let (status, _) = p.call(Method::POST, "/api/v1/pods/ws/start", None).await;
    assert_eq!(status, 202);
    p.wait_state("ws", "running", 60).await;
    let (out, _, _) = p.exec("ws", &["cat", "/workspace/note", "/etc/layer"]).await;
    assert_eq!(out, "kept\nlayer\n", "workspace and writable layer survive stop/start");

    let (status, _) = p.call(Method::DELETE, "/api/v1/pods/ws", None).await;
    assert_eq!(status, 202);
    p.wait_state(&id, "deleted", 60).await;
    assert!(p.sandboxes(state_dir).is_empty(), "sandbox removed");
    let simple = id.replace('-', "");
    assert!(!p.data.path().join("pods").join(&simple).exists(), "layer removed");
    assert!(!p.data.path().join("volumes").join(&simple).exists(), "volume removed");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&simple), "overlay unmounted");
    // the name is free again
    p.create_running("ws", "minimal", runtime).await;
    let (out, _, _) = p.exec("ws", &["ls", "/workspace"]).await;
    assert_eq!(out, "", "a new pod gets a fresh workspace");
}

#[tokio::test]
async fn gvisor_workspace_survives_stop_start_and_delete_removes_everything() {
    workspace_survives_and_delete_cleans("gvisor", "runsc").await;
}

#[tokio::test]
async fn youki_workspace_survives_stop_start_and_delete_removes_everything() {
    workspace_survives_and_delete_cleans("youki", "youki").await;
}

#[tokio::test]
async fn restart_during_provisioning_still_reaches_running() {
    let mut p = Pinacle::start().await;
    for name in ["r1", "r2", "r3"] {
        p.create(name, "minimal", "gvisor").await;
    }
    // Crash right away: jobs are queued or in flight.
    p.kill();
    p.restart().await;
    for name in ["r1", "r2", "r3"] {
        p.wait_state(name, "running", 60).await;
        let (out, _, code) = p.exec(name, &["hostname"]).await;
        assert_eq!((out.trim(), code), (name, 0));
    }
    // one sandbox per pod and none left over from the interrupted attempts
    assert_eq!(p.sandboxes("runsc").len(), 3, "{:?}", p.sandboxes("runsc"));
}

#[tokio::test]
async fn reconcile_restarts_a_pod_whose_sandbox_was_killed() {
    let p = Pinacle::start().await;
    let pod = p.create_running("victim", "minimal", "gvisor").await;
    let sid = format!("pinacle-{}", pod["id"].as_str().unwrap().replace('-', ""));
    let out = runtime_cmd("runsc", &p.runtime_state("runsc")).args(["delete", "--force", &sid]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // the agent notices, records it, and brings the pod back
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = events_of(&p, pod["id"].as_str().unwrap()).await;
        if events.iter().any(|e| e == "sandbox_lost") {
            break;
        }
        assert!(Instant::now() < deadline, "loss not noticed: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.wait_state("victim", "running", 60).await;
    let (_, _, code) = p.exec("victim", &["true"]).await;
    assert_eq!(code, 0);
}

/// Event names of a pod, read from its SSE stream's history.
async fn events_of(p: &Pinacle, id: &str) -> Vec<String> {
    let resp = p
        .http
        .get(format!("{}/api/v1/pods/{id}/events", p.url))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    let mut names = Vec::new();
    let mut body = resp;
    // read what is there now, without waiting for live events
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_millis(300), body.chunk()).await {
        for line in String::from_utf8_lossy(&chunk).lines() {
            if let Some(data) = line.strip_prefix("data:") {
                let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
                names.push(v["event"].as_str().unwrap().to_owned());
            }
        }
    }
    names
}

#[tokio::test]
async fn reconcile_removes_a_sandbox_no_pod_owns() {
    let p = Pinacle::start().await;
    // A sandbox named like ours, for a pod that does not exist.
    let bundle = tempfile::tempdir().unwrap();
    let rootfs = common::image_cache().join("busybox/rootfs");
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["sleep", "1000"], "cwd": "/", "env": ["PATH=/bin"]},
        "root": {"path": rootfs, "readonly": true},
        "hostname": "orphan",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}]}
    });
    std::fs::write(bundle.path().join("config.json"), config.to_string()).unwrap();
    let orphan = format!("pinacle-{}", uuid::Uuid::new_v4().simple());
    // ... and one that is not ours by name, which must be left alone.
    let foreign = format!("someone-else-{}", uuid::Uuid::new_v4().simple());
    let state = p.runtime_state("runsc");
    for id in [&orphan, &foreign] {
        // stdio to a file: a pipe would stay open as long as the sandbox runs
        let log = bundle.path().join("runsc.log");
        let status = runtime_cmd("runsc", &state)
            .arg("run")
            .arg("--detach")
            .arg(format!("--bundle={}", bundle.path().display()))
            .arg(id)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    // ... and an empty cgroup a sandbox killed mid-create left behind a while ago
    let stale_cgroup = std::path::PathBuf::from("/sys/fs/cgroup/pids/pinacle").join(format!("pinacle-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&stale_cgroup).unwrap();
    assert!(Command::new("touch").arg("-d").arg("5 minutes ago").arg(&stale_cgroup).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.sandboxes("runsc").contains(&orphan) || stale_cgroup.exists() {
        assert!(Instant::now() < deadline, "orphan sandbox {orphan} still there\n{}", p.server_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(p.sandboxes("runsc").contains(&foreign), "a sandbox that is not Pinacle's was removed");
}

#[tokio::test]
async fn pods_cannot_see_host_processes_or_files() {
    let p = Pinacle::start().await;
    let marker = format!("/var/tmp/pinacle-host-marker-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(&marker, "host secret").unwrap();
    let host_pid = p.pid().to_string();
    for (name, runtime) in [("iso-gv", "gvisor"), ("iso-yk", "youki")] {
        p.create_running(name, "minimal", runtime).await;
        let (_, _, code) = p.exec(name, &["cat", &marker]).await;
        assert_ne!(code, 0, "{runtime}: host file visible");
        let (out, _, _) = p.exec(name, &["ls", "/var/tmp", "/root"]).await;
        assert!(!out.contains("pinacle-host-marker"), "{runtime}: {out}");
        // only the pod's own processes: its supervisor and this command
        let (out, _, _) = p.exec(name, &["ps", "-o", "pid,args"]).await;
        let procs = out.lines().skip(1).count();
        assert!(procs <= 5, "{runtime}: sees {procs} processes:\n{out}");
        assert!(!out.contains("pinacle up"), "{runtime}: host process visible:\n{out}");
        let (_, _, code) = p.exec(name, &["kill", "-0", &host_pid]).await;
        assert_ne!(code, 0, "{runtime}: can signal host pid {host_pid}");
        let (out, _, _) = p.exec(name, &["cat", "/proc/1/cmdline"]).await;
        assert!(out.contains("pinacle-supervisor"), "{runtime}: pid 1 is not the pod's supervisor: {out}");
    }
    let _ = std::fs::remove_file(marker);
}

#[tokio::test]
async fn blank_template_runs_the_debian_base_image() {
    let p = Pinacle::start().await;
    assert!(
        common::image_cache().join("base/image.json").exists(),
        "base image not built; scripts/test.sh builds it with `pinacle image build base`"
    );
    p.create_running("deb", "blank", "gvisor").await;
    let (out, err, code) = p.exec("deb", &["bash", "-c", "python3 --version; git --version; tmux -V; . /etc/os-release; echo $VERSION_CODENAME"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Python 3.13"), "{out}");
    assert!(out.contains("git version"), "{out}");
    assert!(out.contains("tmux"), "{out}");
    assert!(out.trim_end().ends_with("trixie"), "Debian 13: {out}");
}

#[tokio::test]
async fn a_separate_agent_gets_its_jobs_and_serves_exec_over_its_link() {
    // `pinacle server` has no agent of its own: a pod it accepts only runs
    // on the `pinacle agent` that joined it, reached over that agent's link.
    let p = Pinacle::start_role("server").await;
    // A reconcile interval far beyond the test: only a job can start the pod.
    let _agent = p.spawn_host("h1", &["--pod-network", "none", "--reconcile-interval", "3600"]);
    // the host is known once it connects; until then there is no room
    let deadline = Instant::now() + Duration::from_secs(60);
    let pod = loop {
        let (s, body) = p
            .call(Method::POST, "/api/v1/pods", Some(serde_json::json!({"name": "split", "template": "minimal", "runtime": "gvisor"})))
            .await;
        if s == 202 {
            break body;
        }
        assert_eq!((s, body["error"]["code"].as_str()), (503, Some("no_capacity")), "{body}");
        assert!(Instant::now() < deadline, "agent never connected: {}", p.host_log("h1"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(pod["host"], "h1");
    p.wait_state("split", "running", 60).await;
    let state = p.host_dir("h1").join("runtime").join("runsc");
    assert_eq!(common::sandboxes_in(&state, "runsc").len(), 1, "the sandbox is the agent's");
    assert!(p.sandboxes("runsc").is_empty(), "the server runs no sandbox");
    let (out, err, code) = p.exec("split", &["sh", "-c", "echo hello from h1; echo oops >&2; exit 3"]).await;
    assert_eq!((out.as_str(), err.as_str(), code), ("hello from h1\n", "oops\n", 3));
    let (s, _) = p.call(Method::DELETE, "/api/v1/pods/split", None).await;
    assert_eq!(s, 202);
    p.wait_state(pod["id"].as_str().unwrap(), "deleted", 60).await;
    assert!(common::sandboxes_in(&state, "runsc").is_empty());
}
