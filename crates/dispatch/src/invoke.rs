//! Running one invocation on an environment: admission, the cold start and its init
//! failures, handing the event over, the outcome, the log lines, and returning the
//! environment to its pool or destroying it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ember_core::RuntimeFamily;
use ember_core::limits::LOG_TAIL_BYTES;
use ember_core::report::{self, Report};
use ember_core::usage::Usage;
use ember_policy::Throttle;
use ember_sandbox::{EnvironmentSpec, ExitStatus};

use crate::environment::{Env, InitFailure, Outcome};
use crate::metrics::ErrorKind;
use crate::shared::{Lease, Starting};
use crate::{
    Current, DispatchError, Function, FunctionError, InitStages, Inner, InvokeRequest,
    InvokeResult, Timing,
};

/// Counts a call as busy in its pool until it is done: released with its environment, or
/// dropped on any other way out (a crash, a failed start, a throttle).
pub(crate) struct Busy<'a> {
    function: &'a Function,
    pub(crate) done: bool,
}

/// What a call that found no idle environment ends up with.
pub(crate) enum Paced {
    /// An environment that came back to the pool.
    Back(Env),
    /// Room in a shared environment.
    Joined(Arc<Env>),
    /// A scale-up token: start a new environment.
    New,
}

impl<'a> Busy<'a> {
    pub fn new(function: &'a Function) -> Busy<'a> {
        Busy {
            function,
            done: false,
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.function
                .pool
                .lock()
                .expect("pool lock")
                .finish(Instant::now());
        }
    }
}

impl Inner {
    /// Destroys environments in the background; [`Dispatcher::shutdown`] waits for them.
    pub(crate) fn destroy_all(&self, envs: impl IntoIterator<Item = Env>) {
        for env in envs {
            self.destroying.send_modify(|n| *n += 1);
            let destroying = self.destroying.clone();
            tokio::spawn(async move {
                env.destroy().await;
                destroying.send_modify(|n| *n -= 1);
            });
        }
    }

    /// A call that found no idle environment: takes a scale-up token for a new one, or
    /// waits (up to the pacing's `wait`) for a busy environment to come back (or to have
    /// room, if shared) or a token to come.
    pub(crate) async fn paced(
        &self,
        function: &Function,
        current: &Current,
    ) -> Result<Paced, DispatchError> {
        let max = current.deployment.spec.max_concurrency;
        let name = &function.name;
        let pacing = &self.config.pacing;
        let deadline = Instant::now() + pacing.wait;
        let mut waited = false;
        // Counted before the first look: an environment released after it wakes this call.
        let _waiting = function.released.waiter();
        loop {
            let released = function.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if max > 1
                && let Some(env) = function.join(current.generation, max)
            {
                return Ok(Paced::Joined(env));
            }
            let mut dead = Vec::new();
            let back = function
                .pool
                .lock()
                .expect("pool lock")
                .take(|env| !env.has_exited(), &mut dead);
            self.destroy_all(dead);
            if let Some((env, _)) = back {
                return Ok(Paced::Back(env));
            }
            let now = Instant::now();
            let until_token = match self.concurrency.take_token(pacing, name, now) {
                Ok(()) => return Ok(Paced::New),
                Err(until_token) => until_token,
            };
            if !waited {
                waited = true;
                self.metrics.scale_up_wait(name);
            }
            if now >= deadline {
                return Err(DispatchError::Throttled(Throttle::ScaleUpRate {
                    retry_after: until_token,
                }));
            }
            tokio::select! {
                () = &mut released => {}
                () = tokio::time::sleep(until_token.min(deadline - now)) => {}
            }
        }
    }

    /// Creates an environment for the function's current deployment and waits for its
    /// init, counting it as initializing meanwhile. A `provisioned` one is told so
    /// (`AWS_LAMBDA_INITIALIZATION_TYPE`) and may take longer to initialize.
    pub(crate) async fn start_env(
        &self,
        function: &Function,
        current: &Current,
        provisioned: bool,
    ) -> Result<(Env, Result<InitStages, InitFailure>), DispatchError> {
        let backend = self.backends.get(current.deployment.spec.backend())?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let spec = self.environment_spec(function, current, &id, provisioned);
        let init_timeout = if provisioned {
            crate::provisioned::init_timeout(current.deployment.spec.timeout_s)
        } else {
            crate::environment::INIT_TIMEOUT
        };
        function.initializing.fetch_add(1, Ordering::Relaxed);
        let started = Env::start(
            backend.as_ref(),
            spec,
            current.generation,
            Arc::clone(&function.name),
            self.logs.clone(),
            init_timeout,
        )
        .await;
        function.initializing.fetch_sub(1, Ordering::Relaxed);
        started
    }

