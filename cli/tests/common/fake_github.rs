//! A wire-true fake of GitHub for the App's tests: its REST API for Apps
//! (JWT checked with the App's public key, installation tokens that git
//! then accepts), repositories, branches, contents (read from the real
//! bare repositories), collaborator permissions, deploy keys, issue
//! comments and check runs; and its OAuth web flow for sign-in. Answers
//! have GitHub's shapes: octocrab's types must read them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err, dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

pub const APP_ID: u64 = 4242;
pub const INSTALLATION: u64 = 42;
pub const CLIENT_ID: &str = "Iv1.pinacle-app-client";
pub const CLIENT_SECRET: &str = "fake-app-client-secret-0123456789";

#[derive(Default)]
pub struct State_ {
    /// The App's public key (PKCS#1 DER) that JWTs must verify with.
    pub public_key: Vec<u8>,
    /// installation → account login; repositories: `owner/name` → bare repo.
    pub repos: HashMap<String, PathBuf>,
    /// (repo, login) → admin|write|read.
    pub collaborators: HashMap<(String, String), String>,
    /// minted tokens: token → (installation, repos, expires).
    pub tokens: HashMap<String, (u64, Vec<String>, i64)>,
    /// what each token was minted with: token → `permissions` asked for
    pub token_permissions: HashMap<String, Value>,
    pub tokens_file: Option<PathBuf>,
    pub comments: Vec<(u64, u64, String)>,
    pub check_runs: Vec<(u64, String, String, Option<String>)>,
    pub keys: Vec<(u64, String, String, String, bool)>,
    pub revoked: usize,
    pub counter: u64,
    /// The signed-in browser user (OAuth).
    pub current: Option<(u64, String)>,
    codes: HashMap<String, (u64, String)>,
    user_tokens: HashMap<String, (u64, String)>,
    /// Requests seen: "METHOD path".
    pub requests: Vec<String>,
    /// The App the manifest flow's code turns into: its PEM and webhook
    /// secret (the code is `manifest-code`, good once).
    pub manifest_app: Option<(String, String)>,
    /// GitHub's log of the App's deliveries: (id, guid, status code,
    /// event, body); a redelivery sends the body again to `hook`.
    pub hook_log: Vec<(u64, String, u16, String, Value)>,
    /// Where redeliveries go: (server URL, webhook secret).
    pub hook: Option<(String, String)>,
    pub redelivered: Vec<u64>,
}

pub type Fake = Arc<Mutex<State_>>;

fn err(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": status.as_u16().to_string()}))).into_response()
}

fn bearer(h: &HeaderMap) -> String {
    let a = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("token ")).unwrap_or("").to_owned()
}

/// The App's JWT, checked like GitHub: RS256 with the App's key, `iss` the
/// App id, not expired, at most 10 minutes.
fn app_jwt_ok(f: &State_, h: &HeaderMap) -> bool {
    let jwt = bearer(h);
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return false;
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (Ok(claims), Ok(sig)) = (b64.decode(parts[1]), b64.decode(parts[2])) else { return false };
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &f.public_key);
    if key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).is_err() {
        return false;
    }
    let c: Value = serde_json::from_slice(&claims).unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    c["iss"].as_str().and_then(|s| s.parse::<u64>().ok()) == Some(APP_ID) && c["exp"].as_i64().is_some_and(|e| e > now && e - c["iat"].as_i64().unwrap_or(0) <= 660)
}

/// The installation token in the request, if it is live; its repositories.
fn token_repos(f: &State_, h: &HeaderMap) -> Option<Vec<String>> {
    let (_, repos, exp) = f.tokens.get(&bearer(h))?;
    (*exp > chrono::Utc::now().timestamp()).then(|| repos.clone())
}

fn author(login: &str, id: u64) -> Value {
    let u = |p: &str| format!("https://api.github.com/users/{login}{p}");
    json!({"login": login, "id": id, "node_id": format!("MDQ6VXNlcj{id}"), "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}"),
        "gravatar_id": "", "url": u(""), "html_url": format!("https://github.com/{login}"), "followers_url": u("/followers"),
        "following_url": u("/following{/other_user}"), "gists_url": u("/gists{/gist_id}"), "starred_url": u("/starred{/owner}{/repo}"),
        "subscriptions_url": u("/subscriptions"), "organizations_url": u("/orgs"), "repos_url": u("/repos"), "events_url": u("/events{/privacy}"),
        "received_events_url": u("/received_events"), "type": if login.contains("bot") { "Bot" } else { "User" }, "site_admin": false})
}

