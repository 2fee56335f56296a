//! Fuzzing the API's JSON request bodies through the extractor every JSON
//! route uses ([`ApiJson`]): mutated and generated bodies never panic, and
//! every refusal is a 4xx in the API's error shape. Bounded and
//! deterministic (a seeded generator; `PINACLE_FUZZ_ITERATIONS` raises the
//! count) so it runs in seconds under `cargo nextest`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::extract::FromRequest;
use axum::response::IntoResponse;
use pinacle_api::error::ApiJson;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// Seeded, so a failing run repeats.
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }
    fn next(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        rand::Rng::gen_range(&mut self.0, 0..n.max(1))
    }
}

/// Feeds `bytes` to `ApiJson<T>` as a request body: `Ok(Some(value))`
/// when accepted, `Ok(None)` for a 4xx in the error shape; panics on
/// anything else.
async fn extract<T: DeserializeOwned>(bytes: Vec<u8>) -> Option<T> {
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/")
        .header("content-type", "application/json")
        .body(Body::from(bytes.clone()))
        .unwrap();
    match ApiJson::<T>::from_request(req, &()).await {
        Ok(ApiJson(v)) => Some(v),
        Err(e) => {
            let resp = e.into_response();
            let status = resp.status();
            assert!(status.is_client_error(), "{status} for {}", String::from_utf8_lossy(&bytes));
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{v}");
            None
        }
    }
}

/// Pieces spliced into bodies: JSON syntax, wrong types, edge numbers,
/// escapes, deep nesting.
const PIECES: &[&str] = &[
    "{", "}", "[", "]", ":", ",", "\"", "\\", "null", "true", "-1", "0", "1e999", "-0", "18446744073709551616", "65536",
    "9223372036854775808", "\"\\u0000\"", "\"\\ud800\"", "\"é\"", "[]", "{}", "\"a\":1", "\"name\":", "\"config\":\"a: &x [1]\\nb: *x\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "\"processes\":[{\"name\":\"x\",\"run\":\"y\",\"port\":70000}]", "\"install\":[{}]", "\"role\":\"owner\"", "\"scope\":\"god\"",
];

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for _ in 0..1 + rng.below(5) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 if at < bytes.len() => {
                let end = (at + 1 + rng.below(6)).min(bytes.len());
                bytes.drain(at..end);
            }
            1 => {
                let piece = PIECES[rng.below(PIECES.len())].as_bytes();
                bytes.splice(at..at, piece.iter().copied());
            }
            2 if at < bytes.len() => bytes[at] = rng.next() as u8,
            _ => {
                let end = (at + rng.below(16)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
        }
    }
    bytes
}

/// A generated value: objects with the bodies' field names, any shapes.
fn value(rng: &mut Rng, depth: usize) -> Value {
    const KEYS: &[&str] = &[
        "name", "template", "tier", "runtime", "team", "install", "processes", "config", "config_file", "strict", "egress", "public_ports",
        "image", "snapshot_on_stop", "user", "role", "expires_in_seconds", "scope", "value", "password", "invite", "signup", "port",
        "path", "embed", "command", "env", "cwd", "stdin", "code", "refresh_token", "run", "health", "once",
    ];
    match if depth == 0 { rng.below(6) } else { rng.below(8) } {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => json!(rng.next() as i64 >> rng.below(64)),
        3 => json!(f64::from_bits(rng.next())).clone(),
        4 => Value::String(["", "x", "dev.small", "gvisor", "youki", "allow-all", "10.0.0.0/8", "admin", "minimal", "ö\u{0}"][rng.below(10)].into()),
        5 => Value::String("A".repeat(rng.below(300))),
        6 => Value::Array((0..rng.below(5)).map(|_| value(rng, depth - 1)).collect()),
        _ => Value::Object((0..rng.below(6)).map(|_| (KEYS[rng.below(KEYS.len())].to_owned(), value(rng, depth - 1))).collect()),
    }
}

