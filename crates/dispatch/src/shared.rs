//! Environments that serve several invocations at once, for functions whose
//! `max_concurrency` is above 1 (`AWS_LAMBDA_MAX_CONCURRENCY` in the environment).
//!
//! Such an environment leaves the warm pool for its first call, as any other, and is then
//! *shared*: later calls join it while it has room, fullest first, so that the fewest
//! environments carry the load and the others idle out. It returns to the pool when its
//! last call ends. The pool counts it busy once, for as long as it is shared.
//!
//! A call that finds no room waits for an environment being started if that one will
//! have room for it (up to the init timeout), rather than starting one more: a burst of N
//! calls starts ⌈N / max⌉ environments, not N.
//!
//! An environment whose call crashed or timed out is retired: no call joins it any more,
//! the calls still running on it finish on their own, and the last one destroys it.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use ember_policy::KeepAlive;

use crate::environment::{Env, INIT_TIMEOUT};
use crate::invoke::{Busy, Paced};
use crate::{Current, DispatchError, Function, Inner, InvokeRequest, InvokeResult};

/// A function's shared environments, and the starts that will add to them.
#[derive(Default)]
pub(crate) struct Shared {
    envs: Vec<SharedEnv>,
    /// Environments being started (each will take its starter's call).
    starting: u32,
    /// Calls waiting for room in those.
    waiting: u32,
}

/// A shared environment and how many calls it serves now.
pub(crate) struct SharedEnv {
    env: Arc<Env>,
    calls: u32,
    retired: bool,
}

/// A call's hold on its environment.
pub(crate) enum Lease<'a> {
    /// An environment this call alone uses, counted busy in the pool by `Busy`.
    Own(Env, Busy<'a>),
    /// One of the calls a shared environment serves.
    Shared(Arc<Env>),
}

impl Deref for Lease<'_> {
    type Target = Env;

    fn deref(&self) -> &Env {
        match self {
            Lease::Own(env, _) => env,
            Lease::Shared(env) => env,
        }
    }
}

/// Counts a start in progress until the environment is shared or the start failed.
pub(crate) struct Starting<'a>(&'a Function);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.shared.lock().expect("shared lock").starting -= 1;
        self.0.released.wake();
    }
}

/// Where a call of a shared function goes.
enum Claim {
    Joined(Arc<Env>),
    /// Wait for an environment being started.
    Wait,
    /// Start one (counted busy in the pool and as starting).
    Start,
}

impl Shared {
    /// Joins an environment of `generation` that has room for another call.
    fn join(&mut self, generation: u64, max: u32) -> Option<Arc<Env>> {
        let s = self
            .envs
            .iter_mut()
            .filter(|s| {
                !s.retired && s.calls < max && s.env.generation == generation && !s.env.has_exited()
            })
            .max_by_key(|s| s.calls)?;
        s.calls += 1;
        Some(Arc::clone(&s.env))
    }
}

impl Function {
    /// Joins a shared environment of `generation` that has room for another call.
    pub(crate) fn join(&self, generation: u64, max: u32) -> Option<Arc<Env>> {
        self.shared
            .lock()
            .expect("shared lock")
            .join(generation, max)
    }
}

