//! Modules: AgentPackage manifests with `runtime: wasm`, run in wasmtime
//! (cargo feature `wasm`).
//!
//! **What a module is.** A core WebAssembly module (`.wasm`, or `.wat` text)
//! exporting `memory`, `alloc(len: i32) -> i32` and `run(ptr: i32, len:
//! i32) -> i64`: the router writes the input JSON at `alloc`'s pointer and
//! calls `run`, which answers its output JSON as `ptr << 32 | len`. An
//! intent's modules run on each task's input before anything is decided:
//! `{"intent", "messages"}` in, and `{"messages"}` (the messages to use
//! instead) or `{"refuse": "why"}` out. Input and output are checked
//! against the manifest's JSON schemas.
//!
//! **Limits.** Each call gets a fresh instance (from a pre-linked
//! `InstancePre`) in its own store: linear memory capped at the manifest's
//! `memory_mb` (`StoreLimits`), CPU bounded by `fuel`, wall time by an
//! epoch deadline (a ticker advances the engine's epoch every millisecond,
//! so a runaway loop is stopped within its timeout and a tick or two).
//! WASI preview 1 with nothing granted: no preopened directory but those
//! the manifest lists (read-only), no environment, no arguments, stdin
//! closed, output discarded. Preview 1 cannot open sockets; a module that
//! imports the socket calls, or a manifest that asks for network access,
//! is refused when the registry is loaded. So is a module importing
//! anything but WASI.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;
use wasmtime::{Config, Engine, InstancePre, Linker, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::registry::{Module as Manifest, ModuleRuntime};

/// Largest input or output a module exchanges.
pub const MAX_IO_BYTES: usize = 1 << 20;

/// How often the engine's epoch advances (the wall-time deadline's unit).
pub const TICK: Duration = Duration::from_millis(1);

/// Why a module could not be loaded or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// Refused when the registry is loaded.
    #[error("module {module}: {message}")]
    Load { module: String, message: String },
    /// The input or output does not match the manifest's schema.
    #[error("module {module}: its {side} does not match its schema: {message}")]
    Schema { module: String, side: &'static str, message: String },
    #[error("module {module} ran past its {limit}")]
    Limit { module: String, limit: &'static str },
    /// It trapped, or answered something that is not its protocol.
    #[error("module {module} failed: {message}")]
    Failed { module: String, message: String },
}

/// The engine all modules share, and its epoch ticker.
pub struct ModuleHost {
    engine: Engine,
}

impl std::fmt::Debug for ModuleHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModuleHost")
    }
}

impl ModuleHost {
    pub fn new() -> Result<Arc<Self>, String> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        cfg.consume_fuel(true);
        let engine = Engine::new(&cfg).map_err(|e| e.to_string())?;
        let host = Arc::new(Self { engine });
        // the ticker stops once the host is gone
        let weak: Weak<Self> = Arc::downgrade(&host);
        std::thread::Builder::new()
            .name("aion-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(h) => h.engine.increment_epoch(),
                    None => return,
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(host)
    }

    /// Compiles and links `m` (its source relative to `dir`), refusing what
    /// the module's sandbox does not allow.
    pub fn compile(self: &Arc<Self>, m: &Manifest, dir: Option<&Path>) -> Result<Compiled, ModuleError> {
        let load = |message: String| ModuleError::Load { module: m.name.clone(), message };
        if m.runtime != ModuleRuntime::Wasm {
            return Err(load("runtime: subprocess needs the host's sandbox (see Subprocess::new)".into()));
        }
        if !m.network.is_empty() {
            return Err(load("network access is not supported for wasm modules (WASI preview 1 cannot open sockets); remove permissions.network".into()));
        }
        if m.source.contains("://") || m.source.starts_with("oci:") {
            return Err(load("a registry reference is not a source; install it with `pinacle router module install REF`".into()));
        }
        let path = match dir {
            Some(d) => d.join(&m.source),
            None => Path::new(&m.source).to_path_buf(),
        };
        let bytes = std::fs::read(&path).map_err(|e| load(format!("reading {}: {e}", path.display())))?;
        let module = wasmtime::Module::new(&self.engine, &bytes).map_err(|e| load(format!("not a valid module: {e:#}")))?;
        for import in module.imports() {
            let (from, name) = (import.module(), import.name());
            if from != "wasi_snapshot_preview1" {
                return Err(load(format!("it imports {from}.{name}; modules may import WASI preview 1 only")));
            }
            if name.starts_with("sock_") {
                return Err(load(format!("it imports {from}.{name} (network), which its manifest does not grant")));
            }
        }
        for export in ["memory", "alloc", "run"] {
            if module.get_export(export).is_none() {
                return Err(load(format!("it does not export {export:?}; a module exports memory, alloc(len) and run(ptr, len)")));
            }
        }
        for dir in &m.filesystem {
            if !Path::new(dir).is_dir() {
                return Err(load(format!("permissions.filesystem names {dir}, which is not a directory")));
            }
        }
        let mut linker: Linker<State> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi).map_err(|e| load(e.to_string()))?;
        let pre = linker.instantiate_pre(&module).map_err(|e| load(format!("{e:#}")))?;
        Ok(Compiled { host: self.clone(), pre, manifest: m.clone(), schemas: Schemas::of(m)? })
    }
}

