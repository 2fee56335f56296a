//! Accounts, keys and secrets at rest, against a real `pinacle up` over
//! HTTP (security review findings #13, #14, #17 and #18): invite-only
//! sign-up cannot be opened through team invitations, SSH keys are
//! registered only with proof of possession, password hashing does not
//! stall the server, and idempotency records keep no secret in clear.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{pinacle_bin, sign_ssh_challenge, Pinacle};
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

fn public(key: &Path) -> String {
    std::fs::read_to_string(format!("{}.pub", key.display())).unwrap()
}

/// A challenge for the holder of `token`: (challenge, namespace).
async fn challenge(p: &Pinacle, token: &str, body: Option<Value>) -> (String, String) {
    let (s, ch) = p.call_as(token, Method::POST, "/api/v1/ssh-keys/challenge", body).await;
    assert_eq!(s, 201, "{ch}");
    assert_eq!(ch["namespace"], "pinacle-ssh-key", "{ch}");
    assert!(ch["sign_command"].as_str().is_some_and(|c| c.contains("ssh-keygen -Y sign")), "{ch}");
    (ch["challenge"].as_str().unwrap().to_owned(), ch["namespace"].as_str().unwrap().to_owned())
}

async fn add_key(p: &Pinacle, token: &str, public_key: &str, challenge: &str, signature: &str) -> (u16, Value) {
    let body = json!({"name": "k", "public_key": public_key, "challenge": challenge, "signature": signature});
    p.call_as(token, Method::POST, "/api/v1/ssh-keys", Some(body)).await
}

async fn key_fingerprints(p: &Pinacle, token: &str) -> Vec<String> {
    let (s, b) = p.call_as(token, Method::GET, "/api/v1/ssh-keys", None).await;
    assert_eq!(s, 200, "{b}");
    b["keys"].as_array().unwrap().iter().map(|k| k["fingerprint"].as_str().unwrap().to_owned()).collect()
}

