//! The in-process side of the host contract: [`HostAgent`] implements
//! [`pinacle_host_api::HostApi`], and [`AgentError`]s cross it as
//! [`HostError`] codes (by variant, never by text).

use std::net::Ipv4Addr;

use async_trait::async_trait;
use pinacle_host_api::{BoxedStream, ExecOutput, ExecRequest, HostApi, HostError, ImageGcReport, PodKey, PodPorts, PodUsage, SnapshotInfo, StoredImage};
use pinacle_orchestrator::{PodJob, PodRecord};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{AgentError, HostAgent};

/// How long connecting to a pod's port may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl From<AgentError> for HostError {
    fn from(e: AgentError) -> Self {
        let message = e.to_string();
        match e {
            AgentError::NotRunning(_) => HostError::NotRunning(message),
            AgentError::NotStopped(_) => HostError::Busy(message),
            AgentError::SnapshotNotFound(_) => HostError::NotFound(message),
            AgentError::ImageMissing(_) => HostError::ImageNotFound(message),
            AgentError::Pull(oci) => oci_error(oci),
            AgentError::Snapshot(_) => HostError::Failed(message),
            _ => HostError::Internal(message),
        }
    }
}

/// A registry or image store error as its code.
pub fn oci_error(e: pinacle_oci::OciError) -> HostError {
    {
        use pinacle_oci::OciError as E;
        let message = e.to_string();
        match e {
            E::InvalidReference(_) => HostError::InvalidImage(message),
            E::NotFound { .. } => HostError::ImageNotFound(message),
            E::AuthRefused { .. } => HostError::RegistryAuthRefused(message),
            E::UnsupportedPlatform { .. } => HostError::UnsupportedPlatform(message),
            E::Unreachable { .. } => HostError::RegistryUnreachable(message),
            _ => HostError::Failed(message),
        }
    }
}

#[async_trait]
impl HostApi for HostAgent {
    fn host_id(&self) -> &str {
        HostAgent::host_id(self)
    }

    fn is_ready(&self) -> bool {
        HostAgent::is_ready(self)
    }

    async fn handle(&self, job: PodJob) -> Result<(), HostError> {
        Ok(HostAgent::handle(self, job).await?)
    }

    async fn exec(&self, pod: &PodRecord, req: ExecRequest) -> Result<mpsc::Receiver<ExecOutput>, HostError> {
        Ok(HostAgent::exec(self, pod, req).await?)
    }

    async fn logs(&self, pod: Uuid, max_bytes: u64) -> Result<String, HostError> {
        Ok(HostAgent::logs(self, pod, max_bytes))
    }

    async fn usage(&self, pod: Uuid) -> Result<PodUsage, HostError> {
        Ok(HostAgent::usage(self, pod).await)
    }

    async fn pod_ports(&self, pod: Uuid) -> Result<PodPorts, HostError> {
        Ok(HostAgent::pod_address(self, pod).map_or(PodPorts::None, PodPorts::Direct))
    }

    async fn connect(&self, pod: Uuid, port: u16) -> Result<BoxedStream, HostError> {
        let ip: Ipv4Addr = HostAgent::pod_address(self, pod)
            .ok_or_else(|| HostError::NotRunning(format!("pod {pod} is not running with a network on this host")))?;
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((ip, port))).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
            Ok(Err(e)) => Err(HostError::Refused(format!("nothing accepts connections on port {port} of the pod: {e}"))),
            Err(_) => Err(HostError::Refused(format!("port {port} of the pod did not answer in {} s", CONNECT_TIMEOUT.as_secs()))),
        }
    }

    async fn supervisor(&self, pod: Uuid) -> Result<Option<pinacle_supervisor::client::SupervisorClient>, HostError> {
        Ok(self.supervisor_of(pod))
    }

    async fn set_egress(&self, pod: Uuid, egress: &str) -> Result<bool, HostError> {
        crate::network::Egress::parse(egress).map_err(|e| HostError::Invalid(e.to_string()))?;
        Ok(HostAgent::set_egress(self, pod, egress).await?)
    }

    async fn has_image(&self, name: &str) -> Result<bool, HostError> {
        Ok(self.images().rootfs(name).is_some())
    }

    async fn resolve_image(&self, image: &str, env: &[String]) -> Result<String, HostError> {
        HostAgent::resolve_image(self, image, env).await.map_err(oci_error)
    }

    async fn stored_images(&self) -> Result<Vec<StoredImage>, HostError> {
        let list = self.registry_images().list().await.map_err(oci_error)?;
        Ok(list
            .into_iter()
            .map(|i| StoredImage {
                digest: i.info.manifest_digest.to_string(),
                references: i.info.references,
                pinned: i.info.pinned,
                size_bytes: i.info.size,
                pulled_at: i.info.pulled_at,
            })
            .collect())
    }

    async fn gc_images(&self, keep: &[String]) -> Result<ImageGcReport, HostError> {
        // a digest that does not parse keeps nothing safe: refuse rather than remove too much
        let keep = keep.iter().map(|d| d.parse::<pinacle_oci::Digest>().map_err(|e| HostError::Invalid(format!("{d}: {e}")))).collect::<Result<Vec<_>, _>>()?;
        let report = self.registry_images().gc(&keep).await.map_err(oci_error)?;
        Ok(ImageGcReport {
            removed_images: report.removed_images.iter().map(ToString::to_string).collect(),
            removed_blobs: report.removed_blobs.len(),
            freed_bytes: report.freed_bytes,
        })
    }

    async fn snapshots(&self, pod: Uuid) -> Result<Vec<SnapshotInfo>, HostError> {
        Ok(HostAgent::snapshots(self, pod))
    }

    async fn take_snapshot(&self, pod: &PodRecord, name: &str) -> Result<SnapshotInfo, HostError> {
        Ok(HostAgent::snapshot(self, pod, name).await?)
    }

    async fn restore_snapshot(&self, pod: &PodRecord, id: &str) -> Result<SnapshotInfo, HostError> {
        Ok(HostAgent::restore_snapshot(self, pod, id).await?)
    }

    async fn delete_snapshot(&self, pod: Uuid, id: &str) -> Result<SnapshotInfo, HostError> {
        Ok(HostAgent::delete_snapshot(self, pod, id).await?)
    }

    async fn pod_key(&self, pod: &PodRecord) -> Result<Option<PodKey>, HostError> {
        Ok(HostAgent::pod_key(self, pod).await)
    }

    async fn rotate_pod_key(&self, pod: &PodRecord) -> Result<PodKey, HostError> {
        Ok(HostAgent::rotate_pod_key(self, pod).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_errors_cross_as_codes_by_variant() {
        assert_eq!(HostError::from(AgentError::NotRunning("p".into())).code(), "not_running");
        assert_eq!(HostError::from(AgentError::NotStopped("p".into())).code(), "busy");
        assert_eq!(HostError::from(AgentError::SnapshotNotFound("x".into())).code(), "not_found");
        assert_eq!(HostError::from(AgentError::Snapshot("no snapshot, said the text".into())).code(), "failed", "text is never matched");
        assert_eq!(HostError::from(AgentError::Mount("/var/lib/x: busy".into())).code(), "internal");
        let e = HostError::from(AgentError::Pull(pinacle_oci::OciError::NotFound { reference: "a/b:c".into() }));
        assert_eq!(e.code(), "image_not_found");
    }
}
