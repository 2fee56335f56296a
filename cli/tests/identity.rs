//! Identity end to end against a real `pinacle up`: sessions (JWT access
//! tokens, rotating refresh tokens, signing-key rotation), teams and the
//! role × endpoint matrix, secrets reaching pods, sign-up modes, and bad
//! credentials. Pods are real youki/gVisor sandboxes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Pinacle;
use reqwest::Method;
use serde_json::{json, Value};

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

const PASSWORD: &str = "correct horse battery";

async fn signup(p: &Pinacle, name: &str) {
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": name, "password": PASSWORD}))).await;
    assert_eq!(s, 201, "{b}");
}

/// Signs in: (access token, refresh token).
async fn login(p: &Pinacle, name: &str) -> (String, String) {
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(json!({"name": name, "password": PASSWORD}))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["token_type"], "Bearer");
    (b["access_token"].as_str().unwrap().to_owned(), b["refresh_token"].as_str().unwrap().to_owned())
}

async fn user(p: &Pinacle, name: &str) -> String {
    signup(p, name).await;
    login(p, name).await.0
}

async fn refresh(p: &Pinacle, refresh_token: &str) -> (u16, Value) {
    p.call_as("", Method::POST, "/api/v1/auth/refresh", Some(json!({"refresh_token": refresh_token}))).await
}

fn kid_of(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap()
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let p = Pinacle::start().await;
    signup(&p, "alice").await;
    let (a1, r1) = login(&p, "alice").await;
    let (s, me) = p.call_as(&a1, Method::GET, "/api/v1/me", None).await;
    assert_eq!((s, me["name"].as_str()), (200, Some("alice")), "{me}");
    // a refresh token buys a new pair, once
    let (s, pair2) = refresh(&p, &r1).await;
    assert_eq!(s, 200, "{pair2}");
    let (a2, r2) = (pair2["access_token"].as_str().unwrap(), pair2["refresh_token"].as_str().unwrap());
    assert_ne!(r2, r1);
    assert_eq!(p.call_as(a2, Method::GET, "/api/v1/me", None).await.0, 200);
    // a second, independent sign-in is a separate family
    let (other_access, other_refresh) = login(&p, "alice").await;
    // someone replays the used r1: the whole family dies
    let (s, b) = refresh(&p, &r1).await;
    assert_error(s, &b, 401, "refresh_token_reused");
    let (s, b) = refresh(&p, r2).await;
    assert_eq!(s, 401, "the family's newest refresh token is revoked too: {b}");
    for access in [&a1, a2] {
        let (s, b) = p.call_as(access, Method::GET, "/api/v1/me", None).await;
        assert_error(s, &b, 401, "session_revoked");
    }
    // ...but not the other sign-in
    assert_eq!(p.call_as(&other_access, Method::GET, "/api/v1/me", None).await.0, 200);
    assert_eq!(refresh(&p, &other_refresh).await.0, 200);
    // the reuse is in alice's audit trail
    let (_, audit) = p.call(Method::GET, "/api/v1/audit", None).await;
    assert!(audit.to_string().contains("session.reuse_detected"), "{audit}");
    // junk refresh tokens
    for junk in ["", "pnr_nope", "pnc_not-a-refresh-token", &"x".repeat(5000)] {
        let (s, b) = refresh(&p, junk).await;
        assert_error(s, &b, 401, "invalid_refresh_token");
    }
}