impl Inner {
    /// The lease of a call that took `env` out of the pool or started it: its own, or
    /// (with `share`, the start it counted) the first of a shared environment's.
    pub(crate) fn lease<'a>(
        &self,
        function: &'a Function,
        env: Env,
        mut busy: Busy<'a>,
        share: Option<Starting<'a>>,
    ) -> Lease<'a> {
        let Some(starting) = share else {
            return Lease::Own(env, busy);
        };
        // The pool's busy count now belongs to the shared environment until it returns.
        busy.done = true;
        let env = Arc::new(env);
        function
            .shared
            .lock()
            .expect("shared lock")
            .envs
            .push(SharedEnv {
                env: Arc::clone(&env),
                calls: 1,
                retired: false,
            });
        drop(starting);
        Lease::Shared(env)
    }

    /// Decides, under the function's shared lock, where a call goes: room in a shared
    /// environment, an idle one from the pool (which becomes shared), a wait for one being
    /// started, or a start. `waited` says the call is back from a wait; `impatient` that it
    /// waited long enough.
    fn claim(
        &self,
        function: &Function,
        current: &Current,
        policy: &KeepAlive,
        waited: bool,
        impatient: bool,
    ) -> Claim {
        let max = current.deployment.spec.max_concurrency;
        let mut shared = function.shared.lock().expect("shared lock");
        if waited {
            shared.waiting -= 1;
        }
        if let Some(env) = shared.join(current.generation, max) {
            return Claim::Joined(env);
        }
        let mut pool = function.pool.lock().expect("pool lock");
        let has_idle = pool.counts().idle > 0;
        if !has_idle && !impatient && shared.starting * max > shared.starting + shared.waiting {
            shared.waiting += 1;
            return Claim::Wait;
        }
        let mut dead = Vec::new();
        let warm = pool.acquire(policy, Instant::now(), |env| !env.has_exited(), &mut dead);
        drop(pool);
        self.destroy_all(dead);
        match warm {
            Some((mut env, _)) => {
                env.thaw();
                let env = Arc::new(env);
                shared.envs.push(SharedEnv {
                    env: Arc::clone(&env),
                    calls: 1,
                    retired: false,
                });
                Claim::Joined(env)
            }
            None => {
                shared.starting += 1;
                Claim::Start
            }
        }
    }

    /// One invocation of a function whose environments serve several calls at once.
    pub(crate) async fn invoke_shared(
        &self,
        function: &Function,
        current: &Current,
        request_id: &str,
        request: InvokeRequest,
    ) -> Result<InvokeResult, DispatchError> {
        let policy = self.keep_alive(&current.deployment.spec);
        let patience = tokio::time::Instant::now() + INIT_TIMEOUT;
        let mut waited = false;
        // Counted before the first look: an environment released after it wakes this call.
        let _waiting = function.released.waiter();
        loop {
            let released = function.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let impatient = tokio::time::Instant::now() >= patience;
            match self.claim(function, current, &policy, waited, impatient) {
                Claim::Joined(env) => {
                    let lease = Lease::Shared(env);
                    return self
                        .run(function, current, lease, None, request_id, request)
                        .await;
                }
                Claim::Wait => {
                    waited = true;
                    tokio::select! {
                        () = &mut released => {}
                        () = tokio::time::sleep_until(patience) => {}
                    }
                }
                Claim::Start => break,
            }
        }
        // Counted busy in the pool and as a start by `claim`.
        let busy = Busy::new(function);
        let starting = Starting(function);
        let paced = self.paced(function, current).await.inspect_err(|e| {
            if let DispatchError::Throttled(throttle) = e {
                self.metrics.throttled(&function.name, throttle);
            }
        })?;
        match paced {
            Paced::Back(mut env) => {
                env.thaw();
                let lease = self.lease(function, env, busy, Some(starting));
                self.run(function, current, lease, None, request_id, request)
                    .await
            }
            Paced::Joined(env) => {
                drop((busy, starting));
                let lease = Lease::Shared(env);
                self.run(function, current, lease, None, request_id, request)
                    .await
            }
            Paced::New => {
                self.cold(function, current, request_id, request, busy, Some(starting))
                    .await
            }
        }
    }

    /// Ends one call of a shared environment. `keep` is false when the call crashed or
    /// timed out: the environment is retired. The last call returns it to the pool, or
    /// destroys it if it was retired.
    pub(crate) fn unshare(
        &self,
        function: &Function,
        current: &Current,
        env: Arc<Env>,
        keep: bool,
    ) {
        let last = {
            let mut guard = function.shared.lock().expect("shared lock");
            let shared = &mut guard.envs;
            let Some(i) = shared.iter().position(|s| Arc::ptr_eq(&s.env, &env)) else {
                tracing::error!(function = %function.key, "a shared environment was not in its list");
                return;
            };
            let entry = &mut shared[i];
            entry.calls -= 1;
            entry.retired |= !keep || env.has_exited();
            // Dropped under the lock, so the last call finds its handle the only one.
            drop(env);
            (entry.calls == 0).then(|| shared.remove(i))
        };
        function.released.wake();
        let Some(entry) = last else {
            return;
        };
        match Arc::try_unwrap(entry.env) {
            Ok(env) => {
                let busy = Busy::new(function);
                if entry.retired {
                    drop(busy);
                    self.destroy_all(std::iter::once(env));
                } else {
                    self.release(function, current, env, busy);
                }
            }
            Err(_) => {
                tracing::error!(function = %function.key, "a shared environment is still held after its last call");
            }
        }
    }
}
