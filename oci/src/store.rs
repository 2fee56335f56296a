//! The content-addressed image store and the pull pipeline.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use crate::digest::Digest;
use crate::error::OciError;
use crate::reference::Reference;
use crate::unpack::{UnpackError, Unpacker};

/// Largest image config blob accepted (real ones are a few KiB to a few hundred KiB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Most layers in one image (Docker's own limit is 127).
pub const MAX_LAYERS: usize = 256;
/// Layer downloads run this many at a time; unpacking runs beside them, in order.
const PARALLEL_DOWNLOADS: usize = 4;
/// Tries per blob when the connection fails or is cut (other errors are final).
const BLOB_ATTEMPTS: u32 = 3;
/// Progress is reported at most once per this many bytes of a blob (and at its end).
const PROGRESS_STEP: u64 = 1 << 20;

const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Registry credentials for one pull. `Debug` never shows the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials (public images; Docker Hub's anonymous token flow included).
    #[default]
    Anonymous,
    /// HTTP Basic credentials, also used for the registry's token exchange.
    Basic {
        /// The user name.
        username: String,
        /// The password or access token.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl Credentials {
    fn to_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}

/// Where a pull is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPhase {
    /// Asking the registry which manifest the reference names.
    Resolving,
    /// Downloading a layer (`layer` says which and how far).
    Downloading,
    /// A layer (or the whole image) was already in the store: nothing downloaded.
    Cached,
    /// Applying a layer to the root filesystem.
    Unpacking,
    /// The image is in the store.
    Done,
}

/// Progress of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerProgress {
    /// 0-based position of the layer in the image.
    pub index: usize,
    /// How many layers the image has.
    pub count: usize,
    /// The layer's digest.
    pub digest: Digest,
    /// Bytes downloaded (or unpacked layers: the whole size).
    pub done: u64,
    /// The layer's (compressed) size from the manifest.
    pub total: u64,
}

/// One progress report from [`Store::pull`] (serialisable for pod events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullProgress {
    /// The reference being pulled, normalised.
    pub reference: String,
    /// The phase.
    pub phase: PullPhase,
    /// The layer concerned (`None` for Resolving, Done and a whole-image cache hit).
    pub layer: Option<LayerProgress>,
}

/// What a container needs from the image config to start a process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// `Env` (`NAME=value` strings).
    #[serde(default)]
    pub env: Vec<String>,
    /// `WorkingDir`.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid`, …).
    #[serde(default)]
    pub user: Option<String>,
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
}

/// The contents of an image's `image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `registry/repository@sha256:…` of the platform manifest: pulling it always
    /// gives this image.
    pub pinned: String,
    /// The references this image was pulled as (normalised), first one first.
    pub references: Vec<String>,
    /// The (linux/amd64) image manifest's digest: the image's identity.
    pub manifest_digest: Digest,
    /// The config blob's digest.
    pub config_digest: Digest,
    /// The layer blobs' digests, bottom first.
    pub layers: Vec<Digest>,
    /// Compressed size: config plus layers, in bytes.
    pub size: u64,
    /// Disk space the unpacked root filesystem takes, in bytes (allocated
    /// blocks; hard links counted once).
    #[serde(default)]
    pub disk_usage: u64,
    /// When it was unpacked.
    pub pulled_at: DateTime<Utc>,
    /// Env, WorkingDir, User, Entrypoint and Cmd from the image config.
    pub config: RuntimeConfig,
}

/// An image present in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// Its metadata.
    pub info: ImageInfo,
    /// `images/sha256-<hex>`.
    pub dir: PathBuf,
    /// `images/sha256-<hex>/rootfs`: the flattened, read-only root filesystem.
    pub rootfs: PathBuf,
    /// Whether it was already in the store (nothing downloaded or unpacked).
    pub cached: bool,
}

/// What [`Store::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Images removed (manifest digests).
    pub removed_images: Vec<Digest>,
    /// Blobs removed.
    pub removed_blobs: Vec<Digest>,
    /// Bytes of blobs removed (unpacked trees not counted).
    pub freed_bytes: u64,
}

/// A single-layer OCI artifact fetched by [`Store::fetch_artifact`] (a
/// devcontainer feature, say).
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The manifest digest the reference named.
    pub manifest_digest: Digest,
    /// The layer's bytes, checked against its digest.
    pub layer: Vec<u8>,
    /// The layer descriptor's annotations (a cosign signature's is there).
    pub layer_annotations: std::collections::BTreeMap<String, String>,
}

