//! A start asked for while a pod is stopping, against the real database and
//! state machine, with the host agent's reports made by hand: it is kept,
//! carried out when the stop is recorded, cancelled by a later stop, and
//! dropped by a delete or a failed stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pinacle_api::principal::Principal;
use pinacle_api::events::PodEventView;
use pinacle_api::service::PodView;
use pinacle_api::state::ServerConfig;
use pinacle_api::AppState;
use pinacle_orchestrator::{PodEvent, PodState, RuntimeKind};

const TOKEN: &str = "pnc_deferred-start-admin-token-0123456789";

async fn open(dir: &std::path::Path) -> (AppState, Principal) {
    let s = AppState::open(ServerConfig {
        database_url: format!("sqlite://{}?mode=rwc", dir.join("pinacle.db").display()),
        queue_path: dir.join("queue.db"),
        queue_url: None,
        advertise_url: None,
        redis_url: None,
        trusted_proxies: Vec::new(),
        default_runtime: None,
        limits: None,
        master_key: pinacle_api::crypto::MasterKey::load_or_create(&dir.join("master.key")).unwrap(),
        sessions: Default::default(),
        anchor_file: None,
        read_cache_ttl: Duration::ZERO,
        heartbeat: Duration::from_secs(5),
        host_credential_renewal: Duration::from_secs(86_400),
        memory: pinacle_api::state::MemoryConfig::in_dir(dir),
        router: pinacle_api::state::RouterConfig::in_dir(dir),
    })
    .await
    .unwrap();
    s.bootstrap_admin(Some(TOKEN)).await.unwrap();
    s.pods.register_host("h1", &[RuntimeKind::Gvisor], 64, 256 << 30).await.unwrap();
    let who = s.auth.principal_for_bearer(TOKEN).await.unwrap();
    (s, who)
}

/// A pod that the "agent" brought up.
async fn running(s: &AppState, who: &Principal, name: &str) -> PodView {
    let req = serde_json::from_value(serde_json::json!({"name": name, "template": "minimal", "runtime": "gvisor"})).unwrap();
    let pod = s.pods.create_pod(who, req).await.unwrap();
    s.pods.transition(pod.id, PodEvent::ProvisionStarted, "provisioning").await.unwrap();
    let pod = s.pods.transition(pod.id, PodEvent::SandboxRunning, "sandbox running").await.unwrap();
    assert_eq!(pod.state, PodState::Running);
    pod
}

/// The pod's events as (event, from, to, message), oldest first.
async fn events(s: &AppState, pod: &PodView) -> Vec<(String, Option<PodState>, PodState, String)> {
    s.pods.events_since(pod.id, 0).await.unwrap().into_iter().map(|e: PodEventView| (e.event, e.from, e.to, e.message)).collect()
}

fn ev(event: &str, from: PodState, to: PodState, message: &str) -> (String, Option<PodState>, PodState, String) {
    (event.to_owned(), Some(from), to, message.to_owned())
}

#[tokio::test]
async fn a_start_asked_for_while_stopping_is_carried_out_once_stopped() {
    use PodState as S;
    let dir = tempfile::tempdir().unwrap();
    let (s, who) = open(dir.path()).await;
    let pod = running(&s, &who, "p1").await;
    let key = pod.id.to_string();
    assert_eq!(s.pods.request(&who, &key, PodEvent::StopRequested).await.unwrap().state, S::Stopping);
    // accepted, and the pod stays stopping until the stop is done
    let asked = s.pods.request(&who, &key, PodEvent::StartRequested).await.unwrap();
    assert_eq!(asked.state, S::Stopping);
    // the agent reports the stop: the start follows in the same step
    let after = s.pods.transition(pod.id, PodEvent::SandboxStopped, "sandbox stopped").await.unwrap();
    assert_eq!(after.state, S::Starting);
    assert_eq!(s.pods.pod_by_id(pod.id).await.unwrap().unwrap().state, S::Starting);
    let all = events(&s, &pod).await;
    assert_eq!(
        all[all.len() - 4..],
        [
            ev("stop_requested", S::Running, S::Stopping, "requested by admin"),
            ev("start_requested", S::Stopping, S::Stopping, "requested by admin"),
            ev("sandbox_stopped", S::Stopping, S::Stopped, "sandbox stopped"),
            ev("start_requested", S::Stopped, S::Starting, "requested by admin while it was stopping"),
        ]
    );
    assert_eq!(s.pods.transition(pod.id, PodEvent::SandboxRunning, "sandbox running").await.unwrap().state, S::Running);
    // a later plain stop is not followed by that start again
    s.pods.request(&who, &key, PodEvent::StopRequested).await.unwrap();
    assert_eq!(s.pods.transition(pod.id, PodEvent::SandboxStopped, "sandbox stopped").await.unwrap().state, S::Stopped);
    // a start while stopped is the usual one
    assert_eq!(s.pods.request(&who, &key, PodEvent::StartRequested).await.unwrap().state, S::Starting);
    // and one while starting is still refused, in user terms
    let e = s.pods.request(&who, &key, PodEvent::StartRequested).await.unwrap_err();
    assert_eq!(e.status.as_u16(), 409);
    assert!(e.message.contains("it is starting"), "{}", e.message);
}

