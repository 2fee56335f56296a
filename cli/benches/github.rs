//! GitHub App benchmark (issue 20), through `pinacle up` with the test
//! harness's fake GitHub and real `git http-backend`:
//!
//! 1. Webhook endpoint: `BENCH_DELIVERIES` (default 1,000) signed `push`
//!    deliveries, 16 at a time: answer latency p50/p99, deliveries per
//!    second, and the time until the worker has processed them all;
//!    beside the signature check alone (octocrab's verifier) and GitHub's
//!    10 s delivery timeout.
//! 2. Webhook → pull-request pod running: `BENCH_PRS` (default 10) pull
//!    requests opened one after another (each closed once it runs), the
//!    image cached: p50/p95 of the whole, of the clone (the pod's own
//!    "repository cloned (N ms)" event) and of the rest; beside a plain
//!    `POST /pods` of the same repository. The goal is ≤ 5 s p95 beyond
//!    the clone.
//!
//! Run as root after scripts/test.sh has built the test images:
//! `scripts/bench/github.sh`. Prints tables; asserts nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/fake_github.rs"]
mod fake_github;
#[path = "../tests/common/git_server.rs"]
mod git_server;

use std::time::{Duration, Instant};

use git_server::{git, GitNet, GitServer};
use reqwest::Method;
use serde_json::{json, Value};

/// Addresses no test uses (tests take 10.231.N.0/24 and 198.18.N.0/24).
const NET: GitNet = GitNet { ns: "pncbench-gh", host_veth: "pncbghv", peer_veth: "pncbghp", prefix: "198.19.179" };
const BRIDGE: &str = "pncbgh";
const SECRET: &str = "whsec-bench-0123456789abcdef";

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("github bench: run as root");
        std::process::exit(2);
    }
    let deliveries: usize = std::env::var("BENCH_DELIVERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let prs: u64 = std::env::var("BENCH_PRS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(deliveries, prs));
}

