//! The web app's API against a real `pinacle up`: GraphQL queries,
//! mutations and subscriptions under the same authorisation as REST,
//! workspace layouts, SSH keys, read-only tokens, terminal sessions that
//! survive a dropped connection (authenticated the browser's way), file
//! conflict detection, and the embedded app's pages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Pinacle;
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;


/// Runs a GraphQL operation: (HTTP status, the response).
async fn gql(p: &Pinacle, token: &str, query: &str, variables: Value) -> (u16, Value) {
    let mut req = p.http.post(format!("{}/graphql", p.url)).json(&json!({"query": query, "variables": variables}));
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The data of a successful operation.
async fn data(p: &Pinacle, token: &str, query: &str, variables: Value) -> Value {
    let (s, b) = gql(p, token, query, variables).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["errors"].is_null(), "{query}: {b}");
    b["data"].clone()
}

/// The error code of a failed operation.
async fn error_code(p: &Pinacle, token: &str, query: &str, variables: Value) -> (String, Value) {
    let (s, b) = gql(p, token, query, variables).await;
    assert_eq!(s, 200, "{b}");
    let e = &b["errors"][0];
    assert!(!e.is_null(), "{query} succeeded: {b}");
    (e["extensions"]["code"].as_str().unwrap_or_default().to_owned(), e.clone())
}

const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAslebIX1AsoKLpkR9B6kXvkJKXv7rNiPDCrRgoZj5b2 alice@laptop";