pub fn repo_json(full: &str, id: u64) -> Value {
    let (owner, name) = full.split_once('/').unwrap();
    json!({"id": id, "node_id": format!("R_{id}"), "name": name, "full_name": full, "private": true, "owner": author(owner, 1),
        "url": format!("https://api.github.com/repos/{full}"), "html_url": format!("https://github.com/{full}"), "default_branch": "main",
        "clone_url": format!("https://github.com/{full}.git"), "fork": false})
}

fn git_out(repo: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").arg("--git-dir").arg(repo).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn mint(State(f): State<Fake>, Path(id): Path<u64>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut f = f.lock().unwrap();
    f.requests.push(format!("POST /app/installations/{id}/access_tokens"));
    if !app_jwt_ok(&f, &h) {
        return err(StatusCode::UNAUTHORIZED, "A JSON web token could not be decoded");
    }
    if id != INSTALLATION {
        return err(StatusCode::NOT_FOUND, "Not Found");
    }
    let all: Vec<String> = f.repos.keys().cloned().collect();
    let repos: Vec<String> = match body["repositories"].as_array() {
        Some(names) => {
            let wanted: Vec<String> = names.iter().filter_map(|n| n.as_str()).map(str::to_owned).collect();
            let found: Vec<String> = all.iter().filter(|r| wanted.iter().any(|w| r.ends_with(&format!("/{w}")))).cloned().collect();
            if found.len() != wanted.len() {
                return err(StatusCode::UNPROCESSABLE_ENTITY, "There is at least one repository that does not exist or is not accessible to the parent installation.");
            }
            found
        }
        None => all,
    };
    f.counter += 1;
    let token = format!("ghs_fake{:020}{}", f.counter, rand_suffix());
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    f.tokens.insert(token.clone(), (id, repos.clone(), expires.timestamp()));
    f.token_permissions.insert(token.clone(), body["permissions"].clone());
    write_tokens_file(&f);
    let permissions = body["permissions"].clone();
    let listed: Vec<Value> = repos.iter().enumerate().map(|(i, r)| repo_json(r, 100 + i as u64)).collect();
    (StatusCode::CREATED, Json(json!({"token": token, "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "permissions": if permissions.is_null() { json!({"contents": "write", "issues": "write", "checks": "write"}) } else { permissions },
        "repository_selection": "selected", "repositories": listed}))).into_response()
}

/// The git server accepts exactly the live tokens, as GitHub's does.
fn write_tokens_file(f: &State_) {
    if let Some(file) = &f.tokens_file {
        let lines: String = f.tokens.iter().flat_map(|(t, (_, rs, e))| rs.iter().map(move |r| format!("{t} {r} {e}\n"))).collect();
        std::fs::write(file, lines).unwrap();
    }
}

fn rand_suffix() -> String {
    use rand::Rng;
    let mut r = rand::thread_rng();
    (0..8).map(|_| char::from(b'a' + r.gen_range(0..26))).collect()
}

