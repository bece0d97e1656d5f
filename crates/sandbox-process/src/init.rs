//! The sandbox init: the small privileged program that builds an environment.
//!
//! The server starts `ember-init sandbox-init` (see `ember_sandbox_oci::helpers`) with an
//! [`InitSpec`] on stdin. The init, still root on the host:
//!
//! 1. joins the environment's cgroups and network namespace, closes every other descriptor;
//! 2. unshares mount, PID, IPC and UTS namespaces and forks: the child is PID 1 of the new
//!    PID namespace;
//! 3. PID 1 builds a fresh root on a tmpfs (host `/usr` and a few `/etc` files read-only,
//!    the code read-only at `/var/task`, the runtime at `/var/runtime`, a sized tmpfs at
//!    `/tmp`, a minimal `/dev`, a new `/proc`), pivots into it, drops every capability,
//!    becomes an unprivileged user with `no_new_privs`, installs the seccomp filter
//!    ([`crate::seccomp`]), and forks the runtime, which it
//!    then reaps along with any orphan. The runtime is not PID 1, so signals reach it with
//!    their usual meaning (a function that signals itself dies as it would on Lambda);
//! 4. the init's first half waits for PID 1 and exits the way the runtime did, so the
//!    server sees the runtime's exit status (a signal is re-raised, not encoded).
//!
//! Errors before the exec are printed to stderr (the function's log) and end the init with
//! status 125; the dispatcher reports them like any runtime that exited during init.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigHandler, Signal, raise, signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{
    ForkResult, Gid, Uid, chdir, execve, fork, pivot_root, sethostname, setresgid, setresuid,
};
use serde::{Deserialize, Serialize};

/// What the init needs, sent by the server as JSON on stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitSpec {
    /// The network namespace descriptor, inherited from the server.
    pub netns_fd: RawFd,
    /// Files to write [`crate::cgroup::JOIN_SELF`] into, joining the environment's cgroups.
    pub cgroup_join: Vec<PathBuf>,
    /// An empty directory the new root is mounted on (inside the private mount namespace).
    pub root_mountpoint: PathBuf,
    pub code_dir: PathBuf,
    pub runtime_dir: PathBuf,
    /// Layers for `/opt`, lowest first.
    pub layers: Vec<PathBuf>,
    pub tmp_mb: u32,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The helper argument that starts the init: `ember-init sandbox-init` (or `ember
/// sandbox-init`).
pub const SANDBOX_INIT: &str = "sandbox-init";

/// The helper argument that starts [`reaper_main`]: `ember-init sandbox-reaper ARGV...`.
pub const SANDBOX_REAPER: &str = "sandbox-reaper";

/// Status of an init that failed before exec'ing the runtime.
pub const SETUP_FAILED: i32 = 125;

/// Runs the init; never returns.
pub fn main() -> ! {
    let spec = match read_spec() {
        Ok(spec) => spec,
        Err(e) => fail("reading the init spec", e),
    };
    if let Err(e) = enter(&spec) {
        fail("entering the environment", e);
    }
    // PID 1 reports how the runtime ended through this pipe: it cannot die "the same way"
    // itself, since PID 1 of a namespace ignores signals it has no handler for.
    let (status_read, status_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(fds) => fds,
        Err(e) => fail("creating the status pipe", e.into()),
    };
    // SAFETY: the init is single-threaded (a fresh process that has started no threads),
    // so the child may run arbitrary code after fork.
    #[allow(unsafe_code)]
    match unsafe { fork() } {
        Err(e) => fail("forking the environment's first process", e.into()),
        Ok(ForkResult::Child) => {
            drop(status_read);
            let e = pid1(&spec, status_write);
            fail("building the environment", e)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(status_write);
            let status = loop {
                match waitpid(child, None) {
                    Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                        break status;
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => fail("waiting for the environment", e.into()),
                }
            };
            let mut report = String::new();
            let _ = fs::File::from(status_read).read_to_string(&mut report);
            match (report.split_once(' '), status) {
                (Some(("exit", code)), _) => {
                    std::process::exit(code.trim().parse().unwrap_or(SETUP_FAILED))
                }
                (Some(("signal", sig)), _) => die_by(sig.trim().parse().unwrap_or(libc::SIGKILL)),
                // PID 1 itself ended without a report (killed, e.g. by the OOM killer).
                (_, WaitStatus::Signaled(_, sig, _)) => die_by(sig as i32),
                (_, WaitStatus::Exited(_, code)) => std::process::exit(code),
                _ => std::process::exit(SETUP_FAILED),
            }
        }
    }
}

/// Ends this process by `sig`, so the server sees the runtime's signal itself.
fn die_by(sig: i32) -> ! {
    if let Ok(sig) = Signal::try_from(sig) {
        // SAFETY: restoring the default disposition is always sound.
        #[allow(unsafe_code)]
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        let _ = raise(sig);
    }
    std::process::exit(128 + sig)
}

