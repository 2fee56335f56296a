//! The AI router's modules in a real Pinacle (issue 19): packages pushed to
//! a real OCI registry on loopback (Debian's `docker-registry`), signed the
//! way `cosign sign --key` signs (the `sha256-<digest>.sig` tag, the
//! simple-signing payload and its annotation), installed with the server's
//! trusted key or quarantined; a WASM package and a subprocess module run in
//! gVisor (no network, read-only files) on real tasks in front of a real
//! llama.cpp engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../aion/tests/support/llm_engine.rs"]
mod llm_engine;
#[path = "../../oci/tests/common/mod.rs"]
mod oci_registry;

use base64::Engine as _;
use common::Pinacle;
use pinacle_aion::packages::{cosign_payload, pack, signature_tag, LAYER_MEDIA_TYPE, SIGNATURE_ANNOTATION, SIMPLESIGNING_MEDIA_TYPE};
use reqwest::Method;
use ring::signature::KeyPair as _;
use serde_json::{json, Value};

/// An ECDSA P-256 key pair, as `cosign generate-key-pair` makes, and its
/// public key in PEM (what `cosign.pub` holds).
fn key_pair() -> (ring::signature::EcdsaKeyPair, String) {
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    der.extend_from_slice(pair.public_key().as_ref());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    (pair, format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n"))
}

/// Pushes `layer` as `repo:tag`, signed by each of `signers` (one
/// signature layer each, in order, as cosign appends them). Returns the
/// reference to install.
fn publish(reg: &oci_registry::Registry, repo: &str, layer: &[u8], signers: &[&ring::signature::EcdsaKeyPair]) -> String {
    let digest = reg.push_artifact(repo, "1.0", layer, LAYER_MEDIA_TYPE).unwrap();
    let repository = format!("{}/{repo}", reg.host());
    let payload = cosign_payload(&repository, &digest);
    let sigs: Vec<(&[u8], &str, Value)> = signers
        .iter()
        .map(|pair| {
            let sig = pair.sign(&ring::rand::SystemRandom::new(), &payload).unwrap();
            (payload.as_slice(), SIMPLESIGNING_MEDIA_TYPE, json!({ SIGNATURE_ANNOTATION: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()) }))
        })
        .collect();
    if !sigs.is_empty() {
        reg.push_artifact_layers(repo, &signature_tag(&digest), &sigs).unwrap();
    }
    format!("{repository}:1.0")
}

const GUARD: &str = r#"#!/bin/sh
# refuses tasks that ask for a password, saying what it could see of the
# sandbox; passes every other task through unchanged
input=$(cat)
case "$input" in
  *password*)
    ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')
    if touch /module/written 2>/dev/null; then files=writable; else files=read-only; fi
    printf '{"refuse": "asks for a password (interfaces: %s; uid %s; module files %s)"}' "$ifaces" "$(id -u)" "$files" ;;
  *) printf '%s' "$input" ;;
esac
"#;

fn chat(content: &str) -> Value {
    json!({"model": "smollm2", "messages": [{"role": "user", "content": content}], "max_tokens": 8})
}

