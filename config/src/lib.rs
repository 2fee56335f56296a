//! Pod definitions as users write them.
//!
//! - [`pinacle_yaml`]: the `pinacle.yaml` format (Pinacle's published format
//!   plus our additions), parsed with every problem located by file, line,
//!   column and field path ([`Diagnostic`]).
//! - [`devcontainer`]: importing `.devcontainer/devcontainer.json`.
//! - [`services`]: the registry of services a pod can ask for by name.
//! - [`templates`]: the built-in templates and their files.
//! - [`image_ref`]: what `image:` may name (a host-built image or a registry
//!   reference).
//! - [`resolve`]: turning a checked file into what a pod runs.
//! - [`schema`]: the JSON Schema of `pinacle.yaml`, generated from the types.
//!
//! Everything here is pure: no I/O beyond what the caller hands in.

pub mod devcontainer;
pub mod dockerfile;
pub mod diagnostic;
pub mod image_ref;
pub mod pinacle_yaml;
pub mod resolve;
pub mod schema;
pub mod services;
pub mod templates;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use pinacle_yaml::{parse, DeployKeyAccess, GithubSettings, ParseOptions, PinacleConfig, Previews};