/// A content-addressed image store rooted at one directory.
///
/// Layout: `blobs/sha256/<hex>` (verified compressed blobs shared by all images),
/// `images/sha256-<manifest hex>/{rootfs/,image.json,manifest.json}`, plus
/// `blobs/tmp/` and `images/.scratch-*` for work in progress, and `.lock`.
/// One process should own a store directory; within it, any number of pulls may
/// run at once. Pulls take `.lock` shared and `remove`/`gc` exclusive, so they
/// also exclude each other across processes.
pub struct Store {
    dir: PathBuf,
    insecure: Vec<String>,
    inflight: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn image_dir_name(d: &Digest) -> String {
    format!("sha256-{}", d.hex())
}

impl Store {
    /// Opens (creating if needed) the store at `dir`. `insecure_registries` are
    /// `host[:port]` names reached over plain HTTP (e.g. `127.0.0.1:5000`); every
    /// other registry is reached over HTTPS only.
    ///
    /// A new `dir` is created mode 0700: unpacked images keep their setuid-root
    /// binaries, so host users must not reach them (an existing `dir` keeps its
    /// mode; never make it searchable by unprivileged host users).
    pub fn new(
        dir: impl Into<PathBuf>,
        insecure_registries: Vec<String>,
    ) -> Result<Store, OciError> {
        let dir = dir.into();
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| OciError::io(&dir, e))?;
        }
        for d in [
            dir.join("blobs/sha256"),
            dir.join("blobs/tmp"),
            dir.join("images"),
        ] {
            fs::create_dir_all(&d).map_err(|e| OciError::io(&d, e))?;
        }
        Ok(Store {
            dir,
            insecure: insecure_registries,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// The store's root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a blob (whether or not it is present).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// Path of an image's directory (whether or not it is present).
    pub fn image_dir(&self, d: &Digest) -> PathBuf {
        self.dir.join("images").join(image_dir_name(d))
    }

    /// A fresh client per call: oci-client caches credentials per registry for
    /// the client's lifetime, and one user's credentials must never serve another's pull.
    fn client(&self) -> oci_client::Client {
        oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.insecure.clone()),
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(20)),
            read_timeout: Some(Duration::from_secs(120)),
            ..ClientConfig::default()
        })
    }

    /// The linux/amd64 image manifest digest `reference` names now (chosen from an
    /// index/manifest list when the reference names one).
    pub async fn resolve(
        &self,
        reference: &Reference,
        creds: &Credentials,
    ) -> Result<Digest, OciError> {
        let client = self.client();
        let (_, digest, _) = self
            .fetch_image_manifest(&client, reference, &creds.to_auth())
            .await?;
        Ok(digest)
    }

    /// Fetches the artifact `reference` names (an OCI manifest with one
    /// layer of `layer_media_type`, like a devcontainer feature's): its
    /// manifest and that layer, verified against their digests (the layer is
    /// cached in the store's blobs). A layer over `max_bytes` is refused
    /// before it is downloaded.
    pub async fn fetch_artifact(
        &self,
        reference: &Reference,
        creds: &Credentials,
        layer_media_type: &str,
        max_bytes: u64,
    ) -> Result<Artifact, OciError> {
        let mut all = self.fetch_artifact_layers(reference, creds, layer_media_type, max_bytes, 1).await?;
        Ok(all.remove(0))
    }

    /// [`Store::fetch_artifact`] for every layer of `layer_media_type` (at
    /// most `max_layers`, in manifest order; a cosign signature manifest
    /// has one per signature). At least one such layer, or
    /// [`OciError::BadImage`].
    pub async fn fetch_artifact_layers(
        &self,
        reference: &Reference,
        creds: &Credentials,
        layer_media_type: &str,
        max_bytes: u64,
        max_layers: usize,
    ) -> Result<Vec<Artifact>, OciError> {
        let refname = reference.to_string();
        let client = self.client();
        let cref = reference.to_client();
        let auth = creds.to_auth();
        let (body, manifest_digest) = self
            .fetch_manifest_raw(&client, &cref, &refname, &auth, reference.digest())
            .await?;
        let manifest: ImageManifestJson =
            serde_json::from_slice(&body).map_err(|e| OciError::BadImage {
                reference: refname.clone(),
                message: format!("it is not an artifact manifest: {e}"),
            })?;
        check_manifest_type(&refname, manifest.media_type.as_deref(), false)?;
        let layers: Vec<&DescriptorJson> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == layer_media_type)
            .take(max_layers)
            .collect();
        if layers.is_empty() {
            return Err(OciError::BadImage {
                reference: refname,
                message: format!("it has no layer of type {layer_media_type}"),
            });
        }
        let mut out = Vec::with_capacity(layers.len());
        for layer in layers {
            if layer.size > max_bytes {
                return Err(OciError::BadImage {
                    reference: refname,
                    message: format!("its layer is {} bytes; at most {max_bytes} are accepted", layer.size),
                });
            }
            let digest = parse_digest(&refname, &layer.digest)?;
            let _lock = self.lock(false).await?;
            self.fetch_blob(&client, &cref, &refname, &digest, layer.size, &|_| {})
                .await?;
            let path = self.blob_path(&digest);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| OciError::io(&path, e))?;
            // a cached blob is checked again: the store's files are not trusted blindly
            if Digest::of(&bytes) != digest {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(OciError::DigestMismatch {
                    reference: refname,
                    expected: digest,
                    actual: Digest::of(&bytes).to_string(),
                });
            }
            out.push(Artifact {
                manifest_digest: manifest_digest.clone(),
                layer: bytes,
                layer_annotations: layer.annotations.clone(),
            });
        }
        Ok(out)
    }

    /// Pulls `reference` into the store (see the crate docs for the guarantees)
    /// and returns the image. An image already unpacked is returned at once (a
    /// digest reference needs no network then).
    ///
    /// The store is shared: a digest reference already in the store is returned
    /// without asking the registry, so `creds` are not checked then. Callers that
    /// serve several users pass digests only as pinned from that user's own pull
    /// or [`Store::resolve`] (a tag always goes to the registry with `creds`).
    pub async fn pull(
        &self,
        reference: &Reference,
        creds: &Credentials,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<PulledImage, OciError> {
        let refname = reference.to_string();
        let report = |phase: PullPhase, layer: Option<LayerProgress>| {
            progress(PullProgress {
                reference: refname.clone(),
                phase,
                layer,
            })
        };
        let _lock = self.lock(false).await?;
        if let Some(d) = reference.digest() {
            if let Some(img) = self.get_locked(d)? {
                let img = self.add_reference(img, &refname)?;
                report(PullPhase::Cached, None);
                report(PullPhase::Done, None);
                return Ok(img);
            }
        }
        report(PullPhase::Resolving, None);
        let client = self.client();
        let auth = creds.to_auth();
        let (manifest, mdigest, manifest_body) =
            self.fetch_image_manifest(&client, reference, &auth).await?;
        let gate = InflightGate::enter(&self.inflight, &mdigest);
        let _one_at_a_time = gate.gate.lock().await;
        if let Some(img) = self.get_locked(&mdigest)? {
            let img = self.add_reference(img, &refname)?;
            report(PullPhase::Cached, None);
            report(PullPhase::Done, None);
            return Ok(img);
        }
        let cref = reference.to_client();
        let source = BlobSource::Registry {
            client: &client,
            cref: &cref,
        };
        let result = self
            .pull_new(
                &source,
                reference,
                &manifest,
                &mdigest,
                &manifest_body,
                &report,
            )
            .await;
        let img = result?;
        report(PullPhase::Done, None);
        Ok(img)
    }

    async fn pull_new(
        &self,
        source: &BlobSource<'_>,
        reference: &Reference,
        manifest: &ImageManifestJson,
        mdigest: &Digest,
        manifest_body: &[u8],
        report: &(dyn Fn(PullPhase, Option<LayerProgress>) + Send + Sync),
    ) -> Result<PulledImage, OciError> {
        let refname = reference.to_string();
        let bad = |message: String| OciError::BadImage {
            reference: refname.clone(),
            message,
        };
        let config_desc = &manifest.config;
        if !CONFIG_TYPES.contains(&config_desc.media_type.as_str()) {
            return Err(OciError::UnsupportedMediaType {
                reference: refname.clone(),
                media_type: config_desc.media_type.clone(),
            });
        }
        if config_desc.size > MAX_CONFIG_BYTES {
            return Err(bad(format!(
                "its config is {} bytes (at most {MAX_CONFIG_BYTES} accepted)",
                config_desc.size
            )));
        }
        if manifest.layers.len() > MAX_LAYERS {
            return Err(bad(format!(
                "it has {} layers (at most {MAX_LAYERS} accepted)",
                manifest.layers.len()
            )));
        }
        let config_digest = parse_digest(&refname, &config_desc.digest)?;
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for l in &manifest.layers {
            if !is_layer_type(&l.media_type) {
                return Err(OciError::UnsupportedMediaType {
                    reference: refname.clone(),
                    media_type: l.media_type.clone(),
                });
            }
            layers.push((parse_digest(&refname, &l.digest)?, l.size));
        }
        // Config.
        self.fetch_from(source, &refname, &config_digest, config_desc.size, &|_| {})
            .await?;
        let config_path = self.blob_path(&config_digest);
        let config_bytes = fs::read(&config_path).map_err(|e| OciError::io(&config_path, e))?;
        let config: ImageConfigJson = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad(format!("its config is not valid JSON: {e}")))?;
        if let (Some(os), Some(arch)) = (&config.os, &config.architecture) {
            if os != "linux" || arch != "amd64" {
                return Err(OciError::UnsupportedPlatform {
                    reference: refname.clone(),
                    available: vec![format!("{os}/{arch}")],
                });
            }
        }

        // Scratch directory beside the final one.
        let scratch =
            self.dir
                .join("images")
                .join(format!(".scratch-{}-{}", mdigest.hex(), unique_suffix()));
        let guard = RemoveOnDrop(Some(scratch.clone()));
        let rootfs = scratch.join("rootfs");
        fs::create_dir_all(&rootfs).map_err(|e| OciError::io(&rootfs, e))?;

        // Downloads (a few at a time, results in layer order) feed the unpacker.
        let count = layers.len();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(), OciError>>(count.max(1));
        let downloads = async {
            let refname = &refname;
            let jobs: Vec<(usize, Digest, u64)> = layers
                .iter()
                .enumerate()
                .map(|(i, (d, size))| (i, d.clone(), *size))
                .collect();
            let mut stream =
                futures::stream::iter(jobs.into_iter().map(move |(index, d, size)| async move {
                    let on_bytes = |done: u64| {
                        report(
                            PullPhase::Downloading,
                            Some(LayerProgress {
                                index,
                                count,
                                digest: d.clone(),
                                done,
                                total: size,
                            }),
                        )
                    };
                    let mut attempt = 1;
                    let cached = loop {
                        match self
                            .fetch_from(source, refname, &d, size, &on_bytes)
                            .await
                        {
                            Err(OciError::Unreachable { message, .. })
                                if attempt < BLOB_ATTEMPTS =>
                            {
                                tracing::warn!(blob = %d, attempt, %message, "blob download failed; retrying");
                                tokio::time::sleep(Duration::from_millis(250 * attempt as u64)).await;
                                attempt += 1;
                            }
                            r => break r?,
                        }
                    };
                    if cached {
                        report(
                            PullPhase::Cached,
                            Some(LayerProgress {
                                index,
                                count,
                                digest: d.clone(),
                                done: size,
                                total: size,
                            }),
                        );
                    }
                    Ok::<(), OciError>(())
                }))
                .buffered(PARALLEL_DOWNLOADS);
            loop {
                // Stop at once (dropping the downloads in flight, whose temp
                // files go with them) when the unpacker has given up.
                let next = tokio::select! {
                    _ = tx.closed() => break,
                    next = stream.next() => next,
                };
                let Some(r) = next else { break };
                let failed = r.is_err();
                if tx.send(r).await.is_err() || failed {
                    break;
                }
            }
        };
        let unpacking = async {
            let mut unpacker = Unpacker::new(rootfs.clone());
            for (index, (d, size)) in layers.iter().enumerate() {
                match rx.recv().await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err(bad("the layer downloads stopped".to_string())),
                }
                report(
                    PullPhase::Unpacking,
                    Some(LayerProgress {
                        index,
                        count,
                        digest: d.clone(),
                        done: *size,
                        total: *size,
                    }),
                );
                let blob = self.blob_path(d);
                let (u, r) = tokio::task::spawn_blocking(move || {
                    let r = fs::File::open(&blob)
                        .map_err(|source| UnpackError::Io {
                            path: blob.clone(),
                            source,
                        })
                        .and_then(|f| unpacker.apply_layer(f));
                    (unpacker, r)
                })
                .await
                .map_err(|e| OciError::io(&rootfs, io::Error::other(e.to_string())))?;
                unpacker = u;
                r.map_err(|e| unpack_error(&refname, d, e))?;
            }
            drop(rx);
            let root_for_err = rootfs.clone();
            let root2 = rootfs.clone();
            let usage = tokio::task::spawn_blocking(move || {
                unpacker.finish()?;
                crate::unpack::disk_usage(&root2)
            })
            .await
            .map_err(|e| OciError::io(&root_for_err, io::Error::other(e.to_string())))?
            .map_err(|e| unpack_error(&refname, mdigest, e))?;
            Ok::<u64, OciError>(usage)
        };
        let ((), unpacked) = tokio::join!(downloads, unpacking);
        let disk_usage = unpacked?;

        let info = ImageInfo {
            pinned: reference.pinned(mdigest).to_string(),
            references: vec![refname.clone()],
            manifest_digest: mdigest.clone(),
            config_digest: config_digest.clone(),
            layers: layers.iter().map(|(d, _)| d.clone()).collect(),
            size: config_desc.size + layers.iter().map(|(_, s)| *s).sum::<u64>(),
            disk_usage,
            pulled_at: Utc::now(),
            config: config.config.map(RuntimeConfig::from).unwrap_or_default(),
        };
        write_file(&scratch.join("manifest.json"), manifest_body)?;
        write_json(&scratch.join("image.json"), &info)?;
        let final_dir = self.image_dir(mdigest);
        let scratch2 = scratch.clone();
        tokio::task::spawn_blocking(move || sync_fs(&scratch2))
            .await
            .map_err(|e| OciError::io(&scratch, io::Error::other(e.to_string())))??;
        match fs::rename(&scratch, &final_dir) {
            Ok(()) => {
                std::mem::forget(guard);
            }
            // Another process finished the same image first: theirs is as good.
            Err(e) if final_dir.join("image.json").exists() => {
                tracing::debug!(error = %e, "image already installed by another pull");
            }
            Err(e) => return Err(OciError::io(&final_dir, e)),
        }
        Ok(PulledImage {
            rootfs: final_dir.join("rootfs"),
            dir: final_dir,
            info,
            cached: false,
        })
    }

    /// Brings one blob into `blobs/sha256/` from `source` unless present;
    /// returns whether it was.
    async fn fetch_from(
        &self,
        source: &BlobSource<'_>,
        refname: &str,
        digest: &Digest,
        size: u64,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<bool, OciError> {
        match source {
            BlobSource::Registry { client, cref } => {
                self.fetch_blob(client, cref, refname, digest, size, on_bytes)
                    .await
            }
            BlobSource::Layout(dir) => {
                let path = self.blob_path(digest);
                if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == size) {
                    return Ok(true);
                }
                on_bytes(0);
                let from = layout_blob_path(dir, digest);
                let tmp = self.dir.join("blobs/tmp").join(format!(
                    "{}.{}",
                    digest.hex(),
                    unique_suffix()
                ));
                let (refname2, digest2, tmp2) = (refname.to_string(), digest.clone(), tmp.clone());
                let guard = RemoveOnDrop(Some(tmp.clone()));
                tokio::task::spawn_blocking(move || {
                    copy_verified(&from, &tmp2, &refname2, &digest2, size)
                })
                .await
                .map_err(|e| OciError::io(&tmp, io::Error::other(e.to_string())))??;
                on_bytes(size);
                fs::rename(&tmp, &path).map_err(|e| OciError::io(&path, e))?;
                std::mem::forget(guard);
                Ok(false)
            }
        }
    }

    /// Imports the image `tag` of the OCI image layout at `dir` (`index.json`
    /// → manifest, or an index whose linux/amd64 entry is taken → config and
    /// layers) into the store exactly as [`Store::pull`] installs a pulled
    /// one: every blob is checked against its digest and size while it is
    /// copied into `blobs/sha256/`, layers are applied by the same unpacker
    /// into a scratch directory renamed into place when complete, and
    /// `image.json` records `name` (a reference such as
    /// `localhost/pinacle/app:latest`) with [`ImageInfo::pinned`] as
    /// `name`'s repository at the manifest's digest. A failed import leaves
    /// no image. The image is then one like any other: `list`, `remove`, `gc`
    /// and a pull of its pinned reference (without network) find it.
    ///
    /// `tag` is the layout's `org.opencontainers.image.ref.name`; an empty
    /// `tag` takes the layout's only entry.
    pub async fn import_layout(
        &self,
        dir: &Path,
        tag: &str,
        name: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<PulledImage, OciError> {
        let reference = Reference::parse(name)?;
        let refname = reference.to_string();
        let report = |phase: PullPhase, layer: Option<LayerProgress>| {
            progress(PullProgress {
                reference: refname.clone(),
                phase,
                layer,
            })
        };
        let _lock = self.lock(false).await?;
        report(PullPhase::Resolving, None);
        let (manifest, mdigest, manifest_body) = layout_image_manifest(dir, tag, &refname)?;
        let gate = InflightGate::enter(&self.inflight, &mdigest);
        let _one_at_a_time = gate.gate.lock().await;
        if let Some(img) = self.get_locked(&mdigest)? {
            let img = self.add_reference(img, &refname)?;
            report(PullPhase::Cached, None);
            report(PullPhase::Done, None);
            return Ok(img);
        }
        let source = BlobSource::Layout(dir);
        let img = self
            .pull_new(
                &source,
                &reference,
                &manifest,
                &mdigest,
                &manifest_body,
                &report,
            )
            .await?;
        report(PullPhase::Done, None);
        Ok(img)
    }

    /// Downloads one blob into `blobs/sha256/` unless present; returns whether it was.
    /// Writes to a temp file while hashing and counting, checks both against the
    /// descriptor, then renames into place: a bad blob leaves nothing.
    async fn fetch_blob(
        &self,
        client: &oci_client::Client,
        cref: &oci_client::Reference,
        refname: &str,
        digest: &Digest,
        size: u64,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<bool, OciError> {
        let path = self.blob_path(digest);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == size) {
            return Ok(true);
        }
        let desc = OciDescriptor {
            media_type: String::new(),
            digest: digest.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            urls: None,
            annotations: None,
        };
        let mismatch = |actual: String| OciError::DigestMismatch {
            reference: refname.to_string(),
            expected: digest.clone(),
            actual,
        };
        let mut stream = client
            .pull_blob_stream(cref, &desc)
            .await
            .map_err(|e| map_client_error(refname, cref.registry(), e))?;
        if let Some(len) = stream.content_length {
            if len != size {
                return Err(mismatch(format!("{len} bytes instead of {size}")));
            }
        }
        let tmp = self
            .dir
            .join("blobs/tmp")
            .join(format!("{}.{}", digest.hex(), unique_suffix()));
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| OciError::io(&tmp, e))?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = sha2::Sha256::new();
        let mut done: u64 = 0;
        let mut next_report = 0u64;
        on_bytes(0);
        while let Some(chunk) = stream.stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    if let Some(oci_client::errors::DigestError::VerificationError {
                        actual, ..
                    }) = e.get_ref().and_then(|i| i.downcast_ref())
                    {
                        return Err(mismatch(actual.clone()));
                    }
                    return Err(OciError::Unreachable {
                        reference: refname.to_string(),
                        registry: cref.registry().to_string(),
                        message: format!("download of {digest} interrupted: {e}"),
                    });
                }
            };
            done += chunk.len() as u64;
            if done > size {
                return Err(mismatch(format!("more than {size} bytes")));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| OciError::io(&tmp, e))?;
            if done >= next_report {
                on_bytes(done);
                next_report = done + PROGRESS_STEP;
            }
        }
        if done != size {
            return Err(mismatch(format!("{done} bytes instead of {size}")));
        }
        let got = Digest::from_sha256(hasher.finalize().into());
        if &got != digest {
            return Err(mismatch(got.to_string()));
        }
        out.flush().await.map_err(|e| OciError::io(&tmp, e))?;
        let file = out.into_inner();
        file.sync_data().await.map_err(|e| OciError::io(&tmp, e))?;
        drop(file);
        on_bytes(done);
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| OciError::io(&path, e))?;
        std::mem::forget(guard);
        Ok(false)
    }

    /// Fetches the manifest `reference` names; when it is an index, picks the
    /// linux/amd64 entry and fetches that. Returns the image manifest, its digest
    /// (verified against the body) and the raw body.
    async fn fetch_image_manifest(
        &self,
        client: &oci_client::Client,
        reference: &Reference,
        auth: &RegistryAuth,
    ) -> Result<(ImageManifestJson, Digest, Vec<u8>), OciError> {
        let refname = reference.to_string();
        let cref = reference.to_client();
        let (body, digest) = self
            .fetch_manifest_raw(client, &cref, &refname, auth, reference.digest())
            .await?;
        let parsed: AnyManifestJson =
            serde_json::from_slice(&body).map_err(|e| OciError::BadImage {
                reference: refname.clone(),
                message: format!("its manifest is not valid JSON: {e}"),
            })?;
        match parsed {
            AnyManifestJson::Image(m) => {
                check_manifest_type(&refname, m.media_type.as_deref(), false)?;
                Ok((m, digest, body))
            }
            AnyManifestJson::Index(index) => {
                check_manifest_type(&refname, index.media_type.as_deref(), true)?;
                let chosen = index.manifests.iter().find(|e| {
                    e.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                });
                let Some(entry) = chosen else {
                    let available = index
                        .manifests
                        .iter()
                        .filter_map(|e| e.platform.as_ref())
                        .filter(|p| p.os != "unknown")
                        .map(|p| match &p.variant {
                            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                            None => format!("{}/{}", p.os, p.architecture),
                        })
                        .collect();
                    return Err(OciError::UnsupportedPlatform {
                        reference: refname,
                        available,
                    });
                };
                let want = parse_digest(&refname, &entry.digest)?;
                let pinned = reference.pinned(&want);
                let (body, digest) = self
                    .fetch_manifest_raw(client, &pinned.to_client(), &refname, auth, Some(&want))
                    .await?;
                match serde_json::from_slice::<AnyManifestJson>(&body) {
                    Ok(AnyManifestJson::Image(m)) => {
                        check_manifest_type(&refname, m.media_type.as_deref(), false)?;
                        Ok((m, digest, body))
                    }
                    Ok(AnyManifestJson::Index(_)) => Err(OciError::BadImage {
                        reference: refname,
                        message: "its linux/amd64 entry is another index".to_string(),
                    }),
                    Err(e) => Err(OciError::BadImage {
                        reference: refname,
                        message: format!("its linux/amd64 manifest is not valid JSON: {e}"),
                    }),
                }
            }
        }
    }

    async fn fetch_manifest_raw(
        &self,
        client: &oci_client::Client,
        cref: &oci_client::Reference,
        refname: &str,
        auth: &RegistryAuth,
        expected: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest), OciError> {
        let (body, _) = client
            .pull_manifest_raw(cref, auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| map_client_error(refname, cref.registry(), e))?;
        let digest = Digest::of(&body);
        if let Some(want) = expected {
            if want != &digest {
                return Err(OciError::DigestMismatch {
                    reference: refname.to_string(),
                    expected: want.clone(),
                    actual: digest.to_string(),
                });
            }
        }
        Ok((body, digest))
    }

    /// The image with manifest digest `d`, if it is in the store.
    pub async fn get(&self, d: &Digest) -> Result<Option<PulledImage>, OciError> {
        let _lock = self.lock(false).await?;
        self.get_locked(d)
    }

    /// The image in the store that `reference` names, without any network: by
    /// its digest when it has one, else the newest image pulled, imported or
    /// built as exactly that reference. For images that exist only on this
    /// host (built ones, `localhost/...`), this is how a reference resolves.
    pub async fn find(&self, reference: &Reference) -> Result<Option<PulledImage>, OciError> {
        let _lock = self.lock(false).await?;
        if let Some(d) = reference.digest() {
            return self.get_locked(d);
        }
        let wanted = reference.to_string();
        Ok(self
            .list_locked()?
            .into_iter()
            .rev()
            .find(|img| img.info.references.contains(&wanted)))
    }

    fn get_locked(&self, d: &Digest) -> Result<Option<PulledImage>, OciError> {
        let dir = self.image_dir(d);
        let meta = dir.join("image.json");
        let bytes = match fs::read(&meta) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OciError::io(&meta, e)),
        };
        let info: ImageInfo = serde_json::from_slice(&bytes).map_err(|e| OciError::Corrupt {
            path: meta.clone(),
            message: e.to_string(),
        })?;
        Ok(Some(PulledImage {
            rootfs: dir.join("rootfs"),
            dir,
            info,
            cached: true,
        }))
    }

    fn add_reference(&self, mut img: PulledImage, refname: &str) -> Result<PulledImage, OciError> {
        if !img.info.references.iter().any(|r| r == refname) {
            img.info.references.push(refname.to_string());
            write_json(&img.dir.join("image.json"), &img.info)?;
        }
        Ok(img)
    }

    /// Every image in the store, oldest pull first.
    pub async fn list(&self) -> Result<Vec<PulledImage>, OciError> {
        let _lock = self.lock(false).await?;
        self.list_locked()
    }

    fn list_locked(&self) -> Result<Vec<PulledImage>, OciError> {
        let images = self.dir.join("images");
        let mut out = Vec::new();
        for entry in fs::read_dir(&images).map_err(|e| OciError::io(&images, e))? {
            let entry = entry.map_err(|e| OciError::io(&images, e))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_prefix("sha256-")) else {
                continue;
            };
            let Ok(d) = format!("sha256:{hex}").parse::<Digest>() else {
                continue;
            };
            if let Some(img) = self.get_locked(&d)? {
                out.push(img);
            }
        }
        out.sort_by_key(|a| a.info.pulled_at);
        Ok(out)
    }

    /// Removes the image `d` (its blobs stay until [`Store::gc`]). Returns whether
    /// it was there. The caller makes sure no pod runs from it.
    pub async fn remove(&self, d: &Digest) -> Result<bool, OciError> {
        let _lock = self.lock(true).await?;
        self.remove_locked(d)
    }

    fn remove_locked(&self, d: &Digest) -> Result<bool, OciError> {
        let dir = self.image_dir(d);
        let trash = self
            .dir
            .join("images")
            .join(format!(".trash-{}-{}", d.hex(), unique_suffix()));
        match fs::rename(&dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(OciError::io(&dir, e)),
        }
        fs::remove_dir_all(&trash).map_err(|e| OciError::io(&trash, e))?;
        Ok(true)
    }

    /// Removes every image not in `keep`, then every blob no remaining image
    /// references, and leftovers of interrupted pulls.
    pub async fn gc(&self, keep: &[Digest]) -> Result<GcReport, OciError> {
        let _lock = self.lock(true).await?;
        let mut report = GcReport::default();
        let keep: HashSet<&Digest> = keep.iter().collect();
        let mut referenced: HashSet<Digest> = HashSet::new();
        for img in self.list_locked()? {
            if keep.contains(&img.info.manifest_digest) {
                referenced.insert(img.info.config_digest.clone());
                referenced.extend(img.info.layers.iter().cloned());
            } else if self.remove_locked(&img.info.manifest_digest)? {
                report.removed_images.push(img.info.manifest_digest.clone());
            }
        }
        let blobs = self.dir.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(|e| OciError::io(&blobs, e))? {
            let entry = entry.map_err(|e| OciError::io(&blobs, e))?;
            let path = entry.path();
            let keep_it = entry
                .file_name()
                .to_str()
                .and_then(|h| format!("sha256:{h}").parse::<Digest>().ok())
                .is_some_and(|d| referenced.contains(&d));
            if keep_it {
                continue;
            }
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(|e| OciError::io(&path, e))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|h| format!("sha256:{h}").parse::<Digest>().ok())
            {
                report.removed_blobs.push(d);
            }
            report.freed_bytes += len;
        }
        // Leftovers of pulls interrupted by a crash. No pull runs now: we hold
        // the store lock exclusively.
        let tmp = self.dir.join("blobs/tmp");
        for entry in fs::read_dir(&tmp).map_err(|e| OciError::io(&tmp, e))? {
            let path = entry.map_err(|e| OciError::io(&tmp, e))?.path();
            fs::remove_file(&path).map_err(|e| OciError::io(&path, e))?;
        }
        let images = self.dir.join("images");
        for entry in fs::read_dir(&images).map_err(|e| OciError::io(&images, e))? {
            let entry = entry.map_err(|e| OciError::io(&images, e))?;
            let name = entry.file_name();
            let leftover = name
                .to_str()
                .is_some_and(|n| n.starts_with(".scratch-") || n.starts_with(".trash-"));
            if leftover {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(|e| OciError::io(&path, e))?;
            }
        }
        Ok(report)
    }

    /// `flock` on `.lock`: shared for pulls and reads, exclusive for remove/gc.
    async fn lock(&self, exclusive: bool) -> Result<FileLock, OciError> {
        let path = self.dir.join(".lock");
        tokio::task::spawn_blocking(move || FileLock::acquire(&path, exclusive))
            .await
            .map_err(|e| OciError::io(self.dir.join(".lock"), io::Error::other(e.to_string())))?
    }
}

