//! The OCI sandboxes: each environment is an OCI bundle run by `runc` or by gVisor's
//! `runsc --platform=ptrace`.
//!
//! They reuse the `process` backend's pieces: the network namespace holding the Runtime API
//! listener ([`ember_sandbox_process::netns`]), which the bundle names as the container's
//! network namespace (gVisor runs with `--network=host`, so its user-space kernel uses
//! that namespace's loopback); the cgroup ([`ember_sandbox_process::cgroup`]), made first
//! and then named as the container's cgroup, so that memory, OOM kills, freezing and
//! killing work exactly as for a process environment; and the seccomp filter, installed by
//! PID 1 of the container, `ember-init sandbox-reaper`.
//!
//! - [`spec`]: the `config.json` of one environment and the shared read-only root.
//! - [`shim`]: the small parent that reports a detached runc container's exit.
//! - [`helpers`]: the program every backend starts these helpers with.

pub mod helpers;
pub mod shim;
pub mod spec;

/// The helper argument that runs [`shim::main`].
pub const SANDBOX_SHIM: &str = "sandbox-shim";

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use ember_core::Isolation;
use ember_sandbox::affinity::unbound;
use ember_sandbox::{Backend, Environment, EnvironmentSpec, ExitStatus, SandboxError};
use ember_sandbox_process::cgroup::{CPU_PERIOD_US, Cgroup, CgroupLayout, Limits};
use ember_sandbox_process::environment::{CgroupEnvironment, Teardown};
use ember_sandbox_process::{PIDS_LIMIT, SANDBOX_UID, netns};
use tokio::sync::watch;

/// Which OCI runtime runs the bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciRuntime {
    Runc,
    /// gVisor, on its ptrace platform (the KVM platform needs hardware virtualization that
    /// nested hosts often lack).
    Gvisor,
}

impl OciRuntime {
    pub fn isolation(self) -> Isolation {
        match self {
            OciRuntime::Runc => Isolation::Runc,
            OciRuntime::Gvisor => Isolation::Gvisor,
        }
    }

    /// The program's name, as looked up on `PATH`.
    pub fn program(self) -> &'static str {
        match self {
            OciRuntime::Runc => "runc",
            OciRuntime::Gvisor => "runsc",
        }
    }

    /// Memory the runtime itself needs inside the environment's cgroup beyond the
    /// function's own: gVisor's user-space kernel and file proxy live there too.
    pub fn memory_overhead_mb(self) -> u32 {
        match self {
            OciRuntime::Runc => 0,
            OciRuntime::Gvisor => GVISOR_OVERHEAD_MB,
        }
    }
}

/// What gVisor's Sentry and Gofer take on top of the function (measured: about 40 MB for a
/// Python function at rest). Added to the cgroup limit, so a function gets the memory it
/// was configured with.
pub const GVISOR_OVERHEAD_MB: u32 = 64;

/// Settings of an OCI backend.
#[derive(Debug, Clone)]
pub struct OciConfig {
    pub runtime: OciRuntime,
    /// The helper program ([`helpers::program`]): mounted in every container as its PID 1,
    /// and the shim around `runc`.
    pub reaper: PathBuf,
    /// A directory the backend owns: the shared root, the bundles and the runtime's state.
    pub work_dir: PathBuf,
    /// Names this server's cgroups; must differ from other backends' instances.
    pub instance: String,
    /// The server's egress network, shared with the other backends.
    pub egress: Option<Arc<ember_sandbox_process::egress::EgressNetwork>>,
}

pub struct OciBackend {
    config: OciConfig,
    program: PathBuf,
    layout: CgroupLayout,
    rootfs: PathBuf,
    bundles: PathBuf,
    state: PathBuf,
}