async fn revoke(State(f): State<Fake>, h: HeaderMap) -> Response {
    let mut f = f.lock().unwrap();
    let t = bearer(&h);
    if f.tokens.remove(&t).is_none() {
        return err(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    f.revoked += 1;
    write_tokens_file(&f);
    StatusCode::NO_CONTENT.into_response()
}

async fn installation_repos(State(f): State<Fake>, h: HeaderMap) -> Response {
    let f = f.lock().unwrap();
    let Some(repos) = token_repos(&f, &h) else { return err(StatusCode::UNAUTHORIZED, "Bad credentials") };
    let list: Vec<Value> = repos.iter().enumerate().map(|(i, r)| repo_json(r, 100 + i as u64)).collect();
    Json(json!({"total_count": list.len(), "repositories": list})).into_response()
}

/// Looks the repository up for a token; 404 like GitHub for one it cannot see.
fn visible(f: &State_, h: &HeaderMap, owner: &str, repo: &str) -> Result<(String, PathBuf), Response> {
    let Some(repos) = token_repos(f, h) else { return Err(err(StatusCode::UNAUTHORIZED, "Bad credentials")) };
    let full = format!("{owner}/{repo}");
    if !repos.contains(&full) {
        return Err(err(StatusCode::NOT_FOUND, "Not Found"));
    }
    Ok((full.clone(), f.repos[&full].clone()))
}

async fn get_repo(State(f): State<Fake>, h: HeaderMap, Path((o, r)): Path<(String, String)>) -> Response {
    let f = f.lock().unwrap();
    match visible(&f, &h, &o, &r) {
        Ok((full, _)) => Json(repo_json(&full, 100)).into_response(),
        Err(e) => e,
    }
}

async fn branches(State(f): State<Fake>, h: HeaderMap, Path((o, r)): Path<(String, String)>) -> Response {
    let f = f.lock().unwrap();
    let (full, bare) = match visible(&f, &h, &o, &r) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let refs = git_out(&bare, &["for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads"]).unwrap_or_default();
    let list: Vec<Value> = refs
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, sha)| json!({"name": name, "commit": {"sha": sha, "url": format!("https://api.github.com/repos/{full}/commits/{sha}")}, "protected": false}))
        .collect();
    Json(list).into_response()
}

async fn permission(State(f): State<Fake>, h: HeaderMap, Path((o, r, login)): Path<(String, String, String)>) -> Response {
    let f = f.lock().unwrap();
    let (full, _) = match visible(&f, &h, &o, &r) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let Some(p) = f.collaborators.get(&(full, login.clone())) else {
        return err(StatusCode::NOT_FOUND, &format!("{login} is not a user"));
    };
    Json(json!({"permission": p, "role_name": p, "user": author(&login, 7)})).into_response()
}

async fn contents(State(f): State<Fake>, h: HeaderMap, Path((o, r, path)): Path<(String, String, String)>, Query(q): Query<HashMap<String, String>>) -> Response {
    let f = f.lock().unwrap();
    let (full, bare) = match visible(&f, &h, &o, &r) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let git_ref = q.get("ref").cloned().unwrap_or_else(|| "main".into());
    let Some(text) = git_out(&bare, &["show", &format!("{git_ref}:{path}")]) else { return err(StatusCode::NOT_FOUND, "Not Found") };
    let b64 = base64::engine::general_purpose::STANDARD.encode(&text);
    let url = format!("https://api.github.com/repos/{full}/contents/{path}?ref={git_ref}");
    Json(json!({"type": "file", "encoding": "base64", "size": text.len(), "name": path.rsplit('/').next().unwrap(), "path": path,
        "content": b64, "sha": "3d21ec53a331a6f037a91c368710b99387d012c1", "url": url, "git_url": null, "html_url": null, "download_url": null,
        "_links": {"self": url, "git": null, "html": null}}))
    .into_response()
}

fn key_json(full: &str, id: u64, title: &str, key: &str, read_only: bool) -> Value {
    json!({"id": id, "key": key, "url": format!("https://api.github.com/repos/{full}/keys/{id}"), "title": title, "verified": true,
        "created_at": "2026-12-07T00:00:00Z", "read_only": read_only, "added_by": "pinacle[bot]", "last_used": null, "enabled": true})
}

async fn add_key(State(f): State<Fake>, h: HeaderMap, Path((o, r)): Path<(String, String)>, Json(b): Json<Value>) -> Response {
    let mut f = f.lock().unwrap();
    let (full, _) = match visible(&f, &h, &o, &r) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let key = b["key"].as_str().unwrap_or("").to_owned();
    if !key.starts_with("ssh-ed25519 ") {
        return err(StatusCode::UNPROCESSABLE_ENTITY, "key is invalid. It must begin with 'ssh-ed25519', 'ssh-rsa', …");
    }
    if f.keys.iter().any(|k| k.3 == key) {
        return err(StatusCode::UNPROCESSABLE_ENTITY, "key is already in use");
    }
    f.counter += 1;
    let id = f.counter;
    let title = b["title"].as_str().unwrap_or("").to_owned();
    let read_only = b["read_only"].as_bool().unwrap_or(false);
    f.keys.push((id, full.clone(), title.clone(), key.clone(), read_only));
    (StatusCode::CREATED, Json(key_json(&full, id, &title, &key, read_only))).into_response()
}