#[tokio::test]
async fn sign_out_ends_the_session_at_once() {
    let p = Pinacle::start().await;
    signup(&p, "alice").await;
    let (access, refresh_token) = login(&p, "alice").await;
    let (s, _) = p.call_as(&access, Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!(s, 204);
    let (s, b) = p.call_as(&access, Method::GET, "/api/v1/pods", None).await;
    assert_error(s, &b, 401, "session_revoked");
    assert_eq!(refresh(&p, &refresh_token).await.0, 401);
    // an API token has no session to end
    let (s, b) = p.call(Method::POST, "/api/v1/auth/logout", None).await;
    assert_error(s, &b, 400, "no_session");
}

#[tokio::test]
async fn access_tokens_expire_and_key_rotation_keeps_old_ones_until_then() {
    let p = Pinacle::start_with(&["--access-token-ttl", "3"]).await;
    signup(&p, "alice").await;
    let (old, _) = login(&p, "alice").await;
    let jwks = p.http.get(format!("{}/.well-known/jwks.json", p.url)).send().await.unwrap().json::<Value>().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!((keys[0]["kty"].as_str(), keys[0]["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
    // the published key really verifies the token
    let x = keys[0]["x"].as_str().unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["pinacle"]);
    let claims = jsonwebtoken::decode::<Value>(&old, &jsonwebtoken::DecodingKey::from_ed_components(x).unwrap(), &v).unwrap().claims;
    assert_eq!(claims["name"], "alice");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3);

    // only the administrator rotates
    let alice_token = old.clone();
    let (s, b) = p.call_as(&alice_token, Method::POST, "/api/v1/admin/signing-keys/rotate", None).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = p.call(Method::POST, "/api/v1/admin/signing-keys/rotate", None).await;
    assert_eq!(s, 200, "{b}");
    let new_kid = b["kid"].as_str().unwrap().to_owned();
    let (fresh, _) = login(&p, "alice").await;
    assert_eq!(kid_of(&fresh), new_kid);
    assert_ne!(kid_of(&old), new_kid);
    // both keys are published, and the token from the retired key still works
    let jwks = p.http.get(format!("{}/.well-known/jwks.json", p.url)).send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    assert_eq!(p.call_as(&old, Method::GET, "/api/v1/me", None).await.0, 200);
    assert_eq!(p.call_as(&fresh, Method::GET, "/api/v1/me", None).await.0, 200);

    // after the lifetime: the old token is refused as expired, and the
    // retired key is no longer published
    // (expiry is checked in whole seconds: a token lives until the end of its `exp` second)
    tokio::time::sleep(Duration::from_millis(4300)).await;
    let (s, b) = p.call_as(&old, Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, 401, "{b}");
    let (s, b) = p.call_as(&fresh, Method::GET, "/api/v1/me", None).await;
    assert_error(s, &b, 401, "token_expired");
    let jwks = p.http.get(format!("{}/.well-known/jwks.json", p.url)).send().await.unwrap().json::<Value>().await.unwrap();
    let kids: Vec<_> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kids, vec![new_kid], "{jwks}");
}

#[tokio::test]
async fn malformed_and_forged_credentials_get_401_never_500() {
    let p = Pinacle::start().await;
    signup(&p, "alice").await;
    let (access, _) = login(&p, "alice").await;
    let parts: Vec<&str> = access.split('.').collect();
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    // the same claims, but naming the admin, with alice's signature
    let mut claims: Value = {
        use base64::Engine;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
    };
    claims["name"] = json!("admin");
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), parts[1]);
    let hs256 = format!("{}.{}.{}", b64(&json!({"alg": "HS256", "kid": kid_of(&access)})), parts[1], parts[2]);
    for bad in [
        "pnc_unknown".to_owned(),
        "garbage".to_owned(),
        "a.b.c".to_owned(),
        forged,
        unsigned,
        hs256,
        format!("{access}x"),
        "pnc_".to_owned() + &"A".repeat(10_000),
    ] {
        let (s, b) = p.call_as(&bad, Method::GET, "/api/v1/pods", None).await;
        assert_eq!(s, 401, "{bad:.40}: {b}");
        assert!(b["error"]["code"].is_string(), "{b}");
    }
    // a non-ASCII header and a non-Bearer scheme
    let r = p.http.get(format!("{}/api/v1/pods", p.url)).header("authorization", "Bearer t\u{00e9}st".as_bytes()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = p.http.get(format!("{}/api/v1/pods", p.url)).header("authorization", "Basic YWRtaW46YWRtaW4=").send().await.unwrap();
    assert_eq!(r.status(), 401);
    // an oversized body is refused before it is read
    let big = json!({"name": "x".repeat(300 * 1024)});
    let (s, b) = p.call_as(&access, Method::POST, "/api/v1/teams", Some(big)).await;
    assert_error(s, &b, 413, "payload_too_large");
}

