//! The invoke path: resolve → admit → take a warm environment or start one → hand the event
//! over → await the outcome → release → record.
//!
//! - [`Dispatcher`]: the entry point. Holds every deployed function in memory (the hot path
//!   never touches the store), its warm pool, and the account-wide concurrency count.
//! - `environment`: one environment through init and invocations.
//! - `output`: an environment's stdout/stderr into the function's log.
//! - [`logs`]: the function log files and their live feed.
//!
//! Each function has a *generation* that changes whenever its code or configuration does.
//! An environment belongs to one generation; when the function moves on, idle environments
//! of older generations are destroyed at once and busy ones when their invocation ends.

mod environment;
pub mod logs;
mod output;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ember_core::limits::LOG_TAIL_BYTES;
use ember_core::report::{self, Report};
use ember_core::{FunctionSpec, RuntimeFamily};
use ember_policy::{Admission, KeepAlive, Throttle};
use ember_sandbox::{Backend, EnvironmentSpec, ExitStatus, SandboxError};

use environment::{Env, InitFailure, Outcome};
pub use logs::LogSink;

/// Settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub keep_alive: KeepAlive,
    pub admission: Admission,
    /// Host directory with Ember's runtimes, mounted at `/var/runtime`.
    pub runtime_dir: PathBuf,
    /// The Python interpreter, by a path that exists inside environments too.
    pub python: Option<PathBuf>,
    pub region: String,
    pub account: String,
}

impl DispatchConfig {
    /// The runtime families this host can run.
    pub fn available_runtimes(&self) -> Vec<RuntimeFamily> {
        let mut families = vec![RuntimeFamily::Provided];
        if self.python.is_some() {
            families.push(RuntimeFamily::Python);
        }
        families
    }
}

/// A function as deployed: its configuration and its unpacked code.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub spec: FunctionSpec,
    pub code_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("function not found: {0}")]
    FunctionNotFound(String),
    #[error("rate exceeded: the account's concurrency limit of {0} is reached")]
    Throttled(u32),
    #[error("could not start an execution environment")]
    Sandbox(#[from] SandboxError),
    #[error("execution environment I/O failed")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// One invocation request.
#[derive(Debug, Clone, Default)]
pub struct InvokeRequest {
    pub payload: Bytes,
    /// Return the last 4 KB of this invocation's log.
    pub tail_log: bool,
    /// Decoded `X-Amz-Client-Context`, handed to the runtime.
    pub client_context: Option<String>,
}

/// Which kind of function error, for `X-Amz-Function-Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionError {
    /// The runtime reported an error from the handler.
    Handled,
    /// The runtime crashed, timed out, ran out of memory or failed to initialize.
    Unhandled,
}

impl FunctionError {
    pub fn as_str(self) -> &'static str {
        match self {
            FunctionError::Handled => "Handled",
            FunctionError::Unhandled => "Unhandled",
        }
    }
}

/// What an invocation produced.
#[derive(Debug, Clone)]
pub struct InvokeResult {
    pub request_id: String,
    pub body: Bytes,
    pub function_error: Option<FunctionError>,
    pub executed_version: &'static str,
    pub log_tail: Option<Bytes>,
    /// Whether this invocation started a new environment.
    pub cold: bool,
}

/// Counts of one function's environments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub idle: usize,
    pub busy: usize,
}

struct Function {
    name: Arc<str>,
    current: RwLock<Arc<Current>>,
    pool: Mutex<Pool>,
}

struct Current {
    deployment: Deployment,
    generation: u64,
    arn: String,
}

impl Function {
    /// Takes every idle environment out of the pool.
    fn take_idle(&self) -> Vec<Env> {
        let mut pool = self.pool.lock().expect("pool lock");
        pool.idle.drain(..).map(|(env, _)| env).collect()
    }
}

#[derive(Default)]
struct Pool {
    /// Most recently used last.
    idle: Vec<(Env, Instant)>,
    busy: usize,
}

struct Inner {
    backend: Arc<dyn Backend>,
    config: DispatchConfig,
    functions: RwLock<HashMap<String, Arc<Function>>>,
    in_flight: AtomicU32,
    generations: AtomicU64,
    logs: LogSink,
    /// Environments being destroyed in the background.
    destroying: tokio::sync::watch::Sender<usize>,
}