async fn list_keys(State(f): State<Fake>, h: HeaderMap, Path((o, r)): Path<(String, String)>) -> Response {
    let f = f.lock().unwrap();
    let (full, _) = match visible(&f, &h, &o, &r) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let list: Vec<Value> = f.keys.iter().filter(|k| k.1 == full).map(|k| key_json(&full, k.0, &k.2, &k.3, k.4)).collect();
    Json(list).into_response()
}

async fn delete_key(State(f): State<Fake>, h: HeaderMap, Path((o, r, id)): Path<(String, String, u64)>) -> Response {
    let mut f = f.lock().unwrap();
    if let Err(e) = visible(&f, &h, &o, &r) {
        return e;
    }
    let before = f.keys.len();
    f.keys.retain(|k| k.0 != id);
    if f.keys.len() == before {
        return err(StatusCode::NOT_FOUND, "Not Found");
    }
    StatusCode::NO_CONTENT.into_response()
}

fn comment_json(full: &str, id: u64, number: u64, body: &str) -> Value {
    json!({"id": id, "node_id": format!("IC_{id}"), "url": format!("https://api.github.com/repos/{full}/issues/comments/{id}"),
        "html_url": format!("https://github.com/{full}/pull/{number}#issuecomment-{id}"), "body": body, "user": author("pinacle[bot]", 99),
        "created_at": "2026-12-07T00:00:00Z", "updated_at": "2026-12-07T00:00:00Z", "author_association": "NONE"})
}

async fn add_comment(State(f): State<Fake>, h: HeaderMap, Path((o, r, n)): Path<(String, String, u64)>, Json(b): Json<Value>) -> Response {
    let mut f = f.lock().unwrap();
    let (full, _) = match visible(&f, &h, &o, &r) {
        Ok(x) => x,
        Err(e) => return e,
    };
    f.counter += 1;
    let id = f.counter;
    let body = b["body"].as_str().unwrap_or("").to_owned();
    f.comments.push((id, n, body.clone()));
    (StatusCode::CREATED, Json(comment_json(&full, id, n, &body))).into_response()
}

async fn edit_comment(State(f): State<Fake>, h: HeaderMap, Path((o, r, id)): Path<(String, String, u64)>, Json(b): Json<Value>) -> Response {
    let mut f = f.lock().unwrap();
    let (full, _) = match visible(&f, &h, &o, &r) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let body = b["body"].as_str().unwrap_or("").to_owned();
    let Some(c) = f.comments.iter_mut().find(|c| c.0 == id) else { return err(StatusCode::NOT_FOUND, "Not Found") };
    c.2 = body.clone();
    let n = c.1;
    Json(comment_json(&full, id, n, &body)).into_response()
}

fn check_json(full: &str, id: u64, sha: &str, status: &str, conclusion: Option<&str>, name: &str) -> Value {
    json!({"id": id, "node_id": format!("CR_{id}"), "head_sha": sha, "external_id": "", "url": format!("https://api.github.com/repos/{full}/check-runs/{id}"),
        "html_url": format!("https://github.com/{full}/runs/{id}"), "details_url": null, "status": status, "conclusion": conclusion,
        "started_at": "2026-12-07T00:00:00Z", "completed_at": null, "name": name, "pull_requests": [],
        "output": {"title": null, "summary": null, "text": null, "annotations_count": 0, "annotations_url": format!("https://api.github.com/repos/{full}/check-runs/{id}/annotations")}})
}

async fn add_check(State(f): State<Fake>, h: HeaderMap, Path((o, r)): Path<(String, String)>, Json(b): Json<Value>) -> Response {
    let mut f = f.lock().unwrap();
    let (full, _) = match visible(&f, &h, &o, &r) {
        Ok(x) => x,
        Err(e) => return e,
    };
    f.counter += 1;
    let id = f.counter;
    let sha = b["head_sha"].as_str().unwrap_or("").to_owned();
    let status = b["status"].as_str().unwrap_or("queued").to_owned();
    let conclusion = b["conclusion"].as_str().map(str::to_owned);
    f.check_runs.push((id, sha.clone(), status.clone(), conclusion.clone()));
    (StatusCode::CREATED, Json(check_json(&full, id, &sha, &status, conclusion.as_deref(), b["name"].as_str().unwrap_or("")))).into_response()
}