#[tokio::test]
async fn sign_up_can_be_open_invite_only_or_closed() {
    let p = Pinacle::start().await;
    let alice = user(&p, "alice").await; // open by default
    let (s, b) = p.call_as(&alice, Method::PATCH, "/api/v1/admin/settings", Some(json!({"signup": "closed"}))).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = p.call(Method::PATCH, "/api/v1/admin/settings", Some(json!({"signup": "invite"}))).await;
    assert_eq!((s, b["signup"].as_str()), (200, Some("invite")), "{b}");
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "bob", "password": PASSWORD}))).await;
    assert_error(s, &b, 403, "invite_required");
    // only the administrator makes sign-up invitations
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/invites", Some(json!({}))).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, inv) = p.call(Method::POST, "/api/v1/invites", Some(json!({}))).await;
    assert_eq!(s, 201, "{inv}");
    let code = inv["code"].as_str().unwrap();
    let body = json!({"name": "bob", "password": PASSWORD, "invite": code});
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(body)).await;
    assert_eq!(s, 201, "{b}");
    // a used code does not work again, and nothing is created
    let body = json!({"name": "carol", "password": PASSWORD, "invite": code});
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(body)).await;
    assert_error(s, &b, 400, "invalid_invite");
    let (s, _) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(json!({"name": "carol", "password": PASSWORD}))).await;
    assert_eq!(s, 401, "carol was not half-created");
    // the administrator's team invitation signs up straight into the team
    // with its role (a team admin's does not: see account_security.rs)
    let (s, _) = p.call(Method::POST, "/api/v1/teams", Some(json!({"name": "acme"}))).await;
    assert_eq!(s, 201);
    let (s, inv) = p.call(Method::POST, "/api/v1/invites", Some(json!({"team": "acme", "role": "viewer"}))).await;
    assert_eq!(s, 201, "{inv}");
    let body = json!({"name": "carol", "password": PASSWORD, "invite": inv["code"]});
    assert_eq!(p.call_as("", Method::POST, "/api/v1/auth/signup", Some(body)).await.0, 201);
    let (carol, _) = login(&p, "carol").await;
    let (_, me) = p.call_as(&carol, Method::GET, "/api/v1/me", None).await;
    assert_eq!(me["teams"][0]["name"], "acme", "{me}");
    assert_eq!(me["teams"][0]["role"], "viewer", "{me}");
    // closed: nobody
    p.call(Method::PATCH, "/api/v1/admin/settings", Some(json!({"signup": "closed"}))).await;
    let (s, inv) = p.call(Method::POST, "/api/v1/invites", Some(json!({}))).await;
    assert_eq!(s, 201);
    let body = json!({"name": "dave", "password": PASSWORD, "invite": inv["code"]});
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(body)).await;
    assert_error(s, &b, 403, "signup_closed");
    // a team name cannot take a user's name, nor the reverse
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/teams", Some(json!({"name": "bob"}))).await;
    assert_error(s, &b, 409, "name_taken");
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/teams", Some(json!({"name": "Not Valid"}))).await;
    assert_error(s, &b, 400, "invalid_name");
}

