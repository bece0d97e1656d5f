//! Runtime identifiers.
//!
//! Ember accepts Lambda's identifiers (`python3.12`, `provided.al2023`, …) and its own short
//! ones (`python3`, `provided`). Each maps to a [`RuntimeFamily`]; the host decides which
//! families it can run (an interpreter must exist where a sandbox can see it), and the
//! identifier the user gave is what the API answers with.

use std::fmt;

/// A runtime as the user named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Runtime(String);

/// What actually runs the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeFamily {
    /// CPython with Ember's own bootstrap.
    Python,
    /// Node.js with Ember's own bootstrap.
    Node,
    /// The package's own `bootstrap` executable.
    Provided,
    /// A WebAssembly module or component, run by Ember's wasm engine.
    Wasm,
}

/// Every identifier Ember understands, whether or not this host can run it.
pub const KNOWN: &[&str] = &[
    "python3",
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "nodejs",
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "provided",
    "provided.al2",
    "provided.al2023",
    "wasm",
];

impl Runtime {
    /// Parses an identifier; `None` if Ember does not know it at all.
    pub fn parse(id: &str) -> Option<Runtime> {
        KNOWN.contains(&id).then(|| Runtime(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn family(&self) -> RuntimeFamily {
        if self.0.starts_with("python") {
            RuntimeFamily::Python
        } else if self.0.starts_with("nodejs") {
            RuntimeFamily::Node
        } else if self.0 == "wasm" {
            RuntimeFamily::Wasm
        } else {
            RuntimeFamily::Provided
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_and_short_identifiers_map_to_families() {
        assert_eq!(
            Runtime::parse("python3.12").unwrap().family(),
            RuntimeFamily::Python
        );
        assert_eq!(
            Runtime::parse("python3").unwrap().family(),
            RuntimeFamily::Python
        );
        assert_eq!(
            Runtime::parse("provided.al2023").unwrap().family(),
            RuntimeFamily::Provided
        );
        assert_eq!(
            Runtime::parse("nodejs20.x").unwrap().family(),
            RuntimeFamily::Node
        );
        assert_eq!(
            Runtime::parse("wasm").unwrap().family(),
            RuntimeFamily::Wasm
        );
        assert!(Runtime::parse("cobol").is_none());
    }
}
