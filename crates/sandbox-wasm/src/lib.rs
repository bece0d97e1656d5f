//! Ember's WebAssembly engine: wasmtime with a pooling instance allocator, modules
//! compiled once per content and kept on disk, and the limits every Ember function has.
//!
//! - [`WasmEngine::load`] compiles a module — or reads its compiled form from the cache
//!   directory, keyed by the module's SHA-256 and the engine's settings — and resolves its
//!   imports once ([`wasmtime::InstancePre`]), so that starting an instance is only the
//!   instantiation.
//! - Core modules get WASI preview 1, components WASI 0.2 (`component.rs`).
//! - [`WasmEngine::run_command`] runs a WASI command (a module's `_start`, a component's
//!   `wasi:cli/run`) in a fresh instance: the event on stdin, the answer on stdout, logs on
//!   stderr. [`WasmEngine::serve`] hands an HTTP request to a component exporting
//!   `wasi:http/incoming-handler` in a fresh instance. Memory is capped by a
//!   [`wasmtime::ResourceLimiter`] (a `memory.grow` past the limit fails, as `malloc`
//!   returning `NULL`), time by epoch interruption (a busy loop is stopped on time), and a
//!   trap ends the run with its message. Nothing survives from one run to the next.
//! - Runs are async on the caller's executor: guest code yields back to it at every epoch
//!   tick, so a busy module shares a worker thread instead of holding it.
//! - [`WasmBackend`] makes the engine an Ember sandbox backend (`backend.rs`).

mod backend;
mod capture;
mod component;
mod egress;
mod event;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{
    Config, Enabled, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    ModuleExport, PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

pub use backend::WasmBackend;
use capture::Capture;
use component::{Exports, Host};
pub use component::{HttpAnswer, Served};

/// How often the engine's epoch advances: the resolution of timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Instances (and so memories and async stacks) the pool holds at once: the most
/// invocations of wasm functions that can run at the same time.
pub const POOL_INSTANCES: u32 = 1000;

/// Bytes of a slot's memory (and of its table) reset in place and kept resident between
/// instances: an unused slot holds at most this much of its memory. Slots are used
/// progressively, up to all of [`POOL_INSTANCES`] (see `max_unused_warm_slots`), so the
/// pool's idle memory is at most this much per slot its instances touched.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// Largest linear memory an instance may have: all of wasm32's address space. A function's
/// own limit is enforced below this by the limiter.
const POOL_MEMORY_BYTES: usize = 4 << 30;

/// Most bytes kept of a run's stdout (the response) or stderr (its log); past them the
/// guest's writes are counted and dropped.
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
    #[error("the module's initialization ({INIT_EXPORT}) failed: {0}")]
    Init(String),
    #[error(
        "the module is not a WASI command: it exports no `{START_EXPORT}` function taking and returning nothing (build it as a command, e.g. clang --target=wasm32-wasi with a main function)"
    )]
    NotCommand,
}

/// The export that names a module's initialization function (wizer's convention): run once
/// when the module is loaded, its state becomes the module every instance starts from.
pub const INIT_EXPORT: &str = "wizer.initialize";

/// A WASI command's entry point.
const START_EXPORT: &str = "_start";

/// How long a module's initialization may run.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much linear memory a module's initialization may use.
pub const INIT_MEMORY_BYTES: usize = 2 << 30;

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

/// Most bytes kept of a run's stderr: what one invocation may put in its log.
pub const LOG_BYTES: usize = 1024 * 1024;