/// Review #14: Bob registered Alice's public key (from github.com/alice.keys)
/// with no proof, and Alice's key then signed in to Bob's account.
#[tokio::test]
async fn ssh_keys_are_registered_only_with_proof_of_possession() {
    let p = Pinacle::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = p.signup_and_login("alice").await;
    let bob = p.signup_and_login("bob").await;
    let alice_key = keygen(dir.path(), "id_alice");
    let bob_key = keygen(dir.path(), "id_bob");

    // Bob posts Alice's public key as before: refused, nothing registered
    let (s, b) = p.call_as(&bob, Method::POST, "/api/v1/ssh-keys", Some(json!({"name": "x", "public_key": public(&alice_key)}))).await;
    assert_error(s, &b, 400, "proof_required");
    // ... with a challenge signed by his own key: refused
    let (ch, ns) = challenge(&p, &bob, None).await;
    let (s, b) = add_key(&p, &bob, &public(&alice_key), &ch, &sign_ssh_challenge(&bob_key, &ns, &ch)).await;
    assert_error(s, &b, 400, "proof_failed");
    // ... with a signature Alice made for her own challenge: refused (a
    // challenge is bound to the account it was issued to)
    let (alice_ch, _) = challenge(&p, &alice, None).await;
    let alice_sig = sign_ssh_challenge(&alice_key, &ns, &alice_ch);
    let (s, b) = add_key(&p, &bob, &public(&alice_key), &alice_ch, &alice_sig).await;
    assert_error(s, &b, 400, "invalid_challenge");
    // ... signed in another namespace (a signature made for something else)
    let (ch2, _) = challenge(&p, &bob, None).await;
    let (s, b) = add_key(&p, &bob, &public(&bob_key), &ch2, &sign_ssh_challenge(&bob_key, "git", &ch2)).await;
    assert_error(s, &b, 400, "proof_failed");
    // ... a made-up challenge, garbage for a signature
    let (s, b) = add_key(&p, &bob, &public(&bob_key), "pinacle-ssh-key-challenge:v1:AAAA", &sign_ssh_challenge(&bob_key, &ns, "x")).await;
    assert_error(s, &b, 400, "invalid_challenge");
    let (ch3, _) = challenge(&p, &bob, None).await;
    let (s, b) = add_key(&p, &bob, &public(&bob_key), &ch3, "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n").await;
    assert_error(s, &b, 400, "invalid_signature");
    assert!(key_fingerprints(&p, &bob).await.is_empty(), "nothing was registered for bob");

    // Alice, who holds the key, registers it
    let (s, b) = add_key(&p, &alice, &public(&alice_key), &alice_ch, &alice_sig).await;
    assert_eq!(s, 201, "{b}");
    let fingerprint = b["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(key_fingerprints(&p, &alice).await, vec![fingerprint.clone()]);
    // the same challenge and signature do not work twice
    let (s, _) = p.call_as(&alice, Method::DELETE, &format!("/api/v1/ssh-keys/{}", b["id"].as_str().unwrap()), None).await;
    assert_eq!(s, 204);
    let (s, b) = add_key(&p, &alice, &public(&alice_key), &alice_ch, &alice_sig).await;
    assert_error(s, &b, 400, "challenge_used");
    // an expired challenge is refused
    let (old, _) = challenge(&p, &alice, Some(json!({"expires_in_seconds": 1}))).await;
    let old_sig = sign_ssh_challenge(&alice_key, &ns, &old);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, b) = add_key(&p, &alice, &public(&alice_key), &old, &old_sig).await;
    assert_error(s, &b, 400, "challenge_expired");
    for bad in [0, 601] {
        let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/ssh-keys/challenge", Some(json!({"expires_in_seconds": bad}))).await;
        assert_error(s, &b, 400, "invalid_expiry");
    }
    // the harness's helper (a fresh challenge) works
    let (s, b) = p.add_ssh_key_as(&alice, "laptop", &alice_key).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = p.add_ssh_key_as(&alice, "again", &alice_key).await;
    assert_error(s, &b, 409, "ssh_key_exists");

    // A key registered without proof before this change (written straight
    // into the database, as an old server did) goes to whoever proves they
    // hold it: the squatter loses it.
    let carol_key = keygen(dir.path(), "id_carol");
    let carol_fp = {
        let out = Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f"]).arg(format!("{}.pub", carol_key.display())).output().unwrap();
        String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_owned()
    };
    let (_, bob_me) = p.call_as(&bob, Method::GET, "/api/v1/me", None).await;
    let db = sea_orm::Database::connect(format!("sqlite://{}?mode=rw", p.data.path().join("pinacle.db").display())).await.unwrap();
    let squat = format!(
        "INSERT INTO ssh_keys (id, user_id, name, algorithm, fingerprint, public_key, created_at, last_used_at) \
         VALUES ('legacy-1', '{}', 'squat', 'ssh-ed25519', '{carol_fp}', '{}', '2026-01-01T00:00:00Z', NULL)",
        bob_me["id"].as_str().unwrap(),
        public(&carol_key).split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    );
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(&squat).await.unwrap();
    assert_eq!(key_fingerprints(&p, &bob).await, vec![carol_fp.clone()]);
    let carol = p.signup_and_login("carol").await;
    let (s, b) = p.add_ssh_key_as(&carol, "mine", &carol_key).await;
    assert_eq!((s, b["fingerprint"].as_str()), (201, Some(carol_fp.as_str())), "{b}");
    assert!(key_fingerprints(&p, &bob).await.is_empty(), "bob lost the key he never held");
    let (_, audit) = p.call(Method::GET, "/api/v1/audit", None).await;
    assert!(audit.to_string().contains("ssh_key.reclaim"), "{audit}");

    // the CLI signs the challenge itself: one command, as before
    let admin_key = keygen(dir.path(), "id_admin");
    let out = Command::new(pinacle_bin())
        .args(["ssh-key", "add"])
        .arg(format!("{}.pub", admin_key.display()))
        .env("PINACLE_CONFIG", p.data.path().join("cli.json"))
        .env("PINACLE_KEYRING", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("id_admin"), "{}", String::from_utf8_lossy(&out.stdout));
    // and refuses a public key whose private key it cannot use
    let lone = dir.path().join("lone.pub");
    std::fs::write(&lone, public(&keygen(dir.path(), "id_gone"))).unwrap();
    std::fs::remove_file(dir.path().join("id_gone")).unwrap();
    let out = Command::new(pinacle_bin())
        .args(["ssh-key", "add"])
        .arg(&lone)
        .env("PINACLE_CONFIG", p.data.path().join("cli.json"))
        .env("PINACLE_KEYRING", "off")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not sign the challenge"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Review #13: in `invite` mode any user could create a team, mint a team
/// invitation and let anyone sign up with it.
#[tokio::test]
async fn invite_only_sign_up_is_not_opened_by_team_invitations() {
    let p = Pinacle::start().await;
    let mallory = p.signup_and_login("mallory").await; // open by default
    let (s, b) = p.call(Method::PATCH, "/api/v1/admin/settings", Some(json!({"signup": "invite"}))).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = p.call_as(&mallory, Method::POST, "/api/v1/teams", Some(json!({"name": "gang"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, inv) = p.call_as(&mallory, Method::POST, "/api/v1/invites", Some(json!({"team": "gang"}))).await;
    assert_eq!(s, 201, "{inv}");
    let code = inv["code"].as_str().unwrap().to_owned();
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "stranger", "password": PASSWORD, "invite": code}))).await;
    assert_error(s, &b, 403, "invite_not_for_signup");
    let (s, _) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(json!({"name": "stranger", "password": PASSWORD}))).await;
    assert_eq!(s, 401, "no account was made");
    // the refused code was not spent: an existing user still accepts it
    let dave = {
        // the administrator admits dave
        let (s, inv) = p.call(Method::POST, "/api/v1/invites", Some(json!({}))).await;
        assert_eq!(s, 201, "{inv}");
        let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "dave", "password": PASSWORD, "invite": inv["code"]}))).await;
        assert_eq!(s, 201, "an administrator's invitation still signs up: {b}");
        let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(json!({"name": "dave", "password": PASSWORD}))).await;
        assert_eq!(s, 200, "{b}");
        b["access_token"].as_str().unwrap().to_owned()
    };
    let (s, b) = p.call_as(&dave, Method::POST, "/api/v1/invites/accept", Some(json!({"code": code}))).await;
    assert_eq!((s, b["name"].as_str()), (200, Some("gang")), "{b}");
    // a team invitation the administrator made does admit a new account,
    // straight into the team
    let (s, b) = p.call(Method::POST, "/api/v1/teams", Some(json!({"name": "staff"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, inv) = p.call(Method::POST, "/api/v1/invites", Some(json!({"team": "staff", "role": "viewer"}))).await;
    assert_eq!(s, 201, "{inv}");
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "erin", "password": PASSWORD, "invite": inv["code"]}))).await;
    assert_eq!(s, 201, "{b}");
    // closed: nobody, not even with the administrator's invitation
    p.call(Method::PATCH, "/api/v1/admin/settings", Some(json!({"signup": "closed"}))).await;
    let (s, inv) = p.call(Method::POST, "/api/v1/invites", Some(json!({}))).await;
    assert_eq!(s, 201, "{inv}");
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "frank", "password": PASSWORD, "invite": inv["code"]}))).await;
    assert_error(s, &b, 403, "signup_closed");
    // open: a team invitation signs up into the team, as before
    p.call(Method::PATCH, "/api/v1/admin/settings", Some(json!({"signup": "open"}))).await;
    let (s, inv) = p.call_as(&mallory, Method::POST, "/api/v1/invites", Some(json!({"team": "gang"}))).await;
    assert_eq!(s, 201, "{inv}");
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "gina", "password": PASSWORD, "invite": inv["code"]}))).await;
    assert_eq!(s, 201, "{b}");
}

