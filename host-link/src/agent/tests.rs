//! Both sides of a link over an in-memory connection, with a fake host and
//! a fake control plane behind them.

use std::collections::HashMap;
use std::sync::Mutex;

use pinacle_host_api::{BoxedStream, ExecOutput, ExecRequest, ImageGcReport, PodKey, PodPorts, PodUsage, SnapshotInfo, StoredImage};
use pinacle_orchestrator::{PodJob, PodName, RuntimeKind, Tier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::remote::{accept, LinkOptions, RemoteHost};

fn pod(id: u128, host: &str) -> PodRecord {
    PodRecord {
        id: Uuid::from_u128(id),
        name: PodName::parse("demo").unwrap_or_else(|e| panic!("{e}")),
        owner: "admin".into(),
        state: PodState::Running,
        image: "busybox".into(),
        template: String::new(),
        tier: Tier::DevSmall,
        runtime: RuntimeKind::Gvisor,
        host: host.into(),
        egress: "allow-all".into(),
        processes: Default::default(),
        snapshot_on_stop: false,
    }
}

/// A host with one running pod (id 1) whose port 80 echoes.
#[derive(Default)]
struct FakeHost {
    jobs: Mutex<Vec<PodJob>>,
}

fn unsupported<T>() -> Result<T, HostError> {
    Err(HostError::Unsupported("fake".into()))
}

#[async_trait]
impl HostApi for FakeHost {
    fn host_id(&self) -> &str {
        "h1"
    }
    fn is_ready(&self) -> bool {
        true
    }
    async fn handle(&self, job: PodJob) -> Result<(), HostError> {
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(job);
        Ok(())
    }
    async fn exec(&self, _: &PodRecord, req: ExecRequest) -> Result<mpsc::Receiver<ExecOutput>, HostError> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let _ = tx.send(ExecOutput::Stdout(req.argv.join(" ").into_bytes())).await;
            let _ = tx.send(ExecOutput::Stderr(req.stdin.unwrap_or_default())).await;
            let _ = tx.send(ExecOutput::Exit(3)).await;
        });
        Ok(rx)
    }
    async fn logs(&self, pod: Uuid, max_bytes: u64) -> Result<String, HostError> {
        if pod != Uuid::from_u128(1) {
            return Err(HostError::NotFound(format!("no pod {pod}")));
        }
        Ok(format!("log of {pod}, {max_bytes} bytes"))
    }
    async fn usage(&self, _: Uuid) -> Result<PodUsage, HostError> {
        Ok(PodUsage { cpu_percent: Some(12.5), memory_bytes: Some(1 << 20), disk_bytes: None })
    }
    async fn pod_ports(&self, _: Uuid) -> Result<PodPorts, HostError> {
        Ok(PodPorts::Direct(std::net::Ipv4Addr::new(10, 209, 0, 2)))
    }
    async fn connect(&self, _: Uuid, port: u16) -> Result<BoxedStream, HostError> {
        if port != 80 {
            return Err(HostError::Refused(format!("nothing on port {port}")));
        }
        let (ours, mut theirs) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = theirs.read(&mut buf).await {
                if n == 0 || theirs.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        Ok(Box::new(ours))
    }
    async fn supervisor(&self, _: Uuid) -> Result<Option<pinacle_supervisor::client::SupervisorClient>, HostError> {
        Ok(None)
    }
    async fn set_egress(&self, _: Uuid, _: &str) -> Result<bool, HostError> {
        unsupported()
    }
    async fn has_image(&self, name: &str) -> Result<bool, HostError> {
        Ok(name == "base")
    }
    async fn resolve_image(&self, _: &str, _: &[String]) -> Result<String, HostError> {
        Err(HostError::RegistryAuthRefused("denied".into()))
    }
    async fn stored_images(&self) -> Result<Vec<StoredImage>, HostError> {
        Ok(Vec::new())
    }
    async fn gc_images(&self, _: &[String]) -> Result<ImageGcReport, HostError> {
        unsupported()
    }
    async fn snapshots(&self, _: Uuid) -> Result<Vec<SnapshotInfo>, HostError> {
        unsupported()
    }
    async fn take_snapshot(&self, _: &PodRecord, _: &str) -> Result<SnapshotInfo, HostError> {
        unsupported()
    }
    async fn restore_snapshot(&self, _: &PodRecord, _: &str) -> Result<SnapshotInfo, HostError> {
        unsupported()
    }
    async fn delete_snapshot(&self, _: Uuid, _: &str) -> Result<SnapshotInfo, HostError> {
        unsupported()
    }
    async fn pod_key(&self, _: &PodRecord) -> Result<Option<PodKey>, HostError> {
        Ok(None)
    }
    async fn rotate_pod_key(&self, _: &PodRecord) -> Result<PodKey, HostError> {
        unsupported()
    }
}

/// Pods 1 (on h1) and 2 (on h2); records what it was told.
#[derive(Default)]
struct FakeControl {
    recorded: Mutex<Vec<(Uuid, PodEvent)>>,
    snapshots: Mutex<Vec<(Uuid, String)>>,
    pods: HashMap<Uuid, PodRecord>,
}