/// What one run is given besides its module.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    /// Its stdin: handed over, not copied (a copy of a buffer the caller built would make it
    /// shared, at the cost of an allocation and atomic counts on every call).
    pub input: Bytes,
    /// Its `argv`, program name first.
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    /// A host directory the guest sees, read-write, as `/tmp`.
    pub tmp: Option<&'a Path>,
    /// A host directory the guest sees, read-only, as `/var/task` (the package).
    pub task: Option<&'a Path>,
    /// Whether a component's outgoing HTTP requests may leave, to other hosts.
    pub egress: bool,
    pub limits: Limits,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub end: End,
    pub stdout: Bytes,
    /// Bytes written to stdout past [`OUTPUT_BYTES`], dropped.
    pub stdout_dropped: u64,
    pub stderr: Bytes,
    /// Bytes written to stderr past [`LOG_BYTES`], dropped.
    pub stderr_dropped: u64,
    /// Whether the module asked for more memory than its limit (and was refused).
    pub memory_limit_hit: bool,
    /// The most linear memory the instance had, in bytes.
    pub peak_memory_bytes: usize,
    /// What an HTTP handler served (`None` for a command).
    pub served: Option<Served>,
}

/// An HTTP handler's instance kept between calls ([`WasmEngine::serve`]).
pub struct Warm {
    store: Store<State<Host>>,
    proxy: wasmtime_wasi_http::p2::bindings::Proxy,
    printed: Capture,
}

/// A module or component ready to instantiate.
#[derive(Clone)]
pub struct Prepared {
    kind: Kind,
    sha256: String,
    /// Whether it imports any way to reach a directory (`path_*`, `fd_prestat_*`,
    /// `fd_readdir`, `wasi:filesystem/preopens`): without one, the directories a run offers
    /// could never be seen, and opening them for each instance is skipped.
    uses_files: bool,
    /// Whether it imports a way to read its arguments or environment variables
    /// (`args_*`, `environ_*`, `wasi:cli/environment`): without one, copying them into
    /// each instance's context is skipped.
    uses_environment: bool,
}

#[derive(Clone)]
enum Kind {
    /// A core module: a WASI preview 1 command, and its `_start` export (looked up once
    /// here rather than by name in every instance).
    Module(InstancePre<State<WasiP1Ctx>>, ModuleExport),
    Component(Exports),
}

/// How a module or component is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A WASI command: the event on stdin, the answer on stdout.
    Command,
    /// A `wasi:http/incoming-handler`: an HTTP request in, an HTTP response out.
    Http,
}

impl Prepared {
    /// The SHA-256 of the module's bytes, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn shape(&self) -> Shape {
        match self.kind {
            Kind::Component(Exports::Http(_)) => Shape::Http,
            _ => Shape::Command,
        }
    }
}

