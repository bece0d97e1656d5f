//! `ember sandbox-shim`: stands between the server and a detached `runc run`.
//!
//! In the foreground, runc copies the container's output through pipes of its own, so the
//! output can reach the log after the runtime's response does. Detached, it hands its own
//! stdout and stderr to the container, but exits at once and leaves nobody to report the
//! container's end. The shim is that somebody: a child subreaper that starts
//! `runc run --detach` with the environment's output pipe as stdio, adopts the container's
//! first process when runc exits, waits for it and exits the same way (a signal `n` as
//! status `128 + n`).

use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};

/// Status when the shim itself fails before the container runs.
const SHIM_FAILED: i32 = 125;

/// Runs the shim: `args` is the full runc command line; never returns.
#[allow(unsafe_code)]
pub fn main(args: &[String]) -> ! {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
    if unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        fail("becoming a subreaper", std::io::Error::last_os_error());
    }
    let Some((program, rest)) = args.split_first() else {
        fail(
            "reading the command",
            std::io::Error::other("empty command"),
        );
    };
    let status = std::process::Command::new(program).args(rest).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => std::process::exit(s.code().unwrap_or(SHIM_FAILED)),
        Err(e) => fail("starting the OCI runtime", e),
    }
    // The container's first process is ours now; wait for it (and anything else that
    // lands here) until nothing is left.
    let mut last = None;
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(_, code)) => last = Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => last = Some(128 + sig as i32),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => break,
            Err(e) => fail("waiting for the container", e.into()),
        }
    }
    std::process::exit(last.unwrap_or(SHIM_FAILED))
}

fn fail(step: &str, err: std::io::Error) -> ! {
    eprintln!("ember sandbox: {step}: {err}");
    std::process::exit(SHIM_FAILED)
}
