//! A pod's devcontainer features on its host: each feature's OCI artifact
//! fetched (digest-checked, with the owner's registry credentials), its
//! `dependsOn` added, all ordered ([`crate::features::order`]), unpacked
//! with the safe layer unpacker into `{pod dir}/features/NN-id/`, and the
//! script installing them written beside. The directory is bound read-only
//! at [`crate::features::FEATURES_DIR`] in the pod, where the pod's first
//! install step runs the script (so features are in place before the
//! lifecycle commands, as in a devcontainer). Nothing of a feature runs on
//! the host.
//!
//! A prepared directory is reused while the pod asks for the same features
//! (`.prepared` holds their digest); anything else prepares it anew.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pinacle_config::pinacle_yaml::FeatureRequest;
use pinacle_oci::{Reference, Store};

use crate::features::{self, FeatureMetadata, Prepared, ToOrder};
use crate::AgentError;

/// Largest feature layer fetched (real ones are kilobytes).
pub const MAX_FEATURE_BYTES: u64 = 8 << 20;

/// What a prepared directory holds.
const PREPARED_MARKER: &str = ".prepared";
/// The features' `containerEnv`, in order (JSON list of [name, value]).
const CONTAINER_ENV_FILE: &str = ".container-env.json";

/// The directory of a pod's features on the host.
pub fn dir_of(pod_dir: &Path) -> PathBuf {
    pod_dir.join("features")
}

struct Fetched {
    reference: String,
    options: BTreeMap<String, String>,
    metadata: FeatureMetadata,
    layer: Vec<u8>,
}