/// Where a pull's blobs come from.
enum BlobSource<'a> {
    /// A registry (the image's own repository).
    Registry {
        client: &'a oci_client::Client,
        cref: &'a oci_client::Reference,
    },
    /// An OCI image layout on this host.
    Layout(&'a Path),
}

/// Largest manifest or index read from an image layout.
const MAX_LAYOUT_MANIFEST_BYTES: u64 = 4 << 20;

fn layout_blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(d.hex())
}

/// Reads a small JSON blob (manifest or index) of the layout at `dir`,
/// bounded and checked against its digest.
fn read_layout_json(dir: &Path, d: &Digest, refname: &str) -> Result<Vec<u8>, OciError> {
    use std::io::Read;
    let path = layout_blob_path(dir, d);
    let f = fs::File::open(&path).map_err(|e| OciError::io(&path, e))?;
    let mut body = Vec::new();
    f.take(MAX_LAYOUT_MANIFEST_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| OciError::io(&path, e))?;
    if body.len() as u64 > MAX_LAYOUT_MANIFEST_BYTES {
        return Err(OciError::BadImage {
            reference: refname.to_string(),
            message: format!("its manifest {d} is over {MAX_LAYOUT_MANIFEST_BYTES} bytes"),
        });
    }
    let got = Digest::of(&body);
    if &got != d {
        return Err(OciError::DigestMismatch {
            reference: refname.to_string(),
            expected: d.clone(),
            actual: got.to_string(),
        });
    }
    Ok(body)
}

