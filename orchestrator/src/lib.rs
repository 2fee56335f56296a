//! machine, the jobs a host agent runs, and placement of pods on hosts.
//!
//! Everything in this crate is pure: no I/O, no clocks beyond what callers pass
//! in. The API server and the host agent both build on these types, so a rule
//! written here holds on both sides of the job queue.

pub mod egress;
pub mod host;
pub mod hostname;
pub mod image_name;
pub mod job;
pub mod name;
pub mod placement;
pub mod processes;
pub mod pod;
pub mod state;
pub mod tier;

pub use job::PodJob;
pub use name::{NameError, PodName};
pub use placement::{place, place_on, HostCapacity, PlacementError};
pub use pod::{PodRecord, RuntimeKind};
pub use state::{InvalidTransition, PodEvent, PodState};
pub use tier::{Tier, TierLimits};
