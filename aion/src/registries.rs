//! The registry in force, swapped atomically: a reload reads and checks all
//! four files and replaces the whole version at once (requests already
//! running keep the version they started with); one with errors changes
//! nothing. The version it replaced is kept for a rollback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use pinacle_config::Diagnostics;
use serde::Serialize;

use crate::registry::{PackageText, Registry, FILES};

/// A module ready to run on a task's input (see `modules`, feature `wasm`).
pub trait RunModule: Send + Sync {
    fn call(&self, input: &serde_json::Value) -> Result<serde_json::Value, String>;
}

#[cfg(feature = "wasm")]
impl RunModule for crate::modules::Compiled {
    fn call(&self, input: &serde_json::Value) -> Result<serde_json::Value, String> {
        crate::modules::Compiled::call(self, input).map_err(|e| e.to_string())
    }
}

#[cfg(feature = "wasm")]
impl RunModule for crate::modules::Subprocess {
    fn call(&self, input: &serde_json::Value) -> Result<serde_json::Value, String> {
        crate::modules::Subprocess::call(self, input).map_err(|e| e.to_string())
    }
}

/// Where modules beyond modules.yml come from, and what runs subprocess ones.
#[derive(Clone, Default)]
pub struct ModuleEnv {
    /// Installed packages (`pinacle router module install`).
    pub packages: Option<Arc<crate::packages::PackageStore>>,
    /// The sandbox subprocess modules run in (none: they are refused).
    pub sandbox: Option<Arc<dyn crate::sandbox::ModuleSandbox>>,
    /// Where packages are fetched from and whose signatures are trusted.
    pub source: Option<Arc<crate::packages::PackageSource>>,
}

impl std::fmt::Debug for ModuleEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleEnv").field("packages", &self.packages.as_ref().map(|p| p.dir().to_path_buf())).field("sandbox", &self.sandbox.is_some()).finish()
    }
}

/// One version in force.
pub struct Loaded {
    pub registry: Registry,
    /// The modules, compiled and linked.
    pub modules: HashMap<String, Arc<dyn RunModule>>,
    /// Providers' keys read from the server's environment (never shown).
    pub env_keys: HashMap<String, String>,
    /// 1 for the first version, one more for each swap.
    pub version: u64,
    pub loaded_at: chrono::DateTime<chrono::Utc>,
    pub warnings: Diagnostics,
    /// The four files' texts it was read from (a package change rebuilds on them).
    pub texts: [Option<String>; 4],
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("version", &self.version).field("digest", &self.registry.digest).finish_non_exhaustive()
    }
}

impl Loaded {
    /// The digest's first 12 hex digits.
    pub fn short_digest(&self) -> &str {
        &self.registry.digest[..12.min(self.registry.digest.len())]
    }
}

/// A swap, for the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub from_version: u64,
    pub from_digest: String,
    pub to_version: u64,
    pub to_digest: String,
    /// The files were the same: nothing was swapped.
    pub unchanged: bool,
    /// What changed beside the files (a package installed or removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why a registry could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("reading {path}: {message}")]
    Io { path: String, message: String },
    #[error("no earlier version to roll back to")]
    NoPrevious,
}

/// The registry in force and the one before it.
pub struct Registries {
    dir: Option<PathBuf>,
    current: RwLock<Arc<Loaded>>,
    /// Held by every build-and-swap (reloads, package changes, rollbacks),
    /// so none is built on a version another replaces meanwhile.
    swaps: Mutex<()>,
    previous: Mutex<Option<Arc<Loaded>>>,
    /// The files' modification times and sizes when last read.
    stamps: Mutex<Stamps>,
    modules: ModuleHostCell,
    env: ModuleEnv,
}

/// The files' modification times and sizes (`None`: absent).
type Stamps = Vec<Option<(SystemTime, u64)>>;

fn read(dir: &Path) -> Result<([Option<String>; 4], Stamps), LoadError> {
    let mut texts: [Option<String>; 4] = Default::default();
    let mut stamps = Vec::with_capacity(4);
    for (i, name) in FILES.iter().enumerate() {
        let path = dir.join(name);
        match std::fs::metadata(&path) {
            Ok(m) => {
                if m.len() > pinacle_config::yaml::MAX_FILE_BYTES as u64 {
                    return Err(LoadError::Io { path: path.display().to_string(), message: format!("{} bytes; at most {} are read", m.len(), pinacle_config::yaml::MAX_FILE_BYTES) });
                }
                stamps.push(Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())));
                let text = std::fs::read_to_string(&path).map_err(|e| LoadError::Io { path: path.display().to_string(), message: e.to_string() })?;
                texts[i] = Some(text);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => stamps.push(None),
            Err(e) => return Err(LoadError::Io { path: path.display().to_string(), message: e.to_string() }),
        }
    }
    Ok((texts, stamps))
}