impl OciBackend {
    /// Checks the host (root, cgroups, the runtime program) and removes what an earlier run
    /// of the same instance left behind.
    pub fn new(config: OciConfig) -> Result<OciBackend, SandboxError> {
        let name = match config.runtime {
            OciRuntime::Runc => "runc",
            OciRuntime::Gvisor => "gvisor",
        };
        let unsupported = |reason: String| SandboxError::Unsupported {
            backend: name,
            reason,
        };
        if !nix::unistd::geteuid().is_root() {
            return Err(unsupported("it needs root".into()));
        }
        let program =
            ember_sandbox_process::find_program(config.runtime.program()).ok_or_else(|| {
                unsupported(format!(
                    "{} was not found on PATH; install the Debian package {}",
                    config.runtime.program(),
                    config.runtime.program()
                ))
            })?;
        let layout = CgroupLayout::detect(&config.instance)
            .map_err(|e| unsupported(format!("cgroups: {e}")))?;
        let setup = |what| move |source| SandboxError::Setup { what, source };
        let rootfs = config.work_dir.join("rootfs");
        let bundles = config.work_dir.join("bundles");
        let state = config.work_dir.join("state");
        let backend = OciBackend {
            program,
            layout,
            rootfs,
            bundles,
            state,
            config,
        };
        backend.remove_stale();
        spec::prepare_rootfs(&backend.rootfs, SANDBOX_UID).map_err(setup("shared root"))?;
        std::fs::create_dir_all(&backend.bundles).map_err(setup("bundle directory"))?;
        std::fs::create_dir_all(&backend.state).map_err(setup("state directory"))?;
        Ok(backend)
    }

    /// The runtime's command line up to the subcommand.
    fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.arg("--root").arg(&self.state);
        if self.config.runtime == OciRuntime::Gvisor {
            command.args(["--platform=ptrace", "--network=host"]);
        }
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        command
    }

    /// Deletes the containers, bundles and cgroups an earlier run left.
    fn remove_stale(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.state) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let mut delete = self.command();
                    delete
                        .args(["delete", "--force"])
                        .arg(entry.file_name())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    let _ = unbound(|| delete.status());
                }
            }
        }
        self.layout.remove_stale();
        let _ = std::fs::remove_dir_all(&self.bundles);
    }
}

#[async_trait]
impl Backend for OciBackend {
    fn name(&self) -> &'static str {
        match self.config.runtime {
            OciRuntime::Runc => "runc",
            OciRuntime::Gvisor => "gvisor",
        }
    }

    async fn shutdown(&self) {
        self.layout.remove_instance_everywhere();
    }

    async fn create(&self, spec: EnvironmentSpec) -> Result<Box<dyn Environment>, SandboxError> {
        let memory_mb = spec.memory_mb + self.config.runtime.memory_overhead_mb();
        let limits = Limits {
            memory_bytes: u64::from(memory_mb) * 1024 * 1024,
            cpu_quota_us: Some(CPU_PERIOD_US),
            pids: PIDS_LIMIT,
        };
        let mut env =
            CgroupEnvironment::create(&self.layout, self.config.egress.as_ref(), &spec, limits)
                .await?;
        let bundle = self.bundles.join(&spec.id);
        env.set_teardown(Box::new(Container {
            id: spec.id.clone(),
            bundle: bundle.clone(),
            runtime: self.command(),
        }));
        match self.start(&spec, &mut env, &bundle, &limits).await {
            Ok(()) => Ok(Box::new(env)),
            Err(e) => {
                env.destroy().await;
                Err(e)
            }
        }
    }
}

