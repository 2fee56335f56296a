//! Long-lived connections against a real `pinacle up`: GraphQL over
//! WebSocket, SSE and terminals re-check who is calling (sign-out, token
//! expiry, team removal) and close when access ends; terminal messages
//! are capped; large file transfers stream through bounded memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Pinacle, TOKEN};
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Digest;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The longest any step here waits for the server.
const PATIENCE: Duration = Duration::from_secs(30);

async fn logout(p: &Pinacle, token: &str) {
    let (s, b) = p.call_as(token, Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!(s, 204, "{b}");
}

/// A graphql-transport-ws connection, acknowledged, signed in with `token`.
async fn graphql_ws(p: &Pinacle, token: &str) -> Ws {
    let mut req = format!("{}/graphql/ws", p.url.replace("http://", "ws://")).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::Text(json!({"type": "connection_init", "payload": {"token": token}}).to_string().into())).await.unwrap();
    let ack = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap().unwrap().unwrap();
    let ack: Value = serde_json::from_str(ack.to_text().unwrap()).unwrap();
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

/// What became of one GraphQL operation.
#[derive(Debug)]
enum Outcome {
    Data(Value),
    Errors(Value),
    /// The socket closed (with this code).
    Closed(Option<CloseCode>),
}

/// Runs `query` as operation `id` and waits for its first answer.
async fn operation(ws: &mut Ws, id: &str, query: &str) -> Outcome {
    let sent = ws.send(Message::Text(json!({"id": id, "type": "subscribe", "payload": {"query": query}}).to_string().into())).await;
    if sent.is_err() {
        return Outcome::Closed(None);
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.expect("an answer in time");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                match v["type"].as_str() {
                    Some("next") if v["id"] == id => {
                        let payload = &v["payload"];
                        if payload["errors"].as_array().is_some_and(|e| !e.is_empty()) {
                            return Outcome::Errors(payload["errors"].clone());
                        }
                        return Outcome::Data(payload["data"].clone());
                    }
                    Some("error") if v["id"] == id => return Outcome::Errors(v["payload"].clone()),
                    Some("ping") => {
                        let _ = ws.send(Message::Text(json!({"type": "pong"}).to_string().into())).await;
                    }
                    _ => {}
                }
            }
            Some(Ok(Message::Close(frame))) => return Outcome::Closed(frame.map(|f| f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Outcome::Closed(None),
        }
    }
}

/// Waits for the socket's close frame: its code (`None`: closed without one).
/// The connection was reset or broken (the peer closed it with data unread).
fn is_reset(e: &tokio_tungstenite::tungstenite::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e, tokio_tungstenite::tungstenite::Error::Io(io) if matches!(io.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe))
}

async fn closed_with(ws: &mut Ws, within: Duration) -> Option<CloseCode> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await.expect("the socket closes in time") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test]
async fn a_signed_out_session_can_no_longer_use_an_open_graphql_socket() {
    let p = Pinacle::start().await;
    let alice = p.signup_and_login("alice").await;
    let mut ws = graphql_ws(&p, &alice).await;
    match operation(&mut ws, "1", r#"mutation { createToken(name: "before") { token } }"#).await {
        Outcome::Data(d) => assert!(d["createToken"]["token"].as_str().is_some_and(|t| t.starts_with("pnc_")), "{d}"),
        other => panic!("signed in, a mutation works: {other:?}"),
    }
    logout(&p, &alice).await;
    // the next operation on the same socket runs as nobody
    // (refused, or the socket closed already); the socket itself is closed
    // with 4403, which graphql-ws clients answer by reconnecting with a
    // fresh token
    let code = match operation(&mut ws, "2", r#"mutation { createToken(name: "after") { token } }"#).await {
        Outcome::Data(d) => panic!("a signed-out session minted a token over its open socket: {d}"),
        Outcome::Errors(e) => {
            assert!(e.to_string().contains("signed out"), "{e}");
            closed_with(&mut ws, PATIENCE).await
        }
        Outcome::Closed(code) => code,
    };
    assert_eq!(code, Some(CloseCode::from(4403)));
    // a new socket with the signed-out token is refused with 4403 too (not
    // 1002, which graphql-ws clients never retry)
    let mut req = format!("{}/graphql/ws", p.url.replace("http://", "ws://")).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let (mut again, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    again.send(Message::Text(json!({"type": "connection_init", "payload": {"token": alice}}).to_string().into())).await.unwrap();
    assert_eq!(closed_with(&mut again, PATIENCE).await, Some(CloseCode::from(4403)));
    // the refused mutation left no token behind (alice signs in again to look)
    let creds = json!({"name": "alice", "password": "correct horse battery"});
    let (_, b) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(creds)).await;
    let (_, tokens) = p.call_as(b["access_token"].as_str().unwrap(), Method::GET, "/api/v1/tokens", None).await;
    assert!(!tokens.to_string().contains("\"after\""), "{tokens}");
}

