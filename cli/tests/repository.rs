//! Pods created from repositories, against a real git smart-HTTP server
//! (`git http-backend` behind a Basic-auth CGI bridge) in a network
//! namespace the test creates: pods reach it through their NAT egress.
//! The clone runs inside the pod; the repository's own pinacle.yaml
//! configures the pod; a private repository is cloned with the user's
//! `GIT_TOKEN` secret through a credential helper, pushing works with it,
//! and the token is in no log line, event or `.git/config`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/git_server.rs"]
mod git_server;

use std::time::{Duration, Instant};

use common::{HostCleanup, Pinacle};
use git_server::{git, GitNet, GitServer};
use reqwest::Method;
use serde_json::{json, Value};

const BRIDGE: &str = "pnctestrp";
const SUBNET: &str = "10.231.77.0/24";
const NET: GitNet = GitNet { ns: "pnctest-git", host_veth: "pncgitv", peer_veth: "pncgitp", prefix: "198.18.77" };
/// The private repository's token (as a forge would issue it).
const TOKEN: &str = "ghp_s3cr3t-token-for-tests-0123456789";
const USER: &str = "x-access-token";

/// The repositories: `public/lib.git` (a submodule of app),
/// `public/app.git` (main: two commits, a submodule and a pinacle.yaml
/// with a process and an env var; branch `feature`; also as
/// `public/app-v0.git`), `public/devc.git` (a devcontainer.json),
/// `public/broken.git` (a pinacle.yaml with an error), `private/secret.git`.
/// Returns app's first commit.
fn build_repositories(s: &GitServer) -> String {
    let lib = s.scratch("lib");
    git(&lib, &["init", "-q", "-b", "main"]);
    std::fs::write(lib.join("lib.txt"), "from the submodule\n").unwrap();
    git(&lib, &["add", "."]);
    git(&lib, &["commit", "-q", "-m", "lib"]);
    let lib_head = git(&lib, &["rev-parse", "HEAD"]);
    s.publish(&lib, "public/lib.git");

    let app = s.scratch("app");
    git(&app, &["init", "-q", "-b", "main"]);
    std::fs::write(app.join("version.txt"), "one\n").unwrap();
    git(&app, &["add", "."]);
    git(&app, &["commit", "-q", "-m", "first"]);
    let first = git(&app, &["rev-parse", "HEAD"]);
    std::fs::write(app.join("version.txt"), "two\n").unwrap();
    std::fs::write(
        app.join("pinacle.yaml"),
        "version: \"1.0\"\ntier: dev.small\nenv:\n  REPO_GREETING: hello-from-the-repository\nprocesses:\n  - name: marker\n    startCommand: echo \"$REPO_GREETING\" > /tmp/marker && exec sleep 100000\n",
    )
    .unwrap();
    std::fs::write(app.join(".gitmodules"), format!("[submodule \"lib\"]\n\tpath = lib\n\turl = {}\n", s.url("public/lib.git"))).unwrap();
    git(&app, &["add", "."]);
    git(&app, &["update-index", "--add", "--cacheinfo", &format!("160000,{lib_head},lib")]);
    git(&app, &["commit", "-q", "-m", "second"]);
    git(&app, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(app.join("FEATURE"), "on the feature branch\n").unwrap();
    // (not `add .`: the submodule's directory is not checked out here)
    git(&app, &["add", "FEATURE"]);
    git(&app, &["commit", "-q", "-m", "feature"]);
    git(&app, &["checkout", "-q", "main"]);
    s.publish(&app, "public/app.git");
    s.publish(&app, "public/app-v0.git");

    let devc = s.scratch("devc");
    git(&devc, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(devc.join(".devcontainer")).unwrap();
    std::fs::write(devc.join(".devcontainer/devcontainer.json"), "{\n  // JSON with comments\n  \"containerEnv\": { \"FROM_DEVCONTAINER\": \"yes\" }\n}\n").unwrap();
    git(&devc, &["add", "."]);
    git(&devc, &["commit", "-q", "-m", "devcontainer"]);
    s.publish(&devc, "public/devc.git");

    let broken = s.scratch("broken");
    git(&broken, &["init", "-q", "-b", "main"]);
    std::fs::write(broken.join("pinacle.yaml"), "version: \"1.0\"\nservices:\n  - postgress\n").unwrap();
    git(&broken, &["add", "."]);
    git(&broken, &["commit", "-q", "-m", "broken"]);
    s.publish(&broken, "public/broken.git");

    let private = s.scratch("secret");
    git(&private, &["init", "-q", "-b", "main"]);
    std::fs::write(private.join("secret.txt"), "private content\n").unwrap();
    git(&private, &["add", "."]);
    git(&private, &["commit", "-q", "-m", "private"]);
    s.publish(&private, "private/secret.git");
    first
}

/// Runs the `pinacle` CLI against `p` as the admin: (exit code, stdout, stderr).
async fn cli(p: &Pinacle, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(common::pinacle_bin());
    cmd.args(args)
        .env("PINACLE_API", &p.url)
        .env("PINACLE_TOKEN", common::TOKEN)
        .env("PINACLE_CONFIG", p.data.path().join("none.json"));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn create_from(p: &Pinacle, token: &str, body: Value) -> (u16, Value) {
    p.call_as(token, Method::POST, "/api/v1/pods", Some(body)).await
}

/// The pod's stored events as text (the SSE stream's history, read for at
/// most 3 s).
async fn events_text(p: &Pinacle, token: &str, pod: &str) -> String {
    let resp = p.http.get(format!("{}/api/v1/pods/{pod}/events", p.url)).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let mut text = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        text.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Polls until the pod is in `state` (an `error` pod too, when asked for).
async fn wait(p: &Pinacle, token: &str, pod: &str, state: &str) -> Value {
    p.wait_state_as(token, pod, state, 240).await
}

/// `cat` of a file in the pod, trimmed; panics if it fails.
async fn cat(p: &Pinacle, token: &str, pod: &str, path: &str) -> String {
    let (out, err, code) = p.exec_as(token, pod, &["cat", path]).await;
    assert_eq!(code, 0, "cat {path} in {pod}: {err}");
    out.trim().to_owned()
}

#[tokio::test]
async fn pods_clone_public_and_private_repositories_inside_the_pod() {
    let _cleanup = HostCleanup(BRIDGE);
    let server = GitServer::start(NET, USER, TOKEN);
    let first = build_repositories(&server);
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BRIDGE, "--pod-subnet", SUBNET]).await;
    let admin = common::TOKEN;

    // refused before anything is created: not http(s), credentials in the
    // URL, bad branch or commit
    for (repository, needle) in [
        (json!({"url": "file:///etc"}), "only http:// and https://"),
        (json!({"url": "ext::sh -c id"}), "only http:// and https://"),
        (json!({"url": "/srv/git/app.git"}), "only http:// and https://"),
        (json!({"url": format!("http://{USER}:{TOKEN}@198.18.77.2:8080/private/secret.git")}), "GIT_TOKEN"),
        (json!({"url": server.url("public/app.git"), "branch": "a..b"}), "invalid branch"),
        (json!({"url": server.url("public/app.git"), "commit": "not-hex"}), "invalid commit"),
        (json!({"url": format!("https://h/{}", "a".repeat(5000))}), "repository"),
    ] {
        let (s, b) = create_from(&p, admin, json!({"name": "refused", "repository": repository})).await;
        assert_eq!(s, 400, "{repository}: {b}");
        assert_eq!(b["error"]["code"], "invalid_repository", "{b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(needle), "{b}");
        assert!(!b.to_string().contains(TOKEN), "the refusal repeats the token: {b}");
    }
    let (_, list) = p.call(Method::GET, "/api/v1/pods", None).await;
    assert_eq!(list["pods"].as_array().map(Vec::len), Some(0), "a refused request created a pod: {list}");

    // public, default branch, no config and no template: the repository's
    // pinacle.yaml configures the pod (its process runs with its env)
    let (s, b) = create_from(&p, admin, json!({"name": "app", "repository": {"url": server.url("public/app.git")}})).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["repository"]["url"], server.url("public/app.git"));
    // a branch, through the CLI (`--repo URL#BRANCH`), in a youki pod with
    // a template (no repository config)
    let repo_arg = format!("{}#feature", server.url("public/app.git"));
    let args = ["pod", "create", "feat", "--template", "blank", "--runtime", "youki", "--repo", &repo_arg, "--wait", "--timeout", "240"];
    let (code, out, err) = cli(&p, &args).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pod feat is running"), "{out}");
    let (code, out, err) = cli(&p, &["pod", "show", "feat"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("repository: {} (branch feature)", server.url("public/app.git"))), "{out}");
    // a commit, from a server that refuses to send it alone (protocol v0):
    // the whole history is fetched instead
    let (s, b) = create_from(&p, admin, json!({"name": "old", "repository": {"url": server.url("public/app-v0.git"), "commit": first}})).await;
    assert_eq!(s, 202, "{b}");

    // a devcontainer.json configures the pod too; a broken pinacle.yaml is
    // the pod's error, with file and line
    for (name, repo) in [("devc", "public/devc.git"), ("broken", "public/broken.git"), ("missing", "public/missing.git")] {
        let (s, b) = create_from(&p, admin, json!({"name": name, "repository": {"url": server.url(repo)}})).await;
        assert_eq!(s, 202, "{b}");
    }

    let app = wait(&p, admin, "app", "running").await;
    assert_eq!(app["repository"]["url"], server.url("public/app.git"), "{app}");
    assert_eq!(cat(&p, admin, "app", "/workspace/version.txt").await, "two");
    assert_eq!(cat(&p, admin, "app", "/workspace/lib/lib.txt").await, "from the submodule", "submodule");
    let (out, _, _) = p.exec("app", &["git", "-C", "/workspace", "rev-parse", "--is-shallow-repository"]).await;
    assert_eq!(out.trim(), "true", "the clone is shallow");
    // the repository's pinacle.yaml: its process ran with its env (the
    // sandbox started again with the new record)
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (out, _, code) = p.exec("app", &["cat", "/tmp/marker"]).await;
        if code == 0 && out.trim() == "hello-from-the-repository" {
            break;
        }
        assert!(Instant::now() < deadline, "the repository's process never ran: {out}\n{}", p.server_log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(app["config"]["env"]["REPO_GREETING"], "hello-from-the-repository", "{app}");
    let events = events_text(&p, admin, "app").await;
    assert!(events.contains("cloning http://198.18.77.2:8080/public/app.git"), "{events}");
    assert!(events.contains("configured from the repository's pinacle.yaml"), "{events}");

    wait(&p, admin, "feat", "running").await;
    assert_eq!(cat(&p, admin, "feat", "/workspace/FEATURE").await, "on the feature branch");
    let (out, _, _) = p.exec("feat", &["git", "-C", "/workspace", "rev-parse", "--abbrev-ref", "HEAD"]).await;
    assert_eq!(out.trim(), "feature");
    // no template starter files in a repository's workspace
    let (out, _, _) = p.exec("feat", &["ls", "-A", "/workspace"]).await;
    let mut names: Vec<&str> = out.split_whitespace().collect();
    names.sort_unstable();
    assert_eq!(names, [".git", ".gitmodules", "FEATURE", "lib", "pinacle.yaml", "version.txt"], "{out}");

    // cloned once: an emptied workspace stays empty across a restart
    let (_, err, code) = p.exec("feat", &["sh", "-c", "rm -rf /workspace/* /workspace/.[!.]*"]).await;
    assert_eq!(code, 0, "{err}");
    for (action, state) in [("stop", "stopped"), ("start", "running")] {
        let (s, b) = p.call(Method::POST, &format!("/api/v1/pods/feat/{action}"), None).await;
        assert_eq!(s, 202, "{action}: {b}");
        wait(&p, admin, "feat", state).await;
    }
    let (out, _, _) = p.exec("feat", &["ls", "-A", "/workspace"]).await;
    assert_eq!(out.trim(), "", "cloned again after a restart");

    wait(&p, admin, "old", "running").await;
    assert_eq!(cat(&p, admin, "old", "/workspace/version.txt").await, "one");
    let (out, _, _) = p.exec("old", &["git", "-C", "/workspace", "rev-parse", "HEAD"]).await;
    assert_eq!(out.trim(), first);
    let events = events_text(&p, admin, "old").await;
    assert!(events.contains("fetching the whole history"), "{events}");

    let devc = wait(&p, admin, "devc", "running").await;
    assert_eq!(devc["config"]["env"]["FROM_DEVCONTAINER"], "yes", "{devc}");
    let (out, _, _) = p.exec("devc", &["printenv", "FROM_DEVCONTAINER"]).await;
    assert_eq!(out.trim(), "yes");
    let broken = wait(&p, admin, "broken", "error").await;
    let reason = broken["state_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("the repository's pinacle.yaml was not applied") && reason.contains("pinacle.yaml:3"), "{broken}");

    let missing = wait(&p, admin, "missing", "error").await;
    let reason = missing["state_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("public/missing.git failed") && reason.contains("not found"), "{missing}");

    // private: alice has the token as her secret
    let alice = p.signup_and_login("alice").await;
    let (s, b) = p.call_as(&alice, Method::PUT, "/api/v1/secrets/GIT_TOKEN", Some(json!({"value": TOKEN}))).await;
    assert!(s == 200 || s == 201 || s == 204, "{s} {b}");
    let (s, b) = create_from(&p, &alice, json!({"name": "priv", "template": "blank", "repository": {"url": server.url("private/secret.git")}})).await;
    assert_eq!(s, 202, "{b}");
    // bob's token is wrong
    let bob = p.signup_and_login("bob").await;
    let (s, b) = p.call_as(&bob, Method::PUT, "/api/v1/secrets/GIT_TOKEN", Some(json!({"value": "ghp_wrong-token"}))).await;
    assert!(s == 200 || s == 201 || s == 204, "{s} {b}");
    let (s, b) = create_from(&p, &bob, json!({"name": "denied", "template": "blank", "repository": {"url": server.url("private/secret.git")}})).await;
    assert_eq!(s, 202, "{b}");

    wait(&p, &alice, "priv", "running").await;
    assert_eq!(cat(&p, &alice, "priv", "/workspace/secret.txt").await, "private content");
    let config = cat(&p, &alice, "priv", "/workspace/.git/config").await;
    assert!(!config.contains(TOKEN) && !config.contains("password"), "token in .git/config:\n{config}");
    let gitconfig = cat(&p, &alice, "priv", "/root/.gitconfig").await;
    assert!(gitconfig.contains("credential \"http://198.18.77.2:8080\"") && !gitconfig.contains(TOKEN), "{gitconfig}");
    // pushing from the pod works with the same credentials
    let push = "cd /workspace && echo change > pushed.txt && git add pushed.txt && \
                git -c user.name=Alice -c user.email=alice@example.invalid commit -q -m 'from the pod' && \
                GIT_TERMINAL_PROMPT=0 git push -q origin HEAD:main";
    let (out, err, code) = p.exec_as(&alice, "priv", &["sh", "-c", push]).await;
    assert_eq!(code, 0, "push from the pod: {out}{err}\n{}", server.errors());
    let pushed = git(&server.root.join("private/secret.git"), &["log", "-1", "--format=%s", "main"]);
    assert_eq!(pushed, "from the pod");

    let denied = wait(&p, &bob, "denied", "error").await;
    let reason = denied["state_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("cloning http://198.18.77.2:8080/private/secret.git failed"), "{denied}");
    assert!(reason.contains("Authentication failed") || reason.contains("could not read Username"), "{denied}");
    assert!(p.sandboxes("runsc").iter().all(|s| !s.contains(&denied["id"].as_str().unwrap().replace('-', ""))), "a failed clone left its sandbox");

    // the token is in no log line, no event, no answer
    let log = p.server_log();
    assert!(!log.contains(TOKEN), "token in the server log");
    assert!(!log.contains("ghp_wrong-token"), "wrong token in the server log");
    for (who, pod) in [(&alice, "priv"), (&bob, "denied")] {
        let events = events_text(&p, who, pod).await;
        assert!(!events.contains(TOKEN) && !events.contains("ghp_wrong-token"), "token in the events of {pod}");
        let (_, view) = p.call_as(who, Method::GET, &format!("/api/v1/pods/{pod}"), None).await;
        assert!(!view.to_string().contains(TOKEN), "token in the view of {pod}");
    }
    let requests = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert!(requests.contains("/private/secret.git/info/refs"), "the server saw no request: {requests}");
}
