//! The `wasm` sandbox backend: environments that run their function's module inside Ember's
//! process, one fresh instance per invocation.
//!
//! An environment here is what a module needs between invocations: the compiled module
//! (shared by every environment of the version), its `/tmp` (a tmpfs of the function's
//! ephemeral size, kept across the environment's invocations as Lambda keeps `/tmp`), its
//! variables and the pipe its log goes through. It has no process and no Runtime API: it
//! offers the dispatcher a [`Handler`] instead. Starting one costs a tmpfs mount and a map
//! lookup; an idle one holds no instance and no linear memory.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use ember_sandbox::{
    Answer, Backend, Call, Environment, EnvironmentSpec, ExitStatus, Handled, Handler, SandboxError,
};
use tokio::sync::watch;

use crate::{
    End, Limits, POOL_INSTANCES, Prepared, Run, Served, Shape, Warm, WasmEngine, WasmError, event,
};

/// Where the code directory appears to the function, as in every other backend.
const TASK_ROOT: &str = "/var/task/";

/// Most compiled modules kept in memory; past it the map starts over (each is reloaded
/// from the on-disk cache on its next start).
const MODULES_IN_MEMORY: usize = 512;

/// The wasm backend: one engine, its compiled modules, the environments' `/tmp` mounts.
pub struct WasmBackend {
    modules: Arc<Modules>,
    tmp_root: PathBuf,
    live: Arc<AtomicUsize>,
}

/// Compiled modules in memory, by the module file's path (code directories are named by
/// their content, so a path always holds the same module).
struct Modules {
    engine: Arc<WasmEngine>,
    loaded: Mutex<HashMap<PathBuf, Prepared>>,
}

impl WasmBackend {
    /// Sets up the engine with its compiled-module cache under `dir`, and checks that
    /// environments' `/tmp` can be mounted there (it needs `CAP_SYS_ADMIN`).
    pub fn new(dir: &Path) -> Result<WasmBackend, SandboxError> {
        let engine =
            WasmEngine::new(&dir.join("compiled")).map_err(|e| SandboxError::Unsupported {
                backend: "wasm",
                reason: e.to_string(),
            })?;
        let tmp_root = dir.join("tmp");
        let setup = |source| SandboxError::Setup {
            what: "wasm /tmp directory",
            source,
        };
        std::fs::create_dir_all(&tmp_root).map_err(setup)?;
        clear_stale(&tmp_root);
        let probe = tmp_root.join("probe");
        std::fs::create_dir_all(&probe).map_err(setup)?;
        let mounted = mount_tmp(&probe, 1);
        unmount_tmp(&probe);
        if let Err(e) = mounted {
            return Err(SandboxError::Unsupported {
                backend: "wasm",
                reason: format!(
                    "a size-limited /tmp could not be mounted ({e}); the wasm backend needs CAP_SYS_ADMIN"
                ),
            });
        }
        Ok(WasmBackend {
            modules: Arc::new(Modules {
                engine: Arc::new(engine),
                loaded: Mutex::new(HashMap::new()),
            }),
            tmp_root,
            live: Arc::default(),
        })
    }
}

impl Modules {
    fn loaded(&self, path: &Path) -> Option<Prepared> {
        self.loaded.lock().expect("modules lock").get(path).cloned()
    }

    /// The version's compiled module: from memory, else from the disk cache (or compiled).
    /// Blocking.
    fn load(&self, path: &Path) -> Result<Prepared, String> {
        if let Some(module) = self.loaded(path) {
            return Ok(module);
        }
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "the package has no readable module at {} ({e}); the handler names the module's path inside the package, e.g. app.wasm",
                path.file_name().unwrap_or_default().to_string_lossy()
            )
        })?;
        let module = self.engine.load(&bytes).map_err(|e| match e {
            WasmError::Link(why) => format!(
                "the module imports what Ember does not provide (WASI preview 1 for modules; WASI 0.2 with wasi:http for components): {why}"
            ),
            other => other.to_string(),
        })?;
        let mut modules = self.loaded.lock().expect("modules lock");
        if modules.len() >= MODULES_IN_MEMORY {
            modules.clear();
        }
        modules.insert(path.to_owned(), module.clone());
        Ok(module)
    }
}

/// The module a spec runs: its `argv[0]`, `/var/task/<handler>`, on the host.
fn module_path(spec: &EnvironmentSpec) -> Option<PathBuf> {
    let entry = spec.argv.first()?.strip_prefix(TASK_ROOT)?;
    Some(spec.code_dir.join(entry))
}

fn mount_tmp(dir: &Path, size_mb: u32) -> nix::Result<()> {
    use nix::mount::{MsFlags, mount};
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("size={size_mb}m,mode=0700").as_str()),
    )
}

fn unmount_tmp(dir: &Path) {
    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(dir);
}

/// Unmounts and removes what a previous server left (it was killed with environments up).
fn clear_stale(tmp_root: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp_root) else {
        return;
    };
    for entry in entries.flatten() {
        unmount_tmp(&entry.path());
    }
}

