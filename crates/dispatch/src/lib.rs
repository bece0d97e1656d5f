//! The invoke path: resolve → admit → take a warm environment or start one → hand the event
//! over → await the outcome → release → record.
//!
//! - [`Dispatcher`]: the entry point. Holds every deployed function in memory (the hot path
//!   never touches the store), its warm pool, and the account-wide concurrency count.
//! - `invoke`: one invocation on one environment, cold start and log lines included.
//! - `environment`: one environment through init and invocations.
//! - `output`: an environment's stdout/stderr into the function's log.
//! - [`logs`]: the function log files and their live feed.
//!
//! Every deployed version of a function (`$LATEST` and each published number) has its own
//! warm pool. Aliases map to a version, optionally sending a weighted share of calls to a
//! second one; they are resolved here, in memory, on every call.
//!
//! Each pool has a *generation* that changes whenever its code or configuration does.
//! An environment belongs to one generation; when the function moves on, idle environments
//! of older generations are destroyed at once and busy ones when their invocation ends.

mod admission;
mod environment;
mod invoke;
pub mod logs;
mod metrics;
mod output;
mod provisioned;
mod shard;
mod shared;
mod stats;
mod usage;
mod wakeup;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ember_core::arn::Qualifier;
use ember_core::{
    FunctionSpec, Isolation, KeepAliveSetting, Network, RuntimeFamily, ValidationError,
};
use ember_policy::{Adaptive, Admission, KeepAlive, Pool, ReservationError, ScalePacing, Throttle};
use ember_sandbox::{Backend, SandboxError};

use environment::Env;
pub use logs::LogSink;
pub use provisioned::{ProvisionedState, ProvisionedStatus};
pub use stats::{Environments, FunctionStats, SLOT as STATS_SLOT};

/// Settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// The server's keep-alive policy, for functions that do not choose their own.
    pub keep_alive: KeepAlive,
    /// The adaptive policy's settings, for functions that choose `adaptive`.
    pub adaptive: Adaptive,
    pub admission: Admission,
    pub pacing: ScalePacing,
    /// Host directory with Ember's runtimes, mounted at `/var/runtime`.
    pub runtime_dir: PathBuf,
    /// The Python interpreter, by a path that exists inside environments too.
    pub python: Option<PathBuf>,
    /// The Node.js binary, likewise.
    pub node: Option<PathBuf>,
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
        if self.node.is_some() {
            families.push(RuntimeFamily::Node);
        }
        families
    }
}

/// A function version as deployed: its configuration and its unpacked code.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub spec: FunctionSpec,
    pub code_dir: PathBuf,
    /// The function's layers, unpacked, in order.
    pub layer_dirs: Vec<PathBuf>,
    /// `None` for `$LATEST`, else the published version number.
    pub version: Option<u32>,
}