struct State {
    wasi: WasiP1Ctx,
    limits: Limiter,
}

/// The store's limits, remembering whether a memory growth was refused
/// (so the failure is named for what it was, not read from its text).
struct Limiter {
    inner: StoreLimits,
    memory_refused: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let ok = self.inner.memory_growing(current, desired, maximum)?;
        if !ok {
            self.memory_refused = true;
            return Err(wasmtime::Error::msg("the module's memory limit"));
        }
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A module ready to run.
pub struct Compiled {
    host: Arc<ModuleHost>,
    pre: InstancePre<State>,
    pub manifest: Manifest,
    schemas: Schemas,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiled({})", self.manifest.name)
    }
}

fn schema_errors(v: &jsonschema::Validator, value: &Value) -> Option<String> {
    let errors: Vec<String> = v.iter_errors(value).take(3).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// A module's input and output schemas, and the checks every runtime
/// makes on both sides of a call.
struct Schemas {
    input: Option<jsonschema::Validator>,
    output: Option<jsonschema::Validator>,
}

impl Schemas {
    fn of(m: &Manifest) -> Result<Self, ModuleError> {
        let load = |message: String| ModuleError::Load { module: m.name.clone(), message };
        let input = m.input_schema.as_ref().map(|s| jsonschema::validator_for(s).map_err(|e| load(format!("input_schema: {e}")))).transpose()?;
        let output = m.output_schema.as_ref().map(|s| jsonschema::validator_for(s).map_err(|e| load(format!("output_schema: {e}")))).transpose()?;
        Ok(Self { input, output })
    }

    /// The input, checked and serialised (within [`MAX_IO_BYTES`]).
    fn input(&self, m: &Manifest, input: &Value) -> Result<Vec<u8>, ModuleError> {
        if let Some(v) = &self.input {
            if let Some(e) = schema_errors(v, input) {
                return Err(ModuleError::Schema { module: m.name.clone(), side: "input", message: e });
            }
        }
        let failed = |message: String| ModuleError::Failed { module: m.name.clone(), message };
        let bytes = serde_json::to_vec(input).map_err(|e| failed(e.to_string()))?;
        if bytes.len() > MAX_IO_BYTES {
            return Err(failed(format!("the input is {} bytes; at most {MAX_IO_BYTES} are passed", bytes.len())));
        }
        Ok(bytes)
    }

    /// The answer, parsed and checked.
    fn output(&self, m: &Manifest, out: &[u8]) -> Result<Value, ModuleError> {
        let value: Value = serde_json::from_slice(out).map_err(|e| ModuleError::Failed { module: m.name.clone(), message: format!("its answer is not JSON: {e}") })?;
        if let Some(v) = &self.output {
            if let Some(e) = schema_errors(v, &value) {
                return Err(ModuleError::Schema { module: m.name.clone(), side: "output", message: e });
            }
        }
        Ok(value)
    }
}

impl Compiled {
    /// Runs the module on `input` (blocking: call it off the async runtime).
    pub fn call(&self, input: &Value) -> Result<Value, ModuleError> {
        let m = &self.manifest;
        let failed = |message: String| ModuleError::Failed { module: m.name.clone(), message };
        let bytes = self.schemas.input(m, input)?;
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        for dir in &m.filesystem {
            wasi.preopened_dir(dir, dir, wasmtime_wasi::FsPerms::ReadOnly).map_err(|e| failed(e.to_string()))?;
        }
        let limits = Limiter { inner: StoreLimitsBuilder::new().memory_size((m.memory_mb as usize) << 20).instances(1).tables(4).memories(1).build(), memory_refused: false };
        let mut store = Store::new(&self.host.engine, State { wasi: wasi.build_p1(), limits });
        store.limiter(|s| &mut s.limits);
        store.set_fuel(m.fuel).map_err(|e| failed(e.to_string()))?;
        store.set_epoch_deadline(m.timeout_ms.max(1));
        store.epoch_deadline_trap();
        let classify = |store: &Store<State>, e: wasmtime::Error| -> ModuleError {
            match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => ModuleError::Limit { module: m.name.clone(), limit: "time limit" },
                Some(wasmtime::Trap::OutOfFuel) => ModuleError::Limit { module: m.name.clone(), limit: "fuel" },
                _ if store.data().limits.memory_refused => ModuleError::Limit { module: m.name.clone(), limit: "memory limit" },
                _ => ModuleError::Failed { module: m.name.clone(), message: format!("{e:#}") },
            }
        };
        let instance = self.pre.instantiate(&mut store).map_err(|e| classify(&store, e))?;
        let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| failed("no memory".into()))?;
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, "alloc").map_err(|e| failed(format!("alloc: {e}")))?;
        let run = instance.get_typed_func::<(i32, i32), i64>(&mut store, "run").map_err(|e| failed(format!("run: {e}")))?;
        let len = i32::try_from(bytes.len()).map_err(|_| failed("input too large".into()))?;
        let ptr = alloc.call(&mut store, len).map_err(|e| classify(&store, e))?;
        memory.write(&mut store, ptr as u32 as usize, &bytes).map_err(|_| failed("alloc returned memory out of bounds".into()))?;
        let packed = run.call(&mut store, (ptr, len)).map_err(|e| classify(&store, e))?;
        let (out_ptr, out_len) = ((packed as u64 >> 32) as usize, (packed as u64 & 0xffff_ffff) as usize);
        if out_len > MAX_IO_BYTES {
            return Err(failed(format!("it answered {out_len} bytes; at most {MAX_IO_BYTES} are read")));
        }
        let mut out = vec![0u8; out_len];
        memory.read(&store, out_ptr, &mut out).map_err(|_| failed("its answer points outside its memory".into()))?;
        self.schemas.output(m, &out)
    }
}

