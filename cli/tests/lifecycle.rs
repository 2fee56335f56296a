//! What a new user meets first, through the real `pinacle` binary: `pod
//! stop|start|delete` wait until done, a start asked for while the pod is
//! stopping is carried out after the stop, a `PINACLE_ADMIN_TOKEN` the
//! server would never accept stops it at start-up, and `config validate`
//! takes a devcontainer.json file as well as its directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cli, Pinacle, TOKEN};
use reqwest::Method;
use serde_json::Value;


/// Runs the CLI without a server (`config validate`).
fn cli_offline(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::pinacle_bin()).args(args).stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Waits until the pod's managed process `name` runs.
async fn wait_process(p: &Pinacle, pod: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, v) = p.call(Method::GET, &format!("/api/v1/pods/{pod}/processes"), None).await;
        if s == 200 && v["processes"].as_array().into_iter().flatten().any(|x| x["name"] == name && x["state"] == "running") {
            return;
        }
        assert!(Instant::now() < deadline, "process {name} of {pod} not running: {s} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pod's stored events as (event, from, to, message).
async fn events(p: &Pinacle, pod: &str) -> Vec<(String, String, String, String)> {
    // the history arrives first; read it and hang up
    let id = p.pod(pod).await["id"].as_str().unwrap().to_owned();
    let resp = p.http.get(format!("{}/api/v1/pods/{id}/events", p.url)).bearer_auth(TOKEN).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    use futures::StreamExt;
    // the stream stays open after the history: stop at the first quiet moment
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(2), body.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str::<Value>(d.trim()).unwrap())
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("event"), s("from"), s("to"), s("message"))
        })
        .collect()
}

fn has(events: &[(String, String, String, String)], event: &str, from: &str, to: &str) -> bool {
    events.iter().any(|e| e.0 == event && e.1 == from && e.2 == to)
}

/// A process that ignores SIGTERM keeps a pod `stopping` for the
/// supervisor's grace period (5 s): long enough to ask for things meanwhile.
const STUBBORN: &str = "stubborn=trap '' TERM; while true; do sleep 1; done";