/// PID 1 of the environment: builds the root, drops privileges, starts the runtime as its
/// child, reaps every orphan, and reports the runtime's end on `status`. Returns only on
/// failure before the runtime started.
fn pid1(spec: &InitSpec, status: std::os::fd::OwnedFd) -> io::Error {
    let supervisor = match build_root(spec)
        .and_then(|()| drop_privileges(spec))
        .and_then(|()| crate::seccomp::install_supervised())
    {
        Ok(supervisor) => supervisor,
        Err(e) => return e,
    };
    let (argv, env) = match command(spec) {
        Ok(c) => c,
        Err(e) => return e,
    };
    // SAFETY: still single-threaded; see main().
    #[allow(unsafe_code)]
    let runtime = match unsafe { fork() } {
        Err(e) => return e.into(),
        Ok(ForkResult::Child) => {
            let Err(e) = execve(&argv[0], &argv, &env);
            fail(&format!("starting {}", spec.argv[0]), e.into())
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    supervise_refusals(supervisor);
    let mut status = fs::File::from(status);
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == runtime => {
                let _ = write!(status, "exit {code}");
                std::process::exit(0);
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == runtime => {
                let _ = write!(status, "signal {}", sig as i32);
                std::process::exit(0);
            }
            // An orphan the runtime left behind: reaped, nothing more.
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return e.into(),
        }
    }
}

/// PID 1 of an environment whose namespaces and root someone else built (an OCI runtime):
/// installs the seccomp filter, starts `argv` with the inherited environment, reaps it and
/// every orphan, and exits the way the runtime did (a signal `n` as status `128 + n`, since
/// PID 1 of a namespace cannot die by a signal it sends itself). Never returns.
pub fn reaper_main(argv: &[String]) -> ! {
    let supervisor = match crate::seccomp::install_supervised() {
        Ok(supervisor) => supervisor,
        Err(e) => fail("installing the seccomp filter", e),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let spec_argv = argv.to_vec();
    let (argv, env) = match command_line(&spec_argv, &env) {
        Ok(c) => c,
        Err(e) => fail("reading the command", e),
    };
    // SAFETY: the reaper is single-threaded (a fresh process that has started no threads).
    #[allow(unsafe_code)]
    let runtime = match unsafe { fork() } {
        Err(e) => fail("forking the runtime", e.into()),
        Ok(ForkResult::Child) => {
            let Err(e) = execve(&argv[0], &argv, &env);
            fail(&format!("starting {}", spec_argv[0]), e.into())
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    supervise_refusals(supervisor);
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == runtime => std::process::exit(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == runtime => {
                std::process::exit(128 + sig as i32)
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => fail("waiting for the runtime", e.into()),
        }
    }
}

/// Answers the seccomp filter's refusals on a thread of PID 1 (started after the last fork),
/// logging each to the environment's output, which is PID 1's stderr.
fn supervise_refusals(listener: Option<std::os::fd::OwnedFd>) {
    if let Some(listener) = listener {
        let spawned = std::thread::Builder::new()
            .name("seccomp".into())
            .spawn(move || crate::seccomp::supervise(listener, io::stderr()));
        if let Err(e) = spawned {
            // Without a supervisor, refused calls would wait forever: better no runtime.
            fail("starting the seccomp supervisor", e);
        }
    }
}

fn command(spec: &InitSpec) -> io::Result<(Vec<CString>, Vec<CString>)> {
    command_line(&spec.argv, &spec.env)
}

fn command_line(
    argv: &[String],
    env: &[(String, String)],
) -> io::Result<(Vec<CString>, Vec<CString>)> {
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if argv.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    let env = env
        .iter()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    Ok((argv, env))
}

fn fail(step: &str, err: io::Error) -> ! {
    eprintln!("ember sandbox: {step}: {err}");
    std::process::exit(SETUP_FAILED)
}

fn read_spec() -> io::Result<InitSpec> {
    let mut buf = Vec::new();
    io::stdin().read_to_end(&mut buf)?;
    let spec = serde_json::from_slice(&buf)?;
    // The runtime gets an empty stdin, like on Lambda.
    let null = fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    Ok(spec)
}

/// Steps 1–2, in the init itself.
fn enter(spec: &InitSpec) -> io::Result<()> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    for file in &spec.cgroup_join {
        fs::write(file, crate::cgroup::JOIN_SELF)?;
    }
    // SAFETY: the server passed this descriptor to us for exactly this purpose.
    #[allow(unsafe_code)]
    let netns = unsafe { BorrowedFd::borrow_raw(spec.netns_fd) };
    setns(netns, CloneFlags::CLONE_NEWNET)?;
    close_from(3);
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS,
    )?;
    Ok(())
}

/// Closes every descriptor from `first` up: nothing of the server's reaches the runtime.
#[allow(unsafe_code)]
fn close_from(first: u32) {
    // SAFETY: close_range only closes descriptors; nothing in this process uses them after.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
}

const RO: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);

fn bind(src: &Path, dst: &Path, flags: MsFlags) -> io::Result<()> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| io::Error::other(format!("bind {} on {}: {e}", src.display(), dst.display())))?;
    mount(
        None::<&str>,
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None::<&str>,
    )
    .map_err(|e| io::Error::other(format!("remount {}: {e}", dst.display())))?;
    Ok(())
}