/// A subprocess module: its program runs in the host's sandbox (gVisor,
/// like pods) with no network, its input JSON on standard input and its
/// answer JSON read from standard output, both checked against the
/// manifest's schemas.
pub struct Subprocess {
    sandbox: Arc<dyn crate::sandbox::ModuleSandbox>,
    files: std::path::PathBuf,
    image: String,
    pub manifest: Manifest,
    schemas: Schemas,
}

impl std::fmt::Debug for Subprocess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subprocess({})", self.manifest.name)
    }
}

/// The image a subprocess module runs in when its manifest names none.
pub const DEFAULT_SUBPROCESS_IMAGE: &str = "busybox";

impl Subprocess {
    /// Checks `m` (its files relative to `dir`) and readies it to run in `sandbox`.
    pub fn new(m: &Manifest, dir: Option<&Path>, sandbox: Option<&Arc<dyn crate::sandbox::ModuleSandbox>>) -> Result<Self, ModuleError> {
        let load = |message: String| ModuleError::Load { module: m.name.clone(), message };
        let sandbox = sandbox.ok_or_else(|| load("this server has no sandbox for subprocess modules (it needs runsc; start it with a local host agent)".into()))?;
        if !m.network.is_empty() {
            return Err(load("network access for subprocess modules is not supported yet (their sandbox has no network); remove permissions.network".into()));
        }
        if !m.filesystem.is_empty() {
            return Err(load("permissions.filesystem is for wasm modules; a subprocess module reads its own files at /module".into()));
        }
        let files = match dir {
            Some(d) => d.join(&m.source),
            None => Path::new(&m.source).to_path_buf(),
        };
        if !files.is_dir() {
            return Err(load(format!("source {} is not a directory (a subprocess module's files are mounted at /module)", files.display())));
        }
        let image = m.image.clone().unwrap_or_else(|| DEFAULT_SUBPROCESS_IMAGE.to_owned());
        sandbox.check_image(&image).map_err(|e| load(format!("image {image:?}: {e}")))?;
        Ok(Self { sandbox: sandbox.clone(), files, image, manifest: m.clone(), schemas: Schemas::of(m)? })
    }

    /// Runs the module on `input` (blocking: call it off the async runtime).
    pub fn call(&self, input: &Value) -> Result<Value, ModuleError> {
        use crate::sandbox::{SandboxError, SandboxJob};
        let m = &self.manifest;
        let bytes = self.schemas.input(m, input)?;
        let job = SandboxJob { image: &self.image, files: &self.files, command: &m.command, memory_mb: m.memory_mb, timeout: Duration::from_millis(m.timeout_ms), max_output: MAX_IO_BYTES };
        let out = self.sandbox.run(&job, &bytes).map_err(|e| match e {
            SandboxError::Timeout => ModuleError::Limit { module: m.name.clone(), limit: "time limit" },
            other => ModuleError::Failed { module: m.name.clone(), message: other.to_string() },
        })?;
        self.schemas.output(m, &out)
    }
}
