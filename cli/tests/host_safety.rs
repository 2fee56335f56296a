//! What a pod does to its own files never reaches the host: the agent
//! (root on the host) follows no link a pod made, a pod's writes land on
//! its own size-limited disk, and the platform's secrets stay out of the
//! processes the agent starts. Real pods through the real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
    let cases = [("lnk-root-gv", "gvisor", "/root"), ("lnk-loop-gv", "gvisor", "/etc"), ("lnk-root-yk", "youki", "/root"), ("lnk-loop-yk", "youki", "/etc")];
    for (pod, runtime, target) in cases {
        let created = p.create_running(pod, "minimal", runtime).await;
        // (a youki pod's /etc/resolv.conf is a bind mount from the pod's
        // directory, which pins /etc: the move may be refused there)
        let script = format!("if mv /etc /e; then ln -s {target} /etc && ls -ld /etc; else echo pinned; fi");
        let (out, err, code) = p.exec(pod, &["sh", "-c", &script]).await;
        assert_eq!(code, 0, "{pod}: {err}");
        assert!(out.contains("/etc ->") || (runtime == "youki" && out.contains("pinned")), "{pod}: {out} {err}");
        stop(&p, pod).await;
        start(&p, pod).await;
        let (out, _, code) = p.exec(pod, &["echo", "still runs"]).await;
        assert_eq!((code, out.as_str()), (0, "still runs\n"), "{pod}");
        assert!(!planted.exists(), "{pod}: the agent wrote {} on the host", planted.display());
        let now = std::fs::symlink_metadata("/etc/resolv.conf").unwrap();
        assert_eq!((now.ino(), now.mtime(), now.mtime_nsec()), (host_resolv.ino(), host_resolv.mtime(), host_resolv.mtime_nsec()), "{pod}: host /etc/resolv.conf replaced");
        assert_eq!(std::fs::read("/etc/resolv.conf").unwrap(), host_resolv_text);
        // what the pod linked to got the file, inside the pod's own tree
        // (youki pods get theirs bound from the pod's directory instead)
        if target == "/root" && runtime == "gvisor" {
            let layer = p.data.path().join("volumes").join(simple_id(&created)).join("disk/upper/root/resolv.conf");
            assert!(layer.exists(), "{pod}: resolv.conf should land in the pod's own /root layer");
        }
    }
}

