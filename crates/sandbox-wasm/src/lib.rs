//! Ember's WebAssembly engine: wasmtime with a pooling instance allocator, modules
//! compiled once per content and kept on disk, and the limits every Ember function has.
//!
//! - [`WasmEngine::load`] compiles a module — or reads its compiled form from the cache
//!   directory, keyed by the module's SHA-256 and the engine's settings — and resolves its
//!   imports once ([`wasmtime::InstancePre`]), so that starting an instance is only the
//!   instantiation.
//! - [`WasmEngine::run_command`] runs a WASI command module (`_start`) in a fresh instance:
//!   the event on stdin, the answer on stdout, logs on stderr. Memory is capped by a
//!   [`wasmtime::ResourceLimiter`] (a `memory.grow` past the limit fails, as `malloc`
//!   returning `NULL`), time by epoch interruption (a busy loop is stopped on time), and a
//!   trap ends the run with its message. Nothing survives from one run to the next.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

/// How often the engine's epoch advances: the resolution of timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Instances (and so memories) the pool holds at once.
const POOL_INSTANCES: u32 = 256;

/// Largest linear memory an instance may have: all of wasm32's address space. A function's
/// own limit is enforced below this by the limiter.
const POOL_MEMORY_BYTES: usize = 4 << 30;

/// Most bytes kept of a run's stdout or stderr.
pub const OUTPUT_BYTES: usize = 6 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("the WebAssembly engine could not be set up: {0}")]
    Engine(String),
    #[error("the module is not valid WebAssembly: {0}")]
    Invalid(String),
    #[error("the module cannot run here: {0}")]
    Link(String),
    #[error("the compiled-module cache failed")]
    Cache(#[source] std::io::Error),
    #[error("the instance could not be started: {0}")]
    Instantiate(String),
}

/// A run's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most linear memory, in bytes.
    pub memory_bytes: usize,
    /// Most wall-clock time the instance may run.
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// `_start` returned (0) or the module called `proc_exit`.
    Exit(i32),
    /// The module trapped; the trap's message.
    Trap(String),
    /// Stopped at the timeout.
    Timeout,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub end: End,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Whether the module asked for more memory than its limit (and was refused).
    pub memory_limit_hit: bool,
    /// The most linear memory the instance had, in bytes.
    pub peak_memory_bytes: usize,
}

/// A module ready to instantiate.
#[derive(Clone)]
pub struct Prepared {
    pre: InstancePre<State>,
    sha256: String,
}

impl Prepared {
    /// The SHA-256 of the module's bytes, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

struct MemoryLimit {
    max: usize,
    hit: bool,
    peak: usize,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

struct State {
    wasi: WasiP1Ctx,
    limit: MemoryLimit,
}

/// The engine: one per server.
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<State>,
    cache_dir: PathBuf,
    /// The engine's settings, as part of every cache key.
    settings_key: String,
    ticking: Arc<AtomicBool>,
}

impl WasmEngine {
    /// Sets up the engine; compiled modules are kept in `cache_dir`.
    pub fn new(cache_dir: &Path) -> Result<WasmEngine, WasmError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(POOL_INSTANCES)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES)
            .max_memory_size(POOL_MEMORY_BYTES);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)
            .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        std::fs::create_dir_all(cache_dir).map_err(WasmError::Cache)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let ticking = Arc::new(AtomicBool::new(true));
        {
            let engine = engine.clone();
            let ticking = Arc::clone(&ticking);
            std::thread::Builder::new()
                .name("ember-wasm-epoch".into())
                .spawn(move || {
                    while ticking.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| WasmError::Engine(format!("could not start the epoch thread: {e}")))?;
        }
        Ok(WasmEngine {
            engine,
            linker,
            cache_dir: cache_dir.to_owned(),
            settings_key: format!("{:016x}", hasher.finish()),
            ticking,
        })
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir
            .join(format!("{sha256}-{}.cwasm", self.settings_key))
    }

    /// Compiles `bytes` (binary or text format), or reads the compiled form from the
    /// cache, and resolves its imports.
    pub fn load(&self, bytes: &[u8]) -> Result<Prepared, WasmError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let path = self.cache_path(&sha256);
        let module = match self.cached(&path) {
            Some(module) => module,
            None => {
                let module = Module::new(&self.engine, bytes)
                    .map_err(|e| WasmError::Invalid(format!("{e:#}")))?;
                self.store_compiled(&module, &path)?;
                module
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| WasmError::Link(format!("{e:#}")))?;
        Ok(Prepared { pre, sha256 })
    }

    #[allow(unsafe_code)]
    fn cached(&self, path: &Path) -> Option<Module> {
        // Read whole rather than mapped: a file changed under a mapping would bring the
        // server down (SIGBUS), a file read is only wrong or right.
        let compiled = std::fs::read(path).ok()?;
        // SAFETY: the file was written by `Module::serialize` of an engine with the same
        // settings (they are part of its name), in a directory only Ember writes; wasmtime
        // still checks its header and settings and refuses anything else.
        match unsafe { Module::deserialize(&self.engine, &compiled) } {
            Ok(module) => Some(module),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "a cached compiled module could not be read; compiling again");
                None
            }
        }
    }

    fn store_compiled(&self, module: &Module, path: &Path) -> Result<(), WasmError> {
        let compiled = module
            .serialize()
            .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, compiled).map_err(WasmError::Cache)?;
        std::fs::rename(&tmp, path).map_err(WasmError::Cache)
    }

    /// Runs a WASI command module's `_start` in a fresh instance with `input` on stdin.
    pub fn run_command(
        &self,
        module: &Prepared,
        input: &[u8],
        env: &[(String, String)],
        limits: Limits,
    ) -> Result<Outcome, WasmError> {
        let stdout = MemoryOutputPipe::new(OUTPUT_BYTES);
        let stderr = MemoryOutputPipe::new(OUTPUT_BYTES);
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input.to_vec()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .envs(env)
            .build_p1();
        let mut store = Store::new(
            &self.engine,
            State {
                wasi,
                limit: MemoryLimit {
                    max: limits.memory_bytes,
                    hit: false,
                    peak: 0,
                },
            },
        );
        store.limiter(|s| &mut s.limit);
        let ticks = limits.timeout.as_millis() / EPOCH_TICK.as_millis() + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        let end = match module.pre.instantiate(&mut store) {
            Ok(instance) => {
                let start = instance
                    .get_typed_func::<(), ()>(&mut store, "_start")
                    .map_err(|e| WasmError::Link(format!("{e:#}")))?;
                match start.call(&mut store, ()) {
                    Ok(()) => End::Exit(0),
                    Err(e) => ended(&e),
                }
            }
            // Instantiation runs the start function and data initializers: the same limits.
            Err(e) if e.downcast_ref::<Trap>().is_some() => ended(&e),
            Err(e) => return Err(WasmError::Instantiate(format!("{e:#}"))),
        };
        let limit = &store.data().limit;
        let (memory_limit_hit, peak_memory_bytes) = (limit.hit, limit.peak);
        drop(store);
        Ok(Outcome {
            end,
            stdout: stdout.contents().to_vec(),
            stderr: stderr.contents().to_vec(),
            memory_limit_hit,
            peak_memory_bytes,
        })
    }
}

fn ended(error: &wasmtime::Error) -> End {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return End::Exit(exit.0);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => End::Timeout,
        Some(trap) => End::Trap(trap.to_string()),
        None => End::Trap(format!("{error:#}")),
    }
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
