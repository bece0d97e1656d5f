//! The `process` sandbox: Ember's default, fast isolation backend.
//!
//! Each environment is a process tree in its own mount, PID, IPC, UTS and network
//! namespaces, with a fresh read-only root, a sized `/tmp`, a cgroup that bounds memory,
//! CPU and process count, no capabilities and an unprivileged uid.
//!
//! - [`cgroup`]: the environment's control group on cgroup v1, v2 or the hybrid.
//! - [`netns`]: the environment's network namespace and its Runtime API listener.
//! - [`egress`]: the outbound link and address pool of functions with egress.
//! - [`init`]: the privileged init that builds the namespaces and root, then execs the runtime.
//! - [`seccomp`]: the system calls a function is refused.
//!
//! [`ProcessBackend`] wires them: it creates the namespace and cgroup, starts
//! `ember sandbox-init` with an [`init::InitSpec`], and watches the runtime's exit.

pub mod cgroup;
pub mod egress;
pub mod init;
pub mod netns;
pub mod seccomp;

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use ember_core::limits::MB_PER_VCPU;
use ember_sandbox::{Backend, Environment, EnvironmentSpec, ExitStatus, SandboxError};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use cgroup::{CPU_PERIOD_US, Cgroup, CgroupLayout, Limits};

/// The uid and gid functions run as. Outside the range Debian gives system and regular
/// users, so that no host account shares it.
pub const SANDBOX_UID: u32 = 61051;

/// Most processes and threads one environment may hold; a fork bomb stops here.
pub const PIDS_LIMIT: u32 = 1024;

/// Settings of the process backend.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The `ember` binary, re-executed as `ember sandbox-init`.
    pub init_program: PathBuf,
    /// A directory the backend may use for its own files (an empty mountpoint).
    pub work_dir: PathBuf,
    /// Names this server's cgroups; servers with different names never touch each other's.
    pub instance: String,
    /// The server's egress network, where the host can give functions one.
    pub egress: Option<Arc<egress::EgressNetwork>>,
}

pub struct ProcessBackend {
    config: ProcessConfig,
    layout: CgroupLayout,
    root_mountpoint: PathBuf,
}

impl ProcessBackend {
    /// Checks the host (root, cgroups) and removes what an earlier run of the same instance
    /// left behind.
    pub fn new(config: ProcessConfig) -> Result<ProcessBackend, SandboxError> {
        let unsupported = |reason: String| SandboxError::Unsupported {
            backend: "process",
            reason,
        };
        if !nix::unistd::geteuid().is_root() {
            return Err(unsupported(
                "it needs root for namespaces and cgroups; run the server with sudo".into(),
            ));
        }
        let layout = CgroupLayout::detect(&config.instance)
            .map_err(|e| unsupported(format!("cgroups: {e}")))?;
        layout.remove_stale();
        let root_mountpoint = config.work_dir.join("root");
        std::fs::create_dir_all(&root_mountpoint).map_err(|source| SandboxError::Setup {
            what: "work directory",
            source,
        })?;
        Ok(ProcessBackend {
            config,
            layout,
            root_mountpoint,
        })
    }
}

/// The egress link `spec` asks for, from `network`; an error when it asks and the host has
/// none (the control plane refuses such functions first).
pub fn egress_lease(
    network: Option<&Arc<egress::EgressNetwork>>,
    spec: &EnvironmentSpec,
) -> Result<Option<egress::EgressLease>, SandboxError> {
    if !spec.egress {
        return Ok(None);
    }
    let network = network.ok_or_else(|| SandboxError::Unsupported {
        backend: "process",
        reason: "this server has no egress network".into(),
    })?;
    network
        .lease()
        .map(Some)
        .map_err(|source| SandboxError::Setup {
            what: "egress link",
            source,
        })
}

/// CPU time per period for a memory size: 1,769 MB buys one full vCPU.
pub fn cpu_quota_us(memory_mb: u32) -> u64 {
    (CPU_PERIOD_US * u64::from(memory_mb) / u64::from(MB_PER_VCPU)).max(1000)
}

