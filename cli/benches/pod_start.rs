//! Pod start benchmark: request → running and request → first exec output
//! through `pinacle up`, beside the raw runtime (`runsc` / `pinacle-youki`
//! create+start+exec of an equivalent bundle) in the same run.
//!
//! Run as root: `cargo bench -p pinacle --bench pod_start`
//! (or `scripts/bench/pod-start.sh`). `BENCH_PODS` sets N (default 10).
//! Prints a table; asserts nothing (machines are noisy).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "pnc_bench-admin-token-0123456789";

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("pod_start bench: run as root");
        std::process::exit(2);
    }
    let n: usize = std::env::var("BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(n));
}

struct Server {
    child: std::process::Child,
    url: String,
    data: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (rt, state) in [("runsc", "runsc"), ("youki", "youki")] {
            let dir = self.data.path().join("runtime").join(state);
            if dir.exists() {
                for id in list(rt, &dir) {
                    let _ = runtime(rt, &dir).args(["delete", "--force", &id]).output();
                }
            }
        }
        unmount_under(self.data.path());
        let _ = std::fs::remove_file(self.data.path().join("images"));
        // the pods' namespaces and veths, then the bridge and its rules
        for dir in std::fs::read_dir(self.data.path().join("pods")).into_iter().flatten().flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            if let Some(short) = name.get(..12) {
                let _ = Command::new("ip").args(["netns", "del", &format!("pinacle-{short}")]).output();
                let _ = Command::new("ip").args(["link", "del", &format!("pv{short}")]).output();
            }
        }
        let _ = Command::new("ip").args(["link", "del", BENCH_BRIDGE]).output();
        let _ = Command::new("nft").args(["delete", "table", "inet", &format!("pinacle_{BENCH_BRIDGE}")]).output();
    }
}

/// The bench's own pod bridge.
const BENCH_BRIDGE: &str = "pncbench1";

fn pinacle() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pinacle"))
}

fn runtime(kind: &str, state: &Path) -> Command {
    let mut c = if kind == "runsc" {
        let mut c = Command::new("runsc");
        c.arg(format!("--root={}", state.display())).args(["--network=none", "--overlay2=none"]);
        c
    } else {
        let mut c = Command::new(pinacle().with_file_name("pinacle-youki"));
        c.arg(format!("--root={}", state.display()));
        c
    };
    c.stdin(Stdio::null());
    c
}

fn list(kind: &str, state: &Path) -> Vec<String> {
    let mut c = runtime(kind, state);
    c.arg("list");
    if kind == "runsc" {
        c.arg("-quiet");
    }
    let out = c.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

fn unmount_under(dir: &Path) {
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut m: Vec<&str> = info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&*root.to_string_lossy())).collect();
        m.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in m {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

async fn start_server() -> Server {
    let data = tempfile::Builder::new().prefix("pinacle-bench-").tempdir_in("/var/tmp").expect("tempdir");
    let cache = std::env::var_os("PINACLE_TEST_IMAGES").map(PathBuf::from).unwrap_or_else(|| "/var/tmp/pinacle-test/images".into());
    std::fs::create_dir_all(&cache).expect("cache");
    std::os::unix::fs::symlink(&cache, data.path().join("images")).expect("link");
    let mut child = Command::new(pinacle())
        // pods as `pinacle up` makes them by default (bridged), on a bridge
        // of the bench's own; no proxy
        .args(["up", "--listen", "127.0.0.1:0", "--rate-limit", "0", "--proxy-listen", "none"])
        .args(["--pod-network", "bridge", "--pod-bridge", BENCH_BRIDGE, "--pod-subnet", "10.231.20.0/24", "--data-dir"])
        .arg(data.path())
        .env("PINACLE_ADMIN_TOKEN", TOKEN)
        .env("PINACLE_CONFIG", data.path().join("cli.json"))
        .env("PINACLE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pinacle up");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // keep draining stdout for the server's whole life
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(u) = line.strip_prefix("Pinacle API listening on ") {
                let _ = tx.send(u.to_owned());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(60)).expect("pinacle up did not start");
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if http.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // youki pods are refused by default (gVisor for everyone); the bench
    // starts more pods than a user's default quota
    let granted = http
        .patch(format!("{url}/api/v1/admin/settings"))
        .bearer_auth(TOKEN)
        .json(&json!({"youki": {"everyone": true}, "quotas": {"user_pods": 10000, "user_vcpus": 10000, "team_pods": 10000, "team_vcpus": 10000}}))
        .send()
        .await
        .expect("settings");
    assert!(granted.status().is_success(), "could not allow youki pods");
    Server { child, url, data, http }
}

/// One pod: (request → running, request → first exec output).
async fn one_pod(s: &Server, name: &str, runtime: &str) -> (Duration, Duration) {
    let t0 = Instant::now();
    let resp = s
        .http
        .post(format!("{}/api/v1/pods", s.url))
        .bearer_auth(TOKEN)
        .json(&json!({"name": name, "template": "minimal", "runtime": runtime}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap_or_default());
    let mut events = s.http.get(format!("{}/api/v1/pods/{name}/events", s.url)).bearer_auth(TOKEN).send().await.expect("events");
    let mut buf = String::new();
    'outer: loop {
        let chunk = events.chunk().await.expect("events").expect("stream ended");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(d) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                let v: Value = serde_json::from_str(d.trim()).expect("event");
                match v["to"].as_str() {
                    Some("running") => break 'outer,
                    Some("error") => panic!("pod failed: {v}"),
                    _ => {}
                }
            }
        }
    }
    let running = t0.elapsed();
    let mut exec = s
        .http
        .post(format!("{}/api/v1/pods/{name}/exec", s.url))
        .bearer_auth(TOKEN)
        .json(&json!({"command": ["echo", "ready"]}))
        .send()
        .await
        .expect("exec");
    let _first = exec.chunk().await.expect("exec output");
    let first_output = t0.elapsed();
    while exec.chunk().await.ok().flatten().is_some() {}
    (running, first_output)
}