/// Review #18: with `Idempotency-Key` the first answer (a new API token, an
/// invitation code) was stored in clear in the database for 24 hours.
#[tokio::test]
async fn idempotency_records_hold_no_secret_in_clear() {
    let p = Pinacle::start().await;
    let post = |path: &'static str, key: &'static str, body: Value| {
        let req = p.http.post(format!("{}{path}", p.url)).bearer_auth(common::TOKEN).header("Idempotency-Key", key).json(&body);
        async move {
            let r = req.send().await.unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (r.status().as_u16(), replayed, r.json::<Value>().await.unwrap())
        }
    };
    let (s, replayed, first) = post("/api/v1/tokens", "tok-1", json!({"name": "ci"})).await;
    assert_eq!((s, replayed), (201, false), "{first}");
    let token = first["token"].as_str().unwrap().to_owned();
    let (s, replayed, again) = post("/api/v1/tokens", "tok-1", json!({"name": "ci"})).await;
    assert_eq!((s, replayed), (201, true), "{again}");
    assert_eq!(again["token"].as_str(), Some(token.as_str()), "the retry answers the same token");
    let (_, list) = p.call(Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(list["tokens"].as_array().unwrap().iter().filter(|t| t["name"] == "ci").count(), 1, "{list}");
    // the token works
    let (s, me) = p.call_as(&token, Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, 200, "{me}");
    let (s, _, inv) = post("/api/v1/invites", "inv-1", json!({})).await;
    assert_eq!(s, 201, "{inv}");
    let invite = inv["code"].as_str().unwrap().to_owned();
    let (s, replayed, inv2) = post("/api/v1/invites", "inv-1", json!({})).await;
    assert_eq!((s, replayed, inv2["code"].as_str()), (201, true, Some(invite.as_str())));

    // neither the database nor its journal holds them in clear
    let db = sea_orm::Database::connect(format!("sqlite://{}?mode=ro", p.data.path().join("pinacle.db").display())).await.unwrap();
    use sea_orm::{ConnectionTrait, Statement};
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), "SELECT key, body FROM idempotency_keys ORDER BY key"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let body: String = row.try_get("", "body").unwrap();
        assert!(body.starts_with("v1:"), "stored sealed: {body}");
        assert!(!body.contains(&token) && !body.contains(&invite), "{body}");
    }
    drop(db);
    for file in ["pinacle.db", "pinacle.db-wal"] {
        let bytes = std::fs::read(p.data.path().join(file)).unwrap_or_default();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains(&token), "{file} holds the API token in clear");
        assert!(!hay.contains(&invite), "{file} holds the invitation code in clear");
    }
}