    /// Starts an environment ahead of an expected call, as the keep-alive plan asked.
    pub(crate) async fn prewarm(&self, function: &Function, keep_for: Duration) {
        let current = Arc::clone(&function.current.read().expect("current lock"));
        if self
            .concurrency
            .take_token(&self.config.pacing, &function.name, Instant::now())
            .is_err()
        {
            return;
        }
        let started = self.start_env(function, &current, false).await;
        match started {
            Ok((env, Ok(init))) => {
                self.metrics.prewarmed(&function.name, init.total());
                if self.still_current(function, &env) {
                    function.pool.lock().expect("pool lock").put_prewarmed(
                        env,
                        keep_for,
                        Instant::now(),
                    );
                    function.released.wake();
                } else {
                    self.destroy_all(std::iter::once(env));
                }
            }
            Ok((env, Err(_))) => {
                tracing::warn!(function = %function.name, "a pre-warmed environment failed to initialize");
                self.destroy_all(std::iter::once(env));
            }
            Err(e) => {
                tracing::warn!(function = %function.name, error = %e, "could not pre-warm an environment");
            }
        }
    }

    fn environment_spec(
        &self,
        function: &Function,
        current: &Current,
        id: &str,
        provisioned: bool,
    ) -> EnvironmentSpec {
        let spec = &current.deployment.spec;
        let argv = match (spec.family(), &self.config.python, &self.config.node) {
            (RuntimeFamily::Python, Some(python), _) => vec![
                python.display().to_string(),
                "-u".into(),
                ember_runtime_api::runtimes::PYTHON_BOOTSTRAP_PATH.into(),
            ],
            (RuntimeFamily::Node, _, Some(node)) => {
                vec![
                    node.display().to_string(),
                    ember_runtime_api::runtimes::NODE_BOOTSTRAP_PATH.into(),
                ]
            }
            (RuntimeFamily::Wasm, _, _) => vec![format!("/var/task/{}", spec.handler)],
            _ => vec!["/var/task/bootstrap".into()],
        };
        let date = ember_core::time::log_stream_date(std::time::SystemTime::now());
        let mut env: Vec<(String, String)> = vec![
            ("_HANDLER".into(), spec.handler.clone()),
            ("LAMBDA_TASK_ROOT".into(), "/var/task".into()),
            ("LAMBDA_RUNTIME_DIR".into(), "/var/runtime".into()),
            ("AWS_LAMBDA_FUNCTION_NAME".into(), function.name.to_string()),
            (
                "AWS_LAMBDA_FUNCTION_VERSION".into(),
                function.version.to_string(),
            ),
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
                format!("{date}/[{}]{id}", function.version),
            ),
            (
                "AWS_LAMBDA_INITIALIZATION_TYPE".into(),
                if provisioned {
                    "provisioned-concurrency"
                } else {
                    "on-demand"
                }
                .into(),
            ),
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
        if spec.max_concurrency > 1 {
            env.push((
                "AWS_LAMBDA_MAX_CONCURRENCY".into(),
                spec.max_concurrency.to_string(),
            ));
        }
        // The function's own variables win over the platform's defaults (PATH, NODE_PATH, …);
        // the reserved ones cannot be set at all (validation refuses them).
        env.retain(|(k, _)| !spec.environment.contains_key(k));
        env.extend(spec.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
        EnvironmentSpec {
            id: id.to_owned(),
            memory_mb: spec.memory_mb,
            ephemeral_mb: spec.ephemeral_mb,
            code_dir: current.deployment.code_dir.clone(),
            runtime_dir: self.config.runtime_dir.clone(),
            layers: current.deployment.layer_dirs.clone(),
            argv,
            env,
            egress: spec.network == ember_core::Network::Egress,
            reuse_instance: spec.reuse_instance,
        }
    }

    /// Starts a new environment and runs the invocation on it.
    pub(crate) async fn cold<'a>(
        &self,
        function: &'a Function,
        current: &Current,
        request_id: &str,
        request: InvokeRequest,
        busy: Busy<'a>,
        share: Option<Starting<'a>>,
    ) -> Result<InvokeResult, DispatchError> {
        let started = self.start_env(function, current, false).await;
        let (env, init) = started?;
        self.metrics.cold_start(&function.name);
        match init {
            Ok(init) => {
                let lease = self.lease(function, env, busy, share);
                self.run(function, current, lease, Some(init), request_id, request)
                    .await
            }
            Err(failure) => Ok(self
                .init_failed(function, current, env, failure, request_id, &request)
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
        request: &InvokeRequest,
    ) -> InvokeResult {
        let tail_log = request.tail_log;
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
        log.extend_from_slice(report::start_line(request_id, &function.version).as_bytes());
        log.extend_from_slice(report::end_line(request_id).as_bytes());
        let report = Report {
            request_id,
            duration_ms: 0.0,
            memory_mb: current.deployment.spec.memory_mb,
            max_memory_used_mb: 0,
            init_duration_ms: None,
        };
        log.extend_from_slice(report::report_line(&report).as_bytes());
        self.metrics.invoked(
            &function.counted,
            Duration::ZERO,
            None,
            Some(ErrorKind::init),
        );
        self.meter.add(
            &function.name,
            &function.version,
            &Usage::invocation(report.billed_ms(), report.memory_mb, false),
        );
        let platform = Bytes::from(log[printed.len()..].to_vec());
        self.logs.write_platform(&function.name, platform);
        InvokeResult {
            request_id: request_id.to_owned(),
            body,
            function_error: Some(FunctionError::Unhandled),
            executed_version: Arc::clone(&function.version),
            log_tail: tail_log.then(|| tail(&log)),
            timing: Timing {
                placement: request.received.map_or(Duration::ZERO, |at| at.elapsed()),
                ..Timing::default()
            },
        }
    }

    /// Runs one invocation on its leased environment, writes its log lines, and returns the
    /// environment to the pool or destroys it.
    pub(crate) async fn run(
        &self,
        function: &Function,
        current: &Current,
        env: Lease<'_>,
        init: Option<InitStages>,
        request_id: &str,
        request: InvokeRequest,
    ) -> Result<InvokeResult, DispatchError> {
        let spec = &current.deployment.spec;
        let start_line = report::start_line(request_id, &function.version);
        // A copy only for a caller who asked for the log's tail: sharing the line instead
        // cost an allocation and two atomic counts on every call.
        let tail_start = request.tail_log.then(|| start_line.clone());
        // A runtime process prints as it runs, after this line. An in-process call's
        // output is handed over when it ends: its START line goes out then, just before
        // what it printed or, when it printed nothing, with its END and REPORT lines, in
        // one entry of the log's queue instead of two.
        let mut start = Some(start_line);
        if !env.in_process()
            && let Some(start) = start.take()
        {
            self.logs.write_platform(&function.name, Bytes::from(start));
        }
        let began = Instant::now();
        // Placement is the time to here that init does not account for.
        let placement = request
            .received
            .map_or(Duration::ZERO, |at| began - at)
            .saturating_sub(init.map_or(Duration::ZERO, |i| i.total()));
        let timeout = Duration::from_secs(u64::from(spec.timeout_s));
        let outcome = env
            .invoke(
                request_id,
                request.payload,
                request.invoked_arn.as_deref().unwrap_or(&current.arn),
                request.client_context,
                timeout,
                &mut start,
            )
            .await;
        let duration = began.elapsed();
        let printed = env.output.collect().await;

        // Platform lines: an exit note goes before END, a timeout note before REPORT.
        let mut before_end = String::new();
        let mut before_report = String::new();
        let error_kind = match &outcome {
            Outcome::Response(_) => None,
            Outcome::Error { .. } => Some(ErrorKind::handled),
            Outcome::ResponseTooLarge => Some(ErrorKind::response_too_large),
            Outcome::Exited(status) if status.oom_killed => Some(ErrorKind::out_of_memory),
            Outcome::Exited(_) => Some(ErrorKind::crashed),
            Outcome::Failed {
                out_of_memory: true,
                ..
            } => Some(ErrorKind::out_of_memory),
            Outcome::Failed { .. } => Some(ErrorKind::crashed),
            Outcome::TimedOut => Some(ErrorKind::timeout),
        };
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
            Outcome::Failed {
                error_type,
                message,
                ..
            } => {
                let message = format!("RequestId: {request_id} Error: {message}");
                before_end = format!("{message}\n{error_type}\n");
                (
                    error_doc(&error_type, &message),
                    Some(FunctionError::Unhandled),
                    true,
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

        // The START line, if it has not gone out yet, and the lines that end the call.
        let mut lines = start.unwrap_or_default();
        let ending = lines.len();
        lines.reserve(before_end.len() + before_report.len() + 256);
        lines.push_str(&before_end);
        report::push_end_line(&mut lines, request_id);
        lines.push_str(&before_report);
        let report = Report {
            request_id,
            duration_ms: duration.as_secs_f64() * 1000.0,
            memory_mb: spec.memory_mb,
            max_memory_used_mb: env.max_memory_used_mb(),
            init_duration_ms: init.map(|i| i.total().as_secs_f64() * 1000.0),
        };
        report::push_report_line(&mut lines, &report);
        let log_tail = tail_start.map(|start_line| {
            let mut all = Vec::with_capacity(start_line.len() + printed.len() + lines.len());
            all.extend_from_slice(start_line.as_bytes());
            all.extend_from_slice(&printed);
            all.extend_from_slice(&lines.as_bytes()[ending..]);
            tail(&all)
        });
        self.logs.write_platform(&function.name, Bytes::from(lines));

        self.metrics.invoked(
            &function.counted,
            duration,
            init.map(|i| i.total()),
            error_kind,
        );
        self.meter.add(
            &function.name,
            &function.version,
            &Usage::invocation(
                report.billed_ms(),
                spec.memory_mb,
                env.provisioned.is_some(),
            ),
        );
        if function.provisioned.target() > 0 {
            self.metrics
                .provisioned_call(&function.name, env.provisioned.is_some());
        }
        match env {
            Lease::Own(env, busy) if keep => self.release(function, current, env, busy),
            Lease::Own(env, busy) => {
                // A crashed or timed-out environment is torn down after the caller has its
                // answer: with an OCI backend that takes tens of milliseconds.
                drop(busy);
                self.destroy_all(std::iter::once(env));
            }
            Lease::Shared(env) => self.unshare(function, current, env, keep),
        }
        Ok(InvokeResult {
            request_id: request_id.to_owned(),
            body,
            function_error,
            executed_version: Arc::clone(&function.version),
            log_tail,
            timing: Timing {
                placement,
                init,
                handler: duration,
            },
        })
    }

    /// Whether `env` still belongs to its function's current deployment: one load of the
    /// function's live generation, which a deploy moves on and a removal clears.
    pub(crate) fn still_current(&self, function: &Function, env: &Env) -> bool {
        function.live.load(Ordering::Acquire) == env.generation
    }

    /// Ends a call and returns its environment to the pool, unless its function moved on
    /// or went away, or the keep-alive plan releases it at once. `current`: the deployment
    /// the call started under.
    pub(crate) fn release(
        &self,
        function: &Function,
        current: &Current,
        mut env: Env,
        mut busy: Busy<'_>,
    ) {
        if !self.still_current(function, &env) {
            drop(busy);
            self.destroy_all(std::iter::once(env));
            return;
        }
        // Usually the call's deployment is the environment's; the pool's is read only when
        // the call began under another.
        let latest;
        let current = if current.generation == env.generation {
            current
        } else {
            latest = Arc::clone(&function.current.read().expect("current lock"));
            &*latest
        };
        let spec = &current.deployment.spec;
        if spec.freeze_idle {
            env.freeze();
        }
        let policy = self.keep_alive(spec);
        let p = &function.provisioned;
        if env.provisioned.is_some() && p.allocated() > p.target() {
            // The configuration shrank while it ran: it stays as an on-demand environment.
            env.provisioned = None;
        }
        let released = {
            let mut pool = function.pool.lock().expect("pool lock");
            let now = Instant::now();
            pool.finish(now);
            busy.done = true;
            let provisioned = env.provisioned.is_some();
            pool.put_idle(env, provisioned, &policy, now)
        };
        function.released.wake();
        self.destroy_all(released);
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