fn stamps_of(dir: &Path) -> Stamps {
    FILES.iter().map(|n| std::fs::metadata(dir.join(n)).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))).collect()
}

/// Compiles the registry's modules; a module that cannot load is an error
/// located at its manifest.
fn compile_modules(registry: &Registry, dir: Option<&Path>, host: &ModuleHostCell, env: &ModuleEnv) -> Result<HashMap<String, Arc<dyn RunModule>>, LoadError> {
    #[cfg_attr(not(feature = "wasm"), allow(unused_mut))]
    let mut out: HashMap<String, Arc<dyn RunModule>> = HashMap::new();
    let mut diags = Diagnostics::default();
    for m in registry.modules.values() {
        let at = |message: String, suggestion: Option<String>| {
            let loc = m.loc.clone().unwrap_or(crate::registry::Loc { file: "modules.yml".into(), line: 1, column: 1, path: format!("modules.{}", m.name) });
            pinacle_config::Diagnostic { severity: pinacle_config::Severity::Error, file: loc.file, line: loc.line, column: loc.column, path: loc.path, message, suggestion }
        };
        #[cfg(feature = "wasm")]
        {
            let compiled: Result<Arc<dyn RunModule>, crate::modules::ModuleError> = match m.runtime {
                crate::registry::ModuleRuntime::Subprocess => crate::modules::Subprocess::new(m, dir, env.sandbox.as_ref()).map(|s| Arc::new(s) as Arc<dyn RunModule>),
                crate::registry::ModuleRuntime::Wasm => {
                    let h = host.get().map_err(|e| LoadError::Io { path: "modules".into(), message: e })?;
                    h.compile(m, dir).map(|c| Arc::new(c) as Arc<dyn RunModule>)
                }
            };
            match compiled {
                Ok(c) => {
                    out.insert(m.name.clone(), c);
                }
                Err(e) => diags.0.push(at(e.to_string(), None)),
            }
        }
        #[cfg(not(feature = "wasm"))]
        {
            let _ = (dir, host, env);
            diags.0.push(at(format!("module {}: this server was built without WASM modules", m.name), Some("build with the cargo feature pinacle-aion/wasm, or remove the module".into())));
        }
    }
    if diags.has_errors() {
        return Err(LoadError::Invalid(diags));
    }
    Ok(out)
}

/// The module engine, made when the first module needs it.
#[derive(Default)]
struct ModuleHostCell {
    #[cfg(feature = "wasm")]
    host: std::sync::OnceLock<Arc<crate::modules::ModuleHost>>,
}

impl std::fmt::Debug for ModuleHostCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModuleHostCell")
    }
}

#[cfg(feature = "wasm")]
impl ModuleHostCell {
    fn get(&self) -> Result<&Arc<crate::modules::ModuleHost>, String> {
        if let Some(h) = self.host.get() {
            return Ok(h);
        }
        let h = crate::modules::ModuleHost::new()?;
        Ok(self.host.get_or_init(|| h))
    }
}

/// The installed packages' manifests, `extra` in place of any of its name.
fn package_texts(env: &ModuleEnv, extra: Option<&PackageText>) -> Result<Vec<PackageText>, LoadError> {
    let mut out = match &env.packages {
        Some(p) => p.installed_texts().map_err(|e| LoadError::Io { path: p.dir().display().to_string(), message: e.to_string() })?,
        None => Vec::new(),
    };
    if let Some(x) = extra {
        out.retain(|p| p.name != x.name);
        out.push(x.clone());
    }
    Ok(out)
}

