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
//! feature sees "not permitted" and carries on.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Refused outright.
const DENIED: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_userfaultfd,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_lookup_dcookie,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_vhangup,
    libc::SYS_uselib,
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
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|nr| (*nr, Vec::new())).collect();
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
    let refuse = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        ARCH,
    )
    .map_err(error)?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_filters_compile() {
        let [refuse, clone3] = super::programs().unwrap();
        assert!(refuse.len() > super::DENIED.len());
        assert!(!clone3.is_empty());
    }
}