/// Status only (for streaming endpoints whose body never ends).
async fn status_of(p: &Pinacle, token: &str, method: Method, path: &str, body: Option<&Value>) -> u16 {
    let mut req = p.http.request(method, format!("{}{path}", p.url)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = tokio::time::timeout(Duration::from_secs(30), req.send()).await.expect("answer in time").expect("request");
    resp.status().as_u16()
}

#[tokio::test]
async fn every_role_gets_exactly_its_rights_on_every_endpoint() {
    let p = Pinacle::start().await;
    let olga = user(&p, "olga").await; // owner
    let adam = user(&p, "adam").await; // admin
    let mia = user(&p, "mia").await; // member
    let vic = user(&p, "vic").await; // viewer
    let otto = user(&p, "otto").await; // not in the team
    let (s, t) = p.call_as(&olga, Method::POST, "/api/v1/teams", Some(json!({"name": "acme"}))).await;
    assert_eq!((s, t["role"].as_str()), (201, Some("owner")), "{t}");
    for (name, role) in [("adam", "admin"), ("mia", "member")] {
        let (s, b) = p.call_as(&olga, Method::POST, "/api/v1/teams/acme/members", Some(json!({"user": name, "role": role}))).await;
        assert_eq!(s, 201, "{b}");
    }
    // vic joins through an invitation made by the team admin
    let (s, inv) = p.call_as(&adam, Method::POST, "/api/v1/invites", Some(json!({"team": "acme", "role": "viewer"}))).await;
    assert_eq!(s, 201, "{inv}");
    let (s, b) = p.call_as(&vic, Method::POST, "/api/v1/invites/accept", Some(json!({"code": inv["code"]}))).await;
    assert_eq!(s, 200, "{b}");
    // tokens issued before joining pick the membership up (roles are read per request)
    let (_, team) = p.call_as(&vic, Method::GET, "/api/v1/teams/acme", None).await;
    assert_eq!(team["members"].as_array().unwrap().len(), 4, "{team}");

    // pods: a team pod by olga, one by mia, and olga's personal one
    let team_pod = json!({"name": "web", "template": "minimal", "runtime": "youki", "team": "acme"});
    let (s, web) = p.call_as(&olga, Method::POST, "/api/v1/pods", Some(team_pod)).await;
    assert_eq!(s, 202, "{web}");
    let web = web["id"].as_str().unwrap().to_owned();
    let (s, mine) = p.call_as(&mia, Method::POST, "/api/v1/pods", Some(json!({"name": "mine", "template": "minimal", "runtime": "youki", "team": "acme"}))).await;
    assert_eq!(s, 202, "{mine}");
    let mine = mine["id"].as_str().unwrap().to_owned();
    let (s, private) = p.call_as(&olga, Method::POST, "/api/v1/pods", Some(json!({"name": "private", "template": "minimal", "runtime": "youki"}))).await;
    assert_eq!(s, 202, "{private}");
    let private = private["id"].as_str().unwrap().to_owned();
    for id in [&web, &mine, &private] {
        p.wait_state_as(&olga_or(&olga, &mia, id, &mine), id, "running", 120).await;
    }
    // secrets of every scope
    for q in ["", "?team=acme", &format!("?pod={web}"), &format!("?pod={private}")] {
        let (s, b) = p.call_as(&olga, Method::PUT, &format!("/api/v1/secrets/TOKEN{q}"), Some(json!({"value": "v4lue-of-olga"}))).await;
        assert_eq!(s, 201, "{q}: {b}");
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Who {
        Owner,
        Admin,
        Member,
        Viewer,
        Outsider,
    }
    use Who::*;
    let token = |w: Who| match w {
        Owner => olga.clone(),
        Admin => adam.clone(),
        Member => mia.clone(),
        Viewer => vic.clone(),
        Outsider => otto.clone(),
    };
    let everyone = [Owner, Admin, Member, Viewer, Outsider];
    let exec = json!({"command": ["true"]});
    let secret = json!({"value": "changed-by-someone"});
    let member_add = json!({"user": "otto", "role": "viewer"});
    // (method, path, body, who may): everyone else must get 403 if they are
    // in the team, 404 if not. Allowed requests must not be 401/403/404.
    let matrix: Vec<(Method, String, Option<&Value>, &[Who])> = vec![
        (Method::GET, format!("/api/v1/pods/{web}"), None, &[Owner, Admin, Member, Viewer]),
        (Method::GET, "/api/v1/pods/acme%2Fweb".into(), None, &[Owner, Admin, Member, Viewer]),
        (Method::GET, format!("/api/v1/pods/{web}/logs"), None, &[Owner, Admin, Member, Viewer]),
        (Method::GET, format!("/api/v1/pods/{web}/events"), None, &[Owner, Admin, Member, Viewer]),
        (Method::POST, format!("/api/v1/pods/{web}/exec"), Some(&exec), &[Owner, Admin, Member]),
        (Method::POST, format!("/api/v1/pods/{web}/start"), None, &[Owner, Admin, Member]),
        (Method::DELETE, format!("/api/v1/pods/{web}"), None, &[]), // checked for refusals only below
        (Method::GET, format!("/api/v1/pods/{private}"), None, &[Owner]),
        (Method::POST, format!("/api/v1/pods/{private}/exec"), Some(&exec), &[Owner]),
        (Method::POST, format!("/api/v1/pods/{private}/start"), None, &[Owner]),
        (Method::GET, "/api/v1/secrets?team=acme".into(), None, &[Owner, Admin, Member, Viewer]),
        (Method::PUT, "/api/v1/secrets/TOKEN?team=acme".into(), Some(&secret), &[Owner, Admin]),
        (Method::GET, format!("/api/v1/secrets?pod={web}"), None, &[Owner, Admin, Member, Viewer]),
        (Method::PUT, format!("/api/v1/secrets/TOKEN?pod={web}"), Some(&secret), &[Owner, Admin]),
        (Method::PUT, format!("/api/v1/secrets/TOKEN?pod={mine}"), Some(&secret), &[Owner, Admin, Member]),
        (Method::GET, format!("/api/v1/secrets?pod={private}"), None, &[Owner]),
        (Method::PUT, format!("/api/v1/secrets/TOKEN?pod={private}"), Some(&secret), &[Owner]),
        (Method::GET, "/api/v1/teams/acme".into(), None, &[Owner, Admin, Member, Viewer]),
        (Method::POST, "/api/v1/teams/acme/members".into(), Some(&member_add), &[]), // refusals only
        (Method::DELETE, "/api/v1/teams/acme".into(), None, &[]), // refusals only
    ];
    for (method, path, body, allowed) in &matrix {
        let refusals_only = allowed.is_empty();
        let may = |w: Who| -> bool {
            if refusals_only {
                // who may: owner/admin for members, owner for the team and deletes of others' pods
                match (method.as_str(), path.as_str()) {
                    ("POST", _) => matches!(w, Owner | Admin),
                    ("DELETE", p) if p.contains("/teams/") => w == Owner,
                    _ => matches!(w, Owner | Admin),
                }
            } else {
                allowed.contains(&w)
            }
        };
        for w in everyone {
            if refusals_only && may(w) {
                continue;
            }
            let s = status_of(&p, &token(w), method.clone(), path, *body).await;
            let expect = if may(w) {
                assert!(![401, 403, 404].contains(&s), "{w:?} {method} {path}: allowed but got {s}");
                continue;
            } else if w == Outsider || path.contains(&private) {
                404
            } else {
                403
            };
            assert_eq!(s, expect, "{w:?} {method} {path}");
        }
    }
    // a member may delete the pod they made, not olga's
    assert_eq!(status_of(&p, &mia, Method::DELETE, &format!("/api/v1/pods/{web}"), None).await, 403);
    assert_eq!(status_of(&p, &mia, Method::DELETE, &format!("/api/v1/pods/{mine}"), None).await, 202);
    p.wait_state_as(&mia, &mine, "deleted", 60).await;
    // a viewer cannot create team pods; an outsider cannot even see the team
    let new_pod = json!({"name": "extra", "template": "minimal", "runtime": "youki", "team": "acme"});
    assert_eq!(status_of(&p, &vic, Method::POST, "/api/v1/pods", Some(&new_pod)).await, 403);
    assert_eq!(status_of(&p, &otto, Method::POST, "/api/v1/pods", Some(&new_pod)).await, 404);
    // lists show each user exactly what they may see
    for (t, want) in [(&olga, vec!["private", "web"]), (&vic, vec!["web"]), (&otto, vec![])] {
        let (_, list) = p.call_as(t, Method::GET, "/api/v1/pods", None).await;
        let mut names: Vec<_> = list["pods"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect();
        names.sort();
        assert_eq!(names, want, "{list}");
    }
    // outsiders see nothing of the team's or olga's secrets, tokens and audit entries
    let (_, s_otto) = p.call_as(&otto, Method::GET, "/api/v1/secrets", None).await;
    assert_eq!(s_otto["secrets"].as_array().unwrap().len(), 0);
    let (_, audit) = p.call_as(&otto, Method::GET, "/api/v1/audit", None).await;
    assert!(audit["entries"].as_array().unwrap().iter().all(|e| e["actor_name"] == "otto"), "{audit}");
    // an admin cannot appoint owners or remove the owner; the last owner cannot leave
    let body = json!({"role": "owner"});
    assert_eq!(status_of(&p, &adam, Method::PATCH, "/api/v1/teams/acme/members/mia", Some(&body)).await, 403);
    assert_eq!(status_of(&p, &adam, Method::DELETE, "/api/v1/teams/acme/members/olga", None).await, 403);
    let (s, b) = p.call_as(&olga, Method::DELETE, "/api/v1/teams/acme/members/olga", None).await;
    assert_error(s, &b, 409, "last_owner");
    // the owner deletes the team pod; the team cannot go while pods remain
    let (s, b) = p.call_as(&olga, Method::DELETE, "/api/v1/teams/acme", None).await;
    assert_error(s, &b, 409, "team_has_pods");
    // read-only tokens of the owner read but never change
    let (_, ro) = p.call_as(&olga, Method::POST, "/api/v1/tokens", Some(json!({"name": "ro", "scope": "read"}))).await;
    let ro = ro["token"].as_str().unwrap().to_owned();
    assert_eq!(status_of(&p, &ro, Method::GET, &format!("/api/v1/pods/{web}"), None).await, 200);
    assert_eq!(status_of(&p, &ro, Method::POST, &format!("/api/v1/pods/{web}/exec"), Some(&exec)).await, 403);
    assert_eq!(status_of(&p, &ro, Method::PUT, "/api/v1/secrets/X", Some(&secret)).await, 403);
    // leaving the team takes the access away at once
    assert_eq!(status_of(&p, &vic, Method::DELETE, "/api/v1/teams/acme/members/vic", None).await, 204);
    assert_eq!(status_of(&p, &vic, Method::GET, &format!("/api/v1/pods/{web}"), None).await, 404);
}

/// The token to watch pod `id` with: mia for her pod, olga otherwise.
fn olga_or(olga: &str, mia: &str, id: &str, mine: &str) -> String {
    if id == mine { mia.to_owned() } else { olga.to_owned() }
}

#[tokio::test]
async fn secrets_reach_the_pod_environment_and_nothing_else() {
    // debug logging: request traces included, and still no secret in them
    let p = Pinacle::start_with_log(&[], "debug,sqlx=warn,hyper=info,h2=info").await;
    let user_value = format!("u-{}", uuid::Uuid::new_v4().simple());
    let pod_value = format!("p-{}", uuid::Uuid::new_v4().simple());
    let (s, b) = p.call(Method::PUT, "/api/v1/secrets/DB_PASSWORD", Some(json!({"value": user_value}))).await;
    assert_eq!(s, 201, "{b}");
    assert!(!b.to_string().contains(&user_value), "{b}");
    for runtime in ["youki", "gvisor"] {
        let name = format!("sec-{runtime}");
        p.create_running(&name, "minimal", runtime).await;
        let (out, _, code) = p.exec(&name, &["env"]).await;
        assert_eq!(code, 0);
        assert!(out.lines().any(|l| l == format!("DB_PASSWORD={user_value}")), "{runtime}: {out}");
        // a pod secret joins on the next start
        let (s, b) = p.call(Method::PUT, &format!("/api/v1/secrets/POD_TOKEN?pod={name}"), Some(json!({"value": pod_value}))).await;
        assert_eq!(s, 201, "{b}");
        p.call(Method::POST, &format!("/api/v1/pods/{name}/stop"), None).await;
        p.wait_state(&name, "stopped", 60).await;
        p.call(Method::POST, &format!("/api/v1/pods/{name}/start"), None).await;
        p.wait_state(&name, "running", 60).await;
        let (out, _, _) = p.exec(&name, &["env"]).await;
        assert!(out.lines().any(|l| l == format!("POD_TOKEN={pod_value}")), "{runtime}: {out}");
        assert!(out.lines().any(|l| l == format!("DB_PASSWORD={user_value}")), "{runtime}: {out}");
        // listing shows names only
        let (_, list) = p.call(Method::GET, &format!("/api/v1/secrets?pod={name}"), None).await;
        assert_eq!(list["secrets"][0]["name"], "POD_TOKEN");
        assert!(!list.to_string().contains(&pod_value));
    }
    // replacing keeps one secret; a bad name is refused clearly
    let (s, _) = p.call(Method::PUT, "/api/v1/secrets/DB_PASSWORD", Some(json!({"value": user_value}))).await;
    assert_eq!(s, 200);
    let (s, b) = p.call(Method::PUT, "/api/v1/secrets/db-password", Some(json!({"value": "x"}))).await;
    assert_error(s, &b, 400, "invalid_name");
    let (s, b) = p.call(Method::PUT, "/api/v1/secrets/PATH", Some(json!({"value": "x"}))).await;
    assert_error(s, &b, 400, "invalid_name");
    // no API answer carries a value
    for path in ["/api/v1/secrets", "/api/v1/audit", "/api/v1/pods", "/api/v1/me"] {
        let (_, b) = p.call(Method::GET, path, None).await;
        let text = b.to_string();
        assert!(!text.contains(&user_value) && !text.contains(&pod_value), "{path}: {text}");
    }
    // no log line, and the database holds them only sealed
    let log = p.server_log();
    assert!(log.contains("DEBUG") || log.contains("debug"), "the log is at debug level");
    assert!(!log.contains(&user_value) && !log.contains(&pod_value), "a secret reached the log");
    for file in ["pinacle.db", "pinacle.db-wal"] {
        let bytes = std::fs::read(p.data.path().join(file)).unwrap_or_default();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains(&user_value) && !hay.contains(&pod_value), "{file} holds a secret in plain text");
    }
    // the master key file was made private
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.data.path().join("master.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // deleting a secret removes it from the next start
    let (s, _) = p.call(Method::DELETE, "/api/v1/secrets/DB_PASSWORD", None).await;
    assert_eq!(s, 204);
    let (s, b) = p.call(Method::DELETE, "/api/v1/secrets/DB_PASSWORD", None).await;
    assert_error(s, &b, 404, "not_found");
}

#[tokio::test]
async fn audit_anchors_are_recorded_outside_the_database() {
    let p = Pinacle::start().await;
    signup(&p, "alice").await;
    let (s, b) = p.call(Method::POST, "/api/v1/audit/anchor", None).await;
    assert_eq!(s, 200, "{b}");
    let (_, v) = p.call(Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!(v["ok"], true, "{v}");
    let file = std::fs::read_to_string(p.data.path().join("audit-anchors.jsonl")).unwrap();
    let last: Value = serde_json::from_str(file.lines().last().unwrap()).unwrap();
    assert_eq!(last["hash"], v["head"], "the newest anchor is the head");
}

/// Runs the `pinacle` CLI with its config in `config`, `stdin` on standard input.
fn cli(p: &Pinacle, config: &std::path::Path, keyring: bool, stdin: &str, args: &[&str]) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(common::pinacle_bin())
        .args(args)
        .env("PINACLE_CONFIG", config)
        .env("PINACLE_KEYRING", if keyring { "on" } else { "off" })
        .env_remove("PINACLE_API")
        .env_remove("PINACLE_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = p;
    out
}

#[tokio::test]
async fn cli_signs_in_with_a_password_renews_itself_and_manages_secrets_and_teams() {
    // A session keyring of this test's own (login sessions have one; test
    // runners often do not); the CLI processes inherit it.
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) takes no pointers.
    let joined = unsafe { nix::libc::syscall(nix::libc::SYS_keyctl, 1, 0) };
    assert!(joined > 0, "cannot create a session keyring");
    let p = Pinacle::start_with(&["--access-token-ttl", "2"]).await;
    signup(&p, "alice").await;
    signup(&p, "bob").await;
    for keyring in [false, true] {
        let config = p.data.path().join(format!("alice-{keyring}.json"));
        let out = cli(&p, &config, keyring, &format!("{PASSWORD}\n"), &["login", "--api", &p.url, "--user", "alice", "--password-stdin"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(said.contains("OS keyring"), keyring, "{said}");
        assert!(said.contains("as alice"), "{said}");
        // the config file is private, and holds no token when a keyring took it
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
        let saved: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        if said.contains("OS keyring") {
            assert_eq!(saved["token"], "", "{saved}");
            assert!(saved.get("refresh_token").is_none(), "{saved}");
        } else {
            assert!(saved["refresh_token"].as_str().unwrap().starts_with("pnr_"), "{saved}");
        }
        // after the access token expires (2 s, counted in whole seconds) the
        // CLI renews it by itself and saves the rotated refresh token
        tokio::time::sleep(Duration::from_millis(3300)).await;
        let out = cli(&p, &config, keyring, "", &["team", "list"]);
        assert!(out.status.success(), "renewed: {}", String::from_utf8_lossy(&out.stderr));
        if !keyring {
            let now: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
            assert_ne!(now["refresh_token"], saved["refresh_token"], "the rotated refresh token was saved");
        }
        let out = cli(&p, &config, keyring, "", &["team", "list"]);
        assert!(out.status.success(), "the saved pair works: {}", String::from_utf8_lossy(&out.stderr));
        let out = cli(&p, &config, keyring, "", &["logout"]);
        assert!(out.status.success());
        let out = cli(&p, &config, keyring, "", &["team", "list"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("pinacle login"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = cli(&p, &p.data.path().join("x.json"), false, "wrong password\n", &["login", "--api", &p.url, "--user", "alice", "--password-stdin"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong user name or password"));

    // secrets from stdin, teams and invitations
    let config = p.data.path().join("alice.json");
    let login = cli(&p, &config, false, &format!("{PASSWORD}\n"), &["login", "--api", &p.url, "--user", "alice", "--password-stdin"]);
    assert!(login.status.success());
    let out = cli(&p, &config, false, "s3cret-from-stdin\n", &["secret", "set", "API_KEY"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&p, &config, false, "", &["secret", "list"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("API_KEY") && !listing.contains("s3cret"), "{listing}");
    assert!(cli(&p, &config, false, "", &["team", "create", "acme"]).status.success());
    let out = cli(&p, &config, false, "", &["team", "invite", "acme", "--role", "viewer"]);
    assert!(out.status.success());
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let bob = p.data.path().join("bob.json");
    assert!(cli(&p, &bob, false, &format!("{PASSWORD}\n"), &["login", "--api", &p.url, "--user", "bob", "--password-stdin"]).status.success());
    let out = cli(&p, &bob, false, "", &["team", "join", &code]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&p, &config, false, "", &["team", "show", "acme"]);
    let members = String::from_utf8_lossy(&out.stdout);
    assert!(members.lines().any(|l| l.starts_with("bob ") && l.contains("viewer")), "{members}");
    // a viewer cannot set team secrets; the CLI shows the server's reason
    let out = cli(&p, &bob, false, "x\n", &["secret", "set", "T", "--team", "acme"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("viewer"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn device_sign_in_needs_approval_from_a_signed_in_user() {
    let p = Pinacle::start().await;
    signup(&p, "alice").await;
    let (alice, _) = login(&p, "alice").await;
    let poll = |code: String| {
        let p = &p;
        async move { p.call_as("", Method::POST, "/api/v1/auth/device/token", Some(json!({ "device_code": code }))).await }
    };
    let (s, start) = p.call_as("", Method::POST, "/api/v1/auth/device", None).await;
    assert_eq!(s, 200, "{start}");
    let device_code = start["device_code"].as_str().unwrap().to_owned();
    let user_code = start["user_code"].as_str().unwrap().to_owned();
    let (s, b) = poll(device_code.clone()).await;
    assert_error(s, &b, 400, "authorization_pending");
    // approving needs a signed-in, full-scope caller and the right code
    let approve = |code: &str| json!({ "user_code": code });
    let (s, _) = p.call_as("", Method::POST, "/api/v1/auth/device/approve", Some(approve(&user_code))).await;
    assert_eq!(s, 401);
    let (_, ro) = p.call_as(&alice, Method::POST, "/api/v1/tokens", Some(json!({"name": "ro", "scope": "read"}))).await;
    let (s, _) = p.call_as(ro["token"].as_str().unwrap(), Method::POST, "/api/v1/auth/device/approve", Some(approve(&user_code))).await;
    assert_eq!(s, 403);
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/auth/device/approve", Some(approve("BCDF-GHJK"))).await;
    assert_error(s, &b, 404, "not_found");
    let typed = user_code.to_lowercase().replace('-', " ");
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/auth/device/approve", Some(approve(&typed))).await;
    assert_eq!(s, 204, "{b}");
    // the device now gets its own session as alice, once
    let (s, pair) = poll(device_code.clone()).await;
    assert_eq!(s, 200, "{pair}");
    let (_, me) = p.call_as(pair["access_token"].as_str().unwrap(), Method::GET, "/api/v1/me", None).await;
    assert_eq!(me["name"], "alice");
    let (s, b) = poll(device_code).await;
    assert_error(s, &b, 400, "invalid_grant");
    // a denied device gets nothing
    let (_, start) = p.call_as("", Method::POST, "/api/v1/auth/device", None).await;
    let body = json!({"user_code": start["user_code"], "approve": false});
    assert_eq!(p.call_as(&alice, Method::POST, "/api/v1/auth/device/approve", Some(body)).await.0, 204);
    let (s, b) = poll(start["device_code"].as_str().unwrap().to_owned()).await;
    assert_error(s, &b, 400, "access_denied");

    // the CLI: `pinacle login --device` shows the code and waits for approval
    use std::io::BufRead;
    let config = p.data.path().join("device.json");
    let mut child = std::process::Command::new(common::pinacle_bin())
        .args(["login", "--api", &p.url, "--device"])
        .env("PINACLE_CONFIG", &config)
        .env("PINACLE_KEYRING", "off")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let code = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.trim().strip_prefix("pinacle device approve ").map(str::to_owned))
    })
    .await
    .unwrap()
    .expect("the CLI shows the code");
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/auth/device/approve", Some(approve(&code))).await;
    assert_eq!(s, 204, "{b}");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("as alice"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = cli(&p, &config, false, "", &["team", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
