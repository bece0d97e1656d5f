//! The runtimes Ember ships, written to disk for environments to mount at `/var/runtime`.

use std::io;
use std::path::Path;

/// Ember's Python bootstrap; see the file's docstring.
pub const PYTHON_BOOTSTRAP: &str = include_str!("../runtimes/python/bootstrap.py");

/// Where the Python bootstrap is, as seen from inside an environment.
pub const PYTHON_BOOTSTRAP_PATH: &str = "/var/runtime/python/bootstrap.py";

/// Writes every bundled runtime under `dir`, replacing older copies.
pub fn install(dir: &Path) -> io::Result<()> {
    let python = dir.join("python");
    std::fs::create_dir_all(&python)?;
    std::fs::write(python.join("bootstrap.py"), PYTHON_BOOTSTRAP)?;
    Ok(())
}
