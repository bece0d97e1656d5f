//! Provisioned concurrency: a version's configured number of environments, initialized
//! ahead of traffic and never reclaimed while the configuration stands.
//!
//! Each version's pool has a target. The reclaim loop (and every change of the target)
//! reconciles: it starts what is missing and destroys idle surplus; a busy surplus
//! environment is demoted to on-demand when its call ends. A provisioned environment
//! carries a [`Slot`] that counts it as allocated until it is destroyed or demoted, so an
//! environment that crashes is replaced on the next pass.
//!
//! A provisioned environment that fails to initialize marks the configuration `FAILED`
//! with the reason, and nothing more is started until the configuration is put again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::environment::InitFailure;
use crate::{Function, Inner};

/// A version's provisioned concurrency as configured and as it stands.
#[derive(Default)]
pub(crate) struct Provisioned {
    target: AtomicU32,
    /// Initialized provisioned environments, idle or busy (each [`Slot`] counts itself).
    allocated: Arc<AtomicU32>,
    starting: AtomicU32,
    /// Why the last start failed, if it did; starts stop until the target is set again.
    failure: Mutex<Option<String>>,
    /// When `allocated` was last metered, and the GB it came to then.
    metered: Mutex<Option<(Instant, f64)>>,
}

/// Counts one environment as provisioned while it lives.
pub(crate) struct Slot(Arc<AtomicU32>);

impl Slot {
    fn new(allocated: &Arc<AtomicU32>) -> Slot {
        allocated.fetch_add(1, Ordering::Relaxed);
        Slot(Arc::clone(allocated))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Lambda's `Status` of a provisioned concurrency configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionedStatus {
    InProgress,
    Ready,
    Failed,
}

impl ProvisionedStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisionedStatus::InProgress => "IN_PROGRESS",
            ProvisionedStatus::Ready => "READY",
            ProvisionedStatus::Failed => "FAILED",
        }
    }
}

/// A version's provisioned concurrency now.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionedState {
    pub requested: u32,
    /// Initialized environments (idle or busy).
    pub allocated: u32,
    pub status: ProvisionedStatus,
    pub reason: Option<String>,
}

impl Provisioned {
    pub fn target(&self) -> u32 {
        self.target.load(Ordering::Relaxed)
    }

    pub fn allocated(&self) -> u32 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Sets the target and clears an earlier failure.
    pub fn set_target(&self, n: u32) {
        self.target.store(n, Ordering::Relaxed);
        *self.failure.lock().expect("provisioned lock") = None;
    }

    pub fn state(&self) -> ProvisionedState {
        let requested = self.target();
        let allocated = self.allocated();
        let reason = self.failure.lock().expect("provisioned lock").clone();
        let status = match &reason {
            Some(_) => ProvisionedStatus::Failed,
            None if allocated >= requested => ProvisionedStatus::Ready,
            None => ProvisionedStatus::InProgress,
        };
        ProvisionedState {
            requested,
            allocated,
            status,
            reason,
        }
    }

    /// The memory-time of the provisioned environments since the last call, in GB-s.
    pub fn meter(&self, now: Instant, memory_mb: u32) -> f64 {
        let mut metered = self.metered.lock().expect("provisioned lock");
        let gb = f64::from(self.allocated()) * f64::from(memory_mb) / 1024.0;
        let added = match *metered {
            Some((since, gb_then)) => now.saturating_duration_since(since).as_secs_f64() * gb_then,
            None => 0.0,
        };
        *metered = Some((now, gb));
        added
    }
}

/// How long a provisioned environment may take to initialize: it is started ahead of
/// traffic, so the on-demand 10-second limit gives way to the function's timeout when
/// that is longer.
pub(crate) fn init_timeout(timeout_s: u32) -> Duration {
    Duration::from_secs(u64::from(timeout_s)).max(crate::environment::INIT_TIMEOUT)
}

impl Inner {
    /// Starts the provisioned environments a version is missing and destroys its idle
    /// surplus.
    pub(crate) fn reconcile_provisioned(self: &Arc<Self>, function: &Arc<Function>) {
        let p = &function.provisioned;
        let target = p.target();
        let allocated = p.allocated();
        if allocated > target {
            let mut surplus = function
                .pool
                .lock()
                .expect("pool lock")
                .drain_provisioned((allocated - target) as usize);
            for env in &mut surplus {
                env.provisioned = None;
            }
            self.destroy_all(surplus);
        }
        if p.failure.lock().expect("provisioned lock").is_some() {
            return;
        }
        let starting = p.starting.load(Ordering::Relaxed);
        for _ in 0..target.saturating_sub(allocated + starting) {
            p.starting.fetch_add(1, Ordering::Relaxed);
            let inner = Arc::clone(self);
            let function = Arc::clone(function);
            tokio::spawn(async move {
                inner.start_provisioned(&function).await;
                function
                    .provisioned
                    .starting
                    .fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    async fn start_provisioned(&self, function: &Function) {
        let current = Arc::clone(&function.current.read().expect("current lock"));
        let p = &function.provisioned;
        let failed = |reason: String| {
            tracing::warn!(function = %function.key, %reason, "provisioned concurrency failed");
            *p.failure.lock().expect("provisioned lock") = Some(reason);
        };
        match self.start_env(function, &current, true).await {
            Ok((mut env, Ok(init))) => {
                self.metrics.provisioned(&function.name, init.total());
                // What init printed is in the log; it is not the first call's output.
                let _ = env.output.collect().await;
                if !self.still_current(function, &env) || p.allocated() >= p.target() {
                    self.destroy_all(std::iter::once(env));
                    return;
                }
                env.provisioned = Some(Slot::new(&p.allocated));
                function
                    .pool
                    .lock()
                    .expect("pool lock")
                    .put_provisioned(env);
                function.released.wake();
            }
            Ok((env, Err(failure))) => {
                failed(match failure {
                    InitFailure::Reported { error_type, .. } => format!(
                        "FUNCTION_ERROR_INIT_FAILURE: the function's initialization failed ({})",
                        error_type.as_deref().unwrap_or("Runtime.Unknown")
                    ),
                    InitFailure::Exited(status) => format!(
                        "FUNCTION_ERROR_INIT_FAILURE: the runtime exited during initialization ({status})"
                    ),
                    InitFailure::TimedOut => format!(
                        "FUNCTION_ERROR_INIT_FAILURE: initialization timed out after {} seconds",
                        init_timeout(current.deployment.spec.timeout_s).as_secs()
                    ),
                });
                self.destroy_all(std::iter::once(env));
            }
            Err(e) => failed(format!(
                "could not start an execution environment: {}",
                ember_core::error_chain(&e)
            )),
        }
    }
}
