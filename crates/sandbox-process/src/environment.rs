//! An environment made of a network namespace and a cgroup: what the `process` backend and
//! the OCI backends (`ember-sandbox-oci`) build alike, and tear down alike.
//!
//! A backend creates one with [`CgroupEnvironment::create`], starts its runtime inside, and
//! hands over the runtime's output and exit watch ([`CgroupEnvironment::started`]). Limits,
//! freezing, peak memory and killing all go through the cgroup; whatever else the backend
//! keeps for an environment (an OCI runtime's record of the container) is released by its
//! [`Teardown`], after the processes are gone.

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ember_sandbox::{Environment, EnvironmentSpec, ExitStatus, SandboxError};
use tokio::sync::watch;

use crate::cgroup::{Cgroup, CgroupLayout, Limits};
use crate::egress::{EgressLease, EgressNetwork};
use crate::{cpu_quota_us, egress_lease, netns};

/// What a backend releases of an environment once its processes are gone.
#[async_trait]
pub trait Teardown: Send + Sync {
    async fn release(&mut self);

    /// The same, from a `Drop` (no await).
    fn release_blocking(&mut self);
}

/// One environment: its namespace, cgroup, Runtime API listener, output and exit.
pub struct CgroupEnvironment {
    cgroup: Arc<Cgroup>,
    memory_mb: u32,
    listener: Option<TcpListener>,
    output: Option<OwnedFd>,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// The network namespace, held until the environment is gone.
    netns: Option<OwnedFd>,
    /// The outbound link's addresses, given back when the environment goes.
    _egress: Option<EgressLease>,
    teardown: Option<Box<dyn Teardown>>,
    destroyed: bool,
}

impl CgroupEnvironment {
    /// Creates the network namespace (with an egress link if `spec` asks) and the cgroup
    /// with `limits`. `memory_mb` is the function's memory, which sets the steady-state CPU.
    pub async fn create(
        layout: &CgroupLayout,
        egress: Option<&Arc<EgressNetwork>>,
        spec: &EnvironmentSpec,
        limits: Limits,
    ) -> Result<CgroupEnvironment, SandboxError> {
        let setup = |what| move |source| SandboxError::Setup { what, source };
        let lease = egress_lease(egress, spec)?;
        // Creating a namespace and a cgroup blocks for a millisecond or so: off the async
        // workers, so a burst of cold starts does not stall warm invocations.
        let layout = layout.clone();
        let id = spec.id.clone();
        let (ns, cgroup) = tokio::task::spawn_blocking(move || {
            let ns = netns::create(lease).map_err(setup("network namespace"))?;
            let cgroup = layout.create(&id, &limits).map_err(setup("cgroup"))?;
            Ok::<_, SandboxError>((ns, cgroup))
        })
        .await
        .map_err(|e| setup("environment")(std::io::Error::other(e)))??;
        Ok(CgroupEnvironment {
            cgroup: Arc::new(cgroup),
            memory_mb: spec.memory_mb,
            listener: Some(ns.listener),
            output: None,
            exit: watch::channel(None).1,
            netns: Some(ns.fd),
            _egress: ns.egress,
            teardown: None,
            destroyed: false,
        })
    }

    pub fn cgroup(&self) -> &Arc<Cgroup> {
        &self.cgroup
    }

    /// The network namespace, for the runtime to join.
    pub fn netns(&self) -> &OwnedFd {
        self.netns
            .as_ref()
            .expect("the namespace is held until destroy")
    }

    /// Records what releases the backend's own resources on destroy.
    pub fn set_teardown(&mut self, teardown: Box<dyn Teardown>) {
        self.teardown = Some(teardown);
    }

    /// The runtime is running: its output pipe and its exit.
    pub fn started(&mut self, output: OwnedFd, exit: watch::Receiver<Option<ExitStatus>>) {
        self.output = Some(output);
        self.exit = exit;
    }
}

impl Drop for CgroupEnvironment {
    /// An environment dropped without [`Environment::destroy`] (a bug, or a panic on the
    /// way) still takes its processes down; its cgroup is removed once they are gone.
    fn drop(&mut self) {
        if self.destroyed {
            return;
        }
        tracing::warn!("an environment was dropped without being destroyed; cleaning it up");
        self.cgroup.kill_all();
        if let Some(teardown) = &mut self.teardown {
            teardown.release_blocking();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let cgroup = Arc::clone(&self.cgroup);
            runtime.spawn(async move {
                for _ in 0..200 {
                    cgroup.kill_all();
                    if cgroup.remove().is_ok() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    }
}

#[async_trait]
impl Environment for CgroupEnvironment {
    fn take_runtime_api_listener(&mut self) -> Option<TcpListener> {
        self.listener.take()
    }

    fn take_output(&mut self) -> Option<OwnedFd> {
        self.output.take()
    }

    fn exit(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    fn init_done(&self) {
        if let Err(e) = self
            .cgroup
            .set_cpu_quota(Some(cpu_quota_us(self.memory_mb)))
        {
            tracing::warn!(error = %e, "could not set the steady-state CPU quota");
        }
    }

    fn freeze(&self) -> bool {
        self.cgroup.set_frozen(true).is_ok()
    }

    fn thaw(&self) {
        if let Err(e) = self.cgroup.set_frozen(false) {
            tracing::warn!(error = %e, "could not thaw an environment");
        }
    }

    fn max_memory_used(&self) -> Option<u64> {
        self.cgroup.max_memory_used()
    }

    async fn destroy(&mut self) {
        if self.destroyed {
            return;
        }
        self.destroyed = true;
        // Killing PID 1 of the namespace takes every process in it down with it; killing
        // the whole cgroup also catches what runs outside the namespace (an init's first
        // half, gVisor's Sentry).
        let mut exit = self.exit.clone();
        for _ in 0..100 {
            self.cgroup.kill_all();
            // The exit is seen (or will never be: the runtime did not start).
            let ended = exit.borrow().is_some() || exit.has_changed().is_err();
            if self.cgroup.pids().is_empty() && ended {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(10), exit.changed()).await;
        }
        if let Some(teardown) = &mut self.teardown {
            teardown.release().await;
        }
        let mut removed = false;
        for _ in 0..100 {
            if self.cgroup.remove().is_ok() {
                removed = true;
                break;
            }
            // The kernel frees a cgroup shortly after its last process is reaped.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !removed {
            tracing::warn!("an environment cgroup could not be removed");
        }
        self.netns = None;
    }
}