#[async_trait]
impl ControlPlane for FakeControl {
    async fn pod(&self, id: Uuid) -> Result<Option<PodRecord>, ControlPlaneError> {
        Ok(self.pods.get(&id).cloned())
    }
    async fn pods_on_host(&self, host: &str) -> Result<Vec<PodRecord>, ControlPlaneError> {
        Ok(self.pods.values().filter(|p| p.host == host).cloned().collect())
    }
    async fn record(&self, id: Uuid, event: PodEvent, _: &str) -> Result<PodState, ControlPlaneError> {
        if event == PodEvent::StartRequested {
            return Err(ControlPlaneError::Transition(pinacle_orchestrator::InvalidTransition { state: PodState::Running, event }));
        }
        self.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((id, event));
        Ok(PodState::Stopping)
    }
    async fn pod_environment(&self, _: Uuid) -> Result<Vec<String>, ControlPlaneError> {
        Ok(vec!["TOKEN=s3cret".into()])
    }
    async fn snapshot_taken(&self, id: Uuid, snapshot: &str) -> Result<(), ControlPlaneError> {
        self.snapshots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((id, snapshot.to_owned()));
        Ok(())
    }
}

struct Linked {
    remote: RemoteHost,
    host: Arc<FakeHost>,
    control: Arc<FakeControl>,
    agent_control: Arc<LinkControl>,
    credential: Credential,
    kept: Arc<Mutex<Vec<String>>>,
}

async fn linked() -> Linked {
    let (a, b) = tokio::io::duplex(1 << 20);
    let host = Arc::new(FakeHost::default());
    let control = Arc::new(FakeControl {
        pods: [pod(1, "h1"), pod(2, "h2")].into_iter().map(|p| (p.id, p)).collect(),
        ..Default::default()
    });
    let agent_control = LinkControl::new(Duration::from_millis(300));
    let kept: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep: KeepCredential = {
        let kept = kept.clone();
        Arc::new(move |s: &str| {
            if s.contains("unkeepable") {
                return Err(std::io::Error::other("disk full"));
            }
            kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(s.to_owned());
            Ok(())
        })
    };
    let credential = Credential::new("pnh_first".into(), keep);
    let side = AgentSide {
        host: host.clone(),
        control: agent_control.clone(),
        report: Arc::new(|| HostReport { protocol: 1, host: "h1".into(), vcpus: 4, ready: true, ..Default::default() }),
        credential: credential.clone(),
    };
    tokio::spawn(serve(b, side));
    let remote = accept(a, "h1", control.clone(), LinkOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
    Linked { remote, host, control, agent_control, credential, kept }
}

#[tokio::test]
async fn a_renewed_credential_is_kept_before_it_is_presented() {
    let l = linked().await;
    assert_eq!(l.credential.current(), "pnh_first");
    l.remote.renew_credential("pnh_second").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.credential.current(), "pnh_second", "the next connect presents the new one");
    assert_eq!(*l.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner), vec!["pnh_second".to_owned()]);
    // one that cannot be kept is refused, and the current one stays
    assert!(matches!(l.remote.renew_credential("pnh_unkeepable").await, Err(HostError::Failed(_))));
    assert!(matches!(l.remote.renew_credential("has space").await, Err(HostError::Invalid(_))));
    assert!(matches!(l.remote.renew_credential(&"x".repeat(201)).await, Err(HostError::Invalid(_))));
    assert_eq!(l.credential.current(), "pnh_second");
    // and never shown in a call's Debug output
    let call = pinacle_host_api::wire::HostCall::RenewCredential { secret: pinacle_host_api::wire::Secret("pnh_x".into()) };
    assert!(!format!("{call:?}").contains("pnh_x"));
}

#[tokio::test]
async fn calls_cross_with_their_answers_and_typed_errors() {
    let l = linked().await;
    assert!(l.remote.is_ready(), "the first report said ready");
    assert_eq!(l.remote.last_report().map(|r| r.vcpus), Some(4));
    assert_eq!(l.remote.logs(Uuid::from_u128(1), 10).await, Ok(format!("log of {}, 10 bytes", Uuid::from_u128(1))));
    assert!(matches!(l.remote.logs(Uuid::from_u128(9), 10).await, Err(HostError::NotFound(_))));
    assert!(matches!(l.remote.resolve_image("x", &[]).await, Err(HostError::RegistryAuthRefused(m)) if m == "denied"));
    assert_eq!(l.remote.usage(Uuid::nil()).await.map(|u| u.cpu_percent), Ok(Some(12.5)));
    assert_eq!(l.remote.pod_ports(Uuid::nil()).await, Ok(PodPorts::ViaHost), "a remote pod's address is no use here");
    assert_eq!(l.remote.has_image("base").await, Ok(true));
    l.remote.handle(PodJob::Start(Uuid::from_u128(1))).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(*l.host.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner), vec![PodJob::Start(Uuid::from_u128(1))]);
    assert!(l.remote.supervisor(Uuid::nil()).await.is_ok_and(|s| s.is_none()));
}

