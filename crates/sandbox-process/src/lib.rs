//! The `process` sandbox: Ember's default, fast isolation backend.
//!
//! Each environment is a process tree in its own mount, PID, IPC, UTS and network
//! namespaces, with a fresh read-only root, a sized `/tmp`, a cgroup that bounds memory,
//! CPU and process count, no capabilities and an unprivileged uid.
//!
//! - [`cgroup`]: the environment's control group on cgroup v1, v2 or the hybrid.
//! - [`netns`]: the environment's network namespace and its Runtime API listener.
//! - [`egress`]: the outbound link and address pool of functions with egress.
//! - [`environment`]: the namespace-and-cgroup environment this and the OCI backends share.
//! - [`init`]: the privileged init that builds the namespaces and root, then execs the runtime.
//! - [`seccomp`]: the system calls a function is refused.
//!
//! [`ProcessBackend`] wires them: it creates the namespace and cgroup, starts
//! `ember-init sandbox-init` with an [`init::InitSpec`], and watches the runtime's exit.

pub mod cgroup;
pub mod egress;
pub mod environment;
pub mod init;
pub mod netns;
pub mod seccomp;

use std::ffi::OsString;
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
use environment::CgroupEnvironment;

/// The uid and gid functions run as. Outside the range Debian gives system and regular
/// users, so that no host account shares it.
pub const SANDBOX_UID: u32 = 61051;

/// Most processes and threads one environment may hold; a fork bomb stops here.
pub const PIDS_LIMIT: u32 = 1024;

/// Settings of the process backend.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The helper program started as `PROGRAM sandbox-init`: `ember-init`, or `ember`
    /// itself (`ember_sandbox_oci::helpers::program`).
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

/// Finds `name` on `PATH` (and in the sbin directories, which root's `PATH` may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
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
        let limits = Limits {
            memory_bytes: u64::from(spec.memory_mb) * 1024 * 1024,
            // Init runs with a full vCPU (Lambda's init burst); init_done() sets the
            // memory-proportional quota.
            cpu_quota_us: Some(CPU_PERIOD_US),
            pids: PIDS_LIMIT,
        };
        let mut env =
            CgroupEnvironment::create(&self.layout, self.config.egress.as_ref(), &spec, limits)
                .await?;
        match self.start(&spec, env.netns(), env.cgroup()).await {
            Ok((output, exit)) => {
                env.started(output, exit);
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
        let mut command = tokio::process::Command::new(&self.config.init_program);
        command
            .arg(init::SANDBOX_INIT)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2))
            .env_clear();
        let spawned = ember_sandbox::affinity::unbound(|| command.spawn());
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