#[tokio::test]
async fn a_graphql_socket_closes_when_its_access_token_expires() {
    let p = Pinacle::start_with(&["--access-token-ttl", "4"]).await;
    let alice = p.signup_and_login("alice").await;
    let mut ws = graphql_ws(&p, &alice).await;
    let sub = json!({"id": "u", "type": "subscribe", "payload": {"query": "subscription { podUpdates { id state } }"}});
    ws.send(Message::Text(sub.to_string().into())).await.unwrap();
    assert_eq!(closed_with(&mut ws, PATIENCE).await, Some(CloseCode::from(4403)), "closed at the token's expiry");
}

#[tokio::test]
async fn a_member_removed_from_a_team_can_no_longer_change_its_pods_over_an_open_socket() {
    let p = Pinacle::start().await;
    let mia = p.signup_and_login("mia").await;
    let (s, b) = p.call(Method::POST, "/api/v1/teams", Some(json!({"name": "acme"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = p.call(Method::POST, "/api/v1/teams/acme/members", Some(json!({"user": "mia", "role": "member"}))).await;
    assert!(s == 200 || s == 201, "{s} {b}");
    let (s, pod) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "web", "template": "minimal", "runtime": "gvisor", "team": "acme"}))).await;
    assert_eq!(s, 202, "{pod}");
    let id = pod["id"].as_str().unwrap();
    let save = format!(r#"mutation {{ saveLayout(pod: "{id}", layout: {{}}) }}"#);

    let mut ws = graphql_ws(&p, &mia).await;
    match operation(&mut ws, "1", &save).await {
        Outcome::Data(d) => assert_eq!(d["saveLayout"], true, "{d}"),
        other => panic!("a member may save a layout on the team's pod: {other:?}"),
    }
    let (s, b) = p.call(Method::DELETE, "/api/v1/teams/acme/members/mia", None).await;
    assert!(s == 200 || s == 204, "{s} {b}");
    match operation(&mut ws, "2", &save).await {
        Outcome::Errors(e) => assert!(e.to_string().contains("not found"), "{e}"),
        other => panic!("a removed member changed the team's pod over an open socket: {other:?}"),
    }
    // the socket still serves what mia may do
    match operation(&mut ws, "3", "query { me { name } }").await {
        Outcome::Data(d) => assert_eq!(d["me"]["name"], "mia", "{d}"),
        other => panic!("{other:?}"),
    }
}

/// Reads an SSE answer until it ends; panics if it is still open after `within`.
async fn wait_for_end(resp: reqwest::Response, within: Duration) {
    let mut body = resp.bytes_stream();
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.next()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return,
            Err(_) => panic!("the event stream was still open {within:?} later"),
        }
    }
}

