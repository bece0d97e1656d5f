//! One execution environment as the dispatcher sees it: a sandbox, its Runtime API and its
//! output pump, driven through init and then its invocations (one at a time, or several for
//! a function whose `max_concurrency` allows it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ember_core::limits::{INIT_TIMEOUT_MS, SYNC_PAYLOAD_BYTES};
use ember_runtime_api::{Invocation, Phase, Reply, RuntimeApi};
use ember_sandbox::{Answer, Backend, Call, Environment, EnvironmentSpec, ExitStatus, Handler};
use tokio::sync::{oneshot, watch};

use crate::logs::LogSink;
use crate::output::Output;
use crate::provisioned::Slot;
use crate::{DispatchError, InitStages};

/// What is reported when the process's status could not be read.
const UNKNOWN_EXIT: ExitStatus = ExitStatus {
    code: None,
    signal: None,
    oom_killed: false,
};

/// How long an on-demand environment may take to initialize.
pub(crate) const INIT_TIMEOUT: Duration = Duration::from_millis(INIT_TIMEOUT_MS);

pub(crate) struct Env {
    pub generation: u64,
    /// Set while the environment is one of its version's provisioned ones.
    pub provisioned: Option<Slot>,
    /// Whether the environment's processes are frozen (idle, with freezing on).
    pub frozen: bool,
    /// Where the invocations go: the runtime's Runtime API, or the environment's own
    /// in-process handler.
    runner: Runner,
    sandbox: Box<dyn Environment>,
    exit: watch::Receiver<Option<ExitStatus>>,
    pub output: Output,
}

enum Runner {
    RuntimeApi(RuntimeApi),
    InProcess(Arc<dyn Handler>),
}

/// How an invocation ended, as the environment saw it.
pub(crate) enum Outcome {
    Response(Bytes),
    Error {
        body: Bytes,
    },
    ResponseTooLarge,
    Exited(ExitStatus),
    /// An in-process handler's code failed; the environment itself is fine.
    Failed {
        error_type: String,
        message: String,
        out_of_memory: bool,
    },
    TimedOut,
}

/// Why init did not finish.
pub(crate) enum InitFailure {
    /// The runtime posted `/init/error`.
    Reported {
        body: Bytes,
        error_type: Option<String>,
    },
    Exited(ExitStatus),
    TimedOut,
}

impl Env {
    /// Creates the sandbox and waits for the runtime's first `/next`.
    ///
    /// Returns the environment and where its init went, or the init failure together with
    /// the environment (so its output can be collected before it is destroyed).
    pub async fn start(
        backend: &dyn Backend,
        spec: EnvironmentSpec,
        generation: u64,
        function: Arc<str>,
        logs: LogSink,
        init_timeout: Duration,
    ) -> Result<(Env, Result<InitStages, InitFailure>), DispatchError> {
        let started = Instant::now();
        let mut sandbox = backend.create(spec).await?;
        let created = Instant::now();
        let sandbox_time = created - started;
        if let Some(handler) = sandbox.handler() {
            let output = Output::in_process(function, logs);
            let exit = sandbox.exit();
            let env = Env {
                generation,
                provisioned: None,
                frozen: false,
                runner: Runner::InProcess(handler),
                sandbox,
                exit,
                output,
            };
            let stages = InitStages {
                sandbox: sandbox_time,
                ..InitStages::default()
            };
            return Ok((env, Ok(stages)));
        }
        let listener = sandbox
            .take_runtime_api_listener()
            .ok_or(DispatchError::Internal(
                "the sandbox gave no Runtime API listener",
            ))?;
        let fd = sandbox
            .take_output()
            .ok_or(DispatchError::Internal("the sandbox gave no output pipe"))?;
        let exit = sandbox.exit();
        let (api, output) = match (
            RuntimeApi::serve(listener, SYNC_PAYLOAD_BYTES),
            Output::start(fd, function, logs),
        ) {
            (Ok(api), Ok(output)) => (api, output),
            (Err(e), _) | (_, Err(e)) => {
                sandbox.destroy().await;
                return Err(DispatchError::Io(e));
            }
        };
        let init = await_init(&api, &exit, init_timeout).await;
        let ready = Instant::now();
        if init.is_ok() {
            sandbox.init_done();
        }
        // Ember's runtimes connect before loading the function's code; a runtime that
        // connects only for its first `/next` has all its init counted as its own start.
        let connected = api
            .first_connection()
            .map_or(ready, |at| at.clamp(created, ready));
        let stages = InitStages {
            sandbox: sandbox_time,
            runtime: connected - created,
            code: ready - connected,
        };
        let env = Env {
            generation,
            provisioned: None,
            frozen: false,
            runner: Runner::RuntimeApi(api),
            sandbox,
            exit,
            output,
        };
        Ok((env, init.map(|()| stages)))
    }

    /// Whether the environment runs its code in this process (a [`Handler`]), with no
    /// runtime process.
    pub fn in_process(&self) -> bool {
        matches!(self.runner, Runner::InProcess(_))
    }

