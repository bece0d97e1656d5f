//! The helpers a server starts for its environments: the process sandbox's init
//! (`sandbox-init`), an OCI container's PID 1 (`sandbox-reaper`) and the shim around a
//! detached `runc run` (`sandbox-shim`), each entered by its first argument.
//!
//! Every cold start execs one of them (two on runc), and they stay resident as long as the
//! environment. So they live in `ember-init`, a small binary built beside `ember`: `ember`
//! is a large position-independent executable, and loading it means relocating about a
//! megabyte of pointers, which takes over a millisecond per exec and leaves each
//! environment's init holding that megabyte as its own dirty pages. `ember` runs the same
//! helpers by the same arguments, so a server whose `ember-init` is missing (one binary
//! copied alone) still works, only slower to start environments.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ember_sandbox_process::init::{self, SANDBOX_INIT, SANDBOX_REAPER};

use crate::SANDBOX_SHIM;

/// The small helper binary's file name, looked for beside `ember`.
pub const HELPER_BINARY: &str = "ember-init";

/// Runs the helper `args[1]` names (`args` is a whole command line); never returns if it
/// names one, returns at once if not.
pub fn run(args: &[String]) {
    match args.get(1).map(String::as_str) {
        Some(SANDBOX_INIT) => init::main(),
        Some(SANDBOX_REAPER) => init::reaper_main(&args[2..]),
        Some(SANDBOX_SHIM) => crate::shim::main(&args[2..]),
        _ => {}
    }
}

/// The program to start helpers with: [`HELPER_BINARY`] beside `ember` if it is there and
/// executable, else `ember` itself.
pub fn program(ember: &Path) -> PathBuf {
    let helper = ember.with_file_name(HELPER_BINARY);
    let executable = std::fs::metadata(&helper)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if executable {
        helper
    } else {
        ember.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_binary_beside_ember_is_used_only_when_it_can_run() {
        let dir = tempfile::tempdir().unwrap();
        let ember = dir.path().join("ember");
        std::fs::write(&ember, b"").unwrap();
        assert_eq!(program(&ember), ember, "no ember-init: ember itself");

        let helper = dir.path().join(HELPER_BINARY);
        std::fs::write(&helper, b"").unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            program(&ember),
            ember,
            "an ember-init that cannot run is passed over"
        );

        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(program(&ember), helper);
    }

    #[test]
    fn a_command_line_naming_no_helper_returns() {
        run(&["ember".into(), "server".into()]);
        run(&["ember".into()]);
    }
}
