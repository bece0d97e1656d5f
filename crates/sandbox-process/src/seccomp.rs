//! The system calls a function never needs, refused with `EPERM`.
//!
//! The filter (installed by the sandbox init, inherited by the runtime) refuses: mounting and
//! changing roots, `ptrace` and cross-process memory access, loading kernels and modules,
//! `bpf`, `perf_event_open`, the kernel keyring, rebooting, swap, clock and time changes,
//! entering or creating namespaces (`setns`, `unshare`, and `clone` with any namespace flag),
//! file handles that bypass the mount tree, `userfaultfd`, and the like. `clone3` answers
//! `ENOSYS`: its flags are behind a pointer a filter cannot read, and every libc then falls
//! back to `clone`, whose flags it can. Everything else is allowed.
//!
//! `EPERM` is what Docker's and runc's default profiles answer: a program probing for a
//! feature sees "not permitted" and carries on. So that a function's author sees why, the
//! refusals go through a supervisor ([`install_supervised`], [`supervise`]: seccomp user
//! notifications, answered by the environment's PID 1), which writes a line naming the call
//! to the function's log before answering `EPERM`.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Refused outright, with the names the log uses.
const DENIED: &[(i64, &str)] = &[
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_chroot, "chroot"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_readv, "process_vm_readv"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_unshare, "unshare"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_name_to_handle_at, "name_to_handle_at"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_lookup_dcookie, "lookup_dcookie"),
    (libc::SYS_iopl, "iopl"),
    (libc::SYS_ioperm, "ioperm"),
    (libc::SYS_syslog, "syslog"),
    (libc::SYS_settimeofday, "settimeofday"),
    (libc::SYS_clock_settime, "clock_settime"),
    (libc::SYS_clock_adjtime, "clock_adjtime"),
    (libc::SYS_adjtimex, "adjtimex"),
    (libc::SYS_vhangup, "vhangup"),
    (libc::SYS_uselib, "uselib"),
];

/// `clone` flags that create namespaces.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

fn error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("seccomp: {e}"))
}

/// The two filters: refusals with `EPERM`, and `clone3` with `ENOSYS`.
pub fn programs() -> io::Result<[BpfProgram; 2]> {
    programs_refusing_with(SeccompAction::Errno(libc::EPERM as u32))
}

/// A `SECCOMP_RET_TRACE` value no filter of Ember's uses otherwise; seccompiler has no
/// user-notification action, so the refusal filter is compiled with this one and its
/// return instructions are rewritten.
const NOTIFY_MARK: u16 = 0x3ee;

/// The filters, with refusals handed to a supervisor (`SECCOMP_RET_USER_NOTIF`).
fn supervised_programs() -> io::Result<[BpfProgram; 2]> {
    let [mut refuse, clone3] =
        programs_refusing_with(SeccompAction::Trace(u32::from(NOTIFY_MARK)))?;
    const BPF_RET_K: u16 = 0x06;
    let mark = libc::SECCOMP_RET_TRACE | u32::from(NOTIFY_MARK);
    for insn in refuse.iter_mut() {
        if insn.code == BPF_RET_K && insn.k == mark {
            insn.k = libc::SECCOMP_RET_USER_NOTIF;
        }
    }
    Ok([refuse, clone3])
}

fn programs_refusing_with(refusal: SeccompAction) -> io::Result<[BpfProgram; 2]> {
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let condition = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*flag),
                *flag,
            )
            .map_err(error)?;
            SeccompRule::new(vec![condition]).map_err(error)
        })
        .collect::<io::Result<Vec<_>>>()?;
    denied.insert(libc::SYS_clone, clone_rules);
    let refuse = SeccompFilter::new(denied, SeccompAction::Allow, refusal, ARCH).map_err(error)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        ARCH,
    )
    .map_err(error)?;
    Ok([
        BpfProgram::try_from(refuse).map_err(error)?,
        BpfProgram::try_from(clone3).map_err(error)?,
    ])
}