#[tokio::test]
async fn an_event_stream_ends_when_its_session_is_signed_out_or_its_token_revoked() {
    let p = Pinacle::start().await;
    let alice = p.signup_and_login("alice").await;
    let (s, pod) = p.call_as(&alice, Method::POST, "/api/v1/pods", Some(json!({"name": "ev", "template": "minimal", "runtime": "gvisor"}))).await;
    assert_eq!(s, 202, "{pod}");
    let events = |token: String| {
        let req = p.http.get(format!("{}/api/v1/pods/ev/events", p.url)).bearer_auth(token);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp
        }
    };
    // a signed-out session
    let resp = events(alice.clone()).await;
    logout(&p, &alice).await;
    wait_for_end(resp, PATIENCE).await;
    // a revoked API token
    let (s, created) = p.call(Method::POST, "/api/v1/tokens", Some(json!({"name": "sse"}))).await;
    assert_eq!(s, 201, "{created}");
    let (s, _) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "ev2", "template": "minimal", "runtime": "gvisor"}))).await;
    assert_eq!(s, 202);
    let token = created["token"].as_str().unwrap().to_owned();
    let resp = {
        let r = p.http.get(format!("{}/api/v1/pods/ev2/events", p.url)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r
    };
    let (s, b) = p.call(Method::DELETE, &format!("/api/v1/tokens/{}", created["info"]["id"].as_str().or(created["id"].as_str()).unwrap()), None).await;
    assert!(s == 200 || s == 204, "{s} {b}");
    wait_for_end(resp, PATIENCE).await;
}

/// A terminal WebSocket to `pod` with `token`.
async fn terminal_as(p: &Pinacle, token: &str, pod: &str) -> Ws {
    let mut req = format!("{}/api/v1/pods/{pod}/terminal?rows=24&cols=80", p.url.replace("http://", "ws://")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

#[tokio::test]
async fn terminal_messages_are_capped_and_a_terminal_closes_when_its_session_ends() {
    let p = Pinacle::start().await;
    let alice = p.signup_and_login("alice").await;
    let (s, pod) = p.call_as(&alice, Method::POST, "/api/v1/pods", Some(json!({"name": "term", "template": "minimal", "runtime": "gvisor"}))).await;
    assert_eq!(s, 202, "{pod}");
    p.wait_state_as(&alice, "term", "running", 120).await;

    // a 2 MiB message is over the 1 MiB cap: closed with 1009 (too big)
    // (the server may refuse it from the frame's header and close while the
    // rest is still on its way: the client then sees the connection reset
    // instead of the close frame)
    let mut ws = terminal_as(&p, &alice, "term").await;
    match ws.send(Message::Binary(vec![b'x'; 2 << 20].into())).await {
        Ok(()) => {
            let deadline = Instant::now() + PATIENCE;
            let code = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, ws.next()).await.expect("the socket closes in time") {
                    Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        assert!(is_reset(&e), "{e}");
                        break Some(CloseCode::Size);
                    }
                    None => break None,
                }
            };
            assert_eq!(code, Some(CloseCode::Size));
        }
        Err(e) => assert!(is_reset(&e), "sending the oversized message: {e}"),
    }
    // a message under the cap works
    let mut ws = terminal_as(&p, &alice, "term").await;
    ws.send(Message::Binary(b"echo under-the-cap\n".to_vec().into())).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("under-the-cap\r\n") {
        assert!(Instant::now() < deadline, "{}", String::from_utf8_lossy(&seen));
        if let Ok(Some(Ok(Message::Binary(d)))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            seen.extend_from_slice(&d);
        }
    }
    // signing out closes it with 4403
    logout(&p, &alice).await;
    assert_eq!(closed_with(&mut ws, PATIENCE).await, Some(CloseCode::from(4403)));
}