/// The image manifest (digest-checked) that `tag` names in the layout at `dir`;
/// an index there gives its linux/amd64 entry.
fn layout_image_manifest(
    dir: &Path,
    tag: &str,
    refname: &str,
) -> Result<(ImageManifestJson, Digest, Vec<u8>), OciError> {
    use std::io::Read;
    let bad = |message: String| OciError::BadImage {
        reference: refname.to_string(),
        message,
    };
    let index_path = dir.join("index.json");
    let f = fs::File::open(&index_path).map_err(|e| OciError::io(&index_path, e))?;
    let mut body = Vec::new();
    f.take(MAX_LAYOUT_MANIFEST_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| OciError::io(&index_path, e))?;
    if body.len() as u64 > MAX_LAYOUT_MANIFEST_BYTES {
        return Err(bad("its layout's index.json is too large".to_string()));
    }
    let index: LayoutIndexJson = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("its layout's index.json is not valid: {e}")))?;
    let entry = if tag.is_empty() && index.manifests.len() == 1 {
        index.manifests.first()
    } else {
        index.manifests.iter().find(|m| {
            m.annotations
                .get("org.opencontainers.image.ref.name")
                .is_some_and(|n| n == tag)
        })
    };
    let Some(entry) = entry else {
        return Err(OciError::NotFound {
            reference: format!("{refname} (tag `{tag}` of the layout at {})", dir.display()),
        });
    };
    let mut want = parse_digest(refname, &entry.digest)?;
    // An index at most once, then an image manifest.
    for _ in 0..2 {
        let body = read_layout_json(dir, &want, refname)?;
        let parsed: AnyManifestJson = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("its manifest is not valid JSON: {e}")))?;
        match parsed {
            AnyManifestJson::Image(m) => {
                check_manifest_type(refname, m.media_type.as_deref(), false)?;
                return Ok((m, want, body));
            }
            AnyManifestJson::Index(index) => {
                check_manifest_type(refname, index.media_type.as_deref(), true)?;
                let Some(e) = index.manifests.iter().find(|e| {
                    e.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                }) else {
                    return Err(OciError::UnsupportedPlatform {
                        reference: refname.to_string(),
                        available: index
                            .manifests
                            .iter()
                            .filter_map(|e| e.platform.as_ref())
                            .map(|p| format!("{}/{}", p.os, p.architecture))
                            .collect(),
                    });
                };
                want = parse_digest(refname, &e.digest)?;
            }
        }
    }
    Err(bad("its linux/amd64 entry is another index".to_string()))
}

