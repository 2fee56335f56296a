//! Pulls OCI and Docker images from registries into a content-addressed store
//! on the host and unpacks each into a flattened, read-only root filesystem that
//! pods start from.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pinacle_oci::OciError> {
//! use pinacle_oci::{Credentials, Reference, Store};
//! let store = Store::new("/var/lib/pinacle/oci", vec!["127.0.0.1:5000".into()])?;
//! let reference = Reference::parse("python:3.13")?;
//! let image = store.pull(&reference, &Credentials::Anonymous, &|p| println!("{p:?}")).await?;
//! println!("{} at {}", image.info.pinned, image.rootfs.display());
//! # Ok(()) }
//! ```
//!
//! Images built on this host (e.g. by buildah, exported as an OCI image layout)
//! enter the same store through [`Store::import_layout`], with the same checks
//! and the same unpacker as a pull, so built and pulled images are alike.
//!
//! # Invariants
//!
//! - **Content-addressed.** Blobs live at `blobs/sha256/<hex>`, named by the
//!   SHA-256 of their bytes and shared by every image. An image lives at
//!   `images/sha256-<hex>/` named by its linux/amd64 *image manifest* digest;
//!   [`ImageInfo::pinned`] (`registry/repo@sha256:…`) names exactly that image, so
//!   pulling a pinned reference never gives different content, and a pinned
//!   reference already in the store needs no network at all.
//! - **Verified before visible.** Each blob is streamed to `blobs/tmp/` while
//!   being hashed and counted, and renamed into place only when both its digest
//!   and its size match the manifest ([`OciError::DigestMismatch`] otherwise,
//!   leaving nothing). Manifests are hashed too and must match the digest they were
//!   asked by. An image is unpacked into `images/.scratch-*` and renamed into
//!   place (after `syncfs`) only when every layer applied; any failure removes the
//!   scratch directory. A half-pulled image is never visible.
//! - **Concurrent pulls.** Pulls of the same image in one [`Store`] wait for each
//!   other (the second finds the first's result); across processes all renames
//!   are atomic and the first finished copy wins. Pulls hold `.lock` shared and
//!   [`Store::remove`]/[`Store::gc`] hold it exclusive, so nothing is collected
//!   under a running pull.
//! - **Flattened root filesystem.** Layers are applied bottom first into one
//!   directory tree. Whiteouts follow the OCI image spec: `.wh.NAME` removes NAME
//!   as the lower layers left it; `.wh..wh..opq` empties its directory of the
//!   lower layers' contents. A layer's whiteouts never hide that layer's own
//!   entries; whiteout files are never written; other `.wh..wh.*` AUFS metadata is
//!   skipped.
//! - **Safe against hostile layers.** An entry name with `..` refuses the image
//!   ([`OciError::UnsafeLayer`]); a leading `/` is dropped. Symlinks met in parent
//!   paths are resolved as if the root filesystem were `/` (absolute targets
//!   restart at the root, `..` stops there), so nothing is created, overwritten,
//!   removed, hard-linked or re-timed outside the root; hard-link targets must
//!   be files already in the image. The entry's own last component is replaced,
//!   never followed.
//! - **Preserved metadata.** Owners (when running as root), modes including
//!   setuid/setgid/sticky, and mtimes (directories' restored after their
//!   contents) are kept.
//! - **Skipped.** Block and character devices and FIFOs (the runtime provides
//!   `/dev`), extended attributes (file capabilities included), GNU sparse entries,
//!   and layer `urls` (foreign layers are fetched from the registry only, never
//!   from URLs a manifest names). Layers may be plain, gzip or zstd tarballs
//!   (detected from their first bytes; zstd streams of several frames, skippable
//!   ones included, work).
//! - **Bounded memory.** Blobs are streamed to disk and unpacked from disk
//!   (zstd's window is capped at 128 MiB by ruzstd); only manifests (read whole by oci-client) and configs (at most
//!   [`store::MAX_CONFIG_BYTES`]) are held in memory.
//! - **Private to root.** A new store directory is created mode 0700: unpacked
//!   images keep setuid-root binaries, which host users must never reach.
//! - **Transport.** HTTPS (rustls, the system's roots and webpki's) for every
//!   registry except those named in `insecure_registries`, which use plain HTTP.
//!   Anonymous and Basic credentials (the latter also for the registry's token
//!   exchange); a fresh client per call so credentials are never shared between
//!   pulls; [`Credentials`]' `Debug` never shows the password. A blob download
//!   whose connection fails or is cut is retried (3 tries in all), from the start.

#![warn(missing_docs)]

pub mod digest;
pub mod error;
pub mod reference;
pub mod store;
pub mod unpack;

pub use digest::{Digest, DigestError};
pub use error::OciError;
pub use reference::{looks_like_registry_reference, Reference, ReferenceError};
pub use store::{
    Artifact,
    Credentials, GcReport, ImageInfo, LayerProgress, PullPhase, PullProgress, PulledImage,
    RuntimeConfig, Store,
};