#[tokio::test]
async fn streams_carry_bytes_both_ways_and_exec_ends_with_its_code() {
    let l = linked().await;
    let mut s = l.remote.connect(Uuid::from_u128(1), 80).await.unwrap_or_else(|e| panic!("{e}"));
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = tokio::io::split(&mut s);
    let send = async {
        w.write_all(&payload).await.unwrap_or_else(|e| panic!("{e}"));
    };
    let mut back = vec![0u8; payload.len()];
    let recv = async { r.read_exact(&mut back).await.unwrap_or_else(|e| panic!("{e}")) };
    tokio::join!(send, recv);
    assert!(back == payload, "echoed through the link unchanged");
    assert!(matches!(l.remote.connect(Uuid::from_u128(1), 81).await, Err(HostError::Refused(_))));

    let mut rx = l
        .remote
        .exec(&pod(1, "h1"), ExecRequest { argv: vec!["echo".into(), "hi".into()], stdin: Some(b"in".to_vec()), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    while let Some(o) = rx.recv().await {
        got.push(o);
    }
    assert_eq!(got, vec![ExecOutput::Stdout(b"echo hi".to_vec()), ExecOutput::Stderr(b"in".to_vec()), ExecOutput::Exit(3)]);
}

#[tokio::test]
async fn a_host_learns_only_its_own_pods() {
    let l = linked().await;
    let c = l.agent_control.as_ref();
    let first = c.pod(Uuid::from_u128(1)).await;
    assert_eq!(first.as_ref().map_err(|e| e.to_string()).map(|p| p.as_ref().map(|p| p.host.clone())), Ok(Some("h1".to_owned())));
    assert_eq!(c.pod(Uuid::from_u128(2)).await.ok(), Some(None), "another host's pod looks like none");
    let pods = c.pods_on_host("h2").await.unwrap_or_default();
    assert_eq!(pods.iter().map(|p| p.id).collect::<Vec<_>>(), vec![Uuid::from_u128(1)], "the link's host, whatever is asked");
    assert!(matches!(c.pod_environment(Uuid::from_u128(2)).await, Err(ControlPlaneError::NotFound(_))), "no secrets of another host's pod");
    assert!(matches!(c.record(Uuid::from_u128(2), PodEvent::StopRequested, "x").await, Err(ControlPlaneError::NotFound(_))));
    assert_eq!(c.pod_environment(Uuid::from_u128(1)).await.ok(), Some(vec!["TOKEN=s3cret".to_owned()]));
    assert_eq!(c.record(Uuid::from_u128(1), PodEvent::StopRequested, "x").await.ok(), Some(PodState::Stopping));
    assert!(
        matches!(c.record(Uuid::from_u128(1), PodEvent::StartRequested, "x").await, Err(ControlPlaneError::Transition(t)) if t.event == PodEvent::StartRequested),
        "a refused transition crosses as one"
    );
    assert_eq!(*l.control.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner), vec![(Uuid::from_u128(1), PodEvent::StopRequested)]);
    // an automatic snapshot is reported for its own pods only
    c.snapshot_taken(Uuid::from_u128(1), "auto-1").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(c.snapshot_taken(Uuid::from_u128(2), "auto-2").await, Err(ControlPlaneError::NotFound(_))));
    assert_eq!(*l.control.snapshots.lock().unwrap_or_else(std::sync::PoisonError::into_inner), vec![(Uuid::from_u128(1), "auto-1".to_owned())]);
}

#[tokio::test]
async fn a_closed_link_answers_unreachable_and_the_agent_waits_then_fails() {
    let l = linked().await;
    l.remote.close();
    l.remote.closed().await;
    assert!(!l.remote.is_ready());
    assert_eq!(l.remote.logs(Uuid::from_u128(1), 1).await, Err(HostError::Unreachable("h1".into())));
    // the agent's calls find no link, wait a moment, then fail clearly
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = l.agent_control.pod(Uuid::from_u128(1)).await;
    assert!(matches!(&r, Err(ControlPlaneError::Backend(m)) if m.contains("cannot be reached")), "{r:?}");
}

/// A command that exited and closed its socket with the caller's last
/// input unread: writing that input fails, and the command's last output
/// (an exec's exit status) still reaches the caller, however slowly the
/// caller reads. (`copy_bidirectional` dropped it: the SSH gateway then
/// saw no exit status.)
#[tokio::test]
async fn a_failed_write_one_way_does_not_cut_the_other() {
    let (mut caller, relay_side) = tokio::io::duplex(4);
    let (relay_pod_side, mut pod) = tokio::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
    let relay = tokio::spawn(copy_both_ways(relay_side, relay_pod_side));
    pod.write_all(b"stdout, then exit status 4").await.unwrap_or_else(|e| panic!("{e}"));
    caller.write_all(b"in").await.unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // the pod goes with the caller's input unread
    drop(pod);
    tokio::time::sleep(Duration::from_millis(100)).await;
    caller.write_all(b"end").await.unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), caller.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("the relay never ended"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&got), "stdout, then exit status 4");
    tokio::time::timeout(Duration::from_secs(10), relay).await.unwrap_or_else(|_| panic!("relay hangs")).unwrap_or_else(|e| panic!("{e}"));
}