/// Runs every generated and mutated body through `T`'s extractor;
/// `accepted` sees what got through.
async fn fuzz<T: DeserializeOwned>(samples: &[Value], seed: u64, accepted: impl Fn(&T)) -> (usize, usize) {
    let iterations: usize = std::env::var("PINACLE_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
    let mut rng = Rng::new(seed);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..iterations {
        let bytes = match i % 3 {
            0 => {
                let sample = serde_json::to_vec(&samples[rng.below(samples.len())]).unwrap();
                mutate(&mut rng, &sample)
            }
            1 => serde_json::to_vec(&value(&mut rng, 4)).unwrap(),
            _ => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        };
        match extract::<T>(bytes).await {
            Some(v) => {
                accepted(&v);
                ok += 1;
            }
            None => refused += 1,
        }
    }
    // the samples themselves are accepted
    for s in samples {
        assert!(extract::<T>(serde_json::to_vec(s).unwrap()).await.is_some(), "sample refused: {s}");
    }
    (ok, refused)
}

#[tokio::test]
async fn pod_bodies() {
    use pinacle_api::service::{CreatePodRequest, CreateSnapshot, PodSettings};
    let (ok, refused) = fuzz::<CreatePodRequest>(
        &[
            json!({"name": "web", "template": "minimal", "tier": "dev.small", "runtime": "gvisor"}),
            json!({"name": "app", "config": "name: app\ntier: dev.small\nprocesses:\n  - name: web\n    startCommand: npm run dev\n", "strict": true}),
            json!({"name": "p", "install": [{"name": "i", "run": "true"}], "processes": [{"name": "w", "run": "sleep 1", "port": 3000}], "egress": "deny-all"}),
        ],
        1,
        |req| {
            // a sent pinacle.yaml goes through the same reader as the route's
            if let Some(text) = &req.config {
                let _ = pinacle_api::service::read_config(text, req.config_file.as_deref(), req.strict);
            }
        },
    )
    .await;
    assert!(ok > 0 && refused > 0, "{ok} accepted, {refused} refused");
    fuzz::<PodSettings>(&[json!({"public_ports": [3000], "egress": "10.0.0.0/8", "snapshot_on_stop": true}), json!({"image": "base"})], 2, |_| {}).await;
    fuzz::<CreateSnapshot>(&[json!({"name": "before-upgrade"}), json!({})], 3, |_| {}).await;
    fuzz::<pinacle_api::routes::pods::ValidateConfig>(&[json!({"config": "name: x\n", "file": "a.yaml", "strict": false})], 4, |req| {
        let _ = pinacle_api::service::read_config(&req.config, req.file.as_deref(), req.strict);
    })
    .await;
    fuzz::<pinacle_api::routes::pods::OpenBody>(&[json!({"port": 3000, "path": "/x", "embed": true})], 5, |_| {}).await;
    fuzz::<pinacle_api::routes::pods::ExecBody>(&[json!({"command": ["ls", "-la"], "env": {"A": "b"}, "cwd": "/", "stdin": "x"})], 6, |_| {}).await;
}

#[tokio::test]
async fn account_team_token_and_secret_bodies() {
    use pinacle_api::teams::{AddMemberRequest, CreateInviteRequest, CreateTeamRequest, SetRoleRequest};
    fuzz::<CreateTeamRequest>(&[json!({"name": "core"})], 11, |_| {}).await;
    fuzz::<AddMemberRequest>(&[json!({"user": "bob", "role": "member"})], 12, |_| {}).await;
    fuzz::<SetRoleRequest>(&[json!({"role": "admin"})], 13, |_| {}).await;
    fuzz::<CreateInviteRequest>(&[json!({"team": "core", "role": "member", "expires_in_seconds": 3600}), json!({})], 14, |_| {}).await;
    fuzz::<pinacle_api::tokens::CreateTokenRequest>(&[json!({"name": "ci", "scope": "read", "expires_in_seconds": 60})], 15, |_| {}).await;
    fuzz::<pinacle_api::secrets::SetSecretRequest>(&[json!({"value": "s3cret"})], 16, |_| {}).await;
    fuzz::<pinacle_api::accounts::Credentials>(&[json!({"name": "alice", "password": "correct horse battery"})], 17, |_| {}).await;
    fuzz::<pinacle_api::accounts::SignupRequest>(&[json!({"name": "alice", "password": "correct horse battery", "invite": "abc"})], 18, |_| {}).await;
    fuzz::<pinacle_api::settings::SettingsUpdate>(&[json!({"signup": "invite"})], 19, |_| {}).await;
    fuzz::<pinacle_api::routes::teams::AcceptInvite>(&[json!({"code": "abc"})], 20, |_| {}).await;
    fuzz::<pinacle_api::routes::accounts::RefreshRequest>(&[json!({"refresh_token": "x.y.z"})], 21, |_| {}).await;
}

#[tokio::test]
async fn bodies_that_are_not_objects_or_not_json_are_refused_in_shape() {
    for body in [&b"[]"[..], b"1", b"\"x\"", b"null", b"", b"{", b"\xff\xfe", "[".repeat(100_000).as_bytes()] {
        assert!(extract::<pinacle_api::teams::CreateTeamRequest>(body.to_vec()).await.is_none());
    }
}
