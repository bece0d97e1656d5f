//! The contract between the dispatcher and the isolation backends.
//!
//! A [`Backend`] creates an [`Environment`] from an [`EnvironmentSpec`]: one sandbox running
//! one runtime process over one version's code. The dispatcher drives environments only
//! through this trait and never names a backend; each backend (`process`, and later `oci`
//! and `wasm`) hides how it isolates.
//!
//! An environment hands the dispatcher two things when it starts: a listener that the
//! runtime inside reaches as `AWS_LAMBDA_RUNTIME_API` (the dispatcher serves the Runtime API
//! on it), and the read end of the runtime's combined stdout/stderr.
//!
//! An environment whose code runs inside Ember's own process (the `wasm` backend) has no
//! runtime process to poll the Runtime API: it offers a [`Handler`] instead, and the
//! dispatcher hands it each invocation directly. Everything around the call (admission,
//! pools, timeouts, log lines, metering) is the same.

pub mod affinity;

use std::fmt;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

/// Everything a backend needs to start one environment.
#[derive(Debug, Clone)]
pub struct EnvironmentSpec {
    /// Unique among live environments; names cgroups and log streams.
    pub id: String,
    /// The function's memory limit, in MB. CPU is derived from it.
    pub memory_mb: u32,
    /// Size of the writable `/tmp`, in MB.
    pub ephemeral_mb: u32,
    /// The unpacked code on the host, mounted read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// Ember's runtime files on the host, mounted read-only at `/var/runtime`.
    pub runtime_dir: PathBuf,
    /// Unpacked layers on the host, laid read-only over `/opt` in order (a later layer's
    /// files win).
    pub layers: Vec<PathBuf>,
    /// The command to run inside, as seen from inside.
    pub argv: Vec<String>,
    /// Environment variables for the runtime; the backend adds `AWS_LAMBDA_RUNTIME_API`.
    pub env: Vec<(String, String)>,
    /// Give the environment a route out (`Network: egress`); loopback only otherwise.
    pub egress: bool,
    /// Keep one instance between invocations (wasm `wasi:http` handlers); process
    /// backends always do.
    pub reuse_instance: bool,
}

/// How an environment's runtime process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal, if it was killed by one.
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer fired in this environment.
    pub oom_killed: bool,
}

impl fmt::Display for ExitStatus {
    /// Formats like Lambda's `Runtime exited with error: …` tail: `exit status 1`,
    /// `signal: killed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (_, Some(sig)) => write!(f, "signal: {}", signal_name(sig)),
            (Some(code), None) => write!(f, "exit status {code}"),
            (None, None) => f.write_str("exited"),
        }
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        6 => "aborted".into(),
        15 => "terminated".into(),
        2 => "interrupt".into(),
        7 => "bus error".into(),
        8 => "floating point exception".into(),
        other => format!("signal {other}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the {backend} sandbox cannot run on this host: {reason}")]
    Unsupported {
        backend: &'static str,
        reason: String,
    },
    #[error("could not create the environment's {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Creates environments.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The backend's name, as operators configure it (`process`, …).
    fn name(&self) -> &'static str;

    /// Starts an environment: the sandbox, then the runtime process inside it.
    async fn create(&self, spec: EnvironmentSpec) -> Result<Box<dyn Environment>, SandboxError>;

    /// Releases what the backend holds beyond its environments, once all are destroyed.
    async fn shutdown(&self) {}

    /// Checks a package at deploy time and readies what its environments will share (a
    /// compiled module): `Err` says what is wrong with the package. `entry` is the
    /// function's handler. Blocking; called off the async workers.
    fn prepare(&self, code_dir: &std::path::Path, entry: &str) -> Result<(), String> {
        let _ = (code_dir, entry);
        Ok(())
    }
}

/// One running environment.
#[async_trait]
pub trait Environment: Send + Sync {
    /// The listener the runtime inside reaches at `AWS_LAMBDA_RUNTIME_API`. Taken once.
    fn take_runtime_api_listener(&mut self) -> Option<TcpListener>;

    /// The read end of the runtime's stdout and stderr. Taken once.
    fn take_output(&mut self) -> Option<OwnedFd>;

    /// Becomes `Some` when the runtime process has exited.
    fn exit(&self) -> watch::Receiver<Option<ExitStatus>>;

    /// Called once init is over: the backend moves the environment from its init limits
    /// (a full CPU for the init burst) to its steady-state ones.
    fn init_done(&self);

    /// Stops every process of the environment until [`Environment::thaw`]; `false` if the
    /// backend cannot (then the environment simply stays running).
    fn freeze(&self) -> bool {
        false
    }

    /// Lets a frozen environment run again; takes effect before it returns.
    fn thaw(&self) {}

    /// The most memory the environment has used so far, in bytes, if the backend knows.
    fn max_memory_used(&self) -> Option<u64>;

    /// Stops every process and releases every resource. Idempotent.
    async fn destroy(&mut self);

    /// The handler that runs invocations in Ember's process, for an environment without
    /// a runtime process; then there is no Runtime API listener and no output pipe (each
    /// call hands back what it printed), and init is over when [`Backend::create`] returns.
    fn handler(&self) -> Option<Arc<dyn Handler>> {
        None
    }
}

/// One invocation, handed straight to a [`Handler`].
#[derive(Debug, Clone)]
pub struct Call {
    pub request_id: String,
    pub payload: Bytes,
    /// The ARN the function was invoked by (qualified if it was).
    pub function_arn: String,
    /// The function's timeout; the handler stops the code when it runs out.
    pub timeout: std::time::Duration,
}

/// How a [`Handler`] call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The function's response.
    Response(Bytes),
    /// The code failed (Lambda's `Unhandled`); the environment stays usable.
    Failed {
        /// Lambda-style error type, e.g. `Runtime.ExitError`.
        error_type: String,
        /// What happened, for the error document and the log.
        message: String,
        /// Whether the code had asked for more memory than its limit.
        out_of_memory: bool,
    },
    /// The response was larger than a response may be.
    ResponseTooLarge,
    /// Stopped at the function's timeout.
    TimedOut,
}

/// What a [`Handler`] call gives back.
#[derive(Debug, Clone)]
pub struct Handled {
    pub answer: Answer,
    /// What the code printed (its log), in order.
    pub printed: Bytes,
}

/// Runs invocations of an environment inside Ember's process.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn invoke(&self, call: Call) -> Handled;
}