    /// Hands one event to the runtime and waits for its answer, its exit or the deadline.
    /// `start`: the invocation's START line, for an in-process environment to log just
    /// before what the invocation printed (and to leave if it printed nothing).
    pub async fn invoke(
        &self,
        request_id: &str,
        payload: Bytes,
        function_arn: &str,
        client_context: Option<String>,
        timeout: Duration,
        start: &mut Option<String>,
    ) -> Outcome {
        let api = match &self.runner {
            Runner::RuntimeApi(api) => api,
            Runner::InProcess(handler) => {
                let call = Call {
                    request_id: request_id.to_owned(),
                    payload,
                    function_arn: function_arn.to_owned(),
                    timeout,
                };
                // The handler stops the code at the timeout itself; this bounds the rest.
                let grace = timeout + Duration::from_secs(1);
                let answer = match tokio::time::timeout(grace, handler.invoke(call)).await {
                    Ok(handled) => {
                        self.output.push(start, handled.printed).await;
                        Ok(handled.answer)
                    }
                    Err(elapsed) => Err(elapsed),
                };
                return match answer {
                    Ok(Answer::Response(body)) => Outcome::Response(body),
                    Ok(Answer::Failed {
                        error_type,
                        message,
                        out_of_memory,
                    }) => Outcome::Failed {
                        error_type,
                        message,
                        out_of_memory,
                    },
                    Ok(Answer::ResponseTooLarge) => Outcome::ResponseTooLarge,
                    Ok(Answer::TimedOut) | Err(_) => Outcome::TimedOut,
                };
            }
        };
        let (tx, rx) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + timeout;
        let deadline_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(timeout)
            .as_millis() as u64;
        let invocation = Invocation {
            request_id: request_id.to_owned(),
            payload,
            deadline_ms,
            function_arn: function_arn.to_owned(),
            trace_id: format!(
                "Root=1-{:08x}-{}",
                deadline_ms / 1000,
                &request_id.replace('-', "")[..24]
            ),
            client_context,
            reply: tx,
        };
        let mut exit = self.exit.clone();
        let run = async {
            api.invoke(invocation).await;
            tokio::select! {
                reply = rx => match reply {
                    Ok(Reply::Response(body)) => Outcome::Response(body),
                    Ok(Reply::Error { body, .. }) => Outcome::Error { body },
                    Ok(Reply::ResponseTooLarge) => Outcome::ResponseTooLarge,
                    Err(_) => Outcome::Exited(self.wait_exit().await),
                },
                status = async { exit.wait_for(Option::is_some).await.ok().and_then(|s| *s) } => {
                    Outcome::Exited(status.unwrap_or(UNKNOWN_EXIT))
                }
            }
        };
        match tokio::time::timeout_at(deadline, run).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::TimedOut,
        }
    }

    async fn wait_exit(&self) -> ExitStatus {
        let mut exit = self.exit.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            exit.wait_for(Option::is_some).await.map(|_| ())
        })
        .await;
        self.exit.borrow().unwrap_or(UNKNOWN_EXIT)
    }

    /// Freezes the idle environment; remembers whether that worked.
    pub fn freeze(&mut self) {
        self.frozen = self.sandbox.freeze();
    }

    /// Lets a frozen environment run again.
    pub fn thaw(&mut self) {
        if self.frozen {
            self.sandbox.thaw();
            self.frozen = false;
        }
    }

    /// Whether the runtime process has exited.
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Peak memory so far, in MB, rounded up.
    pub fn max_memory_used_mb(&self) -> u64 {
        self.sandbox
            .max_memory_used()
            .map_or(0, |b| b.div_ceil(1024 * 1024))
    }

    /// Stops the runtime and releases the sandbox.
    pub async fn destroy(mut self) {
        self.sandbox.destroy().await;
        drop(self.runner);
    }
}

/// Waits for the runtime's first `/next`, its `/init/error` or its exit, up to `timeout`.
async fn await_init(
    api: &RuntimeApi,
    exit: &watch::Receiver<Option<ExitStatus>>,
    timeout: Duration,
) -> Result<(), InitFailure> {
    let mut phase = api.phase();
    let mut exited = exit.clone();
    let waited = tokio::time::timeout(timeout, async {
        tokio::select! {
            p = async { phase.wait_for(|p| *p != Phase::Initializing).await.ok().map(|p| p.clone()) } => p,
            _ = async { exited.wait_for(Option::is_some).await.map(|_| ()) } => None,
        }
    })
    .await;
    // A runtime that reports its init error and exits may be seen exiting first.
    let reported = match api.phase().borrow().clone() {
        Phase::InitFailed { body, error_type } => Some(InitFailure::Reported { body, error_type }),
        _ => None,
    };
    match (waited, reported) {
        (_, Some(failure)) => Err(failure),
        (Ok(Some(Phase::Ready)), None) => Ok(()),
        (Err(_), None) => Err(InitFailure::TimedOut),
        (Ok(_), None) => {
            let status = exit.borrow().unwrap_or(UNKNOWN_EXIT);
            Err(InitFailure::Exited(status))
        }
    }
}