/// Where an alias sends invocations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AliasRoute {
    /// `None` for `$LATEST`.
    pub version: Option<u32>,
    /// A second version and the share of invocations (0–1) it receives.
    pub additional: Option<(u32, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("function not found: {0}")]
    FunctionNotFound(String),
    #[error("{}", throttle_message(.0))]
    Throttled(Throttle),
    #[error("could not start an execution environment")]
    Sandbox(#[from] SandboxError),
    #[error("execution environment I/O failed")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

fn throttle_message(throttle: &Throttle) -> String {
    match throttle {
        Throttle::AccountConcurrency { limit } => format!(
            "Rate Exceeded: the {limit} concurrent executions shared by functions without reserved concurrency are in use"
        ),
        Throttle::ReservedConcurrency { limit: 0 } => {
            "Rate Exceeded: the function's reserved concurrency is 0, which disables it".into()
        }
        Throttle::ReservedConcurrency { limit } => format!(
            "Rate Exceeded: the function's reserved concurrency of {limit} is in use"
        ),
        Throttle::ScaleUpRate { .. } => {
            "Rate Exceeded: the function is starting new execution environments faster than its scale-up rate allows"
                .into()
        }
    }
}

/// One invocation request.
#[derive(Debug, Clone, Default)]
pub struct InvokeRequest {
    pub payload: Bytes,
    /// Return the last 4 KB of this invocation's log.
    pub tail_log: bool,
    /// Decoded `X-Amz-Client-Context`, handed to the runtime.
    pub client_context: Option<String>,
    /// The ARN the caller used, for the runtime's `invoked_function_arn`; the function's
    /// own ARN when absent.
    pub invoked_arn: Option<String>,
    /// The request id to run under (an asynchronous event keeps its id across retries);
    /// a new one when absent.
    pub request_id: Option<String>,
    /// How long to wait for a concurrency slot before the call is throttled (an
    /// asynchronous event waits; a synchronous call gets its 429 at once).
    pub wait_for_capacity: Option<std::time::Duration>,
    /// When the call reached the dispatcher (set there): placement is timed from it.
    pub received: Option<Instant>,
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
    /// `$LATEST` or the version number that ran.
    pub executed_version: Arc<str>,
    pub log_tail: Option<Bytes>,
    pub timing: Timing,
}

/// Where a new environment's init went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InitStages {
    /// Creating the sandbox and starting the runtime's process inside it.
    pub sandbox: Duration,
    /// The runtime's own start, up to its first connection to the Runtime API.
    pub runtime: Duration,
    /// The function's init: from that connection to the runtime's first `/next`.
    pub code: Duration,
}

impl InitStages {
    pub fn total(&self) -> Duration {
        self.sandbox + self.runtime + self.code
    }
}

/// Where an invocation's time went inside Ember, stage by stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    /// From the call's arrival at the dispatcher to the event's hand-over, less `init`:
    /// admission, choosing (or waiting for) an environment, a thaw.
    pub placement: Duration,
    /// A cold start's init, when this call started its environment.
    pub init: Option<InitStages>,
    /// The function's handler: the event handed over until its answer.
    pub handler: Duration,
}

/// The key of a version's pool: `name` for `$LATEST`, `name:N` for version N.
fn pool_key(name: &str, version: Option<u32>) -> String {
    match version {
        None => name.to_owned(),
        Some(v) => format!("{name}:{v}"),
    }
}

/// Counts of one function's environments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub idle: usize,
    pub busy: usize,
}

/// One deployed version of a function and its warm pool.
struct Function {
    /// Its key in the pool map: `name` or `name:N`.
    key: Arc<str>,
    name: Arc<str>,
    /// `$LATEST` or the version number.
    version: Arc<str>,
    current: RwLock<Arc<Current>>,
    /// The generation of `current`, or 0 once the function is removed: whether an
    /// environment is still current is one load ([`Inner::still_current`]).
    live: AtomicU64,
    pool: Mutex<Pool<Env>>,
    /// Woken when an environment returns to the pool, for calls waiting on the scale-up pace.
    released: wakeup::Wakeup,
    /// Environments being started.
    initializing: AtomicU32,
    provisioned: provisioned::Provisioned,
    /// Environments serving several calls at once (`max_concurrency` above 1).
    shared: Mutex<shared::Shared>,
    counted: metrics::Counted,
}

struct Current {
    deployment: Deployment,
    generation: u64,
    arn: String,
}

impl Function {
    /// Takes every idle environment out of the pool.
    fn take_idle(&self) -> Vec<Env> {
        self.pool.lock().expect("pool lock").drain()
    }
}

/// The sandbox backends this server can run, by isolation, and why the others are missing.
#[derive(Clone, Default)]
pub struct Backends {
    available: BTreeMap<Isolation, Arc<dyn Backend>>,
    missing: BTreeMap<Isolation, String>,
    /// Why functions cannot have egress here, if they cannot.
    no_egress: Option<String>,
}

impl Backends {
    pub fn new() -> Backends {
        Backends::default()
    }

    pub fn add(&mut self, isolation: Isolation, backend: Arc<dyn Backend>) {
        self.missing.remove(&isolation);
        self.available.insert(isolation, backend);
    }