/// The memory of all an instance's linear memories together (a component may have
/// several), capped.
#[derive(Clone)]
struct MemoryLimit {
    max: usize,
    used: usize,
    hit: bool,
    peak: usize,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let used = self.used - current.min(self.used) + desired;
        if used > self.max {
            self.hit = true;
            return Ok(false);
        }
        self.used = used;
        self.peak = self.peak.max(used);
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

struct State<W> {
    wasi: W,
    limit: MemoryLimit,
    /// When the current call must stop.
    deadline: Instant,
}

/// The engine: one per server.
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<State<WasiP1Ctx>>,
    components: wasmtime::component::Linker<State<Host>>,
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
            .total_stacks(POOL_INSTANCES)
            .max_memory_size(POOL_MEMORY_BYTES)
            // A slot's memory is reset for the next instance by `memset` of the pages the
            // last one touched (found with PAGEMAP_SCAN where the kernel has it), up to
            // this much, rather than by `madvise`, whose TLB shootdowns interrupt every
            // core at each instance's end and whose pages fault in again at the next.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES)
            .pagemap_scan(Enabled::Auto)
            // A slot goes back to the pool as soon as its instance ends (wasmtime's default
            // batch of one). Every reset slot is queued for `madvise`, with nothing to
            // release when all it touched was within the bytes kept resident: a larger
            // batch held such slots back until it filled, then made a syscall for nothing,
            // and the next instances took colder slots meanwhile. A slot whose memory grew
            // past the resident bytes is released with an `madvise` of its own.
            // A module takes a slot no module has used while the pool has one, rather
            // than another module's: the pages a slot's last module touched stay resident
            // (zeroed), and a module that inherits them would reset them after each of its
            // instances, whether it touches them or not.
            .max_unused_warm_slots(POOL_INSTANCES);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut State<WasiP1Ctx>| &mut s.wasi)
            .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let components =
            component::linker(&engine).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
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
            components,
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
        let binary = wat::parse_bytes(bytes).map_err(|e| WasmError::Invalid(e.to_string()))?;
        // A component's preamble says layer 1, a core module's layer 0.
        if binary.get(6..8) == Some(&[1, 0]) {
            return self.load_component(&binary, sha256, &path);
        }
        // SAFETY: see `cached`.
        #[allow(unsafe_code)]
        let cached = self.cached(&path).and_then(|compiled| {
            match unsafe { Module::deserialize(&self.engine, compiled) } {
                Ok(module) => Some(module),
                Err(e) => {
                    cache_unreadable(&path, &e);
                    None
                }
            }
        });
        let module = match cached {
            Some(module) => module,
            None => {
                let mut module = Module::new(&self.engine, &binary)
                    .map_err(|e| WasmError::Invalid(format!("{e:#}")))?;
                if module.get_export(INIT_EXPORT).is_some() {
                    let started = Instant::now();
                    let snapshot = self.preinitialize(&binary)?;
                    module = Module::new(&self.engine, &snapshot)
                        .map_err(|e| WasmError::Init(format!("{e:#}")))?;
                    tracing::info!(module = %sha256, took = ?started.elapsed(), "pre-initialized a wasm module");
                }
                // Cached under the original's digest: a restart loads the snapshot.
                self.store_compiled(module.serialize(), &path)?;
                module
            }
        };
        let uses_files = imports_wasi(&module, |name| {
            name.starts_with("path_") || name.starts_with("fd_prestat") || name == "fd_readdir"
        });
        let uses_environment = imports_wasi(&module, |name| {
            name.starts_with("args_") || name.starts_with("environ_")
        });
        let start = match module.get_export(START_EXPORT) {
            Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {
                module.get_export_index(START_EXPORT)
            }
            _ => None,
        }
        .ok_or(WasmError::NotCommand)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| WasmError::Link(format!("{e:#}")))?;
        Ok(Prepared {
            kind: Kind::Module(pre, start),
            sha256,
            uses_files,
            uses_environment,
        })
    }

    fn load_component(
        &self,
        binary: &[u8],
        sha256: String,
        path: &Path,
    ) -> Result<Prepared, WasmError> {
        // SAFETY: see `cached`.
        #[allow(unsafe_code)]
        let cached = self.cached(path).and_then(|compiled| {
            match unsafe { Component::deserialize(&self.engine, compiled) } {
                Ok(component) => Some(component),
                Err(e) => {
                    cache_unreadable(path, &e);
                    None
                }
            }
        });
        let component = match cached {
            Some(component) => component,
            None => {
                let started = Instant::now();
                let component = Component::new(&self.engine, binary)
                    .map_err(|e| WasmError::Invalid(format!("{e:#}")))?;
                tracing::info!(component = %sha256, took = ?started.elapsed(), "compiled a wasm component");
                self.store_compiled(component.serialize(), path)?;
                component
            }
        };
        let uses_files = component::imports(&self.engine, &component, "wasi:filesystem/preopens");
        let uses_environment = component::imports(&self.engine, &component, "wasi:cli/environment");
        let exports = component::prepare(&self.components, &component)?;
        Ok(Prepared {
            kind: Kind::Component(exports),
            sha256,
            uses_files,
            uses_environment,
        })
    }

    /// A store for one instance: memory capped at `max_memory` bytes; every epoch tick the
    /// guest yields to the executor, and `timeout` from now it is stopped.
    fn store<W: Send>(&self, wasi: W, max_memory: usize, timeout: Duration) -> Store<State<W>> {
        let mut store = Store::new(
            &self.engine,
            State {
                wasi,
                limit: MemoryLimit {
                    max: max_memory,
                    used: 0,
                    hit: false,
                    peak: 0,
                },
                deadline: Instant::now() + timeout,
            },
        );
        store.limiter(|s| &mut s.limit);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |store| {
            Ok(if Instant::now() >= store.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store
    }

    /// Runs the module's initialization function once and returns the module with the
    /// state it left (memories and globals) as its initial state. `binary`: the module in
    /// the binary format, which wizer reads.
    fn preinitialize(&self, binary: &[u8]) -> Result<Vec<u8>, WasmError> {
        let init = |e: wasmtime::Error| WasmError::Init(format!("{e:#}"));
        let wizer = wasmtime_wizer::Wizer::new();
        let (cx, instrumented) = wizer.instrument(binary).map_err(init)?;
        let module = Module::new(&self.engine, &instrumented).map_err(init)?;
        // Wizer reads every global back as a number: refuse the others here.
        let numeric = |t: &wasmtime::ValType| {
            matches!(
                t,
                wasmtime::ValType::I32
                    | wasmtime::ValType::I64
                    | wasmtime::ValType::F32
                    | wasmtime::ValType::F64
                    | wasmtime::ValType::V128
            )
        };
        if module
            .exports()
            .any(|e| matches!(e.ty(), ExternType::Global(g) if !numeric(g.content())))
        {
            return Err(WasmError::Init(
                "a global of reference type cannot be part of a snapshot".into(),
            ));
        }
        let output = Capture::new(LOG_BYTES);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(output.clone()).stderr(output.clone());
        let mut store = self.store(wasi.build_p1(), INIT_MEMORY_BYTES, INIT_TIMEOUT);
        let snapshot = futures_executor::block_on(async {
            let instance = self.linker.instantiate_async(&mut store, &module).await?;
            // A reactor's own initialization (wasi-libc's constructors) comes first.
            if let Ok(reactor) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
                reactor.call_async(&mut store, ()).await?;
            }
            let initialize = instance.get_typed_func::<(), ()>(&mut store, INIT_EXPORT)?;
            initialize.call_async(&mut store, ()).await?;
            wizer
                .snapshot(
                    &cx,
                    &mut Initialized {
                        store: &mut store,
                        instance,
                    },
                )
                .await
        });
        snapshot.map_err(|e| {
            let end = ended(&e);
            let (printed, _) = output.take();
            let printed = String::from_utf8_lossy(&printed);
            let why = match end {
                End::Timeout => format!("it ran past {} s", INIT_TIMEOUT.as_secs()),
                End::Trap(trap) => trap,
                End::Exit(code) => format!("it exited with status {code}"),
            };
            if printed.trim().is_empty() {
                WasmError::Init(why)
            } else {
                WasmError::Init(format!("{why}; it printed: {}", printed.trim_end()))
            }
        })
    }

    /// A compiled module or component from the cache, to deserialize. It is safe to: the
    /// file was written by `serialize` of an engine with the same settings (they are part
    /// of its name), in a directory only Ember writes; wasmtime still checks its header and
    /// settings and refuses anything else. It is read whole rather than mapped: a file
    /// changed under a mapping would bring the server down (SIGBUS), a file read is only
    /// wrong or right.
    fn cached(&self, path: &Path) -> Option<Vec<u8>> {
        std::fs::read(path).ok()
    }

    fn store_compiled(
        &self,
        compiled: wasmtime::Result<Vec<u8>>,
        path: &Path,
    ) -> Result<(), WasmError> {
        let compiled = compiled.map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, compiled).map_err(WasmError::Cache)?;
        std::fs::rename(&tmp, path).map_err(WasmError::Cache)
    }

    /// Runs a WASI command (a module's `_start`, a component's `wasi:cli/run`) in a fresh
    /// instance.
    pub async fn run_command(&self, module: &Prepared, run: Run<'_>) -> Result<Outcome, WasmError> {
        let stdout = Capture::new(OUTPUT_BYTES);
        let stderr = Capture::new(LOG_BYTES);
        let mut wasi = self.wasi(module, &run, &stdout, &stderr)?;
        wasi.stdin(MemoryInputPipe::new(run.input));
        let limits = run.limits;
        let (end, limit) = match &module.kind {
            Kind::Module(pre, start) => {
                let mut store = self.store(wasi.build_p1(), limits.memory_bytes, limits.timeout);
                let run = async {
                    // Instantiation runs the start function and data initializers: the
                    // same limits.
                    let instance = match pre.instantiate_async(&mut store).await {
                        Ok(instance) => instance,
                        Err(e) => return not_started(e),
                    };
                    // Checked when the module was loaded.
                    let start = instance
                        .get_module_export(&mut store, start)
                        .and_then(wasmtime::Extern::into_func)
                        .ok_or(WasmError::NotCommand)?
                        .typed::<(), ()>(&store)
                        .map_err(|_| WasmError::NotCommand)?;
                    Ok(ended_by(start.call_async(&mut store, ()).await))
                };
                let end = tokio::time::timeout(limits.timeout, run)
                    .await
                    .unwrap_or(Ok(End::Timeout))?;
                (end, store.into_data().limit)
            }
            Kind::Component(Exports::Command(pre)) => {
                let host = Host::new(wasi.build(), run.egress);
                let mut store = self.store(host, limits.memory_bytes, limits.timeout);
                let run = async {
                    let command = match pre.instantiate_async(&mut store).await {
                        Ok(command) => command,
                        Err(e) => return not_started(e),
                    };
                    Ok(match command.wasi_cli_run().call_run(&mut store).await {
                        Ok(Ok(())) => End::Exit(0),
                        Ok(Err(())) => End::Exit(1),
                        Err(e) => ended(&e),
                    })
                };
                let end = tokio::time::timeout(limits.timeout, run)
                    .await
                    .unwrap_or(Ok(End::Timeout))?;
                (end, store.into_data().limit)
            }
            Kind::Component(Exports::Http(_)) => {
                return Err(WasmError::Instantiate(
                    "an HTTP handler is served requests, not run as a command".into(),
                ));
            }
        };
        Ok(outcome(end, limit, &stdout, &stderr, None))
    }

    /// Serves one request with a `wasi:http/incoming-handler` component: in the instance
    /// `warm` holds if it holds one, else in a new one, which is left in `warm` when `keep`
    /// (and the call ended well). What the handler prints (stdout and stderr, in order)
    /// is its log.
    pub async fn serve(
        &self,
        module: &Prepared,
        request: http::Request<Bytes>,
        run: Run<'_>,
        warm: &mut Option<Warm>,
        keep: bool,
    ) -> Result<Outcome, WasmError> {
        let Kind::Component(Exports::Http(pre)) = &module.kind else {
            return Err(WasmError::Instantiate(
                "a command is run with its event on stdin, not served requests".into(),
            ));
        };
        let limits = run.limits;
        // Starting an instance and serving share the call's time.
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let Warm {
            mut store,
            proxy,
            printed,
        } = match warm.take() {
            Some(mut kept) => {
                let state = kept.store.data_mut();
                state.deadline = Instant::now() + limits.timeout;
                state.limit.hit = false;
                kept.store.set_epoch_deadline(1);
                kept
            }
            None => {
                let printed = Capture::new(LOG_BYTES);
                let mut wasi = self.wasi(module, &run, &printed, &printed)?;
                let mut store = self.store(
                    Host::new(wasi.build(), run.egress),
                    limits.memory_bytes,
                    limits.timeout,
                );
                let started = tokio::time::timeout_at(deadline, pre.instantiate_async(&mut store));
                let proxy = match started.await {
                    Ok(Ok(proxy)) => proxy,
                    failed => {
                        let end = match failed {
                            Ok(Err(e)) => not_started(e)?,
                            _ => End::Timeout,
                        };
                        let limit = store.into_data().limit;
                        return Ok(outcome(end, limit, &Capture::new(0), &printed, None));
                    }
                };
                Warm {
                    store,
                    proxy,
                    printed,
                }
            }
        };
        let served = component::serve(&proxy, &mut store, request);
        let (end, served) = match tokio::time::timeout_at(deadline, served).await {
            Ok((Ok(()), served)) => (End::Exit(0), served),
            Ok((Err(e), served)) => (ended(&e), served),
            Err(_) => (End::Timeout, Served::NoAnswer),
        };
        let limit = &store.data().limit;
        let outcome = outcome(end, limit.clone(), &Capture::new(0), &printed, Some(served));
        // An instance that trapped, ran out of time or of memory is not used again.
        let healthy = outcome.end == End::Exit(0) && !outcome.memory_limit_hit;
        if keep && healthy {
            *warm = Some(Warm {
                store,
                proxy,
                printed,
            });
        }
        Ok(outcome)
    }

    /// The WASI context of one run, but its stdin.
    fn wasi(
        &self,
        module: &Prepared,
        run: &Run<'_>,
        stdout: &Capture,
        stderr: &Capture,
    ) -> Result<WasiCtxBuilder, WasmError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        if module.uses_environment {
            wasi.args(run.args).envs(run.env);
        }
        if let Some(tmp) = run.tmp.filter(|_| module.uses_files) {
            wasi.preopened_dir(tmp, "/tmp", FsPerms::ReadWrite)
                .map_err(|e| WasmError::Instantiate(format!("could not open /tmp: {e:#}")))?;
        }
        if let Some(task) = run.task.filter(|_| module.uses_files) {
            wasi.preopened_dir(task, "/var/task", FsPerms::ReadOnly)
                .map_err(|e| WasmError::Instantiate(format!("could not open /var/task: {e:#}")))?;
        }
        Ok(wasi)
    }
}

