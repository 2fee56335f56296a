//! GitHub sign-in against a local fake of GitHub that speaks its OAuth web
//! flow (authorize redirect, code-for-token exchange with GitHub's
//! `{"error": ...}`-with-200 answers) and its REST `GET /user`; the server
//! drives it with the real octocrab client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::Pinacle;
use reqwest::Method;
use serde_json::{json, Value};

const CLIENT_ID: &str = "Iv1.pinacle-test-client";
const CLIENT_SECRET: &str = "fake-client-secret-0123456789abcdef";

/// The fake's state: who is "signed in to GitHub" in the browser, the codes
/// it issued, and the tokens it handed out.
#[derive(Default)]
struct Fake {
    current: Option<(u64, String)>,
    codes: HashMap<String, (u64, String, String)>, // code -> (id, login, redirect_uri)
    tokens: HashMap<String, (u64, String)>,
    counter: u64,
}

type Shared = Arc<Mutex<Fake>>;

async fn authorize(State(f): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return (StatusCode::NOT_FOUND, "unknown client").into_response();
    }
    let mut f = f.lock().unwrap();
    let (id, login) = f.current.clone().expect("a GitHub user is signed in");
    f.counter += 1;
    let code = format!("code{}", f.counter);
    let redirect = q["redirect_uri"].clone();
    f.codes.insert(code.clone(), (id, login, redirect.clone()));
    let state = q.get("state").cloned().unwrap_or_default();
    let enc = |s: &str| s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect::<String>();
    let location = format!("{redirect}?code={code}&state={}", enc(&state));
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

async fn access_token(State(f): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    // GitHub answers JSON when asked with Accept: application/json
    assert!(headers.get(header::ACCEPT).is_some_and(|v| v.to_str().unwrap().contains("application/json")));
    let b: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        // form-encoded bodies are accepted too
        let pairs: HashMap<String, String> = String::from_utf8_lossy(&body)
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        json!(pairs)
    });
    if b["client_id"] != CLIENT_ID || b["client_secret"] != CLIENT_SECRET {
        return Json(json!({"error": "incorrect_client_credentials", "error_description": "The client_id and/or client_secret passed are incorrect."})).into_response();
    }
    let mut f = f.lock().unwrap();
    let Some((id, login, redirect)) = f.codes.remove(b["code"].as_str().unwrap_or("")) else {
        return Json(json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."})).into_response();
    };
    if b["redirect_uri"] != redirect.as_str() {
        return Json(json!({"error": "redirect_uri_mismatch", "error_description": "The redirect_uri MUST match the registered callback URL for this application."})).into_response();
    }
    f.counter += 1;
    let token = format!("gho_fake{}", f.counter);
    f.tokens.insert(token.clone(), (id, login));
    Json(json!({"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"})).into_response()
}

async fn current_user(State(f): State<Shared>, headers: HeaderMap) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let token = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("token ")).unwrap_or("");
    let Some((id, login)) = f.lock().unwrap().tokens.get(token).cloned() else {
        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}))).into_response();
    };
    let u = |path: &str| format!("https://api.github.com/users/{login}{path}");
    Json(json!({
        "login": login, "id": id, "node_id": format!("MDQ6VXNlcj{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"), "gravatar_id": "",
        "url": u(""), "html_url": format!("https://github.com/{login}"),
        "followers_url": u("/followers"), "following_url": u("/following{/other_user}"),
        "gists_url": u("/gists{/gist_id}"), "starred_url": u("/starred{/owner}{/repo}"),
        "subscriptions_url": u("/subscriptions"), "organizations_url": u("/orgs"),
        "repos_url": u("/repos"), "events_url": u("/events{/privacy}"),
        "received_events_url": u("/received_events"), "type": "User", "site_admin": false,
        "name": "The Octocat", "company": null, "blog": "", "location": null, "email": null,
        "hireable": null, "bio": null, "public_repos": 8, "public_gists": 8, "followers": 1, "following": 0,
        "created_at": "2011-01-25T18:44:36Z", "updated_at": "2026-11-01T00:00:00Z"
    }))
    .into_response()
}

/// Files of the fake's public repositories, `owner/repo` → path → text.
fn repo_files(owner: &str, repo: &str) -> Option<Vec<(&'static str, &'static str)>> {
    match (owner, repo) {
        ("acme", "yaml-app") => Some(vec![("pinacle.yaml", "version: \"1.0\"\ntemplate: vite\ntier: dev.medium\n")]),
        ("acme", "devcontainer-app") => Some(vec![(
            ".devcontainer/devcontainer.json",
            "{\n  // JSONC, as VS Code writes it\n  \"image\": \"mcr.microsoft.com/devcontainers/base:bookworm\",\n  \"forwardPorts\": [8000],\n  \"postCreateCommand\": \"echo ready\",\n}\n",
        )]),
        ("acme", "empty") => Some(vec![]),
        _ => None,
    }
}

