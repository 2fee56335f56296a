//! The GitHub App (issue 20) end to end: a wire-true fake GitHub driven by
//! the server's octocrab client, a real `git http-backend` that only opens
//! the private repository to the fake's installation tokens, signed
//! webhooks, and gVisor pods: a user's pod of a private repository, and a
//! pull request's pod through opened → synchronize → closed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;
#[path = "common/git_server.rs"]
mod git_server;

use std::time::{Duration, Instant};

use fake_github::{CLIENT_ID, CLIENT_SECRET, INSTALLATION};
use git_server::{git, GitNet, GitServer};
use common::{HostCleanup, Pinacle};
use reqwest::Method;
use serde_json::{json, Value};

const BRIDGE: &str = "pnctestgh";
const SUBNET: &str = "10.231.78.0/24";
const NET: GitNet = GitNet { ns: "pnctest-gh", host_veth: "pncghv", peer_veth: "pncghp", prefix: "198.18.78" };
const SECRET: &str = "whsec-test-0123456789abcdef";
const OCTOCAT: (u64, &str) = (583231, "octocat");

fn pr_event(action: &str, head: &str, updated_at: &str) -> Value {
    json!({
        "action": action, "number": 7,
        "pull_request": {
            "number": 7, "merged": false, "draft": false, "updated_at": updated_at, "user": {"id": 9, "login": "dev", "type": "User"},
            "head": {"ref": "feature", "sha": head, "repo": {"id": 100, "full_name": "octo/app", "private": true}},
            "base": {"ref": "main", "sha": "0".repeat(40), "repo": {"id": 100, "full_name": "octo/app", "private": true}}
        },
        "repository": {"id": 100, "full_name": "octo/app", "private": true, "default_branch": "main"},
        "installation": {"id": INSTALLATION},
        "sender": {"id": 9, "login": "dev", "type": "User"}
    })
}