fn tmpfs(dst: &Path, options: &str, flags: MsFlags) -> io::Result<()> {
    mount(Some("tmpfs"), dst, Some("tmpfs"), flags, Some(options))
        .map_err(|e| io::Error::other(format!("tmpfs on {}: {e}", dst.display())))
}

/// Host `/etc` entries an environment sees, read-only: what the dynamic linker, name
/// resolution, TLS and Python's standard library look at. Everything else stays hidden.
pub const ETC: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "nsswitch.conf",
    "hosts",
    "resolv.conf",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "mime.types",
    "protocols",
    "services",
];

/// `/opt`: nothing, one layer bound read-only, or several merged read-only by overlayfs
/// (its leftmost lower directory is the top one, so the list is reversed).
fn mount_layers(layers: &[PathBuf], opt: &Path) -> io::Result<()> {
    match layers {
        [] => Ok(()),
        [one] => bind(one, opt, RO),
        many => {
            let lower: Vec<String> = many.iter().rev().map(|p| p.display().to_string()).collect();
            let options = format!("lowerdir={}", lower.join(":"));
            mount(
                Some("overlay"),
                opt,
                Some("overlay"),
                RO,
                Some(options.as_str()),
            )
            .map_err(|e| io::Error::other(format!("overlay of {} layers on /opt: {e}", many.len())))
        }
    }
}

fn build_root(spec: &InitSpec) -> io::Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    let root = spec.root_mountpoint.as_path();
    tmpfs(
        root,
        "size=1m,mode=0755",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;

    // System directories, mirroring the host's usr-merge symlinks.
    for dir in ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(dir);
        let Ok(meta) = fs::symlink_metadata(&host) else {
            continue;
        };
        let inside = root.join(dir);
        if meta.file_type().is_symlink() {
            symlink(fs::read_link(&host)?, &inside)?;
        } else if meta.is_dir() {
            fs::create_dir(&inside)?;
            bind(&host, &inside, RO)?;
        }
    }

    let etc = root.join("etc");
    fs::create_dir(&etc)?;
    for name in ETC {
        let host = Path::new("/etc").join(name);
        let inside = etc.join(name);
        match fs::metadata(&host) {
            Ok(m) if m.is_dir() => fs::create_dir(&inside)?,
            Ok(_) => drop(fs::File::create(&inside)?),
            Err(_) => continue,
        }
        bind(&host, &inside, RO)?;
    }
    fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\nsbx_user:x:{0}:{1}::/tmp:/usr/sbin/nologin\n",
            spec.uid, spec.gid
        ),
    )?;
    fs::write(
        etc.join("group"),
        format!("root:x:0:\nsbx_user:x:{}:\n", spec.gid),
    )?;
    fs::write(etc.join("hostname"), format!("{}\n", spec.hostname))?;

    for dir in [
        "var",
        "var/task",
        "var/runtime",
        "opt",
        "tmp",
        "dev",
        "proc",
        "root",
    ] {
        fs::create_dir(root.join(dir))?;
    }
    bind(&spec.code_dir, &root.join("var/task"), RO)?;
    bind(&spec.runtime_dir, &root.join("var/runtime"), RO)?;
    mount_layers(&spec.layers, &root.join("opt"))?;
    tmpfs(
        &root.join("tmp"),
        &format!("size={}m,mode=1777", spec.tmp_mb),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;

    let dev = root.join("dev");
    tmpfs(
        &dev,
        "size=64k,mode=0755",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
    )?;
    for node in ["null", "zero", "full", "random", "urandom"] {
        let inside = dev.join(node);
        fs::File::create(&inside)?;
        bind(
            &Path::new("/dev").join(node),
            &inside,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        )?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link))?;
    }

    // Switch roots: stack the old root under the new one and detach it.
    chdir(root)?;
    pivot_root(".", ".")?;
    umount2(".", MntFlags::MNT_DETACH)?;
    chdir("/")?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )?;
    // The root itself becomes read-only: only /tmp is writable.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | RO,
        None::<&str>,
    )?;
    sethostname(&spec.hostname)?;
    Ok(())
}

#[allow(unsafe_code)]
fn drop_privileges(spec: &InitSpec) -> io::Result<()> {
    // Empty the bounding set so nothing (not even a setuid binary) can regain a capability.
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number; unknown numbers fail with EINVAL.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    nix::unistd::setgroups(&[])?;
    setresgid(
        Gid::from_raw(spec.gid),
        Gid::from_raw(spec.gid),
        Gid::from_raw(spec.gid),
    )?;
    // Leaving uid 0 clears the permitted, effective and ambient capability sets.
    setresuid(
        Uid::from_raw(spec.uid),
        Uid::from_raw(spec.uid),
        Uid::from_raw(spec.uid),
    )?;
    // SAFETY: these prctls take integer arguments only.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        // If the init (our parent, outside this PID namespace) dies, so does the environment.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            Signal::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    chdir("/var/task")?;
    Ok(())
}
