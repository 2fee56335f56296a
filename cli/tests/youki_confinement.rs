//! Security review finding #1: youki pods run on the host's kernel, so they
//! must be confined like Docker's defaults: a syscall filter, a user
//! namespace (pod root is not host root), the device cgroup allow-list and
//! masked kernel paths; and only tenants the administrator allows may have
//! them at all. Real `pinacle up`, real youki pods.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

/// `syscall(NR, args...)` from Perl (Debian's essential perl-base): prints
/// the return value and errno. String arguments go in variables (Perl
/// passes their buffers).
fn perl_syscall(nr: u32, args: &str) -> String {
    format!("my ($s1, $s2, $s3) = (\"none\", \"/mnt\", \"tmpfs\"); $r = syscall({nr}{args}); print \"$r $!\\n\";")
}

#[tokio::test(flavor = "multi_thread")]
async fn youki_pods_are_filtered_unprivileged_and_masked() {
    let p = Pinacle::start().await;
    // the Debian base image: perl for raw system calls
    p.create_running("conf", "blank", "youki").await;

    // the seccomp filter is on (mode 2) for the pod's processes
    let (out, err, code) = p.exec("conf", &["grep", "Seccomp:", "/proc/self/status"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.split_whitespace().nth(1) == Some("2"), "Seccomp mode: {out}");

    // pod root: uid 0 in the pod, a high unprivileged uid on the host
    let (out, _, _) = p.exec("conf", &["cat", "/proc/self/uid_map"]).await;
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields, ["0", "1000000000", "65536"], "uid map {out}");
    let (out, _, _) = p.exec("conf", &["id", "-u"]).await;
    assert_eq!(out.trim(), "0");

    // refused: new user namespaces, mounts, kernel keyrings, BPF (x86-64
    // numbers: unshare 272, mount 165, keyctl 250, add_key 248, bpf 321)
    let ops = [
        ("unshare(CLONE_NEWUSER)", perl_syscall(272, ", 0x10000000")),
        ("mount", perl_syscall(165, ", $s1, $s2, $s3, 0, 0")),
        ("keyctl(GET_KEYRING_ID)", perl_syscall(250, ", 0, -4, 0")),
        ("add_key", perl_syscall(248, ", $s3, $s1, $s2, 1, -4")),
        ("bpf", perl_syscall(321, ", 0, 0, 0")),
    ];
    for (what, script) in &ops {
        let (out, err, code) = p.exec("conf", &["perl", "-e", script]).await;
        assert_eq!(code, 0, "{what}: {err}");
        assert!(out.starts_with("-1 "), "{what} must fail: {out}");
        assert!(out.contains("Operation not permitted"), "{what}: {out}");
    }
    // the command-line tools say the same
    let (_, _, code) = p.exec("conf", &["unshare", "-U", "true"]).await;
    assert_ne!(code, 0, "unshare -U must fail");
    let (_, _, code) = p.exec("conf", &["mount", "-t", "tmpfs", "none", "/mnt"]).await;
    assert_ne!(code, 0, "mount must fail");

    // ordinary work still works: processes, threads, files anywhere in the
    // root file system, owned by pod root
    let script = "set -e; echo hi > /etc/pinacle-test; mkdir -p /opt/x; rm -rf /opt/x; rm /etc/hostname; \
                  perl -e 'if (fork) { wait; print \"forked\\n\" } else { exit 0 }'; \
                  stat -c '%u:%g' /etc/pinacle-test /workspace; ls -la /workspace >/dev/null; echo done";
    let (out, err, code) = p.exec("conf", &["sh", "-c", script]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("forked") && out.contains("0:0\n0:0") && out.ends_with("done\n"), "{out}");

    // masked kernel paths: power meters, the keyring list, timers and the
    // host's cgroups read as empty
    let (out, _, _) = p
        .exec("conf", &["sh", "-c", "ls /sys/devices/virtual/powercap 2>/dev/null | wc -l; wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/fs/cgroup | wc -l"])
        .await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "0", "0", "0"], "{out}");
    // read-only kernel paths
    let (_, _, code) = p.exec("conf", &["sh", "-c", "echo h > /proc/sysrq-trigger"]).await;
    assert_ne!(code, 0, "/proc/sysrq-trigger must be read-only");

    // devices: only the allow-list (no raw disks even if a node is made)
    let (out, _, _) = p.exec("conf", &["sh", "-c", "head -c 1 /dev/vda 2>&1; ls /dev"]).await;
    assert!(!out.contains("vda\n") || out.contains("No such file") || out.contains("not permitted"), "{out}");

    // the host sees the pod's processes under the pod's host uid, never 0
    let (_, _, code) = p.exec("conf", &["sh", "-c", "sleep 300 >/dev/null 2>&1 &"]).await;
    assert_eq!(code, 0);
    let pod = p.call(Method::GET, "/api/v1/pods/conf", None).await.1;
    let sandbox = format!("pinacle-{}", pod["id"].as_str().unwrap().replace('-', ""));
    let mut uids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if !cgroup.contains(&sandbox) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            uids.push(line.split_whitespace().nth(1).unwrap().to_owned());
        }
    }
    assert!(uids.len() >= 2, "the pod's processes are in its cgroup: {uids:?}");
    assert!(uids.iter().all(|u| u == "1000000000"), "host uids of the pod's processes: {uids:?}");

    // files the pod made are owned by uid 0 on the pod's disk (nothing is
    // chowned; the host reads them like a gVisor pod's)
    let disk = p.data.path().join("volumes").join(pod["id"].as_str().unwrap().replace('-', "")).join("disk");
    use std::os::unix::fs::MetadataExt;
    let made = std::fs::metadata(disk.join("upper/etc/pinacle-test")).unwrap();
    assert_eq!((made.uid(), made.gid()), (0, 0));

    // stop and start: the id-mapped mounts go and come back
    let (s, b) = p.call(Method::POST, "/api/v1/pods/conf/stop", None).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state("conf", "stopped", 120).await;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&format!("{}/idmap", pod["id"].as_str().unwrap().replace('-', ""))), "id-mapped layers unmounted at stop");
    let (s, b) = p.call(Method::POST, "/api/v1/pods/conf/start", None).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state("conf", "running", 120).await;
    let (out, _, code) = p.exec("conf", &["cat", "/etc/pinacle-test"]).await;
    assert_eq!((code, out.as_str()), (0, "hi\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_tenants_the_administrator_allows_get_youki() {
    let p = Pinacle::start_default_policy(&[]).await;
    let alice = p.signup_and_login("alice").await;
    // default: gVisor for everyone
    let (s, b) = p
        .call_as(&alice, Method::POST, "/api/v1/pods", Some(json!({"name": "k", "template": "minimal", "runtime": "youki"})))
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["code"], "runtime_not_allowed", "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("gvisor"), "{b}");
    // nothing was created
    let (_, list) = p.call_as(&alice, Method::GET, "/api/v1/pods", None).await;
    assert_eq!(list["pods"].as_array().unwrap().len(), 0, "{list}");
    // a pod that asks for nothing gets gVisor
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/pods", Some(json!({"name": "g", "template": "minimal"}))).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["runtime"], "gvisor", "{b}");

    // only the administrator changes it
    let (s, _) = p.call_as(&alice, Method::PATCH, "/api/v1/admin/settings", Some(json!({"youki": {"everyone": true}}))).await;
    assert!(s == 403 || s == 404, "{s}");
    let (s, b) = p.call(Method::PATCH, "/api/v1/admin/settings", Some(json!({"youki": {"tiers": ["no-such-tier"]}}))).await;
    assert_eq!(s, 400, "{b}");

    // allowed per team: acme's pods, not alice's personal ones
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/teams", Some(json!({"name": "acme"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = p.call(Method::PATCH, "/api/v1/admin/settings", Some(json!({"youki": {"teams": ["acme"]}}))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["youki"]["teams"], json!(["acme"]));
    let (s, b) = p
        .call_as(&alice, Method::POST, "/api/v1/pods", Some(json!({"name": "t", "template": "minimal", "runtime": "youki", "team": "acme"})))
        .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["runtime"], "youki");
    let (s, _) = p
        .call_as(&alice, Method::POST, "/api/v1/pods", Some(json!({"name": "k", "template": "minimal", "runtime": "youki"})))
        .await;
    assert_eq!(s, 403);

    // allowed per tier
    let (s, _) = p.call(Method::PATCH, "/api/v1/admin/settings", Some(json!({"youki": {"tiers": ["dev.medium"]}}))).await;
    assert_eq!(s, 200);
    let (s, b) = p
        .call_as(&alice, Method::POST, "/api/v1/pods", Some(json!({"name": "k", "template": "minimal", "runtime": "youki", "tier": "dev.medium"})))
        .await;
    assert_eq!(s, 202, "{b}");
    let (s, _) = p
        .call_as(&alice, Method::POST, "/api/v1/pods", Some(json!({"name": "k2", "template": "minimal", "runtime": "youki", "tier": "dev.small"})))
        .await;
    assert_eq!(s, 403);

    // the change is audited
    let (_, audit) = p.call(Method::GET, "/api/v1/audit", None).await;
    assert!(audit.to_string().contains("youki="), "{audit}");
}