async fn wait_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn private_repositories_and_pull_request_pods_through_the_github_app() {
    // the pod bridge and its ruleset go when the test ends (declared first: dropped last)
    let _cleanup = HostCleanup(BRIDGE);
    let server = GitServer::start(NET, "nobody", "no-token-0123456789");
    // the repository: main with a pinacle.yaml that turns previews on, a
    // pull request's head at refs/pull/7/head
    let work = server.scratch("app");
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("version.txt"), "main\n").unwrap();
    std::fs::write(
        work.join("pinacle.yaml"),
        "version: \"1.0\"\ntier: dev.small\npreviews:\n  pullOnPush: true\n  prebuild: true\ninstall: echo warm > /workspace/.prebuilt\nprocesses:\n  - name: marker\n    startCommand: cp /workspace/version.txt /tmp/marker && exec sleep 100000\n",
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "main"]);
    git(&work, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(work.join("version.txt"), "pr-one\n").unwrap();
    git(&work, &["commit", "-q", "-am", "pr one"]);
    let head1 = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["checkout", "-q", "main"]);
    std::fs::create_dir_all(server.root.join("private/octo")).unwrap();
    let bare = server.publish(&work, "private/octo/app.git");
    git(&bare, &["update-ref", "refs/pull/7/head", &head1]);

    let dir = tempfile::tempdir().unwrap();
    let (pem, public) = fake_github::app_key(dir.path());
    let (gh, fake) = fake_github::start(public).await;
    {
        let mut f = fake.lock().unwrap();
        f.repos.insert("octo/app".into(), bare.clone());
        f.collaborators.insert(("octo/app".into(), OCTOCAT.1.into()), "write".into());
        f.tokens_file = Some(server.tokens_file());
        f.current = Some((OCTOCAT.0, OCTOCAT.1.into()));
    }
    let git_url = server.url("private");
    let p = Pinacle::start_with_env(
        &[
            "--pod-network", "bridge", "--pod-bridge", BRIDGE, "--pod-subnet", SUBNET,
            "--github-client-id", CLIENT_ID, "--github-url", &gh, "--github-api-url", &gh,
            "--github-app-id", &fake_github::APP_ID.to_string(), "--github-app-key-file", pem.to_str().unwrap(),
            "--github-git-url", git_url.trim_end_matches('/'),
        ],
        &[("PINACLE_GITHUB_CLIENT_SECRET", CLIENT_SECRET), ("PINACLE_GITHUB_WEBHOOK_SECRET", SECRET)],
    )
    .await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // octocat signs in through the App's user authorisation
    let start = http.get(format!("{}/api/v1/auth/github/start", p.url)).send().await.unwrap();
    let cookie = start.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let authorize = start.headers()["location"].to_str().unwrap().to_owned();
    let back = http.get(authorize).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let signed: Value = http.get(callback).header("cookie", cookie).send().await.unwrap().json().await.unwrap();
    let octocat = signed["access_token"].as_str().unwrap_or_else(|| panic!("{signed}")).to_owned();

    // deliveries: bad or missing signatures, malformed payloads, unknown events
    let install = json!({"action": "created", "installation": {"id": INSTALLATION, "account": {"id": 1, "login": "octo", "type": "Organization"}},
        "repositories": [{"id": 100, "full_name": "octo/app", "private": true}], "sender": {"id": OCTOCAT.0, "login": OCTOCAT.1, "type": "User"}});
    let (s, b) = fake_github::deliver(&http, &p.url, "wrong-secret", "installation", "d-bad", &install).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("bad_signature")), "{b}");
    let r = http.post(format!("{}/api/v1/github/webhook", p.url)).header("X-GitHub-Event", "ping").header("X-GitHub-Delivery", "d-nosig").body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (s, b) = fake_github::deliver(&http, &p.url, SECRET, "pull_request", "d-malformed", &json!({"action": "opened"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("malformed_payload")), "{b}");
    let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "star", "d-star", &json!({"action": "created"})).await;
    assert_eq!(s, 202);
    let (s, b) = fake_github::deliver(&http, &p.url, SECRET, "installation", "d-install", &install).await;
    assert_eq!((s, b["outcome"].as_str()), (202, Some("queued")), "{b}");
    let deliveries = wait_for("the installation processed", 30, async || {
        let (_, d) = p.call(Method::GET, "/api/v1/admin/github/deliveries", None).await;
        let all = d["deliveries"].as_array()?.clone();
        let ok = all.iter().any(|x| x["id"] == "d-install" && x["outcome"] == "processed") && all.iter().any(|x| x["id"] == "d-star" && x["outcome"] == "ignored");
        ok.then_some(d)
    })
    .await;
    assert_eq!(deliveries["deliveries"].as_array().unwrap().len(), 2, "refused deliveries are not recorded: {deliveries}");
    // a replayed delivery is acknowledged and not run again
    let (s, b) = fake_github::deliver(&http, &p.url, SECRET, "installation", "d-install", &install).await;
    assert_eq!((s, b["outcome"].as_str()), (200, Some("duplicate")), "{b}");

    // the picker: octocat sees the repository and its branches; a user
    // without access gets 404 as for any foreign resource
    let (s, repos) = p.call_as(&octocat, Method::GET, "/api/v1/github/repositories", None).await;
    assert_eq!((s, repos["repositories"][0]["full_name"].as_str()), (200, Some("octo/app")), "{repos}");
    let (s, br) = p.call_as(&octocat, Method::GET, "/api/v1/github/repositories/octo/app/branches", None).await;
    assert_eq!(s, 200, "{br}");
    assert!(br["branches"].as_array().unwrap().iter().any(|b| b["name"] == "feature" && b["sha"] == head1.as_str()), "{br}");
    let (s, _) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "mallory", "password": "correct horse battery"}))).await;
    assert_eq!(s, 201);
    let (_, login) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(json!({"name": "mallory", "password": "correct horse battery"}))).await;
    let mallory = login["access_token"].as_str().unwrap().to_owned();
    let (s, b) = p.call_as(&mallory, Method::POST, "/api/v1/pods", Some(json!({"name": "steal", "repository": {"github": "octo/app"}}))).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = p.call_as(&mallory, Method::GET, "/api/v1/github/repositories/octo/app/branches", None).await;
    assert_eq!(s, 404, "{b}");

    // octocat's pod of the private repository, cloned with a token the
    // agent keeps in the pod (never in .git/config)
    let (s, mine) = p.call_as(&octocat, Method::POST, "/api/v1/pods", Some(json!({"name": "mine", "repository": {"github": "octo/app"}}))).await;
    assert_eq!(s, 202, "{mine}");
    assert_eq!(mine["github"]["repository"], "octo/app", "{mine}");

    // deploy keys: a write key needs write access (octocat has it; a read
    // key is asked here), registered once the pod runs, replaced by
    // rotate-keys, removed with the pod
    let (s, keyed) = p.call_as(&octocat, Method::POST, "/api/v1/pods", Some(json!({"name": "keyed", "repository": {"github": "octo/app", "deploy_key": "read"}}))).await;
    assert_eq!(s, 202, "{keyed}");
    let (s, b) = p.call_as(&octocat, Method::POST, "/api/v1/pods", Some(json!({"name": "bad-key", "repository": {"github": "octo/app", "deploy_key": "admin"}}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_repository")), "{b}");

    // a pull request opens: its pod runs the PR's head, the comment and check run say so
    let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "pull_request", "d-open", &pr_event("opened", &head1, "2026-12-07T10:00:00Z")).await;
    assert_eq!(s, 202);
    let pr = wait_for("the pull request's pod", 60, async || {
        let (_, list) = p.call_as(&octocat, Method::GET, "/api/v1/pods", None).await;
        list["pods"].as_array()?.iter().find(|x| x["name"] == "pr-7-app").cloned()
    })
    .await;
    assert_eq!(pr["github"]["pull_request"], 7, "{pr}");
    p.wait_state_as(&octocat, "mine", "running", 240).await;
    p.wait_state_as(&octocat, "pr-7-app", "running", 240).await;
    let marker = |pod: &'static str, want: &'static str| {
        let p = &p;
        let octocat = octocat.clone();
        async move {
            wait_for(&format!("{pod} to run {want}"), 120, async || {
                let (out, _, code) = p.try_exec_as(&octocat, pod, &["cat", "/tmp/marker"], false).await?;
                (code == 0 && out.trim() == want).then_some(Value::Null)
            })
            .await;
        }
    };
    marker("mine", "main").await;
    p.wait_state_as(&octocat, "keyed", "running", 240).await;
    let (_, pod_key) = p.call_as(&octocat, Method::GET, "/api/v1/pods/keyed/ssh-key", None).await;
    let registered = wait_for("the deploy key", 60, async || {
        let f = fake.lock().unwrap();
        f.keys.first().map(|k| json!({"id": k.0, "title": k.2, "key": k.3, "read_only": k.4}))
    })
    .await;
    assert_eq!(registered["key"].as_str().map(str::trim), pod_key["public_key"].as_str().map(str::trim), "{registered} {pod_key}");
    assert_eq!(registered["read_only"], true);
    assert_eq!(registered["title"], format!("pinacle pod {}", keyed["id"].as_str().unwrap()));
    let (s, rotated) = p.call_as(&octocat, Method::POST, "/api/v1/pods/keyed/rotate-keys", None).await;
    assert_eq!(s, 200, "{rotated}");
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.keys.len(), 1, "the old key is gone");
        assert_ne!(f.keys[0].0, registered["id"].as_u64().unwrap());
        assert_eq!(f.keys[0].3.trim(), rotated["public_key"].as_str().unwrap().trim());
    }
    {
        // a key the server added just before it crashed, never recorded,
        // and another pod's key that must stay
        let mut f = fake.lock().unwrap();
        f.counter += 1;
        let stray = (f.counter, "octo/app".to_owned(), registered["title"].as_str().unwrap().to_owned(), "ssh-ed25519 AAAAstray".to_owned(), true);
        f.keys.push(stray);
        f.counter += 1;
        let other = (f.counter, "octo/app".to_owned(), "a key of somebody else".to_owned(), "ssh-ed25519 AAAAother".to_owned(), true);
        f.keys.push(other);
    }
    let (s, _) = p.call_as(&octocat, Method::DELETE, "/api/v1/pods/keyed", None).await;
    assert_eq!(s, 202);
    wait_for("the pod's deploy keys removed with it, also the unrecorded one", 90, async || {
        let f = fake.lock().unwrap();
        (f.keys.len() == 1).then(|| json!(f.keys[0].2))
    })
    .await;
    assert_eq!(fake.lock().unwrap().keys[0].2, "a key of somebody else");
    fake.lock().unwrap().keys.clear();
    marker("pr-7-app", "pr-one").await;
    // a pull request of the repository itself shares its owner's agent
    // memory of the repository (and gets no secrets without previews.secrets)
    let (token, _, code) = p.exec_as(&octocat, "pr-7-app", &["sh", "-c", "cat \"$PINAK_TOKEN_FILE\""]).await;
    assert!(code == 0 && token.trim().starts_with("ey"), "no memory token in the pull request's pod: {token}");
    let (url, _, _) = p.exec_as(&octocat, "mine", &["git", "-C", "/workspace", "config", "--get", "remote.origin.url"]).await;
    assert_eq!(url.trim(), format!("{git_url}/octo/app.git"));
    let (cfg, _, _) = p.exec_as(&octocat, "mine", &["sh", "-c", "cat /workspace/.git/config ~/.gitconfig"]).await;
    assert!(!cfg.contains("ghs_"), "a token in git's configuration: {cfg}");
    wait_for("the comment and check run", 30, async || {
        let f = fake.lock().unwrap();
        let ok = f.comments.len() == 1 && f.comments[0].2.contains("is running") && f.comments[0].2.contains("pr-7-app")
            && f.check_runs.iter().any(|c| c.1 == head1 && c.3.as_deref() == Some("success"));
        ok.then_some(Value::Null)
    })
    .await;

    // a fork's pull request gets no pod: previews.forks is off
    let mut fork = pr_event("opened", &head1, "2026-12-07T10:02:00Z");
    fork["number"] = json!(8);
    fork["pull_request"]["number"] = json!(8);
    fork["pull_request"]["head"]["repo"] = json!({"id": 555, "full_name": "mallory/app", "private": false});
    let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "pull_request", "d-fork", &fork).await;
    assert_eq!(s, 202);
    let forked = wait_for("the fork's pull request", 30, async || {
        let (_, d) = p.call(Method::GET, "/api/v1/admin/github/deliveries", None).await;
        d["deliveries"].as_array()?.iter().find(|x| x["id"] == "d-fork" && x["outcome"] != "queued" && x["outcome"] != "processing").cloned()
    })
    .await;
    assert_eq!(forked["outcome"], "ignored", "{forked}");
    assert!(forked["detail"].as_str().unwrap().contains("fork"), "{forked}");

    // synchronize: the pod moves to the new head; an older synchronize
    // arriving late changes nothing
    git(&work, &["checkout", "-q", "feature"]);
    std::fs::write(work.join("version.txt"), "pr-two\n").unwrap();
    git(&work, &["commit", "-q", "-am", "pr two"]);
    let head2 = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "HEAD:refs/pull/7/head"]);
    let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "pull_request", "d-sync2", &pr_event("synchronize", &head2, "2026-12-07T10:05:00Z")).await;
    assert_eq!(s, 202);
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let ran = p.try_exec_as(&octocat, "pr-7-app", &["cat", "/workspace/version.txt"], false).await;
        if ran.as_ref().is_some_and(|(out, _, code)| *code == 0 && out.trim() == "pr-two") {
            break;
        }
        if Instant::now() > deadline {
            let (_, events) = p.call_as(&octocat, Method::GET, "/api/v1/pods/pr-7-app/events", None).await;
            let (_, d) = p.call(Method::GET, "/api/v1/admin/github/deliveries", None).await;
            panic!("the pull request's pod did not move to its new head ({ran:?}):\nevents {events}\ndeliveries {d}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    marker("pr-7-app", "pr-two").await;
    let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "pull_request", "d-sync1", &pr_event("synchronize", &head1, "2026-12-07T10:01:00Z")).await;
    assert_eq!(s, 202);
    let late = wait_for("the late synchronize", 30, async || {
        let (_, d) = p.call(Method::GET, "/api/v1/admin/github/deliveries", None).await;
        d["deliveries"].as_array()?.iter().find(|x| x["id"] == "d-sync1" && x["outcome"] != "queued" && x["outcome"] != "processing").cloned()
    })
    .await;
    assert_eq!(late["outcome"], "ignored", "{late}");
    let (_, pr) = p.call_as(&octocat, Method::GET, "/api/v1/pods/pr-7-app", None).await;
    assert_eq!(pr["github"]["head_sha"], head2.as_str(), "{pr}");
    // the new head has its own check run, the first one stays on its head
    wait_for("the new head's check run", 60, async || {
        let f = fake.lock().unwrap();
        let ok = f.check_runs.iter().any(|c| c.1 == head2 && c.3.as_deref() == Some("success")) && f.check_runs.iter().any(|c| c.1 == head1);
        ok.then_some(Value::Null)
    })
    .await;

    // a push to main: octocat's pod is behind, then pulled (pullOnPush)
    git(&work, &["checkout", "-q", "main"]);
    std::fs::write(work.join("NEWS"), "pushed\n").unwrap();
    git(&work, &["add", "NEWS"]);
    git(&work, &["commit", "-q", "-m", "news"]);
    let main2 = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let push = json!({"ref": "refs/heads/main", "before": "0".repeat(40), "after": main2, "repository": {"id": 100, "full_name": "octo/app", "default_branch": "main"}, "installation": {"id": INSTALLATION}});
    let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "push", "d-push", &push).await;
    assert_eq!(s, 202);
    wait_for("the push fetched into the pod", 60, async || {
        let (out, _, code) = p.try_exec_as(&octocat, "mine", &["cat", "/workspace/NEWS"], false).await?;
        (code == 0 && out.trim() == "pushed").then_some(Value::Null)
    })
    .await;
    // previews.prebuild: the default branch's push is prebuilt (image
    // pulled, install steps run), then the prebuild pod stops
    let prebuilt = wait_for("the prebuild to finish", 180, async || {
        let (s, b) = p.call_as(&octocat, Method::GET, "/api/v1/pods/prebuild-app", None).await;
        (s == 200 && b["state"] == "stopped").then_some(b)
    })
    .await;
    assert_eq!((prebuilt["github"]["prebuild"].as_bool(), prebuilt["github"]["head_sha"].as_str()), (Some(true), Some(main2.as_str())), "{prebuilt}");
    assert_eq!(prebuilt["repository"]["commit"], main2.as_str(), "{prebuilt}");

    // closed: the pod is removed, the comment says so
    let mut closed = pr_event("closed", &head2, "2026-12-07T10:10:00Z");
    closed["pull_request"]["merged"] = json!(true);
    let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "pull_request", "d-close", &closed).await;
    assert_eq!(s, 202);
    wait_for("the pull request's pod removed", 120, async || {
        let (s, b) = p.call_as(&octocat, Method::GET, "/api/v1/pods/pr-7-app", None).await;
        (s == 404 || b["state"] == "deleted").then_some(Value::Null)
    })
    .await;
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.comments.len(), 1, "one sticky comment, edited in place");
        assert!(f.comments[0].2.contains("merged"), "{}", f.comments[0].2);
    }

    // a fork's pull request once the base branch allows forks: its pod
    // runs the fork's code with a read-only token and without the agent
    // memory; closing it revokes the token (the code may have copied it)
    git(&work, &["checkout", "-q", "main"]);
    let yaml = std::fs::read_to_string(work.join("pinacle.yaml")).unwrap().replace("previews:\n", "previews:\n  forks: true\n");
    std::fs::write(work.join("pinacle.yaml"), yaml).unwrap();
    git(&work, &["commit", "-q", "-am", "previews of forks"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    git(&work, &["checkout", "-q", "-b", "forked"]);
    std::fs::write(work.join("version.txt"), "from-a-fork\n").unwrap();
    git(&work, &["commit", "-q", "-am", "a fork's change"]);
    let fork_head = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "HEAD:refs/pull/8/head"]);
    fork["action"] = json!("reopened");
    fork["pull_request"]["head"]["sha"] = json!(fork_head);
    let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "pull_request", "d-fork-reopened", &fork).await;
    assert_eq!(s, 202);
    wait_for("the fork's pod", 60, async || {
        let (s, b) = p.call_as(&octocat, Method::GET, "/api/v1/pods/pr-8-app", None).await;
        (s == 200).then_some(b)
    })
    .await;
    p.wait_state_as(&octocat, "pr-8-app", "running", 240).await;
    marker("pr-8-app", "from-a-fork").await;
    let (memory, _, _) = p.exec_as(&octocat, "pr-8-app", &["sh", "-c", "cat \"$PINAK_TOKEN_FILE\" 2>/dev/null; true"]).await;
    assert!(!memory.trim().starts_with("ey"), "a fork's pod got its owner's memory token");
    let (fork_token, _, code) = p.exec_as(&octocat, "pr-8-app", &["cat", "/run/pinacle/platform/git-token"]).await;
    let fork_token = fork_token.trim().to_owned();
    assert!(code == 0 && fork_token.starts_with("ghs_"), "no git token in the fork's pod: {fork_token}");
    assert_eq!(fake.lock().unwrap().token_permissions.get(&fork_token), Some(&json!({"contents": "read"})), "a fork's token only reads");
    let mut fork_closed = fork.clone();
    fork_closed["action"] = json!("closed");
    let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "pull_request", "d-fork-closed", &fork_closed).await;
    assert_eq!(s, 202);
    wait_for("the fork's token revoked", 90, async || (!fake.lock().unwrap().tokens.contains_key(&fork_token)).then_some(Value::Null)).await;
    wait_for("the fork's pod removed", 120, async || {
        let (s, b) = p.call_as(&octocat, Method::GET, "/api/v1/pods/pr-8-app", None).await;
        (s == 404 || b["state"] == "deleted").then_some(Value::Null)
    })
    .await;

    // nothing secret reaches the server's log
    let log = p.server_log();
    assert!(!log.contains(SECRET) && !log.contains("ghs_fake"), "a secret in the log");
    // installation removed: tokens revoked
    let revoked_before = fake.lock().unwrap().revoked;
    let gone = json!({"action": "deleted", "installation": {"id": INSTALLATION, "account": {"id": 1, "login": "octo", "type": "Organization"}}, "sender": {"id": OCTOCAT.0, "login": OCTOCAT.1}});
    let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "installation", "d-uninstall", &gone).await;
    assert_eq!(s, 202);
    wait_for("tokens revoked", 30, async || (fake.lock().unwrap().revoked > revoked_before).then_some(Value::Null)).await;
    let (_, repos) = p.call_as(&octocat, Method::GET, "/api/v1/github/repositories", None).await;
    assert_eq!(repos["repositories"].as_array().map(Vec::len), Some(0), "{repos}");
}

