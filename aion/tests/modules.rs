//! Modules (AgentPackage, `runtime: wasm`) in wasmtime, written in WAT:
//! a redaction module on the router's path, a refusal, and the sandbox's
//! limits — a runaway loop stopped by its time limit, memory past its cap,
//! and imports it was not granted (network, host functions) refused when
//! the registry loads.

#![cfg(feature = "wasm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fake, serve};
use pinacle_aion::budget::MemoryLedger;
use pinacle_aion::engine::{Aion, NoKeys};
use pinacle_aion::modules::{ModuleError, ModuleHost};
use pinacle_aion::registries::{LoadError, Registries};
use pinacle_aion::registry::Registry;
use serde_json::{json, Value};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modules")
}

fn manifest(name: &str, source: &str, extra: &str) -> pinacle_aion::registry::Module {
    let text = format!("modules:\n  {name}:\n    runtime: wasm\n    source: {source}\n    resources: {{memory_mb: 8, fuel: 100000000000, timeout_ms: 50}}\n{extra}");
    let (reg, _) = Registry::parse([None, None, None, Some(&text)]).unwrap();
    reg.modules[name].clone()
}

#[test]
fn the_redaction_module_masks_digits_and_its_schemas_are_checked() {
    let host = ModuleHost::new().unwrap();
    let schema = "    input_schema: {type: object, required: [messages], properties: {messages: {type: array}}}\n    output_schema: {type: object, required: [messages]}\n";
    let m = host.compile(&manifest("redact", "redact.wat", schema), Some(&dir())).unwrap();
    let out = m.call(&json!({"intent": "chat", "messages": [{"role": "user", "content": "my card is 4111 1111 1111 1111, call 555-0100"}]})).unwrap();
    assert_eq!(out["messages"][0]["content"], "my card is XXXX XXXX XXXX XXXX, call XXX-XXXX");
    let e = m.call(&json!({"intent": "chat"})).unwrap_err();
    assert!(matches!(e, ModuleError::Schema { side: "input", .. }), "{e}");
    // a big input grows the module's memory within its cap
    let long = "7".repeat(2 << 20);
    let out = m.call(&json!({"messages": [{"role": "user", "content": long}]}));
    assert!(out.is_err(), "2 MiB is over the exchange limit");
    let out = m.call(&json!({"messages": [{"role": "user", "content": "7".repeat(600_000)}]})).unwrap();
    assert_eq!(out["messages"][0]["content"].as_str().unwrap().len(), 600_000);
}

#[test]
fn a_runaway_loop_is_stopped_by_its_time_limit_and_memory_past_its_cap_is_refused() {
    let host = ModuleHost::new().unwrap();
    let m = host.compile(&manifest("runaway", "runaway.wat", ""), Some(&dir())).unwrap();
    let t0 = Instant::now();
    let e = m.call(&json!({})).unwrap_err();
    let took = t0.elapsed();
    assert_eq!(e, ModuleError::Limit { module: "runaway".into(), limit: "time limit" }, "stopped by the clock, not fuel");
    // no timing assertion beyond "it was the deadline": figures are in scripts/bench/router.sh
    assert!(took >= Duration::from_millis(50), "{took:?}");
    let m = host.compile(&manifest("hog", "hog.wat", ""), Some(&dir())).unwrap();
    let e = m.call(&json!({})).unwrap_err();
    assert!(matches!(e, ModuleError::Limit { limit: "memory limit", .. }), "{e}");
    // fuel too
    let mut tight = manifest("runaway", "runaway.wat", "");
    tight.fuel = 10_000;
    tight.timeout_ms = 60_000;
    let e = host.compile(&tight, Some(&dir())).unwrap().call(&json!({})).unwrap_err();
    assert_eq!(e, ModuleError::Limit { module: "runaway".into(), limit: "fuel" });
}