async fn edit_check(State(f): State<Fake>, h: HeaderMap, Path((o, r, id)): Path<(String, String, u64)>, Json(b): Json<Value>) -> Response {
    let mut f = f.lock().unwrap();
    let (full, _) = match visible(&f, &h, &o, &r) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let Some(c) = f.check_runs.iter_mut().find(|c| c.0 == id) else { return err(StatusCode::NOT_FOUND, "Not Found") };
    if let Some(s) = b["status"].as_str() {
        c.2 = s.to_owned();
    }
    c.3 = b["conclusion"].as_str().map(str::to_owned).or(c.3.take());
    let (sha, status, conclusion) = (c.1.clone(), c.2.clone(), c.3.clone());
    Json(check_json(&full, id, &sha, &status, conclusion.as_deref(), b["name"].as_str().unwrap_or("Pinacle preview"))).into_response()
}

/// `GET /app/hook/deliveries` (the App's JWT): newest first.
async fn hook_deliveries(State(f): State<Fake>, h: HeaderMap) -> Response {
    let f = f.lock().unwrap();
    if !app_jwt_ok(&f, &h) {
        return err(StatusCode::UNAUTHORIZED, "A JSON web token could not be decoded");
    }
    let list: Vec<Value> = f
        .hook_log
        .iter()
        .rev()
        .map(|(id, guid, code, event, _)| {
            json!({"id": id, "guid": guid, "delivered_at": "2026-12-07T09:00:00Z", "redelivery": false, "duration": 0.27,
                "status": if *code < 300 { "OK" } else { "Bad Gateway" }, "status_code": code, "event": event, "action": null,
                "installation_id": INSTALLATION, "repository_id": null, "throttled_at": null})
        })
        .collect();
    Json(list).into_response()
}