/// The invoke path and the warm pools. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

/// Holds one unit of account concurrency.
struct Permit<'a>(&'a AtomicU32);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Dispatcher {
    /// Creates the dispatcher and starts reclaiming idle environments.
    pub fn new(backend: Arc<dyn Backend>, config: DispatchConfig, logs: LogSink) -> Dispatcher {
        let inner = Arc::new(Inner {
            backend,
            config,
            functions: RwLock::new(HashMap::new()),
            in_flight: AtomicU32::new(0),
            generations: AtomicU64::new(0),
            logs,
            destroying: tokio::sync::watch::Sender::new(0),
        });
        tokio::spawn(reclaim_loop(Arc::downgrade(&inner)));
        Dispatcher { inner }
    }

    pub fn config(&self) -> &DispatchConfig {
        &self.inner.config
    }

    pub fn logs(&self) -> &LogSink {
        &self.inner.logs
    }

    /// Deploys a function or replaces its code and configuration. Environments of the
    /// previous deployment are retired.
    pub fn deploy(&self, deployment: Deployment) {
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let name = deployment.spec.name.clone();
        let arn = format!(
            "arn:aws:lambda:{}:{}:function:{}",
            self.inner.config.region, self.inner.config.account, name
        );
        let current = Arc::new(Current {
            deployment,
            generation,
            arn,
        });
        let mut functions = self.inner.functions.write().expect("functions lock");
        match functions.entry(name) {
            Entry::Occupied(entry) => {
                let function = Arc::clone(entry.get());
                drop(functions);
                *function.current.write().expect("current lock") = current;
                self.inner.destroy_all(function.take_idle());
            }
            Entry::Vacant(entry) => {
                let name = Arc::from(entry.key().as_str());
                entry.insert(Arc::new(Function {
                    name,
                    current: RwLock::new(current),
                    pool: Mutex::new(Pool::default()),
                }));
            }
        }
    }

    /// Removes a function; its environments are destroyed (busy ones when they finish).
    pub fn remove(&self, name: &str) {
        let removed = self
            .inner
            .functions
            .write()
            .expect("functions lock")
            .remove(name);
        if let Some(function) = removed {
            self.inner.destroy_all(function.take_idle());
        }
    }

    /// Environment counts of a function.
    pub fn stats(&self, name: &str) -> Option<PoolStats> {
        let function = self
            .inner
            .functions
            .read()
            .expect("functions lock")
            .get(name)
            .cloned()?;
        let pool = function.pool.lock().expect("pool lock");
        Some(PoolStats {
            idle: pool.idle.len(),
            busy: pool.busy,
        })
    }

    /// Destroys every idle environment, then lets the backend release what it holds; used
    /// at shutdown, once no invocation is running.
    pub async fn shutdown(&self) {
        let functions: Vec<_> = self
            .inner
            .functions
            .read()
            .expect("functions lock")
            .values()
            .cloned()
            .collect();
        for function in functions {
            for env in function.take_idle() {
                env.destroy().await;
            }
        }
        let mut destroying = self.inner.destroying.subscribe();
        let _ = destroying.wait_for(|n| *n == 0).await;
        self.inner.backend.shutdown().await;
    }