/// The server's peak resident memory so far (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn twenty_parallel_64_mib_file_writes_and_reads_keep_the_server_small() {
    const FILES: usize = 20;
    const SIZE: usize = 64 << 20;
    /// Peak RSS growth allowed for all of it (buffering would take 2.5 GB).
    const BOUND: u64 = 300 << 20;
    let p = Pinacle::start().await;
    p.create_running("files", "minimal", "gvisor").await;
    let url = |i: usize| format!("{}/api/v1/pods/files/files/content?path=/workspace/f{i}", p.url);
    for i in 0..FILES {
        let r = p.http.put(url(i)).bearer_auth(TOKEN).body("old").send().await.unwrap();
        assert_eq!(r.status(), 204);
    }
    let content: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let want = hex(&sha2::Sha256::digest(&content));
    // one shared buffer for every request
    let content = axum::body::Bytes::from(content);
    let before = peak_rss(p.pid());

    let writes = (0..FILES).map(|i| {
        let req = p.http.put(url(i)).bearer_auth(TOKEN).header("if-match", "*").body(content.clone());
        async move { req.send().await }
    });
    for r in futures::future::join_all(writes).await {
        let r = r.unwrap_or_else(|e| panic!("{e:?}\n{}", p.server_log()));
        assert_eq!(r.status(), 204, "{:?}", r.text().await);
        assert_eq!(r.headers()["etag"].to_str().unwrap(), format!("\"{want}\""));
    }
    let reads = (0..FILES).map(|i| {
        let req = p.http.get(url(i)).bearer_auth(TOKEN);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200, "{:?}", r.text().await);
            let tag = r.headers()["etag"].to_str().unwrap().to_owned();
            let mut hash = sha2::Sha256::new();
            let mut body = r.bytes_stream();
            while let Some(chunk) = body.next().await {
                hash.update(chunk.unwrap());
            }
            (tag, hex(&hash.finalize()))
        }
    });
    for (tag, got) in futures::future::join_all(reads).await {
        assert_eq!((tag, got.as_str()), (format!("\"{want}\""), want.as_str()));
    }
    let grew = peak_rss(p.pid()).saturating_sub(before);
    eprintln!("peak RSS grew by {} MB for {FILES} parallel writes and reads of {} MiB", grew >> 20, SIZE >> 20);
    assert!(grew < BOUND, "peak RSS grew by {} MB", grew >> 20);

    // the files arrived intact
    let (out, err, code) = p.exec("files", &["sh", "-c", "sha256sum /workspace/f*"]).await;
    assert_eq!(code, 0, "{err}");
    let sums: Vec<_> = out.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(sums.len(), FILES, "{out}");
    assert!(sums.iter().all(|s| *s == want), "{out}");

    // If-Match compares the tag the server computes, chunk by chunk
    let r = p.http.put(url(0)).bearer_auth(TOKEN).header("if-match", "\"0000\"").body("x").send().await.unwrap();
    assert_eq!(r.status(), 412);
    let r = p.http.put(url(0)).bearer_auth(TOKEN).header("if-match", format!("\"{want}\"")).body("new").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = p.http.put(url(0)).bearer_auth(TOKEN).header("if-none-match", "*").body("x").send().await.unwrap();
    assert_eq!(r.status(), 412);
    // more than 64 MiB is refused, and the file is left as it was
    // (the server answers before reading it all, so the client may see its
    // upload cut off instead of the 413)
    match p.http.put(url(1)).bearer_auth(TOKEN).body(vec![0u8; SIZE + 1]).send().await {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request(), "{e:?}"),
    }
    let (out, _, _) = p.exec("files", &["sh", "-c", "sha256sum /workspace/f1; ls -a /workspace"]).await;
    assert!(out.starts_with(&want) && !out.contains("pinacle-tmp"), "{out}");
}

/// Starts a `podUpdates` subscription on `ws` as operation `id`.
async fn subscribe_updates(ws: &mut Ws, id: &str) {
    let sub = json!({"id": id, "type": "subscribe", "payload": {"query": "subscription { podUpdates { id name state } }"}});
    ws.send(Message::Text(sub.to_string().into())).await.unwrap();
}

