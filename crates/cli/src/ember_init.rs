//! `ember-init`: the helpers `ember server` starts for its environments (the process
//! sandbox's init, an OCI container's PID 1, the shim around `runc`), in a binary small
//! enough to start in about a millisecond less than `ember` and to hold a megabyte less in
//! every environment. See `ember_sandbox_oci::helpers`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    ember_sandbox_oci::helpers::run(&args);
    eprintln!(
        "ember-init runs inside Ember's environments, started by `ember server` as \
         `ember-init sandbox-init`, `sandbox-reaper` or `sandbox-shim`; it is not a command"
    );
    ExitCode::from(2)
}