/// Review #17: argon2 ran on the async workers, so a burst of sign-ins
/// stalled every other request. Sign-ins still work under a burst, and the
/// server keeps answering while it runs.
#[tokio::test]
async fn a_burst_of_sign_ins_does_not_stall_the_server() {
    let p = Pinacle::start().await;
    p.signup_and_login("alice").await;
    let before = peak_rss_kib(p.pid());
    let login = |name: &'static str, password: &'static str| {
        let req = p.http.post(format!("{}/api/v1/auth/login", p.url)).json(&json!({"name": name, "password": password}));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..60 {
        let fut = match i % 3 {
            0 => login("alice", PASSWORD),
            1 => login("alice", "wrong password here"),
            _ => login("nobody", "wrong password here"),
        };
        burst.spawn(async move { (i % 3, fut.await) });
    }
    // the server answers other requests while the burst runs (a generous
    // bound, not a speed check)
    let health = tokio::time::timeout(Duration::from_secs(60), p.http.get(format!("{}/healthz", p.url)).send()).await;
    assert!(health.expect("healthz answered during the burst").unwrap().status().is_success());
    let mut seen = 0;
    while let Some(r) = burst.join_next().await {
        let (kind, status) = r.unwrap();
        assert_eq!(status, if kind == 0 { 200 } else { 401 }, "login kind {kind}");
        seen += 1;
    }
    assert_eq!(seen, 60);
    // argon2 takes 19 MiB per hash: at most one per CPU runs at once, so
    // the burst does not cost 60 × 19 MiB (a stated bound, generous)
    let grown = peak_rss_kib(p.pid()).saturating_sub(before);
    println!("peak RSS grew by {} MiB during 60 sign-ins", grown / 1024);
    assert!(grown < 400 * 1024, "peak RSS grew by {} MiB", grown / 1024);
}

/// The peak resident set (VmHWM) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}