/// Copies the layout blob `from` to `to` while hashing and counting; fails
/// (leaving `to` for the caller to remove) unless digest and size match.
fn copy_verified(
    from: &Path,
    to: &Path,
    refname: &str,
    digest: &Digest,
    size: u64,
) -> Result<(), OciError> {
    use std::io::{Read, Write};
    let mismatch = |actual: String| OciError::DigestMismatch {
        reference: refname.to_string(),
        expected: digest.clone(),
        actual,
    };
    let src = fs::File::open(from).map_err(|e| OciError::io(from, e))?;
    let mut src = src.take(size.saturating_add(1));
    let mut out = fs::File::create(to).map_err(|e| OciError::io(to, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done: u64 = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(OciError::io(from, e)),
        };
        done += n as u64;
        if done > size {
            return Err(mismatch(format!("more than {size} bytes")));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| OciError::io(to, e))?;
    }
    if done != size {
        return Err(mismatch(format!("{done} bytes instead of {size}")));
    }
    let got = Digest::from_sha256(hasher.finalize().into());
    if &got != digest {
        return Err(mismatch(got.to_string()));
    }
    out.sync_data().map_err(|e| OciError::io(to, e))
}

/// One pull's membership of the per-digest gate; the map entry goes when the
/// last pull of that digest leaves (also on error or cancellation).
struct InflightGate<'a> {
    map: &'a Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    digest: Digest,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> InflightGate<'a> {
    fn enter(
        map: &'a Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
        digest: &Digest,
    ) -> InflightGate<'a> {
        let gate = map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.clone())
            .or_default()
            .clone();
        InflightGate {
            map,
            digest: digest.clone(),
            gate,
        }
    }
}

