//! The router's modules on this server: installed packages under the data
//! directory, the keys trusted to sign them, and gVisor (the host agent's
//! one-shot sandboxes) for subprocess modules.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use pinacle_aion::packages::{PackageSource, PackageStore, TrustedKey};
use pinacle_aion::registries::ModuleEnv;
use pinacle_aion::sandbox::{ModuleSandbox, SandboxError, SandboxJob};
use pinacle_host_agent::one_shot::{OneShotError, OneShotJob, OneShotSandbox};

/// The module environment of a server with data in `data_dir`.
pub fn module_env(data_dir: &Path, trusted_keys: &[PathBuf]) -> anyhow::Result<ModuleEnv> {
    let root = data_dir.join("router");
    let packages = PackageStore::open(root.join("packages")).with_context(|| format!("opening {}", root.join("packages").display()))?;
    let mut keys = Vec::new();
    for path in trusted_keys {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading --router-trusted-key {}", path.display()))?;
        keys.extend(TrustedKey::from_pem(&text).with_context(|| format!("--router-trusted-key {}", path.display()))?);
    }
    let oci = pinacle_oci::Store::new(root.join("oci"), pinacle_host_agent::agent::insecure_registries_from_env()).context("opening the router's package cache")?;
    let sandbox: Option<Arc<dyn ModuleSandbox>> = match pinacle_host_agent::agent::find_binary("runsc") {
        Some(runsc) => {
            let images = pinacle_host_agent::ImageStore::new(pinacle_host_agent::DataLayout::new(data_dir).images());
            let one_shot = OneShotSandbox::new(runsc, root.join("runsc"), root.join("oneshot"), images).context("preparing the module sandbox")?;
            Some(Arc::new(Gvisor(one_shot)))
        }
        None => None,
    };
    Ok(ModuleEnv { packages: Some(Arc::new(packages)), sandbox, source: Some(Arc::new(PackageSource { oci, keys })) })
}

/// The router's sandbox seam over the host agent's one-shot runner.
struct Gvisor(OneShotSandbox);

impl ModuleSandbox for Gvisor {
    fn check_image(&self, image: &str) -> Result<(), String> {
        self.0.check_image(image).map(|_| ()).map_err(|e| e.to_string())
    }

    fn run(&self, job: &SandboxJob<'_>, input: &[u8]) -> Result<Vec<u8>, SandboxError> {
        let one = OneShotJob { image: job.image, files: job.files, command: job.command, memory_mb: job.memory_mb, timeout: job.timeout, max_output: job.max_output };
        self.0.run(&one, input).map_err(|e| match e {
            OneShotError::Timeout(_) => SandboxError::Timeout,
            OneShotError::OutputTooLarge(n) => SandboxError::OutputTooLarge(n),
            OneShotError::Exited { status, stderr } => SandboxError::Exited { status, stderr },
            other => SandboxError::Unavailable(other.to_string()),
        })
    }
}