async fn run(deliveries: usize, prs: u64) {
    let _cleanup = common::HostCleanup(BRIDGE);
    let server = GitServer::start(NET, "nobody", "no-token-0123456789");
    let work = server.scratch("app");
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("version.txt"), "main\n").unwrap();
    std::fs::write(
        work.join("pinacle.yaml"),
        "version: \"1.0\"\ntier: dev.small\npreviews: true\nprocesses:\n  - name: marker\n    startCommand: cp /workspace/version.txt /tmp/marker && exec sleep 100000\n",
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "main"]);
    let mut heads = Vec::new();
    for n in 1..=prs {
        git(&work, &["checkout", "-q", "-B", &format!("pr{n}"), "main"]);
        std::fs::write(work.join("version.txt"), format!("pr-{n}\n")).unwrap();
        git(&work, &["commit", "-q", "-am", &format!("pr {n}")]);
        heads.push(git(&work, &["rev-parse", "HEAD"]));
    }
    git(&work, &["checkout", "-q", "main"]);
    std::fs::create_dir_all(server.root.join("private/octo")).unwrap();
    let bare = server.publish(&work, "private/octo/app.git");

    let dir = tempfile::tempdir().unwrap();
    let (pem, public) = fake_github::app_key(dir.path());
    let (gh, fake) = fake_github::start(public).await;
    {
        let mut f = fake.lock().unwrap();
        f.repos.insert("octo/app".into(), bare.clone());
        f.collaborators.insert(("octo/app".into(), "octocat".into()), "write".into());
        f.tokens_file = Some(server.tokens_file());
        f.current = Some((583231, "octocat".into()));
    }
    let git_url = server.url("private");
    let p = common::Pinacle::start_with_env(
        &[
            "--pod-network", "bridge", "--pod-bridge", BRIDGE, "--pod-subnet", "10.231.179.0/24",
            "--github-client-id", fake_github::CLIENT_ID, "--github-url", &gh, "--github-api-url", &gh,
            "--github-app-id", &fake_github::APP_ID.to_string(), "--github-app-key-file", pem.to_str().unwrap(),
            "--github-git-url", git_url.trim_end_matches('/'),
        ],
        &[("PINACLE_GITHUB_CLIENT_SECRET", fake_github::CLIENT_SECRET), ("PINACLE_GITHUB_WEBHOOK_SECRET", SECRET), ("PINACLE_LOG", "warn")],
    )
    .await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // octocat signs in (the installer: PR pods are theirs)
    let start = http.get(format!("{}/api/v1/auth/github/start", p.url)).send().await.unwrap();
    let cookie = start.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let back = http.get(start.headers()["location"].to_str().unwrap()).send().await.unwrap();
    let signed: Value = http.get(back.headers()["location"].to_str().unwrap()).header("cookie", cookie).send().await.unwrap().json().await.unwrap();
    let octocat = signed["access_token"].as_str().unwrap().to_owned();
    let install = json!({"action": "created", "installation": {"id": fake_github::INSTALLATION, "account": {"id": 1, "login": "octo", "type": "Organization"}},
        "repositories": [{"id": 100, "full_name": "octo/app", "private": true}], "sender": {"id": 583231, "login": "octocat", "type": "User"}});
    fake_github::deliver(&http, &p.url, SECRET, "installation", "bench-install", &install).await;
    wait(&p, "bench-install").await;

    // 1. the webhook endpoint
    let push = json!({"ref": "refs/heads/main", "before": "0".repeat(40), "after": "1".repeat(40),
        "repository": {"id": 100, "full_name": "octo/app", "default_branch": "main"}, "installation": {"id": fake_github::INSTALLATION},
        "pusher": {"name": "dev", "email": "dev@example.invalid"}, "commits": (0..20).map(|i| json!({"id": format!("{i:040}"), "message": "a commit message of a realistic length, more or less", "author": {"name": "dev"}})).collect::<Vec<_>>()});
    let body = serde_json::to_vec(&push).unwrap();
    let t_verify = Instant::now();
    let sig = pinacle_github::webhook::sign(SECRET.as_bytes(), &body);
    for _ in 0..deliveries {
        pinacle_github::webhook::verify(SECRET.as_bytes(), Some(&sig), &body).unwrap();
    }
    let verify_us = t_verify.elapsed().as_secs_f64() * 1e6 / deliveries as f64;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..deliveries {
        let (http, url, push, sem) = (http.clone(), p.url.clone(), push.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let t = Instant::now();
            let (s, _) = fake_github::deliver(&http, &url, SECRET, "push", &format!("bench-push-{i}"), &push).await;
            assert_eq!(s, 202);
            t.elapsed().as_secs_f64() * 1000.0
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    let answered = t0.elapsed().as_secs_f64();
    wait(&p, &format!("bench-push-{}", deliveries - 1)).await;
    let drained = t0.elapsed().as_secs_f64();
    println!("\n## Webhook endpoint ({deliveries} signed push deliveries, 16 at a time, {} byte body)\n", body.len());
    println!("| | value | reference |");
    println!("|---|---|---|");
    println!("| answer p50 | {:.1} ms | GitHub gives up after 10 s |", pct(&mut lat, 0.5));
    println!("| answer p99 | {:.1} ms | |", pct(&mut lat, 0.99));
    println!("| answered | {:.0} deliveries/s | |", deliveries as f64 / answered);
    println!("| all processed | {drained:.1} s | |");
    println!("| signature check alone | {verify_us:.1} µs | octocrab's verifier, in process |");

    // 2. webhook → pull-request pod running
    let mut total = Vec::new();
    let mut clone = Vec::new();
    for (i, head) in heads.iter().enumerate() {
        let n = i as u64 + 1;
        git(&bare, &["update-ref", &format!("refs/pull/{n}/head"), head]);
        let pr = json!({"action": "opened", "number": n,
            "pull_request": {"number": n, "merged": false, "updated_at": "2026-12-07T10:00:00Z",
                "head": {"ref": format!("pr{n}"), "sha": head, "repo": {"id": 100, "full_name": "octo/app"}},
                "base": {"ref": "main", "sha": "0".repeat(40), "repo": {"id": 100, "full_name": "octo/app"}}},
            "repository": {"id": 100, "full_name": "octo/app", "private": true, "default_branch": "main"},
            "installation": {"id": fake_github::INSTALLATION}});
        let t = Instant::now();
        let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "pull_request", &format!("bench-pr-{n}"), &pr).await;
        assert_eq!(s, 202);
        let name = format!("pr-{n}-app");
        let ms = running(&p, &octocat, &name, &format!("pr-{n}"), t).await;
        total.push(ms);
        clone.push(clone_ms(&p, &octocat, &name).await);
        let mut closed = pr.clone();
        closed["action"] = json!("closed");
        fake_github::deliver(&http, &p.url, SECRET, "pull_request", &format!("bench-pr-{n}-closed"), &closed).await;
        gone(&p, &octocat, &name).await;
    }
    // the same repository through POST /pods, for reference
    let mut plain = Vec::new();
    for n in 0..3 {
        let t = Instant::now();
        let name = format!("plain-{n}");
        let (s, b) = p.call_as(&octocat, Method::POST, "/api/v1/pods", Some(json!({"name": name, "repository": {"github": "octo/app"}}))).await;
        assert_eq!(s, 202, "{b}");
        plain.push(running(&p, &octocat, &name, "main", t).await);
        p.call_as(&octocat, Method::DELETE, &format!("/api/v1/pods/{name}"), None).await;
        gone(&p, &octocat, &name).await;
    }
    let mut beyond: Vec<f64> = total.iter().zip(&clone).map(|(t, c)| t - c).collect();
    println!("\n## Webhook → pull-request pod running its head ({} PRs, image cached)\n", total.len());
    println!("| | p50 | p95 | reference |");
    println!("|---|---|---|---|");
    println!("| whole | {:.2} s | {:.2} s | POST /pods of the same repository: {:.2} s p50 |", pct(&mut total, 0.5) / 1e3, pct(&mut total, 0.95) / 1e3, pct(&mut plain, 0.5) / 1e3);
    println!("| clone (pod's event) | {:.2} s | {:.2} s | |", pct(&mut clone, 0.5) / 1e3, pct(&mut clone, 0.95) / 1e3);
    println!("| beyond the clone | {:.2} s | {:.2} s | goal ≤ 5 s p95 |", pct(&mut beyond, 0.5) / 1e3, pct(&mut beyond, 0.95) / 1e3);
}