    /// Records that `isolation` cannot run here, and why (shown to users who ask for it).
    pub fn unavailable(&mut self, isolation: Isolation, reason: String) {
        self.missing.insert(isolation, reason);
    }

    pub fn get(&self, isolation: Isolation) -> Result<&Arc<dyn Backend>, SandboxError> {
        self.available
            .get(&isolation)
            .ok_or_else(|| SandboxError::Unsupported {
                backend: isolation.as_str(),
                reason: self.reason(isolation),
            })
    }

    fn reason(&self, isolation: Isolation) -> String {
        self.missing
            .get(&isolation)
            .cloned()
            .unwrap_or_else(|| "it is not configured".into())
    }

    /// Checks that a function's isolation can run here.
    pub fn check(&self, isolation: Isolation) -> Result<(), ValidationError> {
        if self.available.contains_key(&isolation) {
            return Ok(());
        }
        Err(ValidationError::UnavailableIsolation {
            given: isolation,
            reason: self.reason(isolation),
            available: self
                .available
                .keys()
                .map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Records that this server cannot give functions egress, and why.
    pub fn without_egress(&mut self, reason: String) {
        self.no_egress = Some(reason);
    }

    /// Checks that a function's network mode can be had here.
    pub fn check_network(&self, network: Network) -> Result<(), ValidationError> {
        match (network, &self.no_egress) {
            (Network::Egress, Some(reason)) => {
                Err(ValidationError::UnavailableEgress(reason.clone()))
            }
            _ => Ok(()),
        }
    }

    pub fn isolations(&self) -> Vec<Isolation> {
        self.available.keys().copied().collect()
    }
}

struct Inner {
    backends: Backends,
    config: DispatchConfig,
    /// Looked up on every call, with a hash that is fast on short names.
    functions: RwLock<HashMap<String, Arc<Function>, foldhash::fast::RandomState>>,
    concurrency: admission::Concurrency,
    metrics: metrics::Metrics,
    meter: usage::Meter,
    history: stats::History,
    generations: AtomicU64,
    logs: LogSink,
    /// Aliases by `function:alias`.
    aliases: RwLock<HashMap<String, AliasRoute>>,
    /// Environments being destroyed in the background.
    destroying: tokio::sync::watch::Sender<usize>,
}

/// The invoke path and the warm pools. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    /// The runtime families this server can run: the host's interpreters, and `wasm`
    /// where the wasm engine is set up.
    pub fn available_runtimes(&self) -> Vec<RuntimeFamily> {
        let mut families = self.inner.config.available_runtimes();
        if self.inner.backends.available.contains_key(&Isolation::Wasm) {
            families.push(RuntimeFamily::Wasm);
        }
        families
    }

    /// Creates the dispatcher and starts reclaiming idle environments.
    pub fn new(backends: Backends, config: DispatchConfig, logs: LogSink) -> Dispatcher {
        let inner = Arc::new(Inner {
            backends,
            config,
            functions: RwLock::new(HashMap::default()),
            concurrency: admission::Concurrency::default(),
            metrics: metrics::Metrics::default(),
            meter: usage::Meter::default(),
            history: stats::History::default(),
            generations: AtomicU64::new(0),
            logs,
            aliases: RwLock::new(HashMap::new()),
            destroying: tokio::sync::watch::Sender::new(0),
        });
        tokio::spawn(reclaim_loop(Arc::downgrade(&inner)));
        Dispatcher { inner }
    }

    pub fn config(&self) -> &DispatchConfig {
        &self.inner.config
    }

    pub fn backends(&self) -> &Backends {
        &self.inner.backends
    }

    pub fn logs(&self) -> &LogSink {
        &self.inner.logs
    }

    /// Deploys a function version or replaces `$LATEST`'s code and configuration.
    /// Environments of the previous deployment are retired.
    pub fn deploy(&self, deployment: Deployment) {
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let name = deployment.spec.name.clone();
        let key = pool_key(&name, deployment.version);
        let version: Arc<str> = deployment
            .version
            .map_or_else(|| Arc::from("$LATEST"), |v| Arc::from(v.to_string()));
        let config = &self.inner.config;
        let arn = ember_core::arn::function_arn(&config.region, &config.account, &name, None);
        let current = Arc::new(Current {
            deployment,
            generation,
            arn,
        });
        let mut functions = self.inner.functions.write().expect("functions lock");
        match functions.entry(key) {
            Entry::Occupied(entry) => {
                let function = Arc::clone(entry.get());
                drop(functions);
                *function.current.write().expect("current lock") = current;
                function.live.store(generation, Ordering::Release);
                self.inner.destroy_all(function.take_idle());
                self.inner.reconcile_provisioned(&function);
            }
            Entry::Vacant(entry) => {
                let key = Arc::from(entry.key().as_str());
                entry.insert(Arc::new(Function {
                    key,
                    name: Arc::from(name.as_str()),
                    version,
                    current: RwLock::new(current),
                    live: AtomicU64::new(generation),
                    pool: Mutex::new(Pool::default()),
                    released: wakeup::Wakeup::default(),
                    initializing: AtomicU32::new(0),
                    provisioned: provisioned::Provisioned::default(),
                    shared: Mutex::new(shared::Shared::default()),
                    counted: self.inner.metrics.counted(&name),
                }));
            }
        }
    }

    /// Removes a function, all its versions and aliases; their environments are
    /// destroyed (busy ones when they finish).
    pub fn remove(&self, name: &str) {
        let prefix = format!("{name}:");
        let removed: Vec<Arc<Function>> = {
            let mut functions = self.inner.functions.write().expect("functions lock");
            let keys: Vec<String> = functions
                .keys()
                .filter(|k| *k == name || k.starts_with(&prefix))
                .cloned()
                .collect();
            keys.iter().filter_map(|k| functions.remove(k)).collect()
        };
        for function in &removed {
            function.live.store(0, Ordering::Release);
        }
        self.inner
            .aliases
            .write()
            .expect("aliases lock")
            .retain(|k, _| !k.starts_with(&prefix));
        for function in removed {
            self.inner.destroy_all(function.take_idle());
        }
        self.inner.concurrency.forget(name);
    }

    /// Sets a function's reserved concurrency (`None` removes it). Refused when it would
    /// leave the account's unreserved concurrency below its minimum.
    pub fn reserve(&self, name: &str, reservation: Option<u32>) -> Result<(), ReservationError> {
        self.inner
            .concurrency
            .reserve(&self.inner.config.admission, name, reservation)
    }

    /// Restores a stored reservation at startup.
    pub fn restore_reservation(&self, name: &str, reservation: u32) {
        self.inner.concurrency.restore(name, reservation);
    }

    /// A function's reserved concurrency.
    pub fn reserved(&self, name: &str) -> Option<u32> {
        self.inner.concurrency.reserved(name)
    }

    /// The concurrency left for functions without a reservation.
    pub fn unreserved_limit(&self) -> u32 {
        self.inner
            .config
            .admission
            .unreserved_limit(self.inner.concurrency.reserved_total())
    }

    /// Sets how many environments of a published version are kept initialized ahead of
    /// traffic (0 removes them); they are started in the background.
    pub fn provision(&self, name: &str, version: u32, n: u32) -> Result<(), DispatchError> {
        let key = pool_key(name, Some(version));
        let function = self
            .inner
            .functions
            .read()
            .expect("functions lock")
            .get(&key)
            .cloned()
            .ok_or(DispatchError::FunctionNotFound(key))?;
        function.provisioned.set_target(n);
        self.inner.reconcile_provisioned(&function);
        Ok(())
    }

    /// A published version's provisioned concurrency now.
    pub fn provisioned(&self, name: &str, version: u32) -> Option<ProvisionedState> {
        self.inner
            .functions
            .read()
            .expect("functions lock")
            .get(&pool_key(name, Some(version)))
            .map(|f| f.provisioned.state())
    }

    /// Removes one published version.
    pub fn remove_version(&self, name: &str, version: u32) {
        let removed = self
            .inner
            .functions
            .write()
            .expect("functions lock")
            .remove(&pool_key(name, Some(version)));
        if let Some(function) = removed {
            self.inner.destroy_all(function.take_idle());
        }
    }

    /// Creates or replaces an alias.
    pub fn set_alias(&self, function: &str, alias: &str, route: AliasRoute) {
        self.inner
            .aliases
            .write()
            .expect("aliases lock")
            .insert(format!("{function}:{alias}"), route);
    }

    pub fn remove_alias(&self, function: &str, alias: &str) {
        self.inner
            .aliases
            .write()
            .expect("aliases lock")
            .remove(&format!("{function}:{alias}"));
    }

    /// Environment counts of a function, over all its versions; `None` if it is not deployed.
    pub fn stats(&self, name: &str) -> Option<PoolStats> {
        let prefix = format!("{name}:");
        let functions = self.inner.functions.read().expect("functions lock");
        let mut pools = functions
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&prefix))
            .peekable();
        pools.peek()?;
        Some(pools.fold(PoolStats::default(), |total, (_, f)| {
            let counts = f.pool.lock().expect("pool lock").counts();
            PoolStats {
                idle: total.idle + counts.idle as usize,
                busy: total.busy + counts.busy as usize,
            }
        }))
    }