/// A pod from a template with processes: (request → running, → install
/// steps done, → every process healthy), polling every 20 ms.
async fn template_pod(s: &Server, name: &str, runtime: &str, template: &str) -> (Duration, Duration, Duration) {
    let t0 = Instant::now();
    let resp = s
        .http
        .post(format!("{}/api/v1/pods", s.url))
        .bearer_auth(TOKEN)
        .json(&json!({"name": name, "template": template, "runtime": runtime, "egress": "deny-all"}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap_or_default());
    let (mut running, mut installed) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "{name} never became healthy");
        if running.is_none() {
            let pod: Value = s.http.get(format!("{}/api/v1/pods/{name}", s.url)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
            match pod["state"].as_str() {
                Some("running") => running = Some(t0.elapsed()),
                Some("error") => panic!("{name} failed: {pod}"),
                _ => {}
            }
        }
        if running.is_some() {
            let st: Value = s.http.get(format!("{}/api/v1/pods/{name}/processes", s.url)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
            if installed.is_none() && st["install"].as_array().is_some_and(|a| a.iter().all(|x| x["state"] == "done")) {
                installed = Some(t0.elapsed());
            }
            if st["processes"].as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|x| x["healthy"] == true)) {
                let healthy = t0.elapsed();
                return (running.unwrap_or(healthy), installed.unwrap_or(healthy), healthy);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The raw runtime on an equivalent bundle: copies a pod's config.json, puts
/// a fresh overlay under it, then times create+start and the first exec output.
fn raw_runtime(kind: &str, state: &Path, template_bundle: &Path, lower: &Path, i: usize) -> (Duration, Duration) {
    let dir = state.parent().unwrap().join(format!("raw-{kind}-{i}"));
    for d in ["upper", "work", "rootfs", "ws"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), dir.join("upper").display(), dir.join("work").display());
    nix::mount::mount(Some("overlay"), &dir.join("rootfs"), Some("overlay"), nix::mount::MsFlags::empty(), Some(opts.as_str())).expect("overlay");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(template_bundle.join("config.json")).unwrap()).unwrap();
    cfg["root"]["path"] = json!(dir.join("rootfs"));
    let id = format!("raw-{kind}-{i}-{}", std::process::id());
    cfg["linux"]["cgroupsPath"] = json!(format!("/pinacle-raw/{id}"));
    for m in cfg["mounts"].as_array_mut().unwrap() {
        if m["destination"] == "/workspace" {
            m["source"] = json!(dir.join("ws"));
        }
    }
    if kind != "runsc" {
        // the raw runtime without a youki pod's user namespace: its
        // id-mapped layers are made by `pinacle-youki mount-rootfs` for the
        // pod (scripts/bench/userns-rootfs.sh times that part); bind
        // sources that belonged to the template pod are dropped
        if let Some(ns) = cfg["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "user");
        }
        if let Some(linux) = cfg["linux"].as_object_mut() {
            linux.remove("uidMappings");
            linux.remove("gidMappings");
        }
        cfg["mounts"].as_array_mut().unwrap().retain(|m| {
            m["type"] != "bind" || m["source"].as_str().is_some_and(|src| Path::new(src).exists() && !src.contains("/idmap/"))
        });
        // without its configuration the supervisor would exit: a plain
        // long-running first process instead
        cfg["process"]["args"] = json!(["/bin/sh", "-c", "sleep 3600"]);
    }
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let log = std::fs::File::create(dir.join("console.log")).unwrap();
    let t0 = Instant::now();
    let ok = runtime(kind, state)
        .args(["create", &format!("--bundle={}", dir.display()), &id])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap()
        .success();
    assert!(ok, "raw {kind} create failed: {}", std::fs::read_to_string(dir.join("console.log")).unwrap_or_default());
    assert!(runtime(kind, state).args(["start", &id]).status().unwrap().success());
    let started = t0.elapsed();
    let mut exec = runtime(kind, state);
    exec.arg("exec").arg(&id);
    if kind != "runsc" {
        exec.arg("--");
    }
    let mut child = exec.args(["echo", "ready"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let first_output = t0.elapsed();
    let _ = child.wait();
    let _ = runtime(kind, state).args(["delete", "--force", &id]).output();
    let _ = nix::mount::umount2(&dir.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(&dir);
    (started, first_output)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn row(label: &str, a: &mut [Duration], b: &mut [Duration]) -> (Duration, Duration) {
    let (a50, a95, b50, b95) = (percentile(a, 0.5), percentile(a, 0.95), percentile(b, 0.5), percentile(b, 0.95));
    println!("{label:<34} {:>9} {:>9} {:>11} {:>11}", ms(a50), ms(a95), ms(b50), ms(b95));
    (a50, b50)
}

async fn run(n: usize) {
    let s = start_server().await;
    let lower = s.data.path().join("images/busybox/rootfs");
    assert!(lower.exists(), "busybox image missing in the image cache; run scripts/test.sh or `pinacle image build busybox`");
    println!("pod start benchmark: {n} pods per runtime, template minimal (busybox), warm image, sequential\n");
    println!("{:<34} {:>9} {:>9} {:>11} {:>11}", "", "ready p50", "ready p95", "1st out p50", "1st out p95");
    let mut summary = Vec::new();
    for (kind, state_name, label) in [("gvisor", "runsc", "runsc"), ("youki", "youki", "pinacle-youki")] {
        // Pinacle and the raw runtime alternate, so both see the same load
        // (the pods created so far keep running).
        let state = s.data.path().join("runtime").join(state_name);
        let (mut ready, mut first, mut rr, mut rf) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut bundle = None;
        for i in 0..n {
            let name = format!("b-{kind}-{i}");
            let (r, f) = one_pod(&s, &name, kind).await;
            ready.push(r);
            first.push(f);
            if bundle.is_none() {
                let pod: Value = s.http.get(format!("{}/api/v1/pods/{name}", s.url)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
                bundle = Some(s.data.path().join("pods").join(pod["id"].as_str().unwrap().replace('-', "")));
            }
            let (r, f) = raw_runtime(state_name, &state, bundle.as_deref().unwrap(), &lower, i);
            rr.push(r);
            rf.push(f);
        }
        let (p_ready, p_first) = row(&format!("pinacle ({kind})"), &mut ready, &mut first);
        let (raw_ready, raw_first) = row(&format!("raw {label} create+start+exec"), &mut rr, &mut rf);
        summary.push((kind, p_ready.as_secs_f64() / raw_ready.as_secs_f64(), p_first.as_secs_f64() / raw_first.as_secs_f64()));
    }
    println!();
    for (kind, r, f) in &summary {
        println!("orchestration overhead ({kind}): ready {r:.2}x raw, first output {f:.2}x raw (p50)");
    }

    // Burst: N pods requested at once.
    let t0 = Instant::now();
    let futs: Vec<_> = (0..n).map(|i| {
        let s = &s;
        async move { one_pod(s, &format!("burst-{i}"), "gvisor").await }
    }).collect();
    let results = futures::future::join_all(futs).await;
    let mut ready: Vec<Duration> = results.iter().map(|r| r.0).collect();
    let mut first: Vec<Duration> = results.iter().map(|r| r.1).collect();
    println!();
    row(&format!("pinacle gvisor, {n} at once"), &mut ready, &mut first);
    println!("burst of {n}: all running after {}", ms(t0.elapsed()));

    // Idle memory: let pods settle, then read their cgroups.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods: Value = s.http.get(format!("{}/api/v1/pods", s.url)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    println!();
    for kind in ["gvisor", "youki"] {
        let mut usage = Vec::new();
        for p in pods["pods"].as_array().unwrap().iter().filter(|p| p["runtime"] == kind) {
            let sid = format!("pinacle-{}", p["id"].as_str().unwrap().replace('-', ""));
            let base = format!("/sys/fs/cgroup/memory/pinacle/{sid}");
            let read = |f: &str| std::fs::read_to_string(format!("{base}/{f}")).ok();
            let rss = read("memory.stat").and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("total_rss ").and_then(|v| v.trim().parse::<u64>().ok()))
            });
            if let (Some(u), Some(r)) = (read("memory.usage_in_bytes").and_then(|v| v.trim().parse::<u64>().ok()), rss) {
                usage.push((u, r));
            }
        }
        if usage.is_empty() {
            println!("idle pod memory ({kind}): cgroup not found");
            continue;
        }
        let avg = |f: fn(&(u64, u64)) -> u64| usage.iter().map(f).sum::<u64>() as f64 / usage.len() as f64 / (1 << 20) as f64;
        println!(
            "idle pod memory ({kind}, {} pods): {:.1} MiB cgroup usage (incl. page cache), {:.1} MiB RSS per pod",
            usage.len(),
            avg(|u| u.0),
            avg(|u| u.1)
        );
    }

    // A template with a dev server: create → all processes healthy.
    let template = std::env::var("BENCH_TEMPLATE").unwrap_or_else(|_| "vite".into());
    let image = pinacle_config::templates::Template::find(&template).map(|t| t.image).unwrap_or("none");
    if !s.data.path().join("images").join(image).join("image.json").exists() {
        println!("\ntemplate {template}: image {image} is not built in the cache; skipped (scripts/test.sh builds vite)");
        return;
    }
    // make room: the pods above fill this host's capacity
    let pods: Value = s.http.get(format!("{}/api/v1/pods", s.url)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    for p in pods["pods"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        let _ = s.http.delete(format!("{}/api/v1/pods/{name}", s.url)).bearer_auth(TOKEN).send().await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pods: Value = s.http.get(format!("{}/api/v1/pods", s.url)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        if pods["pods"].as_array().is_none_or(|a| a.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "pods were not deleted: {pods}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m: usize = std::env::var("BENCH_TEMPLATE_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    println!("\ntemplate {template} (warm image {image}, no egress), {m} pods per runtime, sequential:");
    println!("{:<34} {:>12} {:>12} {:>12}", "", "running p50", "installed", "healthy p50");
    for kind in ["youki", "gvisor"] {
        let mut rows = Vec::new();
        for i in 0..m {
            rows.push(template_pod(&s, &format!("tpl-{kind}-{i}"), kind, &template).await);
        }
        let mut r: Vec<Duration> = rows.iter().map(|x| x.0).collect();
        let mut inst: Vec<Duration> = rows.iter().map(|x| x.1).collect();
        let mut h: Vec<Duration> = rows.iter().map(|x| x.2).collect();
        println!(
            "{:<34} {:>12} {:>12} {:>12}   (healthy p95 {}, max {})",
            format!("pinacle {kind}, {template}"),
            ms(percentile(&mut r, 0.5)),
            ms(percentile(&mut inst, 0.5)),
            ms(percentile(&mut h, 0.5)),
            ms(percentile(&mut h, 0.95)),
            ms(percentile(&mut h, 1.0))
        );
    }
}
