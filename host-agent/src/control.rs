//! The agent's view of the control plane: the [`ControlPlane`] trait and
//! its types, defined with the rest of the host contract in
//! `pinacle-host-api`.

pub use pinacle_host_api::control::{ControlPlane, ControlPlaneError, ImageSetup, RepositoryConfigOutcome};