#[tokio::test]
async fn a_later_stop_cancels_it_and_asking_twice_starts_once() {
    use PodState as S;
    let dir = tempfile::tempdir().unwrap();
    let (s, who) = open(dir.path()).await;
    let pod = running(&s, &who, "p1").await;
    let key = pod.id.to_string();
    s.pods.request(&who, &key, PodEvent::StopRequested).await.unwrap();
    s.pods.request(&who, &key, PodEvent::StartRequested).await.unwrap();
    assert_eq!(s.pods.request(&who, &key, PodEvent::StopRequested).await.unwrap().state, S::Stopping);
    assert_eq!(s.pods.transition(pod.id, PodEvent::SandboxStopped, "sandbox stopped").await.unwrap().state, S::Stopped);

    let pod = running(&s, &who, "p2").await;
    let key = pod.id.to_string();
    s.pods.request(&who, &key, PodEvent::StopRequested).await.unwrap();
    s.pods.request(&who, &key, PodEvent::StartRequested).await.unwrap();
    s.pods.request(&who, &key, PodEvent::StartRequested).await.unwrap();
    assert_eq!(s.pods.transition(pod.id, PodEvent::SandboxStopped, "sandbox stopped").await.unwrap().state, S::Starting);
    let starts = events(&s, &pod).await.into_iter().filter(|e| e.0 == "start_requested" && e.1 == Some(S::Stopped)).count();
    assert_eq!(starts, 1);
}

#[tokio::test]
async fn a_delete_or_a_failed_stop_drops_it() {
    use PodState as S;
    let dir = tempfile::tempdir().unwrap();
    let (s, who) = open(dir.path()).await;
    // deleted meanwhile: the stop's report is refused, the delete goes on
    let pod = running(&s, &who, "p1").await;
    let key = pod.id.to_string();
    s.pods.request(&who, &key, PodEvent::StopRequested).await.unwrap();
    s.pods.request(&who, &key, PodEvent::StartRequested).await.unwrap();
    assert_eq!(s.pods.request(&who, &key, PodEvent::DeleteRequested).await.unwrap().state, S::Deleting);
    assert!(s.pods.transition(pod.id, PodEvent::SandboxStopped, "sandbox stopped").await.is_err());
    assert_eq!(s.pods.transition(pod.id, PodEvent::Removed, "removed").await.unwrap().state, S::Deleted);

    // the stop failed: the pod shows that failure, nothing starts
    let pod = running(&s, &who, "p2").await;
    let key = pod.id.to_string();
    s.pods.request(&who, &key, PodEvent::StopRequested).await.unwrap();
    s.pods.request(&who, &key, PodEvent::StartRequested).await.unwrap();
    let failed = s.pods.transition(pod.id, PodEvent::Failed, "runsc kill: no such process").await.unwrap();
    assert_eq!(failed.state, S::Error);
    assert_eq!(failed.state_reason.as_deref(), Some("runsc kill: no such process"));
    assert!(s.pods.transition(pod.id, PodEvent::SandboxStopped, "sandbox stopped").await.is_err());
    let now = s.pods.pod_by_id(pod.id).await.unwrap().unwrap();
    assert_eq!((now.state, now.state_reason.as_deref()), (S::Error, Some("runsc kill: no such process")));
    // the user may stop it again; that stop starts nothing
    s.pods.request(&who, &key, PodEvent::StopRequested).await.unwrap();
    assert_eq!(s.pods.transition(pod.id, PodEvent::SandboxStopped, "sandbox stopped").await.unwrap().state, S::Stopped);
}
