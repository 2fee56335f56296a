//! `pinacle image`: the images on this host. Images the host builds
//! (`base`, `base-bookworm`, `busybox`, the templates') and images pulled
//! from registries (content-addressed, in `{data}/oci`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reqwest::Method;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build an image: base (Debian 13 via debootstrap), base-bookworm
    /// (Debian 12), busybox (tiny), a template's (node, vite, nextjs, python,
    /// rust), your own from a recipe (a Dockerfile subset: FROM an image
    /// here, RUN, COPY, ENV, WORKDIR), or from a Dockerfile with full syntax
    /// (--dockerfile: built by buildah, RUN steps in gVisor; the image is
    /// stored as localhost/pinacle/NAME and printed pinned, for `image:`).
    Build {
        name: String,
        /// Rebuild even if it exists.
        #[arg(long)]
        force: bool,
        /// Build NAME from this recipe; COPY reads from its directory.
        #[arg(long, value_name = "FILE", conflicts_with = "dockerfile")]
        recipe: Option<PathBuf>,
        /// Build NAME from this Dockerfile with buildah. Base images from
        /// registries named in PINACLE_INSECURE_REGISTRIES are pulled over
        /// plain HTTP; credentials come from {P}_CONTAINER_REGISTRY_SERVER,
        /// _USER and _PASSWORD environment variables.
        #[arg(long, value_name = "FILE")]
        dockerfile: Option<PathBuf>,
        /// The build context (default: the Dockerfile's directory).
        #[arg(long, value_name = "DIR", requires = "dockerfile")]
        context: Option<PathBuf>,
        /// A build argument (repeatable).
        #[arg(long = "build-arg", value_name = "NAME=VALUE", requires = "dockerfile")]
        build_args: Vec<String>,
        /// The stage to build (default: the last).
        #[arg(long, requires = "dockerfile")]
        target: Option<String>,
        /// The network RUN steps see: none (default) or host.
        #[arg(long, value_name = "none|host", default_value = "none", requires = "dockerfile")]
        network: String,
        /// Where RUN steps run: gvisor (default) or runc.
        #[arg(long, value_name = "gvisor|runc", default_value = "gvisor", requires = "dockerfile")]
        isolation: String,
        #[arg(long, env = "PINACLE_DATA_DIR", default_value_os_t = crate::up::default_data_dir())]
        data_dir: PathBuf,
    },
    /// Pull an image from a registry into this host's store (any OCI
    /// reference: `python:3.13`, `ghcr.io/owner/image:tag`, `…@sha256:…`).
    /// Plain-HTTP registries must be listed in PINACLE_INSECURE_REGISTRIES.
    Pull {
        reference: String,
        /// Registry user name; the password or token comes from the
        /// PINACLE_REGISTRY_PASSWORD environment variable.
        #[arg(long)]
        username: Option<String>,
        #[arg(long, env = "PINACLE_DATA_DIR", default_value_os_t = crate::up::default_data_dir())]
        data_dir: PathBuf,
    },
    /// List built and pulled images.
    List {
        #[arg(long, env = "PINACLE_DATA_DIR", default_value_os_t = crate::up::default_data_dir())]
        data_dir: PathBuf,
    },
    /// Remove a pulled image (reference or digest) that no running pod uses;
    /// its layers go with the next `gc` unless another image shares them.
    Remove {
        image: String,
        #[arg(long, env = "PINACLE_DATA_DIR", default_value_os_t = crate::up::default_data_dir())]
        data_dir: PathBuf,
    },
    /// Remove pulled images no pod uses and the layers only they held
    /// (asks the server, which knows every pod).
    Gc,
}

fn registry_store(data_dir: &std::path::Path) -> Result<pinacle_oci::Store> {
    let dir = data_dir.join("oci");
    pinacle_oci::Store::new(&dir, pinacle_host_agent::agent::insecure_registries_from_env()).with_context(|| format!("opening {}", dir.display()))
}

/// The digest `image` names in `store`: a digest, a pinned reference, or a
/// reference some pulled image was pulled as.
async fn find_pulled(store: &pinacle_oci::Store, image: &str) -> Result<pinacle_oci::Digest> {
    if let Ok(d) = image.parse::<pinacle_oci::Digest>() {
        return Ok(d);
    }
    let reference = pinacle_oci::Reference::parse(image)?;
    if let Some(d) = reference.digest() {
        return Ok(d.clone());
    }
    let wanted = reference.to_string();
    for img in store.list().await? {
        if img.info.references.contains(&wanted) {
            return Ok(img.info.manifest_digest);
        }
    }
    bail!("no pulled image is {wanted}; see `pinacle image list`")
}