#[tokio::test]
async fn signed_packages_install_unsigned_ones_are_quarantined_and_modules_run_sandboxed() {
    let engine = llm_engine::start_engine();
    let reg = oci_registry::Registry::start(None).unwrap();
    let (trusted, pem) = key_pair();
    let (stranger, _) = key_pair();

    let wasm = pack(&[
        ("agent.yml", b"name: digits\nversion: 1.0.0\nruntime: wasm\nsource: redact.wat\nresources: {memory_mb: 8, timeout_ms: 200}\n", false),
        ("redact.wat", include_bytes!("../../aion/tests/modules/redact.wat"), false),
    ])
    .unwrap();
    let guard = pack(&[
        ("agent.yml", b"name: guard\nversion: 0.1.0\nruntime: subprocess\nimage: busybox\nsource: .\ncommand: [/bin/sh, /module/guard.sh]\nresources: {memory_mb: 64, timeout_ms: 20000}\n", false),
        ("guard.sh", GUARD.as_bytes(), true),
    ])
    .unwrap();
    // digits carries a stranger's signature first, then the trusted one
    let digits_ref = publish(&reg, "modules/digits", &wasm, &[&stranger, &trusted]);
    let guard_ref = publish(&reg, "modules/guard", &guard, &[&trusted]);
    let unsigned_ref = publish(&reg, "modules/unsigned", &wasm, &[]);
    // (quarantine keeps one entry per content digest: this one differs)
    let forged = pack(&[("agent.yml", b"name: forged\nruntime: wasm\nsource: redact.wat\n", false), ("redact.wat", include_bytes!("../../aion/tests/modules/redact.wat"), false)]).unwrap();
    let forged_ref = publish(&reg, "modules/forged", &forged, &[&stranger]);

    // the registry: `chat` runs both modules; a modules.yml subprocess module that never ends
    let dir = tempfile::tempdir().unwrap();
    let port = engine.port;
    std::fs::write(dir.path().join("models.yml"), format!("providers:\n  llama:\n    kind: openai\n    url: http://127.0.0.1:{port}/v1\n    cloud: false\nmodels:\n  smollm2:\n    provider: llama\n    tier: local\n    price: {{input: 0.1, output: 0.2}}\n    max_output: 16\n")).unwrap();
    std::fs::write(dir.path().join("policies.yml"), "default_intent: chat\n").unwrap();
    std::fs::write(dir.path().join("intents.yml"), "intents:\n  chat:\n    default_route: smollm2\n    privacy: local-only\n").unwrap();
    std::fs::create_dir(dir.path().join("sleeper")).unwrap();
    std::fs::write(dir.path().join("modules.yml"), "modules:\n  sleeper:\n    runtime: subprocess\n    source: sleeper\n    command: [/bin/sleep, '30']\n    resources: {timeout_ms: 1500}\n").unwrap();
    let key_file = dir.path().join("cosign.pub");
    std::fs::write(&key_file, pem).unwrap();
    let p = Pinacle::start_role_env(
        "server",
        &["--router-dir", &dir.path().display().to_string(), "--router-trusted-key", &key_file.display().to_string()],
        &[("PINACLE_INSECURE_REGISTRIES", &reg.host())],
    )
    .await;

    // only an instance admin installs
    let user = p.signup_and_login("ursula").await;
    let (s, b) = p.call_as(&user, Method::POST, "/router/modules", Some(json!({"reference": digits_ref}))).await;
    assert_eq!(s, 403, "{b}");
    // signed by the trusted key: installed
    for (reference, name) in [(&digits_ref, "digits"), (&guard_ref, "guard")] {
        let (s, b) = p.call(Method::POST, "/router/modules", Some(json!({"reference": reference}))).await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(b["package"]["name"], name);
        assert_eq!(b["package"]["state"], "installed");
    }
    // unsigned, or signed by a key the server does not trust: quarantined, never loaded
    let (s, b) = p.call(Method::POST, "/router/modules", Some(json!({"reference": unsigned_ref}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (422, Some("package_quarantined")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("unsigned"), "{b}");
    let (s, b) = p.call(Method::POST, "/router/modules", Some(json!({"reference": forged_ref}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (422, Some("package_quarantined")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("no trusted key"), "{b}");
    let (s, b) = p.call(Method::POST, "/router/modules", Some(json!({"reference": format!("{}/modules/absent:1.0", reg.host())}))).await;
    assert_eq!(s, 404, "{b}");
    let (s, list) = p.call(Method::GET, "/router/modules", None).await;
    assert_eq!(s, 200, "{list}");
    let names: Vec<&str> = list["modules"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["digits", "guard", "sleeper"], "{list}");
    let quarantined: Vec<&Value> = list["packages"].as_array().unwrap().iter().filter(|p| p["state"] == "quarantined").collect();
    assert_eq!(quarantined.len(), 2, "{list}");

    // the CLI shows the same
    let (code, out, err) = common::cli(&p, &["router", "module", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("guard") && out.contains("subprocess") && out.contains("quarantined"), "{out}");

    // the intent now runs both modules: digits masked by WASM, then the gVisor guard
    std::fs::write(dir.path().join("intents.yml"), "intents:\n  chat:\n    default_route: smollm2\n    privacy: local-only\n    modules: [digits, guard]\n  slow:\n    default_route: smollm2\n    privacy: local-only\n    modules: [sleeper]\n").unwrap();
    let (s, b) = p.call(Method::POST, "/router/policy/reload", None).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = p.call(Method::POST, "/v1/chat/completions", Some(chat("Say hi to 555 1234."))).await;
    assert_eq!(s, 200, "{b}");
    assert!(!b["choices"][0]["message"]["content"].as_str().unwrap().is_empty(), "{b}");
    let (s, b) = p.call(Method::POST, "/v1/chat/completions", Some(chat("What is the root password?"))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("refused_by_module")), "{b}");
    let why = b["error"]["message"].as_str().unwrap();
    assert!(why.contains("module guard refused"), "{why}");
    assert!(why.contains("interfaces: lo ;") || why.contains("interfaces: lo;"), "no network interface but loopback in the sandbox: {why}");
    assert!(why.contains("uid 65534") && why.contains("module files read-only"), "{why}");
    // a module past its time limit is killed; the task fails, nothing stays running
    let started = std::time::Instant::now();
    let mut slow = chat("hello");
    slow["aion"] = json!({"intent": "slow"});
    let (s, b) = p.call(Method::POST, "/v1/chat/completions", Some(slow)).await;
    assert!(s >= 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("time limit"), "{b}");
    assert!(started.elapsed() < std::time::Duration::from_secs(25), "the 30 s sleep was cut short");
    let leftover = std::fs::read_dir(p.data.path().join("router/oneshot")).unwrap().count();
    assert_eq!(leftover, 0, "no bundle is left behind");

    // a package an intent runs cannot be removed; a quarantined one can
    let (s, b) = p.call(Method::DELETE, "/router/modules/guard", None).await;
    assert_eq!(s, 409, "{b}");
    let q = quarantined[0]["name"].as_str().unwrap().to_owned();
    let (code, out, err) = common::cli(&p, &["router", "module", "remove", &q]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, log) = p.call(Method::GET, "/api/v1/audit", None).await;
    assert!(log["entries"].as_array().unwrap().iter().any(|e| e["action"] == "router.module.install"), "{log}");
    drop(engine);
}
