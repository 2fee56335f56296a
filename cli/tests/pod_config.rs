//! Pods from pinacle.yaml and devcontainer.json through the API and the CLI,
//! the services registry in real pods, a template serving through the proxy,
//! tier limits, persistent volumes across an image change, and snapshots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{cli, free_port, HostCleanup, Pinacle};
use reqwest::Method;
use serde_json::{json, Value};


/// Waits until every named process of `pod` is running and healthy.
async fn wait_healthy(p: &Pinacle, pod: &str, names: &[&str], secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, st) = p.call(Method::GET, &format!("/api/v1/pods/{pod}/processes"), None).await;
        assert_eq!(s, 200, "{st}");
        let healthy = |n: &str| {
            st["processes"].as_array().unwrap().iter().any(|x| x["name"] == n && x["state"] == "running" && x["healthy"] == true)
        };
        if names.iter().all(|n| healthy(n)) {
            return st;
        }
        if Instant::now() > deadline {
            let mut logs = String::new();
            for n in names.iter().chain(["install"].iter()) {
                let r = p.http.get(format!("{}/api/v1/pods/{pod}/processes/{n}/logs", p.url)).bearer_auth(common::TOKEN).send().await.unwrap();
                logs.push_str(&format!("--- {n}\n{}\n", r.text().await.unwrap()));
            }
            panic!("{pod}: {names:?} not healthy after {secs} s: {st}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn pods_come_from_pinacle_yaml_and_devcontainer_json_and_bad_files_are_refused_whole() {
    let p = Pinacle::start().await;

    // the schema is public and is the file kept in the repository
    let r = reqwest::get(format!("{}/api/v1/schemas/pinacle.json", p.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    let served: Value = r.json().await.unwrap();
    let kept: Value = serde_json::from_str(include_str!("../../config/pinacle.schema.json")).unwrap();
    assert_eq!(served, kept);

    // a bad file: every problem, located, and nothing created
    let bad = "version: \"1.0\"\ntier: dev.smal\nservices: [code-sever]\nprocesses:\n  - name: app\n";
    let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "bad", "config": bad}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_config")), "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(message.contains("pinacle.yaml:2:7: error: tier: unknown tier \"dev.smal\"") && message.contains("did you mean \"dev.small\"?"), "{message}");
    assert!(message.contains("pinacle.yaml:3:12: error: services[0]") && message.contains("did you mean \"code-server\"?"), "{message}");
    assert!(message.contains("pinacle.yaml:5:5: error: processes[0]: missing field startCommand"), "{message}");
    let details = b["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 3, "{b}");
    assert_eq!((details[0]["line"].as_u64(), details[0]["column"].as_u64(), details[0]["path"].as_str()), (Some(2), Some(7), Some("tier")));
    let (_, list) = p.call(Method::GET, "/api/v1/pods", None).await;
    assert!(list["pods"].as_array().unwrap().is_empty(), "nothing half-created: {list}");
    let (s, v) = p.call(Method::POST, "/api/v1/config/validate", Some(json!({"config": "tier: dev.large\nservices: [postgres]\nprots: [1]\n"}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["warnings"][0]["suggestion"], "did you mean \"ports\"?");
    assert_eq!(v["resolved"]["limits"]["vcpus"], 4);
    let (s, v) = p.call(Method::POST, "/api/v1/config/validate", Some(json!({"config": "services: [code-server]\n"}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["warnings"], json!([]), "{v}");
    assert_eq!(v["resolved"]["processes"][0]["name"], "code-server", "{v}");
    let (s, v) = p.call(Method::POST, "/api/v1/config/validate", Some(json!({"config": "prots: [1]\n", "strict": true}))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_config")), "{v}");

    // the CLI says the same thing offline, with the line and a caret
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pinacle.yaml"), bad).unwrap();
    let (code, _, err) = cli(&p, &["config", "validate", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pinacle.yaml:2:7: error: tier") && err.contains("   2 | tier: dev.smal") && err.contains("      ^"), "{err}");
    // config init writes the canonical file, which validates
    std::fs::remove_file(dir.path().join("pinacle.yaml")).unwrap();
    let (code, out, err) = cli(&p, &["config", "init", "--dir", dir.path().to_str().unwrap(), "--template", "vite", "--service", "postgres"]);
    assert_eq!(code, 0, "{out}{err}");
    let written = std::fs::read_to_string(dir.path().join("pinacle.yaml")).unwrap();
    assert!(written.starts_with("# Pinacle Pod Configuration\n") && written.contains("template: vite\n") && written.contains("  - postgres\n"), "{written}");
    let (code, out, err) = cli(&p, &["config", "validate", dir.path().join("pinacle.yaml").to_str().unwrap(), "--strict"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is valid: image vite"), "{out}");
    let (code, _, err) = cli(&p, &["config", "init", "--dir", dir.path().to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");

    // a pod from a repository's pinacle.yaml: env, processes with a URL and
    // a health check command, a public port, the lifecycle hooks in order
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("pinacle.yaml"),
        r#"version: 1.0
template: minimal
services: [web-terminal]
env:
  GREETING: hello from pinacle.yaml
  PORT: 8080
onCreate: echo oncreate >> /workspace/hooks.log
install:
  - echo install >> /workspace/hooks.log
  - echo '<h1>yaml</h1>' > /workspace/index.html
postCreate: echo postcreate >> /workspace/hooks.log
postStart: echo poststart >> /workspace/hooks.log
processes:
  - name: web
    displayName: Web
    startCommand: exec busybox httpd -f -p $PORT -h /workspace
    url: http://localhost:8080
    healthCheck: test -s /workspace/index.html
ports:
  - port: 8080
    public: true
"#,
    )
    .unwrap();
    let (code, out, err) = cli(&p, &["pod", "create", "from-yaml", "--from", repo.path().to_str().unwrap(), "--runtime", "youki", "--wait", "--timeout", "120"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_healthy(&p, "from-yaml", &["web"], 60).await;
    let (out, _, code) = p.exec("from-yaml", &["sh", "-c", "echo $GREETING; cat /workspace/hooks.log"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "hello from pinacle.yaml\noncreate\ninstall\npostcreate\npoststart\n");
    let pod = p.pod("from-yaml").await;
    assert_eq!(pod["public_ports"], json!([8080]), "{pod}");
    assert_eq!(pod["tabs"][0], json!({"kind": "pod", "name": "Web", "service": null, "port": 8080, "path": "/"}), "{pod}");
    assert_eq!(pod["tabs"][1]["kind"], "terminal", "{pod}");
    assert_eq!(pod["config"]["env"]["PORT"], "8080");
    // run-once steps do not run again on a restart; postStart does
    p.call(Method::POST, "/api/v1/pods/from-yaml/stop", None).await;
    p.wait_state("from-yaml", "stopped", 60).await;
    p.call(Method::POST, "/api/v1/pods/from-yaml/start", None).await;
    p.wait_state("from-yaml", "running", 60).await;
    wait_healthy(&p, "from-yaml", &["web"], 60).await;
    let (out, _, _) = p.exec("from-yaml", &["cat", "/workspace/hooks.log"]).await;
    assert_eq!(out, "oncreate\ninstall\npostcreate\npoststart\npoststart\n");

    // a repository with only a devcontainer.json
    let dc = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dc.path().join(".devcontainer")).unwrap();
    std::fs::write(
        dc.path().join(".devcontainer/devcontainer.json"),
        r#"{
  // JSONC: comments and trailing commas; an image of this host by name
  // (registry images: cli/tests/registry_images.rs)
  "image": "base",
  "containerEnv": { "FROM_DEVCONTAINER": "yes", },
  "postCreateCommand": ["sh", "-c", "echo made > /workspace/made.txt"],
  "forwardPorts": [3000],
  "remoteUser": "vscode",
}"#,
    )
    .unwrap();
    let (code, out, err) = cli(&p, &["pod", "create", "from-dc", "--from", dc.path().to_str().unwrap(), "--runtime", "youki", "--wait", "--timeout", "120"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("\"remoteUser\" is not supported"), "the import reports what it ignored: {err}");
    // a Dockerfile beside .devcontainer (`../Dockerfile`) becomes a build
    // from the repository's root; one outside the repository is refused
    let df = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(df.path().join("repo/.devcontainer")).unwrap();
    std::fs::write(df.path().join("repo/Dockerfile"), "FROM debian:bookworm\nRUN apt-get install -y jq\n").unwrap();
    std::fs::write(df.path().join("outside.Dockerfile"), "FROM debian:bookworm\n").unwrap();
    let dc_json = df.path().join("repo/.devcontainer/devcontainer.json");
    std::fs::write(&dc_json, r#"{"build": {"dockerfile": "../Dockerfile", "context": ".."}}"#).unwrap();
    let repo_dir = df.path().join("repo");
    let (code, out, err) = cli(&p, &["config", "validate", repo_dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["config"]["imageBuild"], json!({"dockerfile": "Dockerfile", "context": "."}), "{v}");
    std::fs::write(&dc_json, r#"{"build": {"dockerfile": "../../outside.Dockerfile"}}"#).unwrap();
    let (code, _, err) = cli(&p, &["config", "validate", repo_dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("leaves the repository"), "{err}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (out, _, _) = p.exec("from-dc", &["sh", "-c", "echo $FROM_DEVCONTAINER; cat /workspace/made.txt 2>/dev/null; cat /etc/debian_version"]).await;
        if out.starts_with("yes\nmade\n13") {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(p.pod("from-dc").await["image"], "base");
}

#[tokio::test]
async fn registry_services_start_and_pass_their_health_checks() {
    let p = Pinacle::start().await;
    // postgres and redis come from the registry; the test image has them
    // installed, so their (idempotent) install steps need no network
    let config = "image: services\nservices: [web-terminal, postgres, redis]\n";
    for (pod, runtime) in [("svc-yk", "youki"), ("svc-gv", "gvisor")] {
        let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": pod, "config": config, "runtime": runtime}))).await;
        assert_eq!(s, 202, "{b}");
        p.wait_state(pod, "running", 120).await;
        let st = wait_healthy(&p, pod, &["postgres", "redis"], 120).await;
        assert!(st["install"].as_array().unwrap().iter().all(|s| s["state"] == "done"), "{st}");
        let (out, err, code) = p.exec(pod, &["su", "postgres", "-c", "psql -tAc 'select 6 * 7'"]).await;
        assert_eq!((code, out.trim()), (0, "42"), "{runtime}: {err}");
        let (out, err, code) = p.exec(pod, &["redis-cli", "ping"]).await;
        assert_eq!((code, out.trim()), (0, "PONG"), "{runtime}: {err}");
        // web-terminal: the pod's own pty over the supervisor
        let mut ws = common::terminal(&p, pod, "").await;
        use futures::{SinkExt, StreamExt};
        ws.send(tokio_tungstenite::tungstenite::Message::Binary(b"echo $((40+2))-ok\n".to_vec().into())).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut screen = String::new();
        while !screen.contains("42-ok") {
            assert!(Instant::now() < deadline, "{screen}");
            if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
                screen.push_str(&String::from_utf8_lossy(&m.into_data()));
            }
        }
        let pod_view = p.pod(pod).await;
        assert_eq!(pod_view["tabs"], json!([{"kind": "terminal", "name": "Terminal", "service": "web-terminal", "command": null}]));
    }
}

#[tokio::test]
async fn a_vite_pod_serves_its_dev_server_through_the_proxy() {
    const BR: &str = "pnctest5";
    let _cleanup = HostCleanup(BR);
    let proxy = free_port();
    let proxy_arg = format!("127.0.0.1:{proxy}");
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.17.0/24", "--proxy-listen", &proxy_arg]).await;
    // no egress: the dependencies come from the image's npm cache
    let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "vt", "template": "vite", "runtime": "youki", "egress": "deny-all"}))).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["image"], "vite");
    p.wait_state("vt", "running", 120).await;
    wait_healthy(&p, "vt", &["app"], 180).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let get = |path: &'static str| {
        http.get(format!("http://127.0.0.1:{proxy}{path}")).header("host", "app-vt-admin.pinacle.localhost").bearer_auth(common::TOKEN).send()
    };
    let r = get("/").await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("<div id=\"app\"></div>") && page.contains("/@vite/client"), "{page}");
    let r = get("/src/main.js").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Hello from Vite on Pinacle"));
    // the starter files are the user's, in /workspace
    let (out, _, code) = p.exec("vt", &["ls", "/workspace"]).await;
    assert_eq!(code, 0);
    for f in ["index.html", "package.json", "node_modules", "src"] {
        assert!(out.lines().any(|l| l == f), "{f} missing: {out}");
    }
}

#[tokio::test]
async fn tier_limits_hold_memory_cpu_and_disk() {
    let p = Pinacle::start().await;
    for (pod, runtime) in [("lim-yk", "youki"), ("lim-gv", "gvisor")] {
        p.create_running(pod, "blank", runtime).await;
        p.create_running(&format!("{pod}-2"), "minimal", runtime).await;

        // memory: dev.small has 2 GiB; a 3 GiB hog is killed, the pod lives on
        let (_, err, code) = p.exec(pod, &["python3", "-c", "x = b'a' * (3 << 30); print(len(x))"]).await;
        assert!(code == 137 || (code == 1 && err.contains("MemoryError")), "{runtime}: a 3 GiB hog ended with {code}: {err}");
        let (out, _, code) = p.exec(pod, &["echo", "still here"]).await;
        assert_eq!((code, out.as_str()), (0, "still here\n"), "{runtime}");
        let (out, _, code) = p.exec(&format!("{pod}-2"), &["echo", "neighbour fine"]).await;
        assert_eq!((code, out.as_str()), (0, "neighbour fine\n"), "{runtime}");

        // CPU: dev.small has one CPU; two busy processes for 2 s get about
        // 2 CPU-seconds in all, not the 4 two free cores would give
        let busy = "import os, time, resource\nfor _ in range(2):\n    if os.fork() == 0:\n        end = time.time() + 2\n        while time.time() < end: pass\n        os._exit(0)\nfor _ in range(2): os.wait()\nu = resource.getrusage(resource.RUSAGE_CHILDREN)\nprint(u.ru_utime + u.ru_stime)\n";
        // The sandbox's cgroup is the measure (gVisor's own accounting counts
        // time its threads waited for the host's CPU as use, so a busy host
        // inflates what the pod reports); the pod's own figure where the
        // cgroup cannot be read.
        let pod_id = p.pod(pod).await["id"].as_str().unwrap().to_owned();
        let before = cgroup_cpu_usec(&pod_id);
        let (out, err, code) = p.exec(pod, &["python3", "-c", busy]).await;
        assert_eq!(code, 0, "{err}");
        let reported: f64 = out.trim().parse().unwrap();
        assert!(reported > 0.5, "{runtime}: the busy processes barely ran ({reported} CPU-seconds)");
        let cpu = match (before, cgroup_cpu_usec(&pod_id)) {
            (Some(b), Some(a)) => a.saturating_sub(b) as f64 / 1e6,
            _ => reported,
        };
        eprintln!("{runtime}: two busy processes used {cpu:.2} CPU-seconds (from the cgroup: {}; the pod reported {reported:.2})", before.is_some());
        assert!(cpu < 3.0, "{runtime}: two busy processes used {cpu} CPU-seconds in 2 s on a 1-CPU tier");

        // disk: dev.small has 20 GiB; writing past it fails with ENOSPC in
        // the pod (and only there)
        let (out, err, code) = p.exec(pod, &["df", "-B1", "--output=size", "/workspace"]).await;
        assert_eq!(code, 0, "{err}");
        let size: u64 = out.lines().nth(1).unwrap().trim().parse().unwrap();
        assert!(size > 19 << 30 && size <= 20 << 30, "{runtime}: /workspace is {size} bytes");
        let fill = "fallocate -l $(( $(df -B1 --output=avail /workspace | tail -1) - (64 << 20) )) /workspace/big && dd if=/dev/zero of=/workspace/more bs=1M count=256 conv=fsync";
        let (_, err, code) = p.exec(pod, &["sh", "-c", fill]).await;
        assert_ne!(code, 0, "{runtime}: wrote past the disk size");
        assert!(err.contains("No space left on device"), "{runtime}: {err}");
        let (_, err, code) = p.exec(pod, &["sh", "-c", "rm /workspace/big /workspace/more && echo ok > /workspace/after"]).await;
        assert_eq!(code, 0, "{runtime}: space comes back: {err}");
    }
}

/// Stops or starts a pod and waits until it settles.
async fn set_state(p: &Pinacle, pod: &str, action: &str) {
    let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/{pod}/{action}"), None).await;
    assert_eq!(s, 202, "{action}: {b}");
    p.wait_state(pod, if action == "stop" { "stopped" } else { "running" }, 60).await;
}

#[tokio::test]
async fn volumes_survive_stop_start_and_an_image_change_and_snapshots_restore_them() {
    let p = Pinacle::start().await;
    let pod = "keep";
    p.create_running(pod, "minimal", "youki").await;
    let (_, err, code) = p.exec(pod, &["sh", "-c", "echo w1 > /workspace/w.txt && echo h1 > /root/h.txt && echo layer > /etc/layer.txt"]).await;
    assert_eq!(code, 0, "{err}");
    set_state(&p, pod, "stop").await;
    set_state(&p, pod, "start").await;
    let (out, _, _) = p.exec(pod, &["cat", "/workspace/w.txt", "/root/h.txt", "/etc/layer.txt"]).await;
    assert_eq!(out, "w1\nh1\nlayer\n");

    // a new image: workspace and home stay, the old image's layer goes
    let (s, b) = p.call(Method::PATCH, &format!("/api/v1/pods/{pod}"), Some(json!({"image": "base"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("invalid_state")), "running pods keep their image: {b}");
    set_state(&p, pod, "stop").await;
    let (s, b) = p.call(Method::PATCH, &format!("/api/v1/pods/{pod}"), Some(json!({"image": "nope"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("unknown_image")), "{b}");
    let (s, b) = p.call(Method::PATCH, &format!("/api/v1/pods/{pod}"), Some(json!({"image": "base"}))).await;
    assert_eq!(s, 200, "{b}");
    set_state(&p, pod, "start").await;
    let (out, _, _) = p.exec(pod, &["sh", "-c", "cat /workspace/w.txt /root/h.txt; test -e /etc/layer.txt || echo layer-gone; cat /etc/debian_version"]).await;
    assert!(out.starts_with("w1\nh1\nlayer-gone\n13"), "Debian 13: {out}");

    // snapshots: of a stopped pod only; restore brings the volumes back
    let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/{pod}/snapshots"), Some(json!({"name": "first"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("invalid_state")), "{b}");
    set_state(&p, pod, "stop").await;
    let (s, snap) = p.call(Method::POST, &format!("/api/v1/pods/{pod}/snapshots"), Some(json!({"name": "first"}))).await;
    assert_eq!(s, 201, "{snap}");
    assert_eq!(snap["name"], "first");
    assert!(snap["size_bytes"].as_u64().unwrap() > 0 && snap["sha256"].as_str().unwrap().len() == 64, "{snap}");
    let id = snap["id"].as_str().unwrap().to_owned();
    set_state(&p, pod, "start").await;
    p.exec(pod, &["sh", "-c", "echo w2 > /workspace/w.txt && rm /root/h.txt && echo extra > /workspace/extra.txt"]).await;
    set_state(&p, pod, "stop").await;
    let (code, out, err) = cli(&p, &["pod", "snapshot", "restore", pod, &id]);
    assert_eq!(code, 0, "{out}{err}");
    set_state(&p, pod, "start").await;
    let (out, _, _) = p.exec(pod, &["sh", "-c", "cat /workspace/w.txt /root/h.txt; test -e /workspace/extra.txt || echo extra-gone"]).await;
    assert_eq!(out, "w1\nh1\nextra-gone\n");

    // automatic snapshots on stop; listing and deleting through the CLI
    let (s, b) = p.call(Method::PATCH, &format!("/api/v1/pods/{pod}"), Some(json!({"snapshot_on_stop": true}))).await;
    assert_eq!(s, 200, "{b}");
    set_state(&p, pod, "stop").await;
    let (_, list) = p.call(Method::GET, &format!("/api/v1/pods/{pod}/snapshots"), None).await;
    let snaps = list["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{list}");
    assert_eq!((snaps[1]["auto"].as_bool(), snaps[1]["name"].as_str()), (Some(true), Some("auto")), "{list}");
    let (code, out, _) = cli(&p, &["pod", "snapshot", "list", pod]);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("(auto)"), "{out}");
    let (code, _, err) = cli(&p, &["pod", "snapshot", "delete", pod, &id]);
    assert_eq!(code, 0, "{err}");
    let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/{pod}/snapshots/{id}/restore"), None).await;
    assert_eq!(s, 404, "{b}");
    // another user sees no such pod
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "mallory", "password": "correct horse battery"}))).await;
    assert_eq!(s, 201, "{b}");
    let (_, pair) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(json!({"name": "mallory", "password": "correct horse battery"}))).await;
    let mallory = pair["access_token"].as_str().unwrap();
    for (method, path) in [(Method::GET, format!("/api/v1/pods/{pod}/snapshots")), (Method::POST, format!("/api/v1/pods/{pod}/snapshots"))] {
        let (s, b) = p.call_as(mallory, method, &path, None).await;
        assert_eq!(s, 404, "{b}");
    }
}

/// CPU time used by pod `pod_id`'s sandbox cgroup so far (cgroup v2 or v1),
/// in microseconds.
fn cgroup_cpu_usec(pod_id: &str) -> Option<u64> {
    let id = format!("pinacle-{}", pod_id.replace('-', ""));
    std::fs::read_to_string(format!("/sys/fs/cgroup/pinacle/{id}/cpu.stat"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.trim().parse().ok())))
        .or_else(|| {
            std::fs::read_to_string(format!("/sys/fs/cgroup/cpuacct/pinacle/{id}/cpuacct.usage"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|ns| ns / 1000)
        })
}