impl Drop for InflightGate<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: nobody else is waiting.
        if Arc::strong_count(&self.gate) <= 2 {
            map.remove(&self.digest);
        }
    }
}

struct FileLock(#[allow(dead_code)] fs::File);

impl FileLock {
    fn acquire(path: &Path, exclusive: bool) -> Result<FileLock, OciError> {
        use std::os::fd::AsRawFd;
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| OciError::io(path, e))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let r = unsafe { libc::flock(f.as_raw_fd(), op) };
            if r == 0 {
                return Ok(FileLock(f));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(OciError::io(path, e));
            }
        }
    }
}

/// Removes a path (file or directory tree) when dropped, unless forgotten.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let r = match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
                Ok(_) => fs::remove_file(&p),
                Err(_) => Ok(()),
            };
            if let Err(e) = r {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a failed pull's leftovers");
            }
        }
    }
}

fn sync_fs(dir: &Path) -> Result<(), OciError> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(dir).map_err(|e| OciError::io(dir, e))?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(OciError::io(dir, io::Error::last_os_error()));
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    fs::write(path, bytes).map_err(|e| OciError::io(path, e))
}

/// Writes JSON atomically (temp file + rename).
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), OciError> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|e| OciError::io(path, io::Error::other(e)))?;
    let tmp = path.with_extension(format!("json.{}", unique_suffix()));
    write_file(&tmp, &bytes)?;
    fs::rename(&tmp, path).map_err(|e| OciError::io(path, e))
}