/// `GET /repos/{owner}/{repo}/contents/{path}`, GitHub's shape (base64 in
/// 60-column lines).
async fn contents(axum::extract::Path((owner, repo, path)): axum::extract::Path<(String, String, String)>) -> Response {
    use base64::Engine;
    let not_found = || (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/repos/contents#get-repository-content", "status": "404"}))).into_response();
    let Some(files) = repo_files(&owner, &repo) else { return not_found() };
    let Some((_, text)) = files.into_iter().find(|(p, _)| *p == path) else { return not_found() };
    let b64 = base64::engine::general_purpose::STANDARD.encode(text);
    let content = b64.as_bytes().chunks(60).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\n");
    let url = format!("https://api.github.com/repos/{owner}/{repo}/contents/{path}?ref=main");
    let html = format!("https://github.com/{owner}/{repo}/blob/main/{path}");
    let git = format!("https://api.github.com/repos/{owner}/{repo}/git/blobs/3d21ec53a331a6f037a91c368710b99387d012c1");
    Json(json!({
        "type": "file", "encoding": "base64", "size": text.len(), "name": path.rsplit('/').next().unwrap(), "path": path,
        "content": content, "sha": "3d21ec53a331a6f037a91c368710b99387d012c1", "url": url, "git_url": git, "html_url": html,
        "download_url": format!("https://raw.githubusercontent.com/{owner}/{repo}/main/{path}"),
        "_links": {"self": url, "git": git, "html": html}
    }))
    .into_response()
}

async fn fake_github() -> (String, Shared) {
    let shared: Shared = Arc::default();
    let app = Router::new()
        .route("/login/oauth/authorize", get(authorize))
        .route("/login/oauth/access_token", post(access_token))
        .route("/user", get(current_user))
        .route("/repos/{owner}/{repo}/contents/{*path}", get(contents))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

/// A browser without redirects followed automatically: (status, location, cookie, body).
async fn get_raw(http: &reqwest::Client, url: &str, cookie: Option<&str>) -> (u16, Option<String>, Option<String>, Value) {
    let mut req = http.get(url);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let loc = r.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
    let cookie = r.headers().get(header::SET_COOKIE).map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let text = r.text().await.unwrap();
    (status, loc, cookie, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The whole browser flow; answers the callback's status and body.
async fn sign_in(p: &Pinacle, http: &reqwest::Client) -> (u16, Value) {
    let (s, authorize, cookie, _) = get_raw(http, &format!("{}/api/v1/auth/github/start", p.url), None).await;
    assert_eq!(s, 302);
    let cookie = cookie.expect("binding cookie");
    let (s, callback, _, _) = get_raw(http, &authorize.unwrap(), None).await;
    assert_eq!(s, 302);
    let (s, _, _, body) = get_raw(http, &callback.unwrap(), Some(&cookie)).await;
    (s, body)
}

#[tokio::test]
async fn github_sign_in_creates_links_and_reuses_accounts() {
    let (gh, fake) = fake_github().await;
    let p = Pinacle::start_with_env(
        &["--github-client-id", CLIENT_ID, "--github-url", &gh, "--github-api-url", &gh],
        &[("PINACLE_GITHUB_CLIENT_SECRET", CLIENT_SECRET)],
    )
    .await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // the authorize URL carries what GitHub needs
    let (_, authorize, cookie, _) = get_raw(&http, &format!("{}/api/v1/auth/github/start", p.url), None).await;
    let authorize = authorize.unwrap();
    assert!(authorize.starts_with(&format!("{gh}/login/oauth/authorize?client_id=Iv1.pinacle-test-client&redirect_uri=")), "{authorize}");
    assert!(authorize.contains("%2Fapi%2Fv1%2Fauth%2Fgithub%2Fcallback") && authorize.contains("&state="), "{authorize}");
    assert!(cookie.unwrap().starts_with("pinacle_github_state="));

    // first sign-in creates the account, named after the GitHub login
    fake.lock().unwrap().current = Some((583231, "Octo-Cat".into()));
    let (s, first) = sign_in(&p, &http).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!((first["created"].as_bool(), first["user"]["name"].as_str()), (Some(true), Some("octo-cat")), "{first}");
    let access = first["access_token"].as_str().unwrap();
    let (s, me) = p.call_as(access, Method::GET, "/api/v1/me", None).await;
    assert_eq!((s, me["name"].as_str()), (200, Some("octo-cat")), "{me}");
    assert!(first["refresh_token"].as_str().unwrap().starts_with("pnr_"));
    // the next sign-in finds the same account by GitHub id, even after a rename on GitHub
    fake.lock().unwrap().current = Some((583231, "octocat-renamed".into()));
    let (s, again) = sign_in(&p, &http).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["created"], false);
    assert_eq!(again["user"]["id"], first["user"]["id"]);

    // a GitHub login that collides with a local user gets another name
    let (s, _) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "hubot", "password": "correct horse battery"}))).await;
    assert_eq!(s, 201);
    fake.lock().unwrap().current = Some((2, "hubot".into()));
    let (s, hubot) = sign_in(&p, &http).await;
    assert_eq!((s, hubot["user"]["name"].as_str()), (200, Some("hubot-gh")), "{hubot}");

    // a callback from another browser (no cookie), a forged state, a replayed code
    let (_, authorize, cookie, _) = get_raw(&http, &format!("{}/api/v1/auth/github/start", p.url), None).await;
    let (_, callback, _, _) = get_raw(&http, &authorize.unwrap(), None).await;
    let callback = callback.unwrap();
    let (s, _, _, b) = get_raw(&http, &callback, None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("invalid_state")), "{b}");
    let forged = callback.replace("state=v1", "state=v2");
    let (s, _, _, b) = get_raw(&http, &forged, cookie.as_deref()).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("invalid_state")), "{b}");
    let (s, _, _, ok) = get_raw(&http, &callback, cookie.as_deref()).await;
    assert_eq!(s, 200, "{ok}");
    let (s, _, _, b) = get_raw(&http, &callback, cookie.as_deref()).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("github_denied")), "a code works once: {b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("incorrect or expired"), "{b}");
    // a browser (asking for HTML) lands back in the web app, the tokens in the fragment
    let (_, authorize, cookie, _) = get_raw(&http, &format!("{}/api/v1/auth/github/start", p.url), None).await;
    let (_, callback, _, _) = get_raw(&http, &authorize.unwrap(), None).await;
    let r = http.get(callback.unwrap()).header(header::COOKIE, cookie.unwrap()).header(header::ACCEPT, "text/html,application/xhtml+xml").send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let fragment = location.strip_prefix("/auth/complete#").unwrap_or_else(|| panic!("{location}"));
    let access = fragment.split('&').find_map(|kv| kv.strip_prefix("access_token=")).unwrap();
    assert!(fragment.contains("refresh_token=pnr_"), "{fragment}");
    let (s, me) = p.call_as(access, Method::GET, "/api/v1/me", None).await;
    assert_eq!((s, me["name"].as_str()), (200, Some("hubot-gh")), "{me}");

    // the user declined on GitHub
    let (s, _, _, b) = get_raw(&http, &format!("{}/api/v1/auth/github/callback?error=access_denied&error_description=The+user+has+denied", p.url), None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("github_denied")), "{b}");

    // a repository's configuration, for the new-pod form (GraphQL, through octocrab)
    let repo = |url: String| {
        let http = http.clone();
        let api = p.url.clone();
        async move {
            let q = json!({"query": "query($u: String!) { repositoryConfig(url: $u) { file pinacleYaml diagnostics { severity message } } }", "variables": {"u": url}});
            let r = http.post(format!("{api}/graphql")).bearer_auth(common::TOKEN).json(&q).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let yaml = repo(format!("{gh}/acme/yaml-app")).await;
    assert_eq!(yaml["data"]["repositoryConfig"]["file"], "pinacle.yaml", "{yaml}");
    assert!(yaml["data"]["repositoryConfig"]["pinacleYaml"].as_str().unwrap().contains("tier: dev.medium"), "{yaml}");
    let dc = repo(format!("{gh}/acme/devcontainer-app/tree/main")).await;
    assert_eq!(dc["data"]["repositoryConfig"]["file"], ".devcontainer/devcontainer.json", "{dc}");
    let imported = dc["data"]["repositoryConfig"]["pinacleYaml"].as_str().unwrap();
    assert!(imported.contains("8000") && imported.contains("echo ready"), "{imported}");
    let none = repo(format!("{gh}/acme/empty")).await;
    assert_eq!(none["errors"][0]["extensions"]["code"], "not_found", "{none}");
    let other = repo("https://gitlab.com/acme/app".into()).await;
    assert_eq!(other["errors"][0]["extensions"]["code"], "unsupported_repository", "{other}");

    // with sign-up closed, unknown GitHub users are refused and known ones still sign in
    p.call(Method::PATCH, "/api/v1/admin/settings", Some(json!({"signup": "closed"}))).await;
    fake.lock().unwrap().current = Some((999, "newcomer".into()));
    let (s, b) = sign_in(&p, &http).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("signup_closed")), "{b}");
    fake.lock().unwrap().current = Some((583231, "octocat-renamed".into()));
    assert_eq!(sign_in(&p, &http).await.0, 200);
    // the client secret never reaches the log
    assert!(!p.server_log().contains(CLIENT_SECRET));
}

#[tokio::test]
async fn github_sign_in_says_so_when_not_configured() {
    let p = Pinacle::start().await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (s, _, _, b) = get_raw(&http, &format!("{}/api/v1/auth/github/start", p.url), None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (501, Some("not_supported")), "{b}");
}