/// Installs the filters on the calling thread (and so on everything it starts later).
/// Needs `no_new_privs` or `CAP_SYS_ADMIN`.
pub fn install() -> io::Result<()> {
    for program in programs()? {
        seccompiler::apply_filter(&program).map_err(error)?;
    }
    Ok(())
}

/// Installs the filters with refusals reported to a supervisor, and returns the
/// supervisor's end ([`supervise`] answers on it). Where the kernel (or gVisor) has no user
/// notifications, installs the plain filters and returns `None`: refusals still fail with
/// `EPERM`, silently. Needs `no_new_privs`; the returned descriptor is close-on-exec.
#[allow(unsafe_code)]
pub fn install_supervised() -> io::Result<Option<OwnedFd>> {
    let [refuse, clone3] = supervised_programs()?;
    let prog = libc::sock_fprog {
        len: refuse.len() as u16,
        // The kernel only reads the program; the cast is the C API's.
        filter: refuse.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points into `refuse`, alive for the call; the kernel copies it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        install()?;
        return Ok(None);
    }
    // SAFETY: a successful seccomp(NEW_LISTENER) returns a new descriptor we now own.
    let listener = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    seccompiler::apply_filter(&clone3).map_err(error)?;
    Ok(Some(listener))
}

/// At most this many refusals are written to the log per environment; a function probing
/// in a loop must not flood it.
const LOGGED_REFUSALS: u32 = 20;

/// Answers every refused call on `listener` with `EPERM`, first writing a line saying so
/// to `log` (the function's output). Returns when the listener fails (the environment is
/// going away).
#[allow(unsafe_code)]
pub fn supervise(listener: OwnedFd, mut log: impl io::Write) {
    let fd = listener.as_raw_fd();
    let mut logged = 0;
    loop {
        // SAFETY: all-zero is a valid seccomp_notif, and the kernel requires it zeroed.
        let mut request: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV fills the struct we own.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut request) } < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::ENOENT) => continue,
                _ => return,
            }
        }
        let nr = i64::from(request.data.nr);
        let name = match DENIED.iter().find(|(denied, _)| *denied == nr) {
            Some((_, name)) => (*name).to_owned(),
            None if nr == libc::SYS_clone => "clone (with a namespace flag)".to_owned(),
            None => format!("system call {nr}"),
        };
        if logged < LOGGED_REFUSALS {
            let _ = writeln!(
                log,
                "EMBER SANDBOX: refused {name} (pid {}): not permitted for functions; the call fails with EPERM",
                request.pid
            );
        } else if logged == LOGGED_REFUSALS {
            let _ = writeln!(log, "EMBER SANDBOX: further refusals are not logged");
        }
        logged = logged.saturating_add(1);
        let response = libc::seccomp_notif_resp {
            id: request.id,
            val: 0,
            error: -libc::EPERM,
            flags: 0,
        };
        // SAFETY: SEND reads the struct we own. A caller that died meanwhile is ENOENT.
        unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &response) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_supervised_filter_notifies_where_the_plain_one_refuses() {
        let [plain, _] = super::programs().unwrap();
        let [supervised, _] = super::supervised_programs().unwrap();
        assert_eq!(plain.len(), supervised.len());
        let returns =
            |p: &super::BpfProgram, k: u32| p.iter().filter(|i| i.code == 0x06 && i.k == k).count();
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        assert!(returns(&plain, eperm) > 0);
        assert_eq!(
            returns(&supervised, libc::SECCOMP_RET_USER_NOTIF),
            returns(&plain, eperm)
        );
        assert_eq!(returns(&supervised, eperm), 0);
    }

    #[test]
    fn the_filters_compile() {
        let [refuse, clone3] = super::programs().unwrap();
        assert!(refuse.len() > super::DENIED.len());
        assert!(!clone3.is_empty());
    }
}