    /// What exists now, per function name (its versions' pools summed).
    fn now_by_name(&self) -> BTreeMap<Arc<str>, metrics::FunctionNow> {
        let functions: Vec<_> = self
            .inner
            .functions
            .read()
            .expect("functions lock")
            .values()
            .cloned()
            .collect();
        let mut by_name: BTreeMap<Arc<str>, metrics::FunctionNow> = BTreeMap::new();
        for f in &functions {
            let counts = f.pool.lock().expect("pool lock").counts();
            let now = by_name
                .entry(Arc::clone(&f.name))
                .or_insert_with(|| metrics::FunctionNow {
                    function: f.name.to_string(),
                    concurrent: self.inner.concurrency.in_flight(&f.name),
                    ..Default::default()
                });
            now.initializing += f.initializing.load(Ordering::Relaxed);
            now.idle += counts.idle - counts.provisioned_idle;
            now.busy += counts.busy;
            now.provisioned += counts.provisioned_idle;
            now.provisioned_allocated += f.provisioned.allocated();
        }
        by_name
    }

    /// Every metric, as OpenMetrics text.
    pub fn metrics_text(&self) -> String {
        let now: Vec<_> = self.now_by_name().into_values().collect();
        self.inner.metrics.encode(&now, self.destroying())
    }