#[tokio::test]
async fn graphql_serves_the_web_app_under_the_rest_rules() {
    let p = Pinacle::start().await;
    // no credential: 401 in the REST shape
    let (s, b) = gql(&p, "", "{ me { name } }", json!({})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("unauthorized")), "{b}");
    let (s, b) = p.call_as("", Method::GET, "/api/v1/auth/providers", None).await;
    assert_eq!((s, &b), (200, &json!({"github": false, "signup": true})));

    let alice = p.signup_and_login("alice").await;
    let bob = p.signup_and_login("bob").await;
    let d = data(&p, &alice, "{ me { name isAdmin } pods { id } templates { name tier } tiers { name vcpus } }", json!({})).await;
    assert_eq!(d["me"], json!({"name": "alice", "isAdmin": false}));
    assert_eq!(d["pods"], json!([]));
    assert!(d["templates"].as_array().unwrap().iter().any(|t| t["name"] == "vite"), "{d}");
    assert_eq!(d["tiers"][0], json!({"name": "dev.small", "vcpus": 1}));

    // a bad pinacle.yaml: every problem with its position, nothing created
    let q = "query($y: String!) { validateConfig(yaml: $y) { ok diagnostics { line column path message suggestion } } }";
    let d = data(&p, &alice, q, json!({"y": "version: \"1.0\"\ntier: dev.smal\n"})).await;
    assert_eq!(d["validateConfig"]["ok"], false);
    assert_eq!(d["validateConfig"]["diagnostics"][0]["line"], 2, "{d}");
    let create = "mutation($i: CreatePodInput!) { createPod(input: $i) { id name state template } }";
    let (code, e) = error_code(&p, &alice, create, json!({"i": {"name": "bad", "config": "tier: nope\n"}})).await;
    assert_eq!(code, "invalid_config", "{e}");
    assert!(e["extensions"]["details"][0]["line"].is_number(), "{e}");
    assert_eq!(data(&p, &alice, "{ pods { id } }", json!({})).await["pods"], json!([]));

    // subscribe before the pod exists: its updates arrive live
    let (mut ws, _) = {
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("{}/graphql/ws", p.url.replace("http://", "ws://"))).unwrap();
        req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap()
    };
    ws.send(Message::Text(json!({"type": "connection_init", "payload": {"token": alice}}).to_string().into())).await.unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
    let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { podUpdates { name state } }"}});
    ws.send(Message::Text(sub.to_string().into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let d = data(&p, &alice, create, json!({"i": {"name": "web1", "template": "minimal"}})).await;
    assert_eq!(d["createPod"]["name"], "web1");
    let id = d["createPod"]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while !seen.iter().any(|s| s == "RUNNING") {
        assert!(Instant::now() < deadline, "no RUNNING update; saw {seen:?}\n{}", p.server_log());
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "next" && v["payload"]["data"]["podUpdates"]["name"] == "web1" {
                seen.push(v["payload"]["data"]["podUpdates"]["state"].as_str().unwrap().to_owned());
            }
        }
    }
    // bob's subscription is refused without a token, and bob sees nothing of alice's
    let (mut bob_ws, _) = {
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("{}/graphql/ws", p.url.replace("http://", "ws://"))).unwrap();
        req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap()
    };
    bob_ws.send(Message::Text(json!({"type": "connection_init", "payload": {}}).to_string().into())).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), bob_ws.next()).await.unwrap();
    assert!(!matches!(&refused, Some(Ok(Message::Text(t))) if t.contains("connection_ack")), "{refused:?}");
    assert_eq!(data(&p, &bob, "{ pods { id } }", json!({})).await["pods"], json!([]));
    let (code, _) = error_code(&p, &bob, "query($id: String!) { pod(id: $id) { name } }", json!({"id": id})).await;
    assert_eq!(code, "not_found");
    let (code, _) = error_code(&p, &bob, "mutation($id: String!) { stopPod(id: $id) { name } }", json!({"id": id})).await;
    assert_eq!(code, "not_found");

    // layouts are per user and pod
    let save = "mutation($p: String!, $l: JSON!) { saveLayout(pod: $p, layout: $l) }";
    let layout = json!({"version": 1, "tabs": [{"id": "t1", "kind": "terminal", "title": "Shell", "session": "s-1"}], "active": "t1"});
    assert_eq!(data(&p, &alice, save, json!({"p": "web1", "l": layout})).await["saveLayout"], true);
    let d = data(&p, &alice, "{ pod(id: \"web1\") { layout tabs { name kind } state usage { memoryLimitBytes memoryBytes } } }", json!({})).await;
    assert_eq!(d["pod"]["layout"], layout);
    assert_eq!(d["pod"]["usage"]["memoryLimitBytes"], 2.0 * 1024.0 * 1024.0 * 1024.0);
    assert!(d["pod"]["usage"]["memoryBytes"].as_f64().is_some_and(|m| m > 0.0), "{d}");
    let (code, _) = error_code(&p, &bob, save, json!({"p": "web1", "l": {"tabs": []}})).await;
    assert_eq!(code, "not_found");
    let (code, _) = error_code(&p, &alice, save, json!({"p": "web1", "l": [1, 2]})).await;
    assert_eq!(code, "invalid_layout");

    // SSH keys: checked, registered only with proof of possession (a
    // challenge signed with the private key), one account per key
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id_laptop");
    let out = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
    let (s, ch) = p.call_as(&alice, Method::POST, "/api/v1/ssh-keys/challenge", None).await;
    assert_eq!(s, 201, "{ch}");
    let challenge = ch["challenge"].as_str().unwrap();
    let signature = common::sign_ssh_challenge(&key, ch["namespace"].as_str().unwrap(), challenge);
    let add = "mutation($n: String!, $k: String!, $c: String, $s: String) { addSshKey(name: $n, publicKey: $k, challenge: $c, signature: $s) { id fingerprint algorithm } }";
    let d = data(&p, &alice, add, json!({"n": "laptop", "k": public, "c": challenge, "s": signature})).await;
    assert_eq!(d["addSshKey"]["algorithm"], "ssh-ed25519");
    assert!(d["addSshKey"]["fingerprint"].as_str().is_some_and(|f| f.starts_with("SHA256:")), "{d}");
    // bob cannot register alice's public key: he cannot sign for it
    let (code, _) = error_code(&p, &bob, add, json!({"n": "mine", "k": public})).await;
    assert_eq!(code, "proof_required");
    let (code, _) = error_code(&p, &bob, add, json!({"n": "mine", "k": ED25519})).await;
    assert_eq!(code, "proof_required");
    let (code, _) = error_code(&p, &bob, add, json!({"n": "x", "k": "ssh-rsa nonsense"})).await;
    assert_eq!(code, "invalid_public_key");
    assert_eq!(data(&p, &bob, "{ sshKeys { id } }", json!({})).await["sshKeys"], json!([]));
    let key_id = d["addSshKey"]["id"].as_str().unwrap();
    let (code, _) = error_code(&p, &bob, "mutation($id: String!) { deleteSshKey(id: $id) }", json!({"id": key_id})).await;
    assert_eq!(code, "not_found");

    // secrets: write-only
    data(&p, &alice, "mutation { setSecret(name: \"API_KEY\", value: \"s3cret-value\") { name } }", json!({})).await;
    let (_, all) = gql(&p, &alice, "{ secrets { name scope updatedAt } }", json!({})).await;
    assert!(!all.to_string().contains("s3cret-value") && all.to_string().contains("API_KEY"), "{all}");

    // deleting it: the subscription's last word is DELETED
    data(&p, &alice, "mutation { deletePod(id: \"web1\") { state } }", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no DELETED update\n{}", p.server_log());
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["payload"]["data"]["podUpdates"]["state"] == "DELETED" {
                break;
            }
        }
    }

    // a read-only token queries but cannot change anything
    let d = data(&p, &alice, "mutation { createToken(name: \"ro\", scope: READ) { token info { scope } } }", json!({})).await;
    let ro = d["createToken"]["token"].as_str().unwrap().to_owned();
    assert_eq!(data(&p, &ro, "{ me { name } }", json!({})).await["me"]["name"], "alice");
    let (code, _) = error_code(&p, &ro, "mutation { setSecret(name: \"X\", value: \"y\") { name } }", json!({})).await;
    assert_eq!(code, "insufficient_scope");

    // the app's pages: index for app routes, JSON 404 for the API
    let r = p.http.get(format!("{}/pods/web1", p.url)).send().await.unwrap();
    // (scripts/test.sh builds web/dist before the tests)
    assert_eq!(r.status(), 200, "the app's page; is web/dist built (bash scripts/build-web.sh)?");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    let (s, b) = p.call_as(&alice, Method::GET, "/api/v1/nothing-here", None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")));
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A terminal opened the browser's way: the token as a subprotocol.
async fn browser_terminal(p: &Pinacle, token: &str, pod: &str, session: &str) -> Ws {
    let url = format!("{}/api/v1/pods/{pod}/terminal?rows=24&cols=80&session={session}", p.url.replace("http://", "ws://"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut().insert("sec-websocket-protocol", format!("pinacle.terminal, bearer.{token}").parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "pinacle.terminal");
    ws
}

async fn screen_until(ws: &mut Ws, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut screen = String::new();
    while !screen.contains(want) {
        assert!(Instant::now() < deadline, "never saw {want:?} on the terminal: {screen:?}");
        match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            Ok(Some(Ok(Message::Binary(d)))) => screen.push_str(&String::from_utf8_lossy(&d)),
            Ok(Some(Ok(Message::Text(t)))) => screen.push_str(t.as_str()),
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(other) => panic!("terminal ended: {other:?}; screen: {screen:?}"),
        }
    }
    screen
}

#[tokio::test]
async fn terminals_survive_a_dropped_connection_and_saves_detect_conflicts() {
    let p = Pinacle::start().await;
    let alice = p.signup_and_login("alice").await;
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/pods", Some(json!({"name": "ide", "template": "minimal", "runtime": "youki"}))).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state_as(&alice, "ide", "running", 120).await;

    // a shell with state; the connection drops (a network blip, a reload)
    let mut ws = browser_terminal(&p, &alice, "ide", "tab-1").await;
    // busybox's line editor asks where the cursor is; answer as xterm.js does
    screen_until(&mut ws, "\x1b[6n").await;
    ws.send(Message::Binary(b"\x1b[1;14R".to_vec().into())).await.unwrap();
    ws.send(Message::Binary(b"K=kept; echo RE\"\"ADY\n".to_vec().into())).await.unwrap();
    screen_until(&mut ws, "READY").await;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ws = browser_terminal(&p, &alice, "ide", "tab-1").await;
    // the recent screen comes back, and the shell still has its variable
    screen_until(&mut ws, "READY").await;
    ws.send(Message::Binary(b"echo \"value=$K\"\n".to_vec().into())).await.unwrap();
    screen_until(&mut ws, "value=kept").await;
    // a bad session id is refused before the upgrade
    let url = format!("{}/api/v1/pods/ide/terminal?session=a%20b", p.url.replace("http://", "ws://"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut().insert("sec-websocket-protocol", format!("pinacle.terminal, bearer.{alice}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("a bad session id was accepted: {other:?}"),
    }
    // another user cannot attach to it, even knowing the id
    let bob = p.signup_and_login("bob").await;
    let url = format!("{}/api/v1/pods/ide/terminal?session=tab-1", p.url.replace("http://", "ws://"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut().insert("sec-websocket-protocol", format!("pinacle.terminal, bearer.{bob}").parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err(), "bob reached alice's terminal");

    // editor saves: If-Match with the read's ETag; a change underneath is a 412
    let file = format!("{}/api/v1/pods/ide/files/content?path=notes.txt", p.url);
    let r = p.http.put(&file).bearer_auth(&alice).header("if-none-match", "*").body("v1").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = p.http.put(&file).bearer_auth(&alice).header("if-none-match", "*").body("again").send().await.unwrap();
    assert_eq!(r.status(), 412, "creating over an existing file");
    let r = p.http.get(&file).bearer_auth(&alice).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(r.text().await.unwrap(), "v1");
    ws.send(Message::Binary(b"echo changed > /workspace/notes.txt; echo DO\"\"NE\n".to_vec().into())).await.unwrap();
    screen_until(&mut ws, "DONE").await;
    let r = p.http.put(&file).bearer_auth(&alice).header("if-match", &etag).body("v2").send().await.unwrap();
    assert_eq!(r.status(), 412);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "file_changed");
    // the terminal's change survived; a save from a fresh read goes through
    let r = p.http.get(&file).bearer_auth(&alice).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(r.text().await.unwrap(), "changed\n");
    let r = p.http.put(&file).bearer_auth(&alice).header("if-match", &etag).body("v2").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let new_tag = r.headers()["etag"].to_str().unwrap().to_owned();
    let r = p.http.get(&file).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.headers()["etag"].to_str().unwrap(), new_tag);

    // closing the tab ends the shell: SIGHUP, then the exit status
    ws.send(Message::Text(json!({"signal": 1}).to_string().into())).await.unwrap();
    screen_until(&mut ws, "\"exit\"").await;
}