    /// Runs one synchronous invocation.
    ///
    /// The invocation runs in its own task: a caller that goes away (a closed connection
    /// drops the request's future) does not cancel it halfway, which would strand its
    /// environment mid-event. Like on Lambda, the invocation runs to its end either way.
    pub async fn invoke(
        &self,
        name: &str,
        request: InvokeRequest,
    ) -> Result<InvokeResult, DispatchError> {
        let this = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move { this.invoke_to_end(&name, request).await })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "an invocation task failed");
                Err(DispatchError::Internal("the invocation task failed"))
            })
    }

    async fn invoke_to_end(
        &self,
        name: &str,
        request: InvokeRequest,
    ) -> Result<InvokeResult, DispatchError> {
        let inner = &*self.inner;
        let function = inner
            .functions
            .read()
            .expect("functions lock")
            .get(name)
            .cloned()
            .ok_or_else(|| DispatchError::FunctionNotFound(name.to_owned()))?;
        let current = Arc::clone(&function.current.read().expect("current lock"));
        let _permit = inner.admit()?;
        let request_id = uuid::Uuid::new_v4().to_string();

        let (warm, dead) = {
            let mut pool = function.pool.lock().expect("pool lock");
            // A runtime can die while idle (a background thread's crash, an OOM kill);
            // such an environment is discarded, never handed to a caller.
            let mut dead = Vec::new();
            let warm = loop {
                match pool.idle.pop() {
                    Some((env, _)) if env.has_exited() => dead.push(env),
                    other => break other.map(|(env, _)| env),
                }
            };
            pool.busy += 1;
            (warm, dead)
        };
        inner.destroy_all(dead);
        let result = match warm {
            Some(env) => {
                inner
                    .run(&function, &current, env, None, &request_id, request)
                    .await
            }
            None => inner.cold(&function, &current, &request_id, request).await,
        };
        function.pool.lock().expect("pool lock").busy -= 1;
        result
    }
}

impl Inner {
    /// Destroys environments in the background; [`Dispatcher::shutdown`] waits for them.
    fn destroy_all(&self, envs: impl IntoIterator<Item = Env>) {
        for env in envs {
            self.destroying.send_modify(|n| *n += 1);
            let destroying = self.destroying.clone();
            tokio::spawn(async move {
                env.destroy().await;
                destroying.send_modify(|n| *n -= 1);
            });
        }
    }