#[test]
fn modules_asking_for_the_network_or_the_host_are_refused_at_load() {
    let host = ModuleHost::new().unwrap();
    let e = host.compile(&manifest("net", "network.wat", ""), Some(&dir())).unwrap_err();
    assert!(e.to_string().contains("sock_accept (network)"), "{e}");
    let e = host.compile(&manifest("host", "host.wat", ""), Some(&dir())).unwrap_err();
    assert!(e.to_string().contains("env.read_secrets"), "{e}");
    let e = host.compile(&manifest("net", "redact.wat", "    permissions: {network: [api.example.com]}\n"), Some(&dir())).unwrap_err();
    assert!(e.to_string().contains("network access is not supported"), "{e}");
    let e = host.compile(&manifest("oci", "oci://registry.example/redact@sha256:00", ""), Some(&dir())).unwrap_err();
    assert!(e.to_string().contains("pinacle router module install"), "{e}");
    // and the whole registry is refused, located at the manifest
    let text = "modules:\n  net:\n    runtime: wasm\n    source: network.wat\n";
    match Registries::from_texts_in([None, None, None, Some(text)], Some(&dir())) {
        Err(LoadError::Invalid(d)) => {
            let e = d.errors().next().unwrap();
            assert_eq!((e.file.as_str(), e.line, e.path.as_str()), ("modules.yml", 3, "modules.net"), "{d}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_intents_modules_run_on_every_task_before_any_provider_sees_it() {
    let (local, _cloud) = (fake().await, fake().await);
    let models = format!("providers:\n  local:\n    kind: openai\n    url: {}/v1\n    cloud: false\nmodels:\n  ok:\n    provider: local\n    upstream: \"ok:3\"\n    tier: local\n    price: {{input: 0, output: 0}}\n", local.url());
    let intents = "intents:\n  support:\n    default_route: ok\n    privacy: local-only\n    modules: [redact]\n  locked:\n    default_route: ok\n    privacy: local-only\n    modules: [redact, refuse]\n";
    let modules = "modules:\n  redact:\n    runtime: wasm\n    source: redact.wat\n  refuse:\n    runtime: wasm\n    source: refuse.wat\n";
    let dir_ = tempfile::tempdir().unwrap();
    let store = pinacle_aion::store::Store::open(&dir_.path().join("aion.db").display().to_string()).await.unwrap();
    let registries = Registries::from_texts_in([Some(&models), Some(intents), None, Some(modules)], Some(&dir())).unwrap();
    let s = serve(Aion::new(registries, Arc::new(MemoryLedger::default()), Some(store), Arc::new(NoKeys))).await;
    for stream in [false, true] {
        let r = s
            .post("/v1/chat/completions", "user:u1", json!({"model": "intent:support", "stream": stream, "messages": [{"role": "user", "content": "refund order 12345 to card 4111"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
        let sent = local.last_body();
        assert_eq!(sent["messages"][0]["content"], "refund order XXXXX to card XXXX", "the provider saw the masked prompt");
    }
    let calls = local.total_calls();
    let r = s.post("/v1/chat/completions", "user:u1", json!({"model": "intent:locked", "messages": [{"role": "user", "content": "x"}]})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "refused_by_module");
    assert!(e["error"]["message"].as_str().unwrap().contains("production credential"), "{e}");
    assert_eq!(local.total_calls(), calls, "a refused task reaches no provider");
}

/// What a fake sandbox was asked: image, files, command, memory, timeout, input.
type Run = (String, String, Vec<String>, u32, Duration, Vec<u8>);

/// A sandbox that records what it was asked to run and answers as told.
struct FakeSandbox {
    seen: std::sync::Mutex<Vec<Run>>,
    answer: Result<Vec<u8>, pinacle_aion::sandbox::SandboxError>,
}

impl pinacle_aion::sandbox::ModuleSandbox for FakeSandbox {
    fn check_image(&self, image: &str) -> Result<(), String> {
        if image == "missing" { Err("not built here".into()) } else { Ok(()) }
    }
    fn run(&self, job: &pinacle_aion::sandbox::SandboxJob<'_>, input: &[u8]) -> Result<Vec<u8>, pinacle_aion::sandbox::SandboxError> {
        self.seen.lock().unwrap().push((job.image.to_owned(), job.files.display().to_string(), job.command.to_vec(), job.memory_mb, job.timeout, input.to_vec()));
        self.answer.clone()
    }
}

#[test]
fn subprocess_modules_run_in_the_hosts_sandbox_within_their_manifest() {
    use pinacle_aion::modules::Subprocess;
    use pinacle_aion::sandbox::{ModuleSandbox, SandboxError};
    let files = tempfile::tempdir().unwrap();
    let mut m = manifest("guard", ".", "");
    m.runtime = pinacle_aion::registry::ModuleRuntime::Subprocess;
    m.command = vec!["/module/run".into()];
    m.timeout_ms = 750;
    m.memory_mb = 48;
    m.output_schema = Some(json!({"type": "object", "required": ["messages"]}));
    // no sandbox on this server: refused when the registry loads
    let e = Subprocess::new(&m, Some(files.path()), None).unwrap_err();
    assert!(e.to_string().contains("no sandbox"), "{e}");
    let fake = Arc::new(FakeSandbox { seen: Default::default(), answer: Ok(br#"{"messages": []}"#.to_vec()) });
    let sandbox: Arc<dyn ModuleSandbox> = fake.clone();
    let s = Subprocess::new(&m, Some(files.path()), Some(&sandbox)).unwrap();
    assert_eq!(s.call(&json!({"intent": "chat", "messages": []})).unwrap(), json!({"messages": []}));
    let seen = fake.seen.lock().unwrap().pop().unwrap();
    assert_eq!(seen.0, "busybox", "the default image");
    assert_eq!(seen.1, files.path().join(".").display().to_string());
    assert_eq!((seen.2, seen.3, seen.4), (vec!["/module/run".to_owned()], 48, Duration::from_millis(750)));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&seen.5).unwrap(), json!({"intent": "chat", "messages": []}));
    // its answer is checked against its schema; a timeout is a limit, not a failure
    let bad: Arc<dyn ModuleSandbox> = Arc::new(FakeSandbox { seen: Default::default(), answer: Ok(br#"{"other": 1}"#.to_vec()) });
    let e = Subprocess::new(&m, Some(files.path()), Some(&bad)).unwrap().call(&json!({})).unwrap_err();
    assert!(matches!(e, ModuleError::Schema { side: "output", .. }), "{e}");
    let slow: Arc<dyn ModuleSandbox> = Arc::new(FakeSandbox { seen: Default::default(), answer: Err(SandboxError::Timeout) });
    let e = Subprocess::new(&m, Some(files.path()), Some(&slow)).unwrap().call(&json!({})).unwrap_err();
    assert_eq!(e, ModuleError::Limit { module: "guard".into(), limit: "time limit" });
    // the network is never granted, an image must exist, and the source must be a directory
    let mut net = m.clone();
    net.network = vec!["api.example.com".into()];
    assert!(Subprocess::new(&net, Some(files.path()), Some(&sandbox)).unwrap_err().to_string().contains("network"));
    let mut img = m.clone();
    img.image = Some("missing".into());
    assert!(Subprocess::new(&img, Some(files.path()), Some(&sandbox)).unwrap_err().to_string().contains("not built here"));
    let mut file = m.clone();
    file.source = "nope".into();
    assert!(Subprocess::new(&file, Some(files.path()), Some(&sandbox)).unwrap_err().to_string().contains("not a directory"));
}