    /// Retired environments still being torn down, across every function.
    pub fn destroying(&self) -> usize {
        *self.inner.destroying.borrow()
    }

    /// The figures of one function (`Some`) or of all, for a person to read.
    pub fn function_stats(&self, only: Option<&str>) -> Vec<FunctionStats> {
        let inner = &self.inner;
        self.now_by_name()
            .into_iter()
            .filter(|(name, _)| only.is_none_or(|o| o == name.as_ref()))
            .map(|(name, now)| {
                let mut stats = FunctionStats {
                    function: now.function,
                    concurrent_executions: now.concurrent,
                    environments: Environments {
                        initializing: now.initializing,
                        idle: now.idle,
                        busy: now.busy,
                        provisioned: now.provisioned,
                    },
                    reserved_concurrency: inner.concurrency.reserved(&name),
                    provisioned_concurrency: now.provisioned_allocated,
                    concurrency: inner.history.of(&name, inner.concurrency.peak(&name)),
                    ..Default::default()
                };
                inner.metrics.totals(&mut stats);
                stats
            })
            .collect()
    }

    /// Takes the usage recorded since the last call (per function version and day), for
    /// the control plane to store.
    pub fn take_usage(&self) -> Vec<ember_core::usage::DayUsage> {
        self.inner.meter.take()
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
        for backend in self.inner.backends.available.values() {
            backend.shutdown().await;
        }
    }