#[tokio::test]
async fn an_admin_creates_the_app_from_githubs_manifest_flow() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, public) = fake_github::app_key(dir.path());
    let (gh, fake) = fake_github::start(public).await;
    fake.lock().unwrap().manifest_app = Some((std::fs::read_to_string(&pem).unwrap(), "whsec-from-github".into()));
    let mut p = Pinacle::start_with(&["--github-url", &gh, "--github-api-url", &gh]).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (_, status) = p.call(Method::GET, "/api/v1/github/status", None).await;
    assert_eq!(status["app"]["configured"], false, "{status}");

    // the manifest, for the admin's browser to post to GitHub
    let (s, m) = p.call(Method::POST, "/api/v1/admin/github/manifest", Some(json!({"organization": "acme"}))).await;
    assert_eq!(s, 200, "{m}");
    let url = m["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{gh}/organizations/acme/settings/apps/new?state=")), "{url}");
    assert_eq!(m["manifest"]["hook_attributes"]["url"], format!("{}/api/v1/github/webhook", p.url));
    assert_eq!(m["manifest"]["redirect_url"], format!("{}/api/v1/github/manifest/callback", p.url));
    let state = url.split_once("state=").unwrap().1.to_owned();
    let (s, b) = p.call(Method::POST, "/api/v1/admin/github/manifest", Some(json!({"organization": "a b"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_request")), "{b}");
    let (_, _) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "eve", "password": "correct horse battery"}))).await;
    let (_, login) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(json!({"name": "eve", "password": "correct horse battery"}))).await;
    let (s, _) = p.call_as(login["access_token"].as_str().unwrap(), Method::POST, "/api/v1/admin/github/manifest", Some(json!({}))).await;
    assert_eq!(s, 403, "only admins make the App");

    // GitHub sends the browser back: a forged state, then an unknown code, are refused
    let back = |code: &str, state: &str| http.get(format!("{}/api/v1/github/manifest/callback?code={code}&state={state}", p.url)).send();
    let r = back("manifest-code", "v1forged").await.unwrap();
    assert_eq!(r.status(), 401);
    let r = back("other-code", &state).await.unwrap();
    assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());
    let r = back("manifest-code", &state).await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], format!("{}/admin", p.url).as_str());
    let (_, status) = p.call(Method::GET, "/api/v1/github/status", None).await;
    assert_eq!((status["app"]["configured"].as_bool(), status["app"]["install_url"].as_str()), (Some(true), Some(format!("{gh}/apps/pinacle-test/installations/new").as_str())), "{status}");
    // the App's webhook secret is GitHub's, and it holds after a restart
    let ping = json!({"zen": "Design for failure.", "hook_id": 1});
    let (s, _) = fake_github::deliver(&http, &p.url, "whsec-from-github", "ping", "m-1", &ping).await;
    assert_eq!(s, 202);
    p.restart().await;
    let (s, _) = fake_github::deliver(&http, &p.url, "whsec-from-github", "ping", "m-2", &ping).await;
    assert_eq!(s, 202, "the App is configured again at start");
    let (s, _) = fake_github::deliver(&http, &p.url, "another-secret", "ping", "m-3", &ping).await;
    assert_eq!(s, 401);
    // a second App is refused; the secrets never reach the log
    let (s, b) = p.call(Method::POST, "/api/v1/admin/github/manifest", Some(json!({}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("already_configured")), "{b}");
    let log = p.server_log();
    assert!(!log.contains("whsec-from-github") && !log.contains(CLIENT_SECRET) && !log.contains("PRIVATE KEY"), "a secret in the log");
}