fn build(texts: [Option<&str>; 4], version: u64, dir: Option<&Path>, host: &ModuleHostCell, env: &ModuleEnv, extra: Option<&PackageText>) -> Result<Loaded, LoadError> {
    let packages = package_texts(env, extra)?;
    let (registry, warnings) = Registry::parse_with(texts, &packages).map_err(LoadError::Invalid)?;
    let modules = compile_modules(&registry, dir, host, env)?;
    let mut env_keys = HashMap::new();
    for p in registry.providers.values() {
        if let Some(var) = &p.api_key_env {
            match std::env::var(var) {
                Ok(v) if !v.is_empty() => {
                    env_keys.insert(p.id.clone(), v);
                }
                _ => tracing::warn!(provider = %p.id, variable = %var, "the provider's key variable is not set"),
            }
        }
    }
    Ok(Loaded { registry, modules, env_keys, version, loaded_at: chrono::Utc::now(), warnings, texts: texts.map(|t| t.map(str::to_owned)) })
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Registries {
    /// Reads `dir`'s files (none: an empty registry, which routes nothing).
    pub fn open(dir: Option<&Path>) -> Result<Self, LoadError> {
        Self::open_with(dir, ModuleEnv::default())
    }

    /// [`Registries::open`] with installed packages and a sandbox for subprocess modules.
    pub fn open_with(dir: Option<&Path>, env: ModuleEnv) -> Result<Self, LoadError> {
        let modules = ModuleHostCell::default();
        let (texts, stamps) = match dir {
            Some(d) => read(d)?,
            None => (Default::default(), Vec::new()),
        };
        let t = [texts[0].as_deref(), texts[1].as_deref(), texts[2].as_deref(), texts[3].as_deref()];
        let loaded = match build(t, 1, dir, &modules, &env, None) {
            Ok(l) => l,
            // installed packages that no longer load (an image gone, runsc
            // removed) must not keep the server down: it starts without them
            Err(e) if env.packages.as_ref().is_some_and(|p| p.installed_texts().is_ok_and(|t| !t.is_empty())) => {
                let bare = ModuleEnv { packages: None, ..env.clone() };
                let l = build(t, 1, dir, &modules, &bare, None).map_err(|_| e.clone())?;
                tracing::error!(error = %e, "the installed module packages do not load; the router starts without them (fix them, or pinacle router module remove NAME)");
                l
            }
            Err(e) => return Err(e),
        };
        Ok(Self { dir: dir.map(Path::to_path_buf), current: RwLock::new(Arc::new(loaded)), previous: Mutex::new(None), stamps: Mutex::new(stamps), modules, env, swaps: Mutex::new(()) })
    }

    /// A registry from texts (tests, and servers without a directory);
    /// modules' sources are read relative to `module_dir`.
    pub fn from_texts(texts: [Option<&str>; 4]) -> Result<Self, LoadError> {
        Self::from_texts_in(texts, None)
    }

    /// [`Registries::from_texts`] with modules' sources relative to `module_dir`.
    pub fn from_texts_in(texts: [Option<&str>; 4], module_dir: Option<&Path>) -> Result<Self, LoadError> {
        Self::from_texts_with(texts, module_dir, ModuleEnv::default())
    }

    /// [`Registries::from_texts_in`] with a module environment.
    pub fn from_texts_with(texts: [Option<&str>; 4], module_dir: Option<&Path>, env: ModuleEnv) -> Result<Self, LoadError> {
        let modules = ModuleHostCell::default();
        let loaded = build(texts, 1, module_dir, &modules, &env, None)?;
        Ok(Self { dir: None, current: RwLock::new(Arc::new(loaded)), previous: Mutex::new(None), stamps: Mutex::new(Vec::new()), modules, env, swaps: Mutex::new(()) })
    }

    /// The installed packages, when this server keeps any.
    pub fn packages(&self) -> Option<&Arc<crate::packages::PackageStore>> {
        self.env.packages.as_ref()
    }

    /// Where packages are installed from.
    pub fn package_source(&self) -> Option<&Arc<crate::packages::PackageSource>> {
        self.env.source.as_ref()
    }

    fn current_texts(&self) -> [Option<String>; 4] {
        self.current().texts.clone()
    }

    /// Whether the registry in force, with `package` installed (in place
    /// of any of its name), loads and its modules compile. Swaps nothing.
    pub fn check_package(&self, package: &PackageText) -> Result<(), LoadError> {
        let t = self.current_texts();
        build([t[0].as_deref(), t[1].as_deref(), t[2].as_deref(), t[3].as_deref()], 0, self.dir.as_deref(), &self.modules, &self.env, Some(package)).map(|_| ())
    }

    /// Holds off every other build-and-swap while the caller changes the
    /// installed packages; [`Registries::reload_packages_locked`] then
    /// rebuilds on the change.
    pub fn lock_swaps(&self) -> std::sync::MutexGuard<'_, ()> {
        self.swaps.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Rebuilds the registry in force after packages changed (on its
    /// files as last read) and swaps it in.
    pub fn reload_packages(&self) -> Result<Change, LoadError> {
        let guard = self.lock_swaps();
        self.reload_packages_locked(&guard)
    }

    /// [`Registries::reload_packages`] under a guard the caller holds.
    pub fn reload_packages_locked(&self, _swaps: &std::sync::MutexGuard<'_, ()>) -> Result<Change, LoadError> {
        let cur = self.current();
        let t = &cur.texts;
        let next = build([t[0].as_deref(), t[1].as_deref(), t[2].as_deref(), t[3].as_deref()], cur.version + 1, self.dir.as_deref(), &self.modules, &self.env, None)?;
        if next.registry.digest == cur.registry.digest {
            return Ok(Change { from_version: cur.version, from_digest: cur.short_digest().to_owned(), to_version: cur.version, to_digest: cur.short_digest().to_owned(), unchanged: true, note: None });
        }
        Ok(self.swap(next))
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The version in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn swap(&self, next: Loaded) -> Change {
        let mut cur = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = cur.clone();
        let change = Change { from_version: old.version, from_digest: old.short_digest().to_owned(), to_version: next.version, to_digest: next.short_digest().to_owned(), unchanged: false, note: None };
        *cur = Arc::new(next);
        *self.previous.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(old);
        change
    }

    /// Re-reads the directory; swaps when the files changed and are valid.
    pub fn reload(&self) -> Result<Change, LoadError> {
        let _swaps = self.lock_swaps();
        let Some(dir) = &self.dir else { return Err(LoadError::Io { path: String::new(), message: "this server has no registry directory (--router-dir)".into() }) };
        let (texts, stamps) = read(dir)?;
        let cur = self.current();
        let next = build([texts[0].as_deref(), texts[1].as_deref(), texts[2].as_deref(), texts[3].as_deref()], cur.version + 1, Some(dir), &self.modules, &self.env, None)?;
        *self.stamps.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stamps;
        if next.registry.digest == cur.registry.digest {
            return Ok(Change { from_version: cur.version, from_digest: cur.short_digest().to_owned(), to_version: cur.version, to_digest: cur.short_digest().to_owned(), unchanged: true, note: None });
        }
        Ok(self.swap(next))
    }

    /// Replaces the registry with `texts` (an API-driven change).
    pub fn replace(&self, texts: [Option<&str>; 4]) -> Result<Change, LoadError> {
        let _swaps = self.lock_swaps();
        let next = build(texts, self.current().version + 1, None, &self.modules, &self.env, None)?;
        Ok(self.swap(next))
    }

    /// Puts the version before the current one back.
    pub fn rollback(&self) -> Result<Change, LoadError> {
        let _swaps = self.lock_swaps();
        let prev = self.previous.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take().ok_or(LoadError::NoPrevious)?;
        let mut cur = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = cur.clone();
        let change = Change { from_version: old.version, from_digest: old.short_digest().to_owned(), to_version: prev.version, to_digest: prev.short_digest().to_owned(), unchanged: false, note: None };
        *cur = prev;
        *self.previous.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(old);
        Ok(change)
    }

    /// Whether the files changed on disk since they were last read.
    pub fn changed_on_disk(&self) -> bool {
        let Some(dir) = &self.dir else { return false };
        *self.stamps.lock().unwrap_or_else(std::sync::PoisonError::into_inner) != stamps_of(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODELS: &str = "providers:\n  l:\n    kind: openai\n    url: http://127.0.0.1:1/v1\n    cloud: false\nmodels:\n  m:\n    provider: l\n    tier: local\n    price: {input: 0, output: 0}\n";

    #[test]
    fn a_bad_reload_changes_nothing_and_a_good_one_can_be_rolled_back() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("models.yml"), MODELS).expect("write");
        let r = Registries::open(Some(dir.path())).expect("open");
        let v1 = r.current();
        assert!(!r.changed_on_disk());
        std::fs::write(dir.path().join("models.yml"), MODELS.replace("price: {input: 0, output: 0}", "")).expect("write");
        assert!(r.changed_on_disk());
        assert!(matches!(r.reload(), Err(LoadError::Invalid(_))));
        assert_eq!(r.current().registry.digest, v1.registry.digest, "the old version stays");
        std::fs::write(dir.path().join("models.yml"), MODELS.replace("m:\n", "m2:\n")).expect("write");
        let c = r.reload().expect("valid");
        assert_eq!((c.from_version, c.to_version, c.unchanged), (1, 2, false));
        assert!(r.current().registry.models.contains_key("m2"));
        assert!(r.reload().expect("same").unchanged);
        r.rollback().expect("rollback");
        assert!(r.current().registry.models.contains_key("m"));
        assert_eq!(v1.registry.models.len(), 1, "a request holding the old version still has it");
    }
}