/// Until delivery `id` is no longer waiting (bounded: 5 minutes).
async fn wait(p: &common::Pinacle, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let (_, d) = p.call(Method::GET, "/api/v1/admin/github/deliveries?limit=500", None).await;
        if d["deliveries"].as_array().into_iter().flatten().any(|x| x["id"] == id && x["outcome"] != "queued" && x["outcome"] != "processing") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("delivery {id} was not processed within 5 minutes");
}

/// Milliseconds from `t` until pod `name` runs its processes on `want`.
async fn running(p: &common::Pinacle, token: &str, name: &str, want: &str, t: Instant) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Some((out, _, 0)) = p.try_exec_as(token, name, &["cat", "/tmp/marker"], false).await {
            if out.trim() == want {
                return t.elapsed().as_secs_f64() * 1000.0;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pod {name} did not run {want} within 5 minutes");
}

/// The clone's duration from the pod's own event (its events are a
/// server-sent stream: read until the line is seen, at most 3 s).
async fn clone_ms(p: &common::Pinacle, token: &str, name: &str) -> f64 {
    let mut r = reqwest::Client::new().get(format!("{}/api/v1/pods/{name}/events", p.url)).bearer_auth(token).send().await.unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, r.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(ms) = text.split("repository cloned (").nth(1).and_then(|r| r.split(" ms)").next()).and_then(|v| v.parse().ok()) {
            return ms;
        }
    }
    f64::NAN
}

async fn gone(p: &common::Pinacle, token: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let (s, b) = p.call_as(token, Method::GET, &format!("/api/v1/pods/{name}"), None).await;
        if s == 404 || b["state"] == "deleted" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