impl OciBackend {
    async fn start(
        &self,
        spec: &EnvironmentSpec,
        env: &mut CgroupEnvironment,
        bundle: &Path,
        limits: &Limits,
    ) -> Result<(), SandboxError> {
        let setup = |what| move |source| SandboxError::Setup { what, source };
        let mut vars = spec.env.clone();
        vars.push((
            "AWS_LAMBDA_RUNTIME_API".into(),
            netns::RUNTIME_API_ADDR.into(),
        ));
        let netns_fd = env.netns().as_raw_fd();
        let config = spec::bundle_spec(&spec::BundleInput {
            rootfs: &self.rootfs,
            reaper: &self.config.reaper,
            netns: PathBuf::from(format!("/proc/{}/fd/{netns_fd}", std::process::id())),
            cgroups_path: self.layout.oci_path(&spec.id),
            code_dir: &spec.code_dir,
            runtime_dir: &spec.runtime_dir,
            layers: &spec.layers,
            memory_bytes: limits.memory_bytes,
            cpu_quota_us: limits.cpu_quota_us.unwrap_or(CPU_PERIOD_US),
            cpu_period_us: CPU_PERIOD_US,
            pids: limits.pids,
            tmp_mb: spec.ephemeral_mb,
            uid: SANDBOX_UID,
            argv: &spec.argv,
            env: &vars,
        })
        .map_err(|e| setup("bundle")(std::io::Error::other(e)))?;
        let json = serde_json::to_vec(&config).map_err(|e| setup("bundle")(e.into()))?;
        tokio::fs::create_dir_all(bundle)
            .await
            .map_err(setup("bundle"))?;
        tokio::fs::write(bundle.join("config.json"), json)
            .await
            .map_err(setup("bundle"))?;

        let (reader, writer) = std::io::pipe().map_err(setup("output pipe"))?;
        let writer2 = writer.try_clone().map_err(setup("output pipe"))?;
        let mut command = match self.config.runtime {
            // runc runs detached under Ember's shim, so the container writes straight into
            // the output pipe (see [`shim`]).
            OciRuntime::Runc => {
                let runc = self.command();
                let mut shim = std::process::Command::new(&self.config.reaper);
                shim.arg(SANDBOX_SHIM)
                    .arg(runc.get_program())
                    .args(runc.get_args())
                    .args(["run", "--detach"]);
                shim.env_clear()
                    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
                shim
            }
            // runsc hands the container the host descriptors themselves.
            OciRuntime::Gvisor => {
                let mut runsc = self.command();
                runsc.arg("run");
                runsc
            }
        };
        command
            .arg("--bundle")
            .arg(bundle)
            .arg(&spec.id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2));
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(false);
        let mut child = unbound(|| command.spawn()).map_err(setup("container"))?;
        let (tx, rx) = watch::channel(None);
        let cgroup = Arc::clone(env.cgroup());
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(Some(exit_status(
                status.ok().and_then(|s| s.code()),
                &cgroup,
            )));
        });
        env.started(reader.into(), rx);
        Ok(())
    }
}

/// How the container ended, from the OCI runtime's exit code: the runtime's own code, or
/// `128 + n` for signal `n` (the reaper's and the OCI runtimes' convention).
fn exit_status(code: Option<i32>, cgroup: &Cgroup) -> ExitStatus {
    let (code, signal) = match code {
        Some(c) if (129..=128 + 64).contains(&c) => (None, Some(c - 128)),
        Some(c) => (Some(c), None),
        None => (None, Some(nix::sys::signal::Signal::SIGKILL as i32)),
    };
    ExitStatus {
        code,
        signal,
        oom_killed: cgroup.oom_killed(),
    }
}

/// What an OCI runtime keeps of one container: its record (state directory, its cgroups in
/// the hierarchies Ember does not use) and its bundle, released once its processes are gone.
struct Container {
    id: String,
    bundle: PathBuf,
    /// `runc --root …` / `runsc --root …`.
    runtime: std::process::Command,
}

impl Container {
    fn delete_command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(self.runtime.get_program());
        command.args(self.runtime.get_args());
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        command.args(["delete", "--force"]).arg(&self.id);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }
}

#[async_trait]
impl Teardown for Container {
    async fn release(&mut self) {
        let mut delete = tokio::process::Command::from(self.delete_command());
        if let Ok(mut child) = unbound(|| delete.spawn()) {
            let _ = child.wait().await;
        }
        let _ = tokio::fs::remove_dir_all(&self.bundle).await;
    }

    fn release_blocking(&mut self) {
        let _ = unbound(|| self.delete_command().status());
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}