    /// Runs one synchronous invocation of `name`, qualified by a version or an alias.
    ///
    /// The invocation runs in its own task: a caller that goes away (a closed connection
    /// drops the request's future) does not cancel it halfway, which would strand its
    /// environment mid-event. Like on Lambda, the invocation runs to its end either way.
    pub async fn invoke(
        &self,
        name: &str,
        qualifier: Option<&Qualifier>,
        mut request: InvokeRequest,
    ) -> Result<InvokeResult, DispatchError> {
        request.received.get_or_insert_with(Instant::now);
        let this = self.clone();
        let name = name.to_owned();
        let qualifier = qualifier.cloned();
        // Boxed: the task then holds a pointer, not the whole invocation's state, which
        // would otherwise be copied into the task and out again on every call. A task of
        // its own also pays for itself: polling the invocation on the caller's task instead
        // (and moving it to a task only when the caller goes away) took a quarter more CPU
        // per function URL call under 64 clients, the workers parking and waking each other
        // more often with fewer tasks to share.
        tokio::spawn(Box::pin(async move {
            Box::new(this.invoke_to_end(&name, qualifier.as_ref(), request).await)
        }))
        .await
        .map(|result| *result)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "an invocation task failed");
            Err(DispatchError::Internal("the invocation task failed"))
        })
    }

    /// The pool key a qualifier leads to now: an alias picks its version here.
    fn resolve(&self, name: &str, qualifier: Option<&Qualifier>) -> Result<String, DispatchError> {
        let version = match qualifier {
            None | Some(Qualifier::Latest) => None,
            Some(Qualifier::Version(v)) => Some(*v),
            Some(Qualifier::Alias(alias)) => {
                let key = format!("{name}:{alias}");
                let route = *self
                    .inner
                    .aliases
                    .read()
                    .expect("aliases lock")
                    .get(&key)
                    .ok_or(DispatchError::FunctionNotFound(key))?;
                match route.additional {
                    Some((extra, weight))
                        if ember_policy::routes_to_additional(weight, rand::random()) =>
                    {
                        Some(extra)
                    }
                    _ => route.version,
                }
            }
        };
        Ok(pool_key(name, version))
    }

    async fn invoke_to_end(
        &self,
        name: &str,
        qualifier: Option<&Qualifier>,
        request: InvokeRequest,
    ) -> Result<InvokeResult, DispatchError> {
        let inner = &*self.inner;
        let key = self.resolve(name, qualifier)?;
        let function = inner
            .functions
            .read()
            .expect("functions lock")
            .get(&key)
            .cloned()
            .ok_or(DispatchError::FunctionNotFound(key))?;
        let current = Arc::clone(&function.current.read().expect("current lock"));
        let _permit = inner
            .admit(&function.name, request.wait_for_capacity)
            .await
            .map_err(|throttle| {
                inner.metrics.throttled(name, &throttle);
                DispatchError::Throttled(throttle)
            })?;
        let request_id = match &request.request_id {
            Some(id) => id.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        if current.deployment.spec.max_concurrency > 1 {
            return inner
                .invoke_shared(&function, &current, &request_id, request)
                .await;
        }
        let policy = inner.keep_alive(&current.deployment.spec);

        let mut dead = Vec::new();
        let warm = function.pool.lock().expect("pool lock").acquire(
            &policy,
            Instant::now(),
            |env| !env.has_exited(),
            &mut dead,
        );
        // From here the call counts as busy in its pool until `Busy` is done.
        let busy = invoke::Busy::new(&function);
        inner.destroy_all(dead);
        let warm = match warm {
            Some((env, _)) => invoke::Paced::Back(env),
            None => inner.paced(&function, &current).await.inspect_err(|e| {
                if let DispatchError::Throttled(throttle) = e {
                    inner.metrics.throttled(name, throttle);
                }
            })?,
        };
        match warm {
            invoke::Paced::Back(mut env) => {
                env.thaw();
                let lease = inner.lease(&function, env, busy, None);
                inner
                    .run(&function, &current, lease, None, &request_id, request)
                    .await
            }
            invoke::Paced::Joined(env) => {
                // A shared environment had room after all: this call is not one of the
                // pool's busy environments.
                drop(busy);
                let lease = shared::Lease::Shared(env);
                inner
                    .run(&function, &current, lease, None, &request_id, request)
                    .await
            }
            invoke::Paced::New => {
                inner
                    .cold(&function, &current, &request_id, request, busy, None)
                    .await
            }
        }
    }
}