/// The names of pods whose updates arrive on `ws` within `window`.
async fn updated_pods(ws: &mut Ws, window: Duration) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let deadline = Instant::now() + window;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), ws.next()).await {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            match v["type"].as_str() {
                Some("next") => {
                    assert!(v["payload"]["errors"].is_null(), "{v}");
                    names.insert(v["payload"]["data"]["podUpdates"]["name"].as_str().unwrap().to_owned());
                }
                Some("ping") => {
                    let _ = ws.send(Message::Text(json!({"type": "pong"}).to_string().into())).await;
                }
                _ => {}
            }
        }
    }
    names
}

#[tokio::test]
async fn pod_updates_reach_exactly_those_who_may_see_the_pod_as_membership_changes() {
    let p = Pinacle::start().await;
    let (alice, bob) = (p.signup_and_login("alice").await, p.signup_and_login("bob").await);
    let (s, b) = p.call(Method::POST, "/api/v1/teams", Some(json!({"name": "acme"}))).await;
    assert_eq!(s, 201, "{b}");
    let (mut wa, mut wb) = (graphql_ws(&p, &alice).await, graphql_ws(&p, &bob).await);
    subscribe_updates(&mut wa, "a").await;
    subscribe_updates(&mut wb, "b").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let create = |token: String, body: Value| {
        let p = &p;
        async move {
            let (s, b) = p.call_as(&token, Method::POST, "/api/v1/pods", Some(body)).await;
            assert_eq!(s, 202, "{b}");
            b["id"].as_str().unwrap().to_owned()
        }
    };
    // each sees their own pod; the team's pod reaches nobody outside it
    create(alice.clone(), json!({"name": "a1", "template": "minimal", "runtime": "gvisor"})).await;
    create(bob.clone(), json!({"name": "b1", "template": "minimal", "runtime": "gvisor"})).await;
    let t1 = create(TOKEN.to_owned(), json!({"name": "t1", "template": "minimal", "runtime": "gvisor", "team": "acme"})).await;
    let window = Duration::from_secs(5);
    let (a, b) = tokio::join!(updated_pods(&mut wa, window), updated_pods(&mut wb, window));
    assert_eq!(a.into_iter().collect::<Vec<_>>(), ["a1"]);
    assert_eq!(b.into_iter().collect::<Vec<_>>(), ["b1"]);
    // bob joins the team: the team's next changes (t1's deletion) reach him
    // on the same subscription (what was hidden from him is looked at again)
    let (s, b) = p.call(Method::POST, "/api/v1/teams/acme/members", Some(json!({"user": "bob", "role": "member"}))).await;
    assert!(s == 200 || s == 201, "{s} {b}");
    let (s, b) = p.call(Method::DELETE, &format!("/api/v1/pods/{t1}"), None).await;
    assert!(s == 200 || s == 202 || s == 204, "{s} {b}");
    let (a, b) = tokio::join!(updated_pods(&mut wa, window), updated_pods(&mut wb, window));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(b.into_iter().collect::<Vec<_>>(), ["t1"]);
}

#[tokio::test]
async fn graphql_socket_messages_are_capped() {
    let p = Pinacle::start().await;
    let mut ws = graphql_ws(&p, TOKEN).await;
    // a 1 MiB configuration fits (the largest one read)...
    let yaml = format!("version: \"1.0\"\n# {}\n", "x".repeat((1 << 20) - 64));
    let query = "query($y: String!) { validateConfig(yaml: $y) { ok } }";
    let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"y": yaml}}});
    ws.send(Message::Text(sub.to_string().into())).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let m = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "next" {
                assert!(v["payload"]["data"]["validateConfig"]["ok"].is_boolean(), "{v}");
                break;
            }
        }
    }
    // ...a 3 MiB message does not: the socket closes with 1009 (too big)
    let sub = json!({"id": "2", "type": "subscribe", "payload": {"query": query, "variables": {"y": "x".repeat(3 << 20)}}});
    let _ = ws.send(Message::Text(sub.to_string().into())).await;
    assert_eq!(closed_with(&mut ws, PATIENCE).await, Some(CloseCode::Size));
}
