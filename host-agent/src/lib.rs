//! The host agent: takes pod jobs from its host's queue and drives a sandbox
//! runtime (gVisor's `runsc`, or youki's libcontainer through
//! `pinacle-youki`) to make each pod's sandbox match its recorded state.
//!
//! Boundaries:
//! - [`ControlPlane`] is how the agent reads pods and reports state changes;
//!   the API server implements it over its database.
//! - [`SandboxRuntime`] is the runtime; [`OciCliRuntime`] serves both runsc
//!   and pinacle-youki, which share the runc command line.
//! - [`ImageStore`] holds read-only root filesystems; each pod gets an overlay
//!   with its own writable layer on top, and a persistent workspace volume.
//!   Images from registries (any OCI reference, pinned by digest) come from
//!   a [`pinacle_oci::Store`] under `{data}/oci` instead ([`registry`]).

pub mod agent;
pub mod bundle;
pub mod control;
pub mod data_lock;
pub mod dockerfile;
pub mod error;
pub mod features;
pub mod host_api;
pub mod images;
pub mod layout;
pub mod network;
pub mod one_shot;
pub mod platform;
pub mod pod_features;
pub mod pod_keys;
pub mod registry;
pub mod repository;
pub mod rootfs;
pub mod runtime;
pub mod safe_fs;
pub mod seccomp;
pub mod snapshot;
pub mod storage;
pub mod supervisor;

pub use agent::{AgentConfig, ExecOutput, ExecRequest, HostAgent};
pub use control::{ControlPlane, ControlPlaneError};
pub use error::AgentError;
pub use images::{ImageInfo, ImageStore};
pub use layout::DataLayout;
pub use runtime::{OciCliRuntime, SandboxRuntime, SandboxStatus};