async fn reclaim_loop(inner: std::sync::Weak<Inner>) {
    loop {
        let interval = match inner.upgrade() {
            Some(inner) => {
                inner.reclaim_idle(Instant::now());
                inner.scan_interval()
            }
            None => return,
        };
        tokio::time::sleep(interval).await;
    }
}

impl Inner {
    /// Admits one call, waiting up to `wait` for a slot when one is given.
    async fn admit<'a>(
        &'a self,
        function: &'a Arc<str>,
        wait: Option<std::time::Duration>,
    ) -> Result<admission::Permit<'a>, Throttle> {
        // A synchronous call (no wait) is answered on the spot, without registering for
        // wake-ups.
        let first = self.concurrency.admit(&self.config.admission, function);
        let (Err(_), Some(wait)) = (&first, wait) else {
            return first;
        };
        let deadline = tokio::time::Instant::now() + wait;
        // Counted before the next try: a slot freed after it wakes this call.
        let _waiting = self.concurrency.waiter();
        loop {
            let freed = self.concurrency.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let throttle = match self.concurrency.admit(&self.config.admission, function) {
                Ok(permit) => return Ok(permit),
                Err(throttle) => throttle,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(throttle);
            }
            tokio::select! {
                () = &mut freed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The keep-alive policy a function follows.
    fn keep_alive(&self, spec: &FunctionSpec) -> KeepAlive {
        match spec.keep_alive {
            None => self.config.keep_alive,
            Some(KeepAliveSetting::Fixed(ttl)) => KeepAlive::Fixed { ttl },
            Some(KeepAliveSetting::Adaptive) => KeepAlive::Adaptive(self.config.adaptive),
        }
    }

    /// How often to look for expired environments and due pre-warms.
    fn scan_interval(&self) -> std::time::Duration {
        self.config
            .keep_alive
            .scan_interval()
            .min(KeepAlive::Adaptive(self.config.adaptive).scan_interval())
    }

    /// Destroys every idle environment whose keep-alive has passed at `now` and every one
    /// whose runtime died while idle; starts the pre-warms that are due.
    fn reclaim_idle(self: &Arc<Self>, now: Instant) {
        let functions: Vec<_> = self
            .functions
            .read()
            .expect("functions lock")
            .values()
            .cloned()
            .collect();
        self.history
            .tick(now, &self.concurrency, functions.iter().map(|f| &f.name));
        for function in functions {
            let (expired, prewarm) = {
                let mut pool = function.pool.lock().expect("pool lock");
                let expired = pool.reclaim(now, |env| !env.has_exited());
                (expired, pool.prewarm_due(now))
            };
            self.destroy_all(expired);
            self.reconcile_provisioned(&function);
            let memory_mb = function
                .current
                .read()
                .expect("current lock")
                .deployment
                .spec
                .memory_mb;
            let provisioned_gb_seconds = function.provisioned.meter(now, memory_mb);
            if provisioned_gb_seconds > 0.0 {
                let usage = ember_core::usage::Usage {
                    provisioned_gb_seconds,
                    ..Default::default()
                };
                self.meter.add(&function.name, &function.version, &usage);
            }
            if let Some(keep_for) = prewarm {
                let inner = Arc::clone(self);
                tokio::spawn(async move { inner.prewarm(&function, keep_for).await });
            }
        }
    }
}