#[tokio::test]
async fn stop_start_and_delete_wait_until_done_and_a_start_while_stopping_follows_the_stop() {
    let p = Pinacle::start().await;
    let (code, out, err) = cli(&p, &["pod", "create", "life", "--template", "minimal", "--runtime", "gvisor", "--process", STUBBORN, "--wait", "--timeout", "120"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_process(&p, "life", "stubborn").await;

    // waits by default: done when the command returns
    let (code, out, err) = cli(&p, &["pod", "stop", "life"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "pod life is stopped\n");
    assert!(err.contains("life: stopped ("), "progress is shown off a terminal too: {err}");
    assert_eq!(p.pod("life").await["state"], "stopped");
    let (code, out, err) = cli(&p, &["pod", "start", "life"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "pod life is running\n");
    assert_eq!(p.pod("life").await["state"], "running");
    let (_, _, code) = p.exec("life", &["true"]).await;
    assert_eq!(code, 0);
    wait_process(&p, "life", "stubborn").await;

    // --no-wait answers at once; a start meanwhile is carried out after the stop
    let (code, out, err) = cli(&p, &["pod", "stop", "life", "--no-wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "pod life is stopping\n");
    let (code, out, err) = cli(&p, &["pod", "start", "life"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "pod life is running\n");
    assert!(err.contains("life: starting (requested by admin while it was stopping)"), "{err}");
    assert_eq!(p.pod("life").await["state"], "running");
    let seen = events(&p, "life").await;
    assert!(has(&seen, "start_requested", "stopping", "stopping"), "{seen:?}");
    assert!(has(&seen, "start_requested", "stopped", "starting"), "{seen:?}");
    let (_, _, code) = p.exec("life", &["true"]).await;
    assert_eq!(code, 0);
    wait_process(&p, "life", "stubborn").await;

    // the wait is bounded and says where the pod is
    let (code, out, err) = cli(&p, &["pod", "stop", "life", "--timeout", "1"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("pod life did not become stopped within 1 s (it is stopping)"), "{err}");
    assert!(err.contains("pinacle pod events life"), "{err}");
    // the API accepts a start while stopping too (--no-wait says what follows)
    let (code, out, err) = cli(&p, &["pod", "start", "life", "--no-wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "pod life is stopping; it starts once stopped\n");
    p.wait_state("life", "running", 120).await;

    let (code, out, err) = cli(&p, &["pod", "delete", "life"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "pod life deleted\n");
    let (status, body) = p.call(Method::GET, "/api/v1/pods/life", None).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_start_that_fails_exits_non_zero_with_the_pods_error() {
    let p = Pinacle::start().await;
    let pod = p.create_running("broken", "minimal", "gvisor").await;
    let (code, out, err) = cli(&p, &["pod", "stop", "broken"]);
    assert_eq!(code, 0, "{out}{err}");
    // the stopped pod's disk (unmounted, in this test's data directory)
    // no longer holds a filesystem: mounting it fails on start
    let id = uuid::Uuid::parse_str(pod["id"].as_str().unwrap()).unwrap();
    let volume = p.data.path().join("volumes").join(id.simple().to_string());
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounted.contains(&volume.join("disk").display().to_string()), "the disk of a stopped pod is unmounted");
    std::fs::write(volume.join("disk.img"), vec![0u8; 4096]).unwrap();
    let (code, out, err) = cli(&p, &["pod", "start", "broken"]);
    assert_ne!(code, 0, "{out}{err}");
    let shown = p.pod("broken").await;
    assert_eq!(shown["state"], "error", "{shown}");
    let reason = shown["state_reason"].as_str().unwrap();
    assert!(err.contains(&format!("pod broken failed: {reason}")), "the pod's own error: {err}");
    assert!(reason.contains("mounting the pod's disk"), "{reason}");
    // deleting it still works, and waits
    let (code, out, err) = cli(&p, &["pod", "delete", "broken"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "pod broken deleted\n");
}

/// Starts `pinacle ROLE` with `PINACLE_ADMIN_TOKEN=token` on a fresh data
/// directory: its exit code and standard error once it ended (killed
/// after a minute if it keeps running).
fn start_with_admin_token(role: &str, data: &Path, token: &str) -> (Option<i32>, String) {
    let mut child = Command::new(common::pinacle_bin())
        .arg(role)
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--pod-network", "none", "--proxy-listen", "none", "--ssh-listen", "none"])
        .env("PINACLE_ADMIN_TOKEN", token)
        .env("PINACLE_CONFIG", data.with_extension("cli.json"))
        .env("PINACLE_KEYRING", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn an_admin_token_the_server_would_never_accept_is_refused_at_start_up() {
    let dir = tempfile::Builder::new().prefix("pinacle-test-").tempdir_in("/var/tmp").unwrap();
    for (role, token, why) in [
        ("up", "bench-admin-token-0123456789", "API tokens start with `pnc_`"),
        ("server", "bench-admin-token-0123456789", "API tokens start with `pnc_`"),
        ("server", "pnc_two tokens 0123456789", "printable ASCII characters without spaces"),
        ("server", "pnc_short", "too short"),
    ] {
        let data = dir.path().join(format!("{role}-data"));
        let (code, err) = start_with_admin_token(role, &data, token);
        assert_eq!(code, Some(1), "{role} with {token:?} must exit with an error: {err}");
        assert!(err.contains("PINACLE_ADMIN_TOKEN is not a token this server would ever accept"), "{err}");
        assert!(err.contains(why), "{err}");
        assert!(!err.contains(token), "the value is never printed: {err}");
        // refused before anything was made
        assert!(!data.join("pinacle.db").exists());
    }
}

#[test]
fn config_validate_takes_a_devcontainer_file_as_well_as_its_directory() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    std::fs::create_dir_all(root.join(".devcontainer")).unwrap();
    let file = root.join(".devcontainer/devcontainer.json");
    std::fs::write(
        &file,
        r#"{
  // JSONC: comments and trailing commas
  "image": "mcr.microsoft.com/devcontainers/base:bookworm",
  "containerEnv": { "FROM_DEVCONTAINER": "yes", },
  "postCreateCommand": "echo made",
  "forwardPorts": [3000],
}"#,
    )
    .unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    // the file validates, and reads as its directory does
    let (code, out, err) = cli_offline(&["config", "validate", &path(&file)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("{} is valid: ", file.display())), "{out}");
    let (code, by_file, err) = cli_offline(&["config", "validate", &path(&file), "--json"]);
    assert_eq!(code, 0, "{err}");
    let (code, by_dir, err) = cli_offline(&["config", "validate", &path(root), "--json"]);
    assert_eq!(code, 0, "{err}");
    let (by_file, by_dir): (Value, Value) = (serde_json::from_str(&by_file).unwrap(), serde_json::from_str(&by_dir).unwrap());
    assert_eq!(by_file["valid"], true);
    assert_eq!(by_file["config"], by_dir["config"]);
    assert_eq!(by_file["resolved"], by_dir["resolved"]);

    // a relative path from inside the repository, and `.devcontainer.json`
    // or any other *.json at its top
    let out = Command::new(common::pinacle_bin()).args(["config", "validate", ".devcontainer/devcontainer.json", "--json"]).current_dir(root).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"], by_dir["config"]);
    for name in [".devcontainer.json", "other.json"] {
        let top = root.join(name);
        std::fs::copy(&file, &top).unwrap();
        let (code, out, err) = cli_offline(&["config", "validate", &path(&top), "--json"]);
        assert_eq!(code, 0, "{name}: {err}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["config"], by_dir["config"], "{name}");
    }

    // problems name the file, line, field and a fix, as for a directory
    std::fs::write(&file, "{\n  \"image\": 5\n}\n").unwrap();
    let (code, _, err) = cli_offline(&["config", "validate", &path(&file)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("{}:2:", file.display())) && err.contains("image") && err.contains("expected a string"), "{err}");
    std::fs::write(&file, "{\n  \"image\": \"x\",,\n").unwrap();
    let (code, _, err) = cli_offline(&["config", "validate", &path(&file)]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("{}:2:", file.display())) && err.contains("not valid JSON"), "{err}");

    // a Dockerfile it names is read relative to it, never outside the repository
    std::fs::write(root.join("Dockerfile"), "FROM debian:bookworm\nRUN echo from-the-dockerfile\n").unwrap();
    std::fs::write(&file, r#"{"build": {"dockerfile": "../Dockerfile", "context": ".."}}"#).unwrap();
    let (code, by_file, err) = cli_offline(&["config", "validate", &path(&file), "--json"]);
    let (dir_code, by_dir, dir_err) = cli_offline(&["config", "validate", &path(root), "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((code, &by_file), (dir_code, &by_dir), "{err} / {dir_err}");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("Dockerfile"), "FROM debian:bookworm\n").unwrap();
    // (`..` above `/` stays at `/`)
    let escape = format!("{}{}", "../".repeat(32), outside.path().join("Dockerfile").strip_prefix("/").unwrap().display());
    std::fs::write(&file, format!(r#"{{"build": {{"dockerfile": "{escape}"}}}}"#)).unwrap();
    let (code, _, err) = cli_offline(&["config", "validate", &path(&file)]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("{}:1:", file.display())) && err.contains("Dockerfile"), "{err}");

    // a pinacle.yaml path is still read as YAML
    std::fs::write(root.join("pinacle.yaml"), "template: minimal\n").unwrap();
    let (code, out, err) = cli_offline(&["config", "validate", &path(&root.join("pinacle.yaml"))]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pinacle.yaml is valid"), "{out}");
}