#[async_trait]
impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    /// Removes this server's (by now empty) instance cgroups.
    async fn shutdown(&self) {
        self.layout.remove_instance();
    }

    async fn create(&self, spec: EnvironmentSpec) -> Result<Box<dyn Environment>, SandboxError> {
        let setup = |what| move |source| SandboxError::Setup { what, source };
        let limits = Limits {
            memory_bytes: u64::from(spec.memory_mb) * 1024 * 1024,
            // Init runs with a full vCPU (Lambda's init burst); init_done() sets the
            // memory-proportional quota.
            cpu_quota_us: Some(CPU_PERIOD_US),
            pids: PIDS_LIMIT,
        };
        // Creating a namespace and a cgroup blocks for a millisecond or so: off the async
        // workers, so a burst of cold starts does not stall warm invocations.
        let layout = self.layout.clone();
        let id = spec.id.clone();
        let lease = egress_lease(self.config.egress.as_ref(), &spec)?;
        let (ns, cgroup) = tokio::task::spawn_blocking(move || {
            let ns = netns::create(lease).map_err(setup("network namespace"))?;
            let cgroup = layout.create(&id, &limits).map_err(setup("cgroup"))?;
            Ok::<_, SandboxError>((ns, cgroup))
        })
        .await
        .map_err(|e| setup("environment")(std::io::Error::other(e)))??;
        let mut env = ProcessEnvironment {
            _egress: ns.egress,
            cgroup: Arc::new(cgroup),
            memory_mb: spec.memory_mb,
            listener: Some(ns.listener),
            output: None,
            exit: watch::channel(None).1,
            destroyed: false,
        };
        match self.start(&spec, &ns.fd, &env.cgroup).await {
            Ok((output, exit)) => {
                env.output = Some(output);
                env.exit = exit;
                Ok(Box::new(env))
            }
            Err(e) => {
                env.destroy().await;
                Err(e)
            }
        }
    }
}

impl ProcessBackend {
    async fn start(
        &self,
        spec: &EnvironmentSpec,
        netns: &OwnedFd,
        cgroup: &Arc<Cgroup>,
    ) -> Result<(OwnedFd, watch::Receiver<Option<ExitStatus>>), SandboxError> {
        let setup = |what| move |source| SandboxError::Setup { what, source };
        let mut env = spec.env.clone();
        env.push((
            "AWS_LAMBDA_RUNTIME_API".into(),
            netns::RUNTIME_API_ADDR.into(),
        ));
        let init = init::InitSpec {
            netns_fd: netns.as_raw_fd(),
            cgroup_join: cgroup.join_files(),
            root_mountpoint: self.root_mountpoint.clone(),
            code_dir: spec.code_dir.clone(),
            runtime_dir: spec.runtime_dir.clone(),
            layers: spec.layers.clone(),
            tmp_mb: spec.ephemeral_mb,
            uid: SANDBOX_UID,
            gid: SANDBOX_UID,
            hostname: "ember".into(),
            argv: spec.argv.clone(),
            env,
        };
        let init = serde_json::to_vec(&init).map_err(|e| setup("init spec")(e.into()))?;
        let (reader, writer) = std::io::pipe().map_err(setup("output pipe"))?;
        let writer2 = writer.try_clone().map_err(setup("output pipe"))?;

        // The init inherits the namespace descriptor; every other child closes all inherited
        // descriptors first thing, so the short window where it is inheritable leaks nothing.
        fcntl(netns, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|e| setup("network namespace")(e.into()))?;
        let spawned = tokio::process::Command::new(&self.config.init_program)
            .arg("sandbox-init")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2))
            .env_clear()
            .spawn();
        let _ = fcntl(netns, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        let mut child = spawned.map_err(setup("init process"))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(&init).await.map_err(setup("init spec"))?;
        drop(stdin);

        let (tx, rx) = watch::channel(None);
        let cgroup = Arc::clone(cgroup);
        tokio::spawn(async move {
            let status = child.wait().await;
            let status = match status {
                Ok(s) => ExitStatus {
                    code: s.code(),
                    signal: s.signal(),
                    oom_killed: cgroup.oom_killed(),
                },
                Err(_) => ExitStatus {
                    code: None,
                    signal: None,
                    oom_killed: false,
                },
            };
            let _ = tx.send(Some(status));
        });
        Ok((reader.into(), rx))
    }
}

/// One environment of the process backend.
pub struct ProcessEnvironment {
    /// The outbound link's addresses, given back when the environment goes.
    _egress: Option<egress::EgressLease>,
    cgroup: Arc<Cgroup>,
    memory_mb: u32,
    listener: Option<TcpListener>,
    output: Option<OwnedFd>,
    exit: watch::Receiver<Option<ExitStatus>>,
    destroyed: bool,
}

impl Drop for ProcessEnvironment {
    /// An environment dropped without [`Environment::destroy`] (a bug, or a panic on the
    /// way) still takes its processes down; its cgroup is removed once they are gone.
    fn drop(&mut self) {
        if self.destroyed {
            return;
        }
        tracing::warn!("an environment was dropped without being destroyed; cleaning it up");
        self.cgroup.kill_all();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let cgroup = Arc::clone(&self.cgroup);
            runtime.spawn(async move {
                for _ in 0..200 {
                    cgroup.kill_all();
                    if cgroup.remove().is_ok() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            });
        }
    }
}

#[async_trait]
impl Environment for ProcessEnvironment {
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
        // the whole cgroup also catches the init outside it.
        let mut exit = self.exit.clone();
        for _ in 0..100 {
            self.cgroup.kill_all();
            if self.cgroup.pids().is_empty() {
                break;
            }
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(10), exit.changed()).await;
        }
        for _ in 0..100 {
            match self.cgroup.remove() {
                Ok(()) => return,
                // The kernel frees a cgroup shortly after its last process is reaped.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
        tracing::warn!("an environment cgroup could not be removed");
    }
}