/// Bytes allocated on the host under `dir`, not crossing into other
/// filesystems (the pods' mounted disks and overlays) nor following links.
fn allocated(dir: &Path) -> u64 {
    let dev = std::fs::symlink_metadata(dir).unwrap().dev();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else { continue };
            if m.dev() != dev {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Finding #6: a pod that fills its disk and then writes without end to
/// `/.pinacle/run`, `/tmp` and its console (`/proc/1/fd/1`) gets "no space
/// left", while the host's data directory grows by less than 256 MiB
/// (the pod's disk is 20 GiB).
#[tokio::test]
async fn a_pod_writing_without_end_fills_only_its_own_disk() {
    let p = Pinacle::start().await;
    for runtime in ["youki", "gvisor"] {
        let pod = format!("fill-{runtime}");
        p.create_running(&pod, "minimal", runtime).await;
        let before = allocated(p.data.path());
        // the disk: allocated in one go (ext4 does not write the blocks, the
        // host image stays sparse), then the last bytes written
        let fill = "set -e; avail=$(df -k /workspace | awk 'NR==2 {print $4}'); \
                    fallocate -l $(( (avail - 4096) * 1024 )) /workspace/fill; \
                    dd if=/dev/zero of=/workspace/rest bs=1M count=16 2>/dev/null || true; df -k /workspace | awk 'NR==2 {print $4}'";
        let (out, err, code) = p.exec(&pod, &["sh", "-c", fill]).await;
        assert_eq!(code, 0, "{runtime}: {err}");
        assert!(out.trim().parse::<u64>().unwrap() < 1024, "{runtime}: the disk is not full: {out}");
        // /.pinacle/run is on the pod's disk now: full
        let (out, err, _) = p.exec(&pod, &["sh", "-c", "dd if=/dev/zero of=/.pinacle/run/x bs=1M count=64; echo rc=$?"]).await;
        assert!(out.contains("rc=1") && err.contains("No space left"), "{runtime}: /.pinacle/run took more: {out} {err}");
        // /tmp is a tmpfs of 512 MiB (the pod's memory)
        let (out, err, _) = p.exec(&pod, &["sh", "-c", "dd if=/dev/zero of=/tmp/x bs=1M count=600; echo rc=$?; rm -f /tmp/x"]).await;
        assert!(out.contains("rc=1") && err.contains("No space left"), "{runtime}: /tmp took more: {out} {err}");
        // the console: the init's output goes to a log on the pod's disk (a
        // youki pod's root cannot even open it: another uid on the host)
        let (out, err, _) = p.exec(&pod, &["sh", "-c", "dd if=/dev/zero bs=1M count=64 >> /proc/1/fd/1; echo rc=$?"]).await;
        assert!(out.contains("rc=1") && (err.contains("No space left") || err.contains("Permission denied")), "{runtime}: the console took more: {out} {err}");
        let grown = allocated(p.data.path()).saturating_sub(before);
        assert!(grown < 256 << 20, "{runtime}: the host's data directory grew by {grown} bytes");
        // the pod lives on and gets its space back
        let (out, _, code) = p.exec(&pod, &["sh", "-c", "rm -f /workspace/fill /workspace/rest /.pinacle/run/x && echo freed"]).await;
        assert_eq!((code, out.as_str()), (0, "freed\n"), "{runtime}");
    }
}

/// Finding #18: the platform's secrets stay out of the processes the agent
/// starts: neither the sandbox runtimes' long-lived processes nor a pod's
/// init hold the master key, the admin token or the GitHub secret.
#[tokio::test]
async fn sandbox_processes_inherit_none_of_the_platforms_secrets() {
    const MASTER_KEY: &str = "UElOQUNMRS1URVNULU1BU1RFUi1LRVktMzItQllURVM=";
    const GITHUB_SECRET: &str = "gh-test-secret-0f1e2d3c4b5a69788796a5b4";
    let p = Pinacle::start_with_env(&[], &[("PINACLE_MASTER_KEY", MASTER_KEY), ("PINACLE_GITHUB_CLIENT_SECRET", GITHUB_SECRET)]).await;
    for (pod, runtime) in [("env-gv", "gvisor"), ("env-yk", "youki")] {
        let created = p.create_running(pod, "minimal", runtime).await;
        let sid = format!("pinacle-{}", simple_id(&created));
        // the sandbox's processes: those naming it, and those in its cgroups
        let mut pids: std::collections::BTreeSet<u32> = std::collections::BTreeSet::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&sid) {
                pids.insert(pid);
            }
        }
        for hierarchy in ["pids", "memory", "unified"] {
            let procs = std::fs::read_to_string(format!("/sys/fs/cgroup/{hierarchy}/pinacle/{sid}/cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        assert!(!pids.is_empty(), "{pod}: no process of sandbox {sid} found");
        let mut read = 0;
        for pid in &pids {
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
            read += 1;
            let environ = String::from_utf8_lossy(&environ);
            for secret in [MASTER_KEY, common::TOKEN, GITHUB_SECRET] {
                assert!(!environ.contains(secret), "{pod}: process {pid} holds a secret in its environment: {environ:?}");
            }
            assert!(!environ.contains("PINACLE_MASTER_KEY") && !environ.contains("PINACLE_ADMIN_TOKEN"), "{pod}: {pid}: {environ:?}");
        }
        assert!(read > 0, "{pod}: no environment of {pids:?} could be read");
    }
}

/// Finding #11: a pod's 1 TiB sparse file, a Unix socket and a FIFO in its
/// home do not break or stall a snapshot (they are skipped and listed), and
/// a restore brings back owners and modes.
#[tokio::test]
async fn snapshots_survive_sparse_files_and_sockets_and_restore_owners() {
    let p = Pinacle::start().await;
    p.create_running("snap", "minimal", "youki").await;
    let setup = "truncate -s 1099511627776 /workspace/big && echo hi > /workspace/owned && chown 1000:1000 /workspace/owned && \
                 chmod 640 /workspace/owned && mkfifo /root/fifo && (cp -a /.pinacle/run/supervisor.sock /root/sock || true) && \
                 for i in 1 2 3 4 5 6 7 8 9 10; do [ -S /root/sock ] && break; sleep 0.2; done; ls -a /root; ls -l /root/sock";
    let (out, err, code) = p.exec("snap", &["sh", "-c", setup]).await;
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("sock"), "no socket made: {out}");
    stop(&p, "snap").await;
    let t0 = std::time::Instant::now();
    let (s, snap) = p.call(Method::POST, "/api/v1/pods/snap/snapshots", Some(serde_json::json!({"name": "sparse"}))).await;
    println!("snapshot of a pod with a 1 TiB sparse file: {:?}", t0.elapsed());
    assert_eq!(s, 201, "{snap}");
    assert!(snap["size_bytes"].as_u64().unwrap() < 1 << 20, "{snap}");
    let skipped: Vec<&str> = snap["skipped"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(skipped.contains(&"home/sock") && skipped.contains(&"home/fifo"), "{snap}");
    // change the owner, mode and contents, then restore
    start(&p, "snap").await;
    let (_, err, code) = p.exec("snap", &["sh", "-c", "chown 0:0 /workspace/owned && chmod 600 /workspace/owned && echo changed > /workspace/owned && rm /workspace/big"]).await;
    assert_eq!(code, 0, "{err}");
    stop(&p, "snap").await;
    let id = snap["id"].as_str().unwrap();
    let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/snap/snapshots/{id}/restore"), None).await;
    assert_eq!(s, 200, "{b}");
    start(&p, "snap").await;
    let (out, err, code) = p.exec("snap", &["sh", "-c", "stat -c '%u:%g %a' /workspace/owned && cat /workspace/owned && stat -c %s /workspace/big"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1000:1000 640\nhi\n1099511627776\n");
}

/// The console log lives on the pod's disk now (finding #6): while the pod
/// runs it is read from there, and a stopped pod's log is the tail kept in
/// its directory when the disk was unmounted.
#[tokio::test]
async fn the_console_log_is_readable_while_running_and_after_a_stop() {
    let p = Pinacle::start().await;
    let pod = p.create_running("cons", "minimal", "gvisor").await;
    let logs = || async {
        let r = p.http.get(format!("{}/api/v1/pods/cons/logs", p.url)).bearer_auth(common::TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let running = logs().await;
    assert!(running.contains("pinacle-supervisor: listening"), "{running:?}");
    stop(&p, "cons").await;
    let kept = p.data.path().join("pods").join(simple_id(&pod)).join("console.log");
    assert!(std::fs::metadata(&kept).unwrap().len() <= 64 * 1024);
    let stopped = logs().await;
    assert!(stopped.starts_with(&running), "a stopped pod's log is the kept tail: {stopped:?}");
    // nothing of the console lives in the pod's directory while it runs
    start(&p, "cons").await;
    let on_disk = p.data.path().join("volumes").join(simple_id(&pod)).join("disk/console.log");
    assert!(on_disk.exists() && on_disk.with_extension("log.1").exists(), "the log rotates on the pod's disk each start");
}

/// Mounts a stopped pod's disk image at a fresh directory for the test to
/// change what a crash would have left; unmounted when dropped.
struct MountedDisk {
    dir: tempfile::TempDir,
}

impl MountedDisk {
    fn of(p: &Pinacle, pod: &Value) -> Self {
        let image = p.data.path().join("volumes").join(simple_id(pod)).join("disk.img");
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount").args(["-o", "loop"]).arg(&image).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
        Self { dir }
    }
}

impl Drop for MountedDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).output();
    }
}

/// Finding #12: a restore a crash cut short never leaves a pod with its
/// volumes missing: a volume an older agent moved aside comes back, and a
/// committed restore (journal written, first volume swapped) is finished
/// when the disk is next mounted.
#[tokio::test]
async fn a_restore_cut_short_by_a_crash_is_finished_or_undone_on_the_next_start() {
    let p = Pinacle::start().await;
    let pod = p.create_running("crash", "minimal", "gvisor").await;
    let (_, err, code) = p.exec("crash", &["sh", "-c", "echo mine > /workspace/data && echo rc > /root/.rc"]).await;
    assert_eq!(code, 0, "{err}");
    stop(&p, "crash").await;
    // the old agent's crash: /workspace renamed aside, not yet replaced
    {
        let disk = MountedDisk::of(&p, &pod);
        std::fs::rename(disk.dir.path().join("workspace"), disk.dir.path().join(".old-workspace")).unwrap();
    }
    start(&p, "crash").await;
    let (out, _, code) = p.exec("crash", &["cat", "/workspace/data"]).await;
    assert_eq!((code, out.as_str()), (0, "mine\n"), "the moved-aside workspace was not put back");
    stop(&p, "crash").await;
    // a committed restore cut short after its first swap: the workspace is
    // the restored one already, the home not yet
    {
        let disk = MountedDisk::of(&p, &pod);
        let root = disk.dir.path();
        let staging = root.join(".restore");
        for v in ["workspace", "home"] {
            std::fs::create_dir_all(staging.join(v)).unwrap();
            std::fs::write(staging.join(v).join("restored"), format!("restored {v}")).unwrap();
        }
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let journal = serde_json::json!({"snapshot": "test", "volumes": [["workspace", ino(&staging.join("workspace"))], ["home", ino(&staging.join("home"))]]});
        std::fs::write(staging.join("READY"), journal.to_string()).unwrap();
        // the first swap happened
        let (a, b) = (staging.join("workspace"), root.join("workspace"));
        std::fs::rename(&b, root.join("swap")).unwrap();
        std::fs::rename(&a, &b).unwrap();
        std::fs::rename(root.join("swap"), &a).unwrap();
    }
    start(&p, "crash").await;
    let (out, err, code) = p.exec("crash", &["sh", "-c", "cat /workspace/restored; echo; cat /root/restored; echo; ls /workspace; ls /root"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "restored workspace\nrestored home\nrestored\nrestored\n", "both volumes are the restored ones");
    let disk_root = p.data.path().join("volumes").join(simple_id(&pod)).join("disk");
    assert!(!disk_root.join(".restore").exists(), "the old volumes are gone once the restore finished");
}

/// Finding #18, the exec path of pods without a supervisor: the
/// environment given to a command reaches it, but never a host command
/// line (`/proc/*/cmdline` is world-readable): runsc reads it from a
/// private file, pinacle-youki from its own environment.
#[tokio::test]
async fn exec_without_a_supervisor_keeps_its_environment_off_host_command_lines() {
    const VALUE: &str = "exec-secret-6a1f0c9e2b";
    let p = Pinacle::start_with_env(&[], &[("PINACLE_SUPERVISOR", "/nonexistent/pinacle-supervisor")]).await;
    // runsc reads it from a private file; pinacle-youki from its own environment
    for (pod, runtime) in [("bare", "gvisor"), ("bare-yk", "youki")] {
        p.create_running(pod, "minimal", runtime).await;
        let (http, url) = (p.http.clone(), p.url.clone());
        let exec = tokio::spawn(async move {
            let body = serde_json::json!({"command": ["sh", "-c", "sleep 3; echo \"got $SECRET_X\""], "env": {"SECRET_X": VALUE}});
            let r = http.post(format!("{url}/api/v1/pods/{pod}/exec")).bearer_auth(common::TOKEN).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2500);
        let mut scans = 0;
        while std::time::Instant::now() < deadline {
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                assert!(!String::from_utf8_lossy(&cmdline).contains(VALUE), "a host command line holds the secret: {:?}", String::from_utf8_lossy(&cmdline));
            }
            scans += 1;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(scans > 5);
    let out = exec.await.unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("got {VALUE}\n"));
    assert!(out.contains(&b64), "the command did not get its environment: {out}");
    }
}
