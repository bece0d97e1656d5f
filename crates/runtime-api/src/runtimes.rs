//! The runtimes Ember ships, written to disk for environments to mount at `/var/runtime`.

use std::io;
use std::path::Path;

/// Ember's Python bootstrap; see the file's docstring.
pub const PYTHON_BOOTSTRAP: &str = include_str!("../runtimes/python/bootstrap.py");

/// Where the Python bootstrap is, as seen from inside an environment.
pub const PYTHON_BOOTSTRAP_PATH: &str = "/var/runtime/python/bootstrap.py";

/// Ember's Node.js bootstrap; see the file's header.
pub const NODE_BOOTSTRAP: &str = include_str!("../runtimes/node/bootstrap.mjs");

/// Where the Node.js bootstrap is, as seen from inside an environment.
pub const NODE_BOOTSTRAP_PATH: &str = "/var/runtime/node/bootstrap.mjs";

/// Writes every bundled runtime under `dir`, replacing older copies.
pub fn install(dir: &Path) -> io::Result<()> {
    let python = dir.join("python");
    std::fs::create_dir_all(&python)?;
    std::fs::write(python.join("bootstrap.py"), PYTHON_BOOTSTRAP)?;
    let node = dir.join("node");
    std::fs::create_dir_all(&node)?;
    std::fs::write(node.join("bootstrap.mjs"), NODE_BOOTSTRAP)?;
    Ok(())
}