    fn admit(&self) -> Result<Permit<'_>, DispatchError> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = Permit(&self.in_flight);
        match self.config.admission.admit(before) {
            Ok(()) => Ok(permit),
            Err(Throttle::AccountConcurrency { limit }) => Err(DispatchError::Throttled(limit)),
        }
    }

    fn environment_spec(
        &self,
        function: &Function,
        current: &Current,
        id: &str,
    ) -> EnvironmentSpec {
        let spec = &current.deployment.spec;
        let argv = match (spec.family(), &self.config.python) {
            (RuntimeFamily::Python, Some(python)) => vec![
                python.display().to_string(),
                "-u".into(),
                ember_runtime_api::runtimes::PYTHON_BOOTSTRAP_PATH.into(),
            ],
            _ => vec!["/var/task/bootstrap".into()],
        };
        let date = ember_core::time::log_stream_date(std::time::SystemTime::now());
        let mut env: Vec<(String, String)> = vec![
            ("_HANDLER".into(), spec.handler.clone()),
            ("LAMBDA_TASK_ROOT".into(), "/var/task".into()),
            ("LAMBDA_RUNTIME_DIR".into(), "/var/runtime".into()),
            ("AWS_LAMBDA_FUNCTION_NAME".into(), function.name.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION".into(), "$LATEST".into()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
                spec.memory_mb.to_string(),
            ),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME".into(),
                format!("/aws/lambda/{}", function.name),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME".into(),
                format!("{date}/[$LATEST]{id}"),
            ),
            ("AWS_LAMBDA_INITIALIZATION_TYPE".into(), "on-demand".into()),
            ("AWS_REGION".into(), self.config.region.clone()),
            ("AWS_DEFAULT_REGION".into(), self.config.region.clone()),
            (
                "AWS_EXECUTION_ENV".into(),
                format!("AWS_Lambda_{}", spec.runtime),
            ),
            ("TZ".into(), ":UTC".into()),
            ("LANG".into(), "en_US.UTF-8".into()),
            (
                "PATH".into(),
                "/usr/local/bin:/usr/bin:/bin:/opt/bin".into(),
            ),
            (
                "LD_LIBRARY_PATH".into(),
                "/var/task:/var/task/lib:/opt/lib".into(),
            ),
        ];
        env.extend(spec.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
        EnvironmentSpec {
            id: id.to_owned(),
            memory_mb: spec.memory_mb,
            ephemeral_mb: spec.ephemeral_mb,
            code_dir: current.deployment.code_dir.clone(),
            runtime_dir: self.config.runtime_dir.clone(),
            argv,
            env,
        }
    }

    /// Starts a new environment and runs the invocation on it.
    async fn cold(
        &self,
        function: &Function,
        current: &Current,
        request_id: &str,
        request: InvokeRequest,
    ) -> Result<InvokeResult, DispatchError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let spec = self.environment_spec(function, current, &id);
        let (env, init) = Env::start(
            self.backend.as_ref(),
            spec,
            current.generation,
            Arc::clone(&function.name),
            self.logs.clone(),
        )
        .await?;
        match init {
            Ok(init) => {
                self.run(function, current, env, Some(init), request_id, request)
                    .await
            }
            Err(failure) => Ok(self
                .init_failed(
                    function,
                    current,
                    env,
                    failure,
                    request_id,
                    request.tail_log,
                )
                .await),
        }
    }

    async fn init_failed(
        &self,
        function: &Function,
        current: &Current,
        env: Env,
        failure: InitFailure,
        request_id: &str,
        tail_log: bool,
    ) -> InvokeResult {
        let (body, status_line) = match failure {
            InitFailure::Reported { body, error_type } => {
                let kind = error_type.unwrap_or_else(|| "Runtime.Unknown".into());
                (
                    body,
                    format!("INIT_REPORT Status: error\tError Type: {kind}\n"),
                )
            }
            InitFailure::Exited(status) => (
                exit_error(request_id, status),
                format!("INIT_REPORT Status: error\tError Type: Runtime.ExitError\t{status}\n"),
            ),
            InitFailure::TimedOut => (
                error_doc(
                    "Sandbox.Timedout",
                    &format!("RequestId: {request_id} Error: init timed out after 10.00 seconds"),
                ),
                "INIT_REPORT Status: timeout\n".into(),
            ),
        };
        let printed = env.output.collect().await;
        env.destroy().await;
        let mut log = printed.to_vec();
        log.extend_from_slice(status_line.as_bytes());
        log.extend_from_slice(report::start_line(request_id, "$LATEST").as_bytes());
        log.extend_from_slice(report::end_line(request_id).as_bytes());
        log.extend_from_slice(
            report::report_line(&Report {
                request_id: request_id.to_owned(),
                duration_ms: 0.0,
                memory_mb: current.deployment.spec.memory_mb,
                max_memory_used_mb: 0,
                init_duration_ms: None,
            })
            .as_bytes(),
        );
        let platform = Bytes::from(log[printed.len()..].to_vec());
        self.logs.write_platform(&function.name, platform);
        InvokeResult {
            request_id: request_id.to_owned(),
            body,
            function_error: Some(FunctionError::Unhandled),
            executed_version: "$LATEST",
            log_tail: tail_log.then(|| tail(&log)),
            cold: true,
        }
    }

    /// Runs one invocation on `env`, writes its log lines, and returns `env` to the pool or
    /// destroys it.
    async fn run(
        &self,
        function: &Function,
        current: &Current,
        env: Env,
        init: Option<Duration>,
        request_id: &str,
        request: InvokeRequest,
    ) -> Result<InvokeResult, DispatchError> {
        let spec = &current.deployment.spec;
        let start_line = report::start_line(request_id, "$LATEST");
        self.logs
            .write_platform(&function.name, Bytes::from(start_line.clone()));
        let began = Instant::now();
        let timeout = Duration::from_secs(u64::from(spec.timeout_s));
        let outcome = env
            .invoke(
                request_id,
                request.payload,
                &current.arn,
                request.client_context,
                timeout,
            )
            .await;
        let duration = began.elapsed();
        let printed = env.output.collect().await;

        // Platform lines: an exit note goes before END, a timeout note before REPORT.
        let mut before_end = String::new();
        let mut before_report = String::new();
        let (body, function_error, keep) = match outcome {
            Outcome::Response(body) => (body, None, true),
            Outcome::Error { body } => (body, Some(FunctionError::Handled), true),
            Outcome::ResponseTooLarge => (
                error_doc(
                    "Function.ResponseSizeTooLarge",
                    "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
                ),
                Some(FunctionError::Unhandled),
                true,
            ),
            Outcome::Exited(status) => {
                let oom = if status.oom_killed {
                    " (out of memory)"
                } else {
                    ""
                };
                before_end = format!(
                    "RequestId: {request_id} Error: Runtime exited with error: {status}{oom}\nRuntime.ExitError\n"
                );
                (
                    exit_error(request_id, status),
                    Some(FunctionError::Unhandled),
                    false,
                )
            }
            Outcome::TimedOut => {
                let message = report::timeout_message(spec.timeout_s);
                before_report = format!("{message}\n");
                let body = error_doc(
                    "Sandbox.Timedout",
                    &format!("RequestId: {request_id} Error: {message}"),
                );
                (body, Some(FunctionError::Unhandled), false)
            }
        };

        let mut lines = before_end;
        lines.push_str(&report::end_line(request_id));
        lines.push_str(&before_report);
        lines.push_str(&report::report_line(&Report {
            request_id: request_id.to_owned(),
            duration_ms: duration.as_secs_f64() * 1000.0,
            memory_mb: spec.memory_mb,
            max_memory_used_mb: env.max_memory_used_mb(),
            init_duration_ms: init.map(|d| d.as_secs_f64() * 1000.0),
        }));
        let log_tail = request.tail_log.then(|| {
            let mut all = Vec::with_capacity(start_line.len() + printed.len() + lines.len());
            all.extend_from_slice(start_line.as_bytes());
            all.extend_from_slice(&printed);
            all.extend_from_slice(lines.as_bytes());
            tail(&all)
        });
        self.logs.write_platform(&function.name, Bytes::from(lines));

        if keep {
            self.release(function, env);
        } else {
            env.destroy().await;
        }
        Ok(InvokeResult {
            request_id: request_id.to_owned(),
            body,
            function_error,
            executed_version: "$LATEST",
            log_tail,
            cold: init.is_some(),
        })
    }

    /// Returns an environment to its pool, unless its function moved on or went away.
    fn release(&self, function: &Function, env: Env) {
        let current_generation = function.current.read().expect("current lock").generation;
        let still_deployed = self
            .functions
            .read()
            .expect("functions lock")
            .get(function.name.as_ref())
            .is_some_and(|f| std::ptr::eq(f.as_ref(), function));
        if env.generation == current_generation && still_deployed {
            function
                .pool
                .lock()
                .expect("pool lock")
                .idle
                .push((env, Instant::now()));
        } else {
            self.destroy_all(std::iter::once(env));
        }
    }
}