/// `POST /app/hook/deliveries/{id}/attempts`: sends the delivery again,
/// signed, with its GUID.
async fn redeliver(State(f): State<Fake>, h: HeaderMap, Path(id): Path<u64>) -> Response {
    let mut f = f.lock().unwrap();
    if !app_jwt_ok(&f, &h) {
        return err(StatusCode::UNAUTHORIZED, "A JSON web token could not be decoded");
    }
    let Some((_, guid, _, event, body)) = f.hook_log.iter().find(|d| d.0 == id).cloned() else { return err(StatusCode::NOT_FOUND, "Not Found") };
    f.redelivered.push(id);
    let Some((url, secret)) = f.hook.clone() else { return err(StatusCode::UNPROCESSABLE_ENTITY, "no hook") };
    tokio::spawn(async move {
        deliver(&reqwest::Client::new(), &url, &secret, &event, &guid, &body).await;
    });
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

/// `POST /app-manifests/{code}/conversions`: GitHub's answer once an App
/// was made from a manifest (no authentication: the code is the secret).
async fn conversion(State(f): State<Fake>, Path(code): Path<String>) -> Response {
    let mut f = f.lock().unwrap();
    f.requests.push(format!("POST /app-manifests/{code}/conversions"));
    if code != "manifest-code" {
        return err(StatusCode::NOT_FOUND, "Not Found");
    }
    let Some((pem, secret)) = f.manifest_app.take() else { return err(StatusCode::NOT_FOUND, "Not Found") };
    (StatusCode::CREATED, Json(json!({"id": APP_ID, "slug": "pinacle-test", "node_id": "A_1", "owner": author("acme", 1), "name": "Pinacle",
        "description": null, "external_url": "https://p.example", "html_url": "https://github.com/apps/pinacle-test",
        "created_at": "2026-12-07T00:00:00Z", "updated_at": "2026-12-07T00:00:00Z", "permissions": {"contents": "write"}, "events": ["push"],
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "webhook_secret": secret, "pem": pem}))).into_response()
}

// --- OAuth (sign-in through the App's user authorisation) ---------------

async fn authorize(State(f): State<Fake>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut f = f.lock().unwrap();
    let (id, login) = f.current.clone().expect("a GitHub user is signed in");
    f.counter += 1;
    let code = format!("code{}", f.counter);
    f.codes.insert(code.clone(), (id, login));
    let state: String = q.get("state").cloned().unwrap_or_default().bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
    let location = format!("{}?code={code}&state={state}", q["redirect_uri"]);
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

async fn access_token(State(f): State<Fake>, Json(b): Json<Value>) -> Response {
    let mut f = f.lock().unwrap();
    if b["client_id"] != CLIENT_ID || b["client_secret"] != CLIENT_SECRET {
        return Json(json!({"error": "incorrect_client_credentials"})).into_response();
    }
    let Some(who) = f.codes.remove(b["code"].as_str().unwrap_or("")) else { return Json(json!({"error": "bad_verification_code"})).into_response() };
    f.counter += 1;
    let token = format!("ghu_fake{}", f.counter);
    f.user_tokens.insert(token.clone(), who);
    Json(json!({"access_token": token, "token_type": "bearer", "scope": ""})).into_response()
}

async fn current_user(State(f): State<Fake>, h: HeaderMap) -> Response {
    let f = f.lock().unwrap();
    let Some((id, login)) = f.user_tokens.get(&bearer(&h)).cloned() else { return err(StatusCode::UNAUTHORIZED, "Bad credentials") };
    let mut u = author(&login, id);
    u["created_at"] = json!("2011-01-25T18:44:36Z");
    u["updated_at"] = json!("2026-11-01T00:00:00Z");
    for k in ["public_repos", "public_gists", "followers", "following"] {
        u[k] = json!(1);
    }
    Json(u).into_response()
}

/// Starts the fake on loopback: its URL and state.
pub async fn start(public_key: Vec<u8>) -> (String, Fake) {
    let fake: Fake = Arc::new(Mutex::new(State_ { public_key, ..Default::default() }));
    let app = Router::new()
        .route("/app/installations/{id}/access_tokens", post(mint))
        .route("/installation/token", delete(revoke))
        .route("/installation/repositories", get(installation_repos))
        .route("/repos/{o}/{r}", get(get_repo))
        .route("/repos/{o}/{r}/branches", get(branches))
        .route("/repos/{o}/{r}/collaborators/{login}/permission", get(permission))
        .route("/repos/{o}/{r}/contents/{*path}", get(contents))
        .route("/repos/{o}/{r}/keys", post(add_key).get(list_keys))
        .route("/repos/{o}/{r}/keys/{id}", delete(delete_key))
        .route("/repos/{o}/{r}/issues/{n}/comments", post(add_comment))
        .route("/repos/{o}/{r}/issues/comments/{id}", post(edit_comment).patch(edit_comment))
        .route("/repos/{o}/{r}/check-runs", post(add_check))
        .route("/repos/{o}/{r}/check-runs/{id}", axum::routing::patch(edit_check))
        .route("/app-manifests/{code}/conversions", post(conversion))
        .route("/app/hook/deliveries", get(hook_deliveries))
        .route("/app/hook/deliveries/{id}/attempts", post(redeliver))
        .route("/login/oauth/authorize", get(authorize))
        .route("/login/oauth/access_token", post(access_token))
        .route("/user", get(current_user))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, fake)
}

/// A new RSA key for the App: (PEM file, PKCS#1 public key DER).
pub fn app_key(dir: &std::path::Path) -> (PathBuf, Vec<u8>) {
    let pem = dir.join("app.pem");
    let out = std::process::Command::new("openssl").args(["genrsa", "-traditional", "-out"]).arg(&pem).arg("2048").output().unwrap();
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    let der = std::process::Command::new("openssl").args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"]).arg(&pem).output().unwrap();
    assert!(der.status.success());
    (pem, der.stdout)
}

/// Sends a delivery signed as GitHub signs it: (status, body).
pub async fn deliver(http: &reqwest::Client, api: &str, secret: &str, event: &str, id: &str, body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let sig = pinacle_github::webhook::sign(secret.as_bytes(), &bytes);
    let r = http
        .post(format!("{api}/api/v1/github/webhook"))
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", id)
        .header("X-GitHub-Hook-ID", "1")
        .header("X-Hub-Signature-256", sig)
        .header("User-Agent", "GitHub-Hookshot/abc123")
        .header(header::CONTENT_TYPE, "application/json")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}