#[tokio::test]
async fn deliveries_that_never_arrived_are_asked_for_again() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, public) = fake_github::app_key(dir.path());
    let (gh, fake) = fake_github::start(public).await;
    let p = Pinacle::start_with_env(
        &["--github-url", &gh, "--github-api-url", &gh, "--github-app-id", &fake_github::APP_ID.to_string(), "--github-app-key-file", pem.to_str().unwrap()],
        &[("PINACLE_GITHUB_WEBHOOK_SECRET", SECRET)],
    )
    .await;
    let http = reqwest::Client::new();
    let ping = json!({"zen": "Approachable is better than simple.", "hook_id": 1});
    {
        // GitHub's log: one delivery failed while the server was down (and
        // its one retry by hand failed too), one arrived
        let mut f = fake.lock().unwrap();
        f.hook = Some((p.url.clone(), SECRET.into()));
        f.hook_log.push((1, "g-lost".into(), 502, "ping".into(), ping.clone()));
        f.hook_log.push((2, "g-lost".into(), 504, "ping".into(), ping.clone()));
        f.hook_log.push((3, "g-arrived".into(), 202, "ping".into(), ping.clone()));
    }
    let (s, _) = fake_github::deliver(&http, &p.url, SECRET, "ping", "g-arrived", &ping).await;
    assert_eq!(s, 202);
    let (s, b) = p.call(Method::POST, "/api/v1/admin/github/redeliver", None).await;
    assert_eq!((s, b["redelivered"].as_u64()), (200, Some(1)), "{b}");
    // the newest failed attempt is the one asked for, once
    assert_eq!(fake.lock().unwrap().redelivered, vec![2]);
    let d = wait_for("the redelivered ping", 30, async || {
        let (_, d) = p.call(Method::GET, "/api/v1/admin/github/deliveries", None).await;
        d["deliveries"].as_array()?.iter().find(|x| x["id"] == "g-lost" && x["outcome"] == "ignored").cloned()
    })
    .await;
    assert_eq!(d["event"], "ping");
    // it arrived now: not asked for again
    let (_, b) = p.call(Method::POST, "/api/v1/admin/github/redeliver", None).await;
    assert_eq!(b["redelivered"], 0, "{b}");
    assert_eq!(fake.lock().unwrap().redelivered.len(), 1);
}