fn error_doc(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

fn exit_error(request_id: &str, status: ExitStatus) -> Bytes {
    error_doc(
        "Runtime.ExitError",
        &format!("RequestId: {request_id} Error: Runtime exited with error: {status}"),
    )
}

/// The last 4 KB of a log, cut at a character boundary.
fn tail(log: &[u8]) -> Bytes {
    let mut start = log.len().saturating_sub(LOG_TAIL_BYTES);
    while start < log.len() && (log[start] & 0xC0) == 0x80 {
        start += 1;
    }
    Bytes::copy_from_slice(&log[start..])
}

async fn reclaim_loop(inner: std::sync::Weak<Inner>) {
    loop {
        let interval = match inner.upgrade() {
            Some(inner) => {
                inner.reclaim_idle(Instant::now());
                inner.config.keep_alive.scan_interval()
            }
            None => return,
        };
        tokio::time::sleep(interval).await;
    }
}

impl Inner {
    /// Destroys every idle environment the keep-alive policy says has expired at `now`,
    /// and every one whose runtime died while idle.
    fn reclaim_idle(&self, now: Instant) {
        let functions: Vec<_> = self
            .functions
            .read()
            .expect("functions lock")
            .values()
            .cloned()
            .collect();
        for function in functions {
            let expired: Vec<Env> = {
                let mut pool = function.pool.lock().expect("pool lock");
                let (old, keep): (Vec<_>, Vec<_>) =
                    pool.idle.drain(..).partition(|(env, since)| {
                        env.has_exited() || self.config.keep_alive.expired(*since, now)
                    });
                pool.idle = keep;
                old.into_iter().map(|(env, _)| env).collect()
            };
            self.destroy_all(expired);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_4_kb_on_a_character_boundary() {
        let mut log = "é".repeat(3000).into_bytes();
        log.extend_from_slice(b"END\n");
        let t = tail(&log);
        assert!(t.len() <= LOG_TAIL_BYTES);
        assert!(std::str::from_utf8(&t).unwrap().ends_with("END\n"));
    }
}