#[async_trait]
impl Backend for WasmBackend {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn prepare(&self, code_dir: &Path, entry: &str) -> Result<(), String> {
        self.modules.load(&code_dir.join(entry)).map(drop)
    }

    async fn create(&self, spec: EnvironmentSpec) -> Result<Box<dyn Environment>, SandboxError> {
        let setup = |what| move |source| SandboxError::Setup { what, source };
        let path = module_path(&spec).ok_or_else(|| {
            setup("wasm module path")(std::io::Error::other(format!(
                "argv[0] must be under {TASK_ROOT}"
            )))
        })?;
        let slot = Slot::take(&self.live).ok_or_else(|| {
            setup("wasm instance slot")(std::io::Error::other(format!(
                "all {POOL_INSTANCES} wasm instance slots are in use"
            )))
        })?;
        let module = match self.modules.loaded(&path) {
            Some(module) => module,
            None => {
                // Loading reads (or compiles) the module: off the async workers.
                let modules = Arc::clone(&self.modules);
                tokio::task::spawn_blocking(move || modules.load(&path))
                    .await
                    .map_err(|e| setup("wasm module")(std::io::Error::other(e)))?
                    .map_err(|e| setup("wasm module")(std::io::Error::other(e)))?
            }
        };
        if spec.reuse_instance && module.shape() != Shape::Http {
            return Err(setup("wasm instance reuse")(std::io::Error::other(
                "ReuseInstance needs a wasi:http/incoming-handler component: a command's start runs once per instance",
            )));
        }
        let tmp = self.tmp_root.join(&spec.id);
        std::fs::create_dir(&tmp).map_err(setup("wasm /tmp directory"))?;
        if let Err(e) = mount_tmp(&tmp, spec.ephemeral_mb) {
            let _ = std::fs::remove_dir(&tmp);
            return Err(setup("wasm /tmp mount")(e.into()));
        }
        let handler = Arc::new(WasmHandler {
            engine: Arc::clone(&self.modules.engine),
            module,
            args: vec![spec.argv[0].clone()],
            env: spec.env,
            tmp: tmp.clone(),
            task: spec.code_dir.clone(),
            memory_bytes: (spec.memory_mb as usize) << 20,
            peak: AtomicU64::new(0),
            reuse: spec.reuse_instance,
            egress: spec.egress,
            warm: tokio::sync::Mutex::new(None),
        });
        let (exited, exit) = watch::channel(None);
        Ok(Box::new(WasmEnvironment {
            handler,
            tmp: Some(tmp),
            exit,
            _exited: exited,
            _slot: slot,
        }))
    }
}

/// Holds one of the backend's instance slots while an environment lives.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(live: &Arc<AtomicUsize>) -> Option<Slot> {
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < POOL_INSTANCES as usize).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(Arc::clone(live)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct WasmEnvironment {
    handler: Arc<WasmHandler>,
    /// The mounted `/tmp`, until destroyed.
    tmp: Option<PathBuf>,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// Never sent: there is no process to exit.
    _exited: watch::Sender<Option<ExitStatus>>,
    _slot: Slot,
}

impl Drop for WasmEnvironment {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            unmount_tmp(&tmp);
        }
    }
}

#[async_trait]
impl Environment for WasmEnvironment {
    fn take_runtime_api_listener(&mut self) -> Option<std::net::TcpListener> {
        None
    }

    fn take_output(&mut self) -> Option<OwnedFd> {
        None
    }

    fn exit(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    fn init_done(&self) {}

    fn max_memory_used(&self) -> Option<u64> {
        Some(self.handler.peak.load(Ordering::Relaxed))
    }

    async fn destroy(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = tokio::task::spawn_blocking(move || unmount_tmp(&tmp)).await;
        }
    }

    fn handler(&self) -> Option<Arc<dyn Handler>> {
        Some(Arc::clone(&self.handler) as Arc<dyn Handler>)
    }
}

/// Runs one environment's invocations: a fresh instance of the module each time.
struct WasmHandler {
    engine: Arc<WasmEngine>,
    module: Prepared,
    args: Vec<String>,
    env: Vec<(String, String)>,
    tmp: PathBuf,
    /// The package, seen read-only at `/var/task`.
    task: PathBuf,
    memory_bytes: usize,
    /// The most linear memory any of its instances had.
    peak: AtomicU64,
    /// Whether a component's outgoing requests may leave (`Network: egress`).
    egress: bool,
    /// Whether an HTTP handler's instance is kept between calls, in `warm`.
    reuse: bool,
    warm: tokio::sync::Mutex<Option<Warm>>,
}

#[async_trait]
impl Handler for WasmHandler {
    async fn invoke(&self, call: Call) -> Handled {
        let (answer, printed) = self.run(call).await;
        Handled { answer, printed }
    }
}