fn parse_digest(refname: &str, s: &str) -> Result<Digest, OciError> {
    s.parse().map_err(|e| OciError::BadImage {
        reference: refname.to_string(),
        message: format!(
            "it names the digest `{}`: {e}",
            s.chars().take(80).collect::<String>()
        ),
    })
}

fn is_layer_type(t: &str) -> bool {
    matches!(
        t,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

fn check_manifest_type(
    refname: &str,
    media_type: Option<&str>,
    index: bool,
) -> Result<(), OciError> {
    let ok = match media_type {
        None => true,
        Some(t) if index => ACCEPTED_MANIFESTS[..2].contains(&t),
        Some(t) => ACCEPTED_MANIFESTS[2..].contains(&t),
    };
    if ok {
        Ok(())
    } else {
        Err(OciError::UnsupportedMediaType {
            reference: refname.to_string(),
            media_type: media_type.unwrap_or_default().to_string(),
        })
    }
}

fn unpack_error(refname: &str, layer: &Digest, e: UnpackError) -> OciError {
    match e {
        UnpackError::Io { path, source } => OciError::io(path, source),
        UnpackError::Unsafe { path, reason } => OciError::UnsafeLayer {
            reference: refname.to_string(),
            layer: layer.clone(),
            path,
            reason,
        },
        UnpackError::Malformed(m) => OciError::BadImage {
            reference: refname.to_string(),
            message: format!("layer {layer} is not a readable tar archive: {m}"),
        },
    }
}

/// Classifies oci-client's errors by their typed fields (HTTP status, OCI error
/// codes, reqwest's connect/timeout flags), never by text.
fn map_client_error(refname: &str, registry: &str, e: OciDistributionError) -> OciError {
    let reference = refname.to_string();
    let registry = registry.to_string();
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => OciError::AuthRefused {
            reference,
            registry,
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                OciError::AuthRefused {
                    reference,
                    registry,
                }
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                OciError::NotFound { reference }
            } else {
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                OciError::Registry { reference, message }
            }
        }
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 | 403 => OciError::AuthRefused {
                reference,
                registry,
            },
            404 => OciError::NotFound { reference },
            _ => OciError::Registry {
                reference,
                message: format!(
                    "HTTP {code}: {}",
                    message.chars().take(500).collect::<String>()
                ),
            },
        },
        OciDistributionError::RequestError(r) => {
            if let Some(status) = r.status() {
                match status.as_u16() {
                    401 | 403 => OciError::AuthRefused {
                        reference,
                        registry,
                    },
                    404 => OciError::NotFound { reference },
                    _ => OciError::Registry {
                        reference,
                        message: r.to_string(),
                    },
                }
            } else if r.is_connect() || r.is_timeout() || r.is_request() {
                OciError::Unreachable {
                    reference,
                    registry,
                    message: error_chain(&r),
                }
            } else {
                OciError::Registry {
                    reference,
                    message: error_chain(&r),
                }
            }
        }
        OciDistributionError::DigestError(d) => match d {
            oci_client::errors::DigestError::VerificationError { expected, actual } => {
                match expected.parse::<Digest>() {
                    Ok(expected) => OciError::DigestMismatch {
                        reference,
                        expected,
                        actual,
                    },
                    Err(_) => OciError::Registry {
                        reference,
                        message: format!("digest {expected} does not match the content ({actual})"),
                    },
                }
            }
            other => OciError::Registry {
                reference,
                message: other.to_string(),
            },
        },
        OciDistributionError::UnsupportedMediaTypeError(media_type)
        | OciDistributionError::IncompatibleLayerMediaTypeError(media_type) => {
            OciError::UnsupportedMediaType {
                reference,
                media_type,
            }
        }
        other => OciError::Registry {
            reference,
            message: other.to_string(),
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

// Wire formats (only the fields used).

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AnyManifestJson {
    Index(IndexJson),
    Image(ImageManifestJson),
}

#[derive(Debug, Deserialize)]
struct LayoutIndexJson {
    manifests: Vec<LayoutEntryJson>,
}

#[derive(Debug, Deserialize)]
struct LayoutEntryJson {
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson {
    #[serde(default)]
    media_type: Option<String>,
    manifests: Vec<IndexEntryJson>,
}

#[derive(Debug, Deserialize)]
struct IndexEntryJson {
    digest: String,
    #[serde(default)]
    platform: Option<PlatformJson>,
}

#[derive(Debug, Deserialize)]
struct PlatformJson {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifestJson {
    #[serde(default)]
    media_type: Option<String>,
    config: DescriptorJson,
    layers: Vec<DescriptorJson>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorJson {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct ImageConfigJson {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<ContainerConfigJson>,
}

#[derive(Debug, Deserialize)]
struct ContainerConfigJson {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
}

impl From<ContainerConfigJson> for RuntimeConfig {
    fn from(c: ContainerConfigJson) -> RuntimeConfig {
        RuntimeConfig {
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
            entrypoint: c.entrypoint,
            cmd: c.cmd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compile-time check: the agent spawns pulls on tokio's worker threads.
    #[allow(dead_code)]
    fn futures_are_send(store: &Store, r: &Reference, c: &Credentials, d: &Digest) {
        fn is_send<T: Send>(_: T) {}
        fn is_sync<T: Sync + Send>(_: &T) {}
        is_sync(store);
        is_send(store.pull(r, c, &|_| {}));
        is_send(store.import_layout(Path::new("/x"), "t", "localhost/x", &|_| {}));
        is_send(store.resolve(r, c));
        is_send(store.gc(std::slice::from_ref(d)));
        is_send(store.list());
        is_send(store.find(r));
    }

    #[test]
    fn a_new_store_is_private_to_root() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir()?;
        let store = Store::new(tmp.path().join("a/store"), vec![])?;
        let mode = fs::metadata(store.dir())?.permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(store.dir().join("blobs/sha256").is_dir());
        assert!(store.dir().join("images").is_dir());
        Ok(())
    }

    #[test]
    fn credentials_debug_redacts_the_password() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        let s = format!("{c:?}");
        assert!(s.contains("u") && !s.contains("hunter2"), "{s}");
    }

    #[test]
    fn manifests_and_indexes_are_told_apart() -> Result<(), serde_json::Error> {
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
            "manifests":[{"digest":"sha256:aa","size":1,"mediaType":"x","platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#;
        assert!(matches!(
            serde_json::from_str::<AnyManifestJson>(index)?,
            AnyManifestJson::Index(_)
        ));
        let image = r#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:aa","size":1},"layers":[]}"#;
        assert!(matches!(
            serde_json::from_str::<AnyManifestJson>(image)?,
            AnyManifestJson::Image(_)
        ));
        Ok(())
    }

    #[test]
    fn runtime_config_keeps_unset_apart_from_empty() -> Result<(), serde_json::Error> {
        let c: ImageConfigJson = serde_json::from_str(
            r#"{"os":"linux","architecture":"amd64","config":{"Env":["A=1"],"Cmd":["sh"],"WorkingDir":"","Entrypoint":null}}"#,
        )?;
        let rc = RuntimeConfig::from(
            c.config
                .ok_or_else(|| serde::de::Error::custom("no config"))?,
        );
        assert_eq!(rc.env, vec!["A=1"]);
        assert_eq!(rc.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(rc.entrypoint, None);
        assert_eq!(rc.working_dir, None);
        Ok(())
    }
}