/// Makes `dir` hold `requested` ready to install (fetching only when it
/// does not already) and returns the features' `containerEnv` in order.
/// `registry_env` holds the owner's registry credential secrets; `report`
/// gets progress lines for the pod's events.
pub async fn prepare(
    store: &Store,
    requested: &[FeatureRequest],
    registry_env: &[String],
    dir: &Path,
    report: &(dyn Fn(String) + Send + Sync),
) -> Result<Vec<(String, String)>, AgentError> {
    let wanted = pinacle_config::resolve::features_step(requested).unwrap_or_default();
    if std::fs::read_to_string(dir.join(PREPARED_MARKER)).is_ok_and(|m| m == wanted) {
        if let Ok(text) = std::fs::read_to_string(dir.join(CONTAINER_ENV_FILE)) {
            if let Ok(env) = serde_json::from_str::<Vec<(String, String)>>(&text) {
                return Ok(env);
            }
        }
    }
    let fetched = fetch_all(store, requested, registry_env, report).await?;
    let to_order: Vec<ToOrder<'_>> = fetched.iter().map(|f| ToOrder { reference: &f.reference, metadata: &f.metadata }).collect();
    let order = features::order(&to_order, &[]).map_err(|e| AgentError::Features(e.to_string()))?;
    let mut prepared = Vec::with_capacity(order.len());
    for (n, i) in order.into_iter().enumerate() {
        let f = &fetched[i];
        let env = features::install_env(&f.reference, &f.metadata, &f.options).map_err(|e| AgentError::Features(e.to_string()))?;
        for what in &f.metadata.unsupported {
            report(format!("feature {}: `{what}` is not applied in Pinacle pods", f.reference));
        }
        prepared.push((i, Prepared { dir: features::dir_name(n, &f.metadata.id), reference: f.reference.clone(), env, container_env: f.metadata.container_env.clone() }));
    }
    // lay the directory out anew, then publish it by rename
    let scratch = dir.with_extension("new");
    remove_dir(&scratch)?;
    std::fs::create_dir_all(&scratch).map_err(AgentError::io("creating", &scratch))?;
    let mut fetched = fetched;
    let layers: Vec<(PathBuf, Vec<u8>)> = prepared.iter().map(|(i, p)| (scratch.join(&p.dir), std::mem::take(&mut fetched[*i].layer))).collect();
    tokio::task::spawn_blocking(move || -> Result<(), AgentError> {
        for (target, layer) in layers {
            std::fs::create_dir_all(&target).map_err(AgentError::io("creating", &target))?;
            let mut unpacker = pinacle_oci::unpack::Unpacker::new(target.clone());
            unpacker.apply_layer(std::io::Cursor::new(layer)).map_err(|e| AgentError::Features(format!("unpacking into {}: {e}", target.display())))?;
            unpacker.finish().map_err(|e| AgentError::Features(format!("unpacking into {}: {e}", target.display())))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| AgentError::Features(e.to_string()))??;
    let prepared: Vec<Prepared> = prepared.into_iter().map(|(_, p)| p).collect();
    let script = scratch.join("install.sh");
    std::fs::write(&script, features::install_script(&prepared)).map_err(AgentError::io("writing", &script))?;
    let container_env: Vec<(String, String)> = prepared.iter().flat_map(|p| p.container_env.iter().cloned()).collect();
    let env_file = scratch.join(CONTAINER_ENV_FILE);
    std::fs::write(&env_file, serde_json::to_vec(&container_env).unwrap_or_default()).map_err(AgentError::io("writing", &env_file))?;
    let marker = scratch.join(PREPARED_MARKER);
    std::fs::write(&marker, &wanted).map_err(AgentError::io("writing", &marker))?;
    // readable by any uid in the pod (a youki pod's root is not host root)
    let status = tokio::process::Command::new("chmod").arg("-R").arg("a+rX,go-w").arg(&scratch).status().await.map_err(AgentError::io("chmod", &scratch))?;
    if !status.success() {
        return Err(AgentError::Features(format!("chmod of {} failed", scratch.display())));
    }
    remove_dir(dir)?;
    std::fs::rename(&scratch, dir).map_err(AgentError::io("renaming", &scratch))?;
    report(format!("{} devcontainer feature(s) ready to install: {}", prepared.len(), prepared.iter().map(|p| p.reference.as_str()).collect::<Vec<_>>().join(", ")));
    Ok(container_env)
}

/// The requested features and every `dependsOn` they name (transitively),
/// fetched. Bounded by [`features::MAX_FEATURES`].
async fn fetch_all(store: &Store, requested: &[FeatureRequest], registry_env: &[String], report: &(dyn Fn(String) + Send + Sync)) -> Result<Vec<Fetched>, AgentError> {
    let mut queue: Vec<(String, BTreeMap<String, String>)> = requested.iter().map(|f| (f.id.clone(), f.options.clone())).collect();
    let mut fetched: Vec<Fetched> = Vec::new();
    let mut next = 0;
    while next < queue.len() {
        if queue.len() > features::MAX_FEATURES {
            return Err(AgentError::Features(format!("more than {} features with their dependencies", features::MAX_FEATURES)));
        }
        let (id, options) = queue[next].clone();
        next += 1;
        let reference = Reference::parse(&id).map_err(|e| AgentError::Features(format!("{id}: {e}")))?;
        let creds = crate::registry::credentials_for(registry_env, reference.registry());
        let artifact = store.fetch_artifact(&reference, &creds, features::LAYER_MEDIA_TYPE, MAX_FEATURE_BYTES).await.map_err(|e| AgentError::Features(format!("fetching feature {id}: {e}")))?;
        let archive = features::read_archive(&id, &artifact.layer).map_err(|e| AgentError::Features(e.to_string()))?;
        report(format!("fetched feature {id} ({})", artifact.manifest_digest));
        for (dep, dep_options) in &archive.metadata.depends_on {
            let known = queue.iter().any(|(q, _)| features::canonical_id(q) == features::canonical_id(dep));
            if !known {
                queue.push((dep.clone(), dep_options.clone()));
            }
        }
        fetched.push(Fetched { reference: id, options, metadata: archive.metadata, layer: artifact.layer });
    }
    Ok(fetched)
}

fn remove_dir(dir: &Path) -> Result<(), AgentError> {
    crate::rootfs::remove_tree(dir)
}

/// `NAME=value` entries of the features' `containerEnv`, `${NAME}`
/// expanded against `base` (the image's and pod's environment).
pub fn container_env_entries(container_env: &[(String, String)], base: &[String]) -> Vec<String> {
    let one = Prepared { dir: String::new(), reference: String::new(), env: Vec::new(), container_env: container_env.to_vec() };
    features::expand_container_env(&[one], base)
}