impl WasmHandler {
    async fn run(&self, mut call: Call) -> (Answer, Bytes) {
        let shape = self.module.shape();
        // A command reads the event on stdin; an HTTP handler is served the request it maps
        // to, read below.
        let input = match shape {
            Shape::Command => std::mem::take(&mut call.payload),
            Shape::Http => Bytes::new(),
        };
        let run = Run {
            input,
            args: &self.args,
            env: &self.env,
            tmp: Some(&self.tmp),
            task: Some(&self.task),
            egress: self.egress,
            limits: Limits {
                memory_bytes: self.memory_bytes,
                timeout: call.timeout,
            },
        };
        let mut http_event = false;
        let outcome = match shape {
            Shape::Command => self.engine.run_command(&self.module, run).await,
            Shape::Http => match event::request(&call.payload) {
                Ok(request) => {
                    http_event = request.http_event;
                    // Calls at once (MaxConcurrency above 1) past the kept instance get
                    // fresh ones.
                    let mut kept = self.warm.try_lock().ok();
                    let mut fresh = None;
                    let (warm, keep) = match kept.as_deref_mut() {
                        Some(warm) => (warm, self.reuse),
                        None => (&mut fresh, false),
                    };
                    self.engine
                        .serve(&self.module, request.request, run, warm, keep)
                        .await
                }
                Err(why) => {
                    let failed = Answer::Failed {
                        error_type: "Runtime.InvalidEvent".into(),
                        message: why,
                        out_of_memory: false,
                    };
                    return (failed, Bytes::new());
                }
            },
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                let failed = Answer::Failed {
                    error_type: "Runtime.InstantiationError".into(),
                    message: e.to_string(),
                    out_of_memory: false,
                };
                return (failed, Bytes::new());
            }
        };
        self.peak
            .fetch_max(outcome.peak_memory_bytes as u64, Ordering::Relaxed);
        let printed = printed(&outcome);
        (
            answer(outcome, http_event, self.memory_bytes >> 20),
            printed,
        )
    }
}

/// What a run answers, in order of precedence: a timeout; a command's output; an HTTP
/// handler's whole response (even if the instance failed after it); then how the instance
/// failed. `http_event`: whether the event was an HTTP request (and wants a response
/// document back); `mb`: the function's memory.
fn answer(outcome: crate::Outcome, http_event: bool, mb: usize) -> Answer {
    let out_of_memory = outcome.memory_limit_hit;
    match (outcome.end, outcome.served) {
        (End::Timeout, _) => Answer::TimedOut,
        (End::Exit(0), None) if outcome.stdout_dropped > 0 => Answer::ResponseTooLarge,
        (End::Exit(0), None) => Answer::Response(outcome.stdout),
        // An HTTP handler's answer counts once it is whole, even if the instance then
        // failed.
        (_, Some(Served::Answered(answer))) if http_event => {
            Answer::Response(event::http_response(&answer))
        }
        (_, Some(Served::Answered(answer))) if answer.status < 400 => Answer::Response(answer.body),
        (_, Some(Served::Answered(answer))) => Answer::Failed {
            error_type: "HttpError".into(),
            message: format!(
                "the handler answered {} {}: {}",
                answer.status,
                http::StatusCode::from_u16(answer.status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or(""),
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(1024)])
            ),
            out_of_memory,
        },
        (_, Some(Served::TooLarge)) => Answer::ResponseTooLarge,
        (End::Exit(0), Some(Served::Failed(why))) => Answer::Failed {
            error_type: "Runtime.HandlerError".into(),
            message: why,
            out_of_memory,
        },
        (End::Exit(0), Some(Served::NoAnswer)) => Answer::Failed {
            error_type: "Runtime.NoResponse".into(),
            message: "the handler returned without setting its response".into(),
            out_of_memory,
        },
        _ if out_of_memory => Answer::Failed {
            error_type: "Runtime.OutOfMemory".into(),
            message: format!(
                "Runtime exited with error: out of memory (the module asked for more than its {mb} MB)"
            ),
            out_of_memory,
        },
        (End::Exit(code), _) => Answer::Failed {
            error_type: "Runtime.ExitError".into(),
            message: format!("Runtime exited with error: exit status {code}"),
            out_of_memory,
        },
        (End::Trap(trap), _) => Answer::Failed {
            error_type: "Runtime.Trap".into(),
            message: format!("Runtime trapped: {trap}"),
            out_of_memory,
        },
    }
}

/// A run's log: stderr, a note of what was dropped, and a failed command's stdout (no
/// response then, but maybe what explains the failure).
fn printed(outcome: &crate::Outcome) -> Bytes {
    let failed = !matches!(outcome.end, End::Exit(0));
    if outcome.stderr_dropped == 0 && !failed {
        return outcome.stderr.clone();
    }
    let mut log = outcome.stderr.to_vec();
    if outcome.stderr_dropped > 0 {
        log.extend_from_slice(
            format!(
                "\n[ember: {} bytes of output were dropped]\n",
                outcome.stderr_dropped
            )
            .as_bytes(),
        );
    }
    if failed {
        log.extend_from_slice(&outcome.stdout);
    }
    Bytes::from(log)
}
