//! How strongly a function's environments are isolated (the sandbox backend that runs them)
//! and what they may reach over the network.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The sandbox backend a function runs on. Every backend gives a function the same view
/// (the same files, limits, variables and Runtime API); they differ in what stands between
/// the function and the host kernel, and in what a cold start costs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Namespaces, cgroups, seccomp and an unprivileged uid, set up by Ember itself: the
    /// fastest start.
    #[default]
    Process,
    /// The same isolation described as an OCI bundle and run by `runc`.
    Runc,
    /// gVisor (`runsc`): the function talks to a user-space kernel, not the host's.
    Gvisor,
    /// WebAssembly in Ember's own process: the function reaches nothing but what WASI
    /// hands it. The only isolation of the `wasm` runtime, and only for it.
    Wasm,
}

impl Isolation {
    pub const ALL: [Isolation; 4] = [
        Isolation::Process,
        Isolation::Runc,
        Isolation::Gvisor,
        Isolation::Wasm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Process => "process",
            Isolation::Runc => "runc",
            Isolation::Gvisor => "gvisor",
            Isolation::Wasm => "wasm",
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An isolation name that is not one of [`Isolation::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown isolation {0:?}; use process, runc, gvisor or wasm")]
pub struct UnknownIsolation(pub String);

impl FromStr for Isolation {
    type Err = UnknownIsolation;

    fn from_str(s: &str) -> Result<Isolation, UnknownIsolation> {
        Isolation::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| UnknownIsolation(s.to_owned()))
    }
}

/// What a function's environments can reach over the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Loopback only: the Runtime API and nothing else.
    #[default]
    None,
    /// Outbound connections through NAT (the host's services included), never to Ember's
    /// API or another environment.
    Egress,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Egress => "egress",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Network {
    type Err = UnknownNetwork;

    fn from_str(s: &str) -> Result<Network, UnknownNetwork> {
        match s {
            "none" => Ok(Network::None),
            "egress" => Ok(Network::Egress),
            other => Err(UnknownNetwork(other.to_owned())),
        }
    }
}

/// A network mode that is not `none` or `egress`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network {0:?}; use none or egress")]
pub struct UnknownNetwork(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_say_what_is_known() {
        for isolation in Isolation::ALL {
            assert_eq!(isolation.as_str().parse::<Isolation>(), Ok(isolation));
            let json = serde_json::to_string(&isolation).unwrap();
            assert_eq!(json, format!("\"{isolation}\""));
        }
        assert_eq!("egress".parse::<Network>(), Ok(Network::Egress));
        assert!("host".parse::<Network>().is_err());
        let err = "firecracker".parse::<Isolation>().unwrap_err();
        assert!(
            err.to_string().contains("process, runc, gvisor or wasm"),
            "{err}"
        );
    }
}