/// Whether a core module imports a WASI preview 1 function whose name `named` accepts.
fn imports_wasi(module: &Module, named: impl Fn(&str) -> bool) -> bool {
    module
        .imports()
        .any(|import| import.module() == "wasi_snapshot_preview1" && named(import.name()))
}

fn outcome(
    end: End,
    limit: MemoryLimit,
    stdout: &Capture,
    stderr: &Capture,
    served: Option<Served>,
) -> Outcome {
    let (stdout, stdout_dropped) = stdout.take();
    let (stderr, stderr_dropped) = stderr.take();
    Outcome {
        end,
        stdout,
        stdout_dropped,
        stderr,
        stderr_dropped,
        memory_limit_hit: limit.hit,
        peak_memory_bytes: limit.peak,
        served,
    }
}

fn ended_by(result: wasmtime::Result<()>) -> End {
    match result {
        Ok(()) => End::Exit(0),
        Err(e) => ended(&e),
    }
}

/// An instantiation that failed: a trap (a start function's, a data segment's) ends the run
/// like any trap; anything else (the pool full, say) is the host's failure.
fn not_started(error: wasmtime::Error) -> Result<End, WasmError> {
    if error.downcast_ref::<Trap>().is_some() {
        Ok(ended(&error))
    } else {
        Err(WasmError::Instantiate(format!("{error:#}")))
    }
}

