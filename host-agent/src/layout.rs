//! Where a host keeps its state on disk.
//!
//! ```text
//! {data}/images/{image}/rootfs      read-only lower layers
//! {data}/pods/{id}/rootfs           the overlay mount the sandbox uses as /
//! {data}/pods/{id}/config.json      the OCI bundle (the pod dir is the bundle)
//! {data}/pods/{id}/console.log      the tail of the pod's console, saved
//!                                   when its disk is unmounted
//! {data}/volumes/{id}/disk.img      the pod's disk (see `storage`): /workspace,
//!                                   /root and the overlay's writable layer
//! {data}/volumes/{id}/disk          where it is mounted; on the disk, out
//!                                   of the pod's sight, `console.log` (the
//!                                   runtime's and init's output) and `run/`
//!                                   (`/.pinacle/run`): whatever the pod
//!                                   writes counts against its disk size
//! {data}/snapshots/{id}/            the pod's snapshots
//! {data}/runtime/{runsc,youki}      runtime state
//! ```

use std::path::{Path, PathBuf};

use uuid::Uuid;

/// Paths under a host's data directory.
#[derive(Debug, Clone)]
pub struct DataLayout {
    root: PathBuf,
}

impl DataLayout {
    /// A layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where images live.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// All pods' directories.
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// One pod's directory, which is also its OCI bundle.
    pub fn pod(&self, id: Uuid) -> PathBuf {
        self.pods().join(id.simple().to_string())
    }

    /// All pods' persistent volumes.
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// One pod's volume directory.
    pub fn volume(&self, id: Uuid) -> PathBuf {
        self.volumes().join(id.simple().to_string())
    }

    /// The pod's persistent workspace, mounted at `/workspace` (inside its
    /// disk, so only while the disk is mounted).
    pub fn workspace(&self, id: Uuid) -> PathBuf {
        crate::storage::mount_point(&self.volume(id)).join("workspace")
    }

    /// One pod's snapshots.
    pub fn snapshots(&self, id: Uuid) -> PathBuf {
        self.root.join("snapshots").join(id.simple().to_string())
    }

    /// The pod's console log while its disk is mounted: on the disk, so
    /// output without end fills the pod's disk, not the host's.
    pub fn console_log(&self, id: Uuid) -> PathBuf {
        crate::storage::mount_point(&self.volume(id)).join("console.log")
    }

    /// The console log's tail, kept in the pod's directory when its disk
    /// is unmounted (see [`crate::storage::CONSOLE_TAIL_BYTES`]).
    pub fn console_tail(&self, id: Uuid) -> PathBuf {
        self.pod(id).join("console.log")
    }

    /// State directory of a runtime.
    pub fn runtime_state(&self, runtime: &str) -> PathBuf {
        self.root.join("runtime").join(runtime)
    }
}