pub async fn image(cmd: ImageCommand) -> Result<ExitCode> {
    match cmd {
        ImageCommand::Build { name, dockerfile: Some(file), context, build_args, target, network, isolation, data_dir, .. } => {
            build_dockerfile(&name, &file, context, &build_args, target, &network, &isolation, &data_dir).await?;
        }
        ImageCommand::Build { name, force, recipe, data_dir, .. } => {
            let store = pinacle_host_agent::ImageStore::new(pinacle_host_agent::DataLayout::new(&data_dir).images());
            let pb = crate::pods::spinner(format!("building image {name}"));
            let pb2 = pb.clone();
            let label = name.clone();
            let progress = move |line: &str| pb2.set_message(format!("{label}: {line}"));
            let result = match recipe {
                Some(file) => {
                    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                    let dir = file.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
                    store.build_recipe(&name, &text, pinacle_host_agent::images::RecipeContext::Dir(dir), force, &progress).await
                }
                None => store.build(&name, force, &progress).await,
            };
            pb.finish_and_clear();
            let info = result?;
            println!("image {} ready: {} MiB ({})", info.name, info.size_bytes >> 20, info.source);
        }
        ImageCommand::Pull { reference, username, data_dir } => {
            let store = registry_store(&data_dir)?;
            let parsed = pinacle_oci::Reference::parse(&reference)?;
            let creds = match username {
                Some(username) => {
                    let password = std::env::var("PINACLE_REGISTRY_PASSWORD").context("--username needs the password or token in PINACLE_REGISTRY_PASSWORD")?;
                    pinacle_oci::Credentials::Basic { username, password }
                }
                None => pinacle_oci::Credentials::Anonymous,
            };
            let bars = PullBars::default();
            let report = bars.clone();
            let pulled = store.pull(&parsed, &creds, &move |p| report.update(&p)).await;
            bars.finish();
            let img = pulled?;
            let how = if img.cached { "already here" } else { "pulled" };
            println!("{} {how}: {} ({} layers, {} MiB)", parsed, img.info.pinned, img.info.layers.len(), img.info.size >> 20);
        }
        ImageCommand::List { data_dir } => {
            let store = pinacle_host_agent::ImageStore::new(pinacle_host_agent::DataLayout::new(&data_dir).images());
            println!("{:<40} {:>9} SOURCE", "NAME", "SIZE");
            for i in store.list()? {
                println!("{:<40} {:>5} MiB {}", i.name, i.size_bytes >> 20, i.source);
            }
            if data_dir.join("oci").is_dir() {
                for img in registry_store(&data_dir)?.list().await? {
                    let name = img.info.references.first().cloned().unwrap_or_else(|| img.info.pinned.clone());
                    println!("{:<40} {:>5} MiB {} (pulled {})", name, img.info.size >> 20, img.info.manifest_digest, img.info.pulled_at.format("%Y-%m-%d %H:%M"));
                }
            }
        }
        ImageCommand::Remove { image, data_dir } => {
            let store = registry_store(&data_dir)?;
            let digest = find_pulled(&store, &image).await?;
            let rootfs = store.image_dir(&digest).join("rootfs");
            let users = pinacle_host_agent::rootfs::overlays_over(&rootfs);
            if users > 0 {
                bail!("image {digest} is the root file system of {users} running pod(s); stop them first");
            }
            if store.remove(&digest).await? {
                println!("removed {digest}; run `pinacle image gc` to free layers no image uses");
            } else {
                bail!("no pulled image {digest}");
            }
        }
        ImageCommand::Gc => {
            let c = crate::client::Client::new(crate::config::load()?)?;
            let v = c.json(Method::POST, "/admin/images/gc", None).await?;
            println!(
                "removed {} image(s) and {} layer(s), {} MiB freed",
                v["removed_images"].as_array().map_or(0, Vec::len),
                v["removed_blobs"].as_u64().unwrap_or(0),
                v["freed_bytes"].as_u64().unwrap_or(0) >> 20
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The reference a Dockerfile-built image is recorded as: NAME alone becomes
/// `localhost/pinacle/NAME:latest`; a full reference is taken as it is.
fn built_image_name(name: &str) -> Result<String> {
    let full = if pinacle_oci::looks_like_registry_reference(name) { name.to_owned() } else { format!("localhost/pinacle/{name}:latest") };
    Ok(pinacle_oci::Reference::parse(&full).with_context(|| format!("{name:?} cannot name an image"))?.to_string())
}

/// Registry credentials from `{P}_CONTAINER_REGISTRY_SERVER`/`_USER`/`_PASSWORD`
/// variables in this process's environment (as pods take them from secrets).
fn registry_credentials_from_env() -> Vec<(String, pinacle_oci::Credentials)> {
    let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    let mut out = Vec::new();
    for (k, server) in std::env::vars() {
        if !k.ends_with("_CONTAINER_REGISTRY_SERVER") {
            continue;
        }
        let host = server.trim().trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/').to_ascii_lowercase();
        let creds = pinacle_host_agent::registry::credentials_for(&env, &host);
        if creds != pinacle_oci::Credentials::Anonymous {
            out.push((host, creds));
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn build_dockerfile(
    name: &str,
    file: &std::path::Path,
    context: Option<PathBuf>,
    build_args: &[String],
    target: Option<String>,
    network: &str,
    isolation: &str,
    data_dir: &std::path::Path,
) -> Result<()> {
    use pinacle_host_agent::dockerfile::{BuildNetwork, BuildRequest, Isolation};
    let image = built_image_name(name)?;
    let dockerfile = std::path::absolute(file).with_context(|| format!("{}", file.display()))?;
    let context = match context {
        Some(c) => c,
        None => dockerfile.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")),
    };
    let build_args = build_args
        .iter()
        .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).with_context(|| format!("--build-arg {kv:?} is not NAME=VALUE")))
        .collect::<Result<Vec<_>>>()?;
    let network = match network {
        "none" => BuildNetwork::None,
        "host" => BuildNetwork::Host,
        other => bail!("--network {other:?}: use none or host"),
    };
    let isolation = match isolation {
        "gvisor" => Isolation::Gvisor,
        "runc" => Isolation::Runc,
        other => bail!("--isolation {other:?}: use gvisor or runc"),
    };
    let req = BuildRequest {
        context_dir: context,
        dockerfile,
        name: image.clone(),
        build_args,
        target,
        insecure_registries: pinacle_host_agent::agent::insecure_registries_from_env(),
        credentials: registry_credentials_from_env(),
        isolation,
        network,
    };
    let store = registry_store(data_dir)?;
    let pb = crate::pods::spinner(format!("building {image}"));
    let pb2 = pb.clone();
    let started = std::time::Instant::now();
    // Every line of the build's log, above the spinner (or on stderr when it is hidden).
    let log = move |line: &str| {
        if pb2.is_hidden() {
            eprintln!("{line}");
        } else {
            pb2.println(line);
        }
    };
    let built = pinacle_host_agent::dockerfile::build(&store, &req, &log).await;
    pb.finish_and_clear();
    let img = built?;
    println!("image {image} built in {:.1?} ({} layers, {} MiB)", started.elapsed(), img.info.layers.len(), img.info.disk_usage >> 20);
    println!("{}", img.info.pinned);
    Ok(())
}

/// One progress bar per layer of a pull.
#[derive(Clone, Default)]
struct PullBars {
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<usize, ProgressBar>>>,
}

impl PullBars {
    fn update(&self, p: &pinacle_oci::PullProgress) {
        use pinacle_oci::PullPhase;
        let Some(layer) = &p.layer else {
            if p.phase == PullPhase::Resolving {
                let _ = self.multi.println(format!("resolving {}", p.reference));
            }
            return;
        };
        let Ok(mut bars) = self.bars.lock() else { return };
        let bar = bars.entry(layer.index).or_insert_with(|| {
            let pb = self.multi.add(ProgressBar::new(layer.total));
            pb.set_style(
                ProgressStyle::with_template("{prefix} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let short = layer.digest.hex().get(..12).unwrap_or_default().to_owned();
            pb.set_prefix(format!("layer {}/{} {short}", layer.index + 1, layer.count));
            pb
        });
        match p.phase {
            PullPhase::Downloading => {
                bar.set_position(layer.done);
                bar.set_message("downloading");
            }
            PullPhase::Cached => {
                bar.set_position(layer.total);
                bar.set_message("already here");
            }
            PullPhase::Unpacking => {
                bar.set_position(layer.total);
                bar.set_message("unpacking");
            }
            PullPhase::Resolving | PullPhase::Done => {}
        }
    }

    fn finish(&self) {
        if let Ok(bars) = self.bars.lock() {
            for bar in bars.values() {
                bar.finish();
            }
        }
    }
}