/// The state of an instance after its initialization, as wizer reads it.
struct Initialized<'a> {
    store: &'a mut Store<State<WasiP1Ctx>>,
    instance: wasmtime::Instance,
}

impl wasmtime_wizer::InstanceState for Initialized<'_> {
    async fn global_get(
        &mut self,
        name: &str,
        _: wasmtime_wizer::ValType,
    ) -> wasmtime_wizer::SnapshotVal {
        use wasmtime_wizer::SnapshotVal;
        let global = self
            .instance
            .get_global(&mut *self.store, name)
            .expect("wizer asks only for the globals it exported");
        match global.get(&mut *self.store) {
            wasmtime::Val::I32(x) => SnapshotVal::I32(x),
            wasmtime::Val::I64(x) => SnapshotVal::I64(x),
            wasmtime::Val::F32(x) => SnapshotVal::F32(x),
            wasmtime::Val::F64(x) => SnapshotVal::F64(x),
            wasmtime::Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            other => panic!("a global of an unsupported type: {other:?}"),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self
            .instance
            .get_memory(&mut *self.store, name)
            .expect("wizer asks only for the memories it exported");
        contents(memory.data(&*self.store))
    }
}

fn cache_unreadable(path: &Path, error: &wasmtime::Error) {
    tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "a cached compiled module could not be read; compiling again");
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
